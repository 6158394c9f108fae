//! The compile controller: a CompileJob runs a fetch Job (network: git and crate hosts), then a build Job
//! (no network; the repository's code runs in an init container that cannot see the cache, a second
//! container publishes `wasm/<sha256>.wasm`). A build failure is kept (no rebuild storm on a broken
//! commit) until the CompileJob is deleted, its `outlayer.dev/retry` annotation changes or, for a branch
//! or tag name, the name moves; a fetch failure is final only for invalid input.
//!
//! | state | next | why |
//! |---|---|---|
//! | any | NameMismatch | the name is not the hash of the spec: nothing is built |
//! | new | Fetching | the fetch Job is created |
//! | Fetching | Building | the fetch resolved the commit; the build Job is created |
//! | Fetching | FetchFailed | the fetch Job ended without a usable report, or the report says it failed |
//! | FetchFailed (not invalid input) | new | `nextAttemptAt` passed (back-off doubling from `--fetch-retry-seconds`) |
//! | Building | Ready | the build published the module |
//! | Building | BuildFailed | the build Job ended without a usable report, or the report says it failed |
//! | FetchFailed, BuildFailed | new | the retry annotation changed: old Jobs deleted, status reset |
//! | Ready, BuildFailed (a name) | resolving | `--name-ttl-seconds` after `resolvedAt`: a resolve Job runs |
//! | resolving | as before | the name did not move: `resolvedAt` restarts; a failed resolve backs off |
//! | resolving | new | the name moved (`NameMoved`): old Jobs deleted, status reset |
//! | Ready | new | the rebuild annotation names its module as damaged: file evicted, status reset |
//!
//! [`next_step`] decides from the CompileJob and its Jobs' reports; [`stage_result`] reads a report the
//! same way for every stage; `write_outcome` writes.

use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::Action;
use outlayer_compiler::report::{BuildReport, FetchReport};
use tracing::{debug, info, instrument, warn};

use super::{ERROR_BACKOFF, MAX_LOOKS, STALE_RETRY};
use crate::context::{Context, Note};
use crate::crd::{
    CompileJob, CompileJobStatus, CompileStage, CompileState, ConditionStatus, ConditionType,
    HasConditions, REBUILD_ANNOTATION, RETRY_ANNOTATION, Reason, StatusUpdate,
};
use crate::metrics::{CompileOutcome, ControllerKind};
use crate::pods::compile::{
    build_job, compile_stage_job_name, fetch_job, read_compiler_report, resolve_job,
};
use crate::{Error, Result};

/// How often a retry checks that the old Jobs are gone (their deletion also triggers a reconcile).
const RETRY_POLL: Duration = Duration::from_secs(1);
/// The most of a log kept in `status.buildLog`.
const MAX_STATUS_LOG_BYTES: usize = 4096;

pub async fn reconcile(compile_job: Arc<CompileJob>, ctx: Arc<Context>) -> Result<Action> {
    compile_job.reconcile(&ctx).await
}

pub fn error_policy(compile_job: Arc<CompileJob>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_error(ControllerKind::Compile, error);
    if matches!(error, Error::StaleObject { .. }) {
        debug!(compile_job = %compile_job.name_any(), %error, "stale read; reconciling again");
        return Action::requeue(STALE_RETRY);
    }
    warn!(compile_job = %compile_job.name_any(), %error, "reconcile failed; retrying");
    Action::requeue(ERROR_BACKOFF)
}

/// Where one stage's Job stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StageState {
    Running,
    /// The compiler's report (JSON), or why there is none.
    Finished(Result<String, String>),
}

/// What a finished stage produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum StageResult {
    /// The fetch or a re-resolve: the commit, and whether a branch or tag holds it.
    Fetched {
        commit: String,
        reachable: Option<bool>,
        reachable_from: Option<String>,
    },
    Built {
        sha256: String,
        size_bytes: Option<u64>,
        compile_time_ms: Option<u64>,
        /// The build identity the report names (absent from compilers before it did).
        toolchain: Option<String>,
        compiler: Option<String>,
    },
    Failed(StageFailure),
}

/// Why a stage failed, and what of its log and timing is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StageFailure {
    pub stage: CompileStage,
    pub message: String,
    /// The compiler's `errorKind` (`invalidRef`, `git`, …); `None` when the Job left no report.
    pub kind: Option<String>,
    /// The end of the compiler's log, at most [`MAX_STATUS_LOG_BYTES`].
    pub log_tail: Option<String>,
    pub compile_time_ms: Option<u64>,
}

/// Reads a finished stage's report (or why there is none): one reading for every stage.
pub(crate) fn stage_result(stage: CompileStage, report: Result<String, String>) -> StageResult {
    let failed =
        |message: String, kind: Option<String>, log_tail: Option<String>, compile_time_ms| {
            StageResult::Failed(StageFailure {
                stage,
                message,
                kind,
                log_tail: log_tail.map(tail),
                compile_time_ms,
            })
        };
    let json = match report {
        Ok(json) => json,
        Err(why) => return failed(why, None, None, None),
    };
    match stage {
        CompileStage::Fetch | CompileStage::Resolve => {
            match serde_json::from_str::<FetchReport>(&json) {
                Err(e) => failed(format!("unreadable fetch report: {e}"), None, None, None),
                Ok(FetchReport {
                    ok: true,
                    resolved_commit: Some(commit),
                    reachable,
                    reachable_from,
                    ..
                }) => StageResult::Fetched {
                    commit,
                    reachable,
                    reachable_from,
                },
                Ok(report) => failed(
                    report
                        .failure
                        .error
                        .unwrap_or_else(|| "fetch failed without an error message".to_string()),
                    report.failure.error_kind,
                    report.failure.log_tail,
                    None,
                ),
            }
        }
        CompileStage::Build => match serde_json::from_str::<BuildReport>(&json) {
            Err(e) => failed(format!("unreadable build report: {e}"), None, None, None),
            Ok(BuildReport {
                ok: true,
                sha256: Some(sha256),
                size_bytes,
                compile_time_ms,
                toolchain,
                compiler,
                ..
            }) => StageResult::Built {
                sha256,
                size_bytes,
                compile_time_ms,
                toolchain,
                compiler,
            },
            Ok(report) => failed(
                report
                    .failure
                    .error
                    .unwrap_or_else(|| "build failed without an error message".to_string()),
                report.failure.error_kind,
                report.failure.log_tail,
                report.compile_time_ms,
            ),
        },
    }
}

/// The stages' Jobs as this reconcile found them; `None` is "not looked at yet".
#[derive(Default)]
pub(crate) struct Observed {
    pub fetch: Option<StageState>,
    pub build: Option<StageState>,
    pub resolve: Option<StageState>,
}

/// A side effect of an outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Deletes every stage's Job (a retry, a moved name or a rebuild starts over).
    DeleteJobs,
    /// Deletes one stage's Job (a finished re-resolve: the next one runs afresh).
    DeleteJob(CompileStage),
    /// Evicts least recently used modules above the cache bound; `just_built` stays.
    EnforceCacheBound { just_built: String },
    /// Removes `wasm/<sha256>.wasm`, found damaged, from the cache (where the operator mounts it; the
    /// rebuild's publish step replaces a damaged file either way).
    EvictModule { sha256: String },
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Outcome {
    pub before: Vec<Effect>,
    /// `None`: the status stays as it is.
    pub status: Option<CompileJobStatus>,
    pub note: Option<Note>,
    pub finished: Option<CompileOutcome>,
    pub after: Vec<Effect>,
    pub then: Then,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Then {
    AwaitChange,
    Requeue(Duration),
}

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Step {
    /// Ensure the stage's Job exists and read its report once it has finished; the build needs the
    /// commit the fetch resolved.
    Look(CompileStage, Option<String>),
    Write(Box<Outcome>),
}

impl Outcome {
    fn idle() -> Self {
        Self {
            before: Vec::new(),
            status: None,
            note: None,
            finished: None,
            after: Vec::new(),
            then: Then::AwaitChange,
        }
    }

    fn wait(then: Then) -> Self {
        Self {
            then,
            ..Self::idle()
        }
    }
}

/// The timing the compile controller's decisions follow (from the operator's flags).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Policy {
    /// A name is re-resolved this long after it last was; zero never.
    pub name_ttl: Duration,
    /// The first back-off of a failed fetch; it doubles per consecutive failure.
    pub fetch_retry: Duration,
    /// Repositories the operator fetches from (`--allow-repo-prefix`): anything else is refused before
    /// a Job is made.
    pub allowed_repo_prefixes: Vec<String>,
}

impl Policy {
    pub fn from_config(config: &crate::config::CompilerConfig) -> Self {
        Self {
            name_ttl: config.name_ttl,
            fetch_retry: config.fetch_retry,
            allowed_repo_prefixes: config.allowed_repo_prefixes.clone(),
        }
    }

    /// Why `repo` is not fetched (the compiler's own form check and allow-list), if it is not.
    fn repo_refusal(&self, repo: &str) -> Option<String> {
        outlayer_compiler::repo::AllowList::new(&self.allowed_repo_prefixes)
            .and_then(|allow| outlayer_compiler::repo::validate_repo(repo, &allow))
            .err()
            .map(|error| error.to_string())
    }
}

/// The longest back-off between fetch attempts.
pub(crate) const MAX_FETCH_BACKOFF: Duration = Duration::from_secs(3600);

/// The wait before attempt `failures + 1`, after `failures` consecutive failures (at least one):
/// `base`, doubling, at most [`MAX_FETCH_BACKOFF`].
pub(crate) fn fetch_backoff(base: Duration, failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(20);
    base.saturating_mul(1 << doublings).min(MAX_FETCH_BACKOFF)
}

/// Whether a failed fetch stays failed. Invalid input never becomes valid; a commit SHA's content
/// never changes, so its missing manifest or its absence stays; everything else (the network, a git
/// host's hiccup, a branch not pushed yet, a name whose commit had no manifest) may pass later.
pub(crate) fn fetch_failure_is_final(kind: Option<&str>, is_name: bool) -> bool {
    match kind {
        Some("invalidRepo" | "repoNotAllowed" | "invalidRef" | "invalidConfig") => true,
        // The Job left no report (crashed, deadline): ours, not the input's.
        // `download`: the network or the host (a 5xx, a reset) — a module URL's refusals
        // (`urlRefused`, `hashMismatch`, `downloadTooLarge`, `invalidModule`) are final.
        None | Some("git" | "timeout" | "io" | "spawn" | "vendor" | "download") => false,
        Some(_) => !is_name,
    }
}

/// When a branch or tag name is due to be re-resolved: after a failed re-resolve at its back-off,
/// else `name_ttl` after it was last resolved. `None` for a commit SHA, with re-resolving off, or in
/// a state that has nothing to refresh (in progress, or failed on input).
pub(crate) fn refresh_due(
    compile_job: &CompileJob,
    status: &CompileJobStatus,
    policy: &Policy,
) -> Option<Timestamp> {
    if !compile_job.spec.is_name() || policy.name_ttl.is_zero() {
        return None;
    }
    let ready = status.find_condition(ConditionType::Ready)?;
    let refreshable = matches!(
        (ready.status.as_str(), Reason::parse(&ready.reason)),
        ("True", _) | ("False", Reason::BuildFailed)
    );
    if !refreshable || status.resolved_commit.is_none() {
        return None;
    }
    if let Some(at) = &status.next_attempt_at {
        return Some(at.0);
    }
    // A status written before `resolvedAt` existed: count from when it became ready.
    let resolved_at = status
        .resolved_at
        .as_ref()
        .map_or(ready.last_transition_time.0, |t| t.0);
    resolved_at.checked_add(policy.name_ttl).ok()
}

/// How long from `now` until `at` (zero when past).
fn until(now: Timestamp, at: Timestamp) -> Duration {
    Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO)
}

/// The next step of `compile_job`, from its status, its annotations and its Jobs.
pub(crate) fn next_step(
    compile_job: &CompileJob,
    observed: &Observed,
    now: Timestamp,
    policy: &Policy,
) -> Step {
    let original = compile_job.status.clone().unwrap_or_default();
    let mut status =
        StatusUpdate::new(original.clone(), compile_job.metadata.generation, Time(now));
    if let Err(mismatch) = compile_job.check_name() {
        return refuse(status, Reason::NameMismatch, &mismatch.to_string());
    }
    let refusal = match (&compile_job.spec.source, &compile_job.spec.module_url) {
        (Some(source), _) => policy.repo_refusal(&source.repo),
        (None, Some(module_url)) => outlayer_compiler::download::check_url(&module_url.url)
            .err()
            .map(|e| e.to_string()),
        (None, None) => Some("the spec names no source".to_string()),
    };
    if let Some(refusal) = refusal {
        return refuse(status, Reason::SpecRefused, &refusal);
    }
    let ready = status.condition(ConditionType::Ready);
    let ready_reason = status
        .find_condition(ConditionType::Ready)
        .map(|c| Reason::parse(&c.reason));
    let retry = compile_job.annotations().get(RETRY_ANNOTATION).cloned();
    if ready == Some(false) && retry.is_some() && retry != status.retry_token {
        let fresh = CompileJobStatus {
            retry_token: retry,
            ..fresh_status(&original, false)
        };
        return start_over(
            fresh,
            Vec::new(),
            Note::Normal(
                Reason::Retrying,
                "the retry annotation changed: fetching and building again".to_string(),
            ),
        );
    }
    if let Some(step) = rebuild_step(compile_job, &original) {
        return step;
    }
    if ready_reason == Some(Reason::FetchFailed)
        && let Some(at) = status.next_attempt_at.clone()
    {
        if now < at.0 {
            return Step::Write(Box::new(Outcome::wait(Then::Requeue(until(now, at.0)))));
        }
        let attempt = original.fetch_attempts.unwrap_or(0) + 1;
        return start_over(
            fresh_status(&original, true),
            Vec::new(),
            Note::Normal(
                Reason::Retrying,
                format!("fetching again after a failure (attempt {attempt})"),
            ),
        );
    }
    if ready.is_some() {
        // Ready, or failed: a name is re-resolved when due; anything else waits for a change.
        return match refresh_due(compile_job, &status, policy) {
            Some(due) if now >= due => resolve_step(compile_job, status, observed, policy),
            Some(due) => Step::Write(Box::new(Outcome::wait(Then::Requeue(until(now, due))))),
            None => Step::Write(Box::new(Outcome::idle())),
        };
    }
    if let Some(module_url) = &compile_job.spec.module_url {
        return url_fetch_step(compile_job, status, observed, module_url, policy);
    }
    let resolved_commit = match fetch_step(compile_job, &mut status, observed, policy) {
        ControlFlow::Continue(commit) => commit,
        ControlFlow::Break(step) => return step,
    };
    if status.find_condition(ConditionType::Built).is_some()
        && observed.build == Some(StageState::Running)
    {
        // Only what this reconcile learnt about the fetch, if anything, is new.
        let changed = *status != original;
        return Step::Write(Box::new(Outcome {
            status: changed.then(|| status.into_inner()),
            ..Outcome::idle()
        }));
    }
    build_step(compile_job, status, observed, resolved_commit, policy)
}

/// The status a CompileJob starts over with: what it answered (retry and rebuild tokens) and, for a
/// retried fetch, how many attempts failed before (the back-off grows with them).
fn fresh_status(original: &CompileJobStatus, keep_attempts: bool) -> CompileJobStatus {
    CompileJobStatus {
        retry_token: original.retry_token.clone(),
        rebuild_token: original.rebuild_token.clone(),
        fetch_attempts: if keep_attempts {
            original.fetch_attempts
        } else {
            None
        },
        ..CompileJobStatus::default()
    }
}

/// Deletes the old Jobs and resets the status: the fetch starts again once they are gone.
fn start_over(fresh: CompileJobStatus, mut before: Vec<Effect>, note: Note) -> Step {
    before.push(Effect::DeleteJobs);
    Step::Write(Box::new(Outcome {
        before,
        status: Some(fresh),
        note: Some(note),
        then: Then::Requeue(RETRY_POLL),
        ..Outcome::idle()
    }))
}

/// A CompileJob that must not be built builds nothing, and says why once: one whose name is not its
/// spec's hash (an execution looks CompileJobs up by name, so one planted under another source's name
/// must never hold a module), or one for a repository this operator does not fetch from.
fn refuse(mut status: StatusUpdate<CompileJobStatus>, reason: Reason, why: &str) -> Step {
    let already = status
        .find_condition(ConditionType::Ready)
        .is_some_and(|c| c.reason == reason.as_str());
    if already {
        return Step::Write(Box::new(Outcome::idle()));
    }
    let message = format!("refused: {why}");
    status.observed_generation = status.generation();
    status.message = Some(message.clone());
    status.set(
        ConditionType::Ready,
        ConditionStatus::False,
        reason.clone(),
        message.clone(),
    );
    Step::Write(Box::new(Outcome {
        status: Some(status.into_inner()),
        note: Some(Note::Warning(reason, message)),
        ..Outcome::idle()
    }))
}

/// The `outlayer.dev/rebuild` annotation names the ready module as damaged (an executor could not
/// read it or its checksum did not match): evict it and build again, once per annotation value.
fn rebuild_step(compile_job: &CompileJob, original: &CompileJobStatus) -> Option<Step> {
    let value = compile_job.annotations().get(REBUILD_ANNOTATION)?;
    if original.rebuild_token.as_ref() == Some(value) {
        return None;
    }
    let named = value.split('/').next().unwrap_or_default();
    let CompileState::Ready { wasm_sha256 } = original.state() else {
        return None;
    };
    if named != wasm_sha256 {
        // About a module this CompileJob no longer holds.
        return None;
    }
    let fresh = CompileJobStatus {
        rebuild_token: Some(value.clone()),
        ..fresh_status(original, false)
    };
    Some(start_over(
        fresh,
        vec![Effect::EvictModule {
            sha256: wasm_sha256.clone(),
        }],
        Note::Warning(
            Reason::ModuleCorrupt,
            format!("module {wasm_sha256} was found damaged in the cache: evicted, building again"),
        ),
    ))
}

/// A name due for re-resolving: the resolve Job says where it points now. Unmoved, the module stays
/// and the clock restarts; moved, everything starts over; a failed re-resolve keeps the module and
/// tries again after a back-off.
fn resolve_step(
    compile_job: &CompileJob,
    mut status: StatusUpdate<CompileJobStatus>,
    observed: &Observed,
    policy: &Policy,
) -> Step {
    let report = match &observed.resolve {
        None => return Step::Look(CompileStage::Resolve, None),
        // Its completion wakes this CompileJob (it owns its Jobs).
        Some(StageState::Running) => return Step::Write(Box::new(Outcome::idle())),
        Some(StageState::Finished(report)) => report.clone(),
    };
    let name = compile_job
        .spec
        .source
        .as_ref()
        .map(|s| s.commit.clone())
        .unwrap_or_default();
    let after = vec![Effect::DeleteJob(CompileStage::Resolve)];
    match stage_result(CompileStage::Resolve, report) {
        StageResult::Fetched { commit, .. }
            if status.resolved_commit.as_deref() == Some(&commit) =>
        {
            status.resolved_at = Some(status.now().clone());
            status.next_attempt_at = None;
            status.fetch_attempts = None;
            Step::Write(Box::new(Outcome {
                status: Some(status.into_inner()),
                after,
                then: Then::Requeue(policy.name_ttl),
                ..Outcome::idle()
            }))
        }
        StageResult::Fetched { commit, .. } => {
            let old = status.resolved_commit.clone().unwrap_or_default();
            start_over(
                fresh_status(&status, false),
                Vec::new(),
                Note::Normal(
                    Reason::NameMoved,
                    format!("{name} moved from {old} to {commit}: fetching and building again"),
                ),
            )
        }
        StageResult::Failed(failure) => {
            let failures = status.fetch_attempts.unwrap_or(0).saturating_add(1);
            let delay = fetch_backoff(policy.fetch_retry, failures);
            status.fetch_attempts = Some(failures);
            status.next_attempt_at = status.now().0.checked_add(delay).ok().map(Time);
            let message = format!(
                "re-resolving {} failed ({}); the module built from {} stays, trying again in {}s",
                name,
                failure.message,
                status.resolved_commit.as_deref().unwrap_or("?"),
                delay.as_secs()
            );
            status.message = Some(message.clone());
            Step::Write(Box::new(Outcome {
                status: Some(status.into_inner()),
                note: Some(Note::Warning(Reason::FetchFailed, message)),
                after,
                then: Then::Requeue(delay),
                ..Outcome::idle()
            }))
        }
        StageResult::Built { .. } => {
            unreachable!("stage_result(Resolve, _) never reads a build report")
        }
    }
}

/// The fetch: the commit it resolved (recorded in `status` when it was just learnt), or the step
/// that waits for it or records its failure.
fn fetch_step(
    compile_job: &CompileJob,
    status: &mut StatusUpdate<CompileJobStatus>,
    observed: &Observed,
    policy: &Policy,
) -> ControlFlow<Step, String> {
    if status.condition(ConditionType::Fetched) == Some(true)
        && let Some(commit) = status.resolved_commit.clone()
    {
        return ControlFlow::Continue(commit);
    }
    let is_name = compile_job.spec.is_name();
    match &observed.fetch {
        None => ControlFlow::Break(Step::Look(CompileStage::Fetch, None)),
        Some(StageState::Running) => {
            if status.find_condition(ConditionType::Fetched).is_some() {
                return ControlFlow::Break(Step::Write(Box::new(Outcome::idle())));
            }
            status.set(
                ConditionType::Fetched,
                ConditionStatus::False,
                Reason::Fetching,
                format!("fetching {}", compile_job.spec.describe()),
            );
            ControlFlow::Break(started(
                status.clone(),
                Reason::Fetching,
                format!(
                    "fetch Job {} started",
                    compile_stage_job_name(&compile_job.name_any(), CompileStage::Fetch)
                ),
            ))
        }
        Some(StageState::Finished(report)) => {
            match stage_result(CompileStage::Fetch, report.clone()) {
                StageResult::Fetched {
                    commit,
                    reachable,
                    reachable_from,
                } => {
                    let on = match (&reachable, &reachable_from) {
                        (Some(false), _) => " (on no branch or tag)".to_string(),
                        (_, Some(from)) => format!(" (on {from})"),
                        _ => String::new(),
                    };
                    status.set(
                        ConditionType::Fetched,
                        ConditionStatus::True,
                        Reason::Fetched,
                        format!("resolved to {commit}{on}"),
                    );
                    status.resolved_commit = Some(commit.clone());
                    status.resolved_at = Some(status.now().clone());
                    status.reachable = reachable;
                    status.reachable_from = reachable_from;
                    status.fetch_attempts = None;
                    status.next_attempt_at = None;
                    ControlFlow::Continue(commit)
                }
                StageResult::Failed(failure) => {
                    ControlFlow::Break(fail(status.clone(), failure, is_name, policy))
                }
                StageResult::Built { .. } => {
                    unreachable!("stage_result(Fetch, _) never reads a build report")
                }
            }
        }
    }
}

/// The build of `resolved_commit`: start it, wait for it, or record the module or the failure.
fn build_step(
    compile_job: &CompileJob,
    mut status: StatusUpdate<CompileJobStatus>,
    observed: &Observed,
    resolved_commit: String,
    policy: &Policy,
) -> Step {
    let report = match &observed.build {
        None => return Step::Look(CompileStage::Build, Some(resolved_commit)),
        Some(StageState::Running) => {
            status.set(
                ConditionType::Built,
                ConditionStatus::False,
                Reason::Building,
                format!("building {resolved_commit} offline"),
            );
            return started(
                status,
                Reason::Building,
                format!(
                    "build Job {} started",
                    compile_stage_job_name(&compile_job.name_any(), CompileStage::Build)
                ),
            );
        }
        Some(StageState::Finished(report)) => report,
    };
    match stage_result(CompileStage::Build, report.clone()) {
        StageResult::Built {
            sha256,
            size_bytes,
            compile_time_ms,
            toolchain,
            compiler,
        } => {
            status.compile_time_ms = compile_time_ms;
            status.toolchain = toolchain;
            status.compiler = compiler;
            status.set(
                ConditionType::Built,
                ConditionStatus::True,
                Reason::Built,
                format!("built in {} ms", compile_time_ms.unwrap_or(0)),
            );
            module_ready(status, sha256, size_bytes)
        }
        StageResult::Failed(failure) => fail(status, failure, compile_job.spec.is_name(), policy),
        StageResult::Fetched { .. } => {
            unreachable!("stage_result(Build, _) never reads a fetch report")
        }
    }
}

/// A module by URL: one Job (the fetch Job, with the fetch's egress) downloads it, checks its hash,
/// validates and publishes it; there is no build. Its report is shaped like a build's.
fn url_fetch_step(
    compile_job: &CompileJob,
    mut status: StatusUpdate<CompileJobStatus>,
    observed: &Observed,
    module_url: &crate::crd::ModuleUrl,
    policy: &Policy,
) -> Step {
    let report = match &observed.fetch {
        None => return Step::Look(CompileStage::Fetch, None),
        Some(StageState::Running) => {
            if status.find_condition(ConditionType::Fetched).is_some() {
                return Step::Write(Box::new(Outcome::idle()));
            }
            status.set(
                ConditionType::Fetched,
                ConditionStatus::False,
                Reason::Fetching,
                format!("downloading {}", module_url.url),
            );
            return started(
                status,
                Reason::Fetching,
                format!(
                    "fetch Job {} started",
                    compile_stage_job_name(&compile_job.name_any(), CompileStage::Fetch)
                ),
            );
        }
        Some(StageState::Finished(report)) => report.clone(),
    };
    let result = match stage_result(CompileStage::Build, report) {
        StageResult::Built { sha256, .. } if sha256 != module_url.sha256 => {
            StageResult::Failed(StageFailure {
                stage: CompileStage::Fetch,
                message: format!(
                    "the fetch reported module {sha256}, not the requested {}",
                    module_url.sha256
                ),
                kind: Some("hashMismatch".to_string()),
                log_tail: None,
                compile_time_ms: None,
            })
        }
        StageResult::Failed(failure) => StageResult::Failed(StageFailure {
            stage: CompileStage::Fetch,
            ..failure
        }),
        other => other,
    };
    match result {
        StageResult::Built {
            sha256, size_bytes, ..
        } => {
            status.fetch_attempts = None;
            status.next_attempt_at = None;
            status.set(
                ConditionType::Fetched,
                ConditionStatus::True,
                Reason::Fetched,
                format!(
                    "downloaded {} ({} bytes), sha256 checked",
                    module_url.url,
                    size_bytes.unwrap_or(0)
                ),
            );
            module_ready(status, sha256, size_bytes)
        }
        StageResult::Failed(failure) => fail(status, failure, false, policy),
        StageResult::Fetched { .. } => {
            unreachable!("stage_result(Build, _) never reads a fetch report")
        }
    }
}

/// The module is published in the cache (built, or downloaded by URL): `Ready`, a Normal Event, and
/// the cache bound enforced with this module kept.
fn module_ready(
    mut status: StatusUpdate<CompileJobStatus>,
    sha256: String,
    size_bytes: Option<u64>,
) -> Step {
    status.wasm_sha256 = Some(sha256.clone());
    status.size_bytes = size_bytes;
    status.last_used = Some(status.now().clone());
    status.observed_generation = status.generation();
    status.message = Some(format!("module {sha256} is in the cache"));
    status.set(
        ConditionType::Ready,
        ConditionStatus::True,
        Reason::ModuleReady,
        format!("wasm/{sha256}.wasm ({} bytes)", size_bytes.unwrap_or(0)),
    );
    Step::Write(Box::new(Outcome {
        status: Some(status.into_inner()),
        note: Some(Note::Normal(
            Reason::ModuleReady,
            format!("wasm/{sha256}.wasm"),
        )),
        finished: Some(CompileOutcome::Succeeded),
        after: vec![Effect::EnforceCacheBound { just_built: sha256 }],
        ..Outcome::idle()
    }))
}

/// A stage's Job was just created: its condition says so, with a Normal Event.
fn started(status: StatusUpdate<CompileJobStatus>, reason: Reason, message: String) -> Step {
    Step::Write(Box::new(Outcome {
        status: Some(status.into_inner()),
        note: Some(Note::Normal(reason, message)),
        ..Outcome::idle()
    }))
}

/// A stage failed: its condition and `Ready` say why. A build failure is final until a retry (or, for
/// a name, until it moves); a fetch failure is final only for invalid input, else it is tried again
/// after a back-off.
fn fail(
    mut status: StatusUpdate<CompileJobStatus>,
    failure: StageFailure,
    is_name: bool,
    policy: &Policy,
) -> Step {
    let StageFailure {
        stage,
        mut message,
        kind,
        log_tail,
        compile_time_ms,
    } = failure;
    let (condition, reason, outcome) = match stage {
        CompileStage::Fetch | CompileStage::Resolve => (
            ConditionType::Fetched,
            Reason::FetchFailed,
            CompileOutcome::FetchFailed,
        ),
        CompileStage::Build => (
            ConditionType::Built,
            Reason::BuildFailed,
            CompileOutcome::BuildFailed,
        ),
    };
    let mut then = Then::AwaitChange;
    if stage == CompileStage::Build {
        status.compile_time_ms = compile_time_ms;
    } else if !fetch_failure_is_final(kind.as_deref(), is_name) {
        let failures = status.fetch_attempts.unwrap_or(0).saturating_add(1);
        let delay = fetch_backoff(policy.fetch_retry, failures);
        status.fetch_attempts = Some(failures);
        status.next_attempt_at = status.now().0.checked_add(delay).ok().map(Time);
        message = format!("{message} (trying again in {}s)", delay.as_secs());
        then = Then::Requeue(delay);
    }
    status.build_log = log_tail;
    status.set(
        condition,
        ConditionStatus::False,
        reason.clone(),
        message.clone(),
    );
    status.observed_generation = status.generation();
    status.message = Some(message.clone());
    status.set(
        ConditionType::Ready,
        ConditionStatus::False,
        reason.clone(),
        message.clone(),
    );
    Step::Write(Box::new(Outcome {
        status: Some(status.into_inner()),
        note: Some(Note::Warning(reason, message)),
        finished: Some(outcome),
        then,
        ..Outcome::idle()
    }))
}

impl CompileJob {
    /// Asks [`next_step`] what to do, looks at the Jobs it needs, then writes the outcome.
    #[instrument(skip(self, ctx), fields(compile_job = %self.name_any()))]
    async fn reconcile(&self, ctx: &Context) -> Result<Action> {
        let mut observed = Observed::default();
        let policy = Policy::from_config(&ctx.config.compiler);
        for _ in 0..MAX_LOOKS {
            match next_step(self, &observed, Timestamp::now(), &policy) {
                Step::Look(stage, resolved_commit) => {
                    let state = self.stage(ctx, stage, resolved_commit.as_deref()).await?;
                    match stage {
                        CompileStage::Fetch => observed.fetch = Some(state),
                        CompileStage::Build => observed.build = Some(state),
                        CompileStage::Resolve => observed.resolve = Some(state),
                    }
                }
                Step::Write(outcome) => return self.write_outcome(ctx, *outcome).await,
            }
        }
        Err(Error::Undecided("CompileJob"))
    }

    /// The one writer: effects, status, metric, Event, then what comes next.
    async fn write_outcome(&self, ctx: &Context, outcome: Outcome) -> Result<Action> {
        for effect in &outcome.before {
            self.apply_effect(ctx, effect).await?;
        }
        if let Some(status) = &outcome.status {
            self.apply_status(ctx, status).await?;
        }
        match (&outcome.finished, &outcome.status) {
            (Some(CompileOutcome::Succeeded), Some(status)) => {
                info!(sha256 = ?status.wasm_sha256, "module built");
            }
            (Some(_), Some(status)) => warn!(message = ?status.message, "compile failed"),
            _ => {}
        }
        if let Some(finished) = outcome.finished {
            ctx.metrics.compile_finished(finished);
        }
        if let Some(note) = outcome.note {
            ctx.publish(self, note).await;
        }
        for effect in &outcome.after {
            self.apply_effect(ctx, effect).await?;
        }
        Ok(match outcome.then {
            Then::AwaitChange => Action::await_change(),
            Then::Requeue(after) => Action::requeue(after),
        })
    }

    async fn apply_effect(&self, ctx: &Context, effect: &Effect) -> Result<()> {
        match effect {
            Effect::DeleteJobs => self.delete_jobs(ctx, &CompileStage::ALL).await,
            Effect::DeleteJob(stage) => self.delete_jobs(ctx, &[*stage]).await,
            Effect::EnforceCacheBound { just_built } => {
                self.enforce_cache_bound(ctx, just_built).await;
                Ok(())
            }
            Effect::EvictModule { sha256 } => {
                if let Some(mount) = &ctx.config.cache_mount_path {
                    crate::cache::evict_module_file(mount, sha256);
                }
                Ok(())
            }
        }
    }

    /// Ensures the stage's Job exists and reads its pod's report once it has finished.
    async fn stage(
        &self,
        ctx: &Context,
        stage: CompileStage,
        resolved_commit: Option<&str>,
    ) -> Result<StageState> {
        let namespace = self
            .namespace()
            .ok_or(Error::MissingMetadata("metadata.namespace"))?;
        let name = compile_stage_job_name(&self.name_any(), stage);
        let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
        let Some(job) = jobs
            .get_opt(&name)
            .await
            .map_err(Error::api("reading Job", &name))?
        else {
            let wanted = match (stage, resolved_commit) {
                (CompileStage::Build, Some(commit)) => build_job(self, commit, &ctx.config)?,
                (CompileStage::Resolve, _) => resolve_job(self, &ctx.config)?,
                _ => fetch_job(self, &ctx.config)?,
            };
            match jobs.create(&PostParams::default(), &wanted).await {
                Ok(_) => info!(job = %name, "created Job"),
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(Error::api("creating Job", &name)(e)),
            }
            return Ok(StageState::Running);
        };
        if job.metadata.deletion_timestamp.is_some() {
            // A retry deleted it; a new one is created once it is gone.
            return Ok(StageState::Running);
        }
        // Trusted by owner, not by name: a Job planted under the stage's name would hand in a report.
        let owner_uid = self
            .metadata
            .uid
            .as_deref()
            .ok_or(Error::MissingMetadata("metadata.uid"))?;
        if !crate::pods::controlled_by(&job.metadata, owner_uid) {
            ctx.metrics.untrusted_object("Job");
            return Err(Error::Untrusted {
                kind: "Job",
                name,
                why: "it has no controller reference to this CompileJob; its report is not read"
                    .to_string(),
            });
        }
        let job_status = job.status.unwrap_or_default();
        let finished = job_status.succeeded.unwrap_or(0) > 0 || job_status.failed.unwrap_or(0) > 0;
        if !finished {
            return Ok(StageState::Running);
        }
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
        // By the Job's uid, not its name: after a retry, pods of the deleted Job of the same name may
        // linger until garbage collection, with the old report.
        let uid = job.metadata.uid.clone().unwrap_or_default();
        let listed = pods
            .list(
                &ListParams::default().labels(&format!("batch.kubernetes.io/controller-uid={uid}")),
            )
            .await
            .map_err(Error::api("listing pods of Job", &name))?;
        let report = listed
            .items
            .iter()
            // Labels can be copied; the Job's controller reference cannot be earned.
            .filter(|pod| crate::pods::controlled_by(&pod.metadata, &uid))
            .find_map(read_compiler_report::<serde_json::Value>)
            .map(|report| report.map(|value| value.to_string()));
        Ok(StageState::Finished(report.unwrap_or_else(|| {
            let reason = job_status
                .conditions
                .unwrap_or_default()
                .into_iter()
                .find(|c| c.type_ == "Failed")
                .map(|c| {
                    format!(
                        "{}: {}",
                        c.reason.unwrap_or_default(),
                        c.message.unwrap_or_default()
                    )
                })
                .unwrap_or_else(|| "its pod left no report".to_string());
            Err(format!("Job {name} ended without a report ({reason})"))
        })))
    }

    /// Deletes the stages' Jobs (absent is fine): a retry starts over.
    async fn delete_jobs(&self, ctx: &Context, stages: &[CompileStage]) -> Result<()> {
        let namespace = self
            .namespace()
            .ok_or(Error::MissingMetadata("metadata.namespace"))?;
        let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
        for &stage in stages {
            let name = compile_stage_job_name(&self.name_any(), stage);
            match jobs.delete(&name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(Error::api("deleting Job", &name)(e)),
            }
        }
        Ok(())
    }

    /// Keeps the cache under its bound after a module was added. A failure is logged, not fatal: the
    /// module is ready either way and the next build tries again.
    async fn enforce_cache_bound(&self, ctx: &Context, just_built: &str) {
        let (Some(max_bytes), Some(mount), Some(namespace)) = (
            ctx.config.cache_max_bytes,
            ctx.config.cache_mount_path.as_ref(),
            self.namespace(),
        ) else {
            return;
        };
        match crate::cache::enforce_cache_bound(
            &ctx.client,
            &namespace,
            mount,
            max_bytes,
            just_built,
        )
        .await
        {
            Ok(bytes) => ctx.metrics.set_cache_bytes(bytes),
            Err(error) => warn!(%error, "enforcing the cache bound failed"),
        }
    }

    async fn apply_status(&self, ctx: &Context, status: &CompileJobStatus) -> Result<()> {
        super::apply_status(ctx, self, status).await
    }
}

/// The end of a log, at most [`MAX_STATUS_LOG_BYTES`], cut at a character boundary.
fn tail(log: String) -> String {
    if log.len() <= MAX_STATUS_LOG_BYTES {
        return log;
    }
    let mut start = log.len() - MAX_STATUS_LOG_BYTES;
    while !log.is_char_boundary(start) {
        start += 1;
    }
    log[start..].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{BUILD_TARGET_WASIP1, CompileJobSpec, CompileSource, REBUILD_ANNOTATION};

    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

    fn now() -> Timestamp {
        Timestamp::from_second(1_700_000_000).unwrap()
    }

    fn compile_job(edit: impl FnOnce(&mut CompileJob)) -> CompileJob {
        let source = CompileSource {
            repo: "https://github.com/alice/echo".to_string(),
            commit: "main".to_string(),
            build_target: BUILD_TARGET_WASIP1.to_string(),
        };
        let mut compile_job =
            CompileJob::new(&source.compile_job_name(), CompileJobSpec::git(source));
        compile_job.metadata.generation = Some(1);
        edit(&mut compile_job);
        compile_job
    }

    fn new_job() -> CompileJob {
        compile_job(|_| {})
    }

    /// A CompileJob whose status went through one reconcile per observation.
    fn after(observations: &[(CompileStage, StageState)]) -> CompileJob {
        let mut job = new_job();
        for (stage, state) in observations {
            let mut observed = Observed::default();
            if *stage == CompileStage::Build {
                observed.fetch = Some(StageState::Finished(Ok(fetched())));
            }
            match stage {
                CompileStage::Fetch => observed.fetch = Some(state.clone()),
                CompileStage::Build => observed.build = Some(state.clone()),
                CompileStage::Resolve => observed.resolve = Some(state.clone()),
            }
            if let Step::Write(outcome) = next_step(&job, &observed, now(), &policy())
                && let Some(status) = outcome.status
            {
                job.status = Some(status);
            }
        }
        job
    }

    fn fetched() -> String {
        serde_json::json!({"v": 1, "ok": true, "resolvedCommit": COMMIT, "timeMs": 5}).to_string()
    }

    fn built() -> String {
        serde_json::json!({"v": 1, "ok": true, "sha256": "ab".repeat(32), "sizeBytes": 100, "compileTimeMs": 900, "timeMs": 1000}).to_string()
    }

    #[test]
    fn the_build_identity_of_the_report_lands_in_the_status() {
        let report = serde_json::json!({"v": 1, "ok": true, "sha256": "ab".repeat(32), "sizeBytes": 100,
            "compileTimeMs": 900, "toolchain": "rustc 1.95.0 (59807616e 2026-04-14)",
            "compiler": "outlayer-compiler 0.1.0", "timeMs": 1000});
        let job = after(&[
            (CompileStage::Fetch, StageState::Finished(Ok(fetched()))),
            (
                CompileStage::Build,
                StageState::Finished(Ok(report.to_string())),
            ),
        ]);
        let status = job.status.unwrap();
        assert_eq!(
            status.toolchain.as_deref(),
            Some("rustc 1.95.0 (59807616e 2026-04-14)")
        );
        assert_eq!(status.compiler.as_deref(), Some("outlayer-compiler 0.1.0"));
        // A report from a compiler that did not name them: none.
        let older = after(&[
            (CompileStage::Fetch, StageState::Finished(Ok(fetched()))),
            (CompileStage::Build, StageState::Finished(Ok(built()))),
        ]);
        assert_eq!(older.status.unwrap().toolchain, None);
    }

    fn policy() -> Policy {
        Policy {
            name_ttl: Duration::from_secs(600),
            fetch_retry: Duration::from_secs(30),
            allowed_repo_prefixes: vec!["https://github.com/".to_string()],
        }
    }

    #[test]
    fn a_repository_outside_the_allow_list_makes_no_job() {
        let job = compile_job(|job| {
            job.spec.source.as_mut().unwrap().repo = "file:///etc".to_string();
            job.metadata.name = Some(job.spec.compile_job_name());
        });
        let step = next_step(&job, &Observed::default(), now(), &policy());
        assert_eq!(
            summary(&step),
            "Ready=False/SpecRefused warn=SpecRefused AwaitChange"
        );
    }

    /// A failed report of kind `invalidRef` (final).
    fn failed(compile_time_ms: Option<u64>) -> String {
        failed_with("invalidRef", compile_time_ms)
    }

    fn failed_with(kind: &str, compile_time_ms: Option<u64>) -> String {
        let mut report = serde_json::json!({"v": 1, "ok": false, "error": "no such commit", "errorKind": kind, "logTail": "fatal: bad ref", "timeMs": 5});
        if let Some(ms) = compile_time_ms {
            report["compileTimeMs"] = ms.into();
        }
        report.to_string()
    }

    fn summary(step: &Step) -> String {
        let outcome = match step {
            Step::Look(stage, commit) => return format!("look {stage:?} {commit:?}"),
            Step::Write(outcome) => outcome,
        };
        let mut parts = vec![match &outcome.status {
            Some(status) => {
                let mut conditions: Vec<_> = status
                    .conditions
                    .iter()
                    .map(|c| format!("{}={}/{}", c.type_, c.status, c.reason))
                    .collect();
                conditions.sort();
                conditions.join(",")
            }
            None => "unchanged".to_string(),
        }];
        match &outcome.note {
            Some(Note::Normal(reason, _)) => parts.push(format!("note={reason}")),
            Some(Note::Warning(reason, _)) => parts.push(format!("warn={reason}")),
            None => {}
        }
        if let Some(finished) = outcome.finished {
            parts.push(format!("finished={}", finished.as_str()));
        }
        for effect in outcome.before.iter().chain(&outcome.after) {
            parts.push(format!("{effect:?}"));
        }
        parts.push(format!("{:?}", outcome.then));
        parts.join(" ")
    }

    fn url_job() -> CompileJob {
        let module_url = crate::crd::ModuleUrl {
            url: "https://modules.example/echo.wasm".to_string(),
            sha256: "ab".repeat(32),
        };
        let mut job = CompileJob::new(
            &module_url.compile_job_name(),
            CompileJobSpec::url(module_url),
        );
        job.metadata.generation = Some(1);
        job
    }

    /// One reconcile of a URL CompileJob per fetch observation; the summary of the last.
    fn url_steps(fetch: &[StageState]) -> (CompileJob, String) {
        let mut job = url_job();
        let mut last = String::new();
        for state in fetch {
            let observed = Observed {
                fetch: Some(state.clone()),
                ..Observed::default()
            };
            let step = next_step(&job, &observed, now(), &policy());
            last = summary(&step);
            if let Step::Write(outcome) = step
                && let Some(status) = outcome.status
            {
                job.status = Some(status);
            }
        }
        (job, last)
    }

    #[test]
    fn a_module_by_url_is_downloaded_by_the_fetch_job_and_never_built() {
        let job = url_job();
        // Not allowed to build anything: the first look is the fetch Job, whatever the repo allow-list.
        assert_eq!(
            summary(&next_step(&job, &Observed::default(), now(), &policy())),
            "look Fetch None"
        );
        let failed = |kind: &str, error: &str| {
            StageState::Finished(Ok(serde_json::json!({"v": 1, "ok": false, "error": error,
                "errorKind": kind, "timeMs": 3})
            .to_string()))
        };
        let rows: Vec<(&str, Vec<StageState>, &str)> = vec![
            (
                "downloading",
                vec![StageState::Running],
                "Fetched=False/Fetching note=Fetching AwaitChange",
            ),
            (
                "downloaded and checked: ready, no build",
                vec![StageState::Running, StageState::Finished(Ok(built()))],
                "Fetched=True/Fetched,Ready=True/ModuleReady note=ModuleReady finished=succeeded EnforceCacheBound { just_built: \"abababababababababababababababababababababababababababababababab\" } AwaitChange",
            ),
            (
                "a report of another module (never trusted)",
                vec![StageState::Finished(Ok(
                    serde_json::json!({"v": 1, "ok": true,
                    "sha256": "cd".repeat(32), "sizeBytes": 9, "timeMs": 1})
                    .to_string(),
                ))],
                "Fetched=False/FetchFailed,Ready=False/FetchFailed warn=FetchFailed finished=fetch_failed AwaitChange",
            ),
            (
                "wrong hash: final",
                vec![failed(
                    "hashMismatch",
                    "the module at https://modules.example/echo.wasm has sha256 00…",
                )],
                "Fetched=False/FetchFailed,Ready=False/FetchFailed warn=FetchFailed finished=fetch_failed AwaitChange",
            ),
            (
                "refused address: final",
                vec![failed(
                    "urlRefused",
                    "https://10.0.0.1/x is refused: its host is 10.0.0.1, a private address",
                )],
                "Fetched=False/FetchFailed,Ready=False/FetchFailed warn=FetchFailed finished=fetch_failed AwaitChange",
            ),
            (
                "too large: final",
                vec![failed(
                    "downloadTooLarge",
                    "https://modules.example/echo.wasm is larger than the 33554432-byte download limit",
                )],
                "Fetched=False/FetchFailed,Ready=False/FetchFailed warn=FetchFailed finished=fetch_failed AwaitChange",
            ),
            (
                "the host failed: tried again after the back-off",
                vec![failed(
                    "download",
                    "downloading https://modules.example/echo.wasm failed: HTTP 503",
                )],
                "Fetched=False/FetchFailed,Ready=False/FetchFailed warn=FetchFailed finished=fetch_failed Requeue(30s)",
            ),
        ];
        for (what, fetch, expected) in rows {
            assert_eq!(url_steps(&fetch).1, expected, "{what}");
        }
        let (ready, _) = url_steps(&[StageState::Finished(Ok(built()))]);
        let status = ready.status.unwrap();
        assert_eq!(
            status.wasm_sha256.as_deref(),
            Some("ab".repeat(32).as_str())
        );
        assert_eq!(status.compile_time_ms, None, "nothing was compiled");
        // Ready stays ready: nothing to re-resolve, nothing to build.
        let mut again = url_job();
        again.status = Some(status);
        assert_eq!(
            summary(&next_step(&again, &Observed::default(), now(), &policy())),
            "unchanged AwaitChange"
        );
        // A URL the operator does not fetch makes no Job.
        let mut http = url_job();
        http.spec.module_url.as_mut().unwrap().url = "http://modules.example/echo.wasm".to_string();
        http.metadata.name = Some(http.spec.compile_job_name());
        assert_eq!(
            summary(&next_step(&http, &Observed::default(), now(), &policy())),
            "Ready=False/SpecRefused warn=SpecRefused AwaitChange"
        );
    }

    #[test]
    fn every_stage_and_report() {
        let running = |stage| (stage, StageState::Running);
        let finished = |stage, report: String| (stage, StageState::Finished(Ok(report)));
        let fetching = [running(CompileStage::Fetch)];
        let building = [
            finished(CompileStage::Fetch, fetched()),
            running(CompileStage::Build),
        ];
        // Fetched, the build not started yet (as an earlier operator version left it).
        let mut fetch_done = after(&building);
        if let Some(status) = &mut fetch_done.status {
            status.conditions.retain(|c| c.type_ != "Built");
        }
        let rows: Vec<(&str, CompileJob, Observed, String)> = vec![
            (
                "new: the fetch Job",
                new_job(),
                Observed::default(),
                "look Fetch None".to_string(),
            ),
            (
                "fetch running: announced once",
                new_job(),
                Observed {
                    fetch: Some(StageState::Running),
                    ..Observed::default()
                },
                "Fetched=False/Fetching note=Fetching AwaitChange".to_string(),
            ),
            (
                "fetch still running",
                after(&fetching),
                Observed {
                    fetch: Some(StageState::Running),
                    ..Observed::default()
                },
                "unchanged AwaitChange".to_string(),
            ),
            (
                "fetched: the build Job, with the resolved commit",
                after(&fetching),
                Observed {
                    fetch: Some(StageState::Finished(Ok(fetched()))),
                    ..Observed::default()
                },
                format!("look Build Some(\"{COMMIT}\")"),
            ),
            (
                "fetched and the build started: both in one write",
                after(&fetching),
                Observed {
                    fetch: Some(StageState::Finished(Ok(fetched()))),
                    build: Some(StageState::Running),
                    resolve: None,
                },
                "Built=False/Building,Fetched=True/Fetched note=Building AwaitChange".to_string(),
            ),
            (
                "already fetched: straight to the build",
                fetch_done,
                Observed::default(),
                format!("look Build Some(\"{COMMIT}\")"),
            ),
            (
                "build still running",
                after(&building),
                Observed {
                    build: Some(StageState::Running),
                    ..Observed::default()
                },
                "unchanged AwaitChange".to_string(),
            ),
            (
                "built",
                after(&building),
                Observed {
                    build: Some(StageState::Finished(Ok(built()))),
                    ..Observed::default()
                },
                format!(
                    "Built=True/Built,Fetched=True/Fetched,Ready=True/ModuleReady note=ModuleReady finished=succeeded EnforceCacheBound {{ just_built: \"{}\" }} AwaitChange",
                    "ab".repeat(32)
                ),
            ),
            (
                "fetch failed",
                after(&fetching),
                Observed {
                    fetch: Some(StageState::Finished(Ok(failed(None)))),
                    ..Observed::default()
                },
                "Fetched=False/FetchFailed,Ready=False/FetchFailed warn=FetchFailed finished=fetch_failed AwaitChange".to_string(),
            ),
            (
                "fetch Job ended without a report: ours, tried again after a back-off",
                after(&fetching),
                Observed {
                    fetch: Some(StageState::Finished(Err("Job cj-1-fetch ended without a report".to_string()))),
                    ..Observed::default()
                },
                "Fetched=False/FetchFailed,Ready=False/FetchFailed warn=FetchFailed finished=fetch_failed Requeue(30s)".to_string(),
            ),
            (
                "build failed",
                after(&building),
                Observed {
                    build: Some(StageState::Finished(Ok(failed(Some(700))))),
                    ..Observed::default()
                },
                "Built=False/BuildFailed,Fetched=True/Fetched,Ready=False/BuildFailed warn=BuildFailed finished=build_failed AwaitChange".to_string(),
            ),
            (
                "build report unreadable",
                after(&building),
                Observed {
                    build: Some(StageState::Finished(Ok("{".to_string()))),
                    ..Observed::default()
                },
                "Built=False/BuildFailed,Fetched=True/Fetched,Ready=False/BuildFailed warn=BuildFailed finished=build_failed AwaitChange".to_string(),
            ),
        ];
        let mut failures = Vec::new();
        for (name, job, observed, expected) in rows {
            let got = summary(&next_step(&job, &observed, now(), &policy()));
            if got != expected {
                failures.push(format!("{name}:\n  expected {expected}\n  got      {got}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn failures_are_final_until_the_retry_annotation_changes() {
        let failed_fetch =
            || after(&[(CompileStage::Fetch, StageState::Finished(Ok(failed(None))))]);
        let job = failed_fetch();
        assert_eq!(
            summary(&next_step(&job, &Observed::default(), now(), &policy())),
            "unchanged AwaitChange"
        );
        let mut retried = failed_fetch();
        retried
            .annotations_mut()
            .insert(RETRY_ANNOTATION.to_string(), "1".to_string());
        let step = next_step(&retried, &Observed::default(), now(), &policy());
        assert_eq!(summary(&step), " note=Retrying DeleteJobs Requeue(1s)");
        let Step::Write(outcome) = step else {
            unreachable!()
        };
        let fresh = outcome.status.unwrap();
        assert_eq!(fresh.retry_token.as_deref(), Some("1"));
        // The same token again is answered already: the reset status has no Ready condition, so
        // the fetch starts over instead of resetting again.
        retried.status = Some(fresh);
        assert_eq!(
            summary(&next_step(&retried, &Observed::default(), now(), &policy())),
            "look Fetch None"
        );
        // A retry annotation on a CompileJob that did not fail changes nothing.
        let mut ready = after(&[
            (CompileStage::Fetch, StageState::Finished(Ok(fetched()))),
            (CompileStage::Build, StageState::Finished(Ok(built()))),
        ]);
        ready
            .annotations_mut()
            .insert(RETRY_ANNOTATION.to_string(), "2".to_string());
        // (A ready name only waits for its re-resolve.)
        assert_eq!(
            summary(&next_step(&ready, &Observed::default(), now(), &policy())),
            "unchanged Requeue(600s)"
        );
    }

    fn ready_job(commit: &str) -> CompileJob {
        let mut job = after(&[
            (CompileStage::Fetch, StageState::Finished(Ok(fetched()))),
            (CompileStage::Build, StageState::Finished(Ok(built()))),
        ]);
        job.spec.source.as_mut().unwrap().commit = commit.to_string();
        job.metadata.name = Some(job.spec.compile_job_name());
        job
    }

    fn at(seconds: i64) -> Timestamp {
        now()
            .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(seconds))
            .unwrap()
    }

    fn resolved(commit: &str) -> Observed {
        Observed {
            resolve: Some(StageState::Finished(Ok(serde_json::json!({
                "v": 1, "ok": true, "resolvedCommit": commit, "reachable": true,
                "reachableFrom": "refs/heads/main", "timeMs": 5
            })
            .to_string()))),
            ..Observed::default()
        }
    }

    /// Applies a step's status, as the writer would.
    fn apply(mut job: CompileJob, step: &Step) -> CompileJob {
        if let Step::Write(outcome) = step
            && let Some(status) = &outcome.status
        {
            job.status = Some(status.clone());
        }
        job
    }

    #[test]
    fn a_name_is_re_resolved_after_its_ttl_and_rebuilt_only_when_it_moved() {
        let job = ready_job("main");
        let none = Observed::default();
        let policy = policy();
        assert_eq!(
            summary(&next_step(&job, &none, at(599), &policy)),
            "unchanged Requeue(1s)"
        );
        assert_eq!(
            summary(&next_step(&job, &none, at(600), &policy)),
            "look Resolve None"
        );
        let running = Observed {
            resolve: Some(StageState::Running),
            ..Observed::default()
        };
        assert_eq!(
            summary(&next_step(&job, &running, at(600), &policy)),
            "unchanged AwaitChange"
        );

        // Unmoved: the module stays, the clock restarts, the resolve Job goes.
        let step = next_step(&job, &resolved(COMMIT), at(600), &policy);
        assert_eq!(
            summary(&step),
            "Built=True/Built,Fetched=True/Fetched,Ready=True/ModuleReady DeleteJob(Resolve) Requeue(600s)"
        );
        let unmoved = apply(job.clone(), &step);
        let status = unmoved.status.as_ref().unwrap();
        assert_eq!(status.resolved_at, Some(Time(at(600))));
        assert_eq!(
            status.state(),
            CompileState::Ready {
                wasm_sha256: "ab".repeat(32)
            }
        );
        assert_eq!(
            summary(&next_step(&unmoved, &none, at(1199), &policy)),
            "unchanged Requeue(1s)"
        );

        // Moved: everything starts over for the new commit.
        let moved = "f".repeat(40);
        let step = next_step(&job, &resolved(&moved), at(600), &policy);
        assert_eq!(summary(&step), " note=NameMoved DeleteJobs Requeue(1s)");
        let restarted = apply(job.clone(), &step);
        assert_eq!(
            restarted.status.as_ref().unwrap().state(),
            CompileState::InProgress
        );
        assert_eq!(
            summary(&next_step(&restarted, &none, at(601), &policy)),
            "look Fetch None"
        );

        // A failed re-resolve keeps the module and tries again after a back-off.
        let failed_resolve = Observed {
            resolve: Some(StageState::Finished(Ok(failed_with("git", None)))),
            ..Observed::default()
        };
        let step = next_step(&job, &failed_resolve, at(600), &policy);
        assert_eq!(
            summary(&step),
            "Built=True/Built,Fetched=True/Fetched,Ready=True/ModuleReady warn=FetchFailed DeleteJob(Resolve) Requeue(30s)"
        );
        let retrying = apply(job.clone(), &step);
        assert!(matches!(
            retrying.status.as_ref().unwrap().state(),
            CompileState::Ready { .. }
        ));
        assert_eq!(
            summary(&next_step(&retrying, &none, at(629), &policy)),
            "unchanged Requeue(1s)"
        );
        assert_eq!(
            summary(&next_step(&retrying, &none, at(630), &policy)),
            "look Resolve None"
        );
        // The second failure waits twice as long.
        let step = next_step(&retrying, &failed_resolve, at(630), &policy);
        assert!(
            summary(&step).ends_with("Requeue(60s)"),
            "{}",
            summary(&step)
        );

        // A full SHA never moves; a TTL of zero turns re-resolving off.
        let pinned = ready_job(COMMIT);
        assert_eq!(
            summary(&next_step(&pinned, &none, at(100_000), &policy)),
            "unchanged AwaitChange"
        );
        let off = Policy {
            name_ttl: Duration::ZERO,
            ..policy
        };
        assert_eq!(
            summary(&next_step(&job, &none, at(100_000), &off)),
            "unchanged AwaitChange"
        );
    }

    #[test]
    fn a_name_whose_build_failed_is_re_resolved_so_a_pushed_fix_is_picked_up() {
        let job = after(&[
            (CompileStage::Fetch, StageState::Finished(Ok(fetched()))),
            (
                CompileStage::Build,
                StageState::Finished(Ok(failed_with("compile", Some(700)))),
            ),
        ]);
        let none = Observed::default();
        assert_eq!(
            summary(&next_step(&job, &none, at(10), &policy())),
            "unchanged Requeue(590s)"
        );
        assert_eq!(
            summary(&next_step(&job, &none, at(600), &policy())),
            "look Resolve None"
        );
        let fix = "e".repeat(40);
        assert_eq!(
            summary(&next_step(&job, &resolved(&fix), at(600), &policy())),
            " note=NameMoved DeleteJobs Requeue(1s)"
        );
    }

    #[test]
    fn fetch_failures_are_final_only_for_invalid_input() {
        let rows = [
            // (errorKind, a name?, final?)
            (Some("invalidRepo"), true, true),
            (Some("repoNotAllowed"), true, true),
            (Some("invalidRef"), false, true),
            (Some("invalidConfig"), true, true),
            (Some("git"), false, false),
            (Some("timeout"), false, false),
            (Some("vendor"), false, false),
            (None, false, false),
            (Some("refNotFound"), true, false),
            (Some("noManifest"), true, false),
            (Some("refNotFound"), false, true),
            (Some("noManifest"), false, true),
            (Some("workspaceTooLarge"), false, true),
            // A module by URL (never a name): the host's trouble passes, a refusal does not.
            (Some("download"), false, false),
            (Some("urlRefused"), false, true),
            (Some("hashMismatch"), false, true),
            (Some("downloadTooLarge"), false, true),
            (Some("invalidModule"), false, true),
        ];
        for (kind, is_name, expected) in rows {
            assert_eq!(
                fetch_failure_is_final(kind, is_name),
                expected,
                "{kind:?} name={is_name}"
            );
        }
        let base = Duration::from_secs(30);
        let waits: Vec<u64> = (1..=9).map(|n| fetch_backoff(base, n).as_secs()).collect();
        assert_eq!(waits, [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(fetch_backoff(base, u32::MAX), MAX_FETCH_BACKOFF);
    }

    #[test]
    fn a_retryable_fetch_failure_is_tried_again_with_a_growing_back_off() {
        let missing_branch = || {
            (
                CompileStage::Fetch,
                StageState::Finished(Ok(failed_with("refNotFound", None))),
            )
        };
        let job = after(&[missing_branch()]);
        let status = job.status.clone().unwrap();
        assert_eq!(status.fetch_attempts, Some(1));
        assert_eq!(status.next_attempt_at, Some(Time(at(30))));
        assert!(matches!(status.state(), CompileState::Failed { .. }));
        let none = Observed::default();
        assert_eq!(
            summary(&next_step(&job, &none, at(29), &policy())),
            "unchanged Requeue(1s)"
        );
        let step = next_step(&job, &none, at(30), &policy());
        assert_eq!(summary(&step), " note=Retrying DeleteJobs Requeue(1s)");
        let mut again = apply(job, &step);
        assert_eq!(again.status.as_ref().unwrap().fetch_attempts, Some(1));
        assert_eq!(
            summary(&next_step(&again, &none, at(31), &policy())),
            "look Fetch None"
        );
        // The second failure in a row waits 60 s.
        let step = next_step(
            &again,
            &Observed {
                fetch: Some(StageState::Finished(Ok(failed_with("refNotFound", None)))),
                ..Observed::default()
            },
            at(40),
            &policy(),
        );
        again = apply(again, &step);
        let status = again.status.unwrap();
        assert_eq!(status.fetch_attempts, Some(2));
        assert_eq!(status.next_attempt_at, Some(Time(at(100))));

        // A SHA that does not exist stays failed.
        let mut pinned = new_job();
        pinned.spec.source.as_mut().unwrap().commit = COMMIT.to_string();
        pinned.metadata.name = Some(pinned.spec.compile_job_name());
        let step = next_step(
            &pinned,
            &Observed {
                fetch: Some(StageState::Finished(Ok(failed_with("refNotFound", None)))),
                ..Observed::default()
            },
            now(),
            &policy(),
        );
        assert!(
            summary(&step).ends_with("AwaitChange"),
            "{}",
            summary(&step)
        );
        let pinned = apply(pinned, &step);
        assert_eq!(pinned.status.as_ref().unwrap().next_attempt_at, None);
        assert_eq!(
            summary(&next_step(&pinned, &none, at(100_000), &policy())),
            "unchanged AwaitChange"
        );
    }

    #[test]
    fn a_compile_job_whose_name_is_not_its_specs_builds_nothing() {
        let mut planted = new_job();
        planted.metadata.name = Some(
            CompileSource {
                commit: "other".to_string(),
                ..planted.spec.source.clone().unwrap()
            }
            .compile_job_name(),
        );
        let step = next_step(&planted, &Observed::default(), now(), &policy());
        assert_eq!(
            summary(&step),
            "Ready=False/NameMismatch warn=NameMismatch AwaitChange"
        );
        let refused = apply(planted, &step);
        let status = refused.status.as_ref().unwrap();
        assert!(
            status
                .message
                .as_deref()
                .unwrap()
                .contains(&refused.spec.compile_job_name()),
            "{:?}",
            status.message
        );
        assert!(matches!(status.state(), CompileState::Failed { .. }));
        // Refused once; neither a retry nor time changes that.
        let mut retried = refused.clone();
        retried
            .annotations_mut()
            .insert(RETRY_ANNOTATION.to_string(), "1".to_string());
        assert_eq!(
            summary(&next_step(
                &retried,
                &Observed::default(),
                at(100_000),
                &policy()
            )),
            "unchanged AwaitChange"
        );
    }

    #[test]
    fn a_module_found_damaged_is_evicted_and_built_again_once() {
        let job = ready_job("main");
        let sha = "ab".repeat(32);
        let mut flagged = job.clone();
        flagged
            .annotations_mut()
            .insert(REBUILD_ANNOTATION.to_string(), format!("{sha}/req-1"));
        let step = next_step(&flagged, &Observed::default(), at(5), &policy());
        assert_eq!(
            summary(&step),
            format!(
                " warn=ModuleCorrupt EvictModule {{ sha256: \"{sha}\" }} DeleteJobs Requeue(1s)"
            )
        );
        let rebuilding = apply(flagged, &step);
        let status = rebuilding.status.as_ref().unwrap();
        assert_eq!(status.state(), CompileState::InProgress);
        assert_eq!(
            status.rebuild_token.as_deref(),
            Some(format!("{sha}/req-1").as_str())
        );
        // Rebuilt (the same module again): the same annotation is answered already.
        let mut rebuilt = rebuilding.clone();
        rebuilt.status = job.status.clone().map(|mut s| {
            s.rebuild_token = status.rebuild_token.clone();
            s
        });
        assert_eq!(
            summary(&next_step(&rebuilt, &Observed::default(), at(6), &policy())),
            "unchanged Requeue(594s)"
        );
        // An annotation about another module than the one held changes nothing.
        let mut other = job.clone();
        other.annotations_mut().insert(
            REBUILD_ANNOTATION.to_string(),
            format!("{}/req-2", "cd".repeat(32)),
        );
        assert_eq!(
            summary(&next_step(&other, &Observed::default(), at(6), &policy())),
            "unchanged Requeue(594s)"
        );
    }

    #[test]
    fn the_fetch_records_where_the_commit_was_found() {
        let fetching = after(&[(CompileStage::Fetch, StageState::Running)]);
        let report = serde_json::json!({
            "v": 1, "ok": true, "resolvedCommit": COMMIT, "reachable": false, "timeMs": 5
        });
        let step = next_step(
            &fetching,
            &Observed {
                fetch: Some(StageState::Finished(Ok(report.to_string()))),
                build: Some(StageState::Running),
                resolve: None,
            },
            now(),
            &policy(),
        );
        let job = apply(fetching, &step);
        let status = job.status.unwrap();
        assert_eq!(status.reachable, Some(false));
        assert_eq!(status.reachable_from, None);
        assert_eq!(status.resolved_at, Some(Time(now())));
        let fetched = status
            .find_condition(ConditionType::Fetched)
            .unwrap()
            .message
            .clone();
        assert!(fetched.contains("on no branch or tag"), "{fetched}");
    }

    #[test]
    fn stage_results_keep_the_log_tail_and_compile_time() {
        assert_eq!(
            stage_result(CompileStage::Build, Ok(failed(Some(700)))),
            StageResult::Failed(StageFailure {
                stage: CompileStage::Build,
                message: "no such commit".to_string(),
                kind: Some("invalidRef".to_string()),
                log_tail: Some("fatal: bad ref".to_string()),
                compile_time_ms: Some(700),
            })
        );
        assert_eq!(
            stage_result(
                CompileStage::Fetch,
                Ok(r#"{"v":1,"ok":false,"timeMs":1}"#.to_string())
            ),
            StageResult::Failed(StageFailure {
                stage: CompileStage::Fetch,
                message: "fetch failed without an error message".to_string(),
                kind: None,
                log_tail: None,
                compile_time_ms: None,
            })
        );
        // ok without a commit is not a fetch the build can use.
        assert!(matches!(
            stage_result(
                CompileStage::Fetch,
                Ok(r#"{"v":1,"ok":true,"timeMs":1}"#.to_string())
            ),
            StageResult::Failed(_)
        ));
        let long_log = "x".repeat(MAX_STATUS_LOG_BYTES + 10);
        let report = serde_json::json!({"v": 1, "ok": false, "logTail": long_log, "timeMs": 1});
        let StageResult::Failed(failure) =
            stage_result(CompileStage::Fetch, Ok(report.to_string()))
        else {
            panic!("a failed report is a failure")
        };
        assert_eq!(
            failure.log_tail.map(|t| t.len()),
            Some(MAX_STATUS_LOG_BYTES)
        );
    }

    #[test]
    fn a_built_module_records_size_time_and_last_use() {
        let job = after(&[
            (CompileStage::Fetch, StageState::Finished(Ok(fetched()))),
            (CompileStage::Build, StageState::Finished(Ok(built()))),
        ]);
        let status = job.status.unwrap();
        assert_eq!(
            status.state(),
            crate::crd::CompileState::Ready {
                wasm_sha256: "ab".repeat(32)
            }
        );
        assert_eq!(status.size_bytes, Some(100));
        assert_eq!(status.compile_time_ms, Some(900));
        assert_eq!(status.resolved_commit.as_deref(), Some(COMMIT));
        assert_eq!(status.last_used, Some(Time(now())));
        assert_eq!(status.observed_generation, Some(1));
    }
}
