//! Test fixture: a real ssh upstream (images/upstream-sshd.Dockerfile) and
//! the gate (images/git-gate.Dockerfile, with the binary under test) on a
//! Docker network of the test's own; the "agent" is git on the host talking
//! to the gate's published port. Everything created is labelled
//! `dev.bot-bottle.test` and removed when the fixture drops.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, OnceLock};

use sha2::{Digest, Sha256};

pub const LABEL: &str = "dev.bot-bottle.test";
pub const UPSTREAM_HOST: &str = "upstream.example.test";
/// A value the gate knows as a bottle secret (its known_secrets_file).
pub const CANARY: &str = "bbcanary-7f3k29xq81mzv4lw0p6dQ";
/// A GitHub token shape the scanner's built-in rules recognise.
pub const GH_TOKEN: &str = "ghp_R4nd0mT0k3nV4lu3xYz8Qw2Lp9Hs6Dm1Kc5F";

pub use test_support::docker::docker_or_skip;
use test_support::docker::image_exists;

pub fn run(mut cmd: impl std::borrow::BorrowMut<Command>) -> Output {
    let cmd = cmd.borrow_mut();
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

pub fn run_ok(mut cmd: impl std::borrow::BorrowMut<Command>) -> String {
    let cmd = cmd.borrow_mut();
    let out = run(&mut *cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn docker(args: &[&str]) -> Command {
    let mut c = Command::new("docker");
    c.args(args);
    c
}

pub struct Images {
    pub gate: String,
    pub sshd: String,
}

/// Build both images once per test run, tagged by a hash of their inputs.
pub fn images() -> &'static Images {
    static IMAGES: OnceLock<Images> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let bin = PathBuf::from(env!("CARGO_BIN_EXE_git-gate"));
        let images = Path::new(env!("CARGO_MANIFEST_DIR")).join("../images");
        Images {
            gate: build(
                "bb-test/git-gate",
                &images.join("git-gate.Dockerfile"),
                Some(("git-gate", &bin)),
            ),
            sshd: build(
                "bb-test/upstream-sshd",
                &images.join("upstream-sshd.Dockerfile"),
                None,
            ),
        }
    })
}

fn build(repo: &str, dockerfile: &Path, file: Option<(&str, &Path)>) -> String {
    let mut h = Sha256::new();
    h.update(std::fs::read(dockerfile).expect("read Dockerfile"));
    if let Some((_, p)) = file {
        h.update(std::fs::read(p).expect("read binary"));
    }
    let tag = format!("{repo}:{}", &hex::encode(h.finalize())[..16]);
    if image_exists(&tag) {
        return tag;
    }
    let ctx = tempfile::tempdir().expect("tempdir");
    std::fs::copy(dockerfile, ctx.path().join("Dockerfile")).expect("copy Dockerfile");
    if let Some((name, p)) = file {
        std::fs::copy(p, ctx.path().join(name)).expect("copy binary");
    }
    run_ok(
        docker(&[
            "build",
            "-q",
            "--label",
            &format!("{LABEL}=git-gate-images"),
            "-t",
            &tag,
            ctx.path().to_str().unwrap(),
        ])
        .env("DOCKER_BUILDKIT", "0"),
    );
    tag
}

/// One test's world: network, upstream sshd, gate, client work dirs.
pub struct World {
    pub name: String,
    pub network: String,
    pub sshd: String,
    pub host_key: String,
    pub dir: tempfile::TempDir,
    pub key: PathBuf,
    containers: Mutex<Vec<String>>,
    pub gate: Option<String>,
    pub port: u16,
}

impl Drop for World {
    fn drop(&mut self) {
        let cs = self.containers.lock().unwrap().clone();
        if !cs.is_empty() {
            let mut args = vec!["rm", "-f", "-v"];
            args.extend(cs.iter().map(String::as_str));
            let _ = run(docker(&args).stdout(Stdio::null()).stderr(Stdio::null()));
        }
        let _ = run(docker(&["network", "rm", &self.network])
            .stdout(Stdio::null())
            .stderr(Stdio::null()));
    }
}

/// Follows a container's log until `want` holds for everything read so far
/// (returns that log) or the container stops (Err with the whole log).
/// stdout and stderr are read on two threads, so lines of the two streams may
/// arrive in either order.
fn wait_log(container: &str, want: impl Fn(&str) -> bool) -> Result<String, String> {
    let mut child = docker(&["logs", "-f", container])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("docker logs");
    // Merge stderr into the scan by reading it on a thread.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let tx2 = tx.clone();
    let t1 = std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx2.send(l).is_err() {
                break;
            }
        }
    });
    let stdout = child.stdout.take().unwrap();
    let t2 = std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let mut log = String::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let found = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                log.push_str(&line);
                log.push('\n');
                if want(&log) {
                    break true;
                }
            }
            Err(_) => break false,
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    drop(rx);
    let _ = t1.join();
    let _ = t2.join();
    if found {
        Ok(log)
    } else {
        Err(log)
    }
}

#[derive(Default)]
pub struct GateOptions {
    pub host_key: Option<String>,
    pub remote_extra: String,
    pub global_extra: String,
}

impl World {
    /// Network + upstream sshd holding `app.git` with one commit on `main`.
    pub fn new(test: &str) -> World {
        let imgs = images();
        let name = format!(
            "gg-{test}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
                % 100_000
        );
        let label = format!("{LABEL}={name}");
        let dir = tempfile::tempdir().expect("tempdir");
        let key = dir.path().join("gate_key");
        run_ok(Command::new("ssh-keygen").args([
            "-q",
            "-t",
            "ed25519",
            "-N",
            "",
            "-C",
            "gate",
            "-f",
            key.to_str().unwrap(),
        ]));
        let pubkey = std::fs::read_to_string(key.with_extension("pub")).unwrap();
        run_ok(docker(&["network", "create", "--label", &label, &name]));
        let mut world = World {
            name: name.clone(),
            network: name.clone(),
            sshd: format!("{name}-upstream"),
            host_key: String::new(),
            dir,
            key,
            containers: Mutex::new(Vec::new()),
            gate: None,
            port: 0,
        };
        world.containers.lock().unwrap().push(world.sshd.clone());
        run_ok(docker(&[
            "run",
            "-d",
            "--name",
            &world.sshd,
            "--label",
            &label,
            "--network",
            &name,
            "--network-alias",
            UPSTREAM_HOST,
            "-e",
            &format!("AUTHORIZED_KEY={}", pubkey.trim()),
            "-e",
            "REPOS=app",
            &imgs.sshd,
        ]));
        // HOSTKEY is on stdout, "Server listening" on stderr: wait for both.
        let log = wait_log(&world.sshd, |l| {
            l.contains("Server listening") && l.contains("HOSTKEY ")
        })
        .unwrap_or_else(|log| panic!("upstream sshd did not start:\n{log}"));
        world.host_key = log
            .lines()
            .find_map(|l| l.strip_prefix("HOSTKEY "))
            .expect("HOSTKEY line")
            .trim()
            .to_string();
        world.upstream_commit("main", "README", "hello\n", "initial");
        world
    }

    /// Run a shell script as the upstream's git user (someone else pushing upstream).
    pub fn upstream_sh(&self, script: &str) -> String {
        run_ok(docker(&[
            "exec", "-u", "git", &self.sshd, "sh", "-c", script,
        ]))
    }

    /// Commit `file` on `branch` straight into the upstream repository.
    pub fn upstream_commit(&self, branch: &str, file: &str, content: &str, msg: &str) -> String {
        self.upstream_sh(&format!(
            "set -e; w=$(mktemp -d); cd $w; export HOME=$w; git init -q; \
             git config user.email other@example.test; git config user.name Other; \
             if git fetch -q /srv/git/app.git {branch} 2>/dev/null; then git checkout -q FETCH_HEAD; fi; \
             mkdir -p $(dirname {file}); printf '%s' '{content}' > {file}; git add {file}; git commit -q -m '{msg}'; \
             git push -q /srv/git/app.git HEAD:refs/heads/{branch}; git rev-parse HEAD; rm -rf $w"
        ))
        .trim()
        .to_string()
    }

    /// The upstream value of `refname`, if it exists.
    pub fn upstream_rev(&self, refname: &str) -> Option<String> {
        let out = run(docker(&[
            "exec",
            "-u",
            "git",
            &self.sshd,
            "git",
            "--git-dir=/srv/git/app.git",
            "rev-parse",
            "-q",
            "--verify",
            &format!("{refname}^{{commit}}"),
        ]));
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Run one more labelled container on the test network (removed with the world).
    pub fn run_container(&self, suffix: &str, alias: &str, image_and_cmd: &[&str]) -> String {
        let name = format!("{}-{suffix}", self.name);
        self.containers.lock().unwrap().push(name.clone());
        let label = format!("{LABEL}={}", self.name);
        let mut args = vec![
            "run",
            "-d",
            "--name",
            &name,
            "--label",
            &label,
            "--network",
            &self.network,
            "--network-alias",
            alias,
        ];
        args.extend_from_slice(image_and_cmd);
        run_ok(docker(&args));
        name
    }

    /// Wait for a container's log line containing `needle`.
    pub fn wait_for_log(&self, container: &str, needle: &str) -> String {
        wait_log(container, |l| l.contains(needle))
            .unwrap_or_else(|log| panic!("{container} never logged {needle:?}:\n{log}"))
    }

    /// Every upstream ref as "oid ref" lines.
    pub fn upstream_refs(&self) -> String {
        self.upstream_sh(
            "git --git-dir=/srv/git/app.git for-each-ref --format='%(objectname) %(refname)'",
        )
    }

    fn config_toml(&self, opts: &GateOptions) -> String {
        format!(
            "state_dir = \"/state\"\nknown_secrets_file = \"/config/known_secrets\"\n{}\n\
             [[remote]]\nname = \"app\"\nupstream = \"ssh://git@{UPSTREAM_HOST}/srv/git/app.git\"\n\
             identity_file = \"/config/app.key\"\nknown_host_key = \"{}\"\n{}\n",
            opts.global_extra,
            opts.host_key.as_deref().unwrap_or(&self.host_key),
            opts.remote_extra
        )
    }

    /// Create and start a gate container; Err(log) when it does not come up.
    pub fn try_start_gate(&mut self, opts: GateOptions) -> Result<(), String> {
        let imgs = images();
        let gate = format!("{}-gate", self.name);
        self.containers.lock().unwrap().push(gate.clone());
        let cfg = self.dir.path().join("config");
        std::fs::create_dir_all(&cfg).unwrap();
        std::fs::write(cfg.join("git-gate.toml"), self.config_toml(&opts)).unwrap();
        std::fs::write(cfg.join("known_secrets"), format!("{CANARY}\n")).unwrap();
        std::fs::copy(&self.key, cfg.join("app.key")).unwrap();
        run_ok(docker(&[
            "create",
            "--init",
            "--name",
            &gate,
            "--label",
            &format!("{LABEL}={}", self.name),
            "--network",
            &self.network,
            "-p",
            "127.0.0.1::9418",
            // As a bottle runs it: read-only root, no capabilities, the
            // state on a noexec tmpfs (the hooks are links, not scripts).
            "--read-only",
            "-v",
            "/config",
            "--tmpfs",
            "/state:rw,noexec,nosuid,nodev,uid=10003,gid=10003,mode=0700",
            "--tmpfs",
            "/tmp:rw,noexec,nosuid,nodev",
            "--cap-drop",
            "ALL",
            "--security-opt",
            "no-new-privileges",
            &imgs.gate,
        ]));
        // Secrets go in as a tar owned by the gate's uid, mode 0600.
        let tar = run_ok(Command::new("sh").arg("-c").arg(format!(
            "chmod 0600 {c}/* && tar -C {c} --owner=10003 --group=10003 -cf {c}.tar . && docker cp - {gate}:/config < {c}.tar",
            c = cfg.display()
        )));
        let _ = tar;
        run_ok(docker(&["start", &gate]));
        self.gate = Some(gate.clone());
        wait_log(&gate, |l| l.contains("git-gate serving"))?;
        let port = run_ok(docker(&["port", &gate, "9418/tcp"]));
        self.port = port
            .lines()
            .next()
            .and_then(|l| l.rsplit(':').next())
            .and_then(|p| p.trim().parse().ok())
            .expect("published port");
        Ok(())
    }

    pub fn start_gate(&mut self, opts: GateOptions) {
        if let Err(log) = self.try_start_gate(opts) {
            panic!("gate did not start:\n{log}");
        }
    }

    pub fn gate_logs(&self) -> String {
        let out = run(docker(&["logs", self.gate.as_deref().unwrap()]));
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    pub fn url(&self) -> String {
        format!("git://127.0.0.1:{}/app.git", self.port)
    }

    /// A fresh clone through the gate (the agent's view).
    pub fn clone(&self, name: &str) -> Client {
        let path = self.dir.path().join(name);
        let c = Client {
            path: path.clone(),
            home: self.dir.path().to_path_buf(),
        };
        let out = c.git_in(
            self.dir.path(),
            &["clone", "-q", &self.url(), path.to_str().unwrap()],
        );
        assert!(
            out.status.success(),
            "clone through the gate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        c
    }
}

/// git on the host acting as the agent.
pub struct Client {
    pub path: PathBuf,
    home: PathBuf,
}

pub struct Push {
    pub ok: bool,
    pub stderr: String,
}

impl Client {
    fn git_in(&self, dir: &Path, args: &[&str]) -> Output {
        self.git_in_env(dir, args, &[])
    }

    fn git_in_env(&self, dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
        run(Command::new("git")
            .current_dir(dir)
            .env_clear()
            .envs(env.iter().copied())
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .args([
                "-c",
                "user.name=Agent",
                "-c",
                "user.email=agent@example.test",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args))
    }

    pub fn git(&self, args: &[&str]) -> Output {
        self.git_in(&self.path, args)
    }

    pub fn git_ok(&self, args: &[&str]) -> String {
        let out = self.git(args);
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Like `git_ok`, with extra environment (commit dates, identities).
    pub fn git_env_ok(&self, args: &[&str], env: &[(&str, &str)]) -> String {
        let out = self.git_in_env(&self.path, args, env);
        assert!(
            out.status.success(),
            "git {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Write `file` and commit it; returns the new commit id.
    pub fn commit(&self, file: &str, content: &str, msg: &str) -> String {
        let p = self.path.join(file);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        self.git_ok(&["add", "-A"]);
        self.git_ok(&["commit", "-q", "-m", msg]);
        self.git_ok(&["rev-parse", "HEAD"])
    }

    pub fn remove(&self, file: &str, msg: &str) -> String {
        self.git_ok(&["rm", "-q", file]);
        self.git_ok(&["commit", "-q", "-m", msg]);
        self.git_ok(&["rev-parse", "HEAD"])
    }

    pub fn push(&self, args: &[&str]) -> Push {
        let mut a = vec!["push", "origin"];
        a.extend_from_slice(args);
        let out = self.git(&a);
        Push {
            ok: out.status.success(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}
