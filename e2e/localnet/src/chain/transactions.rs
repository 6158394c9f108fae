//! Accepting a signed transaction (nearcore's validity checks: signer, access key, signature,
//! nonce, block hash recency, balance) and including it in a block.

use near_crypto::PublicKey;
use near_primitives::account::{AccessKeyPermission, FunctionCallPermission};
use near_primitives::action::Action;
use near_primitives::errors::{ActionsValidationError, InvalidAccessKeyError, InvalidTxError};
use near_primitives::hash::CryptoHash;
use near_primitives::transaction::SignedTransaction;
use near_primitives::types::{AccountId, Balance, Gas};
use near_primitives::utils::create_receipt_id_from_transaction;
use near_primitives::views::{
    ExecutionMetadataView, ExecutionOutcomeView, ExecutionOutcomeWithIdView, ExecutionStatusView,
};

use super::fees::{ReceiptFees, attached_gas, gas_cost, receipt_fees, total_deposit};
use super::receipt::{ActionReceiptData, Work};
use super::{BlockRecord, Chain, TxRecord};

/// nearcore's `ACCESS_KEY_NONCE_RANGE_MULTIPLIER`: a nonce must stay below height × this.
pub(super) const ACCESS_KEY_NONCE_RANGE_MULTIPLIER: u64 = 1_000_000;

#[derive(Debug, Clone, thiserror::Error)]
pub enum SubmitError {
    /// What nearcore answers for an invalid transaction.
    #[error("invalid transaction: {0}")]
    Invalid(InvalidTxError),
    /// A valid transaction using actions the localnet does not model.
    #[error("{0}")]
    Unsupported(String),
}

/// What a transaction costs its signer and, for a function-call key, its allowance.
#[derive(Debug, Clone, Copy)]
pub(super) struct TxCost {
    /// Gas at the fixed price plus deposits.
    pub total: u128,
    /// The gas part alone (what a function-call key's allowance pays).
    pub gas: u128,
}

impl Chain {
    /// Validates `tx` against the head state as nearcore's RPC does before admitting it to the
    /// pool, and queues it for the next block. Nonces follow nearcore: a transaction must be above
    /// the key's *committed* nonce, so several transactions of one key may wait in the pool in any
    /// arrival order (the block takes them in nonce order, see [`Chain::include_transactions`]).
    /// Nothing is charged here. A transaction already known is not checked again (nearcore answers
    /// its status instead of a nonce error).
    pub fn submit(&mut self, tx: SignedTransaction) -> Result<CryptoHash, SubmitError> {
        let tx_hash = tx.get_hash();
        if self.txs.contains_key(&tx_hash) {
            return Ok(tx_hash);
        }
        let invalid = SubmitError::Invalid;
        let inner = &tx.transaction;

        for action in inner.actions() {
            let modelled = match action {
                Action::Transfer(_)
                | Action::FunctionCall(_)
                | Action::CreateAccount(_)
                | Action::DeleteKey(_) => true,
                Action::AddKey(add) => matches!(
                    add.access_key.permission,
                    AccessKeyPermission::FullAccess | AccessKeyPermission::FunctionCall(_)
                ),
                _ => false,
            };
            if !modelled {
                return Err(SubmitError::Unsupported(format!(
                    "the test localnet models Transfer, FunctionCall, CreateAccount, DeleteKey and \
                     AddKey (full-access or function-call keys) actions only; transaction \
                     {tx_hash} carries {}",
                    action_name(action)
                )));
            }
        }
        if inner.nonce().nonce_index().is_some() {
            return Err(SubmitError::Unsupported(format!(
                "transaction {tx_hash} uses a gas-key nonce index, which the test localnet does \
                 not model"
            )));
        }

        // Stateless first, as nearcore validates: the signature over the hash with the named key,
        // then the actions (nearcore's `validate_actions`: the total prepaid gas is capped).
        if !tx.signature.verify(tx_hash.as_ref(), inner.public_key()) {
            return Err(invalid(InvalidTxError::InvalidSignature));
        }
        let total_prepaid_gas = attached_gas(inner.actions());
        if total_prepaid_gas > self.max_total_prepaid_gas {
            return Err(invalid(InvalidTxError::ActionsValidation(
                ActionsValidationError::TotalPrepaidGasExceeded {
                    total_prepaid_gas: Gas::from_gas(total_prepaid_gas),
                    limit: Gas::from_gas(self.max_total_prepaid_gas),
                },
            )));
        }
        let head_height = self.head().height;
        let (cost, fees) = self.check_signer(&tx, head_height)?;
        match self.block_by_hash(inner.block_hash()) {
            Some(block) if head_height.saturating_sub(block.height) <= self.validity_period => {}
            _ => return Err(invalid(InvalidTxError::Expired)),
        }

        let signer_id = inner.signer_id().clone();
        let receipt = ActionReceiptData {
            receipt_id: create_receipt_id_from_transaction(&tx_hash, head_height + 1),
            predecessor_id: signer_id.clone(),
            receiver_id: inner.receiver_id().clone(),
            signer_id: signer_id.clone(),
            signer_public_key: inner.public_key().clone(),
            gas_price: self.gas_price,
            output_data_receivers: Vec::new(),
            input_data_ids: Vec::new(),
            actions: inner.actions().to_vec(),
            refund_to: None,
            is_promise_yield: false,
            unsupported: None,
        };
        tracing::debug!(%tx_hash, %signer_id, nonce = inner.nonce().nonce(), cost = cost.total, "transaction accepted into the pool");
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

    /// nearcore's stateful checks of a transaction against the head: signer, access key and its
    /// permission, nonce above the committed one and below the height bound, balance (and a
    /// function-call key's allowance) covering the cost, storage stake left. Returns the cost.
    fn check_signer(
        &self,
        tx: &SignedTransaction,
        head_height: u64,
    ) -> Result<(TxCost, ReceiptFees), SubmitError> {
        let invalid = SubmitError::Invalid;
        let inner = &tx.transaction;
        let signer_id = inner.signer_id().clone();
        let public_key = inner.public_key().clone();
        let Some(account) = self.accounts.get(&signer_id) else {
            return Err(invalid(InvalidTxError::SignerDoesNotExist { signer_id }));
        };
        let Some(access_key) = account.access_keys.get(&public_key) else {
            return Err(invalid(InvalidTxError::InvalidAccessKeyError(
                InvalidAccessKeyError::AccessKeyNotFound {
                    account_id: signer_id,
                    public_key: Box::new(public_key),
                },
            )));
        };
        let tx_nonce = inner.nonce().nonce();
        let ak_nonce = access_key.nonce;
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

        let receiver_id = inner.receiver_id();
        let actions = inner.actions();
        let fees = receipt_fees(&self.fees, actions, &signer_id == receiver_id);
        let gas = fees
            .send
            .saturating_add(fees.exec)
            .saturating_add(attached_gas(actions));
        let gas_cost = gas_cost(gas, self.gas_price);
        let cost = TxCost {
            total: gas_cost.saturating_add(total_deposit(actions)),
            gas: gas_cost,
        };
        if let Some(permission) = access_key.permission.function_call_permission() {
            check_function_call_key(
                permission,
                &signer_id,
                &public_key,
                receiver_id,
                actions,
                cost,
            )
            .map_err(|e| invalid(InvalidTxError::InvalidAccessKeyError(e)))?;
        }
        let balance = account.balance();
        let Some(left) = balance.checked_sub(cost.total) else {
            return Err(invalid(InvalidTxError::NotEnoughBalance {
                signer_id,
                balance: Balance::from_yoctonear(balance),
                cost: Balance::from_yoctonear(cost.total),
            }));
        };
        let required = account.storage_required(&self.fees);
        if left < required {
            return Err(invalid(InvalidTxError::LackBalanceForState {
                signer_id,
                amount: Balance::from_yoctonear(required - left),
            }));
        }
        Ok((cost, fees))
    }

    /// Converts the transactions accepted since the last block, as a chunk producer takes them from
    /// its pool: each key's transactions in nonce order, each checked again against the state the
    /// earlier ones left (a transaction that no longer passes — its nonce was used meanwhile, the
    /// key was deleted, the balance ran out — is dropped from the pool, as nearcore does). An
    /// included transaction charges its signer, commits its nonce and gets its outcome in `block`;
    /// its receipt runs in the next block.
    pub(super) fn include_transactions(&mut self, block: &BlockRecord) {
        for tx_hash in self.pool_order() {
            let Some(record) = self.txs.get(&tx_hash) else {
                continue;
            };
            let tx = record.tx.clone();
            let checked = self
                .check_signer(&tx, block.height)
                .and_then(|(cost, _)| self.charge(&tx, cost));
            if let Err(error) = checked {
                tracing::debug!(%tx_hash, %error, "transaction dropped from the pool at inclusion");
                self.txs.remove(&tx_hash);
                continue;
            }
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

    /// The pool's transactions in the order a block takes them: keys in the order their first
    /// transaction arrived, each key's transactions by nonce (arrival order among equal nonces).
    fn pool_order(&mut self) -> Vec<CryptoHash> {
        let mut groups: Vec<(SignerKey, Vec<(u64, CryptoHash)>)> = Vec::new();
        for tx_hash in std::mem::take(&mut self.incoming) {
            let Some(record) = self.txs.get(&tx_hash) else {
                continue;
            };
            let inner = &record.tx.transaction;
            let key = (inner.signer_id().clone(), inner.public_key().clone());
            let entry = (inner.nonce().nonce(), tx_hash);
            match groups.iter_mut().find(|(group, _)| *group == key) {
                Some((_, txs)) => txs.push(entry),
                None => groups.push((key, vec![entry])),
            }
        }
        groups
            .into_iter()
            .flat_map(|(_, mut txs)| {
                txs.sort_by_key(|(nonce, _)| *nonce);
                txs.into_iter().map(|(_, tx_hash)| tx_hash)
            })
            .collect()
    }

    /// Charges an included transaction: balance, a function-call key's allowance, the nonce.
    fn charge(&mut self, tx: &SignedTransaction, cost: TxCost) -> Result<(), SubmitError> {
        let inner = &tx.transaction;
        let signer_id = inner.signer_id();
        let Some(account) = self.accounts.get_mut(signer_id) else {
            return Err(SubmitError::Invalid(InvalidTxError::SignerDoesNotExist {
                signer_id: signer_id.clone(),
            }));
        };
        account.set_balance(account.balance().saturating_sub(cost.total));
        if let Some(access_key) = account.access_keys.get_mut(inner.public_key()) {
            access_key.nonce = inner.nonce().nonce();
            if let Some(permission) = access_key.permission.function_call_permission_mut()
                && let Some(allowance) = permission.allowance.as_mut()
            {
                *allowance = allowance.saturating_sub(Balance::from_yoctonear(cost.gas));
            }
        }
        Ok(())
    }
}

/// An access key by its account: the unit nonces are counted in.
type SignerKey = (AccountId, PublicKey);

/// nearcore's rules for a transaction signed with a function-call access key: one `FunctionCall`
/// action without deposit, to the key's receiver, to one of its methods (any when the list is empty),
/// its gas within the allowance.
fn check_function_call_key(
    permission: &FunctionCallPermission,
    signer_id: &AccountId,
    public_key: &PublicKey,
    receiver_id: &AccountId,
    actions: &[Action],
    cost: TxCost,
) -> Result<(), InvalidAccessKeyError> {
    let [Action::FunctionCall(call)] = actions else {
        return Err(InvalidAccessKeyError::RequiresFullAccess);
    };
    if !call.deposit.is_zero() {
        return Err(InvalidAccessKeyError::DepositWithFunctionCall);
    }
    if receiver_id.as_str() != permission.receiver_id {
        return Err(InvalidAccessKeyError::ReceiverMismatch {
            tx_receiver: receiver_id.clone(),
            ak_receiver: permission.receiver_id.clone(),
        });
    }
    if !permission.method_names.is_empty() && !permission.method_names.contains(&call.method_name) {
        return Err(InvalidAccessKeyError::MethodNameMismatch {
            method_name: call.method_name.clone(),
        });
    }
    if let Some(allowance) = permission.allowance
        && allowance.as_yoctonear() < cost.gas
    {
        return Err(InvalidAccessKeyError::NotEnoughAllowance {
            account_id: signer_id.clone(),
            public_key: Box::new(public_key.clone()),
            allowance,
            cost: Balance::from_yoctonear(cost.gas),
        });
    }
    Ok(())
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
