//! The resolved plan of one bottle: everything `start` will create, decided on
//! the host before any Docker object exists. `start --dry-run` prints it
//! (human or JSON, see docs/plan-json.md), the lifecycle code executes it.
//!
//! A plan never holds a secret value: tokens appear by environment variable
//! NAME only; per-bottle secrets (broker key, canary, CA) are generated at
//! bring-up and only their variable names / file names appear here.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;
use serde::Serialize;

use crate::error::Error;

mod build;

pub use build::{build, proxy_and_trust};

/// Version of the JSON shape printed by `start --dry-run --format json`.
pub const PLAN_FORMAT_VERSION: u32 = 1;

/// Label keys put on every Docker object of a bottle.
pub const LABEL_ID: &str = "dev.bot-bottle.id";
pub const LABEL_ROLE: &str = "dev.bot-bottle.role";
pub const LABEL_HOME: &str = "dev.bot-bottle.home";

use contract::cred_proxy::SchemeName;
use contract::egress::{Detector, OnMatch};
pub use contract::role::{BROKER_KEY_ENV, CANARY_ENV};
pub use contract::Role;

/// The per-bottle networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NetworkRole {
    /// agent + egress + git-gate + supervise; internal, isolated gateway.
    Internal,
    /// egress + cred-proxy; internal, isolated gateway.
    Broker,
    /// egress + cred-proxy; a bridge with a gateway (the way out).
    Egress,
    /// egress + git-gate, only in bottles with git remotes; internal, isolated
    /// gateway. Egress serves the remotes' ssh tunnels on its address here
    /// alone, so the agent (not on this network) can never open them.
    Gate,
}

impl NetworkRole {
    pub const ALL: [NetworkRole; 4] = [
        NetworkRole::Internal,
        NetworkRole::Broker,
        NetworkRole::Egress,
        NetworkRole::Gate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            NetworkRole::Internal => "internal",
            NetworkRole::Broker => "broker",
            NetworkRole::Egress => "egress",
            NetworkRole::Gate => "gate",
        }
    }
}

/// Name, in egress's and cred-proxy's config dir, of the bottle's
/// `egress.upstream_ca` copy.
pub const UPSTREAM_CA_FILE: &str = "upstream-ca.pem";
/// Where egress writes its audit log: the bottle's state dir `audit/`,
/// mounted there, so the log outlives the container (see `state`).
pub const AUDIT_DIR: &str = "/audit";
pub const AUDIT_FILE: &str = "audit.jsonl";

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// JSON shape version (docs/plan-json.md).
    pub format_version: u32,
    /// Bottle id: `<agent>-<6 hex>`.
    pub id: String,
    pub agent: String,
    /// Bottle manifest name the agent uses.
    pub bottle: String,
    /// Manifest files read, the agent first, then the bottle and what it extends.
    pub manifests: Vec<PathBuf>,
    pub home: PathBuf,
    /// Short hash of the home path (label `dev.bot-bottle.home`).
    pub home_hash: String,
    /// `<home>/state/<id>`.
    pub state_dir: PathBuf,
    /// Labels common to every object of this bottle (add `dev.bot-bottle.role` per object).
    pub labels: BTreeMap<String, String>,
    pub runtime: RuntimePlan,
    pub networks: Vec<NetworkPlan>,
    pub agent_container: AgentPlan,
    pub sidecars: Vec<SidecarPlan>,
    /// Egress routes, provider-template routes included (marked by `origin`).
    pub routes: Vec<RoutePlan>,
    pub git: GitPlan,
    /// Every host environment variable that is a token, by name only.
    pub tokens: Vec<TokenPlan>,
    pub supervise: bool,
    /// Private ranges egress may dial (the bottle's `egress.ssrf_allow_cidrs`).
    pub ssrf_allow_cidrs: Vec<String>,
    /// Extra CA certificates egress and cred-proxy trust for upstream TLS
    /// (the bottle's `egress.upstream_ca`), copied into both at start.
    pub upstream_ca: Option<PathBuf>,
    /// Problems that make a real `start` fail (missing files or token variables);
    /// in `--dry-run` they are only printed.
    pub warnings: Vec<String>,
    /// Notes the operator should read (e.g. git push is still a data channel).
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RuntimePlan {
    /// OCI runtime for the agent container: "runsc" when the engine offers it, else "runc".
    pub agent_runtime: String,
    /// What the engine said: "reachable", or why it could not be asked.
    pub engine: String,
    /// Engine version when reachable.
    pub engine_version: Option<String>,
    /// Isolation of internal networks: "isolated-gateway" (Docker >= 28) or
    /// "inhibit-ipv4" (older engines: no address for the host on the bridge).
    pub gateway_isolation: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct NetworkPlan {
    pub role: NetworkRole,
    /// `bb-<id>-<role>`.
    pub name: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// `internal: true` (no route out).
    pub internal: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct EnvVar {
    pub name: String,
    #[serde(flatten)]
    pub value: EnvValue,
}

/// Where an environment variable's value comes from. Values shown here are
/// never secret: host values are referenced by name and read at bring-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "source", rename_all = "kebab-case")]
pub enum EnvValue {
    /// A literal from the manifest or the orchestrator (proxy settings, placeholders).
    Literal { value: String },
    /// Read from the operator's environment variable `var` at bring-up.
    Host { var: String },
    /// Generated per bottle at bring-up (`broker-key`, `canary`).
    Generated { kind: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct AgentPlan {
    pub container_name: String,
    /// Image to run; `BOT_BOTTLE_IMAGE` overrides it.
    pub image: String,
    pub image_source: ImageSource,
    /// Provider template: "claude", "codex", or null (plain image, e.g. test-agent).
    pub provider: Option<String>,
    pub address: Ipv4Addr,
    pub network: String,
    /// `ExtraHosts` entries: name → address.
    pub extra_hosts: BTreeMap<String, Ipv4Addr>,
    /// Full environment of the agent (proxy, CA trust, placeholders, manifest env).
    pub env: Vec<EnvVar>,
    /// System prompt (the agent manifest's body).
    pub system_prompt: String,
    pub skills: Vec<String>,
    /// Command to run instead of the provider CLI (`start -- CMD`).
    pub command: Vec<String>,
    /// Working tree copied into the workspace (`--cwd`).
    pub copy_cwd: Option<PathBuf>,
    pub workdir: String,
    pub user: String,
}

/// Where an image comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ImageSource {
    /// Built by `images build` from `images/<name>.Dockerfile`.
    Builtin { name: String },
    /// Built from the manifest's `agent_provider.dockerfile`.
    Dockerfile { path: PathBuf },
    /// Given by the operator (`--sidecar-image`, `BOT_BOTTLE_IMAGE`).
    Override { image: String },
}

#[derive(Debug, Clone, Serialize)]
pub struct SidecarPlan {
    pub role: Role,
    pub container_name: String,
    pub image: String,
    pub image_source: ImageSource,
    /// Network alias (also the agent's ExtraHosts name where it may reach it).
    pub alias: String,
    pub port: u16,
    /// Fixed address on each network the sidecar joins.
    pub addresses: BTreeMap<NetworkRole, Ipv4Addr>,
    /// Extra Docker networks joined (egress: `egress.attach_networks`).
    pub attach_networks: Vec<String>,
    pub uid: u32,
    /// Config file name inside the `/config` volume (`<bin>.toml`).
    pub config_file: String,
    /// Rendered TOML. No secret inside: tokens are referenced by variable name.
    pub config: String,
    /// Environment of the sidecar; host values by name only.
    pub env: Vec<EnvVar>,
    /// Files the lifecycle uploads next to the config (CA, known secrets, keys):
    /// name in `/config` → what goes in it.
    pub files: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RoutePlan {
    /// Route id, shared by egress and cred-proxy.
    pub id: String,
    pub host: String,
    pub ports: Vec<u16>,
    /// Empty = every method.
    pub methods: Vec<String>,
    /// Empty = every path.
    pub paths: Vec<PathRule>,
    pub auth: Option<AuthPlan>,
    /// Non-secret value the agent holds for an `auth` route.
    pub placeholder: Option<String>,
    pub tunnel: bool,
    /// Served on egress's gate listener only: git-gate's tunnel to a remote's
    /// ssh port, which the agent can never open.
    pub gate_only: bool,
    /// WebSocket / h2 extended CONNECT allowed.
    pub upgrade: bool,
    /// A route to the forge of a git remote (with or without `auth`; a
    /// wildcard covering the remote's host counts): egress lets through read
    /// methods and git clone/fetch only, unless `allow_writes`, and never
    /// git's push service.
    pub forge: bool,
    /// This match was marked `allow_writes: true` (a forge write path).
    pub allow_writes: bool,
    pub dlp: DlpPlan,
    /// "bottle:<file>", "template:claude", "template:codex", "git-remote:<name>".
    pub origin: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PathRule {
    /// "prefix" or "exact".
    #[serde(rename = "type")]
    pub kind: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuthPlan {
    pub scheme: SchemeName,
    /// Host variable holding the token (never its value).
    pub token_ref: String,
    /// For scheme "header": the header name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// For scheme "header": the value template with `{token}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DlpPlan {
    /// Detectors on what leaves; empty = off.
    pub outbound_detectors: Vec<Detector>,
    pub outbound_on_match: OnMatch,
}

#[derive(Debug, Clone, Serialize)]
pub struct GitPlan {
    pub user_name: Option<String>,
    pub user_email: Option<String>,
    pub remotes: Vec<RemotePlan>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RemotePlan {
    pub name: String,
    pub upstream: String,
    pub host: String,
    pub port: u16,
    pub identity_file: PathBuf,
    pub identity_file_present: bool,
    /// `keytype base64` (the pinned host key).
    pub known_host_key: String,
    /// The line git-gate writes to its known_hosts (`[host]:port` when not 22).
    pub known_hosts_line: String,
    pub push_refs: Vec<String>,
    pub protected_paths: Vec<String>,
    pub allow_fingerprints: Vec<String>,
    /// What the agent uses: `git://git-gate/<name>.git`.
    pub gate_url: String,
    /// Egress tunnel route git-gate reaches the upstream through.
    pub tunnel_route: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenPlan {
    /// Host environment variable.
    pub var: String,
    /// Whether it is set in the environment `start` runs in.
    pub present: bool,
    /// Routes it authenticates.
    pub routes: Vec<String>,
    /// Where it goes: "cred-proxy".
    pub consumer: String,
}

impl Plan {
    pub fn sidecar(&self, role: Role) -> Option<&SidecarPlan> {
        self.sidecars.iter().find(|s| s.role == role)
    }

    pub fn network(&self, role: NetworkRole) -> Option<&NetworkPlan> {
        self.networks.iter().find(|n| n.role == role)
    }
}

/// Private pool the orchestrator carves bottle networks from (/28 each).
pub const SUBNET_POOL: &str = "10.213.0.0/16";
/// Agent image override (seeds: `BOT_BOTTLE_IMAGE`).
pub const IMAGE_ENV: &str = "BOT_BOTTLE_IMAGE";
/// Where the agent finds the bottle CA after provisioning.
pub const AGENT_CA_FILE: &str = "/usr/local/share/ca-certificates/bot-bottle-ca.crt";
/// The system bundle once the CA is added with update-ca-certificates.
pub const AGENT_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// What the engine said when asked (read-only) during planning.
#[derive(Debug, Clone, Default)]
pub struct EngineProbe {
    /// None when the engine could not be reached; then the reason.
    pub version: Option<String>,
    pub unreachable: Option<String>,
    pub runsc: bool,
}

impl EngineProbe {
    /// Docker >= 28 gives internal networks an isolated gateway.
    pub fn gateway_isolation(&self) -> &'static str {
        match self
            .version
            .as_deref()
            .and_then(|v| v.split('.').next())
            .and_then(|m| m.parse::<u32>().ok())
        {
            Some(m) if m >= 28 => "isolated-gateway",
            _ => "inhibit-ipv4",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Reuse this id (resume); a fresh `<agent>-<6 hex>` otherwise.
    pub id: Option<String>,
    /// `--sidecar-image ROLE=IMAGE`.
    pub sidecar_images: Vec<String>,
    /// `-- CMD…`.
    pub command: Vec<String>,
    /// `--cwd DIR`.
    pub cwd: Option<PathBuf>,
    pub probe: EngineProbe,
}

/// A fresh bottle id: the agent name (slug) and 6 random hex digits.
pub fn new_id(agent: &str) -> String {
    let slug: String = crate::images::slug(agent)
        .trim_matches('-')
        .chars()
        .take(40)
        .collect();
    let slug = if slug.is_empty() {
        "bottle".to_string()
    } else {
        slug
    };
    format!("{slug}-{:06x}", rand::random::<u32>() & 0xff_ffff)
}

/// The four /28 subnets a bottle may use (internal, broker, egress, gate):
/// consecutive blocks of the pool, the position chosen by the id's hash.
pub fn subnets_for(id: &str) -> [Ipv4Net; 4] {
    use sha2::{Digest, Sha256};
    let pool: Ipv4Net = SUBNET_POOL.parse().expect("constant pool");
    let blocks = 1u32 << (28 - pool.prefix_len()); // 4096 /28s
    let quads = blocks / 4;
    let h = Sha256::digest(id.as_bytes());
    let k = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) % quads;
    let base = u32::from(pool.network());
    let net =
        |i: u32| Ipv4Net::new(Ipv4Addr::from(base + (4 * k + i) * 16), 28).expect("valid /28");
    [net(0), net(1), net(2), net(3)]
}

fn env_present(var: &str) -> bool {
    std::env::var_os(var).is_some_and(|v| !v.is_empty())
}

/// Parse `--sidecar-image ROLE=IMAGE` values.
pub fn parse_sidecar_images(values: &[String]) -> Result<Vec<(Role, String)>, Error> {
    let mut out: Vec<(Role, String)> = Vec::new();
    for v in values {
        let Some((role, image)) = v.split_once('=') else {
            return Err(Error::SidecarImage {
                value: v.clone(),
                reason: "expected ROLE=IMAGE".into(),
            });
        };
        let Some(role) = Role::parse(role).filter(|r| *r != Role::Agent) else {
            return Err(Error::SidecarImage {
                value: v.clone(),
                reason: format!(
                    "unknown role `{role}`; roles: egress, cred-proxy, git-gate, supervise"
                ),
            });
        };
        if image.is_empty() || image.contains(char::is_whitespace) {
            return Err(Error::SidecarImage {
                value: v.clone(),
                reason: "expected an image reference after `=`".into(),
            });
        }
        if out.iter().any(|(r, _)| *r == role) {
            return Err(Error::SidecarImage {
                value: v.clone(),
                reason: format!("{role} is given twice"),
            });
        }
        out.push((role, image.to_string()));
    }
    Ok(out)
}

/// What a real `start` refuses that `--dry-run` only warns about: identity
/// files that do not exist and token variables that are not set.
pub fn check_ready(plan: &Plan) -> Result<(), Error> {
    let mut missing = Vec::new();
    for r in &plan.git.remotes {
        if !r.identity_file.is_file() {
            missing.push(format!(
                "git remote `{}`: IdentityFile {} does not exist",
                r.name,
                r.identity_file.display()
            ));
        }
    }
    if let Some(ca) = &plan.upstream_ca {
        match std::fs::read_to_string(ca) {
            Err(e) => missing.push(format!(
                "egress.upstream_ca {} cannot be read: {e}",
                ca.display()
            )),
            Ok(pem) if !pem.contains("-----BEGIN CERTIFICATE-----") => missing.push(format!(
                "egress.upstream_ca {} holds no PEM certificate (`-----BEGIN CERTIFICATE-----`)",
                ca.display()
            )),
            Ok(_) => {}
        }
    }
    for t in &plan.tokens {
        if !env_present(&t.var) {
            missing.push(format!(
                "token variable {} is not set (routes: {}); export it before `start`",
                t.var,
                t.routes.join(", ")
            ));
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::NotReady(missing))
    }
}
