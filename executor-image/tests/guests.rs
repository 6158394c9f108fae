//! The example guests (built by scripts/build-wasm) run end to end through the executor.

mod common;

use std::collections::BTreeMap;

use common::{guest, limits, run, run_with, stdout_text};
use outlayer_executor::{
    Deterministic, Executor, Fault, Job, ResponseFormat, ResultMessage, SystemEnv,
};
use sha2::{Digest, Sha256};

#[test]
fn echo_returns_its_input_and_a_result_message() {
    let execution = run(&guest("example-echo"), b"hello, \"world\"\n", limits());
    assert_eq!(stdout_text(&execution), "hello, \"world\"\n");
    assert_eq!(execution.exit_code, Some(0));
    assert!(execution.instructions > 0);

    let (message, text) = ResultMessage::build(&execution, ResponseFormat::Text, None).unwrap();
    assert!(message.ok);
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["v"], 1);
    assert_eq!(value["ok"], true);
    assert_eq!(value["output"], "hello, \"world\"\n");
    assert_eq!(value["outputEncoding"], "text");
    assert_eq!(value["instructions"], execution.instructions);
    assert!(value["timeMs"].is_u64());
    assert!(value.get("error").is_none());
}

#[test]
fn echo_passes_binary_input_through_as_base64() {
    let input = [0u8, 159, 146, 150, 255];
    let execution = run(&guest("example-echo"), &input, limits());
    let (_, text) = ResultMessage::build(&execution, ResponseFormat::Bytes, None).unwrap();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["output"], "AJ+Slv8=");
    assert_eq!(value["outputEncoding"], "base64");
}

#[test]
fn sha256_loop_matches_a_native_computation() {
    let execution = run(&guest("example-sha256-loop"), b"1000 outlayer", limits());
    let mut digest: [u8; 32] = Sha256::digest(b"outlayer").into();
    for _ in 0..1000 {
        digest = Sha256::digest(digest).into();
    }
    assert_eq!(stdout_text(&execution).trim(), hex::encode(digest));
}

#[test]
fn more_work_costs_more_instructions() {
    let wasm = guest("example-sha256-loop");
    let small = run(&wasm, b"100", limits()).instructions;
    let large = run(&wasm, b"1500", limits()).instructions;
    assert!(large > small * 10, "100 iterations: {small}, 1500: {large}");
}

#[test]
fn env_reader_sees_system_vars_and_secrets_and_nothing_else() {
    let secrets = BTreeMap::from([("API_KEY".to_string(), "s3cret".to_string())]);
    let system = SystemEnv {
        sender_id: "alice.near".into(),
        request_id: "17".into(),
        contract_id: "outlayer.near".into(),
        block_height: "123456".into(),
    };
    let execution = run_with(
        &guest("example-env-reader"),
        b"",
        limits(),
        &secrets,
        &system,
    );
    let vars: BTreeMap<String, String> = serde_json::from_str(&stdout_text(&execution)).unwrap();
    let expected: BTreeMap<String, String> = [
        ("API_KEY", "s3cret"),
        ("NEAR_BLOCK_HEIGHT", "123456"),
        ("NEAR_CONTRACT_ID", "outlayer.near"),
        ("NEAR_MAX_EXECUTION_SECONDS", "30"),
        ("NEAR_MAX_INSTRUCTIONS", "200000000"),
        ("NEAR_MAX_MEMORY_MB", "64"),
        ("NEAR_REQUEST_ID", "17"),
        ("NEAR_SENDER_ID", "alice.near"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(vars, expected);
}

#[test]
fn off_chain_system_vars_are_empty() {
    let execution = run(
        &guest("example-env-reader"),
        b"NEAR_SENDER_ID NEAR_BLOCK_HEIGHT HOME PATH",
        limits(),
    );
    let vars: serde_json::Value = serde_json::from_str(&stdout_text(&execution)).unwrap();
    assert_eq!(vars["NEAR_SENDER_ID"], "");
    assert_eq!(vars["NEAR_BLOCK_HEIGHT"], "");
    assert!(vars["HOME"].is_null());
    assert!(vars["PATH"].is_null());
}

#[test]
fn colliding_secret_is_rejected_before_the_guest_runs() {
    let secrets = BTreeMap::from([("NEAR_SENDER_ID".to_string(), "mallory.near".to_string())]);
    let execution = run_with(
        &guest("example-env-reader"),
        b"",
        limits(),
        &secrets,
        &SystemEnv::default(),
    );
    let fault = execution.outcome.unwrap_err();
    assert_eq!(fault.kind(), "invalidSecrets");
    assert!(fault.to_string().contains("NEAR_SENDER_ID"));
    assert_eq!(execution.instructions, 0);
}

#[test]
fn json_transform_output_is_embedded_as_json() {
    let execution = run(
        &guest("example-json-transform"),
        br#"{"b": [1, 2.5, {"c": "xy"}], "a": true}"#,
        limits(),
    );
    let (message, text) = ResultMessage::build(&execution, ResponseFormat::Json, None).unwrap();
    assert!(message.ok, "{text}");
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(value["outputEncoding"], "json");
    let output = &value["output"];
    assert_eq!(output["type"], "object");
    assert_eq!(output["keys"], serde_json::json!(["a", "b"]));
    assert_eq!(output["numbers"], 2);
    assert_eq!(output["sum"], 3.5);
    assert_eq!(output["strings"], 1);
    assert_eq!(output["trues"], 1);
    assert_eq!(output["maxDepth"], 4);
}

#[test]
fn guest_failure_reports_exit_code_and_stderr() {
    let execution = run(&guest("example-json-transform"), b"{broken", limits());
    assert_eq!(execution.outcome, Err(Fault::Exit { code: 2 }));
    assert_eq!(execution.exit_code, Some(2));
    let (message, _) = ResultMessage::build(&execution, ResponseFormat::Json, None).unwrap();
    assert!(!message.ok);
    assert_eq!(message.exit_code, Some(2));
    assert_eq!(message.error_kind.as_deref(), Some("exit"));
    let error = message.error.unwrap();
    assert!(
        error.starts_with("guest exited with code 2; stderr: "),
        "{error}"
    );
    assert!(error.contains("invalid JSON input"), "{error}");
}

#[test]
fn non_json_output_with_json_format_is_an_error() {
    let execution = run(&guest("example-echo"), b"plain words", limits());
    let (message, _) = ResultMessage::build(&execution, ResponseFormat::Json, None).unwrap();
    assert!(!message.ok);
    assert!(message.output.is_none());
    assert_eq!(message.error_kind.as_deref(), Some("invalidJson"));
}

#[test]
fn invalid_utf8_output_with_text_format_is_an_error() {
    let execution = run(&guest("example-echo"), b"ok\xc3\x28", limits());
    let (message, _) = ResultMessage::build(&execution, ResponseFormat::Text, None).unwrap();
    assert!(!message.ok);
    assert_eq!(message.error_kind.as_deref(), Some("invalidUtf8"));
    assert!(message.error.unwrap().contains("offset 2"));
}

fn deterministic_run(
    executor: &Executor,
    wasm: &[u8],
    input: &[u8],
    seed: &[u8],
) -> (Vec<u8>, u64) {
    let deterministic = Deterministic {
        seed: seed.to_vec(),
        unix_time_nanos: 1_700_000_000_123_456_789,
    };
    let execution = executor.run(&Job {
        wasm,
        input,
        secrets: &BTreeMap::new(),
        system: &SystemEnv::default(),
        limits: limits(),
        deterministic: Some(&deterministic),
    });
    let stdout = execution.outcome.expect("deterministic run succeeds");
    (stdout, execution.instructions)
}

#[test]
fn deterministic_mode_replays_100_times_identically() {
    let executor = Executor::new().unwrap();
    let wasm = guest("example-random");
    let first = deterministic_run(&executor, &wasm, b"64", b"request-17");
    let output: serde_json::Value = serde_json::from_slice(&first.0).unwrap();
    assert_eq!(output["unixNanos"], 1_700_000_000_123_456_789u64);
    assert_eq!(output["random"].as_str().unwrap().len(), 128);
    for run in 1..100 {
        let again = deterministic_run(&executor, &wasm, b"64", b"request-17");
        assert_eq!(again, first, "run {run} differs");
    }
    let other_seed = deterministic_run(&executor, &wasm, b"64", b"request-18");
    assert_ne!(other_seed.0, first.0);
}

#[test]
fn non_deterministic_mode_uses_real_randomness_and_time() {
    let wasm = guest("example-random");
    let a: serde_json::Value =
        serde_json::from_str(&stdout_text(&run(&wasm, b"32", limits()))).unwrap();
    let b: serde_json::Value =
        serde_json::from_str(&stdout_text(&run(&wasm, b"32", limits()))).unwrap();
    // 256 random bits colliding is not a flake risk.
    assert_ne!(a["random"], b["random"]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let reported = a["unixNanos"].as_u64().unwrap() as u128;
    assert!(
        now.abs_diff(reported) < 60_000_000_000,
        "{now} vs {reported}"
    );
}

#[test]
fn instruction_count_does_not_depend_on_slicing() {
    // ~8 M instructions: several fuel slices (the first is 1 M), whose sizes follow the wall
    // clock and so differ from run to run; the count must not.
    let executor = Executor::new().unwrap();
    let wasm = guest("example-sha256-loop");
    let first = deterministic_run(&executor, &wasm, b"1000 seed", b"s");
    assert!(first.1 > 5_000_000, "{}", first.1);
    for _ in 0..3 {
        assert_eq!(
            deterministic_run(&executor, &wasm, b"1000 seed", b"s"),
            first
        );
    }
}
