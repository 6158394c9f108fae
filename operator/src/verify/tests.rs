use super::*;

const CONTRACT: &str = "outlayer.test";

fn requested(id: u64, secrets: bool) -> String {
    let secrets_ref = if secrets {
        r#","secrets_ref":{"account_id":"alice.test","profile":"prod"}"#
    } else {
        ""
    };
    format!(
        r#"EVENT_JSON:{{"standard":"near-outlayer","version":"1.0.0","event":"execution_requested","data":[{{"request_id":{id},"data_id":"11111111111111111111111111111111","sender_id":"alice.test","code_source":{{"repo":"https://github.com/o/r","commit":"main","build_target":"wasm32-wasip1"}},"resource_limits":{{"max_instructions":1000000,"max_memory_mb":64,"max_execution_seconds":5}},"input_data":"hi","input_omitted":false{secrets_ref},"response_format":"Json","payment":"1","created_at_block":7,"created_at_ns":8}}]}}"#
    )
}

fn completed(id: u64, success: bool, evidence: bool) -> String {
    let evidence = if evidence {
        format!(
            r#","evidence":{{"wasm_sha256":"{}","commit":"{}"}}"#,
            "ab".repeat(32),
            "01".repeat(20)
        )
    } else {
        String::new()
    };
    format!(
        r#"EVENT_JSON:{{"standard":"near-outlayer","version":"1.0.0","event":"execution_completed","data":[{{"request_id":{id},"sender_id":"alice.test","payer_account_id":"alice.test","success":{success},"timed_out":false,"resources_used":{{"instructions":42,"time_ms":1}},"payment_charged":"1","payment_refunded":"0"{evidence}}}]}}"#
    )
}

fn receipt(executor: &str, logs: Vec<String>, returned: Option<&str>) -> ReceiptRecord {
    ReceiptRecord {
        executor: executor.to_string(),
        logs,
        returned: returned.map(|r| r.as_bytes().to_vec()),
    }
}

fn honest_receipts() -> Vec<ReceiptRecord> {
    vec![
        receipt(CONTRACT, vec![requested(3, false)], None),
        receipt(CONTRACT, vec!["resolved".to_string()], None),
        receipt(
            CONTRACT,
            vec![completed(3, true, true)],
            Some(r#"{"a": 1}"#),
        ),
    ]
}

#[test]
fn the_record_comes_from_the_contracts_own_events() {
    let record = read_record(&honest_receipts(), CONTRACT, None).unwrap();
    assert_eq!(record.request.request_id, 3);
    assert_eq!(record.request.input_data.as_deref(), Some("hi"));
    assert_eq!(record.completed.resources_used.instructions, 42);
    let evidence = record.completed.evidence.unwrap();
    assert_eq!(evidence.wasm_sha256, "ab".repeat(32));
    assert_eq!(evidence.commit.as_deref(), Some("01".repeat(20).as_str()));
    assert_eq!(record.returned.as_deref(), Some(&br#"{"a": 1}"#[..]));

    // Another account logging the same events is not the contract: ignored.
    let mut forged = honest_receipts();
    forged[2].executor = "mallory.test".to_string();
    assert!(
        read_record(&forged, CONTRACT, None)
            .unwrap_err()
            .contains("no execution_completed")
    );
    // Nothing requested, or several without --request-id.
    assert!(read_record(&[], CONTRACT, None).is_err());
    let two = vec![receipt(
        CONTRACT,
        vec![requested(1, false), requested(2, false)],
        None,
    )];
    assert!(
        read_record(&two, CONTRACT, None)
            .unwrap_err()
            .contains("--request-id")
    );
    assert!(
        read_record(&two, CONTRACT, Some(9))
            .unwrap_err()
            .contains("no request 9")
    );
}

fn replay(value: Option<&str>, instructions: u64) -> Replay {
    Replay {
        client_value: value.map(str::to_string),
        failure: value.is_none().then(|| "guest trapped".to_string()),
        instructions,
        nondeterministic: false,
        seeded: false,
    }
}

#[test]
fn output_and_instructions_are_compared_as_the_client_sees_them() {
    let record = read_record(&honest_receipts(), CONTRACT, None).unwrap();
    // Same JSON value, other spacing: a match.
    let (output, instructions) = run_checks(&record, &replay(Some(r#"{"a":1}"#), 42));
    assert!(matches!(output, Check::Match { .. }), "{output:?}");
    assert!(matches!(instructions, Check::Match { .. }));
    // Another output, other instructions: mismatches.
    let (output, instructions) = run_checks(&record, &replay(Some(r#"{"a":2}"#), 43));
    assert_eq!(
        output,
        Check::Mismatch {
            expected: r#"{"a":1}"#.to_string(),
            got: r#"{"a":2}"#.to_string()
        }
    );
    assert_eq!(
        instructions,
        Check::Mismatch {
            expected: "42".to_string(),
            got: "43".to_string()
        }
    );
    // The chain says success, the replay fails.
    let (output, _) = run_checks(&record, &replay(None, 42));
    assert!(matches!(output, Check::Mismatch { ref got, .. } if got.contains("guest trapped")));
    // Both failed: a match.
    let failed = read_record(
        &[
            receipt(CONTRACT, vec![requested(3, false)], None),
            receipt(CONTRACT, vec![completed(3, false, true)], Some("null")),
        ],
        CONTRACT,
        None,
    )
    .unwrap();
    let (output, _) = run_checks(&failed, &replay(None, 42));
    assert!(matches!(output, Check::Match { .. }));
    // A random guest's difference is not evidence of cheating yet.
    let mut random = replay(Some(r#"{"a":2}"#), 42);
    random.nondeterministic = true;
    let (output, instructions) = run_checks(&record, &random);
    assert!(matches!(output, Check::NotChecked { .. }));
    assert!(matches!(instructions, Check::Match { .. }));
}

fn report(module: Check, output: Check, instructions: Check) -> Report {
    Report {
        request_id: 3,
        repo: "https://github.com/o/r".to_string(),
        commit: "01".repeat(20),
        source_to_module: module,
        seed: Check::not_checked("no seed key"),
        output,
        instructions,
        build_seconds: 1.0,
        module_cached: false,
        total_seconds: 2.0,
    }
}

fn ok() -> Check {
    Check::Match {
        detail: String::new(),
    }
}

fn bad() -> Check {
    Check::Mismatch {
        expected: "a".to_string(),
        got: "b".to_string(),
    }
}

#[test]
fn exit_codes_and_lines() {
    assert_eq!(report(ok(), ok(), ok()).exit_code(), 0);
    assert_eq!(report(bad(), ok(), ok()).exit_code(), 1);
    assert_eq!(report(ok(), bad(), ok()).exit_code(), 1);
    assert_eq!(report(ok(), ok(), bad()).exit_code(), 1);
    assert_eq!(
        report(ok(), Check::not_checked("secrets"), ok()).exit_code(),
        2
    );
    // A mismatch wins over what could not be checked.
    assert_eq!(
        report(bad(), Check::not_checked("secrets"), ok()).exit_code(),
        1
    );
    let text = report(ok(), bad(), ok()).render_text();
    assert!(text.contains("source → module: match\n"), "{text}");
    assert!(
        text.contains("output: MISMATCH (the chain says a"),
        "{text}"
    );
    assert!(text.contains("instructions: match\n"), "{text}");
    assert!(text.contains("seed: could not check: "), "{text}");
}

#[test]
fn the_module_check_reads_the_evidence() {
    let evidence = Evidence {
        wasm_sha256: "ab".repeat(32),
        commit: None,
        toolchain: None,
        compiler: None,
        seed_signature: None,
    };
    assert!(matches!(
        module_check(Some(&evidence), &"ab".repeat(32), "rustc 1.95.0"),
        Check::Match { ref detail } if detail.ends_with("rustc 1.95.0")
    ));
    assert!(matches!(
        module_check(Some(&evidence), &"cd".repeat(32), ""),
        Check::Mismatch { .. }
    ));
    assert!(matches!(
        module_check(None, &"cd".repeat(32), ""),
        Check::NotChecked { .. }
    ));
}

#[test]
fn randomness_and_clocks_are_found_in_the_imports() {
    let plain = wat::parse_str(
        r#"(module (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
           (func (export "_start")))"#,
    )
    .unwrap();
    let random = wat::parse_str(
        r#"(module (import "wasi_snapshot_preview1" "random_get" (func (param i32 i32) (result i32)))
           (func (export "_start")))"#,
    )
    .unwrap();
    assert!(!imports_nondeterminism(&plain));
    assert!(imports_nondeterminism(&random));
}

/// The honest record with a seed key on the request and `key`'s signature on the answer.
fn seeded_record(signer: &str) -> ChainRecord {
    let operator = near_crypto::SecretKey::from_seed(near_crypto::KeyType::ED25519, "operator");
    let mut record = read_record(&honest_receipts(), CONTRACT, None).unwrap();
    record.request.seed_public_key = Some(operator.public_key().to_string().parse().unwrap());
    let key = near_crypto::SecretKey::from_seed(near_crypto::KeyType::ED25519, signer);
    let message = outlayer_contract::seed_message(CONTRACT, 3, &record.request.data_id);
    record.completed.evidence.as_mut().unwrap().seed_signature =
        Some(key.sign(&message).to_string());
    record
}

#[test]
fn the_seed_check_reads_the_signature_against_the_recorded_key() {
    let (check, seed) = seed_check(&seeded_record("operator"), CONTRACT);
    assert!(
        matches!(check, Check::Match { ref detail } if detail.starts_with("signed by ed25519:"))
    );
    // The seed is SHA-256 of the signature, as the operator's executor got it.
    let record = seeded_record("operator");
    let signature = record.completed.evidence.unwrap().seed_signature.unwrap();
    let bytes = outlayer_contract::decode_seed_signature(&signature).unwrap();
    assert_eq!(seed, Some(crate::seed::seed_of(&bytes)));

    // Another key's signature, or one for another contract, is invalid.
    let (check, seed) = seed_check(&seeded_record("mallory"), CONTRACT);
    assert!(matches!(check, Check::Mismatch { .. }), "{check:?}");
    assert_eq!(seed, None);
    let (check, _) = seed_check(&seeded_record("operator"), "other.test");
    assert!(matches!(check, Check::Mismatch { .. }), "{check:?}");

    // No key recorded: nothing to check, and that does not fail the verification.
    let (check, seed) = seed_check(
        &read_record(&honest_receipts(), CONTRACT, None).unwrap(),
        CONTRACT,
    );
    assert!(matches!(check, Check::NotChecked { ref reason } if reason.contains("not seeded")));
    assert_eq!(seed, None);
}

#[test]
fn an_invalid_seed_prints_invalid_and_exits_1() {
    let mut report = report(ok(), ok(), ok());
    report.seed = Check::Mismatch {
        expected: "the key's signature".to_string(),
        got: "another".to_string(),
    };
    assert_eq!(report.exit_code(), 1);
    assert!(report.render_text().contains("seed: INVALID"));
    report.seed = ok();
    assert_eq!(report.exit_code(), 0);
    assert!(report.render_text().contains("seed: valid"));
}

#[test]
fn a_seeded_random_guest_is_held_to_its_output() {
    let record = read_record(&honest_receipts(), CONTRACT, None).unwrap();
    let mut random = replay(Some(r#"{"a":2}"#), 42);
    random.nondeterministic = true;
    random.seeded = true;
    let (output, _) = run_checks(&record, &random);
    assert!(matches!(output, Check::Mismatch { .. }), "{output:?}");
}

#[test]
fn a_cache_inside_a_cargo_workspace_is_named_before_cargo_trips_on_it() {
    let root = tempfile::tempdir().unwrap();
    std::fs::write(
        root.path().join("Cargo.toml"),
        "[workspace]\nmembers = []\n",
    )
    .unwrap();
    let cache = root.path().join("target").join("verify");
    assert_eq!(enclosing_workspace(&cache), Some(root.path().to_path_buf()));
    let outside = tempfile::tempdir().unwrap();
    assert_eq!(enclosing_workspace(outside.path()), None);
}
