//! The example client contract (`examples/client-contract`, a real near-sdk contract) against the real
//! OutLayer contract on the localnet: a user asks through it with a deposit, the test signs the
//! operator's `resolve_execution`, and the answer lands in the client's own callback and view; a
//! request nobody answers times out after 200 blocks and the client records the failure; a request
//! OutLayer rejects sends the deposit back to the user; an input near OutLayer's 256 KiB limit fits
//! the gas the client's README recommends. Every wait ends on a condition with a generous deadline;
//! no timing decides a test.

mod common;

use std::time::Duration;

use common::{DEADLINE, Rpc, function_call, tokens_burnt};
use e2e_localnet::Localnet;
use near_primitives::action::Action;
use near_primitives::hash::CryptoHash;
use near_primitives::transaction::SignedTransaction;
use near_primitives::types::AccountId;
use near_primitives::views::{
    ExecutionOutcomeWithIdView, ExecutionStatusView, FinalExecutionOutcomeView,
    FinalExecutionStatus,
};
use outlayer_testkit::localnet::{outlayer_genesis, with_client_contract};
use outlayer_testkit::near::{Key, NEAR, account};
use serde_json::{Value, json};

const BLOCK_TIME: Duration = Duration::from_millis(50);
/// The OutLayer contract's default base fee (`Pricing::default`): what a failure or timeout costs.
const BASE_FEE: u128 = 1_000_000_000_000_000_000_000;
const PER_MILLION_INSTRUCTIONS: u128 = 100_000_000_000_000;
const PER_MS: u128 = 100_000_000_000_000_000;
/// What the client's README recommends attaching to `ask`.
const ASK_TGAS: u64 = 100;
/// Room for the pending request's storage on top of the estimate: 1,000 bytes at 1e19 yocto each,
/// far more than a small request takes.
const STORAGE_MARGIN: u128 = 1_000 * 10_000_000_000_000_000_000;

/// A localnet with a user (alice), the operator's account, OutLayer and the client contract; its RPC
/// through `Deref`.
struct Net {
    _localnet: Localnet,
    rpc: Rpc,
    alice: Key,
    operator: Key,
    outlayer: AccountId,
    client_contract: AccountId,
}

impl std::ops::Deref for Net {
    type Target = Rpc;

    fn deref(&self) -> &Rpc {
        &self.rpc
    }
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
            rpc: Rpc::connect(&localnet.rpc_url()),
            _localnet: localnet,
            alice,
            operator,
            outlayer,
            client_contract,
        }
    }

    /// Signs `action` with the key's next nonce and the final block, as the operator does.
    async fn sign(&self, key: &Key, receiver: &AccountId, action: Action) -> SignedTransaction {
        self.rpc.sign(key, receiver, vec![action]).await
    }

    /// OutLayer's price for the client's default limits, as a client reads it before asking.
    async fn estimate(&self) -> u128 {
        let limits = json!({"max_instructions": 1_000_000_000u64, "max_memory_mb": 128, "max_execution_seconds": 10});
        let estimate = self
            .view_on(
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
        self.view_on(
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
            .view_on(&net.outlayer, "get_pending_requests", json!({}))
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

    let outcome = net.final_outcome(ask, &net.alice.account_id).await;
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
        net.view_on(&net.client_contract, "last_answer", json!({}))
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
    let outcome = net.final_outcome(ask, &net.alice.account_id).await;
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
        net.view_on(&net.client_contract, "last_answer", json!({}))
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
    let outcome = net.final_outcome(ask, &net.alice.account_id).await;
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
    let outcome = net.final_outcome(ask, &net.alice.account_id).await;
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
