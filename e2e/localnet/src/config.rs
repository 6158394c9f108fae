//! Genesis and chain settings: accounts with balances and full-access keys, contracts deployed from
//! wasm files with an init call, block time and gas price. Read from JSON by the binary, built in
//! code by tests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use near_crypto::PublicKey;
use near_primitives::types::AccountId;
use serde::{Deserialize, Serialize};

use crate::Error;

/// nearcore's minimum gas price on mainnet (yoctoNEAR per gas unit): 0.1 NEAR per 1000 Tgas.
pub const DEFAULT_GAS_PRICE: u128 = 100_000_000;
/// Blocks a transaction's `block_hash` stays valid for (nearcore mainnet genesis value).
pub const DEFAULT_TRANSACTION_VALIDITY_PERIOD: u64 = 86_400;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalnetConfig {
    #[serde(default = "default_chain_id")]
    pub chain_id: String,
    /// Milliseconds between blocks.
    #[serde(default = "default_block_time_ms")]
    pub block_time_ms: u64,
    /// Fixed gas price, yoctoNEAR per gas unit, as a decimal string.
    #[serde(default = "default_gas_price", with = "yocto")]
    pub gas_price: u128,
    /// Protocol version whose runtime parameters (fees, limits, yield timeout) apply; the newest
    /// this nearcore release knows when omitted.
    #[serde(default)]
    pub protocol_version: Option<u32>,
    #[serde(default = "default_validity_period")]
    pub transaction_validity_period: u64,
    /// How long `broadcast_tx_commit` / `send_tx` / `tx` wait for the requested status before
    /// answering nearcore's TIMEOUT_ERROR (nearcore's default polling timeout is 10 s).
    #[serde(default = "default_tx_wait_timeout_ms")]
    pub tx_wait_timeout_ms: u64,
    pub accounts: Vec<GenesisAccount>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisAccount {
    pub account_id: AccountId,
    /// yoctoNEAR as a decimal string.
    #[serde(with = "yocto")]
    pub balance: u128,
    /// Full-access ed25519 keys, `ed25519:<base58>`.
    #[serde(default)]
    pub public_keys: Vec<PublicKey>,
    #[serde(default)]
    pub contract: Option<GenesisContract>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenesisContract {
    /// Path of the wasm file (relative paths are resolved against the config file's folder).
    pub wasm: PathBuf,
    #[serde(default)]
    pub init: Option<InitCall>,
}

/// A function call the contract account makes on itself at genesis (e.g. `new`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitCall {
    pub method: String,
    #[serde(default)]
    pub args: serde_json::Value,
}

fn default_chain_id() -> String {
    "localnet".to_string()
}
fn default_block_time_ms() -> u64 {
    600
}
fn default_gas_price() -> u128 {
    DEFAULT_GAS_PRICE
}
fn default_validity_period() -> u64 {
    DEFAULT_TRANSACTION_VALIDITY_PERIOD
}
fn default_tx_wait_timeout_ms() -> u64 {
    10_000
}

impl Default for LocalnetConfig {
    fn default() -> Self {
        Self {
            chain_id: default_chain_id(),
            block_time_ms: default_block_time_ms(),
            gas_price: DEFAULT_GAS_PRICE,
            protocol_version: None,
            transaction_validity_period: DEFAULT_TRANSACTION_VALIDITY_PERIOD,
            tx_wait_timeout_ms: default_tx_wait_timeout_ms(),
            accounts: Vec::new(),
        }
    }
}

impl LocalnetConfig {
    /// Reads a JSON config; contract wasm paths are resolved against the file's folder.
    pub fn from_file(path: &Path) -> Result<Self, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::ReadFile {
            path: path.to_path_buf(),
            source,
        })?;
        let mut config: Self = serde_json::from_str(&text).map_err(|source| Error::Config {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        for account in &mut config.accounts {
            if let Some(contract) = &mut account.contract
                && contract.wasm.is_relative()
            {
                contract.wasm = base.join(&contract.wasm);
            }
        }
        Ok(config)
    }

    pub fn block_time(&self) -> Duration {
        Duration::from_millis(self.block_time_ms)
    }

    pub fn tx_wait_timeout(&self) -> Duration {
        Duration::from_millis(self.tx_wait_timeout_ms)
    }

    pub fn with_block_time(mut self, block_time: Duration) -> Self {
        self.block_time_ms = u64::try_from(block_time.as_millis()).unwrap_or(u64::MAX);
        self
    }

    pub fn with_tx_wait_timeout(mut self, timeout: Duration) -> Self {
        self.tx_wait_timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self
    }

    /// An account holding `balance` yoctoNEAR with one full-access key.
    pub fn with_account(mut self, account_id: AccountId, balance: u128, key: PublicKey) -> Self {
        self.accounts.push(GenesisAccount {
            account_id,
            balance,
            public_keys: vec![key],
            contract: None,
        });
        self
    }

    /// A contract account (no keys) running `wasm`, initialised with `init` if given.
    pub fn with_contract(
        mut self,
        account_id: AccountId,
        balance: u128,
        wasm: PathBuf,
        init: Option<InitCall>,
    ) -> Self {
        self.accounts.push(GenesisAccount {
            account_id,
            balance,
            public_keys: Vec::new(),
            contract: Some(GenesisContract { wasm, init }),
        });
        self
    }
}

/// u128 amounts as decimal strings, as nearcore's JSON carries them.
mod yocto {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &u128, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&value.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u128, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(|e| {
            serde::de::Error::custom(format!(
                "{text:?} is not a yoctoNEAR amount (a decimal integer string): {e}"
            ))
        })
    }
}
