//! The audit log: one JSON line per request or tunnel. Fields that come from the agent (host,
//! path) are passed through the DLP scanner and redacted before they are written, so no
//! planted secret reaches the log even for refused requests.
//!
//! Written to stdout, or to a file rotated at a size bound (the orchestrator keeps it in the
//! bottle's state dir, where the operator reads it after the bottle is gone). It never grows
//! past its bound and never blocks a request on a failed write.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::config::AuditTarget;
use crate::error::Error;

pub use contract::audit::{AuditRecord, Decision, Kind};

enum Sink {
    Stdout,
    File(Rotating),
}

/// A file that is renamed to `<path>.1` (older ones shifted up to
/// `<path>.<keep>`, the oldest dropped) before a line would take it past
/// `max_bytes`.
struct Rotating {
    path: PathBuf,
    file: File,
    size: u64,
    max_bytes: u64,
    keep: u32,
}

impl Rotating {
    fn open(path: &Path, max_bytes: u64, keep: u32) -> std::io::Result<Rotating> {
        let file = Self::open_file(path)?;
        let size = file.metadata()?.len();
        Ok(Rotating {
            path: path.to_path_buf(),
            file,
            size,
            max_bytes,
            keep,
        })
    }

    fn open_file(path: &Path) -> std::io::Result<File> {
        // The operator reads it through the group (see the orchestrator's state dir).
        OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(path)
    }

    fn write(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self.size > 0 && self.size + line.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let numbered = |i: u32| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{i}"));
            PathBuf::from(p)
        };
        for i in (1..self.keep).rev() {
            match std::fs::rename(numbered(i), numbered(i + 1)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        std::fs::rename(&self.path, numbered(1))?;
        self.file = Self::open_file(&self.path)?;
        self.size = 0;
        Ok(())
    }
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
            AuditTarget::File {
                path,
                max_bytes,
                keep,
            } => Sink::File(
                Rotating::open(path, *max_bytes, *keep).map_err(|e| Error::Audit {
                    path: path.clone(),
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
            Sink::File(f) => f.write(&line),
        };
        if let Err(e) = res {
            tracing::warn!(error = %e, "cannot write the audit log");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(path: &str) -> AuditRecord {
        AuditRecord {
            time: now_rfc3339(),
            method: "GET".into(),
            host: "api.example.test".into(),
            path: path.into(),
            decision: Decision::Allow,
            ..Default::default()
        }
    }

    #[test]
    fn the_file_rotates_at_its_bound_and_keeps_the_newest_records() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let log = AuditLog::open(&AuditTarget::File {
            path: path.clone(),
            max_bytes: 4096,
            keep: 2,
        })
        .unwrap();
        for i in 0..1000 {
            log.write(&record(&format!("/request/{i:04}")));
        }
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]);
        let mut total = 0;
        for n in &names {
            let len = std::fs::metadata(dir.path().join(n)).unwrap().len();
            assert!(len <= 4096, "{n} is {len} bytes");
            total += len;
        }
        assert!(total <= 3 * 4096);
        let newest = std::fs::read_to_string(&path).unwrap();
        assert!(newest.contains("/request/0999"), "{newest}");
        let oldest = std::fs::read_to_string(dir.path().join("audit.jsonl.2")).unwrap();
        assert!(
            !oldest.contains("/request/0000\""),
            "the oldest records are dropped"
        );
        for line in oldest.lines().chain(newest.lines()) {
            serde_json::from_str::<serde_json::Value>(line).expect("whole JSON lines");
        }
    }
}
