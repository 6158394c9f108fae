//! The on-chain bench's world, as `operator/tests/onchain.rs` builds it: the cluster (executor and
//! compiler images), the test localnet running the real contract wasm, a user and the operator's
//! account, and the echo example in a local git repository that the compiler fetches through a git
//! mirror (the contract only accepts GitHub URLs).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use e2e_bench::env::{BenchEnv, COMPILER_IMAGE, NAMESPACE, target_dir};
use e2e_cluster::real_node::GitMirror;
use e2e_localnet::{InitCall, Localnet, LocalnetConfig};
use kube::api::{Api, PostParams};
use near_crypto::SecretKey;
use near_primitives::types::AccountId;
use outlayer_operator::chain::{ChainClient, ChainConfig, OperatorSigner};
use outlayer_operator::config::{CompilerConfig, OnChainConfig, OperatorConfig};
use outlayer_operator::context::Context;
use outlayer_operator::crd::{
    BUILD_TARGET_WASIP1, CompileJob, CompileJobSpec, CompileSource, condition_status,
};
// Deterministic keys: the localnet is throwaway and nothing else ever sees them.
use outlayer_testkit::near::{NEAR, secret};
use serde_json::json;

pub const CONTRACT: &str = "outlayer.localnet";
pub const USER: &str = "alice.localnet";
pub const OPERATOR: &str = "operator.localnet";
/// The repository as users name it; the operator fetches it from the local mirror.
pub const REPO: &str = "https://github.com/outlayer/echo";
/// Bounds a hang, not a figure: a debug-built compile of the echo crate on a loaded 2-core machine.
const PRECOMPILE_TIMEOUT: Duration = Duration::from_secs(900);

pub fn account(name: &str) -> anyhow::Result<AccountId> {
    name.parse()
        .with_context(|| format!("{name:?} is not a NEAR account id"))
}

/// Key `index` of the operator's resolve pool; 0 is the account's own full-access key.
fn pool_secret(index: usize) -> SecretKey {
    if index == 0 {
        secret(OPERATOR)
    } else {
        secret(&format!("{OPERATOR} pool key {index}"))
    }
}

/// Where the localnet runs: in this process (the default), or as an `e2e-localnet` process of its
/// own, so its CPU time and profile are apart from the operator's.
pub enum LocalnetHost {
    InProcess(Localnet),
    Process(LocalnetProcess),
}

impl LocalnetHost {
    pub fn rpc_url(&self) -> String {
        match self {
            LocalnetHost::InProcess(localnet) => localnet.rpc_url(),
            LocalnetHost::Process(process) => process.rpc_url.clone(),
        }
    }

    /// The height and timestamp of the block `block_id` names (a height or a hash): read from the
    /// chain in this process, or asked of the localnet process with the `block` RPC method.
    pub async fn block(&self, block_id: BlockId) -> anyhow::Result<Option<(u64, u64)>> {
        match self {
            LocalnetHost::InProcess(localnet) => Ok(localnet.with_chain(|chain| {
                match &block_id {
                    BlockId::Height(height) => chain.block_at(*height),
                    BlockId::Hash(hash) => chain.block_by_hash(hash),
                }
                .map(|block| (block.height, block.timestamp_ns))
            })),
            LocalnetHost::Process(process) => {
                let id = match &block_id {
                    BlockId::Height(height) => json!(height),
                    BlockId::Hash(hash) => json!(hash.to_string()),
                };
                let answer: serde_json::Value = reqwest::Client::new()
                    .post(&process.rpc_url)
                    .json(&json!({"jsonrpc": "2.0", "id": "bench", "method": "block",
                                  "params": {"block_id": id}}))
                    .send()
                    .await
                    .with_context(|| format!("ask the localnet for block {block_id:?}"))?
                    .json()
                    .await
                    .with_context(|| format!("the localnet's answer for block {block_id:?}"))?;
                let header = &answer["result"]["header"];
                Ok(header["height"].as_u64().zip(
                    header["timestamp_nanosec"]
                        .as_str()
                        .and_then(|ns| ns.parse().ok())
                        .or_else(|| header["timestamp"].as_u64()),
                ))
            }
        }
    }
}

/// A block by height or by hash.
#[derive(Debug)]
pub enum BlockId {
    Height(u64),
    Hash(near_primitives::hash::CryptoHash),
}

/// An `e2e-localnet` child process serving `rpc_url`; killed when dropped.
pub struct LocalnetProcess {
    child: std::process::Child,
    rpc_url: String,
    /// Holds the genesis config the process read.
    _config_dir: tempfile::TempDir,
}

impl LocalnetProcess {
    /// Starts `binary` on `config` (written to a temp file) and reads the URL it prints first.
    fn start(binary: &Path, config: &LocalnetConfig) -> anyhow::Result<Self> {
        use std::io::BufRead as _;
        let config_dir =
            tempfile::tempdir().context("create a temp dir for the localnet config")?;
        let config_path = config_dir.path().join("localnet.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(config)?)
            .with_context(|| format!("write {}", config_path.display()))?;
        let mut child = Command::new(binary)
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .spawn()
            .with_context(|| format!("start {}", binary.display()))?;
        let stdout = child.stdout.take().context("the localnet's stdout")?;
        let mut first_line = String::new();
        let read = std::io::BufReader::new(stdout).read_line(&mut first_line);
        let rpc_url = first_line.trim().to_string();
        if read.is_err() || !rpc_url.starts_with("http://") {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "{} did not print its RPC URL (first line {rpc_url:?})",
                binary.display()
            );
        }
        Ok(Self {
            child,
            rpc_url,
            _config_dir: config_dir,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for LocalnetProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Field order matters: the cluster (and its agent) stops before the localnet.
pub struct ChainBench {
    pub env: BenchEnv,
    pub localnet: LocalnetHost,
    repos: tempfile::TempDir,
    pub commit: String,
    pub block_time: Duration,
    /// On a real node: the `git daemon` fetch Jobs clone from over the pod network (held for its
    /// lifetime). Under the node agent the compiler reads the repositories as files instead.
    mirror: Option<GitMirror>,
    /// One client for all of the user's calls: its clones share the user's nonce.
    pub user: ChainClient,
    /// Views and transaction look-ups only (no key).
    pub viewer: ChainClient,
    /// Requests ask only to compile (`params.compile_only`): nothing runs.
    pub compile_only: bool,
}

impl ChainBench {
    /// `real_node`: pods run as containers on a real node with the images built from the
    /// Dockerfiles and the binaries next to `executor` (which must hold the compiler and operator
    /// too); otherwise under the node agent with `executor` and `compiler` mapped.
    pub async fn start(
        block_time: Duration,
        executor: &Path,
        compiler: &Path,
        contract_wasm: PathBuf,
        real_node: bool,
        localnet_binary: Option<&Path>,
    ) -> anyhow::Result<Self> {
        let repos = repositories_dir()?;
        let repo = repos.path().join("outlayer").join("echo");
        echo_main_branch(&repo)?;
        let commit = git(&repo, &["rev-parse", "main"])?;
        let (env, mirror) = if real_node {
            let bin_dir = executor
                .parent()
                .context("the executor binary has no directory")?;
            let env = BenchEnv::start_real_node(bin_dir, true).await?;
            let log_dir = env
                .cluster
                .state_dir()
                .context("the real node's cluster has no state directory")?
                .to_path_buf();
            let mirror = GitMirror::start(repos.path(), &log_dir)
                .context("start the git mirror on the node")?;
            (env, Some(mirror))
        } else {
            (BenchEnv::start(executor, Some(compiler)).await?, None)
        };
        let config = LocalnetConfig::default()
            .with_block_time(block_time)
            .with_account(account(USER)?, 1000 * NEAR, secret(USER).public_key())
            .with_account(
                account(OPERATOR)?,
                100 * NEAR,
                secret(OPERATOR).public_key(),
            )
            .with_contract(
                account(CONTRACT)?,
                10 * NEAR,
                contract_wasm,
                Some(InitCall {
                    method: "new".to_string(),
                    args: json!({"owner_id": USER, "operator_id": OPERATOR}),
                }),
            );
        let localnet =
            match localnet_binary {
                None => LocalnetHost::InProcess(Localnet::start(config).await.context(
                    "start the localnet with the contract (scripts/build-wasm builds it)",
                )?),
                Some(binary) => LocalnetHost::Process(LocalnetProcess::start(binary, &config)?),
            };
        let mut user_config = ChainConfig::new(vec![localnet.rpc_url()], account(CONTRACT)?);
        // A burst of 100 sends from one key races on nonces; each lost race costs one re-sign.
        user_config.max_resigns = 50;
        let user = ChainClient::new(user_config, Some(signer(USER)?))
            .context("build the user's chain client")?;
        let viewer = ChainClient::new(
            ChainConfig::new(vec![localnet.rpc_url()], account(CONTRACT)?),
            None,
        )
        .context("build the view-only chain client")?;
        Ok(Self {
            env,
            localnet,
            repos,
            commit,
            block_time,
            mirror,
            user,
            viewer,
            compile_only: false,
        })
    }

    /// The operator as deployed (default chain client settings and on-chain planning), with the
    /// bench's images, the git mirror, the localnet's block time and the poll interval under test.
    pub fn operator_config(&self, poll_interval: Duration) -> anyhow::Result<OperatorConfig> {
        let compiler = match &self.mirror {
            // The compiler image has its toolchain baked in; the node has 2 CPUs, so the build
            // gets one (the default of 2 would leave nothing for anything else).
            Some(mirror) => CompilerConfig {
                image: self
                    .env
                    .compiler_image
                    .clone()
                    .context("the real node was started without the compiler image")?,
                allowed_repo_prefixes: vec!["https://github.com/".to_string()],
                git_mirrors: vec![format!("https://github.com/={}", mirror.url())],
                cpu: "1".to_string(),
                memory: "2Gi".to_string(),
                ..CompilerConfig::default()
            },
            None => self.node_agent_compiler()?,
        };
        Ok(OperatorConfig {
            executor_image: self.env.executor_image.clone(),
            cache_mount_path: Some(self.env.cache.path().to_path_buf()),
            compiler,
            on_chain: OnChainConfig {
                expected_block_time: self.block_time,
                poll_interval,
                ..OnChainConfig::default()
            },
            ..OperatorConfig::default()
        })
    }

    /// The compiler under the node agent: the host's binary, toolchain and repositories.
    fn node_agent_compiler(&self) -> anyhow::Result<CompilerConfig> {
        let rustup_home = match std::env::var("RUSTUP_HOME") {
            Ok(home) => home,
            Err(_) => format!(
                "{}/.rustup",
                std::env::var("HOME").context("neither RUSTUP_HOME nor HOME is set")?
            ),
        };
        Ok(CompilerConfig {
            image: COMPILER_IMAGE.to_string(),
            allowed_repo_prefixes: vec!["https://github.com/".to_string()],
            git_mirrors: vec![format!(
                "https://github.com/=file://{}/",
                self.repos.path().display()
            )],
            // The node agent starts containers with an empty environment; a real compiler
            // image has its toolchain baked in, here it is the host's.
            env: vec![
                (
                    "PATH".to_string(),
                    std::env::var("PATH").context("PATH is not set")?,
                ),
                ("OUTLAYER_GIT".to_string(), which("git")?),
                ("OUTLAYER_CARGO".to_string(), which("cargo")?),
                ("RUSTUP_HOME".to_string(), rustup_home),
            ],
            ..CompilerConfig::default()
        })
    }

    /// The controllers, chain watcher and submitter in this process, signing as the operator with
    /// the client settings the operator binary uses.
    /// `signing_keys` keys sign resolves: the operator's own key and `signing_keys - 1` function-call
    /// keys [`Self::add_pool_keys`] added.
    pub fn start_operator(
        &self,
        config: OperatorConfig,
        signing_keys: usize,
    ) -> anyhow::Result<RunningOperator> {
        let keys = (0..signing_keys.max(1))
            .map(|index| Ok(OperatorSigner::new(account(OPERATOR)?, pool_secret(index))))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let chain = ChainClient::with_keys(
            ChainConfig::new(vec![self.localnet.rpc_url()], account(CONTRACT)?),
            keys,
        )
        .context("build the operator's chain client")?;
        let ctx = Context::new(self.env.cluster.client(), config, Some("bench".to_string()))
            .with_chain(Arc::new(chain.clone()));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(outlayer_operator::controllers::run(
            Arc::new(ctx),
            NAMESPACE,
            async move {
                let _ = stopped.await;
            },
        ));
        Ok(RunningOperator { stop, task, chain })
    }

    /// Adds function-call keys 1..`count` of the pool to the operator's account (as
    /// `outlayer-operator add-keys` does), signed by its full-access key.
    pub async fn add_pool_keys(&self, count: usize) -> anyhow::Result<()> {
        if count <= 1 {
            return Ok(());
        }
        let primary = ChainClient::new(
            ChainConfig::new(vec![self.localnet.rpc_url()], account(CONTRACT)?),
            Some(signer(OPERATOR)?),
        )?;
        let public: Vec<_> = (1..count).map(|i| pool_secret(i).public_key()).collect();
        let outcome = primary.add_pool_keys(&public).await?;
        anyhow::ensure!(
            matches!(
                outcome.status,
                outlayer_operator::chain::CallStatus::Success(_)
            ),
            "AddKey failed: {:?}",
            outcome.status
        );
        Ok(())
    }

    /// A CompileJob created ahead of time, as `kubectl apply` would: every request then hits the
    /// cache. Returns how long the compile took.
    pub async fn precompile(&self) -> anyhow::Result<Duration> {
        let source = CompileSource {
            repo: REPO.to_string(),
            commit: self.commit.clone(),
            build_target: BUILD_TARGET_WASIP1.to_string(),
        };
        let name = source.compile_job_name();
        let api: Api<CompileJob> = Api::namespaced(self.env.cluster.client(), NAMESPACE);
        let started = Instant::now();
        api.create(
            &PostParams::default(),
            &CompileJob::new(&name, CompileJobSpec::git(source)),
        )
        .await
        .with_context(|| format!("create CompileJob {name}"))?;
        loop {
            let status = api
                .get(&name)
                .await
                .with_context(|| format!("read CompileJob {name}"))?
                .status
                .unwrap_or_default();
            match condition_status(&status.conditions, "Ready") {
                Some(true) => return Ok(started.elapsed()),
                Some(false) => bail!(
                    "CompileJob {name} failed: {}\n{}",
                    status.message.unwrap_or_default(),
                    status.build_log.unwrap_or_default()
                ),
                None if started.elapsed() > PRECOMPILE_TIMEOUT => bail!(
                    "CompileJob {name} was not Ready within {} s",
                    PRECOMPILE_TIMEOUT.as_secs()
                ),
                None => tokio::time::sleep(Duration::from_millis(500)).await,
            }
        }
    }
}

/// The operator's controllers running in this process until [`RunningOperator::stop`].
pub struct RunningOperator {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    /// The operator's chain client (its re-sign count).
    pub chain: ChainClient,
}

impl RunningOperator {
    pub async fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop.send(());
        self.task
            .await
            .context("the in-process controllers panicked")
    }
}

fn signer(name: &str) -> anyhow::Result<OperatorSigner> {
    OperatorSigner::from_secret_strings(name, &secret(name).to_string())
        .with_context(|| format!("build the signer of {name}"))
}

/// A fresh directory for the echo repository, spelled without `..` and outside /tmp: sandboxed pods
/// see the host's filesystem read-only but get an empty /tmp of their own.
fn repositories_dir() -> anyhow::Result<tempfile::TempDir> {
    let candidates = [
        Some(target_dir().join("e2e-repos")),
        e2e_cluster::binaries::cache_root().map(|root| root.join("bench-repos")),
    ];
    for root in candidates.into_iter().flatten() {
        std::fs::create_dir_all(&root).with_context(|| format!("create {}", root.display()))?;
        let root =
            std::fs::canonicalize(&root).with_context(|| format!("resolve {}", root.display()))?;
        if !root.starts_with("/tmp") {
            return tempfile::tempdir_in(&root)
                .with_context(|| format!("create a directory in {}", root.display()));
        }
    }
    bail!(
        "no place outside /tmp for the echo repository: set OUTLAYER_E2E_CACHE to a directory outside /tmp"
    )
}

/// Commits the echo example as a standalone crate on branch `main` of a new repository at `repo`.
fn echo_main_branch(repo: &Path) -> anyhow::Result<()> {
    let src = repo.join("src");
    std::fs::create_dir_all(&src).with_context(|| format!("create {}", src.display()))?;
    std::fs::write(
        repo.join("Cargo.toml"),
        "[package]\nname = \"echo\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[dependencies]\n",
    )
    .with_context(|| format!("write {}/Cargo.toml", repo.display()))?;
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/echo/src/main.rs");
    std::fs::copy(&example, src.join("main.rs"))
        .with_context(|| format!("copy {} into {}", example.display(), src.display()))?;
    git(repo, &["init", "-q", "-b", "main"])?;
    git(repo, &["add", "."])?;
    git(repo, &["commit", "-q", "-m", "echo"])?;
    Ok(())
}

fn git(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    outlayer_testkit::try_git(dir, args).map_err(|e| anyhow::anyhow!("in {}: {e}", dir.display()))
}

fn which(program: &str) -> anyhow::Result<String> {
    let output = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .with_context(|| format!("look up {program} on PATH"))?;
    let path = String::from_utf8_lossy(&output.stdout).trim().to_string();
    if path.is_empty() {
        bail!("{program} is not on PATH");
    }
    Ok(path)
}
