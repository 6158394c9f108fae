//! Receipts as the localnet schedules them, and their nearcore views.

use near_crypto::{KeyType, PublicKey};
use near_primitives::action::Action;
use near_primitives::hash::CryptoHash;
use near_primitives::receipt::{
    ActionReceipt, ActionReceiptV2, DataReceiver, Receipt, ReceiptEnum, ReceiptV0,
};
use near_primitives::types::{AccountId, Balance};
use near_primitives::views::ReceiptView;

/// The account nearcore uses as the predecessor of refunds.
pub const SYSTEM_ACCOUNT: &str = "system";

#[derive(Debug, Clone)]
pub struct ActionReceiptData {
    pub receipt_id: CryptoHash,
    pub predecessor_id: AccountId,
    pub receiver_id: AccountId,
    pub signer_id: AccountId,
    pub signer_public_key: PublicKey,
    /// yoctoNEAR per gas the signer paid; 0 for refunds, which are free.
    pub gas_price: u128,
    pub output_data_receivers: Vec<DataReceiver>,
    pub input_data_ids: Vec<CryptoHash>,
    pub actions: Vec<Action>,
    /// Where a failed receipt's deposit goes instead of the predecessor (`promise_set_refund_to`).
    pub refund_to: Option<AccountId>,
    /// A `promise_yield_create` receipt: it runs once resumed or timed out.
    pub is_promise_yield: bool,
    /// Actions a contract created that the localnet does not model; the receipt fails with this.
    pub unsupported: Option<String>,
}

impl ActionReceiptData {
    pub fn is_refund(&self) -> bool {
        self.predecessor_id.as_str() == SYSTEM_ACCOUNT
    }

    pub fn refund_receiver(&self) -> &AccountId {
        self.refund_to.as_ref().unwrap_or(&self.predecessor_id)
    }

    /// A refund from the system account: deposits go back to `receiver`, gas to the signer.
    pub fn refund(receipt_id: CryptoHash, receiver: AccountId, amount: u128) -> Self {
        Self {
            receipt_id,
            predecessor_id: system_account(),
            receiver_id: receiver.clone(),
            signer_id: receiver,
            signer_public_key: PublicKey::empty(KeyType::ED25519),
            gas_price: 0,
            output_data_receivers: Vec::new(),
            input_data_ids: Vec::new(),
            actions: vec![Action::Transfer(near_primitives::action::TransferAction {
                deposit: Balance::from_yoctonear(amount),
            })],
            refund_to: None,
            is_promise_yield: false,
            unsupported: None,
        }
    }

    /// nearcore's receipt, for `EXPERIMENTAL_tx_status` and logs.
    pub fn to_receipt(&self) -> Receipt {
        let gas_price = Balance::from_yoctonear(self.gas_price);
        let receipt = match &self.refund_to {
            None => {
                let action = ActionReceipt {
                    signer_id: self.signer_id.clone(),
                    signer_public_key: self.signer_public_key.clone(),
                    gas_price,
                    output_data_receivers: self.output_data_receivers.clone(),
                    input_data_ids: self.input_data_ids.clone(),
                    actions: self.actions.clone(),
                };
                if self.is_promise_yield {
                    ReceiptEnum::PromiseYield(action)
                } else {
                    ReceiptEnum::Action(action)
                }
            }
            Some(refund_to) => {
                let action = ActionReceiptV2 {
                    signer_id: self.signer_id.clone(),
                    refund_to: Some(refund_to.clone()),
                    signer_public_key: self.signer_public_key.clone(),
                    gas_price,
                    output_data_receivers: self.output_data_receivers.clone(),
                    input_data_ids: self.input_data_ids.clone(),
                    actions: self.actions.clone(),
                };
                if self.is_promise_yield {
                    ReceiptEnum::PromiseYieldV2(action)
                } else {
                    ReceiptEnum::ActionV2(action)
                }
            }
        };
        Receipt::V0(ReceiptV0 {
            predecessor_id: self.predecessor_id.clone(),
            receiver_id: self.receiver_id.clone(),
            receipt_id: self.receipt_id,
            receipt,
        })
    }

    pub fn view(&self) -> ReceiptView {
        ReceiptView::from(self.to_receipt())
    }
}

pub fn system_account() -> AccountId {
    SYSTEM_ACCOUNT
        .parse()
        .expect("\"system\" is a valid account id")
}

/// What a block applies: an action receipt (with the promise results of a yield callback already
/// known), or data for receipts waiting on it.
#[derive(Debug, Clone)]
pub enum Work {
    Action {
        receipt: Box<ActionReceiptData>,
        promise_results: Option<Vec<e2e_contract_vm::PromiseResult>>,
    },
    Data {
        data_id: CryptoHash,
        data: Option<Vec<u8>>,
    },
}
