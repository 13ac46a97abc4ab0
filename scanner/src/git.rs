//! Scanning git history with gix: the commits of a range, each blob they
//! introduce scanned once (deduplicated by blob id), plus commit messages and
//! the names of added files.
//!
//! Works inside a `pre-receive` hook: pushed objects still sit in the
//! quarantine directory, which gix does not read on its own, so the object
//! directories named by `GIT_QUARANTINE_PATH`, `GIT_OBJECT_DIRECTORY` and
//! `GIT_ALTERNATE_OBJECT_DIRECTORIES` are searched before the repository's own.

use std::collections::{BinaryHeap, HashMap, HashSet};
use std::path::{Path, PathBuf};
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

/// A finding in a commit: `path` is None for the commit message.
#[derive(Clone, Debug, Serialize)]
pub struct GitFinding {
    pub finding: Finding,
    pub commit: String,
    pub path: Option<String>,
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

/// Scans the commits of `range` in the repository at (or above) `repo`.
pub fn scan(repo: &Path, range: &Range, scanner: &Scanner) -> Result<Vec<GitFinding>, Error> {
    scan_report(repo, range, scanner).map(|r| r.findings)
}

/// Like [`scan`], with commit details and counts.
pub fn scan_report(repo_path: &Path, range: &Range, scanner: &Scanner) -> Result<Report, Error> {
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
    // Annotated tags: their messages are scanned, the walk starts at the commits they point to.
    let mut tag_messages = Vec::new();
    let tips = peel_tags(&odb, &tips, Some(&mut tag_messages)).map_err(&gerr)?;
    let hidden = peel_tags(&odb, &hidden, None).map_err(&gerr)?;
    let commits = walk(&odb, &tips, &hidden).map_err(&gerr)?;

    // Oldest first, so a blob is attributed to the commit that introduced it.
    let mut tasks: Vec<Task> = Vec::new();
    let mut seen_blobs: HashSet<ObjectId> = HashSet::new();
    let mut report = Report {
        commits_scanned: commits.len(),
        ..Default::default()
    };
    let mut messages = Vec::new();
    let mut buf = Vec::new();
    let mut tree_buf = Vec::new();
    for (ci, &id) in commits.iter().enumerate().rev() {
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
        messages.push((id, c.message.to_vec()));
        let tree = c.tree();
        let parents: Vec<ObjectId> = c.parents().collect();
        let _ = ci;
        let mut changes = {
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
            let other: HashSet<(String, ObjectId)> =
                other.into_iter().map(|c| (c.path, c.new)).collect();
            changes.retain(|c| other.contains(&(c.path.clone(), c.new)));
        }
        for ch in changes {
            if seen_blobs.insert(ch.new) {
                tasks.push(Task {
                    commit: id,
                    path: ch.path,
                    blob: ch.new,
                    old: ch.old,
                });
            } else if ch.old.is_none() {
                tasks.push(Task {
                    commit: id,
                    path: ch.path,
                    blob: ch.new,
                    old: Some(ch.new),
                });
            }
        }
    }
    report.blobs_scanned = seen_blobs.len();

    let mut findings = run_tasks(&repo, &extra_dirs, scanner, &tasks).map_err(&gerr)?;
    for (id, msg) in tag_messages.into_iter().chain(messages) {
        for f in scanner.scan_ctx(
            &msg,
            Ctx {
                path: None,
                commit: Some(&id.to_string()),
            },
        ) {
            findings.push(GitFinding {
                finding: f,
                commit: id.to_string(),
                path: None,
            });
        }
    }
    // Oldest commit first, the message before the files.
    let order: HashMap<String, usize> = commits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, c)| (c.to_string(), i))
        .collect();
    findings.sort_by(|a, b| {
        (order.get(&a.commit), &a.path, a.finding.start).cmp(&(
            order.get(&b.commit),
            &b.path,
            b.finding.start,
        ))
    });
    report.findings = findings;
    Ok(report)
}

struct Task {
    commit: ObjectId,
    path: String,
    blob: ObjectId,
    /// The blob this one replaced: only lines not in it are reported. Equal
    /// to `blob` for an already scanned blob added at a new path (only its
    /// file name is scanned).
    old: Option<ObjectId>,
}

/// Blobs are read and scanned on all cores; each worker has its own object
/// handles (they cache and are not shareable across threads).
fn run_tasks(
    repo: &gix::Repository,
    extra: &[PathBuf],
    scanner: &Scanner,
    tasks: &[Task],
) -> Result<Vec<GitFinding>, String> {
    let next = AtomicUsize::new(0);
    let out = Mutex::new(Vec::new());
    let first_error: Mutex<Option<String>> = Mutex::new(None);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(16);
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
                let mut old_buf = Vec::new();
                let mut local = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(t) = tasks.get(i) else { break };
                    let commit = t.commit.to_string();
                    let ctx = Ctx {
                        path: Some(&t.path),
                        commit: Some(&commit),
                    };
                    // The file name itself.
                    for mut f in scanner.scan_ctx(
                        t.path.as_bytes(),
                        Ctx {
                            path: None,
                            commit: Some(&commit),
                        },
                    ) {
                        f.description = format!("{} (in the file name)", f.description);
                        local.push(GitFinding {
                            finding: f,
                            commit: commit.clone(),
                            path: Some(t.path.clone()),
                        });
                    }
                    if t.old == Some(t.blob) {
                        continue;
                    }
                    let data = match odb.find(&t.blob, &mut buf) {
                        Ok(d) => d,
                        Err(e) => {
                            first_error
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .get_or_insert(e);
                            break;
                        }
                    };
                    let mut found = scanner.scan_ctx(data, ctx);
                    if found.is_empty() {
                        continue;
                    }
                    if let Some(old) = t.old {
                        if let Ok(old_data) = odb.find(&old, &mut old_buf) {
                            let old_lines: HashSet<&[u8]> =
                                old_data.split(|&b| b == b'\n').collect();
                            found.retain(|f| !old_lines.contains(line_at(data, f.start)));
                        }
                    }
                    for f in found {
                        local.push(GitFinding {
                            finding: f,
                            commit: commit.clone(),
                            path: Some(t.path.clone()),
                        });
                    }
                }
                out.lock().unwrap_or_else(|p| p.into_inner()).extend(local);
            });
        }
    });
    if let Some(e) = first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        return Err(e);
    }
    Ok(out.into_inner().unwrap_or_else(|p| p.into_inner()))
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
/// a tree or blob) are dropped. Tag messages are collected when asked.
fn peel_tags(
    odb: &Objects,
    ids: &[ObjectId],
    mut messages: Option<&mut Vec<(ObjectId, Vec<u8>)>>,
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
                    if let Some(m) = messages.as_deref_mut() {
                        m.push((id, tag.message.to_vec()));
                    }
                    id = tag.target();
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

struct Change {
    path: String,
    new: ObjectId,
    old: Option<ObjectId>,
}

/// Blobs (and symlinks) that are new or changed in `new` relative to `old`.
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
    let entries = |id: Option<ObjectId>| -> Result<Vec<(String, bool, bool, ObjectId)>, String> {
        let Some(id) = id else { return Ok(Vec::new()) };
        let mut buf = Vec::new();
        let data = odb.find(&id, &mut buf)?;
        TreeRefIter::from_bytes(data, id.kind())
            .map(|e| {
                e.map(|e| {
                    (
                        e.filename.to_string(),
                        e.mode.is_tree(),
                        e.mode.is_blob_or_symlink(),
                        e.oid.to_owned(),
                    )
                })
                .map_err(|err| format!("tree {id}: {err}"))
            })
            .collect()
    };
    let old_entries: HashMap<String, (bool, bool, ObjectId)> = entries(old)?
        .into_iter()
        .map(|(n, t, b, id)| (n, (t, b, id)))
        .collect();
    for (name, is_tree, is_blob, id) in entries(new)? {
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}/{name}")
        };
        let before = old_entries.get(&name);
        if is_tree {
            let old_tree = before.filter(|b| b.0).map(|b| b.2);
            diff_trees(odb, old_tree, Some(id), &path, out)?;
        } else if is_blob {
            match before {
                Some((_, true, old_id)) if *old_id == id => {}
                Some((_, true, old_id)) => out.push(Change {
                    path,
                    new: id,
                    old: Some(*old_id),
                }),
                _ => out.push(Change {
                    path,
                    new: id,
                    old: None,
                }),
            }
        }
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
    let one = |s: &str| -> Result<ObjectId, Error> {
        if s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            return ObjectId::from_hex(s.as_bytes()).map_err(|e| rerr(s, e.to_string()));
        }
        repo.rev_parse_single(s)
            .map(|id| id.detach())
            .map_err(|e| rerr(s, e.to_string()))
    };
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
