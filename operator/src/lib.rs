//! The OutLayer operator: watches the contract, turns each request into an `ExecutionRequest`, compiles
//! the code in a sandboxed Job into a content-addressed cache, runs it in a per-execution executor pod and
//! reports the result on chain. See DESIGN.md for the architecture.
//!
//! Layout: `crd` (resource types, typed conditions and reasons; `crdgen` writes them to `crds/`),
//! `controllers` (execution with its pure decisions in `execution_steps`, on-chain reporting and
//! secrets; compile; pricing), `chain_watcher` (contract → ExecutionRequests), `chain` (the NEAR
//! client), `sealing` (sealed secrets: keys, manifests, access conditions, unsealing), `seed` (the seed key
//! that makes on-chain runs replayable), `pods` (pure
//! builders of the pods and Jobs the operator creates), `pool` (the warm executor pods), `cache`, `leader`, `metrics`, `http`, `config`,
//! `context`.

pub mod cache;
pub mod chain;
pub mod chain_watcher;
pub mod config;
pub mod context;
pub mod controllers;
pub mod crd;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod pods;
pub mod pool;
pub mod sealing;
pub mod seed;
pub mod verify;

/// Everything the operator's library can fail with; each variant names what failed and with which input.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the object has no {0} (it must come from the API server)")]
    MissingMetadata(&'static str),
    #[error("module hash {0:?} is not 64 lower-case hex characters")]
    InvalidModuleHash(String),
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    #[error("the executor's result cannot be used: {0}")]
    InvalidResult(String),
    /// A status write based on an outdated copy of the object was refused (409): the next reconcile
    /// sees the current object. This is what makes every transition (its Event, its metrics) happen once.
    #[error("{kind} {name} changed since it was read; reconciling again")]
    StaleObject { kind: String, name: String },
    #[error("{what} {name}: {source}")]
    Api {
        what: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("the API server did not answer about Lease {0} in time")]
    LeaseTimeout(String),
    /// Finding or checking an execution's secrets failed in a way worth retrying (API, RPC).
    #[error("preparing the execution's secrets: {0}")]
    Secrets(String),
    /// A reconcile kept asking to observe without ever deciding: a bug in its decision function,
    /// caught instead of looping.
    #[error("the {0} reconcile did not reach a decision")]
    Undecided(&'static str),
    /// An object under a name the operator uses that it did not make (wrong owner, or a spec the chain
    /// does not back); it is never used.
    #[error("{kind} {name} is not the operator's: {why}")]
    Untrusted {
        kind: &'static str,
        name: String,
        why: String,
    },
    #[error("{what}: {source}")]
    Chain {
        what: String,
        #[source]
        source: chain::ChainError,
    },
}

impl Error {
    /// `map_err` adapter naming the API call that failed and its object.
    pub fn api(what: &'static str, name: &str) -> impl FnOnce(kube::Error) -> Self {
        let name = name.to_string();
        move |source| Self::Api { what, name, source }
    }

    /// The `error` label of the reconcile-error metric: one fixed value per variant, so failures are
    /// countable by kind without unbounded label values.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::MissingMetadata(_) => "missing_metadata",
            Self::InvalidModuleHash(_) => "invalid_module_hash",
            Self::InvalidSpec(_) => "invalid_spec",
            Self::InvalidResult(_) => "invalid_result",
            Self::Api { .. } => "api",
            Self::LeaseTimeout(_) => "lease_timeout",
            Self::StaleObject { .. } => "stale_object",
            Self::Chain { .. } => "chain",
            Self::Secrets(_) => "secrets",
            Self::Undecided(_) => "undecided",
            Self::Untrusted { .. } => "untrusted_object",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
