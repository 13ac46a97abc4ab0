//! Per-bottle secrets (CA, broker key, canary) and what goes into the agent
//! after it starts: the CA in its trust store, git identity and gate URLs,
//! prompt, skills, MCP registration, and the `--cwd` working tree.
//!
//! The CA key only ever goes to egress, the real tokens only to cred-proxy
//! (see `known-secrets`). The `--cwd` copy is `workspace`'s.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rand::RngCore;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

use crate::backend::FileSpec;
use crate::error::Error;
use crate::state::StateDir;

pub const CA_CERT: &str = "secrets/ca.pem";
pub const CA_KEY: &str = "secrets/ca-key.pem";
pub const BROKER_KEY: &str = "secrets/broker-key";
pub const CANARY: &str = "secrets/canary";

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
    /// (forwarded env values, operator files) are markers resolved at each
    /// bring-up (see `lifecycle`).
    ///
    /// `known-secrets` holds only what the agent can hold itself: the canary
    /// and the host variables forwarded into its environment. The real
    /// tokens never go there: egress and git-gate must not hold them.
    pub fn file_for(
        &self,
        name: &str,
        forwarded: &[String],
        host_files: &BTreeMap<String, PathBuf>,
    ) -> Option<Vec<u8>> {
        match name {
            "ca.pem" => Some(self.ca_cert_pem.clone().into_bytes()),
            "ca.key" => Some(self.ca_key_pem.clone().into_bytes()),
            "known-secrets" => {
                let mut s = format!("{}\n", self.canary);
                for var in forwarded {
                    s.push_str(&format!("@@bb-known:{var}@@\n"));
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

/// Whether a value forwarded into the agent is scanned for as a known
/// secret: 16 characters or more and not a host name, address or URL
/// naming one (`GH_HOST=github.com` must not block every request naming
/// GitHub). A URL with credentials in it stays a secret.
pub fn is_known_secret(value: &str) -> bool {
    let v = value.trim();
    v.chars().count() >= 16 && !names_a_host(v)
}

/// The lines of `known-secrets` for one forwarded value. The file holds one
/// secret a line, so a value of several lines (a PEM key) gives each of its
/// lines that could be a secret on its own; a short last line of base64
/// would otherwise block every request that contains it.
pub fn known_secret_lines(value: &str) -> Vec<&str> {
    value
        .lines()
        .map(str::trim)
        .filter(|l| is_known_secret(l))
        .collect()
}

/// A host name, `host:port`, an IP address or a URL without user info.
fn names_a_host(v: &str) -> bool {
    let host = match v.split_once("://") {
        Some((scheme, rest)) => {
            if scheme.is_empty()
                || !scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+.-".contains(c))
            {
                return false;
            }
            let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
            if authority.contains('@') {
                return false;
            }
            authority
        }
        None => v,
    };
    if host.parse::<std::net::IpAddr>().is_ok() || host.parse::<std::net::SocketAddr>().is_ok() {
        return true;
    }
    let name = match host.rsplit_once(':') {
        Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.contains('.')
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        // A dotted run of digits and hex that no TLD ends with is not a name.
        && name.rsplit('.').next().is_some_and(|tld| tld.bytes().any(|b| b.is_ascii_alphabetic()))
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
    fn known_secrets_are_values_that_could_be_secrets_never_host_names() {
        assert!(is_known_secret("sk-live-0123456789abcdef"));
        assert!(is_known_secret(
            "https://me:tok3n0123456789@git.example.com/x"
        ));
        for v in [
            "short-value",
            "api.example.test",
            "github.enterprise.example.com",
            "registry.example.com:5000",
            "https://api.example.com/v1/models",
            "2001:db8::1234:5678",
            "[2001:db8::1]:8080",
            "192.168.100.200:8080",
        ] {
            assert!(!is_known_secret(v), "{v}");
        }
        assert_eq!(
            known_secret_lines(
                "-----BEGIN KEY-----\nMIIBVwIBADANBgkqhkiG9w0B\nAQE=\n-----END KEY-----\n"
            ),
            vec![
                "-----BEGIN KEY-----",
                "MIIBVwIBADANBgkqhkiG9w0B",
                "-----END KEY-----"
            ]
        );
    }
}
