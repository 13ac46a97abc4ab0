//! git remotes: name, `ssh://` upstream and its pinned host key, the refs
//! git-gate lets the agent push, and the paths it protects.

use std::collections::BTreeMap;
use std::path::Path;

use super::super::raw;
use super::super::{HostKey, HostPattern, Origin, Remote, SshUpstream};
use super::{host_pattern, is_plain_name, DEFAULT_PROTECTED_PATHS, DEFAULT_PUSH_REFS};
use crate::error::Problem;
use crate::home::expand_tilde;

pub(super) fn remote(
    file: &Path,
    i: usize,
    r: raw::RawRemote,
    problems: &mut Vec<Problem>,
    seen: &mut BTreeMap<String, usize>,
) -> Option<Remote> {
    let o = Origin {
        file: file.to_path_buf(),
        key: format!("git.remotes[{i}]"),
    };
    let before = problems.len();
    check_name(&o, i, &r.name, problems, seen);
    let upstream = upstream(&r.upstream)
        .map_err(|m| problems.push(o.problem("Upstream", m)))
        .ok();
    let key = host_key(&r.known_host_key)
        .map_err(|m| problems.push(o.problem("KnownHostKey", m)))
        .ok();
    if r.identity_file.trim().is_empty() {
        problems.push(o.problem(
            "IdentityFile",
            "expected the path of the ssh private key git-gate pushes with, found an empty string",
        ));
    }
    let push_refs = push_refs(&o, r.push_refs, problems);
    let protected_paths = protected_paths(&o, r.protected_paths.unwrap_or_default(), problems);
    let allow_fingerprints = r.allow_fingerprints.unwrap_or_default();
    for (j, f) in allow_fingerprints.iter().enumerate() {
        if f.is_empty() || f.contains(char::is_whitespace) {
            problems.push(o.problem(
                &format!("AllowFingerprints[{j}]"),
                format!("expected a finding fingerprint, found {f:?}"),
            ));
        }
    }
    if problems.len() != before {
        return None;
    }
    Some(Remote {
        name: r.name,
        upstream_url: r.upstream,
        upstream: upstream?,
        identity_file: expand_tilde(&r.identity_file),
        known_host_key: key?,
        push_refs,
        protected_paths,
        allow_fingerprints,
        origin: o,
    })
}

fn check_name(
    o: &Origin,
    i: usize,
    name: &str,
    problems: &mut Vec<Problem>,
    seen: &mut BTreeMap<String, usize>,
) {
    if !is_plain_name(name) {
        problems.push(o.problem(
            "Name",
            format!("expected a remote name (letters, digits, `-`, `_`, `.`), found {name:?}"),
        ));
    } else if let Some(first) = seen.insert(name.to_string(), i) {
        problems.push(o.problem(
            "Name",
            format!("remote names must be unique: `{name}` is also git.remotes[{first}]"),
        ));
    }
}

/// git-gate reaches the upstream through an egress tunnel route, so its host
/// must be one a route could name exactly.
fn upstream(url: &str) -> Result<SshUpstream, String> {
    ssh_upstream(url).and_then(|u| match host_pattern(&u.host) {
        Ok(HostPattern::Exact(_)) => Ok(u),
        Ok(HostPattern::Wildcard(_)) | Err(_) => Err(format!(
            "expected an ssh:// URL whose host is a DNS name with at least two labels \
             (git-gate reaches it through an egress tunnel route, and routes name hosts), found {url:?}"
        )),
    })
}

fn push_refs(o: &Origin, refs: Option<Vec<String>>, problems: &mut Vec<Problem>) -> Vec<String> {
    match refs {
        None => DEFAULT_PUSH_REFS.iter().map(|s| s.to_string()).collect(),
        Some(v) => {
            for (j, p) in v.iter().enumerate() {
                if !p.starts_with("refs/")
                    || p.starts_with('+')
                    || p.contains(':')
                    || p.contains(char::is_whitespace)
                    || p.contains("..")
                {
                    problems.push(o.problem(&format!("PushRefs[{j}]"), format!("expected a ref pattern like `refs/heads/agent/*` (no `+`, no `:`), found {p:?}")));
                }
            }
            if v.is_empty() {
                problems.push(o.problem("PushRefs", "expected at least one ref pattern (omit the key for the default `refs/heads/agent/*`)"));
            }
            v
        }
    }
}

/// An explicit list adds to git-gate's defaults, never removes them.
fn protected_paths(o: &Origin, extra: Vec<String>, problems: &mut Vec<Problem>) -> Vec<String> {
    let mut protected_paths: Vec<String> = DEFAULT_PROTECTED_PATHS
        .iter()
        .map(|s| s.to_string())
        .collect();
    for (j, p) in extra.into_iter().enumerate() {
        if p.is_empty() || p.starts_with('/') {
            problems.push(o.problem(
                &format!("ProtectedPaths[{j}]"),
                format!("expected a path glob relative to the repository root, found {p:?}"),
            ));
        } else if globset::Glob::new(&p).is_err() {
            problems.push(o.problem(
                &format!("ProtectedPaths[{j}]"),
                format!("expected a path glob, found {p:?}, which is not a valid glob"),
            ));
        } else if !protected_paths.contains(&p) {
            protected_paths.push(p);
        }
    }
    protected_paths
}

/// `ssh://[user@]host[:port]/path`.
pub(super) fn ssh_upstream(s: &str) -> Result<SshUpstream, String> {
    let expected = "expected an ssh:// URL with a host, like `ssh://git@github.com/me/app.git`";
    let Some(rest) = s.strip_prefix("ssh://") else {
        return Err(format!("{expected}, found {s:?}"));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let (user, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u.to_string()), h),
        None => (None, authority),
    };
    let (host, port) = if let Some(stripped) = hostport.strip_prefix('[') {
        match stripped.split_once(']') {
            Some((h, p)) => (h.to_string(), p.strip_prefix(':')),
            None => return Err(format!("{expected}, found {s:?}")),
        }
    } else {
        match hostport.split_once(':') {
            Some((h, p)) => (h.to_string(), Some(p)),
            None => (hostport.to_string(), None),
        }
    };
    if host.is_empty() {
        return Err(format!("{expected}, found {s:?} (no host)"));
    }
    if !host
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':'))
    {
        return Err(format!(
            "{expected}, found {s:?} (host {host:?} is not a host name)"
        ));
    }
    let port = match port {
        None | Some("") => 22,
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => {
                return Err(format!(
                    "{expected}, found {s:?} (port {p:?} is not 1-65535)"
                ))
            }
        },
    };
    if path.len() <= 1 {
        return Err(format!("{expected}, found {s:?} (no repository path)"));
    }
    Ok(SshUpstream {
        user,
        host: host.to_ascii_lowercase(),
        port,
        path: path.to_string(),
    })
}

/// A `KnownHostKey`, parsed by git-gate's own parser: a key type git-gate
/// refuses (`ssh-dss`) is refused here, where the operator reads the file.
pub(super) fn host_key(s: &str) -> Result<HostKey, String> {
    let expected = "expected an ssh public host key `keytype AAAA...` (as in known_hosts, a leading host pattern is accepted)";
    let key: contract::git_gate::HostKey = s.parse().map_err(|why| {
        let shown: String = s.chars().take(40).collect();
        format!("{expected}, found {shown:?}: {why}")
    })?;
    Ok(HostKey {
        key_type: key.key_type().to_string(),
        base64: key.base64().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    #[test]
    fn upstreams() {
        let u = ssh_upstream("ssh://git@github.com/me/app.git").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.user.as_deref()),
            ("github.com", 22, Some("git"))
        );
        assert_eq!(
            ssh_upstream("ssh://git@gitlab.example:2222/a.git")
                .unwrap()
                .port,
            2222
        );
        for bad in [
            "git@github.com:me/app.git",
            "https://github.com/me/app",
            "ssh:///x.git",
            "ssh://host",
            "ssh://h:0/x",
        ] {
            assert!(ssh_upstream(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn host_keys() {
        // ssh-ed25519 blob: len(11) "ssh-ed25519" len(32) key
        let mut blob = vec![0, 0, 0, 11];
        blob.extend_from_slice(b"ssh-ed25519");
        blob.extend_from_slice(&[0, 0, 0, 32]);
        blob.extend_from_slice(&[7u8; 32]);
        let b64 = base64::engine::general_purpose::STANDARD.encode(&blob);
        assert!(host_key(&format!("ssh-ed25519 {b64}")).is_ok());
        assert!(host_key(&format!("github.com ssh-ed25519 {b64} comment")).is_ok());
        assert!(host_key(&format!("ssh-rsa {b64}")).is_err());
        // git-gate refuses DSA keys: so does the manifest, naming the types it takes.
        let mut dss = vec![0, 0, 0, 7];
        dss.extend_from_slice(b"ssh-dss");
        dss.extend_from_slice(&[7u8; 40]);
        let dss = base64::engine::general_purpose::STANDARD.encode(&dss);
        let e = host_key(&format!("ssh-dss {dss}")).unwrap_err();
        assert!(e.contains("ssh-ed25519") && !e.contains("ssh-dss,"), "{e}");
        assert!(host_key("ssh-ed25519 !!!").is_err());
        assert!(host_key("hello").is_err());
    }
}
