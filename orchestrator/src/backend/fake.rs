//! A fake engine behind the `Backend` trait, for unit tests of bring-up and
//! its undo paths without Docker.
//!
//! It models the engine rather than logging calls: it holds networks,
//! volumes and containers with their labels, and refuses what the engine
//! refuses (a name in use, an overlapping subnet, starting on a network that
//! is gone, removing a network a container is on or a volume a container
//! mounts). Every request bring-up makes is a numbered step; a test can make
//! step N fail or be cancelled, including the case an undo must handle by
//! labels: the engine completes a create while the caller is already
//! cancelled, so the caller never records what was made.
//!
//! Test code only: it must never be compiled into the binary.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::{Mutex, MutexGuard};

use ipnet::Ipv4Net;
use tokio_util::sync::CancellationToken;

use super::{
    Backend, BottleSummary, Domain, DomainInfo, ExecOutput, ExecRequest, FileSpec, Leftovers,
    OutputSink, Resource, Role, ServiceSpec, LABEL_HOME, LABEL_ID, LABEL_ROLE,
};
use crate::docker::{container_name, network::free_subnets, network_name, volume_name};
use crate::error::Error;

/// What happens at the step a test picks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The engine refuses: a create finds its name taken by an object of
    /// another home (which must survive the undo); other requests fail.
    Refuse,
    /// The caller is cancelled while the request is in flight: a caller that
    /// stops waiting on cancel drops it before the engine acts on it; one
    /// that does not (a create) still gets it made, as with `CancelAfter`.
    CancelBefore,
    /// The engine completes the request, and the caller is cancelled before
    /// it reads the reply.
    CancelAfter,
    /// The engine completes the request but its reply is lost: the caller
    /// sees an error and never learns what was made.
    ReplyLost,
}

type Labels = BTreeMap<String, String>;

#[derive(Debug, Default)]
struct Network {
    labels: Labels,
    subnet: Option<Ipv4Net>,
}

#[derive(Debug, Default)]
struct Container {
    labels: Labels,
    networks: BTreeSet<String>,
    volumes: BTreeSet<String>,
    running: bool,
    files: BTreeMap<String, Vec<u8>>,
}

/// The engine's objects and the requests it has seen.
#[derive(Debug, Default)]
struct Engine {
    networks: BTreeMap<String, Network>,
    volumes: BTreeMap<String, Labels>,
    containers: BTreeMap<String, Container>,
    steps: Vec<String>,
    fault: Option<(usize, Fault)>,
    /// Every list request fails (so no sweep by labels can find anything).
    listing_refused: bool,
}

/// The object a create request would make (a refusal takes its name first).
enum Makes<'a> {
    Network(&'a str),
    Container(&'a str),
    Nothing,
}

fn refused(what: &str, status_code: u16, message: String) -> Error {
    Error::Engine {
        what: what.to_string(),
        source: bollard::errors::Error::DockerResponseServerError {
            status_code,
            message,
        },
    }
}

fn other_home() -> Labels {
    Labels::from([(LABEL_HOME.to_string(), "another-home".to_string())])
}

impl Engine {
    fn create_network(&mut self, name: &str, labels: Labels, subnet: Ipv4Net) -> Result<(), Error> {
        let what = format!("create network {name}");
        if self.networks.contains_key(name) {
            return Err(refused(
                &what,
                409,
                format!("network with name {name} already exists"),
            ));
        }
        let overlaps = self
            .networks
            .values()
            .filter_map(|n| n.subnet)
            .any(|s| s.contains(&subnet.network()) || subnet.contains(&s.network()));
        if overlaps {
            return Err(refused(
                &what,
                403,
                "Pool overlaps with other one on this address space".into(),
            ));
        }
        let subnet = Some(subnet);
        self.networks
            .insert(name.to_string(), Network { labels, subnet });
        Ok(())
    }

    /// The first free /28 of the pool, the preferred one when it is free.
    fn pick_subnet(&self, preferred: Option<&str>) -> Result<Ipv4Net, Error> {
        let taken: Vec<Ipv4Net> = self.networks.values().filter_map(|n| n.subnet).collect();
        let mut free = free_subnets(&taken);
        free.sort();
        let preferred = preferred.and_then(|p| p.parse::<Ipv4Net>().ok());
        preferred
            .filter(|p| free.contains(p))
            .or_else(|| free.first().copied())
            .ok_or_else(|| Error::PoolExhausted {
                pool: crate::docker::network::POOL.into(),
            })
    }

    /// Like the engine: an existing volume is returned as it is.
    fn create_volume(&mut self, name: &str, labels: Labels) {
        self.volumes.entry(name.to_string()).or_insert(labels);
    }

    fn container(&mut self, name: &str) -> Result<&mut Container, Error> {
        self.containers
            .get_mut(name)
            .ok_or_else(|| refused(name, 404, format!("No such container: {name}")))
    }

    fn remove(&mut self, resource: &Resource) -> Result<(), Error> {
        match resource {
            Resource::Service { name, .. } => {
                self.containers.remove(name);
            }
            Resource::Domain { name } => {
                if self.containers.values().any(|c| c.networks.contains(name)) {
                    return Err(refused(
                        &format!("remove network {name}"),
                        403,
                        format!(
                            "error while removing network: network {name} has active endpoints"
                        ),
                    ));
                }
                self.networks.remove(name);
            }
            Resource::Volume { name } => {
                if let Some((c, _)) = self
                    .containers
                    .iter()
                    .find(|(_, c)| c.volumes.contains(name))
                {
                    return Err(refused(
                        &format!("remove volume {name}"),
                        409,
                        format!("remove {name}: volume is in use - [{c}]"),
                    ));
                }
                self.volumes.remove(name);
            }
        }
        Ok(())
    }
}

/// The fake engine, scoped to one home like `DockerBackend`.
#[derive(Debug)]
pub struct FakeBackend {
    home: String,
    cancel: CancellationToken,
    engine: Mutex<Engine>,
}

impl FakeBackend {
    /// `cancel` is the token the caller under test honours.
    pub fn new(home: &str, cancel: CancellationToken) -> FakeBackend {
        FakeBackend {
            home: home.to_string(),
            cancel,
            engine: Mutex::new(Engine::default()),
        }
    }

    fn engine(&self) -> MutexGuard<'_, Engine> {
        self.engine.lock().expect("fake engine lock")
    }

    /// A network the operator made (no labels of ours), as `attach_networks` names.
    pub fn add_operator_network(&self, name: &str, subnet: &str) {
        let subnet = subnet.parse().expect("subnet literal");
        self.engine()
            .create_network(name, Labels::new(), subnet)
            .expect("operator network");
    }

    /// Step `n` (counted from 1) of what follows gets `fault`.
    pub fn fault_at(&self, n: usize, fault: Fault) {
        self.engine().fault = Some((n, fault));
    }

    /// From now on the engine answers every list request with an error.
    pub fn refuse_listing(&self) {
        self.engine().listing_refused = true;
    }

    /// The requests seen, in order (the steps a fault can be put at).
    pub fn steps(&self) -> Vec<String> {
        self.engine().steps.clone()
    }

    /// Every object the engine holds, whoever made it.
    pub fn objects(&self) -> BTreeSet<String> {
        let e = self.engine();
        let c = e.containers.keys().map(|n| format!("container {n}"));
        let n = e.networks.keys().map(|n| format!("network {n}"));
        let v = e.volumes.keys().map(|n| format!("volume {n}"));
        c.chain(n).chain(v).collect()
    }

    /// Whether a container exists and runs.
    pub fn running(&self, name: &str) -> bool {
        self.engine()
            .containers
            .get(name)
            .is_some_and(|c| c.running)
    }

    fn labels(&self, bottle: &str, role: &str) -> Labels {
        Labels::from([
            (LABEL_ID.to_string(), bottle.to_string()),
            (LABEL_ROLE.to_string(), role.to_string()),
            (LABEL_HOME.to_string(), self.home.clone()),
        ])
    }

    fn ours(&self, labels: &Labels, bottle: Option<&str>) -> bool {
        labels.get(LABEL_HOME) == Some(&self.home)
            && bottle.is_none_or(|b| labels.get(LABEL_ID).map(String::as_str) == Some(b))
    }

    /// One request to the engine: counted, and given the fault of its step.
    async fn request<T>(
        &self,
        what: String,
        makes: Makes<'_>,
        apply: impl FnOnce(&mut Engine) -> Result<T, Error>,
    ) -> Result<T, Error> {
        let fault = {
            let mut e = self.engine();
            e.steps.push(what.clone());
            let n = e.steps.len();
            e.fault.filter(|(at, _)| *at == n).map(|(_, f)| f)
        };
        match fault {
            None => apply(&mut self.engine()),
            Some(Fault::Refuse) => {
                let mut e = self.engine();
                match makes {
                    Makes::Network(name) => {
                        e.networks.insert(
                            name.to_string(),
                            Network {
                                labels: other_home(),
                                subnet: None,
                            },
                        );
                    }
                    Makes::Container(name) => {
                        let labels = other_home();
                        e.containers.insert(
                            name.to_string(),
                            Container {
                                labels,
                                ..Default::default()
                            },
                        );
                    }
                    Makes::Nothing => {
                        return Err(refused(&what, 500, "the fake engine refuses".into()))
                    }
                }
                apply(&mut e)
            }
            Some(Fault::CancelBefore) => {
                self.cancel.cancel();
                tokio::task::yield_now().await;
                apply(&mut self.engine())
            }
            Some(Fault::CancelAfter) => {
                let r = apply(&mut self.engine());
                self.cancel.cancel();
                tokio::task::yield_now().await;
                r
            }
            Some(Fault::ReplyLost) => {
                let _ = apply(&mut self.engine());
                Err(refused(&what, 500, "connection reset by peer".into()))
            }
        }
    }
}

impl Backend for FakeBackend {
    type Error = Error;

    async fn create_domain(
        &self,
        bottle: &str,
        domain: &Domain,
        preferred: Option<&str>,
    ) -> Result<DomainInfo, Error> {
        let name = network_name(bottle, domain);
        if let Domain::Attached(_) = domain {
            let what = format!("inspect network {name}");
            return self
                .request(what, Makes::Nothing, |e| {
                    let n = e
                        .networks
                        .get(&name)
                        .ok_or_else(|| Error::MissingNetwork { name: name.clone() })?;
                    Ok(DomainInfo {
                        domain: domain.clone(),
                        cidr: n.subnet.map(|s| s.to_string()),
                        name: name.clone(),
                        base: None,
                    })
                })
                .await;
        }
        let labels = self.labels(bottle, domain.as_str());
        let what = format!("create network {name}");
        // The range is picked where the request is applied: a clash with a
        // parallel create is the backend's to retry (see `DockerBackend`).
        let subnet = self
            .request(what, Makes::Network(&name), |e| {
                let subnet = e.pick_subnet(preferred)?;
                e.create_network(&name, labels, subnet)?;
                Ok(subnet)
            })
            .await?;
        Ok(DomainInfo {
            domain: domain.clone(),
            name,
            base: Some(subnet.network()),
            cidr: Some(subnet.to_string()),
        })
    }

    async fn ensure_volume(
        &self,
        bottle: &str,
        role: Role,
        purpose: &str,
    ) -> Result<String, Error> {
        let name = volume_name(bottle, role, purpose);
        let labels = self.labels(bottle, role.as_str());
        let what = format!("create volume {name}");
        self.request(what, Makes::Nothing, |e| {
            e.create_volume(&name, labels);
            Ok(())
        })
        .await?;
        Ok(name)
    }

    async fn create_service(
        &self,
        bottle: &str,
        spec: &ServiceSpec,
        domains: &[DomainInfo],
        _extra_hosts: &[(String, Ipv4Addr)],
        _env: &[(String, String)],
        created: &mut Vec<Resource>,
    ) -> Result<(), Error> {
        let name = container_name(bottle, spec.role);
        let mut networks = Vec::new();
        for d in &spec.domains {
            let info = domains.iter().find(|i| &i.domain == d);
            let info = info.ok_or_else(|| Error::MissingNetwork {
                name: network_name(bottle, d),
            })?;
            networks.push(info.name.clone());
        }
        let mut volumes = BTreeSet::new();
        if !spec.files.is_empty() {
            let v = volume_name(bottle, spec.role, "config");
            let labels = self.labels(bottle, spec.role.as_str());
            self.request(format!("create volume {v}"), Makes::Nothing, |e| {
                e.create_volume(&v, labels);
                Ok(())
            })
            .await?;
            created.push(Resource::Volume { name: v.clone() });
            volumes.insert(v);
        }
        if spec.workspace {
            volumes.insert(volume_name(bottle, spec.role, "workspace"));
        }
        let labels = self.labels(bottle, spec.role.as_str());
        let primary = networks.first().cloned().unwrap_or_default();
        let what = format!("create container {name}");
        self.request(what.clone(), Makes::Container(&name), |e| {
            if e.containers.contains_key(&name) {
                let msg = format!("Conflict. The container name \"/{name}\" is already in use");
                return Err(refused(&what, 409, msg));
            }
            if !e.networks.contains_key(&primary) {
                return Err(refused(&what, 404, format!("network {primary} not found")));
            }
            // The engine makes a mounted volume that does not exist, unlabelled.
            for v in &volumes {
                e.create_volume(v, Labels::new());
            }
            let networks = BTreeSet::from([primary.clone()]);
            let c = Container {
                labels,
                networks,
                volumes,
                ..Default::default()
            };
            e.containers.insert(name.clone(), c);
            Ok(())
        })
        .await?;
        created.push(Resource::Service {
            role: spec.role,
            name: name.clone(),
        });
        for net in networks.iter().skip(1) {
            let what = format!("connect {name} to {net}");
            self.request(what.clone(), Makes::Nothing, |e| {
                if !e.networks.contains_key(net) {
                    return Err(refused(&what, 404, format!("network {net} not found")));
                }
                e.container(&name)?.networks.insert(net.clone());
                Ok(())
            })
            .await?;
        }
        if !spec.files.is_empty() {
            self.put_files(bottle, spec.role, "/config", spec.role.uid(), &spec.files)
                .await?;
        }
        Ok(())
    }

    async fn start_service(&self, bottle: &str, spec: &ServiceSpec) -> Result<(), Error> {
        let name = container_name(bottle, spec.role);
        let what = format!("start {name}");
        self.request(what.clone(), Makes::Nothing, |e| {
            let nets: Vec<String> = e.container(&name)?.networks.iter().cloned().collect();
            if let Some(gone) = nets.iter().find(|n| !e.networks.contains_key(*n)) {
                return Err(refused(&what, 404, format!("network {gone} not found")));
            }
            e.container(&name)?.running = true;
            Ok(())
        })
        .await
    }

    async fn wait_ready(&self, bottle: &str, spec: &ServiceSpec) -> Result<(), Error> {
        let name = container_name(bottle, spec.role);
        self.request(format!("wait for {name}"), Makes::Nothing, |e| {
            if e.container(&name)?.running {
                Ok(())
            } else {
                Err(Error::Unhealthy {
                    role: spec.role,
                    detail: "it stopped".into(),
                    logs: String::new(),
                })
            }
        })
        .await
    }

    async fn remove(&self, resource: &Resource) -> Result<(), Error> {
        self.engine().remove(resource)
    }

    async fn exec(
        &self,
        bottle: &str,
        role: Role,
        _req: ExecRequest,
        _sink: OutputSink<'_>,
    ) -> Result<ExecOutput, Error> {
        let name = container_name(bottle, role);
        let what = format!("exec in {name}");
        self.request(what.clone(), Makes::Nothing, |e| {
            if !e.container(&name)?.running {
                return Err(refused(
                    &what,
                    409,
                    format!("container {name} is not running"),
                ));
            }
            Ok(ExecOutput {
                exit_code: 0,
                stdout: Vec::new(),
                stderr: Vec::new(),
            })
        })
        .await
    }

    async fn exec_interactive(
        &self,
        bottle: &str,
        role: Role,
        _req: ExecRequest,
    ) -> Result<i64, Error> {
        let name = container_name(bottle, role);
        Err(refused(&name, 501, "no terminal in the fake engine".into()))
    }

    async fn put_files(
        &self,
        bottle: &str,
        role: Role,
        dir: &str,
        _uid: u32,
        files: &[FileSpec],
    ) -> Result<(), Error> {
        let name = container_name(bottle, role);
        let what = format!("copy files into {name}:{dir}");
        self.request(what, Makes::Nothing, |e| {
            let c = e.container(&name)?;
            for f in files {
                let path = format!("{}/{}", dir.trim_end_matches('/'), f.path);
                c.files.insert(path, f.contents.clone());
            }
            Ok(())
        })
        .await
    }

    async fn read_file(&self, bottle: &str, role: Role, path: &str) -> Result<Vec<u8>, Error> {
        let name = container_name(bottle, role);
        let what = format!("read {name}:{path}");
        self.request(what.clone(), Makes::Nothing, |e| {
            let file = e.container(&name)?.files.get(path).cloned();
            file.ok_or_else(|| refused(&what, 404, format!("Could not find the file {path}")))
        })
        .await
    }

    async fn list(&self) -> Result<Vec<BottleSummary>, Error> {
        let e = self.engine();
        let mut by_id: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for c in e.containers.values().filter(|c| self.ours(&c.labels, None)) {
            let (Some(id), Some(role)) = (c.labels.get(LABEL_ID), c.labels.get(LABEL_ROLE)) else {
                continue;
            };
            let state = if c.running { "running" } else { "created" };
            by_id
                .entry(id.clone())
                .or_default()
                .insert(role.clone(), state.to_string());
        }
        let summary = |(id, services)| BottleSummary { id, services };
        Ok(by_id.into_iter().map(summary).collect())
    }

    async fn leftovers(&self, bottle: Option<&str>) -> Result<Leftovers, Error> {
        let e = self.engine();
        if e.listing_refused {
            return Err(refused("list objects", 500, "listing refused".into()));
        }
        let mut out = Leftovers::default();
        let mut note = |labels: &Labels, name: &str, into: &mut Vec<String>| {
            if self.ours(labels, bottle) {
                into.push(name.to_string());
                out.bottles.extend(labels.get(LABEL_ID).cloned());
            }
        };
        let (mut services, mut domains, mut volumes) = (Vec::new(), Vec::new(), Vec::new());
        for (n, c) in &e.containers {
            note(&c.labels, n, &mut services);
        }
        for (n, net) in &e.networks {
            note(&net.labels, n, &mut domains);
        }
        for (n, labels) in &e.volumes {
            note(labels, n, &mut volumes);
        }
        out.services = services;
        out.domains = domains;
        out.volumes = volumes;
        Ok(out)
    }

    /// Like `DockerBackend`: containers first, then networks and volumes.
    async fn remove_all(
        &self,
        bottle: Option<&str>,
        keep_volumes: bool,
    ) -> Result<Leftovers, Error> {
        let found = self.leftovers(bottle).await?;
        let mut e = self.engine();
        for name in &found.services {
            let role = Role::Agent;
            let name = name.clone();
            e.remove(&Resource::Service { role, name })?;
        }
        for name in &found.domains {
            e.remove(&Resource::Domain { name: name.clone() })?;
        }
        if !keep_volumes {
            for name in &found.volumes {
                e.remove(&Resource::Volume { name: name.clone() })?;
            }
        }
        Ok(found)
    }
}
