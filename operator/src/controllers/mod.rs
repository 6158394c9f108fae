//! The control loops. Each `reconcile` is a small free function delegating to the resource's own method.

pub mod compile;
pub mod execution;
mod execution_steps;
mod onchain;
pub mod pricing;
mod secrets;

pub(crate) use execution_steps::RequestOnChain;
pub(crate) use onchain::compare_with_chain;

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{self, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use tracing::{info, warn};

use crate::Error;
use crate::context::{Context, FIELD_MANAGER};
use crate::crd::{CompileJob, ExecutionRequest, Phase, Pricing};

/// Runs the controllers in `namespace` until `shutdown` resolves; with a chain client also the
/// chain watcher (requests → ExecutionRequests) and the pricing sync.
pub async fn run(
    ctx: Arc<Context>,
    namespace: &str,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let executions: Api<ExecutionRequest> = Api::namespaced(ctx.client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let compile_jobs: Api<CompileJob> = Api::namespaced(ctx.client.clone(), namespace);
    let pod_selector = watcher::Config::default().labels(crate::pods::executor::EXECUTION_LABEL);

    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), namespace);
    let job_selector = watcher::Config::default().labels(crate::pods::compile::COMPILE_JOB_LABEL);
    let (stop_compile, compile_stopped) = tokio::sync::oneshot::channel::<()>();
    // One shutdown signal fans out to every loop.
    let (stop_all, stopped) = tokio::sync::watch::channel(false);
    let stopped_signal = |mut stopped: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopped.wait_for(|stop| *stop).await;
    };
    let chain_watcher = crate::chain_watcher::run(
        ctx.clone(),
        namespace.to_string(),
        stopped_signal(stopped.clone()),
    );
    let sealing_keys = crate::sealing::keeper::run(
        ctx.clone(),
        namespace.to_string(),
        stopped_signal(stopped.clone()),
    );
    let seed_key = crate::seed::run(
        ctx.clone(),
        namespace.to_string(),
        stopped_signal(stopped.clone()),
    );
    let warm_pool = {
        let pool = ctx.config.warm_pool.enabled().then(|| {
            let pool = crate::pool::WarmPool::new(
                ctx.client.clone(),
                namespace,
                ctx.config.clone(),
                ctx.metrics.clone(),
            );
            ctx.set_pool(pool.clone());
            pool
        });
        let stop = stopped_signal(stopped.clone());
        async move {
            if let Some(pool) = pool {
                pool.run(stop).await;
            }
        }
    };
    let pricing_controller = {
        let ctx = ctx.clone();
        let stop = stopped_signal(stopped.clone());
        async move {
            if ctx.chain.is_none() {
                return;
            }
            let pricings: Api<Pricing> = Api::all(ctx.client.clone());
            Controller::new(pricings, watcher::Config::default())
                .graceful_shutdown_on(stop)
                .run(pricing::reconcile, pricing::error_policy, ctx)
                .for_each(|result| async move {
                    if let Err(error) = result {
                        warn!(%error, "pricing reconcile failed");
                    }
                })
                .await;
        }
    };
    let concurrency =
        controller::Config::default().concurrency(ctx.config.max_concurrent_reconciles);
    let compile_controller = Controller::new(compile_jobs.clone(), watcher::Config::default())
        .with_config(concurrency.clone())
        .owns(jobs, job_selector)
        .graceful_shutdown_on(async move {
            let _ = compile_stopped.await;
        })
        .run(compile::reconcile, compile::error_policy, ctx.clone())
        .for_each(|result| async move {
            match result {
                Ok((object, _)) => info!(compile_job = %object.name, "reconciled"),
                Err(error) => warn!(%error, "reconcile failed"),
            }
        });

    // The reflector caches every ExecutionRequest (and pod) the operator sees: without their
    // managedFields, which the controllers never read and which are a large share of each object,
    // the cache of 10,000 requests is markedly smaller.
    let (store, writer) = reflector::store();
    let execution_stream = watcher(executions, watcher::Config::default())
        .default_backoff()
        .modify(drop_managed_fields)
        .reflect(writer)
        .applied_objects();
    // Executor pods are cached too: the reconcile a pod's ending triggers reads the ended pod from
    // here instead of asking the API server again (see `ExecutionRequest::pod` in execution.rs).
    let (pod_store, pod_writer) = reflector::store();
    ctx.set_executor_pods(pod_store);
    let pod_stream = watcher(pods, pod_selector)
        .default_backoff()
        .modify(drop_managed_fields)
        .reflect(pod_writer)
        .touched_objects();
    // CompileJobs too: a request finds a Ready module there instead of asking the API server at
    // every reconcile (see `ExecutionRequest::module` in execution.rs).
    let (compile_job_store, compile_job_writer) = reflector::store();
    ctx.set_compile_jobs(compile_job_store);
    let compile_job_stream = watcher(compile_jobs, watcher::Config::default())
        .default_backoff()
        .modify(drop_managed_fields)
        .reflect(compile_job_writer)
        .touched_objects();
    let controller =
        Controller::for_stream(execution_stream, store.clone()).with_config(concurrency);
    let (queued, metrics) = (store.clone(), ctx.metrics.clone());
    let execution_controller = controller
        .owns_stream(pod_stream)
        // A CompileJob is shared, not owned: wake every request waiting on it.
        .watches_stream(compile_job_stream, move |compile_job: CompileJob| {
            let name = compile_job.metadata.name.clone();
            store
                .state()
                .into_iter()
                .filter(|exr| {
                    exr.status.as_ref().and_then(|s| s.compile_job.as_ref()) == name.as_ref()
                })
                .map(|exr| ObjectRef::from_obj(exr.as_ref()))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(async move {
            shutdown.await;
            let _ = stop_compile.send(());
            let _ = stop_all.send(true);
        })
        .run(execution::reconcile, execution::error_policy, ctx)
        .for_each(move |result| {
            // Every reconcile may have moved a request into or out of the queue.
            metrics.set_queue_depth(queue_depth(queued.state().iter().map(Arc::as_ref)));
            async move {
                match result {
                    Ok((object, _)) => info!(execution = %object.name, "reconciled"),
                    Err(error) => warn!(%error, "reconcile failed"),
                }
            }
        });
    futures::join!(
        compile_controller,
        execution_controller,
        chain_watcher,
        pricing_controller,
        sealing_keys,
        seed_key,
        warm_pool
    );
}

/// ExecutionRequests accepted but not yet finished: what `outlayer_queue_depth` shows.
pub fn queue_depth<'a>(executions: impl IntoIterator<Item = &'a ExecutionRequest>) -> usize {
    executions
        .into_iter()
        .filter(|execution| {
            !execution
                .status
                .as_ref()
                .and_then(|status| status.phase)
                .is_some_and(Phase::is_terminal)
        })
        .count()
}

pub(crate) fn drop_managed_fields<K: kube::Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

/// Writes `status` whole with server-side apply under the operator's field manager, conditional on the
/// resourceVersion `object` was read at: a stale copy (a second trigger racing the first write) gets a 409,
/// [`Error::StaleObject`], instead of repeating a transition and its Event and metrics.
pub(crate) async fn apply_status<K>(
    ctx: &Context,
    object: &K,
    status: &impl serde::Serialize,
) -> crate::Result<()>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    apply_status_if(ctx, object, status, true).await
}

/// [`apply_status`]; `at_read_version`: only if the object is still the version that was read (every
/// transition). Without it, for the one writer that knows it holds the newest state: a reconcile that
/// itself wrote since its read (the signed resolve, just before sending).
pub(crate) async fn apply_status_if<K>(
    ctx: &Context,
    object: &K,
    status: &impl serde::Serialize,
    at_read_version: bool,
) -> crate::Result<()>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let meta = object.meta();
    let namespace = meta
        .namespace
        .clone()
        .ok_or(Error::MissingMetadata("metadata.namespace"))?;
    let name = meta
        .name
        .clone()
        .ok_or(Error::MissingMetadata("metadata.name"))?;
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &namespace);
    let mut patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    if at_read_version {
        patch["metadata"] = serde_json::json!({"resourceVersion": meta.resource_version});
    }
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match api
        .patch_status(&name, &params, &Patch::Apply(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Err(Error::StaleObject {
            kind: K::kind(&()).to_string(),
            name,
        }),
        Err(e) => Err(Error::api("writing status of", &name)(e)),
    }
}

/// How soon a reconcile that lost a race with its own earlier write runs again.
pub const STALE_RETRY: Duration = Duration::from_millis(200);

/// The most observations one reconcile makes before it must decide: each kind is made at most once,
/// so more means a decision function asks again for what it was given.
pub const MAX_LOOKS: usize = 16;

/// How long a failed reconcile waits before the next try.
pub const ERROR_BACKOFF: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{CodeRef, ExecutionRequestSpec, Limits, ResponseFormat};

    fn execution(phase: Option<Phase>) -> ExecutionRequest {
        let mut execution = ExecutionRequest::new(
            "req",
            ExecutionRequestSpec {
                code: CodeRef::from_repo("https://github.com/alice/echo", "main"),
                input: String::new(),
                limits: Limits {
                    max_instructions: 1,
                    max_memory_mb: 1,
                    max_execution_seconds: 1,
                },
                response_format: ResponseFormat::Text,
                secrets_ref: None,
                compile_only: false,
                deterministic: None,
                on_chain: None,
            },
        );
        execution.status = phase.map(|phase| crate::crd::ExecutionRequestStatus {
            phase: Some(phase),
            ..Default::default()
        });
        execution
    }

    #[test]
    fn the_queue_holds_what_is_not_finished() {
        let executions: Vec<_> = [
            None,
            Some(Phase::Pending),
            Some(Phase::Compiling),
            Some(Phase::Executing),
            Some(Phase::Reporting),
            Some(Phase::Succeeded),
            Some(Phase::Failed),
            Some(Phase::Expired),
        ]
        .into_iter()
        .map(execution)
        .collect();
        assert_eq!(queue_depth(&executions), 5);
        assert_eq!(queue_depth(&executions[5..]), 0);
        let metrics = crate::metrics::Metrics::new();
        metrics.set_queue_depth(queue_depth(&executions));
        assert!(metrics.encode().contains("outlayer_queue_depth 5"));
    }
}
