//! What the engine holds for a home, found by labels only (never by name
//! patterns, so parallel homes never touch each other), and its removal:
//! containers first (they hold the networks and volumes), then the rest.

use std::collections::{BTreeMap, HashMap};

use bollard::query_parameters::{
    ListContainersOptions, ListNetworksOptions, ListVolumesOptions, RemoveContainerOptions,
    RemoveVolumeOptions,
};

use super::{engine_err, is_not_found, DockerBackend};
use crate::backend::{BottleSummary, Leftovers, Resource, Role, LABEL_ID, LABEL_ROLE};
use crate::error::Error;

impl DockerBackend {
    /// Removes one object; one that is gone already is fine.
    pub(super) async fn remove_object(&self, resource: &Resource) -> Result<(), Error> {
        let r = match resource {
            Resource::Service { name, .. } => {
                self.docker()
                    .remove_container(
                        name,
                        Some(RemoveContainerOptions {
                            force: true,
                            v: false,
                            link: false,
                        }),
                    )
                    .await
            }
            Resource::Domain { name } => self.docker().remove_network(name).await,
            Resource::Volume { name } => {
                self.docker()
                    .remove_volume(name, Some(RemoveVolumeOptions { force: true }))
                    .await
            }
        };
        match r {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(engine_err(format!("remove {resource:?}"))(e)),
        }
    }

    pub(super) async fn list_bottles(&self) -> Result<Vec<BottleSummary>, Error> {
        let containers = self
            .docker()
            .list_containers(Some(ListContainersOptions {
                all: true,
                filters: Some(self.filters(None)),
                ..Default::default()
            }))
            .await
            .map_err(engine_err("list containers"))?;
        let mut by_id: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for c in containers {
            let labels = c.labels.unwrap_or_default();
            let (Some(id), Some(role)) = (labels.get(LABEL_ID), labels.get(LABEL_ROLE)) else {
                continue;
            };
            by_id.entry(id.clone()).or_default().insert(
                role.clone(),
                c.state.map(|s| s.to_string()).unwrap_or_default(),
            );
        }
        Ok(by_id
            .into_iter()
            .map(|(id, services)| BottleSummary { id, services })
            .collect())
    }

    pub(super) async fn labelled(&self, bottle: Option<&str>) -> Result<Leftovers, Error> {
        let filters = self.filters(bottle);
        let (containers, networks, volumes) = tokio::try_join!(
            async {
                self.docker()
                    .list_containers(Some(ListContainersOptions {
                        all: true,
                        filters: Some(filters.clone()),
                        ..Default::default()
                    }))
                    .await
                    .map_err(engine_err("list containers"))
            },
            async {
                self.docker()
                    .list_networks(Some(ListNetworksOptions {
                        filters: Some(filters.clone()),
                    }))
                    .await
                    .map_err(engine_err("list networks"))
            },
            async {
                self.docker()
                    .list_volumes(Some(ListVolumesOptions {
                        filters: Some(filters.clone()),
                    }))
                    .await
                    .map_err(engine_err("list volumes"))
            },
        )?;
        let label_of = |labels: Option<&HashMap<String, String>>| {
            labels.and_then(|l| l.get(LABEL_ID)).cloned()
        };
        let bottles = containers
            .iter()
            .filter_map(|c| label_of(c.labels.as_ref()))
            .chain(networks.iter().filter_map(|n| label_of(n.labels.as_ref())))
            .chain(
                volumes
                    .volumes
                    .iter()
                    .flatten()
                    .filter_map(|v| v.labels.get(LABEL_ID).cloned()),
            )
            .collect();
        Ok(Leftovers {
            bottles,
            services: containers
                .into_iter()
                .filter_map(|c| {
                    c.names?
                        .into_iter()
                        .next()
                        .map(|n| n.trim_start_matches('/').to_string())
                })
                .collect(),
            domains: networks.into_iter().filter_map(|n| n.name).collect(),
            volumes: volumes
                .volumes
                .unwrap_or_default()
                .into_iter()
                .map(|v| v.name)
                .collect(),
        })
    }

    pub(super) async fn remove_labelled(
        &self,
        bottle: Option<&str>,
        keep_volumes: bool,
    ) -> Result<Leftovers, Error> {
        let found = self.labelled(bottle).await?;
        // Containers first (they hold the networks and volumes), in parallel.
        let resources: Vec<Resource> = found
            .services
            .iter()
            .map(|name| Resource::Service {
                role: Role::Agent,
                name: name.clone(),
            })
            .collect();
        let removals = resources.iter().map(|r| self.remove_object(r));
        for r in futures_util::future::join_all(removals).await {
            r?;
        }
        // Then networks and volumes, each kind in parallel (teardown time is
        // most of what a short session costs).
        let mut rest: Vec<Resource> = found
            .domains
            .iter()
            .map(|name| Resource::Domain { name: name.clone() })
            .collect();
        if !keep_volumes {
            rest.extend(
                found
                    .volumes
                    .iter()
                    .map(|name| Resource::Volume { name: name.clone() }),
            );
        }
        for r in futures_util::future::join_all(rest.iter().map(|r| self.remove_object(r))).await {
            r?;
        }
        Ok(found)
    }
}
