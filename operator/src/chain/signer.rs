//! The operator's signing identity and its access-key nonce. The secret key never leaves this module in
//! readable form: `Debug` is redacted and no error carries it.

use std::fmt;
use std::str::FromStr;

use near_crypto::{KeyType, PublicKey, SecretKey};
use near_primitives::action::Action;
use near_primitives::hash::CryptoHash;
use near_primitives::transaction::{SignedTransaction, Transaction, TransactionV0};
use near_primitives::types::AccountId;

use super::errors::ChainError;

/// An account id and a full-access ed25519 key of it, as a Kubernetes Secret holds them.
#[derive(Clone)]
pub struct OperatorSigner {
    account_id: AccountId,
    secret_key: SecretKey,
    public_key: PublicKey,
}

impl fmt::Debug for OperatorSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OperatorSigner")
            .field("account_id", &self.account_id)
            .field("public_key", &self.public_key)
            .field("secret_key", &"<redacted>")
            .finish()
    }
}

impl OperatorSigner {
    /// Parses the two values of the operator's Secret: an account id and a key in NEAR's
    /// `ed25519:<base58>` form (the 64-byte expanded key near-cli writes). Surrounding whitespace is
    /// ignored, since Secrets made from files often end in a newline.
    pub fn from_secret_strings(account_id: &str, secret_key: &str) -> Result<Self, ChainError> {
        let account_id_text = account_id.trim();
        let account_id =
            AccountId::from_str(account_id_text).map_err(|e| ChainError::InvalidAccountId {
                account_id: account_id_text.to_string(),
                reason: e.to_string(),
            })?;
        let invalid_key = |reason: String| ChainError::InvalidSecretKey {
            account_id: account_id.to_string(),
            reason,
        };
        let secret_key = secret_key.trim();
        if !secret_key.starts_with("ed25519:") {
            return Err(invalid_key(
                "expected the form ed25519:<base58>".to_string(),
            ));
        }
        // ParseKeyError never echoes the key data; its message says which part is wrong.
        let secret_key = SecretKey::from_str(secret_key)
            .map_err(|e| invalid_key(format!("not a valid ed25519 secret key ({e})")))?;
        if !matches!(secret_key.key_type(), KeyType::ED25519) {
            return Err(invalid_key("only ed25519 keys are supported".to_string()));
        }
        Ok(Self::new(account_id, secret_key))
    }

    /// The keys of an operator key file: one `ed25519:<base58>` key per line (blank lines and `#`
    /// comments skipped), the first being the primary (see `ChainClient::with_keys`). Errors name
    /// the line, never its content.
    pub fn pool_from_secret_strings(
        account_id: &str,
        key_file: &str,
    ) -> Result<Vec<Self>, ChainError> {
        let mut keys = Vec::new();
        for (index, line) in key_file.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key = Self::from_secret_strings(account_id, line).map_err(|e| match e {
                ChainError::InvalidSecretKey { account_id, reason } => {
                    ChainError::InvalidSecretKey {
                        account_id,
                        reason: format!("line {}: {reason}", index + 1),
                    }
                }
                other => other,
            })?;
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(ChainError::InvalidSecretKey {
                account_id: account_id.trim().to_string(),
                reason: "no key (expected one ed25519:<base58> key per line)".to_string(),
            });
        }
        Ok(keys)
    }

    pub fn new(account_id: AccountId, secret_key: SecretKey) -> Self {
        let public_key = secret_key.public_key();
        Self {
            account_id,
            secret_key,
            public_key,
        }
    }

    pub fn account_id(&self) -> &AccountId {
        &self.account_id
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public_key
    }

    pub(crate) fn sign(
        &self,
        nonce: u64,
        block_hash: CryptoHash,
        receiver_id: AccountId,
        actions: Vec<Action>,
    ) -> SignedTransaction {
        let transaction = Transaction::V0(TransactionV0 {
            signer_id: self.account_id.clone(),
            public_key: self.public_key.clone(),
            nonce,
            receiver_id,
            block_hash,
            actions,
        });
        let (hash, _) = transaction.get_hash_and_size();
        SignedTransaction::new(self.secret_key.sign(hash.as_ref()), transaction)
    }
}

/// The access key's nonce as this process tracks it: fetched once, incremented locally, raised to what
/// the chain reports when a transaction is refused for its nonce.
#[derive(Debug, Default)]
pub(crate) struct NonceTracker {
    /// The last nonce handed out (or the chain's, right after a fetch); `None` until fetched.
    last: Option<u64>,
}

impl NonceTracker {
    pub(crate) fn is_known(&self) -> bool {
        self.last.is_some()
    }

    /// Records the chain's nonce; never goes back below nonces handed out to transactions in flight.
    pub(crate) fn observe_chain(&mut self, chain_nonce: u64) {
        self.last = Some(self.last.map_or(chain_nonce, |last| last.max(chain_nonce)));
    }

    /// The next nonce to sign with, if known.
    pub(crate) fn next(&mut self) -> Option<u64> {
        let next = self.last?.checked_add(1)?;
        self.last = Some(next);
        Some(next)
    }

    /// Forget everything: the next transaction fetches the nonce again.
    pub(crate) fn forget(&mut self) {
        self.last = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_secret_form_and_never_shows_the_key() {
        let key = SecretKey::from_seed(KeyType::ED25519, "operator");
        let text = format!("{key}\n");
        let signer = OperatorSigner::from_secret_strings(" operator.near\n", &text).unwrap();
        assert_eq!(signer.account_id().as_str(), "operator.near");
        assert_eq!(signer.public_key(), &key.public_key());
        let debug = format!("{signer:?}");
        let bare = text.trim().trim_start_matches("ed25519:");
        assert!(!debug.contains(bare), "{debug}");
        assert!(debug.contains("<redacted>"));
    }

    #[test]
    fn bad_inputs_are_named_without_echoing_the_key() {
        let key = SecretKey::from_seed(KeyType::ED25519, "operator").to_string();
        let error = OperatorSigner::from_secret_strings("Not Valid!", &key).unwrap_err();
        assert!(
            matches!(error, ChainError::InvalidAccountId { .. }),
            "{error}"
        );

        let truncated = &key[..key.len() - 5];
        let error = OperatorSigner::from_secret_strings("op.near", truncated).unwrap_err();
        assert!(
            matches!(error, ChainError::InvalidSecretKey { .. }),
            "{error}"
        );
        assert!(!error.to_string().contains(&truncated[8..]), "{error}");

        let error = OperatorSigner::from_secret_strings("op.near", "secp256k1:abc").unwrap_err();
        assert!(error.to_string().contains("ed25519:<base58>"), "{error}");
    }

    #[test]
    fn a_key_file_holds_one_key_per_line() {
        let keys: Vec<String> = ["a", "b", "c"]
            .iter()
            .map(|seed| SecretKey::from_seed(KeyType::ED25519, seed).to_string())
            .collect();
        let file = format!("# pool\n{}\n\n  {}  \n{}\n", keys[0], keys[1], keys[2]);
        let pool = OperatorSigner::pool_from_secret_strings("op.near", &file).unwrap();
        let public: Vec<String> = pool.iter().map(|k| k.public_key().to_string()).collect();
        let expected: Vec<String> = ["a", "b", "c"]
            .iter()
            .map(|seed| {
                SecretKey::from_seed(KeyType::ED25519, seed)
                    .public_key()
                    .to_string()
            })
            .collect();
        assert_eq!(public, expected);
        // A single key without a newline is the old format.
        assert_eq!(
            OperatorSigner::pool_from_secret_strings("op.near", &keys[0])
                .unwrap()
                .len(),
            1
        );

        let broken = format!("{}\n{}\n", keys[0], &keys[1][..keys[1].len() - 4]);
        let error = OperatorSigner::pool_from_secret_strings("op.near", &broken).unwrap_err();
        assert!(error.to_string().contains("line 2"), "{error}");
        assert!(!error.to_string().contains(&keys[1][8..20]), "{error}");
        let error = OperatorSigner::pool_from_secret_strings("op.near", "# none\n\n").unwrap_err();
        assert!(error.to_string().contains("no key"), "{error}");
    }

    #[test]
    fn nonces_increase_and_follow_the_chain_upwards_only() {
        let mut nonces = NonceTracker::default();
        assert_eq!(nonces.next(), None);
        nonces.observe_chain(7);
        assert_eq!(nonces.next(), Some(8));
        assert_eq!(nonces.next(), Some(9));
        // The chain lags behind transactions in flight: keep ours.
        nonces.observe_chain(8);
        assert_eq!(nonces.next(), Some(10));
        // Someone else used the key: jump past them.
        nonces.observe_chain(20);
        assert_eq!(nonces.next(), Some(21));
        nonces.forget();
        assert!(!nonces.is_known());
    }
}
