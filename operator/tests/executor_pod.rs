//! The executor pod the operator builds, run for real: admitted by Pod Security "restricted", scheduled
//! by kube-scheduler, run by the node agent with the real `outlayer-executor` binary on a module from the
//! cache volume, and read back from its termination message.

mod common;

use common::{EXECUTOR_IMAGE, NAMESPACE, OperatorEnv, wait_for};
use e2e_cluster::Cluster;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, PostParams};
use outlayer_operator::config::OperatorConfig;
use outlayer_operator::crd::{
    CodeRef, ExecutionRequest, ExecutionRequestSpec, Limits, ResponseFormat,
};
use outlayer_operator::pods::{ExecutorOutcome, executor_pod, read_executor_outcome};

async fn run(
    cluster: &Cluster,
    name: &str,
    module: &str,
    input: &str,
    limits: Limits,
) -> ExecutorOutcome {
    let executions: Api<ExecutionRequest> = Api::namespaced(cluster.client(), NAMESPACE);
    let request = ExecutionRequest::new(
        name,
        ExecutionRequestSpec {
            code: CodeRef {
                module_url: None,
                source: None,
                wasm_sha256: Some(module.to_string()),
            },
            input: input.to_string(),
            limits,
            response_format: ResponseFormat::Text,
            secrets_ref: None,
            compile_only: false,
            deterministic: None,
            on_chain: None,
        },
    );
    let request = executions
        .create(&PostParams::default(), &request)
        .await
        .unwrap();
    let config = OperatorConfig {
        executor_image: EXECUTOR_IMAGE.to_string(),
        ..OperatorConfig::default()
    };
    let built = executor_pod(&request, module, 0, None, None, &config).unwrap();
    Api::<ConfigMap>::namespaced(cluster.client(), NAMESPACE)
        .create(&PostParams::default(), &built.input)
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(cluster.client(), NAMESPACE);
    let pod_name = built.pod.metadata.name.clone().unwrap();
    pods.create(&PostParams::default(), &built.pod)
        .await
        .unwrap_or_else(|e| {
            panic!("Pod Security admission or validation rejected the executor pod: {e}")
        });
    wait_for(&format!("executor pod {pod_name} to finish"), || {
        let pods = pods.clone();
        let pod_name = pod_name.clone();
        async move { read_executor_outcome(&pods.get(&pod_name).await.ok()?) }
    })
    .await
}

#[tokio::test]
async fn executor_pods_run_modules_from_the_cache_under_restricted_pod_security() {
    let env = OperatorEnv::start().await;
    let cluster = &env.cluster;
    let echo = env.publish("example-echo");
    let sha_loop = env.publish("example-sha256-loop");

    let limits = Limits {
        max_instructions: 100_000_000,
        max_memory_mb: 32,
        max_execution_seconds: 10,
    };
    match run(
        cluster,
        "echo",
        &echo,
        "hello from the cluster",
        limits.clone(),
    )
    .await
    {
        ExecutorOutcome::Finished(result) => {
            assert!(result.ok, "echo failed: {:?}", result.error);
            assert_eq!(result.output.unwrap().get(), "\"hello from the cluster\"");
            assert!(result.instructions > 0);
        }
        ExecutorOutcome::PlatformFailure(reason) => panic!("echo: {reason}"),
    }

    // A guest over its instruction budget is the guest's failure, reported as a result.
    let tight = Limits {
        max_instructions: 10_000,
        ..limits
    };
    match run(cluster, "over-budget", &sha_loop, "1000000", tight).await {
        ExecutorOutcome::Finished(result) => {
            assert!(!result.ok);
            assert_eq!(
                result.error_kind.as_deref(),
                Some("instructionLimit"),
                "{:?}",
                result.error
            );
        }
        ExecutorOutcome::PlatformFailure(reason) => panic!("sha256-loop: {reason}"),
    }
}
