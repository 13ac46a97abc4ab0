//! The `cred-proxy` binary: sidecar CLI contract, signals, and a planted-token
//! grep over everything it prints.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use common::*;
use http::StatusCode;
use test_support::client::body_string;

const BIN: &str = env!("CARGO_BIN_EXE_cred-proxy");
const ENV_TOKEN: &str = "planted-ENV-token-7c41d9e2";
const FILE_TOKEN_1: &str = "planted-FILE-token-v1-0a9f";
const FILE_TOKEN_2: &str = "planted-FILE-token-v2-b3e8";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Captures every line a child prints, on both streams.
struct Output {
    lines: Arc<Mutex<Vec<String>>>,
    rx: mpsc::Receiver<String>,
    readers: Vec<std::thread::JoinHandle<()>>,
}

impl Output {
    fn capture(child: &mut Child) -> Output {
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let mut readers = Vec::new();
        let out = child.stdout.take().unwrap();
        let err = child.stderr.take().unwrap();
        for stream in [
            Box::new(out) as Box<dyn std::io::Read + Send>,
            Box::new(err),
        ] {
            let lines = lines.clone();
            let tx = tx.clone();
            readers.push(std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines.lock().unwrap().push(line.clone());
                    let _ = tx.send(line);
                }
            }));
        }
        Output { lines, rx, readers }
    }

    /// Waits until the child's streams are closed and fully read.
    fn drain(&mut self) {
        for r in self.readers.drain(..) {
            r.join().unwrap();
        }
    }

    /// Waits for a line containing `needle` (event-driven, with a deadline).
    fn wait_for(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!(
                    "no line containing {needle:?}; output so far:\n{}",
                    self.all()
                ),
            }
        }
    }

    fn all(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }
}

struct KillOnDrop(Child);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig} failed");
}

#[test]
fn check_config_prints_the_effective_config_or_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "listen = \"127.0.0.1:9099\"\n[[route]]\nid = \"gh\"\nhost = \"API.GitHub.com\"\nscheme = \"token\"\ntoken_ref = \"GH_TOKEN\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("--check-config")
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(printed.contains("host = \"api.github.com\""), "{printed}");
    assert!(printed.contains("token_ref = \"GH_TOKEN\""), "{printed}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[route]]\nid = \"gh\"\nhost = \"*.github.com\"\nscheme = \"Bearer\"\ntoken_ref = \"GH_TOKEN\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("--check-config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("bad.toml") && err.contains("wildcard"),
        "{err}"
    );
}

#[test]
fn a_missing_token_stops_start_up_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:{}\"\n[[route]]\nid = \"a\"\nhost = \"a.test\"\nscheme = \"Bearer\"\ntoken_ref = \"CP_TEST_PRESENT\"\n\
             [[route]]\nid = \"b\"\nhost = \"b.test\"\nscheme = \"Bearer\"\ntoken_ref = \"CP_TEST_ABSENT\"\n",
            free_port()
        ),
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .env_clear()
        .env("BOT_BOTTLE_BROKER_KEY", "11".repeat(32))
        .env("CP_TEST_PRESENT", ENV_TOKEN)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("CP_TEST_ABSENT"), "{all}");
    assert!(!all.contains(ENV_TOKEN), "{all}");

    // And without the broker key, the error names that variable.
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .env_clear()
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("BOT_BOTTLE_BROKER_KEY"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_tokens_never_appear_in_any_output() {
    let pki = Pki::new();
    let echo = handler(|seen: Seen| async move {
        let auth = seen.header("authorization").unwrap_or("").to_owned();
        http::Response::builder()
            .header("x-echo", auth.clone())
            .body(full(format!("echo {auth}")))
            .unwrap()
    });
    let up = Upstream::start(&pki, "api.one.test", &[b"h2", b"http/1.1"], echo).await;
    let token_file = pki.dir.path().join("file.token");
    std::fs::write(&token_file, format!("{FILE_TOKEN_1}\n")).unwrap();
    std::fs::set_permissions(&token_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let port = free_port();
    let cfg = pki.dir.path().join("cred-proxy.toml");
    std::fs::write(
        &cfg,
        format!(
            "listen = \"127.0.0.1:{port}\"\nupstream_ca = \"{}\"\n\
             [[route]]\nid = \"one\"\nhost = \"api.one.test\"\nscheme = \"Bearer\"\ntoken_ref = \"CP_ENV_TOKEN\"\n\
             [[route]]\nid = \"file\"\nhost = \"api.one.test\"\nscheme = \"token\"\ntoken_file = \"{}\"\n",
            pki.ca_path.display(),
            token_file.display()
        ),
    )
    .unwrap();
    let key = test_key();
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .env_clear()
        .env("BOT_BOTTLE_BROKER_KEY", key.to_hex())
        .env("CP_ENV_TOKEN", ENV_TOKEN)
        // Everything, including rustls, hyper and h2 internals.
        .env("RUST_LOG", "trace")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut output = Output::capture(&mut child);
    let mut child = KillOnDrop(child);
    output.wait_for("\"listening\"");
    let proxy: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();

    // healthcheck answers while it runs.
    let hc = Command::new(BIN)
        .args(["healthcheck", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(hc.status.success(), "{hc:?}");

    // Success, echoed token, refusal, upstream failure, rotation.
    let resp = Handoff::get("one", up.addr, "/echo?x=1").send(proxy).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body = body_string(resp).await;
    assert!(!body.contains(ENV_TOKEN), "{body}");
    let resp = Handoff::get("file", up.addr, "/echo").send(proxy).await;
    assert!(!body_string(resp).await.contains(FILE_TOKEN_1));
    let mut forged = Handoff::get("one", up.addr, "/echo");
    forged.sig = Some("ab".repeat(32));
    assert_eq!(forged.send(proxy).await.status(), StatusCode::FORBIDDEN);
    let closed: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let resp = Handoff::get("one", closed, "/nowhere").send(proxy).await;
    assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);

    std::fs::write(&token_file, FILE_TOKEN_2).unwrap();
    signal(&child.0, "-HUP");
    output.wait_for("tokens_reloaded");
    let resp = Handoff::get("file", up.addr, "/echo").send(proxy).await;
    assert!(!body_string(resp).await.contains(FILE_TOKEN_2));
    let seen = up.seen();
    assert_eq!(
        seen.last().unwrap().header("authorization"),
        Some(format!("token {FILE_TOKEN_2}").as_str())
    );
    output.wait_for("\"status\":200");

    signal(&child.0, "-TERM");
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    output.drain();

    let all = output.all();
    assert!(all.contains("\"route\":\"one\""), "no access log:\n{all}");
    assert!(all.contains("\"bad_signature\""), "{all}");
    assert!(all.contains("\"stopped\""), "{all}");
    // The grep is only meaningful if the libraries' trace output was there.
    assert!(
        all.contains("\"level\":\"TRACE\""),
        "no trace output captured"
    );
    for secret in [ENV_TOKEN, FILE_TOKEN_1, FILE_TOKEN_2, key.to_hex().as_str()] {
        assert!(!all.contains(secret), "{secret} leaked into the output");
    }
    // Partial leaks too: a recognisable middle part of each token.
    for fragment in ["ENV-token-7c41", "FILE-token-v1", "FILE-token-v2"] {
        assert!(!all.contains(fragment), "{fragment} leaked into the output");
    }
}
