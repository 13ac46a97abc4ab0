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

mod dlp;
mod route;

pub use dlp::{Detector, Detectors, Dlp, DlpConfig, OnMatch, RouteDlp, RouteDlpConfig, RuleSource};
pub use route::{normalize_host, AuthConfig, Forge, HostPattern, Route, RouteConfig, RouteKind};

use std::collections::HashMap;
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

fn is_false(b: &bool) -> bool {
    !*b
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

/// Checks the top-level keys, then `[dlp]`, then every route, then `[[resolve]]`: the first
/// failure is the one reported, so this order is the order errors surface in.
fn validate(c: &EgressConfig) -> Result<Config, Error> {
    let (listen, gate_listen) = listeners(c)?;
    let bottle_id = bottle_id(c)?;
    let audit_log = audit_target(c)?;
    let ssrf_allow = ssrf_allow(c)?;
    let cred_proxy = cred_proxy(c)?;
    let hold_timeout = hold_timeout(c)?;
    let dlp = dlp::validate_dlp(&c.dlp)?;
    let (routes, gate_routes) =
        route::validate_routes(c, gate_listen.is_some(), cred_proxy.is_some())?;
    let resolves = resolves(c)?;

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

/// `listen` and the optional `gate_listen`, which must not share an address with it.
fn listeners(c: &EgressConfig) -> Result<(SocketAddr, Option<SocketAddr>), Error> {
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
    Ok((listen, gate_listen))
}

fn bottle_id(c: &EgressConfig) -> Result<String, Error> {
    let bottle_id = c.bottle_id.clone().unwrap_or_default();
    if bottle_id.len() > 128 || bottle_id.chars().any(|ch| ch.is_control()) {
        return Err(Error::EgressConfig {
            key: "bottle_id".into(),
            message: "at most 128 printable characters".into(),
        });
    }
    Ok(bottle_id)
}

/// `audit_log` with its rotation bounds, checked even when the log goes to stdout.
fn audit_target(c: &EgressConfig) -> Result<AuditTarget, Error> {
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
    Ok(match c.audit_log.as_str() {
        "-" | "" => AuditTarget::Stdout,
        p => AuditTarget::File {
            path: PathBuf::from(p),
            max_bytes,
            keep,
        },
    })
}

fn ssrf_allow(c: &EgressConfig) -> Result<Vec<IpNet>, Error> {
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
    Ok(ssrf_allow)
}

fn cred_proxy(c: &EgressConfig) -> Result<Option<SocketAddr>, Error> {
    Ok(match &c.cred_proxy {
        None => None,
        Some(s) => Some(s.parse::<SocketAddr>().map_err(|_| Error::EgressConfig {
            key: "cred_proxy".into(),
            message: format!("{s:?} is not an ip:port address (no names: egress resolves nothing it does not route)"),
        })?),
    })
}

fn hold_timeout(c: &EgressConfig) -> Result<Duration, Error> {
    let hold_timeout =
        Duration::from_secs(c.hold_timeout_secs.unwrap_or(DEFAULT_HOLD_TIMEOUT_SECS));
    if hold_timeout.is_zero() {
        return Err(Error::EgressConfig {
            key: "hold_timeout_secs".into(),
            message: "must be at least 1".into(),
        });
    }
    Ok(hold_timeout)
}

/// `[[resolve]]` entries, grouped by (host, port) so one name may pin several addresses.
fn resolves(c: &EgressConfig) -> Result<HashMap<(String, u16), Vec<IpAddr>>, Error> {
    let mut resolves: HashMap<(String, u16), Vec<IpAddr>> = HashMap::new();
    for r in &c.resolves {
        let h = normalize_host(&r.host)
            .filter(|h| route::valid_dns_name(h))
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
    Ok(resolves)
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
}
