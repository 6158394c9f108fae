//! What the operator is configured with (from flags / the chart's values). Defaults suit a small cluster.

/// Settings every reconcile reads. Cheap to clone; shared through the controller context.
#[derive(Clone, Debug)]
pub struct OperatorConfig {
    /// Image of the executor container (one pod per execution).
    pub executor_image: String,
    /// The PersistentVolumeClaim holding the module cache (`wasm/`) and large outputs (`results/`).
    pub cache_claim_name: String,
    /// Optional RuntimeClass (gVisor, Kata…) for sandboxed pods.
    pub runtime_class_name: Option<String>,
    /// Largest stdout the executor accepts; more fails the execution (never truncated).
    pub executor_max_output_bytes: u64,
    /// Outputs up to this size are copied into `status.output`.
    pub max_status_output_bytes: usize,
    /// Added to an execution's time limit for the pod's `activeDeadlineSeconds` (image start, module load).
    pub pod_startup_grace_seconds: i64,
    /// CPU request and limit of an executor container (wasmi runs the guest on one thread).
    pub executor_cpu: String,
    /// Memory on top of the guest's limit: the executor itself (≈ 5 MiB measured) plus headroom.
    pub executor_memory_overhead_mb: u32,
    /// Ephemeral storage of an executor container (it writes nothing but its termination message).
    pub executor_ephemeral_storage: String,
    /// The OutLayer contract's account, passed to guests as `NEAR_CONTRACT_ID` for on-chain requests.
    pub contract_id: Option<String>,
    /// Where the operator's own pod mounts the cache volume, to read outputs too large for a result
    /// message (`results/<sha256>`). Without it such outputs are reported by hash only.
    pub cache_mount_path: Option<std::path::PathBuf>,
    /// Finished ExecutionRequests are deleted this long after they finished.
    pub execution_ttl: std::time::Duration,
    /// Executor pods of failed executions are kept this long for `kubectl logs`/`describe`.
    pub failed_pod_retention: std::time::Duration,
    pub compiler: CompilerConfig,
    /// Evict least recently used modules (and their CompileJobs and workspaces) once the cache holds more
    /// than this; needs `cache_mount_path`. Modules of unfinished executions are never evicted.
    pub cache_max_bytes: Option<u64>,
    /// Reconciles running at once, per controller (each mostly waits on the API server).
    pub max_concurrent_reconciles: u16,
    /// Executor pods that end without a result (our fault, not the guest's) are re-run this many
    /// times before the execution fails as a platform failure.
    pub platform_retries: u32,
    pub on_chain: OnChainConfig,
    /// The sealing key is replaced by a new one (old ones still open old secrets) this often; `None`:
    /// never.
    pub sealing_key_rotation: Option<std::time::Duration>,
}

/// How the operator plans on-chain requests around the contract's yield window.
#[derive(Clone, Debug)]
pub struct OnChainConfig {
    /// The contract's yield times out this many blocks after the request (NEAR protocol constant).
    pub yield_timeout_blocks: u64,
    /// Block time assumed when turning blocks left into seconds left (mainnet: ~600 ms).
    pub expected_block_time: std::time::Duration,
    /// What an uncached compile is assumed to need: a request whose module is not in the cache is
    /// not started with less time than this (plus its time limit) left.
    pub compile_budget: std::time::Duration,
    /// What the resolve transaction needs to land before the yield times out.
    pub report_margin: std::time::Duration,
    /// How often the Pricing resource is compared with the chain (drift made there is reverted).
    pub pricing_sync_interval: std::time::Duration,
    /// How often the watcher asks the contract for new requests.
    pub poll_interval: std::time::Duration,
}

impl Default for OnChainConfig {
    fn default() -> Self {
        Self {
            yield_timeout_blocks: 200,
            expected_block_time: std::time::Duration::from_millis(600),
            compile_budget: std::time::Duration::from_secs(60),
            report_margin: std::time::Duration::from_secs(5),
            pricing_sync_interval: std::time::Duration::from_secs(5),
            poll_interval: std::time::Duration::from_secs(1),
        }
    }
}

/// How CompileJobs run their fetch and build Jobs.
#[derive(Clone, Debug)]
pub struct CompilerConfig {
    /// Image with `outlayer-compiler`, git and a Rust toolchain with the wasm32-wasip1 target.
    pub image: String,
    /// URL prefixes a repository must start with (the compiler's `--allow-repo-prefix`).
    pub allowed_repo_prefixes: Vec<String>,
    /// `PREFIX=REPLACEMENT` URL rewrites for the fetch (an internal git mirror), applied after the
    /// allow-list; the repository keeps its public identity. Visible in the Job spec: no credentials.
    pub git_mirrors: Vec<String>,
    pub fetch_timeout_seconds: u64,
    pub build_timeout_seconds: u64,
    pub cpu: String,
    pub memory: String,
    pub ephemeral_storage: String,
    /// Finished fetch/build Jobs are garbage-collected this long after they end.
    pub job_ttl_seconds: i32,
    /// Extra environment for the compiler container (e.g. where the toolchain lives).
    pub env: Vec<(String, String)>,
}

impl Default for CompilerConfig {
    fn default() -> Self {
        Self {
            image: "ghcr.io/outlayer/outlayer-compiler:0.1.0".to_string(),
            allowed_repo_prefixes: vec!["https://github.com/".to_string()],
            git_mirrors: Vec::new(),
            fetch_timeout_seconds: 300,
            build_timeout_seconds: 600,
            cpu: "2".to_string(),
            memory: "4Gi".to_string(),
            ephemeral_storage: "1Gi".to_string(),
            job_ttl_seconds: 3600,
            env: Vec::new(),
        }
    }
}

impl Default for OperatorConfig {
    fn default() -> Self {
        Self {
            executor_image: "ghcr.io/outlayer/outlayer-executor:0.1.0".to_string(),
            cache_claim_name: "outlayer-cache".to_string(),
            runtime_class_name: None,
            executor_max_output_bytes: 1024 * 1024,
            max_status_output_bytes: 64 * 1024,
            pod_startup_grace_seconds: 30,
            executor_cpu: "1".to_string(),
            executor_memory_overhead_mb: 64,
            executor_ephemeral_storage: "16Mi".to_string(),
            contract_id: None,
            cache_mount_path: None,
            execution_ttl: std::time::Duration::from_secs(24 * 60 * 60),
            failed_pod_retention: std::time::Duration::from_secs(60 * 60),
            compiler: CompilerConfig::default(),
            cache_max_bytes: None,
            max_concurrent_reconciles: 16,
            platform_retries: 2,
            on_chain: OnChainConfig::default(),
            sealing_key_rotation: Some(std::time::Duration::from_secs(90 * 24 * 60 * 60)),
        }
    }
}
