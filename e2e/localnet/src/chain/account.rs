//! One account: balance and storage (kept by the contract's VM when it has code), access keys.

use std::collections::BTreeMap;

use e2e_contract_vm::{AccountState, ContractVm};
use near_crypto::PublicKey;
use near_parameters::RuntimeFeesConfig;
use near_primitives::account::AccessKey;
use near_primitives::types::{Balance, StorageUsage};

/// nearcore lets accounts this small exist without any balance for their storage
/// (near-primitives `ZERO_BALANCE_ACCOUNT_STORAGE_LIMIT`).
const ZERO_BALANCE_ACCOUNT_STORAGE_LIMIT: StorageUsage = 770;
pub struct Account {
    /// Access keys (full-access or function-call) with their committed nonces.
    pub access_keys: BTreeMap<PublicKey, AccessKey>,
    plain: AccountState,
    pub contract: Option<ContractVm>,
}

impl Account {
    /// An account with no keys and no code, as `CreateAccount` or genesis makes it.
    pub fn new(balance: u128, fees: &RuntimeFeesConfig) -> Self {
        Self {
            access_keys: BTreeMap::new(),
            plain: AccountState {
                balance: Balance::from_yoctonear(balance),
                locked: Balance::ZERO,
                storage_usage: fees.storage_usage_config.num_bytes_account,
            },
            contract: None,
        }
    }

    /// Deploys `vm`: the account's balance and key storage move into the VM's account state.
    pub fn deploy(&mut self, mut vm: ContractVm, fees: &RuntimeFeesConfig) {
        let keys_bytes = self.keys_storage(fees);
        let state = vm.account_mut();
        state.balance = self.plain.balance;
        state.locked = self.plain.locked;
        state.storage_usage = state.storage_usage.saturating_add(keys_bytes);
        self.contract = Some(vm);
    }

    pub fn add_full_access_key(&mut self, key: PublicKey, fees: &RuntimeFeesConfig) {
        self.add_key(key, AccessKey::full_access(), fees);
    }

    /// Adds `access_key` under `key` and counts its storage as nearcore does; false (and nothing
    /// changed) when the key exists.
    pub fn add_key(
        &mut self,
        key: PublicKey,
        access_key: AccessKey,
        fees: &RuntimeFeesConfig,
    ) -> bool {
        if self.access_keys.contains_key(&key) {
            return false;
        }
        let bytes = key_storage(fees, &key, &access_key);
        self.access_keys.insert(key, access_key);
        let state = self.state_mut();
        state.storage_usage = state.storage_usage.saturating_add(bytes);
        true
    }

    /// Removes `key` and frees its storage; false when there is no such key.
    pub fn delete_key(&mut self, key: &PublicKey, fees: &RuntimeFeesConfig) -> bool {
        let Some(access_key) = self.access_keys.remove(key) else {
            return false;
        };
        let bytes = key_storage(fees, key, &access_key);
        let state = self.state_mut();
        state.storage_usage = state.storage_usage.saturating_sub(bytes);
        true
    }

    fn keys_storage(&self, fees: &RuntimeFeesConfig) -> u64 {
        self.access_keys
            .iter()
            .map(|(key, access_key)| key_storage(fees, key, access_key))
            .fold(0, u64::saturating_add)
    }

    pub fn state(&self) -> &AccountState {
        match &self.contract {
            Some(vm) => vm.account(),
            None => &self.plain,
        }
    }

    pub fn state_mut(&mut self) -> &mut AccountState {
        match &mut self.contract {
            Some(vm) => vm.account_mut(),
            None => &mut self.plain,
        }
    }

    pub fn balance(&self) -> u128 {
        self.state().balance.as_yoctonear()
    }

    pub fn set_balance(&mut self, balance: u128) {
        self.state_mut().balance = Balance::from_yoctonear(balance);
    }

    /// yoctoNEAR the account must keep for its storage (nearcore `check_storage_stake`).
    pub fn storage_required(&self, fees: &RuntimeFeesConfig) -> u128 {
        let state = self.state();
        if state.storage_usage <= ZERO_BALANCE_ACCOUNT_STORAGE_LIMIT {
            return 0;
        }
        fees.storage_usage_config
            .storage_amount_per_byte
            .as_yoctonear()
            .saturating_mul(u128::from(state.storage_usage))
            .saturating_sub(state.locked.as_yoctonear())
    }
}

/// What nearcore counts for one access key: the record overhead plus the borsh sizes of the public key
/// and of the access key (nonce and permission, a function-call key's receiver and methods included).
fn key_storage(fees: &RuntimeFeesConfig, key: &PublicKey, access_key: &AccessKey) -> u64 {
    // Borsh into a length counter cannot fail for these in-memory values.
    let key_len = borsh::object_length(key).unwrap_or_default() as u64;
    let access_key_len = borsh::object_length(access_key).unwrap_or_default() as u64;
    fees.storage_usage_config
        .num_extra_bytes_record
        .saturating_add(key_len)
        .saturating_add(access_key_len)
}
