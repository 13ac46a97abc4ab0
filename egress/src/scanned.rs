//! The request body of a DLP route on its way out. It is read from the agent and scanned window
//! by window on the scan pool ([`crate::window`], [`crate::pool`]). A body that fits one window
//! (`max_body_bytes` plus the overlap) is scanned whole before the request is sent, as are its
//! trailers; a longer one is sent as each window is cleared, by a task that the body owns (it
//! stops when the body is dropped). A finding there stops the body mid-way — upstream gets a
//! truncated request, never the secret — and the agent gets the refusal.
//!
//! Also here: findings in header and trailer names and values, and the operator's holds.

use crate::audit::Decision;
use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http_body::{Body as HttpBody, Frame};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use tokio::sync::mpsc;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};

use crate::audit::now_rfc3339;
use crate::config::{OnMatch, RouteDlp};
use crate::dlp::{self, DlpEngine, Hit};
use crate::hold::{self, HoldOutcome, HoldSummary};
use crate::pool::ScanPool;
use crate::upstream::{Body, BoxError};
use crate::window::{BodyScan, Piece, Stop};

/// Bytes read from the agent before a scan step (fewer at the end of the body).
const BATCH: usize = 256 << 10;
/// Steps smaller than this run inline: handing them to the pool costs more than they do.
const INLINE: usize = 64 << 10;
/// Frames between the scanning task and upstream.
const CHANNEL: usize = 4;

/// Why DLP refuses a request (kind `dlp`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub rule: Option<String>,
    pub detail: String,
}

impl Refusal {
    /// Another route's placeholder on this one (URL, header or body).
    pub fn placeholder(other: &str, route: &str) -> Refusal {
        Refusal {
            rule: Some("placeholder".into()),
            detail: format!("the placeholder of route {other} cannot be sent to route {route}"),
        }
    }

    pub fn from_stop(stop: Stop, route: &str) -> Refusal {
        match stop {
            Stop::Found(rule) => Refusal {
                detail: format!("secret ({rule}) in body"),
                rule: Some(rule),
            },
            Stop::Placeholder(other) => Refusal::placeholder(&other, route),
            Stop::Opaque(why) => Refusal {
                rule: None,
                detail: why,
            },
            Stop::CannotRedact(coding, rule) => Refusal {
                detail: format!(
                    "secret ({rule}) in a {}-encoded body, which cannot be redacted in place; \
                     send it without Content-Encoding",
                    coding.as_str()
                ),
                rule: Some(rule),
            },
        }
    }
}

/// What happened to a body after the request left (read when the response comes back).
#[derive(Debug, Default)]
pub struct Verdict {
    refusal: OnceLock<Refusal>,
    redacted: AtomicBool,
    held: AtomicBool,
}

impl Verdict {
    pub fn refusal(&self) -> Option<&Refusal> {
        self.refusal.get()
    }

    /// The audit decision for a request that went through.
    pub fn decision(&self) -> Decision {
        if self.redacted.load(Ordering::Relaxed) {
            Decision::Redact
        } else if self.held.load(Ordering::Relaxed) {
            Decision::HoldAllow
        } else {
            Decision::Allow
        }
    }

    pub fn mark_redacted(&self) {
        self.redacted.store(true, Ordering::Relaxed);
    }

    pub fn mark_held(&self) {
        self.held.store(true, Ordering::Relaxed);
    }
}

/// Where route `supervise` asks the operator.
#[derive(Clone)]
pub struct Holds {
    pub dir: Option<PathBuf>,
    pub timeout: Duration,
    /// The request's summary; id, time and rules are filled per hold.
    pub summary: HoldSummary,
}

impl Holds {
    /// Waits for the operator's decision on findings (`rules`) in `place`.
    pub async fn ask(&self, rules: Vec<String>, place: &str) -> Result<(), Refusal> {
        let rule = rules.first().cloned();
        let rule_s = rule.clone().unwrap_or_default();
        let Some(dir) = &self.dir else {
            return Err(Refusal {
                rule,
                detail: "held for the operator but no holds_dir".into(),
            });
        };
        let mut s = self.summary.clone();
        s.id = hold::new_id();
        s.time = now_rfc3339();
        s.rules = rules;
        s.timeout_secs = self.timeout.as_secs();
        let detail = match hold::hold(dir, &s, self.timeout).await {
            HoldOutcome::Allow => return Ok(()),
            HoldOutcome::Deny => format!(
                "secret ({rule_s}) in {place}; the operator denied the held request {}",
                s.id
            ),
            HoldOutcome::Timeout => format!(
                "secret ({rule_s}) in {place}; held request {} timed out without a decision",
                s.id
            ),
            HoldOutcome::Failed => "held request could not be recorded".into(),
        };
        Err(Refusal { rule, detail })
    }
}

/// Findings in the names and values of a header (or trailer) map.
#[derive(Debug, Default)]
pub struct FieldHits {
    /// Names that hold a finding (their fields are dropped on redaction).
    pub names: Vec<(HeaderName, Vec<Hit>)>,
    /// (name, index among that name's values, findings in the value).
    pub values: Vec<(HeaderName, usize, Vec<Hit>)>,
}

impl FieldHits {
    pub fn hits(&self) -> impl Iterator<Item = &Hit> {
        self.names
            .iter()
            .flat_map(|(_, h)| h)
            .chain(self.values.iter().flat_map(|(_, _, h)| h))
    }

    /// Where, for a refusal: `header name x-…`, `header x-data`.
    pub fn places(&self, what: &str) -> Vec<String> {
        let mut out: Vec<String> = self
            .names
            .iter()
            .map(|_| format!("{what} name"))
            .chain(self.values.iter().map(|(n, _, _)| format!("{what} {n}")))
            .collect();
        out.dedup();
        out
    }
}

/// Scans every name and value of `map`.
pub fn scan_fields(engine: &DlpEngine, d: &RouteDlp, map: &HeaderMap) -> FieldHits {
    let mut out = FieldHits::default();
    let mut index: HashMap<&HeaderName, usize> = HashMap::new();
    for (name, value) in map {
        let i = index.entry(name).or_insert(0);
        let at = *i;
        *i += 1;
        if at == 0 {
            let h = engine.scan(d, name.as_str().as_bytes());
            if !h.is_empty() {
                out.names.push((name.clone(), h));
            }
        }
        let h = engine.scan(d, value.as_bytes());
        if !h.is_empty() {
            out.values.push((name.clone(), at, h));
        }
    }
    out
}

/// Redacts each value with a finding in place; drops the fields whose name has one.
pub fn redact_fields(map: &mut HeaderMap, hits: &FieldHits) {
    for (name, at, h) in &hits.values {
        let mut values: Vec<HeaderValue> = map.get_all(name).iter().cloned().collect();
        if let Some(v) = values.get_mut(*at) {
            *v = HeaderValue::from_bytes(&dlp::redact(v.as_bytes(), h))
                .unwrap_or(HeaderValue::from_static("[REDACTED]"));
        }
        map.remove(name);
        for v in values {
            map.append(name.clone(), v);
        }
    }
    for (name, _) in &hits.names {
        map.remove(name);
    }
}

/// The part of a body read before the request is sent.
pub struct First {
    pub scan: BodyScan,
    /// Cleared bytes and holds of the windows scanned so far, in order.
    pub pieces: Vec<Piece>,
    /// The rest of the body, when it did not fit in one window.
    pub rest: Option<Incoming>,
    pub trailers: Option<HeaderMap>,
}

/// Why the first part could not be read.
pub enum FirstError {
    Stop(Stop),
    /// The agent's body broke off.
    Read,
}

/// Reads until the body ends or its first window is scanned.
pub async fn read_first(
    pool: &ScanPool,
    mut scan: BodyScan,
    mut body: Incoming,
) -> Result<First, FirstError> {
    let mut batch = BytesMut::new();
    let mut pieces = Vec::new();
    loop {
        match body.frame().await {
            None => break,
            Some(Err(_)) => return Err(FirstError::Read),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(d) => {
                    batch.extend_from_slice(&d);
                    if batch.len() >= BATCH {
                        let r;
                        (scan, r) = step(pool, scan, batch.split().freeze()).await;
                        pieces = r.map_err(FirstError::Stop)?;
                        if !pieces.is_empty() {
                            return Ok(First {
                                scan,
                                pieces,
                                rest: Some(body),
                                trailers: None,
                            });
                        }
                    }
                }
                Err(frame) => {
                    let trailers = frame.into_trailers().ok();
                    let (scan, p) = last_step(pool, scan, batch.freeze()).await;
                    return Ok(First {
                        scan,
                        pieces: p.map_err(FirstError::Stop)?,
                        rest: None,
                        trailers,
                    });
                }
            },
        }
    }
    let (scan, p) = last_step(pool, scan, batch.freeze()).await;
    pieces.extend(p.map_err(FirstError::Stop)?);
    Ok(First {
        scan,
        pieces,
        rest: None,
        trailers: None,
    })
}

/// A body that was read and scanned whole: its bytes, then its trailers.
pub fn whole(bytes: Bytes, trailers: Option<HeaderMap>) -> Body {
    match trailers {
        None => Full::new(bytes).map_err(|e| match e {}).boxed_unsync(),
        Some(t) => StreamBody::new(futures_util::stream::iter([
            Ok(Frame::data(bytes)),
            Ok(Frame::trailers(t)),
        ]))
        .boxed_unsync(),
    }
}

/// Checks header or trailer fields per the route's action: `Ok(true)` when values were
/// redacted (or fields dropped), `Ok(false)` when clean or allowed by the operator.
pub async fn check_fields(
    engine: &DlpEngine,
    d: &RouteDlp,
    holds: &Holds,
    map: &mut HeaderMap,
    what: &str,
) -> Result<bool, Refusal> {
    let hits = scan_fields(engine, d, map);
    let Some(first) = hits.hits().next() else {
        return Ok(false);
    };
    let rule = first.rule_id.clone();
    let places = hits.places(what).join(", ");
    match d.on_match {
        OnMatch::Block => Err(Refusal {
            detail: format!("secret ({rule}) in {places}"),
            rule: Some(rule),
        }),
        OnMatch::Redact => {
            redact_fields(map, &hits);
            Ok(true)
        }
        OnMatch::Supervise => {
            let mut rules: Vec<String> = hits.hits().map(|h| h.rule_id.clone()).collect();
            rules.sort();
            rules.dedup();
            holds.ask(rules, &places).await.map(|()| false)
        }
    }
}

/// Scans and sends the rest of a body that did not fit one window, from a task the returned
/// body owns. A refusal is left in `verdict` and breaks the body off.
pub fn stream_rest(
    tasks: &TaskTracker,
    pool: ScanPool,
    scan: BodyScan,
    rest: Incoming,
    holds: Holds,
    route: String,
    verdict: Arc<Verdict>,
) -> Body {
    let (tx, rx) = mpsc::channel(CHANNEL);
    let task = tasks.spawn(async move {
        let mut driver = Driver {
            pool,
            scan: Some(scan),
            holds,
            route,
            tx,
            verdict,
        };
        if let Err(Halt::Refused(r)) = driver.run(rest).await {
            let _ = driver.verdict.refusal.set(r);
            let _ = driver
                .tx
                .send(Err("egress: request body refused by DLP".into()))
                .await;
        }
    });
    ChannelBody {
        rx,
        _task: AbortOnDropHandle::new(task),
    }
    .boxed_unsync()
}

/// One scan step of pushed bytes, inline when small, else on the pool.
async fn step(
    pool: &ScanPool,
    mut scan: BodyScan,
    raw: Bytes,
) -> (BodyScan, Result<Vec<Piece>, Stop>) {
    if raw.len() < INLINE && scan.is_identity() {
        let r = scan.push(raw);
        return (scan, r);
    }
    pool.run(move || {
        let r = scan.push(raw);
        (scan, r)
    })
    .await
}

/// The last bytes of a body and its end.
async fn last_step(
    pool: &ScanPool,
    mut scan: BodyScan,
    raw: Bytes,
) -> (BodyScan, Result<Vec<Piece>, Stop>) {
    let inline = raw.len() + scan.held() < INLINE && scan.is_identity();
    let job = move || {
        let r = (|| {
            let mut out = Vec::new();
            if !raw.is_empty() {
                out.extend(scan.push(raw)?);
            }
            out.extend(scan.finish()?);
            Ok(out)
        })();
        (scan, r)
    };
    if inline {
        job()
    } else {
        pool.run(job).await
    }
}

enum Halt {
    /// Upstream is done with the body (it answered, or the request failed): stop quietly.
    Gone,
    Refused(Refusal),
}

struct Driver {
    pool: ScanPool,
    scan: Option<BodyScan>,
    holds: Holds,
    route: String,
    tx: mpsc::Sender<Result<Frame<Bytes>, BoxError>>,
    verdict: Arc<Verdict>,
}

impl Driver {
    async fn run(&mut self, mut rest: Incoming) -> Result<(), Halt> {
        let mut batch = BytesMut::new();
        loop {
            match rest.frame().await {
                None => return self.finish(batch.freeze(), None).await,
                Some(Err(e)) => {
                    // The agent's body broke off: so does the one upstream reads.
                    let _ = self.tx.send(Err(Box::new(e))).await;
                    return Ok(());
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(d) => {
                        batch.extend_from_slice(&d);
                        if batch.len() >= BATCH {
                            let scan = self.scan.take().expect("scan is put back after each step");
                            let (scan, r) = step(&self.pool, scan, batch.split().freeze()).await;
                            self.scan = Some(scan);
                            self.send(r).await?;
                        }
                    }
                    Err(frame) => {
                        return self
                            .finish(batch.freeze(), frame.into_trailers().ok())
                            .await
                    }
                },
            }
        }
    }

    async fn finish(&mut self, raw: Bytes, trailers: Option<HeaderMap>) -> Result<(), Halt> {
        let scan = self.scan.take().expect("scan is put back after each step");
        let (scan, r) = last_step(&self.pool, scan, raw).await;
        self.scan = Some(scan);
        self.send(r).await?;
        if let Some(mut t) = trailers {
            let scan = self.scan.as_ref().expect("scan");
            let policy = scan.policy();
            if check_fields(&policy.engine, &policy.dlp, &self.holds, &mut t, "trailer")
                .await
                .map_err(Halt::Refused)?
            {
                self.verdict.mark_redacted();
            }
            self.tx
                .send(Ok(Frame::trailers(t)))
                .await
                .map_err(|_| Halt::Gone)?;
        }
        Ok(())
    }

    async fn send(&mut self, r: Result<Vec<Piece>, Stop>) -> Result<(), Halt> {
        if self.scan.as_ref().is_some_and(|s| s.redacted) {
            self.verdict.mark_redacted();
        }
        let pieces = r.map_err(|s| Halt::Refused(Refusal::from_stop(s, &self.route)))?;
        for p in pieces {
            match p {
                Piece::Bytes(b) => self
                    .tx
                    .send(Ok(Frame::data(b)))
                    .await
                    .map_err(|_| Halt::Gone)?,
                Piece::Hold(rules) => {
                    self.holds.ask(rules, "body").await.map_err(Halt::Refused)?;
                    self.verdict.mark_held();
                }
            }
        }
        Ok(())
    }
}

/// The scanned body: what the scanning task sends. Dropping it aborts the
/// task (the request was cancelled).
struct ChannelBody {
    rx: mpsc::Receiver<Result<Frame<Bytes>, BoxError>>,
    _task: AbortOnDropHandle<()>,
}

impl HttpBody for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx.poll_recv(cx)
    }
}
