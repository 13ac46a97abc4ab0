//! scanner: gitleaks-compatible secret scanning for bot-bottle.
//!
//! Owns the secret rules (builtin, or loaded from a gitleaks TOML config),
//! the scanning engine over bytes (keyword prefilter, regexes, entropy,
//! allowlists, known secrets, decoding of encoded blobs and of text escapes:
//! JSON, HTML references, UTF-16), scanning of git
//! history with gix, and the reports of the `scanner` CLI.
//!
//! It must never print, log or return a full secret: findings carry a
//! redacted prefix and a fingerprint only. It does no network I/O.

mod builtin;
pub mod cli;
mod decode;
mod engine;
mod error;
mod finding;
pub mod git;
mod gitleaks;
mod go_regex;
mod known;
pub mod report;
mod rules;
mod text;
pub mod walk;

pub use builtin::ids as builtin_rule_ids;
pub use engine::{ScanOptions, Scanner, OVERLAP, WINDOW};
pub use error::Error;
pub use finding::{redact, redact_span, Finding};
pub use git::GitFinding;
pub use known::{encoded_forms, KnownSecrets, RULE_ID as KNOWN_SECRET_RULE_ID};
pub use rules::Rules;
pub use text::{is_text, MAX_EXPANSION};
