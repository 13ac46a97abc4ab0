//! cred-proxy binary: argument parsing, logging and signals; the work is in
//! the library.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use cred_proxy::config::{Config, DEFAULT_CONFIG_PATH};
use cred_proxy::handoff::BrokerKey;
use cred_proxy::{health, tokens, Server};
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// Injects the bottle's real credentials into requests handed over by egress.
#[derive(Parser, Debug)]
#[command(name = "cred-proxy", version, args_conflicts_with_subcommands = true)]
struct Cli {
    /// Run with this config file.
    #[arg(long, value_name = "FILE", conflicts_with = "check_config")]
    config: Option<PathBuf>,
    /// Validate this config file, print the effective config and exit
    /// (0 valid, 2 invalid).
    #[arg(long, value_name = "FILE")]
    check_config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Exit 0 when cred-proxy answers on its listen address.
    Healthcheck {
        /// Config file giving the listen address.
        #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    cred_proxy::install_crypto_provider();
    let cli = Cli::parse();
    if let Some(path) = cli.check_config {
        return match Config::load(&path) {
            Ok(c) => {
                print!("{}", c.to_toml());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("cred-proxy: invalid config: {e}");
                ExitCode::from(2)
            }
        };
    }
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cred-proxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Some(Command::Healthcheck { config }) => rt.block_on(healthcheck(config)),
        None => {
            init_logging();
            let path = cli.config.unwrap_or_else(|| DEFAULT_CONFIG_PATH.into());
            let config = match Config::load(&path) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(event = "config_error", error = %e);
                    eprintln!("cred-proxy: invalid config: {e}");
                    return ExitCode::from(2);
                }
            };
            match rt.block_on(run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(event = "fatal", error = format!("{e:#}"));
                    eprintln!("cred-proxy: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

async fn healthcheck(config: PathBuf) -> ExitCode {
    let config = match Config::load(&config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cred-proxy healthcheck: {e}");
            return ExitCode::from(2);
        }
    };
    match health::check(config.listen, Duration::from_secs(2)).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cred-proxy healthcheck: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .init();
}

async fn run(config: Config) -> anyhow::Result<()> {
    let key = BrokerKey::from_env().context("cannot read the broker key")?;
    let server = Server::bind(config, key, tokens::process_env())
        .await
        .context("cannot start")?;
    let reloader = server.reloader();
    let shutdown = CancellationToken::new();
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let mut hup = signal(SignalKind::hangup()).context("cannot watch SIGHUP")?;
    let serving = tokio::spawn(server.serve(shutdown.clone()));
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => match reloader.reload() {
                Ok(()) => tracing::info!(event = "tokens_reloaded"),
                Err(e) => tracing::error!(event = "reload_failed", error = %e),
            },
        }
    }
    tracing::info!(event = "stopping");
    shutdown.cancel();
    serving.await.context("server task failed")?;
    Ok(())
}
