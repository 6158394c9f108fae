//! The chart on a real node: `helm install` with two operator replicas as containers (images built from
//! the repository's Dockerfiles), leader election through the Lease, and a real failover — the leader's
//! operator process SIGKILLed on the node while a burst of requests is in flight: leadership comes back
//! (the standby, or the restarted container), every request finishes once, and the time without a
//! leader is printed. Before that, the chart's NetworkPolicies are shown enforced on pods labelled as
//! a fetch Job and as a sandbox.
//!
//! Needs root, `scripts/install-deps` (helm, the control plane, the real node) and the debug binaries
//! of the operator, executor and compiler (`cargo test --workspace` builds them first).

use std::time::{Duration, Instant};

use e2e_chart::{Helm, chart_dir};
use e2e_cluster::real_node::{self, probe};
use e2e_cluster::{Cluster, ClusterOptions};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{PersistentVolume, Pod};
use kube::api::{Api, ListParams, PostParams};
use outlayer_operator::crd::{
    CodeRef, ExecutionRequest, ExecutionRequestSpec, Limits, Phase, ResponseFormat,
};
use outlayer_testkit::target_dir;
use serde_json::json;

const RELEASE: &str = "outlayer";
const NS: &str = "outlayer-system";
const LEASE: &str = "outlayer-operator";
/// The chart's lease, shortened so a standby takes over well inside NEAR's 200-block yield window.
const LEASE_SECONDS: u64 = 4;
const BURST: usize = 12;
const WAIT: Duration = Duration::from_secs(180);

/// The pid of the operator process in the pod with `uid`, found by its cgroup on this node.
fn operator_process(uid: &str) -> Option<i32> {
    let marker = format!("pod{uid}");
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .find(|pid| {
            let in_pod = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .is_ok_and(|c| c.contains(&marker));
            let is_operator = std::fs::read_link(format!("/proc/{pid}/exe"))
                .is_ok_and(|exe| exe.ends_with("outlayer-operator"));
            in_pod && is_operator
        })
}

fn split(reference: &str) -> (&str, &str) {
    reference.rsplit_once(':').unwrap()
}

fn echo(name: &str, sha: &str) -> ExecutionRequest {
    ExecutionRequest::new(
        name,
        ExecutionRequestSpec {
            code: CodeRef {
                module_url: None,
                source: None,
                wasm_sha256: Some(sha.to_string()),
            },
            input: name.to_string(),
            limits: Limits {
                max_instructions: 100_000_000,
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

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt(LEASE)
        .await
        .ok()
        .flatten()?
        .spec?
        .holder_identity
}

/// Names of the operator pods that are Ready.
async fn ready_operators(pods: &Api<Pod>) -> Vec<String> {
    let params = ListParams::default().labels("app.kubernetes.io/component=operator");
    let Ok(list) = pods.list(&params).await else {
        return Vec::new();
    };
    list.into_iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .filter(|pod| {
            pod.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        })
        .filter_map(|pod| pod.metadata.name)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_a_real_node_fail_over_within_the_lease_and_lose_nothing() {
    use sha2::Digest as _;
    let helm = Helm::locate().unwrap_or_else(|e| panic!("{e}"));
    let images = real_node::build_images(&target_dir().join("debug")).unwrap();
    let echo_wasm = std::fs::read(target_dir().join("wasm32-wasip1/release/example-echo.wasm"))
        .expect("the echo guest: run scripts/build-wasm");
    let mut cluster = Cluster::start_with(ClusterOptions::real_node())
        .await
        .unwrap();
    cluster
        .start_real_node(&images.only(&[&images.operator, &images.executor, &images.debian]))
        .await
        .unwrap();
    let client = cluster.client();
    cluster
        .create_namespace(NS, &[("pod-security.kubernetes.io/enforce", "restricted")])
        .await
        .unwrap();

    // The cache with the echo module already published; the operator and executor run as uid 65532.
    let cache = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(cache.path().join("wasm")).unwrap();
    std::fs::create_dir_all(cache.path().join("results")).unwrap();
    for dir in [cache.path().to_path_buf(), cache.path().join("results")] {
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
    }
    let sha = hex::encode(sha2::Sha256::digest(&echo_wasm));
    std::fs::write(cache.path().join(format!("wasm/{sha}.wasm")), &echo_wasm).unwrap();
    let pv: PersistentVolume = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "chart-cache"},
        "spec": {
            "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"],
            "storageClassName": "e2e-hostpath", "hostPath": {"path": cache.path().to_str().unwrap()},
        },
    }))
    .unwrap();
    Api::<PersistentVolume>::all(client.clone())
        .create(&PostParams::default(), &pv)
        .await
        .unwrap();

    // A listener on the node: the only place the chart's fetch policy is told to allow here.
    let listener = tokio::net::TcpListener::bind((real_node::NODE_IP, 0))
        .await
        .unwrap();
    let listener_port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            drop(socket);
        }
    });

    let (operator_repository, operator_tag) = split(&images.operator);
    let (executor_repository, executor_tag) = split(&images.executor);
    let kubeconfig = cluster.kubeconfig_path().display().to_string();
    let api_port = cluster.server_port().unwrap();
    let set = |pairs: &[(&str, String)]| -> Vec<String> {
        pairs
            .iter()
            .flat_map(|(k, v)| ["--set".to_string(), format!("{k}={v}")])
            .collect()
    };
    let mut args: Vec<String> = [
        "install",
        RELEASE,
        chart_dir().to_str().unwrap(),
        "--namespace",
        NS,
        "--kubeconfig",
        &kubeconfig,
    ]
    .map(String::from)
    .to_vec();
    args.extend(set(&[
        ("operator.replicas", "2".into()),
        ("operator.image.repository", operator_repository.into()),
        ("operator.image.tag", operator_tag.into()),
        ("operator.image.pullPolicy", "Never".into()),
        (
            "operator.leaderElection.leaseDurationSeconds",
            LEASE_SECONDS.to_string(),
        ),
        ("executor.image.repository", executor_repository.into()),
        ("executor.image.tag", executor_tag.into()),
        // Two operators and the executors share the node's 2 CPUs.
        ("executor.cpu", "250m".into()),
        ("cache.storageClassName", "e2e-hostpath".into()),
        ("cache.size", "1Gi".into()),
        // The API server's address comes from the install-time lookup; its port here is not 443 or
        // 6443 (policies match the endpoint kube-proxy translates the Service to).
        (
            "networkPolicy.operatorEgress.apiServerPorts",
            format!("{{{api_port}}}"),
        ),
        (
            "networkPolicy.fetchEgress.ports",
            format!("{{{listener_port}}}"),
        ),
        (
            "networkPolicy.fetchEgress.cidrs[0].cidr",
            format!("{}/32", real_node::NODE_IP),
        ),
    ]));
    helm.run(&args, None).unwrap_or_else(|e| panic!("{e}"));

    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let leases: Api<Lease> = Api::namespaced(client.clone(), NS);
    let deadline = Instant::now() + WAIT;
    let leader = loop {
        let ready = ready_operators(&pods).await;
        if ready.len() == 2
            && let Some(holder) = holder(&leases).await
            && ready.contains(&holder)
        {
            break holder;
        }
        assert!(
            Instant::now() < deadline,
            "two Ready operator pods and a leader: {ready:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // The chart's NetworkPolicies, enforced: a pod labelled as a fetch Job reaches the allowed address
    // and nothing else; one labelled as a sandbox (build Job, executor) reaches nothing. Both run
    // hardened as the operator's pods do, checked from inside.
    let fetch_labels =
        json!({"app.kubernetes.io/name": "outlayer-compiler", "outlayer.dev/stage": "fetch"});
    let sandbox_labels = json!({"outlayer.dev/sandbox": "true"});
    let targets = [
        ("listener", real_node::NODE_IP, listener_port),
        ("apiserver-service", "10.0.0.1", 443),
    ];
    for (name, labels) in [
        ("fetch-probe", fetch_labels),
        ("sandbox-probe", sandbox_labels),
    ] {
        let pod = probe::pod(name, &images.debian, labels, &targets, 4).unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }
    for (name, expected) in [
        ("fetch-probe", ["listener=open", "apiserver-service=closed"]),
        (
            "sandbox-probe",
            ["listener=closed", "apiserver-service=closed"],
        ),
    ] {
        let (_, log) = probe::finished(&pods, name, WAIT).await.unwrap();
        eprintln!("{name}:\n{log}");
        let missing = probe::missing(&log, expected.into_iter().chain(probe::HARDENED));
        assert!(missing.is_empty(), "{name}: {missing:?} not in:\n{log}");
    }

    // A burst in flight, then the leader's container is killed (grace 0: SIGKILL, no Lease hand-back).
    let executions: Api<ExecutionRequest> = Api::namespaced(client.clone(), NS);
    for i in 0..BURST {
        executions
            .create(&PostParams::default(), &echo(&format!("burst-{i}"), &sha))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let leader_pod = pods.get(&leader).await.unwrap();
    let uid = leader_pod.metadata.uid.clone().unwrap();
    let renewed_before = leases.get(LEASE).await.unwrap().spec.unwrap().renew_time;
    let process = operator_process(&uid).expect("the leader's operator process on the node");
    let killed = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(process),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // Someone leads again once the Lease is renewed: the standby after the lease runs out, or the
    // leader's restarted container (same pod, same identity) if the kubelet restarts it first.
    let new_leader = loop {
        let spec = leases.get(LEASE).await.unwrap().spec.unwrap();
        if spec.renew_time != renewed_before
            && let Some(holder) = spec.holder_identity
        {
            break holder;
        }
        assert!(
            killed.elapsed() < WAIT,
            "nobody renewed the Lease after {leader}'s process was killed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let failover = killed.elapsed();
    eprintln!(
        "leader {leader}: operator process {process} SIGKILLed; the Lease is renewed by {} after \
         {:.1} s (lease {LEASE_SECONDS} s)",
        if new_leader == leader {
            format!("{new_leader} (its restarted container)")
        } else {
            format!("the standby {new_leader}")
        },
        failover.as_secs_f64()
    );

    // Every request finishes, once, with its own output.
    for i in 0..BURST {
        let name = format!("burst-{i}");
        let status = loop {
            let status = executions.get(&name).await.unwrap().status;
            if let Some(status) = status
                .clone()
                .filter(|s| s.phase.is_some_and(|p| p.is_terminal()))
            {
                break status;
            }
            if killed.elapsed() > WAIT {
                let listed = pods.list(&ListParams::default()).await.unwrap();
                let pod_states: Vec<String> = listed
                    .iter()
                    .map(|p| {
                        format!(
                            "{} {:?}",
                            p.metadata.name.clone().unwrap_or_default(),
                            p.status.as_ref().and_then(|s| s.phase.clone())
                        )
                    })
                    .collect();
                let mut logs = String::new();
                for operator in listed
                    .iter()
                    .filter_map(|p| p.metadata.name.clone())
                    .filter(|n| n.contains("operator"))
                {
                    let log = pods
                        .logs(&operator, &Default::default())
                        .await
                        .unwrap_or_else(|e| e.to_string());
                    logs.push_str(&format!("---- {operator} ----\n{log}\n"));
                }
                panic!("{name} did not finish: {status:#?}\npods: {pod_states:#?}\n{logs}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert_eq!(status.phase, Some(Phase::Succeeded), "{name}: {status:#?}");
        assert_eq!(status.output.as_deref(), Some(name.as_str()), "{name}");
    }
}
