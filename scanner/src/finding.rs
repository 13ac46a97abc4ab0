use serde::Serialize;
use sha2::{Digest, Sha256};

/// One secret found in scanned bytes. Never holds the secret itself.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct Finding {
    pub rule_id: String,
    pub description: String,
    /// Byte range in the original input. For a secret found inside an encoded
    /// blob, the range of that blob.
    pub start: usize,
    pub end: usize,
    /// 1-based.
    pub line: usize,
    /// 1-based, in bytes.
    pub column: usize,
    /// A few leading characters then "…"; never the full secret.
    pub redacted: String,
    /// Stable: "<rule_id>:<first 16 hex of sha256(secret)>".
    pub fingerprint: String,
}

/// A few leading characters of `secret` (at most a third of it), then "…".
pub fn redact(secret: &[u8]) -> String {
    let keep = (secret.len() / 3).min(4);
    let mut s = String::new();
    for &b in &secret[..keep] {
        if b.is_ascii_graphic() {
            s.push(b as char);
        } else {
            s.push('?');
        }
    }
    s.push('…');
    s
}

/// `text` (a path or ref name that was scanned) with the bytes of finding
/// `f` replaced by its redacted form, so the name can be shown.
pub fn redact_span(text: &str, f: &Finding) -> String {
    let bytes = text.as_bytes();
    if f.end <= f.start || f.end > bytes.len() {
        return text.to_string();
    }
    format!(
        "{}{}{}",
        String::from_utf8_lossy(&bytes[..f.start]),
        if f.redacted.is_empty() {
            "…"
        } else {
            &f.redacted
        },
        String::from_utf8_lossy(&bytes[f.end..])
    )
}

pub fn fingerprint(rule_id: &str, secret: &[u8]) -> String {
    let digest = Sha256::digest(secret);
    format!("{rule_id}:{}", &hex::encode(digest)[..16])
}

/// Shannon entropy in bits per byte, as gitleaks computes it for ASCII.
pub fn shannon_entropy(data: &[u8]) -> f64 {
    if data.is_empty() {
        return 0.0;
    }
    let mut counts = [0u32; 256];
    for &b in data {
        counts[b as usize] += 1;
    }
    let len = data.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / len;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redaction_never_shows_more_than_a_third() {
        assert_eq!(redact(b"ghp_abcdefghijklmnop"), "ghp_…");
        assert_eq!(redact(b"abcdef"), "ab…");
        assert_eq!(redact(b"ab"), "…");
    }

    #[test]
    fn fingerprint_is_stable() {
        assert_eq!(fingerprint("x", b"abc"), "x:ba7816bf8f01cfea");
    }

    #[test]
    fn entropy() {
        assert_eq!(shannon_entropy(b"aaaa"), 0.0);
        assert!((shannon_entropy(b"abcd") - 2.0).abs() < 1e-9);
    }
}
