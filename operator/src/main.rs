//! `outlayer-operator`: the operator process. `run` contends for the leader Lease, then runs the
//! controllers and serves `/metrics`, `/healthz` and `/readyz` until SIGTERM/SIGINT.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::{ArgAction, Args, Parser, Subcommand};
use kube::Api;
use kube::api::ListParams;
use outlayer_operator::chain::{ChainClient, ChainConfig, OperatorSigner};
use outlayer_operator::config::{CompilerConfig, OnChainConfig, OperatorConfig};
use outlayer_operator::context::Context;
use outlayer_operator::controllers;
use outlayer_operator::crd::{CompileJob, ExecutionRequest};
use outlayer_operator::http::{self, Readiness};
use outlayer_operator::leader::{LeaderElector, Leadership, LeaseConfig};
use outlayer_operator::metrics::Metrics;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::watch;
use tracing::{error, info, warn};

#[derive(Parser)]
#[command(
    name = "outlayer-operator",
    version,
    about = "Runs NEAR off-chain executions as Kubernetes workloads"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator (controllers, leader election, metrics and health endpoints).
    Run(Box<RunArgs>),
    /// Seal secrets (JSON object on stdin) to the operator's public key for one scope; prints a
    /// Kubernetes Secret manifest (safe to commit) or the contract's `store_secrets` arguments.
    Seal(outlayer_operator::sealing::cli::SealArgs),
    /// Print the operator's current sealing public key.
    Pubkey(outlayer_operator::sealing::cli::PubkeyArgs),
    /// Print the version and exit.
    Version,
}

#[derive(Args)]
struct RunArgs {
    /// Namespace the ExecutionRequests, CompileJobs and their pods and Jobs live in.
    #[arg(long, env = "OUTLAYER_NAMESPACE")]
    namespace: String,
    /// Image of the executor container (one pod per execution).
    #[arg(long, env = "OUTLAYER_EXECUTOR_IMAGE", default_value_t = OperatorConfig::default().executor_image)]
    executor_image: String,
    /// PersistentVolumeClaim holding the module cache (wasm/) and large outputs (results/).
    #[arg(long, env = "OUTLAYER_CACHE_CLAIM", default_value_t = OperatorConfig::default().cache_claim_name)]
    cache_claim: String,
    /// Where this pod mounts the cache volume, to read outputs too large for a termination message.
    #[arg(long, env = "OUTLAYER_CACHE_MOUNT_PATH")]
    cache_mount_path: Option<PathBuf>,
    /// RuntimeClass (gVisor, Kata…) for executor and build pods.
    #[arg(long, env = "OUTLAYER_RUNTIME_CLASS_NAME")]
    runtime_class_name: Option<String>,
    /// Largest stdout the executor accepts; more fails the execution.
    #[arg(long, env = "OUTLAYER_EXECUTOR_MAX_OUTPUT_BYTES", default_value_t = OperatorConfig::default().executor_max_output_bytes)]
    executor_max_output_bytes: u64,
    /// Outputs up to this size are copied into status.output.
    #[arg(long, env = "OUTLAYER_MAX_STATUS_OUTPUT_BYTES", default_value_t = OperatorConfig::default().max_status_output_bytes)]
    max_status_output_bytes: usize,
    /// Added to an execution's time limit for the pod's activeDeadlineSeconds.
    #[arg(long, env = "OUTLAYER_POD_STARTUP_GRACE_SECONDS", default_value_t = OperatorConfig::default().pod_startup_grace_seconds)]
    pod_startup_grace_seconds: i64,
    /// CPU request and limit of an executor container.
    #[arg(long, env = "OUTLAYER_EXECUTOR_CPU", default_value_t = OperatorConfig::default().executor_cpu)]
    executor_cpu: String,
    /// Memory on top of the guest's limit for the executor container, in MiB.
    #[arg(long, env = "OUTLAYER_EXECUTOR_MEMORY_OVERHEAD_MB", default_value_t = OperatorConfig::default().executor_memory_overhead_mb)]
    executor_memory_overhead_mb: u32,
    /// Ephemeral storage of an executor container.
    #[arg(long, env = "OUTLAYER_EXECUTOR_EPHEMERAL_STORAGE", default_value_t = OperatorConfig::default().executor_ephemeral_storage)]
    executor_ephemeral_storage: String,
    /// The OutLayer contract's account, passed to guests of on-chain requests as NEAR_CONTRACT_ID.
    #[arg(long, env = "OUTLAYER_CONTRACT_ID")]
    contract_id: Option<String>,
    /// Finished ExecutionRequests are deleted this many seconds after they finished.
    #[arg(long, env = "OUTLAYER_EXECUTION_TTL_SECONDS", default_value_t = OperatorConfig::default().execution_ttl.as_secs())]
    execution_ttl_seconds: u64,
    /// Executor pods of failed executions are kept this many seconds.
    #[arg(long, env = "OUTLAYER_FAILED_POD_RETENTION_SECONDS", default_value_t = OperatorConfig::default().failed_pod_retention.as_secs())]
    failed_pod_retention_seconds: u64,
    /// Reconciles running at once, per controller.
    #[arg(long, env = "OUTLAYER_MAX_CONCURRENT_RECONCILES", default_value_t = OperatorConfig::default().max_concurrent_reconciles)]
    max_concurrent_reconciles: u16,
    /// Evict least recently used modules once the cache holds more than this many bytes (needs
    /// --cache-mount-path); unset keeps everything.
    #[arg(long, env = "OUTLAYER_CACHE_MAX_BYTES")]
    cache_max_bytes: Option<u64>,

    /// Image with outlayer-compiler, git and the Rust toolchain.
    #[arg(long, env = "OUTLAYER_COMPILER_IMAGE", default_value_t = CompilerConfig::default().image)]
    compiler_image: String,
    /// URL prefix a repository must start with; repeat the flag (or comma-separate the variable).
    #[arg(long = "allowed-repo-prefix", env = "OUTLAYER_ALLOWED_REPO_PREFIXES", value_delimiter = ',', default_values_t = CompilerConfig::default().allowed_repo_prefixes)]
    allowed_repo_prefixes: Vec<String>,
    /// Deadline of a fetch Job, in seconds.
    #[arg(long, env = "OUTLAYER_FETCH_TIMEOUT_SECONDS", default_value_t = CompilerConfig::default().fetch_timeout_seconds)]
    fetch_timeout_seconds: u64,
    /// Deadline of a build Job, in seconds.
    #[arg(long, env = "OUTLAYER_BUILD_TIMEOUT_SECONDS", default_value_t = CompilerConfig::default().build_timeout_seconds)]
    build_timeout_seconds: u64,
    /// CPU request and limit of a compiler container.
    #[arg(long, env = "OUTLAYER_COMPILER_CPU", default_value_t = CompilerConfig::default().cpu)]
    compiler_cpu: String,
    /// Memory request and limit of a compiler container.
    #[arg(long, env = "OUTLAYER_COMPILER_MEMORY", default_value_t = CompilerConfig::default().memory)]
    compiler_memory: String,
    /// Ephemeral storage of a compiler container.
    #[arg(long, env = "OUTLAYER_COMPILER_EPHEMERAL_STORAGE", default_value_t = CompilerConfig::default().ephemeral_storage)]
    compiler_ephemeral_storage: String,
    /// Finished fetch/build Jobs are garbage-collected this many seconds after they end.
    #[arg(long, env = "OUTLAYER_COMPILE_JOB_TTL_SECONDS", default_value_t = CompilerConfig::default().job_ttl_seconds)]
    compile_job_ttl_seconds: i32,
    /// Fetch repositories under PREFIX from REPLACEMENT (an internal git mirror), after the allow-list
    /// check; repeat or comma-separate. The Job spec shows it: no credentials in the URL.
    #[arg(
        long = "git-mirror",
        env = "OUTLAYER_GIT_MIRRORS",
        value_delimiter = ',',
        value_name = "PREFIX=REPLACEMENT"
    )]
    git_mirrors: Vec<String>,
    /// Executor pods that end without a result (a platform failure) are re-run this many times.
    #[arg(long, env = "OUTLAYER_PLATFORM_RETRIES", default_value_t = OperatorConfig::default().platform_retries)]
    platform_retries: u32,

    /// NEAR JSON-RPC endpoint; repeat (or comma-separate) for failover. May embed an API key: never
    /// logged. Without one the operator serves kubectl requests only.
    #[arg(
        long = "rpc-url",
        env = "OUTLAYER_RPC_URLS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    rpc_urls: Vec<String>,
    /// The operator's NEAR account (signs resolve_execution and set_pricing).
    #[arg(long, env = "OUTLAYER_OPERATOR_ACCOUNT_ID")]
    operator_account_id: Option<String>,
    /// File holding the operator account's private key (`ed25519:…`), e.g. a mounted Secret.
    #[arg(long, env = "OUTLAYER_OPERATOR_KEY_FILE")]
    operator_key_file: Option<PathBuf>,
    /// How often the contract is polled for new requests, in milliseconds.
    #[arg(long, env = "OUTLAYER_POLL_INTERVAL_MS", default_value_t = 1000)]
    poll_interval_ms: u64,
    /// Block time assumed when turning blocks left into seconds left, in milliseconds.
    #[arg(long, env = "OUTLAYER_EXPECTED_BLOCK_TIME_MS", default_value_t = 600)]
    expected_block_time_ms: u64,
    /// An uncached compile is not started for an on-chain request with less than this (plus its
    /// time limit) left before the yield times out.
    #[arg(long, env = "OUTLAYER_COMPILE_BUDGET_SECONDS", default_value_t = 60)]
    compile_budget_seconds: u64,
    /// Time kept for the resolve transaction before the yield times out, in seconds.
    #[arg(long, env = "OUTLAYER_REPORT_MARGIN_SECONDS", default_value_t = 5)]
    report_margin_seconds: u64,
    /// How often Pricing/default is compared with the chain, in seconds.
    #[arg(
        long,
        env = "OUTLAYER_PRICING_SYNC_INTERVAL_SECONDS",
        default_value_t = 5
    )]
    pricing_sync_interval_seconds: u64,

    /// Days after which the sealing key is replaced by a new one (old keys keep opening old secrets);
    /// 0 never rotates.
    #[arg(long, env = "OUTLAYER_SEALING_KEY_ROTATION_DAYS", default_value_t = 90)]
    sealing_key_rotation_days: u64,

    /// Extra KEY=VALUE environment for the compiler container; repeatable.
    #[arg(long = "compiler-env", value_name = "KEY=VALUE")]
    compiler_env: Vec<String>,

    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "OUTLAYER_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: SocketAddr,
    /// Contend for a Lease so only one replica runs the controllers (`--leader-election false` for a
    /// single replica).
    #[arg(long, env = "OUTLAYER_LEADER_ELECTION", default_value_t = true, action = ArgAction::Set)]
    leader_election: bool,
    /// Name of the leader Lease.
    #[arg(long, env = "OUTLAYER_LEASE_NAME", default_value = "outlayer-operator")]
    lease_name: String,
    /// Namespace of the leader Lease (default: the pod's namespace, else --namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// How long a leader's last renewal keeps other replicas away.
    #[arg(long, env = "OUTLAYER_LEASE_DURATION_SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..=3600))]
    lease_duration_seconds: u64,
    /// After SIGTERM, how long in-flight reconciles may finish before they are cancelled (keep it
    /// under the pod's terminationGracePeriodSeconds, 30 by default, so the Lease is still released).
    #[arg(long, env = "OUTLAYER_SHUTDOWN_TIMEOUT_SECONDS", default_value_t = 20)]
    shutdown_timeout_seconds: u64,
    /// This replica's holder identity (default: $POD_NAME, else the host name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
}

impl RunArgs {
    fn operator_config(&self) -> anyhow::Result<OperatorConfig> {
        let mut env = Vec::new();
        for pair in &self.compiler_env {
            let Some((key, value)) = pair.split_once('=').filter(|(k, _)| !k.is_empty()) else {
                bail!("--compiler-env {pair:?} is not KEY=VALUE");
            };
            env.push((key.to_string(), value.to_string()));
        }
        Ok(OperatorConfig {
            executor_image: self.executor_image.clone(),
            cache_claim_name: self.cache_claim.clone(),
            runtime_class_name: self.runtime_class_name.clone(),
            executor_max_output_bytes: self.executor_max_output_bytes,
            max_status_output_bytes: self.max_status_output_bytes,
            pod_startup_grace_seconds: self.pod_startup_grace_seconds,
            executor_cpu: self.executor_cpu.clone(),
            executor_memory_overhead_mb: self.executor_memory_overhead_mb,
            executor_ephemeral_storage: self.executor_ephemeral_storage.clone(),
            contract_id: self.contract_id.clone(),
            cache_mount_path: self.cache_mount_path.clone(),
            execution_ttl: Duration::from_secs(self.execution_ttl_seconds),
            failed_pod_retention: Duration::from_secs(self.failed_pod_retention_seconds),
            cache_max_bytes: self.cache_max_bytes,
            max_concurrent_reconciles: self.max_concurrent_reconciles,
            platform_retries: self.platform_retries,
            sealing_key_rotation: (self.sealing_key_rotation_days > 0).then(|| {
                Duration::from_secs(self.sealing_key_rotation_days.saturating_mul(24 * 60 * 60))
            }),
            on_chain: OnChainConfig {
                expected_block_time: Duration::from_millis(self.expected_block_time_ms),
                compile_budget: Duration::from_secs(self.compile_budget_seconds),
                report_margin: Duration::from_secs(self.report_margin_seconds),
                pricing_sync_interval: Duration::from_secs(self.pricing_sync_interval_seconds),
                poll_interval: Duration::from_millis(self.poll_interval_ms),
                ..OnChainConfig::default()
            },
            compiler: CompilerConfig {
                image: self.compiler_image.clone(),
                allowed_repo_prefixes: self.allowed_repo_prefixes.clone(),
                git_mirrors: self.git_mirrors.clone(),
                fetch_timeout_seconds: self.fetch_timeout_seconds,
                build_timeout_seconds: self.build_timeout_seconds,
                cpu: self.compiler_cpu.clone(),
                memory: self.compiler_memory.clone(),
                ephemeral_storage: self.compiler_ephemeral_storage.clone(),
                job_ttl_seconds: self.compile_job_ttl_seconds,
                env,
            },
        })
    }

    /// The chain client, when RPC URLs are given; then the contract and the operator's key are needed.
    fn chain_client(&self) -> anyhow::Result<Option<ChainClient>> {
        if self.rpc_urls.is_empty() {
            return Ok(None);
        }
        let contract_id = self
            .contract_id
            .as_deref()
            .context("--rpc-url needs --contract-id (the OutLayer contract's account)")?;
        let contract_id = contract_id
            .parse()
            .with_context(|| format!("--contract-id {contract_id:?} is not a NEAR account id"))?;
        let account_id = self
            .operator_account_id
            .as_deref()
            .context("--rpc-url needs --operator-account-id")?;
        let key_file = self
            .operator_key_file
            .as_ref()
            .context("--rpc-url needs --operator-key-file (the operator account's private key)")?;
        // The error names the file, never its content.
        let key = std::fs::read_to_string(key_file)
            .with_context(|| format!("reading --operator-key-file {}", key_file.display()))?;
        let signer = OperatorSigner::from_secret_strings(account_id, &key)
            .with_context(|| format!("the key in {}", key_file.display()))?;
        let config = ChainConfig::new(self.rpc_urls.clone(), contract_id);
        Ok(Some(
            ChainClient::new(config, Some(signer)).context("building the NEAR RPC client")?,
        ))
    }

    fn identity(&self) -> anyhow::Result<String> {
        if let Some(identity) = self.identity.clone().filter(|i| !i.is_empty()) {
            return Ok(identity);
        }
        if let Some(host) = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()) {
            return Ok(host);
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").context(
            "no --identity, $POD_NAME or $HOSTNAME, and /proc/sys/kernel/hostname is unreadable",
        )?;
        Ok(host.trim().to_string())
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Version => {
            println!("outlayer-operator {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Seal(args) => report(outlayer_operator::sealing::cli::run_seal(args).await),
        Command::Pubkey(args) => report(outlayer_operator::sealing::cli::run_pubkey(args).await),
        Command::Run(args) => {
            init_logging();
            match run(*args).await {
                Ok(code) => code,
                Err(error) => {
                    error!(error = format!("{error:#}"), "the operator failed");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// A one-shot command's result: errors to stderr (they never carry secret values), exit status 1.
fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// JSON lines on stdout; the filter comes from RUST_LOG (default `info`).
fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_env_filter(filter)
        .init();
}

/// Resolves once `shutdown` says so (or its sender is gone).
async fn on_shutdown(mut shutdown: watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|requested| *requested).await;
}

async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let config = args.operator_config()?;
    let identity = args.identity()?;
    let chain = args.chain_client()?.map(Arc::new);
    // Handlers first, so a signal that arrives during start-up is not the default "terminate now".
    let mut terminate = signal(SignalKind::terminate()).context("install the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("install the SIGINT handler")?;
    let (request_shutdown, shutdown) = watch::channel(false);
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        info!(signal = name, "shutting down");
        let _ = request_shutdown.send(true);
    });

    let metrics = Arc::new(Metrics::new());
    let readiness = Arc::new(Readiness::new("starting"));
    let listener = http::bind(args.metrics_addr)
        .await
        .with_context(|| format!("listen on --metrics-addr {}", args.metrics_addr))?;
    info!(addr = %args.metrics_addr, "serving /metrics, /healthz and /readyz");
    let server = tokio::spawn(http::serve(
        listener,
        metrics.clone(),
        readiness.clone(),
        on_shutdown(shutdown.clone()),
    ));

    let client = kube::Client::try_default()
        .await
        .context("configure the Kubernetes client (in-cluster service account or KUBECONFIG)")?;
    info!(namespace = %args.namespace, %identity, leader_election = args.leader_election, on_chain = chain.is_some(), "starting");

    let leadership = if args.leader_election {
        let lease_namespace = args.lease_namespace.as_deref().unwrap_or(&args.namespace);
        let lease = LeaseConfig::new(lease_namespace, &args.lease_name, &identity)
            .with_lease_duration(Duration::from_secs(args.lease_duration_seconds));
        let standby = readiness.clone();
        let acquire =
            LeaderElector::new(client.clone(), lease).acquire(move |attempt| match attempt {
                Ok(_) => standby.set_ready(),
                Err(error) => {
                    standby.set_not_ready(&format!("cannot contend for the leader Lease: {error}"))
                }
            });
        tokio::select! {
            leadership = acquire => Some(leadership),
            () = on_shutdown(shutdown.clone()) => {
                info!("stopped while standing by");
                return finish(server).await;
            }
        }
    } else {
        None
    };
    metrics.set_leader(true);
    readiness.set_not_ready("waiting for the ExecutionRequest and CompileJob APIs");

    let lost = leadership_lost(leadership.as_ref());
    tokio::pin!(lost);
    let start = async {
        tokio::select! {
            () = wait_for_apis(&client, &args.namespace, &readiness) => {}
            () = on_shutdown(shutdown.clone()) => return,
        }
        readiness.set_ready();
        let mut ctx = Context::new(client.clone(), config, Some(identity.clone()))
            .with_metrics(metrics.clone());
        if let Some(chain) = chain {
            ctx = ctx.with_chain(chain);
        }
        let ctx = Arc::new(ctx);
        controllers::run(ctx, &args.namespace, on_shutdown(shutdown.clone())).await;
    };
    // kube-runtime 5's Controller never finishes a graceful shutdown that starts before its
    // reflector's first list completes (the runner waits for the store forever), so draining is
    // bounded; cancelled reconciles are redone by the next leader (every step is idempotent).
    let shutdown_timeout = Duration::from_secs(args.shutdown_timeout_seconds);
    let drain_limit = async {
        on_shutdown(shutdown.clone()).await;
        tokio::time::sleep(shutdown_timeout).await;
    };
    tokio::select! {
        () = start => info!("controllers stopped"),
        () = drain_limit => warn!(timeout = ?shutdown_timeout, "reconciles still running at the shutdown timeout; cancelled"),
        reason = &mut lost => {
            // Another replica may already be reconciling: stop writing now rather than drain.
            metrics.set_leader(false);
            readiness.set_not_ready("leadership lost");
            error!(%reason, "leadership lost; exiting so the pod restarts and contends again");
            return Ok(ExitCode::FAILURE);
        }
    }
    metrics.set_leader(false);
    readiness.set_not_ready("shutting down");
    if !*shutdown.borrow() {
        error!("the controllers stopped without a shutdown request");
        return Ok(ExitCode::FAILURE);
    }
    if let Some(leadership) = leadership {
        match leadership.release().await {
            Ok(released) => info!(released, "leader Lease handed back"),
            Err(error) => {
                warn!(%error, "releasing the leader Lease failed; a standby takes over once it expires")
            }
        }
    }
    finish(server).await
}

fn leadership_lost(
    leadership: Option<&Leadership>,
) -> impl Future<Output = String> + Send + 'static {
    let lost = leadership.map(Leadership::lost);
    async move {
        match lost {
            Some(lost) => lost.await,
            None => std::future::pending().await,
        }
    }
}

/// Waits until the controllers' resources can be listed (CRDs installed, RBAC in place): the
/// controllers' watches start with the same list, so this is when they can start.
async fn wait_for_apis(client: &kube::Client, namespace: &str, readiness: &Readiness) {
    let executions: Api<ExecutionRequest> = Api::namespaced(client.clone(), namespace);
    let compile_jobs: Api<CompileJob> = Api::namespaced(client.clone(), namespace);
    let probe = ListParams::default().limit(1);
    loop {
        let result = match executions.list_metadata(&probe).await {
            Ok(_) => compile_jobs.list_metadata(&probe).await.map(|_| ()),
            Err(error) => Err(error),
        };
        match result {
            Ok(()) => return,
            Err(error) => {
                let reason =
                    format!("cannot list ExecutionRequests/CompileJobs in {namespace}: {error}");
                warn!(%reason, "waiting for the operator's APIs");
                readiness.set_not_ready(&reason);
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn finish(server: tokio::task::JoinHandle<std::io::Result<()>>) -> anyhow::Result<ExitCode> {
    match server.await {
        Ok(Ok(())) => Ok(ExitCode::SUCCESS),
        Ok(Err(error)) => Err(error).context("the metrics server failed"),
        Err(error) => Err(error).context("the metrics server task failed"),
    }
}
