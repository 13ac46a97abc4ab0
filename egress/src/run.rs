//! Running the sidecar: signals (SIGHUP reload, SIGTERM/SIGINT graceful stop) around [`Proxy`],
//! and the `healthcheck` probe.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::error::Error;
use crate::proxy::{Proxy, HEALTH_PATH};
use crate::resolve::SystemResolver;

/// Runs until SIGTERM/SIGINT; reloads `config_path` on SIGHUP.
pub async fn run(config_path: &Path) -> Result<(), Error> {
    let config = Config::load(config_path)?;
    let proxy = Proxy::bind(config, Arc::new(Arc::new(SystemResolver::default()))).await?;
    let handle = proxy.handle();
    let shutdown = CancellationToken::new();
    let mut hup =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).map_err(|e| {
            Error::Io {
                path: "<signal>".into(),
                source: e,
            }
        })?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| Error::Io {
            path: "<signal>".into(),
            source: e,
        })?;
    let path = config_path.to_path_buf();
    let sd = shutdown.clone();
    let signals = async move {
        loop {
            tokio::select! {
                _ = hup.recv() => {
                    match handle.reload_from(&path) {
                        Ok(()) => {}
                        Err(e) => tracing::error!(error = %e, "reload refused; keeping the running config"),
                    }
                }
                _ = term.recv() => { tracing::info!("SIGTERM: stopping"); sd.cancel(); break; }
                _ = tokio::signal::ctrl_c() => { tracing::info!("SIGINT: stopping"); sd.cancel(); break; }
            }
        }
    };
    let sig = tokio::spawn(signals);
    proxy.run(shutdown.clone()).await;
    sig.abort();
    Ok(())
}

/// Connects to the listen address (loopback when it is a wildcard) and asks the health path.
pub async fn healthcheck(listen: SocketAddr) -> Result<(), String> {
    let ip = match listen.ip() {
        IpAddr::V4(v) if v.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v) if v.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    let addr = SocketAddr::new(ip, listen.port());
    let probe = async {
        let mut s = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect {addr}: {e}"))?;
        s.write_all(
            format!("GET {HEALTH_PATH} HTTP/1.1\r\nHost: egress\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.map_err(|e| e.to_string())?;
        if buf.starts_with(b"HTTP/1.1 200") {
            Ok(())
        } else {
            Err(format!("unexpected answer from {addr}"))
        }
    };
    tokio::time::timeout(Duration::from_secs(2), probe)
        .await
        .map_err(|_| format!("no answer from {addr} within 2s"))?
}
