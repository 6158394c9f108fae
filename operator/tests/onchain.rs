//! The on-chain loop end to end: the real control plane and node agent, the test localnet running the
//! real contract wasm, and the operator's watcher, controllers, submitter and pricing sync. A user's
//! `request_execution` is compiled (from a git mirror: the contract only takes GitHub URLs), run and
//! resolved, and the user pays exactly what the contract computes; large outputs go in two steps; a
//! request that cannot finish in time expires and is refunded; a report interrupted by a crash and
//! by RPC faults is still sent exactly once; the Pricing resource drives the on-chain pricing.
//! Every wait is for a condition with a generous deadline; no timing decides a test.

mod common;

use std::time::{Duration, Instant};

use common::NAMESPACE;
use common::chain::*;
use common::wait_for;
use e2e_localnet::Fault;
use k8s_openapi::api::core::v1::{ConfigMap, Event};
use kube::api::{Api, ListParams, PostParams};
use near_primitives::types::{Balance, Gas};
use outlayer_operator::chain::{ChainClient, ChainError};
use outlayer_operator::crd::{CompileJob, Phase, Pricing, PricingSpec, condition_status};
use serde_json::{Value, json};

/// The contract's owner (alice) sets every fee to 1 yocto on chain itself, not through the operator.
async fn owner_sets_every_fee_to_one(alice: &ChainClient) {
    alice
        .call_function(
            &account("outlayer.localnet"),
            "set_pricing",
            &json!({"pricing": {"base_fee": "1", "per_million_instructions_fee": "1",
                                "per_ms_fee": "1", "per_compile_ms_fee": "1"}}),
            Gas::from_teragas(10),
            Balance::from_yoctonear(0),
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn requests_are_compiled_run_resolved_and_charged_exactly() {
    let net = ChainEnv::start(Duration::from_millis(500)).await;
    let operator = net.start_operator(net.config());
    let alice_before = net.balance("alice.localnet").await;

    // Uncached: the watcher's request compiles, runs and is resolved inside the yield window.
    let outcome = net.request("hello, chain").await.unwrap();
    assert_eq!(returned(&outcome), "hello, chain");
    let executions = net.executions();
    let status = finished(&executions, "req-0").await;
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
    assert_eq!(condition_status(&status.conditions, "Reported"), Some(true));
    assert_eq!(condition_reason(&status, "Reported"), "Resolved");
    assert_eq!(status.cache_hit, Some(false));
    assert!(status.tx_hash.is_some());
    let completed = event(&outcome, "execution_completed");
    let charged: u128 = completed["payment_charged"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        status.cost_yocto.as_deref(),
        Some(charged.to_string().as_str()),
        "the operator's cost is the contract's charge"
    );
    // The charge is the usage the operator measured, at the contract's pricing, compile included.
    let pricing = net.client_as("alice.localnet").get_pricing().await.unwrap();
    let used = outlayer_operator::chain::ResourceMetrics {
        instructions: status.instructions.unwrap(),
        time_ms: status.time_ms.unwrap(),
        compile_time_ms: Some(status.compile_time_ms.unwrap()),
    };
    assert_eq!(
        charged,
        outlayer_contract::pricing::usage_cost(&pricing, &used)
    );
    assert!(used.compile_time_ms.unwrap() > 0 && used.instructions > 0);
    assert_eq!(
        net.balance("alice.localnet").await,
        alice_before - charged - tokens_burnt(&outcome),
        "the user pays exactly the charge plus the gas burnt on its behalf"
    );

    // Cached now; an input over 10,000 bytes (left out of the pending list, read with get_request)
    // and so an output over the 1024-byte yield payload: the two-step path.
    let large = "0123456789abcdef".repeat(750);
    let outcome = net.request(&large).await.unwrap();
    assert_eq!(returned(&outcome), large.as_str());
    let status = finished(&executions, "req-1").await;
    assert_eq!(status.cache_hit, Some(true));
    let message = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Reported")
        .map(|c| c.message.clone())
        .unwrap();
    assert!(message.contains("output submitted"), "{message}");
    let completed = event(&outcome, "execution_completed");
    let charged: u128 = completed["payment_charged"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let used = outlayer_operator::chain::ResourceMetrics {
        instructions: status.instructions.unwrap(),
        time_ms: status.time_ms.unwrap(),
        compile_time_ms: None,
    };
    assert_eq!(
        charged,
        outlayer_contract::pricing::usage_cost(&pricing, &used),
        "a cache hit is not charged for the compile"
    );

    // The same through a client contract: its own callback stores the output.
    let asked = net
        .client_as("alice.localnet")
        .call_function(
            &account("client.localnet"),
            "ask",
            &json!({"repo": REPO, "commit": net.commit, "input": "through a contract"}),
            Gas::from_teragas(100),
            Balance::from_yoctonear(DEPOSIT),
        )
        .await;
    if let Err(error) = &asked {
        // Still waiting for the answer: follow it by hash.
        assert!(matches!(error, ChainError::Unconfirmed { .. }), "{error}");
    }
    let answer = wait_for("the client contract's answer", || async {
        let answer: Value = net
            .client_as("alice.localnet")
            .view_call(
                &account("client.localnet"),
                "get_answer",
                &json!({"question_id": 0}),
            )
            .await
            .ok()?;
        (answer["status"] != "pending").then_some(answer)
    })
    .await;
    assert_eq!(answer["status"], "answered", "{answer}");
    assert_eq!(answer["output"], "through a contract");
    let status = finished(&executions, "req-2").await;
    assert_eq!(status.phase, Some(Phase::Succeeded));
    let sender = executions
        .get("req-2")
        .await
        .unwrap()
        .spec
        .on_chain
        .unwrap()
        .sender;
    assert_eq!(sender, "client.localnet", "the contract is the requester");

    // The watcher's cursor is in the cluster.
    let cursor = Api::<ConfigMap>::namespaced(net.env.cluster.client(), NAMESPACE)
        .get(outlayer_operator::chain_watcher::CURSOR_CONFIG_MAP)
        .await
        .unwrap();
    assert_eq!(cursor.data.unwrap()["nextRequestId"], "3");

    // GitOps pricing: alice (the owner) makes the operator the pricing manager; the Pricing
    // resource then drives the contract.
    let alice = net.client_as("alice.localnet");
    alice
        .call_function(
            &account("outlayer.localnet"),
            "set_pricing_manager",
            &json!({"pricing_manager_id": "operator.localnet"}),
            Gas::from_teragas(10),
            Balance::from_yoctonear(0),
        )
        .await
        .unwrap();
    let wanted = PricingSpec {
        base_fee: "2000000000000000000000".to_string(),
        per_million_instructions_fee: "7".to_string(),
        per_ms_fee: "11".to_string(),
        per_compile_ms_fee: "13".to_string(),
    };
    let pricings: Api<Pricing> = Api::all(net.env.cluster.client());
    let started = Instant::now();
    pricings
        .create(
            &PostParams::default(),
            &Pricing::new("default", wanted.clone()),
        )
        .await
        .unwrap();
    wait_for("the pricing on chain", || async {
        let on_chain = net.view("get_pricing", json!({})).await;
        (on_chain["base_fee"] == wanted.base_fee && on_chain["per_ms_fee"] == "11").then_some(())
    })
    .await;
    println!("Pricing change on chain after {:?}", started.elapsed());
    let synced = wait_for("Pricing Synced", || async {
        let status = pricings.get("default").await.ok()?.status?;
        (condition_status(&status.conditions, "Synced") == Some(true)
            && status.last_tx_hash.is_some())
        .then_some(status)
    })
    .await;
    assert_eq!(synced.on_chain.as_ref(), Some(&wanted));

    // Drift: the owner changes the pricing on chain; the operator puts the spec back and warns.
    owner_sets_every_fee_to_one(&alice).await;
    wait_for("the drift reverted", || async {
        let on_chain = net.view("get_pricing", json!({})).await;
        (on_chain["base_fee"] == wanted.base_fee).then_some(())
    })
    .await;
    let events: Api<Event> = Api::all(net.env.cluster.client());
    wait_for("an OnChainDrift warning", || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        list.items
            .iter()
            .any(|e| {
                e.reason.as_deref() == Some("OnChainDrift") && e.type_.as_deref() == Some("Warning")
            })
            .then_some(())
    })
    .await;
    operator.stop().await;
}

/// The contract charges a request at the pricing it was made at (its snapshot), not the pricing at
/// its answer. The operator's `status.costYocto` — computed before the resolve is sent, from the
/// request it read for the check before the send — says the same after the pricing changed.
#[tokio::test]
async fn the_cost_is_at_the_pricing_the_request_was_made_at() {
    let net = ChainEnv::start(Duration::from_millis(500)).await;
    let alice = net.client_as("alice.localnet");
    let made_at = alice.get_pricing().await.unwrap();
    // The request waits on chain while no operator runs; then the owner changes the pricing.
    let outcome = net.request("priced when made");
    wait_for("request 0 on chain", || async {
        let request = net.view("get_request", json!({"request_id": 0})).await;
        (!request.is_null()).then_some(())
    })
    .await;
    owner_sets_every_fee_to_one(&alice).await;
    let changed = alice.get_pricing().await.unwrap();
    assert_ne!(changed.base_fee, made_at.base_fee);

    let operator = net.start_operator(net.config());
    let outcome = outcome.await.unwrap();
    assert_eq!(returned(&outcome), "priced when made");
    let status = finished(&net.executions(), "req-0").await;
    let charged: u128 = event(&outcome, "execution_completed")["payment_charged"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        status.cost_yocto.as_deref(),
        Some(charged.to_string().as_str()),
        "{status:?}"
    );
    let used = outlayer_operator::chain::ResourceMetrics {
        instructions: status.instructions.unwrap(),
        time_ms: status.time_ms.unwrap(),
        compile_time_ms: Some(status.compile_time_ms.unwrap()),
    };
    assert_eq!(
        charged,
        outlayer_contract::pricing::usage_cost(&made_at, &used)
    );
    assert_ne!(
        charged,
        outlayer_contract::pricing::usage_cost(&changed, &used),
        "the changed pricing would charge the same: the test shows nothing"
    );
    operator.stop().await;
}

/// The warm-up pattern: a compile-only request (OutLayer's shape, `params.compile_only`, no limits)
/// builds the module and is answered with its hash, size and compile time, charged the base fee and
/// the compile time; the next request for the commit is a cache hit.
#[tokio::test]
async fn a_compile_only_request_warms_the_cache() {
    let net = ChainEnv::start(Duration::from_millis(500)).await;
    let operator = net.start_operator(net.config());
    let outcome = net
        .request_args(json!({
            "source": {"GitHub": {"repo": REPO, "commit": net.commit}},
            "params": {"compile_only": true},
        }))
        .await
        .unwrap();
    let status = finished(&net.executions(), "req-0").await;
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
    assert_eq!(condition_reason(&status, "Succeeded"), "CompiledOnly");
    assert_eq!(status.pod_name, None, "nothing ran");
    let answer = returned(&outcome);
    let compile_job: Api<CompileJob> = Api::namespaced(net.env.cluster.client(), NAMESPACE);
    let built = compile_job
        .get(status.compile_job.as_deref().unwrap())
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(
        answer["wasm_sha256"].as_str(),
        built.wasm_sha256.as_deref(),
        "{answer}"
    );
    assert_eq!(answer["size_bytes"].as_u64(), built.size_bytes, "{answer}");
    assert_eq!(answer["cached"], false);
    let compile_time_ms = answer["compile_time_ms"].as_u64().unwrap();
    assert_eq!(Some(compile_time_ms), built.compile_time_ms);
    let completed = event(&outcome, "execution_completed");
    assert_eq!(completed["evidence"]["wasm_sha256"], answer["wasm_sha256"]);
    let pricing = net.client_as("alice.localnet").get_pricing().await.unwrap();
    let charged: u128 = completed["payment_charged"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        charged,
        pricing.base_fee.0 + u128::from(compile_time_ms) * pricing.per_compile_ms_fee.0,
        "{completed}"
    );

    // Users' requests for the commit now find the module built.
    let outcome = net.request("warm").await.unwrap();
    assert_eq!(returned(&outcome), "warm");
    let status = finished(&net.executions(), "req-1").await;
    assert_eq!(status.cache_hit, Some(true), "{status:?}");
    operator.stop().await;
}

/// The resolve lands but its answer never reaches the operator, which is then killed: the restarted
/// operator finds the transaction by the hash it recorded before sending, and the status says who
/// resolved the request and what it was charged, instead of claiming a settlement it cannot vouch for.
#[tokio::test]
async fn a_resolve_whose_answer_was_lost_is_found_by_its_recorded_hash() {
    let net = ChainEnv::start(Duration::from_millis(300)).await;
    let operator = net.start_operator(net.config());
    net.precompile().await;
    let executions = net.executions();
    let outcome = net.request("the answer is lost");
    wait_for("req-0 to be created", || async {
        executions.get_opt("req-0").await.ok()?.map(|_| ())
    })
    .await;
    net.localnet.faults().set(Fault::LoseAnswers);
    let signed = wait_for("the resolve to be signed and recorded", || async {
        executions.get("req-0").await.ok()?.status?.signed_resolve
    })
    .await;
    wait_for("the request to be settled on chain", || async {
        let request = net.view("get_request", json!({"request_id": 0})).await;
        request.is_null().then_some(())
    })
    .await;
    operator.kill().await;
    net.localnet.faults().clear();
    let status = executions.get("req-0").await.unwrap().status.unwrap();
    assert_eq!(status.phase, Some(Phase::Reporting), "{status:?}");

    let operator = net.start_operator(net.config());
    let outcome = outcome.await.unwrap();
    assert_eq!(returned(&outcome), "the answer is lost");
    let status = finished(&executions, "req-0").await;
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
    assert_eq!(condition_reason(&status, "Reported"), "Resolved");
    assert_eq!(status.tx_hash.as_deref(), Some(signed.tx_hash.as_str()));
    let charged = event(&outcome, "execution_completed")["payment_charged"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(status.cost_yocto, Some(charged), "{status:?}");
    operator.stop().await;
}

/// Anyone who may create ExecutionRequests can write `spec.onChain`; only the chain's copy counts. A
/// forged `req-0` (another sender, another input) squatting the watcher's name, and a copy under
/// another name, are never run with secrets or reported: the honest request is answered as the chain
/// holds it, and each forgery is named in a Warning Event with reason `OnChainMismatch`.
#[tokio::test]
async fn forged_on_chain_requests_are_never_reported() {
    let net = ChainEnv::start(Duration::from_millis(500)).await;
    let outcome = net.request("the honest input");
    let pending = wait_for("request 0 to be pending", || async {
        let page: Vec<outlayer_operator::chain::PendingRequest> = serde_json::from_value(
            net.view("get_pending_requests", json!({"from_id": 0, "limit": 10}))
                .await,
        )
        .ok()?;
        page.into_iter().next()
    })
    .await;
    let honest = outlayer_operator::chain_watcher::execution_request(
        &pending,
        pending.input_data.clone().unwrap(),
        200,
    );
    let executions = net.executions();
    let mut squatter = honest.clone();
    squatter.spec.input = "the forged input".to_string();
    squatter.spec.on_chain.as_mut().unwrap().sender = "eve.localnet".to_string();
    let squatter = executions
        .create(&PostParams::default(), &squatter)
        .await
        .unwrap();
    let mut copy = honest.clone();
    copy.metadata.name = Some("forged-0".to_string());
    copy.metadata.labels = None;
    copy.spec.input = "another forged input".to_string();
    executions
        .create(&PostParams::default(), &copy)
        .await
        .unwrap();

    let operator = net.start_operator(net.config());
    let outcome = outcome.await.unwrap();
    assert_eq!(returned(&outcome), "the honest input");
    let status = finished(&executions, "req-0").await;
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
    assert_eq!(
        executions.get("req-0").await.unwrap().spec,
        honest.spec,
        "the watcher replaced the squatter"
    );
    let forged = finished(&executions, "forged-0").await;
    assert_eq!(forged.phase, Some(Phase::Failed), "{forged:?}");
    assert_eq!(condition_reason(&forged, "Succeeded"), "OnChainMismatch");
    assert_eq!(condition_reason(&forged, "Reported"), "OnChainMismatch");
    assert!(
        forged.message.as_deref().unwrap().contains("spec.input"),
        "{forged:?}"
    );
    assert_eq!(forged.pod_name, None, "nothing ran for it");
    assert_eq!(forged.tx_hash, None);
    let events: Api<Event> = Api::namespaced(net.env.cluster.client(), NAMESPACE);
    let squatter_uid = squatter.metadata.uid.unwrap();
    wait_for("a Warning Event about the squatter", || async {
        events
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| {
                e.involved_object.uid.as_deref() == Some(squatter_uid.as_str())
                    && e.reason.as_deref() == Some("OnChainMismatch")
            })
    })
    .await;
    let stats = net.view("get_stats", json!({})).await;
    assert_eq!(stats["successful"], 1, "{stats}");
    operator.stop().await;
}

#[tokio::test]
async fn requests_that_cannot_finish_in_time_expire_and_are_refunded() {
    // 100 ms blocks: the yield window is 20 s, under the compile budget.
    let net = ChainEnv::start(Duration::from_millis(100)).await;
    let pricing = net.client_as("alice.localnet").get_pricing().await.unwrap();

    // No operator at all: the yield times out and the contract refunds all but the base fee.
    let alice_before = net.balance("alice.localnet").await;
    let outcome = net.request("nobody answers").await.unwrap();
    assert_eq!(returned(&outcome), Value::Null);
    let completed = event(&outcome, "execution_completed");
    assert_eq!(completed["payment_charged"], pricing.base_fee.0.to_string());
    assert_eq!(
        net.balance("alice.localnet").await,
        alice_before - pricing.base_fee.0 - tokens_burnt(&outcome)
    );

    // With the operator: an uncached compile cannot fit, so nothing starts, and the contract hears so
    // at once (a failure with no usage: the base fee) rather than when the yield times out.
    let operator = net.start_operator(net.config());
    let outcome = net.request("too late to compile").await.unwrap();
    let status = finished(&net.executions(), "req-1").await;
    assert_eq!(status.phase, Some(Phase::Failed), "{status:?}");
    assert_eq!(condition_reason(&status, "Succeeded"), "NoTimeToCompile");
    assert_eq!(condition_reason(&status, "Reported"), "Resolved");
    let timed_out = net.view("get_stats", json!({})).await["timed_out"].clone();
    assert_eq!(timed_out, 1, "only the request nobody answered timed out");
    assert!(
        status.message.as_deref().unwrap().contains("precompile"),
        "{status:?}"
    );
    assert_eq!(returned(&outcome), Value::Null);
    assert_eq!(
        event(&outcome, "execution_completed")["payment_charged"],
        pricing.base_fee.0.to_string()
    );
    let compile_jobs: Api<CompileJob> = Api::namespaced(net.env.cluster.client(), NAMESPACE);
    assert!(
        compile_jobs
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "no compile was started"
    );
    // The first request was settled before the operator started: it never became an ExecutionRequest.
    assert!(net.executions().get_opt("req-0").await.unwrap().is_none());
    operator.kill().await;

    // In flight when the operator dies: with a budget that lets the compile start, the work begins;
    // the operator is back only after the yield timed out, and the request ends Expired, unreported.
    let mut hasty = net.config();
    hasty.on_chain.compile_budget = Duration::from_secs(1);
    let operator = net.start_operator(hasty);
    let outcome = net.request("in flight");
    let executions = net.executions();
    wait_for("req-2 to be accepted", || async {
        executions.get_opt("req-2").await.ok()?.map(|_| ())
    })
    .await;
    operator.kill().await;
    let outcome = outcome.await.unwrap();
    assert_eq!(returned(&outcome), Value::Null, "the timeout settled it");
    let operator = net.start_operator(net.config());
    let status = finished(&executions, "req-2").await;
    assert_eq!(status.phase, Some(Phase::Expired), "{status:?}");
    assert_eq!(condition_reason(&status, "Succeeded"), "YieldDeadline");
    assert_eq!(
        condition_status(&status.conditions, "Reported"),
        Some(false)
    );
    operator.stop().await;
}

#[tokio::test]
async fn a_report_cut_short_by_a_crash_and_rpc_faults_is_sent_exactly_once() {
    // 500 ms blocks: a 100 s yield window, so 100 requests under RPC faults are all answered in time
    // on a busy 2-core machine too (at 300 ms the window ran out under load; what is checked is that
    // each is answered exactly once, not how fast).
    let net = ChainEnv::start(Duration::from_millis(500)).await;
    let operator = net.start_operator(net.config());
    net.precompile().await;

    // The resolve transaction is dropped by the node; the operator is killed while Reporting.
    let outcome = net.request("survives a crash");
    let executions = net.executions();
    wait_for("req-0 to be created", || async {
        executions.get_opt("req-0").await.ok()?.map(|_| ())
    })
    .await;
    net.localnet.faults().set(Fault::DropTransactions);
    wait_for("req-0 to be Reporting", || async {
        let status = executions.get("req-0").await.ok()?.status?;
        (status.phase == Some(Phase::Reporting)).then_some(())
    })
    .await;
    operator.kill().await;
    net.localnet.faults().clear();

    // A new operator finishes the report: the contract sees exactly one resolve.
    let operator = net.start_operator(net.config());
    let outcome = outcome.await.unwrap();
    assert_eq!(returned(&outcome), "survives a crash");
    let status = finished(&executions, "req-0").await;
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
    assert_eq!(condition_status(&status.conditions, "Reported"), Some(true));

    // 100 requests at once while the RPC fails on and off: every one resolved, none twice.
    let requests: Vec<_> = (0..100)
        .map(|i| (i, net.request(&format!("request {i}"))))
        .collect();
    let faults = net.localnet.faults().clone();
    let chaos = tokio::spawn(async move {
        for round in 0..10u64 {
            tokio::time::sleep(Duration::from_millis(700)).await;
            match round % 3 {
                0 => faults.set_for(Fault::HttpError { status: 503 }, 5),
                1 => faults.set_for(Fault::DropTransactions, 2),
                _ => faults.set_for(Fault::HttpError { status: 429 }, 3),
            }
        }
        faults.clear();
    });
    for (i, request) in requests {
        let outcome = request.await.unwrap();
        if returned(&outcome) != format!("request {i}") {
            let unfinished: Vec<String> = executions
                .list(&ListParams::default())
                .await
                .unwrap()
                .items
                .into_iter()
                .filter_map(|e| {
                    let status = e.status?;
                    (status.phase != Some(Phase::Succeeded)).then(|| {
                        format!(
                            "{:?}: {:?} {:?}",
                            e.metadata.name, status.phase, status.message
                        )
                    })
                })
                .collect();
            panic!(
                "request {i} was not answered with its output: {:?}\n{}",
                outcome.events(),
                unfinished.join("\n")
            );
        }
    }
    chaos.await.unwrap();
    let stats = net.view("get_stats", json!({})).await;
    assert_eq!(stats["successful"], 101, "{stats}");
    assert_eq!(stats["failed"], 0, "{stats}");
    assert_eq!(stats["timed_out"], 0, "{stats}");
    assert_eq!(stats["pending"], 0, "{stats}");
    operator.stop().await;
}
