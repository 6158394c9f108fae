//! The warm pool on a real node (kubelet + containerd + runc, kube-router enforcing NetworkPolicies,
//! the executor image built from its Dockerfile): one cluster, the cases one after another.
//!
//! The operator runs in this test process, on the node: the handoff policy below lets the node's
//! address reach the handoff port, as the chart's lets the operator's pods.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{
    NAMESPACE, by_hash, finished, publish, real_node_cache, real_node_images, start_operator,
    start_real_node, test_context, wait_for,
};
use e2e_cluster::Cluster;
use e2e_cluster::real_node::{NODE_IP, probe};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use outlayer_operator::config::{OperatorConfig, WarmPoolConfig};
use outlayer_operator::crd::{ExecutionRequest, ExecutionRequestStatus, Phase};
use outlayer_operator::pods::executor::{WARM_CLASS_LABEL, WARM_IDLE, WARM_STATE_LABEL};
use outlayer_operator::pool::plan;
use serde_json::json;

const HANDOFF_PORT: u16 = 7070;
const POOL_SIZE: u32 = 2;

/// The chart's sandbox policy, and its warm-handoff policy with the node (where this test's operator
/// runs) in place of the operator's pods.
async fn policies(cluster: &Cluster) {
    let api = Api::<NetworkPolicy>::namespaced(cluster.client(), NAMESPACE);
    for policy in [
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "outlayer-sandbox-deny-all"},
            "spec": {
                "podSelector": {"matchLabels": {"outlayer.dev/sandbox": "true"}},
                "policyTypes": ["Ingress", "Egress"]
            }
        }),
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "outlayer-warm-handoff"},
            "spec": {
                "podSelector": {
                    "matchLabels": {"outlayer.dev/sandbox": "true"},
                    "matchExpressions": [{"key": WARM_CLASS_LABEL, "operator": "Exists"}]
                },
                "policyTypes": ["Ingress"],
                "ingress": [{
                    "from": [{"ipBlock": {"cidr": format!("{NODE_IP}/32")}}],
                    "ports": [{"protocol": "TCP", "port": HANDOFF_PORT}]
                }]
            }
        }),
    ] {
        let policy: NetworkPolicy = serde_json::from_value(policy).unwrap();
        api.create(&PostParams::default(), &policy).await.unwrap();
    }
}

fn idle_ready(pod: &Pod) -> bool {
    let labels = pod.labels();
    labels.get(WARM_STATE_LABEL).map(String::as_str) == Some(WARM_IDLE)
        && plan::idle_state(
            pod,
            k8s_openapi::jiff::Timestamp::now(),
            Duration::from_secs(3600),
        ) == plan::IdleState::Ready
}

async fn idle_pods(pods: &Api<Pod>) -> Vec<Pod> {
    pods.list(&ListParams::default().labels(&format!("{WARM_STATE_LABEL}={WARM_IDLE}")))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .collect()
}

async fn pool_ready(pods: &Api<Pod>, count: usize) -> Vec<Pod> {
    wait_for(&format!("{count} ready warm pods"), || async {
        let idle = idle_pods(pods).await;
        let ready: Vec<Pod> = idle.iter().filter(|p| idle_ready(p)).cloned().collect();
        (ready.len() >= count).then_some(ready)
    })
    .await
}

async fn gone(pods: &Api<Pod>, name: &str) {
    wait_for(&format!("pod {name} to be deleted"), || async {
        pods.get_opt(name).await.unwrap().is_none().then_some(())
    })
    .await;
}

/// Sends a handoff with `token` to `address` and returns the executor's answer line.
async fn try_handoff(address: &str, token: &str, sha256: &str) -> String {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let request = json!({
        "v": 1, "token": token,
        "assignment": {"moduleSha256": sha256, "input": "stolen", "maxInstructions": 1000,
                       "maxMemoryMb": 16, "maxExecutionSeconds": 1, "maxOutputBytes": 100,
                       "responseFormat": "text"}
    });
    stream
        .write_all(format!("{request}\n").as_bytes())
        .await
        .unwrap();
    let mut line = String::new();
    BufReader::new(&mut stream)
        .read_line(&mut line)
        .await
        .unwrap();
    line
}

async fn run(
    executions: &Api<ExecutionRequest>,
    request: ExecutionRequest,
) -> (ExecutionRequestStatus, Duration) {
    let name = request.name_any();
    let started = Instant::now();
    executions
        .create(&PostParams::default(), &request)
        .await
        .unwrap();
    let status = finished(executions, &name).await;
    (status, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_pods_run_one_execution_each_refuse_strangers_and_survive_a_restart() {
    let images = real_node_images();
    let cluster = start_real_node(&images, &[&images.executor, &images.debian]).await;
    policies(&cluster).await;
    let cache = real_node_cache(&cluster).await;
    let echo = publish(cache.path(), "example-echo");

    let config = OperatorConfig {
        executor_image: images.executor.clone(),
        warm_pool: WarmPoolConfig {
            classes: vec![(64, POOL_SIZE)],
            max_age: Duration::from_secs(600),
            handoff_port: HANDOFF_PORT,
        },
        ..OperatorConfig::default()
    };
    let client = cluster.client();
    let executions: Api<ExecutionRequest> = Api::namespaced(client.clone(), NAMESPACE);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let operator = start_operator(test_context(client.clone(), config.clone()));
    pool_ready(&pods, POOL_SIZE as usize).await;

    // A warm hit: handed to a pool pod, the result read as today, the pod gone after.
    let (status, took) = run(&executions, by_hash("warm-1", &echo, "hello warm", 32)).await;
    eprintln!("warm hit: {:?} in {took:?}", status.phase);
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:#?}");
    assert_eq!(status.output.as_deref(), Some("hello warm"));
    let warm_pod = status.pod_name.clone().unwrap();
    assert!(warm_pod.starts_with("outlayer-warm-64-"), "{warm_pod}");
    gone(&pods, &warm_pod).await;

    // Two at once: two pods, never one shared.
    pool_ready(&pods, POOL_SIZE as usize).await;
    for name in ["warm-2", "warm-3"] {
        executions
            .create(&PostParams::default(), &by_hash(name, &echo, name, 32))
            .await
            .unwrap();
    }
    let mut used = BTreeSet::new();
    for name in ["warm-2", "warm-3"] {
        let status = finished(&executions, name).await;
        assert_eq!(status.output.as_deref(), Some(name), "{status:#?}");
        used.insert(status.pod_name.unwrap());
    }
    assert_eq!(used.len(), 2, "{used:?}");
    assert!(!used.contains(&warm_pod));

    // Larger than every class: a cold pod.
    let (status, took) = run(&executions, by_hash("big", &echo, "cold", 100)).await;
    eprintln!("cold (above every class): {:?} in {took:?}", status.phase);
    assert_eq!(status.output.as_deref(), Some("cold"), "{status:#?}");
    assert_eq!(status.pod_name.as_deref(), Some("big-run"));

    // A handoff without the pod's token is refused and the pod stays in the pool, unused.
    let ready = pool_ready(&pods, POOL_SIZE as usize).await;
    let target = &ready[0];
    let ip = target.status.as_ref().unwrap().pod_ip.clone().unwrap();
    let answer = try_handoff(&format!("{ip}:{HANDOFF_PORT}"), "not-the-token", &echo).await;
    assert!(answer.contains("\"accepted\":false"), "{answer}");
    assert!(answer.contains("wrong token"), "{answer}");
    let after = pods.get(&target.name_any()).await.unwrap();
    assert!(idle_ready(&after), "{:?}", after.status);

    // A hostile guest gets a pod labelled as a warm pod: it reaches neither the API server, nor the
    // node, nor another warm pod's handoff port. An unlabelled pod cannot reach the handoff either.
    let other_ip = ready[1].status.as_ref().unwrap().pod_ip.clone().unwrap();
    let api_port = cluster.server_port().unwrap();
    let targets = [
        ("apiserver", NODE_IP, api_port),
        ("handoff", other_ip.as_str(), HANDOFF_PORT),
    ];
    let hostile = probe::pod(
        "hostile-warm",
        &images.debian,
        json!({"outlayer.dev/sandbox": "true", WARM_CLASS_LABEL: "64"}),
        &targets,
        3,
    )
    .unwrap();
    let neighbour = probe::pod(
        "neighbour",
        &images.debian,
        json!({"app": "neighbour"}),
        &[("handoff", other_ip.as_str(), HANDOFF_PORT)],
        3,
    )
    .unwrap();
    for pod in [&hostile, &neighbour] {
        pods.create(&PostParams::default(), pod).await.unwrap();
    }
    let (_, log) = probe::finished(&pods, "hostile-warm", Duration::from_secs(90))
        .await
        .unwrap();
    let missing = probe::missing(&log, ["apiserver=closed", "handoff=closed"]);
    assert!(missing.is_empty(), "{missing:?} in {log}");
    let (_, log) = probe::finished(&pods, "neighbour", Duration::from_secs(90))
        .await
        .unwrap();
    assert!(probe::missing(&log, ["handoff=closed"]).is_empty(), "{log}");

    // A crash between claim and handoff: the claimed pod is the execution's, but never got its
    // assignment. The restarted operator deletes it (never re-pools it) and re-runs in a fresh pod.
    operator.kill().await;
    let pending = by_hash("abandoned", &echo, "after the crash", 32);
    let pending = executions
        .create(&PostParams::default(), &pending)
        .await
        .unwrap();
    let victim = idle_pods(&pods).await.into_iter().find(idle_ready).unwrap();
    let claim = plan::claim_patch(
        victim.metadata.resource_version.as_deref().unwrap(),
        "abandoned",
        0,
        &pending.controller_owner_ref(&()).unwrap(),
        60,
    );
    pods.patch(
        &victim.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&claim),
    )
    .await
    .unwrap();
    let operator = start_operator(test_context(client.clone(), config.clone()));
    let status = finished(&executions, "abandoned").await;
    assert_eq!(
        status.output.as_deref(),
        Some("after the crash"),
        "{status:#?}"
    );
    assert_eq!(status.retries, Some(1), "{status:#?}");
    assert_ne!(status.pod_name.as_deref(), Some(victim.name_any().as_str()));
    gone(&pods, &victim.name_any()).await;
    // The restarted pool adopted the pods it had (same owner): it tops up, never doubles.
    pool_ready(&pods, POOL_SIZE as usize).await;
    let idle: Vec<String> = idle_pods(&pods)
        .await
        .iter()
        .map(|p| p.name_any())
        .collect();
    assert_eq!(idle.len(), POOL_SIZE as usize, "{idle:?}");

    // An upgrade or a new setting (here the pool's maximum age, which its pods' arguments carry)
    // while the pool is in place: the restarted operator never hands out a pod the previous one
    // built; it deletes and replaces them, and counts none of them as foreign.
    operator.kill().await;
    let previous: BTreeSet<String> = idle.into_iter().collect();
    let upgraded = OperatorConfig {
        warm_pool: WarmPoolConfig {
            max_age: Duration::from_secs(590),
            ..config.warm_pool.clone()
        },
        ..config.clone()
    };
    let ctx = test_context(client.clone(), upgraded);
    let metrics = ctx.metrics.clone();
    let operator = start_operator(ctx);
    for name in &previous {
        gone(&pods, name).await;
    }
    let replaced = pool_ready(&pods, POOL_SIZE as usize).await;
    assert!(
        replaced.iter().all(|p| !previous.contains(&p.name_any())),
        "{previous:?}"
    );
    let (status, _) = run(&executions, by_hash("upgraded", &echo, "new pods", 32)).await;
    assert_eq!(status.output.as_deref(), Some("new pods"), "{status:#?}");
    let pod = status.pod_name.unwrap();
    assert!(
        pod.starts_with("outlayer-warm-64-") && !previous.contains(&pod),
        "{pod}"
    );
    assert!(
        !metrics
            .encode()
            .contains("outlayer_untrusted_objects_total{kind=\"Pod\"}"),
        "the previous pods counted as foreign"
    );

    // Stopping drains the pool; nothing of it is left behind.
    operator.stop().await;
    wait_for("the drained pool", || async {
        idle_pods(&pods).await.is_empty().then_some(())
    })
    .await;
    let leftovers: Vec<String> = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| {
            p.labels().contains_key(WARM_CLASS_LABEL) && p.name_any().starts_with("outlayer-warm")
        })
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            !matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        })
        .map(|p| p.name_any())
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
