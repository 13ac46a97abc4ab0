//! Which commits to scan: resolving a range's names and walking from its
//! tips to what its hidden side already has.

use std::collections::{BinaryHeap, HashMap};
use std::path::Path;

use gix::hash::ObjectId;
use gix::objs::CommitRef;

use super::objects::Objects;
use super::Range;
use crate::Error;

/// Commits reachable from `tips` and not from `hidden`, newest first (by
/// committer time). Walks both sides at once, newest first, and stops when
/// only hidden commits are left, so it does not walk all of history.
pub(super) fn walk(
    odb: &Objects,
    tips: &[ObjectId],
    hidden: &[ObjectId],
) -> Result<Vec<ObjectId>, String> {
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
pub(super) fn resolve_one(repo: &gix::Repository, s: &str) -> Result<ObjectId, Error> {
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

pub(super) fn resolve_range(
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
