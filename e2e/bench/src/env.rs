//! The cluster the benchmarks run on: a local control plane, a node agent that runs the real executor
//! (and, for the on-chain bench, the real compiler) or a real node running the images built from the
//! repository's Dockerfiles, the CRDs, a restricted namespace and the module cache as a hostPath
//! PersistentVolume. Mirrors `operator/tests/common` (a test module, not a
//! library), with errors instead of panics.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use e2e_cluster::{Cluster, ClusterOptions, DEFAULT_NODE, NodeAgent, real_node};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use outlayer_operator::crd;
use serde_json::json;
use sha2::{Digest, Sha256};

/// The image name the node agent maps to the executor binary under test.
pub const EXECUTOR_IMAGE: &str = "outlayer/executor:bench";
/// The image name the node agent maps to the compiler binary (only when one is given).
pub const COMPILER_IMAGE: &str = "outlayer/compiler:bench";
/// The namespace of the latency and throughput runs; it enforces Pod Security "restricted" like
/// the operator's tests, so executor pods pass the real admission on every run.
pub const NAMESPACE: &str = "outlayer-bench";
const CACHE_CLAIM: &str = "outlayer-cache";

/// Field order matters: the agent (and its containers) stops before the control plane.
pub struct BenchEnv {
    /// Held for its lifetime: dropping it stops the node agent (none on a real node, which the
    /// cluster owns).
    _agent: Option<NodeAgent>,
    /// The executor image pods run: the node agent's mapped name, or the real node's built image.
    pub executor_image: String,
    /// The compiler image fetch and build Jobs run, when the bench compiles (the node agent's mapped
    /// name, or the real node's built image).
    pub compiler_image: Option<String>,
    pub cluster: Cluster,
    pub cache: tempfile::TempDir,
}

impl BenchEnv {
    /// `compiler`: also map [`COMPILER_IMAGE`] to this binary, for benchmarks that compile.
    pub async fn start(executor: &Path, compiler: Option<&Path>) -> anyhow::Result<Self> {
        let utf8 = |path: &Path, what: &str| {
            path.to_str()
                .map(str::to_string)
                .with_context(|| format!("{what} path {} is not UTF-8", path.display()))
        };
        let executor = utf8(executor, "executor")?;
        let compiler = compiler.map(|c| utf8(c, "compiler")).transpose()?;
        let cache = tempfile::tempdir().context("create the module cache directory")?;
        std::fs::create_dir_all(cache.path().join("wasm")).context("create <cache>/wasm")?;
        let results = cache.path().join("results");
        std::fs::create_dir_all(&results).context("create <cache>/results")?;
        // The executor runs as uid 65532 and writes large outputs here.
        std::fs::set_permissions(
            &results,
            std::os::unix::fs::PermissionsExt::from_mode(0o777),
        )
        .context("open <cache>/results to the executor's uid")?;
        let cluster = Cluster::start()
            .await
            .context("start the local control plane (e2e/control-plane/build.sh builds it)")?;
        let mut agent_config = cluster
            .node_agent_config(DEFAULT_NODE)?
            .with_image(EXECUTOR_IMAGE, &[executor.as_str()]);
        if let Some(compiler) = &compiler {
            agent_config = agent_config.with_image(COMPILER_IMAGE, &[compiler.as_str()]);
        }
        let agent = cluster
            .start_node_agent(agent_config)
            .await
            .context("start the node agent")?;
        prepare_namespace(&cluster, cache.path()).await?;
        Ok(Self {
            _agent: Some(agent),
            executor_image: EXECUTOR_IMAGE.to_string(),
            compiler_image: compiler.map(|_| COMPILER_IMAGE.to_string()),
            cluster,
            cache,
        })
    }

    /// The same on a real node (kubelet, containerd, runc; needs root): images built from the
    /// repository's Dockerfiles with the binaries in `bin_dir` (`e2e/real-node/images.sh`). With
    /// `compiler`, the compiler image is imported too and the cache is writable by its uid (65532):
    /// the build Job publishes `wasm/` and the kubelet creates each `workspaces/<CompileJob>` subPath
    /// with the mode of the volume's root.
    pub async fn start_real_node(bin_dir: &Path, compiler: bool) -> anyhow::Result<Self> {
        let cache = tempfile::tempdir().context("create the module cache directory")?;
        for dir in ["wasm", "results"] {
            std::fs::create_dir_all(cache.path().join(dir))
                .with_context(|| format!("create <cache>/{dir}"))?;
        }
        // The executor runs as uid 65532 and writes large outputs here; the kubelet reads the rest.
        let root_mode = if compiler { 0o777 } else { 0o755 };
        for (dir, mode) in [("", root_mode), ("wasm", 0o755), ("results", 0o777)] {
            let path = cache.path().join(dir);
            if compiler {
                std::os::unix::fs::chown(&path, Some(65532), Some(65532))
                    .with_context(|| format!("chown <cache>/{dir} to 65532"))?;
            }
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(mode))
                .with_context(|| format!("chmod <cache>/{dir}"))?;
        }
        let bin_dir = bin_dir.to_path_buf();
        let images = tokio::task::spawn_blocking(move || real_node::build_images(&bin_dir))
            .await
            .context("the image build task")??;
        let mut cluster = Cluster::start_with(ClusterOptions::real_node())
            .await
            .context("start the local control plane")?;
        cluster
            .start_real_node(&images.only(&if compiler {
                vec![images.executor.as_str(), images.compiler.as_str()]
            } else {
                vec![images.executor.as_str()]
            }))
            .await
            .context("start the real node (e2e/real-node/build.sh builds it)")?;
        prepare_namespace(&cluster, cache.path()).await?;
        Ok(Self {
            _agent: None,
            executor_image: images.executor.clone(),
            compiler_image: compiler.then(|| images.compiler.clone()),
            cluster,
            cache,
        })
    }

    /// Copies a guest into `<cache>/wasm/<sha256>.wasm` the way the build Job publishes it, and
    /// returns its hash.
    pub fn publish(&self, guest: &Path) -> anyhow::Result<String> {
        let wasm =
            std::fs::read(guest).with_context(|| format!("read guest {}", guest.display()))?;
        let sha = hex::encode(Sha256::digest(&wasm));
        let target = self.cache.path().join("wasm").join(format!("{sha}.wasm"));
        std::fs::write(&target, wasm)
            .with_context(|| format!("publish {} to {}", guest.display(), target.display()))?;
        Ok(sha)
    }
}

/// The workspace's target directory (CARGO_TARGET_DIR or `<workspace>/target`), as the tests and
/// `scripts/build-wasm` find it.
pub use outlayer_testkit::target_dir;

/// The build profiles the benches take binaries from (`--binaries`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Binaries {
    /// `release/` when the binary is there, else `debug/`.
    Auto,
    Release,
    Debug,
}

impl Binaries {
    /// The profile directories to look in, in order.
    pub fn profiles(self) -> &'static [&'static str] {
        match self {
            Binaries::Auto => &["release", "debug"],
            Binaries::Release => &["release"],
            Binaries::Debug => &["debug"],
        }
    }
}

/// A binary under the target directory from `binaries`' profiles; with the profile it came from.
pub fn built_binary(name: &str, binaries: Binaries) -> anyhow::Result<(PathBuf, &'static str)> {
    for profile in binaries.profiles() {
        let path = target_dir().join(profile).join(name);
        if path.exists() {
            return Ok((path, profile));
        }
    }
    if binaries == Binaries::Release {
        bail!(
            "{name} is not in {}/release: run `cargo build --release -p {name}`",
            target_dir().display()
        );
    }
    bail!(
        "{name} is in neither {}/release nor {}/debug: run `cargo build -p {name}`",
        target_dir().display(),
        target_dir().display()
    )
}

/// The restricted bench namespace, the CRDs and the cache claim bound to `cache`.
async fn prepare_namespace(cluster: &Cluster, cache: &Path) -> anyhow::Result<()> {
    cluster
        .create_namespace(
            NAMESPACE,
            &[("pod-security.kubernetes.io/enforce", "restricted")],
        )
        .await
        .with_context(|| format!("create namespace {NAMESPACE}"))?;
    install_crds(cluster).await?;
    create_cache_volume(cluster, cache).await
}

/// Applies every CRD with server-side apply and waits until each is Established.
async fn install_crds(cluster: &Cluster) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client());
    let params = PatchParams::apply("outlayer-operator-bench").force();
    for definition in crd::all() {
        let name = definition.metadata.name.clone().unwrap_or_default();
        crds.patch(&name, &params, &Patch::Apply(&definition))
            .await
            .with_context(|| format!("apply CRD {name}"))?;
    }
    for definition in crd::all() {
        let name = definition.metadata.name.clone().unwrap_or_default();
        let established = await_condition(crds.clone(), &name, conditions::is_crd_established());
        tokio::time::timeout(Duration::from_secs(120), established)
            .await
            .with_context(|| format!("CRD {name} was not Established within 120 s"))?
            .with_context(|| format!("watch CRD {name}"))?;
    }
    Ok(())
}

async fn create_cache_volume(cluster: &Cluster, dir: &Path) -> anyhow::Result<()> {
    let path = dir
        .to_str()
        .with_context(|| format!("cache path {} is not UTF-8", dir.display()))?;
    let pv: PersistentVolume = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "outlayer-bench-cache"},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "manual",
            "hostPath": {"path": path}
        }
    }))?;
    Api::<PersistentVolume>::all(cluster.client())
        .create(&PostParams::default(), &pv)
        .await
        .context("create the cache PersistentVolume")?;
    let claim: PersistentVolumeClaim = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": CACHE_CLAIM},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "manual",
            "resources": {"requests": {"storage": "1Gi"}}
        }
    }))?;
    Api::<PersistentVolumeClaim>::namespaced(cluster.client(), NAMESPACE)
        .create(&PostParams::default(), &claim)
        .await
        .with_context(|| format!("create claim {CACHE_CLAIM} in {NAMESPACE}"))?;
    // The binder binds on its periodic sync (~15 s): wait here so no timed run pays for it.
    let claims = Api::<PersistentVolumeClaim>::namespaced(cluster.client(), NAMESPACE);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let phase = claims
            .get(CACHE_CLAIM)
            .await
            .with_context(|| format!("read claim {CACHE_CLAIM}"))?
            .status
            .and_then(|s| s.phase);
        if phase.as_deref() == Some("Bound") {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("claim {CACHE_CLAIM} was not Bound within 120 s (phase {phase:?})");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
