//! What talking to the chain can fail with, split into transient (retry later, maybe elsewhere) and
//! permanent (retrying the same thing cannot help). Messages name the RPC method, the endpoint (host
//! only: API keys ride in URLs and must never reach a log) and the input; never key material.

use std::time::Duration;

use near_primitives::hash::CryptoHash;
use near_primitives::types::AccountId;

#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    // ---- configuration and input (permanent) ----
    #[error("no RPC URL configured for the chain client")]
    NoEndpoints,
    #[error("RPC URL #{index} is not a valid http(s) URL: {reason}")]
    InvalidEndpoint { index: usize, reason: String },
    #[error("operator account id {account_id:?} is invalid: {reason}")]
    InvalidAccountId { account_id: String, reason: String },
    /// Never carries the key itself, only why it was refused.
    #[error("the secret key of {account_id} is invalid: {reason}")]
    InvalidSecretKey { account_id: String, reason: String },
    #[error("{method} needs a signer, but the chain client was built without one")]
    NoSigner { method: String },
    #[error("cannot encode the arguments of {method}: {reason}")]
    EncodeArgs { method: String, reason: String },
    #[error(
        "output of request {request_id} is {bytes} bytes as JSON; the contract accepts at most {max}"
    )]
    OutputTooLarge {
        request_id: u64,
        bytes: usize,
        max: usize,
    },

    // ---- transport (transient) ----
    #[error("{method} on {endpoint}: no answer within {after:?}")]
    Timeout {
        method: &'static str,
        endpoint: String,
        after: Duration,
    },
    #[error("{method} on {endpoint}: transport error: {message}")]
    Transport {
        method: &'static str,
        endpoint: String,
        message: String,
    },
    #[error("{method} on {endpoint}: HTTP {status}")]
    HttpStatus {
        method: &'static str,
        endpoint: String,
        status: u16,
    },
    /// The node answered, but with a condition that passes (not synced, overloaded, waiting timed out).
    #[error("{method} on {endpoint}: the node is temporarily unable to answer: {message}")]
    NodeBusy {
        method: &'static str,
        endpoint: String,
        message: String,
    },
    /// Every attempt failed transiently; `last` is the final attempt's error.
    #[error("{method} ({input}) failed {attempts} times over all endpoints; last: {last}")]
    Exhausted {
        method: &'static str,
        input: String,
        attempts: u32,
        #[source]
        last: Box<ChainError>,
    },
    /// A transaction was signed and maybe sent, but no endpoint confirmed its fate. It may still land:
    /// check the chain (by hash, or the contract's state) before sending anything equivalent.
    #[error("transaction {tx_hash} ({method} on {receiver}) was not confirmed: {last}")]
    Unconfirmed {
        method: String,
        receiver: AccountId,
        tx_hash: CryptoHash,
        #[source]
        last: Box<ChainError>,
    },

    // ---- answers (permanent) ----
    #[error("{method} ({input}) on {endpoint}: {message}")]
    Rpc {
        method: &'static str,
        input: String,
        endpoint: String,
        message: String,
    },
    #[error("view {contract}.{method} panicked: {message}")]
    ViewFailed {
        contract: AccountId,
        method: String,
        message: String,
    },
    #[error("cannot decode the result of {contract}.{method}: {reason}")]
    Decode {
        contract: AccountId,
        method: String,
        reason: String,
    },
    #[error("access key {public_key} of {account_id} not found on chain")]
    UnknownAccessKey {
        account_id: AccountId,
        public_key: String,
    },
    #[error("transaction {method} on {receiver} rejected by the node: {reason}")]
    InvalidTransaction {
        method: String,
        receiver: AccountId,
        reason: String,
    },
    /// The transaction ran and failed: a contract panic or an action error.
    #[error("transaction {tx_hash} ({method} on {receiver}) failed: {message}")]
    TransactionFailed {
        method: String,
        receiver: AccountId,
        tx_hash: CryptoHash,
        message: String,
    },
    /// The hash of a signed transaction could not be recorded before it was sent; it was not sent.
    #[error("{method}: recording transaction {tx_hash} before sending it failed: {reason}")]
    NotRecorded {
        method: String,
        tx_hash: near_primitives::hash::CryptoHash,
        reason: String,
    },
}

impl ChainError {
    /// Worth trying again later (same request, maybe another endpoint). `Unconfirmed` counts as
    /// transient, but a re-send must first check whether the first one landed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Timeout { .. }
                | Self::Transport { .. }
                | Self::HttpStatus { .. }
                | Self::NodeBusy { .. }
                | Self::Exhausted { .. }
                | Self::Unconfirmed { .. }
                | Self::NotRecorded { .. }
        )
    }

    /// A short stable name per variant, for metrics labels and status reasons.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NoEndpoints => "NoEndpoints",
            Self::InvalidEndpoint { .. } => "InvalidEndpoint",
            Self::InvalidAccountId { .. } => "InvalidAccountId",
            Self::InvalidSecretKey { .. } => "InvalidSecretKey",
            Self::NoSigner { .. } => "NoSigner",
            Self::EncodeArgs { .. } => "EncodeArgs",
            Self::OutputTooLarge { .. } => "OutputTooLarge",
            Self::Timeout { .. } => "Timeout",
            Self::Transport { .. } => "Transport",
            Self::HttpStatus { .. } => "HttpStatus",
            Self::NodeBusy { .. } => "NodeBusy",
            Self::Exhausted { .. } => "Exhausted",
            Self::Unconfirmed { .. } => "Unconfirmed",
            Self::Rpc { .. } => "Rpc",
            Self::ViewFailed { .. } => "ViewFailed",
            Self::Decode { .. } => "Decode",
            Self::UnknownAccessKey { .. } => "UnknownAccessKey",
            Self::InvalidTransaction { .. } => "InvalidTransaction",
            Self::TransactionFailed { .. } => "TransactionFailed",
            Self::NotRecorded { .. } => "NotRecorded",
        }
    }
}

/// Renders an error and its sources on one line.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}
