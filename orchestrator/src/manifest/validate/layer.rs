//! One manifest file on its own: env, agent provider, skills, git identity
//! and remotes, egress settings and routes, checked into typed values before
//! the `extends` chain is merged.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ipnet::IpNet;

use super::super::raw::{self, RawBottle};
use super::super::{parse, EnvEntry, EnvSpec, Origin, Provider, Remote, Route};
use super::remote::remote;
use super::route::route;
use super::{is_env_name, is_plain_name, skills, RESERVED_ENV};
use crate::error::Problem;
use crate::home::expand_tilde;

/// One file's values, checked.
pub(super) struct Layer {
    pub(super) file: PathBuf,
    pub(super) env: BTreeMap<String, EnvEntry>,
    pub(super) provider: Option<Provider>,
    pub(super) skills: Vec<String>,
    pub(super) user_name: Option<String>,
    pub(super) user_email: Option<String>,
    pub(super) remotes: Vec<Remote>,
    pub(super) attach_networks: Vec<String>,
    pub(super) ssrf_allow_cidrs: Vec<IpNet>,
    pub(super) upstream_ca: Option<PathBuf>,
    pub(super) routes: Vec<Route>,
    pub(super) supervise: Option<bool>,
}

pub(super) fn layer(file: &Path, raw: RawBottle, problems: &mut Vec<Problem>) -> Layer {
    let root = at(file, String::new());
    let env = env(file, raw.env.unwrap_or_default(), problems);
    let provider = raw.agent_provider.map(|p| provider(file, p, problems));
    let skills = skills(&root, raw.skills.unwrap_or_default(), problems);
    let mut l = Layer {
        file: file.to_path_buf(),
        env,
        provider,
        skills,
        user_name: None,
        user_email: None,
        remotes: Vec::new(),
        attach_networks: Vec::new(),
        ssrf_allow_cidrs: Vec::new(),
        upstream_ca: None,
        routes: Vec::new(),
        supervise: raw.supervise,
    };
    if let Some(git) = raw.git {
        git_settings(file, git, &mut l, problems);
    }
    if let Some(eg) = raw.egress {
        egress_settings(file, eg, &mut l, problems);
    }
    l
}

fn at(file: &Path, key: String) -> Origin {
    Origin {
        file: file.to_path_buf(),
        key,
    }
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

fn env(
    file: &Path,
    raw: BTreeMap<String, serde_yaml::Value>,
    problems: &mut Vec<Problem>,
) -> BTreeMap<String, EnvEntry> {
    let mut env = BTreeMap::new();
    for (name, value) in raw {
        let o = at(file, format!("env.{name}"));
        if !is_env_name(&name) {
            problems.push(o.problem("", format!("expected an environment variable name ([A-Za-z_][A-Za-z0-9_]*), found {name:?}")));
            continue;
        }
        if RESERVED_ENV.contains(&name.as_str()) {
            problems.push(o.problem("", format!("`{name}` is set by bot-bottle itself (proxy, CA trust, canary); remove it from env")));
            continue;
        }
        if let Some(spec) = env_spec(&o, &value, problems) {
            env.insert(name, EnvEntry { spec, origin: o });
        }
    }
    env
}

fn env_spec(o: &Origin, value: &serde_yaml::Value, problems: &mut Vec<Problem>) -> Option<EnvSpec> {
    let text = match value {
        serde_yaml::Value::String(s) => s.clone(),
        serde_yaml::Value::Number(n) => n.to_string(),
        serde_yaml::Value::Bool(b) => b.to_string(),
        other => {
            problems.push(o.problem(
                "",
                format!(
                    "expected a string or `${{VAR}}`, found {}",
                    parse::describe(other)
                ),
            ));
            return None;
        }
    };
    if let Some(inner) = text.strip_prefix("${").and_then(|t| t.strip_suffix('}')) {
        if !is_env_name(inner) {
            problems.push(o.problem(
                "",
                format!("expected `${{VAR}}` naming a host variable, found {text:?}"),
            ));
            return None;
        }
        Some(EnvSpec::Forward(inner.to_string()))
    } else if text.contains("${") {
        problems.push(o.problem(
            "",
            format!("expected a literal or exactly `${{VAR}}`, found {text:?}: interpolation inside a literal is not supported"),
        ));
        None
    } else if text.contains('\n') || text.contains('\0') {
        problems.push(o.problem(
            "",
            "expected a single-line value, found a value with a newline",
        ));
        None
    } else {
        Some(EnvSpec::Literal(text))
    }
}

fn provider(file: &Path, p: raw::RawProvider, problems: &mut Vec<Problem>) -> Provider {
    let o = at(file, "agent_provider".into());
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
            problems.push(o.problem(
                "auth_token",
                format!("expected the NAME of a host environment variable, found {t:?}"),
            ));
        }
    }
    Provider {
        template: p.template,
        dockerfile,
        auth_token: p.auth_token,
        origin: o,
    }
}

fn git_settings(file: &Path, git: raw::RawGit, l: &mut Layer, problems: &mut Vec<Problem>) {
    if let Some(u) = git.user {
        l.user_name = u.name;
        if let Some(e) = &u.email {
            if !e.contains('@') || e.contains(char::is_whitespace) {
                problems.push(
                    at(file, "git.user.email".into())
                        .problem("", format!("expected an email address, found {e:?}")),
                );
            }
        }
        l.user_email = u.email;
    }
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (i, r) in git.remotes.unwrap_or_default().into_iter().enumerate() {
        if let Some(r) = remote(file, i, r, problems, &mut seen) {
            l.remotes.push(r);
        }
    }
}

fn egress_settings(file: &Path, eg: raw::RawEgress, l: &mut Layer, problems: &mut Vec<Problem>) {
    if let Some(ca) = eg.upstream_ca {
        // Like `IdentityFile`, the file itself is checked at `start`
        // (a dry run on another machine only warns).
        if ca.trim().is_empty() {
            problems.push(at(file, "egress.upstream_ca".into()).problem(
                "",
                "expected the path of a PEM file of CA certificates, found an empty string",
            ));
        } else {
            l.upstream_ca = Some(beside_manifest(file, &ca));
        }
    }
    for (i, n) in eg
        .attach_networks
        .unwrap_or_default()
        .into_iter()
        .enumerate()
    {
        if is_plain_name(&n) {
            l.attach_networks.push(n);
        } else {
            problems.push(
                at(file, format!("egress.attach_networks[{i}]"))
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
            Ok(n) => l.ssrf_allow_cidrs.push(n.trunc()),
            Err(_) => problems.push(at(file, format!("egress.ssrf_allow_cidrs[{i}]")).problem(
                "",
                format!("expected a CIDR like `172.30.0.0/24`, found {c:?}"),
            )),
        }
    }
    for (i, r) in eg.routes.unwrap_or_default().into_iter().enumerate() {
        if let Some(r) = route(at(file, format!("egress.routes[{i}]")), r, problems) {
            l.routes.push(r);
        }
    }
}
