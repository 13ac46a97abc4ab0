//! Any bytes as a gitleaks config: loading must return Ok or Err, never
//! panic, and a loaded rule set must scan without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scanner::{KnownSecrets, Rules, ScanOptions, Scanner};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(rules) = Rules::from_gitleaks_str(text, "fuzz.toml") {
        let s = Scanner::new(rules, KnownSecrets::empty(), ScanOptions { decode: true });
        let _ = s.scan_named("a/b.txt", data);
    }
});
