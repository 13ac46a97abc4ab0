//! Small I/O adapters: a stream with bytes pushed back in front (after sniffing the first byte
//! of a CONNECT tunnel), and a body that counts bytes and writes the audit line when done.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Buf, Bytes};
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::audit::{AuditLog, AuditRecord};
use crate::upstream::{Body, BoxError};

/// `inner` with `prefix` read first.
pub struct Prefixed<T> {
    prefix: Bytes,
    inner: T,
}

impl<T> Prefixed<T> {
    pub fn new(prefix: Bytes, inner: T) -> Prefixed<T> {
        Prefixed { prefix, inner }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// Writes the audit record when dropped (the response body finished or was abandoned).
pub struct AuditGuard {
    pub audit: Arc<AuditLog>,
    pub record: AuditRecord,
    pub start: Instant,
    pub up: Arc<AtomicU64>,
    pub down: Arc<AtomicU64>,
}

impl Drop for AuditGuard {
    fn drop(&mut self) {
        self.record.bytes_up = self.up.load(Ordering::Relaxed);
        self.record.bytes_down = self.down.load(Ordering::Relaxed);
        self.record.duration_ms = self.start.elapsed().as_millis() as u64;
        self.audit.write(&self.record);
    }
}

/// A body that counts its data bytes (and carries the audit guard of its exchange).
pub struct Counted {
    inner: Body,
    count: Arc<AtomicU64>,
    _guard: Option<AuditGuard>,
}

impl Counted {
    pub fn new(inner: Body, count: Arc<AtomicU64>, guard: Option<AuditGuard>) -> Counted {
        Counted {
            inner,
            count,
            _guard: guard,
        }
    }
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(f))) = &r {
            if let Some(d) = f.data_ref() {
                self.count.fetch_add(d.len() as u64, Ordering::Relaxed);
            }
        }
        r
    }
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A request body on a route without DLP that must still never carry another
/// route's placeholder. Bytes are passed on as they come except the last
/// `longest placeholder - 1`, held until the next chunk shows they start no
/// placeholder, so a complete one never leaves even when split across
/// chunks. On a match the body fails (the upstream request is aborted) and
/// `hit` names the route whose placeholder it was.
pub struct PlaceholderGuard {
    inner: Body,
    set: crate::dlp::ExactSet,
    keep: usize,
    held: bytes::BytesMut,
    trailers: Option<Frame<Bytes>>,
    /// The inner body has ended (it is not polled again).
    ended: bool,
    hit: Arc<std::sync::OnceLock<String>>,
}

impl PlaceholderGuard {
    pub fn new(
        inner: Body,
        set: crate::dlp::ExactSet,
        hit: Arc<std::sync::OnceLock<String>>,
    ) -> PlaceholderGuard {
        PlaceholderGuard {
            inner,
            keep: set.longest().saturating_sub(1),
            set,
            held: bytes::BytesMut::new(),
            trailers: None,
            ended: false,
            hit,
        }
    }
}

impl HttpBody for PlaceholderGuard {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            if this.ended || this.trailers.is_some() {
                // No more data is coming: what is held goes first, then the
                // trailers (if any), then the end.
                if !this.held.is_empty() {
                    return Poll::Ready(Some(Ok(Frame::data(this.held.split().freeze()))));
                }
                if let Some(t) = this.trailers.take() {
                    return Poll::Ready(Some(Ok(t)));
                }
                return Poll::Ready(None);
            }
            match std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        this.held.extend_from_slice(&data);
                        if let Some(route) = this.set.find_in(&this.held) {
                            let _ = this.hit.set(route.to_string());
                            this.held.clear();
                            return Poll::Ready(Some(Err(format!(
                                "the request body holds the placeholder of route {route}"
                            )
                            .into())));
                        }
                        let ready = this.held.len().saturating_sub(this.keep);
                        if ready > 0 {
                            return Poll::Ready(Some(Ok(Frame::data(
                                this.held.split_to(ready).freeze(),
                            ))));
                        }
                    }
                    Err(trailers) => this.trailers = Some(trailers),
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => this.ended = true,
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_empty()
            && self.trailers.is_none()
            && (self.ended || self.inner.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        // Holding bytes back delays them; it never adds or removes any.
        let mut h = self.inner.size_hint();
        let held = self.held.len() as u64;
        h.set_lower(h.lower() + held);
        if let Some(u) = h.upper() {
            h.set_upper(u + held);
        }
        h
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn guard(frames: Vec<Frame<Bytes>>) -> (PlaceholderGuard, Arc<std::sync::OnceLock<String>>) {
        let inner: Body = http_body_util::StreamBody::new(futures_util::stream::iter(
            frames.into_iter().map(Ok::<_, BoxError>),
        ))
        .boxed_unsync();
        let set = crate::dlp::ExactSet::new([(b"PLACEHOLDER-1".to_vec(), "gh".to_string())]);
        let hit = Arc::default();
        (PlaceholderGuard::new(inner, set, Arc::clone(&hit)), hit)
    }

    #[tokio::test]
    async fn data_and_trailers_pass_unchanged_and_in_order() {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("x-checksum", "abc".parse().unwrap());
        let (g, hit) = guard(vec![
            Frame::data(Bytes::from_static(b"hello PLACE")),
            Frame::data(Bytes::from_static(b"HOLDER-2 world")),
            Frame::trailers(trailers.clone()),
        ]);
        let out = g.collect().await.unwrap();
        assert_eq!(out.trailers(), Some(&trailers));
        assert_eq!(&out.to_bytes()[..], b"hello PLACEHOLDER-2 world");
        assert!(hit.get().is_none());
    }

    #[tokio::test]
    async fn a_split_placeholder_fails_the_body_before_it_is_passed_on() {
        let (mut g, hit) = guard(vec![
            Frame::data(Bytes::from_static(b"0123456789abcdef PLACEHO")),
            Frame::data(Bytes::from_static(b"LDER-1 tail")),
        ]);
        let mut passed = Vec::new();
        let err = loop {
            match g.frame().await {
                Some(Ok(f)) => passed.extend_from_slice(f.data_ref().unwrap()),
                Some(Err(e)) => break e,
                None => panic!("the body ended without the refusal"),
            }
        };
        assert!(err.to_string().contains("route gh"), "{err}");
        assert_eq!(hit.get().map(String::as_str), Some("gh"));
        // Only bytes that could not start the placeholder went on.
        assert_eq!(passed, b"0123456789ab");
    }
}
