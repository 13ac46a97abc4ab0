//! git-gate: the bottle's only way to push. It serves per-remote bare mirrors
//! with git's own `git daemon`, checks every pushed ref and commit in its
//! pre-receive hook (ref and path policy, secret scan of the whole range) and
//! pushes accepted refs upstream over ssh with its own key and a pinned host
//! key before acknowledging the agent.
//!
//! It must never: let a ref reach upstream that was not scanned, trust
//! anything from the pushed repository for policy (allowed fingerprints come
//! only from the config), put key material in argv or logs, or accept any
//! upstream host key other than the pinned one.

/// The config schema lives in the contract crate (the orchestrator renders it).
pub use contract::git_gate as config;
pub mod error;

pub use config::Config;
pub use error::Error;
pub mod hook;
pub mod mirror;
pub mod proxy;
pub mod serve;
pub mod upstream;
