//! Test fixtures: a cred-proxy in-process, and an egress-like client that
//! signs its hand-offs. The test CA and the recording TLS upstreams come from
//! test-support.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use cred_proxy::handoff::{self, BrokerKey};
use cred_proxy::tokens::EnvLookup;
use cred_proxy::{Config, Server};
use http::{Method, Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio_util::sync::CancellationToken;

// Not every test binary uses every fixture.
#[allow(unused_imports)]
pub use test_support::pki::Pki;
#[allow(unused_imports)]
pub use test_support::upstream::{handler, ok_handler, Seen, Upstream};
#[allow(unused_imports)]
pub use test_support::{full, Body as TestBody, BoxError};

pub fn test_key() -> BrokerKey {
    BrokerKey::from_bytes([7u8; 32])
}

pub fn env_of(pairs: &[(&str, &str)]) -> EnvLookup {
    let map: std::collections::HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Arc::new(move |k| map.get(k).cloned())
}

/// A running in-process cred-proxy; stops on drop.
pub struct Proxy {
    pub addr: SocketAddr,
    stop: CancellationToken,
    pub reloader: cred_proxy::server::Reloader,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Proxy {
    /// `routes` is the TOML of the `[[route]]` tables.
    pub async fn start(pki: &Pki, routes: &str, env: EnvLookup) -> Proxy {
        let text = format!(
            "listen = \"127.0.0.1:0\"\nupstream_ca = \"{}\"\n{routes}",
            pki.ca_path.display()
        );
        let config = Config::from_toml_str(&text, std::path::Path::new("test.toml")).unwrap();
        let server = Server::bind(config, test_key(), env).await.unwrap();
        let addr = server.local_addr();
        let reloader = server.reloader();
        let stop = CancellationToken::new();
        tokio::spawn(server.serve(stop.clone()));
        Proxy {
            addr,
            stop,
            reloader,
        }
    }
}

/// A hand-off request as egress would send it.
pub struct Handoff<'a> {
    pub route: &'a str,
    pub dial: SocketAddr,
    pub method: Method,
    pub path: &'a str,
    pub headers: Vec<(&'a str, &'a str)>,
    pub body: Bytes,
    /// None: sign correctly; Some(s): send this signature instead.
    pub sig: Option<String>,
    pub omit_handoff: bool,
}

impl<'a> Handoff<'a> {
    pub fn get(route: &'a str, dial: SocketAddr, path: &'a str) -> Self {
        Handoff {
            route,
            dial,
            method: Method::GET,
            path,
            headers: vec![],
            body: Bytes::new(),
            sig: None,
            omit_handoff: false,
        }
    }

    pub fn header(mut self, k: &'a str, v: &'a str) -> Self {
        self.headers.push((k, v));
        self
    }

    pub async fn send(self, proxy: SocketAddr) -> Response<Incoming> {
        let tcp = tokio::net::TcpStream::connect(proxy).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        let dial = self.dial.to_string();
        let mut b = Request::builder()
            .method(self.method.clone())
            .uri(self.path);
        if !self
            .headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("host"))
        {
            b = b.header("host", "cred-proxy");
        }
        if !self.omit_handoff {
            let sig = self.sig.clone().unwrap_or_else(|| {
                handoff::sign(
                    &test_key(),
                    self.route,
                    &dial,
                    self.method.as_str(),
                    self.path,
                )
            });
            b = b
                .header(handoff::HEADER_ROUTE, self.route)
                .header(handoff::HEADER_DIAL, &dial)
                .header(handoff::HEADER_SIG, sig);
        }
        for (k, v) in &self.headers {
            b = b.header(*k, *v);
        }
        let req = b.body(full(self.body)).unwrap();
        sender.send_request(req).await.unwrap()
    }
}
