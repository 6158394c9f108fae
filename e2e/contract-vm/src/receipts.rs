//! The receipts a call creates, in the shape a chain needs to schedule them next.

use near_crypto::PublicKey;
use near_primitives_core::hash::{CryptoHash, YieldId};
use near_primitives_core::types::{AccountId, Balance, Gas};

/// Position of a receipt among those one call created (nearcore's `ReceiptIndex`); promises and
/// `ReturnValue::Promise` refer to receipts by it.
pub type ReceiptIndex = u64;

/// An outgoing receipt: an action receipt to `receiver_id`, or — when `yield_data_id` is set — a
/// yielded receipt to the contract itself that waits for `promise_yield_resume` (or the timeout).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    pub index: ReceiptIndex,
    pub receiver_id: AccountId,
    /// Receipts of the same call whose results this one receives (`promise_then`/`promise_and`).
    pub depends_on: Vec<ReceiptIndex>,
    /// Set for a `promise_yield_create` receipt: the data id its resume delivers.
    pub yield_data_id: Option<CryptoHash>,
    /// The caller-chosen id of `promise_yield_create_with_id`, if that created it.
    pub yield_id: Option<YieldId>,
    pub actions: Vec<Action>,
    /// Set by `promise_set_refund_to`.
    pub refund_to: Option<AccountId>,
}

impl Receipt {
    pub fn function_calls(&self) -> impl Iterator<Item = &FunctionCall> {
        self.actions.iter().filter_map(|action| match action {
            Action::FunctionCall(call) => Some(call),
            _ => None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionCall {
    pub method_name: String,
    pub args: Vec<u8>,
    pub deposit: Balance,
    /// Gas prepaid for the call, including any share of the caller's unused gas it received
    /// through its `gas_weight` (distributed as nearcore's receipt manager does).
    pub gas: Gas,
    pub gas_weight: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPermission {
    FullAccess,
    FunctionCall {
        allowance: Option<Balance>,
        receiver_id: AccountId,
        method_names: Vec<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    CreateAccount,
    DeployContract {
        code: Vec<u8>,
    },
    FunctionCall(FunctionCall),
    Transfer {
        deposit: Balance,
    },
    Stake {
        stake: Balance,
        public_key: PublicKey,
    },
    AddKey {
        public_key: PublicKey,
        nonce: u64,
        permission: KeyPermission,
    },
    DeleteKey {
        public_key: PublicKey,
    },
    DeleteAccount {
        beneficiary_id: AccountId,
    },
    /// Recorded but not modelled here (global contracts, state init, gas keys); a chain built on
    /// this crate must reject such receipts rather than pretend to apply them.
    Other {
        description: String,
    },
}
