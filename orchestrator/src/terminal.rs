//! What a bottle may put on the operator's screen.
//!
//! Two things: [`PtyFilter`] sits between the agent's pty and the operator's
//! terminal (`start`, `resume`, `exec`) and drops the control strings that
//! act on the operator's machine rather than draw on the screen; and
//! [`escape`] turns text a bottle wrote (logs, `info`, the preflight) into
//! text that cannot move the cursor, hide itself or reorder what is shown.
//!
//! It must never pass a control string it has not decided on: an OSC is held
//! until its number is known (a few bytes, bounded), DCS, SOS, PM and APC
//! strings never pass.

use std::fmt::Write as _;

/// OSC numbers that only draw or describe (titles, colours, hyperlinks,
/// the working directory, notifications, prompt marks). Everything else —
/// OSC 52 (clipboard), OSC 1337 (iTerm2 file transfer), OSC 5113 (kitty file
/// transfer), OSC 5522 (kitty clipboard) and any number not listed — is
/// dropped.
const ALLOWED_OSC: [u32; 15] = [0, 1, 2, 4, 7, 8, 9, 10, 11, 12, 104, 110, 111, 112, 133];

/// Longest OSC number looked at; a longer one is dropped undecided.
const MAX_OSC_PREFIX: usize = 8;

const ESC: u8 = 0x1b;
const BEL: u8 = 0x07;
const CAN: u8 = 0x18;
const SUB: u8 = 0x1a;

/// A streaming filter over what the agent's pty writes. Feed chunks as they
/// come; a sequence split across chunks is handled, and at most a few bytes
/// are held between calls.
#[derive(Debug, Default)]
pub struct PtyFilter {
    state: State,
    /// Digits of the OSC number seen so far (undecided OSC).
    prefix: Vec<u8>,
    /// A UTF-8 lead byte `0xC2` whose continuation is in the next chunk.
    pending_c2: bool,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    #[default]
    Ground,
    /// After ESC, outside any string.
    Escape,
    /// OSC whose number is not known yet (nothing emitted).
    OscPrefix,
    /// Inside a string that passes (an allowed OSC).
    Pass(Kind),
    /// Inside a string that is dropped.
    Drop(Kind),
    /// ESC inside a string: `\` ends it, anything else aborts it.
    StringEscape { pass: bool, kind: Kind },
}

/// Which string: only an OSC may end with BEL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Osc,
    Other,
}

impl PtyFilter {
    pub fn new() -> PtyFilter {
        PtyFilter::default()
    }

    /// The bytes of `input` that may reach the operator's terminal.
    pub fn filter(&mut self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len());
        let mut i = 0;
        if self.pending_c2 {
            self.pending_c2 = false;
            match input.first() {
                Some(&b) => {
                    i = 1;
                    self.c1_or_text(b, &mut out);
                }
                None => {
                    self.pending_c2 = true;
                    return out;
                }
            }
        }
        while i < input.len() {
            let b = input[i];
            i += 1;
            // C1 controls as UTF-8 (U+0080..U+009F): what a UTF-8 terminal
            // may read as DCS, OSC, ST and the rest.
            if b == 0xc2 {
                match input.get(i) {
                    Some(&next) => {
                        i += 1;
                        self.c1_or_text(next, &mut out);
                    }
                    None => self.pending_c2 = true,
                }
                continue;
            }
            self.byte(b, &mut out);
        }
        out
    }

    /// `0xC2` followed by `next`: a C1 control when `next` is 0x80..=0x9F.
    fn c1_or_text(&mut self, next: u8, out: &mut Vec<u8>) {
        if (0x80..=0x9f).contains(&next) {
            // ESC + (next - 0x40) is the 7-bit form of the same control.
            self.control_after_escape(next - 0x40, out, &[0xc2, next]);
        } else {
            self.byte(0xc2, out);
            self.byte(next, out);
        }
    }

    fn byte(&mut self, b: u8, out: &mut Vec<u8>) {
        match self.state {
            State::Ground => {
                if b == ESC {
                    self.state = State::Escape;
                } else {
                    out.push(b);
                }
            }
            State::Escape => match b {
                // A second ESC starts the sequence again (ESC ESC ] is an OSC).
                ESC => {}
                CAN | SUB => self.state = State::Ground,
                // Terminals execute C0 controls inside an escape sequence and
                // stay in it (ESC BEL ] is an OSC too).
                0x00..=0x1f => out.push(b),
                _ => {
                    self.state = State::Ground;
                    self.control_after_escape(b, out, &[ESC, b]);
                }
            },
            State::OscPrefix => self.osc_prefix(b, out),
            State::Pass(kind) | State::Drop(kind) => {
                let pass = matches!(self.state, State::Pass(_));
                match b {
                    ESC => self.state = State::StringEscape { pass, kind },
                    BEL if kind == Kind::Osc => {
                        self.state = State::Ground;
                        if pass {
                            out.push(BEL);
                        }
                    }
                    CAN | SUB => self.state = State::Ground,
                    _ => {
                        if pass {
                            out.push(b);
                        }
                    }
                }
            }
            State::StringEscape { pass, .. } => {
                self.state = State::Ground;
                if b == b'\\' {
                    if pass {
                        out.extend_from_slice(&[ESC, b'\\']);
                    }
                } else {
                    // The string is aborted; the ESC starts a new sequence.
                    if pass {
                        out.extend_from_slice(&[ESC, b'\\']);
                    }
                    self.byte(ESC, out);
                    self.byte(b, out);
                }
            }
        }
    }

    /// The byte after ESC (or a C1 control mapped to it); `raw` is how it
    /// was spelled, emitted when it passes.
    fn control_after_escape(&mut self, b: u8, out: &mut Vec<u8>, raw: &[u8]) {
        let in_string = !matches!(self.state, State::Ground | State::Escape);
        if in_string {
            // ST ends the string; any other control ends it too and starts
            // anew, as C1 controls do from any state.
            let pass = matches!(
                self.state,
                State::Pass(_) | State::StringEscape { pass: true, .. }
            );
            self.state = State::Ground;
            if b == b'\\' {
                if pass {
                    out.extend_from_slice(raw);
                }
                return;
            }
            if pass {
                out.extend_from_slice(&[ESC, b'\\']);
            }
        }
        self.state = State::Ground;
        match b {
            b']' => {
                self.prefix.clear();
                self.state = State::OscPrefix;
            }
            // DCS, SOS, PM, APC: strings that never pass.
            b'P' | b'X' | b'^' | b'_' => self.state = State::Drop(Kind::Other),
            // A stray ST ends nothing.
            b'\\' => {}
            _ => out.extend_from_slice(raw),
        }
    }

    fn osc_prefix(&mut self, b: u8, out: &mut Vec<u8>) {
        if b.is_ascii_digit() && self.prefix.len() < MAX_OSC_PREFIX {
            self.prefix.push(b);
            return;
        }
        let number = std::str::from_utf8(&self.prefix)
            .ok()
            .and_then(|s| s.parse::<u32>().ok());
        let allowed =
            number.is_some_and(|n| ALLOWED_OSC.contains(&n)) && matches!(b, b';' | BEL | ESC);
        if allowed {
            out.extend_from_slice(&[ESC, b']']);
            out.extend_from_slice(&self.prefix);
            self.state = State::Pass(Kind::Osc);
        } else {
            self.state = State::Drop(Kind::Osc);
        }
        self.prefix.clear();
        self.byte(b, out);
    }
}

/// A writer that passes what it is given through a [`PtyFilter`]: the
/// operator's standard output or error while a command of the bottle runs.
pub struct Screen<W> {
    inner: W,
    filter: PtyFilter,
}

impl<W: std::io::Write> Screen<W> {
    pub fn new(inner: W) -> Screen<W> {
        Screen {
            inner,
            filter: PtyFilter::new(),
        }
    }
}

impl<W: std::io::Write> std::io::Write for Screen<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write_all(&self.filter.filter(buf))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Text a bottle wrote, made safe to print on one line: C0 controls (tab
/// kept), DEL, C1 controls and the bidirectional formatting characters are
/// shown as `\x1b`, `\u{202e}` and the like.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        push_escaped(&mut out, c, false);
    }
    out
}

/// Like [`escape`], keeping line breaks (a sidecar's log of many lines).
pub fn escape_lines(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        push_escaped(&mut out, c, true);
    }
    out
}

fn push_escaped(out: &mut String, c: char, keep_newline: bool) {
    let code = u32::from(c);
    let control = (code < 0x20 && c != '\t' && !(keep_newline && c == '\n'))
        || code == 0x7f
        || (0x80..=0x9f).contains(&code);
    if control {
        let _ = write!(out, "\\x{code:02x}");
    } else if is_bidi_control(c) {
        let _ = write!(out, "\\u{{{code:04x}}}");
    } else {
        out.push(c);
    }
}

/// Characters that reorder or hide the text around them (Trojan Source).
fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]]) -> Vec<u8> {
        let mut f = PtyFilter::new();
        chunks.iter().flat_map(|c| f.filter(c)).collect()
    }

    #[test]
    fn clipboard_file_writes_and_device_strings_are_dropped() {
        // (what the agent writes, what reaches the terminal)
        let attacks: [(&[u8], &[u8]); 10] = [
            (b"\x1b]52;c;ZXZpbA==\x07", b""),
            (b"\x1b]52;c;ZXZpbA==\x1b\\", b""),
            (b"\x1b]1337;File=name=x;inline=1:QUFB\x07", b""),
            (b"\x1bP+q544e\x1b\\", b""),
            (b"\x1b_Gf=100;AAAA\x1b\\", b""),
            ("\u{9d}52;c;ZXZpbA==\u{9c}".as_bytes(), b""),
            // tmux's passthrough: the DCS is dropped, the OSC inside too.
            ("\u{90}tmux;\x1b\x1b]52;c;eA==\x07\u{9c}".as_bytes(), b""),
            (b"\x1b\x1b]52;c;eA==\x07", b""),
            // BEL inside an escape sequence rings and the OSC goes on.
            (b"\x1b\x07]52;c;eA==\x07", b"\x07"),
            // A C1 OSC inside an allowed OSC ends it and starts its own.
            (
                "\x1b]8;;https://e.example\u{9d}52;c;eA==\x07".as_bytes(),
                b"\x1b]8;;https://e.example\x1b\\",
            ),
        ];
        for (attack, shown) in attacks {
            let mut input = b"before ".to_vec();
            input.extend_from_slice(attack);
            input.extend_from_slice(b" after");
            let mut want = b"before ".to_vec();
            want.extend_from_slice(shown);
            want.extend_from_slice(b" after");
            // Whole, and split at every byte boundary.
            assert_eq!(run(&[&input]), want, "{attack:?}");
            for cut in 1..input.len() {
                let got = run(&[&input[..cut], &input[cut..]]);
                assert_eq!(got, want, "{attack:?} cut at {cut}");
            }
        }
    }

    #[test]
    fn drawing_passes_unchanged() {
        let screen: &[u8] = "\x1b[1;32mgreen\x1b[0m \x1b]0;title\x07 \x1b]8;;https://example.com\x1b\\link\x1b]8;;\x1b\\ caf\u{e9} \u{2713}\r\n".as_bytes();
        assert_eq!(run(&[screen]), screen);
        for cut in 1..screen.len() {
            assert_eq!(run(&[&screen[..cut], &screen[cut..]]), screen, "cut {cut}");
        }
    }

    #[test]
    fn an_unknown_or_endless_osc_is_dropped_and_the_screen_recovers() {
        assert_eq!(run(&[b"\x1b]5113;x\x07ok"]), b"ok");
        assert_eq!(run(&[b"\x1b]123456789012;x\x07ok"]), b"ok");
        // An ESC that is not ST aborts the string; what follows is drawn.
        assert_eq!(run(&[b"\x1b]52;c;xx\x1b[31mred"]), b"\x1b[31mred");
        let endless = vec![b'A'; 1 << 20];
        assert!(run(&[b"\x1b]52;c;", &endless]).is_empty());
    }

    #[test]
    fn bottle_text_is_printed_with_controls_escaped() {
        assert_eq!(
            escape("GET /\x1b]52;c;eA==\x07\u{202e}gpj.exe\u{9b}31m\ttab\nline"),
            "GET /\\x1b]52;c;eA==\\x07\\u{202e}gpj.exe\\x9b31m\ttab\\x0aline"
        );
        assert_eq!(escape_lines("a\nb\rc"), "a\nb\\x0dc");
    }
}
