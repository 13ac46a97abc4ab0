//! Scanning a directory tree: regular files only (symlinks are not
//! followed), `.git` directories skipped, files streamed in windows.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::{Error, Finding, Scanner};

/// A finding in a file of the tree.
#[derive(Clone, Debug)]
pub struct FileFinding {
    pub path: String,
    pub finding: Finding,
}

/// Findings of a directory scan, with totals.
#[derive(Debug, Default)]
pub struct DirReport {
    pub findings: Vec<FileFinding>,
    pub files: usize,
    pub bytes: u64,
}

/// Scans every regular file under `root` (or `root` itself if it is a file),
/// on all cores.
pub fn scan_dir(root: &Path, scanner: &Scanner) -> Result<DirReport, Error> {
    let mut files = Vec::new();
    collect(root, &mut files)?;
    let next = AtomicUsize::new(0);
    let out = Mutex::new(Vec::new());
    let bytes = std::sync::atomic::AtomicU64::new(0);
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(16);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let mut local = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(p) = files.get(i) else { break };
                    let Ok(f) = std::fs::File::open(p) else {
                        continue;
                    };
                    if let Ok(m) = f.metadata() {
                        bytes.fetch_add(m.len(), Ordering::Relaxed);
                    }
                    let name = p.to_string_lossy().into_owned();
                    if let Ok(found) = scanner.scan_reader(Some(&name), std::io::BufReader::new(f))
                    {
                        local.extend(found.into_iter().map(|finding| FileFinding {
                            path: name.clone(),
                            finding,
                        }));
                    }
                }
                out.lock().unwrap_or_else(|p| p.into_inner()).extend(local);
            });
        }
    });
    let mut findings = out.into_inner().unwrap_or_else(|p| p.into_inner());
    findings.sort_by(|a, b| (&a.path, a.finding.start).cmp(&(&b.path, b.finding.start)));
    Ok(DirReport {
        findings,
        files: files.len(),
        bytes: bytes.into_inner(),
    })
}

fn collect(p: &Path, out: &mut Vec<PathBuf>) -> Result<(), Error> {
    let meta = std::fs::symlink_metadata(p).map_err(|source| Error::Io {
        path: p.to_path_buf(),
        source,
    })?;
    if meta.is_file() {
        out.push(p.to_path_buf());
    } else if meta.is_dir() {
        let rd = std::fs::read_dir(p).map_err(|source| Error::Io {
            path: p.to_path_buf(),
            source,
        })?;
        let mut entries: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        entries.sort();
        for e in entries {
            if e.file_name().is_some_and(|n| n == ".git") {
                continue;
            }
            // Unreadable entries below the root are skipped, not fatal.
            let _ = collect(&e, out);
        }
    }
    Ok(())
}
