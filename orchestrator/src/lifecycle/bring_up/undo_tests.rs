//! Bring-up against the fake engine: whatever step fails or is cancelled,
//! the engine holds nothing of the bottle afterwards (what `cleanup` would
//! have to find), and the operator's and other homes' objects are untouched.

use std::collections::{BTreeMap, BTreeSet};

use tokio_util::sync::CancellationToken;

use super::*;
use crate::backend::fake::{FakeBackend, Fault};
use crate::backend::Readiness;
use crate::progress::Quiet;

const ID: &str = "undo-0a1b2c";
const HOME: &str = "home-under-test";
const OPERATOR_NET: &str = "upstream-net";

fn service(role: Role, domains: Vec<Domain>, files: usize) -> ServiceSpec {
    ServiceSpec {
        role,
        image: format!("bot-bottle/{role}:test"),
        cmd: None,
        env: BTreeMap::from([("RUST_LOG".into(), EnvValue::Literal("info".into()))]),
        domains,
        files: (0..files)
            .map(|i| crate::provision::file(&format!("f{i}.toml"), "x = 1", 0o600))
            .collect(),
        init: role == Role::GitGate,
        read_only: role != Role::Agent,
        tmpfs: Vec::new(),
        workspace: role == Role::Agent,
        audit_dir: None,
        memory_bytes: 1 << 28,
        pids_limit: 256,
        nano_cpus: 1_000_000_000,
        readiness: if role == Role::Agent {
            Readiness::Running
        } else {
            Readiness::HealthCheck
        },
        sandboxed: role == Role::Agent,
    }
}

/// Every kind of domain (an attached one too), sidecars with config files
/// on several networks, and an agent with a workspace.
fn layout() -> BottleLayout {
    let attached = Domain::Attached(OPERATOR_NET.into());
    BottleLayout {
        id: ID.into(),
        preferred_ranges: BTreeMap::from([("internal".into(), "10.213.9.0/28".into())]),
        services: vec![
            service(
                Role::Egress,
                vec![
                    Domain::Internal,
                    Domain::Broker,
                    Domain::Egress,
                    Domain::Gate,
                    attached,
                ],
                2,
            ),
            service(Role::CredProxy, vec![Domain::Broker, Domain::Egress], 1),
            service(Role::GitGate, vec![Domain::Internal, Domain::Gate], 1),
            service(Role::Agent, vec![Domain::Internal], 0),
        ],
        connections: Vec::new(),
    }
}

fn secrets() -> Secrets {
    Secrets {
        ca_cert_pem: "-----BEGIN CERTIFICATE-----\nfake\n-----END CERTIFICATE-----\n".into(),
        ca_key_pem: "fake key".into(),
        broker_key_hex: "00".repeat(32),
        canary: "bbcanary-test".into(),
    }
}

fn setup() -> AgentSetup {
    AgentSetup {
        home: "/home/agent".into(),
        user: "1000:1000".into(),
        workdir: "/workspace".into(),
        provider: Some("codex".into()),
        prompt: "be careful".into(),
        supervise: true,
        ..Default::default()
    }
}

/// One bring-up against a fresh fake engine (holding the operator's
/// network), with `fault` at its step; `keep_workspace` as `resume` passes it.
struct Run {
    fake: FakeBackend,
    result: Result<(), Error>,
    _home: tempfile::TempDir,
}

async fn run(fault: Option<(usize, Fault)>, workspace_before: bool) -> Run {
    run_with(fault, workspace_before, |_| {}).await
}

/// `run`, with the fake engine set up further by `prepare` first.
async fn run_with(
    fault: Option<(usize, Fault)>,
    workspace_before: bool,
    prepare: impl FnOnce(&FakeBackend),
) -> Run {
    let home = tempfile::tempdir().unwrap();
    let state = StateDir::create(home.path(), ID).unwrap();
    let cancel = CancellationToken::new();
    let fake = FakeBackend::new(HOME, cancel.clone());
    fake.add_operator_network(OPERATOR_NET, "172.30.0.0/24");
    prepare(&fake);
    if workspace_before {
        fake.ensure_volume(ID, Role::Agent, "workspace")
            .await
            .unwrap();
    }
    if let Some((n, f)) = fault {
        let before = fake.steps().len();
        fake.fault_at(before + n, f);
    }
    let setup = setup();
    let provision = Provision {
        setup: &setup,
        cwd: None,
    };
    let result = bring_up_or_undo(
        &fake,
        &layout(),
        &secrets(),
        provision,
        &state,
        workspace_before,
        &cancel,
        &Quiet,
    )
    .await;
    Run {
        fake,
        result,
        _home: home,
    }
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// How many requests a whole bring-up makes (each is a step a fault can hit).
async fn step_count() -> usize {
    let r = run(None, false).await;
    r.result.expect("a bring-up without faults comes up");
    r.fake.steps().len()
}

#[tokio::test]
async fn a_bottle_comes_up_and_its_teardown_leaves_nothing() {
    let r = run(None, false).await;
    r.result.expect("comes up");
    for role in [Role::Egress, Role::CredProxy, Role::GitGate, Role::Agent] {
        assert!(
            r.fake.running(&crate::docker::container_name(ID, role)),
            "{role} runs"
        );
    }
    assert!(r.fake.objects().len() > 10, "{:?}", r.fake.objects());
    sweep(&r.fake, ID, false).await.unwrap();
    assert_eq!(r.fake.objects(), set(&["network upstream-net"]));
}

#[tokio::test]
async fn teardown_of_a_kept_bottle_leaves_only_its_workspace() {
    let r = run(None, false).await;
    r.result.expect("comes up");
    sweep(&r.fake, ID, true).await.unwrap();
    assert_eq!(
        r.fake.objects(),
        set(&[
            "network upstream-net",
            "volume bb-undo-0a1b2c-agent-workspace"
        ])
    );
}

/// A bring-up that came up despite the fault (only a best-effort read may
/// fail without failing it) is torn down, as `start` would after the session.
async fn settle(r: &Run, step: &str, keep_workspace: bool) {
    if r.result.is_ok() {
        assert!(
            step.starts_with("read "),
            "bring-up ignored a failure at {step}"
        );
        sweep(&r.fake, ID, keep_workspace).await.unwrap();
    }
}

/// What the engine holds after a bring-up that failed at `step`: `base`,
/// plus the other home's object a refused create found in its place.
fn expected_after(base: &[&str], fault: Fault, step: &str) -> BTreeSet<String> {
    let mut out = set(base);
    if fault == Fault::Refuse {
        for kind in ["network", "container"] {
            if let Some(name) = step.strip_prefix(&format!("create {kind} ")) {
                out.insert(format!("{kind} {name}"));
            }
        }
    }
    out
}

#[tokio::test]
async fn a_refusal_at_any_step_leaves_nothing_of_the_bottle() {
    let steps = step_count().await;
    assert!(steps > 20, "bring-up makes {steps} requests");
    for n in 1..=steps {
        let r = run(Some((n, Fault::Refuse)), false).await;
        let step = r.fake.steps()[n - 1].clone();
        assert!(
            !matches!(r.result, Err(Error::Cancelled)),
            "step {n} ({step})"
        );
        settle(&r, &step, false).await;
        assert_eq!(
            r.fake.objects(),
            expected_after(&["network upstream-net"], Fault::Refuse, &step),
            "refusal at step {n} ({step})"
        );
    }
}

/// When the sweep by labels cannot list (an engine error), what bring-up
/// recorded as it went is enough to remove everything it made.
#[tokio::test]
async fn the_undo_record_alone_removes_what_a_refused_bring_up_made() {
    let steps = step_count().await;
    for n in 1..=steps {
        let r = run_with(Some((n, Fault::Refuse)), false, |fake| {
            fake.refuse_listing()
        })
        .await;
        if r.result.is_ok() {
            continue; // a best-effort read: nothing failed, nothing to undo
        }
        let step = r.fake.steps()[n - 1].clone();
        assert_eq!(
            r.fake.objects(),
            expected_after(&["network upstream-net"], Fault::Refuse, &step),
            "refusal at step {n} ({step}) with no sweep"
        );
    }
}

#[tokio::test]
async fn a_cancel_at_any_step_leaves_nothing_behind() {
    let steps = step_count().await;
    for fault in [Fault::CancelBefore, Fault::CancelAfter] {
        for n in 1..=steps {
            let r = run(Some((n, fault)), false).await;
            let step = r.fake.steps()[n - 1].clone();
            assert!(
                matches!(r.result, Err(Error::Cancelled)),
                "{fault:?} at step {n} ({step}): {:?}",
                r.result
            );
            assert_eq!(
                r.fake.objects(),
                set(&["network upstream-net"]),
                "{fault:?} at step {n} ({step}) left objects"
            );
        }
    }
}

#[tokio::test]
async fn a_create_whose_reply_is_lost_is_found_by_its_labels() {
    let steps = step_count().await;
    for n in 1..=steps {
        let r = run(Some((n, Fault::ReplyLost)), false).await;
        let step = r.fake.steps()[n - 1].clone();
        settle(&r, &step, false).await;
        assert_eq!(
            r.fake.objects(),
            set(&["network upstream-net"]),
            "lost reply at step {n} ({step}) left objects"
        );
    }
}

#[tokio::test]
async fn a_failed_resume_keeps_the_workspace_and_nothing_else() {
    let steps = step_count().await;
    let base = [
        "network upstream-net",
        "volume bb-undo-0a1b2c-agent-workspace",
    ];
    for fault in [Fault::Refuse, Fault::CancelAfter, Fault::ReplyLost] {
        for n in 1..=steps {
            let r = run(Some((n, fault)), true).await;
            // The workspace was made before: bring-up's step n is n + 1.
            let step = r.fake.steps()[n].clone();
            settle(&r, &step, true).await;
            assert_eq!(
                r.fake.objects(),
                expected_after(&base, fault, &step),
                "{fault:?} at step {n} ({step})"
            );
        }
    }
}
