//! Owner and operator administration: roles, pause, pricing, caps and the sealing public key.

use near_sdk::{AccountId, CurveType, PublicKey, env, near};

use crate::events::{
    MaxLimitsUpdatedData, OutlayerEvent, PausedChangedData, PricingUpdatedData, RoleChangedData,
    SecretsPubkeyUpdatedData, SeedPublicKeyUpdatedData,
};
use crate::types::{Pricing, ResourceLimits};
use crate::validation::validate_limits;
use crate::{ABSOLUTE_MAX_LIMITS, Contract, ContractExt, require_valid};

/// No single fee may exceed 1000 NEAR: a guard against a misplaced digit in a GitOps change.
pub const MAX_FEE_YOCTO: u128 = 1_000 * 10u128.pow(24);
/// Sealing public keys are short text (e.g. `x25519:<key id>:<base64>`).
pub const MAX_PUBKEY_LEN: usize = 512;

#[near]
impl Contract {
    pub fn set_owner(&mut self, new_owner_id: AccountId) {
        self.assert_owner();
        let old = std::mem::replace(&mut self.owner_id, new_owner_id.clone());
        OutlayerEvent::OwnerChanged(vec![role_change(Some(old), Some(new_owner_id))]).emit();
    }

    pub fn set_operator(&mut self, new_operator_id: AccountId) {
        self.assert_owner();
        let old = std::mem::replace(&mut self.operator_id, new_operator_id.clone());
        OutlayerEvent::OperatorChanged(vec![role_change(Some(old), Some(new_operator_id))]).emit();
    }

    /// The account allowed to call `set_pricing` besides the owner: the operator's GitOps sync.
    /// `null` removes it.
    pub fn set_pricing_manager(&mut self, pricing_manager_id: Option<AccountId>) {
        self.assert_owner();
        let old = std::mem::replace(&mut self.pricing_manager_id, pricing_manager_id.clone());
        OutlayerEvent::PricingManagerChanged(vec![role_change(old, pricing_manager_id)]).emit();
    }

    pub fn set_paused(&mut self, paused: bool) {
        self.assert_owner();
        self.paused = paused;
        OutlayerEvent::PausedChanged(vec![PausedChangedData {
            paused,
            changed_by: env::predecessor_account_id(),
        }])
        .emit();
    }

    /// Owner or pricing manager. Applies to requests settled from now on, including pending ones.
    pub fn set_pricing(&mut self, pricing: Pricing) {
        let caller = env::predecessor_account_id();
        if caller != self.owner_id && Some(&caller) != self.pricing_manager_id.as_ref() {
            env::panic_str(&format!(
                "only the owner or the pricing manager may set pricing, called by {caller}"
            ));
        }
        for (name, fee) in [
            ("base_fee", pricing.base_fee.0),
            (
                "per_million_instructions_fee",
                pricing.per_million_instructions_fee.0,
            ),
            ("per_ms_fee", pricing.per_ms_fee.0),
            ("per_compile_ms_fee", pricing.per_compile_ms_fee.0),
        ] {
            if fee > MAX_FEE_YOCTO {
                env::panic_str(&format!(
                    "{name} {fee} exceeds the ceiling of {MAX_FEE_YOCTO} yoctoNEAR"
                ));
            }
        }
        let old_pricing = std::mem::replace(&mut self.pricing, pricing.clone());
        OutlayerEvent::PricingUpdated(vec![PricingUpdatedData {
            old_pricing,
            new_pricing: pricing,
            changed_by: caller,
        }])
        .emit();
    }

    /// Caps what one request may ask for, within the absolute ceilings.
    pub fn set_max_limits(&mut self, max_limits: ResourceLimits) {
        self.assert_owner();
        require_valid(validate_limits(&max_limits, &ABSOLUTE_MAX_LIMITS));
        let old_limits = std::mem::replace(&mut self.max_limits, max_limits.clone());
        OutlayerEvent::MaxLimitsUpdated(vec![MaxLimitsUpdatedData {
            old_limits,
            new_limits: max_limits,
            changed_by: env::predecessor_account_id(),
        }])
        .emit();
    }

    /// Owner or operator: publishes the public key users seal their secrets to.
    pub fn set_secrets_pubkey(&mut self, pubkey: String) {
        let caller = env::predecessor_account_id();
        if caller != self.owner_id && caller != self.operator_id {
            env::panic_str(&format!(
                "only the owner or the operator may set the secrets public key, called by {caller}"
            ));
        }
        let well_formed = !pubkey.is_empty()
            && pubkey.len() <= MAX_PUBKEY_LEN
            && pubkey.bytes().all(|b| b.is_ascii_graphic());
        if !well_formed {
            env::panic_str(&format!(
                "secrets public key must be 1-{MAX_PUBKEY_LEN} printable ASCII characters without spaces"
            ));
        }
        self.secrets_pubkey = Some(pubkey.clone());
        OutlayerEvent::SecretsPubkeyUpdated(vec![SecretsPubkeyUpdatedData {
            pubkey,
            changed_by: caller,
        }])
        .emit();
    }

    /// Owner or operator: publishes the ed25519 key whose signatures seed runs' randomness. Requests
    /// made from now on record it; requests already pending keep the key they recorded, so changing it
    /// never changes a pending request's seed.
    pub fn set_seed_public_key(&mut self, public_key: PublicKey) {
        let caller = env::predecessor_account_id();
        if caller != self.owner_id && caller != self.operator_id {
            env::panic_str(&format!(
                "only the owner or the operator may set the seed public key, called by {caller}"
            ));
        }
        if public_key.curve_type() != CurveType::ED25519 {
            env::panic_str(&format!(
                "the seed public key must be an ed25519 key, got {public_key}"
            ));
        }
        self.seed_public_key = Some(public_key.clone());
        OutlayerEvent::SeedPublicKeyUpdated(vec![SeedPublicKeyUpdatedData {
            public_key,
            changed_by: caller,
        }])
        .emit();
    }
}

fn role_change(old_account: Option<AccountId>, new_account: Option<AccountId>) -> RoleChangedData {
    RoleChangedData {
        old_account,
        new_account,
        changed_by: env::predecessor_account_id(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::*;
    use near_sdk::json_types::U128;

    fn pricing(base: u128) -> Pricing {
        Pricing {
            base_fee: U128(base),
            per_million_instructions_fee: U128(1),
            per_ms_fee: U128(2),
            per_compile_ms_fee: U128(3),
        }
    }

    #[test]
    fn owner_manages_roles_and_each_change_is_an_event() {
        let mut contract = new_contract();
        set_caller(owner(), 0);
        contract.set_operator(stranger());
        assert_eq!(
            event("operator_changed")["new_account"],
            stranger().to_string()
        );
        contract.set_pricing_manager(Some(operator()));
        contract.set_paused(true);
        assert!(contract.is_paused());
        assert_eq!(event("paused_changed")["paused"], true);
        contract.set_owner(user());
        assert_eq!(event("owner_changed")["old_account"], owner().to_string());
        let config = contract.get_config();
        assert_eq!(config.owner_id, user());
        assert_eq!(config.operator_id, stranger());
        assert_eq!(config.pricing_manager_id, Some(operator()));
        assert!(config.paused);
    }

    #[test]
    #[should_panic(expected = "only the owner")]
    fn strangers_cannot_pause() {
        let mut contract = new_contract();
        set_caller(stranger(), 0);
        contract.set_paused(true);
    }

    #[test]
    #[should_panic(expected = "only the owner")]
    fn the_operator_cannot_change_the_owner() {
        let mut contract = new_contract();
        set_caller(operator(), 0);
        contract.set_owner(operator());
    }

    #[test]
    fn pricing_manager_can_set_pricing() {
        let mut contract = new_contract();
        contract.set_pricing_manager(Some(operator()));
        set_caller(operator(), 0);
        contract.set_pricing(pricing(7));
        assert_eq!(contract.get_pricing(), pricing(7));
        let updated = event("pricing_updated");
        assert_eq!(updated["new_pricing"]["base_fee"], "7");
        assert_eq!(updated["changed_by"], operator().to_string());
    }

    #[test]
    #[should_panic(expected = "only the owner or the pricing manager")]
    fn others_cannot_set_pricing() {
        let mut contract = new_contract();
        set_caller(operator(), 0);
        contract.set_pricing(pricing(7));
    }

    #[test]
    #[should_panic(expected = "base_fee 1000000000000000000000000001 exceeds the ceiling")]
    fn absurd_fees_are_rejected() {
        let mut contract = new_contract();
        contract.set_pricing(pricing(MAX_FEE_YOCTO + 1));
    }

    #[test]
    fn max_limits_are_settable_within_the_ceilings() {
        let mut contract = new_contract();
        contract.set_max_limits(ABSOLUTE_MAX_LIMITS);
        assert_eq!(contract.get_max_limits(), ABSOLUTE_MAX_LIMITS);
    }

    #[test]
    #[should_panic(expected = "max_memory_mb 4097 exceeds the maximum of 4096")]
    fn max_limits_above_the_ceilings_are_rejected() {
        let mut contract = new_contract();
        let mut limits = ABSOLUTE_MAX_LIMITS;
        limits.max_memory_mb += 1;
        contract.set_max_limits(limits);
    }

    #[test]
    fn operator_publishes_the_secrets_pubkey() {
        let mut contract = new_contract();
        assert_eq!(contract.get_secrets_pubkey(), None);
        set_caller(operator(), 0);
        contract.set_secrets_pubkey("x25519:k1:AAAA".to_string());
        assert_eq!(
            contract.get_secrets_pubkey().as_deref(),
            Some("x25519:k1:AAAA")
        );
        assert_eq!(event("secrets_pubkey_updated")["pubkey"], "x25519:k1:AAAA");
    }

    #[test]
    #[should_panic(expected = "only the owner or the operator")]
    fn strangers_cannot_publish_a_pubkey() {
        let mut contract = new_contract();
        set_caller(stranger(), 0);
        contract.set_secrets_pubkey("x25519:k1:AAAA".to_string());
    }

    #[test]
    #[should_panic(expected = "printable ASCII characters without spaces")]
    fn malformed_pubkeys_are_rejected() {
        let mut contract = new_contract();
        contract.set_secrets_pubkey("has space".to_string());
    }
}
