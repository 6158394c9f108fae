//! The sealing keyring and sealed-Secret lookups against the real local control plane: first start
//! creates the key, a second start reuses it, rotation keeps old keys (old ciphertexts still open),
//! racing replicas rotate once, a lost key Secret is not silently replaced while sealed secrets (or the
//! published keys) exist, a restored backup works, and lookups fall back from branch to any branch.

use std::time::Duration;

use e2e_cluster::Cluster;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use outlayer_contract::AccessCondition;
use outlayer_operator::sealing::keys::{
    CURRENT_PUBKEY_ENTRY, KEY_SECRET_TYPE, KeyStore, KeyStoreConfig, KeyStoreError, KeyringChange,
    PUBKEYS_ENTRY, PublishedKey, published_key,
};
use outlayer_operator::sealing::manifest::{SealedSecret, find_sealed};
use outlayer_operator::sealing::{Plaintext, Scope, open, seal};

const T0: u64 = 1_800_000_000;

fn store(cluster: &Cluster, namespace: &str, rotation: Option<u64>) -> KeyStore {
    let mut config = KeyStoreConfig::new(namespace);
    config.rotation_period = rotation.map(Duration::from_secs);
    KeyStore::new(cluster.client(), config)
}

async fn config_map(cluster: &Cluster, namespace: &str) -> ConfigMap {
    Api::<ConfigMap>::namespaced(cluster.client(), namespace)
        .get("outlayer-sealing-pubkeys")
        .await
        .unwrap()
}

fn scope(branch: Option<&str>) -> Scope {
    Scope::new("alice.near", "github.com/alice/app", branch, "prod").unwrap()
}

#[tokio::test]
async fn keyring_is_created_once_rotated_and_keeps_old_keys() {
    let cluster = Cluster::start().await.unwrap();
    let ns = "sealing-keys";
    cluster.create_namespace(ns, &[]).await.unwrap();
    let keys = store(&cluster, ns, Some(100));

    let first = keys.ensure_at(T0, None).await.unwrap();
    assert_eq!(first.change, KeyringChange::Created);
    assert_eq!(first.keyring.current().id.as_str(), "k1");
    let secret = Api::<Secret>::namespaced(cluster.client(), ns)
        .get("outlayer-sealing-keys")
        .await
        .unwrap();
    assert_eq!(secret.type_.as_deref(), Some(KEY_SECRET_TYPE));
    let k1 = first.keyring.current().sealing_key();
    assert_eq!(
        config_map(&cluster, ns).await.data.unwrap()[CURRENT_PUBKEY_ENTRY],
        k1.to_published()
    );
    assert_eq!(
        published_key(cluster.client(), ns, "outlayer-sealing-pubkeys")
            .await
            .unwrap(),
        Some(k1.clone())
    );

    // A restart before the period: same key.
    let again = keys.ensure_at(T0 + 99, None).await.unwrap();
    assert_eq!(again.change, KeyringChange::Unchanged);
    assert_eq!(again.keyring.current().sealing_key(), k1);

    let plaintext = Plaintext::from_pairs([("API_KEY", "v1")]).unwrap();
    let old_ciphertext = seal(&k1, &scope(None), &plaintext).unwrap();

    let rotated = keys.ensure_at(T0 + 100, None).await.unwrap();
    assert!(matches!(rotated.change, KeyringChange::Rotated { ref to, .. } if to.as_str() == "k2"));
    assert_eq!(rotated.keyring.keys().count(), 2);
    assert_eq!(
        open(&rotated.keyring, &scope(None), &old_ciphertext).unwrap(),
        plaintext
    );
    let k2 = rotated.keyring.current().sealing_key();
    assert_ne!(k2, k1);
    let data = config_map(&cluster, ns).await.data.unwrap();
    assert_eq!(data[CURRENT_PUBKEY_ENTRY], k2.to_published());
    let listed: Vec<PublishedKey> = serde_json::from_str(&data[PUBKEYS_ENTRY]).unwrap();
    assert_eq!(
        listed.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(),
        ["k1", "k2"]
    );

    // Two replicas find the key due at once: one rotates, the other adopts its key.
    let other = store(&cluster, ns, Some(100));
    let (a, b) = tokio::join!(
        keys.ensure_at(T0 + 300, None),
        other.ensure_at(T0 + 300, None)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.keyring.current().id.as_str(), "k3");
    assert_eq!(b.keyring.current().id.as_str(), "k3");
    assert_eq!(
        a.keyring.current().sealing_key(),
        b.keyring.current().sealing_key()
    );
    let stored = keys.load().await.unwrap().unwrap();
    assert_eq!(stored.keys().count(), 3);
    assert_eq!(
        open(&stored, &scope(None), &old_ciphertext).unwrap(),
        plaintext
    );
}

#[tokio::test]
async fn lost_keys_are_not_silently_replaced_and_sealed_secrets_are_found() {
    let cluster = Cluster::start().await.unwrap();
    let ns = "sealing-lookup";
    cluster.create_namespace(ns, &[]).await.unwrap();
    let keys = store(&cluster, ns, None);
    let keyring = keys.ensure().await.unwrap().keyring;
    let key = keyring.current().sealing_key();
    let secrets: Api<Secret> = Api::namespaced(cluster.client(), ns);

    let for_main = Plaintext::from_pairs([("WHICH", "main")]).unwrap();
    let for_any = Plaintext::from_pairs([("WHICH", "any")]).unwrap();
    for (branch, plaintext) in [(Some("main"), &for_main), (None, &for_any)] {
        let sealed = SealedSecret {
            sealed: seal(&key, &scope(branch), plaintext).unwrap(),
            scope: scope(branch),
            access: AccessCondition::AllowAll,
        };
        secrets
            .create(&PostParams::default(), &sealed.to_secret(Some(ns)))
            .await
            .unwrap();
    }

    let (_, main) = find_sealed(cluster.client(), ns, &scope(Some("main")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(open(&keyring, &main.scope, &main.sealed).unwrap(), for_main);
    let (_, fallback) = find_sealed(cluster.client(), ns, &scope(Some("dev")))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(fallback.scope, scope(None));
    assert_eq!(
        open(&keyring, &fallback.scope, &fallback.sealed).unwrap(),
        for_any
    );
    let stranger = Scope::new("bob.near", "github.com/alice/app", Some("main"), "prod").unwrap();
    assert!(
        find_sealed(cluster.client(), ns, &stranger)
            .await
            .unwrap()
            .is_none()
    );

    // Back up, lose the key Secret: the operator refuses to start over.
    let mut backup = secrets.get("outlayer-sealing-keys").await.unwrap();
    secrets
        .delete("outlayer-sealing-keys", &DeleteParams::default())
        .await
        .unwrap();
    let error = keys.ensure().await.unwrap_err();
    assert!(
        matches!(error, KeyStoreError::MissingKeys { .. }),
        "{error}"
    );
    assert!(
        error.to_string().contains("sealed Secrets exist"),
        "{error}"
    );
    assert!(
        secrets
            .get_opt("outlayer-sealing-keys")
            .await
            .unwrap()
            .is_none()
    );

    // Restore from the backup: everything opens again.
    backup.metadata.resource_version = None;
    backup.metadata.uid = None;
    backup.metadata.creation_timestamp = None;
    backup.metadata.managed_fields = None;
    secrets
        .create(&PostParams::default(), &backup)
        .await
        .unwrap();
    let restored = keys.ensure().await.unwrap();
    assert_eq!(restored.change, KeyringChange::Unchanged);
    assert_eq!(
        open(&restored.keyring, &main.scope, &main.sealed).unwrap(),
        for_main
    );
}

#[tokio::test]
async fn published_keys_alone_also_block_a_fresh_key_until_removed() {
    let cluster = Cluster::start().await.unwrap();
    let ns = "sealing-reset";
    cluster.create_namespace(ns, &[]).await.unwrap();
    let keys = store(&cluster, ns, None);
    let first = keys.ensure().await.unwrap().keyring.current().sealing_key();
    let secrets: Api<Secret> = Api::namespaced(cluster.client(), ns);
    secrets
        .delete("outlayer-sealing-keys", &DeleteParams::default())
        .await
        .unwrap();
    let error = keys.ensure().await.unwrap_err();
    assert!(error.to_string().contains("ConfigMap"), "{error}");
    // The contract publishing a key is evidence too: secrets were sealed to it.
    let error = keys
        .ensure_for_contract(Some(&first.to_published()))
        .await
        .unwrap_err();
    assert!(
        error
            .to_string()
            .contains("the contract publishes sealing key"),
        "{error}"
    );

    // A deliberate reset: remove the published keys too.
    Api::<ConfigMap>::namespaced(cluster.client(), ns)
        .delete("outlayer-sealing-pubkeys", &DeleteParams::default())
        .await
        .unwrap();
    let fresh = keys.ensure().await.unwrap();
    assert_eq!(fresh.change, KeyringChange::Created);
    assert_ne!(fresh.keyring.current().sealing_key(), first);
}
