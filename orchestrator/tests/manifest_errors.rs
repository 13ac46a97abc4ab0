//! Broken manifests: each error must name the file and the key path, and say
//! what was expected (the operator fixes the manifest from the message alone).

use std::path::{Path, PathBuf};

use orchestrator::home::Home;
use orchestrator::{manifest, Error, Problem};

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("home/bottles")).unwrap();
        std::fs::create_dir_all(dir.path().join("home/agents")).unwrap();
        std::fs::create_dir_all(dir.path().join("project")).unwrap();
        let f = Fixture { dir };
        f.agent("a", "bottle: b\n");
        f
    }
    fn home(&self) -> Home {
        Home::new(
            self.dir.path().join("home"),
            Some(&self.dir.path().join("project")),
        )
    }
    fn bottle(&self, name: &str, yaml: &str) -> PathBuf {
        let p = self.dir.path().join(format!("home/bottles/{name}.md"));
        std::fs::write(&p, format!("---\n{yaml}---\nbody\n")).unwrap();
        p
    }
    fn agent(&self, name: &str, yaml: &str) -> PathBuf {
        let p = self.dir.path().join(format!("home/agents/{name}.md"));
        std::fs::write(&p, format!("---\n{yaml}---\nprompt\n")).unwrap();
        p
    }
}

/// Load bottle `b` through agent `a`; return the problems.
fn problems(f: &Fixture) -> Vec<Problem> {
    match manifest::resolve(&f.home(), "a") {
        Err(Error::Manifest(p)) => p,
        Err(e) => panic!("expected a manifest error, got {e}"),
        Ok(_) => panic!("expected a manifest error, the manifest loaded"),
    }
}

/// The bottle `yaml` must fail with a problem naming its file and `key`, whose
/// text contains every one of `words`.
fn assert_bottle_error(yaml: &str, key: &str, words: &[&str]) {
    let f = Fixture::new();
    let file = f.bottle("b", yaml);
    assert_error(&f, &file, key, words);
}

fn assert_error(f: &Fixture, file: &Path, key: &str, words: &[&str]) {
    let ps = problems(f);
    let p = ps
        .iter()
        .find(|p| p.key == key)
        .unwrap_or_else(|| panic!("no problem at key {key:?}; got: {ps:#?}"));
    assert_eq!(p.file, file, "{p}");
    let text = p.to_string();
    assert!(
        text.contains(&file.display().to_string()),
        "message lacks the file: {text}"
    );
    if !key.is_empty() {
        assert!(text.contains(key), "message lacks the key: {text}");
    }
    for w in words {
        assert!(text.contains(w), "message lacks {w:?}: {text}");
    }
}

fn remote(name: &str, upstream: &str, key: &str) -> String {
    format!("    - Name: {name}\n      Upstream: {upstream}\n      IdentityFile: ~/.ssh/x\n      KnownHostKey: \"{key}\"\n")
}

#[test]
fn unknown_top_level_key_suggests_the_right_one() {
    assert_bottle_error(
        "egres:\n  routes: []\n",
        "egres",
        &["unknown key", "did you mean `egress`"],
    );
}

#[test]
fn unknown_route_key_suggests_host() {
    assert_bottle_error(
        "egress:\n  routes:\n    - hots: a.example.com\n",
        "egress.routes[0].hots",
        &["did you mean `host`"],
    );
}

#[test]
fn upstream_must_be_ssh() {
    let y = format!(
        "git:\n  remotes:\n{}",
        remote("app", "https://github.com/me/app.git", KEY)
    );
    assert_bottle_error(
        &y,
        "git.remotes[0].Upstream",
        &["expected an ssh:// URL", "https://github.com/me/app.git"],
    );
}

#[test]
fn upstream_needs_a_host() {
    let y = format!(
        "git:\n  remotes:\n{}",
        remote("app", "ssh:///me/app.git", KEY)
    );
    assert_bottle_error(&y, "git.remotes[0].Upstream", &["no host"]);
}

#[test]
fn known_host_key_must_parse() {
    let y = format!(
        "git:\n  remotes:\n{}",
        remote(
            "app",
            "ssh://git@github.com/me/app.git",
            "ssh-ed25519 not-base64!"
        )
    );
    assert_bottle_error(&y, "git.remotes[0].KnownHostKey", &["base64"]);
    let y = format!(
        "git:\n  remotes:\n{}",
        remote("app", "ssh://git@github.com/me/app.git", "hello world")
    );
    assert_bottle_error(
        &y,
        "git.remotes[0].KnownHostKey",
        &["expected an ssh public host key"],
    );
}

#[test]
fn remote_names_are_unique() {
    let y = format!(
        "git:\n  remotes:\n{}{}",
        remote("app", "ssh://git@github.com/me/app.git", KEY),
        remote("app", "ssh://git@github.com/me/other.git", KEY)
    );
    assert_bottle_error(&y, "git.remotes[1].Name", &["unique", "git.remotes[0]"]);
}

#[test]
fn missing_required_remote_key() {
    assert_bottle_error(
        "git:\n  remotes:\n    - Name: app\n      IdentityFile: x\n      KnownHostKey: x\n",
        "git.remotes[0].Upstream",
        &["required key is missing"],
    );
}

#[test]
fn single_label_host_is_refused() {
    assert_bottle_error(
        "egress:\n  routes:\n    - host: intranet\n",
        "egress.routes[0].host",
        &["single-label"],
    );
}

#[test]
fn sidecar_name_is_never_a_route() {
    assert_bottle_error(
        "egress:\n  routes:\n    - host: cred-proxy\n",
        "egress.routes[0].host",
        &["sidecar"],
    );
}

#[test]
fn ip_literal_host_is_refused() {
    assert_bottle_error(
        "egress:\n  routes:\n    - host: 169.254.169.254\n",
        "egress.routes[0].host",
        &["IP address"],
    );
}

#[test]
fn wildcard_never_with_auth() {
    assert_bottle_error(
        "egress:\n  routes:\n    - host: \"*.example.com\"\n      auth: { scheme: Bearer, token_ref: T }\n",
        "egress.routes[0].auth",
        &["wildcard"],
    );
}

#[test]
fn wildcard_never_with_tunnel() {
    assert_bottle_error(
        "egress:\n  routes:\n    - host: \"*.example.com\"\n      tunnel: true\n",
        "egress.routes[0].tunnel",
        &["wildcard"],
    );
}

#[test]
fn tunnel_cannot_carry_auth() {
    assert_bottle_error(
        "egress:\n  routes:\n    - host: a.example.com\n      tunnel: true\n      auth: { scheme: Bearer, token_ref: T }\n",
        "egress.routes[0].tunnel",
        &["cannot carry `auth`"],
    );
}

#[test]
fn ports_are_checked() {
    assert_bottle_error(
        "egress:\n  routes:\n    - host: a.example.com\n      ports: [443, 70000]\n",
        "egress.routes[0].ports[1]",
        &["1-65535", "70000"],
    );
}

#[test]
fn methods_are_checked() {
    assert_bottle_error(
        "egress:\n  routes:\n    - host: a.example.com\n      matches:\n        - methods: [GETT]\n",
        "egress.routes[0].matches[0].methods[0]",
        &["did you mean `GET`"],
    );
}

#[test]
fn paths_start_with_a_slash() {
    assert_bottle_error(
        "egress:\n  routes:\n    - host: a.example.com\n      matches:\n        - paths: [{ type: prefix, value: repos }]\n",
        "egress.routes[0].matches[0].paths[0].value",
        &["starting with `/`"],
    );
}

#[test]
fn auth_scheme_is_checked() {
    assert_bottle_error(
        "egress:\n  routes:\n    - host: a.example.com\n      auth: { scheme: bearer, token_ref: T }\n",
        "egress.routes[0].auth.scheme",
        &["did you mean `Bearer`"],
    );
}

#[test]
fn token_ref_is_a_variable_name() {
    assert_bottle_error(
        "egress:\n  routes:\n    - host: a.example.com\n      auth: { scheme: Bearer, token_ref: \"ghp_abc-123\" }\n",
        "egress.routes[0].auth.token_ref",
        &["NAME of a host environment variable"],
    );
}

#[test]
fn forge_write_needs_allow_writes() {
    let y = format!(
        "git:\n  remotes:\n{}egress:\n  routes:\n    - host: api.github.com\n      auth: {{ scheme: Bearer, token_ref: GH_TOKEN }}\n      matches:\n        - paths: [{{ type: prefix, value: /repos/me/app/pulls }}]\n          methods: [GET, POST]\n",
        remote("app", "ssh://git@github.com/me/app.git", KEY)
    );
    assert_bottle_error(
        &y,
        "egress.routes[0].matches[0].methods",
        &["forge of git remote `app`", "allow_writes: true", "POST"],
    );
}

#[test]
fn allow_writes_needs_explicit_paths() {
    let y = format!(
        "git:\n  remotes:\n{}egress:\n  routes:\n    - host: api.github.com\n      auth: {{ scheme: Bearer, token_ref: GH_TOKEN }}\n      matches:\n        - methods: [POST]\n          allow_writes: true\n",
        remote("app", "ssh://git@github.com/me/app.git", KEY)
    );
    assert_bottle_error(
        &y,
        "egress.routes[0].matches[0].paths",
        &["each write path listed explicitly"],
    );
}

#[test]
fn tunnel_to_the_forge_is_refused() {
    let y = format!(
        "git:\n  remotes:\n{}egress:\n  routes:\n    - host: github.com\n      tunnel: true\n",
        remote("app", "ssh://git@github.com/me/app.git", KEY)
    );
    assert_bottle_error(&y, "egress.routes[0].tunnel", &["around git-gate"]);
}

#[test]
fn env_never_forwards_a_token_ref() {
    assert_bottle_error(
        "env:\n  MY_GH: ${GH_TOKEN}\negress:\n  routes:\n    - host: api.github.com\n      auth: { scheme: Bearer, token_ref: GH_TOKEN }\n",
        "env.MY_GH",
        &["is a token", "GH_TOKEN"],
    );
}

#[test]
fn env_never_forwards_the_provider_token() {
    assert_bottle_error(
        "env:\n  KEY: ${MY_ANTHROPIC}\nagent_provider:\n  template: claude\n  auth_token: MY_ANTHROPIC\n",
        "env.KEY",
        &["is a token"],
    );
}

#[test]
fn env_cannot_override_the_proxy() {
    assert_bottle_error(
        "env:\n  HTTPS_PROXY: http://evil.example.com\n",
        "env.HTTPS_PROXY",
        &["set by bot-bottle itself"],
    );
}

#[test]
fn env_interpolation_is_refused() {
    assert_bottle_error(
        "env:\n  URL: \"https://${HOST}/x\"\n",
        "env.URL",
        &["exactly `${VAR}`"],
    );
}

#[test]
fn skills_are_plain_names() {
    assert_bottle_error(
        "skills: [\"../../etc\"]\n",
        "skills[0]",
        &["plain skill name"],
    );
}

#[test]
fn inbound_detectors_not_supported_yet() {
    assert_bottle_error(
        "egress:\n  routes:\n    - host: a.example.com\n      dlp: { inbound_detectors: [token_patterns] }\n",
        "egress.routes[0].dlp.inbound_detectors",
        &["not supported yet"],
    );
}

#[test]
fn exact_paths_not_supported_yet() {
    assert_bottle_error(
        "egress:\n  routes:\n    - host: a.example.com\n      matches:\n        - paths: [{ type: exact, value: /x }]\n",
        "egress.routes[0].matches[0].paths[0].type",
        &["not supported yet"],
    );
}

#[test]
fn on_match_value_suggests() {
    assert_bottle_error(
        "egress:\n  routes:\n    - host: a.example.com\n      dlp: { outbound_on_match: blok }\n",
        "egress.routes[0].dlp.outbound_on_match",
        &["did you mean `block`"],
    );
}

#[test]
fn detector_names_are_checked() {
    assert_bottle_error(
        "egress:\n  routes:\n    - host: a.example.com\n      dlp: { outbound_detectors: [token_pattern] }\n",
        "egress.routes[0].dlp.outbound_detectors[0]",
        &["did you mean `token_patterns`"],
    );
}

#[test]
fn template_name_suggests() {
    assert_bottle_error(
        "agent_provider:\n  template: claud\n",
        "agent_provider.template",
        &["did you mean `claude`"],
    );
}

#[test]
fn wrong_type_says_expected_and_found() {
    assert_bottle_error(
        "egress:\n  routes: api.example.com\n",
        "egress.routes",
        &["expected a sequence", "found string"],
    );
}

#[test]
fn ssrf_cidr_is_checked() {
    assert_bottle_error(
        "egress:\n  ssrf_allow_cidrs: [10.0.0.0/33]\n",
        "egress.ssrf_allow_cidrs[0]",
        &["CIDR"],
    );
}

#[test]
fn missing_dockerfile_is_named() {
    assert_bottle_error(
        "agent_provider:\n  dockerfile: ./nope.Dockerfile\n",
        "agent_provider.dockerfile",
        &["does not exist"],
    );
}

#[test]
fn extends_target_must_exist() {
    let f = Fixture::new();
    f.bottle("base", "");
    let file = f.bottle("b", "extends: bsae\n");
    assert_error(
        &f,
        &file,
        "extends",
        &["does not exist", "did you mean `base`"],
    );
}

#[test]
fn extends_cycle_is_refused() {
    let f = Fixture::new();
    let file = f.bottle("b", "extends: c\n");
    let c = f.bottle("c", "extends: b\n");
    let ps = problems(&f);
    assert_eq!(ps.len(), 1);
    assert_eq!(ps[0].key, "extends");
    assert!(ps[0].file == file || ps[0].file == c);
    assert!(
        ps[0].message.contains("cycle") && ps[0].message.contains("b → c → b"),
        "{}",
        ps[0]
    );
}

#[test]
fn error_in_a_parent_names_the_parent_file() {
    let f = Fixture::new();
    let base = f.bottle("base", "egress:\n  routes:\n    - host: localhost\n");
    f.bottle("b", "extends: base\n");
    assert_error(&f, &base, "egress.routes[0].host", &["single-label"]);
}

#[test]
fn agent_needs_a_bottle() {
    let f = Fixture::new();
    let a = f.agent("a", "skills: [x]\n");
    f.bottle("b", "");
    assert_error(&f, &a, "bottle", &["required key is missing"]);
}

#[test]
fn agent_bottle_must_exist() {
    let f = Fixture::new();
    let a = f.agent("a", "bottle: demo\n");
    f.bottle("dmeo", "");
    assert_error(&f, &a, "bottle", &["does not exist", "did you mean `dmeo`"]);
}

#[test]
fn agent_unknown_key() {
    let f = Fixture::new();
    let a = f.agent("a", "bottle: b\nskils: [x]\n");
    f.bottle("b", "");
    assert_error(&f, &a, "skils", &["did you mean `skills`"]);
}

#[test]
fn same_agent_in_home_and_project_is_an_error() {
    let f = Fixture::new();
    f.bottle("b", "");
    let dir = f.dir.path().join("project/.bot-bottle/agents");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("a.md");
    std::fs::write(&p, "---\nbottle: b\n---\nshadow\n").unwrap();
    assert_error(
        &f,
        &p,
        "",
        &["defined both here and in", "home/agents/a.md"],
    );
}

#[test]
fn file_without_front_matter_is_named() {
    let f = Fixture::new();
    let p = f.dir.path().join("home/bottles/b.md");
    std::fs::write(&p, "just text\n").unwrap();
    assert_error(&f, &p, "", &["front matter"]);
}

#[test]
fn invalid_yaml_gives_the_line() {
    let f = Fixture::new();
    let p = f.bottle("b", "env:\n  A: [unclosed\n");
    let ps = problems(&f);
    assert_eq!(ps[0].file, p);
    assert!(ps[0].key.starts_with("line "), "{}", ps[0]);
    assert!(ps[0].message.contains("not valid YAML"), "{}", ps[0]);
}

#[test]
fn several_problems_are_reported_together() {
    let f = Fixture::new();
    f.bottle(
        "b",
        "egress:\n  routes:\n    - host: localhost\n    - host: a.example.com\n      ports: [0]\n",
    );
    let ps = problems(&f);
    let keys: Vec<&str> = ps.iter().map(|p| p.key.as_str()).collect();
    assert!(
        keys.contains(&"egress.routes[0].host") && keys.contains(&"egress.routes[1].ports[0]"),
        "{keys:?}"
    );
}

#[test]
fn broken_manifest_exits_2_naming_file_and_key() {
    let f = Fixture::new();
    let file = f.bottle("b", "egress:\n  routes:\n    - host: intranet\n");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args(["start", "a", "--dry-run"])
        .env("BOT_BOTTLE_HOME", f.dir.path().join("home"))
        .env("DOCKER_HOST", "unix:///nonexistent.sock")
        .current_dir(f.dir.path().join("project"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&file.display().to_string()) && err.contains("egress.routes[0].host"),
        "{err}"
    );
}

#[test]
fn supervise_is_refused_while_the_sidecar_is_missing() {
    if manifest::supervise_available() {
        let f = Fixture::new();
        f.bottle("b", "supervise: true\n");
        assert!(manifest::resolve(&f.home(), "a").unwrap().bottle.supervise);
    } else {
        assert_bottle_error("supervise: true\n", "supervise", &["not supported yet"]);
    }
}

#[test]
fn upstream_host_must_be_routable() {
    let y = format!(
        "git:\n  remotes:\n{}",
        remote("app", "ssh://git@gitserver/me/app.git", KEY)
    );
    assert_bottle_error(
        &y,
        "git.remotes[0].Upstream",
        &["at least two labels", "tunnel route"],
    );
}

#[test]
fn manifest_file_names_are_plain() {
    let f = Fixture::new();
    f.bottle("b", "");
    let dir = f.dir.path().join("project/.bot-bottle/agents");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("evil\u{1b}[2J.md"), "---\nbottle: b\n---\n").unwrap();
    let ps = problems(&f);
    let text = ps[0].to_string();
    assert!(
        text.contains("expected a file name") && !text.contains('\u{1b}'),
        "{text}"
    );
    assert!(text.contains("project/.bot-bottle/agents"), "{text}");
}

/// Without `auth` a route to the forge is read-only all the same: the agent
/// could bring a token of its own.
#[test]
fn forge_write_without_auth_needs_allow_writes() {
    let y = format!(
        "git:\n  remotes:\n{}egress:\n  routes:\n    - host: github.com\n      matches:\n        - paths: [{{ type: prefix, value: /me/app }}]\n          methods: [GET, POST]\n",
        remote("app", "ssh://git@github.com/me/app.git", KEY)
    );
    assert_bottle_error(
        &y,
        "egress.routes[0].matches[0].methods",
        &[
            "forge of git remote `app`",
            "with or without `auth`",
            "allow_writes: true",
            "POST",
        ],
    );
}

/// A wildcard covering a remote's host is that forge: writes need
/// `allow_writes`, and its ssh port is git-gate's alone.
#[test]
fn wildcard_covering_the_remote_is_its_forge() {
    let y = format!(
        "git:\n  remotes:\n{}egress:\n  routes:\n    - host: \"*.example.test\"\n      matches:\n        - methods: [DELETE]\n",
        remote("app", "ssh://git@git.example.test/srv/app.git", KEY)
    );
    assert_bottle_error(
        &y,
        "egress.routes[0].matches[0].methods",
        &[
            "*.example.test covers the forge of git remote `app` (git.example.test)",
            "DELETE",
        ],
    );
    let y = format!(
        "git:\n  remotes:\n{}egress:\n  routes:\n    - host: \"*.example.test\"\n      ports: [2222]\n",
        remote("app", "ssh://git@git.example.test:2222/srv/app.git", KEY)
    );
    assert_bottle_error(&y, "egress.routes[0].ports", &["through git-gate only"]);
}

/// A path prefix egress could never match (it refuses every such request)
/// is refused where the operator wrote it.
#[test]
fn path_prefix_with_a_form_egress_refuses_is_an_error() {
    for (value, why) in [
        ("/repos/me/../admin", "dot segment"),
        ("/repos//me", "empty segment"),
        ("/repos/me;v=1", "matrix parameter"),
        ("/repos%2Fme", "encoded '/'"),
    ] {
        assert_bottle_error(
            &format!("egress:\n  routes:\n    - host: a.example.com\n      matches:\n        - paths: [{{ type: prefix, value: \"{value}\" }}]\n"),
            "egress.routes[0].matches[0].paths[0].value",
            &[&format!("{value:?}"), why],
        );
    }
}
