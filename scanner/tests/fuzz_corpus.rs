//! Replays the committed fuzz corpora (`scanner/fuzz/corpus/`) on stable in
//! every test run, with the same checks as the fuzz targets: the inputs the
//! fuzzer found interesting (and every crash it once found, fixed since) stay
//! covered even where nightly and cargo-fuzz are not installed.

use std::path::{Path, PathBuf};

use scanner::{KnownSecrets, Rules, ScanOptions, Scanner};

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut out: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| {
            let p = e.unwrap().path();
            let data = std::fs::read(&p).unwrap();
            (p, data)
        })
        .collect();
    out.sort();
    assert!(
        out.len() >= 100,
        "{}: only {} inputs; the corpus is committed with the fuzz targets",
        dir.display(),
        out.len()
    );
    out
}

/// Same checks as `fuzz_targets/engine.rs`.
#[test]
fn engine_corpus_scans_without_panic_and_findings_stay_in_bounds() {
    let canary = b"bb-canary-0123456789";
    let s = Scanner::new(
        Rules::builtin(),
        KnownSecrets::new([canary.to_vec()]),
        ScanOptions { decode: true },
    );
    let mut findings = 0;
    for (path, data) in corpus("engine") {
        for f in s.scan(&data) {
            assert!(
                f.start <= f.end && f.end <= data.len(),
                "{}: {f:?}",
                path.display()
            );
            assert!(f.line >= 1 && f.column >= 1, "{}: {f:?}", path.display());
            assert!(
                f.redacted.chars().count() <= 5,
                "{}: redacted form too long: {f:?}",
                path.display()
            );
            findings += 1;
        }
    }
    // The corpus grew from seeds holding real token shapes: a scanner that
    // silently stopped finding anything would pass the checks above.
    assert!(findings > 0, "no finding in the whole engine corpus");
}

/// Same checks as `fuzz_targets/rules_loader.rs`: any text loads or is
/// refused with an error, and a loaded rule set scans.
#[test]
fn rules_loader_corpus_loads_or_refuses_without_panic() {
    let mut loaded = 0;
    let mut refused = 0;
    for (path, data) in corpus("rules_loader") {
        let Ok(text) = std::str::from_utf8(&data) else {
            continue;
        };
        match Rules::from_gitleaks_str(text, "fuzz.toml") {
            Ok(rules) => {
                let s = Scanner::new(rules, KnownSecrets::empty(), ScanOptions { decode: true });
                let _ = s.scan_named("a/b.txt", &data);
                loaded += 1;
            }
            Err(e) => {
                assert!(
                    !e.to_string().is_empty(),
                    "{}: empty error message",
                    path.display()
                );
                refused += 1;
            }
        }
    }
    assert!(
        loaded > 0 && refused > 0,
        "loaded {loaded}, refused {refused}"
    );
}
