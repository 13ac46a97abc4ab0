//! The `egress` binary: --check-config, healthcheck, SIGHUP reload, SIGTERM, and that no planted
//! secret reaches stdout (logs and the audit log written to `-`).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use http::Request;

const BIN: &str = env!("CARGO_BIN_EXE_egress");
const SECRET: &str = "KNOWN-SECRET-bin-93be41d2aa";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    all: Vec<String>,
}

impl Running {
    /// Waits for a stdout line containing `needle`.
    fn wait_for(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.all.push(l.clone());
                    if l.contains(needle) {
                        return l;
                    }
                }
                Err(_) => panic!("no line with {needle:?}; got:\n{}", self.all.join("\n")),
            }
        }
    }
    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(config: &std::path::Path) -> Running {
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(config)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    Running {
        child,
        lines: rx,
        all: Vec::new(),
    }
}

#[test]
fn check_config_prints_or_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "ca_cert = \"/c\"\nca_key = \"/k\"\n[[route]]\nid = \"a\"\nhost = \"api.example.test\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("--check-config")
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("listen = \"0.0.0.0:3128\""), "{text}");
    assert!(
        text.contains("ports = [\n    443,\n    80,\n]") || text.contains("ports = [443, 80]"),
        "{text}"
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "ca_cert = \"/c\"\nca_key = \"/k\"\nlisten_typo = 1\n").unwrap();
    let out = Command::new(BIN)
        .arg("--check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen_typo"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_reloads_on_sighup_and_never_prints_a_secret() {
    let env = TestEnv::new().await;
    let port = free_port();
    let known = env.dir.path().join("known");
    std::fs::write(&known, SECRET).unwrap();
    let base = format!(
        "listen = \"127.0.0.1:{port}\"\nbottle_id = \"bin\"\nca_cert = {:?}\nca_key = {:?}\nupstream_ca = {:?}\naudit_log = \"-\"\nssrf_allow_cidrs = [\"127.0.0.0/8\"]\n[dlp]\nknown_secrets_file = {known:?}\n{}[[route]]\nid = \"api\"\nhost = \"api.example.test\"\nports = [{}]\n",
        env.ca_cert,
        env.ca_key,
        env.upstream_ca,
        env.resolves(&["api.example.test", "other.example.test"]),
        env.tls_port
    );
    let cfg = env.write_config("egress.toml", &base);
    let mut run = spawn(&cfg);
    run.wait_for("egress listening");
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    let hc = Command::new(BIN)
        .arg("healthcheck")
        .arg("--config")
        .arg(&cfg)
        .status()
        .unwrap();
    assert!(hc.success(), "healthcheck");

    let t = env.tls_port;
    let r = https(
        &env,
        addr,
        "api.example.test",
        t,
        get("api.example.test", t, "/fine"),
    )
    .await;
    assert_eq!(r.status, 200);
    let r = https(
        &env,
        addr,
        "api.example.test",
        t,
        get("api.example.test", t, &format!("/x?k={SECRET}")),
    )
    .await;
    assert_eq!(r.status, 403);
    let r = https(
        &env,
        addr,
        "api.example.test",
        t,
        post("api.example.test", t, "/b", SECRET),
    )
    .await;
    assert_eq!(r.status, 403);
    let (s, _, _) = connect(addr, &format!("{SECRET}.exfil.example:443")).await;
    assert_eq!(s, 403);
    let req = Request::builder()
        .uri(format!("http://unrouted.example/{SECRET}"))
        .body(body(bytes::Bytes::new()))
        .unwrap();
    assert_eq!(plain(addr, req).await.status, 403);

    // A bad config is refused and the old one keeps serving.
    std::fs::write(&cfg, format!("{base}bogus_key = 1\n")).unwrap();
    run.signal("HUP");
    run.wait_for("reload refused");
    let r = https(
        &env,
        addr,
        "api.example.test",
        t,
        get("api.example.test", t, "/still"),
    )
    .await;
    assert_eq!(r.status, 200);
    // A good config adding a route takes effect.
    std::fs::write(
        &cfg,
        format!("{base}[[route]]\nid = \"other\"\nhost = \"other.example.test\"\nports = [{t}]\n"),
    )
    .unwrap();
    run.signal("HUP");
    run.wait_for("egress config reloaded");
    let r = https(
        &env,
        addr,
        "other.example.test",
        t,
        get("other.example.test", t, "/new"),
    )
    .await;
    assert_eq!(r.status, 200);

    run.signal("TERM");
    let status = tokio::task::spawn_blocking({
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut child = std::mem::replace(&mut run.child, Command::new("true").spawn().unwrap());
        move || loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "egress did not stop on SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap();
    assert!(status.success(), "{status:?}");
    while let Ok(l) = run.lines.recv_timeout(Duration::from_secs(2)) {
        run.all.push(l);
    }
    let all = run.all.join("\n");
    let audit_lines = all
        .lines()
        .filter(|l| l.contains("\"bottle\":\"bin\""))
        .count();
    assert!(audit_lines >= 6, "audit lines on stdout: {all}");
    assert!(!all.contains(SECRET), "secret on stdout:\n{all}");
}
