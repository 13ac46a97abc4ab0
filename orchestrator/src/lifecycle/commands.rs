//! The commands on bottles: `start`, `exec`, `list`, `info`, `stop`,
//! `resume`, `restart`, `commit`, `cleanup`.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::backend::{Backend, Resource, Role};
use crate::docker::DockerBackend;
use crate::home::Home;
use crate::plan::Plan;
use crate::provision::Secrets;
use crate::state::{Metadata, StateDir};

/// Options of `start`.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// Run this instead of the agent's CLI (non-interactive: output and exit code).
    pub command: Vec<String>,
    pub keep: bool,
    pub detach: bool,
    pub cwd: Option<PathBuf>,
}

/// `start`: bring-up on `backend` (the connection the plan was probed and
/// its images made through), then the session (or `--detach`), then
/// teardown unless kept. Returns the process exit code.
pub async fn start(
    backend: DockerBackend,
    home: &Home,
    plan: &Plan,
    opts: &StartOptions,
    progress: &dyn Progress,
) -> Result<i32, Error> {
    let cancel = CancellationToken::new();
    let signals = cancel_on_signals(cancel.clone());
    let result = start_with(backend, home, plan, opts, progress, &cancel).await;
    signals.abort();
    result
}

pub async fn start_with(
    backend: DockerBackend,
    home: &Home,
    plan: &Plan,
    opts: &StartOptions,
    progress: &dyn Progress,
    cancel: &CancellationToken,
) -> Result<i32, Error> {
    let bottle = bring_up_plan(backend, home, plan, opts.cwd.as_deref(), cancel, progress).await?;
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

/// What `info` shows of one bottle.
#[derive(Debug)]
pub struct BottleInfo {
    pub meta: Metadata,
    pub state_path: PathBuf,
    /// `None`: the engine has no object of it (stopped or removed).
    pub entry: Option<ListEntry>,
    /// The networks of its last bring-up: name and subnet.
    pub networks: Vec<(String, String)>,
}

/// `info ID`: a bottle's metadata, state dir, containers and networks.
pub async fn bottle_info(home: &Home, id: &str) -> Result<BottleInfo, Error> {
    let state = StateDir::open(&home.root, id)?;
    let meta = state.metadata()?;
    let entry = list_bottles(home).await?.into_iter().find(|e| e.id == id);
    let running: Option<Running> = state
        .read("running.json")
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let networks = running
        .map(|r| {
            r.domains
                .into_iter()
                .map(|d| (d.name, d.cidr.map(|c| c.to_string()).unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default();
    Ok(BottleInfo {
        meta,
        state_path: state.path.clone(),
        entry,
        networks,
    })
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
pub(super) enum Sweep {
    Everything,
    /// Containers and networks only (the bottle is as after `stop`).
    Stopped,
}

pub(super) fn print_kept(kept: &[String]) {
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
pub(super) async fn sweep_until_gone(
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

pub fn confirm(question: &str) -> Result<bool, Error> {
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
