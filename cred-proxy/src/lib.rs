//! cred-proxy: holds the bottle's real tokens and injects them into requests
//! that egress has already checked and handed over with a signed hand-off.
//!
//! It owns: verifying the hand-off signature, choosing the route by
//! `X-Bottle-Route` alone, stripping every inbound credential, injecting the
//! route's token, dialing exactly the address egress checked over verified
//! TLS, and redacting the token if an upstream echoes it.
//!
//! It must never: route by `Host` or by a wildcard, resolve a name, follow a
//! redirect, or put a token in a log line, an error message or a response.

/// The config schema and the hand-off live in the contract crate (egress and
/// the orchestrator use them too).
pub use contract::cred_proxy as config;
pub mod error;
pub use contract::handoff;
pub mod health;
pub mod proxy;
pub mod redact;
pub mod server;
pub mod tokens;
pub mod upstream;

pub use config::Config;
pub use error::Error;
pub use server::Server;

/// Installs the ring crypto provider as the process default; a second call
/// (tests, or egress linking this crate) is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
