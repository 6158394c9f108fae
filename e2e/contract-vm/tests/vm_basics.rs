//! The library on a tiny hand-written contract (WAT calling NEAR host functions directly), so each
//! behaviour is checked without near-sdk in between.

use e2e_contract_vm::{
    AccountId, Action, Balance, CallContext, CallError, ContractVm, Error, FunctionCallError, Gas,
    HostError, PROTOCOL_VERSION, PromiseResult, ReturnValue, ViewContext,
};

const CONTRACT: &str = r#"
(module
  (import "env" "input" (func $input (param i64)))
  (import "env" "read_register" (func $read_register (param i64 i64)))
  (import "env" "register_len" (func $register_len (param i64) (result i64)))
  (import "env" "value_return" (func $value_return (param i64 i64)))
  (import "env" "log_utf8" (func $log_utf8 (param i64 i64)))
  (import "env" "panic_utf8" (func $panic_utf8 (param i64 i64)))
  (import "env" "storage_write" (func $storage_write (param i64 i64 i64 i64 i64) (result i64)))
  (import "env" "storage_read" (func $storage_read (param i64 i64 i64) (result i64)))
  (import "env" "promise_yield_create"
    (func $promise_yield_create (param i64 i64 i64 i64 i64 i64 i64) (result i64)))
  (import "env" "promise_yield_resume"
    (func $promise_yield_resume (param i64 i64 i64 i64) (result i32)))
  (import "env" "promise_result" (func $promise_result (param i64 i64) (result i64)))
  (import "env" "promise_return" (func $promise_return (param i64)))
  (import "env" "promise_batch_create" (func $promise_batch_create (param i64 i64) (result i64)))
  (import "env" "promise_batch_action_transfer"
    (func $promise_batch_action_transfer (param i64 i64)))
  (memory 1)
  (data (i32.const 0) "hello")
  (data (i32.const 8) "world")
  (data (i32.const 16) "k")
  (data (i32.const 24) "cb")
  (data (i32.const 32) "bob.near")
  ;; 1000 yoctoNEAR, u128 little endian
  (data (i32.const 48) "\e8\03\00\00\00\00\00\00\00\00\00\00\00\00\00\00")
  (data (i32.const 64) "no yield")
  (data (i32.const 80) "timeout")
  (data (i32.const 96) "boom")

  ;; input -> memory[1024..], returns its length
  (func $load_input (result i64)
    (call $input (i64.const 0))
    (call $read_register (i64.const 0) (i64.const 1024))
    (call $register_len (i64.const 0)))

  (func (export "hello")
    (call $log_utf8 (i64.const 5) (i64.const 0))
    (call $value_return (i64.const 5) (i64.const 8)))

  (func $put
    (drop (call $storage_write
      (i64.const 1) (i64.const 16) (call $load_input) (i64.const 1024) (i64.const 1))))
  (func (export "put") (call $put))

  (func (export "put_then_panic")
    (call $put)
    (call $log_utf8 (i64.const 5) (i64.const 0))
    (call $panic_utf8 (i64.const 4) (i64.const 96)))

  (func (export "get")
    (if (i64.eq (call $storage_read (i64.const 1) (i64.const 16) (i64.const 0)) (i64.const 1))
      (then
        (call $read_register (i64.const 0) (i64.const 1024))
        (call $value_return (call $register_len (i64.const 0)) (i64.const 1024)))))

  ;; yields the callback "cb" (10 Tgas, weight 1) with the input as its arguments
  (func (export "yield")
    (call $promise_return
      (call $promise_yield_create
        (i64.const 2) (i64.const 24) (call $load_input) (i64.const 1024)
        (i64.const 10000000000000) (i64.const 1) (i64.const 1))))

  ;; input = 32-byte data id ++ payload
  (func (export "resume")
    (if (i32.eqz (call $promise_yield_resume
          (i64.const 32) (i64.const 1024)
          (i64.sub (call $load_input) (i64.const 32)) (i64.const 1056)))
      (then (call $panic_utf8 (i64.const 8) (i64.const 64)))))

  ;; returns the resume payload, or logs "timeout" when the yield timed out
  (func (export "cb")
    (if (i64.eq (call $promise_result (i64.const 0) (i64.const 0)) (i64.const 1))
      (then
        (call $read_register (i64.const 0) (i64.const 1024))
        (call $value_return (call $register_len (i64.const 0)) (i64.const 1024)))
      (else (call $log_utf8 (i64.const 7) (i64.const 80)))))

  (func (export "pay")
    (call $promise_batch_action_transfer
      (call $promise_batch_create (i64.const 8) (i64.const 32)) (i64.const 48)))

  (func (export "burn") (loop (br 0)))
)
"#;

fn contract_account() -> AccountId {
    "contract.near".parse().unwrap()
}

fn alice() -> AccountId {
    "alice.near".parse().unwrap()
}

fn vm() -> ContractVm {
    let wasm = wat::parse_str(CONTRACT).unwrap();
    ContractVm::new(&wasm, PROTOCOL_VERSION)
        .unwrap()
        .with_balance(Balance::from_near(10))
}

fn ctx() -> CallContext {
    CallContext::new(contract_account(), alice())
}

#[test]
fn returns_value_and_logs_with_burnt_gas() {
    let mut vm = vm();
    let outcome = vm.call("hello", &[], &ctx()).unwrap();
    assert_eq!(outcome.error, None);
    assert_eq!(outcome.value(), Some(&b"world"[..]));
    assert_eq!(outcome.logs, vec!["hello".to_string()]);
    assert!(outcome.gas_burnt > Gas::ZERO);
    assert_eq!(
        outcome.gas_used, outcome.gas_burnt,
        "no receipts, nothing prepaid"
    );
    assert!(outcome.receipts.is_empty());
}

#[test]
fn storage_persists_across_calls_and_counts_usage() {
    let mut vm = vm();
    let before = vm.account().storage_usage;
    let per_record = vm.fees().storage_usage_config.num_extra_bytes_record;
    let put = vm.call("put", b"value-1", &ctx()).unwrap();
    assert!(put.is_success(), "{:?}", put.error);
    assert_eq!(put.storage_usage, before + 1 + 7 + per_record);
    assert_eq!(vm.account().storage_usage, put.storage_usage);
    assert_eq!(vm.storage_get(b"k"), Some(&b"value-1"[..]));

    let get = vm.call("get", &[], &ctx()).unwrap();
    assert_eq!(get.value(), Some(&b"value-1"[..]));
    assert_eq!((put.storage_ops.writes, get.storage_ops.reads), (1, 1));

    let view = vm
        .view("get", &[], &ViewContext::new(contract_account()))
        .unwrap();
    assert_eq!(view.value(), Some(&b"value-1"[..]));
}

#[test]
fn failed_call_keeps_logs_and_gas_but_changes_nothing() {
    let mut vm = vm();
    vm.call("put", b"kept", &ctx()).unwrap();
    let account = *vm.account();
    let deposit = Balance::from_near(1);
    let outcome = vm
        .call("put_then_panic", b"lost", &ctx().with_deposit(deposit))
        .unwrap();
    assert_eq!(
        outcome.error.as_ref().and_then(CallError::panic_message),
        Some("boom")
    );
    assert_eq!(outcome.logs, vec!["hello".to_string()]);
    assert!(outcome.gas_burnt > Gas::ZERO);
    assert_eq!(vm.storage_get(b"k"), Some(&b"kept"[..]));
    assert_eq!(
        *vm.account(),
        account,
        "the deposit is not taken and storage is unchanged"
    );
    assert_eq!(outcome.balance, account.balance);
}

#[test]
fn attached_deposit_is_credited() {
    let mut vm = vm();
    let before = vm.account().balance;
    let deposit = Balance::from_millinear(5);
    let outcome = vm.call("hello", &[], &ctx().with_deposit(deposit)).unwrap();
    assert_eq!(outcome.balance, before.checked_add(deposit).unwrap());
    assert_eq!(vm.account().balance, outcome.balance);
}

#[test]
fn yield_resume_and_callback() {
    let mut vm = vm();
    let prepaid = Gas::from_teragas(50);
    let created = vm
        .call(
            "yield",
            b"cb-args",
            &ctx().with_gas(prepaid).at_block(10, 5),
        )
        .unwrap();
    assert!(created.is_success(), "{:?}", created.error);
    assert_eq!(created.return_value, ReturnValue::Promise(0));
    let (data_id, callback) = created.yields_created().next().unwrap();
    assert_eq!(callback.method_name, "cb");
    assert_eq!(callback.args, b"cb-args");
    // weight 1: the call's unused gas went to the callback, so all prepaid gas is used.
    assert!(callback.gas > Gas::from_teragas(10));
    assert_eq!(created.gas_used, prepaid);
    assert_eq!(vm.pending_yields().count(), 1);

    let mut resume_args = data_id.as_bytes().to_vec();
    resume_args.extend_from_slice(b"the payload");
    let resumed = vm.call("resume", &resume_args, &ctx()).unwrap();
    assert!(resumed.is_success(), "{:?}", resumed.error);
    let resume = &resumed.yield_resumes[0];
    assert_eq!(resume.data_id, data_id);
    assert_eq!(resume.payload, b"the payload");
    assert_eq!(resume.yielded.callback.method_name, "cb");
    assert_eq!(resume.yielded.signer, alice());
    assert_eq!(vm.pending_yields().count(), 0);

    let again = vm.call("resume", &resume_args, &ctx()).unwrap();
    assert_eq!(
        again.error.as_ref().and_then(CallError::panic_message),
        Some("no yield")
    );

    let yielded = resume.yielded.clone();
    let payload = PromiseResult::Successful(resume.payload.clone());
    let callback = vm.run_yield_callback(&yielded, payload, 11, 6).unwrap();
    assert!(callback.is_success(), "{:?}", callback.error);
    assert_eq!(callback.value(), Some(&b"the payload"[..]));
}

#[test]
fn resume_of_unknown_data_id_is_refused() {
    let mut vm = vm();
    let mut resume_args = vec![7u8; 32];
    resume_args.extend_from_slice(b"x");
    let outcome = vm.call("resume", &resume_args, &ctx()).unwrap();
    assert_eq!(
        outcome.error.as_ref().and_then(CallError::panic_message),
        Some("no yield")
    );
}

#[test]
fn yield_times_out_after_the_protocol_window() {
    let mut vm = vm();
    let timeout = vm.yield_timeout_blocks();
    assert!(timeout > 0);
    vm.call("yield", b"", &ctx().at_block(10, 5)).unwrap();
    assert!(vm.take_timed_out_yields(10 + timeout - 1).is_empty());
    let expired = vm.take_timed_out_yields(10 + timeout);
    assert_eq!(expired.len(), 1);
    assert_eq!(vm.pending_yields().count(), 0);
    let outcome = vm
        .run_yield_callback(&expired[0], PromiseResult::Failed, 10 + timeout, 9)
        .unwrap();
    assert!(outcome.is_success(), "{:?}", outcome.error);
    assert_eq!(outcome.logs, vec!["timeout".to_string()]);
    assert_eq!(outcome.value(), None);
}

#[test]
fn transfer_leaves_the_balance() {
    let mut vm = vm();
    let before = vm.account().balance;
    let outcome = vm.call("pay", &[], &ctx()).unwrap();
    assert!(outcome.is_success(), "{:?}", outcome.error);
    let transfers: Vec<_> = outcome.transfers().collect();
    assert_eq!(
        transfers,
        vec![(
            &"bob.near".parse::<AccountId>().unwrap(),
            Balance::from_yoctonear(1000)
        )]
    );
    assert_eq!(
        outcome.receipts[0].actions,
        vec![Action::Transfer {
            deposit: Balance::from_yoctonear(1000)
        }]
    );
    assert_eq!(
        vm.account().balance,
        before.checked_sub(Balance::from_yoctonear(1000)).unwrap()
    );
}

#[test]
fn gas_exhaustion_is_a_call_error() {
    let mut vm = vm();
    let prepaid = Gas::from_teragas(5);
    let outcome = vm.call("burn", &[], &ctx().with_gas(prepaid)).unwrap();
    assert!(
        outcome
            .error
            .as_ref()
            .is_some_and(CallError::is_gas_exceeded),
        "{:?}",
        outcome.error
    );
    assert_eq!(outcome.gas_burnt, prepaid);
}

#[test]
fn views_cannot_write() {
    let vm = vm();
    let outcome = vm
        .view("put", b"x", &ViewContext::new(contract_account()))
        .unwrap();
    assert!(
        matches!(
            outcome.error,
            Some(CallError::Aborted(FunctionCallError::HostError(
                HostError::ProhibitedInView { .. }
            )))
        ),
        "{:?}",
        outcome.error
    );
}

#[test]
fn storage_must_be_paid_for() {
    let wasm = wat::parse_str(CONTRACT).unwrap();
    let mut vm = ContractVm::new(&wasm, PROTOCOL_VERSION).unwrap();
    let outcome = vm.call("put", &[0u8; 2000], &ctx()).unwrap();
    assert!(
        matches!(outcome.error, Some(CallError::LackBalanceForState { .. })),
        "{:?}",
        outcome.error
    );
    assert_eq!(vm.storage_get(b"k"), None);
}

#[test]
fn missing_method_is_a_call_error() {
    let mut vm = vm();
    let outcome = vm.call("nope", &[], &ctx()).unwrap();
    assert!(
        matches!(
            outcome.error,
            Some(CallError::Aborted(FunctionCallError::MethodResolveError(_)))
        ),
        "{:?}",
        outcome.error
    );
}

#[test]
fn unknown_host_function_fails_at_call_time_as_on_chain() {
    let unknown_import =
        wat::parse_str(r#"(module (import "env" "no_such_host_fn" (func)) (func (export "m")))"#)
            .unwrap();
    let mut vm = ContractVm::new(&unknown_import, PROTOCOL_VERSION).unwrap();
    let outcome = vm.call("m", &[], &ctx()).unwrap();
    assert!(
        matches!(
            outcome.error,
            Some(CallError::Aborted(FunctionCallError::LinkError { .. }))
        ),
        "{:?}",
        outcome.error
    );
}

#[test]
fn invalid_code_is_rejected_up_front() {
    let garbage = ContractVm::new(b"not wasm", PROTOCOL_VERSION).unwrap_err();
    assert!(matches!(garbage, Error::Prepare { .. }), "{garbage}");

    // NEAR does not enable multi-value (near-vm-runner features.rs): rejected before deployment.
    let multi_value =
        wat::parse_str(r#"(module (func (export "m") (result i32 i32) i32.const 1 i32.const 2))"#)
            .unwrap();
    let err = ContractVm::new(&multi_value, PROTOCOL_VERSION).unwrap_err();
    assert!(matches!(err, Error::Prepare { .. }), "{err}");

    let old = ContractVm::new(&wat::parse_str(CONTRACT).unwrap(), 1).unwrap_err();
    assert!(
        matches!(old, Error::ProtocolVersion { requested: 1, .. }),
        "{old}"
    );
}

#[test]
fn trie_node_stand_in_charges_touching_trie_node_per_access() {
    let wasm = wat::parse_str(CONTRACT).unwrap();
    let mut plain = vm();
    let mut charged = ContractVm::new(&wasm, PROTOCOL_VERSION)
        .unwrap()
        .with_balance(Balance::from_near(10))
        .with_trie_nodes_per_access(10);
    let per_node = charged
        .wasm_config()
        .ext_costs
        .gas_cost(near_parameters::ExtCosts::touching_trie_node);
    let without = plain.call("put", b"v", &ctx()).unwrap();
    let with = charged.call("put", b"v", &ctx()).unwrap();
    assert_eq!(with.storage_ops.writes, 1);
    assert_eq!(
        with.gas_burnt.as_gas() - without.gas_burnt.as_gas(),
        10 * per_node.as_gas()
    );
}
