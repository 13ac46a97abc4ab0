//! The catalog of bot-bottle's images: their names, the Dockerfiles of
//! `images/` (embedded in the binary at compile time), the build context
//! (Dockerfile + the sidecar's static release binary, a tar made in process),
//! the tag (a hash of that content, so an unchanged image is never rebuilt)
//! and which image a plan's roles use. Every image starts `FROM scratch` or
//! from the local base image, which `images/bootstrap-base.sh` makes.
//!
//! It never talks to the engine itself: existence checks, builds and tags go
//! through the Docker gateway (`docker::Engine`), which never pulls.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::cli::{ImagesArgs, ImagesCommand};
use crate::docker::Engine;
use crate::error::Error;
use crate::plan::{ImageSource, Plan};
use crate::progress::{Progress, StderrProgress};

include!(concat!(env!("OUT_DIR"), "/dockerfiles.rs"));

/// Repository prefix of every image: `bot-bottle/<name>:<content hash>`.
pub const IMAGE_PREFIX: &str = "bot-bottle/";
/// The local base image (`images/bootstrap-base.sh`); `BOT_BOTTLE_BASE_IMAGE` overrides it.
pub const DEFAULT_BASE_IMAGE: &str = "bot-bottle/base:bookworm";
pub const BASE_IMAGE_ENV: &str = "BOT_BOTTLE_BASE_IMAGE";
/// Directory holding the sidecar release binaries, when not next to the orchestrator.
pub const BIN_DIR_ENV: &str = "BOT_BOTTLE_BIN_DIR";
/// Label on every image built here.
pub const LABEL_IMAGE: &str = "dev.bot-bottle.image";

/// Images whose build context carries a binary of the same name (a workspace package).
pub const BINARY_IMAGES: [&str; 4] = ["egress", "cred-proxy", "git-gate", "supervise-mcp"];
/// Built by `images build` without `--only` (the provider images need npm at build time).
pub const DEFAULT_BUILD: [&str; 5] = [
    "egress",
    "cred-proxy",
    "git-gate",
    "supervise-mcp",
    "test-agent",
];

/// The base image reference.
pub fn base_image() -> String {
    std::env::var(BASE_IMAGE_ENV)
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| DEFAULT_BASE_IMAGE.to_string())
}

/// Names of every image this build knows.
pub fn known_images() -> Vec<&'static str> {
    EMBEDDED_DOCKERFILES
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| *n != "base")
        .collect()
}

/// The embedded Dockerfile of `name`.
pub fn dockerfile(name: &str) -> Result<&'static str, Error> {
    EMBEDDED_DOCKERFILES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
        .ok_or_else(|| {
            if BINARY_IMAGES.contains(&name) || DEFAULT_BUILD.contains(&name) {
                Error::NoDockerfile {
                    name: name.to_string(),
                }
            } else {
                Error::UnknownImage {
                    name: name.to_string(),
                    known: known_images().join(", "),
                }
            }
        })
}

/// Where the binary of `name` is looked for, in order: `BOT_BOTTLE_BIN_DIR`,
/// the release directory of the target the orchestrator was built in, the
/// orchestrator's own directory (and its parent, for test executables).
pub fn binary_search_path() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os(BIN_DIR_ENV).filter(|d| !d.is_empty()) {
        dirs.push(PathBuf::from(d));
    }
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            // target/<triple>/{debug,release}[/deps]/exe → target/<triple>/release
            for anc in dir.ancestors().take(3) {
                if matches!(
                    anc.file_name().and_then(|n| n.to_str()),
                    Some("debug" | "release")
                ) {
                    if let Some(p) = anc.parent() {
                        dirs.push(p.join("release"));
                    }
                }
            }
            dirs.push(dir.to_path_buf());
            if let Some(p) = dir.parent() {
                dirs.push(p.to_path_buf());
            }
        }
    }
    let mut seen = Vec::new();
    dirs.retain(|d| {
        let keep = !seen.contains(d);
        seen.push(d.clone());
        keep
    });
    dirs
}

/// The release binary of a sidecar image.
pub fn find_binary(name: &str) -> Result<PathBuf, Error> {
    let dirs = binary_search_path();
    for d in &dirs {
        let p = d.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(Error::MissingBinary {
        name: name.to_string(),
        package: name.to_string(),
        searched: dirs,
    })
}

/// Everything an image is built from.
struct Context {
    name: String,
    dockerfile: String,
    binary: Option<(String, Vec<u8>)>,
    base: String,
}

impl Context {
    fn load(name: &str) -> Result<Context, Error> {
        let dockerfile = dockerfile(name)?.to_string();
        let binary = if BINARY_IMAGES.contains(&name) {
            let p = find_binary(name)?;
            let bytes = std::fs::read(&p).map_err(|e| Error::io(&p, e))?;
            Some((name.to_string(), bytes))
        } else {
            None
        };
        Ok(Context {
            name: name.to_string(),
            dockerfile,
            binary,
            base: base_image(),
        })
    }

    fn hash(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"bot-bottle image v1\0");
        h.update(self.name.as_bytes());
        h.update(b"\0");
        h.update(self.dockerfile.as_bytes());
        h.update(b"\0");
        h.update(self.base.as_bytes());
        h.update(b"\0");
        if let Some((n, b)) = &self.binary {
            h.update(n.as_bytes());
            h.update(b"\0");
            h.update(b);
        }
        hex::encode(&h.finalize()[..8])
    }

    fn tag(&self) -> String {
        format!("{IMAGE_PREFIX}{}:{}", self.name, self.hash())
    }

    fn uses_base(&self) -> bool {
        self.dockerfile.lines().any(|l| {
            let l = l.trim_start();
            l.len() > 5
                && l[..5].eq_ignore_ascii_case("FROM ")
                && !l[5..].trim().eq_ignore_ascii_case("scratch")
        })
    }

    fn tar(&self) -> Result<Vec<u8>, Error> {
        let mut b = tar::Builder::new(Vec::new());
        let mut add = |path: &str, mode: u32, data: &[u8]| -> std::io::Result<()> {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(mode);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_cksum();
            b.append_data(&mut h, path, data)
        };
        let io = |e| Error::io("build context", e);
        add("Dockerfile", 0o644, self.dockerfile.as_bytes()).map_err(io)?;
        if let Some((n, bytes)) = &self.binary {
            add(n, 0o755, bytes).map_err(io)?;
        }
        let mut out = b.into_inner().map_err(io)?;
        out.flush().map_err(io)?;
        Ok(out)
    }
}

/// The tag `name` would get now (`bot-bottle/<name>:<hash>`), without Docker.
pub fn planned_tag(name: &str) -> Result<String, Error> {
    Ok(Context::load(name)?.tag())
}

/// `name` lower-cased with every character other than an ASCII letter or
/// digit turned into `-`: what image tags and bottle ids may hold.
pub(crate) fn slug(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

/// Tag of an image built from a manifest's own Dockerfile (agent images).
pub fn dockerfile_tag(agent: &str, path: &Path) -> Result<String, Error> {
    let text = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let mut h = Sha256::new();
    h.update(&text);
    h.update(base_image().as_bytes());
    let slug = slug(agent);
    Ok(format!(
        "{IMAGE_PREFIX}agent-{slug}:{}",
        hex::encode(&h.finalize()[..8])
    ))
}

/// Make sure each named image exists, building those that do not; returns
/// name → tag. Unchanged images (same content hash) are not rebuilt.
pub async fn ensure_images(
    engine: &Engine,
    names: &[&str],
    progress: &dyn Progress,
) -> Result<BTreeMap<String, String>, Error> {
    let mut out = BTreeMap::new();
    for name in names {
        let ctx = Context::load(name)?;
        let tag = ctx.tag();
        if engine.image_exists(&tag).await? {
            progress.build_line(name, &format!("{tag} is up to date"));
        } else {
            build(engine, &ctx, &tag, progress).await?;
        }
        // A moving `latest` for people and fixtures; the hash tag is what bottles run.
        let (repo, _) = tag.rsplit_once(':').expect("tag has a colon");
        engine.tag_image(&tag, repo, "latest").await?;
        out.insert(name.to_string(), tag);
    }
    Ok(out)
}

async fn build(
    engine: &Engine,
    ctx: &Context,
    tag: &str,
    progress: &dyn Progress,
) -> Result<(), Error> {
    if ctx.uses_base() && !engine.image_exists(&ctx.base).await? {
        return Err(Error::BaseImageMissing {
            image: ctx.base.clone(),
        });
    }
    progress.build_line(&ctx.name, &format!("building {tag}"));
    let labels = HashMap::from([(LABEL_IMAGE.to_string(), ctx.name.clone())]);
    let args = HashMap::from([("BASE".to_string(), ctx.base.clone())]);
    engine
        .build_image(&ctx.name, tag, ctx.tar()?, &args, &labels, progress)
        .await?;
    progress.build_line(&ctx.name, &format!("built {tag}"));
    Ok(())
}

/// Build an agent image from a manifest's own Dockerfile (`agent_provider.dockerfile`)
/// under `tag` (see [`dockerfile_tag`]). The context holds only that Dockerfile:
/// nothing else of the operator's files reaches the build.
pub async fn ensure_dockerfile_image(
    engine: &Engine,
    tag: &str,
    path: &Path,
    progress: &dyn Progress,
) -> Result<(), Error> {
    if engine.image_exists(tag).await? {
        progress.build_line("agent", &format!("{tag} is up to date"));
        return Ok(());
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let ctx = Context {
        name: "agent".into(),
        dockerfile: text,
        binary: None,
        base: base_image(),
    };
    build(engine, &ctx, tag, progress).await
}

/// The image each role of a plan runs, with where it comes from (sidecars
/// first, then the agent).
pub fn plan_images(plan: &Plan) -> impl Iterator<Item = (&String, &ImageSource)> {
    plan.sidecars
        .iter()
        .map(|s| (&s.image, &s.image_source))
        .chain(std::iter::once((
            &plan.agent_container.image,
            &plan.agent_container.image_source,
        )))
}

/// Make every image a plan names exist: built-in ones by content hash, the
/// agent's own Dockerfile, and overrides (which must already exist: nothing
/// is ever pulled).
pub async fn ensure_plan_images(
    engine: &Engine,
    plan: &Plan,
    progress: &dyn Progress,
) -> Result<(), Error> {
    let mut builtin: Vec<&str> = Vec::new();
    for (image, src) in plan_images(plan) {
        match src {
            ImageSource::Builtin { name } => {
                if !builtin.contains(&name.as_str()) {
                    builtin.push(name);
                }
            }
            ImageSource::Dockerfile { path } => {
                ensure_dockerfile_image(engine, image, path, progress).await?
            }
            ImageSource::Override { image } => {
                if !engine.image_exists(image).await? {
                    return Err(Error::Build {
                        name: image.clone(),
                        detail: "this image does not exist in the engine, and bot-bottle never pulls: build or load it first".into(),
                    });
                }
            }
        }
    }
    let tags = ensure_images(engine, &builtin, progress).await?;
    for (name, tag) in tags {
        let planned = plan_images(plan)
            .find(|(_, src)| matches!(src, ImageSource::Builtin { name: n } if *n == name))
            .map(|(i, _)| i.clone());
        if planned.as_deref() != Some(tag.as_str()) {
            return Err(Error::Build {
                name,
                detail: format!("built {tag} but the plan names {}: a binary or Dockerfile changed while planning; run again", planned.unwrap_or_default()),
            });
        }
    }
    Ok(())
}

/// `orchestrator images build [--only NAME]`.
pub async fn run_cli(args: &ImagesArgs) -> Result<u8, Error> {
    let ImagesCommand::Build { only } = &args.command;
    let names: Vec<&str> = match only {
        Some(n) => {
            dockerfile(n)?;
            vec![n.as_str()]
        }
        None => DEFAULT_BUILD
            .iter()
            .copied()
            .filter(|n| EMBEDDED_DOCKERFILES.iter().any(|(e, _)| e == n))
            .collect(),
    };
    if only.is_none() {
        for n in DEFAULT_BUILD {
            if !names.contains(&n) {
                eprintln!("note: images/{n}.Dockerfile was not in this build of the orchestrator; skipping {n}");
            }
        }
    }
    let engine = Engine::connect().await?;
    let progress = StderrProgress::default();
    if names.len() == 1 {
        for (name, tag) in ensure_images(&engine, &names, &progress).await? {
            println!("{name}\t{tag}");
        }
        return Ok(0);
    }
    // Several images: one failure (say a binary not built yet) does not stop the others.
    let mut failed = Vec::new();
    for name in names {
        match ensure_images(&engine, &[name], &progress).await {
            Ok(tags) => {
                for (name, tag) in tags {
                    println!("{name}\t{tag}");
                }
            }
            Err(e) => {
                eprintln!("error: {e}");
                failed.push(name);
            }
        }
    }
    if failed.is_empty() {
        Ok(0)
    } else {
        eprintln!("not built: {}", failed.join(", "));
        Ok(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_changes_with_content() {
        let a = Context {
            name: "x".into(),
            dockerfile: "FROM scratch\n".into(),
            binary: Some(("x".into(), vec![1])),
            base: "b".into(),
        };
        let mut b = Context {
            name: "x".into(),
            dockerfile: "FROM scratch\n".into(),
            binary: Some(("x".into(), vec![1])),
            base: "b".into(),
        };
        assert_eq!(a.tag(), b.tag());
        assert!(a.tag().starts_with("bot-bottle/x:"));
        b.binary = Some(("x".into(), vec![2]));
        assert_ne!(a.tag(), b.tag());
        assert!(!a.uses_base());
        let c = Context {
            name: "y".into(),
            dockerfile: "ARG BASE=z\nFROM ${BASE}\n".into(),
            binary: None,
            base: "b".into(),
        };
        assert!(c.uses_base());
    }

    #[test]
    fn context_tar_holds_dockerfile_and_binary() {
        let a = Context {
            name: "x".into(),
            dockerfile: "FROM scratch\n".into(),
            binary: Some(("x".into(), vec![1, 2, 3])),
            base: "b".into(),
        };
        let tar = a.tar().unwrap();
        let mut ar = tar::Archive::new(&tar[..]);
        let names: Vec<(String, u32)> = ar
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.path().unwrap().display().to_string(),
                    e.header().mode().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            names,
            vec![("Dockerfile".to_string(), 0o644), ("x".to_string(), 0o755)]
        );
    }

    #[test]
    fn test_agent_is_embedded() {
        assert!(dockerfile("test-agent").unwrap().contains("FROM ${BASE}"));
        assert!(matches!(
            dockerfile("nope"),
            Err(Error::UnknownImage { .. })
        ));
    }
}
