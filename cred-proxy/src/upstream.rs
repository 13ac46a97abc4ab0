//! Connections to upstreams: exactly the address egress checked, TLS with SNI
//! and certificate verification for the route's host, HTTP/2 when the server
//! offers it by ALPN, kept alive and reused per (address, host).
//!
//! Never resolves a name and never follows a redirect (it only sends the one
//! request it is given).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::Error;
use crate::proxy::ReqBody;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle HTTP/1.1 connections kept per (address, host).
const MAX_IDLE_PER_KEY: usize = 16;

/// Which protocol the upstream connection speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    /// HTTP/1.1
    Http1,
    /// HTTP/2 (negotiated by ALPN)
    Http2,
}

impl Proto {
    /// Short name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Http1 => "http/1.1",
            Proto::Http2 => "h2",
        }
    }
}

/// Why an upstream exchange failed. Carries no request data.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// TCP connect failed or timed out.
    #[error("cannot connect to {addr}: {reason}")]
    Connect {
        /// Address dialed.
        addr: SocketAddr,
        /// Cause.
        reason: String,
    },
    /// TLS handshake or certificate check failed.
    #[error("TLS with {host} at {addr} failed: {reason}")]
    Tls {
        /// Host verified.
        host: String,
        /// Address dialed.
        addr: SocketAddr,
        /// Cause.
        reason: String,
    },
    /// HTTP exchange failed.
    #[error("HTTP exchange with {host} failed: {reason}")]
    Http {
        /// Host.
        host: String,
        /// Cause.
        reason: String,
    },
}

/// Builds the client TLS config: webpki roots plus the PEM bundle, if any.
pub fn tls_config(upstream_ca: Option<&Path>) -> Result<ClientConfig, Error> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = upstream_ca {
        let bad = |reason: String| Error::UpstreamCa {
            path: path.to_path_buf(),
            reason,
        };
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
            .map_err(|e| bad(e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("holds no PEM certificate".into()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| bad(e.to_string()))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::UpstreamCa {
            path: upstream_ca.map(Path::to_path_buf).unwrap_or_default(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    addr: SocketAddr,
    host: String,
}

enum Sender {
    H1(http1::SendRequest<ReqBody>),
    H2(http2::SendRequest<ReqBody>),
}

#[derive(Default)]
struct Idle {
    h2: Option<http2::SendRequest<ReqBody>>,
    h1: Vec<http1::SendRequest<ReqBody>>,
}

/// Dials upstreams and reuses their connections.
pub struct Upstream {
    tls: TlsConnector,
    idle: Mutex<HashMap<Key, Idle>>,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream").finish_non_exhaustive()
    }
}

impl Upstream {
    /// A dialer using `tls`; connection tasks live in `tasks` and stop on
    /// `shutdown`.
    pub fn new(tls: ClientConfig, tasks: TaskTracker, shutdown: CancellationToken) -> Upstream {
        Upstream {
            tls: TlsConnector::from(Arc::new(tls)),
            idle: Mutex::new(HashMap::new()),
            tasks,
            shutdown,
        }
    }

    /// Sends one request to `host` at exactly `addr`. `build` makes the request
    /// for the negotiated protocol (HTTP/2 needs an absolute URI).
    pub async fn send(
        &self,
        addr: SocketAddr,
        host: &str,
        build: impl FnOnce(Proto) -> Request<ReqBody>,
    ) -> Result<(Response<Incoming>, Proto), UpstreamError> {
        let key = Key {
            addr,
            host: host.to_owned(),
        };
        let sender = match self.checkout(&key) {
            Some(s) => s,
            None => self.connect(&key).await?,
        };
        let http_err = |e: hyper::Error| UpstreamError::Http {
            host: host.to_owned(),
            reason: e.to_string(),
        };
        match sender {
            Sender::H2(mut s) => {
                let req = build(Proto::Http2);
                let resp = s.send_request(req).await.map_err(http_err)?;
                Ok((resp, Proto::Http2))
            }
            Sender::H1(mut s) => {
                let req = build(Proto::Http1);
                let resp = s.send_request(req).await.map_err(http_err)?;
                // Ready again once this response's body has been read; the
                // checkout skips it until then.
                self.checkin_h1(key, s);
                Ok((resp, Proto::Http1))
            }
        }
    }

    fn checkout(&self, key: &Key) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let entry = idle.get_mut(key)?;
        if let Some(h2) = &entry.h2 {
            if h2.is_ready() {
                return Some(Sender::H2(h2.clone()));
            }
            if h2.is_closed() {
                entry.h2 = None;
            }
        }
        entry.h1.retain(|s| !s.is_closed());
        let pos = entry.h1.iter().position(|s| s.is_ready())?;
        Some(Sender::H1(entry.h1.swap_remove(pos)))
    }

    fn checkin_h1(&self, key: Key, sender: http1::SendRequest<ReqBody>) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let entry = idle.entry(key).or_default();
        if entry.h1.len() < MAX_IDLE_PER_KEY {
            entry.h1.push(sender);
        }
    }

    async fn connect(&self, key: &Key) -> Result<Sender, UpstreamError> {
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(key.addr))
            .await
            .map_err(|_| UpstreamError::Connect {
                addr: key.addr,
                reason: "timed out".into(),
            })?
            .map_err(|e| UpstreamError::Connect {
                addr: key.addr,
                reason: e.to_string(),
            })?;
        let _ = tcp.set_nodelay(true);
        let tls_err = |reason: String| UpstreamError::Tls {
            host: key.host.clone(),
            addr: key.addr,
            reason,
        };
        let name = ServerName::try_from(key.host.clone()).map_err(|e| tls_err(e.to_string()))?;
        let tls = tokio::time::timeout(CONNECT_TIMEOUT, self.tls.connect(name, tcp))
            .await
            .map_err(|_| tls_err("handshake timed out".into()))?
            .map_err(|e| tls_err(e.to_string()))?;
        let h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let io = TokioIo::new(tls);
        let http_err = |e: hyper::Error| UpstreamError::Http {
            host: key.host.clone(),
            reason: e.to_string(),
        };
        let stop = self.shutdown.clone();
        if h2 {
            let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                .timer(hyper_util::rt::TokioTimer::new())
                .keep_alive_interval(Duration::from_secs(30))
                .handshake(io)
                .await
                .map_err(http_err)?;
            self.tasks.spawn(async move {
                tokio::select! {
                    _ = conn => {}
                    _ = stop.cancelled() => {}
                }
            });
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            idle.entry(key.clone()).or_default().h2 = Some(sender.clone());
            Ok(Sender::H2(sender))
        } else {
            let (sender, conn) = http1::Builder::new()
                .handshake(io)
                .await
                .map_err(http_err)?;
            self.tasks.spawn(async move {
                tokio::select! {
                    _ = conn => {}
                    _ = stop.cancelled() => {}
                }
            });
            Ok(Sender::H1(sender))
        }
    }
}
