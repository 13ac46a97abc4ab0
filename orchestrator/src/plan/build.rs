//! Building a plan from the manifests, one section at a time. The order of
//! the sections is the order of the plan's warnings and notes, and of the
//! errors a bad manifest or option meets first.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

use contract::egress::OnMatch;

mod agent;
pub use agent::proxy_and_trust;
mod sidecars;

use super::{
    env_present, new_id, parse_sidecar_images, subnets_for, AuthPlan, DlpPlan, EngineProbe,
    GitPlan, NetworkPlan, NetworkRole, PathRule, Plan, PlanOptions, RemotePlan, Role, RoutePlan,
    RuntimePlan, TokenPlan, LABEL_HOME, LABEL_ID, PLAN_FORMAT_VERSION,
};
use crate::error::Error;
use crate::home::Home;
use crate::manifest::{self, Bottle, Remote, Resolved, Route};

/// Resolve the plan of a bottle for `resolved` (agent + bottle). Reads the
/// manifests' referenced files' existence and the environment's variable
/// NAMES; creates nothing.
pub fn build(home: &Home, resolved: &Resolved, opts: &PlanOptions) -> Result<Plan, Error> {
    let id = opts
        .id
        .clone()
        .unwrap_or_else(|| new_id(&resolved.agent.name));
    let mut b = Builder::new(id, &resolved.bottle);
    b.check_upstream_ca();
    let overrides = parse_sidecar_images(&opts.sidecar_images)?;

    let networks = b.networks();
    let mut routes = b.manifest_routes();
    let remotes = b.git_remotes(&mut routes);
    let tokens = b.tokens(&routes);
    let agent_container = b.agent(resolved, opts, &networks, &routes)?;
    let sidecars = b.sidecars(&overrides, &networks, &tokens, &remotes)?;
    let runtime = b.runtime(&opts.probe, &routes);

    let bottle = b.bottle;
    let home_hash = home.hash();
    let mut labels = BTreeMap::new();
    labels.insert(LABEL_ID.to_string(), b.id.clone());
    labels.insert(LABEL_HOME.to_string(), home_hash.clone());
    let mut manifests = vec![resolved.agent.file.clone()];
    manifests.extend(bottle.files.iter().cloned());
    let mut plan = Plan {
        format_version: PLAN_FORMAT_VERSION,
        state_dir: home.state_dir(&b.id),
        id: b.id,
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
        warnings: b.warnings,
        notes: b.notes,
    };
    plan.attach_ssrf(&bottle.ssrf_allow_cidrs);
    crate::render::render_into(&mut plan, None)?;
    Ok(plan)
}

/// What every section reads (the bottle, its id and subnets) or adds to (the
/// plan's warnings and notes).
struct Builder<'a> {
    id: String,
    bottle: &'a Bottle,
    /// Internal, broker, egress, gate: as `subnets_for` returns them.
    subnets: [Ipv4Net; 4],
    has_git: bool,
    warnings: Vec<String>,
    notes: Vec<String>,
}

impl<'a> Builder<'a> {
    fn new(id: String, bottle: &'a Bottle) -> Self {
        Builder {
            subnets: subnets_for(&id),
            id,
            bottle,
            has_git: !bottle.remotes.is_empty(),
            warnings: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn subnet(&self, net: NetworkRole) -> Ipv4Net {
        let [internal, broker, egress, gate] = self.subnets;
        match net {
            NetworkRole::Internal => internal,
            NetworkRole::Broker => broker,
            NetworkRole::Egress => egress,
            NetworkRole::Gate => gate,
        }
    }

    /// The fixed address of `role` on `net`.
    fn addr(&self, role: Role, net: NetworkRole) -> Ipv4Addr {
        host_in(&self.subnet(net), role.host_octet())
    }

    fn check_upstream_ca(&mut self) {
        if let Some(ca) = &self.bottle.upstream_ca {
            if !ca.is_file() {
                self.warnings.push(format!(
                    "{}: egress.upstream_ca {} does not exist",
                    self.bottle
                        .files
                        .first()
                        .map(|f| f.display().to_string())
                        .unwrap_or_default(),
                    ca.display()
                ));
            }
        }
    }

    /// The gate network only where git-gate runs.
    fn networks(&self) -> Vec<NetworkPlan> {
        NetworkRole::ALL
            .into_iter()
            .filter(|role| *role != NetworkRole::Gate || self.has_git)
            .map(|role| {
                let subnet = self.subnet(role);
                NetworkPlan {
                    role,
                    name: format!("bb-{}-{}", self.id, role.as_str()),
                    subnet,
                    gateway: host_in(&subnet, 1),
                    // The egress network is the way out.
                    internal: role != NetworkRole::Egress,
                }
            })
            .collect()
    }

    /// Each match of a manifest route becomes its own egress route.
    fn manifest_routes(&self) -> Vec<RoutePlan> {
        let mut used_ids = Vec::new();
        let mut routes = Vec::new();
        for r in &self.bottle.routes {
            self.expand_route(r, &mut used_ids, &mut routes);
        }
        routes
    }

    fn expand_route(&self, r: &Route, used_ids: &mut Vec<String>, routes: &mut Vec<RoutePlan>) {
        let host = r.host.to_string();
        // Validation refuses tunnels to a forge; git-gate's own tunnels come
        // with the git remotes.
        let is_forge = !r.tunnel
            && self
                .bottle
                .remotes
                .iter()
                .any(|rm| manifest::reaches_forge(&r.host, &rm.upstream.host));
        let auth = r.auth.as_ref().map(|a| AuthPlan {
            scheme: a.scheme,
            token_ref: a.token_ref.clone(),
            header: a.header.clone(),
            template: a.template.clone(),
        });
        let mut push = |methods: Vec<String>, paths: Vec<PathRule>, allow_writes: bool| {
            let rid = fresh_route_id(&host, used_ids);
            // Carries the bottle id, so one bottle's placeholder is refused in another.
            let placeholder = auth
                .as_ref()
                .map(|_| format!("bb-placeholder-{}-{rid}", self.id));
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
                dlp: DlpPlan {
                    outbound_detectors: if r.tunnel {
                        vec![]
                    } else {
                        r.dlp.outbound_detectors.clone()
                    },
                    outbound_on_match: r.dlp.outbound_on_match,
                },
                origin: match r.template {
                    Some(t) => format!("template:{}", t.as_str()),
                    None => format!("bottle:{}", r.origin.file.display()),
                },
            });
        };
        if r.matches.is_empty() {
            let methods = if is_forge { read_methods() } else { vec![] };
            push(methods, vec![], false);
        }
        for m in &r.matches {
            let methods = if m.methods.is_empty() && is_forge {
                read_methods()
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

    /// git-gate reaches each upstream through a tunnel route that egress
    /// serves on the gate network only (never on the agent's listener).
    fn git_remotes(&mut self, routes: &mut Vec<RoutePlan>) -> Vec<RemotePlan> {
        let mut remotes = Vec::new();
        for rm in &self.bottle.remotes {
            let tunnel = tunnel_route(rm);
            let present = rm.identity_file.is_file();
            if !present {
                self.warnings.push(format!(
                    "{}: git.remotes `{}` IdentityFile {} does not exist",
                    rm.origin.file.display(),
                    rm.name,
                    rm.identity_file.display()
                ));
            }
            remotes.push(remote_plan(rm, present, &tunnel.id));
            routes.push(tunnel);
        }
        if !remotes.is_empty() {
            self.notes.push(
                "a push to a public upstream is still a channel for data the scanner cannot \
                 recognise (encrypted or merely unusual content passes git-gate)"
                    .to_string(),
            );
        }
        remotes
    }

    /// Tokens by name, each with the routes it authenticates.
    fn tokens(&mut self, routes: &[RoutePlan]) -> Vec<TokenPlan> {
        let mut tokens: Vec<TokenPlan> = Vec::new();
        for r in routes {
            let Some(a) = &r.auth else { continue };
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
        for t in tokens.iter().filter(|t| !t.present) {
            self.warnings.push(format!(
                "token variable {} is not set in this environment (needed by route {})",
                t.var,
                t.routes.join(", ")
            ));
        }
        tokens
    }

    fn runtime(&mut self, probe: &EngineProbe, routes: &[RoutePlan]) -> RuntimePlan {
        if probe.unreachable.is_some() {
            self.notes.push(
                "the Docker engine was not reachable: runtime and isolation mode are guesses"
                    .into(),
            );
        } else if !probe.runsc {
            self.notes
                .push("the engine offers no runsc (gVisor): the agent runs under runc".into());
        }
        if routes
            .iter()
            .any(|r| r.tunnel && !r.origin.starts_with("git-remote:"))
        {
            self.notes.push(
                "tunnel routes are not intercepted: no DLP and no path checks on them".into(),
            );
        }
        RuntimePlan {
            agent_runtime: if probe.runsc { "runsc" } else { "runc" }.into(),
            engine: match &probe.unreachable {
                Some(why) => format!("unreachable: {why}"),
                None => "reachable".into(),
            },
            engine_version: probe.version.clone(),
            gateway_isolation: probe.gateway_isolation().into(),
        }
    }
}

/// A route id from the host, unique in the plan.
fn fresh_route_id(host: &str, used: &mut Vec<String>) -> String {
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
        if !used.contains(&cand) {
            used.push(cand.clone());
            return cand;
        }
        n += 1;
    }
}

fn tunnel_route(rm: &Remote) -> RoutePlan {
    RoutePlan {
        id: format!("git-{}", rm.name),
        host: rm.upstream.host.clone(),
        ports: vec![rm.upstream.port],
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
    }
}

fn remote_plan(rm: &Remote, identity_file_present: bool, tunnel_route: &str) -> RemotePlan {
    let host = &rm.upstream.host;
    let port = rm.upstream.port;
    let known_host = if port == 22 {
        host.clone()
    } else {
        format!("[{host}]:{port}")
    };
    let key = format!(
        "{} {}",
        rm.known_host_key.key_type, rm.known_host_key.base64
    );
    RemotePlan {
        name: rm.name.clone(),
        upstream: rm.upstream_url.clone(),
        host: host.clone(),
        port,
        identity_file: rm.identity_file.clone(),
        identity_file_present,
        known_hosts_line: format!("{known_host} {key}"),
        known_host_key: key,
        push_refs: rm.push_refs.clone(),
        protected_paths: rm.protected_paths.clone(),
        allow_fingerprints: rm.allow_fingerprints.clone(),
        gate_url: format!("git://git-gate/{}.git", rm.name),
        tunnel_route: tunnel_route.to_string(),
    }
}

fn host_in(net: &Ipv4Net, octet: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()) + octet as u32)
}

/// What a forge route allows when its manifest names no methods.
fn read_methods() -> Vec<String> {
    ["GET", "HEAD", "OPTIONS"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// The tag `images build` gives `name`; a placeholder and a warning when it
/// cannot be planned (e.g. a missing binary).
fn planned_image(name: &str, warnings: &mut Vec<String>) -> String {
    match crate::images::planned_tag(name) {
        Ok(tag) => tag,
        Err(e) => {
            warnings.push(format!("image {name}: {e}"));
            format!("{}{name}:unbuilt", crate::images::IMAGE_PREFIX)
        }
    }
}

impl Plan {
    fn attach_ssrf(&mut self, cidrs: &[ipnet::IpNet]) {
        self.ssrf_allow_cidrs = cidrs.iter().map(|c| c.to_string()).collect();
    }
}
