//! cred-proxy configuration (TOML), validated once at load.
//!
//! The serde types *are* the validated types: every route is checked through
//! `TryFrom<RawRoute>`, so a `Config` that exists cannot name a wildcard host,
//! a duplicate route id, an unusable header or a route without a token source.
//! The orchestrator renders this same struct to TOML.
//!
//! The config never holds a token: only the variable name or file path.

use std::collections::HashSet;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use http::HeaderName;
use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The default listen address (the broker network port fixed by DESIGN.md).
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9099";
/// Default config path inside the container.
pub const DEFAULT_CONFIG_PATH: &str = "/config/cred-proxy.toml";

/// Whole cred-proxy config.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawConfig", into = "RawConfig")]
pub struct Config {
    /// Address to listen on (broker network only).
    pub listen: SocketAddr,
    /// Extra PEM CA bundle trusted for upstreams, on top of the webpki roots.
    pub upstream_ca: Option<PathBuf>,
    /// Routes, keyed by id (order kept for display).
    pub routes: Vec<Route>,
}

/// Exactly what the TOML holds, before validation.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default = "default_listen")]
    listen: SocketAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    upstream_ca: Option<PathBuf>,
    #[serde(default, rename = "route")]
    routes: Vec<Route>,
}

fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN
        .parse()
        .expect("default listen address parses")
}

impl TryFrom<RawConfig> for Config {
    type Error = Error;
    fn try_from(raw: RawConfig) -> Result<Self, Error> {
        let mut seen = HashSet::new();
        for r in &raw.routes {
            if !seen.insert(r.id.clone()) {
                return Err(Error::CredProxyInvalid {
                    key: format!("route {}", r.id),
                    reason: "route ids must be unique".into(),
                });
            }
        }
        Ok(Config {
            listen: raw.listen,
            upstream_ca: raw.upstream_ca,
            routes: raw.routes,
        })
    }
}

impl From<Config> for RawConfig {
    fn from(c: Config) -> RawConfig {
        RawConfig {
            listen: c.listen,
            upstream_ca: c.upstream_ca,
            routes: c.routes,
        }
    }
}

impl Config {
    /// Parses and validates a TOML document; `origin` names it in errors.
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<Config, Error> {
        toml::from_str::<Config>(text).map_err(|e| Error::CredProxyParse {
            path: origin.to_path_buf(),
            message: e.message().to_owned(),
            span: e.span().map(|s| line_of(text, s.start)),
        })
    }

    /// Reads, parses and validates a config file.
    pub fn load(path: &Path) -> Result<Config, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml_str(&text, path)
    }

    /// Renders the effective config as TOML.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("config always serialises")
    }

    /// The route with this id, if any. Exact match only: no wildcard, no
    /// case folding (ids are rendered by the orchestrator for both sides).
    pub fn route(&self, id: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.id == id)
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

/// How the credential is presented upstream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scheme {
    /// `Authorization: Bearer <token>`
    Bearer,
    /// `Authorization: token <token>` (GitHub's classic form)
    Token,
    /// `x-api-key: <token>`
    XApiKey,
    /// `<header>: <template with {token} replaced>`
    Header {
        /// Header to set (lowercase).
        name: HeaderName,
        /// Value template; contains `{token}` at least once.
        template: String,
    },
}

impl Scheme {
    /// The header this scheme sets.
    pub fn header_name(&self) -> HeaderName {
        match self {
            Scheme::Bearer | Scheme::Token => http::header::AUTHORIZATION,
            Scheme::XApiKey => HeaderName::from_static("x-api-key"),
            Scheme::Header { name, .. } => name.clone(),
        }
    }

    /// The header value carrying `token`.
    pub fn header_value(&self, token: &str) -> String {
        match self {
            Scheme::Bearer => format!("Bearer {token}"),
            Scheme::Token => format!("token {token}"),
            Scheme::XApiKey => token.to_owned(),
            Scheme::Header { template, .. } => template.replace(TOKEN_PLACEHOLDER, token),
        }
    }
}

const TOKEN_PLACEHOLDER: &str = "{token}";

/// Where a route's token comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// Environment variable name.
    Env(String),
    /// File (mode 0600), re-read on SIGHUP.
    File(PathBuf),
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSource::Env(v) => write!(f, "env {v}"),
            TokenSource::File(p) => write!(f, "file {}", p.display()),
        }
    }
}

/// One validated route.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawRoute", into = "RawRoute")]
pub struct Route {
    /// Route id, the same string egress uses.
    pub id: String,
    /// Upstream host name (lowercase, no port, no wildcard); SNI and the
    /// certificate check use it.
    pub host: String,
    /// Credential presentation.
    pub scheme: Scheme,
    /// Token source.
    pub token: TokenSource,
}

/// The scheme names allowed in TOML.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SchemeName {
    /// `Authorization: Bearer`
    Bearer,
    /// `Authorization: token`
    #[serde(rename = "token")]
    Token,
    /// `x-api-key`
    #[serde(rename = "x-api-key")]
    XApiKey,
    /// Custom header with a template.
    #[serde(rename = "header")]
    Header,
}

impl SchemeName {
    /// Every scheme, as the TOML and the manifest spell them.
    pub const ALL: [SchemeName; 4] = [
        SchemeName::Bearer,
        SchemeName::Token,
        SchemeName::XApiKey,
        SchemeName::Header,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SchemeName::Bearer => "Bearer",
            SchemeName::Token => "token",
            SchemeName::XApiKey => "x-api-key",
            SchemeName::Header => "header",
        }
    }

    /// The scheme of this name (case matters: `Bearer`, `token`).
    pub fn parse(name: &str) -> Option<SchemeName> {
        SchemeName::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

/// A route exactly as written in TOML.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Route id.
    pub id: String,
    /// Upstream host.
    pub host: String,
    /// Scheme name.
    pub scheme: SchemeName,
    /// Header name (scheme `header` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// Value template with `{token}` (scheme `header` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    /// Environment variable holding the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_ref: Option<String>,
    /// File holding the token (mode 0600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
}

/// Headers a route may never take over: the proxy's own, hop-by-hop ones and
/// the ones that steer where the request goes.
const FORBIDDEN_HEADERS: &[&str] = &[
    "host",
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
    "proxy-authorization",
    "cookie",
];

impl TryFrom<RawRoute> for Route {
    type Error = Error;
    fn try_from(raw: RawRoute) -> Result<Route, Error> {
        let key = format!("route {}", raw.id);
        let bad = |reason: String| Error::CredProxyInvalid {
            key: key.clone(),
            reason,
        };
        if raw.id.is_empty()
            || !raw
                .id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(bad(
                "id must be non-empty and use only letters, digits, '-', '_' and '.'".into(),
            ));
        }
        let host = validate_host(&raw.host).map_err(bad)?;
        let scheme = match raw.scheme {
            SchemeName::Header => {
                let name = raw
                    .header
                    .as_deref()
                    .ok_or_else(|| bad("scheme \"header\" needs `header`".into()))?;
                let name = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| bad(format!("`header` {name:?} is not a valid header name")))?;
                if FORBIDDEN_HEADERS.contains(&name.as_str())
                    || name.as_str().starts_with("x-bottle-")
                {
                    return Err(bad(format!("`header` {name} cannot carry a credential")));
                }
                let template = raw.template.ok_or_else(|| {
                    bad("scheme \"header\" needs `template` containing {token}".into())
                })?;
                if !template.contains(TOKEN_PLACEHOLDER) {
                    return Err(bad("`template` must contain {token}".into()));
                }
                if template.bytes().any(|b| b.is_ascii_control()) {
                    return Err(bad("`template` must not contain control characters".into()));
                }
                Scheme::Header { name, template }
            }
            other => {
                if raw.header.is_some() || raw.template.is_some() {
                    return Err(bad(
                        "`header` and `template` only apply to scheme \"header\"".into(),
                    ));
                }
                match other {
                    SchemeName::Bearer => Scheme::Bearer,
                    SchemeName::Token => Scheme::Token,
                    _ => Scheme::XApiKey,
                }
            }
        };
        let token = match (raw.token_ref, raw.token_file) {
            (Some(var), None) => {
                if var.is_empty() || var.contains('=') || var.contains('\0') {
                    return Err(bad(format!("`token_ref` {var:?} is not a variable name")));
                }
                TokenSource::Env(var)
            }
            (None, Some(path)) => {
                if !path.is_absolute() {
                    return Err(bad(format!(
                        "`token_file` {} must be an absolute path",
                        path.display()
                    )));
                }
                TokenSource::File(path)
            }
            (Some(_), Some(_)) => {
                return Err(bad(
                    "set either `token_ref` or `token_file`, not both".into()
                ))
            }
            (None, None) => return Err(bad("needs `token_ref` or `token_file`".into())),
        };
        Ok(Route {
            id: raw.id,
            host,
            scheme,
            token,
        })
    }
}

fn validate_host(host: &str) -> Result<String, String> {
    let h = host.to_ascii_lowercase();
    if h.contains('*') {
        return Err(format!("host {host:?}: wildcards are not allowed"));
    }
    if h.contains(':') && h.parse::<std::net::Ipv6Addr>().is_err() {
        return Err(format!("host {host:?}: give the host without a port"));
    }
    rustls_pki_types::ServerName::try_from(h.as_str())
        .map_err(|_| format!("host {host:?} is not a valid DNS name or IP address"))?;
    Ok(h)
}

impl From<Route> for RawRoute {
    fn from(r: Route) -> RawRoute {
        let (scheme, header, template) = match r.scheme {
            Scheme::Bearer => (SchemeName::Bearer, None, None),
            Scheme::Token => (SchemeName::Token, None, None),
            Scheme::XApiKey => (SchemeName::XApiKey, None, None),
            Scheme::Header { name, template } => (
                SchemeName::Header,
                Some(name.as_str().to_owned()),
                Some(template),
            ),
        };
        let (token_ref, token_file) = match r.token {
            TokenSource::Env(v) => (Some(v), None),
            TokenSource::File(p) => (None, Some(p)),
        };
        RawRoute {
            id: r.id,
            host: r.host,
            scheme,
            header,
            template,
            token_ref,
            token_file,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Config, Error> {
        Config::from_toml_str(s, Path::new("test.toml"))
    }

    const GOOD: &str = r#"
listen = "127.0.0.1:9099"
upstream_ca = "/config/ca.pem"

[[route]]
id = "github"
host = "API.github.com"
scheme = "Bearer"
token_ref = "GH_TOKEN"

[[route]]
id = "gh-classic"
host = "github.com"
scheme = "token"
token_file = "/config/gh.token"

[[route]]
id = "anthropic"
host = "api.anthropic.com"
scheme = "x-api-key"
token_ref = "ANTHROPIC_API_KEY"

[[route]]
id = "custom"
host = "10.1.2.3"
scheme = "header"
header = "X-Custom-Auth"
template = "Key {token}"
token_ref = "CUSTOM"
"#;

    #[test]
    fn parses_every_scheme_and_round_trips() {
        let c = parse(GOOD).unwrap();
        assert_eq!(c.routes.len(), 4);
        assert_eq!(c.route("github").unwrap().host, "api.github.com");
        assert_eq!(
            c.route("github").unwrap().scheme.header_value("T"),
            "Bearer T"
        );
        assert_eq!(
            c.route("gh-classic").unwrap().scheme.header_value("T"),
            "token T"
        );
        let a = &c.route("anthropic").unwrap().scheme;
        assert_eq!(a.header_name().as_str(), "x-api-key");
        assert_eq!(a.header_value("T"), "T");
        let x = &c.route("custom").unwrap().scheme;
        assert_eq!(x.header_name().as_str(), "x-custom-auth");
        assert_eq!(x.header_value("T"), "Key T");
        assert!(c.route("GITHUB").is_none());
        let again = parse(&c.to_toml()).unwrap();
        assert_eq!(again, c);
    }

    #[test]
    fn default_listen_is_9099() {
        let c = parse("").unwrap();
        assert_eq!(c.listen.port(), 9099);
    }

    #[test]
    fn rejects_bad_configs_with_a_useful_message() {
        let cases: &[(&str, &str)] = &[
            ("bogus = 1", "unknown field"),
            ("[[route]]\nid='a'\nhost='x.test'\nscheme='Bearer'\ntoken_ref='A'\nextra=1", "unknown field"),
            ("[[route]]\nid='a'\nhost='*.x.test'\nscheme='Bearer'\ntoken_ref='A'", "wildcard"),
            ("[[route]]\nid='a'\nhost='x.test:443'\nscheme='Bearer'\ntoken_ref='A'", "port"),
            ("[[route]]\nid='a'\nhost='x.test'\nscheme='Basic'\ntoken_ref='A'", "unknown variant"),
            ("[[route]]\nid='a'\nhost='x.test'\nscheme='Bearer'", "token_ref"),
            ("[[route]]\nid='a'\nhost='x.test'\nscheme='Bearer'\ntoken_ref='A'\ntoken_file='/f'", "not both"),
            ("[[route]]\nid='a'\nhost='x.test'\nscheme='Bearer'\ntoken_file='rel'", "absolute"),
            ("[[route]]\nid='a'\nhost='x.test'\nscheme='header'\nheader='x-k'\ntoken_ref='A'", "template"),
            ("[[route]]\nid='a'\nhost='x.test'\nscheme='header'\nheader='x-k'\ntemplate='k'\ntoken_ref='A'", "{token}"),
            ("[[route]]\nid='a'\nhost='x.test'\nscheme='header'\nheader='Host'\ntemplate='{token}'\ntoken_ref='A'", "cannot carry"),
            ("[[route]]\nid='a'\nhost='x.test'\nscheme='header'\nheader='x-bottle-route'\ntemplate='{token}'\ntoken_ref='A'", "cannot carry"),
            ("[[route]]\nid='a'\nhost='x.test'\nscheme='Bearer'\nheader='x-k'\ntoken_ref='A'", "only apply"),
            ("[[route]]\nid='a b'\nhost='x.test'\nscheme='Bearer'\ntoken_ref='A'", "id must"),
            ("[[route]]\nid='a'\nhost='x.test'\nscheme='Bearer'\ntoken_ref='A'\n[[route]]\nid='a'\nhost='y.test'\nscheme='Bearer'\ntoken_ref='B'", "unique"),
        ];
        for (text, want) in cases {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.contains(want), "{text:?}: {err:?} lacks {want:?}");
            assert!(err.contains("test.toml"), "{err}");
        }
    }
}
