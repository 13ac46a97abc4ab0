//! A request body scanned window by window, with bounded memory whatever its size.
//!
//! Bytes are decoded ([`crate::decode`]) and buffered; once `window + overlap` decoded bytes are
//! held, the buffer is scanned and all but the last `overlap` bytes are cleared to go. The bytes
//! kept back are scanned again with the next window, so a secret whose longest encoded form fits
//! in the overlap is seen whole before its first byte leaves (a finding that runs past the
//! clearing point holds everything up to its end). The overlap is [`OVERLAP`]: 256 KiB, the
//! longest form of a 4 KiB PEM key written entirely as JSON `\u` escapes (24 KiB), or of a
//! 1 KiB token as twelve-byte HTML references, with room to spare.
//!
//! What is cleared are the bytes as received: with a `Content-Encoding`, the encoded chunks
//! whose decoded bytes are all cleared. Redaction edits those bytes, so it works on bodies sent
//! without a coding only; a finding in an encoded body on a `redact` route refuses it.
//!
//! This is synchronous work; [`crate::scanned`] runs it on the scan pool.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

use crate::config::{OnMatch, RouteDlp};
use crate::decode::{Coding, DecodeError, Decoder};
use crate::dlp::{self, DlpEngine, ExactSet, Hit};

/// Decoded bytes kept back from each window and scanned again with the next.
pub const OVERLAP: usize = 256 << 10;
/// The longest secret no window border can hide, whatever text escape spells it: a 4 KiB PEM
/// key, every byte in its longest escaped form.
const LONGEST_SECRET: usize = 4 << 10;
const _: () = assert!(OVERLAP >= LONGEST_SECRET * scanner::MAX_EXPANSION);
/// Encoded bytes held back beyond the decoded window (bytes that have not decoded yet).
const MAX_HELD_ENCODED: usize = 8 << 20;

/// What a route's DLP needs to scan one body.
#[derive(Clone)]
pub struct BodyPolicy {
    pub engine: Arc<DlpEngine>,
    pub dlp: RouteDlp,
    /// Other routes' placeholders: never sent on this one.
    pub others: ExactSet,
    /// The request's `Content-Type` marks it as an archive, image, …
    pub opaque_type: bool,
    /// Decoded bytes cleared per window (`max_body_bytes`; at least [`OVERLAP`], so that no
    /// byte is scanned more than twice).
    pub window: usize,
}

/// Output of a step, in order.
#[derive(Debug)]
pub enum Piece {
    /// Bytes cleared to go, as they will be sent.
    Bytes(Bytes),
    /// The operator must allow what follows (route `supervise`): the rules found.
    Hold(Vec<String>),
}

/// Why the body may not go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// A finding on a `block` route (rule id).
    Found(String),
    /// Another route's placeholder (that route's id).
    Placeholder(String),
    /// Not text, or not decodable, on a route without `opaque_bodies`.
    Opaque(String),
    /// A finding (rule id) on a `redact` route in a body sent with a content coding.
    CannotRedact(Coding, String),
}

pub struct BodyScan {
    policy: BodyPolicy,
    decoder: Decoder,
    /// The last coding applied, when there is one (for messages).
    coding: Option<Coding>,
    /// Decoded bytes not yet cleared; `plain[0]` is decoded offset `cleared`.
    plain: Vec<u8>,
    cleared: u64,
    /// Encoded chunks not yet cleared, each with the decoded offset its bytes reach.
    encoded: VecDeque<(Bytes, u64)>,
    encoded_held: usize,
    first: bool,
    /// An opaque body on a route with `opaque_bodies`: the rest goes unscanned.
    passthrough: bool,
    /// Something was redacted (the body's length changed).
    pub redacted: bool,
}

impl BodyScan {
    pub fn new(mut policy: BodyPolicy, codings: &[Coding]) -> BodyScan {
        policy.window = policy.window.max(OVERLAP);
        BodyScan {
            decoder: Decoder::new(codings),
            coding: codings.last().copied(),
            policy,
            plain: Vec::new(),
            cleared: 0,
            encoded: VecDeque::new(),
            encoded_held: 0,
            first: true,
            passthrough: false,
            redacted: false,
        }
    }

    /// A body that goes unscanned from the start (undecodable, on an `opaque_bodies` route).
    pub fn passthrough(policy: BodyPolicy) -> BodyScan {
        let mut s = BodyScan::new(policy, &[]);
        s.passthrough = true;
        s
    }

    pub fn policy(&self) -> &BodyPolicy {
        &self.policy
    }

    /// The body is sent without a content coding (what is scanned is what is sent).
    pub fn is_identity(&self) -> bool {
        self.decoder.is_identity()
    }

    /// Decoded bytes waiting for their window.
    pub fn held(&self) -> usize {
        self.plain.len()
    }

    /// Takes the next bytes of the body; scans every window that is full.
    pub fn push(&mut self, raw: Bytes) -> Result<Vec<Piece>, Stop> {
        if self.passthrough {
            return Ok(vec![Piece::Bytes(raw)]);
        }
        let mut out = Vec::new();
        match self.decoder.push(&raw) {
            Ok(d) => self.take_decoded(raw, d),
            Err(e) => return self.undecodable(e, raw, &mut out).map(|()| out),
        }
        if self.encoded_held > MAX_HELD_ENCODED {
            return self
                .undecodable(DecodeError::Bomb, Bytes::new(), &mut out)
                .map(|()| out);
        }
        while self.plain.len() >= self.policy.window + OVERLAP && !self.passthrough {
            self.window(false, &mut out)?;
        }
        Ok(out)
    }

    /// The body ended: scans what is left and clears everything.
    pub fn finish(&mut self) -> Result<Vec<Piece>, Stop> {
        let mut out = Vec::new();
        if self.passthrough {
            return Ok(out);
        }
        match self.decoder.finish() {
            Ok(d) => self.take_decoded(Bytes::new(), d),
            Err(e) => return self.undecodable(e, Bytes::new(), &mut out).map(|()| out),
        }
        while !self.passthrough && (!self.plain.is_empty() || !self.encoded.is_empty()) {
            self.window(true, &mut out)?;
        }
        Ok(out)
    }

    fn take_decoded(&mut self, raw: Bytes, decoded: Vec<u8>) {
        self.plain.extend_from_slice(&decoded);
        if !self.decoder.is_identity() && !raw.is_empty() {
            self.encoded_held += raw.len();
            let reach = self.cleared + self.plain.len() as u64;
            self.encoded.push_back((raw, reach));
        }
    }

    /// A body egress cannot see into: refused, or (opted in) everything held goes unscanned.
    fn undecodable(
        &mut self,
        why: DecodeError,
        raw: Bytes,
        out: &mut Vec<Piece>,
    ) -> Result<(), Stop> {
        self.opaque(why.to_string(), out)?;
        if !raw.is_empty() {
            out.push(Piece::Bytes(raw));
        }
        Ok(())
    }

    fn opaque(&mut self, why: String, out: &mut Vec<Piece>) -> Result<(), Stop> {
        if !self.policy.dlp.opaque_bodies {
            return Err(Stop::Opaque(why));
        }
        self.passthrough = true;
        if self.decoder.is_identity() {
            if !self.plain.is_empty() {
                out.push(Piece::Bytes(Bytes::from(std::mem::take(&mut self.plain))));
            }
        } else {
            self.plain.clear();
            out.extend(self.encoded.drain(..).map(|(b, _)| Piece::Bytes(b)));
        }
        self.encoded_held = 0;
        Ok(())
    }

    /// Scans the held bytes and clears all but the overlap (all of them when `last`).
    fn window(&mut self, last: bool, out: &mut Vec<Piece>) -> Result<(), Stop> {
        let n = self.plain.len();
        if self.first && !self.plain.is_empty() {
            self.first = false;
            if self.policy.opaque_type || dlp::has_archive_magic(&self.plain) {
                return self.opaque(dlp::BINARY.to_string(), out);
            }
        }
        if !self.plain.is_empty() && !scanner::is_text(&self.plain) {
            return self.opaque(dlp::BINARY.to_string(), out);
        }
        if let Some(other) = self.policy.others.find_in(&self.plain) {
            return Err(Stop::Placeholder(other.to_string()));
        }
        let clear = if last { n } else { n - OVERLAP };
        let hits: Vec<Hit> = self
            .policy
            .engine
            .scan(&self.policy.dlp, &self.plain)
            .into_iter()
            .filter(|h| h.start < clear)
            .collect();
        // A finding that runs past the clearing point is decided with this window.
        let cut = hits.iter().map(|h| h.end).fold(clear, usize::max).min(n);
        let mut bytes = None;
        if let Some(first) = hits.first() {
            match self.policy.dlp.on_match {
                OnMatch::Block => return Err(Stop::Found(first.rule_id.clone())),
                OnMatch::Redact => match self.coding {
                    Some(c) => return Err(Stop::CannotRedact(c, first.rule_id.clone())),
                    None => {
                        bytes = Some(dlp::redact(&self.plain[..cut], &hits));
                        self.redacted = true;
                    }
                },
                OnMatch::Supervise => {
                    let mut rules: Vec<String> = hits.iter().map(|h| h.rule_id.clone()).collect();
                    rules.sort();
                    rules.dedup();
                    out.push(Piece::Hold(rules));
                }
            }
        }
        self.cleared += cut as u64;
        if self.decoder.is_identity() {
            let bytes = bytes.unwrap_or_else(|| self.plain[..cut].to_vec());
            self.plain.drain(..cut);
            if !bytes.is_empty() {
                out.push(Piece::Bytes(Bytes::from(bytes)));
            }
        } else {
            self.plain.drain(..cut);
            let all = last && self.plain.is_empty();
            while let Some((_, reach)) = self.encoded.front() {
                if !all && *reach > self.cleared {
                    break;
                }
                let (b, _) = self.encoded.pop_front().expect("front");
                self.encoded_held -= b.len();
                out.push(Piece::Bytes(b));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Dlp, RuleSource};

    const KNOWN: &str = "KNOWN-SECRET-VALUE-7f3a9c21";

    fn policy(on_match: OnMatch, window: usize) -> BodyPolicy {
        let engine = DlpEngine::load(&Dlp {
            rules: RuleSource::Builtin,
            max_body_bytes: window,
            known_secrets_file: None,
            canary: Some(KNOWN.into()),
        })
        .unwrap();
        BodyPolicy {
            engine: Arc::new(engine),
            dlp: RouteDlp {
                token_patterns: true,
                known_secrets: true,
                on_match,
                opaque_bodies: false,
            },
            others: ExactSet::default(),
            opaque_type: false,
            window,
        }
    }

    /// Feeds `body` in `step`-byte chunks: the bytes cleared, or why it stopped.
    fn run(p: BodyPolicy, codings: &[Coding], body: &[u8], step: usize) -> Result<Vec<u8>, Stop> {
        let mut s = BodyScan::new(p, codings);
        let mut sent = Vec::new();
        let mut take = |pieces: Vec<Piece>| {
            for p in pieces {
                if let Piece::Bytes(b) = p {
                    sent.extend_from_slice(&b);
                }
            }
        };
        for c in body.chunks(step) {
            take(s.push(Bytes::copy_from_slice(c))?);
        }
        take(s.finish()?);
        Ok(sent)
    }

    /// A body of `len` filler bytes with the secret written `form`-encoded at `at`.
    fn body_with(len: usize, at: usize, form: &str) -> Vec<u8> {
        let mut b = b"x".repeat(len);
        b.splice(at..at + form.len(), form.bytes());
        b
    }

    fn json_escaped(s: &str) -> String {
        s.chars().map(|c| format!("\\u{:04x}", c as u32)).collect()
    }

    fn html_escaped(s: &str) -> String {
        s.chars().map(|c| format!("&#x{:08x};", c as u32)).collect()
    }

    #[test]
    fn a_secret_across_every_window_border_is_found_in_each_form() {
        let window = OVERLAP;
        use base64::Engine;
        let forms = [
            ("raw", KNOWN.to_string()),
            (
                "base64",
                base64::engine::general_purpose::STANDARD.encode(KNOWN),
            ),
            ("hex", hex::encode(KNOWN)),
            (
                "percent",
                KNOWN.bytes().map(|b| format!("%{b:02X}")).collect(),
            ),
            ("json", json_escaped(KNOWN)),
            ("html", html_escaped(KNOWN)),
        ];
        for (name, form) in &forms {
            // Each window clears `window` bytes; put the secret across the first border.
            let border = window;
            for shift in [1, form.len() / 2, form.len() - 1] {
                let body = body_with(3 * window + 2 * OVERLAP, border - shift, form);
                let r = run(policy(OnMatch::Block, window), &[], &body, 100_000);
                assert_eq!(
                    r,
                    Err(Stop::Found("known-secret".into())),
                    "{name} form across the border (shift {shift})"
                );
            }
        }
        // UTF-16: the whole body is UTF-16, the secret across a border.
        let text: String = "y".repeat(window * 3) + KNOWN + &"y".repeat(OVERLAP * 2);
        let mut body: Vec<u8> = text.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
        body.truncate(body.len() - 1);
        let r = run(policy(OnMatch::Block, window), &[], &body, 99_999);
        assert_eq!(r, Err(Stop::Found("known-secret".into())), "UTF-16");
    }

    #[test]
    fn a_clean_stream_goes_out_unchanged_with_bounded_memory() {
        let body: Vec<u8> = (0..(3 << 20)).map(|i| b"abcdefgh\n"[i % 9]).collect();
        let mut s = BodyScan::new(policy(OnMatch::Block, OVERLAP), &[]);
        let mut sent = Vec::new();
        for c in body.chunks(100_000) {
            for p in s.push(Bytes::copy_from_slice(c)).unwrap() {
                if let Piece::Bytes(b) = p {
                    sent.extend_from_slice(&b);
                }
            }
            assert!(s.held() < 2 * OVERLAP + 100_000);
        }
        assert!(
            sent.len() >= body.len() - 2 * OVERLAP - 100_000,
            "the body streams out before its end: {} of {} bytes sent",
            sent.len(),
            body.len()
        );
        for p in s.finish().unwrap() {
            if let Piece::Bytes(b) = p {
                sent.extend_from_slice(&b);
            }
        }
        assert_eq!(sent, body);
    }

    #[test]
    fn redaction_edits_the_bytes_as_sent() {
        let body = format!(
            "{{\"prompt\":\"{}\",\"pad\":\"{}\"}}",
            json_escaped(KNOWN),
            "p".repeat(10_000)
        );
        let sent = run(policy(OnMatch::Redact, 4096), &[], body.as_bytes(), 333).unwrap();
        let sent = String::from_utf8(sent).unwrap();
        assert!(
            sent.starts_with("{\"prompt\":\"[REDACTED:known-secret]\",\"pad\":\"ppp"),
            "{sent:.80}"
        );
        assert!(sent.ends_with("ppp\"}"));
    }

    #[test]
    fn encoded_bodies_are_scanned_decoded_and_sent_as_received() {
        use std::io::Write;
        let text = format!("{}{KNOWN}{}", "a".repeat(500_000), "b".repeat(500_000));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(text.as_bytes()).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(
            run(policy(OnMatch::Block, OVERLAP), &[Coding::Gzip], &gz, 7000),
            Err(Stop::Found("known-secret".into()))
        );
        assert_eq!(
            run(policy(OnMatch::Redact, OVERLAP), &[Coding::Gzip], &gz, 7000),
            Err(Stop::CannotRedact(Coding::Gzip, "known-secret".into()))
        );
        let clean = "c".repeat(2 << 20);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(clean.as_bytes()).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(
            run(policy(OnMatch::Block, OVERLAP), &[Coding::Gzip], &gz, 7000).unwrap(),
            gz
        );
    }

    #[test]
    fn compressed_bytes_without_a_coding_are_opaque() {
        use std::io::Write;
        let text = "some text that compresses ".repeat(200);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(text.as_bytes()).unwrap();
        let mut raw =
            flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        raw.write_all(text.as_bytes()).unwrap();
        let mut br = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut br, 4096, 5, 22);
            w.write_all(text.as_bytes()).unwrap();
        }
        for (name, body) in [
            ("zlib", z.finish().unwrap()),
            ("raw deflate", raw.finish().unwrap()),
            ("brotli", br),
        ] {
            assert!(
                matches!(
                    run(policy(OnMatch::Block, 4096), &[], &body, 100),
                    Err(Stop::Opaque(_))
                ),
                "{name} sent without a content-encoding"
            );
        }
    }
}
