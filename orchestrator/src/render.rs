//! Sidecar configuration files rendered from a [`Plan`], through each sidecar
//! crate's own `Config` type (one source of truth per schema): the text is
//! parsed back with that type, so a config the sidecar would refuse never
//! leaves the orchestrator. Never a token value in a config: tokens are
//! referenced by variable name, per-bottle secrets arrive as files or env.

use std::path::PathBuf;

use serde::Serialize;

use crate::error::Error;
use crate::plan::{NetworkRole, Plan, Role};

/// Per-bottle values generated at bring-up that a config must carry.
#[derive(Debug, Clone)]
pub struct RenderSecrets {
    pub canary: String,
}

/// Shown in `--dry-run` where the real value is generated at start.
pub const CANARY_PLACEHOLDER: &str = "<generated at start>";

/// Paths inside the sidecar containers.
pub const CONFIG_DIR: &str = "/config";
pub const HOLDS_DIR: &str = "/holds";
pub const GIT_GATE_STATE_DIR: &str = "/var/lib/git-gate";
pub const SUPERVISE_STATE_DIR: &str = "/state";

fn cfg(name: &str) -> PathBuf {
    PathBuf::from(CONFIG_DIR).join(name)
}

/// Where egress and cred-proxy find the bottle's `egress.upstream_ca` copy.
fn upstream_ca(plan: &Plan) -> Option<PathBuf> {
    plan.upstream_ca
        .as_ref()
        .map(|_| cfg(crate::plan::UPSTREAM_CA_FILE))
}

/// Render every sidecar's config into `plan.sidecars[].config`.
pub fn render_into(plan: &mut Plan, secrets: Option<&RenderSecrets>) -> Result<(), Error> {
    let texts: Vec<(Role, String)> = plan
        .sidecars
        .iter()
        .map(|s| Ok((s.role, render(plan, s.role, secrets)?)))
        .collect::<Result<_, Error>>()?;
    for (role, text) in texts {
        if let Some(s) = plan.sidecars.iter_mut().find(|s| s.role == role) {
            s.config = text;
        }
    }
    Ok(())
}

fn addr(plan: &Plan, role: Role, net: NetworkRole) -> Option<std::net::Ipv4Addr> {
    plan.sidecar(role)
        .and_then(|s| s.addresses.get(&net).copied())
}

/// `ip:port` of `role` on `net` (its port from the roles table), if it is there.
fn socket(plan: &Plan, role: Role, net: NetworkRole) -> Option<String> {
    let port = role.port()?;
    addr(plan, role, net).map(|a| format!("{a}:{port}"))
}

/// Where `role` listens: its address on `net`, or every address.
fn listen(plan: &Plan, role: Role, net: NetworkRole) -> String {
    socket(plan, role, net).unwrap_or_else(|| format!("0.0.0.0:{}", role.port().unwrap_or(0)))
}

fn invalid(role: Role, e: impl std::fmt::Display) -> Error {
    Error::Render {
        role: role.as_str().to_string(),
        detail: e.to_string(),
    }
}

/// The TOML of one sidecar.
pub fn render(plan: &Plan, role: Role, secrets: Option<&RenderSecrets>) -> Result<String, Error> {
    match role {
        Role::Egress => render_egress(plan, secrets),
        Role::CredProxy => render_cred_proxy(plan),
        Role::GitGate => render_git_gate(plan),
        Role::Supervise => render_supervise(plan),
        Role::Agent => Ok(String::new()),
    }
}

fn render_egress(plan: &Plan, secrets: Option<&RenderSecrets>) -> Result<String, Error> {
    use contract::egress::{
        AuthConfig, Detectors, DlpConfig, EgressConfig, OnMatch, RouteConfig, RouteDlpConfig,
    };
    let listen = listen(plan, Role::Egress, NetworkRole::Internal);
    // git-gate's tunnels are served on egress's gate address alone.
    let gate_listen = socket(plan, Role::Egress, NetworkRole::Gate);
    let cred_proxy = socket(plan, Role::CredProxy, NetworkRole::Broker);
    let mut needs_holds = false;
    let routes = plan
        .routes
        .iter()
        .map(|r| {
            let dlp = if r.tunnel {
                None
            } else if r.dlp.outbound_detectors.is_empty() {
                Some(RouteDlpConfig {
                    outbound_detectors: Detectors::Enabled(false),
                    ..RouteDlpConfig::default()
                })
            } else {
                needs_holds |= r.dlp.outbound_on_match == OnMatch::Supervise;
                Some(RouteDlpConfig {
                    outbound_detectors: Detectors::List(r.dlp.outbound_detectors.clone()),
                    outbound_on_match: r.dlp.outbound_on_match,
                    ..RouteDlpConfig::default()
                })
            };
            RouteConfig {
                id: r.id.clone(),
                host: r.host.clone(),
                ports: r.ports.clone(),
                methods: r.methods.clone(),
                paths: r.paths.iter().map(|p| p.value.clone()).collect(),
                auth: r.auth.as_ref().map(|a| AuthConfig {
                    scheme: a.scheme,
                    token_ref: Some(a.token_ref.clone()),
                    header: a.header.clone(),
                }),
                placeholder: r.placeholder.clone(),
                tunnel: r.tunnel,
                gate_only: r.gate_only,
                upgrade: r.upgrade,
                forge: r.forge,
                allow_writes: r.allow_writes,
                dlp,
            }
        })
        .collect();
    let c = EgressConfig {
        listen,
        gate_listen,
        bottle_id: Some(plan.id.clone()),
        ca_cert: cfg("ca.pem"),
        ca_key: cfg("ca.key"),
        audit_log: format!("{}/{}", crate::plan::AUDIT_DIR, crate::plan::AUDIT_FILE),
        audit_max_bytes: None,
        audit_keep: None,
        upstream_ca: upstream_ca(plan),
        ssrf_allow_cidrs: plan.ssrf_allow_cidrs.clone(),
        cred_proxy,
        holds_dir: needs_holds.then(|| PathBuf::from(HOLDS_DIR)),
        hold_timeout_secs: None,
        supervise: plan.supervise,
        dlp: DlpConfig {
            known_secrets_file: Some(cfg("known-secrets")),
            canary: Some(
                secrets
                    .map(|s| s.canary.clone())
                    .unwrap_or_else(|| CANARY_PLACEHOLDER.into()),
            ),
            ..DlpConfig::default()
        },
        routes,
        resolves: vec![],
    };
    let text = c.to_toml_string();
    // Parse back and validate with egress's own rules.
    EgressConfig::from_toml_str(&text, &cfg("egress.toml"))
        .and_then(|c| c.validate())
        .map_err(|e| invalid(Role::Egress, e))?;
    Ok(text)
}

fn render_cred_proxy(plan: &Plan) -> Result<String, Error> {
    use contract::cred_proxy::{Config, RawRoute, Route};
    let listen = listen(plan, Role::CredProxy, NetworkRole::Broker);
    let mut routes = Vec::new();
    for r in plan.routes.iter().filter(|r| r.auth.is_some()) {
        let a = r.auth.as_ref().expect("filtered");
        let raw = RawRoute {
            id: r.id.clone(),
            host: r.host.clone(),
            scheme: a.scheme,
            header: a.header.clone(),
            template: a.template.clone(),
            token_ref: Some(a.token_ref.clone()),
            token_file: None,
        };
        routes.push(Route::try_from(raw).map_err(|e| invalid(Role::CredProxy, e))?);
    }
    let c = Config {
        listen: listen.parse().map_err(|e| invalid(Role::CredProxy, e))?,
        upstream_ca: upstream_ca(plan),
        routes,
    };
    let text = c.to_toml();
    Config::from_toml_str(&text, &cfg("cred-proxy.toml"))
        .map_err(|e| invalid(Role::CredProxy, e))?;
    Ok(text)
}

fn render_git_gate(plan: &Plan) -> Result<String, Error> {
    #[derive(Serialize)]
    struct Remote<'a> {
        name: &'a str,
        upstream: &'a str,
        identity_file: PathBuf,
        known_host_key: &'a str,
        push_refs: &'a [String],
        protected_paths: &'a [String],
        allow_fingerprints: &'a [String],
    }
    #[derive(Serialize)]
    struct File<'a> {
        listen: String,
        state_dir: &'a str,
        rules: &'a str,
        known_secrets_file: PathBuf,
        upstream_proxy: String,
        remote: Vec<Remote<'a>>,
    }
    let listen = listen(plan, Role::GitGate, NetworkRole::Internal);
    // Egress's gate listener: the only place the remotes' tunnels exist.
    let proxy = socket(plan, Role::Egress, NetworkRole::Gate)
        .ok_or_else(|| invalid(Role::GitGate, "egress has no address on the gate network"))?;
    let f = File {
        listen,
        state_dir: GIT_GATE_STATE_DIR,
        rules: "builtin",
        known_secrets_file: cfg("known-secrets"),
        upstream_proxy: proxy,
        remote: plan
            .git
            .remotes
            .iter()
            .map(|r| Remote {
                name: &r.name,
                upstream: &r.upstream,
                identity_file: cfg(&format!("id_{}", r.name)),
                known_host_key: &r.known_host_key,
                push_refs: &r.push_refs,
                protected_paths: &r.protected_paths,
                allow_fingerprints: &r.allow_fingerprints,
            })
            .collect(),
    };
    let draft = toml::to_string_pretty(&f).map_err(|e| invalid(Role::GitGate, e))?;
    // Through git-gate's own type: refused values fail here, and the text is its canonical form.
    let c: contract::git_gate::Config =
        toml::from_str(&draft).map_err(|e| invalid(Role::GitGate, e))?;
    toml::to_string_pretty(&c).map_err(|e| invalid(Role::GitGate, e))
}

/// supervise-mcp has no config type in the tree yet: this is the shape its
/// engineer was given (listen, bottle id, the state dirs it may touch).
fn render_supervise(plan: &Plan) -> Result<String, Error> {
    #[derive(Serialize)]
    struct File<'a> {
        listen: String,
        bottle_id: &'a str,
        proposals_dir: String,
        decisions_dir: String,
    }
    let listen = listen(plan, Role::Supervise, NetworkRole::Internal);
    let f = File {
        listen,
        bottle_id: &plan.id,
        proposals_dir: format!("{SUPERVISE_STATE_DIR}/proposals"),
        decisions_dir: format!("{SUPERVISE_STATE_DIR}/decisions"),
    };
    toml::to_string_pretty(&f).map_err(|e| invalid(Role::Supervise, e))
}
