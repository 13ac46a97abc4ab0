//! Command line of the `orchestrator` binary (clap). The names of commands and
//! flags are a contract (DESIGN.md, orchestrator section): change none of them.
//! This module only describes arguments; the work happens in the library.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// bot-bottle: run a coding agent in a container whose only way out is a set of
/// sidecars you control.
#[derive(Debug, Parser)]
#[command(name = "orchestrator", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    #[default]
    Human,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Bring a bottle up for AGENT (preflight summary, then y/N).
    Start(StartArgs),
    /// Run a shell, or a command, in a running bottle.
    Exec(ExecArgs),
    /// List the bottles of this home.
    List,
    /// Show what is known about one bottle.
    Info(IdArg),
    /// Start a stopped bottle again (the workspace is kept).
    Resume(IdArg),
    /// Stop a bottle, keeping it for `resume`.
    Stop(IdArg),
    /// Replace one sidecar of a running bottle in place.
    Restart(RestartArgs),
    /// Snapshot the agent container into an image that `resume` boots from.
    Commit(IdArg),
    /// Remove what bottles of this home left over (orphans, stopped containers); `--all` for everything.
    Cleanup(CleanupArgs),
    /// Show a bottle's audit log, or one sidecar's log.
    Logs(LogsArgs),
    /// (planned: needs supervise-mcp) List pending proposals from agents.
    Proposals,
    /// (planned: needs supervise-mcp) Approve a proposal.
    Approve(IdArg),
    /// (planned: needs supervise-mcp) Deny a proposal.
    Deny(DenyArgs),
    /// (planned) Terminal UI over running bottles and proposals.
    Dashboard,
    /// Docker images of bot-bottle.
    Images(ImagesArgs),
    /// Check that this machine can run bottles; print each problem with its fix.
    Doctor,
}

#[derive(Debug, Args)]
pub struct StartArgs {
    /// Agent name (file name of `agents/<name>.md`). Optional when exactly one agent exists.
    pub agent: Option<String>,
    /// Copy this working tree into the bottle's workspace.
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<PathBuf>,
    /// Resolve and print the plan; create nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Output format of the plan / preflight.
    #[arg(long, value_enum, default_value_t = Format::Human)]
    pub format: Format,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long = "yes")]
    pub yes: bool,
    /// Keep the bottle after the session ends (for `resume`).
    #[arg(long)]
    pub keep: bool,
    /// Bring the bottle up, print its id and return.
    #[arg(long)]
    pub detach: bool,
    /// Run one sidecar from another image: ROLE=IMAGE (repeatable).
    #[arg(long = "sidecar-image", value_name = "ROLE=IMAGE")]
    pub sidecar_image: Vec<String>,
    /// Run this command in the bottle instead of the agent's CLI.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    pub id: String,
    /// Command to run; a shell when omitted.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct IdArg {
    pub id: String,
}

#[derive(Debug, Args)]
pub struct RestartArgs {
    pub id: String,
    /// Role of the sidecar to replace (egress, cred-proxy, git-gate, supervise).
    pub role: String,
    /// Image to run instead of the built one.
    #[arg(long)]
    pub image: Option<String>,
}

#[derive(Debug, Args)]
pub struct CleanupArgs {
    /// Do not ask for confirmation.
    #[arg(short = 'y', long = "yes")]
    pub yes: bool,
    /// Remove every bottle of this home, running and kept ones too (the
    /// list is shown first).
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    pub id: String,
    /// Show this sidecar's container log instead of the audit log.
    #[arg(long, value_name = "ROLE")]
    pub sidecar: Option<String>,
    /// Keep printing new lines.
    #[arg(long, short = 'f')]
    pub follow: bool,
}

#[derive(Debug, Args)]
pub struct DenyArgs {
    pub id: String,
    /// Reason shown to the agent.
    #[arg(long)]
    pub reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct ImagesArgs {
    #[command(subcommand)]
    pub command: ImagesCommand,
}

#[derive(Debug, Subcommand)]
pub enum ImagesCommand {
    /// Build the images (tagged by content hash; unchanged images are not rebuilt).
    Build {
        /// Build only this image (e.g. egress, test-agent).
        #[arg(long, value_name = "NAME")]
        only: Option<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_parses_every_flag() {
        let cli = Cli::try_parse_from([
            "orchestrator",
            "start",
            "demo",
            "--cwd",
            "/tmp",
            "--dry-run",
            "--format",
            "json",
            "-y",
            "--keep",
            "--detach",
            "--sidecar-image",
            "egress=foo:1",
            "--",
            "curl",
            "-v",
        ])
        .unwrap();
        let Command::Start(s) = cli.command else {
            panic!("not start")
        };
        assert_eq!(s.agent.as_deref(), Some("demo"));
        assert!(s.dry_run && s.yes && s.keep && s.detach);
        assert_eq!(s.format, Format::Json);
        assert_eq!(s.sidecar_image, vec!["egress=foo:1"]);
        assert_eq!(s.command, vec!["curl", "-v"]);
    }

    #[test]
    fn commands_exist() {
        for args in [
            vec!["exec", "x", "--", "ls"],
            vec!["list"],
            vec!["info", "x"],
            vec!["resume", "x"],
            vec!["stop", "x"],
            vec!["restart", "x", "egress", "--image", "i"],
            vec!["commit", "x"],
            vec!["cleanup", "-y"],
            vec!["logs", "x", "--sidecar", "egress", "--follow"],
            vec!["proposals"],
            vec!["approve", "p"],
            vec!["deny", "p", "--reason", "no"],
            vec!["dashboard"],
            vec!["images", "build", "--only", "egress"],
            vec!["doctor"],
        ] {
            let mut v = vec!["orchestrator"];
            v.extend(args.iter());
            Cli::try_parse_from(&v).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        }
    }
}
