//! Status conditions: a list-map keyed by `type`, as Kubernetes API conventions ask, so server-side
//! apply merges one condition without touching the others.
//!
//! Condition types and reasons are enums here and strings on the API: [`ConditionType::as_str`] and
//! [`Reason::as_str`] are the only places the strings are spelled, so a typo is a compile error and the
//! API keeps today's values.

use std::ops::{Deref, DerefMut};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
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

/// The condition types of the operator's resources.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionType {
    /// ExecutionRequest: its module is in the cache.
    Compiled,
    /// ExecutionRequest: the executor pod ran the module.
    Executed,
    /// ExecutionRequest with `spec.onChain`: the result is on chain (or final without it).
    Reported,
    /// ExecutionRequest: the request's own outcome.
    Succeeded,
    /// CompileJob: the source is fetched and its commit resolved.
    Fetched,
    /// CompileJob: the build Job produced the module.
    Built,
    /// CompileJob: the module is in the cache (`False` with a `…Failed` reason: final until retried).
    Ready,
    /// Pricing: the on-chain pricing equals the spec.
    Synced,
}

impl ConditionType {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Compiled => "Compiled",
            Self::Executed => "Executed",
            Self::Reported => "Reported",
            Self::Succeeded => "Succeeded",
            Self::Fetched => "Fetched",
            Self::Built => "Built",
            Self::Ready => "Ready",
            Self::Synced => "Synced",
        }
    }
}

impl std::fmt::Display for ConditionType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a condition has its status, and the reason of the Event that announces it (CamelCase, as API
/// conventions ask). [`Reason::GuestFault`] carries the executor's open-ended `errorKind`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reason {
    // ExecutionRequest: compiling.
    Compiling,
    CompileFailed,
    ModuleReady,
    NoTimeToCompile,
    /// The CompileJob under the source's name builds another source (or is misnamed): never used.
    CompileJobMismatch,
    // ExecutionRequest: executing.
    ExecutorStarted,
    Running,
    Retrying,
    Executed,
    ExecutorFailed,
    NoTimeToExecute,
    Succeeded,
    /// The guest failed and the executor named no (usable) kind.
    GuestFailed,
    /// The executor's `errorKind` in CamelCase, e.g. `timeLimit` → `TimeLimit`.
    GuestFault(String),
    // ExecutionRequest: secrets.
    SecretsNotFound,
    SecretsAccessDenied,
    SecretsUnavailable,
    SecretsUnreadable,
    SecretsInvalid,
    /// The request recorded a seed key the operator does not hold (its run cannot be seeded).
    SeedKeyUnavailable,
    /// A compile-only request's module is built (nothing runs).
    CompiledOnly,
    // ExecutionRequest: the yield window and reporting.
    YieldDeadline,
    YieldTimedOut,
    Reporting,
    ReportFailed,
    Resolved,
    AlreadyResolved,
    AlreadySettled,
    /// A `Reporting` request whose run outcome was not recorded.
    OutcomeLost,
    /// `spec` differs from the request the contract holds: never unsealed for, never reported.
    OnChainMismatch,
    /// The contract no longer waits for the request (answered, timed out or cancelled) before it ran.
    NoLongerPending,
    /// The request left the contract and who settled it, and how, could not be established.
    FateUnknown,
    /// The spec asks for what this operator does not do (a repo outside the allow-list, an input over
    /// the byte limit, limits above the contract's caps): refused before anything is created.
    SpecRefused,
    // CompileJob.
    Fetching,
    Fetched,
    FetchFailed,
    Building,
    Built,
    BuildFailed,
    /// The CompileJob's name is not the one its spec hashes to: nothing is built.
    NameMismatch,
    /// A re-resolved branch or tag points at another commit: fetched and built again.
    NameMoved,
    /// The cached module was found damaged: evicted and built again.
    ModuleCorrupt,
    // Pricing.
    /// The spec cannot be applied as written.
    InvalidSpec,
    InSync,
    Applied,
    PricingApplied,
    SetPricingFailed,
    OnChainDrift,
}

impl Reason {
    /// Every reason but [`Reason::GuestFault`], for parsing and tests.
    pub const FIXED: &[Reason] = &[
        Self::Compiling,
        Self::CompileFailed,
        Self::ModuleReady,
        Self::NoTimeToCompile,
        Self::CompileJobMismatch,
        Self::ExecutorStarted,
        Self::Running,
        Self::Retrying,
        Self::Executed,
        Self::ExecutorFailed,
        Self::NoTimeToExecute,
        Self::Succeeded,
        Self::GuestFailed,
        Self::SecretsNotFound,
        Self::SecretsAccessDenied,
        Self::SecretsUnavailable,
        Self::SecretsUnreadable,
        Self::SecretsInvalid,
        Self::SeedKeyUnavailable,
        Self::CompiledOnly,
        Self::YieldDeadline,
        Self::YieldTimedOut,
        Self::Reporting,
        Self::ReportFailed,
        Self::Resolved,
        Self::AlreadyResolved,
        Self::AlreadySettled,
        Self::OutcomeLost,
        Self::OnChainMismatch,
        Self::NoLongerPending,
        Self::FateUnknown,
        Self::SpecRefused,
        Self::Fetching,
        Self::Fetched,
        Self::FetchFailed,
        Self::Building,
        Self::Built,
        Self::BuildFailed,
        Self::NameMismatch,
        Self::NameMoved,
        Self::ModuleCorrupt,
        Self::InvalidSpec,
        Self::InSync,
        Self::Applied,
        Self::PricingApplied,
        Self::SetPricingFailed,
        Self::OnChainDrift,
    ];

    pub fn as_str(&self) -> &str {
        match self {
            Self::Compiling => "Compiling",
            Self::CompileFailed => "CompileFailed",
            Self::ModuleReady => "ModuleReady",
            Self::NoTimeToCompile => "NoTimeToCompile",
            Self::CompileJobMismatch => "CompileJobMismatch",
            Self::ExecutorStarted => "ExecutorStarted",
            Self::Running => "Running",
            Self::Retrying => "Retrying",
            Self::Executed => "Executed",
            Self::ExecutorFailed => "ExecutorFailed",
            Self::NoTimeToExecute => "NoTimeToExecute",
            Self::Succeeded => "Succeeded",
            Self::GuestFailed => "GuestFailed",
            Self::GuestFault(kind) => kind,
            Self::SecretsNotFound => "SecretsNotFound",
            Self::SecretsAccessDenied => "SecretsAccessDenied",
            Self::SecretsUnavailable => "SecretsUnavailable",
            Self::SecretsUnreadable => "SecretsUnreadable",
            Self::SecretsInvalid => "SecretsInvalid",
            Self::SeedKeyUnavailable => "SeedKeyUnavailable",
            Self::CompiledOnly => "CompiledOnly",
            Self::YieldDeadline => "YieldDeadline",
            Self::YieldTimedOut => "YieldTimedOut",
            Self::Reporting => "Reporting",
            Self::ReportFailed => "ReportFailed",
            Self::Resolved => "Resolved",
            Self::AlreadyResolved => "AlreadyResolved",
            Self::AlreadySettled => "AlreadySettled",
            Self::OutcomeLost => "OutcomeLost",
            Self::OnChainMismatch => "OnChainMismatch",
            Self::NoLongerPending => "NoLongerPending",
            Self::FateUnknown => "FateUnknown",
            Self::SpecRefused => "SpecRefused",
            Self::Fetching => "Fetching",
            Self::Fetched => "Fetched",
            Self::FetchFailed => "FetchFailed",
            Self::Building => "Building",
            Self::Built => "Built",
            Self::BuildFailed => "BuildFailed",
            Self::NameMismatch => "NameMismatch",
            Self::NameMoved => "NameMoved",
            Self::ModuleCorrupt => "ModuleCorrupt",
            Self::InvalidSpec => "InvalidSpec",
            Self::InSync => "InSync",
            Self::Applied => "Applied",
            Self::PricingApplied => "PricingApplied",
            Self::SetPricingFailed => "SetPricingFailed",
            Self::OnChainDrift => "OnChainDrift",
        }
    }

    /// The reason a condition or a stored outcome carries; a string no fixed reason spells is a guest
    /// fault's kind (the only reasons not spelled here).
    pub fn parse(reason: &str) -> Self {
        Self::FIXED
            .iter()
            .find(|fixed| fixed.as_str() == reason)
            .cloned()
            .unwrap_or_else(|| Self::GuestFault(reason.to_string()))
    }

    /// The executor's `errorKind` (camelCase) as a reason (CamelCase), e.g. `timeLimit` → `TimeLimit`;
    /// [`Reason::GuestFailed`] when there is none or it is not a plain word.
    pub fn guest_failure(kind: Option<&str>) -> Self {
        match kind {
            Some(kind) if !kind.is_empty() && kind.chars().all(|c| c.is_ascii_alphanumeric()) => {
                let mut chars = kind.chars();
                match chars.next() {
                    Some(first) => {
                        Self::parse(&(first.to_ascii_uppercase().to_string() + chars.as_str()))
                    }
                    None => Self::GuestFailed,
                }
            }
            _ => Self::GuestFailed,
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Compares with the API string, so tests read as the API does.
impl PartialEq<&str> for Reason {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

/// A condition's status. `Unknown` is never written: a condition is absent until the operator knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConditionStatus {
    True,
    False,
}

impl ConditionStatus {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::True => "True",
            Self::False => "False",
        }
    }
}

impl From<bool> for ConditionStatus {
    fn from(value: bool) -> Self {
        if value { Self::True } else { Self::False }
    }
}

/// A status that carries conditions.
pub trait HasConditions {
    fn conditions(&self) -> &[Condition];
    fn conditions_mut(&mut self) -> &mut Vec<Condition>;

    /// The status of `type_`: `Some(true)` for "True", `Some(false)` for "False", `None` when absent.
    fn condition(&self, type_: ConditionType) -> Option<bool> {
        condition_status(self.conditions(), type_.as_str())
    }

    /// The condition `type_` itself, when present.
    fn find_condition(&self, type_: ConditionType) -> Option<&Condition> {
        self.conditions().iter().find(|c| c.type_ == type_.as_str())
    }
}

/// The status a reconcile is about to write, with the object's generation and the time of this
/// reconcile: what every condition set through it records. Derefs to the status itself.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusUpdate<S> {
    status: S,
    generation: Option<i64>,
    now: Time,
}

impl<S: HasConditions> StatusUpdate<S> {
    pub fn new(status: S, generation: Option<i64>, now: Time) -> Self {
        Self {
            status,
            generation,
            now,
        }
    }

    /// Sets condition `type_`, keeping its `lastTransitionTime` when the status did not change
    /// (Kubernetes API conventions: the time records transitions, not updates).
    pub fn set(
        &mut self,
        type_: ConditionType,
        status: ConditionStatus,
        reason: Reason,
        message: impl Into<String>,
    ) {
        set_condition(
            self.status.conditions_mut(),
            type_.as_str(),
            status == ConditionStatus::True,
            reason.as_str(),
            message,
            self.generation,
            self.now.clone(),
        );
    }

    pub fn generation(&self) -> Option<i64> {
        self.generation
    }

    pub fn now(&self) -> &Time {
        &self.now
    }

    pub fn into_inner(self) -> S {
        self.status
    }
}

impl<S> Deref for StatusUpdate<S> {
    type Target = S;
    fn deref(&self) -> &S {
        &self.status
    }
}

impl<S> DerefMut for StatusUpdate<S> {
    fn deref_mut(&mut self) -> &mut S {
        &mut self.status
    }
}

/// Sets condition `type_` in `conditions`, keeping its `lastTransitionTime` when the status did not change.
/// The untyped form, for tools that write statuses of their own (the benches); the operator goes through
/// [`StatusUpdate::set`].
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

    #[derive(Clone, Debug, Default, PartialEq)]
    struct Conditions(Vec<Condition>);

    impl HasConditions for Conditions {
        fn conditions(&self) -> &[Condition] {
            &self.0
        }
        fn conditions_mut(&mut self) -> &mut Vec<Condition> {
            &mut self.0
        }
    }

    #[test]
    fn the_typed_setter_records_generation_time_and_the_api_strings() {
        let mut update = StatusUpdate::new(Conditions::default(), Some(3), at(10));
        update.set(
            ConditionType::Compiled,
            ConditionStatus::False,
            Reason::Compiling,
            "waiting",
        );
        let condition = update.find_condition(ConditionType::Compiled).unwrap();
        assert_eq!(
            (
                condition.type_.as_str(),
                condition.status.as_str(),
                condition.reason.as_str()
            ),
            ("Compiled", "False", "Compiling")
        );
        assert_eq!(condition.observed_generation, Some(3));
        assert_eq!(condition.last_transition_time, at(10));
        assert_eq!(update.condition(ConditionType::Compiled), Some(false));
        assert_eq!(update.condition(ConditionType::Ready), None);
    }

    #[test]
    fn reasons_parse_back_from_their_strings() {
        for reason in Reason::FIXED {
            assert_eq!(&Reason::parse(reason.as_str()), reason);
        }
        assert_eq!(
            Reason::parse("TimeLimit"),
            Reason::GuestFault("TimeLimit".to_string())
        );
    }

    #[test]
    fn error_kinds_become_reasons() {
        assert_eq!(
            Reason::guest_failure(Some("timeLimit")).as_str(),
            "TimeLimit"
        );
        assert_eq!(Reason::guest_failure(Some("exit")).as_str(), "Exit");
        assert_eq!(Reason::guest_failure(None), Reason::GuestFailed);
        assert_eq!(
            Reason::guest_failure(Some("bad kind!")),
            Reason::GuestFailed
        );
        assert_eq!(Reason::guest_failure(Some("")), Reason::GuestFailed);
    }
}
