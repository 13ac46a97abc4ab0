//! Routes: a `[[route]]` as the file spells it, the validated [`Route`] the proxy matches
//! requests against, and the host names both are keyed on.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::dlp::{route_dlp, Detectors, RouteDlp, RouteDlpConfig};
use super::{is_false, EgressConfig};
use crate::error::Error;

/// One `[[route]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub id: String,
    pub host: String,
    #[serde(default = "default_ports")]
    pub ports: Vec<u16>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthConfig>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placeholder: Option<String>,
    #[serde(default)]
    pub tunnel: bool,
    /// Served only on `gate_listen` (git-gate's way to its upstreams' ssh
    /// ports); the agent's listener never knows the route.
    #[serde(default, skip_serializing_if = "is_false")]
    pub gate_only: bool,
    #[serde(default)]
    pub upgrade: bool,
    /// A route to the forge of a git remote: read methods and git's
    /// upload-pack (clone, fetch) only, unless `allow_writes`; git's
    /// receive-pack (a push around git-gate) never. See egress's `forge` module.
    #[serde(default, skip_serializing_if = "is_false")]
    pub forge: bool,
    /// On a `forge` route: the listed methods (writes too) on the listed paths.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_writes: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dlp: Option<RouteDlpConfig>,
}

fn default_ports() -> Vec<u16> {
    vec![443, 80]
}

/// `auth = { scheme = "Bearer", token_ref = "GH_TOKEN" }`: egress only uses its presence to hand
/// the request to cred-proxy; the token itself never reaches egress.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    pub scheme: crate::cred_proxy::SchemeName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_ref: Option<String>,
    /// Header template / token file are cred-proxy matters; accepted so one rendering fits both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
}

/// A host pattern: lower-case, no trailing dot, at least two labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    Exact(String),
    /// `*.example.com` stored as `example.com`: matches `a.example.com`, `a.b.example.com`, never
    /// `example.com` itself.
    Suffix(String),
}

impl HostPattern {
    /// `host` must already be normalised (lower-case, no trailing dot, brackets removed).
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Suffix(s) => {
                host.len() > s.len() + 1
                    && host.ends_with(s.as_str())
                    && host.as_bytes()[host.len() - s.len() - 1] == b'.'
            }
        }
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Suffix(s) => write!(f, "*.{s}"),
        }
    }
}

/// Whether a route goes to the forge of a git remote, and what it may do there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forge {
    /// Not a forge route: methods and paths alone decide.
    NotForge,
    /// `forge = true`: read methods and git's upload-pack POST (clone, fetch).
    ReadOnly,
    /// `forge = true`, `allow_writes = true`: the route's listed methods.
    AllowWrites,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteKind {
    /// Intercepted (or plain HTTP) with request-level checks.
    Http {
        /// Empty = any method. Upper-case.
        methods: BTreeSet<String>,
        /// Empty = any path. Each is a clean path prefix (see [`crate::path`]),
        /// matched on a segment boundary.
        paths: Vec<String>,
        upgrade: bool,
        /// A git remote's forge: read-only unless it allows writes; never a push.
        forge: Forge,
        /// `None` = DLP off for this route.
        dlp: Option<RouteDlp>,
        /// Hand the request to cred-proxy.
        auth: bool,
        placeholder: Option<String>,
    },
    /// Raw CONNECT tunnel: no interception, no DLP.
    Tunnel,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub id: String,
    pub host: HostPattern,
    pub ports: BTreeSet<u16>,
    pub kind: RouteKind,
}

impl Route {
    pub fn is_tunnel(&self) -> bool {
        matches!(self.kind, RouteKind::Tunnel)
    }
}

/// Normalises a host as it appears in a request: lower-case, trailing dot removed, IPv6 brackets
/// removed. Returns `None` for something that is not a plausible host.
pub fn normalize_host(host: &str) -> Option<String> {
    let h = host.trim();
    let h = h
        .strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(h);
    let h = h.strip_suffix('.').unwrap_or(h);
    if h.is_empty() || h.len() > 253 {
        return None;
    }
    if h.bytes()
        .any(|b| b.is_ascii_whitespace() || b.is_ascii_control() || b == b'/' || b == b'@')
    {
        return None;
    }
    Some(h.to_ascii_lowercase())
}

pub(super) fn valid_dns_name(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

fn parse_host_pattern(route: &str, raw: &str) -> Result<HostPattern, Error> {
    let bad = |why: &str| Error::EgressRoute {
        route: route.to_string(),
        message: format!("host {raw:?}: {why}"),
    };
    let (wild, rest) = match raw.strip_prefix("*.") {
        Some(r) => (true, r),
        None => (false, raw),
    };
    let h = normalize_host(rest).ok_or_else(|| bad("not a host name"))?;
    if let Ok(ip) = h.parse::<IpAddr>() {
        if wild {
            return Err(bad("a wildcard cannot precede an IP address"));
        }
        return Ok(HostPattern::Exact(ip.to_string()));
    }
    if !valid_dns_name(&h) {
        return Err(bad("not a valid DNS name (letters, digits, '-' and '.' only; a wildcard only as a leading '*.')"));
    }
    if !h.contains('.') {
        // Single-label names are sidecars or local hosts: never routes.
        return Err(bad("single-label names are never routes"));
    }
    Ok(if wild {
        HostPattern::Suffix(h)
    } else {
        HostPattern::Exact(h)
    })
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Route ids and placeholders seen so far: both must be unique across the file.
#[derive(Default)]
struct Seen {
    ids: HashSet<String>,
    /// placeholder → the route that claimed it.
    placeholders: HashMap<String, String>,
}

/// Every `[[route]]`, in file order: the agent's routes, and apart from them the `gate_only`
/// tunnels of git-gate's listener.
pub(super) fn validate_routes(
    c: &EgressConfig,
    gate_listen: bool,
    cred_proxy: bool,
) -> Result<(Vec<Route>, Vec<Route>), Error> {
    let mut seen = Seen::default();
    let mut routes = Vec::with_capacity(c.routes.len());
    let mut gate_routes = Vec::new();
    for r in &c.routes {
        let route = validate_route(c, r, gate_listen, cred_proxy, &mut seen)?;
        if r.gate_only {
            gate_routes.push(route);
        } else {
            routes.push(route);
        }
    }
    Ok((routes, gate_routes))
}

fn validate_route(
    c: &EgressConfig,
    r: &RouteConfig,
    gate_listen: bool,
    cred_proxy: bool,
    seen: &mut Seen,
) -> Result<Route, Error> {
    let rid = r.id.as_str();
    let err = |message: String| route_error(rid, message);
    check_route_id(rid, &mut seen.ids)?;
    let host = parse_host_pattern(rid, &r.host)?;
    if r.ports.is_empty() {
        return Err(err("ports must not be empty".into()));
    }
    if r.ports.contains(&0) {
        return Err(err("port 0 is not a port".into()));
    }
    let ports: BTreeSet<u16> = r.ports.iter().copied().collect();
    if r.gate_only && !r.tunnel {
        return Err(err(
            "gate_only applies to tunnel routes only (git-gate's upstream ssh ports)".into(),
        ));
    }
    if r.gate_only && !gate_listen {
        return Err(err(
            "a gate_only route needs the top-level gate_listen address".into(),
        ));
    }
    let kind = if r.tunnel {
        tunnel_kind(r, &host)?
    } else {
        http_kind(c, r, &host, cred_proxy, &mut seen.placeholders)?
    };
    Ok(Route {
        id: rid.to_string(),
        host,
        ports,
        kind,
    })
}

pub(super) fn route_error(route: &str, message: String) -> Error {
    Error::EgressRoute {
        route: route.to_string(),
        message,
    }
}

fn check_route_id(rid: &str, ids: &mut HashSet<String>) -> Result<(), Error> {
    if rid.is_empty()
        || rid.len() > 128
        || !rid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
    {
        return Err(Error::EgressRoute {
            route: rid.to_string(),
            message: "route ids are 1-128 characters of letters, digits, '-', '_', '.', ':'".into(),
        });
    }
    if !ids.insert(rid.to_string()) {
        return Err(route_error(rid, "duplicate route id".into()));
    }
    Ok(())
}

/// A tunnel is never inspected, so every key that would need inspection is refused rather
/// than silently ignored.
fn tunnel_kind(r: &RouteConfig, host: &HostPattern) -> Result<RouteKind, Error> {
    let err = |message: String| route_error(&r.id, message);
    if matches!(host, HostPattern::Suffix(_)) {
        return Err(err(
            "a tunnel route needs an exact host, not a wildcard".into()
        ));
    }
    if r.auth.is_some() {
        return Err(err(
            "a tunnel route cannot carry auth (nothing is intercepted)".into(),
        ));
    }
    if !r.methods.is_empty() || !r.paths.is_empty() || r.upgrade || r.placeholder.is_some() {
        return Err(err(
            "methods, paths, upgrade and placeholder do not apply to a tunnel route".into(),
        ));
    }
    if r.forge || r.allow_writes {
        return Err(err(
            "forge and allow_writes do not apply to a tunnel route (nothing is inspected, so a forge could be written to and pushed to around git-gate)"
                .into(),
        ));
    }
    if r.dlp
        .as_ref()
        .is_some_and(|d| d.outbound_detectors != Detectors::Enabled(false))
    {
        return Err(err(
            "a tunnel route is not inspected: dlp must be absent or outbound_detectors = false"
                .into(),
        ));
    }
    Ok(RouteKind::Tunnel)
}

fn http_kind(
    c: &EgressConfig,
    r: &RouteConfig,
    host: &HostPattern,
    cred_proxy: bool,
    placeholders: &mut HashMap<String, String>,
) -> Result<RouteKind, Error> {
    let rid = r.id.as_str();
    let err = |message: String| route_error(rid, message);
    let methods = route_methods(r)?;
    for p in &r.paths {
        if let Err(why) = crate::path::check_prefix(p) {
            return Err(err(format!("path prefix {p:?}: {why}")));
        }
    }
    let forge = forge_access(r, &methods)?;
    if r.auth.is_some() {
        if matches!(host, HostPattern::Suffix(_)) {
            return Err(err(
                "an auth route needs an exact host, not a wildcard".into()
            ));
        }
        if !cred_proxy {
            return Err(err(
                "a route with auth needs the top-level cred_proxy address".into(),
            ));
        }
    }
    if let Some(p) = &r.placeholder {
        if p.len() < 8 {
            return Err(err("placeholder must be at least 8 characters".into()));
        }
        if let Some(other) = placeholders.insert(p.clone(), rid.to_string()) {
            return Err(err(format!("placeholder is also used by route {other:?}")));
        }
    }
    let dlp = route_dlp(r, c.holds_dir.is_some())?;
    Ok(RouteKind::Http {
        methods,
        paths: r.paths.clone(),
        upgrade: r.upgrade,
        forge,
        dlp,
        auth: r.auth.is_some(),
        placeholder: r.placeholder.clone(),
    })
}

/// Upper-cased; CONNECT is refused because tunnels are routes of their own.
fn route_methods(r: &RouteConfig) -> Result<BTreeSet<String>, Error> {
    let err = |message: String| route_error(&r.id, message);
    let mut methods = BTreeSet::new();
    for m in &r.methods {
        let up = m.to_ascii_uppercase();
        if !is_token(&up) {
            return Err(err(format!("{m:?} is not an HTTP method")));
        }
        if up == "CONNECT" {
            return Err(err("CONNECT is not a route method".into()));
        }
        methods.insert(up);
    }
    Ok(methods)
}

/// Writes to a forge must be spelled out (methods and paths) so `allow_writes` never opens a
/// whole forge.
fn forge_access(r: &RouteConfig, methods: &BTreeSet<String>) -> Result<Forge, Error> {
    let err = |message: String| route_error(&r.id, message);
    Ok(match (r.forge, r.allow_writes) {
        (false, false) => Forge::NotForge,
        (false, true) => {
            return Err(err(
                "allow_writes applies to forge routes only (forge = true)".into(),
            ))
        }
        (true, false) => Forge::ReadOnly,
        (true, true) => {
            if methods.is_empty() {
                return Err(err(
                    "allow_writes on a forge route needs its methods listed".into(),
                ));
            }
            if r.paths.is_empty() || r.paths.iter().any(|p| p == "/") {
                return Err(err(
                    "allow_writes on a forge route needs its paths listed (not \"/\")".into(),
                ));
            }
            Forge::AllowWrites
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns() {
        let p = parse_host_pattern("r", "*.Example.COM.").unwrap();
        assert!(p.matches("a.example.com"));
        assert!(p.matches("a.b.example.com"));
        assert!(!p.matches("example.com"));
        assert!(!p.matches("aexample.com"));
        let e = parse_host_pattern("r", "API.example.com").unwrap();
        assert!(e.matches("api.example.com"));
        assert!(!e.matches("x.api.example.com"));
        assert_eq!(
            parse_host_pattern("r", "[::1]").unwrap(),
            HostPattern::Exact("::1".into())
        );
    }
}
