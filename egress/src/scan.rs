//! The `scanner`-backed detectors: gitleaks-format rules with decoding (base64, hex, percent;
//! nested), and exact known secrets (bottle tokens, the canary) matched raw and encoded.

use std::sync::Arc;

use scanner::{KnownSecrets, Rules, ScanOptions, Scanner, KNOWN_SECRET_RULE_ID};

use crate::config::RuleSource;
use crate::dlp::{Detect, Hit};
use crate::error::Error;

/// Findings of a scanner, optionally only those of the known-secrets rule.
struct ScannerDetect {
    scanner: Arc<Scanner>,
    known_only: bool,
}

impl Detect for ScannerDetect {
    fn find(&self, data: &[u8]) -> Vec<Hit> {
        self.scanner
            .scan(data)
            .into_iter()
            .filter(|f| !self.known_only || f.rule_id == KNOWN_SECRET_RULE_ID)
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
    let both = Arc::new(Scanner::new(rules.clone(), KnownSecrets::new(known), opts));
    let rules_only = Arc::new(Scanner::new(rules, KnownSecrets::empty(), opts));
    Ok((
        Arc::new(ScannerDetect {
            scanner: both.clone(),
            known_only: false,
        }),
        Arc::new(ScannerDetect {
            scanner: rules_only,
            known_only: false,
        }),
        Arc::new(ScannerDetect {
            scanner: both,
            known_only: true,
        }),
    ))
}
