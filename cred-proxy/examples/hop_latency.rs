//! Added latency of the cred-proxy hop on loopback, p50/p99, against nginx
//! doing the same job (reverse proxy injecting a header over verified TLS with
//! upstream keep-alive) when `--nginx PATH` is given.
//!
//! Run: `bench/egress/cred-proxy-hop.sh` (release build). Prints a table.

#[path = "../tests/common/mod.rs"]
mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use cred_proxy::handoff;
use http::Request;
use http_body_util::BodyExt;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

const TOKEN: &str = "bench-token-0123456789abcdef";

/// One measured path: its samples, its connection, its request maker.
type Path<'a> = (
    Stats,
    SendRequest<TestBody>,
    &'a dyn Fn() -> Request<TestBody>,
);

struct Stats {
    name: String,
    samples: Vec<Duration>,
}

impl Stats {
    fn pct(&self, p: f64) -> f64 {
        let mut s = self.samples.clone();
        s.sort();
        let i = ((s.len() as f64 - 1.0) * p).round() as usize;
        s[i].as_secs_f64() * 1000.0
    }
    fn mean(&self) -> f64 {
        self.samples.iter().map(|d| d.as_secs_f64()).sum::<f64>() / self.samples.len() as f64
            * 1000.0
    }
}

async fn plain_sender(addr: SocketAddr) -> SendRequest<TestBody> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    s
}

async fn tls_sender(pki: &Pki, addr: SocketAddr) -> SendRequest<TestBody> {
    let mut roots = rustls::RootCertStore::empty();
    for c in
        <rustls::pki_types::CertificateDer as rustls::pki_types::pem::PemObject>::pem_file_iter(
            &pki.ca_path,
        )
        .unwrap()
    {
        roots.add(c.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(
            rustls::pki_types::ServerName::try_from("api.one.test").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    s
}

async fn measure(
    name: &str,
    sender: &mut SendRequest<TestBody>,
    n: usize,
    warmup: usize,
    make: &dyn Fn() -> Request<TestBody>,
    into: &mut Stats,
) {
    let samples = &mut into.samples;
    for i in 0..n + warmup {
        let req = make();
        let t = Instant::now();
        sender
            .ready()
            .await
            .unwrap_or_else(|e| panic!("{name}: connection closed: {e}"));
        let resp = sender.send_request(req).await.unwrap();
        assert!(resp.status().is_success(), "{name}: {}", resp.status());
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let d = t.elapsed();
        assert_eq!(&body[..], b"ok");
        if i >= warmup {
            samples.push(d);
        }
    }
}

fn start_nginx(nginx: &str, pki: &Pki, up: SocketAddr) -> (std::process::Child, SocketAddr) {
    let dir = pki.dir.path().join("nginx");
    std::fs::create_dir_all(dir.join("tmp")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let d = dir.display();
    let conf = format!(
        "worker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
events {{ worker_connections 256; }}\n\
http {{\n access_log off;\n client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp;\n\
 fastcgi_temp_path {d}/tmp; uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n\
 upstream up {{ server {up}; keepalive 16; keepalive_requests 1000000; }}\n keepalive_requests 1000000;\n\
 server {{\n  listen 127.0.0.1:{port};\n  location / {{\n\
   proxy_pass https://up;\n   proxy_http_version 1.1;\n   proxy_set_header Connection \"\";\n\
   proxy_set_header Host api.one.test:{upport};\n   proxy_set_header Authorization \"Bearer {TOKEN}\";\n\
   proxy_ssl_server_name on;\n   proxy_ssl_name api.one.test;\n   proxy_ssl_verify on;\n\
   proxy_ssl_trusted_certificate {ca};\n   proxy_ssl_session_reuse on;\n   proxy_buffering off;\n  }}\n }}\n}}\n",
        upport = up.port(),
        ca = pki.ca_path.display(),
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let mut child = std::process::Command::new(nginx)
        .arg("-p")
        .arg(&dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .args(["-g", "daemon off;"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("nginx starts");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(addr).is_ok() {
            return (child, addr);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("nginx did not listen on {addr}");
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .map(|i| args[i + 1].clone())
    };
    let n: usize = get("--requests")
        .map(|v| v.parse().unwrap())
        .unwrap_or(5000);
    let warmup = n / 10;
    let nginx = get("--nginx");

    let pki = Pki::new();
    let up = Upstream::start(
        &pki,
        "api.one.test",
        &[b"http/1.1"],
        handler(|_| async { http::Response::new(full("ok")) }),
    )
    .await;
    // The recorder in the test upstream would grow without bound; clear it as we go.
    let seen = up.recorder.clone();
    let proxy = Proxy::start(
        &pki,
        "[[route]]\nid = \"one\"\nhost = \"api.one.test\"\nscheme = \"Bearer\"\ntoken_ref = \"T\"\n",
        env_of(&[("T", TOKEN)]),
    )
    .await;

    let host = format!("api.one.test:{}", up.addr.port());
    let key = test_key();
    let dial = up.addr.to_string();
    let direct_req = || {
        seen.clear();
        Request::builder()
            .uri("/v1/ping")
            .header("host", &host)
            .header("authorization", format!("Bearer {TOKEN}"))
            .body(full(Bytes::new()))
            .unwrap()
    };
    let cp_req = || {
        seen.clear();
        let sig = handoff::sign(&key, "one", &dial, "GET", "/v1/ping");
        Request::builder()
            .uri("/v1/ping")
            .header("host", &host)
            .header(handoff::HEADER_ROUTE, "one")
            .header(handoff::HEADER_DIAL, &dial)
            .header(handoff::HEADER_SIG, sig)
            .body(full(Bytes::new()))
            .unwrap()
    };
    let nginx_req = || {
        seen.clear();
        Request::builder()
            .uri("/v1/ping")
            .header("host", "nginx")
            .body(full(Bytes::new()))
            .unwrap()
    };
    let mut paths: Vec<Path<'_>> = vec![
        (
            Stats {
                name: "direct TLS keep-alive (baseline)".into(),
                samples: vec![],
            },
            tls_sender(&pki, up.addr).await,
            &direct_req,
        ),
        (
            Stats {
                name: "via cred-proxy (signed hand-off)".into(),
                samples: vec![],
            },
            plain_sender(proxy.addr).await,
            &cp_req,
        ),
    ];
    let mut nginx_child = None;
    if let Some(path) = nginx {
        let (child, addr) = start_nginx(&path, &pki, up.addr);
        nginx_child = Some(child);
        paths.push((
            Stats {
                name: "via nginx (proxy_set_header)".into(),
                samples: vec![],
            },
            plain_sender(addr).await,
            &nginx_req,
        ));
    }
    // Interleave the paths in blocks so load from other processes on the
    // machine falls on all of them alike.
    let rounds = 10;
    for _ in 0..rounds {
        for (stats, sender, make) in paths.iter_mut() {
            let name = stats.name.clone();
            measure(&name, sender, n / rounds, warmup / rounds, *make, stats).await;
        }
    }
    if let Some(c) = nginx_child {
        // SIGTERM to the master stops its workers too.
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let mut c = c;
        let _ = c.wait();
    }
    let rows: Vec<Stats> = paths.into_iter().map(|(s, _, _)| s).collect();

    let base50 = rows[0].pct(0.50);
    let base99 = rows[0].pct(0.99);
    println!("requests per row: {n} (after {warmup} warm-up), sequential, keep-alive, loopback");
    println!(
        "{:<36} {:>9} {:>9} {:>9} {:>12} {:>12}",
        "path", "p50 ms", "p99 ms", "mean ms", "+p50 ms", "+p99 ms"
    );
    for r in &rows {
        println!(
            "{:<36} {:>9.3} {:>9.3} {:>9.3} {:>12.3} {:>12.3}",
            r.name,
            r.pct(0.50),
            r.pct(0.99),
            r.mean(),
            r.pct(0.50) - base50,
            r.pct(0.99) - base99,
        );
    }
}
