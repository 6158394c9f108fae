//! `ExecutionRequest`: one run of a WASI module, from `kubectl apply` or from the chain watcher.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::conditions::{HasConditions, conditions_schema};
use super::{BUILD_TARGET_WASIP1, CompileJobSpec, CompileSource, ModuleUrl};

/// Absolute ceilings, the same as the contract's (`ABSOLUTE_MAX_LIMITS`): a request above them could not
/// finish inside NEAR's yield window or a sane executor pod. The operator's configured caps may be lower.
pub const MAX_INSTRUCTIONS: u64 = 1_000_000_000_000;
pub const MAX_MEMORY_MB: u32 = 4096;
pub const MAX_EXECUTION_SECONDS: u64 = 180;
/// The contract's `MAX_INPUT_BYTES`.
pub const MAX_INPUT_BYTES: usize = 256 * 1024;

/// What to run: a repository at a commit (compiled through a `CompileJob`), a prebuilt module by URL
/// (downloaded through a `CompileJob`, checked against its sha256), or a module already in the cache,
/// named by its sha256.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "(has(self.repo) || has(self.commit) ? 1 : 0) + (has(self.url) || has(self.sha256) ? 1 : 0) + (has(self.wasmSha256) ? 1 : 0) == 1"
).message("code needs exactly one of: repo and commit, url and sha256, or wasmSha256"))]
#[x_kube(validation = kube::core::Rule::new(
    "has(self.repo) == has(self.commit)"
).message("repo and commit go together"))]
#[x_kube(validation = kube::core::Rule::new(
    "has(self.url) == has(self.sha256)"
).message("url and sha256 go together"))]
pub struct CodeRef {
    #[serde(default, skip_serializing_if = "Option::is_none", flatten)]
    pub source: Option<CompileSource>,
    /// A prebuilt module by URL, pinned by its sha256 (OutLayer's `WasmUrl`).
    #[serde(default, skip_serializing_if = "Option::is_none", flatten)]
    pub module_url: Option<ModuleUrl>,
    /// sha256 (64 lower-case hex) of a module already in the cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub wasm_sha256: Option<String>,
}

/// The most one execution may use. Memory in MiB, time in wall-clock seconds, instructions as wasmi fuel.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Limits {
    #[schemars(range(min = 1, max = 1_000_000_000_000u64))]
    pub max_instructions: u64,
    #[schemars(range(min = 1, max = 4096))]
    pub max_memory_mb: u32,
    #[schemars(range(min = 1, max = 180))]
    pub max_execution_seconds: u64,
}

impl Limits {
    /// What a compile-only request that named no limits carries: the smallest valid, never used.
    pub const COMPILE_ONLY: Limits = Limits {
        max_instructions: 1,
        max_memory_mb: 1,
        max_execution_seconds: 1,
    };
}

/// How the output is interpreted and handed back, as in the contract.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ResponseFormat {
    #[default]
    Text,
    Json,
    Bytes,
}

/// Which sealed secrets the execution sees as environment variables.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretsRef {
    /// NEAR account that owns the secrets.
    #[schemars(length(min = 2, max = 64))]
    pub account_id: String,
    #[schemars(regex(pattern = r"^[A-Za-z0-9_-]{1,64}$"))]
    pub profile: String,
}

/// Set by the chain watcher for requests that came from the contract; absent for `kubectl` requests,
/// whose result stays in `status` only.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct OnChain {
    pub request_id: u64,
    /// The yield's data id (base58), resumed by `resolve_execution`.
    pub data_id: String,
    pub sender: String,
    /// yoctoNEAR, decimal.
    #[schemars(regex(pattern = r"^[0-9]{1,40}$"))]
    pub deposit: String,
    pub block_height: u64,
    /// The request block's timestamp (ns since the Unix epoch): what a seeded run's clock reads.
    #[serde(default)]
    pub block_timestamp_ns: u64,
    /// Block height after which the contract's yield times out (request block + 200).
    pub yield_deadline_height: u64,
    /// The request asked for the guest's whole error on chain (`params.include_stderr`); otherwise a
    /// failure is reported as a fixed kind and at most its first 256 bytes.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub include_stderr: bool,
    /// The seed key the request recorded (`ed25519:<base58>`): its signature seeds the run (see the
    /// operator's `seed` module). Absent when the contract had none then: the run is not seeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed_public_key: Option<String>,
}

/// A kubectl request's opt-in to deterministic mode: the guest's randomness comes from `seed` and its
/// clock reads `unixTimeNs`, so the run replays exactly. On-chain requests are seeded by the chain.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct DeterministicSpec {
    #[schemars(length(min = 1, max = 256))]
    pub seed: String,
    #[serde(default)]
    pub unix_time_ns: u64,
}

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "outlayer.dev",
    version = "v1alpha1",
    kind = "ExecutionRequest",
    namespaced,
    shortname = "exr",
    category = "outlayer",
    status = "ExecutionRequestStatus",
    printcolumn = r#"{"name":"Succeeded","type":"string","jsonPath":".status.conditions[?(@.type==\"Succeeded\")].status"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Repo","type":"string","jsonPath":".spec.code.repo"}"#,
    printcolumn = r#"{"name":"URL","type":"string","jsonPath":".spec.code.url","description":"the module's URL, for requests by URL (Repo is empty for them)","priority":1}"#,
    printcolumn = r#"{"name":"Commit","type":"string","jsonPath":".status.shortCommit"}"#,
    printcolumn = r#"{"name":"Instructions","type":"integer","jsonPath":".status.instructions"}"#,
    printcolumn = r#"{"name":"Time","type":"string","jsonPath":".status.time"}"#,
    printcolumn = r#"{"name":"Cost","type":"string","jsonPath":".status.cost","description":"charged on chain, in NEAR (yocto in status.costYocto)"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Succeeded\")].reason"}"#,
    printcolumn = r#"{"name":"Module","type":"string","jsonPath":".status.wasmSha256","priority":1}"#,
    printcolumn = r#"{"name":"Pod","type":"string","jsonPath":".status.podName","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("spec is immutable: create a new ExecutionRequest instead"))]
pub struct ExecutionRequestSpec {
    pub code: CodeRef,
    /// Fed to the module as stdin.
    #[serde(default)]
    #[schemars(length(max = 262_144))]
    pub input: String,
    pub limits: Limits,
    #[serde(default)]
    pub response_format: ResponseFormat,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_ref: Option<SecretsRef>,
    /// Only compile: the request is answered with the module's sha256, size and compile time, and
    /// nothing runs (`limits` are unused). How a client warms the cache for a commit.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub compile_only: bool,
    /// kubectl requests only: run deterministically with this seed and clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deterministic: Option<DeterministicSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_chain: Option<OnChain>,
}

/// Where a request is in its life; conditions carry the detail.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Compiling,
    Executing,
    Reporting,
    Succeeded,
    Failed,
    Expired,
}

/// How `status.output` encodes the program's stdout.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OutputEncoding {
    Text,
    Json,
    Base64,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExecutionRequestStatus {
    /// `Compiled`, `Executed`, `Reported` (on-chain requests) and `Succeeded`.
    #[serde(default)]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compile_job: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_commit: Option<String>,
    /// First 12 characters of the resolved commit, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub short_commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wasm_sha256: Option<String>,
    /// The toolchain that built the module (`rustc -vV`'s first line), from its CompileJob; reported
    /// on chain with `wasmSha256` as the answer's evidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toolchain: Option<String>,
    /// The build driver's name and version, from the CompileJob; part of the evidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compiler: Option<String>,
    /// The seed signature the run was seeded with (on-chain requests that recorded a seed key); part
    /// of the evidence: SHA-256 of its bytes is the run's seed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed_signature: Option<String>,
    /// The run was deterministic (seeded randomness, the request block's clock): it replays exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deterministic: Option<bool>,
    /// stdout, bounded by the operator's status output limit (64 KiB by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_encoding: Option<OutputEncoding>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_size: Option<u64>,
    /// sha256 of an output too large for the result message; it is in the cache at `results/<sha256>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instructions: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_ms: Option<u64>,
    /// `timeMs` for humans (e.g. `1.25s`), for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compile_time_ms: Option<u64>,
    /// yoctoNEAR charged on chain, decimal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_yocto: Option<String>,
    /// `costYocto` for humans (e.g. `0.00109 NEAR`), for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    /// A one-line summary of the outcome or of what the request waits for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Whether the module was already in the cache when the request first looked (a miss waited
    /// for a compile, whose time an on-chain request is charged for).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_hit: Option<bool>,
    /// Executor pods started so far beyond the first (platform failures are re-run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<u32>,
    /// The run's own outcome, kept while an on-chain request is `Reporting` it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<RunOutcome>,
    /// A rebuild of a damaged module this request waits for (`<sha256>/<token>`, the CompileJob's
    /// `rebuildToken` once it acted on it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub awaited_rebuild: Option<String>,
    /// The resolve transaction as signed, recorded before it is sent: after a crash the operator looks
    /// it up by hash to learn whether, and at what charge, the request was answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signed_resolve: Option<SignedResolve>,
}

/// A signed `resolve_execution`, recorded before it is sent.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SignedResolve {
    pub tx_hash: String,
    /// What the contract charges when it applies (yoctoNEAR, decimal), at the request's pricing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_yocto: Option<String>,
}

impl HasConditions for ExecutionRequestStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
    fn conditions_mut(&mut self) -> &mut Vec<Condition> {
        &mut self.conditions
    }
}

/// How the run ended, before it is reported: what becomes the `Succeeded` condition afterwards.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RunOutcome {
    pub success: bool,
    pub reason: String,
    pub message: String,
}

impl CodeRef {
    /// A module to compile from `repo` at `commit` for wasm32-wasip1.
    pub fn from_repo(repo: impl Into<String>, commit: impl Into<String>) -> Self {
        Self {
            source: Some(CompileSource {
                repo: repo.into(),
                commit: commit.into(),
                build_target: BUILD_TARGET_WASIP1.to_string(),
            }),
            module_url: None,
            wasm_sha256: None,
        }
    }

    /// A prebuilt module at `url` that must hash to `sha256`.
    pub fn from_url(url: impl Into<String>, sha256: impl Into<String>) -> Self {
        Self {
            source: None,
            module_url: Some(ModuleUrl {
                url: url.into(),
                sha256: sha256.into(),
            }),
            wasm_sha256: None,
        }
    }

    /// The CompileJob that provides this module (`None` for a module named by hash alone).
    pub fn compile_job_spec(&self) -> Option<CompileJobSpec> {
        match (&self.source, &self.module_url) {
            (Some(source), _) => Some(CompileJobSpec::git(source.clone())),
            (None, Some(module_url)) => Some(CompileJobSpec::url(module_url.clone())),
            (None, None) => None,
        }
    }
}

/// `1234` ms → `1.234s`; under a second → `850ms`.
pub fn format_duration_ms(ms: u64) -> String {
    if ms < 1_000 {
        format!("{ms}ms")
    } else {
        format!("{}.{:03}s", ms / 1_000, ms % 1_000)
    }
}

const YOCTO_PER_NEAR: u128 = 1_000_000_000_000_000_000_000_000;
/// Significant digits `format_near` keeps (`costYocto` keeps the exact amount).
const NEAR_SIGNIFICANT_DIGITS: u32 = 6;

/// A decimal yoctoNEAR amount for humans: `1090000000000000000000` → `0.00109 NEAR`, rounded to
/// six significant digits; `None` when it is not a decimal u128.
pub fn format_near(yocto: &str) -> Option<String> {
    if yocto.is_empty() || !yocto.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let amount: u128 = yocto.parse().ok()?;
    let digits = amount.checked_ilog10().map_or(1, |log| log + 1);
    let rounded = if digits > NEAR_SIGNIFICANT_DIGITS {
        let unit = 10u128.pow(digits - NEAR_SIGNIFICANT_DIGITS);
        let quotient = amount / unit;
        let up = u128::from(amount % unit >= unit / 2);
        quotient.checked_add(up)?.checked_mul(unit)?
    } else {
        amount
    };
    let whole = rounded / YOCTO_PER_NEAR;
    let fraction = format!("{:024}", rounded % YOCTO_PER_NEAR);
    let fraction = fraction.trim_end_matches('0');
    Some(if fraction.is_empty() {
        format!("{whole} NEAR")
    } else {
        format!("{whole}.{fraction} NEAR")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn costs_read_in_near() {
        for (yocto, near) in [
            ("0", Some("0 NEAR")),
            ("1090000000000000000000", Some("0.00109 NEAR")),
            ("1000000000000000000000000", Some("1 NEAR")),
            ("1234567890000000000000000", Some("1.23457 NEAR")),
            ("1", Some("0.000000000000000000000001 NEAR")),
            ("999999900000000000000000", Some("1 NEAR")),
            ("12345678", Some("0.0000000000000000123457 NEAR")),
            ("1000000000000000000000000000", Some("1000 NEAR")),
            (
                "340282366920938463463374607431768211455",
                Some("340282000000000 NEAR"),
            ),
            ("340282366920938463463374607431768211456", None),
            ("", None),
            ("-1", None),
            ("1e24", None),
        ] {
            assert_eq!(format_near(yocto).as_deref(), near, "{yocto}");
        }
    }

    #[test]
    fn durations_read_well_in_kubectl() {
        assert_eq!(format_duration_ms(0), "0ms");
        assert_eq!(format_duration_ms(999), "999ms");
        assert_eq!(format_duration_ms(1_000), "1.000s");
        assert_eq!(format_duration_ms(61_234), "61.234s");
    }

    #[test]
    fn spec_json_is_camel_case_with_flattened_source() {
        let spec = ExecutionRequestSpec {
            code: CodeRef::from_repo("https://github.com/alice/echo", "main"),
            input: "hi".to_string(),
            limits: Limits {
                max_instructions: 10,
                max_memory_mb: 16,
                max_execution_seconds: 1,
            },
            response_format: ResponseFormat::Text,
            secrets_ref: None,
            compile_only: false,
            deterministic: None,
            on_chain: None,
        };
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["code"]["repo"], "https://github.com/alice/echo");
        assert_eq!(json["code"]["buildTarget"], "wasm32-wasip1");
        assert_eq!(json["limits"]["maxMemoryMb"], 16);
        assert_eq!(json["responseFormat"], "Text");
        let back: ExecutionRequestSpec = serde_json::from_value(json).unwrap();
        assert_eq!(back, spec);
    }
}
