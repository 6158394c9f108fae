//! The OutLayer contract.
//!
//! Client contracts and users call [`Contract::request_execution`] with a code source, input, resource
//! limits and a deposit. The call is parked with `promise_yield_create` until the OutLayer operator
//! reports the result with [`Contract::resolve_execution`] (`promise_yield_resume`); the callback
//! [`Contract::on_execution_response`] then charges by measured usage, refunds the rest and hands the
//! output back to the caller. If the operator does not answer within NEAR's yield window (200 blocks)
//! the callback sees a timeout and refunds all but the base fee.
//!
//! One file per concern: `execution` (the request lifecycle), `secrets` (ciphertext store), `admin`
//! (roles, pause, pricing, caps), `views`, `events`, `pricing` (cost arithmetic), `validation` (input
//! checks) and `types` (the JSON wire types).

use near_sdk::store::{LookupMap, TreeMap};
use near_sdk::{AccountId, BorshStorageKey, Gas, PanicOnDefault, PublicKey, env, near};

pub mod admin;
pub mod events;
pub mod execution;
pub mod pricing;
pub mod secrets;
pub mod types;
pub mod validation;
pub mod views;

#[cfg(test)]
mod test_utils;

use crate::secrets::SecretsId;
pub use crate::types::*;

/// Gas reserved for `on_execution_response`; the caller of `request_execution` prepays it.
pub const CALLBACK_GAS: Gas = Gas::from_tgas(20);
/// Gas `request_execution` itself needs besides the callback reserve, before it starts any work.
pub const MIN_REQUEST_GAS: Gas = Gas::from_tgas(10);
/// NEAR's `max_yield_payload_size`: a resume payload larger than this is rejected by the runtime.
pub const MAX_YIELD_PAYLOAD_BYTES: usize = 1024;
/// Largest output `submit_execution_output` stores (the JSON of the output).
pub const MAX_OUTPUT_BYTES: usize = 64 * 1024;
/// Default wait before a sender may cancel a request whose callback never ran.
pub const DEFAULT_STALE_TIMEOUT_MS: u64 = 10 * 60 * 1000;

/// Default caps on what one request may ask for.
pub const DEFAULT_MAX_LIMITS: ResourceLimits = ResourceLimits {
    max_instructions: 100_000_000_000,
    max_memory_mb: 512,
    max_execution_seconds: 60,
};

/// Ceilings no owner can raise the caps beyond: above them an execution cannot fit into the yield window
/// (≈ 120 s at 600 ms blocks) or a sane executor pod.
pub const ABSOLUTE_MAX_LIMITS: ResourceLimits = ResourceLimits {
    max_instructions: 1_000_000_000_000,
    max_memory_mb: 4096,
    max_execution_seconds: 180,
};

#[near]
#[derive(BorshStorageKey)]
pub enum StorageKey {
    Requests,
    PendingIndex,
    Outputs,
    Secrets,
    UserSecrets,
}

#[near(contract_state)]
#[derive(PanicOnDefault)]
pub struct Contract {
    pub(crate) owner_id: AccountId,
    pub(crate) operator_id: AccountId,
    pub(crate) pricing_manager_id: Option<AccountId>,
    pub(crate) paused: bool,
    pub(crate) pricing: Pricing,
    pub(crate) max_limits: ResourceLimits,
    pub(crate) stale_timeout_ms: u64,
    pub(crate) next_request_id: u64,
    /// Every request from `request_execution` until its callback (or a cancel) settles it.
    pub(crate) requests: LookupMap<u64, ExecutionRequest>,
    /// Requests the operator has not resolved yet, ordered by id (what `get_pending_requests` pages
    /// through in O(limit · log n)), each with the storage bytes the request holds (its reserve).
    pub(crate) pending: TreeMap<u64, u64>,
    /// Outputs stored by `submit_execution_output`, as JSON, until the callback hands them out.
    pub(crate) outputs: LookupMap<u64, String>,
    pub(crate) secrets: LookupMap<SecretsId, SecretsRecord>,
    pub(crate) user_secrets: LookupMap<AccountId, Vec<SecretsKey>>,
    pub(crate) secrets_pubkey: Option<String>,
    /// The operator's ed25519 key that seeds runs' randomness (`set_seed_public_key`); each request
    /// records the one current when it was made.
    pub(crate) seed_public_key: Option<PublicKey>,
    pub(crate) stats: Stats,
}

#[near]
impl Contract {
    /// Only the contract account itself may initialize it (deploy and init in one transaction).
    #[init]
    #[private]
    pub fn new(owner_id: AccountId, operator_id: AccountId) -> Self {
        Self {
            owner_id,
            operator_id,
            pricing_manager_id: None,
            paused: false,
            pricing: Pricing::default(),
            max_limits: DEFAULT_MAX_LIMITS,
            stale_timeout_ms: DEFAULT_STALE_TIMEOUT_MS,
            next_request_id: 0,
            requests: LookupMap::new(StorageKey::Requests),
            pending: TreeMap::new(StorageKey::PendingIndex),
            outputs: LookupMap::new(StorageKey::Outputs),
            secrets: LookupMap::new(StorageKey::Secrets),
            user_secrets: LookupMap::new(StorageKey::UserSecrets),
            secrets_pubkey: None,
            seed_public_key: None,
            stats: Stats::default(),
        }
    }
}

impl Contract {
    pub(crate) fn assert_owner(&self) {
        let caller = env::predecessor_account_id();
        if caller != self.owner_id {
            env::panic_str(&format!(
                "only the owner {} may call this method, called by {caller}",
                self.owner_id
            ));
        }
    }

    pub(crate) fn assert_operator(&self) {
        let caller = env::predecessor_account_id();
        if caller != self.operator_id {
            env::panic_str(&format!(
                "only the operator {} may call this method, called by {caller}",
                self.operator_id
            ));
        }
    }
}

/// Turns a validation result into a failed call with its message.
pub(crate) fn require_valid(result: Result<(), String>) {
    if let Err(message) = result {
        env::panic_str(&message);
    }
}
