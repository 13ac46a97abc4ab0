//! The listener: HTTP/1.1 from egress on the broker network, one task per
//! connection in a tracker, graceful stop on the shutdown token.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::error::Error;
use crate::handoff::BrokerKey;
use crate::proxy::Proxy;
use crate::tokens::{EnvLookup, Tokens};
use crate::upstream::{tls_config, Upstream};

/// How long open exchanges may continue after a stop request.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A bound, ready cred-proxy.
#[derive(Debug)]
pub struct Server {
    proxy: Arc<Proxy>,
    listener: TcpListener,
    upstream_tasks: TaskTracker,
    upstream_stop: CancellationToken,
}

impl Server {
    /// Loads the tokens (from `env` and token files), builds TLS and binds
    /// `config.listen`. Every start-up problem is reported here.
    pub async fn bind(config: Config, key: BrokerKey, env: EnvLookup) -> Result<Server, Error> {
        let tokens = Tokens::load(&config, env)?;
        let tls = tls_config(config.upstream_ca.as_deref())?;
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|source| Error::Listen {
                addr: config.listen,
                source,
            })?;
        let upstream_tasks = TaskTracker::new();
        let upstream_stop = CancellationToken::new();
        let upstream = Upstream::new(tls, upstream_tasks.clone(), upstream_stop.clone());
        let mut credential_headers: Vec<_> = config
            .routes
            .iter()
            .map(|r| r.scheme.header_name())
            .collect();
        credential_headers.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        credential_headers.dedup();
        Ok(Server {
            proxy: Arc::new(Proxy {
                credential_headers,
                config,
                key,
                tokens,
                upstream,
            }),
            listener,
            upstream_tasks,
            upstream_stop,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// A handle to reload token files (SIGHUP).
    pub fn reloader(&self) -> Reloader {
        Reloader(self.proxy.clone())
    }

    /// Serves until `shutdown` is cancelled, then lets open exchanges finish
    /// for up to [`DRAIN_TIMEOUT`].
    pub async fn serve(self, shutdown: CancellationToken) {
        let conns = TaskTracker::new();
        tracing::info!(
            event = "listening",
            addr = %self.local_addr(),
            routes = self.proxy.config.routes.len(),
        );
        loop {
            let (stream, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(event = "accept_error", error = %e);
                        // Out of descriptors and the like: back off briefly.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let proxy = self.proxy.clone();
            let stop = shutdown.clone();
            conns.spawn(async move {
                let service = service_fn(move |req| {
                    let proxy = proxy.clone();
                    async move { Ok::<_, std::convert::Infallible>(proxy.handle(req, peer).await) }
                });
                let conn = http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(30))
                    .serve_connection(TokioIo::new(stream), service);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    _ = stop.cancelled() => {
                        conn.as_mut().graceful_shutdown();
                        let _ = conn.await;
                    }
                }
            });
        }
        drop(self.listener);
        conns.close();
        if tokio::time::timeout(DRAIN_TIMEOUT, conns.wait())
            .await
            .is_err()
        {
            tracing::warn!(event = "drain_timeout", open = conns.len());
        }
        self.upstream_stop.cancel();
        self.upstream_tasks.close();
        self.upstream_tasks.wait().await;
        tracing::info!(event = "stopped");
    }
}

/// Reloads token files on request.
#[derive(Clone, Debug)]
pub struct Reloader(Arc<Proxy>);

impl Reloader {
    /// Re-reads every token source; on error the previous tokens stay.
    pub fn reload(&self) -> Result<(), Error> {
        self.0.tokens.reload()
    }
}
