//! A bottle's components as hardened containers: how each is created
//! (mounts, limits, fixed addresses, files), started, checked for readiness,
//! stopped, committed, and what it logs.
//!
//! Every container is created with all capabilities dropped, no new
//! privileges, bounded memory, pids, CPU and logs, and the bottle's labels;
//! nothing here ever mounts the Docker socket or a secret from the host.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use bollard::models::{
    ContainerCreateBody, EndpointIpamConfig, EndpointSettings, HealthConfig, HostConfig,
    HostConfigLogConfig, Mount, MountType, NetworkConnectRequest, NetworkingConfig,
    VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, DownloadFromContainerOptions, LogsOptions, UploadToContainerOptions,
};
use futures_util::StreamExt;

use super::{
    archive, container_name, engine_err, exec, is_not_found, network_name, no_way_out, volume_name,
    DockerBackend, DEFAULT_PATH, DNS_NOWHERE, HEALTH_INTERVAL, LOG_FILES, LOG_FILE_SIZE,
    READY_TIMEOUT,
};
use crate::backend::{
    DomainInfo, ExecRequest, FileSpec, OutputSink, Readiness, Resource, Role, ServiceSpec,
};
use crate::error::Error;

/// The container's mounts (config volume, egress's audit dir, the
/// workspace) and the groups it needs to write them.
fn mounts(
    bottle: &str,
    spec: &ServiceSpec,
    config_volume: Option<&str>,
) -> (Vec<Mount>, Vec<String>) {
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
    (mounts, group_add)
}

impl DockerBackend {
    /// State of a container: (running, exit code, status). Readiness is
    /// not the engine's health status (see `wait_ready`).
    async fn container_state(&self, name: &str) -> Result<(bool, i64, String), Error> {
        let c = self
            .docker()
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
        let mut stream = self.docker().logs(
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
        let mut stream = self.docker().logs(
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
            .docker()
            .inspect_container(&container_name(bottle, role), None)
            .await
        {
            Ok(c) => Ok(Some(c.state.and_then(|s| s.running).unwrap_or(false))),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(engine_err("inspect container")(e)),
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
            .docker()
            .commit_container(opts, cfg)
            .await
            .map_err(engine_err(format!("commit {name}")))?;
        Ok(r.id)
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

    /// Limits and hardening of every container: no capabilities, no new
    /// privileges, bounded memory, pids, CPU and logs.
    fn host_config(
        &self,
        spec: &ServiceSpec,
        network: &str,
        mounts: Vec<Mount>,
        group_add: Vec<String>,
        extra_hosts: &[(String, Ipv4Addr)],
    ) -> HostConfig {
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
        HostConfig {
            cap_drop: Some(vec!["ALL".into()]),
            security_opt: Some(vec!["no-new-privileges:true".into()]),
            readonly_rootfs: Some(spec.read_only),
            tmpfs: (!tmpfs.is_empty()).then_some(tmpfs),
            pids_limit: Some(spec.pids_limit),
            memory: Some(spec.memory_bytes),
            nano_cpus: (spec.nano_cpus > 0)
                .then(|| spec.nano_cpus.min(self.info.cpus * 1_000_000_000)),
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
            runtime: (spec.sandboxed && self.info.runsc).then(|| "runsc".to_string()),
            extra_hosts: (!extra_hosts.is_empty()).then(|| {
                extra_hosts
                    .iter()
                    .map(|(h, ip)| format!("{h}:{ip}"))
                    .collect()
            }),
            mounts: (!mounts.is_empty()).then_some(mounts),
            network_mode: Some(network.to_string()),
            dns: no_way_out(spec).then(|| vec![DNS_NOWHERE.to_string()]),
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
        let (mounts, group_add) = mounts(bottle, spec, config_volume);
        let host_config = self.host_config(spec, primary.0, mounts, group_add, extra_hosts);
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
            .docker()
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

    pub(super) async fn upload(
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
        self.docker()
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

    /// A container (not started) on its networks with its files in place;
    /// what it made goes to `created` as it is made.
    pub(super) async fn create_container(
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
            self.create_volume(bottle, spec.role, &v).await?;
            created.push(Resource::Volume { name: v.clone() });
            Some(v)
        };
        let env = self.with_path(spec, env).await?;
        let body = self.container_body(
            bottle,
            spec,
            (primary.name.as_str(), self.endpoint(primary, spec.role)),
            config_volume.as_deref(),
            extra_hosts,
            &env,
        );
        self.docker()
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
            self.docker()
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

    pub(super) async fn start_container(
        &self,
        bottle: &str,
        spec: &ServiceSpec,
    ) -> Result<(), Error> {
        let name = container_name(bottle, spec.role);
        self.docker()
            .start_container(&name, None)
            .await
            .map_err(engine_err(format!("start {name}")))
    }

    /// Ready: running, and the image's own health test passes now rather
    /// than at the engine's next interval.
    pub(super) async fn wait_healthy(&self, bottle: &str, spec: &ServiceSpec) -> Result<(), Error> {
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
                self.docker(),
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

    /// `env` with a PATH when the image has none: images made by `docker
    /// import` (the local base) carry no PATH, and an exec'd command is
    /// looked up in the container's environment.
    async fn with_path(
        &self,
        spec: &ServiceSpec,
        env: &[(String, String)],
    ) -> Result<Vec<(String, String)>, Error> {
        let mut env = env.to_vec();
        if env.iter().any(|(k, _)| k == "PATH") {
            return Ok(env);
        }
        let image_env = match self.docker().inspect_image(&spec.image).await {
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
        Ok(env)
    }

    /// A labelled volume (the engine returns an existing one as it is).
    pub(super) async fn create_volume(
        &self,
        bottle: &str,
        role: Role,
        name: &str,
    ) -> Result<(), Error> {
        self.docker()
            .create_volume(VolumeCreateRequest {
                name: Some(name.to_string()),
                labels: Some(self.labels(bottle, role.as_str())),
                ..Default::default()
            })
            .await
            .map_err(engine_err(format!("create volume {name}")))?;
        Ok(())
    }

    pub(super) async fn read_container_file(
        &self,
        bottle: &str,
        role: Role,
        path: &str,
    ) -> Result<Vec<u8>, Error> {
        let name = container_name(bottle, role);
        let mut stream = self.docker().download_from_container(
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
}
