//! One hand-off request: verify, choose the route, strip, inject, forward,
//! redact, log.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
use hyper::body::Incoming;

use crate::config::{Config, Route};
use crate::handoff::{self, BrokerKey};
use crate::redact::{RedactingBody, Redactor};
use crate::tokens::{RouteToken, Tokens};
use crate::upstream::{Proto, Upstream};

/// Boxed error of streamed bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Body sent upstream.
pub type ReqBody = UnsyncBoxBody<Bytes, BoxError>;
/// Body returned to egress.
pub type RespBody = UnsyncBoxBody<Bytes, BoxError>;

/// Headers that only ever describe one hop (RFC 9110 §7.6.1) plus the old
/// proxy ones.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Inbound credentials that never go upstream: cred-proxy's injection is the
/// only credential a request carries.
const INBOUND_CREDENTIALS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "cookie",
];

/// Everything a request needs, shared by all connections.
#[derive(Debug)]
pub struct Proxy {
    pub(crate) config: Config,
    pub(crate) key: BrokerKey,
    pub(crate) tokens: Tokens,
    pub(crate) upstream: Upstream,
    pub(crate) credential_headers: Vec<HeaderName>,
}

/// Where a refused request stopped, for the log.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    MissingHandoff,
    BadSignature,
    NotOriginForm,
    UnknownRoute,
    BadDial,
}

impl Refusal {
    fn status(self) -> StatusCode {
        match self {
            Refusal::MissingHandoff => StatusCode::UNAUTHORIZED,
            Refusal::BadSignature | Refusal::UnknownRoute => StatusCode::FORBIDDEN,
            Refusal::NotOriginForm | Refusal::BadDial => StatusCode::BAD_REQUEST,
        }
    }
    fn reason(self) -> &'static str {
        match self {
            Refusal::MissingHandoff => "missing_handoff",
            Refusal::BadSignature => "bad_signature",
            Refusal::NotOriginForm => "not_origin_form",
            Refusal::UnknownRoute => "unknown_route",
            Refusal::BadDial => "bad_dial",
        }
    }
    fn message(self) -> &'static str {
        match self {
            Refusal::MissingHandoff => {
                "cred-proxy refused the request: it carries no signed hand-off from egress \
                 (X-Bottle-Route, X-Bottle-Dial and X-Bottle-Sig are required, once each).\n"
            }
            Refusal::BadSignature => {
                "cred-proxy refused the request: the hand-off signature does not verify.\n"
            }
            Refusal::NotOriginForm => {
                "cred-proxy refused the request: the request target must be a path (origin-form).\n"
            }
            Refusal::UnknownRoute => {
                "cred-proxy refused the request: cred-proxy has no credential route with that id.\n"
            }
            Refusal::BadDial => {
                "cred-proxy refused the request: X-Bottle-Dial must be an ip:port address.\n"
            }
        }
    }
}

fn text_response(status: StatusCode, text: &'static str) -> Response<RespBody> {
    let mut resp = Response::new(
        Full::new(Bytes::from_static(text.as_bytes()))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp.headers_mut().insert(
        "x-bottle-refused-by",
        HeaderValue::from_static("cred-proxy"),
    );
    resp
}

fn single_header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    let mut it = headers.get_all(name).iter();
    let first = it.next()?;
    if it.next().is_some() {
        return None;
    }
    first.to_str().ok()
}

/// The route's host as an authority for the given port.
fn authority(host: &str, port: u16) -> String {
    let h = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    };
    if port == 443 {
        h
    } else {
        format!("{h}:{port}")
    }
}

/// Removes everything that must not reach the upstream. `credential_headers`
/// are the headers any route of this bottle injects: an agent-supplied value
/// for one of them is never passed on, whichever route is used.
fn strip_request_headers(headers: &mut HeaderMap, credential_headers: &[HeaderName]) {
    strip_hop_by_hop(headers);
    for name in INBOUND_CREDENTIALS {
        headers.remove(*name);
    }
    for name in credential_headers {
        headers.remove(name);
    }
    headers.remove(header::HOST);
    let bottle: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("x-bottle-"))
        .cloned()
        .collect();
    for k in bottle {
        headers.remove(k);
    }
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // `TE: trailers` is end-to-end in practice (gRPC needs it, HTTP/2 allows it).
    let te_trailers = headers
        .get(header::TE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for k in listed {
        headers.remove(k);
    }
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

impl Proxy {
    /// Handles one request from egress. Never fails: refusals and upstream
    /// errors become responses.
    pub async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<RespBody> {
        let start = Instant::now();
        let (parts, body) = req.into_parts();
        let method = parts.method.clone();

        let (route, dial) = match self.authorise(&parts.method, &parts.uri, &parts.headers) {
            Ok(ok) => ok,
            Err(refusal) => return refused(refusal, &parts.uri, &method, peer),
        };

        let snapshot = self.tokens.snapshot();
        let Some(token) = snapshot.get(&route.id) else {
            // Tokens are loaded for every configured route; unreachable unless
            // the config and token set disagree.
            return text_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cred-proxy has no token loaded for this route.\n",
            );
        };

        let bytes_up = Arc::new(AtomicU64::new(0));
        let outgoing = self.outgoing(parts, body, route, dial, token, bytes_up.clone());
        let sent = self
            .upstream
            .send(dial, &route.host, |proto| outgoing.build(proto))
            .await;
        let (resp, proto) = match sent {
            Ok(ok) => ok,
            Err(e) => {
                tracing::warn!(
                    event = "upstream_error",
                    route = %route.id,
                    method = %method,
                    dial = %dial,
                    error = %e,
                    status = 502,
                    duration_ms = start.elapsed().as_secs_f64() * 1000.0,
                );
                return text_response(
                    StatusCode::BAD_GATEWAY,
                    "cred-proxy could not complete the request with the upstream; see its log.\n",
                );
            }
        };

        let exchange = Exchange {
            route,
            method,
            start,
            bytes_up,
        };
        answer(resp, proto, snapshot.redactor().clone(), exchange)
    }

    /// The request as it goes upstream: egress's credential headers out, the
    /// route's token in, the body counted for the log.
    fn outgoing(
        &self,
        parts: http::request::Parts,
        body: Incoming,
        route: &Route,
        dial: SocketAddr,
        token: &RouteToken,
        bytes_up: Arc<AtomicU64>,
    ) -> Outgoing {
        let route_header = route.scheme.header_name();
        let mut headers = parts.headers;
        strip_request_headers(&mut headers, &self.credential_headers);
        // Ask for an uncompressed body so an echoed token can be found and
        // masked; a compressed one would hide it.
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        headers.insert(route_header, token.header_value.clone());

        let path_and_query = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_else(|| "/".to_owned());
        let authority = authority(&route.host, dial.port());

        let body: ReqBody = Counting::new(body, bytes_up)
            .map_err(|e| Box::new(e) as BoxError)
            .boxed_unsync();
        Outgoing {
            method: parts.method,
            authority,
            path_and_query,
            headers,
            body,
        }
    }

    fn authorise(
        &self,
        method: &Method,
        uri: &Uri,
        headers: &HeaderMap,
    ) -> Result<(&Route, SocketAddr), Refusal> {
        let route_id = single_header(headers, handoff::HEADER_ROUTE);
        let dial = single_header(headers, handoff::HEADER_DIAL);
        let sig = single_header(headers, handoff::HEADER_SIG);
        let (Some(route_id), Some(dial), Some(sig)) = (route_id, dial, sig) else {
            return Err(Refusal::MissingHandoff);
        };
        if uri.scheme().is_some() || uri.authority().is_some() {
            return Err(Refusal::NotOriginForm);
        }
        let path_and_query = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        if !handoff::verify(
            &self.key,
            route_id,
            dial,
            method.as_str(),
            path_and_query,
            sig,
        ) {
            return Err(Refusal::BadSignature);
        }
        let route = self.config.route(route_id).ok_or(Refusal::UnknownRoute)?;
        // Exactly the address egress checked: a literal ip:port, never a name.
        let addr: SocketAddr = dial.parse().map_err(|_| Refusal::BadDial)?;
        Ok((route, addr))
    }
}

/// Logs a refusal and answers it.
fn refused(refusal: Refusal, uri: &Uri, method: &Method, peer: SocketAddr) -> Response<RespBody> {
    // The container healthcheck probes every 2 s with an unsigned
    // request; keep those out of the warnings.
    if matches!(refusal, Refusal::MissingHandoff) && uri.path() == crate::health::PROBE_PATH {
        tracing::debug!(event = "healthcheck", peer = %peer);
    } else {
        tracing::warn!(
            event = "refused",
            peer = %peer,
            reason = refusal.reason(),
            method = %method,
            status = refusal.status().as_u16(),
        );
    }
    text_response(refusal.status(), refusal.message())
}

/// A request sent upstream before the protocol is known: the connection
/// decides whether the host travels in `:authority` or in `Host`.
struct Outgoing {
    method: Method,
    authority: String,
    path_and_query: String,
    headers: HeaderMap,
    body: ReqBody,
}

impl Outgoing {
    fn build(self, proto: Proto) -> Request<ReqBody> {
        let mut builder = Request::builder().method(self.method);
        let mut headers = self.headers;
        match proto {
            Proto::Http2 => {
                // HTTP/2 carries the host in :authority.
                builder = builder.uri(
                    Uri::builder()
                        .scheme("https")
                        .authority(self.authority.as_str())
                        .path_and_query(self.path_and_query.as_str())
                        .build()
                        .expect("validated host and path form a URI"),
                );
            }
            Proto::Http1 => {
                builder = builder.uri(self.path_and_query.as_str());
                headers.insert(
                    header::HOST,
                    HeaderValue::from_str(&self.authority)
                        .expect("validated host is a header value"),
                );
            }
        }
        let mut req = builder.body(self.body).expect("parts are valid");
        *req.headers_mut() = headers;
        req
    }
}

/// An authorised request in flight: what its upstream errors and its
/// end-of-request log line name.
struct Exchange<'a> {
    route: &'a Route,
    method: Method,
    start: Instant,
    bytes_up: Arc<AtomicU64>,
}

/// The upstream's answer on its way back: refused if compressed, else its
/// headers masked now and its body redacted as it streams.
fn answer(
    resp: Response<Incoming>,
    proto: Proto,
    redactor: Arc<Redactor>,
    x: Exchange<'_>,
) -> Response<RespBody> {
    let (mut parts, body) = resp.into_parts();
    // A compressed body would hide an echoed token from the redactor. We
    // asked for identity; an upstream that compresses anyway is refused.
    let encoded = parts
        .headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"));
    if encoded && !body.is_end_stream() {
        tracing::warn!(
            event = "upstream_error",
            route = %x.route.id,
            method = %x.method,
            error = "upstream sent a compressed body although identity was asked",
            status = 502,
            duration_ms = x.start.elapsed().as_secs_f64() * 1000.0,
        );
        return text_response(
            StatusCode::BAD_GATEWAY,
            "cred-proxy refused the upstream's answer: it sent a compressed body, \
             which cred-proxy cannot check for an echoed token.\n",
        );
    }
    strip_hop_by_hop(&mut parts.headers);
    let masked_headers = redactor.mask_headers(&mut parts.headers);
    let status = parts.status;
    let log = LogOnEnd {
        route: x.route.id.clone(),
        method: x.method,
        status,
        proto,
        start: x.start,
        bytes_up: x.bytes_up,
        bytes_down: 0,
        masked: masked_headers,
        ended: false,
    };
    let body = Logged {
        inner: RedactingBody::new(body, redactor),
        log,
    };
    Response::from_parts(parts, body.boxed_unsync())
}

/// Counts the bytes of a body as they pass.
struct Counting<B> {
    inner: B,
    count: Arc<AtomicU64>,
}

impl<B> Counting<B> {
    fn new(inner: B, count: Arc<AtomicU64>) -> Self {
        Counting { inner, count }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Counting<B> {
    type Data = Bytes;
    type Error = B::Error;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &r {
            if let Some(d) = f.data_ref() {
                self.count.fetch_add(d.len() as u64, Ordering::Relaxed);
            }
        }
        r
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Writes the access log line when the response body ends (or is dropped).
struct LogOnEnd {
    route: String,
    method: Method,
    status: StatusCode,
    proto: Proto,
    start: Instant,
    bytes_up: Arc<AtomicU64>,
    bytes_down: u64,
    masked: usize,
    ended: bool,
}

impl Drop for LogOnEnd {
    fn drop(&mut self) {
        tracing::info!(
            event = "request",
            route = %self.route,
            method = %self.method,
            status = self.status.as_u16(),
            upstream_protocol = self.proto.as_str(),
            bytes_up = self.bytes_up.load(Ordering::Relaxed),
            bytes_down = self.bytes_down,
            complete = self.ended,
            redacted = self.masked,
            duration_ms = self.start.elapsed().as_secs_f64() * 1000.0,
        );
    }
}

struct Logged<B> {
    inner: RedactingBody<B>,
    log: LogOnEnd,
}

impl<B> Body for Logged<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(f))) => {
                if let Some(d) = f.data_ref() {
                    this.log.bytes_down += d.len() as u64;
                }
                this.log.masked = this.log.masked.max(this.inner.found());
                Poll::Ready(Some(Ok(f)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => {
                this.log.ended = true;
                this.log.masked = this.log.masked.max(this.inner.found());
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_credentials_hop_by_hop_and_bottle_headers() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer placeholder"),
            ("proxy-authorization", "Basic x"),
            ("x-api-key", "k"),
            ("cookie", "a=b"),
            ("x-custom-auth", "agent"),
            ("x-bottle-route", "r"),
            ("x-bottle-anything", "r"),
            ("host", "other.test"),
            ("connection", "keep-alive, x-drop-me"),
            ("x-drop-me", "1"),
            ("accept", "text/event-stream"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        strip_request_headers(&mut h, &[HeaderName::from_static("x-custom-auth")]);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, vec!["accept"]);
    }

    #[test]
    fn authority_omits_443_and_brackets_ipv6() {
        assert_eq!(authority("api.test", 443), "api.test");
        assert_eq!(authority("api.test", 8443), "api.test:8443");
        assert_eq!(authority("::1", 8443), "[::1]:8443");
    }
}
