//! The operator's Prometheus metrics. One [`Metrics`] (registry inside) is created at start-up and
//! shared as `Arc`; the controllers call its small methods, `/metrics` calls [`Metrics::encode`].
//!
//! Every label takes values from a fixed set (enums, `Error::metric_label`, condition reasons), never
//! from names or messages, so the number of series stays bounded.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

/// `Content-Type` of [`Metrics::encode`]'s output: the Prometheus text format 0.0.4, which every
/// scraper reads.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// How an ExecutionRequest ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ExecutionResult {
    Succeeded,
    Failed,
    /// Its deadline (on-chain yield timeout or TTL) passed before a result.
    Expired,
}

impl ExecutionResult {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Expired => "expired",
        }
    }
}

/// The timed stretches of an execution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimedPhase {
    /// From the request's creation until its module is in the cache (zero-ish on a cache hit).
    CompileWait,
    /// From the executor pod's creation until its result is recorded.
    Execute,
    /// From the recorded result until the resolve transaction is final (on-chain requests).
    Report,
}

impl TimedPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CompileWait => "compile_wait",
            Self::Execute => "execute",
            Self::Report => "report",
        }
    }
}

/// How a CompileJob ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CompileOutcome {
    Succeeded,
    FetchFailed,
    BuildFailed,
}

impl CompileOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Succeeded => "succeeded",
            Self::FetchFailed => "fetch_failed",
            Self::BuildFailed => "build_failed",
        }
    }
}

/// Which control loop a reconcile error came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ControllerKind {
    Execution,
    Compile,
    Pricing,
    Watcher,
}

impl ControllerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Execution => "execution",
            Self::Compile => "compile",
            Self::Pricing => "pricing",
            Self::Watcher => "watcher",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ExecutionLabels {
    result: &'static str,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UntrustedLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UnsealLabels {
    step: &'static str,
}

/// From 0.5 ms doubling up to ≈ 16 s (a slow RPC on the access check): 16 buckets.
fn unseal_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WarmClassLabels {
    /// A configured memory class in MiB (a bounded set: the configuration's).
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WarmClaimLabels {
    result: &'static str,
}

/// How an execution's pod was found when the warm pool is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WarmClaim {
    /// A warm pod took the execution.
    Hit,
    /// No ready warm pod of the class: a cold pod.
    MissEmpty,
    /// Larger than every class: a cold pod.
    MissTooLarge,
    /// A warm pod was claimed but did not accept the handoff: deleted, a cold pod instead.
    HandoffFailed,
}

impl WarmClaim {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::MissEmpty => "miss_empty",
            Self::MissTooLarge => "miss_too_large",
            Self::HandoffFailed => "handoff_failed",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CompileLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReconcileErrorLabels {
    controller: &'static str,
    error: &'static str,
}

/// From 50 ms (a warm execution's pod start) doubling up to ≈ 27 min (a cold build of a large crate
/// under the default 600 s build timeout, plus fetch): 16 buckets.
fn phase_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.05, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    executions_finished: Family<ExecutionLabels, Counter>,
    phase_duration: Family<PhaseLabels, Histogram, fn() -> Histogram>,
    compiles: Family<CompileLabels, Counter>,
    cache_hits: Counter,
    cache_misses: Counter,
    cache_bytes: Gauge,
    reconcile_errors: Family<ReconcileErrorLabels, Counter>,
    queue_depth: Gauge,
    leader: Gauge,
    secrets_unseal: Family<UnsealLabels, Histogram, fn() -> Histogram>,
    untrusted_objects: Family<UntrustedLabels, Counter>,
    warm_pool_ready: Family<WarmClassLabels, Gauge>,
    warm_claims: Family<WarmClaimLabels, Counter>,
    warm_handoff: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("outlayer");
        let executions_finished = Family::<ExecutionLabels, Counter>::default();
        registry.register(
            "executions_finished",
            "ExecutionRequests that reached a final state, by result and condition reason",
            executions_finished.clone(),
        );
        let phase_duration =
            Family::<PhaseLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                phase_histogram,
            );
        registry.register_with_unit(
            "phase_duration",
            "Time an execution spent waiting for its module (compile_wait) and running (execute)",
            Unit::Seconds,
            phase_duration.clone(),
        );
        let compiles = Family::<CompileLabels, Counter>::default();
        registry.register(
            "compiles",
            "CompileJobs that finished, by outcome",
            compiles.clone(),
        );
        let cache_hits = Counter::default();
        registry.register(
            "cache_hits",
            "Executions whose module was already compiled (a Ready CompileJob or a known wasmSha256)",
            cache_hits.clone(),
        );
        let cache_misses = Counter::default();
        registry.register(
            "cache_misses",
            "Executions that had to wait for a compile",
            cache_misses.clone(),
        );
        let cache_bytes = Gauge::default();
        registry.register_with_unit(
            "cache",
            "Size of the compiled modules in the cache",
            Unit::Bytes,
            cache_bytes.clone(),
        );
        let reconcile_errors = Family::<ReconcileErrorLabels, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Reconciles that failed and were requeued, by controller and error kind",
            reconcile_errors.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "ExecutionRequests accepted but not yet finished",
            queue_depth.clone(),
        );
        let secrets_unseal =
            Family::<UnsealLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                unseal_histogram,
            );
        registry.register_with_unit(
            "secrets_unseal",
            "Per execution with secrets: finding, authorizing and opening them (step=open, incl. the \
             lookups' API and RPC calls) and until the ephemeral Secret exists (step=total)",
            Unit::Seconds,
            secrets_unseal.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica holds the leader Lease and runs the controllers, else 0",
            leader.clone(),
        );
        let untrusted_objects = Family::<UntrustedLabels, Counter>::default();
        registry.register(
            "untrusted_objects",
            "Objects found under a name the operator uses that it did not make (wrong owner or a spec \
             the chain does not back), by kind: ignored or removed, never used",
            untrusted_objects.clone(),
        );
        let warm_pool_ready = Family::<WarmClassLabels, Gauge>::default();
        registry.register(
            "warm_pool_ready",
            "Warm executor pods ready to take an execution, by memory class (MiB)",
            warm_pool_ready.clone(),
        );
        let warm_claims = Family::<WarmClaimLabels, Counter>::default();
        registry.register(
            "warm_claims",
            "Executions started with the warm pool on: hit, miss_empty, miss_too_large, handoff_failed",
            warm_claims.clone(),
        );
        let warm_handoff = unseal_histogram();
        registry.register_with_unit(
            "warm_handoff",
            "From claiming a warm pod until it accepted its assignment",
            Unit::Seconds,
            warm_handoff.clone(),
        );
        Self {
            registry,
            untrusted_objects,
            warm_pool_ready,
            warm_claims,
            warm_handoff,
            executions_finished,
            phase_duration,
            compiles,
            cache_hits,
            cache_misses,
            cache_bytes,
            reconcile_errors,
            queue_depth,
            leader,
            secrets_unseal,
        }
    }

    /// Counts an ExecutionRequest that reached a final state. `reason` is the `Succeeded`
    /// condition's CamelCase reason (a fixed vocabulary), never a message.
    pub fn execution_finished(&self, result: ExecutionResult, reason: &str) {
        self.executions_finished
            .get_or_create(&ExecutionLabels {
                result: result.as_str(),
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn phase_duration(&self, phase: TimedPhase, duration: Duration) {
        self.phase_duration
            .get_or_create(&PhaseLabels {
                phase: phase.as_str(),
            })
            .observe(duration.as_secs_f64());
    }

    /// `opened`: until the plaintext was in memory; `total`: until the ephemeral Secret existed.
    pub fn secrets_unsealed(&self, opened: Duration, total: Duration) {
        self.secrets_unseal
            .get_or_create(&UnsealLabels { step: "open" })
            .observe(opened.as_secs_f64());
        self.secrets_unseal
            .get_or_create(&UnsealLabels { step: "total" })
            .observe(total.as_secs_f64());
    }

    pub fn compile_finished(&self, outcome: CompileOutcome) {
        self.compiles
            .get_or_create(&CompileLabels {
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// Counts an object under one of the operator's names that it did not make (`kind`: the
    /// Kubernetes kind).
    pub fn untrusted_object(&self, kind: &'static str) {
        self.untrusted_objects
            .get_or_create(&UntrustedLabels { kind })
            .inc();
    }

    pub fn cache_hit(&self) {
        self.cache_hits.inc();
    }

    pub fn cache_miss(&self) {
        self.cache_misses.inc();
    }

    /// Sets the cache's current size (the sum of `sizeBytes` of Ready CompileJobs).
    pub fn set_cache_bytes(&self, bytes: u64) {
        self.cache_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }

    /// Counts a failed reconcile; call it from each controller's `error_policy`.
    pub fn reconcile_error(&self, controller: ControllerKind, error: &crate::Error) {
        self.reconcile_errors
            .get_or_create(&ReconcileErrorLabels {
                controller: controller.as_str(),
                error: error.metric_label(),
            })
            .inc();
    }

    pub fn set_queue_depth(&self, depth: usize) {
        self.queue_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }

    pub fn set_warm_pool_ready(&self, class_mb: u32, ready: usize) {
        self.warm_pool_ready
            .get_or_create(&WarmClassLabels {
                class: class_mb.to_string(),
            })
            .set(i64::try_from(ready).unwrap_or(i64::MAX));
    }

    pub fn warm_claim(&self, claim: WarmClaim) {
        self.warm_claims
            .get_or_create(&WarmClaimLabels {
                result: claim.as_str(),
            })
            .inc();
    }

    pub fn warm_handoff(&self, took: Duration) {
        self.warm_handoff.observe(took.as_secs_f64());
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// The metrics in the Prometheus text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail; the encoder only propagates the writer's errors.
        if let Err(error) = prometheus_text::encode(&mut text, &self.registry) {
            tracing::error!(%error, "encoding metrics failed");
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line_value(text: &str, series: &str) -> Option<String> {
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map(str::to_string)
    }

    /// Families (labelled metrics) appear once they have a series; plain metrics from the start.
    fn assert_described(text: &str, families: &[&str]) {
        for family in families {
            assert!(
                text.contains(&format!("# TYPE {family}\n")),
                "missing `# TYPE {family}` in:\n{text}"
            );
        }
    }

    #[test]
    fn fresh_metrics_describe_every_plain_metric() {
        let text = Metrics::new().encode();
        assert_described(
            &text,
            &[
                "outlayer_cache_hits_total counter",
                "outlayer_cache_misses_total counter",
                "outlayer_cache_bytes gauge",
                "outlayer_queue_depth gauge",
                "outlayer_leader gauge",
            ],
        );
        assert_eq!(line_value(&text, "outlayer_leader").as_deref(), Some("0"));
        assert_eq!(
            line_value(&text, "outlayer_cache_hits_total").as_deref(),
            Some("0")
        );
    }

    #[test]
    fn counters_and_gauges_are_encoded_with_their_labels() {
        let metrics = Metrics::new();
        metrics.execution_finished(ExecutionResult::Succeeded, "Succeeded");
        metrics.execution_finished(ExecutionResult::Succeeded, "Succeeded");
        metrics.execution_finished(ExecutionResult::Failed, "TimeLimit");
        metrics.execution_finished(ExecutionResult::Expired, "Expired");
        metrics.compile_finished(CompileOutcome::BuildFailed);
        metrics.cache_hit();
        metrics.cache_hit();
        metrics.cache_miss();
        metrics.set_cache_bytes(123_456);
        metrics.set_queue_depth(7);
        metrics.set_leader(true);
        metrics.reconcile_error(
            ControllerKind::Execution,
            &crate::Error::InvalidSpec("x".to_string()),
        );
        metrics.reconcile_error(
            ControllerKind::Compile,
            &crate::Error::MissingMetadata("uid"),
        );
        let text = metrics.encode();
        assert_described(
            &text,
            &[
                "outlayer_executions_finished_total counter",
                "outlayer_compiles_total counter",
                "outlayer_reconcile_errors_total counter",
            ],
        );
        let expect = [
            (
                r#"outlayer_executions_finished_total{result="succeeded",reason="Succeeded"}"#,
                "2",
            ),
            (
                r#"outlayer_executions_finished_total{result="failed",reason="TimeLimit"}"#,
                "1",
            ),
            (
                r#"outlayer_executions_finished_total{result="expired",reason="Expired"}"#,
                "1",
            ),
            (r#"outlayer_compiles_total{outcome="build_failed"}"#, "1"),
            ("outlayer_cache_hits_total", "2"),
            ("outlayer_cache_misses_total", "1"),
            ("outlayer_cache_bytes", "123456"),
            ("outlayer_queue_depth", "7"),
            ("outlayer_leader", "1"),
            (
                r#"outlayer_reconcile_errors_total{controller="execution",error="invalid_spec"}"#,
                "1",
            ),
            (
                r#"outlayer_reconcile_errors_total{controller="compile",error="missing_metadata"}"#,
                "1",
            ),
        ];
        for (series, value) in expect {
            assert_eq!(
                line_value(&text, series).as_deref(),
                Some(value),
                "{series} in:\n{text}"
            );
        }
    }

    #[test]
    fn phase_durations_fill_histogram_buckets() {
        let metrics = Metrics::new();
        metrics.phase_duration(TimedPhase::Execute, Duration::from_millis(30));
        metrics.phase_duration(TimedPhase::Execute, Duration::from_millis(700));
        metrics.phase_duration(TimedPhase::CompileWait, Duration::from_secs(90));
        let text = metrics.encode();
        assert_described(&text, &["outlayer_phase_duration_seconds histogram"]);
        let execute =
            |suffix: &str| line_value(&text, &format!("outlayer_phase_duration_seconds_{suffix}"));
        assert_eq!(execute(r#"count{phase="execute"}"#).as_deref(), Some("2"));
        assert_eq!(
            execute(r#"sum{phase="execute"}"#)
                .and_then(|v| v.parse::<f64>().ok())
                .map(|v| (v * 1000.0).round()),
            Some(730.0)
        );
        // 30 ms is under the first bound (50 ms); 700 ms lands under 800 ms.
        assert_eq!(
            execute(r#"bucket{phase="execute",le="0.05"}"#).as_deref(),
            Some("1")
        );
        assert_eq!(
            execute(r#"bucket{phase="execute",le="0.4"}"#).as_deref(),
            Some("1")
        );
        assert_eq!(
            execute(r#"bucket{phase="execute",le="0.8"}"#).as_deref(),
            Some("2")
        );
        assert_eq!(
            execute(r#"bucket{phase="execute",le="+Inf"}"#).as_deref(),
            Some("2")
        );
        assert_eq!(
            execute(r#"count{phase="compile_wait"}"#).as_deref(),
            Some("1")
        );
    }

    #[test]
    fn every_error_kind_has_a_distinct_label() {
        let kinds = [
            crate::Error::MissingMetadata("uid"),
            crate::Error::InvalidModuleHash("x".to_string()),
            crate::Error::InvalidSpec("x".to_string()),
            crate::Error::InvalidResult("x".to_string()),
            crate::Error::LeaseTimeout("x".to_string()),
            crate::Error::Undecided("ExecutionRequest"),
        ];
        let labels: std::collections::HashSet<_> =
            kinds.iter().map(crate::Error::metric_label).collect();
        assert_eq!(labels.len(), kinds.len());
        assert!(
            labels
                .iter()
                .all(|l| !l.is_empty() && l.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        );
    }
}
