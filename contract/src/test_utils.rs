//! Shared helpers for the unit tests: accounts, contexts and event parsing.

use near_sdk::serde_json::{self, Value};
use near_sdk::test_utils::{VMContextBuilder, accounts, get_logs};
use near_sdk::{AccountId, Gas, NearToken, testing_env};

use crate::Contract;

pub fn owner() -> AccountId {
    accounts(0)
}
pub fn operator() -> AccountId {
    accounts(1)
}
pub fn user() -> AccountId {
    accounts(2)
}
pub fn stranger() -> AccountId {
    accounts(3)
}
pub fn contract_account() -> AccountId {
    "outlayer.near".parse().unwrap()
}

/// A context for a call by `predecessor` with `deposit` yoctoNEAR attached and 300 Tgas.
pub fn context(predecessor: AccountId, deposit: u128) -> VMContextBuilder {
    let mut builder = VMContextBuilder::new();
    builder
        .current_account_id(contract_account())
        .signer_account_id(predecessor.clone())
        .predecessor_account_id(predecessor)
        .attached_deposit(NearToken::from_yoctonear(deposit))
        .prepaid_gas(Gas::from_tgas(300))
        .account_balance(NearToken::from_near(1_000));
    builder
}

pub fn set_caller(predecessor: AccountId, deposit: u128) {
    testing_env!(context(predecessor, deposit).build());
}

pub fn new_contract() -> Contract {
    set_caller(owner(), 0);
    Contract::new(owner(), operator())
}

/// The NEP-297 events logged so far in this call, as JSON values.
pub fn events() -> Vec<Value> {
    get_logs()
        .iter()
        .filter_map(|line| line.strip_prefix("EVENT_JSON:"))
        .map(|json| serde_json::from_str(json).expect("event is JSON"))
        .collect()
}

/// The single event with this name, asserting the NEP-297 envelope.
pub fn event(name: &str) -> Value {
    let matching: Vec<Value> = events()
        .into_iter()
        .filter(|e| e["event"] == name)
        .collect();
    assert_eq!(
        matching.len(),
        1,
        "expected one {name} event, got {matching:?}"
    );
    let event = matching.into_iter().next().unwrap();
    assert_eq!(event["standard"], "near-outlayer");
    assert_eq!(event["version"], "1.0.0");
    event["data"][0].clone()
}

/// The mocked blockchain forgets created yields whenever `testing_env!` switches the caller. Its data
/// ids are a counter, so creating the same number of yields again in the new context re-registers them
/// under the same ids; the assertion makes sure they line up.
pub fn reregister_yields(expected_data_ids: &[String]) {
    for expected in expected_data_ids {
        near_sdk::env::promise_yield_create(
            "on_execution_response",
            "{}",
            Gas::from_tgas(1),
            near_sdk::GasWeight(0),
            7,
        );
        let data_id = near_sdk::env::read_register(7).expect("yield data id");
        assert_eq!(
            &near_sdk::bs58::encode(data_id).into_string(),
            expected,
            "mocked yield ids diverged"
        );
    }
}

/// Transfers the current call scheduled: (receiver, yoctoNEAR).
pub fn transfers() -> Vec<(AccountId, u128)> {
    use near_sdk::mock::MockAction;
    let mut found = Vec::new();
    for receipt in near_sdk::test_utils::get_created_receipts() {
        for action in &receipt.actions {
            if let MockAction::Transfer { deposit, .. } = action {
                found.push((receipt.receiver_id.clone(), deposit.as_yoctonear()));
            }
        }
    }
    found
}
