//! Translation of Go RE2 patterns (the dialect of gitleaks configs) into the
//! `regex` crate's dialect, and compilation with RE2's byte semantics.
//!
//! Differences handled: a `{` (or `}`) that starts no repetition is a literal
//! in RE2 but an error in `regex`; `\w`, `\d`, `\s`, `\b` are ASCII in RE2
//! (we compile with `unicode(false)`); RE2 has no `\v` in `\s` (ignored: harmless).

use regex::bytes::{Regex, RegexBuilder};

/// Rewrites `pattern` so that `regex` parses it the way Go's `regexp` does.
pub fn translate(pattern: &str) -> String {
    let chars: Vec<char> = pattern.chars().collect();
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut i = 0;
    let mut in_class = false;
    // Position right after `[` or `[^`, where a `]` is a literal.
    let mut class_start = false;
    while i < chars.len() {
        let c = chars[i];
        if c == '\\' {
            out.push(c);
            if let Some(&n) = chars.get(i + 1) {
                out.push(n);
                // \Q...\E quotes literally in RE2; `regex` lacks it.
                if n == 'Q' {
                    out.pop();
                    out.pop();
                    let mut j = i + 2;
                    while j < chars.len() && !(chars[j] == '\\' && chars.get(j + 1) == Some(&'E')) {
                        out.push_str(&regex::escape(&chars[j].to_string()));
                        j += 1;
                    }
                    i = (j + 2).min(chars.len());
                    class_start = false;
                    continue;
                }
            }
            i += 2;
            class_start = false;
            continue;
        }
        if in_class {
            if c == '[' && chars.get(i + 1) == Some(&':') {
                // POSIX class [:alpha:]: copy through the closing ":]".
                if let Some(end) = find_seq(&chars, i + 2, &[':', ']']) {
                    out.extend(&chars[i..end + 2]);
                    i = end + 2;
                    class_start = false;
                    continue;
                }
            }
            if c == '[' {
                // A nested `[` is a literal in RE2 but a nested class in `regex`.
                out.push_str("\\[");
            } else if c == ']' && !class_start {
                in_class = false;
                out.push(c);
            } else if (c == '&' || c == '~' || c == '-') && chars.get(i + 1) == Some(&c) {
                // `&&`, `~~`, `--` are class operators in `regex`, literals in RE2.
                out.push('\\');
                out.push(c);
            } else {
                out.push(c);
            }
            class_start = false;
            i += 1;
            continue;
        }
        match c {
            '[' => {
                in_class = true;
                out.push(c);
                i += 1;
                if chars.get(i) == Some(&'^') {
                    out.push('^');
                    i += 1;
                }
                class_start = true;
                continue;
            }
            '{' => {
                if let Some(len) = repetition_len(&chars[i..]) {
                    out.extend(&chars[i..i + len]);
                    i += len;
                    continue;
                }
                out.push_str("\\{");
            }
            '}' => out.push_str("\\}"),
            _ => out.push(c),
        }
        i += 1;
    }
    out
}

fn find_seq(chars: &[char], from: usize, seq: &[char]) -> Option<usize> {
    (from..chars.len().saturating_sub(seq.len() - 1)).find(|&k| chars[k..].starts_with(seq))
}

/// Length of a `{n}`, `{n,}` or `{n,m}` repetition at the start of `s`.
fn repetition_len(s: &[char]) -> Option<usize> {
    let mut i = 1;
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < s.len() && s[*i].is_ascii_digit() {
            *i += 1;
        }
        *i > start
    };
    if !digits(&mut i) {
        return None;
    }
    if s.get(i) == Some(&',') {
        i += 1;
        digits(&mut i);
    }
    (s.get(i) == Some(&'}')).then_some(i + 1)
}

/// Compiles a Go RE2 pattern with RE2's ASCII semantics.
pub fn compile(pattern: &str) -> Result<Regex, String> {
    let translated = translate(pattern);
    let build = |unicode: bool| {
        RegexBuilder::new(&translated)
            .unicode(unicode)
            .size_limit(256 << 20)
            .dfa_size_limit(64 << 20)
            .build()
    };
    match build(false) {
        Ok(r) => Ok(r),
        // Patterns with Unicode classes (`\p{L}`) need Unicode mode; `\w` and
        // friends then become Unicode-aware too, a superset of RE2's matches.
        Err(first) => build(true).map_err(|_| first.to_string()),
    }
}

/// Upper bound of the length of any match, when the pattern has one.
pub fn max_match_len(pattern: &str) -> Option<usize> {
    let translated = translate(pattern);
    let mut parser = regex_syntax::ParserBuilder::new()
        .unicode(false)
        .utf8(false)
        .build();
    let hir = parser.parse(&translated).ok()?;
    hir.properties().maximum_len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_braces_are_literals() {
        assert_eq!(translate(r"a{b}"), r"a\{b\}");
        assert_eq!(translate(r"a{2,3}"), r"a{2,3}");
        assert_eq!(translate(r"a{2,}x{"), r"a{2,}x\{");
        assert_eq!(translate(r"[{}]"), r"[{}]");
        let re = compile(r#"\{"key":\s*"([a-z]{4})"}"#).unwrap();
        assert!(re.is_match(br#"{"key": "abcd"}"#));
    }

    #[test]
    fn classes_keep_re2_meaning() {
        let re = compile(r"[[:alpha:]]+[a-z&&]x").unwrap();
        assert!(re.is_match(b"abc&x"));
        let re = compile(r"[]a]+").unwrap();
        assert!(re.is_match(b"]]a"));
        let re = compile(r"[a[]+").unwrap();
        assert!(re.is_match(b"[["));
    }

    #[test]
    fn word_class_is_ascii() {
        let re = compile(r"^\w+$").unwrap();
        assert!(re.is_match(b"abc_1"));
        assert!(!re.is_match("é".as_bytes()));
    }

    #[test]
    fn quoted_literals() {
        let re = compile(r"\Qa.b\E+").unwrap();
        assert!(re.is_match(b"a.bb"));
        assert!(!re.is_match(b"axb"));
    }

    #[test]
    fn bounded_lengths() {
        assert_eq!(max_match_len(r"ghp_[A-Za-z0-9]{36}"), Some(40));
        assert_eq!(max_match_len(r"a+"), None);
    }
}
