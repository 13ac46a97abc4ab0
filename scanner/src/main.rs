//! `scanner`: a gitleaks-compatible command line over the scanner library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use scanner::cli::{self, Format, Options, Source};

#[derive(Parser)]
#[command(
    name = "scanner",
    version,
    about = "Find secrets in git history, directories and stdin (gitleaks-compatible)"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
    /// gitleaks TOML config (default: the builtin rules)
    #[arg(short = 'c', long, global = true)]
    config: Option<PathBuf>,
    /// Report format
    #[arg(short = 'f', long, global = true, value_enum, default_value = "json")]
    report_format: ReportFormat,
    /// Write the report to FILE (`-` for stdout)
    #[arg(short = 'r', long, global = true, value_name = "FILE")]
    report_path: Option<String>,
    /// Redact secrets in output (always on: accepted for gitleaks compatibility)
    #[arg(long, global = true, num_args = 0..=1, default_missing_value = "100")]
    redact: Option<u32>,
    /// Exit code when secrets are found
    #[arg(long, global = true, default_value_t = 1)]
    exit_code: i32,
    /// Also look inside base64, hex and percent-encoded blobs
    #[arg(long, global = true)]
    decode: bool,
    /// File of exact secret values to find (one per line)
    #[arg(long, global = true, value_name = "FILE")]
    known_secrets: Option<PathBuf>,
    /// Print each finding (redacted) to stderr
    #[arg(short = 'v', long, global = true)]
    verbose: bool,
    /// Accepted for gitleaks compatibility
    #[arg(long, global = true, hide = true)]
    no_banner: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Scan the commits of a git repository
    Git {
        /// Repository (default: the current directory)
        repo: Option<PathBuf>,
        /// Range to scan: "A..B", a revision, or "--all" (default: all refs)
        #[arg(long, allow_hyphen_values = true)]
        log_opts: Option<String>,
    },
    /// Scan the files of a directory (or one file)
    #[command(alias = "directory")]
    Dir { path: Option<PathBuf> },
    /// Scan standard input
    Stdin,
    /// gitleaks' older spelling: `detect --source DIR [--no-git] [--log-opts ...]`
    #[command(hide = true)]
    Detect {
        #[arg(short = 's', long, default_value = ".")]
        source: PathBuf,
        #[arg(long)]
        no_git: bool,
        #[arg(long, allow_hyphen_values = true)]
        log_opts: Option<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ReportFormat {
    Json,
    Sarif,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let _ = (args.redact, args.no_banner);
    let source = match args.command {
        Command::Git { repo, log_opts } => Source::Git {
            repo: repo.unwrap_or_else(|| ".".into()),
            log_opts,
        },
        Command::Dir { path } => Source::Dir {
            path: path.unwrap_or_else(|| ".".into()),
        },
        Command::Stdin => Source::Stdin,
        Command::Detect {
            source,
            no_git: true,
            ..
        } => Source::Dir { path: source },
        Command::Detect {
            source, log_opts, ..
        } => Source::Git {
            repo: source,
            log_opts,
        },
    };
    let opts = Options {
        source,
        config: args.config,
        report_format: match args.report_format {
            ReportFormat::Json => Format::Json,
            ReportFormat::Sarif => Format::Sarif,
        },
        report_path: args.report_path,
        exit_code: args.exit_code,
        decode: args.decode,
        known_secrets: args.known_secrets,
        verbose: args.verbose,
    };
    match cli::run(&opts) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("scanner: {e}");
            ExitCode::from(cli::EXIT_USAGE as u8)
        }
    }
}
