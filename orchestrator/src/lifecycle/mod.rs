//! A bottle's life: bring-up from a plan as a stack of undo steps, the
//! session, teardown; and the commands on bottles that exist (`exec`,
//! `list`, `info`, `stop`, `resume`, `restart`, `commit`, `cleanup`, `logs`).
//!
//! Bring-up records every object it creates; any error, Ctrl-C or SIGTERM at
//! any point removes them in reverse order, then sweeps the bottle's labels,
//! so nothing is left that `cleanup` would find. This module must never hand
//! a real token to the agent: tokens are read by name at bring-up and go to
//! cred-proxy's environment only.

use tokio_util::sync::CancellationToken;

mod bottle;
mod bring_up;
mod commands;
mod layout;
mod logs;

pub use crate::error::Error;
pub use crate::progress::{Progress, Quiet, StderrProgress};
pub use bottle::*;
pub use bring_up::*;
pub use commands::*;
pub use layout::*;
pub use logs::*;

/// Cancels `token` on Ctrl-C or SIGTERM; the returned task ends with the token.
pub fn cancel_on_signals(token: CancellationToken) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            return;
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => token.cancel(),
            _ = term.recv() => token.cancel(),
            _ = token.cancelled() => {}
        }
    })
}

/// Runs an engine request to completion, then honours a cancel: dropping a
/// request in flight could let the engine create an object after the undo
/// ran, so creation steps are never abandoned half-way.
async fn step<T>(
    cancel: &CancellationToken,
    fut: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    let r = fut.await;
    if cancel.is_cancelled() {
        return Err(Error::Cancelled);
    }
    r
}

/// Waits that create nothing (health polling, a command) stop at once on cancel.
async fn cancellable<T>(
    cancel: &CancellationToken,
    fut: impl std::future::Future<Output = Result<T, Error>>,
) -> Result<T, Error> {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => Err(Error::Cancelled),
        r = fut => r,
    }
}
