//! The one-command demo (`scripts/demo`): the local control plane with a real node, the localnet
//! running the real contract, the chart installed with `helm install` (the operator runs as a pod),
//! and one on-chain `request_execution` from a user account, followed to its outcome — what the
//! user's transaction returned, the ExecutionRequest's status, the charge, the refund and the
//! balance change.
//!
//! The binary is a thin CLI over [`Demo`]; `tests/demo.rs` runs the same flow as a library call and
//! goes on with `helm upgrade` (pricing) and `helm uninstall`.
//!
//! Everything runs as local processes started by this process and is stopped when [`Demo`] drops.

mod artifacts;
mod chain;
mod chart;
mod demo;
mod example;
mod kubectl;
mod outcome;
mod progress;

pub use artifacts::{Artifacts, target_dir};
pub use chain::{CONTRACT, DemoChain, OPERATOR, OWNER, USER, yocto_to_near};
pub use chart::{KEY_SECRET, NAMESPACE, RELEASE};
pub use demo::{Demo, DemoOptions, Verification};
pub use example::Example;
pub use kubectl::Kubectl;
pub use outcome::Outcome;
pub use progress::Log;

use outlayer_operator::chain::ChainError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "{what} is missing at {path}: run `{how}` (or `scripts/demo`, which builds everything)"
    )]
    MissingArtifact {
        what: &'static str,
        path: String,
        how: &'static str,
    },
    #[error(transparent)]
    Cluster(#[from] e2e_cluster::Error),
    #[error(transparent)]
    Helm(#[from] e2e_chart::Error),
    #[error("start the localnet: {0}")]
    Localnet(#[from] e2e_localnet::Error),
    #[error("{what}: {source}")]
    Chain {
        what: String,
        #[source]
        source: ChainError,
    },
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("git {args} in {dir}: {message}")]
    Git {
        args: String,
        dir: String,
        message: String,
    },
    #[error("timed out after {seconds} s waiting for {what}; last observation: {last}")]
    Timeout {
        what: String,
        seconds: u64,
        last: String,
    },
    /// The chain or the cluster answered, but not what the flow needs (e.g. the user's call failed).
    #[error("{0}")]
    Unexpected(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }

    fn kube(what: impl Into<String>) -> impl FnOnce(kube::Error) -> Self {
        let what = what.into();
        move |source| Self::Kube { what, source }
    }

    fn chain(what: impl Into<String>) -> impl FnOnce(ChainError) -> Self {
        let what = what.into();
        move |source| Self::Chain { what, source }
    }
}

/// Polls `probe` every 250 ms until it yields a value, for at most `limit`; the error names `what`
/// and the last observation.
pub async fn wait_until<T, F, Fut>(
    what: &str,
    limit: std::time::Duration,
    mut probe: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, String>>,
{
    let deadline = std::time::Instant::now() + limit;
    loop {
        let last = match probe().await {
            Ok(value) => return Ok(value),
            Err(observed) => observed,
        };
        if std::time::Instant::now() >= deadline {
            return Err(Error::Timeout {
                what: what.to_string(),
                seconds: limit.as_secs(),
                last,
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}
