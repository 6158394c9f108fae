//! Cost arithmetic. Pure functions over u128 yoctoNEAR; every operation saturates so no input can
//! overflow or underflow, and every cost is capped by what the sender deposited.

use crate::types::{Pricing, ResourceLimits, ResourceMetrics};

const INSTRUCTIONS_PER_FEE_UNIT: u128 = 1_000_000;
const MS_PER_SECOND: u128 = 1_000;

/// `instructions / 1e6 × per_million_instructions_fee`, computed as a product first so that fewer than a
/// million instructions are still charged proportionally (rounded down).
fn instructions_cost(pricing: &Pricing, instructions: u64) -> u128 {
    u128::from(instructions).saturating_mul(pricing.per_million_instructions_fee.0)
        / INSTRUCTIONS_PER_FEE_UNIT
}

/// The most a request with these limits can cost: what the deposit must cover (besides storage).
/// Compile time is not part of the estimate: a cached module costs none, and an uncached compile is
/// charged only from what the deposit has left.
pub fn estimate_cost(pricing: &Pricing, limits: &ResourceLimits) -> u128 {
    let time_ms = u128::from(limits.max_execution_seconds).saturating_mul(MS_PER_SECOND);
    pricing
        .base_fee
        .0
        .saturating_add(instructions_cost(pricing, limits.max_instructions))
        .saturating_add(time_ms.saturating_mul(pricing.per_ms_fee.0))
}

/// What a successful execution costs for what it used.
pub fn usage_cost(pricing: &Pricing, used: &ResourceMetrics) -> u128 {
    let compile_ms = u128::from(used.compile_time_ms.unwrap_or(0));
    pricing
        .base_fee
        .0
        .saturating_add(instructions_cost(pricing, used.instructions))
        .saturating_add(u128::from(used.time_ms).saturating_mul(pricing.per_ms_fee.0))
        .saturating_add(compile_ms.saturating_mul(pricing.per_compile_ms_fee.0))
}

/// How a finished request's deposit is split between the contract and the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settlement {
    pub charged: u128,
    pub refunded: u128,
}

impl Settlement {
    /// Charges `cost`, never more than the deposit; the rest goes back.
    pub fn charge(deposit: u128, cost: u128) -> Self {
        let charged = cost.min(deposit);
        Self {
            charged,
            refunded: deposit - charged,
        }
    }

    /// A run the operator reported, succeeded or failed: charged for what it measurably used
    /// (instructions, time, compile time, base fee included).
    pub fn for_run(pricing: &Pricing, deposit: u128, used: &ResourceMetrics) -> Self {
        Self::charge(deposit, usage_cost(pricing, used))
    }

    /// No answer within the yield window: only the base fee.
    pub fn for_timeout(pricing: &Pricing, deposit: u128) -> Self {
        Self::charge(deposit, pricing.base_fee.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use near_sdk::json_types::U128;

    fn pricing() -> Pricing {
        Pricing {
            base_fee: U128(1_000),
            per_million_instructions_fee: U128(10),
            per_ms_fee: U128(3),
            per_compile_ms_fee: U128(2),
        }
    }

    #[test]
    fn estimate_adds_base_instructions_and_time() {
        let limits = ResourceLimits {
            max_instructions: 5_000_000,
            max_memory_mb: 128,
            max_execution_seconds: 2,
        };
        assert_eq!(estimate_cost(&pricing(), &limits), 1_000 + 50 + 2_000 * 3);
    }

    #[test]
    fn default_pricing_estimate_matches_documented_fees() {
        let limits = ResourceLimits {
            max_instructions: 1_000_000_000,
            max_memory_mb: 128,
            max_execution_seconds: 10,
        };
        // 0.001 NEAR + 1000 × 1e14 + 10_000 ms × 1e17
        let expected = 10u128.pow(21) + 1_000 * 10u128.pow(14) + 10_000 * 10u128.pow(17);
        assert_eq!(estimate_cost(&Pricing::default(), &limits), expected);
    }

    #[test]
    fn usage_cost_counts_partial_millions_and_compile_time() {
        let used = ResourceMetrics {
            instructions: 999_999,
            time_ms: 7,
            compile_time_ms: Some(100),
        };
        // 999_999 × 10 / 1e6 = 9 (rounded down)
        assert_eq!(usage_cost(&pricing(), &used), 1_000 + 9 + 21 + 200);
    }

    #[test]
    fn charge_is_capped_at_the_deposit() {
        assert_eq!(
            Settlement::charge(500, 1_000),
            Settlement {
                charged: 500,
                refunded: 0
            }
        );
        assert_eq!(
            Settlement::charge(1_000, 1_000),
            Settlement {
                charged: 1_000,
                refunded: 0
            }
        );
        assert_eq!(
            Settlement::charge(1_001, 1_000),
            Settlement {
                charged: 1_000,
                refunded: 1
            }
        );
        assert_eq!(
            Settlement::charge(0, 0),
            Settlement {
                charged: 0,
                refunded: 0
            }
        );
    }

    #[test]
    fn a_run_is_charged_for_its_usage_a_timeout_the_base_fee() {
        let used = ResourceMetrics {
            instructions: 3_000_000,
            time_ms: 7,
            compile_time_ms: Some(100),
        };
        let run = Settlement::for_run(&pricing(), 10_000, &used);
        assert_eq!(run.charged, 1_000 + 30 + 21 + 200);
        assert_eq!(run.refunded, 10_000 - run.charged);
        let timeout = Settlement::for_timeout(&pricing(), 10_000);
        assert_eq!((timeout.charged, timeout.refunded), (1_000, 9_000));
        assert_eq!(
            Settlement::for_run(&pricing(), 10_000, &ResourceMetrics::default()).charged,
            1_000,
            "nothing measured: the base fee"
        );
    }

    #[test]
    fn extreme_values_saturate_instead_of_overflowing() {
        let max = Pricing {
            base_fee: U128(u128::MAX),
            per_million_instructions_fee: U128(u128::MAX),
            per_ms_fee: U128(u128::MAX),
            per_compile_ms_fee: U128(u128::MAX),
        };
        let used = ResourceMetrics {
            instructions: u64::MAX,
            time_ms: u64::MAX,
            compile_time_ms: Some(u64::MAX),
        };
        assert_eq!(usage_cost(&max, &used), u128::MAX);
        let limits = ResourceLimits {
            max_instructions: u64::MAX,
            max_memory_mb: u32::MAX,
            max_execution_seconds: u64::MAX,
        };
        assert_eq!(estimate_cost(&max, &limits), u128::MAX);
        let settlement = Settlement::for_run(&max, 42, &used);
        assert_eq!(
            settlement,
            Settlement {
                charged: 42,
                refunded: 0
            }
        );
    }
}
