//! Rules beyond shape: each file's values are checked into typed values
//! (`layer`), the `extends` chain is merged (child over parent), then the rules
//! that span the whole bottle run (remote names, forge rule, env vs tokens).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use super::raw::{self, RawBottle};
use super::template;
use super::{
    Auth, Bottle, Detector, Dlp, EnvEntry, EnvSpec, HostKey, HostPattern, Match, Origin, PathMatch,
    Provider, Remote, Route, SchemeName, SshUpstream,
};
use crate::error::{Error, Problem};
use crate::home::expand_tilde;

pub const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
pub const READ_METHODS: [&str; 3] = ["GET", "HEAD", "OPTIONS"];
/// The names of egress's detectors and cred-proxy's schemes, for messages.
fn names<T: Copy>(all: &[T], name: fn(T) -> &'static str) -> Vec<&'static str> {
    all.iter().map(|t| name(*t)).collect()
}
/// Names the sidecars answer to; never a route host.
pub const SIDECAR_NAMES: [&str; 5] = [
    "egress",
    "cred-proxy",
    "git-gate",
    "supervise",
    "supervise-mcp",
];
/// Names container engines give the host machine.
pub const HOST_MACHINE_NAMES: [&str; 4] = [
    "host.docker.internal",
    "gateway.docker.internal",
    "host.containers.internal",
    "host.internal",
];
/// Variables the orchestrator sets in the agent itself; `env` cannot override them.
pub const RESERVED_ENV: [&str; 14] = [
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "http_proxy",
    "https_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
    "NODE_EXTRA_CA_CERTS",
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    "BOT_BOTTLE_CANARY",
    "BOT_BOTTLE_BROKER_KEY",
];
/// git-gate's defaults: the agent's own ref namespace; CI configuration of
/// common forges (it runs with the repository's secrets). An explicit
/// `ProtectedPaths` adds to the defaults, never removes them.
pub use contract::git_gate::{DEFAULT_PROTECTED_PATHS, DEFAULT_PUSH_REFS};

/// The supervise-mcp sidecar exists in this build (its image can be made).
pub fn supervise_available() -> bool {
    crate::images::dockerfile("supervise-mcp").is_ok()
}

/// Letters, digits, `-`, `_`, `.`; not starting with `.` or `-`.
pub fn is_plain_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !s.starts_with(['.', '-'])
}

pub fn is_env_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic() || f == '_')
        && c.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub fn skills(origin: &Origin, list: Vec<String>, problems: &mut Vec<Problem>) -> Vec<String> {
    let mut out = Vec::new();
    for (i, s) in list.into_iter().enumerate() {
        if is_plain_name(&s) {
            if !out.contains(&s) {
                out.push(s);
            }
        } else {
            problems.push(origin.problem(
                &format!("skills[{i}]"),
                format!("expected a plain skill name (a directory under ~/.claude/skills/, no path), found {s:?}"),
            ));
        }
    }
    out
}

/// Check a host name or `*.suffix`: lower case DNS labels, at least two
/// labels, no IP literal, no sidecar name.
pub fn host_pattern(s: &str) -> Result<HostPattern, String> {
    let expected = "expected a host name like `api.example.com` or `*.example.com`";
    if s != s.to_ascii_lowercase() {
        return Err(format!("{expected}, found {s:?} (write it in lower case)"));
    }
    if super::is_ip_literal(s) {
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
        if SIDECAR_NAMES.contains(&name) {
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

/// `ssh://[user@]host[:port]/path`.
pub fn ssh_upstream(s: &str) -> Result<SshUpstream, String> {
    let expected = "expected an ssh:// URL with a host, like `ssh://git@github.com/me/app.git`";
    let Some(rest) = s.strip_prefix("ssh://") else {
        return Err(format!("{expected}, found {s:?}"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (user, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u.to_string()), h),
        None => (None, authority),
    };
    let (host, port) = if let Some(stripped) = hostport.strip_prefix('[') {
        match stripped.split_once(']') {
            Some((h, p)) => (h.to_string(), p.strip_prefix(':')),
            None => return Err(format!("{expected}, found {s:?}")),
        }
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (hostport.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err(format!("{expected}, found {s:?} (no host)"));
    }
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':'))
    {
        return Err(format!(
            "{expected}, found {s:?} (host {host:?} is not a host name)"
        ));
    }
    let port = match port {
        None | Some("") => 22,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => {
                return Err(format!(
                    "{expected}, found {s:?} (port {p:?} is not 1-65535)"
                ))
            }
        },
    };
    if path.len() <= 1 {
        return Err(format!("{expected}, found {s:?} (no repository path)"));
    }
    Ok(SshUpstream {
        user,
        host: host.to_ascii_lowercase(),
        port,
        path: path.to_string(),
    })
}

/// A `KnownHostKey`, parsed by git-gate's own parser: a key type git-gate
/// refuses (`ssh-dss`) is refused here, where the operator reads the file.
pub fn host_key(s: &str) -> Result<HostKey, String> {
    let expected = "expected an ssh public host key `keytype AAAA...` (as in known_hosts, a leading host pattern is accepted)";
    let key: contract::git_gate::HostKey = s.parse().map_err(|why| {
        let shown: String = s.chars().take(40).collect();
        format!("{expected}, found {shown:?}: {why}")
    })?;
    Ok(HostKey {
        key_type: key.key_type().to_string(),
        base64: key.base64().to_string(),
    })
}

/// One file's values, checked.
struct Layer {
    file: PathBuf,
    env: BTreeMap<String, EnvEntry>,
    provider: Option<Provider>,
    skills: Vec<String>,
    user_name: Option<String>,
    user_email: Option<String>,
    remotes: Vec<Remote>,
    attach_networks: Vec<String>,
    ssrf_allow_cidrs: Vec<IpNet>,
    upstream_ca: Option<PathBuf>,
    routes: Vec<Route>,
    supervise: Option<bool>,
}

/// A path a manifest names for a file of its own: `~/…` from the home
/// directory, anything else relative to the manifest's directory.
fn beside_manifest(manifest: &Path, path: &str) -> PathBuf {
    if path.starts_with("~/") {
        expand_tilde(path)
    } else {
        manifest.parent().unwrap_or(Path::new(".")).join(path)
    }
}

fn layer(file: &Path, raw: RawBottle, problems: &mut Vec<Problem>) -> Layer {
    let root = Origin {
        file: file.to_path_buf(),
        key: String::new(),
    };
    let at = |key: String| Origin {
        file: file.to_path_buf(),
        key,
    };
    let mut env = BTreeMap::new();
    for (name, value) in raw.env.unwrap_or_default() {
        let o = at(format!("env.{name}"));
        if !is_env_name(&name) {
            problems.push(o.problem("", format!("expected an environment variable name ([A-Za-z_][A-Za-z0-9_]*), found {name:?}")));
            continue;
        }
        if RESERVED_ENV.contains(&name.as_str()) {
            problems.push(o.problem("", format!("`{name}` is set by bot-bottle itself (proxy, CA trust, canary); remove it from env")));
            continue;
        }
        let text = match &value {
            serde_yaml::Value::String(s) => s.clone(),
            serde_yaml::Value::Number(n) => n.to_string(),
            serde_yaml::Value::Bool(b) => b.to_string(),
            other => {
                problems.push(o.problem(
                    "",
                    format!(
                        "expected a string or `${{VAR}}`, found {}",
                        super::parse::describe(other)
                    ),
                ));
                continue;
            }
        };
        let spec = if let Some(inner) = text.strip_prefix("${").and_then(|t| t.strip_suffix('}')) {
            if !is_env_name(inner) {
                problems.push(o.problem(
                    "",
                    format!("expected `${{VAR}}` naming a host variable, found {text:?}"),
                ));
                continue;
            }
            EnvSpec::Forward(inner.to_string())
        } else if text.contains("${") {
            problems.push(o.problem(
                "",
                format!("expected a literal or exactly `${{VAR}}`, found {text:?}: interpolation inside a literal is not supported"),
            ));
            continue;
        } else if text.contains('\n') || text.contains('\0') {
            problems.push(o.problem(
                "",
                "expected a single-line value, found a value with a newline",
            ));
            continue;
        } else {
            EnvSpec::Literal(text)
        };
        env.insert(name, EnvEntry { spec, origin: o });
    }

    let provider = raw.agent_provider.map(|p| {
        let o = at("agent_provider".into());
        let dockerfile = p.dockerfile.and_then(|d| {
            let path = beside_manifest(file, &d);
            if path.is_file() {
                Some(path)
            } else {
                problems.push(o.problem("dockerfile", format!("expected a Dockerfile (relative to the manifest), found {d:?}, which does not exist ({})", path.display())));
                None
            }
        });
        if let Some(t) = &p.auth_token {
            if !is_env_name(t) {
                problems.push(o.problem("auth_token", format!("expected the NAME of a host environment variable, found {t:?}")));
            }
        }
        Provider { template: p.template, dockerfile, auth_token: p.auth_token, origin: o }
    });

    let skills = skills(&root, raw.skills.unwrap_or_default(), problems);

    let (mut user_name, mut user_email, mut remotes) = (None, None, Vec::new());
    if let Some(git) = raw.git {
        if let Some(u) = git.user {
            user_name = u.name;
            if let Some(e) = &u.email {
                if !e.contains('@') || e.contains(char::is_whitespace) {
                    problems.push(
                        at("git.user.email".into())
                            .problem("", format!("expected an email address, found {e:?}")),
                    );
                }
            }
            user_email = u.email;
        }
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for (i, r) in git.remotes.unwrap_or_default().into_iter().enumerate() {
            if let Some(r) = remote(file, i, r, problems, &mut seen) {
                remotes.push(r);
            }
        }
    }

    let (mut attach_networks, mut ssrf_allow_cidrs, mut routes) =
        (Vec::new(), Vec::new(), Vec::new());
    let mut upstream_ca = None;
    if let Some(eg) = raw.egress {
        if let Some(ca) = eg.upstream_ca {
            // Like `IdentityFile`, the file itself is checked at `start`
            // (a dry run on another machine only warns).
            if ca.trim().is_empty() {
                problems.push(at("egress.upstream_ca".into()).problem(
                    "",
                    "expected the path of a PEM file of CA certificates, found an empty string",
                ));
            } else {
                upstream_ca = Some(beside_manifest(file, &ca));
            }
        }
        for (i, n) in eg
            .attach_networks
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            if is_plain_name(&n) {
                attach_networks.push(n);
            } else {
                problems.push(
                    at(format!("egress.attach_networks[{i}]"))
                        .problem("", format!("expected a Docker network name, found {n:?}")),
                );
            }
        }
        for (i, c) in eg
            .ssrf_allow_cidrs
            .unwrap_or_default()
            .into_iter()
            .enumerate()
        {
            match c.parse::<IpNet>() {
                Ok(n) => ssrf_allow_cidrs.push(n.trunc()),
                Err(_) => problems.push(at(format!("egress.ssrf_allow_cidrs[{i}]")).problem(
                    "",
                    format!("expected a CIDR like `172.30.0.0/24`, found {c:?}"),
                )),
            }
        }
        for (i, r) in eg.routes.unwrap_or_default().into_iter().enumerate() {
            if let Some(r) = route(at(format!("egress.routes[{i}]")), r, problems) {
                routes.push(r);
            }
        }
    }

    Layer {
        file: file.to_path_buf(),
        env,
        provider,
        skills,
        user_name,
        user_email,
        remotes,
        attach_networks,
        ssrf_allow_cidrs,
        upstream_ca,
        routes,
        supervise: raw.supervise,
    }
}

fn remote(
    file: &Path,
    i: usize,
    r: raw::RawRemote,
    problems: &mut Vec<Problem>,
    seen: &mut BTreeMap<String, usize>,
) -> Option<Remote> {
    let o = Origin {
        file: file.to_path_buf(),
        key: format!("git.remotes[{i}]"),
    };
    let before = problems.len();
    if !is_plain_name(&r.name) {
        problems.push(o.problem(
            "Name",
            format!(
                "expected a remote name (letters, digits, `-`, `_`, `.`), found {:?}",
                r.name
            ),
        ));
    } else if let Some(first) = seen.insert(r.name.clone(), i) {
        problems.push(o.problem(
            "Name",
            format!(
                "remote names must be unique: `{}` is also git.remotes[{first}]",
                r.name
            ),
        ));
    }
    let upstream = ssh_upstream(&r.upstream)
        .and_then(|u| match host_pattern(&u.host) {
            Ok(HostPattern::Exact(_)) => Ok(u),
            Ok(HostPattern::Wildcard(_)) | Err(_) => Err(format!(
                "expected an ssh:// URL whose host is a DNS name with at least two labels \
                 (git-gate reaches it through an egress tunnel route, and routes name hosts), found {:?}",
                r.upstream
            )),
        })
        .map_err(|m| problems.push(o.problem("Upstream", m)))
        .ok();
    let key = host_key(&r.known_host_key)
        .map_err(|m| problems.push(o.problem("KnownHostKey", m)))
        .ok();
    if r.identity_file.trim().is_empty() {
        problems.push(o.problem(
            "IdentityFile",
            "expected the path of the ssh private key git-gate pushes with, found an empty string",
        ));
    }
    let push_refs = match r.push_refs {
        None => DEFAULT_PUSH_REFS.iter().map(|s| s.to_string()).collect(),
        Some(v) => {
            for (j, p) in v.iter().enumerate() {
                if !p.starts_with("refs/")
                    || p.starts_with('+')
                    || p.contains(':')
                    || p.contains(char::is_whitespace)
                    || p.contains("..")
                {
                    problems.push(o.problem(&format!("PushRefs[{j}]"), format!("expected a ref pattern like `refs/heads/agent/*` (no `+`, no `:`), found {p:?}")));
                }
            }
            if v.is_empty() {
                problems.push(o.problem("PushRefs", "expected at least one ref pattern (omit the key for the default `refs/heads/agent/*`)"));
            }
            v
        }
    };
    let mut protected_paths: Vec<String> = DEFAULT_PROTECTED_PATHS
        .iter()
        .map(|s| s.to_string())
        .collect();
    for (j, p) in r
        .protected_paths
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        if p.is_empty() || p.starts_with('/') {
            problems.push(o.problem(
                &format!("ProtectedPaths[{j}]"),
                format!("expected a path glob relative to the repository root, found {p:?}"),
            ));
        } else if globset::Glob::new(&p).is_err() {
            problems.push(o.problem(
                &format!("ProtectedPaths[{j}]"),
                format!("expected a path glob, found {p:?}, which is not a valid glob"),
            ));
        } else if !protected_paths.contains(&p) {
            protected_paths.push(p);
        }
    }
    let allow_fingerprints = r.allow_fingerprints.unwrap_or_default();
    for (j, f) in allow_fingerprints.iter().enumerate() {
        if f.is_empty() || f.contains(char::is_whitespace) {
            problems.push(o.problem(
                &format!("AllowFingerprints[{j}]"),
                format!("expected a finding fingerprint, found {f:?}"),
            ));
        }
    }
    if problems.len() != before {
        return None;
    }
    Some(Remote {
        name: r.name,
        upstream_url: r.upstream,
        upstream: upstream?,
        identity_file: expand_tilde(&r.identity_file),
        known_host_key: key?,
        push_refs,
        protected_paths,
        allow_fingerprints,
        origin: o,
    })
}

fn route(o: Origin, r: raw::RawRoute, problems: &mut Vec<Problem>) -> Option<Route> {
    let before = problems.len();
    let host = host_pattern(&r.host)
        .map_err(|m| problems.push(o.problem("host", m)))
        .ok();
    let ports: Vec<u16> = match r.ports {
        None => vec![443],
        Some(v) if v.is_empty() => {
            problems.push(o.problem(
                "ports",
                "expected a list of ports 1-65535, found an empty list (omit it for [443])",
            ));
            vec![]
        }
        Some(v) => v
            .iter()
            .enumerate()
            .filter_map(|(j, p)| match u16::try_from(*p) {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    problems.push(o.problem(
                        &format!("ports[{j}]"),
                        format!("expected a port 1-65535, found {p}"),
                    ));
                    None
                }
            })
            .collect(),
    };
    let tunnel = r.tunnel.unwrap_or(false);
    let auth = r.auth.and_then(|a| {
        let before = problems.len();
        // cred-proxy's own parser decides which schemes exist.
        let scheme = SchemeName::parse(&a.scheme);
        if scheme.is_none() {
            let all = names(&SchemeName::ALL, SchemeName::as_str);
            let hint = super::did_you_mean(&a.scheme, &all).map(|s| format!("; did you mean `{s}`?")).unwrap_or_default();
            problems.push(o.problem("auth.scheme", format!("expected one of {}, found {:?}{hint}", all.join(", "), a.scheme)));
        }
        if !is_env_name(&a.token_ref) {
            problems.push(o.problem("auth.token_ref", format!("expected the NAME of a host environment variable, found {:?}", a.token_ref)));
        }
        match (&a.header, a.scheme.as_str()) {
            (None, "header") => problems.push(o.problem("auth.header", "required key is missing: `scheme: header` needs the header name")),
            (Some(h), "header") if !h.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') || h.is_empty() => {
                problems.push(o.problem("auth.header", format!("expected an HTTP header name, found {h:?}")))
            }
            (Some(_), s) if s != "header" => problems.push(o.problem("auth.header", format!("`header` is only used with `scheme: header`, found scheme {s:?}"))),
            _ => {}
        }
        match (&a.template, a.scheme.as_str()) {
            (None, "header") => problems.push(o.problem("auth.template", "required key is missing: `scheme: header` needs a value template containing `{token}`")),
            (Some(t), "header") if !t.contains("{token}") || t.chars().any(|c| c.is_control()) => {
                problems.push(o.problem("auth.template", format!("expected a header value containing `{{token}}`, found {t:?}")))
            }
            (Some(_), s) if s != "header" => problems.push(o.problem("auth.template", format!("`template` is only used with `scheme: header`, found scheme {s:?}"))),
            _ => {}
        }
        scheme.filter(|_| problems.len() == before).map(|scheme| Auth { scheme, token_ref: a.token_ref, header: a.header, template: a.template })
    });
    if let Some(h) = &host {
        if h.is_wildcard() && auth.is_some() {
            problems.push(o.problem(
                "auth",
                format!("a wildcard host ({h}) can never carry `auth`: name each host exactly"),
            ));
        }
        if h.is_wildcard() && tunnel {
            problems.push(o.problem(
                "tunnel",
                format!("a wildcard host ({h}) can never be a tunnel: name the host exactly"),
            ));
        }
    }
    if tunnel && auth.is_some() {
        problems.push(o.problem(
            "tunnel",
            "a tunnel route is not intercepted, so it cannot carry `auth`",
        ));
    }
    let mut matches = Vec::new();
    for (j, m) in r.matches.unwrap_or_default().into_iter().enumerate() {
        let mo = format!("matches[{j}]");
        let mut paths = Vec::new();
        for (k, p) in m.paths.unwrap_or_default().into_iter().enumerate() {
            if p.kind == raw::PathKind::Exact {
                problems.push(o.problem(&format!("{mo}.paths[{k}].type"), "`exact` is not supported yet (egress matches path prefixes); use `type: prefix`"));
            } else if !p.value.starts_with('/')
                || p.value.contains(['?', '#'])
                || p.value.contains(char::is_whitespace)
            {
                problems.push(o.problem(
                    &format!("{mo}.paths[{k}].value"),
                    format!(
                        "expected a URL path starting with `/` (no query, no spaces), found {:?}",
                        p.value
                    ),
                ));
            } else if let Err(why) = contract::path::check_prefix(&p.value) {
                // The same check egress runs on its config: one rule, one place.
                problems.push(o.problem(
                    &format!("{mo}.paths[{k}].value"),
                    format!(
                        "expected a URL path prefix egress can match, found {:?}: {why}",
                        p.value
                    ),
                ));
            } else {
                paths.push(PathMatch {
                    kind: p.kind,
                    value: p.value,
                });
            }
        }
        let mut methods = Vec::new();
        for (k, mm) in m.methods.unwrap_or_default().into_iter().enumerate() {
            let up = mm.to_ascii_uppercase();
            if METHODS.contains(&up.as_str()) {
                if !methods.contains(&up) {
                    methods.push(up);
                }
            } else {
                let hint = super::did_you_mean(&up, &METHODS)
                    .map(|s| format!("; did you mean `{s}`?"))
                    .unwrap_or_default();
                problems.push(o.problem(
                    &format!("{mo}.methods[{k}]"),
                    format!("expected one of {}, found {mm:?}{hint}", METHODS.join(", ")),
                ));
            }
        }
        matches.push(Match {
            paths,
            methods,
            allow_writes: m.allow_writes.unwrap_or(false),
        });
    }
    if tunnel && !matches.is_empty() {
        problems.push(o.problem("matches", "a tunnel route is not intercepted: paths and methods cannot be checked, remove `matches`"));
    }
    let mut dlp = Dlp::default();
    if let Some(d) = r.dlp {
        if tunnel {
            problems.push(o.problem(
                "dlp",
                "a tunnel route is not intercepted: no DLP can run on it, remove `dlp`",
            ));
        }
        let detector_names = names(&Detector::ALL, Detector::as_str);
        match d.outbound_detectors {
            None => {}
            Some(serde_yaml::Value::Bool(false)) => dlp.outbound_detectors.clear(),
            Some(serde_yaml::Value::Sequence(list)) => {
                dlp.outbound_detectors.clear();
                for (k, v) in list.iter().enumerate() {
                    match v.as_str().and_then(Detector::parse) {
                        Some(d) => dlp.outbound_detectors.push(d),
                        _ => {
                            let found = v
                                .as_str()
                                .map(|s| format!("{s:?}"))
                                .unwrap_or_else(|| super::parse::describe(v));
                            let hint = v
                                .as_str()
                                .and_then(|s| super::did_you_mean(s, &detector_names))
                                .map(|s| format!("; did you mean `{s}`?"))
                                .unwrap_or_default();
                            problems.push(o.problem(
                                &format!("dlp.outbound_detectors[{k}]"),
                                format!(
                                    "expected one of {}, found {found}{hint}",
                                    detector_names.join(", ")
                                ),
                            ));
                        }
                    }
                }
            }
            Some(other) => problems.push(o.problem(
                "dlp.outbound_detectors",
                format!(
                    "expected a list of detectors ({}) or false, found {}",
                    names(&Detector::ALL, Detector::as_str).join(", "),
                    super::parse::describe(&other)
                ),
            )),
        }
        if let Some(m) = d.outbound_on_match {
            dlp.outbound_on_match = m;
        }
        match d.inbound_detectors {
            None | Some(serde_yaml::Value::Bool(false)) => {}
            Some(other) => problems.push(o.problem(
                "dlp.inbound_detectors",
                format!("not supported yet: response scanning has not landed; expected `false`, found {}", super::parse::describe(&other)),
            )),
        }
    }
    if problems.len() != before {
        return None;
    }
    Some(Route {
        host: host?,
        ports,
        auth,
        matches,
        dlp,
        tunnel,
        upgrade: r.upgrade.unwrap_or(false),
        template: None,
        origin: o,
    })
}

/// Merge the `extends` chain (child first in `chain`), add the provider
/// template's routes and check the rules that span the bottle.
pub fn build_bottle(name: &str, chain: Vec<(String, PathBuf, RawBottle)>) -> Result<Bottle, Error> {
    let mut problems = Vec::new();
    let files: Vec<PathBuf> = chain.iter().map(|(_, f, _)| f.clone()).collect();
    let layers: Vec<Layer> = chain
        .into_iter()
        .map(|(_, f, raw)| layer(&f, raw, &mut problems))
        .collect();
    if !problems.is_empty() {
        return Err(Error::Manifest(problems));
    }
    let mut b = Bottle {
        name: name.to_string(),
        files,
        env: BTreeMap::new(),
        provider: None,
        skills: Vec::new(),
        git_user_name: None,
        git_user_email: None,
        remotes: Vec::new(),
        attach_networks: Vec::new(),
        ssrf_allow_cidrs: Vec::new(),
        upstream_ca: None,
        routes: Vec::new(),
        supervise: false,
    };
    // Parents first, so a child's values override or extend them.
    for l in layers.into_iter().rev() {
        b.env.extend(l.env);
        if let Some(p) = l.provider {
            b.provider = Some(match b.provider.take() {
                None => p,
                Some(parent) => Provider {
                    template: p.template.or(parent.template),
                    dockerfile: p.dockerfile.or(parent.dockerfile),
                    auth_token: p.auth_token.or(parent.auth_token),
                    origin: p.origin,
                },
            });
        }
        for s in l.skills {
            if !b.skills.contains(&s) {
                b.skills.push(s);
            }
        }
        b.git_user_name = l.user_name.or(b.git_user_name.take());
        b.git_user_email = l.user_email.or(b.git_user_email.take());
        for r in l.remotes {
            // A child's remote of the same name replaces the parent's.
            b.remotes.retain(|x| x.name != r.name);
            b.remotes.push(r);
        }
        for n in l.attach_networks {
            if !b.attach_networks.contains(&n) {
                b.attach_networks.push(n);
            }
        }
        if l.upstream_ca.is_some() {
            b.upstream_ca = l.upstream_ca;
        }
        for c in l.ssrf_allow_cidrs {
            if !b.ssrf_allow_cidrs.contains(&c) {
                b.ssrf_allow_cidrs.push(c);
            }
        }
        // A child's routes for a host replace the parent's routes for that host.
        let hosts: BTreeSet<String> = l.routes.iter().map(|r| r.host.to_string()).collect();
        b.routes.retain(|r| !hosts.contains(&r.host.to_string()));
        b.routes.extend(l.routes);
        if let Some(s) = l.supervise {
            if s && !supervise_available() {
                problems.push(Problem {
                    file: l.file.clone(),
                    key: "supervise".into(),
                    message: "not supported yet: the supervise-mcp sidecar is not part of this build; expected `false` or no key".into(),
                });
            }
            b.supervise = s;
        }
    }

    // Provider template routes, merged under the bottle's.
    if let Some(p) = &b.provider {
        if let Some(t) = p.template {
            let mine: BTreeSet<String> = b.routes.iter().map(|r| r.host.to_string()).collect();
            for r in template::template_routes(t, p.auth_token.as_deref(), &p.origin) {
                if !mine.contains(&r.host.to_string()) {
                    b.routes.push(r);
                }
            }
        } else if p.auth_token.is_some() {
            problems.push(p.origin.problem("auth_token", "`auth_token` needs `template` (claude or codex) to know which API it authenticates"));
        }
    }

    // env never forwards a token.
    let mut tokens: BTreeSet<String> = b.token_vars().into_iter().collect();
    if let Some(t) = b.provider.as_ref().and_then(|p| p.auth_token.clone()) {
        tokens.insert(t);
    }
    for (name, e) in &b.env {
        if let EnvSpec::Forward(var) = &e.spec {
            if tokens.contains(var) {
                problems.push(e.origin.problem(
                    "",
                    format!("`${{{var}}}` is a token (a `token_ref` or `auth_token`): tokens go to cred-proxy only, never into the agent; remove `{name}` from env"),
                ));
            }
        }
    }

    // Forge rule: a route to the forge of a git remote (with or without
    // `auth`: the agent could bring a token of its own; a wildcard covering the
    // remote's host counts) is read-only unless a match says
    // `allow_writes: true` and lists its paths; egress refuses git's push
    // service on it whatever the match says.
    for r in &b.routes {
        let host = r.host.to_string();
        let Some(remote) = b
            .remotes
            .iter()
            .find(|rm| template::reaches_forge(&r.host, &rm.upstream.host))
        else {
            continue;
        };
        let why = if r.host.is_wildcard() {
            format!(
                "{host} covers the forge of git remote `{}` ({})",
                remote.name, remote.upstream.host
            )
        } else {
            format!("{host} is the forge of git remote `{}`", remote.name)
        };
        if r.tunnel {
            problems.push(r.origin.problem(
                "tunnel",
                format!(
                    "{why}: a tunnel there would let the agent reach the upstream around git-gate"
                ),
            ));
        }
        if r.ports.contains(&22)
            || (r.ports.contains(&remote.upstream.port)
                && template::covers_host(&r.host, &remote.upstream.host))
        {
            problems.push(r.origin.problem(
                "ports",
                format!("{why}: ssh to it goes through git-gate only"),
            ));
        }
        for (j, m) in r.matches.iter().enumerate() {
            let writes: Vec<&String> = m
                .methods
                .iter()
                .filter(|x| !READ_METHODS.contains(&x.as_str()))
                .collect();
            if m.allow_writes {
                if m.paths.is_empty() || m.paths.iter().any(|p| p.value == "/") {
                    problems.push(r.origin.problem(
                        &format!("matches[{j}].paths"),
                        format!("{why}: `allow_writes: true` needs each write path listed explicitly, found {}", if m.paths.is_empty() { "no paths".to_string() } else { "`/`".to_string() }),
                    ));
                }
                if m.methods.is_empty() {
                    problems.push(r.origin.problem(
                        &format!("matches[{j}].methods"),
                        format!(
                            "{why}: `allow_writes: true` needs the write methods listed explicitly"
                        ),
                    ));
                }
            } else if !writes.is_empty() {
                problems.push(r.origin.problem(
                    &format!("matches[{j}].methods"),
                    format!(
                        "{why}: a route to it (with or without `auth`) may only use read methods (GET, HEAD, OPTIONS; \
                         git clone and fetch work), found {}; merges, deploy keys, webhooks and workflow dispatches \
                         through the API go around git-gate. If you mean it, list the paths and add \
                         `allow_writes: true` to this match (git push over HTTPS stays refused: pushes go through git-gate)",
                        writes.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
    }
    if !problems.is_empty() {
        return Err(Error::Manifest(problems));
    }
    Ok(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

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

    #[test]
    fn upstreams() {
        let u = ssh_upstream("ssh://git@github.com/me/app.git").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.user.as_deref()),
            ("github.com", 22, Some("git"))
        );
        assert_eq!(
            ssh_upstream("ssh://git@gitlab.example:2222/a.git")
                .unwrap()
                .port,
            2222
        );
        for bad in [
            "git@github.com:me/app.git",
            "https://github.com/me/app",
            "ssh:///x.git",
            "ssh://host",
            "ssh://h:0/x",
        ] {
            assert!(ssh_upstream(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_keys() {
        // ssh-ed25519 blob: len(11) "ssh-ed25519" len(32) key
        let mut blob = vec![0, 0, 0, 11];
        blob.extend_from_slice(b"ssh-ed25519");
        blob.extend_from_slice(&[0, 0, 0, 32]);
        blob.extend_from_slice(&[7u8; 32]);
        let b64 = base64::engine::general_purpose::STANDARD.encode(&blob);
        assert!(host_key(&format!("ssh-ed25519 {b64}")).is_ok());
        assert!(host_key(&format!("github.com ssh-ed25519 {b64} comment")).is_ok());
        assert!(host_key(&format!("ssh-rsa {b64}")).is_err());
        // git-gate refuses DSA keys: so does the manifest, naming the types it takes.
        let mut dss = vec![0, 0, 0, 7];
        dss.extend_from_slice(b"ssh-dss");
        dss.extend_from_slice(&[7u8; 40]);
        let dss = base64::engine::general_purpose::STANDARD.encode(&dss);
        let e = host_key(&format!("ssh-dss {dss}")).unwrap_err();
        assert!(e.contains("ssh-ed25519") && !e.contains("ssh-dss,"), "{e}");
        assert!(host_key("ssh-ed25519 !!!").is_err());
        assert!(host_key("hello").is_err());
    }
}
