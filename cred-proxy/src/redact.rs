//! Hides the real tokens if an upstream echoes them back, raw or in the
//! encodings the scanner knows (hex, percent escapes, base64 cores).
//!
//! Every occurrence is overwritten in place with `*` of the same length, so
//! `Content-Length` stays true and no re-framing is needed. The streaming
//! body keeps back only the bytes that could still be the start of a token
//! split across chunks (the longest suffix that is a token prefix), so a
//! server-sent event ending in `\n\n` is passed on at once.

use std::pin::Pin;
use std::task::{Context, Poll};

use aho_corasick::{AhoCorasick, MatchKind};
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue};
use http_body::{Body, Frame, SizeHint};

/// Byte written over a redacted token.
pub const MASK: u8 = b'*';

/// Finds and masks a fixed set of secrets.
pub struct Redactor {
    patterns: Vec<Vec<u8>>,
    finder: Option<AhoCorasick>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor")
            .field("patterns", &self.patterns.len())
            .finish()
    }
}

impl Redactor {
    /// A redactor for these secrets (empty ones are ignored).
    pub fn new<S: AsRef<[u8]>>(secrets: impl IntoIterator<Item = S>) -> Redactor {
        let patterns: Vec<Vec<u8>> = secrets
            .into_iter()
            .map(|s| s.as_ref().to_vec())
            .filter(|s| !s.is_empty())
            .collect();
        let finder = if patterns.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(&patterns)
                    .expect("literal patterns always build"),
            )
        };
        Redactor { patterns, finder }
    }

    /// Masks every complete occurrence in `buf`; returns how many were found.
    pub fn mask_in_place(&self, buf: &mut [u8]) -> usize {
        let Some(finder) = &self.finder else { return 0 };
        let spans: Vec<_> = finder.find_iter(&*buf).map(|m| m.range()).collect();
        for r in &spans {
            buf[r.clone()].fill(MASK);
        }
        spans.len()
    }

    /// Length of the longest suffix of `buf` that is a proper prefix of some
    /// secret: those bytes must wait for the next chunk.
    pub fn pending_prefix_len(&self, buf: &[u8]) -> usize {
        let mut best = 0;
        for p in &self.patterns {
            let max = (p.len() - 1).min(buf.len());
            for k in (best + 1..=max).rev() {
                if buf[buf.len() - k..] == p[..k] {
                    best = k;
                    break;
                }
            }
        }
        best
    }

    /// Masks secrets in every header value; returns how many values changed.
    pub fn mask_headers(&self, headers: &mut HeaderMap) -> usize {
        if self.finder.is_none() {
            return 0;
        }
        let mut changed = 0;
        for value in headers.values_mut() {
            let mut bytes = value.as_bytes().to_vec();
            if self.mask_in_place(&mut bytes) > 0 {
                let mut v = HeaderValue::from_bytes(&bytes).expect("masking keeps a valid value");
                v.set_sensitive(value.is_sensitive());
                *value = v;
                changed += 1;
            }
        }
        changed
    }

    /// True when there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.finder.is_none()
    }
}

/// A body that masks secrets as it streams, across chunk boundaries.
pub struct RedactingBody<B> {
    inner: B,
    redactor: std::sync::Arc<Redactor>,
    held: BytesMut,
    /// Trailers or end seen; `held` must be flushed before anything else.
    queued: Option<Frame<Bytes>>,
    inner_done: bool,
    found: usize,
}

impl<B> RedactingBody<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, redactor: std::sync::Arc<Redactor>) -> Self {
        RedactingBody {
            inner,
            redactor,
            held: BytesMut::new(),
            queued: None,
            inner_done: false,
            found: 0,
        }
    }

    /// Occurrences masked so far.
    pub fn found(&self) -> usize {
        self.found
    }
}

impl<B> Body for RedactingBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        loop {
            if this.inner_done || this.queued.is_some() {
                // Whatever is held is no complete secret (it would have been
                // masked) and no more data can complete it: release it.
                if !this.held.is_empty() {
                    return Poll::Ready(Some(Ok(Frame::data(this.held.split().freeze()))));
                }
                if let Some(mut frame) = this.queued.take() {
                    if let Some(trailers) = frame.trailers_mut() {
                        this.found += this.redactor.mask_headers(trailers);
                    }
                    return Poll::Ready(Some(Ok(frame)));
                }
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => this.inner_done = true,
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                    Ok(data) => {
                        if this.redactor.is_empty() {
                            return Poll::Ready(Some(Ok(Frame::data(data))));
                        }
                        this.held.extend_from_slice(&data);
                        this.found += this.redactor.mask_in_place(&mut this.held);
                        let keep = this.redactor.pending_prefix_len(&this.held);
                        let ready = this.held.len() - keep;
                        if ready > 0 {
                            let out = this.held.split_to(ready).freeze();
                            return Poll::Ready(Some(Ok(Frame::data(out))));
                        }
                    }
                    Err(other) => this.queued = Some(other),
                },
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner_done && self.held.is_empty() && self.queued.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        // Masking keeps lengths, so the inner hint plus what is held is exact.
        let inner = self.inner.size_hint();
        let held = self.held.len() as u64;
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + held);
        if let Some(u) = inner.upper() {
            hint.set_upper(u + held);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};
    use std::sync::Arc;

    fn collect_chunks(chunks: Vec<&'static [u8]>, r: Arc<Redactor>) -> (Vec<u8>, usize) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async move {
            let stream =
                futures_util::stream::iter(chunks.into_iter().map(|c| {
                    Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(c)))
                }));
            let mut body = RedactingBody::new(StreamBody::new(stream), r);
            let mut out = Vec::new();
            while let Some(f) = body.frame().await {
                out.extend_from_slice(&f.unwrap().into_data().unwrap());
            }
            (out, body.found())
        })
    }

    #[test]
    fn masks_a_token_split_across_every_possible_boundary() {
        let token: &'static [u8] = b"ghp_SECRETtoken123";
        let text: &'static [u8] = b"echo: ghp_SECRETtoken123 and again ghp_SECRETtoken123!";
        let r = Arc::new(Redactor::new([token]));
        for cut in 0..text.len() {
            let (out, found) = collect_chunks(vec![&text[..cut], &text[cut..]], r.clone());
            assert_eq!(out.len(), text.len());
            assert!(!out.windows(token.len()).any(|w| w == token), "cut {cut}");
            assert_eq!(found, 2, "cut {cut}");
        }
        // One byte per chunk.
        let bytes: Vec<&'static [u8]> = text.chunks(1).collect();
        let (out, _) = collect_chunks(bytes, r);
        assert_eq!(
            out,
            b"echo: ****************** and again ******************!".to_vec()
        );
    }

    #[test]
    fn holds_back_only_a_possible_token_prefix() {
        let r = Redactor::new([&b"abcdef"[..]]);
        assert_eq!(r.pending_prefix_len(b"data: x\n\n"), 0);
        assert_eq!(r.pending_prefix_len(b"xxabc"), 3);
        assert_eq!(r.pending_prefix_len(b"xxabd"), 0);
    }

    #[test]
    fn masks_header_values() {
        let r = Redactor::new([&b"tok-12345678"[..]]);
        let mut h = HeaderMap::new();
        h.insert("x-echo", HeaderValue::from_static("Bearer tok-12345678"));
        h.insert("x-other", HeaderValue::from_static("fine"));
        assert_eq!(r.mask_headers(&mut h), 1);
        assert_eq!(h["x-echo"], "Bearer ************");
        assert_eq!(h["x-other"], "fine");
    }
}
