//! One error type for the crate. [`Error::kind`] is the stable `errorKind` in the report, so the
//! operator can tell a broken commit (cache it as failed) from a platform fault (retry).

use std::path::PathBuf;
use std::time::Duration;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid repo {repo:?}: {reason}")]
    InvalidRepo { repo: String, reason: String },
    #[error("repo {repo:?} is not allowed: it must start with one of {allowed}")]
    RepoNotAllowed { repo: String, allowed: String },
    #[error("invalid commit/ref {reference:?}: {reason}")]
    InvalidRef { reference: String, reason: String },
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    /// `repo` is the repository as the request named it, never the mirror it was fetched from: the
    /// message ends up in the on-chain error, which must not expose the platform's paths or hosts.
    #[error("ref {reference:?} was not found in {repo}")]
    RefNotFound { repo: String, reference: String },
    #[error("ref {reference:?} is ambiguous in {repo}: both a branch and a tag have that name")]
    AmbiguousRef { repo: String, reference: String },
    #[error("{step} failed: {detail}")]
    Git { step: &'static str, detail: String },
    /// Names the repository as the request did (never the checkout path on the platform's volume).
    #[error("{repo} has no Cargo.toml at its root at commit {commit}")]
    NoManifest { repo: String, commit: String },
    #[error("cargo vendor failed: {0}")]
    Vendor(String),
    #[error("cargo metadata failed: {0}")]
    Metadata(String),
    #[error("{0}")]
    Binary(String),
    #[error("cargo build failed: {0}")]
    Compile(String),
    #[error("{step} timed out: the {limit:?} limit for the whole command was reached")]
    Timeout { step: &'static str, limit: Duration },
    #[error("the workspace grew past {limit_mb} MiB during {step}")]
    WorkspaceTooLarge { step: &'static str, limit_mb: u64 },
    #[error("module is {size} bytes, more than the {limit}-byte limit")]
    ModuleTooLarge { size: u64, limit: u64 },
    #[error("invalid module: {0}")]
    InvalidModule(String),
    /// A module URL (or a redirect's target) this operator does not fetch: its form, or where its
    /// host resolves. `url` is the URL as the request (or the redirect) named it.
    #[error("{url} is refused: {reason}")]
    UrlRefused { url: String, reason: String },
    #[error("downloading {url} failed: {detail}")]
    Download { url: String, detail: String },
    #[error("{url} is larger than the {limit}-byte download limit")]
    DownloadTooLarge { url: String, limit: u64 },
    #[error("the module at {url} has sha256 {actual}, not the requested {expected}")]
    HashMismatch {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("workspace {workspace} is not ready to build: {reason}")]
    NotFetched { workspace: PathBuf, reason: String },
    #[error(
        "the build pod still reaches {probe} after {waited_seconds}s: its NetworkPolicy is not in force, so no code of the repository ran"
    )]
    NotIsolated { probe: String, waited_seconds: u64 },
    #[error("starting {program} for {step} failed: {source}")]
    Spawn {
        step: &'static str,
        program: String,
        source: std::io::Error,
    },
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

impl Error {
    /// The `errorKind` of the report: a stable class, never a message.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidRepo { .. } => "invalidRepo",
            Error::RepoNotAllowed { .. } => "repoNotAllowed",
            Error::InvalidRef { .. } => "invalidRef",
            Error::InvalidConfig(_) => "invalidConfig",
            Error::RefNotFound { .. } => "refNotFound",
            Error::AmbiguousRef { .. } => "ambiguousRef",
            Error::Git { .. } => "git",
            Error::NoManifest { .. } => "noManifest",
            Error::Vendor(_) => "vendor",
            Error::Metadata(_) => "metadata",
            Error::Binary(_) => "binary",
            Error::Compile(_) => "compile",
            Error::Timeout { .. } => "timeout",
            Error::WorkspaceTooLarge { .. } => "workspaceTooLarge",
            Error::ModuleTooLarge { .. } => "moduleTooLarge",
            Error::InvalidModule(_) => "invalidModule",
            Error::UrlRefused { .. } => "urlRefused",
            Error::Download { .. } => "download",
            Error::DownloadTooLarge { .. } => "downloadTooLarge",
            Error::HashMismatch { .. } => "hashMismatch",
            Error::NotFetched { .. } => "notFetched",
            Error::NotIsolated { .. } => "notIsolated",
            Error::Spawn { .. } => "spawn",
            Error::Io { .. } => "io",
        }
    }

    pub(crate) fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            what,
            path: path.into(),
            source,
        }
    }
}
