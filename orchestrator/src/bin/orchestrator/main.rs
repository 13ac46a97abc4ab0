//! `orchestrator` binary: parses the command line and calls the library.

use std::process::ExitCode;

use clap::Parser;
use orchestrator::cli::{Cli, Command};
use orchestrator::Error;

mod commands;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            if let Error::Manifest(problems) = &e {
                for p in problems {
                    eprintln!("error: {p}");
                }
            } else {
                eprintln!("error: {e}");
            }
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

async fn run(cli: Cli) -> Result<u8, Error> {
    match cli.command {
        Command::Start(args) if args.dry_run => orchestrator::dryrun::run(&args).await,
        Command::Start(args) => commands::start(&args).await,
        Command::Exec(a) => commands::exec(&a.id, &a.command).await,
        Command::List => commands::list().await,
        Command::Info(a) => commands::info(&a.id).await,
        Command::Resume(a) => commands::resume(&a.id).await,
        Command::Stop(a) => commands::stop(&a.id).await,
        Command::Restart(a) => commands::restart(&a.id, &a.role, a.image.as_deref()).await,
        Command::Commit(a) => commands::commit(&a.id).await,
        Command::Cleanup(a) => commands::cleanup(a.yes, a.all).await,
        Command::Logs(a) => commands::logs(&a.id, a.sidecar.as_deref(), a.follow).await,
        Command::Proposals => Err(Error::NoSupervise("proposals".into())),
        Command::Approve(_) => Err(Error::NoSupervise("approve".into())),
        Command::Deny(_) => Err(Error::NoSupervise("deny".into())),
        Command::Dashboard => Err(Error::NoSupervise("dashboard".into())),
        Command::Images(i) => orchestrator::images::run_cli(&i).await,
        Command::Doctor => orchestrator::doctor::run().await,
    }
}
