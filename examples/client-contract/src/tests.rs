use near_sdk::mock::MockAction;
use near_sdk::serde_json::{self, Value, json};
use near_sdk::test_utils::{VMContextBuilder, accounts, get_created_receipts, get_logs};
use near_sdk::testing_env;

use super::*;

const DEPOSIT: u128 = 10u128.pow(23); // 0.1 NEAR
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

fn outlayer() -> AccountId {
    "outlayer.near".parse().unwrap()
}
fn client() -> AccountId {
    "client.near".parse().unwrap()
}
fn alice() -> AccountId {
    accounts(0)
}

fn set_caller(predecessor: AccountId, deposit: u128, tgas: u64) {
    testing_env!(
        VMContextBuilder::new()
            .current_account_id(client())
            .signer_account_id(predecessor.clone())
            .predecessor_account_id(predecessor)
            .attached_deposit(NearToken::from_yoctonear(deposit))
            .prepaid_gas(Gas::from_tgas(tgas))
            .build()
    );
}

/// A contract with one question asked by alice; returns the question id.
fn asked(contract: &mut Contract) -> u64 {
    set_caller(alice(), DEPOSIT, 100);
    let _ = contract.ask(
        "https://github.com/alice/echo".to_string(),
        COMMIT.to_string(),
        "hello".to_string(),
        None,
        None,
        None,
        None,
    );
    contract.next_question_id - 1
}

fn new_contract() -> Contract {
    set_caller(client(), 0, 100);
    Contract::new(outlayer())
}

/// The callback runs as the contract calling itself.
fn as_callback() {
    set_caller(client(), 0, ON_ANSWER_GAS.as_tgas());
}

fn raw(json: &str) -> Box<RawValue> {
    RawValue::from_string(json.to_string()).unwrap()
}

/// The function calls the current call scheduled: (receiver, method, args, deposit, gas, weight).
fn function_calls() -> Vec<(AccountId, String, Vec<u8>, u128, Gas, u64)> {
    let mut calls = Vec::new();
    for receipt in get_created_receipts() {
        for action in receipt.actions {
            if let MockAction::FunctionCallWeight {
                method_name,
                args,
                attached_deposit,
                prepaid_gas,
                gas_weight,
                ..
            } = action
            {
                calls.push((
                    receipt.receiver_id.clone(),
                    String::from_utf8(method_name).unwrap(),
                    args,
                    attached_deposit.as_yoctonear(),
                    prepaid_gas,
                    gas_weight.0,
                ));
            }
        }
    }
    calls
}

fn transfers() -> Vec<(AccountId, u128)> {
    let mut found = Vec::new();
    for receipt in get_created_receipts() {
        for action in receipt.actions {
            if let MockAction::Transfer { deposit, .. } = action {
                found.push((receipt.receiver_id.clone(), deposit.as_yoctonear()));
            }
        }
    }
    found
}

/// The single event with this name logged so far, checked for the NEP-297 envelope.
fn event(name: &str) -> Value {
    let matching: Vec<Value> = get_logs()
        .iter()
        .filter_map(|line| line.strip_prefix("EVENT_JSON:"))
        .map(|json| serde_json::from_str::<Value>(json).unwrap())
        .filter(|event| event["event"] == name)
        .collect();
    assert_eq!(matching.len(), 1, "expected one {name} event: {matching:?}");
    assert_eq!(matching[0]["standard"], "outlayer-client-example");
    assert_eq!(matching[0]["version"], "1.0.0");
    matching[0]["data"].clone()
}

/// The arguments of `request_execution` exactly as the OutLayer contract reads them.
#[derive(near_sdk::serde::Deserialize, Debug)]
#[serde(crate = "near_sdk::serde", deny_unknown_fields)]
struct OutlayerRequestArgs {
    code_source: outlayer_contract::CodeSource,
    resource_limits: outlayer_contract::ResourceLimits,
    input_data: String,
    secrets_ref: Option<outlayer_contract::SecretsReference>,
    response_format: Option<outlayer_contract::ResponseFormat>,
}

#[test]
fn ask_forwards_the_deposit_to_request_execution_and_chains_its_callback() {
    let mut contract = new_contract();
    let id = asked(&mut contract);
    assert_eq!(id, 0);

    let calls = function_calls();
    assert_eq!(calls.len(), 2, "{calls:?}");
    let (receiver, method, args, deposit, gas, weight) = &calls[0];
    assert_eq!(
        (receiver, method.as_str(), *deposit),
        (&outlayer(), "request_execution", DEPOSIT)
    );
    assert_eq!((*gas, *weight), (REQUEST_EXECUTION_GAS, 1));
    let args: OutlayerRequestArgs = serde_json::from_slice(args).unwrap();
    assert_eq!(args.code_source.repo, "https://github.com/alice/echo");
    assert_eq!(args.code_source.commit, COMMIT);
    assert_eq!(args.code_source.build_target_or_default(), "wasm32-wasip1");
    assert_eq!(
        args.resource_limits,
        outlayer_contract::ResourceLimits {
            max_instructions: DEFAULT_LIMITS.max_instructions,
            max_memory_mb: DEFAULT_LIMITS.max_memory_mb,
            max_execution_seconds: DEFAULT_LIMITS.max_execution_seconds,
        }
    );
    assert_eq!(args.input_data, "hello");
    assert_eq!(args.secrets_ref, None);
    assert_eq!(args.response_format, None);

    let (receiver, method, args, deposit, gas, weight) = &calls[1];
    assert_eq!(
        (receiver, method.as_str(), *deposit),
        (&client(), "on_answer", 0)
    );
    assert_eq!((*gas, *weight), (ON_ANSWER_GAS, 0));
    assert_eq!(
        serde_json::from_slice::<Value>(args).unwrap(),
        json!({"question_id": 0})
    );

    let answer = contract.get_answer(0).unwrap();
    assert_eq!((answer.status, answer.asker), (Status::Pending, alice()));
    assert!(contract.last_answer().is_none(), "nothing answered yet");
    assert_eq!(
        event("question_asked"),
        json!({"question_id": 0, "asker": "alice"})
    );
}

#[test]
fn explicit_limits_and_format_reach_outlayer_in_its_own_types() {
    let mut contract = new_contract();
    for (format, expected) in [
        (
            ResponseFormat::Text,
            outlayer_contract::ResponseFormat::Text,
        ),
        (
            ResponseFormat::Json,
            outlayer_contract::ResponseFormat::Json,
        ),
        (
            ResponseFormat::Bytes,
            outlayer_contract::ResponseFormat::Bytes,
        ),
    ] {
        set_caller(alice(), DEPOSIT, 300);
        let _ = contract.ask(
            "https://github.com/alice/echo".to_string(),
            "main".to_string(),
            "{}".to_string(),
            Some(5),
            Some(64),
            Some(2),
            Some(format),
        );
        let args: OutlayerRequestArgs = serde_json::from_slice(&function_calls()[0].2).unwrap();
        assert_eq!(args.response_format, Some(expected));
        assert_eq!(
            args.resource_limits,
            outlayer_contract::ResourceLimits {
                max_instructions: 5,
                max_memory_mb: 64,
                max_execution_seconds: 2
            }
        );
        assert_eq!(args.code_source.commit, "main");
    }
    assert_eq!(contract.next_question_id, 3);
}

#[test]
fn outlayers_return_value_is_what_on_answer_reads() {
    // What OutLayer's callback returns for each format, through JSON as the runtime passes it.
    for (output, expected) in [
        (
            outlayer_contract::ExecutionOutput::Text("hi".into()),
            "\"hi\"",
        ),
        (
            outlayer_contract::ExecutionOutput::Json(raw("{\"n\":[1,2.5]}")),
            "{\"n\":[1,2.5]}",
        ),
        (
            outlayer_contract::ExecutionOutput::Bytes(vec![0, 255]),
            "\"AP8=\"",
        ),
    ] {
        let returned = serde_json::to_vec(&Some(output.into_client_value())).unwrap();
        let read: Option<Box<RawValue>> = serde_json::from_slice(&returned).unwrap();
        assert_eq!(read.unwrap().get(), expected);
    }
    let failed = serde_json::to_vec(&None::<Box<RawValue>>).unwrap();
    assert!(
        serde_json::from_slice::<Option<Box<RawValue>>>(&failed)
            .unwrap()
            .is_none()
    );
}

#[test]
fn an_output_is_stored_and_shown() {
    let mut contract = new_contract();
    let id = asked(&mut contract);
    as_callback();
    let view = contract.on_answer(id, Ok(Some(raw("\"hello back\""))));
    assert_eq!(view.status, Status::Answered);
    assert_eq!(view.output.unwrap().get(), "\"hello back\"");

    let stored = contract.get_answer(id).unwrap();
    assert_eq!(stored.output.unwrap().get(), "\"hello back\"");
    assert_eq!(stored.error, None);
    assert_eq!(contract.last_answer().unwrap().question_id, id);
    assert!(transfers().is_empty(), "refunds stay with the contract");
    assert_eq!(
        event("answer_recorded"),
        json!({"question_id": 0, "status": "answered"})
    );
    // The view's JSON carries the output as a value, not as a string of JSON.
    assert_eq!(
        serde_json::to_value(contract.get_answer(id)).unwrap()["output"],
        "hello back"
    );
}

#[test]
fn a_json_output_stays_a_value() {
    let mut contract = new_contract();
    let id = asked(&mut contract);
    as_callback();
    contract.on_answer(id, Ok(Some(raw("{\"sum\":3,\"ok\":true}"))));
    assert_eq!(
        serde_json::to_value(contract.get_answer(id).unwrap()).unwrap()["output"],
        json!({"sum": 3, "ok": true})
    );
}

#[test]
fn null_means_failed_or_timed_out_and_is_recorded() {
    let mut contract = new_contract();
    let id = asked(&mut contract);
    as_callback();
    let view = contract.on_answer(id, Ok(None));
    assert_eq!(view.status, Status::Failed);
    assert!(view.output.is_none());
    assert!(
        view.error
            .unwrap()
            .contains("did not answer within the yield window")
    );
    assert!(
        transfers().is_empty(),
        "OutLayer refunded this contract itself"
    );
    assert_eq!(contract.last_answer().unwrap().status, Status::Failed);
    assert_eq!(event("answer_recorded")["status"], "failed");
}

#[test]
fn a_rejected_request_returns_the_deposit_to_the_asker() {
    let mut contract = new_contract();
    let id = asked(&mut contract);
    as_callback();
    let view = contract.on_answer(id, Err(PromiseError::Failed));
    assert_eq!(view.status, Status::Failed);
    assert!(
        view.error
            .unwrap()
            .contains("OutLayer rejected the request")
    );
    assert_eq!(transfers(), vec![(alice(), DEPOSIT)]);
}

#[test]
fn an_output_too_large_to_keep_is_recorded_as_a_failure() {
    let mut contract = new_contract();
    let id = asked(&mut contract);
    as_callback();
    let big = format!("\"{}\"", "x".repeat(MAX_STORED_OUTPUT_BYTES));
    let view = contract.on_answer(id, Ok(Some(raw(&big))));
    assert_eq!(view.status, Status::Failed);
    assert!(view.output.is_none());
    assert_eq!(
        view.error.unwrap(),
        format!(
            "the output is {} bytes of JSON; this contract keeps at most {MAX_STORED_OUTPUT_BYTES}",
            MAX_STORED_OUTPUT_BYTES + 2
        )
    );
}

#[test]
fn answers_are_kept_per_question() {
    let mut contract = new_contract();
    let first = asked(&mut contract);
    let second = asked(&mut contract);
    as_callback();
    contract.on_answer(second, Ok(Some(raw("2"))));
    as_callback();
    contract.on_answer(first, Ok(Some(raw("1"))));
    assert_eq!(
        contract.get_answer(first).unwrap().output.unwrap().get(),
        "1"
    );
    assert_eq!(
        contract.get_answer(second).unwrap().output.unwrap().get(),
        "2"
    );
    assert_eq!(contract.last_answer().unwrap().question_id, first);
    assert!(contract.get_answer(7).is_none());
}

#[test]
#[should_panic(expected = "attach a deposit")]
fn asking_without_a_deposit_fails() {
    let mut contract = new_contract();
    set_caller(alice(), 0, 100);
    let _ = contract.ask("r".into(), "c".into(), "i".into(), None, None, None, None);
}

#[test]
#[should_panic(expected = "attach at least 50 Tgas (100 Tgas is comfortable), got 40 Tgas")]
fn asking_with_too_little_gas_fails() {
    let mut contract = new_contract();
    set_caller(alice(), DEPOSIT, 40);
    let _ = contract.ask("r".into(), "c".into(), "i".into(), None, None, None, None);
}
