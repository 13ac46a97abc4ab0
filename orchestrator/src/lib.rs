//! bot-bottle orchestrator library: reads the manifests, resolves a bottle's
//! plan (networks, sidecars, routes, rendered sidecar configs), builds images,
//! checks the machine, and (lifecycle modules) brings bottles up and down with
//! the Docker Engine API.
//!
//! It owns the operator's side: it must never hand a real token to the agent,
//! never run anything a bottle wrote on the host, and never use the docker CLI.

pub mod attach;
pub mod backend;
pub mod cli;
pub mod docker;
pub mod doctor;
pub mod dryrun;
pub mod error;
pub mod home;
pub mod images;
pub mod lifecycle;
pub mod manifest;
pub mod plan;
pub mod progress;
pub mod provision;
pub mod render;
pub mod state;
pub mod terminal;
pub mod workspace;

pub use error::{Error, Problem};
