//! The localnet driven over JSON-RPC with near-jsonrpc-client 0.23, the client the operator uses:
//! transfers, transaction validation (signature, nonce, key, block hash, balance), the real
//! OutLayer contract's request → resolve → callback flow and its yield timeout, and the fault
//! switch. Every wait is for a condition with a generous deadline; no timing decides a test.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{DEADLINE, Rpc, function_call, tokens_burnt};
use e2e_localnet::{Fault, InitCall, Localnet, LocalnetConfig};
use near_crypto::PublicKey;
use near_jsonrpc_client::errors::{JsonRpcError, JsonRpcServerError};
use near_jsonrpc_client::methods;
use near_jsonrpc_primitives::types::query::QueryResponseKind;
use near_jsonrpc_primitives::types::transactions::{RpcTransactionError, TransactionInfo};
use std::num::NonZeroU32;

use near_crypto::PublicKeyHandle;
use near_primitives::account::{AccessKey, AccessKeyPermission, FunctionCallPermission};
use near_primitives::action::{
    Action, AddKeyAction, CreateAccountAction, DeleteKeyAction, TransferAction,
};
use near_primitives::errors::{ActionsValidationError, InvalidTxError};
use near_primitives::hash::CryptoHash;
use near_primitives::transaction::SignedTransaction;
use near_primitives::types::StoreKey;
use near_primitives::types::{AccountId, Balance, BlockReference, Finality, FunctionArgs, Gas};
use near_primitives::views::{AccessKeyPermissionView, AccessKeyView};
use near_primitives::views::{
    ExecutionStatusView, FinalExecutionOutcomeView, FinalExecutionOutcomeViewEnum,
    FinalExecutionStatus, QueryRequest, TxExecutionStatus,
};
use outlayer_testkit::near::{Key, NEAR, account, secret};
use outlayer_testkit::wait_until;
use serde_json::{Value, json};

const BLOCK_TIME: Duration = Duration::from_millis(50);

/// Contract defaults (`Pricing::default`): base 0.001 NEAR, 1e14 yocto per million
/// instructions, 1e17 yocto per ms and per compile ms.
const BASE_FEE: u128 = 1_000_000_000_000_000_000_000;
const PER_MILLION_INSTRUCTIONS: u128 = 100_000_000_000_000;
const PER_MS: u128 = 100_000_000_000_000_000;
const REQUEST_DEPOSIT: u128 = NEAR / 10;

fn contract_wasm() -> PathBuf {
    outlayer_testkit::contract_wasm("outlayer_contract.wasm")
}

/// The localnet's RPC (`Deref`: `net.sign(..)`, `net.client`) plus the accounts of its genesis.
struct Net {
    localnet: Localnet,
    rpc: Rpc,
    alice: Key,
    bob: Key,
    operator: Key,
    outlayer: AccountId,
}

impl std::ops::Deref for Net {
    type Target = Rpc;

    fn deref(&self) -> &Rpc {
        &self.rpc
    }
}

impl Net {
    async fn start(with_contract: bool) -> Self {
        Self::start_with(with_contract, DEADLINE).await
    }

    async fn start_with(with_contract: bool, tx_wait_timeout: Duration) -> Self {
        let alice = Key::new("alice.localnet");
        let bob = Key::new("bob.localnet");
        let operator = Key::new("operator.localnet");
        let outlayer = account("outlayer.localnet");
        let mut config = LocalnetConfig::default()
            .with_block_time(BLOCK_TIME)
            .with_tx_wait_timeout(tx_wait_timeout)
            .with_account(alice.account_id.clone(), 100 * NEAR, alice.public_key())
            .with_account(bob.account_id.clone(), 10 * NEAR, bob.public_key())
            .with_account(
                operator.account_id.clone(),
                10 * NEAR,
                operator.public_key(),
            );
        if with_contract {
            config = config.with_contract(
                outlayer.clone(),
                10 * NEAR,
                contract_wasm(),
                Some(InitCall {
                    method: "new".to_string(),
                    args: json!({"owner_id": "alice.localnet", "operator_id": "operator.localnet"}),
                }),
            );
        }
        let localnet = Localnet::start(config).await.unwrap();
        let rpc = Rpc::connect(&localnet.rpc_url());
        Self {
            localnet,
            rpc,
            alice,
            bob,
            operator,
            outlayer,
        }
    }

    async fn view(&self, method: &str, args: Value) -> Value {
        self.rpc.view_on(&self.outlayer, method, args).await
    }

    async fn request_execution(&self, input: &str) -> CryptoHash {
        let args = json!({
            "code_source": {
                "repo": "https://github.com/outlayer/examples",
                "commit": "0123456789abcdef0123456789abcdef01234567",
                "build_target": "wasm32-wasip1"
            },
            "resource_limits": {
                "max_instructions": 1_000_000_000u64,
                "max_memory_mb": 128,
                "max_execution_seconds": 10
            },
            "input_data": input,
            "response_format": "Text"
        });
        let tx = self
            .sign(
                &self.alice,
                &self.outlayer,
                vec![function_call(
                    "request_execution",
                    &args,
                    50,
                    REQUEST_DEPOSIT,
                )],
            )
            .await;
        self.client
            .call(methods::broadcast_tx_async::RpcBroadcastTxAsyncRequest {
                signed_transaction: tx,
            })
            .await
            .unwrap()
    }

    /// Polls the pending-requests view until `predicate` holds.
    async fn wait_for_pending(&self, predicate: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let predicate = &predicate;
        wait_until("the pending requests to match", DEADLINE, || async move {
            let pending = self.view("get_pending_requests", json!({})).await;
            let pending = pending.as_array().cloned().unwrap_or_default();
            if predicate(&pending) {
                Ok(pending)
            } else {
                Err(format!("{pending:?}"))
            }
        })
        .await
    }
}

fn transfer(amount: u128) -> Action {
    Action::Transfer(TransferAction {
        deposit: Balance::from_yoctonear(amount),
    })
}

fn success_value(outcome: &FinalExecutionOutcomeView) -> Vec<u8> {
    match &outcome.status {
        FinalExecutionStatus::SuccessValue(value) => value.clone(),
        other => panic!(
            "expected success, got {other:?}; outcomes: {:#?}",
            outcome.receipts_outcome
        ),
    }
}

/// The NEP-297 events logged anywhere in the transaction, by name.
fn events(outcome: &FinalExecutionOutcomeView, name: &str) -> Vec<Value> {
    outcome
        .receipts_outcome
        .iter()
        .flat_map(|o| &o.outcome.logs)
        .filter_map(|line| line.strip_prefix("EVENT_JSON:"))
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|event| event["event"] == name)
        .flat_map(|event| event["data"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn invalid_tx<T: std::fmt::Debug>(
    result: Result<T, JsonRpcError<RpcTransactionError>>,
) -> InvalidTxError {
    match result {
        Err(JsonRpcError::ServerError(JsonRpcServerError::HandlerError(
            RpcTransactionError::InvalidTransaction { context },
        ))) => context,
        other => panic!("expected an invalid-transaction error, got {other:?}"),
    }
}

#[tokio::test]
async fn transfer_moves_exactly_the_amount_plus_burnt_gas() {
    let net = Net::start(false).await;
    let alice_before = net.balance(&net.alice.account_id).await;
    let bob_before = net.balance(&net.bob.account_id).await;

    let tx = net
        .sign(&net.alice, &net.bob.account_id, vec![transfer(3 * NEAR)])
        .await;
    let nonce = tx.transaction.nonce().nonce();
    let outcome = net.commit(tx).await;
    assert_eq!(success_value(&outcome), Vec::<u8>::new());
    assert_eq!(
        outcome.receipts_outcome.len(),
        1,
        "one transfer receipt, nothing to refund"
    );
    let burnt = tokens_burnt(&outcome);
    assert!(burnt > 0, "gas is charged");
    assert_eq!(
        outcome.transaction_outcome.outcome.status,
        ExecutionStatusView::SuccessReceiptId(outcome.receipts_outcome[0].id)
    );

    assert_eq!(
        net.balance(&net.bob.account_id).await,
        bob_before + 3 * NEAR
    );
    assert_eq!(
        net.balance(&net.alice.account_id).await,
        alice_before - 3 * NEAR - burnt
    );
    assert_eq!(
        net.nonce(&net.alice).await,
        nonce,
        "the key's nonce advanced"
    );

    // The same hash again is not a new transaction: nearcore answers its outcome.
    let again = net
        .client
        .call(methods::tx::RpcTransactionStatusRequest {
            transaction_info: TransactionInfo::TransactionId {
                tx_hash: outcome.transaction_outcome.id,
                sender_account_id: net.alice.account_id.clone(),
            },
            wait_until: TxExecutionStatus::Final,
        })
        .await
        .unwrap();
    assert_eq!(again.final_execution_status, TxExecutionStatus::Final);

    net.client
        .call(methods::health::RpcHealthRequest)
        .await
        .unwrap();
    let status = net
        .client
        .call(methods::status::RpcStatusRequest)
        .await
        .unwrap();
    assert_eq!(status.chain_id, "localnet");
    let gas_price = net
        .client
        .call(methods::gas_price::RpcGasPriceRequest { block_id: None })
        .await
        .unwrap();
    assert_eq!(
        gas_price.gas_price.as_yoctonear(),
        e2e_localnet::config::DEFAULT_GAS_PRICE
    );
    assert_eq!(
        burnt % e2e_localnet::config::DEFAULT_GAS_PRICE,
        0,
        "burnt at the fixed price"
    );
}

#[tokio::test]
async fn invalid_transactions_are_rejected_as_nearcore_does() {
    let net = Net::start(false).await;
    let alice = &net.alice;
    let bob = &net.bob.account_id;
    let block_hash = net.final_block_hash().await;
    let balance_before = net.balance(&alice.account_id).await;
    let commit = |tx: SignedTransaction| {
        net.client
            .call(methods::broadcast_tx_commit::RpcBroadcastTxCommitRequest {
                signed_transaction: tx,
            })
    };

    // Signed by another key than the one it names.
    let intruder = secret("intruder");
    let forged = net.sign_with(alice, &intruder, 1, block_hash, bob, vec![transfer(NEAR)]);
    assert_eq!(
        invalid_tx(commit(forged).await),
        InvalidTxError::InvalidSignature
    );

    // A key the account does not have.
    let stranger = Key {
        account_id: alice.account_id.clone(),
        secret: intruder.clone(),
    };
    let unknown_key = net.sign_with(
        &stranger,
        &intruder,
        1,
        block_hash,
        bob,
        vec![transfer(NEAR)],
    );
    assert!(matches!(
        invalid_tx(commit(unknown_key).await),
        InvalidTxError::InvalidAccessKeyError(_)
    ));

    // Nonce 5 goes through; 5 again and 4 are too small.
    let first = net.sign_with(
        alice,
        &alice.secret,
        5,
        block_hash,
        bob,
        vec![transfer(NEAR)],
    );
    success_value(&net.commit(first).await);
    for reused in [5, 4] {
        let tx = net.sign_with(
            alice,
            &alice.secret,
            reused,
            block_hash,
            bob,
            vec![transfer(2 * NEAR)],
        );
        assert_eq!(
            invalid_tx(commit(tx).await),
            InvalidTxError::InvalidNonce {
                tx_nonce: reused,
                ak_nonce: 5
            }
        );
    }

    // A block hash the chain never had.
    let stale = net.sign_with(
        alice,
        &alice.secret,
        6,
        CryptoHash::hash_bytes(b"no such block"),
        bob,
        vec![transfer(NEAR)],
    );
    assert_eq!(invalid_tx(commit(stale).await), InvalidTxError::Expired);

    // More than the balance.
    let too_much = net.sign_with(
        alice,
        &alice.secret,
        6,
        block_hash,
        bob,
        vec![transfer(1000 * NEAR)],
    );
    assert!(matches!(
        invalid_tx(commit(too_much).await),
        InvalidTxError::NotEnoughBalance { .. }
    ));

    // An unknown signer.
    let ghost = Key::new("ghost.localnet");
    let from_ghost = net.sign_with(
        &ghost,
        &ghost.secret,
        1,
        block_hash,
        bob,
        vec![transfer(NEAR)],
    );
    assert!(matches!(
        invalid_tx(commit(from_ghost).await),
        InvalidTxError::SignerDoesNotExist { .. }
    ));

    // Actions the localnet does not model are refused with a message saying so.
    let delete = net.sign_with(
        alice,
        &alice.secret,
        6,
        block_hash,
        &alice.account_id,
        vec![Action::DeleteAccount(
            near_primitives::action::DeleteAccountAction {
                beneficiary_id: bob.clone(),
            },
        )],
    );
    match commit(delete).await {
        Err(JsonRpcError::ServerError(JsonRpcServerError::InternalError { info: Some(info) })) => {
            assert!(
                info.contains("models Transfer, FunctionCall, CreateAccount, DeleteKey and AddKey"),
                "{info}"
            )
        }
        other => panic!("expected a not-modelled error, got {other:?}"),
    }

    // Only the valid transfer moved money.
    let after = net.balance(&alice.account_id).await;
    assert!(
        after < balance_before - NEAR && after > balance_before - 2 * NEAR,
        "{after}"
    );
    assert_eq!(net.nonce(alice).await, 5);
}

#[tokio::test]
async fn request_resolve_callback_returns_the_output_and_charges_exactly_the_cost() {
    let net = Net::start(true).await;
    let alice_before = net.balance(&net.alice.account_id).await;
    let operator_before = net.balance(&net.operator.account_id).await;

    let request_tx = net.request_execution("hello from alice").await;
    let pending = net.wait_for_pending(|pending| !pending.is_empty()).await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0]["request_id"], 0);
    assert_eq!(pending[0]["sender_id"], "alice.localnet");

    let response = json!({
        "success": true,
        "output": {"Text": "hello from the executor"},
        "resources_used": {"instructions": 5_000_000u64, "time_ms": 12, "compile_time_ms": 3}
    });
    let resolve = net
        .sign(
            &net.operator,
            &net.outlayer,
            vec![function_call(
                "resolve_execution",
                &json!({"request_id": 0, "response": response}),
                30,
                0,
            )],
        )
        .await;
    let resolved = net.commit(resolve).await;
    success_value(&resolved);
    let event = &events(&resolved, "execution_resolved")[0];
    assert_eq!(event["success"], true);

    let outcome = net.final_outcome(request_tx, &net.alice.account_id).await;
    let output: Value = serde_json::from_slice(&success_value(&outcome)).unwrap();
    assert_eq!(
        output, "hello from the executor",
        "the user's transaction returns the output"
    );

    for receipt in &outcome.receipts_outcome {
        println!(
            "  {:<20} burnt {:>7.3} Tgas  {:?}",
            receipt.outcome.executor_id.as_str(),
            receipt.outcome.gas_burnt.as_gas() as f64 / 1e12,
            receipt.outcome.status
        );
    }
    println!(
        "request tx burnt {} yoctoNEAR in total; resolve tx {}",
        tokens_burnt(&outcome),
        tokens_burnt(&resolved)
    );

    let cost = BASE_FEE + 5 * PER_MILLION_INSTRUCTIONS + 12 * PER_MS + 3 * PER_MS;
    let completed = &events(&outcome, "execution_completed")[0];
    assert_eq!(completed["payment_charged"], cost.to_string());
    assert_eq!(
        completed["payment_refunded"],
        (REQUEST_DEPOSIT - cost).to_string()
    );
    assert_eq!(
        net.balance(&net.alice.account_id).await,
        alice_before - cost - tokens_burnt(&outcome),
        "the user pays exactly the cost plus the gas burnt on its behalf"
    );
    assert_eq!(
        net.balance(&net.operator.account_id).await,
        operator_before - tokens_burnt(&resolved),
        "the operator pays only its gas"
    );
    net.wait_for_pending(|pending| pending.is_empty()).await;

    // A second resolve fails in the contract, and costs the operator only gas.
    let again = net
        .sign(
            &net.operator,
            &net.outlayer,
            vec![function_call(
                "resolve_execution",
                &json!({"request_id": 0, "response": response}),
                30,
                0,
            )],
        )
        .await;
    let again = net.commit(again).await;
    match &again.status {
        FinalExecutionStatus::Failure(error) => {
            assert!(
                format!("{error:?}").contains("not found or already resolved"),
                "{error:?}"
            )
        }
        other => panic!("a second resolve must fail, got {other:?}"),
    }
}

#[tokio::test]
async fn unresolved_request_times_out_after_200_blocks_and_refunds_all_but_the_base_fee() {
    let net = Net::start(true).await;
    let alice_before = net.balance(&net.alice.account_id).await;

    let request_tx = net.request_execution("nobody answers").await;
    let outcome = net.final_outcome(request_tx, &net.alice.account_id).await;
    assert_eq!(success_value(&outcome), b"null", "no output on timeout");

    let completed = &events(&outcome, "execution_completed")[0];
    assert_eq!(completed["timed_out"], true);
    assert_eq!(completed["payment_charged"], BASE_FEE.to_string());
    assert_eq!(
        net.balance(&net.alice.account_id).await,
        alice_before - BASE_FEE - tokens_burnt(&outcome)
    );

    // The callback ran exactly the yield timeout after the request created the yield.
    let requested = outcome
        .receipts_outcome
        .iter()
        .find(|o| {
            o.outcome
                .logs
                .iter()
                .any(|l| l.contains("execution_requested"))
        })
        .unwrap();
    let callback = outcome
        .receipts_outcome
        .iter()
        .find(|o| {
            o.outcome
                .logs
                .iter()
                .any(|l| l.contains("execution_completed"))
        })
        .unwrap();
    let requested_at = net.block_height_of(requested.block_hash).await;
    let completed_at = net.block_height_of(callback.block_hash).await;
    assert_eq!(completed_at - requested_at, 200);

    // Too late: the operator's resolve fails and nothing changes for the user.
    let late = net
        .sign(
            &net.operator,
            &net.outlayer,
            vec![function_call(
                "resolve_execution",
                &json!({"request_id": 0, "response": {"success": true, "output": {"Text": "late"},
                        "resources_used": {"instructions": 1, "time_ms": 1}}}),
                30,
                0,
            )],
        )
        .await;
    assert!(matches!(
        net.commit(late).await.status,
        FinalExecutionStatus::Failure(_)
    ));
}

#[tokio::test]
async fn fault_switch_fails_hangs_and_drops_then_recovers() {
    let net = Net::start(false).await;
    let status = || net.client.call(methods::status::RpcStatusRequest);

    // 5xx for the next two requests, then healthy again.
    net.localnet
        .faults()
        .set_for(Fault::HttpError { status: 503 }, 2);
    for _ in 0..2 {
        match status().await {
            Err(JsonRpcError::ServerError(JsonRpcServerError::ResponseStatusError(_))) => {}
            other => panic!("expected a 503, got {other:?}"),
        }
    }
    status().await.unwrap();

    // No answer at all until cleared (through the admin endpoint).
    let admin = format!("{}/admin/fault", net.localnet.rpc_url());
    let http = reqwest::Client::new();
    let set = http
        .post(&admin)
        .json(&json!({"kind": "no_answer"}))
        .send()
        .await
        .unwrap();
    assert!(set.status().is_success());
    assert!(
        tokio::time::timeout(Duration::from_millis(500), status())
            .await
            .is_err(),
        "a hung node never answers"
    );
    let cleared = http.delete(&admin).send().await.unwrap();
    assert!(cleared.status().is_success());
    status().await.unwrap();

    // Accepted, then dropped: the hash comes back but the transaction never happens.
    let before = net.balance(&net.alice.account_id).await;
    let nonce_before = net.nonce(&net.alice).await;
    let tx = net
        .sign(&net.alice, &net.bob.account_id, vec![transfer(NEAR)])
        .await;
    net.localnet.faults().set(Fault::DropTransactions);
    let sent = net
        .client
        .call(methods::send_tx::RpcSendTransactionRequest {
            signed_transaction: tx.clone(),
            wait_until: TxExecutionStatus::None,
        })
        .await
        .unwrap();
    assert_eq!(sent.final_execution_status, TxExecutionStatus::None);
    assert!(sent.final_execution_outcome.is_none());
    let hash = net
        .client
        .call(methods::broadcast_tx_async::RpcBroadcastTxAsyncRequest {
            signed_transaction: tx.clone(),
        })
        .await
        .unwrap();
    assert_eq!(hash, tx.get_hash());
    net.localnet
        .wait_for_height(net.localnet.head_height() + 3)
        .await;
    let lookup = net
        .client
        .call(methods::tx::RpcTransactionStatusRequest {
            transaction_info: TransactionInfo::TransactionId {
                tx_hash: hash,
                sender_account_id: net.alice.account_id.clone(),
            },
            wait_until: TxExecutionStatus::Final,
        })
        .await;
    assert!(
        matches!(
            lookup,
            Err(JsonRpcError::ServerError(JsonRpcServerError::HandlerError(
                RpcTransactionError::UnknownTransaction { .. }
            )))
        ),
        "{lookup:?}"
    );
    assert_eq!(net.balance(&net.alice.account_id).await, before);
    assert_eq!(net.nonce(&net.alice).await, nonce_before);

    // Re-sent once the node behaves, the same transaction goes through.
    net.localnet.faults().clear();
    success_value(&net.commit(tx).await);
    assert!(net.balance(&net.alice.account_id).await < before - NEAR + NEAR / 100);
}

/// An output over the 1024-byte yield payload goes in two steps, with large arguments over RPC.
#[tokio::test]
async fn large_output_goes_in_two_steps() {
    let net = Net::start(true).await;
    let request_tx = net.request_execution("large please").await;
    net.wait_for_pending(|pending| !pending.is_empty()).await;
    let large = "x".repeat(3000);
    let resources = json!({"instructions": 1_000_000u64, "time_ms": 2});

    let inline = net
        .sign(
            &net.operator,
            &net.outlayer,
            vec![function_call(
                "resolve_execution",
                &json!({"request_id": 0, "response": {"success": true, "output": {"Text": large},
                        "resources_used": resources}}),
                30,
                0,
            )],
        )
        .await;
    match net.commit(inline).await.status {
        FinalExecutionStatus::Failure(error) => {
            assert!(format!("{error:?}").contains("1024-byte"), "{error:?}")
        }
        other => panic!("an inline resolve over 1024 bytes must fail, got {other:?}"),
    }
    let submit = net
        .sign(
            &net.operator,
            &net.outlayer,
            vec![function_call(
                "submit_execution_output",
                &json!({"request_id": 0, "output": {"Text": large}}),
                30,
                0,
            )],
        )
        .await;
    success_value(&net.commit(submit).await);
    let resolve = net
        .sign(
            &net.operator,
            &net.outlayer,
            vec![function_call(
                "resolve_execution",
                &json!({"request_id": 0, "response": {"success": true, "resources_used": resources}}),
                30,
                0,
            )],
        )
        .await;
    success_value(&net.commit(resolve).await);

    let outcome = net.final_outcome(request_tx, &net.alice.account_id).await;
    let output: Value = serde_json::from_slice(&success_value(&outcome)).unwrap();
    assert_eq!(output, large.as_str());
}

/// Waiting calls end as nearcore's do: TIMEOUT_ERROR (HTTP 408) once the wait is over, while the
/// transaction goes on; its status can be asked for later.
#[tokio::test]
async fn waiting_calls_time_out_and_the_transaction_goes_on() {
    let net = Net::start_with(true, Duration::from_millis(500)).await;
    let args = json!({
        "code_source": {"repo": "https://github.com/outlayer/examples",
                        "commit": "0123456789abcdef0123456789abcdef01234567"},
        "resource_limits": {"max_instructions": 1_000_000_000u64, "max_memory_mb": 128,
                            "max_execution_seconds": 10},
        "input_data": "wait for me"
    });
    let tx = net
        .sign(
            &net.alice,
            &net.outlayer,
            vec![function_call(
                "request_execution",
                &args,
                50,
                REQUEST_DEPOSIT,
            )],
        )
        .await;
    let tx_hash = tx.get_hash();
    let committed = net
        .client
        .call(methods::broadcast_tx_commit::RpcBroadcastTxCommitRequest {
            signed_transaction: tx,
        })
        .await;
    assert!(
        matches!(
            committed,
            Err(JsonRpcError::ServerError(
                JsonRpcServerError::ResponseStatusError(
                    near_jsonrpc_client::errors::JsonRpcServerResponseStatusError::TimeoutError
                )
            ))
        ),
        "the yield keeps the transaction open past the wait: {committed:?}"
    );
    // Each wait is short here, so ask again until included (a loaded machine may lag).
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let included = loop {
        let status = net
            .client
            .call(methods::tx::RpcTransactionStatusRequest {
                transaction_info: TransactionInfo::TransactionId {
                    tx_hash,
                    sender_account_id: net.alice.account_id.clone(),
                },
                wait_until: TxExecutionStatus::Included,
            })
            .await;
        match status {
            Ok(status) => break status,
            Err(error) if tokio::time::Instant::now() < deadline => {
                println!("not included yet: {error}");
            }
            Err(error) => panic!("never included: {error:?}"),
        }
    };
    assert_eq!(
        included.final_execution_status,
        TxExecutionStatus::IncludedFinal
    );
    assert!(matches!(
        included.final_execution_outcome,
        Some(FinalExecutionOutcomeViewEnum::FinalExecutionOutcome(ref outcome))
            if outcome.status == FinalExecutionStatus::Started
    ));
    net.wait_for_pending(|pending| pending.len() == 1).await;
}

/// Many requests in flight at once (several land in one block): each yield gets its own data id
/// and each user gets the answer to its own input. Prints how long the run took.
#[tokio::test]
async fn many_requests_in_flight_each_get_their_own_answer() {
    const REQUESTS: u64 = 30;
    let net = Net::start(true).await;
    let started = std::time::Instant::now();
    let block_hash = net.final_block_hash().await;
    let first_nonce = net.nonce(&net.alice).await + 1;
    let mut request_txs = Vec::new();
    for i in 0..REQUESTS {
        let args = json!({
            "code_source": {"repo": "https://github.com/outlayer/examples",
                            "commit": "0123456789abcdef0123456789abcdef01234567"},
            "resource_limits": {"max_instructions": 1_000_000_000u64, "max_memory_mb": 128,
                                "max_execution_seconds": 10},
            "input_data": format!("input {i}")
        });
        let tx = net.sign_with(
            &net.alice,
            &net.alice.secret,
            first_nonce + i,
            block_hash,
            &net.outlayer,
            vec![function_call(
                "request_execution",
                &args,
                50,
                REQUEST_DEPOSIT,
            )],
        );
        let hash = net
            .client
            .call(methods::broadcast_tx_async::RpcBroadcastTxAsyncRequest {
                signed_transaction: tx,
            })
            .await
            .unwrap();
        request_txs.push((hash, format!("input {i}")));
    }
    let pending = net
        .wait_for_pending(|pending| pending.len() as u64 == REQUESTS)
        .await;
    let data_ids: std::collections::BTreeSet<&str> = pending
        .iter()
        .map(|p| p["data_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        data_ids.len() as u64,
        REQUESTS,
        "every yield has its own data id"
    );

    let block_hash = net.final_block_hash().await;
    let operator_nonce = net.nonce(&net.operator).await + 1;
    for (i, request) in pending.iter().enumerate() {
        let response = json!({
            "success": true,
            "output": {"Text": format!("answer to {}", request["input_data"].as_str().unwrap())},
            "resources_used": {"instructions": 1_000_000u64, "time_ms": 1}
        });
        let tx = net.sign_with(
            &net.operator,
            &net.operator.secret,
            operator_nonce + i as u64,
            block_hash,
            &net.outlayer,
            vec![function_call(
                "resolve_execution",
                &json!({"request_id": request["request_id"], "response": response}),
                30,
                0,
            )],
        );
        net.client
            .call(methods::broadcast_tx_async::RpcBroadcastTxAsyncRequest {
                signed_transaction: tx,
            })
            .await
            .unwrap();
    }
    for (hash, input) in &request_txs {
        let outcome = net.final_outcome(*hash, &net.alice.account_id).await;
        let output: Value = serde_json::from_slice(&success_value(&outcome)).unwrap();
        assert_eq!(output, format!("answer to {input}"));
    }
    net.wait_for_pending(|pending| pending.is_empty()).await;
    println!(
        "{REQUESTS} requests resolved through RPC in {:.1} s ({} ms blocks, debug build)",
        started.elapsed().as_secs_f64(),
        BLOCK_TIME.as_millis()
    );
}

/// A client contract of the kind our users write, in WAT: `request(args)` forwards its deposit to
/// `request_execution` with `args` and chains its own `on_result` callback, which stores what it
/// receives (or "failed") and returns it; `get_output` shows the stored value.
const CLIENT_WAT: &str = r#"
(module
  (import "env" "input" (func $input (param i64)))
  (import "env" "read_register" (func $read_register (param i64 i64)))
  (import "env" "register_len" (func $register_len (param i64) (result i64)))
  (import "env" "value_return" (func $value_return (param i64 i64)))
  (import "env" "storage_write" (func $storage_write (param i64 i64 i64 i64 i64) (result i64)))
  (import "env" "storage_read" (func $storage_read (param i64 i64 i64) (result i64)))
  (import "env" "attached_deposit" (func $attached_deposit (param i64)))
  (import "env" "promise_create"
    (func $promise_create (param i64 i64 i64 i64 i64 i64 i64 i64) (result i64)))
  (import "env" "promise_then"
    (func $promise_then (param i64 i64 i64 i64 i64 i64 i64 i64 i64) (result i64)))
  (import "env" "promise_return" (func $promise_return (param i64)))
  (import "env" "promise_result" (func $promise_result (param i64 i64) (result i64)))
  (memory 1)
  (data (i32.const 100) "outlayer.localnet")
  (data (i32.const 200) "request_execution")
  (data (i32.const 300) "client.localnet")
  (data (i32.const 400) "on_result")
  (data (i32.const 500) "out")
  (data (i32.const 600) "\"failed\"")
  (func (export "request")
    (local $request i64) (local $len i64)
    ;; bytes 0..16: the attached deposit, forwarded; bytes 16..32 stay zero for the callback.
    (call $attached_deposit (i64.const 0))
    (call $input (i64.const 0))
    (local.set $len (call $register_len (i64.const 0)))
    (call $read_register (i64.const 0) (i64.const 4096))
    (local.set $request (call $promise_create
      (i64.const 17) (i64.const 100) (i64.const 17) (i64.const 200)
      (local.get $len) (i64.const 4096) (i64.const 0) (i64.const 50000000000000)))
    (call $promise_return (call $promise_then (local.get $request)
      (i64.const 15) (i64.const 300) (i64.const 9) (i64.const 400)
      (i64.const 0) (i64.const 0) (i64.const 16) (i64.const 20000000000000))))
  (func (export "on_result")
    (if (i64.eq (call $promise_result (i64.const 0) (i64.const 0)) (i64.const 1))
      (then
        (call $read_register (i64.const 0) (i64.const 4096))
        (drop (call $storage_write (i64.const 3) (i64.const 500)
          (call $register_len (i64.const 0)) (i64.const 4096) (i64.const 1)))
        (call $value_return (call $register_len (i64.const 0)) (i64.const 4096)))
      (else
        (drop (call $storage_write (i64.const 3) (i64.const 500) (i64.const 8) (i64.const 600)
          (i64.const 1)))
        (call $value_return (i64.const 8) (i64.const 600)))))
  (func (export "get_output")
    (if (i64.eq (call $storage_read (i64.const 3) (i64.const 500) (i64.const 0)) (i64.const 1))
      (then
        (call $read_register (i64.const 0) (i64.const 4096))
        (call $value_return (call $register_len (i64.const 0)) (i64.const 4096))))))
"#;

#[tokio::test]
async fn client_contract_receives_the_output_in_its_own_callback() {
    let dir = tempfile::tempdir().unwrap();
    let client_wasm = dir.path().join("client.wasm");
    std::fs::write(&client_wasm, wat::parse_str(CLIENT_WAT).unwrap()).unwrap();
    let alice = Key::new("alice.localnet");
    let operator = Key::new("operator.localnet");
    let client_id = account("client.localnet");
    let config = LocalnetConfig::default()
        .with_block_time(BLOCK_TIME)
        .with_tx_wait_timeout(DEADLINE)
        .with_account(alice.account_id.clone(), 100 * NEAR, alice.public_key())
        .with_account(
            operator.account_id.clone(),
            10 * NEAR,
            operator.public_key(),
        )
        .with_contract(client_id.clone(), 10 * NEAR, client_wasm, None)
        .with_contract(
            account("outlayer.localnet"),
            10 * NEAR,
            contract_wasm(),
            Some(InitCall {
                method: "new".to_string(),
                args: json!({"owner_id": "alice.localnet", "operator_id": "operator.localnet"}),
            }),
        );
    let localnet = Localnet::start(config).await.unwrap();
    let net = Net {
        rpc: Rpc::connect(&localnet.rpc_url()),
        localnet,
        bob: Key::new("bob.localnet"),
        alice,
        operator,
        outlayer: account("outlayer.localnet"),
    };
    let alice_before = net.balance(&net.alice.account_id).await;
    let client_before = net.balance(&client_id).await;

    let args = json!({
        "code_source": {"repo": "https://github.com/outlayer/examples",
                        "commit": "0123456789abcdef0123456789abcdef01234567"},
        "resource_limits": {"max_instructions": 1_000_000_000u64, "max_memory_mb": 128,
                            "max_execution_seconds": 10},
        "input_data": "through a contract"
    });
    let tx = net
        .sign(
            &net.alice,
            &client_id,
            vec![function_call("request", &args, 150, REQUEST_DEPOSIT)],
        )
        .await;
    let request_tx = net
        .client
        .call(methods::broadcast_tx_async::RpcBroadcastTxAsyncRequest {
            signed_transaction: tx,
        })
        .await
        .unwrap();
    let pending = net.wait_for_pending(|pending| !pending.is_empty()).await;
    assert_eq!(
        pending[0]["sender_id"], "client.localnet",
        "the contract is the sender"
    );

    let response = json!({"success": true, "output": {"Text": "for the client"},
                          "resources_used": {"instructions": 1_000_000u64, "time_ms": 2}});
    let resolve = net
        .sign(
            &net.operator,
            &net.outlayer,
            vec![function_call(
                "resolve_execution",
                &json!({"request_id": 0, "response": response}),
                30,
                0,
            )],
        )
        .await;
    success_value(&net.commit(resolve).await);

    let outcome = net.final_outcome(request_tx, &net.alice.account_id).await;
    let returned: Value = serde_json::from_slice(&success_value(&outcome)).unwrap();
    assert_eq!(
        returned, "for the client",
        "the callback's value ends the user's transaction"
    );
    let stored: Value = {
        let response = net
            .client
            .call(methods::query::RpcQueryRequest {
                block_reference: BlockReference::Finality(Finality::Final),
                request: QueryRequest::CallFunction {
                    account_id: client_id.clone(),
                    method_name: "get_output".to_string(),
                    args: FunctionArgs::from(Vec::new()),
                },
            })
            .await
            .unwrap();
        match response.kind {
            QueryResponseKind::CallResult(result) => {
                serde_json::from_slice(&result.result).unwrap()
            }
            other => panic!("expected a call result, got {other:?}"),
        }
    };
    assert_eq!(
        stored, "for the client",
        "the client contract stored the output"
    );

    let cost = BASE_FEE + PER_MILLION_INSTRUCTIONS + 2 * PER_MS;
    assert_eq!(
        events(&outcome, "execution_completed")[0]["payment_refunded"],
        (REQUEST_DEPOSIT - cost).to_string()
    );
    assert_eq!(
        net.balance(&net.alice.account_id).await,
        alice_before - REQUEST_DEPOSIT - tokens_burnt(&outcome),
        "the user pays the deposit and the gas; the refund goes to the contract that asked"
    );
    // The client gets the refund plus its 30 % share of the gas its own calls burnt.
    let client_burnt: u128 = outcome
        .receipts_outcome
        .iter()
        .filter(|o| o.outcome.executor_id == client_id)
        .map(|o| o.outcome.tokens_burnt.as_yoctonear())
        .sum();
    let client_gain = net.balance(&client_id).await - client_before;
    assert!(
        client_gain >= REQUEST_DEPOSIT - cost
            && client_gain < REQUEST_DEPOSIT - cost + client_burnt * 3 / 10 + 1,
        "client gained {client_gain}, refund {}, its calls burnt {client_burnt}",
        REQUEST_DEPOSIT - cost
    );
}

#[tokio::test]
async fn a_missing_wasm_is_a_clear_genesis_error() {
    let key = Key::new("alice.localnet");
    let config = LocalnetConfig::default()
        .with_account(key.account_id.clone(), NEAR, key.public_key())
        .with_contract(
            account("outlayer.localnet"),
            NEAR,
            PathBuf::from("/nonexistent/outlayer_contract.wasm"),
            None,
        );
    let error = match Localnet::start(config).await {
        Ok(_) => panic!("genesis with a missing wasm must fail"),
        Err(error) => error.to_string(),
    };
    assert!(
        error.contains("/nonexistent/outlayer_contract.wasm"),
        "{error}"
    );
}

// ---- What a standard NEAR client needs (issue 16 item 7) ----

impl Net {
    async fn query(&self, request: QueryRequest) -> Result<QueryResponseKind, String> {
        self.client
            .call(methods::query::RpcQueryRequest {
                block_reference: BlockReference::Finality(Finality::Final),
                request,
            })
            .await
            .map(|response| response.kind)
            .map_err(|e| format!("{e:?}"))
    }

    async fn access_key(
        &self,
        account_id: &AccountId,
        public_key: &PublicKey,
    ) -> Option<AccessKeyView> {
        match self
            .query(QueryRequest::ViewAccessKey {
                account_id: account_id.clone(),
                public_key: public_key.clone(),
            })
            .await
        {
            Ok(QueryResponseKind::AccessKey(view)) => Some(view),
            Err(error) if error.contains("UnknownAccessKey") => None,
            other => panic!("expected an access key view, got {other:?}"),
        }
    }

    /// Sends and waits for the final outcome (status may be a failure).
    async fn run(
        &self,
        key: &Key,
        receiver: &AccountId,
        actions: Vec<Action>,
    ) -> FinalExecutionOutcomeView {
        let tx = self.sign(key, receiver, actions).await;
        self.commit(tx).await
    }
}

/// A function-call key restricted to the OutLayer contract's methods, as the operator's key pool adds.
fn function_call_key(receiver: &AccountId, methods: &[&str], allowance: Option<u128>) -> AccessKey {
    AccessKey {
        nonce: 0,
        permission: AccessKeyPermission::FunctionCall(FunctionCallPermission {
            allowance: allowance.map(Balance::from_yoctonear),
            receiver_id: receiver.to_string(),
            method_names: methods.iter().map(|m| m.to_string()).collect(),
        }),
    }
}

fn add_key(public_key: PublicKey, access_key: AccessKey) -> Action {
    Action::AddKey(Box::new(AddKeyAction {
        public_key,
        access_key,
    }))
}

#[tokio::test]
async fn protocol_config_is_nearcores_for_the_protocol_version() {
    let net = Net::start(false).await;
    #[allow(deprecated)]
    let config = net
        .client
        .call(
            methods::EXPERIMENTAL_protocol_config::RpcProtocolConfigRequest {
                block_reference: BlockReference::Finality(Finality::Final),
            },
        )
        .await
        .unwrap();
    let expected = near_parameters::RuntimeConfigStore::new(None)
        .get_config(config.protocol_version)
        .clone();
    assert_eq!(config.chain_id, "localnet");
    assert_eq!(config.protocol_version, e2e_contract_vm::PROTOCOL_VERSION);
    // What near-api-js's getBalance / getState read.
    assert_eq!(
        config.runtime_config.storage_amount_per_byte,
        expected.fees.storage_usage_config.storage_amount_per_byte
    );
    assert_eq!(
        config
            .runtime_config
            .wasm_config
            .limit_config
            .max_total_prepaid_gas,
        Gas::from_teragas(1_000)
    );
    assert_eq!(config.min_gas_price.as_yoctonear(), 100_000_000);
    assert!(config.genesis_time.timestamp() > 0);

    // An unknown block is nearcore's UNKNOWN_BLOCK.
    #[allow(deprecated)]
    let unknown = net
        .client
        .call(
            methods::EXPERIMENTAL_protocol_config::RpcProtocolConfigRequest {
                block_reference: BlockReference::BlockId(near_primitives::types::BlockId::Height(
                    1_000_000,
                )),
            },
        )
        .await;
    assert!(
        format!("{unknown:?}").contains("UnknownBlock"),
        "{unknown:?}"
    );
}

#[tokio::test]
async fn access_key_list_shows_every_key_with_its_permission_and_pages() {
    let net = Net::start(true).await;
    let alice = &net.alice;
    let pool_key = secret("pool-1").public_key();
    let restricted = function_call_key(&net.outlayer, &["resolve_execution"], None);
    let outcome = net
        .run(
            alice,
            &alice.account_id,
            vec![add_key(pool_key.clone(), restricted.clone())],
        )
        .await;
    success_value(&outcome);

    let list = |after_key, limit| {
        net.query(QueryRequest::ViewAccessKeyList {
            account_id: alice.account_id.clone(),
            after_key,
            limit,
        })
    };
    let Ok(QueryResponseKind::AccessKeyList(all)) = list(None, None).await else {
        panic!("expected an access key list");
    };
    assert_eq!(all.keys.len(), 2, "{all:?}");
    assert_eq!(all.last_key, None);
    let by_key = |key: &PublicKey| {
        all.keys
            .iter()
            .find(|info| info.public_key == PublicKeyHandle::from(key.clone()))
            .map(|info| info.access_key.permission.clone())
    };
    assert_eq!(
        by_key(&alice.public_key()),
        Some(AccessKeyPermissionView::FullAccess)
    );
    assert_eq!(
        by_key(&pool_key),
        Some(AccessKeyPermissionView::from(restricted.permission))
    );

    // Paged: one key, then the rest after the cursor.
    let one = NonZeroU32::new(1);
    let Ok(QueryResponseKind::AccessKeyList(first)) = list(None, one).await else {
        panic!("expected a page");
    };
    assert_eq!(first.keys.len(), 1);
    let cursor = first.last_key.clone().expect("a cursor while keys remain");
    let Ok(QueryResponseKind::AccessKeyList(second)) = list(Some(cursor), one).await else {
        panic!("expected a page");
    };
    assert_eq!(second.keys.len(), 1);
    assert_eq!(second.last_key, None);
    assert_ne!(first.keys[0].public_key, second.keys[0].public_key);

    let missing = net
        .query(QueryRequest::ViewAccessKeyList {
            account_id: account("ghost.localnet"),
            after_key: None,
            limit: None,
        })
        .await;
    assert!(
        format!("{missing:?}").contains("UnknownAccount"),
        "{missing:?}"
    );
}

#[tokio::test]
async fn view_state_lists_the_contracts_storage_by_prefix() {
    let net = Net::start(true).await;
    let view_state = |prefix: &[u8], limit| {
        net.query(QueryRequest::ViewState {
            account_id: net.outlayer.clone(),
            prefix: StoreKey::from(prefix.to_vec()),
            after_key: None,
            limit,
            include_proof: false,
        })
    };
    // near-sdk keeps the contract struct under "STATE".
    let Ok(QueryResponseKind::ViewState(all)) = view_state(b"", None).await else {
        panic!("expected a state view");
    };
    assert!(!all.values.is_empty());
    let Ok(QueryResponseKind::ViewState(state)) = view_state(b"STATE", None).await else {
        panic!("expected a state view");
    };
    assert_eq!(state.values.len(), 1, "{state:?}");
    let key: &[u8] = state.values[0].key.as_ref();
    assert_eq!(key, b"STATE");
    assert!(all.values.iter().any(|item| item == &state.values[0]));
    let Ok(QueryResponseKind::ViewState(none)) = view_state(b"no such prefix", None).await else {
        panic!("expected a state view");
    };
    assert!(none.values.is_empty());
    // A page of one names the cursor when more entries remain.
    if all.values.len() > 1 {
        let Ok(QueryResponseKind::ViewState(page)) = view_state(b"", NonZeroU32::new(1)).await
        else {
            panic!("expected a state view");
        };
        assert_eq!(page.values.len(), 1);
        assert_eq!(page.last_key.as_ref(), Some(&page.values[0].key));
    }
    // An account without code has an empty state.
    let Ok(QueryResponseKind::ViewState(plain)) = net
        .query(QueryRequest::ViewState {
            account_id: net.bob.account_id.clone(),
            prefix: StoreKey::from(Vec::new()),
            after_key: None,
            limit: None,
            include_proof: false,
        })
        .await
    else {
        panic!("expected a state view");
    };
    assert!(plain.values.is_empty());
}

#[tokio::test]
async fn a_function_call_key_signs_only_what_its_permission_allows() {
    let net = Net::start(true).await;
    let operator = &net.operator;
    let pool = Key {
        account_id: operator.account_id.clone(),
        secret: secret("operator-pool-1"),
    };
    let outcome = net
        .run(
            operator,
            &operator.account_id,
            vec![add_key(
                pool.public_key(),
                function_call_key(&net.outlayer, &["get_stats", "get_config"], Some(NEAR / 20)),
            )],
        )
        .await;
    success_value(&outcome);
    let added = net
        .access_key(&operator.account_id, &pool.public_key())
        .await
        .unwrap();
    // nearcore starts a new key's nonce at (block height - 1) × 10⁶.
    assert_eq!(added.nonce % 1_000_000, 0);
    assert!(added.nonce > 0);

    // Allowed: one call, no deposit, to the contract, a listed method.
    let allowed = net
        .run(
            &pool,
            &net.outlayer,
            vec![function_call("get_stats", &json!({}), 10, 0)],
        )
        .await;
    success_value(&allowed);
    let after = net
        .access_key(&operator.account_id, &pool.public_key())
        .await
        .unwrap();
    let AccessKeyPermissionView::FunctionCall {
        allowance: Some(left),
        ..
    } = after.permission
    else {
        panic!("expected a function-call key, got {:?}", after.permission);
    };
    assert!(
        left.as_yoctonear() < NEAR / 20,
        "the gas came out of the allowance"
    );

    let rejected = |actions: Vec<Action>, receiver: AccountId| {
        let pool = &pool;
        let net = &net;
        async move {
            let tx = net.sign(pool, &receiver, actions).await;
            invalid_tx(
                net.client
                    .call(methods::broadcast_tx_commit::RpcBroadcastTxCommitRequest {
                        signed_transaction: tx,
                    })
                    .await,
            )
        }
    };
    use near_primitives::errors::InvalidAccessKeyError as E;
    let error = |e| InvalidTxError::InvalidAccessKeyError(e);
    assert_eq!(
        rejected(
            vec![function_call("set_paused", &json!({"paused": true}), 10, 0)],
            net.outlayer.clone()
        )
        .await,
        error(E::MethodNameMismatch {
            method_name: "set_paused".to_string()
        })
    );
    assert!(matches!(
        rejected(
            vec![function_call("get_stats", &json!({}), 10, 0)],
            net.bob.account_id.clone()
        )
        .await,
        InvalidTxError::InvalidAccessKeyError(E::ReceiverMismatch { .. })
    ));
    assert_eq!(
        rejected(vec![transfer(1)], net.outlayer.clone()).await,
        error(E::RequiresFullAccess)
    );
    assert_eq!(
        rejected(
            vec![function_call("get_stats", &json!({}), 10, 1)],
            net.outlayer.clone()
        )
        .await,
        error(E::DepositWithFunctionCall)
    );
    assert!(matches!(
        // 600 Tgas at the fixed price (0.06 NEAR) is more than the 0.05 NEAR allowance.
        rejected(
            vec![function_call("get_stats", &json!({}), 600, 0)],
            net.outlayer.clone()
        )
        .await,
        InvalidTxError::InvalidAccessKeyError(E::NotEnoughAllowance { .. })
    ));
}

#[tokio::test]
async fn delete_key_removes_the_key_and_its_signatures() {
    let net = Net::start(false).await;
    let alice = &net.alice;
    let spare = Key {
        account_id: alice.account_id.clone(),
        secret: secret("alice-spare"),
    };
    success_value(
        &net.run(
            alice,
            &alice.account_id,
            vec![add_key(spare.public_key(), AccessKey::full_access())],
        )
        .await,
    );
    // The new full-access key signs.
    success_value(
        &net.run(&spare, &net.bob.account_id, vec![transfer(NEAR)])
            .await,
    );
    success_value(
        &net.run(
            alice,
            &alice.account_id,
            vec![Action::DeleteKey(Box::new(DeleteKeyAction {
                public_key: spare.public_key(),
            }))],
        )
        .await,
    );
    assert_eq!(
        net.access_key(&alice.account_id, &spare.public_key()).await,
        None
    );
    let tx = net.sign_with(
        &spare,
        &spare.secret,
        u64::MAX / 2,
        net.final_block_hash().await,
        &net.bob.account_id,
        vec![transfer(1)],
    );
    assert!(matches!(
        invalid_tx(
            net.client
                .call(methods::broadcast_tx_commit::RpcBroadcastTxCommitRequest {
                    signed_transaction: tx
                })
                .await
        ),
        InvalidTxError::InvalidAccessKeyError(_)
    ));
    // Deleting it again fails the receipt with nearcore's error.
    let again = net
        .run(
            alice,
            &alice.account_id,
            vec![Action::DeleteKey(Box::new(DeleteKeyAction {
                public_key: spare.public_key(),
            }))],
        )
        .await;
    assert!(
        format!("{:?}", again.status).contains("DeleteKeyDoesNotExist"),
        "{:?}",
        again.status
    );
}

#[tokio::test]
async fn create_account_with_a_key_and_a_transfer() {
    let net = Net::start(false).await;
    let alice = &net.alice;
    let sub = Key::new("app.alice.localnet");
    let outcome = net
        .run(
            alice,
            &sub.account_id,
            vec![
                Action::CreateAccount(CreateAccountAction {}),
                transfer(5 * NEAR),
                add_key(sub.public_key(), AccessKey::full_access()),
            ],
        )
        .await;
    success_value(&outcome);
    assert_eq!(net.balance(&sub.account_id).await, 5 * NEAR);
    // The new account signs with its key.
    success_value(
        &net.run(&sub, &net.bob.account_id, vec![transfer(NEAR)])
            .await,
    );

    // Existing accounts cannot be created again; others' sub-accounts cannot be created at all;
    // and a failed creation leaves nothing behind and refunds the deposit.
    let before = net.balance(&alice.account_id).await;
    let exists = net
        .run(
            alice,
            &sub.account_id,
            vec![
                Action::CreateAccount(CreateAccountAction {}),
                transfer(NEAR),
            ],
        )
        .await;
    assert!(
        format!("{:?}", exists.status).contains("AccountAlreadyExists"),
        "{:?}",
        exists.status
    );
    let foreign = account("app.bob.localnet");
    let not_allowed = net
        .run(
            alice,
            &foreign,
            vec![
                Action::CreateAccount(CreateAccountAction {}),
                transfer(NEAR),
            ],
        )
        .await;
    assert!(
        format!("{:?}", not_allowed.status).contains("CreateAccountNotAllowed"),
        "{:?}",
        not_allowed.status
    );
    assert!(
        net.query(QueryRequest::ViewAccount {
            account_id: foreign
        })
        .await
        .is_err()
    );
    let spent = before - net.balance(&alice.account_id).await;
    assert_eq!(
        spent,
        tokens_burnt(&exists) + tokens_burnt(&not_allowed),
        "only gas was spent"
    );
    // Keys of another account cannot be added by a stranger.
    let stranger = net
        .run(
            alice,
            &net.bob.account_id,
            vec![add_key(sub.public_key(), AccessKey::full_access())],
        )
        .await;
    assert!(
        format!("{:?}", stranger.status).contains("ActorNoPermission"),
        "{:?}",
        stranger.status
    );
}

#[tokio::test]
async fn gas_above_the_protocol_limit_is_refused() {
    let net = Net::start(false).await;
    let tx = net
        .sign(
            &net.alice,
            &net.bob.account_id,
            vec![
                function_call("a", &json!({}), 600, 0),
                function_call("b", &json!({}), 401, 0),
            ],
        )
        .await;
    let error = invalid_tx(
        net.client
            .call(methods::broadcast_tx_commit::RpcBroadcastTxCommitRequest {
                signed_transaction: tx,
            })
            .await,
    );
    assert_eq!(
        error,
        InvalidTxError::ActionsValidation(ActionsValidationError::TotalPrepaidGasExceeded {
            total_prepaid_gas: Gas::from_teragas(1_001),
            limit: Gas::from_teragas(1_000),
        })
    );
}

#[tokio::test]
async fn an_oversized_body_gets_a_json_rpc_error() {
    let net = Net::start(false).await;
    let body = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"status\",\"params\":[\"{}\"]}}",
        "x".repeat(11 * 1024 * 1024)
    );
    let response = reqwest::Client::new()
        .post(net.localnet.rpc_url())
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::BAD_REQUEST);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["jsonrpc"], "2.0");
    assert_eq!(
        answer["error"]["name"], "REQUEST_VALIDATION_ERROR",
        "{answer}"
    );
    assert_eq!(answer["error"]["cause"]["name"], "PARSE_ERROR", "{answer}");
    assert!(
        answer["error"]["cause"]["info"]["error_message"]
            .as_str()
            .unwrap_or_default()
            .contains("10485760 bytes"),
        "{answer}"
    );
}

#[tokio::test]
async fn nonces_above_the_committed_one_wait_in_the_pool_in_any_order() {
    // Slow blocks, so both submissions land between the same two blocks.
    let alice = Key::new("alice.localnet");
    let bob = Key::new("bob.localnet");
    let localnet = Localnet::start(
        LocalnetConfig::default()
            .with_block_time(Duration::from_secs(2))
            .with_account(alice.account_id.clone(), 100 * NEAR, alice.public_key())
            .with_account(bob.account_id.clone(), 10 * NEAR, bob.public_key()),
    )
    .await
    .unwrap();
    let net = Net {
        rpc: Rpc::connect(&localnet.rpc_url()),
        localnet,
        alice,
        bob,
        operator: Key::new("operator.localnet"),
        outlayer: account("outlayer.localnet"),
    };
    let committed = net.nonce(&net.alice).await;
    // Start right after a block, so the next one is ~2 s away.
    let block_hash = net.final_block_hash().await;
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while net.final_block_hash().await == block_hash {
        assert!(tokio::time::Instant::now() < deadline, "no new block");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let block_hash = net.final_block_hash().await;
    let sign = |nonce, amount| {
        net.sign_with(
            &net.alice,
            &net.alice.secret,
            nonce,
            block_hash,
            &net.bob.account_id,
            vec![transfer(amount)],
        )
    };
    let send = |tx: SignedTransaction| {
        net.client
            .call(methods::broadcast_tx_async::RpcBroadcastTxAsyncRequest {
                signed_transaction: tx,
            })
    };
    // The higher nonce first, then the lower: both above the committed nonce, both accepted.
    let later = send(sign(committed + 2, 2)).await.unwrap();
    let earlier = send(sign(committed + 1, 1)).await.unwrap();
    for tx_hash in [earlier, later] {
        let outcome = net.final_outcome(tx_hash, &net.alice.account_id).await;
        success_value(&outcome);
    }
    assert_eq!(net.nonce(&net.alice).await, committed + 2);
    // Now committed: the same nonce again is stale, as in nearcore.
    let stale = net.sign_with(
        &net.alice,
        &net.alice.secret,
        committed + 1,
        net.final_block_hash().await,
        &net.bob.account_id,
        vec![transfer(3)],
    );
    assert_eq!(
        invalid_tx(
            net.client
                .call(methods::broadcast_tx_commit::RpcBroadcastTxCommitRequest {
                    signed_transaction: stale
                })
                .await
        ),
        InvalidTxError::InvalidNonce {
            tx_nonce: committed + 1,
            ak_nonce: committed + 2
        }
    );
}
