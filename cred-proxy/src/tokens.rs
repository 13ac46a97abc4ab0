//! The real tokens, loaded from the environment or from 0600 files.
//!
//! A token never appears in a `Debug` output, a log line or an error message:
//! errors name the variable or file only. Token files are re-read on demand
//! (SIGHUP) and swapped in atomically with the redactor built from them.

use std::collections::HashMap;
use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::{Arc, RwLock};

use http::HeaderValue;

use crate::config::{Config, Route, TokenSource};
use crate::error::Error;
use crate::redact::Redactor;

/// Shortest token accepted: anything shorter would make redaction rewrite
/// ordinary text and is not a real credential anyway.
pub const MIN_TOKEN_LEN: usize = 8;

/// A credential value. `Debug` prints nothing of it.
#[derive(Clone)]
pub struct Secret(String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl Secret {
    /// The raw value, for injection and redaction only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// One consistent snapshot: every route's token and the redactor that hides
/// all of them.
#[derive(Debug)]
pub struct TokenSet {
    by_route: HashMap<String, RouteToken>,
    redactor: Arc<Redactor>,
}

/// A route's token with its ready-made header value.
#[derive(Debug)]
pub struct RouteToken {
    /// The credential.
    pub secret: Secret,
    /// The header value to inject (marked sensitive so HTTP/2 never indexes it
    /// and debug output never prints it).
    pub header_value: HeaderValue,
}

impl TokenSet {
    /// The token for a route.
    pub fn get(&self, route: &str) -> Option<&RouteToken> {
        self.by_route.get(route)
    }

    /// Redactor covering every token of this set.
    pub fn redactor(&self) -> &Arc<Redactor> {
        &self.redactor
    }
}

/// Looks up an environment variable (injected so tests need not touch the
/// process environment).
pub type EnvLookup = Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

/// Process environment lookup.
pub fn process_env() -> EnvLookup {
    Arc::new(|name| std::env::var(name).ok())
}

/// All tokens, reloadable.
pub struct Tokens {
    routes: Vec<Route>,
    env: EnvLookup,
    current: RwLock<Arc<TokenSet>>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tokens")
            .field("routes", &self.routes.len())
            .finish_non_exhaustive()
    }
}

impl Tokens {
    /// Loads every route's token; the first missing or unusable one is an error.
    pub fn load(config: &Config, env: EnvLookup) -> Result<Tokens, Error> {
        let set = build(&config.routes, &env)?;
        Ok(Tokens {
            routes: config.routes.clone(),
            env,
            current: RwLock::new(Arc::new(set)),
        })
    }

    /// Re-reads every source. On error the previous tokens stay in force.
    pub fn reload(&self) -> Result<(), Error> {
        let set = build(&self.routes, &self.env)?;
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
        Ok(())
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<TokenSet> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn build(routes: &[Route], env: &EnvLookup) -> Result<TokenSet, Error> {
    let mut by_route = HashMap::new();
    for route in routes {
        let (value, origin) = match &route.token {
            TokenSource::Env(var) => {
                let v = env(var)
                    .map(|v| v.trim().to_owned())
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| Error::MissingTokenVar {
                        route: route.id.clone(),
                        var: var.clone(),
                    })?;
                (v, format!("variable {var}"))
            }
            TokenSource::File(path) => (
                read_token_file(&route.id, path)?,
                format!("file {}", path.display()),
            ),
        };
        if value.len() < MIN_TOKEN_LEN {
            return Err(Error::TokenTooShort {
                route: route.id.clone(),
                origin,
                min: MIN_TOKEN_LEN,
            });
        }
        let mut header_value =
            HeaderValue::from_str(&route.scheme.header_value(&value)).map_err(|_| {
                Error::TokenNotHeaderSafe {
                    route: route.id.clone(),
                    origin,
                }
            })?;
        header_value.set_sensitive(true);
        by_route.insert(
            route.id.clone(),
            RouteToken {
                secret: Secret(value),
                header_value,
            },
        );
    }
    // An echo may come back encoded (a debug endpoint returning the header as
    // base64, a URL with the token percent-escaped): mask those forms too.
    let redactor = Redactor::new(
        by_route
            .values()
            .flat_map(|t| scanner::encoded_forms(t.secret.expose().as_bytes())),
    );
    Ok(TokenSet {
        by_route,
        redactor: Arc::new(redactor),
    })
}

fn read_token_file(route: &str, path: &Path) -> Result<String, Error> {
    let err = |reason: String| Error::TokenFile {
        route: route.to_owned(),
        path: path.to_path_buf(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| err(format!("cannot read it: {e}")))?;
    if !meta.is_file() {
        return Err(err("is not a regular file".into()));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(err(format!(
            "mode is {mode:04o}; it must be readable by its owner only (0600)"
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read it: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|_| err("is not UTF-8 text".into()))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(err("is empty".into()));
    }
    Ok(token.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn config(extra: &str) -> Config {
        let text = format!(
            "[[route]]\nid='env'\nhost='a.test'\nscheme='Bearer'\ntoken_ref='TOK_A'\n{extra}"
        );
        Config::from_toml_str(&text, Path::new("t.toml")).unwrap()
    }

    fn env(pairs: &[(&str, &str)]) -> EnvLookup {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Arc::new(move |k| map.get(k).cloned())
    }

    #[test]
    fn missing_variable_names_the_variable() {
        let err = Tokens::load(&config(""), env(&[])).unwrap_err().to_string();
        assert!(err.contains("TOK_A"), "{err}");
    }

    #[test]
    fn bad_token_errors_never_contain_the_value() {
        let err = Tokens::load(&config(""), env(&[("TOK_A", "sec\u{1}ret-value-1")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("TOK_A") && !err.contains("ret-value"), "{err}");
        let err = Tokens::load(&config(""), env(&[("TOK_A", "qz9x")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("TOK_A") && !err.contains("qz9x"), "{err}");
    }

    #[test]
    fn token_file_must_be_private_and_is_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tok");
        std::fs::write(&path, "first-token-value\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let extra = format!(
            "[[route]]\nid='file'\nhost='b.test'\nscheme='token'\ntoken_file='{}'",
            path.display()
        );
        let cfg = config(&extra);
        let e = env(&[("TOK_A", "env-token-value")]);
        let err = Tokens::load(&cfg, e.clone()).unwrap_err().to_string();
        assert!(err.contains("0644") && err.contains("0600"), "{err}");
        assert!(!err.contains("first-token"), "{err}");

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let tokens = Tokens::load(&cfg, e).unwrap();
        let snap = tokens.snapshot();
        assert_eq!(
            snap.get("file").unwrap().secret.expose(),
            "first-token-value"
        );
        assert_eq!(
            snap.get("file").unwrap().header_value.to_str().unwrap(),
            "token first-token-value"
        );
        assert!(!format!("{snap:?}").contains("first-token"));

        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(b"second-token-value").unwrap();
        drop(f);
        tokens.reload().unwrap();
        assert_eq!(
            tokens.snapshot().get("file").unwrap().secret.expose(),
            "second-token-value"
        );

        // A broken file on reload keeps the previous token in force.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert!(tokens.reload().is_err());
        assert_eq!(
            tokens.snapshot().get("file").unwrap().secret.expose(),
            "second-token-value"
        );
    }
}
