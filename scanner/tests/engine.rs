//! Behaviour of the public scanning API that egress and git-gate rely on.

use base64::Engine;
use scanner::{KnownSecrets, Rules, ScanOptions, Scanner};

fn token() -> String {
    // A syntactically valid, made-up GitHub token.
    format!("ghp_{}", "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z0A")
}

fn builtin(decode: bool) -> Scanner {
    Scanner::new(
        Rules::builtin(),
        KnownSecrets::empty(),
        ScanOptions { decode },
    )
}

#[test]
fn finding_has_position_redaction_and_fingerprint() {
    let t = token();
    let data = format!("line one\n  export GH_TOKEN={t}\n");
    let f = builtin(false).scan(data.as_bytes());
    assert_eq!(f.len(), 1, "{f:?}");
    let f = &f[0];
    assert_eq!(f.rule_id, "github-pat");
    assert_eq!(&data[f.start..f.end], t);
    assert_eq!((f.line, f.column), (2, 19));
    assert_eq!(f.redacted, "ghp_…");
    assert!(!format!("{f:?}").contains(&t[4..]));
    assert!(
        f.fingerprint.starts_with("github-pat:") && f.fingerprint.len() == "github-pat:".len() + 16
    );
}

#[test]
fn secrets_straddling_window_boundaries_are_found_once_with_absolute_lines() {
    let t = token();
    let mut data = Vec::new();
    let line = b"0123456789012345678901234567890123456789012345678901234567890123456789\n";
    while data.len() < scanner::WINDOW - 20 {
        data.extend_from_slice(line);
    }
    let lines_before = data.iter().filter(|&&b| b == b'\n').count();
    data.extend_from_slice(format!("x={t}\n").as_bytes());
    while data.len() < 2 * scanner::WINDOW + 100 {
        data.extend_from_slice(line);
    }
    let f = builtin(false).scan(&data);
    assert_eq!(f.len(), 1, "{f:?}");
    assert_eq!(f[0].line, lines_before + 1);
    assert_eq!(f[0].column, 3);
    // The streaming API gives the same answer.
    let g = builtin(false).scan_reader(None, &data[..]).unwrap();
    assert_eq!(f, g);
}

#[test]
fn encoded_secrets_are_found_only_with_decode() {
    let t = token();
    let b64 = base64::engine::general_purpose::STANDARD.encode(format!("{{\"token\":\"{t}\"}}"));
    let hexed = hex::encode(format!("token {t}"));
    for blob in [b64, hexed, format!("q={}", t.replace('_', "%5F"))] {
        let data = format!("POST /collect?d={blob} HTTP/1.1");
        assert!(
            builtin(false)
                .scan(data.as_bytes())
                .iter()
                .all(|f| f.rule_id != "github-pat"),
            "{blob}"
        );
        let found = builtin(true).scan(data.as_bytes());
        let f = found
            .iter()
            .find(|f| f.rule_id == "github-pat")
            .unwrap_or_else(|| panic!("{blob}: {found:?}"));
        assert!(
            data[f.start..f.end].contains(&blob[blob.len() - 8..]),
            "range is the blob"
        );
    }
}

#[test]
fn nested_encodings_are_decoded() {
    let t = token();
    let inner = base64::engine::general_purpose::STANDARD.encode(format!("k={t}"));
    let outer = hex::encode(format!("payload={inner}"));
    let found = builtin(true).scan(outer.as_bytes());
    assert!(found.iter().any(|f| f.rule_id == "github-pat"), "{found:?}");
}

#[test]
fn known_secrets_raw_and_encoded() {
    let canary = b"bb-canary-4f1d2c9a8e7b".to_vec();
    let s = Scanner::new(
        Rules::empty(),
        KnownSecrets::new([canary.clone()]),
        ScanOptions::default(),
    );
    let c = String::from_utf8(canary).unwrap();
    let variants = [
        c.clone(),
        hex::encode(&c),
        hex::encode(&c).to_uppercase(),
        base64::engine::general_purpose::STANDARD.encode(format!("x{c}")),
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("xy{c}z")),
        c.bytes().map(|b| format!("%{b:02X}")).collect(),
    ];
    for v in variants {
        let data = format!("GET /?q={v} HTTP/1.1");
        let f = s.scan(data.as_bytes());
        assert_eq!(f.len(), 1, "{v}: {f:?}");
        assert_eq!(f[0].rule_id, "known-secret");
        assert!(!f[0].redacted.contains("canary-4f"));
    }
    assert!(s.scan(b"bb-canary-4f1d2c9a8e7").is_empty());
}

#[test]
fn known_secrets_from_file_skip_blank_lines() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("known");
    std::fs::write(&p, "\nfirst-secret-value\r\n\n  \nsecond-secret-value\n").unwrap();
    let k = KnownSecrets::from_file(&p).unwrap();
    assert_eq!(k.len(), 2);
    let s = Scanner::new(Rules::empty(), k, ScanOptions::default());
    assert_eq!(
        s.scan(b"a second-secret-value b first-secret-value").len(),
        2
    );
}

#[test]
fn scanner_is_send_sync_and_shareable() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Scanner>();
    let s = std::sync::Arc::new(builtin(false));
    let t = token();
    std::thread::scope(|sc| {
        for _ in 0..4 {
            let s = s.clone();
            let t = t.clone();
            sc.spawn(move || assert_eq!(s.scan(t.as_bytes()).len(), 1));
        }
    });
}
