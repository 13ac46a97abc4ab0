//! The long-running side: prepare the mirrors, then run `git daemon` over
//! them until shutdown, relaying its log lines as JSON.
//!
//! Never: serve before every mirror is ready (a start-up error stops the
//! gate), or outlive the daemon (if it dies, the gate exits non-zero).

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncBufReadExt as _;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::error::Error;
use crate::mirror;

/// Environment variable naming the config file for the hooks git runs.
pub const CONFIG_ENV: &str = "GIT_GATE_CONFIG";
/// Environment variable naming where hooks append their JSON log lines.
pub const LOG_ENV: &str = "GIT_GATE_LOG";

/// Prepare every mirror, then serve until `shutdown` is cancelled.
pub async fn run(
    config_path: &Path,
    config: Config,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let prep = config.clone();
    tokio::task::spawn_blocking(move || mirror::prepare(&prep))
        .await
        .map_err(|e| Error::Hook(format!("start-up task failed: {e}")))??;
    serve(config_path, &config, shutdown).await
}

/// Run `git daemon` over the prepared mirrors until `shutdown`.
pub async fn serve(
    config_path: &Path,
    config: &Config,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let config_path = config_path
        .canonicalize()
        .unwrap_or_else(|_| config_path.to_path_buf());
    let listen = config.listen;
    let mut child = daemon_command(&config_path, config)
        .spawn()
        .map_err(|source| Error::Spawn {
            program: "git daemon".into(),
            source,
        })?;
    let stderr = child.stderr.take().expect("piped stderr");
    let relay = tokio::spawn(relay_log(stderr));

    let ready = wait_listening(config.connect_addr(), &mut child).await;
    if let Err(e) = ready {
        let _ = child.start_kill();
        let _ = child.wait().await;
        relay.abort();
        return Err(e);
    }
    tracing::info!(listen = %listen, remotes = config.remote.len(), "git-gate serving");

    let result = tokio::select! {
        _ = shutdown.cancelled() => {
            tracing::info!("shutting down");
            let _ = child.start_kill();
            let _ = child.wait().await;
            Ok(())
        }
        status = child.wait() => {
            Err(Error::Hook(format!("git daemon exited unexpectedly ({})",
                status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()))))
        }
    };
    relay.abort();
    let _ = relay.await;
    result
}

/// `git daemon` over the mirrors, with a clean environment that names the
/// config and log for its hooks.
fn daemon_command(config_path: &Path, config: &Config) -> tokio::process::Command {
    let hooks = mirror::hooks_dir(config);
    let mut cmd = tokio::process::Command::new("git");
    cmd.env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()),
        )
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env(CONFIG_ENV, config_path)
        // Hooks log into our own stdout, so the operator sees one JSON stream.
        .env(LOG_ENV, format!("/proc/{}/fd/1", std::process::id()));
    for k in ["HOME", "RUST_LOG"] {
        if let Some(v) = std::env::var_os(k) {
            cmd.env(k, v);
        }
    }
    let listen = config.listen;
    cmd.arg("daemon")
        .arg("--reuseaddr")
        .arg(format!("--listen={}", listen.ip()))
        .arg(format!("--port={}", listen.port()))
        .arg(format!(
            "--base-path={}",
            config.state_dir.join("repos").display()
        ))
        .arg("--export-all")
        .arg("--enable=receive-pack")
        .arg("--informative-errors")
        .arg("--max-connections=64")
        .arg("--timeout=600")
        .arg(format!(
            "--access-hook={}",
            hooks.join(mirror::ACCESS_HOOK).display()
        ))
        .arg("--log-destination=stderr")
        .arg("--verbose")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Relays the daemon's log lines until its stderr closes.
async fn relay_log(stderr: tokio::process::ChildStderr) {
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    // Healthchecks connect from loopback and hang up: drop those
    // connections' lines (by daemon child pid) instead of logging an
    // error every two seconds.
    let mut quiet = std::collections::HashSet::new();
    while let Ok(Some(line)) = lines.next_line().await {
        let (pid, text) = split_pid(&line);
        if text.starts_with("Connection from 127.0.0.1:")
            || text.starts_with("Connection from [::1]:")
        {
            quiet.insert(pid.to_string());
            continue;
        }
        if quiet.contains(pid) {
            continue;
        }
        // The daemon reports a child's end as "[child] Disconnected ...",
        // and the child's own complaint comes without a pid.
        let (child, rest) = split_pid(text);
        if rest.starts_with("Disconnected") && quiet.remove(child) {
            continue;
        }
        if pid.is_empty() && !quiet.is_empty() && text.contains("the remote end hung up") {
            continue;
        }
        tracing::info!(target: "git_daemon", pid = pid, "{}", text);
    }
}

/// git daemon prefixes its lines with `[pid] `.
fn split_pid(line: &str) -> (&str, &str) {
    if let Some(rest) = line.strip_prefix('[') {
        if let Some((pid, text)) = rest.split_once("] ") {
            if pid.bytes().all(|b| b.is_ascii_digit()) {
                return (pid, text);
            }
        }
    }
    ("", line)
}

async fn wait_listening(addr: SocketAddr, child: &mut tokio::process::Child) -> Result<(), Error> {
    for _ in 0..100 {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Error::Hook(format!(
                "git daemon exited at start ({status}); is {addr} already in use?"
            )));
        }
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(Error::Hook(format!(
        "git daemon did not start listening on {addr} within 5 s"
    )))
}

/// `healthcheck`: exit 0 when something accepts connections on the listen address.
pub fn healthcheck(config: &Config) -> Result<(), String> {
    let addr = config.connect_addr();
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map(|_| ())
        .map_err(|e| format!("git-gate is not answering on {addr}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::split_pid;

    #[test]
    fn splits_daemon_pid_prefix() {
        assert_eq!(
            split_pid("[12] Connection from 1.2.3.4:5"),
            ("12", "Connection from 1.2.3.4:5")
        );
        assert_eq!(split_pid("fatal: x"), ("", "fatal: x"));
        assert_eq!(split_pid("[x] y"), ("", "[x] y"));
    }
}
