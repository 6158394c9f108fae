//! The demo's flow as CI runs it, then the chart's day-2 path: the chart-installed operator (a container
//! on the real node, with the chart's ServiceAccount, RBAC, env and key Secret, reaching the API server
//! through the `kubernetes` Service and the localnet through its NetworkPolicy) serves an on-chain
//! request end to end; `helm upgrade` with new `pricing.*` values changes the contract's pricing;
//! `helm uninstall` leaves nothing behind that was created for an execution.
//!
//! Fails (never skips) when the binaries, the wasm, helm or the control plane are missing; the error
//! names the script that builds them. Every wait is for a condition with a generous deadline.

use std::time::{Duration, Instant};

use outlayer_demo::{Demo, DemoOptions, KEY_SECRET, Log, NAMESPACE, wait_until};
use outlayer_operator::pods::executor::EXECUTION_LABEL;
use serde_json::{Value, json};

/// What json-transform prints for the demo's default input (the order with three items).
fn expected_summary() -> Value {
    json!({"type": "object", "keys": ["customer", "items", "order", "paid"], "numbers": 6,
           "sum": 18.45, "strings": 5, "stringBytes": 32, "trues": 1, "maxDepth": 4})
}

fn items(demo: &Demo, kinds: &str) -> Vec<Value> {
    let out = demo
        .kubectl()
        .run(&["-n", NAMESPACE, "get", kinds, "-o", "json"], None)
        .unwrap_or_else(|e| panic!("{e}"));
    serde_json::from_str::<Value>(&out).unwrap()["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn name(object: &Value) -> &str {
    object["metadata"]["name"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn an_onchain_request_through_the_chart_then_pricing_upgrade_then_uninstall() {
    let started = Instant::now();
    let mut demo = Demo::start(DemoOptions::default(), Log::new())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let outcome = match demo.run_request().await {
        Ok(outcome) => outcome,
        Err(e) => panic!("{e}\n---- operator log ----\n{}", demo.operator_log()),
    };
    demo.stop_watching();
    println!("{outcome}");

    // The user got the program's output, computed off chain, as the transaction's return value.
    assert_eq!(outcome.returned, expected_summary(), "{outcome}");
    assert!(outcome.succeeded(), "{outcome}\n{}", demo.operator_log());
    assert_eq!(outcome.reported(), Some(true), "{outcome}");
    let output: Value =
        serde_json::from_str(outcome.execution.output.as_deref().unwrap_or("null")).unwrap();
    assert_eq!(
        output, outcome.returned,
        "status.output is what the user got"
    );
    // The operator's cost is the contract's charge; the rest of the deposit came back; the user paid
    // exactly the charge plus the gas burnt on their behalf.
    assert_eq!(
        outcome.execution.cost_yocto.as_deref(),
        Some(outcome.charged.to_string().as_str())
    );
    assert_eq!(outcome.charged + outcome.refunded, outcome.deposit.total());
    assert!(outcome.charged > 0 && outcome.gas_burnt > 0, "{outcome}");
    assert_eq!(
        outcome.balance_decrease(),
        outcome.charged + outcome.gas_burnt,
        "{outcome}"
    );
    // The charge is the usage the operator measured, compile included, at the contract's pricing.
    let status = &outcome.execution;
    assert_eq!(status.cache_hit, Some(false));
    assert_eq!(Some(outcome.used.instructions), status.instructions);
    assert_eq!(Some(outcome.used.time_ms), status.time_ms);
    assert_eq!(outcome.used.compile_time_ms, status.compile_time_ms);
    assert!(outcome.used.compile_time_ms.is_some_and(|ms| ms > 0));
    let parts: u128 = outcome.cost_parts().iter().map(|(_, yocto)| yocto).sum();
    assert_eq!(parts, outcome.charged, "{outcome}");
    println!(
        "on-chain request through the chart-installed operator: {:.1} s from a cold start",
        started.elapsed().as_secs_f64()
    );
    // The chart-installed operator published its seed key and seeded the run with it.
    assert_eq!(status.deterministic, Some(true), "{status:?}");
    assert_eq!(
        outcome.completed_event["evidence"]["seed_signature"].as_str(),
        status.seed_signature.as_deref()
    );

    // Anyone checks the answer from the chain alone: rebuilt from the commit, seed checked, replayed.
    for round in ["cold", "module cached"] {
        let verified = demo.verify(&outcome.tx_hash).await.unwrap();
        println!(
            "verify on the demo's request ({round}): {:.2} s\n{}",
            verified.elapsed.as_secs_f64(),
            verified.report
        );
        assert_eq!(verified.code, 0, "{}", verified.report);
        for line in [
            "source → module: match",
            "seed: valid",
            "output: match",
            "instructions: match",
        ] {
            assert!(
                verified.report.contains(line),
                "{line}: {}",
                verified.report
            );
        }
    }

    // GitOps pricing: the owner makes the operator the pricing manager; the chart's pricing values,
    // rendered into Pricing/default by `helm upgrade`, then become the contract's pricing.
    let chain = demo.chain();
    let before = chain.view("get_pricing", json!({})).await.unwrap();
    let wanted = json!({"base_fee": "2000000000000000000000", "per_million_instructions_fee": "7",
                        "per_ms_fee": "11", "per_compile_ms_fee": "13"});
    assert_ne!(before, wanted);
    chain.make_operator_pricing_manager().await.unwrap();
    let upgrading = Instant::now();
    demo.release()
        .upgrade(
            &[("pricing.enabled", "true")],
            &[
                ("pricing.baseFee", "2000000000000000000000"),
                ("pricing.perMillionInstructionsFee", "7"),
                ("pricing.perMsFee", "11"),
                ("pricing.perCompileMsFee", "13"),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let on_chain = wait_until(
        "the contract's pricing to follow the chart's values",
        Duration::from_secs(180),
        || async {
            let pricing = chain
                .view("get_pricing", json!({}))
                .await
                .map_err(|e| e.to_string())?;
            if pricing == wanted {
                Ok(pricing)
            } else {
                Err(pricing.to_string())
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n---- operator log ----\n{}", demo.operator_log()));
    println!(
        "helm upgrade → pricing on chain after {:.1} s: {on_chain}",
        upgrading.elapsed().as_secs_f64()
    );
    // The operator reports it on the Pricing resource (its status, through the chart's ClusterRole).
    let synced = wait_until(
        "Pricing default to be Synced",
        Duration::from_secs(120),
        || async {
            let out = demo
                .kubectl()
                .run(&["get", "price", "default", "-o", "json"], None)
                .map_err(|e| e.to_string())?;
            let pricing: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
            let status = &pricing["status"];
            let synced = status["conditions"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|c| c["type"] == "Synced" && c["status"] == "True")
            });
            if synced && status["lastTxHash"].is_string() {
                Ok(status.clone())
            } else {
                Err(status.to_string())
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n---- operator log ----\n{}", demo.operator_log()));
    assert_eq!(synced["onChain"]["baseFee"], wanted["base_fee"], "{synced}");
    // The next request is charged at the new pricing (and from the cache: no compile this time).
    let second = demo
        .run_request()
        .await
        .unwrap_or_else(|e| panic!("{e}\n---- operator log ----\n{}", demo.operator_log()));
    println!("{second}");
    assert_eq!(second.execution_name, "req-1");
    assert_eq!(second.returned, expected_summary());
    assert_eq!(second.execution.cache_hit, Some(true), "{second}");
    assert_eq!(second.pricing.base_fee.0, 2_000_000_000_000_000_000_000);
    assert_eq!(second.cost_parts()[0].1, second.pricing.base_fee.0);
    assert_eq!(second.cost_parts()[3].1, 0, "a cache hit pays no compile");
    let parts: u128 = second.cost_parts().iter().map(|(_, yocto)| yocto).sum();
    assert_eq!(parts, second.charged, "{second}");
    assert_eq!(second.balance_decrease(), second.charged + second.gas_burnt);

    // A succeeded execution's pod and input go right after its status says so: wait for that
    // cleanup (the operator's, not uninstall's), so what follows is about uninstall alone.
    wait_until(
        "the succeeded execution's pod and input to be deleted",
        Duration::from_secs(60),
        || async {
            let left: Vec<String> = items(&demo, "pods,configmaps")
                .iter()
                .filter(|o| {
                    o["metadata"]["ownerReferences"]
                        .as_array()
                        .is_some_and(|r| r.iter().any(|r| r["kind"] == "ExecutionRequest"))
                })
                .map(|o| name(o).to_string())
                .collect();
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}\n---- operator log ----\n{}", demo.operator_log()));

    // helm uninstall: the operator goes; nothing created for the execution stays.
    let uninstalling = Instant::now();
    demo.release().uninstall().unwrap_or_else(|e| panic!("{e}"));
    wait_until(
        "the operator's pod to be gone after helm uninstall",
        Duration::from_secs(120),
        || async {
            let operators: Vec<String> = items(&demo, "pods")
                .iter()
                .filter(|p| p["metadata"]["labels"]["app.kubernetes.io/component"] == "operator")
                .map(|p| name(p).to_string())
                .collect();
            if operators.is_empty() {
                Ok(())
            } else {
                Err(format!("{operators:?}"))
            }
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    println!(
        "helm uninstall, operator pod gone: {:.1} s",
        uninstalling.elapsed().as_secs_f64()
    );
    // Nothing made for an execution stays: no executor pod, and no pod, Secret (the ephemeral
    // unsealed-secrets one) or ConfigMap owned by an ExecutionRequest; no helm release record.
    let owned_by_execution = |object: &Value| {
        object["metadata"]["ownerReferences"]
            .as_array()
            .is_some_and(|o| o.iter().any(|r| r["kind"] == "ExecutionRequest"))
    };
    let mut kept = Vec::new();
    for object in items(&demo, "pods,secrets,configmaps") {
        let what = format!(
            "{} {}",
            object["kind"].as_str().unwrap_or_default(),
            name(&object)
        );
        assert!(!owned_by_execution(&object), "{what} of an execution left");
        assert!(
            object["metadata"]["labels"][EXECUTION_LABEL].is_null(),
            "{what} of an execution left"
        );
        let kind = object["type"].as_str().unwrap_or_default();
        assert!(
            !["outlayer.dev/unsealed", "helm.sh/release.v1"].contains(&kind),
            "{what} ({kind}) left after uninstall"
        );
        kept.push(what);
    }
    // Compile Jobs stay for their TTL, owned by their CompileJob (the cache's index, kept on purpose);
    // nothing else.
    let compile_jobs: Vec<Value> = items(&demo, "cjob")
        .iter()
        .map(|c| c["metadata"]["uid"].clone())
        .collect();
    for job in items(&demo, "jobs") {
        let owner = &job["metadata"]["ownerReferences"][0];
        assert!(
            owner["kind"] == "CompileJob" && compile_jobs.contains(&owner["uid"]),
            "Job {} is not a compile Job owned by a CompileJob: {owner}",
            name(&job)
        );
        kept.push(format!("Job {}", name(&job)));
    }
    // What stays is kept on purpose: the operator key Secret the platform team made, the operator's
    // own state (watcher cursor, sealing keys), the compile Jobs and their pods until their TTL.
    println!("kept after helm uninstall: {kept:?}");
    assert!(kept.contains(&format!("Secret {KEY_SECRET}")), "{kept:?}");
    println!("whole test {:.1} s", started.elapsed().as_secs_f64());
}
