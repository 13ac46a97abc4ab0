//! Text escapes a recipient undoes before it stores or shows what it got:
//! JSON string escapes (`\u0067`, `\/`), HTML character references
//! (`&#x67;`, `&#103;`, `&lowbar;`) and UTF-16 text. Each is a [`View`]: the
//! decoded text plus a map back to the original bytes, so a finding in the
//! view names the exact original range (and a redaction edits only that).
//!
//! A view exists only where the input has something to undo, so plain text
//! costs one `memchr`-like pass.

/// What a view undid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TextEncoding {
    JsonEscape,
    HtmlReference,
    Utf16,
}

impl TextEncoding {
    pub fn name(self) -> &'static str {
        match self {
            TextEncoding::JsonEscape => "JSON-escaped",
            TextEncoding::HtmlReference => "HTML-character-reference",
            TextEncoding::Utf16 => "UTF-16",
        }
    }
}

/// Decoded text and where each of its bytes came from.
pub(crate) struct View {
    pub encoding: TextEncoding,
    pub text: Vec<u8>,
    map: Map,
}

impl View {
    /// The original range of view range `start..end`.
    pub fn original(&self, start: usize, end: usize) -> (usize, usize) {
        let s = self.map.start(start);
        let e = if end <= start { s } else { self.map.end(end) };
        (s, e.max(s))
    }
}

/// The longest original form of one decoded byte, over the views here:
/// `&#x0000067;` (twelve bytes with the eight digits we accept) for one ASCII
/// byte. Callers that scan a stream in windows size their overlap with it.
pub const MAX_EXPANSION: usize = 12;

/// Digits accepted in a numeric character reference (leading zeros count).
const MAX_REF_DIGITS: usize = 8;

/// Every view of `data` that differs from it.
pub(crate) fn views(data: &[u8]) -> Vec<View> {
    let mut out = Vec::new();
    if let Some(v) = utf16(data) {
        out.push(v);
    }
    if let Some(v) = json(data) {
        out.push(v);
    }
    if let Some(v) = html(data) {
        out.push(v);
    }
    out
}

/// Whether `data` reads as text a scanner can see into: UTF-8 without NUL
/// bytes (a character cut at either end allowed, as in a window of a
/// stream), or mostly-ASCII UTF-16.
pub fn is_text(data: &[u8]) -> bool {
    if data.contains(&0) {
        return utf16_order(data).is_some();
    }
    // A window may start inside a character: skip its continuation bytes.
    let lead = data
        .iter()
        .take(3)
        .take_while(|b| (**b & 0xc0) == 0x80)
        .count();
    match std::str::from_utf8(&data[lead..]) {
        Ok(_) => true,
        Err(e) => e.error_len().is_none(),
    }
}

/// One escape: `dec_len` decoded bytes at `dec` came from `raw_len` bytes at
/// `raw`. Between escapes each decoded byte is `scale` original bytes.
#[derive(Clone, Copy, Debug)]
struct Seg {
    dec: usize,
    raw: usize,
    dec_len: usize,
    raw_len: usize,
}

#[derive(Debug)]
struct Map {
    /// Original bytes per decoded byte outside the segments.
    scale: usize,
    segs: Vec<Seg>,
}

impl Map {
    /// The last segment starting at or before decoded offset `p`.
    fn seg_at(&self, p: usize) -> Option<&Seg> {
        let i = self.segs.partition_point(|s| s.dec <= p);
        i.checked_sub(1).map(|i| &self.segs[i])
    }

    fn linear(&self, p: usize) -> usize {
        match self.seg_at(p) {
            Some(s) => s.raw + s.raw_len + (p - s.dec - s.dec_len) * self.scale,
            None => p * self.scale,
        }
    }

    fn start(&self, p: usize) -> usize {
        match self.seg_at(p) {
            Some(s) if p < s.dec + s.dec_len => s.raw,
            _ => self.linear(p),
        }
    }

    /// Exclusive end: the end of the original form of byte `p - 1`.
    fn end(&self, p: usize) -> usize {
        let q = p - 1;
        match self.seg_at(q) {
            Some(s) if q < s.dec + s.dec_len => s.raw + s.raw_len,
            _ => self.linear(q) + self.scale,
        }
    }
}

/// Builds a view from escapes found left to right.
struct Builder {
    text: Vec<u8>,
    map: Map,
    /// Original offset up to which `text` holds everything.
    done: usize,
}

impl Builder {
    fn new(len: usize) -> Builder {
        Builder {
            text: Vec::with_capacity(len),
            map: Map {
                scale: 1,
                segs: Vec::new(),
            },
            done: 0,
        }
    }

    /// `data[at..at + raw_len]` decodes to `decoded`.
    fn escape(&mut self, data: &[u8], at: usize, raw_len: usize, decoded: &[u8]) {
        self.text.extend_from_slice(&data[self.done..at]);
        self.map.segs.push(Seg {
            dec: self.text.len(),
            raw: at,
            dec_len: decoded.len(),
            raw_len,
        });
        self.text.extend_from_slice(decoded);
        self.done = at + raw_len;
    }

    fn finish(mut self, data: &[u8], encoding: TextEncoding) -> Option<View> {
        if self.map.segs.is_empty() {
            return None;
        }
        self.text.extend_from_slice(&data[self.done..]);
        Some(View {
            encoding,
            text: self.text,
            map: self.map,
        })
    }
}

/// Positions of `needle` in `data`.
fn positions(needle: u8, data: &[u8]) -> impl Iterator<Item = usize> + '_ {
    data.iter()
        .enumerate()
        .filter(move |(_, b)| **b == needle)
        .map(|(i, _)| i)
}

fn push_char(out: &mut Vec<u8>, c: char) {
    let mut buf = [0u8; 4];
    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
}

fn hex4(d: &[u8]) -> Option<u16> {
    if d.len() < 4 {
        return None;
    }
    let s = std::str::from_utf8(&d[..4]).ok()?;
    u16::from_str_radix(s, 16).ok()
}

/// JSON string escapes, wherever they are (the body need not parse as JSON:
/// a window of a stream never does). Only worth a view when an escape could
/// be hiding a character of a secret: `\/` or a `\u` of a printable ASCII
/// character. Escaped control characters and non-ASCII text (what JSON
/// encoders write) never spell a token, so such bodies are scanned once.
fn json(data: &[u8]) -> Option<View> {
    let hides = |i: usize| match data.get(i + 1) {
        Some(b'/') => true,
        Some(b'u') => {
            hex4(data.get(i + 2..).unwrap_or_default()).is_some_and(|c| (0x21..0x7f).contains(&c))
        }
        _ => false,
    };
    if !positions(b'\\', data).any(hides) {
        return None;
    }
    let mut b = Builder::new(data.len());
    let mut i = 0;
    while i + 1 < data.len() {
        if data[i] != b'\\' {
            i += 1;
            continue;
        }
        let simple = match data[i + 1] {
            b'"' => Some(b'"'),
            b'\\' => Some(b'\\'),
            b'/' => Some(b'/'),
            b'b' => Some(0x08),
            b'f' => Some(0x0c),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            _ => None,
        };
        if let Some(c) = simple {
            b.escape(data, i, 2, &[c]);
            i += 2;
            continue;
        }
        if data[i + 1] != b'u' {
            i += 1;
            continue;
        }
        let Some(hi) = hex4(&data[i + 2..]) else {
            i += 2;
            continue;
        };
        let mut out = Vec::with_capacity(4);
        let mut len = 6;
        if (0xd800..0xdc00).contains(&hi) {
            let lo = data
                .get(i + 6..i + 8)
                .filter(|p| *p == b"\\u")
                .and_then(|_| hex4(&data[i + 8..]))
                .filter(|lo| (0xdc00..0xe000).contains(lo));
            match lo {
                Some(lo) => {
                    let c = 0x10000 + ((u32::from(hi) - 0xd800) << 10) + (u32::from(lo) - 0xdc00);
                    push_char(&mut out, char::from_u32(c).unwrap_or('\u{fffd}'));
                    len = 12;
                }
                None => push_char(&mut out, '\u{fffd}'),
            }
        } else {
            push_char(
                &mut out,
                char::from_u32(u32::from(hi)).unwrap_or('\u{fffd}'),
            );
        }
        b.escape(data, i, len, &out);
        i += len;
    }
    b.finish(data, TextEncoding::JsonEscape)
}

/// Named references for the ASCII characters that have one (HTML5): the
/// only ones that can spell part of a token.
const NAMED: &[(&str, u8)] = &[
    ("amp", b'&'),
    ("lt", b'<'),
    ("gt", b'>'),
    ("quot", b'"'),
    ("apos", b'\''),
    ("excl", b'!'),
    ("num", b'#'),
    ("dollar", b'$'),
    ("percnt", b'%'),
    ("lpar", b'('),
    ("rpar", b')'),
    ("ast", b'*'),
    ("midast", b'*'),
    ("plus", b'+'),
    ("comma", b','),
    ("period", b'.'),
    ("sol", b'/'),
    ("colon", b':'),
    ("semi", b';'),
    ("equals", b'='),
    ("quest", b'?'),
    ("commat", b'@'),
    ("lsqb", b'['),
    ("lbrack", b'['),
    ("bsol", b'\\'),
    ("rsqb", b']'),
    ("rbrack", b']'),
    ("hat", b'^'),
    ("lowbar", b'_'),
    ("UnderBar", b'_'),
    ("grave", b'`'),
    ("DiacriticalGrave", b'`'),
    ("lcub", b'{'),
    ("lbrace", b'{'),
    ("verbar", b'|'),
    ("vert", b'|'),
    ("VerticalLine", b'|'),
    ("rcub", b'}'),
    ("rbrace", b'}'),
    ("Tab", b'\t'),
    ("NewLine", b'\n'),
    ("hyphen", b'-'),
    ("dash", b'-'),
];

/// HTML character references: numeric ones (up to eight digits, the `;`
/// optional as browsers allow) and the named ASCII ones.
fn html(data: &[u8]) -> Option<View> {
    if !data.contains(&b'&') {
        return None;
    }
    let mut b = Builder::new(data.len());
    let mut i = 0;
    while i < data.len() {
        if data[i] != b'&' {
            i += 1;
            continue;
        }
        match reference(&data[i..]) {
            Some((len, c)) => {
                let mut out = Vec::with_capacity(4);
                push_char(&mut out, c);
                b.escape(data, i, len, &out);
                i += len;
            }
            None => i += 1,
        }
    }
    b.finish(data, TextEncoding::HtmlReference)
}

/// The reference at the start of `d` (which starts with `&`): its length and
/// character.
fn reference(d: &[u8]) -> Option<(usize, char)> {
    if d.get(1) == Some(&b'#') {
        let (radix, at) = match d.get(2) {
            Some(b'x' | b'X') => (16, 3),
            _ => (10, 2),
        };
        let digits = d[at..]
            .iter()
            .take(MAX_REF_DIGITS + 1)
            .take_while(|c| (**c as char).is_digit(radix))
            .count();
        if digits == 0 || digits > MAX_REF_DIGITS {
            return None;
        }
        let s = std::str::from_utf8(&d[at..at + digits]).ok()?;
        let n = u32::from_str_radix(s, radix).ok()?;
        let c = char::from_u32(n).unwrap_or('\u{fffd}');
        let semi = usize::from(d.get(at + digits) == Some(&b';'));
        return Some((at + digits + semi, c));
    }
    let name_len = d[1..]
        .iter()
        .take(20)
        .take_while(|c| c.is_ascii_alphanumeric())
        .count();
    if d.get(1 + name_len) != Some(&b';') {
        return None;
    }
    let name = &d[1..1 + name_len];
    NAMED
        .iter()
        .find(|(n, _)| n.as_bytes() == name)
        .map(|(_, c)| (name_len + 2, *c as char))
}

/// Byte order of mostly-ASCII UTF-16 (`true` = little-endian): at least 16
/// bytes, and three quarters of the code units an ASCII character with a
/// zero high byte. Decided per window: a window that starts at an odd offset
/// reads as the other order and still decodes the same ASCII.
fn utf16_order(data: &[u8]) -> Option<bool> {
    if data.len() < 16 {
        return None;
    }
    let units = data.len() / 2;
    let ascii = |b: u8| b != 0 && b < 0x80;
    let le = data
        .chunks_exact(2)
        .filter(|p| ascii(p[0]) && p[1] == 0)
        .count();
    let be = data
        .chunks_exact(2)
        .filter(|p| p[0] == 0 && ascii(p[1]))
        .count();
    if le * 4 >= units * 3 {
        Some(true)
    } else if be * 4 >= units * 3 {
        Some(false)
    } else {
        None
    }
}

fn utf16(data: &[u8]) -> Option<View> {
    if !data.contains(&0) {
        return None;
    }
    let little = utf16_order(data)?;
    let units = data.chunks_exact(2).map(|p| {
        if little {
            u16::from_le_bytes([p[0], p[1]])
        } else {
            u16::from_be_bytes([p[0], p[1]])
        }
    });
    let mut text = Vec::with_capacity(data.len() / 2);
    let mut segs = Vec::new();
    let mut raw = 0;
    for r in char::decode_utf16(units) {
        let (c, len) = match r {
            Ok(c) => (c, c.len_utf16() * 2),
            Err(_) => ('\u{fffd}', 2),
        };
        if c.is_ascii() {
            text.push(c as u8);
        } else {
            let dec = text.len();
            push_char(&mut text, c);
            segs.push(Seg {
                dec,
                raw,
                dec_len: text.len() - dec,
                raw_len: len,
            });
        }
        raw += len;
    }
    Some(View {
        encoding: TextEncoding::Utf16,
        text,
        map: Map { scale: 2, segs },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn find(v: &View, needle: &[u8]) -> (usize, usize) {
        let at = v
            .text
            .windows(needle.len())
            .position(|w| w == needle)
            .expect("needle in view");
        v.original(at, at + needle.len())
    }

    #[test]
    fn json_escapes_map_back_exactly() {
        let data = br#"{"k":"a\u0067hp_x\/y","n":"\ud83d\ude00z"}"#;
        let v = json(data).unwrap();
        assert_eq!(
            String::from_utf8_lossy(&v.text),
            "{\"k\":\"aghp_x/y\",\"n\":\"\u{1f600}z\"}"
        );
        let (s, e) = find(&v, b"ghp_x/y");
        assert_eq!(&data[s..e], br#"\u0067hp_x\/y"#);
        let (s, e) = find(&v, "\u{1f600}z".as_bytes());
        assert_eq!(&data[s..e], br#"\ud83d\ude00z"#);
        assert!(json(br#"{"plain": "text\n"}"#).is_none());
        // Escapes of control and non-ASCII characters cannot spell a token.
        assert!(json(br#"{"t": "caf\u00e9 \u001b[0m \ud83d\ude00"}"#).is_none());
        assert!(json(br#"{"t": "\u0067"}"#).is_some());
    }

    #[test]
    fn html_references_map_back_exactly() {
        let data = b"<p>t=&#x67;hp&lowbar;&#0000104;i&amp;x &#xZZ; &#123456789;</p>";
        let v = html(data).unwrap();
        let (s, e) = find(&v, b"ghp_hi&x");
        assert_eq!(&data[s..e], b"&#x67;hp&lowbar;&#0000104;i&amp;x");
        assert!(String::from_utf8_lossy(&v.text).contains("&#xZZ; &#123456789;"));
        assert!(html(b"a & b").is_none());
    }

    #[test]
    fn utf16_either_order_and_offset() {
        let s = "token=ghp_abc ✓ done";
        let le: Vec<u8> = s.encode_utf16().flat_map(|u| u.to_le_bytes()).collect();
        let v = utf16(&le).unwrap();
        assert_eq!(String::from_utf8_lossy(&v.text), s);
        let (a, b) = find(&v, b"ghp_abc");
        assert_eq!(&le[a..b], &le[12..26]);
        let (a, b) = find(&v, "✓ d".as_bytes());
        assert_eq!(b - a, 6);
        // The same bytes seen from an odd offset read as big-endian ASCII.
        let v = utf16(&le[1..]).unwrap();
        assert!(String::from_utf8_lossy(&v.text).contains("ghp_abc"));
        assert!(is_text(&le) && is_text(&le[1..]));
    }

    #[test]
    fn text_or_not() {
        assert!(is_text("héllo".as_bytes()));
        assert!(
            is_text(&"héllo".as_bytes()[2..]),
            "cut character at the start"
        );
        assert!(is_text(&"hé".as_bytes()[..2]), "cut character at the end");
        assert!(!is_text(b"\x00\x01binary\x00"));
        assert!(!is_text(
            b"\x78\x9c\xcb\x48\xcd\xc9\xc9\x07\x00\x06\x2c\x02\x15"
        ));
    }
}
