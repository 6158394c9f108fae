//! The chain: accounts, blocks, transactions and receipts, all in memory. One block applies the
//! receipts scheduled for it, then the yields that time out at its height, then turns the
//! transactions accepted since the previous block into receipts for the next one.

mod account;
mod execute;
mod fees;
mod receipt;
mod status;
mod transactions;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use e2e_contract_vm::{CallContext, ContractVm, PROTOCOL_VERSION, ViewContext};
use near_parameters::{RuntimeConfigStore, RuntimeFeesConfig};
use near_primitives::hash::{CryptoHash, hash};
use near_primitives::types::{AccountId, BlockHeight, ProtocolVersion};
use near_primitives::views::ExecutionOutcomeWithIdView;

pub use account::Account;
pub use execute::view_error;
pub use receipt::{ActionReceiptData, Work};
pub use status::{TxProgress, TxStatusView};
pub use transactions::SubmitError;

use crate::Error;
use crate::config::LocalnetConfig;

/// The height of the genesis block.
pub const GENESIS_HEIGHT: BlockHeight = 1;

#[derive(Debug, Clone)]
pub struct BlockRecord {
    pub height: BlockHeight,
    pub hash: CryptoHash,
    pub prev_hash: CryptoHash,
    /// Nanoseconds since the Unix epoch.
    pub timestamp_ns: u64,
}

#[derive(Debug, Clone)]
struct TxRecord {
    tx: near_primitives::transaction::SignedTransaction,
    /// Set when the transaction is included in a block.
    outcome: Option<ExecutionOutcomeWithIdView>,
    /// Every receipt the transaction caused, in creation order (refunds included).
    receipt_ids: Vec<CryptoHash>,
    /// The receipt the transaction converts into, applied the block after its inclusion.
    first_receipt: Box<ActionReceiptData>,
    /// Gas burnt converting the transaction (the receipt's send fees).
    conversion_gas: u64,
}

#[derive(Debug, Clone)]
struct ReceiptRecord {
    receipt: ActionReceiptData,
    tx_hash: CryptoHash,
    outcome: Option<ExecutionOutcomeWithIdView>,
}

/// A receipt waiting for the data of the receipts it depends on (`promise_then`).
#[derive(Debug, Clone)]
struct Postponed {
    receipt: ActionReceiptData,
    missing: usize,
}

pub struct Chain {
    chain_id: String,
    gas_price: u128,
    protocol_version: ProtocolVersion,
    validity_period: u64,
    /// nearcore's `max_total_prepaid_gas` of the protocol version: no transaction may attach more.
    max_total_prepaid_gas: u64,
    runtime_config: Arc<near_parameters::RuntimeConfig>,
    fees: Arc<RuntimeFeesConfig>,
    accounts: BTreeMap<AccountId, Account>,
    blocks: Vec<BlockRecord>,
    block_by_hash: HashMap<CryptoHash, usize>,
    /// Transactions accepted since the last block, in arrival order.
    incoming: Vec<CryptoHash>,
    /// What the next block applies.
    next_work: Vec<Work>,
    postponed: HashMap<CryptoHash, Postponed>,
    waiting_for_data: HashMap<CryptoHash, CryptoHash>,
    received_data: HashMap<CryptoHash, Option<Vec<u8>>>,
    /// Yield receipts by the data id their resume delivers.
    yields: HashMap<CryptoHash, ActionReceiptData>,
    txs: HashMap<CryptoHash, TxRecord>,
    receipts: HashMap<CryptoHash, ReceiptRecord>,
}

impl Chain {
    /// Builds genesis: accounts, keys, contracts (validated and compiled by nearcore's VM) and
    /// their init calls, at block `GENESIS_HEIGHT` with timestamp `now_ns`.
    pub fn genesis(config: &LocalnetConfig, now_ns: u64) -> Result<Self, Error> {
        let protocol_version = config.protocol_version.unwrap_or(PROTOCOL_VERSION);
        let runtime_config = RuntimeConfigStore::new(None)
            .get_config(protocol_version)
            .clone();
        let fees = Arc::clone(&runtime_config.fees);
        let max_total_prepaid_gas = runtime_config
            .wasm_config
            .limit_config
            .max_total_prepaid_gas
            .as_gas();
        let genesis_block = BlockRecord {
            height: GENESIS_HEIGHT,
            hash: block_hash(GENESIS_HEIGHT, &CryptoHash::default(), now_ns),
            prev_hash: CryptoHash::default(),
            timestamp_ns: now_ns,
        };
        let mut chain = Self {
            chain_id: config.chain_id.clone(),
            gas_price: config.gas_price,
            protocol_version,
            validity_period: config.transaction_validity_period,
            max_total_prepaid_gas,
            runtime_config: Arc::clone(&runtime_config),
            fees,
            accounts: BTreeMap::new(),
            block_by_hash: HashMap::from([(genesis_block.hash, 0)]),
            blocks: vec![genesis_block],
            incoming: Vec::new(),
            next_work: Vec::new(),
            postponed: HashMap::new(),
            waiting_for_data: HashMap::new(),
            received_data: HashMap::new(),
            yields: HashMap::new(),
            txs: HashMap::new(),
            receipts: HashMap::new(),
        };
        for genesis in &config.accounts {
            if chain.accounts.contains_key(&genesis.account_id) {
                return Err(Error::DuplicateAccount(genesis.account_id.clone()));
            }
            let mut account = Account::new(genesis.balance, &chain.fees);
            for key in &genesis.public_keys {
                if !matches!(key.key_type(), near_crypto::KeyType::ED25519) {
                    return Err(Error::KeyType {
                        account_id: genesis.account_id.clone(),
                        key: key.clone(),
                    });
                }
                account.add_full_access_key(key.clone(), &chain.fees);
            }
            if let Some(contract) = &genesis.contract {
                let wasm = std::fs::read(&contract.wasm).map_err(|source| Error::ReadFile {
                    path: contract.wasm.clone(),
                    source,
                })?;
                let vm = ContractVm::new(&wasm, protocol_version)
                    .map_err(|source| Error::Contract {
                        account_id: genesis.account_id.clone(),
                        path: contract.wasm.clone(),
                        source: Box::new(source),
                    })?
                    .with_chain_id(config.chain_id.clone());
                account.deploy(vm, &chain.fees);
            }
            chain.accounts.insert(genesis.account_id.clone(), account);
        }
        for genesis in &config.accounts {
            if let Some(init) = genesis.contract.as_ref().and_then(|c| c.init.as_ref()) {
                chain.init_call(&genesis.account_id, &init.method, &init.args)?;
            }
        }
        Ok(chain)
    }

    fn init_call(
        &mut self,
        account_id: &AccountId,
        method: &str,
        args: &serde_json::Value,
    ) -> Result<(), Error> {
        let head = self.head().clone();
        let init_failed = |reason: String| Error::InitCall {
            account_id: account_id.clone(),
            method: method.to_string(),
            reason,
        };
        let vm = self
            .accounts
            .get_mut(account_id)
            .and_then(|account| account.contract.as_mut())
            .ok_or_else(|| init_failed("the account has no contract".to_string()))?;
        let args = serde_json::to_vec(args).map_err(|e| init_failed(e.to_string()))?;
        let ctx = CallContext::new(account_id.clone(), account_id.clone())
            .at_block(head.height, head.timestamp_ns);
        let outcome = vm
            .call(method, &args, &ctx)
            .map_err(|e| init_failed(e.to_string()))?;
        if let Some(error) = outcome.error_message() {
            return Err(init_failed(format!("{error}; logs: {:?}", outcome.logs)));
        }
        if !outcome.receipts.is_empty() {
            return Err(init_failed(
                "init calls that create receipts are not supported at genesis".to_string(),
            ));
        }
        Ok(())
    }

    pub fn chain_id(&self) -> &str {
        &self.chain_id
    }

    pub fn gas_price(&self) -> u128 {
        self.gas_price
    }

    pub fn protocol_version(&self) -> ProtocolVersion {
        self.protocol_version
    }

    /// The protocol's runtime parameters (what `EXPERIMENTAL_protocol_config` shows).
    pub fn runtime_config(&self) -> &near_parameters::RuntimeConfig {
        &self.runtime_config
    }

    pub fn validity_period(&self) -> u64 {
        self.validity_period
    }

    pub fn fees(&self) -> &RuntimeFeesConfig {
        &self.fees
    }

    pub fn head(&self) -> &BlockRecord {
        // Genesis is pushed at construction and blocks are never removed.
        &self.blocks[self.blocks.len() - 1]
    }

    pub fn genesis_block(&self) -> &BlockRecord {
        &self.blocks[0]
    }

    pub fn block_at(&self, height: BlockHeight) -> Option<&BlockRecord> {
        let index = height.checked_sub(GENESIS_HEIGHT)?;
        self.blocks.get(usize::try_from(index).ok()?)
    }

    pub fn block_by_hash(&self, hash: &CryptoHash) -> Option<&BlockRecord> {
        self.block_by_hash
            .get(hash)
            .map(|&index| &self.blocks[index])
    }

    pub fn account(&self, account_id: &AccountId) -> Option<&Account> {
        self.accounts.get(account_id)
    }

    /// Runs a view method on the head state (RPC `call_function`).
    pub fn view_call(
        &self,
        account_id: &AccountId,
        method: &str,
        args: &[u8],
    ) -> Option<Result<e2e_contract_vm::CallOutcome, e2e_contract_vm::Error>> {
        let vm = self.accounts.get(account_id)?.contract.as_ref()?;
        let head = self.head();
        let ctx = ViewContext::new(account_id.clone()).at_block(head.height, head.timestamp_ns);
        Some(vm.view(method, args, &ctx))
    }

    /// Produces the next block at `now_ns` (kept strictly after the previous timestamp).
    pub fn produce_block(&mut self, now_ns: u64) -> &BlockRecord {
        let prev = self.head().clone();
        let height = prev.height + 1;
        let timestamp_ns = now_ns.max(prev.timestamp_ns + 1);
        let block = BlockRecord {
            height,
            hash: block_hash(height, &prev.hash, timestamp_ns),
            prev_hash: prev.hash,
            timestamp_ns,
        };
        self.block_by_hash.insert(block.hash, self.blocks.len());
        self.blocks.push(block.clone());

        for work in std::mem::take(&mut self.next_work) {
            self.apply_work(work, &block);
        }
        self.time_out_yields(&block);
        self.include_transactions(&block);
        tracing::trace!(height, "block produced");
        self.head()
    }

    fn time_out_yields(&mut self, block: &BlockRecord) {
        let mut expired = Vec::new();
        for account in self.accounts.values_mut() {
            if let Some(vm) = account.contract.as_mut() {
                expired.extend(vm.take_timed_out_yields(block.height));
            }
        }
        for pending in expired {
            match self.yields.remove(&pending.data_id) {
                Some(receipt) => {
                    tracing::debug!(data_id = %pending.data_id, height = block.height, "yield timed out");
                    self.apply_action(
                        receipt,
                        Some(vec![e2e_contract_vm::PromiseResult::Failed]),
                        block,
                    );
                }
                None => tracing::warn!(
                    data_id = %pending.data_id,
                    "the VM timed out a yield the chain does not know"
                ),
            }
        }
    }

    /// Registers a receipt as part of `tx_hash`'s execution.
    fn register_receipt(&mut self, receipt: &ActionReceiptData, tx_hash: CryptoHash) {
        if let Some(tx) = self.txs.get_mut(&tx_hash) {
            tx.receipt_ids.push(receipt.receipt_id);
        }
        self.receipts.insert(
            receipt.receipt_id,
            ReceiptRecord {
                receipt: receipt.clone(),
                tx_hash,
                outcome: None,
            },
        );
    }

    fn tx_of_receipt(&self, receipt_id: &CryptoHash) -> Option<CryptoHash> {
        self.receipts.get(receipt_id).map(|record| record.tx_hash)
    }
}

fn block_hash(height: BlockHeight, prev_hash: &CryptoHash, timestamp_ns: u64) -> CryptoHash {
    let mut material = Vec::with_capacity(48);
    material.extend_from_slice(&height.to_le_bytes());
    material.extend_from_slice(prev_hash.as_ref());
    material.extend_from_slice(&timestamp_ns.to_le_bytes());
    hash(&material)
}
