//! The operator's chain client against the test localnet, which runs the real contract wasm: views,
//! a user's request seen as pending and resolved through the client (once), the two-step path for a
//! large output, stale nonces, RPC faults (5xx, no answer, dropped transactions) and failover.
//! Every wait is for a condition with a generous deadline; no timing decides a test.

mod common;

use std::time::Duration;

use common::chain::{NEAR, account, secret};
use e2e_localnet::{Fault, Localnet};
use near_crypto::SecretKey;
use near_jsonrpc_client::{JsonRpcClient, methods};
use near_primitives::action::{Action, FunctionCallAction};
use near_primitives::transaction::{SignedTransaction, Transaction, TransactionV0};
use near_primitives::types::{AccountId, Balance, BlockReference, Finality, Gas};
use outlayer_operator::chain::{
    CallStatus, ChainClient, ChainConfig, ChainError, ExecutionOutput, ExecutionResponse,
    OperatorSigner, PendingRequest, Pricing, RequestCallOutcome, ResourceMetrics, RetryPolicy,
    TxOutcome,
};
use outlayer_testkit::localnet::outlayer_genesis;
use outlayer_testkit::wait_until;
use serde_json::{Value, json};

const BLOCK_TIME: Duration = Duration::from_millis(50);
/// Bounds a hung test only; waits end on conditions.
const DEADLINE: Duration = Duration::from_secs(120);
/// How long the localnet holds a waiting transaction call before answering TIMEOUT_ERROR (HTTP 408):
/// shorter than the client's own bound, so the user's request (open until resolved) exercises it.
const NODE_TX_WAIT: Duration = Duration::from_secs(5);
const REQUEST_DEPOSIT: u128 = NEAR / 10;

struct Net {
    localnet: Localnet,
    outlayer: AccountId,
}

impl Net {
    async fn start() -> Self {
        let outlayer = account("outlayer.localnet");
        let config = outlayer_genesis(100 * NEAR)
            .with_block_time(BLOCK_TIME)
            .with_tx_wait_timeout(NODE_TX_WAIT);
        Self {
            localnet: Localnet::start(config).await.unwrap(),
            outlayer,
        }
    }

    fn config(&self, urls: Vec<String>) -> ChainConfig {
        let mut config = ChainConfig::new(urls, self.outlayer.clone());
        config.view_timeout = Duration::from_secs(5);
        config.tx_timeout = Duration::from_secs(30);
        config.retry = RetryPolicy {
            max_attempts: 8,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(1),
        };
        config
    }

    /// A client signing as `name` (its key is derived from the name, as in the genesis above), given
    /// to the client as the operator's Secret would hold it.
    fn client_as(&self, name: &str) -> ChainClient {
        self.client_with(self.config(vec![self.localnet.rpc_url()]), Some(name))
    }

    fn client_with(&self, config: ChainConfig, signer: Option<&str>) -> ChainClient {
        let signer = signer.map(|name| {
            OperatorSigner::from_secret_strings(name, &format!("{}\n", secret(name))).unwrap()
        });
        ChainClient::new(config, signer).unwrap()
    }

    fn operator(&self) -> ChainClient {
        self.client_as("operator.localnet")
    }

    /// Alice calls `request_execution` with `input`; the transaction stays open until the request is
    /// resolved (or times out), so it runs in a task whose result is the user's final outcome.
    fn request_execution(&self, input: &str) -> tokio::task::JoinHandle<TxOutcome> {
        self.request_execution_as(self.client_as("alice.localnet"), input)
    }

    /// [`Net::request_execution`] through `alice`, a client of hers (its clones share her nonces).
    fn request_execution_as(
        &self,
        alice: ChainClient,
        input: &str,
    ) -> tokio::task::JoinHandle<TxOutcome> {
        let args = json!({
            "code_source": {"repo": "https://github.com/outlayer/examples",
                            "commit": "0123456789abcdef0123456789abcdef01234567"},
            "resource_limits": {"max_instructions": 1_000_000_000u64, "max_memory_mb": 128,
                                "max_execution_seconds": 10},
            "input_data": input,
            "response_format": "Text"
        });
        let outlayer = self.outlayer.clone();
        tokio::spawn(async move {
            alice
                .call_function(
                    &outlayer,
                    "request_execution",
                    &args,
                    Gas::from_teragas(50),
                    Balance::from_yoctonear(REQUEST_DEPOSIT),
                )
                .await
                .unwrap()
        })
    }

    async fn wait_for_pending(
        &self,
        client: &ChainClient,
        predicate: impl Fn(&[PendingRequest]) -> bool,
    ) -> Vec<PendingRequest> {
        let predicate = &predicate;
        wait_until("the pending requests to match", DEADLINE, || async move {
            let pending = client.get_pending_requests(0, 100).await.unwrap();
            if predicate(&pending) {
                Ok(pending)
            } else {
                Err(format!("{pending:?}"))
            }
        })
        .await
    }
}

fn text_response(text: &str) -> ExecutionResponse {
    ExecutionResponse {
        success: true,
        output: Some(ExecutionOutput::Text(text.to_string())),
        error: None,
        resources_used: ResourceMetrics {
            instructions: 1_000_000,
            time_ms: 3,
            compile_time_ms: None,
        },
        evidence: None,
    }
}

fn returned_json(outcome: &TxOutcome) -> Value {
    match &outcome.status {
        CallStatus::Success(value) => serde_json::from_slice(value).unwrap(),
        CallStatus::Failure(message) => panic!("expected success, got {message}"),
    }
}

/// A cheap state-changing call any account may make (a near-sdk view called as a transaction).
async fn touch(client: &ChainClient, outlayer: &AccountId) -> Result<TxOutcome, ChainError> {
    client
        .call_function(
            outlayer,
            "get_stats",
            &json!({}),
            Gas::from_teragas(10),
            Balance::from_yoctonear(0),
        )
        .await
}

#[tokio::test]
async fn views_return_what_the_contract_holds() {
    let net = Net::start().await;
    let client = net.client_with(net.config(vec![net.localnet.rpc_url()]), None);

    assert_eq!(client.get_pricing().await.unwrap(), Pricing::default());
    let operator = client
        .view_account(&account("operator.localnet"))
        .await
        .unwrap();
    assert_eq!(operator.amount.as_yoctonear(), 10 * NEAR);
    let config: Value = client
        .view_call(&net.outlayer, "get_config", &json!({}))
        .await
        .unwrap();
    assert_eq!(config["operator_id"], "operator.localnet");
    assert!(client.get_pending_requests(0, 10).await.unwrap().is_empty());
    assert!(client.get_request(0).await.unwrap().is_none());

    let first = client.block_height().await.unwrap();
    net.localnet.wait_for_height(first + 2).await;
    assert!(client.block_height().await.unwrap() >= first + 2);

    // Permanent answers are classified as such and name what failed.
    let missing = client
        .view_call::<Value>(&net.outlayer, "no_such_method", &json!({}))
        .await
        .unwrap_err();
    assert!(
        matches!(missing, ChainError::ViewFailed { ref method, .. } if method == "no_such_method"),
        "{missing}"
    );
    assert!(!missing.is_transient());
    let unknown = client
        .view_account(&account("ghost.localnet"))
        .await
        .unwrap_err();
    assert!(!unknown.is_transient(), "{unknown}");
    assert!(unknown.to_string().contains("ghost.localnet"), "{unknown}");

    // Without a signer there is nothing to sign with.
    let error = touch(&client, &net.outlayer).await.unwrap_err();
    assert!(matches!(error, ChainError::NoSigner { .. }), "{error}");
}

#[tokio::test]
async fn a_request_is_seen_pending_and_resolved_exactly_once_through_the_client() {
    let net = Net::start().await;
    let operator = net.operator();
    let user_tx = net.request_execution("hello from alice");

    let pending = net
        .wait_for_pending(&operator, |pending| !pending.is_empty())
        .await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    let request = &pending[0];
    assert_eq!(request.request_id, 0);
    assert_eq!(request.sender_id.as_str(), "alice.localnet");
    assert_eq!(request.input_data.as_deref(), Some("hello from alice"));
    assert!(!request.input_omitted);
    assert_eq!(request.payment.0, REQUEST_DEPOSIT);
    let stored = operator.get_request(0).await.unwrap().unwrap();
    assert_eq!(stored.data_id, request.data_id);
    assert!(!stored.resolved);

    let resolved = operator
        .resolve_execution(0, &text_response("hello from the executor"))
        .await
        .unwrap();
    let RequestCallOutcome::Applied { tx_hash } = resolved else {
        panic!("expected the resolve to apply, got {resolved:?}");
    };

    let user = tokio::time::timeout(DEADLINE, user_tx)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(returned_json(&user), "hello from the executor");
    assert_eq!(
        user.events()
            .iter()
            .filter(|e| e["event"] == "execution_completed")
            .count(),
        1,
        "one completion: {:?}",
        user.events()
    );
    assert!(
        net.wait_for_pending(&operator, |pending| pending.is_empty())
            .await
            .is_empty()
    );

    let again = operator
        .resolve_execution(0, &text_response("a second answer"))
        .await
        .unwrap();
    match again {
        RequestCallOutcome::AlreadyResolved {
            tx_hash: second,
            message,
        } => {
            assert_ne!(second, tx_hash);
            assert!(message.contains("request 0"), "{message}");
        }
        other => panic!("a second resolve must be AlreadyResolved, got {other:?}"),
    }
    let unknown = operator
        .resolve_execution(42, &text_response("nobody asked"))
        .await
        .unwrap();
    assert!(
        matches!(unknown, RequestCallOutcome::AlreadyResolved { .. }),
        "{unknown:?}"
    );
}

#[tokio::test]
async fn an_output_over_1024_bytes_takes_the_two_step_path() {
    let net = Net::start().await;
    let operator = net.operator();
    let user_tx = net.request_execution("make it big");
    net.wait_for_pending(&operator, |pending| !pending.is_empty())
        .await;

    let big = "0123456789abcdef".repeat(200);
    let report = operator
        .report_execution(0, text_response(&big))
        .await
        .unwrap();
    assert!(
        report.submit_tx.is_some(),
        "3200 bytes need submit_execution_output"
    );
    assert!(
        matches!(report.outcome, RequestCallOutcome::Applied { .. }),
        "{report:?}"
    );
    let user = tokio::time::timeout(DEADLINE, user_tx)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(returned_json(&user), big.as_str());

    // Sent whole, the same response is refused by the contract (a plain failure, not "resolved").
    let user_tx = net.request_execution("again");
    net.wait_for_pending(&operator, |pending| !pending.is_empty())
        .await;
    let error = operator
        .resolve_execution(1, &text_response(&big))
        .await
        .unwrap_err();
    assert!(
        matches!(error, ChainError::TransactionFailed { ref message, .. }
            if message.contains("1024-byte yield payload limit")),
        "{error}"
    );
    assert!(!error.is_transient());
    let report = operator
        .report_execution(1, text_response("small"))
        .await
        .unwrap();
    assert_eq!(report.submit_tx, None);
    assert_eq!(returned_json(&user_tx.await.unwrap()), "small");
}

#[tokio::test]
async fn a_stale_nonce_is_refreshed_and_the_call_succeeds() {
    let net = Net::start().await;
    let client = net.operator();
    let signer = client.signer().unwrap().clone();

    let start = client.view_access_key(&signer).await.unwrap().nonce;
    touch(&client, &net.outlayer).await.unwrap(); // the client now expects start + 2 next
    // Another process with the same key jumps the chain's nonce far ahead: counting up locally
    // would take 100 rejected attempts, so only taking the chain's nonce gets through.
    let jumped = start + 100;
    let raw = JsonRpcClient::connect(net.localnet.rpc_url());
    let block = raw
        .call(methods::block::RpcBlockRequest {
            block_reference: BlockReference::Finality(Finality::Final),
        })
        .await
        .unwrap();
    let tx = Transaction::V0(TransactionV0 {
        signer_id: signer.account_id().clone(),
        public_key: signer.public_key().clone(),
        nonce: jumped,
        receiver_id: net.outlayer.clone(),
        block_hash: block.header.hash,
        actions: vec![Action::FunctionCall(Box::new(FunctionCallAction {
            method_name: "get_stats".to_string(),
            args: b"{}".to_vec(),
            gas: Gas::from_teragas(10),
            deposit: Balance::from_yoctonear(0),
        }))],
    });
    let (hash, _) = tx.get_hash_and_size();
    let signed = SignedTransaction::new(secret("operator.localnet").sign(hash.as_ref()), tx);
    raw.call(methods::broadcast_tx_commit::RpcBroadcastTxCommitRequest {
        signed_transaction: signed,
    })
    .await
    .unwrap();
    assert_eq!(client.view_access_key(&signer).await.unwrap().nonce, jumped);

    let outcome = touch(&client, &net.outlayer).await.unwrap();
    assert!(matches!(outcome.status, CallStatus::Success(_)));
    assert_eq!(
        client.view_access_key(&signer).await.unwrap().nonce,
        jumped + 1,
        "re-signed with the nonce right after the chain's"
    );
    assert_eq!(client.resigns(), 1, "one stale nonce, one re-sign");
}

/// Issue 16 item 5: the primary key adds function-call keys restricted to the resolve methods; a
/// pool of them resolves many requests at once, spread over the keys, each key with its own nonce
/// sequence — no re-signs, every request answered exactly once.
#[tokio::test]
async fn a_key_pool_resolves_in_parallel_without_nonce_collisions() {
    const REQUESTS: usize = 24;
    const ADDED: usize = 3;
    let net = Net::start().await;
    let primary = net.operator();
    let added: Vec<SecretKey> = (0..ADDED)
        .map(|i| secret(&format!("operator pool key {i}")))
        .collect();
    let public: Vec<_> = added.iter().map(SecretKey::public_key).collect();
    let outcome = primary.add_pool_keys(&public).await.unwrap();
    assert!(
        matches!(outcome.status, CallStatus::Success(_)),
        "{:?}",
        outcome.status
    );

    // An added key may call the resolve methods only.
    let restricted = ChainClient::new(
        net.config(vec![net.localnet.rpc_url()]),
        Some(OperatorSigner::new(
            account("operator.localnet"),
            added[0].clone(),
        )),
    )
    .unwrap();
    let error = touch(&restricted, &net.outlayer).await.unwrap_err();
    assert!(
        matches!(error, ChainError::InvalidTransaction { ref reason, .. }
            if reason.contains("get_stats") || reason.contains("method")),
        "{error}"
    );

    // The key file as the operator reads it: the primary first, then the added keys.
    let key_file: String = std::iter::once(secret("operator.localnet"))
        .chain(added.iter().cloned())
        .map(|key| format!("{key}\n"))
        .collect();
    let keys = OperatorSigner::pool_from_secret_strings("operator.localnet", &key_file).unwrap();
    let pool = ChainClient::with_keys(net.config(vec![net.localnet.rpc_url()]), keys).unwrap();
    assert_eq!(pool.key_count(), ADDED + 1);

    // Many requests at once from one user client (one nonce sequence, so its sends never collide).
    let alice = net.client_as("alice.localnet");
    let users: Vec<_> = (0..REQUESTS)
        .map(|i| net.request_execution_as(alice.clone(), &format!("request {i}")))
        .collect();
    let pending = net
        .wait_for_pending(&pool, |pending| pending.len() == REQUESTS)
        .await;

    let resolves: Vec<_> = pending
        .iter()
        .map(|request| {
            let pool = pool.clone();
            let id = request.request_id;
            let text = format!(
                "answer to {}",
                request.input_data.clone().unwrap_or_default()
            );
            tokio::spawn(async move { pool.resolve_execution(id, &text_response(&text)).await })
        })
        .collect();
    let mut hashes = Vec::new();
    for resolve in resolves {
        match resolve.await.unwrap().unwrap() {
            RequestCallOutcome::Applied { tx_hash } => hashes.push(tx_hash),
            other => panic!("every resolve applies once, got {other:?}"),
        }
    }
    assert_eq!(pool.resigns(), 0, "no key's nonce collided");

    // Spread over the pool: the signing key of every resolve, looked up on chain.
    let mut signed_by = std::collections::BTreeMap::<String, usize>::new();
    for hash in &hashes {
        let outcome = pool
            .transaction_status(*hash, &account("operator.localnet"))
            .await
            .unwrap()
            .unwrap();
        *signed_by
            .entry(outcome.outcome.transaction.public_key.to_string())
            .or_default() += 1;
    }
    assert_eq!(
        signed_by.len(),
        ADDED + 1,
        "every key signed: {signed_by:?}"
    );

    for (i, user) in users.into_iter().enumerate() {
        let user = tokio::time::timeout(DEADLINE, user).await.unwrap().unwrap();
        assert_eq!(
            returned_json(&user),
            format!("answer to request {i}").as_str()
        );
        assert_eq!(
            user.events()
                .iter()
                .filter(|e| e["event"] == "execution_completed")
                .count(),
            1
        );
    }
}

#[tokio::test]
async fn http_errors_and_silence_are_retried_and_pricing_round_trips() {
    let net = Net::start().await;
    let alice = net.client_as("alice.localnet");
    let faults = net.localnet.faults();

    faults.set_for(Fault::HttpError { status: 503 }, 3);
    assert_eq!(alice.get_pricing().await.unwrap(), Pricing::default());
    assert_eq!(
        faults.current(),
        None,
        "all three faulty answers were consumed"
    );

    let pricing = Pricing {
        base_fee: 2_000u128.into(),
        per_million_instructions_fee: 3u128.into(),
        per_ms_fee: 4u128.into(),
        per_compile_ms_fee: 5u128.into(),
    };
    for status in [429, 500, 502] {
        faults.set_for(Fault::HttpError { status }, 2);
        let outcome = alice.set_pricing(&pricing).await.unwrap();
        assert!(matches!(outcome.status, CallStatus::Success(_)));
        assert_eq!(faults.current(), None);
    }
    assert_eq!(alice.get_pricing().await.unwrap(), pricing);

    // A node that never answers is a timeout, and the next attempt goes through.
    let mut config = net.config(vec![net.localnet.rpc_url()]);
    config.view_timeout = Duration::from_millis(500);
    let impatient = net.client_with(config, None);
    faults.set_for(Fault::NoAnswer, 1);
    assert_eq!(impatient.get_pricing().await.unwrap(), pricing);
    assert_eq!(faults.current(), None);

    // Only the owner or the pricing manager may set pricing: a permanent failure with the reason.
    let error = net
        .operator()
        .set_pricing(&Pricing::default())
        .await
        .unwrap_err();
    assert!(!error.is_transient());
    assert!(
        error
            .to_string()
            .contains("only the owner or the pricing manager"),
        "{error}"
    );

    // More faults than attempts: a transient error saying what failed.
    let mut config = net.config(vec![net.localnet.rpc_url()]);
    config.retry.max_attempts = 2;
    let short = net.client_with(config, None);
    faults.set_for(Fault::HttpError { status: 503 }, 5);
    let error = short.get_pricing().await.unwrap_err();
    assert!(error.is_transient(), "{error}");
    assert!(
        matches!(error, ChainError::Exhausted { attempts: 2, .. }),
        "{error}"
    );
    assert!(error.to_string().contains("HTTP 503"), "{error}");
    faults.clear();
}

#[tokio::test]
async fn a_dropped_transaction_is_found_unknown_and_sent_again_once() {
    let net = Net::start().await;
    let operator = net.operator();
    let user_tx = net.request_execution("through a lossy node");
    net.wait_for_pending(&operator, |pending| !pending.is_empty())
        .await;

    net.localnet.faults().set_for(Fault::DropTransactions, 1);
    let resolved = operator
        .resolve_execution(0, &text_response("delivered anyway"))
        .await
        .unwrap();
    assert!(
        matches!(resolved, RequestCallOutcome::Applied { .. }),
        "{resolved:?}"
    );
    assert_eq!(net.localnet.faults().current(), None);
    assert_eq!(returned_json(&user_tx.await.unwrap()), "delivered anyway");
}

#[tokio::test]
async fn a_dead_first_url_fails_over_and_keys_in_urls_never_show() {
    let net = Net::start().await;
    let dead = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        format!("http://user:DEADPASSWORD@127.0.0.1:{port}/?apikey=DEADKEY")
    };
    // Keys in the query and in userinfo (sent as basic auth) must not stop the localnet answering.
    let live = net
        .localnet
        .rpc_url()
        .replacen("http://", "http://user:LIVEPASSWORD@", 1);
    let live = format!("{}/?apikey=LIVEKEY", live.trim_end_matches('/'));

    let client = net.client_with(
        net.config(vec![dead.clone(), live]),
        Some("operator.localnet"),
    );
    assert_eq!(client.endpoint_count(), 2);
    assert_eq!(client.get_pricing().await.unwrap(), Pricing::default());
    let outcome = touch(&client, &net.outlayer).await.unwrap();
    assert!(matches!(outcome.status, CallStatus::Success(_)));

    // Only dead endpoints: a transient error that names them without their secrets.
    let other_dead = dead.replace("DEADKEY", "OTHERKEY");
    let mut config = net.config(vec![dead, other_dead]);
    config.retry.max_attempts = 4;
    let stranded = net.client_with(config, Some("operator.localnet"));
    let error = stranded.get_pricing().await.unwrap_err();
    assert!(error.is_transient(), "{error}");
    let text = format!("{error} {error:?} {stranded:?}");
    for secret in ["DEADKEY", "OTHERKEY", "DEADPASSWORD"] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    assert!(text.contains("rpc#1 http://127.0.0.1"), "{text}");
    let error = touch(&stranded, &net.outlayer).await.unwrap_err();
    assert!(error.is_transient(), "{error}");
}

/// `outlayer-operator add-keys` (the binary): writes the new key file (old keys first, mode 0600, never
/// over an existing file) and adds the keys on chain as function-call keys of the resolve methods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_keys_writes_the_key_file_and_adds_restricted_keys() {
    use std::os::unix::fs::PermissionsExt as _;

    let net = Net::start().await;
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("key");
    std::fs::write(&old, format!("{}\n", secret("operator.localnet"))).unwrap();
    let new = dir.path().join("keys");
    let run = |out: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_outlayer-operator"))
            .args(["add-keys", "--rpc-url", &net.localnet.rpc_url()])
            .args(["--contract-id", net.outlayer.as_str()])
            .args(["--operator-account-id", "operator.localnet"])
            .arg("--operator-key-file")
            .arg(&old)
            .args(["--count", "2", "--out"])
            .arg(out)
            .output()
            .unwrap()
    };
    let output = tokio::task::block_in_place(|| run(&new));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        std::fs::metadata(&new).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let text = std::fs::read_to_string(&new).unwrap();
    let keys = OperatorSigner::pool_from_secret_strings("operator.localnet", &text).unwrap();
    assert_eq!(keys.len(), 3);
    assert_eq!(
        keys[0].public_key(),
        &secret("operator.localnet").public_key()
    );
    assert!(
        !stdout.contains(&text.lines().nth(1).unwrap()[8..]),
        "secret keys are never printed"
    );

    let client = net.operator();
    for key in &keys[1..] {
        assert!(stdout.contains(&key.public_key().to_string()), "{stdout}");
        let view = client.view_access_key(key).await.unwrap();
        match view.permission {
            near_primitives::views::AccessKeyPermissionView::FunctionCall {
                allowance,
                receiver_id,
                method_names,
            } => {
                assert_eq!(allowance, None);
                assert_eq!(receiver_id, net.outlayer.as_str());
                assert_eq!(
                    method_names,
                    ["resolve_execution", "submit_execution_output"]
                );
            }
            other => panic!("expected a function-call key, got {other:?}"),
        }
    }

    // An existing file is never overwritten (and nothing is added).
    let again = tokio::task::block_in_place(|| run(&new));
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("creating --out"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(std::fs::read_to_string(&new).unwrap(), text);
}
