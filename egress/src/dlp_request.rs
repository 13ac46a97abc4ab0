//! DLP on one outgoing request: host, method, URL, header names and values, body and trailers,
//! and the route's action on a finding (block, redact, or hold for the operator). It must never
//! send a byte of a body before its first window is scanned, nor put a finding into a hold
//! summary, an audit record or a refusal.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use hyper::body::Incoming;

use crate::audit::AuditRecord;
use crate::config::{OnMatch, RouteDlp};
use crate::decode;
use crate::dlp::{self, ExactSet, Hit};
use crate::hold::HoldSummary;
use crate::proxy::{Kind, State};
use crate::refuse::{full, refused, sanitize_path, Refused};
use crate::request::Routed;
use crate::scanned::{self, FieldHits, First, FirstError, Holds, Refusal, Verdict};
use crate::upstream::{Body, BoxError};
use crate::window::{BodyPolicy, BodyScan, Piece};

/// Where a finding was.
fn first_rule(h: &[Hit]) -> Option<String> {
    h.first().map(|h| h.rule_id.clone())
}

fn dlp_refusal(rule: Option<String>, detail: String) -> Refused {
    Refused {
        kind: Kind::Dlp,
        detail,
        rule,
    }
}

/// Runs DLP on host, method, URL, header names and values, body and trailers, and applies the
/// route's action. Returns the path and query to send, the body to send, and the verdict the
/// body's scanning leaves for after the request has gone.
pub(crate) async fn apply_dlp(
    r: &Routed<'_>,
    d: &RouteDlp,
    others: &ExactSet,
    parts: &mut http::request::Parts,
    body: Incoming,
    rec: &mut AuditRecord,
) -> Result<(String, Body, Arc<Verdict>), Refused> {
    let st = r.st;
    check_host_and_method(st, d, r.host, parts.method.as_str())?;
    let url_hits = st.dlp.scan(d, r.pq.as_bytes());
    let field_hits = scanned::scan_fields(&st.dlp, d, &parts.headers);
    let holds = holds_for(r, d, parts, &url_hits);

    // Body: the first window (all of a body that fits one) is scanned before anything is sent.
    let mut first = read_first_window(r, d, others, &parts.headers, body).await?;
    let verdict = Arc::new(Verdict::default());
    let mut body_rules: Vec<String> = Vec::new();
    let mut prefix = BytesMut::new();
    for p in std::mem::take(&mut first.pieces) {
        match p {
            Piece::Bytes(b) => prefix.extend_from_slice(&b),
            Piece::Hold(rules) => body_rules.extend(rules),
        }
    }
    if first.scan.redacted {
        verdict.mark_redacted();
    }

    let findings = Findings {
        url: &url_hits,
        fields: &field_hits,
        body_rules,
    };
    let send_pq = decide(d, &holds, parts, r.pq, findings, &verdict, rec).await?;
    let body = body_to_send(r, d, parts, first, prefix, holds, &verdict).await?;
    Ok((send_pq, body, verdict))
}

/// Host labels and the method: never redactable.
fn check_host_and_method(
    st: &State,
    d: &RouteDlp,
    host: &str,
    method: &str,
) -> Result<(), Refused> {
    for (what, data) in [("host name", host), ("request method", method)] {
        if let Some(rule) = first_rule(&st.dlp.scan(d, data.as_bytes())) {
            return Err(dlp_refusal(
                Some(rule.clone()),
                format!("secret ({rule}) in the {what}"),
            ));
        }
    }
    Ok(())
}

/// Where holds are written, and the summary the operator sees: never a finding itself.
fn holds_for(
    r: &Routed<'_>,
    d: &RouteDlp,
    parts: &http::request::Parts,
    url_hits: &[Hit],
) -> Holds {
    let st = r.st;
    // Only a hold (a `supervise` route) shows the method and path to the
    // operator: sanitizing them is two more scans, not spent elsewhere.
    let shown = d.on_match == OnMatch::Supervise;
    Holds {
        dir: st.config.holds_dir.clone(),
        timeout: st.config.hold_timeout,
        summary: HoldSummary {
            id: String::new(),
            time: String::new(),
            bottle: st.config.bottle_id.clone(),
            route: r.route.id.clone(),
            method: if shown {
                st.dlp.sanitize(parts.method.as_str())
            } else {
                String::new()
            },
            host: r.host.to_string(),
            port: r.port,
            path: if shown {
                sanitize_path(&st.dlp, &dlp_redacted_path(r.pq, url_hits))
            } else {
                String::new()
            },
            rules: Vec::new(),
            timeout_secs: 0,
        },
    }
}

/// Reads and scans the body up to the end of its first window.
async fn read_first_window(
    r: &Routed<'_>,
    d: &RouteDlp,
    others: &ExactSet,
    headers: &HeaderMap,
    body: Incoming,
) -> Result<First, Refused> {
    let st = r.st;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let policy = BodyPolicy {
        engine: st.dlp.clone(),
        dlp: d.clone(),
        others: others.clone(),
        opaque_type: dlp::opaque_type(content_type),
        window: st.dlp.max_body,
    };
    let scan = match decode::codings(headers) {
        Ok(codings) => BodyScan::new(policy, &codings),
        // A coding egress cannot undo, on a route that forwards what it cannot scan.
        Err(_) if d.opaque_bodies => BodyScan::passthrough(policy),
        Err(why) => return Err(dlp_refusal(None, why.to_string())),
    };
    match scanned::read_first(&r.shared.pool, scan, body).await {
        Ok(f) => Ok(f),
        Err(FirstError::Stop(stop)) => Err(Refused::dlp(Refusal::from_stop(stop, &r.route.id))),
        Err(FirstError::Read) => Err(refused(Kind::Protocol, "request body could not be read")),
    }
}

/// What DLP found before anything was sent: in the URL, in header names and values, and the
/// rules the first window of the body holds for the operator.
struct Findings<'a> {
    url: &'a [Hit],
    fields: &'a FieldHits,
    body_rules: Vec<String>,
}

/// URL and header findings, and the first window's holds: one decision. Returns the path and
/// query to send.
async fn decide(
    d: &RouteDlp,
    holds: &Holds,
    parts: &mut http::request::Parts,
    pq: &str,
    findings: Findings<'_>,
    verdict: &Verdict,
    rec: &mut AuditRecord,
) -> Result<String, Refused> {
    let Findings {
        url: url_hits,
        fields: field_hits,
        body_rules,
    } = findings;
    let mut where_: Vec<String> = Vec::new();
    if !url_hits.is_empty() {
        where_.push("URL".to_string());
    }
    where_.extend(field_hits.places("header"));
    let rule = first_rule(url_hits).or_else(|| field_hits.hits().next().map(|h| h.rule_id.clone()));
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
                    let r = dlp::redact(pq.as_bytes(), url_hits);
                    send_pq = String::from_utf8_lossy(&r)
                        .replace('[', "%5B")
                        .replace(']', "%5D");
                }
                scanned::redact_fields(&mut parts.headers, field_hits);
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
        holds
            .ask(rules, &where_.join(", "))
            .await
            .map_err(Refused::dlp)?;
        verdict.mark_held();
    }
    Ok(send_pq)
}

/// The body as sent: the scanned first window whole, or followed by the rest scanned as it
/// streams.
async fn body_to_send(
    r: &Routed<'_>,
    d: &RouteDlp,
    parts: &mut http::request::Parts,
    first: First,
    prefix: BytesMut,
    holds: Holds,
    verdict: &Arc<Verdict>,
) -> Result<Body, Refused> {
    let st = r.st;
    let Some(rest) = first.rest else {
        let mut trailers = first.trailers;
        if let Some(t) = trailers.as_mut() {
            if scanned::check_fields(&st.dlp, d, &holds, t, "trailer")
                .await
                .map_err(Refused::dlp)?
            {
                verdict.mark_redacted();
            }
        }
        if first.scan.redacted {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(prefix.len()));
        }
        return Ok(scanned::whole(prefix.freeze(), trailers));
    };
    if d.on_match == OnMatch::Redact {
        // A later window may still change the length.
        parts.headers.remove(header::CONTENT_LENGTH);
    }
    let rest = scanned::stream_rest(
        &r.shared.tasks,
        r.shared.pool.clone(),
        first.scan,
        rest,
        holds,
        r.route.id.clone(),
        verdict.clone(),
    );
    Ok(http_body_util::BodyExt::boxed_unsync(Chain {
        a: Some(full(prefix.freeze())),
        b: rest,
    }))
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
