//! Fixtures of the Docker end-to-end tests: a temporary home whose objects
//! are removed on drop (also when a test fails), stub images, hand-made plans.
//! Fixtures may use the docker CLI; the product never does.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use orchestrator::home::Home;
use orchestrator::plan::{
    AgentPlan, EnvValue, EnvVar, GitPlan, ImageSource, NetworkPlan, NetworkRole, Plan, Role,
    RuntimePlan, SidecarPlan,
};

pub const BASE: &str = "bot-bottle/base:bookworm";
pub const STUB_EGRESS: &str = "bb-test/stub-egress:1";
pub const TEST_AGENT: &str = "bb-test/test-agent:1";

pub use test_support::docker::{image_exists, run_or_skip};

/// Whether the tests can use Docker and the base image (see [`run_or_skip`]).
pub fn docker_or_skip(test: &str) -> bool {
    let ready = test_support::docker::docker_reachable().and_then(|()| {
        if image_exists(BASE) {
            Ok(())
        } else {
            Err(format!("no {BASE} (run images/bootstrap-base.sh)"))
        }
    });
    run_or_skip(test, ready)
}

/// `docker inspect -f FORMAT bb-<id>-<role>`, trimmed.
pub fn inspect(id: &str, role: &str, format: &str) -> String {
    let o = Command::new("docker")
        .args(["inspect", "-f", format, &format!("bb-{id}-{role}")])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// How long a server the tests start may take to listen. Generous: on a
/// loaded two-core machine a Python server has taken seconds to bind.
pub const LISTEN_DEADLINE: Duration = Duration::from_secs(30);

/// Returns once something accepts connections on `port` inside `container`
/// (probed there with bash's `/dev/tcp`, so no route from the host is
/// assumed); panics after [`LISTEN_DEADLINE`] naming `what`. `docker run -d`
/// returns when the process starts, not when its server listens.
pub fn wait_listening(container: &str, port: u16, what: &str) {
    let deadline = Instant::now() + LISTEN_DEADLINE;
    loop {
        let probe = Command::new("docker")
            .args([
                "exec",
                container,
                "bash",
                "-c",
                &format!("exec 3<>/dev/tcp/127.0.0.1/{port}"),
            ])
            .output()
            .expect("docker CLI runs");
        if probe.status.success() {
            return;
        }
        if Instant::now() >= deadline {
            let logs = Command::new("docker")
                .args(["logs", "--tail", "20", container])
                .output()
                .map(|o| {
                    format!(
                        "{}{}",
                        String::from_utf8_lossy(&o.stdout),
                        String::from_utf8_lossy(&o.stderr)
                    )
                })
                .unwrap_or_default();
            panic!(
                "{what} was not listening on port {port} of {container} after {} s \
                 (last probe: {})\n--- its last log lines ---\n{logs}",
                LISTEN_DEADLINE.as_secs(),
                String::from_utf8_lossy(&probe.stderr).trim()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Builds a small image from a Dockerfile text (classic builder, no context).
pub fn build_image(tag: &str, dockerfile: &str) {
    if image_exists(tag) {
        return;
    }
    let mut child = Command::new("docker")
        .args([
            "build",
            "-q",
            "-t",
            tag,
            "--label",
            "dev.bot-bottle.test=fixture",
            "-",
        ])
        .env("DOCKER_BUILDKIT", "0")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("docker build");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(dockerfile.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success(), "building {tag}");
}

/// Stand-ins used until the real images are built by the tests that need them.
pub fn stub_images() {
    build_image(
        STUB_EGRESS,
        &format!("FROM {BASE}\nUSER 10001\nCMD [\"python3\",\"-m\",\"http.server\",\"3128\",\"--bind\",\"0.0.0.0\"]\n"),
    );
    build_image(
        TEST_AGENT,
        &format!(
            "FROM {BASE}\nRUN groupadd --gid 1000 agent && useradd --uid 1000 --gid 1000 --create-home --home-dir /home/agent --shell /bin/bash agent && mkdir -p /workspace && chown agent:agent /workspace\nUSER 1000:1000\nWORKDIR /workspace\nCMD [\"/bin/bash\"]\n"
        ),
    );
}

/// A temporary `BOT_BOTTLE_HOME`; its Docker objects are removed on drop.
pub struct TestHome {
    pub dir: tempfile::TempDir,
    pub home: Home,
}

impl TestHome {
    pub fn new() -> TestHome {
        let dir = tempfile::Builder::new()
            .prefix("bb-e2e-")
            .tempdir()
            .unwrap();
        let home = Home::new(dir.path().to_path_buf(), None);
        TestHome { dir, home }
    }

    pub fn hash(&self) -> String {
        self.home.hash()
    }

    /// Names of every object labelled for this home (containers, networks, volumes).
    pub fn leftovers(&self) -> Vec<String> {
        let filter = format!("label=dev.bot-bottle.home={}", self.hash());
        let mut out = Vec::new();
        for (kind, args) in [
            (
                "container",
                vec!["ps", "-a", "--format", "{{.Names}}", "--filter", &filter],
            ),
            (
                "network",
                vec![
                    "network",
                    "ls",
                    "--format",
                    "{{.Name}}",
                    "--filter",
                    &filter,
                ],
            ),
            (
                "volume",
                vec!["volume", "ls", "--format", "{{.Name}}", "--filter", &filter],
            ),
        ] {
            let o = Command::new("docker").args(&args).output().unwrap();
            for l in String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| !l.is_empty())
            {
                out.push(format!("{kind} {l}"));
            }
        }
        out
    }

    /// The orchestrator binary with this home.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_orchestrator"));
        c.env("BOT_BOTTLE_HOME", self.dir.path());
        c.current_dir(self.dir.path());
        c
    }
}

impl Drop for TestHome {
    fn drop(&mut self) {
        let filter = format!("label=dev.bot-bottle.home={}", self.hash());
        let list = |args: &[&str]| -> Vec<String> {
            let o = Command::new("docker").args(args).output();
            o.map(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .map(str::to_string)
                    .filter(|l| !l.is_empty())
                    .collect()
            })
            .unwrap_or_default()
        };
        let cs = list(&["ps", "-aq", "--filter", &filter]);
        if !cs.is_empty() {
            let _ = Command::new("docker")
                .arg("rm")
                .arg("-f")
                .args(&cs)
                .output();
        }
        let ns = list(&["network", "ls", "-q", "--filter", &filter]);
        if !ns.is_empty() {
            let _ = Command::new("docker")
                .args(["network", "rm"])
                .args(&ns)
                .output();
        }
        let vs = list(&["volume", "ls", "-q", "--filter", &filter]);
        if !vs.is_empty() {
            let _ = Command::new("docker")
                .args(["volume", "rm", "-f"])
                .args(&vs)
                .output();
        }
    }
}

fn lit(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: EnvValue::Literal {
            value: value.into(),
        },
    }
}

/// A plan with a stub egress (python http.server on 3128) and the test agent.
pub fn stub_plan(home: &TestHome, id: &str) -> Plan {
    let net = |role: NetworkRole, third: u8| NetworkPlan {
        role,
        name: format!("bb-{id}-{}", role.as_str()),
        subnet: format!("10.213.{third}.0/28").parse().unwrap(),
        gateway: Ipv4Addr::new(10, 213, third, 1),
        internal: role != NetworkRole::Egress,
    };
    let mut addresses = BTreeMap::new();
    addresses.insert(NetworkRole::Internal, Ipv4Addr::new(10, 213, 250, 2));
    addresses.insert(NetworkRole::Broker, Ipv4Addr::new(10, 213, 251, 2));
    addresses.insert(NetworkRole::Egress, Ipv4Addr::new(10, 213, 252, 2));
    Plan {
        format_version: 1,
        id: id.into(),
        agent: "test".into(),
        bottle: "test".into(),
        manifests: vec![],
        home: home.dir.path().to_path_buf(),
        home_hash: home.hash(),
        state_dir: home.dir.path().join("state").join(id),
        labels: BTreeMap::new(),
        runtime: RuntimePlan {
            agent_runtime: "runc".into(),
            engine: "reachable".into(),
            engine_version: None,
            gateway_isolation: "inhibit-ipv4".into(),
        },
        networks: vec![
            net(NetworkRole::Internal, 250),
            net(NetworkRole::Broker, 251),
            net(NetworkRole::Egress, 252),
        ],
        agent_container: AgentPlan {
            container_name: format!("bb-{id}-agent"),
            image: TEST_AGENT.into(),
            image_source: ImageSource::Override {
                image: TEST_AGENT.into(),
            },
            provider: None,
            address: Ipv4Addr::new(10, 213, 250, 10),
            network: format!("bb-{id}-internal"),
            extra_hosts: BTreeMap::new(),
            env: vec![lit("GH_TOKEN", "bottle-placeholder-gh")],
            system_prompt: "be careful".into(),
            skills: vec![],
            command: vec![],
            copy_cwd: None,
            workdir: "/workspace".into(),
            user: "1000:1000".into(),
        },
        sidecars: vec![SidecarPlan {
            role: Role::Egress,
            container_name: format!("bb-{id}-egress"),
            image: STUB_EGRESS.into(),
            image_source: ImageSource::Override {
                image: STUB_EGRESS.into(),
            },
            alias: "egress".into(),
            port: 3128,
            addresses,
            attach_networks: vec![],
            uid: 10001,
            config_file: "egress.toml".into(),
            config: "listen = \"10.213.250.2:3128\"\n".into(),
            env: vec![EnvVar {
                name: "BOT_BOTTLE_BROKER_KEY".into(),
                value: EnvValue::Generated {
                    kind: "broker-key".into(),
                },
            }],
            files: BTreeMap::from([
                ("ca.pem".to_string(), "bottle CA certificate".to_string()),
                ("ca.key".to_string(), "bottle CA key".to_string()),
            ]),
        }],
        routes: vec![],
        ssrf_allow_cidrs: vec![],
        upstream_ca: None,
        git: GitPlan {
            user_name: Some("Bottle Bot".into()),
            user_email: Some("bot@example.test".into()),
            remotes: vec![],
        },
        tokens: vec![],
        supervise: false,
        warnings: vec![],
        notes: vec![],
    }
}

pub fn unique_id(prefix: &str) -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{:06x}", (n ^ std::process::id()) & 0xffffff)
}

pub fn state_dir(home: &TestHome, id: &str) -> PathBuf {
    home.dir.path().join("state").join(id)
}
