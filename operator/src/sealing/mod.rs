//! Sealed secrets: users encrypt API keys and credentials to the operator's public key for one scope
//! (owner account, repository, branch or any, profile); the operator opens them in memory for an
//! execution whose requester satisfies the secret's access condition.
//!
//! - `scope`: the validated, canonical scope and its unambiguous encoding.
//! - `plaintext`: the bundle (JSON object of env-var names → strings), validated, redacted, wiped on drop.
//! - `crypto`: X25519 + HKDF-SHA256 + ChaCha20-Poly1305, the versioned wire format, the keyring.
//! - `keys`: the operator's keyring in a Kubernetes Secret, rotation, the public-key ConfigMap.
//! - `manifest`: sealed secrets as Kubernetes Secrets of type `outlayer.dev/sealed`, and lookups.
//! - `access`: the contract's `AccessCondition` evaluated against chain state.
//! - `unseal`: per execution — find (cluster, then contract; branch, then any), authorize, open, and
//!   build the ephemeral env Secret.
//! - `cli`: the `seal` and `pubkey` subcommands.
//!
//! Nothing here logs, formats or returns a secret value or key.

pub mod access;
pub mod cli;
pub mod crypto;
pub mod keeper;
pub mod keys;
pub mod manifest;
pub mod plaintext;
pub mod scope;
pub mod unseal;

pub use crypto::{
    KeyId, KeyPair, Keyring, OpenError, PublicKey, SealError, SealingKey, SecretKey, open, seal,
};
pub use plaintext::{Plaintext, PlaintextError};
pub use scope::{Scope, ScopeError};
pub use unseal::{SecretSource, UnsealError, Unsealed, ephemeral_env_secret, unseal};
