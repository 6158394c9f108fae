//! Test support for the Helm chart `charts/outlayer-operator`: running the helm CLI that
//! `e2e/control-plane/build.sh` builds, parsing what it renders, and reading the operator's source
//! for what the chart must grant and configure.
//!
//! The tests live in `tests/`: `render.rs` needs only helm, `cluster.rs` the local control plane too.
//! Both fail (never skip) when helm is missing, with a message that says to run `scripts/install-deps`.

pub mod helm;
pub mod manifests;
pub mod source;

pub use helm::Helm;

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Cluster(#[from] e2e_cluster::Error),
    #[error("run {program} {args}: {source}")]
    Spawn {
        program: String,
        args: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} {args} failed ({status}):\n{stderr}")]
    Failed {
        program: String,
        args: String,
        status: String,
        stderr: String,
    },
    #[error("parse the YAML {what}: {message}")]
    Yaml { what: String, message: String },
    #[error("read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The repository's root (this crate is `e2e/chart`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `charts/outlayer-operator`.
pub fn chart_dir() -> PathBuf {
    repo_root().join("charts/outlayer-operator")
}

/// Reads a file as text, naming it in the error.
pub fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.display().to_string(),
        source,
    })
}
