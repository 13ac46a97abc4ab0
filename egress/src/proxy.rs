//! The proxy: accept loop, CONNECT handling (intercept or raw tunnel), the per-request policy
//! (fronting, route, upgrade, placeholder, DLP, SSRF) and forwarding to upstream or cred-proxy.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audit::{now_rfc3339, AuditLog, AuditRecord, Decision};
use crate::config::{normalize_host, Config, Forge, OnMatch, Route, RouteDlp, RouteKind};
use crate::decode;
use crate::dlp::{self, DlpEngine, ExactSet, Hit};
use crate::error::Error;
use crate::forge;
use crate::hold::HoldSummary;
use crate::io::{AuditGuard, Counted, PlaceholderGuard, Prefixed};
use crate::mint::Minter;
use crate::path;
use crate::pool::ScanPool;
use crate::resolve::{DialError, Dialer, Resolve};
use crate::scanned::{self, FirstError, Holds, Refusal, Verdict};
use crate::ssrf::{parse_ip_literal, SsrfGuard};
use crate::upstream::{self, Body, BoxError, HandoffClient, UpstreamClient};
use crate::window::{BodyPolicy, BodyScan, Piece};

/// Path egress answers itself (origin-form) for `egress healthcheck`.
pub const HEALTH_PATH: &str = "/__egress/health";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const RESPONSE_HEAD_TIMEOUT: Duration = Duration::from_secs(120);
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

pub use contract::audit::Kind;

/// Everything a request is checked against; replaced as a whole on reload.
pub struct State {
    pub config: Config,
    pub minter: Minter,
    pub dialer: Dialer,
    pub client: UpstreamClient,
    /// Upstream TLS offering only http/1.1 (protocol upgrades).
    pub tls_h1: Arc<rustls::ClientConfig>,
    pub handoff: Option<Handoff>,
    pub dlp: Arc<DlpEngine>,
    pub audit: Arc<AuditLog>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("routes", &self.config.routes.len())
            .finish()
    }
}

pub struct Handoff {
    pub addr: SocketAddr,
    pub key: contract::handoff::BrokerKey,
    pub client: HandoffClient,
}

impl State {
    /// Loads CA, rules, audit sink and (if any route has `auth`) the broker key.
    pub fn build(config: Config, resolver: Arc<dyn Resolve>) -> Result<State, Error> {
        let minter = Minter::load(&config.ca_cert, &config.ca_key)?;
        let dialer = Dialer::new(
            resolver,
            config.resolves.clone(),
            SsrfGuard::new(config.ssrf_allow.clone()),
            CONNECT_TIMEOUT,
        );
        let tls = upstream::client_tls(config.upstream_ca.as_deref())?;
        let mut tls_h1 = tls.clone();
        tls_h1.alpn_protocols = vec![b"http/1.1".to_vec()];
        let client = upstream::client(dialer.clone(), tls);
        let needs_handoff = config
            .routes
            .iter()
            .any(|r| matches!(r.kind, RouteKind::Http { auth: true, .. }));
        let handoff = match (needs_handoff, config.cred_proxy) {
            (true, Some(addr)) => {
                let key = contract::handoff::BrokerKey::from_env()
                    .map_err(|e| Error::BrokerKey(e.to_string()))?;
                Some(Handoff {
                    addr,
                    key,
                    client: upstream::handoff_client(),
                })
            }
            _ => None,
        };
        let dlp = Arc::new(DlpEngine::load(&config.dlp)?);
        let audit = Arc::new(AuditLog::open(&config.audit_log)?);
        Ok(State {
            config,
            minter,
            dialer,
            client,
            tls_h1: Arc::new(tls_h1),
            handoff,
            dlp,
            audit,
        })
    }

    fn other_placeholders(&self, route_id: &str) -> ExactSet {
        ExactSet::new(
            self.config
                .routes
                .iter()
                .filter(|r| r.id != route_id)
                .filter_map(|r| match &r.kind {
                    RouteKind::Http {
                        placeholder: Some(p),
                        ..
                    } => Some((p.as_bytes().to_vec(), r.id.clone())),
                    _ => None,
                }),
        )
    }
}

struct Shared {
    state: RwLock<Arc<State>>,
    /// Where request bodies are decoded and scanned.
    pool: ScanPool,
    resolver: Arc<dyn Resolve>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl Shared {
    fn current(&self) -> Arc<State> {
        self.state.read().expect("state lock").clone()
    }
}

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// `listen`: the agent's proxy, with every route but the gate's.
    Agent,
    /// `gate_listen`: git-gate's tunnels to its upstreams, and nothing else.
    Gate,
}

/// A bound, not yet running proxy.
pub struct Proxy {
    shared: Arc<Shared>,
    listener: TcpListener,
    gate_listener: Option<TcpListener>,
}

/// Reload and inspection handle, usable while the proxy runs.
#[derive(Clone)]
pub struct ProxyHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ProxyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProxyHandle")
    }
}

impl ProxyHandle {
    /// Re-reads `path`; a bad config is refused (and returned) and the old one stays.
    pub fn reload_from(&self, path: &Path) -> Result<(), Error> {
        let config = Config::load(path)?;
        self.reload(config)
    }

    pub fn reload(&self, config: Config) -> Result<(), Error> {
        let old = self.shared.current();
        if config.listen != old.config.listen {
            tracing::warn!(old = %old.config.listen, new = %config.listen, "listen cannot change on reload; keeping the old address");
        }
        if config.gate_listen != old.config.gate_listen {
            tracing::warn!(old = ?old.config.gate_listen, new = ?config.gate_listen, "gate_listen cannot change on reload; keeping the old listener");
        }
        let state = State::build(config, self.shared.resolver.clone())?;
        let routes = state.config.routes.len();
        *self.shared.state.write().expect("state lock") = Arc::new(state);
        tracing::info!(routes, "egress config reloaded");
        Ok(())
    }

    pub fn state(&self) -> Arc<State> {
        self.shared.current()
    }
}

impl Proxy {
    pub async fn bind(config: Config, resolver: Arc<dyn Resolve>) -> Result<Proxy, Error> {
        let listen = config.listen;
        let state = State::build(config, resolver.clone())?;
        let listener = TcpListener::bind(listen).await.map_err(|e| Error::Listen {
            addr: listen,
            source: e,
        })?;
        let gate_listener = match state.config.gate_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|e| Error::Listen { addr, source: e })?,
            ),
            None => None,
        };
        Ok(Proxy {
            shared: Arc::new(Shared {
                state: RwLock::new(Arc::new(state)),
                resolver,
                tasks: TaskTracker::new(),
                pool: ScanPool::per_core(),
                shutdown: CancellationToken::new(),
            }),
            listener,
            gate_listener,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    /// Address of the gate's listener, when the config has one.
    pub fn gate_addr(&self) -> Option<SocketAddr> {
        self.gate_listener
            .as_ref()
            .map(|l| l.local_addr().expect("bound listener"))
    }

    pub fn handle(&self) -> ProxyHandle {
        ProxyHandle {
            shared: self.shared.clone(),
        }
    }

    /// Serves until `shutdown` is cancelled, then stops accepting, asks open connections to
    /// finish and waits for them a bounded time.
    pub async fn run(self, shutdown: CancellationToken) {
        let shared = self.shared.clone();
        tracing::info!(listen = %self.local_addr(), gate_listen = ?self.gate_addr(), "egress listening");
        loop {
            let (acc, side) = tokio::select! {
                _ = shutdown.cancelled() => break,
                acc = self.listener.accept() => (acc, Side::Agent),
                acc = accept_opt(self.gate_listener.as_ref()) => (acc, Side::Gate),
            };
            match acc {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    let sh = shared.clone();
                    shared.tasks.spawn(serve_client(sh, stream, side));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        drop(self.listener);
        drop(self.gate_listener);
        shared.shutdown.cancel();
        shared.tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, shared.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("connections still open after the shutdown grace period; closing");
        }
    }
}

/// Accepts on the gate's listener; never ready when there is none.
async fn accept_opt(l: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match l {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

async fn serve_client(shared: Arc<Shared>, stream: TcpStream, side: Side) {
    let sh = shared.clone();
    let svc = service_fn(move |req| {
        let sh = sh.clone();
        async move {
            Ok::<_, Infallible>(match side {
                Side::Agent => outer(sh, req).await,
                Side::Gate => gate(sh, req).await,
            })
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30))
        .serve_connection(TokioIo::new(stream), svc)
        .with_upgrades();
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = shared.shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Responses and audit helpers.
// ---------------------------------------------------------------------------------------------

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|e| match e {}).boxed_unsync()
}

fn empty() -> Body {
    Empty::new().map_err(|e| match e {}).boxed_unsync()
}

/// Keeps a header value printable and short.
fn header_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .take(300)
        .collect()
}

/// What the agent reads. It names the supervise tool only in a bottle that
/// has one: a refusal never sends the agent looking for a tool that is not there.
fn refusal_text(st: &State, kind: Kind, detail: &str) -> String {
    let ask = if st.config.supervise {
        "If you need this access, ask the operator with the supervise tool \
         `request_egress_route` (host, ports, methods, paths, reason)."
    } else {
        "If you need this access, tell the operator: only they can add a route to this \
         bottle's manifest."
    };
    format!(
        "bot-bottle egress refused this request ({}: {}).\n{ask}\n",
        kind.as_str(),
        detail
    )
}

/// `403` with `X-Bottle-Block: <kind>: <detail>`.
fn refusal(st: &State, kind: Kind, detail: &str) -> Response<Body> {
    let detail = header_safe(detail);
    let mut r = Response::new(full(refusal_text(st, kind, &detail)));
    *r.status_mut() = StatusCode::FORBIDDEN;
    if let Ok(v) = HeaderValue::from_str(&format!("{}: {}", kind.as_str(), detail)) {
        r.headers_mut().insert("x-bottle-block", v);
    }
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn plain_status(status: StatusCode, text: &str) -> Response<Body> {
    let mut r = Response::new(full(format!("{text}\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

struct Refused {
    kind: Kind,
    detail: String,
    rule: Option<String>,
}

impl Refused {
    fn dlp(r: Refusal) -> Refused {
        Refused {
            kind: Kind::Dlp,
            detail: r.detail,
            rule: r.rule,
        }
    }
}

fn refused(kind: Kind, detail: impl Into<String>) -> Refused {
    Refused {
        kind,
        detail: detail.into(),
        rule: None,
    }
}

fn record(
    st: &State,
    method: &str,
    scheme: &'static str,
    host: &str,
    port: u16,
    path: &str,
) -> AuditRecord {
    AuditRecord {
        time: now_rfc3339(),
        bottle: st.config.bottle_id.clone(),
        method: st.dlp.sanitize(method),
        scheme: scheme.into(),
        host: st.dlp.sanitize(host).to_ascii_lowercase(),
        port,
        path: sanitize_path(&st.dlp, path),
        ..Default::default()
    }
}

/// Path for logs: findings redacted; the query dropped if anything in the URL hit.
fn sanitize_path(dlp: &DlpEngine, path: &str) -> String {
    let s = dlp.sanitize(path);
    if s != path {
        match s.split_once('?') {
            Some((p, _)) => format!("{p}?[REDACTED]"),
            None => s,
        }
    } else {
        s
    }
}

fn log_refusal(st: &State, mut rec: AuditRecord, r: &Refused, start: Instant) {
    rec.decision = Decision::Deny;
    rec.kind = Some(r.kind);
    rec.rule = r.rule.clone();
    rec.status = Some(403);
    rec.duration_ms = start.elapsed().as_millis() as u64;
    st.audit.write(&rec);
}

/// Canonical host for policy: IP literals in any spelling become their canonical text.
fn canon_host(h: &str) -> Option<String> {
    let n = normalize_host(h)?;
    if let Some(ip) = parse_ip_literal(&n) {
        return Some(ip.to_string());
    }
    if n.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    {
        Some(n)
    } else {
        None
    }
}

/// Splits `host[:port]` (IPv6 in brackets).
fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((canon_host(h)?, port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Some((canon_host(h)?, Some(p.parse().ok()?))),
        Some(_) => Some((canon_host(s)?, None)),
        None => Some((canon_host(s)?, None)),
    }
}

fn authority_for(host: &str, port: u16, default_port: u16) -> String {
    let h = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    if port == default_port {
        h
    } else {
        format!("{h}:{port}")
    }
}

// ---------------------------------------------------------------------------------------------
// Outer connection: CONNECT and absolute-form requests.
// ---------------------------------------------------------------------------------------------

async fn outer(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    if req.method() == Method::CONNECT {
        return connect(shared, req, Side::Agent).await;
    }
    if req.uri().scheme_str() == Some("http") && req.uri().authority().is_some() {
        let ctx = Arc::new(Ctx { tls: None });
        return request(shared, ctx, req).await;
    }
    if req.uri().authority().is_none()
        && req.uri().path() == HEALTH_PATH
        && req.method() == Method::GET
    {
        return plain_status(StatusCode::OK, "ok");
    }
    refuse_protocol(
        &shared,
        &req,
        "egress is a forward proxy: send absolute-form http:// requests or CONNECT",
    )
}

/// Refuses (and audits) a request the listener does not serve at all.
fn refuse_protocol(shared: &Shared, req: &Request<Incoming>, detail: &str) -> Response<Body> {
    let st = shared.current();
    let start = Instant::now();
    let r = refused(Kind::Protocol, detail);
    let host = req.uri().host().unwrap_or("").to_string();
    let rec = record(
        &st,
        req.method().as_str(),
        "http",
        &host,
        0,
        req.uri().path(),
    );
    log_refusal(&st, rec, &r, start);
    refusal(&st, r.kind, &r.detail)
}

/// The gate's listener: CONNECT to a `gate_only` tunnel, nothing else.
async fn gate(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    if req.method() == Method::CONNECT {
        return connect(shared, req, Side::Gate).await;
    }
    refuse_protocol(
        &shared,
        &req,
        "this listener serves only git-gate's CONNECT tunnels to its upstreams",
    )
}

async fn connect(shared: Arc<Shared>, mut req: Request<Incoming>, side: Side) -> Response<Body> {
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
    let mut rec = record(&st, "CONNECT", "https", raw_host, port, "");
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
    if let Some(tunnel) = routes.iter().find(|r| r.is_tunnel()) {
        rec.scheme = "tunnel".into();
        rec.route = Some(tunnel.id.clone());
        let (upstream, _addr) = match st.dialer.connect(&host, port).await {
            Ok(x) => x,
            Err(DialError::Ssrf { ip, reason, .. }) => {
                let r = refused(Kind::Ssrf, format!("{host} resolves to {ip}: {reason}"));
                log_refusal(&st, rec, &r, start);
                return refusal(&st, r.kind, &r.detail);
            }
            Err(e) => {
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
                if let Ok((a, b)) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await
                {
                    rec.bytes_up = a;
                    rec.bytes_down = b;
                }
            }
            rec.duration_ms = start.elapsed().as_millis() as u64;
            audit.write(&rec);
        });
        return Response::new(empty());
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

/// Connection context of a request.
struct Ctx {
    /// `Some((host, port))` inside an intercepted CONNECT: every request must target exactly it.
    tls: Option<(String, u16)>,
}

async fn intercept(
    shared: Arc<Shared>,
    mut io: TokioIo<hyper::upgrade::Upgraded>,
    host: String,
    port: u16,
) {
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
        let r = refused(
            Kind::Protocol,
            "only TLS is accepted after CONNECT on this route (it is not a tunnel route)",
        );
        let mut rec = record(&st, "CONNECT", "https", &host, port, "");
        rec.route = st.config.route_for(&host, port).map(|r| r.id.clone());
        log_refusal(&st, rec, &r, start);
        let body = refusal_text(&st, r.kind, &r.detail);
        let resp = format!(
            "HTTP/1.1 403 Forbidden\r\nX-Bottle-Block: {}: {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
            r.kind.as_str(),
            r.detail,
            body.len(),
            body
        );
        let _ = io.write_all(resp.as_bytes()).await;
        let _ = io.shutdown().await;
        return;
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
        let conn = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .max_concurrent_streams(256)
            .serve_connection(io, svc);
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => {}
            _ = shared.shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        }
    } else {
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(60))
            .serve_connection(io, svc)
            .with_upgrades();
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => {}
            _ = shared.shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// One request (plain HTTP, or inside intercepted TLS, HTTP/1.1 or HTTP/2).
// ---------------------------------------------------------------------------------------------

async fn request(shared: Arc<Shared>, ctx: Arc<Ctx>, req: Request<Incoming>) -> Response<Body> {
    let start = Instant::now();
    let st = shared.current();
    let scheme: &'static str = if ctx.tls.is_some() { "https" } else { "http" };
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".to_string());
    let (host, port) = match &ctx.tls {
        Some((h, p)) => (h.clone(), *p),
        None => (
            req.uri().host().and_then(canon_host).unwrap_or_default(),
            req.uri().port_u16().unwrap_or(80),
        ),
    };
    let raw_host = match &ctx.tls {
        Some((h, _)) => h.clone(),
        None => req.uri().host().unwrap_or_default().to_string(),
    };
    let mut rec = record(&st, req.method().as_str(), scheme, &raw_host, port, &pq);
    if let Some(r) = known_in_host(&st, &raw_host) {
        log_refusal(&st, rec, &r, start);
        return refusal(&st, r.kind, &r.detail);
    }
    match handle(&shared, &st, &ctx, req, &host, port, &mut rec, start).await {
        Ok(resp) => resp,
        Err(r) => {
            log_refusal(&st, rec, &r, start);
            refusal(&st, r.kind, &r.detail)
        }
    }
}

/// The canary or a known secret of the bottle in a host name, as the agent spelled it: refused
/// on every route (DLP or not), before the name is matched or resolved — a lookup of
/// `<secret>.allowed.example` would carry it out through DNS.
fn known_in_host(st: &State, raw_host: &str) -> Option<Refused> {
    let hit = st.dlp.known_in(raw_host.as_bytes())?;
    Some(Refused {
        kind: Kind::Dlp,
        detail: format!("secret ({}) in the host name", hit.rule_id),
        rule: Some(hit.rule_id),
    })
}

/// Checks `Host` and the URI authority against the connection's target (domain fronting).
fn check_authority(
    ctx: &Ctx,
    req: &Request<Incoming>,
    host: &str,
    port: u16,
) -> Result<(), Refused> {
    let hosts: Vec<&HeaderValue> = req.headers().get_all(header::HOST).iter().collect();
    if hosts.len() > 1 {
        return Err(refused(Kind::Fronting, "more than one Host header"));
    }
    let default_port = if ctx.tls.is_some() { 443 } else { 80 };
    let mut candidates: Vec<String> = Vec::new();
    if let Some(h) = hosts.first() {
        candidates.push(
            h.to_str()
                .map_err(|_| refused(Kind::Fronting, "Host header is not text"))?
                .to_string(),
        );
    }
    if ctx.tls.is_some() {
        if let Some(a) = req.uri().authority() {
            candidates.push(a.as_str().to_string());
        }
    }
    if ctx.tls.is_some() && candidates.is_empty() && req.version() != Version::HTTP_10 {
        return Err(refused(Kind::Protocol, "request without Host"));
    }
    for c in candidates {
        let c = c.rsplit_once('@').map(|(_, h)| h.to_string()).unwrap_or(c);
        let ok = match split_host_port(&c) {
            Some((h, p)) => {
                h == host
                    && p.unwrap_or(if ctx.tls.is_some() {
                        port
                    } else {
                        default_port
                    }) == port
            }
            None => false,
        };
        if !ok {
            return Err(refused(
                Kind::Fronting,
                format!(
                    "request authority differs from the connection's target {}",
                    authority_for(host, port, default_port)
                ),
            ));
        }
    }
    Ok(())
}

/// Whether `route` lets the request through: method, path prefix (on a
/// segment boundary) and, on a forge route, read-only unless it allows writes
/// and never git's receive-pack.
fn route_allows(route: &Route, req: &forge::Request<'_>) -> bool {
    match &route.kind {
        RouteKind::Tunnel => false,
        RouteKind::Http { methods, forge, .. } => {
            let method_listed = methods.is_empty() || methods.contains(req.method.as_str());
            path_allowed(route, req.path)
                && match forge {
                    Forge::NotForge => method_listed,
                    Forge::ReadOnly => {
                        !req.is_receive_pack()
                            && ((req.is_read() && method_listed) || req.is_upload_pack_post())
                    }
                    Forge::AllowWrites => !req.is_receive_pack() && method_listed,
                }
        }
    }
}

/// A request target's path and query.
fn split_query(pq: &str) -> (&str, Option<&str>) {
    match pq.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (pq, None),
    }
}

/// The path (without its query) lies under one of the route's prefixes.
fn path_allowed(route: &Route, path: &str) -> bool {
    match &route.kind {
        RouteKind::Tunnel => false,
        RouteKind::Http { paths, .. } => {
            paths.is_empty() || paths.iter().any(|p| path::prefix_matches(p, path))
        }
    }
}

fn forge_of(route: &Route) -> Forge {
    match &route.kind {
        RouteKind::Http { forge, .. } => *forge,
        RouteKind::Tunnel => Forge::NotForge,
    }
}

/// Why no route of a forge let the request through, when that is the reason.
fn forge_refusal(candidates: &[&Route], req: &forge::Request<'_>) -> Option<Refused> {
    let forge_route = candidates.iter().find(|r| forge_of(r) != Forge::NotForge)?;
    if req.is_receive_pack() {
        return Some(refused(
            Kind::Route,
            format!(
                "git push over HTTP (git-receive-pack) is refused on route {}, a route to a git remote's forge: pushes go through git-gate only",
                forge_route.id
            ),
        ));
    }
    if req.is_read() {
        return None;
    }
    let read_only = candidates
        .iter()
        .find(|r| forge_of(r) == Forge::ReadOnly && path_allowed(r, req.path))?;
    Some(refused(
        Kind::Route,
        format!(
            "{} is a write to a git remote's forge, and route {} is read-only (GET, HEAD, OPTIONS, and git clone/fetch): forge writes go around git-gate, so only a match with allow_writes that lists this path may make them",
            req.method, read_only.id
        ),
    ))
}

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "proxy-connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
];

fn strip_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool) {
    let listed: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| {
            v.split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .collect::<Vec<_>>()
        })
        .filter(|n| !(keep_upgrade && n == "upgrade"))
        .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
        .collect();
    for n in listed {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        if keep_upgrade && (*n == "upgrade" || *n == "connection") {
            continue;
        }
        h.remove(*n);
    }
}

fn strip_bottle_and_credentials(h: &mut HeaderMap, auth_route: bool) {
    let bottle: Vec<HeaderName> = h
        .keys()
        .filter(|k| k.as_str().starts_with("x-bottle-"))
        .cloned()
        .collect();
    for k in bottle {
        h.remove(k);
    }
    if auth_route {
        for n in ["authorization", "x-api-key", "cookie"] {
            h.remove(n);
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn handle(
    shared: &Arc<Shared>,
    st: &Arc<State>,
    ctx: &Ctx,
    mut req: Request<Incoming>,
    host: &str,
    port: u16,
    rec: &mut AuditRecord,
    start: Instant,
) -> Result<Response<Body>, Refused> {
    if host.is_empty() {
        return Err(refused(Kind::Protocol, "no host in the request"));
    }
    check_authority(ctx, &req, host, port)?;
    let method = req.method().clone();
    if method == Method::CONNECT {
        return Err(refused(
            Kind::Protocol,
            "CONNECT inside an intercepted connection (tunnelling or extended CONNECT) is refused",
        ));
    }
    let pq = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".to_string());
    let (path, query) = split_query(&pq);
    match path::check(path) {
        Ok(()) => {}
        Err(path::PathProblem::NotAbsolute) => {
            return Err(refused(
                Kind::Protocol,
                "request target must be an absolute path",
            ))
        }
        Err(p) => return Err(refused(Kind::Protocol, format!("path refused: {p}"))),
    }
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let facts = forge::Request {
        method: &method,
        path,
        query,
        content_type: content_type.as_deref(),
    };
    let candidates: Vec<&Route> = st
        .config
        .routes_for(host, port)
        .filter(|r| !r.is_tunnel())
        .collect();
    if candidates.is_empty() {
        return Err(refused(
            Kind::Route,
            format!("no route for {}:{port}", rec.host),
        ));
    }
    let Some(route) = candidates.iter().copied().find(|r| route_allows(r, &facts)) else {
        return Err(forge_refusal(&candidates, &facts).unwrap_or_else(|| {
            refused(
                Kind::Route,
                format!("{method} or this path is not allowed for {host}:{port}"),
            )
        }));
    };
    rec.route = Some(route.id.clone());
    let RouteKind::Http {
        upgrade: upgrade_ok,
        dlp: route_dlp,
        auth,
        ..
    } = &route.kind
    else {
        return Err(refused(Kind::Route, "tunnel route"));
    };
    let wants_upgrade = req.headers().contains_key(header::UPGRADE);
    if wants_upgrade && !*upgrade_ok {
        return Err(refused(
            Kind::Protocol,
            format!(
                "protocol upgrade (WebSocket) is not allowed on route {}",
                route.id
            ),
        ));
    }
    if wants_upgrade && *auth {
        return Err(refused(
            Kind::Protocol,
            "protocol upgrade through cred-proxy is not supported",
        ));
    }

    let headers = req.headers_mut();
    strip_hop_by_hop(headers, wants_upgrade);
    strip_bottle_and_credentials(headers, *auth);
    headers.remove(header::HOST);

    // Placeholders of other routes never leave on this one.
    let others = st.other_placeholders(&route.id);
    let placeholder_in = |data: &[u8]| others.find_in(data).map(|s| s.to_string());
    if !others.is_empty() {
        let mut found = placeholder_in(pq.as_bytes());
        for (_, v) in req.headers() {
            found = found.or_else(|| placeholder_in(v.as_bytes()));
        }
        if let Some(other) = found {
            return Err(placeholder_refusal(&other, &route.id));
        }
    }

    // Set by the body guard of a route without DLP (only then allocated).
    let mut placeholder_hit: Option<Arc<std::sync::OnceLock<String>>> = None;
    let upgrade_fut = wants_upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let mut send_pq = pq.clone();
    let up = Arc::new(AtomicU64::new(0));
    let mut verdict: Option<Arc<Verdict>> = None;

    let body: Body = if let Some(d) = route_dlp {
        let (pq2, body, v) = apply_dlp(
            shared, st, d, &others, route, &mut parts, body, host, port, &pq, rec,
        )
        .await?;
        send_pq = pq2;
        verdict = Some(v);
        body
    } else if others.is_empty() {
        body.map_err(|e| Box::new(e) as BoxError).boxed_unsync()
    } else {
        // No DLP here, but another route's placeholder still never leaves.
        let raw = body.map_err(|e| Box::new(e) as BoxError).boxed_unsync();
        let hit = placeholder_hit.insert(Arc::default()).clone();
        PlaceholderGuard::new(raw, others, hit).boxed_unsync()
    };
    let body: Body = Counted::new(body, up.clone(), None).boxed_unsync();

    // DLP may have redacted the URL: the path upstream sees must pass the same checks.
    if send_pq != pq {
        let (sent_path, sent_query) = split_query(&send_pq);
        let sent = forge::Request {
            path: sent_path,
            query: sent_query,
            ..facts
        };
        if path::check(sent_path).is_err() || !route_allows(route, &sent) {
            return Err(refused(
                Kind::Protocol,
                format!("the redacted path is not allowed on route {}", route.id),
            ));
        }
    }

    // Forward.
    let resp = if *auth {
        let Some(h) = &st.handoff else {
            return Err(refused(
                Kind::Route,
                "route needs cred-proxy but none is configured",
            ));
        };
        let dial = match st.dialer.resolve_checked(host, port).await {
            Ok(a) => a[0],
            Err(DialError::Ssrf { ip, reason, .. }) => {
                return Err(refused(
                    Kind::Ssrf,
                    format!("{host} resolves to {ip}: {reason}"),
                ))
            }
            Err(e) => {
                rec.decision = Decision::Error;
                rec.status = Some(502);
                rec.duration_ms = start.elapsed().as_millis() as u64;
                st.audit.write(rec);
                return Ok(plain_status(
                    StatusCode::BAD_GATEWAY,
                    &format!("egress: {e}"),
                ));
            }
        };
        let dial_s = dial.to_string();
        let sig = contract::handoff::sign(&h.key, &route.id, &dial_s, method.as_str(), &send_pq);
        let uri: Uri = format!("http://{}{}", h.addr, send_pq)
            .parse()
            .map_err(|_| refused(Kind::Protocol, "request target cannot be forwarded"))?;
        let mut out = Request::from_parts(parts, body);
        *out.uri_mut() = uri;
        *out.version_mut() = Version::HTTP_11;
        let hd = out.headers_mut();
        if let Ok(v) = HeaderValue::from_str(&authority_for(host, port, 443)) {
            hd.insert(header::HOST, v);
        }
        hd.insert(
            contract::handoff::HEADER_ROUTE,
            HeaderValue::from_str(&route.id).expect("route ids are header-safe"),
        );
        hd.insert(
            contract::handoff::HEADER_DIAL,
            HeaderValue::from_str(&dial_s).expect("address"),
        );
        hd.insert(
            contract::handoff::HEADER_SIG,
            HeaderValue::from_str(&sig).expect("hex"),
        );
        tokio::time::timeout(RESPONSE_HEAD_TIMEOUT, h.client.request(out)).await
    } else {
        let default_port = if ctx.tls.is_some() { 443 } else { 80 };
        let scheme = if ctx.tls.is_some() { "https" } else { "http" };
        let uri: Uri = format!(
            "{scheme}://{}{}",
            authority_for(host, port, default_port),
            send_pq
        )
        .parse()
        .map_err(|_| refused(Kind::Protocol, "request target cannot be forwarded"))?;
        let mut out = Request::from_parts(parts, body);
        *out.uri_mut() = uri;
        *out.version_mut() = Version::HTTP_11;
        if wants_upgrade {
            // Origin-form with an explicit Host on the dedicated HTTP/1.1 connection.
            let authority = authority_for(host, port, default_port);
            *out.uri_mut() = send_pq
                .parse()
                .map_err(|_| refused(Kind::Protocol, "request target cannot be forwarded"))?;
            if let Ok(v) = HeaderValue::from_str(&authority) {
                out.headers_mut().insert(header::HOST, v);
            }
            let fut = upstream::send_upgrade(
                &st.dialer,
                st.tls_h1.clone(),
                ctx.tls.is_some(),
                host,
                port,
                out,
            );
            match tokio::time::timeout(RESPONSE_HEAD_TIMEOUT, fut).await {
                Ok(Ok(r)) => Ok(Ok(r)),
                Ok(Err(e)) => {
                    if let Some(DialError::Ssrf { ip, reason, .. }) = e.downcast_ref::<DialError>()
                    {
                        return Err(refused(
                            Kind::Ssrf,
                            format!("{host} resolves to {ip}: {reason}"),
                        ));
                    }
                    rec.decision = Decision::Error;
                    rec.status = Some(502);
                    rec.duration_ms = start.elapsed().as_millis() as u64;
                    st.audit.write(rec);
                    return Ok(plain_status(
                        StatusCode::BAD_GATEWAY,
                        &format!("egress: upstream upgrade failed: {e}"),
                    ));
                }
                Err(e) => Err(e),
            }
        } else {
            tokio::time::timeout(RESPONSE_HEAD_TIMEOUT, st.client.request(out)).await
        }
    };
    if let Some(other) = placeholder_hit
        .as_deref()
        .and_then(std::sync::OnceLock::get)
    {
        // The body was cut before the placeholder; whatever upstream made of
        // the truncated request, the agent gets the refusal.
        return Err(placeholder_refusal(other, &route.id));
    }
    if let Some(r) = verdict.as_deref().and_then(Verdict::refusal) {
        // DLP broke the body off mid-way: whatever upstream made of the truncated request,
        // the agent gets the refusal.
        return Err(Refused::dlp(r.clone()));
    }
    let mut resp = match resp {
        Err(_) => {
            rec.decision = Decision::Error;
            rec.status = Some(504);
            rec.duration_ms = start.elapsed().as_millis() as u64;
            st.audit.write(rec);
            return Ok(plain_status(
                StatusCode::GATEWAY_TIMEOUT,
                "egress: upstream did not answer in time",
            ));
        }
        Ok(Err(e)) => {
            if let Some(DialError::Ssrf { ip, reason, .. }) = upstream::find_dial_error(&e) {
                return Err(refused(
                    Kind::Ssrf,
                    format!("{host} resolves to {ip}: {reason}"),
                ));
            }
            let why = match upstream::find_dial_error(&e) {
                Some(d) => d.to_string(),
                None => format!("upstream request failed: {}", error_chain(&e)),
            };
            rec.decision = Decision::Error;
            rec.status = Some(502);
            rec.duration_ms = start.elapsed().as_millis() as u64;
            st.audit.write(rec);
            return Ok(plain_status(
                StatusCode::BAD_GATEWAY,
                &format!("egress: {why}"),
            ));
        }
        Ok(Ok(r)) => r,
    };

    rec.decision = verdict
        .as_deref()
        .map_or(Decision::Allow, Verdict::decision);
    rec.status = Some(resp.status().as_u16());
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_up) = upgrade_fut {
            let server_up = hyper::upgrade::on(&mut resp);
            let audit = st.audit.clone();
            let mut rec2 = rec.clone();
            shared.tasks.spawn(async move {
                if let (Ok(c), Ok(s)) = (client_up.await, server_up.await) {
                    let mut c = TokioIo::new(c);
                    let mut s = TokioIo::new(s);
                    if let Ok((a, b)) = tokio::io::copy_bidirectional(&mut c, &mut s).await {
                        rec2.bytes_up = a;
                        rec2.bytes_down = b;
                    }
                }
                rec2.duration_ms = start.elapsed().as_millis() as u64;
                audit.write(&rec2);
            });
            let (parts, _) = resp.into_parts();
            return Ok(Response::from_parts(parts, empty()));
        }
    }
    strip_hop_by_hop(resp.headers_mut(), false);
    let down = Arc::new(AtomicU64::new(0));
    let guard = AuditGuard {
        audit: st.audit.clone(),
        record: rec.clone(),
        start,
        up,
        down: down.clone(),
    };
    let (parts, body) = resp.into_parts();
    let body = Counted::new(
        body.map_err(|e| Box::new(e) as BoxError).boxed_unsync(),
        down,
        Some(guard),
    )
    .boxed_unsync();
    Ok(Response::from_parts(parts, body))
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// Another route's placeholder on this one (URL, header or body).
fn placeholder_refusal(other: &str, route: &str) -> Refused {
    Refused::dlp(Refusal::placeholder(other, route))
}

/// Where a finding was.
fn first_rule(h: &[Hit]) -> Option<String> {
    h.first().map(|h| h.rule_id.clone())
}

/// Runs DLP on host, method, URL, header names and values, body and trailers, and applies the
/// route's action. Returns the path and query to send, the body to send, and the verdict the
/// body's scanning leaves for after the request has gone.
#[allow(clippy::too_many_arguments)]
async fn apply_dlp(
    shared: &Arc<Shared>,
    st: &Arc<State>,
    d: &RouteDlp,
    others: &ExactSet,
    route: &Route,
    parts: &mut http::request::Parts,
    body: Incoming,
    host: &str,
    port: u16,
    pq: &str,
    rec: &mut AuditRecord,
) -> Result<(String, Body, Arc<Verdict>), Refused> {
    let dlp_refusal = |rule: Option<String>, detail: String| Refused {
        kind: Kind::Dlp,
        detail,
        rule,
    };
    let from = Refused::dlp;
    // Host labels and the method: never redactable.
    for (what, data) in [
        ("host name", host),
        ("request method", parts.method.as_str()),
    ] {
        if let Some(rule) = first_rule(&st.dlp.scan(d, data.as_bytes())) {
            return Err(dlp_refusal(
                Some(rule.clone()),
                format!("secret ({rule}) in the {what}"),
            ));
        }
    }
    let url_hits = st.dlp.scan(d, pq.as_bytes());
    let field_hits = scanned::scan_fields(&st.dlp, d, &parts.headers);
    // Only a hold (a `supervise` route) shows the method and path to the
    // operator: sanitizing them is two more scans, not spent elsewhere.
    let shown = d.on_match == OnMatch::Supervise;
    let holds = Holds {
        dir: st.config.holds_dir.clone(),
        timeout: st.config.hold_timeout,
        summary: HoldSummary {
            id: String::new(),
            time: String::new(),
            bottle: st.config.bottle_id.clone(),
            route: route.id.clone(),
            method: if shown {
                st.dlp.sanitize(parts.method.as_str())
            } else {
                String::new()
            },
            host: host.to_string(),
            port,
            path: if shown {
                sanitize_path(&st.dlp, &dlp_redacted_path(pq, &url_hits))
            } else {
                String::new()
            },
            rules: Vec::new(),
            timeout_secs: 0,
        },
    };

    // Body: the first window (all of a body that fits one) is scanned before anything is sent.
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let policy = BodyPolicy {
        engine: st.dlp.clone(),
        dlp: d.clone(),
        others: others.clone(),
        opaque_type: dlp::opaque_type(content_type),
        window: st.dlp.max_body,
    };
    let scan = match decode::codings(&parts.headers) {
        Ok(codings) => BodyScan::new(policy, &codings),
        // A coding egress cannot undo, on a route that forwards what it cannot scan.
        Err(_) if d.opaque_bodies => BodyScan::passthrough(policy),
        Err(why) => return Err(dlp_refusal(None, why.to_string())),
    };
    let first = match scanned::read_first(&shared.pool, scan, body).await {
        Ok(f) => f,
        Err(FirstError::Stop(stop)) => return Err(from(Refusal::from_stop(stop, &route.id))),
        Err(FirstError::Read) => {
            return Err(refused(Kind::Protocol, "request body could not be read"))
        }
    };
    let verdict = Arc::new(Verdict::default());
    let mut body_rules: Vec<String> = Vec::new();
    let mut prefix = bytes::BytesMut::new();
    for p in first.pieces {
        match p {
            Piece::Bytes(b) => prefix.extend_from_slice(&b),
            Piece::Hold(rules) => body_rules.extend(rules),
        }
    }
    if first.scan.redacted {
        verdict.mark_redacted();
    }

    // URL and header findings, and the first window's holds: one decision.
    let mut where_: Vec<String> = Vec::new();
    if !url_hits.is_empty() {
        where_.push("URL".to_string());
    }
    where_.extend(field_hits.places("header"));
    let rule =
        first_rule(&url_hits).or_else(|| field_hits.hits().next().map(|h| h.rule_id.clone()));
    let mut send_pq = pq.to_string();
    if let Some(rule_s) = rule.clone() {
        rec.rule = Some(rule_s.clone());
        match d.on_match {
            OnMatch::Block => {
                return Err(dlp_refusal(
                    rule,
                    format!("secret ({rule_s}) in {}", where_.join(", ")),
                ))
            }
            OnMatch::Redact => {
                if !url_hits.is_empty() {
                    let r = dlp::redact(pq.as_bytes(), &url_hits);
                    send_pq = String::from_utf8_lossy(&r)
                        .replace('[', "%5B")
                        .replace(']', "%5D");
                }
                scanned::redact_fields(&mut parts.headers, &field_hits);
                verdict.mark_redacted();
            }
            OnMatch::Supervise => {}
        }
    }
    let mut rules: Vec<String> = Vec::new();
    if d.on_match == OnMatch::Supervise {
        rules.extend(url_hits.iter().map(|h| h.rule_id.clone()));
        rules.extend(field_hits.hits().map(|h| h.rule_id.clone()));
    }
    if !body_rules.is_empty() {
        where_.push("body".to_string());
        rec.rule = rec.rule.take().or_else(|| body_rules.first().cloned());
        rules.extend(body_rules);
    }
    if !rules.is_empty() {
        rules.sort();
        rules.dedup();
        holds.ask(rules, &where_.join(", ")).await.map_err(from)?;
        verdict.mark_held();
    }

    let body = match first.rest {
        None => {
            let mut trailers = first.trailers;
            if let Some(t) = trailers.as_mut() {
                if scanned::check_fields(&st.dlp, d, &holds, t, "trailer")
                    .await
                    .map_err(from)?
                {
                    verdict.mark_redacted();
                }
            }
            if first.scan.redacted {
                parts
                    .headers
                    .insert(header::CONTENT_LENGTH, HeaderValue::from(prefix.len()));
            }
            scanned::whole(prefix.freeze(), trailers)
        }
        Some(rest) => {
            if d.on_match == OnMatch::Redact {
                // A later window may still change the length.
                parts.headers.remove(header::CONTENT_LENGTH);
            }
            let rest = scanned::stream_rest(
                &shared.tasks,
                shared.pool.clone(),
                first.scan,
                rest,
                holds,
                route.id.clone(),
                verdict.clone(),
            );
            http_body_util::BodyExt::boxed_unsync(Chain {
                a: Some(full(prefix.freeze())),
                b: rest,
            })
        }
    };
    Ok((send_pq, body, verdict))
}

fn dlp_redacted_path(pq: &str, hits: &[Hit]) -> String {
    let r = dlp::redact(pq.as_bytes(), hits);
    let s = String::from_utf8_lossy(&r).into_owned();
    if hits.is_empty() {
        s
    } else {
        match s.split_once('?') {
            Some((p, _)) => format!("{p}?[REDACTED]"),
            None => s,
        }
    }
}

/// Two bodies in sequence (the buffered prefix, then the rest of the stream).
struct Chain {
    a: Option<Body>,
    b: Body,
}

impl http_body::Body for Chain {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        use std::task::Poll;
        if let Some(a) = self.a.as_mut() {
            match std::pin::Pin::new(a).poll_frame(cx) {
                Poll::Ready(None) => self.a = None,
                other => return other,
            }
        }
        std::pin::Pin::new(&mut self.b).poll_frame(cx)
    }
}
