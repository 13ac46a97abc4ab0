//! The upstream client: hyper's pooled client over rustls (webpki roots plus `upstream_ca`),
//! HTTP/2 when the server offers it, with a connector that dials only addresses the SSRF guard
//! accepted. It never follows redirects (hyper's client does not).

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http_body_util::combinators::UnsyncBoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::ClientConfig;
use rustls_pki_types::CertificateDer;
use tokio::net::TcpStream;

use crate::error::Error;
use crate::resolve::{DialError, Dialer};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Connector for hyper's client: resolve, SSRF-check, dial.
#[derive(Clone, Debug)]
pub struct GuardedConnector {
    dialer: Dialer,
}

impl tower_service::Service<Uri> for GuardedConnector {
    type Response = TokioIo<TcpStream>;
    type Error = DialError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, DialError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let dialer = self.dialer.clone();
        Box::pin(async move {
            let host = uri
                .host()
                .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string())
                .unwrap_or_default();
            let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
                Some("https") => 443,
                _ => 80,
            });
            let (s, _) = dialer.connect(&host, port).await?;
            Ok(TokioIo::new(s))
        })
    }
}

pub type UpstreamClient = Client<hyper_rustls::HttpsConnector<GuardedConnector>, Body>;

/// The rustls client config for upstream: webpki roots plus the PEM roots in `upstream_ca`.
pub fn client_tls(upstream_ca: Option<&Path>) -> Result<ClientConfig, Error> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(p) = upstream_ca {
        let pem = std::fs::read(p).map_err(|e| Error::Io {
            path: p.to_path_buf(),
            source: e,
        })?;
        let mut n = 0;
        for c in CertificateDer::pem_slice_iter(&pem) {
            let c = c.map_err(|_| Error::Ca {
                path: p.to_path_buf(),
                message: "not a PEM certificate bundle".into(),
            })?;
            roots.add(c).map_err(|e| Error::Ca {
                path: p.to_path_buf(),
                message: format!("unusable root: {e}"),
            })?;
            n += 1;
        }
        if n == 0 {
            return Err(Error::Ca {
                path: p.to_path_buf(),
                message: "no certificate found".into(),
            });
        }
    }
    let cfg =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Ca {
                path: "<rustls>".into(),
                message: e.to_string(),
            })?
            .with_root_certificates(roots)
            .with_no_client_auth();
    Ok(cfg)
}

/// The pooled upstream client.
pub fn client(dialer: Dialer, tls: ClientConfig) -> UpstreamClient {
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(GuardedConnector { dialer });
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(64)
        .build(https)
}

/// Plain HTTP/1.1 client toward cred-proxy (the broker network is not intercepted).
pub type HandoffClient = Client<hyper_util::client::legacy::connect::HttpConnector, Body>;

pub fn handoff_client() -> HandoffClient {
    let mut c = hyper_util::client::legacy::connect::HttpConnector::new();
    c.set_connect_timeout(Some(Duration::from_secs(10)));
    c.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(c)
}

/// Finds a [`DialError`] in an error's source chain (hyper wraps connector errors).
pub fn find_dial_error<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a DialError> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(d) = err.downcast_ref::<DialError>() {
            return Some(d);
        }
        cur = err.source();
    }
    None
}

/// One request on a fresh HTTP/1.1 connection (ALPN http/1.1 only), for protocol upgrades:
/// an upgrade cannot ride a pooled HTTP/2 connection.
pub async fn send_upgrade(
    dialer: &Dialer,
    tls: Arc<ClientConfig>,
    https: bool,
    host: &str,
    port: u16,
    req: http::Request<Body>,
) -> Result<http::Response<hyper::body::Incoming>, BoxError> {
    let (tcp, _) = dialer.connect(host, port).await?;
    if https {
        let name = rustls_pki_types::ServerName::try_from(host.to_string())?;
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await?;
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn.with_upgrades());
        Ok(send.send_request(req).await?)
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
        tokio::spawn(conn.with_upgrades());
        Ok(send.send_request(req).await?)
    }
}
