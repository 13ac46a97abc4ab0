//! Exact secret values supplied at run time (a bottle's own tokens, the
//! canary), matched raw and in the encodings an exfiltration would use.

use std::path::Path;
use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine;

use crate::finding::{fingerprint, redact};
use crate::Error;

pub const RULE_ID: &str = "known-secret";

/// Encoded forms shorter than this are not searched: they would match noise.
const MIN_VARIANT_LEN: usize = 8;

#[derive(Clone)]
pub struct KnownSecrets {
    pub(crate) inner: Arc<KnownInner>,
}

impl std::fmt::Debug for KnownSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the values.
        f.debug_struct("KnownSecrets")
            .field("count", &self.inner.secrets.len())
            .finish()
    }
}

pub(crate) struct Known {
    pub fingerprint: String,
    pub redacted: String,
}

pub(crate) struct KnownInner {
    pub ac: Option<AhoCorasick>,
    /// For each automaton pattern: the secret index and the encoding name.
    pub variants: Vec<(usize, &'static str)>,
    pub secrets: Vec<Known>,
}

impl KnownSecrets {
    pub fn new<I: IntoIterator<Item = Vec<u8>>>(values: I) -> KnownSecrets {
        let mut patterns: Vec<Vec<u8>> = Vec::new();
        let mut variants = Vec::new();
        let mut secrets: Vec<Known> = Vec::new();
        let mut seen: Vec<Vec<u8>> = Vec::new();
        for value in values {
            if value.is_empty() || seen.contains(&value) {
                continue;
            }
            let idx = secrets.len();
            for (enc, pat) in encodings(&value) {
                if patterns.contains(&pat) {
                    continue;
                }
                patterns.push(pat);
                variants.push((idx, enc));
            }
            secrets.push(Known {
                fingerprint: fingerprint(RULE_ID, &value),
                redacted: redact(&value),
            });
            seen.push(value);
        }
        let ac = if patterns.is_empty() {
            None
        } else {
            Some(
                AhoCorasickBuilder::new()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(&patterns)
                    .expect("known-secret automaton"),
            )
        };
        KnownSecrets {
            inner: Arc::new(KnownInner {
                ac,
                variants,
                secrets,
            }),
        }
    }

    /// One value per line; blank lines ignored; a trailing `\r` is dropped.
    pub fn from_file(path: &Path) -> Result<KnownSecrets, Error> {
        let data = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Ok(KnownSecrets::new(
            data.split(|&b| b == b'\n')
                .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
                .filter(|l| !l.iter().all(u8::is_ascii_whitespace))
                .map(<[u8]>::to_vec),
        ))
    }

    pub fn empty() -> KnownSecrets {
        KnownSecrets::new(Vec::new())
    }

    pub fn len(&self) -> usize {
        self.inner.secrets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.secrets.is_empty()
    }
}

/// The byte strings `value` shows up as in text (see `encodings`), for
/// callers that mask rather than scan, such as cred-proxy hiding an echoed
/// token.
pub fn encoded_forms(value: &[u8]) -> Vec<Vec<u8>> {
    encodings(value).into_iter().map(|(_, p)| p).collect()
}

/// The byte strings that reveal `v`: raw, hex, percent-encoded, and base64 /
/// base64url at each of the three alignments it can have inside a longer
/// encoded blob (only the characters fully determined by `v`).
fn encodings(v: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let mut out: Vec<(&'static str, Vec<u8>)> = vec![("raw", v.to_vec())];
    let mut add = |enc: &'static str, pat: Vec<u8>| {
        if pat.len() >= MIN_VARIANT_LEN && !out.iter().any(|(_, p)| *p == pat) {
            out.push((enc, pat));
        }
    };
    let lower = hex::encode(v);
    add("hex", lower.to_ascii_uppercase().into_bytes());
    add("hex", lower.into_bytes());
    let mut all_upper = String::new();
    let mut reserved_upper = String::new();
    for &b in v {
        all_upper.push_str(&format!("%{b:02X}"));
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            reserved_upper.push(b as char);
        } else {
            reserved_upper.push_str(&format!("%{b:02X}"));
        }
    }
    add("percent", all_upper.to_ascii_lowercase().into_bytes());
    add("percent", all_upper.into_bytes());
    add("percent", lowercase_escapes(&reserved_upper).into_bytes());
    add("percent", reserved_upper.into_bytes());
    for k in 0..3usize {
        let mut buf = vec![0u8; k];
        buf.extend_from_slice(v);
        let first = (8 * k).div_ceil(6);
        let last = (8 * (k + v.len())) / 6;
        if last <= first {
            continue;
        }
        for (enc, engine) in [
            ("base64", &STANDARD_NO_PAD),
            ("base64url", &URL_SAFE_NO_PAD),
        ] {
            let e = engine.encode(&buf);
            add(enc, e.as_bytes()[first..last].to_vec());
        }
    }
    out
}

fn lowercase_escapes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        out.push(c);
        if c == '%' {
            for _ in 0..2 {
                if let Some(h) = chars.next() {
                    out.push(h.to_ascii_lowercase());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_variants_found_at_every_alignment() {
        let secret = b"canary-7f3a9c1e55d2";
        let vars = encodings(secret);
        for prefix in ["", "x", "xy", "xyz"] {
            let mut data = prefix.as_bytes().to_vec();
            data.extend_from_slice(secret);
            data.extend_from_slice(b"tail");
            let enc = STANDARD_NO_PAD.encode(&data);
            assert!(
                vars.iter()
                    .any(|(_, p)| enc.as_bytes().windows(p.len()).any(|w| w == p)),
                "prefix {prefix:?}"
            );
        }
    }
}
