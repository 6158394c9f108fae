//! `outlayer-executor`: runs one WASI module and writes one result message. The command line is
//! documented in executor-image/README.md; the operator builds the executor pod from it.
//!
//! Exit status: 0 whenever a well-formed result was written (the guest succeeded or failed);
//! non-zero only for platform failures, with the reason on stderr and as plain text (never JSON)
//! at the result path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use outlayer_executor::module_file::{self, VerifiedModule};
use outlayer_executor::result::write_result;
use outlayer_executor::{
    Deterministic, Execution, Executor, Fault, Job, Limits, PlatformError, ResponseFormat,
    ResultMessage, SystemEnv,
};
use tracing_subscriber::EnvFilter;

/// How long past the time limit the watchdog waits before it ends the process itself. The fuel
/// loop notices the deadline within one slice; the watchdog exists for what it cannot see (a
/// start function, a pathological host call) and must still leave the run within limit + 1 s.
const WATCHDOG_GRACE: Duration = Duration::from_millis(500);

/// Runs one WASI (preview 1) module under fuel, memory, time and output limits and writes a
/// JSON result message.
#[derive(Debug, Parser)]
#[command(name = "outlayer-executor", version)]
struct Cli {
    /// The WebAssembly module to run.
    #[arg(long, env = "OUTLAYER_MODULE")]
    module: PathBuf,
    /// Expected sha256 of the module (64 hex chars); verified before the module is parsed.
    #[arg(long, env = "OUTLAYER_MODULE_SHA256")]
    module_sha256: String,
    /// File whose bytes are the guest's stdin (empty stdin when neither this nor --input is set).
    #[arg(long, env = "OUTLAYER_INPUT_FILE", conflicts_with = "input")]
    input_file: Option<PathBuf>,
    /// The guest's stdin given inline as text.
    #[arg(long, env = "OUTLAYER_INPUT")]
    input: Option<String>,
    /// JSON object of secret environment variables, e.g. {"API_KEY":"..."}.
    #[arg(long, env = "OUTLAYER_ENV_FILE")]
    env_file: Option<PathBuf>,
    /// Fuel budget (≈ instructions).
    #[arg(long, env = "OUTLAYER_MAX_INSTRUCTIONS", default_value_t = Limits::default().max_instructions)]
    max_instructions: u64,
    /// Linear memory limit in MiB.
    #[arg(long, env = "OUTLAYER_MAX_MEMORY_MB", default_value_t = Limits::default().max_memory_mb)]
    max_memory_mb: u32,
    /// Wall-clock limit in seconds.
    #[arg(long, env = "OUTLAYER_MAX_EXECUTION_SECONDS", default_value_t = Limits::default().max_execution_seconds)]
    max_execution_seconds: u64,
    /// Largest stdout in bytes; more is an error.
    #[arg(long, env = "OUTLAYER_MAX_OUTPUT_BYTES", default_value_t = Limits::default().max_output_bytes)]
    max_output_bytes: u64,
    /// Largest module in bytes.
    #[arg(long, env = "OUTLAYER_MAX_MODULE_BYTES", default_value_t = Limits::default().max_module_bytes)]
    max_module_bytes: u64,
    /// text (UTF-8), json (must parse) or bytes (base64 in the result).
    #[arg(long, env = "OUTLAYER_RESPONSE_FORMAT", default_value_t = ResponseFormat::Text)]
    response_format: ResponseFormat,
    /// Seeded random_get and frozen clocks: the same request replays identically.
    #[arg(long, env = "OUTLAYER_DETERMINISTIC", requires = "seed")]
    deterministic: bool,
    /// Seed for random_get in deterministic mode (any string, e.g. derived from the request id).
    #[arg(long, env = "OUTLAYER_SEED")]
    seed: Option<String>,
    /// What the realtime clock reads in deterministic mode, ns since the Unix epoch.
    #[arg(long, env = "OUTLAYER_FIXED_UNIX_TIME_NS", default_value_t = 0)]
    fixed_unix_time_ns: u64,
    /// NEAR_SENDER_ID for the guest.
    #[arg(long, env = "OUTLAYER_SENDER_ID", default_value = "")]
    sender_id: String,
    /// NEAR_REQUEST_ID for the guest.
    #[arg(long, env = "OUTLAYER_REQUEST_ID", default_value = "")]
    request_id: String,
    /// NEAR_CONTRACT_ID for the guest.
    #[arg(long, env = "OUTLAYER_CONTRACT_ID", default_value = "")]
    contract_id: String,
    /// NEAR_BLOCK_HEIGHT for the guest.
    #[arg(long, env = "OUTLAYER_BLOCK_HEIGHT", default_value = "")]
    block_height: String,
    /// Where the result message goes.
    #[arg(
        long,
        env = "OUTLAYER_RESULT_PATH",
        default_value = "/dev/termination-log"
    )]
    result_path: PathBuf,
    /// Directory for outputs too large for the result message (written as <sha256>).
    #[arg(long, env = "OUTLAYER_OUTPUT_DIR")]
    output_dir: Option<PathBuf>,
}

impl Cli {
    fn limits(&self) -> Limits {
        Limits {
            max_instructions: self.max_instructions,
            max_memory_mb: self.max_memory_mb,
            max_execution_seconds: self.max_execution_seconds,
            max_output_bytes: self.max_output_bytes,
            max_module_bytes: self.max_module_bytes,
        }
    }
}

/// Set by whichever of the main thread and the watchdog writes the result first; the other
/// then writes nothing, so the result path never holds two messages.
static RESULT_CLAIMED: AtomicBool = AtomicBool::new(false);

fn claim_result() -> bool {
    RESULT_CLAIMED
        .compare_exchange(false, true, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok()
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .init();
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == "serve-once")
    {
        let cli = ServeCli::parse_from(std::env::args_os().skip(1));
        return serve_once(&cli);
    }
    let cli = Cli::parse();
    let job = match RunJob::from_cli(&cli) {
        Ok(job) => job,
        Err(error) => return platform_failure(&cli.result_path, &error),
    };
    match run(&job) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => platform_failure(&cli.result_path, &error),
    }
}

/// Reports a platform failure: on stderr, as plain text at the result path, and in the exit status.
fn platform_failure(result_path: &Path, error: &PlatformError) -> ExitCode {
    tracing::error!(%error, "platform failure, no result written");
    eprintln!("outlayer-executor: {error}");
    if claim_result() {
        // Plain text, never JSON: the operator must not mistake it for a guest's result.
        let _ = std::fs::write(result_path, format!("platform error: {error}"));
    }
    ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(1))
}

/// One execution, however it arrived (command line or handoff).
pub(crate) struct RunJob {
    module: PathBuf,
    module_sha256: String,
    input: Vec<u8>,
    secrets: BTreeMap<String, String>,
    limits: Limits,
    response_format: ResponseFormat,
    deterministic: Option<Deterministic>,
    system: SystemEnv,
    result_path: PathBuf,
    output_dir: Option<PathBuf>,
}

impl RunJob {
    fn from_cli(cli: &Cli) -> Result<Self, PlatformError> {
        let input = match (&cli.input_file, &cli.input) {
            (Some(path), _) => read_file("input", path)?,
            (None, Some(text)) => text.clone().into_bytes(),
            (None, None) => Vec::new(),
        };
        let secrets = match &cli.env_file {
            Some(path) => read_secrets(path)?,
            None => BTreeMap::new(),
        };
        Ok(Self {
            module: cli.module.clone(),
            module_sha256: cli.module_sha256.clone(),
            input,
            secrets,
            limits: cli.limits(),
            response_format: cli.response_format,
            deterministic: cli.deterministic.then(|| Deterministic {
                seed: cli.seed.clone().unwrap_or_default().into_bytes(),
                unix_time_nanos: cli.fixed_unix_time_ns,
            }),
            system: SystemEnv {
                sender_id: cli.sender_id.clone(),
                request_id: cli.request_id.clone(),
                contract_id: cli.contract_id.clone(),
                block_height: cli.block_height.clone(),
            },
            result_path: cli.result_path.clone(),
            output_dir: cli.output_dir.clone(),
        })
    }
}

fn run(job: &RunJob) -> Result<(), PlatformError> {
    let started = Instant::now();
    let limits = job.limits;
    let expected = module_file::parse_sha256(&job.module_sha256)?;
    let module = module_file::load_verified(&job.module, &expected, limits.max_module_bytes)?;

    let execution = match module {
        VerifiedModule::TooLarge { size } => Execution {
            outcome: Err(Fault::ModuleTooLarge {
                size,
                limit: limits.max_module_bytes,
            }),
            instructions: 0,
            elapsed: started.elapsed(),
            exit_code: None,
            stderr: Vec::new(),
        },
        VerifiedModule::Bytes(wasm) => {
            arm_watchdog(job, started);
            let executor = Executor::new()?;
            executor.run(&Job {
                wasm: &wasm,
                input: &job.input,
                secrets: &job.secrets,
                system: &job.system,
                limits,
                deterministic: job.deterministic.as_ref(),
            })
        }
    };
    let (message, text) =
        ResultMessage::build(&execution, job.response_format, job.output_dir.as_deref())?;
    if claim_result() {
        write_result(&job.result_path, &text)?;
        tracing::info!(
            ok = message.ok,
            instructions = message.instructions,
            time_ms = message.time_ms,
            error_kind = message.error_kind.as_deref().unwrap_or(""),
            "execution finished"
        );
    }
    Ok(())
}

/// Ends the process with a time-limit result if execution overruns the deadline by
/// [`WATCHDOG_GRACE`]: wasmi cannot interrupt a start function, which runs outside the fuel-slice
/// loop. The instruction count is not observable from this thread, so the full budget is
/// reported — the guest did keep the executor busy for the whole time limit.
fn arm_watchdog(job: &RunJob, started: Instant) {
    let limits = job.limits;
    let deadline = started + Duration::from_secs(limits.max_execution_seconds) + WATCHDOG_GRACE;
    let result_path = job.result_path.clone();
    let format = job.response_format;
    let spawned = std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || {
            std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
            if !claim_result() {
                return;
            }
            let execution = Execution {
                outcome: Err(Fault::TimeLimit {
                    seconds: limits.max_execution_seconds,
                    instructions: limits.max_instructions,
                }),
                instructions: limits.max_instructions,
                elapsed: started.elapsed(),
                exit_code: None,
                stderr: Vec::new(),
            };
            let code = match ResultMessage::build(&execution, format, None)
                .and_then(|(_, text)| write_result(&result_path, &text))
            {
                Ok(()) => 0,
                Err(error) => {
                    eprintln!("outlayer-executor: {error}");
                    error.exit_code()
                }
            };
            tracing::warn!("guest overran the time limit outside the fuel loop; watchdog ended it");
            std::process::exit(code);
        });
    if let Err(error) = spawned {
        // Without a watchdog only fuel bounds a start function; the run itself still works.
        tracing::warn!(%error, "could not start the watchdog thread");
    }
}

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, PlatformError> {
    std::fs::read(path).map_err(|source| PlatformError::Read {
        what,
        path: path.to_path_buf(),
        source,
    })
}

fn read_secrets(path: &Path) -> Result<BTreeMap<String, String>, PlatformError> {
    let bytes = read_file("env file", path)?;
    serde_json::from_slice(&bytes).map_err(|source| PlatformError::EnvFile {
        path: path.to_path_buf(),
        source,
    })
}

/// Exit status of a warm executor that no assignment reached before its deadline.
const EXIT_NO_ASSIGNMENT: u8 = 6;

/// `outlayer-executor serve-once`: a warm pod's executor. Listens on the handoff port, accepts
/// exactly one assignment carrying the pod's token, stops listening, runs it and writes the result
/// as a cold run does; exits with status 6 if none came before `--wait-seconds`.
#[derive(Debug, Parser)]
#[command(name = "serve-once")]
struct ServeCli {
    /// TCP port of the handoff (all addresses).
    #[arg(long, env = "OUTLAYER_HANDOFF_PORT", default_value_t = 7070)]
    port: u16,
    /// File holding this pod's one-time token (a mounted Secret).
    #[arg(long, env = "OUTLAYER_TOKEN_FILE")]
    token_file: PathBuf,
    /// Directory of the modules, `<sha256>.wasm` (the cache's module area, read-only).
    #[arg(long, env = "OUTLAYER_MODULE_DIR")]
    module_dir: PathBuf,
    /// The pod's memory class in MiB: assignments with a larger maxMemoryMb are refused.
    #[arg(long, env = "OUTLAYER_MEMORY_CLASS_MB")]
    memory_class_mb: Option<u32>,
    /// How long to wait for the assignment before exiting without one.
    #[arg(long, env = "OUTLAYER_WAIT_SECONDS", default_value_t = 600)]
    wait_seconds: u64,
    /// Largest module in bytes.
    #[arg(long, env = "OUTLAYER_MAX_MODULE_BYTES", default_value_t = Limits::default().max_module_bytes)]
    max_module_bytes: u64,
    /// Where the result message goes.
    #[arg(
        long,
        env = "OUTLAYER_RESULT_PATH",
        default_value = "/dev/termination-log"
    )]
    result_path: PathBuf,
    /// Directory for outputs too large for the result message.
    #[arg(long, env = "OUTLAYER_OUTPUT_DIR")]
    output_dir: Option<PathBuf>,
}

/// Waiting → assigned (the handoff won) or expired (the deadline won); whichever comes first.
static SERVE_STATE: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);
const WAITING: u8 = 0;
const ASSIGNED: u8 = 1;
const EXPIRED: u8 = 2;

fn serve_once(cli: &ServeCli) -> ExitCode {
    let token = match std::fs::read_to_string(&cli.token_file) {
        Ok(token) if !token.trim().is_empty() => token,
        Ok(_) => {
            return serve_failure(
                cli,
                &format!("token file {} is empty", cli.token_file.display()),
                3,
            );
        }
        Err(error) => {
            let message = format!("reading token file {}: {error}", cli.token_file.display());
            return serve_failure(cli, &message, 3);
        }
    };
    let listener = match std::net::TcpListener::bind(("0.0.0.0", cli.port)) {
        Ok(listener) => listener,
        Err(error) => {
            return serve_failure(cli, &format!("listening on port {}: {error}", cli.port), 1);
        }
    };
    arm_wait_deadline(cli);
    tracing::info!(port = cli.port, "waiting for the assignment");
    let claim = || {
        SERVE_STATE
            .compare_exchange(WAITING, ASSIGNED, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    };
    let assignment = match outlayer_executor::handoff::accept_one(
        &listener,
        &token,
        cli.memory_class_mb,
        Duration::from_secs(5),
        claim,
    ) {
        Ok(assignment) => assignment,
        // The deadline thread ends the process; this only covers a broken listener.
        Err(error) => return serve_failure(cli, &format!("accepting the handoff: {error}"), 1),
    };
    // Single use: nobody else is heard from now on.
    drop(listener);
    drop(token);
    let response_format = match assignment.response_format() {
        Ok(format) => format,
        Err(error) => return serve_failure(cli, &error, 2),
    };
    let job = RunJob {
        module: cli
            .module_dir
            .join(format!("{}.wasm", assignment.module_sha256)),
        module_sha256: assignment.module_sha256.clone(),
        input: assignment.input.clone().into_bytes(),
        secrets: assignment.secrets.clone(),
        limits: Limits {
            max_module_bytes: cli.max_module_bytes,
            ..assignment.limits()
        },
        response_format,
        deterministic: assignment.deterministic(),
        system: assignment.system(),
        result_path: cli.result_path.clone(),
        output_dir: cli.output_dir.clone(),
    };
    match run(&job) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => platform_failure(&cli.result_path, &error),
    }
}

/// Ends the process with a clear message when no assignment arrived in time.
fn arm_wait_deadline(cli: &ServeCli) {
    let wait = Duration::from_secs(cli.wait_seconds);
    let result_path = cli.result_path.clone();
    let spawned = std::thread::Builder::new()
        .name("wait-deadline".into())
        .spawn(move || {
            std::thread::sleep(wait);
            if SERVE_STATE
                .compare_exchange(WAITING, EXPIRED, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                let message = format!(
                    "no assignment arrived within {} s; exiting unused",
                    wait.as_secs()
                );
                eprintln!("outlayer-executor: {message}");
                let _ = std::fs::write(&result_path, format!("platform error: {message}"));
                std::process::exit(i32::from(EXIT_NO_ASSIGNMENT));
            }
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "could not start the wait deadline thread");
    }
}

fn serve_failure(cli: &ServeCli, message: &str, code: u8) -> ExitCode {
    tracing::error!(%message, "serve-once failed");
    eprintln!("outlayer-executor: {message}");
    if claim_result() {
        let _ = std::fs::write(&cli.result_path, format!("platform error: {message}"));
    }
    ExitCode::from(code)
}
