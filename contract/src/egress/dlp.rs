//! DLP settings: the file's `[dlp]` table and a route's `dlp = { ... }`, and what they
//! validate into.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::route::{route_error, RouteConfig};
use super::{is_false, DEFAULT_MAX_BODY_BYTES};
use crate::error::Error;

/// `[dlp]`: the rule set and secrets every DLP route scans for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DlpConfig {
    /// `"builtin"` or the path of a gitleaks-format TOML file.
    #[serde(default = "default_rules")]
    pub rules: String,
    /// Decoded bytes of a request body scanned per window (at least 256 KiB is used). A body
    /// up to this size plus the 256 KiB overlap is scanned whole before the request leaves; a
    /// longer one is scanned as it streams. Not a size limit: bodies of any size pass.
    #[serde(default = "default_max_body")]
    pub max_body_bytes: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_secrets_file: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<String>,
}

impl Default for DlpConfig {
    fn default() -> Self {
        DlpConfig {
            rules: default_rules(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            known_secrets_file: None,
            canary: None,
        }
    }
}

fn default_rules() -> String {
    "builtin".to_string()
}
fn default_max_body() -> u64 {
    DEFAULT_MAX_BODY_BYTES
}

/// A route's `dlp = { ... }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteDlpConfig {
    #[serde(default = "default_detectors")]
    pub outbound_detectors: Detectors,
    #[serde(default)]
    pub outbound_on_match: OnMatch,
    /// Reserved: response scanning is not supported yet; only `false` is accepted.
    #[serde(default, skip_serializing_if = "is_false")]
    pub inbound_detectors: bool,
    /// Forward bodies that cannot be scanned (binary, archives, unknown content codings).
    #[serde(default, skip_serializing_if = "is_false")]
    pub opaque_bodies: bool,
}

impl Default for RouteDlpConfig {
    fn default() -> Self {
        RouteDlpConfig {
            outbound_detectors: default_detectors(),
            outbound_on_match: OnMatch::Block,
            inbound_detectors: false,
            opaque_bodies: false,
        }
    }
}

fn default_detectors() -> Detectors {
    Detectors::List(vec![Detector::TokenPatterns, Detector::KnownSecrets])
}

/// `outbound_detectors = ["token_patterns", "known_secrets"]` or `false`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Detectors {
    Enabled(bool),
    List(Vec<Detector>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Detector {
    /// The scanner's rules (builtin or the gitleaks file).
    TokenPatterns,
    /// The bottle's known secrets and the canary.
    KnownSecrets,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnMatch {
    #[default]
    Block,
    Redact,
    Supervise,
}

impl OnMatch {
    pub fn as_str(self) -> &'static str {
        match self {
            OnMatch::Block => "block",
            OnMatch::Redact => "redact",
            OnMatch::Supervise => "supervise",
        }
    }
}

impl Detector {
    /// Every detector, in the order the manifest's default lists them.
    pub const ALL: [Detector; 2] = [Detector::TokenPatterns, Detector::KnownSecrets];

    pub fn as_str(self) -> &'static str {
        match self {
            Detector::TokenPatterns => "token_patterns",
            Detector::KnownSecrets => "known_secrets",
        }
    }

    /// The detector of this name, as the TOML and the manifest spell it.
    pub fn parse(name: &str) -> Option<Detector> {
        Detector::ALL.into_iter().find(|d| d.as_str() == name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleSource {
    Builtin,
    Gitleaks(PathBuf),
}

#[derive(Debug, Clone)]
pub struct Dlp {
    pub rules: RuleSource,
    pub max_body_bytes: usize,
    pub known_secrets_file: Option<PathBuf>,
    pub canary: Option<String>,
}

/// What a route does with DLP findings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteDlp {
    pub token_patterns: bool,
    pub known_secrets: bool,
    pub on_match: OnMatch,
    pub opaque_bodies: bool,
}

/// `[dlp]`: the settings every DLP route shares.
pub(super) fn validate_dlp(d: &DlpConfig) -> Result<Dlp, Error> {
    let rules = match d.rules.as_str() {
        "builtin" | "" => RuleSource::Builtin,
        p => RuleSource::Gitleaks(PathBuf::from(p)),
    };
    if d.max_body_bytes == 0 || d.max_body_bytes > 256 * 1024 * 1024 {
        return Err(Error::EgressConfig {
            key: "dlp.max_body_bytes".into(),
            message: "must be between 1 and 268435456".into(),
        });
    }
    if let Some(canary) = &d.canary {
        if canary.len() < 8 {
            return Err(Error::EgressConfig {
                key: "dlp.canary".into(),
                message: "the canary must be at least 8 characters".into(),
            });
        }
    }
    Ok(Dlp {
        rules,
        max_body_bytes: d.max_body_bytes as usize,
        known_secrets_file: d.known_secrets_file.clone(),
        canary: d.canary.clone(),
    })
}

/// A non-tunnel route's `dlp = { ... }`; `None` when no detector is on. An absent table means
/// the defaults, so DLP is on unless a route turns it off.
pub(super) fn route_dlp(r: &RouteConfig, holds_dir: bool) -> Result<Option<RouteDlp>, Error> {
    let err = |message: String| route_error(&r.id, message);
    let dlp_cfg = r.dlp.clone().unwrap_or_default();
    if dlp_cfg.inbound_detectors {
        return Err(err("dlp.inbound_detectors is not supported yet".into()));
    }
    let (token_patterns, known_secrets) = match &dlp_cfg.outbound_detectors {
        Detectors::Enabled(true) => (true, true),
        Detectors::Enabled(false) => (false, false),
        Detectors::List(l) => (
            l.contains(&Detector::TokenPatterns),
            l.contains(&Detector::KnownSecrets),
        ),
    };
    if dlp_cfg.outbound_on_match == OnMatch::Supervise && !holds_dir {
        return Err(err(
            "outbound_on_match = \"supervise\" needs the top-level holds_dir".into(),
        ));
    }
    Ok((token_patterns || known_secrets).then_some(RouteDlp {
        token_patterns,
        known_secrets,
        on_match: dlp_cfg.outbound_on_match,
        opaque_bodies: dlp_cfg.opaque_bodies,
    }))
}
