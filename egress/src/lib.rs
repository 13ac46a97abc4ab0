//! egress: the only way out of a bottle.
//!
//! Owns the HTTP/HTTPS forward proxy the agent talks to (`HTTP(S)_PROXY=http://egress:3128`): the
//! route allowlist (matched before any name is resolved), TLS interception with leaves minted
//! from the bottle CA, the SSRF guard on every address it dials, DLP scanning of everything that
//! leaves, the audit log, and the hand-off of `auth` routes to cred-proxy.
//!
//! It must never: resolve a name no route allows, dial an address the SSRF guard refuses, fall
//! back to a raw tunnel on a route that is not `tunnel`, follow a redirect, hold a real upstream
//! credential, or write a secret to a log line, an error or a response.
//!
//! Supervised holds (`outbound_on_match = "supervise"`): egress writes
//! `<holds_dir>/<id>.hold.json` — `{id, time, bottle, route, method, host, port, path, rules,
//! timeout_secs}`, the path with findings redacted and the query dropped, never the secret — and
//! waits for `<holds_dir>/<id>.decision`, whose first line is `allow` (forward the original
//! request) or `deny`. No decision within `hold_timeout_secs` (default 300) refuses it. Egress
//! removes both files afterwards. Write the decision atomically (write a temporary name, rename).

/// Serves one client connection until it ends or egress shuts down; on
/// shutdown the connection finishes the requests in flight, then closes.
/// (A macro: hyper's upgradeable HTTP/1 and HTTP/2 connections share no
/// trait for `graceful_shutdown`.)
macro_rules! serve_until_shutdown {
    ($conn:expr, $shutdown:expr) => {{
        let conn = $conn;
        tokio::pin!(conn);
        tokio::select! {
            _ = conn.as_mut() => {}
            _ = $shutdown.cancelled() => {
                conn.as_mut().graceful_shutdown();
                let _ = conn.await;
            }
        }
    }};
}

/// The config schema lives in the contract crate (the orchestrator renders it).
pub use contract::egress as config;
pub mod error;
pub mod ssrf;

pub use error::Error;
pub mod audit;
pub mod decode;
pub mod dlp;
mod dlp_request;
pub mod forge;
mod forward;
pub mod hold;
mod hostport;
mod intercept;
pub mod io;
pub mod mint;
pub use contract::path;
pub mod pool;
pub mod proxy;
mod refuse;
mod request;
pub mod resolve;
pub mod run;
mod scan;
pub mod scanned;
pub mod upstream;
pub mod window;
