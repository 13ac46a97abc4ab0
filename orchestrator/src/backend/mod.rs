//! The engine-neutral shape of a running bottle and the operations a backend
//! must offer to bring one up, drive it and take it down.
//!
//! This module speaks of **roles** (agent, egress, ...), **isolation domains**
//! (groups of roles that may talk to each other and nothing else) and
//! **connections** ("agent may reach egress:3128"), never of Docker networks,
//! so that a Kubernetes backend can render the same layout as pods and
//! NetworkPolicies. It must never talk to an engine itself; `docker/` does.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

#[cfg(test)]
pub mod fake;

/// Labels carried by every object a backend creates.
pub use crate::plan::{LABEL_HOME, LABEL_ID, LABEL_ROLE};

pub use crate::plan::Role;

/// Roles are persisted (layout.json) by their CLI name.
pub mod role_serde {
    use super::Role;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(r: &Role, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(r.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Role, D::Error> {
        let s = String::deserialize(d)?;
        Role::parse(&s).ok_or_else(|| serde::de::Error::custom(format!("unknown role {s}")))
    }
}

/// An isolation domain: its members reach each other and nothing else,
/// unless the domain is `Egress` (the only one with a way out).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Domain {
    /// agent, egress, git-gate, supervise. No way out, not even to the host.
    Internal,
    /// egress and cred-proxy. No way out.
    Broker,
    /// egress and cred-proxy: the way out.
    Egress,
    /// egress and git-gate: where egress serves the git remotes' tunnels. No
    /// way out; the agent is never a member.
    Gate,
    /// A domain the operator owns (`egress.attach_networks`), joined by egress
    /// and cred-proxy.
    Attached(String),
}

impl Domain {
    pub fn as_str(&self) -> &str {
        match self {
            Domain::Internal => "internal",
            Domain::Broker => "broker",
            Domain::Egress => "egress",
            Domain::Gate => "gate",
            Domain::Attached(name) => name,
        }
    }

    /// Whether members may leave the domain (routing to the outside).
    pub fn has_way_out(&self) -> bool {
        matches!(self, Domain::Egress | Domain::Attached(_))
    }

    /// Whether the bottle owns the domain (creates and removes it).
    pub fn owned(&self) -> bool {
        !matches!(self, Domain::Attached(_))
    }
}

/// "`from` may reach `to` on `port`": what a NetworkPolicy would allow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    #[serde(with = "role_serde")]
    pub from: Role,
    #[serde(with = "role_serde")]
    pub to: Role,
    pub port: u16,
}

/// A file placed into a component before it starts, owned by its user.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileSpec {
    /// Path relative to the component's config directory (`/config`).
    pub path: String,
    pub contents: Vec<u8>,
    pub mode: u32,
}

impl fmt::Debug for FileSpec {
    // Contents may be a key: never print them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileSpec")
            .field("path", &self.path)
            .field("bytes", &self.contents.len())
            .field("mode", &format_args!("{:o}", self.mode))
            .finish()
    }
}

/// A value of an environment variable.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EnvValue {
    /// Written as is (not a secret).
    Literal(String),
    /// Read from the operator's environment at bring-up, by name; never stored.
    FromHost(String),
    /// A per-bottle secret kept in the state dir (0600), by file name.
    StateSecret(String),
}

impl fmt::Debug for EnvValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvValue::Literal(v) => write!(f, "{v:?}"),
            EnvValue::FromHost(n) => write!(f, "${{{n}}}"),
            EnvValue::StateSecret(n) => write!(f, "<state:{n}>"),
        }
    }
}

/// How the backend knows a component is ready.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Readiness {
    /// The image's own health check reports healthy.
    HealthCheck,
    /// Running is enough.
    Running,
}

/// One component of a bottle (a sidecar or the agent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    #[serde(with = "role_serde")]
    pub role: Role,
    pub image: String,
    /// Overrides the image's command (the agent idles; commands run by exec).
    pub cmd: Option<Vec<String>>,
    pub env: BTreeMap<String, EnvValue>,
    /// Domains joined, the first is the primary one.
    pub domains: Vec<Domain>,
    /// Files placed in `/config` before start (owned by `role.uid()`).
    pub files: Vec<FileSpec>,
    /// Run an init as PID 1 (reaps git and ssh children in git-gate).
    pub init: bool,
    /// Root filesystem read-only (sidecars). The agent's stays writable so the
    /// trust store can be provisioned and `commit` has something to snapshot.
    pub read_only: bool,
    /// Writable scratch directories on a read-only root.
    pub tmpfs: Vec<String>,
    /// Keep `/workspace` in a volume that outlives the container (agent).
    pub workspace: bool,
    /// A directory of the bottle's state mounted at `/audit` (egress writes
    /// its audit log there, so it outlives the container).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit_dir: Option<PathBuf>,
    pub memory_bytes: i64,
    pub pids_limit: i64,
    /// CPU cap in billionths of a core (at most the engine's cores); 0 in
    /// a layout saved before caps existed (`resume` fills the role's cap).
    #[serde(default)]
    pub nano_cpus: i64,
    pub readiness: Readiness,
    /// Use the engine's sandboxed runtime (gVisor) when it has one.
    pub sandboxed: bool,
}

/// Everything a backend needs to bring a bottle up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BottleLayout {
    pub id: String,
    /// Address ranges the plan showed, per domain: used when still free.
    #[serde(default)]
    pub preferred_ranges: BTreeMap<String, String>,
    pub services: Vec<ServiceSpec>,
    pub connections: Vec<Connection>,
}

impl BottleLayout {
    pub fn service(&self, role: Role) -> Option<&ServiceSpec> {
        self.services.iter().find(|s| s.role == role)
    }

    pub fn service_mut(&mut self, role: Role) -> Option<&mut ServiceSpec> {
        self.services.iter_mut().find(|s| s.role == role)
    }

    /// Domains in creation order (owned ones first, in a stable order).
    pub fn domains(&self) -> Vec<Domain> {
        let mut out: Vec<Domain> = Vec::new();
        for s in &self.services {
            for d in &s.domains {
                if !out.contains(d) {
                    out.push(d.clone());
                }
            }
        }
        out.sort();
        out
    }
}

/// Something a backend created, in a form that lets it be removed again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Resource {
    Domain {
        name: String,
    },
    Service {
        #[serde(with = "role_serde")]
        role: Role,
        name: String,
    },
    Volume {
        name: String,
    },
}

/// Where a domain lives: what members use to reach each other.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainInfo {
    pub domain: Domain,
    pub name: String,
    /// Address of the domain's first usable host (fixed addresses are
    /// `base + role.host_octet()`); None where the engine gives names, not addresses.
    pub base: Option<Ipv4Addr>,
    pub cidr: Option<String>,
}

impl DomainInfo {
    pub fn address_of(&self, role: Role) -> Option<Ipv4Addr> {
        self.base
            .map(|b| Ipv4Addr::from(u32::from(b) + u32::from(role.host_octet())))
    }
}

/// Captured result of a command run in a bottle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i64,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// A command run in a component.
#[derive(Debug, Clone, Default)]
pub struct ExecRequest {
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub user: Option<String>,
    pub working_dir: Option<String>,
}

/// One bottle as found on the engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BottleSummary {
    pub id: String,
    pub services: BTreeMap<String, String>,
}

/// Everything the engine holds for one home (what `cleanup` removes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Leftovers {
    pub services: Vec<String>,
    pub domains: Vec<String>,
    pub volumes: Vec<String>,
    /// The bottle ids these objects are labelled with.
    pub bottles: std::collections::BTreeSet<String>,
}

impl Leftovers {
    pub fn is_empty(&self) -> bool {
        self.services.is_empty() && self.domains.is_empty() && self.volumes.is_empty()
    }
}

/// Where a command's output goes.
pub enum OutputSink<'a> {
    /// Collected into the returned `ExecOutput`.
    Capture,
    /// Streamed to these writers as it comes.
    Stream {
        stdout: &'a mut (dyn std::io::Write + Send),
        stderr: &'a mut (dyn std::io::Write + Send),
    },
}

impl fmt::Debug for OutputSink<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OutputSink::Capture => f.write_str("Capture"),
            OutputSink::Stream { .. } => f.write_str("Stream"),
        }
    }
}

/// The operations a bottle engine offers. Every object created is labelled
/// with the bottle id, the role and the home hash, so `cleanup` finds it.
pub trait Backend: Send + Sync {
    type Error: std::error::Error + Send + Sync + 'static;

    /// Creates an isolation domain (owned) or looks up an attached one;
    /// `preferred` is the address range to use when it is free.
    fn create_domain(
        &self,
        bottle: &str,
        domain: &Domain,
        preferred: Option<&str>,
    ) -> impl Future<Output = Result<DomainInfo, Self::Error>> + Send;

    /// Creates a persistent volume (workspace) or returns it if it exists.
    fn ensure_volume(
        &self,
        bottle: &str,
        role: Role,
        purpose: &str,
    ) -> impl Future<Output = Result<String, Self::Error>> + Send;

    /// Creates a component (not started) joined to its domains at its fixed
    /// addresses, with its files in place. Returns what was created, in
    /// creation order, so a failure half-way can be undone.
    fn create_service(
        &self,
        bottle: &str,
        spec: &ServiceSpec,
        domains: &[DomainInfo],
        extra_hosts: &[(String, Ipv4Addr)],
        env: &[(String, String)],
        created: &mut Vec<Resource>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Starts a created component.
    fn start_service(
        &self,
        bottle: &str,
        spec: &ServiceSpec,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Waits until a started component is ready (its health check passes).
    fn wait_ready(
        &self,
        bottle: &str,
        spec: &ServiceSpec,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Removes one created object (idempotent: gone is fine).
    fn remove(&self, resource: &Resource) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Runs a command in a component and returns its exit code.
    fn exec(
        &self,
        bottle: &str,
        role: Role,
        req: ExecRequest,
        sink: OutputSink<'_>,
    ) -> impl Future<Output = Result<ExecOutput, Self::Error>> + Send;

    /// Runs a command with the operator's terminal attached.
    fn exec_interactive(
        &self,
        bottle: &str,
        role: Role,
        req: ExecRequest,
    ) -> impl Future<Output = Result<i64, Self::Error>> + Send;

    /// Places files (owned by `uid`) under `dir` of a running component.
    fn put_files(
        &self,
        bottle: &str,
        role: Role,
        dir: &str,
        uid: u32,
        files: &[FileSpec],
    ) -> impl Future<Output = Result<(), Self::Error>> + Send;

    /// Reads one file from a component.
    fn read_file(
        &self,
        bottle: &str,
        role: Role,
        path: &str,
    ) -> impl Future<Output = Result<Vec<u8>, Self::Error>> + Send;

    /// Bottles of this home found on the engine.
    fn list(&self) -> impl Future<Output = Result<Vec<BottleSummary>, Self::Error>> + Send;

    /// Everything labelled for this home (or one bottle of it).
    fn leftovers(
        &self,
        bottle: Option<&str>,
    ) -> impl Future<Output = Result<Leftovers, Self::Error>> + Send;

    /// Removes everything `leftovers` lists; `keep_volumes` spares workspaces.
    fn remove_all(
        &self,
        bottle: Option<&str>,
        keep_volumes: bool,
    ) -> impl Future<Output = Result<Leftovers, Self::Error>> + Send;
}

/// The connections every bottle allows (the rest is denied): each at the
/// port its sidecar listens on, when the bottle has that sidecar (and, for
/// a sidecar-to-sidecar path, the one it comes from).
pub fn standard_connections(roles: &[Role]) -> Vec<Connection> {
    const PATHS: [(Role, Role); 5] = [
        (Role::Agent, Role::Egress),
        (Role::Agent, Role::GitGate),
        (Role::GitGate, Role::Egress),
        (Role::Agent, Role::Supervise),
        (Role::Egress, Role::CredProxy),
    ];
    let has = |r: Role| r == Role::Agent || roles.contains(&r);
    PATHS
        .into_iter()
        .filter(|&(from, to)| has(from) && has(to))
        .filter_map(|(from, to)| {
            Some(Connection {
                from,
                to,
                port: to.port()?,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_addresses_follow_the_roles_table() {
        let d = DomainInfo {
            domain: Domain::Internal,
            name: "n".into(),
            base: Some(Ipv4Addr::new(10, 213, 0, 16)),
            cidr: Some("10.213.0.16/28".into()),
        };
        assert_eq!(
            d.address_of(Role::Egress),
            Some(Ipv4Addr::new(10, 213, 0, 18))
        );
        assert_eq!(
            d.address_of(Role::CredProxy),
            Some(Ipv4Addr::new(10, 213, 0, 19))
        );
        assert_eq!(
            d.address_of(Role::Agent),
            Some(Ipv4Addr::new(10, 213, 0, 26))
        );
    }

    #[test]
    fn agent_reaches_only_its_sidecars() {
        let c = standard_connections(&[Role::Agent, Role::Egress, Role::CredProxy]);
        assert!(c
            .iter()
            .all(|c| c.to != Role::CredProxy || c.from == Role::Egress));
        assert!(c
            .iter()
            .any(|c| c.from == Role::Agent && c.to == Role::Egress && c.port == 3128));
    }

    #[test]
    fn env_debug_never_shows_host_values() {
        let v = EnvValue::FromHost("GH_TOKEN".into());
        assert_eq!(format!("{v:?}"), "${GH_TOKEN}");
    }
}
