//! Everything that talks to an upstream over ssh: the pinned ssh command,
//! the cleared environment git runs in, the identity-file checks, and the
//! translation of ssh's stderr into errors an operator can act on.
//!
//! Never: let ssh read a user or system ssh config, fall back to another
//! key, prompt, or accept a host key other than the pinned one.

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::config::{Config, Remote};
use crate::error::Error;

/// Variables a git child may keep from the gate's own environment. In
/// pre-receive the quarantine variables are what make the pushed objects
/// visible (git keeps them in a quarantine directory until the hook accepts the push,
/// and a child that loses these variables cannot read them); everything else is dropped.
const KEEP_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "GIT_DIR",
    "GIT_OBJECT_DIRECTORY",
    "GIT_ALTERNATE_OBJECT_DIRECTORIES",
    "GIT_QUARANTINE_PATH",
];

/// The known_hosts file holding only this remote's pinned key.
pub fn known_hosts_path(config: &Config, remote: &Remote) -> PathBuf {
    config
        .state_dir
        .join("ssh")
        .join(format!("{}.known_hosts", remote.name))
}

/// Write the pinned known_hosts file for `remote` (rewritten at every start,
/// so a changed `known_host_key` takes effect).
pub fn write_known_hosts(config: &Config, remote: &Remote) -> Result<(), Error> {
    let path = known_hosts_path(config, remote);
    let dir = path.parent().expect("known_hosts has a parent");
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        action: "create the directory",
        path: dir.to_path_buf(),
        source,
    })?;
    std::fs::write(&path, remote.known_hosts_line()).map_err(|source| Error::Io {
        action: "write",
        path: path.clone(),
        source,
    })
}

/// The identity file must exist, be a regular file, be readable by us and
/// not be readable or writable by group or others (ssh would refuse it
/// later with a less helpful message).
pub fn check_identity_file(remote: &Remote) -> Result<(), Error> {
    let path = &remote.identity_file;
    let err = |problem: String| Error::IdentityFile {
        remote: remote.name.to_string(),
        path: path.clone(),
        problem,
    };
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => err("does not exist".into()),
        _ => err(format!("cannot be inspected: {e}")),
    })?;
    if !meta.is_file() {
        return Err(err("is not a regular file".into()));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(err(format!(
            "is accessible by group or others (mode {mode:04o}); it must be 0600 or stricter"
        )));
    }
    std::fs::File::open(path).map_err(|e| err(format!("cannot be read: {e}")))?;
    Ok(())
}

fn shell_quote(path: &Path) -> Result<String, Error> {
    let s = path.to_str().ok_or_else(|| Error::Io {
        action: "use the path",
        path: path.to_path_buf(),
        source: std::io::Error::other("not valid UTF-8"),
    })?;
    if s.contains('\'') {
        return Err(Error::Io {
            action: "use the path",
            path: path.to_path_buf(),
            source: std::io::Error::other("it contains a single quote"),
        });
    }
    Ok(format!("'{s}'"))
}

/// `GIT_SSH_COMMAND` for `remote`: no config file, only the given key, no
/// prompts, strict checking against the pinned known_hosts file; through
/// egress's CONNECT tunnel when `upstream_proxy` is set.
pub fn ssh_command(config: &Config, remote: &Remote) -> Result<String, Error> {
    let mut cmd = format!(
        "ssh -F /dev/null -i {key} -o IdentitiesOnly=yes -o BatchMode=yes \
         -o StrictHostKeyChecking=yes -o UserKnownHostsFile={kh} \
         -o GlobalKnownHostsFile=/dev/null -o UpdateHostKeys=no \
         -o CheckHostIP=no -o ConnectTimeout=20 -o ServerAliveInterval=15 \
         -o ServerAliveCountMax=4 -o LogLevel=ERROR",
        key = shell_quote(&remote.identity_file)?,
        kh = shell_quote(&known_hosts_path(config, remote))?,
    );
    if let Some(proxy) = &config.upstream_proxy {
        let exe = std::env::current_exe().map_err(|source| Error::Spawn {
            program: "git-gate (own path)".into(),
            source,
        })?;
        // ssh expands %h/%p itself; the host is validated, never shell text.
        cmd.push_str(&format!(
            " -o ProxyCommand=\"{} connect-proxy {} %h %p\"",
            shell_quote(&exe)?,
            proxy
        ));
    }
    Ok(cmd)
}

/// A `git` command with the environment cleared down to what git needs,
/// plus the pinned ssh command for `remote`.
pub fn git(config: &Config, remote: &Remote) -> Result<Command, Error> {
    let mut cmd = Command::new("git");
    cmd.env_clear();
    for (k, v) in kept_env() {
        cmd.env(k, v);
    }
    if std::env::var_os("PATH").is_none() {
        cmd.env("PATH", "/usr/local/bin:/usr/bin:/bin");
    }
    cmd.env("GIT_SSH_COMMAND", ssh_command(config, remote)?)
        .env("GIT_SSH_VARIANT", "ssh")
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("LC_ALL", "C")
        .stdin(Stdio::null());
    Ok(cmd)
}

fn kept_env() -> Vec<(String, OsString)> {
    KEEP_ENV
        .iter()
        .filter_map(|k| std::env::var_os(k).map(|v| (k.to_string(), v)))
        .collect()
}

/// Run a command, capturing its output.
pub fn output(cmd: &mut Command, what: &str) -> Result<Output, Error> {
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.output().map_err(|source| Error::Spawn {
        program: what.to_string(),
        source,
    })
}

/// Turn a failed upstream git/ssh run into an error naming the cause.
pub fn upstream_error(remote: &Remote, stderr: &[u8]) -> Error {
    let text = String::from_utf8_lossy(stderr);
    let detail: String = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ");
    let detail: String = detail.chars().take(600).collect();
    let has = |s: &str| text.contains(s);
    let problem = if has("Host key verification failed")
        || has("REMOTE HOST IDENTIFICATION HAS CHANGED")
        || has("host key is known for")
    {
        format!(
            "host key mismatch: the key upstream presented is not the pinned known_host_key ({} {}…); \
             ssh said: {detail}",
            remote.known_host_key.key_type(),
            remote
                .known_host_key
                .base64()
                .chars()
                .skip(16)
                .take(12)
                .collect::<String>()
        )
    } else if has("Could not resolve hostname") {
        format!("unreachable: the host name does not resolve; ssh said: {detail}")
    } else if has("Connection refused")
        || has("timed out")
        || has("No route to host")
        || has("Network is unreachable")
        || has("Connection closed")
        || has("Connection reset")
        || has("kex_exchange_identification")
        || has("git-gate connect-proxy")
    {
        format!("unreachable: {detail}")
    } else if has("Permission denied") {
        format!("upstream refused the gate's key ({detail})")
    } else if has("does not appear to be a git repository")
        || has("not found")
        || has("No such file")
    {
        format!("no repository at that path ({detail})")
    } else if detail.is_empty() {
        "failed without a message".to_string()
    } else {
        detail
    };
    Error::Upstream {
        remote: remote.name.to_string(),
        url: remote.upstream.to_string(),
        problem,
    }
}
