//! Directory scans: regular files only, `.git` skipped, symlinks not followed,
//! paths reported as given.

use scanner::{walk, KnownSecrets, Rules, ScanOptions, Scanner};

#[test]
fn walks_regular_files_only() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let tok = format!("ghp_{}", "aB3dE5fG7hJ9kL1mN3pQ5rS7tU9vW1xY3z0A");
    std::fs::create_dir_all(d.join("src/.git")).unwrap();
    std::fs::write(d.join("src/app.env"), format!("\n\nGH={tok}\n")).unwrap();
    std::fs::write(d.join("src/.git/config"), format!("GH={tok}\n")).unwrap();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("secret.txt"), format!("GH={tok}\n")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("secret.txt"), d.join("link.txt")).unwrap();
    std::os::unix::fs::symlink(outside.path(), d.join("linkdir")).unwrap();
    let s = Scanner::new(
        Rules::builtin(),
        KnownSecrets::empty(),
        ScanOptions::default(),
    );
    let r = walk::scan_dir(d, &s).unwrap();
    assert_eq!(r.files, 1);
    assert_eq!(r.findings.len(), 1, "{:?}", r.findings);
    assert_eq!(r.findings[0].path, d.join("src/app.env").to_string_lossy());
    assert_eq!(r.findings[0].finding.line, 3);
}
