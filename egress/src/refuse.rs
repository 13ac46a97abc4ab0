//! The answers egress gives itself — `403` refusals with `X-Bottle-Block`, plain status
//! answers — and the audit records behind them. It must never let a secret into a header, a
//! body or a log line: every echoed detail goes through `header_safe` or DLP sanitizing first.

use std::time::Instant;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};

use crate::audit::{now_rfc3339, AuditRecord, Decision};
use crate::dlp::DlpEngine;
use crate::proxy::{Kind, State};
use crate::scanned::Refusal;
use crate::upstream::Body;

pub(crate) fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|e| match e {}).boxed_unsync()
}

pub(crate) fn empty() -> Body {
    Empty::new().map_err(|e| match e {}).boxed_unsync()
}

/// Keeps a header value printable and short.
pub(crate) fn header_safe(s: &str) -> String {
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
pub(crate) fn refusal_text(st: &State, kind: Kind, detail: &str) -> String {
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
pub(crate) fn refusal(st: &State, kind: Kind, detail: &str) -> Response<Body> {
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

pub(crate) fn plain_status(status: StatusCode, text: &str) -> Response<Body> {
    let mut r = Response::new(full(format!("{text}\n")));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

pub(crate) struct Refused {
    pub(crate) kind: Kind,
    pub(crate) detail: String,
    pub(crate) rule: Option<String>,
}

impl Refused {
    pub(crate) fn dlp(r: Refusal) -> Refused {
        Refused {
            kind: Kind::Dlp,
            detail: r.detail,
            rule: r.rule,
        }
    }
}

pub(crate) fn refused(kind: Kind, detail: impl Into<String>) -> Refused {
    Refused {
        kind,
        detail: detail.into(),
        rule: None,
    }
}

pub(crate) fn record(
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
pub(crate) fn sanitize_path(dlp: &DlpEngine, path: &str) -> String {
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

pub(crate) fn log_refusal(st: &State, mut rec: AuditRecord, r: &Refused, start: Instant) {
    rec.decision = Decision::Deny;
    rec.kind = Some(r.kind);
    rec.rule = r.rule.clone();
    rec.status = Some(403);
    rec.duration_ms = start.elapsed().as_millis() as u64;
    st.audit.write(&rec);
}

/// Another route's placeholder on this one (URL, header or body).
pub(crate) fn placeholder_refusal(other: &str, route: &str) -> Refused {
    Refused::dlp(Refusal::placeholder(other, route))
}

/// A name that resolved to an address the SSRF guard refuses.
pub(crate) fn ssrf_refusal(
    host: &str,
    ip: impl std::fmt::Display,
    reason: impl std::fmt::Display,
) -> Refused {
    refused(Kind::Ssrf, format!("{host} resolves to {ip}: {reason}"))
}

/// Audits a request upstream failed or never answered, and tells the agent so.
pub(crate) fn upstream_failed(
    st: &State,
    rec: &mut AuditRecord,
    start: Instant,
    status: StatusCode,
    text: &str,
) -> Response<Body> {
    rec.decision = Decision::Error;
    rec.status = Some(status.as_u16());
    rec.duration_ms = start.elapsed().as_millis() as u64;
    st.audit.write(rec);
    plain_status(status, text)
}
