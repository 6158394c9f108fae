//! What one call did, as the chain records it in the receipt's outcome.

use near_primitives_core::types::{AccountId, Balance, Gas, StorageUsage};
use near_vm_runner::ProfileDataV3;
use near_vm_runner::logic::errors::{FunctionCallError, HostError};

use crate::external::StorageOps;
use crate::receipts::{Action, FunctionCall, Receipt, ReceiptIndex};
use crate::yields::YieldResume;

/// The prefix of NEP-297 event log lines.
pub const EVENT_LOG_PREFIX: &str = "EVENT_JSON:";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReturnValue {
    /// The method returned nothing (or failed).
    None,
    /// `value_return` bytes.
    Value(Vec<u8>),
    /// The method returned a promise: its result is the result of this receipt of the call
    /// (for a yield, the callback's result once it runs).
    Promise(ReceiptIndex),
}

/// Why a call failed. Everything but the logs and the burnt gas of a failed call is discarded, as
/// on chain; the attached deposit goes back to the context's `refund_to` (the predecessor).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// What nearcore's VM reports: a contract panic, exceeded gas, a trap, a missing method...
    #[error("{0}")]
    Aborted(FunctionCallError),
    /// The chain's storage-staking check after the call: the balance left does not cover the
    /// storage the account now uses.
    #[error(
        "the account lacks {needed} yoctoNEAR to cover its storage of {storage_usage} bytes \
         (LackBalanceForState)"
    )]
    LackBalanceForState {
        needed: u128,
        storage_usage: StorageUsage,
    },
    /// The call reached a host feature this offline VM cannot reproduce faithfully.
    #[error("the call used {0}, which this offline VM does not model")]
    Unsupported(&'static str),
}

impl CallError {
    /// The contract's own panic message (`env::panic_str`, `require!`), without nearcore's
    /// "Smart contract panicked: " prefix.
    pub fn panic_message(&self) -> Option<&str> {
        match self {
            CallError::Aborted(FunctionCallError::HostError(HostError::GuestPanic {
                panic_msg,
            })) => Some(panic_msg),
            _ => None,
        }
    }

    pub fn is_gas_exceeded(&self) -> bool {
        matches!(
            self,
            CallError::Aborted(FunctionCallError::HostError(
                HostError::GasExceeded | HostError::GasLimitExceeded
            ))
        )
    }
}

#[derive(Debug, Clone)]
pub struct CallOutcome {
    pub return_value: ReturnValue,
    pub logs: Vec<String>,
    /// Gas burnt by the execution itself, including the send fees of the receipts it created but
    /// not the gas it prepaid to them (nearcore's `burnt_gas`).
    pub gas_burnt: Gas,
    /// Burnt gas plus the gas attached to created receipts, after nearcore's distribution of
    /// unused gas by weight (nearcore's `used_gas`).
    pub gas_used: Gas,
    /// Receipts the call created, yields included; empty when the call failed.
    pub receipts: Vec<Receipt>,
    /// Resumes that found a pending yield; each names the callback the chain now runs.
    pub yield_resumes: Vec<YieldResume>,
    /// The account's balance after the call (unchanged when it failed).
    pub balance: Balance,
    /// The account's storage usage after the call, in bytes (unchanged when it failed).
    pub storage_usage: StorageUsage,
    pub error: Option<CallError>,
    /// nearcore's per-cost gas breakdown.
    pub profile: ProfileDataV3,
    pub storage_ops: StorageOps,
}

impl CallOutcome {
    pub fn is_success(&self) -> bool {
        self.error.is_none()
    }

    /// The returned bytes, if the method returned a value.
    pub fn value(&self) -> Option<&[u8]> {
        match &self.return_value {
            ReturnValue::Value(bytes) => Some(bytes),
            _ => None,
        }
    }

    /// The JSON of NEP-297 events the call logged, in order (`EVENT_JSON:` stripped).
    pub fn events(&self) -> impl Iterator<Item = &str> {
        self.logs
            .iter()
            .filter_map(|line| line.strip_prefix(EVENT_LOG_PREFIX))
    }

    /// Plain transfers the call created: (receiver, amount).
    pub fn transfers(&self) -> impl Iterator<Item = (&AccountId, Balance)> {
        self.receipts.iter().flat_map(|receipt| {
            receipt
                .actions
                .iter()
                .filter_map(move |action| match action {
                    Action::Transfer { deposit } => Some((&receipt.receiver_id, *deposit)),
                    _ => None,
                })
        })
    }

    /// Function calls in ordinary (not yielded) receipts: (receipt, call).
    pub fn function_calls(&self) -> impl Iterator<Item = (&Receipt, &FunctionCall)> {
        self.receipts
            .iter()
            .filter(|receipt| receipt.yield_data_id.is_none())
            .flat_map(|receipt| receipt.function_calls().map(move |call| (receipt, call)))
    }

    /// Yielded receipts the call created: (data id the resume must name, callback).
    pub fn yields_created(
        &self,
    ) -> impl Iterator<Item = (near_primitives_core::hash::CryptoHash, &FunctionCall)> {
        self.receipts.iter().filter_map(|receipt| {
            let data_id = receipt.yield_data_id?;
            receipt
                .function_calls()
                .next()
                .map(|callback| (data_id, callback))
        })
    }

    /// The panic message or other error text, for assertions and reports.
    pub fn error_message(&self) -> Option<String> {
        self.error.as_ref().map(|error| error.to_string())
    }
}
