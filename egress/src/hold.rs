//! Supervised holds: a request whose DLP findings say `supervise` waits for the operator.
//!
//! Egress writes `<holds_dir>/<id>.hold.json` (a summary with the secret redacted) and waits
//! for `<holds_dir>/<id>.decision`, whose first line is `allow` or `deny`. No decision within
//! `hold_timeout_secs` refuses the request. Both files are removed afterwards.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

/// What the operator sees about a held request. Never the secret.
#[derive(Debug, Clone, Serialize)]
pub struct HoldSummary {
    pub id: String,
    pub time: String,
    pub bottle: String,
    pub route: String,
    pub method: String,
    pub host: String,
    pub port: u16,
    /// Path with findings redacted and the query removed.
    pub path: String,
    pub rules: Vec<String>,
    pub timeout_secs: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldOutcome {
    Allow,
    Deny,
    Timeout,
    /// The hold file could not be written: refused.
    Failed,
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh hold id (unique within the process, hard to guess across restarts).
pub fn new_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("h{:x}{:04x}{:x}", nanos, std::process::id() & 0xffff, n)
}

/// Writes the hold file and waits for a decision.
pub async fn hold(dir: &Path, summary: &HoldSummary, timeout: Duration) -> HoldOutcome {
    let hold_path = dir.join(format!("{}.hold.json", summary.id));
    let decision_path = dir.join(format!("{}.decision", summary.id));
    let json = match serde_json::to_vec_pretty(summary) {
        Ok(j) => j,
        Err(_) => return HoldOutcome::Failed,
    };
    let tmp = dir.join(format!(".{}.hold.tmp", summary.id));
    if tokio::fs::write(&tmp, &json).await.is_err()
        || tokio::fs::rename(&tmp, &hold_path).await.is_err()
    {
        tracing::warn!(dir = %dir.display(), "cannot write a hold file; refusing the held request");
        return HoldOutcome::Failed;
    }
    tracing::info!(hold = %summary.id, route = %summary.route, "request held for the operator");
    let deadline = Instant::now() + timeout;
    let outcome = loop {
        if let Ok(text) = tokio::fs::read_to_string(&decision_path).await {
            match text
                .lines()
                .next()
                .map(|l| l.trim().to_ascii_lowercase())
                .as_deref()
            {
                Some("allow") => break HoldOutcome::Allow,
                Some("deny") => break HoldOutcome::Deny,
                // Possibly half-written: look again.
                _ => {}
            }
        }
        if Instant::now() >= deadline {
            break HoldOutcome::Timeout;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let _ = tokio::fs::remove_file(&hold_path).await;
    let _ = tokio::fs::remove_file(&decision_path).await;
    outcome
}
