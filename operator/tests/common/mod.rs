// Each test binary includes this module and uses a subset of it.
#![allow(dead_code, unused_imports)]

//! Helpers the operator's cluster tests share.

pub mod chain;

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use e2e_cluster::{Cluster, DEFAULT_NODE, NodeAgent};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::PostParams;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::wait::conditions;
use outlayer_operator::config::{CompilerConfig, OperatorConfig};
use outlayer_operator::crd;
use serde_json::json;
use sha2::{Digest, Sha256};

pub use outlayer_testkit::cluster::{await_condition_within, repositories_dir};
pub use outlayer_testkit::{artifact, git, target_dir, which};

/// Generous: the control plane shares 2 cores with the build; a condition, not a timing, decides.
pub const WAIT: Duration = Duration::from_secs(120);

/// Polls `probe` until it yields a value; fails the test after [`WAIT`].
pub async fn wait_for<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    outlayer_testkit::wait_for(what, WAIT, probe).await
}

/// A chain-less run of the repository `repo` at `commit` with `input`, text output, small limits.
pub fn request(name: &str, repo: &str, commit: &str, input: &str) -> crd::ExecutionRequest {
    request_for(name, crd::CodeRef::from_repo(repo, commit), input, 32)
}

/// A kubectl request of `code` with `input`: 10^8 instructions, `max_memory_mb`, 10 s, Text.
pub fn request_for(
    name: &str,
    code: crd::CodeRef,
    input: &str,
    max_memory_mb: u32,
) -> crd::ExecutionRequest {
    crd::ExecutionRequest::new(
        name,
        crd::ExecutionRequestSpec {
            code,
            input: input.to_string(),
            limits: crd::Limits {
                max_instructions: 100_000_000,
                max_memory_mb,
                max_execution_seconds: 10,
            },
            response_format: crd::ResponseFormat::Text,
            secrets_ref: None,
            compile_only: false,
            deterministic: None,
            on_chain: None,
        },
    )
}

/// The status of ExecutionRequest `name` once it is in a terminal phase.
pub async fn finished(api: &Api<crd::ExecutionRequest>, name: &str) -> crd::ExecutionRequestStatus {
    wait_for(&format!("{name} to finish"), || async {
        let status = api.get(name).await.ok()?.status?;
        status
            .phase
            .is_some_and(|p| p.is_terminal())
            .then_some(status)
    })
    .await
}

/// The condition `kind` of an ExecutionRequest's status; fails the test when it is missing.
pub fn condition<'a>(status: &'a crd::ExecutionRequestStatus, kind: &str) -> &'a Condition {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
        .unwrap_or_else(|| panic!("no {kind} condition in {:?}", status.conditions))
}

/// Applies every CRD with server-side apply and waits until each is Established.
pub async fn install_crds(cluster: &Cluster) {
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client());
    let params = PatchParams::apply("outlayer-operator-tests").force();
    for definition in crd::all() {
        let name = definition.metadata.name.clone().unwrap();
        crds.patch(&name, &params, &Patch::Apply(&definition))
            .await
            .unwrap_or_else(|e| panic!("apiserver rejected CRD {name}: {e}"));
    }
    for definition in crd::all() {
        let name = definition.metadata.name.clone().unwrap();
        await_condition_within(
            &format!("CRD {name} to be Established"),
            WAIT,
            crds.clone(),
            &name,
            conditions::is_crd_established(),
        )
        .await;
    }
}

/// The namespace the operator's test workloads run in; it enforces Pod Security "restricted".
pub const NAMESPACE: &str = "outlayer-jobs";
/// The image name the node agent maps to the freshly built `outlayer-executor`.
pub const EXECUTOR_IMAGE: &str = "outlayer/executor:test";
/// An executor image whose first container in a cluster dies without a result (a platform failure)
/// and whose later ones run the real executor.
pub const FLAKY_EXECUTOR_IMAGE: &str = "outlayer/flaky-executor:test";
/// The image name the node agent maps to the freshly built `outlayer-compiler`.
pub const COMPILER_IMAGE: &str = "outlayer/compiler:test";

/// A control plane with a node agent that runs the real executor, the CRDs installed, a restricted
/// namespace and the module cache as a hostPath PersistentVolume bound to claim `outlayer-cache`.
/// Field order matters: the agent (and its containers) stops before the control plane.
pub struct OperatorEnv {
    pub agent: NodeAgent,
    pub cluster: Cluster,
    pub cache: tempfile::TempDir,
}

impl OperatorEnv {
    pub async fn start() -> Self {
        let executor = artifact(
            "debug/outlayer-executor",
            "cargo build -p outlayer-executor",
        );
        let compiler = artifact(
            "debug/outlayer-compiler",
            "cargo build -p outlayer-compiler",
        );
        let cache = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(cache.path().join("wasm")).unwrap();
        let results = cache.path().join("results");
        std::fs::create_dir_all(&results).unwrap();
        // The executor runs as uid 65532 and writes large outputs here.
        std::fs::set_permissions(
            &results,
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .unwrap();
        let cluster = Cluster::start().await.unwrap();
        let agent_config = cluster
            .node_agent_config(DEFAULT_NODE)
            .unwrap()
            .with_image(EXECUTOR_IMAGE, &[executor.to_str().unwrap()])
            .with_image(COMPILER_IMAGE, &[compiler.to_str().unwrap()])
            .with_image(
                FLAKY_EXECUTOR_IMAGE,
                // The executor is `$0`: a path of the mapping, so the agent binds it into the sandbox.
                &[
                    "/bin/sh",
                    "-c",
                    "if [ -e /outputs/.flaky-ran ]; then exec \"$0\" \"$@\"; fi; \
                     touch /outputs/.flaky-ran; exit 3",
                    executor.to_str().unwrap(),
                ],
            );
        let agent = cluster.start_node_agent(agent_config).await.unwrap();
        prepare_namespace(&cluster).await;
        create_cache_volume(&cluster, cache.path()).await;
        Self {
            agent,
            cluster,
            cache,
        }
    }

    /// Copies an example guest into `<cache>/wasm/<sha256>.wasm` the way the build Job publishes it.
    pub fn publish(&self, guest: &str) -> String {
        publish(self.cache.path(), guest)
    }
}

/// Copies a guest into `<cache>/wasm/<sha256>.wasm` the way the build Job publishes it.
pub fn publish(cache: &Path, guest: &str) -> String {
    let wasm = std::fs::read(outlayer_testkit::guest_wasm(guest)).unwrap();
    publish_bytes(cache, &wasm)
}

/// Publishes `wasm` as `<cache>/wasm/<sha256>.wasm` and returns the hash.
pub fn publish_bytes(cache: &Path, wasm: &[u8]) -> String {
    let sha = hex::encode(Sha256::digest(wasm));
    std::fs::write(cache.join("wasm").join(format!("{sha}.wasm")), wasm).unwrap();
    sha
}

pub async fn create_cache_volume(cluster: &Cluster, dir: &Path) {
    let pv: PersistentVolume = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "outlayer-cache-pv"},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "manual",
            "hostPath": {"path": dir.to_str().unwrap()}
        }
    }))
    .unwrap();
    Api::<PersistentVolume>::all(cluster.client())
        .create(&PostParams::default(), &pv)
        .await
        .unwrap();
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "outlayer-cache"},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "manual",
            "resources": {"requests": {"storage": "1Gi"}}
        }
    }))
    .unwrap();
    Api::<PersistentVolumeClaim>::namespaced(cluster.client(), NAMESPACE)
        .create(&PostParams::default(), &claim)
        .await
        .unwrap();
}

/// The operator's controllers running in this test process until [`RunningOperator::stop`].
pub struct RunningOperator {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

/// A controller context for tests (Events reported by instance "test").
pub fn test_context(
    client: kube::Client,
    config: outlayer_operator::config::OperatorConfig,
) -> std::sync::Arc<outlayer_operator::context::Context> {
    std::sync::Arc::new(outlayer_operator::context::Context::new(
        client,
        config,
        Some("test".to_string()),
    ))
}

/// Runs the controllers in [`NAMESPACE`] with `ctx`.
pub fn start_operator(ctx: std::sync::Arc<outlayer_operator::context::Context>) -> RunningOperator {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(outlayer_operator::controllers::run(
        ctx,
        NAMESPACE,
        async move {
            let _ = stopped.await;
        },
    ));
    RunningOperator { stop, task }
}

impl RunningOperator {
    /// Stops the controllers the way a crash does: no drain, in-flight work cut off where it is.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }

    /// Shuts the controllers down gracefully and waits for them.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.expect("the controllers' task panicked");
    }
}

/// Commits the echo example as a standalone crate on branch `main` of a new repository at `repo`.
pub fn echo_main_branch(repo: &Path) {
    example_main_branch(repo, "echo");
}

/// Commits `examples/<example>` (a std-only guest) as a standalone crate on branch `main` of a new
/// repository at `repo`.
pub fn example_main_branch(repo: &Path, example: &str) {
    outlayer_testkit::example_repository(repo, example);
}

/// The operator's configuration for these tests: test images, the repositories' directory as the only
/// allowed prefix, and the host toolchain for the compiler (a real compiler image has it baked in; the
/// node agent starts containers with an empty environment).
pub fn operator_config(repos: &Path) -> OperatorConfig {
    let rustup_home = std::env::var("RUSTUP_HOME")
        .unwrap_or_else(|_| format!("{}/.rustup", std::env::var("HOME").unwrap()));
    OperatorConfig {
        executor_image: EXECUTOR_IMAGE.to_string(),
        compiler: CompilerConfig {
            image: COMPILER_IMAGE.to_string(),
            allowed_repo_prefixes: vec![format!("file://{}/", repos.display())],
            env: vec![
                ("PATH".to_string(), std::env::var("PATH").unwrap()),
                ("OUTLAYER_GIT".to_string(), which("git")),
                ("OUTLAYER_CARGO".to_string(), which("cargo")),
                ("RUSTUP_HOME".to_string(), rustup_home),
            ],
            ..CompilerConfig::default()
        },
        ..OperatorConfig::default()
    }
}

/// The images the real-node tests run, built from the repository's Dockerfiles around the freshly
/// built debug binaries.
pub fn real_node_images() -> e2e_cluster::real_node::Images {
    e2e_cluster::real_node::build_images(&target_dir().join("debug")).unwrap()
}

/// A control plane with a real node (kubelet, containerd, runc) holding `images` (plus the pause
/// image), the restricted [`NAMESPACE`] and the CRDs installed.
pub async fn start_real_node(images: &e2e_cluster::real_node::Images, only: &[&str]) -> Cluster {
    let mut cluster = Cluster::start_with(e2e_cluster::ClusterOptions::real_node())
        .await
        .unwrap();
    cluster.start_real_node(&images.only(only)).await.unwrap();
    prepare_namespace(&cluster).await;
    cluster
}

/// The restricted [`NAMESPACE`] (Pod Security "restricted" enforced) and the CRDs, Established.
pub async fn prepare_namespace(cluster: &Cluster) {
    cluster
        .create_namespace(
            NAMESPACE,
            &[("pod-security.kubernetes.io/enforce", "restricted")],
        )
        .await
        .unwrap();
    install_crds(cluster).await;
}

/// A run of the published module `sha256` (no compile) with `input` and `max_memory_mb`.
pub fn by_hash(name: &str, sha256: &str, input: &str, max_memory_mb: u32) -> crd::ExecutionRequest {
    let code = crd::CodeRef {
        module_url: None,
        source: None,
        wasm_sha256: Some(sha256.to_string()),
    };
    request_for(name, code, input, max_memory_mb)
}

/// Commits, on a new branch `network` off `main`, a `build.rs` that tries to reach `address`
/// (`host:port`) and fails the build when it cannot (a build that succeeds had the network); leaves
/// `main` checked out.
pub fn network_probe_branch(repo: &Path, address: &str) {
    git(repo, &["checkout", "-q", "-b", "network", "main"]);
    std::fs::write(
        repo.join("build.rs"),
        format!(
            "fn main() {{\n    let address = \"{address}\".parse().unwrap();\n    \
             match std::net::TcpStream::connect_timeout(&address, std::time::Duration::from_secs(3)) {{\n        \
             Ok(_) => println!(\"cargo:warning=the build reached the network\"),\n        \
             Err(e) => panic!(\"network unreachable from the build: {{e}}\"),\n    }}\n}}\n"
        ),
    )
    .unwrap();
    git(repo, &["add", "build.rs"]);
    git(
        repo,
        &["commit", "-q", "-m", "build script probing the network"],
    );
    git(repo, &["checkout", "-q", "main"]);
}

/// The module cache on a real node: `wasm/` and `results/` owned by uid 65532 (the build Job publishes
/// and the executor writes as that user; a hostPath volume has no fsGroup), bound as claim
/// `outlayer-cache`.
pub async fn real_node_cache(cluster: &Cluster) -> tempfile::TempDir {
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
    create_cache_volume(cluster, cache.path()).await;
    cache
}
