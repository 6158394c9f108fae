//! Sealed secrets as Kubernetes Secrets, safe to commit to Git (they hold only ciphertext):
//!
//! ```yaml
//! apiVersion: v1
//! kind: Secret
//! type: outlayer.dev/sealed
//! metadata:
//!   name: sealed-prod-3f2a…            # sealed-<profile>-<scope hash>: re-sealing a scope replaces it
//!   labels:                            # for kubectl selection; sanitized to valid label values
//!     outlayer.dev/sealed-scope: <32 hex of sha256(scope)>   # what lookups select on
//!     outlayer.dev/sealed-owner: alice.near
//!     outlayer.dev/sealed-repo: github.com.alice.app        # '/' is not allowed in label values
//!     outlayer.dev/sealed-branch: main                      # "" = any branch
//!     outlayer.dev/sealed-profile: prod
//!   annotations:                       # the exact values; these, not labels, are authoritative
//!     outlayer.dev/owner: alice.near
//!     outlayer.dev/repo: github.com/alice/app
//!     outlayer.dev/branch: main        # absent = any branch
//!     outlayer.dev/profile: prod
//!     outlayer.dev/access: '{"Whitelist":{"accounts":["alice.near"]}}'   # the contract's AccessCondition
//!     outlayer.dev/key-id: k1
//! data:
//!   sealed: <base64 of the envelope>
//! ```
//!
//! Editing labels or annotations cannot widen a secret's use: the scope is bound into the ciphertext,
//! so a Secret relabelled for another repository fails to open. The access annotation is not bound
//! (it is policy, like the contract's record): whoever may edit Secrets in the namespace may change it.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, ListParams, ObjectMeta};
use outlayer_contract::AccessCondition;
use outlayer_contract::validation::{MAX_ENCRYPTED_SECRETS_LEN, validate_access_condition};
use sha2::{Digest, Sha256};

use super::crypto::{Envelope, OpenError};
use super::scope::{Scope, ScopeError};

pub const SEALED_SECRET_TYPE: &str = "outlayer.dev/sealed";
pub const SEALED_DATA_KEY: &str = "sealed";
pub const SCOPE_HASH_LABEL: &str = "outlayer.dev/sealed-scope";
pub const OWNER_LABEL: &str = "outlayer.dev/sealed-owner";
pub const REPO_LABEL: &str = "outlayer.dev/sealed-repo";
pub const BRANCH_LABEL: &str = "outlayer.dev/sealed-branch";
pub const PROFILE_LABEL: &str = "outlayer.dev/sealed-profile";
pub const OWNER_ANNOTATION: &str = "outlayer.dev/owner";
pub const REPO_ANNOTATION: &str = "outlayer.dev/repo";
pub const BRANCH_ANNOTATION: &str = "outlayer.dev/branch";
pub const PROFILE_ANNOTATION: &str = "outlayer.dev/profile";
pub const ACCESS_ANNOTATION: &str = "outlayer.dev/access";
pub const KEY_ID_ANNOTATION: &str = "outlayer.dev/key-id";
const MAX_LABEL_VALUE: usize = 63;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("Secret {name} is of type {found:?}, not {SEALED_SECRET_TYPE}")]
    WrongType { name: String, found: Option<String> },
    #[error("Secret {name} has no {what}")]
    Missing { name: String, what: String },
    #[error("Secret {name}: {source}")]
    Scope {
        name: String,
        #[source]
        source: ScopeError,
    },
    #[error("Secret {name}: the access condition is invalid: {reason}")]
    Access { name: String, reason: String },
    #[error("Secret {name}: the sealed data is not an envelope: {source}")]
    Envelope {
        name: String,
        #[source]
        source: OpenError,
    },
    #[error("more than one sealed Secret for {scope}: {names}; delete all but one")]
    Ambiguous { scope: String, names: String },
    #[error("list sealed Secrets in {namespace}: {source}")]
    Api {
        namespace: String,
        #[source]
        source: kube::Error,
    },
    #[error("cannot render YAML: {0}")]
    Yaml(String),
    #[error(
        "the base64 ciphertext is {len} characters; the contract stores at most {MAX_ENCRYPTED_SECRETS_LEN}"
    )]
    TooLargeForContract { len: usize },
}

/// A sealed secret as stored: where it applies, who may use it, and the envelope.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedSecret {
    pub scope: Scope,
    pub access: AccessCondition,
    pub sealed: Vec<u8>,
}

impl SealedSecret {
    /// The Secret's name: `sealed-<profile>-<scope hash>` (lower case, DNS-1123).
    pub fn secret_name(&self) -> String {
        let profile: String = self
            .scope
            .profile()
            .to_ascii_lowercase()
            .chars()
            .map(|c| if c == '_' { '-' } else { c })
            .collect();
        let profile = profile.trim_matches('-');
        let hash = &scope_hash(&self.scope)[..16];
        if profile.is_empty() {
            format!("sealed-{hash}")
        } else {
            format!("sealed-{profile}-{hash}")
        }
    }

    /// The Kubernetes Secret (`namespace: None` leaves it to `kubectl apply -n`).
    pub fn to_secret(&self, namespace: Option<&str>) -> Secret {
        let scope = &self.scope;
        let mut labels = BTreeMap::from([
            (SCOPE_HASH_LABEL.to_string(), scope_hash(scope)),
            (OWNER_LABEL.to_string(), label_value(scope.owner())),
            (REPO_LABEL.to_string(), label_value(scope.repo())),
            (PROFILE_LABEL.to_string(), label_value(scope.profile())),
        ]);
        labels.insert(
            BRANCH_LABEL.to_string(),
            scope.branch().map(label_value).unwrap_or_default(),
        );
        let mut annotations = BTreeMap::from([
            (OWNER_ANNOTATION.to_string(), scope.owner().to_string()),
            (REPO_ANNOTATION.to_string(), scope.repo().to_string()),
            (PROFILE_ANNOTATION.to_string(), scope.profile().to_string()),
            (
                ACCESS_ANNOTATION.to_string(),
                serde_json::to_string(&self.access).unwrap_or_default(),
            ),
        ]);
        if let Some(branch) = scope.branch() {
            annotations.insert(BRANCH_ANNOTATION.to_string(), branch.to_string());
        }
        if let Ok(envelope) = Envelope::parse(&self.sealed) {
            annotations.insert(KEY_ID_ANNOTATION.to_string(), envelope.key_id.to_string());
        }
        Secret {
            metadata: ObjectMeta {
                name: Some(self.secret_name()),
                namespace: namespace.map(str::to_string),
                labels: Some(labels),
                annotations: Some(annotations),
                ..ObjectMeta::default()
            },
            type_: Some(SEALED_SECRET_TYPE.to_string()),
            data: Some(BTreeMap::from([(
                SEALED_DATA_KEY.to_string(),
                ByteString(self.sealed.clone()),
            )])),
            ..Secret::default()
        }
    }

    /// The manifest as YAML, with `apiVersion` and `kind`.
    pub fn to_yaml(&self, namespace: Option<&str>) -> Result<String, ManifestError> {
        let mut value = serde_json::to_value(self.to_secret(namespace))
            .map_err(|e| ManifestError::Yaml(e.to_string()))?;
        if let Some(object) = value.as_object_mut() {
            object.insert("apiVersion".into(), "v1".into());
            object.insert("kind".into(), "Secret".into());
        }
        serde_saphyr::to_string(&value).map_err(|e| ManifestError::Yaml(e.to_string()))
    }

    /// The arguments of the contract's `store_secrets`, as JSON.
    pub fn to_store_secrets_args(&self) -> Result<serde_json::Value, ManifestError> {
        let encoded = BASE64.encode(&self.sealed);
        if encoded.len() > MAX_ENCRYPTED_SECRETS_LEN {
            return Err(ManifestError::TooLargeForContract { len: encoded.len() });
        }
        Ok(serde_json::json!({
            "repo": self.scope.repo(),
            "branch": self.scope.branch(),
            "profile": self.scope.profile(),
            "encrypted_secrets_base64": encoded,
            "access": self.access,
        }))
    }

    /// Reads a sealed Secret back; labels are ignored, annotations are authoritative.
    pub fn from_secret(secret: &Secret) -> Result<Self, ManifestError> {
        let name = secret
            .metadata
            .name
            .clone()
            .unwrap_or_else(|| "<unnamed>".to_string());
        if secret.type_.as_deref() != Some(SEALED_SECRET_TYPE) {
            return Err(ManifestError::WrongType {
                name,
                found: secret.type_.clone(),
            });
        }
        let empty = BTreeMap::new();
        let annotations = secret.metadata.annotations.as_ref().unwrap_or(&empty);
        let annotation = |key: &str| {
            annotations
                .get(key)
                .map(String::as_str)
                .ok_or_else(|| ManifestError::Missing {
                    name: name.clone(),
                    what: format!("annotation {key}"),
                })
        };
        let scope = Scope::new(
            annotation(OWNER_ANNOTATION)?,
            annotation(REPO_ANNOTATION)?,
            annotations.get(BRANCH_ANNOTATION).map(String::as_str),
            annotation(PROFILE_ANNOTATION)?,
        )
        .map_err(|source| ManifestError::Scope {
            name: name.clone(),
            source,
        })?;
        let access: AccessCondition = serde_json::from_str(annotation(ACCESS_ANNOTATION)?)
            .map_err(|e| ManifestError::Access {
                name: name.clone(),
                reason: format!("not an AccessCondition: {e}"),
            })?;
        validate_access_condition(&access).map_err(|reason| ManifestError::Access {
            name: name.clone(),
            reason,
        })?;
        let sealed = secret
            .data
            .as_ref()
            .and_then(|d| d.get(SEALED_DATA_KEY))
            .ok_or_else(|| ManifestError::Missing {
                name: name.clone(),
                what: format!("data entry {SEALED_DATA_KEY}"),
            })?
            .0
            .clone();
        Envelope::parse(&sealed).map_err(|source| ManifestError::Envelope {
            name: name.clone(),
            source,
        })?;
        Ok(Self {
            scope,
            access,
            sealed,
        })
    }
}

/// 32 hex characters of sha256 over the scope's unambiguous encoding.
pub fn scope_hash(scope: &Scope) -> String {
    let digest = Sha256::digest(scope.encode());
    hex::encode(&digest[..16])
}

/// A valid label value for `value`: `[A-Za-z0-9._-]`, alphanumeric at both ends, ≤ 63 characters.
/// Other characters become '.'; long values keep a prefix and a hash of the whole.
pub fn label_value(value: &str) -> String {
    let mapped: String = value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '.'
            }
        })
        .collect();
    let trimmed = mapped.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if trimmed.len() <= MAX_LABEL_VALUE && trimmed.len() == value.len() {
        return trimmed.to_string();
    }
    let digest = Sha256::digest(value.as_bytes());
    let hash = hex::encode(&digest[..4]);
    let room = MAX_LABEL_VALUE - hash.len() - 1;
    let prefix =
        trimmed[..trimmed.len().min(room)].trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    if prefix.is_empty() {
        hash
    } else {
        format!("{prefix}-{hash}")
    }
}

/// The sealed Secret for exactly `scope` in `namespace`, if any.
pub async fn find_exact(
    client: Client,
    namespace: &str,
    scope: &Scope,
) -> Result<Option<(String, SealedSecret)>, ManifestError> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let params = ListParams::default()
        .labels(&format!("{SCOPE_HASH_LABEL}={}", scope_hash(scope)))
        .fields(&format!("type={SEALED_SECRET_TYPE}"));
    let list = api
        .list(&params)
        .await
        .map_err(|source| ManifestError::Api {
            namespace: namespace.to_string(),
            source,
        })?;
    let mut found = Vec::new();
    for secret in &list.items {
        let sealed = SealedSecret::from_secret(secret)?;
        // The label only narrows the search; a relabelled Secret for another scope is not ours.
        if &sealed.scope == scope {
            found.push((secret.metadata.name.clone().unwrap_or_default(), sealed));
        }
    }
    if found.len() > 1 {
        return Err(ManifestError::Ambiguous {
            scope: scope.to_string(),
            names: found
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    Ok(found.pop())
}

/// The sealed Secret for `scope`, trying its branch first and then the any-branch scope.
pub async fn find_sealed(
    client: Client,
    namespace: &str,
    scope: &Scope,
) -> Result<Option<(String, SealedSecret)>, ManifestError> {
    if let Some(found) = find_exact(client.clone(), namespace, scope).await? {
        return Ok(Some(found));
    }
    if scope.branch().is_some() {
        return find_exact(client, namespace, &scope.any_branch()).await;
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sealing::crypto::{KeyId, KeyPair, seal};
    use crate::sealing::plaintext::Plaintext;

    fn sealed(branch: Option<&str>) -> SealedSecret {
        let pair = KeyPair::generate(KeyId::new("k7").unwrap()).unwrap();
        let scope = Scope::new(
            "alice.near",
            "https://github.com/Alice/App",
            branch,
            "Prod_1",
        )
        .unwrap();
        let plaintext = Plaintext::from_pairs([("API_KEY", "secret-value")]).unwrap();
        SealedSecret {
            sealed: seal(&pair.sealing_key(), &scope, &plaintext).unwrap(),
            scope,
            access: AccessCondition::AllowAll,
        }
    }

    fn valid_label(value: &str) -> bool {
        value.is_empty()
            || (value.len() <= 63
                && value.starts_with(|c: char| c.is_ascii_alphanumeric())
                && value.ends_with(|c: char| c.is_ascii_alphanumeric())
                && value
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    }

    #[test]
    fn secrets_round_trip_through_yaml() {
        for branch in [Some("feature/x-1"), None] {
            let original = sealed(branch);
            let yaml = original.to_yaml(Some("apps")).unwrap();
            assert!(yaml.contains("outlayer.dev/sealed"), "{yaml}");
            assert!(!yaml.contains("secret-value"));
            let parsed: Secret = serde_saphyr::from_str(&yaml).unwrap();
            assert_eq!(SealedSecret::from_secret(&parsed).unwrap(), original);
            let labels = parsed.metadata.labels.unwrap();
            for (key, value) in &labels {
                assert!(valid_label(value), "{key}={value}");
            }
            assert_eq!(labels[REPO_LABEL], "github.com.alice.app");
            assert_eq!(
                parsed.metadata.annotations.unwrap()[KEY_ID_ANNOTATION],
                "k7"
            );
            let name = parsed.metadata.name.unwrap();
            assert!(name.starts_with("sealed-prod-1-"), "{name}");
        }
    }

    #[test]
    fn label_values_are_always_valid() {
        let long = "a".repeat(200);
        for value in [
            "alice.near",
            "github.com/alice/app",
            "release/v1.2",
            "-x-",
            "//",
            long.as_str(),
            "feature/ü",
        ] {
            let label = label_value(value);
            assert!(
                valid_label(&label) && !label.is_empty(),
                "{value} -> {label}"
            );
        }
        assert_eq!(label_value("alice.near"), "alice.near");
        assert_ne!(label_value(&long), label_value(&"a".repeat(201)));
    }

    #[test]
    fn near_args_carry_the_ciphertext_for_store_secrets() {
        let original = sealed(None);
        let args = original.to_store_secrets_args().unwrap();
        assert_eq!(args["repo"], "github.com/alice/app");
        assert!(args["branch"].is_null());
        assert_eq!(args["access"], serde_json::json!("AllowAll"));
        let encoded = args["encrypted_secrets_base64"].as_str().unwrap();
        outlayer_contract::validation::validate_encrypted_secrets(encoded).unwrap();
        assert_eq!(BASE64.decode(encoded).unwrap(), original.sealed);
    }

    #[test]
    fn broken_secrets_are_refused_with_a_reason() {
        let good = sealed(None).to_secret(None);
        let mut wrong_type = good.clone();
        wrong_type.type_ = Some("Opaque".into());
        assert!(matches!(
            SealedSecret::from_secret(&wrong_type),
            Err(ManifestError::WrongType { .. })
        ));
        let mut no_access = good.clone();
        no_access
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .remove(ACCESS_ANNOTATION);
        assert!(matches!(
            SealedSecret::from_secret(&no_access),
            Err(ManifestError::Missing { .. })
        ));
        let mut bad_access = good.clone();
        bad_access.metadata.annotations.as_mut().unwrap().insert(
            ACCESS_ANNOTATION.into(),
            r#"{"Whitelist":{"accounts":[]}}"#.into(),
        );
        assert!(matches!(
            SealedSecret::from_secret(&bad_access),
            Err(ManifestError::Access { .. })
        ));
        let mut garbage = good;
        garbage
            .data
            .as_mut()
            .unwrap()
            .insert(SEALED_DATA_KEY.into(), ByteString(b"nope".to_vec()));
        assert!(matches!(
            SealedSecret::from_secret(&garbage),
            Err(ManifestError::Envelope { .. })
        ));
    }
}
