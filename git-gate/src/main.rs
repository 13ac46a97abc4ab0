//! git-gate binary: argument parsing only; the logic lives in the library.
//! Also runs as git's hooks: when started through the `pre-receive` or
//! `access-hook` links the gate installs, it dispatches on that name.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use git_gate::config::{Config, DEFAULT_CONFIG_PATH};
use git_gate::{hook, mirror, proxy, serve};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "git-gate",
    version,
    about = "The bottle's git push gate",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    /// Run the gate with this config file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Validate the config file, print the effective config and exit (2 when invalid).
    #[arg(long, value_name = "FILE")]
    check_config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Exit 0 when the gate accepts connections on its listen address.
    Healthcheck {
        #[arg(long, value_name = "FILE", default_value = DEFAULT_CONFIG_PATH)]
        config: PathBuf,
    },
    /// ssh ProxyCommand: tunnel stdin/stdout to HOST:PORT through an HTTP CONNECT proxy.
    ConnectProxy {
        /// The proxy as host:port.
        proxy: String,
        host: String,
        port: u16,
    },
    /// Run the pre-receive checks (normally started by git through the hook link).
    PreReceive {
        #[arg(long, value_name = "FILE", env = serve::CONFIG_ENV)]
        config: PathBuf,
    },
    /// git daemon's access hook (normally started by git through the hook link).
    AccessHook {
        #[arg(long, value_name = "FILE", env = serve::CONFIG_ENV)]
        config: PathBuf,
        args: Vec<String>,
    },
}

fn main() -> ExitCode {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let invoked_as = Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match invoked_as.as_str() {
        mirror::PRE_RECEIVE => {
            return hook_main(|c| hook::run_pre_receive(c).map_err(Into::into), None)
        }
        mirror::ACCESS_HOOK => {
            let args: Vec<String> = std::env::args().skip(1).collect();
            return hook_main(|c| Ok(hook::run_access_hook(c, &args)), None);
        }
        _ => {}
    }
    let cli = Cli::parse();
    match (cli.command, cli.check_config, cli.config) {
        (Some(Cmd::Healthcheck { config }), _, _) => {
            let result = Config::load(&config)
                .map_err(|e| e.to_string())
                .and_then(|c| serve::healthcheck(&c));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("git-gate healthcheck: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        (Some(Cmd::ConnectProxy { proxy, host, port }), _, _) => {
            let result = proxy
                .parse()
                .map_err(|e: String| format!("git-gate connect-proxy: {e}"))
                .and_then(|p| proxy::connect_proxy(&p, &host, port));
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
        (Some(Cmd::PreReceive { config }), _, _) => hook_main(
            |c| hook::run_pre_receive(c).map_err(Into::into),
            Some(config),
        ),
        (Some(Cmd::AccessHook { config, args }), _, _) => {
            hook_main(|c| Ok(hook::run_access_hook(c, &args)), Some(config))
        }
        (None, Some(path), _) => match Config::load(&path) {
            Ok(c) => {
                print!("{}", c.to_toml());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("git-gate: {e}");
                ExitCode::from(2)
            }
        },
        (None, None, Some(path)) => {
            init_logging(None);
            match serve_main(&path) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "git-gate stopped");
                    eprintln!("git-gate: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        (None, None, None) => {
            eprintln!(
                "git-gate: give --config FILE, --check-config FILE or a subcommand (see --help)"
            );
            ExitCode::from(2)
        }
    }
}

fn serve_main(path: &Path) -> anyhow::Result<()> {
    let config = Config::load(path)?;
    let rt = tokio::runtime::Runtime::new().context("starting the runtime")?;
    rt.block_on(async {
        let shutdown = CancellationToken::new();
        let signals = shutdown.clone();
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        let waiter = tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
                _ = signals.cancelled() => {}
            }
            signals.cancel();
        });
        let result = serve::run(path, config, shutdown.clone()).await;
        shutdown.cancel();
        let _ = waiter.await;
        result.context("git-gate")
    })
}

/// Hook modes: config from the flag or `GIT_GATE_CONFIG`; logs go to the
/// gate's own stdout (named by `GIT_GATE_LOG`), never to ours, which the
/// agent reads.
fn hook_main(f: impl FnOnce(&Config) -> anyhow::Result<i32>, config: Option<PathBuf>) -> ExitCode {
    let path = config.or_else(|| std::env::var_os(serve::CONFIG_ENV).map(PathBuf::from));
    let Some(path) = path else {
        eprintln!("git-gate: hook started without {}", serve::CONFIG_ENV);
        return ExitCode::FAILURE;
    };
    init_logging(std::env::var_os(serve::LOG_ENV).map(PathBuf::from));
    let result = Config::load(&path)
        .map_err(anyhow::Error::from)
        .and_then(|c| f(&c));
    match result {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "hook failed");
            eprintln!("git-gate: internal error, push not accepted: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(to: Option<PathBuf>) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false);
    match to {
        None => {
            let _ = builder.with_writer(std::io::stdout).try_init();
        }
        Some(path) => {
            if let Ok(file) = std::fs::OpenOptions::new().append(true).open(&path) {
                let file = std::sync::Mutex::new(file);
                let _ = builder.with_writer(file).try_init();
            }
        }
    }
}
