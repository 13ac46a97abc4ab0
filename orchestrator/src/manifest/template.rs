//! Provider templates (the routes and agent environment `claude` and `codex`
//! bring) and the forge table of the forge rule.

use super::{Auth, Dlp, HostPattern, Origin, Route, SchemeName, Template};

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
                SchemeName::Bearer
            } else {
                SchemeName::XApiKey
            };
            vec![route(
                "api.anthropic.com",
                Some(Auth {
                    scheme,
                    token_ref: token,
                    header: None,
                    template: None,
                }),
            )]
        }
        Template::Codex => vec![route(
            "api.openai.com",
            Some(Auth {
                scheme: SchemeName::Bearer,
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

/// Whether a route to `route` reaches the forge of a git remote on
/// `remote_host`: a host of the same forge, or a wildcard covering the
/// remote's host or its forge (`*.github.com` for `github.com`,
/// `*.example.test` for `git.example.test`).
pub fn reaches_forge(route: &HostPattern, remote_host: &str) -> bool {
    let forge = forge_of(remote_host);
    match route {
        HostPattern::Exact(h) => forge_of(h) == forge,
        HostPattern::Wildcard(s) => {
            forge_of(s) == forge || covers_host(route, remote_host) || covers_host(route, &forge)
        }
    }
}

/// Whether a route to `route` reaches `host` itself.
pub fn covers_host(route: &HostPattern, host: &str) -> bool {
    match route {
        HostPattern::Exact(h) => h == host,
        HostPattern::Wildcard(s) => {
            host.len() > s.len() + 1
                && host.ends_with(s.as_str())
                && host.as_bytes()[host.len() - s.len() - 1] == b'.'
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_covering_a_remote_reach_its_forge() {
        let wild = |s: &str| HostPattern::Wildcard(s.to_string());
        let exact = |s: &str| HostPattern::Exact(s.to_string());
        assert!(reaches_forge(&exact("api.github.com"), "github.com"));
        assert!(reaches_forge(&wild("github.com"), "github.com"));
        assert!(reaches_forge(&wild("example.test"), "git.example.test"));
        assert!(reaches_forge(
            &wild("example.org"),
            "api.gitlab.example.org"
        ));
        assert!(!reaches_forge(&wild("example.test"), "github.com"));
        assert!(!reaches_forge(&wild("other.test"), "git.example.test"));
        assert!(!reaches_forge(
            &exact("web.example.test"),
            "git.example.test"
        ));
        assert!(!reaches_forge(&wild("xample.test"), "git.example.test"));
        assert!(covers_host(&wild("example.test"), "git.example.test"));
        assert!(!covers_host(&wild("example.test"), "example.test"));
        assert!(covers_host(&exact("git.example.test"), "git.example.test"));
    }

    #[test]
    fn forges_group_hosts() {
        assert_eq!(forge_of("api.github.com"), forge_of("github.com"));
        assert_eq!(forge_of("uploads.github.com"), "github.com");
        assert_eq!(forge_of("api.gitlab.example.org"), "gitlab.example.org");
        assert_ne!(forge_of("api.example.com"), forge_of("github.com"));
    }
}
