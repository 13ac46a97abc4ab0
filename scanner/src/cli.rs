//! What the `scanner` command does once its arguments are parsed: load the
//! rules, scan, print a redacted summary, write the report, pick the exit code.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use crate::report::{self, Entry};
use crate::{git, walk, Error, KnownSecrets, Rules, ScanOptions, Scanner};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Sarif,
}

#[derive(Clone, Debug)]
pub enum Source {
    Git {
        repo: PathBuf,
        log_opts: Option<String>,
    },
    Dir {
        path: PathBuf,
    },
    Stdin,
}

#[derive(Clone, Debug)]
pub struct Options {
    pub source: Source,
    pub config: Option<PathBuf>,
    pub report_format: Format,
    pub report_path: Option<String>,
    pub exit_code: i32,
    pub decode: bool,
    pub known_secrets: Option<PathBuf>,
    pub verbose: bool,
}

/// Exit code for usage and configuration errors.
pub const EXIT_USAGE: i32 = 2;

/// Runs a scan; returns the process exit code. Errors are config or I/O
/// problems the caller reports with exit code 2.
pub fn run(opts: &Options) -> Result<i32, Error> {
    let started = Instant::now();
    let scanner = load_scanner(opts)?;
    let (entries, what) = scan_source(&opts.source, &scanner)?;
    print_summary(opts, &entries, &what, started);
    if let Some(path) = &opts.report_path {
        write_report(path, opts.report_format, &entries)?;
    }
    Ok(if entries.is_empty() {
        0
    } else {
        opts.exit_code
    })
}

fn load_scanner(opts: &Options) -> Result<Scanner, Error> {
    let rules = match &opts.config {
        Some(p) => Rules::from_gitleaks_file(p)?,
        None => Rules::builtin(),
    };
    let known = match &opts.known_secrets {
        Some(p) => KnownSecrets::from_file(p)?,
        None => KnownSecrets::empty(),
    };
    Ok(Scanner::new(
        rules,
        known,
        ScanOptions {
            decode: opts.decode,
        },
    ))
}

/// The report entries of `source`, and what was scanned, for the summary.
fn scan_source(source: &Source, scanner: &Scanner) -> Result<(Vec<Entry>, String), Error> {
    Ok(match source {
        Source::Git { repo, log_opts } => {
            let range = match log_opts.as_deref().map(str::trim) {
                None | Some("") | Some("--all") => git::Range::All,
                Some(spec) => git::Range::Spec(spec.to_string()),
            };
            let r = git::scan_report(repo, &range, scanner)?;
            (
                git_entries(&r),
                format!("{} commits, {} blobs", r.commits_scanned, r.blobs_scanned),
            )
        }
        Source::Dir { path } => {
            let r = walk::scan_dir(path, scanner)?;
            let entries = r
                .findings
                .iter()
                .map(|f| Entry::from_finding(&f.finding, &f.path))
                .collect();
            (entries, format!("{} files, {} bytes", r.files, r.bytes))
        }
        Source::Stdin => {
            let stdin = std::io::stdin();
            let found = scanner
                .scan_reader(None, stdin.lock())
                .map_err(|source| Error::Io {
                    path: PathBuf::from("<stdin>"),
                    source,
                })?;
            let entries = found.iter().map(|f| Entry::from_finding(f, "")).collect();
            (entries, "stdin".to_string())
        }
    })
}

/// Entries with the commit details gitleaks reports alongside a finding.
fn git_entries(r: &git::Report) -> Vec<Entry> {
    r.findings
        .iter()
        .map(|g| {
            let mut e = Entry::from_finding(&g.finding, g.path.as_deref().unwrap_or(""));
            e.commit = g.commit.clone();
            if let Some(c) = r.commits.get(&g.commit) {
                e.author = c.author.clone();
                e.email = c.email.clone();
                e.date = format_time(c.time);
                e.message = c.summary.clone();
            }
            e.fingerprint = g.gitleaks_fingerprint();
            e
        })
        .collect()
}

/// To stderr: each (redacted) finding when verbose, then a one-line summary.
fn print_summary(opts: &Options, entries: &[Entry], what: &str, started: Instant) {
    let mut err = std::io::stderr().lock();
    if opts.verbose {
        for e in entries {
            let _ = writeln!(
                err,
                "{}\t{}{}:{}:{}\t{}",
                e.rule_id,
                if e.commit.is_empty() {
                    String::new()
                } else {
                    format!("{}:", &e.commit[..e.commit.len().min(12)])
                },
                e.file,
                e.start_line,
                e.start_column,
                e.secret
            );
        }
    }
    let _ = writeln!(
        err,
        "scanned {what} in {:.2}s: {} finding(s)",
        started.elapsed().as_secs_f64(),
        entries.len()
    );
}

/// Writes the report to `path`, or to stdout when it is "-".
fn write_report(path: &str, format: Format, entries: &[Entry]) -> Result<(), Error> {
    let text = match format {
        Format::Json => report::to_json(entries),
        Format::Sarif => report::to_sarif(entries),
    };
    if path == "-" {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{text}");
    } else {
        std::fs::write(path, text + "\n").map_err(|source| Error::Io {
            path: PathBuf::from(path),
            source,
        })?;
    }
    Ok(())
}

/// RFC 3339 in UTC, as gitleaks prints commit dates.
fn format_time(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn dates() {
        assert_eq!(super::format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(super::format_time(1_700_000_000), "2023-11-14T22:13:20Z");
    }
}
