//! Status conditions: a list-map keyed by `type`, as Kubernetes API conventions ask, so server-side
//! apply merges one condition without touching the others.

use schemars::Schema;
use schemars::generate::SchemaGenerator;
use schemars::json_schema;

/// Schema for `status.conditions`: metav1.Condition items, `x-kubernetes-list-type: map` keyed by `type`.
pub fn conditions_schema(generator: &mut SchemaGenerator) -> Schema {
    let item = generator
        .subschema_for::<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>()
        .to_value();
    json_schema!({
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": item,
    })
}

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Sets condition `type_` in `conditions`, keeping its `lastTransitionTime` when the status did not change
/// (Kubernetes API conventions: the time records transitions, not updates).
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Time,
) {
    let status = if status { "True" } else { "False" }.to_string();
    let message = message.into();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => {
            if existing.status != status {
                existing.last_transition_time = now;
            }
            existing.status = status;
            existing.reason = reason.to_string();
            existing.message = message;
            existing.observed_generation = observed_generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_string(),
            status,
            reason: reason.to_string(),
            message,
            observed_generation,
            last_transition_time: now,
        }),
    }
}

/// The status of condition `type_`: `Some(true)` for "True", `Some(false)` for "False", `None` when absent
/// or "Unknown".
pub fn condition_status(conditions: &[Condition], type_: &str) -> Option<bool> {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .and_then(|c| match c.status.as_str() {
            "True" => Some(true),
            "False" => Some(false),
            _ => None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).unwrap())
    }

    #[test]
    fn transition_time_moves_only_when_the_status_changes() {
        let mut conditions = Vec::new();
        set_condition(
            &mut conditions,
            "Ready",
            false,
            "Building",
            "a",
            Some(1),
            at(10),
        );
        set_condition(
            &mut conditions,
            "Ready",
            false,
            "Building",
            "b",
            Some(2),
            at(20),
        );
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, at(10));
        assert_eq!(conditions[0].message, "b");
        assert_eq!(conditions[0].observed_generation, Some(2));
        set_condition(
            &mut conditions,
            "Ready",
            true,
            "Built",
            "c",
            Some(2),
            at(30),
        );
        assert_eq!(conditions[0].last_transition_time, at(30));
        assert_eq!(condition_status(&conditions, "Ready"), Some(true));
        assert_eq!(condition_status(&conditions, "Other"), None);
    }
}
