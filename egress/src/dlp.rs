//! DLP on what leaves: which bytes of a request match a secret rule, a known secret or the
//! canary (the scanner also looks through base64, hex, percent, JSON and HTML escapes and
//! UTF-16), what marks a body as opaque, and redaction (`[REDACTED:<rule>]`) of the bytes as
//! received. Bodies are decoded in [`crate::decode`] and scanned in windows in
//! [`crate::window`].
//!
//! Never returns or logs the matched bytes themselves: a [`Hit`] carries the rule id and range.

use std::sync::Arc;

use crate::config::{self, RouteDlp};
use crate::error::Error;

/// One match: rule id and byte range in the scanned buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hit {
    pub rule_id: String,
    pub start: usize,
    pub end: usize,
}

/// Something that finds secrets in bytes.
pub trait Detect: Send + Sync {
    fn find(&self, data: &[u8]) -> Vec<Hit>;
}

/// Exact values (placeholders), matched raw. Used for the "placeholder of another route" check.
#[derive(Debug, Default, Clone)]
pub struct ExactSet {
    values: Vec<(Vec<u8>, String)>,
}

impl ExactSet {
    pub fn new(values: impl IntoIterator<Item = (Vec<u8>, String)>) -> ExactSet {
        ExactSet {
            values: values.into_iter().filter(|(v, _)| !v.is_empty()).collect(),
        }
    }
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
    /// Length of the longest value (0 when empty).
    pub fn longest(&self) -> usize {
        self.values.iter().map(|(v, _)| v.len()).max().unwrap_or(0)
    }
    /// The label of the first value found in `data`.
    pub fn find_in(&self, data: &[u8]) -> Option<&str> {
        self.values
            .iter()
            .find(|(v, _)| data.windows(v.len()).any(|w| w == v.as_slice()))
            .map(|(_, l)| l.as_str())
    }
}

/// The scanner-backed engine every DLP route uses.
pub struct DlpEngine {
    /// Rules and known secrets together.
    both: Arc<dyn Detect>,
    rules_only: Arc<dyn Detect>,
    known_only: Arc<dyn Detect>,
    pub max_body: usize,
}

impl std::fmt::Debug for DlpEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DlpEngine")
            .field("max_body", &self.max_body)
            .finish()
    }
}

impl DlpEngine {
    /// Loads the rules, the known secrets file and the canary.
    pub fn load(cfg: &config::Dlp) -> Result<DlpEngine, Error> {
        let mut known: Vec<Vec<u8>> = Vec::new();
        if let Some(p) = &cfg.known_secrets_file {
            let text = std::fs::read(p).map_err(|e| Error::Io {
                path: p.clone(),
                source: e,
            })?;
            for line in text.split(|b| *b == b'\n') {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if !line.iter().all(|b| b.is_ascii_whitespace()) {
                    known.push(line.to_vec());
                }
            }
        }
        if let Some(c) = &cfg.canary {
            known.push(c.as_bytes().to_vec());
        }
        // Header names and host names reach upstream lower-cased: a secret written there loses
        // its case, not its value.
        let lower: Vec<Vec<u8>> = known
            .iter()
            .map(|k| k.to_ascii_lowercase())
            .filter(|l| !known.contains(l))
            .collect();
        known.extend(lower);
        let (both, rules_only, known_only) = crate::scan::build(&cfg.rules, known)?;
        Ok(DlpEngine {
            both,
            rules_only,
            known_only,
            max_body: cfg.max_body_bytes,
        })
    }

    /// Findings in `data` for a route's detectors.
    pub fn scan(&self, d: &RouteDlp, data: &[u8]) -> Vec<Hit> {
        let det = match (d.token_patterns, d.known_secrets) {
            (true, true) => &self.both,
            (true, false) => &self.rules_only,
            (false, true) => &self.known_only,
            (false, false) => return Vec::new(),
        };
        det.find(data)
    }

    /// The bottle's known secrets or canary in `data` (a host name: checked on every route,
    /// before anything is resolved).
    pub fn known_in(&self, data: &[u8]) -> Option<Hit> {
        self.known_only.find(data).into_iter().next()
    }

    /// Redacts every finding (rules and known secrets) from a string headed for a log line.
    pub fn sanitize(&self, s: &str) -> String {
        let hits = self.both.find(s.as_bytes());
        if hits.is_empty() {
            return s.to_string();
        }
        String::from_utf8_lossy(&redact(s.as_bytes(), &hits)).into_owned()
    }
}

/// Replaces each hit's range with `[REDACTED:<rule>]`; overlapping hits are merged.
pub fn redact(data: &[u8], hits: &[Hit]) -> Vec<u8> {
    let mut hits: Vec<&Hit> = hits
        .iter()
        .filter(|h| h.start < h.end && h.end <= data.len())
        .collect();
    hits.sort_by_key(|h| (h.start, std::cmp::Reverse(h.end)));
    let mut out = Vec::with_capacity(data.len());
    let mut pos = 0;
    for h in hits {
        if h.end <= pos {
            continue;
        }
        let start = h.start.max(pos);
        out.extend_from_slice(&data[pos..start]);
        out.extend_from_slice(format!("[REDACTED:{}]", h.rule_id).as_bytes());
        pos = h.end;
    }
    out.extend_from_slice(&data[pos..]);
    out
}

/// Why a body the scanner cannot see into is refused.
pub const BINARY: &str = "binary, compressed or archive body cannot be scanned";

/// A `Content-Type` of something the scanner cannot see into (archives, images, …).
pub fn opaque_type(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else {
        return false;
    };
    let ct = ct.to_ascii_lowercase();
    let mime = ct.split(';').next().unwrap_or("").trim();
    const OPAQUE: &[&str] = &[
        "application/zip",
        "application/gzip",
        "application/x-gzip",
        "application/x-tar",
        "application/x-7z-compressed",
        "application/x-rar-compressed",
        "application/x-bzip2",
        "application/x-xz",
        "application/zstd",
        "application/java-archive",
        "application/pdf",
    ];
    OPAQUE.contains(&mime)
        || mime.starts_with("image/")
        || mime.starts_with("audio/")
        || mime.starts_with("video/")
}

/// Starts with the magic number of a compressed or archive format. (Formats without one —
/// raw deflate, brotli — are caught as not being text.)
pub fn has_archive_magic(body: &[u8]) -> bool {
    const MAGIC: &[&[u8]] = &[
        b"PK\x03\x04",
        b"\x1f\x8b",
        b"\x28\xb5\x2f\xfd",
        b"BZh",
        b"\xfd7zXZ\x00",
        b"7z\xbc\xaf\x27\x1c",
        b"Rar!",
    ];
    MAGIC.iter().any(|m| body.starts_with(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_replaces_and_merges() {
        let data = b"a=SECRET1&b=SECRET2";
        let hits = vec![
            Hit {
                rule_id: "r".into(),
                start: 2,
                end: 9,
            },
            Hit {
                rule_id: "r".into(),
                start: 4,
                end: 9,
            },
            Hit {
                rule_id: "k".into(),
                start: 12,
                end: 19,
            },
        ];
        assert_eq!(
            redact(data, &hits),
            b"a=[REDACTED:r]&b=[REDACTED:k]".to_vec()
        );
    }

    #[test]
    fn opaque_types_and_magic() {
        assert!(opaque_type(Some("application/zip")));
        assert!(opaque_type(Some("Image/PNG; q=1")));
        assert!(!opaque_type(Some("application/json")));
        assert!(has_archive_magic(b"PK\x03\x04rest"));
        assert!(!has_archive_magic(b"{\"a\":1}"));
    }
}
