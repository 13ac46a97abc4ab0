//! Compiled rule sets: the keyword automaton, each rule's regex and its
//! allowlists. Built from the builtin table or a gitleaks config.

use std::path::Path;
use std::sync::{Arc, OnceLock};

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::bytes::Regex;

use crate::{go_regex, Error};

/// Above this maximum match length a rule's regex runs over the whole
/// fragment instead of windows around its keyword hits.
const MAX_WINDOWED_LEN: usize = 4096;

/// A rule before compilation, as read from a config or the builtin table.
#[derive(Clone, Debug, Default)]
pub(crate) struct RuleSpec {
    pub id: String,
    pub description: String,
    pub regex: Option<String>,
    pub secret_group: Option<usize>,
    pub entropy: Option<f64>,
    pub keywords: Vec<String>,
    pub path: Option<String>,
    pub allowlists: Vec<AllowlistSpec>,
    pub skip_report: bool,
    /// A catch-all rule: its findings give way to a specific rule's on the same bytes.
    pub generic: bool,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct AllowlistSpec {
    pub condition: Option<String>,
    pub commits: Vec<String>,
    pub paths: Vec<String>,
    pub regexes: Vec<String>,
    pub regex_target: Option<String>,
    pub stopwords: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    Secret,
    Match,
    Line,
}

pub(crate) struct Allowlist {
    and: bool,
    commits: Vec<String>,
    paths: Vec<Regex>,
    regexes: Vec<Regex>,
    pub(crate) target: Target,
    stopwords: Option<AhoCorasick>,
}

/// What an allowlist is checked against.
pub(crate) struct Candidate<'a> {
    pub secret: &'a [u8],
    pub matched: &'a [u8],
    /// The fragment and the match's range in it: the line is found only
    /// when an allowlist targets it.
    pub data: &'a [u8],
    pub range: (usize, usize),
    pub path: Option<&'a str>,
    pub commit: Option<&'a str>,
}

impl Candidate<'_> {
    fn line(&self) -> &[u8] {
        let (s, e) = self.range;
        let start = self.data[..s]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1);
        let end = self.data[e..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(self.data.len(), |p| e + p);
        &self.data[start..end]
    }
}

impl Allowlist {
    fn compile(spec: &AllowlistSpec, origin: &str, owner: &str) -> Result<Allowlist, Error> {
        let err = |problem: String| Error::Rule {
            origin: origin.to_string(),
            rule_id: owner.to_string(),
            problem,
        };
        let and = match spec
            .condition
            .as_deref()
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            None | Some("OR") | Some("") => false,
            Some("AND") => true,
            Some(other) => {
                return Err(err(format!(
                    "allowlist condition {other:?} is not AND or OR"
                )))
            }
        };
        let target = match spec.regex_target.as_deref() {
            None | Some("") | Some("secret") => Target::Secret,
            Some("match") => Target::Match,
            Some("line") => Target::Line,
            Some(other) => {
                return Err(err(format!(
                    "allowlist regexTarget {other:?} is not secret, match or line"
                )))
            }
        };
        if spec.commits.is_empty()
            && spec.paths.is_empty()
            && spec.regexes.is_empty()
            && spec.stopwords.is_empty()
        {
            return Err(err(
                "an allowlist must contain at least one of commits, paths, regexes or stopwords"
                    .into(),
            ));
        }
        let compile_all = |what: &str, pats: &[String]| -> Result<Vec<Regex>, Error> {
            pats.iter()
                .map(|p| {
                    go_regex::compile(p)
                        .map_err(|e| err(format!("allowlist {what} regex {p:?} is invalid: {e}")))
                })
                .collect()
        };
        let stopwords = if spec.stopwords.is_empty() {
            None
        } else {
            Some(
                AhoCorasickBuilder::new()
                    .ascii_case_insensitive(true)
                    .build(&spec.stopwords)
                    .map_err(|e| err(format!("allowlist stopwords: {e}")))?,
            )
        };
        Ok(Allowlist {
            and,
            commits: spec
                .commits
                .iter()
                .map(|c| c.to_ascii_lowercase())
                .collect(),
            paths: compile_all("path", &spec.paths)?,
            regexes: compile_all("", &spec.regexes)?,
            target,
            stopwords,
        })
    }

    /// True when this allowlist lets the candidate through (not a finding).
    pub(crate) fn allows(&self, c: &Candidate<'_>) -> bool {
        let commit = || {
            c.commit
                .map(|id| self.commits.iter().any(|a| a.eq_ignore_ascii_case(id)))
                .unwrap_or(false)
        };
        let path = || {
            c.path
                .map(|p| self.paths.iter().any(|r| r.is_match(p.as_bytes())))
                .unwrap_or(false)
        };
        let regex = || {
            let target = match self.target {
                Target::Secret => c.secret,
                Target::Match => c.matched,
                Target::Line => c.line(),
            };
            self.regexes.iter().any(|r| r.is_match(target))
        };
        let stop = || {
            self.stopwords
                .as_ref()
                .map(|ac| ac.is_match(c.secret))
                .unwrap_or(false)
        };
        if self.and {
            let mut any = false;
            for (configured, check) in [
                (!self.commits.is_empty(), &commit as &dyn Fn() -> bool),
                (!self.paths.is_empty(), &path),
                (!self.regexes.is_empty(), &regex),
                (self.stopwords.is_some(), &stop),
            ] {
                if configured {
                    if !check() {
                        return false;
                    }
                    any = true;
                }
            }
            any
        } else {
            (!self.commits.is_empty() && commit())
                || (!self.paths.is_empty() && path())
                || (!self.regexes.is_empty() && regex())
                || (self.stopwords.is_some() && stop())
        }
    }

    /// Allows every finding of a file by its path alone.
    fn allows_path_alone(&self, path: &str) -> bool {
        !self.and && self.paths.iter().any(|r| r.is_match(path.as_bytes()))
    }
}

/// A rule's regex, compiled when first needed or at load.
///
/// The builtin set is compiled lazily: a process that never sees a rule's
/// keyword never pays for its automaton (egress idles at about half the
/// memory). Builtin patterns are compiled by the test suite, so the lazy
/// compile cannot fail at run time; user rules are compiled at load so a bad
/// pattern is an error naming the rule.
pub(crate) struct RuleRegex {
    pattern: String,
    compiled: OnceLock<Regex>,
}

impl RuleRegex {
    pub(crate) fn get(&self) -> &Regex {
        self.compiled.get_or_init(|| {
            go_regex::compile(&self.pattern).unwrap_or_else(|e| {
                panic!(
                    "builtin rule pattern {:?} does not compile: {e}",
                    self.pattern
                )
            })
        })
    }
}

/// When a rule set's regexes are compiled.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Compile {
    /// At load: errors are reported then (user configs).
    Eager,
    /// On first use (the builtin set, whose patterns the tests compile).
    Lazy,
}

pub(crate) struct Rule {
    pub id: String,
    pub description: String,
    pub regex: Option<RuleRegex>,
    pub secret_group: usize,
    pub entropy: f64,
    pub path: Option<Regex>,
    pub allowlists: Vec<Allowlist>,
    /// Maximum match length when small enough to scan windows around hits.
    pub window: Option<usize>,
    pub skip_report: bool,
}

pub(crate) struct RulesInner {
    pub rules: Vec<Rule>,
    pub keywords: Option<AhoCorasick>,
    /// For each keyword pattern, the rules it enables.
    pub keyword_rules: Vec<Vec<u32>>,
    /// Rules with a regex and no keyword: they run on every fragment.
    pub always: Vec<u32>,
    /// Rules with a path and no regex: a matching file name is the finding.
    pub path_only: Vec<u32>,
    pub allowlists: Vec<Allowlist>,
    /// Ids of catch-all rules (see `RuleSpec::generic`).
    pub generic_ids: std::collections::HashSet<String>,
}

/// A compiled rule set. Cheap to clone and share.
#[derive(Clone)]
pub struct Rules {
    pub(crate) inner: Arc<RulesInner>,
}

impl std::fmt::Debug for Rules {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rules").field("rules", &self.len()).finish()
    }
}

impl Rules {
    /// The builtin rules (compiled once per process).
    pub fn builtin() -> Rules {
        static BUILTIN: OnceLock<Rules> = OnceLock::new();
        BUILTIN
            .get_or_init(|| {
                Rules::compile(
                    crate::builtin::specs(),
                    Vec::new(),
                    "builtin rules",
                    Compile::Lazy,
                )
                .expect("builtin rules compile")
            })
            .clone()
    }

    /// No rules at all (known secrets only).
    pub fn empty() -> Rules {
        Rules::compile(Vec::new(), Vec::new(), "empty", Compile::Eager).expect("empty rule set")
    }

    /// Loads a gitleaks TOML config file (with its `[extend]` chain).
    pub fn from_gitleaks_file(path: &Path) -> Result<Rules, Error> {
        let (specs, allowlists) = crate::gitleaks::load_file(path, 0)?;
        Rules::compile(
            specs,
            allowlists,
            &path.display().to_string(),
            Compile::Eager,
        )
    }

    /// Loads a gitleaks TOML config from a string; `origin` names it in errors
    /// and is the base for a relative `[extend] path`.
    pub fn from_gitleaks_str(toml: &str, origin: &str) -> Result<Rules, Error> {
        let (specs, allowlists) = crate::gitleaks::load_str(toml, origin, 0)?;
        Rules::compile(specs, allowlists, origin, Compile::Eager)
    }

    pub fn len(&self) -> usize {
        self.inner.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.rules.is_empty()
    }

    /// Rule ids in load order.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.inner.rules.iter().map(|r| r.id.as_str())
    }

    /// True when no rule or allowlist looks at the file path or the commit:
    /// a blob then has the same findings wherever it appears, and is scanned once.
    pub(crate) fn context_free(&self) -> bool {
        let free = |a: &Allowlist| a.commits.is_empty() && a.paths.is_empty();
        let inner = &self.inner;
        inner.allowlists.iter().all(free)
            && inner
                .rules
                .iter()
                .all(|r| r.path.is_none() && r.allowlists.iter().all(free))
    }

    pub(crate) fn path_allowed(&self, path: &str) -> bool {
        self.inner
            .allowlists
            .iter()
            .any(|a| a.allows_path_alone(path))
    }

    pub(crate) fn compile(
        specs: Vec<RuleSpec>,
        global: Vec<AllowlistSpec>,
        origin: &str,
        when: Compile,
    ) -> Result<Rules, Error> {
        let mut rules = Vec::with_capacity(specs.len());
        let mut keyword_list: Vec<String> = Vec::new();
        let mut keyword_rules: Vec<Vec<u32>> = Vec::new();
        let mut always = Vec::new();
        let mut path_only = Vec::new();
        let mut generic_ids = std::collections::HashSet::new();
        for (idx, spec) in specs.into_iter().enumerate() {
            if spec.generic || spec.id.starts_with("generic") {
                generic_ids.insert(spec.id.clone());
            }
            let rule = compile_rule(&spec, origin, idx, when)?;
            let n = rules.len() as u32;
            if rule.regex.is_none() {
                path_only.push(n);
            } else if spec.keywords.is_empty() {
                always.push(n);
            } else {
                for k in &spec.keywords {
                    let k = k.to_ascii_lowercase();
                    if k.is_empty() {
                        continue;
                    }
                    match keyword_list.iter().position(|x| *x == k) {
                        Some(p) => keyword_rules[p].push(n),
                        None => {
                            keyword_list.push(k);
                            keyword_rules.push(vec![n]);
                        }
                    }
                }
            }
            rules.push(rule);
        }
        let keywords = if keyword_list.is_empty() {
            None
        } else {
            Some(
                AhoCorasickBuilder::new()
                    .ascii_case_insensitive(true)
                    .match_kind(MatchKind::Standard)
                    .build(&keyword_list)
                    .map_err(|e| Error::Config {
                        origin: origin.to_string(),
                        problem: format!("keywords: {e}"),
                    })?,
            )
        };
        let allowlists = global
            .iter()
            .map(|a| Allowlist::compile(a, origin, "[allowlist]"))
            .collect::<Result<_, _>>()?;
        Ok(Rules {
            inner: Arc::new(RulesInner {
                rules,
                keywords,
                keyword_rules,
                always,
                path_only,
                allowlists,
                generic_ids,
            }),
        })
    }
}

fn compile_rule(spec: &RuleSpec, origin: &str, idx: usize, when: Compile) -> Result<Rule, Error> {
    let id = if spec.id.is_empty() {
        return Err(Error::Rule {
            origin: origin.to_string(),
            rule_id: format!("#{}", idx + 1),
            problem: "rule has no id".into(),
        });
    } else {
        spec.id.clone()
    };
    let err = |problem: String| Error::Rule {
        origin: origin.to_string(),
        rule_id: id.clone(),
        problem,
    };
    let regex = match spec.regex.as_deref() {
        None | Some("") => None,
        Some(p) => {
            let compiled = OnceLock::new();
            if when == Compile::Eager {
                let re = go_regex::compile(p).map_err(|e| err(format!("regex is invalid: {e}")))?;
                let _ = compiled.set(re);
            }
            Some(RuleRegex {
                pattern: p.to_string(),
                compiled,
            })
        }
    };
    let path = match spec.path.as_deref() {
        None | Some("") => None,
        Some(p) => {
            Some(go_regex::compile(p).map_err(|e| err(format!("path regex is invalid: {e}")))?)
        }
    };
    if regex.is_none() && path.is_none() {
        return Err(err("rule needs a regex or a path".into()));
    }
    let secret_group = spec.secret_group.unwrap_or(0);
    if let Some(re) = regex.as_ref().and_then(|r| r.compiled.get()) {
        let groups = re.captures_len() - 1;
        if secret_group > groups {
            return Err(err(format!(
                "secretGroup is {secret_group} but the regex has only {groups} capture group(s)"
            )));
        }
    }
    let entropy = spec.entropy.unwrap_or(0.0);
    if !(0.0..=8.0).contains(&entropy) {
        return Err(err(format!("entropy {entropy} is outside 0..8")));
    }
    let window = spec
        .regex
        .as_deref()
        .and_then(go_regex::max_match_len)
        .filter(|&m| m <= MAX_WINDOWED_LEN);
    let allowlists = spec
        .allowlists
        .iter()
        .map(|a| Allowlist::compile(a, origin, &id))
        .collect::<Result<_, _>>()?;
    Ok(Rule {
        id: id.clone(),
        description: spec.description.clone(),
        regex,
        secret_group,
        entropy,
        path,
        allowlists,
        window,
        skip_report: spec.skip_report,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The builtin set compiles lazily at run time, so this is where a bad
    /// builtin pattern or `secretGroup` must fail.
    #[test]
    fn every_builtin_pattern_compiles_with_its_secret_group() {
        let rules = Rules::builtin();
        let mut n = 0;
        for rule in &rules.inner.rules {
            let Some(re) = &rule.regex else { continue };
            let compiled =
                go_regex::compile(&re.pattern).unwrap_or_else(|e| panic!("rule {}: {e}", rule.id));
            assert!(
                rule.secret_group < compiled.captures_len(),
                "rule {}: secretGroup {} but {} group(s)",
                rule.id,
                rule.secret_group,
                compiled.captures_len() - 1
            );
            n += 1;
        }
        assert!(n >= 60, "only {n} builtin rules with a regex");
    }

    #[test]
    fn builtin_regexes_are_compiled_only_when_a_keyword_needs_them() {
        let specs = crate::builtin::specs();
        let rules = Rules::compile(specs, Vec::new(), "test", Compile::Lazy).unwrap();
        let compiled = |r: &Rules| {
            r.inner
                .rules
                .iter()
                .filter(|x| {
                    x.regex
                        .as_ref()
                        .is_some_and(|re| re.compiled.get().is_some())
                })
                .count()
        };
        assert_eq!(compiled(&rules), 0);
        let s = crate::Scanner::new(
            rules.clone(),
            crate::KnownSecrets::empty(),
            crate::ScanOptions::default(),
        );
        let token = format!("ghp_{}", "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z0A");
        assert!(s
            .scan(token.as_bytes())
            .iter()
            .any(|f| f.rule_id == "github-pat"));
        let after = compiled(&rules);
        assert!(after >= 1 && after < rules.len() / 2, "{after} compiled");
    }
}
