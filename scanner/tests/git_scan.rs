//! git scanning against real repositories made with the git CLI, including
//! a real pre-receive hook (pushed objects still in quarantine).

use std::path::Path;
use std::process::Command;

use scanner::git::{self, Options, Place, Range};
use scanner::{KnownSecrets, Rules, ScanOptions, Scanner};

fn token(n: u8) -> String {
    format!("ghp_{}{}", "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z0", n % 10)
}

fn git(dir: &Path, args: &[&str]) -> String {
    git_with(dir, args, &[], None)
}

/// git with extra environment (dates, identities) and optional stdin.
fn git_with(dir: &Path, args: &[&str], env: &[(&str, &str)], input: Option<&str>) -> String {
    use std::io::Write;
    let mut cmd = Command::new("git");
    cmd.args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .env("GIT_AUTHOR_NAME", "T")
        .env("GIT_AUTHOR_EMAIL", "t@example.com")
        .env("GIT_COMMITTER_NAME", "T")
        .env("GIT_COMMITTER_EMAIL", "t@example.com")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("git runs");
    let mut stdin = child.stdin.take().expect("piped stdin");
    stdin
        .write_all(input.unwrap_or("").as_bytes())
        .expect("write git's stdin");
    drop(stdin);
    let out = child.wait_with_output().expect("git runs");
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

/// The bottle's canary, as git-gate knows it (a known secret, 30 bytes).
const CANARY: &str = "bbcanary-7f3k29xq81mzv4lw0p6dQ";

fn canary_scanner() -> Scanner {
    Scanner::new(
        Rules::builtin(),
        KnownSecrets::new([CANARY.as_bytes().to_vec()]),
        ScanOptions { decode: true },
    )
}

/// The scan git-gate runs in pre-receive: commits new since `existing`,
/// whose trees are the only baseline.
fn gate_scan(dir: &Path, tips: &[String], existing: &[String]) -> Vec<scanner::GitFinding> {
    git::scan_with(
        dir,
        &Range::NewSince {
            tips: tips.to_vec(),
            existing: existing.to_vec(),
        },
        &canary_scanner(),
        &Options::untrusted(existing.to_vec()),
    )
    .unwrap()
    .findings
}

/// A repository with one clean commit on `main`, the "upstream" side.
fn upstream_repo() -> (tempfile::TempDir, String) {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    git(d, &["init", "-q", "-b", "main"]);
    let base = commit(d, &[("README", "hello\n")], "base");
    (tmp, base)
}

fn commit_dated(dir: &Path, parent: &str, file: &str, content: &str, date: &str) -> String {
    git(dir, &["checkout", "-q", "--detach", parent]);
    std::fs::write(dir.join(file), content).unwrap();
    git(dir, &["add", "-A"]);
    let env = [("GIT_COMMITTER_DATE", date), ("GIT_AUTHOR_DATE", date)];
    git_with(dir, &["commit", "-q", "-m", "work"], &env, None);
    git(dir, &["rev-parse", "HEAD"])
}

/// Four refs whose commits swap two blobs that both carry the canary line:
/// Q (f = B2) → R (f = B1) and T (f = B1) → U (f = B2), with committer dates
/// R < U < T < Q. Processed in date order, each blob's canary line is "old"
/// in the blob the other branch's parent had at f.
#[test]
fn commit_order_cannot_excuse_a_secret() {
    let (tmp, base) = upstream_repo();
    let d = tmp.path();
    let b1 = format!("token {CANARY}\n");
    let b2 = format!("token {CANARY}\nx\n");
    let q = commit_dated(d, &base, "f", &b2, "2030-01-04T00:00:00Z");
    let r = commit_dated(d, &q, "f", &b1, "2030-01-01T00:00:00Z");
    let t = commit_dated(d, &base, "f", &b1, "2030-01-03T00:00:00Z");
    let u = commit_dated(d, &t, "f", &b2, "2030-01-02T00:00:00Z");
    let tips = [q, r, t, u];
    let found = gate_scan(d, &tips, std::slice::from_ref(&base));
    assert!(
        found
            .iter()
            .any(|g| g.path.as_deref() == Some("f") && g.finding.rule_id == "known-secret"),
        "the canary in f passed: {found:?}"
    );
    assert!(found.iter().all(|g| !format!("{g:?}").contains(CANARY)));
    // Each of the two blobs once, at f.
    assert_eq!(found.len(), 2, "{found:?}");
    // The trusted-history default keeps gitleaks' attribution, blind spot included.
    let range = Range::NewSince {
        tips: tips.to_vec(),
        existing: vec![base],
    };
    let cli = git::scan(d, &range, &canary_scanner()).unwrap();
    assert!(cli.is_empty(), "{cli:?}");
}

/// A line already upstream at the same path is not the push's leak; the same
/// line at a new path is.
#[test]
fn line_already_upstream_at_the_same_path_is_excused() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    git(d, &["init", "-q", "-b", "main"]);
    let fixture = format!("k={CANARY}\n");
    let base = commit(d, &[("tests/fixture.txt", &fixture)], "upstream fixture");
    let edit = commit(
        d,
        &[("tests/fixture.txt", &format!("{fixture}more\n"))],
        "edit",
    );
    assert!(
        gate_scan(d, std::slice::from_ref(&edit), std::slice::from_ref(&base)).is_empty(),
        "a line upstream already has was reported"
    );
    let copy = commit(d, &[("src/leak.txt", &fixture)], "copy");
    let found = gate_scan(d, &[copy], &[base]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].path.as_deref(), Some("src/leak.txt"));
}

#[test]
fn canary_as_author_name_is_found() {
    let (tmp, base) = upstream_repo();
    let d = tmp.path();
    std::fs::write(d.join("a.txt"), "clean\n").unwrap();
    git(d, &["add", "-A"]);
    git_with(
        d,
        &["commit", "-q", "-m", "clean"],
        &[("GIT_AUTHOR_NAME", CANARY)],
        None,
    );
    let head = git(d, &["rev-parse", "HEAD"]);
    let found = gate_scan(d, std::slice::from_ref(&head), &[base]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].commit, head);
    assert_eq!(found[0].place, Place::CommitHeader);
    assert_eq!(
        found[0].finding.line, 3,
        "author is the header's third line"
    );
}

#[test]
fn canary_as_committer_email_is_found() {
    let (tmp, base) = upstream_repo();
    let d = tmp.path();
    std::fs::write(d.join("a.txt"), "clean\n").unwrap();
    git(d, &["add", "-A"]);
    let email = format!("{CANARY}@example.com");
    git_with(
        d,
        &["commit", "-q", "-m", "clean"],
        &[("GIT_COMMITTER_EMAIL", &email)],
        None,
    );
    let head = git(d, &["rev-parse", "HEAD"]);
    let found = gate_scan(d, &[head], &[base]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].place, Place::CommitHeader);
    assert_eq!(
        found[0].finding.line, 4,
        "committer is the header's fourth line"
    );
}

#[test]
fn canary_as_gitlink_path_is_found() {
    let (tmp, base) = upstream_repo();
    let d = tmp.path();
    let link = format!("vendor/{CANARY}");
    let id = "1".repeat(40);
    git(
        d,
        &[
            "update-index",
            "--add",
            "--cacheinfo",
            &format!("160000,{id},{link}"),
        ],
    );
    git(d, &["commit", "-q", "-m", "submodule"]);
    let head = git(d, &["rev-parse", "HEAD"]);
    let found = gate_scan(d, &[head], &[base]);
    assert!(!found.is_empty(), "a gitlink named with the canary passed");
    assert!(
        found
            .iter()
            .all(|g| g.path.as_deref() == Some(link.as_str()) && g.place == Place::GitlinkPath),
        "{found:?}"
    );
    let shown = found[0].shown_path().unwrap();
    assert!(
        shown.starts_with("vendor/") && !shown.contains(CANARY),
        "{shown}"
    );
}

/// Gitlink ids are 20 bytes of the pusher's choosing: the canary split over
/// two of them, in tree order.
#[test]
fn canary_split_over_gitlink_ids_is_found() {
    let (tmp, base) = upstream_repo();
    let d = tmp.path();
    let mut bytes = CANARY.as_bytes().to_vec();
    bytes.resize(40, b'.');
    for (i, chunk) in bytes.chunks(20).enumerate() {
        let info = format!("160000,{},sub{i}", hex::encode(chunk));
        git(d, &["update-index", "--add", "--cacheinfo", &info]);
    }
    git(d, &["commit", "-q", "-m", "submodules"]);
    let head = git(d, &["rev-parse", "HEAD"]);
    let found = gate_scan(d, &[head], &[base]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].place, Place::GitlinkIds);
    assert_eq!(found[0].path.as_deref(), Some(""));
}

/// An empty tree has no blob: only its name can carry the secret.
#[test]
fn canary_as_empty_directory_name_is_found() {
    let (tmp, base) = upstream_repo();
    let d = tmp.path();
    let empty = git(d, &["mktree"]);
    let mut listing = git(d, &["ls-tree", &base]);
    listing.push_str(&format!("\n040000 tree {empty}\t{CANARY}\n"));
    let tree = git_with(d, &["mktree"], &[], Some(&listing));
    let c = git(d, &["commit-tree", &tree, "-p", &base, "-m", "empty dir"]);
    let found = gate_scan(d, &[c], &[base]);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].path.as_deref(), Some(CANARY));
    assert_eq!(found[0].place, Place::DirectoryName);
}

#[test]
fn canary_in_tag_name_and_tagger_is_found() {
    let (tmp, base) = upstream_repo();
    let d = tmp.path();
    let name = format!("v1-{CANARY}");
    git_with(
        d,
        &["tag", "-a", &name, "-m", "release"],
        &[("GIT_COMMITTER_NAME", CANARY)],
        None,
    );
    let tag = git(d, &["rev-parse", &name]);
    let found = gate_scan(d, std::slice::from_ref(&tag), &[]);
    let in_tag: Vec<_> = found.iter().filter(|g| g.commit == tag).collect();
    assert_eq!(in_tag.len(), 2, "tag name and tagger: {found:?}");
    assert!(in_tag.iter().all(|g| g.place == Place::TagHeader));
    assert_eq!((in_tag[0].finding.line, in_tag[1].finding.line), (3, 4));
    let _ = base;
}
