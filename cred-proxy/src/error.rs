//! The cred-proxy library's error type. Messages name the file, key, route or
//! variable involved and never a token value.

use std::path::PathBuf;

/// Everything that can go wrong in cred-proxy.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The token variable of a route is unset or empty.
    #[error("route {route}: the token variable {var} is not set or empty")]
    MissingTokenVar {
        /// Route id.
        route: String,
        /// Variable name.
        var: String,
    },
    /// A token file is unreadable, empty or has a bad mode.
    #[error("route {route}: token file {}: {reason}", path.display())]
    TokenFile {
        /// Route id.
        route: String,
        /// File.
        path: PathBuf,
        /// Why (never the content).
        reason: String,
    },
    /// A token is too short to be a credential.
    #[error("route {route}: the token from {origin} is shorter than {min} characters")]
    TokenTooShort {
        /// Route id.
        route: String,
        /// Variable or file.
        origin: String,
        /// Minimum length.
        min: usize,
    },
    /// A token contains bytes that cannot go in a header.
    #[error(
        "route {route}: the token from {origin} contains characters not allowed in an HTTP header"
    )]
    TokenNotHeaderSafe {
        /// Route id.
        route: String,
        /// Variable or file.
        origin: String,
    },
    /// The config, or the broker key, is refused by the contract.
    #[error(transparent)]
    Contract(#[from] contract::Error),
    /// The upstream CA bundle could not be used.
    #[error("upstream_ca {}: {reason}", path.display())]
    UpstreamCa {
        /// The bundle.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// Address.
        addr: std::net::SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
}
