//! nearcore's `External` for one call: the contract's storage seen through a write overlay (so a
//! failed call leaves state untouched, as on chain), and a recorder of the receipts, yields and
//! resumes the call creates.

use std::cell::Cell;
use std::collections::BTreeMap;

use near_crypto::PublicKey;
use near_primitives_core::hash::{CryptoHash, YieldId, hash};
use near_primitives_core::types::{AccountId, Balance, Gas, GasWeight, Nonce, NonceIndex};
use near_primitives_core::universal_state_init::{
    DecodeMode, RawStateInit, StateInitError, UniversalStateInitCounts,
};
use near_vm_runner::logic::errors::VMLogicError;
use near_vm_runner::logic::types::{
    ActionIndex, GlobalContractDeployMode, GlobalContractIdentifier,
};
use near_vm_runner::logic::{External, HostError, StorageAccessTracker, ValuePtr};

use crate::receipts::{Action, FunctionCall, KeyPermission, Receipt, ReceiptIndex};
use crate::yields::YieldRegistry;

type ExtResult<T> = Result<T, VMLogicError>;

/// Storage operations a call made. Trie-node costs (`touching_trie_node`) depend on the shard's
/// trie and are not charged unless a stand-in is configured; these counts let a reader bound them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StorageOps {
    pub reads: u64,
    pub writes: u64,
    pub removes: u64,
    pub has_key: u64,
}

/// What the chain (not the call) decides: chain id, validator stakes, protocol switches.
pub(crate) struct ChainView<'a> {
    pub(crate) chain_id: &'a str,
    pub(crate) validators: &'a BTreeMap<AccountId, Balance>,
    pub(crate) post_quantum_keys: bool,
    /// `touching_trie_node` charges per storage access (see `ContractVm::with_trie_nodes_per_access`).
    pub(crate) trie_nodes_per_access: u64,
}

pub(crate) struct CallExternal<'a> {
    committed: &'a BTreeMap<Vec<u8>, Vec<u8>>,
    /// `Some(value)` = written, `None` = removed during this call.
    overlay: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    yields: &'a YieldRegistry,
    chain: ChainView<'a>,
    current_account: AccountId,
    next_data_nonce: u64,
    pub(crate) receipts: Vec<Receipt>,
    /// Resumes that found their yield, in call order: (data id, payload).
    pub(crate) resumes: Vec<(CryptoHash, Vec<u8>)>,
    /// Gas weights of function-call actions: (receipt index, action index, weight).
    pub(crate) gas_weights: Vec<(usize, usize, u64)>,
    /// The first host feature this crate cannot model faithfully; the call is failed with it.
    /// A `Cell` because some of the trait's methods that reach such features take `&self`.
    unsupported: Cell<Option<&'static str>>,
    storage_ops: StorageOps,
    /// Reads come through `&self` (`storage_get`), hence counted apart.
    storage_reads: Cell<u64>,
}

impl<'a> CallExternal<'a> {
    pub(crate) fn new(
        committed: &'a BTreeMap<Vec<u8>, Vec<u8>>,
        yields: &'a YieldRegistry,
        chain: ChainView<'a>,
        current_account: AccountId,
        next_data_nonce: u64,
    ) -> Self {
        Self {
            committed,
            overlay: BTreeMap::new(),
            yields,
            chain,
            current_account,
            next_data_nonce,
            receipts: Vec::new(),
            resumes: Vec::new(),
            gas_weights: Vec::new(),
            unsupported: Cell::new(None),
            storage_ops: StorageOps::default(),
            storage_reads: Cell::new(0),
        }
    }

    pub(crate) fn next_data_nonce(&self) -> u64 {
        self.next_data_nonce
    }

    pub(crate) fn storage_ops(&self) -> StorageOps {
        StorageOps {
            reads: self.storage_reads.get(),
            ..self.storage_ops
        }
    }

    pub(crate) fn into_writes(self) -> BTreeMap<Vec<u8>, Option<Vec<u8>>> {
        self.overlay
    }

    fn read(&self, key: &[u8]) -> Option<&Vec<u8>> {
        match self.overlay.get(key) {
            Some(written) => written.as_ref(),
            None => self.committed.get(key),
        }
    }

    /// nearcore charges each trie node a storage access traverses; the count depends on the
    /// shard's trie, so it is a chosen stand-in here (0 unless configured).
    fn charge_trie_nodes(&self, access_tracker: &mut dyn StorageAccessTracker) -> ExtResult<()> {
        match self.chain.trie_nodes_per_access {
            0 => Ok(()),
            nodes => access_tracker.trie_node_touched(nodes),
        }
    }

    fn mark_unsupported(&self, what: &'static str) {
        if self.unsupported.get().is_none() {
            self.unsupported.set(Some(what));
        }
    }

    pub(crate) fn unsupported(&self) -> Option<&'static str> {
        self.unsupported.get()
    }

    fn receipt_mut(&mut self, index: ReceiptIndex) -> ExtResult<&mut Receipt> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.receipts.get_mut(i))
            .ok_or_else(|| {
                HostError::InvalidReceiptIndex {
                    receipt_index: index,
                }
                .into()
            })
    }

    /// Appends to a receipt. VMLogic only passes receipt indices this recorder handed out, so a
    /// miss is a bug in this crate; it is recorded as unsupported rather than dropped silently.
    fn push_action(&mut self, index: ReceiptIndex, action: Action) {
        match self.receipt_mut(index) {
            Ok(receipt) => receipt.actions.push(action),
            Err(_) => self.mark_unsupported("an action on an unknown receipt index"),
        }
    }

    fn new_receipt(
        &mut self,
        receiver_id: AccountId,
        depends_on: Vec<ReceiptIndex>,
        yield_data_id: Option<CryptoHash>,
        yield_id: Option<YieldId>,
    ) -> ReceiptIndex {
        let index = self.receipts.len() as ReceiptIndex;
        self.receipts.push(Receipt {
            index,
            receiver_id,
            depends_on,
            yield_data_id,
            yield_id,
            actions: Vec::new(),
            refund_to: None,
        });
        index
    }

    fn yield_created_in_this_call(&self, data_id: &CryptoHash) -> bool {
        self.receipts
            .iter()
            .any(|receipt| receipt.yield_data_id.as_ref() == Some(data_id))
    }

    fn already_resumed(&self, data_id: &CryptoHash) -> bool {
        self.resumes.iter().any(|(resumed, _)| resumed == data_id)
    }
}

fn method_name(bytes: Vec<u8>) -> ExtResult<String> {
    String::from_utf8(bytes).map_err(|_| HostError::InvalidMethodName.into())
}

struct StoredValue(Vec<u8>);

impl ValuePtr for StoredValue {
    fn len(&self) -> u32 {
        // Values are bounded by max_value_length (4 MiB), far below u32::MAX.
        u32::try_from(self.0.len()).unwrap_or(u32::MAX)
    }

    fn deref(&self, _: &mut dyn StorageAccessTracker) -> ExtResult<Vec<u8>> {
        Ok(self.0.clone())
    }
}

impl External for CallExternal<'_> {
    fn storage_set(
        &mut self,
        access_tracker: &mut dyn StorageAccessTracker,
        key: &[u8],
        value: &[u8],
    ) -> ExtResult<Option<Vec<u8>>> {
        self.storage_ops.writes += 1;
        self.charge_trie_nodes(access_tracker)?;
        let evicted = self.read(key).cloned();
        // nearcore's RuntimeExt charges the overwritten value's bytes through the tracker.
        if let Some(old) = &evicted {
            access_tracker.deref_write_evicted_value_bytes(old.len() as u64)?;
        }
        self.overlay.insert(key.to_vec(), Some(value.to_vec()));
        Ok(evicted)
    }

    fn storage_get<'b>(
        &'b self,
        access_tracker: &mut dyn StorageAccessTracker,
        key: &[u8],
    ) -> ExtResult<Option<Box<dyn ValuePtr + 'b>>> {
        self.storage_reads.set(self.storage_reads.get() + 1);
        self.charge_trie_nodes(access_tracker)?;
        Ok(self
            .read(key)
            .map(|value| Box::new(StoredValue(value.clone())) as Box<dyn ValuePtr>))
    }

    fn storage_remove(
        &mut self,
        access_tracker: &mut dyn StorageAccessTracker,
        key: &[u8],
    ) -> ExtResult<Option<Vec<u8>>> {
        self.storage_ops.removes += 1;
        self.charge_trie_nodes(access_tracker)?;
        let removed = self.read(key).cloned();
        if let Some(old) = &removed {
            access_tracker.deref_removed_value_bytes(old.len() as u64)?;
            self.overlay.insert(key.to_vec(), None);
        }
        Ok(removed)
    }

    fn storage_has_key(
        &mut self,
        access_tracker: &mut dyn StorageAccessTracker,
        key: &[u8],
    ) -> ExtResult<bool> {
        self.storage_ops.has_key += 1;
        self.charge_trie_nodes(access_tracker)?;
        Ok(self.read(key).is_some())
    }

    fn generate_data_id(&mut self) -> CryptoHash {
        // Unique per account and call sequence: the account id keeps contracts hosted side by
        // side in one chain from colliding.
        let mut material = self.current_account.as_bytes().to_vec();
        material.push(0);
        material.extend_from_slice(&self.next_data_nonce.to_le_bytes());
        self.next_data_nonce += 1;
        hash(&material)
    }

    fn get_recorded_storage_size(&self) -> usize {
        // No state witness is recorded offline, so the per-receipt witness limit never bites.
        0
    }

    fn storage_proof_size_before_receipt(&self) -> usize {
        0
    }

    fn validator_stake(&self, account_id: &AccountId) -> ExtResult<Option<Balance>> {
        Ok(self.chain.validators.get(account_id).copied())
    }

    fn validator_total_stake(&self) -> ExtResult<Balance> {
        Ok(self
            .chain
            .validators
            .values()
            .fold(Balance::ZERO, |sum, stake| sum.saturating_add(*stake)))
    }

    fn chain_id(&self) -> String {
        self.chain.chain_id.to_string()
    }

    fn create_action_receipt(
        &mut self,
        receipt_indices: Vec<ReceiptIndex>,
        receiver_id: AccountId,
    ) -> ExtResult<ReceiptIndex> {
        Ok(self.new_receipt(receiver_id, receipt_indices, None, None))
    }

    fn create_promise_yield_receipt(
        &mut self,
        receiver_id: AccountId,
    ) -> ExtResult<(ReceiptIndex, CryptoHash)> {
        let data_id = self.generate_data_id();
        Ok((
            self.new_receipt(receiver_id, Vec::new(), Some(data_id), None),
            data_id,
        ))
    }

    fn create_promise_yield_receipt_with_id(
        &mut self,
        receiver_id: AccountId,
        user_yield_id: YieldId,
    ) -> ExtResult<Option<(ReceiptIndex, CryptoHash)>> {
        let taken = self.yields.find_by_yield_id(&user_yield_id).is_some()
            || self
                .receipts
                .iter()
                .any(|receipt| receipt.yield_id == Some(user_yield_id));
        if taken {
            return Ok(None);
        }
        let data_id = self.generate_data_id();
        let index = self.new_receipt(receiver_id, Vec::new(), Some(data_id), Some(user_yield_id));
        Ok(Some((index, data_id)))
    }

    fn submit_promise_resume_data(
        &mut self,
        data_id: CryptoHash,
        data: Vec<u8>,
    ) -> ExtResult<bool> {
        let ours = self
            .yields
            .get(&data_id)
            .is_some_and(|pending| pending.account_id == self.current_account)
            || self.yield_created_in_this_call(&data_id);
        if !ours || self.already_resumed(&data_id) {
            return Ok(false);
        }
        self.resumes.push((data_id, data));
        Ok(true)
    }

    fn submit_promise_resume_data_with_yield_id(
        &mut self,
        user_yield_id: YieldId,
        data: Vec<u8>,
    ) -> ExtResult<bool> {
        let data_id = self
            .yields
            .find_by_yield_id(&user_yield_id)
            .map(|p| p.data_id)
            .or_else(|| {
                self.receipts
                    .iter()
                    .find(|receipt| receipt.yield_id == Some(user_yield_id))
                    .and_then(|receipt| receipt.yield_data_id)
            });
        match data_id {
            Some(data_id) => self.submit_promise_resume_data(data_id, data),
            None => Ok(false),
        }
    }

    fn append_action_create_account(&mut self, receipt_index: ReceiptIndex) {
        self.push_action(receipt_index, Action::CreateAccount);
    }

    fn append_action_deploy_contract(&mut self, receipt_index: ReceiptIndex, code: Vec<u8>) {
        self.push_action(receipt_index, Action::DeployContract { code });
    }

    fn append_action_deploy_global_contract(
        &mut self,
        receipt_index: ReceiptIndex,
        code: Vec<u8>,
        mode: GlobalContractDeployMode,
    ) {
        let description = format!("deploy global contract ({mode:?}, {} bytes)", code.len());
        self.push_action(receipt_index, Action::Other { description });
    }

    fn append_action_use_global_contract(
        &mut self,
        receipt_index: ReceiptIndex,
        contract_id: GlobalContractIdentifier,
    ) {
        let description = format!("use global contract {contract_id:?}");
        self.push_action(receipt_index, Action::Other { description });
    }

    fn append_action_deterministic_state_init(
        &mut self,
        receipt_index: ReceiptIndex,
        contract_id: GlobalContractIdentifier,
        amount: Balance,
    ) -> ActionIndex {
        let description = format!("deterministic state init of {contract_id:?} with {amount}");
        self.push_action(receipt_index, Action::Other { description });
        self.receipts
            .get(receipt_index as usize)
            .map_or(0, |receipt| {
                receipt.actions.len().saturating_sub(1) as ActionIndex
            })
    }

    fn set_deterministic_state_init_data_entry(
        &mut self,
        _receipt_index: ReceiptIndex,
        _action_index: ActionIndex,
        _key: Vec<u8>,
        _value: Vec<u8>,
    ) -> ExtResult<()> {
        self.mark_unsupported("deterministic state init data");
        Ok(())
    }

    fn check_state_init(&self, _state_init: &RawStateInit) -> Result<(), StateInitError> {
        // Decoding a universal state init needs near-primitives' types, which this crate does
        // not carry; the answer is never used because `call` fails the whole call as unsupported.
        self.mark_unsupported("universal state init");
        Err(StateInitError::Malformed)
    }

    fn state_init_send_counts(
        &self,
        state_init: &RawStateInit,
        _mode: DecodeMode,
    ) -> UniversalStateInitCounts {
        self.mark_unsupported("universal state init");
        UniversalStateInitCounts {
            num_bytes: state_init.0.len() as u64,
            num_entries: 0,
            num_keys: 0,
        }
    }

    fn append_action_universal_state_init(
        &mut self,
        receipt_index: ReceiptIndex,
        state_init: RawStateInit,
        amount: Balance,
    ) {
        self.mark_unsupported("universal state init");
        let description = format!(
            "universal state init ({} bytes) with {amount}",
            state_init.0.len()
        );
        self.push_action(receipt_index, Action::Other { description });
    }

    fn append_action_function_call_weight(
        &mut self,
        receipt_index: ReceiptIndex,
        method_name_bytes: Vec<u8>,
        args: Vec<u8>,
        attached_deposit: Balance,
        prepaid_gas: Gas,
        gas_weight: GasWeight,
    ) -> ExtResult<()> {
        let method_name = method_name(method_name_bytes)?;
        let receipt = self.receipt_mut(receipt_index)?;
        receipt.actions.push(Action::FunctionCall(FunctionCall {
            method_name,
            args,
            deposit: attached_deposit,
            gas: prepaid_gas,
            gas_weight: gas_weight.0,
        }));
        let action_index = receipt.actions.len() - 1;
        if gas_weight.0 > 0 {
            self.gas_weights
                .push((receipt_index as usize, action_index, gas_weight.0));
        }
        Ok(())
    }

    fn append_action_transfer(&mut self, receipt_index: ReceiptIndex, deposit: Balance) {
        self.push_action(receipt_index, Action::Transfer { deposit });
    }

    fn append_action_transfer_to_gas_key(
        &mut self,
        receipt_index: ReceiptIndex,
        public_key: PublicKey,
        deposit: Balance,
    ) {
        let description = format!("transfer {deposit} to gas key {public_key}");
        self.push_action(receipt_index, Action::Other { description });
    }

    fn append_action_add_gas_key_with_full_access(
        &mut self,
        receipt_index: ReceiptIndex,
        public_key: PublicKey,
        num_nonces: NonceIndex,
    ) {
        let description = format!("add full-access gas key {public_key} ({num_nonces} nonces)");
        self.push_action(receipt_index, Action::Other { description });
    }

    fn append_action_add_gas_key_with_function_call(
        &mut self,
        receipt_index: ReceiptIndex,
        public_key: PublicKey,
        num_nonces: NonceIndex,
        _allowance: Option<Balance>,
        receiver_id: AccountId,
        _method_names: Vec<Vec<u8>>,
    ) -> ExtResult<()> {
        let description =
            format!("add gas key {public_key} for {receiver_id} ({num_nonces} nonces)");
        self.push_action(receipt_index, Action::Other { description });
        Ok(())
    }

    fn append_action_stake(
        &mut self,
        receipt_index: ReceiptIndex,
        stake: Balance,
        public_key: PublicKey,
    ) {
        self.push_action(receipt_index, Action::Stake { stake, public_key });
    }

    fn append_action_add_key_with_full_access(
        &mut self,
        receipt_index: ReceiptIndex,
        public_key: PublicKey,
        nonce: Nonce,
    ) {
        let permission = KeyPermission::FullAccess;
        self.push_action(
            receipt_index,
            Action::AddKey {
                public_key,
                nonce,
                permission,
            },
        );
    }

    fn append_action_add_key_with_function_call(
        &mut self,
        receipt_index: ReceiptIndex,
        public_key: PublicKey,
        nonce: Nonce,
        allowance: Option<Balance>,
        receiver_id: AccountId,
        method_names: Vec<Vec<u8>>,
    ) -> ExtResult<()> {
        let method_names = method_names
            .into_iter()
            .map(method_name)
            .collect::<ExtResult<Vec<_>>>()?;
        let permission = KeyPermission::FunctionCall {
            allowance,
            receiver_id,
            method_names,
        };
        self.receipt_mut(receipt_index)?
            .actions
            .push(Action::AddKey {
                public_key,
                nonce,
                permission,
            });
        Ok(())
    }

    fn append_action_delete_key(&mut self, receipt_index: ReceiptIndex, public_key: PublicKey) {
        self.push_action(receipt_index, Action::DeleteKey { public_key });
    }

    fn append_action_delete_account(
        &mut self,
        receipt_index: ReceiptIndex,
        beneficiary_id: AccountId,
    ) {
        self.push_action(receipt_index, Action::DeleteAccount { beneficiary_id });
    }

    fn get_receipt_receiver(&self, receipt_index: ReceiptIndex) -> &AccountId {
        // VMLogic asks only for indices this recorder returned (it maps promise indices to them
        // itself), so a miss is a bug here: the call is failed as unsupported.
        match self.receipts.get(receipt_index as usize) {
            Some(receipt) => &receipt.receiver_id,
            None => {
                self.mark_unsupported("a receiver lookup of an unknown receipt index");
                &self.current_account
            }
        }
    }

    fn set_refund_to(&mut self, receipt_index: ReceiptIndex, refund_to: AccountId) {
        match self.receipt_mut(receipt_index) {
            Ok(receipt) => receipt.refund_to = Some(refund_to),
            Err(_) => self.mark_unsupported("refund_to on an unknown receipt index"),
        }
    }

    fn post_quantum_keys_enabled(&self) -> bool {
        self.chain.post_quantum_keys
    }
}
