//! Test fixtures: a test CA (rcgen), TLS upstreams on loopback that record
//! what they receive, a cred-proxy in-process, and an egress-like client that
//! signs its hand-offs.
#![allow(dead_code)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use cred_proxy::handoff::{self, BrokerKey};
use cred_proxy::tokens::EnvLookup;
use cred_proxy::{Config, Server};
use http::{HeaderMap, Method, Request, Response, Version};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type TestBody = UnsyncBoxBody<Bytes, BoxError>;

pub fn full(b: impl Into<Bytes>) -> TestBody {
    Full::new(b.into())
        .map_err(|e: Infallible| match e {})
        .boxed_unsync()
}

/// A CA trusted through `upstream_ca`.
pub struct Pki {
    issuer: CertifiedIssuer<'static, KeyPair>,
    pub dir: tempfile::TempDir,
    pub ca_path: PathBuf,
}

impl Pki {
    pub fn new() -> Pki {
        cred_proxy::install_crypto_provider();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "cred-proxy test CA");
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let ca_path = dir.path().join("upstream-ca.pem");
        std::fs::write(&ca_path, issuer.pem()).unwrap();
        Pki {
            issuer,
            dir,
            ca_path,
        }
    }

    pub fn server_config(&self, host: &str, alpn: &[&[u8]]) -> rustls::ServerConfig {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec![host.to_owned()])
            .unwrap()
            .signed_by(&key, &self.issuer)
            .unwrap();
        let chain = vec![
            CertificateDer::from(cert.der().to_vec()),
            self.issuer.der().clone(),
        ];
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        cfg
    }
}

/// What an upstream received.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    pub uri: http::Uri,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

pub type Handler =
    Arc<dyn Fn(Seen) -> Pin<Box<dyn Future<Output = Response<TestBody>> + Send>> + Send + Sync>;

pub fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(Seen) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    Arc::new(move |s| Box::pin(f(s)))
}

pub fn ok_handler() -> Handler {
    handler(|_| async { Response::new(full("upstream ok")) })
}

/// A TLS upstream on loopback.
pub struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    pub async fn start(pki: &Pki, host: &str, alpn: &[&[u8]], handler: Handler) -> Upstream {
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(pki.server_config(host, alpn)));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = seen.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let acceptor = acceptor.clone();
                let seen = seen2.clone();
                let handler = handler.clone();
                conns.spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let seen = seen.clone();
                        let handler = handler.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body
                                .collect()
                                .await
                                .map(|c| c.to_bytes())
                                .unwrap_or_default();
                            let s = Seen {
                                method: parts.method,
                                uri: parts.uri,
                                version: parts.version,
                                headers: parts.headers,
                                body,
                            };
                            seen.lock().unwrap().push(s.clone());
                            Ok::<_, Infallible>(handler(s).await)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Upstream { addr, seen, task }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

pub fn test_key() -> BrokerKey {
    BrokerKey::from_bytes([7u8; 32])
}

pub fn env_of(pairs: &[(&str, &str)]) -> EnvLookup {
    let map: std::collections::HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Arc::new(move |k| map.get(k).cloned())
}

/// A running in-process cred-proxy; stops on drop.
pub struct Proxy {
    pub addr: SocketAddr,
    stop: CancellationToken,
    pub reloader: cred_proxy::server::Reloader,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Proxy {
    /// `routes` is the TOML of the `[[route]]` tables.
    pub async fn start(pki: &Pki, routes: &str, env: EnvLookup) -> Proxy {
        let text = format!(
            "listen = \"127.0.0.1:0\"\nupstream_ca = \"{}\"\n{routes}",
            pki.ca_path.display()
        );
        let config = Config::from_toml_str(&text, std::path::Path::new("test.toml")).unwrap();
        let server = Server::bind(config, test_key(), env).await.unwrap();
        let addr = server.local_addr();
        let reloader = server.reloader();
        let stop = CancellationToken::new();
        tokio::spawn(server.serve(stop.clone()));
        Proxy {
            addr,
            stop,
            reloader,
        }
    }
}

/// A hand-off request as egress would send it.
pub struct Handoff<'a> {
    pub route: &'a str,
    pub dial: SocketAddr,
    pub method: Method,
    pub path: &'a str,
    pub headers: Vec<(&'a str, &'a str)>,
    pub body: Bytes,
    /// None: sign correctly; Some(s): send this signature instead.
    pub sig: Option<String>,
    pub omit_handoff: bool,
}

impl<'a> Handoff<'a> {
    pub fn get(route: &'a str, dial: SocketAddr, path: &'a str) -> Self {
        Handoff {
            route,
            dial,
            method: Method::GET,
            path,
            headers: vec![],
            body: Bytes::new(),
            sig: None,
            omit_handoff: false,
        }
    }

    pub fn header(mut self, k: &'a str, v: &'a str) -> Self {
        self.headers.push((k, v));
        self
    }

    pub async fn send(self, proxy: SocketAddr) -> Response<Incoming> {
        let tcp = tokio::net::TcpStream::connect(proxy).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        let dial = self.dial.to_string();
        let mut b = Request::builder()
            .method(self.method.clone())
            .uri(self.path);
        if !self
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("host"))
        {
            b = b.header("host", "cred-proxy");
        }
        if !self.omit_handoff {
            let sig = self.sig.clone().unwrap_or_else(|| {
                handoff::sign(
                    &test_key(),
                    self.route,
                    &dial,
                    self.method.as_str(),
                    self.path,
                )
            });
            b = b
                .header(handoff::HEADER_ROUTE, self.route)
                .header(handoff::HEADER_DIAL, &dial)
                .header(handoff::HEADER_SIG, sig);
        }
        for (k, v) in &self.headers {
            b = b.header(*k, *v);
        }
        let req = b.body(full(self.body)).unwrap();
        sender.send_request(req).await.unwrap()
    }
}

pub async fn body_string(resp: Response<Incoming>) -> String {
    String::from_utf8(
        resp.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap()
}
