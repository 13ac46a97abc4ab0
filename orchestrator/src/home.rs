//! Where bot-bottle keeps its files: `BOT_BOTTLE_HOME` or `~/.bot-bottle`
//! (bottles, agents, state), plus the project's `./.bot-bottle/agents`.
//! The home hash labels every Docker object so `list`/`cleanup` only ever
//! see the objects of their own home (parallel tests never collide).

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::Error;

/// Environment variable overriding `~/.bot-bottle`.
pub const HOME_ENV: &str = "BOT_BOTTLE_HOME";

#[derive(Debug, Clone)]
pub struct Home {
    /// `BOT_BOTTLE_HOME` or `~/.bot-bottle`.
    pub root: PathBuf,
    /// `./.bot-bottle/agents` of the directory the command runs in, when that is
    /// not the home itself.
    pub project_agents: Option<PathBuf>,
}

impl Home {
    /// The home from the environment (`BOT_BOTTLE_HOME`, else `$HOME/.bot-bottle`)
    /// and the project agents dir under the current directory.
    pub fn from_env() -> Result<Home, Error> {
        let root = match std::env::var_os(HOME_ENV) {
            Some(v) if !v.is_empty() => PathBuf::from(v),
            _ => {
                let h = std::env::var_os("HOME").ok_or(Error::NoHome)?;
                PathBuf::from(h).join(".bot-bottle")
            }
        };
        let root = absolute(&root);
        let cwd = std::env::current_dir().ok();
        Ok(Home::new(root, cwd.as_deref()))
    }

    /// A home at `root`, with the project agents of `cwd` (if any).
    pub fn new(root: PathBuf, cwd: Option<&Path>) -> Home {
        let project_agents = cwd
            .map(|c| c.join(".bot-bottle").join("agents"))
            .filter(|p| {
                // Running from the parent of the home: the project dir IS the home's.
                let a = p.canonicalize().ok();
                let b = root.join("agents").canonicalize().ok();
                a.is_none() || a != b
            });
        Home {
            root,
            project_agents,
        }
    }

    pub fn bottles_dir(&self) -> PathBuf {
        self.root.join("bottles")
    }

    pub fn agents_dir(&self) -> PathBuf {
        self.root.join("agents")
    }

    pub fn state_root(&self) -> PathBuf {
        self.root.join("state")
    }

    pub fn state_dir(&self, id: &str) -> PathBuf {
        self.state_root().join(id)
    }

    /// Value of the `dev.bot-bottle.home` label: first 12 hex digits of the
    /// SHA-256 of the home's absolute path.
    pub fn hash(&self) -> String {
        home_hash(&self.root)
    }
}

/// Hash of a home path (see [`Home::hash`]).
pub fn home_hash(root: &Path) -> String {
    let p = root.canonicalize().unwrap_or_else(|_| absolute(root));
    let d = Sha256::digest(p.as_os_str().as_encoded_bytes());
    hex::encode(&d[..6])
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|c| c.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

/// Expand a leading `~/` with `$HOME`.
pub fn expand_tilde(p: &str) -> PathBuf {
    if let Some(rest) = p.strip_prefix("~/") {
        if let Some(h) = std::env::var_os("HOME") {
            return PathBuf::from(h).join(rest);
        }
    }
    PathBuf::from(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_is_stable_and_short() {
        let a = home_hash(Path::new("/nonexistent/a"));
        assert_eq!(a.len(), 12);
        assert_eq!(a, home_hash(Path::new("/nonexistent/a")));
        assert_ne!(a, home_hash(Path::new("/nonexistent/b")));
    }
}
