//! `cred-proxy healthcheck`: proves the sidecar answers on its listen address
//! by sending an unsigned request and expecting its refusal (401).
//!
//! Connects to an address, never a name (static binaries in scratch images
//! cannot resolve).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Path of the probe request (its refusal is logged at debug level only).
pub const PROBE_PATH: &str = "/healthcheck";

/// The address to probe for a listen address (unspecified → loopback).
pub fn probe_addr(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// Ok when cred-proxy at `listen` answers an unsigned request with 401.
pub async fn check(listen: SocketAddr, timeout: Duration) -> Result<(), String> {
    let addr = probe_addr(listen);
    let probe = async {
        let mut s = TcpStream::connect(addr)
            .await
            .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
        s.write_all(b"GET /healthcheck HTTP/1.1\r\nHost: cred-proxy\r\nConnection: close\r\n\r\n")
            .await
            .map_err(|e| format!("cannot write to {addr}: {e}"))?;
        let mut buf = [0u8; 64];
        let mut got = 0;
        while got < 12 {
            let n = s
                .read(&mut buf[got..])
                .await
                .map_err(|e| format!("cannot read from {addr}: {e}"))?;
            if n == 0 {
                break;
            }
            got += n;
        }
        let head = String::from_utf8_lossy(&buf[..got]);
        if head.starts_with("HTTP/1.1 401") {
            Ok(())
        } else {
            Err(format!(
                "{addr} answered unexpectedly: {:?}",
                head.lines().next().unwrap_or("")
            ))
        }
    };
    tokio::time::timeout(timeout, probe)
        .await
        .map_err(|_| format!("{addr} did not answer within {timeout:?}"))?
}
