//! The trusted trees that may excuse a finding line under
//! `Baseline::Trees`, read lazily and cached.

use std::collections::{HashMap, HashSet};
use std::rc::Rc;

use gix::hash::ObjectId;
use gix::objs::CommitRef;

use super::diff::{read_tree, EntryKind};
use super::objects::Objects;
use super::range::resolve_one;

/// One tree's entries by name: (is a tree, id).
type Entries = HashMap<String, (bool, ObjectId)>;

/// The trusted trees of [`super::Baseline::Trees`], read lazily: nothing is read
/// unless a finding needs a baseline.
pub(super) struct Trusted {
    commits: Vec<ObjectId>,
    roots: Option<Vec<ObjectId>>,
    trees: HashMap<ObjectId, Rc<Entries>>,
    /// Distinct ids (any kind) at a path across the roots.
    at_path: HashMap<String, Rc<Vec<(bool, ObjectId)>>>,
    lines: HashMap<String, Rc<HashSet<Vec<u8>>>>,
}

impl Trusted {
    pub(super) fn new(repo: &gix::Repository, ids: &[String]) -> Trusted {
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

    pub(super) fn has_path(&mut self, odb: &Objects, path: &str) -> Result<bool, String> {
        Ok(!self.entries_at(odb, path)?.is_empty())
    }

    /// Every line of every trusted blob at `path`.
    pub(super) fn lines_at(
        &mut self,
        odb: &Objects,
        path: &str,
    ) -> Result<Rc<HashSet<Vec<u8>>>, String> {
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
