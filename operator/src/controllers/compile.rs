//! The compile controller: a CompileJob runs a fetch Job (network: git and crate hosts), then a build Job
//! (no network) that publishes `wasm/<sha256>.wasm` into the cache. The outcome is final: a failed build
//! stays failed (no rebuild storm on a broken commit) until the CompileJob is deleted.

use std::sync::Arc;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::Action;
use outlayer_compiler::report::{BuildReport, FetchReport};
use tracing::{debug, info, instrument, warn};

use super::{ERROR_BACKOFF, STALE_RETRY};
use crate::context::Context;
use crate::crd::{CompileJob, CompileJobStatus, RETRY_ANNOTATION, condition_status, set_condition};
use crate::metrics::{CompileOutcome, ControllerKind};
use crate::pods::compile::{
    Stage, build_job, compile_stage_job_name, fetch_job, read_compiler_report,
};
use crate::{Error, Result};

pub const CONDITION_FETCHED: &str = "Fetched";
pub const CONDITION_BUILT: &str = "Built";
pub const CONDITION_READY: &str = "Ready";
/// How often a retry checks that the old Jobs are gone (their deletion also triggers a reconcile).
const RETRY_POLL: std::time::Duration = std::time::Duration::from_secs(1);
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
enum StageState {
    Running,
    /// The compiler's report (JSON), or why there is none.
    Finished(Result<String, String>),
}

fn now() -> Time {
    Time(Timestamp::now())
}

impl CompileJob {
    #[instrument(skip(self, ctx), fields(compile_job = %self.name_any()))]
    async fn reconcile(&self, ctx: &Context) -> Result<Action> {
        let mut status = self.status.clone().unwrap_or_default();
        let retry = self.annotations().get(RETRY_ANNOTATION).cloned();
        let ready = condition_status(&status.conditions, CONDITION_READY);
        if ready == Some(false) && retry.is_some() && retry != status.retry_token {
            return self.retry(ctx, retry).await;
        }
        if ready.is_some() {
            return Ok(Action::await_change());
        }
        let generation = self.metadata.generation;

        let resolved_commit = match (
            condition_status(&status.conditions, CONDITION_FETCHED),
            status.resolved_commit.clone(),
        ) {
            (Some(true), Some(commit)) => commit,
            _ => match self.stage(ctx, Stage::Fetch, None).await? {
                StageState::Running => {
                    if condition_status(&status.conditions, CONDITION_FETCHED).is_none()
                        && status
                            .conditions
                            .iter()
                            .all(|c| c.type_ != CONDITION_FETCHED)
                    {
                        set_condition(
                            &mut status.conditions,
                            CONDITION_FETCHED,
                            false,
                            "Fetching",
                            format!(
                                "fetching {}@{}",
                                self.spec.source.repo, self.spec.source.commit
                            ),
                            generation,
                            now(),
                        );
                        self.apply_status(ctx, &status).await?;
                        ctx.event(
                            self,
                            false,
                            "Fetching",
                            format!(
                                "fetch Job {} started",
                                compile_stage_job_name(&self.name_any(), Stage::Fetch)
                            ),
                        )
                        .await;
                    }
                    return Ok(Action::await_change());
                }
                StageState::Finished(report) => {
                    let report = report.and_then(|json| {
                        serde_json::from_str::<FetchReport>(&json)
                            .map_err(|e| format!("unreadable fetch report: {e}"))
                    });
                    match report {
                        Ok(FetchReport {
                            ok: true,
                            resolved_commit: Some(commit),
                            ..
                        }) => {
                            set_condition(
                                &mut status.conditions,
                                CONDITION_FETCHED,
                                true,
                                "Fetched",
                                format!("resolved to {commit}"),
                                generation,
                                now(),
                            );
                            status.resolved_commit = Some(commit.clone());
                            self.apply_status(ctx, &status).await?;
                            commit
                        }
                        Ok(report) => {
                            let message = report.failure.error.unwrap_or_else(|| {
                                "fetch failed without an error message".to_string()
                            });
                            status.build_log = report.failure.log_tail.map(tail);
                            set_condition(
                                &mut status.conditions,
                                CONDITION_FETCHED,
                                false,
                                "FetchFailed",
                                message.clone(),
                                generation,
                                now(),
                            );
                            return self.fail(ctx, status, "FetchFailed", message).await;
                        }
                        Err(reason) => {
                            set_condition(
                                &mut status.conditions,
                                CONDITION_FETCHED,
                                false,
                                "FetchFailed",
                                reason.clone(),
                                generation,
                                now(),
                            );
                            return self.fail(ctx, status, "FetchFailed", reason).await;
                        }
                    }
                }
            },
        };

        match self
            .stage(ctx, Stage::Build, Some(&resolved_commit))
            .await?
        {
            StageState::Running => {
                if status.conditions.iter().all(|c| c.type_ != CONDITION_BUILT) {
                    set_condition(
                        &mut status.conditions,
                        CONDITION_BUILT,
                        false,
                        "Building",
                        format!("building {resolved_commit} offline"),
                        generation,
                        now(),
                    );
                    self.apply_status(ctx, &status).await?;
                    ctx.event(
                        self,
                        false,
                        "Building",
                        format!(
                            "build Job {} started",
                            compile_stage_job_name(&self.name_any(), Stage::Build)
                        ),
                    )
                    .await;
                }
                Ok(Action::await_change())
            }
            StageState::Finished(report) => {
                let report = report.and_then(|json| {
                    serde_json::from_str::<BuildReport>(&json)
                        .map_err(|e| format!("unreadable build report: {e}"))
                });
                match report {
                    Ok(BuildReport {
                        ok: true,
                        sha256: Some(sha256),
                        size_bytes,
                        compile_time_ms,
                        ..
                    }) => {
                        status.wasm_sha256 = Some(sha256.clone());
                        status.size_bytes = size_bytes;
                        status.compile_time_ms = compile_time_ms;
                        status.last_used = Some(now());
                        status.observed_generation = generation;
                        status.message = Some(format!("module {sha256} is in the cache"));
                        set_condition(
                            &mut status.conditions,
                            CONDITION_BUILT,
                            true,
                            "Built",
                            format!("built in {} ms", compile_time_ms.unwrap_or(0)),
                            generation,
                            now(),
                        );
                        set_condition(
                            &mut status.conditions,
                            CONDITION_READY,
                            true,
                            "ModuleReady",
                            format!("wasm/{sha256}.wasm ({} bytes)", size_bytes.unwrap_or(0)),
                            generation,
                            now(),
                        );
                        self.apply_status(ctx, &status).await?;
                        info!(%sha256, "module built");
                        ctx.event(self, false, "ModuleReady", format!("wasm/{sha256}.wasm"))
                            .await;
                        ctx.metrics.compile_finished(CompileOutcome::Succeeded);
                        self.enforce_cache_bound(ctx, &sha256).await;
                        Ok(Action::await_change())
                    }
                    Ok(report) => {
                        status.compile_time_ms = report.compile_time_ms;
                        let message = report
                            .failure
                            .error
                            .unwrap_or_else(|| "build failed without an error message".to_string());
                        status.build_log = report.failure.log_tail.map(tail);
                        set_condition(
                            &mut status.conditions,
                            CONDITION_BUILT,
                            false,
                            "BuildFailed",
                            message.clone(),
                            generation,
                            now(),
                        );
                        self.fail(ctx, status, "BuildFailed", message).await
                    }
                    Err(reason) => {
                        set_condition(
                            &mut status.conditions,
                            CONDITION_BUILT,
                            false,
                            "BuildFailed",
                            reason.clone(),
                            generation,
                            now(),
                        );
                        self.fail(ctx, status, "BuildFailed", reason).await
                    }
                }
            }
        }
    }

    /// Ensures the stage's Job exists and reads its pod's report once it has finished.
    async fn stage(
        &self,
        ctx: &Context,
        stage: Stage,
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
                (Stage::Build, Some(commit)) => build_job(self, commit, &ctx.config)?,
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

    /// Starts over after the retry annotation changed: the old Jobs go, the status is reset and remembers
    /// which retry it answered.
    async fn retry(&self, ctx: &Context, token: Option<String>) -> Result<Action> {
        let namespace = self
            .namespace()
            .ok_or(Error::MissingMetadata("metadata.namespace"))?;
        let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &namespace);
        for stage in [Stage::Fetch, Stage::Build] {
            let name = compile_stage_job_name(&self.name_any(), stage);
            match jobs.delete(&name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(Error::api("deleting Job", &name)(e)),
            }
        }
        let fresh = CompileJobStatus {
            retry_token: token,
            ..CompileJobStatus::default()
        };
        self.apply_status(ctx, &fresh).await?;
        ctx.event(
            self,
            false,
            "Retrying",
            "the retry annotation changed: fetching and building again".to_string(),
        )
        .await;
        Ok(Action::requeue(RETRY_POLL))
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
        if let Err(error) =
            crate::cache::enforce_cache_bound(&ctx.client, &namespace, mount, max_bytes, just_built)
                .await
        {
            warn!(%error, "enforcing the cache bound failed");
        }
    }

    async fn fail(
        &self,
        ctx: &Context,
        mut status: CompileJobStatus,
        reason: &str,
        message: String,
    ) -> Result<Action> {
        status.observed_generation = self.metadata.generation;
        status.message = Some(message.clone());
        set_condition(
            &mut status.conditions,
            CONDITION_READY,
            false,
            reason,
            message.clone(),
            self.metadata.generation,
            now(),
        );
        self.apply_status(ctx, &status).await?;
        warn!(reason, %message, "compile failed");
        ctx.metrics.compile_finished(if reason == "FetchFailed" {
            CompileOutcome::FetchFailed
        } else {
            CompileOutcome::BuildFailed
        });
        ctx.event(self, true, reason, message).await;
        Ok(Action::await_change())
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
