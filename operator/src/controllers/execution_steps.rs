//! The ExecutionRequest's life as one pure function: [`next_step`] takes the request, what the
//! reconcile has observed so far, the time and the configuration, and says what to do next — look at
//! something more ([`Step::Look`]), or write an [`Outcome`] (status, Event, metric, side effects) that
//! `write_outcome` applies. No I/O here, so every branch has a table test below.
//!
//! | phase | next phases | why |
//! |---|---|---|
//! | (none), Pending | Compiling | the module is not in the cache: a (shared) CompileJob builds it |
//! | | Executing | the module is in the cache (or named by hash): the executor pod starts |
//! | | Succeeded | a compile-only request's module is in the cache: nothing runs (kubectl requests) |
//! | | Failed | the CompileJob failed, the secrets are refused, or the request recorded a seed key the operator does not hold (kubectl requests) |
//! | | Reporting | the same outcomes, on-chain requests: the contract hears about them |
//! | | Expired | on-chain: too little of the yield window is left to compile, run or report |
//! | Compiling | Executing, Succeeded, Failed, Reporting, Expired | as from Pending, when the CompileJob changes |
//! | Executing | Succeeded, Failed | the pod left a result (kubectl requests) |
//! | | Reporting | the pod left a result (on-chain requests: success or guest failure) |
//! | | Executing | the pod ended without a result: a fresh pod, up to `platformRetries` times |
//! | | Expired | on-chain: the yield window closes before the run can end |
//! | Reporting | Succeeded, Failed | the resolve landed, or the contract was already answered |
//! | | Reporting | the contract or RPC refused the resolve for good: retried every 10 s |
//! | | Expired | the yield window closed before a resolve was confirmed |
//! | Succeeded, Failed, Expired | — | cleanup only: pods at once (success) or after retention, the request after its TTL |

use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use serde_json::value::RawValue;

use super::secrets::SecretsStep;
use crate::chain::{
    ChainError, Evidence, ExecutionOutput, ExecutionResponse, Pricing, ReportPlan, ResourceLimits,
    ResourceMetrics,
};
use crate::config::OperatorConfig;
use crate::context::Note;
use crate::crd::{
    CompileJobStatus, CompileState, ConditionStatus, ConditionType, ExecutionRequest,
    ExecutionRequestStatus, HasConditions, MAX_INPUT_BYTES, OutputEncoding, Phase, Reason,
    ResponseFormat, RunOutcome, StatusUpdate, format_duration_ms, format_near,
};
use crate::metrics::ExecutionResult;
use crate::pods::ExecutorOutcome;
use crate::pods::executor::{RESULTS_SUBDIR, executor_pod_name_for};
use crate::pods::result::ResultMessage;
use crate::seed::{RunSeed, SeedStep};

/// How soon an execution waiting for the sealing keys looks again.
pub(crate) const SECRETS_RETRY: Duration = Duration::from_secs(10);
/// How soon a report that the contract or the RPC refused for good is tried again (until the deadline).
pub(crate) const REPORT_RETRY: Duration = Duration::from_secs(10);
/// How often a request waiting for a chain client (none configured) looks again.
pub(crate) const NO_CHAIN_RETRY: Duration = Duration::from_secs(30);
/// How soon a request whose pod failed without a result looks at its fresh pod.
pub(crate) const PLATFORM_RETRY: Duration = Duration::from_millis(100);

/// What is left of an on-chain request's yield window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum YieldWindow {
    /// No deadline: a kubectl request, or no chain client to read the head from.
    Unbounded,
    Left(Duration),
}

impl YieldWindow {
    fn time_left(self) -> Option<Duration> {
        match self {
            Self::Unbounded => None,
            Self::Left(left) => Some(left),
        }
    }
}

/// The module `spec.code` names.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum ModuleObservation {
    /// `spec.code.wasmSha256`: nothing to compile.
    ByHash(String),
    /// The CompileJob that builds `spec.code` (the look created it when it was absent and a compile
    /// could still finish in time).
    CompileJob {
        name: String,
        status: Box<CompileJobStatus>,
    },
    /// No CompileJob exists and none was created: too little time is left to compile.
    NotCompiled { name: String },
    /// The CompileJob under the source's name builds something else (`CompileJob::serves`): never used.
    Mismatch { name: String, message: String },
}

/// The executor pod of the current attempt.
#[derive(Clone, Debug)]
pub(crate) enum PodObservation {
    Missing,
    /// It exists and has not ended.
    Running,
    Ended(ExecutorOutcome),
    /// It ended because the cached module file is damaged (unreadable, or not its checksum): the
    /// cache's fault, neither the guest's nor this run's.
    DamagedModule(String),
}

/// The chain's head, for a request that is reporting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ChainHead {
    /// The operator runs without a chain client.
    NoClient,
    At(u64),
}

/// The request as the contract has it now, compared with `spec` (`onchain::compare_with_chain`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum RequestOnChain {
    /// Unknown to the contract: answered (and its callback ran), timed out or cancelled.
    Gone,
    /// Answered, waiting for its callback.
    Resolved,
    Pending,
    /// The contract's request is not what `spec` says (which fields, no values): the spec was not
    /// written from the chain, so nothing is unsealed or reported for it.
    Mismatch(String),
}

/// What sending the resolve did; refusals worth retrying soon are errors of the look, not this.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Sent {
    Applied {
        tx_hash: String,
        submit_tx: Option<String>,
        /// What the contract charged, when its pricing could be read.
        cost_yocto: Option<String>,
    },
    AlreadyResolved {
        tx_hash: String,
        message: String,
    },
    YieldTimedOut {
        message: String,
    },
    /// Refused for good (by the contract or the RPC); says why.
    Refused {
        message: String,
    },
}

/// Everything a reconcile has looked at so far; `None` is "not looked at yet".
#[derive(Default)]
pub(crate) struct Observed {
    /// With a chain client, the same look fills `request` for an on-chain request.
    pub window: Option<YieldWindow>,
    pub module: Option<ModuleObservation>,
    pub pod: Option<PodObservation>,
    pub secrets: Option<SecretsStep>,
    /// How the run is seeded (from the seed key the operator holds).
    pub seed: Option<SeedStep>,
    /// An output kept in the cache (`results/<sha256>`): its text, or `None` when the operator has no
    /// cache mount or it is larger than the status may hold.
    pub stored_output: Option<Option<String>>,
    pub head: Option<ChainHead>,
    pub request: Option<RequestOnChain>,
    /// The request's pricing snapshot, read with `request` (not a decision's input: the send's cost).
    pub pricing_at_request: Option<Pricing>,
    /// What the resolve recorded in `status.signedResolve` did: `None` inside when no node knows it.
    pub signed: Option<Option<Sent>>,
    /// The contract's limit caps, for a new kubectl request: `None` inside without a chain client.
    pub caps: Option<Option<ResourceLimits>>,
    pub sent: Option<Sent>,
}

/// Something to look at before deciding.
#[derive(Clone, Debug)]
pub(crate) enum Look {
    /// What is left of the yield window (on-chain requests: from the contract's copy of the request,
    /// which fills [`Observed::request`] too).
    YieldWindow,
    /// The module; `may_compile`: create the CompileJob when it is absent.
    Module {
        may_compile: bool,
    },
    /// The executor pod of the current attempt.
    Pod,
    /// Unseal the request's secrets into their ephemeral Secret (or find it).
    Secrets {
        /// The module the execution runs (access conditions may name it: `WasmHash`).
        sha256: String,
        /// Whether its commit is on a branch or tag (a SHA that is not gets no any-branch secrets).
        reachable: Option<bool>,
    },
    /// How the run is seeded: the request's seed key against the one the operator holds.
    Seed,
    /// Read `results/<sha256>` from the cache mount.
    StoredOutput {
        sha256: String,
        encoding: Option<OutputEncoding>,
    },
    ChainHead,
    RequestOnChain,
    /// Look up the resolve recorded in `status.signedResolve` by its hash.
    SignedResolve,
    /// The contract's limit caps (a new kubectl request is held to them).
    Caps,
    /// Send the resolve (and read the charge when it lands).
    Send(Box<ExecutionResponse>),
}

/// A side effect of an outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Creates the input ConfigMap and the executor pod of attempt `attempt` (absent ones only).
    StartPod {
        sha256: String,
        attempt: u32,
        env_secret: Option<String>,
        /// Deterministic mode's seed and clock; `None`: a free run.
        seed: Option<RunSeed>,
    },
    /// Records on the CompileJob that its module was just used (LRU eviction).
    MarkUsed { compile_job: String },
    /// Asks the CompileJob to evict module `sha256` and build it again (`token`: once per finding).
    RebuildModule {
        compile_job: String,
        sha256: String,
        token: String,
    },
    /// The pod has ended: its secrets go now, not with the request.
    DeleteEnvSecret,
    /// Pods, input and secrets of the request.
    DeleteChildren,
}

/// The end of a request, for the metrics.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Finished {
    pub result: ExecutionResult,
    pub reason: Reason,
    /// It went through `Reporting` (the report's duration is recorded too).
    pub reported: bool,
}

/// What the reconcile does after writing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Then {
    AwaitChange,
    Requeue(Duration),
    /// A finished request: clean up (see [`cleanup_step`]).
    Cleanup,
}

/// One transition: `write_outcome` runs `before`, writes `status` whole, records `finished`, publishes
/// `note`, runs `after`, then `then`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Outcome {
    /// `None`: the status stays as it is.
    pub status: Option<ExecutionRequestStatus>,
    pub before: Vec<Effect>,
    pub after: Vec<Effect>,
    pub note: Option<Note>,
    pub finished: Option<Finished>,
    pub then: Then,
}

impl Outcome {
    fn wait(then: Then) -> Self {
        Self {
            status: None,
            before: Vec::new(),
            after: Vec::new(),
            note: None,
            finished: None,
            then,
        }
    }

    fn write(status: StatusUpdate<ExecutionRequestStatus>, then: Then) -> Self {
        Self {
            status: Some(status.into_inner()),
            ..Self::wait(then)
        }
    }

    fn with_note(mut self, note: Note) -> Self {
        self.note = Some(note);
        self
    }

    fn before(mut self, effects: Vec<Effect>) -> Self {
        self.before = effects;
        self
    }
}

/// A request the operator cannot go on with: it is reconciled again after the error backoff.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Rejection {
    Spec(String),
    Result(String),
}

#[derive(Clone, Debug)]
pub(crate) enum Step {
    Look(Look),
    Write(Box<Outcome>),
    Reject(Rejection),
}

impl Step {
    fn write(outcome: Outcome) -> Self {
        Self::Write(Box::new(outcome))
    }
}

/// The next step of `execution`, from what has been observed so far.
pub(crate) fn next_step(
    execution: &ExecutionRequest,
    observed: &Observed,
    now: Timestamp,
    config: &OperatorConfig,
) -> Step {
    let status = execution.status.clone().unwrap_or_default();
    let phase = status.phase;
    let update = StatusUpdate::new(status, execution.metadata.generation, Time(now));
    match phase {
        Some(phase) if phase.is_terminal() => Step::write(Outcome::wait(Then::Cleanup)),
        Some(Phase::Reporting) => report_step(execution, update, observed),
        _ => run_step(execution, update, observed, config),
    }
}

/// Why the operator refuses `execution` as written, before it creates anything for it: what the CRD
/// schema cannot say (an input's size in bytes, a deposit beyond u128, the operator's repository
/// allow-list), checked here so a kubectl user hears it at once instead of from a failed Job.
pub(crate) fn spec_refusal(
    execution: &ExecutionRequest,
    config: &OperatorConfig,
) -> Option<String> {
    let spec = &execution.spec;
    if spec.input.len() > MAX_INPUT_BYTES {
        return Some(format!(
            "spec.input is {} bytes, over the limit of {MAX_INPUT_BYTES} bytes (UTF-8)",
            spec.input.len()
        ));
    }
    if let Some(on_chain) = &spec.on_chain
        && on_chain.deposit.parse::<u128>().is_err()
    {
        return Some(format!(
            "spec.onChain.deposit {:?} is not a yoctoNEAR amount (at most 2^128 - 1)",
            on_chain.deposit
        ));
    }
    if let Some(source) = &spec.code.source {
        let allowed =
            outlayer_compiler::repo::AllowList::new(&config.compiler.allowed_repo_prefixes)
                .and_then(|allow| outlayer_compiler::repo::validate_repo(&source.repo, &allow));
        if let Err(error) = allowed {
            return Some(format!("spec.code.repo: {error}"));
        }
    }
    if let Some(module_url) = &spec.code.module_url
        && let Err(error) = outlayer_compiler::download::check_url(&module_url.url)
    {
        return Some(format!("spec.code.url: {error}"));
    }
    None
}

/// Why a kubectl request's limits are more than the contract allows any request (on-chain requests
/// were held to the caps by the contract itself).
pub(crate) fn limits_refusal(
    execution: &ExecutionRequest,
    caps: &ResourceLimits,
) -> Option<String> {
    let limits = &execution.spec.limits;
    let over = [
        (
            "maxInstructions",
            limits.max_instructions,
            caps.max_instructions,
        ),
        (
            "maxMemoryMb",
            u64::from(limits.max_memory_mb),
            u64::from(caps.max_memory_mb),
        ),
        (
            "maxExecutionSeconds",
            limits.max_execution_seconds,
            caps.max_execution_seconds,
        ),
    ]
    .into_iter()
    .filter(|(_, asked, cap)| asked > cap)
    .map(|(name, asked, cap)| {
        format!("spec.limits.{name} {asked} is over the contract's cap {cap}")
    })
    .collect::<Vec<_>>();
    (!over.is_empty()).then(|| over.join("; "))
}

/// Pending, Compiling, Executing: get the module, run it, keep its result.
fn run_step(
    execution: &ExecutionRequest,
    mut status: StatusUpdate<ExecutionRequestStatus>,
    observed: &Observed,
    config: &OperatorConfig,
) -> Step {
    let Some(window) = observed.window else {
        return Step::Look(Look::YieldWindow);
    };
    let time_left = window.time_left();
    if status.phase.is_none() && execution.spec.on_chain.is_none() {
        let Some(caps) = &observed.caps else {
            return Step::Look(Look::Caps);
        };
        if let Some(refusal) = caps
            .as_ref()
            .and_then(|caps| limits_refusal(execution, caps))
        {
            return finish(
                execution,
                status,
                false,
                Reason::SpecRefused,
                refusal,
                Vec::new(),
            );
        }
    }
    if status.phase.is_none()
        && let Some(refusal) = spec_refusal(execution, config)
    {
        return finish(
            execution,
            status,
            false,
            Reason::SpecRefused,
            refusal,
            Vec::new(),
        );
    }
    let margin = config.on_chain.report_margin;
    let time_limit = Duration::from_secs(execution.spec.limits.max_execution_seconds);
    if let Some(left) = time_left
        && left <= margin
    {
        let message = format!(
            "the yield times out in {}s, too soon to finish and report",
            left.as_secs()
        );
        return expire(execution, status, Reason::YieldDeadline, message);
    }
    // Read from the chain in this very reconcile (with the window), before the module is built or the secrets unsealed.
    if execution.spec.on_chain.is_some() && time_left.is_some() {
        let Some(request) = &observed.request else {
            return Step::Look(Look::RequestOnChain);
        };
        match request {
            RequestOnChain::Pending => {}
            RequestOnChain::Mismatch(differences) => {
                return refuse_mismatch(execution, status, differences);
            }
            RequestOnChain::Gone | RequestOnChain::Resolved => {
                let message = "the contract no longer waits for this request (answered, timed out or cancelled); it was not run".to_string();
                return expire(execution, status, Reason::NoLongerPending, message);
            }
        }
    }
    let budget = preparation_budget(&execution.spec, config);
    let Some(module) = &observed.module else {
        let may_compile = time_left.is_none_or(|left| left >= budget.time + time_limit + margin);
        return Step::Look(Look::Module { may_compile });
    };
    let module = module_state(execution, module);
    if status.cache_hit.is_none() {
        status.cache_hit = Some(matches!(module, ModuleState::Ready { .. }));
    }
    match module {
        ModuleState::TooLate { compile_job } => {
            let message = format!(
                "module not in the cache and an uncached {} (budget {}s) cannot finish in the {}s left before the yield times out; precompile it with CompileJob {compile_job}",
                budget.what,
                budget.time.as_secs(),
                time_left.unwrap_or_default().as_secs()
            );
            // Known now, with the window still open: the contract hears it at once (a failure with no
            // usage: the base fee) instead of holding the deposit until the yield times out.
            finish(
                execution,
                status,
                false,
                Reason::NoTimeToCompile,
                message,
                Vec::new(),
            )
        }
        ModuleState::Compiling {
            compile_job,
            message,
        } => {
            let first_time = status.phase != Some(Phase::Compiling);
            status.phase = Some(Phase::Compiling);
            status.compile_job = Some(compile_job.clone());
            status.message = Some(message.clone());
            status.set(
                ConditionType::Compiled,
                ConditionStatus::False,
                Reason::Compiling,
                message,
            );
            // The CompileJob watch wakes this request when the build finishes; an on-chain request
            // also wakes at its deadline.
            let outcome = Outcome::write(status, wait_for_change(time_left, config));
            Step::write(if first_time {
                outcome.with_note(Note::Normal(
                    Reason::Compiling,
                    format!("waiting for CompileJob {compile_job}"),
                ))
            } else {
                outcome
            })
        }
        ModuleState::Failed {
            compile_job,
            reason,
            message,
        } => {
            status.compile_job = Some(compile_job);
            status.set(
                ConditionType::Compiled,
                ConditionStatus::False,
                reason.clone(),
                message.clone(),
            );
            finish(execution, status, false, reason, message, Vec::new())
        }
        ModuleState::Ready {
            sha256,
            compile_job,
            resolved_commit,
            compile_time_ms,
            size_bytes,
            reachable,
            toolchain,
            compiler,
        } => {
            status.compile_job = compile_job;
            status.toolchain = toolchain;
            status.compiler = compiler;
            status.short_commit = resolved_commit
                .as_ref()
                .map(|c| c.chars().take(12).collect());
            status.resolved_commit = resolved_commit;
            status.compile_time_ms = compile_time_ms;
            status.wasm_sha256 = Some(sha256.clone());
            status.set(
                ConditionType::Compiled,
                ConditionStatus::True,
                Reason::ModuleReady,
                format!("module {sha256} is in the cache"),
            );
            if execution.spec.compile_only {
                return compiled_only(execution, status, &sha256, size_bytes);
            }
            let module = ReadyModule {
                sha256: &sha256,
                reachable,
            };
            execute_step(execution, status, observed, module, time_left, config)
        }
    }
}

/// What getting a module into the cache takes before it can run, and the time an on-chain request
/// must have left (beside its time limit and the report margin) for it to be started.
struct PreparationBudget {
    what: &'static str,
    time: Duration,
}

/// A download for a module by URL (no build), else a compile.
fn preparation_budget(
    spec: &crate::crd::ExecutionRequestSpec,
    config: &OperatorConfig,
) -> PreparationBudget {
    if spec.code.module_url.is_some() {
        PreparationBudget {
            what: "download",
            time: config.on_chain.download_budget,
        }
    } else {
        PreparationBudget {
            what: "compile",
            time: config.on_chain.compile_budget,
        }
    }
}

/// Where the module an execution needs stands.
enum ModuleState {
    Ready {
        sha256: String,
        compile_job: Option<String>,
        resolved_commit: Option<String>,
        compile_time_ms: Option<u64>,
        /// The module's size, from the CompileJob (`None` for a module named by hash).
        size_bytes: Option<u64>,
        /// Whether the commit is on a branch or tag of the repository (`None`: not known).
        reachable: Option<bool>,
        /// The build identity, from the CompileJob (`None` for a module named by hash).
        toolchain: Option<String>,
        compiler: Option<String>,
    },
    Compiling {
        compile_job: String,
        message: String,
    },
    Failed {
        compile_job: String,
        reason: Reason,
        message: String,
    },
    /// Not in the cache, and too little time is left to compile it: nothing was started.
    TooLate { compile_job: String },
}

fn module_state(execution: &ExecutionRequest, module: &ModuleObservation) -> ModuleState {
    match module {
        ModuleObservation::ByHash(sha256) => ModuleState::Ready {
            sha256: sha256.clone(),
            compile_job: None,
            resolved_commit: None,
            compile_time_ms: None,
            size_bytes: None,
            reachable: None,
            toolchain: None,
            compiler: None,
        },
        ModuleObservation::NotCompiled { name } => ModuleState::TooLate {
            compile_job: name.clone(),
        },
        ModuleObservation::Mismatch { name, message } => ModuleState::Failed {
            compile_job: name.clone(),
            reason: Reason::CompileJobMismatch,
            message: format!("CompileJob {name} is not used: {message}"),
        },
        // A rebuild this request asked for (a damaged module) is not done until the CompileJob says
        // it acted on this very finding and is Ready again.
        ModuleObservation::CompileJob { name, status }
            if execution
                .status
                .as_ref()
                .and_then(|s| s.awaited_rebuild.as_ref())
                .is_some_and(|awaited| status.rebuild_token.as_ref() != Some(awaited)) =>
        {
            ModuleState::Compiling {
                message: format!("waiting for CompileJob {name} to rebuild the damaged module"),
                compile_job: name.clone(),
            }
        }
        ModuleObservation::CompileJob { name, status } => match status.state() {
            CompileState::Ready { wasm_sha256 } => ModuleState::Ready {
                sha256: wasm_sha256,
                compile_job: Some(name.clone()),
                resolved_commit: status.resolved_commit.clone(),
                compile_time_ms: status.compile_time_ms,
                size_bytes: status.size_bytes,
                reachable: status.reachable,
                toolchain: status.toolchain.clone(),
                compiler: status.compiler.clone(),
            },
            CompileState::Failed { message, .. } => ModuleState::Failed {
                message: format!("CompileJob {name} failed: {message}"),
                reason: Reason::CompileFailed,
                compile_job: name.clone(),
            },
            CompileState::InProgress => {
                let what = match (&execution.spec.code.source, &execution.spec.code.module_url) {
                    (Some(s), _) => format!("build {}@{}", s.repo, s.commit),
                    (None, Some(u)) => format!("download {}", u.url),
                    (None, None) => "finish".to_string(),
                };
                ModuleState::Compiling {
                    message: format!("waiting for CompileJob {name} to {what}"),
                    compile_job: name.clone(),
                }
            }
        },
    }
}

/// The module is ready: start the executor pod, or keep its result once it has one.
/// The module an execution is about to run.
#[derive(Clone, Copy)]
struct ReadyModule<'a> {
    sha256: &'a str,
    /// Its commit is on a branch or tag of the repository (`None`: not known, or no repository).
    reachable: Option<bool>,
}

fn execute_step(
    execution: &ExecutionRequest,
    mut status: StatusUpdate<ExecutionRequestStatus>,
    observed: &Observed,
    module: ReadyModule<'_>,
    time_left: Option<Duration>,
    config: &OperatorConfig,
) -> Step {
    let Some(pod) = &observed.pod else {
        return Step::Look(Look::Pod);
    };
    let name = execution.metadata.name.clone().unwrap_or_default();
    let retries = status.retries.unwrap_or(0);
    let pod_name = executor_pod_name_for(&name, retries);
    let time_limit = Duration::from_secs(execution.spec.limits.max_execution_seconds);
    let run_fits = |left: Duration| left >= time_limit + config.on_chain.report_margin;
    match pod {
        PodObservation::Missing => {
            if let Some(left) = time_left
                && !run_fits(left)
            {
                let message = format!(
                    "the run may take up to {}s and the yield times out in {}s",
                    execution.spec.limits.max_execution_seconds,
                    left.as_secs()
                );
                return finish(
                    execution,
                    status,
                    false,
                    Reason::NoTimeToExecute,
                    message,
                    Vec::new(),
                );
            }
            start_step(execution, status, observed, module, time_left, config)
        }
        // Pod status changes wake this request (the controller owns its pods).
        PodObservation::Running => {
            let then = wait_for_change(time_left, config);
            if status.phase == Some(Phase::Executing) {
                return Step::write(Outcome::wait(then));
            }
            status.phase = Some(Phase::Executing);
            status.pod_name = Some(pod_name);
            Step::write(Outcome::write(status, then))
        }
        PodObservation::Ended(ExecutorOutcome::Finished(result)) => {
            result_step(execution, status, observed, result)
        }
        PodObservation::DamagedModule(reason)
            if status.compile_job.is_some()
                && retries < config.platform_retries
                && time_left.is_none_or(run_fits) =>
        {
            // Every later request would fail on the same file: its CompileJob evicts and rebuilds
            // it, and this request waits for that rebuild (the token names this finding), then runs
            // in a fresh pod.
            let compile_job = status.compile_job.clone().unwrap_or_default();
            let sha256 = module.sha256;
            let rebuild = format!("{sha256}/{pod_name}");
            status.retries = Some(retries + 1);
            status.pod_name = Some(executor_pod_name_for(&name, retries + 1));
            status.phase = Some(Phase::Compiling);
            status.awaited_rebuild = Some(rebuild);
            let message = format!(
                "module {sha256} in the cache is damaged ({reason}); CompileJob {compile_job} rebuilds it"
            );
            status.message = Some(message.clone());
            status.set(
                ConditionType::Compiled,
                ConditionStatus::False,
                Reason::ModuleCorrupt,
                message.clone(),
            );
            Step::write(
                Outcome::write(status, wait_for_change(time_left, config))
                    .before(vec![Effect::RebuildModule {
                        compile_job,
                        sha256: sha256.to_string(),
                        token: pod_name,
                    }])
                    .with_note(Note::Warning(Reason::ModuleCorrupt, message)),
            )
        }
        PodObservation::DamagedModule(reason) => {
            let reason = format!("the cached module is damaged: {reason}");
            status.set(
                ConditionType::Executed,
                ConditionStatus::False,
                Reason::ExecutorFailed,
                reason.clone(),
            );
            finish(
                execution,
                status,
                false,
                Reason::ExecutorFailed,
                reason,
                vec![Effect::DeleteEnvSecret],
            )
        }
        PodObservation::Ended(ExecutorOutcome::PlatformFailure(reason))
            if retries < config.platform_retries && time_left.is_none_or(run_fits) =>
        {
            // Our fault, not the guest's: run it again in a fresh pod. The failed one stays (until
            // cleanup) for `kubectl describe`.
            status.retries = Some(retries + 1);
            status.pod_name = Some(executor_pod_name_for(&name, retries + 1));
            status.message = Some(format!("re-running after a platform failure: {reason}"));
            Step::write(
                Outcome::write(status, Then::Requeue(PLATFORM_RETRY)).with_note(Note::Warning(
                    Reason::Retrying,
                    format!(
                        "executor pod {pod_name} ended without a result ({reason}); re-running"
                    ),
                )),
            )
        }
        PodObservation::Ended(ExecutorOutcome::PlatformFailure(reason)) => {
            status.set(
                ConditionType::Executed,
                ConditionStatus::False,
                Reason::ExecutorFailed,
                reason.clone(),
            );
            finish(
                execution,
                status,
                false,
                Reason::ExecutorFailed,
                reason.clone(),
                vec![Effect::DeleteEnvSecret],
            )
        }
    }
}

/// No pod yet and time for the run: the secrets first, then the pod of the current attempt.
fn start_step(
    execution: &ExecutionRequest,
    mut status: StatusUpdate<ExecutionRequestStatus>,
    observed: &Observed,
    module: ReadyModule<'_>,
    time_left: Option<Duration>,
    config: &OperatorConfig,
) -> Step {
    let sha256 = module.sha256;
    // The seed before the secrets: a run that cannot be seeded as the contract requires is not started,
    // so nothing is unsealed for it.
    let seed = match &observed.seed {
        None => return Step::Look(Look::Seed),
        Some(SeedStep::Free) => None,
        Some(SeedStep::Ready(seed)) => Some(seed.clone()),
        Some(SeedStep::Waiting(message)) => {
            let then = Then::Requeue(SECRETS_RETRY);
            if status.message.as_deref() == Some(message.as_str()) {
                return Step::write(Outcome::wait(then));
            }
            status.message = Some(message.clone());
            return Step::write(Outcome::write(status, then));
        }
        Some(SeedStep::Unavailable(message)) => {
            return finish(
                execution,
                status,
                false,
                Reason::SeedKeyUnavailable,
                message.clone(),
                Vec::new(),
            );
        }
    };
    let Some(secrets) = &observed.secrets else {
        return Step::Look(Look::Secrets {
            sha256: sha256.to_string(),
            reachable: module.reachable,
        });
    };
    let env_secret = match secrets {
        SecretsStep::Ready(env_secret) => env_secret.clone(),
        SecretsStep::Denied { reason, message } => {
            return finish(
                execution,
                status,
                false,
                reason.clone(),
                message.clone(),
                Vec::new(),
            );
        }
        SecretsStep::Waiting(message) => {
            let then = Then::Requeue(SECRETS_RETRY);
            if status.message.as_deref() == Some(message.as_str()) {
                return Step::write(Outcome::wait(then));
            }
            status.message = Some(message.clone());
            return Step::write(Outcome::write(status, then));
        }
    };
    let retries = status.retries.unwrap_or(0);
    let pod_name = executor_pod_name_for(
        &execution.metadata.name.clone().unwrap_or_default(),
        retries,
    );
    status.deterministic = seed.is_some().then_some(true);
    status.seed_signature = seed.as_ref().and_then(|seed| seed.signature.clone());
    let mut start = vec![Effect::StartPod {
        sha256: sha256.to_string(),
        attempt: retries,
        env_secret,
        seed,
    }];
    if let Some(compile_job) = &status.compile_job {
        start.push(Effect::MarkUsed {
            compile_job: compile_job.clone(),
        });
    }
    status.phase = Some(Phase::Executing);
    status.pod_name = Some(pod_name.clone());
    status.message = Some(format!("running in cold pod {pod_name}"));
    status.set(
        ConditionType::Executed,
        ConditionStatus::False,
        Reason::Running,
        format!("cold pod {pod_name} started"),
    );
    Step::write(
        Outcome::write(status, wait_for_change(time_left, config))
            .before(start)
            .with_note(Note::Normal(
                Reason::ExecutorStarted,
                format!("cold pod {pod_name} runs module {sha256}"),
            )),
    )
}

/// A warm pod took the attempt that [`start_step`] planned for a cold pod: the status, its `Executed`
/// condition and the Event name the warm pod instead (what `kubectl describe` shows).
pub(crate) fn started_in_warm_pod(outcome: &mut Outcome, pod_name: &str) {
    let cold = |text: &str| text.contains("cold pod");
    if let Some(status) = outcome.status.as_mut() {
        status.pod_name = Some(pod_name.to_string());
        status.message = Some(format!("running in warm pod {pod_name}"));
        for condition in &mut status.conditions {
            if condition.type_ == ConditionType::Executed.as_str() && cold(&condition.message) {
                condition.message = format!("warm pod {pod_name} started");
            }
        }
    }
    if let Some(Note::Normal(Reason::ExecutorStarted, message)) = outcome.note.as_mut()
        && let Some((_, module)) = message.split_once(" runs module ")
    {
        *message = format!("warm pod {pod_name} runs module {module}");
    }
}

/// The executor's result: the guest's failure, or its output into the status.
fn result_step(
    execution: &ExecutionRequest,
    mut status: StatusUpdate<ExecutionRequestStatus>,
    observed: &Observed,
    result: &ResultMessage,
) -> Step {
    // The signature the run was seeded with goes out with the answer. It is recorded when the pod
    // starts; should that status write have been lost (the pod created, the write refused as stale),
    // it is derived again here: the same key signs the same message to the same signature.
    let seeded = execution
        .spec
        .on_chain
        .as_ref()
        .is_some_and(|on_chain| on_chain.seed_public_key.is_some());
    if seeded && status.seed_signature.is_none() {
        match &observed.seed {
            None => return Step::Look(Look::Seed),
            Some(SeedStep::Ready(seed)) => {
                status.seed_signature = seed.signature.clone();
                status.deterministic = Some(true);
            }
            // The run happened, so the key was held then; without it now the answer goes out
            // unsigned, and the contract accepts only a failure without a signature.
            Some(_) => {}
        }
    }
    let pod_ended = vec![Effect::DeleteEnvSecret];
    status.instructions = Some(result.instructions);
    status.time_ms = Some(result.time_ms);
    status.time = Some(format_duration_ms(result.time_ms));
    status.set(
        ConditionType::Executed,
        ConditionStatus::True,
        Reason::Executed,
        format!(
            "{} instructions in {}",
            result.instructions,
            format_duration_ms(result.time_ms)
        ),
    );
    if !result.ok {
        let reason = Reason::guest_failure(result.error_kind.as_deref());
        let message = result
            .error
            .clone()
            .unwrap_or_else(|| "the guest failed without an error message".to_string());
        return finish(execution, status, false, reason, message, pod_ended);
    }
    let encoding = output_encoding(&result.output_encoding);
    status.output_encoding = Some(encoding);
    let output = match (&result.output, &result.output_sha256) {
        (Some(inline), _) => match decode_inline_output(inline.get()) {
            Ok(output) => output,
            Err(e) => {
                return Step::Reject(Rejection::Result(format!(
                    "output is not valid JSON text: {e}"
                )));
            }
        },
        (None, Some(sha256)) => {
            let Some(stored) = &observed.stored_output else {
                return Step::Look(Look::StoredOutput {
                    sha256: sha256.clone(),
                    encoding: Some(encoding),
                });
            };
            status.output_sha256 = Some(sha256.clone());
            status.output_size = result.output_size;
            match stored {
                Some(output) => output.clone(),
                None => {
                    let message = format!(
                        "succeeded; the output ({} bytes) is in the cache at {RESULTS_SUBDIR}/{sha256}",
                        result.output_size.unwrap_or(0)
                    );
                    return finish(
                        execution,
                        status,
                        true,
                        Reason::Succeeded,
                        message,
                        pod_ended,
                    );
                }
            }
        }
        (None, None) => String::new(),
    };
    status.output_size = Some(output.len() as u64);
    status.output = Some(output);
    finish(
        execution,
        status,
        true,
        Reason::Succeeded,
        "the module ran to completion".to_string(),
        pod_ended,
    )
}

/// A compile-only request's answer, once its module is in the cache: the module's sha256, size and
/// compile time as JSON (`compileTimeMs` null for a cache hit, which costs no compile time); nothing
/// runs.
fn compiled_only(
    execution: &ExecutionRequest,
    mut status: StatusUpdate<ExecutionRequestStatus>,
    sha256: &str,
    size_bytes: Option<u64>,
) -> Step {
    let compile_time_ms = charged_compile_time_ms(&status);
    let answer = serde_json::json!({
        "wasm_sha256": sha256,
        "size_bytes": size_bytes,
        "compile_time_ms": compile_time_ms,
        "cached": status.cache_hit == Some(true),
    })
    .to_string();
    status.output_size = Some(answer.len() as u64);
    status.output = Some(answer);
    status.output_encoding = Some(OutputEncoding::Json);
    let message = format!("module {sha256} is built; compile-only requests run nothing");
    finish(
        execution,
        status,
        true,
        Reason::CompiledOnly,
        message,
        Vec::new(),
    )
}

/// The run is over. A kubectl request is finished; an on-chain one keeps the run's outcome and moves
/// to `Reporting` (the status write wakes the next reconcile, which reports from the fresh object).
fn finish(
    execution: &ExecutionRequest,
    mut status: StatusUpdate<ExecutionRequestStatus>,
    success: bool,
    reason: Reason,
    message: String,
    before: Vec<Effect>,
) -> Step {
    if execution.spec.on_chain.is_some() {
        status.phase = Some(Phase::Reporting);
        status.message = Some(format!("reporting on chain: {message}"));
        status.outcome = Some(RunOutcome {
            success,
            reason: reason.as_str().to_string(),
            message,
        });
        status.set(
            ConditionType::Reported,
            ConditionStatus::False,
            Reason::Reporting,
            "sending the result to the contract",
        );
        return Step::write(Outcome::write(status, Then::AwaitChange).before(before));
    }
    status.phase = Some(if success {
        Phase::Succeeded
    } else {
        Phase::Failed
    });
    status.message = Some(message.clone());
    status.observed_generation = status.generation();
    status.set(
        ConditionType::Succeeded,
        success.into(),
        reason.clone(),
        message.clone(),
    );
    let (result, note) = if success {
        (
            ExecutionResult::Succeeded,
            Note::Normal(reason.clone(), message),
        )
    } else {
        (
            ExecutionResult::Failed,
            Note::Warning(reason.clone(), message),
        )
    };
    let mut outcome = Outcome::write(status, Then::Cleanup)
        .before(before)
        .with_note(note);
    outcome.finished = Some(Finished {
        result,
        reason,
        reported: false,
    });
    Step::write(outcome)
}

/// Ends a request that cannot (or can no longer) be answered before its yield times out. Nothing is
/// sent: the contract's timeout callback refunds the sender all but the base fee.
fn expire(
    execution: &ExecutionRequest,
    mut status: StatusUpdate<ExecutionRequestStatus>,
    reason: Reason,
    message: String,
) -> Step {
    status.phase = Some(Phase::Expired);
    status.message = Some(message.clone());
    status.observed_generation = status.generation();
    status.set(
        ConditionType::Succeeded,
        ConditionStatus::False,
        reason.clone(),
        message.clone(),
    );
    if execution.spec.on_chain.is_some() {
        status.set(
            ConditionType::Reported,
            ConditionStatus::False,
            reason.clone(),
            "not reported: the contract refunds the deposit, less the base fee, when the yield times out",
        );
    }
    let mut outcome =
        Outcome::write(status, Then::Cleanup).with_note(Note::Warning(reason.clone(), message));
    outcome.after = vec![Effect::DeleteChildren];
    outcome.finished = Some(Finished {
        result: ExecutionResult::Expired,
        reason,
        reported: false,
    });
    Step::write(outcome)
}

/// Ends a request whose spec is not the contract's request: a forged or stale `spec.onChain`. It is
/// not reported (the operator answers only what the chain asked) and whatever it started is removed.
fn refuse_mismatch(
    execution: &ExecutionRequest,
    mut status: StatusUpdate<ExecutionRequestStatus>,
    differences: &str,
) -> Step {
    let message = format!(
        "spec.onChain names a request the contract holds differently: {differences}; it is not run with secrets and not reported"
    );
    status.phase = Some(Phase::Failed);
    status.message = Some(message.clone());
    status.outcome = None;
    status.observed_generation = status.generation();
    status.set(
        ConditionType::Succeeded,
        ConditionStatus::False,
        Reason::OnChainMismatch,
        message.clone(),
    );
    if execution.spec.on_chain.is_some() {
        status.set(
            ConditionType::Reported,
            ConditionStatus::False,
            Reason::OnChainMismatch,
            "not reported: only requests written from the chain are answered on chain",
        );
    }
    let mut outcome = Outcome::write(status, Then::Cleanup)
        .with_note(Note::Warning(Reason::OnChainMismatch, message));
    outcome.before = vec![Effect::DeleteChildren];
    outcome.finished = Some(Finished {
        result: ExecutionResult::Failed,
        reason: Reason::OnChainMismatch,
        reported: false,
    });
    Step::write(outcome)
}

/// Reporting: one `resolve_execution` (two transactions for large outputs), unless the contract says
/// the request is already answered or gone. Exactly once: the contract is asked before every send.
fn report_step(
    execution: &ExecutionRequest,
    mut status: StatusUpdate<ExecutionRequestStatus>,
    observed: &Observed,
) -> Step {
    let Some(on_chain) = &execution.spec.on_chain else {
        return Step::Reject(Rejection::Spec(
            "a request without spec.onChain is Reporting".to_string(),
        ));
    };
    let outcome = status.outcome.clone().unwrap_or_else(|| RunOutcome {
        success: false,
        reason: Reason::OutcomeLost.as_str().to_string(),
        message: "the run's outcome was not recorded".to_string(),
    });
    // A resolve signed (and recorded) before a crash or a lost answer may have landed: its own
    // outcome is the truth, whatever the chain's head or the request's state say now.
    if status.signed_resolve.is_some() && observed.sent.is_none() {
        let Some(signed) = &observed.signed else {
            return Step::Look(Look::SignedResolve);
        };
        if let Some(sent) = signed {
            return sent_step(execution, status, &outcome, sent);
        }
    }
    let Some(head) = observed.head else {
        return Step::Look(Look::ChainHead);
    };
    let head = match head {
        ChainHead::NoClient => {
            let waiting = "waiting for a chain client: the operator runs without --rpc-url, --contract-id and an operator key";
            let then = Then::Requeue(NO_CHAIN_RETRY);
            if status.message.as_deref() == Some(waiting) {
                return Step::write(Outcome::wait(then));
            }
            status.message = Some(waiting.to_string());
            return Step::write(Outcome::write(status, then));
        }
        ChainHead::At(head) => head,
    };
    if head >= on_chain.yield_deadline_height {
        let message = format!(
            "the yield window closed at block {} before a resolve was confirmed",
            on_chain.yield_deadline_height
        );
        return expire(execution, status, Reason::YieldTimedOut, message);
    }
    let Some(request) = &observed.request else {
        return Step::Look(Look::RequestOnChain);
    };
    match request {
        RequestOnChain::Mismatch(differences) => {
            return refuse_mismatch(execution, status, differences);
        }
        // Not by a resolve of this operator's (that would have been found above), and not by the
        // timeout (the head is before the deadline): cancelled, or answered by another signer.
        RequestOnChain::Gone => return fate_unknown(status),
        RequestOnChain::Resolved => {
            let message = "the contract was already answered (by an earlier attempt)";
            return reported(
                status,
                &outcome,
                Reason::AlreadyResolved,
                message.to_string(),
            );
        }
        RequestOnChain::Pending => {}
    }
    let stored_output = if outcome.success
        && status.output.is_none()
        && let Some(sha256) = &status.output_sha256
    {
        let Some(stored) = &observed.stored_output else {
            return Step::Look(Look::StoredOutput {
                sha256: sha256.clone(),
                encoding: status.output_encoding,
            });
        };
        stored.as_deref()
    } else {
        None
    };
    // A compile-only answer is JSON whatever format the request named (it named none for a run).
    let format = if execution.spec.compile_only {
        ResponseFormat::Json
    } else {
        execution.spec.response_format
    };
    let response = match execution_response(
        format,
        &status,
        &outcome,
        stored_output,
        on_chain.request_id,
        on_chain.include_stderr,
    ) {
        Ok(response) => response,
        Err(rejection) => return Step::Reject(rejection),
    };
    match &observed.sent {
        None => Step::Look(Look::Send(Box::new(response))),
        Some(sent) => sent_step(execution, status, &outcome, sent),
    }
}

/// What the resolve did decides the end: reported, expired, or retried after a refusal.
fn sent_step(
    execution: &ExecutionRequest,
    mut status: StatusUpdate<ExecutionRequestStatus>,
    outcome: &RunOutcome,
    sent: &Sent,
) -> Step {
    match sent {
        Sent::Applied {
            tx_hash,
            submit_tx,
            cost_yocto,
        } => {
            status.cost_yocto = cost_yocto.clone();
            status.cost = cost_yocto.as_deref().and_then(format_near);
            status.tx_hash = Some(tx_hash.clone());
            let message = match submit_tx {
                Some(submit) => {
                    format!("resolved in transaction {tx_hash} (output submitted in {submit})")
                }
                None => format!("resolved in transaction {tx_hash}"),
            };
            reported(status, outcome, Reason::Resolved, message)
        }
        Sent::AlreadyResolved { tx_hash, message } => {
            status.tx_hash = Some(tx_hash.clone());
            reported(status, outcome, Reason::AlreadyResolved, message.clone())
        }
        Sent::YieldTimedOut { message } => {
            expire(execution, status, Reason::YieldTimedOut, message.clone())
        }
        Sent::Refused { message } => {
            status.message = Some(message.clone());
            status.set(
                ConditionType::Reported,
                ConditionStatus::False,
                Reason::ReportFailed,
                message.clone(),
            );
            Step::write(
                Outcome::write(status, Then::Requeue(REPORT_RETRY))
                    .with_note(Note::Warning(Reason::ReportFailed, message.clone())),
            )
        }
    }
}

/// The request left the contract in a way the operator cannot account for: it says so rather than
/// claim the run's outcome was delivered, or at what charge.
fn fate_unknown(mut status: StatusUpdate<ExecutionRequestStatus>) -> Step {
    let message = "the request left the contract before the yield deadline, and not through a resolve this operator signed: it was cancelled or answered by another signer; what it was charged is unknown";
    status.phase = Some(Phase::Failed);
    status.observed_generation = status.generation();
    status.message = Some(message.to_string());
    status.set(
        ConditionType::Reported,
        ConditionStatus::False,
        Reason::FateUnknown,
        message,
    );
    status.set(
        ConditionType::Succeeded,
        ConditionStatus::False,
        Reason::FateUnknown,
        message,
    );
    let mut written = Outcome::write(status, Then::Cleanup)
        .with_note(Note::Warning(Reason::FateUnknown, message.to_string()));
    written.finished = Some(Finished {
        result: ExecutionResult::Failed,
        reason: Reason::FateUnknown,
        reported: false,
    });
    Step::write(written)
}

/// Final state of a reported request: `Succeeded`/`Failed` from the run, `Reported` from the chain.
fn reported(
    mut status: StatusUpdate<ExecutionRequestStatus>,
    outcome: &RunOutcome,
    reason: Reason,
    message: String,
) -> Step {
    status.phase = Some(if outcome.success {
        Phase::Succeeded
    } else {
        Phase::Failed
    });
    status.observed_generation = status.generation();
    status.message = Some(outcome.message.clone());
    status.set(
        ConditionType::Reported,
        ConditionStatus::True,
        reason.clone(),
        message.clone(),
    );
    status.set(
        ConditionType::Succeeded,
        outcome.success.into(),
        Reason::parse(&outcome.reason),
        outcome.message.clone(),
    );
    let (result, note) = if outcome.success {
        (ExecutionResult::Succeeded, Note::Normal(reason, message))
    } else {
        (ExecutionResult::Failed, Note::Warning(reason, message))
    };
    let mut written = Outcome::write(status, Then::Cleanup).with_note(note);
    written.finished = Some(Finished {
        result,
        reason: Reason::parse(&outcome.reason),
        reported: true,
    });
    Step::write(written)
}

/// The contract's `ExecutionResponse` for this run. An output the contract cannot take (not the
/// requested format, too large) turns into a failure that says why, charged only the base fee.
/// `stored_output`: the output read from the cache when the status holds only its hash. A failure's
/// message goes on chain whole only when the request asked for its stderr (`include_stderr`): the
/// resolve's arguments are public, like the event the contract derives from them.
pub(crate) fn execution_response(
    format: ResponseFormat,
    status: &ExecutionRequestStatus,
    outcome: &RunOutcome,
    stored_output: Option<&str>,
    request_id: u64,
    include_stderr: bool,
) -> Result<ExecutionResponse, Rejection> {
    let resources_used = ResourceMetrics {
        instructions: status.instructions.unwrap_or(0),
        time_ms: status.time_ms.unwrap_or(0),
        compile_time_ms: charged_compile_time_ms(status),
    };
    let evidence = evidence(status);
    let failure = |error: String| ExecutionResponse {
        success: false,
        output: None,
        error: Some(outlayer_contract::public_error(&error, include_stderr)),
        resources_used: resources_used.clone(),
        evidence: evidence.clone(),
    };
    if !outcome.success {
        return Ok(failure(outcome.message.clone()));
    }
    let text = match (&status.output, &status.output_sha256) {
        (Some(output), _) => output.clone(),
        (None, Some(_)) => match stored_output {
            Some(output) => output.to_string(),
            None => {
                return Ok(failure(format!(
                    "the output ({} bytes) is larger than the contract accepts or the operator cannot read it",
                    status.output_size.unwrap_or(0)
                )));
            }
        },
        (None, None) => String::new(),
    };
    let output = match format {
        ResponseFormat::Text => ExecutionOutput::Text(text),
        ResponseFormat::Json => match RawValue::from_string(text) {
            Ok(raw) => ExecutionOutput::Json(raw),
            Err(error) => {
                return Ok(failure(format!(
                    "the request asked for Json and the output is not valid JSON: {error}"
                )));
            }
        },
        ResponseFormat::Bytes => {
            match base64::engine::general_purpose::STANDARD.decode(text.as_bytes()) {
                Ok(bytes) => ExecutionOutput::Bytes(bytes),
                Err(error) => {
                    return Err(Rejection::Result(format!(
                        "the executor's base64 output does not decode: {error}"
                    )));
                }
            }
        }
    };
    let response = ExecutionResponse {
        success: true,
        output: Some(output),
        error: None,
        resources_used: resources_used.clone(),
        evidence: evidence.clone(),
    };
    match ReportPlan::new(request_id, response.clone()) {
        Err(ChainError::OutputTooLarge { bytes, max, .. }) => Ok(failure(format!(
            "the output is {bytes} bytes as JSON, over the contract's limit of {max}"
        ))),
        _ => Ok(response),
    }
}

/// The compile time a request is charged: only a request that waited for the build pays for it; a
/// cache hit is free.
fn charged_compile_time_ms(status: &ExecutionRequestStatus) -> Option<u64> {
    if status.cache_hit == Some(false) {
        status.compile_time_ms
    } else {
        None
    }
}

/// The answer's evidence (DESIGN §10): the module that ran and the build identity its CompileJob
/// reported. The identity comes from the build report only, never from configuration: a module built
/// by a compiler that did not report it goes out without one (a verifier then rebuilds with its own
/// toolchain and says so). Fields the contract would refuse are left out rather than sent.
pub(crate) fn evidence(status: &ExecutionRequestStatus) -> Option<Evidence> {
    let evidence = Evidence {
        wasm_sha256: status.wasm_sha256.clone()?.to_ascii_lowercase(),
        commit: status
            .resolved_commit
            .as_ref()
            .map(|commit| commit.to_ascii_lowercase()),
        toolchain: status.toolchain.clone(),
        compiler: status.compiler.clone(),
        seed_signature: status.seed_signature.clone(),
    };
    if evidence.problem().is_none() {
        return Some(evidence);
    }
    let bare = Evidence {
        commit: None,
        toolchain: None,
        compiler: None,
        ..evidence
    };
    bare.problem().is_none().then_some(bare)
}

/// Waits for a watch event, or for the yield deadline of an on-chain request (`time_left`), whichever
/// comes first; the reconcile at the deadline expires the request.
fn wait_for_change(time_left: Option<Duration>, config: &OperatorConfig) -> Then {
    match time_left {
        Some(left) => Then::Requeue(
            left.saturating_sub(config.on_chain.report_margin)
                .max(Duration::from_millis(100)),
        ),
        None => Then::AwaitChange,
    }
}

/// How `status.output` encodes the program's stdout, from the result's `outputEncoding`.
pub(crate) fn output_encoding(encoding: &str) -> OutputEncoding {
    match encoding {
        "json" => OutputEncoding::Json,
        "base64" => OutputEncoding::Base64,
        _ => OutputEncoding::Text,
    }
}

/// A stdout carried inline in the result message: text and base64 are JSON strings, json is the document.
fn decode_inline_output(raw: &str) -> Result<String, serde_json::Error> {
    if raw.starts_with('"') {
        serde_json::from_str::<String>(raw)
    } else {
        Ok(raw.to_string())
    }
}

/// What a finished request's cleanup does next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Cleanup {
    /// Its TTL passed: delete it (pods and inputs go with it, by owner garbage collection).
    DeleteRequest,
    /// Delete its pods, input and secrets, then look again after `then` (for the TTL).
    DeleteChildren { then: Duration },
    /// Keep the failed pod for `kubectl logs`/`describe` a while longer.
    Wait(Duration),
}

/// The pod and its input go at once on success and after the retention period on failure; the request
/// itself goes after its TTL. Counted from the `Succeeded` condition's transition.
pub(crate) fn cleanup_step(
    status: &ExecutionRequestStatus,
    now: Timestamp,
    config: &OperatorConfig,
) -> Cleanup {
    let finished_at = status
        .find_condition(ConditionType::Succeeded)
        .map(|c| c.last_transition_time.0)
        .unwrap_or(now);
    let age = Duration::try_from(now.duration_since(finished_at)).unwrap_or_default();
    let pod_retention = if status.condition(ConditionType::Succeeded) == Some(true) {
        Duration::ZERO
    } else {
        config.failed_pod_retention
    };
    if age >= config.execution_ttl {
        Cleanup::DeleteRequest
    } else if age >= pod_retention {
        Cleanup::DeleteChildren {
            then: config.execution_ttl - age,
        }
    } else {
        Cleanup::Wait(pod_retention - age)
    }
}

impl Phase {
    pub fn is_terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed | Phase::Expired)
    }
}

#[cfg(test)]
mod tests;
