//! `start --dry-run --format json` on the shipped example home: the JSON
//! shape documented in docs/plan-json.md, and no Docker side effects.

use std::process::Command;

use serde_json::Value;

fn dry_run(agent: &str, extra_env: &[(&str, &str)]) -> (Value, String) {
    let home = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/home");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_orchestrator"));
    cmd.args(["start", agent, "--dry-run", "--format", "json"])
        .env("BOT_BOTTLE_HOME", home)
        .current_dir(env!("CARGO_MANIFEST_DIR"));
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    (serde_json::from_str(&text).unwrap(), text)
}

fn keys(v: &Value) -> Vec<&str> {
    v.as_object().unwrap().keys().map(|k| k.as_str()).collect()
}

#[test]
fn demo_plan_has_the_documented_shape() {
    // An unreachable engine must not stop a dry-run: the plan says so.
    let (p, _) = dry_run(
        "demo",
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );
    let mut k = keys(&p);
    k.sort();
    assert_eq!(
        k,
        vec![
            "agent",
            "agent_container",
            "bottle",
            "format_version",
            "git",
            "home",
            "home_hash",
            "id",
            "labels",
            "manifests",
            "networks",
            "notes",
            "routes",
            "runtime",
            "sidecars",
            "ssrf_allow_cidrs",
            "state_dir",
            "supervise",
            "tokens",
            "upstream_ca",
            "warnings"
        ]
    );
    assert_eq!(p["format_version"], 1);
    assert!(p["id"].as_str().unwrap().starts_with("demo-"));
    assert!(p["runtime"]["engine"]
        .as_str()
        .unwrap()
        .starts_with("unreachable"));
    let nets = p["networks"].as_array().unwrap();
    assert_eq!(
        nets.iter()
            .map(|n| n["role"].as_str().unwrap())
            .collect::<Vec<_>>(),
        vec!["internal", "broker", "egress"]
    );
    for n in nets {
        assert!(
            n["subnet"].as_str().unwrap().starts_with("10.213.")
                && n["subnet"].as_str().unwrap().ends_with("/28")
        );
    }
    let sidecars = p["sidecars"].as_array().unwrap();
    assert_eq!(
        sidecars.len(),
        1,
        "demo has no auth, no git, no supervise: egress only"
    );
    let eg = &sidecars[0];
    assert_eq!(eg["role"], "egress");
    assert_eq!(eg["attach_networks"][0], "bb-demo-internet");
    let cfg = eg["config"].as_str().unwrap();
    assert!(
        cfg.contains("api.example.test")
            && cfg.contains("/allowed")
            && cfg.contains("10.214.0.0/24"),
        "{cfg}"
    );
    let routes = p["routes"].as_array().unwrap();
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0]["methods"], serde_json::json!(["GET", "HEAD"]));
    assert!(routes[0]["origin"].as_str().unwrap().starts_with("bottle:"));
    let agent = &p["agent_container"];
    assert_eq!(agent["image_source"]["name"], "test-agent");
    assert_eq!(agent["provider"], Value::Null);
    let env = agent["env"].as_array().unwrap();
    let proxy = env.iter().find(|e| e["name"] == "https_proxy").unwrap();
    assert_eq!(proxy["value"], "http://egress:3128");
    assert!(env
        .iter()
        .any(|e| e["name"] == "BOT_BOTTLE_CANARY" && e["source"] == "generated"));
    assert_eq!(p["tokens"], serde_json::json!([]));
}

#[test]
fn reviewer_plan_names_tokens_without_values() {
    let secret = "ghp_THIS_VALUE_MUST_NEVER_APPEAR_0123456789";
    let (p, text) = dry_run(
        "reviewer",
        &[
            ("GH_TOKEN", secret),
            ("ANTHROPIC_API_KEY", "sk-ant-never-shown"),
            ("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
        ],
    );
    assert!(!text.contains(secret) && !text.contains("sk-ant-never-shown"));
    let tokens = p["tokens"].as_array().unwrap();
    let vars: Vec<&str> = tokens.iter().map(|t| t["var"].as_str().unwrap()).collect();
    assert_eq!(vars, vec!["GH_TOKEN", "ANTHROPIC_API_KEY"]);
    assert!(tokens.iter().all(|t| t["present"] == true));
    let roles: Vec<&str> = p["sidecars"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, vec!["egress", "cred-proxy", "git-gate"]);
    // git-gate's tunnel to the remote's ssh port exists on egress's gate
    // listener only, on a network the agent is not on.
    let nets: Vec<&str> = p["networks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["role"].as_str().unwrap())
        .collect();
    assert_eq!(nets, vec!["internal", "broker", "egress", "gate"]);
    let git = p["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == "git-app")
        .unwrap();
    assert_eq!(git["tunnel"], true);
    assert_eq!(git["gate_only"], true);
    let sidecar = |role: &str| {
        p["sidecars"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["role"] == role)
            .unwrap()
            .clone()
    };
    let (egress, gate) = (sidecar("egress"), sidecar("git-gate"));
    let gate_addr = egress["addresses"]["gate"].as_str().unwrap();
    assert_eq!(
        gate["addresses"]["gate"]
            .as_str()
            .unwrap()
            .rsplit_once('.')
            .unwrap()
            .0,
        gate_addr.rsplit_once('.').unwrap().0,
        "egress and git-gate share the gate network"
    );
    assert!(p["agent_container"]["network"]
        .as_str()
        .unwrap()
        .ends_with("-internal"));
    let ecfg = egress["config"].as_str().unwrap();
    assert!(
        ecfg.contains(&format!("gate_listen = \"{gate_addr}:3128\""))
            && ecfg.contains("gate_only = true"),
        "{ecfg}"
    );
    let gcfg = gate["config"].as_str().unwrap();
    assert!(
        gcfg.contains(&format!("upstream_proxy = \"{gate_addr}:3128\"")),
        "git-gate dials egress's gate listener: {gcfg}"
    );
    let anth = p["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["host"] == "api.anthropic.com")
        .unwrap();
    assert_eq!(anth["origin"], "template:claude");
    assert_eq!(anth["auth"]["token_ref"], "ANTHROPIC_API_KEY");
    let env = p["agent_container"]["env"].as_array().unwrap();
    assert!(env.iter().any(|e| e["name"] == "DISABLE_TELEMETRY"));
    let key = env
        .iter()
        .find(|e| e["name"] == "ANTHROPIC_API_KEY")
        .unwrap();
    assert!(key["value"]
        .as_str()
        .unwrap()
        .starts_with("bb-placeholder-"));
    assert!(p["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .any(|w| w.as_str().unwrap().contains("IdentityFile")));
}

#[test]
fn human_preflight_lists_hosts_routes_and_tokens() {
    let out = Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args(["start", "reviewer", "--dry-run"])
        .env(
            "BOT_BOTTLE_HOME",
            concat!(env!("CARGO_MANIFEST_DIR"), "/examples/home"),
        )
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .env_remove("GH_TOKEN")
        .output()
        .unwrap();
    assert!(out.status.success());
    let t = String::from_utf8_lossy(&out.stdout);
    for want in [
        "api.github.com",
        "[template claude]",
        "$GH_TOKEN",
        "NOT SET",
        "github.com:22  CONNECT  git-gate only (the agent cannot open it)",
        "github.com (git-gate only)",
        "WRITE",
        "git://git-gate/app.git",
        "runtime:",
    ] {
        assert!(t.contains(want), "missing {want:?} in:\n{t}");
    }
}

#[test]
fn agent_may_be_omitted_only_when_there_is_one() {
    let out = Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args(["start", "--dry-run"])
        .env(
            "BOT_BOTTLE_HOME",
            concat!(env!("CARGO_MANIFEST_DIR"), "/examples/home"),
        )
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("several agents exist (demo, reviewer)"), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    std::fs::create_dir_all(home.join("agents")).unwrap();
    std::fs::create_dir_all(home.join("bottles")).unwrap();
    std::fs::write(home.join("agents/solo.md"), "---\nbottle: b\n---\nhi\n").unwrap();
    std::fs::write(home.join("bottles/b.md"), "---\n---\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args(["start", "--dry-run", "--format", "json"])
        .env("BOT_BOTTLE_HOME", home)
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .current_dir(home)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(p["agent"], "solo");
}

/// The example reviewer's routes to api.github.com, the forge of its `app`
/// remote, are marked as forge routes in the plan and in the egress config
/// egress will run: read-only, except the one match that allows writes.
#[test]
fn forge_routes_reach_the_egress_config() {
    let (p, _) = dry_run(
        "reviewer",
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );
    let routes = p["routes"].as_array().unwrap();
    let gh: Vec<&Value> = routes
        .iter()
        .filter(|r| r["host"] == "api.github.com")
        .collect();
    assert_eq!(gh.len(), 2);
    assert!(gh.iter().all(|r| r["forge"] == true));
    assert_eq!(
        gh.iter()
            .map(|r| r["allow_writes"].as_bool().unwrap())
            .collect::<Vec<_>>(),
        vec![false, true]
    );
    let crates = routes.iter().find(|r| r["host"] == "crates.io").unwrap();
    assert_eq!(crates["forge"], false);
    let egress = p["sidecars"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["role"] == "egress")
        .unwrap();
    let cfg = contract::egress::EgressConfig::from_toml_str(
        egress["config"].as_str().unwrap(),
        std::path::Path::new("egress.toml"),
    )
    .unwrap();
    let eg: Vec<(bool, bool)> = cfg
        .routes
        .iter()
        .filter(|r| r.host == "api.github.com")
        .map(|r| (r.forge, r.allow_writes))
        .collect();
    assert_eq!(eg, vec![(true, false), (true, true)]);
    assert!(cfg
        .routes
        .iter()
        .filter(|r| r.host != "api.github.com")
        .all(|r| !r.forge && !r.allow_writes));
}
