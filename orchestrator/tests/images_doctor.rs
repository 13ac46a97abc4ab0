//! `orchestrator doctor`: every problem comes with its fix, and a missing
//! engine is a non-zero exit.

use std::process::Command;

#[test]
fn unreachable_engine_fails_with_a_fix() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .arg("doctor")
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .env("BOT_BOTTLE_HOME", dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(
        t.contains("FAIL  engine") && t.contains("/nonexistent/docker.sock"),
        "{t}"
    );
    assert!(t.contains("fix: start the Docker daemon"), "{t}");
    assert!(t.contains("free disk"), "{t}");
}

#[test]
fn reachable_engine_reports_isolation_mode() {
    let probe = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output();
    let Some(p) = probe.ok().filter(|p| p.status.success()) else {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but no Docker engine");
        }
        eprintln!("skipping: no Docker engine");
        return;
    };
    let version = String::from_utf8_lossy(&p.stdout).trim().to_string();
    let major: u32 = version.split('.').next().unwrap().parse().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .arg("doctor")
        .output()
        .unwrap();
    let t = String::from_utf8_lossy(&out.stdout);
    assert!(t.contains("ok    engine"), "{t}");
    assert!(t.contains(&version), "{t}");
    let mode = if major >= 28 {
        "isolated-gateway"
    } else {
        "inhibit-ipv4"
    };
    assert!(t.contains(mode), "{t}");
    // Every non-ok line is followed by its fix, except measurements it could not take.
    let lines: Vec<&str> = t.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        if l.starts_with("FAIL") {
            assert!(
                lines.get(i + 1).is_some_and(|n| n.contains("fix:")),
                "no fix after {l:?}"
            );
        }
    }
    assert_eq!(out.status.success(), !t.contains("\nFAIL"), "{t}");
}
