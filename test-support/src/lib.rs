//! Fixtures that more than one crate's tests need: a test PKI ([`pki`]), an
//! upstream that records what reached it ([`upstream`]), a client that opens
//! CONNECT tunnels and TLS through a proxy ([`client`]), and the rule for
//! tests that need Docker ([`docker`]).
//!
//! It owns only what is not specific to one sidecar: nothing here knows a
//! sidecar's config, protocol or crate, so every crate can use it without a
//! dependency cycle. What one harness alone needs stays in that harness.
//!
//! It must never be a normal dependency of anything that ships: it panics on
//! every error, trusts its own throwaway CA, and uses the docker CLI, which
//! the product never does. `publish = false` and dev-dependencies only.

pub mod client;
pub mod docker;
pub mod pki;
pub mod upstream;

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What test upstreams answer with: `!Sync` so that streaming bodies built
/// from channels fit too.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into())
        .map_err(|e: Infallible| match e {})
        .boxed_unsync()
}

/// The sidecars' rustls calls without an explicit provider need a process
/// default; ring is the only provider the workspace links.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub(crate) fn ring() -> std::sync::Arc<rustls::crypto::CryptoProvider> {
    std::sync::Arc::new(rustls::crypto::ring::default_provider())
}
