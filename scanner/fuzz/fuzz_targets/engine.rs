//! Any bytes through the builtin rules with decoding and known secrets:
//! no panic, every finding's range inside the input, never the secret in
//! the redacted form.
#![no_main]

use libfuzzer_sys::fuzz_target;
use scanner::{KnownSecrets, Rules, ScanOptions, Scanner};
use std::sync::OnceLock;

fn scanner() -> &'static Scanner {
    static S: OnceLock<Scanner> = OnceLock::new();
    S.get_or_init(|| {
        Scanner::new(
            Rules::builtin(),
            KnownSecrets::new([b"bb-canary-0123456789".to_vec()]),
            ScanOptions { decode: true },
        )
    })
}

fuzz_target!(|data: &[u8]| {
    for f in scanner().scan(data) {
        assert!(f.start <= f.end && f.end <= data.len(), "{f:?}");
        assert!(f.line >= 1 && f.column >= 1);
        assert!(f.redacted.chars().count() <= 5);
    }
});
