//! End-to-end: pushes and fetches through the gate container to a real ssh
//! upstream container. Needs Docker (skipped without it, failing with CI=true).

mod common;

use common::{docker_or_skip, GateOptions, World, CANARY, GH_TOKEN};

fn world(test: &str, opts: GateOptions) -> Option<World> {
    if !docker_or_skip(test) {
        return None;
    }
    let mut w = World::new(test);
    w.start_gate(opts);
    Some(w)
}

#[test]
fn clean_push_lands_upstream() {
    let Some(w) = world("clean", GateOptions::default()) else {
        return;
    };
    let c = w.clone("agent");
    let head = c.commit("src/lib.rs", "pub fn f() {}\n", "add lib");
    let p = c.push(&["HEAD:refs/heads/agent/feature"]);
    assert!(p.ok, "clean push refused: {}", p.stderr);
    assert_eq!(
        w.upstream_rev("refs/heads/agent/feature").as_deref(),
        Some(head.as_str())
    );
    // A second push on top is a fast-forward and lands too.
    let head2 = c.commit("src/lib.rs", "pub fn f() {}\npub fn g() {}\n", "more");
    let p = c.push(&["HEAD:refs/heads/agent/feature"]);
    assert!(p.ok, "fast-forward refused: {}", p.stderr);
    assert_eq!(
        w.upstream_rev("refs/heads/agent/feature").as_deref(),
        Some(head2.as_str())
    );
    // The operator's log (the gate's stdout) records what the hook did.
    let log = w.gate_logs();
    assert!(
        log.contains("\"pushed upstream\"") && log.contains("refs/heads/agent/feature"),
        "{log}"
    );
}

#[test]
fn secret_in_tip_is_refused_and_upstream_unchanged() {
    let Some(w) = world("tip", GateOptions::default()) else {
        return;
    };
    let before = w.upstream_refs();
    let c = w.clone("agent");
    let commit = c.commit(
        "config/env",
        &format!("GH_TOKEN={GH_TOKEN}\n"),
        "add config",
    );
    let p = c.push(&["HEAD:refs/heads/agent/leak"]);
    eprintln!("agent saw:\n{}", p.stderr);
    assert!(!p.ok, "push with a token was accepted");
    assert!(
        p.stderr.contains("github-pat"),
        "no rule id in: {}",
        p.stderr
    );
    assert!(p.stderr.contains("config/env"), "no path in: {}", p.stderr);
    assert!(p.stderr.contains("line 1"), "no line in: {}", p.stderr);
    assert!(
        p.stderr.contains(&commit[..12]),
        "no commit in: {}",
        p.stderr
    );
    assert!(
        !p.stderr.contains(GH_TOKEN),
        "the secret was echoed back: {}",
        p.stderr
    );
    assert_eq!(
        w.upstream_refs(),
        before,
        "upstream changed after a refused push"
    );
    assert!(
        !w.gate_logs().contains(GH_TOKEN),
        "the secret reached the gate's log"
    );
}

#[test]
fn secret_in_older_commit_of_range_is_refused() {
    let Some(w) = world("older", GateOptions::default()) else {
        return;
    };
    let c = w.clone("agent");
    c.commit("notes.txt", &format!("token {CANARY}\n"), "notes");
    c.commit("other.txt", "nothing here\n", "unrelated");
    let p = c.push(&["HEAD:refs/heads/agent/older"]);
    assert!(!p.ok, "secret in an older commit passed");
    assert!(p.stderr.contains("notes.txt"), "{}", p.stderr);
    assert!(p.stderr.contains("known-secret"), "{}", p.stderr);
    assert_eq!(w.upstream_rev("refs/heads/agent/older"), None);
}

#[test]
fn secret_added_then_deleted_within_range_is_refused() {
    let Some(w) = world("addel", GateOptions::default()) else {
        return;
    };
    let c = w.clone("agent");
    c.commit("leak.txt", &format!("{CANARY}\n"), "add");
    c.remove("leak.txt", "remove again");
    let p = c.push(&["HEAD:refs/heads/agent/addel"]);
    assert!(!p.ok, "secret added and removed in the range passed");
    assert!(p.stderr.contains("leak.txt"), "{}", p.stderr);
    assert_eq!(w.upstream_rev("refs/heads/agent/addel"), None);
}

#[test]
fn secret_in_commit_message_is_refused() {
    let Some(w) = world("msg", GateOptions::default()) else {
        return;
    };
    let c = w.clone("agent");
    c.commit("a.txt", "harmless\n", &format!("deploy with {CANARY}"));
    let p = c.push(&["HEAD:refs/heads/agent/msg"]);
    assert!(!p.ok, "secret in a commit message passed");
    assert!(p.stderr.contains("commit message"), "{}", p.stderr);
    assert_eq!(w.upstream_rev("refs/heads/agent/msg"), None);
}

#[test]
fn accepted_fingerprint_passes() {
    if !docker_or_skip("fingerprint") {
        return;
    }
    let scanner = scanner::Scanner::new(
        scanner::Rules::builtin(),
        scanner::KnownSecrets::empty(),
        scanner::ScanOptions { decode: true },
    );
    let findings = scanner.scan_named("config/env", format!("GH_TOKEN={GH_TOKEN}\n").as_bytes());
    assert!(
        !findings.is_empty(),
        "the scanner does not see the test token"
    );
    let fp = findings[0].fingerprint.clone();
    let mut w = World::new("fingerprint");
    w.start_gate(GateOptions {
        remote_extra: format!("allow_fingerprints = [\"{fp}\"]"),
        ..Default::default()
    });
    let c = w.clone("agent");
    let head = c.commit(
        "config/env",
        &format!("GH_TOKEN={GH_TOKEN}\n"),
        "accepted token",
    );
    let p = c.push(&["HEAD:refs/heads/agent/accepted"]);
    assert!(p.ok, "accepted fingerprint still refused: {}", p.stderr);
    assert_eq!(
        w.upstream_rev("refs/heads/agent/accepted").as_deref(),
        Some(head.as_str())
    );
    // Another secret in the same push is still refused.
    c.commit("more", &format!("{CANARY}\n"), "canary");
    let p = c.push(&["HEAD:refs/heads/agent/accepted"]);
    assert!(
        !p.ok,
        "an unaccepted secret passed alongside an accepted one"
    );
}

#[test]
fn ci_config_change_is_refused() {
    let Some(w) = world("ci", GateOptions::default()) else {
        return;
    };
    let c = w.clone("agent");
    c.commit(".github/workflows/ci.yml", "on: push\njobs: {}\n", "ci");
    let p = c.push(&["HEAD:refs/heads/agent/ci"]);
    assert!(!p.ok, "CI config change passed");
    assert!(
        p.stderr.contains(".github/workflows/ci.yml"),
        "path not named: {}",
        p.stderr
    );
    assert_eq!(w.upstream_rev("refs/heads/agent/ci"), None);
}

#[test]
fn force_push_is_refused() {
    let Some(w) = world("force", GateOptions::default()) else {
        return;
    };
    let c = w.clone("agent");
    let first = c.commit("a.txt", "one\n", "one");
    assert!(c.push(&["HEAD:refs/heads/agent/f"]).ok);
    c.git_ok(&["commit", "-q", "--amend", "-m", "rewritten"]);
    let p = c.push(&["--force", "HEAD:refs/heads/agent/f"]);
    assert!(!p.ok, "force push passed");
    assert!(p.stderr.contains("non-fast-forward"), "{}", p.stderr);
    assert_eq!(
        w.upstream_rev("refs/heads/agent/f").as_deref(),
        Some(first.as_str())
    );
}

#[test]
fn delete_is_refused() {
    let Some(w) = world("delete", GateOptions::default()) else {
        return;
    };
    let c = w.clone("agent");
    let first = c.commit("a.txt", "one\n", "one");
    assert!(c.push(&["HEAD:refs/heads/agent/d"]).ok);
    let p = c.push(&[":refs/heads/agent/d"]);
    assert!(!p.ok, "delete passed");
    assert_eq!(
        w.upstream_rev("refs/heads/agent/d").as_deref(),
        Some(first.as_str())
    );
}

#[test]
fn ref_outside_push_refs_is_refused() {
    let Some(w) = world("outside", GateOptions::default()) else {
        return;
    };
    let main_before = w.upstream_rev("refs/heads/main");
    let c = w.clone("agent");
    c.commit("a.txt", "one\n", "one");
    let p = c.push(&["HEAD:refs/heads/main"]);
    assert!(!p.ok, "push to main passed");
    assert!(p.stderr.contains("outside the refs"), "{}", p.stderr);
    let p = c.push(&["HEAD:refs/tags/v1"]);
    assert!(!p.ok, "tag push passed");
    assert_eq!(w.upstream_rev("refs/heads/main"), main_before);
    assert_eq!(w.upstream_rev("refs/tags/v1"), None);
}

#[test]
fn upstream_refusal_fails_the_agents_push() {
    let Some(w) = world("uprefuse", GateOptions::default()) else {
        return;
    };
    let c = w.clone("agent");
    c.commit("a.txt", "agent\n", "agent");
    // Someone else creates the branch upstream first; the gate's mirror does
    // not know yet, so only upstream can refuse.
    let theirs = w.upstream_commit("agent/shared", "b.txt", "theirs", "theirs");
    let p = c.push(&["HEAD:refs/heads/agent/shared"]);
    assert!(!p.ok, "push over someone else's upstream commit passed");
    assert!(p.stderr.contains("upstream"), "{}", p.stderr);
    assert_eq!(
        w.upstream_rev("refs/heads/agent/shared").as_deref(),
        Some(theirs.as_str())
    );
}

#[test]
fn concurrent_pushes_both_end_consistent() {
    let Some(w) = world("concurrent", GateOptions::default()) else {
        return;
    };
    let a = w.clone("a");
    let b = w.clone("b");
    let ha = a.commit("a.txt", "a\n", "a");
    let hb = b.commit("b.txt", "b\n", "b");
    // Same branch from both: exactly one wins.
    a.git_ok(&["branch", "same"]);
    b.git_ok(&["branch", "same"]);
    let (pa, pb, sa, sb) = std::thread::scope(|s| {
        let ta = s.spawn(|| a.push(&["HEAD:refs/heads/agent/a"]));
        let tb = s.spawn(|| b.push(&["HEAD:refs/heads/agent/b"]));
        let tsa = s.spawn(|| a.push(&["same:refs/heads/agent/same"]));
        let tsb = s.spawn(|| b.push(&["same:refs/heads/agent/same"]));
        (
            ta.join().unwrap(),
            tb.join().unwrap(),
            tsa.join().unwrap(),
            tsb.join().unwrap(),
        )
    });
    assert!(pa.ok, "{}", pa.stderr);
    assert!(pb.ok, "{}", pb.stderr);
    assert_eq!(
        w.upstream_rev("refs/heads/agent/a").as_deref(),
        Some(ha.as_str())
    );
    assert_eq!(
        w.upstream_rev("refs/heads/agent/b").as_deref(),
        Some(hb.as_str())
    );
    assert!(
        sa.ok ^ sb.ok,
        "same-branch pushes: a ok={} b ok={}\n{}\n{}",
        sa.ok,
        sb.ok,
        sa.stderr,
        sb.stderr
    );
    let winner = if sa.ok { &ha } else { &hb };
    assert_eq!(
        w.upstream_rev("refs/heads/agent/same").as_deref(),
        Some(winner.as_str())
    );
    // The gate's view (after its refresh) equals upstream's.
    let fresh = w.clone("fresh");
    let via_gate = fresh.git_ok(&["ls-remote", "origin"]);
    for line in w.upstream_refs().lines() {
        let (oid, name) = line.split_once(' ').unwrap();
        assert!(
            via_gate.contains(&format!("{oid}\t{name}")),
            "gate misses {line}:\n{via_gate}"
        );
    }
}

#[test]
fn fetch_sees_what_someone_else_pushed_upstream() {
    let Some(w) = world("fetch", GateOptions::default()) else {
        return;
    };
    let c = w.clone("agent");
    let theirs = w.upstream_commit("main", "news.txt", "fresh", "someone else");
    c.git_ok(&["fetch", "-q", "origin"]);
    assert_eq!(c.git_ok(&["rev-parse", "origin/main"]), theirs);
}

#[test]
fn wrong_host_key_refuses_to_start() {
    if !docker_or_skip("hostkey") {
        return;
    }
    let mut w = World::new("hostkey");
    let other = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";
    let log = w
        .try_start_gate(GateOptions {
            host_key: Some(other.into()),
            ..Default::default()
        })
        .expect_err("the gate started against an upstream with another host key");
    assert!(log.contains("host key mismatch"), "{log}");
    let code = common::run_ok(std::process::Command::new("docker").args([
        "inspect",
        "-f",
        "{{.State.ExitCode}}",
        w.gate.as_deref().unwrap(),
    ]));
    assert_ne!(
        code.trim(),
        "0",
        "the gate exited 0 after a host key mismatch"
    );
}

/// A minimal HTTP CONNECT proxy standing in for egress's tunnel route; it
/// prints every CONNECT it serves.
const CONNECT_PROXY: &str = r#"
import socket, threading
def pipe(a, b):
    try:
        while True:
            d = a.recv(65536)
            if not d:
                break
            b.sendall(d)
    except Exception:
        pass
    finally:
        try:
            b.shutdown(socket.SHUT_WR)
        except Exception:
            pass
def handle(c):
    head = b''
    while b'\r\n\r\n' not in head:
        d = c.recv(1)
        if not d:
            return
        head += d
    line = head.split(b'\r\n')[0].decode()
    print('CONNECT-SEEN ' + line, flush=True)
    host, port = line.split()[1].rsplit(':', 1)
    u = socket.create_connection((host, int(port)))
    c.sendall(b'HTTP/1.1 200 Connection established\r\n\r\n')
    threading.Thread(target=pipe, args=(c, u), daemon=True).start()
    pipe(u, c)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(('0.0.0.0', 3128))
s.listen(16)
print('PROXY-READY', flush=True)
while True:
    c, _ = s.accept()
    threading.Thread(target=handle, args=(c,), daemon=True).start()
"#;

#[test]
fn upstream_proxy_carries_ssh_through_connect() {
    if !docker_or_skip("proxy") {
        return;
    }
    let mut w = World::new("proxy");
    let sshd_image = common::images().sshd.clone();
    let proxy = w.run_container(
        "proxy",
        "egress",
        &[&sshd_image, "python3", "-u", "-c", CONNECT_PROXY],
    );
    w.wait_for_log(&proxy, "PROXY-READY");
    w.start_gate(GateOptions {
        global_extra: "upstream_proxy = \"egress:3128\"".into(),
        ..Default::default()
    });
    let c = w.clone("agent");
    let head = c.commit("a.txt", "through the tunnel\n", "tunnel");
    let p = c.push(&["HEAD:refs/heads/agent/tunnel"]);
    assert!(p.ok, "{}", p.stderr);
    assert_eq!(
        w.upstream_rev("refs/heads/agent/tunnel").as_deref(),
        Some(head.as_str())
    );
    eprintln!("gate log:\n{}", w.gate_logs());
    let log = common::run_ok(std::process::Command::new("docker").args(["logs", &proxy]));
    assert!(
        log.contains("CONNECT-SEEN CONNECT upstream.example.test:22 HTTP/1.1"),
        "the gate did not go through the proxy:\n{log}"
    );
}

#[test]
fn sigterm_stops_the_gate_promptly() {
    let Some(w) = world("sigterm", GateOptions::default()) else {
        return;
    };
    let gate = w.gate.clone().unwrap();
    let started = std::time::Instant::now();
    common::run_ok(std::process::Command::new("docker").args(["stop", "-t", "20", &gate]));
    let took = started.elapsed();
    let code = common::run_ok(std::process::Command::new("docker").args([
        "inspect",
        "-f",
        "{{.State.ExitCode}}",
        &gate,
    ]));
    assert_eq!(
        code.trim(),
        "0",
        "gate exit code after SIGTERM:\n{}",
        w.gate_logs()
    );
    assert!(
        took < std::time::Duration::from_secs(10),
        "docker stop took {took:?}"
    );
    assert!(w.gate_logs().contains("shutting down"), "{}", w.gate_logs());
}

#[test]
fn tag_message_with_a_secret_is_refused() {
    let Some(w) = world(
        "tag",
        GateOptions {
            remote_extra: "push_refs = [\"refs/heads/agent/*\", \"refs/tags/agent/*\"]".into(),
            ..Default::default()
        },
    ) else {
        return;
    };
    let c = w.clone("agent");
    c.commit("a.txt", "clean\n", "clean");
    c.git_ok(&[
        "tag",
        "-a",
        "agent/leaky",
        "-m",
        &format!("release notes {CANARY}"),
    ]);
    let p = c.push(&["refs/tags/agent/leaky"]);
    assert!(!p.ok, "tag message with the canary passed");
    assert!(p.stderr.contains("known-secret"), "{}", p.stderr);
    assert_eq!(w.upstream_rev("refs/tags/agent/leaky"), None);
    c.git_ok(&["tag", "-a", "agent/ok", "-m", "release notes"]);
    let p = c.push(&["refs/tags/agent/ok"]);
    assert!(p.ok, "clean annotated tag refused: {}", p.stderr);
    assert!(w.upstream_rev("refs/tags/agent/ok").is_some());
}

#[test]
fn merging_upstream_ci_changes_is_not_a_protected_change() {
    let Some(w) = world("merge", GateOptions::default()) else {
        return;
    };
    let c = w.clone("agent");
    c.git_ok(&["checkout", "-q", "-b", "work"]);
    c.commit("a.txt", "agent work\n", "agent work");
    // The maintainers change CI upstream; the agent merges main into its branch.
    w.upstream_commit(
        "main",
        ".github/workflows/ci.yml",
        "on: push",
        "maintainers: ci",
    );
    c.git_ok(&["fetch", "-q", "origin"]);
    c.git_ok(&["merge", "-q", "--no-edit", "origin/main"]);
    let head = c.git_ok(&["rev-parse", "HEAD"]);
    let p = c.push(&["HEAD:refs/heads/agent/merge"]);
    assert!(
        p.ok,
        "merging upstream's CI change was refused: {}",
        p.stderr
    );
    assert_eq!(
        w.upstream_rev("refs/heads/agent/merge").as_deref(),
        Some(head.as_str())
    );
    // The agent changing the same file in its own merge result is still refused.
    c.commit(
        ".github/workflows/ci.yml",
        "on: [push, pull_request]\n",
        "agent edits ci",
    );
    let p = c.push(&["HEAD:refs/heads/agent/merge"]);
    assert!(!p.ok, "the agent's own CI edit passed");
    assert!(
        p.stderr.contains(".github/workflows/ci.yml"),
        "{}",
        p.stderr
    );
}

/// Four refs whose commits swap two blobs that both carry the canary line:
/// Q (f = B2) → R (f = B1) and T (f = B1) → U (f = B2), with committer dates
/// R < U < T < Q, so that in date order each blob's canary line was "old" in
/// the blob the other branch's parent had at f.
#[test]
fn commit_order_cannot_excuse_a_secret() {
    let Some(w) = world("order", GateOptions::default()) else {
        return;
    };
    let before = w.upstream_refs();
    let c = w.clone("agent");
    let base = c.git_ok(&["rev-parse", "HEAD"]);
    let b1 = format!("token {CANARY}\n");
    let b2 = format!("token {CANARY}\nx\n");
    let at = |branch: &str, parent: &str, content: &str, date: &str| {
        c.git_ok(&["checkout", "-q", "-B", branch, parent]);
        std::fs::write(c.path.join("f"), content).unwrap();
        c.git_ok(&["add", "-A"]);
        let env = [("GIT_COMMITTER_DATE", date), ("GIT_AUTHOR_DATE", date)];
        c.git_env_ok(&["commit", "-q", "-m", "work"], &env);
        c.git_ok(&["rev-parse", "HEAD"])
    };
    let q = at("q", &base, &b2, "2030-01-04T00:00:00Z");
    at("r", &q, &b1, "2030-01-01T00:00:00Z");
    let t = at("t", &base, &b1, "2030-01-03T00:00:00Z");
    at("u", &t, &b2, "2030-01-02T00:00:00Z");
    let p = c.push(&[
        "q:refs/heads/agent/q",
        "r:refs/heads/agent/r",
        "t:refs/heads/agent/t",
        "u:refs/heads/agent/u",
    ]);
    eprintln!("agent saw:\n{}", p.stderr);
    assert!(!p.ok, "commit order excused the canary");
    assert!(p.stderr.contains("known-secret"), "{}", p.stderr);
    assert!(!p.stderr.contains(CANARY), "the canary was echoed back");
    assert_eq!(w.upstream_refs(), before, "upstream changed");
}

#[test]
fn canary_as_author_name_is_refused() {
    let Some(w) = world("author", GateOptions::default()) else {
        return;
    };
    let before = w.upstream_refs();
    let c = w.clone("agent");
    std::fs::write(c.path.join("a.txt"), "clean\n").unwrap();
    c.git_ok(&["add", "-A"]);
    c.git_ok(&[
        "-c",
        &format!("user.name={CANARY}"),
        "commit",
        "-q",
        "-m",
        "clean",
    ]);
    let p = c.push(&["HEAD:refs/heads/agent/author"]);
    eprintln!("agent saw:\n{}", p.stderr);
    assert!(!p.ok, "the canary as author name passed");
    assert!(p.stderr.contains("commit header"), "{}", p.stderr);
    assert!(!p.stderr.contains(CANARY), "the canary was echoed back");
    assert_eq!(w.upstream_refs(), before, "upstream changed");
    assert!(
        !w.gate_logs().contains(CANARY),
        "the canary reached the log"
    );
}

#[test]
fn canary_as_gitlink_path_is_refused() {
    let Some(w) = world("gitlink", GateOptions::default()) else {
        return;
    };
    let before = w.upstream_refs();
    let c = w.clone("agent");
    let info = format!("160000,{},vendor/{CANARY}", "1".repeat(40));
    c.git_ok(&["update-index", "--add", "--cacheinfo", &info]);
    c.git_ok(&["commit", "-q", "-m", "vendor a module"]);
    let p = c.push(&["HEAD:refs/heads/agent/gitlink"]);
    eprintln!("agent saw:\n{}", p.stderr);
    assert!(!p.ok, "a gitlink named with the canary passed");
    assert!(p.stderr.contains("gitlink"), "{}", p.stderr);
    assert_eq!(w.upstream_refs(), before, "upstream changed");
}

#[test]
fn canary_as_ref_name_is_refused() {
    let Some(w) = world("refname", GateOptions::default()) else {
        return;
    };
    let before = w.upstream_refs();
    let c = w.clone("agent");
    c.commit("a.txt", "clean\n", "clean");
    let p = c.push(&[&format!("HEAD:refs/heads/agent/{CANARY}")]);
    eprintln!("agent saw:\n{}", p.stderr);
    assert!(!p.ok, "a ref named with the canary passed");
    assert!(p.stderr.contains("ref name"), "{}", p.stderr);
    assert_eq!(w.upstream_refs(), before, "upstream changed");
    assert!(
        !w.gate_logs().contains(CANARY),
        "the canary reached the log"
    );
}

#[test]
fn notes_blobs_are_scanned() {
    let Some(w) = world(
        "notes",
        GateOptions {
            remote_extra: "push_refs = [\"refs/heads/agent/*\", \"refs/notes/*\"]".into(),
            ..Default::default()
        },
    ) else {
        return;
    };
    let c = w.clone("agent");
    c.git_ok(&["notes", "add", "-m", "reviewed"]);
    let p = c.push(&["refs/notes/commits"]);
    assert!(p.ok, "a clean note was refused: {}", p.stderr);
    let clean = w.upstream_rev("refs/notes/commits");
    assert!(clean.is_some());
    c.git_ok(&["notes", "add", "-f", "-m", &format!("token {CANARY}")]);
    let p = c.push(&["refs/notes/commits"]);
    eprintln!("agent saw:\n{}", p.stderr);
    assert!(!p.ok, "a note carrying the canary passed");
    assert!(p.stderr.contains("known-secret"), "{}", p.stderr);
    assert_eq!(w.upstream_rev("refs/notes/commits"), clean);
}
