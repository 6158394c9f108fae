//! What the operator is configured with. Each setting is declared once, here: its flag, environment
//! variable, default and help (`clap` reads them into these structs, flattened into `run`), and
//! `Default` is those same defaults. Defaults suit a small cluster.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, FromArgMatches};

/// Settings every reconcile reads. Cheap to clone; shared through the controller context.
#[derive(Clone, Debug, Args)]
pub struct OperatorConfig {
    /// Image of the executor container (one pod per execution).
    #[arg(
        long,
        env = "OUTLAYER_EXECUTOR_IMAGE",
        default_value = "ghcr.io/outlayer/outlayer-executor:0.1.0"
    )]
    pub executor_image: String,
    /// PersistentVolumeClaim holding the module cache (wasm/) and large outputs (results/).
    #[arg(
        long = "cache-claim",
        env = "OUTLAYER_CACHE_CLAIM",
        default_value = "outlayer-cache"
    )]
    pub cache_claim_name: String,
    /// RuntimeClass (gVisor, Kata…) for executor and build pods.
    #[arg(long, env = "OUTLAYER_RUNTIME_CLASS_NAME")]
    pub runtime_class_name: Option<String>,
    /// Largest stdout the executor accepts; more fails the execution (never truncated).
    #[arg(long, env = "OUTLAYER_EXECUTOR_MAX_OUTPUT_BYTES", default_value_t = 1024 * 1024)]
    pub executor_max_output_bytes: u64,
    /// Outputs up to this size are copied into status.output.
    #[arg(long, env = "OUTLAYER_MAX_STATUS_OUTPUT_BYTES", default_value_t = 64 * 1024)]
    pub max_status_output_bytes: usize,
    /// Added to an execution's time limit for the pod's activeDeadlineSeconds (image start, module
    /// load).
    #[arg(long, env = "OUTLAYER_POD_STARTUP_GRACE_SECONDS", default_value_t = 30)]
    pub pod_startup_grace_seconds: i64,
    /// CPU limit of an executor container (wasmi runs the guest on one thread).
    #[arg(long, env = "OUTLAYER_EXECUTOR_CPU", default_value = "1")]
    pub executor_cpu: String,
    /// CPU request of an executor container, warm or cold: small, so small jobs share a node (a
    /// request of a whole CPU lets a 2-core node run two at a time).
    #[arg(long, env = "OUTLAYER_EXECUTOR_CPU_REQUEST", default_value = "100m")]
    pub executor_cpu_request: String,
    /// Memory on top of the guest's limit for the executor container, in MiB: the executor itself
    /// (≈ 5 MiB measured) plus headroom.
    #[arg(
        long,
        env = "OUTLAYER_EXECUTOR_MEMORY_OVERHEAD_MB",
        default_value_t = 64
    )]
    pub executor_memory_overhead_mb: u32,
    /// Ephemeral storage of an executor container (it writes nothing but its termination message).
    #[arg(
        long,
        env = "OUTLAYER_EXECUTOR_EPHEMERAL_STORAGE",
        default_value = "16Mi"
    )]
    pub executor_ephemeral_storage: String,
    /// The OutLayer contract's account, passed to guests of on-chain requests as NEAR_CONTRACT_ID.
    #[arg(long, env = "OUTLAYER_CONTRACT_ID")]
    pub contract_id: Option<String>,
    /// Where this pod mounts the cache volume, to read outputs too large for a result message
    /// (results/<sha256>); without it such outputs are reported by hash only.
    #[arg(long, env = "OUTLAYER_CACHE_MOUNT_PATH")]
    pub cache_mount_path: Option<PathBuf>,
    /// Finished ExecutionRequests are deleted this many seconds after they finished.
    #[arg(
        long = "execution-ttl-seconds",
        env = "OUTLAYER_EXECUTION_TTL_SECONDS",
        default_value = "86400",
        value_name = "SECONDS",
        value_parser = seconds
    )]
    pub execution_ttl: Duration,
    /// Executor pods of failed executions are kept this many seconds for kubectl logs/describe.
    #[arg(
        long = "failed-pod-retention-seconds",
        env = "OUTLAYER_FAILED_POD_RETENTION_SECONDS",
        default_value = "3600",
        value_name = "SECONDS",
        value_parser = seconds
    )]
    pub failed_pod_retention: Duration,
    #[command(flatten, next_help_heading = "Compiling")]
    pub compiler: CompilerConfig,
    /// Evict least recently used modules (and their CompileJobs and workspaces) once the cache holds
    /// more than this many bytes (needs --cache-mount-path); unset keeps everything. Modules of
    /// unfinished executions are never evicted.
    #[arg(long, env = "OUTLAYER_CACHE_MAX_BYTES")]
    pub cache_max_bytes: Option<u64>,
    /// Reconciles running at once, per controller. Each mostly waits: on the API server, and a
    /// report on its resolve transaction's outcome (~2 blocks), so the slots bound the resolves
    /// per second (16 held 100 queued on-chain requests to 6.9 resolves/s; 64 gave 11.9).
    #[arg(long, env = "OUTLAYER_MAX_CONCURRENT_RECONCILES", default_value_t = 64)]
    pub max_concurrent_reconciles: u16,
    /// Executor pods that end without a result (our fault, not the guest's) are re-run this many
    /// times before the execution fails as a platform failure.
    #[arg(long, env = "OUTLAYER_PLATFORM_RETRIES", default_value_t = 2)]
    pub platform_retries: u32,
    #[command(flatten, next_help_heading = "On chain")]
    pub on_chain: OnChainConfig,
    #[command(flatten, next_help_heading = "Warm pool")]
    pub warm_pool: WarmPoolConfig,
    /// Days after which the sealing key is replaced by a new one (old keys keep opening old
    /// secrets); 0 never rotates.
    #[arg(
        long = "sealing-key-rotation-days",
        env = "OUTLAYER_SEALING_KEY_ROTATION_DAYS",
        default_value = "90",
        value_name = "DAYS",
        value_parser = rotation_days
    )]
    // Spelled out so clap takes the parser's `Option` as the value, not as "the flag may be absent".
    pub sealing_key_rotation: ::std::option::Option<Duration>,
}

/// How the operator plans on-chain requests around the contract's yield window.
#[derive(Clone, Debug, Args)]
pub struct OnChainConfig {
    /// The contract's yield times out this many blocks after the request (NEAR protocol constant).
    #[arg(skip = 200u64)]
    pub yield_timeout_blocks: u64,
    /// Block time assumed when turning blocks left into seconds left, in milliseconds (mainnet:
    /// ~600 ms).
    #[arg(
        long = "expected-block-time-ms",
        env = "OUTLAYER_EXPECTED_BLOCK_TIME_MS",
        default_value = "600",
        value_name = "MS",
        value_parser = millis
    )]
    pub expected_block_time: Duration,
    /// An uncached compile is not started for an on-chain request with less than this many seconds
    /// (plus its time limit) left before the yield times out.
    #[arg(
        long = "compile-budget-seconds",
        env = "OUTLAYER_COMPILE_BUDGET_SECONDS",
        default_value = "60",
        value_name = "SECONDS",
        value_parser = seconds
    )]
    pub compile_budget: Duration,
    /// The same for a module by URL not yet in the cache: a download, no build (its fetch Job still
    /// has `--fetch-timeout-seconds` to finish).
    #[arg(
        long = "download-budget-seconds",
        env = "OUTLAYER_DOWNLOAD_BUDGET_SECONDS",
        default_value = "15",
        value_name = "SECONDS",
        value_parser = seconds
    )]
    pub download_budget: Duration,
    /// Time kept for the resolve transaction before the yield times out, in seconds.
    #[arg(
        long = "report-margin-seconds",
        env = "OUTLAYER_REPORT_MARGIN_SECONDS",
        default_value = "5",
        value_name = "SECONDS",
        value_parser = seconds
    )]
    pub report_margin: Duration,
    /// How often Pricing/default is compared with the chain (drift made there is reverted), in
    /// seconds.
    #[arg(
        long = "pricing-sync-interval-seconds",
        env = "OUTLAYER_PRICING_SYNC_INTERVAL_SECONDS",
        default_value = "5",
        value_name = "SECONDS",
        value_parser = seconds
    )]
    pub pricing_sync_interval: Duration,
    /// How often the contract is polled for new requests, in milliseconds.
    #[arg(
        long = "poll-interval-ms",
        env = "OUTLAYER_POLL_INTERVAL_MS",
        default_value = "1000",
        value_name = "MS",
        value_parser = millis
    )]
    pub poll_interval: Duration,
}

/// Warm single-use executor pods, kept ready per memory class (DESIGN §5); none by default.
#[derive(Clone, Debug, Args)]
pub struct WarmPoolConfig {
    /// Warm pods to keep per memory class, `CLASS_MB=COUNT` (e.g. `64=2,128=2,256=1`); a request
    /// goes to the smallest class that covers its maxMemoryMb, one above every class to a cold pod.
    /// Empty: no pool, every execution gets a cold pod.
    #[arg(
        long = "warm-pool",
        env = "OUTLAYER_WARM_POOL",
        value_delimiter = ',',
        value_name = "CLASS_MB=COUNT",
        value_parser = warm_class
    )]
    pub classes: Vec<(u32, u32)>,
    /// A warm pod unused for this long is deleted and replaced, never handed anything.
    #[arg(
        long = "warm-pool-max-age-seconds",
        env = "OUTLAYER_WARM_POOL_MAX_AGE_SECONDS",
        default_value = "300",
        value_name = "SECONDS",
        value_parser = seconds
    )]
    pub max_age: Duration,
    /// TCP port of the handoff (the chart's NetworkPolicy opens it to operator pods only).
    #[arg(
        long = "warm-pool-handoff-port",
        env = "OUTLAYER_WARM_POOL_HANDOFF_PORT",
        default_value_t = 7070
    )]
    pub handoff_port: u16,
}

impl WarmPoolConfig {
    pub fn enabled(&self) -> bool {
        self.classes.iter().any(|(_, count)| *count > 0)
    }
}

impl Default for WarmPoolConfig {
    fn default() -> Self {
        flag_defaults()
    }
}

fn warm_class(pair: &str) -> Result<(u32, u32), String> {
    let parsed = pair
        .split_once('=')
        .and_then(|(class, count)| Some((class.trim().parse().ok()?, count.trim().parse().ok()?)));
    match parsed {
        Some((class, count)) if class > 0 => Ok((class, count)),
        _ => Err(format!("{pair:?} is not CLASS_MB=COUNT (e.g. 128=2)")),
    }
}

/// How CompileJobs run their fetch and build Jobs.
#[derive(Clone, Debug, Args)]
pub struct CompilerConfig {
    /// Image with outlayer-compiler, git and a Rust toolchain with the wasm32-wasip1 target.
    #[arg(
        long = "compiler-image",
        env = "OUTLAYER_COMPILER_IMAGE",
        default_value = "ghcr.io/outlayer/outlayer-compiler:0.1.0"
    )]
    pub image: String,
    /// URL prefix a repository must start with (the compiler's --allow-repo-prefix); repeat the flag
    /// (or comma-separate the variable).
    #[arg(
        long = "allowed-repo-prefix",
        env = "OUTLAYER_ALLOWED_REPO_PREFIXES",
        value_delimiter = ',',
        default_value = "https://github.com/"
    )]
    pub allowed_repo_prefixes: Vec<String>,
    /// Fetch repositories under PREFIX from REPLACEMENT (an internal git mirror), after the
    /// allow-list check; repeat or comma-separate. The Job spec shows it: no credentials in the URL.
    #[arg(
        long = "git-mirror",
        env = "OUTLAYER_GIT_MIRRORS",
        value_delimiter = ',',
        value_name = "PREFIX=REPLACEMENT"
    )]
    pub git_mirrors: Vec<String>,
    /// Modules by URL: addresses the fetch Job may download from although they are not public (an
    /// internal mirror, a test server); repeat or comma-separate. Empty by default: loopback,
    /// private, link-local, unique-local and other non-public addresses are refused after DNS
    /// resolution, on every redirect hop.
    #[arg(
        long = "url-fetch-allow-cidr",
        env = "OUTLAYER_URL_FETCH_ALLOW_CIDRS",
        value_delimiter = ',',
        value_name = "CIDR"
    )]
    pub url_fetch_allow_cidrs: Vec<String>,
    /// Modules by URL: the largest body downloaded (enforced while it streams).
    #[arg(
        long = "url-fetch-max-bytes",
        env = "OUTLAYER_URL_FETCH_MAX_BYTES",
        default_value_t = outlayer_compiler::download::DEFAULT_MAX_DOWNLOAD_BYTES
    )]
    pub url_fetch_max_bytes: u64,
    /// Modules by URL: a PEM file of extra trusted CAs (e.g. an internal mirror's), besides the
    /// public roots built into the compiler. Read at start; handed to the fetch Job.
    #[arg(
        long = "url-fetch-ca-file",
        env = "OUTLAYER_URL_FETCH_CA_FILE",
        value_name = "PATH",
        value_parser = read_pem_file
    )]
    pub url_fetch_ca_pem: Option<String>,
    /// Deadline of a fetch Job, in seconds.
    #[arg(long, env = "OUTLAYER_FETCH_TIMEOUT_SECONDS", default_value_t = 300)]
    pub fetch_timeout_seconds: u64,
    /// Deadline of a build Job, in seconds.
    #[arg(long, env = "OUTLAYER_BUILD_TIMEOUT_SECONDS", default_value_t = 600)]
    pub build_timeout_seconds: u64,
    /// IP:PORT a build pod reaches only while its NetworkPolicy is not in force: the build runs
    /// nothing of the repository before a connection to it fails (a policy engine programs a new
    /// pod's rules a moment after the pod starts). Unset: the API server's address when the
    /// operator's cluster URL names it by IP; `off`: no wait (a cluster whose pods always reach
    /// that address, or that isolates builds another way).
    #[arg(
        long = "build-isolation-probe",
        env = "OUTLAYER_BUILD_ISOLATION_PROBE",
        value_name = "IP:PORT|off",
        value_parser = isolation_probe
    )]
    pub isolation_probe: Option<IsolationProbe>,
    /// CPU request and limit of a compiler container.
    #[arg(
        long = "compiler-cpu",
        env = "OUTLAYER_COMPILER_CPU",
        default_value = "2"
    )]
    pub cpu: String,
    /// Memory request and limit of a compiler container.
    #[arg(
        long = "compiler-memory",
        env = "OUTLAYER_COMPILER_MEMORY",
        default_value = "4Gi"
    )]
    pub memory: String,
    /// Ephemeral storage of a compiler container.
    #[arg(
        long = "compiler-ephemeral-storage",
        env = "OUTLAYER_COMPILER_EPHEMERAL_STORAGE",
        default_value = "1Gi"
    )]
    pub ephemeral_storage: String,
    /// Finished fetch/build Jobs are garbage-collected this many seconds after they end.
    #[arg(
        long = "compile-job-ttl-seconds",
        env = "OUTLAYER_COMPILE_JOB_TTL_SECONDS",
        default_value_t = 3600
    )]
    pub job_ttl_seconds: i32,
    /// A CompileJob for a branch or tag name re-resolves the name this long after it last did, and
    /// fetches and builds again when it moved (a pushed fix is picked up); 0 never re-resolves.
    #[arg(
        long = "name-ttl-seconds",
        env = "OUTLAYER_NAME_TTL_SECONDS",
        default_value = "600",
        value_name = "SECONDS",
        value_parser = seconds
    )]
    pub name_ttl: Duration,
    /// A fetch that failed for a reason other than invalid input is tried again after this long,
    /// doubling per consecutive failure up to an hour.
    #[arg(
        long = "fetch-retry-seconds",
        env = "OUTLAYER_FETCH_RETRY_SECONDS",
        default_value = "30",
        value_name = "SECONDS",
        value_parser = seconds
    )]
    pub fetch_retry: Duration,
    /// Extra KEY=VALUE environment for the compiler container (e.g. where the toolchain lives);
    /// repeatable.
    #[arg(long = "compiler-env", value_name = "KEY=VALUE", value_parser = key_value)]
    pub env: Vec<(String, String)>,
}

/// A CA bundle's text, read when the flag is parsed (a certificate is public: it may sit in a Job's
/// environment).
fn read_pem_file(path: &str) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("reading {path}: {e}"))?;
    if !text.contains("-----BEGIN CERTIFICATE-----") {
        return Err(format!("{path} holds no PEM certificate"));
    }
    Ok(text)
}

/// The defaults of `T`'s flags, as `run --help` shows them: parsed from no arguments, with the
/// environment ignored so a stray `OUTLAYER_*` variable never changes a default.
fn flag_defaults<T: Args + FromArgMatches>() -> T {
    let command = T::augment_args(clap::Command::new("defaults"))
        .mut_args(|arg| arg.env(None::<&'static str>));
    let matches = command
        .try_get_matches_from(["defaults"])
        .expect("every flag of the operator's configuration has a default or is optional");
    T::from_arg_matches(&matches).expect("the defaults parse into the configuration they describe")
}

impl Default for OperatorConfig {
    fn default() -> Self {
        flag_defaults()
    }
}

impl Default for OnChainConfig {
    fn default() -> Self {
        flag_defaults()
    }
}

impl Default for CompilerConfig {
    fn default() -> Self {
        flag_defaults()
    }
}

/// What the build waits for before it runs the repository's code ([`CompilerConfig::isolation_probe`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IsolationProbe {
    Off,
    At(std::net::SocketAddr),
}

impl IsolationProbe {
    /// The API server's address as a probe, when `cluster_url` names it by IP (a name would need
    /// DNS, which build pods do not have); the port defaults to the scheme's.
    pub fn from_cluster_url(cluster_url: &str) -> Option<Self> {
        let url = url::Url::parse(cluster_url).ok()?;
        let ip = match url.host()? {
            url::Host::Ipv4(ip) => std::net::IpAddr::V4(ip),
            url::Host::Ipv6(ip) => std::net::IpAddr::V6(ip),
            url::Host::Domain(_) => return None,
        };
        Some(Self::At((ip, url.port_or_known_default()?).into()))
    }
}

fn isolation_probe(value: &str) -> Result<IsolationProbe, String> {
    if value == "off" {
        return Ok(IsolationProbe::Off);
    }
    value
        .parse()
        .map(IsolationProbe::At)
        .map_err(|_| format!("{value:?} is neither IP:PORT nor off"))
}

fn seconds(value: &str) -> Result<Duration, String> {
    value
        .parse()
        .map(Duration::from_secs)
        .map_err(|_| format!("{value:?} is not a whole number of seconds"))
}

fn millis(value: &str) -> Result<Duration, String> {
    value
        .parse()
        .map(Duration::from_millis)
        .map_err(|_| format!("{value:?} is not a whole number of milliseconds"))
}

/// Whole days; 0 is "never".
fn rotation_days(value: &str) -> Result<Option<Duration>, String> {
    let days: u64 = value
        .parse()
        .map_err(|_| format!("{value:?} is not a whole number of days"))?;
    Ok((days > 0).then(|| Duration::from_secs(days.saturating_mul(24 * 60 * 60))))
}

fn key_value(pair: &str) -> Result<(String, String), String> {
    match pair.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("{pair:?} is not KEY=VALUE")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_flags_defaults() {
        let config = OperatorConfig::default();
        assert_eq!(
            config.executor_image,
            "ghcr.io/outlayer/outlayer-executor:0.1.0"
        );
        assert_eq!(config.cache_claim_name, "outlayer-cache");
        assert_eq!(config.runtime_class_name, None);
        assert_eq!(config.executor_max_output_bytes, 1024 * 1024);
        assert_eq!(config.max_status_output_bytes, 64 * 1024);
        assert_eq!(config.execution_ttl, Duration::from_secs(24 * 60 * 60));
        assert_eq!(config.failed_pod_retention, Duration::from_secs(60 * 60));
        assert_eq!(config.cache_max_bytes, None);
        assert_eq!(config.max_concurrent_reconciles, 64);
        assert_eq!(config.platform_retries, 2);
        assert_eq!(
            (
                config.executor_cpu.as_str(),
                config.executor_cpu_request.as_str()
            ),
            ("1", "100m")
        );
        assert!(!config.warm_pool.enabled());
        assert_eq!(config.warm_pool.max_age, Duration::from_secs(300));
        assert_eq!(config.warm_pool.handoff_port, 7070);
        assert_eq!(
            config.sealing_key_rotation,
            Some(Duration::from_secs(90 * 24 * 60 * 60))
        );
        let on_chain = &config.on_chain;
        assert_eq!(on_chain.yield_timeout_blocks, 200);
        assert_eq!(on_chain.expected_block_time, Duration::from_millis(600));
        assert_eq!(on_chain.compile_budget, Duration::from_secs(60));
        assert_eq!(on_chain.download_budget, Duration::from_secs(15));
        assert_eq!(on_chain.report_margin, Duration::from_secs(5));
        assert_eq!(on_chain.pricing_sync_interval, Duration::from_secs(5));
        assert_eq!(on_chain.poll_interval, Duration::from_secs(1));
        let compiler = &config.compiler;
        assert_eq!(compiler.image, "ghcr.io/outlayer/outlayer-compiler:0.1.0");
        assert_eq!(compiler.allowed_repo_prefixes, ["https://github.com/"]);
        assert!(compiler.git_mirrors.is_empty() && compiler.env.is_empty());
        assert_eq!(
            (
                compiler.fetch_timeout_seconds,
                compiler.build_timeout_seconds
            ),
            (300, 600)
        );
        assert_eq!(
            (
                compiler.cpu.as_str(),
                compiler.memory.as_str(),
                compiler.ephemeral_storage.as_str()
            ),
            ("2", "4Gi", "1Gi")
        );
        assert_eq!(compiler.job_ttl_seconds, 3600);
        assert_eq!(compiler.name_ttl, Duration::from_secs(600));
        assert_eq!(compiler.fetch_retry, Duration::from_secs(30));
    }

    #[test]
    fn values_parse_or_say_why_not() {
        assert_eq!(seconds("7"), Ok(Duration::from_secs(7)));
        assert!(seconds("7s").unwrap_err().contains("seconds"));
        assert_eq!(millis("250"), Ok(Duration::from_millis(250)));
        assert_eq!(rotation_days("0"), Ok(None));
        assert_eq!(
            rotation_days("1"),
            Ok(Some(Duration::from_secs(24 * 60 * 60)))
        );
        assert_eq!(warm_class("128=2"), Ok((128, 2)));
        assert!(warm_class("0=1").is_err() && warm_class("128").is_err());
        assert_eq!(key_value("A=b=c"), Ok(("A".to_string(), "b=c".to_string())));
        assert!(key_value("=x").is_err());
        assert!(key_value("novalue").is_err());
    }

    #[test]
    fn the_build_isolation_probe_is_an_address_off_or_the_api_servers_ip() {
        assert_eq!(isolation_probe("off"), Ok(IsolationProbe::Off));
        assert_eq!(
            isolation_probe("10.0.0.1:6443"),
            Ok(IsolationProbe::At("10.0.0.1:6443".parse().unwrap()))
        );
        assert!(isolation_probe("kubernetes.default:443").is_err());
        assert!(isolation_probe("10.0.0.1").is_err());
        let at = |address: &str| Some(IsolationProbe::At(address.parse().unwrap()));
        for (url, expected) in [
            ("https://10.96.0.1:443", at("10.96.0.1:443")),
            ("https://10.96.0.1", at("10.96.0.1:443")),
            ("https://127.0.0.1:39113/", at("127.0.0.1:39113")),
            ("https://[fd00::1]:6443", at("[fd00::1]:6443")),
            ("https://kubernetes.default.svc", None),
            ("not a url", None),
        ] {
            assert_eq!(IsolationProbe::from_cluster_url(url), expected, "{url}");
        }
    }
}
