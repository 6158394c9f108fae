//! `ChainClient`: views, the block height, and signed function-call transactions with nonce and
//! block-hash management, over an `RpcPool` (failover, timeouts, retries).

use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use near_jsonrpc_client::methods;
use near_jsonrpc_primitives::types::query::{QueryResponseKind, RpcQueryError};
use near_jsonrpc_primitives::types::transactions::{
    RpcTransactionError, RpcTransactionResponse, TransactionInfo,
};
use near_primitives::action::{Action, FunctionCallAction};
use near_primitives::errors::{
    ActionErrorKind, FunctionCallError, InvalidTxError, TxExecutionError,
};
use near_primitives::hash::CryptoHash;
use near_primitives::transaction::SignedTransaction;
use near_primitives::types::{AccountId, Balance, BlockReference, Finality, FunctionArgs, Gas};
use near_primitives::views::{
    AccessKeyView, AccountView, FinalExecutionOutcomeView, FinalExecutionStatus, QueryRequest,
    TxExecutionStatus,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::errors::ChainError;
use super::rpc::{AttemptError, CallError, RetryPolicy, RpcPool};
use super::signer::{NonceTracker, OperatorSigner};

/// Where and how the client talks to the chain.
#[derive(Clone)]
pub struct ChainConfig {
    /// Tried in order, failing over to the next on transient errors. May embed API keys; never logged.
    pub rpc_urls: Vec<String>,
    /// The OutLayer contract.
    pub contract_id: AccountId,
    /// Bound on one view / block / access-key request.
    pub view_timeout: Duration,
    /// Bound on one transaction request: above the node's own wait (nearcore answers
    /// `TIMEOUT_ERROR` after ~10 s), so the node's answer, not ours, normally ends a wait.
    pub tx_timeout: Duration,
    pub connect_timeout: Duration,
    pub retry: RetryPolicy,
    /// How final a transaction must be before its outcome is returned. `Executed`: every receipt ran
    /// in a final block, so the outcome can no longer change.
    pub wait_until: TxExecutionStatus,
    /// Finality of views (pending requests, pricing, nonces).
    pub view_finality: Finality,
    /// A transaction references a recent block; NEAR accepts it for ~a day (86,400 blocks), so a hash
    /// reused for this long is always valid and saves one request per transaction.
    pub block_hash_max_age: Duration,
    /// How many times one call is re-signed after `InvalidNonce` / `Expired` before giving up.
    pub max_resigns: u32,
    pub resolve_gas: Gas,
    pub submit_output_gas: Gas,
    pub set_pricing_gas: Gas,
}

impl fmt::Debug for ChainConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainConfig")
            .field(
                "rpc_urls",
                &format_args!("<{} redacted>", self.rpc_urls.len()),
            )
            .field("contract_id", &self.contract_id)
            .field("view_timeout", &self.view_timeout)
            .field("tx_timeout", &self.tx_timeout)
            .field("retry", &self.retry)
            .field("wait_until", &self.wait_until)
            .finish_non_exhaustive()
    }
}

impl ChainConfig {
    pub fn new(rpc_urls: Vec<String>, contract_id: AccountId) -> Self {
        Self {
            rpc_urls,
            contract_id,
            view_timeout: Duration::from_secs(10),
            tx_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            retry: RetryPolicy::default(),
            wait_until: TxExecutionStatus::Executed,
            view_finality: Finality::Final,
            block_hash_max_age: Duration::from_secs(60),
            max_resigns: 5,
            // resolve_execution resumes a yield and emits an event (≈ 3 Tgas measured on localnet);
            // unused gas is refunded, so the margins cost nothing.
            resolve_gas: Gas::from_teragas(50),
            // Stores up to 64 KiB of output.
            submit_output_gas: Gas::from_teragas(100),
            set_pricing_gas: Gas::from_teragas(30),
        }
    }
}

/// A transaction that ran: its hash, how it ended, and nearcore's full outcome (logs, receipts, gas).
#[derive(Clone, Debug)]
pub struct TxOutcome {
    pub tx_hash: CryptoHash,
    pub status: CallStatus,
    pub outcome: FinalExecutionOutcomeView,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CallStatus {
    /// The value the called method returned (JSON bytes for near-sdk methods; empty for none).
    Success(Vec<u8>),
    /// The contract's panic message, or the action error's description.
    Failure(String),
}

impl TxOutcome {
    /// NEP-297 events (`EVENT_JSON:` log lines) of every receipt, in order.
    pub fn events(&self) -> Vec<serde_json::Value> {
        self.outcome
            .receipts_outcome
            .iter()
            .flat_map(|receipt| &receipt.outcome.logs)
            .filter_map(|line| line.strip_prefix("EVENT_JSON:"))
            .filter_map(|json| serde_json::from_str(json).ok())
            .collect()
    }
}

/// The head as the view finality sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockRef {
    pub height: u64,
    pub hash: CryptoHash,
}

/// A cheap-to-clone handle; clones share endpoints, nonce and block-hash cache.
#[derive(Clone)]
pub struct ChainClient {
    inner: Arc<Inner>,
}

struct Inner {
    pool: RpcPool,
    config: ChainConfig,
    /// The operator account's keys: the first (the primary) signs every call; all of them sign
    /// `resolve_execution` and `submit_execution_output` (see [`KeyUse`]). Empty: views only.
    keys: Vec<KeySlot>,
    /// Where the next tie between equally busy keys starts, so the pool is used round-robin.
    next_key: AtomicUsize,
    /// Transactions re-signed after `InvalidNonce` / `NonceTooLarge` / `Expired`, since start.
    resigns: AtomicU64,
    block_hash: Mutex<Option<(CryptoHash, Instant)>>,
}

/// One access key with its own nonce sequence.
struct KeySlot {
    signer: OperatorSigner,
    /// Async mutex: the first transaction fetches the nonce while holding it, so concurrent senders
    /// never fetch twice or hand out the same nonce.
    nonce: tokio::sync::Mutex<NonceTracker>,
    /// Transactions of this key between signing and their outcome.
    in_flight: AtomicUsize,
    /// Nonces signed but not yet handed to the node, which hands them over in order.
    order: HandOver,
}

/// The nonces of one key signed but not yet handed to a node: a transaction waits for its turn
/// (no lower nonce outstanding) before it is sent.
#[derive(Default)]
struct HandOver {
    outstanding: Mutex<std::collections::BTreeSet<u64>>,
    changed: tokio::sync::Notify,
}

impl HandOver {
    /// Registers `nonce` (call while the key's nonce lock is held, so registration follows nonce
    /// order); the returned turn gives it up when dropped.
    fn enter(&self, nonce: u64) -> Turn<'_> {
        lock(&self.outstanding).insert(nonce);
        Turn { order: self, nonce }
    }
}

struct Turn<'a> {
    order: &'a HandOver,
    nonce: u64,
}

impl Turn<'_> {
    /// Resolves once no lower nonce of the key is outstanding.
    async fn wait(&self) {
        loop {
            let changed = self.order.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let first = lock(&self.order.outstanding).first().copied();
            if first.is_none_or(|first| first >= self.nonce) {
                return;
            }
            changed.await;
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        lock(&self.order.outstanding).remove(&self.nonce);
        self.order.changed.notify_waiters();
    }
}

/// Which of the operator's keys may sign a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum KeyUse {
    /// The first key only (admin calls: pricing, the sealing key; it may be the only full-access one).
    Primary,
    /// Any key of the pool: the calls the pool's function-call keys are made for.
    Pool,
}

/// The methods [`KeyUse::Pool`] keys sign, and which `outlayer-operator add-keys` restricts the keys it
/// adds to.
pub const POOL_METHODS: [&str; 2] = ["resolve_execution", "submit_execution_output"];

/// The key a new transaction takes: the least busy (fewest transactions in flight), ties going to
/// the first at or after `start` (round-robin). `None` for an empty pool.
fn pick_key(in_flight: &[usize], start: usize) -> Option<usize> {
    let len = in_flight.len();
    (0..len)
        .map(|offset| (start + offset) % len)
        .min_by_key(|&index| in_flight[index])
}

/// Counts a transaction in flight on its key for as long as it lives.
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    fn enter(counter: &'a AtomicUsize) -> Self {
        counter.fetch_add(1, Ordering::SeqCst);
        Self(counter)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl fmt::Debug for ChainClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainClient")
            .field("config", &self.inner.config)
            .field("signer", &self.signer())
            .field("keys", &self.inner.keys.len())
            .finish_non_exhaustive()
    }
}

impl ChainClient {
    /// A client for views only (`signer: None`) or also for transactions.
    pub fn new(config: ChainConfig, signer: Option<OperatorSigner>) -> Result<Self, ChainError> {
        Self::with_keys(config, signer.into_iter().collect())
    }

    /// A client signing with a pool of the operator account's keys, each with its own nonce
    /// sequence: the first (the primary) signs every call, and all of them sign resolves
    /// ([`POOL_METHODS`]), so resolves of different requests go out in parallel without sharing a
    /// nonce sequence. The keys must belong to one account and differ; empty: views only.
    pub fn with_keys(config: ChainConfig, keys: Vec<OperatorSigner>) -> Result<Self, ChainError> {
        if let Some(first) = keys.first() {
            for (index, key) in keys.iter().enumerate() {
                if key.account_id() != first.account_id() {
                    return Err(ChainError::InvalidSecretKey {
                        account_id: key.account_id().to_string(),
                        reason: format!(
                            "key {} belongs to another account than the first key ({})",
                            index + 1,
                            first.account_id()
                        ),
                    });
                }
                if keys[..index]
                    .iter()
                    .any(|earlier| earlier.public_key() == key.public_key())
                {
                    return Err(ChainError::InvalidSecretKey {
                        account_id: key.account_id().to_string(),
                        reason: format!(
                            "key {} ({}) is given twice: each key needs its own nonce sequence",
                            index + 1,
                            key.public_key()
                        ),
                    });
                }
            }
        }
        let pool = RpcPool::new(
            &config.rpc_urls,
            config.connect_timeout,
            config.retry.clone(),
        )?;
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                config,
                keys: keys
                    .into_iter()
                    .map(|signer| KeySlot {
                        signer,
                        nonce: tokio::sync::Mutex::new(NonceTracker::default()),
                        in_flight: AtomicUsize::new(0),
                        order: HandOver::default(),
                    })
                    .collect(),
                next_key: AtomicUsize::new(0),
                resigns: AtomicU64::new(0),
                block_hash: Mutex::new(None),
            }),
        })
    }

    pub fn config(&self) -> &ChainConfig {
        &self.inner.config
    }

    pub fn contract_id(&self) -> &AccountId {
        &self.inner.config.contract_id
    }

    /// The primary key (the first): it signs every call that is not a resolve.
    pub fn signer(&self) -> Option<&OperatorSigner> {
        self.inner.keys.first().map(|slot| &slot.signer)
    }

    /// How many keys sign resolves in parallel (0 without a signer).
    pub fn key_count(&self) -> usize {
        self.inner.keys.len()
    }

    /// Transactions re-signed since the client was made (a stale or too-large nonce, an expired
    /// block hash): 0 while nothing else uses the keys and no fault intervenes.
    pub fn resigns(&self) -> u64 {
        self.inner.resigns.load(Ordering::Relaxed)
    }

    // ---------------------------------------------------------------- views

    /// The newest block at the view finality.
    pub async fn latest_block(&self) -> Result<BlockRef, ChainError> {
        let finality = self.inner.config.view_finality.clone();
        let block = self
            .inner
            .pool
            .call("block", "latest", self.inner.config.view_timeout, || {
                methods::block::RpcBlockRequest {
                    block_reference: BlockReference::Finality(finality.clone()),
                }
            })
            .await
            .map_err(|e| handler_to_chain("block", "latest", e))?;
        Ok(BlockRef {
            height: block.header.height,
            hash: block.header.hash,
        })
    }

    pub async fn block_height(&self) -> Result<u64, ChainError> {
        Ok(self.latest_block().await?.height)
    }

    async fn query(
        &self,
        method: &'static str,
        input: &str,
        request: QueryRequest,
    ) -> Result<QueryResponseKind, CallError<RpcQueryError>> {
        let finality = self.inner.config.view_finality.clone();
        let response = self
            .inner
            .pool
            .call(method, input, self.inner.config.view_timeout, || {
                methods::query::RpcQueryRequest {
                    block_reference: BlockReference::Finality(finality.clone()),
                    request: request.clone(),
                }
            })
            .await?;
        Ok(response.kind)
    }

    pub async fn view_account(&self, account_id: &AccountId) -> Result<AccountView, ChainError> {
        let input = account_id.to_string();
        let kind = self
            .query(
                "view_account",
                &input,
                QueryRequest::ViewAccount {
                    account_id: account_id.clone(),
                },
            )
            .await
            .map_err(|e| handler_to_chain("view_account", &input, e))?;
        match kind {
            QueryResponseKind::ViewAccount(account) => Ok(account),
            other => Err(unexpected_kind("view_account", &input, &other)),
        }
    }

    pub async fn view_access_key(
        &self,
        signer: &OperatorSigner,
    ) -> Result<AccessKeyView, ChainError> {
        let input = format!("{} {}", signer.account_id(), signer.public_key());
        let kind = self
            .query(
                "view_access_key",
                &input,
                QueryRequest::ViewAccessKey {
                    account_id: signer.account_id().clone(),
                    public_key: signer.public_key().clone(),
                },
            )
            .await
            .map_err(|e| match e {
                CallError::Handler {
                    error: RpcQueryError::UnknownAccessKey { .. },
                    ..
                } => ChainError::UnknownAccessKey {
                    account_id: signer.account_id().clone(),
                    public_key: signer.public_key().to_string(),
                },
                other => handler_to_chain("view_access_key", &input, other),
            })?;
        match kind {
            QueryResponseKind::AccessKey(key) => Ok(key),
            other => Err(unexpected_kind("view_access_key", &input, &other)),
        }
    }

    /// Calls a view method with JSON `args` and decodes its JSON result.
    pub async fn view_call<T: DeserializeOwned>(
        &self,
        contract: &AccountId,
        method: &str,
        args: &impl Serialize,
    ) -> Result<T, ChainError> {
        let bytes = self.view_call_raw(contract, method, args).await?;
        serde_json::from_slice(&bytes).map_err(|e| ChainError::Decode {
            contract: contract.clone(),
            method: method.to_string(),
            reason: e.to_string(),
        })
    }

    /// Like `view_call`, returning the raw result bytes.
    pub async fn view_call_raw(
        &self,
        contract: &AccountId,
        method: &str,
        args: &impl Serialize,
    ) -> Result<Vec<u8>, ChainError> {
        let args = serde_json::to_vec(args).map_err(|e| ChainError::EncodeArgs {
            method: method.to_string(),
            reason: e.to_string(),
        })?;
        let input = format!("{contract}.{method}");
        let kind = self
            .query(
                "call_function",
                &input,
                QueryRequest::CallFunction {
                    account_id: contract.clone(),
                    method_name: method.to_string(),
                    args: FunctionArgs::from(args),
                },
            )
            .await
            .map_err(|e| match e {
                CallError::Handler {
                    error: RpcQueryError::ContractExecutionError { vm_error, .. },
                    ..
                } => ChainError::ViewFailed {
                    contract: contract.clone(),
                    method: method.to_string(),
                    message: vm_error,
                },
                other => handler_to_chain("call_function", &input, other),
            })?;
        match kind {
            QueryResponseKind::CallResult(result) => Ok(result.result),
            other => Err(unexpected_kind("call_function", &input, &other)),
        }
    }

    /// The status of a transaction by hash: `None` if no endpoint knows it (never sent, dropped, or
    /// too old for a non-archival node), else its outcome once it reached `wait_until`.
    pub async fn transaction_status(
        &self,
        tx_hash: CryptoHash,
        sender_id: &AccountId,
    ) -> Result<Option<TxOutcome>, ChainError> {
        let wait_until = self.inner.config.wait_until.clone();
        let input = tx_hash.to_string();
        let result = self
            .inner
            .pool
            .call("tx", &input, self.inner.config.tx_timeout, || {
                methods::tx::RpcTransactionStatusRequest {
                    transaction_info: TransactionInfo::TransactionId {
                        tx_hash,
                        sender_account_id: sender_id.clone(),
                    },
                    wait_until: wait_until.clone(),
                }
            })
            .await;
        match result {
            Ok(response) => match finished(tx_hash, response) {
                Some(outcome) => Ok(Some(outcome)),
                None => Err(ChainError::Unconfirmed {
                    method: "tx".to_string(),
                    receiver: sender_id.clone(),
                    tx_hash,
                    last: Box::new(ChainError::NodeBusy {
                        method: "tx",
                        endpoint: String::from("any"),
                        message: "the transaction has not finished yet".to_string(),
                    }),
                }),
            },
            Err(CallError::Handler {
                error: RpcTransactionError::UnknownTransaction { .. },
                ..
            }) => Ok(None),
            Err(other) => Err(handler_to_chain("tx", &input, other)),
        }
    }

    // ---------------------------------------------------------------- transactions

    /// Signs and sends one `FunctionCall` with JSON `args`, waiting for `wait_until`. Returns the
    /// outcome whether the call succeeded or the contract panicked (see `CallStatus`); errors are for
    /// what kept the transaction from running or from being confirmed.
    pub async fn call_function(
        &self,
        receiver_id: &AccountId,
        method: &str,
        args: &impl Serialize,
        gas: Gas,
        deposit: Balance,
    ) -> Result<TxOutcome, ChainError> {
        self.call_function_recorded(receiver_id, method, args, gas, deposit, |_| {
            std::future::ready(Ok(()))
        })
        .await
    }

    /// [`Self::call_function`] for the methods of [`POOL_METHODS`]: signed by the least busy key of the
    /// pool instead of the primary.
    pub(crate) async fn call_pooled<F, Fut>(
        &self,
        method: &'static str,
        args: &impl Serialize,
        gas: Gas,
        on_signed: F,
    ) -> Result<TxOutcome, ChainError>
    where
        F: Fn(CryptoHash) -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        debug_assert!(
            POOL_METHODS.contains(&method),
            "{method} is not a pool method"
        );
        let action = function_call(method, args, gas, Balance::from_yoctonear(0))?;
        let contract = self.contract_id().clone();
        self.send_actions(&contract, method, vec![action], KeyUse::Pool, on_signed)
            .await
    }

    /// Adds function-call access keys to the operator's account (signed by the primary key, which
    /// must have full access), each restricted to the contract and its [`POOL_METHODS`], no deposit,
    /// no allowance limit: keys for the resolve pool.
    pub async fn add_pool_keys(
        &self,
        public_keys: &[near_crypto::PublicKey],
    ) -> Result<TxOutcome, ChainError> {
        let actions = public_keys
            .iter()
            .map(|public_key| {
                Action::AddKey(Box::new(near_primitives::action::AddKeyAction {
                    public_key: public_key.clone(),
                    access_key: near_primitives::account::AccessKey {
                        nonce: 0,
                        permission: near_primitives::account::AccessKeyPermission::FunctionCall(
                            near_primitives::account::FunctionCallPermission {
                                allowance: None,
                                receiver_id: self.contract_id().to_string(),
                                method_names: POOL_METHODS.iter().map(|m| m.to_string()).collect(),
                            },
                        ),
                    },
                }))
            })
            .collect();
        let account = self
            .signer()
            .ok_or_else(|| ChainError::NoSigner {
                method: "AddKey".to_string(),
            })?
            .account_id()
            .clone();
        self.send_actions(&account, "AddKey", actions, KeyUse::Primary, |_| {
            std::future::ready(Ok(()))
        })
        .await
    }

    /// [`Self::call_function`], calling `on_signed` with each signed transaction's hash before it is
    /// sent (a re-sign after a stale nonce makes a new one): whoever must find the transaction after
    /// a crash has its hash before it can land. An `Err` from `on_signed` stops before sending.
    pub async fn call_function_recorded<F, Fut>(
        &self,
        receiver_id: &AccountId,
        method: &str,
        args: &impl Serialize,
        gas: Gas,
        deposit: Balance,
        on_signed: F,
    ) -> Result<TxOutcome, ChainError>
    where
        F: Fn(CryptoHash) -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let action = function_call(method, args, gas, deposit)?;
        self.send_actions(
            receiver_id,
            method,
            vec![action],
            KeyUse::Primary,
            on_signed,
        )
        .await
    }

    /// The key slot a transaction signs with, counted in flight until the guard drops.
    fn take_key(&self, key_use: KeyUse) -> Option<(&KeySlot, InFlight<'_>)> {
        let keys = &self.inner.keys;
        let index = match key_use {
            KeyUse::Primary => 0,
            KeyUse::Pool => {
                let in_flight: Vec<usize> = keys
                    .iter()
                    .map(|slot| slot.in_flight.load(Ordering::SeqCst))
                    .collect();
                let start = self.inner.next_key.fetch_add(1, Ordering::Relaxed);
                pick_key(&in_flight, start % keys.len().max(1))?
            }
        };
        let slot = keys.get(index)?;
        Some((slot, InFlight::enter(&slot.in_flight)))
    }

    async fn send_actions<F, Fut>(
        &self,
        receiver_id: &AccountId,
        method: &str,
        actions: Vec<Action>,
        key_use: KeyUse,
        on_signed: F,
    ) -> Result<TxOutcome, ChainError>
    where
        F: Fn(CryptoHash) -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let (slot, _in_flight) = self.take_key(key_use).ok_or_else(|| ChainError::NoSigner {
            method: method.to_string(),
        })?;
        let signer = &slot.signer;
        let mut resigns = 0u32;
        loop {
            // One key's transactions reach the node in nonce order: a transaction is handed over
            // only once every lower nonce of its key was handed over (or given up), so a lower nonce
            // never arrives after a higher one was included (nearcore then refuses it). Recording
            // (`on_signed`) runs concurrently; only the hand-over is ordered.
            let block_hash = self.recent_block_hash().await?;
            let (nonce, turn) = {
                let mut nonces = slot.nonce.lock().await;
                let nonce = self.next_nonce(&mut nonces, signer).await?;
                (nonce, slot.order.enter(nonce))
            };
            let tx = signer.sign(nonce, block_hash, receiver_id.clone(), actions.clone());
            let tx_hash = tx.get_hash();
            on_signed(tx_hash)
                .await
                .map_err(|reason| ChainError::NotRecorded {
                    method: method.to_string(),
                    tx_hash,
                    reason,
                })?;
            turn.wait().await;
            tracing::debug!(%tx_hash, method, receiver = %receiver_id, key = %signer.public_key(), nonce, "sending transaction");
            let admitted = self.admit(&tx).await;
            drop(turn);
            if let Admission::Refused(invalid) = &admitted {
                self.before_resign(&mut *slot.nonce.lock().await, invalid, method, signer);
            }
            let invalid = match admitted {
                Admission::Refused(invalid) => invalid,
                Admission::Admitted | Admission::Unsure => {
                    match self.submit(tx, method, receiver_id).await? {
                        Submitted::Finished(outcome) => return Ok(*outcome),
                        Submitted::Invalid(invalid) => {
                            self.before_resign(
                                &mut *slot.nonce.lock().await,
                                &invalid,
                                method,
                                signer,
                            );
                            invalid
                        }
                    }
                }
            };
            if resigns >= self.inner.config.max_resigns || !resignable(&invalid) {
                let reason = if resignable(&invalid) {
                    format!("{invalid} (still after {resigns} re-signs)")
                } else {
                    invalid.to_string()
                };
                return Err(ChainError::InvalidTransaction {
                    method: method.to_string(),
                    receiver: receiver_id.clone(),
                    reason,
                });
            }
            resigns += 1;
            self.inner.resigns.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Hands `tx` to the node without waiting for it to run (`wait_until: NONE`): the node checks it
    /// against the head (nonce, key, balance) and pools it.
    async fn admit(&self, tx: &SignedTransaction) -> Admission {
        let request = methods::send_tx::RpcSendTransactionRequest {
            signed_transaction: tx.clone(),
            wait_until: TxExecutionStatus::None,
        };
        match self
            .inner
            .pool
            .attempt("send_tx", request, self.inner.config.view_timeout)
            .await
        {
            Ok(_) => Admission::Admitted,
            Err(AttemptError::Handler {
                error: RpcTransactionError::InvalidTransaction { context },
                ..
            }) => Admission::Refused(context),
            Err(error) => {
                tracing::debug!(tx_hash = %tx.get_hash(), error = %attempt_error_kind(&error), "admission unsure; waiting by hash");
                Admission::Unsure
            }
        }
    }

    /// What a refused transaction's re-sign needs: the chain's nonce, a fresh fetch of it, or a newer
    /// block hash. Other refusals are final (see [`resignable`]).
    fn before_resign(
        &self,
        nonces: &mut NonceTracker,
        invalid: &InvalidTxError,
        method: &str,
        signer: &OperatorSigner,
    ) {
        match invalid {
            InvalidTxError::InvalidNonce { tx_nonce, ak_nonce } => {
                // Someone else used the key.
                tracing::info!(method, key = %signer.public_key(), tx_nonce, ak_nonce, "stale nonce; re-signing");
                nonces.observe_chain(*ak_nonce);
            }
            InvalidTxError::NonceTooLarge { .. } => {
                tracing::info!(method, key = %signer.public_key(), "nonce too large; fetching it again");
                nonces.forget();
            }
            InvalidTxError::Expired => {
                tracing::info!(method, "block hash expired; fetching a newer one");
                self.forget_block_hash();
            }
            _ => {}
        }
    }

    /// Waits for one signed transaction, already handed to a node (or maybe), until its outcome is
    /// known: every attempt asks for it by hash and re-sends the very same bytes only if no node knows
    /// it (dropped, or never admitted): a re-send can never execute twice (same nonce).
    async fn submit(
        &self,
        tx: SignedTransaction,
        method: &str,
        receiver_id: &AccountId,
    ) -> Result<Submitted, ChainError> {
        let pool = &self.inner.pool;
        let timeout = self.inner.config.tx_timeout;
        let wait_until = self.inner.config.wait_until.clone();
        let tx_hash = tx.get_hash();
        let sender_id = tx.transaction.signer_id().clone();
        let send = || methods::send_tx::RpcSendTransactionRequest {
            signed_transaction: tx.clone(),
            wait_until: wait_until.clone(),
        };
        let max_attempts = pool.retry_policy().max_attempts.max(1);
        let mut backoff = pool.retry_policy().backoff();
        let mut failures = 0u32;
        // Handed to a node already (or maybe): ask for it by hash, re-sending only if no node knows it.
        let mut ask_first = true;
        loop {
            let result = if ask_first {
                let status = methods::tx::RpcTransactionStatusRequest {
                    transaction_info: TransactionInfo::TransactionId {
                        tx_hash,
                        sender_account_id: sender_id.clone(),
                    },
                    wait_until: wait_until.clone(),
                };
                match pool.attempt("tx", status, timeout).await {
                    Err(AttemptError::Handler {
                        error: RpcTransactionError::UnknownTransaction { .. },
                        ..
                    }) => {
                        tracing::info!(%tx_hash, method, "transaction unknown to the node; sending it again");
                        pool.attempt("send_tx", send(), timeout).await
                    }
                    other => other,
                }
            } else {
                pool.attempt("send_tx", send(), timeout).await
            };
            let error = match result {
                Ok(response) => match finished(tx_hash, response) {
                    Some(outcome) => return Ok(Submitted::Finished(Box::new(outcome))),
                    None => ChainError::NodeBusy {
                        method: "send_tx",
                        endpoint: "any".to_string(),
                        message: format!("transaction {tx_hash} has not reached {wait_until:?}"),
                    },
                },
                Err(AttemptError::Handler {
                    error: RpcTransactionError::InvalidTransaction { context },
                    ..
                }) => return Ok(Submitted::Invalid(context)),
                Err(AttemptError::Handler { error, endpoint }) => {
                    return Err(ChainError::Rpc {
                        method: "send_tx",
                        input: format!("{tx_hash} ({method} on {receiver_id})"),
                        endpoint,
                        message: error.to_string(),
                    });
                }
                Err(AttemptError::Permanent(error)) => {
                    if failures == 0 {
                        return Err(error);
                    }
                    return Err(ChainError::Unconfirmed {
                        method: method.to_string(),
                        receiver: receiver_id.clone(),
                        tx_hash,
                        last: Box::new(error),
                    });
                }
                Err(AttemptError::Transient(error)) => error,
            };
            failures += 1;
            tracing::warn!(%tx_hash, method, attempt = failures, %error, "transaction not confirmed yet");
            if failures >= max_attempts {
                return Err(ChainError::Unconfirmed {
                    method: method.to_string(),
                    receiver: receiver_id.clone(),
                    tx_hash,
                    last: Box::new(error),
                });
            }
            ask_first = true;
            pool.pause_before(failures, &mut backoff).await;
        }
    }

    async fn next_nonce(
        &self,
        nonces: &mut NonceTracker,
        signer: &OperatorSigner,
    ) -> Result<u64, ChainError> {
        if !nonces.is_known() {
            let key = self.view_access_key(signer).await?;
            tracing::debug!(account = %signer.account_id(), nonce = key.nonce, "fetched access-key nonce");
            nonces.observe_chain(key.nonce);
        }
        nonces.next().ok_or_else(|| ChainError::InvalidTransaction {
            method: "next_nonce".to_string(),
            receiver: signer.account_id().clone(),
            reason: "the access key's nonce is exhausted".to_string(),
        })
    }

    async fn recent_block_hash(&self) -> Result<CryptoHash, ChainError> {
        let max_age = self.inner.config.block_hash_max_age;
        if let Some((hash, at)) = *lock(&self.inner.block_hash)
            && at.elapsed() < max_age
        {
            return Ok(hash);
        }
        let block = self.latest_block().await?;
        *lock(&self.inner.block_hash) = Some((block.hash, Instant::now()));
        Ok(block.hash)
    }

    fn forget_block_hash(&self) {
        *lock(&self.inner.block_hash) = None;
    }

    /// How many RPC endpoints the client fails over between.
    pub fn endpoint_count(&self) -> usize {
        self.inner.pool.endpoint_count()
    }
}

/// One `FunctionCall` action with JSON `args`.
fn function_call(
    method: &str,
    args: &impl Serialize,
    gas: Gas,
    deposit: Balance,
) -> Result<Action, ChainError> {
    let args = serde_json::to_vec(args).map_err(|e| ChainError::EncodeArgs {
        method: method.to_string(),
        reason: e.to_string(),
    })?;
    Ok(Action::FunctionCall(Box::new(FunctionCallAction {
        method_name: method.to_string(),
        args,
        gas,
        deposit,
    })))
}

/// What the node said when a transaction was handed to it.
enum Admission {
    /// Pooled: it runs unless something else takes its nonce first.
    Admitted,
    /// Refused on admission (nonce, key, balance, block hash…).
    Refused(InvalidTxError),
    /// No clear answer (timeout, 5xx): it may be pooled; found by hash or sent again.
    Unsure,
}

/// Refusals a new signature can cure.
fn resignable(invalid: &InvalidTxError) -> bool {
    matches!(
        invalid,
        InvalidTxError::InvalidNonce { .. }
            | InvalidTxError::NonceTooLarge { .. }
            | InvalidTxError::Expired
    )
}

fn attempt_error_kind<E>(error: &AttemptError<E>) -> &'static str {
    match error {
        AttemptError::Handler { .. } => "handler error",
        AttemptError::Permanent(_) => "permanent",
        AttemptError::Transient(_) => "transient",
    }
}

enum Submitted {
    Finished(Box<TxOutcome>),
    Invalid(InvalidTxError),
}

/// A poisoned cache lock only means another task panicked mid-update of a plain value; use it anyway.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The outcome if the transaction finished (succeeded or failed); `None` while it is still running.
fn finished(tx_hash: CryptoHash, response: RpcTransactionResponse) -> Option<TxOutcome> {
    let outcome = response.final_execution_outcome?.into_outcome();
    let status = match &outcome.status {
        FinalExecutionStatus::SuccessValue(value) => CallStatus::Success(value.clone()),
        FinalExecutionStatus::Failure(error) => CallStatus::Failure(failure_message(error)),
        FinalExecutionStatus::NotStarted | FinalExecutionStatus::Started => return None,
    };
    Some(TxOutcome {
        tx_hash,
        status,
        outcome,
    })
}

/// The contract's own panic text when there is one (`Smart contract panicked: …`), else nearcore's
/// description of the failure.
fn failure_message(error: &TxExecutionError) -> String {
    if let TxExecutionError::ActionError(action) = error
        && let ActionErrorKind::FunctionCallError(FunctionCallError::ExecutionError(message)) =
            &action.kind
    {
        return message.clone();
    }
    error.to_string()
}

fn handler_to_chain<E: fmt::Display>(
    method: &'static str,
    input: &str,
    error: CallError<E>,
) -> ChainError {
    match error {
        CallError::Handler { error, endpoint } => ChainError::Rpc {
            method,
            input: input.to_string(),
            endpoint,
            message: error.to_string(),
        },
        CallError::Chain(ChainError::Rpc {
            method,
            endpoint,
            message,
            ..
        }) => ChainError::Rpc {
            method,
            input: input.to_string(),
            endpoint,
            message,
        },
        CallError::Chain(error) => error,
    }
}

fn unexpected_kind(method: &'static str, input: &str, kind: &QueryResponseKind) -> ChainError {
    let kind = match kind {
        QueryResponseKind::ViewAccount(_) => "an account",
        QueryResponseKind::ViewCode(_) => "code",
        QueryResponseKind::ViewState(_) => "state",
        QueryResponseKind::CallResult(_) => "a call result",
        QueryResponseKind::AccessKey(_) => "an access key",
        QueryResponseKind::AccessKeyList(_) => "an access key list",
        _ => "another kind of answer",
    };
    ChainError::Rpc {
        method,
        input: input.to_string(),
        endpoint: "any".to_string(),
        message: format!("the node answered with {kind}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_busy_key_signs_next_and_ties_rotate() {
        for (in_flight, start, expected) in [
            (&[][..], 0, None),
            (&[0][..], 0, Some(0)),
            (&[3][..], 0, Some(0)),
            (&[0, 0, 0][..], 0, Some(0)),
            (&[0, 0, 0][..], 1, Some(1)),
            (&[0, 0, 0][..], 2, Some(2)),
            (&[1, 0, 0][..], 0, Some(1)),
            (&[1, 1, 0][..], 0, Some(2)),
            (&[0, 1, 1][..], 2, Some(0)),
            (&[2, 1, 1][..], 0, Some(1)),
            (&[2, 1, 1][..], 2, Some(2)),
            (&[1, 5, 1, 0][..], 1, Some(3)),
        ] {
            assert_eq!(
                pick_key(in_flight, start),
                expected,
                "{in_flight:?} from {start}"
            );
        }
    }

    fn signer(account: &str, seed: &str) -> OperatorSigner {
        let key = near_crypto::SecretKey::from_seed(near_crypto::KeyType::ED25519, seed);
        OperatorSigner::from_secret_strings(account, &key.to_string()).unwrap()
    }

    #[test]
    fn a_pool_is_one_account_with_distinct_keys() {
        let config = ChainConfig::new(
            vec!["http://127.0.0.1:1".to_string()],
            "outlayer.near".parse().unwrap(),
        );
        let pool = vec![signer("op.near", "a"), signer("op.near", "b")];
        let client = ChainClient::with_keys(config.clone(), pool).unwrap();
        assert_eq!(client.key_count(), 2);
        assert_eq!(
            client.signer().unwrap().public_key(),
            signer("op.near", "a").public_key()
        );

        let twice = vec![signer("op.near", "a"), signer("op.near", "a")];
        let error = ChainClient::with_keys(config.clone(), twice).unwrap_err();
        assert!(error.to_string().contains("given twice"), "{error}");
        let mixed = vec![signer("op.near", "a"), signer("other.near", "b")];
        let error = ChainClient::with_keys(config.clone(), mixed).unwrap_err();
        assert!(error.to_string().contains("another account"), "{error}");
        assert_eq!(
            ChainClient::with_keys(config, Vec::new())
                .unwrap()
                .key_count(),
            0
        );
    }

    #[tokio::test]
    async fn transactions_are_handed_over_in_nonce_order() {
        let order = Arc::new(HandOver::default());
        let first = order.enter(1);
        let second = order.enter(2);
        let waiter = {
            let order = order.clone();
            tokio::spawn(async move {
                let third = order.enter(3);
                third.wait().await;
            })
        };
        first.wait().await; // the lowest never waits
        tokio::task::yield_now().await;
        // Whichever lower nonce is given up first, the third waits for both.
        drop(second);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "nonce 1 is still outstanding");
        drop(first);
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
        assert!(lock(&order.outstanding).is_empty());
    }

    #[test]
    fn guards_count_transactions_in_flight() {
        let counter = AtomicUsize::new(0);
        {
            let _a = InFlight::enter(&counter);
            let _b = InFlight::enter(&counter);
            assert_eq!(counter.load(Ordering::SeqCst), 2);
        }
        assert_eq!(counter.load(Ordering::SeqCst), 0);
    }
}
