//! The execution controller: Pending → Compiling (a shared CompileJob) → Executing (an executor pod owned
//! by the request) → Succeeded | Failed (kubectl requests) or Reporting → Succeeded | Failed | Expired
//! (on-chain requests). The decisions are in `execution_steps.rs`, with the table of transitions; this
//! file does the I/O: it looks at what a step asks for and writes what a step decides. Every child has a
//! deterministic name and every create treats "already exists" as done, so a restart mid-flight finishes
//! the work without duplicates. Status is written whole with server-side apply.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};
use tracing::{debug, info, instrument, warn};

use super::execution_steps::{
    Cleanup, Effect, Finished, Look, ModuleObservation, Observed, Outcome, PodObservation,
    Rejection, Step, Then, cleanup_step, next_step, started_in_warm_pod,
};
use super::{ERROR_BACKOFF, MAX_LOOKS, STALE_RETRY};
use crate::context::{Context, Note};
use crate::crd::{
    CompileJob, CompileJobSpec, CompileState, ConditionType, ExecutionRequest,
    ExecutionRequestStatus, HasConditions, LAST_USED_ANNOTATION, MODULE_SHA256_LABEL,
    OutputEncoding, module_label_value,
};
use crate::metrics::{ControllerKind, ExecutionResult, TimedPhase};
use crate::pods::executor::{RESULTS_SUBDIR, is_sha256_hex};
use crate::pods::{
    ExecutorOutcome, controlled_by, executor_pod, executor_pod_name_for, read_executor_outcome,
};
use crate::{Error, Result};

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

impl ExecutionRequest {
    /// Asks [`next_step`] what to do, looks at what it needs until it decides, then writes the outcome.
    #[instrument(skip(self, ctx), fields(execution = %self.name_any()))]
    async fn reconcile(&self, ctx: &Context) -> Result<Action> {
        let mut observed = Observed::default();
        for _ in 0..MAX_LOOKS {
            match next_step(self, &observed, Timestamp::now(), &ctx.config) {
                Step::Look(look) => self.observe(ctx, look, &mut observed).await?,
                // A send wrote the signed resolve into the status since it was read: the outcome is
                // written over that, not refused as stale.
                Step::Write(outcome) => {
                    return self
                        .write_outcome(ctx, *outcome, observed.sent.is_none())
                        .await;
                }
                Step::Reject(Rejection::Spec(message)) => return Err(Error::InvalidSpec(message)),
                Step::Reject(Rejection::Result(message)) => {
                    return Err(Error::InvalidResult(message));
                }
            }
        }
        Err(Error::Undecided("ExecutionRequest"))
    }

    /// Fills in what `look` asks for.
    async fn observe(&self, ctx: &Context, look: Look, observed: &mut Observed) -> Result<()> {
        match look {
            Look::YieldWindow => {
                let (window, request) = self.yield_window(ctx).await?;
                observed.window = Some(window);
                if let Some((request, pricing)) = request {
                    observed.request = Some(request);
                    observed.pricing_at_request = pricing;
                }
            }
            Look::Module { may_compile } => {
                observed.module = Some(self.module(ctx, may_compile).await?);
            }
            Look::Pod => observed.pod = Some(self.pod(ctx).await?),
            Look::Secrets { sha256, reachable } => {
                observed.secrets = Some(self.prepare_secrets(ctx, &sha256, reachable).await?);
            }
            Look::Seed => {
                // The contract the chain client reads requests from: the one whose id the contract
                // itself uses in the seed message.
                let contract = ctx
                    .chain
                    .as_ref()
                    .map(|chain| chain.contract_id().to_string());
                observed.seed = Some(crate::seed::seed_step(
                    &self.spec,
                    ctx.seed_key().as_deref(),
                    contract.as_deref(),
                ));
            }
            Look::StoredOutput { sha256, encoding } => {
                observed.stored_output = Some(self.read_large_output(ctx, &sha256, encoding)?);
            }
            Look::ChainHead => observed.head = Some(self.chain_head(ctx).await?),
            Look::RequestOnChain => {
                let (request, pricing) = self.request_on_chain(ctx).await?;
                observed.request = Some(request);
                observed.pricing_at_request = pricing;
            }
            Look::Caps => {
                observed.caps = Some(ctx.max_limits().await.map_err(|source| Error::Chain {
                    what: "reading the contract's limit caps".to_string(),
                    source,
                })?);
            }
            Look::SignedResolve => {
                let signed = self.status.as_ref().and_then(|s| s.signed_resolve.as_ref());
                observed.signed = Some(match signed {
                    Some(signed) => self.signed_resolve_outcome(ctx, signed).await?,
                    None => None,
                });
            }
            Look::Send(response) => {
                let pricing = observed.pricing_at_request.take();
                observed.sent = Some(self.send(ctx, *response, pricing).await?);
            }
        }
        Ok(())
    }

    /// The one writer of a step: its effects, the status, the metrics, the Event, then what comes next.
    /// `at_read_version`: see [`super::apply_status_if`].
    async fn write_outcome(
        &self,
        ctx: &Context,
        mut outcome: Outcome,
        at_read_version: bool,
    ) -> Result<Action> {
        let mut warm_pod = None;
        for effect in &outcome.before {
            warm_pod = warm_pod.or(self.apply_effect(ctx, effect).await?);
        }
        if let Some(pod) = &warm_pod {
            started_in_warm_pod(&mut outcome, pod);
        }
        if let Some(status) = &outcome.status {
            super::apply_status_if(ctx, self, status, at_read_version).await?;
        }
        let status = outcome
            .status
            .as_ref()
            .or(self.status.as_ref())
            .cloned()
            .unwrap_or_default();
        if let Some(finished) = &outcome.finished {
            match finished.result {
                ExecutionResult::Expired => {
                    warn!(reason = %finished.reason, message = ?status.message, "execution expired");
                }
                result => info!(
                    result = result.as_str(),
                    reason = %finished.reason,
                    reported = finished.reported,
                    "execution finished"
                ),
            }
            self.record_metrics(ctx, &status, finished);
        }
        if let Some(note) = outcome.note {
            if let Note::Warning(reason, message) = &note
                && outcome.finished.is_none()
            {
                warn!(%reason, %message, "execution needs attention");
            }
            ctx.publish(self, note).await;
        }
        for effect in &outcome.after {
            self.apply_effect(ctx, effect).await?;
        }
        match outcome.then {
            Then::AwaitChange => Ok(Action::await_change()),
            Then::Requeue(after) => Ok(Action::requeue(after)),
            Then::Cleanup => self.clean_up(ctx, &status).await,
        }
    }

    /// Applies `effect`; `Some(pod)` when a warm pod took a start.
    async fn apply_effect(&self, ctx: &Context, effect: &Effect) -> Result<Option<String>> {
        let namespace = self.namespace_or_err()?;
        match effect {
            Effect::StartPod {
                sha256,
                attempt,
                env_secret,
                seed,
            } => {
                // The warm pool first when it runs; a cold pod when it has none to give.
                if let Some(pool) = ctx.pool()
                    && let Some(pod) = pool
                        .start(self, sha256, *attempt, env_secret.as_deref(), seed.as_ref())
                        .await?
                {
                    return Ok(Some(pod));
                }
                let built = executor_pod(
                    self,
                    sha256,
                    *attempt,
                    env_secret.as_deref(),
                    seed.as_ref(),
                    &ctx.config,
                )?;
                let uid = self.uid_or_err()?;
                let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &namespace);
                // The input is the one thing a squatter's ConfigMap could change: it must be ours and
                // say exactly what the spec says.
                create_owned(ctx, &config_maps, &built.input, &uid, |existing| {
                    existing.data == built.input.data
                        && existing.binary_data == built.input.binary_data
                })
                .await?;
                let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
                create_owned(ctx, &pods, &built.pod, &uid, |_| true).await?;
            }
            Effect::MarkUsed { compile_job } => {
                let recorded = ctx.compile_jobs().and_then(|store| {
                    store
                        .get(&ObjectRef::new(compile_job).within(&namespace))
                        .and_then(|job| job.annotations().get(LAST_USED_ANNOTATION).cloned())
                });
                if use_mark_is_due(recorded.as_deref(), Timestamp::now()) {
                    mark_used(ctx, &namespace, compile_job).await;
                }
            }
            Effect::RebuildModule {
                compile_job,
                sha256,
                token,
            } => {
                crate::cache::mark_module_damaged(
                    &ctx.client,
                    &namespace,
                    compile_job,
                    sha256,
                    token,
                )
                .await?;
            }
            Effect::DeleteEnvSecret => self.delete_env_secret(ctx).await?,
            Effect::DeleteChildren => self.delete_children(ctx).await?,
        }
        Ok(None)
    }

    /// The module from `spec.code`: named by hash, or built by the CompileJob for its source (created
    /// here when absent and `may_compile`).
    async fn module(&self, ctx: &Context, may_compile: bool) -> Result<ModuleObservation> {
        if let Some(sha256) = &self.spec.code.wasm_sha256 {
            return Ok(ModuleObservation::ByHash(sha256.clone()));
        }
        let Some(wanted) = self.spec.code.compile_job_spec() else {
            // The CRD's CEL rules make this unreachable through the API server.
            return Err(Error::InvalidSpec(
                "spec.code needs repo and commit, url and sha256, or wasmSha256".to_string(),
            ));
        };
        let name = wanted.compile_job_name();
        let namespace = self.namespace_or_err()?;
        let compile_jobs: Api<CompileJob> = Api::namespaced(ctx.client.clone(), &namespace);
        let first_look = self.status.as_ref().and_then(|s| s.phase).is_none();
        // A Ready module from the watch cache; else, for a module by URL, a Ready copy fetched
        // through any URL (cached by its hash: nothing is downloaded again).
        let cached = ctx.compile_jobs().and_then(|store| {
            let cached = store.state();
            ready_module_among(cached.iter().map(AsRef::as_ref), &namespace, &wanted).cloned()
        });
        let ready = match (cached, &wanted.module_url) {
            (Some(found), _) => Some(found),
            (None, Some(module_url)) => ready_by_hash(&compile_jobs, &module_url.sha256).await?,
            (None, None) => None,
        };
        if let Some(found) = ready {
            if first_look {
                ctx.metrics.cache_hit();
            }
            let found_name = found.name_any();
            debug!(compile_job = %found_name, "module is in the cache");
            return Ok(ModuleObservation::CompileJob {
                name: found_name,
                status: Box::new(found.status.unwrap_or_default()),
            });
        }
        let compile_job = match compile_jobs
            .get_opt(&name)
            .await
            .map_err(Error::api("reading CompileJob", &name))?
        {
            Some(existing) => {
                let ready = existing
                    .status
                    .as_ref()
                    .is_some_and(|s| s.condition(ConditionType::Ready) == Some(true));
                if first_look && ready {
                    ctx.metrics.cache_hit();
                }
                existing
            }
            None if !may_compile => return Ok(ModuleObservation::NotCompiled { name }),
            None => {
                let mut new = CompileJob::new(&name, wanted.clone());
                if let Some(module_url) = &wanted.module_url {
                    new.metadata.labels = Some(
                        [(
                            MODULE_SHA256_LABEL.to_string(),
                            module_label_value(&module_url.sha256),
                        )]
                        .into(),
                    );
                }
                match compile_jobs.create(&PostParams::default(), &new).await {
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
        // Found by name only: someone with `create compilejobs` may have planted another source there.
        if let Err(mismatch) = compile_job.serves(&wanted) {
            warn!(compile_job = %name, %mismatch, "CompileJob does not build the requested source");
            return Ok(ModuleObservation::Mismatch {
                name,
                message: mismatch.to_string(),
            });
        }
        let status = compile_job.status.unwrap_or_default();
        debug!(compile_job = %name, state = ?status.state(), "module");
        Ok(ModuleObservation::CompileJob {
            name,
            status: Box::new(status),
        })
    }

    /// The executor pod of the current attempt.
    async fn pod(&self, ctx: &Context) -> Result<PodObservation> {
        let namespace = self.namespace_or_err()?;
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
        let retries = self.status.as_ref().and_then(|s| s.retries).unwrap_or(0);
        if let Some(cached) = self.pod_in_cache(ctx, retries) {
            return Ok(cached);
        }
        let pod_name = executor_pod_name_for(&self.name_any(), retries);
        let cold = async {
            pods.get_opt(&pod_name)
                .await
                .map_err(Error::api("reading pod", &pod_name))
        };
        // A warm pod may have taken the attempt: both read at once (one round trip, not two).
        let warm = async {
            match ctx.pool() {
                Some(pool) => pool.execution_pod(self, retries).await,
                None => Ok(None),
            }
        };
        let (pod, warm) = tokio::join!(cold, warm);
        let pod = pod?;
        // No cold pod of this attempt: the warm pod's, if one took it.
        if pod.is_none()
            && let Some(warm) = warm?
        {
            return Ok(warm.map_or(PodObservation::Running, PodObservation::Ended));
        }
        Ok(match pod {
            None => PodObservation::Missing,
            // A pod under this attempt's name that is not this request's: never read, and the attempt
            // counts as lost (the next one has another name).
            Some(pod) if !controlled_by(&pod.metadata, &self.uid_or_err()?) => {
                ctx.metrics.untrusted_object("Pod");
                warn!(pod = %pod_name, "a pod under this execution's pod name is not owned by it; ignored");
                PodObservation::Ended(ExecutorOutcome::PlatformFailure(format!(
                    "pod {pod_name} is not this execution's (no controller reference to its uid); it was ignored"
                )))
            }
            Some(pod) => own_cold_pod_observation(&pod),
        })
    }

    /// The attempt's pod from the watch cache, when the cache shows enough to decide (see
    /// [`cached_pod_among`]); `None`: read it from the API server.
    fn pod_in_cache(&self, ctx: &Context, attempt: u32) -> Option<PodObservation> {
        let store = ctx.executor_pods()?;
        let uid = self.metadata.uid.as_deref()?;
        let namespace = self.metadata.namespace.as_deref()?;
        let cold_name = executor_pod_name_for(&self.name_any(), attempt);
        let cached = store.state();
        let (kind, observation) = cached_pod_among(
            cached
                .iter()
                .map(AsRef::as_ref)
                .filter(|pod| pod.metadata.namespace.as_deref() == Some(namespace)),
            &cold_name,
            uid,
            attempt,
            ctx.pool().is_some(),
        )?;
        if let (CachedPod::Warm, PodObservation::Ended(_), Some(pool)) =
            (&kind, &observation, ctx.pool())
        {
            pool.claimed_pod_ended();
        }
        Some(observation)
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
        let actual = hex::encode(Sha256::digest(&bytes));
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

    /// The metrics of a finished request: its result, how long it waited for the module, how long it
    /// ran and, for a reported one, how long the report took.
    fn record_metrics(&self, ctx: &Context, status: &ExecutionRequestStatus, finished: &Finished) {
        ctx.metrics
            .execution_finished(finished.result, finished.reason.as_str());
        let now = Timestamp::now();
        let since = |from: Timestamp| Duration::try_from(now.duration_since(from)).ok();
        let compiled_at = status
            .find_condition(ConditionType::Compiled)
            .filter(|c| c.status == "True")
            .map(|c| c.last_transition_time.0);
        let created_at = self.metadata.creation_timestamp.as_ref().map(|t| t.0);
        if let (Some(created), Some(compiled)) = (created_at, compiled_at)
            && let Ok(wait) = Duration::try_from(compiled.duration_since(created))
        {
            ctx.metrics.phase_duration(TimedPhase::CompileWait, wait);
        }
        if let Some(run) = compiled_at.and_then(since) {
            ctx.metrics.phase_duration(TimedPhase::Execute, run);
        }
        if finished.reported
            && let Some(took) = status
                .find_condition(ConditionType::Executed)
                .and_then(|executed| since(executed.last_transition_time.0))
        {
            ctx.metrics.phase_duration(TimedPhase::Report, took);
        }
    }

    /// Cleans up after a finished execution (see [`cleanup_step`]).
    async fn clean_up(&self, ctx: &Context, status: &ExecutionRequestStatus) -> Result<Action> {
        match cleanup_step(status, Timestamp::now(), &ctx.config) {
            Cleanup::DeleteRequest => {
                let namespace = self.namespace_or_err()?;
                let api: Api<ExecutionRequest> = Api::namespaced(ctx.client.clone(), &namespace);
                // Pods and inputs are owned by the request: garbage collection removes them with it.
                delete_if_present(&api, &self.name_any()).await?;
                ctx.children_deleted().remove(&self.uid_or_err()?);
                Ok(Action::await_change())
            }
            Cleanup::DeleteChildren { then } => {
                self.delete_children(ctx).await?;
                Ok(Action::requeue(then))
            }
            Cleanup::Wait(then) => Ok(Action::requeue(then)),
        }
    }

    /// Deletes what a finished request started: its pods, its input, its unsealed secrets (once per
    /// request and replica: see `Context::children_deleted`).
    async fn delete_children(&self, ctx: &Context) -> Result<()> {
        let namespace = self.namespace_or_err()?;
        let name = self.name_any();
        let uid = self.uid_or_err()?;
        if ctx.children_deleted().contains(&uid) {
            return Ok(());
        }
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
        let retries = self.status.as_ref().and_then(|s| s.retries).unwrap_or(0);
        for attempt in 0..=retries {
            delete_owned(&pods, &executor_pod_name_for(&name, attempt), &uid).await?;
        }
        if let Some(pool) = ctx.pool() {
            pool.delete_execution_pods(self).await?;
        }
        let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &namespace);
        delete_owned(
            &config_maps,
            &crate::pods::executor::input_config_map_name(&name),
            &uid,
        )
        .await?;
        self.delete_env_secret(ctx).await?;
        ctx.children_deleted().insert(&uid);
        Ok(())
    }

    pub(super) fn uid_or_err(&self) -> Result<String> {
        self.metadata
            .uid
            .clone()
            .ok_or(Error::MissingMetadata("metadata.uid"))
    }

    pub(super) fn namespace_or_err(&self) -> Result<String> {
        self.namespace()
            .ok_or(Error::MissingMetadata("metadata.namespace"))
    }
}

/// The executor container's termination message, shortened for a status message.
fn termination_message(pod: &Pod) -> String {
    let message = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default()
        .iter()
        .filter_map(|c| c.state.as_ref()?.terminated.as_ref()?.message.clone())
        .next()
        .unwrap_or_default();
    message.trim().chars().take(200).collect()
}

/// How fine the last-use mark is. Eviction ranks modules by it and never evicts one an unfinished
/// request needs, so a minute is exact enough; marking every run would write the CompileJob, and
/// wake every request that watches it, once per request.
const LAST_USED_GRANULARITY: Duration = Duration::from_secs(60);

/// Whether a run should write its module's last use, given the mark the CompileJob holds
/// (`recorded`, as the cache shows it): when there is none, it is unreadable, or it is a
/// [`LAST_USED_GRANULARITY`] or more away from `now` (either way: a clock set wrong is corrected).
fn use_mark_is_due(recorded: Option<&str>, now: Timestamp) -> bool {
    let Some(recorded) = recorded.and_then(|r| r.parse::<Timestamp>().ok()) else {
        return true;
    };
    let apart = now.duration_since(recorded).unsigned_abs();
    apart >= LAST_USED_GRANULARITY
}

/// A Ready CompileJob in the watch cache (`cached`) that serves `wanted` in `namespace`: for a module
/// by URL any one holding its hash ([`serves_hash`]), else the one under the source's name with
/// exactly that spec. A Ready module is as good read late as read now (a rebuild this request
/// awaits is matched by its token, and the executor checks the module's hash before it runs);
/// anything else (absent, building, failed) is read from the API server, which decides creation.
fn ready_module_among<'a>(
    cached: impl IntoIterator<Item = &'a CompileJob>,
    namespace: &str,
    wanted: &CompileJobSpec,
) -> Option<&'a CompileJob> {
    let name = wanted.compile_job_name();
    cached.into_iter().find(|job| {
        job.metadata.namespace.as_deref() == Some(namespace)
            && match &wanted.module_url {
                Some(module_url) => serves_hash(job, &module_url.sha256),
                None => {
                    job.metadata.name.as_deref() == Some(name.as_str())
                        && job.serves(wanted).is_ok()
                        && job.status.as_ref().is_some_and(|status| {
                            matches!(status.state(), CompileState::Ready { .. })
                        })
                }
            }
    })
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

/// Creates `object` unless it exists. An existing one (made before a restart, or by an earlier pass)
/// is used only when it is controlled by `owner_uid` and `same` accepts it; anything else under the
/// name is someone else's: counted, and an error that names it (the execution cannot go on under
/// that name).
async fn create_owned<K>(
    ctx: &Context,
    api: &Api<K>,
    object: &K,
    owner_uid: &str,
    same: impl Fn(&K) -> bool,
) -> Result<()>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + serde::Serialize
        + std::fmt::Debug,
{
    let name = object.meta().name.clone().unwrap_or_default();
    match api.create(&PostParams::default(), object).await {
        Ok(_) => return Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => return Err(Error::api("creating", &name)(e)),
    }
    let existing = api.get(&name).await.map_err(Error::api("reading", &name))?;
    if controlled_by(existing.meta(), owner_uid) && same(&existing) {
        return Ok(());
    }
    let kind = K::kind(&()).to_string();
    ctx.metrics.untrusted_object(leak_kind(&kind));
    Err(Error::Untrusted {
        kind: leak_kind(&kind),
        name,
        why: "it exists without a controller reference to this execution, or with other contents; it is not used".to_string(),
    })
}

/// The kinds `create_owned` and `delete_owned` handle, as static labels for the metric.
fn leak_kind(kind: &str) -> &'static str {
    match kind {
        "Pod" => "Pod",
        "ConfigMap" => "ConfigMap",
        "Secret" => "Secret",
        _ => "Other",
    }
}

/// Deletes `name` if it is controlled by `owner_uid` (and only that very object: a uid precondition);
/// someone else's object under the name is left alone.
pub(super) async fn delete_owned<K>(api: &Api<K>, name: &str, owner_uid: &str) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let Some(existing) = api
        .get_metadata_opt(name)
        .await
        .map_err(Error::api("reading", name))?
    else {
        return Ok(());
    };
    if !controlled_by(&existing.metadata, owner_uid) {
        debug!(name, "not deleting an object this execution does not own");
        return Ok(());
    }
    let params = DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: existing.metadata.uid.clone(),
            resource_version: None,
        }),
        ..DeleteParams::background()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(Error::api("deleting", name)(e)),
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

/// A Ready CompileJob that holds the module `sha256` downloaded by URL (found by its label, trusted
/// only when its name is its spec's hash, its spec asks for `sha256` and its status holds it; the
/// executor checks the file's hash again before it runs anything).
async fn ready_by_hash(compile_jobs: &Api<CompileJob>, sha256: &str) -> Result<Option<CompileJob>> {
    let listed = compile_jobs
        .list(&ListParams::default().labels(&format!(
            "{MODULE_SHA256_LABEL}={}",
            module_label_value(sha256)
        )))
        .await
        .map_err(Error::api("listing CompileJobs of module", sha256))?;
    Ok(listed
        .items
        .into_iter()
        .find(|job| serves_hash(job, sha256)))
}

/// Whether `job` is a URL CompileJob for `sha256` that holds that very module.
pub(crate) fn serves_hash(job: &CompileJob, sha256: &str) -> bool {
    job.check_name().is_ok()
        && job
            .spec
            .module_url
            .as_ref()
            .is_some_and(|u| u.sha256 == sha256)
        && job.status.as_ref().is_some_and(|status| {
            status.state()
                == CompileState::Ready {
                    wasm_sha256: sha256.to_string(),
                }
        })
}

/// What a cold pod this execution controls says: ended because its cached module is damaged, ended
/// with the executor's outcome, or still running. Read from the API server or the watch cache alike.
fn own_cold_pod_observation(pod: &Pod) -> PodObservation {
    if crate::cache::damaged_module(pod) {
        return PodObservation::DamagedModule(termination_message(pod));
    }
    match read_executor_outcome(pod) {
        None => PodObservation::Running,
        Some(ended) => PodObservation::Ended(ended),
    }
}

/// Which kind of pod [`cached_pod_among`] found.
#[derive(Debug, PartialEq, Eq)]
enum CachedPod {
    Cold,
    Warm,
}

/// The attempt's pod among `cached` (the executor pods of the request's namespace in the watch
/// cache), when the cache shows enough to decide: the cold pod `cold_name` when this execution
/// (`uid`) controls it, ended or not; else, with a warm pool, the warm pod it claimed for `attempt`
/// once the cache shows its handoff done (ended, or running its assignment). A pod the cache shows
/// is a pod that exists or existed: if it has ended since, its ending is an event that brings the
/// next reconcile, and one that ended never runs again. Anything else is `None` and read from the
/// API server: a cache that lags could show an existing pod as missing (a second pod would start),
/// a pod under our name that is not ours (the API path says so), or a claim whose handoff has in
/// fact completed as abandoned (a running pod would be deleted).
fn cached_pod_among<'a>(
    cached: impl IntoIterator<Item = &'a Pod>,
    cold_name: &str,
    uid: &str,
    attempt: u32,
    warm_pool: bool,
) -> Option<(CachedPod, PodObservation)> {
    let cached: Vec<&Pod> = cached.into_iter().collect();
    if let Some(pod) = cached
        .iter()
        .find(|pod| pod.metadata.name.as_deref() == Some(cold_name))
    {
        if !controlled_by(&pod.metadata, uid) {
            return None;
        }
        return Some((CachedPod::Cold, own_cold_pod_observation(pod)));
    }
    if !warm_pool {
        return None;
    }
    let warm = cached
        .into_iter()
        .find(|pod| crate::pool::plan::owned_by_execution(pod, uid, attempt))?;
    match crate::pool::plan::claimed_pod(warm) {
        crate::pool::plan::ClaimedPod::Ended(ended) => {
            Some((CachedPod::Warm, PodObservation::Ended(ended)))
        }
        crate::pool::plan::ClaimedPod::Running => Some((CachedPod::Warm, PodObservation::Running)),
        crate::pool::plan::ClaimedPod::Abandoned => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{CompileJobSpec, CompileJobStatus, ModuleUrl, Reason, set_condition};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn url_job(sha256: &str, holds: Option<&str>) -> CompileJob {
        let module_url = ModuleUrl {
            url: "https://modules.example/m.wasm".to_string(),
            sha256: sha256.to_string(),
        };
        let mut job = CompileJob::new(
            &module_url.compile_job_name(),
            CompileJobSpec::url(module_url),
        );
        job.status = holds.map(ready_status);
        job
    }

    /// The status of a CompileJob whose module `sha256` is Ready.
    fn ready_status(sha256: &str) -> CompileJobStatus {
        let mut status = CompileJobStatus {
            wasm_sha256: Some(sha256.to_string()),
            ..CompileJobStatus::default()
        };
        set_condition(
            &mut status.conditions,
            "Ready",
            true,
            Reason::ModuleReady.as_str(),
            "ready",
            None,
            Time(Timestamp::UNIX_EPOCH),
        );
        status
    }

    /// The spec of a build of `commit` of one test repository.
    fn git_spec(commit: &str) -> CompileJobSpec {
        CompileJobSpec::git(crate::crd::CompileSource {
            repo: "https://github.com/a/b".to_string(),
            commit: commit.to_string(),
            build_target: crate::crd::BUILD_TARGET_WASIP1.to_string(),
        })
    }

    /// An executor pod named `name`, controlled by `owner_uid`; `claimed` adds the labels of a warm
    /// pod claimed for attempt 0; `ended` makes its executor exit with code 1.
    fn executor(name: &str, owner_uid: &str, claimed: bool, ended: bool) -> Pod {
        use crate::pods::executor::{ATTEMPT_LABEL, WARM_CLAIMED, WARM_STATE_LABEL};
        use k8s_openapi::api::core::v1::{
            Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
            ContainerStatus, PodSpec, PodStatus,
        };
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
        let mut pod = Pod::default();
        pod.metadata.name = Some(name.to_string());
        pod.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "outlayer.dev/v1alpha1".to_string(),
            kind: "ExecutionRequest".to_string(),
            name: "req".to_string(),
            uid: owner_uid.to_string(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]);
        if claimed {
            pod.metadata.labels = Some(
                [
                    (ATTEMPT_LABEL.to_string(), "0".to_string()),
                    (WARM_STATE_LABEL.to_string(), WARM_CLAIMED.to_string()),
                ]
                .into(),
            );
        }
        pod.spec = Some(PodSpec {
            containers: vec![Container {
                name: crate::pods::executor::EXECUTOR_CONTAINER.to_string(),
                ..Container::default()
            }],
            ..PodSpec::default()
        });
        let state = if ended {
            ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: 1,
                    ..ContainerStateTerminated::default()
                }),
                ..ContainerState::default()
            }
        } else {
            ContainerState {
                running: Some(ContainerStateRunning::default()),
                ..ContainerState::default()
            }
        };
        pod.status = Some(PodStatus {
            phase: Some(if ended { "Failed" } else { "Running" }.to_string()),
            container_statuses: Some(vec![ContainerStatus {
                name: crate::pods::executor::EXECUTOR_CONTAINER.to_string(),
                state: Some(state),
                ..ContainerStatus::default()
            }]),
            ..PodStatus::default()
        });
        pod
    }

    /// `pod` with the annotation of a completed handoff.
    fn handed_off(mut pod: Pod) -> Pod {
        pod.metadata.annotations = Some(
            [(
                crate::pods::executor::HANDOFF_ANNOTATION.to_string(),
                "done".to_string(),
            )]
            .into(),
        );
        pod
    }

    #[test]
    fn a_pod_of_this_attempt_is_taken_from_the_watch_cache_when_it_decides() {
        let describe = |found: Option<(CachedPod, PodObservation)>| match found {
            None => "ask the API server".to_string(),
            Some((kind, PodObservation::Ended(_))) => format!("{kind:?} ended"),
            Some((kind, other)) => format!("{kind:?} {other:?}"),
        };
        let rows: [(&str, Vec<Pod>, bool, &str); 10] = [
            ("nothing cached", vec![], true, "ask the API server"),
            (
                "our cold pod ended",
                vec![executor("req-run", "uid", false, true)],
                true,
                "Cold ended",
            ),
            (
                "our cold pod still runs",
                vec![executor("req-run", "uid", false, false)],
                true,
                "Cold Running",
            ),
            (
                "a cold pod under our name that another object controls",
                vec![executor("req-run", "other", false, true)],
                true,
                "ask the API server",
            ),
            (
                "our claimed warm pod ended",
                vec![executor("outlayer-warm-64-a", "uid", true, true)],
                true,
                "Warm ended",
            ),
            (
                "our claimed warm pod, no warm pool in this operator",
                vec![executor("outlayer-warm-64-a", "uid", true, true)],
                false,
                "ask the API server",
            ),
            (
                "our claimed warm pod, its handoff not done as the cache shows it",
                vec![executor("outlayer-warm-64-a", "uid", true, false)],
                true,
                "ask the API server",
            ),
            (
                "our claimed warm pod runs its assignment",
                vec![handed_off(executor(
                    "outlayer-warm-64-a",
                    "uid",
                    true,
                    false,
                ))],
                true,
                "Warm Running",
            ),
            (
                "a running warm pod another execution claimed",
                vec![handed_off(executor(
                    "outlayer-warm-64-a",
                    "other",
                    true,
                    false,
                ))],
                true,
                "ask the API server",
            ),
            (
                "an ended warm pod another execution claimed",
                vec![executor("outlayer-warm-64-a", "other", true, true)],
                true,
                "ask the API server",
            ),
        ];
        for (what, cached, warm_pool, expected) in rows {
            let found = cached_pod_among(cached.iter(), "req-run", "uid", 0, warm_pool);
            assert_eq!(describe(found), expected, "{what}");
        }
    }

    #[test]
    fn a_run_marks_its_module_used_at_most_once_a_minute() {
        let now: Timestamp = "2026-12-06T15:00:00Z".parse().unwrap();
        let rows = [
            ("never marked", None, true),
            ("an unreadable mark", Some("yesterday"), true),
            ("marked a second ago", Some("2026-12-06T14:59:59Z"), false),
            ("marked 59 s ago", Some("2026-12-06T14:59:01Z"), false),
            ("marked a minute ago", Some("2026-12-06T14:59:00Z"), true),
            ("marked an hour ago", Some("2026-12-06T14:00:00Z"), true),
            (
                "marked 30 s ahead (clocks apart)",
                Some("2026-12-06T15:00:30Z"),
                false,
            ),
            ("marked a day ahead", Some("2026-12-07T15:00:00Z"), true),
        ];
        for (what, recorded, due) in rows {
            assert_eq!(use_mark_is_due(recorded, now), due, "{what}");
        }
    }

    #[test]
    fn only_a_ready_compile_job_for_the_very_source_is_taken_from_the_watch_cache() {
        let git_job = |spec: CompileJobSpec, name: Option<&str>, ready: bool| {
            let name = name.map_or_else(|| spec.compile_job_name(), str::to_string);
            let mut job = CompileJob::new(&name, spec);
            job.metadata.namespace = Some("ns".to_string());
            job.status = ready.then(|| ready_status(&"ab".repeat(32)));
            job
        };
        let in_namespace = |mut job: CompileJob, namespace: &str| {
            job.metadata.namespace = Some(namespace.to_string());
            job
        };
        let sha = "ab".repeat(32);
        let url_spec = url_job(&sha, None).spec;
        let wanted = git_spec("abc");
        let rows = [
            ("nothing cached", wanted.clone(), vec![], false),
            (
                "ready, under its name, its spec",
                wanted.clone(),
                vec![git_job(wanted.clone(), None, true)],
                true,
            ),
            (
                "still building",
                wanted.clone(),
                vec![git_job(wanted.clone(), None, false)],
                false,
            ),
            (
                "ready, in another namespace",
                wanted.clone(),
                vec![in_namespace(git_job(wanted.clone(), None, true), "other")],
                false,
            ),
            (
                "ready under our name, another commit planted",
                wanted.clone(),
                vec![git_job(
                    git_spec("evil"),
                    Some(&wanted.compile_job_name()),
                    true,
                )],
                false,
            ),
            (
                "ready, another source only",
                wanted.clone(),
                vec![git_job(git_spec("def"), None, true)],
                false,
            ),
            (
                "a URL module ready under any URL",
                url_spec.clone(),
                vec![in_namespace(url_job(&sha, Some(&sha)), "ns")],
                true,
            ),
            (
                "a URL module not ready",
                url_spec.clone(),
                vec![in_namespace(url_job(&sha, None), "ns")],
                false,
            ),
        ];
        for (what, wanted, cached, found) in rows {
            assert_eq!(
                ready_module_among(cached.iter(), "ns", &wanted).is_some(),
                found,
                "{what}"
            );
        }
    }

    #[test]
    fn a_module_by_url_is_taken_from_the_cache_only_when_name_spec_and_status_agree() {
        let sha = "ab".repeat(32);
        let other = "cd".repeat(32);
        let misnamed = {
            let mut job = url_job(&sha, Some(&sha));
            job.metadata.name = Some("cj-planted".to_string());
            job
        };
        let git = CompileJob::new("cj-git", git_spec("main"));
        let rows = [
            ("ready with the module", url_job(&sha, Some(&sha)), true),
            ("not ready yet", url_job(&sha, None), false),
            (
                "a status holding another module",
                url_job(&sha, Some(&other)),
                false,
            ),
            (
                "a spec for another hash",
                url_job(&other, Some(&sha)),
                false,
            ),
            ("a name that is not its spec's", misnamed, false),
            ("a git CompileJob", git, false),
        ];
        for (what, job, expected) in rows {
            assert_eq!(serves_hash(&job, &sha), expected, "{what}");
        }
    }
}
