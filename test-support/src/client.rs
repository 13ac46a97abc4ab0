//! The agent's side of a proxy: CONNECT, then TLS that trusts only a test CA.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// Sends CONNECT and returns the proxy's status, its head (with the body of a
/// refusal) and the stream.
pub async fn connect(proxy: SocketAddr, authority: &str) -> (u16, String, TcpStream) {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    // Byte by byte: nothing after the head may be consumed, it belongs to TLS.
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut b).await.unwrap();
        if n == 0 {
            break;
        }
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    if status != 200 {
        // A refusal explains itself in the body; tests assert on it.
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_millis(500), s.read_to_end(&mut rest)).await;
        return (status, head + &String::from_utf8_lossy(&rest), s);
    }
    (status, head, s)
}

/// A TLS client trusting `ca` alone.
pub fn client_tls(ca: &CertificateDer<'static>, alpn: &[&[u8]]) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(crate::ring())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|a| a.to_vec()).collect();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
}

/// CONNECT `authority` (which must succeed), then TLS with `sni` trusting `ca`.
pub async fn tls_through(
    proxy: SocketAddr,
    authority: &str,
    sni: &str,
    ca: &CertificateDer<'static>,
    alpn: &[&[u8]],
) -> std::io::Result<Tls> {
    let (status, head, s) = connect(proxy, authority).await;
    assert_eq!(status, 200, "CONNECT {authority}: {head}");
    let name = ServerName::try_from(sni.to_string()).unwrap();
    client_tls(ca, alpn).connect(name, s).await
}

/// A response's whole body as text.
pub async fn body_string(resp: http::Response<hyper::body::Incoming>) -> String {
    use http_body_util::BodyExt;
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// Reads a streamed body frame by frame until what arrived ends with `end`
/// (an event of a stream, say); each frame must come within 10 s, or the
/// test fails with `late`. Proves the stream is not buffered to its end.
pub async fn read_until(body: &mut hyper::body::Incoming, end: &[u8], late: &str) -> Vec<u8> {
    use http_body_util::BodyExt;
    let mut got = Vec::new();
    while !got.ends_with(end) {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect(late)
            .unwrap()
            .unwrap();
        if let Ok(d) = frame.into_data() {
            got.extend_from_slice(&d);
        }
    }
    got
}
