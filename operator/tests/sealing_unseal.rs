//! `unseal` against the real control plane: secrets found in the cluster and (through a test double of
//! the contract's `get_secrets`) on chain, in the documented order; access conditions enforced;
//! conditions needing chain state undecidable without a chain; tampered and re-scoped Secrets refused.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use e2e_cluster::Cluster;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::PostParams;
use near_primitives::types::AccountId;
use near_sdk::json_types::U128;
use outlayer_contract::{AccessCondition, SecretsRecord};
use outlayer_operator::sealing::access::{ChainReadError, ChainState};
use outlayer_operator::sealing::keys::{KeyStore, KeyStoreConfig};
use outlayer_operator::sealing::manifest::SealedSecret;
use outlayer_operator::sealing::unseal::SecretsStore;
use outlayer_operator::sealing::{
    OpenError, Plaintext, Scope, SealingKey, SecretSource, UnsealError, seal, unseal,
};

/// The contract's records and balances, in memory.
#[derive(Default)]
struct FakeChain {
    records: BTreeMap<String, SecretsRecord>,
    balances: BTreeMap<String, u128>,
}

impl ChainState for FakeChain {
    async fn near_balance(&self, account: &AccountId) -> Result<u128, ChainReadError> {
        Ok(self.balances.get(account.as_str()).copied().unwrap_or(0))
    }
    async fn ft_balance(&self, _: &AccountId, _: &AccountId) -> Result<u128, ChainReadError> {
        Ok(0)
    }
    async fn nft_owner(&self, _: &AccountId, _: &str) -> Result<Option<AccountId>, ChainReadError> {
        Ok(None)
    }
    async fn owns_any_nft(&self, _: &AccountId, _: &AccountId) -> Result<bool, ChainReadError> {
        Ok(false)
    }
}

impl SecretsStore for FakeChain {
    async fn get_secrets(&self, scope: &Scope) -> Result<Option<SecretsRecord>, ChainReadError> {
        Ok(self.records.get(&scope.to_string()).cloned())
    }
}

fn scope(owner: &str, branch: Option<&str>) -> Scope {
    Scope::new(owner, "github.com/alice/app", branch, "prod").unwrap()
}

fn id(s: &str) -> AccountId {
    s.parse().unwrap()
}

fn record(key: &SealingKey, scope: &Scope, value: &str, access: AccessCondition) -> SecretsRecord {
    let plaintext = Plaintext::from_pairs([("WHERE", value)]).unwrap();
    SecretsRecord {
        owner: scope.owner().parse().unwrap(),
        repo: scope.repo().to_string(),
        branch: scope.branch().map(str::to_string),
        profile: scope.profile().to_string(),
        encrypted_secrets_base64: BASE64.encode(seal(key, scope, &plaintext).unwrap()),
        access,
        storage_deposit: U128(0),
        created_at_ns: 0,
        updated_at_ns: 0,
    }
}

#[tokio::test]
async fn secrets_are_found_authorized_and_opened_in_order() {
    let cluster = Cluster::start().await.unwrap();
    let ns = "sealing-unseal";
    cluster.create_namespace(ns, &[]).await.unwrap();
    let keyring = KeyStore::new(cluster.client(), KeyStoreConfig::new(ns))
        .ensure()
        .await
        .unwrap()
        .keyring;
    let key = keyring.current().sealing_key();
    let secrets: Api<Secret> = Api::namespaced(cluster.client(), ns);
    let put = |sealed: SealedSecret| {
        let secrets = secrets.clone();
        async move {
            secrets
                .create(&PostParams::default(), &sealed.to_secret(Some(ns)))
                .await
                .unwrap();
        }
    };
    let sealed_for = |scope: &Scope, value: &str, access: AccessCondition| SealedSecret {
        sealed: seal(
            &key,
            scope,
            &Plaintext::from_pairs([("WHERE", value)]).unwrap(),
        )
        .unwrap(),
        scope: scope.clone(),
        access,
    };

    // alice: any-branch secret in the cluster, main-branch one on chain (more specific wins).
    let alice_any = scope("alice.near", None);
    let alice_main = scope("alice.near", Some("main"));
    put(sealed_for(
        &alice_any,
        "cluster-any",
        AccessCondition::Whitelist {
            accounts: vec![id("alice.near")],
        },
    ))
    .await;
    let mut chain = FakeChain::default();
    chain.records.insert(
        alice_main.to_string(),
        record(&key, &alice_main, "chain-main", AccessCondition::AllowAll),
    );
    chain.balances.insert("rich.near".into(), 100);

    let got = unseal(
        cluster.client(),
        ns,
        Some(&chain),
        &keyring,
        &alice_main,
        &id("x.near"),
    )
    .await
    .unwrap();
    assert_eq!(got.source, SecretSource::Contract);
    assert_eq!(got.plaintext.get("WHERE"), Some("chain-main"));

    // Another branch falls back to the cluster's any-branch secret, whose whitelist applies.
    let dev = scope("alice.near", Some("dev"));
    let got = unseal(
        cluster.client(),
        ns,
        Some(&chain),
        &keyring,
        &dev,
        &id("alice.near"),
    )
    .await
    .unwrap();
    assert!(matches!(got.source, SecretSource::Cluster(_)));
    assert_eq!(got.scope, alice_any);
    assert_eq!(got.plaintext.get("WHERE"), Some("cluster-any"));
    let denied = unseal(
        cluster.client(),
        ns,
        Some(&chain),
        &keyring,
        &dev,
        &id("mallory.near"),
    )
    .await
    .unwrap_err();
    assert_eq!(denied.reason(), "SecretsAccessDenied", "{denied}");
    assert!(!denied.to_string().contains("alice.near"), "{denied}");

    // A balance condition: decided by chain state; undecidable (not granted) without a chain.
    let bob = scope("bob.near", None);
    put(sealed_for(
        &bob,
        "bob",
        AccessCondition::NearBalance { min: U128(50) },
    ))
    .await;
    let got = unseal(
        cluster.client(),
        ns,
        Some(&chain),
        &keyring,
        &bob,
        &id("rich.near"),
    )
    .await
    .unwrap();
    assert_eq!(got.plaintext.get("WHERE"), Some("bob"));
    let poor = unseal(
        cluster.client(),
        ns,
        Some(&chain),
        &keyring,
        &bob,
        &id("poor.near"),
    )
    .await
    .unwrap_err();
    assert_eq!(poor.reason(), "SecretsAccessDenied");
    let no_chain =
        unseal::<FakeChain>(cluster.client(), ns, None, &keyring, &bob, &id("rich.near"))
            .await
            .unwrap_err();
    assert!(matches!(no_chain, UnsealError::Access(_)), "{no_chain}");

    // carol's Secret is relabelled/annotated for dave: it does not open under dave's scope.
    let carol = scope("carol.near", None);
    let dave = scope("dave.near", None);
    let mut moved = sealed_for(&carol, "carol", AccessCondition::AllowAll);
    moved.scope = dave.clone();
    put(moved).await;
    let error = unseal::<FakeChain>(
        cluster.client(),
        ns,
        None,
        &keyring,
        &dave,
        &id("dave.near"),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(error, UnsealError::Open(OpenError::Rejected)),
        "{error}"
    );

    // A tampered ciphertext fails cleanly.
    let erin = scope("erin.near", None);
    let mut tampered = sealed_for(&erin, "erin", AccessCondition::AllowAll).to_secret(Some(ns));
    let data = tampered.data.as_mut().unwrap();
    let mut bytes = data["sealed"].0.clone();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    data.insert("sealed".into(), ByteString(bytes));
    secrets
        .create(&PostParams::default(), &tampered)
        .await
        .unwrap();
    let error = unseal::<FakeChain>(
        cluster.client(),
        ns,
        None,
        &keyring,
        &erin,
        &id("erin.near"),
    )
    .await
    .unwrap_err();
    assert_eq!(error.reason(), "SecretsUnreadable", "{error}");

    let nobody = scope("nobody.near", Some("main"));
    let error = unseal(
        cluster.client(),
        ns,
        Some(&chain),
        &keyring,
        &nobody,
        &id("nobody.near"),
    )
    .await
    .unwrap_err();
    assert_eq!(error.reason(), "SecretsNotFound");
}
