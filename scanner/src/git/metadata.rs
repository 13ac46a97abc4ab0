//! Findings outside file contents: commit and tag headers and messages,
//! path names, and gitlink ids.

use std::collections::HashSet;

use gix::hash::ObjectId;

use super::diff::{Change, ChangeKey};
use super::objects::Objects;
use super::trusted::Trusted;
use super::{GitFinding, Place};
use crate::engine::Ctx;
use crate::Scanner;

/// The header of a commit or tag object: everything before the first empty line.
pub(super) fn split_header(data: &[u8]) -> (&[u8], &[u8]) {
    match data.windows(2).position(|w| w == b"\n\n") {
        Some(p) => (&data[..p + 1], &data[p + 2..]),
        None => (data, &[]),
    }
}

/// Findings in text that has no file name (headers, messages).
pub(super) fn push_text(
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
pub(super) fn name_findings(
    scanner: &Scanner,
    path: &str,
    commit: &str,
    place: Place,
) -> Vec<GitFinding> {
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

pub(super) fn scan_tag(
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

/// Gitlinks and empty directories: no blob, only names and ids.
pub(super) fn scan_metadata(
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
