//! What the chain tells a contract about the call it is running: who called, with what deposit and
//! gas, at which block, and the results of the receipts a callback waits for.

use near_crypto::{KeyType, PublicKey};
use near_primitives_core::hash::hash;
use near_primitives_core::types::{AccountId, Balance, BlockHeight, EpochHeight, Gas};

/// The most gas a single function call may carry on NEAR (`max_total_prepaid_gas`).
pub const MAX_PREPAID_GAS: Gas = Gas::from_teragas(300);

/// The result of a receipt a callback depends on, as the callback reads it with `promise_result`.
///
/// A yield callback sees one result: `Successful(payload)` when the yield was resumed, `Failed`
/// when it timed out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PromiseResult {
    Successful(Vec<u8>),
    Failed,
}

/// One function call as the chain would start it. `ContractVm::call` turns it into nearcore's
/// `VMContext`; the account's balance and storage usage come from the VM's own account state.
#[derive(Debug, Clone)]
pub struct CallContext {
    /// The account the contract is deployed on.
    pub current_account: AccountId,
    /// The account that signed the transaction this call descends from.
    pub signer: AccountId,
    pub signer_public_key: PublicKey,
    /// The account whose receipt called this method: the signer for a direct call, the contract
    /// itself for its own callbacks.
    pub predecessor: AccountId,
    /// Where the chain refunds the deposit if the call fails; the predecessor unless set.
    pub refund_to: Option<AccountId>,
    pub attached_deposit: Balance,
    pub prepaid_gas: Gas,
    pub block_height: BlockHeight,
    /// Nanoseconds since the Unix epoch.
    pub block_timestamp: u64,
    pub epoch_height: EpochHeight,
    /// `None` derives a seed from the account and block height, so equal calls are reproducible.
    pub random_seed: Option<[u8; 32]>,
    /// Results of the receipts this call waits for (empty unless it is a callback).
    pub promise_results: Vec<PromiseResult>,
    /// Accounts waiting for this call's return value (the chain's data receivers).
    pub output_data_receivers: Vec<AccountId>,
}

impl CallContext {
    /// A direct call by `signer` to the contract on `current_account`: no deposit, the maximum
    /// prepaid gas, block 1 at timestamp 1 s.
    pub fn new(current_account: AccountId, signer: AccountId) -> Self {
        Self {
            current_account,
            predecessor: signer.clone(),
            signer,
            signer_public_key: PublicKey::empty(KeyType::ED25519),
            refund_to: None,
            attached_deposit: Balance::ZERO,
            prepaid_gas: MAX_PREPAID_GAS,
            block_height: 1,
            block_timestamp: 1_000_000_000,
            epoch_height: 1,
            random_seed: None,
            promise_results: Vec::new(),
            output_data_receivers: Vec::new(),
        }
    }

    /// The contract calling itself back (a `#[private]` callback such as a yield callback):
    /// predecessor = current account, signed by `signer`.
    pub fn callback(current_account: AccountId, signer: AccountId) -> Self {
        Self {
            predecessor: current_account.clone(),
            ..Self::new(current_account, signer)
        }
    }

    pub fn with_predecessor(mut self, predecessor: AccountId) -> Self {
        self.predecessor = predecessor;
        self
    }

    pub fn with_deposit(mut self, deposit: Balance) -> Self {
        self.attached_deposit = deposit;
        self
    }

    pub fn with_gas(mut self, gas: Gas) -> Self {
        self.prepaid_gas = gas;
        self
    }

    pub fn at_block(mut self, height: BlockHeight, timestamp_ns: u64) -> Self {
        self.block_height = height;
        self.block_timestamp = timestamp_ns;
        self
    }

    pub fn with_promise_results(mut self, results: Vec<PromiseResult>) -> Self {
        self.promise_results = results;
        self
    }

    pub(crate) fn seed(&self) -> Vec<u8> {
        match self.random_seed {
            Some(seed) => seed.to_vec(),
            None => {
                let mut material = self.current_account.as_bytes().to_vec();
                material.extend_from_slice(&self.block_height.to_le_bytes());
                hash(&material).as_bytes().to_vec()
            }
        }
    }
}

/// A read-only call (`query call_function` on RPC). Views cannot change state or create receipts;
/// nearcore's VM rejects the host functions that would.
#[derive(Debug, Clone)]
pub struct ViewContext {
    pub current_account: AccountId,
    pub block_height: BlockHeight,
    pub block_timestamp: u64,
    pub epoch_height: EpochHeight,
}

impl ViewContext {
    pub fn new(current_account: AccountId) -> Self {
        Self {
            current_account,
            block_height: 1,
            block_timestamp: 1_000_000_000,
            epoch_height: 1,
        }
    }

    pub fn at_block(mut self, height: BlockHeight, timestamp_ns: u64) -> Self {
        self.block_height = height;
        self.block_timestamp = timestamp_ns;
        self
    }
}
