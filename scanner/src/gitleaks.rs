//! Reading gitleaks' TOML configuration format into rule specs.
//!
//! Supports `title`, `minVersion`, `[extend]` (`useDefault` = this crate's
//! builtin rules, `path`, `disabledRules`), `[[rules]]` with `id`,
//! `description`, `regex`, `secretGroup`, `entropy`, `keywords`, `path`,
//! `tags`, `[[rules.allowlists]]` (and the older `[rules.allowlist]`), and
//! the global `[allowlist]` / `[[allowlists]]`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::rules::{AllowlistSpec, RuleSpec};
use crate::Error;

const MAX_EXTEND_DEPTH: usize = 8;

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConfigFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extend: Option<Extend>,
    #[serde(default)]
    pub rules: Vec<RuleFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowlist: Option<AllowlistFile>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowlists: Vec<AllowlistFile>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Extend {
    #[serde(default)]
    pub use_default: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disabled_rules: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RuleFile {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub description: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_group: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entropy: Option<f64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keywords: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowlist: Option<AllowlistFile>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowlists: Vec<AllowlistFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<toml::Value>,
    #[serde(default)]
    pub skip_report: bool,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct AllowlistFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub commits: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regexes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regex_target: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stopwords: Vec<String>,
}

impl From<AllowlistFile> for AllowlistSpec {
    fn from(a: AllowlistFile) -> Self {
        AllowlistSpec {
            condition: a.condition,
            commits: a.commits,
            paths: a.paths,
            regexes: a.regexes,
            regex_target: a.regex_target,
            stopwords: a.stopwords,
        }
    }
}

pub(crate) type Loaded = (Vec<RuleSpec>, Vec<AllowlistSpec>);

pub(crate) fn load_file(path: &Path, depth: usize) -> Result<Loaded, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    load_str(&text, &path.display().to_string(), depth)
}

pub(crate) fn load_str(text: &str, origin: &str, depth: usize) -> Result<Loaded, Error> {
    let file: ConfigFile = toml::from_str(text).map_err(|e| Error::Toml {
        origin: origin.to_string(),
        message: describe_toml_error(text, &e),
    })?;
    let mut own = Vec::with_capacity(file.rules.len());
    for (idx, r) in file.rules.into_iter().enumerate() {
        let name = if r.id.is_empty() {
            format!("#{}", idx + 1)
        } else {
            r.id.clone()
        };
        let rule_err = |problem: String| Error::Rule {
            origin: origin.to_string(),
            rule_id: name.clone(),
            problem,
        };
        if r.required.is_some() {
            return Err(rule_err(
                "[[rules.required]] (composite rules) is not supported yet".into(),
            ));
        }
        let secret_group = match r.secret_group {
            None => None,
            Some(g) if g >= 0 => Some(g as usize),
            Some(g) => return Err(rule_err(format!("secretGroup {g} is negative"))),
        };
        if own
            .iter()
            .any(|o: &RuleSpec| o.id == r.id && !r.id.is_empty())
        {
            return Err(rule_err(
                "the same rule id appears twice in this file".into(),
            ));
        }
        let mut allowlists: Vec<AllowlistSpec> = r.allowlists.into_iter().map(Into::into).collect();
        if let Some(a) = r.allowlist {
            allowlists.push(a.into());
        }
        own.push(RuleSpec {
            id: r.id,
            description: r.description,
            regex: r.regex,
            secret_group,
            entropy: r.entropy,
            keywords: r.keywords,
            path: r.path,
            allowlists,
            skip_report: r.skip_report,
            generic: false,
        });
    }
    let mut global: Vec<AllowlistSpec> = file.allowlists.into_iter().map(Into::into).collect();
    if let Some(a) = file.allowlist {
        global.insert(0, a.into());
    }

    let Some(extend) = file.extend else {
        return Ok((own, global));
    };
    if depth >= MAX_EXTEND_DEPTH {
        return Err(Error::ExtendCycle {
            origin: origin.to_string(),
            path: PathBuf::from(extend.path.unwrap_or_default()),
        });
    }
    let (mut base, mut base_global) = if extend.use_default {
        (crate::builtin::specs(), Vec::new())
    } else if let Some(p) = extend.path.as_deref().filter(|p| !p.is_empty()) {
        load_file(&resolve(origin, p), depth + 1)?
    } else {
        return Err(Error::Config {
            origin: origin.to_string(),
            problem: "[extend] needs useDefault = true or a path".into(),
        });
    };
    for id in &extend.disabled_rules {
        base.retain(|r| &r.id != id);
    }
    for rule in own {
        match base.iter_mut().find(|b| b.id == rule.id) {
            Some(b) => merge(b, rule),
            None => base.push(rule),
        }
    }
    base_global.extend(global);
    Ok((base, base_global))
}

/// gitleaks' extension semantics: the extending rule's non-empty fields win,
/// keywords and allowlists add up.
fn merge(base: &mut RuleSpec, over: RuleSpec) {
    if !over.description.is_empty() {
        base.description = over.description;
    }
    if over.regex.as_deref().is_some_and(|r| !r.is_empty()) {
        base.regex = over.regex;
    }
    if over.secret_group.is_some_and(|g| g > 0) {
        base.secret_group = over.secret_group;
    }
    if over.entropy.is_some_and(|e| e > 0.0) {
        base.entropy = over.entropy;
    }
    if over.path.as_deref().is_some_and(|p| !p.is_empty()) {
        base.path = over.path;
    }
    for k in over.keywords {
        if !base.keywords.contains(&k) {
            base.keywords.push(k);
        }
    }
    base.allowlists.extend(over.allowlists);
    base.skip_report |= over.skip_report;
}

fn resolve(origin: &str, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() || p.exists() {
        return p.to_path_buf();
    }
    match Path::new(origin).parent() {
        Some(dir) if dir.join(p).exists() => dir.join(p),
        _ => p.to_path_buf(),
    }
}

/// Adds the id of the `[[rules]]` entry a TOML error falls in, when it can.
fn describe_toml_error(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().to_string();
    let Some(span) = e.span() else {
        return msg;
    };
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let rule = before.rfind("[[rules]]").and_then(|at| {
        before[at..].lines().find_map(|l| {
            let l = l.trim();
            l.strip_prefix("id").map(|rest| {
                rest.trim_start()
                    .trim_start_matches('=')
                    .trim()
                    .trim_matches(|c| c == '"' || c == '\'')
                    .to_string()
            })
        })
    });
    match rule {
        Some(id) => format!("line {line}, in rule {id:?}: {msg}"),
        None => format!("line {line}: {msg}"),
    }
}
