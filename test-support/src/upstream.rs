//! An HTTP server on loopback (TLS or plain, h1 and h2) that records every
//! request before a test's handler answers it, so tests can assert on what a
//! sidecar let through.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::pki::Pki;
use crate::{full, Body};

/// A request as the upstream received it, body read to the end.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

/// The log of one or more upstreams; clones share it, so the requests of
/// several listeners land in one order.
#[derive(Clone, Default)]
pub struct Recorder(Arc<Mutex<Vec<Seen>>>);

impl Recorder {
    pub fn seen(&self) -> Vec<Seen> {
        self.0.lock().unwrap().clone()
    }

    /// For long runs (benchmarks), whose log would otherwise grow without bound.
    pub fn clear(&self) {
        self.0.lock().unwrap().clear();
    }

    fn push(&self, s: Seen) {
        self.0.lock().unwrap().push(s);
    }
}

pub type Handler =
    Arc<dyn Fn(Seen) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> + Send + Sync>;

pub fn handler<F, Fut>(f: F) -> Handler
where
    F: Fn(Seen) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    Arc::new(move |s| Box::pin(f(s)))
}

pub fn ok_handler() -> Handler {
    handler(|_| async { Response::new(full("upstream ok")) })
}

/// A running upstream; stops accepting and drops its connections on drop.
pub struct Upstream {
    pub addr: SocketAddr,
    pub recorder: Recorder,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    /// TLS for `host` with a certificate of `pki`.
    pub async fn start(pki: &Pki, host: &str, alpn: &[&[u8]], handler: Handler) -> Upstream {
        Self::serve(
            Recorder::default(),
            Some(pki.server_config(host, alpn)),
            handler,
        )
        .await
    }

    /// TLS with `tls`, or plain HTTP/1.1 without, recording into `recorder`.
    ///
    /// A request asking for an upgrade is recorded and answered 101; the
    /// connection then echoes what it receives, so tests can see bytes pass
    /// both ways through a proxy.
    pub async fn serve(
        recorder: Recorder,
        tls: Option<rustls::ServerConfig>,
        handler: Handler,
    ) -> Upstream {
        let acceptor = tls.map(|c| tokio_rustls::TlsAcceptor::from(Arc::new(c)));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let rec = recorder.clone();
        let task = tokio::spawn(async move {
            // Owned here so that aborting the accept loop ends the connections.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                // Reap finished connections: the load tests open a thousand.
                while conns.try_join_next().is_some() {}
                let acceptor = acceptor.clone();
                let rec = rec.clone();
                let handler = handler.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        respond(rec.clone(), handler.clone(), req)
                    });
                    match acceptor {
                        Some(acceptor) => {
                            let Ok(tls) = acceptor.accept(tcp).await else {
                                return;
                            };
                            let _ =
                                hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                                    .serve_connection_with_upgrades(TokioIo::new(tls), svc)
                                    .await;
                        }
                        None => {
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(tcp), svc)
                                .with_upgrades()
                                .await;
                        }
                    }
                });
            }
        });
        Upstream {
            addr,
            recorder,
            task,
        }
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.recorder.seen()
    }
}

async fn respond(
    rec: Recorder,
    handler: Handler,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    if req.headers().contains_key(http::header::UPGRADE) {
        let on = hyper::upgrade::on(&mut req);
        let (parts, _) = req.into_parts();
        rec.push(Seen {
            method: parts.method,
            uri: parts.uri,
            version: parts.version,
            headers: parts.headers,
            body: Bytes::new(),
        });
        tokio::spawn(async move {
            if let Ok(u) = on.await {
                let mut io = TokioIo::new(u);
                let mut buf = [0u8; 1024];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        let mut r = Response::new(full(Bytes::new()));
        *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        r.headers_mut()
            .insert(http::header::CONNECTION, "upgrade".parse().unwrap());
        r.headers_mut()
            .insert(http::header::UPGRADE, "echo".parse().unwrap());
        return Ok(r);
    }
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let s = Seen {
        method: parts.method,
        uri: parts.uri,
        version: parts.version,
        headers: parts.headers,
        body,
    };
    rec.push(s.clone());
    Ok(handler(s).await)
}
