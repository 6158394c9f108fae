//! The real node: pods as containers (containerd + runc) on a real kubelet, with the images built from
//! the repository's Dockerfiles, kube-proxy's `kubernetes` Service, and NetworkPolicies enforced by
//! kube-router. One test (one node per machine at a time); it also proves the teardown leaves nothing.
//!
//! Needs `e2e/real-node/build.sh` (scripts/install-deps runs it) and the debug binaries of the
//! executor, compiler and operator (`cargo test --workspace` builds them first).

use std::path::PathBuf;
use std::time::Duration;

use e2e_cluster::real_node::{self, NODE_IP, host, probe};
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
    let targets = [
        ("node-listener", NODE_IP, port),
        ("apiserver-service", "10.0.0.1", 443),
    ];
    pods.create(
        &PostParams::default(),
        &probe::pod("open", &images.debian, json!({"app": "probe"}), &targets, 0).unwrap(),
    )
    .await
    .unwrap();
    let (phase, log) = probe::finished(&pods, "open", WAIT).await.unwrap();
    eprintln!("pod without a policy:\n{log}");
    assert_eq!(phase, "Succeeded", "{log}");
    let expected = ["node-listener=open", "apiserver-service=open"];
    let missing = probe::missing(&log, expected.into_iter().chain(probe::HARDENED));
    assert!(missing.is_empty(), "{missing:?} not in:\n{log}");

    // A privileged pod is refused by Pod Security admission before it reaches the node.
    let mut privileged = probe::pod("privileged", &images.debian, json!({}), &[], 0).unwrap();
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
    // kube-router programs a new pod's rules from its watch (about a second here); the probe waits
    // so that it tests the enforced state, not that race (see e2e/README.md).
    let sandboxed = probe::pod(
        "sandboxed",
        &images.debian,
        json!({"app": "sandboxed"}),
        &targets,
        4,
    )
    .unwrap();
    pods.create(&PostParams::default(), &sandboxed)
        .await
        .unwrap();
    let (phase, log) = probe::finished(&pods, "sandboxed", WAIT).await.unwrap();
    eprintln!("pod under default-deny:\n{log}");
    assert_eq!(phase, "Succeeded", "{log}");
    let missing = probe::missing(&log, ["node-listener=closed", "apiserver-service=closed"]);
    assert!(missing.is_empty(), "{missing:?} not in:\n{log}");

    // The node's processes and containers are real: a container process lives in a kubepods cgroup.
    assert!(
        host::processes_mentioning(&state_dir.to_string_lossy()).len() >= 4,
        "containerd, kubelet, kube-proxy and kube-router run with the run's state dir"
    );

    drop(cluster);
    // Held while looking, so another real node on this machine (another test binary) cannot be
    // mistaken for this one's leftovers.
    let _no_other_node = host::NodeLock::acquire(
        &e2e_cluster::binaries::cache_root().expect("the e2e cache directory"),
    )
    .unwrap();
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
