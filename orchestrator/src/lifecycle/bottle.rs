//! A bottle that exists: opening it, running commands in its agent, its
//! session and teardown.

use std::io::{IsTerminal, Write};

use tokio_util::sync::CancellationToken;

use super::*;
use crate::backend::{Backend, ExecRequest, OutputSink, Role};
use crate::docker::DockerBackend;
use crate::home::Home;
use crate::state::StateDir;

/// A bottle brought up by this process.
#[derive(Debug)]
pub struct Bottle {
    pub id: String,
    pub backend: DockerBackend,
    pub state: StateDir,
    pub setup: AgentSetup,
}

pub(super) fn default_agent_command(provider: Option<&str>) -> Vec<String> {
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

    pub(super) fn request(&self, cmd: Vec<String>) -> ExecRequest {
        ExecRequest {
            cmd,
            env: Vec::new(),
            user: Some(self.setup.user.clone()),
            working_dir: Some(self.setup.workdir.clone()),
        }
    }

    pub(super) async fn require_running(&self) -> Result<(), Error> {
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
