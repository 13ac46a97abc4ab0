//! The proxy: its state (replaced whole on reload), the listeners and accept loop, and the
//! first look at each request — CONNECT goes to `intercept`, absolute-form HTTP to `request`,
//! the health path is answered, anything else refused. It must never serve a gate route on the
//! agent's listener, nor anything but a gate route's CONNECT on the gate's.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::audit::AuditLog;
use crate::config::{Config, RouteKind};
use crate::dlp::{DlpEngine, ExactSet};
use crate::error::Error;
use crate::intercept::connect;
use crate::mint::Minter;
use crate::pool::ScanPool;
use crate::refuse::{log_refusal, plain_status, record, refusal, refused};
use crate::request::request;
use crate::resolve::{Dialer, Resolve};
use crate::ssrf::SsrfGuard;
use crate::upstream::{self, Body, HandoffClient, UpstreamClient};

/// Path egress answers itself (origin-form) for `egress healthcheck`.
pub const HEALTH_PATH: &str = "/__egress/health";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
pub(crate) const RESPONSE_HEAD_TIMEOUT: Duration = Duration::from_secs(120);
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

pub use contract::audit::Kind;

/// Everything a request is checked against; replaced as a whole on reload.
pub struct State {
    pub config: Config,
    pub minter: Minter,
    pub dialer: Dialer,
    pub client: UpstreamClient,
    /// Upstream TLS offering only http/1.1 (protocol upgrades).
    pub tls_h1: Arc<rustls::ClientConfig>,
    pub handoff: Option<Handoff>,
    pub dlp: Arc<DlpEngine>,
    pub audit: Arc<AuditLog>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("routes", &self.config.routes.len())
            .finish()
    }
}

pub struct Handoff {
    pub addr: SocketAddr,
    pub key: contract::handoff::BrokerKey,
    pub client: HandoffClient,
}

impl State {
    /// Loads CA, rules, audit sink and (if any route has `auth`) the broker key.
    pub fn build(config: Config, resolver: Arc<dyn Resolve>) -> Result<State, Error> {
        let minter = Minter::load(&config.ca_cert, &config.ca_key)?;
        let dialer = Dialer::new(
            resolver,
            config.resolves.clone(),
            SsrfGuard::new(config.ssrf_allow.clone()),
            CONNECT_TIMEOUT,
        );
        let tls = upstream::client_tls(config.upstream_ca.as_deref())?;
        let mut tls_h1 = tls.clone();
        tls_h1.alpn_protocols = vec![b"http/1.1".to_vec()];
        let client = upstream::client(dialer.clone(), tls);
        let needs_handoff = config
            .routes
            .iter()
            .any(|r| matches!(r.kind, RouteKind::Http { auth: true, .. }));
        let handoff = match (needs_handoff, config.cred_proxy) {
            (true, Some(addr)) => {
                let key = contract::handoff::BrokerKey::from_env()?;
                Some(Handoff {
                    addr,
                    key,
                    client: upstream::handoff_client(),
                })
            }
            _ => None,
        };
        let dlp = Arc::new(DlpEngine::load(&config.dlp)?);
        let audit = Arc::new(AuditLog::open(&config.audit_log)?);
        Ok(State {
            config,
            minter,
            dialer,
            client,
            tls_h1: Arc::new(tls_h1),
            handoff,
            dlp,
            audit,
        })
    }

    pub(crate) fn other_placeholders(&self, route_id: &str) -> ExactSet {
        ExactSet::new(
            self.config
                .routes
                .iter()
                .filter(|r| r.id != route_id)
                .filter_map(|r| match &r.kind {
                    RouteKind::Http {
                        placeholder: Some(p),
                        ..
                    } => Some((p.as_bytes().to_vec(), r.id.clone())),
                    _ => None,
                }),
        )
    }
}

pub(crate) struct Shared {
    state: RwLock<Arc<State>>,
    /// Where request bodies are decoded and scanned.
    pub(crate) pool: ScanPool,
    resolver: Arc<dyn Resolve>,
    pub(crate) tasks: TaskTracker,
    pub(crate) shutdown: CancellationToken,
}

impl Shared {
    pub(crate) fn current(&self) -> Arc<State> {
        self.state.read().expect("state lock").clone()
    }
}

/// Which listener a connection came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// `listen`: the agent's proxy, with every route but the gate's.
    Agent,
    /// `gate_listen`: git-gate's tunnels to its upstreams, and nothing else.
    Gate,
}

/// A bound, not yet running proxy.
pub struct Proxy {
    shared: Arc<Shared>,
    listener: TcpListener,
    gate_listener: Option<TcpListener>,
}

/// Reload and inspection handle, usable while the proxy runs.
#[derive(Clone)]
pub struct ProxyHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ProxyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProxyHandle")
    }
}

impl ProxyHandle {
    /// Re-reads `path`; a bad config is refused (and returned) and the old one stays.
    pub fn reload_from(&self, path: &Path) -> Result<(), Error> {
        let config = Config::load(path)?;
        self.reload(config)
    }

    pub fn reload(&self, config: Config) -> Result<(), Error> {
        let old = self.shared.current();
        if config.listen != old.config.listen {
            tracing::warn!(old = %old.config.listen, new = %config.listen, "listen cannot change on reload; keeping the old address");
        }
        if config.gate_listen != old.config.gate_listen {
            tracing::warn!(old = ?old.config.gate_listen, new = ?config.gate_listen, "gate_listen cannot change on reload; keeping the old listener");
        }
        let state = State::build(config, self.shared.resolver.clone())?;
        let routes = state.config.routes.len();
        *self.shared.state.write().expect("state lock") = Arc::new(state);
        tracing::info!(routes, "egress config reloaded");
        Ok(())
    }

    pub fn state(&self) -> Arc<State> {
        self.shared.current()
    }
}

impl Proxy {
    pub async fn bind(config: Config, resolver: Arc<dyn Resolve>) -> Result<Proxy, Error> {
        let listen = config.listen;
        let state = State::build(config, resolver.clone())?;
        let listener = TcpListener::bind(listen).await.map_err(|e| Error::Listen {
            addr: listen,
            source: e,
        })?;
        let gate_listener = match state.config.gate_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|e| Error::Listen { addr, source: e })?,
            ),
            None => None,
        };
        Ok(Proxy {
            shared: Arc::new(Shared {
                state: RwLock::new(Arc::new(state)),
                resolver,
                tasks: TaskTracker::new(),
                pool: ScanPool::per_core(),
                shutdown: CancellationToken::new(),
            }),
            listener,
            gate_listener,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound listener")
    }

    /// Address of the gate's listener, when the config has one.
    pub fn gate_addr(&self) -> Option<SocketAddr> {
        self.gate_listener
            .as_ref()
            .map(|l| l.local_addr().expect("bound listener"))
    }

    pub fn handle(&self) -> ProxyHandle {
        ProxyHandle {
            shared: self.shared.clone(),
        }
    }

    /// Serves until `shutdown` is cancelled, then stops accepting, asks open connections to
    /// finish and waits for them a bounded time.
    pub async fn run(self, shutdown: CancellationToken) {
        let shared = self.shared.clone();
        tracing::info!(listen = %self.local_addr(), gate_listen = ?self.gate_addr(), "egress listening");
        loop {
            let (acc, side) = tokio::select! {
                _ = shutdown.cancelled() => break,
                acc = self.listener.accept() => (acc, Side::Agent),
                acc = accept_opt(self.gate_listener.as_ref()) => (acc, Side::Gate),
            };
            match acc {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    let sh = shared.clone();
                    shared.tasks.spawn(serve_client(sh, stream, side));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
        drop(self.listener);
        drop(self.gate_listener);
        shared.shutdown.cancel();
        shared.tasks.close();
        if tokio::time::timeout(SHUTDOWN_GRACE, shared.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("connections still open after the shutdown grace period; closing");
        }
    }
}

/// Accepts on the gate's listener; never ready when there is none.
async fn accept_opt(l: Option<&TcpListener>) -> std::io::Result<(TcpStream, SocketAddr)> {
    match l {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

async fn serve_client(shared: Arc<Shared>, stream: TcpStream, side: Side) {
    let sh = shared.clone();
    let svc = service_fn(move |req| {
        let sh = sh.clone();
        async move {
            Ok::<_, Infallible>(match side {
                Side::Agent => outer(sh, req).await,
                Side::Gate => gate(sh, req).await,
            })
        }
    });
    serve_until_shutdown!(
        hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30))
            .serve_connection(TokioIo::new(stream), svc)
            .with_upgrades(),
        shared.shutdown
    );
}

// ---------------------------------------------------------------------------------------------
// Outer connection: CONNECT and absolute-form requests.
// ---------------------------------------------------------------------------------------------

async fn outer(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    if req.method() == Method::CONNECT {
        return connect(shared, req, Side::Agent).await;
    }
    if req.uri().scheme_str() == Some("http") && req.uri().authority().is_some() {
        let ctx = Arc::new(Ctx { tls: None });
        return request(shared, ctx, req).await;
    }
    if req.uri().authority().is_none()
        && req.uri().path() == HEALTH_PATH
        && req.method() == Method::GET
    {
        return plain_status(StatusCode::OK, "ok");
    }
    refuse_protocol(
        &shared,
        &req,
        "egress is a forward proxy: send absolute-form http:// requests or CONNECT",
    )
}

/// Refuses (and audits) a request the listener does not serve at all.
fn refuse_protocol(shared: &Shared, req: &Request<Incoming>, detail: &str) -> Response<Body> {
    let st = shared.current();
    let start = Instant::now();
    let r = refused(Kind::Protocol, detail);
    let host = req.uri().host().unwrap_or("").to_string();
    let rec = record(
        &st,
        req.method().as_str(),
        "http",
        &host,
        0,
        req.uri().path(),
    );
    log_refusal(&st, rec, &r, start);
    refusal(&st, r.kind, &r.detail)
}

/// The gate's listener: CONNECT to a `gate_only` tunnel, nothing else.
async fn gate(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    if req.method() == Method::CONNECT {
        return connect(shared, req, Side::Gate).await;
    }
    refuse_protocol(
        &shared,
        &req,
        "this listener serves only git-gate's CONNECT tunnels to its upstreams",
    )
}

/// Connection context of a request.
pub(crate) struct Ctx {
    /// `Some((host, port))` inside an intercepted CONNECT: every request must target exactly it.
    pub(crate) tls: Option<(String, u16)>,
}
