//! git through the gate, end to end through the `orchestrator` binary: the
//! agent clones and pushes with its upstream URL (rewritten to git-gate), the
//! gate pushes upstream over egress's tunnel route with its own key; a push
//! outside `PushRefs` and a push of the bottle's canary are refused; and the
//! agent itself cannot open that tunnel (or any other way to the forge's ssh
//! port) on any address or port of egress, nor tunnel inside an intercepted
//! TLS session. The upstream is an sshd container of the test on a network of
//! its own.

mod e2e_support;

use std::process::{Command, Stdio};

use e2e_support::*;

fn orch_build(name: &str) -> Result<(), String> {
    let o = Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args(["images", "build", "--only", name])
        .output()
        .map_err(|e| e.to_string())?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "images build --only {name}: {}",
            String::from_utf8_lossy(&o.stderr)
        ))
    }
}

struct Upstream {
    net: String,
    container: String,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["rm", "-f", &self.container])
            .output();
        let _ = Command::new("docker")
            .args(["network", "rm", &self.net])
            .output();
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

/// Run inside the agent: `CONNECT <target>` to every `addr:port` given, and
/// the same CONNECT sent inside an intercepted TLS session of an allowed
/// route. Prints one `RESULT <what> <status line or error>` line each.
const PROBE: &str = r#"
import socket, ssl, sys
target = sys.argv[1]
def connect(sock, authority):
    sock.sendall(("CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (authority, authority)).encode())
    head = b""
    while b"\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    return head.split(b"\r\n")[0].decode(errors="replace") or "closed"
for spec in sys.argv[3:]:
    addr, port = spec.rsplit(":", 1)
    try:
        s = socket.create_connection((addr, int(port)), timeout=3)
        s.settimeout(5)
        print("RESULT", spec, connect(s, target), flush=True)
    except OSError as e:
        print("RESULT", spec, "unreachable:", e, flush=True)
# Inside TLS intercepted for an allowed route: CONNECT to the forge, and to the route's own host.
for inner in [target, sys.argv[2]]:
    s = socket.create_connection(("egress", 3128), timeout=5)
    first = connect(s, sys.argv[2])
    if " 200" not in first:
        print("RESULT tls-setup", first, flush=True)
        continue
    t = ssl.create_default_context().wrap_socket(s, server_hostname=sys.argv[2].split(":")[0])
    print("RESULT inner-" + inner, connect(t, inner), flush=True)
"#;

#[test]
fn agent_pushes_through_the_gate_only_what_policy_allows() {
    if !docker_or_skip("git gate") {
        return;
    }
    let built = ["egress", "git-gate", "test-agent", "upstream-sshd"]
        .iter()
        .try_for_each(|n| orch_build(n));
    if !run_or_skip("git gate", built) {
        return;
    }
    let th = TestHome::new();
    let root = th.dir.path();
    let key = root.join("id_upstream");
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f", key.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(st.success());
    let pubkey = std::fs::read_to_string(root.join("id_upstream.pub")).unwrap();

    let tag = format!("{:x}", std::process::id());
    let up = Upstream {
        net: format!("bb-e2e-gitnet-{tag}"),
        container: format!("bb-e2e-sshd-{tag}"),
    };
    let mut subnet = String::new();
    for i in 0..20u32 {
        let cand = format!("10.216.{}.0/24", (std::process::id() + i * 37) % 250 + 1);
        let ok = Command::new("docker")
            .args([
                "network",
                "create",
                "--subnet",
                &cand,
                "--label",
                "dev.bot-bottle.test=e2e",
                &up.net,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap()
            .success();
        if ok {
            subnet = cand;
            break;
        }
    }
    assert!(!subnet.is_empty());
    let st = Command::new("docker")
        .args([
            "run",
            "-d",
            "--name",
            &up.container,
            "--label",
            "dev.bot-bottle.test=e2e",
            "--network",
            &up.net,
            "--network-alias",
            "git.example.test",
            "-e",
            &format!("AUTHORIZED_KEY={}", pubkey.trim()),
            "-e",
            "REPOS=app",
            "bot-bottle/upstream-sshd:latest",
            "upstream-sshd",
        ])
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    // The host key is printed at start, before sshd listens.
    let deadline = std::time::Instant::now() + LISTEN_DEADLINE;
    let host_key = loop {
        let o = Command::new("docker")
            .args(["logs", &up.container])
            .output()
            .unwrap();
        if let Some(l) = text(&o.stdout)
            .lines()
            .chain(text(&o.stderr).lines())
            .find(|l| l.starts_with("HOSTKEY "))
        {
            break l.trim_start_matches("HOSTKEY ").trim().to_string();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the upstream sshd printed no host key within {} s: {}{}",
            LISTEN_DEADLINE.as_secs(),
            text(&o.stdout),
            text(&o.stderr)
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    wait_listening(&up.container, 22, "the test's upstream sshd");

    std::fs::create_dir_all(root.join("agents")).unwrap();
    std::fs::create_dir_all(root.join("bottles")).unwrap();
    std::fs::write(root.join("agents/g.md"), "---\nbottle: g\n---\ngit agent\n").unwrap();
    // `web.example.test` is an allowed, intercepted route (nothing needs to
    // listen there: egress refuses a tunnel inside TLS before dialing).
    std::fs::write(
        root.join("bottles/g.md"),
        format!(
            "---\ngit:\n  user: {{ name: Bot, email: bot@example.test }}\n  remotes:\n    - Name: app\n      Upstream: ssh://git@git.example.test/srv/git/app.git\n      IdentityFile: {key}\n      KnownHostKey: \"{host_key}\"\n      PushRefs: [\"refs/heads/agent/*\"]\negress:\n  attach_networks: [{net}]\n  ssrf_allow_cidrs: [{subnet}]\n  routes:\n    - host: web.example.test\n---\n",
            key = key.display(),
            net = up.net,
        ),
    )
    .unwrap();

    let script = "set -u; cd /workspace; git clone -q ssh://git@git.example.test/srv/git/app.git app 2>/dev/null; cd app; \
        git checkout -q -b agent/ok && echo hello > f && git add f && git commit -qm ok && \
        (git push -q origin agent/ok >/dev/null 2>&1 && echo PUSH_OK=yes || echo PUSH_OK=no); \
        git checkout -q -b main && (git push -q origin main >/dev/null 2>&1 && echo PUSH_MAIN=yes || echo PUSH_MAIN=no); \
        git checkout -q -b agent/leak && echo \"$BOT_BOTTLE_CANARY\" > leak && git add leak && git commit -qm leak && \
        (git push -q origin agent/leak >/dev/null 2>&1 && echo PUSH_CANARY=yes || echo PUSH_CANARY=no); \
        at() { git checkout -q -B \"$1\" \"$2\" && printf \"$3\" \"$BOT_BOTTLE_CANARY\" > f && git add -A && \
          GIT_COMMITTER_DATE=\"$4\" GIT_AUTHOR_DATE=\"$4\" git commit -qm work; }; \
        at q agent/ok 'token %s\\nx\\n' 2030-01-04T00:00:00Z && at r q 'token %s\\n' 2030-01-01T00:00:00Z && \
        at t agent/ok 'token %s\\n' 2030-01-03T00:00:00Z && at u t 'token %s\\nx\\n' 2030-01-02T00:00:00Z && \
        (git push -q origin q:refs/heads/agent/q r:refs/heads/agent/r t:refs/heads/agent/t u:refs/heads/agent/u >/dev/null 2>&1 \
          && echo PUSH_ORDER=yes || echo PUSH_ORDER=no); \
        git checkout -q -B agent/author agent/ok && echo clean > a && git add a && \
        git -c user.name=\"$BOT_BOTTLE_CANARY\" commit -qm clean && \
        (git push -q origin agent/author >/dev/null 2>&1 && echo PUSH_AUTHOR=yes || echo PUSH_AUTHOR=no); \
        git checkout -q -B agent/gitlink agent/ok && \
        git update-index --add --cacheinfo \"160000,1111111111111111111111111111111111111111,vendor/$BOT_BOTTLE_CANARY\" && \
        git commit -qm vendor && \
        (git push -q origin agent/gitlink >/dev/null 2>&1 && echo PUSH_GITLINK=yes || echo PUSH_GITLINK=no)";
    let o = th
        .cmd()
        .args(["start", "g", "-y", "--detach"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "start --detach: {}", text(&o.stderr));
    let id = text(&o.stdout).trim().to_string();
    let exec = |args: &[&str]| {
        th.cmd()
            .args(["exec", &id, "--"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };

    // The agent's raw ways to the forge's sshd: every address egress has, on
    // its proxy port and the others, the upstream's own address, and a tunnel
    // inside an intercepted session. None may open.
    let mut targets: Vec<String> = Vec::new();
    let egress_ips = inspect(
        &id,
        "egress",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
    );
    let egress_ips: Vec<&str> = egress_ips.split_whitespace().collect();
    assert!(
        egress_ips.len() >= 5,
        "egress is on internal, broker, egress, gate and the test's network: {egress_ips:?}"
    );
    for ip in &egress_ips {
        for port in [3128, 22, 80, 443, 8080, 9099, 9418] {
            targets.push(format!("{ip}:{port}"));
        }
    }
    let upstream_ip = Command::new("docker")
        .args([
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
            &up.container,
        ])
        .output()
        .unwrap();
    targets.push(format!("{}:22", text(&upstream_ip.stdout).trim()));
    let mut probe = vec![
        "python3",
        "-c",
        PROBE,
        "git.example.test:22",
        "web.example.test:443",
    ];
    probe.extend(targets.iter().map(String::as_str));
    let o = exec(&probe);
    let results = text(&o.stdout);
    let lines: Vec<&str> = results
        .lines()
        .filter(|l| l.starts_with("RESULT "))
        .collect();
    assert_eq!(
        lines.len(),
        targets.len() + 2,
        "every probe reported:\n{results}\n{}",
        text(&o.stderr)
    );
    for l in &lines {
        assert!(
            !l.contains(" 200"),
            "the agent opened a tunnel: {l}\n{results}"
        );
    }
    // Egress's own listener answers, and refuses: the route is not the agent's.
    let internal = inspect(
        &id,
        "egress",
        &format!("{{{{(index .NetworkSettings.Networks \"bb-{id}-internal\").IPAddress}}}}"),
    );
    let own = lines
        .iter()
        .find(|l| l.starts_with(&format!("RESULT {internal}:3128 ")))
        .unwrap_or_else(|| panic!("no probe of {internal}:3128:\n{results}"));
    assert!(own.contains(" 403"), "{own}");
    for inner in ["git.example.test:22", "web.example.test:443"] {
        let l = lines
            .iter()
            .find(|l| l.starts_with(&format!("RESULT inner-{inner} ")))
            .unwrap_or_else(|| panic!("no inner probe for {inner}:\n{results}"));
        assert!(l.contains(" 403"), "a tunnel inside TLS is refused: {l}");
    }

    let o = exec(&["bash", "-c", script]);
    let out = text(&o.stdout);
    let err = text(&o.stderr);
    assert!(
        out.contains("PUSH_OK=yes"),
        "a push to an allowed ref passes:\n{out}\n{err}"
    );
    assert!(
        out.contains("PUSH_MAIN=no"),
        "a push outside PushRefs is refused:\n{out}"
    );
    assert!(
        out.contains("PUSH_CANARY=no"),
        "a push of the canary is refused:\n{out}"
    );
    // The push scan's three ways around it, from the agent's own git: commit
    // dates ordered so each canary line looks "old" in the other branch's
    // parent, the canary as author name, the canary as a gitlink's path.
    for attack in ["PUSH_ORDER", "PUSH_AUTHOR", "PUSH_GITLINK"] {
        assert!(
            out.contains(&format!("{attack}=no")),
            "{attack}: the push carrying the canary is refused:\n{out}\n{err}"
        );
    }
    let branches = Command::new("docker")
        .args([
            "exec",
            &up.container,
            "git",
            "--git-dir=/srv/git/app.git",
            "branch",
            "--list",
        ])
        .output()
        .unwrap();
    let branches = text(&branches.stdout);
    assert!(
        branches.contains("agent/ok"),
        "the accepted push reached the upstream: {branches}"
    );
    for refused in [
        "main",
        "agent/leak",
        "agent/q",
        "agent/r",
        "agent/t",
        "agent/u",
        "agent/author",
        "agent/gitlink",
    ] {
        assert!(
            !branches
                .lines()
                .any(|b| b.trim_start_matches(['*', ' ']) == refused),
            "refused push {refused} never reaches it: {branches}"
        );
    }

    // The operator's terminal: a clipboard write and a device control string
    // the agent prints never reach it; the text around them does.
    let o = Command::new("python3")
        .args([
            "-c",
            "import pty, sys; sys.exit(pty.spawn(sys.argv[1:]) >> 8)",
            env!("CARGO_BIN_EXE_orchestrator"),
            "exec",
            &id,
            "--",
            "printf",
            r"A\033]52;c;ZXZpbA==\007B\033P+q544e\033\\C\n",
        ])
        .env("BOT_BOTTLE_HOME", th.dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let screen = text(&o.stdout);
    assert!(
        screen.contains("ABC"),
        "exec under a pty: {screen:?} {}",
        text(&o.stderr)
    );
    assert!(
        !screen.contains("]52;") && !screen.contains("+q544e"),
        "the agent wrote to the operator's clipboard: {screen:?}"
    );
    // What a bottle wrote into a sidecar's log (git daemon logs the path a
    // client asked for) is printed escaped.
    let o = exec(&[
        "bash",
        "-c",
        "git ls-remote \"git://git-gate/$(printf '\\033]52;c;ZXZpbA==\\007')evil.git\" 2>&1; true",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    // The engine collects a container's output a moment after it is
    // written: read the log again until the line is there.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let log = loop {
        let o = th
            .cmd()
            .args(["logs", &id, "--sidecar", "git-gate"])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(o.status.success(), "logs: {}", text(&o.stderr));
        let log = text(&o.stdout);
        if log.contains("evil.git") || std::time::Instant::now() > deadline {
            break log;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(!log.contains('\x1b'), "raw ESC in `logs`: {log:?}");
    assert!(
        log.contains("\\x1b]52;c;ZXZpbA=="),
        "the path is logged, escaped: {log}"
    );

    // `cleanup` clears what is left over, never a running bottle.
    let o = th
        .cmd()
        .args(["cleanup", "-y"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "cleanup: {}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains(&format!("{id} (running)")),
        "cleanup lists the running bottle as kept: {}",
        text(&o.stderr)
    );
    assert_eq!(
        inspect(&id, "agent", "{{.State.Running}}"),
        "true",
        "cleanup -y stopped a running bottle"
    );
    let o = th
        .cmd()
        .args(["cleanup", "--all", "-y"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(o.status.success(), "cleanup --all: {}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains(&format!("bottle {id}: everything")),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(th.leftovers(), Vec::<String>::new());
}
