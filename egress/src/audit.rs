//! The audit log: one JSON line per request or tunnel. Fields that come from the agent (host,
//! path) are passed through the DLP scanner and redacted before they are written, so no
//! planted secret reaches the log even for refused requests.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Mutex;

use serde::Serialize;

use crate::config::AuditTarget;
use crate::error::Error;

#[derive(Debug, Clone, Serialize, Default)]
pub struct AuditRecord {
    pub time: String,
    pub bottle: String,
    pub method: String,
    pub scheme: &'static str,
    pub host: String,
    pub port: u16,
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    /// `allow`, `redact`, `hold-allow`, `deny`, `tunnel`, `error`.
    pub decision: &'static str,
    /// For refusals: `route`, `ssrf`, `dlp`, `fronting`, `protocol`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    pub bytes_up: u64,
    pub bytes_down: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub duration_ms: u64,
}

enum Sink {
    Stdout,
    File(File),
}

pub struct AuditLog {
    sink: Mutex<Sink>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AuditLog")
    }
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl AuditLog {
    pub fn open(target: &AuditTarget) -> Result<AuditLog, Error> {
        let sink = match target {
            AuditTarget::Stdout => Sink::Stdout,
            AuditTarget::File(p) => Sink::File(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| Error::Audit {
                        path: p.clone(),
                        source: e,
                    })?,
            ),
        };
        Ok(AuditLog {
            sink: Mutex::new(sink),
        })
    }

    /// Writes one line. The caller has already redacted agent-supplied fields.
    pub fn write(&self, rec: &AuditRecord) {
        let mut line = match serde_json::to_vec(rec) {
            Ok(l) => l,
            Err(_) => return,
        };
        line.push(b'\n');
        let mut sink = self.sink.lock().expect("audit sink");
        let res = match &mut *sink {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(&line).and_then(|_| out.flush())
            }
            Sink::File(f) => f.write_all(&line),
        };
        if let Err(e) = res {
            tracing::warn!(error = %e, "cannot write the audit log");
        }
    }
}
