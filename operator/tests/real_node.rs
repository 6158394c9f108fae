//! The chain-less path on a real node: the operator's fetch Job clones over the pod network from a git
//! mirror (`git daemon` on the node), the build Job compiles with the compiler image's own toolchain, the
//! executor image runs the module — all as containers on a real kubelet with containerd and runc, images
//! built from the repository's Dockerfiles. A build script that tries the network is stopped by the
//! NetworkPolicy the chart installs for build pods, enforced by kube-router. A module by URL is fetched
//! from an HTTPS mirror on the node through the chart's fetch policy.

mod common;

use common::{
    NAMESPACE, artifact, by_hash, echo_main_branch, finished, git, network_probe_branch,
    publish_bytes, real_node_cache, real_node_images, repositories_dir, request, request_for,
    start_operator, start_real_node, test_context,
};
use e2e_cluster::Cluster;
use e2e_cluster::https_mirror::{HttpsMirror, Route};
use e2e_cluster::real_node::{GitMirror, Images, NODE_IP};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use kube::api::{Api, ListParams, PostParams};
use outlayer_operator::config::{CompilerConfig, IsolationProbe, OperatorConfig};
use outlayer_operator::crd::{CodeRef, CompileJob, ExecutionRequest, Phase};
use outlayer_operator::pods::executor::{EXECUTION_LABEL, EXECUTOR_CONTAINER};
use serde_json::json;
use sha2::{Digest, Sha256};

/// The chart's sandbox policy (charts/outlayer-operator/templates/networkpolicies.yaml): no traffic in
/// or out of pods running user code (build and executor pods carry the sandbox label).
async fn deny_build_network(cluster: &Cluster) {
    apply_policy(
        cluster,
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "outlayer-sandbox-deny-all"},
            "spec": {
                "podSelector": {"matchLabels": {"outlayer.dev/sandbox": "true"}},
                "policyTypes": ["Ingress", "Egress"]
            }
        }),
    )
    .await;
}

/// Creates the NetworkPolicy `policy` (JSON) in the test namespace.
async fn apply_policy(cluster: &Cluster, policy: serde_json::Value) {
    let policy: NetworkPolicy = serde_json::from_value(policy).unwrap();
    Api::<NetworkPolicy>::namespaced(cluster.client(), NAMESPACE)
        .create(&PostParams::default(), &policy)
        .await
        .unwrap();
}

/// The module cache for a test that builds: [`real_node_cache`], whose root lets uid 65532 write.
/// The build Job's publish step writes it as that user; the kubelet creates each Job's
/// `workspaces/<CompileJob>` subPath itself, as root with the mode of the volume's root, and a
/// hostPath PV has no fsGroup.
async fn build_cache(cluster: &Cluster) -> tempfile::TempDir {
    let cache = real_node_cache(cluster).await;
    std::fs::set_permissions(
        cache.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    cache
}

/// The compiler settings of a test that compiles on the node: its image, 1 CPU and 2 GiB (the node
/// has 2 CPUs; the default, 2, would leave nothing for anything else).
fn compiler_on_the_node(images: &Images) -> CompilerConfig {
    CompilerConfig {
        image: images.compiler.clone(),
        cpu: "1".to_string(),
        memory: "2Gi".to_string(),
        ..CompilerConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_compiles_and_runs_in_real_containers_with_the_build_offline() {
    let images = real_node_images();

    let repos = repositories_dir();
    let repo = repos.path().join("outlayer/echo");
    echo_main_branch(&repo);
    let cluster = start_real_node(&images, &[&images.executor, &images.compiler]).await;
    let mirror = GitMirror::start(repos.path(), cluster.state_dir().unwrap()).unwrap();
    // A build script that tries to reach the mirror (which the fetch pod could reach).
    network_probe_branch(&repo, &format!("{NODE_IP}:{}", mirror.port()));
    let main_sha = git(&repo, &["rev-parse", "main"]);
    let network_sha = git(&repo, &["rev-parse", "network"]);

    deny_build_network(&cluster).await;
    let _cache = build_cache(&cluster).await;

    let config = OperatorConfig {
        executor_image: images.executor.clone(),
        compiler: CompilerConfig {
            allowed_repo_prefixes: vec!["https://github.com/outlayer/".to_string()],
            git_mirrors: vec![format!("https://github.com/={}", mirror.url())],
            // What the operator binary finds itself: the API server's address.
            isolation_probe: Some(IsolationProbe::At(
                format!("{NODE_IP}:{}", cluster.server_port().unwrap())
                    .parse()
                    .unwrap(),
            )),
            ..compiler_on_the_node(&images)
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

    // Without the policy the build pod reaches the API server: nothing of the repository runs.
    Api::<NetworkPolicy>::namespaced(client.clone(), NAMESPACE)
        .delete("outlayer-sandbox-deny-all", &Default::default())
        .await
        .unwrap();
    git(&repo, &["checkout", "-q", "-b", "unisolated", "main"]);
    git(
        &repo,
        &["commit", "-q", "--allow-empty", "-m", "unisolated"],
    );
    let unisolated_sha = git(&repo, &["rev-parse", "unisolated"]);
    executions
        .create(
            &post,
            &request("unisolated", repo_url, &unisolated_sha, "x"),
        )
        .await
        .unwrap();
    let status = finished(&executions, "unisolated").await;
    assert_eq!(status.phase, Some(Phase::Failed), "{status:#?}");
    let message = status.message.unwrap_or_default();
    assert!(
        message.contains("its NetworkPolicy is not in force"),
        "{message}"
    );

    operator.stop().await;
}

/// A WASI command that grows its memory by `pages` (64 KiB each) and writes one byte in every 4 KiB
/// of it. A growth past `maxMemoryMb` is refused by the executor's limiter (a trap) before anything
/// is allocated.
fn memory_grower(pages: u32) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
            (memory (export "memory") 1)
            (func (export "_start")
                (local $at i32) (local $end i32)
                (drop (memory.grow (i32.const {pages})))
                (local.set $end (i32.mul (memory.size) (i32.const 65536)))
                (loop $touch
                    (i32.store8 (local.get $at) (i32.const 1))
                    (local.set $at (i32.add (local.get $at) (i32.const 4096)))
                    (br_if $touch (i32.lt_u (local.get $at) (local.get $end))))))"#
    ))
    .unwrap()
}

/// A WASI command with 1 MiB of linear memory that writes it to stdout `times` times: the executor
/// holds stdout in its own (host) memory, which the guest's memory limit does not cover.
fn output_flooder(times: u32) -> Vec<u8> {
    wat::parse_str(format!(
        r#"(module
            (import "wasi_snapshot_preview1" "fd_write"
                (func $fd_write (param i32 i32 i32 i32) (result i32)))
            (memory (export "memory") 17)
            (func (export "_start")
                (local $written i32)
                (i32.store (i32.const 0) (i32.const 64))
                (i32.store (i32.const 4) (i32.const 1048576))
                (loop $write
                    (drop (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))
                    (local.set $written (i32.add (local.get $written) (i32.const 1)))
                    (br_if $write (i32.lt_u (local.get $written) (i32.const {times}))))))"#
    ))
    .unwrap()
}

/// Memory limits hold at two levels. A guest growing its memory past `maxMemoryMb` is refused by the
/// executor (a guest failure, the user's). An executor the kernel kills at the pod's memory limit
/// (OOMKilled: here the guest floods stdout, which the executor buffers in its own memory, with an
/// output limit configured far beyond what the pod's memory overhead covers) is a platform failure:
/// re-run in fresh pods, then reported as `ExecutorFailed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kernel_oom_kill_is_a_platform_failure_and_the_executor_limit_comes_first() {
    let images = real_node_images();
    let cluster = start_real_node(&images, &[&images.executor]).await;
    deny_build_network(&cluster).await;
    let cache = real_node_cache(&cluster).await;
    let grower = publish_bytes(cache.path(), &memory_grower(127 * 16));
    let flooder = publish_bytes(cache.path(), &output_flooder(128));

    let config = OperatorConfig {
        executor_image: images.executor.clone(),
        // 256 MiB of stdout accepted, while the pod's memory is the guest's limit + 64 MiB.
        executor_max_output_bytes: 256 * 1024 * 1024,
        ..OperatorConfig::default()
    };
    let retries = config.platform_retries;
    let client = cluster.client();
    let operator = start_operator(test_context(client.clone(), config));
    let executions: Api<ExecutionRequest> = Api::namespaced(client.clone(), NAMESPACE);
    let post = PostParams::default();

    // Past maxMemoryMb: the executor refuses the growth before the kernel has anything to do.
    executions
        .create(&post, &by_hash("over-limit", &grower, "", 64))
        .await
        .unwrap();
    let status = finished(&executions, "over-limit").await;
    assert_eq!(status.phase, Some(Phase::Failed), "{status:#?}");
    assert_eq!(status.retries.unwrap_or(0), 0, "{status:#?}");
    let text = format!("{status:?}");
    assert!(text.contains("memory limit exceeded (64 MiB)"), "{text}");
    assert!(text.contains("MemoryLimit"), "{text}");

    // 128 MiB of output held by the executor in a pod limited to 16 + 64 MiB: the kernel kills it.
    executions
        .create(&post, &by_hash("oom", &flooder, "", 16))
        .await
        .unwrap();
    let status = finished(&executions, "oom").await;
    assert_eq!(status.phase, Some(Phase::Failed), "{status:#?}");
    assert_eq!(status.retries, Some(retries), "{status:#?}");
    let text = format!("{status:?}");
    assert!(text.contains("ExecutorFailed"), "{text}");
    assert!(text.contains("code 137 (OOMKilled)"), "{text}");
    // Every attempt ran in a pod of its own, and the kernel killed each one (failed pods are kept).
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let attempts = pods
        .list(&ListParams::default().labels(&format!("{EXECUTION_LABEL}=oom")))
        .await
        .unwrap()
        .items;
    assert_eq!(attempts.len(), retries as usize + 1, "{attempts:#?}");
    for pod in &attempts {
        let terminated = pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|c| c.iter().find(|c| c.name == EXECUTOR_CONTAINER))
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.terminated.as_ref())
            .unwrap_or_else(|| panic!("{pod:#?}"));
        assert_eq!(terminated.reason.as_deref(), Some("OOMKilled"), "{pod:#?}");
        assert_eq!(terminated.exit_code, 137, "{pod:#?}");
    }

    operator.stop().await;
}

/// The chart's fetch policy (charts/outlayer-operator/templates/networkpolicies.yaml, with
/// `compiler.urlFetch.allowCidrs: [<node IP>/32]`): fetch and resolve pods may reach only DNS, public
/// addresses on 443 and the admitted mirror on 443.
async fn fetch_egress(cluster: &Cluster, mirror_cidr: &str) {
    apply_policy(
        cluster,
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": {"name": "outlayer-fetch-egress"},
            "spec": {
                "podSelector": {
                    "matchLabels": {"app.kubernetes.io/name": "outlayer-compiler"},
                    "matchExpressions": [
                        {"key": "outlayer.dev/stage", "operator": "In", "values": ["fetch", "resolve"]}
                    ]
                },
                "policyTypes": ["Ingress", "Egress"],
                "egress": [
                    {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": [
                        "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "100.64.0.0/10"
                    ]}}], "ports": [{"protocol": "TCP", "port": 443}]},
                    {"to": [{"ipBlock": {"cidr": mirror_cidr}}], "ports": [{"protocol": "TCP", "port": 443}]}
                ]
            }
        }),
    )
    .await;
}

/// A module by URL on the real node: the fetch Job downloads it over the pod network from a mirror
/// the operator admits (its address in `--url-fetch-allow-cidr`, its CA in `--url-fetch-ca-file`),
/// through the chart's fetch policy as kube-router enforces it, and the module runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_by_url_is_fetched_through_the_enforced_fetch_policy() {
    let images = real_node_images();
    let cluster = start_real_node(&images, &[&images.executor, &images.compiler]).await;
    let echo = std::fs::read(artifact(
        "wasm32-wasip1/release/example-echo.wasm",
        "scripts/build-wasm",
    ))
    .unwrap();
    let echo_sha = hex::encode(Sha256::digest(&echo));
    let node_ip: std::net::IpAddr = NODE_IP.parse().unwrap();
    let mirror = HttpsMirror::start_at((node_ip, 443).into()).await.unwrap();
    mirror.route(
        "/echo.wasm",
        Route::Body {
            bytes: echo,
            content_length: true,
        },
    );

    deny_build_network(&cluster).await;
    fetch_egress(&cluster, &format!("{NODE_IP}/32")).await;
    let _cache = build_cache(&cluster).await;
    let config = OperatorConfig {
        executor_image: images.executor.clone(),
        compiler: CompilerConfig {
            url_fetch_allow_cidrs: vec![format!("{NODE_IP}/32")],
            url_fetch_ca_pem: Some(mirror.ca_pem().to_string()),
            ..compiler_on_the_node(&images)
        },
        ..OperatorConfig::default()
    };
    let client = cluster.client();
    let operator = start_operator(test_context(client.clone(), config));
    let executions: Api<ExecutionRequest> = Api::namespaced(client.clone(), NAMESPACE);
    let post = PostParams::default();

    let url = mirror.ip_url("/echo.wasm");
    let started = std::time::Instant::now();
    executions
        .create(
            &post,
            &request_for(
                "by-url",
                CodeRef::from_url(&url, &echo_sha),
                "fetched on a real node",
                32,
            ),
        )
        .await
        .unwrap();
    let status = finished(&executions, "by-url").await;
    eprintln!(
        "module by URL on the real node: {:?} in {:.1} s (fetch Job, run)",
        status.phase,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:#?}");
    assert_eq!(
        status.output.as_deref(),
        Some("fetched on a real node"),
        "{status:#?}"
    );
    assert_eq!(mirror.hits("/echo.wasm"), 1);

    operator.stop().await;
}
