//! Verifiable randomness for on-chain runs (DESIGN §10).
//!
//! The operator holds one ed25519 *seed key*, kept in a Secret of its namespace and published on the
//! contract (`set_seed_public_key`). Every request records the key that was published when it was
//! made. Its run is deterministic: the guest's randomness is seeded with SHA-256 of the seed key's
//! signature over the request's [`seed_message`] (contract, request id, data id), its realtime clock
//! reads the request block's timestamp. Ed25519 signatures are deterministic (RFC 8032), so the
//! operator cannot pick among seeds, and the requester cannot compute the seed before the answer
//! carries the signature. The contract checks the signature against the recorded key; anyone can then
//! derive the seed and replay the run (`outlayer-operator verify`).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ObjectMeta, PostParams};
use near_crypto::{KeyType, ParseKeyError, PublicKey, SecretKey, Signature};
use outlayer_contract::seed_message;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use crate::context::Context;
use crate::crd::ExecutionRequestSpec;

/// The Secret holding the seed key, in the operator's namespace.
pub const SEED_KEY_SECRET: &str = "outlayer-seed-key";
/// Its type: a Secret of another type under that name is not the operator's and is never used.
pub const SEED_KEY_SECRET_TYPE: &str = "outlayer.dev/seed-key";
/// The entry with the secret key (`ed25519:<base58>`, NEAR's notation).
pub const SEED_KEY_ENTRY: &str = "secretKey";
/// How soon a failed load or publish is tried again.
const RETRY_INTERVAL: Duration = Duration::from_secs(15);
/// How often the contract's published key is checked once it matched.
const CHECK_INTERVAL: Duration = Duration::from_secs(10 * 60);

#[derive(Debug, thiserror::Error)]
pub enum SeedError {
    #[error(
        "Secret {name} is of type {found:?}, not {SEED_KEY_SECRET_TYPE}: it is not the operator's"
    )]
    NotOurs { name: String, found: Option<String> },
    #[error("Secret {name} has no readable ed25519 key in {SEED_KEY_ENTRY:?}: {why}")]
    Malformed { name: String, why: String },
    #[error("{what} Secret {name}: {source}")]
    Api {
        what: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// The operator's seed key.
#[derive(Clone)]
pub struct SeedKey {
    secret: SecretKey,
}

impl std::fmt::Debug for SeedKey {
    // Never the secret half.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeedKey")
            .field("public_key", &self.public_key())
            .finish()
    }
}

impl SeedKey {
    pub fn generate() -> Self {
        Self {
            secret: SecretKey::from_random(KeyType::ED25519),
        }
    }

    /// Parses `ed25519:<base58>`; any other key type is refused.
    pub fn parse(text: &str) -> Result<Self, String> {
        // The parse error's own text may quote the key's characters: only its kind is said.
        let secret: SecretKey = text.trim().parse().map_err(|e| {
            let kind = match e {
                ParseKeyError::UnknownKeyType { .. } => "an unknown key type",
                ParseKeyError::InvalidLength(_) => "key data of the wrong length",
                ParseKeyError::InvalidData { .. } => "key data that is not base58",
            };
            format!("not a NEAR secret key ({kind})")
        })?;
        if !matches!(secret.key_type(), KeyType::ED25519) {
            return Err(format!("a {} key, not ed25519", secret.key_type()));
        }
        Ok(Self { secret })
    }

    /// `ed25519:<base58>`, as the contract publishes it.
    pub fn public_key(&self) -> String {
        self.secret.public_key().to_string()
    }

    fn secret_text(&self) -> String {
        self.secret.to_string()
    }

    /// The signature over request `request_id`'s seed message on `contract_id`, and the seed it gives.
    pub fn sign(&self, contract_id: &str, request_id: u64, data_id: &str) -> SignedSeed {
        let signature = self
            .secret
            .sign(&seed_message(contract_id, request_id, data_id));
        SignedSeed::from_signature(&signature)
    }
}

/// A seed signature and the seed derived from it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedSeed {
    /// `ed25519:<base58>`, as the contract and the answer's evidence carry it.
    pub signature: String,
    /// SHA-256 of the signature's 64 bytes, lower-case hex: the executor's `--seed`.
    pub seed: String,
}

impl SignedSeed {
    fn from_signature(signature: &Signature) -> Self {
        // A seed key is ed25519 (checked when it is parsed or generated); the other arm only keeps the
        // match total.
        let bytes = match signature {
            Signature::ED25519(signature) => signature.to_bytes().to_vec(),
            _ => Vec::new(),
        };
        Self {
            signature: signature.to_string(),
            seed: seed_of(&bytes),
        }
    }
}

/// The seed a signature's bytes give: SHA-256, lower-case hex.
pub fn seed_of(signature: &[u8]) -> String {
    hex::encode(Sha256::digest(signature))
}

/// Checks `signature` (`ed25519:<base58>`) as `public_key`'s seed signature of request `request_id`
/// on `contract_id`, and returns the seed it gives.
pub fn check_seed_signature(
    public_key: &str,
    contract_id: &str,
    request_id: u64,
    data_id: &str,
    signature: &str,
) -> Result<String, String> {
    let key: PublicKey = public_key
        .parse()
        .map_err(|e| format!("seed key {public_key:?} is not a NEAR public key: {e}"))?;
    let bytes = outlayer_contract::decode_seed_signature(signature)?;
    let parsed = Signature::from_parts(KeyType::ED25519, &bytes)
        .map_err(|e| format!("seed signature is not an ed25519 signature: {e}"))?;
    if !parsed.verify(&seed_message(contract_id, request_id, data_id), &key) {
        return Err(format!(
            "the seed signature is not {public_key}'s over request {request_id}'s seed message"
        ));
    }
    Ok(seed_of(&bytes))
}

/// What a run's determinism is: the executor's seed and clock, and the signature the answer carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunSeed {
    /// The executor's `--seed`.
    pub seed: String,
    /// What the guest's realtime clock reads (ns since the Unix epoch).
    pub unix_time_ns: u64,
    /// For on-chain runs, the seed signature the answer's evidence carries.
    pub signature: Option<String>,
}

/// How an execution's run is seeded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SeedStep {
    /// Not deterministic: a kubectl request that did not opt in, or an on-chain request made when the
    /// contract had no seed key (its answer carries no seed, and a verifier says so).
    Free,
    Ready(RunSeed),
    /// The seed key is not loaded yet; says why.
    Waiting(String),
    /// The request recorded a seed key the operator does not hold: it cannot be answered with a
    /// replayable run. Fails the request (the contract accepts a failure without a seed).
    Unavailable(String),
}

/// How `spec`'s run is seeded, given the seed key the operator holds (`None`: not loaded yet) and the
/// contract it serves. Pure.
pub fn seed_step(
    spec: &ExecutionRequestSpec,
    held: Option<&SeedKey>,
    contract_id: Option<&str>,
) -> SeedStep {
    let Some(on_chain) = &spec.on_chain else {
        return match &spec.deterministic {
            Some(deterministic) => SeedStep::Ready(RunSeed {
                seed: deterministic.seed.clone(),
                unix_time_ns: deterministic.unix_time_ns,
                signature: None,
            }),
            None => SeedStep::Free,
        };
    };
    let Some(recorded) = &on_chain.seed_public_key else {
        return SeedStep::Free;
    };
    let Some(contract_id) = contract_id else {
        return SeedStep::Waiting(
            "the operator has no chain client: the seed message cannot be formed".to_string(),
        );
    };
    let Some(held) = held else {
        return SeedStep::Waiting("waiting for the seed key to be loaded".to_string());
    };
    if held.public_key() != *recorded {
        return SeedStep::Unavailable(format!(
            "the request recorded seed key {recorded}, and the operator holds {}: its run cannot be \
             seeded as the contract requires",
            held.public_key()
        ));
    }
    let signed = held.sign(contract_id, on_chain.request_id, &on_chain.data_id);
    SeedStep::Ready(RunSeed {
        seed: signed.seed,
        unix_time_ns: on_chain.block_timestamp_ns,
        signature: Some(signed.signature),
    })
}

/// The seed key in Secret `name`: read, or created when absent (`Ok(None)` if another replica created
/// it at the same time: read again).
async fn load_or_create(api: &Api<Secret>, name: &str) -> Result<Option<SeedKey>, SeedError> {
    let api_error = |what: &'static str| {
        move |source| SeedError::Api {
            what,
            name: name.to_string(),
            source,
        }
    };
    if let Some(secret) = api.get_opt(name).await.map_err(api_error("reading"))? {
        return decode(name, &secret).map(Some);
    }
    let key = SeedKey::generate();
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(
                [(
                    "app.kubernetes.io/managed-by".to_string(),
                    "outlayer-operator".to_string(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        type_: Some(SEED_KEY_SECRET_TYPE.to_string()),
        data: Some(
            [(
                SEED_KEY_ENTRY.to_string(),
                ByteString(key.secret_text().into_bytes()),
            )]
            .into(),
        ),
        immutable: Some(true),
        ..Default::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            info!(secret = name, public_key = %key.public_key(), "seed key created");
            Ok(Some(key))
        }
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(None),
        Err(source) => Err(api_error("creating")(source)),
    }
}

fn decode(name: &str, secret: &Secret) -> Result<SeedKey, SeedError> {
    if secret.type_.as_deref() != Some(SEED_KEY_SECRET_TYPE) {
        return Err(SeedError::NotOurs {
            name: name.to_string(),
            found: secret.type_.clone(),
        });
    }
    let malformed = |why: String| SeedError::Malformed {
        name: name.to_string(),
        why,
    };
    let bytes = secret
        .data
        .as_ref()
        .and_then(|data| data.get(SEED_KEY_ENTRY))
        .ok_or_else(|| malformed("the entry is missing".to_string()))?;
    let text = std::str::from_utf8(&bytes.0).map_err(|_| malformed("not UTF-8".to_string()))?;
    SeedKey::parse(text).map_err(malformed)
}

/// Keeps the seed key (leader only): loads or creates it, hands it to the execution controller and
/// publishes its public key on the contract when the contract's differs. Runs until `shutdown`.
pub async fn run(ctx: Arc<Context>, namespace: String, shutdown: impl Future<Output = ()>) {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
    tokio::pin!(shutdown);
    loop {
        let wait = match ctx.seed_key() {
            Some(key) => publish(&ctx, &key).await,
            None => match load_or_create(&api, SEED_KEY_SECRET).await {
                Ok(Some(key)) => {
                    let key = Arc::new(key);
                    ctx.set_seed_key(key.clone());
                    publish(&ctx, &key).await
                }
                Ok(None) => Duration::ZERO,
                Err(error) => {
                    // Replayable requests wait (and say why) until this succeeds.
                    warn!(%error, "the seed key is unavailable");
                    RETRY_INTERVAL
                }
            },
        };
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Sets the contract's seed key when it differs; how long until the next check.
async fn publish(ctx: &Context, key: &SeedKey) -> Duration {
    let Some(chain) = &ctx.chain else {
        return CHECK_INTERVAL;
    };
    let current = key.public_key();
    match chain.get_seed_public_key().await {
        Ok(Some(published)) if published == current => CHECK_INTERVAL,
        Ok(_) => match chain.set_seed_public_key(&current).await {
            Ok(outcome) => {
                info!(public_key = %current, tx_hash = %outcome.tx_hash, "seed public key published on the contract");
                CHECK_INTERVAL
            }
            Err(error) => {
                warn!(%error, "publishing the seed public key on the contract failed");
                RETRY_INTERVAL
            }
        },
        Err(error) => {
            warn!(%error, "reading the contract's seed public key failed");
            RETRY_INTERVAL
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{CodeRef, DeterministicSpec, Limits, OnChain};

    fn key(name: &str) -> SeedKey {
        SeedKey {
            secret: SecretKey::from_seed(KeyType::ED25519, name),
        }
    }

    fn spec(on_chain: Option<OnChain>) -> ExecutionRequestSpec {
        ExecutionRequestSpec {
            code: CodeRef::from_repo("https://github.com/a/b", "main"),
            input: String::new(),
            limits: Limits {
                max_instructions: 1,
                max_memory_mb: 1,
                max_execution_seconds: 1,
            },
            response_format: Default::default(),
            secrets_ref: None,
            compile_only: false,
            deterministic: None,
            on_chain,
        }
    }

    fn on_chain(recorded: Option<&SeedKey>) -> OnChain {
        OnChain {
            request_id: 7,
            data_id: "4Kx".to_string(),
            sender: "alice.near".to_string(),
            deposit: "1".to_string(),
            block_height: 10,
            block_timestamp_ns: 1_700_000_000_123_456_789,
            yield_deadline_height: 210,
            include_stderr: false,
            seed_public_key: recorded.map(SeedKey::public_key),
        }
    }

    #[test]
    fn an_on_chain_run_is_seeded_by_the_recorded_keys_signature() {
        let operator = key("operator");
        let spec = spec(Some(on_chain(Some(&operator))));
        let SeedStep::Ready(run) = seed_step(&spec, Some(&operator), Some("outlayer.near")) else {
            panic!("expected a seeded run");
        };
        let signature = run.signature.clone().unwrap();
        // Anyone holding the public key gets the same seed from the signature alone.
        let checked = check_seed_signature(
            &operator.public_key(),
            "outlayer.near",
            7,
            "4Kx",
            &signature,
        );
        assert_eq!(checked.as_deref(), Ok(run.seed.as_str()));
        assert_eq!(run.unix_time_ns, 1_700_000_000_123_456_789);
        // Deterministic: signing again gives the same seed.
        assert_eq!(
            seed_step(&spec, Some(&operator), Some("outlayer.near")),
            SeedStep::Ready(run)
        );
    }

    #[test]
    fn seeds_differ_per_request_and_per_contract() {
        let operator = key("operator");
        let a = operator.sign("outlayer.near", 7, "4Kx");
        let b = operator.sign("outlayer.near", 8, "4Kx");
        let c = operator.sign("other.near", 7, "4Kx");
        assert_ne!(a.seed, b.seed);
        assert_ne!(a.seed, c.seed);
    }

    #[test]
    fn a_signature_checks_only_for_its_key_and_request() {
        let operator = key("operator");
        let signed = operator.sign("outlayer.near", 7, "4Kx");
        let other = key("other").public_key();
        for (public, request) in [(other.as_str(), 7), (operator.public_key().as_str(), 8)] {
            let checked =
                check_seed_signature(public, "outlayer.near", request, "4Kx", &signed.signature);
            assert!(checked.is_err(), "{public} / {request} must not check");
        }
    }

    #[test]
    fn how_each_request_is_seeded() {
        let operator = key("operator");
        let other = key("other");
        let kubectl = spec(None);
        assert_eq!(seed_step(&kubectl, Some(&operator), None), SeedStep::Free);
        let mut opted_in = spec(None);
        opted_in.deterministic = Some(DeterministicSpec {
            seed: "s".to_string(),
            unix_time_ns: 5,
        });
        assert_eq!(
            seed_step(&opted_in, None, None),
            SeedStep::Ready(RunSeed {
                seed: "s".to_string(),
                unix_time_ns: 5,
                signature: None
            })
        );
        let unkeyed = spec(Some(on_chain(None)));
        assert_eq!(
            seed_step(&unkeyed, Some(&operator), Some("c")),
            SeedStep::Free
        );
        let keyed = spec(Some(on_chain(Some(&operator))));
        assert!(matches!(
            seed_step(&keyed, None, Some("c")),
            SeedStep::Waiting(_)
        ));
        assert!(matches!(
            seed_step(&keyed, Some(&operator), None),
            SeedStep::Waiting(_)
        ));
        let SeedStep::Unavailable(message) = seed_step(&keyed, Some(&other), Some("c")) else {
            panic!("another key cannot seed it");
        };
        assert!(message.contains(&operator.public_key()), "{message}");
    }

    #[test]
    fn the_secret_must_be_the_operators_type_and_hold_an_ed25519_key() {
        let operator = key("operator");
        let secret = |type_: &str, text: &str| Secret {
            type_: Some(type_.to_string()),
            data: Some(
                [(
                    SEED_KEY_ENTRY.to_string(),
                    ByteString(text.as_bytes().to_vec()),
                )]
                .into(),
            ),
            ..Default::default()
        };
        let good = secret(SEED_KEY_SECRET_TYPE, &operator.secret_text());
        assert_eq!(
            decode("s", &good).unwrap().public_key(),
            operator.public_key()
        );
        assert!(matches!(
            decode("s", &secret("Opaque", &operator.secret_text())),
            Err(SeedError::NotOurs { .. })
        ));
        let secp = SecretKey::from_seed(KeyType::SECP256K1, "k").to_string();
        assert!(matches!(
            decode("s", &secret(SEED_KEY_SECRET_TYPE, &secp)),
            Err(SeedError::Malformed { .. })
        ));
        // A damaged key is named by what is wrong with it, never quoted.
        let damaged = format!(
            "ed25519:{}0OIl",
            &operator.secret_text()["ed25519:".len()..][..20]
        );
        let error = decode("s", &secret(SEED_KEY_SECRET_TYPE, &damaged))
            .unwrap_err()
            .to_string();
        assert!(error.contains("not base58"), "{error}");
        assert!(
            !error.contains(&damaged["ed25519:".len()..][..8]),
            "{error}"
        );
        // The secret half never shows in debug output.
        assert!(!format!("{operator:?}").contains(&operator.secret_text()));
    }
}
