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

    /// Labels for one object of this bottle.
    pub fn labels_for(&self, role: &str) -> BTreeMap<String, String> {
        let mut l = self.labels.clone();
        l.insert(LABEL_ROLE.to_string(), role.to_string());
        l
    }
}

// ---------------------------------------------------------------------------
// Building a plan from the manifests.
// ---------------------------------------------------------------------------

use crate::error::Error;
use crate::home::Home;
use crate::manifest::{self, EnvSpec, Resolved};

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
    let slug: String = agent
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect::<String>()
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

fn host_in(net: &Ipv4Net, octet: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()) + octet as u32)
}

fn lit(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: EnvValue::Literal {
            value: value.into(),
        },
    }
}

fn env_present(var: &str) -> bool {
    std::env::var_os(var).is_some_and(|v| !v.is_empty())
}

/// Resolve the plan of a bottle for `resolved` (agent + bottle). Reads the
/// manifests' referenced files' existence and the environment's variable
/// NAMES; creates nothing.
pub fn build(home: &Home, resolved: &Resolved, opts: &PlanOptions) -> Result<Plan, Error> {
    let id = opts
        .id
        .clone()
        .unwrap_or_else(|| new_id(&resolved.agent.name));
    let bottle = &resolved.bottle;
    let mut warnings = Vec::new();
    let mut notes = Vec::new();
    if let Some(ca) = &bottle.upstream_ca {
        if !ca.is_file() {
            warnings.push(format!(
                "{}: egress.upstream_ca {} does not exist",
                bottle
                    .files
                    .first()
                    .map(|f| f.display().to_string())
                    .unwrap_or_default(),
                ca.display()
            ));
        }
    }

    let overrides = parse_sidecar_images(&opts.sidecar_images)?;

    // Networks (the gate network only where git-gate runs).
    let [internal, broker, egress_net, gate_net] = subnets_for(&id);
    let has_git = !bottle.remotes.is_empty();
    let networks: Vec<NetworkPlan> = [
        (NetworkRole::Internal, internal, true),
        (NetworkRole::Broker, broker, true),
        (NetworkRole::Egress, egress_net, false),
        (NetworkRole::Gate, gate_net, true),
    ]
    .into_iter()
    .filter(|(role, _, _)| *role != NetworkRole::Gate || has_git)
    .map(|(role, subnet, internal)| NetworkPlan {
        role,
        name: format!("bb-{id}-{}", role.as_str()),
        subnet,
        gateway: host_in(&subnet, 1),
        internal,
    })
    .collect();
    let addr = |role: Role, net: NetworkRole| -> Ipv4Addr {
        let n = match net {
            NetworkRole::Internal => &internal,
            NetworkRole::Broker => &broker,
            NetworkRole::Egress => &egress_net,
            NetworkRole::Gate => &gate_net,
        };
        host_in(n, role.host_octet())
    };

    // Routes: each match its own egress route; git remotes get a tunnel.
    let mut routes: Vec<RoutePlan> = Vec::new();
    let mut used_ids: Vec<String> = Vec::new();
    let mut route_id = |host: &str| -> String {
        let base: String = host
            .replace('*', "wild")
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        let mut n = 0;
        loop {
            let cand = if n == 0 {
                base.clone()
            } else {
                format!("{base}-{n}")
            };
            if !used_ids.contains(&cand) {
                used_ids.push(cand.clone());
                return cand;
            }
            n += 1;
        }
    };
    for r in &bottle.routes {
        let host = r.host.to_string();
        let origin = match r.template {
            Some(t) => format!("template:{}", t.as_str()),
            None => format!("bottle:{}", r.origin.file.display()),
        };
        // Validation refuses tunnels to a forge; git-gate's own tunnels come below.
        let is_forge = !r.tunnel
            && bottle
                .remotes
                .iter()
                .any(|rm| manifest::reaches_forge(&r.host, &rm.upstream.host));
        let auth = r.auth.as_ref().map(|a| AuthPlan {
            scheme: a.scheme,
            token_ref: a.token_ref.clone(),
            header: a.header.clone(),
            template: a.template.clone(),
        });
        let dlp = DlpPlan {
            outbound_detectors: if r.tunnel {
                vec![]
            } else {
                r.dlp.outbound_detectors.clone()
            },
            outbound_on_match: r.dlp.outbound_on_match,
        };
        let read_only: Vec<String> = manifest_read_methods();
        let mut push = |methods: Vec<String>, paths: Vec<PathRule>, allow_writes: bool| {
            let rid = route_id(&host);
            // Carries the bottle id, so one bottle's placeholder is refused in another.
            let placeholder = auth.as_ref().map(|_| format!("bb-placeholder-{id}-{rid}"));
            routes.push(RoutePlan {
                id: rid,
                host: host.clone(),
                ports: r.ports.clone(),
                methods,
                paths,
                auth: auth.clone(),
                placeholder,
                tunnel: r.tunnel,
                gate_only: false,
                upgrade: r.upgrade,
                forge: is_forge,
                allow_writes,
                dlp: dlp.clone(),
                origin: origin.clone(),
            });
        };
        if r.matches.is_empty() {
            let methods = if is_forge { read_only.clone() } else { vec![] };
            push(methods, vec![], false);
        } else {
            for m in &r.matches {
                let methods = if m.methods.is_empty() && is_forge {
                    read_only.clone()
                } else {
                    m.methods.clone()
                };
                let paths = m
                    .paths
                    .iter()
                    .map(|p| PathRule {
                        kind: p.kind.as_str().to_string(),
                        value: p.value.clone(),
                    })
                    .collect();
                // Only a forge has writes to allow; elsewhere the key changes nothing.
                push(methods, paths, is_forge && m.allow_writes);
            }
        }
    }

    // Git remotes: git-gate reaches each upstream through a tunnel route that
    // egress serves on the gate network only (never on the agent's listener).
    let mut remotes = Vec::new();
    for rm in &bottle.remotes {
        let tunnel_id = format!("git-{}", rm.name);
        let host = rm.upstream.host.clone();
        let port = rm.upstream.port;
        routes.push(RoutePlan {
            id: tunnel_id.clone(),
            host: host.clone(),
            ports: vec![port],
            methods: vec![],
            paths: vec![],
            auth: None,
            placeholder: None,
            tunnel: true,
            gate_only: true,
            upgrade: false,
            forge: false,
            allow_writes: false,
            dlp: DlpPlan {
                outbound_detectors: vec![],
                outbound_on_match: OnMatch::Block,
            },
            origin: format!("git-remote:{}", rm.name),
        });
        let present = rm.identity_file.is_file();
        if !present {
            warnings.push(format!(
                "{}: git.remotes `{}` IdentityFile {} does not exist",
                rm.origin.file.display(),
                rm.name,
                rm.identity_file.display()
            ));
        }
        let known_host = if port == 22 {
            host.clone()
        } else {
            format!("[{host}]:{port}")
        };
        remotes.push(RemotePlan {
            name: rm.name.clone(),
            upstream: rm.upstream_url.clone(),
            host: host.clone(),
            port,
            identity_file: rm.identity_file.clone(),
            identity_file_present: present,
            known_host_key: format!(
                "{} {}",
                rm.known_host_key.key_type, rm.known_host_key.base64
            ),
            known_hosts_line: format!(
                "{known_host} {} {}",
                rm.known_host_key.key_type, rm.known_host_key.base64
            ),
            push_refs: rm.push_refs.clone(),
            protected_paths: rm.protected_paths.clone(),
            allow_fingerprints: rm.allow_fingerprints.clone(),
            gate_url: format!("git://git-gate/{}.git", rm.name),
            tunnel_route: tunnel_id,
        });
    }
    if !remotes.is_empty() {
        notes.push(
            "a push to a public upstream is still a channel for data the scanner cannot recognise \
             (encrypted or merely unusual content passes git-gate)"
                .to_string(),
        );
    }

    // Tokens, by name.
    let mut tokens: Vec<TokenPlan> = Vec::new();
    for r in &routes {
        if let Some(a) = &r.auth {
            match tokens.iter_mut().find(|t| t.var == a.token_ref) {
                Some(t) => t.routes.push(r.id.clone()),
                None => tokens.push(TokenPlan {
                    var: a.token_ref.clone(),
                    present: env_present(&a.token_ref),
                    routes: vec![r.id.clone()],
                    consumer: Role::CredProxy.as_str().to_string(),
                }),
            }
        }
    }
    for t in &tokens {
        if !t.present {
            warnings.push(format!(
                "token variable {} is not set in this environment (needed by route {})",
                t.var,
                t.routes.join(", ")
            ));
        }
    }

    let has_auth = !tokens.is_empty();
    let home_hash = home.hash();
    let mut labels = BTreeMap::new();
    labels.insert(LABEL_ID.to_string(), id.clone());
    labels.insert(LABEL_HOME.to_string(), home_hash.clone());

    // Agent.
    let provider = bottle.provider.as_ref();
    let template = provider.and_then(|p| p.template);
    let (image_source, default_image) =
        if let Some(df) = provider.and_then(|p| p.dockerfile.clone()) {
            let tag = crate::images::dockerfile_tag(&resolved.agent.name, &df)?;
            (ImageSource::Dockerfile { path: df }, tag)
        } else {
            let name = match template {
                Some(manifest::Template::Claude) => "agent-claude",
                Some(manifest::Template::Codex) => "agent-codex",
                None => "test-agent",
            };
            (
                ImageSource::Builtin {
                    name: name.to_string(),
                },
                planned_image(name, &mut warnings),
            )
        };
    let (agent_image, agent_image_source) = match std::env::var(IMAGE_ENV) {
        Ok(img) if !img.is_empty() => (img.clone(), ImageSource::Override { image: img }),
        _ => (default_image, image_source),
    };

    let egress_url = format!(
        "http://{}:{}",
        Role::Egress.alias(),
        Role::Egress.port().unwrap_or(3128)
    );
    let mut no_proxy = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    if has_git {
        no_proxy.insert(0, Role::GitGate.alias().to_string());
    }
    if bottle.supervise {
        no_proxy.insert(0, Role::Supervise.alias().to_string());
    }
    let mut agent_env = vec![
        lit("HTTP_PROXY", &egress_url),
        lit("HTTPS_PROXY", &egress_url),
        lit("http_proxy", &egress_url),
        lit("https_proxy", &egress_url),
        lit("NO_PROXY", no_proxy.join(",")),
        lit("no_proxy", no_proxy.join(",")),
        lit("NODE_EXTRA_CA_CERTS", AGENT_CA_FILE),
        lit("SSL_CERT_FILE", AGENT_CA_BUNDLE),
        lit("REQUESTS_CA_BUNDLE", AGENT_CA_BUNDLE),
        lit("GIT_SSL_CAINFO", AGENT_CA_BUNDLE),
        EnvVar {
            name: CANARY_ENV.into(),
            value: EnvValue::Generated {
                kind: "canary".into(),
            },
        },
    ];
    if let Some(t) = template {
        for (k, v) in manifest::template_agent_env(t) {
            agent_env.push(lit(k, v));
        }
    }
    // Placeholders where the agent's tools look for their tokens.
    for r in &routes {
        if let (Some(a), Some(ph)) = (&r.auth, &r.placeholder) {
            let var = match (template, r.origin.starts_with("template:")) {
                (Some(t), true) => manifest::agent_token_var(t, &a.token_ref).to_string(),
                _ => a.token_ref.clone(),
            };
            if !agent_env.iter().any(|e| e.name == var) {
                agent_env.push(lit(&var, ph.clone()));
            }
        }
    }
    for (name, e) in &bottle.env {
        agent_env.retain(|x| &x.name != name);
        match &e.spec {
            EnvSpec::Literal(v) => agent_env.push(lit(name, v.clone())),
            EnvSpec::Forward(var) => {
                if !env_present(var) {
                    warnings.push(format!(
                        "{}: env.{name} forwards ${{{var}}}, which is not set in this environment",
                        e.origin.file.display()
                    ));
                }
                agent_env.push(EnvVar {
                    name: name.clone(),
                    value: EnvValue::Host { var: var.clone() },
                });
            }
        }
    }
    let mut extra_hosts = BTreeMap::new();
    extra_hosts.insert(
        Role::Egress.alias().to_string(),
        addr(Role::Egress, NetworkRole::Internal),
    );
    if has_git {
        extra_hosts.insert(
            Role::GitGate.alias().to_string(),
            addr(Role::GitGate, NetworkRole::Internal),
        );
    }
    if bottle.supervise {
        extra_hosts.insert(
            Role::Supervise.alias().to_string(),
            addr(Role::Supervise, NetworkRole::Internal),
        );
    }
    let agent_container = AgentPlan {
        container_name: format!("bb-{id}-agent"),
        image: agent_image,
        image_source: agent_image_source,
        provider: template.map(|t| t.as_str().to_string()),
        address: addr(Role::Agent, NetworkRole::Internal),
        network: networks[0].name.clone(),
        extra_hosts,
        env: agent_env,
        system_prompt: resolved.agent.prompt.clone(),
        skills: resolved.skills(),
        command: opts.command.clone(),
        copy_cwd: opts.cwd.clone(),
        workdir: "/workspace".into(),
        user: "1000:1000".into(),
    };
    for skill in &agent_container.skills {
        let dir = crate::home::expand_tilde(&format!("~/.claude/skills/{skill}"));
        match std::fs::symlink_metadata(&dir) {
            Ok(m) if m.file_type().is_symlink() => warnings.push(format!(
                "skill `{skill}`: {} is a symbolic link, which bot-bottle never follows",
                dir.display()
            )),
            Ok(m) if m.is_dir() => {}
            _ => warnings.push(format!("skill `{skill}`: {} does not exist", dir.display())),
        }
    }
    if let Some(c) = &opts.cwd {
        if !c.is_dir() {
            warnings.push(format!("--cwd {} is not a directory", c.display()));
        }
    }

    // Sidecars.
    let mut roles = vec![Role::Egress];
    if has_auth {
        roles.push(Role::CredProxy);
    }
    if has_git {
        roles.push(Role::GitGate);
    }
    if bottle.supervise {
        roles.push(Role::Supervise);
    }
    for (role, _) in &overrides {
        if !roles.contains(role) {
            return Err(Error::SidecarImage {
                value: format!("{role}=…"),
                reason: format!(
                    "this bottle has no {role} sidecar (it runs: {})",
                    roles
                        .iter()
                        .map(|r| r.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
    }
    let mut sidecars = Vec::new();
    for role in roles {
        let wanted: &[NetworkRole] = match role {
            Role::Egress => &NetworkRole::ALL,
            Role::CredProxy => &[NetworkRole::Broker, NetworkRole::Egress],
            Role::GitGate => &[NetworkRole::Internal, NetworkRole::Gate],
            _ => &[NetworkRole::Internal],
        };
        // Only networks this bottle has (no gate network without git remotes).
        let nets: Vec<NetworkRole> = wanted
            .iter()
            .copied()
            .filter(|w| networks.iter().any(|n| n.role == *w))
            .collect();
        let bin = role.binary().expect("sidecar role");
        let (image, image_source) = match overrides.iter().find(|(r, _)| *r == role) {
            Some((_, img)) => (img.clone(), ImageSource::Override { image: img.clone() }),
            None => (
                planned_image(bin, &mut warnings),
                ImageSource::Builtin {
                    name: bin.to_string(),
                },
            ),
        };
        let mut env = Vec::new();
        let mut files = BTreeMap::new();
        match role {
            Role::Egress => {
                if has_auth {
                    env.push(EnvVar {
                        name: BROKER_KEY_ENV.into(),
                        value: EnvValue::Generated {
                            kind: "broker-key".into(),
                        },
                    });
                }
                files.insert(
                    "ca.pem".into(),
                    "bottle CA certificate (generated at start)".into(),
                );
                files.insert(
                    "ca.key".into(),
                    "bottle CA private key (generated at start; only egress has it)".into(),
                );
                files.insert(
                    "known-secrets".into(),
                    "the canary and the agent's forwarded env values, one a line (at start; never a real token)".into(),
                );
            }
            Role::CredProxy => {
                env.push(EnvVar {
                    name: BROKER_KEY_ENV.into(),
                    value: EnvValue::Generated {
                        kind: "broker-key".into(),
                    },
                });
                for t in &tokens {
                    env.push(EnvVar {
                        name: t.var.clone(),
                        value: EnvValue::Host { var: t.var.clone() },
                    });
                }
            }
            Role::GitGate => {
                for r in &remotes {
                    files.insert(
                        format!("id_{}", r.name),
                        format!("copy of {}", r.identity_file.display()),
                    );
                }
                files.insert(
                    "known-secrets".into(),
                    "the canary and the agent's forwarded env values, one a line (at start; never a real token)".into(),
                );
            }
            _ => {}
        }
        // Both dial upstreams over TLS: egress for plain routes, cred-proxy
        // for `auth` routes.
        if let (Role::Egress | Role::CredProxy, Some(ca)) = (role, &bottle.upstream_ca) {
            files.insert(UPSTREAM_CA_FILE.into(), format!("copy of {}", ca.display()));
        }
        sidecars.push(SidecarPlan {
            role,
            container_name: format!("bb-{id}-{}", role.as_str()),
            image,
            image_source,
            alias: role.alias().to_string(),
            port: role.port().expect("sidecar port"),
            addresses: nets.iter().map(|n| (*n, addr(role, *n))).collect(),
            // cred-proxy dials the address egress checked, so it must reach
            // the same attached networks (an internal API behind `auth`).
            attach_networks: if matches!(role, Role::Egress | Role::CredProxy) {
                bottle.attach_networks.clone()
            } else {
                vec![]
            },
            uid: role.uid(),
            config_file: format!("{bin}.toml"),
            config: String::new(),
            env,
            files,
        });
    }

    let runtime = RuntimePlan {
        agent_runtime: if opts.probe.runsc {
            "runsc".into()
        } else {
            "runc".into()
        },
        engine: match &opts.probe.unreachable {
            Some(why) => format!("unreachable: {why}"),
            None => "reachable".into(),
        },
        engine_version: opts.probe.version.clone(),
        gateway_isolation: opts.probe.gateway_isolation().into(),
    };
    if opts.probe.unreachable.is_some() {
        notes.push(
            "the Docker engine was not reachable: runtime and isolation mode are guesses".into(),
        );
    } else if !opts.probe.runsc {
        notes.push("the engine offers no runsc (gVisor): the agent runs under runc".into());
    }
    if routes
        .iter()
        .any(|r| r.tunnel && !r.origin.starts_with("git-remote:"))
    {
        notes.push("tunnel routes are not intercepted: no DLP and no path checks on them".into());
    }

    let mut manifests = vec![resolved.agent.file.clone()];
    manifests.extend(bottle.files.iter().cloned());
    let mut plan = Plan {
        format_version: PLAN_FORMAT_VERSION,
        state_dir: home.state_dir(&id),
        id,
        agent: resolved.agent.name.clone(),
        bottle: bottle.name.clone(),
        manifests,
        home: home.root.clone(),
        home_hash,
        labels,
        runtime,
        networks,
        agent_container,
        sidecars,
        routes,
        git: GitPlan {
            user_name: bottle.git_user_name.clone(),
            user_email: bottle.git_user_email.clone(),
            remotes,
        },
        tokens,
        supervise: bottle.supervise,
        ssrf_allow_cidrs: vec![],
        upstream_ca: bottle.upstream_ca.clone(),
        warnings,
        notes,
    };
    plan.attach_ssrf(&bottle.ssrf_allow_cidrs);
    crate::render::render_into(&mut plan, None)?;
    Ok(plan)
}

fn manifest_read_methods() -> Vec<String> {
    ["GET", "HEAD", "OPTIONS"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn planned_image(name: &str, warnings: &mut Vec<String>) -> String {
    match crate::images::planned_tag(name) {
        Ok(tag) => tag,
        Err(e) => {
            warnings.push(format!("image {name}: {e}"));
            format!("{}{name}:unbuilt", crate::images::IMAGE_PREFIX)
        }
    }
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

impl Plan {
    fn attach_ssrf(&mut self, cidrs: &[ipnet::IpNet]) {
        self.ssrf_allow_cidrs = cidrs.iter().map(|c| c.to_string()).collect();
    }
}
