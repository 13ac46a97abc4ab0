//! The gate library's one error type. Messages are written for the operator
//! reading them at start-up or the agent reading them as `remote:` lines;
//! none of them ever carries secret material.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("remote {remote}: identity file {path} {problem}")]
    IdentityFile {
        remote: String,
        path: PathBuf,
        problem: String,
    },

    #[error("remote {remote}: upstream {url}: {problem}")]
    Upstream {
        remote: String,
        url: String,
        problem: String,
    },

    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{command} failed: {message}")]
    Git { command: String, message: String },

    #[error("secret rules: {0}")]
    Rules(String),

    #[error("scanning {repo}: {message}")]
    Scan { repo: PathBuf, message: String },

    #[error("{0}")]
    Hook(String),
    /// The config is refused by its schema (the contract crate).
    #[error(transparent)]
    Contract(#[from] contract::Error),
}
