//! Loading gitleaks TOML configs: a representative config written here, the
//! errors a user gets for bad files, and (when present on this machine)
//! gitleaks' own default config.

use std::path::PathBuf;

use scanner::{Error, KnownSecrets, Rules, ScanOptions, Scanner};

const CONFIG: &str = r#"
title = "test config"
minVersion = "v8.25.0"

[allowlist]
description = "global"
paths = ['''(?:^|/)vendor/''', '''\.lock$''']
stopwords = ["notasecret"]

[[rules]]
id = "acme-key"
description = "ACME key"
regex = '''(?i)acme[\w.-]{0,20}\s*[:=]\s*['"]?([a-z0-9]{24})['"]?'''
secretGroup = 1
entropy = 3.0
keywords = ["acme"]
tags = ["test"]
  [[rules.allowlists]]
  regexes = ['''^0+''']
  [[rules.allowlists]]
  condition = "AND"
  paths = ['''(?:^|/)tests?/''']
  regexTarget = "line"
  regexes = ['''fixture''']

[[rules]]
id = "braces"
regex = '''token\{([A-F0-9]{8})}'''
keywords = ["token{"]

[[rules]]
id = "keystore-file"
description = "Java keystore"
path = '''\.jks$'''
"#;

fn scan(rules: &Rules, path: &str, data: &str) -> Vec<String> {
    Scanner::new(rules.clone(), KnownSecrets::empty(), ScanOptions::default())
        .scan_named(path, data.as_bytes())
        .into_iter()
        .map(|f| f.rule_id)
        .collect()
}

#[test]
fn representative_config_semantics() {
    let rules = Rules::from_gitleaks_str(CONFIG, "test.toml").unwrap();
    assert_eq!(
        rules.ids().collect::<Vec<_>>(),
        ["acme-key", "braces", "keystore-file"]
    );
    assert_eq!(
        scan(&rules, "src/a.rs", "ACME_KEY = 'k3j5h6g7f8d9s0a1q2w3e4r5'"),
        ["acme-key"]
    );
    // entropy too low
    assert!(scan(&rules, "src/a.rs", "ACME_KEY = 'abababababababababababab'").is_empty());
    // rule allowlist regex on the secret
    assert!(scan(&rules, "src/a.rs", "ACME_KEY = '000j5h6g7f8d9s0a1q2w3e4r'").is_empty());
    // AND allowlist: needs both the path and the line
    assert!(scan(
        &rules,
        "tests/a.rs",
        "fixture ACME_KEY = 'k3j5h6g7f8d9s0a1q2w3e4r5'"
    )
    .is_empty());
    assert_eq!(
        scan(
            &rules,
            "src/a.rs",
            "fixture ACME_KEY = 'k3j5h6g7f8d9s0a1q2w3e4r5'"
        ),
        ["acme-key"]
    );
    assert_eq!(
        scan(
            &rules,
            "tests/a.rs",
            "ACME_KEY = 'k3j5h6g7f8d9s0a1q2w3e4r5'"
        ),
        ["acme-key"]
    );
    // global allowlist: path and stopwords
    assert!(scan(
        &rules,
        "vendor/x/a.rs",
        "ACME_KEY = 'k3j5h6g7f8d9s0a1q2w3e4r5'"
    )
    .is_empty());
    assert!(scan(&rules, "a.rs", "acme_key = 'notasecretk3j5h6g7f8d9s0'").is_empty());
    // a bare `}` and `{` as in Go RE2
    assert_eq!(scan(&rules, "a.txt", "token{DEADBEEF}"), ["braces"]);
    // path-only rule
    assert_eq!(
        scan(&rules, "conf/release.jks", "binary"),
        ["keystore-file"]
    );
}

#[test]
fn extend_use_default_and_disabled_rules() {
    let toml = r#"
[extend]
useDefault = true
disabledRules = ["github-pat"]

[[rules]]
id = "acme-key"
regex = '''acme_([a-z0-9]{24})'''
keywords = ["acme_"]
"#;
    let rules = Rules::from_gitleaks_str(toml, "ext.toml").unwrap();
    assert!(rules.ids().any(|i| i == "aws-access-key-id"));
    assert!(!rules.ids().any(|i| i == "github-pat"));
    assert_eq!(
        scan(&rules, "a", "acme_k3j5h6g7f8d9s0a1q2w3e4r5"),
        ["acme-key"]
    );
}

#[test]
fn extend_path_is_relative_to_the_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("base.toml"), CONFIG).unwrap();
    std::fs::write(
        dir.path().join("top.toml"),
        "[extend]\npath = \"base.toml\"\ndisabledRules = [\"braces\"]\n[[rules]]\nid = \"acme-key\"\nkeywords = [\"acme_key\"]\n",
    )
    .unwrap();
    let rules = Rules::from_gitleaks_file(&dir.path().join("top.toml")).unwrap();
    assert_eq!(
        rules.ids().collect::<Vec<_>>(),
        ["acme-key", "keystore-file"]
    );
}

fn err(toml: &str) -> String {
    match Rules::from_gitleaks_str(toml, "bad.toml") {
        Ok(_) => panic!("accepted: {toml}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn errors_name_the_rule_and_the_problem() {
    let e = err("[[rules]]\nid = \"r1\"\nregex = '''(unclosed'''\n");
    assert!(
        e.contains("bad.toml") && e.contains("\"r1\"") && e.contains("regex is invalid"),
        "{e}"
    );
    let e = err("[[rules]]\nid = \"r2\"\nregex = '''a(b)'''\nsecretGroup = 3\n");
    assert!(
        e.contains("\"r2\"") && e.contains("secretGroup is 3"),
        "{e}"
    );
    let e = err("[[rules]]\nid = \"r3\"\ndescription = \"x\"\n");
    assert!(
        e.contains("\"r3\"") && e.contains("needs a regex or a path"),
        "{e}"
    );
    let e =
        err("[[rules]]\nid = \"r4\"\nregex = 'x'\n[[rules.allowlists]]\ndescription = \"empty\"\n");
    assert!(e.contains("\"r4\"") && e.contains("at least one"), "{e}");
    let e = err("[[rules]]\nid = \"r5\"\nregex = 'x'\nkeywrods = [\"x\"]\n");
    assert!(e.contains("r5") && e.contains("keywrods"), "{e}");
    let e = err("[[rules]]\nregex = 'x'\n");
    assert!(e.contains("#1") && e.contains("no id"), "{e}");
    let e = err("[[rules]]\nid = \"r6\"\nregex = 'x'\n[[rules.allowlists]]\ncondition = \"XOR\"\npaths = ['a']\n");
    assert!(e.contains("r6") && e.contains("XOR"), "{e}");
    assert!(matches!(
        Rules::from_gitleaks_file(std::path::Path::new("/nonexistent/x.toml")),
        Err(Error::Io { .. })
    ));
}

/// gitleaks' default config, extracted from the gitleaks binary by
/// bench/scanner/gitleaks-setup.sh (not committed: it is gitleaks' file;
/// scripts/test.sh runs the setup, so in CI the file is always there).
#[test]
fn gitleaks_default_config_loads_every_rule() {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../bench/.work/gitleaks-default.toml");
    if !p.exists() {
        assert_ne!(
            std::env::var("CI").as_deref(),
            Ok("true"),
            "{} is missing: run bench/scanner/gitleaks-setup.sh",
            p.display()
        );
        eprintln!(
            "skipped: {} not present (run bench/scanner/gitleaks-setup.sh)",
            p.display()
        );
        return;
    }
    let text = std::fs::read_to_string(&p).unwrap();
    let expected = text.matches("[[rules]]").count();
    let rules = Rules::from_gitleaks_file(&p).unwrap();
    assert_eq!(rules.len(), expected);
    let s = Scanner::new(rules, KnownSecrets::empty(), ScanOptions::default());
    let t = format!(
        "GITHUB_TOKEN=ghp_{}",
        "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z0A"
    );
    assert!(s
        .scan(t.as_bytes())
        .iter()
        .any(|f| f.rule_id == "github-pat"));
}
