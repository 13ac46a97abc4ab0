//! What each commit's tree introduces relative to its parents' trees.

use std::collections::{HashMap, HashSet};

use gix::hash::ObjectId;
use gix::objs::TreeRefIter;

use super::objects::{commit_tree, Objects};

/// What a commit's tree holds that its parent's tree did not.
pub(super) enum Change {
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
pub(super) type ChangeKey = (u8, String, Vec<u8>);

impl Change {
    pub(super) fn key(&self) -> ChangeKey {
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
pub(super) enum EntryKind {
    Tree,
    Blob,
    Gitlink,
}

pub(super) struct Entry {
    pub(super) name: String,
    pub(super) kind: EntryKind,
    pub(super) id: ObjectId,
}

pub(super) fn read_tree(odb: &Objects, id: Option<ObjectId>) -> Result<Vec<Entry>, String> {
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
pub(super) fn diff_trees(
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

/// What `tree` holds that the first parent's tree did not.
pub(super) fn introduced(
    repo: &gix::Repository,
    odb: &Objects,
    tree: ObjectId,
    parents: &[ObjectId],
    tree_buf: &mut Vec<u8>,
) -> Result<Vec<Change>, String> {
    let parent_tree = match parents.first() {
        Some(p) => Some(commit_tree(odb, p, tree_buf, repo)?),
        None => None,
    };
    let mut introduced = Vec::new();
    diff_trees(odb, parent_tree, Some(tree), "", &mut introduced)?;
    // A merge introduces only what differs from every parent.
    for p in parents.iter().skip(1) {
        let pt = commit_tree(odb, p, tree_buf, repo)?;
        let mut other = Vec::new();
        diff_trees(odb, Some(pt), Some(tree), "", &mut other)?;
        let other: HashSet<ChangeKey> = other.iter().map(Change::key).collect();
        introduced.retain(|c| other.contains(&c.key()));
    }
    Ok(introduced)
}
