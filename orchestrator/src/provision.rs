//! Per-bottle secrets (CA, broker key, canary) and what goes into the agent
//! after it starts: the CA in its trust store, git identity and gate URLs,
//! prompt, skills, MCP registration, and the `--cwd` working tree.
//!
//! The CA key only ever goes to egress. Nothing here runs a program the
//! bottle wrote on the host: the working tree is copied as data (no hooks,
//! no symlink followed out of it, credentials removed from `.git/config`).

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

use crate::backend::FileSpec;
use crate::lifecycle::Error;
use crate::state::StateDir;

pub const CA_CERT: &str = "secrets/ca.pem";
pub const CA_KEY: &str = "secrets/ca-key.pem";
pub const BROKER_KEY: &str = "secrets/broker-key";
pub const CANARY: &str = "secrets/canary";

/// Where the agent finds the bottle CA and the combined bundle (the plan
/// points the trust variables there).
pub const AGENT_CA_FILE: &str = crate::plan::AGENT_CA_FILE;
pub const AGENT_BUNDLE: &str = crate::plan::AGENT_CA_BUNDLE;

/// The per-bottle secrets, generated once and kept (0600) for `resume`.
#[derive(Clone)]
pub struct Secrets {
    pub ca_cert_pem: String,
    pub ca_key_pem: String,
    pub broker_key_hex: String,
    pub canary: String,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(..)")
    }
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

impl Secrets {
    pub fn generate(bottle: &str) -> Result<Secrets, Error> {
        let key = KeyPair::generate().map_err(|e| Error::Invalid {
            what: format!("CA key: {e}"),
        })?;
        let mut params =
            CertificateParams::new(Vec::<String>::new()).map_err(|e| Error::Invalid {
                what: format!("CA params: {e}"),
            })?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::CommonName, format!("bot-bottle {bottle} CA"));
        dn.push(DnType::OrganizationName, "bot-bottle");
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::days(1);
        params.not_after = now + time::Duration::days(365);
        let cert = params.self_signed(&key).map_err(|e| Error::Invalid {
            what: format!("CA certificate: {e}"),
        })?;
        Ok(Secrets {
            ca_cert_pem: cert.pem(),
            ca_key_pem: key.serialize_pem(),
            broker_key_hex: random_hex(32),
            canary: format!("bbcanary-{}", random_hex(16)),
        })
    }

    pub fn save(&self, state: &StateDir) -> Result<(), Error> {
        state.write_private(CA_CERT, self.ca_cert_pem.as_bytes())?;
        state.write_private(CA_KEY, self.ca_key_pem.as_bytes())?;
        state.write_private(BROKER_KEY, self.broker_key_hex.as_bytes())?;
        state.write_private(CANARY, self.canary.as_bytes())?;
        Ok(())
    }

    pub fn load(state: &StateDir) -> Result<Secrets, Error> {
        let s = |n| {
            state
                .read(n)
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        };
        Ok(Secrets {
            ca_cert_pem: s(CA_CERT)?,
            ca_key_pem: s(CA_KEY)?,
            broker_key_hex: s(BROKER_KEY)?,
            canary: s(CANARY)?,
        })
    }

    /// Value of a generated secret by the plan's kind name.
    pub fn generated(&self, kind: &str) -> Option<&str> {
        match kind {
            "broker-key" | "broker_key" => Some(&self.broker_key_hex),
            "canary" => Some(&self.canary),
            _ => None,
        }
    }

    /// Contents of a file the plan asks for by name (`ca.pem`, `ca.key`,
    /// `known-secrets`, or one of `host_files`: `id_<remote>`,
    /// `upstream-ca.pem`). Values that must not be stored in the state dir
    /// (token values, operator files) are markers resolved at each bring-up
    /// (see `lifecycle`).
    pub fn file_for(
        &self,
        name: &str,
        tokens: &[String],
        host_files: &BTreeMap<String, PathBuf>,
    ) -> Option<Vec<u8>> {
        match name {
            "ca.pem" => Some(self.ca_cert_pem.clone().into_bytes()),
            "ca.key" => Some(self.ca_key_pem.clone().into_bytes()),
            "known-secrets" => {
                let mut s = format!("{}\n", self.canary);
                for t in tokens {
                    s.push_str(&format!("@@bb-env:{t}@@\n"));
                }
                Some(s.into_bytes())
            }
            n => {
                let path = host_files.get(n)?;
                Some(format!("@@bb-file:{}@@", path.display()).into_bytes())
            }
        }
    }
}

/// `~/.gitconfig` for the agent: identity and the gate in place of upstreams.
pub fn gitconfig(
    user_name: Option<&str>,
    user_email: Option<&str>,
    remotes: &[(String, String, String)],
) -> String {
    let mut s = String::new();
    if user_name.is_some() || user_email.is_some() {
        s.push_str("[user]\n");
        if let Some(n) = user_name {
            s.push_str(&format!("\tname = {n}\n"));
        }
        if let Some(e) = user_email {
            s.push_str(&format!("\temail = {e}\n"));
        }
    }
    s.push_str("[safe]\n\tdirectory = *\n");
    for (_name, upstream, gate_url) in remotes {
        s.push_str(&format!(
            "[url \"{gate_url}\"]\n\tinsteadOf = {upstream}\n\tpushInsteadOf = {upstream}\n"
        ));
    }
    s
}

/// Claude Code's `~/.claude/settings.json` with supervise registered.
pub fn claude_settings(supervise_url: &str) -> String {
    serde_json::json!({
        "mcpServers": { "supervise": { "type": "http", "url": supervise_url } },
        "env": { "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_ERROR_REPORTING": "1", "DISABLE_TELEMETRY": "1" }
    })
    .to_string()
}

/// Removes credentials from a `.git/config`: `url = https://user:token@host`
/// becomes `url = https://host`, credential helpers and extra headers go.
pub fn strip_git_credentials(config: &str) -> String {
    let mut out = String::new();
    let mut skip_section = false;
    for line in config.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            skip_section = t.to_ascii_lowercase().starts_with("[credential");
        }
        if skip_section {
            continue;
        }
        let key = t
            .split('=')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if key == "extraheader"
            || key == "helper"
            || key == "askpass"
            || key == "sshcommand"
            || key == "fsmonitor"
            || key == "hookspath"
        {
            continue;
        }
        if key == "url" || key == "pushurl" {
            if let Some((k, v)) = line.split_once('=') {
                let v = v.trim();
                let cleaned = match v.split_once("://") {
                    Some((scheme, rest)) => match rest.split_once('@') {
                        Some((userinfo, host))
                            if !host.contains('/')
                                || userinfo.find('/').is_none_or(|i| i > userinfo.len()) =>
                        {
                            if userinfo.contains(':') || scheme.starts_with("http") {
                                format!("{scheme}://{host}")
                            } else {
                                v.to_string()
                            }
                        }
                        _ => v.to_string(),
                    },
                    None => v.to_string(),
                };
                out.push_str(&format!("{k}= {cleaned}\n"));
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// A tar of the working tree at `root` for `/workspace`: `.gitignore`
/// respected, no symlink pointing out of the tree, no `.git/hooks`,
/// `.git/config` without credentials. Entries are owned by `uid`.
pub fn workspace_tar(root: &Path, uid: u32) -> Result<Vec<u8>, Error> {
    let root = root.canonicalize().map_err(|e| Error::Io {
        path: root.to_path_buf(),
        source: e,
    })?;
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| Error::Io { path: p, source: e }
    };
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    let walker = ignore::WalkBuilder::new(&root)
        .hidden(false)
        .git_ignore(true)
        .git_exclude(true)
        .git_global(false)
        .parents(false)
        .follow_links(false)
        .require_git(false)
        .build();
    let mut seen = BTreeMap::new();
    for entry in walker {
        let entry = entry.map_err(|e| Error::Invalid {
            what: format!("--cwd walk: {e}"),
        })?;
        let path = entry.path();
        let rel = match path.strip_prefix(&root) {
            Ok(r) if !r.as_os_str().is_empty() => r.to_path_buf(),
            _ => continue,
        };
        let rel_s = rel.to_string_lossy().to_string();
        if rel_s.starts_with(".git/hooks") {
            continue;
        }
        seen.insert(rel_s.clone(), ());
        let meta = std::fs::symlink_metadata(path).map_err(io(path))?;
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
            let target = std::fs::read_link(path).map_err(io(path))?;
            if !link_stays_inside(&rel, &target) {
                continue;
            }
            h.set_entry_type(tar::EntryType::Symlink);
            h.set_size(0);
            h.set_mode(0o777);
            b.append_link(&mut h, &rel, &target).map_err(io(path))?;
        } else if meta.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_size(0);
            h.set_mode(0o755);
            b.append_data(&mut h, &rel, std::io::empty())
                .map_err(io(path))?;
        } else if meta.is_file() {
            let mut data = std::fs::read(path).map_err(io(path))?;
            if rel_s == ".git/config" {
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
            b.append_data(&mut h, &rel, data.as_slice())
                .map_err(io(path))?;
        }
    }
    // The walk skips .git itself unless hidden(false) picked it; git metadata
    // matters for the agent's work, so copy it even when .gitignore'd content is not.
    b.into_inner().map_err(io(&root))
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

/// A file for the agent's home (owned by the agent user).
pub fn file(path: &str, contents: impl Into<Vec<u8>>, mode: u32) -> FileSpec {
    FileSpec {
        path: path.to_string(),
        contents: contents.into(),
        mode,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_is_a_ca_and_secrets_differ_per_bottle() {
        let a = Secrets::generate("a").unwrap();
        let b = Secrets::generate("b").unwrap();
        assert!(a.ca_cert_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(a.ca_key_pem.contains("PRIVATE KEY"));
        assert_ne!(a.broker_key_hex, b.broker_key_hex);
        assert_eq!(hex::decode(&a.broker_key_hex).unwrap().len(), 32);
        assert_ne!(a.canary, b.canary);
    }

    #[test]
    fn git_credentials_are_removed() {
        let cfg = "[core]\n\thooksPath = /tmp/evil\n[remote \"origin\"]\n\turl = https://me:ghp_secret@github.com/me/app.git\n[credential]\n\thelper = store\n[http]\n\textraheader = AUTHORIZATION: basic xyz\n";
        let out = strip_git_credentials(cfg);
        assert!(!out.contains("ghp_secret"), "{out}");
        assert!(out.contains("https://github.com/me/app.git"), "{out}");
        assert!(!out.contains("helper"));
        assert!(!out.contains("extraheader"));
        assert!(!out.contains("hooksPath"));
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

    #[test]
    fn workspace_copy_respects_gitignore_and_drops_hooks() {
        let dir = tempfile::tempdir().unwrap();
        let r = dir.path();
        std::fs::create_dir_all(r.join(".git/hooks")).unwrap();
        std::fs::write(r.join(".git/hooks/pre-commit"), "#!/bin/sh\nevil").unwrap();
        std::fs::write(
            r.join(".git/config"),
            "[remote \"o\"]\n\turl = https://u:tok@h/x\n",
        )
        .unwrap();
        std::fs::write(r.join(".gitignore"), "target/\n").unwrap();
        std::fs::create_dir_all(r.join("target")).unwrap();
        std::fs::write(r.join("target/big"), "x").unwrap();
        std::fs::write(r.join("main.rs"), "fn main(){}").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", r.join("passwd")).unwrap();
        let tar_bytes = workspace_tar(r, 1000).unwrap();
        let mut a = tar::Archive::new(tar_bytes.as_slice());
        let mut names = Vec::new();
        for e in a.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().display().to_string();
            if name == ".git/config" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut e, &mut s).unwrap();
                assert!(!s.contains("tok"));
            }
            names.push(name);
        }
        assert!(names.contains(&"main.rs".to_string()), "{names:?}");
        assert!(!names.iter().any(|n| n.starts_with("target")), "{names:?}");
        assert!(!names.iter().any(|n| n.contains("hooks")), "{names:?}");
        assert!(!names.contains(&"passwd".to_string()), "{names:?}");
    }
}
