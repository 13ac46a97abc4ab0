//! The two hooks git runs the gate binary as:
//!
//! - `pre-receive` (receive-pack, objects still in quarantine): a secret scan
//!   of the pushed ref names, ref policy, protected paths and a secret scan of
//!   every new commit, then the push upstream; the agent's push is
//!   acknowledged only if upstream took it.
//! - `access-hook` (git daemon, before each service): refresh the mirror
//!   from upstream before a fetch is served.
//!
//! The commit scan covers every place a pushed object can carry bytes (file
//! contents and names, commit and tag headers and messages, gitlinks, empty
//! directories), and a finding line is excused only by the same line at the
//! same path in a commit that was upstream before the push: the trees of
//! every ref the mirror had when the hook started (see `scanner::git`). Never
//! by a parent, object or ref the push itself brings, whose order and content
//! the agent chooses.
//!
//! Never: push anything upstream after a refusal, take an allowed
//! fingerprint from anywhere but the config, or print a whole secret (a ref
//! name or path that holds one is shown redacted, in logs too).

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::config::{Config, Remote, RulesSource};
use crate::error::Error;
use crate::{mirror, upstream};

/// Prefix of every line the gate prints to the agent (git adds `remote: `).
const TAG: &str = "git-gate:";

/// One line of pre-receive's stdin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefUpdate {
    pub old: String,
    pub new: String,
    pub name: String,
}

fn is_zero(oid: &str) -> bool {
    oid.bytes().all(|b| b == b'0')
}

/// Parse pre-receive's stdin (`<old> <new> <ref>` per line).
pub fn parse_updates(input: &str) -> Result<Vec<RefUpdate>, Error> {
    input
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut it = line.split(' ');
            match (it.next(), it.next(), it.next(), it.next()) {
                (Some(old), Some(new), Some(name), None)
                    if is_oid(old) && is_oid(new) && !name.is_empty() =>
                {
                    Ok(RefUpdate {
                        old: old.to_string(),
                        new: new.to_string(),
                        name: name.to_string(),
                    })
                }
                _ => Err(Error::Hook(format!(
                    "unexpected pre-receive input line {line:?}"
                ))),
            }
        })
        .collect()
}

fn is_oid(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Which remote a hook runs for: the mirror directory it was started in.
pub fn remote_for_dir<'a>(config: &'a Config, dir: &Path) -> Result<&'a Remote, Error> {
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    config
        .remote
        .iter()
        .find(|r| {
            let m = config.mirror_dir(r);
            m.canonicalize().unwrap_or(m) == dir
        })
        .ok_or_else(|| {
            Error::Hook(format!(
                "{} is not the mirror of any configured remote",
                dir.display()
            ))
        })
}

/// git in the current (quarantined) repository, keeping the receive-pack
/// environment so pushed objects are visible.
fn git_here(args: &[&str]) -> Command {
    let mut cmd = Command::new("git");
    cmd.args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("LC_ALL", "C")
        .stdin(Stdio::null());
    cmd
}

fn run(args: &[&str]) -> Result<String, Error> {
    let out = upstream::output(&mut git_here(args), "git")?;
    if !out.status.success() {
        return Err(Error::Git {
            command: format!("git {}", args.join(" ")),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn object_type(oid: &str) -> Result<String, Error> {
    Ok(run(&["cat-file", "-t", oid])?.trim().to_string())
}

fn is_ancestor(old: &str, new: &str) -> Result<bool, Error> {
    let out = upstream::output(
        &mut git_here(&["merge-base", "--is-ancestor", old, new]),
        "git merge-base",
    )?;
    match out.status.code() {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        _ => Err(Error::Git {
            command: "git merge-base --is-ancestor".into(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        }),
    }
}

/// Ref-level policy: returns one refusal message per offending update.
pub fn check_refs(remote: &Remote, updates: &[RefUpdate]) -> Result<Vec<String>, Error> {
    let mut refusals = Vec::new();
    for u in updates {
        if !remote.push_allowed(&u.name) {
            let allowed: Vec<&str> = remote.push_refs.iter().map(|p| p.as_str()).collect();
            refusals.push(format!(
                "{} is outside the refs this bottle may push ({})",
                u.name,
                allowed.join(", ")
            ));
            continue;
        }
        if is_zero(&u.new) {
            refusals.push(format!(
                "deleting {} is refused: the gate never deletes upstream refs",
                u.name
            ));
            continue;
        }
        let kind = object_type(&u.new)?;
        let is_tag_ref = u.name.starts_with("refs/tags/");
        if kind != "commit" && !(is_tag_ref && kind == "tag") {
            refusals.push(format!(
                "{} would point at a {kind}; only commits (and tags under refs/tags/) are accepted",
                u.name
            ));
            continue;
        }
        if !is_zero(&u.old) {
            if is_tag_ref {
                refusals.push(format!("moving the existing tag {} is refused", u.name));
            } else if !is_ancestor(&u.old, &u.new)? {
                refusals.push(format!(
                    "non-fast-forward update of {} is refused (force pushes are never forwarded); \
                     fetch, rebase or merge, and push again",
                    u.name
                ));
            }
        }
    }
    Ok(refusals)
}

/// Oids of every ref the mirror has now (what is already upstream).
fn existing_oids() -> Result<Vec<String>, Error> {
    Ok(run(&["for-each-ref", "--format=%(objectname)"])?
        .lines()
        .map(str::to_string)
        .collect::<HashSet<_>>()
        .into_iter()
        .collect())
}

/// Commits reachable from `tips` and from no existing ref.
fn new_commits(tips: &[String]) -> Result<Vec<String>, Error> {
    let mut args = vec!["rev-list"];
    args.extend(tips.iter().map(String::as_str));
    args.extend(["--not", "--all"]);
    Ok(run(&args)?.lines().map(str::to_string).collect())
}

/// For each new commit, the paths it changes relative to all its parents
/// (a merge only "changes" what differs from every parent), checked
/// against the protected paths.
pub fn check_paths(remote: &Remote, commits: &[String]) -> Result<Vec<String>, Error> {
    if commits.is_empty() || remote.protected_paths.is_empty() {
        return Ok(Vec::new());
    }
    let mut child = git_here(&[
        "diff-tree",
        "--stdin",
        "-z",
        "-r",
        "--name-only",
        "--root",
        "-c",
        "--no-renames",
    ])
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .map_err(|source| Error::Spawn {
        program: "git diff-tree".into(),
        source,
    })?;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input: String = commits.iter().map(|c| format!("{c}\n")).collect();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(input.as_bytes());
    });
    let out = child.wait_with_output().map_err(|source| Error::Spawn {
        program: "git diff-tree".into(),
        source,
    })?;
    let _ = writer.join();
    if !out.status.success() {
        return Err(Error::Git {
            command: "git diff-tree".into(),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    let known: HashSet<&str> = commits.iter().map(String::as_str).collect();
    let mut current = "";
    let mut refusals = Vec::new();
    let mut seen = HashSet::new();
    for token in out.stdout.split(|&b| b == 0) {
        let token = String::from_utf8_lossy(token);
        if token.is_empty() {
            continue;
        }
        if let Some(c) = known.get(token.as_ref()) {
            current = c;
            continue;
        }
        if let Some(pattern) = remote.protected(&token) {
            if seen.insert(token.to_string()) {
                refusals.push(format!(
                    "commit {} changes the protected path {} (pattern {}): CI configuration \
                     runs with the repository's secrets and cannot be changed from the bottle",
                    short(current),
                    token,
                    pattern
                ));
            }
        }
    }
    Ok(refusals)
}

fn short(oid: &str) -> &str {
    &oid[..oid.len().min(12)]
}

/// Build the scanner the config asks for.
pub fn scanner(config: &Config) -> Result<scanner::Scanner, Error> {
    let rules = match &config.rules {
        RulesSource::Builtin => scanner::Rules::builtin(),
        RulesSource::File(p) => {
            scanner::Rules::from_gitleaks_file(p).map_err(|e| Error::Rules(e.to_string()))?
        }
    };
    let known = match &config.known_secrets_file {
        Some(p) => scanner::KnownSecrets::from_file(p).map_err(|e| Error::Rules(e.to_string()))?,
        None => scanner::KnownSecrets::empty(),
    };
    Ok(scanner::Scanner::new(
        rules,
        known,
        scanner::ScanOptions { decode: true },
    ))
}

/// Findings in the names of the updated refs: a ref name is bytes the agent
/// sends upstream like any other. The lines show the name redacted.
pub fn check_ref_names(
    remote: &Remote,
    scanner: &scanner::Scanner,
    updates: &[RefUpdate],
) -> Vec<String> {
    let mut lines = Vec::new();
    for u in updates {
        for f in scanner.scan(u.name.as_bytes()) {
            if remote.fingerprint_allowed(&[f.fingerprint.as_str()]) {
                continue;
            }
            lines.push(format!(
                "secret in ref name {}: rule {} ({}), value {} [fingerprint {}]",
                scanner::redact_span(&u.name, &f),
                f.rule_id,
                f.description,
                f.redacted,
                f.fingerprint
            ));
        }
    }
    lines
}

/// Scan every new commit; findings whose fingerprint the operator accepted
/// are dropped. Returns the refusal lines. Only the trees of `existing`
/// (what upstream had before this push) may excuse a finding line.
pub fn check_secrets(
    repo: &Path,
    remote: &Remote,
    scanner: &scanner::Scanner,
    tips: &[String],
    existing: &[String],
) -> Result<Vec<String>, Error> {
    use scanner::git::Place;
    let range = scanner::git::Range::NewSince {
        tips: tips.to_vec(),
        existing: existing.to_vec(),
    };
    let opts = scanner::git::Options::untrusted(existing.to_vec());
    let findings = scanner::git::scan_with(repo, &range, scanner, &opts)
        .map_err(|e| Error::Scan {
            repo: repo.to_path_buf(),
            message: e.to_string(),
        })?
        .findings;
    // A path that is itself a finding is shown redacted wherever it appears.
    let mut shown: HashMap<String, String> = HashMap::new();
    for f in &findings {
        if let (Some(p), Some(s)) = (&f.path, f.shown_path()) {
            if &s != p {
                shown.insert(p.clone(), s);
            }
        }
    }
    let mut lines = Vec::new();
    for f in findings {
        let gitleaks = f.gitleaks_fingerprint();
        if remote.fingerprint_allowed(&[f.finding.fingerprint.as_str(), gitleaks.as_str()]) {
            tracing::info!(remote = %remote.name, commit = %f.commit, rule = %f.finding.rule_id,
                fingerprint = %f.finding.fingerprint, "accepted finding (allow_fingerprints)");
            continue;
        }
        let path = f
            .path
            .as_ref()
            .map(|p| shown.get(p).unwrap_or(p).clone())
            .unwrap_or_default();
        let line = f.finding.line;
        let (object, place) = match f.place {
            Place::File => ("commit", format!("file {path} line {line}")),
            Place::FileName => ("commit", format!("file name {path}")),
            Place::DirectoryName => ("commit", format!("directory name {path}")),
            Place::GitlinkPath => ("commit", format!("gitlink path {path}")),
            Place::GitlinkId => ("commit", format!("gitlink id of {path}")),
            Place::GitlinkIds if path.is_empty() => (
                "commit",
                "gitlink ids of the top directory read together".to_string(),
            ),
            Place::GitlinkIds => (
                "commit",
                format!("gitlink ids of directory {path} read together"),
            ),
            Place::CommitHeader => ("commit", format!("commit header line {line}")),
            Place::CommitMessage => ("commit", format!("commit message line {line}")),
            Place::TagHeader => ("tag", format!("tag header line {line}")),
            Place::TagMessage => ("tag", format!("tag message line {line}")),
        };
        lines.push(format!(
            "secret in {object} {} {place}: rule {} ({}), value {} [fingerprint {}]",
            short(&f.commit),
            f.finding.rule_id,
            f.finding.description,
            f.finding.redacted,
            f.finding.fingerprint
        ));
    }
    Ok(lines)
}

/// The commit each update points to (annotated tags peeled, nested ones
/// too), and the findings in the messages of the tag objects on the way.
fn peel_tags(
    remote: &Remote,
    scanner: &scanner::Scanner,
    updates: &[RefUpdate],
) -> Result<(Vec<String>, Vec<String>), Error> {
    let mut tips = Vec::new();
    let mut lines = Vec::new();
    for u in updates {
        let mut oid = u.new.clone();
        for _ in 0..16 {
            if object_type(&oid)? != "tag" {
                break;
            }
            let body = upstream::output(&mut git_here(&["cat-file", "tag", &oid]), "git cat-file")?;
            if !body.status.success() {
                return Err(Error::Git {
                    command: format!("git cat-file tag {oid}"),
                    message: String::from_utf8_lossy(&body.stderr).trim().to_string(),
                });
            }
            for f in scanner.scan(&body.stdout) {
                let gitleaks = format!("{oid}::{}:{}", f.rule_id, f.line);
                if remote.fingerprint_allowed(&[f.fingerprint.as_str(), gitleaks.as_str()]) {
                    continue;
                }
                lines.push(format!(
                    "secret in tag {} ({}) line {}: rule {} ({}), value {} [fingerprint {}]",
                    short(&oid),
                    u.name,
                    f.line,
                    f.rule_id,
                    f.description,
                    f.redacted,
                    f.fingerprint
                ));
            }
            let target = String::from_utf8_lossy(&body.stdout)
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("object "))
                .map(str::to_string)
                .ok_or_else(|| Error::Hook(format!("tag {oid} names no object")))?;
            oid = target;
        }
        if object_type(&oid)? != "commit" {
            return Err(Error::Hook(format!(
                "{} points (through its tags) at a {}, not a commit",
                u.name,
                object_type(&oid)?
            )));
        }
        tips.push(oid);
    }
    Ok((tips, lines))
}

/// Push the accepted updates to upstream, atomically, from the quarantined
/// repository. upstream's own messages reach the agent through our stderr.
fn push_upstream(config: &Config, remote: &Remote, updates: &[RefUpdate]) -> Result<bool, Error> {
    let mut cmd = upstream::git(config, remote)?;
    cmd.args(["push", "--atomic", "--no-verify", "--quiet"])
        .arg(remote.upstream.to_string())
        .args(updates.iter().map(|u| format!("{}:{}", u.new, u.name)));
    // Our stdout is the agent's sideband too, but keep it for our own lines.
    cmd.stdout(Stdio::null()).stderr(Stdio::piped());
    let out = cmd.output().map_err(|source| Error::Spawn {
        program: "git push".into(),
        source,
    })?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() {
        return Ok(true);
    }
    let mut err = std::io::stderr().lock();
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        let _ = writeln!(err, "{TAG} upstream: {line}");
    }
    if let Error::Upstream { problem, .. } = upstream::upstream_error(remote, &out.stderr) {
        tracing::warn!(remote = %remote.name, problem = %problem, "upstream refused the push");
    }
    Ok(false)
}

/// The whole pre-receive decision for `remote`. Writes the agent-facing
/// lines to `msg`; returns whether the push may be acknowledged.
pub fn pre_receive(
    config: &Config,
    remote: &Remote,
    repo: &Path,
    updates: &[RefUpdate],
    msg: &mut dyn Write,
) -> Result<bool, Error> {
    let _lock = mirror::lock(config, remote)?;
    let scanner = scanner(config)?;
    // Before anything repeats a ref name (refusals, logs): it may be the secret.
    let findings = check_ref_names(remote, &scanner, updates);
    if !findings.is_empty() {
        report(msg, "push refused", &findings);
        tracing::warn!(remote = %remote.name, findings = findings.len(),
            "push refused: secret in a ref name");
        return Ok(false);
    }
    let refusals = check_refs(remote, updates)?;
    if !refusals.is_empty() {
        report(msg, "push refused", &refusals);
        tracing::warn!(remote = %remote.name, refusals = ?refusals, "push refused by ref policy");
        return Ok(false);
    }
    let started = std::time::Instant::now();
    // Annotated tags: their messages are scanned here, the history walk
    // starts at the commits they point to.
    let (tips, mut findings) = peel_tags(remote, &scanner, updates)?;
    let existing = existing_oids()?;
    let commits = new_commits(&tips)?;
    let mut refusals = check_paths(remote, &commits)?;
    findings.extend(check_secrets(repo, remote, &scanner, &tips, &existing)?);
    tracing::info!(remote = %remote.name, commits = commits.len(), findings = findings.len(),
        scan_ms = started.elapsed().as_millis() as u64, "scanned push");
    if !findings.is_empty() {
        refusals.push(format!(
            "{} secret finding(s) in the pushed commits; remove them from every commit \
             (rewrite the branch), or ask the operator to accept a false positive's fingerprint",
            findings.len()
        ));
        refusals.extend(findings);
    }
    if !refusals.is_empty() {
        report(msg, "push refused", &refusals);
        tracing::warn!(remote = %remote.name, refusals = refusals.len(), "push refused");
        return Ok(false);
    }
    if !push_upstream(config, remote, updates)? {
        report(
            msg,
            "push refused",
            &[
                "upstream did not accept the push (its message is above); nothing was changed"
                    .into(),
            ],
        );
        return Ok(false);
    }
    let names: Vec<&str> = updates.iter().map(|u| u.name.as_str()).collect();
    tracing::info!(remote = %remote.name, refs = ?names, commits = commits.len(), "pushed upstream");
    Ok(true)
}

fn report(msg: &mut dyn Write, head: &str, lines: &[String]) {
    let _ = writeln!(msg, "{TAG} {head}:");
    for l in lines {
        let _ = writeln!(msg, "{TAG}   {l}");
    }
    let _ = msg.flush();
}

/// Entry of the `pre-receive` hook: stdin holds the updates, the working
/// directory is the mirror. Returns the process exit code.
pub fn run_pre_receive(config: &Config) -> Result<i32, Error> {
    let mut input = String::new();
    std::io::Read::read_to_string(&mut std::io::stdin(), &mut input).map_err(|source| {
        Error::Io {
            action: "read",
            path: PathBuf::from("<pre-receive stdin>"),
            source,
        }
    })?;
    let updates = parse_updates(&input)?;
    let repo = std::env::current_dir().map_err(|source| Error::Io {
        action: "find",
        path: PathBuf::from("."),
        source,
    })?;
    let remote = remote_for_dir(config, &repo)?;
    let mut err = std::io::stderr();
    let ok = pre_receive(config, remote, &repo, &updates, &mut err)?;
    Ok(if ok { 0 } else { 1 })
}

/// Entry of git daemon's access hook: `SERVICE PATH HOST CANON IP PORT`.
/// Before a fetch, refresh the mirror; the first line of stdout is what the
/// client sees when we deny.
pub fn run_access_hook(config: &Config, args: &[String]) -> i32 {
    let service = args.first().map(String::as_str).unwrap_or("");
    let path = args.get(1).map(PathBuf::from).unwrap_or_default();
    let remote = match remote_for_dir(config, &path) {
        Ok(r) => r,
        Err(e) => {
            println!("{TAG} {e}");
            return 1;
        }
    };
    match service {
        "receive-pack" => 0,
        "upload-pack" => {
            let result =
                mirror::lock(config, remote).and_then(|_lock| mirror::refresh(config, remote));
            match result {
                Ok(()) => 0,
                Err(e) => {
                    tracing::warn!(remote = %remote.name, error = %e, "refresh before fetch failed");
                    println!("{TAG} cannot refresh from upstream: {e}");
                    1
                }
            }
        }
        other => {
            println!("{TAG} service {other} is not offered");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pre_receive_input() {
        let zero = "0".repeat(40);
        let a = "a".repeat(40);
        let u = parse_updates(&format!(
            "{zero} {a} refs/heads/agent/x\n{a} {zero} refs/heads/agent/y\n"
        ))
        .unwrap();
        assert_eq!(u.len(), 2);
        assert!(is_zero(&u[0].old) && !is_zero(&u[0].new));
        assert!(is_zero(&u[1].new));
        assert_eq!(u[1].name, "refs/heads/agent/y");
        assert!(parse_updates("garbage\n").is_err());
        assert!(parse_updates(&format!("{a} {a}\n")).is_err());
    }
}
