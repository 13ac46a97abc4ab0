//! Finding encoded blobs (base64, base64url, hex, percent-encoding) in bytes
//! and decoding them, so the engine can scan what they hide.

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;

/// Runs shorter than this are not worth decoding (12 bytes of payload).
const MIN_RUN: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Encoding {
    Base64,
    Base64Url,
    Hex,
    Percent,
}

impl Encoding {
    pub fn name(self) -> &'static str {
        match self {
            Encoding::Base64 => "base64",
            Encoding::Base64Url => "base64url",
            Encoding::Hex => "hex",
            Encoding::Percent => "percent",
        }
    }
}

pub(crate) struct Blob {
    pub start: usize,
    pub end: usize,
    pub encoding: Encoding,
    pub decoded: Vec<u8>,
}

const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_decode_padding_mode(DecodePaddingMode::Indifferent)
    .with_decode_allow_trailing_bits(true);
const STD: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
const URL: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

fn is_b64_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_')
}

/// Mostly printable text: only such decodings are scanned further (random
/// tokens decode to binary noise that no rule could match anyway).
fn plausible(d: &[u8]) -> bool {
    if d.len() < 4 {
        return false;
    }
    let text = |c: char| !c.is_control() || matches!(c, '\t' | '\n' | '\r');
    let (good, total) = match std::str::from_utf8(d) {
        Ok(s) => (s.chars().filter(|&c| text(c)).count(), s.chars().count()),
        Err(_) => (
            d.iter().filter(|&&b| b < 0x80 && text(b as char)).count(),
            d.len(),
        ),
    };
    good * 100 >= total * 90
}

fn decode_b64(s: &[u8], engine: &GeneralPurpose) -> Option<Vec<u8>> {
    let mut s = s;
    while let [rest @ .., b'='] = s {
        s = rest;
    }
    if s.len() % 4 == 1 {
        s = &s[..s.len() - 1];
    }
    engine.decode(s).ok()
}

/// Every decodable blob of `data`, in order of position.
pub(crate) fn blobs(data: &[u8]) -> Vec<Blob> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < data.len() {
        if !is_b64_char(data[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < data.len() && is_b64_char(data[i]) {
            i += 1;
        }
        let mut end = i;
        while end < data.len() && end - i < 2 && data[end] == b'=' {
            end += 1;
        }
        if i - start >= MIN_RUN {
            run(data, start, i, end, &mut out);
        }
        i = end.max(i);
    }
    percent(data, &mut out);
    out.sort_by_key(|b| b.start);
    out
}

fn run(data: &[u8], start: usize, body_end: usize, end: usize, out: &mut Vec<Blob>) {
    let body = &data[start..body_end];
    if body.len().is_multiple_of(2) && body.iter().all(u8::is_ascii_hexdigit) {
        if let Ok(d) = hex::decode(body) {
            if plausible(&d) {
                out.push(Blob {
                    start,
                    end: body_end,
                    encoding: Encoding::Hex,
                    decoded: d,
                });
            }
        }
        return;
    }
    let has_std = body.iter().any(|&b| b == b'+' || b == b'/');
    let has_url = body.iter().any(|&b| b == b'-' || b == b'_');
    let mut try_decode = |s: usize, e: usize, enc: Encoding| {
        let engine = if enc == Encoding::Base64 { &STD } else { &URL };
        if let Some(d) = decode_b64(&data[s..e], engine) {
            if plausible(&d) {
                out.push(Blob {
                    start: s,
                    end: e,
                    encoding: enc,
                    decoded: d,
                });
                return true;
            }
        }
        false
    };
    let whole = if has_std && !has_url {
        try_decode(start, end, Encoding::Base64)
    } else if has_url && !has_std {
        try_decode(start, end, Encoding::Base64Url)
    } else if !has_std && !has_url {
        try_decode(start, end, Encoding::Base64)
    } else {
        false
    };
    // URL paths and mixed runs: the segments between separators may be the
    // encoded parts.
    if !whole && (has_std || has_url) {
        let mut s = start;
        for k in start..=body_end {
            let sep = k == body_end || data[k] == b'/';
            if sep {
                if k - s >= MIN_RUN {
                    let seg = &data[s..k];
                    let enc = if seg.iter().any(|&b| b == b'-' || b == b'_') {
                        Encoding::Base64Url
                    } else {
                        Encoding::Base64
                    };
                    let e = if k == body_end { end } else { k };
                    try_decode(s, e, enc);
                }
                s = k + 1;
            }
        }
    }
}

fn percent(data: &[u8], out: &mut Vec<Blob>) {
    let is_hex = |b: u8| b.is_ascii_hexdigit();
    let mut i = 0;
    while i + 2 < data.len() {
        if !(data[i] == b'%' && is_hex(data[i + 1]) && is_hex(data[i + 2])) {
            i += 1;
            continue;
        }
        let stop = |b: u8| {
            b.is_ascii_whitespace()
                || matches!(b, b'"' | b'\'' | b'<' | b'>' | b'&' | b'=' | b'?' | b';')
        };
        let mut start = i;
        while start > 0 && !stop(data[start - 1]) {
            start -= 1;
        }
        let mut end = i;
        while end < data.len() && !stop(data[end]) {
            end += 1;
        }
        let mut d = Vec::with_capacity(end - start);
        let mut k = start;
        while k < end {
            if data[k] == b'%'
                && k + 2 < end + 1
                && k + 2 < data.len()
                && is_hex(data[k + 1])
                && is_hex(data[k + 2])
            {
                let hi = (data[k + 1] as char).to_digit(16).unwrap_or(0) as u8;
                let lo = (data[k + 2] as char).to_digit(16).unwrap_or(0) as u8;
                d.push(hi << 4 | lo);
                k += 3;
            } else {
                d.push(data[k]);
                k += 1;
            }
        }
        out.push(Blob {
            start,
            end,
            encoding: Encoding::Percent,
            decoded: d,
        });
        i = end.max(i + 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(data: &[u8]) -> Vec<(Encoding, String)> {
        blobs(data)
            .into_iter()
            .map(|b| (b.encoding, String::from_utf8_lossy(&b.decoded).into_owned()))
            .collect()
    }

    #[test]
    fn finds_each_encoding() {
        let text = "token secret value here!";
        let b64 = base64::engine::general_purpose::STANDARD.encode(text);
        let hexed = hex::encode(text);
        let data = format!("a={b64} b={hexed} c=token%20secret%20value");
        let got = decoded(data.as_bytes());
        assert!(
            got.contains(&(Encoding::Base64, text.to_string())),
            "{got:?}"
        );
        assert!(got.contains(&(Encoding::Hex, text.to_string())), "{got:?}");
        assert!(
            got.contains(&(Encoding::Percent, "token secret value".to_string())),
            "{got:?}"
        );
    }

    #[test]
    fn url_path_segment() {
        let seg =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("exfiltrated: some text??>");
        let data = format!("GET /upload/v1/{seg}/x HTTP/1.1");
        let got = decoded(data.as_bytes());
        assert!(
            got.iter().any(|(_, d)| d == "exfiltrated: some text??>"),
            "{got:?}"
        );
    }

    #[test]
    fn random_tokens_are_not_decoded() {
        assert!(decoded(b"ghp_R4nd0mT0k3nV4lu3sAr3N0tT3xt1234567").is_empty());
    }
}
