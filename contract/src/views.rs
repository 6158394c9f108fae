//! Read-only methods. `get_pending_requests` is what the operator's watcher polls.

use near_sdk::json_types::U128;
use near_sdk::{PublicKey, near};

use crate::pricing::estimate_cost;
use crate::types::{Config, ExecutionRequest, PendingRequest, Pricing, ResourceLimits, Stats};
use crate::{CALLBACK_GAS, Contract, ContractExt};

/// Most requests one `get_pending_requests` call returns.
pub const MAX_PENDING_PAGE: u32 = 100;
const DEFAULT_PENDING_PAGE: u32 = 50;

#[near]
impl Contract {
    /// A request from `request_execution` until its callback settles it (resolved or not).
    pub fn get_request(&self, request_id: u64) -> Option<ExecutionRequest> {
        self.requests.get(&request_id).cloned()
    }

    /// Requests the operator has not resolved yet with id ≥ `from_id`, in id order; `limit` defaults to
    /// 50 and is capped at 100.
    pub fn get_pending_requests(
        &self,
        from_id: Option<u64>,
        limit: Option<u32>,
    ) -> Vec<PendingRequest> {
        let from_id = from_id.unwrap_or(0);
        let limit = limit.unwrap_or(DEFAULT_PENDING_PAGE).min(MAX_PENDING_PAGE) as usize;
        // An ordered index: finding `from_id` costs O(log n), each returned request O(log n) more;
        // how many requests are pending does not matter otherwise.
        self.pending
            .range(from_id..)
            .take(limit)
            .filter_map(|(id, _)| self.requests.get(id).map(PendingRequest::from))
            .collect()
    }

    pub fn get_stats(&self) -> Stats {
        self.stats.clone()
    }

    pub fn get_pricing(&self) -> Pricing {
        self.pricing.clone()
    }

    pub fn get_config(&self) -> Config {
        Config {
            owner_id: self.owner_id.clone(),
            operator_id: self.operator_id.clone(),
            pricing_manager_id: self.pricing_manager_id.clone(),
            paused: self.paused,
            stale_timeout_ms: self.stale_timeout_ms,
            callback_gas_tgas: CALLBACK_GAS.as_tgas(),
        }
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    /// The deposit `request_execution` needs for these limits, besides the request's storage.
    pub fn estimate_execution_cost(&self, resource_limits: ResourceLimits) -> U128 {
        U128(estimate_cost(&self.pricing, &resource_limits))
    }

    pub fn get_max_limits(&self) -> ResourceLimits {
        self.max_limits.clone()
    }

    pub fn get_secrets_pubkey(&self) -> Option<String> {
        self.secrets_pubkey.clone()
    }

    /// The key new requests record as their seed key (`ed25519:<base58>`).
    pub fn get_seed_public_key(&self) -> Option<PublicKey> {
        self.seed_public_key.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::*;
    use crate::{DEFAULT_MAX_LIMITS, DEFAULT_STALE_TIMEOUT_MS};

    #[test]
    fn a_new_contract_reports_its_defaults() {
        let contract = new_contract();
        assert_eq!(contract.get_pricing(), Pricing::default());
        assert_eq!(contract.get_max_limits(), DEFAULT_MAX_LIMITS);
        assert!(!contract.is_paused());
        assert_eq!(contract.get_stats(), Stats::default());
        let config = contract.get_config();
        assert_eq!(config.owner_id, owner());
        assert_eq!(config.operator_id, operator());
        assert_eq!(config.stale_timeout_ms, DEFAULT_STALE_TIMEOUT_MS);
        assert_eq!(config.callback_gas_tgas, 20);
        assert_eq!(contract.get_request(0), None);
    }

    #[test]
    fn estimate_uses_the_current_pricing() {
        let contract = new_contract();
        let limits = ResourceLimits {
            max_instructions: 2_000_000,
            max_memory_mb: 1,
            max_execution_seconds: 1,
        };
        let expected = 10u128.pow(21) + 2 * 10u128.pow(14) + 1_000 * 10u128.pow(17);
        assert_eq!(contract.estimate_execution_cost(limits), U128(expected));
    }

    #[test]
    fn u128_amounts_are_strings_and_u64_counters_numbers_in_json() {
        let json = near_sdk::serde_json::to_value(Pricing::default()).unwrap();
        assert_eq!(json["base_fee"], "1000000000000000000000");
        let stats = near_sdk::serde_json::to_value(Stats::default()).unwrap();
        assert_eq!(stats["total_requests"], 0);
        assert_eq!(stats["total_fees_collected"], "0");
    }
}
