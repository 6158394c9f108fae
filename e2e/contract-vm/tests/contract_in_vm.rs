//! The real OutLayer contract wasm (built by `scripts/build-wasm`) in nearcore's VM: the request →
//! resolve → callback lifecycle with real host functions, the two-step path for outputs over the
//! 1024-byte yield payload limit, and the yield timeout. Arguments are the JSON a client sends, so
//! the test also pins the contract's wire format.
//!
//! Prints the gas each step burns and the wasm size (`cargo test -p e2e-contract-vm --test
//! contract_in_vm -- --nocapture`).

use std::path::PathBuf;

use e2e_contract_vm::{
    AccountId, Balance, CallContext, CallOutcome, ContractVm, CryptoHash, Gas, PROTOCOL_VERSION,
    PendingYield, PromiseResult, ReturnValue, ViewContext,
};
use serde_json::{Value, json};

const WASM_NAME: &str = "outlayer_contract.wasm";
/// What a client attaches to `request_execution`: the contract needs 10 Tgas plus 20 Tgas for
/// the callback reserve.
const REQUEST_GAS: Gas = Gas::from_teragas(50);
const CALL_GAS: Gas = Gas::from_teragas(30);
const DEPOSIT: Balance = Balance::from_millinear(100);

/// Default pricing (contract `Pricing::default`): base 0.001 NEAR, 1e14 yocto per million
/// instructions, 1e17 yocto per ms and per compile ms.
const BASE_FEE: u128 = 1_000_000_000_000_000_000_000;
const PER_MILLION_INSTRUCTIONS: u128 = 100_000_000_000_000;
const PER_MS: u128 = 100_000_000_000_000_000;

/// The deployable artifact: cargo's output after wasm-opt (scripts/build-wasm).
fn wasm_path() -> PathBuf {
    outlayer_testkit::contract_wasm(WASM_NAME)
}

fn load_wasm() -> Vec<u8> {
    let path = wasm_path();
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn account(name: &str) -> AccountId {
    name.parse().unwrap()
}

fn tgas(gas: Gas) -> String {
    format!("{:.3} Tgas", gas.as_gas() as f64 / 1e12)
}

struct Chain {
    vm: ContractVm,
    contract: AccountId,
    operator: AccountId,
    client: AccountId,
    block: u64,
    /// Argument bytes of the last `call`, for the receipt fees in the gas report.
    last_args_len: usize,
}

impl Chain {
    fn new() -> Self {
        Self::with_trie_nodes_per_access(0)
    }

    fn with_trie_nodes_per_access(nodes: u64) -> Self {
        let wasm = load_wasm();
        let vm = ContractVm::new(&wasm, PROTOCOL_VERSION)
            .unwrap_or_else(|e| panic!("nearcore rejects {}: {e}", wasm_path().display()))
            .with_balance(Balance::from_near(10))
            .with_trie_nodes_per_access(nodes);
        let mut chain = Self {
            vm,
            contract: account("outlayer.near"),
            operator: account("operator.near"),
            client: account("client.near"),
            block: 100,
            last_args_len: 0,
        };
        let init = json!({"owner_id": "owner.near", "operator_id": "operator.near"});
        let contract = chain.contract.clone();
        let outcome = chain.call(&contract, "new", &init, Balance::ZERO, CALL_GAS);
        assert_success(&outcome, "new");
        chain
    }

    fn ctx(&mut self, signer: &AccountId, deposit: Balance, gas: Gas) -> CallContext {
        self.block += 1;
        CallContext::new(self.contract.clone(), signer.clone())
            .with_deposit(deposit)
            .with_gas(gas)
            .at_block(self.block, self.block * 600_000_000)
    }

    fn call(
        &mut self,
        signer: &AccountId,
        method: &str,
        args: &Value,
        deposit: Balance,
        gas: Gas,
    ) -> CallOutcome {
        let ctx = self.ctx(signer, deposit, gas);
        let args = serde_json::to_vec(args).unwrap();
        self.last_args_len = args.len();
        self.vm.call(method, &args, &ctx).unwrap()
    }

    fn view(&self, method: &str, args: &Value) -> Value {
        let ctx = ViewContext::new(self.contract.clone()).at_block(self.block, 0);
        let outcome = self
            .vm
            .view(method, &serde_json::to_vec(args).unwrap(), &ctx)
            .unwrap();
        assert_success(&outcome, method);
        serde_json::from_slice(outcome.value().unwrap()).unwrap()
    }

    fn request(&mut self, input: &str) -> (CallOutcome, CryptoHash) {
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
        let client = self.client.clone();
        let outcome = self.call(&client, "request_execution", &args, DEPOSIT, REQUEST_GAS);
        assert_success(&outcome, "request_execution");
        let yields: Vec<_> = outcome.yields_created().collect();
        assert_eq!(
            yields.len(),
            1,
            "request_execution creates exactly one yield"
        );
        let (data_id, callback) = yields[0];
        assert_eq!(callback.method_name, "on_execution_response");
        assert_eq!(
            callback.gas,
            Gas::from_teragas(20),
            "the callback reserve, no weight"
        );
        assert_eq!(callback.deposit, Balance::ZERO);
        let index = outcome
            .receipts
            .iter()
            .find(|r| r.yield_data_id == Some(data_id))
            .unwrap()
            .index;
        assert_eq!(
            outcome.return_value,
            ReturnValue::Promise(index),
            "returns the yield"
        );
        (outcome, data_id)
    }

    fn resolve(&mut self, request_id: u64, response: Value) -> CallOutcome {
        let operator = self.operator.clone();
        let args = json!({"request_id": request_id, "response": response});
        self.call(
            &operator,
            "resolve_execution",
            &args,
            Balance::ZERO,
            CALL_GAS,
        )
    }

    /// Runs the yield callback as the chain does once the resume's data arrives (next block).
    fn callback(&mut self, yielded: &PendingYield, result: PromiseResult) -> CallOutcome {
        self.block += 1;
        let outcome = self
            .vm
            .run_yield_callback(yielded, result, self.block, self.block * 600_000_000)
            .unwrap();
        assert_success(&outcome, "on_execution_response");
        outcome
    }
}

#[track_caller]
fn assert_success(outcome: &CallOutcome, method: &str) {
    assert!(
        outcome.is_success(),
        "{method} failed: {:?}\nlogs: {:#?}",
        outcome.error_message(),
        outcome.logs
    );
}

#[track_caller]
fn assert_fails_with(outcome: &CallOutcome, needle: &str) {
    let message = outcome.error_message().unwrap_or_else(|| {
        panic!(
            "expected a failure containing {needle:?}, the call succeeded: {:?}",
            outcome.logs
        )
    });
    assert!(
        message.contains(needle),
        "expected {needle:?} in {message:?}"
    );
}

/// The NEP-297 events of an outcome, checked for the contract's standard and version.
fn events(outcome: &CallOutcome) -> Vec<Value> {
    outcome
        .events()
        .map(|line| {
            let event: Value = serde_json::from_str(line).unwrap();
            assert_eq!(event["standard"], "near-outlayer", "{line}");
            assert_eq!(event["version"], "1.0.0", "{line}");
            event
        })
        .collect()
}

fn single_event(outcome: &CallOutcome, name: &str) -> Value {
    let events = events(outcome);
    let matching: Vec<_> = events.iter().filter(|e| e["event"] == name).collect();
    assert_eq!(
        matching.len(),
        1,
        "one {name} event expected in {events:#?}"
    );
    let data = matching[0]["data"].as_array().unwrap();
    assert_eq!(data.len(), 1);
    data[0].clone()
}

/// The pending index (an AVL tree) keeps the slot of a removed node as a free slot for the next
/// request: the contract's storage returns to where it was but for that one slot.
const INDEX_FREE_SLOT_BYTES: u64 = 64;

#[track_caller]
fn assert_freed(after: u64, before: u64) {
    assert!(
        after >= before && after - before <= INDEX_FREE_SLOT_BYTES,
        "the request's storage is freed: {before} bytes before, {after} after"
    );
}

fn yocto(value: &Value) -> u128 {
    value.as_str().unwrap().parse().unwrap()
}

fn refund_to(outcome: &CallOutcome, receiver: &AccountId) -> u128 {
    let transfers: Vec<_> = outcome.transfers().collect();
    assert_eq!(
        transfers.len(),
        1,
        "one refund transfer expected: {transfers:?}"
    );
    assert_eq!(transfers[0].0, receiver);
    transfers[0].1.as_yoctonear()
}

#[test]
fn request_resolve_callback_in_nearcore_vm() {
    let mut chain = Chain::new();
    let storage_before = chain.vm.account().storage_usage;
    let balance_before = chain.vm.account().balance;

    let (requested, data_id) = chain.request("hello from the client");
    let request_args_len = chain.last_args_len;
    let event = single_event(&requested, "execution_requested");
    assert_eq!(event["request_id"], 0);
    assert_eq!(event["sender_id"], "client.near");
    assert_eq!(
        event["data_id"],
        data_id.to_string(),
        "the event names the yield's data id"
    );
    assert_eq!(event["input_data"], "hello from the client");
    assert_eq!(yocto(&event["payment"]), DEPOSIT.as_yoctonear());
    assert!(
        chain.vm.account().storage_usage > storage_before,
        "the pending request is stored"
    );

    let pending = chain.view("get_pending_requests", &json!({}));
    assert_eq!(pending.as_array().map(Vec::len), Some(1), "{pending}");

    let response = json!({
        "success": true,
        "output": {"Text": "hello from the executor"},
        "resources_used": {"instructions": 5_000_000u64, "time_ms": 12, "compile_time_ms": 3}
    });
    let resolved = chain.resolve(0, response.clone());
    assert_success(&resolved, "resolve_execution");
    let resolve_args_len = chain.last_args_len;
    assert_eq!(resolved.yield_resumes.len(), 1);
    let resume = resolved.yield_resumes[0].clone();
    assert_eq!(resume.data_id, data_id);
    let payload: Value = serde_json::from_slice(&resume.payload).unwrap();
    assert_eq!(payload, response, "the resume carries the response as JSON");
    let event = single_event(&resolved, "execution_resolved");
    assert_eq!(event["success"], true);
    assert_eq!(event["two_step"], false);

    let again = chain.resolve(0, response);
    assert_fails_with(&again, "not found or already resolved");

    let completed = chain.callback(
        &resume.yielded,
        PromiseResult::Successful(resume.payload.clone()),
    );
    let output: Value = serde_json::from_slice(completed.value().unwrap()).unwrap();
    assert_eq!(output, "hello from the executor");

    let cost = BASE_FEE + 5 * PER_MILLION_INSTRUCTIONS + 12 * PER_MS + 3 * PER_MS;
    let refund = refund_to(&completed, &chain.client);
    assert_eq!(refund, DEPOSIT.as_yoctonear() - cost);
    let event = single_event(&completed, "execution_completed");
    assert_eq!(event["success"], true);
    assert_eq!(event["timed_out"], false);
    assert_eq!(yocto(&event["payment_charged"]), cost);
    assert_eq!(yocto(&event["payment_refunded"]), refund);
    assert_eq!(event["resources_used"]["instructions"], 5_000_000);

    assert_freed(chain.vm.account().storage_usage, storage_before);
    assert_eq!(
        chain.vm.account().balance.as_yoctonear(),
        balance_before.as_yoctonear() + cost,
        "the contract keeps exactly the cost"
    );
    let pending = chain.view("get_pending_requests", &json!({}));
    assert_eq!(pending, json!([]));

    let wasm_len = chain.vm.code().len();
    println!(
        "contract wasm: {wasm_len} bytes ({:.1} KiB)",
        wasm_len as f64 / 1024.0
    );
    println!(
        "gas in nearcore's VM (protocol {}):",
        chain.vm.protocol_version()
    );
    // Receipt fees the chain adds around the VM: a transaction's receipt burns send + exec fees.
    // The callback's send fee is inside request_execution's burnt gas (promise_yield_create pays
    // it); its exec fee is prepaid there (in "used") and burnt when the callback runs.
    let vm = &chain.vm;
    let request_fees = vm.function_call_fees("request_execution", request_args_len, false);
    let resolve_fees = vm.function_call_fees("resolve_execution", resolve_args_len, false);
    let callback = &resume.yielded.callback;
    let callback_fees = vm.function_call_fees(&callback.method_name, callback.args.len(), true);
    for (step, outcome, receipt_fees) in [
        (
            "request_execution",
            &requested,
            request_fees.send.saturating_add(request_fees.exec),
        ),
        (
            "resolve_execution",
            &resolved,
            resolve_fees.send.saturating_add(resolve_fees.exec),
        ),
        ("on_execution_response", &completed, callback_fees.exec),
    ] {
        println!(
            "  {step:<22} burnt {:>11}  used {:>12}  +receipt fees {:>11}  storage ops \
             r/w/rm/has {}/{}/{}/{}",
            tgas(outcome.gas_burnt),
            tgas(outcome.gas_used),
            tgas(receipt_fees),
            outcome.storage_ops.reads,
            outcome.storage_ops.writes,
            outcome.storage_ops.removes,
            outcome.storage_ops.has_key,
        );
    }
}

/// The seed signature is checked by nearcore's own `ed25519_verify`: the recorded key's signature over
/// the request's seed message passes, any other fails the resolve. Prints what the check costs.
#[test]
fn a_seeded_answer_is_checked_by_the_vms_ed25519_verify() {
    let mut chain = Chain::new();
    let response = |signature: Option<String>| {
        let mut evidence = json!({"wasm_sha256": "ab".repeat(32)});
        if let Some(signature) = signature {
            evidence["seed_signature"] = signature.into();
        }
        json!({
            "success": true,
            "output": {"Text": "hi"},
            "resources_used": {"instructions": 5_000_000u64, "time_ms": 12},
            "evidence": evidence
        })
    };
    // Before any seed key: request 0 records none and is answered without a signature.
    chain.request("unseeded");
    let unsigned = chain.resolve(0, response(None));
    assert_success(&unsigned, "resolve_execution (no seed key)");

    let key = near_crypto::SecretKey::from_seed(near_crypto::KeyType::ED25519, "seed");
    let operator = chain.operator.clone();
    let published = chain.call(
        &operator,
        "set_seed_public_key",
        &json!({"public_key": key.public_key().to_string()}),
        Balance::ZERO,
        CALL_GAS,
    );
    assert_success(&published, "set_seed_public_key");
    let (requested, data_id) = chain.request("seeded");
    let event = single_event(&requested, "execution_requested");
    assert_eq!(event["seed_public_key"], key.public_key().to_string());
    let sign = |key: &near_crypto::SecretKey, id: u64| {
        let message = outlayer_contract::seed_message("outlayer.near", id, &data_id.to_string());
        key.sign(&message).to_string()
    };
    let other = near_crypto::SecretKey::from_seed(near_crypto::KeyType::ED25519, "other");
    let forged = chain.resolve(1, response(Some(sign(&other, 1))));
    assert_fails_with(&forged, "is not the seed key");
    let wrong_request = chain.resolve(1, response(Some(sign(&key, 0))));
    assert_fails_with(&wrong_request, "is not the seed key");
    let missing = chain.resolve(1, response(None));
    assert_fails_with(&missing, "must carry evidence.seed_signature");
    let signed = chain.resolve(1, response(Some(sign(&key, 1))));
    assert_success(&signed, "resolve_execution (seeded)");
    let payload = signed.yield_resumes[0].payload.len();
    println!(
        "resolve_execution burnt {} without a seed signature, {} with one (checked); resume payload \
         {payload} bytes",
        tgas(unsigned.gas_burnt),
        tgas(signed.gas_burnt),
    );
    assert!(payload < 1024, "{payload}");
}

#[test]
fn output_over_the_yield_payload_limit_goes_in_two_steps() {
    let mut chain = Chain::new();
    let (_, data_id) = chain.request("large please");
    let large = "x".repeat(3000);
    let resources = json!({"instructions": 1_000_000u64, "time_ms": 2});

    let inline = chain.resolve(
        0,
        json!({"success": true, "output": {"Text": large}, "resources_used": resources}),
    );
    assert_fails_with(&inline, "1024-byte");
    assert!(
        chain.vm.pending_yields().any(|y| y.data_id == data_id),
        "still pending"
    );

    let operator = chain.operator.clone();
    let submitted = chain.call(
        &operator,
        "submit_execution_output",
        &json!({"request_id": 0, "output": {"Text": large}}),
        Balance::ZERO,
        CALL_GAS,
    );
    assert_success(&submitted, "submit_execution_output");
    let event = single_event(&submitted, "output_submitted");
    assert!(event["output_bytes"].as_u64().unwrap() > 3000);

    let resolved = chain.resolve(0, json!({"success": true, "resources_used": resources}));
    assert_success(&resolved, "resolve_execution (two-step)");
    assert_eq!(
        single_event(&resolved, "execution_resolved")["two_step"],
        true
    );
    let resume = resolved.yield_resumes[0].clone();
    assert!(resume.payload.len() <= chain.vm.max_yield_payload_size() as usize);

    let completed = chain.callback(&resume.yielded, PromiseResult::Successful(resume.payload));
    let output: Value = serde_json::from_slice(completed.value().unwrap()).unwrap();
    assert_eq!(
        output,
        large.as_str(),
        "the stored output reaches the client"
    );
    let cost = BASE_FEE + PER_MILLION_INSTRUCTIONS + 2 * PER_MS;
    assert_eq!(
        refund_to(&completed, &chain.client),
        DEPOSIT.as_yoctonear() - cost
    );
    assert_eq!(
        single_event(&completed, "execution_completed")["success"],
        true
    );

    println!(
        "two-step: submit_execution_output ({} output bytes) burnt {}, resolve_execution burnt {}, \
         callback burnt {}",
        large.len(),
        tgas(submitted.gas_burnt),
        tgas(resolved.gas_burnt),
        tgas(completed.gas_burnt)
    );
}

#[test]
fn yield_timeout_refunds_all_but_the_base_fee() {
    let mut chain = Chain::new();
    let storage_before = chain.vm.account().storage_usage;
    let (requested, _) = chain.request("nobody answers");
    let created_at = chain.block;
    let timeout = chain.vm.yield_timeout_blocks();

    assert!(
        chain
            .vm
            .take_timed_out_yields(created_at + timeout - 1)
            .is_empty()
    );
    let expired = chain.vm.take_timed_out_yields(created_at + timeout);
    assert_eq!(expired.len(), 1);
    chain.block = created_at + timeout;

    // The operator answers too late: the yield is gone, the resolve fails and changes nothing.
    let late = chain.resolve(
        0,
        json!({"success": true, "output": {"Text": "late"}, "resources_used": {"instructions": 1, "time_ms": 1}}),
    );
    assert_fails_with(&late, "no longer pending");

    let completed = chain.callback(&expired[0], PromiseResult::Failed);
    assert_eq!(
        completed.value(),
        Some(&b"null"[..]),
        "no output on timeout"
    );
    assert_eq!(
        refund_to(&completed, &chain.client),
        DEPOSIT.as_yoctonear() - BASE_FEE
    );
    let event = single_event(&completed, "execution_completed");
    assert_eq!(event["success"], false);
    assert_eq!(event["timed_out"], true);
    assert_eq!(yocto(&event["payment_charged"]), BASE_FEE);
    assert_freed(chain.vm.account().storage_usage, storage_before);
    println!(
        "timeout: request_execution burnt {}, timeout callback burnt {}",
        tgas(requested.gas_burnt),
        tgas(completed.gas_burnt)
    );
}

/// The same lifecycle with a pessimistic stand-in for the trie-node gas nearcore charges per
/// storage access (20 nodes, none cached), to bound what the figures above leave out.
#[test]
fn lifecycle_gas_with_trie_node_stand_in() {
    const NODES: u64 = 20;
    let mut chain = Chain::with_trie_nodes_per_access(NODES);
    let (requested, _) = chain.request("bound the gas");
    let resolved = chain.resolve(
        0,
        json!({"success": true, "output": {"Text": "ok"}, "resources_used": {"instructions": 1, "time_ms": 1}}),
    );
    assert_success(&resolved, "resolve_execution");
    let resume = resolved.yield_resumes[0].clone();
    let completed = chain.callback(&resume.yielded, PromiseResult::Successful(resume.payload));
    assert_eq!(
        serde_json::from_slice::<Value>(completed.value().unwrap()).unwrap(),
        "ok"
    );
    println!("gas burnt with {NODES} uncached trie nodes charged per storage access:");
    for (step, outcome) in [
        ("request_execution", &requested),
        ("resolve_execution", &resolved),
        ("on_execution_response", &completed),
    ] {
        println!("  {step:<24} burnt {:>12}", tgas(outcome.gas_burnt));
    }
}

/// The arguments an OutLayer client contract sends today (`source` enum, optional limits and input,
/// `payer_account_id`, `params`), byte for byte what its `ext_outlayer` call serializes.
fn outlayer_client_args(payer: &str) -> Value {
    json!({
        "source": {"GitHub": {
            "repo": "https://github.com/outlayer/examples",
            "commit": "0123456789abcdef0123456789abcdef01234567",
            "build_target": "wasm32-wasip1"
        }},
        "resource_limits": {
            "max_instructions": 1_000_000_000u64,
            "max_memory_mb": 128,
            "max_execution_seconds": 10
        },
        "input_data": "{\"question\":\"6x7\"}",
        "secrets_ref": null,
        "response_format": "Json",
        "payer_account_id": payer,
        "params": null
    })
}

#[test]
fn an_outlayer_client_request_runs_like_the_seed_shape_and_refunds_the_payer() {
    let mut chain = Chain::new();
    let client = chain.client.clone();
    let requested = chain.call(
        &client,
        "request_execution",
        &outlayer_client_args("payer.near"),
        DEPOSIT,
        REQUEST_GAS,
    );
    assert_success(&requested, "request_execution");
    let event = single_event(&requested, "execution_requested");
    assert_eq!(event["source_kind"], "GitHub");
    assert_eq!(event["sender_id"], "client.near");
    assert_eq!(event["payer_account_id"], "payer.near");
    // Stored exactly as the seed's flat shape: the operator's watcher reads it unchanged.
    assert_eq!(
        event["code_source"],
        json!({
            "repo": "https://github.com/outlayer/examples",
            "commit": "0123456789abcdef0123456789abcdef01234567",
            "build_target": "wasm32-wasip1"
        })
    );
    assert_eq!(event["response_format"], "Json");
    let stored = chain.view("get_request", &json!({"request_id": 0}));
    assert_eq!(stored["source_kind"], "GitHub");
    assert_eq!(stored["code_source"], event["code_source"]);
    assert_eq!(stored["payer_account_id"], "payer.near");
    let pending = chain.view("get_pending_requests", &json!({}));
    assert_eq!(pending[0]["source_kind"], "GitHub");
    assert_eq!(pending[0]["code_source"], event["code_source"]);

    let data_id = requested.yields_created().next().unwrap().0;
    let response = json!({
        "success": true,
        "output": {"Json": {"answer": 42}},
        "resources_used": {"instructions": 5_000_000u64, "time_ms": 12}
    });
    let resolved = chain.resolve(0, response);
    assert_success(&resolved, "resolve_execution");
    let resume = resolved.yield_resumes[0].clone();
    assert_eq!(resume.data_id, data_id);
    let completed = chain.callback(&resume.yielded, PromiseResult::Successful(resume.payload));
    let output: Value = serde_json::from_slice(completed.value().unwrap()).unwrap();
    assert_eq!(output, json!({"answer": 42}));
    let cost = BASE_FEE + 5 * PER_MILLION_INSTRUCTIONS + 12 * PER_MS;
    assert_eq!(
        refund_to(&completed, &account("payer.near")),
        DEPOSIT.as_yoctonear() - cost,
        "the refund goes to the payer, not the caller"
    );
    let event = single_event(&completed, "execution_completed");
    assert_eq!(event["payer_account_id"], "payer.near");
    assert_eq!(event["sender_id"], "client.near");
    assert_eq!(yocto(&event["payment_charged"]), cost);
}

#[test]
fn request_shapes_are_exactly_one_and_the_payer_a_valid_account() {
    let mut chain = Chain::new();
    let client = chain.client.clone();
    let seed_source = json!({
        "repo": "https://github.com/outlayer/examples",
        "commit": "0123456789abcdef0123456789abcdef01234567"
    });
    let mut both = outlayer_client_args("payer.near");
    both["code_source"] = seed_source;
    let mut neither = outlayer_client_args("payer.near");
    neither.as_object_mut().unwrap().remove("source");
    let mut wasm_url = outlayer_client_args("payer.near");
    wasm_url["source"] = json!({"WasmUrl": {
        "url": "http://example.com/m.wasm", "hash": "ab".repeat(32), "build_target": "wasm32-wasip1"
    }});
    for (args, expected) in [
        (both, "give the code once: either code_source"),
        (neither, "the code to run is missing"),
        (
            outlayer_client_args("Bad Payer"),
            "payer_account_id must be a valid NEAR account id",
        ),
        (wasm_url, "source.WasmUrl.url must start with https://"),
    ] {
        let outcome = chain.call(&client, "request_execution", &args, DEPOSIT, REQUEST_GAS);
        assert_fails_with(&outcome, expected);
    }
    assert_eq!(chain.view("get_pending_requests", &json!({})), json!([]));
}

/// OutLayer's compile-only request (`params.compile_only`, and the same with the limits left out): stored
/// as such, charged the base fee and the compile time whatever the answer claims to have run.
#[test]
fn a_compile_only_request_is_charged_base_and_compile_time() {
    let mut chain = Chain::new();
    let client = chain.client.clone();
    let mut by_params = outlayer_client_args("payer.near");
    by_params["params"] = json!({"compile_only": true});
    let mut without_limits = outlayer_client_args("payer.near");
    without_limits
        .as_object_mut()
        .unwrap()
        .remove("resource_limits");
    for (id, args) in [(0u64, by_params), (1, without_limits)] {
        let requested = chain.call(&client, "request_execution", &args, DEPOSIT, REQUEST_GAS);
        assert_success(&requested, "request_execution (compile-only)");
        let event = single_event(&requested, "execution_requested");
        assert_eq!(event["compile_only"], true, "{event}");
        let response = json!({
            "success": true,
            "output": {"Json": {"wasm_sha256": "ab".repeat(32), "size_bytes": 100, "compile_time_ms": 7}},
            "resources_used": {"instructions": 5_000_000u64, "time_ms": 12, "compile_time_ms": 7},
            "evidence": {"wasm_sha256": "ab".repeat(32)}
        });
        let resolved = chain.resolve(id, response);
        assert_success(&resolved, "resolve_execution (compile-only)");
        let resume = resolved.yield_resumes[0].clone();
        let completed = chain.callback(&resume.yielded, PromiseResult::Successful(resume.payload));
        let output: Value = serde_json::from_slice(completed.value().unwrap()).unwrap();
        assert_eq!(output["size_bytes"], 100);
        let event = single_event(&completed, "execution_completed");
        assert_eq!(yocto(&event["payment_charged"]), BASE_FEE + 7 * PER_MS);
    }
}

#[test]
fn a_too_small_deposit_is_refused_once_with_the_full_amount() {
    let mut chain = Chain::new();
    let client = chain.client.clone();
    let args = outlayer_client_args("payer.near");
    let refused = chain.call(
        &client,
        "request_execution",
        &args,
        Balance::from_yoctonear(1),
        REQUEST_GAS,
    );
    let message = refused
        .error_message()
        .expect("a 1-yocto deposit is refused");
    let required: u128 = message
        .split("is too small: ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|amount| amount.parse().ok())
        .unwrap_or_else(|| panic!("no required amount in {message:?}"));
    let estimate = BASE_FEE + 1_000 * PER_MILLION_INSTRUCTIONS + 10_000 * PER_MS;
    assert!(
        required > estimate,
        "estimate {estimate} plus storage: {message}"
    );
    assert!(
        message.contains("storage of the pending request"),
        "{message}"
    );

    // One yocto less is still refused; exactly the quoted amount is enough (whatever data id the
    // yield gets this time).
    let short = chain.call(
        &client,
        "request_execution",
        &args,
        Balance::from_yoctonear(required - 1),
        REQUEST_GAS,
    );
    assert_fails_with(&short, &format!("{required} yoctoNEAR is required"));
    let accepted = chain.call(
        &client,
        "request_execution",
        &args,
        Balance::from_yoctonear(required),
        REQUEST_GAS,
    );
    assert_success(&accepted, "request_execution with the quoted deposit");
}

/// The gas of one `get_pending_requests` page.
fn pending_page_gas(chain: &Chain, from_id: u64, limit: u32) -> (Gas, usize) {
    let ctx = ViewContext::new(chain.contract.clone()).at_block(chain.block, 0);
    let args = serde_json::to_vec(&json!({"from_id": from_id, "limit": limit})).unwrap();
    let outcome = chain.vm.view("get_pending_requests", &args, &ctx).unwrap();
    assert_success(&outcome, "get_pending_requests");
    let page: Vec<Value> = serde_json::from_slice(outcome.value().unwrap()).unwrap();
    if let Some(first) = page.first() {
        assert!(first["request_id"].as_u64().unwrap() >= from_id);
    }
    (outcome.gas_burnt, page.len())
}

/// `get_pending_requests` pays for the page it returns, not for the backlog: with 5,000 requests
/// pending a page costs about what it costs with 100, and a short page less than a long one.
#[test]
fn pending_requests_page_costs_the_page_not_the_backlog() {
    const BACKLOG: u64 = 5_000;
    let mut chain = Chain::new();
    let mut small_backlog = None;
    for id in 0..BACKLOG {
        chain.request(&format!("request {id}"));
        if id + 1 == 100 {
            small_backlog = Some(pending_page_gas(&chain, 0, 100));
        }
    }
    // Resolve a stretch in the middle: the page skips what is no longer pending.
    for id in 2_500..2_600 {
        let resolved = chain.resolve(
            id,
            json!({"success": true, "output": {"Text": "ok"}, "resources_used": {"instructions": 1, "time_ms": 1}}),
        );
        assert_success(&resolved, "resolve_execution");
    }
    let (small, small_len) = small_backlog.unwrap();
    assert_eq!(small_len, 100);
    let (first, first_len) = pending_page_gas(&chain, 0, 100);
    let (middle, middle_len) = pending_page_gas(&chain, 2_450, 100);
    let (last, last_len) = pending_page_gas(&chain, BACKLOG - 100, 100);
    let (short, short_len) = pending_page_gas(&chain, 2_450, 10);
    assert_eq!(
        (first_len, middle_len, last_len, short_len),
        (100, 100, 100, 10)
    );
    let middle_ids = {
        let ctx = ViewContext::new(chain.contract.clone()).at_block(chain.block, 0);
        let args = serde_json::to_vec(&json!({"from_id": 2_450, "limit": 100})).unwrap();
        let outcome = chain.vm.view("get_pending_requests", &args, &ctx).unwrap();
        let page: Vec<Value> = serde_json::from_slice(outcome.value().unwrap()).unwrap();
        page.iter()
            .map(|r| r["request_id"].as_u64().unwrap())
            .collect::<Vec<_>>()
    };
    let expected: Vec<u64> = (2_450..2_500).chain(2_600..2_650).collect();
    assert_eq!(middle_ids, expected, "id order, resolved requests skipped");

    println!(
        "get_pending_requests, limit 100: {} with 100 pending; with {BACKLOG} pending {} (from 0), \
         {} (from 2450, across 100 resolved), {} (last page); limit 10: {}",
        tgas(small),
        tgas(first),
        tgas(middle),
        tgas(last),
        tgas(short)
    );
    for page in [first, middle, last] {
        assert!(
            page.as_gas() < small.as_gas() * 2,
            "a page with {BACKLOG} pending ({}) costs more than twice one with 100 ({})",
            tgas(page),
            tgas(small)
        );
    }
    assert!(
        short.as_gas() * 4 < middle.as_gas(),
        "10 requests ({}) should cost far less than 100 ({})",
        tgas(short),
        tgas(middle)
    );
}

/// The callback at the largest request the contract takes: a 256 KiB input and a 64 KiB output
/// (stored with `submit_execution_output`), with the margin it keeps under its 20 Tgas reserve.
#[test]
fn the_callback_fits_its_reserve_at_maximum_input_and_output() {
    const RESERVE: Gas = Gas::from_teragas(20);
    for nodes in [0, 20] {
        let mut chain = Chain::with_trie_nodes_per_access(nodes);
        let input = "i".repeat(256 * 1024);
        let args = json!({
            "code_source": {
                "repo": "https://github.com/outlayer/examples",
                "commit": "0123456789abcdef0123456789abcdef01234567"
            },
            "resource_limits": {
                "max_instructions": 1_000_000_000u64,
                "max_memory_mb": 128,
                "max_execution_seconds": 10
            },
            "input_data": input,
        });
        let client = chain.client.clone();
        // Storage of the input (~2.6 NEAR) and of the output (~0.66 NEAR) come from the deposit.
        let deposit = Balance::from_near(4);
        let requested = chain.call(
            &client,
            "request_execution",
            &args,
            deposit,
            Gas::from_teragas(300),
        );
        assert_success(&requested, "request_execution (256 KiB input)");

        // The largest output the contract stores: 65,536 bytes as JSON ({"Text":"…"} adds 11).
        let output = "o".repeat(64 * 1024 - 11);
        let operator = chain.operator.clone();
        let submitted = chain.call(
            &operator,
            "submit_execution_output",
            &json!({"request_id": 0, "output": {"Text": output}}),
            Balance::ZERO,
            Gas::from_teragas(300),
        );
        assert_success(&submitted, "submit_execution_output (64 KiB)");
        let resolved = chain.resolve(
            0,
            json!({"success": true, "resources_used": {"instructions": 1_000_000u64, "time_ms": 1}}),
        );
        assert_success(&resolved, "resolve_execution");
        let resume = resolved.yield_resumes[0].clone();
        assert_eq!(resume.yielded.callback.gas, RESERVE);
        let completed = chain.callback(&resume.yielded, PromiseResult::Successful(resume.payload));
        let returned: Value = serde_json::from_slice(completed.value().unwrap()).unwrap();
        assert_eq!(returned.as_str().map(str::len), Some(output.len()));
        let cost = BASE_FEE + PER_MILLION_INSTRUCTIONS + PER_MS;
        assert_eq!(
            refund_to(&completed, &chain.client),
            deposit.as_yoctonear() - cost
        );
        let callback = &resume.yielded.callback;
        let exec_fee = chain
            .vm
            .function_call_fees(&callback.method_name, callback.args.len(), true)
            .exec;
        let used = completed.gas_used.saturating_add(exec_fee);
        if std::env::var_os("OUTLAYER_GAS_PROFILE").is_some() {
            println!("{:#?}", completed.profile);
        }
        println!(
            "on_execution_response with a 256 KiB input and a 64 KiB output ({nodes} trie nodes \
             per access): burnt {}, used {} (+ exec fee {}) of the {} reserve; submit {}, \
             request {}",
            tgas(completed.gas_burnt),
            tgas(completed.gas_used),
            tgas(exec_fee),
            tgas(RESERVE),
            tgas(submitted.gas_burnt),
            tgas(requested.gas_burnt)
        );
        assert!(
            used.as_gas() * 2 < RESERVE.as_gas(),
            "the callback at maximum sizes uses {} of its {} reserve: less than half expected",
            tgas(used),
            tgas(RESERVE)
        );

        // Nobody answers: the timeout callback frees the whole 256 KiB request itself.
        let requested = chain.call(
            &client,
            "request_execution",
            &args,
            deposit,
            Gas::from_teragas(300),
        );
        assert_success(&requested, "request_execution (256 KiB input, no answer)");
        let expired = chain
            .vm
            .take_timed_out_yields(chain.block + chain.vm.yield_timeout_blocks());
        assert_eq!(expired.len(), 1);
        let timed_out = chain.callback(&expired[0], PromiseResult::Failed);
        assert_eq!(
            refund_to(&timed_out, &chain.client),
            deposit.as_yoctonear() - BASE_FEE
        );
        let used = timed_out.gas_used.saturating_add(exec_fee);
        println!(
            "timeout callback with a 256 KiB input ({nodes} trie nodes per access): burnt {}, used {} \
             (+ exec fee {}) of the {} reserve",
            tgas(timed_out.gas_burnt),
            tgas(timed_out.gas_used),
            tgas(exec_fee),
            tgas(RESERVE)
        );
        assert!(
            used.as_gas() * 4 < RESERVE.as_gas() * 3,
            "the timeout callback at the maximum input uses {} of its {} reserve: under 75% expected",
            tgas(used),
            tgas(RESERVE)
        );
    }
}

/// `new` is private: only the contract account initializes it (deploy + init in one transaction).
#[test]
fn only_the_contract_account_may_initialize_it() {
    let wasm = load_wasm();
    let mut vm = ContractVm::new(&wasm, PROTOCOL_VERSION)
        .unwrap()
        .with_balance(Balance::from_near(10));
    let contract = account("outlayer.near");
    let init =
        serde_json::to_vec(&json!({"owner_id": "mallory.near", "operator_id": "mallory.near"}))
            .unwrap();
    let by_stranger =
        CallContext::new(contract.clone(), account("mallory.near")).with_gas(CALL_GAS);
    let refused = vm.call("new", &init, &by_stranger).unwrap();
    assert_fails_with(&refused, "is private");
    let by_itself = CallContext::new(contract.clone(), contract.clone()).with_gas(CALL_GAS);
    let accepted = vm.call("new", &init, &by_itself).unwrap();
    assert_success(&accepted, "new by the contract account");
}
