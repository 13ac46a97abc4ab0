//! Scanning git history with gix: the commits of a range, each blob they
//! introduce scanned once (deduplicated by blob id), plus commit messages and
//! the names of added files; with [`Options::metadata`], also commit and tag
//! headers, gitlinks and the names of new directories.
//!
//! What a finding may be excused by is the caller's choice ([`Baseline`]):
//!
//! - [`Baseline::Parents`] attributes each blob to the first commit (in
//!   committer-date order) that introduces it and drops finding lines that the
//!   blob it replaced already had, as gitleaks does. Both the order and the
//!   parents are chosen by whoever wrote the history, so two branches can be
//!   crafted whose blobs excuse each other's secret line: only for history the
//!   caller trusts (the `scanner` CLI, benchmarks).
//! - [`Baseline::Trees`] excuses a finding line only when the same line is in
//!   the blob at the same path in one of the given trusted commits' trees,
//!   whatever the order of the scanned commits. git-gate passes every ref its
//!   mirror had before the push (what is already upstream): an agent's branch
//!   may start from any upstream branch or tag, not just HEAD or the old
//!   value of the ref it updates, so all of them are fair baselines, and none
//!   of them can hold an object the push itself brings. Lookups are cached per
//!   path and per tree object and made only for blobs that have findings, so
//!   the cost does not grow with refs × paths of the push.
//!
//! Every `(blob, path)` pair that a new commit's tree holds and none of its
//! parents' trees held at that path is checked against the baseline of that
//! path, so a blob copied to many paths is scanned once but a finding is
//! reported at each path that does not excuse it.
//!
//! Works inside a `pre-receive` hook: pushed objects still sit in the
//! quarantine directory, which gix does not read on its own, so the object
//! directories named by `GIT_QUARANTINE_PATH`, `GIT_OBJECT_DIRECTORY` and
//! `GIT_ALTERNATE_OBJECT_DIRECTORIES` are searched before the repository's own.
//!
//! Never returns a whole secret: findings carry the redacted form, and
//! [`GitFinding::shown_path`] redacts a path that is itself the finding.

use std::collections::{BinaryHeap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use gix::hash::ObjectId;
use gix::objs::{CommitRef, Exists, Find, TreeRefIter};
use serde::Serialize;

use crate::engine::Ctx;
use crate::{Error, Finding, Scanner};

/// Which commits to scan.
#[derive(Clone, Debug)]
pub enum Range {
    /// A `git log`-style range: `A..B`, or a single revision (it and its ancestors).
    Spec(String),
    /// Commits reachable from `tips` and from none of `existing` (hex ids or ref names).
    NewSince {
        tips: Vec<String>,
        existing: Vec<String>,
    },
    /// Every commit reachable from any ref.
    All,
}

/// What a finding line in a blob may be excused by (see the module docs).
#[derive(Clone, Debug, Default)]
pub enum Baseline {
    /// The blob the introducing commit's first parent had at that path
    /// (gitleaks' "added lines"); for trusted history only.
    #[default]
    Parents,
    /// The blob at the same path in the tree of one of these commits (hex
    /// ids or ref names; annotated tags are peeled; names that do not
    /// resolve excuse nothing).
    Trees(Vec<String>),
}

/// How to scan.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub baseline: Baseline,
    /// Also scan commit headers (author, committer, encoding, signatures,
    /// unknown headers), whole tag objects (name, tagger, signature),
    /// gitlinks (paths and ids) and the names of new empty directories.
    pub metadata: bool,
}

impl Options {
    /// For history pushed by someone the caller does not trust: every place a
    /// pushed object can carry bytes is scanned, and only `trusted` commits'
    /// trees can excuse a finding.
    pub fn untrusted(trusted: Vec<String>) -> Options {
        Options {
            baseline: Baseline::Trees(trusted),
            metadata: true,
        }
    }
}

/// Where in the objects a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Place {
    /// Header lines of a commit object (`finding.line` counts them).
    CommitHeader,
    CommitMessage,
    /// Header lines of an annotated tag (object, type, tag name, tagger).
    TagHeader,
    /// A tag's message, with its in-body signature when headers are scanned.
    TagMessage,
    /// The contents of the file at `path`.
    File,
    /// The path of a file.
    FileName,
    /// The path of a new directory that holds nothing (an empty tree).
    DirectoryName,
    /// The path of a gitlink (submodule entry).
    GitlinkPath,
    /// The 20-byte id of the gitlink at `path`, as hex.
    GitlinkId,
    /// The ids of all gitlinks of the directory `path` ("" for the top),
    /// concatenated in tree order: a secret split across several of them.
    GitlinkIds,
}

/// A finding in a commit or tag.
#[derive(Clone, Debug, Serialize)]
pub struct GitFinding {
    pub finding: Finding,
    /// The commit, or for [`Place::TagHeader`] / [`Place::TagMessage`] the tag object.
    pub commit: String,
    /// The file, directory or gitlink path; None for headers and messages.
    pub path: Option<String>,
    pub place: Place,
}

impl GitFinding {
    /// gitleaks' fingerprint: "commit:path:rule_id:line".
    pub fn gitleaks_fingerprint(&self) -> String {
        format!(
            "{}:{}:{}:{}",
            self.commit,
            self.path.as_deref().unwrap_or(""),
            self.finding.rule_id,
            self.finding.line
        )
    }

    /// `path` fit to print: where the path itself is what was found, the
    /// matched bytes are replaced by the finding's redacted form.
    pub fn shown_path(&self) -> Option<String> {
        let path = self.path.as_deref()?;
        let is_name = matches!(
            self.place,
            Place::FileName | Place::DirectoryName | Place::GitlinkPath
        );
        Some(if is_name {
            crate::redact_span(path, &self.finding)
        } else {
            path.to_string()
        })
    }
}

/// Who made a commit and when, for reports.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CommitInfo {
    pub author: String,
    pub email: String,
    /// Seconds since the Unix epoch.
    pub time: i64,
    /// The first line of the message.
    pub summary: String,
}

/// Findings of a scan, with the commits they were found in.
#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<GitFinding>,
    pub commits: HashMap<String, CommitInfo>,
    /// Number of commits and distinct blobs scanned.
    pub commits_scanned: usize,
    pub blobs_scanned: usize,
}

/// Scans the commits of `range` in the repository at (or above) `repo`, with
/// the default [`Options`] (trusted history).
pub fn scan(repo: &Path, range: &Range, scanner: &Scanner) -> Result<Vec<GitFinding>, Error> {
    scan_report(repo, range, scanner).map(|r| r.findings)
}

/// Like [`scan`], with commit details and counts.
pub fn scan_report(repo_path: &Path, range: &Range, scanner: &Scanner) -> Result<Report, Error> {
    scan_with(repo_path, range, scanner, &Options::default())
}

/// Scans the commits of `range` as `opts` asks.
pub fn scan_with(
    repo_path: &Path,
    range: &Range,
    scanner: &Scanner,
    opts: &Options,
) -> Result<Report, Error> {
    let gerr = |message: String| Error::Git {
        path: repo_path.to_path_buf(),
        message,
    };
    let repo = gix::open_opts(repo_path, gix::open::Options::isolated())
        .or_else(|_| gix::discover(repo_path))
        .map_err(|e| gerr(format!("cannot open: {e}")))?;
    let extra_dirs = env_object_dirs();
    let odb = Objects::new(&repo, &extra_dirs).map_err(&gerr)?;
    let (tips, hidden) = resolve_range(&repo, &odb, range, repo_path)?;
    // Annotated tags are scanned themselves; the walk starts at the commits they point to.
    let mut tags = Vec::new();
    let tips = peel_tags(&odb, &tips, Some(&mut tags)).map_err(&gerr)?;
    let hidden = peel_tags(&odb, &hidden, None).map_err(&gerr)?;
    let commits = walk(&odb, &tips, &hidden).map_err(&gerr)?;
    let mut trusted = match &opts.baseline {
        Baseline::Parents => None,
        Baseline::Trees(ids) => Some(Trusted::new(&repo, ids)),
    };

    let mut report = Report {
        commits_scanned: commits.len(),
        ..Default::default()
    };
    let mut findings = Vec::new();
    for (id, data) in &tags {
        scan_tag(scanner, *id, data, opts.metadata, &mut findings).map_err(&gerr)?;
    }
    // Oldest first, so a blob is attributed to the commit that introduced it.
    let mut changes: Vec<(ObjectId, Vec<Change>)> = Vec::with_capacity(commits.len());
    let mut buf = Vec::new();
    let mut tree_buf = Vec::new();
    for &id in commits.iter().rev() {
        let data = odb.find(&id, &mut buf).map_err(&gerr)?;
        let c = CommitRef::from_bytes(data, repo.object_hash())
            .map_err(|e| gerr(format!("commit {id}: {e}")))?;
        let author = c.author().ok();
        report.commits.insert(
            id.to_string(),
            CommitInfo {
                author: author.map(|a| a.name.to_string()).unwrap_or_default(),
                email: author.map(|a| a.email.to_string()).unwrap_or_default(),
                time: c.time().map(|t| t.seconds).unwrap_or(0),
                summary: c
                    .message
                    .to_string()
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string(),
            },
        );
        let commit = id.to_string();
        if opts.metadata {
            let (header, _) = split_header(data);
            push_text(scanner, header, &commit, Place::CommitHeader, &mut findings);
        }
        push_text(
            scanner,
            c.message,
            &commit,
            Place::CommitMessage,
            &mut findings,
        );
        let tree = c.tree();
        let parents: Vec<ObjectId> = c.parents().collect();
        let mut introduced = {
            let parent_tree = match parents.first() {
                Some(p) => Some(commit_tree(&odb, p, &mut tree_buf, &repo).map_err(&gerr)?),
                None => None,
            };
            let mut out = Vec::new();
            diff_trees(&odb, parent_tree, Some(tree), "", &mut out).map_err(&gerr)?;
            out
        };
        // A merge introduces only what differs from every parent.
        for p in parents.iter().skip(1) {
            let pt = commit_tree(&odb, p, &mut tree_buf, &repo).map_err(&gerr)?;
            let mut other = Vec::new();
            diff_trees(&odb, Some(pt), Some(tree), "", &mut other).map_err(&gerr)?;
            let other: HashSet<ChangeKey> = other.iter().map(Change::key).collect();
            introduced.retain(|c| other.contains(&c.key()));
        }
        changes.push((id, introduced));
    }

    let (blob_findings, blobs) = match trusted.as_mut() {
        None => scan_blobs_parents(&repo, &odb, &extra_dirs, scanner, &changes),
        Some(t) => scan_blobs_trusted(&repo, &odb, &extra_dirs, scanner, &changes, t),
    }
    .map_err(&gerr)?;
    findings.extend(blob_findings);
    report.blobs_scanned = blobs;
    if opts.metadata {
        scan_metadata(&odb, scanner, &changes, trusted.as_mut(), &mut findings).map_err(&gerr)?;
    }

    // Oldest commit first, headers and messages before the files.
    let order: HashMap<String, usize> = commits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, c)| (c.to_string(), i))
        .collect();
    findings.sort_by(|a, b| {
        (order.get(&a.commit), &a.path, a.place, a.finding.start).cmp(&(
            order.get(&b.commit),
            &b.path,
            b.place,
            b.finding.start,
        ))
    });
    report.findings = findings;
    Ok(report)
}

/// The header of a commit or tag object: everything before the first empty line.
fn split_header(data: &[u8]) -> (&[u8], &[u8]) {
    match data.windows(2).position(|w| w == b"\n\n") {
        Some(p) => (&data[..p + 1], &data[p + 2..]),
        None => (data, &[]),
    }
}

/// Findings in text that has no file name (headers, messages).
fn push_text(
    scanner: &Scanner,
    data: &[u8],
    commit: &str,
    place: Place,
    out: &mut Vec<GitFinding>,
) {
    let ctx = Ctx {
        path: None,
        commit: Some(commit),
    };
    out.extend(scanner.scan_ctx(data, ctx).into_iter().map(|f| GitFinding {
        finding: f,
        commit: commit.to_string(),
        path: None,
        place,
    }));
}

/// Findings in a path name. The path is scanned as text: rules that match
/// file names alone are for file contents' paths and do not apply here.
fn name_findings(scanner: &Scanner, path: &str, commit: &str, place: Place) -> Vec<GitFinding> {
    let ctx = Ctx {
        path: None,
        commit: Some(commit),
    };
    scanner
        .scan_ctx(path.as_bytes(), ctx)
        .into_iter()
        .map(|mut f| {
            if place == Place::FileName {
                f.description = format!("{} (in the file name)", f.description);
            }
            GitFinding {
                finding: f,
                commit: commit.to_string(),
                path: Some(path.to_string()),
                place,
            }
        })
        .collect()
}

fn scan_tag(
    scanner: &Scanner,
    id: ObjectId,
    data: &[u8],
    metadata: bool,
    out: &mut Vec<GitFinding>,
) -> Result<(), String> {
    let tag = id.to_string();
    if metadata {
        let (header, body) = split_header(data);
        push_text(scanner, header, &tag, Place::TagHeader, out);
        push_text(scanner, body, &tag, Place::TagMessage, out);
    } else {
        let t =
            gix::objs::TagRef::from_bytes(data, id.kind()).map_err(|e| format!("tag {id}: {e}"))?;
        push_text(scanner, t.message, &tag, Place::TagMessage, out);
    }
    Ok(())
}

/// One blob to scan as the file `path` of `commit` (path rules and
/// allowlists depend on them).
struct Job {
    blob: ObjectId,
    path: String,
    commit: String,
}

/// gitleaks-like attribution: each blob is scanned once, at the first
/// commit that introduces it, and lines the blob it replaced had are dropped.
fn scan_blobs_parents(
    repo: &gix::Repository,
    odb: &Objects,
    extra: &[PathBuf],
    scanner: &Scanner,
    changes: &[(ObjectId, Vec<Change>)],
) -> Result<(Vec<GitFinding>, usize), String> {
    let mut seen_blobs: HashSet<ObjectId> = HashSet::new();
    let mut out = Vec::new();
    let mut jobs = Vec::new();
    let mut old_of = Vec::new();
    for (id, list) in changes {
        let commit = id.to_string();
        for ch in list {
            let Change::Blob { path, new, old } = ch else {
                continue;
            };
            let first = seen_blobs.insert(*new);
            // A blob already scanned, at a path that changed: nothing new.
            if !first && old.is_some() {
                continue;
            }
            out.extend(name_findings(scanner, path, &commit, Place::FileName));
            if first {
                jobs.push(Job {
                    blob: *new,
                    path: path.clone(),
                    commit: commit.clone(),
                });
                old_of.push(*old);
            }
        }
    }
    let mut buf = Vec::new();
    let mut old_buf = Vec::new();
    for (i, found) in run_jobs(repo, extra, scanner, &jobs)? {
        let job = &jobs[i];
        let mut found = found;
        if let Some(old) = old_of[i] {
            if let Ok(old_data) = odb.find(&old, &mut old_buf) {
                let data = odb.find(&job.blob, &mut buf)?;
                let old_lines: HashSet<&[u8]> = old_data.split(|&b| b == b'\n').collect();
                found.retain(|f| !old_lines.contains(line_at(data, f.start)));
            }
        }
        out.extend(found.into_iter().map(|f| GitFinding {
            finding: f,
            commit: job.commit.clone(),
            path: Some(job.path.clone()),
            place: Place::File,
        }));
    }
    Ok((out, seen_blobs.len()))
}

/// Each `(blob, path)` a new commit introduces is checked against the
/// trusted trees' blob at that path; the blob itself is scanned once (once
/// per path when rules or allowlists depend on the path or commit).
fn scan_blobs_trusted(
    repo: &gix::Repository,
    odb: &Objects,
    extra: &[PathBuf],
    scanner: &Scanner,
    changes: &[(ObjectId, Vec<Change>)],
    trusted: &mut Trusted,
) -> Result<(Vec<GitFinding>, usize), String> {
    // Blob -> every path it is introduced at, with the first commit doing so.
    let mut at: HashMap<ObjectId, Vec<(String, String)>> = HashMap::new();
    let mut blob_order = Vec::new();
    let mut pairs: HashSet<(ObjectId, &str)> = HashSet::new();
    let mut names: Vec<(&str, String)> = Vec::new();
    let mut named: HashSet<&str> = HashSet::new();
    for (id, list) in changes {
        for ch in list {
            let Change::Blob { path, new, .. } = ch else {
                continue;
            };
            if named.insert(path) {
                names.push((path, id.to_string()));
            }
            if pairs.insert((*new, path)) {
                let occurrences = at.entry(*new).or_insert_with(|| {
                    blob_order.push(*new);
                    Vec::new()
                });
                occurrences.push((path.clone(), id.to_string()));
            }
        }
    }
    let per_path = !scanner.rules().context_free();
    // Each job covers the occurrences of its blob listed next to it.
    let mut jobs = Vec::new();
    let mut covers: Vec<Vec<(String, String)>> = Vec::new();
    for blob in &blob_order {
        let occurrences = &at[blob];
        if per_path {
            for (path, commit) in occurrences {
                jobs.push(Job {
                    blob: *blob,
                    path: path.clone(),
                    commit: commit.clone(),
                });
                covers.push(vec![(path.clone(), commit.clone())]);
            }
        } else {
            let (path, commit) = &occurrences[0];
            jobs.push(Job {
                blob: *blob,
                path: path.clone(),
                commit: commit.clone(),
            });
            covers.push(occurrences.clone());
        }
    }
    let mut out = Vec::new();
    let mut buf = Vec::new();
    for (i, found) in run_jobs(repo, extra, scanner, &jobs)? {
        let data = odb.find(&jobs[i].blob, &mut buf)?;
        for (path, commit) in &covers[i] {
            let baseline = trusted.lines_at(odb, path)?;
            out.extend(
                found
                    .iter()
                    .filter(|f| !baseline.contains(line_at(data, f.start)))
                    .map(|f| GitFinding {
                        finding: f.clone(),
                        commit: commit.clone(),
                        path: Some(path.clone()),
                        place: Place::File,
                    }),
            );
        }
    }
    // A path the trusted trees already have is not the push's to answer for.
    for (path, commit) in names {
        let found = name_findings(scanner, path, &commit, Place::FileName);
        if !found.is_empty() && !trusted.has_path(odb, path)? {
            out.extend(found);
        }
    }
    Ok((out, blob_order.len()))
}

/// Gitlinks and empty directories: no blob, only names and ids.
fn scan_metadata(
    odb: &Objects,
    scanner: &Scanner,
    changes: &[(ObjectId, Vec<Change>)],
    mut trusted: Option<&mut Trusted>,
    out: &mut Vec<GitFinding>,
) -> Result<(), String> {
    let mut seen: HashSet<ChangeKey> = HashSet::new();
    for (id, list) in changes {
        let commit = id.to_string();
        for ch in list {
            // Blobs are scan_blobs_*'s; each name or id once.
            if matches!(ch, Change::Blob { .. }) || !seen.insert(ch.key()) {
                continue;
            }
            let found = match ch {
                Change::Blob { .. } => unreachable!("skipped above"),
                Change::Dir { path } => name_findings(scanner, path, &commit, Place::DirectoryName),
                Change::Gitlink { path, .. } => {
                    name_findings(scanner, path, &commit, Place::GitlinkPath)
                }
                Change::GitlinkIds { dir, links } => {
                    gitlink_id_findings(scanner, dir, links, &commit)
                }
            };
            let excused = match (&mut trusted, ch) {
                (Some(t), Change::Dir { path } | Change::Gitlink { path, .. })
                    if !found.is_empty() =>
                {
                    t.has_path(odb, path)?
                }
                _ => false,
            };
            if !excused {
                out.extend(found);
            }
        }
    }
    Ok(())
}

/// The gitlink ids of one directory as hex, one per line, then (with more
/// than one) all of them on one line, so the hex decoder and the known
/// secrets' hex forms see a secret split across several ids.
fn gitlink_id_findings(
    scanner: &Scanner,
    dir: &str,
    links: &[(String, ObjectId)],
    commit: &str,
) -> Vec<GitFinding> {
    let mut text = String::new();
    for (_, id) in links {
        text.push_str(&id.to_string());
        text.push('\n');
    }
    if links.len() > 1 {
        for (_, id) in links {
            text.push_str(&id.to_string());
        }
        text.push('\n');
    }
    let ctx = Ctx {
        path: None,
        commit: Some(commit),
    };
    let mut seen = HashSet::new();
    let mut out = Vec::new();
    for f in scanner.scan_ctx(text.as_bytes(), ctx) {
        // The same secret in one id and in the concatenation: report it once.
        if !seen.insert(f.fingerprint.clone()) {
            continue;
        }
        let (path, place) = match links.get(f.line.saturating_sub(1)) {
            Some((path, _)) => (path.clone(), Place::GitlinkId),
            None => (dir.to_string(), Place::GitlinkIds),
        };
        out.push(GitFinding {
            finding: f,
            commit: commit.to_string(),
            path: Some(path),
            place,
        });
    }
    out
}

/// Blobs are read and scanned on all cores; each worker has its own object
/// handles (they cache and are not shareable across threads). Returns the
/// jobs that have findings, by index.
fn run_jobs(
    repo: &gix::Repository,
    extra: &[PathBuf],
    scanner: &Scanner,
    jobs: &[Job],
) -> Result<Vec<(usize, Vec<Finding>)>, String> {
    let next = AtomicUsize::new(0);
    let out = Mutex::new(Vec::new());
    let first_error: Mutex<Option<String>> = Mutex::new(None);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(16)
        .min(jobs.len().max(1));
    let git_dir = repo.git_dir().to_path_buf();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                // Without gix's `parallel` feature a repository is not Sync:
                // each worker opens its own.
                let opened = gix::open_opts(&git_dir, gix::open::Options::isolated())
                    .map_err(|e| format!("cannot open: {e}"));
                let odb = match opened.and_then(|repo| Objects::new(&repo, extra)) {
                    Ok(o) => o,
                    Err(e) => {
                        first_error
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e);
                        return;
                    }
                };
                let mut buf = Vec::new();
                let mut local = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else { break };
                    let data = match odb.find(&job.blob, &mut buf) {
                        Ok(d) => d,
                        Err(e) => {
                            first_error
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .get_or_insert(e);
                            break;
                        }
                    };
                    let ctx = Ctx {
                        path: Some(&job.path),
                        commit: Some(&job.commit),
                    };
                    let found = scanner.scan_ctx(data, ctx);
                    if !found.is_empty() {
                        local.push((i, found));
                    }
                }
                out.lock().unwrap_or_else(|p| p.into_inner()).extend(local);
            });
        }
    });
    if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    let mut out = out.into_inner().unwrap_or_else(|p| p.into_inner());
    out.sort_by_key(|(i, _)| *i);
    Ok(out)
}

fn line_at(data: &[u8], pos: usize) -> &[u8] {
    let pos = pos.min(data.len());
    let start = data[..pos]
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |p| p + 1);
    let end = data[pos..]
        .iter()
        .position(|&b| b == b'\n')
        .map_or(data.len(), |p| pos + p);
    &data[start..end]
}

/// One tree's entries by name: (is a tree, id).
type Entries = HashMap<String, (bool, ObjectId)>;

/// The trusted trees of [`Baseline::Trees`], read lazily: nothing is read
/// unless a finding needs a baseline.
struct Trusted {
    commits: Vec<ObjectId>,
    roots: Option<Vec<ObjectId>>,
    trees: HashMap<ObjectId, Rc<Entries>>,
    /// Distinct ids (any kind) at a path across the roots.
    at_path: HashMap<String, Rc<Vec<(bool, ObjectId)>>>,
    lines: HashMap<String, Rc<HashSet<Vec<u8>>>>,
}

impl Trusted {
    fn new(repo: &gix::Repository, ids: &[String]) -> Trusted {
        let mut commits = Vec::new();
        for s in ids {
            // A trusted name that does not resolve excuses nothing.
            if let Ok(id) = resolve_one(repo, s) {
                commits.push(id);
            }
        }
        commits.sort();
        commits.dedup();
        Trusted {
            commits,
            roots: None,
            trees: HashMap::new(),
            at_path: HashMap::new(),
            lines: HashMap::new(),
        }
    }

    fn roots(&mut self, odb: &Objects) -> Vec<ObjectId> {
        if let Some(r) = &self.roots {
            return r.clone();
        }
        let mut roots = Vec::new();
        let mut buf = Vec::new();
        for &start in &self.commits {
            let mut id = start;
            // Tags are peeled to what they name; a tag of a tree is a tree too.
            for _ in 0..16 {
                let Ok((kind, data)) = odb.find_any(&id, &mut buf) else {
                    break;
                };
                match kind {
                    gix::objs::Kind::Commit => {
                        if let Ok(c) = CommitRef::from_bytes(data, id.kind()) {
                            roots.push(c.tree());
                        }
                        break;
                    }
                    gix::objs::Kind::Tree => {
                        roots.push(id);
                        break;
                    }
                    gix::objs::Kind::Tag => match gix::objs::TagRef::from_bytes(data, id.kind()) {
                        Ok(t) => id = t.target(),
                        Err(_) => break,
                    },
                    gix::objs::Kind::Blob => break,
                }
            }
        }
        roots.sort();
        roots.dedup();
        self.roots = Some(roots.clone());
        roots
    }

    fn tree(&mut self, odb: &Objects, id: ObjectId) -> Result<Rc<Entries>, String> {
        if let Some(t) = self.trees.get(&id) {
            return Ok(t.clone());
        }
        let entries: Entries = read_tree(odb, Some(id))?
            .into_iter()
            .map(|e| (e.name, (e.kind == EntryKind::Tree, e.id)))
            .collect();
        let entries = Rc::new(entries);
        self.trees.insert(id, entries.clone());
        Ok(entries)
    }

    fn entries_at(
        &mut self,
        odb: &Objects,
        path: &str,
    ) -> Result<Rc<Vec<(bool, ObjectId)>>, String> {
        if let Some(v) = self.at_path.get(path) {
            return Ok(v.clone());
        }
        let mut found = Vec::new();
        'roots: for root in self.roots(odb) {
            let mut cur = (true, root);
            for part in path.split('/') {
                if !cur.0 {
                    continue 'roots;
                }
                match self.tree(odb, cur.1)?.get(part) {
                    Some(e) => cur = *e,
                    None => continue 'roots,
                }
            }
            found.push(cur);
        }
        found.sort();
        found.dedup();
        let found = Rc::new(found);
        self.at_path.insert(path.to_string(), found.clone());
        Ok(found)
    }

    fn has_path(&mut self, odb: &Objects, path: &str) -> Result<bool, String> {
        Ok(!self.entries_at(odb, path)?.is_empty())
    }

    /// Every line of every trusted blob at `path`.
    fn lines_at(&mut self, odb: &Objects, path: &str) -> Result<Rc<HashSet<Vec<u8>>>, String> {
        if let Some(l) = self.lines.get(path) {
            return Ok(l.clone());
        }
        let mut lines = HashSet::new();
        let mut buf = Vec::new();
        for &(is_tree, id) in self.entries_at(odb, path)?.iter() {
            if is_tree {
                continue;
            }
            // A trusted gitlink at this path has no blob to read.
            if let Ok((gix::objs::Kind::Blob, data)) = odb.find_any(&id, &mut buf) {
                lines.extend(data.split(|&b| b == b'\n').map(<[u8]>::to_vec));
            }
        }
        let lines = Rc::new(lines);
        self.lines.insert(path.to_string(), lines.clone());
        Ok(lines)
    }
}

/// Object directories the environment adds (a pre-receive hook's quarantine).
fn env_object_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for var in ["GIT_QUARANTINE_PATH", "GIT_OBJECT_DIRECTORY"] {
        if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            dirs.push(PathBuf::from(v));
        }
    }
    if let Some(v) = std::env::var_os("GIT_ALTERNATE_OBJECT_DIRECTORIES") {
        dirs.extend(std::env::split_paths(&v).filter(|p| !p.as_os_str().is_empty()));
    }
    let mut seen = HashSet::new();
    dirs.retain(|d| d.is_dir() && seen.insert(d.canonicalize().unwrap_or_else(|_| d.clone())));
    dirs
}

trait Odb: Find + Exists {}
impl<T: Find + Exists> Odb for T {}

/// Object lookup through the extra directories first, then the repository.
struct Objects {
    layers: Vec<Box<dyn Odb>>,
}

impl Objects {
    fn new(repo: &gix::Repository, extra: &[PathBuf]) -> Result<Objects, String> {
        let mut layers: Vec<Box<dyn Odb>> = Vec::new();
        for d in extra {
            let h = gix::odb::at(d, repo.object_hash())
                .map_err(|e| format!("object directory {}: {e}", d.display()))?;
            layers.push(Box::new(h));
        }
        layers.push(Box::new(repo.objects.clone()));
        Ok(Objects { layers })
    }

    fn find<'a>(&self, id: &ObjectId, buf: &'a mut Vec<u8>) -> Result<&'a [u8], String> {
        self.find_any(id, buf).map(|(_, d)| d)
    }

    fn find_any<'a>(
        &self,
        id: &ObjectId,
        buf: &'a mut Vec<u8>,
    ) -> Result<(gix::objs::Kind, &'a [u8]), String> {
        let layer = self
            .layers
            .iter()
            .find(|l| l.exists(id))
            .ok_or_else(|| format!("object {id} not found"))?;
        match layer.try_find(id, buf) {
            Ok(Some(d)) => Ok((d.kind, d.data)),
            Ok(None) => Err(format!("object {id} not found")),
            Err(e) => Err(format!("object {id}: {e}")),
        }
    }

    fn contains(&self, id: &ObjectId) -> bool {
        self.layers.iter().any(|l| l.exists(id))
    }
}

/// Follows annotated tags to the commits they name; other objects (a tag of
/// a tree or blob) are dropped. The raw tag objects are collected when asked.
fn peel_tags(
    odb: &Objects,
    ids: &[ObjectId],
    mut tags: Option<&mut Vec<(ObjectId, Vec<u8>)>>,
) -> Result<Vec<ObjectId>, String> {
    let mut out = Vec::with_capacity(ids.len());
    let mut buf = Vec::new();
    for &start in ids {
        let mut id = start;
        for _ in 0..16 {
            let Ok((kind, data)) = odb.find_any(&id, &mut buf) else {
                out.push(id); // missing: the walk reports it (or skips a hidden one)
                break;
            };
            match kind {
                gix::objs::Kind::Commit => {
                    out.push(id);
                    break;
                }
                gix::objs::Kind::Tag => {
                    let tag = gix::objs::TagRef::from_bytes(data, id.kind())
                        .map_err(|e| format!("tag {id}: {e}"))?;
                    let target = tag.target();
                    if let Some(t) = tags.as_deref_mut() {
                        t.push((id, data.to_vec()));
                    }
                    id = target;
                }
                _ => break,
            }
        }
    }
    Ok(out)
}

fn commit_tree(
    odb: &Objects,
    commit: &ObjectId,
    buf: &mut Vec<u8>,
    repo: &gix::Repository,
) -> Result<ObjectId, String> {
    let data = odb.find(commit, buf)?;
    CommitRef::from_bytes(data, repo.object_hash())
        .map(|c| c.tree())
        .map_err(|e| format!("commit {commit}: {e}"))
}

/// What a commit's tree holds that its parent's tree did not.
enum Change {
    /// A blob or symlink, new at `path` or replacing `old` there.
    Blob {
        path: String,
        new: ObjectId,
        old: Option<ObjectId>,
    },
    /// A gitlink, new at `path` or pointing elsewhere.
    Gitlink { path: String, id: ObjectId },
    /// Every gitlink of directory `dir`, in tree order, when one of them changed.
    GitlinkIds {
        dir: String,
        links: Vec<(String, ObjectId)>,
    },
    /// A new directory under which nothing else changed (an empty tree).
    Dir { path: String },
}

/// What a change adds, whatever it replaced: equal keys from two parents'
/// diffs are the same addition.
type ChangeKey = (u8, String, Vec<u8>);

impl Change {
    fn key(&self) -> ChangeKey {
        match self {
            Change::Blob { path, new, .. } => (0, path.clone(), new.as_bytes().to_vec()),
            Change::Gitlink { path, id } => (1, path.clone(), id.as_bytes().to_vec()),
            Change::GitlinkIds { dir, links } => (
                2,
                dir.clone(),
                links
                    .iter()
                    .flat_map(|(_, id)| id.as_bytes().to_vec())
                    .collect(),
            ),
            Change::Dir { path } => (3, path.clone(), Vec::new()),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum EntryKind {
    Tree,
    Blob,
    Gitlink,
}

struct Entry {
    name: String,
    kind: EntryKind,
    id: ObjectId,
}

fn read_tree(odb: &Objects, id: Option<ObjectId>) -> Result<Vec<Entry>, String> {
    let Some(id) = id else { return Ok(Vec::new()) };
    let mut buf = Vec::new();
    let data = odb.find(&id, &mut buf)?;
    TreeRefIter::from_bytes(data, id.kind())
        .map(|e| {
            e.map(|e| Entry {
                name: e.filename.to_string(),
                // As git's canon_mode() reads modes: a mode that is neither
                // a file, a symlink nor a directory is a gitlink, an id of
                // the pusher's choosing that no object needs to back.
                kind: if e.mode.is_tree() {
                    EntryKind::Tree
                } else if e.mode.is_blob_or_symlink() {
                    EntryKind::Blob
                } else {
                    EntryKind::Gitlink
                },
                id: e.oid.to_owned(),
            })
            .map_err(|err| format!("tree {id}: {err}"))
        })
        .collect()
}

/// What is new or changed in tree `new` relative to `old`.
fn diff_trees(
    odb: &Objects,
    old: Option<ObjectId>,
    new: Option<ObjectId>,
    prefix: &str,
    out: &mut Vec<Change>,
) -> Result<(), String> {
    if old == new {
        return Ok(());
    }
    let old_entries: HashMap<String, (EntryKind, ObjectId)> = read_tree(odb, old)?
        .into_iter()
        .map(|e| (e.name, (e.kind, e.id)))
        .collect();
    let mut links = Vec::new();
    let mut links_changed = false;
    for Entry { name, kind, id } in read_tree(odb, new)? {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        let before = old_entries.get(&name).copied();
        match kind {
            EntryKind::Tree => {
                let old_tree = before.filter(|b| b.0 == EntryKind::Tree).map(|b| b.1);
                let len = out.len();
                diff_trees(odb, old_tree, Some(id), &path, out)?;
                if old_tree.is_none() && out.len() == len {
                    out.push(Change::Dir { path });
                }
            }
            EntryKind::Blob => match before {
                Some((EntryKind::Blob, old_id)) if old_id == id => {}
                Some((EntryKind::Blob, old_id)) => out.push(Change::Blob {
                    path,
                    new: id,
                    old: Some(old_id),
                }),
                _ => out.push(Change::Blob {
                    path,
                    new: id,
                    old: None,
                }),
            },
            EntryKind::Gitlink => {
                if before != Some((EntryKind::Gitlink, id)) {
                    links_changed = true;
                    out.push(Change::Gitlink {
                        path: path.clone(),
                        id,
                    });
                }
                links.push((path, id));
            }
        }
    }
    if links_changed {
        out.push(Change::GitlinkIds {
            dir: prefix.to_string(),
            links,
        });
    }
    Ok(())
}

/// Commits reachable from `tips` and not from `hidden`, newest first (by
/// committer time). Walks both sides at once, newest first, and stops when
/// only hidden commits are left, so it does not walk all of history.
fn walk(odb: &Objects, tips: &[ObjectId], hidden: &[ObjectId]) -> Result<Vec<ObjectId>, String> {
    #[derive(PartialEq, Eq, PartialOrd, Ord)]
    struct Item(i64, bool, ObjectId); // time, is_hidden, id
    let mut queue = BinaryHeap::new();
    let mut state: HashMap<ObjectId, bool> = HashMap::new(); // id -> hidden
    let mut buf = Vec::new();
    let time_of = |id: &ObjectId, buf: &mut Vec<u8>| -> Result<(i64, Vec<ObjectId>), String> {
        let data = odb.find(id, buf)?;
        let c = CommitRef::from_bytes(data, id.kind()).map_err(|e| format!("commit {id}: {e}"))?;
        Ok((
            c.time().map(|t| t.seconds).unwrap_or(0),
            c.parents().collect(),
        ))
    };
    for (ids, is_hidden) in [(hidden, true), (tips, false)] {
        for id in ids {
            if !odb.contains(id) {
                if is_hidden {
                    continue; // an existing ref whose objects are gone: nothing to exclude
                }
                return Err(format!("commit {id} not found"));
            }
            let (t, _) = time_of(id, &mut buf)?;
            if state.get(id) == Some(&true) {
                continue;
            }
            state.insert(*id, is_hidden);
            queue.push(Item(t, is_hidden, *id));
        }
    }
    let mut interesting_left = queue.iter().filter(|i| !i.1).count();
    let mut out = Vec::new();
    while let Some(Item(_, is_hidden, id)) = queue.pop() {
        if !is_hidden {
            interesting_left -= 1;
        }
        // State may have been upgraded to hidden since this entry was queued.
        let hidden_now = state.get(&id).copied().unwrap_or(is_hidden);
        if !is_hidden && hidden_now {
            continue;
        }
        if !hidden_now {
            out.push(id);
        }
        let (_, parents) = time_of(&id, &mut buf)?;
        for p in parents {
            match state.get(&p) {
                Some(true) => continue,
                Some(false) if !hidden_now => continue,
                _ => {}
            }
            if !odb.contains(&p) {
                continue; // shallow history
            }
            let (t, _) = time_of(&p, &mut buf)?;
            state.insert(p, hidden_now);
            queue.push(Item(t, hidden_now, p));
            if !hidden_now {
                interesting_left += 1;
            }
        }
        if interesting_left == 0 {
            break;
        }
    }
    // Drop commits later found to be reachable from a hidden one.
    out.retain(|id| state.get(id) != Some(&true));
    Ok(out)
}

/// A full hex id as is (it may name an object only the quarantine has),
/// anything else through rev-parse.
fn resolve_one(repo: &gix::Repository, s: &str) -> Result<ObjectId, Error> {
    let rerr = |message: String| Error::GitRange {
        spec: s.to_string(),
        message,
    };
    if s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return ObjectId::from_hex(s.as_bytes()).map_err(|e| rerr(e.to_string()));
    }
    repo.rev_parse_single(s)
        .map(|id| id.detach())
        .map_err(|e| rerr(e.to_string()))
}

fn resolve_range(
    repo: &gix::Repository,
    odb: &Objects,
    range: &Range,
    path: &Path,
) -> Result<(Vec<ObjectId>, Vec<ObjectId>), Error> {
    let rerr = |spec: &str, message: String| Error::GitRange {
        spec: spec.to_string(),
        message,
    };
    let one = |s: &str| resolve_one(repo, s);
    match range {
        Range::All => {
            let mut tips = Vec::new();
            let refs = repo.references().map_err(|e| Error::Git {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
            for r in refs
                .all()
                .map_err(|e| Error::Git {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?
                .flatten()
            {
                let mut r = r;
                if let Ok(id) = r.peel_to_id() {
                    let id = id.detach();
                    let mut buf = Vec::new();
                    if odb.find(&id, &mut buf).is_ok()
                        && repo
                            .find_object(id)
                            .map(|o| o.kind.is_commit())
                            .unwrap_or(false)
                    {
                        tips.push(id);
                    }
                }
            }
            if let Ok(head) = repo.head_id() {
                tips.push(head.detach());
            }
            tips.sort();
            tips.dedup();
            Ok((tips, Vec::new()))
        }
        Range::NewSince { tips, existing } => {
            let tips = tips.iter().map(|t| one(t)).collect::<Result<Vec<_>, _>>()?;
            let mut hidden = Vec::new();
            for e in existing {
                // An existing ref that no longer resolves hides nothing.
                if let Ok(id) = one(e) {
                    hidden.push(id);
                }
            }
            Ok((tips, hidden))
        }
        Range::Spec(spec) => {
            let spec = spec.trim();
            if spec == "--all" || spec.is_empty() {
                return resolve_range(repo, odb, &Range::All, path);
            }
            if let Some((a, b)) = spec.split_once("...") {
                return Err(rerr(
                    spec,
                    format!("symmetric ranges ({a}...{b}) are not supported; use A..B"),
                ));
            }
            match spec.split_once("..") {
                Some((a, b)) => {
                    let a = if a.is_empty() { "HEAD" } else { a };
                    let b = if b.is_empty() { "HEAD" } else { b };
                    Ok((vec![one(b)?], vec![one(a)?]))
                }
                None if spec.starts_with('-') => Err(rerr(
                    spec,
                    "only a revision, A..B or --all are supported".into(),
                )),
                None => Ok((vec![one(spec)?], Vec::new())),
            }
        }
    }
}
