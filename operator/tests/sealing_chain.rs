//! The chain side of sealing against the test localnet running the real contract wasm: a ciphertext
//! stored with `store_secrets` is read back through `get_secrets` and opens; `NearBalance` reads real
//! balances (an unknown account has none); a condition on a contract without the NEP methods is
//! undecidable, not granted; the published key round-trips through `set_secrets_pubkey`.

mod common;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use common::chain::{NEAR, account, secret};
use e2e_localnet::Localnet;
use near_primitives::types::{AccountId, Balance, Gas};
use outlayer_contract::AccessCondition;
use outlayer_operator::chain::{CallStatus, ChainClient, ChainConfig, OperatorSigner};
use outlayer_operator::sealing::access::{self, ChainState};
use outlayer_operator::sealing::manifest::SealedSecret;
use outlayer_operator::sealing::unseal::SecretsStore;
use outlayer_operator::sealing::{
    KeyId, KeyPair, Keyring, Plaintext, Scope, SealingKey, open, seal,
};
use outlayer_testkit::localnet::outlayer_genesis;
use serde_json::json;

async fn start() -> (Localnet, AccountId) {
    let outlayer = account("outlayer.localnet");
    let config = outlayer_genesis(100 * NEAR).with_block_time(Duration::from_millis(50));
    (Localnet::start(config).await.unwrap(), outlayer)
}

fn client(net: &Localnet, outlayer: &AccountId, signer: Option<&str>) -> ChainClient {
    let signer = signer.map(|name| {
        OperatorSigner::from_secret_strings(name, &format!("{}\n", secret(name))).unwrap()
    });
    ChainClient::new(
        ChainConfig::new(vec![net.rpc_url()], outlayer.clone()),
        signer,
    )
    .unwrap()
}

async fn call(
    client: &ChainClient,
    outlayer: &AccountId,
    method: &str,
    args: serde_json::Value,
    deposit: u128,
) {
    let outcome = client
        .call_function(
            outlayer,
            method,
            &args,
            Gas::from_teragas(50),
            Balance::from_yoctonear(deposit),
        )
        .await
        .unwrap();
    assert!(
        matches!(outcome.status, CallStatus::Success(_)),
        "{method}: {:?}",
        outcome.status
    );
}

#[tokio::test]
async fn secrets_stored_on_chain_open_and_conditions_read_real_state() {
    let (net, outlayer) = start().await;
    let viewer = client(&net, &outlayer, None);
    let pair = KeyPair::generate(KeyId::new("k1").unwrap()).unwrap();
    let keyring = Keyring::new(vec![pair.clone()], &pair.id).unwrap();

    // The operator publishes its key; a user reads it back as `seal --from-contract` does.
    let operator = client(&net, &outlayer, Some("operator.localnet"));
    call(
        &operator,
        &outlayer,
        "set_secrets_pubkey",
        json!({"pubkey": pair.sealing_key().to_published()}),
        0,
    )
    .await;
    let published: Option<String> = viewer
        .view_call(&outlayer, "get_secrets_pubkey", &json!({}))
        .await
        .unwrap();
    let key = SealingKey::parse(&published.unwrap()).unwrap();
    assert_eq!(key, pair.sealing_key());

    // alice seals for her repo's main branch and stores it with store_secrets (`--format near`).
    let scope = Scope::new(
        "alice.localnet",
        "https://github.com/Alice/App.git",
        Some("main"),
        "prod",
    )
    .unwrap();
    let plaintext = Plaintext::from_pairs([("API_KEY", "from-chain")]).unwrap();
    let sealed = SealedSecret {
        sealed: seal(&key, &scope, &plaintext).unwrap(),
        scope: scope.clone(),
        access: AccessCondition::NearBalance {
            min: near_sdk::json_types::U128(50 * NEAR),
        },
    };
    let alice = client(&net, &outlayer, Some("alice.localnet"));
    call(
        &alice,
        &outlayer,
        "store_secrets",
        sealed.to_store_secrets_args().unwrap(),
        NEAR,
    )
    .await;

    let record = viewer.get_secrets(&scope).await.unwrap().expect("stored");
    let bytes = BASE64.decode(&record.encrypted_secrets_base64).unwrap();
    assert_eq!(open(&keyring, &scope, &bytes).unwrap(), plaintext);
    assert!(
        viewer
            .get_secrets(&scope.any_branch())
            .await
            .unwrap()
            .is_none()
    );

    // NearBalance on real balances: alice (~99 NEAR) passes 50, the operator (~10) does not, an
    // account that does not exist has no balance.
    assert!(
        viewer
            .near_balance(&account("alice.localnet"))
            .await
            .unwrap()
            > 50 * NEAR
    );
    assert_eq!(
        viewer
            .near_balance(&account("ghost.localnet"))
            .await
            .unwrap(),
        0
    );
    let granted = access::evaluate(&record.access, &account("alice.localnet"), &viewer)
        .await
        .unwrap();
    assert!(granted.is_ok());
    let denied = access::evaluate(&record.access, &account("operator.localnet"), &viewer)
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(denied.reason(), "NearBalance condition not met");

    // The OutLayer contract has no ft_balance_of: undecidable, and the error names no contract.
    let ft = AccessCondition::FtBalance {
        contract: "outlayer.localnet".parse().unwrap(),
        min: near_sdk::json_types::U128(1),
    };
    let error = access::evaluate(&ft, &account("alice.localnet"), &viewer)
        .await
        .unwrap_err();
    assert!(!error.is_transient(), "{error}");
    assert!(!error.to_string().contains("outlayer.localnet"), "{error}");
}
