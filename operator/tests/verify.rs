//! `outlayer-operator verify` against the localnet, as a third party runs it: only the RPC URL, the
//! contract, the request's transaction and a git mirror of GitHub. An honest answer verifies (all
//! match), cold and from the verifier's module cache; a resolve sent by hand with another output is
//! caught (`output: MISMATCH`); so is one naming a module built from another source
//! (`source → module: MISMATCH`); a request with secrets cannot be checked without them (exit 2).
//! Runs are seeded by the operator's seed key: the seed signature checks (`seed: valid`), and a guest
//! that reads randomness and the clock replays to the same output.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::artifact;
use common::chain::*;
use near_primitives::types::{Balance, Gas};
use outlayer_operator::chain::TxOutcome;
use outlayer_operator::crd::Phase;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const OPERATOR: &str = env!("CARGO_BIN_EXE_outlayer-operator");

/// Runs `verify --json` for the request made by `outcome` (with `extra` arguments; the marker
/// `--text` here means without `--json`, the lines as a JSON string); returns the exit code, the
/// report and the wall time. The localnet is served by this test's runtime, so the command runs on
/// the blocking pool.
async fn verify_with(
    net: &ChainEnv,
    outcome: &TxOutcome,
    cache: &Path,
    extra: &[String],
) -> (i32, Value, Duration) {
    let compiler = artifact(
        "debug/outlayer-compiler",
        "cargo build -p outlayer-compiler",
    );
    let started = Instant::now();
    let mut command = Command::new(OPERATOR);
    command
        .arg("verify")
        .args(["--contract-id", "outlayer.localnet"])
        .args(["--sender", "alice.localnet"])
        .arg("--rpc-url")
        .arg(net.localnet.rpc_url())
        .arg("--tx")
        .arg(outcome.tx_hash.to_string())
        .arg("--compiler")
        .arg(compiler)
        .arg(format!(
            "--git-mirror=https://github.com/=file://{}/",
            net.repos.path().display()
        ))
        .arg("--cache-dir")
        .arg(cache);
    let text = extra.iter().any(|a| a == "--text");
    if text {
        command.args(extra.iter().filter(|a| *a != "--text"));
    } else {
        command.arg("--json").args(extra);
    }
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .unwrap();
    let elapsed = started.elapsed();
    let code = output.status.code().unwrap_or(-1);
    let stdout = String::from_utf8_lossy(&output.stdout);
    if text {
        return (code, Value::String(stdout.into_owned()), elapsed);
    }
    let report = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!(
            "verify printed no JSON ({e}); exit {code}; stdout {stdout}; stderr {}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (code, report, elapsed)
}

async fn verify(net: &ChainEnv, outcome: &TxOutcome, cache: &Path) -> (i32, Value, Duration) {
    verify_with(net, outcome, cache, &[]).await
}

/// Waits until the contract lists request `id` as pending.
async fn pending(net: &ChainEnv, id: u64) {
    common::wait_for(&format!("request {id} pending"), || async {
        let list = net.view("get_pending_requests", json!({})).await;
        list.as_array()?
            .iter()
            .any(|r| r["request_id"] == id)
            .then_some(())
    })
    .await;
}

/// Waits until the operator has published its seed key on the contract; returns it.
async fn published_seed_key(net: &ChainEnv) -> String {
    common::wait_for("the seed key on the contract", || async {
        net.view("get_seed_public_key", json!({}))
            .await
            .as_str()
            .map(str::to_string)
    })
    .await
}

/// The operator's seed key, from its Secret (what a dishonest operator holds too).
async fn seed_key(net: &ChainEnv) -> near_crypto::SecretKey {
    let secrets: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(net.env.cluster.client(), common::NAMESPACE);
    let secret = secrets
        .get(outlayer_operator::seed::SEED_KEY_SECRET)
        .await
        .unwrap();
    let text = &secret.data.unwrap()[outlayer_operator::seed::SEED_KEY_ENTRY].0;
    std::str::from_utf8(text).unwrap().parse().unwrap()
}

/// `evidence` with the seed key's signature for request `id` (the contract refuses a success
/// without it).
async fn signed_evidence(net: &ChainEnv, evidence: &Value, id: u64) -> Value {
    let request = net.view("get_request", json!({"request_id": id})).await;
    let message = outlayer_contract::seed_message(
        "outlayer.localnet",
        id,
        request["data_id"].as_str().unwrap(),
    );
    let mut evidence = evidence.clone();
    evidence["seed_signature"] = seed_key(net).await.sign(&message).to_string().into();
    evidence
}

/// Answers request `id` by hand as the operator's account, with whatever `response` says.
async fn resolve_by_hand(net: &ChainEnv, id: u64, response: Value) {
    let sent = net
        .client_as("operator.localnet")
        .call_function(
            &account("outlayer.localnet"),
            "resolve_execution",
            &json!({"request_id": id, "response": response}),
            Gas::from_teragas(50),
            Balance::from_yoctonear(0),
        )
        .await
        .unwrap();
    assert!(
        matches!(
            sent.status,
            outlayer_operator::chain::CallStatus::Success(_)
        ),
        "{:?}",
        sent.status
    );
}

#[tokio::test]
async fn honest_answers_verify_and_forged_ones_are_caught() {
    let net = ChainEnv::start(Duration::from_millis(500)).await;
    let operator = net.start_operator(net.config());
    // The verifier runs here, not in a pod: /tmp is fine (and a checkout under our own Cargo
    // workspace would be taken for one of its members).
    let cache = tempfile::tempdir().unwrap();
    let seed_public_key = published_seed_key(&net).await;

    // An honest run: the answer carries the module's hash, the commit, the build identity and the
    // seed signature.
    let honest = net.request("hello, verifier").await.unwrap();
    let status = finished(&net.executions(), "req-0").await;
    assert_eq!(returned(&honest), "hello, verifier", "{status:?}");
    assert_eq!(status.phase, Some(Phase::Succeeded), "{status:?}");
    let completed = event(&honest, "execution_completed");
    let evidence = &completed["evidence"];
    assert_eq!(
        evidence["wasm_sha256"].as_str(),
        status.wasm_sha256.as_deref()
    );
    assert_eq!(evidence["commit"].as_str(), Some(net.commit.as_str()));
    assert!(
        evidence["toolchain"]
            .as_str()
            .is_some_and(|t| t.starts_with("rustc ")),
        "{completed}"
    );
    assert_eq!(evidence["compiler"], "outlayer-compiler 0.1.0");
    assert_eq!(status.toolchain.as_deref(), evidence["toolchain"].as_str());
    assert_eq!(
        event(&honest, "execution_requested")["seed_public_key"],
        seed_public_key.as_str()
    );
    assert_eq!(
        evidence["seed_signature"].as_str(),
        status.seed_signature.as_deref()
    );
    assert_eq!(status.deterministic, Some(true), "{status:?}");
    eprintln!(
        "evidence: {} bytes of JSON in the resume payload",
        evidence.to_string().len()
    );

    let (code, report, cold) = verify_with(&net, &honest, cache.path(), &[]).await;
    assert_eq!(code, 0, "{report}");
    for check in ["sourceToModule", "seed", "output", "instructions"] {
        assert_eq!(report[check]["verdict"], "match", "{check}: {report}");
    }
    assert_eq!(report["moduleCached"], false);
    let build_seconds = report["buildSeconds"].clone();
    // Again: the module comes from the verifier's own cache.
    let (code, report, cached) = verify(&net, &honest, cache.path()).await;
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["moduleCached"], true);
    eprintln!(
        "verify: cold {:.2} s (build {:.2} s), cached {:.2} s",
        cold.as_secs_f64(),
        build_seconds,
        cached.as_secs_f64()
    );
    // The lines a person reads.
    let (code, lines, _) = verify_with(&net, &honest, cache.path(), &["--text".to_string()]).await;
    assert_eq!(code, 0, "{lines}");
    let lines = lines.as_str().unwrap();
    eprintln!("{lines}");
    for line in [
        "source → module: match (",
        "seed: valid (signed by ed25519:",
        "output: match\n",
        "instructions: match (",
    ] {
        assert!(lines.contains(line), "{line:?} in {lines}");
    }

    // A guest that reads randomness and the clock: seeded by the chain, it replays exactly.
    common::example_main_branch(&net.repos.path().join("outlayer").join("random"), "random");
    let random_commit = common::git(
        &net.repos.path().join("outlayer").join("random"),
        &["rev-parse", "main"],
    );
    let random_code =
        json!({"repo": "https://github.com/outlayer/random", "commit": random_commit});
    let first = net
        .request_code(random_code.clone(), "16", None)
        .await
        .unwrap();
    let second = net.request_code(random_code, "16", None).await.unwrap();
    let drawn = |outcome: &TxOutcome| -> Value {
        serde_json::from_str(returned(outcome).as_str().unwrap()).unwrap()
    };
    let (first_draw, second_draw) = (drawn(&first), drawn(&second));
    // The clock reads the request block's time; two requests draw different numbers.
    assert_eq!(
        first_draw["unixNanos"].as_u64(),
        event(&first, "execution_requested")["created_at_ns"].as_u64(),
        "{first_draw}"
    );
    assert_ne!(first_draw["random"], second_draw["random"]);
    let (code, report, _) = verify(&net, &first, cache.path()).await;
    assert_eq!(code, 0, "{report}");
    for check in ["seed", "output", "instructions"] {
        assert_eq!(report[check]["verdict"], "match", "{check}: {report}");
    }

    // From here on, answers are sent by hand: the operator must not answer first. Each carries the
    // seed key's signature (the contract checks it): whoever answers holds the operator's key, and is
    // still caught.
    operator.stop().await;
    let instructions = status.instructions.unwrap();

    // A resolve with another output than the module computes.
    let tampered = net.request("pay alice 1 NEAR");
    pending(&net, 3).await;
    resolve_by_hand(
        &net,
        3,
        json!({"success": true, "output": {"Text": "pay mallory 1000 NEAR"},
               "resources_used": {"instructions": instructions, "time_ms": 1},
               "evidence": signed_evidence(&net, evidence, 3).await}),
    )
    .await;
    let tampered = tampered.await.unwrap();
    assert_eq!(returned(&tampered), "pay mallory 1000 NEAR");
    let (code, report, _) = verify(&net, &tampered, cache.path()).await;
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["sourceToModule"]["verdict"], "match", "{report}");
    assert_eq!(report["output"]["verdict"], "mismatch", "{report}");
    assert_eq!(
        report["output"]["expected"], "\"pay mallory 1000 NEAR\"",
        "{report}"
    );
    assert_eq!(report["output"]["got"], "\"pay alice 1 NEAR\"", "{report}");

    // An answer that ran a module built from another source than the request's commit.
    let other = std::fs::read(artifact(
        "wasm32-wasip1/release/example-env-reader.wasm",
        "scripts/build-wasm",
    ))
    .unwrap();
    let mut swapped = evidence.clone();
    swapped["wasm_sha256"] = hex::encode(Sha256::digest(&other)).into();
    let other_module = net.request("hello again");
    pending(&net, 4).await;
    let swapped = signed_evidence(&net, &swapped, 4).await;
    resolve_by_hand(
        &net,
        4,
        json!({"success": true, "output": {"Text": "hello again"},
               "resources_used": {"instructions": instructions, "time_ms": 1},
               "evidence": swapped}),
    )
    .await;
    let other_module = other_module.await.unwrap();
    let (code, report, _) = verify(&net, &other_module, cache.path()).await;
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["sourceToModule"]["verdict"], "mismatch", "{report}");
    assert_eq!(
        report["sourceToModule"]["expected"], swapped["wasm_sha256"],
        "{report}"
    );

    // A request that used secrets: nothing to replay without them.
    let secret = net.request_code(
        json!({"repo": REPO, "commit": net.commit}),
        "hi",
        Some(json!({"account_id": "alice.localnet", "profile": "prod"})),
    );
    pending(&net, 5).await;
    resolve_by_hand(
        &net,
        5,
        json!({"success": true, "output": {"Text": "hi"},
               "resources_used": {"instructions": instructions, "time_ms": 1},
               "evidence": signed_evidence(&net, evidence, 5).await}),
    )
    .await;
    let secret = secret.await.unwrap();
    let (code, report, _) = verify(&net, &secret, cache.path()).await;
    assert_eq!(code, 2, "{report}");
    assert_eq!(report["sourceToModule"]["verdict"], "match", "{report}");
    assert_eq!(report["output"]["verdict"], "notChecked", "{report}");
    assert!(
        report["output"]["reason"]
            .as_str()
            .unwrap()
            .contains("--env-file"),
        "{report}"
    );
    // Their owner holds them: then it verifies.
    let env_file = cache.path().join("secrets.json");
    std::fs::write(&env_file, r#"{"API_KEY":"sk-test"}"#).unwrap();
    let (code, report, _) = verify_with(
        &net,
        &secret,
        cache.path(),
        &[format!("--env-file={}", env_file.display())],
    )
    .await;
    assert_eq!(report["output"]["verdict"], "match", "{report}");
    // (The hand-made answer reused another input's instruction count.)
    assert_eq!(code, 1, "{report}");
}
