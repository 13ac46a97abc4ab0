//! The `scanner`-backed detectors: gitleaks-format rules with decoding (base64, hex, percent;
//! nested), and exact known secrets (bottle tokens, the canary) matched raw and encoded.

use std::sync::Arc;

use scanner::{KnownSecrets, Rules, ScanOptions, Scanner};

use crate::config::RuleSource;
use crate::dlp::{Detect, Hit};
use crate::error::Error;

/// Findings of a scanner.
struct ScannerDetect {
    scanner: Arc<Scanner>,
}

impl Detect for ScannerDetect {
    fn find(&self, data: &[u8]) -> Vec<Hit> {
        self.scanner
            .scan(data)
            .into_iter()
            .map(|f| Hit {
                rule_id: f.rule_id,
                start: f.start,
                end: f.end,
            })
            .collect()
    }
}

type Detectors = (Arc<dyn Detect>, Arc<dyn Detect>, Arc<dyn Detect>);

/// (rules and known secrets, rules only, known secrets only).
pub fn build(source: &RuleSource, known: Vec<Vec<u8>>) -> Result<Detectors, Error> {
    let rules = match source {
        RuleSource::Builtin => Rules::builtin(),
        RuleSource::Gitleaks(p) => Rules::from_gitleaks_file(p).map_err(|e| Error::Rules {
            origin: p.display().to_string(),
            message: e.to_string(),
        })?,
    };
    let opts = ScanOptions { decode: true };
    let detect = |rules: Rules, known: KnownSecrets| -> Arc<dyn Detect> {
        Arc::new(ScannerDetect {
            scanner: Arc::new(Scanner::new(rules, known, opts)),
        })
    };
    // Known secrets alone get a scanner without rules: the host of every
    // request is checked with it, so it must not run the regex rules too.
    Ok((
        detect(rules.clone(), KnownSecrets::new(known.clone())),
        detect(rules, KnownSecrets::empty()),
        detect(Rules::empty(), KnownSecrets::new(known)),
    ))
}
