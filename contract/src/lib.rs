//! What the orchestrator and the sidecars agree on, in one place: the roles
//! of a bottle (ports, uids, aliases, variable names), the three sidecar
//! config schemas with their validation, the signed egress→cred-proxy
//! hand-off, and the egress audit record.
//!
//! The orchestrator renders configs through these types and its manifest
//! checks call the same parsers, so a value the manifest accepts is a value
//! the sidecar accepts. This crate must stay a leaf of plain data and
//! parsing: no runtime (no tokio, no servers, no sockets), nothing that
//! reads a token value.

pub mod audit;
pub mod cred_proxy;
pub mod egress;
pub mod error;
pub mod git_gate;
pub mod handoff;
pub mod path;
pub mod role;

pub use error::Error;
pub use role::Role;
