//! NEAR test accounts: names parsed, keys derived from the account name (so a genesis and a signer
//! agree without sharing state), amounts in yoctoNEAR.

use near_crypto::{KeyType, PublicKey, SecretKey};
use near_primitives::types::{AccountId, Balance};

/// One NEAR in yoctoNEAR, for genesis balances and deposits (`100 * NEAR`).
pub const NEAR: u128 = Balance::from_near(1).as_yoctonear();

/// `name` as an account id; panics on an invalid name (a test's typo).
pub fn account(name: &str) -> AccountId {
    name.parse()
        .unwrap_or_else(|e| panic!("{name} is not an account id: {e}"))
}

/// The deterministic ED25519 key of test account `name`.
pub fn secret(name: &str) -> SecretKey {
    SecretKey::from_seed(KeyType::ED25519, name)
}

/// A test account with its deterministic key.
#[derive(Clone, Debug)]
pub struct Key {
    pub account_id: AccountId,
    pub secret: SecretKey,
}

impl Key {
    pub fn new(name: &str) -> Self {
        Self {
            account_id: account(name),
            secret: secret(name),
        }
    }

    pub fn public_key(&self) -> PublicKey {
        self.secret.public_key()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_name_and_near_is_ten_to_the_24() {
        assert_eq!(NEAR, 10u128.pow(24));
        assert_eq!(secret("alice.localnet"), secret("alice.localnet"));
        assert_ne!(secret("alice.localnet"), secret("bob.localnet"));
        let key = Key::new("alice.localnet");
        assert_eq!(key.account_id.as_str(), "alice.localnet");
        assert_eq!(key.public_key(), secret("alice.localnet").public_key());
    }
}
