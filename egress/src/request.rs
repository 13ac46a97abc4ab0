//! One request, plain HTTP or inside intercepted TLS (HTTP/1.1 or HTTP/2): the policy checks in
//! order — host secrets, fronting, method, path, route, upgrade, placeholders, DLP — before
//! `forward` sends it. It must never let a request reach `forward` that a check refused, nor
//! reorder the checks: an earlier one may stop a name from ever being resolved.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::audit::AuditRecord;
use crate::config::{Forge, Route, RouteDlp, RouteKind};
use crate::dlp::ExactSet;
use crate::dlp_request::apply_dlp;
use crate::forge;
use crate::forward::{self, Step};
use crate::hostport::{authority_for, canon_host, split_host_port};
use crate::io::{Counted, PlaceholderGuard};
use crate::path;
use crate::proxy::{Ctx, Kind, Shared, State};
use crate::refuse::{log_refusal, placeholder_refusal, record, refusal, refused, Refused};
use crate::scanned::Verdict;
use crate::upstream::{Body, BoxError};

pub(crate) async fn request(
    shared: Arc<Shared>,
    ctx: Arc<Ctx>,
    req: Request<Incoming>,
) -> Response<Body> {
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
pub(crate) fn known_in_host(st: &State, raw_host: &str) -> Option<Refused> {
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
    check_path(path)?;
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
    let route = choose_route(st, host, port, &facts, rec)?;
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
    check_upgrade(route, wants_upgrade, *upgrade_ok, *auth)?;

    let headers = req.headers_mut();
    forward::strip_hop_by_hop(headers, wants_upgrade);
    forward::strip_bottle_and_credentials(headers, *auth);
    headers.remove(header::HOST);

    // Placeholders of other routes never leave on this one.
    let others = st.other_placeholders(&route.id);
    check_placeholders(&others, &pq, req.headers(), &route.id)?;

    let upgrade_fut = wants_upgrade.then(|| hyper::upgrade::on(&mut req));
    let (mut parts, body) = req.into_parts();
    let up = Arc::new(AtomicU64::new(0));
    let routed = Routed {
        shared,
        st,
        route,
        host,
        port,
        pq: &pq,
    };
    let (body, out) = outgoing(&routed, route_dlp, others, &mut parts, body, rec).await?;
    let body: Body = Counted::new(body, up.clone(), None).boxed_unsync();
    check_redacted_path(route, &facts, &pq, &out.pq)?;

    let target = forward::Target {
        ctx,
        route,
        host,
        port,
        method: &method,
        pq: &out.pq,
    };
    let sent =
        match forward::send(st, &target, *auth, wants_upgrade, parts, body, rec, start).await? {
            Step::Next(sent) => sent,
            Step::Done(answer) => return Ok(answer),
        };
    if let Some(r) = out.cut_off(&route.id) {
        return Err(r);
    }
    let resp = match forward::upstream_answer(st, host, sent, rec, start)? {
        Step::Next(resp) => resp,
        Step::Done(answer) => return Ok(answer),
    };
    let verdict = out.verdict.as_deref();
    Ok(forward::respond(
        shared,
        st,
        verdict,
        upgrade_fut,
        up,
        resp,
        rec,
        start,
    ))
}

fn check_path(path: &str) -> Result<(), Refused> {
    match path::check(path) {
        Ok(()) => Ok(()),
        Err(path::PathProblem::NotAbsolute) => Err(refused(
            Kind::Protocol,
            "request target must be an absolute path",
        )),
        Err(p) => Err(refused(Kind::Protocol, format!("path refused: {p}"))),
    }
}

/// The first route for the target that lets the request through; the refusal says why none did.
fn choose_route<'a>(
    st: &'a State,
    host: &'a str,
    port: u16,
    facts: &forge::Request<'_>,
    rec: &mut AuditRecord,
) -> Result<&'a Route, Refused> {
    let candidates: Vec<&'a Route> = st
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
    let Some(route) = candidates.iter().copied().find(|r| route_allows(r, facts)) else {
        return Err(forge_refusal(&candidates, facts).unwrap_or_else(|| {
            refused(
                Kind::Route,
                format!(
                    "{} or this path is not allowed for {host}:{port}",
                    facts.method
                ),
            )
        }));
    };
    rec.route = Some(route.id.clone());
    Ok(route)
}

fn check_upgrade(
    route: &Route,
    wants_upgrade: bool,
    upgrade_ok: bool,
    auth: bool,
) -> Result<(), Refused> {
    if wants_upgrade && !upgrade_ok {
        return Err(refused(
            Kind::Protocol,
            format!(
                "protocol upgrade (WebSocket) is not allowed on route {}",
                route.id
            ),
        ));
    }
    if wants_upgrade && auth {
        return Err(refused(
            Kind::Protocol,
            "protocol upgrade through cred-proxy is not supported",
        ));
    }
    Ok(())
}

/// Another route's placeholder in the URL or a header.
fn check_placeholders(
    others: &ExactSet,
    pq: &str,
    headers: &HeaderMap,
    route_id: &str,
) -> Result<(), Refused> {
    if others.is_empty() {
        return Ok(());
    }
    let placeholder_in = |data: &[u8]| others.find_in(data).map(|s| s.to_string());
    let mut found = placeholder_in(pq.as_bytes());
    for (_, v) in headers {
        found = found.or_else(|| placeholder_in(v.as_bytes()));
    }
    match found {
        Some(other) => Err(placeholder_refusal(&other, route_id)),
        None => Ok(()),
    }
}

/// What is sent upstream in place of the agent's URL, and what its body leaves behind.
struct Outgoing {
    pq: String,
    /// What the body's DLP scanning decides after the request has gone.
    verdict: Option<Arc<Verdict>>,
    /// Set by the body guard of a route without DLP (only then allocated).
    placeholder_hit: Option<Arc<OnceLock<String>>>,
}

impl Outgoing {
    /// A body cut off on its way: whatever upstream made of the truncated request, the agent
    /// gets the refusal.
    fn cut_off(&self, route_id: &str) -> Option<Refused> {
        if let Some(other) = self.placeholder_hit.as_deref().and_then(OnceLock::get) {
            return Some(placeholder_refusal(other, route_id));
        }
        let r = self.verdict.as_deref().and_then(Verdict::refusal)?;
        Some(Refused::dlp(r.clone()))
    }
}

/// A request as routed: what deciding what leaves on it needs to know.
pub(crate) struct Routed<'a> {
    pub(crate) shared: &'a Shared,
    pub(crate) st: &'a State,
    pub(crate) route: &'a Route,
    pub(crate) host: &'a str,
    pub(crate) port: u16,
    /// The path and query as the agent sent them.
    pub(crate) pq: &'a str,
}

/// The URL and body to send: through DLP on a route with it, else only past the placeholder
/// guard (when another route has a placeholder at all).
async fn outgoing(
    r: &Routed<'_>,
    route_dlp: &Option<RouteDlp>,
    others: ExactSet,
    parts: &mut http::request::Parts,
    body: Incoming,
    rec: &mut AuditRecord,
) -> Result<(Body, Outgoing), Refused> {
    if let Some(d) = route_dlp {
        let (pq, body, v) = apply_dlp(r, d, &others, parts, body, rec).await?;
        let out = Outgoing {
            pq,
            verdict: Some(v),
            placeholder_hit: None,
        };
        return Ok((body, out));
    }
    let raw = body.map_err(|e| Box::new(e) as BoxError).boxed_unsync();
    let mut placeholder_hit: Option<Arc<OnceLock<String>>> = None;
    let body = if others.is_empty() {
        raw
    } else {
        // No DLP here, but another route's placeholder still never leaves.
        let hit = placeholder_hit.insert(Arc::default()).clone();
        PlaceholderGuard::new(raw, others, hit).boxed_unsync()
    };
    let out = Outgoing {
        pq: r.pq.to_string(),
        verdict: None,
        placeholder_hit,
    };
    Ok((body, out))
}

/// DLP may have redacted the URL: the path upstream sees must pass the same checks.
fn check_redacted_path(
    route: &Route,
    facts: &forge::Request<'_>,
    pq: &str,
    send_pq: &str,
) -> Result<(), Refused> {
    if send_pq == pq {
        return Ok(());
    }
    let (sent_path, sent_query) = split_query(send_pq);
    let sent = forge::Request {
        path: sent_path,
        query: sent_query,
        ..*facts
    };
    if path::check(sent_path).is_err() || !route_allows(route, &sent) {
        return Err(refused(
            Kind::Protocol,
            format!("the redacted path is not allowed on route {}", route.id),
        ));
    }
    Ok(())
}
