//! Test harness: egress's view of test-support's recording upstreams (a TLS and a plain
//! port, with the paths these tests use), an egress proxy with a query-counting resolver
//! stub, and HTTP requests over test-support's CONNECT + TLS client.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use egress::config::{Config, EgressConfig};
use egress::proxy::{Proxy, ProxyHandle};
use egress::resolve::{BoxFuture, Resolve};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use rustls_pki_types::CertificateDer;
use test_support::pki::Pki;
use test_support::upstream;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

// Not every test binary uses every fixture.
#[allow(unused_imports)]
pub use test_support::client::{client_tls, connect, Tls};

pub type TBody =
    http_body_util::combinators::BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

pub fn init() {
    test_support::install_crypto_provider();
}

/// A request as the upstream saw it, flattened for short assertions.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    /// With the query.
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub version: http::Version,
}

impl From<upstream::Seen> for Seen {
    fn from(s: upstream::Seen) -> Seen {
        Seen {
            method: s.method.to_string(),
            path: s
                .uri
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            headers: s
                .headers
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect(),
            body: s.body.to_vec(),
            version: s.version,
        }
    }
}

/// Gate for the slow download: the test releases chunks.
pub struct Upstream {
    pub slow_gate: tokio::sync::Semaphore,
}

impl Default for Upstream {
    fn default() -> Self {
        Upstream {
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
    recorder: upstream::Recorder,
    _pki: Pki,
    _servers: [upstream::Upstream; 2],
}

/// The paths the egress tests rely on; anything else answers "ok METHOD PATH".
async fn upstream_handler(up: Arc<Upstream>, seen: upstream::Seen) -> Response<test_support::Body> {
    let path = seen
        .uri
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    let full = |s: StatusCode, b: Vec<u8>| {
        let mut r = Response::new(test_support::full(b));
        *r.status_mut() = s;
        r
    };
    if path.starts_with("/redirect") {
        let mut r = full(StatusCode::FOUND, b"moved".to_vec());
        r.headers_mut().insert(
            "location",
            "https://elsewhere.example.test/".parse().unwrap(),
        );
        return r;
    }
    if path.starts_with("/slow") {
        // 20 chunks of 64 KiB, each released by the test through the gate.
        let stream = futures_util::stream::unfold(0u32, move |i| {
            let up = up.clone();
            async move {
                if i >= 20 {
                    return None;
                }
                up.slow_gate.acquire().await.unwrap().forget();
                Some((
                    Ok::<_, test_support::BoxError>(Frame::data(Bytes::from(vec![b'x'; 65536]))),
                    i + 1,
                ))
            }
        });
        return Response::new(StreamBody::new(stream).boxed_unsync());
    }
    if path.starts_with("/big") {
        return full(StatusCode::OK, vec![b'y'; 1 << 20]);
    }
    full(
        StatusCode::OK,
        format!("ok {} {}", seen.method, path).into_bytes(),
    )
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

        // What "the internet" presents, on a TLS and a plain port sharing one log.
        let pki = Pki::new();
        let tls = pki.server_config_for(
            &[
                "api.example.test",
                "other.example.test",
                "a.wild.test",
                "b.a.wild.test",
                "wild.test",
                "127.0.0.1",
                "auth.example.test",
            ],
            &[b"h2", b"http/1.1"],
        );
        let up = Arc::new(Upstream::default());
        let handler = {
            let up = up.clone();
            upstream::handler(move |seen| upstream_handler(up.clone(), seen))
        };
        let recorder = upstream::Recorder::default();
        let tls_server =
            upstream::Upstream::serve(recorder.clone(), Some(tls), handler.clone()).await;
        let plain_server = upstream::Upstream::serve(recorder.clone(), None, handler).await;
        TestEnv {
            dir,
            ca_cert,
            ca_key,
            ca_der,
            upstream_ca: pki.ca_path.clone(),
            tls_port: tls_server.addr.port(),
            plain_port: plain_server.addr.port(),
            upstream: up,
            recorder,
            _pki: pki,
            _servers: [tls_server, plain_server],
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
        self.recorder.seen().into_iter().map(Seen::from).collect()
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

/// CONNECT then TLS with `sni`, trusting the bottle CA.
pub async fn tls_through(
    env: &TestEnv,
    proxy: SocketAddr,
    authority: &str,
    sni: &str,
    alpn: &[&[u8]],
) -> std::io::Result<Tls> {
    test_support::client::tls_through(proxy, authority, sni, &env.ca_der, alpn).await
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
