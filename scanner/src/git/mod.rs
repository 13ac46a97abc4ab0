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

mod blobs;
mod diff;
mod metadata;
mod objects;
mod range;
mod trusted;

use std::collections::HashMap;
use std::path::Path;

use gix::hash::ObjectId;
use gix::objs::CommitRef;
use serde::Serialize;

use crate::{Error, Finding, Scanner};
use blobs::{scan_blobs_parents, scan_blobs_trusted};
use diff::{introduced, Change};
use metadata::{push_text, scan_metadata, scan_tag, split_header};
use objects::{env_object_dirs, peel_tags, Objects};
use range::{resolve_range, walk};
use trusted::Trusted;

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
    let changes = scan_commits(
        &repo,
        &odb,
        scanner,
        opts.metadata,
        &commits,
        &mut report.commits,
        &mut findings,
    )
    .map_err(&gerr)?;

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

    sort_findings(&mut findings, &commits);
    report.findings = findings;
    Ok(report)
}

/// Records each commit's details, scans its header (with `metadata`) and
/// message, and returns what each commit introduces. Oldest first, so a blob
/// is attributed to the commit that introduced it.
fn scan_commits(
    repo: &gix::Repository,
    odb: &Objects,
    scanner: &Scanner,
    metadata: bool,
    commits: &[ObjectId],
    infos: &mut HashMap<String, CommitInfo>,
    findings: &mut Vec<GitFinding>,
) -> Result<Vec<(ObjectId, Vec<Change>)>, String> {
    let mut changes: Vec<(ObjectId, Vec<Change>)> = Vec::with_capacity(commits.len());
    let mut buf = Vec::new();
    let mut tree_buf = Vec::new();
    for &id in commits.iter().rev() {
        let data = odb.find(&id, &mut buf)?;
        let c = CommitRef::from_bytes(data, repo.object_hash())
            .map_err(|e| format!("commit {id}: {e}"))?;
        infos.insert(id.to_string(), commit_info(&c));
        let commit = id.to_string();
        if metadata {
            let (header, _) = split_header(data);
            push_text(scanner, header, &commit, Place::CommitHeader, findings);
        }
        push_text(scanner, c.message, &commit, Place::CommitMessage, findings);
        let parents: Vec<ObjectId> = c.parents().collect();
        let introduced = introduced(repo, odb, c.tree(), &parents, &mut tree_buf)?;
        changes.push((id, introduced));
    }
    Ok(changes)
}

fn commit_info(c: &CommitRef<'_>) -> CommitInfo {
    let author = c.author().ok();
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
    }
}

/// Oldest commit first, headers and messages before the files.
fn sort_findings(findings: &mut [GitFinding], commits: &[ObjectId]) {
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
}
