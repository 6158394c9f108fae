//! One contract account: its code (validated and compiled once), its storage, balance and pending
//! yields, and calls run against them in nearcore's VM.

use std::collections::BTreeMap;
use std::sync::Arc;

use near_parameters::vm::{Config, VMKind};
use near_parameters::{ActionCosts, RuntimeConfigStore, RuntimeFeesConfig};
use near_primitives_core::account::AccountContract;
use near_primitives_core::config::ViewConfig;
use near_primitives_core::hash::CryptoHash;
use near_primitives_core::types::{AccountId, Balance, BlockHeight, Gas, StorageUsage};
use near_primitives_core::version::{
    MIN_SUPPORTED_PROTOCOL_VERSION, PROTOCOL_VERSION, ProtocolFeature,
};
use near_vm_runner::internal::VMKindExt;
use near_vm_runner::logic::types::{PromiseResult as VmPromiseResult, ReturnData};
use near_vm_runner::logic::{ProtocolVersion, VMContext, VMOutcome};
use near_vm_runner::{
    ContractCode, FilesystemContractRuntimeCache, PreparedContract, noop_background_spawner,
    precompile_contract,
};

use crate::Error;
use crate::context::{CallContext, PromiseResult, ViewContext};
use crate::external::{CallExternal, ChainView, StorageOps};
use crate::outcome::{CallError, CallOutcome, ReturnValue};
use crate::receipts::{Action, Receipt};
use crate::yields::{PendingYield, YieldRegistry, YieldResume};

/// nearcore lets accounts this small exist without any balance for their storage
/// (near-primitives `ZERO_BALANCE_ACCOUNT_STORAGE_LIMIT`).
const ZERO_BALANCE_ACCOUNT_STORAGE_LIMIT: StorageUsage = 770;

/// The chain id the VM reports to `env::chain_id` unless told otherwise.
pub const DEFAULT_CHAIN_ID: &str = "localnet";

/// The account fields a contract call reads and changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccountState {
    pub balance: Balance,
    pub locked: Balance,
    /// Bytes the account occupies: the account record, its code, its keys and its storage.
    pub storage_usage: StorageUsage,
}

/// Gas nearcore charges for a function-call receipt besides what the VM burns running it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FunctionCallFees {
    /// Burnt when the receipt is created (a transaction's conversion, or the calling contract).
    pub send: Gas,
    /// Burnt when the receipt is applied, before the VM runs.
    pub exec: Gas,
}

/// The code handed to nearcore's runner (its `Contract` trait: hash + bytes).
struct Code(Arc<ContractCode>);

impl near_vm_runner::Contract for Code {
    fn hash(&self) -> CryptoHash {
        *self.0.hash()
    }

    fn get_code(&self) -> Option<Arc<ContractCode>> {
        Some(Arc::clone(&self.0))
    }
}

/// A contract account run offline in nearcore's own VM (wasmtime backend).
pub struct ContractVm {
    protocol_version: ProtocolVersion,
    wasm_config: Arc<Config>,
    fees: Arc<RuntimeFeesConfig>,
    code: Code,
    /// Compiled code, kept so each call only instantiates it: on disk, and the loaded module in
    /// memory, as a nearcore node keeps it (without the in-memory part every call copied the
    /// compiled artifact twice and page-faulted it in — most of the localnet's CPU time).
    cache: FilesystemContractRuntimeCache,
    /// Where `cache` keeps its files; removed with the VM.
    _cache_dir: tempfile::TempDir,
    account: AccountState,
    storage: BTreeMap<Vec<u8>, Vec<u8>>,
    yields: YieldRegistry,
    next_data_nonce: u64,
    chain_id: String,
    validators: BTreeMap<AccountId, Balance>,
    trie_nodes_per_access: u64,
}

impl std::fmt::Debug for ContractVm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContractVm")
            .field("protocol_version", &self.protocol_version)
            .field("code_hash", &self.code_hash())
            .field("account", &self.account)
            .field("storage_keys", &self.storage.len())
            .field("pending_yields", &self.yields.iter().count())
            .finish()
    }
}

impl ContractVm {
    /// Validates `wasm` for `protocol_version` exactly as nearcore does before deployment
    /// (`prepare_contract`: allowed wasm features, imports, limits), and compiles it once.
    /// The account starts with no balance and the storage of its record plus its code.
    pub fn new(wasm: &[u8], protocol_version: ProtocolVersion) -> Result<Self, Error> {
        if !(MIN_SUPPORTED_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&protocol_version) {
            return Err(Error::ProtocolVersion {
                requested: protocol_version,
                min: MIN_SUPPORTED_PROTOCOL_VERSION,
                max: PROTOCOL_VERSION,
            });
        }
        let runtime_config = RuntimeConfigStore::new(None)
            .get_config(protocol_version)
            .clone();
        // The protocol's parameters decide gas and validation; the backend that executes them
        // is whichever near-vm-runner was built with (wasmtime), as on non-x86 nearcore nodes.
        let mut wasm_config = Config::clone(&runtime_config.wasm_config);
        wasm_config.vm_kind = VMKind::Wasmtime;
        let wasm_config = Arc::new(wasm_config);

        near_vm_runner::prepare::prepare_contract(wasm, &wasm_config, wasm_config.vm_kind)
            .map_err(|reason| Error::Prepare {
                protocol_version,
                wasm_len: wasm.len(),
                reason,
            })?;

        let code = Arc::new(ContractCode::new(wasm.to_vec(), None));
        let cache_dir = tempfile::tempdir().map_err(Error::CacheDir)?;
        let cache = FilesystemContractRuntimeCache::with_memory_cache(
            cache_dir.path(),
            None::<&str>,
            "contract.cache",
            // Loaded modules kept in memory: one contract per VM, a few entries of headroom.
            4,
            None,
            // On disk: the one compiled contract with room to spare.
            1 << 30,
            noop_background_spawner(),
        )
        .map_err(Error::CacheDir)?;
        precompile_contract(&code, Arc::clone(&wasm_config), Some(&cache))
            .map_err(Error::Cache)?
            .map_err(|reason| Error::Compile {
                protocol_version,
                reason,
            })?;

        let fees = Arc::clone(&runtime_config.fees);
        let storage_usage = fees
            .storage_usage_config
            .num_bytes_account
            .saturating_add(wasm.len() as u64);
        Ok(Self {
            protocol_version,
            wasm_config,
            fees,
            code: Code(code),
            cache,
            _cache_dir: cache_dir,
            account: AccountState {
                balance: Balance::ZERO,
                locked: Balance::ZERO,
                storage_usage,
            },
            storage: BTreeMap::new(),
            yields: YieldRegistry::default(),
            next_data_nonce: 0,
            chain_id: DEFAULT_CHAIN_ID.to_string(),
            validators: BTreeMap::new(),
            trie_nodes_per_access: 0,
        })
    }

    /// The action-receipt and function-call fees of calling `method` with `args_len` bytes
    /// (`sender_is_receiver`: the caller is the contract account itself).
    pub fn function_call_fees(
        &self,
        method: &str,
        args_len: usize,
        sender_is_receiver: bool,
    ) -> FunctionCallFees {
        let bytes = (method.len() as u64).saturating_add(args_len as u64);
        let fee = |cost: ActionCosts| self.fees.fee(cost);
        let send = fee(ActionCosts::new_action_receipt)
            .send_fee(sender_is_receiver)
            .gas
            .saturating_add(
                fee(ActionCosts::function_call_base)
                    .send_fee(sender_is_receiver)
                    .gas,
            )
            .saturating_add(
                fee(ActionCosts::function_call_byte)
                    .send_fee(sender_is_receiver)
                    .gas
                    .saturating_mul(bytes),
            );
        let exec = fee(ActionCosts::new_action_receipt)
            .exec_fee()
            .gas
            .saturating_add(fee(ActionCosts::function_call_base).exec_fee().gas)
            .saturating_add(
                fee(ActionCosts::function_call_byte)
                    .exec_fee()
                    .gas
                    .saturating_mul(bytes),
            );
        FunctionCallFees { send, exec }
    }

    /// `new` at the newest protocol version this nearcore release knows.
    pub fn latest(wasm: &[u8]) -> Result<Self, Error> {
        Self::new(wasm, PROTOCOL_VERSION)
    }

    pub fn with_balance(mut self, balance: Balance) -> Self {
        self.account.balance = balance;
        self
    }

    pub fn with_chain_id(mut self, chain_id: impl Into<String>) -> Self {
        self.chain_id = chain_id.into();
        self
    }

    pub fn with_validators(mut self, validators: BTreeMap<AccountId, Balance>) -> Self {
        self.validators = validators;
        self
    }

    /// Charges `touching_trie_node` `nodes` times on every storage access. nearcore charges the
    /// trie nodes an access traverses (fewer, at `read_cached_trie_node`, when the chunk cache
    /// has them); their number depends on the shard's trie, which an offline VM does not have.
    /// 0 (the default) leaves that cost out; a depth such as 20 gives a pessimistic bound.
    pub fn with_trie_nodes_per_access(mut self, nodes: u64) -> Self {
        self.trie_nodes_per_access = nodes;
        self
    }

    pub fn protocol_version(&self) -> ProtocolVersion {
        self.protocol_version
    }

    pub fn code_hash(&self) -> CryptoHash {
        *self.code.0.hash()
    }

    pub fn code(&self) -> &[u8] {
        self.code.0.code()
    }

    /// nearcore's VM parameters (gas costs, limits) for this protocol version.
    pub fn wasm_config(&self) -> &Config {
        &self.wasm_config
    }

    /// nearcore's action fees and storage prices for this protocol version.
    pub fn fees(&self) -> &RuntimeFeesConfig {
        &self.fees
    }

    /// Blocks after which NEAR times a yield out (`yield_timeout_length_in_blocks`).
    pub fn yield_timeout_blocks(&self) -> u64 {
        self.wasm_config.limit_config.yield_timeout_length_in_blocks
    }

    /// The largest payload `promise_yield_resume` accepts (`max_yield_payload_size`).
    pub fn max_yield_payload_size(&self) -> u64 {
        self.wasm_config.limit_config.max_yield_payload_size
    }

    pub fn account(&self) -> &AccountState {
        &self.account
    }

    /// For a chain that moves tokens to or from the account outside contract calls
    /// (transfers, gas rewards).
    pub fn account_mut(&mut self) -> &mut AccountState {
        &mut self.account
    }

    /// The contract's key-value storage, as `env::storage_*` sees it.
    pub fn storage(&self) -> &BTreeMap<Vec<u8>, Vec<u8>> {
        &self.storage
    }

    pub fn storage_get(&self, key: &[u8]) -> Option<&[u8]> {
        self.storage.get(key).map(Vec::as_slice)
    }

    pub fn pending_yields(&self) -> impl Iterator<Item = &PendingYield> {
        self.yields.iter()
    }

    /// Removes and returns the yields NEAR would have timed out by `block_height`; the chain
    /// runs each callback with `PromiseResult::Failed`.
    pub fn take_timed_out_yields(&mut self, block_height: BlockHeight) -> Vec<PendingYield> {
        let timeout = self.yield_timeout_blocks();
        self.yields.take_timed_out(block_height, timeout)
    }

    /// Runs a yield's callback with `result` (the resume payload, or `Failed` after a timeout).
    pub fn run_yield_callback(
        &mut self,
        yielded: &PendingYield,
        result: PromiseResult,
        block_height: BlockHeight,
        block_timestamp: u64,
    ) -> Result<CallOutcome, Error> {
        let ctx = yielded.callback_context(result, block_height, block_timestamp);
        self.call(&yielded.callback.method_name, &yielded.callback.args, &ctx)
    }

    /// Runs `method` with `args` as a function call receipt would. On success the storage,
    /// balance, storage usage and pending yields change; on failure nothing does (the outcome
    /// carries the logs, burnt gas and error). `Err` means the VM itself failed, not the
    /// contract.
    pub fn call(
        &mut self,
        method: &str,
        args: &[u8],
        ctx: &CallContext,
    ) -> Result<CallOutcome, Error> {
        let context = self.vm_context(method, args, ctx)?;
        let chain = self.chain_view();
        let mut ext = CallExternal::new(
            &self.storage,
            &self.yields,
            chain,
            ctx.current_account.clone(),
            self.next_data_nonce,
        );
        let outcome = self.run(&mut ext, &context, method)?;
        let unsupported = ext.unsupported();
        let next_data_nonce = ext.next_data_nonce();
        let storage_ops = ext.storage_ops();
        let mut receipts = std::mem::take(&mut ext.receipts);
        let resumes = std::mem::take(&mut ext.resumes);
        let gas_weights = std::mem::take(&mut ext.gas_weights);
        let writes = ext.into_writes();
        // Data ids must never repeat, even when the call that drew them failed.
        self.next_data_nonce = next_data_nonce;

        let error = outcome
            .aborted
            .clone()
            .map(CallError::Aborted)
            .or(unsupported.map(CallError::Unsupported))
            .or_else(|| {
                self.check_storage_stake(outcome.balance, outcome.storage_usage)
                    .err()
            });
        if let Some(error) = error {
            tracing::debug!(method, %error, gas_burnt = outcome.burnt_gas.as_gas(), "call failed");
            return Ok(self.failed_outcome(outcome, error, storage_ops));
        }

        let unused_gas = ctx.prepaid_gas.saturating_sub(outcome.used_gas);
        let distributed = distribute_unused_gas(&mut receipts, &gas_weights, unused_gas);

        for (key, value) in writes {
            match value {
                Some(value) => self.storage.insert(key, value),
                None => self.storage.remove(&key),
            };
        }
        self.account.balance = outcome.balance;
        self.account.storage_usage = outcome.storage_usage;
        let yield_resumes = self.commit_yields(&receipts, resumes, ctx);

        tracing::debug!(
            method,
            gas_burnt = outcome.burnt_gas.as_gas(),
            receipts = receipts.len(),
            resumes = yield_resumes.len(),
            "call succeeded"
        );
        Ok(CallOutcome {
            return_value: return_value(outcome.return_data),
            logs: outcome.logs,
            gas_burnt: outcome.burnt_gas,
            gas_used: outcome.used_gas.saturating_add(distributed),
            receipts,
            yield_resumes,
            balance: self.account.balance,
            storage_usage: self.account.storage_usage,
            error: None,
            profile: outcome.profile,
            storage_ops,
        })
    }

    /// Runs a view method (RPC `call_function`): no state changes, no receipts, and nearcore
    /// rejects the host functions that would make them.
    pub fn view(&self, method: &str, args: &[u8], ctx: &ViewContext) -> Result<CallOutcome, Error> {
        let max_gas_burnt = self.wasm_config.limit_config.max_gas_burnt;
        let mut call = CallContext::new(ctx.current_account.clone(), ctx.current_account.clone())
            .with_gas(max_gas_burnt)
            .at_block(ctx.block_height, ctx.block_timestamp);
        call.epoch_height = ctx.epoch_height;
        let mut context = self.vm_context(method, args, &call)?;
        context.view_config = Some(ViewConfig { max_gas_burnt });
        let chain = self.chain_view();
        let mut ext = CallExternal::new(
            &self.storage,
            &self.yields,
            chain,
            ctx.current_account.clone(),
            self.next_data_nonce,
        );
        let outcome = self.run(&mut ext, &context, method)?;
        let storage_ops = ext.storage_ops();
        let error = outcome
            .aborted
            .clone()
            .map(CallError::Aborted)
            .or(ext.unsupported().map(CallError::Unsupported));
        if let Some(error) = error {
            return Ok(self.failed_outcome(outcome, error, storage_ops));
        }
        Ok(CallOutcome {
            return_value: return_value(outcome.return_data),
            logs: outcome.logs,
            gas_burnt: outcome.burnt_gas,
            gas_used: outcome.used_gas,
            receipts: Vec::new(),
            yield_resumes: Vec::new(),
            balance: self.account.balance,
            storage_usage: self.account.storage_usage,
            error: None,
            profile: outcome.profile,
            storage_ops,
        })
    }

    fn chain_view(&self) -> ChainView<'_> {
        ChainView {
            chain_id: &self.chain_id,
            validators: &self.validators,
            post_quantum_keys: ProtocolFeature::PostQuantumSignatures
                .enabled(self.protocol_version),
            trie_nodes_per_access: self.trie_nodes_per_access,
        }
    }

    fn vm_context(&self, method: &str, args: &[u8], ctx: &CallContext) -> Result<VMContext, Error> {
        if self
            .account
            .balance
            .checked_add(ctx.attached_deposit)
            .is_none()
        {
            return Err(Error::BalanceOverflow {
                method: method.to_string(),
                balance: self.account.balance,
                deposit: ctx.attached_deposit,
            });
        }
        let signer_account_pk = near_primitives_core::borsh::to_vec(&ctx.signer_public_key)
            .map_err(|source| Error::Encode {
                what: "the signer public key",
                source,
            })?;
        let promise_results: Vec<VmPromiseResult> = ctx
            .promise_results
            .iter()
            .map(|result| match result {
                PromiseResult::Successful(bytes) => {
                    VmPromiseResult::Successful(bytes.as_slice().into())
                }
                PromiseResult::Failed => VmPromiseResult::Failed,
            })
            .collect();
        Ok(VMContext {
            current_account_id: ctx.current_account.clone(),
            signer_account_id: ctx.signer.clone(),
            signer_account_pk,
            predecessor_account_id: ctx.predecessor.clone(),
            refund_to_account_id: ctx
                .refund_to
                .clone()
                .unwrap_or_else(|| ctx.predecessor.clone()),
            input: args.into(),
            promise_results: promise_results.into(),
            block_height: ctx.block_height,
            block_timestamp: ctx.block_timestamp,
            epoch_height: ctx.epoch_height,
            account_balance: self.account.balance,
            account_locked_balance: self.account.locked,
            storage_usage: self.account.storage_usage,
            account_contract: AccountContract::Local(self.code_hash()),
            attached_deposit: ctx.attached_deposit,
            prepaid_gas: ctx.prepaid_gas,
            random_seed: ctx.seed(),
            view_config: None,
            output_data_receivers: ctx.output_data_receivers.clone(),
        })
    }

    fn run(
        &self,
        ext: &mut CallExternal<'_>,
        context: &VMContext,
        method: &str,
    ) -> Result<VMOutcome, Error> {
        let runtime = self
            .wasm_config
            .vm_kind
            .runtime(Arc::clone(&self.wasm_config))
            .ok_or(Error::BackendMissing {
                vm_kind: self.wasm_config.vm_kind,
            })?;
        let gas_counter = context.make_gas_counter(&self.wasm_config);
        let prepared: Box<dyn PreparedContract> =
            runtime.prepare(&self.code, Some(&self.cache), gas_counter, method);
        near_vm_runner::run(prepared, ext, context, Arc::clone(&self.fees)).map_err(|source| {
            Error::Runner {
                method: method.to_string(),
                source,
            }
        })
    }

    /// The chain's storage-staking check after a receipt's actions (nearcore
    /// `check_storage_stake`): balance plus locked must cover the storage.
    fn check_storage_stake(
        &self,
        balance: Balance,
        storage_usage: StorageUsage,
    ) -> Result<(), CallError> {
        let per_byte = self
            .fees
            .storage_usage_config
            .storage_amount_per_byte
            .as_yoctonear();
        let required = per_byte.saturating_mul(u128::from(storage_usage));
        let available = balance.saturating_add(self.account.locked).as_yoctonear();
        if available >= required || storage_usage <= ZERO_BALANCE_ACCOUNT_STORAGE_LIMIT {
            return Ok(());
        }
        Err(CallError::LackBalanceForState {
            needed: required - available,
            storage_usage,
        })
    }

    fn failed_outcome(
        &self,
        outcome: VMOutcome,
        error: CallError,
        storage_ops: StorageOps,
    ) -> CallOutcome {
        CallOutcome {
            return_value: ReturnValue::None,
            logs: outcome.logs,
            gas_burnt: outcome.burnt_gas,
            // The receipts of a failed call are never sent, so none of its gas stays prepaid.
            gas_used: outcome.burnt_gas,
            receipts: Vec::new(),
            yield_resumes: Vec::new(),
            balance: self.account.balance,
            storage_usage: self.account.storage_usage,
            error: Some(error),
            profile: outcome.profile,
            storage_ops,
        }
    }

    /// Registers the yields the call created and hands out the callbacks of the ones it resumed.
    fn commit_yields(
        &mut self,
        receipts: &[Receipt],
        resumes: Vec<(CryptoHash, Vec<u8>)>,
        ctx: &CallContext,
    ) -> Vec<YieldResume> {
        let mut created: Vec<PendingYield> = receipts
            .iter()
            .filter_map(|receipt| {
                let data_id = receipt.yield_data_id?;
                let callback = receipt.function_calls().next()?.clone();
                Some(PendingYield {
                    data_id,
                    yield_id: receipt.yield_id,
                    account_id: receipt.receiver_id.clone(),
                    callback,
                    signer: ctx.signer.clone(),
                    signer_public_key: ctx.signer_public_key.clone(),
                    created_at: ctx.block_height,
                })
            })
            .collect();
        let mut yield_resumes = Vec::with_capacity(resumes.len());
        for (data_id, payload) in resumes {
            let yielded = match self.yields.remove(&data_id) {
                Some(pending) => Some(pending),
                None => created
                    .iter()
                    .position(|pending| pending.data_id == data_id)
                    .map(|at| created.remove(at)),
            };
            // The recorder accepted the resume only for a known yield, so this always matches.
            if let Some(yielded) = yielded {
                yield_resumes.push(YieldResume {
                    data_id,
                    payload,
                    yielded,
                });
            }
        }
        for pending in created {
            self.yields.insert(pending);
        }
        yield_resumes
    }
}

fn return_value(data: ReturnData) -> ReturnValue {
    match data {
        ReturnData::Value(bytes) => ReturnValue::Value(bytes),
        ReturnData::ReceiptIndex(index) => ReturnValue::Promise(index),
        ReturnData::None => ReturnValue::None,
    }
}

/// nearcore's `ReceiptManager::distribute_gas`: unused gas goes to function calls in proportion
/// to their weights, the rounding remainder to the last of them. Returns the gas distributed.
fn distribute_unused_gas(
    receipts: &mut [Receipt],
    gas_weights: &[(usize, usize, u64)],
    unused_gas: Gas,
) -> Gas {
    let weight_sum: u128 = gas_weights
        .iter()
        .map(|&(_, _, weight)| u128::from(weight))
        .sum();
    if weight_sum == 0 || unused_gas == Gas::ZERO {
        return Gas::ZERO;
    }
    let unused = u128::from(unused_gas.as_gas());
    let mut distributed: u64 = 0;
    let mut add_gas = |receipt: usize, action: usize, gas: u64| {
        if let Some(Action::FunctionCall(call)) = receipts
            .get_mut(receipt)
            .and_then(|r| r.actions.get_mut(action))
        {
            call.gas = call.gas.saturating_add(Gas::from_gas(gas));
        }
    };
    for &(receipt, action, weight) in gas_weights {
        // weight / weight_sum ≤ 1, so the share fits in u64.
        let share = u64::try_from(unused * u128::from(weight) / weight_sum).unwrap_or(u64::MAX);
        distributed = distributed.saturating_add(share);
        add_gas(receipt, action, share);
    }
    if let Some(&(receipt, action, _)) = gas_weights.last() {
        add_gas(
            receipt,
            action,
            unused_gas.as_gas().saturating_sub(distributed),
        );
    }
    unused_gas
}
