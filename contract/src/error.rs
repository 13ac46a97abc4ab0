//! The contract's error type: a config file or value that a sidecar would
//! refuse. Each message names the file, key or route involved, never a
//! secret value.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    // --- egress.toml
    #[error("{}: invalid egress config: {message}", path.display())]
    EgressParse { path: PathBuf, message: String },
    #[error("invalid egress config: {key}: {message}")]
    EgressConfig { key: String, message: String },
    #[error("invalid egress config: route {route:?}: {message}")]
    EgressRoute { route: String, message: String },

    // --- cred-proxy.toml
    /// TOML syntax or shape error.
    #[error("{}{}: {message}", path.display(), span.map(|l| format!(" line {l}")).unwrap_or_default())]
    CredProxyParse {
        path: PathBuf,
        message: String,
        /// 1-based line, when known.
        span: Option<usize>,
    },
    /// A semantically invalid value (raised during deserialisation; the
    /// caller wraps it into `CredProxyParse` with the file name).
    #[error("{key}: {reason}")]
    CredProxyInvalid { key: String, reason: String },

    // --- git-gate.toml
    #[error("config {}: {message}", path.display())]
    GitGateConfig { path: PathBuf, message: String },

    // --- the broker key of the hand-off
    /// The variable is unset or empty.
    #[error("the broker key variable {0} is not set")]
    BrokerKeyMissing(String),
    /// Not hex, or not 32 bytes. The value itself is never reported.
    #[error(
        "the broker key in {origin} must be {} bytes of hex (64 hex digits)",
        crate::handoff::BROKER_KEY_LEN
    )]
    BrokerKeyMalformed {
        /// Where the key came from (variable name).
        origin: String,
    },
}
