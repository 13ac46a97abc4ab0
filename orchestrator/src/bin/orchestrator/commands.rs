//! The commands of the command line: each resolves the home, calls the
//! library and turns its outcome into the process's exit code.

use std::io::IsTerminal;

use orchestrator::dryrun;
use orchestrator::home::Home;
use orchestrator::lifecycle::{self, confirm, Progress, StartOptions, StderrProgress};
use orchestrator::plan;
use orchestrator::Error;

/// A command's exit code as the process's (an error is `main`'s to print).
fn report(r: Result<i32, Error>) -> Result<u8, Error> {
    r.map(|code| u8::try_from(code.clamp(0, 255)).unwrap_or(1))
}

fn cli_home() -> Result<Home, Error> {
    Home::from_env()
}

/// `orchestrator start AGENT [...]` (not `--dry-run`). One connection to
/// the engine serves the plan's probe, the images and the bring-up.
pub async fn start(args: &orchestrator::cli::StartArgs) -> Result<u8, Error> {
    let progress = StderrProgress::default();
    let home = cli_home()?;
    let mut connected = None;
    let probe = async {
        let backend = lifecycle::connect(&home).await;
        let probe = dryrun::engine_probe(backend.as_ref().map(|b| b.info()));
        connected = Some(backend);
        probe
    };
    let plan = dryrun::plan_for(&home, args, probe).await?;
    // An unreachable engine is the plan's to refuse, with its reason.
    plan::check_ready(&plan)?;
    let backend = connected.expect("a plan is built only after its probe")?;
    eprint!(
        "{}",
        orchestrator::dryrun::human(&plan, std::io::stderr().is_terminal())
    );
    if !args.yes && !confirm(&format!("start bottle {}?", plan.id))? {
        eprintln!("bot-bottle: not started");
        return Ok(1);
    }
    // Built-in images by content hash, the agent's own Dockerfile,
    // overrides checked: nothing is ever pulled.
    orchestrator::images::ensure_plan_images(backend.engine(), &plan, &progress).await?;
    let opts = StartOptions {
        command: args.command.clone(),
        keep: args.keep,
        detach: args.detach,
        cwd: args.cwd.clone(),
    };
    progress.step("images ready");
    report(lifecycle::start(backend, &home, &plan, &opts, &progress).await)
}

pub async fn exec(id: &str, command: &[String]) -> Result<u8, Error> {
    report(lifecycle::exec(&cli_home()?, id, command).await)
}

/// `list`: one line per bottle of this home.
pub async fn list() -> Result<u8, Error> {
    let home = cli_home()?;
    let entries = lifecycle::list_bottles(&home).await?;
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

/// `info ID`. Container states and names come from the engine but may
/// carry what a bottle wrote (a health check's output): printed escaped.
pub async fn info(id: &str) -> Result<u8, Error> {
    let i = lifecycle::bottle_info(&cli_home()?, id).await?;
    let e = orchestrator::terminal::escape;
    println!("id:        {}", e(&i.meta.id));
    println!("agent:     {}", e(&i.meta.agent));
    if let Some(b) = &i.meta.bottle {
        println!("bottle:    {}", e(b));
    }
    println!("state:     {}", e(&i.state_path.display().to_string()));
    println!(
        "status:    {}",
        e(i.entry.as_ref().map_or("stopped", |e| e.status.as_str()))
    );
    if let Some(img) = &i.meta.committed_image {
        println!("committed: {}", e(img));
    }
    if let Some(entry) = &i.entry {
        for (role, st) in &entry.services {
            println!("  {:<12} {}", e(role), e(st));
        }
    }
    for (name, cidr) in &i.networks {
        println!("  network {:<28} {}", e(name), e(cidr));
    }
    Ok(0)
}

pub async fn stop(id: &str) -> Result<u8, Error> {
    report(lifecycle::stop(&cli_home()?, id).await)
}

pub async fn resume(id: &str) -> Result<u8, Error> {
    report(lifecycle::resume(&cli_home()?, id, &StderrProgress::default()).await)
}

pub async fn restart(id: &str, role: &str, image: Option<&str>) -> Result<u8, Error> {
    report(lifecycle::restart(&cli_home()?, id, role, image, &StderrProgress::default()).await)
}

pub async fn commit(id: &str) -> Result<u8, Error> {
    report(lifecycle::commit(&cli_home()?, id).await)
}

pub async fn cleanup(yes: bool, all: bool) -> Result<u8, Error> {
    report(lifecycle::cleanup(&cli_home()?, yes, all).await)
}

pub async fn logs(id: &str, sidecar: Option<&str>, follow: bool) -> Result<u8, Error> {
    report(lifecycle::logs(&cli_home()?, id, sidecar, follow).await)
}
