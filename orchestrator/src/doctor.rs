//! `orchestrator doctor`: can this machine run bottles? Each check says what it
//! found and, for a problem, the fix. Read-only: it never creates, pulls or
//! removes anything. Exit code 1 when something required is missing.

use std::path::Path;

use crate::docker::Engine;
use crate::error::Error;
use crate::images;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// Works, but weaker or slower than it could be.
    Warn,
    /// Bottles cannot run until this is fixed.
    Fail,
}

#[derive(Debug, Clone)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub detail: String,
    pub fix: Option<String>,
}

fn check(name: &str, status: Status, detail: impl Into<String>, fix: Option<&str>) -> Check {
    Check {
        name: name.to_string(),
        status,
        detail: detail.into(),
        fix: fix.map(|s| s.to_string()),
    }
}

/// Isolation mode for internal networks on an engine of this major version.
pub fn isolation_mode(major: u32) -> (&'static str, &'static str) {
    if major >= 28 {
        ("isolated-gateway", "internal networks get gateway_mode_ipv4/ipv6=isolated: the host has no address on them")
    } else {
        (
            "inhibit-ipv4",
            "Docker < 28 has no isolated gateway mode; internal networks are created with \
             com.docker.network.bridge.inhibit_ipv4=true so the host gets no address on them",
        )
    }
}

/// Free bytes on the filesystem holding `path` (via `df`, which every Linux has).
pub fn free_bytes(path: &Path) -> Option<u64> {
    let out = std::process::Command::new("df")
        .arg("-Pk")
        .arg(path)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().nth(1)?;
    let avail_kib: u64 = line.split_whitespace().nth(3)?.parse().ok()?;
    Some(avail_kib * 1024)
}

/// Run every check.
pub async fn checks() -> Vec<Check> {
    let mut out = Vec::new();
    let host = std::env::var("DOCKER_HOST")
        .unwrap_or_else(|_| "unix:///var/run/docker.sock (default)".into());
    let engine = match Engine::connect().await {
        Ok(e) => {
            out.push(check(
                "engine",
                Status::Ok,
                format!("reachable at {host}"),
                None,
            ));
            e
        }
        Err(e) => {
            out.push(check(
                "engine",
                Status::Fail,
                format!("not reachable at {host}: {e}"),
                Some("start the Docker daemon (`systemctl start docker`), or point DOCKER_HOST at a running engine (Podman: unix:///run/podman/podman.sock)"),
            ));
            out.extend(local_checks(None));
            return out;
        }
    };
    // An engine that answers the connection but not these is still
    // reported: with an unknown version.
    let info = engine.probe_what_answers().await;
    let v = info.version.clone().unwrap_or_else(|| "unknown".into());
    let api = info.api_version.clone().unwrap_or_else(|| "?".into());
    let major = info.major;
    let (mode, why) = isolation_mode(major);
    out.push(check(
        "engine version",
        if major >= 28 {
            Status::Ok
        } else {
            Status::Warn
        },
        format!("{v} (API {api}); isolation of internal networks: {mode}: {why}"),
        (major < 28).then_some("upgrade to Docker Engine >= 28 for isolated gateways"),
    ));
    if major > 0 && major < 26 {
        out.push(check(
            "internal DNS",
            Status::Warn,
            format!("Docker {v} < 26: the engine's DNS may forward a lookup from an internal-only container to the host's resolver (CVE-2024-29018); bot-bottle gives the agent and git-gate a forwarder that leads nowhere ({})", crate::docker::DNS_NOWHERE),
            Some("upgrade to Docker Engine >= 26 (>= 28 recommended); egress never resolves names that match no route"),
        ));
    }
    let runsc = info.runsc;
    out.push(if runsc {
        check("runsc", Status::Ok, "gVisor (runsc) is registered: agents run under it", None)
    } else {
        check(
            "runsc",
            Status::Warn,
            "the engine offers no runsc runtime: agents run under runc",
            Some("install gVisor and register it in /etc/docker/daemon.json (\"runtimes\": {\"runsc\": {\"path\": \"/usr/bin/runsc\"}}), then restart the engine"),
        )
    });

    out.extend(image_checks(&engine).await);
    let root = info.root_dir.clone();
    out.extend(local_checks(root.as_deref()));
    out
}

/// The images bottles need: the base (required), test-agent, the sidecars.
async fn image_checks(engine: &Engine) -> Vec<Check> {
    let mut out = Vec::new();
    let base = images::base_image();
    out.push(match engine.image_exists(&base).await {
        Ok(true) => check("base image", Status::Ok, format!("{base} present"), None),
        Ok(false) | Err(_) => check("base image", Status::Fail, format!("{base} is missing"), Some("sudo images/bootstrap-base.sh (debootstrap from Debian packages; no registry needed)")),
    });
    let test_agent =
        images::planned_tag("test-agent").unwrap_or_else(|_| "bot-bottle/test-agent:latest".into());
    let present = engine.image_exists(&test_agent).await.unwrap_or(false)
        || engine
            .image_exists("bot-bottle/test-agent:latest")
            .await
            .unwrap_or(false);
    out.push(if present {
        check(
            "test-agent image",
            Status::Ok,
            format!("{test_agent} present"),
            None,
        )
    } else {
        check(
            "test-agent image",
            Status::Fail,
            format!("{test_agent} is missing"),
            Some("orchestrator images build --only test-agent"),
        )
    });
    for name in images::BINARY_IMAGES {
        match images::planned_tag(name) {
            Ok(tag) => out.push(if engine.image_exists(&tag).await.unwrap_or(false) {
                check(
                    &format!("{name} image"),
                    Status::Ok,
                    format!("{tag} present"),
                    None,
                )
            } else {
                check(
                    &format!("{name} image"),
                    Status::Warn,
                    format!("{tag} not built yet (start builds it)"),
                    Some("orchestrator images build"),
                )
            }),
            Err(e @ Error::MissingBinary { .. }) => out.push(check(
                &format!("{name} binary"),
                Status::Warn,
                e.to_string(),
                Some("cargo build --release"),
            )),
            Err(e) => out.push(check(
                &format!("{name} image"),
                Status::Warn,
                e.to_string(),
                None,
            )),
        }
    }
    out
}

fn local_checks(docker_root: Option<&str>) -> Vec<Check> {
    const GIB: u64 = 1 << 30;
    let mut out = Vec::new();
    let mut paths: Vec<(String, std::path::PathBuf)> = Vec::new();
    if let Some(r) = docker_root {
        if Path::new(r).exists() {
            paths.push(("engine data".into(), r.into()));
        }
    }
    if let Ok(home) = crate::home::Home::from_env() {
        let mut p = home.root.clone();
        while !p.exists() {
            if !p.pop() {
                break;
            }
        }
        paths.push(("bot-bottle home".into(), p));
    }
    for (what, p) in paths {
        match free_bytes(&p) {
            Some(b) if b < 2 * GIB => out.push(check("free disk", Status::Fail, format!("{what} ({}): {:.1} GiB free", p.display(), b as f64 / GIB as f64), Some("free at least 2 GiB (e.g. `docker image prune`, remove old bottles with `orchestrator cleanup`)"))),
            Some(b) if b < 5 * GIB => out.push(check("free disk", Status::Warn, format!("{what} ({}): {:.1} GiB free", p.display(), b as f64 / GIB as f64), Some("image builds need a few GiB; free some space"))),
            Some(b) => out.push(check("free disk", Status::Ok, format!("{what} ({}): {:.1} GiB free", p.display(), b as f64 / GIB as f64), None)),
            None => out.push(check("free disk", Status::Warn, format!("{what} ({}): could not measure", p.display()), None)),
        }
    }
    out
}

/// Print the checks; exit code 1 when one failed.
pub async fn run() -> Result<u8, Error> {
    let all = checks().await;
    let mut failed = 0;
    for c in &all {
        let tag = match c.status {
            Status::Ok => "ok  ",
            Status::Warn => "warn",
            Status::Fail => {
                failed += 1;
                "FAIL"
            }
        };
        println!("{tag}  {:<18} {}", c.name, c.detail);
        if let (Some(fix), true) = (&c.fix, c.status != Status::Ok) {
            println!("      {:<18} fix: {fix}", "");
        }
    }
    if failed > 0 {
        println!("\n{failed} problem(s) must be fixed before bottles can run");
        Ok(1)
    } else {
        println!("\nready: bottles can run on this machine");
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolation_mode_by_version() {
        assert_eq!(isolation_mode(20).0, "inhibit-ipv4");
        assert_eq!(isolation_mode(28).0, "isolated-gateway");
    }

    #[test]
    fn free_bytes_of_root() {
        assert!(free_bytes(Path::new("/")).is_some_and(|b| b > 0));
    }
}
