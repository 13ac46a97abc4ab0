//! A bottle's life: bring-up from a plan as a stack of undo steps, the
//! session, teardown; and the commands on bottles that exist (`exec`,
//! `list`, `info`, `stop`, `resume`, `restart`, `commit`, `cleanup`, `logs`).
//!
//! Bring-up records every object it creates; any error, Ctrl-C or SIGTERM at
//! any point removes them in reverse order, then sweeps the bottle's labels,
//! so nothing is left that `cleanup` would find. This module must never hand
//! a real token to the agent: tokens are read by name at bring-up and go to
//! cred-proxy's environment only.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::backend::{
    standard_connections, Backend, BottleLayout, Domain, DomainInfo, EnvValue, ExecRequest,
    FileSpec, OutputSink, Readiness, Resource, Role, ServiceSpec,
};
use crate::docker::DockerBackend;
use crate::home::Home;
use crate::plan::{self, NetworkRole, Plan};
use crate::provision::{self, Secrets};
use crate::state::{Metadata, StateDir};

/// Errors of the lifecycle: each names the bottle object, file or variable involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Docker engine: cannot {what}: {source}")]
    Engine {
        what: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("network {name} does not exist (egress.attach_networks names it; create it first)")]
    MissingNetwork { name: String },
    #[error("image {image} for {role} is missing: run `orchestrator images build`")]
    MissingImage { image: String, role: Role },
    #[error("no free /28 subnet left in {pool}: run `orchestrator cleanup`")]
    PoolExhausted { pool: String },
    #[error("{role} did not become ready: {detail}\n--- last lines of its log ---\n{logs}")]
    NotReady {
        role: Role,
        detail: String,
        logs: String,
    },
    #[error("{what}")]
    Invalid { what: String },
    #[error("{}: unreadable bottle state ({detail})", path.display())]
    Corrupt { path: PathBuf, detail: String },
    #[error("no bottle `{id}` in this home (see `orchestrator list`)")]
    UnknownBottle { id: String },
    #[error("bottle `{id}` is not running (start it with `orchestrator resume {id}`)")]
    NotRunning { id: String },
    #[error(
        "bottle `{id}` was removed when its session ended: only its audit log is kept \
         (`orchestrator logs {id}`), until `orchestrator cleanup` removes it"
    )]
    Removed { id: String },
    #[error(
        "the environment variable {var} is not set: {} needs it at every bring-up",
        if *role == Role::Agent { "the agent's env (a `${VAR}` of the manifest)".to_string() } else { format!("{role} (a token)") }
    )]
    MissingToken { var: String, role: Role },
    #[error("interrupted: everything created so far was removed")]
    Cancelled,
    #[error(
        "bottle `{id}` was created by an earlier bot-bottle and is not brought back: {reason}.\n\
         Its workspace is kept in the Docker volume {volume}: copy what you need out of it, \
         start a new bottle, then `orchestrator cleanup` removes the old one"
    )]
    Outdated {
        id: String,
        reason: String,
        volume: String,
    },
    #[error(transparent)]
    Plan(#[from] crate::error::Error),
}

impl Error {
    /// Exit code of the process for this error (130 after Ctrl-C, like a shell).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Cancelled => 130,
            Error::Plan(e) => e.exit_code(),
            _ => 1,
        }
    }
}

/// How `start`/`resume` report progress (stderr for people, nothing for programs).
pub trait Progress: Send + Sync {
    fn step(&self, message: &str);
}

/// Progress lines on stderr, with the time since the command started.
#[derive(Debug)]
pub struct StderrProgress {
    started: std::time::Instant,
}

impl Default for StderrProgress {
    fn default() -> Self {
        StderrProgress {
            started: std::time::Instant::now(),
        }
    }
}

impl Progress for StderrProgress {
    fn step(&self, message: &str) {
        eprintln!(
            "bot-bottle: [{:5.2}s] {message}",
            self.started.elapsed().as_secs_f64()
        );
    }
}

/// No progress output.
#[derive(Debug, Default)]
pub struct Quiet;

impl Progress for Quiet {
    fn step(&self, _message: &str) {}
}

/// Cancels `token` on Ctrl-C or SIGTERM; the returned task ends with the token.
pub fn cancel_on_signals(token: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => token.cancel(),
            _ = term.recv() => token.cancel(),
            _ = token.cancelled() => {}
        }
    })
}

/// Runs an engine request to completion, then honours a cancel: dropping a
/// request in flight could let the engine create an object after the undo
/// ran, so creation steps are never abandoned half-way.
async fn step<T>(
    cancel: &CancellationToken,
    fut: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let r = fut.await;
    if cancel.is_cancelled() {
        return Err(Error::Cancelled);
    }
    r
}

/// Waits that create nothing (health polling, a command) stop at once on cancel.
async fn cancellable<T>(
    cancel: &CancellationToken,
    fut: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(Error::Cancelled),
        r = fut => r,
    }
}

// ---------------------------------------------------------------------------
// Plan -> layout

/// Placeholder for "address of ROLE on NETWORK", replaced at each bring-up
/// (subnets are allocated then, so parallel bottles never collide).
fn addr_token(net: &str, role: Role) -> String {
    format!("@@bb-addr:{net}:{}@@", role.as_str())
}

fn addr_token_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"@@bb-addr:([a-z0-9_.-]+):([a-z-]+)@@").expect("literal regex"))
}

fn ipv4_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"(^|[^0-9.])((?:[0-9]{1,3}\.){3}[0-9]{1,3})($|[^0-9])").expect("literal regex")
    })
}

/// Replaces the planned fixed addresses in `text` by placeholders.
fn templatize(text: &str, planned: &BTreeMap<Ipv4Addr, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    // Iterate manually: matches share their boundary characters.
    let mut pos = 0;
    while let Some(c) = ipv4_re().captures_at(text, pos) {
        let m = c.get(2).expect("group 2");
        if let Some(tok) = m
            .as_str()
            .parse::<Ipv4Addr>()
            .ok()
            .and_then(|ip| planned.get(&ip))
        {
            out.push_str(&text[last..m.start()]);
            out.push_str(tok);
            last = m.end();
        }
        pos = m.end();
    }
    out.push_str(&text[last..]);
    out
}

/// Replaces placeholders by the addresses of this bring-up.
fn render_addresses(text: &str, domains: &[DomainInfo]) -> String {
    addr_token_re()
        .replace_all(text, |c: &regex::Captures<'_>| {
            let net = &c[1];
            let role = Role::parse(&c[2]);
            domains
                .iter()
                .find(|d| d.domain.as_str() == net)
                .and_then(|d| d.address_of(role?))
                .map(|ip| ip.to_string())
                .unwrap_or_else(|| c[0].to_string())
        })
        .into_owned()
}

fn domain_of(n: NetworkRole) -> Domain {
    match n {
        NetworkRole::Internal => Domain::Internal,
        NetworkRole::Broker => Domain::Broker,
        NetworkRole::Egress => Domain::Egress,
        NetworkRole::Gate => Domain::Gate,
    }
}

fn env_value(v: &plan::EnvValue) -> EnvValue {
    match v {
        plan::EnvValue::Literal { value } => EnvValue::Literal(value.clone()),
        plan::EnvValue::Host { var } => EnvValue::FromHost(var.clone()),
        plan::EnvValue::Generated { kind } => EnvValue::StateSecret(kind.clone()),
    }
}

/// The agent's variables bring-up always sets (the plan may set them too).
fn agent_defaults(roles: &[Role]) -> Vec<(String, String)> {
    let proxy = "http://egress:3128".to_string();
    let mut no_proxy = vec!["localhost", "127.0.0.1"];
    if roles.contains(&Role::GitGate) {
        no_proxy.push("git-gate");
    }
    if roles.contains(&Role::Supervise) {
        no_proxy.push("supervise");
    }
    let no_proxy = no_proxy.join(",");
    vec![
        ("HTTP_PROXY".into(), proxy.clone()),
        ("HTTPS_PROXY".into(), proxy.clone()),
        ("http_proxy".into(), proxy.clone()),
        ("https_proxy".into(), proxy),
        ("NO_PROXY".into(), no_proxy.clone()),
        ("no_proxy".into(), no_proxy),
        (
            "NODE_EXTRA_CA_CERTS".into(),
            provision::AGENT_CA_FILE.into(),
        ),
        ("SSL_CERT_FILE".into(), provision::AGENT_BUNDLE.into()),
        ("REQUESTS_CA_BUNDLE".into(), provision::AGENT_BUNDLE.into()),
        ("GIT_SSL_CAINFO".into(), provision::AGENT_BUNDLE.into()),
        ("CURL_CA_BUNDLE".into(), provision::AGENT_BUNDLE.into()),
    ]
}

/// Scratch directories a sidecar writes on its read-only root (tmpfs, owned
/// by its user): nothing there must outlive the container.
fn writable_dirs(role: Role) -> Vec<String> {
    let mut dirs = vec!["/tmp".to_string()];
    match role {
        Role::Egress => dirs.push(crate::render::HOLDS_DIR.into()),
        Role::GitGate => {
            dirs.push(crate::render::GIT_GATE_STATE_DIR.into());
            dirs.push("/home/git-gate".into());
        }
        Role::Supervise => dirs.push(crate::render::SUPERVISE_STATE_DIR.into()),
        _ => {}
    }
    dirs
}

/// Provisioning the agent needs after it starts (kept for `resume`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AgentSetup {
    pub home: String,
    pub user: String,
    pub workdir: String,
    pub provider: Option<String>,
    pub prompt: String,
    /// Skill name -> host directory.
    pub skills: BTreeMap<String, PathBuf>,
    pub git_user: Option<String>,
    pub git_email: Option<String>,
    /// (name, upstream, gate url)
    pub remotes: Vec<(String, String, String)>,
    pub supervise: bool,
}

/// A container's CPU cap, in billionths of a core: the agent builds and
/// tests code (two cores, or all the engine has when fewer); egress scans
/// bodies on a pool of blocking threads and git-gate scans pushes (a core
/// each); the others are small.
fn cpu_cap(role: Role) -> i64 {
    match role {
        Role::Agent => 2_000_000_000,
        Role::Egress | Role::GitGate => 1_000_000_000,
        _ => 500_000_000,
    }
}

/// Turns the foundation's plan into what the backend brings up.
pub fn layout_from_plan(
    plan: &Plan,
    secrets: &Secrets,
) -> Result<(BottleLayout, AgentSetup), Error> {
    // Render again with this bottle's values (the dry-run shows placeholders).
    let mut plan = plan.clone();
    crate::render::render_into(
        &mut plan,
        Some(&crate::render::RenderSecrets {
            canary: secrets.canary.clone(),
        }),
    )?;
    let plan = &plan;
    // What the agent itself holds and must not send out: the host variables
    // forwarded into its environment (never the real tokens, which stay in
    // cred-proxy).
    let forwarded: Vec<String> = plan
        .agent_container
        .env
        .iter()
        .filter_map(|e| match &e.value {
            plan::EnvValue::Host { var } => Some(var.clone()),
            _ => None,
        })
        .collect();
    // Operator files copied into sidecars, by the name they get there.
    let host_files: BTreeMap<String, PathBuf> = plan
        .git
        .remotes
        .iter()
        .map(|r| (format!("id_{}", r.name), r.identity_file.clone()))
        .chain(
            plan.upstream_ca
                .iter()
                .map(|ca| (plan::UPSTREAM_CA_FILE.to_string(), ca.clone())),
        )
        .collect();
    let mut planned: BTreeMap<Ipv4Addr, String> = BTreeMap::new();
    for s in &plan.sidecars {
        for (net, ip) in &s.addresses {
            planned.insert(*ip, addr_token(net.as_str(), s.role));
        }
    }
    planned.insert(
        plan.agent_container.address,
        addr_token("internal", Role::Agent),
    );

    let mut services = Vec::new();
    for s in &plan.sidecars {
        let mut domains: Vec<Domain> = s.addresses.keys().map(|n| domain_of(*n)).collect();
        // The way-out network last: it is not the one the role is known by.
        domains.sort_by_key(|d| matches!(d, Domain::Egress));
        domains.extend(
            s.attach_networks
                .iter()
                .map(|n| Domain::Attached(n.clone())),
        );
        let mut files = vec![FileSpec {
            path: s.config_file.clone(),
            contents: templatize(&s.config, &planned).into_bytes(),
            mode: 0o600,
        }];
        for (name, what) in &s.files {
            let Some(contents) = secrets.file_for(name, &forwarded, &host_files) else {
                return Err(Error::Invalid {
                    what: format!("{}: don't know how to make /config/{name} ({what})", s.role),
                });
            };
            if name == "ca.key" && s.role != Role::Egress {
                return Err(Error::Invalid {
                    what: format!("the CA key may only go to egress, not {}", s.role),
                });
            }
            files.push(FileSpec {
                path: name.clone(),
                contents,
                mode: 0o600,
            });
        }
        let env = s
            .env
            .iter()
            .map(|e| {
                let v = match env_value(&e.value) {
                    EnvValue::Literal(l) => EnvValue::Literal(templatize(&l, &planned)),
                    v => v,
                };
                (e.name.clone(), v)
            })
            .collect();
        services.push(ServiceSpec {
            role: s.role,
            image: s.image.clone(),
            cmd: None,
            env,
            domains,
            files,
            init: s.role == Role::GitGate,
            read_only: true,
            tmpfs: writable_dirs(s.role),
            workspace: false,
            audit_dir: None,
            memory_bytes: 512 << 20,
            pids_limit: 512,
            nano_cpus: cpu_cap(s.role),
            readiness: Readiness::HealthCheck,
            sandboxed: false,
        });
    }
    let roles: Vec<Role> = std::iter::once(Role::Agent)
        .chain(plan.sidecars.iter().map(|s| s.role))
        .collect();
    let a = &plan.agent_container;
    let mut env: BTreeMap<String, EnvValue> = agent_defaults(&roles)
        .into_iter()
        .map(|(k, v)| (k, EnvValue::Literal(v)))
        .collect();
    for e in &a.env {
        let v = match env_value(&e.value) {
            EnvValue::Literal(l) => EnvValue::Literal(templatize(&l, &planned)),
            v => v,
        };
        env.insert(e.name.clone(), v);
    }
    env.insert(
        plan::CANARY_ENV.into(),
        EnvValue::StateSecret("canary".into()),
    );
    services.push(ServiceSpec {
        role: Role::Agent,
        image: a.image.clone(),
        cmd: Some(vec!["sleep".into(), "infinity".into()]),
        env,
        domains: vec![Domain::Internal],
        files: Vec::new(),
        init: true,
        read_only: false,
        tmpfs: Vec::new(),
        workspace: true,
        audit_dir: None,
        memory_bytes: 4 << 30,
        pids_limit: 2048,
        nano_cpus: cpu_cap(Role::Agent),
        readiness: Readiness::Running,
        sandboxed: plan.runtime.agent_runtime == "runsc",
    });
    let layout = BottleLayout {
        id: plan.id.clone(),
        preferred_ranges: plan
            .networks
            .iter()
            .map(|n| (domain_of(n.role).as_str().to_string(), n.subnet.to_string()))
            .collect(),
        connections: standard_connections(&roles),
        services,
    };
    let home = if a.user.is_empty() || a.user.starts_with("1000") {
        "/home/agent".to_string()
    } else {
        format!("/home/{}", a.user)
    };
    let setup = AgentSetup {
        home,
        user: if a.user.is_empty() {
            "1000:1000".into()
        } else {
            a.user.clone()
        },
        workdir: if a.workdir.is_empty() {
            "/workspace".into()
        } else {
            a.workdir.clone()
        },
        provider: a.provider.clone(),
        prompt: a.system_prompt.clone(),
        skills: a
            .skills
            .iter()
            .map(|s| {
                (
                    s.clone(),
                    crate::home::expand_tilde(&format!("~/.claude/skills/{s}")),
                )
            })
            .collect(),
        git_user: plan.git.user_name.clone(),
        git_email: plan.git.user_email.clone(),
        remotes: plan
            .git
            .remotes
            .iter()
            .map(|r| (r.name.clone(), r.upstream.clone(), r.gate_url.clone()))
            .collect(),
        supervise: plan.supervise,
    };
    Ok((layout, setup))
}

// ---------------------------------------------------------------------------
// Bring-up

/// What bring-up leaves for later commands (`restart` needs the addresses).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Running {
    pub domains: Vec<DomainInfo>,
}

fn resolve_env(
    spec: &ServiceSpec,
    secrets: &Secrets,
    domains: &[DomainInfo],
) -> Result<Vec<(String, String)>, Error> {
    spec.env
        .iter()
        .map(|(k, v)| {
            let value = match v {
                EnvValue::Literal(l) => render_addresses(l, domains),
                EnvValue::FromHost(var) => std::env::var(var).map_err(|_| Error::MissingToken {
                    var: var.clone(),
                    role: spec.role,
                })?,
                EnvValue::StateSecret(kind) => secrets
                    .generated(kind)
                    .ok_or_else(|| Error::Invalid {
                        what: format!("unknown generated value `{kind}` for {}", spec.role),
                    })?
                    .to_string(),
            };
            Ok((k.clone(), value))
        })
        .collect()
}

fn marker_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"@@bb-(env|known|file):([^@\n]+)@@").expect("literal regex"))
}

/// A component's files for this bring-up: addresses filled in, token values
/// read from the operator's environment and operator files read, by name
/// (none of them is ever stored in the state dir).
fn rendered(spec: &ServiceSpec, domains: &[DomainInfo]) -> Result<ServiceSpec, Error> {
    let mut s = spec.clone();
    for f in &mut s.files {
        let Ok(text) = std::str::from_utf8(&f.contents) else {
            continue;
        };
        let text = render_addresses(text, domains);
        let mut failure = None;
        let mut out: Vec<u8> = Vec::with_capacity(text.len());
        let mut last = 0;
        for c in marker_re().captures_iter(&text) {
            let m = c.get(0).expect("group 0");
            out.extend_from_slice(&text.as_bytes()[last..m.start()]);
            last = m.end();
            match &c[1] {
                // A forwarded value the agent holds: a known secret only if
                // it could be one (unset or short values and host names
                // would block ordinary requests).
                "known" => {
                    if let Ok(v) = std::env::var(&c[2]) {
                        let lines = crate::provision::known_secret_lines(&v);
                        out.extend_from_slice(lines.join("\n").as_bytes());
                    }
                }
                "env" => match std::env::var(&c[2]) {
                    Ok(v) => out.extend_from_slice(v.as_bytes()),
                    Err(_) => {
                        failure.get_or_insert(Error::MissingToken {
                            var: c[2].to_string(),
                            role: spec.role,
                        });
                    }
                },
                _ => match std::fs::read(&c[2]) {
                    Ok(v) => out.extend_from_slice(&v),
                    Err(e) => {
                        failure.get_or_insert(Error::Io {
                            path: PathBuf::from(&c[2]),
                            source: e,
                        });
                    }
                },
            }
        }
        out.extend_from_slice(&text.as_bytes()[last..]);
        if let Some(e) = failure {
            return Err(e);
        }
        f.contents = out;
    }
    Ok(s)
}

fn extra_hosts(layout: &BottleLayout, domains: &[DomainInfo]) -> Vec<(String, Ipv4Addr)> {
    let Some(internal) = domains.iter().find(|d| d.domain == Domain::Internal) else {
        return Vec::new();
    };
    layout
        .services
        .iter()
        .filter(|s| s.role != Role::Agent && s.domains.contains(&Domain::Internal))
        .filter_map(|s| Some((s.role.alias().to_string(), internal.address_of(s.role)?)))
        .collect()
}

/// Where the agent reaches supervise-mcp (its alias on the internal network).
const SUPERVISE_URL: &str = "http://supervise:9100/mcp";

/// What goes into the agent before it starts.
#[derive(Clone, Copy)]
struct Provision<'a> {
    setup: &'a AgentSetup,
    /// The working tree copied into the workspace (`start --cwd`).
    cwd: Option<&'a std::path::Path>,
}

/// Brings a layout up; on error or cancel, everything recorded in `undo` is
/// the caller's to remove.
async fn bring_up<B: Backend<Error = Error>>(
    backend: &B,
    layout: &BottleLayout,
    secrets: &Secrets,
    provision: Provision<'_>,
    cancel: &CancellationToken,
    progress: &dyn Progress,
    undo: &mut Vec<Resource>,
) -> Result<Running, Error> {
    let id = &layout.id;
    // Domains in parallel: each takes a free range (a clash between them is
    // retried by the backend like one with another bottle).
    let wanted = layout.domains();
    let creates = wanted.iter().map(|d| {
        let preferred = layout.preferred_ranges.get(d.as_str()).map(String::as_str);
        backend.create_domain(id, d, preferred)
    });
    let results = futures_util::future::join_all(creates).await;
    let mut domains = Vec::new();
    let mut first_err = None;
    for (d, r) in wanted.iter().zip(results) {
        match r {
            Ok(info) => {
                if d.owned() {
                    undo.push(Resource::Domain {
                        name: info.name.clone(),
                    });
                }
                progress.step(&format!(
                    "network {} {}",
                    info.name,
                    info.cidr.as_deref().unwrap_or("")
                ));
                domains.push(info);
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    if cancel.is_cancelled() {
        return Err(Error::Cancelled);
    }
    if layout.services.iter().any(|s| s.workspace) {
        let v = step(cancel, backend.ensure_volume(id, Role::Agent, "workspace")).await?;
        undo.push(Resource::Volume { name: v });
    }
    let sidecars: Vec<&ServiceSpec> = layout
        .services
        .iter()
        .filter(|s| s.role != Role::Agent)
        .collect();
    // Every container is created at once (each records what it made in its
    // own undo list, merged below whatever happens). The agent has no way
    // out until egress answers anyway (fail closed).
    let agent = layout.service(Role::Agent);
    let mut creates = Vec::new();
    for spec in &sidecars {
        let env = resolve_env(spec, secrets, &domains)?;
        creates.push((rendered(spec, &domains)?, env, Vec::new()));
    }
    if let Some(agent) = agent {
        let env = resolve_env(agent, secrets, &domains)?;
        creates.push((agent.clone(), env, extra_hosts(layout, &domains)));
    }
    let mut made: Vec<Vec<Resource>> = vec![Vec::new(); creates.len()];
    let results = futures_util::future::join_all(creates.iter().zip(made.iter_mut()).map(
        |((spec, env, hosts), made)| backend.create_service(id, spec, &domains, hosts, env, made),
    ))
    .await;
    undo.extend(made.into_iter().flatten());
    for r in results {
        r?;
    }
    if cancel.is_cancelled() {
        return Err(Error::Cancelled);
    }
    let all: Vec<&ServiceSpec> = sidecars.iter().copied().chain(agent).collect();
    progress.step(&format!(
        "starting {}",
        all.iter()
            .map(|s| s.role.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    // The agent's files go in while it is only created (the engine's archive
    // API needs no running container), overlapping the sidecars' start: the
    // agent then starts with its CA and workspace already in place.
    let sidecar_starts =
        futures_util::future::join_all(sidecars.iter().map(|s| backend.start_service(id, s)));
    let agent_up = async {
        if let Some(agent) = agent {
            progress.step("provisioning the agent (CA, git, prompt, skills, workspace)");
            provision_files(backend, id, provision.setup, secrets, provision.cwd, cancel).await?;
            progress.step("agent provisioned; starting it");
            backend.start_service(id, agent).await?;
        }
        Ok::<_, Error>(())
    };
    let (sidecar_results, agent_result) = step(cancel, async {
        Ok(futures_util::future::join(sidecar_starts, agent_up).await)
    })
    .await?;
    for r in sidecar_results {
        r?;
    }
    agent_result?;
    if let Some(agent) = agent {
        cancellable(cancel, backend.wait_ready(id, agent)).await?;
        progress.step(&format!("agent {} running", agent.image));
        register_mcp(backend, id, provision.setup, cancel).await?;
    }
    Ok(Running { domains })
}

/// Waits until every sidecar passes its health check (in parallel).
async fn wait_sidecars<B: Backend<Error = Error>>(
    backend: &B,
    layout: &BottleLayout,
    cancel: &CancellationToken,
    progress: &dyn Progress,
) -> Result<(), Error> {
    let sidecars: Vec<&ServiceSpec> = layout
        .services
        .iter()
        .filter(|s| s.role != Role::Agent)
        .collect();
    if sidecars.is_empty() {
        return Ok(());
    }
    let waits = sidecars.iter().map(|s| backend.wait_ready(&layout.id, s));
    let results = cancellable(cancel, async {
        Ok(futures_util::future::join_all(waits).await)
    })
    .await?;
    for r in results {
        r?;
    }
    progress.step(&format!(
        "{} healthy",
        sidecars
            .iter()
            .map(|s| s.role.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    Ok(())
}

/// Installs the CA, git identity, prompt, skills and the working tree into
/// the agent container (created or running).
async fn provision_files<B: Backend<Error = Error>>(
    backend: &B,
    id: &str,
    setup: &AgentSetup,
    secrets: &Secrets,
    cwd: Option<&std::path::Path>,
    cancel: &CancellationToken,
) -> Result<(), Error> {
    let uid = Role::Agent.uid();
    // CA: the agent is not root, so the trust store is written from outside.
    let bundle = cancellable(
        cancel,
        backend.read_file(id, Role::Agent, provision::AGENT_BUNDLE),
    )
    .await
    .unwrap_or_default();
    let mut combined = bundle;
    if !combined.ends_with(b"\n") && !combined.is_empty() {
        combined.push(b'\n');
    }
    combined.extend_from_slice(secrets.ca_cert_pem.as_bytes());
    let (ca_dir, ca_name) = split_path(provision::AGENT_CA_FILE);
    let (bundle_dir, bundle_name) = split_path(provision::AGENT_BUNDLE);
    let ca_files = [provision::file(ca_name, secrets.ca_cert_pem.clone(), 0o644)];
    let bundle_files = [provision::file(bundle_name, combined, 0o644)];
    let mut home_files = vec![provision::file(
        ".gitconfig",
        provision::gitconfig(
            setup.git_user.as_deref(),
            setup.git_email.as_deref(),
            &setup.remotes,
        ),
        0o644,
    )];
    if !setup.prompt.trim().is_empty() {
        home_files.push(provision::file(
            ".bot-bottle/prompt.md",
            setup.prompt.clone(),
            0o644,
        ));
    }
    if setup.provider.as_deref() == Some("claude") {
        let settings = if setup.supervise {
            provision::claude_settings(SUPERVISE_URL)
        } else {
            "{}".to_string()
        };
        home_files.push(provision::file(".claude/settings.json", settings, 0o644));
        if !setup.prompt.trim().is_empty() {
            home_files.push(provision::file(
                ".claude/CLAUDE.md",
                setup.prompt.clone(),
                0o644,
            ));
        }
    }
    for (name, dir) in &setup.skills {
        for entry in ignore::WalkBuilder::new(dir)
            .hidden(false)
            .follow_links(false)
            .build()
            .flatten()
        {
            let p = entry.path();
            if !p.is_file() || p.is_symlink() {
                continue;
            }
            let Ok(rel) = p.strip_prefix(dir) else {
                continue;
            };
            let data = std::fs::read(p).map_err(|e| Error::Io {
                path: p.to_path_buf(),
                source: e,
            })?;
            home_files.push(provision::file(
                &format!(".claude/skills/{name}/{}", rel.display()),
                data,
                0o644,
            ));
        }
    }
    let (a, b, c) = cancellable(cancel, async {
        Ok(futures_util::future::join3(
            backend.put_files(id, Role::Agent, ca_dir, 0, &ca_files),
            backend.put_files(id, Role::Agent, bundle_dir, 0, &bundle_files),
            backend.put_files(id, Role::Agent, &setup.home, uid, &home_files),
        )
        .await)
    })
    .await?;
    a?;
    b?;
    c?;
    if let Some(cwd) = cwd {
        let tar = crate::workspace::tar_of(cwd, uid)?;
        let files = untar_specs(&tar)?;
        cancellable(
            cancel,
            backend.put_files(id, Role::Agent, &setup.workdir, uid, &files),
        )
        .await?;
    }
    Ok(())
}

/// Registers supervise with Codex, whose CLI keeps its own MCP list (Claude
/// Code reads the settings file written by `provision_files`). Needs the
/// agent running.
async fn register_mcp<B: Backend<Error = Error>>(
    backend: &B,
    id: &str,
    setup: &AgentSetup,
    cancel: &CancellationToken,
) -> Result<(), Error> {
    if setup.provider.as_deref() == Some("codex") && setup.supervise {
        let req = ExecRequest {
            cmd: ["codex", "mcp", "add", "supervise", "--url", SUPERVISE_URL]
                .map(String::from)
                .to_vec(),
            ..Default::default()
        };
        cancellable(
            cancel,
            backend.exec(id, Role::Agent, req, OutputSink::Capture),
        )
        .await?;
    }
    Ok(())
}

fn split_path(p: &str) -> (&str, &str) {
    p.rsplit_once('/')
        .map(|(d, f)| (if d.is_empty() { "/" } else { d }, f))
        .unwrap_or(("/", p))
}

/// The working tree as file specs (regular files only; links and empty
/// directories are recreated by the tar the backend builds).
fn untar_specs(tar_bytes: &[u8]) -> Result<Vec<FileSpec>, Error> {
    let mut out = Vec::new();
    let mut a = tar::Archive::new(tar_bytes);
    let io = |e| Error::Io {
        path: "workspace".into(),
        source: e,
    };
    for e in a.entries().map_err(io)? {
        let mut e = e.map_err(io)?;
        if !e.header().entry_type().is_file() {
            continue;
        }
        let path = e.path().map_err(io)?.display().to_string();
        let mode = e.header().mode().map_err(io)?;
        let mut data = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut data).map_err(io)?;
        out.push(FileSpec {
            path,
            contents: data,
            mode,
        });
    }
    Ok(out)
}

/// Removes what bring-up created, newest first, then anything still
/// labelled for the bottle (an object whose creation was interrupted).
async fn unwind<B: Backend<Error = Error>>(
    backend: &B,
    id: &str,
    undo: Vec<Resource>,
    keep_workspace: bool,
) -> Result<(), Error> {
    let mut first_err = None;
    for r in undo.into_iter().rev() {
        if keep_workspace && matches!(&r, Resource::Volume { name } if name.ends_with("-workspace"))
        {
            continue;
        }
        if let Err(e) = backend.remove(&r).await {
            first_err.get_or_insert(e);
        }
    }
    if let Err(e) = sweep(backend, id, keep_workspace).await {
        first_err.get_or_insert(e);
    }
    first_err.map_or(Ok(()), Err)
}

async fn sweep<B: Backend<Error = Error>>(
    backend: &B,
    id: &str,
    keep_workspace: bool,
) -> Result<(), Error> {
    let found = backend.remove_all(Some(id), true).await?;
    for v in found.volumes {
        if keep_workspace && v.ends_with("-workspace") {
            continue;
        }
        backend.remove(&Resource::Volume { name: v }).await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Public operations

/// Options of `start`.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Run this instead of the agent's CLI (non-interactive: output and exit code).
    pub command: Vec<String>,
    pub keep: bool,
    pub detach: bool,
    pub cwd: Option<PathBuf>,
}

/// A bottle brought up by this process.
#[derive(Debug)]
pub struct Bottle {
    pub id: String,
    pub backend: DockerBackend,
    pub state: StateDir,
    pub setup: AgentSetup,
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

pub async fn connect(home: &Home) -> Result<DockerBackend, Error> {
    DockerBackend::connect(&home.hash()).await
}

/// Brings a bottle up from its plan (state dir, secrets, networks, sidecars,
/// agent, provisioning). Any failure or cancel removes everything again.
pub async fn bring_up_plan(
    home: &Home,
    plan: &Plan,
    cwd: Option<&std::path::Path>,
    cancel: &CancellationToken,
    progress: &dyn Progress,
) -> Result<Bottle, Error> {
    let backend = connect(home).await?;
    let state = StateDir::create(&home.root, &plan.id)?;
    let result = async {
        let secrets = Secrets::generate(&plan.id)?;
        secrets.save(&state)?;
        let (mut layout, setup) = layout_from_plan(plan, &secrets)?;
        if let Some(egress) = layout.services.iter_mut().find(|s| s.role == Role::Egress) {
            egress.audit_dir = Some(state.create_audit_dir(Role::Egress.uid())?);
        }
        state.write_layout(&layout)?;
        state.write_private(
            "agent-setup.json",
            &serde_json::to_vec(&setup).map_err(|e| Error::Invalid {
                what: e.to_string(),
            })?,
        )?;
        let agent_command = if plan.agent_container.command.is_empty() {
            default_agent_command(setup.provider.as_deref())
        } else {
            plan.agent_container.command.clone()
        };
        state.write_metadata(&Metadata {
            id: plan.id.clone(),
            agent: plan.agent.clone(),
            bottle: Some(plan.bottle.clone()),
            created: now_secs(),
            cwd: cwd.map(|c| c.to_path_buf()),
            committed_image: None,
            agent_command,
        })?;
        Ok::<_, Error>((secrets, layout, setup))
    }
    .await;
    let (secrets, layout, setup) = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = state.remove();
            return Err(e);
        }
    };
    let mut undo = Vec::new();
    let up = async {
        let provision = Provision { setup: &setup, cwd };
        let running = bring_up(
            &backend, &layout, &secrets, provision, cancel, progress, &mut undo,
        )
        .await?;
        state.write_private(
            "running.json",
            &serde_json::to_vec(&running).map_err(|e| Error::Invalid {
                what: e.to_string(),
            })?,
        )?;
        wait_sidecars(&backend, &layout, cancel, progress).await
    }
    .await;
    if let Err(e) = up {
        progress.step("bring-up failed: removing what was created");
        let _ = unwind(&backend, &plan.id, undo, false).await;
        let _ = state.remove();
        return Err(e);
    }
    Ok(Bottle {
        id: plan.id.clone(),
        backend,
        state,
        setup,
    })
}

fn default_agent_command(provider: Option<&str>) -> Vec<String> {
    match provider {
        Some("claude") => vec!["claude".into()],
        Some("codex") => vec!["codex".into()],
        _ => vec!["bash".into(), "-l".into()],
    }
}

impl Bottle {
    /// Opens a bottle of this home that exists (running or stopped).
    pub async fn open(home: &Home, id: &str) -> Result<Bottle, Error> {
        let state = StateDir::open(&home.root, id)?;
        if state.is_removed() {
            return Err(Error::Removed { id: id.to_string() });
        }
        let setup: AgentSetup =
            serde_json::from_slice(&state.read("agent-setup.json")?).map_err(|e| {
                Error::Corrupt {
                    path: state.path.join("agent-setup.json"),
                    detail: e.to_string(),
                }
            })?;
        let backend = connect(home).await?;
        Ok(Bottle {
            id: id.to_string(),
            backend,
            state,
            setup,
        })
    }

    fn request(&self, cmd: Vec<String>) -> ExecRequest {
        ExecRequest {
            cmd,
            env: Vec::new(),
            user: Some(self.setup.user.clone()),
            working_dir: Some(self.setup.workdir.clone()),
        }
    }

    async fn require_running(&self) -> Result<(), Error> {
        match self
            .backend
            .container_running(&self.id, Role::Agent)
            .await?
        {
            Some(true) => Ok(()),
            _ => Err(Error::NotRunning {
                id: self.id.clone(),
            }),
        }
    }

    /// Runs a command in the agent, streaming its output; returns its exit code.
    pub async fn run(&self, cmd: Vec<String>) -> Result<i64, Error> {
        self.require_running().await?;
        // On a terminal, what the command prints is filtered like the pty of
        // an interactive session; into a file or pipe it goes byte for byte.
        let mut out: Box<dyn Write + Send> = if std::io::stdout().is_terminal() {
            Box::new(crate::terminal::Screen::new(std::io::stdout()))
        } else {
            Box::new(std::io::stdout())
        };
        let mut err: Box<dyn Write + Send> = if std::io::stderr().is_terminal() {
            Box::new(crate::terminal::Screen::new(std::io::stderr()))
        } else {
            Box::new(std::io::stderr())
        };
        let r = self
            .backend
            .exec(
                &self.id,
                Role::Agent,
                self.request(cmd),
                OutputSink::Stream {
                    stdout: &mut *out,
                    stderr: &mut *err,
                },
            )
            .await?;
        Ok(r.exit_code)
    }

    /// Runs a command in the agent and captures its output.
    pub async fn capture(&self, cmd: Vec<String>) -> Result<crate::backend::ExecOutput, Error> {
        self.require_running().await?;
        self.backend
            .exec(
                &self.id,
                Role::Agent,
                self.request(cmd),
                OutputSink::Capture,
            )
            .await
    }

    /// Attaches the operator's terminal to `cmd` (the agent's CLI by default).
    pub async fn attach(&self, cmd: Vec<String>) -> Result<i64, Error> {
        self.require_running().await?;
        self.backend
            .exec_interactive(&self.id, Role::Agent, self.request(cmd))
            .await
    }

    /// The session `start`/`resume` run: CMD non-interactively, or the agent's CLI.
    pub async fn session(
        &self,
        command: &[String],
        cancel: &CancellationToken,
    ) -> Result<i64, Error> {
        let fut = async {
            if command.is_empty() {
                let cmd = self.state.metadata()?.agent_command;
                self.attach(cmd).await
            } else {
                self.run(command.to_vec()).await
            }
        };
        // In raw mode the terminal sends Ctrl-C to the agent as a byte, so a
        // cancel here only comes from SIGTERM or a SIGINT sent by `kill`.
        cancellable(cancel, fut).await
    }

    /// Removes every object of the bottle; `keep` spares the workspace and state.
    pub async fn teardown(&self, keep_workspace: bool) -> Result<(), Error> {
        sweep(&self.backend, &self.id, keep_workspace).await?;
        if !keep_workspace {
            // The audit log stays readable until `cleanup`.
            self.state.retire()?;
        }
        Ok(())
    }
}

/// `start`: bring-up, then the session (or `--detach`), then teardown unless kept.
/// Returns the process exit code.
pub async fn start(
    home: &Home,
    plan: &Plan,
    opts: &StartOptions,
    progress: &dyn Progress,
) -> Result<i32, Error> {
    let cancel = CancellationToken::new();
    let signals = cancel_on_signals(cancel.clone());
    let result = start_with(home, plan, opts, progress, &cancel).await;
    signals.abort();
    result
}

pub async fn start_with(
    home: &Home,
    plan: &Plan,
    opts: &StartOptions,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<i32, Error> {
    let bottle = bring_up_plan(home, plan, opts.cwd.as_deref(), cancel, progress).await?;
    if opts.detach {
        progress.step(&format!(
            "bottle {} is up; `orchestrator exec {0}` to enter, `orchestrator stop {0}` to stop",
            bottle.id
        ));
        println!("{}", bottle.id);
        return Ok(0);
    }
    let code = bottle.session(&opts.command, cancel).await;
    let keep = opts.keep;
    if keep {
        progress.step(&format!(
            "keeping bottle {} (`orchestrator resume {0}`)",
            bottle.id
        ));
    } else {
        progress.step("tearing down");
    }
    let down = if keep {
        Ok(())
    } else {
        bottle.teardown(false).await
    };
    let code = code?;
    down?;
    Ok(i32::try_from(code).unwrap_or(1))
}

/// `exec ID [-- CMD]`: a command (output and exit code) or an interactive shell.
pub async fn exec(home: &Home, id: &str, command: &[String]) -> Result<i32, Error> {
    let bottle = Bottle::open(home, id).await?;
    let code = if command.is_empty() {
        bottle.attach(vec!["bash".into(), "-l".into()]).await?
    } else {
        bottle.run(command.to_vec()).await?
    };
    Ok(i32::try_from(code).unwrap_or(1))
}

/// One line of `list`.
#[derive(Debug, Clone, Serialize)]
pub struct ListEntry {
    pub id: String,
    pub agent: Option<String>,
    pub status: String,
    pub services: BTreeMap<String, String>,
}

pub async fn list_bottles(home: &Home) -> Result<Vec<ListEntry>, Error> {
    let backend = connect(home).await?;
    let found = backend.list().await?;
    let mut ids: Vec<String> = StateDir::list(&home.root);
    for b in &found {
        if !ids.contains(&b.id) {
            ids.push(b.id.clone());
        }
    }
    ids.sort();
    Ok(ids
        .into_iter()
        .map(|id| {
            let services = found
                .iter()
                .find(|b| b.id == id)
                .map(|b| b.services.clone())
                .unwrap_or_default();
            let agent = StateDir::open(&home.root, &id)
                .ok()
                .and_then(|s| s.metadata().ok())
                .map(|m| m.agent);
            let removed = StateDir::open(&home.root, &id).is_ok_and(|s| s.is_removed());
            let status = if services.is_empty() && removed {
                "removed (audit log kept until cleanup)".to_string()
            } else if services.is_empty() {
                "stopped".to_string()
            } else if services.values().all(|s| s == "running") {
                "running".to_string()
            } else if agent.is_none() {
                "orphaned (run cleanup)".to_string()
            } else {
                "partial".to_string()
            };
            ListEntry {
                id,
                agent,
                status,
                services,
            }
        })
        .collect())
}

pub async fn list(home: &Home) -> Result<i32, Error> {
    let entries = list_bottles(home).await?;
    if entries.is_empty() {
        println!("no bottles in {}", home.root.display());
        return Ok(0);
    }
    println!("{:<28} {:<16} {:<10} SERVICES", "ID", "AGENT", "STATUS");
    for e in entries {
        let services = e
            .services
            .iter()
            .map(|(r, s)| format!("{r}:{s}"))
            .collect::<Vec<_>>()
            .join(" ");
        println!(
            "{:<28} {:<16} {:<10} {}",
            e.id,
            e.agent.unwrap_or_else(|| "-".into()),
            e.status,
            services
        );
    }
    Ok(0)
}

pub async fn info(home: &Home, id: &str) -> Result<i32, Error> {
    let state = StateDir::open(&home.root, id)?;
    let meta = state.metadata()?;
    let entries = list_bottles(home).await?;
    let entry = entries.into_iter().find(|e| e.id == id);
    let running: Option<Running> = state
        .read("running.json")
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    // Container states and names come from the engine, but may carry what
    // a bottle wrote (a health check's output): printed escaped.
    let e = crate::terminal::escape;
    println!("id:        {}", e(&meta.id));
    println!("agent:     {}", e(&meta.agent));
    if let Some(b) = &meta.bottle {
        println!("bottle:    {}", e(b));
    }
    println!("state:     {}", e(&state.path.display().to_string()));
    println!(
        "status:    {}",
        e(entry.as_ref().map_or("stopped", |e| e.status.as_str()))
    );
    if let Some(img) = &meta.committed_image {
        println!("committed: {}", e(img));
    }
    if let Some(entry) = &entry {
        for (role, st) in &entry.services {
            println!("  {:<12} {}", e(&role.to_string()), e(&st.to_string()));
        }
    }
    if let Some(r) = running {
        for d in r.domains {
            println!(
                "  network {:<28} {}",
                e(&d.name),
                e(&d.cidr.map(|c| c.to_string()).unwrap_or_default())
            );
        }
    }
    Ok(0)
}

/// `stop`: removes containers and networks, keeps the workspace and state for `resume`.
pub async fn stop(home: &Home, id: &str) -> Result<i32, Error> {
    let bottle = Bottle::open(home, id).await?;
    bottle.teardown(true).await?;
    let _ = std::fs::remove_file(bottle.state.path.join("running.json"));
    eprintln!(
        "bot-bottle: stopped {id}; `orchestrator resume {id}` brings it back with its workspace"
    );
    Ok(0)
}

/// `resume`: brings a kept bottle back (workspace volume, committed image),
/// or attaches to it when it is still running, then runs the session.
pub async fn resume(home: &Home, id: &str, progress: &dyn Progress) -> Result<i32, Error> {
    let cancel = CancellationToken::new();
    let signals = cancel_on_signals(cancel.clone());
    let r = resume_with(home, id, progress, &cancel).await;
    signals.abort();
    r
}

pub async fn resume_with(
    home: &Home,
    id: &str,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<i32, Error> {
    let bottle = Bottle::open(home, id).await?;
    if bottle.backend.container_running(id, Role::Agent).await? != Some(true) {
        bring_back(&bottle, cancel, progress).await?;
    }
    let code = bottle.session(&[], cancel).await?;
    Ok(i32::try_from(code).unwrap_or(1))
}

/// Refuses the layout of a bottle whose saved configuration an earlier release
/// wrote with a hole this one closes: bringing it back as saved would reopen it.
pub fn check_current(layout: &BottleLayout) -> Result<(), Error> {
    // Before the gate network, egress served the git remotes' ssh tunnels on
    // the agent's own listener (raw TCP to the forge, around the push scan).
    let gate_without_network = layout
        .service(Role::GitGate)
        .is_some_and(|g| !g.domains.contains(&Domain::Gate));
    if gate_without_network {
        return Err(Error::Outdated {
            id: layout.id.clone(),
            reason: "its egress serves the git remotes' ssh tunnels to the agent (fixed since \
                     git-gate has a network of its own)"
                .into(),
            volume: crate::docker::volume_name(&layout.id, Role::Agent, "workspace"),
        });
    }
    Ok(())
}

/// Brings the layout an earlier release saved up to this release's
/// guarantees (what cannot be is refused by [`check_current`]): its
/// `known-secrets` held the real token values (now the canary and the
/// agent's forwarded values only: egress and git-gate never hold a token),
/// and its containers had no CPU cap. A layout of this release is left as
/// it is.
pub fn upgrade_layout(layout: &mut BottleLayout, secrets: &Secrets) {
    let forwarded: Vec<String> = layout
        .service(Role::Agent)
        .map(|a| {
            a.env
                .values()
                .filter_map(|v| match v {
                    EnvValue::FromHost(var) => Some(var.clone()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let known = secrets
        .file_for("known-secrets", &forwarded, &BTreeMap::new())
        .unwrap_or_default();
    for s in &mut layout.services {
        if s.nano_cpus == 0 {
            s.nano_cpus = cpu_cap(s.role);
        }
        for f in &mut s.files {
            if f.path == "known-secrets" {
                f.contents = known.clone();
            }
        }
    }
}

/// Brings a stopped bottle up again from its state.
pub async fn bring_back(
    bottle: &Bottle,
    cancel: &CancellationToken,
    progress: &dyn Progress,
) -> Result<(), Error> {
    let id = &bottle.id;
    let mut layout = bottle.state.layout()?;
    check_current(&layout)?;
    let secrets = Secrets::load(&bottle.state)?;
    upgrade_layout(&mut layout, &secrets);
    // Whatever is left of a crashed run goes first; the workspace stays.
    sweep(&bottle.backend, id, true).await?;
    let meta = bottle.state.metadata()?;
    if let (Some(img), Some(agent)) = (&meta.committed_image, layout.service_mut(Role::Agent)) {
        agent.image = img.clone();
    }
    progress.step(&format!("resuming {id}"));
    let mut undo = Vec::new();
    let up = async {
        let running = bring_up(
            &bottle.backend,
            &layout,
            &secrets,
            Provision {
                setup: &bottle.setup,
                cwd: None,
            },
            cancel,
            progress,
            &mut undo,
        )
        .await?;
        bottle.state.write_private(
            "running.json",
            &serde_json::to_vec(&running).map_err(|e| Error::Invalid {
                what: e.to_string(),
            })?,
        )?;
        wait_sidecars(&bottle.backend, &layout, cancel, progress).await
    }
    .await;
    if let Err(e) = up {
        let _ = unwind(&bottle.backend, id, undo, true).await;
        return Err(e);
    }
    Ok(())
}

/// `restart ID ROLE [--image IMAGE]`: replaces one sidecar in place (same
/// networks, addresses and aliases; config re-rendered) while the agent runs on.
pub async fn restart(
    home: &Home,
    id: &str,
    role: &str,
    image: Option<&str>,
    progress: &dyn Progress,
) -> Result<i32, Error> {
    let role = Role::parse(role)
        .filter(|r| *r != Role::Agent)
        .ok_or_else(|| Error::Invalid {
            what: format!("unknown sidecar `{role}` (egress, cred-proxy, git-gate, supervise)"),
        })?;
    let bottle = Bottle::open(home, id).await?;
    bottle.require_running().await?;
    let mut layout = bottle.state.layout()?;
    check_current(&layout)?;
    let secrets = Secrets::load(&bottle.state)?;
    upgrade_layout(&mut layout, &secrets);
    let running: Running =
        serde_json::from_slice(&bottle.state.read("running.json")?).map_err(|e| {
            Error::Corrupt {
                path: bottle.state.path.join("running.json"),
                detail: e.to_string(),
            }
        })?;
    let spec = layout.service_mut(role).ok_or_else(|| Error::Invalid {
        what: format!("bottle {id} has no {role}"),
    })?;
    if let Some(img) = image {
        spec.image = img.to_string();
    }
    let spec = spec.clone();
    let name = crate::docker::container_name(id, role);
    progress.step(&format!("replacing {role} ({})", spec.image));
    bottle
        .backend
        .remove(&Resource::Service { role, name })
        .await?;
    bottle
        .backend
        .remove(&Resource::Volume {
            name: crate::docker::volume_name(id, role, "config"),
        })
        .await?;
    let env = resolve_env(&spec, &secrets, &running.domains)?;
    let rendered_spec = rendered(&spec, &running.domains)?;
    let mut created = Vec::new();
    bottle
        .backend
        .create_service(
            id,
            &rendered_spec,
            &running.domains,
            &[],
            &env,
            &mut created,
        )
        .await?;
    bottle.backend.start_service(id, &rendered_spec).await?;
    bottle.backend.wait_ready(id, &rendered_spec).await?;
    bottle.state.write_layout(&layout)?;
    progress.step(&format!("{role} is back and healthy"));
    Ok(0)
}

/// `commit ID`: snapshots the agent container; `resume` boots from it.
pub async fn commit(home: &Home, id: &str) -> Result<i32, Error> {
    let bottle = Bottle::open(home, id).await?;
    bottle.require_running().await?;
    let tag = format!("c{}", now_secs());
    let repo = format!("bot-bottle/commit-{id}");
    bottle.backend.commit_agent(id, &repo, &tag).await?;
    let image = format!("{repo}:{tag}");
    let mut meta = bottle.state.metadata()?;
    meta.committed_image = Some(image.clone());
    bottle.state.write_metadata(&meta)?;
    println!("{image}");
    Ok(0)
}

/// `cleanup`: what bottles of this home left over. By default only what
/// holds no live work: everything of an orphan (objects or a state dir
/// without a bottle's metadata) and of a removed bottle (its kept audit
/// log), and the stopped containers and networks of
/// a bottle whose agent is not running (its state and workspace stay for
/// `resume`, as after `stop`). A running bottle and a kept one are listed as
/// kept. `all` removes everything of every bottle, after showing the list.
pub async fn cleanup(home: &Home, yes: bool, all: bool) -> Result<i32, Error> {
    let backend = connect(home).await?;
    let found = backend.leftovers(None).await?;
    let summaries = backend.list().await?;
    let states = StateDir::list(&home.root);
    let mut ids: std::collections::BTreeSet<String> = found.bottles.clone();
    ids.extend(states.iter().cloned());
    let mut plan: Vec<(String, Sweep, crate::backend::Leftovers)> = Vec::new();
    let mut kept: Vec<String> = Vec::new();
    for id in ids {
        let objects = backend.leftovers(Some(&id)).await?;
        let state = StateDir::open(&home.root, &id);
        let has_state = state.is_ok();
        // A removed bottle keeps only its audit log, for `logs`: no live work.
        let removed = state.is_ok_and(|s| s.is_removed());
        let agent_running = summaries.iter().any(|b| {
            b.id == id
                && b.services
                    .get(Role::Agent.as_str())
                    .is_some_and(|s| s == "running")
        });
        let sweep = if all || !has_state || removed {
            Sweep::Everything
        } else if agent_running {
            kept.push(format!("{id} (running)"));
            continue;
        } else if !objects.services.is_empty() || !objects.domains.is_empty() {
            Sweep::Stopped
        } else {
            kept.push(format!("{id} (kept for resume)"));
            continue;
        };
        plan.push((id, sweep, objects));
    }
    if plan.is_empty() {
        eprintln!("bot-bottle: nothing to clean up in {}", home.root.display());
        print_kept(&kept);
        return Ok(0);
    }
    eprintln!(
        "bot-bottle: cleanup of {} will remove:",
        home.root.display()
    );
    for (id, sweep, objects) in &plan {
        let what = match sweep {
            Sweep::Everything => "everything",
            Sweep::Stopped => "stopped containers and networks; state and workspace stay",
        };
        eprintln!("  bottle {id}: {what}");
        for c in &objects.services {
            eprintln!("    container {c}");
        }
        for n in &objects.domains {
            eprintln!("    network   {n}");
        }
        if matches!(sweep, Sweep::Everything) {
            for v in &objects.volumes {
                eprintln!("    volume    {v}");
            }
            if states.contains(id) {
                eprintln!("    state     {id}");
            }
        }
    }
    print_kept(&kept);
    if !yes && !confirm("remove this?")? {
        eprintln!("bot-bottle: nothing removed");
        return Ok(1);
    }
    // With --all, everything labelled for the home, also what a create still
    // in flight adds after the listing above.
    let scope: Vec<(Option<&str>, bool)> = if all {
        vec![(None, false)]
    } else {
        plan.iter()
            .map(|(id, sweep, _)| (Some(id.as_str()), matches!(sweep, Sweep::Stopped)))
            .collect()
    };
    for (bottle, keep_volumes) in scope {
        if !sweep_until_gone(&backend, bottle, keep_volumes).await? {
            eprintln!("bot-bottle: some resources are still there; run cleanup again");
            return Ok(1);
        }
    }
    for (id, sweep, _) in &plan {
        if matches!(sweep, Sweep::Everything) && states.contains(id) {
            StateDir {
                path: StateDir::root(&home.root).join(id),
            }
            .remove()?;
        }
    }
    eprintln!("bot-bottle: cleaned up");
    Ok(0)
}

/// What `cleanup` removes of one bottle.
#[derive(Debug, Clone, Copy)]
enum Sweep {
    Everything,
    /// Containers and networks only (the bottle is as after `stop`).
    Stopped,
}

fn print_kept(kept: &[String]) {
    if kept.is_empty() {
        return;
    }
    eprintln!("bot-bottle: kept (`cleanup --all` removes these too):");
    for k in kept {
        eprintln!("  bottle {k}");
    }
}

/// Removes a bottle's objects (or the home's: `None`) until none is left.
/// A killed orchestrator may have left a create request in flight that the
/// engine completes after the listing (a container then holds a volume
/// being removed: 409 "in use"), so it looks again after a moment, and
/// reports only an error the last round still hits. `false`: something is
/// still there after the last round.
async fn sweep_until_gone(
    backend: &DockerBackend,
    bottle: Option<&str>,
    keep_volumes: bool,
) -> Result<bool, Error> {
    for round in 1..=8 {
        let removed = backend.remove_all(bottle, keep_volumes).await;
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        let l = backend.leftovers(bottle).await?;
        if l.services.is_empty() && l.domains.is_empty() && (keep_volumes || l.volumes.is_empty()) {
            return Ok(true);
        }
        if round == 8 {
            removed?;
        }
    }
    Ok(false)
}

fn confirm(question: &str) -> Result<bool, Error> {
    if !std::io::stdin().is_terminal() {
        eprintln!("bot-bottle: {question} (not a terminal: pass -y to confirm)");
        return Ok(false);
    }
    eprint!("bot-bottle: {question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| Error::Io {
            path: "stdin".into(),
            source: e,
        })?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

/// One log line made readable: JSON records become "time level message k=v".
pub fn humanize(line: &str) -> String {
    let Ok(serde_json::Value::Object(map)) = serde_json::from_str::<serde_json::Value>(line) else {
        return line.to_string();
    };
    let mut fields: Vec<(String, serde_json::Value)> = Vec::new();
    let mut head = String::new();
    for key in ["timestamp", "time", "ts"] {
        if let Some(t) = map.get(key).and_then(|v| v.as_str()) {
            head.push_str(t);
            head.push(' ');
            break;
        }
    }
    if let Some(l) = map.get("level").and_then(|v| v.as_str()) {
        head.push_str(&format!("{l:<5} "));
    }
    let mut flat = serde_json::Map::new();
    for (k, v) in &map {
        if let (true, serde_json::Value::Object(inner)) = (k == "fields" || k == "span", v) {
            for (ik, iv) in inner {
                flat.insert(ik.clone(), iv.clone());
            }
        } else {
            flat.insert(k.clone(), v.clone());
        }
    }
    // Audit records (one per request) carry a decision and no log message.
    if flat.contains_key("decision") && flat.contains_key("method") && !flat.contains_key("message")
    {
        return audit_line(&head, &flat);
    }
    if let Some(m) = flat.get("message").and_then(|v| v.as_str()) {
        head.push_str(m);
    }
    for (k, v) in flat {
        if [
            "timestamp",
            "time",
            "ts",
            "level",
            "message",
            "target",
            "spans",
            "threadId",
        ]
        .contains(&k.as_str())
        {
            continue;
        }
        fields.push((k, v));
    }
    for (k, v) in fields {
        let v = match v {
            serde_json::Value::String(s) => s,
            v => v.to_string(),
        };
        head.push_str(&format!(" {k}={v}"));
    }
    head
}

/// One egress audit record as a sentence:
/// `TIME DENY  GET http://host:80/path -> 403 (route: ...)`.
fn audit_line(head: &str, f: &serde_json::Map<String, serde_json::Value>) -> String {
    let get = |k: &str| match f.get(k) {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Null) | None => String::new(),
        Some(v) => v.to_string(),
    };
    let mut line = format!(
        "{head}{:<5} {} {}://{}:{}{} -> {}",
        get("decision").to_ascii_uppercase(),
        get("method"),
        get("scheme"),
        get("host"),
        get("port"),
        get("path"),
        get("status")
    );
    let route = get("route");
    if !route.is_empty() {
        line.push_str(&format!(" route={route}"));
    }
    for k in ["kind", "rule", "rule_id", "detail"] {
        let v = get(k);
        if !v.is_empty() {
            line.push_str(&format!(" {k}={v}"));
        }
    }
    line.push_str(&format!(
        " ({} B up, {} B down, {} ms)",
        get("bytes_up"),
        get("bytes_down"),
        get("duration_ms")
    ));
    line
}

/// `logs ID [--sidecar ROLE] [--follow]`: the audit trail by default, read
/// from the bottle's state dir (so also after `stop` and after the bottle
/// is removed); a sidecar's container log with `--sidecar`. Bottle-written
/// text is printed escaped.
pub async fn logs(
    home: &Home,
    id: &str,
    sidecar: Option<&str>,
    follow: bool,
) -> Result<i32, Error> {
    let role = match sidecar {
        None => None,
        Some(s) => Some(Role::parse(s).ok_or_else(|| Error::Invalid {
            what: format!("unknown role `{s}` (agent, egress, cred-proxy, git-gate, supervise)"),
        })?),
    };
    let state = StateDir::open(&home.root, id);
    if let (None, Ok(state)) = (role, &state) {
        // A bottle created before the audit log moved to the state dir has
        // it only in egress's container log.
        if state.path.join(crate::state::AUDIT_DIR).is_dir() {
            return audit_log(home, state, id, follow).await;
        }
    }
    let role = role.unwrap_or(Role::Egress);
    let backend = connect(home).await?;
    if backend.container_running(id, role).await?.is_none() {
        return Err(match state {
            Ok(_) => Error::NotRunning { id: id.to_string() },
            Err(e) => e,
        });
    }
    let mut stdout = std::io::stdout();
    backend
        .stream_logs(id, role, follow, |l| {
            let _ = writeln!(stdout, "{}", crate::terminal::escape(&humanize(l)));
        })
        .await?;
    Ok(0)
}

/// Prints the audit log's files, oldest first; with `follow`, then what is
/// appended (across rotations) until egress stops or Ctrl-C.
async fn audit_log(home: &Home, state: &StateDir, id: &str, follow: bool) -> Result<i32, Error> {
    use std::os::unix::fs::MetadataExt;
    let mut stdout = std::io::stdout();
    let mut print = |text: &str| {
        for l in text.lines().filter(|l| !l.is_empty()) {
            let _ = writeln!(stdout, "{}", crate::terminal::escape(&humanize(l)));
        }
        let _ = stdout.flush();
    };
    let files = state.audit_files();
    let current = state
        .path
        .join(crate::state::AUDIT_DIR)
        .join(crate::plan::AUDIT_FILE);
    let mut offset = 0u64;
    for f in &files {
        let bytes = read_audit_file(f)?;
        if *f == current {
            offset = bytes.len() as u64;
        }
        print(&String::from_utf8_lossy(&bytes));
    }
    if !follow {
        return Ok(0);
    }
    let backend = connect(home).await?;
    let cancel = CancellationToken::new();
    let _signals = cancel_on_signals(cancel.clone());
    let mut partial = Vec::new();
    let mut ino = std::fs::symlink_metadata(&current).map(|m| m.ino()).ok();
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return Ok(0),
            _ = tokio::time::sleep(std::time::Duration::from_millis(250)) => {}
        }
        let now_ino = std::fs::symlink_metadata(&current).map(|m| m.ino()).ok();
        let bytes = read_audit_file(&current).unwrap_or_default();
        if now_ino != ino || (bytes.len() as u64) < offset {
            // Rotated: the file holds only what came after.
            offset = 0;
            ino = now_ino;
        }
        partial.extend_from_slice(&bytes[offset as usize..]);
        offset = bytes.len() as u64;
        // Only whole lines; the rest waits for its newline.
        if let Some(end) = partial.iter().rposition(|&b| b == b'\n') {
            let whole: Vec<u8> = partial.drain(..=end).collect();
            print(&String::from_utf8_lossy(&whole));
        }
        if backend.container_running(id, Role::Egress).await? != Some(true) {
            return Ok(0);
        }
    }
}

/// One audit file, never through a symlink (egress writes that directory).
fn read_audit_file(path: &std::path::Path) -> Result<Vec<u8>, Error> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |e| Error::Io {
        path: path.to_path_buf(),
        source: e,
    };
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(io)?;
    let mut out = Vec::new();
    f.read_to_end(&mut out).map_err(io)?;
    Ok(out)
}

// ---------------------------------------------------------------------------
// Command line (main.rs dispatches here)

/// Maps a lifecycle outcome to the process exit code; planning errors keep
/// their own type (exit 2 for a broken manifest).
fn report(r: Result<i32, Error>) -> Result<u8, crate::Error> {
    match r {
        Ok(code) => Ok(u8::try_from(code.clamp(0, 255)).unwrap_or(1)),
        Err(Error::Plan(e)) => Err(e),
        Err(e) => {
            eprintln!("error: {e}");
            Ok(u8::try_from(e.exit_code()).unwrap_or(1))
        }
    }
}

fn cli_home() -> Result<Home, crate::Error> {
    Home::from_env()
}

/// Makes every image the plan names exist (built-in ones by content hash,
/// the agent's own Dockerfile, overrides checked): nothing is ever pulled.
async fn ensure_plan_images(plan: &Plan) -> Result<(), crate::Error> {
    let docker = crate::images::connect_engine().await?;
    crate::images::ensure_plan_images(
        &docker,
        plan,
        &crate::images::StderrProgress { quiet: false },
    )
    .await?;
    Ok(())
}

/// `orchestrator start AGENT [...]` (not `--dry-run`).
pub async fn cli_start(args: &crate::cli::StartArgs) -> Result<u8, crate::Error> {
    let progress = StderrProgress::default();
    let home = cli_home()?;
    let plan = crate::dryrun::plan_for(&home, args).await?;
    plan::check_ready(&plan)?;
    eprint!(
        "{}",
        crate::dryrun::human(&plan, std::io::stderr().is_terminal())
    );
    if !args.yes
        && !confirm(&format!("start bottle {}?", plan.id))
            .map_err(|e| crate::Error::NotReady(vec![e.to_string()]))?
    {
        eprintln!("bot-bottle: not started");
        return Ok(1);
    }
    ensure_plan_images(&plan).await?;
    let opts = StartOptions {
        command: args.command.clone(),
        keep: args.keep,
        detach: args.detach,
        cwd: args.cwd.clone(),
    };
    progress.step("images ready");
    report(start(&home, &plan, &opts, &progress).await)
}

pub async fn cli_exec(id: &str, command: &[String]) -> Result<u8, crate::Error> {
    report(exec(&cli_home()?, id, command).await)
}

pub async fn cli_list() -> Result<u8, crate::Error> {
    report(list(&cli_home()?).await)
}

pub async fn cli_info(id: &str) -> Result<u8, crate::Error> {
    report(info(&cli_home()?, id).await)
}

pub async fn cli_stop(id: &str) -> Result<u8, crate::Error> {
    report(stop(&cli_home()?, id).await)
}

pub async fn cli_resume(id: &str) -> Result<u8, crate::Error> {
    report(resume(&cli_home()?, id, &StderrProgress::default()).await)
}

pub async fn cli_restart(id: &str, role: &str, image: Option<&str>) -> Result<u8, crate::Error> {
    report(restart(&cli_home()?, id, role, image, &StderrProgress::default()).await)
}

pub async fn cli_commit(id: &str) -> Result<u8, crate::Error> {
    report(commit(&cli_home()?, id).await)
}

pub async fn cli_cleanup(yes: bool, all: bool) -> Result<u8, crate::Error> {
    report(cleanup(&cli_home()?, yes, all).await)
}

pub async fn cli_logs(id: &str, sidecar: Option<&str>, follow: bool) -> Result<u8, crate::Error> {
    report(logs(&cli_home()?, id, sidecar, follow).await)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planned_addresses_become_this_bring_ups_addresses() {
        let mut planned = BTreeMap::new();
        planned.insert(
            "10.213.0.3".parse().unwrap(),
            addr_token("broker", Role::CredProxy),
        );
        let text = "cred_proxy = \"10.213.0.3:9099\"\nother = \"10.213.0.30\"\nssrf = [\"110.213.0.3/32\"]";
        let t = templatize(text, &planned);
        assert!(t.contains("@@bb-addr:broker:cred-proxy@@:9099"), "{t}");
        assert!(
            t.contains("10.213.0.30"),
            "a longer address is not a match: {t}"
        );
        assert!(t.contains("110.213.0.3/32"), "{t}");
        let domains = vec![DomainInfo {
            domain: Domain::Broker,
            name: "bb-x-broker".into(),
            base: Some("10.213.7.32".parse().unwrap()),
            cidr: Some("10.213.7.32/28".into()),
        }];
        let r = render_addresses(&t, &domains);
        assert!(r.contains("cred_proxy = \"10.213.7.35:9099\""), "{r}");
    }

    #[test]
    fn a_bottle_saved_before_the_gate_network_is_not_brought_back() {
        let service = |role: Role, domains: Vec<Domain>| ServiceSpec {
            role,
            image: "img".into(),
            cmd: None,
            env: BTreeMap::new(),
            domains,
            files: Vec::new(),
            init: false,
            read_only: true,
            tmpfs: Vec::new(),
            workspace: false,
            audit_dir: None,
            memory_bytes: 1 << 20,
            pids_limit: 16,
            nano_cpus: 1_000_000_000,
            readiness: Readiness::Running,
            sandboxed: false,
        };
        let mut layout = BottleLayout {
            id: "old-123456".into(),
            preferred_ranges: BTreeMap::new(),
            services: vec![
                service(Role::Egress, vec![Domain::Internal, Domain::Egress]),
                service(Role::GitGate, vec![Domain::Internal]),
            ],
            connections: Vec::new(),
        };
        let e = check_current(&layout).unwrap_err().to_string();
        assert!(
            e.contains("old-123456")
                && e.contains("bb-old-123456-agent-workspace")
                && e.contains("cleanup"),
            "{e}"
        );
        layout.services[1].domains.push(Domain::Gate);
        assert!(check_current(&layout).is_ok());
        layout.services.pop();
        assert!(check_current(&layout).is_ok(), "no git, nothing to fix");
    }

    #[test]
    fn agent_proxy_settings_in_both_cases() {
        let env = agent_defaults(&[Role::Agent, Role::Egress, Role::GitGate]);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("http_proxy"), Some("http://egress:3128"));
        assert_eq!(get("HTTPS_PROXY"), Some("http://egress:3128"));
        assert!(get("NO_PROXY").unwrap().contains("git-gate"));
        assert!(!get("NO_PROXY").unwrap().contains("egress"));
    }

    #[test]
    fn json_logs_read_like_sentences() {
        let l = r#"{"timestamp":"T","level":"INFO","fields":{"message":"request","host":"api.example.test","decision":"allow"},"target":"egress"}"#;
        assert_eq!(
            humanize(l),
            "T INFO  request decision=allow host=api.example.test"
        );
        assert_eq!(humanize("plain"), "plain");
        let audit = r#"{"time":"T","bottle":"b","decision":"deny","kind":"route","method":"GET","scheme":"http","host":"x.test","port":80,"path":"/","status":403,"bytes_up":0,"bytes_down":0,"duration_ms":1}"#;
        assert_eq!(
            humanize(audit),
            "T DENY  GET http://x.test:80/ -> 403 kind=route (0 B up, 0 B down, 1 ms)"
        );
    }
}
