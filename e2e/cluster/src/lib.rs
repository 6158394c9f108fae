//! Test harness: a real Kubernetes control plane on 127.0.0.1, built from the Kubernetes Go
//! modules by `e2e/control-plane/build.sh`, plus helpers to run the node agent against it.
//!
//! ```no_run
//! # async fn demo() -> e2e_cluster::Result<()> {
//! let cluster = e2e_cluster::Cluster::start().await?;
//! let client = cluster.client();
//! # drop(client);
//! # Ok(())
//! # }
//! ```
//! Every process is stopped (by pid) and the temp dir removed when the [`Cluster`] drops,
//! including when a test panics.

pub mod binaries;
mod cluster;
pub mod https_mirror;
pub mod pki;
pub mod ports;
pub mod process;
pub mod real_node;
pub mod versions;

pub use cluster::{Cluster, ClusterOptions, MAX_LOCAL_CLUSTERS};
pub use e2e_node_agent::{self as node_agent, AgentConfig, NodeAgent};

/// Node name registered by default (see [`ClusterOptions::nodes`]).
pub const DEFAULT_NODE: &str = "e2e-node";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "control-plane binaries missing: {missing} (looked in: {searched}). Build them with \
         `e2e/control-plane/build.sh` (minutes the first time, cached afterwards) or set \
         KUBEBUILDER_ASSETS to a directory that holds them"
    )]
    BinariesMissing { missing: String, searched: String },
    #[error(
        "helm {version} missing (looked in: {searched}). Run `scripts/install-deps`, which builds it \
         from its Go module with `e2e/control-plane/build.sh` (about 2 minutes the first time, cached \
         afterwards), or set OUTLAYER_E2E_HELM to a helm binary"
    )]
    HelmMissing {
        version: &'static str,
        searched: String,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("generate {what}: {source}")]
    Pki {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("the system random number generator failed")]
    Random,
    #[error("no free 127.0.0.1 port found")]
    NoFreePort,
    #[error("{component} exited ({status}); last log lines:\n{log_tail}")]
    ComponentExited {
        component: String,
        status: String,
        log_tail: String,
    },
    #[error("timed out waiting for {what}; last observation: {last}")]
    Timeout { what: String, last: String },
    #[error("{0}")]
    Config(String),
    #[error("node agent: {0}")]
    NodeAgent(String),
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
