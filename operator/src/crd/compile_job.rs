//! `CompileJob`: one build of (repo, commit, target), shared by every execution that needs it. It is
//! also the cache index: its status names the module in the cache, and deleting it evicts the module.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::conditions::{ConditionType, HasConditions, Reason, conditions_schema};

/// The only target the compiler builds today.
pub const BUILD_TARGET_WASIP1: &str = "wasm32-wasip1";

/// Where a module comes from. The schema mirrors the contract's checks; the operator additionally
/// checks the repository host against its allow-list (https://github.com by default).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CompileSource {
    /// `https://<host>/<path>` without credentials, query or `..` (or `file:///…` where the operator's
    /// allow-list permits local repositories, as in tests).
    #[schemars(regex(
        pattern = r"^(https://[A-Za-z0-9.-]+(:[0-9]{1,5})?/[A-Za-z0-9._/-]+|file:///[A-Za-z0-9._/-]+)$"
    ))]
    #[schemars(length(max = 512))]
    #[x_kube(validation = kube::core::Rule::new("!self.contains('..')").message("repo must not contain '..'"))]
    pub repo: String,
    /// A 40-hex commit, a branch/tag name, or `refs/heads/…` / `refs/tags/…` (the contract's rule): never
    /// an option (`-…`, `+…`), never `..` or a name git refuses, and no other `refs/` namespace
    /// (`refs/pull/*` is code a pull-request author chose).
    #[schemars(regex(pattern = r"^[A-Za-z0-9_][A-Za-z0-9._/+-]{0,255}$"))]
    #[x_kube(validation = kube::core::Rule::new("!self.contains('..')").message("commit must not contain '..'"))]
    #[x_kube(validation = kube::core::Rule::new(
        "!self.matches('//|/$|/[.]|[.]lock(/|$)|[.]$')"
    ).message("commit is not a valid git ref name (empty segment, segment starting with '.', or ending in '.lock' or '.')"))]
    #[x_kube(validation = kube::core::Rule::new(
        "!self.startsWith('refs/') || self.startsWith('refs/heads/') || self.startsWith('refs/tags/')"
    ).message("commit must be a 40-hex commit SHA, a branch or tag name, or refs/heads/<branch> or refs/tags/<tag>; other refs such as refs/pull/* hold code the repository owner did not choose"))]
    pub commit: String,
    #[serde(default = "default_build_target")]
    #[x_kube(validation = kube::core::Rule::new("self == 'wasm32-wasip1'").message("the only supported build target is wasm32-wasip1"))]
    pub build_target: String,
}

fn default_build_target() -> String {
    BUILD_TARGET_WASIP1.to_string()
}

impl CompileSource {
    /// The deterministic name of the CompileJob for this source: `cj-` + the first 16 hex characters of
    /// sha256(repo NUL commit NUL target). Deterministic names make creation idempotent (409 = exists).
    pub fn compile_job_name(&self) -> String {
        let mut hasher = Sha256::new();
        for part in [&self.repo, &self.commit, &self.build_target] {
            hasher.update(part.as_bytes());
            hasher.update([0u8]);
        }
        let digest = hasher.finalize();
        format!("cj-{}", hex::encode(&digest[..8]))
    }
}

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "outlayer.dev",
    version = "v1alpha1",
    kind = "CompileJob",
    namespaced,
    shortname = "cjob",
    category = "outlayer",
    status = "CompileJobStatus",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Repo","type":"string","jsonPath":".spec.repo"}"#,
    printcolumn = r#"{"name":"Commit","type":"string","jsonPath":".spec.commit"}"#,
    printcolumn = r#"{"name":"Size","type":"integer","jsonPath":".status.sizeBytes"}"#,
    printcolumn = r#"{"name":"Compile","type":"integer","jsonPath":".status.compileTimeMs","description":"compile time in ms"}"#,
    printcolumn = r#"{"name":"Module","type":"string","jsonPath":".status.wasmSha256","priority":1}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("spec is immutable: a CompileJob names one build"))]
pub struct CompileJobSpec {
    #[serde(flatten)]
    pub source: CompileSource,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CompileJobStatus {
    /// `Fetched`, `Built` and `Ready`.
    #[serde(default)]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The full commit SHA the fetch resolved `spec.commit` to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_commit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wasm_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compile_time_ms: Option<u64>,
    /// When an execution last used the module: what LRU eviction orders by.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used: Option<Time>,
    /// The last 4 KiB of the build log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_log: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The `outlayer.dev/retry` annotation value this status answered: setting the annotation to a new
    /// value reruns a failed fetch and build.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_token: Option<String>,
}

impl HasConditions for CompileJobStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
    fn conditions_mut(&mut self) -> &mut Vec<Condition> {
        &mut self.conditions
    }
}

/// The two steps of a CompileJob, each a Job: fetch (network: git and crate hosts), then build (none).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompileStage {
    Fetch,
    Build,
}

impl CompileStage {
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Fetch => "fetch",
            Self::Build => "build",
        }
    }
}

/// A CompileJob's outcome as the executions that share it see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CompileState {
    /// Not finished (or not started): executions wait.
    InProgress,
    /// The module is in the cache.
    Ready { wasm_sha256: String },
    /// Final until the retry annotation changes; `message` says why.
    Failed {
        stage: CompileStage,
        message: String,
    },
}

impl CompileJobStatus {
    /// The outcome, from the `Ready` condition: `True` with a module hash is ready, `False` with a
    /// failure reason is failed, anything else is still in progress.
    pub fn state(&self) -> CompileState {
        let Some(ready) = self.find_condition(ConditionType::Ready) else {
            return CompileState::InProgress;
        };
        match (
            ready.status.as_str(),
            Reason::parse(&ready.reason),
            &self.wasm_sha256,
        ) {
            ("True", _, Some(sha256)) => CompileState::Ready {
                wasm_sha256: sha256.clone(),
            },
            ("False", Reason::FetchFailed, _) => CompileState::Failed {
                stage: CompileStage::Fetch,
                message: ready.message.clone(),
            },
            ("False", Reason::BuildFailed, _) => CompileState::Failed {
                stage: CompileStage::Build,
                message: ready.message.clone(),
            },
            _ => CompileState::InProgress,
        }
    }
}

/// Set to a new value (e.g. a timestamp) to rerun a failed CompileJob.
pub const RETRY_ANNOTATION: &str = "outlayer.dev/retry";
/// When an execution last used the module (RFC 3339); LRU eviction orders by it.
pub const LAST_USED_ANNOTATION: &str = "outlayer.dev/last-used";

#[cfg(test)]
mod tests {
    use super::*;

    fn source(repo: &str, commit: &str) -> CompileSource {
        CompileSource {
            repo: repo.to_string(),
            commit: commit.to_string(),
            build_target: BUILD_TARGET_WASIP1.to_string(),
        }
    }

    fn with_ready(status: &str, reason: Reason, sha256: Option<&str>) -> CompileJobStatus {
        let mut compile_job = CompileJobStatus {
            wasm_sha256: sha256.map(str::to_string),
            ..CompileJobStatus::default()
        };
        super::super::conditions::set_condition(
            &mut compile_job.conditions,
            "Ready",
            status == "True",
            reason.as_str(),
            "why",
            None,
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ),
        );
        compile_job
    }

    #[test]
    fn the_ready_condition_says_the_compile_state() {
        assert_eq!(
            CompileJobStatus::default().state(),
            CompileState::InProgress
        );
        assert_eq!(
            with_ready("True", Reason::ModuleReady, Some("ab")).state(),
            CompileState::Ready {
                wasm_sha256: "ab".to_string()
            }
        );
        // Ready without a hash is not usable yet.
        assert_eq!(
            with_ready("True", Reason::ModuleReady, None).state(),
            CompileState::InProgress
        );
        assert_eq!(
            with_ready("False", Reason::FetchFailed, None).state(),
            CompileState::Failed {
                stage: CompileStage::Fetch,
                message: "why".to_string()
            }
        );
        assert_eq!(
            with_ready("False", Reason::BuildFailed, None).state(),
            CompileState::Failed {
                stage: CompileStage::Build,
                message: "why".to_string()
            }
        );
        assert_eq!(
            with_ready("False", Reason::Building, None).state(),
            CompileState::InProgress
        );
    }

    #[test]
    fn compile_job_names_are_deterministic_and_distinct() {
        let a = source("https://github.com/alice/echo", "main");
        assert_eq!(a.compile_job_name(), a.clone().compile_job_name());
        assert_eq!(a.compile_job_name().len(), "cj-".len() + 16);
        assert!(a.compile_job_name().starts_with("cj-"));
        let b = source("https://github.com/alice/echo", "dev");
        assert_ne!(a.compile_job_name(), b.compile_job_name());
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(
            source("https://x/ab", "c").compile_job_name(),
            source("https://x/a", "bc").compile_job_name()
        );
    }
}
