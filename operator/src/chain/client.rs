//! `ChainClient`: views, the block height, and signed function-call transactions with nonce and
//! block-hash management, over an `RpcPool` (failover, timeouts, retries).

use std::fmt;
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
    signer: Option<OperatorSigner>,
    /// Async mutex: the first transaction fetches the nonce while holding it, so concurrent senders
    /// never fetch twice or hand out the same nonce.
    nonce: tokio::sync::Mutex<NonceTracker>,
    block_hash: Mutex<Option<(CryptoHash, Instant)>>,
}

impl fmt::Debug for ChainClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChainClient")
            .field("config", &self.inner.config)
            .field("signer", &self.inner.signer)
            .finish_non_exhaustive()
    }
}

impl ChainClient {
    /// A client for views only (`signer: None`) or also for transactions.
    pub fn new(config: ChainConfig, signer: Option<OperatorSigner>) -> Result<Self, ChainError> {
        let pool = RpcPool::new(
            &config.rpc_urls,
            config.connect_timeout,
            config.retry.clone(),
        )?;
        Ok(Self {
            inner: Arc::new(Inner {
                pool,
                config,
                signer,
                nonce: tokio::sync::Mutex::new(NonceTracker::default()),
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

    pub fn signer(&self) -> Option<&OperatorSigner> {
        self.inner.signer.as_ref()
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
        let args = serde_json::to_vec(args).map_err(|e| ChainError::EncodeArgs {
            method: method.to_string(),
            reason: e.to_string(),
        })?;
        let action = Action::FunctionCall(Box::new(FunctionCallAction {
            method_name: method.to_string(),
            args,
            gas,
            deposit,
        }));
        self.send_actions(receiver_id, method, vec![action], on_signed)
            .await
    }

    async fn send_actions<F, Fut>(
        &self,
        receiver_id: &AccountId,
        method: &str,
        actions: Vec<Action>,
        on_signed: F,
    ) -> Result<TxOutcome, ChainError>
    where
        F: Fn(CryptoHash) -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let signer = self
            .inner
            .signer
            .as_ref()
            .ok_or_else(|| ChainError::NoSigner {
                method: method.to_string(),
            })?;
        let mut resigns = 0u32;
        loop {
            let nonce = self.next_nonce(signer).await?;
            let block_hash = self.recent_block_hash().await?;
            let tx = signer.sign(nonce, block_hash, receiver_id.clone(), actions.clone());
            let tx_hash = tx.get_hash();
            on_signed(tx_hash)
                .await
                .map_err(|reason| ChainError::NotRecorded {
                    method: method.to_string(),
                    tx_hash,
                    reason,
                })?;
            tracing::debug!(%tx_hash, method, receiver = %receiver_id, nonce, "sending transaction");
            let invalid = match self.submit(tx, method, receiver_id).await? {
                Submitted::Finished(outcome) => return Ok(*outcome),
                Submitted::Invalid(reason) => reason,
            };
            if resigns >= self.inner.config.max_resigns {
                return Err(ChainError::InvalidTransaction {
                    method: method.to_string(),
                    receiver: receiver_id.clone(),
                    reason: format!("{invalid} (still after {resigns} re-signs)"),
                });
            }
            match invalid {
                InvalidTxError::InvalidNonce { tx_nonce, ak_nonce } => {
                    // Someone else used the key, or our transactions overtook each other.
                    tracing::info!(method, tx_nonce, ak_nonce, "stale nonce; re-signing");
                    self.inner.nonce.lock().await.observe_chain(ak_nonce);
                }
                InvalidTxError::NonceTooLarge { .. } => {
                    tracing::info!(method, "nonce too large; fetching it again");
                    self.inner.nonce.lock().await.forget();
                }
                InvalidTxError::Expired => {
                    tracing::info!(method, "block hash expired; fetching a newer one");
                    self.forget_block_hash();
                }
                other => {
                    return Err(ChainError::InvalidTransaction {
                        method: method.to_string(),
                        receiver: receiver_id.clone(),
                        reason: other.to_string(),
                    });
                }
            }
            resigns += 1;
        }
    }

    /// Sends one signed transaction until its outcome is known. After a transient failure the
    /// transaction may already be on chain, so the next attempt asks for it by hash and re-sends the
    /// very same bytes only if no node knows it: a re-send can never execute twice (same nonce).
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
        let mut failures = 0u32;
        let mut ask_first = false;
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
            pool.pause_before(failures).await;
        }
    }

    async fn next_nonce(&self, signer: &OperatorSigner) -> Result<u64, ChainError> {
        let mut nonces = self.inner.nonce.lock().await;
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
