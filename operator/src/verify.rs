//! `outlayer-operator verify`: anyone checks an answer from the chain alone (DESIGN §10).
//!
//! Given the transaction that made the request (its hash and signer), it reads from the chain the
//! request (`execution_requested`: code source, input, limits, format, sender, block) and the
//! answer (`execution_completed`: success, instructions, evidence; the callback's return value:
//! the output the client received), fetches the repository at the commit the evidence names,
//! rebuilds it with the compiler binary (reproducible: DESIGN §5), and replays the request in the
//! executor library. One verdict per check; exit 0 when all match, 1 on any mismatch, 2 when
//! something could not be checked (e.g. the request used secrets the verifier does not hold).
//!
//! The decisions (reading the chain's record, comparing, the exit status, rendering) are pure
//! functions with table tests; [`run`] is the thin I/O around them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, anyhow, bail};
use clap::Args;
use near_primitives::views::{ExecutionStatusView, FinalExecutionOutcomeView};
use outlayer_contract::{Evidence, PendingRequest, ResponseFormat};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::chain::{ChainClient, ChainConfig};

/// WASI imports whose results differ between runs unless the executor is in deterministic mode,
/// which on-chain runs are not yet (issue 17, item 1).
const NONDETERMINISTIC_IMPORTS: [&str; 2] = ["random_get", "clock_time_get"];

#[derive(Args, Debug)]
pub struct VerifyArgs {
    /// NEAR JSON-RPC endpoint (an archival node for old requests).
    #[arg(long)]
    pub rpc_url: String,
    /// The OutLayer contract.
    #[arg(long)]
    pub contract_id: near_primitives::types::AccountId,
    /// Hash of the transaction that made the request (a user's `request_execution`, or the call
    /// into the client contract that made it): its receipts hold the request and the answer.
    #[arg(long)]
    pub tx: near_primitives::hash::CryptoHash,
    /// The account that signed that transaction.
    #[arg(long)]
    pub sender: near_primitives::types::AccountId,
    /// Which request of the transaction (when it made several); the only one by default.
    #[arg(long)]
    pub request_id: Option<u64>,
    /// The compiler binary [default: `outlayer-compiler` next to this binary, else on PATH].
    #[arg(long)]
    pub compiler: Option<PathBuf>,
    /// The cargo program the compiler runs (a toolchain's cargo, or the rustup proxy).
    #[arg(long, default_value = "cargo")]
    pub cargo: String,
    /// Fetch repositories under PREFIX from REPLACEMENT (as the operator's `--git-mirror`).
    #[arg(long = "git-mirror", value_name = "PREFIX=REPLACEMENT")]
    pub git_mirrors: Vec<String>,
    /// Repository prefixes the compiler may fetch.
    #[arg(long = "allow-repo-prefix", default_value = "https://github.com/")]
    pub allow_repo_prefixes: Vec<String>,
    /// Where checkouts and rebuilt modules are kept between runs [default:
    /// `$XDG_CACHE_HOME/outlayer-verify` or `~/.cache/outlayer-verify`].
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// The request's secrets as a JSON object (name → value), for a request that used secrets:
    /// without it, output and instructions cannot be checked.
    #[arg(long)]
    pub env_file: Option<PathBuf>,
    /// Print one JSON object instead of lines.
    #[arg(long)]
    pub json: bool,
}

/// One check's verdict.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "verdict", rename_all = "camelCase")]
pub enum Check {
    Match { detail: String },
    Mismatch { expected: String, got: String },
    NotChecked { reason: String },
}

impl Check {
    fn compare(expected: String, got: String) -> Self {
        if expected == got {
            Check::Match { detail: got }
        } else {
            Check::Mismatch { expected, got }
        }
    }
    fn not_checked(reason: impl Into<String>) -> Self {
        Check::NotChecked {
            reason: reason.into(),
        }
    }
    /// The verdict as printed; a signature is `valid` or `INVALID` rather than a match.
    fn word(&self, name: &str) -> &'static str {
        match (self, name) {
            (Check::Match { .. }, "seed") => "valid",
            (Check::Mismatch { .. }, "seed") => "INVALID",
            (Check::Match { .. }, _) => "match",
            (Check::Mismatch { .. }, _) => "MISMATCH",
            (Check::NotChecked { .. }, _) => "could not check",
        }
    }
}

/// The verdicts of one verification.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub request_id: u64,
    pub repo: String,
    pub commit: String,
    pub source_to_module: Check,
    pub seed: Check,
    pub output: Check,
    pub instructions: Check,
    /// Seconds spent rebuilding (0 when the module came from the verifier's cache).
    pub build_seconds: f64,
    pub module_cached: bool,
    pub total_seconds: f64,
}

impl Report {
    fn checks(&self) -> [(&'static str, &Check); 4] {
        [
            ("source → module", &self.source_to_module),
            ("seed", &self.seed),
            ("output", &self.output),
            ("instructions", &self.instructions),
        ]
    }

    /// 0 all checked ones match (a `seed` that could not be checked does not count: see
    /// [`seed_check`]); 1 any mismatch; 2 something else could not be checked.
    pub fn exit_code(&self) -> u8 {
        let checks = self.checks();
        if checks
            .iter()
            .any(|(_, c)| matches!(c, Check::Mismatch { .. }))
        {
            return 1;
        }
        let unchecked = checks
            .iter()
            .filter(|(name, _)| *name != "seed")
            .any(|(_, c)| matches!(c, Check::NotChecked { .. }));
        if unchecked { 2 } else { 0 }
    }

    pub fn render_text(&self) -> String {
        let mut out = format!(
            "request {} ({}@{})\n",
            self.request_id, self.repo, self.commit
        );
        for (name, check) in self.checks() {
            let detail = match check {
                Check::Match { detail } if detail.is_empty() => String::new(),
                Check::Match { detail } => format!(" ({detail})"),
                Check::Mismatch { expected, got } => {
                    format!(" (the chain says {expected}; rebuilt and replayed: {got})")
                }
                Check::NotChecked { reason } => format!(": {reason}"),
            };
            out.push_str(&format!("{name}: {}{detail}\n", check.word(name)));
        }
        out.push_str(&format!(
            "took {:.1} s (build {:.1} s{})\n",
            self.total_seconds,
            self.build_seconds,
            if self.module_cached {
                ", module from the verifier's cache"
            } else {
                ""
            }
        ));
        out
    }
}

/// The `execution_completed` event as the verifier reads it (its own type: fields the verifier does
/// not need are ignored, so older and newer contracts both parse).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Completed {
    pub request_id: u64,
    pub success: bool,
    #[serde(default)]
    pub timed_out: bool,
    pub resources_used: Used,
    #[serde(default)]
    pub evidence: Option<Evidence>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Used {
    pub instructions: u64,
}

/// One receipt of the request's transaction, as far as the verifier reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiptRecord {
    pub executor: String,
    pub logs: Vec<String>,
    /// What the receipt returned (`SuccessValue`), when it succeeded.
    pub returned: Option<Vec<u8>>,
}

/// What the chain says about one request: the request, the answer, and the value the client got.
#[derive(Clone, Debug, PartialEq)]
pub struct ChainRecord {
    pub request: PendingRequest,
    pub completed: Completed,
    /// The callback's return value (JSON): the output on success, `null` on failure.
    pub returned: Option<Vec<u8>>,
}

/// Finds the request and its answer among the receipts of the request's transaction: the
/// contract's `execution_requested` and `execution_completed` events (logged by the contract
/// itself; other accounts' logs are ignored, since anyone can log `EVENT_JSON`), and the return
/// value of the receipt that logged the completion (the yield's callback).
pub fn read_record(
    receipts: &[ReceiptRecord],
    contract: &str,
    request_id: Option<u64>,
) -> Result<ChainRecord, String> {
    let mut requests: Vec<PendingRequest> = Vec::new();
    let mut completions: Vec<(Completed, Option<Vec<u8>>)> = Vec::new();
    for receipt in receipts.iter().filter(|r| r.executor == contract) {
        for line in &receipt.logs {
            let Some(json) = line.strip_prefix("EVENT_JSON:") else {
                continue;
            };
            let Ok(event) = serde_json::from_str::<serde_json::Value>(json) else {
                continue;
            };
            if event["standard"] != "near-outlayer" {
                continue;
            }
            let data = event["data"].as_array().cloned().unwrap_or_default();
            match event["event"].as_str() {
                Some("execution_requested") => {
                    for item in data {
                        let request = serde_json::from_value(item)
                            .map_err(|e| format!("unreadable execution_requested event: {e}"))?;
                        requests.push(request);
                    }
                }
                Some("execution_completed") => {
                    for item in data {
                        let completed = serde_json::from_value(item)
                            .map_err(|e| format!("unreadable execution_completed event: {e}"))?;
                        completions.push((completed, receipt.returned.clone()));
                    }
                }
                _ => {}
            }
        }
    }
    let request = match (request_id, requests.as_slice()) {
        (Some(id), _) => requests
            .iter()
            .find(|r| r.request_id == id)
            .cloned()
            .ok_or_else(|| format!("the transaction made no request {id}"))?,
        (None, [one]) => one.clone(),
        (None, []) => return Err("the transaction made no OutLayer request".to_string()),
        (None, many) => {
            return Err(format!(
                "the transaction made {} requests; name one with --request-id",
                many.len()
            ));
        }
    };
    let (completed, returned) = completions
        .into_iter()
        .find(|(c, _)| c.request_id == request.request_id)
        .ok_or_else(|| {
            format!(
                "request {} has no execution_completed yet (still pending, or cancelled)",
                request.request_id
            )
        })?;
    Ok(ChainRecord {
        request,
        completed,
        returned,
    })
}

/// The receipts of a transaction's outcome.
pub fn receipts_of(outcome: &FinalExecutionOutcomeView) -> Vec<ReceiptRecord> {
    outcome
        .receipts_outcome
        .iter()
        .map(|receipt| ReceiptRecord {
            executor: receipt.outcome.executor_id.to_string(),
            logs: receipt.outcome.logs.clone(),
            returned: match &receipt.outcome.status {
                ExecutionStatusView::SuccessValue(value) => Some(value.clone()),
                _ => None,
            },
        })
        .collect()
}

/// What the replay produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Replay {
    /// The value the contract would hand the client (JSON text), or `None` when the run failed.
    pub client_value: Option<String>,
    /// Why the run failed, when it did.
    pub failure: Option<String>,
    pub instructions: u64,
    /// The module imports randomness or a clock (results may legitimately differ unless `seeded`).
    pub nondeterministic: bool,
    /// The replay ran deterministically with the run's own seed and clock.
    pub seeded: bool,
}

/// The module check: the rebuilt module's sha256 against the evidence.
pub fn module_check(evidence: Option<&Evidence>, rebuilt: &str, identity: &str) -> Check {
    match evidence {
        None => Check::not_checked(
            "the answer names no module (an operator from before the evidence, or a timeout)",
        ),
        Some(evidence) => match Check::compare(evidence.wasm_sha256.clone(), rebuilt.to_string()) {
            Check::Match { detail } => Check::Match {
                detail: format!("{detail}, {identity}"),
            },
            other => other,
        },
    }
}

/// The output and instructions checks, from the chain's record and the replay.
pub fn run_checks(record: &ChainRecord, replay: &Replay) -> (Check, Check) {
    let chain_value = record.returned.as_deref().and_then(|bytes| {
        serde_json::from_slice::<serde_json::Value>(bytes)
            .ok()
            .filter(|v| !v.is_null())
    });
    let replayed_value = replay
        .client_value
        .as_deref()
        .and_then(|text| serde_json::from_str::<serde_json::Value>(text).ok());
    let describe = |success: bool, value: &Option<serde_json::Value>| match (success, value) {
        (true, Some(value)) => abbreviate(&value.to_string()),
        (true, None) => "success without an output".to_string(),
        (false, _) => "a failure".to_string(),
    };
    let output = match (record.completed.success, replay.client_value.is_some()) {
        (true, true) | (false, false) => {
            let expected = describe(record.completed.success, &chain_value);
            let got = describe(replay.client_value.is_some(), &replayed_value);
            if chain_value == replayed_value {
                Check::Match {
                    detail: String::new(),
                }
            } else {
                Check::Mismatch { expected, got }
            }
        }
        (true, false) => Check::Mismatch {
            expected: describe(true, &chain_value),
            got: format!(
                "a failure ({})",
                replay.failure.as_deref().unwrap_or("no output")
            ),
        },
        (false, true) => Check::Mismatch {
            expected: "a failure".to_string(),
            got: describe(true, &replayed_value),
        },
    };
    let instructions = Check::compare(
        record.completed.resources_used.instructions.to_string(),
        replay.instructions.to_string(),
    );
    if replay.nondeterministic && !replay.seeded {
        // A random or time-dependent guest whose run was not seeded (the request recorded no seed
        // key): a difference proves nothing; agreement still counts.
        let soften = |check: Check| match check {
            Check::Mismatch { expected, got } => Check::not_checked(format!(
                "the guest reads randomness or the clock and its run was not seeded (no seed key \
                 was published when the request was made) (the chain says {expected}; the replay \
                 gave {got})"
            )),
            other => other,
        };
        return (soften(output), soften(instructions));
    }
    (output, instructions)
}

/// The seed check: the answer's seed signature against the seed key the request recorded, over the
/// request's seed message. With it, the seed the replay uses (`Some` only when the signature is valid).
pub fn seed_check(record: &ChainRecord, contract: &str) -> (Check, Option<String>) {
    let request = &record.request;
    let Some(key) = &request.seed_public_key else {
        return (
            Check::not_checked(
                "no seed key was published when the request was made: its run was not seeded",
            ),
            None,
        );
    };
    let signature = record
        .completed
        .evidence
        .as_ref()
        .and_then(|evidence| evidence.seed_signature.as_deref());
    let Some(signature) = signature else {
        let reason = if record.completed.timed_out {
            "the request timed out: there is no seed to check"
        } else {
            "the answer carries no seed signature (a failure need not)"
        };
        return (Check::not_checked(reason), None);
    };
    let key = key.to_string();
    match crate::seed::check_seed_signature(
        &key,
        contract,
        request.request_id,
        &request.data_id,
        signature,
    ) {
        Ok(seed) => (
            Check::Match {
                detail: format!("signed by {key}"),
            },
            Some(seed),
        ),
        Err(why) => (
            Check::Mismatch {
                expected: format!("{key}'s signature over the request's seed message"),
                got: why,
            },
            None,
        ),
    }
}

fn abbreviate(text: &str) -> String {
    const MAX: usize = 120;
    if text.len() <= MAX {
        return text.to_string();
    }
    let mut cut = MAX;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… ({} bytes)", &text[..cut], text.len())
}

/// Whether the module imports randomness or a clock from WASI.
pub fn imports_nondeterminism(wasm: &[u8]) -> bool {
    wasmparser::Parser::new(0).parse_all(wasm).any(|payload| {
        let Ok(wasmparser::Payload::ImportSection(reader)) = payload else {
            return false;
        };
        reader.into_iter().any(|import| {
            import.is_ok_and(|import| NONDETERMINISTIC_IMPORTS.contains(&import.name))
        })
    })
}

/// The cache key of a (repository, commit): the directory name of its checkout.
fn source_key(repo: &str, commit: &str) -> String {
    let digest = Sha256::digest(format!("{repo}\0{commit}").as_bytes());
    hex::encode(&digest[..16])
}

/// A rebuild the verifier did earlier (kept next to the module in its cache).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
struct CachedBuild {
    sha256: String,
    toolchain: Option<String>,
    compiler: Option<String>,
}

/// The Cargo workspace root above `dir`, if any (a `Cargo.toml` with a `[workspace]` table).
fn enclosing_workspace(dir: &Path) -> Option<PathBuf> {
    let absolute = std::path::absolute(dir).ok()?;
    absolute
        .ancestors()
        .find(|ancestor| {
            std::fs::read_to_string(ancestor.join("Cargo.toml"))
                .is_ok_and(|text| text.lines().any(|line| line.trim() == "[workspace]"))
        })
        .map(Path::to_path_buf)
}

fn default_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("outlayer-verify")
}

fn compiler_path(args: &VerifyArgs) -> PathBuf {
    if let Some(path) = &args.compiler {
        return path.clone();
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("outlayer-compiler")))
        .filter(|path| path.is_file())
        .unwrap_or_else(|| PathBuf::from("outlayer-compiler"))
}

/// Runs one compiler step and reads its report.
fn compiler_step(
    compiler: &Path,
    args: &[String],
    result: &Path,
) -> anyhow::Result<serde_json::Value> {
    let output = Command::new(compiler)
        .args(args)
        .arg("--result-path")
        .arg(result)
        .env("RUST_LOG", "warn")
        .output()
        .with_context(|| format!("running {}", compiler.display()))?;
    let text = std::fs::read_to_string(result).with_context(|| {
        format!(
            "{} {} wrote no report (exit {:?}): {}",
            compiler.display(),
            args.first().map(String::as_str).unwrap_or_default(),
            output.status.code(),
            String::from_utf8_lossy(&output.stderr)
        )
    })?;
    let report: serde_json::Value = serde_json::from_str(&text)?;
    if report["ok"] != true {
        bail!(
            "{} failed: {}",
            args.first().map(String::as_str).unwrap_or_default(),
            report["error"].as_str().unwrap_or("no error message")
        );
    }
    Ok(report)
}

/// Rebuilds (repo, commit), or finds the verifier's own earlier rebuild. Returns the module, its
/// build, and whether it came from the cache.
fn rebuild(
    args: &VerifyArgs,
    cache: &Path,
    repo: &str,
    commit: &str,
) -> anyhow::Result<(Vec<u8>, CachedBuild, bool)> {
    let key = source_key(repo, commit);
    let record_path = cache.join("builds").join(format!("{key}.json"));
    if let Ok(text) = std::fs::read_to_string(&record_path)
        && let Ok(build) = serde_json::from_str::<CachedBuild>(&text)
        && let Ok(wasm) = std::fs::read(cache.join("wasm").join(format!("{}.wasm", build.sha256)))
        && hex::encode(Sha256::digest(&wasm)) == build.sha256
    {
        return Ok((wasm, build, true));
    }
    let compiler = compiler_path(args);
    let workspace = cache.join("work").join(&key);
    std::fs::create_dir_all(&workspace)
        .with_context(|| format!("creating {}", workspace.display()))?;
    let mut fetch = vec![
        "fetch".to_string(),
        "--repo".to_string(),
        repo.to_string(),
        "--commit".to_string(),
        commit.to_string(),
        "--workspace".to_string(),
        workspace.display().to_string(),
        "--cargo".to_string(),
        args.cargo.clone(),
    ];
    for prefix in &args.allow_repo_prefixes {
        fetch.push(format!("--allow-repo-prefix={prefix}"));
    }
    for mirror in &args.git_mirrors {
        fetch.push(format!("--git-mirror={mirror}"));
    }
    compiler_step(&compiler, &fetch, &cache.join("fetch.json"))?;
    let build = vec![
        "build".to_string(),
        "--workspace".to_string(),
        workspace.display().to_string(),
        "--cache".to_string(),
        cache.display().to_string(),
        "--commit".to_string(),
        commit.to_string(),
        "--cargo".to_string(),
        args.cargo.clone(),
    ];
    let report = compiler_step(&compiler, &build, &cache.join("build.json"))?;
    let built = CachedBuild {
        sha256: report["sha256"]
            .as_str()
            .ok_or_else(|| anyhow!("the build report has no sha256"))?
            .to_string(),
        toolchain: report["toolchain"].as_str().map(str::to_string),
        compiler: report["compiler"].as_str().map(str::to_string),
    };
    let wasm = std::fs::read(cache.join("wasm").join(format!("{}.wasm", built.sha256)))?;
    std::fs::create_dir_all(cache.join("builds"))?;
    std::fs::write(&record_path, serde_json::to_vec(&built)?)?;
    Ok((wasm, built, false))
}

/// Replays the request with the rebuilt module, as the operator's executor pod ran it.
fn replay(
    record: &ChainRecord,
    contract: &str,
    wasm: &[u8],
    secrets: &BTreeMap<String, String>,
    seed: Option<&str>,
) -> anyhow::Result<Replay> {
    let request = &record.request;
    let executor =
        outlayer_executor::Executor::new().map_err(|e| anyhow!("starting the executor: {e}"))?;
    let format = match request.response_format {
        ResponseFormat::Text => outlayer_executor::ResponseFormat::Text,
        ResponseFormat::Json => outlayer_executor::ResponseFormat::Json,
        ResponseFormat::Bytes => outlayer_executor::ResponseFormat::Bytes,
    };
    let system = outlayer_executor::SystemEnv {
        sender_id: request.sender_id.to_string(),
        request_id: request.request_id.to_string(),
        contract_id: contract.to_string(),
        block_height: request.created_at_block.to_string(),
    };
    let limits = outlayer_executor::Limits {
        max_instructions: request.resource_limits.max_instructions,
        max_memory_mb: request.resource_limits.max_memory_mb,
        max_execution_seconds: request.resource_limits.max_execution_seconds,
        ..outlayer_executor::Limits::default()
    };
    let input = request.input_data.clone().unwrap_or_default();
    // As the operator ran it: the seed from the signature, the clock at the request block.
    let deterministic = seed.map(|seed| outlayer_executor::Deterministic {
        seed: seed.as_bytes().to_vec(),
        unix_time_nanos: request.created_at_ns,
    });
    let execution = executor.run(&outlayer_executor::Job {
        wasm,
        input: input.as_bytes(),
        secrets,
        system: &system,
        limits,
        deterministic: deterministic.as_ref(),
    });
    let (client_value, failure) = match &execution.outcome {
        Ok(stdout) => match outlayer_executor::output::encode(stdout, format) {
            Ok(raw) => (Some(raw.get().to_string()), None),
            Err(fault) => (None, Some(fault.to_string())),
        },
        Err(fault) => (None, Some(fault.to_string())),
    };
    Ok(Replay {
        client_value,
        failure,
        instructions: execution.instructions,
        nondeterministic: imports_nondeterminism(wasm),
        seeded: deterministic.is_some(),
    })
}

/// `outlayer-operator verify`; returns the exit status (0 match, 1 mismatch, 2 could not check).
pub async fn run(args: VerifyArgs) -> anyhow::Result<u8> {
    let started = Instant::now();
    let chain = ChainClient::new(
        ChainConfig::new(vec![args.rpc_url.clone()], args.contract_id.clone()),
        None,
    )?;
    let outcome = chain
        .transaction_status(args.tx, &args.sender)
        .await?
        .ok_or_else(|| anyhow!("the RPC node does not know transaction {}", args.tx))?;
    let record = read_record(
        &receipts_of(&outcome.outcome),
        args.contract_id.as_str(),
        args.request_id,
    )
    .map_err(|e| anyhow!(e))?;
    let request = &record.request;
    let evidence = record.completed.evidence.clone();
    let Some(code_source) = &request.code_source else {
        // A module by URL: the request itself pins the module by its sha256; there is no source
        // to rebuild from.
        let url = request
            .wasm_url
            .as_ref()
            .map(|u| format!("{} (sha256 {})", u.url, u.hash))
            .unwrap_or_else(|| "no code source".to_string());
        return Err(anyhow!(
            "request {} runs a prebuilt module by URL, {url}: verify rebuilds modules from repositories only",
            request.request_id
        ));
    };
    let repo = code_source.repo.clone();
    // The commit the operator built (a branch or tag may have moved since).
    let commit = evidence
        .as_ref()
        .and_then(|e| e.commit.clone())
        .unwrap_or_else(|| code_source.commit.clone());

    let cache = args.cache_dir.clone().unwrap_or_else(default_cache_dir);
    if let Some(root) = enclosing_workspace(&cache) {
        bail!(
            "the cache directory {} is inside the Cargo workspace {}: cargo would take the checkout \
             for one of its members; pass a --cache-dir outside it",
            cache.display(),
            root.display()
        );
    }
    let build_started = Instant::now();
    let (wasm, built, module_cached) = rebuild(&args, &cache, &repo, &commit)?;
    let build_seconds = if module_cached {
        0.0
    } else {
        build_started.elapsed().as_secs_f64()
    };
    let identity = [built.toolchain.as_deref(), built.compiler.as_deref()]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(", ");
    let mut source_to_module = module_check(evidence.as_ref(), &built.sha256, &identity);
    if let (Check::Mismatch { .. }, Some(evidence)) = (&source_to_module, &evidence) {
        let differs = |theirs: &Option<String>, ours: &Option<String>| {
            theirs.is_some() && ours.is_some() && theirs != ours
        };
        if differs(&evidence.toolchain, &built.toolchain)
            || differs(&evidence.compiler, &built.compiler)
        {
            source_to_module = Check::not_checked(format!(
                "built by {} / {}, rebuilt with {identity}: rebuild with the same toolchain (--cargo) and compiler (--compiler)",
                evidence.toolchain.as_deref().unwrap_or("?"),
                evidence.compiler.as_deref().unwrap_or("?")
            ));
        }
    }

    let secrets = match &args.env_file {
        Some(path) => serde_json::from_slice::<BTreeMap<String, String>>(
            &std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        )
        .with_context(|| format!("{} is not a JSON object of strings", path.display()))?,
        None => BTreeMap::new(),
    };
    let (seed, run_seed) = seed_check(&record, args.contract_id.as_str());
    let (output, instructions) = if record.completed.timed_out {
        let reason = "the request timed out: there is no answer to check";
        (Check::not_checked(reason), Check::not_checked(reason))
    } else if request.input_omitted {
        let reason = "the input (10,000 bytes or more) is not in the request's event";
        (Check::not_checked(reason), Check::not_checked(reason))
    } else if let (Some(secrets_ref), None) = (&request.secrets_ref, &args.env_file) {
        let reason = format!(
            "the request used secrets ({} / {}); their owner can pass them with --env-file",
            secrets_ref.account_id, secrets_ref.profile
        );
        (Check::not_checked(&reason), Check::not_checked(reason))
    } else if let Check::Mismatch { .. } = &seed {
        let reason = "the seed signature is invalid: there is no seed to replay with";
        (Check::not_checked(reason), Check::not_checked(reason))
    } else {
        let replayed = replay(
            &record,
            args.contract_id.as_str(),
            &wasm,
            &secrets,
            run_seed.as_deref(),
        )?;
        run_checks(&record, &replayed)
    };
    Ok(finish(
        &args,
        Report {
            request_id: request.request_id,
            repo,
            commit,
            source_to_module,
            seed,
            output,
            instructions,
            build_seconds,
            module_cached,
            total_seconds: started.elapsed().as_secs_f64(),
        },
    ))
}

fn finish(args: &VerifyArgs, report: Report) -> u8 {
    if args.json {
        let mut value = serde_json::to_value(&report).unwrap_or_default();
        value["exitCode"] = report.exit_code().into();
        println!("{value}");
    } else {
        print!("{}", report.render_text());
    }
    report.exit_code()
}

#[cfg(test)]
mod tests;
