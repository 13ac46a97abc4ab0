use std::path::PathBuf;

/// Everything the scanner library can fail with. Messages name the file, rule
/// or repository involved; they never contain a scanned secret.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: not a valid gitleaks config: {message}")]
    Toml { origin: String, message: String },
    #[error("{origin}: rule {rule_id:?}: {problem}")]
    Rule {
        origin: String,
        rule_id: String,
        problem: String,
    },
    #[error("{origin}: {problem}")]
    Config { origin: String, problem: String },
    #[error("{origin}: [extend] chain is too deep or cyclic (at {path})")]
    ExtendCycle { origin: String, path: PathBuf },
    #[error("git repository {path}: {message}")]
    Git { path: PathBuf, message: String },
    #[error("git range {spec:?}: {message}")]
    GitRange { spec: String, message: String },
}
