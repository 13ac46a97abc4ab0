//! Name resolution and the guarded dial: `[[resolve]]` overrides, then DNS (hickory, reading
//! `/etc/resolv.conf` and `/etc/hosts`: a static binary in a scratch image has no NSS), then
//! the SSRF guard on every address before it is dialed.
//!
//! Only called for hosts a route already matched; nothing here decides whether a name may be
//! looked up.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

use crate::ssrf::{parse_ip_literal, SsrfGuard};

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A DNS resolver. Tests plug in a stub that counts queries.
pub trait Resolve: Send + Sync + 'static {
    fn lookup(&self, host: String) -> BoxFuture<'static, io::Result<Vec<IpAddr>>>;
}

/// The system resolver (hickory), built on first use so a missing `/etc/resolv.conf` only
/// matters when a name actually has to be resolved.
#[derive(Default)]
pub struct SystemResolver {
    inner: tokio::sync::OnceCell<Result<hickory_resolver::TokioResolver, String>>,
}

impl std::fmt::Debug for SystemResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SystemResolver")
    }
}

impl Resolve for Arc<SystemResolver> {
    fn lookup(&self, host: String) -> BoxFuture<'static, io::Result<Vec<IpAddr>>> {
        let this = self.clone();
        Box::pin(async move {
            let r = this
                .inner
                .get_or_init(|| async {
                    hickory_resolver::TokioResolver::builder_tokio()
                        .and_then(|b| b.build())
                        .map_err(|e| format!("cannot read the system DNS configuration: {e}"))
                })
                .await;
            let r = r.as_ref().map_err(|e| io::Error::other(e.clone()))?;
            // A fully qualified name: no search-domain expansion of what the agent asked for.
            let fqdn = format!("{host}.");
            let ips = r
                .lookup_ip(fqdn.as_str())
                .await
                .map_err(|e| io::Error::other(format!("cannot resolve {host}: {e}")))?;
            Ok(ips.iter().collect())
        })
    }
}

/// Why a host could not be dialed.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("{host} resolves only to refused addresses ({ip}: {reason})")]
    Ssrf {
        host: String,
        ip: IpAddr,
        reason: &'static str,
    },
    #[error("{0}")]
    Dns(String),
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
    #[error("connect to {host}:{port} timed out")]
    Timeout { host: String, port: u16 },
}

/// Resolves and checks; what the connector and the cred-proxy hand-off use.
#[derive(Clone)]
pub struct Dialer {
    resolver: Arc<dyn Resolve>,
    overrides: Arc<HashMap<(String, u16), Vec<IpAddr>>>,
    guard: SsrfGuard,
    connect_timeout: Duration,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer")
            .field("guard", &self.guard)
            .finish()
    }
}

impl Dialer {
    pub fn new(
        resolver: Arc<dyn Resolve>,
        overrides: HashMap<(String, u16), Vec<IpAddr>>,
        guard: SsrfGuard,
        connect_timeout: Duration,
    ) -> Dialer {
        Dialer {
            resolver,
            overrides: Arc::new(overrides),
            guard,
            connect_timeout,
        }
    }

    /// The addresses egress may dial for `host:port`, in order; an error when there are none.
    pub async fn resolve_checked(
        &self,
        host: &str,
        port: u16,
    ) -> Result<Vec<SocketAddr>, DialError> {
        let ips: Vec<IpAddr> = if let Some(ip) = parse_ip_literal(host) {
            vec![ip]
        } else if let Some(o) = self.overrides.get(&(host.to_string(), port)) {
            o.clone()
        } else {
            self.resolver
                .lookup(host.to_string())
                .await
                .map_err(|e| DialError::Dns(e.to_string()))?
        };
        if ips.is_empty() {
            return Err(DialError::Dns(format!("{host} has no addresses")));
        }
        let mut ok = Vec::new();
        let mut first_refusal = None;
        for ip in ips {
            match self.guard.check(ip) {
                Ok(()) => ok.push(SocketAddr::new(ip, port)),
                Err(reason) => {
                    first_refusal.get_or_insert((ip, reason));
                }
            }
        }
        if ok.is_empty() {
            let (ip, reason) = first_refusal.expect("non-empty list");
            return Err(DialError::Ssrf {
                host: host.to_string(),
                ip,
                reason,
            });
        }
        Ok(ok)
    }

    /// Resolves, checks and connects: the checked address is the one dialed (no rebinding window).
    pub async fn connect(
        &self,
        host: &str,
        port: u16,
    ) -> Result<(TcpStream, SocketAddr), DialError> {
        let addrs = self.resolve_checked(host, port).await?;
        let mut last = None;
        for addr in addrs {
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(s)) => {
                    let _ = s.set_nodelay(true);
                    return Ok((s, addr));
                }
                Ok(Err(e)) => last = Some(DialError::Connect { addr, source: e }),
                Err(_) => {
                    last = Some(DialError::Timeout {
                        host: host.to_string(),
                        port,
                    })
                }
            }
        }
        Err(last.expect("at least one address"))
    }
}
