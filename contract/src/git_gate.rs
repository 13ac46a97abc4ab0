//! The gate's configuration file (TOML), validated once at load.
//!
//! The orchestrator renders this file from a bottle manifest's `git.remotes`
//! (through these same types), so every type here serializes
//! back to the same TOML it was read from. Values that have a shape (ssh URL,
//! host key, ref and path globs, remote names) are parsed into types that
//! cannot hold an invalid value, so the rest of the gate never re-checks them.

use std::collections::BTreeSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// Default listen address: git's own port on every address of the container
/// (the container itself is only on the bottle's internal network).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9418";

/// Refs an agent may push when the manifest says nothing: its own namespace.
pub const DEFAULT_PUSH_REFS: &[&str] = &["refs/heads/agent/*"];

/// CI configuration of common forges: it runs with the repository's secrets,
/// so a change there is a way to reach them and is refused by default.
pub const DEFAULT_PROTECTED_PATHS: &[&str] = &[
    ".github/workflows/**",
    ".github/actions/**",
    ".gitlab-ci.yml",
    ".gitlab/**",
    ".circleci/**",
    "Jenkinsfile",
    ".buildkite/**",
    "azure-pipelines.yml",
    ".azure-pipelines/**",
    ".travis.yml",
    "bitbucket-pipelines.yml",
    ".drone.yml",
    ".woodpecker.yml",
    ".woodpecker/**",
    ".gitea/workflows/**",
    ".forgejo/workflows/**",
    "appveyor.yml",
    ".appveyor.yml",
    ".cirrus.yml",
    ".semaphore/**",
];

/// Default location of the config inside the gate's container.
pub const DEFAULT_CONFIG_PATH: &str = "/config/git-gate.toml";

/// The whole configuration file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawConfig")]
pub struct Config {
    /// Address `git daemon` listens on.
    pub listen: SocketAddr,
    /// Where the bare mirrors (one per remote) and the push lock files live.
    pub state_dir: PathBuf,
    /// Secret rules: the scanner's built-in set or a gitleaks-format file.
    pub rules: RulesSource,
    /// Exact values (bottle tokens, canary) refused in any pushed object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_secrets_file: Option<PathBuf>,
    /// `host:port` of egress: ssh then reaches every upstream through an HTTP
    /// CONNECT tunnel there. Absent = direct connections (standalone use).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream_proxy: Option<HostPort>,
    /// The upstream repositories served, at least one, names unique.
    pub remote: Vec<Remote>,
}

/// Deserialization shape of [`Config`]; cross-field checks happen in
/// `TryFrom` so a `Config` value always holds unique remote names.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_listen")]
    listen: SocketAddr,
    state_dir: PathBuf,
    #[serde(default)]
    rules: RulesSource,
    #[serde(default)]
    known_secrets_file: Option<PathBuf>,
    #[serde(default)]
    upstream_proxy: Option<HostPort>,
    #[serde(default)]
    remote: Vec<Remote>,
}

fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN.parse().expect("constant address")
}

impl TryFrom<RawConfig> for Config {
    type Error = String;

    fn try_from(raw: RawConfig) -> Result<Self, String> {
        if raw.remote.is_empty() {
            return Err("at least one [[remote]] is required".into());
        }
        let mut seen = BTreeSet::new();
        for r in &raw.remote {
            if !seen.insert(r.name.as_str()) {
                return Err(format!("remote name {:?} is used twice", r.name.as_str()));
            }
        }
        if !raw.state_dir.is_absolute() {
            return Err(format!(
                "state_dir must be an absolute path, got {:?}",
                raw.state_dir
            ));
        }
        Ok(Config {
            listen: raw.listen,
            state_dir: raw.state_dir,
            rules: raw.rules,
            known_secrets_file: raw.known_secrets_file,
            upstream_proxy: raw.upstream_proxy,
            remote: raw.remote,
        })
    }
}

impl Config {
    /// A config with defaults for everything optional.
    pub fn new(state_dir: PathBuf, remote: Vec<Remote>) -> Config {
        Config {
            listen: default_listen(),
            state_dir,
            rules: RulesSource::Builtin,
            known_secrets_file: None,
            upstream_proxy: None,
            remote,
        }
    }

    /// Parse and validate a config from TOML text; `origin` names it in errors.
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<Config, Error> {
        toml::from_str(text).map_err(|e| Error::GitGateConfig {
            path: origin.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Read, parse and validate the config file at `path`.
    pub fn load(path: &Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Config::from_toml_str(&text, path)
    }

    /// The config as TOML (what the orchestrator writes, what `--check-config` prints).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("config serializes")
    }

    /// The remote called `name`.
    pub fn remote(&self, name: &str) -> Option<&Remote> {
        self.remote.iter().find(|r| r.name.as_str() == name)
    }

    /// The bare mirror of `remote` under `state_dir` (what `git daemon` serves
    /// as `git://gate/<name>.git`).
    pub fn mirror_dir(&self, remote: &Remote) -> PathBuf {
        self.state_dir
            .join("repos")
            .join(format!("{}.git", remote.name.as_str()))
    }

    /// Address a local client uses to reach `listen` (`0.0.0.0` → loopback).
    pub fn connect_addr(&self) -> SocketAddr {
        let mut addr = self.listen;
        if addr.ip().is_unspecified() {
            addr.set_ip(match addr {
                SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
            });
        }
        addr
    }
}

/// Where the secret rules come from: `"builtin"` or a path to a gitleaks TOML file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum RulesSource {
    #[default]
    Builtin,
    File(PathBuf),
}

impl Serialize for RulesSource {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            RulesSource::Builtin => s.serialize_str("builtin"),
            RulesSource::File(p) => p.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for RulesSource {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s == "builtin" {
            Ok(RulesSource::Builtin)
        } else if s.is_empty() {
            Err(serde::de::Error::custom(
                "rules must be \"builtin\" or the path of a gitleaks TOML file",
            ))
        } else {
            Ok(RulesSource::File(PathBuf::from(s)))
        }
    }
}

/// One upstream repository served by the gate.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Remote {
    /// Served as `git://<gate>/<name>.git`.
    pub name: RemoteName,
    /// `ssh://[user@]host[:port]/path` of the real repository.
    pub upstream: SshUrl,
    /// The gate's private key for upstream (must be mode 0600 or stricter).
    pub identity_file: PathBuf,
    /// The one host key upstream may present (`type base64`, optional leading host pattern).
    pub known_host_key: HostKey,
    /// Refs the agent may update (globs; `*` matches across `/`).
    #[serde(default = "default_push_refs")]
    pub push_refs: Vec<RefPattern>,
    /// Paths no pushed commit may change (gitignore-style globs).
    #[serde(default = "default_protected_paths")]
    pub protected_paths: Vec<PathPattern>,
    /// Finding fingerprints the operator accepted: the scanner's
    /// `rule:hash` form or gitleaks' `commit:path:rule:line` form.
    #[serde(default)]
    pub allow_fingerprints: Vec<String>,
}

fn default_push_refs() -> Vec<RefPattern> {
    DEFAULT_PUSH_REFS
        .iter()
        .map(|p| p.parse().expect("default ref pattern"))
        .collect()
}

fn default_protected_paths() -> Vec<PathPattern> {
    DEFAULT_PROTECTED_PATHS
        .iter()
        .map(|p| p.parse().expect("default path pattern"))
        .collect()
}

impl Remote {
    /// A remote with the default push refs, protected paths and no accepted findings.
    pub fn new(
        name: RemoteName,
        upstream: SshUrl,
        identity_file: PathBuf,
        known_host_key: HostKey,
    ) -> Remote {
        Remote {
            name,
            upstream,
            identity_file,
            known_host_key,
            push_refs: default_push_refs(),
            protected_paths: default_protected_paths(),
            allow_fingerprints: Vec::new(),
        }
    }

    /// Whether the agent may update `refname`.
    pub fn push_allowed(&self, refname: &str) -> bool {
        self.push_refs.iter().any(|p| p.matches(refname))
    }

    /// The first protected pattern `path` falls under, if any.
    pub fn protected(&self, path: &str) -> Option<&PathPattern> {
        self.protected_paths.iter().find(|p| p.matches(path))
    }

    /// Whether the operator accepted a finding with one of these fingerprints.
    pub fn fingerprint_allowed(&self, fingerprints: &[&str]) -> bool {
        self.allow_fingerprints
            .iter()
            .any(|a| fingerprints.contains(&a.as_str()))
    }

    /// The known_hosts line ssh is pinned to for this remote.
    pub fn known_hosts_line(&self) -> String {
        format!(
            "{} {} {}\n",
            self.upstream.known_hosts_host(),
            self.known_host_key.key_type(),
            self.known_host_key.base64()
        )
    }
}

macro_rules! string_serde {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A remote's name: `[A-Za-z0-9._-]+`, not starting with `.` or `-`
/// (it becomes a directory and a URL path segment).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RemoteName(String);

impl RemoteName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for RemoteName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let ok = !s.is_empty()
            && s.len() <= 100
            && !s.starts_with(['.', '-'])
            && !s.ends_with(".git")
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(RemoteName(s.to_string()))
        } else {
            Err(format!(
                "remote name {s:?} must be letters, digits, '.', '_' or '-', \
                 not start with '.' or '-' and not end in \".git\""
            ))
        }
    }
}

impl fmt::Display for RemoteName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
string_serde!(RemoteName);

/// `host:port` (a name or an address; IPv6 in brackets).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    host: String,
    port: u16,
}

impl HostPort {
    pub fn host(&self) -> &str {
        &self.host
    }
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl FromStr for HostPort {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("{s:?} is not host:port");
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let host = parse_host(host).ok_or_else(bad)?;
        if port == 0 {
            return Err(bad());
        }
        Ok(HostPort { host, port })
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", bracket(&self.host), self.port)
    }
}
string_serde!(HostPort);

/// Hosts are names (letters, digits, `.`, `-`, `_`) or IP addresses; IPv6 is
/// given in brackets and stored without them. Nothing else reaches ssh's
/// argv, so a host can never be mistaken for an option.
fn parse_host(s: &str) -> Option<String> {
    if let Some(inner) = s.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
        return inner
            .parse::<std::net::Ipv6Addr>()
            .ok()
            .map(|_| inner.to_string());
    }
    let ok = !s.is_empty()
        && s.len() <= 253
        && !s.starts_with(['-', '.'])
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    ok.then(|| s.to_ascii_lowercase())
}

fn bracket(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_string()
    }
}

/// A parsed `ssh://[user@]host[:port]/path` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SshUrl {
    user: Option<String>,
    host: String,
    port: u16,
    path: String,
}

impl SshUrl {
    pub fn user(&self) -> Option<&str> {
        self.user.as_deref()
    }
    pub fn host(&self) -> &str {
        &self.host
    }
    pub fn port(&self) -> u16 {
        self.port
    }
    /// Repository path on the server, starting with `/`.
    pub fn path(&self) -> &str {
        &self.path
    }
    /// The host as written in known_hosts: `host` on port 22, `[host]:port` otherwise.
    pub fn known_hosts_host(&self) -> String {
        if self.port == 22 {
            bracket(&self.host)
        } else {
            format!("[{}]:{}", self.host, self.port)
        }
    }
}

impl FromStr for SshUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = |why: &str| format!("upstream {s:?} is not an ssh:// URL: {why}");
        let rest = s
            .strip_prefix("ssh://")
            .ok_or_else(|| bad("it must start with ssh://"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => return Err(bad("no repository path")),
        };
        if path.len() < 2 {
            return Err(bad("no repository path"));
        }
        if path
            .bytes()
            .any(|b| b.is_ascii_control() || b == b' ' || b == b'\'' || b == b'\\')
        {
            return Err(bad("the path holds control characters, quotes or spaces"));
        }
        let (user, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        if let Some(u) = user {
            let ok = !u.is_empty()
                && !u.starts_with('-')
                && u.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if !ok {
                return Err(bad("the user name may hold letters, digits, '.', '_', '-'"));
            }
        }
        // A port follows the last ':' unless that ':' is inside an IPv6 bracket.
        let (host, port) = match hostport.rfind(':') {
            Some(i) if !hostport[i..].contains(']') => {
                let port: u16 = hostport[i + 1..]
                    .parse()
                    .map_err(|_| bad("the port is not a number from 1 to 65535"))?;
                if port == 0 {
                    return Err(bad("the port is not a number from 1 to 65535"));
                }
                (&hostport[..i], port)
            }
            _ => (hostport, 22),
        };
        let host = parse_host(host).ok_or_else(|| bad("the host is not a name or address"))?;
        Ok(SshUrl {
            user: user.map(str::to_string),
            host,
            port,
            path: path.to_string(),
        })
    }
}

impl fmt::Display for SshUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ssh://")?;
        if let Some(u) = &self.user {
            write!(f, "{u}@")?;
        }
        f.write_str(&bracket(&self.host))?;
        if self.port != 22 {
            write!(f, ":{}", self.port)?;
        }
        f.write_str(&self.path)
    }
}
string_serde!(SshUrl);

/// A pinned ssh host key: key type plus the base64 public key blob, checked
/// to decode and to name the same type inside. A leading host pattern (as in
/// a known_hosts line) and a trailing comment are accepted and dropped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostKey {
    key_type: String,
    base64: String,
}

const HOST_KEY_TYPES: &[&str] = &[
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
];

impl HostKey {
    pub fn key_type(&self) -> &str {
        &self.key_type
    }
    pub fn base64(&self) -> &str {
        &self.base64
    }
}

impl FromStr for HostKey {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let words: Vec<&str> = s.split_whitespace().collect();
        let at = words
            .iter()
            .position(|w| HOST_KEY_TYPES.contains(w))
            .filter(|&i| i <= 1)
            .ok_or_else(|| {
                format!(
                    "known_host_key must be \"<key type> <base64 key>\" with a key type of {}",
                    HOST_KEY_TYPES.join(", ")
                )
            })?;
        let key_type = words[at];
        let b64 = words
            .get(at + 1)
            .ok_or_else(|| format!("known_host_key has the type {key_type} but no key"))?;
        let blob = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| "known_host_key's key is not valid base64".to_string())?;
        // The blob starts with the key type as an ssh string (u32 length + bytes).
        let inner = blob
            .get(..4)
            .map(|l| u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize)
            .and_then(|n| blob.get(4..4 + n));
        if inner != Some(key_type.as_bytes()) {
            return Err(format!(
                "known_host_key's key is not an {key_type} public key (the key blob names another type or is truncated)"
            ));
        }
        Ok(HostKey {
            key_type: key_type.to_string(),
            base64: b64.to_string(),
        })
    }
}

impl fmt::Display for HostKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.key_type, self.base64)
    }
}
string_serde!(HostKey);

/// A ref glob such as `refs/heads/agent/*`; `*` matches any characters,
/// `/` included (like a refspec), and the pattern must start with `refs/`.
#[derive(Clone, Debug)]
pub struct RefPattern {
    text: String,
    matcher: globset::GlobMatcher,
}

impl RefPattern {
    pub fn as_str(&self) -> &str {
        &self.text
    }
    pub fn matches(&self, refname: &str) -> bool {
        self.matcher.is_match(refname)
    }
}

impl PartialEq for RefPattern {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl FromStr for RefPattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if !s.starts_with("refs/") {
            return Err(format!("push ref pattern {s:?} must start with refs/"));
        }
        let glob = globset::GlobBuilder::new(s)
            .literal_separator(false)
            .backslash_escape(true)
            .build()
            .map_err(|e| format!("push ref pattern {s:?}: {e}"))?;
        Ok(RefPattern {
            text: s.to_string(),
            matcher: glob.compile_matcher(),
        })
    }
}

impl fmt::Display for RefPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}
string_serde!(RefPattern);

/// A path glob relative to the repository root, gitignore-style: `*` stays
/// within one directory, `dir/**` is everything below `dir`. A pattern
/// naming a directory (`.circleci`) also covers everything below it.
#[derive(Clone, Debug)]
pub struct PathPattern {
    text: String,
    exact: globset::GlobMatcher,
    below: globset::GlobMatcher,
}

impl PathPattern {
    pub fn as_str(&self) -> &str {
        &self.text
    }
    pub fn matches(&self, path: &str) -> bool {
        self.exact.is_match(path) || self.below.is_match(path)
    }
}

impl PartialEq for PathPattern {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl FromStr for PathPattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let trimmed = s.trim_start_matches('/').trim_end_matches('/');
        if trimmed.is_empty() {
            return Err(format!("protected path {s:?} is empty"));
        }
        let build = |p: &str| {
            globset::GlobBuilder::new(p)
                .literal_separator(true)
                .backslash_escape(true)
                .build()
                .map(|g| g.compile_matcher())
                .map_err(|e| format!("protected path {s:?}: {e}"))
        };
        Ok(PathPattern {
            text: s.to_string(),
            exact: build(trimmed)?,
            below: build(&format!("{trimmed}/**"))?,
        })
    }
}

impl fmt::Display for PathPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}
string_serde!(PathPattern);

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

    fn minimal(extra: &str) -> String {
        format!(
            r#"state_dir = "/state"
{extra}
[[remote]]
name = "app"
upstream = "ssh://git@upstream.example.test:2222/srv/app.git"
identity_file = "/config/app.key"
known_host_key = "{ED25519}"
"#
        )
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::from_toml_str(&minimal(""), Path::new("t.toml")).unwrap();
        assert_eq!(c.listen.to_string(), "0.0.0.0:9418");
        assert_eq!(c.rules, RulesSource::Builtin);
        let r = &c.remote[0];
        assert_eq!(r.upstream.user(), Some("git"));
        assert_eq!(r.upstream.host(), "upstream.example.test");
        assert_eq!(r.upstream.port(), 2222);
        assert_eq!(r.upstream.path(), "/srv/app.git");
        assert!(r.push_allowed("refs/heads/agent/fix-1"));
        assert!(r.push_allowed("refs/heads/agent/a/b"));
        assert!(!r.push_allowed("refs/heads/main"));
        assert!(!r.push_allowed("refs/tags/agent/x"));
        assert!(r.protected(".github/workflows/ci.yml").is_some());
        assert!(r.protected(".gitlab-ci.yml").is_some());
        assert!(r.protected("Jenkinsfile").is_some());
        assert!(r.protected("src/main.rs").is_none());
        assert!(r.protected("docs/.github/workflows/x.yml").is_none());
        assert_eq!(
            r.known_hosts_line(),
            format!("[upstream.example.test]:2222 {ED25519}\n")
        );
        assert_eq!(c.connect_addr().to_string(), "127.0.0.1:9418");
    }

    #[test]
    fn round_trips_through_toml() {
        let c = Config::from_toml_str(
            &minimal("rules = \"/config/rules.toml\"\nupstream_proxy = \"egress:3128\"\nknown_secrets_file = \"/config/known\""),
            Path::new("t.toml"),
        )
        .unwrap();
        let text = c.to_toml();
        let again = Config::from_toml_str(&text, Path::new("again.toml")).unwrap();
        assert_eq!(c, again);
        assert_eq!(
            again.rules,
            RulesSource::File(PathBuf::from("/config/rules.toml"))
        );
        assert_eq!(again.upstream_proxy.unwrap().to_string(), "egress:3128");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = Config::from_toml_str(&minimal("listn = \"0.0.0.0:1\""), Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("listn"), "{e}");
        let text = minimal("").replace("name = \"app\"", "name = \"app\"\npush_ref = []");
        let e = Config::from_toml_str(&text, Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("push_ref"), "{e}");
    }

    #[test]
    fn duplicate_or_missing_remotes_are_refused() {
        let one = minimal("");
        let remote_block = &one[one.find("[[remote]]").unwrap()..];
        let twice = format!("{one}{remote_block}");
        let e = Config::from_toml_str(&twice, Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("used twice"), "{e}");
        let e = Config::from_toml_str("state_dir = \"/s\"\n", Path::new("t.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("at least one"), "{e}");
    }

    #[test]
    fn ssh_urls() {
        let u: SshUrl = "ssh://example.test/r.git".parse().unwrap();
        assert_eq!((u.user(), u.port()), (None, 22));
        assert_eq!(u.known_hosts_host(), "example.test");
        let u: SshUrl = "ssh://git@[::1]:2222/r.git".parse().unwrap();
        assert_eq!(u.host(), "::1");
        assert_eq!(u.known_hosts_host(), "[::1]:2222");
        assert_eq!(u.to_string(), "ssh://git@[::1]:2222/r.git");
        for bad in [
            "git@github.com:me/app.git",
            "https://github.com/me/app.git",
            "ssh://-oProxyCommand=x/r",
            "ssh://host",
            "ssh://host:0/r",
            "ssh://host:99999/r",
            "ssh://-u@host/r",
            "ssh://host/r'x",
        ] {
            assert!(bad.parse::<SshUrl>().is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn host_keys() {
        let k: HostKey = format!("[h]:2222 {ED25519} root@h").parse().unwrap();
        assert_eq!(k.to_string(), ED25519);
        assert!("ssh-ed25519".parse::<HostKey>().is_err());
        assert!("ssh-ed25519 !!!notbase64".parse::<HostKey>().is_err());
        // An ed25519 blob labelled as rsa.
        let wrong = ED25519.replace("ssh-ed25519", "ssh-rsa");
        assert!(wrong.parse::<HostKey>().is_err());
        assert!("hello world".parse::<HostKey>().is_err());
    }

    #[test]
    fn names_and_patterns() {
        assert!("app".parse::<RemoteName>().is_ok());
        for bad in ["", "../x", "a/b", ".hidden", "-x", "app.git", "a b"] {
            assert!(bad.parse::<RemoteName>().is_err(), "{bad:?} accepted");
        }
        assert!("heads/x".parse::<RefPattern>().is_err());
        let p: PathPattern = ".circleci".parse().unwrap();
        assert!(p.matches(".circleci/config.yml"));
        assert!(p.matches(".circleci"));
        let p: PathPattern = "*.yml".parse().unwrap();
        assert!(p.matches("a.yml"));
        assert!(!p.matches("dir/a.yml"));
    }
}
