//! Rules beyond shape: each file's values are checked into typed values
//! (`layer`), the `extends` chain is merged (child over parent), then the rules
//! that span the whole bottle run (remote names, forge rule, env vs tokens).

mod host;
mod layer;
mod remote;
mod route;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use super::raw::RawBottle;
use super::template;
use super::{Bottle, EnvSpec, Origin, Provider, Route};
use crate::error::{Error, Problem};
use contract::Role;
use host::host_pattern;
use layer::{layer, Layer};

pub const METHODS: [&str; 7] = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];
pub const READ_METHODS: [&str; 3] = ["GET", "HEAD", "OPTIONS"];
/// The names of egress's detectors and cred-proxy's schemes, for messages.
fn names<T: Copy>(all: &[T], name: fn(T) -> &'static str) -> Vec<&'static str> {
    all.iter().map(|t| name(*t)).collect()
}
/// Whether `name` is one the sidecars answer to (alias or binary name): never a route host.
pub fn is_sidecar_name(name: &str) -> bool {
    Role::SIDECARS
        .iter()
        .any(|r| r.alias() == name || r.binary() == Some(name))
}
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
        merge_layer(&mut b, l, &mut problems);
    }
    add_template_routes(&mut b, &mut problems);
    check_env_forwards_no_token(&b, &mut problems);
    check_forge_routes(&b, &mut problems);
    if !problems.is_empty() {
        return Err(Error::Manifest(problems));
    }
    Ok(b)
}

fn merge_layer(b: &mut Bottle, l: Layer, problems: &mut Vec<Problem>) {
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

/// Provider template routes, merged under the bottle's.
fn add_template_routes(b: &mut Bottle, problems: &mut Vec<Problem>) {
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
}

/// Tokens go to cred-proxy only: env never forwards one into the agent.
fn check_env_forwards_no_token(b: &Bottle, problems: &mut Vec<Problem>) {
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
}

/// Forge rule: a route to the forge of a git remote (with or without
/// `auth`: the agent could bring a token of its own; a wildcard covering the
/// remote's host counts) is read-only unless a match says
/// `allow_writes: true` and lists its paths; egress refuses git's push
/// service on it whatever the match says.
fn check_forge_routes(b: &Bottle, problems: &mut Vec<Problem>) {
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
        check_forge_matches(r, &why, problems);
    }
}

fn check_forge_matches(r: &Route, why: &str, problems: &mut Vec<Problem>) {
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
