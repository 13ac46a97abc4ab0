//! Builds `test-agent` through the images module (bollard, classic builder, tar
//! context made in process) and runs `id` in it. Needs a Docker engine and the
//! base image: with CI=true their absence is a failure, otherwise a skip.

use std::process::Command;

use orchestrator::docker::Engine;
use orchestrator::images;
use orchestrator::progress::Progress;

#[derive(Default)]
struct Quiet(std::sync::Mutex<Vec<String>>);
impl Progress for Quiet {
    fn step(&self, message: &str) {
        self.0.lock().unwrap().push(message.to_string());
    }

    fn build_line(&self, image: &str, text: &str) {
        eprintln!("[{image}] {}", text.trim_end());
        self.0.lock().unwrap().push(text.to_string());
    }
}

/// One test changes BOT_BOTTLE_BASE_IMAGE for the process: the Docker tests
/// of this file run one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

use test_support::docker::in_ci as ci;

/// The engine with the local base image, or None (a printed skip) without
/// them; with CI=true a failure.
async fn engine_with_base_or_skip() -> Option<Engine> {
    let docker = engine_or_skip().await?;
    if !docker.image_exists(&images::base_image()).await.unwrap() {
        let msg = format!(
            "base image {} missing: run sudo images/bootstrap-base.sh",
            images::base_image()
        );
        assert!(!ci(), "CI=true but {msg}");
        eprintln!("skipping: {msg}");
        return None;
    }
    Some(docker)
}

/// The engine, or None (a printed skip) without one; with CI=true a failure.
async fn engine_or_skip() -> Option<Engine> {
    match Engine::connect().await {
        Ok(d) => Some(d),
        Err(e) if ci() => panic!("CI=true but no Docker engine: {e}"),
        Err(e) => {
            eprintln!("skipping: no Docker engine ({e})");
            None
        }
    }
}

/// The engine's id of an image.
fn image_id(tag: &str) -> String {
    let out = Command::new("docker")
        .args(["image", "inspect", "-f", "{{.Id}}", tag])
        .output()
        .expect("docker CLI runs");
    assert!(out.status.success(), "{tag} exists");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Removes the test's container even when an assertion fails.
struct ContainerGuard(String);
impl Drop for ContainerGuard {
    fn drop(&mut self) {
        let _ = Command::new("docker").args(["rm", "-f", &self.0]).output();
    }
}

/// Untags the test's own image tags at the end (the image content stays for the cache).
struct ImageGuard(Vec<String>);
impl Drop for ImageGuard {
    fn drop(&mut self) {
        for t in &self.0 {
            let _ = Command::new("docker").args(["rmi", t]).output();
        }
    }
}

#[tokio::test]
async fn builds_test_agent_and_runs_id_in_it() {
    let _serial = SERIAL.lock().await;
    let Some(docker) = engine_with_base_or_skip().await else {
        return;
    };
    let tags = images::ensure_images(&docker, &["test-agent"], &Quiet::default())
        .await
        .expect("test-agent builds");
    let tag = tags["test-agent"].clone();
    assert_eq!(
        tag,
        images::planned_tag("test-agent").unwrap(),
        "the plan names the tag the build made"
    );

    // A second call finds the image by its content hash and does not rebuild.
    let before = image_id(&tag);
    let again = images::ensure_images(&docker, &["test-agent"], &Quiet::default())
        .await
        .unwrap();
    assert_eq!(again["test-agent"], tag);
    assert_eq!(image_id(&tag), before);

    // Another base (an alias of the same image) changes the content hash: a real
    // build through the classic builder, with its progress reported.
    let alias = format!("bot-bottle/base:images-test-{}", std::process::id());
    let _alias_guard = ImageGuard(vec![alias.clone()]);
    assert!(Command::new("docker")
        .args(["tag", &images::base_image(), &alias])
        .status()
        .unwrap()
        .success());
    std::env::set_var(images::BASE_IMAGE_ENV, &alias);
    let progress = Quiet::default();
    let fresh = images::ensure_images(&docker, &["test-agent"], &progress).await;
    std::env::remove_var(images::BASE_IMAGE_ENV);
    let fresh = fresh.expect("test-agent builds from the aliased base")["test-agent"].clone();
    let _fresh_guard = ImageGuard(vec![fresh.clone()]);
    assert_ne!(
        fresh, tag,
        "a different base gives a different content hash"
    );
    let lines = progress.0.lock().unwrap().join("\n");
    assert!(
        lines.contains(&format!("building {fresh}")) && lines.contains("Step 1/"),
        "{lines}"
    );

    let name = format!("bb-images-test-{}", std::process::id());
    let _guard = ContainerGuard(name.clone());
    let out = Command::new("docker")
        .args([
            "run",
            "--name",
            &name,
            "--label",
            "dev.bot-bottle.test=images",
            "--network",
            "none",
            &tag,
            "id",
        ])
        .output()
        .expect("docker CLI runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("uid=1000(agent)") && stdout.contains("gid=1000(agent)"),
        "{stdout}"
    );
}

#[tokio::test]
async fn unknown_image_is_refused_with_the_known_list() {
    let e = images::planned_tag("no-such-image").unwrap_err();
    assert_eq!(e.exit_code(), 2);
    assert!(e.to_string().contains("test-agent"), "{e}");
}

#[tokio::test]
async fn builds_an_agent_image_from_the_manifest_dockerfile() {
    let _serial = SERIAL.lock().await;
    let Some(docker) = engine_with_base_or_skip().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let df = dir.path().join("Dockerfile.agent");
    // A file next to the Dockerfile must NOT reach the build: the context is the Dockerfile alone.
    std::fs::write(dir.path().join("secret.txt"), "operator file").unwrap();
    std::fs::write(
        &df,
        format!(
            "ARG BASE=bot-bottle/base:bookworm\nFROM ${{BASE}}\nRUN echo built-{} > /hello\n",
            std::process::id()
        ),
    )
    .unwrap();
    let tag = images::dockerfile_tag("My Agent", &df).unwrap();
    assert!(tag.starts_with("bot-bottle/agent-my-agent:"), "{tag}");
    let _guard = ImageGuard(vec![tag.clone()]);
    images::ensure_dockerfile_image(&docker, &tag, &df, &Quiet::default())
        .await
        .expect("builds");
    let out = Command::new("docker")
        .args([
            "run",
            "--rm",
            "--label",
            "dev.bot-bottle.test=images",
            "--network",
            "none",
            &tag,
            "cat",
            "/hello",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("built-{}", std::process::id())
    );
    // An unchanged Dockerfile is not rebuilt.
    let p = Quiet::default();
    images::ensure_dockerfile_image(&docker, &tag, &df, &p)
        .await
        .unwrap();
    assert!(p.0.lock().unwrap().iter().any(|l| l.contains("up to date")));

    let df2 = dir.path().join("Dockerfile.copy");
    std::fs::write(
        &df2,
        "ARG BASE=bot-bottle/base:bookworm\nFROM ${BASE}\nCOPY secret.txt /s\n",
    )
    .unwrap();
    let tag2 = images::dockerfile_tag("copier", &df2).unwrap();
    let _guard2 = ImageGuard(vec![tag2.clone()]);
    let e = images::ensure_dockerfile_image(&docker, &tag2, &df2, &Quiet::default())
        .await
        .unwrap_err();
    assert!(e.to_string().contains("secret.txt"), "{e}");
}

#[tokio::test]
async fn missing_base_image_points_to_the_bootstrap() {
    let _serial = SERIAL.lock().await;
    let Some(docker) = engine_or_skip().await else {
        return;
    };
    std::env::set_var(
        images::BASE_IMAGE_ENV,
        "bot-bottle/base:does-not-exist-in-any-engine",
    );
    let r = images::ensure_images(&docker, &["test-agent"], &Quiet::default()).await;
    std::env::remove_var(images::BASE_IMAGE_ENV);
    let e = r.expect_err("no base, no build").to_string();
    assert!(
        e.contains("bot-bottle/base:does-not-exist-in-any-engine")
            && e.contains("images/bootstrap-base.sh"),
        "{e}"
    );
}

#[test]
fn missing_binary_says_how_to_build_it() {
    let e = orchestrator::Error::MissingBinary {
        name: "egress".into(),
        package: "egress".into(),
        searched: vec!["/opt/bin".into()],
    }
    .to_string();
    assert!(
        e.contains("cargo build --release -p egress")
            && e.contains("BOT_BOTTLE_BIN_DIR")
            && e.contains("/opt/bin"),
        "{e}"
    );
}

/// The gate runs C git on the bottle's most hostile input and holds the push
/// key: its image is git, git-daemon, ssh, sh and their libraries on an
/// empty root, nothing else. Every problem found is listed at once.
fn gate_image_problems(tag: &str) -> Vec<String> {
    const MAX_BYTES: u64 = 60_000_000;
    let mut problems = Vec::new();
    let docker = |args: &[&str]| {
        Command::new("docker")
            .args(args)
            .output()
            .expect("docker CLI runs")
    };

    let out = docker(&["image", "inspect", "-f", "{{.Size}} {{.Config.User}}", tag]);
    assert!(out.status.success(), "inspect {tag}");
    let text = String::from_utf8_lossy(&out.stdout);
    let (size, user) = text.trim().split_once(' ').expect("size and user");
    let size: u64 = size.parse().expect("a size");
    eprintln!("{tag}: {size} bytes, USER {user}");
    if size > MAX_BYTES {
        problems.push(format!("{size} bytes, more than {MAX_BYTES}"));
    }
    if user != "10003" {
        problems.push(format!("USER is {user:?}, not 10003"));
    }

    // The file system, without running anything of the image.
    let name = format!("bb-images-gate-{}", std::process::id());
    let _guard = ContainerGuard(name.clone());
    let created = docker(&[
        "create",
        "--name",
        &name,
        "--label",
        "dev.bot-bottle.test=images",
        tag,
    ]);
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let export = Command::new("docker")
        .args(["export", &name])
        .output()
        .expect("docker export");
    assert!(export.status.success(), "docker export {name}");
    let mut paths = Vec::new();
    for e in tar::Archive::new(&export.stdout[..]).entries().unwrap() {
        let e = e.unwrap();
        paths.push(e.path().unwrap().display().to_string());
    }
    let base = |p: &str| {
        p.trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or("")
            .to_string()
    };
    let unwanted: Vec<&String> = paths
        .iter()
        .filter(|p| {
            let b = base(p);
            b.starts_with("python")
                || b.starts_with("perl")
                || ["curl", "wget", "sshd", "apt", "apt-get", "dpkg", "bash"].contains(&b.as_str())
        })
        .collect();
    for p in unwanted.iter().take(20) {
        problems.push(format!("{p} is in the image"));
    }
    if unwanted.len() > 20 {
        problems.push(format!("… and {} more such paths", unwanted.len() - 20));
    }
    for want in [
        "usr/bin/git",
        "usr/lib/git-core/git-daemon",
        "usr/bin/ssh",
        "usr/bin/sh",
        "usr/local/bin/git-gate",
        "etc/ssl/certs/ca-certificates.crt",
    ] {
        if !paths.iter().any(|p| p.trim_end_matches('/') == want) {
            problems.push(format!("{want} is missing"));
        }
    }

    // What the gate runs works there (every library present), as uid 10003,
    // and none of the removed programs is on PATH.
    let script = r#"
git --version || echo "broken git"
case "$(git daemon -h 2>&1)" in *"usage: git daemon"*) ;; *) echo "broken git-daemon" ;; esac
ssh -V 2>&1 || echo "broken ssh"
for p in git ssh sh; do command -v $p >/dev/null || echo "missing $p"; done
for p in python3 curl sshd apt perl; do if command -v $p >/dev/null; then echo "found $p"; fi; done
while read k v _; do if [ "$k" = Uid: ]; then echo "uid $v"; fi; done < /proc/self/status
"#;
    let ran = docker(&[
        "run",
        "--rm",
        "--label",
        "dev.bot-bottle.test=images",
        "--network",
        "none",
        "--read-only",
        "--cap-drop",
        "ALL",
        "--entrypoint",
        "/bin/sh",
        tag,
        "-c",
        script,
    ]);
    let stdout = String::from_utf8_lossy(&ran.stdout);
    let stderr = String::from_utf8_lossy(&ran.stderr);
    if !ran.status.success() {
        problems.push(format!("sh did not run the checks: {stdout}{stderr}"));
    }
    for l in stdout.lines() {
        if ["broken ", "missing ", "found "]
            .iter()
            .any(|p| l.starts_with(p))
        {
            problems.push(format!("{l} (stderr: {})", stderr.trim()));
        }
    }
    if !stdout.lines().any(|l| l == "uid 10003") {
        problems.push(format!("does not run as uid 10003: {stdout}"));
    }
    if !stdout.contains("git version") || !stdout.contains("OpenSSH") {
        problems.push(format!("git or ssh gave no version: {stdout}{stderr}"));
    }
    problems
}

#[tokio::test]
async fn git_gate_image_is_minimal() {
    let _serial = SERIAL.lock().await;
    // The build below goes through the CLI; the engine is only checked here.
    if engine_with_base_or_skip().await.is_none() {
        return;
    }
    if let Err(e) = images::find_binary("git-gate") {
        assert!(!ci(), "CI=true but {e}");
        eprintln!("skipping: {e}");
        return;
    }
    // Through the CLI, as an operator builds it.
    let out = Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args(["images", "build", "--only", "git-gate"])
        .output()
        .expect("orchestrator runs");
    assert!(
        out.status.success(),
        "images build --only git-gate: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let tag = stdout
        .lines()
        .find_map(|l| l.strip_prefix("git-gate\t"))
        .expect("the CLI prints the tag")
        .to_string();
    assert_eq!(tag, images::planned_tag("git-gate").unwrap());
    let problems = gate_image_problems(&tag);
    assert!(problems.is_empty(), "{tag}:\n{}", problems.join("\n"));
}
