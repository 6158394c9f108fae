//! The operator's keyring in a Kubernetes Secret, and its public keys in a ConfigMap.
//!
//! - Secret `outlayer-sealing-keys` (type `outlayer.dev/sealing-keys`), one entry `keyring.json`:
//!   `{"version":1,"current":"k2","keys":[{"id":"k1","createdAt":<unix s>,"secret":"<base64>"},…]}`.
//!   One entry, so every change (create, rotate) is a single atomic write guarded by resourceVersion:
//!   two replicas racing to rotate produce one new key, the loser re-reads and adopts it.
//! - ConfigMap `outlayer-sealing-pubkeys`: `current` = `x25519:<id>:<base64>` (what `seal --pubkey`
//!   and `set_secrets_pubkey` take) and `keys.json` = `[{"id","publicKey","createdAt"}]`, oldest first.
//!
//! Old keys are never dropped: they open ciphertexts sealed before a rotation. Losing the Secret loses
//! every sealed secret, so when it is absent but sealed Secrets (type `outlayer.dev/sealed`) or the
//! public-key ConfigMap exist, [`KeyStore::ensure`] refuses to generate a fresh key (restore the backup).

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Client;
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};
use zeroize::Zeroize;

use super::crypto::{KeyError, KeyId, KeyPair, Keyring, SealingKey, SecretKey};
use super::manifest::SEALED_SECRET_TYPE;

pub const KEY_SECRET_TYPE: &str = "outlayer.dev/sealing-keys";
pub const DEFAULT_KEY_SECRET: &str = "outlayer-sealing-keys";
pub const DEFAULT_PUBKEY_CONFIG_MAP: &str = "outlayer-sealing-pubkeys";
pub const KEYRING_ENTRY: &str = "keyring.json";
pub const CURRENT_PUBKEY_ENTRY: &str = "current";
pub const PUBKEYS_ENTRY: &str = "keys.json";
const FIELD_MANAGER: &str = "outlayer-operator-sealing";
/// Write conflicts tolerated before giving up: each is another replica's completed write.
const MAX_CONFLICTS: u32 = 5;

#[derive(Clone, Debug)]
pub struct KeyStoreConfig {
    pub namespace: String,
    pub secret_name: String,
    pub config_map_name: String,
    /// A current key older than this is replaced by a new one (the old one is kept). `None`: never.
    pub rotation_period: Option<Duration>,
}

impl KeyStoreConfig {
    pub fn new(namespace: &str) -> Self {
        Self {
            namespace: namespace.to_string(),
            secret_name: DEFAULT_KEY_SECRET.to_string(),
            config_map_name: DEFAULT_PUBKEY_CONFIG_MAP.to_string(),
            rotation_period: Some(Duration::from_secs(90 * 24 * 3600)),
        }
    }
}

/// Errors name the object and what went wrong; never key material.
#[derive(Debug, thiserror::Error)]
pub enum KeyStoreError {
    #[error("{what} {namespace}/{name}: {source}")]
    Api {
        what: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
    #[error(
        "the sealing key Secret {namespace}/{secret} is missing, but {evidence}: generating a new key \
         would make every existing sealed secret unreadable. Restore the Secret from its backup \
         (`kubectl apply -f`); to start over on purpose, delete the sealed Secrets and ConfigMap \
         {namespace}/{config_map} first"
    )]
    MissingKeys {
        namespace: String,
        secret: String,
        config_map: String,
        evidence: String,
    },
    #[error("the sealing key Secret {namespace}/{name} is unusable: {reason}")]
    Corrupt {
        namespace: String,
        name: String,
        reason: String,
    },
    #[error("sealing key: {0}")]
    Key(#[from] KeyError),
    #[error(
        "the sealing key Secret {namespace}/{name} kept changing under us ({MAX_CONFLICTS} conflicts)"
    )]
    Contended { namespace: String, name: String },
}

/// What [`KeyStore::ensure`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyringChange {
    Created,
    Unchanged,
    Rotated { from: KeyId, to: KeyId },
}

#[derive(Clone, Debug)]
pub struct EnsuredKeyring {
    pub keyring: Keyring,
    pub change: KeyringChange,
    /// Unix seconds when the current key was made.
    pub current_created_at: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredKeyring {
    version: u32,
    current: String,
    keys: Vec<StoredKey>,
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StoredKey {
    id: String,
    created_at: u64,
    secret: String,
}

impl Drop for StoredKeyring {
    fn drop(&mut self) {
        for key in &mut self.keys {
            key.secret.zeroize();
        }
    }
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PublishedKey {
    pub id: String,
    pub public_key: String,
    pub created_at: u64,
}

pub struct KeyStore {
    secrets: Api<Secret>,
    config_maps: Api<ConfigMap>,
    config: KeyStoreConfig,
}

impl KeyStore {
    pub fn new(client: Client, config: KeyStoreConfig) -> Self {
        Self {
            secrets: Api::namespaced(client.clone(), &config.namespace),
            config_maps: Api::namespaced(client, &config.namespace),
            config,
        }
    }

    pub fn config(&self) -> &KeyStoreConfig {
        &self.config
    }

    /// The keyring as stored, without creating or rotating anything (`None`: no key Secret).
    pub async fn load(&self) -> Result<Option<Keyring>, KeyStoreError> {
        let Some(secret) = self.get_secret().await? else {
            return Ok(None);
        };
        let stored = self.decode(&secret)?;
        Ok(Some(self.to_keyring(&stored)?.0))
    }

    /// Creates the keyring on first start, rotates it when due, and publishes the public keys.
    pub async fn ensure(&self) -> Result<EnsuredKeyring, KeyStoreError> {
        self.ensure_at(unix_now(), None).await
    }

    /// [`ensure`](Self::ensure), knowing the public key the contract publishes (`contract_key`, from
    /// `get_secrets_pubkey`): when the keyring is missing and the contract publishes a key, users have
    /// sealed secrets to that key, and a fresh key would strand them — refused like the other
    /// evidence of a lost keyring.
    pub async fn ensure_for_contract(
        &self,
        contract_key: Option<&str>,
    ) -> Result<EnsuredKeyring, KeyStoreError> {
        self.ensure_at(unix_now(), contract_key).await
    }

    /// [`ensure_for_contract`](Self::ensure_for_contract) with an explicit clock (unix seconds), for
    /// tests of rotation.
    pub async fn ensure_at(
        &self,
        now: u64,
        contract_key: Option<&str>,
    ) -> Result<EnsuredKeyring, KeyStoreError> {
        let mut conflicts = 0;
        let ensured = loop {
            let attempt = match self.get_secret().await? {
                None => self.create(now, contract_key).await?,
                Some(secret) => self.rotate_if_due(secret, now).await?,
            };
            match attempt {
                Some(ensured) => break ensured,
                None if conflicts < MAX_CONFLICTS => conflicts += 1,
                None => {
                    return Err(KeyStoreError::Contended {
                        namespace: self.config.namespace.clone(),
                        name: self.config.secret_name.clone(),
                    });
                }
            }
        };
        self.publish(&ensured).await?;
        Ok(ensured)
    }

    async fn get_secret(&self) -> Result<Option<Secret>, KeyStoreError> {
        self.secrets
            .get_opt(&self.config.secret_name)
            .await
            .map_err(self.api_error("read Secret", &self.config.secret_name))
    }

    /// `None`: another replica created it first; read again.
    async fn create(
        &self,
        now: u64,
        contract_key: Option<&str>,
    ) -> Result<Option<EnsuredKeyring>, KeyStoreError> {
        let evidence = match contract_key {
            Some(key) => Some(format!(
                "the contract publishes sealing key {key} (users seal their secrets to it; to start \
                 over on purpose, publish the new key with set_secrets_pubkey yourself)"
            )),
            None => self.evidence_of_lost_keys().await?,
        };
        if let Some(evidence) = evidence {
            return Err(KeyStoreError::MissingKeys {
                namespace: self.config.namespace.clone(),
                secret: self.config.secret_name.clone(),
                config_map: self.config.config_map_name.clone(),
                evidence,
            });
        }
        let pair = KeyPair::generate(KeyId::new("k1")?)?;
        let stored = StoredKeyring {
            version: 1,
            current: pair.id.to_string(),
            keys: vec![stored_key(&pair, now)],
        };
        let secret = self.secret_object(&stored, None)?;
        match self.secrets.create(&PostParams::default(), &secret).await {
            Ok(_) => {
                info!(namespace = %self.config.namespace, secret = %self.config.secret_name, key_id = %pair.id, "created the sealing keyring");
                let (keyring, created_at) = self.to_keyring(&stored)?;
                Ok(Some(EnsuredKeyring {
                    keyring,
                    change: KeyringChange::Created,
                    current_created_at: created_at,
                }))
            }
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(None),
            Err(source) => Err(self.api_error("create Secret", &self.config.secret_name)(
                source,
            )),
        }
    }

    async fn evidence_of_lost_keys(&self) -> Result<Option<String>, KeyStoreError> {
        let sealed = self
            .secrets
            .list_metadata(
                &ListParams::default()
                    .fields(&format!("type={SEALED_SECRET_TYPE}"))
                    .limit(1),
            )
            .await
            .map_err(self.api_error("list sealed Secrets", "*"))?;
        if let Some(first) = sealed.items.first() {
            return Ok(Some(format!(
                "sealed Secrets exist in the namespace (e.g. {})",
                first.metadata.name.as_deref().unwrap_or("?")
            )));
        }
        let published = self
            .config_maps
            .get_opt(&self.config.config_map_name)
            .await
            .map_err(self.api_error("read ConfigMap", &self.config.config_map_name))?;
        if published.is_some() {
            return Ok(Some(format!(
                "ConfigMap {} still publishes the public keys of the lost keyring",
                self.config.config_map_name
            )));
        }
        Ok(None)
    }

    /// `None`: the Secret changed since it was read (another replica rotated); read again.
    async fn rotate_if_due(
        &self,
        secret: Secret,
        now: u64,
    ) -> Result<Option<EnsuredKeyring>, KeyStoreError> {
        let mut stored = self.decode(&secret)?;
        let (keyring, created_at) = self.to_keyring(&stored)?;
        let due = self
            .config
            .rotation_period
            .is_some_and(|period| now.saturating_sub(created_at) >= period.as_secs());
        if !due {
            return Ok(Some(EnsuredKeyring {
                keyring,
                change: KeyringChange::Unchanged,
                current_created_at: created_at,
            }));
        }
        let from = keyring.current().id.clone();
        let next = next_key_id(keyring.keys().map(|k| &k.id))?;
        let pair = KeyPair::generate(next.clone())?;
        stored.keys.push(stored_key(&pair, now));
        stored.current = next.to_string();
        // The resourceVersion just read: if another replica wrote in between, this is a 409.
        let updated = self.secret_object(&stored, secret.metadata.resource_version.clone())?;
        match self
            .secrets
            .replace(&self.config.secret_name, &PostParams::default(), &updated)
            .await
        {
            Ok(_) => {
                info!(namespace = %self.config.namespace, secret = %self.config.secret_name, from = %from, to = %next, "rotated the sealing key");
                let (keyring, created_at) = self.to_keyring(&stored)?;
                Ok(Some(EnsuredKeyring {
                    keyring,
                    change: KeyringChange::Rotated { from, to: next },
                    current_created_at: created_at,
                }))
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                warn!(namespace = %self.config.namespace, secret = %self.config.secret_name, "sealing keyring changed while rotating; reading it again");
                Ok(None)
            }
            Err(source) => Err(self.api_error("update Secret", &self.config.secret_name)(
                source,
            )),
        }
    }

    /// Server-side apply, so replicas publishing the same keys agree and a stale one cannot regress
    /// the map of a newer one for long (the next `ensure` re-applies).
    async fn publish(&self, ensured: &EnsuredKeyring) -> Result<(), KeyStoreError> {
        let config_map = public_keys_config_map(
            &self.config.config_map_name,
            &self.config.namespace,
            &ensured.keyring,
            &self.created_times().await?,
        );
        self.config_maps
            .patch(
                &self.config.config_map_name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&config_map),
            )
            .await
            .map_err(self.api_error("apply ConfigMap", &self.config.config_map_name))?;
        Ok(())
    }

    async fn created_times(&self) -> Result<BTreeMap<String, u64>, KeyStoreError> {
        let Some(secret) = self.get_secret().await? else {
            return Ok(BTreeMap::new());
        };
        let stored = self.decode(&secret)?;
        Ok(stored
            .keys
            .iter()
            .map(|k| (k.id.clone(), k.created_at))
            .collect())
    }

    fn decode(&self, secret: &Secret) -> Result<StoredKeyring, KeyStoreError> {
        let corrupt = |reason: String| KeyStoreError::Corrupt {
            namespace: self.config.namespace.clone(),
            name: self.config.secret_name.clone(),
            reason,
        };
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(KEYRING_ENTRY))
            .ok_or_else(|| corrupt(format!("it has no {KEYRING_ENTRY} entry")))?;
        // serde_json's messages may quote input; only the position is reported.
        let stored: StoredKeyring = serde_json::from_slice(&bytes.0).map_err(|e| {
            corrupt(format!(
                "{KEYRING_ENTRY} is not a keyring document (line {}, column {})",
                e.line(),
                e.column()
            ))
        })?;
        if stored.version != 1 {
            return Err(corrupt(format!(
                "keyring version {} is not supported",
                stored.version
            )));
        }
        Ok(stored)
    }

    fn to_keyring(&self, stored: &StoredKeyring) -> Result<(Keyring, u64), KeyStoreError> {
        let corrupt = |reason: String| KeyStoreError::Corrupt {
            namespace: self.config.namespace.clone(),
            name: self.config.secret_name.clone(),
            reason,
        };
        let mut pairs = Vec::with_capacity(stored.keys.len());
        for key in &stored.keys {
            let id = KeyId::new(&key.id).map_err(|e| corrupt(e.to_string()))?;
            let mut raw = BASE64
                .decode(&key.secret)
                .map_err(|_| corrupt(format!("the secret of key {id} is not base64")))?;
            let secret = SecretKey::from_slice(&raw);
            raw.zeroize();
            let secret = secret.map_err(|e| corrupt(format!("key {id}: {e}")))?;
            pairs.push(KeyPair::new(id, secret));
        }
        let current = KeyId::new(&stored.current).map_err(|e| corrupt(e.to_string()))?;
        let created_at = stored
            .keys
            .iter()
            .find(|k| k.id == stored.current)
            .map(|k| k.created_at)
            .unwrap_or(0);
        let keyring = Keyring::new(pairs, &current)
            .ok_or_else(|| corrupt(format!("the current key {current} is not among its keys")))?;
        Ok((keyring, created_at))
    }

    fn secret_object(
        &self,
        stored: &StoredKeyring,
        resource_version: Option<String>,
    ) -> Result<Secret, KeyStoreError> {
        let json = serde_json::to_vec(stored).map_err(|e| KeyStoreError::Corrupt {
            namespace: self.config.namespace.clone(),
            name: self.config.secret_name.clone(),
            reason: format!("cannot encode the keyring: {e}"),
        })?;
        Ok(Secret {
            metadata: ObjectMeta {
                name: Some(self.config.secret_name.clone()),
                namespace: Some(self.config.namespace.clone()),
                resource_version,
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".to_string(),
                    "outlayer-operator".to_string(),
                )])),
                annotations: Some(BTreeMap::from([(
                    "outlayer.dev/backup".to_string(),
                    "Losing this Secret makes every sealed secret unreadable: back it up \
                     (kubectl get secret -o yaml) and restore it before the operator's first start"
                        .to_string(),
                )])),
                ..ObjectMeta::default()
            },
            type_: Some(KEY_SECRET_TYPE.to_string()),
            data: Some(BTreeMap::from([(
                KEYRING_ENTRY.to_string(),
                ByteString(json),
            )])),
            ..Secret::default()
        })
    }

    fn api_error(
        &self,
        what: &'static str,
        name: &str,
    ) -> impl FnOnce(kube::Error) -> KeyStoreError + use<> {
        let namespace = self.config.namespace.clone();
        let name = name.to_string();
        move |source| KeyStoreError::Api {
            what,
            namespace,
            name,
            source: Box::new(source),
        }
    }
}

/// The public keys of a keyring as the ConfigMap publishes them.
pub fn public_keys_config_map(
    name: &str,
    namespace: &str,
    keyring: &Keyring,
    created_at: &BTreeMap<String, u64>,
) -> ConfigMap {
    let mut keys: Vec<PublishedKey> = keyring
        .keys()
        .map(|pair| PublishedKey {
            id: pair.id.to_string(),
            public_key: pair.sealing_key().to_published(),
            created_at: created_at.get(pair.id.as_str()).copied().unwrap_or(0),
        })
        .collect();
    keys.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                "outlayer-operator".to_string(),
            )])),
            ..ObjectMeta::default()
        },
        data: Some(BTreeMap::from([
            (
                CURRENT_PUBKEY_ENTRY.to_string(),
                keyring.current().sealing_key().to_published(),
            ),
            (
                PUBKEYS_ENTRY.to_string(),
                serde_json::to_string_pretty(&keys).unwrap_or_default(),
            ),
        ])),
        ..ConfigMap::default()
    }
}

/// Reads the current public key from the ConfigMap (what `seal --from-cluster` and `pubkey` use).
pub async fn published_key(
    client: Client,
    namespace: &str,
    config_map: &str,
) -> Result<Option<SealingKey>, KeyStoreError> {
    let api: Api<ConfigMap> = Api::namespaced(client, namespace);
    let Some(map) = api
        .get_opt(config_map)
        .await
        .map_err(|source| KeyStoreError::Api {
            what: "read ConfigMap",
            namespace: namespace.to_string(),
            name: config_map.to_string(),
            source: Box::new(source),
        })?
    else {
        return Ok(None);
    };
    let Some(current) = map.data.as_ref().and_then(|d| d.get(CURRENT_PUBKEY_ENTRY)) else {
        return Ok(None);
    };
    Ok(Some(SealingKey::parse(current)?))
}

fn stored_key(pair: &KeyPair, created_at: u64) -> StoredKey {
    StoredKey {
        id: pair.id.to_string(),
        created_at,
        secret: BASE64.encode(pair.secret.expose_bytes()),
    }
}

/// `k<n+1>` after the highest `k<n>`; ids of another shape (a restored keyring) are skipped over.
pub fn next_key_id<'a>(existing: impl Iterator<Item = &'a KeyId>) -> Result<KeyId, KeyError> {
    let ids: Vec<&KeyId> = existing.collect();
    let highest = ids
        .iter()
        .filter_map(|id| id.as_str().strip_prefix('k')?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    let mut n = highest.saturating_add(1);
    loop {
        let candidate = KeyId::new(&format!("k{n}"))?;
        if !ids.contains(&&candidate) {
            return Ok(candidate);
        }
        n = n.saturating_add(1);
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_ids_count_up() {
        let ids: Vec<KeyId> = ["k1", "k3", "2026-01-01", "k2"]
            .iter()
            .map(|s| KeyId::new(s).unwrap())
            .collect();
        assert_eq!(next_key_id(ids.iter()).unwrap().as_str(), "k4");
        assert_eq!(next_key_id([].iter()).unwrap().as_str(), "k1");
    }

    #[test]
    fn the_config_map_lists_public_keys_only() {
        let k1 = KeyPair::generate(KeyId::new("k1").unwrap()).unwrap();
        let k2 = KeyPair::generate(KeyId::new("k2").unwrap()).unwrap();
        let secrets = [
            BASE64.encode(k1.secret.expose_bytes()),
            BASE64.encode(k2.secret.expose_bytes()),
        ];
        let ring = Keyring::new(vec![k1.clone(), k2.clone()], &k2.id).unwrap();
        let created = BTreeMap::from([("k1".to_string(), 10), ("k2".to_string(), 20)]);
        let map = public_keys_config_map("pk", "ns", &ring, &created);
        let data = map.data.unwrap();
        assert_eq!(data[CURRENT_PUBKEY_ENTRY], k2.sealing_key().to_published());
        let listed: Vec<PublishedKey> = serde_json::from_str(&data[PUBKEYS_ENTRY]).unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0].id, "k1");
        assert_eq!(listed[1].public_key, k2.sealing_key().to_published());
        let all = serde_json::to_string(&data).unwrap();
        for secret in secrets {
            assert!(!all.contains(&secret));
        }
    }
}
