//! The egress audit record: one JSON line per request, written by egress to
//! the bottle's audit log and read back by `orchestrator logs`. Both sides
//! use this type, so a field renamed on one side cannot silently vanish
//! from the other.

use serde::{Deserialize, Serialize};

/// One request as egress decided it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub time: String,
    pub bottle: String,
    pub method: String,
    /// `http` or `https`.
    pub scheme: String,
    pub host: String,
    pub port: u16,
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub route: Option<String>,
    pub decision: Decision,
    /// For refusals: which check refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<Kind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default)]
    pub bytes_up: u64,
    #[serde(default)]
    pub bytes_down: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    #[serde(default)]
    pub duration_ms: u64,
}

/// What egress did with a request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Decision {
    /// Forwarded as it was.
    #[default]
    Allow,
    /// Forwarded with a secret replaced.
    Redact,
    /// Held for the operator, who let it go.
    HoldAllow,
    /// Refused (see [`Kind`]).
    Deny,
    /// A CONNECT tunnel without interception (a git remote's ssh).
    Tunnel,
    /// Upstream or local failure.
    Error,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Allow => "allow",
            Decision::Redact => "redact",
            Decision::HoldAllow => "hold-allow",
            Decision::Deny => "deny",
            Decision::Tunnel => "tunnel",
            Decision::Error => "error",
        }
    }
}

/// Refusal kinds, as in the `X-Bottle-Block: KIND: …` header the agent gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Route,
    Ssrf,
    Dlp,
    Fronting,
    Protocol,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Route => "route",
            Kind::Ssrf => "ssrf",
            Kind::Dlp => "dlp",
            Kind::Fronting => "fronting",
            Kind::Protocol => "protocol",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_as_written_and_keeps_its_json_names() {
        let r = AuditRecord {
            time: "2026-12-03T17:00:00Z".into(),
            bottle: "b-1".into(),
            method: "GET".into(),
            scheme: "https".into(),
            host: "api.example.test".into(),
            port: 443,
            path: "/x".into(),
            route: None,
            decision: Decision::HoldAllow,
            kind: Some(Kind::Dlp),
            rule: Some("aws-access-key".into()),
            bytes_up: 1,
            bytes_down: 2,
            status: Some(403),
            duration_ms: 3,
        };
        let line = serde_json::to_string(&r).unwrap();
        assert!(line.contains(r#""decision":"hold-allow""#), "{line}");
        assert!(line.contains(r#""kind":"dlp""#), "{line}");
        assert!(!line.contains("route"), "no route key when none: {line}");
        assert_eq!(serde_json::from_str::<AuditRecord>(&line).unwrap(), r);
    }
}
