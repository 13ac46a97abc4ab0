//! The Docker Engine backend (bollard): isolation domains become bridge
//! networks on small explicit subnets, roles become hardened containers at
//! fixed addresses, files reach them through `upload_to_container`. It is the
//! only gateway to the engine: connecting (`Engine`), what the engine
//! offers, images and builds go through here too.
//!
//! It never shells out to the docker CLI, never mounts the Docker socket into
//! a bottle, and never selects objects by name patterns: only by labels
//! scoped to the current home, so parallel homes never touch each other.

mod archive;
mod containers;
mod engine;
mod exec;
mod listing;
pub mod network;

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

pub use engine::{Engine, EngineInfo};

use crate::backend::{
    Backend, BottleSummary, Domain, DomainInfo, ExecOutput, ExecRequest, FileSpec, Leftovers,
    OutputSink, Resource, Role, ServiceSpec, LABEL_HOME, LABEL_ID, LABEL_ROLE,
};
use crate::error::Error;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How long a component may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// Bound of each container's log kept by the engine: LOG_FILES files of
/// LOG_FILE_SIZE (json-file rotation).
pub const LOG_FILE_SIZE: &str = "10m";
pub const LOG_FILES: u32 = 3;
/// How often the engine runs a sidecar's health check once it is up.
pub const HEALTH_INTERVAL: Duration = Duration::from_secs(120);

/// A connection to one Docker Engine, scoped to one bot-bottle home.
#[derive(Clone)]
pub struct DockerBackend {
    engine: Engine,
    /// Read once at connect: the network options and CPU caps depend on it.
    info: EngineInfo,
    home_hash: String,
}

impl std::fmt::Debug for DockerBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerBackend")
            .field("home_hash", &self.home_hash)
            .field("engine_major", &self.info.major)
            .field("runsc", &self.info.runsc)
            .finish()
    }
}

pub fn container_name(bottle: &str, role: Role) -> String {
    format!("bb-{bottle}-{role}")
}

pub fn network_name(bottle: &str, domain: &Domain) -> String {
    match domain {
        Domain::Attached(name) => name.clone(),
        d => format!("bb-{bottle}-{}", d.as_str()),
    }
}

pub fn volume_name(bottle: &str, role: Role, purpose: &str) -> String {
    format!("bb-{bottle}-{role}-{purpose}")
}

/// The only upstream resolver given to containers with no way out (the agent,
/// git-gate). Docker's embedded DNS answers the bottle's own names itself and
/// forwards every other query; before Docker 26 (CVE-2024-29018) it does so
/// from the host's namespace when the host resolver is on loopback (systemd-
/// resolved's 127.0.0.53), so a lookup of `<secret>.attacker.example` from an
/// internal-only container would leave the machine. A resolver set here is
/// dialed from the container's own namespace, where an internal network has
/// no route; TEST-NET-1 (RFC 5737) is not loopback, so no engine version
/// treats it as the host's.
pub const DNS_NOWHERE: &str = "192.0.2.1";

/// True for a container on internal networks only: it must not resolve
/// outside names (egress resolves what a route allows).
pub(super) fn no_way_out(spec: &ServiceSpec) -> bool {
    spec.domains.iter().all(|d| !d.has_way_out())
}

pub(super) fn engine_err(what: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> Error {
    let what = what.into();
    move |source| Error::Engine { what, source }
}

pub(super) fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

impl DockerBackend {
    /// Connects to the engine (`DOCKER_HOST` or the local socket) with a
    /// deadline, and reads what it offers.
    pub async fn connect(home_hash: &str) -> Result<DockerBackend, Error> {
        let engine = Engine::connect().await?;
        let info = engine.probe().await?;
        Ok(DockerBackend {
            engine,
            info,
            home_hash: home_hash.to_string(),
        })
    }

    /// The unscoped part of the connection: images and builds.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn info(&self) -> &EngineInfo {
        &self.info
    }

    pub fn home_hash(&self) -> &str {
        &self.home_hash
    }

    fn docker(&self) -> &bollard::Docker {
        self.engine.docker()
    }

    fn labels(&self, bottle: &str, role: &str) -> HashMap<String, String> {
        HashMap::from([
            (LABEL_ID.to_string(), bottle.to_string()),
            (LABEL_ROLE.to_string(), role.to_string()),
            (LABEL_HOME.to_string(), self.home_hash.clone()),
        ])
    }

    fn filters(&self, bottle: Option<&str>) -> HashMap<String, Vec<String>> {
        let mut labels = vec![format!("{LABEL_HOME}={}", self.home_hash)];
        if let Some(b) = bottle {
            labels.push(format!("{LABEL_ID}={b}"));
        }
        HashMap::from([("label".to_string(), labels)])
    }
}

impl Backend for DockerBackend {
    type Error = Error;

    async fn create_domain(
        &self,
        bottle: &str,
        domain: &Domain,
        preferred: Option<&str>,
    ) -> Result<DomainInfo, Error> {
        self.create_network(bottle, domain, preferred).await
    }

    async fn ensure_volume(
        &self,
        bottle: &str,
        role: Role,
        purpose: &str,
    ) -> Result<String, Error> {
        let name = volume_name(bottle, role, purpose);
        self.create_volume(bottle, role, &name).await?;
        Ok(name)
    }

    async fn create_service(
        &self,
        bottle: &str,
        spec: &ServiceSpec,
        domains: &[DomainInfo],
        extra_hosts: &[(String, Ipv4Addr)],
        env: &[(String, String)],
        created: &mut Vec<Resource>,
    ) -> Result<(), Error> {
        self.create_container(bottle, spec, domains, extra_hosts, env, created)
            .await
    }

    async fn start_service(&self, bottle: &str, spec: &ServiceSpec) -> Result<(), Error> {
        self.start_container(bottle, spec).await
    }

    async fn wait_ready(&self, bottle: &str, spec: &ServiceSpec) -> Result<(), Error> {
        self.wait_healthy(bottle, spec).await
    }

    async fn remove(&self, resource: &Resource) -> Result<(), Error> {
        self.remove_object(resource).await
    }

    async fn exec(
        &self,
        bottle: &str,
        role: Role,
        req: ExecRequest,
        sink: OutputSink<'_>,
    ) -> Result<ExecOutput, Error> {
        exec::run(self.docker(), &container_name(bottle, role), req, sink).await
    }

    async fn exec_interactive(
        &self,
        bottle: &str,
        role: Role,
        req: ExecRequest,
    ) -> Result<i64, Error> {
        exec::interactive(self.docker(), &container_name(bottle, role), req).await
    }

    async fn put_files(
        &self,
        bottle: &str,
        role: Role,
        dir: &str,
        uid: u32,
        files: &[FileSpec],
    ) -> Result<(), Error> {
        self.upload(&container_name(bottle, role), dir, uid, files)
            .await
    }

    async fn read_file(&self, bottle: &str, role: Role, path: &str) -> Result<Vec<u8>, Error> {
        self.read_container_file(bottle, role, path).await
    }

    async fn list(&self) -> Result<Vec<BottleSummary>, Error> {
        self.list_bottles().await
    }

    async fn leftovers(&self, bottle: Option<&str>) -> Result<Leftovers, Error> {
        self.labelled(bottle).await
    }

    async fn remove_all(
        &self,
        bottle: Option<&str>,
        keep_volumes: bool,
    ) -> Result<Leftovers, Error> {
        self.remove_labelled(bottle, keep_volumes).await
    }
}
