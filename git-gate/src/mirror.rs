//! The per-remote bare mirrors `git daemon` serves: creation, the settings
//! receive-pack enforces, the refresh from upstream, and the per-mirror lock
//! that serializes refreshes and pushes.
//!
//! Never: run a hook or any other program from the mirrored repository (the
//! hooks path points at the gate's own directory), or write refs while a
//! push of the same mirror is being checked.

use std::fs::File;
use std::path::{Path, PathBuf};

use crate::config::{Config, Remote};
use crate::error::Error;
use crate::upstream;

/// Largest pack a single push may send (receive.maxInputSize).
pub const MAX_PUSH_BYTES: u64 = 512 * 1024 * 1024;

/// Name of the hook links under `<state_dir>/hooks`; the binary dispatches on them.
pub const PRE_RECEIVE: &str = "pre-receive";
pub const ACCESS_HOOK: &str = "access-hook";

pub fn hooks_dir(config: &Config) -> PathBuf {
    config.state_dir.join("hooks")
}

/// Exclusive lock of one mirror, released on drop.
#[derive(Debug)]
pub struct MirrorLock {
    _file: File,
}

/// Block until this process holds the mirror's lock.
pub fn lock(config: &Config, remote: &Remote) -> Result<MirrorLock, Error> {
    let dir = config.state_dir.join("locks");
    std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
        action: "create the directory",
        path: dir.clone(),
        source,
    })?;
    let path = dir.join(format!("{}.lock", remote.name));
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|source| Error::Io {
            action: "open the lock file",
            path: path.clone(),
            source,
        })?;
    file.lock().map_err(|source| Error::Io {
        action: "lock",
        path,
        source,
    })?;
    Ok(MirrorLock { _file: file })
}

fn git_local(dir: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new("git");
    cmd.env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()),
        )
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_DIR", dir)
        .env("LC_ALL", "C");
    if let Some(home) = std::env::var_os("HOME") {
        cmd.env("HOME", home);
    }
    cmd
}

fn run_local(dir: &Path, args: &[&str]) -> Result<String, Error> {
    let out = upstream::output(git_local(dir).args(args), "git")?;
    if !out.status.success() {
        return Err(Error::Git {
            command: format!("git {}", args.join(" ")),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Link `<state_dir>/hooks/{pre-receive,access-hook}` to this binary. Links
/// (not scripts) so a state directory mounted `noexec` still works.
pub fn install_hooks(config: &Config) -> Result<PathBuf, Error> {
    let dir = hooks_dir(config);
    std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
        action: "create the directory",
        path: dir.clone(),
        source,
    })?;
    let exe = std::env::current_exe().map_err(|source| Error::Spawn {
        program: "git-gate (own path)".into(),
        source,
    })?;
    for name in [PRE_RECEIVE, ACCESS_HOOK] {
        let link = dir.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&exe, &link).map_err(|source| Error::Io {
            action: "create the hook link",
            path: link.clone(),
            source,
        })?;
    }
    Ok(dir)
}

/// Create (if needed) and configure the bare mirror of `remote`.
pub fn init(config: &Config, remote: &Remote) -> Result<PathBuf, Error> {
    let dir = config.mirror_dir(remote);
    if !dir.join("HEAD").exists() {
        std::fs::create_dir_all(&dir).map_err(|source| Error::Io {
            action: "create the directory",
            path: dir.clone(),
            source,
        })?;
        run_local(&dir, &["init", "--quiet", "--bare"])?;
    }
    let hooks = hooks_dir(config);
    let max = MAX_PUSH_BYTES.to_string();
    let settings: &[(&str, &str)] = &[
        ("core.hooksPath", hooks.to_str().unwrap_or_default()),
        ("receive.fsckObjects", "true"),
        ("receive.maxInputSize", &max),
        ("receive.denyDeletes", "true"),
        ("receive.denyNonFastForwards", "true"),
        ("receive.advertisePushOptions", "false"),
        ("gc.auto", "0"),
        ("core.logAllRefUpdates", "false"),
    ];
    for (k, v) in settings {
        run_local(&dir, &["config", k, v])?;
    }
    Ok(dir)
}

/// Set the mirror's HEAD to upstream's default branch (so clones check it out).
pub fn set_head(config: &Config, remote: &Remote) -> Result<(), Error> {
    let dir = config.mirror_dir(remote);
    let mut cmd = upstream::git(config, remote)?;
    cmd.env("GIT_DIR", &dir).args([
        "ls-remote",
        "--symref",
        &remote.upstream.to_string(),
        "HEAD",
    ]);
    let out = upstream::output(&mut cmd, "git ls-remote")?;
    if !out.status.success() {
        return Err(upstream::upstream_error(remote, &out.stderr));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let head = text.lines().find_map(|l| {
        l.strip_prefix("ref: ")
            .and_then(|r| r.strip_suffix("\tHEAD"))
            .filter(|r| r.starts_with("refs/heads/"))
    });
    if let Some(head) = head {
        run_local(&dir, &["symbolic-ref", "HEAD", head])?;
    }
    Ok(())
}

/// Fetch every branch and tag of upstream into the mirror, pruning what
/// upstream deleted. The caller holds the mirror's lock.
pub fn refresh(config: &Config, remote: &Remote) -> Result<(), Error> {
    let dir = config.mirror_dir(remote);
    let mut cmd = upstream::git(config, remote)?;
    cmd.env("GIT_DIR", &dir).args([
        "fetch",
        "--quiet",
        "--prune",
        "--no-write-fetch-head",
        &remote.upstream.to_string(),
        "+refs/heads/*:refs/heads/*",
        "+refs/tags/*:refs/tags/*",
    ]);
    let out = upstream::output(&mut cmd, "git fetch")?;
    if !out.status.success() {
        return Err(upstream::upstream_error(remote, &out.stderr));
    }
    Ok(())
}

/// Start-up preparation of every remote: key check, pinned known_hosts,
/// mirror creation, first fetch. Any failure stops the gate.
pub fn prepare(config: &Config) -> Result<(), Error> {
    std::fs::create_dir_all(config.state_dir.join("repos")).map_err(|source| Error::Io {
        action: "create the directory",
        path: config.state_dir.join("repos"),
        source,
    })?;
    install_hooks(config)?;
    for remote in &config.remote {
        upstream::check_identity_file(remote)?;
        upstream::write_known_hosts(config, remote)?;
    }
    for remote in &config.remote {
        init(config, remote)?;
        let _lock = lock(config, remote)?;
        set_head(config, remote)?;
        refresh(config, remote)?;
        tracing::info!(remote = %remote.name, upstream = %remote.upstream, "mirror ready");
    }
    Ok(())
}
