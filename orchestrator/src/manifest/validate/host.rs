//! Route host names: lower case DNS names or `*.suffix`, never an IP
//! literal, a sidecar or the host machine.

use super::super::{is_ip_literal, HostPattern};
use super::{is_sidecar_name, HOST_MACHINE_NAMES};

/// Check a host name or `*.suffix`: lower case DNS labels, at least two
/// labels, no IP literal, no sidecar name.
pub(super) fn host_pattern(s: &str) -> Result<HostPattern, String> {
    let expected = "expected a host name like `api.example.com` or `*.example.com`";
    if s != s.to_ascii_lowercase() {
        return Err(format!("{expected}, found {s:?} (write it in lower case)"));
    }
    if is_ip_literal(s) {
        return Err(format!("{expected}, found the IP address {s:?}: routes name hosts, and egress resolves them itself"));
    }
    let (wild, name) = match s.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    if name.contains('*') {
        return Err(format!(
            "{expected}, found {s:?}: a wildcard is only allowed as a whole leading label `*.`"
        ));
    }
    if name.len() > 253 || name.is_empty() {
        return Err(format!("{expected}, found {s:?}"));
    }
    let labels: Vec<&str> = name.split('.').collect();
    for l in &labels {
        let ok = !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-');
        if !ok {
            return Err(format!(
                "{expected}, found {s:?} (label {l:?} is not a valid DNS label)"
            ));
        }
    }
    if labels.len() < 2 {
        if is_sidecar_name(name) {
            return Err(format!(
                "{expected}, found {s:?}: that is a sidecar's name, never a route"
            ));
        }
        return Err(format!(
            "{expected}, found the single-label name {s:?}: single-label names are never routes"
        ));
    }
    if name.ends_with(".localhost") || HOST_MACHINE_NAMES.contains(&name) {
        return Err(format!(
            "{expected}, found {s:?}: that name means the host machine, which a bottle never reaches"
        ));
    }
    if labels
        .last()
        .is_some_and(|l| l.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(format!(
            "{expected}, found {s:?} (the last label is numeric)"
        ));
    }
    Ok(if wild {
        HostPattern::Wildcard(name.to_string())
    } else {
        HostPattern::Exact(name.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        assert!(host_pattern("api.github.com").is_ok());
        assert!(matches!(
            host_pattern("*.example.com"),
            Ok(HostPattern::Wildcard(_))
        ));
        for bad in [
            "egress",
            "localhost",
            "a.localhost",
            "host.docker.internal",
            "*.com",
            "a..b",
            "1.2.3.4",
            "Foo.com",
            "a.*.b",
            "-a.com",
            "x.123",
        ] {
            assert!(host_pattern(bad).is_err(), "{bad}");
        }
    }
}
