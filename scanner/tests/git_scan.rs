//! git scanning against real repositories made with the git CLI, including
//! a real pre-receive hook (pushed objects still in quarantine).

use std::path::Path;
use std::process::Command;

use scanner::git::{self, Range};
use scanner::{KnownSecrets, Rules, ScanOptions, Scanner};

fn token(n: u8) -> String {
    format!("ghp_{}{}", "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z0", n % 10)
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .env("GIT_AUTHOR_NAME", "T")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "T")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn commit(dir: &Path, files: &[(&str, &str)], msg: &str) -> String {
    for (p, c) in files {
        let p = dir.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, c).unwrap();
    }
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", msg]);
    git(dir, &["rev-parse", "HEAD"])
}

fn builtin() -> Scanner {
    Scanner::new(
        Rules::builtin(),
        KnownSecrets::empty(),
        ScanOptions::default(),
    )
}

struct Repo {
    _tmp: tempfile::TempDir,
    commits: Vec<String>,
}

fn history() -> Repo {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    git(d, &["init", "-q", "-b", "main"]);
    let c1 = commit(d, &[("a.txt", "hello\n")], "first");
    let secret = format!("one\ntwo\nGH_TOKEN={}\n", token(1));
    let c2 = commit(d, &[("dir/b.txt", &secret)], "add b");
    let c3 = commit(d, &[("dir/b.txt", &format!("{secret}more\n"))], "edit b");
    let c4 = commit(
        d,
        &[("a.txt", "hello again\n")],
        &format!("oops {}", token(2)),
    );
    let c5 = commit(d, &[("copy/b.txt", &format!("{secret}more\n"))], "copy b");
    Repo {
        _tmp: tmp,
        commits: vec![c1, c2, c3, c4, c5],
    }
}

#[test]
fn all_history_reports_each_secret_once_where_introduced() {
    let r = history();
    let dir = r._tmp.path();
    let found = git::scan(dir, &Range::All, &builtin()).unwrap();
    let got: Vec<(String, Option<String>, usize)> = found
        .iter()
        .map(|g| (g.commit.clone(), g.path.clone(), g.finding.line))
        .collect();
    assert_eq!(
        got,
        vec![
            (r.commits[1].clone(), Some("dir/b.txt".into()), 3),
            (r.commits[3].clone(), None, 1)
        ],
        "{found:?}"
    );
    assert!(found.iter().all(|g| g.finding.rule_id == "github-pat"));
    assert_eq!(
        found[0].gitleaks_fingerprint(),
        format!("{}:dir/b.txt:github-pat:3", r.commits[1])
    );
}

#[test]
fn ranges() {
    let r = history();
    let dir = r._tmp.path();
    let spec = format!("{}..HEAD", r.commits[1]);
    let found = git::scan(dir, &Range::Spec(spec), &builtin()).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].path, None);
    let found = git::scan(
        dir,
        &Range::NewSince {
            tips: vec![r.commits[4].clone()],
            existing: vec!["refs/heads/nope".into(), r.commits[3].clone()],
        },
        &builtin(),
    )
    .unwrap();
    // Like gitleaks (added lines), a copy to a new path is reported again.
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].path.as_deref(), Some("copy/b.txt"));
    assert_eq!(found[0].commit, r.commits[4]);
    let found = git::scan(dir, &Range::Spec("main~3".into()), &builtin()).unwrap();
    assert_eq!(found.len(), 1);
    assert!(git::scan(dir, &Range::Spec("nosuchref..HEAD".into()), &builtin()).is_err());
}

#[test]
fn annotated_tags_are_peeled_and_their_messages_scanned() {
    let r = history();
    let d = r._tmp.path();
    git(
        d,
        &[
            "tag",
            "-a",
            "v1",
            "-m",
            &format!("release {}", token(5)),
            &r.commits[0],
        ],
    );
    let tag = git(d, &["rev-parse", "v1"]);
    let found = git::scan(
        d,
        &Range::NewSince {
            tips: vec![tag.clone()],
            existing: vec![],
        },
        &builtin(),
    )
    .unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(
        (found[0].commit.as_str(), found[0].path.as_deref()),
        (tag.as_str(), None)
    );
    // Tags of existing commits hide them like the commits would.
    let found = git::scan(
        d,
        &Range::NewSince {
            tips: vec![r.commits[4].clone()],
            existing: vec!["v1".into()],
        },
        &builtin(),
    )
    .unwrap();
    assert_eq!(found.len(), 2, "{found:?}");
}

#[test]
fn merge_introducing_a_secret_is_scanned() {
    let r = history();
    let d = r._tmp.path();
    git(d, &["checkout", "-q", "-b", "side", &r.commits[0]]);
    commit(d, &[("side.txt", "side\n")], "side");
    git(d, &["checkout", "-q", "main"]);
    git(d, &["merge", "-q", "--no-ff", "--no-commit", "side"]);
    std::fs::write(d.join("evil.txt"), format!("k={}\n", token(3))).unwrap();
    git(d, &["add", "-A"]);
    git(d, &["commit", "-q", "-m", "merge"]);
    let spec = format!("{}..HEAD", r.commits[4]);
    let found = git::scan(d, &Range::Spec(spec), &builtin()).unwrap();
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].path.as_deref(), Some("evil.txt"));
}

#[test]
fn pre_receive_hook_sees_quarantined_objects() {
    let tmp = tempfile::tempdir().unwrap();
    let server = tmp.path().join("server.git");
    let work = tmp.path().join("work");
    std::fs::create_dir_all(&server).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    git(&server, &["init", "-q", "--bare"]);
    let hook = server.join("hooks/pre-receive");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nset -e\nwhile read old new ref; do\n  if [ \"$old\" = 0000000000000000000000000000000000000000 ]; then range=\"$new\"; else range=\"$old..$new\"; fi\n  \"{}\" git . --log-opts \"$range\" -v\ndone\n",
            env!("CARGO_BIN_EXE_scanner")
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();

    git(&work, &["init", "-q", "-b", "main"]);
    commit(&work, &[("a.txt", "clean\n")], "clean");
    git(&work, &["push", "-q", server.to_str().unwrap(), "main"]);

    commit(&work, &[("b.txt", &format!("t={}\n", token(4)))], "leak");
    let out = Command::new("git")
        .args(["push", server.to_str().unwrap(), "main"])
        .current_dir(&work)
        .env("HOME", &work)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "push with a secret was accepted: {stderr}"
    );
    assert!(
        stderr.contains("github-pat") && stderr.contains("b.txt:1"),
        "{stderr}"
    );
    assert!(!stderr.contains(&token(4)), "the secret itself was printed");
    // The ref did not move and the objects were discarded.
    let server_head = git(&server, &["rev-parse", "main"]);
    assert_ne!(server_head, git(&work, &["rev-parse", "HEAD"]));
}

#[test]
fn cli_exit_codes_and_reports() {
    let r = history();
    let dir = r._tmp.path();
    let bin = env!("CARGO_BIN_EXE_scanner");
    let report = dir.join("report.sarif");
    let out = Command::new(bin)
        .args([
            "git",
            dir.to_str().unwrap(),
            "--report-format",
            "sarif",
            "--report-path",
            report.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let sarif: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(sarif["runs"][0]["results"].as_array().unwrap().len(), 2);
    let out = Command::new(bin)
        .args(["git", dir.to_str().unwrap(), "--exit-code", "7", "-r", "-"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(7));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json[0]["RuleID"], "github-pat");
    assert!(!String::from_utf8_lossy(&out.stdout).contains(&token(1)));
    let out = Command::new(bin)
        .args(["dir", dir.join("a.txt").to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[[rules]]\nid = \"x\"\nregex = '('\n").unwrap();
    let out = Command::new(bin)
        .args(["--config", bad.to_str().unwrap(), "stdin"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("\"x\""));
    let out = Command::new(bin).args(["frobnicate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
