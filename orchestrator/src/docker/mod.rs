//! The Docker Engine backend (bollard): isolation domains become bridge
//! networks on small explicit subnets, roles become hardened containers at
//! fixed addresses, files reach them through `upload_to_container`.
//!
//! It never shells out to the docker CLI, never mounts the Docker socket into
//! a bottle, and never selects objects by name patterns: only by labels
//! scoped to the current home, so parallel homes never touch each other.

mod archive;
mod exec;
pub mod network;

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use bollard::models::{
    ContainerCreateBody, EndpointIpamConfig, EndpointSettings, HealthConfig, HostConfig,
    HostConfigLogConfig, Ipam, IpamConfig, Mount, MountType, NetworkConnectRequest,
    NetworkCreateRequest, NetworkingConfig, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, DownloadFromContainerOptions, ListContainersOptions,
    ListNetworksOptions, ListVolumesOptions, LogsOptions, RemoveContainerOptions,
    RemoveVolumeOptions, StopContainerOptions, UploadToContainerOptions,
};
use bollard::Docker;
use futures_util::StreamExt;
use ipnet::Ipv4Net;

use crate::backend::{
    Backend, BottleSummary, Domain, DomainInfo, ExecOutput, ExecRequest, FileSpec, Leftovers,
    OutputSink, Readiness, Resource, Role, ServiceSpec, LABEL_HOME, LABEL_ID, LABEL_ROLE,
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
    docker: Docker,
    home_hash: String,
    engine_major: u32,
    runsc: bool,
    /// Cores the engine's host has: a CPU cap above it is refused.
    engine_cpus: i64,
}

impl std::fmt::Debug for DockerBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerBackend")
            .field("home_hash", &self.home_hash)
            .field("engine_major", &self.engine_major)
            .field("runsc", &self.runsc)
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
fn no_way_out(spec: &ServiceSpec) -> bool {
    spec.domains.iter().all(|d| !d.has_way_out())
}

fn engine_err(what: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> Error {
    let what = what.into();
    move |source| Error::Engine { what, source }
}

fn is_not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

impl DockerBackend {
    /// Connects to the engine (`DOCKER_HOST` or the local socket) and
    /// negotiates the API version (the engine here may be as old as 1.41).
    pub async fn connect(home_hash: &str) -> Result<DockerBackend, Error> {
        let docker = Docker::connect_with_defaults()
            .map_err(engine_err("connect to the Docker engine"))?
            .negotiate_version()
            .await
            .map_err(engine_err(
                "reach the Docker engine (is it running? DOCKER_HOST?)",
            ))?;
        let version = docker
            .version()
            .await
            .map_err(engine_err("read the engine version"))?;
        let engine_major = network::engine_major(version.version.as_deref().unwrap_or("0"));
        let info = docker
            .info()
            .await
            .map_err(engine_err("read the engine info"))?;
        let runsc = info
            .runtimes
            .as_ref()
            .is_some_and(|r| r.contains_key("runsc"));
        let engine_cpus = info.ncpu.unwrap_or(1).max(1);
        Ok(DockerBackend {
            docker,
            home_hash: home_hash.to_string(),
            engine_major,
            runsc,
            engine_cpus,
        })
    }

    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    pub fn home_hash(&self) -> &str {
        &self.home_hash
    }

    pub fn engine_major(&self) -> u32 {
        self.engine_major
    }

    pub fn has_runsc(&self) -> bool {
        self.runsc
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

    async fn taken_subnets(&self) -> Result<Vec<Ipv4Net>, Error> {
        let nets = self
            .docker
            .list_networks(None::<ListNetworksOptions>)
            .await
            .map_err(engine_err("list networks"))?;
        Ok(nets
            .iter()
            .filter_map(|n| n.ipam.as_ref()?.config.as_ref())
            .flatten()
            .filter_map(|c| c.subnet.as_ref()?.parse().ok())
            .collect())
    }

    /// State of a container: (running, exit code, status). Readiness is
    /// not the engine's health status (see `wait_ready`).
    async fn container_state(&self, name: &str) -> Result<(bool, i64, String), Error> {
        let c = self
            .docker
            .inspect_container(name, None)
            .await
            .map_err(engine_err(format!("inspect container {name}")))?;
        let st = c.state.unwrap_or_default();
        Ok((
            st.running.unwrap_or(false),
            st.exit_code.unwrap_or(0),
            st.status.map(|s| s.to_string()).unwrap_or_default(),
        ))
    }

    /// Last lines a container wrote: shown when it failed to come up.
    pub async fn tail_logs(&self, name: &str, lines: usize) -> String {
        let mut stream = self.docker.logs(
            name,
            Some(LogsOptions {
                stdout: true,
                stderr: true,
                tail: lines.to_string(),
                ..Default::default()
            }),
        );
        let mut out = String::new();
        while let Some(Ok(chunk)) = stream.next().await {
            out.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
        }
        // Shown in an error on the operator's terminal: what a container
        // wrote is printed escaped.
        crate::terminal::escape_lines(&out)
    }

    /// Streams a component's log lines to `line` (follow keeps streaming).
    pub async fn stream_logs(
        &self,
        bottle: &str,
        role: Role,
        follow: bool,
        mut line: impl FnMut(&str) + Send,
    ) -> Result<(), Error> {
        let name = container_name(bottle, role);
        let mut stream = self.docker.logs(
            &name,
            Some(LogsOptions {
                stdout: true,
                stderr: true,
                follow,
                tail: "all".into(),
                ..Default::default()
            }),
        );
        let mut buf = String::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(engine_err(format!("read the logs of {name}")))?;
            buf.push_str(&String::from_utf8_lossy(&chunk.into_bytes()));
            while let Some(i) = buf.find('\n') {
                let l: String = buf.drain(..=i).collect();
                line(l.trim_end());
            }
        }
        if !buf.is_empty() {
            line(buf.trim_end());
        }
        Ok(())
    }

    pub async fn container_running(&self, bottle: &str, role: Role) -> Result<Option<bool>, Error> {
        match self
            .docker
            .inspect_container(&container_name(bottle, role), None)
            .await
        {
            Ok(c) => Ok(Some(c.state.and_then(|s| s.running).unwrap_or(false))),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(engine_err("inspect container")(e)),
        }
    }

    /// Stops a component, leaving it in place.
    pub async fn stop_service(&self, bottle: &str, role: Role) -> Result<(), Error> {
        let name = container_name(bottle, role);
        match self
            .docker
            .stop_container(
                &name,
                Some(StopContainerOptions {
                    t: Some(5),
                    signal: None,
                }),
            )
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 304, ..
            }) => Ok(()),
            Err(e) => Err(engine_err(format!("stop {name}"))(e)),
        }
    }

    /// Snapshots the agent's container into an image.
    pub async fn commit_agent(&self, bottle: &str, repo: &str, tag: &str) -> Result<String, Error> {
        let name = container_name(bottle, Role::Agent);
        let opts = bollard::query_parameters::CommitContainerOptions {
            container: Some(name.clone()),
            repo: Some(repo.to_string()),
            tag: Some(tag.to_string()),
            comment: Some(format!("bot-bottle commit of {bottle}")),
            pause: true,
            ..Default::default()
        };
        let cfg = bollard::models::ContainerConfig {
            labels: Some(self.labels(bottle, "commit")),
            ..Default::default()
        };
        let r = self
            .docker
            .commit_container(opts, cfg)
            .await
            .map_err(engine_err(format!("commit {name}")))?;
        Ok(r.id)
    }

    pub async fn image_exists(&self, image: &str) -> bool {
        self.docker.inspect_image(image).await.is_ok()
    }

    fn endpoint(&self, info: &DomainInfo, role: Role) -> EndpointSettings {
        let ip = if info.domain.owned() {
            info.address_of(role)
        } else {
            None
        };
        EndpointSettings {
            aliases: Some(vec![role.alias().to_string()]),
            ipam_config: ip.map(|ip| EndpointIpamConfig {
                ipv4_address: Some(ip.to_string()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn container_body(
        &self,
        bottle: &str,
        spec: &ServiceSpec,
        primary: (&str, EndpointSettings),
        config_volume: Option<&str>,
        extra_hosts: &[(String, Ipv4Addr)],
        env: &[(String, String)],
    ) -> ContainerCreateBody {
        let mut mounts = Vec::new();
        if let Some(v) = config_volume {
            mounts.push(Mount {
                target: Some("/config".into()),
                source: Some(v.to_string()),
                typ: Some(MountType::VOLUME),
                read_only: Some(false),
                ..Default::default()
            });
        }
        // egress's audit log, in the bottle's state dir (see `StateDir`).
        let mut group_add = Vec::new();
        if let Some(dir) = &spec.audit_dir {
            mounts.push(Mount {
                target: Some(crate::plan::AUDIT_DIR.into()),
                source: Some(dir.display().to_string()),
                typ: Some(MountType::BIND),
                read_only: Some(false),
                ..Default::default()
            });
            // A dir the writer does not own is the operator's, shared through
            // the operator's group.
            if let Ok(m) = std::fs::metadata(dir) {
                if std::os::unix::fs::MetadataExt::uid(&m) != spec.role.uid() {
                    group_add.push(std::os::unix::fs::MetadataExt::gid(&m).to_string());
                }
            }
        }
        if spec.workspace {
            mounts.push(Mount {
                target: Some("/workspace".into()),
                source: Some(volume_name(bottle, spec.role, "workspace")),
                typ: Some(MountType::VOLUME),
                ..Default::default()
            });
        }
        // /tmp is everyone's (sticky); other scratch dirs belong to the role's user.
        let uid = spec.role.uid();
        let tmpfs: HashMap<String, String> = spec
            .tmpfs
            .iter()
            .map(|p| {
                let opts = if p == "/tmp" {
                    "rw,nosuid,nodev,size=64m,mode=1777".to_string()
                } else {
                    format!("rw,nosuid,nodev,size=256m,mode=0700,uid={uid},gid={uid}")
                };
                (p.clone(), opts)
            })
            .collect();
        let host_config = HostConfig {
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges:true".into()]),
            readonly_rootfs: Some(spec.read_only),
            tmpfs: (!tmpfs.is_empty()).then_some(tmpfs),
            pids_limit: Some(spec.pids_limit),
            memory: Some(spec.memory_bytes),
            nano_cpus: (spec.nano_cpus > 0)
                .then(|| spec.nano_cpus.min(self.engine_cpus * 1_000_000_000)),
            group_add: (!group_add.is_empty()).then_some(group_add),
            // What a container prints (the agent's output, egress's log) is
            // kept by the engine in at most LOG_FILES files of LOG_FILE_SIZE.
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".into()),
                config: Some(HashMap::from([
                    ("max-size".to_string(), LOG_FILE_SIZE.to_string()),
                    ("max-file".to_string(), LOG_FILES.to_string()),
                ])),
            }),
            init: Some(spec.init),
            runtime: (spec.sandboxed && self.runsc).then(|| "runsc".to_string()),
            extra_hosts: (!extra_hosts.is_empty()).then(|| {
                extra_hosts
                    .iter()
                    .map(|(h, ip)| format!("{h}:{ip}"))
                    .collect()
            }),
            mounts: (!mounts.is_empty()).then_some(mounts),
            network_mode: Some(primary.0.to_string()),
            dns: no_way_out(spec).then(|| vec![DNS_NOWHERE.to_string()]),
            ..Default::default()
        };
        // The image's test, run rarely: readiness at start is the
        // orchestrator's (`wait_ready` runs the test itself), so the engine's
        // check only notices a sidecar that hangs later. Every check is a
        // process spawned through the engine; at the images' 2 s (or a fast
        // 0.2 s) an idle bottle would cost a noticeable share of a core.
        let healthcheck = (spec.readiness == Readiness::HealthCheck).then_some(HealthConfig {
            test: None,
            interval: Some(HEALTH_INTERVAL.as_nanos() as i64),
            timeout: Some(2_000_000_000),
            retries: Some(3),
            start_period: Some(0),
            start_interval: None,
        });
        ContainerCreateBody {
            image: Some(spec.image.clone()),
            cmd: spec.cmd.clone(),
            env: Some(env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
            user: (spec.role != Role::Agent).then(|| format!("{0}:{0}", spec.role.uid())),
            labels: Some(self.labels(bottle, spec.role.as_str())),
            hostname: Some(spec.role.alias().to_string()),
            healthcheck,
            host_config: Some(host_config),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(primary.0.to_string(), primary.1)])),
            }),
            stop_timeout: Some(5),
            ..Default::default()
        }
    }

    /// The health test the container was created with (its image's), as a
    /// command to exec; `None` when it has none.
    async fn health_test(&self, name: &str) -> Result<Option<Vec<String>>, Error> {
        let info = self
            .docker
            .inspect_container(name, None)
            .await
            .map_err(engine_err(format!("inspect {name}")))?;
        let test = info
            .config
            .and_then(|c| c.healthcheck)
            .and_then(|h| h.test)
            .unwrap_or_default();
        Ok(match test.split_first() {
            Some((kind, cmd)) if kind == "CMD" && !cmd.is_empty() => Some(cmd.to_vec()),
            Some((kind, cmd)) if kind == "CMD-SHELL" && !cmd.is_empty() => {
                Some(vec!["/bin/sh".into(), "-c".into(), cmd.join(" ")])
            }
            _ => None,
        })
    }

    async fn upload(
        &self,
        container: &str,
        dir: &str,
        uid: u32,
        files: &[FileSpec],
    ) -> Result<(), Error> {
        // The agent's home directories are its own to list; a sidecar's are private.
        let dir_mode = if uid == Role::Agent.uid() {
            0o755
        } else {
            0o700
        };
        let tar = archive::tar_of(files, uid, dir_mode).map_err(|e| Error::Io {
            path: container.into(),
            source: e,
        })?;
        self.docker
            .upload_to_container(
                container,
                Some(UploadToContainerOptions {
                    path: dir.to_string(),
                    ..Default::default()
                }),
                bollard::body_full(tar.into()),
            )
            .await
            .map_err(engine_err(format!("copy files into {container}:{dir}")))
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
        let name = network_name(bottle, domain);
        if let Domain::Attached(_) = domain {
            let n = self
                .docker
                .inspect_network(&name, None)
                .await
                .map_err(|_| Error::MissingNetwork { name: name.clone() })?;
            let cidr = n
                .ipam
                .and_then(|i| i.config)
                .and_then(|c| c.into_iter().find_map(|c| c.subnet));
            return Ok(DomainInfo {
                domain: domain.clone(),
                name,
                base: None,
                cidr,
            });
        }
        let mut options = HashMap::new();
        if !domain.has_way_out() {
            options = network::isolation_options(self.engine_major);
        }
        let mut last = None;
        let preferred: Option<Ipv4Net> = preferred.and_then(|p| p.parse().ok());
        for attempt in 0..8 {
            let taken = self.taken_subnets().await?;
            let free = network::free_subnets(&taken);
            let pick = preferred
                .filter(|p| attempt == 0 && free.contains(p))
                .or_else(|| free.first().copied());
            let Some(subnet) = pick else {
                return Err(Error::PoolExhausted {
                    pool: network::POOL.into(),
                });
            };
            let req = NetworkCreateRequest {
                name: name.clone(),
                driver: Some("bridge".into()),
                internal: Some(!domain.has_way_out()),
                enable_ipv6: Some(false),
                ipam: Some(Ipam {
                    driver: Some("default".into()),
                    config: Some(vec![IpamConfig {
                        subnet: Some(subnet.to_string()),
                        gateway: Some(network::gateway(&subnet).to_string()),
                        ..Default::default()
                    }]),
                    options: None,
                }),
                options: Some(options.clone()),
                labels: Some(self.labels(bottle, domain.as_str())),
                ..Default::default()
            };
            match self.docker.create_network(req).await {
                Ok(_) => {
                    return Ok(DomainInfo {
                        domain: domain.clone(),
                        name,
                        base: Some(subnet.network()),
                        cidr: Some(subnet.to_string()),
                    })
                }
                // Another bottle took the subnet between our list and create.
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code,
                    message,
                }) if message.contains("overlap") || status_code == 403 => {
                    last = Some(message);
                    continue;
                }
                Err(e) => return Err(engine_err(format!("create network {name}"))(e)),
            }
        }
        Err(Error::Engine {
            what: format!("create network {name} ({})", last.unwrap_or_default()),
            source: bollard::errors::Error::DockerResponseServerError {
                status_code: 409,
                message: "subnet races".into(),
            },
        })
    }

    async fn ensure_volume(
        &self,
        bottle: &str,
        role: Role,
        purpose: &str,
    ) -> Result<String, Error> {
        let name = volume_name(bottle, role, purpose);
        self.docker
            .create_volume(VolumeCreateRequest {
                name: Some(name.clone()),
                labels: Some(self.labels(bottle, role.as_str())),
                ..Default::default()
            })
            .await
            .map_err(engine_err(format!("create volume {name}")))?;
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
        let name = container_name(bottle, spec.role);
        let joined: Vec<&DomainInfo> = spec
            .domains
            .iter()
            .map(|d| {
                domains
                    .iter()
                    .find(|i| &i.domain == d)
                    .ok_or_else(|| Error::MissingNetwork {
                        name: network_name(bottle, d),
                    })
            })
            .collect::<Result<_, _>>()?;
        let Some(primary) = joined.first() else {
            return Err(Error::Invalid {
                what: format!("{} joins no domain", spec.role),
            });
        };
        let config_volume = if spec.files.is_empty() {
            None
        } else {
            let v = volume_name(bottle, spec.role, "config");
            self.docker
                .create_volume(VolumeCreateRequest {
                    name: Some(v.clone()),
                    labels: Some(self.labels(bottle, spec.role.as_str())),
                    ..Default::default()
                })
                .await
                .map_err(engine_err(format!("create volume {v}")))?;
            created.push(Resource::Volume { name: v.clone() });
            Some(v)
        };
        // Images made by `docker import` (the local base) carry no PATH, and
        // an exec'd command is looked up in the container's environment.
        let mut env = env.to_vec();
        if !env.iter().any(|(k, _)| k == "PATH") {
            let image_env = match self.docker.inspect_image(&spec.image).await {
                Ok(i) => i.config.and_then(|c| c.env).unwrap_or_default(),
                Err(e) if is_not_found(&e) => {
                    return Err(Error::MissingImage {
                        image: spec.image.clone(),
                        role: spec.role,
                    });
                }
                Err(e) => return Err(engine_err(format!("inspect image {}", spec.image))(e)),
            };
            if !image_env.iter().any(|e| e.starts_with("PATH=")) {
                env.push(("PATH".into(), DEFAULT_PATH.into()));
            }
        }
        let body = self.container_body(
            bottle,
            spec,
            (primary.name.as_str(), self.endpoint(primary, spec.role)),
            config_volume.as_deref(),
            extra_hosts,
            &env,
        );
        self.docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.clone()),
                    platform: String::new(),
                }),
                body,
            )
            .await
            .map_err(|e| match e {
                bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                } => Error::MissingImage {
                    image: spec.image.clone(),
                    role: spec.role,
                },
                e => engine_err(format!("create container {name}"))(e),
            })?;
        created.push(Resource::Service {
            role: spec.role,
            name: name.clone(),
        });
        // API 1.41 takes one network at create; the others are joined before start.
        for info in joined.iter().skip(1) {
            self.docker
                .connect_network(
                    &info.name,
                    NetworkConnectRequest {
                        container: name.clone(),
                        endpoint_config: Some(self.endpoint(info, spec.role)),
                    },
                )
                .await
                .map_err(engine_err(format!("connect {name} to {}", info.name)))?;
        }
        if !spec.files.is_empty() {
            self.upload(&name, "/config", spec.role.uid(), &spec.files)
                .await?;
        }
        Ok(())
    }

    async fn start_service(&self, bottle: &str, spec: &ServiceSpec) -> Result<(), Error> {
        let name = container_name(bottle, spec.role);
        self.docker
            .start_container(&name, None)
            .await
            .map_err(engine_err(format!("start {name}")))
    }

    async fn wait_ready(&self, bottle: &str, spec: &ServiceSpec) -> Result<(), Error> {
        let name = container_name(bottle, spec.role);
        let test = match spec.readiness {
            Readiness::HealthCheck => self.health_test(&name).await?,
            _ => None,
        };
        let started = Instant::now();
        loop {
            let (running, exit_code, status) = self.container_state(&name).await?;
            if !running {
                let logs = self.tail_logs(&name, 20).await;
                return Err(Error::Unhealthy {
                    role: spec.role,
                    detail: format!("it stopped ({status}, exit code {exit_code})"),
                    logs,
                });
            }
            let Some(test) = &test else {
                return Ok(());
            };
            // The image's own health test, run now rather than at the
            // engine's next interval.
            let out = exec::run(
                &self.docker,
                &name,
                ExecRequest {
                    cmd: test.clone(),
                    env: Vec::new(),
                    user: None,
                    working_dir: None,
                },
                OutputSink::Capture,
            )
            .await?;
            if out.exit_code == 0 {
                return Ok(());
            }
            if started.elapsed() > READY_TIMEOUT {
                let last = String::from_utf8_lossy(&out.stderr).trim().to_string();
                let logs = self.tail_logs(&name, 20).await;
                return Err(Error::Unhealthy {
                    role: spec.role,
                    detail: format!(
                        "its health check still fails after {} s ({})",
                        READY_TIMEOUT.as_secs(),
                        crate::terminal::escape(&last)
                    ),
                    logs,
                });
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    async fn remove(&self, resource: &Resource) -> Result<(), Error> {
        let r = match resource {
            Resource::Service { name, .. } => {
                self.docker
                    .remove_container(
                        name,
                        Some(RemoveContainerOptions {
                            force: true,
                            v: false,
                            link: false,
                        }),
                    )
                    .await
            }
            Resource::Domain { name } => self.docker.remove_network(name).await,
            Resource::Volume { name } => {
                self.docker
                    .remove_volume(name, Some(RemoveVolumeOptions { force: true }))
                    .await
            }
        };
        match r {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(engine_err(format!("remove {resource:?}"))(e)),
        }
    }

    async fn exec(
        &self,
        bottle: &str,
        role: Role,
        req: ExecRequest,
        sink: OutputSink<'_>,
    ) -> Result<ExecOutput, Error> {
        exec::run(&self.docker, &container_name(bottle, role), req, sink).await
    }

    async fn exec_interactive(
        &self,
        bottle: &str,
        role: Role,
        req: ExecRequest,
    ) -> Result<i64, Error> {
        exec::interactive(&self.docker, &container_name(bottle, role), req).await
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
        let name = container_name(bottle, role);
        let mut stream = self.docker.download_from_container(
            &name,
            Some(DownloadFromContainerOptions {
                path: path.to_string(),
            }),
        );
        let mut tar = Vec::new();
        while let Some(chunk) = stream.next().await {
            tar.extend_from_slice(&chunk.map_err(engine_err(format!("read {name}:{path}")))?);
        }
        archive::first_file(&tar)
            .map_err(|e| Error::Io {
                path: path.into(),
                source: e,
            })?
            .ok_or_else(|| Error::Invalid {
                what: format!("{path} in {name} is not a file"),
            })
    }

    async fn list(&self) -> Result<Vec<BottleSummary>, Error> {
        let containers = self
            .docker
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(self.filters(None)),
                ..Default::default()
            }))
            .await
            .map_err(engine_err("list containers"))?;
        let mut by_id: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for c in containers {
            let labels = c.labels.unwrap_or_default();
            let (Some(id), Some(role)) = (labels.get(LABEL_ID), labels.get(LABEL_ROLE)) else {
                continue;
            };
            by_id.entry(id.clone()).or_default().insert(
                role.clone(),
                c.state.map(|s| s.to_string()).unwrap_or_default(),
            );
        }
        Ok(by_id
            .into_iter()
            .map(|(id, services)| BottleSummary { id, services })
            .collect())
    }

    async fn leftovers(&self, bottle: Option<&str>) -> Result<Leftovers, Error> {
        let filters = self.filters(bottle);
        let (containers, networks, volumes) = tokio::try_join!(
            async {
                self.docker
                    .list_containers(Some(ListContainersOptions {
                        all: true,
                        filters: Some(filters.clone()),
                        ..Default::default()
                    }))
                    .await
                    .map_err(engine_err("list containers"))
            },
            async {
                self.docker
                    .list_networks(Some(ListNetworksOptions {
                        filters: Some(filters.clone()),
                    }))
                    .await
                    .map_err(engine_err("list networks"))
            },
            async {
                self.docker
                    .list_volumes(Some(ListVolumesOptions {
                        filters: Some(filters.clone()),
                    }))
                    .await
                    .map_err(engine_err("list volumes"))
            },
        )?;
        let label_of = |labels: Option<&HashMap<String, String>>| {
            labels.and_then(|l| l.get(LABEL_ID)).cloned()
        };
        let bottles = containers
            .iter()
            .filter_map(|c| label_of(c.labels.as_ref()))
            .chain(networks.iter().filter_map(|n| label_of(n.labels.as_ref())))
            .chain(
                volumes
                    .volumes
                    .iter()
                    .flatten()
                    .filter_map(|v| v.labels.get(LABEL_ID).cloned()),
            )
            .collect();
        Ok(Leftovers {
            bottles,
            services: containers
                .into_iter()
                .filter_map(|c| {
                    c.names?
                        .into_iter()
                        .next()
                        .map(|n| n.trim_start_matches('/').to_string())
                })
                .collect(),
            domains: networks.into_iter().filter_map(|n| n.name).collect(),
            volumes: volumes
                .volumes
                .unwrap_or_default()
                .into_iter()
                .map(|v| v.name)
                .collect(),
        })
    }

    async fn remove_all(
        &self,
        bottle: Option<&str>,
        keep_volumes: bool,
    ) -> Result<Leftovers, Error> {
        let found = self.leftovers(bottle).await?;
        // Containers first (they hold the networks and volumes), in parallel.
        let resources: Vec<Resource> = found
            .services
            .iter()
            .map(|name| Resource::Service {
                role: Role::Agent,
                name: name.clone(),
            })
            .collect();
        let removals = resources.iter().map(|r| self.remove(r));
        for r in futures_util::future::join_all(removals).await {
            r?;
        }
        // Then networks and volumes, each kind in parallel (teardown time is
        // most of what a short session costs).
        let mut rest: Vec<Resource> = found
            .domains
            .iter()
            .map(|name| Resource::Domain { name: name.clone() })
            .collect();
        if !keep_volumes {
            rest.extend(
                found
                    .volumes
                    .iter()
                    .map(|name| Resource::Volume { name: name.clone() }),
            );
        }
        for r in futures_util::future::join_all(rest.iter().map(|r| self.remove(r))).await {
            r?;
        }
        Ok(found)
    }
}
