//! Accepting a signed transaction (nearcore's validity checks: signer, access key, signature,
//! nonce, block hash recency, balance) and including it in a block.

use near_primitives::action::Action;
use near_primitives::errors::{InvalidAccessKeyError, InvalidTxError};
use near_primitives::hash::CryptoHash;
use near_primitives::transaction::SignedTransaction;
use near_primitives::types::Balance;
use near_primitives::utils::create_receipt_id_from_transaction;
use near_primitives::views::{
    ExecutionMetadataView, ExecutionOutcomeView, ExecutionOutcomeWithIdView, ExecutionStatusView,
};

use super::fees::{attached_gas, gas_cost, receipt_fees, total_deposit};
use super::receipt::{ActionReceiptData, Work};
use super::{BlockRecord, Chain, TxRecord};

/// nearcore's `ACCESS_KEY_NONCE_RANGE_MULTIPLIER`: a nonce must stay below height × this.
const ACCESS_KEY_NONCE_RANGE_MULTIPLIER: u64 = 1_000_000;

#[derive(Debug, Clone, thiserror::Error)]
pub enum SubmitError {
    /// What nearcore answers for an invalid transaction.
    #[error("invalid transaction: {0}")]
    Invalid(InvalidTxError),
    /// A valid transaction using actions the localnet does not model.
    #[error("{0}")]
    Unsupported(String),
}

impl Chain {
    /// Validates `tx` against the head state as nearcore does before accepting it, charges the
    /// signer (gas for the whole receipt at the fixed price, plus deposits), advances the key's
    /// nonce and queues the transaction for the next block. A transaction already known is not
    /// checked again (nearcore answers its status instead of a nonce error).
    pub fn submit(&mut self, tx: SignedTransaction) -> Result<CryptoHash, SubmitError> {
        let tx_hash = tx.get_hash();
        if self.txs.contains_key(&tx_hash) {
            return Ok(tx_hash);
        }
        let invalid = SubmitError::Invalid;
        let inner = &tx.transaction;
        let signer_id = inner.signer_id().clone();
        let public_key = inner.public_key().clone();
        let nonce = inner.nonce();

        for action in inner.actions() {
            if !matches!(action, Action::Transfer(_) | Action::FunctionCall(_)) {
                return Err(SubmitError::Unsupported(format!(
                    "the test localnet models only Transfer and FunctionCall actions; transaction \
                     {tx_hash} carries {}",
                    action_name(action)
                )));
            }
        }
        if nonce.nonce_index().is_some() {
            return Err(SubmitError::Unsupported(format!(
                "transaction {tx_hash} uses a gas-key nonce index, which the test localnet does \
                 not model"
            )));
        }

        // Stateless first, as nearcore validates: the signature over the hash with the named key.
        if !tx.signature.verify(tx_hash.as_ref(), &public_key) {
            return Err(invalid(InvalidTxError::InvalidSignature));
        }
        let head_height = self.head().height;
        let Some(account) = self.accounts.get(&signer_id) else {
            return Err(invalid(InvalidTxError::SignerDoesNotExist { signer_id }));
        };
        let Some(&ak_nonce) = account.access_keys.get(&public_key) else {
            return Err(invalid(InvalidTxError::InvalidAccessKeyError(
                InvalidAccessKeyError::AccessKeyNotFound {
                    account_id: signer_id,
                    public_key: Box::new(public_key),
                },
            )));
        };
        let tx_nonce = nonce.nonce();
        if tx_nonce <= ak_nonce {
            return Err(invalid(InvalidTxError::InvalidNonce { tx_nonce, ak_nonce }));
        }
        let upper_bound = head_height.saturating_mul(ACCESS_KEY_NONCE_RANGE_MULTIPLIER);
        if tx_nonce >= upper_bound {
            return Err(invalid(InvalidTxError::NonceTooLarge {
                tx_nonce,
                upper_bound,
            }));
        }
        match self.block_by_hash(inner.block_hash()) {
            Some(block) if head_height.saturating_sub(block.height) <= self.validity_period => {}
            _ => return Err(invalid(InvalidTxError::Expired)),
        }

        let receiver_id = inner.receiver_id().clone();
        let actions = inner.actions().to_vec();
        let fees = receipt_fees(&self.fees, &actions, signer_id == receiver_id);
        let gas = fees
            .send
            .saturating_add(fees.exec)
            .saturating_add(attached_gas(&actions));
        let cost = gas_cost(gas, self.gas_price).saturating_add(total_deposit(&actions));
        let balance = account.balance();
        let Some(left) = balance.checked_sub(cost) else {
            return Err(invalid(InvalidTxError::NotEnoughBalance {
                signer_id,
                balance: Balance::from_yoctonear(balance),
                cost: Balance::from_yoctonear(cost),
            }));
        };
        let required = account.storage_required(&self.fees);
        if left < required {
            return Err(invalid(InvalidTxError::LackBalanceForState {
                signer_id,
                amount: Balance::from_yoctonear(required - left),
            }));
        }

        let Some(account) = self.accounts.get_mut(&signer_id) else {
            return Err(invalid(InvalidTxError::SignerDoesNotExist { signer_id }));
        };
        account.set_balance(left);
        account.access_keys.insert(public_key.clone(), tx_nonce);

        let receipt = ActionReceiptData {
            receipt_id: create_receipt_id_from_transaction(&tx_hash, head_height + 1),
            predecessor_id: signer_id.clone(),
            receiver_id,
            signer_id: signer_id.clone(),
            signer_public_key: public_key,
            gas_price: self.gas_price,
            output_data_receivers: Vec::new(),
            input_data_ids: Vec::new(),
            actions,
            refund_to: None,
            is_promise_yield: false,
            unsupported: None,
        };
        tracing::debug!(%tx_hash, %signer_id, nonce = tx_nonce, cost, "transaction accepted");
        self.txs.insert(
            tx_hash,
            TxRecord {
                tx,
                outcome: None,
                receipt_ids: Vec::new(),
                first_receipt: Box::new(receipt),
                conversion_gas: fees.send,
            },
        );
        self.incoming.push(tx_hash);
        Ok(tx_hash)
    }

    /// Converts the transactions accepted since the last block: each gets its outcome in
    /// `block` and its receipt runs in the next block.
    pub(super) fn include_transactions(&mut self, block: &BlockRecord) {
        for tx_hash in std::mem::take(&mut self.incoming) {
            let Some(record) = self.txs.get_mut(&tx_hash) else {
                continue;
            };
            let receipt = record.first_receipt.clone();
            record.outcome = Some(ExecutionOutcomeWithIdView {
                proof: Vec::new(),
                block_hash: block.hash,
                id: tx_hash,
                outcome: ExecutionOutcomeView {
                    logs: Vec::new(),
                    receipt_ids: vec![receipt.receipt_id],
                    gas_burnt: near_primitives::types::Gas::from_gas(record.conversion_gas),
                    tokens_burnt: Balance::from_yoctonear(gas_cost(
                        record.conversion_gas,
                        self.gas_price,
                    )),
                    executor_id: record.tx.transaction.signer_id().clone(),
                    status: ExecutionStatusView::SuccessReceiptId(receipt.receipt_id),
                    metadata: ExecutionMetadataView {
                        version: 1,
                        gas_profile: None,
                        contracts: None,
                    },
                },
            });
            self.register_receipt(&receipt, tx_hash);
            self.next_work.push(Work::Action {
                receipt,
                promise_results: None,
            });
        }
    }
}

fn action_name(action: &Action) -> &'static str {
    match action {
        Action::CreateAccount(_) => "CreateAccount",
        Action::DeployContract(_) => "DeployContract",
        Action::FunctionCall(_) => "FunctionCall",
        Action::Transfer(_) => "Transfer",
        Action::Stake(_) => "Stake",
        Action::AddKey(_) => "AddKey",
        Action::DeleteKey(_) => "DeleteKey",
        Action::DeleteAccount(_) => "DeleteAccount",
        Action::Delegate(_) => "Delegate",
        _ => "an action newer than Delegate",
    }
}
