//! The operator's NEAR client, built on `near-jsonrpc-client` (rustls): views of the OutLayer contract,
//! the block height, and the operator's signed transactions (`resolve_execution`,
//! `submit_execution_output`, `set_pricing`).
//!
//! - `rpc`: several endpoints with failover, per-call timeouts, jittered exponential backoff; errors
//!   classified transient/permanent (`ChainError::is_transient`).
//! - `signer`: the operator's account and ed25519 key (from a Secret's two strings) and its nonce.
//! - `client`: `ChainClient` — views, transactions (re-sent by hash, re-signed on `InvalidNonce` /
//!   `Expired`), outcomes with the contract's panic message.
//! - `contract`: the contract's methods with its own wire types; the 1024-byte one/two-step decision.
//!
//! Nothing here logs a URL (it may hold an API key) or key material.

mod client;
mod contract;
mod errors;
mod rpc;
mod signer;

pub use client::{BlockRef, CallStatus, ChainClient, ChainConfig, POOL_METHODS, TxOutcome};
pub use contract::{Report, ReportPlan, RequestCallOutcome};
pub use errors::ChainError;
pub use rpc::RetryPolicy;
pub use signer::OperatorSigner;

/// The contract's wire types, re-exported so callers need no second import path.
pub use outlayer_contract::{
    CodeSource, Evidence, ExecutionOutput, ExecutionRequest as ContractRequest, ExecutionResponse,
    PendingRequest, Pricing, ResourceLimits, ResourceMetrics, ResponseFormat, SecretsReference,
};
