//! CONNECT: the raw tunnel of a `tunnel` route, or TLS terminated here with a leaf minted for
//! the CONNECT host and every request inside served by the per-request policy. It must never
//! fall back to a raw tunnel on a route that is not `tunnel`, nor accept a TLS SNI other than
//! the CONNECT host.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::audit::{AuditRecord, Decision};
use crate::config::Route;
use crate::hostport::{canon_host, split_host_port};
use crate::io::Prefixed;
use crate::proxy::{Ctx, Kind, Shared, Side, State, HANDSHAKE_TIMEOUT};
use crate::refuse::{
    empty, log_refusal, plain_status, record, refusal, refusal_text, refused, ssrf_refusal,
};
use crate::request::{known_in_host, request};
use crate::resolve::DialError;
use crate::upstream::Body;

type Upgraded = TokioIo<hyper::upgrade::Upgraded>;

pub(crate) async fn connect(
    shared: Arc<Shared>,
    mut req: Request<Incoming>,
    side: Side,
) -> Response<Body> {
    let start = Instant::now();
    let st = shared.current();
    let auth = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .unwrap_or_default();
    let parsed = split_host_port(&auth);
    let (host, port) = match parsed {
        Some((h, p)) => (h, p.unwrap_or(443)),
        None => {
            let r = refused(Kind::Protocol, "CONNECT needs host:port");
            let rec = record(&st, "CONNECT", "tunnel", &auth, 0, "");
            log_refusal(&st, rec, &r, start);
            return refusal(&st, r.kind, &r.detail);
        }
    };
    // The agent's side never sees a gate route, the gate's side nothing else.
    let routes: Vec<&Route> = match side {
        Side::Agent => st.config.routes_for(&host, port).collect(),
        Side::Gate => st.config.gate_route_for(&host, port).into_iter().collect(),
    };
    // Logged and echoed in the agent's spelling, so a secret in it is still recognised.
    let raw_host = auth.rsplit_once(':').map(|(h, _)| h).unwrap_or(&auth);
    let rec = record(&st, "CONNECT", "https", raw_host, port, "");
    if let Some(r) = known_in_host(&st, raw_host) {
        log_refusal(&st, rec, &r, start);
        return refusal(&st, r.kind, &r.detail);
    }
    if routes.is_empty() {
        let r = refused(
            Kind::Route,
            format!(
                "no route for {}:{port}",
                st.dlp.sanitize(raw_host).to_ascii_lowercase()
            ),
        );
        log_refusal(&st, rec, &r, start);
        return refusal(&st, r.kind, &r.detail);
    }
    if let Some(t) = routes.iter().find(|r| r.is_tunnel()) {
        return tunnel(&shared, &st, req, t, &host, port, rec, start).await;
    }
    if side == Side::Gate {
        // Validation keeps gate routes tunnels; never intercept for git-gate.
        let r = refused(Kind::Route, "the gate's routes are tunnels only");
        log_refusal(&st, rec, &r, start);
        return refusal(&st, r.kind, &r.detail);
    }
    // Intercept: TLS from the client, terminated here with a leaf for the CONNECT host.
    let on_upgrade = hyper::upgrade::on(&mut req);
    let sh = shared.clone();
    shared.tasks.spawn(async move {
        let Ok(up) = on_upgrade.await else { return };
        intercept(sh, TokioIo::new(up), host, port).await;
    });
    Response::new(empty())
}

/// A `tunnel` route: dial (through the SSRF guard), then copy bytes both ways unread.
#[allow(clippy::too_many_arguments)]
async fn tunnel(
    shared: &Shared,
    st: &State,
    mut req: Request<Incoming>,
    route: &Route,
    host: &str,
    port: u16,
    mut rec: AuditRecord,
    start: Instant,
) -> Response<Body> {
    rec.scheme = "tunnel".into();
    rec.route = Some(route.id.clone());
    let (upstream, _addr) = match st.dialer.connect(host, port).await {
        Ok(x) => x,
        Err(DialError::Ssrf { ip, reason, .. }) => {
            let r = ssrf_refusal(host, ip, reason);
            log_refusal(st, rec, &r, start);
            return refusal(st, r.kind, &r.detail);
        }
        Err(e) => {
            // No duration: the tunnel never opened.
            rec.decision = Decision::Error;
            rec.status = Some(502);
            st.audit.write(&rec);
            return plain_status(StatusCode::BAD_GATEWAY, &format!("egress: {e}"));
        }
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let audit = st.audit.clone();
    shared.tasks.spawn(async move {
        rec.decision = Decision::Tunnel;
        rec.status = Some(200);
        if let Ok(up) = on_upgrade.await {
            let mut client = TokioIo::new(up);
            let mut upstream = upstream;
            if let Ok((a, b)) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                rec.bytes_up = a;
                rec.bytes_down = b;
            }
        }
        rec.duration_ms = start.elapsed().as_millis() as u64;
        audit.write(&rec);
    });
    Response::new(empty())
}

async fn intercept(shared: Arc<Shared>, mut io: Upgraded, host: String, port: u16) {
    let start = Instant::now();
    let st = shared.current();
    let mut first = [0u8; 1];
    let n = match tokio::time::timeout(HANDSHAKE_TIMEOUT, io.read(&mut first)).await {
        Ok(Ok(n)) => n,
        _ => 0,
    };
    if n == 0 {
        return;
    }
    // 0x16 = TLS handshake record. Anything else is refused: never a raw tunnel fallback.
    if first[0] != 0x16 {
        return refuse_not_tls(&st, io, &host, port, start).await;
    }
    let io = Prefixed::new(Bytes::copy_from_slice(&first), io);
    let acceptor = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io);
    let start_hs = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor).await {
        Ok(Ok(s)) => s,
        _ => return,
    };
    if let Some(sni) = start_hs.client_hello().server_name() {
        if canon_host(sni).as_deref() != Some(host.as_str()) {
            let r = refused(Kind::Fronting, "TLS SNI differs from the CONNECT host");
            let mut rec = record(&st, "CONNECT", "https", &host, port, "");
            rec.route = st.config.route_for(&host, port).map(|r| r.id.clone());
            log_refusal(&st, rec, &r, start);
            return;
        }
    }
    let cfg = match st.minter.server_config(&host) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot mint a leaf certificate");
            return;
        }
    };
    let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, start_hs.into_stream(cfg)).await {
        Ok(Ok(t)) => t,
        _ => return,
    };
    drop(st);
    serve_tls(shared, tls, host, port).await;
}

/// Something other than TLS after CONNECT: answered with a hand-written `403`, since the
/// connection is no longer HTTP that hyper serves.
async fn refuse_not_tls(st: &State, mut io: Upgraded, host: &str, port: u16, start: Instant) {
    let r = refused(
        Kind::Protocol,
        "only TLS is accepted after CONNECT on this route (it is not a tunnel route)",
    );
    let mut rec = record(st, "CONNECT", "https", host, port, "");
    rec.route = st.config.route_for(host, port).map(|r| r.id.clone());
    log_refusal(st, rec, &r, start);
    let body = refusal_text(st, r.kind, &r.detail);
    let resp = format!(
        "HTTP/1.1 403 Forbidden\r\nX-Bottle-Block: {}: {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        r.kind.as_str(),
        r.detail,
        body.len(),
        body
    );
    let _ = io.write_all(resp.as_bytes()).await;
    let _ = io.shutdown().await;
}

/// Serves the requests inside the terminated TLS (HTTP/2 if the client chose it), each bound
/// to the CONNECT host and port.
async fn serve_tls(
    shared: Arc<Shared>,
    tls: tokio_rustls::server::TlsStream<Prefixed<Upgraded>>,
    host: String,
    port: u16,
) {
    let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let ctx = Arc::new(Ctx {
        tls: Some((host, port)),
    });
    let sh = shared.clone();
    let svc = service_fn(move |req| {
        let sh = sh.clone();
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(request(sh, ctx, req).await) }
    });
    let io = TokioIo::new(tls);
    if h2 {
        serve_until_shutdown!(
            hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .max_concurrent_streams(256)
                .serve_connection(io, svc),
            shared.shutdown
        );
    } else {
        serve_until_shutdown!(
            hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(60))
                .serve_connection(io, svc)
                .with_upgrades(),
            shared.shutdown
        );
    }
}
