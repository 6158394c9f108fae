//! Runs a NEAR contract's wasm offline in nearcore's own VM (`near-vm-runner`, wasmtime backend),
//! with the protocol's real gas costs, limits and validation.
//!
//! A [`ContractVm`] is one contract account: its code (validated by `prepare_contract` and
//! compiled once), persistent storage, balance, storage usage and pending yields. [`ContractVm::call`]
//! runs a method like a function-call receipt and returns a [`CallOutcome`]: return value, logs,
//! gas, the receipts it created (function calls, transfers, yields) and the yield resumes it made,
//! each resume carrying the callback the chain runs next. A failed call changes nothing, as on
//! chain. What is left to a chain built on top: routing receipts between accounts, gas prices and
//! refunds, the contract's share of burnt gas, and trie-node gas (`touching_trie_node`), which
//! depends on the shard's trie and is not charged here (see [`StorageOps`]).

mod context;
mod external;
mod outcome;
mod receipts;
mod vm;
mod yields;

pub use context::{CallContext, MAX_PREPAID_GAS, PromiseResult, ViewContext};
pub use external::StorageOps;
pub use outcome::{CallError, CallOutcome, EVENT_LOG_PREFIX, ReturnValue};
pub use receipts::{Action, FunctionCall, KeyPermission, Receipt, ReceiptIndex};
pub use vm::{AccountState, ContractVm, DEFAULT_CHAIN_ID, FunctionCallFees};
pub use yields::{PendingYield, YieldResume};

pub use near_crypto::PublicKey;
pub use near_primitives_core::hash::CryptoHash;
pub use near_primitives_core::types::{AccountId, Balance, Gas};
pub use near_primitives_core::version::PROTOCOL_VERSION;
pub use near_vm_runner::logic::ProtocolVersion;
pub use near_vm_runner::logic::errors::{FunctionCallError, HostError};

use near_parameters::vm::VMKind;
use near_vm_runner::logic::errors::{CacheError, CompilationError, PrepareError, VMRunnerError};

/// Failures of the VM itself or of loading the contract. A contract that panics or runs out of
/// gas is not an `Error`: it is a [`CallOutcome`] with a [`CallError`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "protocol version {requested} is outside what this nearcore release runs ({min}..={max})"
    )]
    ProtocolVersion {
        requested: ProtocolVersion,
        min: ProtocolVersion,
        max: ProtocolVersion,
    },
    #[error(
        "nearcore rejects the contract ({wasm_len} bytes) at protocol version {protocol_version}: \
         {reason}"
    )]
    Prepare {
        protocol_version: ProtocolVersion,
        wasm_len: usize,
        reason: PrepareError,
    },
    #[error("compiling the contract for protocol version {protocol_version} failed: {reason}")]
    Compile {
        protocol_version: ProtocolVersion,
        reason: CompilationError,
    },
    #[error("caching the compiled contract failed: {0}")]
    Cache(CacheError),
    #[error("creating the compiled-contract cache directory failed: {0}")]
    CacheDir(std::io::Error),
    #[error("near-vm-runner was built without the {vm_kind:?} backend")]
    BackendMissing { vm_kind: VMKind },
    #[error("nearcore's VM failed running `{method}` (a VM fault, not a contract error): {source}")]
    Runner {
        method: String,
        source: VMRunnerError,
    },
    #[error("calling `{method}`: balance {balance} plus attached deposit {deposit} overflows")]
    BalanceOverflow {
        method: String,
        balance: Balance,
        deposit: Balance,
    },
    #[error("encoding {what} failed: {source}")]
    Encode {
        what: &'static str,
        source: std::io::Error,
    },
}
