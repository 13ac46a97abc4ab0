//! Undoing a request body's `Content-Encoding` as it streams, so DLP scans what upstream will
//! read: every listed coding in order (gzip, deflate as zlib or raw, br, zstd), at most
//! [`MAX_LAYERS`] of them, and never more than [`MAX_RATIO`] decoded bytes per encoded byte
//! (plus [`RATIO_SLACK`]).
//!
//! Decoding is for scanning only: egress forwards the bytes it received, never these.

use std::io::Write;
use std::sync::{Arc, Mutex};

use http::header::{HeaderMap, CONTENT_ENCODING};

/// Codings stacked on one body beyond this are refused: nothing legitimate needs more.
pub const MAX_LAYERS: usize = 3;
/// Decoded bytes per encoded byte beyond which a body is a decompression bomb.
pub const MAX_RATIO: u64 = 200;
/// Decoded bytes allowed whatever the ratio (small, very repetitive bodies).
pub const RATIO_SLACK: u64 = 1 << 20;
/// Encoded bytes fed to the decoders at once, which bounds what one step can produce.
const STEP: usize = 16 << 10;

/// One coding of a `Content-Encoding` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Gzip,
    /// zlib-wrapped per RFC 9110; raw deflate is accepted too (some clients send it).
    Deflate,
    Brotli,
    Zstd,
}

impl Coding {
    pub fn as_str(self) -> &'static str {
        match self {
            Coding::Gzip => "gzip",
            Coding::Deflate => "deflate",
            Coding::Brotli => "br",
            Coding::Zstd => "zstd",
        }
    }
}

/// Why a body cannot be decoded for scanning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// A coding egress does not decode (named as sent).
    Unknown(String),
    TooManyLayers(usize),
    /// The body decoded past the expansion bound.
    Bomb,
    /// Not valid data for its coding.
    Corrupt(Coding),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::Unknown(c) => write!(f, "content-encoding {c} cannot be scanned"),
            DecodeError::TooManyLayers(n) => write!(
                f,
                "{n} content-encodings on one body (at most {MAX_LAYERS} are decoded)"
            ),
            DecodeError::Bomb => write!(
                f,
                "body expands more than {MAX_RATIO} times when decoded (decompression bomb?)"
            ),
            DecodeError::Corrupt(c) => write!(f, "body is not valid {} data", c.as_str()),
        }
    }
}

/// The codings of every `Content-Encoding` line, in the order they were applied (`identity`
/// dropped).
pub fn codings(headers: &HeaderMap) -> Result<Vec<Coding>, DecodeError> {
    let mut out = Vec::new();
    for v in headers.get_all(CONTENT_ENCODING) {
        let v = String::from_utf8_lossy(v.as_bytes());
        for c in v.split(',') {
            let c = c.trim().to_ascii_lowercase();
            out.push(match c.as_str() {
                "" | "identity" => continue,
                "gzip" | "x-gzip" => Coding::Gzip,
                "deflate" => Coding::Deflate,
                "br" => Coding::Brotli,
                "zstd" => Coding::Zstd,
                _ => return Err(DecodeError::Unknown(c.chars().take(40).collect())),
            });
        }
    }
    if out.len() > MAX_LAYERS {
        return Err(DecodeError::TooManyLayers(out.len()));
    }
    Ok(out)
}

/// A push decoder for a list of codings; the identity when the list is empty.
pub struct Decoder {
    /// The last applied coding first: it is undone first.
    head: Option<Box<dyn Stage>>,
    /// No coding: bytes pass as they are (kept apart from `head`, which `finish` takes).
    identity: bool,
    out: Arc<Mutex<Out>>,
    fed: u64,
}

impl Decoder {
    pub fn new(codings: &[Coding]) -> Decoder {
        let out = Arc::new(Mutex::new(Out::default()));
        let mut next: Option<Box<dyn Stage>> = None;
        for &c in codings {
            let inner: Box<dyn Stage> = match next.take() {
                Some(n) => n,
                None => Box::new(Sink(out.clone())),
            };
            next = Some(Box::new(Layer {
                coding: c,
                state: LayerState::Waiting(inner),
            }));
        }
        Decoder {
            identity: next.is_none(),
            head: next,
            out,
            fed: 0,
        }
    }

    pub fn is_identity(&self) -> bool {
        self.identity
    }

    /// Decodes `raw`: what it yields so far (a decoder may hold some back until more comes).
    pub fn push(&mut self, raw: &[u8]) -> Result<Vec<u8>, DecodeError> {
        if self.identity {
            return Ok(raw.to_vec());
        }
        let Some(head) = self.head.as_mut() else {
            // Pushed after finish: nothing more can come out.
            return Ok(Vec::new());
        };
        let mut produced = Vec::new();
        for step in raw.chunks(STEP) {
            self.fed += step.len() as u64;
            self.out.lock().expect("decoder sink").limit =
                self.fed.saturating_mul(MAX_RATIO) + RATIO_SLACK;
            let r = head.write_all(step);
            produced.append(&mut take(&self.out, r)?);
        }
        Ok(produced)
    }

    /// Ends the stream: what the decoders still held.
    pub fn finish(&mut self) -> Result<Vec<u8>, DecodeError> {
        let Some(head) = self.head.take() else {
            return Ok(Vec::new());
        };
        let r = head.end();
        take(&self.out, r)
    }
}

/// What the sink collected, or why the step failed.
fn take(out: &Mutex<Out>, r: std::io::Result<()>) -> Result<Vec<u8>, DecodeError> {
    let mut out = out.lock().expect("decoder sink");
    if out.bomb {
        return Err(DecodeError::Bomb);
    }
    if let Err(e) = r {
        let coding = e
            .get_ref()
            .and_then(|e| e.downcast_ref::<Failed>())
            .map(|f| f.0)
            .unwrap_or(Coding::Gzip);
        return Err(DecodeError::Corrupt(coding));
    }
    Ok(std::mem::take(&mut out.buf))
}

#[derive(Default)]
struct Out {
    buf: Vec<u8>,
    total: u64,
    limit: u64,
    bomb: bool,
}

/// A writer in the chain that can be ended (flushing what it holds into the next one).
trait Stage: Write + Send {
    fn end(self: Box<Self>) -> std::io::Result<()>;
}

struct Sink(Arc<Mutex<Out>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut o = self.0.lock().expect("decoder sink");
        o.total += buf.len() as u64;
        if o.total > o.limit {
            o.bomb = true;
            return Err(std::io::Error::other("expansion bound"));
        }
        o.buf.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Stage for Sink {
    fn end(self: Box<Self>) -> std::io::Result<()> {
        Ok(())
    }
}

/// An error of `coding`'s layer: one from a layer inside it keeps naming that layer.
fn failed(coding: Coding, e: std::io::Error) -> std::io::Error {
    if e.get_ref().is_some_and(|i| i.is::<Failed>()) {
        e
    } else {
        std::io::Error::other(Failed(coding))
    }
}

/// Which coding failed, carried inside the `io::Error`.
#[derive(Debug)]
struct Failed(Coding);

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "invalid {} data", self.0.as_str())
    }
}

impl std::error::Error for Failed {}

type Next = Box<dyn Stage>;

/// One coding; "deflate" decides between zlib and raw deflate on its first byte.
struct Layer {
    coding: Coding,
    state: LayerState,
}

enum LayerState {
    Waiting(Next),
    Gzip(flate2::write::MultiGzDecoder<Next>),
    Zlib(flate2::write::ZlibDecoder<Next>),
    Deflate(flate2::write::DeflateDecoder<Next>),
    Brotli(Box<brotli::DecompressorWriter<Next>>),
    Zstd(zstd::stream::write::Decoder<'static, Next>),
    Gone,
}

impl Layer {
    fn start(&mut self, first: u8) -> std::io::Result<()> {
        let LayerState::Waiting(next) = std::mem::replace(&mut self.state, LayerState::Gone) else {
            return Ok(());
        };
        self.state = match self.coding {
            Coding::Gzip => LayerState::Gzip(flate2::write::MultiGzDecoder::new(next)),
            // A zlib header's low nibble is 8 (deflate method).
            Coding::Deflate if first & 0x0f == 8 => {
                LayerState::Zlib(flate2::write::ZlibDecoder::new(next))
            }
            Coding::Deflate => LayerState::Deflate(flate2::write::DeflateDecoder::new(next)),
            Coding::Brotli => {
                LayerState::Brotli(Box::new(brotli::DecompressorWriter::new(next, 4096)))
            }
            Coding::Zstd => LayerState::Zstd(
                zstd::stream::write::Decoder::new(next)
                    .map_err(|_| std::io::Error::other(Failed(Coding::Zstd)))?,
            ),
        };
        Ok(())
    }
}

impl Write for Layer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if matches!(self.state, LayerState::Waiting(_)) {
            self.start(buf[0])?;
        }
        let r = match &mut self.state {
            LayerState::Gzip(d) => d.write(buf),
            LayerState::Zlib(d) => d.write(buf),
            LayerState::Deflate(d) => d.write(buf),
            LayerState::Brotli(d) => d.write(buf),
            LayerState::Zstd(d) => d.write(buf),
            LayerState::Waiting(_) | LayerState::Gone => Ok(buf.len()),
        };
        r.map_err(|e| failed(self.coding, e))
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Stage for Layer {
    fn end(self: Box<Self>) -> std::io::Result<()> {
        let coding = self.coding;
        let fail = |e| failed(coding, e);
        let next = match self.state {
            LayerState::Waiting(next) => next,
            LayerState::Gzip(d) => d.finish().map_err(fail)?,
            LayerState::Zlib(d) => d.finish().map_err(fail)?,
            LayerState::Deflate(d) => d.finish().map_err(fail)?,
            LayerState::Brotli(mut d) => {
                d.close().map_err(fail)?;
                d.into_inner()
                    .map_err(|_| fail(std::io::Error::other("brotli")))?
            }
            LayerState::Zstd(mut d) => {
                d.flush().map_err(fail)?;
                d.into_inner()
            }
            LayerState::Gone => return Ok(()),
        };
        next.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(data).unwrap();
        gz.finish().unwrap()
    }

    fn brotli(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        {
            let mut w = brotli::CompressorWriter::new(&mut out, 4096, 5, 22);
            w.write_all(data).unwrap();
        }
        out
    }

    fn decode_all(codings: &[Coding], data: &[u8], step: usize) -> Result<Vec<u8>, DecodeError> {
        let mut d = Decoder::new(codings);
        let mut out = Vec::new();
        for c in data.chunks(step) {
            out.extend(d.push(c)?);
        }
        out.extend(d.finish()?);
        Ok(out)
    }

    fn headers(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(CONTENT_ENCODING, l.parse().unwrap());
        }
        h
    }

    #[test]
    fn every_line_and_every_coding_in_order() {
        let h = headers(&["gzip", "identity, br"]);
        assert_eq!(codings(&h).unwrap(), vec![Coding::Gzip, Coding::Brotli]);
        let text = b"a body applied gzip then br".repeat(50);
        let both = brotli(&gzip(&text));
        for step in [1, 7, 4096] {
            assert_eq!(
                decode_all(&codings(&h).unwrap(), &both, step).unwrap(),
                text
            );
        }
        assert!(matches!(
            codings(&headers(&["gzip, compress"])),
            Err(DecodeError::Unknown(c)) if c == "compress"
        ));
        assert_eq!(
            codings(&headers(&["gzip, gzip", "gzip, gzip"])),
            Err(DecodeError::TooManyLayers(4))
        );
    }

    #[test]
    fn zlib_raw_deflate_and_zstd() {
        let text = b"deflated text ".repeat(100);
        let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        z.write_all(&text).unwrap();
        assert_eq!(
            decode_all(&[Coding::Deflate], &z.finish().unwrap(), 5).unwrap(),
            text
        );
        let mut r = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
        r.write_all(&text).unwrap();
        assert_eq!(
            decode_all(&[Coding::Deflate], &r.finish().unwrap(), 5).unwrap(),
            text
        );
        let zs = zstd::encode_all(&text[..], 3).unwrap();
        assert_eq!(decode_all(&[Coding::Zstd], &zs, 3).unwrap(), text);
    }

    #[test]
    fn bombs_and_garbage_are_refused() {
        let bomb = gzip(&vec![b'a'; 64 << 20]);
        assert_eq!(
            decode_all(&[Coding::Gzip], &bomb, 4096),
            Err(DecodeError::Bomb)
        );
        assert_eq!(
            decode_all(&[Coding::Gzip], b"not gzip at all", 4096),
            Err(DecodeError::Corrupt(Coding::Gzip))
        );
        let mut cut = gzip(b"a truncated body that never ends properly");
        cut.truncate(cut.len() - 6);
        assert!(decode_all(&[Coding::Gzip], &cut, 4096).is_err());
    }
}
