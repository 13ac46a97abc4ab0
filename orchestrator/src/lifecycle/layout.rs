//! From plan to layout: the services, networks, files and env a bottle's
//! bring-up creates, and the upgrade of a layout an earlier release saved.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::OnceLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::*;
use crate::backend::{
    standard_connections, BottleLayout, Domain, DomainInfo, EnvValue, FileSpec, Readiness, Role,
    ServiceSpec,
};
use crate::plan::{self, NetworkRole, Plan};
use crate::provision::Secrets;

// ---------------------------------------------------------------------------
// Plan -> layout

/// Placeholder for "address of ROLE on NETWORK", replaced at each bring-up
/// (subnets are allocated then, so parallel bottles never collide).
pub(super) fn addr_token(net: &str, role: Role) -> String {
    format!("@@bb-addr:{net}:{}@@", role.as_str())
}

pub(super) fn addr_token_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| Regex::new(r"@@bb-addr:([a-z0-9_.-]+):([a-z-]+)@@").expect("literal regex"))
}

pub(super) fn ipv4_re() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"(^|[^0-9.])((?:[0-9]{1,3}\.){3}[0-9]{1,3})($|[^0-9])").expect("literal regex")
    })
}

/// Replaces the planned fixed addresses in `text` by placeholders.
pub(super) fn templatize(text: &str, planned: &BTreeMap<Ipv4Addr, String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    // Iterate manually: matches share their boundary characters.
    let mut pos = 0;
    while let Some(c) = ipv4_re().captures_at(text, pos) {
        let m = c.get(2).expect("group 2");
        if let Some(tok) = m
            .as_str()
            .parse::<Ipv4Addr>()
            .ok()
            .and_then(|ip| planned.get(&ip))
        {
            out.push_str(&text[last..m.start()]);
            out.push_str(tok);
            last = m.end();
        }
        pos = m.end();
    }
    out.push_str(&text[last..]);
    out
}

/// Replaces placeholders by the addresses of this bring-up.
pub(super) fn render_addresses(text: &str, domains: &[DomainInfo]) -> String {
    addr_token_re()
        .replace_all(text, |c: &regex::Captures<'_>| {
            let net = &c[1];
            let role = Role::parse(&c[2]);
            domains
                .iter()
                .find(|d| d.domain.as_str() == net)
                .and_then(|d| d.address_of(role?))
                .map(|ip| ip.to_string())
                .unwrap_or_else(|| c[0].to_string())
        })
        .into_owned()
}

pub(super) fn domain_of(n: NetworkRole) -> Domain {
    match n {
        NetworkRole::Internal => Domain::Internal,
        NetworkRole::Broker => Domain::Broker,
        NetworkRole::Egress => Domain::Egress,
        NetworkRole::Gate => Domain::Gate,
    }
}

pub(super) fn env_value(v: &plan::EnvValue) -> EnvValue {
    match v {
        plan::EnvValue::Literal { value } => EnvValue::Literal(value.clone()),
        plan::EnvValue::Host { var } => EnvValue::FromHost(var.clone()),
        plan::EnvValue::Generated { kind } => EnvValue::StateSecret(kind.clone()),
    }
}

/// Scratch directories a sidecar writes on its read-only root (tmpfs, owned
/// by its user): nothing there must outlive the container.
pub(super) fn writable_dirs(role: Role) -> Vec<String> {
    let mut dirs = vec!["/tmp".to_string()];
    match role {
        Role::Egress => dirs.push(crate::render::HOLDS_DIR.into()),
        Role::GitGate => {
            dirs.push(crate::render::GIT_GATE_STATE_DIR.into());
            dirs.push("/home/git-gate".into());
        }
        Role::Supervise => dirs.push(crate::render::SUPERVISE_STATE_DIR.into()),
        _ => {}
    }
    dirs
}

/// Provisioning the agent needs after it starts (kept for `resume`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AgentSetup {
    pub home: String,
    pub user: String,
    pub workdir: String,
    pub provider: Option<String>,
    pub prompt: String,
    /// Skill name -> host directory.
    pub skills: BTreeMap<String, PathBuf>,
    pub git_user: Option<String>,
    pub git_email: Option<String>,
    /// (name, upstream, gate url)
    pub remotes: Vec<(String, String, String)>,
    pub supervise: bool,
}

/// A container's CPU cap, in billionths of a core: the agent builds and
/// tests code (two cores, or all the engine has when fewer); egress scans
/// bodies on a pool of blocking threads and git-gate scans pushes (a core
/// each); the others are small.
pub(super) fn cpu_cap(role: Role) -> i64 {
    match role {
        Role::Agent => 2_000_000_000,
        Role::Egress | Role::GitGate => 1_000_000_000,
        _ => 500_000_000,
    }
}

/// Turns the foundation's plan into what the backend brings up.
pub fn layout_from_plan(
    plan: &Plan,
    secrets: &Secrets,
) -> Result<(BottleLayout, AgentSetup), Error> {
    // Render again with this bottle's values (the dry-run shows placeholders).
    let mut plan = plan.clone();
    crate::render::render_into(
        &mut plan,
        Some(&crate::render::RenderSecrets {
            canary: secrets.canary.clone(),
        }),
    )?;
    let plan = &plan;
    let planned = planned_addresses(plan);
    let inputs = SidecarInputs::of(plan, secrets);
    let mut services = plan
        .sidecars
        .iter()
        .map(|s| sidecar_service(s, &inputs, &planned))
        .collect::<Result<Vec<_>, Error>>()?;
    let roles: Vec<Role> = std::iter::once(Role::Agent)
        .chain(plan.sidecars.iter().map(|s| s.role))
        .collect();
    services.push(agent_service(plan, &roles, &planned));
    let layout = BottleLayout {
        id: plan.id.clone(),
        preferred_ranges: plan
            .networks
            .iter()
            .map(|n| (domain_of(n.role).as_str().to_string(), n.subnet.to_string()))
            .collect(),
        connections: standard_connections(&roles),
        services,
    };
    Ok((layout, agent_setup(plan)))
}

/// Every planned address, by the marker that stands for it in configs and env.
fn planned_addresses(plan: &Plan) -> BTreeMap<Ipv4Addr, String> {
    let mut planned: BTreeMap<Ipv4Addr, String> = BTreeMap::new();
    for s in &plan.sidecars {
        for (net, ip) in &s.addresses {
            planned.insert(*ip, addr_token(net.as_str(), s.role));
        }
    }
    planned.insert(
        plan.agent_container.address,
        addr_token("internal", Role::Agent),
    );
    planned
}

/// What the sidecars' files are made of, besides the plan.
struct SidecarInputs<'a> {
    secrets: &'a Secrets,
    /// What the agent itself holds and must not send out: the host variables
    /// forwarded into its environment (never the real tokens, which stay in
    /// cred-proxy).
    forwarded: Vec<String>,
    /// Operator files copied into sidecars, by the name they get there.
    host_files: BTreeMap<String, PathBuf>,
}

impl<'a> SidecarInputs<'a> {
    fn of(plan: &Plan, secrets: &'a Secrets) -> SidecarInputs<'a> {
        let forwarded = plan
            .agent_container
            .env
            .iter()
            .filter_map(|e| match &e.value {
                plan::EnvValue::Host { var } => Some(var.clone()),
                _ => None,
            })
            .collect();
        let host_files = plan
            .git
            .remotes
            .iter()
            .map(|r| (format!("id_{}", r.name), r.identity_file.clone()))
            .chain(
                plan.upstream_ca
                    .iter()
                    .map(|ca| (plan::UPSTREAM_CA_FILE.to_string(), ca.clone())),
            )
            .collect();
        SidecarInputs {
            secrets,
            forwarded,
            host_files,
        }
    }
}

/// One sidecar's container: read-only root, its config and files, capped.
fn sidecar_service(
    s: &plan::SidecarPlan,
    inputs: &SidecarInputs,
    planned: &BTreeMap<Ipv4Addr, String>,
) -> Result<ServiceSpec, Error> {
    let mut domains: Vec<Domain> = s.addresses.keys().map(|n| domain_of(*n)).collect();
    // The way-out network last: it is not the one the role is known by.
    domains.sort_by_key(|d| matches!(d, Domain::Egress));
    domains.extend(
        s.attach_networks
            .iter()
            .map(|n| Domain::Attached(n.clone())),
    );
    let mut files = vec![FileSpec {
        path: s.config_file.clone(),
        contents: templatize(&s.config, planned).into_bytes(),
        mode: 0o600,
    }];
    for (name, what) in &s.files {
        let Some(contents) = inputs
            .secrets
            .file_for(name, &inputs.forwarded, &inputs.host_files)
        else {
            return Err(Error::Invalid {
                what: format!("{}: don't know how to make /config/{name} ({what})", s.role),
            });
        };
        if name == "ca.key" && s.role != Role::Egress {
            return Err(Error::Invalid {
                what: format!("the CA key may only go to egress, not {}", s.role),
            });
        }
        files.push(FileSpec {
            path: name.clone(),
            contents,
            mode: 0o600,
        });
    }
    let env = s
        .env
        .iter()
        .map(|e| (e.name.clone(), templatized_env(&e.value, planned)))
        .collect();
    Ok(ServiceSpec {
        role: s.role,
        image: s.image.clone(),
        cmd: None,
        env,
        domains,
        files,
        init: s.role == Role::GitGate,
        read_only: true,
        tmpfs: writable_dirs(s.role),
        workspace: false,
        audit_dir: None,
        memory_bytes: 512 << 20,
        pids_limit: 512,
        nano_cpus: cpu_cap(s.role),
        readiness: Readiness::HealthCheck,
        sandboxed: false,
    })
}

fn templatized_env(v: &plan::EnvValue, planned: &BTreeMap<Ipv4Addr, String>) -> EnvValue {
    match env_value(v) {
        EnvValue::Literal(l) => EnvValue::Literal(templatize(&l, planned)),
        v => v,
    }
}

/// The agent's container: the internal network only, its workspace, the
/// proxy settings and the canary in its env whatever the plan lists.
fn agent_service(plan: &Plan, roles: &[Role], planned: &BTreeMap<Ipv4Addr, String>) -> ServiceSpec {
    let a = &plan.agent_container;
    let defaults = plan::proxy_and_trust(
        roles.contains(&Role::GitGate),
        roles.contains(&Role::Supervise),
    );
    let mut env: BTreeMap<String, EnvValue> = defaults
        .iter()
        .map(|e| (e.name.clone(), env_value(&e.value)))
        .collect();
    for e in &a.env {
        env.insert(e.name.clone(), templatized_env(&e.value, planned));
    }
    env.insert(
        plan::CANARY_ENV.into(),
        EnvValue::StateSecret("canary".into()),
    );
    ServiceSpec {
        role: Role::Agent,
        image: a.image.clone(),
        cmd: Some(vec!["sleep".into(), "infinity".into()]),
        env,
        domains: vec![Domain::Internal],
        files: Vec::new(),
        init: true,
        read_only: false,
        tmpfs: Vec::new(),
        workspace: true,
        audit_dir: None,
        memory_bytes: 4 << 30,
        pids_limit: 2048,
        nano_cpus: cpu_cap(Role::Agent),
        readiness: Readiness::Running,
        sandboxed: plan.runtime.agent_runtime == "runsc",
    }
}

/// What provisioning puts into the agent once it runs (kept for `resume`).
fn agent_setup(plan: &Plan) -> AgentSetup {
    let a = &plan.agent_container;
    let home = if a.user.is_empty() || a.user.starts_with("1000") {
        "/home/agent".to_string()
    } else {
        format!("/home/{}", a.user)
    };
    AgentSetup {
        home,
        user: if a.user.is_empty() {
            "1000:1000".into()
        } else {
            a.user.clone()
        },
        workdir: if a.workdir.is_empty() {
            "/workspace".into()
        } else {
            a.workdir.clone()
        },
        provider: a.provider.clone(),
        prompt: a.system_prompt.clone(),
        skills: a
            .skills
            .iter()
            .map(|s| {
                (
                    s.clone(),
                    crate::home::expand_tilde(&format!("~/.claude/skills/{s}")),
                )
            })
            .collect(),
        git_user: plan.git.user_name.clone(),
        git_email: plan.git.user_email.clone(),
        remotes: plan
            .git
            .remotes
            .iter()
            .map(|r| (r.name.clone(), r.upstream.clone(), r.gate_url.clone()))
            .collect(),
        supervise: plan.supervise,
    }
}

/// Refuses the layout of a bottle whose saved configuration an earlier release
/// wrote with a hole this one closes: bringing it back as saved would reopen it.
pub fn check_current(layout: &BottleLayout) -> Result<(), Error> {
    // Before the gate network, egress served the git remotes' ssh tunnels on
    // the agent's own listener (raw TCP to the forge, around the push scan).
    let gate_without_network = layout
        .service(Role::GitGate)
        .is_some_and(|g| !g.domains.contains(&Domain::Gate));
    if gate_without_network {
        return Err(Error::Outdated {
            id: layout.id.clone(),
            reason: "its egress serves the git remotes' ssh tunnels to the agent (fixed since \
                     git-gate has a network of its own)"
                .into(),
            volume: crate::docker::volume_name(&layout.id, Role::Agent, "workspace"),
        });
    }
    Ok(())
}

/// Brings the layout an earlier release saved up to this release's
/// guarantees (what cannot be is refused by [`check_current`]): its
/// `known-secrets` held the real token values (now the canary and the
/// agent's forwarded values only: egress and git-gate never hold a token),
/// and its containers had no CPU cap. A layout of this release is left as
/// it is.
pub fn upgrade_layout(layout: &mut BottleLayout, secrets: &Secrets) {
    let forwarded: Vec<String> = layout
        .service(Role::Agent)
        .map(|a| {
            a.env
                .values()
                .filter_map(|v| match v {
                    EnvValue::FromHost(var) => Some(var.clone()),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let known = secrets
        .file_for("known-secrets", &forwarded, &BTreeMap::new())
        .unwrap_or_default();
    for s in &mut layout.services {
        if s.nano_cpus == 0 {
            s.nano_cpus = cpu_cap(s.role);
        }
        for f in &mut s.files {
            if f.path == "known-secrets" {
                f.contents = known.clone();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn planned_addresses_become_this_bring_ups_addresses() {
        let mut planned = BTreeMap::new();
        planned.insert(
            "10.213.0.3".parse().unwrap(),
            addr_token("broker", Role::CredProxy),
        );
        let text = "cred_proxy = \"10.213.0.3:9099\"\nother = \"10.213.0.30\"\nssrf = [\"110.213.0.3/32\"]";
        let t = templatize(text, &planned);
        assert!(t.contains("@@bb-addr:broker:cred-proxy@@:9099"), "{t}");
        assert!(
            t.contains("10.213.0.30"),
            "a longer address is not a match: {t}"
        );
        assert!(t.contains("110.213.0.3/32"), "{t}");
        let domains = vec![DomainInfo {
            domain: Domain::Broker,
            name: "bb-x-broker".into(),
            base: Some("10.213.7.32".parse().unwrap()),
            cidr: Some("10.213.7.32/28".into()),
        }];
        let r = render_addresses(&t, &domains);
        assert!(r.contains("cred_proxy = \"10.213.7.35:9099\""), "{r}");
    }

    #[test]
    fn a_bottle_saved_before_the_gate_network_is_not_brought_back() {
        let service = |role: Role, domains: Vec<Domain>| ServiceSpec {
            role,
            image: "img".into(),
            cmd: None,
            env: BTreeMap::new(),
            domains,
            files: Vec::new(),
            init: false,
            read_only: true,
            tmpfs: Vec::new(),
            workspace: false,
            audit_dir: None,
            memory_bytes: 1 << 20,
            pids_limit: 16,
            nano_cpus: 1_000_000_000,
            readiness: Readiness::Running,
            sandboxed: false,
        };
        let mut layout = BottleLayout {
            id: "old-123456".into(),
            preferred_ranges: BTreeMap::new(),
            services: vec![
                service(Role::Egress, vec![Domain::Internal, Domain::Egress]),
                service(Role::GitGate, vec![Domain::Internal]),
            ],
            connections: Vec::new(),
        };
        let e = check_current(&layout).unwrap_err().to_string();
        assert!(
            e.contains("old-123456")
                && e.contains("bb-old-123456-agent-workspace")
                && e.contains("cleanup"),
            "{e}"
        );
        layout.services[1].domains.push(Domain::Gate);
        assert!(check_current(&layout).is_ok());
        layout.services.pop();
        assert!(check_current(&layout).is_ok(), "no git, nothing to fix");
    }
}
