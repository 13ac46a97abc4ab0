//! Scanning the blobs that commits introduce, once each, and excusing
//! finding lines by the chosen baseline.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use gix::hash::ObjectId;

use super::diff::Change;
use super::metadata::name_findings;
use super::objects::Objects;
use super::trusted::Trusted;
use super::{GitFinding, Place};
use crate::engine::Ctx;
use crate::{Finding, Scanner};

/// One blob to scan as the file `path` of `commit` (path rules and
/// allowlists depend on them).
struct Job {
    blob: ObjectId,
    path: String,
    commit: String,
}

/// gitleaks-like attribution: each blob is scanned once, at the first
/// commit that introduces it, and lines the blob it replaced had are dropped.
pub(super) fn scan_blobs_parents(
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
pub(super) fn scan_blobs_trusted(
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
