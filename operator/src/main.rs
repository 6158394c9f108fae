//! `outlayer-operator`: the operator process. `run` contends for the leader Lease, then runs the
//! controllers and serves `/metrics`, `/healthz` and `/readyz` until SIGTERM/SIGINT.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{ArgAction, Args, Parser, Subcommand};
use kube::Api;
use kube::api::ListParams;
use outlayer_operator::chain::{ChainClient, ChainConfig, OperatorSigner};
use outlayer_operator::config::{IsolationProbe, OperatorConfig};
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
    /// Check an answer from the chain alone: rebuild the module from the request's commit, compare
    /// its sha256 with the answer's evidence and replay the request (exit 0 all match, 1 mismatch,
    /// 2 could not check).
    Verify(Box<outlayer_operator::verify::VerifyArgs>),
    /// Add function-call keys for the resolve pool to the operator's account (signed by the key
    /// file's first key, which needs full access; each new key may call only the contract's
    /// resolve_execution and submit_execution_output) and write a new key file: the old keys, then
    /// the new ones. Mount it as the operator's key Secret.
    AddKeys(AddKeysArgs),
    /// Print the version and exit.
    Version,
}

#[derive(Args)]
struct RunArgs {
    /// Namespace the ExecutionRequests, CompileJobs and their pods and Jobs live in.
    #[arg(long, env = "OUTLAYER_NAMESPACE")]
    namespace: String,
    /// What every reconcile reads: executor, cache, compiler and on-chain settings.
    #[command(flatten, next_help_heading = "Executions")]
    config: OperatorConfig,

    /// NEAR JSON-RPC endpoint; repeat (or comma-separate) for failover. May embed an API key: never
    /// logged. Without one the operator serves kubectl requests only.
    #[arg(
        long = "rpc-url",
        env = "OUTLAYER_RPC_URLS",
        value_delimiter = ',',
        hide_env_values = true,
        help_heading = "Chain client"
    )]
    rpc_urls: Vec<String>,
    /// The operator's NEAR account (signs resolve_execution and set_pricing).
    #[arg(
        long,
        env = "OUTLAYER_OPERATOR_ACCOUNT_ID",
        help_heading = "Chain client"
    )]
    operator_account_id: Option<String>,
    /// File holding the operator account's private keys (`ed25519:…`, one per line), e.g. a
    /// mounted Secret. The first signs every call; all sign resolves in parallel.
    #[arg(
        long,
        env = "OUTLAYER_OPERATOR_KEY_FILE",
        help_heading = "Chain client"
    )]
    operator_key_file: Option<PathBuf>,
    /// How many of the key file's keys sign resolves in parallel (the first N; 0: all of them).
    /// More keys than the file holds is an error at start.
    #[arg(long, env = "OUTLAYER_SIGNING_KEYS", default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=256), help_heading = "Chain client")]
    signing_keys: u32,

    /// Address of /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "OUTLAYER_METRICS_ADDR",
        default_value = "0.0.0.0:8080",
        help_heading = "Process"
    )]
    metrics_addr: SocketAddr,
    /// Contend for a Lease so only one replica runs the controllers (`--leader-election false` for a
    /// single replica).
    #[arg(long, env = "OUTLAYER_LEADER_ELECTION", default_value_t = true, action = ArgAction::Set, help_heading = "Process")]
    leader_election: bool,
    /// Name of the leader Lease.
    #[arg(
        long,
        env = "OUTLAYER_LEASE_NAME",
        default_value = "outlayer-operator",
        help_heading = "Process"
    )]
    lease_name: String,
    /// Namespace of the leader Lease (default: the pod's namespace, else --namespace).
    #[arg(long, env = "POD_NAMESPACE", help_heading = "Process")]
    lease_namespace: Option<String>,
    /// How long a leader's last renewal keeps other replicas away (short, so a standby takes over a
    /// killed leader's work within seconds of NEAR's 200-block yield window).
    #[arg(long, env = "OUTLAYER_LEASE_DURATION_SECONDS", default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=3600), help_heading = "Process")]
    lease_duration_seconds: u64,
    /// After SIGTERM, how long in-flight reconciles may finish before they are cancelled (keep it
    /// under the pod's terminationGracePeriodSeconds, 30 by default, so the Lease is still released).
    #[arg(
        long,
        env = "OUTLAYER_SHUTDOWN_TIMEOUT_SECONDS",
        default_value_t = 20,
        help_heading = "Process"
    )]
    shutdown_timeout_seconds: u64,
    /// This replica's holder identity (default: $POD_NAME, else the host name).
    #[arg(long, env = "POD_NAME", help_heading = "Process")]
    identity: Option<String>,
}

impl RunArgs {
    /// The chain client, when RPC URLs are given; then the contract and the operator's key are needed.
    fn chain_client(&self) -> anyhow::Result<Option<ChainClient>> {
        if self.rpc_urls.is_empty() {
            return Ok(None);
        }
        let contract_id = self
            .config
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
        let mut keys = read_key_file(account_id, key_file)?;
        if self.signing_keys > 0 {
            let wanted = self.signing_keys as usize;
            anyhow::ensure!(
                wanted <= keys.len(),
                "--signing-keys {wanted}, but {} holds {} key(s) (add some with `outlayer-operator add-keys`)",
                key_file.display(),
                keys.len()
            );
            keys.truncate(wanted);
        }
        let config = ChainConfig::new(self.rpc_urls.clone(), contract_id);
        info!(
            keys = keys.len(),
            "signing resolves with a pool of access keys"
        );
        Ok(Some(
            ChainClient::with_keys(config, keys).context("building the NEAR RPC client")?,
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

/// The operator's keys from its key file; errors name the file (and line), never its content.
fn read_key_file(
    account_id: &str,
    key_file: &std::path::Path,
) -> anyhow::Result<Vec<OperatorSigner>> {
    let text = std::fs::read_to_string(key_file)
        .with_context(|| format!("reading --operator-key-file {}", key_file.display()))?;
    OperatorSigner::pool_from_secret_strings(account_id, &text)
        .with_context(|| format!("the keys in {}", key_file.display()))
}

#[derive(Args)]
struct AddKeysArgs {
    /// NEAR JSON-RPC endpoint (repeatable).
    #[arg(
        long = "rpc-url",
        env = "OUTLAYER_RPC_URLS",
        value_delimiter = ',',
        hide_env_values = true,
        required = true
    )]
    rpc_urls: Vec<String>,
    /// The OutLayer contract the new keys may call.
    #[arg(long, env = "OUTLAYER_CONTRACT_ID")]
    contract_id: String,
    #[arg(long, env = "OUTLAYER_OPERATOR_ACCOUNT_ID")]
    operator_account_id: String,
    /// The current key file; its first key signs the AddKey transaction.
    #[arg(long, env = "OUTLAYER_OPERATOR_KEY_FILE")]
    operator_key_file: PathBuf,
    /// How many keys to add.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=64))]
    count: u32,
    /// The new key file to write (created with mode 0600; an existing file is not overwritten).
    #[arg(long)]
    out: PathBuf,
}

async fn add_keys(args: AddKeysArgs) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;

    let contract_id = args.contract_id.parse().with_context(|| {
        format!(
            "--contract-id {:?} is not a NEAR account id",
            args.contract_id
        )
    })?;
    let keys = read_key_file(&args.operator_account_id, &args.operator_key_file)?;
    let new_keys: Vec<near_crypto::SecretKey> = (0..args.count)
        .map(|_| near_crypto::SecretKey::from_random(near_crypto::KeyType::ED25519))
        .collect();
    // The file first: keys added on chain but never written down would be lost.
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&args.out)
        .with_context(|| format!("creating --out {}", args.out.display()))?;
    let old = std::fs::read_to_string(&args.operator_key_file)
        .with_context(|| format!("reading {}", args.operator_key_file.display()))?;
    let mut text = old.trim_end().to_string();
    text.push('\n');
    for key in &new_keys {
        text.push_str(&key.to_string());
        text.push('\n');
    }
    out.write_all(text.as_bytes())
        .and_then(|()| out.sync_all())
        .with_context(|| format!("writing {}", args.out.display()))?;

    let client = ChainClient::with_keys(ChainConfig::new(args.rpc_urls, contract_id), keys)
        .context("building the NEAR RPC client")?;
    let public: Vec<_> = new_keys.iter().map(|key| key.public_key()).collect();
    let outcome = client
        .add_pool_keys(&public)
        .await
        .context("the AddKey transaction")?;
    if let outlayer_operator::chain::CallStatus::Failure(message) = &outcome.status {
        anyhow::bail!(
            "the AddKey transaction {} failed: {message} ({} holds keys that were not added)",
            outcome.tx_hash,
            args.out.display()
        );
    }
    println!(
        "added {} key(s) in transaction {}",
        public.len(),
        outcome.tx_hash
    );
    for key in &public {
        println!("  {key}");
    }
    println!("new key file: {}", args.out.display());
    Ok(())
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
        Command::Verify(args) => match outlayer_operator::verify::run(*args).await {
            Ok(code) => ExitCode::from(code),
            Err(error) => {
                // Nothing could be checked: the chain, the fetch or the build failed.
                eprintln!("could not check: {error:#}");
                ExitCode::from(2)
            }
        },
        Command::AddKeys(args) => report(add_keys(args).await),
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
    let config = args.config.clone();
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

    let kube_config = kube::Config::infer()
        .await
        .context("configure the Kubernetes client (in-cluster service account or KUBECONFIG)")?;
    let mut config = config;
    if config.compiler.isolation_probe.is_none() {
        config.compiler.isolation_probe =
            IsolationProbe::from_cluster_url(&kube_config.cluster_url.to_string());
        match config.compiler.isolation_probe {
            Some(IsolationProbe::At(probe)) => {
                info!(%probe, "builds wait until their pod cannot reach the API server")
            }
            _ => warn!(
                cluster_url = %kube_config.cluster_url,
                "the API server is not named by IP: builds start without waiting for their NetworkPolicy (set --build-isolation-probe)"
            ),
        }
    }
    let client = kube::Client::try_from(kube_config)
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use clap::CommandFactory;

    use super::*;

    /// The flags and environment variables the README's flag table documents: the first word of each
    /// backticked span in the first two columns.
    fn documented() -> (BTreeSet<String>, BTreeSet<String>) {
        let readme = include_str!("../README.md");
        let start = readme
            .find("| Flag | Environment |")
            .expect("README.md has the flag table");
        let (mut flags, mut variables) = (BTreeSet::new(), BTreeSet::new());
        for row in readme[start..]
            .lines()
            .skip(2)
            .take_while(|line| line.starts_with('|'))
        {
            // `\|` is a pipe inside a cell, not a column break.
            let row = row.replace("\\|", "/");
            let cells: Vec<&str> = row.split('|').collect();
            let spans = |cell: &str| -> Vec<String> {
                cell.split('`')
                    .skip(1)
                    .step_by(2)
                    .filter_map(|span| span.split_whitespace().next())
                    .map(str::to_string)
                    .collect()
            };
            flags.extend(spans(cells[1]).into_iter().filter(|s| s.starts_with("--")));
            variables.extend(spans(cells[2]).into_iter().filter(|s| {
                s.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            }));
        }
        (flags, variables)
    }

    #[test]
    fn the_readme_documents_every_run_flag_and_variable() {
        let command = Cli::command();
        let run = command
            .find_subcommand("run")
            .expect("the CLI has a run subcommand");
        let arguments: Vec<_> = run
            .get_arguments()
            .filter(|arg| arg.get_long() != Some("help"))
            .collect();
        let flags: BTreeSet<String> = arguments
            .iter()
            .filter_map(|arg| arg.get_long())
            .map(|long| format!("--{long}"))
            .collect();
        let variables: BTreeSet<String> = arguments
            .iter()
            .filter_map(|arg| arg.get_env())
            .map(|env| env.to_string_lossy().into_owned())
            .collect();
        let (documented_flags, documented_variables) = documented();
        assert_eq!(
            documented_flags, flags,
            "README.md flag table vs run --help"
        );
        assert_eq!(
            documented_variables, variables,
            "README.md flag table vs run --help"
        );
    }

    #[test]
    fn run_parses_with_only_a_namespace() {
        let cli = Cli::try_parse_from(["outlayer-operator", "run", "--namespace", "jobs"])
            .expect("--namespace is the only required flag");
        let Command::Run(args) = cli.command else {
            panic!("parsed as another subcommand")
        };
        assert_eq!(args.namespace, "jobs");
        assert!(args.rpc_urls.is_empty());
    }
}
