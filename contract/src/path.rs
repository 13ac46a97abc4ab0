//! Request paths: the forms egress refuses outright, and how a route's path
//! prefix matches.
//!
//! A path is checked after one percent-decode. Refused, whatever the route:
//! an encoded `/` (`%2F`) or `\` (`%5C`), a raw backslash, dot segments (`.`,
//! `..`, `..;x`, raw or encoded in any case such as `%2e%2E`), empty segments
//! (`//`), `;` parameters (matrix parameters, raw or `%3B`), and a `.`, `/`,
//! `\` or `;` encoded twice (`%252e`). Servers disagree on every one of these
//! (Tomcat's `..;`, a proxy that decodes `%2F`, IIS and `\`), so a path that
//! looks inside a prefix here could name something outside it upstream.
//!
//! A prefix matches on a segment boundary, on the path exactly as it is
//! forwarded (not a decoded copy): `/repos/me/app` matches `/repos/me/app`,
//! `/repos/me/app/…` and `/repos/me/app?x`, never `/repos/me/app-infra`; a
//! prefix ending in `/` matches whatever starts with it. A request that spells
//! a character of the prefix percent-encoded does not match it.

use std::fmt;

/// Why a path is refused (the text names it for the agent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathProblem {
    NotAbsolute,
    EncodedSlash,
    EncodedBackslash,
    Backslash,
    DotSegment,
    EmptySegment,
    MatrixParam,
    DoubleEncoded,
}

impl fmt::Display for PathProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PathProblem::NotAbsolute => "the path does not start with '/'",
            PathProblem::EncodedSlash => "an encoded '/' (%2F) in the path",
            PathProblem::EncodedBackslash => "an encoded backslash (%5C) in the path",
            PathProblem::Backslash => "a backslash in the path",
            PathProblem::DotSegment => {
                "a dot segment ('.' or '..', raw or percent-encoded) in the path"
            }
            PathProblem::EmptySegment => "an empty segment ('//') in the path",
            PathProblem::MatrixParam => "a ';' parameter (matrix parameter) in the path",
            PathProblem::DoubleEncoded => {
                "a '.', '/', backslash or ';' percent-encoded twice (%25...) in the path"
            }
        })
    }
}

/// Checks a path (without its query) for the forms egress refuses.
pub fn check(path: &str) -> Result<(), PathProblem> {
    let raw = path.as_bytes();
    if raw.first() != Some(&b'/') {
        return Err(PathProblem::NotAbsolute);
    }
    if raw.contains(&b'\\') {
        return Err(PathProblem::Backslash);
    }
    let mut decoded = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if let Some(b) = escaped_at(raw, i) {
            match b {
                b'/' => return Err(PathProblem::EncodedSlash),
                b'\\' => return Err(PathProblem::EncodedBackslash),
                _ => decoded.push(b),
            }
            i += 3;
        } else {
            decoded.push(raw[i]);
            i += 1;
        }
    }
    // The leading '/' opens the first segment.
    let segments: Vec<&[u8]> = decoded[1..].split(|b| *b == b'/').collect();
    let last = segments.len() - 1;
    for (n, seg) in segments.iter().enumerate() {
        let name = seg.split(|b| *b == b';').next().unwrap_or_default();
        if name == b"." || name == b".." {
            return Err(PathProblem::DotSegment);
        }
        // `/` alone and a trailing `/` end in an empty segment; nothing else may.
        if seg.is_empty() && n != last {
            return Err(PathProblem::EmptySegment);
        }
        if seg.contains(&b';') {
            return Err(PathProblem::MatrixParam);
        }
    }
    let mut i = 0;
    while i < decoded.len() {
        if let Some(b) = escaped_at(&decoded, i) {
            if matches!(b, b'.' | b'/' | b'\\' | b';') {
                return Err(PathProblem::DoubleEncoded);
            }
        }
        i += 1;
    }
    Ok(())
}

/// Whether `path` (without its query) lies under `prefix` on a segment boundary.
pub fn prefix_matches(prefix: &str, path: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || prefix.ends_with('/'),
        None => false,
    }
}

/// Checks a route's configured prefix: a path egress would forward (see
/// [`check`]), with no query or fragment. `Err` says what is wrong with it.
pub fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.contains('?') || prefix.contains('#') {
        return Err(
            "a path prefix matches the path only: it cannot hold a query ('?') or a fragment ('#')"
                .into(),
        );
    }
    if prefix
        .bytes()
        .any(|b| b.is_ascii_control() || b.is_ascii_whitespace())
    {
        return Err("a path prefix cannot hold spaces or control characters".into());
    }
    check(prefix).map_err(|p| match p {
        PathProblem::NotAbsolute => "a path prefix must start with '/'".to_string(),
        other => format!(
            "{other}: egress refuses every request with such a path, so the prefix could never match"
        ),
    })
}

/// One percent-decode of `s` (an invalid escape stays as it is).
pub fn percent_decode(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if let Some(b) = escaped_at(s, i) {
            out.push(b);
            i += 3;
        } else {
            out.push(s[i]);
            i += 1;
        }
    }
    out
}

/// The byte `%XX` at `s[i]` stands for, if it is a valid escape.
fn escaped_at(s: &[u8], i: usize) -> Option<u8> {
    if s.get(i) != Some(&b'%') {
        return None;
    }
    let hi = (*s.get(i + 1)? as char).to_digit(16)?;
    let lo = (*s.get(i + 2)? as char).to_digit(16)?;
    Some((hi * 16 + lo) as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_paths_pass() {
        for p in [
            "/",
            "/repos/me/app",
            "/repos/me/app/",
            "/a/b.c/...x/.x/x.",
            "/a%20b/%7Euser",
            "/a/%41",
            "/100%",
            "/a/%zz",
        ] {
            assert_eq!(check(p), Ok(()), "{p}");
        }
    }

    #[test]
    fn refused_forms() {
        use PathProblem::*;
        let cases = [
            ("relative", NotAbsolute),
            ("", NotAbsolute),
            ("/a/%2Fb", EncodedSlash),
            ("/a%2fb", EncodedSlash),
            ("/a/%5Cb", EncodedBackslash),
            ("/a/%5cb", EncodedBackslash),
            ("/a\\b", Backslash),
            ("/a/../b", DotSegment),
            ("/a/./b", DotSegment),
            ("/a/..", DotSegment),
            ("/a/.", DotSegment),
            ("/a/%2e%2E/b", DotSegment),
            ("/a/.%2e/b", DotSegment),
            ("/a/%2E/b", DotSegment),
            ("/a/..;/b", DotSegment),
            ("/a/..;x=1/b", DotSegment),
            ("/a/..%3b/b", DotSegment),
            ("/a//b", EmptySegment),
            ("//a", EmptySegment),
            ("/a/b//", EmptySegment),
            ("/a;x=1/b", MatrixParam),
            ("/a/b;", MatrixParam),
            ("/a/b%3Bx", MatrixParam),
            ("/a/%252e%252e/b", DoubleEncoded),
            ("/a/%252F", DoubleEncoded),
            ("/a/%255c", DoubleEncoded),
            ("/a/%253B", DoubleEncoded),
        ];
        for (p, want) in cases {
            assert_eq!(check(p), Err(want), "{p}");
        }
    }

    #[test]
    fn prefixes_match_on_segment_boundaries() {
        let p = "/repos/me/app";
        assert!(prefix_matches(p, "/repos/me/app"));
        assert!(prefix_matches(p, "/repos/me/app/issues"));
        assert!(prefix_matches(p, "/repos/me/app/"));
        assert!(!prefix_matches(p, "/repos/me/app-infra/issues"));
        assert!(!prefix_matches(p, "/repos/me/apps"));
        assert!(!prefix_matches(p, "/repos/me/app.git/info/refs"));
        assert!(!prefix_matches(p, "/repos/me/ap"));
        assert!(!prefix_matches(p, "/repos/me/%61pp"));
        let slash = "/repos/me/app-";
        assert!(prefix_matches(slash, "/repos/me/app-/x"));
        let dir = "/allowed/";
        assert!(prefix_matches(dir, "/allowed/x"));
        assert!(prefix_matches(dir, "/allowed/"));
        assert!(!prefix_matches(dir, "/allowed"));
        assert!(prefix_matches("/", "/anything"));
    }

    #[test]
    fn prefixes_are_checked_like_paths() {
        assert!(check_prefix("/repos/me/app").is_ok());
        assert!(check_prefix("/repos/me/app/").is_ok());
        for bad in [
            "repos", "/a/../b", "/a//b", "/a;b", "/a%2Fb", "/a\\b", "/a?x", "/a#x", "/a b",
        ] {
            assert!(check_prefix(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn decodes_once() {
        assert_eq!(percent_decode(b"%2e%2E%252e%zz%4"), b"..%2e%zz%4");
    }
}
