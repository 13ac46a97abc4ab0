//! `extends` merging, provider templates, the forge rule's accepted forms and
//! the plan built from them.

use orchestrator::home::Home;
use orchestrator::manifest::{self, EnvSpec};
use orchestrator::plan::{self, EnvValue, PlanOptions, Role};

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

fn home_with(bottles: &[(&str, &str)], agent_bottle: &str) -> (tempfile::TempDir, Home) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("home");
    std::fs::create_dir_all(root.join("bottles")).unwrap();
    std::fs::create_dir_all(root.join("agents")).unwrap();
    for (name, yaml) in bottles {
        std::fs::write(
            root.join(format!("bottles/{name}.md")),
            format!("---\n{yaml}---\ntext\n"),
        )
        .unwrap();
    }
    std::fs::write(
        root.join("agents/a.md"),
        format!("---\nbottle: {agent_bottle}\nskills: [extra]\n---\nBe careful.\n"),
    )
    .unwrap();
    let home = Home::new(root, Some(dir.path()));
    (dir, home)
}

#[test]
fn child_overrides_and_extends_parent() {
    let base = "env:\n  A: base\n  B: base\nskills: [one]\nagent_provider:\n  template: codex\n  auth_token: MY_OPENAI\negress:\n  attach_networks: [net1]\n  routes:\n    - host: a.example.com\n    - host: b.example.com\n      ports: [8443]\n";
    let mid = "extends: base\nenv:\n  B: mid\n  C: ${HOST_C}\nskills: [two, one]\negress:\n  routes:\n    - host: b.example.com\n      ports: [443]\n";
    let child = "extends: mid\nagent_provider:\n  template: claude\nsupervise: false\negress:\n  attach_networks: [net2, net1]\n  routes:\n    - host: c.example.com\n";
    let (_d, home) = home_with(&[("base", base), ("mid", mid), ("child", child)], "child");
    let r = manifest::resolve(&home, "a").unwrap();
    let b = &r.bottle;
    assert_eq!(b.files.len(), 3);
    assert!(b.files[0].ends_with("child.md") && b.files[2].ends_with("base.md"));
    assert_eq!(b.env["A"].spec, EnvSpec::Literal("base".into()));
    assert_eq!(b.env["B"].spec, EnvSpec::Literal("mid".into()));
    assert_eq!(b.env["C"].spec, EnvSpec::Forward("HOST_C".into()));
    assert!(b.env["B"].origin.file.ends_with("mid.md"));
    assert_eq!(b.skills, vec!["one", "two"]);
    assert_eq!(r.skills(), vec!["one", "two", "extra"]);

    assert_eq!(b.attach_networks, vec!["net1", "net2"]);
    // Provider fields merge: child's template, parent's auth_token.
    let p = b.provider.as_ref().unwrap();
    assert_eq!(p.template, Some(manifest::Template::Claude));
    assert_eq!(p.auth_token.as_deref(), Some("MY_OPENAI"));
    // Routes: a from base, b replaced by mid's (port 443), c from child, then the template's.
    let hosts: Vec<(String, Vec<u16>)> = b
        .routes
        .iter()
        .map(|r| (r.host.to_string(), r.ports.clone()))
        .collect();
    assert_eq!(
        hosts,
        vec![
            ("a.example.com".into(), vec![443]),
            ("b.example.com".into(), vec![443]),
            ("c.example.com".into(), vec![443]),
            ("api.anthropic.com".into(), vec![443]),
        ]
    );
    assert!(b.routes[1].origin.file.ends_with("mid.md"));
    assert_eq!(b.routes[3].template, Some(manifest::Template::Claude));
    assert_eq!(b.routes[3].auth.as_ref().unwrap().token_ref, "MY_OPENAI");
    assert_eq!(r.agent.prompt, "Be careful.");
}

#[test]
fn bottle_route_overrides_template_route() {
    let (_d, home) = home_with(
        &[("b", "agent_provider:\n  template: claude\negress:\n  routes:\n    - host: api.anthropic.com\n      auth: { scheme: Bearer, token_ref: CLAUDE_CODE_OAUTH_TOKEN }\n")],
        "b",
    );
    let r = manifest::resolve(&home, "a").unwrap();
    let anth: Vec<_> = r
        .bottle
        .routes
        .iter()
        .filter(|x| x.host.to_string() == "api.anthropic.com")
        .collect();
    assert_eq!(anth.len(), 1);
    assert_eq!(anth[0].template, None);
}

#[test]
fn forge_rule_accepts_reads_and_explicit_writes() {
    let y = format!(
        "git:\n  remotes:\n    - Name: app\n      Upstream: ssh://git@github.com/me/app.git\n      IdentityFile: /nonexistent/key\n      KnownHostKey: \"{KEY}\"\n      ProtectedPaths: [\"deploy/**\"]\negress:\n  routes:\n    - host: api.github.com\n      auth: {{ scheme: Bearer, token_ref: GH_TOKEN }}\n    - host: uploads.github.com\n      auth: {{ scheme: token, token_ref: GH_TOKEN }}\n      matches:\n        - paths: [{{ type: prefix, value: /repos/me/app/releases }}]\n          methods: [POST]\n          allow_writes: true\n"
    );
    let (_d, home) = home_with(&[("b", &y)], "b");
    let r = manifest::resolve(&home, "a").unwrap();
    let remote = &r.bottle.remotes[0];
    assert_eq!(remote.push_refs, vec!["refs/heads/agent/*"]);
    assert!(
        remote
            .protected_paths
            .iter()
            .any(|p| p == ".github/workflows/**"),
        "defaults kept"
    );
    assert!(
        remote.protected_paths.iter().any(|p| p == "deploy/**"),
        "manifest's added"
    );

    let plan = plan::build(&home, &r, &PlanOptions::default()).unwrap();
    let api = plan
        .routes
        .iter()
        .find(|x| x.host == "api.github.com")
        .unwrap();
    assert_eq!(
        api.methods,
        vec!["GET", "HEAD", "OPTIONS"],
        "an auth route to the forge defaults to reads"
    );
    assert!(!api.allow_writes);
    let up = plan
        .routes
        .iter()
        .find(|x| x.host == "uploads.github.com")
        .unwrap();
    assert!(up.allow_writes);
    assert_eq!(up.methods, vec!["POST"]);
    assert!(api.forge && up.forge);
    // Egress enforces it too: both are forge routes there, one allowing writes.
    let cfg = egress_config(&plan);
    let eg = |id: &str| cfg.routes.iter().find(|x| x.id == id).unwrap();
    assert!(eg(&api.id).forge && !eg(&api.id).allow_writes);
    assert!(eg(&up.id).forge && eg(&up.id).allow_writes);
    // git-gate reaches github.com:22 through a pinned tunnel route.
    let tunnel = plan.routes.iter().find(|x| x.tunnel).unwrap();
    assert_eq!(
        (tunnel.host.as_str(), tunnel.ports.as_slice()),
        ("github.com", &[22u16][..])
    );
    assert_eq!(plan.git.remotes[0].tunnel_route, tunnel.id);
    assert_eq!(plan.git.remotes[0].gate_url, "git://git-gate/app.git");
    // Missing identity file: a warning in the plan, an error for a real start.
    assert!(plan.warnings.iter().any(|w| w.contains("/nonexistent/key")));
    let err = plan::check_ready(&plan).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/key"), "{err}");
    // The human preflight flags the write path and the scanner's blind spot.
    let text = orchestrator::dryrun::human(&plan, false);
    assert!(
        text.contains("WRITE") && text.contains("/repos/me/app/releases"),
        "{text}"
    );
    assert!(text.contains("scanner cannot recognise"), "{text}");
    assert!(text.contains("$GH_TOKEN"), "{text}");
    // git-gate's config went through git-gate's own type.
    let gg = plan.sidecar(Role::GitGate).unwrap();
    assert!(
        gg.config.contains("ssh://git@github.com/me/app.git")
            && gg.config.contains("/config/id_app"),
        "{}",
        gg.config
    );
}

#[test]
fn plan_forwards_env_by_name_and_never_holds_token_values() {
    // Token values in the environment must never reach the plan.
    std::env::set_var("BB_TEST_SECRET_TOKEN", "s3cr3t-value-never-printed");
    std::env::set_var("BB_TEST_FORWARDED", "forwarded-value-never-printed");
    let (_d, home) = home_with(
        &[("b", "env:\n  FWD: ${BB_TEST_FORWARDED}\n  LIT: plain\negress:\n  routes:\n    - host: api.example.com\n      auth: { scheme: Bearer, token_ref: BB_TEST_SECRET_TOKEN }\n")],
        "b",
    );
    let r = manifest::resolve(&home, "a").unwrap();
    let plan = plan::build(&home, &r, &PlanOptions::default()).unwrap();
    let json = orchestrator::dryrun::to_json(&plan);
    assert!(
        !json.contains("s3cr3t-value-never-printed")
            && !json.contains("forwarded-value-never-printed")
    );
    let env = &plan.agent_container.env;
    let fwd = env.iter().find(|e| e.name == "FWD").unwrap();
    assert_eq!(
        fwd.value,
        EnvValue::Host {
            var: "BB_TEST_FORWARDED".into()
        }
    );
    // The agent holds a placeholder where its tools look for the token.
    let ph = env
        .iter()
        .find(|e| e.name == "BB_TEST_SECRET_TOKEN")
        .unwrap();
    let route = plan
        .routes
        .iter()
        .find(|x| x.host == "api.example.com")
        .unwrap();
    assert_eq!(
        ph.value,
        EnvValue::Literal {
            value: route.placeholder.clone().unwrap()
        }
    );
    assert!(route.placeholder.as_ref().unwrap().contains(&plan.id));
    // cred-proxy gets the token by name.
    let cp = plan.sidecar(Role::CredProxy).unwrap();
    assert!(cp.env.iter().any(|e| e.value
        == EnvValue::Host {
            var: "BB_TEST_SECRET_TOKEN".into()
        }));
    assert!(cp.config.contains("BB_TEST_SECRET_TOKEN"));
    assert!(plan.tokens[0].present);
    assert!(plan::check_ready(&plan).is_ok());
}

#[test]
fn subnets_are_private_distinct_and_stable() {
    let a = plan::subnets_for("demo-000001");
    assert_eq!(a, plan::subnets_for("demo-000001"));
    let pool: ipnet::Ipv4Net = plan::SUBNET_POOL.parse().unwrap();
    for n in a {
        assert!(pool.contains(&n) && n.prefix_len() == 28);
    }
    assert!(a[0] != a[1] && a[1] != a[2]);
    let id = plan::new_id("My Agent!");
    assert!(
        id.starts_with("my-agent-") && id.len() == "my-agent-".len() + 6,
        "{id}"
    );
}

#[test]
fn sidecar_image_overrides_are_checked() {
    let (_d, home) = home_with(&[("b", "")], "b");
    let r = manifest::resolve(&home, "a").unwrap();
    let opts = PlanOptions {
        sidecar_images: vec!["egress=my/egress:dev".into()],
        ..Default::default()
    };
    let plan = plan::build(&home, &r, &opts).unwrap();
    assert_eq!(plan.sidecar(Role::Egress).unwrap().image, "my/egress:dev");
    for bad in ["egress", "nope=x", "git-gate=x", "egress=a b"] {
        let opts = PlanOptions {
            sidecar_images: vec![bad.into()],
            ..Default::default()
        };
        let e = plan::build(&home, &r, &opts).unwrap_err();
        assert_eq!(e.exit_code(), 2, "{bad}: {e}");
        assert!(
            e.to_string().contains(bad.split('=').next().unwrap()),
            "{e}"
        );
    }
}

#[test]
fn codex_template_brings_openai_with_a_placeholder() {
    let (_d, home) = home_with(&[("b", "agent_provider:\n  template: codex\n")], "b");
    let r = manifest::resolve(&home, "a").unwrap();
    let plan = plan::build(&home, &r, &PlanOptions::default()).unwrap();
    let route = plan
        .routes
        .iter()
        .find(|x| x.host == "api.openai.com")
        .expect("template route");
    assert_eq!(route.origin, "template:codex");
    let auth = route.auth.as_ref().unwrap();
    assert_eq!(
        (auth.scheme.as_str(), auth.token_ref.as_str()),
        ("Bearer", "OPENAI_API_KEY")
    );
    let key = plan
        .agent_container
        .env
        .iter()
        .find(|e| e.name == "OPENAI_API_KEY")
        .unwrap();
    assert_eq!(
        key.value,
        EnvValue::Literal {
            value: route.placeholder.clone().unwrap()
        }
    );
    assert_eq!(plan.agent_container.provider.as_deref(), Some("codex"));
    assert!(
        matches!(&plan.agent_container.image_source, plan::ImageSource::Builtin { name } if name == "agent-codex")
    );
    // The token is cred-proxy's alone.
    assert!(plan
        .sidecar(Role::CredProxy)
        .unwrap()
        .config
        .contains("api.openai.com"));
    assert!(!plan
        .sidecar(Role::Egress)
        .unwrap()
        .env
        .iter()
        .any(|e| e.name == "OPENAI_API_KEY"));
}

#[test]
fn upstream_ca_is_found_next_to_its_manifest_and_reaches_egress_and_cred_proxy() {
    std::env::set_var("BB_TEST_CA_ROUTE_TOKEN", "value");
    let base = "egress:\n  upstream_ca: private-ca.pem\n  routes:\n    - host: api.internal.example\n      auth: { scheme: Bearer, token_ref: BB_TEST_CA_ROUTE_TOKEN }\n";
    let (_d, home) = home_with(&[("base", base), ("child", "extends: base\n")], "child");
    let r = manifest::resolve(&home, "a").unwrap();
    let ca = home.root.join("bottles/private-ca.pem");
    assert_eq!(r.bottle.upstream_ca.as_deref(), Some(ca.as_path()));

    // Missing file: a warning in the plan, an error at start.
    let plan = plan::build(&home, &r, &PlanOptions::default()).unwrap();
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains("egress.upstream_ca")),
        "{:?}",
        plan.warnings
    );
    let err = plan::check_ready(&plan).unwrap_err().to_string();
    assert!(
        err.contains("egress.upstream_ca") && err.contains("private-ca.pem"),
        "{err}"
    );
    for role in [Role::Egress, Role::CredProxy] {
        let s = plan.sidecar(role).unwrap();
        assert!(
            s.files.contains_key("upstream-ca.pem"),
            "{role:?}: {:?}",
            s.files
        );
        assert!(
            s.config
                .contains("upstream_ca = \"/config/upstream-ca.pem\""),
            "{role:?}:\n{}",
            s.config
        );
    }

    // A file that is not PEM is refused at start, naming it.
    std::fs::write(&ca, "not a certificate\n").unwrap();
    let err = plan::check_ready(&plan).unwrap_err().to_string();
    assert!(err.contains("holds no PEM certificate"), "{err}");
    std::fs::write(
        &ca,
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    assert!(plan::check_ready(&plan).is_ok());
}

/// The rendered egress config of `plan`, parsed and validated by egress itself.
fn egress_config(plan: &plan::Plan) -> contract::egress::EgressConfig {
    let text = &plan.sidecar(Role::Egress).unwrap().config;
    let file =
        contract::egress::EgressConfig::from_toml_str(text, std::path::Path::new("egress.toml"))
            .unwrap();
    file.validate().unwrap();
    file
}

fn remote_yaml(upstream: &str) -> String {
    format!(
        "git:\n  remotes:\n    - Name: app\n      Upstream: {upstream}\n      IdentityFile: /nonexistent/key\n      KnownHostKey: \"{KEY}\"\n"
    )
}

/// A route to the forge without `auth` is read-only all the same (the agent
/// could bring a token of its own), and egress is told it is a forge route.
#[test]
fn route_to_the_forge_without_auth_is_read_only() {
    let y = format!(
        "{}egress:\n  routes:\n    - host: github.com\n    - host: api.github.com\n      matches:\n        - paths: [{{ type: prefix, value: /repos/me/app }}]\n    - host: example.com\n",
        remote_yaml("ssh://git@github.com/me/app.git")
    );
    let (_d, home) = home_with(&[("b", &y)], "b");
    let r = manifest::resolve(&home, "a").unwrap();
    let plan = plan::build(&home, &r, &PlanOptions::default()).unwrap();
    let route = |host: &str| plan.routes.iter().find(|x| x.host == host).unwrap();
    for host in ["github.com", "api.github.com"] {
        let rt = route(host);
        assert_eq!(rt.methods, vec!["GET", "HEAD", "OPTIONS"], "{host}");
        assert!(rt.forge && !rt.allow_writes && rt.auth.is_none(), "{host}");
    }
    let other = route("example.com");
    assert!(other.methods.is_empty() && !other.forge);
    // git-gate's tunnel to the forge's ssh port is not a forge route: egress
    // does not intercept it.
    assert!(!plan.routes.iter().find(|x| x.tunnel).unwrap().forge);

    let cfg = egress_config(&plan);
    let web = cfg.routes.iter().find(|x| x.host == "github.com").unwrap();
    assert!(web.forge && !web.allow_writes);
    assert_eq!(web.methods, vec!["GET", "HEAD", "OPTIONS"]);
    let other = cfg.routes.iter().find(|x| x.host == "example.com").unwrap();
    assert!(!other.forge);
    let text = &plan.sidecar(Role::Egress).unwrap().config;
    assert_eq!(text.matches("forge = true").count(), 2, "{text}");
    // The preflight says what the agent can and cannot do there.
    let human = orchestrator::dryrun::human(&plan, false);
    assert!(
        human.contains("git remote's forge: read-only (git clone/fetch work, git push refused)"),
        "{human}"
    );
}

/// A wildcard whose pattern covers a remote's host is a route to that forge.
#[test]
fn wildcard_covering_the_remote_counts_as_its_forge() {
    let y = format!(
        "{}egress:\n  routes:\n    - host: \"*.example.test\"\n    - host: \"*.other.test\"\n",
        remote_yaml("ssh://git@git.example.test/srv/app.git")
    );
    let (_d, home) = home_with(&[("b", &y)], "b");
    let r = manifest::resolve(&home, "a").unwrap();
    let plan = plan::build(&home, &r, &PlanOptions::default()).unwrap();
    let wild = plan
        .routes
        .iter()
        .find(|x| x.host == "*.example.test")
        .unwrap();
    assert!(wild.forge);
    assert_eq!(wild.methods, vec!["GET", "HEAD", "OPTIONS"]);
    let other = plan
        .routes
        .iter()
        .find(|x| x.host == "*.other.test")
        .unwrap();
    assert!(!other.forge && other.methods.is_empty());
    let cfg = egress_config(&plan);
    assert!(
        cfg.routes
            .iter()
            .find(|x| x.host == "*.example.test")
            .unwrap()
            .forge
    );
}
