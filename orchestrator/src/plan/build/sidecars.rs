//! The sidecars a bottle runs, on the networks each one joins.

use std::collections::BTreeMap;

use super::{planned_image, Builder};
use crate::error::Error;
use crate::plan::{
    EnvValue, EnvVar, ImageSource, NetworkPlan, NetworkRole, RemotePlan, Role, SidecarPlan,
    TokenPlan, BROKER_KEY_ENV, UPSTREAM_CA_FILE,
};

impl Builder<'_> {
    pub(super) fn sidecars(
        &mut self,
        overrides: &[(Role, String)],
        networks: &[NetworkPlan],
        tokens: &[TokenPlan],
        remotes: &[RemotePlan],
    ) -> Result<Vec<SidecarPlan>, Error> {
        let mut roles = vec![Role::Egress];
        if !tokens.is_empty() {
            roles.push(Role::CredProxy);
        }
        if self.has_git {
            roles.push(Role::GitGate);
        }
        if self.bottle.supervise {
            roles.push(Role::Supervise);
        }
        if let Some((role, _)) = overrides.iter().find(|(r, _)| !roles.contains(r)) {
            return Err(Error::SidecarImage {
                value: format!("{role}=…"),
                reason: format!(
                    "this bottle has no {role} sidecar (it runs: {})",
                    roles
                        .iter()
                        .map(|r| r.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        let mut sidecars = Vec::new();
        for role in roles {
            let (image, image_source) = match overrides.iter().find(|(r, _)| *r == role) {
                Some((_, img)) => (img.clone(), ImageSource::Override { image: img.clone() }),
                None => {
                    let bin = role.binary().expect("sidecar role");
                    (
                        planned_image(bin, &mut self.warnings),
                        ImageSource::Builtin {
                            name: bin.to_string(),
                        },
                    )
                }
            };
            sidecars.push(self.sidecar(role, image, image_source, networks, tokens, remotes));
        }
        Ok(sidecars)
    }

    fn sidecar(
        &self,
        role: Role,
        image: String,
        image_source: ImageSource,
        networks: &[NetworkPlan],
        tokens: &[TokenPlan],
        remotes: &[RemotePlan],
    ) -> SidecarPlan {
        let wanted: &[NetworkRole] = match role {
            Role::Egress => &NetworkRole::ALL,
            Role::CredProxy => &[NetworkRole::Broker, NetworkRole::Egress],
            Role::GitGate => &[NetworkRole::Internal, NetworkRole::Gate],
            _ => &[NetworkRole::Internal],
        };
        let addresses = wanted
            .iter()
            // Only networks this bottle has (no gate network without git remotes).
            .filter(|w| networks.iter().any(|n| n.role == **w))
            .map(|n| (*n, self.addr(role, *n)))
            .collect();
        let (env, files) = self.sidecar_inputs(role, tokens, remotes);
        SidecarPlan {
            role,
            container_name: format!("bb-{}-{}", self.id, role.as_str()),
            image,
            image_source,
            alias: role.alias().to_string(),
            port: role.port().expect("sidecar port"),
            addresses,
            // cred-proxy dials the address egress checked, so it must reach
            // the same attached networks (an internal API behind `auth`).
            attach_networks: if matches!(role, Role::Egress | Role::CredProxy) {
                self.bottle.attach_networks.clone()
            } else {
                vec![]
            },
            uid: role.uid(),
            config_file: format!("{}.toml", role.binary().expect("sidecar role")),
            config: String::new(),
            env,
            files,
        }
    }

    /// A sidecar's environment and the files uploaded next to its config.
    fn sidecar_inputs(
        &self,
        role: Role,
        tokens: &[TokenPlan],
        remotes: &[RemotePlan],
    ) -> (Vec<EnvVar>, BTreeMap<String, String>) {
        let broker_key = || EnvVar {
            name: BROKER_KEY_ENV.into(),
            value: EnvValue::Generated {
                kind: "broker-key".into(),
            },
        };
        let known_secrets = "the canary and the agent's forwarded env values, one a line \
                             (at start; never a real token)";
        let mut env = Vec::new();
        let mut files = BTreeMap::new();
        match role {
            Role::Egress => {
                if !tokens.is_empty() {
                    env.push(broker_key());
                }
                files.insert(
                    "ca.pem".into(),
                    "bottle CA certificate (generated at start)".into(),
                );
                files.insert(
                    "ca.key".into(),
                    "bottle CA private key (generated at start; only egress has it)".into(),
                );
                files.insert("known-secrets".into(), known_secrets.into());
            }
            Role::CredProxy => {
                env.push(broker_key());
                for t in tokens {
                    env.push(EnvVar {
                        name: t.var.clone(),
                        value: EnvValue::Host { var: t.var.clone() },
                    });
                }
            }
            Role::GitGate => {
                for r in remotes {
                    files.insert(
                        format!("id_{}", r.name),
                        format!("copy of {}", r.identity_file.display()),
                    );
                }
                files.insert("known-secrets".into(), known_secrets.into());
            }
            _ => {}
        }
        // Both dial upstreams over TLS: egress for plain routes, cred-proxy
        // for `auth` routes.
        if let (Role::Egress | Role::CredProxy, Some(ca)) = (role, &self.bottle.upstream_ca) {
            files.insert(UPSTREAM_CA_FILE.into(), format!("copy of {}", ca.display()));
        }
        (env, files)
    }
}
