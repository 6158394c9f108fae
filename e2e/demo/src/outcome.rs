//! What the user's request came to, from both sides: the user's transaction (its return value, the
//! contract's `execution_completed` event, the gas it burnt, the balance before and after) and the
//! cluster (the ExecutionRequest's status).

use std::fmt;

use outlayer_operator::chain::{CallStatus, Pricing, ResourceMetrics, TxOutcome};
use outlayer_operator::crd::{ExecutionRequestStatus, condition_status, format_duration_ms};
use serde_json::Value;

use crate::chain::{Deposit, USER, yocto_to_near};
use crate::{Error, Result};

#[derive(Debug, Clone)]
pub struct Outcome {
    /// The user's `request_execution` transaction.
    pub tx_hash: String,
    /// What that transaction returned: the program's output (`null` when the execution failed).
    pub returned: Value,
    /// `req-<id>`.
    pub execution_name: String,
    pub execution: ExecutionRequestStatus,
    pub deposit: Deposit,
    /// The contract's pricing when the request was made.
    pub pricing: Pricing,
    /// What the contract was told the execution used (`execution_completed`'s `resources_used`).
    pub used: ResourceMetrics,
    /// From the contract's `execution_completed` event.
    pub charged: u128,
    pub refunded: u128,
    pub completed_event: Value,
    /// Gas the user's transaction burnt, all receipts included, in yoctoNEAR.
    pub gas_burnt: u128,
    pub balance_before: u128,
    pub balance_after: u128,
}

impl Outcome {
    /// What the user's balance went down by.
    pub fn balance_decrease(&self) -> u128 {
        self.balance_before.saturating_sub(self.balance_after)
    }

    /// The usage cost by the contract's own formula, part by part: base fee, instructions, run
    /// time, compile time. Their sum is the charge (unless capped at the deposit).
    pub fn cost_parts(&self) -> [(&'static str, u128); 4] {
        let cost =
            |used: &ResourceMetrics| outlayer_contract::pricing::usage_cost(&self.pricing, used);
        let base = cost(&ResourceMetrics::default());
        let only = |used: ResourceMetrics| cost(&used) - base;
        [
            ("base fee", base),
            (
                "instructions",
                only(ResourceMetrics {
                    instructions: self.used.instructions,
                    ..ResourceMetrics::default()
                }),
            ),
            (
                "run time",
                only(ResourceMetrics {
                    time_ms: self.used.time_ms,
                    ..ResourceMetrics::default()
                }),
            ),
            (
                "compile time",
                only(ResourceMetrics {
                    compile_time_ms: self.used.compile_time_ms,
                    ..ResourceMetrics::default()
                }),
            ),
        ]
    }

    pub fn reported(&self) -> Option<bool> {
        condition_status(&self.execution.conditions, "Reported")
    }

    pub fn succeeded(&self) -> bool {
        self.execution.phase == Some(outlayer_operator::crd::Phase::Succeeded)
    }
}

/// The value a successful call returned (JSON), or the contract's failure as an error.
pub fn returned_value(outcome: &TxOutcome) -> Result<Value> {
    match &outcome.status {
        CallStatus::Success(bytes) if bytes.is_empty() => Ok(Value::Null),
        CallStatus::Success(bytes) => serde_json::from_slice(bytes).map_err(|e| {
            Error::Unexpected(format!(
                "transaction {} returned non-JSON {:?}: {e}",
                outcome.tx_hash,
                String::from_utf8_lossy(bytes)
            ))
        }),
        CallStatus::Failure(message) => Err(Error::Unexpected(format!(
            "the user's transaction {} failed: {message}",
            outcome.tx_hash
        ))),
    }
}

/// The `data[0]` of the first NEP-297 event named `name`.
pub fn event(outcome: &TxOutcome, name: &str) -> Result<Value> {
    outcome
        .events()
        .into_iter()
        .find(|e| e["event"] == name)
        .map(|e| e["data"][0].clone())
        .ok_or_else(|| {
            Error::Unexpected(format!(
                "no {name} event in transaction {}: {:?}",
                outcome.tx_hash,
                outcome.events()
            ))
        })
}

/// A yocto amount field of an event (`"123"`).
pub fn yocto_field(data: &Value, field: &str) -> Result<u128> {
    data[field]
        .as_str()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            Error::Unexpected(format!("event field {field} is not a yocto amount: {data}"))
        })
}

/// Tokens burnt for gas by the transaction and every receipt it caused.
pub fn tokens_burnt(outcome: &TxOutcome) -> u128 {
    std::iter::once(&outcome.outcome.transaction_outcome)
        .chain(&outcome.outcome.receipts_outcome)
        .map(|o| o.outcome.tokens_burnt.as_yoctonear())
        .sum()
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let status = &self.execution;
        let phase = status.phase.map_or("?".to_string(), |p| format!("{p:?}"));
        let reported = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Reported")
            .map_or("Reported: none".to_string(), |c| {
                format!("Reported={} ({})", c.status, c.reason)
            });
        let opt = |v: Option<u64>| v.map_or("-".to_string(), |v| v.to_string());
        writeln!(f, "Outcome")?;
        writeln!(
            f,
            "  {USER}'s transaction {} returned:\n    {}",
            self.tx_hash, self.returned
        )?;
        writeln!(
            f,
            "  ExecutionRequest {}: {phase}, {reported}",
            self.execution_name
        )?;
        writeln!(
            f,
            "    instructions {}, time {}, compile {} ({}), cost {} yocto, resolve tx {}",
            opt(status.instructions),
            status.time_ms.map_or("-".to_string(), format_duration_ms),
            status
                .compile_time_ms
                .map_or("-".to_string(), format_duration_ms),
            match status.cache_hit {
                Some(true) => "cache hit",
                Some(false) => "cache miss",
                None => "cache ?",
            },
            status.cost_yocto.as_deref().unwrap_or("-"),
            status.tx_hash.as_deref().unwrap_or("-"),
        )?;
        if let Some(message) = &status.message {
            writeln!(f, "    message: {message}")?;
        }
        writeln!(
            f,
            "  deposit   {:>24} = estimate {} + storage {} + compile allowance {}",
            yocto_to_near(self.deposit.total()),
            yocto_to_near(self.deposit.estimate),
            yocto_to_near(self.deposit.storage),
            yocto_to_near(self.deposit.compile),
        )?;
        writeln!(
            f,
            "  charged   {:>24} ({} yocto, event execution_completed)",
            yocto_to_near(self.charged),
            self.charged
        )?;
        let parts: Vec<String> = self
            .cost_parts()
            .iter()
            .map(|(what, amount)| format!("{what} {}", yocto_to_near(*amount)))
            .collect();
        writeln!(f, "            = {} (contract pricing)", parts.join(" + "))?;
        writeln!(
            f,
            "  refunded  {:>24} ({} yocto)",
            yocto_to_near(self.refunded),
            self.refunded
        )?;
        writeln!(
            f,
            "  gas       {:>24} ({} yocto, burnt by the transaction and its receipts)",
            yocto_to_near(self.gas_burnt),
            self.gas_burnt
        )?;
        let decrease = self.balance_decrease();
        let exact = if decrease == self.charged + self.gas_burnt {
            "= charged + gas, exactly"
        } else {
            "≠ charged + gas"
        };
        write!(
            f,
            "  balance   {} → {}: −{} ({decrease} yocto {exact})",
            yocto_to_near(self.balance_before),
            yocto_to_near(self.balance_after),
            yocto_to_near(decrease),
        )
    }
}
