//! Host and port as the policy spells them: canonical host names, `host[:port]` splitting and
//! the authority written back out. Pure text work: never resolves or dials anything.

use crate::config::normalize_host;
use crate::ssrf::parse_ip_literal;

/// Canonical host for policy: IP literals in any spelling become their canonical text.
pub(crate) fn canon_host(h: &str) -> Option<String> {
    let n = normalize_host(h)?;
    if let Some(ip) = parse_ip_literal(&n) {
        return Some(ip.to_string());
    }
    if n.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
    {
        Some(n)
    } else {
        None
    }
}

/// Splits `host[:port]` (IPv6 in brackets).
pub(crate) fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if after.is_empty() => None,
            None => return None,
        };
        return Some((canon_host(h)?, port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Some((canon_host(h)?, Some(p.parse().ok()?))),
        Some(_) => Some((canon_host(s)?, None)),
        None => Some((canon_host(s)?, None)),
    }
}

pub(crate) fn authority_for(host: &str, port: u16, default_port: u16) -> String {
    let h = if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    };
    if port == default_port {
        h
    } else {
        format!("{h}:{port}")
    }
}
