//! A bottle's state directory, `<home>/state/<id>/` (mode 0700): what
//! `resume`, `info` and `logs` need after the starting process is gone.
//!
//! `metadata.json` describes the bottle; `layout.json` is what the backend
//! brings up; secrets (CA key, broker key, canary) are separate 0600 files.
//! Real tokens are never written here: they are read from the operator's
//! environment by name at every bring-up.
//!
//! `audit/` is egress's audit log (mounted into egress, rotated there with a
//! size bound). It outlives the bottle: when a bottle is removed at the end
//! of its session, everything else goes and `removed` marks the dir, so
//! `logs` still reads what the agent did until `cleanup` removes the state.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::backend::BottleLayout;
use crate::error::Error;

/// The audit log's directory in a state dir.
pub const AUDIT_DIR: &str = "audit";
/// Marks a state dir whose bottle is gone (only metadata and audit stay).
const REMOVED: &str = "removed";

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Metadata {
    pub id: String,
    pub agent: String,
    pub bottle: Option<String>,
    /// Seconds since the epoch.
    pub created: i64,
    /// Working tree copied with `--cwd`, if any.
    pub cwd: Option<PathBuf>,
    /// Image `commit` made; `resume` boots from it.
    pub committed_image: Option<String>,
    /// Command the interactive session runs (the provider's CLI).
    pub agent_command: Vec<String>,
}

/// One bottle's state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    pub path: PathBuf,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |source| Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl StateDir {
    pub fn root(home: &Path) -> PathBuf {
        home.join("state")
    }

    pub fn open(home: &Path, id: &str) -> Result<StateDir, Error> {
        let path = Self::root(home).join(id);
        if !path.join("metadata.json").is_file() {
            return Err(Error::UnknownBottle { id: id.to_string() });
        }
        Ok(StateDir { path })
    }

    /// Creates a fresh state dir (0700); refuses an id that exists.
    pub fn create(home: &Path, id: &str) -> Result<StateDir, Error> {
        let root = Self::root(home);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&root)
            .map_err(io_err(&root))?;
        let path = root.join(id);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&path)
            .map_err(io_err(&path))?;
        Ok(StateDir { path })
    }

    pub fn exists(&self) -> bool {
        self.path.is_dir()
    }

    /// Every bottle id with a state dir in this home.
    pub fn list(home: &Path) -> Vec<String> {
        let mut out: Vec<String> = fs::read_dir(Self::root(home))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join("metadata.json").is_file())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        out.sort();
        out
    }

    /// Writes a file readable by the operator only.
    pub fn write_private(&self, name: &str, data: &[u8]) -> Result<PathBuf, Error> {
        let path = self.path.join(name);
        if let Some(parent) = path.parent() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(io_err(parent))?;
        }
        let tmp = path.with_extension("tmp");
        {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(io_err(&tmp))?;
            f.write_all(data).map_err(io_err(&tmp))?;
        }
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o600)).map_err(io_err(&tmp))?;
        fs::rename(&tmp, &path).map_err(io_err(&path))?;
        Ok(path)
    }

    pub fn read(&self, name: &str) -> Result<Vec<u8>, Error> {
        let path = self.path.join(name);
        fs::read(&path).map_err(io_err(&path))
    }

    pub fn write_metadata(&self, m: &Metadata) -> Result<(), Error> {
        let json = serde_json::to_vec_pretty(m).map_err(|e| Error::Invalid {
            what: e.to_string(),
        })?;
        self.write_private("metadata.json", &json)?;
        Ok(())
    }

    pub fn metadata(&self) -> Result<Metadata, Error> {
        let bytes = self.read("metadata.json")?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
            path: self.path.join("metadata.json"),
            detail: e.to_string(),
        })
    }

    pub fn write_layout(&self, l: &BottleLayout) -> Result<(), Error> {
        let json = serde_json::to_vec(l).map_err(|e| Error::Invalid {
            what: e.to_string(),
        })?;
        self.write_private("layout.json", &json)?;
        Ok(())
    }

    pub fn layout(&self) -> Result<BottleLayout, Error> {
        let bytes = self.read("layout.json")?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
            path: self.path.join("layout.json"),
            detail: e.to_string(),
        })
    }

    /// Creates `audit/` for a writer of uid `writer_uid` (egress). An
    /// operator who is root gives the dir to the writer (0700); anyone else
    /// keeps it and lets the writer in through the operator's group (02770:
    /// files egress creates, 0640, belong to that group and stay readable
    /// by the operator and nobody else): the backend adds egress to the
    /// dir's group when the writer does not own it.
    pub fn create_audit_dir(&self, writer_uid: u32) -> Result<PathBuf, Error> {
        let dir = self.path.join(AUDIT_DIR);
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(io_err(&dir)(e));
            }
            _ => {}
        }
        let operator = fs::metadata(&self.path).map_err(io_err(&self.path))?.uid();
        if operator == 0 {
            std::os::unix::fs::chown(&dir, Some(writer_uid), Some(writer_uid))
                .map_err(io_err(&dir))?;
        } else {
            fs::set_permissions(&dir, fs::Permissions::from_mode(0o2770)).map_err(io_err(&dir))?;
        }
        Ok(dir)
    }

    /// The audit log's files, oldest first (`audit.jsonl.<keep>` .. `.1`,
    /// then `audit.jsonl`).
    pub fn audit_files(&self) -> Vec<PathBuf> {
        let dir = self.path.join(AUDIT_DIR);
        let base = crate::plan::AUDIT_FILE;
        let mut rotated: Vec<(u32, PathBuf)> = fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let n = name.strip_prefix(base)?.strip_prefix('.')?.parse().ok()?;
                Some((n, e.path()))
            })
            .collect();
        rotated.sort_by_key(|r| std::cmp::Reverse(r.0));
        let mut out: Vec<PathBuf> = rotated.into_iter().map(|(_, p)| p).collect();
        let current = dir.join(base);
        if current.is_file() {
            out.push(current);
        }
        out
    }

    /// Whether the bottle was removed and only its audit log is kept.
    pub fn is_removed(&self) -> bool {
        self.path.join(REMOVED).is_file()
    }

    /// At the end of a bottle: the state goes, except the metadata and an
    /// audit log with something in it (kept for `logs` until `cleanup`).
    pub fn retire(&self) -> Result<(), Error> {
        let audited = self
            .audit_files()
            .iter()
            .any(|p| fs::metadata(p).is_ok_and(|m| m.len() > 0));
        if !audited {
            return self.remove();
        }
        for entry in fs::read_dir(&self.path).map_err(io_err(&self.path))? {
            let entry = entry.map_err(io_err(&self.path))?;
            let name = entry.file_name();
            if name == AUDIT_DIR || name == "metadata.json" {
                continue;
            }
            let path = entry.path();
            let r = if entry.file_type().map_err(io_err(&path))?.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            r.map_err(io_err(&path))?;
        }
        self.write_private(REMOVED, now_rfc3339().as_bytes())?;
        Ok(())
    }

    pub fn remove(&self) -> Result<(), Error> {
        match fs::remove_dir_all(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&self.path)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_is_private_to_the_operator() {
        let home = tempfile::tempdir().unwrap();
        let s = StateDir::create(home.path(), "b1").unwrap();
        let key = s.write_private("ca/key.pem", b"secret").unwrap();
        assert_eq!(
            fs::metadata(&s.path).unwrap().permissions().mode() & 0o777,
            0o700
        );
        assert_eq!(
            fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(
            StateDir::create(home.path(), "b1").is_err(),
            "an existing id is never reused"
        );
    }

    #[test]
    fn metadata_round_trips_and_lists() {
        let home = tempfile::tempdir().unwrap();
        let s = StateDir::create(home.path(), "b2").unwrap();
        let m = Metadata {
            id: "b2".into(),
            agent: "test".into(),
            bottle: None,
            created: 1,
            cwd: None,
            committed_image: None,
            agent_command: vec!["bash".into()],
        };
        s.write_metadata(&m).unwrap();
        assert_eq!(
            StateDir::open(home.path(), "b2")
                .unwrap()
                .metadata()
                .unwrap(),
            m
        );
        assert_eq!(StateDir::list(home.path()), vec!["b2".to_string()]);
        assert!(matches!(
            StateDir::open(home.path(), "nope"),
            Err(Error::UnknownBottle { .. })
        ));
    }

    #[test]
    fn a_removed_bottle_keeps_only_its_metadata_and_audit_log() {
        let home = tempfile::tempdir().unwrap();
        let s = StateDir::create(home.path(), "b3").unwrap();
        s.write_private("secrets/ca-key.pem", b"key").unwrap();
        s.write_private("layout.json", b"{}").unwrap();
        s.write_private("metadata.json", b"{}").unwrap();
        let audit = s.create_audit_dir(10_001).unwrap();
        fs::write(audit.join("audit.jsonl.1"), "{\"n\":1}\n").unwrap();
        fs::write(audit.join("audit.jsonl"), "{\"n\":2}\n").unwrap();
        assert_eq!(
            s.audit_files(),
            vec![audit.join("audit.jsonl.1"), audit.join("audit.jsonl")],
            "oldest first"
        );
        s.retire().unwrap();
        let mut left: Vec<String> = fs::read_dir(&s.path)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["audit", "metadata.json", "removed"]);
        assert!(s.is_removed());

        // Nothing audited: nothing is kept.
        let t = StateDir::create(home.path(), "b4").unwrap();
        t.create_audit_dir(10_001).unwrap();
        t.retire().unwrap();
        assert!(!t.path.exists());
    }
}
