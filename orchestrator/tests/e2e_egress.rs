//! End to end through the `orchestrator` binary with the real sidecar
//! images: what the agent can and cannot reach, what it holds, and how the
//! bottle survives a SIGKILLed orchestrator, a sidecar restart and stop/resume.
//! "The internet" is an upstream container of the test on a network of its
//! own, under the aliases api.example.test (plain HTTP) and auth.example.test
//! (HTTPS with a certificate from a test CA the bottle names in
//! `egress.upstream_ca`; it answers 200 only to the real token).

mod e2e_support;

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use e2e_support::*;

const TOKEN_VALUE: &str = "e2e-real-token-0123456789abcdef";
/// A value forwarded into the agent: a known secret egress refuses to let out.
const FORWARDED_VALUE: &str = "fwd-agent-value-9f8e7d6c5b4a";
/// A forwarded host name of 16 characters: never a known secret.
const FORWARDED_HOST: &str = "api.example.test";

/// Builds the images once per test binary; false (skip) when impossible outside CI.
fn images_ready(test: &str) -> bool {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    if !docker_or_skip(test) {
        return false;
    }
    let r = READY.get_or_init(|| {
        for name in ["egress", "cred-proxy", "test-agent"] {
            let o = Command::new(env!("CARGO_BIN_EXE_orchestrator"))
                .args(["images", "build", "--only", name])
                .output()
                .map_err(|e| e.to_string())?;
            if !o.status.success() {
                return Err(format!(
                    "images build --only {name}: {}",
                    String::from_utf8_lossy(&o.stderr)
                ));
            }
        }
        Ok(())
    });
    run_or_skip(test, r.clone())
}

/// The test's own "internet": a network and an upstream container on it.
struct Internet {
    net: String,
    container: String,
    subnet: String,
    /// PEM of the CA that signed auth.example.test's certificate.
    ca_pem: String,
}

/// auth.example.test: HTTPS on 443, 200 `token-ok` only for the real token
/// (what cred-proxy injects), 401 `token-wrong` otherwise. It never echoes
/// the header, so the test shows the token arrived without relying on
/// cred-proxy's echo redaction.
const AUTH_UPSTREAM: &str = r#"
import http.server, os, ssl
open('/tmp/c.pem', 'w').write(os.environ['UP_CERT'])
open('/tmp/k.pem', 'w').write(os.environ['UP_KEY'])
want = 'Bearer ' + os.environ['UP_TOKEN']
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        ok = self.headers.get('Authorization') == want
        body = b'token-ok' if ok else b'token-wrong'
        self.send_response(200 if ok else 401)
        self.send_header('Content-Length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
srv = http.server.ThreadingHTTPServer(('', 443), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain('/tmp/c.pem', '/tmp/k.pem')
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
"#;

/// A test CA and a certificate for auth.example.test: (ca, cert chain, key) PEM.
fn auth_pki() -> (String, String, String) {
    let pki = test_support::pki::Pki::new();
    let leaf = pki.leaf(&["auth.example.test"]);
    (pki.ca_pem(), leaf.chain_pem, leaf.key_pem)
}

impl Internet {
    fn new(tag: &str) -> Internet {
        let net = format!("bb-e2e-net-{tag}");
        let container = format!("bb-e2e-up-{tag}");
        let mut subnet = String::new();
        for attempt in 0..20u32 {
            let third = (std::process::id()
                .wrapping_add(attempt * 7919)
                .wrapping_add(tag.len() as u32 * 31))
                % 250
                + 1;
            let candidate = format!("10.215.{third}.0/24");
            let ok = Command::new("docker")
                .args([
                    "network",
                    "create",
                    "--subnet",
                    &candidate,
                    "--label",
                    "dev.bot-bottle.test=e2e",
                    &net,
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .unwrap()
                .success();
            if ok {
                subnet = candidate;
                break;
            }
        }
        assert!(
            !subnet.is_empty(),
            "no free 10.215.x.0/24 for the test internet"
        );
        let (ca_pem, cert, key) = auth_pki();
        let st = Command::new("docker")
            .args([
                "run",
                "-d",
                "--name",
                &container,
                "--label",
                "dev.bot-bottle.test=e2e",
                "--network",
                &net,
                "--network-alias",
                "api.example.test",
                "--network-alias",
                "auth.example.test",
                "-e",
                "UP_CERT",
                "-e",
                "UP_KEY",
                "-e",
                "UP_TOKEN",
                "-e",
                "AUTH_UPSTREAM",
                BASE,
                "sh",
                "-c",
                "mkdir -p /srv && echo upstream-ok > /srv/allowed && cd /srv && \
                 { python3 -c \"$AUTH_UPSTREAM\" & } && exec python3 -m http.server 80",
            ])
            .env("UP_CERT", cert)
            .env("UP_KEY", key)
            .env("UP_TOKEN", TOKEN_VALUE)
            .env("AUTH_UPSTREAM", AUTH_UPSTREAM)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        // Built before waiting, so a failed wait still removes the container.
        let internet = Internet {
            net,
            container,
            subnet,
            ca_pem,
        };
        assert!(st.success(), "starting the test internet's upstream");
        wait_listening(&internet.container, 80, "the test internet's HTTP upstream");
        wait_listening(&internet.container, 443, "the test internet's TLS upstream");
        internet
    }

    fn ip(&self) -> String {
        let o = Command::new("docker")
            .args([
                "inspect",
                "-f",
                "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
                &self.container,
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }
}

impl Drop for Internet {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.container])
            .output();
        let _ = Command::new("docker")
            .args(["network", "rm", &self.net])
            .output();
    }
}

/// Writes the test's agent and bottle manifests into the home.
fn write_manifests(th: &TestHome, internet: &Internet) {
    let root = th.dir.path();
    std::fs::create_dir_all(root.join("agents")).unwrap();
    std::fs::create_dir_all(root.join("bottles")).unwrap();
    std::fs::write(
        root.join("agents/e2e.md"),
        "---\nbottle: e2e\n---\nYou are a test agent.\n",
    )
    .unwrap();
    let ca = root.join("upstream-ca.pem");
    std::fs::write(&ca, &internet.ca_pem).unwrap();
    let bottle = format!(
        "---\nenv:\n  E2E_FWD_SECRET: ${{E2E_FWD}}\n  E2E_FWD_HOST: ${{E2E_FWD_HOSTNAME}}\negress:\n  attach_networks: [{net}]\n  ssrf_allow_cidrs: [{subnet}]\n  upstream_ca: {ca}\n  routes:\n    - host: api.example.test\n      ports: [80]\n      matches:\n        - paths: [{{ type: prefix, value: /allowed }}]\n          methods: [GET, POST]\n    - host: auth.example.test\n      ports: [443]\n      auth: {{ scheme: Bearer, token_ref: E2E_TOKEN }}\n---\ntest bottle\n",
        net = internet.net,
        subnet = internet.subnet,
        ca = ca.display()
    );
    std::fs::write(root.join("bottles/e2e.md"), bottle).unwrap();
}

fn setup(tag: &str) -> Option<(TestHome, Internet)> {
    if !images_ready(tag) {
        return None;
    }
    let th = TestHome::new();
    let internet = Internet::new(&format!("{tag}-{:x}", std::process::id()));
    write_manifests(&th, &internet);
    Some((th, internet))
}

fn run(th: &TestHome, args: &[&str]) -> std::process::Output {
    th.cmd()
        .args(args)
        .envs(operator_env())
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// The operator's environment the test manifests name: the token and the
/// two forwarded variables.
fn operator_env() -> [(&'static str, &'static str); 3] {
    [
        ("E2E_TOKEN", TOKEN_VALUE),
        ("E2E_FWD", FORWARDED_VALUE),
        ("E2E_FWD_HOSTNAME", FORWARDED_HOST),
    ]
}

/// A layout.json of this release in the form the previous one (917a01c)
/// wrote: services without `nano_cpus` and `audit_dir`, egress auditing to
/// stdout, `known-secrets` holding the canary and a marker for each token
/// value (resolved from the operator's environment at bring-up).
fn as_previous_release(layout: &[u8]) -> Vec<u8> {
    let mut v: serde_json::Value = serde_json::from_slice(layout).unwrap();
    let canary = {
        let egress = v["services"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["role"] == "egress")
            .unwrap();
        let known = egress["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == "known-secrets")
            .unwrap();
        let bytes: Vec<u8> = serde_json::from_value(known["contents"].clone()).unwrap();
        String::from_utf8(bytes)
            .unwrap()
            .lines()
            .next()
            .unwrap()
            .to_string()
    };
    for s in v["services"].as_array_mut().unwrap() {
        let s = s.as_object_mut().unwrap();
        s.remove("nano_cpus");
        s.remove("audit_dir");
        for f in s["files"].as_array_mut().unwrap() {
            let contents: Vec<u8> = serde_json::from_value(f["contents"].clone()).unwrap();
            let text = String::from_utf8_lossy(&contents).to_string();
            let old = if f["path"] == "known-secrets" {
                format!("{canary}\n@@bb-env:E2E_TOKEN@@\n")
            } else {
                text.replace("audit_log = \"/audit/audit.jsonl\"", "audit_log = \"-\"")
            };
            f["contents"] = serde_json::to_value(old.into_bytes()).unwrap();
        }
    }
    serde_json::to_vec(&v).unwrap()
}

/// One file of a bottle's container, read with `docker cp` (sidecar images
/// have no shell to `cat` it with).
fn container_file(id: &str, role: &str, path: &str) -> String {
    let o = Command::new("docker")
        .args(["cp", &format!("bb-{id}-{role}:{path}"), "-"])
        .output()
        .unwrap();
    assert!(o.status.success(), "docker cp {path}: {}", text(&o.stderr));
    let mut archive = tar::Archive::new(o.stdout.as_slice());
    let mut entry = archive.entries().unwrap().next().unwrap().unwrap();
    let mut s = String::new();
    std::io::Read::read_to_string(&mut entry, &mut s).unwrap();
    s
}

/// `curl URL` inside bottle `id` through `exec`; stdout is the HTTP status.
fn curl_status(th: &TestHome, id: &str, url: &str) -> std::process::Output {
    run(
        th,
        &[
            "exec",
            id,
            "--",
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-m",
            "10",
            url,
        ],
    )
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

#[test]
fn agent_gets_allowed_routes_only_and_never_a_real_token() {
    let Some((th, internet)) = setup("routes") else {
        return;
    };
    let script = format!(
        "echo ALLOWED=$(curl -s -o /dev/null -w '%{{http_code}}' -m 10 http://api.example.test/allowed); \
         echo AUTH=$(curl -s -m 10 https://auth.example.test/whoami); echo TLS_EXIT=$?; \
         curl -sS -i -m 10 https://auth.example.test/whoami 2>&1 | head -12 | sed 's/^/AUTH-ANSWER: /'; echo; \
         echo FORGED=$(curl -s -m 10 -H 'Authorization: Bearer forged' https://auth.example.test/whoami); \
         curl -s -i -m 10 http://other.example.test/ | tr -d '\\r' | grep -i '^x-bottle-block' | sed 's/^/OTHER: /'; \
         echo OTHER_CODE=$(curl -s -o /dev/null -w '%{{http_code}}' -m 10 http://other.example.test/); \
         curl -s -m 10 http://other.example.test/ | sed 's/^/OTHER-BODY: /'; \
         curl -s -m 5 --noproxy '*' -o /dev/null http://{ip}/allowed && echo DIRECT=reached || echo DIRECT=refused; \
         curl -s -m 3 --noproxy '*' -o /dev/null http://cred-proxy:9099/ && echo CREDPROXY=reached || echo CREDPROXY=refused; \
         echo CREDPROXY_VIA_EGRESS=$(curl -s -o /dev/null -w '%{{http_code}}' -m 10 http://cred-proxy:9099/); \
         echo PREFIX_CODE=$(curl -s -o /dev/null -w '%{{http_code}}' -m 10 http://api.example.test/allowed-infra); \
         echo DOTSEG=$(curl -s --path-as-is -i -m 10 'http://api.example.test/allowed/..;/etc' | tr -d '\\r' | grep -i '^x-bottle-block' | cut -d' ' -f2); \
         echo HOSTCANARY=$(curl -s -i -m 10 http://$BOT_BOTTLE_CANARY.api.example.test/ | tr -d '\\r' | grep -i '^x-bottle-block' | cut -d' ' -f2); \
         ESC=$(printf '%s' \"$BOT_BOTTLE_CANARY\" | od -An -tx1 -v | tr -s ' \\n' ' ' | sed 's/ \\([0-9a-f][0-9a-f]\\)/\\\\u00\\1/g'); \
         echo JSONCANARY=$(curl -s -i -m 10 -H 'content-type: application/json' --data-binary \"{{\\\"k\\\":\\\"$ESC\\\"}}\" http://api.example.test/allowed | tr -d '\\r' | grep -i '^x-bottle-block' | cut -d' ' -f2); \
         echo FWDSECRET=$(curl -s -i -m 10 --data-binary \"v=$E2E_FWD_SECRET\" http://api.example.test/allowed | tr -d '\\r' | grep -i '^x-bottle-block' | cut -d' ' -f2); \
         echo FWDHOST=$(curl -s -o /dev/null -w '%{{http_code}}' -m 10 \"http://$E2E_FWD_HOST/allowed?v=$E2E_FWD_HOST\"); \
         env > /tmp/env; grep -c {TOKEN_VALUE} /tmp/env | sed 's/^/TOKEN_LINES=/'; \
         grep -q '^GH_TOKEN\\|bb-placeholder' /tmp/env && echo PLACEHOLDER=yes || echo PLACEHOLDER=no; \
         exit 7",
        ip = internet.ip()
    );
    // A working tree to copy with --cwd: ignored files, hooks and credentials stay out.
    let project = tempfile::tempdir().unwrap();
    let p = project.path();
    std::fs::create_dir_all(p.join(".git/hooks")).unwrap();
    std::fs::write(
        p.join(".git/hooks/post-checkout"),
        "#!/bin/sh\necho pwned\n",
    )
    .unwrap();
    std::fs::write(
        p.join(".git/config"),
        "[remote \"origin\"]\n\turl = https://me:ghp_cwdsecret@example.test/x.git\n[url \"https://oauth2:ghp_cwdheader@example.test/\"]\n\tinsteadOf = https://example.test/\n",
    )
    .unwrap();
    std::fs::write(
        p.join(".git/config.worktree"),
        "[http]\n\textraheader = Authorization: Bearer ghp_cwdworktree\n",
    )
    .unwrap();
    std::fs::write(p.join(".git/HEAD"), "ref: refs/heads/main\n").unwrap();
    std::fs::write(
        p.join(".git-credentials"),
        "https://me:ghp_cwdstore@example.test\n",
    )
    .unwrap();
    std::fs::write(p.join(".gitignore"), "build/\n").unwrap();
    std::fs::create_dir_all(p.join("build")).unwrap();
    std::fs::write(p.join("build/artifact"), "big").unwrap();
    std::fs::write(p.join("main.rs"), "fn main() {}\n").unwrap();
    std::os::unix::fs::symlink("/etc/shadow", p.join("shadow")).unwrap();
    let script = format!(
        "{script}; test -f /workspace/main.rs && echo CWD_FILE=yes; \
         test -e /workspace/build/artifact && echo IGNORED=copied; \
         test -e /workspace/.git/hooks/post-checkout && echo HOOK=copied; \
         test -L /workspace/shadow && echo LINK=copied; \
         grep -rq ghp_cwd /workspace && echo GITCRED=copied; \
         grep -q 'insteadOf = https://example.test/' /workspace/.git/config && echo URLHEADER=kept; exit 7"
    );
    let script = script.replacen("exit 7;", "true;", 1);
    let o = run(
        &th,
        &[
            "start",
            "e2e",
            "-y",
            "--cwd",
            p.to_str().unwrap(),
            "--",
            "bash",
            "-c",
            &script,
        ],
    );
    let out = text(&o.stdout);
    let err = text(&o.stderr);
    assert_eq!(
        o.status.code(),
        Some(7),
        "CMD's exit code is start's\nstdout:\n{out}\nstderr:\n{err}"
    );
    assert!(out.contains("ALLOWED=200"), "allowed route: {out}\n{err}");
    // --cwd: the tree arrives without ignored files, hooks, links out of it
    // or any credential of its git configs.
    assert!(out.contains("CWD_FILE=yes"), "--cwd copy: {out}");
    assert!(!out.contains("=copied"), "--cwd copied too much: {out}");
    assert!(
        out.contains("URLHEADER=kept"),
        "the url section stays, cleaned: {out}"
    );
    // egress intercepts TLS with the bottle CA (the agent trusts it), hands
    // the request to cred-proxy, which injects the real token and dials the
    // upstream over TLS verified against `egress.upstream_ca`.
    assert!(
        !out.contains("TLS_EXIT=60") && !out.contains("TLS_EXIT=35"),
        "bottle CA not trusted: {out}"
    );
    assert!(
        out.contains("AUTH=token-ok"),
        "the auth route must reach the upstream with the real token: {out}\n{err}"
    );
    assert!(
        out.contains("FORGED=token-ok"),
        "an Authorization the agent sends is replaced by the real token: {out}\n{err}"
    );
    assert!(out.contains("OTHER_CODE=403"), "{out}");
    assert!(
        out.to_ascii_lowercase()
            .contains("other: x-bottle-block: route"),
        "refusal text: {out}"
    );
    // This bottle has no supervise sidecar: the refusal the agent reads
    // sends it to the operator and names no tool it could call.
    assert!(
        out.contains("OTHER-BODY: If you need this access, tell the operator"),
        "refusal body: {out}"
    );
    assert!(!out.contains("request_egress_route"), "refusal body: {out}");
    assert!(
        out.contains("DIRECT=refused"),
        "a direct connection must fail: {out}"
    );
    // cred-proxy holds the real token: the agent reaches it neither
    // directly (not on its network, its name unknown there) nor through
    // egress (a sidecar's name is never a route).
    assert!(
        out.contains("CREDPROXY=refused"),
        "the agent reached cred-proxy: {out}"
    );
    assert!(out.contains("CREDPROXY_VIA_EGRESS=403"), "{out}");
    // Paths match on a segment boundary; ambiguous forms are refused by name.
    assert!(
        out.contains("PREFIX_CODE=403"),
        "/allowed-infra is not /allowed: {out}"
    );
    assert!(out.contains("DOTSEG=protocol:"), "a `..;` segment: {out}");
    // The canary in a host name, and JSON-escaped in a body: DLP refuses both.
    assert!(out.contains("HOSTCANARY=dlp:"), "canary in the host: {out}");
    assert!(
        out.contains("JSONCANARY=dlp:"),
        "JSON-escaped canary: {out}"
    );
    // What the agent holds from the operator's environment must not leave,
    // but a forwarded host name is no secret.
    assert!(
        out.contains("FWDSECRET=dlp:"),
        "a forwarded value sent out: {out}"
    );
    assert!(
        out.contains("FWDHOST=200"),
        "a forwarded host name blocked requests naming it: {out}"
    );
    assert!(
        out.contains("TOKEN_LINES=0"),
        "the real token reached the agent: {out}"
    );
    assert!(
        out.contains("PLACEHOLDER=yes"),
        "the agent holds a placeholder: {out}"
    );
    assert!(err.contains("] network bb-"), "progress is visible: {err}");
    assert_eq!(
        th.leftovers(),
        Vec::<String>::new(),
        "after exit nothing labelled remains"
    );
    // The bottle is gone; its audit log stays in the state dir (nothing
    // else: no CA key, no layout), `logs` reads it, `resume` refuses with a
    // reason, and `cleanup` removes it.
    let state = th.dir.path().join("state");
    let ids: Vec<String> = std::fs::read_dir(&state)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let id = &ids[0];
    let mut kept: Vec<String> = std::fs::read_dir(state.join(id))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    kept.sort();
    assert_eq!(kept, ["audit", "metadata.json", "removed"]);
    let o = run(&th, &["logs", id]);
    let audit = text(&o.stdout);
    assert!(
        audit.contains("ALLOW GET http://api.example.test:80/allowed -> 200")
            && audit.contains("DENY  GET http://other.example.test:80/ -> 403"),
        "logs after the bottle is removed: {audit}\n{}",
        text(&o.stderr)
    );
    let o = run(&th, &["resume", id]);
    assert!(
        !o.status.success() && text(&o.stderr).contains("was removed when its session ended"),
        "resume of a removed bottle: {}",
        text(&o.stderr)
    );
    let o = run(&th, &["cleanup", "-y"]);
    assert!(o.status.success(), "cleanup: {}", text(&o.stderr));
    assert!(std::fs::read_dir(&state).map_or(true, |mut d| d.next().is_none()));
}

fn wait_for(th: &TestHome, what: &str, pred: impl Fn(&[String]) -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if pred(&th.leftovers()) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("never saw {what}");
    false
}

#[test]
fn sigkill_at_several_points_of_bring_up_then_cleanup_leaves_nothing() {
    let Some((th, _internet)) = setup("kill") else {
        return;
    };
    type Point = (&'static str, fn(&[String]) -> bool);
    let points: [Point; 3] = [
        ("first network", |l| {
            l.iter().any(|x| x.starts_with("network"))
        }),
        ("egress container", |l| {
            l.iter()
                .any(|x| x.starts_with("container") && x.ends_with("-egress"))
        }),
        ("agent container", |l| {
            l.iter()
                .any(|x| x.starts_with("container") && x.ends_with("-agent"))
        }),
    ];
    for (what, pred) in points {
        let mut child = th
            .cmd()
            .args(["start", "e2e", "-y", "--", "sleep", "60"])
            .envs(operator_env())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let seen = wait_for(&th, what, pred);
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(seen, "bring-up never reached: {what}");
        let o = run(&th, &["cleanup", "--all", "-y"]);
        assert!(o.status.success(), "cleanup: {}", text(&o.stderr));
        assert_eq!(
            th.leftovers(),
            Vec::<String>::new(),
            "after SIGKILL at {what} and cleanup --all -y"
        );
        let states = std::fs::read_dir(th.dir.path().join("state"))
            .map(|d| d.count())
            .unwrap_or(0);
        assert_eq!(states, 0, "cleanup removes the state of dead bottles");
    }
    // SIGTERM (like Ctrl-C) at any point: the orchestrator itself removes everything.
    for (what, pred) in points {
        let mut child = th
            .cmd()
            .args(["start", "e2e", "-y", "--", "sleep", "60"])
            .envs(operator_env())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let seen = wait_for(&th, what, pred);
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let status = child.wait().unwrap();
        assert!(seen, "bring-up never reached: {what}");
        assert!(
            !status.success(),
            "an interrupted start does not report success"
        );
        assert_eq!(
            th.leftovers(),
            Vec::<String>::new(),
            "after SIGTERM at {what}, without cleanup"
        );
    }
}

/// The real token is read from the operator's environment at each bring-up
/// and goes to cred-proxy's env only: no file of the bottle's state dir
/// (layout, rendered configs, secrets, audit log) may hold it. The
/// `@@bb-env:VAR@@` markers are what keep it out.
fn assert_no_token_in_state(th: &TestHome, id: &str, when: &str) {
    fn walk(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(&p, out);
            } else {
                out.push(p);
            }
        }
    }
    let mut files = Vec::new();
    walk(&state_dir(th, id), &mut files);
    assert!(
        files.iter().any(|f| f.ends_with("layout.json")),
        "{when}: the state dir has no layout: {files:?}"
    );
    for f in files {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !bytes
                .windows(TOKEN_VALUE.len())
                .any(|w| w == TOKEN_VALUE.as_bytes()),
            "{when}: {} holds the real token",
            f.display()
        );
    }
}

fn container_image(id: &str, role: &str) -> String {
    inspect(id, role, "{{.Config.Image}}")
}

fn agent_started_at(id: &str) -> String {
    inspect(id, "agent", "{{.State.StartedAt}} {{.State.Running}}")
}

#[test]
fn restart_of_egress_keeps_the_agent_and_stop_resume_keeps_the_workspace() {
    let Some((th, _internet)) = setup("restart") else {
        return;
    };
    // One sidecar from another image (here: the same egress under its moving tag).
    let o = run(
        &th,
        &[
            "start",
            "e2e",
            "-y",
            "--detach",
            "--sidecar-image",
            "egress=bot-bottle/egress:latest",
        ],
    );
    assert!(o.status.success(), "start --detach: {}", text(&o.stderr));
    let id = text(&o.stdout).trim().to_string();
    assert!(
        id.starts_with("e2e-"),
        "start --detach prints the id: {id:?}"
    );
    let o = curl_status(&th, &id, "http://api.example.test/allowed");
    assert_eq!(text(&o.stdout), "200", "{}", text(&o.stderr));
    assert_no_token_in_state(&th, &id, "after start");
    // Every container has a CPU cap and a bounded log.
    for role in ["agent", "egress", "cred-proxy"] {
        let caps = inspect(
            &id,
            role,
            "{{.HostConfig.NanoCpus}} {{.HostConfig.LogConfig.Type}} {{index .HostConfig.LogConfig.Config \"max-size\"}} {{index .HostConfig.LogConfig.Config \"max-file\"}}",
        );
        let f: Vec<&str> = caps.split_whitespace().collect();
        assert!(
            f.len() == 4 && f[0].parse::<i64>().is_ok_and(|n| n > 0),
            "{role} has no CPU cap: {caps}"
        );
        assert_eq!(&f[1..], ["json-file", "10m", "3"], "{role}'s log: {caps}");
    }
    // Real tokens stay in cred-proxy: egress scans for what the agent holds.
    let known = container_file(&id, "egress", "/config/known-secrets");
    assert!(!known.contains(TOKEN_VALUE), "egress holds the real token");
    assert!(known.contains("bbcanary-"), "no canary: {known}");
    assert!(known.lines().any(|l| l == FORWARDED_VALUE), "{known}");
    assert!(!known.contains(FORWARDED_HOST), "a host name: {known}");

    let before = agent_started_at(&id);
    assert_eq!(
        container_image(&id, "egress"),
        "bot-bottle/egress:latest",
        "--sidecar-image"
    );
    let hash_tag = {
        let o = Command::new("docker")
            .args([
                "image",
                "inspect",
                "-f",
                "{{index .RepoTags 0}}",
                "bot-bottle/egress:latest",
            ])
            .output()
            .unwrap();
        let tags = Command::new("docker")
            .args([
                "image",
                "inspect",
                "-f",
                "{{range .RepoTags}}{{.}} {{end}}",
                "bot-bottle/egress:latest",
            ])
            .output()
            .unwrap();
        let all = text(&tags.stdout);
        all.split_whitespace()
            .find(|t| t.starts_with("bot-bottle/egress:") && !t.ends_with(":latest"))
            .map(str::to_string)
            .unwrap_or_else(|| text(&o.stdout).trim().to_string())
    };
    let o = run(&th, &["restart", &id, "egress", "--image", &hash_tag]);
    assert!(o.status.success(), "restart: {}", text(&o.stderr));
    assert_eq!(
        agent_started_at(&id),
        before,
        "the agent kept running through the egress restart"
    );
    assert_eq!(container_image(&id, "egress"), hash_tag, "restart --image");
    let o = curl_status(&th, &id, "http://api.example.test/allowed");
    assert_eq!(
        text(&o.stdout),
        "200",
        "egress works again: {}",
        text(&o.stderr)
    );
    let o = run(&th, &["logs", &id]);
    let audit = text(&o.stdout);
    assert!(
        audit.contains("ALLOW GET http://api.example.test:80/allowed -> 200"),
        "logs shows the audit trail: {audit}"
    );

    // logs --follow: a request made after it started appears while it runs.
    let mut follow = th
        .cmd()
        .args(["logs", &id, "--follow"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lines = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(lines).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // No wait needed: `--follow` reads the file from its start, so the line
    // shows whether it lands before or after the follow began.
    let o = curl_status(&th, &id, "http://api.example.test/allowed/follow-check");
    assert!(o.status.success(), "curl: {}", text(&o.stderr));
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut followed = false;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if line.contains("/allowed/follow-check") => {
                followed = true;
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(
        followed,
        "logs --follow prints a request made after it started"
    );

    let o = run(&th, &["list"]);
    assert!(
        text(&o.stdout).contains(&id),
        "list shows the bottle: {}",
        text(&o.stdout)
    );
    let o = run(
        &th,
        &[
            "exec",
            &id,
            "--",
            "sh",
            "-c",
            "echo kept-across-stop > /workspace/note",
        ],
    );
    assert!(o.status.success());

    // An interactive shell on a terminal (script(1) gives it a pty): input in, exit code out.
    if Command::new("script")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        let exec_cmd = format!("{} exec {id}", env!("CARGO_BIN_EXE_orchestrator"));
        let mut child = Command::new("script")
            .args(["-qec", &exec_cmd, "/dev/null"])
            .env("BOT_BOTTLE_HOME", th.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"echo inside-$((6*7))\nexit 5\n")
            .unwrap();
        let o = child.wait_with_output().unwrap();
        assert!(
            text(&o.stdout).contains("inside-42"),
            "interactive exec: {}",
            text(&o.stdout)
        );
        assert_eq!(o.status.code(), Some(5), "the shell's exit code is exec's");
    }

    // commit: resume boots from the snapshot (a file outside the workspace survives).
    let o = run(
        &th,
        &[
            "exec",
            &id,
            "--",
            "sh",
            "-c",
            "echo from-commit > /home/agent/marker",
        ],
    );
    assert!(o.status.success());
    let o = run(&th, &["commit", &id]);
    assert!(o.status.success(), "commit: {}", text(&o.stderr));
    let committed = text(&o.stdout).trim().to_string();
    struct RemoveImage(String);
    impl Drop for RemoveImage {
        fn drop(&mut self) {
            let _ = Command::new("docker").args(["rmi", "-f", &self.0]).output();
        }
    }
    let _image_guard = RemoveImage(committed.clone());
    assert!(committed.starts_with("bot-bottle/commit-"), "{committed}");
    let o = run(&th, &["stop", &id]);
    assert!(o.status.success(), "stop: {}", text(&o.stderr));
    assert_no_token_in_state(&th, &id, "after stop");
    assert!(
        !th.leftovers().iter().any(|l| l.starts_with("container")),
        "stop removes the containers"
    );
    // The audit trail outlives egress's container.
    let o = run(&th, &["logs", &id]);
    assert!(
        text(&o.stdout).contains("ALLOW GET http://api.example.test:80/allowed/follow-check -> "),
        "logs after stop: {}\n{}",
        text(&o.stdout),
        text(&o.stderr)
    );

    // The state as the previous release saved it: no CPU caps or audit
    // mount, egress auditing to stdout, and the real token in the
    // known-secrets of egress and git-gate. Resume brings it up to this
    // release's guarantees.
    let layout_path = th.dir.path().join("state").join(&id).join("layout.json");
    let layout = std::fs::read(&layout_path).unwrap();
    std::fs::write(&layout_path, as_previous_release(&layout)).unwrap();

    // resume runs the session; its stdin is the shell's input here.
    let mut child = th
        .cmd()
        .args(["resume", &id])
        .envs(operator_env())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"echo SESSION-UP\n").unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while inspect(&id, "agent", "{{.State.Running}}") != "true" {
        assert!(
            Instant::now() < deadline,
            "resume never brought the agent up"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let known = container_file(&id, "egress", "/config/known-secrets");
    assert!(
        !known.contains(TOKEN_VALUE) && known.lines().any(|l| l == FORWARDED_VALUE),
        "a resumed bottle of the previous release holds the token in egress: {known}"
    );
    assert!(
        inspect(&id, "egress", "{{.HostConfig.NanoCpus}}") != "0",
        "a resumed bottle has CPU caps"
    );
    stdin
        .write_all(b"cat /workspace/note\ncat /home/agent/marker\nexit 0\n")
        .unwrap();
    drop(stdin);
    let o = child.wait_with_output().unwrap();
    assert!(
        text(&o.stdout).contains("kept-across-stop"),
        "resume keeps the workspace: {}\n{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    assert!(
        text(&o.stdout).contains("from-commit"),
        "resume boots from the commit: {}",
        text(&o.stdout)
    );

    let o = run(&th, &["cleanup", "--all", "-y"]);
    assert!(o.status.success());
    assert_eq!(th.leftovers(), Vec::<String>::new());
}
