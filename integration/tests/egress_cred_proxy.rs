//! agent → egress → cred-proxy → upstream, all in-process on loopback: the
//! upstream sees the real token; the agent and egress's audit log never do.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use cred_proxy::handoff::{BrokerKey, BROKER_KEY_ENV, HEADER_SIG};
use http::{Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use test_support::client::{body_string, read_until};
use test_support::pki::Pki;
use test_support::upstream::{handler, Seen, Upstream};
use test_support::{full, BoxError};
use tokio_util::sync::CancellationToken;

const REAL: &str = "ghp_REALtokenE2E_91c0ffee";
const PLACEHOLDER: &str = "bb-placeholder-one";

fn test_key() -> BrokerKey {
    BrokerKey::from_bytes([7u8; 32])
}

/// Every name comes from `[[resolve]]`; any other lookup is a failure.
struct NoDns;
impl egress::resolve::Resolve for NoDns {
    fn lookup(
        &self,
        host: String,
    ) -> egress::resolve::BoxFuture<'static, std::io::Result<Vec<std::net::IpAddr>>> {
        Box::pin(async move { Err(std::io::Error::other(format!("no DNS in tests: {host}"))) })
    }
}

/// A running in-process cred-proxy; stops on drop.
struct CredProxy {
    addr: SocketAddr,
    stop: CancellationToken,
}

impl Drop for CredProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl CredProxy {
    /// `routes` is the TOML of the `[[route]]` tables; token values come
    /// from `env`, not the process environment.
    async fn start(pki: &Pki, routes: &str, env: &[(&str, &str)]) -> CredProxy {
        let text = format!(
            "listen = \"127.0.0.1:0\"\nupstream_ca = \"{}\"\n{routes}",
            pki.ca_path.display()
        );
        let config =
            cred_proxy::Config::from_toml_str(&text, Path::new("cred-proxy.toml")).unwrap();
        let env: std::collections::HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let server =
            cred_proxy::Server::bind(config, test_key(), Arc::new(move |k| env.get(k).cloned()))
                .await
                .unwrap();
        let addr = server.local_addr();
        let stop = CancellationToken::new();
        tokio::spawn(server.serve(stop.clone()));
        CredProxy { addr, stop }
    }
}

/// A request straight to cred-proxy, without egress's signed hand-off.
async fn without_handoff(cred_proxy: SocketAddr, path: &str) -> Response<Incoming> {
    let tcp = tokio::net::TcpStream::connect(cred_proxy).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .uri(path)
        .header("host", "cred-proxy")
        .body(full(Bytes::new()))
        .unwrap();
    sender.send_request(req).await.unwrap()
}

struct Egress {
    addr: SocketAddr,
    ca_pem: String,
    audit: std::path::PathBuf,
    stop: CancellationToken,
}

impl Drop for Egress {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start_egress(pki: &Pki, cred_proxy: SocketAddr, upstream_port: u16) -> Egress {
    let (ca_pem, key_pem) = egress::mint::generate_ca("e2e bottle CA").unwrap();
    let dir = pki.dir.path();
    std::fs::write(dir.join("egress-ca.pem"), &ca_pem).unwrap();
    std::fs::write(dir.join("egress-ca.key"), &key_pem).unwrap();
    let audit = dir.join("audit.jsonl");
    let text = format!(
        "listen = \"127.0.0.1:0\"\nbottle_id = \"e2e\"\nca_cert = \"{d}/egress-ca.pem\"\nca_key = \"{d}/egress-ca.key\"\n\
         audit_log = \"{audit}\"\nupstream_ca = \"{ca}\"\nssrf_allow_cidrs = [\"127.0.0.0/8\"]\ncred_proxy = \"{cred_proxy}\"\n\
         [[route]]\nid = \"one\"\nhost = \"api.one.test\"\nports = [{upstream_port}]\n\
         auth = {{ scheme = \"Bearer\", token_ref = \"ONE\" }}\nplaceholder = \"{PLACEHOLDER}\"\n\
         [[resolve]]\nhost = \"api.one.test\"\nport = {upstream_port}\naddr = \"127.0.0.1\"\n",
        d = dir.display(),
        audit = audit.display(),
        ca = pki.ca_path.display(),
    );
    let config = egress::config::EgressConfig::from_toml_str(&text, Path::new("egress.toml"))
        .unwrap()
        .validate()
        .unwrap();
    let proxy = egress::proxy::Proxy::bind(config, Arc::new(NoDns))
        .await
        .unwrap();
    let addr = proxy.local_addr();
    let stop = CancellationToken::new();
    tokio::spawn(proxy.run(stop.clone()));
    Egress {
        addr,
        ca_pem,
        audit,
        stop,
    }
}

/// The agent: CONNECT through egress, TLS trusting only the bottle CA, then
/// one HTTP/1.1 request with the placeholder credential.
async fn agent_request(egress: &Egress, port: u16, path: &str) -> Response<Incoming> {
    let target = format!("api.one.test:{port}");
    let ca = CertificateDer::from_pem_slice(egress.ca_pem.as_bytes()).unwrap();
    let tls = test_support::client::tls_through(
        egress.addr,
        &target,
        "api.one.test",
        &ca,
        &[b"http/1.1"],
    )
    .await
    .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .uri(path)
        .header("host", &target)
        .header("authorization", format!("Bearer {PLACEHOLDER}"))
        .header("accept", "text/event-stream")
        .body(full(Bytes::new()))
        .unwrap();
    sender.send_request(req).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_to_egress_to_cred_proxy_to_upstream() {
    let key = test_key();
    // Egress reads the broker key from its environment, like in the container.
    // Every test of this binary sets the same value.
    std::env::set_var(BROKER_KEY_ENV, key.to_hex());

    let pki = Pki::new();
    let release = Arc::new(tokio::sync::Notify::new());
    let r = release.clone();
    let up = Upstream::start(
        &pki,
        "api.one.test",
        &[b"h2", b"http/1.1"],
        handler(move |seen: Seen| {
            let release = r.clone();
            async move {
                let auth = seen.header("authorization").unwrap_or("").to_owned();
                if seen.uri.path() == "/stream" {
                    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(4);
                    tokio::spawn(async move {
                        let first = format!("data: you sent {auth}\n\n");
                        let _ = tx.send(Ok(Frame::data(Bytes::from(first)))).await;
                        release.notified().await;
                        let _ = tx
                            .send(Ok(Frame::data(Bytes::from_static(b"data: 2\n\n"))))
                            .await;
                    });
                    let mut rx = rx;
                    let stream = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
                    return Response::builder()
                        .header("content-type", "text/event-stream")
                        .body(StreamBody::new(stream).boxed_unsync())
                        .unwrap();
                }
                Response::builder()
                    .header("x-echo", auth.clone())
                    .body(full(format!("you sent {auth}")))
                    .unwrap()
            }
        }),
    )
    .await;
    let proxy = CredProxy::start(
        &pki,
        "[[route]]\nid = \"one\"\nhost = \"api.one.test\"\nscheme = \"Bearer\"\ntoken_ref = \"ONE\"\n",
        &[("ONE", REAL)],
    )
    .await;
    let egress = start_egress(&pki, proxy.addr, up.addr.port()).await;

    // Plain request: echoed token redacted on the way back.
    let resp = agent_request(&egress, up.addr.port(), "/user?x=1").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let echo = resp.headers()["x-echo"].to_str().unwrap().to_owned();
    let body = body_string(resp).await;
    assert!(
        !echo.contains(REAL) && !body.contains(REAL),
        "{echo} / {body}"
    );
    assert!(
        !body.contains(PLACEHOLDER),
        "the placeholder reached the upstream: {body}"
    );
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {REAL}").as_str())
    );
    assert_eq!(seen[0].uri.path_and_query().unwrap().as_str(), "/user?x=1");
    assert!(seen[0].headers.get(HEADER_SIG).is_none());

    // Server-sent events through both hops, event by event.
    let resp = agent_request(&egress, up.addr.port(), "/stream").await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let got = read_until(
        &mut body,
        b"\n\n",
        "event 1 did not arrive before event 2 was released",
    )
    .await;
    let first = String::from_utf8(got).unwrap();
    assert!(first.starts_with("data: you sent Bearer ***"), "{first}");
    assert!(!first.contains(REAL));
    release.notify_one();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(&rest[..], b"data: 2\n\n");

    // A request to cred-proxy that did not come through egress is refused.
    assert_eq!(
        without_handoff(proxy.addr, "/user").await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(up.seen().len(), 2);

    let audit_path = egress.audit.clone();
    drop(egress);
    let audit = std::fs::read_to_string(audit_path).unwrap();
    assert!(
        audit.contains("\"one\""),
        "no audit line for the route:\n{audit}"
    );
    assert!(!audit.contains(REAL), "the audit log holds the real token");
}
