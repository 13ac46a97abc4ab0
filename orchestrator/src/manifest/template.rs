//! Provider templates (the routes and agent environment `claude` and `codex`
//! bring) and the forge table of the forge rule.

use super::{Auth, Dlp, HostPattern, Origin, Route, Template};

/// Host variable holding the provider token when `auth_token` is not given.
pub fn default_auth_token(t: Template) -> &'static str {
    match t {
        Template::Claude => "ANTHROPIC_API_KEY",
        Template::Codex => "OPENAI_API_KEY",
    }
}

/// The template's routes, marked with their origin.
pub fn template_routes(t: Template, auth_token: Option<&str>, origin: &Origin) -> Vec<Route> {
    let token = auth_token.unwrap_or(default_auth_token(t)).to_string();
    let route = |host: &str, auth: Option<Auth>| Route {
        host: HostPattern::Exact(host.to_string()),
        ports: vec![443],
        auth,
        matches: vec![],
        dlp: Dlp::default(),
        tunnel: false,
        upgrade: false,
        template: Some(t),
        origin: Origin {
            file: origin.file.clone(),
            key: format!("agent_provider.template ({})", t.as_str()),
        },
    };
    match t {
        Template::Claude => {
            // An OAuth token (Claude subscriptions) is a Bearer token; an API key is x-api-key.
            let scheme = if token.contains("OAUTH") {
                "Bearer"
            } else {
                "x-api-key"
            };
            vec![route(
                "api.anthropic.com",
                Some(Auth {
                    scheme: scheme.into(),
                    token_ref: token,
                    header: None,
                    template: None,
                }),
            )]
        }
        Template::Codex => vec![route(
            "api.openai.com",
            Some(Auth {
                scheme: "Bearer".into(),
                token_ref: token,
                header: None,
                template: None,
            }),
        )],
    }
}

/// Environment the template sets in the agent (besides the token placeholder):
/// telemetry and error reporting off.
pub fn template_agent_env(t: Template) -> Vec<(&'static str, &'static str)> {
    match t {
        Template::Claude => vec![
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
            ("DISABLE_TELEMETRY", "1"),
            ("DISABLE_ERROR_REPORTING", "1"),
            ("DISABLE_AUTOUPDATER", "1"),
        ],
        Template::Codex => vec![
            ("CODEX_DISABLE_TELEMETRY", "1"),
            ("OTEL_SDK_DISABLED", "true"),
        ],
    }
}

/// Name of the variable the agent's CLI reads its token from; the agent gets
/// a placeholder there.
pub fn agent_token_var(t: Template, auth_token: &str) -> &'static str {
    match t {
        Template::Claude if auth_token.contains("OAUTH") => "CLAUDE_CODE_OAUTH_TOKEN",
        Template::Claude => "ANTHROPIC_API_KEY",
        Template::Codex => "OPENAI_API_KEY",
    }
}

/// The forge a host belongs to: a forge's web, API and upload hosts count as
/// one upstream (`github.com`, `api.github.com`, `uploads.github.com`; a GitLab
/// host and its `/api/v4` are the same host already).
pub fn forge_of(host: &str) -> String {
    let h = host.trim_start_matches("*.").to_ascii_lowercase();
    match h.as_str() {
        "github.com"
        | "api.github.com"
        | "uploads.github.com"
        | "codeload.github.com"
        | "ssh.github.com" => "github.com".into(),
        "gitlab.com" | "altssh.gitlab.com" => "gitlab.com".into(),
        "bitbucket.org" | "api.bitbucket.org" | "altssh.bitbucket.org" => "bitbucket.org".into(),
        _ => {
            for prefix in ["api.", "uploads.", "ssh.", "altssh."] {
                if let Some(rest) = h.strip_prefix(prefix) {
                    if rest.contains('.') {
                        return rest.to_string();
                    }
                }
            }
            h
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forges_group_hosts() {
        assert_eq!(forge_of("api.github.com"), forge_of("github.com"));
        assert_eq!(forge_of("uploads.github.com"), "github.com");
        assert_eq!(forge_of("api.gitlab.example.org"), "gitlab.example.org");
        assert_ne!(forge_of("api.example.com"), forge_of("github.com"));
    }
}
