//! Applying receipts: transfers and function calls in nearcore's VM, the receipts and yields a
//! call creates, data for dependent receipts, deposit refunds on failure and gas refunds.

use e2e_contract_vm::{CallContext, PromiseResult, ReturnValue};
use near_primitives::action::{Action, FunctionCallAction, TransferAction};
use near_primitives::errors::{
    ActionError, ActionErrorKind, CompilationError, FunctionCallError, MethodResolveError,
    TxExecutionError,
};
use near_primitives::hash::{CryptoHash, hash};
use near_primitives::receipt::DataReceiver;
use near_primitives::types::{Balance, Gas};
use near_primitives::utils::create_receipt_id_from_receipt_id;
use near_primitives::views::{
    ExecutionMetadataView, ExecutionOutcomeView, ExecutionOutcomeWithIdView, ExecutionStatusView,
};
use near_vm_runner::logic::errors as vm_errors;

use super::fees::{attached_gas, gas_cost, receipt_fees, total_deposit};
use super::receipt::{ActionReceiptData, Work};
use super::{BlockRecord, Chain, Postponed};

/// What applying one receipt's actions produced.
struct Applied {
    logs: Vec<String>,
    gas_burnt: u64,
    /// Gas handed on to the receipts the calls created.
    gas_to_children: u64,
    status: Result<Returned, ActionError>,
    created: Vec<ActionReceiptData>,
    resumes: Vec<e2e_contract_vm::YieldResume>,
    /// The contract's share of the gas its calls burnt (nearcore `burnt_gas_reward`).
    contract_reward: u128,
}

enum Returned {
    Value(Vec<u8>),
    /// The last call returned the promise of this created receipt.
    Receipt(CryptoHash),
}

impl Chain {
    pub(super) fn apply_work(&mut self, work: Work, block: &BlockRecord) {
        match work {
            Work::Action {
                receipt,
                promise_results,
            } => self.apply_action(*receipt, promise_results, block),
            Work::Data { data_id, data } => self.deliver_data(data_id, data, block),
        }
    }

    fn deliver_data(&mut self, data_id: CryptoHash, data: Option<Vec<u8>>, block: &BlockRecord) {
        self.received_data.insert(data_id, data);
        let Some(receipt_id) = self.waiting_for_data.remove(&data_id) else {
            return;
        };
        let ready = match self.postponed.get_mut(&receipt_id) {
            Some(postponed) => {
                postponed.missing = postponed.missing.saturating_sub(1);
                postponed.missing == 0
            }
            None => false,
        };
        if ready && let Some(postponed) = self.postponed.remove(&receipt_id) {
            self.apply_action(postponed.receipt, None, block);
        }
    }

    /// Applies an action receipt; one with data dependencies waits until all its data is in.
    pub(super) fn apply_action(
        &mut self,
        receipt: ActionReceiptData,
        promise_results: Option<Vec<PromiseResult>>,
        block: &BlockRecord,
    ) {
        let promise_results = match promise_results {
            Some(results) => results,
            None => {
                let missing: Vec<CryptoHash> = receipt
                    .input_data_ids
                    .iter()
                    .filter(|data_id| !self.received_data.contains_key(data_id))
                    .copied()
                    .collect();
                if !missing.is_empty() {
                    for data_id in &missing {
                        self.waiting_for_data.insert(*data_id, receipt.receipt_id);
                    }
                    self.postponed.insert(
                        receipt.receipt_id,
                        Postponed {
                            missing: missing.len(),
                            receipt,
                        },
                    );
                    return;
                }
                receipt
                    .input_data_ids
                    .iter()
                    .map(
                        |data_id| match self.received_data.remove(data_id).flatten() {
                            Some(bytes) => PromiseResult::Successful(bytes),
                            None => PromiseResult::Failed,
                        },
                    )
                    .collect()
            }
        };

        let fees = receipt_fees(
            &self.fees,
            &receipt.actions,
            receipt.predecessor_id == receipt.receiver_id,
        );
        // Refunds are free; every other receipt prepaid its execution fees and call gas.
        let (exec_fee, prepaid) = if receipt.is_refund() {
            (0, 0)
        } else {
            (
                fees.exec,
                fees.exec.saturating_add(attached_gas(&receipt.actions)),
            )
        };
        let mut applied = self.apply_actions(&receipt, promise_results, block);
        applied.gas_burnt = applied.gas_burnt.saturating_add(exec_fee);

        let tx_hash = self.tx_of_receipt(&receipt.receipt_id);
        let mut refunds = Vec::new();
        let status = match &applied.status {
            Ok(Returned::Value(value)) => ExecutionStatusView::SuccessValue(value.clone()),
            Ok(Returned::Receipt(id)) => ExecutionStatusView::SuccessReceiptId(*id),
            Err(error) => {
                ExecutionStatusView::Failure(TxExecutionError::ActionError(error.clone()))
            }
        };
        let gas_refund = match &applied.status {
            Ok(_) => prepaid
                .saturating_sub(applied.gas_burnt)
                .saturating_sub(applied.gas_to_children),
            Err(_) => {
                let deposit = total_deposit(&receipt.actions);
                if deposit > 0 && !receipt.is_refund() {
                    refunds.push((receipt.refund_receiver().clone(), deposit));
                }
                prepaid.saturating_sub(applied.gas_burnt)
            }
        };
        let gas_refund = gas_cost(gas_refund, receipt.gas_price);
        if gas_refund > 0 {
            refunds.push((receipt.signer_id.clone(), gas_refund));
        }
        if applied.contract_reward > 0
            && let Some(account) = self.accounts.get_mut(&receipt.receiver_id)
        {
            account.set_balance(account.balance().saturating_add(applied.contract_reward));
        }

        let mut receipt_ids: Vec<CryptoHash> =
            applied.created.iter().map(|r| r.receipt_id).collect();
        let first_refund_index = applied.created.len();
        let refund_receipts: Vec<ActionReceiptData> = refunds
            .into_iter()
            .enumerate()
            .map(|(index, (receiver, amount))| {
                ActionReceiptData::refund(
                    create_receipt_id_from_receipt_id(
                        &receipt.receipt_id,
                        block.height,
                        first_refund_index + index,
                    ),
                    receiver,
                    amount,
                )
            })
            .collect();
        receipt_ids.extend(refund_receipts.iter().map(|r| r.receipt_id));

        let outcome = ExecutionOutcomeWithIdView {
            proof: Vec::new(),
            block_hash: block.hash,
            id: receipt.receipt_id,
            outcome: ExecutionOutcomeView {
                logs: applied.logs,
                receipt_ids,
                gas_burnt: Gas::from_gas(applied.gas_burnt),
                tokens_burnt: Balance::from_yoctonear(gas_cost(
                    applied.gas_burnt,
                    receipt.gas_price,
                )),
                executor_id: receipt.receiver_id.clone(),
                status,
                metadata: ExecutionMetadataView {
                    version: 3,
                    gas_profile: None,
                    contracts: None,
                },
            },
        };
        tracing::debug!(
            receipt_id = %receipt.receipt_id,
            receiver = %receipt.receiver_id,
            height = block.height,
            status = ?outcome.outcome.status,
            "receipt applied"
        );
        match self.receipts.get_mut(&receipt.receipt_id) {
            Some(record) => record.outcome = Some(outcome),
            None => {
                tracing::warn!(receipt_id = %receipt.receipt_id, "outcome of an unregistered receipt")
            }
        }

        // Data for receipts waiting on this one; a returned promise hands that duty on.
        let data = match &applied.status {
            Ok(Returned::Value(value)) => Some(Some(value.clone())),
            Ok(Returned::Receipt(_)) => None,
            Err(_) => Some(None),
        };
        if let Some(data) = data {
            for receiver in &receipt.output_data_receivers {
                self.next_work.push(Work::Data {
                    data_id: receiver.data_id,
                    data: data.clone(),
                });
            }
        }

        let tx_hash = tx_hash.unwrap_or_default();
        for created in applied.created.into_iter().chain(refund_receipts) {
            self.register_receipt(&created, tx_hash);
            if created.is_promise_yield {
                if let Some(data_id) = created.input_data_ids.first().copied() {
                    self.yields.insert(data_id, created);
                }
            } else {
                self.next_work.push(Work::Action {
                    receipt: Box::new(created),
                    promise_results: None,
                });
            }
        }
        // A resumed yield's callback runs in the next block, as the resume's data arrives then.
        for resume in applied.resumes {
            match self.yields.remove(&resume.data_id) {
                Some(yielded) => self.next_work.push(Work::Action {
                    receipt: Box::new(yielded),
                    promise_results: Some(vec![PromiseResult::Successful(resume.payload)]),
                }),
                None => {
                    tracing::warn!(data_id = %resume.data_id, "resume of a yield the chain does not know")
                }
            }
        }
    }

    fn apply_actions(
        &mut self,
        receipt: &ActionReceiptData,
        promise_results: Vec<PromiseResult>,
        block: &BlockRecord,
    ) -> Applied {
        let fees = std::sync::Arc::clone(&self.fees);
        let mut applied = Applied {
            logs: Vec::new(),
            gas_burnt: 0,
            gas_to_children: 0,
            status: Ok(Returned::Value(Vec::new())),
            created: Vec::new(),
            resumes: Vec::new(),
            contract_reward: 0,
        };
        let fail = |index: usize, kind: ActionErrorKind| ActionError {
            index: Some(index as u64),
            kind,
        };
        if let Some(what) = &receipt.unsupported {
            applied.status = Err(fail(
                0,
                ActionErrorKind::FunctionCallError(FunctionCallError::ExecutionError(format!(
                    "the test localnet does not model {what}"
                ))),
            ));
            return applied;
        }
        let creates_account = matches!(receipt.actions.first(), Some(Action::CreateAccount(_)));
        let existed = self.accounts.contains_key(&receipt.receiver_id);
        if !existed && !creates_account {
            applied.status = Err(fail(
                0,
                ActionErrorKind::AccountDoesNotExist {
                    account_id: receipt.receiver_id.clone(),
                },
            ));
            return applied;
        }
        // Key actions are undone with the rest of a failed receipt: remember the keys they touch.
        let keys_before = self
            .accounts
            .get(&receipt.receiver_id)
            .map(|account| (account.access_keys.clone(), account.state().storage_usage));
        // nearcore's `check_actor_permissions`: the predecessor acts, and after a CreateAccount the
        // new account itself (so a receipt may create an account and add its first key).
        let mut actor_id = receipt.predecessor_id.clone();
        let reward = self.fees.burnt_gas_reward;
        let mut credited: u128 = 0;
        for (index, action) in receipt.actions.iter().enumerate() {
            if let Action::CreateAccount(_) = action {
                match self.create_account(receipt, index) {
                    Ok(()) => {
                        actor_id = receipt.receiver_id.clone();
                        applied.status = Ok(Returned::Value(Vec::new()));
                        continue;
                    }
                    Err(error) => {
                        applied.status = Err(error);
                        break;
                    }
                }
            }
            let Some(account) = self.accounts.get_mut(&receipt.receiver_id) else {
                break;
            };
            if matches!(action, Action::AddKey(_) | Action::DeleteKey(_))
                && actor_id != receipt.receiver_id
            {
                applied.status = Err(fail(
                    index,
                    ActionErrorKind::ActorNoPermission {
                        account_id: receipt.receiver_id.clone(),
                        actor_id: actor_id.clone(),
                    },
                ));
                break;
            }
            match action {
                Action::AddKey(add) => {
                    let mut access_key = add.access_key.clone();
                    // nearcore starts a new key's nonce at (height - 1) × 10⁶, so transactions
                    // signed for a deleted and re-added key cannot be replayed.
                    access_key.nonce = block
                        .height
                        .saturating_sub(1)
                        .saturating_mul(super::transactions::ACCESS_KEY_NONCE_RANGE_MULTIPLIER);
                    if !account.add_key(add.public_key.clone(), access_key, &fees) {
                        applied.status = Err(fail(
                            index,
                            ActionErrorKind::AddKeyAlreadyExists {
                                account_id: receipt.receiver_id.clone(),
                                public_key: Box::new(add.public_key.clone()),
                            },
                        ));
                        break;
                    }
                    applied.status = Ok(Returned::Value(Vec::new()));
                }
                Action::DeleteKey(delete) => {
                    if !account.delete_key(&delete.public_key, &fees) {
                        applied.status = Err(fail(
                            index,
                            ActionErrorKind::DeleteKeyDoesNotExist {
                                account_id: receipt.receiver_id.clone(),
                                public_key: Box::new(delete.public_key.clone()),
                            },
                        ));
                        break;
                    }
                    applied.status = Ok(Returned::Value(Vec::new()));
                }
                Action::Transfer(TransferAction { deposit }) => {
                    let deposit = deposit.as_yoctonear();
                    account.set_balance(account.balance().saturating_add(deposit));
                    credited = credited.saturating_add(deposit);
                    applied.status = Ok(Returned::Value(Vec::new()));
                }
                Action::FunctionCall(call) => {
                    let Some(vm) = account.contract.as_mut() else {
                        applied.status = Err(fail(
                            index,
                            ActionErrorKind::FunctionCallError(
                                FunctionCallError::CompilationError(
                                    CompilationError::CodeDoesNotExist {
                                        account_id: receipt.receiver_id.clone(),
                                    },
                                ),
                            ),
                        ));
                        break;
                    };
                    let mut ctx =
                        CallContext::new(receipt.receiver_id.clone(), receipt.signer_id.clone())
                            .with_predecessor(receipt.predecessor_id.clone())
                            .with_deposit(call.deposit)
                            .with_gas(call.gas)
                            .at_block(block.height, block.timestamp_ns)
                            .with_promise_results(promise_results.clone());
                    ctx.signer_public_key = receipt.signer_public_key.clone();
                    ctx.refund_to = receipt.refund_to.clone();
                    ctx.output_data_receivers = receipt
                        .output_data_receivers
                        .iter()
                        .map(|r| r.receiver_id.clone())
                        .collect();
                    let outcome = match vm.call(&call.method_name, &call.args, &ctx) {
                        Ok(outcome) => outcome,
                        Err(error) => {
                            tracing::error!(%error, method = %call.method_name, "nearcore's VM failed");
                            applied.status = Err(fail(
                                index,
                                ActionErrorKind::FunctionCallError(
                                    FunctionCallError::ExecutionError(error.to_string()),
                                ),
                            ));
                            break;
                        }
                    };
                    let vm_burnt = outcome.gas_burnt.as_gas();
                    applied.gas_burnt = applied.gas_burnt.saturating_add(vm_burnt);
                    applied.contract_reward = applied.contract_reward.saturating_add(
                        gas_cost(vm_burnt, receipt.gas_price)
                            .saturating_mul(reward.numer().unsigned_abs().into())
                            / u128::from(reward.denom().unsigned_abs().max(1)),
                    );
                    applied.logs.extend(outcome.logs.iter().cloned());
                    if let Some(error) = &outcome.error {
                        applied.status = Err(action_error(index, error, &receipt.receiver_id));
                        break;
                    }
                    applied.gas_to_children = applied.gas_to_children.saturating_add(
                        outcome
                            .gas_used
                            .as_gas()
                            .saturating_sub(outcome.gas_burnt.as_gas()),
                    );
                    let (created, returned) = convert_created(receipt, &outcome, block);
                    applied.created.extend(created);
                    applied
                        .resumes
                        .extend(outcome.yield_resumes.iter().cloned());
                    applied.status = Ok(returned);
                }
                _ => {
                    applied.status = Err(fail(
                        index,
                        ActionErrorKind::FunctionCallError(FunctionCallError::ExecutionError(
                            "the test localnet models only Transfer, FunctionCall, CreateAccount, \
                             AddKey and DeleteKey actions"
                                .to_string(),
                        )),
                    ));
                    break;
                }
            }
        }
        if applied.status.is_ok()
            && let Some(account) = self.accounts.get(&receipt.receiver_id)
            && account.contract.is_none()
        {
            // nearcore's storage-stake check after the actions (a contract call checks its own).
            let required = account.storage_required(&fees);
            if account.balance() < required {
                applied.status = Err(ActionError {
                    index: None,
                    kind: ActionErrorKind::LackBalanceForState {
                        account_id: receipt.receiver_id.clone(),
                        amount: Balance::from_yoctonear(required - account.balance()),
                    },
                });
            }
        }
        if applied.status.is_err() {
            // A failed receipt changes nothing: transfers applied before the failure go back
            // (the deposit is refunded as a whole), keys are restored, an account it created is
            // removed, and nothing it created is sent.
            if !existed {
                self.accounts.remove(&receipt.receiver_id);
            } else if let Some(account) = self.accounts.get_mut(&receipt.receiver_id) {
                account.set_balance(account.balance().saturating_sub(credited));
                if let Some((keys, storage_usage)) = keys_before {
                    account.access_keys = keys;
                    account.state_mut().storage_usage = storage_usage;
                }
            }
            applied.created.clear();
            applied.resumes.clear();
            applied.gas_to_children = 0;
        }
        applied
    }
}

impl Chain {
    /// nearcore's `CreateAccount`: the receiver must not exist and must be a sub-account of the
    /// predecessor (or a top-level name of 32+ characters, which anyone may create).
    fn create_account(
        &mut self,
        receipt: &ActionReceiptData,
        index: usize,
    ) -> Result<(), ActionError> {
        let account_id = &receipt.receiver_id;
        let fail = |kind| ActionError {
            index: Some(index as u64),
            kind,
        };
        if self.accounts.contains_key(account_id) {
            return Err(fail(ActionErrorKind::AccountAlreadyExists {
                account_id: account_id.clone(),
            }));
        }
        let allowed = account_id.is_sub_account_of(&receipt.predecessor_id)
            || (account_id.is_top_level()
                && account_id.len() >= MIN_ALLOWED_TOP_LEVEL_ACCOUNT_LENGTH);
        if !allowed {
            return Err(fail(ActionErrorKind::CreateAccountNotAllowed {
                account_id: account_id.clone(),
                predecessor_id: receipt.predecessor_id.clone(),
            }));
        }
        self.accounts
            .insert(account_id.clone(), super::Account::new(0, &self.fees));
        Ok(())
    }
}

/// nearcore's `MIN_ALLOWED_TOP_LEVEL_ACCOUNT_LENGTH`: shorter top-level names belong to the registrar.
const MIN_ALLOWED_TOP_LEVEL_ACCOUNT_LENGTH: usize = 32;

/// Turns the receipts a call created into chain receipts: ids, data dependencies
/// (`promise_then`), and the caller's data receivers moved to a returned promise.
fn convert_created(
    parent: &ActionReceiptData,
    outcome: &e2e_contract_vm::CallOutcome,
    block: &BlockRecord,
) -> (Vec<ActionReceiptData>, Returned) {
    let ids: Vec<CryptoHash> = (0..outcome.receipts.len())
        .map(|index| create_receipt_id_from_receipt_id(&parent.receipt_id, block.height, index))
        .collect();
    let mut created: Vec<ActionReceiptData> = outcome
        .receipts
        .iter()
        .zip(&ids)
        .map(|(vm_receipt, id)| {
            let mut actions = Vec::new();
            let mut unsupported = Vec::new();
            for action in &vm_receipt.actions {
                match action {
                    e2e_contract_vm::Action::FunctionCall(call) => {
                        actions.push(Action::FunctionCall(Box::new(FunctionCallAction {
                            method_name: call.method_name.clone(),
                            args: call.args.clone(),
                            gas: call.gas,
                            deposit: call.deposit,
                        })));
                    }
                    e2e_contract_vm::Action::Transfer { deposit } => {
                        actions.push(Action::Transfer(TransferAction { deposit: *deposit }));
                    }
                    other => unsupported.push(format!("{other:?}")),
                }
            }
            ActionReceiptData {
                receipt_id: *id,
                predecessor_id: parent.receiver_id.clone(),
                receiver_id: vm_receipt.receiver_id.clone(),
                signer_id: parent.signer_id.clone(),
                signer_public_key: parent.signer_public_key.clone(),
                gas_price: parent.gas_price,
                output_data_receivers: Vec::new(),
                input_data_ids: vm_receipt.yield_data_id.into_iter().collect(),
                actions,
                refund_to: vm_receipt.refund_to.clone(),
                is_promise_yield: vm_receipt.yield_data_id.is_some(),
                unsupported: (!unsupported.is_empty()).then(|| unsupported.join(", ")),
            }
        })
        .collect();
    for (index, vm_receipt) in outcome.receipts.iter().enumerate() {
        for &dependency in &vm_receipt.depends_on {
            let Ok(dependency) = usize::try_from(dependency) else {
                continue;
            };
            if dependency >= created.len() {
                continue;
            }
            let mut material = ids[dependency].as_ref().to_vec();
            material.extend_from_slice(ids[index].as_ref());
            let data_id = hash(&material);
            let receiver_id = created[index].receiver_id.clone();
            created[dependency]
                .output_data_receivers
                .push(DataReceiver {
                    data_id,
                    receiver_id,
                });
            created[index].input_data_ids.push(data_id);
        }
    }
    let returned = match &outcome.return_value {
        ReturnValue::Promise(index) => {
            match usize::try_from(*index).ok().filter(|&i| i < created.len()) {
                Some(index) => {
                    created[index]
                        .output_data_receivers
                        .extend(parent.output_data_receivers.iter().cloned());
                    Returned::Receipt(ids[index])
                }
                None => Returned::Value(Vec::new()),
            }
        }
        ReturnValue::Value(value) => Returned::Value(value.clone()),
        ReturnValue::None => Returned::Value(Vec::new()),
    };
    (created, returned)
}

/// nearcore's runtime mapping of a VM failure to the error in the receipt outcome.
fn action_error(
    index: usize,
    error: &e2e_contract_vm::CallError,
    account_id: &near_primitives::types::AccountId,
) -> ActionError {
    use e2e_contract_vm::CallError;
    let kind = match error {
        CallError::Aborted(error) => ActionErrorKind::FunctionCallError(function_call_error(error)),
        CallError::LackBalanceForState { needed, .. } => {
            // nearcore leaves the index out for this one: it is about the receipt as a whole.
            return ActionError {
                index: None,
                kind: ActionErrorKind::LackBalanceForState {
                    account_id: account_id.clone(),
                    amount: Balance::from_yoctonear(*needed),
                },
            };
        }
        CallError::Unsupported(what) => ActionErrorKind::FunctionCallError(
            FunctionCallError::ExecutionError(format!("the test localnet does not model {what}")),
        ),
    };
    ActionError {
        index: Some(index as u64),
        kind,
    }
}

fn function_call_error(error: &vm_errors::FunctionCallError) -> FunctionCallError {
    use vm_errors::FunctionCallError as Vm;
    match error {
        Vm::CompilationError(error) => {
            FunctionCallError::ExecutionError(format!("Compilation error: {error}"))
        }
        Vm::LinkError { msg } => FunctionCallError::ExecutionError(format!("Link Error: {msg}")),
        Vm::MethodResolveError(error) => FunctionCallError::MethodResolveError(match error {
            vm_errors::MethodResolveError::MethodEmptyName => MethodResolveError::MethodEmptyName,
            vm_errors::MethodResolveError::MethodNotFound => MethodResolveError::MethodNotFound,
            vm_errors::MethodResolveError::MethodInvalidSignature => {
                MethodResolveError::MethodInvalidSignature
            }
        }),
        Vm::WasmTrap(trap) => {
            FunctionCallError::ExecutionError(format!("WebAssembly trap: {trap}"))
        }
        Vm::HostError(error) => FunctionCallError::ExecutionError(error.to_string()),
        Vm::LoadingError { msg } => FunctionCallError::ExecutionError(msg.clone()),
    }
}

/// The error a failed view call reports (RPC `call_function`).
pub fn view_error(error: &e2e_contract_vm::CallError) -> FunctionCallError {
    use e2e_contract_vm::CallError;
    match error {
        CallError::Aborted(error) => function_call_error(error),
        other => FunctionCallError::ExecutionError(other.to_string()),
    }
}
