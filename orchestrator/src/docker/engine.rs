//! The one connection to a Docker engine: connecting with a deadline, what
//! the engine offers (version, runtimes, cores), and its images (whether one
//! exists, builds with the classic builder, tags).
//!
//! Images are shared by every home (their tags are content hashes), so this
//! part is not scoped to a home; it must never create containers, networks
//! or volumes (that is `DockerBackend`'s, which labels them for its home),
//! and never pull an image.

use std::collections::HashMap;
use std::time::Duration;

use bollard::query_parameters::{BuildImageOptionsBuilder, BuilderVersion, TagImageOptionsBuilder};
use bollard::Docker;
use futures_util::StreamExt;

use crate::error::Error;
use crate::progress::Progress;

/// How long the engine may take to answer the first requests: an engine
/// that does not answer by then is reported as unreachable.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

/// What the engine told about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineInfo {
    /// The engine's version string ("28.2.2", "20.10.24+dfsg1").
    pub version: Option<String>,
    pub api_version: Option<String>,
    /// Major of `version` (0 when unknown).
    pub major: u32,
    /// Whether the engine registers the gVisor runtime.
    pub runsc: bool,
    /// Cores of the engine's host (at least 1).
    pub cpus: i64,
    /// Where the engine keeps its data (for the disk check).
    pub root_dir: Option<String>,
}

impl EngineInfo {
    fn of(
        version: Option<bollard::models::SystemVersion>,
        info: Option<bollard::models::SystemInfo>,
    ) -> EngineInfo {
        let (version, api_version) = version.map_or((None, None), |v| (v.version, v.api_version));
        let info = info.unwrap_or_default();
        EngineInfo {
            major: super::network::engine_major(version.as_deref().unwrap_or("0")),
            version,
            api_version,
            runsc: info
                .runtimes
                .as_ref()
                .is_some_and(|r| r.contains_key("runsc")),
            cpus: info.ncpu.unwrap_or(1).max(1),
            root_dir: info.docker_root_dir,
        }
    }
}

/// A connection to one engine (`DOCKER_HOST` or the local socket).
#[derive(Clone)]
pub struct Engine {
    docker: Docker,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Engine")
    }
}

fn unreachable(detail: impl ToString) -> Error {
    Error::EngineUnreachable {
        detail: detail.to_string(),
    }
}

async fn answer<T>(
    what: &str,
    fut: impl std::future::Future<Output = Result<T, bollard::errors::Error>>,
) -> Result<T, Error> {
    match tokio::time::timeout(ANSWER_TIMEOUT, fut).await {
        Ok(r) => r.map_err(|source| Error::Engine {
            what: what.to_string(),
            source,
        }),
        Err(_) => Err(unreachable(format!(
            "no answer within {} s",
            ANSWER_TIMEOUT.as_secs()
        ))),
    }
}

impl Engine {
    /// Connects and agrees on an API version (the engine here may be as old
    /// as API 1.41). An engine that cannot be reached, or does not answer in
    /// time, is an error naming `DOCKER_HOST`.
    pub async fn connect() -> Result<Engine, Error> {
        let docker = Docker::connect_with_defaults().map_err(unreachable)?;
        match tokio::time::timeout(ANSWER_TIMEOUT, docker.negotiate_version()).await {
            Ok(Ok(docker)) => Ok(Engine { docker }),
            Ok(Err(e)) => Err(unreachable(e)),
            Err(_) => Err(unreachable(format!(
                "no answer within {} s",
                ANSWER_TIMEOUT.as_secs()
            ))),
        }
    }

    /// Asks the engine (read-only) for its version and what it offers.
    pub async fn probe(&self) -> Result<EngineInfo, Error> {
        let version = answer("read the engine version", self.docker.version()).await?;
        let info = answer("read the engine info", self.docker.info()).await?;
        Ok(EngineInfo::of(Some(version), Some(info)))
    }

    /// What of [`Engine::probe`] the engine answers, each request on its
    /// own (`doctor` reports the version even when the info request fails).
    pub async fn probe_what_answers(&self) -> EngineInfo {
        let version = answer("read the engine version", self.docker.version()).await;
        let info = answer("read the engine info", self.docker.info()).await;
        EngineInfo::of(version.ok(), info.ok())
    }

    pub(super) fn docker(&self) -> &Docker {
        &self.docker
    }

    /// Whether `reference` names an image the engine holds (never pulled).
    pub async fn image_exists(&self, reference: &str) -> Result<bool, Error> {
        match self.docker.inspect_image(reference).await {
            Ok(_) => Ok(true),
            Err(e) if super::is_not_found(&e) => Ok(false),
            Err(e) => Err(super::engine_err(format!("inspect image {reference}"))(e)),
        }
    }

    /// Builds `context` (a tar holding `Dockerfile`) as `tag` with the classic
    /// builder (BuildKit would pull its frontend), `BASE` as a build
    /// argument and `labels` on the image; the build's output goes to
    /// `progress` under `name`.
    pub async fn build_image(
        &self,
        name: &str,
        tag: &str,
        context: Vec<u8>,
        build_args: &HashMap<String, String>,
        labels: &HashMap<String, String>,
        progress: &dyn Progress,
    ) -> Result<(), Error> {
        let failed = |detail: String| Error::Build {
            name: name.to_string(),
            detail,
        };
        let opts = BuildImageOptionsBuilder::default()
            .dockerfile("Dockerfile")
            .t(tag)
            .rm(true)
            .forcerm(true)
            .buildargs(build_args)
            .labels(labels)
            .version(BuilderVersion::BuilderV1)
            .build();
        let mut stream =
            self.docker
                .build_image(opts, None, Some(bollard::body_full(context.into())));
        let mut last = String::new();
        while let Some(item) = stream.next().await {
            match item {
                Ok(info) => {
                    if let Some(d) = info.error_detail.and_then(|d| d.message) {
                        return Err(failed(d));
                    }
                    if let Some(s) = info.stream {
                        last = s.trim_end().to_string();
                        progress.build_line(name, &s);
                    } else if let Some(s) = info.status {
                        progress.build_line(name, &s);
                    }
                }
                Err(bollard::errors::Error::DockerStreamError { error }) => {
                    return Err(failed(error));
                }
                Err(e) => return Err(failed(format!("{e} (last output: {last})"))),
            }
        }
        // An engine that drops the stream early reports no error either.
        if !self.image_exists(tag).await? {
            return Err(failed(format!(
                "the engine reported no error but {tag} does not exist (last output: {last})"
            )));
        }
        Ok(())
    }

    /// Tags `image` as `repo:tag`.
    pub async fn tag_image(&self, image: &str, repo: &str, tag: &str) -> Result<(), Error> {
        self.docker
            .tag_image(
                image,
                Some(
                    TagImageOptionsBuilder::default()
                        .repo(repo)
                        .tag(tag)
                        .build(),
                ),
            )
            .await
            .map_err(super::engine_err(format!("tag {image} as {repo}:{tag}")))
    }
}
