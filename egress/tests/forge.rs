//! Routes to a git remote's forge (`forge = true`) through a running egress:
//! read-only unless the route allows writes, `git clone`/`fetch` over smart
//! HTTP still work, git's push service never passes. The last tests run real
//! `git` through egress against `git http-backend` served by the test.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const UPLOAD_PACK_REQUEST: &str = "application/x-git-upload-pack-request";
const RECEIVE_PACK_REQUEST: &str = "application/x-git-receive-pack-request";

/// A config with `routes` for api.example.test on the TLS upstream.
fn config(env: &TestEnv, routes: &str) -> String {
    format!(
        "{}ssrf_allow_cidrs = [\"127.0.0.0/8\"]\n{}{routes}",
        env.head(),
        env.resolves(&["api.example.test"]),
    )
}

fn forge_route(env: &TestEnv, id: &str, extra: &str) -> String {
    format!(
        "[[route]]\nid = \"{id}\"\nhost = \"api.example.test\"\nports = [{}]\nforge = true\n{extra}",
        env.tls_port
    )
}

fn req(method: &str, path: &str, content_type: Option<&str>, body_: &str) -> Request<TBody> {
    let mut b = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "api.example.test");
    if let Some(ct) = content_type {
        b = b.header("content-type", ct);
    }
    b.body(body(Bytes::from(body_.to_string()))).unwrap()
}

async fn send(env: &TestEnv, p: &RunningProxy, r: Request<TBody>) -> Resp {
    https(env, p.addr, "api.example.test", env.tls_port, r).await
}

fn seen(env: &TestEnv) -> Vec<String> {
    env.seen()
        .into_iter()
        .map(|s| format!("{} {}", s.method, s.path))
        .collect()
}

/// What `git fetch` sends (protocol v2 `ls-refs`): text pkt-lines.
const LS_REFS: &str = "0014command=ls-refs\n0001000dpeel\n0000";

/// A forge route without `auth` and without methods is read-only: the agent
/// could bring a token of its own, so writes are refused all the same.
#[tokio::test]
async fn forge_route_without_auth_is_read_only() {
    let env = TestEnv::new().await;
    let p = start_proxy(&config(&env, &forge_route(&env, "forge", ""))).await;

    for m in ["GET", "HEAD", "OPTIONS"] {
        let r = send(&env, &p, req(m, "/repos/me/app", None, "")).await;
        assert_eq!(r.status, 200, "{m}: {}", r.text());
    }
    for m in ["POST", "PUT", "PATCH", "DELETE"] {
        let r = send(
            &env,
            &p,
            req(m, "/repos/me/app/issues", Some("application/json"), "{}"),
        )
        .await;
        assert_eq!(r.status, 403, "{m} must be refused: {}", r.text());
        assert!(r.block().starts_with("route: "), "{}", r.block());
        assert!(
            r.block()
                .contains(&format!("{m} is a write to a git remote's forge")),
            "{}",
            r.block()
        );
        assert!(r.block().contains("read-only"), "{}", r.block());
    }
    assert_eq!(
        seen(&env),
        vec![
            "GET /repos/me/app",
            "HEAD /repos/me/app",
            "OPTIONS /repos/me/app"
        ]
    );
}

/// Read-only still lets `git clone` and `git fetch` talk to the forge: the
/// ref advertisement (GET) and the upload-pack POST pass; a POST that only
/// looks like one (another body type, a query) does not.
#[tokio::test]
async fn upload_pack_passes_on_a_read_only_forge_route() {
    let env = TestEnv::new().await;
    let p = start_proxy(&config(
        &env,
        &forge_route(&env, "forge", "methods = [\"GET\"]\n"),
    ))
    .await;

    let r = send(
        &env,
        &p,
        req(
            "GET",
            "/me/app.git/info/refs?service=git-upload-pack",
            None,
            "",
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let r = send(
        &env,
        &p,
        req(
            "POST",
            "/me/app.git/git-upload-pack",
            Some(UPLOAD_PACK_REQUEST),
            LS_REFS,
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(env.seen().last().unwrap().body, LS_REFS.as_bytes());

    for (path, ct) in [
        ("/me/app.git/git-upload-pack", Some("application/json")),
        ("/me/app.git/git-upload-pack?x=1", Some(UPLOAD_PACK_REQUEST)),
        ("/me/app.git/git-upload-pack/x", Some(UPLOAD_PACK_REQUEST)),
    ] {
        let r = send(&env, &p, req("POST", path, ct, LS_REFS)).await;
        assert_eq!(r.status, 403, "{path} {ct:?}: {}", r.text());
    }
    assert_eq!(
        seen(&env),
        vec![
            "GET /me/app.git/info/refs?service=git-upload-pack",
            "POST /me/app.git/git-upload-pack"
        ]
    );
}

/// git's push service is refused on a forge route even when the route allows
/// writes on that very path and method: pushes go through git-gate only.
#[tokio::test]
async fn receive_pack_is_refused_even_with_allow_writes() {
    let env = TestEnv::new().await;
    let routes = format!(
        "{}{}",
        forge_route(
            &env,
            "forge-writes",
            "allow_writes = true\nmethods = [\"GET\", \"POST\"]\npaths = [\"/me/app.git\"]\n"
        ),
        forge_route(&env, "forge", ""),
    );
    let p = start_proxy(&config(&env, &routes)).await;

    for r in [
        req(
            "GET",
            "/me/app.git/info/refs?service=git-receive-pack",
            None,
            "",
        ),
        req(
            "POST",
            "/me/app.git/git-receive-pack",
            Some(RECEIVE_PACK_REQUEST),
            "0000",
        ),
        req(
            "POST",
            "/me/app.git/GIT-RECEIVE-PACK",
            Some("application/octet-stream"),
            "0000",
        ),
        req("POST", "/me/app.git/x", Some(RECEIVE_PACK_REQUEST), "0000"),
    ] {
        let what = format!("{} {}", r.method(), r.uri());
        let r = send(&env, &p, r).await;
        assert_eq!(r.status, 403, "{what}: {}", r.text());
        assert!(
            r.block()
                .starts_with("route: git push over HTTP (git-receive-pack) is refused"),
            "{what}: {}",
            r.block()
        );
        assert!(r.block().contains("git-gate"), "{}", r.block());
    }
    assert!(env.seen().is_empty(), "{:?}", seen(&env));
}

/// `allow_writes` lets exactly the listed writes through (method, and path
/// on a segment boundary); everything else on the forge stays read-only.
#[tokio::test]
async fn allow_writes_lets_a_listed_write_through() {
    let env = TestEnv::new().await;
    let routes = format!(
        "{}{}",
        forge_route(&env, "forge", ""),
        forge_route(
            &env,
            "forge-issues",
            "allow_writes = true\nmethods = [\"POST\"]\npaths = [\"/repos/me/app/issues\"]\n"
        ),
    );
    let p = start_proxy(&config(&env, &routes)).await;

    let r = send(
        &env,
        &p,
        req(
            "POST",
            "/repos/me/app/issues",
            Some("application/json"),
            "{\"title\":\"t\"}",
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(env.seen().last().unwrap().body, b"{\"title\":\"t\"}");

    for (m, path) in [
        ("POST", "/repos/me/app/pulls"),
        ("POST", "/repos/me/app/issues-archive"),
        ("PUT", "/repos/me/app/issues"),
        ("DELETE", "/repos/me/app/issues/1"),
    ] {
        let r = send(&env, &p, req(m, path, Some("application/json"), "{}")).await;
        assert_eq!(r.status, 403, "{m} {path}: {}", r.text());
        assert!(r.block().starts_with("route: "), "{}", r.block());
    }
    let audit = env.audit();
    let first: serde_json::Value = serde_json::from_str(audit.lines().next().unwrap()).unwrap();
    assert_eq!(first["route"], "forge-issues", "{audit}");
    assert_eq!(seen(&env), vec!["POST /repos/me/app/issues"]);
}

// ---------------------------------------------------------------------------------------------
// Real git through egress, against `git http-backend` run as CGI by the test.
// ---------------------------------------------------------------------------------------------

struct GitServer {
    addr: SocketAddr,
    root: PathBuf,
    /// "METHOD path?query" of every request that reached it.
    seen: Arc<Mutex<Vec<String>>>,
}

/// Serves `root` over plain HTTP with `git http-backend` (push enabled, so
/// only egress can be what refuses one).
async fn git_server(root: PathBuf) -> GitServer {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (r, s) = (root.clone(), seen.clone());
    tokio::spawn(async move {
        while let Ok((stream, _)) = l.accept().await {
            let (r, s) = (r.clone(), s.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req| cgi(req, r.clone(), s.clone()));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    GitServer { addr, root, seen }
}

async fn cgi(
    req: Request<Incoming>,
    root: PathBuf,
    seen: Arc<Mutex<Vec<String>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    let path = parts.uri.path().to_string();
    let query = parts.uri.query().unwrap_or("").to_string();
    seen.lock()
        .unwrap()
        .push(format!("{} {}", parts.method, parts.uri));
    let header = |n: &str| {
        parts
            .headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let mut cmd = std::process::Command::new("git");
    cmd.arg("http-backend")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_PROJECT_ROOT", &root)
        .env("GIT_HTTP_EXPORT_ALL", "1")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_COUNT", "1")
        .env("GIT_CONFIG_KEY_0", "http.receivepack")
        .env("GIT_CONFIG_VALUE_0", "true")
        .env("REQUEST_METHOD", parts.method.as_str())
        .env("PATH_INFO", &path)
        .env("QUERY_STRING", &query)
        .env("CONTENT_LENGTH", body.len().to_string())
        .env("REMOTE_ADDR", "127.0.0.1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit());
    if let Some(ct) = header("content-type") {
        cmd.env("CONTENT_TYPE", ct);
    }
    if let Some(ce) = header("content-encoding") {
        cmd.env("HTTP_CONTENT_ENCODING", ce);
    }
    if let Some(gp) = header("git-protocol") {
        cmd.env("GIT_PROTOCOL", gp);
    }
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Write;
        let mut child = cmd.spawn().expect("git http-backend");
        child.stdin.take().unwrap().write_all(&body).unwrap();
        child.wait_with_output().unwrap().stdout
    })
    .await
    .unwrap();
    // CGI: headers, a blank line, the body.
    let split = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
    let (head, rest) = match split {
        Some((i, n)) => (&out[..i], &out[i + n..]),
        None => (&out[..], &[][..]),
    };
    let mut resp = Response::new(Full::new(Bytes::copy_from_slice(rest)));
    for line in String::from_utf8_lossy(head).lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("status") {
            let code = v.split(' ').next().and_then(|c| c.parse().ok());
            *resp.status_mut() = code
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        } else if let (Ok(k), Ok(v)) = (
            http::HeaderName::from_bytes(k.trim().as_bytes()),
            http::HeaderValue::from_str(v),
        ) {
            resp.headers_mut().append(k, v);
        }
    }
    Ok(resp)
}

/// Runs git with a clean configuration, through `proxy` only.
async fn git(dir: &Path, proxy: Option<SocketAddr>, args: &[&str]) -> (bool, String) {
    let mut cmd = std::process::Command::new("git");
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .args([
            "-c",
            "user.name=T",
            "-c",
            "user.email=t@example.test",
            "-c",
            "init.defaultBranch=main",
            "-c",
            "protocol.version=2",
        ]);
    if let Some(p) = proxy {
        cmd.args(["-c", &format!("http.proxy=http://{p}")]);
    }
    cmd.args(args);
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("git"))
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn git_available() -> bool {
    std::process::Command::new("git")
        .args(["http-backend", "-h"])
        .output()
        .is_ok()
}

/// A bare repository `app.git` under the server root with one commit.
async fn seed_repo(dir: &Path, root: &Path) {
    let (ok, out) = git(root, None, &["init", "--bare", "-q", "app.git"]).await;
    assert!(ok, "{out}");
    let work = dir.join("seed");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("README"), "hello from the forge\n").unwrap();
    for args in [
        &["init", "-q"][..],
        &["add", "README"][..],
        &["commit", "-q", "-m", "first"][..],
        &["push", "-q", root.join("app.git").to_str().unwrap(), "main"][..],
    ] {
        let (ok, out) = git(&work, None, args).await;
        assert!(ok, "git {args:?}: {out}");
    }
}

fn git_config(env: &TestEnv, server: &GitServer, route_extra: &str) -> String {
    format!(
        "{}ssrf_allow_cidrs = [\"127.0.0.0/8\"]\n[[resolve]]\nhost = \"git.example.test\"\nport = {port}\naddr = \"127.0.0.1\"\n\
         [[route]]\nid = \"forge\"\nhost = \"git.example.test\"\nports = [{port}]\n{route_extra}",
        env.head(),
        port = server.addr.port(),
    )
}

/// The best proof that read-only keeps clone and fetch working: real `git
/// clone` and `git fetch` over smart HTTP through egress on a read-only forge
/// route; and `git push` through the same route is refused while the server
/// itself would have taken it.
#[tokio::test]
async fn git_clone_and_fetch_pass_a_read_only_forge_route_and_push_does_not() {
    if !git_available() {
        eprintln!("skipped: no git with http-backend on this machine");
        return;
    }
    let env = TestEnv::new().await;
    let dir = env.dir.path().to_path_buf();
    let root = dir.join("srv");
    std::fs::create_dir_all(&root).unwrap();
    seed_repo(&dir, &root).await;
    let server = git_server(root.clone()).await;
    let url = format!("http://git.example.test:{}/app.git", server.addr.port());

    let p = start_proxy(&git_config(&env, &server, "forge = true\n")).await;
    let (ok, out) = git(&dir, Some(p.addr), &["clone", "-q", &url, "clone"]).await;
    assert!(ok, "git clone through a read-only forge route: {out}");
    let clone = dir.join("clone");
    assert_eq!(
        std::fs::read_to_string(clone.join("README")).unwrap(),
        "hello from the forge\n"
    );
    let (ok, out) = git(&clone, Some(p.addr), &["fetch", "-q", "origin"]).await;
    assert!(ok, "git fetch: {out}");
    let upload_posts = server
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.as_str() == "POST /app.git/git-upload-pack")
        .count();
    assert!(
        upload_posts >= 2,
        "clone and fetch each POST upload-pack: {:?}",
        server.seen.lock().unwrap()
    );

    // A push through the same route: refused by egress before the server sees it.
    std::fs::write(clone.join("NEW"), "agent work\n").unwrap();
    for args in [&["add", "NEW"][..], &["commit", "-q", "-m", "work"][..]] {
        let (ok, out) = git(&clone, None, args).await;
        assert!(ok, "{out}");
    }
    let (ok, out) = git(
        &clone,
        Some(p.addr),
        &["push", "origin", "HEAD:refs/heads/agent/x"],
    )
    .await;
    assert!(!ok, "a push through a forge route must fail: {out}");
    assert!(out.contains("403"), "{out}");
    assert!(
        !server
            .seen
            .lock()
            .unwrap()
            .iter()
            .any(|s| s.contains("receive-pack")),
        "{:?}",
        server.seen.lock().unwrap()
    );
    let (_, refs) = git(&server.root.join("app.git"), None, &["show-ref"]).await;
    assert!(!refs.contains("agent/x"), "{refs}");

    // The control: without `forge`, the very same push reaches the server and
    // lands, so it was egress's forge rule that refused it above (the route
    // opts out of DLP, which would refuse the binary pack as unscannable; the
    // push above was refused at its first request, which has no body).
    drop(p);
    let plain = start_proxy(&git_config(
        &env,
        &server,
        "dlp = { outbound_detectors = false }\n",
    ))
    .await;
    let (ok, out) = git(
        &clone,
        Some(plain.addr),
        &["push", "origin", "HEAD:refs/heads/agent/x"],
    )
    .await;
    assert!(ok, "the control push must pass: {out}");
    let (_, refs) = git(&server.root.join("app.git"), None, &["show-ref"]).await;
    assert!(refs.contains("refs/heads/agent/x"), "{refs}");
}
