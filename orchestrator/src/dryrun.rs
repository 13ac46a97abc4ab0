//! `start --dry-run`: resolve the whole plan with no Docker side effects and
//! print it (the preflight summary, or JSON documented in docs/plan-json.md).
//! The engine is only asked read-only questions (version, runtimes); when it
//! cannot be reached the plan says so. Token values are never read here, only
//! whether their variables are set.

use std::fmt::Write as _;
use std::io::IsTerminal as _;

use crate::cli::{Format, StartArgs};
use crate::docker::EngineInfo;
use crate::error::{Error, Problem};
use crate::home::Home;
use crate::manifest;
use crate::plan::{self, EngineProbe, EnvValue, ImageSource, Plan, PlanOptions};

/// Ask the engine (read-only) for its version and whether it offers runsc.
pub async fn probe_engine() -> EngineProbe {
    let probed = match crate::docker::Engine::connect().await {
        Ok(engine) => engine.probe().await,
        Err(e) => Err(e),
    };
    engine_probe(probed.as_ref())
}

/// What the plan records of the engine: what it answered, or why it did not.
pub fn engine_probe(probed: Result<&EngineInfo, &Error>) -> EngineProbe {
    match probed {
        Ok(info) => EngineProbe {
            version: info.version.clone(),
            unreachable: None,
            runsc: info.runsc,
        },
        Err(e) => EngineProbe {
            version: None,
            unreachable: Some(e.to_string()),
            runsc: false,
        },
    }
}

/// The agent to start: the one named, or the only one there is.
pub fn pick_agent(home: &Home, name: Option<&str>) -> Result<String, Error> {
    if let Some(n) = name {
        return Ok(n.to_string());
    }
    let agents = manifest::list_agents(home)?;
    match agents.len() {
        1 => Ok(agents.keys().next().expect("one agent").clone()),
        n => Err(Error::Manifest(vec![Problem {
            file: home.agents_dir(),
            key: String::new(),
            message: if n == 0 {
                "no agent manifests found: create agents/<name>.md (see examples/home)".into()
            } else {
                format!(
                    "several agents exist ({}): name one, e.g. `orchestrator start {}`",
                    agents.keys().cloned().collect::<Vec<_>>().join(", "),
                    agents.keys().next().expect("n>1")
                )
            },
        }])),
    }
}

/// Resolve the plan `start` would execute for these arguments; `probe`
/// asks the engine, once the arguments and manifests are known to be good.
pub async fn plan_for(
    home: &Home,
    args: &StartArgs,
    probe: impl std::future::Future<Output = EngineProbe>,
) -> Result<Plan, Error> {
    let agent = pick_agent(home, args.agent.as_deref())?;
    let resolved = manifest::resolve(home, &agent)?;
    // Usage errors before asking the engine anything.
    plan::parse_sidecar_images(&args.sidecar_image)?;
    let probe = probe.await;
    let opts = PlanOptions {
        id: None,
        sidecar_images: args.sidecar_image.clone(),
        command: args.command.clone(),
        // Absolute, so the plan (and `resume`) do not depend on where it was made.
        cwd: args.cwd.as_ref().map(|c| {
            c.canonicalize().unwrap_or_else(|_| {
                std::env::current_dir()
                    .map(|d| d.join(c))
                    .unwrap_or_else(|_| c.clone())
            })
        }),
        probe,
    };
    plan::build(home, &resolved, &opts)
}

/// `start --dry-run`.
pub async fn run(args: &StartArgs) -> Result<u8, Error> {
    let home = Home::from_env()?;
    let plan = plan_for(&home, args, probe_engine()).await?;
    match args.format {
        Format::Json => println!("{}", to_json(&plan)),
        Format::Human => print!("{}", human(&plan, std::io::stdout().is_terminal())),
    }
    Ok(0)
}

/// The plan as pretty JSON (docs/plan-json.md).
pub fn to_json(plan: &Plan) -> String {
    serde_json::to_string_pretty(plan).expect("a plan always serialises")
}

fn origin_short(o: &str) -> String {
    if let Some(f) = o.strip_prefix("bottle:") {
        let name = std::path::Path::new(f)
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        format!("bottle {name}")
    } else if let Some(t) = o.strip_prefix("template:") {
        format!("template {t}")
    } else if let Some(r) = o.strip_prefix("git-remote:") {
        format!("git remote {r}")
    } else {
        o.to_string()
    }
}

fn image_line(image: &str, src: &ImageSource) -> String {
    match src {
        ImageSource::Builtin { name } => format!("{image} (built from images/{name}.Dockerfile)"),
        ImageSource::Dockerfile { path } => format!("{image} (built from {})", path.display()),
        ImageSource::Override { .. } => format!("{image} (override)"),
    }
}

/// The preflight summary a person reads before answering y/N. Every value
/// in it is printed with control and bidi characters escaped (a manifest
/// value must not act on the operator's terminal); colour is laid over the
/// escaped text, on the summary's own words only.
pub fn human(plan: &Plan, color: bool) -> String {
    let text = crate::terminal::escape_lines(&summary(plan));
    if color {
        paint(&text)
    } else {
        text
    }
}

const BOLD: &str = "\x1b[1m";
const RED: &str = "\x1b[1;31m";
const YELLOW: &str = "\x1b[33m";
const RESET: &str = "\x1b[0m";

/// Headings of the summary, in bold.
const HEADINGS: [&str; 10] = [
    "bottle",
    "networks",
    "sidecars",
    "hosts reachable:",
    "routes (everything else is refused)",
    "git remotes (through git-gate)",
    "tokens (by name; values never leave cred-proxy)",
    "supervise:",
    "warnings (a real start refuses missing identity files and unset tokens)",
    "notes",
];

/// Colour for an escaped summary: headings bold, warnings and routes
/// without DLP yellow, forge writes red.
fn paint(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 256);
    let mut in_warnings = false;
    for line in text.split_inclusive('\n') {
        let (body, nl) = match line.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (line, ""),
        };
        if let Some(h) = HEADINGS
            .iter()
            .find(|h| body == **h || body.strip_prefix(**h).is_some_and(|r| r.starts_with(' ')))
        {
            in_warnings = h.starts_with("warnings");
            out.push_str(&format!("{BOLD}{h}{RESET}{}{nl}", &body[h.len()..]));
            continue;
        }
        if body.is_empty() {
            in_warnings = false;
        }
        let painted = if in_warnings && !body.is_empty() {
            format!("  {YELLOW}{}{RESET}", body.trim_start())
        } else if body.trim_start().starts_with(FORGE_WRITE) {
            format!("    {RED}{}{RESET}", body.trim_start())
        } else if let Some(m) = [NO_DLP_TUNNEL, NO_DLP]
            .iter()
            .find(|m| body.contains(&format!("  {m}")))
        {
            body.replacen(&format!("  {m}"), &format!("  {YELLOW}{m}{RESET}"), 1)
        } else {
            body.to_string()
        };
        out.push_str(&painted);
        out.push_str(nl);
    }
    out
}

const FORGE_WRITE: &str = "WRITE to a git remote's forge through its API";
const NO_DLP_TUNNEL: &str = "tunnel: no DLP, not intercepted";
const NO_DLP: &str = "no DLP";

/// The summary's text, uncoloured and unescaped.
fn summary(plan: &Plan) -> String {
    let mut o = String::new();
    bottle_and_agent(&mut o, plan);
    networks_and_sidecars(&mut o, plan);
    routes(&mut o, plan);
    git_remotes(&mut o, plan);
    tokens_and_notes(&mut o, plan);
    o
}

/// The bottle, its agent and the runtime.
fn bottle_and_agent(w: &mut String, plan: &Plan) {
    let _ = writeln!(
        w,
        "bottle {}  (agent {}, bottle {})",
        plan.id, plan.agent, plan.bottle
    );
    let _ = writeln!(
        w,
        "  manifests: {}",
        plan.manifests
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let a = &plan.agent_container;
    let _ = writeln!(w, "  agent:     {}", image_line(&a.image, &a.image_source));
    if let Some(p) = &a.provider {
        let _ = writeln!(w, "  provider:  {p}");
    }
    if !a.command.is_empty() {
        let _ = writeln!(w, "  command:   {}", a.command.join(" "));
    }
    if let Some(c) = &a.copy_cwd {
        let _ = writeln!(w, "  workspace: copy of {}", c.display());
    }
    if !a.skills.is_empty() {
        let _ = writeln!(w, "  skills:    {}", a.skills.join(", "));
    }
    let rt = &plan.runtime;
    let _ = writeln!(
        w,
        "  runtime:   {} (engine {}{}; internal networks: {})",
        rt.agent_runtime,
        rt.engine,
        rt.engine_version
            .as_deref()
            .map(|v| format!(" {v}"))
            .unwrap_or_default(),
        rt.gateway_isolation
    );
}

/// The networks and the sidecars on them.
fn networks_and_sidecars(w: &mut String, plan: &Plan) {
    let _ = writeln!(w, "\nnetworks");
    for n in &plan.networks {
        let _ = writeln!(
            w,
            "  {:<9} {:<32} {:<17} {}",
            n.role.as_str(),
            n.name,
            n.subnet.to_string(),
            if n.internal {
                "internal, no route out"
            } else {
                "bridge (the way out)"
            }
        );
    }
    let _ = writeln!(w, "\nsidecars");
    for s in &plan.sidecars {
        let addrs: Vec<String> = s
            .addresses
            .iter()
            .map(|(n, a)| format!("{a} ({})", n.as_str()))
            .collect();
        let _ = writeln!(
            w,
            "  {:<10} :{:<5} {}",
            s.role.as_str(),
            s.port,
            addrs.join(", ")
        );
        let _ = writeln!(
            w,
            "  {:<10} image {}",
            "",
            image_line(&s.image, &s.image_source)
        );
        if !s.attach_networks.is_empty() {
            let _ = writeln!(
                w,
                "  {:<10} also joins {}",
                "",
                s.attach_networks.join(", ")
            );
        }
        if let (true, Some(ca)) = (
            s.files.contains_key(crate::plan::UPSTREAM_CA_FILE),
            &plan.upstream_ca,
        ) {
            let _ = writeln!(
                w,
                "  {:<10} trusts upstream CA {} besides the public roots",
                "",
                ca.display()
            );
        }
    }
}

/// What the agent can reach: hosts, then each route with its checks.
fn routes(w: &mut String, plan: &Plan) {
    let mut hosts: Vec<String> = Vec::new();
    for r in &plan.routes {
        let h = if r.gate_only {
            format!("{} (git-gate only)", r.host)
        } else {
            r.host.clone()
        };
        if !hosts.contains(&h) {
            hosts.push(h);
        }
    }
    let _ = writeln!(
        w,
        "\nhosts reachable: {}",
        if hosts.is_empty() {
            "none".to_string()
        } else {
            hosts.join(", ")
        }
    );
    let _ = writeln!(w, "\nroutes (everything else is refused)");
    for r in &plan.routes {
        let ports: Vec<String> = r.ports.iter().map(|p| p.to_string()).collect();
        let methods = if r.tunnel {
            "CONNECT".to_string()
        } else if r.methods.is_empty() {
            "any method".to_string()
        } else {
            r.methods.join(",")
        };
        let paths = if r.tunnel {
            String::new()
        } else if r.paths.is_empty() {
            "any path".to_string()
        } else {
            r.paths
                .iter()
                // A prefix matches on a segment boundary: `/a/b[/*]` is `/a/b`
                // and what is under it, never `/a/b-c`.
                .map(|p| {
                    if p.value.ends_with('/') {
                        format!("{}*", p.value)
                    } else {
                        format!("{}[/*]", p.value)
                    }
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        let mut line = format!("  {}:{}  {}", r.host, ports.join(","), methods);
        if !paths.is_empty() {
            let _ = write!(line, "  {paths}");
        }
        if let Some(au) = &r.auth {
            let _ = write!(line, "  auth {} from ${}", au.scheme.as_str(), au.token_ref);
        }
        if r.gate_only {
            let _ = write!(line, "  git-gate only (the agent cannot open it)");
        } else if r.tunnel {
            let _ = write!(line, "  {}", NO_DLP_TUNNEL);
        } else if r.dlp.outbound_detectors.is_empty() {
            let _ = write!(line, "  {}", NO_DLP);
        } else {
            let _ = write!(
                line,
                "  dlp {} → {}",
                r.dlp
                    .outbound_detectors
                    .iter()
                    .map(|d| d.as_str())
                    .collect::<Vec<_>>()
                    .join("+"),
                r.dlp.outbound_on_match.as_str()
            );
        }
        if r.upgrade {
            let _ = write!(line, "  upgrades allowed");
        }
        if r.forge && !r.allow_writes {
            let _ = write!(
                line,
                "  git remote's forge: read-only (git clone/fetch work, git push refused)"
            );
        } else if r.forge {
            let _ = write!(line, "  git remote's forge: git push refused");
        }
        let _ = write!(line, "  [{}]", origin_short(&r.origin));
        let _ = writeln!(w, "{line}");
        if r.allow_writes {
            let _ = writeln!(
                w,
                "    {FORGE_WRITE} ({}): this goes around git-gate",
                r.paths
                    .iter()
                    .map(|p| p.value.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
}

/// The git remotes, pushed to through git-gate.
fn git_remotes(w: &mut String, plan: &Plan) {
    if !plan.git.remotes.is_empty() {
        let _ = writeln!(w, "\ngit remotes (through git-gate)");
        if let (Some(n), Some(e)) = (&plan.git.user_name, &plan.git.user_email) {
            let _ = writeln!(w, "  commits as {n} <{e}>");
        }
        for r in &plan.git.remotes {
            let _ = writeln!(w, "  {:<10} {} → {}", r.name, r.gate_url, r.upstream);
            let _ = writeln!(
                w,
                "  {:<10} push refs {}; pinned key {}; key file {}{}",
                "",
                r.push_refs.join(" "),
                r.known_host_key.split_whitespace().next().unwrap_or(""),
                r.identity_file.display(),
                if r.identity_file_present {
                    ""
                } else {
                    " (MISSING)"
                }
            );
            let _ = writeln!(
                w,
                "  {:<10} protected paths: {}",
                "",
                r.protected_paths.join(" ")
            );
        }
    }
}

/// Tokens by name, forwarded env, then warnings and notes.
fn tokens_and_notes(w: &mut String, plan: &Plan) {
    let a = &plan.agent_container;
    let _ = writeln!(w, "\ntokens (by name; values never leave cred-proxy)");
    if plan.tokens.is_empty() {
        let _ = writeln!(w, "  none");
    }
    for t in &plan.tokens {
        let _ = writeln!(
            w,
            "  ${:<24} {}  → {} for {}",
            t.var,
            if t.present { "set" } else { "NOT SET" },
            t.consumer,
            t.routes.join(", ")
        );
    }
    let forwarded: Vec<String> = a
        .env
        .iter()
        .filter_map(|e| match &e.value {
            EnvValue::Host { var } => Some(if *var == e.name {
                var.clone()
            } else {
                format!("{} (from ${var})", e.name)
            }),
            _ => None,
        })
        .collect();
    if !forwarded.is_empty() {
        let _ = writeln!(w, "  agent env forwarded by name: {}", forwarded.join(", "));
    }
    if plan.supervise {
        let _ = writeln!(
            w,
            "\nsupervise: the agent may ask for more through supervise (routes, capabilities)"
        );
    }
    if !plan.warnings.is_empty() {
        let _ = writeln!(
            w,
            "\nwarnings (a real start refuses missing identity files and unset tokens)"
        );
        for x in &plan.warnings {
            let _ = writeln!(w, "  {x}");
        }
    }
    if !plan.notes.is_empty() {
        let _ = writeln!(w, "\nnotes");
        for x in &plan.notes {
            let _ = writeln!(w, "  - {x}");
        }
    }
}
