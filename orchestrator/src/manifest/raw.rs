//! The manifest front matter exactly as written (serde, unknown keys refused).
//! Shapes only; the rules that need more than a type live in `validate`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawBottle {
    pub extends: Option<String>,
    pub env: Option<BTreeMap<String, serde_yaml::Value>>,
    pub agent_provider: Option<RawProvider>,
    pub skills: Option<Vec<String>>,
    pub git: Option<RawGit>,
    pub egress: Option<RawEgress>,
    pub supervise: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Template {
    Claude,
    Codex,
}

impl Template {
    pub fn as_str(self) -> &'static str {
        match self {
            Template::Claude => "claude",
            Template::Codex => "codex",
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    pub template: Option<Template>,
    pub dockerfile: Option<String>,
    pub auth_token: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawGit {
    pub user: Option<RawGitUser>,
    pub remotes: Option<Vec<RawRemote>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawGitUser {
    pub name: Option<String>,
    pub email: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRemote {
    #[serde(rename = "Name")]
    pub name: String,
    #[serde(rename = "Upstream")]
    pub upstream: String,
    #[serde(rename = "IdentityFile")]
    pub identity_file: String,
    #[serde(rename = "KnownHostKey")]
    pub known_host_key: String,
    #[serde(rename = "PushRefs")]
    pub push_refs: Option<Vec<String>>,
    #[serde(rename = "ProtectedPaths")]
    pub protected_paths: Option<Vec<String>>,
    #[serde(rename = "AllowFingerprints")]
    pub allow_fingerprints: Option<Vec<String>>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawEgress {
    pub attach_networks: Option<Vec<String>>,
    pub ssrf_allow_cidrs: Option<Vec<String>>,
    pub upstream_ca: Option<String>,
    pub routes: Option<Vec<RawRoute>>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    pub host: String,
    pub ports: Option<Vec<i64>>,
    pub auth: Option<RawAuth>,
    pub matches: Option<Vec<RawMatch>>,
    pub dlp: Option<RawDlp>,
    pub tunnel: Option<bool>,
    pub upgrade: Option<bool>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    pub scheme: String,
    pub token_ref: String,
    /// Header name, for `scheme: header`.
    pub header: Option<String>,
    /// Header value with `{token}`, for `scheme: header`.
    pub template: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawMatch {
    pub paths: Option<Vec<RawPath>>,
    pub methods: Option<Vec<String>>,
    pub allow_writes: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PathKind {
    Prefix,
    Exact,
}

impl PathKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PathKind::Prefix => "prefix",
            PathKind::Exact => "exact",
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawPath {
    #[serde(rename = "type")]
    pub kind: PathKind,
    pub value: String,
}

/// The closed set of `dlp.outbound_on_match`, egress's own type.
pub use contract::egress::OnMatch;

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDlp {
    /// A list of detector names, or `false`.
    pub outbound_detectors: Option<serde_yaml::Value>,
    pub outbound_on_match: Option<OnMatch>,
    /// Reserved: only `false` is accepted until response scanning lands.
    pub inbound_detectors: Option<serde_yaml::Value>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawAgent {
    pub bottle: Option<String>,
    pub skills: Option<Vec<String>>,
}
