//! Test harness: in-process upstreams on loopback (TLS with a test CA, and plain HTTP), an
//! egress proxy with a query-counting resolver stub, and a client that speaks CONNECT + TLS
//! (h1 or h2) through it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use egress::config::{Config, EgressConfig};
use egress::proxy::{Proxy, ProxyHandle};
use egress::resolve::{BoxFuture, Resolve};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

pub type TBody =
    http_body_util::combinators::BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

pub fn init() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub version: http::Version,
}

/// Gate for the slow download: the test releases chunks.
pub struct Upstream {
    pub seen: Mutex<Vec<Seen>>,
    pub slow_gate: tokio::sync::Semaphore,
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream {
            seen: Mutex::new(Vec::new()),
            slow_gate: tokio::sync::Semaphore::new(0),
        }
    }
}

pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub ca_cert: PathBuf,
    pub ca_key: PathBuf,
    pub ca_der: CertificateDer<'static>,
    pub upstream_ca: PathBuf,
    pub tls_port: u16,
    pub plain_port: u16,
    pub upstream: Arc<Upstream>,
    pub shutdown: CancellationToken,
}

fn upstream_leaf(
    issuer: &Issuer<'_, KeyPair>,
    names: &[&str],
) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
    let key = KeyPair::generate().unwrap();
    let params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    let cert = params.signed_by(&key, issuer).unwrap();
    (
        cert.der().clone(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    )
}

async fn upstream_handler(
    up: Arc<Upstream>,
    mut req: Request<Incoming>,
) -> Result<Response<TBody>, Infallible> {
    if req.headers().contains_key("upgrade") {
        // An echo protocol: whatever the client sends after the 101 comes back.
        let on = hyper::upgrade::on(&mut req);
        up.seen.lock().unwrap().push(Seen {
            method: req.method().to_string(),
            path: req.uri().path().to_string(),
            headers: HashMap::new(),
            body: Vec::new(),
            version: req.version(),
        });
        tokio::spawn(async move {
            if let Ok(u) = on.await {
                let mut io = TokioIo::new(u);
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        let mut r = Response::new(Full::new(Bytes::new()).map_err(|e| match e {}).boxed());
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        r.headers_mut()
            .insert("connection", "upgrade".parse().unwrap());
        r.headers_mut().insert("upgrade", "echo".parse().unwrap());
        return Ok(r);
    }
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let headers = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    up.seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        path: path.clone(),
        headers,
        body: body.clone(),
        version: parts.version,
    });
    let full = |s: StatusCode, b: Vec<u8>| {
        let mut r = Response::new(Full::new(Bytes::from(b)).map_err(|e| match e {}).boxed());
        *r.status_mut() = s;
        r
    };
    if path.starts_with("/redirect") {
        let mut r = full(StatusCode::FOUND, b"moved".to_vec());
        r.headers_mut().insert(
            "location",
            "https://elsewhere.example.test/".parse().unwrap(),
        );
        return Ok(r);
    }
    if path.starts_with("/slow") {
        // 20 chunks of 64 KiB, each released by the test through the gate.
        let up2 = up.clone();
        let stream = futures_util::stream::unfold(0u32, move |i| {
            let up = up2.clone();
            async move {
                if i >= 20 {
                    return None;
                }
                up.slow_gate.acquire().await.unwrap().forget();
                Some((
                    Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Frame::data(Bytes::from(
                        vec![b'x'; 65536],
                    ))),
                    i + 1,
                ))
            }
        });
        let r = Response::new(StreamBody::new(stream).boxed());
        return Ok(r);
    }
    if path.starts_with("/big") {
        return Ok(full(StatusCode::OK, vec![b'y'; 1 << 20]));
    }
    Ok(full(
        StatusCode::OK,
        format!("ok {} {}", parts.method, path).into_bytes(),
    ))
}

impl TestEnv {
    pub async fn new() -> TestEnv {
        init();
        let dir = tempfile::tempdir().unwrap();
        let (ca_pem, ca_key_pem) = egress::mint::generate_ca("bottle test CA").unwrap();
        let ca_cert = dir.path().join("ca.pem");
        let ca_key = dir.path().join("ca.key");
        std::fs::write(&ca_cert, &ca_pem).unwrap();
        std::fs::write(&ca_key, &ca_key_pem).unwrap();
        use rustls_pki_types::pem::PemObject;
        let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap();

        // Upstream CA (what "the internet" presents).
        let up_key = KeyPair::generate().unwrap();
        let mut up_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        up_params
            .distinguished_name
            .push(DnType::CommonName, "upstream test CA");
        up_params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let up_cert = up_params.self_signed(&up_key).unwrap();
        let upstream_ca = dir.path().join("upstream-ca.pem");
        std::fs::write(&upstream_ca, up_cert.pem()).unwrap();
        let issuer = Issuer::new(up_params, up_key);
        let (leaf, key) = upstream_leaf(
            &issuer,
            &[
                "api.example.test",
                "other.example.test",
                "a.wild.test",
                "b.a.wild.test",
                "wild.test",
                "127.0.0.1",
                "auth.example.test",
            ],
        );
        let mut scfg = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![leaf], key)
            .unwrap();
        scfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(scfg));

        let upstream = Arc::new(Upstream::default());
        let shutdown = CancellationToken::new();
        let tls_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let plain_l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let tls_port = tls_l.local_addr().unwrap().port();
        let plain_port = plain_l.local_addr().unwrap().port();
        {
            let up = upstream.clone();
            let sd = shutdown.clone();
            tokio::spawn(async move {
                loop {
                    let (s, _) = tokio::select! { _ = sd.cancelled() => break, a = tls_l.accept() => a.unwrap() };
                    let acc = acceptor.clone();
                    let up = up.clone();
                    tokio::spawn(async move {
                        let Ok(tls) = acc.accept(s).await else { return };
                        let svc = service_fn(move |r| upstream_handler(up.clone(), r));
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                            .await;
                    });
                }
            });
        }
        {
            let up = upstream.clone();
            let sd = shutdown.clone();
            tokio::spawn(async move {
                loop {
                    let (s, _) = tokio::select! { _ = sd.cancelled() => break, a = plain_l.accept() => a.unwrap() };
                    let up = up.clone();
                    tokio::spawn(async move {
                        let svc = service_fn(move |r| upstream_handler(up.clone(), r));
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(s), svc)
                            .with_upgrades()
                            .await;
                    });
                }
            });
        }
        TestEnv {
            dir,
            ca_cert,
            ca_key,
            ca_der,
            upstream_ca,
            tls_port,
            plain_port,
            upstream,
            shutdown,
        }
    }

    /// Config head with the CA paths, listen on an ephemeral port, audit log in the temp dir.
    pub fn head(&self) -> String {
        format!(
            "listen = \"127.0.0.1:0\"\nbottle_id = \"test-bottle\"\nca_cert = {:?}\nca_key = {:?}\nupstream_ca = {:?}\naudit_log = {:?}\n",
            self.ca_cert,
            self.ca_key,
            self.upstream_ca,
            self.audit_path()
        )
    }

    pub fn audit_path(&self) -> PathBuf {
        self.dir.path().join("audit.jsonl")
    }

    pub fn audit(&self) -> String {
        std::fs::read_to_string(self.audit_path()).unwrap_or_default()
    }

    /// `[[resolve]]` entries pointing the test names at 127.0.0.1 on both upstream ports.
    pub fn resolves(&self, names: &[&str]) -> String {
        let mut s = String::new();
        for n in names {
            for p in [self.tls_port, self.plain_port] {
                s.push_str(&format!(
                    "[[resolve]]\nhost = \"{n}\"\nport = {p}\naddr = \"127.0.0.1\"\n"
                ));
            }
        }
        s
    }

    pub fn write_config(&self, name: &str, text: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.upstream.seen.lock().unwrap().clone()
    }
}

/// Resolver stub: counts queries, answers 127.0.0.1 for everything.
#[derive(Default)]
pub struct CountingResolver {
    pub queries: AtomicUsize,
    pub answers: Mutex<HashMap<String, Vec<IpAddr>>>,
}

pub struct Counter(pub Arc<CountingResolver>);

impl Resolve for Counter {
    fn lookup(&self, host: String) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>> {
        self.0.queries.fetch_add(1, Ordering::SeqCst);
        let ans = self
            .0
            .answers
            .lock()
            .unwrap()
            .get(&host)
            .cloned()
            .unwrap_or_else(|| vec!["127.0.0.1".parse().unwrap()]);
        Box::pin(async move { Ok(ans) })
    }
}

pub struct RunningProxy {
    pub addr: SocketAddr,
    /// The gate's listener (`gate_listen`), when configured.
    pub gate_addr: Option<SocketAddr>,
    pub handle: ProxyHandle,
    pub resolver: Arc<CountingResolver>,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
}

impl Drop for RunningProxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn parse_config(text: &str) -> Config {
    EgressConfig::from_toml_str(text, Path::new("test.toml"))
        .unwrap()
        .validate()
        .unwrap()
}

pub async fn start_proxy(text: &str) -> RunningProxy {
    init();
    let config = parse_config(text);
    let resolver = Arc::new(CountingResolver::default());
    let proxy = Proxy::bind(config, Arc::new(Counter(resolver.clone())))
        .await
        .unwrap();
    let addr = proxy.local_addr();
    let gate_addr = proxy.gate_addr();
    let handle = proxy.handle();
    let shutdown = CancellationToken::new();
    let sd = shutdown.clone();
    let task = tokio::spawn(async move { proxy.run(sd).await });
    RunningProxy {
        addr,
        gate_addr,
        handle,
        resolver,
        shutdown,
        task,
    }
}

/// Sends CONNECT and returns the proxy's status, headers block and the open stream.
pub async fn connect(proxy: SocketAddr, authority: &str) -> (u16, String, TcpStream) {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut b).await.unwrap();
        if n == 0 {
            break;
        }
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    if status != 200 {
        // Drain the body so the caller can inspect everything.
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_millis(500), s.read_to_end(&mut rest)).await;
        return (status, head + &String::from_utf8_lossy(&rest), s);
    }
    (status, head, s)
}

pub fn client_tls(ca: &CertificateDer<'static>, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let mut cfg = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

pub type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// CONNECT then TLS with `sni`, trusting the bottle CA.
pub async fn tls_through(
    env: &TestEnv,
    proxy: SocketAddr,
    authority: &str,
    sni: &str,
    alpn: &[&[u8]],
) -> std::io::Result<Tls> {
    let (status, head, s) = connect(proxy, authority).await;
    assert_eq!(status, 200, "CONNECT {authority}: {head}");
    let name = ServerName::try_from(sni.to_string()).unwrap();
    client_tls(&env.ca_der, alpn).connect(name, s).await
}

pub struct Resp {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn block(&self) -> String {
        self.headers
            .get("x-bottle-block")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

pub fn body(b: impl Into<Bytes>) -> TBody {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

async fn collect(r: Response<Incoming>) -> Resp {
    let (parts, b) = r.into_parts();
    let body = b
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    Resp {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    }
}

/// One HTTP/1.1 request over an established stream.
pub async fn h1<T>(io: T, req: Request<TBody>) -> Resp
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    collect(send.send_request(req).await.unwrap()).await
}

/// HTTPS GET/POST through the proxy over HTTP/1.1.
pub async fn https(
    env: &TestEnv,
    proxy: SocketAddr,
    host: &str,
    port: u16,
    req: Request<TBody>,
) -> Resp {
    let tls = tls_through(env, proxy, &format!("{host}:{port}"), host, &[b"http/1.1"])
        .await
        .unwrap();
    h1(tls, req).await
}

pub fn get(host: &str, port: u16, path: &str) -> Request<TBody> {
    Request::builder()
        .uri(path)
        .header("host", format!("{host}:{port}"))
        .body(body(Bytes::new()))
        .unwrap()
}

pub fn post(host: &str, port: u16, path: &str, b: impl Into<Bytes>) -> Request<TBody> {
    Request::builder()
        .method("POST")
        .uri(path)
        .header("host", format!("{host}:{port}"))
        .body(body(b))
        .unwrap()
}

/// Plain-HTTP absolute-form request to the proxy.
pub async fn plain(proxy: SocketAddr, mut req: Request<TBody>) -> Resp {
    let s = TcpStream::connect(proxy).await.unwrap();
    if !req.headers().contains_key("host") {
        let h = req.uri().authority().unwrap().to_string();
        req.headers_mut().insert("host", h.parse().unwrap());
    }
    h1(s, req).await
}
