//! Bring-up as a stack of undo steps: networks, sidecars, agent,
//! provisioning; any error or cancel removes what was created.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::*;
use crate::backend::{
    Backend, BottleLayout, Domain, DomainInfo, EnvValue, ExecRequest, FileSpec, OutputSink,
    Resource, Role, ServiceSpec,
};
use crate::docker::DockerBackend;
use crate::home::Home;
use crate::plan::Plan;
use crate::provision::{self, Secrets};
use crate::state::{Metadata, StateDir};

#[cfg(test)]
mod undo_tests;

// ---------------------------------------------------------------------------
// Bring-up

/// What bring-up leaves for later commands (`restart` needs the addresses).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Running {
    pub domains: Vec<DomainInfo>,
}

pub(super) fn resolve_env(
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

pub(super) fn marker_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"@@bb-(env|known|file):([^@\n]+)@@").expect("literal regex"))
}

/// A component's files for this bring-up: addresses filled in, token values
/// read from the operator's environment and operator files read, by name
/// (none of them is ever stored in the state dir).
pub(super) fn rendered(spec: &ServiceSpec, domains: &[DomainInfo]) -> Result<ServiceSpec, Error> {
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

pub(super) fn extra_hosts(
    layout: &BottleLayout,
    domains: &[DomainInfo],
) -> Vec<(String, Ipv4Addr)> {
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

/// Where the agent reaches supervise-mcp (its alias and port on the internal network).
pub(super) fn supervise_url() -> String {
    let s = Role::Supervise;
    format!(
        "http://{}:{}/mcp",
        s.alias(),
        s.port().expect("supervise listens on a port")
    )
}

/// What goes into the agent before it starts.
#[derive(Clone, Copy)]
pub(super) struct Provision<'a> {
    setup: &'a AgentSetup,
    /// The working tree copied into the workspace (`start --cwd`).
    cwd: Option<&'a std::path::Path>,
}

/// Creates the layout's domains in parallel: each takes a free range (a
/// clash between them is retried by the backend like one with another
/// bottle). Every one created is in `undo`, also when another one failed.
async fn create_domains<B: Backend<Error = Error>>(
    backend: &B,
    layout: &BottleLayout,
    progress: &dyn Progress,
    undo: &mut Vec<Resource>,
) -> Result<Vec<DomainInfo>, Error> {
    let id = &layout.id;
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
    Ok(domains)
}

/// Brings a layout up; on error or cancel, everything recorded in `undo` is
/// the caller's to remove.
pub(super) async fn bring_up<B: Backend<Error = Error>>(
    backend: &B,
    layout: &BottleLayout,
    secrets: &Secrets,
    provision: Provision<'_>,
    cancel: &CancellationToken,
    progress: &dyn Progress,
    undo: &mut Vec<Resource>,
) -> Result<Running, Error> {
    let id = &layout.id;
    let domains = create_domains(backend, layout, progress, undo).await?;
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
pub(super) async fn wait_sidecars<B: Backend<Error = Error>>(
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
pub(super) async fn provision_files<B: Backend<Error = Error>>(
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
        backend.read_file(id, Role::Agent, crate::plan::AGENT_CA_BUNDLE),
    )
    .await
    .unwrap_or_default();
    let mut combined = bundle;
    if !combined.ends_with(b"\n") && !combined.is_empty() {
        combined.push(b'\n');
    }
    combined.extend_from_slice(secrets.ca_cert_pem.as_bytes());
    let (ca_dir, ca_name) = split_path(crate::plan::AGENT_CA_FILE);
    let (bundle_dir, bundle_name) = split_path(crate::plan::AGENT_CA_BUNDLE);
    let ca_files = [provision::file(ca_name, secrets.ca_cert_pem.clone(), 0o644)];
    let bundle_files = [provision::file(bundle_name, combined, 0o644)];
    let home_files = home_files(setup)?;
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

/// The agent's home: git identity, prompt, the provider's settings, skills.
fn home_files(setup: &AgentSetup) -> Result<Vec<FileSpec>, Error> {
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
            provision::claude_settings(&supervise_url())
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
    Ok(home_files)
}

/// Registers supervise with Codex, whose CLI keeps its own MCP list (Claude
/// Code reads the settings file written by `provision_files`). Needs the
/// agent running.
pub(super) async fn register_mcp<B: Backend<Error = Error>>(
    backend: &B,
    id: &str,
    setup: &AgentSetup,
    cancel: &CancellationToken,
) -> Result<(), Error> {
    if setup.provider.as_deref() == Some("codex") && setup.supervise {
        let req = ExecRequest {
            cmd: [
                "codex",
                "mcp",
                "add",
                "supervise",
                "--url",
                &supervise_url(),
            ]
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

pub(super) fn split_path(p: &str) -> (&str, &str) {
    p.rsplit_once('/')
        .map(|(d, f)| (if d.is_empty() { "/" } else { d }, f))
        .unwrap_or(("/", p))
}

/// The working tree as file specs (regular files only; links and empty
/// directories are recreated by the tar the backend builds).
pub(super) fn untar_specs(tar_bytes: &[u8]) -> Result<Vec<FileSpec>, Error> {
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
pub(super) async fn unwind<B: Backend<Error = Error>>(
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

pub(super) async fn sweep<B: Backend<Error = Error>>(
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

pub(super) fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

pub async fn connect(home: &Home) -> Result<DockerBackend, Error> {
    DockerBackend::connect(&home.hash()).await
}

/// Brings `layout` up, records where its domains are and waits for its
/// sidecars; on any error or cancel, removes what was created (and what a
/// create still in flight made, found by labels) before returning the error.
/// `keep_workspace`: the workspace volume predates this bring-up (`resume`).
// The arguments are the bring-up's inputs and its two ways out (undo,
// cancel); bundling them would only hide which one a caller passes.
#[allow(clippy::too_many_arguments)]
pub(super) async fn bring_up_or_undo<B: Backend<Error = Error>>(
    backend: &B,
    layout: &BottleLayout,
    secrets: &Secrets,
    provision: Provision<'_>,
    state: &StateDir,
    keep_workspace: bool,
    cancel: &CancellationToken,
    progress: &dyn Progress,
) -> Result<(), Error> {
    let mut undo = Vec::new();
    let up = async {
        let running = bring_up(
            backend, layout, secrets, provision, cancel, progress, &mut undo,
        )
        .await?;
        state.write_private(
            "running.json",
            &serde_json::to_vec(&running).map_err(|e| Error::Invalid {
                what: e.to_string(),
            })?,
        )?;
        wait_sidecars(backend, layout, cancel, progress).await
    }
    .await;
    if let Err(e) = up {
        progress.step("bring-up failed: removing what was created");
        let _ = unwind(backend, &layout.id, undo, keep_workspace).await;
        return Err(e);
    }
    Ok(())
}

/// Brings a bottle up from its plan (state dir, secrets, networks, sidecars,
/// agent, provisioning). Any failure or cancel removes everything again.
pub async fn bring_up_plan(
    backend: DockerBackend,
    home: &Home,
    plan: &Plan,
    cwd: Option<&std::path::Path>,
    cancel: &CancellationToken,
    progress: &dyn Progress,
) -> Result<Bottle, Error> {
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
    let provision = Provision { setup: &setup, cwd };
    let up = bring_up_or_undo(
        &backend, &layout, &secrets, provision, &state, false, cancel, progress,
    )
    .await;
    if let Err(e) = up {
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
    let provision = Provision {
        setup: &bottle.setup,
        cwd: None,
    };
    bring_up_or_undo(
        &bottle.backend,
        &layout,
        &secrets,
        provision,
        &bottle.state,
        true,
        cancel,
        progress,
    )
    .await
}
