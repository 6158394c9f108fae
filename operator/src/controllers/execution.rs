//! The execution controller: Pending → Compiling (a shared CompileJob) → Executing (an executor pod owned
//! by the request) → Succeeded | Failed. Every child has a deterministic name and every create treats
//! "already exists" as done, so a restart mid-flight finishes the work without duplicates. Status is
//! written whole with server-side apply.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};
use tracing::{debug, info, instrument, warn};

use super::secrets::SecretsStep;
use super::{ERROR_BACKOFF, STALE_RETRY};

/// How soon an execution waiting for the sealing keys looks again.
const SECRETS_RETRY: Duration = Duration::from_secs(10);
use crate::context::Context;
use crate::crd::{
    CompileJob, CompileJobSpec, ExecutionRequest, ExecutionRequestStatus, LAST_USED_ANNOTATION,
    OutputEncoding, Phase, condition_status, format_duration_ms, set_condition,
};
use crate::metrics::{self, ControllerKind, ExecutionResult};
use crate::pods::executor::{RESULTS_SUBDIR, is_sha256_hex};
use crate::pods::result::ResultMessage;
use crate::pods::{ExecutorOutcome, executor_pod, executor_pod_name_for, read_executor_outcome};
use crate::{Error, Result};

pub const CONDITION_COMPILED: &str = "Compiled";
pub const CONDITION_EXECUTED: &str = "Executed";
pub const CONDITION_SUCCEEDED: &str = "Succeeded";
/// On-chain requests: the result is on chain (or final without it, e.g. already resolved).
pub const CONDITION_REPORTED: &str = "Reported";
/// CompileJob condition that says its module is in the cache.
pub const CONDITION_READY: &str = "Ready";

pub async fn reconcile(execution: Arc<ExecutionRequest>, ctx: Arc<Context>) -> Result<Action> {
    execution.reconcile(&ctx).await
}

pub fn error_policy(execution: Arc<ExecutionRequest>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics
        .reconcile_error(ControllerKind::Execution, error);
    if matches!(error, Error::StaleObject { .. }) {
        debug!(execution = %execution.name_any(), %error, "stale read; reconciling again");
        return Action::requeue(STALE_RETRY);
    }
    warn!(execution = %execution.name_any(), %error, "reconcile failed; retrying");
    Action::requeue(ERROR_BACKOFF)
}

/// Where the module an execution needs stands.
enum Module {
    Ready {
        sha256: String,
        compile_job: Option<String>,
        resolved_commit: Option<String>,
        compile_time_ms: Option<u64>,
    },
    Compiling {
        compile_job: String,
        message: String,
    },
    Failed {
        compile_job: String,
        message: String,
    },
    /// Not in the cache, and too little time is left to compile it: nothing was started.
    TooLate { compile_job: String },
}

/// Waits for a watch event, or for the yield deadline of an on-chain request (`time_left`), whichever
/// comes first; the reconcile at the deadline expires the request.
fn wait_until_deadline(ctx: &Context, time_left: Option<Duration>) -> Action {
    match time_left {
        Some(left) => Action::requeue(
            left.saturating_sub(ctx.config.on_chain.report_margin)
                .max(Duration::from_millis(100)),
        ),
        None => Action::await_change(),
    }
}

pub(super) fn now() -> Time {
    Time(Timestamp::now())
}

impl Phase {
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed | Phase::Expired)
    }
}

impl ExecutionRequest {
    #[instrument(skip(self, ctx), fields(execution = %self.name_any()))]
    async fn reconcile(&self, ctx: &Context) -> Result<Action> {
        let status = self.status.clone().unwrap_or_default();
        if status.phase.is_some_and(Phase::is_terminal) {
            return self.after_finish(ctx, &status).await;
        }
        if status.phase == Some(Phase::Reporting) {
            return self.report(ctx, status).await;
        }
        let mut status = status;
        let generation = self.metadata.generation;
        // On-chain requests must finish inside the contract's yield window.
        let time_left = self.time_left(ctx).await?;
        if let Some(left) = time_left
            && left <= ctx.config.on_chain.report_margin
        {
            let message = format!(
                "the yield times out in {}s, too soon to finish and report",
                left.as_secs()
            );
            return self.expire(ctx, status, "YieldDeadline", message).await;
        }
        let may_compile = time_left.is_none_or(|left| {
            left >= ctx.config.on_chain.compile_budget
                + Duration::from_secs(self.spec.limits.max_execution_seconds)
                + ctx.config.on_chain.report_margin
        });
        let module = self.module(ctx, may_compile).await?;
        if status.cache_hit.is_none() {
            status.cache_hit = Some(matches!(module, Module::Ready { .. }));
        }
        match module {
            Module::TooLate { compile_job } => {
                let message = format!(
                    "module not in the cache and an uncached compile (budget {}s) cannot finish in the {}s left before the yield times out; precompile it with CompileJob {compile_job}",
                    ctx.config.on_chain.compile_budget.as_secs(),
                    time_left.unwrap_or_default().as_secs()
                );
                self.expire(ctx, status, "NoTimeToCompile", message).await
            }
            Module::Compiling {
                compile_job,
                message,
            } => {
                let first_time = status.phase != Some(Phase::Compiling);
                status.phase = Some(Phase::Compiling);
                status.compile_job = Some(compile_job.clone());
                status.message = Some(message.clone());
                set_condition(
                    &mut status.conditions,
                    CONDITION_COMPILED,
                    false,
                    "Compiling",
                    message,
                    generation,
                    now(),
                );
                self.apply_status(ctx, &status).await?;
                if first_time {
                    ctx.event(
                        self,
                        false,
                        "Compiling",
                        format!("waiting for CompileJob {compile_job}"),
                    )
                    .await;
                }
                // The CompileJob watch wakes this request when the build finishes; an on-chain request
                // also wakes at its deadline.
                Ok(wait_until_deadline(ctx, time_left))
            }
            Module::Failed {
                compile_job,
                message,
            } => {
                status.compile_job = Some(compile_job);
                set_condition(
                    &mut status.conditions,
                    CONDITION_COMPILED,
                    false,
                    "CompileFailed",
                    message.clone(),
                    generation,
                    now(),
                );
                self.finish(ctx, status, false, "CompileFailed", message)
                    .await
            }
            Module::Ready {
                sha256,
                compile_job,
                resolved_commit,
                compile_time_ms,
            } => {
                status.compile_job = compile_job;
                status.short_commit = resolved_commit
                    .as_ref()
                    .map(|c| c.chars().take(12).collect());
                status.resolved_commit = resolved_commit;
                status.compile_time_ms = compile_time_ms;
                status.wasm_sha256 = Some(sha256.clone());
                set_condition(
                    &mut status.conditions,
                    CONDITION_COMPILED,
                    true,
                    "ModuleReady",
                    format!("module {sha256} is in the cache"),
                    generation,
                    now(),
                );
                self.execute(ctx, status, &sha256, time_left).await
            }
        }
    }

    /// The module from `spec.code`: named by hash, or built by the CompileJob for its source.
    async fn module(&self, ctx: &Context, may_compile: bool) -> Result<Module> {
        if let Some(sha256) = &self.spec.code.wasm_sha256 {
            return Ok(Module::Ready {
                sha256: sha256.clone(),
                compile_job: None,
                resolved_commit: None,
                compile_time_ms: None,
            });
        }
        let Some(source) = &self.spec.code.source else {
            // The CRD's CEL rules make this unreachable through the API server.
            return Err(Error::InvalidSpec(
                "spec.code needs repo and commit, or wasmSha256".to_string(),
            ));
        };
        let name = source.compile_job_name();
        let namespace = self.namespace_or_err()?;
        let compile_jobs: Api<CompileJob> = Api::namespaced(ctx.client.clone(), &namespace);
        let first_look = self.status.as_ref().and_then(|s| s.phase).is_none();
        let compile_job = match compile_jobs
            .get_opt(&name)
            .await
            .map_err(Error::api("reading CompileJob", &name))?
        {
            Some(existing) => {
                let ready = condition_status(
                    &existing
                        .status
                        .as_ref()
                        .map(|s| s.conditions.clone())
                        .unwrap_or_default(),
                    CONDITION_READY,
                );
                if first_look && ready == Some(true) {
                    ctx.metrics.cache_hit();
                }
                existing
            }
            None if !may_compile => return Ok(Module::TooLate { compile_job: name }),
            None => {
                let wanted = CompileJob::new(
                    &name,
                    CompileJobSpec {
                        source: source.clone(),
                    },
                );
                match compile_jobs.create(&PostParams::default(), &wanted).await {
                    Ok(created) => {
                        ctx.metrics.cache_miss();
                        info!(compile_job = %name, "created CompileJob");
                        created
                    }
                    // Another request (or an earlier run of this one) created it first.
                    Err(kube::Error::Api(e)) if e.code == 409 => compile_jobs
                        .get(&name)
                        .await
                        .map_err(Error::api("reading CompileJob", &name))?,
                    Err(e) => return Err(Error::api("creating CompileJob", &name)(e)),
                }
            }
        };
        let status = compile_job.status.unwrap_or_default();
        let ready = status
            .conditions
            .iter()
            .find(|c| c.type_ == CONDITION_READY);
        Ok(
            match (ready.map(|c| c.status.as_str()), status.wasm_sha256) {
                (Some("True"), Some(sha256)) => Module::Ready {
                    sha256,
                    compile_job: Some(name),
                    resolved_commit: status.resolved_commit,
                    compile_time_ms: status.compile_time_ms,
                },
                (Some("False"), _) if ready.is_some_and(|c| c.reason.ends_with("Failed")) => {
                    Module::Failed {
                        message: format!(
                            "CompileJob {name} failed: {}",
                            ready.map(|c| c.message.as_str()).unwrap_or_default()
                        ),
                        compile_job: name,
                    }
                }
                _ => Module::Compiling {
                    message: format!(
                        "waiting for CompileJob {name} to build {}@{}",
                        source.repo, source.commit
                    ),
                    compile_job: name,
                },
            },
        )
    }

    /// Starts the executor pod, or records its outcome once it has one.
    async fn execute(
        &self,
        ctx: &Context,
        mut status: ExecutionRequestStatus,
        sha256: &str,
        time_left: Option<Duration>,
    ) -> Result<Action> {
        let name = self.name_any();
        let namespace = self.namespace_or_err()?;
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
        let retries = status.retries.unwrap_or(0);
        let pod_name = executor_pod_name_for(&name, retries);
        let generation = self.metadata.generation;
        let Some(pod) = pods
            .get_opt(&pod_name)
            .await
            .map_err(Error::api("reading pod", &pod_name))?
        else {
            let needed = Duration::from_secs(self.spec.limits.max_execution_seconds)
                + ctx.config.on_chain.report_margin;
            if let Some(left) = time_left
                && left < needed
            {
                let message = format!(
                    "the run may take up to {}s and the yield times out in {}s",
                    self.spec.limits.max_execution_seconds,
                    left.as_secs()
                );
                return self.expire(ctx, status, "NoTimeToExecute", message).await;
            }
            let env_secret = match self.prepare_secrets(ctx).await? {
                SecretsStep::Ready(name) => name,
                SecretsStep::Denied { reason, message } => {
                    warn!(reason, "the execution may not use its secrets");
                    return self.finish(ctx, status, false, reason, message).await;
                }
                SecretsStep::Waiting(message) => {
                    if status.message.as_deref() != Some(message.as_str()) {
                        status.message = Some(message);
                        self.apply_status(ctx, &status).await?;
                    }
                    return Ok(Action::requeue(SECRETS_RETRY));
                }
            };
            let built = executor_pod(self, sha256, retries, env_secret.as_deref(), &ctx.config)?;
            let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &namespace);
            create_if_absent(&config_maps, &built.input).await?;
            create_if_absent(&pods, &built.pod).await?;
            if let Some(compile_job) = &status.compile_job {
                mark_used(ctx, &namespace, compile_job).await;
            }
            status.phase = Some(Phase::Executing);
            status.pod_name = Some(pod_name.clone());
            status.message = Some(format!("running in pod {pod_name}"));
            set_condition(
                &mut status.conditions,
                CONDITION_EXECUTED,
                false,
                "Running",
                format!("executor pod {pod_name} started"),
                generation,
                now(),
            );
            self.apply_status(ctx, &status).await?;
            ctx.event(
                self,
                false,
                "ExecutorStarted",
                format!("pod {pod_name} runs module {sha256}"),
            )
            .await;
            return Ok(wait_until_deadline(ctx, time_left));
        };
        let Some(outcome) = read_executor_outcome(&pod) else {
            if status.phase != Some(Phase::Executing) {
                status.phase = Some(Phase::Executing);
                status.pod_name = Some(pod_name);
                self.apply_status(ctx, &status).await?;
            }
            // Pod status changes wake this request (the controller owns its pods).
            return Ok(wait_until_deadline(ctx, time_left));
        };
        match outcome {
            ExecutorOutcome::Finished(result) => {
                // The pod has ended: its secrets go now, not with the request.
                self.delete_env_secret(ctx).await?;
                self.record_result(ctx, status, result).await
            }
            ExecutorOutcome::PlatformFailure(reason)
                if retries < ctx.config.platform_retries
                    && time_left.is_none_or(|left| {
                        left >= Duration::from_secs(self.spec.limits.max_execution_seconds)
                            + ctx.config.on_chain.report_margin
                    }) =>
            {
                // Our fault, not the guest's: run it again in a fresh pod. The failed one stays
                // (until cleanup) for `kubectl describe`.
                warn!(pod = %pod_name, %reason, retries, "executor pod failed without a result; re-running");
                status.retries = Some(retries + 1);
                status.pod_name = Some(executor_pod_name_for(&name, retries + 1));
                status.message = Some(format!("re-running after a platform failure: {reason}"));
                self.apply_status(ctx, &status).await?;
                ctx.event(
                    self,
                    true,
                    "Retrying",
                    format!(
                        "executor pod {pod_name} ended without a result ({reason}); re-running"
                    ),
                )
                .await;
                Ok(Action::requeue(Duration::from_millis(100)))
            }
            ExecutorOutcome::PlatformFailure(reason) => {
                self.delete_env_secret(ctx).await?;
                set_condition(
                    &mut status.conditions,
                    CONDITION_EXECUTED,
                    false,
                    "ExecutorFailed",
                    reason.clone(),
                    generation,
                    now(),
                );
                self.finish(ctx, status, false, "ExecutorFailed", reason)
                    .await
            }
        }
    }

    async fn record_result(
        &self,
        ctx: &Context,
        mut status: ExecutionRequestStatus,
        result: ResultMessage,
    ) -> Result<Action> {
        let generation = self.metadata.generation;
        status.instructions = Some(result.instructions);
        status.time_ms = Some(result.time_ms);
        status.time = Some(format_duration_ms(result.time_ms));
        set_condition(
            &mut status.conditions,
            CONDITION_EXECUTED,
            true,
            "Executed",
            format!(
                "{} instructions in {}",
                result.instructions,
                format_duration_ms(result.time_ms)
            ),
            generation,
            now(),
        );
        if !result.ok {
            let reason = guest_failure_reason(result.error_kind.as_deref());
            let message = result
                .error
                .unwrap_or_else(|| "the guest failed without an error message".to_string());
            return self.finish(ctx, status, false, &reason, message).await;
        }
        status.output_encoding = Some(match result.output_encoding.as_str() {
            "json" => OutputEncoding::Json,
            "base64" => OutputEncoding::Base64,
            _ => OutputEncoding::Text,
        });
        let output = match (&result.output, &result.output_sha256) {
            (Some(inline), _) => decode_inline_output(inline.get())
                .map_err(|e| Error::InvalidResult(format!("output is not valid JSON text: {e}")))?,
            (None, Some(sha256)) => {
                status.output_sha256 = Some(sha256.clone());
                status.output_size = result.output_size;
                match self.read_large_output(ctx, sha256, status.output_encoding)? {
                    Some(output) => output,
                    None => {
                        let message = format!(
                            "succeeded; the output ({} bytes) is in the cache at {RESULTS_SUBDIR}/{sha256}",
                            result.output_size.unwrap_or(0)
                        );
                        return self.finish(ctx, status, true, "Succeeded", message).await;
                    }
                }
            }
            (None, None) => String::new(),
        };
        status.output_size = Some(output.len() as u64);
        status.output = Some(output);
        self.finish(
            ctx,
            status,
            true,
            "Succeeded",
            "the module ran to completion".to_string(),
        )
        .await
    }

    /// Reads `results/<sha256>` from the operator's cache mount and checks its hash; `None` when the
    /// operator has no mount or the output is larger than the status may hold.
    pub(super) fn read_large_output(
        &self,
        ctx: &Context,
        sha256: &str,
        encoding: Option<OutputEncoding>,
    ) -> Result<Option<String>> {
        let Some(mount) = &ctx.config.cache_mount_path else {
            return Ok(None);
        };
        if !is_sha256_hex(sha256) {
            return Err(Error::InvalidResult(format!(
                "outputSha256 {sha256:?} is not a sha256"
            )));
        }
        let path = mount.join(RESULTS_SUBDIR).join(sha256);
        let bytes = std::fs::read(&path)
            .map_err(|e| Error::InvalidResult(format!("reading {}: {e}", path.display())))?;
        let actual: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if actual != sha256 {
            return Err(Error::InvalidResult(format!(
                "{} has sha256 {actual}, the executor reported {sha256}",
                path.display()
            )));
        }
        if bytes.len() > ctx.config.max_status_output_bytes {
            return Ok(None);
        }
        Ok(Some(match encoding {
            Some(OutputEncoding::Base64) => {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD.encode(&bytes)
            }
            _ => String::from_utf8(bytes)
                .map_err(|_| Error::InvalidResult(format!("{} is not UTF-8", path.display())))?,
        }))
    }

    async fn finish(
        &self,
        ctx: &Context,
        mut status: ExecutionRequestStatus,
        success: bool,
        reason: &str,
        message: String,
    ) -> Result<Action> {
        if self.spec.on_chain.is_some() {
            return self
                .start_reporting(ctx, status, success, reason, message)
                .await;
        }
        status.phase = Some(if success {
            Phase::Succeeded
        } else {
            Phase::Failed
        });
        status.message = Some(message.clone());
        status.observed_generation = self.metadata.generation;
        set_condition(
            &mut status.conditions,
            CONDITION_SUCCEEDED,
            success,
            reason,
            message.clone(),
            self.metadata.generation,
            now(),
        );
        self.apply_status(ctx, &status).await?;
        info!(success, reason, "execution finished");
        let result = if success {
            ExecutionResult::Succeeded
        } else {
            ExecutionResult::Failed
        };
        self.record_metrics(ctx, &status, result, reason);
        ctx.event(self, !success, reason, message).await;
        self.after_finish(ctx, &status).await
    }

    pub(super) fn record_metrics(
        &self,
        ctx: &Context,
        status: &ExecutionRequestStatus,
        result: ExecutionResult,
        reason: &str,
    ) {
        ctx.metrics.execution_finished(result, reason);
        let compiled_at = status
            .conditions
            .iter()
            .find(|c| c.type_ == CONDITION_COMPILED && c.status == "True")
            .map(|c| c.last_transition_time.0);
        let created_at = self.metadata.creation_timestamp.as_ref().map(|t| t.0);
        let since =
            |from: Timestamp, to: Timestamp| Duration::try_from(to.duration_since(from)).ok();
        if let (Some(created), Some(compiled)) = (created_at, compiled_at)
            && let Some(wait) = since(created, compiled)
        {
            ctx.metrics
                .phase_duration(metrics::Phase::CompileWait, wait);
        }
        if let Some(compiled) = compiled_at
            && let Some(run) = since(compiled, Timestamp::now())
        {
            ctx.metrics.phase_duration(metrics::Phase::Execute, run);
        }
    }

    /// Cleans up after a finished execution: the pod and its input go at once on success and after the
    /// retention period on failure; the request itself goes after its TTL.
    pub(super) async fn after_finish(
        &self,
        ctx: &Context,
        status: &ExecutionRequestStatus,
    ) -> Result<Action> {
        let finished_at = status
            .conditions
            .iter()
            .find(|c| c.type_ == CONDITION_SUCCEEDED)
            .map(|c| c.last_transition_time.0)
            .unwrap_or_else(Timestamp::now);
        let age =
            Duration::try_from(Timestamp::now().duration_since(finished_at)).unwrap_or_default();
        let succeeded = condition_status(&status.conditions, CONDITION_SUCCEEDED) == Some(true);
        let pod_retention = if succeeded {
            Duration::ZERO
        } else {
            ctx.config.failed_pod_retention
        };
        if age >= ctx.config.execution_ttl {
            let namespace = self.namespace_or_err()?;
            let api: Api<ExecutionRequest> = Api::namespaced(ctx.client.clone(), &namespace);
            // Pods and inputs are owned by the request: garbage collection removes them with it.
            delete_if_present(&api, &self.name_any()).await?;
            return Ok(Action::await_change());
        }
        if age >= pod_retention {
            self.delete_children(ctx).await?;
            return Ok(Action::requeue(ctx.config.execution_ttl - age));
        }
        Ok(Action::requeue(pod_retention - age))
    }

    pub(super) async fn delete_children(&self, ctx: &Context) -> Result<()> {
        let namespace = self.namespace_or_err()?;
        let name = self.name_any();
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
        let retries = self.status.as_ref().and_then(|s| s.retries).unwrap_or(0);
        for attempt in 0..=retries {
            delete_if_present(&pods, &executor_pod_name_for(&name, attempt)).await?;
        }
        let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &namespace);
        delete_if_present(
            &config_maps,
            &crate::pods::executor::input_config_map_name(&name),
        )
        .await?;
        self.delete_env_secret(ctx).await
    }

    pub(super) async fn apply_status(
        &self,
        ctx: &Context,
        status: &ExecutionRequestStatus,
    ) -> Result<()> {
        super::apply_status(ctx, self, status).await
    }

    pub(super) fn namespace_or_err(&self) -> Result<String> {
        self.namespace()
            .ok_or(Error::MissingMetadata("metadata.namespace"))
    }
}

/// Records on the CompileJob that its module was just used, for LRU eviction. An annotation, not status:
/// the compile controller owns the status. Best effort: a failure only makes eviction order less exact.
async fn mark_used(ctx: &Context, namespace: &str, compile_job: &str) {
    let api: Api<CompileJob> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = serde_json::json!({
        "metadata": {"annotations": {LAST_USED_ANNOTATION: Timestamp::now().to_string()}}
    });
    if let Err(error) = api
        .patch(compile_job, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        warn!(compile_job, %error, "recording the module's last use failed");
    }
}

/// A stdout carried inline in the result message: text and base64 are JSON strings, json is the document.
fn decode_inline_output(raw: &str) -> Result<String, serde_json::Error> {
    if raw.starts_with('"') {
        serde_json::from_str::<String>(raw)
    } else {
        Ok(raw.to_string())
    }
}

/// The executor's `errorKind` (camelCase) as a condition reason (CamelCase), e.g. `timeLimit` → `TimeLimit`.
fn guest_failure_reason(kind: Option<&str>) -> String {
    match kind {
        Some(kind) if !kind.is_empty() && kind.chars().all(|c| c.is_ascii_alphanumeric()) => {
            let mut chars = kind.chars();
            chars
                .next()
                .map(|first| first.to_ascii_uppercase().to_string() + chars.as_str())
                .unwrap_or_default()
        }
        _ => "GuestFailed".to_string(),
    }
}

async fn create_if_absent<K>(api: &Api<K>, object: &K) -> Result<()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    match api.create(&PostParams::default(), object).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(Error::api("creating", &name)(e)),
    }
}

async fn delete_if_present<K>(api: &Api<K>, name: &str) -> Result<()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(Error::api("deleting", name)(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds_become_condition_reasons() {
        assert_eq!(guest_failure_reason(Some("timeLimit")), "TimeLimit");
        assert_eq!(guest_failure_reason(Some("exit")), "Exit");
        assert_eq!(guest_failure_reason(None), "GuestFailed");
        assert_eq!(guest_failure_reason(Some("bad kind!")), "GuestFailed");
    }

    #[test]
    fn inline_outputs_decode_by_their_json_form() {
        assert_eq!(decode_inline_output("\"a\\nb\"").unwrap(), "a\nb");
        assert_eq!(decode_inline_output("{\"n\":1}").unwrap(), "{\"n\":1}");
        assert!(decode_inline_output("\"unterminated").is_err());
    }
}
