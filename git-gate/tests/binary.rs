//! The binary's start-up errors, config check, healthcheck and CONNECT
//! helper, run on the host (no Docker needed).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_git-gate");
const HOST_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

fn gate(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .expect("run git-gate")
}

fn write_config(dir: &Path, upstream: &str, key: &Path, host_key: &str) -> std::path::PathBuf {
    let path = dir.join("git-gate.toml");
    std::fs::write(
        &path,
        format!(
            "listen = \"127.0.0.1:0\"\nstate_dir = \"{}\"\n[[remote]]\nname = \"app\"\n\
             upstream = \"{upstream}\"\nidentity_file = \"{}\"\nknown_host_key = \"{host_key}\"\n",
            dir.join("state").display(),
            key.display()
        ),
    )
    .unwrap();
    path
}

fn key_file(dir: &Path, mode: u32) -> std::path::PathBuf {
    let key = dir.join("id");
    std::fs::write(&key, "not really a key, the gate only checks the file\n").unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
    key
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn check_config_prints_effective_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "ssh://git@example.test:2222/r.git",
        Path::new("/k"),
        HOST_KEY,
    );
    let out = gate(&["--check-config", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("refs/heads/agent/*"),
        "defaults missing: {text}"
    );
    assert!(
        text.contains(".github/workflows/**"),
        "defaults missing: {text}"
    );
}

#[test]
fn bad_known_host_key_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "ssh://git@example.test/r.git",
        Path::new("/k"),
        "ssh-ed25519 AAAAnot-a-key",
    );
    let out = gate(&["--check-config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("known_host_key"), "{}", stderr(&out));
    let out = gate(&["--config", cfg.to_str().unwrap()]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("known_host_key"), "{}", stderr(&out));
}

#[test]
fn unknown_key_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "ssh://git@example.test/r.git",
        Path::new("/k"),
        HOST_KEY,
    );
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("pushrefs = []\n");
    std::fs::write(&cfg, text).unwrap();
    let out = gate(&["--check-config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("pushrefs"), "{}", stderr(&out));
}

#[test]
fn missing_identity_file_stops_start() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("nope");
    let cfg = write_config(dir.path(), "ssh://git@127.0.0.1:1/r.git", &key, HOST_KEY);
    let out = gate(&["--config", cfg.to_str().unwrap()]);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("does not exist") && e.contains(key.to_str().unwrap()),
        "{e}"
    );
}

#[test]
fn identity_file_readable_by_others_stops_start() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), 0o644);
    let cfg = write_config(dir.path(), "ssh://git@127.0.0.1:1/r.git", &key, HOST_KEY);
    let out = gate(&["--config", cfg.to_str().unwrap()]);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(e.contains("0644") && e.contains("0600"), "{e}");
    assert!(!e.contains("not really a key"), "key contents leaked: {e}");
}

#[test]
fn unreachable_upstream_stops_start() {
    let dir = tempfile::tempdir().unwrap();
    let key = key_file(dir.path(), 0o600);
    // A port nothing listens on.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = write_config(
        dir.path(),
        &format!("ssh://git@127.0.0.1:{port}/r.git"),
        &key,
        HOST_KEY,
    );
    let out = gate(&["--config", cfg.to_str().unwrap()]);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(e.contains("unreachable"), "{e}");
}

#[test]
fn healthcheck_fails_when_nothing_listens() {
    let dir = tempfile::tempdir().unwrap();
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = write_config(
        dir.path(),
        "ssh://git@example.test/r.git",
        Path::new("/k"),
        HOST_KEY,
    );
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    std::fs::write(&cfg, text).unwrap();
    let out = gate(&["healthcheck", "--config", cfg.to_str().unwrap()]);
    assert!(!out.status.success());
    let listener = TcpListener::bind(format!("127.0.0.1:{port}")).unwrap();
    let out = gate(&["healthcheck", "--config", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    drop(listener);
}

/// A one-connection CONNECT proxy: answers `status`, then echoes bytes back.
fn fake_proxy(status: &'static str) -> (u16, std::thread::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let t = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        let mut r = BufReader::new(s.try_clone().unwrap());
        let mut request = String::new();
        loop {
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            request.push_str(&line);
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        let mut w = s;
        w.write_all(format!("HTTP/1.1 {status}\r\n\r\n").as_bytes())
            .unwrap();
        if status.starts_with("200") {
            let mut buf = [0u8; 64];
            let n = r.read(&mut buf).unwrap();
            w.write_all(&buf[..n]).unwrap();
        }
        request
    });
    (port, t)
}

#[test]
fn connect_proxy_tunnels_through_http_connect() {
    let (port, proxy) = fake_proxy("200 Connection established");
    let mut child = Command::new(BIN)
        .args([
            "connect-proxy",
            &format!("127.0.0.1:{port}"),
            "upstream.example.test",
            "2222",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"SSH-2.0-test\r\n")
        .unwrap();
    let mut echoed = [0u8; 14];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut echoed)
        .unwrap();
    assert_eq!(&echoed, b"SSH-2.0-test\r\n");
    drop(child.stdin.take());
    let request = proxy.join().unwrap();
    assert!(
        request.starts_with("CONNECT upstream.example.test:2222 HTTP/1.1\r\n"),
        "{request}"
    );
    let _ = child.wait();
}

#[test]
fn connect_proxy_reports_a_refused_tunnel() {
    let (port, proxy) = fake_proxy("403 Forbidden");
    let out = Command::new(BIN)
        .args([
            "connect-proxy",
            &format!("127.0.0.1:{port}"),
            "elsewhere.example.test",
            "22",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    proxy.join().unwrap();
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("refused CONNECT elsewhere.example.test:22") && e.contains("403"),
        "{e}"
    );
}
