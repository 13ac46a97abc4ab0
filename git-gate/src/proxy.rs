//! `git-gate connect-proxy PROXY HOST PORT`: ssh's ProxyCommand when the gate
//! reaches upstream through egress. Opens an HTTP CONNECT tunnel at PROXY
//! and copies stdin/stdout through it, so the gate image needs no extra tool.
//!
//! Never: send anything but the CONNECT request before the tunnel is up, or
//! accept a tunnel the proxy did not answer with a 2xx status.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::fd::AsFd as _;
use std::time::Duration;

use crate::config::HostPort;

/// Longest CONNECT response head we read before giving up.
const MAX_HEAD: usize = 16 * 1024;

/// How long a refused connection to the proxy is retried: the time egress
/// may take to start listening when both come up together.
const PROXY_START_GRACE: Duration = Duration::from_secs(20);

/// Open the tunnel and relay until either side closes. Errors are written
/// for ssh's stderr, which the operator sees.
pub fn connect_proxy(proxy: &HostPort, host: &str, port: u16) -> Result<(), String> {
    let addrs: Vec<_> = (proxy.host(), proxy.port())
        .to_socket_addrs()
        .map_err(|e| format!("git-gate connect-proxy: cannot resolve proxy {proxy}: {e}"))?
        .collect();
    // Egress is started alongside the gate, so a refused connection in the
    // first seconds means "not listening yet", not "wrong address".
    let deadline = std::time::Instant::now() + PROXY_START_GRACE;
    let mut last = None;
    let mut stream = None;
    'dial: loop {
        for a in &addrs {
            match TcpStream::connect_timeout(a, Duration::from_secs(10)) {
                Ok(s) => {
                    stream = Some(s);
                    break 'dial;
                }
                Err(e) => last = Some(e),
            }
        }
        let refused = last
            .as_ref()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused);
        if !refused || std::time::Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut stream = stream.ok_or_else(|| {
        format!(
            "git-gate connect-proxy: cannot connect to proxy {proxy}: {}",
            last.map(|e| e.to_string())
                .unwrap_or_else(|| "no address".into())
        )
    })?;
    let _ = stream.set_nodelay(true);
    let target = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    let req = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    stream
        .write_all(req.as_bytes())
        .map_err(|e| format!("git-gate connect-proxy: writing to proxy {proxy}: {e}"))?;

    // Read the response head one byte at a time so no tunnelled byte is consumed.
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_HEAD {
            return Err(format!(
                "git-gate connect-proxy: proxy {proxy} sent an oversized response"
            ));
        }
        match stream.read(&mut byte) {
            Ok(0) => {
                return Err(format!(
                    "git-gate connect-proxy: proxy {proxy} closed the connection before answering CONNECT {target}"
                ))
            }
            Ok(_) => head.push(byte[0]),
            Err(e) => return Err(format!("git-gate connect-proxy: reading from proxy {proxy}: {e}")),
        }
    }
    let status_line =
        String::from_utf8_lossy(head.split(|&b| b == b'\r').next().unwrap_or(&[])).to_string();
    let code = status_line.split_whitespace().nth(1).unwrap_or("");
    if !(status_line.starts_with("HTTP/1.") && code.starts_with('2') && code.len() == 3) {
        return Err(format!(
            "git-gate connect-proxy: proxy {proxy} refused CONNECT {target}: {status_line}"
        ));
    }

    let mut upload = stream
        .try_clone()
        .map_err(|e| format!("git-gate connect-proxy: {e}"))?;
    // Raw descriptors: std's stdout is line-buffered, which would hold back
    // binary ssh packets that do not end in a newline.
    let raw = |fd: std::os::fd::BorrowedFd<'_>| {
        fd.try_clone_to_owned()
            .map(std::fs::File::from)
            .map_err(|e| format!("git-gate connect-proxy: {e}"))
    };
    let mut stdin = raw(std::io::stdin().as_fd())?;
    let mut stdout = raw(std::io::stdout().as_fd())?;
    let up = std::thread::spawn(move || {
        relay(&mut stdin, &mut upload);
        let _ = upload.shutdown(Shutdown::Write);
    });
    relay(&mut stream, &mut stdout);
    // Upstream is done: returning ends the process, and with it the upload
    // thread, which may still be blocked reading ssh's side.
    drop(stdout);
    let _ = stream.shutdown(Shutdown::Both);
    drop(up);
    Ok(())
}

/// Copy until EOF or an error, writing every chunk as soon as it is read.
/// A plain loop on purpose: `io::copy`'s splice fast path stalled ssh's
/// key exchange through the tunnel.
fn relay(from: &mut impl Read, to: &mut impl Write) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
    }
}
