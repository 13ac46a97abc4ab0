//! egress binary: parses arguments and runs the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use egress::config::{Config, DEFAULT_CONFIG_PATH};

#[derive(Parser)]
#[command(name = "egress", about = "bot-bottle egress proxy", version)]
struct Cli {
    /// Config file to run with.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Validate FILE, print the effective config and exit (0 valid, 2 invalid).
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    check_config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Exit 0 when egress answers on its listen address.
    Healthcheck {
        #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    if let Some(path) = cli.check_config {
        return match Config::load(&path) {
            Ok(c) => {
                print!("{}", c.source.to_toml_string());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("egress: {e}");
                ExitCode::from(2)
            }
        };
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("egress: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(Command::Healthcheck { config }) = cli.command {
        let listen = match Config::load(&config) {
            Ok(c) => c.listen,
            Err(_) => egress::config::DEFAULT_LISTEN
                .parse()
                .expect("default listen"),
        };
        return match rt.block_on(egress::run::healthcheck(listen)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("egress healthcheck: {e}");
                ExitCode::FAILURE
            }
        };
    }
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stdout)
        .init();
    let path = cli
        .config
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH));
    match rt.block_on(async { egress::run::run(&path).await.context("egress") }) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "egress stopped");
            eprintln!("{e:#}");
            ExitCode::from(2)
        }
    }
}
