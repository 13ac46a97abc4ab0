//! Commands inside a running component: captured or streamed (`start -y --
//! CMD`, `exec ID -- CMD`) and interactive with the operator's terminal
//! (raw mode, window size followed, Ctrl-C passed through as a byte).

use std::io::Write;

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecOptions, StartExecResults};
use bollard::query_parameters::ResizeExecOptions;
use bollard::Docker;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;

use crate::backend::{ExecOutput, ExecRequest, OutputSink};
use crate::error::Error;
use crate::terminal::PtyFilter;

fn exec_err(container: &str) -> impl FnOnce(bollard::errors::Error) -> Error + '_ {
    move |source| Error::Engine {
        what: format!("run a command in {container}"),
        source,
    }
}

fn options(req: &ExecRequest, tty: bool) -> CreateExecOptions<String> {
    CreateExecOptions {
        cmd: Some(req.cmd.clone()),
        env: (!req.env.is_empty()).then(|| req.env.clone()),
        user: req.user.clone(),
        working_dir: req.working_dir.clone(),
        attach_stdin: Some(tty),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(tty),
        ..Default::default()
    }
}

async fn exit_code(docker: &Docker, container: &str, exec_id: &str) -> Result<i64, Error> {
    // The stream ends a moment before the engine records the exit code.
    for _ in 0..50 {
        let info = docker
            .inspect_exec(exec_id)
            .await
            .map_err(exec_err(container))?;
        if info.running != Some(true) {
            if let Some(code) = info.exit_code {
                return Ok(code);
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    Ok(-1)
}

pub async fn run(
    docker: &Docker,
    container: &str,
    req: ExecRequest,
    mut sink: OutputSink<'_>,
) -> Result<ExecOutput, Error> {
    let exec = docker
        .create_exec(container, options(&req, false))
        .await
        .map_err(exec_err(container))?;
    let started = docker
        .start_exec(
            &exec.id,
            Some(StartExecOptions {
                detach: false,
                tty: false,
                output_capacity: None,
            }),
        )
        .await
        .map_err(exec_err(container))?;
    let mut out = ExecOutput {
        exit_code: -1,
        stdout: Vec::new(),
        stderr: Vec::new(),
    };
    if let StartExecResults::Attached { mut output, .. } = started {
        while let Some(msg) = output.next().await {
            let msg = msg.map_err(exec_err(container))?;
            let io = |e| Error::Io {
                path: "output".into(),
                source: e,
            };
            match (&mut sink, msg) {
                (OutputSink::Capture, LogOutput::StdOut { message }) => {
                    out.stdout.extend_from_slice(&message)
                }
                (OutputSink::Capture, LogOutput::StdErr { message }) => {
                    out.stderr.extend_from_slice(&message)
                }
                (OutputSink::Stream { stdout, .. }, LogOutput::StdOut { message }) => {
                    stdout.write_all(&message).map_err(io)?;
                    stdout.flush().map_err(io)?;
                }
                (OutputSink::Stream { stderr, .. }, LogOutput::StdErr { message }) => {
                    stderr.write_all(&message).map_err(io)?;
                    stderr.flush().map_err(io)?;
                }
                _ => {}
            }
        }
    }
    out.exit_code = exit_code(docker, container, &exec.id).await?;
    Ok(out)
}

async fn resize(docker: &Docker, exec_id: &str) {
    if let Some((w, h)) = crate::attach::size() {
        let _ = docker
            .resize_exec(
                exec_id,
                ResizeExecOptions {
                    h: i32::from(h),
                    w: i32::from(w),
                },
            )
            .await;
    }
}

pub async fn interactive(docker: &Docker, container: &str, req: ExecRequest) -> Result<i64, Error> {
    let is_tty = crate::attach::stdin_is_terminal();
    let mut opts = options(&req, is_tty);
    opts.attach_stdin = Some(true);
    let exec = docker
        .create_exec(container, opts)
        .await
        .map_err(exec_err(container))?;
    let started = docker
        .start_exec(
            &exec.id,
            Some(StartExecOptions {
                detach: false,
                tty: is_tty,
                output_capacity: None,
            }),
        )
        .await
        .map_err(exec_err(container))?;
    let StartExecResults::Attached {
        mut output,
        mut input,
    } = started
    else {
        return exit_code(docker, container, &exec.id).await;
    };
    let raw = if is_tty {
        crate::attach::RawMode::enable()
    } else {
        None
    };
    if is_tty {
        resize(docker, &exec.id).await;
    }
    let mut winch = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
        .map_err(|e| Error::Io {
        path: "SIGWINCH".into(),
        source: e,
    })?;
    let mut stdin_rx = crate::attach::stdin_chunks();
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    // What the agent's pty writes reaches the operator's terminal filtered:
    // no clipboard writes, file transfers or device control strings.
    let (mut out_screen, mut err_screen) = (PtyFilter::new(), PtyFilter::new());
    let mut stdin_open = true;
    loop {
        tokio::select! {
            msg = output.next() => {
                let Some(msg) = msg else { break };
                let msg = msg.map_err(exec_err(container))?;
                let io = |e| Error::Io { path: "terminal".into(), source: e };
                match msg {
                    LogOutput::StdErr { message } => { stderr.write_all(&err_screen.filter(&message)).await.map_err(io)?; stderr.flush().await.map_err(io)?; }
                    LogOutput::StdOut { message } | LogOutput::Console { message } => { stdout.write_all(&out_screen.filter(&message)).await.map_err(io)?; stdout.flush().await.map_err(io)?; }
                    LogOutput::StdIn { .. } => {}
                }
            }
            chunk = stdin_rx.recv(), if stdin_open => {
                match chunk {
                    None => { stdin_open = false; let _ = input.shutdown().await; }
                    Some(bytes) => { if input.write_all(&bytes).await.is_err() { stdin_open = false; } }
                }
            }
            _ = winch.recv() => { if is_tty { resize(docker, &exec.id).await; } }
        }
    }
    drop(raw);
    exit_code(docker, container, &exec.id).await
}
