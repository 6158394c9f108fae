//! Per execution: find the sealed secret for a scope, check its access condition for the requester,
//! open it in memory, and build the ephemeral env Secret the executor pod reads.
//!
//! Lookup order, most specific first: the exact branch (in the cluster, then the contract's
//! `get_secrets`), then any branch (cluster, then contract). A secret for the exact branch therefore
//! wins over an any-branch one wherever each is stored.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Client;
use kube::api::ObjectMeta;
use near_primitives::types::AccountId;
use outlayer_contract::SecretsRecord;
use serde_json::json;

use super::access::{self, AccessError, AccessRequest, ChainReadError, ChainState, Denial};
use super::crypto::{Keyring, OpenError, open};
use super::manifest::{ManifestError, find_exact};
use super::plaintext::Plaintext;
use super::scope::Scope;
use crate::chain::ChainClient;
use crate::crd::Reason;

/// The key of the env file in the ephemeral Secret (the executor's `--env-file`).
pub const ENV_FILE_KEY: &str = "env.json";
/// Type of the per-execution Secret holding opened secrets.
pub const UNSEALED_SECRET_TYPE: &str = "outlayer.dev/unsealed";

/// Where a sealed secret was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretSource {
    /// A Secret of type `outlayer.dev/sealed` with this name.
    Cluster(String),
    Contract,
}

#[derive(Debug)]
pub struct Unsealed {
    pub plaintext: Plaintext,
    pub source: SecretSource,
    /// The scope that matched (the any-branch scope after a fallback).
    pub scope: Scope,
}

/// Why secrets were not provided. `Display` is safe for status and Events: no values of the secret
/// or of the access condition.
#[derive(Debug, thiserror::Error)]
pub enum UnsealError {
    #[error("no sealed secrets for {0}")]
    NotFound(Scope),
    #[error("{0}")]
    Denied(Denial),
    #[error("{0}")]
    Access(#[from] AccessError),
    #[error("{0}")]
    Open(#[from] OpenError),
    #[error("{0}")]
    Lookup(#[from] ManifestError),
    #[error("reading the contract's secrets failed: {0}")]
    Contract(ChainReadError),
    #[error("the contract's record for {scope} is unusable: {reason}")]
    ContractRecord { scope: Scope, reason: String },
}

impl UnsealError {
    /// A CamelCase reason for conditions and Events.
    pub fn reason(&self) -> Reason {
        match self {
            Self::NotFound(_) => Reason::SecretsNotFound,
            Self::Denied(_) => Reason::SecretsAccessDenied,
            Self::Access(_) | Self::Contract(_) => Reason::SecretsUnavailable,
            Self::Open(_) => Reason::SecretsUnreadable,
            Self::Lookup(_) | Self::ContractRecord { .. } => Reason::SecretsInvalid,
        }
    }

    /// Worth retrying later (chain or API unreachable), as opposed to a final refusal.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Access(e) => e.is_transient(),
            Self::Contract(e) => e.transient,
            Self::Lookup(ManifestError::Api { .. }) => true,
            _ => false,
        }
    }
}

/// Reads a stored record from the contract (`None`: none for this exact scope).
pub trait SecretsStore: ChainState {
    fn get_secrets(
        &self,
        scope: &Scope,
    ) -> impl Future<Output = Result<Option<SecretsRecord>, ChainReadError>> + Send;
}

impl SecretsStore for ChainClient {
    async fn get_secrets(&self, scope: &Scope) -> Result<Option<SecretsRecord>, ChainReadError> {
        self.view_call(
            self.contract_id(),
            "get_secrets",
            &json!({
                "repo": scope.repo(),
                "branch": scope.branch(),
                "profile": scope.profile(),
                "owner": scope.owner(),
            }),
        )
        .await
        .map_err(|e| ChainReadError {
            method: "get_secrets",
            kind: e.kind(),
            transient: e.is_transient(),
        })
    }
}

/// Finds, authorizes and opens the secrets of `scope` for `request` (who asks, the calling contract,
/// the module, the time: see [`AccessRequest`]; a bare `&AccountId` is a requester judged now with no
/// calling contract and no module known). `chain: None` (a chain-free operator) looks in the cluster
/// only and can only satisfy conditions that need no chain read (any other fails as undecidable
/// rather than granted).
pub async fn unseal<'a, S: SecretsStore>(
    kube: Client,
    namespace: &str,
    chain: Option<&S>,
    keyring: &Keyring,
    scope: &Scope,
    request: impl Into<AccessRequest<'a>>,
) -> Result<Unsealed, UnsealError> {
    let request = request.into();
    let mut scopes = vec![scope.clone()];
    if scope.branch().is_some() {
        scopes.push(scope.any_branch());
    }
    for candidate in scopes {
        if let Some((name, sealed)) = find_exact(kube.clone(), namespace, &candidate).await? {
            authorize(&sealed.access, &request, chain).await?;
            let plaintext = open(keyring, &candidate, &sealed.sealed)?;
            return Ok(Unsealed {
                plaintext,
                source: SecretSource::Cluster(name),
                scope: candidate,
            });
        }
        let Some(chain) = chain else { continue };
        let Some(record) = chain
            .get_secrets(&candidate)
            .await
            .map_err(UnsealError::Contract)?
        else {
            continue;
        };
        let sealed = BASE64
            .decode(&record.encrypted_secrets_base64)
            .map_err(|_| UnsealError::ContractRecord {
                scope: candidate.clone(),
                reason: "encrypted_secrets_base64 is not base64".to_string(),
            })?;
        authorize(&record.access, &request, Some(chain)).await?;
        let plaintext = open(keyring, &candidate, &sealed)?;
        return Ok(Unsealed {
            plaintext,
            source: SecretSource::Contract,
            scope: candidate,
        });
    }
    Err(UnsealError::NotFound(scope.clone()))
}

async fn authorize<S: ChainState>(
    condition: &outlayer_contract::AccessCondition,
    request: &AccessRequest<'_>,
    chain: Option<&S>,
) -> Result<(), UnsealError> {
    let verdict = match chain {
        Some(chain) => access::evaluate(condition, *request, chain).await?,
        None => access::evaluate(condition, *request, &NoChain).await?,
    };
    verdict.map_err(UnsealError::Denied)
}

/// Chain state for a chain-free operator: every read fails (non-transient), so conditions that need
/// the chain are undecidable instead of silently granted.
struct NoChain;

impl NoChain {
    fn fail<T>(method: &'static str) -> Result<T, ChainReadError> {
        Err(ChainReadError {
            method,
            kind: "NoChainConfigured",
            transient: false,
        })
    }
}

impl ChainState for NoChain {
    async fn near_balance(&self, _: &AccountId) -> Result<u128, ChainReadError> {
        Self::fail("view_account")
    }

    async fn ft_balance(&self, _: &AccountId, _: &AccountId) -> Result<u128, ChainReadError> {
        Self::fail("ft_balance_of")
    }

    async fn nft_owner(&self, _: &AccountId, _: &str) -> Result<Option<AccountId>, ChainReadError> {
        Self::fail("nft_token")
    }

    async fn owns_any_nft(&self, _: &AccountId, _: &AccountId) -> Result<bool, ChainReadError> {
        Self::fail("nft_tokens_for_owner")
    }
}

/// The per-execution Secret: immutable, owned by the ExecutionRequest (so garbage collection removes
/// it if the operator does not), holding the canonical JSON the executor reads with `--env-file`.
pub fn ephemeral_env_secret(
    name: &str,
    namespace: &str,
    owner: OwnerReference,
    labels: BTreeMap<String, String>,
    plaintext: &Plaintext,
) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            owner_references: Some(vec![owner]),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        type_: Some(UNSEALED_SECRET_TYPE.to_string()),
        immutable: Some(true),
        data: Some(BTreeMap::from([(
            ENV_FILE_KEY.to_string(),
            ByteString(plaintext.to_json().to_vec()),
        )])),
        ..Secret::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ephemeral_secret_is_immutable_owned_and_holds_the_env_file() {
        let plaintext = Plaintext::from_pairs([("API_KEY", "v")]).unwrap();
        let owner = OwnerReference {
            api_version: "outlayer.dev/v1alpha1".into(),
            kind: "ExecutionRequest".into(),
            name: "req-1".into(),
            uid: "u-1".into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        let secret = ephemeral_env_secret("req-1-env", "ns", owner, BTreeMap::new(), &plaintext);
        assert_eq!(secret.immutable, Some(true));
        assert_eq!(secret.metadata.owner_references.unwrap()[0].uid, "u-1");
        let data = &secret.data.unwrap()[ENV_FILE_KEY].0;
        assert_eq!(Plaintext::from_json(data).unwrap(), plaintext);
    }

    #[test]
    fn reasons_are_stable_and_messages_are_value_free() {
        let scope = Scope::new("alice.near", "github.com/a/b", None, "p").unwrap();
        let error = UnsealError::NotFound(scope);
        assert_eq!(error.reason(), "SecretsNotFound");
        assert!(!error.is_transient());
        let error = UnsealError::Open(OpenError::Rejected);
        assert_eq!(error.reason(), "SecretsUnreadable");
    }
}
