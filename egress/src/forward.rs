//! Sending a request that passed the policy: to cred-proxy (signed hand-off) on an `auth`
//! route, else upstream directly (with a dedicated HTTP/1.1 connection for protocol upgrades),
//! and bringing the answer back counted and audited. It must never follow a redirect, send a
//! hop-by-hop, `X-Bottle-*` or (on an `auth` route) credential header, nor dial an address
//! the SSRF guard refuses.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use crate::audit::AuditRecord;
use crate::config::Route;
use crate::hostport::authority_for;
use crate::io::{AuditGuard, Counted};
use crate::proxy::{Ctx, Kind, Shared, State, RESPONSE_HEAD_TIMEOUT};
use crate::refuse::{empty, refused, ssrf_refusal, upstream_failed, Refused};
use crate::resolve::DialError;
use crate::scanned::Verdict;
use crate::upstream::{self, Body, BoxError};

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

pub(crate) fn strip_hop_by_hop(h: &mut HeaderMap, keep_upgrade: bool) {
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

pub(crate) fn strip_bottle_and_credentials(h: &mut HeaderMap, auth_route: bool) {
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

/// Where a checked request goes, and what of it is signed or rewritten on the way.
pub(crate) struct Target<'a> {
    pub(crate) ctx: &'a Ctx,
    pub(crate) route: &'a Route,
    pub(crate) host: &'a str,
    pub(crate) port: u16,
    pub(crate) method: &'a Method,
    /// Path and query as sent (after any DLP redaction).
    pub(crate) pq: &'a str,
}

/// Either the next step's input, or the answer the agent gets now (already audited).
pub(crate) enum Step<T> {
    Next(T),
    Done(Response<Body>),
}

/// What came back from sending: the answer's head, an error, or the head timeout.
pub(crate) type Sent = Result<
    Result<Response<Incoming>, hyper_util::client::legacy::Error>,
    tokio::time::error::Elapsed,
>;

#[allow(clippy::too_many_arguments)]
pub(crate) async fn send(
    st: &State,
    t: &Target<'_>,
    auth: bool,
    wants_upgrade: bool,
    parts: http::request::Parts,
    body: Body,
    rec: &mut AuditRecord,
    start: Instant,
) -> Result<Step<Sent>, Refused> {
    if auth {
        return to_cred_proxy(st, t, parts, body, rec, start).await;
    }
    let default_port = if t.ctx.tls.is_some() { 443 } else { 80 };
    let scheme = if t.ctx.tls.is_some() { "https" } else { "http" };
    let uri: Uri = format!(
        "{scheme}://{}{}",
        authority_for(t.host, t.port, default_port),
        t.pq
    )
    .parse()
    .map_err(|_| refused(Kind::Protocol, "request target cannot be forwarded"))?;
    let mut out = Request::from_parts(parts, body);
    *out.uri_mut() = uri;
    *out.version_mut() = Version::HTTP_11;
    if wants_upgrade {
        return send_upgrade(st, t, out, default_port, rec, start).await;
    }
    Ok(Step::Next(
        tokio::time::timeout(RESPONSE_HEAD_TIMEOUT, st.client.request(out)).await,
    ))
}

/// The signed hand-off to cred-proxy, which adds the credential and dials the address
/// resolved (and SSRF-checked) here.
async fn to_cred_proxy(
    st: &State,
    t: &Target<'_>,
    parts: http::request::Parts,
    body: Body,
    rec: &mut AuditRecord,
    start: Instant,
) -> Result<Step<Sent>, Refused> {
    let (host, port) = (t.host, t.port);
    let Some(h) = &st.handoff else {
        return Err(refused(
            Kind::Route,
            "route needs cred-proxy but none is configured",
        ));
    };
    let dial = match st.dialer.resolve_checked(host, port).await {
        Ok(a) => a[0],
        Err(DialError::Ssrf { ip, reason, .. }) => return Err(ssrf_refusal(host, ip, reason)),
        Err(e) => {
            let text = format!("egress: {e}");
            let answer = upstream_failed(st, rec, start, StatusCode::BAD_GATEWAY, &text);
            return Ok(Step::Done(answer));
        }
    };
    let dial_s = dial.to_string();
    let sig = contract::handoff::sign(&h.key, &t.route.id, &dial_s, t.method.as_str(), t.pq);
    let uri: Uri = format!("http://{}{}", h.addr, t.pq)
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
        HeaderValue::from_str(&t.route.id).expect("route ids are header-safe"),
    );
    hd.insert(
        contract::handoff::HEADER_DIAL,
        HeaderValue::from_str(&dial_s).expect("address"),
    );
    hd.insert(
        contract::handoff::HEADER_SIG,
        HeaderValue::from_str(&sig).expect("hex"),
    );
    Ok(Step::Next(
        tokio::time::timeout(RESPONSE_HEAD_TIMEOUT, h.client.request(out)).await,
    ))
}

/// A protocol upgrade: origin-form with an explicit Host on a dedicated HTTP/1.1 connection.
async fn send_upgrade(
    st: &State,
    t: &Target<'_>,
    mut out: Request<Body>,
    default_port: u16,
    rec: &mut AuditRecord,
    start: Instant,
) -> Result<Step<Sent>, Refused> {
    let authority = authority_for(t.host, t.port, default_port);
    *out.uri_mut() =
        t.pq.parse()
            .map_err(|_| refused(Kind::Protocol, "request target cannot be forwarded"))?;
    if let Ok(v) = HeaderValue::from_str(&authority) {
        out.headers_mut().insert(header::HOST, v);
    }
    let tls = t.ctx.tls.is_some();
    let fut = upstream::send_upgrade(&st.dialer, st.tls_h1.clone(), tls, t.host, t.port, out);
    match tokio::time::timeout(RESPONSE_HEAD_TIMEOUT, fut).await {
        Ok(Ok(r)) => Ok(Step::Next(Ok(Ok(r)))),
        Ok(Err(e)) => {
            if let Some(DialError::Ssrf { ip, reason, .. }) = e.downcast_ref::<DialError>() {
                return Err(ssrf_refusal(t.host, ip, reason));
            }
            let text = format!("egress: upstream upgrade failed: {e}");
            let answer = upstream_failed(st, rec, start, StatusCode::BAD_GATEWAY, &text);
            Ok(Step::Done(answer))
        }
        Err(e) => Ok(Step::Next(Err(e))),
    }
}

/// The answer's head, or why there is none: an SSRF refusal, else a `504` or `502`.
pub(crate) fn upstream_answer(
    st: &State,
    host: &str,
    sent: Sent,
    rec: &mut AuditRecord,
    start: Instant,
) -> Result<Step<Response<Incoming>>, Refused> {
    match sent {
        Err(_) => Ok(Step::Done(upstream_failed(
            st,
            rec,
            start,
            StatusCode::GATEWAY_TIMEOUT,
            "egress: upstream did not answer in time",
        ))),
        Ok(Err(e)) => {
            if let Some(DialError::Ssrf { ip, reason, .. }) = upstream::find_dial_error(&e) {
                return Err(ssrf_refusal(host, ip, reason));
            }
            let why = match upstream::find_dial_error(&e) {
                Some(d) => d.to_string(),
                None => format!("upstream request failed: {}", error_chain(&e)),
            };
            let text = format!("egress: {why}");
            let answer = upstream_failed(st, rec, start, StatusCode::BAD_GATEWAY, &text);
            Ok(Step::Done(answer))
        }
        Ok(Ok(r)) => Ok(Step::Next(r)),
    }
}

/// The answer to the agent: spliced both ways after `101`, else its body counted and the
/// request audited when that body ends.
#[allow(clippy::too_many_arguments)]
pub(crate) fn respond(
    shared: &Shared,
    st: &State,
    verdict: Option<&Verdict>,
    upgrade_fut: Option<OnUpgrade>,
    up: Arc<AtomicU64>,
    mut resp: Response<Incoming>,
    rec: &mut AuditRecord,
    start: Instant,
) -> Response<Body> {
    rec.decision = verdict.map_or(crate::audit::Decision::Allow, Verdict::decision);
    rec.status = Some(resp.status().as_u16());
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        if let Some(client_up) = upgrade_fut {
            let server_up = hyper::upgrade::on(&mut resp);
            splice(shared, st, client_up, server_up, rec.clone(), start);
            let (parts, _) = resp.into_parts();
            return Response::from_parts(parts, empty());
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
    Response::from_parts(parts, body)
}

/// Copies both ways between the upgraded connections, audited when both close.
fn splice(
    shared: &Shared,
    st: &State,
    client_up: OnUpgrade,
    server_up: OnUpgrade,
    mut rec: AuditRecord,
    start: Instant,
) {
    let audit = st.audit.clone();
    shared.tasks.spawn(async move {
        if let (Ok(c), Ok(s)) = (client_up.await, server_up.await) {
            let mut c = TokioIo::new(c);
            let mut s = TokioIo::new(s);
            if let Ok((a, b)) = tokio::io::copy_bidirectional(&mut c, &mut s).await {
                rec.bytes_up = a;
                rec.bytes_down = b;
            }
        }
        rec.duration_ms = start.elapsed().as_millis() as u64;
        audit.write(&rec);
    });
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
