//! `outlayer-compiler fetch|build`: the container of the operator's fetch and build Jobs. The
//! command line is documented in compiler-image/README.md; the operator builds the pod specs
//! from it.
//!
//! Exit status: 0 whenever a report was written to the result path (`ok` says whether the fetch or
//! build succeeded, so a broken commit does not make the Job retry); 1 when not even the report
//! could be written (reason on stderr); 2 for a bad command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use outlayer_compiler::build::{BuildConfig, Output, PublishConfig, run_build, run_publish};
use outlayer_compiler::download::{
    AddressPolicy, DEFAULT_MAX_DOWNLOAD_BYTES, DownloadConfig, fetch_module,
};
use outlayer_compiler::fetch::{FetchConfig, Mirrors, run_fetch, run_resolve};
use outlayer_compiler::log::Log;
use outlayer_compiler::module::DEFAULT_MAX_MODULE_BYTES;
use outlayer_compiler::repo::{AllowList, DEFAULT_ALLOWED_PREFIX};
use outlayer_compiler::report::{BuildReport, FetchReport, Report, encode, write_report};
use outlayer_compiler::reproducible;
use outlayer_compiler::toolenv::Tools;
use outlayer_compiler::{BUILD_TARGET, Error};
use tracing_subscriber::EnvFilter;

const MIB: u64 = 1024 * 1024;

/// Fetches a guest crate at one commit (with its dependencies vendored) and builds it offline
/// into a validated wasm32-wasip1 module in the cache.
#[derive(Debug, Parser)]
#[command(name = "outlayer-compiler", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Clone one commit of a repository into the workspace and vendor its dependencies (network).
    Fetch(FetchArgs),
    /// Build the fetched workspace offline (no network) and stage the module in --out for
    /// `publish`, or (by hand) publish it straight into --cache.
    Build(BuildArgs),
    /// Validate a staged module and publish <cache>/wasm/<sha256>.wasm; runs no code of the
    /// repository (the build Job's second step).
    Publish(PublishArgs),
    /// Where a branch or tag name points now (`git ls-remote`); nothing is fetched.
    Resolve(FetchArgs),
    /// Download a prebuilt module by URL (https, public addresses only, size-capped), check its
    /// sha256, validate it and publish <cache>/wasm/<sha256>.wasm; nothing is built.
    FetchUrl(FetchUrlArgs),
}

#[derive(Debug, Args)]
struct FetchUrlArgs {
    /// The module's URL, as the request named it.
    #[arg(long, env = "OUTLAYER_URL")]
    url: String,
    /// The sha256 (64 hex) the module must have.
    #[arg(long, env = "OUTLAYER_SHA256")]
    sha256: String,
    /// The cache directory; the module is published as <cache>/wasm/<sha256>.wasm.
    #[arg(long, env = "OUTLAYER_CACHE")]
    cache: PathBuf,
    /// Where the JSON report goes.
    #[arg(
        long,
        env = "OUTLAYER_RESULT_PATH",
        default_value = "/dev/termination-log"
    )]
    result_path: PathBuf,
    /// Addresses admitted although not public (a mirror inside the cluster, a test server):
    /// repeat or comma-separate. Empty by default: public addresses only.
    #[arg(
        long = "allow-cidr",
        env = "OUTLAYER_URL_ALLOW_CIDRS",
        value_delimiter = ','
    )]
    allow_cidrs: Vec<String>,
    /// Extra trusted roots (PEM text) besides the built-in public ones, e.g. a mirror's CA.
    #[arg(long, env = "OUTLAYER_URL_CA_PEM", hide_env_values = true)]
    ca_pem: Option<String>,
    /// Largest body read; the download stops there.
    #[arg(long, env = "OUTLAYER_URL_MAX_BYTES", default_value_t = DEFAULT_MAX_DOWNLOAD_BYTES)]
    max_bytes: u64,
    /// Limit for the whole download, every redirect hop together.
    #[arg(long, env = "OUTLAYER_TIMEOUT_SECONDS", default_value_t = 120)]
    timeout_seconds: u64,
}

#[derive(Debug, Args)]
struct PublishArgs {
    #[command(flatten)]
    common: Common,
    /// The directory the build staged into (its --out), read only.
    #[arg(long, env = "OUTLAYER_FROM")]
    from: PathBuf,
    /// The cache directory; the module is published as <cache>/wasm/<sha256>.wasm.
    #[arg(long, env = "OUTLAYER_CACHE")]
    cache: PathBuf,
    /// Largest module accepted into the cache.
    #[arg(long, env = "OUTLAYER_MAX_MODULE_BYTES", default_value_t = DEFAULT_MAX_MODULE_BYTES)]
    max_module_bytes: u64,
}

#[derive(Debug, Args)]
struct Common {
    /// The workspace directory on the cache volume (one per CompileJob).
    #[arg(long, env = "OUTLAYER_WORKSPACE")]
    workspace: PathBuf,
    /// Where the JSON report goes.
    #[arg(
        long,
        env = "OUTLAYER_RESULT_PATH",
        default_value = "/dev/termination-log"
    )]
    result_path: PathBuf,
    /// The full log [default: <workspace>/logs/<fetch|build>.log].
    #[arg(long, env = "OUTLAYER_LOG_FILE")]
    log_file: Option<PathBuf>,
    /// The log file stops growing here (the report still gets the log's end).
    #[arg(long, env = "OUTLAYER_MAX_LOG_BYTES", default_value_t = 16 * MIB)]
    max_log_bytes: u64,
    /// The git program.
    #[arg(long, env = "OUTLAYER_GIT", default_value = "git")]
    git: String,
    /// The cargo program (a rustup proxy or a toolchain's cargo).
    #[arg(long, env = "OUTLAYER_CARGO", default_value = "cargo")]
    cargo: String,
}

#[derive(Debug, Args)]
struct FetchArgs {
    #[command(flatten)]
    common: Common,
    /// Repository URL: https://github.com/<owner>/<name> unless the allow-list admits more.
    #[arg(long, env = "OUTLAYER_REPO")]
    repo: String,
    /// A 40-hex commit, a branch or tag name, or a full ref (refs/…).
    #[arg(long, env = "OUTLAYER_COMMIT")]
    commit: String,
    /// URL prefixes a repository must start with, each ending in '/' (repeat or comma-separate).
    #[arg(
        long = "allow-repo-prefix",
        env = "OUTLAYER_ALLOWED_REPO_PREFIXES",
        value_delimiter = ',',
        default_value = DEFAULT_ALLOWED_PREFIX
    )]
    allow_repo_prefixes: Vec<String>,
    /// Fetch repositories under PREFIX from REPLACEMENT instead (`https://github.com/=https://git.internal/github/`),
    /// after the allow-list check; repeat or comma-separate.
    #[arg(
        long = "git-mirror",
        env = "OUTLAYER_GIT_MIRRORS",
        value_delimiter = ',',
        value_name = "PREFIX=REPLACEMENT",
        hide_env_values = true
    )]
    git_mirrors: Vec<String>,
    /// Limit for the whole command (git and cargo vendor together).
    #[arg(long, env = "OUTLAYER_TIMEOUT_SECONDS", default_value_t = 300)]
    timeout_seconds: u64,
    /// Largest the workspace may grow (checkout, vendored crates, cargo's download cache).
    #[arg(long, env = "OUTLAYER_MAX_WORKSPACE_MB", default_value_t = 2048)]
    max_workspace_mb: u64,
}

#[derive(Debug, Args)]
struct BuildArgs {
    #[command(flatten)]
    common: Common,
    /// Publish straight into this cache directory (<cache>/wasm/<sha256>.wasm): for running by
    /// hand only, since the build runs the repository's code.
    #[arg(
        long,
        env = "OUTLAYER_CACHE",
        required_unless_present = "out",
        conflicts_with = "out"
    )]
    cache: Option<PathBuf>,
    /// Stage the module and the report in this directory for `publish`.
    #[arg(long, env = "OUTLAYER_OUT")]
    out: Option<PathBuf>,
    /// The binary target, when the crate has more than one.
    #[arg(long, env = "OUTLAYER_BIN")]
    bin: Option<String>,
    /// Refuse to build unless the workspace holds this commit (the fetch report's resolvedCommit).
    #[arg(long = "commit", env = "OUTLAYER_COMMIT")]
    expect_commit: Option<String>,
    /// The target triple; only wasm32-wasip1 is supported.
    #[arg(long, env = "OUTLAYER_BUILD_TARGET", default_value = BUILD_TARGET)]
    target: String,
    /// Limit for the whole command (metadata, build, validation, publishing).
    #[arg(long, env = "OUTLAYER_TIMEOUT_SECONDS", default_value_t = 600)]
    timeout_seconds: u64,
    /// Largest the workspace may grow (mostly the target directory).
    #[arg(long, env = "OUTLAYER_MAX_WORKSPACE_MB", default_value_t = 8192)]
    max_workspace_mb: u64,
    /// Largest module accepted into the cache.
    #[arg(long, env = "OUTLAYER_MAX_MODULE_BYTES", default_value_t = DEFAULT_MAX_MODULE_BYTES)]
    max_module_bytes: u64,
    /// Parallel rustc jobs (cargo's default: all CPUs the pod sees).
    #[arg(long, env = "OUTLAYER_JOBS")]
    jobs: Option<u32>,
    /// IP:PORT this pod reaches only while its NetworkPolicy is not in force (the API server):
    /// nothing of the repository runs before a connection to it fails, and the build is refused
    /// when one still succeeds after 30 s.
    #[arg(long, env = "OUTLAYER_ISOLATION_PROBE")]
    isolation_probe: Option<std::net::SocketAddr>,
}

fn main() -> ExitCode {
    // Run by cargo as RUSTC_WRAPPER (see `outlayer_compiler::reproducible`): become rustc with
    // the remapping added, before anything else (no logging, no argument parsing).
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(mut rustc) =
        reproducible::wrapped_rustc(&args, std::env::var_os(reproducible::REMAP_ENV).as_ref())
    {
        use std::os::unix::process::CommandExt;
        let error = rustc.exec();
        eprintln!("outlayer-compiler (rustc wrapper): cannot run rustc: {error}");
        return ExitCode::from(1);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .json()
        .init();
    let cli = Cli::parse();
    let (result_path, json) = match cli.command {
        Command::Fetch(args) => fetch(args, false),
        Command::Resolve(args) => fetch(args, true),
        Command::Build(args) => build(args),
        Command::Publish(args) => publish(args),
        Command::FetchUrl(args) => fetch_url(args),
    };
    match write_report(&result_path, &json) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("outlayer-compiler: {error}");
            ExitCode::from(1)
        }
    }
}

fn fetch(args: FetchArgs, resolve_only: bool) -> (PathBuf, String) {
    let common = args.common;
    let log = match open_log(
        &common,
        if resolve_only {
            "resolve.log"
        } else {
            "fetch.log"
        },
    ) {
        Ok(log) => log,
        Err(error) => {
            return (
                common.result_path,
                failed(FetchReport::failed(&error), &error),
            );
        }
    };
    let allow = match AllowList::new(&args.allow_repo_prefixes) {
        Ok(allow) => allow,
        Err(error) => {
            return (
                common.result_path,
                failed(FetchReport::failed(&error), &error),
            );
        }
    };
    let mirrors = match Mirrors::parse(&args.git_mirrors) {
        Ok(mirrors) => mirrors,
        Err(error) => {
            return (
                common.result_path,
                failed(FetchReport::failed(&error), &error),
            );
        }
    };
    let config = FetchConfig {
        mirrors,
        repo: args.repo,
        reference: args.commit,
        workspace: common.workspace.clone(),
        allow,
        timeout: Duration::from_secs(args.timeout_seconds),
        max_workspace_bytes: args.max_workspace_mb.saturating_mul(MIB),
        tools: Tools::from_env(common.git.clone(), common.cargo.clone()),
    };
    let (report, json) = if resolve_only {
        run_resolve(&config, &log)
    } else {
        run_fetch(&config, &log)
    };
    tracing::info!(ok = report.ok, commit = ?report.resolved_commit, reachable_from = ?report.reachable_from, time_ms = report.time_ms, resolve_only, "fetch done");
    log.flush();
    (common.result_path, json)
}

fn build(args: BuildArgs) -> (PathBuf, String) {
    let common = args.common;
    if args.target != BUILD_TARGET {
        let error = Error::InvalidConfig(format!(
            "build target {:?} is not supported; the only supported target is {BUILD_TARGET}",
            args.target
        ));
        return (
            common.result_path,
            failed(BuildReport::failed(&error), &error),
        );
    }
    let log = match open_log(&common, "build.log") {
        Ok(log) => log,
        Err(error) => {
            return (
                common.result_path,
                failed(BuildReport::failed(&error), &error),
            );
        }
    };
    let output = match (args.out, args.cache) {
        (Some(out), _) => Output::Staged(out),
        (None, Some(cache)) => Output::Cache(cache),
        (None, None) => {
            let error = Error::InvalidConfig("build needs --out or --cache".to_string());
            return (
                common.result_path,
                failed(BuildReport::failed(&error), &error),
            );
        }
    };
    let config = BuildConfig {
        workspace: common.workspace.clone(),
        output,
        bin: args.bin,
        expect_commit: args.expect_commit,
        timeout: Duration::from_secs(args.timeout_seconds),
        max_workspace_bytes: args.max_workspace_mb.saturating_mul(MIB),
        max_module_bytes: args.max_module_bytes,
        jobs: args.jobs,
        tools: Tools::from_env(common.git.clone(), common.cargo.clone()),
        isolation_probe: args.isolation_probe,
    };
    let (report, json) = run_build(&config, &log);
    tracing::info!(ok = report.ok, sha256 = ?report.sha256, compile_time_ms = ?report.compile_time_ms, "build done");
    log.flush();
    (common.result_path, json)
}

fn publish(args: PublishArgs) -> (PathBuf, String) {
    let common = args.common;
    let log = match open_log(&common, "publish.log") {
        Ok(log) => log,
        Err(error) => {
            return (
                common.result_path,
                failed(BuildReport::failed(&error), &error),
            );
        }
    };
    let config = PublishConfig {
        from: args.from,
        cache: args.cache,
        max_module_bytes: args.max_module_bytes,
    };
    let (report, json) = run_publish(&config, &log);
    tracing::info!(ok = report.ok, sha256 = ?report.sha256, "publish done");
    log.flush();
    (common.result_path, json)
}

fn fetch_url(args: FetchUrlArgs) -> (PathBuf, String) {
    let started = std::time::Instant::now();
    let result = (|| {
        let config = DownloadConfig {
            policy: AddressPolicy::new(&args.allow_cidrs)?,
            max_bytes: args.max_bytes,
            timeout: Duration::from_secs(args.timeout_seconds),
            extra_roots_pem: args.ca_pem.map(String::into_bytes),
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| Error::Io {
                what: "starting the runtime for",
                path: args.cache.clone(),
                source,
            })?;
        runtime.block_on(fetch_module(
            &args.url,
            &args.sha256,
            &args.cache,
            &config,
            args.max_bytes,
        ))
    })();
    let time_ms = started.elapsed().as_millis().try_into().unwrap_or(u64::MAX);
    let mut report = match result {
        Ok(fetched) => {
            tracing::info!(url = %args.url, sha256 = %fetched.sha256, size = fetched.size_bytes, already_present = fetched.published.already_present, time_ms, "module fetched");
            BuildReport {
                v: outlayer_compiler::report::REPORT_VERSION,
                ok: true,
                sha256: Some(fetched.sha256),
                size_bytes: Some(fetched.size_bytes),
                time_ms,
                ..Default::default()
            }
        }
        Err(error) => {
            tracing::warn!(url = %args.url, error = %error, kind = error.kind(), "fetching the module failed");
            BuildReport {
                time_ms,
                ..BuildReport::failed(&error)
            }
        }
    };
    (args.result_path, encode(&mut report))
}

fn open_log(common: &Common, name: &str) -> Result<Arc<Log>, Error> {
    let path = common
        .log_file
        .clone()
        .unwrap_or_else(|| Path::new(&common.workspace).join("logs").join(name));
    Log::create(&path, common.max_log_bytes).map(Arc::new)
}

/// The report of a command that failed before it could start (no log yet).
fn failed(mut report: impl Report, error: &Error) -> String {
    tracing::warn!(error = %error, kind = error.kind(), "cannot start");
    encode(&mut report)
}
