//! Bring-up mechanics against the Docker engine with a stub egress: the
//! isolation of the internal network, teardown that leaves nothing, undo on
//! cancel at several points, two bottles at once, stop/resume of a workspace.

mod e2e_support;

use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use e2e_support::*;
use orchestrator::lifecycle::{self, Bottle, Quiet};
use tokio_util::sync::CancellationToken;

fn host_ipv4_addresses() -> Vec<String> {
    let o = Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3))
        .filter_map(|a| a.split('/').next())
        .map(str::to_string)
        .collect()
}

fn sh(bottle_cmd: &str) -> Vec<String> {
    vec!["bash".into(), "-c".into(), bottle_cmd.into()]
}

/// Connects to the engine and brings `plan` up, as `orchestrator start` does.
async fn bring_up(
    th: &TestHome,
    plan: &orchestrator::plan::Plan,
    cancel: &CancellationToken,
) -> Result<lifecycle::Bottle, lifecycle::Error> {
    let backend = lifecycle::connect(&th.home).await?;
    lifecycle::bring_up_plan(backend, &th.home, plan, None, cancel, &Quiet).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_reaches_its_sidecar_but_not_the_host_and_teardown_leaves_nothing() {
    if !docker_or_skip("isolation") {
        return;
    }
    stub_images();
    let th = TestHome::new();
    let id = unique_id("iso");
    let plan = stub_plan(&th, &id);
    // A listener on every host address, as an operator's dev server would be.
    let listener = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();

    let cancel = CancellationToken::new();
    let bottle = bring_up(&th, &plan, &cancel).await.expect("bring-up");
    // The stub has no health check, so bring-up returns once it runs, which
    // may be before its server listens.
    wait_listening(&format!("bb-{id}-egress"), 3128, "the stub egress");

    // The sidecar is reachable by its name (ExtraHosts) on the internal network.
    let out = bottle
        .capture(sh(
            "curl -s -o /dev/null -w '%{http_code}' --noproxy '*' -m 5 http://egress:3128/",
        ))
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200",
        "agent -> egress: {out:?}"
    );

    // The host is not: neither its own addresses nor the bridge's gateway.
    let gw = {
        let r = bottle
            .capture(sh("ip route | awk '/default/ {print $3}'"))
            .await
            .unwrap();
        String::from_utf8_lossy(&r.stdout).trim().to_string()
    };
    let mut targets = host_ipv4_addresses();
    if !gw.is_empty() {
        targets.push(gw);
    }
    for ip in &targets {
        let r = bottle
            .capture(sh(&format!(
                "curl -s -o /dev/null -w '%{{http_code}}' --noproxy '*' -m 3 http://{ip}:{port}/"
            )))
            .await
            .unwrap();
        assert_ne!(
            r.exit_code, 0,
            "the agent reached the host at {ip}:{port}: {r:?}"
        );
    }
    assert!(
        listener.accept().is_err(),
        "no connection may have arrived at the host listener"
    );
    // Nor over IPv6: the agent has no IPv6 address at all, not even the
    // link-local one that would reach the host's end of the bridge.
    let v6 = bottle
        .capture(sh("ip -6 addr show && echo listed"))
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&v6.stdout).trim(),
        "listed",
        "the agent has IPv6 addresses (or no `ip`): {v6:?}"
    );

    // Proxy settings in both cases, the CA trust variables and a canary.
    let env = bottle.capture(vec!["env".into()]).await.unwrap();
    let env = String::from_utf8_lossy(&env.stdout).to_string();
    for needle in [
        "http_proxy=http://egress:3128",
        "HTTPS_PROXY=http://egress:3128",
        "SSL_CERT_FILE=",
        "NODE_EXTRA_CA_CERTS=",
        "BOT_BOTTLE_CANARY=bbcanary-",
    ] {
        assert!(
            env.contains(needle),
            "{needle} missing from the agent's env:\n{env}"
        );
    }
    assert!(
        !env.contains("BOT_BOTTLE_BROKER_KEY"),
        "the broker key is egress's only"
    );
    // The bottle CA is in the agent's trust bundle.
    let ca = std::fs::read_to_string(state_dir(&th, &id).join("secrets/ca.pem")).unwrap();
    let bundle = bottle.capture(sh("cat $SSL_CERT_FILE")).await.unwrap();
    assert!(String::from_utf8_lossy(&bundle.stdout).contains(ca.lines().nth(1).unwrap()));
    // git identity provisioned.
    let git = bottle.capture(sh("git config user.email")).await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&git.stdout).trim(),
        "bot@example.test"
    );

    // Outside names resolve nowhere from the agent: Docker's embedded DNS
    // forwards what it cannot answer, before Docker 26 from the host's own
    // namespace when the host resolver is on loopback (CVE-2024-29018), so
    // the agent's only forwarder is one that leads nowhere. Its sidecars'
    // names still resolve; egress (the way out) keeps the engine's resolvers.
    let dns_of = |role: &str| inspect(&id, role, "{{json .HostConfig.Dns}}");
    assert_eq!(
        dns_of("agent"),
        format!("[\"{}\"]", orchestrator::docker::DNS_NOWHERE)
    );
    assert!(
        matches!(dns_of("egress").as_str(), "null" | "[]"),
        "{}",
        dns_of("egress")
    );
    let names = bottle.capture(sh("getent hosts egress")).await.unwrap();
    assert_eq!(names.exit_code, 0, "the sidecar's name resolves: {names:?}");
    let probe = bottle
        .capture(sh(
            "command -v dig >/dev/null || echo no-dig; dig +short +tries=1 +time=2 @127.0.0.11 leak-probe.example.com A",
        ))
        .await
        .unwrap();
    let probe = String::from_utf8_lossy(&probe.stdout).to_string();
    assert!(!probe.contains("no-dig"), "the agent image lacks dig");
    assert!(
        !probe
            .lines()
            .any(|l| l.parse::<std::net::Ipv4Addr>().is_ok()),
        "an outside name resolved from the agent: {probe}"
    );

    // The egress secrets reached egress, owned by it and private.
    let files = Command::new("docker")
        .args([
            "run",
            "--rm",
            "-v",
            &format!("bb-{id}-egress-config:/c"),
            BASE,
            "stat",
            "-c",
            "%n %u %a",
            "/c/ca.key",
            "/c/egress.toml",
        ])
        .output()
        .unwrap();
    let files = String::from_utf8_lossy(&files.stdout).to_string();
    assert!(files.contains("/c/ca.key 10001 600"), "{files}");
    assert!(files.contains("/c/egress.toml 10001 600"), "{files}");

    assert!(!th.leftovers().is_empty());
    bottle.teardown(false).await.unwrap();
    assert_eq!(
        th.leftovers(),
        Vec::<String>::new(),
        "teardown left objects behind"
    );
    assert!(!state_dir(&th, &id).exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_at_any_point_of_bring_up_removes_everything() {
    if !docker_or_skip("cancel") {
        return;
    }
    stub_images();
    let th = TestHome::new();
    for delay_ms in [30u64, 300, 900] {
        let id = unique_id("cancel");
        let plan = stub_plan(&th, &id);
        let cancel = CancellationToken::new();
        let c2 = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            c2.cancel();
        });
        let r = bring_up(&th, &plan, &cancel).await;
        match r {
            Err(lifecycle::Error::Cancelled) => {}
            Ok(b) => {
                // Bring-up finished before the cancel: tear down and go on.
                b.teardown(false).await.unwrap();
            }
            Err(e) => panic!("unexpected error after cancel at {delay_ms} ms: {e}"),
        }
        assert_eq!(
            th.leftovers(),
            Vec::<String>::new(),
            "cancel at {delay_ms} ms left objects"
        );
        assert!(
            !state_dir(&th, &id).exists(),
            "cancel at {delay_ms} ms left state"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_bottles_of_one_agent_and_stop_resume_keeps_the_workspace() {
    if !docker_or_skip("two bottles") {
        return;
    }
    stub_images();
    let th = TestHome::new();
    let cancel = CancellationToken::new();
    let (id_a, id_b) = (unique_id("twoa"), unique_id("twob"));
    let (plan_a, plan_b) = (stub_plan(&th, &id_a), stub_plan(&th, &id_b));
    let (a, b) = tokio::join!(
        bring_up(&th, &plan_a, &cancel),
        bring_up(&th, &plan_b, &cancel),
    );
    let (a, b) = (a.expect("first bottle"), b.expect("second bottle"));
    let wa = a
        .capture(sh("echo from-a > /workspace/note && cat /workspace/note"))
        .await
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&wa.stdout).trim(), "from-a");
    let wb = b
        .capture(sh("cat /workspace/note 2>/dev/null || echo none"))
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&wb.stdout).trim(),
        "none",
        "bottles share no workspace"
    );
    b.teardown(false).await.unwrap();

    // stop keeps the workspace, resume brings it back.
    assert_eq!(lifecycle::stop(&th.home, &id_a).await.unwrap(), 0);
    assert!(
        !th.leftovers().iter().any(|l| l.starts_with("container")),
        "stop removes containers"
    );
    let reopened = Bottle::open(&th.home, &id_a).await.unwrap();
    lifecycle::bring_back(&reopened, &cancel, &Quiet)
        .await
        .expect("resume");
    let r = reopened.capture(sh("cat /workspace/note")).await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&r.stdout).trim(),
        "from-a",
        "workspace survived stop/resume"
    );
    reopened.teardown(false).await.unwrap();
    assert_eq!(th.leftovers(), Vec::<String>::new());
}
