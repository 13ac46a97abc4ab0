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
    #[error("{path}: invalid egress config: {message}")]
    ConfigParse { path: PathBuf, message: String },
    #[error("invalid egress config: {key}: {message}")]
    InvalidConfig { key: String, message: String },
    #[error("invalid egress config: route {route:?}: {message}")]
    InvalidRoute { route: String, message: String },
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
    #[error("broker key: {0}")]
    BrokerKey(String),
}
