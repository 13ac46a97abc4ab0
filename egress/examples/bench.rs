//! Benchmark driver for `bench/egress/run.sh`: one HTTPS upstream on loopback, reached directly,
//! through egress, through mitmproxy and through squid (ssl-bump); prints a Markdown table. A
//! second table: a 100 MB JSON upload directly, through an egress route without DLP and through
//! a DLP route (MB/s and egress's peak RSS, a fresh egress process per row).
//!
//! bench --egress BIN [--mitmdump BIN] [--squid BIN] [--work DIR] [--secs N]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type BoxErr = Box<dyn std::error::Error + Send + Sync>;
type RBody = http_body_util::combinators::BoxBody<Bytes, BoxErr>;

const BIG: usize = 100 * 1024 * 1024;

struct Args {
    egress: PathBuf,
    mitmdump: Option<PathBuf>,
    squid: Option<PathBuf>,
    work: PathBuf,
    secs: u64,
}

fn args() -> Args {
    let mut a = Args {
        egress: PathBuf::from("target/x86_64-unknown-linux-gnu/release/egress"),
        mitmdump: None,
        squid: None,
        work: PathBuf::from("bench/.work/egress"),
        secs: 3,
    };
    let v: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i + 1 < v.len() {
        match v[i].as_str() {
            "--egress" => a.egress = v[i + 1].clone().into(),
            "--mitmdump" => a.mitmdump = Some(v[i + 1].clone().into()),
            "--squid" => a.squid = Some(v[i + 1].clone().into()),
            "--work" => a.work = v[i + 1].clone().into(),
            "--secs" => a.secs = v[i + 1].parse().expect("--secs N"),
            o => panic!("unknown argument {o}"),
        }
        i += 2;
    }
    a
}

async fn upstream_handler(req: Request<Incoming>) -> Result<Response<RBody>, BoxErr> {
    if req.uri().path() == "/sink" {
        let mut body = req.into_body();
        let mut n = 0usize;
        while let Some(f) = body.frame().await {
            if let Some(d) = f?.data_ref() {
                n += d.len();
            }
        }
        return Ok(Response::new(
            Full::new(Bytes::from(n.to_string()))
                .map_err(|e| match e {})
                .boxed(),
        ));
    }
    if req.uri().path() == "/big" {
        let chunk = Bytes::from(vec![b'z'; 64 * 1024]);
        let n = BIG / chunk.len();
        let s = futures_util::stream::iter(
            (0..n).map(move |_| Ok::<_, BoxErr>(Frame::data(chunk.clone()))),
        );
        let mut r = Response::new(StreamBody::new(s).boxed());
        r.headers_mut().insert("content-length", BIG.into());
        return Ok(r);
    }
    Ok(Response::new(
        Full::new(Bytes::from_static(b"hello from upstream\n"))
            .map_err(|e| match e {})
            .boxed(),
    ))
}

async fn start_upstream(cert: CertificateDer<'static>, key: PrivateKeyDer<'static>) -> SocketAddr {
    let mut cfg = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acc = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else {
                continue;
            };
            let _ = s.set_nodelay(true);
            let acc = acc.clone();
            tokio::spawn(async move {
                let Ok(tls) = acc.accept(s).await else { return };
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(
                        TokioIo::new(tls),
                        hyper::service::service_fn(upstream_handler),
                    )
                    .await;
            });
        }
    });
    addr
}

#[derive(Clone)]
struct Target {
    proxy: Option<SocketAddr>,
    upstream: SocketAddr,
    tls: tokio_rustls::TlsConnector,
    /// squid mints DNS SANs even for IP literals, so its row uses a name.
    sni: ServerName<'static>,
    /// What CONNECT and `Host` name: the upstream's address, or for squid
    /// (which checks the upstream certificate against a DNS name only) a name
    /// its `hosts_file` maps to the upstream.
    authority: String,
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

async fn open<B>(t: &Target) -> Result<hyper::client::conn::http1::SendRequest<B>, BoxErr>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxErr>,
{
    let s = match t.proxy {
        None => TcpStream::connect(t.upstream).await?,
        Some(p) => {
            let mut s = TcpStream::connect(p).await?;
            s.write_all(
                format!("CONNECT {u} HTTP/1.1\r\nHost: {u}\r\n\r\n", u = t.authority).as_bytes(),
            )
            .await?;
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                if s.read(&mut b).await? == 0 {
                    return Err("proxy closed".into());
                }
                head.push(b[0]);
            }
            if !head.starts_with(b"HTTP/1.1 200") && !head.starts_with(b"HTTP/1.0 200") {
                return Err(format!("CONNECT refused: {}", String::from_utf8_lossy(&head)).into());
            }
            s
        }
    };
    s.set_nodelay(true)?;
    let tls = t.tls.connect(t.sni.clone(), s).await?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    Ok(send)
}

async fn get(send: &mut Sender, t: &Target, path: &str) -> Result<usize, BoxErr> {
    send.ready().await?;
    let req = Request::builder()
        .uri(path)
        .header("host", t.authority.clone())
        .body(Empty::new())?;
    let resp = send.send_request(req).await?;
    if !resp.status().is_success() {
        return Err(format!("status {}", resp.status()).into());
    }
    let mut body = resp.into_body();
    let mut n = 0;
    while let Some(f) = body.frame().await {
        if let Some(d) = f?.data_ref() {
            n += d.len();
        }
    }
    Ok(n)
}

/// A chat-shaped JSON body of `BIG` bytes: the kind a long agent conversation posts.
fn json_upload() -> RBody {
    let turn = "{\"role\":\"user\",\"content\":\"Here is the file you asked for (caf\\u00e9 edition):\\n```rust\\nfn main() { println!(\\\"hello\\\"); }\\n```\\n\"},";
    let chunk = Bytes::from(turn.repeat(64 * 1024 / turn.len()));
    let (head, end) = (&b"{\"messages\":["[..], &b"{}]}"[..]);
    let n = (BIG - head.len() - end.len()) / chunk.len();
    let pad = BIG - head.len() - end.len() - n * chunk.len();
    let tail = Bytes::from([" ".repeat(pad).into_bytes(), end.to_vec()].concat());
    let parts = std::iter::once(Bytes::from_static(head))
        .chain(std::iter::repeat_n(chunk, n))
        .chain(std::iter::once(tail));
    StreamBody::new(futures_util::stream::iter(
        parts.map(|b| Ok::<_, BoxErr>(Frame::data(b))),
    ))
    .boxed()
}

/// Uploads `BIG` bytes of JSON to `/sink`: MB/s, and the proxy's peak RSS.
async fn upload(name: &str, t: &Target, pid: Option<u32>) -> UploadRow {
    let r: Result<f64, BoxErr> = async {
        let mut s = open::<RBody>(t).await?;
        s.ready().await?;
        let req = Request::builder()
            .method("POST")
            .uri("/sink")
            .header("host", t.authority.clone())
            .header("content-type", "application/json")
            .header("content-length", BIG)
            .body(json_upload())?;
        let st = Instant::now();
        let resp = send_collect(&mut s, req).await?;
        let secs = st.elapsed().as_secs_f64();
        if resp != BIG.to_string() {
            return Err(format!("upstream got {resp} bytes, not {BIG}").into());
        }
        Ok(BIG as f64 / 1e6 / secs)
    }
    .await;
    UploadRow {
        name: name.into(),
        mbps: r.as_ref().ok().copied(),
        peak_kib: pid.and_then(|p| rss(p, "VmHWM:")),
        error: r.err().map(|e| e.to_string()),
    }
}

async fn send_collect(
    s: &mut hyper::client::conn::http1::SendRequest<RBody>,
    req: Request<RBody>,
) -> Result<String, BoxErr> {
    let resp = s.send_request(req).await?;
    let status = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    if !status.is_success() {
        return Err(format!("status {status}: {}", String::from_utf8_lossy(&body)).into());
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

struct UploadRow {
    name: String,
    mbps: Option<f64>,
    peak_kib: Option<u64>,
    error: Option<String>,
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[derive(Default, Clone)]
struct Row {
    name: String,
    ka_p50: f64,
    ka_p99: f64,
    new_p50: f64,
    new_p99: f64,
    rps: [f64; 3],
    mbps: f64,
    rss_idle_kib: Option<u64>,
    rss_peak_kib: Option<u64>,
    size: Option<u64>,
    error: Option<String>,
}

fn rss(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

async fn measure(name: &str, t: &Target, pid: Option<u32>, secs: u64) -> Row {
    let mut row = Row {
        name: name.into(),
        ..Default::default()
    };
    if let Some(p) = pid {
        row.rss_idle_kib = rss(p, "VmRSS:");
    }
    let r: Result<(), BoxErr> = async {
        // Keep-alive latency on one connection.
        let mut s = open(t).await?;
        for _ in 0..200 {
            get(&mut s, t, "/").await?;
        }
        let mut lat = Vec::new();
        for _ in 0..2000 {
            let st = Instant::now();
            get(&mut s, t, "/").await?;
            lat.push(st.elapsed().as_secs_f64() * 1e3);
        }
        row.ka_p50 = pct(&mut lat, 0.5);
        row.ka_p99 = pct(&mut lat, 0.99);
        // New connection (CONNECT + TLS + request) latency.
        let mut lat = Vec::new();
        for _ in 0..200 {
            let st = Instant::now();
            let mut s = open(t).await?;
            get(&mut s, t, "/").await?;
            lat.push(st.elapsed().as_secs_f64() * 1e3);
        }
        row.new_p50 = pct(&mut lat, 0.5);
        row.new_p99 = pct(&mut lat, 0.99);
        // Throughput at concurrency 1, 64, 256 (keep-alive connections).
        for (i, c) in [1usize, 64, 256].into_iter().enumerate() {
            let deadline = Instant::now() + Duration::from_secs(secs);
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..c {
                let t = t.clone();
                set.spawn(async move {
                    let mut s = open(&t).await?;
                    let mut n = 0u64;
                    while Instant::now() < deadline {
                        get(&mut s, &t, "/").await?;
                        n += 1;
                    }
                    Ok::<u64, BoxErr>(n)
                });
            }
            let st = Instant::now();
            let mut total = 0;
            while let Some(r) = set.join_next().await {
                total += r??;
            }
            row.rps[i] = total as f64 / st.elapsed().as_secs_f64();
        }
        // 100 MB body.
        let mut s = open(t).await?;
        let st = Instant::now();
        let n = get(&mut s, t, "/big").await?;
        assert_eq!(n, BIG);
        row.mbps = BIG as f64 / 1e6 / st.elapsed().as_secs_f64();
        Ok(())
    }
    .await;
    if let Err(e) = r {
        row.error = Some(e.to_string());
    }
    if let Some(p) = pid {
        row.rss_peak_kib = rss(p, "VmHWM:");
    }
    row
}

struct Proc(Child);

/// Starts egress on a free port with the bench CA, the upstream CA, an audit file and `tail`
/// (its `[dlp]` and routes); returns once it listens.
async fn start_egress(bin: &Path, work: &Path, file: &str, tail: &str) -> (Proc, u16) {
    let port = free_port();
    let cfg = format!(
        "listen = \"127.0.0.1:{port}\"\nbottle_id = \"bench\"\nca_cert = {:?}\nca_key = {:?}\nupstream_ca = {:?}\naudit_log = {:?}\nssrf_allow_cidrs = [\"127.0.0.0/8\"]\n{tail}",
        work.join("ca.pem"),
        work.join("ca.key"),
        work.join("upstream-ca.pem"),
        work.join(format!("{file}-audit.jsonl")),
    );
    let config = work.join(format!("{file}.toml"));
    write(&config, &cfg);
    let child = Command::new(bin)
        .arg("--config")
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let p = Proc(child);
    wait_port(port).await;
    (p, port)
}
impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_port(port: u16) {
    for _ in 0..300 {
        if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("nothing listening on {port}");
}

fn write(p: &Path, s: &str) {
    std::fs::write(p, s).unwrap();
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let a = args();
    let _ = std::fs::remove_dir_all(&a.work);
    std::fs::create_dir_all(&a.work).unwrap();
    let work = std::fs::canonicalize(&a.work).unwrap();

    // Upstream CA and leaf for 127.0.0.1.
    let up_key = KeyPair::generate().unwrap();
    let mut up_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    up_params
        .distinguished_name
        .push(DnType::CommonName, "bench upstream CA");
    up_params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let up_ca = up_params.self_signed(&up_key).unwrap();
    write(&work.join("upstream-ca.pem"), &up_ca.pem());
    let issuer = Issuer::new(up_params, up_key);
    let leaf_key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec![
        "127.0.0.1".to_string(),
        "bench.example.test".to_string(),
    ])
    .unwrap()
    .signed_by(&leaf_key, &issuer)
    .unwrap();
    let upstream = start_upstream(
        leaf.der().clone(),
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der())),
    )
    .await;

    // The interception CA shared by egress and squid.
    let (ca_pem, ca_key) = egress::mint::generate_ca("bench bottle CA").unwrap();
    write(&work.join("ca.pem"), &ca_pem);
    write(&work.join("ca.key"), &ca_key);

    let mut roots = rustls::RootCertStore::empty();
    let add = |roots: &mut rustls::RootCertStore, pem: &[u8]| {
        use rustls_pki_types::pem::PemObject;
        for c in CertificateDer::pem_slice_iter(pem) {
            roots.add(c.unwrap()).unwrap();
        }
    };
    add(&mut roots, up_ca.pem().as_bytes());
    add(&mut roots, ca_pem.as_bytes());

    let mut rows = Vec::new();
    let mk_sni =
        |roots: &rustls::RootCertStore, proxy: Option<SocketAddr>, sni: ServerName<'static>| {
            let mut cfg = rustls::ClientConfig::builder()
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
            cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
            let authority = match &sni {
                ServerName::DnsName(n) => format!("{}:{}", n.as_ref(), upstream.port()),
                _ => upstream.to_string(),
            };
            Target {
                proxy,
                upstream,
                tls: tokio_rustls::TlsConnector::from(Arc::new(cfg)),
                sni,
                authority,
            }
        };
    let mk = |roots: &rustls::RootCertStore, proxy: Option<SocketAddr>| {
        mk_sni(roots, proxy, ServerName::IpAddress(upstream.ip().into()))
    };

    eprintln!("direct…");
    rows.push(measure("direct", &mk(&roots, None), None, a.secs).await);

    // egress, then egress with a tunnel route: CONNECT without interception.
    // The tunnel row is not a peer: it is the floor any proxy on this path
    // pays (a second loopback hop and a relay), against which interception's
    // own cost can be read.
    for (name, file, route_extra) in [
        ("egress", "egress", ""),
        (
            "egress, tunnel route (no interception, no DLP)",
            "egress-tunnel",
            "tunnel = true\n",
        ),
    ] {
        let tail = format!(
            "[[route]]\nid = \"bench\"\nhost = \"127.0.0.1\"\nports = [{}]\n{route_extra}",
            upstream.port()
        );
        let (p, port) = start_egress(&a.egress, &work, file, &tail).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        eprintln!("{name}…");
        let mut row = measure(
            name,
            &mk(&roots, Some(([127, 0, 0, 1], port).into())),
            Some(p.0.id()),
            a.secs,
        )
        .await;
        if route_extra.is_empty() {
            row.size = std::fs::metadata(&a.egress).ok().map(|m| m.len());
        }
        rows.push(row);
    }

    // A 100 MB JSON upload: directly, through a route without DLP, through a DLP route (the
    // default: builtin rules, the bottle's known secrets, block), each egress fresh.
    let mut uploads = vec![upload("direct", &mk(&roots, None), None).await];
    for (name, file, route_extra) in [
        (
            "egress, route without DLP",
            "up-nodlp",
            "dlp = { outbound_detectors = false }\n",
        ),
        ("egress, DLP route", "up-dlp", ""),
    ] {
        write(
            &work.join("known-secrets"),
            "bench-known-secret-0123456789abcdef\n",
        );
        let tail = format!(
            "[dlp]\ncanary = \"bench-canary-0123456789\"\nknown_secrets_file = {:?}\n[[route]]\nid = \"bench\"\nhost = \"127.0.0.1\"\nports = [{}]\n{route_extra}",
            work.join("known-secrets"),
            upstream.port()
        );
        let (p, port) = start_egress(&a.egress, &work, file, &tail).await;
        eprintln!("upload: {name}…");
        uploads.push(
            upload(
                name,
                &mk(&roots, Some(([127, 0, 0, 1], port).into())),
                Some(p.0.id()),
            )
            .await,
        );
    }

    // mitmproxy
    if let Some(mitm) = &a.mitmdump {
        let port = free_port();
        let conf = work.join("mitm");
        std::fs::create_dir_all(&conf).unwrap();
        let child = Command::new(mitm)
            .args([
                "--listen-host",
                "127.0.0.1",
                "--listen-port",
                &port.to_string(),
                "-q",
            ])
            .arg("--set")
            .arg(format!("confdir={}", conf.display()))
            .arg("--set")
            .arg(format!(
                "ssl_verify_upstream_trusted_ca={}",
                work.join("upstream-ca.pem").display()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let p = Proc(child);
        wait_port(port).await;
        let mut r = roots.clone();
        add(
            &mut r,
            &std::fs::read(conf.join("mitmproxy-ca-cert.pem")).unwrap(),
        );
        eprintln!("mitmproxy…");
        rows.push(
            measure(
                "mitmproxy",
                &mk(&r, Some(([127, 0, 0, 1], port).into())),
                Some(p.0.id()),
                a.secs,
            )
            .await,
        );
    }

    // squid ssl-bump
    if let Some(squid) = &a.squid {
        let port = free_port();
        let db = work.join("ssl_db");
        let st = Command::new("/usr/lib/squid/security_file_certgen")
            .args(["-c", "-s"])
            .arg(&db)
            .args(["-M", "16MB"])
            .status()
            .unwrap();
        assert!(st.success());
        let conf = format!(
            "http_port 127.0.0.1:{port} ssl-bump tls-cert={w}/ca.pem tls-key={w}/ca.key generate-host-certificates=on dynamic_cert_mem_cache_size=16MB\n\
             sslcrtd_program /usr/lib/squid/security_file_certgen -s {w}/ssl_db -M 16MB\n\
             sslcrtd_children 5\n\
             acl step1 at_step SslBump1\n\
             ssl_bump peek step1\n\
             ssl_bump bump all\n\
             tls_outgoing_options cafile={w}/upstream-ca.pem\n\
             hosts_file {w}/hosts\n\
             http_access allow all\n\
             cache deny all\n\
             access_log none\n\
             cache_log {w}/squid-cache.log\n\
             pid_filename {w}/squid.pid\n\
             coredump_dir {w}\n\
             max_filedescriptors 8192\n\
             shutdown_lifetime 0 seconds\n",
            w = work.display()
        );
        write(&work.join("squid.conf"), &conf);
        write(&work.join("hosts"), "127.0.0.1 bench.example.test\n");
        let _ = Command::new("chmod")
            .args(["-R", "a+rwX"])
            .arg(&work)
            .status();
        let child = Command::new(squid)
            .args(["-N", "-f"])
            .arg(work.join("squid.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let p = Proc(child);
        wait_port(port).await;
        eprintln!("squid…");
        rows.push(
            measure(
                "squid ssl-bump",
                &mk_sni(
                    &roots,
                    Some(([127, 0, 0, 1], port).into()),
                    ServerName::try_from("bench.example.test").unwrap(),
                ),
                Some(p.0.id()),
                a.secs,
            )
            .await,
        );
    }

    println!("| path | keep-alive p50 ms | p99 ms | new-conn p50 ms | p99 ms | rps c=1 | rps c=64 | rps c=256 | 100 MB MB/s | idle RSS MiB | peak RSS MiB | binary MB |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let mib = |k: Option<u64>| {
            k.map(|k| format!("{:.1}", k as f64 / 1024.0))
                .unwrap_or("-".into())
        };
        println!(
            "| {} | {:.3} | {:.3} | {:.2} | {:.2} | {:.0} | {:.0} | {:.0} | {:.0} | {} | {} | {} |{}",
            r.name,
            r.ka_p50,
            r.ka_p99,
            r.new_p50,
            r.new_p99,
            r.rps[0],
            r.rps[1],
            r.rps[2],
            r.mbps,
            mib(r.rss_idle_kib),
            mib(r.rss_peak_kib),
            r.size.map(|s| format!("{:.1}", s as f64 / 1e6)).unwrap_or("-".into()),
            r.error.as_ref().map(|e| format!(" error: {e}")).unwrap_or_default()
        );
    }
    println!();
    println!("| 100 MB JSON upload | MB/s | proxy peak RSS MiB |");
    println!("|---|---|---|");
    for u in &uploads {
        println!(
            "| {} | {} | {} |{}",
            u.name,
            u.mbps.map(|m| format!("{m:.0}")).unwrap_or("-".into()),
            u.peak_kib
                .map(|k| format!("{:.1}", k as f64 / 1024.0))
                .unwrap_or("-".into()),
            u.error
                .as_ref()
                .map(|e| format!(" error: {e}"))
                .unwrap_or_default()
        );
    }
}
