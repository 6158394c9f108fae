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
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "platform failure, no result written");
            eprintln!("outlayer-executor: {error}");
            if claim_result() {
                // Plain text, never JSON: the operator must not mistake it for a guest's result.
                let _ = std::fs::write(&cli.result_path, format!("platform error: {error}"));
            }
            ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(1))
        }
    }
}

fn run(cli: &Cli) -> Result<(), PlatformError> {
    let started = Instant::now();
    let limits = cli.limits();
    let expected = module_file::parse_sha256(&cli.module_sha256)?;
    let module = module_file::load_verified(&cli.module, &expected, limits.max_module_bytes)?;
    let input = match (&cli.input_file, &cli.input) {
        (Some(path), _) => read_file("input", path)?,
        (None, Some(text)) => text.clone().into_bytes(),
        (None, None) => Vec::new(),
    };
    let secrets = match &cli.env_file {
        Some(path) => read_secrets(path)?,
        None => BTreeMap::new(),
    };
    let system = SystemEnv {
        sender_id: cli.sender_id.clone(),
        request_id: cli.request_id.clone(),
        contract_id: cli.contract_id.clone(),
        block_height: cli.block_height.clone(),
    };
    let deterministic = cli.deterministic.then(|| Deterministic {
        seed: cli.seed.clone().unwrap_or_default().into_bytes(),
        unix_time_nanos: cli.fixed_unix_time_ns,
    });

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
            arm_watchdog(cli, limits, started);
            let executor = Executor::new()?;
            executor.run(&Job {
                wasm: &wasm,
                input: &input,
                secrets: &secrets,
                system: &system,
                limits,
                deterministic: deterministic.as_ref(),
            })
        }
    };
    let (message, text) =
        ResultMessage::build(&execution, cli.response_format, cli.output_dir.as_deref())?;
    if claim_result() {
        write_result(&cli.result_path, &text)?;
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
fn arm_watchdog(cli: &Cli, limits: Limits, started: Instant) {
    let deadline = started + Duration::from_secs(limits.max_execution_seconds) + WATCHDOG_GRACE;
    let result_path = cli.result_path.clone();
    let format = cli.response_format;
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
