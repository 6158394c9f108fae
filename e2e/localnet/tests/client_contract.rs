//! The example client contract (`examples/client-contract`, a real near-sdk contract) against the real
//! OutLayer contract on the localnet: a user asks through it with a deposit, the test signs the
//! operator's `resolve_execution`, and the answer lands in the client's own callback and view; a
//! request nobody answers times out after 200 blocks and the client records the failure; a request
//! OutLayer rejects sends the deposit back to the user; an input near OutLayer's 256 KiB limit fits
//! the gas the client's README recommends. Every wait ends on a condition with a generous deadline;
//! no timing decides a test.

use std::time::Duration;

use e2e_localnet::Localnet;
use near_jsonrpc_client::{JsonRpcClient, methods};
use near_jsonrpc_primitives::types::query::QueryResponseKind;
use near_jsonrpc_primitives::types::transactions::TransactionInfo;
use near_primitives::action::{Action, FunctionCallAction};
use near_primitives::hash::CryptoHash;
use near_primitives::transaction::{SignedTransaction, Transaction, TransactionV0};
use near_primitives::types::{
    AccountId, Balance, BlockId, BlockReference, Finality, FunctionArgs, Gas,
};
use near_primitives::views::{
    ExecutionOutcomeWithIdView, ExecutionStatusView, FinalExecutionOutcomeView,
    FinalExecutionOutcomeViewEnum, FinalExecutionStatus, QueryRequest, TxExecutionStatus,
};
use outlayer_testkit::localnet::{outlayer_genesis, with_client_contract};
use outlayer_testkit::near::{Key, NEAR, account};
use serde_json::{Value, json};

const BLOCK_TIME: Duration = Duration::from_millis(50);
/// Generous: waits end on conditions, this only bounds a hung test.
const DEADLINE: Duration = Duration::from_secs(120);
/// The OutLayer contract's default base fee (`Pricing::default`): what a failure or timeout costs.
const BASE_FEE: u128 = 1_000_000_000_000_000_000_000;
const PER_MILLION_INSTRUCTIONS: u128 = 100_000_000_000_000;
const PER_MS: u128 = 100_000_000_000_000_000;
/// What the client's README recommends attaching to `ask`.
const ASK_TGAS: u64 = 100;
/// Room for the pending request's storage on top of the estimate: 1,000 bytes at 1e19 yocto each,
/// far more than a small request takes.
const STORAGE_MARGIN: u128 = 1_000 * 10_000_000_000_000_000_000;

/// A localnet with a user (alice), the operator's account, OutLayer and the client contract.
struct Net {
    _localnet: Localnet,
    client: JsonRpcClient,
    alice: Key,
    operator: Key,
    outlayer: AccountId,
    client_contract: AccountId,
}

impl Net {
    async fn start() -> Self {
        let alice = Key::new("alice.localnet");
        let operator = Key::new("operator.localnet");
        let outlayer = account("outlayer.localnet");
        let client_contract = account("client.localnet");
        let config = with_client_contract(outlayer_genesis(100 * NEAR))
            .with_block_time(BLOCK_TIME)
            .with_tx_wait_timeout(DEADLINE);
        let localnet = Localnet::start(config).await.unwrap();
        Self {
            client: JsonRpcClient::connect(localnet.rpc_url()),
            _localnet: localnet,
            alice,
            operator,
            outlayer,
            client_contract,
        }
    }

    async fn query(&self, request: QueryRequest) -> QueryResponseKind {
        self.client
            .call(methods::query::RpcQueryRequest {
                block_reference: BlockReference::Finality(Finality::Final),
                request,
            })
            .await
            .unwrap()
            .kind
    }

    async fn balance(&self, account_id: &AccountId) -> u128 {
        match self
            .query(QueryRequest::ViewAccount {
                account_id: account_id.clone(),
            })
            .await
        {
            QueryResponseKind::ViewAccount(view) => view.amount.as_yoctonear(),
            other => panic!("expected an account view, got {other:?}"),
        }
    }

    async fn view(&self, contract: &AccountId, method: &str, args: Value) -> Value {
        let request = QueryRequest::CallFunction {
            account_id: contract.clone(),
            method_name: method.to_string(),
            args: FunctionArgs::from(serde_json::to_vec(&args).unwrap()),
        };
        match self.query(request).await {
            QueryResponseKind::CallResult(result) => {
                serde_json::from_slice(&result.result).unwrap()
            }
            other => panic!("expected a call result, got {other:?}"),
        }
    }

    /// Signs with the key's next nonce and the final block, as the operator does.
    async fn sign(&self, key: &Key, receiver: &AccountId, action: Action) -> SignedTransaction {
        let nonce = match self
            .query(QueryRequest::ViewAccessKey {
                account_id: key.account_id.clone(),
                public_key: key.public_key(),
            })
            .await
        {
            QueryResponseKind::AccessKey(view) => view.nonce + 1,
            other => panic!("expected an access key view, got {other:?}"),
        };
        let block_hash = self
            .client
            .call(methods::block::RpcBlockRequest {
                block_reference: BlockReference::Finality(Finality::Final),
            })
            .await
            .unwrap()
            .header
            .hash;
        let tx = Transaction::V0(TransactionV0 {
            signer_id: key.account_id.clone(),
            public_key: key.public_key(),
            nonce,
            receiver_id: receiver.clone(),
            block_hash,
            actions: vec![action],
        });
        let (hash, _) = tx.get_hash_and_size();
        SignedTransaction::new(key.secret.sign(hash.as_ref()), tx)
    }

    async fn send(&self, tx: SignedTransaction) -> CryptoHash {
        self.client
            .call(methods::broadcast_tx_async::RpcBroadcastTxAsyncRequest {
                signed_transaction: tx,
            })
            .await
            .unwrap()
    }

    async fn commit(&self, tx: SignedTransaction) -> FinalExecutionOutcomeView {
        self.client
            .call(methods::broadcast_tx_commit::RpcBroadcastTxCommitRequest {
                signed_transaction: tx,
            })
            .await
            .unwrap()
    }

    /// The final outcome of a transaction, once everything it caused (refunds included) ran.
    async fn final_outcome(&self, tx_hash: CryptoHash, sender: &Key) -> FinalExecutionOutcomeView {
        #[allow(deprecated)]
        let request = methods::EXPERIMENTAL_tx_status::RpcTransactionStatusRequest {
            transaction_info: TransactionInfo::TransactionId {
                tx_hash,
                sender_account_id: sender.account_id.clone(),
            },
            wait_until: TxExecutionStatus::Final,
        };
        let response = tokio::time::timeout(DEADLINE, self.client.call(request))
            .await
            .expect("the transaction did not finish in time")
            .unwrap();
        match response.final_execution_outcome {
            Some(FinalExecutionOutcomeViewEnum::FinalExecutionOutcomeWithReceipt(outcome)) => {
                outcome.final_outcome
            }
            other => panic!("expected an outcome with receipts, got {other:?}"),
        }
    }

    async fn block_height_of(&self, block_hash: CryptoHash) -> u64 {
        self.client
            .call(methods::block::RpcBlockRequest {
                block_reference: BlockReference::BlockId(BlockId::Hash(block_hash)),
            })
            .await
            .unwrap()
            .header
            .height
    }

    /// OutLayer's price for the client's default limits, as a client reads it before asking.
    async fn estimate(&self) -> u128 {
        let limits = json!({"max_instructions": 1_000_000_000u64, "max_memory_mb": 128, "max_execution_seconds": 10});
        let estimate = self
            .view(
                &self.outlayer,
                "estimate_execution_cost",
                json!({"resource_limits": limits}),
            )
            .await;
        estimate.as_str().unwrap().parse().unwrap()
    }

    /// Alice asks through the client contract with `deposit`; returns the transaction's hash.
    async fn ask(&self, input: &str, deposit: u128) -> CryptoHash {
        let args = json!({
            "repo": "https://github.com/outlayer/examples",
            "commit": "0123456789abcdef0123456789abcdef01234567",
            "input": input,
        });
        let tx = self
            .sign(
                &self.alice,
                &self.client_contract,
                function_call("ask", &args, ASK_TGAS, deposit),
            )
            .await;
        self.send(tx).await
    }

    async fn answer(&self, question_id: u64) -> Value {
        self.view(
            &self.client_contract,
            "get_answer",
            json!({"question_id": question_id}),
        )
        .await
    }

    /// What the client contract gained, given its balance before: OutLayer's refund plus nearcore's 30 %
    /// share of the gas its own receipts burnt. Returns (gain, that share's upper bound).
    async fn client_gain(&self, before: u128, outcome: &FinalExecutionOutcomeView) -> (u128, u128) {
        let burnt_by_client: u128 = outcome
            .receipts_outcome
            .iter()
            .filter(|o| o.outcome.executor_id == self.client_contract)
            .map(|o| o.outcome.tokens_burnt.as_yoctonear())
            .sum();
        (
            self.balance(&self.client_contract).await - before,
            burnt_by_client * 3 / 10,
        )
    }
}

fn function_call(method: &str, args: &Value, tgas: u64, deposit: u128) -> Action {
    Action::FunctionCall(Box::new(FunctionCallAction {
        method_name: method.to_string(),
        args: serde_json::to_vec(args).unwrap(),
        gas: Gas::from_teragas(tgas),
        deposit: Balance::from_yoctonear(deposit),
    }))
}

/// yoctoNEAR burnt by the transaction and every receipt it caused.
fn tokens_burnt(outcome: &FinalExecutionOutcomeView) -> u128 {
    std::iter::once(&outcome.transaction_outcome)
        .chain(&outcome.receipts_outcome)
        .map(|o| o.outcome.tokens_burnt.as_yoctonear())
        .sum()
}

fn success_json(outcome: &FinalExecutionOutcomeView) -> Value {
    match &outcome.status {
        FinalExecutionStatus::SuccessValue(value) => serde_json::from_slice(value).unwrap(),
        other => panic!(
            "expected success, got {other:?}; outcomes: {:#?}",
            outcome.receipts_outcome
        ),
    }
}

/// The receipt outcome that emitted the NEP-297 event `name`.
fn receipt_logging<'a>(
    outcome: &'a FinalExecutionOutcomeView,
    name: &str,
) -> &'a ExecutionOutcomeWithIdView {
    let needle = format!("\"event\":\"{name}\"");
    outcome
        .receipts_outcome
        .iter()
        .find(|o| o.outcome.logs.iter().any(|l| l.contains(&needle)))
        .unwrap_or_else(|| panic!("no receipt emitted {name}: {:#?}", outcome.receipts_outcome))
}

/// The `data` of the NEP-297 events with this name from any receipt of the transaction (OutLayer's
/// `data` is a one-element array).
fn events(outcome: &FinalExecutionOutcomeView, name: &str) -> Vec<Value> {
    outcome
        .receipts_outcome
        .iter()
        .flat_map(|o| &o.outcome.logs)
        .filter_map(|line| line.strip_prefix("EVENT_JSON:"))
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|event| event["event"] == name)
        .map(|event| event["data"].clone())
        .collect()
}

fn print_gas(outcome: &FinalExecutionOutcomeView) {
    for receipt in &outcome.receipts_outcome {
        println!(
            "  {:<20} burnt {:>7.3} Tgas  {}",
            receipt.outcome.executor_id.as_str(),
            receipt.outcome.gas_burnt.as_gas() as f64 / 1e12,
            match &receipt.outcome.status {
                ExecutionStatusView::Failure(_) => "failed",
                _ => "ok",
            }
        );
    }
}

#[tokio::test]
async fn ask_gets_the_output_into_the_client_contracts_callback_and_view() {
    let net = Net::start().await;
    let deposit = net.estimate().await + STORAGE_MARGIN;
    let alice_before = net.balance(&net.alice.account_id).await;
    let client_before = net.balance(&net.client_contract).await;

    let ask = net.ask("a question", deposit).await;
    // Play the operator: wait for the request, then resolve it.
    let deadline = tokio::time::Instant::now() + DEADLINE;
    let pending = loop {
        let pending = net
            .view(&net.outlayer, "get_pending_requests", json!({}))
            .await;
        if pending.as_array().is_some_and(|p| !p.is_empty()) {
            break pending;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the request never showed up"
        );
        tokio::time::sleep(BLOCK_TIME).await;
    };
    assert_eq!(pending[0]["sender_id"], "client.localnet");
    assert_eq!(pending[0]["input_data"], "a question");
    assert_eq!(pending[0]["payment"], deposit.to_string());
    assert_eq!(
        net.answer(0).await["status"],
        "pending",
        "the client shows the question as pending meanwhile"
    );

    let response = json!({"success": true, "output": {"Text": "an answer"},
                          "resources_used": {"instructions": 3_000_000u64, "time_ms": 4}});
    let resolve = net
        .sign(
            &net.operator,
            &net.outlayer,
            function_call(
                "resolve_execution",
                &json!({"request_id": pending[0]["request_id"], "response": response}),
                30,
                0,
            ),
        )
        .await;
    let resolved = net.commit(resolve).await;
    assert!(
        matches!(resolved.status, FinalExecutionStatus::SuccessValue(_)),
        "{:?}",
        resolved.status
    );

    let outcome = net.final_outcome(ask, &net.alice).await;
    print_gas(&outcome);
    let asked = receipt_logging(&outcome, "question_asked");
    let answered = receipt_logging(&outcome, "answer_recorded");
    println!(
        "ask burnt {:.3} Tgas, on_answer {:.3} Tgas; the whole transaction {} yoctoNEAR",
        asked.outcome.gas_burnt.as_gas() as f64 / 1e12,
        answered.outcome.gas_burnt.as_gas() as f64 / 1e12,
        tokens_burnt(&outcome)
    );

    let expected = json!({"question_id": 0, "asker": "alice.localnet", "status": "answered",
                          "output": "an answer"});
    assert_eq!(
        success_json(&outcome),
        expected,
        "the user's transaction ends with the recorded answer"
    );
    assert_eq!(net.answer(0).await, expected);
    assert_eq!(
        net.view(&net.client_contract, "last_answer", json!({}))
            .await,
        expected
    );

    let cost = BASE_FEE + 3 * PER_MILLION_INSTRUCTIONS + 4 * PER_MS;
    let completed = &events(&outcome, "execution_completed")[0][0];
    assert_eq!(completed["payment_charged"], cost.to_string());
    assert_eq!(
        net.balance(&net.alice.account_id).await,
        alice_before - deposit - tokens_burnt(&outcome),
        "the user pays the deposit and the gas"
    );
    let (gain, reward_bound) = net.client_gain(client_before, &outcome).await;
    assert!(
        gain >= deposit - cost && gain <= deposit - cost + reward_bound,
        "the client gets OutLayer's refund ({}) plus at most its gas reward ({reward_bound}), gained {gain}",
        deposit - cost
    );

    // Only the contract itself may deliver answers.
    let forged = net
        .sign(
            &net.alice,
            &net.client_contract,
            function_call("on_answer", &json!({"question_id": 0}), 30, 0),
        )
        .await;
    match net.commit(forged).await.status {
        FinalExecutionStatus::Failure(error) => {
            assert!(
                format!("{error:?}").contains("Method on_answer is private"),
                "{error:?}"
            )
        }
        other => panic!("a forged answer must fail, got {other:?}"),
    }
    assert_eq!(net.answer(0).await, expected, "the answer is unchanged");
}

#[tokio::test]
async fn an_unanswered_question_fails_after_the_yield_window_and_the_refund_reaches_the_client() {
    let net = Net::start().await;
    let deposit = net.estimate().await + STORAGE_MARGIN;
    let alice_before = net.balance(&net.alice.account_id).await;
    let client_before = net.balance(&net.client_contract).await;

    let ask = net.ask("nobody answers", deposit).await;
    let outcome = net.final_outcome(ask, &net.alice).await;
    print_gas(&outcome);

    let answer = success_json(&outcome);
    assert_eq!(answer["status"], "failed");
    assert_eq!(answer["output"], Value::Null);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("did not answer within the yield window"),
        "{answer}"
    );
    assert_eq!(
        net.answer(0).await,
        answer,
        "the client recorded the failure"
    );
    assert_eq!(
        net.view(&net.client_contract, "last_answer", json!({}))
            .await,
        answer
    );

    let completed = &events(&outcome, "execution_completed")[0][0];
    assert_eq!(completed["timed_out"], true);
    assert_eq!(completed["payment_charged"], BASE_FEE.to_string());
    let requested_at = net
        .block_height_of(receipt_logging(&outcome, "execution_requested").block_hash)
        .await;
    let completed_at = net
        .block_height_of(receipt_logging(&outcome, "execution_completed").block_hash)
        .await;
    assert_eq!(completed_at - requested_at, 200, "NEAR's yield window");

    assert_eq!(
        net.balance(&net.alice.account_id).await,
        alice_before - deposit - tokens_burnt(&outcome)
    );
    let (gain, reward_bound) = net.client_gain(client_before, &outcome).await;
    assert!(
        gain >= deposit - BASE_FEE && gain <= deposit - BASE_FEE + reward_bound,
        "the client gets all but the base fee ({}) plus at most its gas reward ({reward_bound}), gained {gain}",
        deposit - BASE_FEE
    );
}

#[tokio::test]
async fn a_request_outlayer_rejects_returns_the_deposit_to_the_asker() {
    let net = Net::start().await;
    // The estimate alone: no room for the pending request's storage, so OutLayer refuses it.
    let deposit = net.estimate().await;
    let alice_before = net.balance(&net.alice.account_id).await;
    let client_before = net.balance(&net.client_contract).await;

    let ask = net.ask("too cheap", deposit).await;
    let outcome = net.final_outcome(ask, &net.alice).await;
    print_gas(&outcome);
    let rejected = outcome
        .receipts_outcome
        .iter()
        .find(|o| o.outcome.executor_id == net.outlayer)
        .unwrap();
    match &rejected.outcome.status {
        ExecutionStatusView::Failure(error) => {
            let error = format!("{error:?}");
            assert!(error.contains("storage of the pending request"), "{error}");
            println!("OutLayer's rejection: {error}");
        }
        other => panic!("request_execution must fail, got {other:?}"),
    }

    let answer = success_json(&outcome);
    assert_eq!(answer["status"], "failed");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("OutLayer rejected the request"),
        "{answer}"
    );
    assert_eq!(net.answer(0).await, answer);
    assert_eq!(
        net.balance(&net.alice.account_id).await,
        alice_before - tokens_burnt(&outcome),
        "the asker gets the whole deposit back and pays only gas"
    );
    let (gain, reward_bound) = net.client_gain(client_before, &outcome).await;
    assert!(
        gain <= reward_bound,
        "the client keeps nothing but its gas reward ({reward_bound}), gained {gain}"
    );
}

#[tokio::test]
async fn an_input_near_outlayers_limit_fits_the_recommended_gas() {
    let net = Net::start().await;
    // OutLayer accepts inputs up to 256 KiB; its storage is part of the deposit.
    let input = "i".repeat(250_000);
    let deposit = net.estimate().await + (input.len() as u128 + 1_000) * 10u128.pow(19);
    let ask = net.ask(&input, deposit).await;
    let outcome = net.final_outcome(ask, &net.alice).await;
    print_gas(&outcome);
    let asked = receipt_logging(&outcome, "question_asked");
    let requested = receipt_logging(&outcome, "execution_requested");
    println!(
        "250,000-byte input at {ASK_TGAS} Tgas: ask burnt {:.3} Tgas, request_execution {:.3} Tgas",
        asked.outcome.gas_burnt.as_gas() as f64 / 1e12,
        requested.outcome.gas_burnt.as_gas() as f64 / 1e12,
    );
    // Nobody answers, so the question ends at the timeout; what matters is that OutLayer took it.
    assert_eq!(
        events(&outcome, "execution_requested")[0][0]["input_omitted"],
        true
    );
    assert_eq!(success_json(&outcome)["status"], "failed");
}
