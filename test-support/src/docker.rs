//! Tests that need Docker: with `CI=true` a missing engine (or image) FAILS
//! the test, so a CI run never passes by skipping; elsewhere the test skips
//! and says why.

use std::process::{Command, Stdio};

pub fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Ok when the docker CLI reaches an engine; Err(why not).
pub fn docker_reachable() -> Result<(), String> {
    let ok = Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if ok {
        Ok(())
    } else {
        Err("Docker is not reachable".into())
    }
}

pub fn image_exists(image: &str) -> bool {
    Command::new("docker")
        .args(["image", "inspect", image])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// True when `test` can run. Otherwise: with `CI=true` a panic, else a
/// printed skip and false.
pub fn run_or_skip(test: &str, ready: Result<(), String>) -> bool {
    match ready {
        Ok(()) => true,
        Err(why) if in_ci() => panic!("{test}: {why}, and CI=true: this test must run"),
        Err(why) => {
            eprintln!("skipping {test}: {why}");
            false
        }
    }
}

/// True when Docker can be used (see [`run_or_skip`]).
pub fn docker_or_skip(test: &str) -> bool {
    run_or_skip(test, docker_reachable())
}
