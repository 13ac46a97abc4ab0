//! Object lookup that also sees a pre-receive hook's quarantine, and
//! peeling tags and commits to what they point at.

use std::collections::HashSet;
use std::path::PathBuf;

use gix::hash::ObjectId;
use gix::objs::{CommitRef, Exists, Find};

/// Object directories the environment adds (a pre-receive hook's quarantine).
pub(super) fn env_object_dirs() -> Vec<PathBuf> {
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
pub(super) struct Objects {
    layers: Vec<Box<dyn Odb>>,
}

impl Objects {
    pub(super) fn new(repo: &gix::Repository, extra: &[PathBuf]) -> Result<Objects, String> {
        let mut layers: Vec<Box<dyn Odb>> = Vec::new();
        for d in extra {
            let h = gix::odb::at(d, repo.object_hash())
                .map_err(|e| format!("object directory {}: {e}", d.display()))?;
            layers.push(Box::new(h));
        }
        layers.push(Box::new(repo.objects.clone()));
        Ok(Objects { layers })
    }

    pub(super) fn find<'a>(&self, id: &ObjectId, buf: &'a mut Vec<u8>) -> Result<&'a [u8], String> {
        self.find_any(id, buf).map(|(_, d)| d)
    }

    pub(super) fn find_any<'a>(
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

    pub(super) fn contains(&self, id: &ObjectId) -> bool {
        self.layers.iter().any(|l| l.exists(id))
    }
}

/// Follows annotated tags to the commits they name; other objects (a tag of
/// a tree or blob) are dropped. The raw tag objects are collected when asked.
pub(super) fn peel_tags(
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

pub(super) fn commit_tree(
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
