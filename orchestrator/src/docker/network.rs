//! A bottle's isolation domains as bridge networks: subnet allocation,
//! network options, creating them and finding the attached ones.
//!
//! Bottles take small /28 subnets from a private pool the orchestrator owns,
//! so many bottles (and parallel test runs) never exhaust Docker's default
//! address pools. A free subnet is picked by listing every network on the
//! engine; a race with a parallel `start` is settled by retrying on the
//! engine's overlap error. An attached network is the operator's: it is only
//! looked up, never created or removed here.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use bollard::models::{Ipam, IpamConfig, NetworkCreateRequest};
use bollard::query_parameters::ListNetworksOptions;
use ipnet::Ipv4Net;
use rand::Rng;

use super::{engine_err, network_name, DockerBackend};
use crate::backend::{Domain, DomainInfo};
use crate::error::Error;

/// The pool bottles take subnets from.
pub const POOL: &str = "10.213.0.0/16";
/// Subnet size per domain: 14 usable hosts, more than a bottle needs.
pub const PREFIX: u8 = 28;

/// Every /28 of the pool that overlaps none of `taken`, in a random order
/// (parallel starts then rarely pick the same one).
pub fn free_subnets(taken: &[Ipv4Net]) -> Vec<Ipv4Net> {
    let pool: Ipv4Net = POOL.parse().expect("pool literal");
    let mut free: Vec<Ipv4Net> = pool
        .subnets(PREFIX)
        .expect("prefix fits pool")
        .filter(|s| {
            !taken
                .iter()
                .any(|t| t.contains(&s.network()) || s.contains(&t.network()))
        })
        .collect();
    let mut rng = rand::rng();
    // Fisher-Yates over the first few only: we need a handful of candidates.
    let n = free.len();
    for i in 0..n.min(32) {
        let j = rng.random_range(i..n);
        free.swap(i, j);
    }
    free
}

/// Address of the first host of a subnet (the gateway the engine reserves).
pub fn gateway(net: &Ipv4Net) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(net.network()) + 1)
}

/// Bridge options that leave the host without an address on an isolated
/// network. Docker >= 28 has isolated gateways; older engines only let the
/// bridge have no IPv4 address at all (`inhibit_ipv4`), which has the same
/// effect for a network that never routes out.
pub fn isolation_options(engine_major: u32) -> HashMap<String, String> {
    let mut o = HashMap::new();
    if engine_major >= 28 {
        o.insert(
            "com.docker.network.bridge.gateway_mode_ipv4".into(),
            "isolated".into(),
        );
        o.insert(
            "com.docker.network.bridge.gateway_mode_ipv6".into(),
            "isolated".into(),
        );
    } else {
        o.insert(
            "com.docker.network.bridge.inhibit_ipv4".into(),
            "true".into(),
        );
    }
    o
}

/// Parses the engine's version string ("20.10.24+dfsg1", "28.2.2") into its major.
pub fn engine_major(version: &str) -> u32 {
    version
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0)
}

impl DockerBackend {
    async fn taken_subnets(&self) -> Result<Vec<Ipv4Net>, Error> {
        let nets = self
            .docker()
            .list_networks(None::<ListNetworksOptions>)
            .await
            .map_err(engine_err("list networks"))?;
        Ok(nets
            .iter()
            .filter_map(|n| n.ipam.as_ref()?.config.as_ref())
            .flatten()
            .filter_map(|c| c.subnet.as_ref()?.parse().ok())
            .collect())
    }

    /// Creates an owned domain's network on `preferred` when it is free,
    /// else on another free subnet of the pool; looks an attached one up.
    pub(super) async fn create_network(
        &self,
        bottle: &str,
        domain: &Domain,
        preferred: Option<&str>,
    ) -> Result<DomainInfo, Error> {
        let name = network_name(bottle, domain);
        if let Domain::Attached(_) = domain {
            return self.attached_network(domain, name).await;
        }
        let mut options = HashMap::new();
        if !domain.has_way_out() {
            options = isolation_options(self.info.major);
        }
        let mut last = None;
        let preferred: Option<Ipv4Net> = preferred.and_then(|p| p.parse().ok());
        for attempt in 0..8 {
            let taken = self.taken_subnets().await?;
            let free = free_subnets(&taken);
            let pick = preferred
                .filter(|p| attempt == 0 && free.contains(p))
                .or_else(|| free.first().copied());
            let Some(subnet) = pick else {
                return Err(Error::PoolExhausted { pool: POOL.into() });
            };
            let req = NetworkCreateRequest {
                name: name.clone(),
                driver: Some("bridge".into()),
                internal: Some(!domain.has_way_out()),
                enable_ipv6: Some(false),
                ipam: Some(Ipam {
                    driver: Some("default".into()),
                    config: Some(vec![IpamConfig {
                        subnet: Some(subnet.to_string()),
                        gateway: Some(gateway(&subnet).to_string()),
                        ..Default::default()
                    }]),
                    options: None,
                }),
                options: Some(options.clone()),
                labels: Some(self.labels(bottle, domain.as_str())),
                ..Default::default()
            };
            match self.docker().create_network(req).await {
                Ok(_) => {
                    return Ok(DomainInfo {
                        domain: domain.clone(),
                        name,
                        base: Some(subnet.network()),
                        cidr: Some(subnet.to_string()),
                    })
                }
                // Another bottle took the subnet between our list and create.
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code,
                    message,
                }) if message.contains("overlap") || status_code == 403 => {
                    last = Some(message);
                    continue;
                }
                Err(e) => return Err(engine_err(format!("create network {name}"))(e)),
            }
        }
        Err(Error::Engine {
            what: format!("create network {name} ({})", last.unwrap_or_default()),
            source: bollard::errors::Error::DockerResponseServerError {
                status_code: 409,
                message: "subnet races".into(),
            },
        })
    }

    async fn attached_network(&self, domain: &Domain, name: String) -> Result<DomainInfo, Error> {
        let n = self
            .docker()
            .inspect_network(&name, None)
            .await
            .map_err(|_| Error::MissingNetwork { name: name.clone() })?;
        let cidr = n
            .ipam
            .and_then(|i| i.config)
            .and_then(|c| c.into_iter().find_map(|c| c.subnet));
        Ok(DomainInfo {
            domain: domain.clone(),
            name,
            base: None,
            cidr,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_subnets_skip_taken_ones() {
        let taken: Vec<Ipv4Net> = vec!["10.213.0.0/17".parse().unwrap()];
        let free = free_subnets(&taken);
        assert_eq!(free.len(), 2048);
        assert!(free.iter().all(|s| s.network().octets()[2] >= 128));
    }

    #[test]
    fn a_bigger_network_inside_the_pool_blocks_its_subnets() {
        let taken: Vec<Ipv4Net> = vec!["10.0.0.0/8".parse().unwrap()];
        assert!(free_subnets(&taken).is_empty());
    }

    #[test]
    fn old_engines_get_no_host_address() {
        assert_eq!(engine_major("20.10.24+dfsg1"), 20);
        assert!(isolation_options(20).contains_key("com.docker.network.bridge.inhibit_ipv4"));
        assert_eq!(
            isolation_options(28)
                .get("com.docker.network.bridge.gateway_mode_ipv4")
                .map(String::as_str),
            Some("isolated")
        );
    }
}
