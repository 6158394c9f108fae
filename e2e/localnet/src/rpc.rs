//! The JSON-RPC methods, answered with nearcore's own request, view and error types.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use near_chain_configs::{GenesisConfig, ProtocolConfig, ProtocolConfigView};
use near_crypto::PublicKeyHandle;
use near_crypto::{KeyType, PublicKey};
use near_jsonrpc_primitives::errors::RpcError;
use near_jsonrpc_primitives::types::blocks::{RpcBlockError, RpcBlockRequest};
use near_jsonrpc_primitives::types::config::{
    RpcProtocolConfigError, RpcProtocolConfigRequest, RpcProtocolConfigResponse,
};
use near_jsonrpc_primitives::types::gas_price::RpcGasPriceError;
use near_jsonrpc_primitives::types::query::{
    QueryResponseKind, RpcQueryError, RpcQueryRequest, RpcQueryResponse,
};
use near_jsonrpc_primitives::types::transactions::{
    RpcSendTransactionRequest, RpcTransactionError, RpcTransactionResponse,
    RpcTransactionStatusRequest, TimeoutErrorCause,
};
use near_primitives::hash::CryptoHash;
use near_primitives::transaction::SignedTransaction;
use near_primitives::types::{AccountId, BlockId, BlockReference, MaybeBlockId};
use near_primitives::types::{StoreKey, StoreValue};
use near_primitives::version::Version;
use near_primitives::views::{
    AccessKeyInfoView, AccessKeyList, AccessKeyView, AccountView, BlockHeaderView, BlockView,
    CallResult, ContractCodeView, FinalExecutionOutcomeViewEnum, GasPriceView, QueryRequest,
    StateItem, StatusResponse, StatusSyncInfo, TxExecutionStatus, ViewStateResult,
};
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::watch;

use crate::chain::{BlockRecord, Chain, SubmitError, TxStatusView};

/// What every request handler shares.
pub struct Rpc {
    pub chain: Arc<Mutex<Chain>>,
    /// The head height, bumped by the block producer; transaction waiters watch it.
    pub heights: watch::Receiver<u64>,
    pub tx_wait_timeout: Duration,
    pub started: Instant,
    pub rpc_addr: String,
}

/// A failed call: nearcore's error, and whether nearcore would answer it with HTTP 200 despite
/// its kind (used for the localnet's own "not modelled" answers).
pub struct Failure {
    pub error: RpcError,
    pub force_ok: bool,
}

impl<E: Into<RpcError>> From<E> for Failure {
    fn from(error: E) -> Self {
        Self {
            error: error.into(),
            force_ok: false,
        }
    }
}

type Answer = Result<Value, Failure>;

impl Rpc {
    fn chain(&self) -> MutexGuard<'_, Chain> {
        self.chain.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Answers one JSON-RPC call. `drop_transactions`: the fault switch asks to accept and lose
    /// submitted transactions.
    pub async fn call(&self, method: &str, params: Value, drop_transactions: bool) -> Answer {
        match method {
            "status" => to_value(self.status()),
            "health" => to_value(near_jsonrpc_primitives::types::status::RpcHealthResponse),
            "block" => self.block(params),
            "gas_price" => self.gas_price(params),
            "EXPERIMENTAL_protocol_config" => self.protocol_config(params),
            "query" => self.query(params),
            "broadcast_tx_async" => {
                let (tx,): (SignedTransaction,) = parse(params)?;
                let tx_hash = self.submit(tx, drop_transactions)?;
                to_value(tx_hash)
            }
            "broadcast_tx_commit" => {
                let (tx,): (SignedTransaction,) = parse(params)?;
                let sender = tx.transaction.signer_id().clone();
                let tx_hash = self.submit(tx, drop_transactions)?;
                let status = self
                    .wait(tx_hash, &sender, &TxExecutionStatus::default(), false, true)
                    .await?;
                match status.outcome {
                    Some(FinalExecutionOutcomeViewEnum::FinalExecutionOutcome(outcome)) => {
                        to_value(outcome)
                    }
                    _ => Err(RpcTransactionError::InternalError {
                        debug_info: format!("transaction {tx_hash} has no outcome yet"),
                    }
                    .into()),
                }
            }
            "send_tx" => {
                let request: RpcSendTransactionRequest = parse(params)?;
                let sender = request.signed_transaction.transaction.signer_id().clone();
                let tx_hash = self.submit(request.signed_transaction, drop_transactions)?;
                let status = self
                    .wait(tx_hash, &sender, &request.wait_until, false, true)
                    .await?;
                to_value(response(status))
            }
            "tx" | "tx_status" | "EXPERIMENTAL_tx_status" => {
                let with_receipts = method == "EXPERIMENTAL_tx_status";
                let (tx_hash, sender, wait_until) = parse_tx_status(params)?;
                let status = self
                    .wait(tx_hash, &sender, &wait_until, with_receipts, false)
                    .await?;
                to_value(response(status))
            }
            _ => Err(RpcError::method_not_found(method.to_string()).into()),
        }
    }

    fn submit(&self, tx: SignedTransaction, drop: bool) -> Result<CryptoHash, Failure> {
        if drop {
            let tx_hash = tx.get_hash();
            tracing::info!(%tx_hash, "fault switch: transaction accepted and dropped");
            return Ok(tx_hash);
        }
        self.chain().submit(tx).map_err(|error| match error {
            SubmitError::Invalid(context) => {
                RpcTransactionError::InvalidTransaction { context }.into()
            }
            SubmitError::Unsupported(message) => not_modelled(message),
        })
    }

    /// Waits until `tx_hash` reaches `wait_until` or the wait times out as nearcore's does.
    /// `submitted`: the caller just sent it, so "not seen" means dropped, not unknown.
    async fn wait(
        &self,
        tx_hash: CryptoHash,
        sender: &AccountId,
        wait_until: &TxExecutionStatus,
        with_receipts: bool,
        submitted: bool,
    ) -> Result<TxStatusView, RpcTransactionError> {
        let deadline = tokio::time::Instant::now() + self.tx_wait_timeout;
        let mut heights = self.heights.clone();
        loop {
            let status = self.chain().tx_status(&tx_hash, sender, with_receipts);
            match &status {
                None if !submitted => {
                    return Err(RpcTransactionError::UnknownTransaction {
                        requested_transaction_hash: tx_hash,
                    });
                }
                Some(status) if status.progress.satisfies(wait_until) => {
                    return Ok(status.clone());
                }
                // Dropped by the fault switch: a caller that waits for nothing is answered at once.
                None if *wait_until == TxExecutionStatus::None => {
                    return Ok(TxStatusView {
                        progress: crate::chain::TxProgress::Accepted,
                        outcome: None,
                    });
                }
                _ => {}
            }
            match tokio::time::timeout_at(deadline, heights.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    return Err(RpcTransactionError::InternalError {
                        debug_info: "the localnet stopped producing blocks".to_string(),
                    });
                }
                Err(_) => {
                    let cause = match status {
                        None => TimeoutErrorCause::NotObserved,
                        Some(status) => TimeoutErrorCause::Pending {
                            status: Box::new(response(status)),
                        },
                    };
                    return Err(RpcTransactionError::TimeoutError(Some(cause)));
                }
            }
        }
    }

    fn status(&self) -> StatusResponse {
        let chain = self.chain();
        let head = chain.head();
        let genesis = chain.genesis_block();
        StatusResponse {
            version: Version {
                version: env!("CARGO_PKG_VERSION").to_string(),
                build: "e2e-localnet (test-only)".to_string(),
                commit: String::new(),
                rustc_version: String::new(),
            },
            chain_id: chain.chain_id().to_string(),
            protocol_version: chain.protocol_version(),
            latest_protocol_version: chain.protocol_version(),
            rpc_addr: Some(self.rpc_addr.clone()),
            validators: Vec::new(),
            sync_info: StatusSyncInfo {
                latest_block_hash: head.hash,
                latest_block_height: head.height,
                latest_state_root: CryptoHash::default(),
                latest_block_time: utc(head.timestamp_ns),
                syncing: false,
                earliest_block_hash: Some(genesis.hash),
                earliest_block_height: Some(genesis.height),
                earliest_block_time: Some(utc(genesis.timestamp_ns)),
                epoch_id: None,
                epoch_start_height: None,
            },
            validator_account_id: None,
            validator_public_key: None,
            node_public_key: PublicKey::empty(KeyType::ED25519),
            node_key: None,
            uptime_sec: i64::try_from(self.started.elapsed().as_secs()).unwrap_or(i64::MAX),
            genesis_hash: genesis.hash,
            detailed_debug_status: None,
        }
    }

    fn block(&self, params: Value) -> Answer {
        let reference = match params {
            // The legacy positional form: `[block_id]`.
            Value::Array(mut items) if items.len() == 1 => {
                BlockReference::BlockId(parse(items.remove(0))?)
            }
            params => parse::<RpcBlockRequest>(params)?.block_reference,
        };
        let chain = self.chain();
        let block = find_block(&chain, &reference).ok_or_else(|| RpcBlockError::UnknownBlock {
            error_message: format!("{reference:?}"),
        })?;
        to_value(block_view(&chain, block))
    }

    /// The genesis and runtime parameters, as nearcore's `EXPERIMENTAL_protocol_config` shows them:
    /// the runtime config is nearcore's own for the protocol version; the genesis fields are
    /// nearcore's defaults with what the localnet really uses (chain id, protocol version, genesis
    /// height and time, gas price, validity period).
    fn protocol_config(&self, params: Value) -> Answer {
        let request: RpcProtocolConfigRequest = parse(params)?;
        let chain = self.chain();
        if find_block(&chain, &request.block_reference).is_none() {
            return Err(RpcProtocolConfigError::UnknownBlock {
                error_message: format!("{:?}", request.block_reference),
            }
            .into());
        }
        let genesis = chain.genesis_block();
        let genesis_time = near_time::serde_utc_as_iso::serialize(
            &utc(genesis.timestamp_ns),
            serde_json::value::Serializer,
        )
        .and_then(serde_json::from_value)
        .map_err(|e| RpcProtocolConfigError::InternalError {
            error_message: format!("genesis time: {e}"),
        })?;
        let gas_price = near_primitives::types::Balance::from_yoctonear(chain.gas_price());
        let genesis_config = GenesisConfig {
            protocol_version: chain.protocol_version(),
            genesis_time,
            chain_id: chain.chain_id().to_string(),
            genesis_height: genesis.height,
            min_gas_price: gas_price,
            max_gas_price: gas_price,
            transaction_validity_period: chain.validity_period(),
            ..GenesisConfig::default()
        };
        to_value(RpcProtocolConfigResponse {
            config_view: ProtocolConfigView::from(ProtocolConfig {
                genesis_config,
                runtime_config: chain.runtime_config().clone(),
            }),
        })
    }

    fn gas_price(&self, params: Value) -> Answer {
        let block_id: MaybeBlockId = match params {
            Value::Array(mut items) if items.len() == 1 => parse(items.remove(0))?,
            Value::Array(items) if items.is_empty() => None,
            Value::Null => None,
            params => {
                parse::<near_jsonrpc_primitives::types::gas_price::RpcGasPriceRequest>(params)?
                    .block_id
            }
        };
        let chain = self.chain();
        if let Some(block_id) = block_id {
            let reference = BlockReference::BlockId(block_id);
            if find_block(&chain, &reference).is_none() {
                return Err(RpcGasPriceError::UnknownBlock {
                    error_message: format!("{reference:?}"),
                }
                .into());
            }
        }
        to_value(GasPriceView {
            gas_price: near_primitives::types::Balance::from_yoctonear(chain.gas_price()),
        })
    }

    fn query(&self, params: Value) -> Answer {
        let request: RpcQueryRequest = parse(params)?;
        let chain = self.chain();
        let head = chain.head().clone();
        // State is kept for the head only.
        match find_block(&chain, &request.block_reference) {
            Some(block) if block.hash == head.hash => {}
            Some(block) => {
                return Err(RpcQueryError::GarbageCollectedBlock {
                    block_height: block.height,
                    block_hash: block.hash,
                }
                .into());
            }
            None => {
                return Err(RpcQueryError::UnknownBlock {
                    block_reference: request.block_reference,
                }
                .into());
            }
        }
        let unknown_account = |account_id: &AccountId| RpcQueryError::UnknownAccount {
            requested_account_id: account_id.clone(),
            block_height: head.height,
            block_hash: head.hash,
        };
        let no_code = |account_id: &AccountId| RpcQueryError::NoContractCode {
            contract_account_id: account_id.clone(),
            block_height: head.height,
            block_hash: head.hash,
        };
        let kind = match &request.request {
            QueryRequest::ViewAccount { account_id } => {
                let account = chain
                    .account(account_id)
                    .ok_or_else(|| unknown_account(account_id))?;
                let state = account.state();
                QueryResponseKind::ViewAccount(AccountView {
                    amount: state.balance,
                    locked: state.locked,
                    code_hash: account
                        .contract
                        .as_ref()
                        .map(|vm| vm.code_hash())
                        .unwrap_or_default(),
                    storage_usage: state.storage_usage,
                    storage_paid_at: 0,
                    global_contract_hash: None,
                    global_contract_account_id: None,
                    state: Default::default(),
                    bootstrap_nonce: None,
                })
            }
            QueryRequest::ViewAccessKey {
                account_id,
                public_key,
            } => {
                let access_key = chain
                    .account(account_id)
                    .and_then(|account| account.access_keys.get(public_key))
                    .ok_or_else(|| RpcQueryError::UnknownAccessKey {
                        public_key: public_key.clone(),
                        block_height: head.height,
                        block_hash: head.hash,
                    })?;
                QueryResponseKind::AccessKey(AccessKeyView::from(access_key.clone()))
            }
            QueryRequest::ViewAccessKeyList {
                account_id,
                after_key,
                limit,
            } => {
                let account = chain
                    .account(account_id)
                    .ok_or_else(|| unknown_account(account_id))?;
                let mut keys: Vec<(PublicKeyHandle, AccessKeyView)> = account
                    .access_keys
                    .iter()
                    .map(|(key, access_key)| (key.clone().into(), access_key.clone().into()))
                    .filter(|(handle, _)| after_key.as_ref().is_none_or(|after| handle > after))
                    .collect();
                keys.sort_by(|a, b| a.0.cmp(&b.0));
                let page = limit.map_or(keys.len(), |limit| limit.get() as usize);
                let last_key = (keys.len() > page)
                    .then(|| {
                        keys.get(page.saturating_sub(1))
                            .map(|(handle, _)| handle.clone())
                    })
                    .flatten();
                keys.truncate(page);
                QueryResponseKind::AccessKeyList(AccessKeyList {
                    keys: keys
                        .into_iter()
                        .map(|(handle, view)| AccessKeyInfoView::new(handle, view))
                        .collect(),
                    last_key,
                })
            }
            QueryRequest::ViewState {
                account_id,
                prefix,
                after_key,
                limit,
                include_proof: _,
            } => {
                let account = chain
                    .account(account_id)
                    .ok_or_else(|| unknown_account(account_id))?;
                let empty = std::collections::BTreeMap::new();
                let storage = account.contract.as_ref().map_or(&empty, |vm| vm.storage());
                let prefix: &[u8] = prefix.as_ref();
                let after: Option<&[u8]> = after_key.as_ref().map(|key| key.as_ref());
                let mut matching = storage
                    .range(prefix.to_vec()..)
                    .take_while(|(key, _)| key.starts_with(prefix))
                    .filter(|(key, _)| after.is_none_or(|after| key.as_slice() > after));
                // nearcore's default `trie_viewer_state_size_limit` (50 kB of keys and values).
                let view_state_size_limit =
                    near_chain_configs::default_trie_viewer_state_size_limit().unwrap_or(u64::MAX);
                let mut values = Vec::new();
                let mut size = 0usize;
                let mut last_key = None;
                for (key, value) in matching.by_ref() {
                    if limit.is_some_and(|limit| values.len() >= limit.get() as usize) {
                        last_key = values.last().map(|item: &StateItem| item.key.clone());
                        break;
                    }
                    size = size.saturating_add(key.len()).saturating_add(value.len());
                    // The size limit bounds a whole listing; a paged one (`limit`) is bounded by
                    // its page instead.
                    if limit.is_none() && size as u64 > view_state_size_limit {
                        return Err(RpcQueryError::TooLargeContractState {
                            contract_account_id: account_id.clone(),
                            block_height: head.height,
                            block_hash: head.hash,
                        }
                        .into());
                    }
                    values.push(StateItem {
                        key: StoreKey::from(key.clone()),
                        value: StoreValue::from(value.clone()),
                    });
                }
                // No proofs: the localnet keeps no trie (an empty proof, as for `include_proof: false`).
                QueryResponseKind::ViewState(ViewStateResult {
                    values,
                    proof: Vec::new(),
                    last_key,
                })
            }
            QueryRequest::ViewCode { account_id } => {
                let account = chain
                    .account(account_id)
                    .ok_or_else(|| unknown_account(account_id))?;
                let vm = account
                    .contract
                    .as_ref()
                    .ok_or_else(|| no_code(account_id))?;
                QueryResponseKind::ViewCode(ContractCodeView {
                    code: vm.code().to_vec(),
                    hash: vm.code_hash(),
                })
            }
            QueryRequest::CallFunction {
                account_id,
                method_name,
                args,
            } => {
                if chain.account(account_id).is_none() {
                    return Err(unknown_account(account_id).into());
                }
                let outcome = chain
                    .view_call(account_id, method_name, args.as_ref())
                    .ok_or_else(|| no_code(account_id))?
                    .map_err(|e| RpcQueryError::InternalError {
                        error_message: format!("nearcore's VM failed running {method_name}: {e}"),
                    })?;
                match &outcome.error {
                    None => QueryResponseKind::CallResult(CallResult {
                        result: outcome.value().map(<[u8]>::to_vec).unwrap_or_default(),
                        logs: outcome.logs.clone(),
                    }),
                    Some(error) => {
                        let primitive = crate::chain::view_error(error);
                        return Err(RpcQueryError::ContractExecutionError {
                            vm_error: format!("wasm execution failed with error: {primitive:?}"),
                            error: primitive,
                            block_height: head.height,
                            block_hash: head.hash,
                        }
                        .into());
                    }
                }
            }
            other => {
                return Err(not_modelled(format!(
                    "the test localnet does not answer this query: {other:?}"
                )));
            }
        };
        to_value(RpcQueryResponse {
            kind,
            block_height: head.height,
            block_hash: head.hash,
        })
    }
}

/// A request the localnet refuses because it does not model it: an internal error whose message
/// near-jsonrpc-client surfaces (`JsonRpcServerError::InternalError { info }`), answered with
/// HTTP 200 so clients do not retry it as a node fault.
fn not_modelled(message: String) -> Failure {
    Failure {
        error: RpcError::new_internal_error(Some(Value::String(message.clone())), message),
        force_ok: true,
    }
}

fn response(status: TxStatusView) -> RpcTransactionResponse {
    RpcTransactionResponse {
        final_execution_outcome: status.outcome,
        final_execution_status: status.progress.execution_status(),
    }
}

fn find_block<'a>(chain: &'a Chain, reference: &BlockReference) -> Option<&'a BlockRecord> {
    match reference {
        BlockReference::Finality(_) | BlockReference::SyncCheckpoint(_) => Some(chain.head()),
        BlockReference::BlockId(BlockId::Height(height)) => chain.block_at(*height),
        BlockReference::BlockId(BlockId::Hash(hash)) => chain.block_by_hash(hash),
    }
}

fn block_view(chain: &Chain, block: &BlockRecord) -> BlockView {
    let prev_height = (block.height > crate::chain::GENESIS_HEIGHT).then(|| block.height - 1);
    BlockView {
        author: "localnet"
            .parse()
            .expect("\"localnet\" is a valid account id"),
        header: BlockHeaderView {
            height: block.height,
            prev_height,
            hash: block.hash,
            prev_hash: block.prev_hash,
            timestamp: block.timestamp_ns,
            timestamp_nanosec: block.timestamp_ns,
            gas_price: near_primitives::types::Balance::from_yoctonear(chain.gas_price()),
            // One node: every block is final as soon as it exists.
            last_final_block: block.hash,
            last_ds_final_block: block.hash,
            latest_protocol_version: chain.protocol_version(),
            block_ordinal: Some(block.height),
            ..BlockHeaderView::default()
        },
        chunks: Vec::new(),
    }
}

fn utc(timestamp_ns: u64) -> near_time::Utc {
    near_time::Utc::from_unix_timestamp_nanos(i128::from(timestamp_ns))
        .unwrap_or(near_time::Utc::UNIX_EPOCH)
}

fn parse<T: DeserializeOwned>(params: Value) -> Result<T, RpcError> {
    serde_json::from_value(params)
        .map_err(|e| RpcError::parse_error(format!("Failed parsing args: {e}")))
}

/// `tx` params: `{tx_hash, sender_account_id, wait_until}`, `{signed_tx_base64, wait_until}`,
/// or the legacy `[tx_hash, sender_account_id]`.
fn parse_tx_status(params: Value) -> Result<(CryptoHash, AccountId, TxExecutionStatus), RpcError> {
    if let Value::Array(_) = params {
        let (tx_hash, sender): (CryptoHash, AccountId) = parse(params)?;
        return Ok((tx_hash, sender, TxExecutionStatus::default()));
    }
    let request: RpcTransactionStatusRequest = parse(params)?;
    let (tx_hash, sender) = request.transaction_info.to_tx_hash_and_account();
    Ok((tx_hash, sender.clone(), request.wait_until))
}

fn to_value<T: serde::Serialize>(value: T) -> Answer {
    serde_json::to_value(value)
        .map_err(|e| Failure::from(RpcError::serialization_error(e.to_string())))
}
