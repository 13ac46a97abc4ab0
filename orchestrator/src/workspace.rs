//! The `--cwd` copy: the operator's working tree as a tar for `/workspace`.
//!
//! It owns what of the tree the agent may see. It must never run anything
//! the tree holds (no hook, no filter, no include is executed: the copy is
//! data), never follow a symlink out of the tree, and never carry a
//! credential: every git config in the tree (`config`, `config.worktree`,
//! submodules' and worktrees' configs, files pulled in by `include.path`)
//! loses its credentials, URL section headers included, and the files that
//! only hold credentials (`.git-credentials`, `.netrc`, `.git/remotes/*`,
//! `.git/branches/*`) stay out.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

use regex::Regex;

use crate::error::Error;

/// A tar of the working tree at `root`: `.gitignore` respected, no symlink
/// pointing out of the tree, no git hooks, git configs without credentials,
/// credential files left out. Entries are owned by `uid`.
pub fn tar_of(root: &Path, uid: u32) -> Result<Vec<u8>, Error> {
    let root = root.canonicalize().map_err(|e| Error::Io {
        path: root.to_path_buf(),
        source: e,
    })?;
    let entries = walk(&root)?;
    let configs = git_configs(&root, &entries);
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| Error::Io { path: p, source: e }
    };
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    for rel in &entries {
        let path = root.join(rel);
        let meta = std::fs::symlink_metadata(&path).map_err(io(&path))?;
        let mut h = tar::Header::new_gnu();
        h.set_uid(u64::from(uid));
        h.set_gid(u64::from(uid));
        h.set_mtime(
            meta.modified()
                .ok()
                .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs()),
        );
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path).map_err(io(&path))?;
            if !link_stays_inside(rel, &target) {
                continue;
            }
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            h.set_mode(0o777);
            b.append_link(&mut h, rel, &target).map_err(io(&path))?;
        } else if meta.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            h.set_mode(0o755);
            b.append_data(&mut h, rel, std::io::empty())
                .map_err(io(&path))?;
        } else if meta.is_file() {
            let mut data = std::fs::read(&path).map_err(io(&path))?;
            if configs.contains(rel) {
                data = strip_git_credentials(&String::from_utf8_lossy(&data)).into_bytes();
            }
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(data.len() as u64);
            h.set_mode(
                if std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 != 0 {
                    0o755
                } else {
                    0o644
                },
            );
            b.append_data(&mut h, rel, data.as_slice())
                .map_err(io(&path))?;
        }
    }
    b.into_inner().map_err(io(&root))
}

/// Removes credentials from one git config file: user info with a password
/// (any scheme) or on http(s) goes from every URL, section headers such as
/// `[url "https://user:token@host/"]` included; `[credential]` sections,
/// credential helpers, askpass, extra headers, `sshCommand`, `fsmonitor`
/// and `hooksPath` go. A value continued over several lines goes whole.
pub fn strip_git_credentials(config: &str) -> String {
    let mut out = String::new();
    let mut skip_section = false;
    let mut lines = config.split_inclusive('\n');
    while let Some(first) = lines.next() {
        let mut logical = first.to_string();
        while continues(&logical) {
            match lines.next() {
                Some(next) => logical.push_str(next),
                None => break,
            }
        }
        let (header, rest) = split_header(&logical);
        if let Some(h) = header {
            skip_section = h
                .trim_start()
                .trim_start_matches('[')
                .trim_start()
                .to_ascii_lowercase()
                .starts_with("credential");
            if !skip_section {
                out.push_str(&strip_userinfo(h));
                if rest.trim().is_empty() {
                    out.push_str(rest);
                    continue;
                }
                out.push('\n');
            }
        }
        if skip_section {
            continue;
        }
        let key = rest
            .split('=')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if DROPPED_KEYS.contains(&key.as_str()) {
            continue;
        }
        out.push_str(&strip_userinfo(rest));
    }
    out
}

/// Keys that only carry credentials, or make the agent's git run a program
/// the operator's tree chose.
const DROPPED_KEYS: [&str; 7] = [
    "extraheader",
    "helper",
    "askpass",
    "sshcommand",
    "fsmonitor",
    "hookspath",
    "cookiefile",
];

/// Every path under `root` the agent gets, in walk order, relative.
fn walk(root: &Path) -> Result<Vec<PathBuf>, Error> {
    let walker = ignore::WalkBuilder::new(root)
        .hidden(false)
        .git_ignore(true)
        .git_exclude(true)
        .git_global(false)
        .parents(false)
        .follow_links(false)
        .require_git(false)
        .build();
    let mut out = Vec::new();
    for entry in walker {
        let entry = entry.map_err(|e| Error::Invalid {
            what: format!("--cwd walk: {e}"),
        })?;
        let rel = match entry.path().strip_prefix(root) {
            Ok(r) if !r.as_os_str().is_empty() => r.to_path_buf(),
            _ => continue,
        };
        if !left_out(root, &rel) {
            out.push(rel);
        }
    }
    Ok(out)
}

/// Paths never copied: the hooks, remotes and branches of every git dir
/// (a submodule's and a nested repository's too), and files that only hold
/// credentials.
fn left_out(root: &Path, rel: &Path) -> bool {
    let file = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
    if matches!(file, ".git-credentials" | ".netrc" | "_netrc") {
        return true;
    }
    rel.ancestors().any(|a| {
        matches!(
            a.file_name().and_then(|n| n.to_str()),
            Some("hooks" | "remotes" | "branches")
        ) && a.parent().is_some_and(|d| is_git_dir(root, d))
    })
}

/// Whether `dir` (relative to the tree's root) is a git dir: a `.git`
/// directory, or one holding `HEAD` and `objects` (bare repositories,
/// submodules' git dirs) or `HEAD` and `commondir` (linked worktrees).
fn is_git_dir(root: &Path, dir: &Path) -> bool {
    if dir.file_name().is_some_and(|n| n == ".git") {
        return true;
    }
    let d = root.join(dir);
    d.join("HEAD").is_file() && (d.join("objects").is_dir() || d.join("commondir").is_file())
}

/// The git config files among `entries`: `config` and `config.*` in a git
/// dir, and every file inside the tree that one of them includes, followed
/// transitively.
fn git_configs(root: &Path, entries: &[PathBuf]) -> BTreeSet<PathBuf> {
    let present: BTreeSet<&PathBuf> = entries.iter().collect();
    let mut configs: BTreeSet<PathBuf> = entries
        .iter()
        .filter(|rel| {
            let name = rel.file_name().and_then(|n| n.to_str()).unwrap_or("");
            (name == "config" || name.starts_with("config."))
                && rel.parent().is_some_and(|d| is_git_dir(root, d))
        })
        .cloned()
        .collect();
    let mut todo: Vec<PathBuf> = configs.iter().cloned().collect();
    while let Some(rel) = todo.pop() {
        let Ok(text) = std::fs::read_to_string(root.join(&rel)) else {
            continue;
        };
        for inc in include_paths(&text) {
            let Some(target) = resolve_include(&rel, &inc) else {
                continue;
            };
            if present.contains(&target) && configs.insert(target.clone()) {
                todo.push(target);
            }
        }
    }
    configs
}

/// Values of `path` in `[include]` and `[includeIf "…"]` sections.
fn include_paths(config: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut in_include = false;
    for line in config.lines() {
        let (header, rest) = split_header(line);
        if let Some(h) = header {
            let name = h
                .trim()
                .trim_start_matches('[')
                .trim_start()
                .to_ascii_lowercase();
            in_include = name.starts_with("include");
        }
        if !in_include {
            continue;
        }
        if let Some((k, v)) = rest.split_once('=') {
            if k.trim().eq_ignore_ascii_case("path") {
                out.push(v.trim().trim_matches('"').to_string());
            }
        }
    }
    out
}

/// An include's path relative to the tree's root, as git resolves it
/// (relative to the including file); `None` when it leaves the tree or
/// starts at the home directory or the root (not copied anyway).
fn resolve_include(config: &Path, include: &str) -> Option<PathBuf> {
    let inc = Path::new(include);
    if include.starts_with('~') || inc.is_absolute() {
        return None;
    }
    let mut out = config.parent().map(Path::to_path_buf).unwrap_or_default();
    for c in inc.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            _ => return None,
        }
    }
    Some(out)
}

/// Splits `[section "sub"] rest` into its header and what follows on the
/// same line (git allows a key there); a line without a header is all rest.
fn split_header(line: &str) -> (Option<&str>, &str) {
    let t = line.trim_start();
    if !t.starts_with('[') {
        return (None, line);
    }
    // The header ends at the first `]` outside the quoted subsection.
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in t.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ']' if !quoted => {
                let end = line.len() - t.len() + i + 1;
                return (Some(&line[..end]), &line[end..]);
            }
            _ => {}
        }
    }
    (Some(line), "")
}

/// Whether a line's value goes on in the next line (an unquoted trailing
/// backslash before the newline).
fn continues(line: &str) -> bool {
    let body = line.trim_end_matches(['\n', '\r']);
    let trailing = body.bytes().rev().take_while(|&b| b == b'\\').count();
    trailing % 2 == 1
}

/// `scheme://user:password@host` → `scheme://host` anywhere in `text`; for
/// http(s) a user name alone goes too (it is often the token itself), for
/// ssh-like schemes it stays (`ssh://git@host` holds no secret).
fn strip_userinfo(text: &str) -> String {
    static RE: OnceLock<Regex> = OnceLock::new();
    let re = RE.get_or_init(|| {
        Regex::new(r#"(?i)\b([a-z][a-z0-9+.-]*)://([^/@\s"'\]\\]*)@"#).expect("literal regex")
    });
    re.replace_all(text, |c: &regex::Captures<'_>| {
        let scheme = &c[1];
        if c[2].contains(':') || scheme.to_ascii_lowercase().starts_with("http") {
            format!("{scheme}://")
        } else {
            c[0].to_string()
        }
    })
    .into_owned()
}

/// Whether a symlink at `rel` pointing to `target` resolves inside the tree.
fn link_stays_inside(rel: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth: i64 = rel.components().count() as i64 - 1;
    for c in target.components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            _ => return false,
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_credentials_are_removed_from_values_and_section_headers() {
        let cfg = "[core]\n\thooksPath = /tmp/evil\n[remote \"origin\"]\n\turl = https://me:ghp_secret@github.com/me/app.git\n\tpushurl = ssh://git@github.com/me/app.git\n[credential]\n\thelper = store\n[credential \"https://x\"]\n\tusername = bob\n[http]\n\textraheader = AUTHORIZATION: basic \\\n\t  eHl6c2VjcmV0\n\tpostBuffer = 1000\n[url \"https://oauth2:glpat-hdrsecret@gitlab.example.com/\"]\n\tinsteadOf = https://gitlab.example.com/\n[http \"https://tok_user@host.example/\"] sslVerify = true\n";
        let out = strip_git_credentials(cfg);
        for secret in [
            "ghp_secret",
            "glpat-hdrsecret",
            "eHl6c2VjcmV0",
            "tok_user",
            "helper",
            "extraheader",
            "hooksPath",
            "bob",
        ] {
            assert!(!out.contains(secret), "{secret} in:\n{out}");
        }
        assert!(out.contains("https://github.com/me/app.git"), "{out}");
        assert!(out.contains("ssh://git@github.com/me/app.git"), "{out}");
        assert!(
            out.contains("[url \"https://gitlab.example.com/\"]"),
            "{out}"
        );
        assert!(out.contains("postBuffer = 1000"), "{out}");
        assert!(out.contains("sslVerify = true"), "{out}");
    }

    #[test]
    fn symlinks_out_of_the_tree_are_refused() {
        assert!(link_stays_inside(Path::new("a/b"), Path::new("../c")));
        assert!(!link_stays_inside(
            Path::new("a"),
            Path::new("../../etc/passwd")
        ));
        assert!(!link_stays_inside(Path::new("a"), Path::new("/etc/passwd")));
    }

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// Name → contents of every regular file in the tar.
    fn unpack(tar_bytes: &[u8]) -> std::collections::BTreeMap<String, String> {
        let mut a = tar::Archive::new(tar_bytes);
        let mut files = std::collections::BTreeMap::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            let mut s = String::new();
            let _ = std::io::Read::read_to_string(&mut e, &mut s);
            files.insert(name, s);
        }
        files
    }

    #[test]
    fn copy_respects_gitignore_and_drops_hooks_and_links_out() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        write(r, ".git/hooks/pre-commit", "#!/bin/sh\nevil");
        write(r, ".git/HEAD", "ref: refs/heads/main\n");
        write(r, ".gitignore", "target/\n");
        write(r, "target/big", "x");
        write(r, "main.rs", "fn main(){}");
        std::os::unix::fs::symlink("/etc/passwd", r.join("passwd")).unwrap();
        let files = unpack(&tar_of(r, 1000).unwrap());
        let names: Vec<&String> = files.keys().collect();
        assert!(files.contains_key("main.rs"), "{names:?}");
        assert!(!names.iter().any(|n| n.starts_with("target")), "{names:?}");
        assert!(!names.iter().any(|n| n.contains("hooks")), "{names:?}");
        assert!(!files.contains_key("passwd"), "{names:?}");
    }

    #[test]
    fn every_git_config_in_the_tree_loses_its_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        let cred = |n: &str| format!("[remote \"o\"]\n\turl = https://u:tok-{n}@h.example/x\n");
        write(r, ".git/HEAD", "ref: refs/heads/main\n");
        write(
            r,
            ".git/config",
            &format!("{}[include]\n\tpath = extra.inc\n[includeIf \"gitdir:/\"]\n\tpath = ../shared/git.inc\n", cred("top")),
        );
        write(r, ".git/extra.inc", &cred("included"));
        write(
            r,
            "shared/git.inc",
            "[url \"https://u:tok-ifinc@h.example/\"]\n\tinsteadOf = x\n[include]\n\tpath = deeper.inc\n",
        );
        write(r, "shared/deeper.inc", &cred("transitive"));
        write(r, ".git/config.worktree", &cred("worktree"));
        write(r, ".git/modules/lib/HEAD", "0000\n");
        write(r, ".git/modules/lib/objects/info/packs", "");
        write(
            r,
            ".git/modules/lib/remotes/origin",
            "URL: https://u:tok-subremotes@h.example/x\n",
        );
        write(r, ".git/refs/remotes/origin/main", "0000\n");
        write(r, ".git/modules/lib/config", &cred("submodule"));
        write(r, ".git/modules/lib/hooks/post-checkout", "evil");
        write(r, ".git/worktrees/wt/HEAD", "0000\n");
        write(r, ".git/worktrees/wt/commondir", "../..\n");
        write(r, ".git/worktrees/wt/config.worktree", &cred("wt"));
        write(r, "vendor/bare.git/HEAD", "ref: refs/heads/main\n");
        write(r, "vendor/bare.git/objects/info/packs", "");
        write(r, "vendor/bare.git/config", &cred("bare"));
        write(
            r,
            ".git/remotes/origin",
            "URL: https://u:tok-remotes@h.example/x\n",
        );
        write(r, ".git/branches/b", "https://u:tok-branches@h.example/x\n");
        write(r, ".git-credentials", "https://u:tok-store@h.example\n");
        write(r, ".netrc", "machine h login u password tok-netrc\n");
        write(r, "sub/.netrc", "machine h login u password tok-subnetrc\n");
        write(
            r,
            "README.md",
            "a url in a plain file stays: https://u:keep@h.example\n",
        );
        let files = unpack(&tar_of(r, 1000).unwrap());
        let all: String = files.iter().map(|(n, c)| format!("== {n}\n{c}")).collect();
        assert!(!all.contains("tok-"), "a credential was copied:\n{all}");
        assert!(!files.keys().any(|n| n.contains("hooks")), "{all}");
        assert!(
            files.contains_key(".git/refs/remotes/origin/main"),
            "remote-tracking refs are not `.git/remotes`: {all}"
        );
        assert!(
            files["README.md"].contains("https://u:keep@h.example"),
            "only git configs are edited"
        );
        assert!(
            files[".git/config"].contains("url = https://h.example/x"),
            "{all}"
        );
        assert!(
            files["shared/deeper.inc"].contains("https://h.example/x"),
            "{all}"
        );
    }
}
