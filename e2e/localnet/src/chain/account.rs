//! One account: balance and storage (kept by the contract's VM when it has code), access keys.

use std::collections::BTreeMap;

use e2e_contract_vm::{AccountState, ContractVm};
use near_crypto::PublicKey;
use near_parameters::RuntimeFeesConfig;
use near_primitives::types::{Balance, Nonce, StorageUsage};

/// nearcore lets accounts this small exist without any balance for their storage
/// (near-primitives `ZERO_BALANCE_ACCOUNT_STORAGE_LIMIT`).
const ZERO_BALANCE_ACCOUNT_STORAGE_LIMIT: StorageUsage = 770;
/// Borsh size of an ed25519 `PublicKey` (tag + 32 bytes) and of a full-access `AccessKey`
/// (nonce + permission tag): what nearcore stores per key.
const ED25519_KEY_BYTES: u64 = 33;
const FULL_ACCESS_KEY_BYTES: u64 = 9;

pub struct Account {
    /// Full-access keys and their nonces.
    pub access_keys: BTreeMap<PublicKey, Nonce>,
    plain: AccountState,
    pub contract: Option<ContractVm>,
}

impl Account {
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
        if self.access_keys.insert(key, 0).is_none() {
            let bytes = key_storage(fees);
            let state = self.state_mut();
            state.storage_usage = state.storage_usage.saturating_add(bytes);
        }
    }

    fn keys_storage(&self, fees: &RuntimeFeesConfig) -> u64 {
        key_storage(fees).saturating_mul(self.access_keys.len() as u64)
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

fn key_storage(fees: &RuntimeFeesConfig) -> u64 {
    fees.storage_usage_config
        .num_extra_bytes_record
        .saturating_add(ED25519_KEY_BYTES)
        .saturating_add(FULL_ACCESS_KEY_BYTES)
}
