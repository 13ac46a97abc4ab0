//! The egress library's error type.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Ca { path: PathBuf, message: String },
    #[error("certificate for {host}: {message}")]
    Mint { host: String, message: String },
    #[error("DLP rules {origin}: {message}")]
    Rules { origin: String, message: String },
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("audit log {path}: {source}")]
    Audit {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The config is refused by its schema (the contract crate).
    #[error(transparent)]
    Contract(#[from] contract::Error),
}
