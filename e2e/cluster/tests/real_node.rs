//! The real node: pods as containers (containerd + runc) on a real kubelet, with the images built from
//! the repository's Dockerfiles, kube-proxy's `kubernetes` Service, and NetworkPolicies enforced by
//! kube-router. One test (one node per machine at a time); it also proves the teardown leaves nothing.
//!
//! Needs `e2e/real-node/build.sh` (scripts/install-deps runs it) and the debug binaries of the
//! executor, compiler and operator (`cargo test --workspace` builds them first).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use e2e_cluster::real_node::{self, NODE_IP, host};
use e2e_cluster::{Cluster, ClusterOptions};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, PostParams};
use serde_json::json;

const NS: &str = "real";
const WAIT: Duration = Duration::from_secs(120);

fn bin_dir() -> PathBuf {
    // tests run from target/debug/deps
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(|p| p.parent()).unwrap().to_path_buf()
}

/// A pod hardened as the chart runs every OutLayer pod (restricted Pod Security).
fn hardened_pod(name: &str, image: &str, labels: serde_json::Value, script: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "securityContext": {
                "runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
                "seccompProfile": {"type": "RuntimeDefault"}
            },
            "containers": [{
                "name": "main", "image": image, "imagePullPolicy": "Never",
                "command": ["bash", "-c", script],
                "securityContext": {
                    "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                    "capabilities": {"drop": ["ALL"]}
                },
                "resources": {"limits": {"memory": "64Mi", "cpu": "200m"}}
            }]
        }
    }))
    .unwrap()
}

async fn finished_log(pods: &Api<Pod>, name: &str) -> (String, String) {
    let deadline = Instant::now() + WAIT;
    loop {
        let pod = pods.get(name).await.unwrap();
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        if phase == "Succeeded" || phase == "Failed" {
            let log = pods.logs(name, &Default::default()).await.unwrap();
            return (phase, log);
        }
        assert!(
            Instant::now() < deadline,
            "pod {name} still {phase}: {:?}",
            pod.status
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Connection attempts a pod reports as `<name>=open|closed`.
fn probe_script(listener_port: u16) -> String {
    format!(
        "try() {{ if timeout 3 bash -c \"exec 3<>/dev/tcp/$2/$3\" 2>/dev/null; then echo \"$1=open\"; else echo \"$1=closed\"; fi; }}; \
         sleep ${{DELAY:-0}}; \
         try node-listener {NODE_IP} {listener_port}; \
         try apiserver-service 10.0.0.1 443; \
         echo uid=$(id -u); \
         grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status | tr -d '\\t' | tr ':' '='; \
         if touch /rootfs-write 2>/dev/null; then echo rootfs=writable; else echo rootfs=readonly; fi"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_node_runs_hardened_containers_enforces_policies_and_leaves_nothing_behind() {
    let images = real_node::build_images(&bin_dir()).unwrap();
    let tunables_before = host::read_tunables();
    let mut cluster = Cluster::start_with(ClusterOptions::real_node())
        .await
        .unwrap();
    cluster
        .start_real_node(&images.only(&[&images.debian]))
        .await
        .unwrap();
    let state_dir = cluster.state_dir().unwrap().to_owned();
    cluster
        .create_namespace(NS, &[("pod-security.kubernetes.io/enforce", "restricted")])
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(cluster.client(), NS);

    // A listener on the node: what a build script would try to reach.
    let listener = tokio::net::TcpListener::bind((NODE_IP, 0)).await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            drop(socket);
        }
    });

    // Restricted Pod Security admits the hardened pod; it runs as a real container.
    pods.create(
        &PostParams::default(),
        &hardened_pod(
            "open",
            &images.debian,
            json!({"app": "probe"}),
            &probe_script(port),
        ),
    )
    .await
    .unwrap();
    let (phase, log) = finished_log(&pods, "open").await;
    eprintln!("pod without a policy:\n{log}");
    assert_eq!(phase, "Succeeded", "{log}");
    for line in [
        "node-listener=open",
        "apiserver-service=open",
        "uid=65532",
        "CapEff=0000000000000000",
        "NoNewPrivs=1",
        "Seccomp=2",
        "rootfs=readonly",
    ] {
        assert!(log.lines().any(|l| l == line), "{line} not in:\n{log}");
    }

    // A privileged pod is refused by Pod Security admission before it reaches the node.
    let mut privileged = hardened_pod("privileged", &images.debian, json!({}), "true");
    let context = privileged.spec.as_mut().unwrap().containers[0]
        .security_context
        .as_mut()
        .unwrap();
    context.privileged = Some(true);
    context.allow_privilege_escalation = None;
    let refused = pods
        .create(&PostParams::default(), &privileged)
        .await
        .unwrap_err();
    assert!(
        refused.to_string().contains("violates PodSecurity"),
        "{refused}"
    );

    // Default-deny egress for sandboxed pods, as the chart's build and executor policies do.
    let policy: NetworkPolicy = serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "sandbox-deny-all"},
        "spec": {
            "podSelector": {"matchLabels": {"app": "sandboxed"}},
            "policyTypes": ["Ingress", "Egress"]
        }
    }))
    .unwrap();
    Api::<NetworkPolicy>::namespaced(cluster.client(), NS)
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
    let mut sandboxed = hardened_pod(
        "sandboxed",
        &images.debian,
        json!({"app": "sandboxed"}),
        &probe_script(port),
    );
    // kube-router programs a new pod's rules from its watch (about a second here); the probe waits
    // so that it tests the enforced state, not that race (see e2e/README.md).
    sandboxed.spec.as_mut().unwrap().containers[0].env = Some(vec![
        serde_json::from_value(json!({"name": "DELAY", "value": "4"})).unwrap(),
    ]);
    pods.create(&PostParams::default(), &sandboxed)
        .await
        .unwrap();
    let (phase, log) = finished_log(&pods, "sandboxed").await;
    eprintln!("pod under default-deny:\n{log}");
    assert_eq!(phase, "Succeeded", "{log}");
    for line in ["node-listener=closed", "apiserver-service=closed"] {
        assert!(log.lines().any(|l| l == line), "{line} not in:\n{log}");
    }

    // The node's processes and containers are real: a container process lives in a kubepods cgroup.
    assert!(
        host::processes_mentioning(&state_dir.to_string_lossy()).len() >= 4,
        "containerd, kubelet, kube-proxy and kube-router run with the run's state dir"
    );

    drop(cluster);
    // Nothing left: no bridge, no guard, no kube-proxy table, no container, no mount.
    let links = host::run("ip", &["-br", "link"]).unwrap();
    assert!(!links.contains(host::BRIDGE), "{links}");
    let tables = host::run("nft", &["list", "tables"]).unwrap();
    assert!(
        !tables.contains(host::GUARD_TABLE) && !tables.contains("kube-proxy"),
        "{tables}"
    );
    assert!(host::pod_processes().is_empty(), "containers survived");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(host::mounts_under(&mountinfo, &state_dir).is_empty());
    assert!(!state_dir.exists());
    let iptables = host::run("iptables-save", &[]).unwrap();
    assert!(host::node_chains(&iptables).is_empty(), "{iptables}");
    // The kubelet rewrites vm.overcommit_memory, kernel.panic and kernel.panic_on_oops at start.
    assert_eq!(host::read_tunables(), tunables_before);
}
