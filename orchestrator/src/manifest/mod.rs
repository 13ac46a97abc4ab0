//! Bottle and agent manifests: Markdown files with YAML front matter.
//!
//! Bottles live only in `<home>/bottles/<name>.md` (the trust boundary: a cloned
//! repository cannot point secrets somewhere); agents in `<home>/agents/` and
//! `./.bot-bottle/agents/`, the same name in both being an error. Everything is
//! validated once, here, into types that cannot hold an invalid value; every
//! problem names the file and the key path. This module reads files only: it
//! never reads a token's value, only checks whether the variable is set.

mod parse;
pub mod raw;
mod template;
mod validate;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;

pub use contract::cred_proxy::SchemeName;
pub use contract::egress::Detector;
pub use parse::did_you_mean;
pub use raw::{OnMatch, PathKind, Template};
pub use template::{
    agent_token_var, covers_host, default_auth_token, forge_of, reaches_forge, template_agent_env,
    template_routes,
};
pub use validate::supervise_available;

use crate::error::{Error, Problem};
use crate::home::Home;

/// Where a validated value came from: the file and its key path there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    pub key: String,
}

impl Origin {
    pub fn problem(&self, suffix: &str, message: impl Into<String>) -> Problem {
        let key = if suffix.is_empty() {
            self.key.clone()
        } else if self.key.is_empty() {
            suffix.to_string()
        } else {
            format!("{}.{}", self.key, suffix)
        };
        Problem {
            file: self.file.clone(),
            key,
            message: message.into(),
        }
    }
}

/// A value of the bottle's `env`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvSpec {
    /// Given in the manifest.
    Literal(String),
    /// `${VAR}`: forwarded from the operator's environment by name.
    Forward(String),
}

#[derive(Debug, Clone)]
pub struct EnvEntry {
    pub spec: EnvSpec,
    pub origin: Origin,
}

#[derive(Debug, Clone)]
pub struct Provider {
    pub template: Option<Template>,
    /// Resolved against the manifest's directory.
    pub dockerfile: Option<PathBuf>,
    /// Host variable with the provider token (defaults per template).
    pub auth_token: Option<String>,
    pub origin: Origin,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshUpstream {
    pub user: Option<String>,
    pub host: String,
    pub port: u16,
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostKey {
    pub key_type: String,
    pub base64: String,
}

#[derive(Debug, Clone)]
pub struct Remote {
    pub name: String,
    pub upstream_url: String,
    pub upstream: SshUpstream,
    pub identity_file: PathBuf,
    pub known_host_key: HostKey,
    pub push_refs: Vec<String>,
    pub protected_paths: Vec<String>,
    pub allow_fingerprints: Vec<String>,
    pub origin: Origin,
}

/// `host` of a route: an exact name or `*.suffix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    Exact(String),
    /// The suffix without `*.`.
    Wildcard(String),
}

impl HostPattern {
    pub fn is_wildcard(&self) -> bool {
        matches!(self, HostPattern::Wildcard(_))
    }
}

impl std::fmt::Display for HostPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HostPattern::Exact(h) => f.write_str(h),
            HostPattern::Wildcard(s) => write!(f, "*.{s}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    pub scheme: SchemeName,
    pub token_ref: String,
    pub header: Option<String>,
    pub template: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathMatch {
    pub kind: PathKind,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub paths: Vec<PathMatch>,
    /// Upper case; empty = the route's default.
    pub methods: Vec<String>,
    pub allow_writes: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dlp {
    /// Empty = DLP off (`outbound_detectors: false`).
    pub outbound_detectors: Vec<Detector>,
    pub outbound_on_match: OnMatch,
}

impl Default for Dlp {
    fn default() -> Self {
        Dlp {
            outbound_detectors: Detector::ALL.to_vec(),
            outbound_on_match: OnMatch::Block,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Route {
    pub host: HostPattern,
    pub ports: Vec<u16>,
    pub auth: Option<Auth>,
    pub matches: Vec<Match>,
    pub dlp: Dlp,
    pub tunnel: bool,
    pub upgrade: bool,
    /// Set for routes a provider template brought.
    pub template: Option<Template>,
    pub origin: Origin,
}

/// A bottle with `extends` resolved and every rule checked.
#[derive(Debug, Clone)]
pub struct Bottle {
    pub name: String,
    /// The bottle's file first, then what it extends, in order.
    pub files: Vec<PathBuf>,
    pub env: BTreeMap<String, EnvEntry>,
    pub provider: Option<Provider>,
    pub skills: Vec<String>,
    pub git_user_name: Option<String>,
    pub git_user_email: Option<String>,
    pub remotes: Vec<Remote>,
    pub attach_networks: Vec<String>,
    pub ssrf_allow_cidrs: Vec<IpNet>,
    /// PEM CA certificates egress and cred-proxy trust for upstream TLS, in
    /// addition to the public roots (an internal mirror with a private CA).
    pub upstream_ca: Option<PathBuf>,
    /// The bottle's routes, then the provider template's (those whose host the
    /// bottle does not already route).
    pub routes: Vec<Route>,
    pub supervise: bool,
}

impl Bottle {
    /// Every host variable that holds a token (route `token_ref`s and the
    /// provider's `auth_token`), deduplicated, in order of appearance.
    pub fn token_vars(&self) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for r in &self.routes {
            if let Some(a) = &r.auth {
                if !v.contains(&a.token_ref) {
                    v.push(a.token_ref.clone());
                }
            }
        }
        v
    }
}

#[derive(Debug, Clone)]
pub struct Agent {
    pub name: String,
    pub file: PathBuf,
    pub bottle: String,
    pub skills: Vec<String>,
    /// The Markdown body.
    pub prompt: String,
}

/// An agent with its bottle.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub agent: Agent,
    pub bottle: Bottle,
}

impl Resolved {
    /// Skills of the bottle, then the agent's, without duplicates.
    pub fn skills(&self) -> Vec<String> {
        let mut v = self.bottle.skills.clone();
        for s in &self.agent.skills {
            if !v.contains(s) {
                v.push(s.clone());
            }
        }
        v
    }
}

fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|e| Error::io(path, e))
}

/// Names of the `.md` files of a directory (missing directory = none).
fn md_names(dir: &Path) -> Result<BTreeMap<String, PathBuf>, Error> {
    let mut out = BTreeMap::new();
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(Error::io(dir, e)),
    };
    let mut problems = Vec::new();
    for ent in rd {
        let ent = ent.map_err(|e| Error::io(dir, e))?;
        let p = ent.path();
        if p.extension().and_then(|e| e.to_str()) == Some("md") {
            // The file name is the key, printed to the operator and used in
            // container names: a plain name only (a cloned repository's agent
            // file must not smuggle terminal escapes into the preflight).
            match p.file_stem().and_then(|s| s.to_str()) {
                Some(stem) if validate::is_plain_name(stem) => {
                    out.insert(stem.to_string(), p);
                }
                _ => problems.push(Problem {
                    file: PathBuf::from(dir).join(p.file_name().map(|n| n.to_string_lossy().escape_debug().to_string()).unwrap_or_default()),
                    key: String::new(),
                    message: "expected a file name of letters, digits, `-`, `_`, `.` (the name is the manifest's key); rename it".into(),
                }),
            }
        }
    }
    if !problems.is_empty() {
        return Err(Error::Manifest(problems));
    }
    Ok(out)
}

/// Every agent visible from `home`: name → file. The same name in the home
/// and in `./.bot-bottle/agents` is an error.
pub fn list_agents(home: &Home) -> Result<BTreeMap<String, PathBuf>, Error> {
    let mut all = md_names(&home.agents_dir())?;
    if let Some(project) = &home.project_agents {
        let mut problems = Vec::new();
        for (name, path) in md_names(project)? {
            if let Some(other) = all.get(&name) {
                problems.push(Problem {
                    file: path.clone(),
                    key: String::new(),
                    message: format!(
                        "agent `{name}` is defined both here and in {}; rename or remove one \
                         (bot-bottle never lets one silently shadow the other)",
                        other.display()
                    ),
                });
            } else {
                all.insert(name, path);
            }
        }
        if !problems.is_empty() {
            return Err(Error::Manifest(problems));
        }
    }
    Ok(all)
}

/// Names of the bottles in the home.
pub fn list_bottles(home: &Home) -> Result<BTreeMap<String, PathBuf>, Error> {
    md_names(&home.bottles_dir())
}

/// Load an agent by name and the bottle it names.
pub fn resolve(home: &Home, agent: &str) -> Result<Resolved, Error> {
    let agents = list_agents(home)?;
    let Some(file) = agents.get(agent) else {
        let names: Vec<&String> = agents.keys().collect();
        let hint = did_you_mean(agent, &names)
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        let mut dirs = vec![home.agents_dir().display().to_string()];
        if let Some(p) = &home.project_agents {
            dirs.push(p.display().to_string());
        }
        return Err(Error::Manifest(vec![Problem {
            file: home.agents_dir().join(format!("{agent}.md")),
            key: String::new(),
            message: format!(
                "no agent named `{agent}` in {}{hint} (agents found: {})",
                dirs.join(" or "),
                if names.is_empty() {
                    "none".to_string()
                } else {
                    names
                        .iter()
                        .map(|s| s.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ),
        }]));
    };
    let agent = load_agent(agent, file)?;
    let bottles = list_bottles(home)?;
    if !bottles.contains_key(&agent.bottle) {
        let names: Vec<&String> = bottles.keys().collect();
        let hint = did_you_mean(&agent.bottle, &names)
            .map(|s| format!("; did you mean `{s}`?"))
            .unwrap_or_default();
        return Err(Error::Manifest(vec![Problem {
            file: agent.file.clone(),
            key: "bottle".into(),
            message: format!(
                "expected the name of a bottle in {}, found `{}`, which does not exist{hint}",
                home.bottles_dir().display(),
                agent.bottle
            ),
        }]));
    }
    let bottle = load_bottle(home, &agent.bottle)?;
    Ok(Resolved { agent, bottle })
}

/// Parse one agent file.
pub fn load_agent(name: &str, file: &Path) -> Result<Agent, Error> {
    let text = read(file)?;
    let (yaml, body) =
        parse::split_front_matter(file, &text).map_err(|p| Error::Manifest(vec![p]))?;
    let raw: raw::RawAgent =
        parse::parse_yaml(file, &yaml).map_err(|p| Error::Manifest(vec![p]))?;
    let mut problems = Vec::new();
    let origin = Origin {
        file: file.to_path_buf(),
        key: String::new(),
    };
    let bottle = match raw.bottle {
        Some(b) if validate::is_plain_name(&b) => b,
        Some(b) => {
            problems.push(origin.problem(
                "bottle",
                format!("expected a bottle name (letters, digits, `-`, `_`, `.`), found {b:?}"),
            ));
            String::new()
        }
        None => {
            problems.push(origin.problem(
                "bottle",
                "required key is missing: name the bottle this agent runs in",
            ));
            String::new()
        }
    };
    let skills = validate::skills(&origin, raw.skills.unwrap_or_default(), &mut problems);
    if !problems.is_empty() {
        return Err(Error::Manifest(problems));
    }
    Ok(Agent {
        name: name.to_string(),
        file: file.to_path_buf(),
        bottle,
        skills,
        prompt: body,
    })
}

/// Load a bottle with its `extends` chain, merge and validate it.
pub fn load_bottle(home: &Home, name: &str) -> Result<Bottle, Error> {
    let bottles = list_bottles(home)?;
    let mut chain: Vec<(String, PathBuf, raw::RawBottle)> = Vec::new();
    let mut current = name.to_string();
    let mut from: Option<(PathBuf, String)> = None;
    loop {
        if let Some(pos) = chain.iter().position(|(n, _, _)| *n == current) {
            let mut cycle: Vec<&str> = chain[pos..].iter().map(|(n, _, _)| n.as_str()).collect();
            cycle.push(&current);
            let (file, _) = from.expect("a cycle has a previous file");
            return Err(Error::Manifest(vec![Problem {
                file,
                key: "extends".into(),
                message: format!("extends cycle: {}", cycle.join(" → ")),
            }]));
        }
        let Some(file) = bottles.get(&current) else {
            let names: Vec<&String> = bottles.keys().collect();
            let hint = did_you_mean(&current, &names)
                .map(|s| format!("; did you mean `{s}`?"))
                .unwrap_or_default();
            let (file, key) = from.unwrap_or_else(|| {
                (
                    home.bottles_dir().join(format!("{current}.md")),
                    String::new(),
                )
            });
            return Err(Error::Manifest(vec![Problem {
                file,
                key,
                message: format!(
                    "expected the name of a bottle in {}, found `{current}`, which does not exist{hint}",
                    home.bottles_dir().display()
                ),
            }]));
        };
        let text = read(file)?;
        let (yaml, _body) =
            parse::split_front_matter(file, &text).map_err(|p| Error::Manifest(vec![p]))?;
        let raw: raw::RawBottle =
            parse::parse_yaml(file, &yaml).map_err(|p| Error::Manifest(vec![p]))?;
        let next = raw.extends.clone();
        chain.push((current.clone(), file.clone(), raw));
        match next {
            Some(n) => {
                if !validate::is_plain_name(&n) {
                    return Err(Error::Manifest(vec![Problem {
                        file: file.clone(),
                        key: "extends".into(),
                        message: format!("expected a bottle name (no path), found {n:?}"),
                    }]));
                }
                from = Some((file.clone(), "extends".into()));
                current = n;
            }
            None => break,
        }
    }
    validate::build_bottle(name, chain)
}

/// Where a host name or address is a literal IP (routes never are).
pub(crate) fn is_ip_literal(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok() || s.starts_with('[')
}
