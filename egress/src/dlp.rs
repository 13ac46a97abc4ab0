//! DLP on what leaves: which bytes of a request match a secret rule, a known secret or the
//! canary, body decoding (gzip, deflate, br, zstd; bounded), opaque-body detection, and
//! redaction (`[REDACTED:<rule>]`).
//!
//! Never returns or logs the matched bytes themselves: a [`Hit`] carries the rule id and range.

use std::io::Read;
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

/// Why a body could not be scanned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opaque {
    TooLarge,
    Encoding(String),
    Binary,
}

impl std::fmt::Display for Opaque {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Opaque::TooLarge => f.write_str("body larger than max_body_bytes"),
            Opaque::Encoding(e) => write!(f, "content-encoding {e} cannot be scanned"),
            Opaque::Binary => f.write_str("binary or archive body cannot be scanned"),
        }
    }
}

/// Decodes a body per its `Content-Encoding` (possibly a list), bounded by `max` decoded bytes.
pub fn decode_body(encoding: Option<&str>, body: &[u8], max: usize) -> Result<Vec<u8>, Opaque> {
    let mut cur = body.to_vec();
    let Some(enc) = encoding else {
        return Ok(cur);
    };
    // Encodings are listed in the order applied: undo them from the last.
    for e in enc.split(',').rev() {
        let e = e.trim().to_ascii_lowercase();
        let reader: Box<dyn Read + '_> = match e.as_str() {
            "" | "identity" => continue,
            "gzip" | "x-gzip" => Box::new(flate2::read::MultiGzDecoder::new(cur.as_slice())),
            "deflate" => {
                // "deflate" is zlib-wrapped per RFC 9110, but some clients send raw deflate.
                if cur.first().is_some_and(|b| b & 0x0f == 8) {
                    Box::new(flate2::read::ZlibDecoder::new(cur.as_slice()))
                } else {
                    Box::new(flate2::read::DeflateDecoder::new(cur.as_slice()))
                }
            }
            "br" => Box::new(brotli::Decompressor::new(cur.as_slice(), 4096)),
            "zstd" => Box::new(
                zstd::stream::read::Decoder::new(cur.as_slice())
                    .map_err(|_| Opaque::Encoding(e.clone()))?,
            ),
            other => return Err(Opaque::Encoding(other.to_string())),
        };
        let mut out = Vec::new();
        reader
            .take(max as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|_| Opaque::Encoding(e.clone()))?;
        if out.len() > max {
            return Err(Opaque::TooLarge);
        }
        cur = out;
    }
    Ok(cur)
}

/// Whether a (decoded) body is something the scanner cannot see into.
pub fn is_opaque(content_type: Option<&str>, body: &[u8]) -> bool {
    if let Some(ct) = content_type {
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
        if OPAQUE.contains(&mime)
            || mime.starts_with("image/")
            || mime.starts_with("audio/")
            || mime.starts_with("video/")
        {
            return true;
        }
    }
    // Magic numbers of compressed/archive formats, then NUL bytes as the mark of binary data.
    const MAGIC: &[&[u8]] = &[
        b"PK\x03\x04",
        b"\x1f\x8b",
        b"\x28\xb5\x2f\xfd",
        b"BZh",
        b"\xfd7zXZ\x00",
        b"7z\xbc\xaf\x27\x1c",
        b"Rar!",
    ];
    if MAGIC.iter().any(|m| body.starts_with(m)) {
        return true;
    }
    body.iter().take(64 * 1024).any(|b| *b == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

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
    fn decodes_bounded() {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&vec![b'a'; 5000]).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(decode_body(Some("gzip"), &gz, 10_000).unwrap().len(), 5000);
        assert_eq!(decode_body(Some("gzip"), &gz, 100), Err(Opaque::TooLarge));
        let z = zstd::encode_all(&b"hello"[..], 3).unwrap();
        assert_eq!(decode_body(Some("zstd"), &z, 100).unwrap(), b"hello");
        let mut br = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut br, 4096, 5, 22);
            w.write_all(b"hello br").unwrap();
        }
        assert_eq!(decode_body(Some("br"), &br, 100).unwrap(), b"hello br");
        let mut zl = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        zl.write_all(b"zlib").unwrap();
        assert_eq!(
            decode_body(Some("deflate"), &zl.finish().unwrap(), 100).unwrap(),
            b"zlib"
        );
        assert!(matches!(
            decode_body(Some("compress"), b"x", 100),
            Err(Opaque::Encoding(_))
        ));
    }

    #[test]
    fn opaque_detection() {
        assert!(is_opaque(Some("application/zip"), b"x"));
        assert!(is_opaque(None, b"PK\x03\x04rest"));
        assert!(is_opaque(None, b"abc\0def"));
        assert!(!is_opaque(Some("application/json"), b"{\"a\":1}"));
    }
}
