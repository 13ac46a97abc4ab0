//! The orchestrator library's error type. Every message is written for the
//! operator reading it: it names the file, key, image or variable involved and,
//! where there is one, the fix. Never a secret value in a message.

use std::fmt;
use std::path::PathBuf;

/// One problem found in a manifest: the file, the key path inside it
/// (`egress.routes[1].host`) and what was expected versus found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    pub key: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.key, self.message)
        }
    }
}

fn join_problems(p: &[Problem]) -> String {
    p.iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A manifest is broken (exit code 2).
    #[error("{}", join_problems(.0))]
    Manifest(Vec<Problem>),

    #[error("no home directory: set BOT_BOTTLE_HOME or HOME")]
    NoHome,

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Real `start` refuses what `--dry-run` only warns about.
    #[error("cannot start the bottle:\n  {}", .0.join("\n  "))]
    NotReady(Vec<String>),

    #[error("--sidecar-image {value}: {reason}")]
    SidecarImage { value: String, reason: String },

    #[error(
        "cannot reach the Docker engine ({detail}); is it running? DOCKER_HOST={}",
        std::env::var("DOCKER_HOST").unwrap_or_else(|_| "(unset: unix:///var/run/docker.sock)".into())
    )]
    EngineUnreachable { detail: String },

    #[error(
        "the `{name}` binary is missing (looked in {}); build it with `cargo build --release -p {package}` \
         or point BOT_BOTTLE_BIN_DIR at the directory holding it",
        searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    MissingBinary {
        name: String,
        package: String,
        searched: Vec<PathBuf>,
    },

    #[error("the base image {image} is missing: build it once with `sudo images/bootstrap-base.sh` (no registry needed)")]
    BaseImageMissing { image: String },

    #[error("unknown image `{name}`; known images: {known}")]
    UnknownImage { name: String, known: String },

    #[error("image {name} has no Dockerfile in this build of the orchestrator (images/{name}.Dockerfile was missing when it was compiled)")]
    NoDockerfile { name: String },

    #[error("building image {name} failed: {detail}")]
    Build { name: String, detail: String },

    /// A sidecar config the orchestrator rendered was refused by that sidecar's
    /// own schema: a bug or a manifest value the manifest checks missed.
    #[error(
        "the {role} config rendered from the manifests is refused by {role}'s own schema: {detail}"
    )]
    Render { role: String, detail: String },

    // --- bringing bottles up and down, and the commands on them
    #[error("Docker engine: cannot {what}: {source}")]
    Engine {
        what: String,
        #[source]
        source: bollard::errors::Error,
    },
    #[error("network {name} does not exist (egress.attach_networks names it; create it first)")]
    MissingNetwork { name: String },
    #[error("image {image} for {role} is missing: run `orchestrator images build`")]
    MissingImage {
        image: String,
        role: crate::plan::Role,
    },
    #[error("no free /28 subnet left in {pool}: run `orchestrator cleanup`")]
    PoolExhausted { pool: String },
    #[error("{role} did not become ready: {detail}\n--- last lines of its log ---\n{logs}")]
    Unhealthy {
        role: crate::plan::Role,
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
        if *role == crate::plan::Role::Agent { "the agent's env (a `${VAR}` of the manifest)".to_string() } else { format!("{role} (a token)") }
    )]
    MissingToken {
        var: String,
        role: crate::plan::Role,
    },
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

    #[error("`{0}` needs the supervise-mcp sidecar, which is not supported yet in this build")]
    NoSupervise(String),
}

impl Error {
    /// Process exit code for this error: 2 for a broken manifest or bad usage,
    /// 130 after Ctrl-C (like a shell), 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Manifest(_) | Error::SidecarImage { .. } | Error::UnknownImage { .. } => 2,
            Error::Cancelled => 130,
            _ => 1,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
