//! Egress configuration: the TOML file the orchestrator renders ([`EgressConfig`] and friends,
//! Serialize + Deserialize, unknown keys rejected) and the validated form the proxy runs on
//! ([`Config`]), whose types cannot hold an invalid route, port, CIDR or action.
//!
//! ```toml
//! listen = "0.0.0.0:3128"            # default
//! gate_listen = "10.213.0.50:3128"   # optional: git-gate's own listener (gate_only routes)
//! bottle_id = "b-1234"               # written into every audit line
//! ca_cert = "/config/ca.pem"
//! ca_key = "/config/ca.key"
//! audit_log = "-"                    # a path, or "-" for stdout (default)
//! audit_max_bytes = 8388608          # a file's size before it is rotated (default 8 MiB)
//! audit_keep = 3                     # rotated files kept: audit_log.1 (newest) .. .3 (default 3)
//! upstream_ca = "/config/upstream-ca.pem"   # optional extra roots for upstream TLS
//! ssrf_allow_cidrs = ["10.88.0.0/24"]
//! cred_proxy = "172.30.0.3:9099"     # required when a route has `auth`
//! holds_dir = "/holds"               # required when a route uses outbound_on_match = "supervise"
//! hold_timeout_secs = 300            # optional
//! supervise = false                  # true: refusals name supervise's request_egress_route
//!
//! [dlp]
//! rules = "builtin"                  # or a gitleaks-format TOML file
//! max_body_bytes = 1048576          # scan window: bodies up to this (+256 KiB) are scanned whole
//!                                    # before they leave, longer ones as they stream
//! known_secrets_file = "/config/known-secrets"
//! canary = "bb-canary-..."
//!
//! [[route]]
//! id = "github-api"
//! host = "api.github.com"            # exact, or "*.example.com"
//! ports = [443]                      # default [443, 80]
//! methods = ["GET", "POST"]          # default: any
//! paths = ["/repos/me/app"]          # prefixes, on a segment boundary; default: any
//! auth = { scheme = "Bearer", token_ref = "GH_TOKEN" }
//! placeholder = "bb-placeholder-github"
//! tunnel = false
//! gate_only = false                  # true: served on gate_listen only, never to the agent
//! upgrade = false
//! forge = false                      # true: a git remote's forge: read-only, clone/fetch, never a push
//! allow_writes = false               # on a forge route: the listed methods may write
//! dlp = { outbound_detectors = ["token_patterns", "known_secrets"], outbound_on_match = "block", opaque_bodies = false }
//!
//! [[resolve]]
//! host = "api.example.test"
//! port = 443
//! addr = "127.0.0.1"
//! ```

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Default listen address of the proxy.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:3128";
/// Default config path inside the container.
pub const DEFAULT_CONFIG_PATH: &str = "/config/egress.toml";
/// Default bound on the body egress buffers to scan.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;
/// Default time a supervised request waits for the operator.
pub const DEFAULT_HOLD_TIMEOUT_SECS: u64 = 300;

// ---------------------------------------------------------------------------------------------
// File form (what the orchestrator renders).
// ---------------------------------------------------------------------------------------------

/// The egress TOML file as written on disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EgressConfig {
    #[serde(default = "default_listen")]
    pub listen: String,
    /// A second listener, on an address only git-gate reaches, that serves the
    /// `gate_only` routes and nothing else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate_listen: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bottle_id: Option<String>,
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    #[serde(default = "default_audit_log")]
    pub audit_log: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_max_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_keep: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_ca: Option<PathBuf>,
    #[serde(default)]
    pub ssrf_allow_cidrs: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cred_proxy: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holds_dir: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_timeout_secs: Option<u64>,
    /// The bottle runs supervise-mcp: refusals tell the agent to ask there.
    #[serde(default, skip_serializing_if = "is_false")]
    pub supervise: bool,
    #[serde(default)]
    pub dlp: DlpConfig,
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
    #[serde(default, rename = "resolve")]
    pub resolves: Vec<ResolveConfig>,
}

fn default_listen() -> String {
    DEFAULT_LISTEN.to_string()
}
fn default_audit_log() -> String {
    "-".to_string()
}

/// `[dlp]`: the rule set and secrets every DLP route scans for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlpConfig {
    /// `"builtin"` or the path of a gitleaks-format TOML file.
    #[serde(default = "default_rules")]
    pub rules: String,
    /// Decoded bytes of a request body scanned per window (at least 256 KiB is used). A body
    /// up to this size plus the 256 KiB overlap is scanned whole before the request leaves; a
    /// longer one is scanned as it streams. Not a size limit: bodies of any size pass.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_secrets_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<String>,
}

impl Default for DlpConfig {
    fn default() -> Self {
        DlpConfig {
            rules: default_rules(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            known_secrets_file: None,
            canary: None,
        }
    }
}

fn default_rules() -> String {
    "builtin".to_string()
}
fn default_max_body() -> u64 {
    DEFAULT_MAX_BODY_BYTES
}

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

/// A route's `dlp = { ... }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteDlpConfig {
    #[serde(default = "default_detectors")]
    pub outbound_detectors: Detectors,
    #[serde(default)]
    pub outbound_on_match: OnMatch,
    /// Reserved: response scanning is not supported yet; only `false` is accepted.
    #[serde(default, skip_serializing_if = "is_false")]
    pub inbound_detectors: bool,
    /// Forward bodies that cannot be scanned (binary, archives, unknown content codings).
    #[serde(default, skip_serializing_if = "is_false")]
    pub opaque_bodies: bool,
}

impl Default for RouteDlpConfig {
    fn default() -> Self {
        RouteDlpConfig {
            outbound_detectors: default_detectors(),
            outbound_on_match: OnMatch::Block,
            inbound_detectors: false,
            opaque_bodies: false,
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn default_detectors() -> Detectors {
    Detectors::List(vec![Detector::TokenPatterns, Detector::KnownSecrets])
}

/// `outbound_detectors = ["token_patterns", "known_secrets"]` or `false`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Detectors {
    Enabled(bool),
    List(Vec<Detector>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Detector {
    /// The scanner's rules (builtin or the gitleaks file).
    TokenPatterns,
    /// The bottle's known secrets and the canary.
    KnownSecrets,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnMatch {
    #[default]
    Block,
    Redact,
    Supervise,
}

impl OnMatch {
    pub fn as_str(self) -> &'static str {
        match self {
            OnMatch::Block => "block",
            OnMatch::Redact => "redact",
            OnMatch::Supervise => "supervise",
        }
    }
}

impl Detector {
    /// Every detector, in the order the manifest's default lists them.
    pub const ALL: [Detector; 2] = [Detector::TokenPatterns, Detector::KnownSecrets];

    pub fn as_str(self) -> &'static str {
        match self {
            Detector::TokenPatterns => "token_patterns",
            Detector::KnownSecrets => "known_secrets",
        }
    }

    /// The detector of this name, as the TOML and the manifest spell it.
    pub fn parse(name: &str) -> Option<Detector> {
        Detector::ALL.into_iter().find(|d| d.as_str() == name)
    }
}

/// One `[[resolve]]`: like curl's `--resolve host:port:addr`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveConfig {
    pub host: String,
    pub port: u16,
    pub addr: IpAddr,
}

impl EgressConfig {
    /// Parses TOML; `origin` names the file in errors.
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<EgressConfig, Error> {
        toml::from_str(text).map_err(|e| Error::EgressParse {
            path: origin.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Renders TOML (what the orchestrator writes, what `--check-config` prints).
    pub fn to_toml_string(&self) -> String {
        toml::to_string_pretty(self).expect("egress config always serialises")
    }

    /// Reads a file without validating it.
    pub fn read(path: &Path) -> Result<EgressConfig, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        EgressConfig::from_toml_str(&text, path)
    }

    /// Checks every rule and builds the form the proxy runs on. Does not touch the filesystem.
    pub fn validate(&self) -> Result<Config, Error> {
        validate(self)
    }
}

// ---------------------------------------------------------------------------------------------
// Validated form.
// ---------------------------------------------------------------------------------------------

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    /// git-gate's listener: serves `gate_routes` only.
    pub gate_listen: Option<SocketAddr>,
    pub bottle_id: String,
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub audit_log: AuditTarget,
    pub upstream_ca: Option<PathBuf>,
    pub ssrf_allow: Vec<IpNet>,
    pub cred_proxy: Option<SocketAddr>,
    pub holds_dir: Option<PathBuf>,
    pub hold_timeout: Duration,
    /// Refusals point the agent at supervise's `request_egress_route`.
    pub supervise: bool,
    pub dlp: Dlp,
    /// Routes of the agent's listener.
    pub routes: Vec<Route>,
    /// Tunnels served on `gate_listen` only (git-gate's upstream ssh ports).
    /// Kept apart so no lookup on the agent's side can ever find one.
    pub gate_routes: Vec<Route>,
    /// (lower-case host, port) → addresses.
    pub resolves: HashMap<(String, u16), Vec<IpAddr>>,
    /// The file form it was built from (printed by `--check-config`).
    pub source: EgressConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditTarget {
    Stdout,
    /// A file rotated at `max_bytes` (to `<path>.1`, shifting older ones up
    /// to `<path>.<keep>`): at most `max_bytes × (keep + 1)` on disk.
    File {
        path: PathBuf,
        max_bytes: u64,
        keep: u32,
    },
}

/// Rotation defaults: 4 files of 8 MiB.
pub const AUDIT_MAX_BYTES: u64 = 8 << 20;
pub const AUDIT_KEEP: u32 = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleSource {
    Builtin,
    Gitleaks(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Dlp {
    pub rules: RuleSource,
    pub max_body_bytes: usize,
    pub known_secrets_file: Option<PathBuf>,
    pub canary: Option<String>,
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

/// What a route does with DLP findings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteDlp {
    pub token_patterns: bool,
    pub known_secrets: bool,
    pub on_match: OnMatch,
    pub opaque_bodies: bool,
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

fn valid_dns_name(h: &str) -> bool {
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

fn validate(c: &EgressConfig) -> Result<Config, Error> {
    let listen: SocketAddr = c.listen.parse().map_err(|_| Error::EgressConfig {
        key: "listen".into(),
        message: format!("{:?} is not an ip:port address", c.listen),
    })?;
    let gate_listen = match &c.gate_listen {
        None => None,
        Some(g) => {
            let addr: SocketAddr = g.parse().map_err(|_| Error::EgressConfig {
                key: "gate_listen".into(),
                message: format!("{g:?} is not an ip:port address"),
            })?;
            let clash = addr == listen
                || (addr.port() == listen.port()
                    && (addr.ip().is_unspecified() || listen.ip().is_unspecified()));
            if clash {
                return Err(Error::EgressConfig {
                    key: "gate_listen".into(),
                    message: format!(
                        "{addr} overlaps listen {listen}: the gate's listener needs an address \
                         of its own (the agent must never reach the gate's tunnels)"
                    ),
                });
            }
            Some(addr)
        }
    };
    let bottle_id = c.bottle_id.clone().unwrap_or_default();
    if bottle_id.len() > 128 || bottle_id.chars().any(|ch| ch.is_control()) {
        return Err(Error::EgressConfig {
            key: "bottle_id".into(),
            message: "at most 128 printable characters".into(),
        });
    }
    let max_bytes = c.audit_max_bytes.unwrap_or(AUDIT_MAX_BYTES);
    if max_bytes < 4096 {
        return Err(Error::EgressConfig {
            key: "audit_max_bytes".into(),
            message: format!("{max_bytes} is below 4096: one record would not fit"),
        });
    }
    let keep = c.audit_keep.unwrap_or(AUDIT_KEEP);
    if !(1..=100).contains(&keep) {
        return Err(Error::EgressConfig {
            key: "audit_keep".into(),
            message: format!("{keep} rotated files: between 1 and 100"),
        });
    }
    let audit_log = match c.audit_log.as_str() {
        "-" | "" => AuditTarget::Stdout,
        p => AuditTarget::File {
            path: PathBuf::from(p),
            max_bytes,
            keep,
        },
    };
    let mut ssrf_allow = Vec::new();
    for s in &c.ssrf_allow_cidrs {
        let net = s
            .parse::<IpNet>()
            .or_else(|_| s.parse::<IpAddr>().map(IpNet::from))
            .map_err(|_| Error::EgressConfig {
                key: "ssrf_allow_cidrs".into(),
                message: format!("{s:?} is not a CIDR like 10.0.0.0/8 or fd00::/8"),
            })?;
        ssrf_allow.push(net.trunc());
    }
    let cred_proxy = match &c.cred_proxy {
        None => None,
        Some(s) => Some(s.parse::<SocketAddr>().map_err(|_| Error::EgressConfig {
            key: "cred_proxy".into(),
            message: format!("{s:?} is not an ip:port address (no names: egress resolves nothing it does not route)"),
        })?),
    };
    let hold_timeout =
        Duration::from_secs(c.hold_timeout_secs.unwrap_or(DEFAULT_HOLD_TIMEOUT_SECS));
    if hold_timeout.is_zero() {
        return Err(Error::EgressConfig {
            key: "hold_timeout_secs".into(),
            message: "must be at least 1".into(),
        });
    }
    let rules = match c.dlp.rules.as_str() {
        "builtin" | "" => RuleSource::Builtin,
        p => RuleSource::Gitleaks(PathBuf::from(p)),
    };
    if c.dlp.max_body_bytes == 0 || c.dlp.max_body_bytes > 256 * 1024 * 1024 {
        return Err(Error::EgressConfig {
            key: "dlp.max_body_bytes".into(),
            message: "must be between 1 and 268435456".into(),
        });
    }
    if let Some(canary) = &c.dlp.canary {
        if canary.len() < 8 {
            return Err(Error::EgressConfig {
                key: "dlp.canary".into(),
                message: "the canary must be at least 8 characters".into(),
            });
        }
    }
    let dlp = Dlp {
        rules,
        max_body_bytes: c.dlp.max_body_bytes as usize,
        known_secrets_file: c.dlp.known_secrets_file.clone(),
        canary: c.dlp.canary.clone(),
    };

    let mut ids = HashSet::new();
    let mut placeholders: HashMap<String, String> = HashMap::new();
    let mut routes = Vec::with_capacity(c.routes.len());
    let mut gate_routes = Vec::new();
    for r in &c.routes {
        let rid = r.id.as_str();
        let err = |message: String| Error::EgressRoute {
            route: rid.to_string(),
            message,
        };
        if rid.is_empty()
            || rid.len() > 128
            || !rid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        {
            return Err(Error::EgressRoute {
                route: rid.to_string(),
                message: "route ids are 1-128 characters of letters, digits, '-', '_', '.', ':'"
                    .into(),
            });
        }
        if !ids.insert(rid.to_string()) {
            return Err(err("duplicate route id".into()));
        }
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
        if r.gate_only && gate_listen.is_none() {
            return Err(err(
                "a gate_only route needs the top-level gate_listen address".into(),
            ));
        }
        let kind = if r.tunnel {
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
            if !r.methods.is_empty() || !r.paths.is_empty() || r.upgrade || r.placeholder.is_some()
            {
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
            RouteKind::Tunnel
        } else {
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
            for p in &r.paths {
                if let Err(why) = crate::path::check_prefix(p) {
                    return Err(err(format!("path prefix {p:?}: {why}")));
                }
            }
            let forge = match (r.forge, r.allow_writes) {
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
                            "allow_writes on a forge route needs its paths listed (not \"/\")"
                                .into(),
                        ));
                    }
                    Forge::AllowWrites
                }
            };
            if r.auth.is_some() {
                if matches!(host, HostPattern::Suffix(_)) {
                    return Err(err(
                        "an auth route needs an exact host, not a wildcard".into()
                    ));
                }
                if cred_proxy.is_none() {
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
            let dlp_cfg = r.dlp.clone().unwrap_or_default();
            if dlp_cfg.inbound_detectors {
                return Err(err("dlp.inbound_detectors is not supported yet".into()));
            }
            let (token_patterns, known_secrets) = match &dlp_cfg.outbound_detectors {
                Detectors::Enabled(true) => (true, true),
                Detectors::Enabled(false) => (false, false),
                Detectors::List(l) => (
                    l.contains(&Detector::TokenPatterns),
                    l.contains(&Detector::KnownSecrets),
                ),
            };
            if dlp_cfg.outbound_on_match == OnMatch::Supervise && c.holds_dir.is_none() {
                return Err(err(
                    "outbound_on_match = \"supervise\" needs the top-level holds_dir".into(),
                ));
            }
            let dlp = (token_patterns || known_secrets).then_some(RouteDlp {
                token_patterns,
                known_secrets,
                on_match: dlp_cfg.outbound_on_match,
                opaque_bodies: dlp_cfg.opaque_bodies,
            });
            RouteKind::Http {
                methods,
                paths: r.paths.clone(),
                upgrade: r.upgrade,
                forge,
                dlp,
                auth: r.auth.is_some(),
                placeholder: r.placeholder.clone(),
            }
        };
        let route = Route {
            id: rid.to_string(),
            host,
            ports,
            kind,
        };
        if r.gate_only {
            gate_routes.push(route);
        } else {
            routes.push(route);
        }
    }

    let mut resolves: HashMap<(String, u16), Vec<IpAddr>> = HashMap::new();
    for r in &c.resolves {
        let h = normalize_host(&r.host)
            .filter(|h| valid_dns_name(h))
            .ok_or_else(|| Error::EgressConfig {
                key: "resolve.host".into(),
                message: format!("{:?} is not a host name", r.host),
            })?;
        if r.port == 0 {
            return Err(Error::EgressConfig {
                key: "resolve.port".into(),
                message: format!("port 0 for {h}"),
            });
        }
        resolves.entry((h, r.port)).or_default().push(r.addr);
    }

    Ok(Config {
        listen,
        gate_listen,
        bottle_id,
        ca_cert: c.ca_cert.clone(),
        ca_key: c.ca_key.clone(),
        audit_log,
        upstream_ca: c.upstream_ca.clone(),
        ssrf_allow,
        cred_proxy,
        holds_dir: c.holds_dir.clone(),
        hold_timeout,
        supervise: c.supervise,
        dlp,
        routes,
        gate_routes,
        resolves,
        source: c.clone(),
    })
}

impl Config {
    /// Reads and validates a file.
    pub fn load(path: &Path) -> Result<Config, Error> {
        EgressConfig::read(path)?.validate()
    }

    /// The first route matching host and port, if any. `host` is normalised.
    pub fn route_for(&self, host: &str, port: u16) -> Option<&Route> {
        self.routes
            .iter()
            .find(|r| r.ports.contains(&port) && r.host.matches(host))
    }

    /// Every route matching host and port (several routes may split one host by path/method).
    pub fn routes_for<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> impl Iterator<Item = &'a Route> + 'a {
        self.routes
            .iter()
            .filter(move |r| r.ports.contains(&port) && r.host.matches(host))
    }

    /// The gate listener's tunnel for host and port, if any. `host` is normalised.
    pub fn gate_route_for(&self, host: &str, port: u16) -> Option<&Route> {
        self.gate_routes
            .iter()
            .find(|r| r.ports.contains(&port) && r.host.matches(host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<Config, Error> {
        EgressConfig::from_toml_str(t, Path::new("t.toml"))?.validate()
    }

    const BASE: &str = "ca_cert = \"/c.pem\"\nca_key = \"/k.pem\"\n";

    #[test]
    fn full_example_roundtrips() {
        let t = format!(
            "{BASE}listen = \"127.0.0.1:3129\"\nbottle_id = \"b1\"\ncred_proxy = \"10.0.0.2:9099\"\nholds_dir = \"/holds\"\nssrf_allow_cidrs = [\"127.0.0.0/8\"]\n\
             [dlp]\nrules = \"builtin\"\nmax_body_bytes = 1000\ncanary = \"canary-123456\"\n\
             [[route]]\nid = \"gh\"\nhost = \"api.github.com\"\nports = [443]\nmethods = [\"get\"]\npaths = [\"/repos/\"]\n\
             auth = {{ scheme = \"Bearer\", token_ref = \"GH_TOKEN\" }}\nplaceholder = \"bb-placeholder-gh\"\n\
             dlp = {{ outbound_detectors = [\"token_patterns\"], outbound_on_match = \"supervise\" }}\n\
             [[route]]\nid = \"any\"\nhost = \"*.example.com\"\n\
             [[route]]\nid = \"pin\"\nhost = \"pinned.example.com\"\ntunnel = true\nports = [22]\n\
             [[resolve]]\nhost = \"api.example.test\"\nport = 443\naddr = \"127.0.0.1\"\n"
        );
        let file = EgressConfig::from_toml_str(&t, Path::new("t")).unwrap();
        let c = file.validate().unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:3129");
        assert_eq!(c.routes.len(), 3);
        assert_eq!(
            c.routes[1].ports.iter().copied().collect::<Vec<_>>(),
            vec![80, 443]
        );
        match &c.routes[0].kind {
            RouteKind::Http {
                methods, dlp, auth, ..
            } => {
                assert!(methods.contains("GET"));
                assert!(*auth);
                let d = dlp.as_ref().unwrap();
                assert!(d.token_patterns && !d.known_secrets);
                assert_eq!(d.on_match, OnMatch::Supervise);
            }
            RouteKind::Tunnel => panic!("not a tunnel"),
        }
        assert!(c.routes[2].is_tunnel());
        let again = EgressConfig::from_toml_str(&file.to_toml_string(), Path::new("t")).unwrap();
        assert_eq!(again, file);
        assert_eq!(
            c.resolves[&("api.example.test".to_string(), 443)],
            vec!["127.0.0.1".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn defaults() {
        let c = parse(BASE).unwrap();
        assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(c.audit_log, AuditTarget::Stdout);
        assert_eq!(c.dlp.max_body_bytes as u64, DEFAULT_MAX_BODY_BYTES);
    }

    #[test]
    fn rejects_bad_configs() {
        let cases = [
            "nope = 1\n",
            "listen = \"localhost:1\"\n",
            "ssrf_allow_cidrs = [\"10.0.0.0/33\"]\n",
            "[[route]]\nid = \"a\"\nhost = \"localhost\"\n",
            "[[route]]\nid = \"a\"\nhost = \"a.b\"\nbogus = true\n",
            "[[route]]\nid = \"a\"\nhost = \"a.b\"\n[[route]]\nid = \"a\"\nhost = \"c.d\"\n",
            "[[route]]\nid = \"a\"\nhost = \"*.b.c\"\ntunnel = true\n",
            "[[route]]\nid = \"a\"\nhost = \"a.b\"\nauth = { scheme = \"Bearer\" }\n",
            "cred_proxy = \"1.2.3.4:9099\"\n[[route]]\nid = \"a\"\nhost = \"*.a.b\"\nauth = { scheme = \"Bearer\" }\n",
            "[[route]]\nid = \"a\"\nhost = \"a.b\"\nports = []\n",
            "[[route]]\nid = \"a\"\nhost = \"a.b\"\npaths = [\"x\"]\n",
            "[[route]]\nid = \"a\"\nhost = \"a.b\"\ndlp = { outbound_on_match = \"supervise\" }\n",
            "[[route]]\nid = \"a\"\nhost = \"a.b\"\ndlp = { outbound_on_match = \"maybe\" }\n",
            "[[route]]\nid = \"a\"\nhost = \"a.b\"\ndlp = { inbound_detectors = true }\n",
            "[[route]]\nid = \"a b\"\nhost = \"a.b\"\n",
            "[[route]]\nid = \"a\"\nhost = \"a*.b.c\"\n",
            "[dlp]\nmax_body_bytes = 0\n",
            "[[route]]\nid = \"g\"\nhost = \"git.example.com\"\nports = [22]\ntunnel = true\ngate_only = true\n",
            "gate_listen = \"10.0.0.5:3128\"\n[[route]]\nid = \"g\"\nhost = \"git.example.com\"\ngate_only = true\n",
            "gate_listen = \"10.0.0.5:3128\"\n",
            "listen = \"10.0.0.5:3128\"\ngate_listen = \"10.0.0.5:3128\"\n",
            "gate_listen = \"git-gate:3128\"\n",
            "[[route]]\nid = \"a\"\nhost = \"a.b\"\nallow_writes = true\nmethods = [\"POST\"]\npaths = [\"/x\"]\n",
            "[[route]]\nid = \"a\"\nhost = \"a.b\"\nforge = true\nallow_writes = true\npaths = [\"/x\"]\n",
            "[[route]]\nid = \"a\"\nhost = \"a.b\"\nforge = true\nallow_writes = true\nmethods = [\"POST\"]\n",
            "[[route]]\nid = \"a\"\nhost = \"a.b\"\nforge = true\nallow_writes = true\nmethods = [\"POST\"]\npaths = [\"/\"]\n",
            "[[route]]\nid = \"a\"\nhost = \"a.b\"\nports = [22]\ntunnel = true\nforge = true\n",
        ];
        for case in cases {
            let t = format!("{BASE}{case}");
            assert!(parse(&t).is_err(), "accepted: {case}");
        }
    }

    /// An operator's bad prefix is a config error naming the route and the value.
    #[test]
    fn bad_path_prefixes_name_the_route_and_the_value() {
        for (bad, why) in [
            ("/repos/../admin", "dot segment"),
            ("/repos//me", "empty segment"),
            ("/repos/me;v=1", "matrix parameter"),
            ("/repos%2Fme", "encoded '/'"),
            ("/repos\\me", "backslash"),
            ("/search?q=x", "query"),
            ("repos/me", "start with '/'"),
        ] {
            let t = format!(
                "{BASE}[[route]]\nid = \"gh-api\"\nhost = \"api.github.com\"\npaths = [\"/ok\", {bad:?}]\n"
            );
            let e = parse(&t).expect_err(bad).to_string();
            assert!(e.contains("\"gh-api\""), "{e}");
            assert!(e.contains(&format!("{bad:?}")), "{e}");
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn forge_routes() {
        let c = parse(&format!(
            "{BASE}[[route]]\nid = \"gh\"\nhost = \"github.com\"\nforge = true\n\
             [[route]]\nid = \"gh-w\"\nhost = \"api.github.com\"\nforge = true\nallow_writes = true\nmethods = [\"POST\"]\npaths = [\"/repos/me/app/issues\"]\n\
             [[route]]\nid = \"other\"\nhost = \"example.com\"\n"
        ))
        .unwrap();
        let forge = |i: usize| match &c.routes[i].kind {
            RouteKind::Http { forge, .. } => *forge,
            RouteKind::Tunnel => panic!("not a tunnel"),
        };
        assert_eq!(forge(0), Forge::ReadOnly);
        assert_eq!(forge(1), Forge::AllowWrites);
        assert_eq!(forge(2), Forge::NotForge);
        // The keys round-trip and are left out when false.
        let text = c.source.to_toml_string();
        assert!(text.contains("forge = true"), "{text}");
        assert!(text.contains("allow_writes = true"), "{text}");
        assert_eq!(text.matches("forge = ").count(), 2, "{text}");
    }

    #[test]
    fn gate_only_routes_are_kept_apart_from_the_agents() {
        let c = parse(&format!(
            "{BASE}listen = \"10.0.0.2:3128\"\ngate_listen = \"10.0.1.2:3128\"\n\
             [[route]]\nid = \"git-app\"\nhost = \"git.example.com\"\nports = [22]\ntunnel = true\ngate_only = true\n\
             [[route]]\nid = \"api\"\nhost = \"api.example.com\"\n"
        ))
        .unwrap();
        assert_eq!(c.gate_listen, Some("10.0.1.2:3128".parse().unwrap()));
        assert!(c.route_for("git.example.com", 22).is_none());
        assert_eq!(c.routes_for("git.example.com", 22).count(), 0);
        assert_eq!(
            c.gate_route_for("git.example.com", 22)
                .map(|r| r.id.as_str()),
            Some("git-app")
        );
        assert!(c.gate_route_for("api.example.com", 443).is_none());
    }

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
