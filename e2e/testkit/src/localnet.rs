//! The genesis most chain tests start from: a user (`alice.localnet`, also the contract's owner), the
//! operator's account (`operator.localnet`) and the real OutLayer contract on `outlayer.localnet`,
//! initialised with `new(owner_id: alice, operator_id: operator)`. Tests add block time, timeouts and
//! further accounts or contracts with the builder's own methods.

use e2e_localnet::{InitCall, LocalnetConfig};
use serde_json::json;

use crate::near::{NEAR, account, secret};

pub const ALICE: &str = "alice.localnet";
pub const OPERATOR: &str = "operator.localnet";
pub const OUTLAYER: &str = "outlayer.localnet";
pub const CLIENT: &str = "client.localnet";

/// alice with `alice_balance` yoctoNEAR, the operator with 10 NEAR, the OutLayer contract (built by
/// `scripts/build-wasm`) with 10 NEAR.
pub fn outlayer_genesis(alice_balance: u128) -> LocalnetConfig {
    LocalnetConfig::default()
        .with_account(account(ALICE), alice_balance, secret(ALICE).public_key())
        .with_account(account(OPERATOR), 10 * NEAR, secret(OPERATOR).public_key())
        .with_contract(
            account(OUTLAYER),
            10 * NEAR,
            crate::contract_wasm("outlayer_contract.wasm"),
            Some(InitCall {
                method: "new".to_string(),
                args: json!({"owner_id": ALICE, "operator_id": OPERATOR}),
            }),
        )
}

/// Adds the example client contract (`examples/client-contract`) on `client.localnet` with 10 NEAR,
/// pointed at `outlayer.localnet`.
pub fn with_client_contract(config: LocalnetConfig) -> LocalnetConfig {
    config.with_contract(
        account(CLIENT),
        10 * NEAR,
        crate::contract_wasm("example_client_contract.wasm"),
        Some(InitCall {
            method: "new".to_string(),
            args: json!({"outlayer_id": OUTLAYER}),
        }),
    )
}
