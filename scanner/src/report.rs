//! Reports in gitleaks' JSON shape and in SARIF 2.1.0. Secrets are always
//! redacted: `Secret` and `Match` hold the redacted prefix only.

use serde::Serialize;
use serde_json::json;

use crate::Finding;

/// One row of a gitleaks-style report.
#[derive(Clone, Debug, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Entry {
    #[serde(rename = "RuleID")]
    pub rule_id: String,
    pub description: String,
    pub start_line: usize,
    pub end_line: usize,
    pub start_column: usize,
    pub end_column: usize,
    #[serde(rename = "Match")]
    pub matched: String,
    pub secret: String,
    pub file: String,
    pub symlink_file: String,
    pub commit: String,
    pub entropy: f64,
    pub author: String,
    pub email: String,
    pub date: String,
    pub message: String,
    pub tags: Vec<String>,
    pub fingerprint: String,
}

impl Entry {
    pub fn from_finding(f: &Finding, file: &str) -> Entry {
        Entry {
            rule_id: f.rule_id.clone(),
            description: f.description.clone(),
            start_line: f.line,
            end_line: f.line,
            start_column: f.column,
            end_column: f.column + (f.end - f.start).saturating_sub(1),
            matched: f.redacted.clone(),
            secret: f.redacted.clone(),
            file: file.to_string(),
            fingerprint: if file.is_empty() {
                f.fingerprint.clone()
            } else {
                format!("{file}:{}:{}", f.rule_id, f.line)
            },
            ..Default::default()
        }
    }
}

pub fn to_json(entries: &[Entry]) -> String {
    serde_json::to_string_pretty(entries).unwrap_or_else(|_| "[]".into())
}

pub fn to_sarif(entries: &[Entry]) -> String {
    let mut rule_ids: Vec<(&str, &str)> = entries
        .iter()
        .map(|e| (e.rule_id.as_str(), e.description.as_str()))
        .collect();
    rule_ids.sort();
    rule_ids.dedup_by(|a, b| a.0 == b.0);
    let rules: Vec<_> = rule_ids
        .iter()
        .map(|(id, d)| json!({"id": id, "name": id, "shortDescription": {"text": d}}))
        .collect();
    let results: Vec<_> = entries
        .iter()
        .map(|e| {
            let mut r = json!({
                "ruleId": e.rule_id,
                "message": {"text": format!("{} has detected secret for file {}.", e.rule_id, e.file)},
                "locations": [{"physicalLocation": {
                    "artifactLocation": {"uri": e.file},
                    "region": {"startLine": e.start_line, "startColumn": e.start_column,
                               "endLine": e.end_line, "endColumn": e.end_column,
                               "snippet": {"text": e.secret}}
                }}],
                "partialFingerprints": {"commitSha": e.commit, "email": e.email, "author": e.author,
                                        "date": e.date, "commitMessage": e.message}
            });
            if e.commit.is_empty() {
                r["partialFingerprints"] = json!({});
            }
            r
        })
        .collect();
    let doc = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{"tool": {"driver": {"name": "scanner", "semanticVersion": env!("CARGO_PKG_VERSION"),
                                      "informationUri": "https://github.com/bot-bottle", "rules": rules}},
                  "results": results}]
    });
    serde_json::to_string_pretty(&doc).unwrap_or_else(|_| "{}".into())
}
