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

/// A prebuilt module by URL (OutLayer's `WasmUrl`): downloaded by the fetch Job (https only, public
/// addresses only, size-capped), checked against `sha256` before anything uses it, and published in
/// the cache by that hash. Nothing is built.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ModuleUrl {
    /// `https://…` without credentials (the contract's `validate_wasm_url`); the operator refuses any
    /// other form, and the fetch Job any host that resolves to a non-public address unless the
    /// operator's `--url-fetch-allow-cidr` admits it.
    #[schemars(length(min = 1, max = 2048))]
    pub url: String,
    /// The module's sha256 (64 lower-case hex): what the download must hash to.
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    pub sha256: String,
}

impl ModuleUrl {
    /// `cj-` + 32 hex of sha256("wasm-url" NUL url NUL sha256): one CompileJob per (url, hash), so a
    /// URL that fails (wrong hash, refused) fails only itself; another URL with the same hash gets its
    /// own. The cache is still by hash: an execution uses any Ready URL CompileJob of the hash
    /// ([`MODULE_SHA256_LABEL`]) before it downloads anything.
    pub fn compile_job_name(&self) -> String {
        name_from_parts(&["wasm-url", &self.url, &self.sha256])
    }
}

fn name_from_parts(parts: &[&str]) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part.as_bytes());
        hasher.update([0u8]);
    }
    let digest = hasher.finalize();
    format!("cj-{}", hex::encode(&digest[..16]))
}

impl CompileSource {
    /// The deterministic name of the CompileJob for this source: `cj-` + the first 32 hex characters
    /// (128 bits) of sha256(repo NUL commit NUL target). Deterministic names make creation idempotent
    /// (409 = exists); 128 bits make a name nobody can aim another source at. 35 characters, so the
    /// Jobs' names (`-fetch`, `-build`, `-resolve`) and their pods' (`-xxxxx`) stay within 63.
    pub fn compile_job_name(&self) -> String {
        name_from_parts(&[&self.repo, &self.commit, &self.build_target])
    }

    /// Whether the branch or tag name `commit` is, rather than a full commit SHA: only a name can move,
    /// so only a name is re-resolved.
    pub fn is_name(&self) -> bool {
        !(self.commit.len() == 40 && self.commit.bytes().all(|b| b.is_ascii_hexdigit()))
    }
}

/// Why a CompileJob cannot stand for a source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SourceMismatch {
    /// Its name is not the one its own spec hashes to (made by hand, or planted).
    Name { expected: String },
    /// It builds another source than the one asked for.
    Spec { found: Box<CompileJobSpec> },
}

impl std::fmt::Display for SourceMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Name { expected } => write!(
                f,
                "its name does not match its spec: a CompileJob for this source must be named {expected}"
            ),
            Self::Spec { found } => write!(
                f,
                "it builds {}, not the requested source",
                found.describe()
            ),
        }
    }
}

impl CompileJob {
    /// Whether this CompileJob's name is the one its spec hashes to: the compile controller builds
    /// nothing else.
    pub fn check_name(&self) -> Result<(), SourceMismatch> {
        let expected = self.spec.compile_job_name();
        if self.metadata.name.as_deref() == Some(expected.as_str()) {
            Ok(())
        } else {
            Err(SourceMismatch::Name { expected })
        }
    }

    /// Whether this CompileJob (found under `wanted`'s name) builds exactly `wanted`: an execution uses
    /// it only then.
    pub fn serves(&self, wanted: &CompileJobSpec) -> Result<(), SourceMismatch> {
        if self.spec != *wanted {
            return Err(SourceMismatch::Spec {
                found: Box::new(self.spec.clone()),
            });
        }
        self.check_name()
    }
}

#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
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
#[x_kube(validation = kube::core::Rule::new(
    "has(self.repo) != has(self.url)"
).message("a CompileJob builds repo and commit, or downloads url and sha256, not both"))]
pub struct CompileJobSpec {
    /// A repository at a commit: fetched, then built offline.
    #[serde(default, skip_serializing_if = "Option::is_none", flatten)]
    pub source: Option<CompileSource>,
    /// A prebuilt module by URL: downloaded and checked, never built.
    #[serde(default, skip_serializing_if = "Option::is_none", flatten)]
    pub module_url: Option<ModuleUrl>,
}

impl CompileJobSpec {
    pub fn git(source: CompileSource) -> Self {
        Self {
            source: Some(source),
            module_url: None,
        }
    }

    pub fn url(module_url: ModuleUrl) -> Self {
        Self {
            source: None,
            module_url: Some(module_url),
        }
    }

    /// The name this spec's CompileJob must have (the CEL rule makes it exactly one kind).
    pub fn compile_job_name(&self) -> String {
        match (&self.source, &self.module_url) {
            (Some(source), _) => source.compile_job_name(),
            (None, Some(module_url)) => module_url.compile_job_name(),
            (None, None) => name_from_parts(&["empty"]),
        }
    }

    /// A branch or tag name, which can move (never a URL module, pinned by its hash).
    pub fn is_name(&self) -> bool {
        self.source.as_ref().is_some_and(CompileSource::is_name)
    }

    /// `repo@commit (target)` or the URL, for messages.
    pub fn describe(&self) -> String {
        match (&self.source, &self.module_url) {
            (Some(s), _) => format!("{}@{} ({})", s.repo, s.commit, s.build_target),
            (None, Some(u)) => format!("{} (sha256 {})", u.url, u.sha256),
            (None, None) => "nothing".to_string(),
        }
    }
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
    /// When `spec.commit` was last resolved to `resolvedCommit`; a branch or tag name is resolved
    /// again once this is older than the operator's `--name-ttl-seconds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_at: Option<Time>,
    /// Whether the fetch found `resolvedCommit` in the history of a branch or tag of the repository.
    /// `false`: only another ref (e.g. `refs/pull/1/head`) holds it, so it is on no branch and
    /// secrets sealed for any branch are not offered to it. Absent until fetched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachable: Option<bool>,
    /// The branch or tag (a full ref, `refs/heads/…` or `refs/tags/…`) the fetch found
    /// `resolvedCommit` on: the name itself for a name, one that contains the commit for a SHA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reachable_from: Option<String>,
    /// Consecutive failed fetches (or re-resolves) that are tried again after a back-off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetch_attempts: Option<u32>,
    /// When the failed fetch (or re-resolve) is tried again; absent when a failure is final.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wasm_sha256: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size_bytes: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compile_time_ms: Option<u64>,
    /// The toolchain that built the module (`rustc -vV`'s first line), from the build's report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toolchain: Option<String>,
    /// The build driver's name and version (`outlayer-compiler 0.1.0`), from the build's report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compiler: Option<String>,
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
    /// The `outlayer.dev/rebuild` annotation value this status answered (the module it named was
    /// evicted and built again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebuild_token: Option<String>,
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
    /// Re-resolving a branch or tag name (network, like the fetch; no checkout).
    Resolve,
}

impl CompileStage {
    pub const ALL: [CompileStage; 3] = [Self::Fetch, Self::Build, Self::Resolve];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Fetch => "fetch",
            Self::Build => "build",
            Self::Resolve => "resolve",
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
            ("False", Reason::NameMismatch, _) => CompileState::Failed {
                stage: CompileStage::Fetch,
                message: ready.message.clone(),
            },
            _ => CompileState::InProgress,
        }
    }
}

/// Set to a new value (e.g. a timestamp) to rerun a failed CompileJob.
pub const RETRY_ANNOTATION: &str = "outlayer.dev/retry";
/// `<sha256>/<token>`: the cached module `<sha256>` was found damaged (an executor's checksum check
/// failed or it could not read it); the compile controller evicts it and builds again, once per token.
pub const REBUILD_ANNOTATION: &str = "outlayer.dev/rebuild";
/// When an execution last used the module (RFC 3339); LRU eviction orders by it.
pub const LAST_USED_ANNOTATION: &str = "outlayer.dev/last-used";
/// On a URL CompileJob: the module's sha256 (its first 32 hex characters: a label value holds at
/// most 63), so an execution finds a Ready copy of the module whatever URL brought it (the cache is
/// by hash; the label is only an index, the spec and status are checked in full).
pub const MODULE_SHA256_LABEL: &str = "outlayer.dev/module-sha256";

/// The [`MODULE_SHA256_LABEL`] value for `sha256`.
pub fn module_label_value(sha256: &str) -> String {
    sha256.chars().take(32).collect()
}

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
        assert_eq!(a.compile_job_name().len(), "cj-".len() + 32);
        assert!(a.compile_job_name().starts_with("cj-"));
        let b = source("https://github.com/alice/echo", "dev");
        assert_ne!(a.compile_job_name(), b.compile_job_name());
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(
            source("https://x/ab", "c").compile_job_name(),
            source("https://x/a", "bc").compile_job_name()
        );
    }

    #[test]
    fn a_compile_job_serves_only_the_source_its_name_and_spec_say() {
        let wanted = source("https://github.com/alice/echo", "main");
        let named = |name: &str, spec: &CompileSource| {
            CompileJob::new(name, CompileJobSpec::git(spec.clone()))
        };
        let other = source("https://github.com/mallory/echo", "main");
        let rows: Vec<(&str, CompileJob, Result<(), &str>)> = vec![
            (
                "its own name and spec",
                named(&wanted.compile_job_name(), &wanted),
                Ok(()),
            ),
            (
                "another source planted under the wanted name",
                named(&wanted.compile_job_name(), &other),
                Err("spec"),
            ),
            (
                "another commit planted under the wanted name",
                named(
                    &wanted.compile_job_name(),
                    &source("https://github.com/alice/echo", "evil"),
                ),
                Err("spec"),
            ),
            (
                "another build target",
                named(
                    &wanted.compile_job_name(),
                    &CompileSource {
                        build_target: "wasm32-unknown-unknown".to_string(),
                        ..wanted.clone()
                    },
                ),
                Err("spec"),
            ),
            (
                "the wanted spec under a hand-made name",
                named("cj-precompiled", &wanted),
                Err("name"),
            ),
        ];
        for (what, job, expected) in rows {
            let got = job
                .serves(&CompileJobSpec::git(wanted.clone()))
                .map_err(|e| match e {
                    SourceMismatch::Name { .. } => "name",
                    SourceMismatch::Spec { .. } => "spec",
                });
            assert_eq!(got, expected, "{what}");
        }
        assert_eq!(
            named("cj-x", &wanted).check_name(),
            Err(SourceMismatch::Name {
                expected: wanted.compile_job_name()
            })
        );
        assert!(
            named(&other.compile_job_name(), &other)
                .check_name()
                .is_ok()
        );
        assert!(wanted.is_name());
        assert!(!source("https://x/a", &"aB".repeat(20)).is_name());
    }

    #[test]
    fn names_of_compile_jobs_and_their_jobs_fit_kubernetes_limits() {
        let name = source(
            &format!("https://github.com/{}/{}", "a".repeat(39), "b".repeat(100)),
            &"x".repeat(256),
        )
        .compile_job_name();
        assert_eq!(name.len(), 35);
        for suffix in ["-fetch", "-build", "-resolve"] {
            // The Job controller names pods `<job>-<5 random>`; the job name is also a label value.
            assert!(name.len() + suffix.len() + 6 <= 63, "{suffix}");
        }
    }
}
