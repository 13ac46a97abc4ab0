//! The agent's container: its image, environment and the sidecars it may reach.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use super::{planned_image, Builder};
use crate::error::Error;
use crate::manifest::{self, EnvSpec, Resolved, Template};
use crate::plan::{
    env_present, AgentPlan, EnvValue, EnvVar, ImageSource, NetworkPlan, NetworkRole, PlanOptions,
    Role, RoutePlan, AGENT_CA_BUNDLE, AGENT_CA_FILE, CANARY_ENV, IMAGE_ENV,
};

impl Builder<'_> {
    pub(super) fn agent(
        &mut self,
        resolved: &Resolved,
        opts: &PlanOptions,
        networks: &[NetworkPlan],
        routes: &[RoutePlan],
    ) -> Result<AgentPlan, Error> {
        let template = self.bottle.provider.as_ref().and_then(|p| p.template);
        let (image, image_source) = self.agent_image(&resolved.agent.name, template)?;
        let env = self.agent_env(template, routes);
        let skills = resolved.skills();
        self.check_agent_inputs(&skills, opts.cwd.as_deref());
        Ok(AgentPlan {
            container_name: format!("bb-{}-agent", self.id),
            image,
            image_source,
            provider: template.map(|t| t.as_str().to_string()),
            address: self.addr(Role::Agent, NetworkRole::Internal),
            network: networks[0].name.clone(),
            extra_hosts: self.agent_extra_hosts(),
            env,
            system_prompt: resolved.agent.prompt.clone(),
            skills,
            command: opts.command.clone(),
            copy_cwd: opts.cwd.clone(),
            workdir: "/workspace".into(),
            user: "1000:1000".into(),
        })
    }

    fn agent_image(
        &mut self,
        agent: &str,
        template: Option<Template>,
    ) -> Result<(String, ImageSource), Error> {
        let provider = self.bottle.provider.as_ref();
        let planned = match provider.and_then(|p| p.dockerfile.clone()) {
            Some(df) => (
                crate::images::dockerfile_tag(agent, &df)?,
                ImageSource::Dockerfile { path: df },
            ),
            None => {
                let name = match template {
                    Some(Template::Claude) => "agent-claude",
                    Some(Template::Codex) => "agent-codex",
                    None => "test-agent",
                };
                (
                    planned_image(name, &mut self.warnings),
                    ImageSource::Builtin {
                        name: name.to_string(),
                    },
                )
            }
        };
        // The override wins, yet what the planned image lacks is still reported.
        Ok(match std::env::var(IMAGE_ENV) {
            Ok(img) if !img.is_empty() => (img.clone(), ImageSource::Override { image: img }),
            _ => planned,
        })
    }

    /// Proxy and CA trust first, then the template's settings, the
    /// placeholders, and the manifest's env (which may replace any of these).
    fn agent_env(&mut self, template: Option<Template>, routes: &[RoutePlan]) -> Vec<EnvVar> {
        let mut env = proxy_and_trust(self.has_git, self.bottle.supervise);
        env.push(EnvVar {
            name: CANARY_ENV.into(),
            value: EnvValue::Generated {
                kind: "canary".into(),
            },
        });
        if let Some(t) = template {
            for (k, v) in manifest::template_agent_env(t) {
                env.push(lit(k, v));
            }
        }
        // Placeholders where the agent's tools look for their tokens.
        for r in routes {
            if let (Some(a), Some(ph)) = (&r.auth, &r.placeholder) {
                let var = match (template, r.origin.starts_with("template:")) {
                    (Some(t), true) => manifest::agent_token_var(t, &a.token_ref).to_string(),
                    _ => a.token_ref.clone(),
                };
                if !env.iter().any(|e| e.name == var) {
                    env.push(lit(&var, ph.clone()));
                }
            }
        }
        for (name, e) in &self.bottle.env {
            env.retain(|x| &x.name != name);
            match &e.spec {
                EnvSpec::Literal(v) => env.push(lit(name, v.clone())),
                EnvSpec::Forward(var) => {
                    if !env_present(var) {
                        self.warnings.push(format!(
                            "{}: env.{name} forwards ${{{var}}}, which is not set in this environment",
                            e.origin.file.display()
                        ));
                    }
                    env.push(EnvVar {
                        name: name.clone(),
                        value: EnvValue::Host { var: var.clone() },
                    });
                }
            }
        }
        env
    }

    /// The sidecars the agent may reach, by alias.
    fn agent_extra_hosts(&self) -> BTreeMap<String, Ipv4Addr> {
        let mut hosts = BTreeMap::new();
        let mut reach = |role: Role| {
            hosts.insert(
                role.alias().to_string(),
                self.addr(role, NetworkRole::Internal),
            );
        };
        reach(Role::Egress);
        if self.has_git {
            reach(Role::GitGate);
        }
        if self.bottle.supervise {
            reach(Role::Supervise);
        }
        hosts
    }

    fn check_agent_inputs(&mut self, skills: &[String], cwd: Option<&Path>) {
        for skill in skills {
            let dir = crate::home::expand_tilde(&format!("~/.claude/skills/{skill}"));
            match std::fs::symlink_metadata(&dir) {
                Ok(m) if m.file_type().is_symlink() => self.warnings.push(format!(
                    "skill `{skill}`: {} is a symbolic link, which bot-bottle never follows",
                    dir.display()
                )),
                Ok(m) if m.is_dir() => {}
                _ => self
                    .warnings
                    .push(format!("skill `{skill}`: {} does not exist", dir.display())),
            }
        }
        if let Some(c) = cwd {
            if !c.is_dir() {
                self.warnings
                    .push(format!("--cwd {} is not a directory", c.display()));
            }
        }
    }
}

fn lit(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: EnvValue::Literal {
            value: value.into(),
        },
    }
}

/// Every client in the agent goes through egress (but for the sidecars it
/// reaches directly) and trusts the bottle's CA. The layout sets these
/// again under the plan's env, so a plan made by hand gets them too.
pub fn proxy_and_trust(has_git: bool, supervise: bool) -> Vec<EnvVar> {
    let egress_url = format!(
        "http://{}:{}",
        Role::Egress.alias(),
        Role::Egress.port().expect("egress listens on a port")
    );
    let mut no_proxy = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    if has_git {
        no_proxy.insert(0, Role::GitGate.alias().to_string());
    }
    if supervise {
        no_proxy.insert(0, Role::Supervise.alias().to_string());
    }
    vec![
        lit("HTTP_PROXY", &egress_url),
        lit("HTTPS_PROXY", &egress_url),
        lit("http_proxy", &egress_url),
        lit("https_proxy", &egress_url),
        lit("NO_PROXY", no_proxy.join(",")),
        lit("no_proxy", no_proxy.join(",")),
        lit("NODE_EXTRA_CA_CERTS", AGENT_CA_FILE),
        lit("SSL_CERT_FILE", AGENT_CA_BUNDLE),
        lit("REQUESTS_CA_BUNDLE", AGENT_CA_BUNDLE),
        lit("GIT_SSL_CAINFO", AGENT_CA_BUNDLE),
        lit("CURL_CA_BUNDLE", AGENT_CA_BUNDLE),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_proxy_settings_in_both_cases() {
        let env = proxy_and_trust(true, false);
        let get = |k: &str| {
            env.iter().find(|v| v.name == k).map(|v| match &v.value {
                EnvValue::Literal { value } => value.as_str(),
                other => panic!("{k} is not a literal: {other:?}"),
            })
        };
        assert_eq!(get("http_proxy"), Some("http://egress:3128"));
        assert_eq!(get("HTTPS_PROXY"), Some("http://egress:3128"));
        assert!(get("NO_PROXY").unwrap().contains("git-gate"));
        assert!(!get("NO_PROXY").unwrap().contains("egress"));
    }
}
