//! Every decision of [`next_step`], as tables: phase × what was observed → the step. No cluster, no
//! chain: each row is a function call.

use super::*;
use crate::crd::{CodeRef, CompileJobStatus, ExecutionRequestSpec, Limits, OnChain, set_condition};
use crate::pods::result::ResultMessage;

const DEADLINE_HEIGHT: u64 = 1_000;

fn now() -> Timestamp {
    Timestamp::from_second(1_700_000_000).unwrap()
}

fn config() -> OperatorConfig {
    let mut config = OperatorConfig::default();
    config.on_chain.report_margin = Duration::from_secs(5);
    config.on_chain.compile_budget = Duration::from_secs(60);
    config.on_chain.download_budget = Duration::from_secs(15);
    config.platform_retries = 2;
    config.failed_pod_retention = Duration::from_secs(3_600);
    config.execution_ttl = Duration::from_secs(86_400);
    config
}

/// A kubectl request for a repository, 10 s time limit.
fn kubectl() -> ExecutionRequest {
    let mut request = ExecutionRequest::new(
        "req-1",
        ExecutionRequestSpec {
            code: CodeRef::from_repo("https://github.com/alice/echo", "main"),
            input: String::new(),
            limits: Limits {
                max_instructions: 1_000_000,
                max_memory_mb: 16,
                max_execution_seconds: 10,
            },
            response_format: ResponseFormat::Text,
            secrets_ref: None,
            compile_only: false,
            deterministic: None,
            on_chain: None,
        },
    );
    request.metadata.namespace = Some("ns".to_string());
    request.metadata.generation = Some(1);
    request
}

fn on_chain() -> ExecutionRequest {
    let mut request = kubectl();
    request.spec.on_chain = Some(OnChain {
        request_id: 7,
        data_id: "data".to_string(),
        sender: "alice.near".to_string(),
        deposit: "1000000000000000000000000".to_string(),
        block_height: 800,
        block_timestamp_ns: 0,
        seed_public_key: None,
        yield_deadline_height: DEADLINE_HEIGHT,
        include_stderr: false,
    });
    request
}

/// [`on_chain`], for a prebuilt module by URL.
fn on_chain_by_url() -> ExecutionRequest {
    let mut request = on_chain();
    request.spec.code = CodeRef::from_url("https://example.com/echo.wasm", "ab".repeat(32));
    request
}

fn in_phase(mut request: ExecutionRequest, phase: Phase) -> ExecutionRequest {
    request.status.get_or_insert_with(Default::default).phase = Some(phase);
    request
}

fn with_status(
    mut request: ExecutionRequest,
    edit: impl FnOnce(&mut ExecutionRequestStatus),
) -> ExecutionRequest {
    edit(request.status.get_or_insert_with(Default::default));
    request
}

/// An on-chain request reporting the run's outcome.
fn reporting(success: bool, reason: &str) -> ExecutionRequest {
    with_status(on_chain(), |status| {
        status.phase = Some(Phase::Reporting);
        status.output = Some("hi".to_string());
        status.outcome = Some(RunOutcome {
            success,
            reason: reason.to_string(),
            message: "the module ran to completion".to_string(),
        });
    })
}

/// The yield window; for an on-chain request the same look finds it pending on chain, as the spec says.
fn window(window: YieldWindow) -> Observed {
    Observed {
        window: Some(window),
        request: Some(RequestOnChain::Pending),
        caps: Some(None),
        ..Observed::default()
    }
}

fn unbounded() -> Observed {
    window(YieldWindow::Unbounded)
}

fn seconds_left(seconds: u64) -> Observed {
    window(YieldWindow::Left(Duration::from_secs(seconds)))
}

fn compile_job(ready: Option<(bool, Reason)>, sha256: Option<&str>) -> ModuleObservation {
    let mut status = CompileJobStatus {
        wasm_sha256: sha256.map(str::to_string),
        resolved_commit: Some("0123456789abcdef0123456789abcdef01234567".to_string()),
        compile_time_ms: Some(1_500),
        toolchain: Some("rustc 1.95.0 (59807616e 2026-04-14)".to_string()),
        compiler: Some("outlayer-compiler 0.1.0".to_string()),
        ..CompileJobStatus::default()
    };
    if let Some((ready, reason)) = ready {
        set_condition(
            &mut status.conditions,
            "Ready",
            ready,
            reason.as_str(),
            "git clone failed",
            Some(1),
            Time(now()),
        );
    }
    ModuleObservation::CompileJob {
        name: "cj-1".to_string(),
        status: Box::new(status),
    }
}

fn building() -> ModuleObservation {
    compile_job(None, None)
}

fn cached() -> ModuleObservation {
    compile_job(Some((true, Reason::ModuleReady)), Some("ab12"))
}

fn compile_failed() -> ModuleObservation {
    compile_job(Some((false, Reason::FetchFailed)), None)
}

impl Observed {
    fn without_request(mut self) -> Self {
        self.request = None;
        self
    }
}

fn with(mut observed: Observed, edit: impl FnOnce(&mut Observed)) -> Observed {
    edit(&mut observed);
    observed
}

fn module(observed: Observed, module: ModuleObservation) -> Observed {
    with(observed, |o| o.module = Some(module))
}

fn pod(observed: Observed, pod: PodObservation) -> Observed {
    with(module(observed, cached()), |o| o.pod = Some(pod))
}

fn missing_pod(observed: Observed, secrets: SecretsStep) -> Observed {
    with(pod(observed, PodObservation::Missing), |o| {
        o.secrets = Some(secrets);
        o.seed = Some(SeedStep::Free);
    })
}

fn result(ok: bool, output: Option<&str>, error_kind: Option<&str>) -> ResultMessage {
    ResultMessage {
        v: 1,
        ok,
        output: output.map(|json| RawValue::from_string(json.to_string()).unwrap()),
        output_encoding: "text".to_string(),
        output_sha256: None,
        output_size: None,
        instructions: 1_234,
        time_ms: 56,
        error: (!ok).then(|| "the guest ran out of time".to_string()),
        error_kind: error_kind.map(str::to_string),
        exit_code: None,
    }
}

fn large_result() -> ResultMessage {
    ResultMessage {
        output_sha256: Some("cd".repeat(32)),
        output_size: Some(100_000),
        ..result(true, None, None)
    }
}

fn ended(observed: Observed, result: ResultMessage) -> Observed {
    pod(
        observed,
        PodObservation::Ended(ExecutorOutcome::Finished(result)),
    )
}

fn platform_failure(observed: Observed) -> Observed {
    pod(
        observed,
        PodObservation::Ended(ExecutorOutcome::PlatformFailure("OOMKilled".to_string())),
    )
}

/// A resolve was signed and recorded (before a crash, or a lost answer).
fn signed(request: ExecutionRequest) -> ExecutionRequest {
    with_status(request, |status| {
        status.signed_resolve = Some(crate::crd::SignedResolve {
            tx_hash: "tx1".to_string(),
            cost_yocto: Some("42".to_string()),
        });
    })
}

fn at_head(height: u64) -> Observed {
    Observed {
        head: Some(ChainHead::At(height)),
        ..Observed::default()
    }
}

fn on_chain_request(request: RequestOnChain) -> Observed {
    with(at_head(900), |o| o.request = Some(request))
}

fn sent(sent: Sent) -> Observed {
    with(on_chain_request(RequestOnChain::Pending), |o| {
        o.sent = Some(sent)
    })
}

fn applied() -> Sent {
    Sent::Applied {
        tx_hash: "tx1".to_string(),
        submit_tx: None,
        cost_yocto: Some("42".to_string()),
    }
}

fn effect_name(effect: &Effect) -> &'static str {
    match effect {
        Effect::StartPod { .. } => "StartPod",
        Effect::MarkUsed { .. } => "MarkUsed",
        Effect::RebuildModule { .. } => "RebuildModule",
        Effect::DeleteEnvSecret => "DeleteEnvSecret",
        Effect::DeleteChildren => "DeleteChildren",
    }
}

/// A step in one line: what it looks at, or the phase it writes, its Event, metric, effects and
/// what comes next.
fn summary(step: &Step) -> String {
    let outcome = match step {
        Step::Look(Look::Module { may_compile }) => {
            return format!("look module may_compile={may_compile}");
        }
        Step::Look(Look::Send(_)) => return "look send".to_string(),
        Step::Look(Look::StoredOutput { .. }) => return "look stored-output".to_string(),
        Step::Look(look) => return format!("look {look:?}"),
        Step::Reject(Rejection::Spec(_)) => return "reject spec".to_string(),
        Step::Reject(Rejection::Result(_)) => return "reject result".to_string(),
        Step::Write(outcome) => outcome,
    };
    let mut parts = vec![match &outcome.status {
        Some(status) => match status.phase {
            Some(phase) => format!("phase={phase:?}"),
            None => "phase=-".to_string(),
        },
        None => "unchanged".to_string(),
    }];
    match &outcome.note {
        Some(Note::Normal(reason, _)) => parts.push(format!("note={reason}")),
        Some(Note::Warning(reason, _)) => parts.push(format!("warn={reason}")),
        None => {}
    }
    if let Some(finished) = &outcome.finished {
        parts.push(format!(
            "finished={}/{}",
            finished.result.as_str(),
            finished.reason
        ));
    }
    if !outcome.before.is_empty() {
        let names: Vec<_> = outcome.before.iter().map(effect_name).collect();
        parts.push(format!("before={}", names.join(",")));
    }
    if !outcome.after.is_empty() {
        let names: Vec<_> = outcome.after.iter().map(effect_name).collect();
        parts.push(format!("after={}", names.join(",")));
    }
    parts.push(match outcome.then {
        Then::AwaitChange => "await".to_string(),
        Then::Requeue(after) => format!("requeue={after:?}"),
        Then::Cleanup => "cleanup".to_string(),
    });
    parts.join(" ")
}

fn step(request: &ExecutionRequest, observed: &Observed) -> Step {
    next_step(request, observed, now(), &config())
}

fn written(step: Step) -> Outcome {
    match step {
        Step::Write(outcome) => *outcome,
        other => panic!("expected a write, got {}", summary(&other)),
    }
}

/// Whether `look` asks for something `observed` already has: the reconcile loop would never end.
fn asks_again(look: &Look, observed: &Observed) -> bool {
    match look {
        Look::YieldWindow => observed.window.is_some(),
        Look::Module { .. } => observed.module.is_some(),
        Look::Pod => observed.pod.is_some(),
        Look::Secrets { .. } => observed.secrets.is_some(),
        Look::Seed => observed.seed.is_some(),
        Look::StoredOutput { .. } => observed.stored_output.is_some(),
        Look::ChainHead => observed.head.is_some(),
        Look::RequestOnChain => observed.request.is_some(),
        Look::SignedResolve => observed.signed.is_some(),
        Look::Caps => observed.caps.is_some(),
        Look::Send(_) => observed.sent.is_some(),
    }
}

fn check(rows: Vec<(&str, ExecutionRequest, Observed, &str)>) {
    let mut failures = Vec::new();
    for (name, request, observed, expected) in rows {
        let step = step(&request, &observed);
        if let Step::Look(look) = &step
            && asks_again(look, &observed)
        {
            failures.push(format!("{name}: asks again for {look:?}"));
        }
        let got = summary(&step);
        if got != expected {
            failures.push(format!("{name}:\n  expected {expected}\n  got      {got}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn before_the_module_is_ready() {
    check(vec![
        (
            "first, the yield window",
            kubectl(),
            Observed::default(),
            "look YieldWindow",
        ),
        (
            "kubectl: compile whatever the time",
            kubectl(),
            unbounded(),
            "look module may_compile=true",
        ),
        (
            "on chain: the contract's copy is read with the window",
            on_chain(),
            window(YieldWindow::Left(Duration::from_secs(75))).without_request(),
            "look RequestOnChain",
        ),
        (
            "on chain, spec forged or stale: refused before anything runs",
            on_chain(),
            with(seconds_left(75), |o| {
                o.request = Some(RequestOnChain::Mismatch("spec.code differ".to_string()));
            }),
            "phase=Failed warn=OnChainMismatch finished=failed/OnChainMismatch before=DeleteChildren cleanup",
        ),
        (
            "on chain, settled elsewhere before it ran",
            on_chain(),
            with(seconds_left(75), |o| o.request = Some(RequestOnChain::Gone)),
            "phase=Expired warn=NoLongerPending finished=expired/NoLongerPending after=DeleteChildren cleanup",
        ),
        (
            "on chain, answered by someone else before it ran",
            in_phase(on_chain(), Phase::Executing),
            with(seconds_left(75), |o| {
                o.request = Some(RequestOnChain::Resolved)
            }),
            "phase=Expired warn=NoLongerPending finished=expired/NoLongerPending after=DeleteChildren cleanup",
        ),
        (
            "on chain, time for compile + run + report",
            on_chain(),
            seconds_left(75),
            "look module may_compile=true",
        ),
        (
            "on chain, too little time to compile",
            on_chain(),
            seconds_left(74),
            "look module may_compile=false",
        ),
        (
            "on chain by URL, time for a download (15 s budget) + run + report",
            on_chain_by_url(),
            seconds_left(30),
            "look module may_compile=true",
        ),
        (
            "on chain by URL, too little time to download",
            on_chain_by_url(),
            seconds_left(29),
            "look module may_compile=false",
        ),
        (
            "on chain, within the report margin",
            on_chain(),
            seconds_left(5),
            "phase=Expired warn=YieldDeadline finished=expired/YieldDeadline after=DeleteChildren cleanup",
        ),
        (
            "not cached, no time to compile: the contract hears it at once",
            on_chain(),
            module(
                seconds_left(30),
                ModuleObservation::NotCompiled {
                    name: "cj-1".to_string(),
                },
            ),
            "phase=Reporting await",
        ),
        (
            "cache miss: waiting for the build, announced once",
            kubectl(),
            module(unbounded(), building()),
            "phase=Compiling note=Compiling await",
        ),
        (
            "still compiling: no second Event",
            in_phase(kubectl(), Phase::Compiling),
            module(unbounded(), building()),
            "phase=Compiling await",
        ),
        (
            "compiling on chain wakes before the deadline",
            on_chain(),
            module(seconds_left(100), building()),
            "phase=Compiling note=Compiling requeue=95s",
        ),
        (
            "compile failed, kubectl",
            in_phase(kubectl(), Phase::Compiling),
            module(unbounded(), compile_failed()),
            "phase=Failed warn=CompileFailed finished=failed/CompileFailed cleanup",
        ),
        (
            "a CompileJob planted under the source's name is never used",
            kubectl(),
            module(
                unbounded(),
                ModuleObservation::Mismatch {
                    name: "cj-1".to_string(),
                    message: "it builds another source".to_string(),
                },
            ),
            "phase=Failed warn=CompileJobMismatch finished=failed/CompileJobMismatch cleanup",
        ),
        (
            "compile failed, on chain: the contract hears about it",
            in_phase(on_chain(), Phase::Compiling),
            module(seconds_left(100), compile_failed()),
            "phase=Reporting await",
        ),
        (
            "a Ready condition without a module hash is still compiling",
            in_phase(kubectl(), Phase::Compiling),
            module(
                unbounded(),
                compile_job(Some((true, Reason::ModuleReady)), None),
            ),
            "phase=Compiling await",
        ),
        (
            "cache hit: the pod next",
            kubectl(),
            module(unbounded(), cached()),
            "look Pod",
        ),
        (
            "by hash: no compile at all",
            kubectl(),
            module(unbounded(), ModuleObservation::ByHash("ef".repeat(32))),
            "look Pod",
        ),
    ]);
}

#[test]
fn starting_the_executor_pod() {
    check(vec![
        (
            "no pod: the seed first",
            kubectl(),
            pod(unbounded(), PodObservation::Missing),
            "look Seed",
        ),
        (
            "no pod: then the secrets",
            kubectl(),
            with(pod(unbounded(), PodObservation::Missing), |o| {
                o.seed = Some(SeedStep::Free);
            }),
            "look Secrets { sha256: \"ab12\", reachable: None }",
        ),
        (
            "no pod, no time for the run on chain: the contract hears it at once",
            on_chain(),
            pod(seconds_left(14), PodObservation::Missing),
            "phase=Reporting await",
        ),
        (
            "no pod, just enough time on chain",
            on_chain(),
            with(pod(seconds_left(15), PodObservation::Missing), |o| {
                o.seed = Some(SeedStep::Free);
            }),
            "look Secrets { sha256: \"ab12\", reachable: None }",
        ),
        (
            "secrets ready: start the pod and mark the module used",
            kubectl(),
            missing_pod(unbounded(), SecretsStep::Ready(None)),
            "phase=Executing note=ExecutorStarted before=StartPod,MarkUsed await",
        ),
        (
            "by hash: no CompileJob to mark",
            kubectl(),
            with(
                module(unbounded(), ModuleObservation::ByHash("ef".repeat(32))),
                |o| {
                    o.pod = Some(PodObservation::Missing);
                    o.secrets = Some(SecretsStep::Ready(None));
                    o.seed = Some(SeedStep::Free);
                },
            ),
            "phase=Executing note=ExecutorStarted before=StartPod await",
        ),
        (
            "secrets denied, kubectl",
            kubectl(),
            missing_pod(
                unbounded(),
                SecretsStep::Denied {
                    reason: Reason::SecretsAccessDenied,
                    message: "alice.near may not".to_string(),
                },
            ),
            "phase=Failed warn=SecretsAccessDenied finished=failed/SecretsAccessDenied cleanup",
        ),
        (
            "secrets denied, on chain",
            on_chain(),
            missing_pod(
                seconds_left(100),
                SecretsStep::Denied {
                    reason: Reason::SecretsNotFound,
                    message: "none stored".to_string(),
                },
            ),
            "phase=Reporting await",
        ),
        (
            "sealing keys not loaded: say so once",
            kubectl(),
            missing_pod(unbounded(), SecretsStep::Waiting("keys".to_string())),
            "phase=- requeue=10s",
        ),
        (
            "sealing keys not loaded, already said",
            with_status(kubectl(), |s| s.message = Some("keys".to_string())),
            missing_pod(unbounded(), SecretsStep::Waiting("keys".to_string())),
            "unchanged requeue=10s",
        ),
        (
            "pod running, seen for the first time",
            in_phase(kubectl(), Phase::Compiling),
            pod(unbounded(), PodObservation::Running),
            "phase=Executing await",
        ),
        (
            "pod running, nothing new",
            in_phase(kubectl(), Phase::Executing),
            pod(unbounded(), PodObservation::Running),
            "unchanged await",
        ),
        (
            "pod running on chain wakes before the deadline",
            in_phase(on_chain(), Phase::Executing),
            pod(seconds_left(60), PodObservation::Running),
            "unchanged requeue=55s",
        ),
    ]);
}

#[test]
fn the_executor_result() {
    let running = |request| in_phase(request, Phase::Executing);
    check(vec![
        (
            "success, kubectl",
            running(kubectl()),
            ended(unbounded(), result(true, Some("\"hi\""), None)),
            "phase=Succeeded note=Succeeded finished=succeeded/Succeeded before=DeleteEnvSecret cleanup",
        ),
        (
            "success, on chain: report it",
            running(on_chain()),
            ended(seconds_left(100), result(true, Some("\"hi\""), None)),
            "phase=Reporting before=DeleteEnvSecret await",
        ),
        (
            "the guest hit its time limit",
            running(kubectl()),
            ended(unbounded(), result(false, None, Some("timeLimit"))),
            "phase=Failed warn=TimeLimit finished=failed/TimeLimit before=DeleteEnvSecret cleanup",
        ),
        (
            "the guest failed without a kind",
            running(kubectl()),
            ended(unbounded(), result(false, None, None)),
            "phase=Failed warn=GuestFailed finished=failed/GuestFailed before=DeleteEnvSecret cleanup",
        ),
        (
            "an output in the cache: read it first",
            running(kubectl()),
            ended(unbounded(), large_result()),
            "look stored-output",
        ),
        (
            "an output in the cache the operator cannot hold",
            running(kubectl()),
            with(ended(unbounded(), large_result()), |o| {
                o.stored_output = Some(None)
            }),
            "phase=Succeeded note=Succeeded finished=succeeded/Succeeded before=DeleteEnvSecret cleanup",
        ),
        (
            "platform failure: re-run",
            running(kubectl()),
            platform_failure(unbounded()),
            "phase=Executing warn=Retrying requeue=100ms",
        ),
        (
            "platform failure, retries used up",
            with_status(running(kubectl()), |s| s.retries = Some(2)),
            platform_failure(unbounded()),
            "phase=Failed warn=ExecutorFailed finished=failed/ExecutorFailed before=DeleteEnvSecret cleanup",
        ),
        (
            "platform failure, no time for another run on chain",
            running(on_chain()),
            platform_failure(seconds_left(14)),
            "phase=Reporting before=DeleteEnvSecret await",
        ),
    ]);
}

#[test]
fn reporting_on_chain() {
    check(vec![
        (
            "first, the head",
            reporting(true, "Succeeded"),
            Observed::default(),
            "look ChainHead",
        ),
        (
            "no chain client: say so",
            reporting(true, "Succeeded"),
            with(Observed::default(), |o| o.head = Some(ChainHead::NoClient)),
            "phase=Reporting requeue=30s",
        ),
        (
            "the yield window closed",
            reporting(true, "Succeeded"),
            at_head(DEADLINE_HEIGHT),
            "phase=Expired warn=YieldTimedOut finished=expired/YieldTimedOut after=DeleteChildren cleanup",
        ),
        (
            "before sending, ask the contract",
            reporting(true, "Succeeded"),
            at_head(DEADLINE_HEIGHT - 1),
            "look RequestOnChain",
        ),
        (
            "gone before the deadline, and not by a resolve of ours: the fate is not claimed",
            reporting(true, "Succeeded"),
            on_chain_request(RequestOnChain::Gone),
            "phase=Failed warn=FateUnknown finished=failed/FateUnknown cleanup",
        ),
        (
            "a resolve was signed before a restart: look it up first",
            signed(reporting(true, "Succeeded")),
            Observed::default(),
            "look SignedResolve",
        ),
        (
            "the signed resolve landed: its outcome and charge, whatever the chain says now",
            signed(reporting(true, "Succeeded")),
            Observed {
                signed: Some(Some(applied())),
                ..Observed::default()
            },
            "phase=Succeeded note=Resolved finished=succeeded/Succeeded cleanup",
        ),
        (
            "the signed resolve landed after the yield timed out",
            signed(reporting(true, "Succeeded")),
            Observed {
                signed: Some(Some(Sent::YieldTimedOut {
                    message: "timed out".to_string(),
                })),
                ..Observed::default()
            },
            "phase=Expired warn=YieldTimedOut finished=expired/YieldTimedOut after=DeleteChildren cleanup",
        ),
        (
            "the signed resolve is unknown: decided from the chain as usual",
            signed(reporting(true, "Succeeded")),
            Observed {
                signed: Some(None),
                ..Observed::default()
            },
            "look ChainHead",
        ),
        (
            "unknown, and the request gone after its deadline: expired, not settled",
            signed(reporting(true, "Succeeded")),
            Observed {
                signed: Some(None),
                ..at_head(DEADLINE_HEIGHT)
            },
            "phase=Expired warn=YieldTimedOut finished=expired/YieldTimedOut after=DeleteChildren cleanup",
        ),
        (
            "already resolved: never twice",
            reporting(true, "Succeeded"),
            on_chain_request(RequestOnChain::Resolved),
            "phase=Succeeded note=AlreadyResolved finished=succeeded/Succeeded cleanup",
        ),
        (
            "pending: send",
            reporting(true, "Succeeded"),
            on_chain_request(RequestOnChain::Pending),
            "look send",
        ),
        (
            "a spec the contract does not hold: never reported",
            reporting(true, "Succeeded"),
            on_chain_request(RequestOnChain::Mismatch(
                "spec.onChain.sender differ".to_string(),
            )),
            "phase=Failed warn=OnChainMismatch finished=failed/OnChainMismatch before=DeleteChildren cleanup",
        ),
        (
            "an output in the cache: read it before sending",
            with_status(reporting(true, "Succeeded"), |s| {
                s.output = None;
                s.output_sha256 = Some("cd".repeat(32));
            }),
            on_chain_request(RequestOnChain::Pending),
            "look stored-output",
        ),
        (
            "resolved",
            reporting(true, "Succeeded"),
            sent(applied()),
            "phase=Succeeded note=Resolved finished=succeeded/Succeeded cleanup",
        ),
        (
            "a guest failure, resolved: Failed, by the run's reason",
            reporting(false, "TimeLimit"),
            sent(applied()),
            "phase=Failed warn=Resolved finished=failed/TimeLimit cleanup",
        ),
        (
            "the send found it already resolved",
            reporting(true, "Succeeded"),
            sent(Sent::AlreadyResolved {
                tx_hash: "tx2".to_string(),
                message: "not found or already resolved".to_string(),
            }),
            "phase=Succeeded note=AlreadyResolved finished=succeeded/Succeeded cleanup",
        ),
        (
            "the yield timed out under the send",
            reporting(true, "Succeeded"),
            sent(Sent::YieldTimedOut {
                message: "timed out".to_string(),
            }),
            "phase=Expired warn=YieldTimedOut finished=expired/YieldTimedOut after=DeleteChildren cleanup",
        ),
        (
            "refused for good: retried until the deadline",
            reporting(true, "Succeeded"),
            sent(Sent::Refused {
                message: "reporting failed (tx): no".to_string(),
            }),
            "phase=Reporting warn=ReportFailed requeue=10s",
        ),
        (
            "the outcome was lost: reported as a failure",
            with_status(reporting(true, "Succeeded"), |s| s.outcome = None),
            sent(applied()),
            "phase=Failed warn=Resolved finished=failed/OutcomeLost cleanup",
        ),
        (
            "reporting without spec.onChain",
            in_phase(kubectl(), Phase::Reporting),
            Observed::default(),
            "reject spec",
        ),
    ]);
}

#[test]
fn finished_requests_only_clean_up() {
    for phase in [Phase::Succeeded, Phase::Failed, Phase::Expired] {
        for request in [kubectl(), on_chain()] {
            assert_eq!(
                summary(&step(&in_phase(request, phase), &Observed::default())),
                "unchanged cleanup",
                "{phase:?}"
            );
        }
    }
}

#[test]
fn an_inline_output_that_does_not_decode_is_rejected() {
    // A JSON string with an invalid escape is valid JSON for RawValue only if it parses; an
    // unterminated string never reaches here, so use a lone surrogate, which JSON allows and a
    // Rust String does not.
    let request = in_phase(kubectl(), Phase::Executing);
    let observed = ended(unbounded(), result(true, Some("\"\\ud800\""), None));
    assert_eq!(summary(&step(&request, &observed)), "reject result");
}

#[test]
fn compiling_records_the_compile_job_and_why_it_waits() {
    let outcome = written(step(&kubectl(), &module(unbounded(), building())));
    let status = outcome.status.unwrap();
    assert_eq!(status.compile_job.as_deref(), Some("cj-1"));
    assert_eq!(status.cache_hit, Some(false));
    let compiled = status.find_condition(ConditionType::Compiled).unwrap();
    assert_eq!(
        (compiled.status.as_str(), compiled.reason.as_str()),
        ("False", "Compiling")
    );
    assert_eq!(
        compiled.message,
        "waiting for CompileJob cj-1 to build https://github.com/alice/echo@main"
    );
    assert_eq!(compiled.observed_generation, Some(1));
    assert_eq!(compiled.last_transition_time, Time(now()));
}

#[test]
fn a_seeded_run_starts_with_its_seed_and_records_the_signature() {
    let signature = near_crypto::SecretKey::from_seed(near_crypto::KeyType::ED25519, "k")
        .sign(b"seed message")
        .to_string();
    let seed = RunSeed {
        seed: "5e".repeat(32),
        unix_time_ns: 1_700_000_000_000_000_000,
        signature: Some(signature.clone()),
    };
    let observed = with(missing_pod(unbounded(), SecretsStep::Ready(None)), |o| {
        o.seed = Some(SeedStep::Ready(seed.clone()));
    });
    let outcome = written(step(&kubectl(), &observed));
    assert!(
        matches!(&outcome.before[0], Effect::StartPod { seed: Some(s), .. } if *s == seed),
        "{:?}",
        outcome.before
    );
    let status = outcome.status.unwrap();
    assert_eq!(status.seed_signature.as_ref(), Some(&signature));
    assert_eq!(status.deterministic, Some(true));
    // The signature goes out with the answer.
    let evidence = evidence(&ExecutionRequestStatus {
        wasm_sha256: Some("ab".repeat(32)),
        ..status
    });
    assert_eq!(evidence.and_then(|e| e.seed_signature), Some(signature));
}

#[test]
fn a_run_that_cannot_be_seeded_is_not_started() {
    // The seed is decided before the secrets: nothing is unsealed for a run that cannot start.
    let unsealed_yet = with(pod(unbounded(), PodObservation::Missing), |o| {
        o.seed = Some(SeedStep::Unavailable("recorded another key".to_string()));
    });
    check(vec![
        (
            "the seed first",
            kubectl(),
            pod(unbounded(), PodObservation::Missing),
            "look Seed",
        ),
        (
            "a key the operator does not hold fails the run",
            kubectl(),
            unsealed_yet,
            "phase=Failed warn=SeedKeyUnavailable finished=failed/SeedKeyUnavailable cleanup",
        ),
        (
            "a key not loaded yet waits",
            kubectl(),
            with(pod(unbounded(), PodObservation::Missing), |o| {
                o.seed = Some(SeedStep::Waiting("waiting for the seed key".to_string()));
            }),
            "phase=- requeue=10s",
        ),
    ]);
}

#[test]
fn a_started_pod_records_the_module_and_attempt() {
    let outcome = written(step(
        &kubectl(),
        &missing_pod(
            unbounded(),
            SecretsStep::Ready(Some("req-1-env".to_string())),
        ),
    ));
    assert_eq!(
        outcome.before[0],
        Effect::StartPod {
            sha256: "ab12".to_string(),
            attempt: 0,
            env_secret: Some("req-1-env".to_string()),
            seed: None,
        }
    );
    let status = outcome.status.unwrap();
    assert_eq!(status.cache_hit, Some(true));
    assert_eq!(status.wasm_sha256.as_deref(), Some("ab12"));
    assert_eq!(status.short_commit.as_deref(), Some("0123456789ab"));
    assert_eq!(status.compile_time_ms, Some(1_500));
    // The build identity follows the module from its CompileJob (the answer's evidence).
    assert_eq!(
        status.toolchain.as_deref(),
        Some("rustc 1.95.0 (59807616e 2026-04-14)")
    );
    assert_eq!(status.compiler.as_deref(), Some("outlayer-compiler 0.1.0"));
    assert_eq!(status.condition(ConditionType::Compiled), Some(true));
    assert_eq!(status.condition(ConditionType::Executed), Some(false));
    assert_eq!(status.pod_name.as_deref(), Some("req-1-run"));
}

#[test]
fn a_retry_moves_to_the_next_pod() {
    let request = with_status(in_phase(kubectl(), Phase::Executing), |s| {
        s.retries = Some(1)
    });
    let status = written(step(&request, &platform_failure(unbounded())))
        .status
        .unwrap();
    assert_eq!(status.retries, Some(2));
    assert_eq!(status.pod_name.as_deref(), Some("req-1-run-3"));
}

#[test]
fn a_result_fills_the_status() {
    let request = in_phase(kubectl(), Phase::Executing);
    let status = written(step(
        &request,
        &ended(unbounded(), result(true, Some("\"a\\nb\""), None)),
    ))
    .status
    .unwrap();
    assert_eq!(status.output.as_deref(), Some("a\nb"));
    assert_eq!(status.output_size, Some(3));
    assert_eq!(status.instructions, Some(1_234));
    assert_eq!(status.time.as_deref(), Some("56ms"));
    assert_eq!(status.observed_generation, Some(1));
    let succeeded = status.find_condition(ConditionType::Succeeded).unwrap();
    assert_eq!(
        (succeeded.status.as_str(), succeeded.reason.as_str()),
        ("True", "Succeeded")
    );
}

#[test]
fn a_stored_output_goes_into_the_status() {
    let request = in_phase(kubectl(), Phase::Executing);
    let observed = with(ended(unbounded(), large_result()), |o| {
        o.stored_output = Some(Some("big".to_string()))
    });
    let status = written(step(&request, &observed)).status.unwrap();
    assert_eq!(status.output.as_deref(), Some("big"));
    assert_eq!(status.output_sha256, Some("cd".repeat(32)));
    assert_eq!(status.output_size, Some(3));
}

#[test]
fn reporting_keeps_the_run_outcome() {
    let request = in_phase(on_chain(), Phase::Executing);
    let status = written(step(
        &request,
        &ended(seconds_left(100), result(false, None, Some("timeLimit"))),
    ))
    .status
    .unwrap();
    assert_eq!(
        status.outcome,
        Some(RunOutcome {
            success: false,
            reason: "TimeLimit".to_string(),
            message: "the guest ran out of time".to_string(),
        })
    );
    assert_eq!(
        status.message.as_deref(),
        Some("reporting on chain: the guest ran out of time")
    );
    assert_eq!(status.condition(ConditionType::Reported), Some(false));
    assert_eq!(status.condition(ConditionType::Succeeded), None);
}

#[test]
fn expiry_on_chain_says_the_contract_refunds() {
    let status = written(step(&on_chain(), &seconds_left(3))).status.unwrap();
    let reported = status.find_condition(ConditionType::Reported).unwrap();
    assert_eq!(
        (reported.status.as_str(), reported.reason.as_str()),
        ("False", "YieldDeadline")
    );
    assert!(reported.message.contains("refunds"), "{}", reported.message);
    assert_eq!(
        status.message.as_deref(),
        Some("the yield times out in 3s, too soon to finish and report")
    );
}

#[test]
fn a_resolve_records_its_transaction_and_cost() {
    let status = written(step(&reporting(true, "Succeeded"), &sent(applied())))
        .status
        .unwrap();
    assert_eq!(status.tx_hash.as_deref(), Some("tx1"));
    assert_eq!(status.cost_yocto.as_deref(), Some("42"));
    assert_eq!(
        status.cost.as_deref(),
        Some("0.000000000000000000000042 NEAR")
    );
    assert_eq!(
        status.message.as_deref(),
        Some("the module ran to completion")
    );
    let reported = status.find_condition(ConditionType::Reported).unwrap();
    assert_eq!(
        (reported.status.as_str(), reported.message.as_str()),
        ("True", "resolved in transaction tx1")
    );
}

#[test]
fn cleanup_follows_retention_and_ttl() {
    let finished = |success: bool, seconds_ago: i64| {
        let mut status = ExecutionRequestStatus::default();
        set_condition(
            &mut status.conditions,
            "Succeeded",
            success,
            "Succeeded",
            "",
            Some(1),
            Time(Timestamp::from_second(now().as_second() - seconds_ago).unwrap()),
        );
        cleanup_step(&status, now(), &config())
    };
    assert_eq!(
        finished(true, 0),
        Cleanup::DeleteChildren {
            then: Duration::from_secs(86_400)
        }
    );
    assert_eq!(
        finished(false, 10),
        Cleanup::Wait(Duration::from_secs(3_590))
    );
    assert_eq!(
        finished(false, 7_200),
        Cleanup::DeleteChildren {
            then: Duration::from_secs(86_400 - 7_200)
        }
    );
    assert_eq!(finished(false, 86_400), Cleanup::DeleteRequest);
    // No Succeeded condition: counted from now.
    assert_eq!(
        cleanup_step(&ExecutionRequestStatus::default(), now(), &config()),
        Cleanup::Wait(Duration::from_secs(3_600))
    );
}

fn response_of(
    format: ResponseFormat,
    status: &ExecutionRequestStatus,
    success: bool,
) -> Result<ExecutionResponse, Rejection> {
    let outcome = RunOutcome {
        success,
        reason: "Succeeded".to_string(),
        message: "the guest failed".to_string(),
    };
    execution_response(format, status, &outcome, None, 7, false)
}

#[test]
fn a_failure_goes_on_chain_whole_only_when_the_request_asked() {
    let outcome = RunOutcome {
        success: false,
        reason: "Trap".to_string(),
        message: format!("guest trapped: {}", "x".repeat(1_000)),
    };
    let status = ExecutionRequestStatus::default();
    let error = |include_stderr| {
        execution_response(
            ResponseFormat::Text,
            &status,
            &outcome,
            None,
            7,
            include_stderr,
        )
        .unwrap()
        .error
        .unwrap()
    };
    let summary = error(false);
    assert!(
        summary.starts_with("execution failed: guest trapped: "),
        "{summary}"
    );
    assert!(
        summary.len() <= "execution failed: ".len() + 256,
        "{}",
        summary.len()
    );
    assert_eq!(error(true), outcome.message);
}

#[test]
fn responses_say_what_the_contract_can_take() {
    let mut status = ExecutionRequestStatus {
        output: Some("not json".to_string()),
        instructions: Some(10),
        time_ms: Some(20),
        compile_time_ms: Some(30),
        cache_hit: Some(false),
        ..ExecutionRequestStatus::default()
    };
    let text = response_of(ResponseFormat::Text, &status, true).unwrap();
    assert!(text.success);
    assert_eq!(text.resources_used.compile_time_ms, Some(30));
    let json = response_of(ResponseFormat::Json, &status, true).unwrap();
    assert!(!json.success);
    assert!(json.error.unwrap().contains("not valid JSON"));
    assert!(matches!(
        response_of(ResponseFormat::Bytes, &status, true),
        Err(Rejection::Result(_))
    ));
    let failed = response_of(ResponseFormat::Text, &status, false).unwrap();
    assert_eq!(
        failed.error.as_deref(),
        Some("execution failed: the guest failed")
    );
    // A cache hit is not charged for the compile.
    status.cache_hit = Some(true);
    let hit = response_of(ResponseFormat::Text, &status, true).unwrap();
    assert_eq!(hit.resources_used.compile_time_ms, None);
    // Too large for the contract: a failure that says so.
    status.output = Some("x".repeat(2 * 1024 * 1024));
    let large = response_of(ResponseFormat::Text, &status, true).unwrap();
    assert!(!large.success);
    assert!(large.error.unwrap().contains("over the contract's limit"));
    // Only the hash in the status and nothing read from the cache.
    status.output = None;
    status.output_sha256 = Some("cd".repeat(32));
    status.output_size = Some(99);
    let unread = response_of(ResponseFormat::Text, &status, true).unwrap();
    assert!(unread.error.unwrap().contains("(99 bytes)"));
}

#[test]
fn inline_outputs_decode_by_their_json_form() {
    assert_eq!(decode_inline_output("\"a\\nb\"").unwrap(), "a\nb");
    assert_eq!(decode_inline_output("{\"n\":1}").unwrap(), "{\"n\":1}");
    assert!(decode_inline_output("\"unterminated").is_err());
}

#[test]
fn a_warm_pod_that_took_the_start_is_named_in_status_and_event() {
    let start = || {
        written(step(
            &kubectl(),
            &missing_pod(unbounded(), SecretsStep::Ready(None)),
        ))
    };
    let cold = start();
    let status = cold.status.as_ref().unwrap();
    assert!(
        status
            .message
            .as_deref()
            .unwrap()
            .starts_with("running in cold pod ")
    );
    let mut warm = start();
    started_in_warm_pod(&mut warm, "outlayer-warm-64-ab");
    let status = warm.status.as_ref().unwrap();
    assert_eq!(status.pod_name.as_deref(), Some("outlayer-warm-64-ab"));
    assert_eq!(
        status.message.as_deref(),
        Some("running in warm pod outlayer-warm-64-ab")
    );
    let executed = status.find_condition(ConditionType::Executed).unwrap();
    assert_eq!(executed.message, "warm pod outlayer-warm-64-ab started");
    match &warm.note {
        Some(Note::Normal(Reason::ExecutorStarted, message)) => assert!(
            message.starts_with("warm pod outlayer-warm-64-ab runs module "),
            "{message}"
        ),
        other => panic!("{other:?}"),
    }
    // Effects and what comes next are the cold start's.
    assert_eq!(warm.before, cold.before);
    assert_eq!(warm.then, cold.then);
}

#[test]
fn specs_the_schema_cannot_judge_are_refused_before_anything_is_created() {
    let refused = |edit: &dyn Fn(&mut ExecutionRequest)| {
        let mut request = on_chain();
        edit(&mut request);
        spec_refusal(&request, &config())
    };
    assert_eq!(refused(&|_| {}), None);
    // 100,000 three-byte characters: within the schema's character limit, over the byte limit.
    let big = refused(&|r| r.spec.input = "€".repeat(100_000)).unwrap();
    assert!(big.contains("300000 bytes"), "{big}");
    let deposit = refused(&|r| {
        r.spec.on_chain.as_mut().unwrap().deposit = "9".repeat(40);
    })
    .unwrap();
    assert!(deposit.contains("spec.onChain.deposit"), "{deposit}");
    let repo = refused(&|r| {
        r.spec.code = CodeRef::from_repo("file:///etc", "main");
    })
    .unwrap();
    assert!(repo.contains("not allowed"), "{repo}");
    let sha = "a".repeat(64);
    for (url, why) in [
        ("http://example.com/m.wasm", "only https"),
        ("https://user:pw@example.com/m.wasm", "credentials"),
        ("ftp://example.com/m.wasm", "only https"),
    ] {
        let refusal = refused(&|r| r.spec.code = CodeRef::from_url(url, &sha)).unwrap();
        assert!(
            refusal.starts_with("spec.code.url: ")
                && refusal.contains(why)
                && refusal.contains(url),
            "{refusal}"
        );
    }
    assert_eq!(
        refused(&|r| r.spec.code = CodeRef::from_url("https://example.com/m.wasm", &sha)),
        None
    );
    // The step: a kubectl request fails at once, an on-chain one tells the contract.
    let mut local = kubectl();
    local.spec.code = CodeRef::from_repo("file:///etc", "main");
    assert_eq!(
        summary(&step(&local, &unbounded())),
        "phase=Failed warn=SpecRefused finished=failed/SpecRefused cleanup"
    );
}

#[test]
fn a_damaged_module_is_rebuilt_and_the_request_waits_for_that_rebuild() {
    let running = with_status(in_phase(kubectl(), Phase::Executing), |s| {
        s.compile_job = Some("cj-1".to_string());
        s.pod_name = Some("req-1-run".to_string());
    });
    let damaged = with(module(unbounded(), cached()), |o| {
        o.pod = Some(PodObservation::DamagedModule(
            "has sha256 00, expected ab12".into(),
        ));
    });
    let step = step(&running, &damaged);
    assert_eq!(
        summary(&step),
        "phase=Compiling warn=ModuleCorrupt before=RebuildModule await"
    );
    let status = written(step).status.unwrap();
    assert_eq!(status.awaited_rebuild.as_deref(), Some("ab12/req-1-run"));
    assert_eq!(status.retries, Some(1));
    // Until the CompileJob says it acted on this finding, the old Ready module is not used.
    let waiting = with_status(in_phase(kubectl(), Phase::Compiling), |s| {
        *s = status.clone();
    });
    assert_eq!(
        summary(&super::next_step(
            &waiting,
            &module(unbounded(), cached()),
            now(),
            &config()
        )),
        "phase=Compiling await"
    );
    let rebuilt = match cached() {
        ModuleObservation::CompileJob { name, mut status } => {
            status.rebuild_token = Some("ab12/req-1-run".to_string());
            ModuleObservation::CompileJob { name, status }
        }
        other => other,
    };
    assert_eq!(
        summary(&super::next_step(
            &waiting,
            &module(unbounded(), rebuilt),
            now(),
            &config()
        )),
        "look Pod"
    );
    // By hash there is no CompileJob to rebuild: a platform failure that says why.
    let by_hash = in_phase(kubectl(), Phase::Executing);
    let step = super::next_step(
        &by_hash,
        &with(
            module(unbounded(), ModuleObservation::ByHash("ab12".into())),
            |o| {
                o.pod = Some(PodObservation::DamagedModule("unreadable".into()));
            },
        ),
        now(),
        &config(),
    );
    assert_eq!(
        summary(&step),
        "phase=Failed warn=ExecutorFailed finished=failed/ExecutorFailed before=DeleteEnvSecret cleanup"
    );
}

#[test]
fn kubectl_limits_are_held_to_the_contracts_caps() {
    let caps = ResourceLimits {
        max_instructions: 500_000,
        max_memory_mb: 16,
        max_execution_seconds: 5,
    };
    let request = kubectl();
    let refusal = limits_refusal(&request, &caps).unwrap();
    assert_eq!(
        refusal,
        "spec.limits.maxInstructions 1000000 is over the contract's cap 500000; \
         spec.limits.maxExecutionSeconds 10 is over the contract's cap 5"
    );
    let generous = ResourceLimits {
        max_instructions: 1_000_000,
        max_memory_mb: 16,
        max_execution_seconds: 10,
    };
    assert_eq!(limits_refusal(&request, &generous), None);
    assert_eq!(
        summary(&step(&request, &with(unbounded(), |o| o.caps = None))),
        "look Caps"
    );
    assert_eq!(
        summary(&step(
            &request,
            &with(unbounded(), |o| o.caps = Some(Some(caps)))
        )),
        "phase=Failed warn=SpecRefused finished=failed/SpecRefused cleanup"
    );
}

#[test]
fn the_response_carries_the_module_and_build_identity_as_evidence() {
    let status = ExecutionRequestStatus {
        output: Some("{\"a\":1}".to_string()),
        instructions: Some(10),
        wasm_sha256: Some("AB".repeat(32)),
        resolved_commit: Some("0123456789abcdef0123456789abcdef01234567".to_string()),
        toolchain: Some("rustc 1.95.0 (59807616e 2026-04-14)".to_string()),
        compiler: Some("outlayer-compiler 0.1.0".to_string()),
        ..ExecutionRequestStatus::default()
    };
    let expected = Evidence {
        wasm_sha256: "ab".repeat(32),
        commit: status.resolved_commit.clone(),
        toolchain: status.toolchain.clone(),
        compiler: status.compiler.clone(),
        seed_signature: None,
    };
    let ok = response_of(ResponseFormat::Json, &status, true).unwrap();
    assert_eq!(ok.evidence.as_ref(), Some(&expected));
    // A failed run names its module too (a verifier can replay the failure).
    let failed = response_of(ResponseFormat::Json, &status, false).unwrap();
    assert_eq!(failed.evidence.as_ref(), Some(&expected));
    // An identity the contract would refuse is dropped, the module hash kept.
    let odd = ExecutionRequestStatus {
        toolchain: Some("rustc\n1.95".to_string()),
        ..status.clone()
    };
    let bare = response_of(ResponseFormat::Json, &odd, true).unwrap();
    assert_eq!(
        bare.evidence,
        Some(Evidence {
            commit: None,
            toolchain: None,
            compiler: None,
            ..expected
        })
    );
    // No module (it never compiled): no evidence.
    let none = ExecutionRequestStatus {
        wasm_sha256: None,
        ..status
    };
    assert_eq!(
        response_of(ResponseFormat::Json, &none, false)
            .unwrap()
            .evidence,
        None
    );
}

#[test]
fn a_request_waiting_for_its_module_says_what_is_being_made() {
    let waiting = |code: CodeRef| {
        let mut request = kubectl();
        request.spec.code = code;
        let observed = ModuleObservation::CompileJob {
            name: "cj-1".to_string(),
            status: Box::new(CompileJobStatus::default()),
        };
        match module_state(&request, &observed) {
            ModuleState::Compiling { message, .. } => message,
            _ => panic!("a CompileJob in progress is waited for"),
        }
    };
    assert_eq!(
        waiting(CodeRef::from_repo("https://github.com/a/b", "main")),
        "waiting for CompileJob cj-1 to build https://github.com/a/b@main"
    );
    assert_eq!(
        waiting(CodeRef::from_url(
            "https://m.example/x.wasm",
            "ab".repeat(32)
        )),
        "waiting for CompileJob cj-1 to download https://m.example/x.wasm"
    );
}

fn compile_only(mut request: ExecutionRequest) -> ExecutionRequest {
    request.spec.compile_only = true;
    request
}

#[test]
fn a_compile_only_request_is_answered_when_its_module_is_built() {
    check(vec![
        (
            "building: waits like any request",
            compile_only(kubectl()),
            module(unbounded(), building()),
            "phase=Compiling note=Compiling await",
        ),
        (
            "built, kubectl: succeeds without a pod, secrets or seed",
            compile_only(kubectl()),
            module(unbounded(), cached()),
            "phase=Succeeded note=CompiledOnly finished=succeeded/CompiledOnly cleanup",
        ),
        (
            "built, on chain: reports",
            compile_only(on_chain()),
            module(seconds_left(100), cached()),
            "phase=Reporting await",
        ),
        (
            "a failed build fails it",
            compile_only(kubectl()),
            module(unbounded(), compile_failed()),
            "phase=Failed warn=CompileFailed finished=failed/CompileFailed cleanup",
        ),
    ]);
    // The answer: the module's hash, size and whether it was cached, as JSON whatever the format.
    let mut built = compile_job(Some((true, Reason::ModuleReady)), Some("ab12"));
    if let ModuleObservation::CompileJob { status, .. } = &mut built {
        status.size_bytes = Some(4_096);
    }
    let outcome = written(step(
        &compile_only(on_chain()),
        &module(seconds_left(100), built),
    ));
    let status = outcome.status.unwrap();
    let answer: serde_json::Value =
        serde_json::from_str(status.output.as_deref().unwrap()).unwrap();
    assert_eq!(
        answer,
        serde_json::json!({"wasm_sha256": "ab12", "size_bytes": 4096, "compile_time_ms": null, "cached": true})
    );
    let reported = with_status(compile_only(on_chain()), |s| *s = status.clone());
    let response = execution_response(
        ResponseFormat::Json,
        reported.status.as_ref().unwrap(),
        status.outcome.as_ref().unwrap(),
        None,
        7,
        false,
    )
    .unwrap();
    assert!(response.success);
    assert_eq!(response.resources_used.instructions, 0);
    assert!(matches!(response.output, Some(ExecutionOutput::Json(_))));
}

#[test]
fn a_seed_signature_lost_with_a_stale_write_is_derived_again_for_the_answer() {
    // The pod ran, but the status write that recorded its seed signature was refused as stale.
    let mut request = in_phase(on_chain(), Phase::Executing);
    if let Some(on_chain) = request.spec.on_chain.as_mut() {
        on_chain.seed_public_key = Some("ed25519:key".to_string());
    }
    let ended = || {
        pod(
            seconds_left(100),
            PodObservation::Ended(ExecutorOutcome::Finished(result(
                true,
                Some("\"hi\""),
                None,
            ))),
        )
    };
    check(vec![(
        "the seed is looked at again",
        request.clone(),
        ended(),
        "look Seed",
    )]);
    let signature = near_crypto::SecretKey::from_seed(near_crypto::KeyType::ED25519, "k")
        .sign(b"seed message")
        .to_string();
    let observed = with(ended(), |o| {
        o.seed = Some(SeedStep::Ready(RunSeed {
            seed: "5e".repeat(32),
            unix_time_ns: 0,
            signature: Some(signature.clone()),
        }))
    });
    let status = written(step(&request, &observed)).status.unwrap();
    assert_eq!(status.phase, Some(Phase::Reporting));
    assert_eq!(status.seed_signature, Some(signature));
}
