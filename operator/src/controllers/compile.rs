//! The compile controller: a CompileJob runs a fetch Job (network: git and crate hosts), then a build Job
//! (no network) that publishes `wasm/<sha256>.wasm` into the cache. A failure is kept (no rebuild storm
//! on a broken commit) until the CompileJob is deleted or its `outlayer.dev/retry` annotation changes.
//!
//! | state | next | why |
//! |---|---|---|
//! | new | Fetching | the fetch Job is created |
//! | Fetching | Building | the fetch resolved the commit; the build Job is created |
//! | Fetching | FetchFailed | the fetch Job ended without a usable report, or the report says it failed |
//! | Building | Ready | the build published the module |
//! | Building | BuildFailed | the build Job ended without a usable report, or the report says it failed |
//! | FetchFailed, BuildFailed | new | the retry annotation changed: old Jobs deleted, status reset |
//!
//! [`next_step`] decides from the CompileJob and its Jobs' reports; [`stage_result`] reads a report the
//! same way for both stages; `write_outcome` writes.

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
    CompileJob, CompileJobStatus, CompileStage, ConditionStatus, ConditionType, HasConditions,
    RETRY_ANNOTATION, Reason, StatusUpdate,
};
use crate::metrics::{CompileOutcome, ControllerKind};
use crate::pods::compile::{build_job, compile_stage_job_name, fetch_job, read_compiler_report};
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
    Fetched {
        commit: String,
    },
    Built {
        sha256: String,
        size_bytes: Option<u64>,
        compile_time_ms: Option<u64>,
    },
    Failed(StageFailure),
}

/// Why a stage failed, and what of its log and timing is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StageFailure {
    pub stage: CompileStage,
    pub message: String,
    /// The end of the compiler's log, at most [`MAX_STATUS_LOG_BYTES`].
    pub log_tail: Option<String>,
    pub compile_time_ms: Option<u64>,
}

/// Reads a finished stage's report (or why there is none): one reading for fetch and build.
pub(crate) fn stage_result(stage: CompileStage, report: Result<String, String>) -> StageResult {
    let failed = |message: String, log_tail: Option<String>, compile_time_ms| {
        StageResult::Failed(StageFailure {
            stage,
            message,
            log_tail: log_tail.map(tail),
            compile_time_ms,
        })
    };
    let json = match report {
        Ok(json) => json,
        Err(why) => return failed(why, None, None),
    };
    match stage {
        CompileStage::Fetch => match serde_json::from_str::<FetchReport>(&json) {
            Err(e) => failed(format!("unreadable fetch report: {e}"), None, None),
            Ok(FetchReport {
                ok: true,
                resolved_commit: Some(commit),
                ..
            }) => StageResult::Fetched { commit },
            Ok(report) => failed(
                report
                    .failure
                    .error
                    .unwrap_or_else(|| "fetch failed without an error message".to_string()),
                report.failure.log_tail,
                None,
            ),
        },
        CompileStage::Build => match serde_json::from_str::<BuildReport>(&json) {
            Err(e) => failed(format!("unreadable build report: {e}"), None, None),
            Ok(BuildReport {
                ok: true,
                sha256: Some(sha256),
                size_bytes,
                compile_time_ms,
                ..
            }) => StageResult::Built {
                sha256,
                size_bytes,
                compile_time_ms,
            },
            Ok(report) => failed(
                report
                    .failure
                    .error
                    .unwrap_or_else(|| "build failed without an error message".to_string()),
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
}

/// A side effect of an outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Deletes both stages' Jobs (a retry starts over).
    DeleteJobs,
    /// Evicts least recently used modules above the cache bound; `just_built` stays.
    EnforceCacheBound { just_built: String },
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
}

/// The next step of `compile_job`, from its status, its retry annotation and its Jobs.
pub(crate) fn next_step(compile_job: &CompileJob, observed: &Observed, now: Timestamp) -> Step {
    let original = compile_job.status.clone().unwrap_or_default();
    let mut status =
        StatusUpdate::new(original.clone(), compile_job.metadata.generation, Time(now));
    let retry = compile_job.annotations().get(RETRY_ANNOTATION).cloned();
    let ready = status.condition(ConditionType::Ready);
    if ready == Some(false) && retry.is_some() && retry != status.retry_token {
        let fresh = CompileJobStatus {
            retry_token: retry,
            ..CompileJobStatus::default()
        };
        return Step::Write(Box::new(Outcome {
            before: vec![Effect::DeleteJobs],
            status: Some(fresh),
            note: Some(Note::Normal(
                Reason::Retrying,
                "the retry annotation changed: fetching and building again".to_string(),
            )),
            then: Then::Requeue(RETRY_POLL),
            ..Outcome::idle()
        }));
    }
    if ready.is_some() {
        // Ready, or failed for good: nothing to do until deleted or retried.
        return Step::Write(Box::new(Outcome::idle()));
    }
    let resolved_commit = match fetch_step(compile_job, &mut status, observed) {
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
    build_step(compile_job, status, observed, resolved_commit)
}

/// The fetch: the commit it resolved (recorded in `status` when it was just learnt), or the step
/// that waits for it or records its failure.
fn fetch_step(
    compile_job: &CompileJob,
    status: &mut StatusUpdate<CompileJobStatus>,
    observed: &Observed,
) -> ControlFlow<Step, String> {
    if status.condition(ConditionType::Fetched) == Some(true)
        && let Some(commit) = status.resolved_commit.clone()
    {
        return ControlFlow::Continue(commit);
    }
    let source = &compile_job.spec.source;
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
                format!("fetching {}@{}", source.repo, source.commit),
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
                StageResult::Fetched { commit } => {
                    status.set(
                        ConditionType::Fetched,
                        ConditionStatus::True,
                        Reason::Fetched,
                        format!("resolved to {commit}"),
                    );
                    status.resolved_commit = Some(commit.clone());
                    ControlFlow::Continue(commit)
                }
                StageResult::Failed(failure) => ControlFlow::Break(fail(status.clone(), failure)),
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
        } => {
            status.wasm_sha256 = Some(sha256.clone());
            status.size_bytes = size_bytes;
            status.compile_time_ms = compile_time_ms;
            status.last_used = Some(status.now().clone());
            status.observed_generation = status.generation();
            status.message = Some(format!("module {sha256} is in the cache"));
            status.set(
                ConditionType::Built,
                ConditionStatus::True,
                Reason::Built,
                format!("built in {} ms", compile_time_ms.unwrap_or(0)),
            );
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
        StageResult::Failed(failure) => fail(status, failure),
        StageResult::Fetched { .. } => {
            unreachable!("stage_result(Build, _) never reads a fetch report")
        }
    }
}

/// A stage's Job was just created: its condition says so, with a Normal Event.
fn started(status: StatusUpdate<CompileJobStatus>, reason: Reason, message: String) -> Step {
    Step::Write(Box::new(Outcome {
        status: Some(status.into_inner()),
        note: Some(Note::Normal(reason, message)),
        ..Outcome::idle()
    }))
}

/// A stage failed: its condition and `Ready` say why, final until a retry.
fn fail(mut status: StatusUpdate<CompileJobStatus>, failure: StageFailure) -> Step {
    let StageFailure {
        stage,
        message,
        log_tail,
        compile_time_ms,
    } = failure;
    let (condition, reason, outcome) = match stage {
        CompileStage::Fetch => (
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
    if stage == CompileStage::Build {
        status.compile_time_ms = compile_time_ms;
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
        ..Outcome::idle()
    }))
}

impl CompileJob {
    /// Asks [`next_step`] what to do, looks at the Jobs it needs, then writes the outcome.
    #[instrument(skip(self, ctx), fields(compile_job = %self.name_any()))]
    async fn reconcile(&self, ctx: &Context) -> Result<Action> {
        let mut observed = Observed::default();
        for _ in 0..MAX_LOOKS {
            match next_step(self, &observed, Timestamp::now()) {
                Step::Look(stage, resolved_commit) => {
                    let state = self.stage(ctx, stage, resolved_commit.as_deref()).await?;
                    match stage {
                        CompileStage::Fetch => observed.fetch = Some(state),
                        CompileStage::Build => observed.build = Some(state),
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
            Effect::DeleteJobs => self.delete_jobs(ctx).await,
            Effect::EnforceCacheBound { just_built } => {
                self.enforce_cache_bound(ctx, just_built).await;
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

    /// Deletes both stages' Jobs (absent is fine): a retry starts over.
    async fn delete_jobs(&self, ctx: &Context) -> Result<()> {
        let namespace = self
            .namespace()
            .ok_or(Error::MissingMetadata("metadata.namespace"))?;
        let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
        for stage in [CompileStage::Fetch, CompileStage::Build] {
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
    use crate::crd::{BUILD_TARGET_WASIP1, CompileJobSpec, CompileSource};

    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

    fn now() -> Timestamp {
        Timestamp::from_second(1_700_000_000).unwrap()
    }

    fn compile_job(edit: impl FnOnce(&mut CompileJob)) -> CompileJob {
        let mut compile_job = CompileJob::new(
            "cj-1",
            CompileJobSpec {
                source: CompileSource {
                    repo: "https://github.com/alice/echo".to_string(),
                    commit: "main".to_string(),
                    build_target: BUILD_TARGET_WASIP1.to_string(),
                },
            },
        );
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
            }
            if let Step::Write(outcome) = next_step(&job, &observed, now())
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

    fn failed(compile_time_ms: Option<u64>) -> String {
        let mut report = serde_json::json!({"v": 1, "ok": false, "error": "no such commit", "logTail": "fatal: bad ref", "timeMs": 5});
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
                "fetch Job ended without a report",
                after(&fetching),
                Observed {
                    fetch: Some(StageState::Finished(Err("Job cj-1-fetch ended without a report".to_string()))),
                    ..Observed::default()
                },
                "Fetched=False/FetchFailed,Ready=False/FetchFailed warn=FetchFailed finished=fetch_failed AwaitChange".to_string(),
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
            let got = summary(&next_step(&job, &observed, now()));
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
            summary(&next_step(&job, &Observed::default(), now())),
            "unchanged AwaitChange"
        );
        let mut retried = failed_fetch();
        retried
            .annotations_mut()
            .insert(RETRY_ANNOTATION.to_string(), "1".to_string());
        let step = next_step(&retried, &Observed::default(), now());
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
            summary(&next_step(&retried, &Observed::default(), now())),
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
        assert_eq!(
            summary(&next_step(&ready, &Observed::default(), now())),
            "unchanged AwaitChange"
        );
    }

    #[test]
    fn stage_results_keep_the_log_tail_and_compile_time() {
        assert_eq!(
            stage_result(CompileStage::Build, Ok(failed(Some(700)))),
            StageResult::Failed(StageFailure {
                stage: CompileStage::Build,
                message: "no such commit".to_string(),
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
