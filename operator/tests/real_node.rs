//! The chain-less path on a real node: the operator's fetch Job clones over the pod network from a git
//! mirror (`git daemon` on the node), the build Job compiles with the compiler image's own toolchain, the
//! executor image runs the module — all as containers on a real kubelet with containerd and runc, images
//! built from the repository's Dockerfiles. A build script that tries the network is stopped by the
//! NetworkPolicy the chart installs for build pods, enforced by kube-router.

mod common;

use common::{
    NAMESPACE, create_cache_volume, echo_main_branch, finished, git, install_crds,
    repositories_dir, request, start_operator, target_dir, test_context,
};
use e2e_cluster::real_node::{self, GitMirror, NODE_IP};
use e2e_cluster::{Cluster, ClusterOptions};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, PostParams};
use outlayer_operator::config::{CompilerConfig, OperatorConfig};
use outlayer_operator::crd::{CompileJob, ExecutionRequest, Phase};
use serde_json::json;

/// The chart's sandbox policy (charts/outlayer-operator/templates/networkpolicies.yaml): no traffic in
/// or out of pods running user code (build and executor pods carry the sandbox label).
async fn deny_build_network(cluster: &Cluster) {
    let policy: NetworkPolicy = serde_json::from_value(json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": "outlayer-sandbox-deny-all"},
        "spec": {
            "podSelector": {"matchLabels": {"outlayer.dev/sandbox": "true"}},
            "policyTypes": ["Ingress", "Egress"]
        }
    }))
    .unwrap();
    Api::<NetworkPolicy>::namespaced(cluster.client(), NAMESPACE)
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_compiles_and_runs_in_real_containers_with_the_build_offline() {
    let images = real_node::build_images(&target_dir().join("debug")).unwrap();

    let repos = repositories_dir();
    let repo = repos.path().join("outlayer/echo");
    echo_main_branch(&repo);
    // A build script that tries to reach the mirror (which the fetch pod could reach).
    git(&repo, &["checkout", "-q", "-b", "network"]);
    let mut cluster = Cluster::start_with(ClusterOptions::real_node())
        .await
        .unwrap();
    cluster
        .start_real_node(&images.only(&[&images.executor, &images.compiler]))
        .await
        .unwrap();
    let mirror = GitMirror::start(repos.path(), cluster.state_dir().unwrap()).unwrap();
    let mirror_port = mirror.port();
    std::fs::write(
        repo.join("build.rs"),
        format!(
            "fn main() {{\n    let address = \"{NODE_IP}:{mirror_port}\".parse().unwrap();\n    \
             match std::net::TcpStream::connect_timeout(&address, std::time::Duration::from_secs(3)) {{\n        \
             Ok(_) => println!(\"cargo:warning=the build reached the network\"),\n        \
             Err(e) => panic!(\"network unreachable from the build: {{e}}\"),\n    }}\n}}\n"
        ),
    )
    .unwrap();
    git(&repo, &["add", "build.rs"]);
    git(
        &repo,
        &["commit", "-q", "-m", "build script probing the network"],
    );
    git(&repo, &["checkout", "-q", "main"]);
    let main_sha = git(&repo, &["rev-parse", "main"]);
    let network_sha = git(&repo, &["rev-parse", "network"]);

    cluster
        .create_namespace(
            NAMESPACE,
            &[("pod-security.kubernetes.io/enforce", "restricted")],
        )
        .await
        .unwrap();
    install_crds(&cluster).await;
    deny_build_network(&cluster).await;
    // The module cache: written by the build Job's publish step as uid 65532, read by executor pods.
    // The kubelet creates each Job's `workspaces/<CompileJob>` subPath itself, as root with the mode
    // of the volume's root, so the root must let uid 65532 write there (a hostPath PV has no fsGroup).
    let cache = tempfile::tempdir().unwrap();
    for dir in ["wasm", "results"] {
        std::fs::create_dir_all(cache.path().join(dir)).unwrap();
    }
    for path in [
        cache.path().to_owned(),
        cache.path().join("wasm"),
        cache.path().join("results"),
    ] {
        std::os::unix::fs::chown(&path, Some(65532), Some(65532)).unwrap();
    }
    std::fs::set_permissions(
        cache.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    create_cache_volume(&cluster, cache.path()).await;

    let config = OperatorConfig {
        executor_image: images.executor.clone(),
        compiler: CompilerConfig {
            image: images.compiler.clone(),
            allowed_repo_prefixes: vec!["https://github.com/outlayer/".to_string()],
            git_mirrors: vec![format!("https://github.com/={}", mirror.url())],
            // The node has 2 CPUs; the default (2) would leave nothing for anything else.
            cpu: "1".to_string(),
            memory: "2Gi".to_string(),
            ..CompilerConfig::default()
        },
        ..OperatorConfig::default()
    };
    let client = cluster.client();
    let operator = start_operator(test_context(client.clone(), config));
    let executions: Api<ExecutionRequest> = Api::namespaced(client.clone(), NAMESPACE);
    let post = PostParams::default();
    let repo_url = "https://github.com/outlayer/echo";

    let started = std::time::Instant::now();
    executions
        .create(
            &post,
            &request("echo", repo_url, &main_sha, "hello from a real node"),
        )
        .await
        .unwrap();
    let status = finished(&executions, "echo").await;
    eprintln!(
        "echo on the real node: {:?} in {:.1} s (cold: fetch, build, run)",
        status.phase,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:#?}");
    assert_eq!(
        status.output.as_deref(),
        Some("hello from a real node"),
        "{status:#?}"
    );

    // Warm: the module is in the cache, only the executor pod starts.
    let started = std::time::Instant::now();
    executions
        .create(&post, &request("echo-2", repo_url, &main_sha, "again"))
        .await
        .unwrap();
    let status = finished(&executions, "echo-2").await;
    eprintln!(
        "echo on the real node, module cached: {:?} in {:.1} s",
        status.phase,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(status.output.as_deref(), Some("again"), "{status:#?}");

    // The build script's connect is refused by the enforced policy, so the build fails.
    executions
        .create(&post, &request("network", repo_url, &network_sha, "x"))
        .await
        .unwrap();
    let status = finished(&executions, "network").await;
    assert_eq!(status.phase, Some(Phase::Failed), "{status:#?}");
    let compile_job = Api::<CompileJob>::namespaced(client.clone(), NAMESPACE)
        .get(status.compile_job.as_deref().unwrap())
        .await
        .unwrap();
    let log = compile_job.status.unwrap().build_log.unwrap_or_default();
    assert!(
        log.contains("network unreachable from the build"),
        "the build should fail on the refused connection: {log}"
    );

    operator.stop().await;
}
