// Each test binary includes this module and uses a subset of it.
#![allow(dead_code)]

//! Helpers the operator's cluster tests share.

pub mod chain;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use e2e_cluster::{Cluster, DEFAULT_NODE, NodeAgent};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::PostParams;
use kube::api::{Api, Patch, PatchParams};
use outlayer_operator::config::{CompilerConfig, OperatorConfig};
use outlayer_operator::crd;
use serde_json::json;
use sha2::{Digest, Sha256};

/// Generous: the control plane shares 2 cores with the build; a condition, not a timing, decides.
pub const WAIT: Duration = Duration::from_secs(120);

/// Polls `probe` until it yields a value; fails the test after [`WAIT`].
pub async fn wait_for<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A chain-less run of the repository `repo` at `commit` with `input`, text output, small limits.
pub fn request(name: &str, repo: &str, commit: &str, input: &str) -> crd::ExecutionRequest {
    crd::ExecutionRequest::new(
        name,
        crd::ExecutionRequestSpec {
            code: crd::CodeRef::from_repo(repo, commit),
            input: input.to_string(),
            limits: crd::Limits {
                max_instructions: 100_000_000,
                max_memory_mb: 32,
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
        let crds = crds.clone();
        wait_for(&format!("CRD {name} to be Established"), || {
            let crds = crds.clone();
            let name = name.clone();
            async move {
                let current = crds.get(&name).await.ok()?;
                current
                    .status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                    .then_some(())
            }
        })
        .await;
    }
}

/// The workspace's target directory (CARGO_TARGET_DIR or `<workspace>/target`), without `..`: paths from
/// here become program paths inside sandboxes and repository URLs, where `..` does not resolve.
pub fn target_dir() -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    std::fs::canonicalize(&dir).unwrap_or(dir)
}

/// An artifact under the target directory, or a failure that says how to build it.
pub fn artifact(relative: &str, how_to_build: &str) -> PathBuf {
    let path = target_dir().join(relative);
    assert!(
        path.exists(),
        "{} is missing: run {how_to_build}",
        path.display()
    );
    path
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
        cluster
            .create_namespace(
                NAMESPACE,
                &[("pod-security.kubernetes.io/enforce", "restricted")],
            )
            .await
            .unwrap();
        install_crds(&cluster).await;
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
    let wasm = std::fs::read(artifact(
        &format!("wasm32-wasip1/release/{guest}.wasm"),
        "scripts/build-wasm",
    ))
    .unwrap();
    let sha: String = Sha256::digest(&wasm)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
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

pub fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args([
            "-c",
            "user.name=OutLayer Tests",
            "-c",
            "user.email=tests@outlayer.dev",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// Commits the echo example as a standalone crate on branch `main` of a new repository at `repo`.
pub fn echo_main_branch(repo: &Path) {
    example_main_branch(repo, "echo");
}

/// Commits `examples/<example>` (a std-only guest) as a standalone crate on branch `main` of a new
/// repository at `repo`.
pub fn example_main_branch(repo: &Path, example: &str) {
    std::fs::create_dir_all(repo.join("src")).unwrap();
    std::fs::write(
        repo.join("Cargo.toml"),
        format!(
            "[package]\nname = \"{example}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[dependencies]\n"
        ),
    )
    .unwrap();
    let main = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../examples/{example}/src/main.rs")),
    )
    .unwrap();
    std::fs::write(repo.join("src/main.rs"), main).unwrap();
    git(repo, &["init", "-q", "-b", "main"]);
    git(repo, &["add", "."]);
    git(repo, &["commit", "-q", "-m", example]);
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

/// A fresh directory for test repositories, spelled without `..` (repository URLs may not contain it),
/// somewhere sandboxed pods can read: they see the host's filesystem read-only but get an empty /tmp, so
/// a checkout under /tmp (as CI may use) keeps its test repositories in the e2e cache instead.
pub fn repositories_dir() -> tempfile::TempDir {
    let candidates = [
        Some(target_dir().join("e2e-repos")),
        e2e_cluster::binaries::cache_root().map(|root| root.join("test-repos")),
    ];
    for root in candidates.into_iter().flatten() {
        std::fs::create_dir_all(&root).unwrap();
        let root = std::fs::canonicalize(root).unwrap();
        if !root.starts_with("/tmp") {
            return tempfile::tempdir_in(root).unwrap();
        }
    }
    panic!(
        "no place outside /tmp for test repositories: set OUTLAYER_E2E_CACHE to a directory outside /tmp"
    )
}

pub fn which(program: &str) -> String {
    let output = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .unwrap();
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}
