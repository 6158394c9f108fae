//! The execution controller against the real control plane: requests run to a result in status, guest
//! failures are reported as such, children are cleaned up, and repo-based requests create a shared
//! CompileJob and wait on it.

mod common;

use common::{NAMESPACE, OperatorEnv, condition, start_operator, test_context, wait_for};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Pod};
use kube::api::{Api, ListParams, PostParams};
use outlayer_operator::config::OperatorConfig;
use outlayer_operator::crd::{
    CodeRef, CompileJob, ExecutionRequest, ExecutionRequestSpec, ExecutionRequestStatus, Limits,
    Phase, ResponseFormat, condition_status,
};

fn request(name: &str, code: CodeRef, input: &str, max_instructions: u64) -> ExecutionRequest {
    ExecutionRequest::new(
        name,
        ExecutionRequestSpec {
            code,
            input: input.to_string(),
            limits: Limits {
                max_instructions,
                max_memory_mb: 32,
                max_execution_seconds: 10,
            },
            response_format: ResponseFormat::Text,
            secrets_ref: None,
            compile_only: false,
            deterministic: None,
            on_chain: None,
        },
    )
}

fn by_module(sha256: &str) -> CodeRef {
    CodeRef {
        module_url: None,
        source: None,
        wasm_sha256: Some(sha256.to_string()),
    }
}

async fn status_when<F>(
    api: &Api<ExecutionRequest>,
    name: &str,
    what: &str,
    done: F,
) -> ExecutionRequestStatus
where
    F: Fn(&ExecutionRequestStatus) -> bool,
{
    wait_for(&format!("{name}: {what}"), || async {
        let status = api.get(name).await.ok()?.status?;
        done(&status).then_some(status)
    })
    .await
}

#[tokio::test]
async fn execution_requests_run_to_a_result_in_status() {
    let env = OperatorEnv::start().await;
    let echo = env.publish("example-echo");
    let sha_loop = env.publish("example-sha256-loop");
    let client = env.cluster.client();
    let config = OperatorConfig {
        executor_image: common::EXECUTOR_IMAGE.to_string(),
        // Outputs too large for the termination message are read from the cache volume.
        cache_mount_path: Some(env.cache.path().to_path_buf()),
        ..OperatorConfig::default()
    };
    let ctx = test_context(client.clone(), config);
    let metrics = ctx.metrics.clone();
    let operator = start_operator(ctx);

    let executions: Api<ExecutionRequest> = Api::namespaced(client.clone(), NAMESPACE);
    let post = PostParams::default();
    executions
        .create(
            &post,
            &request("echo", by_module(&echo), "hello, operator", 100_000_000),
        )
        .await
        .unwrap();
    executions
        .create(
            &post,
            &request("over-budget", by_module(&sha_loop), "1000000", 10_000),
        )
        .await
        .unwrap();
    // A guest with fuel to spare but a one-second wall clock is stopped by the time limit.
    let mut slow = request(
        "slow",
        by_module(&sha_loop),
        "100000000000",
        1_000_000_000_000,
    );
    slow.spec.limits.max_execution_seconds = 1;
    executions.create(&post, &slow).await.unwrap();
    // Accepted, unfinished requests are the queue: the gauge counts them while they run.
    let queue_depth = || {
        metrics
            .encode()
            .lines()
            .find_map(|l| l.strip_prefix("outlayer_queue_depth ")?.parse::<u64>().ok())
    };
    wait_for(
        "the queue-depth gauge to count the running requests",
        || async { queue_depth().filter(|depth| *depth > 0) },
    )
    .await;

    let done = |s: &ExecutionRequestStatus| s.phase.is_some_and(|p| p.is_terminal());
    let echoed = status_when(&executions, "echo", "finished", done).await;
    assert_eq!(echoed.phase, Some(Phase::Succeeded), "{:?}", echoed.message);
    assert_eq!(echoed.output.as_deref(), Some("hello, operator"));
    assert_eq!(echoed.wasm_sha256.as_deref(), Some(echo.as_str()));
    assert!(echoed.instructions.unwrap_or(0) > 0);
    assert!(echoed.time.is_some());
    for condition in ["Compiled", "Executed", "Succeeded"] {
        assert_eq!(
            condition_status(&echoed.conditions, condition),
            Some(true),
            "{condition}"
        );
    }

    // 20 KB of output does not fit the 4 KiB result message: it comes back through the cache volume.
    let large_input = "0123456789".repeat(2_000);
    executions
        .create(
            &post,
            &request("large", by_module(&echo), &large_input, 100_000_000),
        )
        .await
        .unwrap();
    let large = status_when(&executions, "large", "finished", done).await;
    assert_eq!(large.phase, Some(Phase::Succeeded), "{:?}", large.message);
    assert_eq!(large.output.as_deref(), Some(large_input.as_str()));
    assert_eq!(large.output_size, Some(20_000));
    assert!(large.output_sha256.is_some());

    let failed = status_when(&executions, "over-budget", "finished", done).await;
    assert_eq!(failed.phase, Some(Phase::Failed));
    let succeeded = condition(&failed, "Succeeded");
    assert_eq!(
        succeeded.reason, "InstructionLimit",
        "{}",
        succeeded.message
    );
    assert_eq!(condition_status(&failed.conditions, "Executed"), Some(true));

    let slow = status_when(&executions, "slow", "finished", done).await;
    assert_eq!(slow.phase, Some(Phase::Failed));
    let succeeded = condition(&slow, "Succeeded");
    assert_eq!(succeeded.reason, "TimeLimit", "{}", succeeded.message);
    assert!(
        succeeded.message.contains("time limit exceeded"),
        "{}",
        succeeded.message
    );

    // `kubectl get exr` shows the printer columns; `-o wide` adds the module and the pod.
    let kubectl = |args: &[&str]| {
        let output = std::process::Command::new(env.cluster.kubectl().expect("local kubectl"))
            .arg("--kubeconfig")
            .arg(env.cluster.kubeconfig_path())
            .args(["-n", NAMESPACE])
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    };
    let table = kubectl(&["get", "exr", "echo"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "SUCCEEDED",
            "PHASE",
            "REPO",
            "COMMIT",
            "INSTRUCTIONS",
            "TIME",
            "COST",
            "REASON",
            "AGE"
        ]
    );
    // Requests by module hash have no repo or commit, so those cells are empty: check by content.
    let row = table.lines().nth(1).unwrap();
    assert!(row.starts_with("echo "), "{table}");
    for cell in [
        "True",
        "Succeeded",
        // The Succeeded condition's reason, in the REASON column.
        "Succeeded",
        &echoed.instructions.unwrap().to_string(),
        echoed.time.as_deref().unwrap(),
    ] {
        assert!(
            row.split_whitespace().any(|c| c == cell),
            "{cell:?} missing in {table}"
        );
    }
    let wide = kubectl(&["get", "exr", "echo", "-o", "wide"]);
    let header: Vec<&str> = wide.lines().next().unwrap().split_whitespace().collect();
    assert!(
        header.contains(&"MODULE") && header.contains(&"POD"),
        "{header:?}"
    );
    assert!(wide.contains(&echo), "{wide}");

    // A succeeded execution's pod and input are removed; a failed one's pod is kept for inspection.
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
    wait_for("the echo pod and input to be deleted", || async {
        let pod_gone = pods.get_opt("echo-run").await.ok()?.is_none();
        let input_gone = config_maps.get_opt("echo-input").await.ok()?.is_none();
        (pod_gone && input_gone).then_some(())
    })
    .await;
    assert!(pods.get_opt("over-budget-run").await.unwrap().is_some());

    wait_for("the queue to drain", || async {
        queue_depth().filter(|depth| *depth == 0)
    })
    .await;

    // Outcomes are counted by result and reason.
    let text = metrics.encode();
    for line in [
        r#"outlayer_executions_finished_total{result="succeeded",reason="Succeeded"} 2"#,
        r#"outlayer_executions_finished_total{result="failed",reason="InstructionLimit"} 1"#,
        r#"outlayer_executions_finished_total{result="failed",reason="TimeLimit"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
    }

    // Transitions are recorded as Events on the request.
    let events: Api<Event> = Api::namespaced(client.clone(), NAMESPACE);
    let reasons: Vec<String> = events
        .list(&ListParams::default().fields("involvedObject.name=echo"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert!(
        reasons.contains(&"ExecutorStarted".to_string()),
        "{reasons:?}"
    );
    assert!(reasons.contains(&"Succeeded".to_string()), "{reasons:?}");

    // Requests for a repository share one CompileJob, named from (repo, commit, target), and wait on it.
    let code = CodeRef::from_repo(
        "https://github.com/alice/echo",
        "0123456789abcdef0123456789abcdef01234567",
    );
    let expected_job = code.source.as_ref().unwrap().compile_job_name();
    executions
        .create(&post, &request("from-repo-1", code.clone(), "a", 1_000_000))
        .await
        .unwrap();
    executions
        .create(&post, &request("from-repo-2", code, "b", 1_000_000))
        .await
        .unwrap();
    for name in ["from-repo-1", "from-repo-2"] {
        let waiting = status_when(&executions, name, "compiling", |s| {
            s.phase == Some(Phase::Compiling)
        })
        .await;
        assert_eq!(waiting.compile_job.as_deref(), Some(expected_job.as_str()));
        assert_eq!(
            condition_status(&waiting.conditions, "Compiled"),
            Some(false)
        );
    }
    let compile_jobs: Api<CompileJob> = Api::namespaced(client, NAMESPACE);
    assert_eq!(
        compile_jobs
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );

    operator.stop().await;
}

#[tokio::test]
async fn platform_failures_rerun_and_finished_requests_go_after_their_ttl() {
    let env = OperatorEnv::start().await;
    let echo = env.publish("example-echo");
    let client = env.cluster.client();
    let config = OperatorConfig {
        executor_image: common::FLAKY_EXECUTOR_IMAGE.to_string(),
        execution_ttl: std::time::Duration::from_secs(3),
        ..OperatorConfig::default()
    };
    let operator = start_operator(test_context(client.clone(), config));
    let executions: Api<ExecutionRequest> = Api::namespaced(client.clone(), NAMESPACE);
    executions
        .create(
            &PostParams::default(),
            &request("flaky", by_module(&echo), "second time lucky", 100_000_000),
        )
        .await
        .unwrap();

    // The first pod dies without a result (our fault): a second pod runs it.
    let done = status_when(&executions, "flaky", "finished", |s| {
        s.phase.is_some_and(|p| p.is_terminal())
    })
    .await;
    assert_eq!(done.phase, Some(Phase::Succeeded), "{:?}", done.message);
    assert_eq!(done.output.as_deref(), Some("second time lucky"));
    assert_eq!(done.retries, Some(1));
    assert_eq!(done.pod_name.as_deref(), Some("flaky-run-2"));
    let events: Api<Event> = Api::namespaced(client.clone(), NAMESPACE);
    let reasons: Vec<String> = events
        .list(&ListParams::default().fields("involvedObject.name=flaky"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.reason)
        .collect();
    assert!(reasons.contains(&"Retrying".to_string()), "{reasons:?}");

    // After its TTL the request goes, and with it both pods and the input.
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let config_maps: Api<ConfigMap> = Api::namespaced(client, NAMESPACE);
    wait_for(
        "the request, its pods and its input to be deleted",
        || async {
            let request_gone = executions.get_opt("flaky").await.ok()?.is_none();
            let pods_gone = pods.get_opt("flaky-run").await.ok()?.is_none()
                && pods.get_opt("flaky-run-2").await.ok()?.is_none();
            let input_gone = config_maps.get_opt("flaky-input").await.ok()?.is_none();
            (request_gone && pods_gone && input_gone).then_some(())
        },
    )
    .await;
    operator.stop().await;
}

/// Children are trusted by owner, not by name: an input ConfigMap planted under a request's input name
/// (with another input, and a forged-looking owner that is not the request's uid) is never mounted. The
/// request waits, counted as an untrusted object, and runs with its own input once the squatter is gone.
#[tokio::test]
async fn a_squatted_input_is_never_used() {
    let env = OperatorEnv::start().await;
    let echo = env.publish("example-echo");
    let client = env.cluster.client();
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), NAMESPACE);
    // Owned by something real (a dangling owner would have the garbage collector remove it at once).
    let owner = config_maps
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": "someone"}})).unwrap(),
        )
        .await
        .unwrap();
    let squatter: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "squatted-input", "ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap", "name": "someone",
            "uid": owner.metadata.uid.unwrap(), "controller": true
        }]},
        "data": {"stdin": "forged input"}
    }))
    .unwrap();
    let squatter = config_maps
        .create(&PostParams::default(), &squatter)
        .await
        .unwrap();
    let config = OperatorConfig {
        executor_image: common::EXECUTOR_IMAGE.to_string(),
        ..OperatorConfig::default()
    };
    let ctx = test_context(client.clone(), config);
    let operator = start_operator(ctx.clone());
    let executions: Api<ExecutionRequest> = Api::namespaced(client.clone(), NAMESPACE);
    executions
        .create(
            &PostParams::default(),
            &request("squatted", by_module(&echo), "the real input", 100_000_000),
        )
        .await
        .unwrap();
    wait_for("the squatter to be counted", || async {
        ctx.metrics
            .encode()
            .contains("outlayer_untrusted_objects_total{kind=\"ConfigMap\"}")
            .then_some(())
    })
    .await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    assert!(
        pods.get_opt("squatted-run").await.unwrap().is_none(),
        "no pod was started on the squatter's input"
    );
    let only_the_squatter = kube::api::DeleteParams {
        preconditions: Some(kube::api::Preconditions {
            uid: squatter.metadata.uid.clone(),
            resource_version: None,
        }),
        ..Default::default()
    };
    config_maps
        .delete("squatted-input", &only_the_squatter)
        .await
        .unwrap();
    let done = status_when(&executions, "squatted", "finished", |s| {
        s.phase.is_some_and(|p| p.is_terminal())
    })
    .await;
    assert_eq!(done.phase, Some(Phase::Succeeded), "{:?}", done.message);
    assert_eq!(done.output.as_deref(), Some("the real input"));
    operator.stop().await;
}
