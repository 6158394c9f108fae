//! The on-chain loop end to end: the real control plane and node agent, the test localnet running the
//! real contract wasm, and the operator's watcher, controllers, submitter and pricing sync. A user's
//! `request_execution` is compiled (from a git mirror: the contract only takes GitHub URLs), run and
//! resolved, and the user pays exactly what the contract computes; large outputs go in two steps; a
//! request that cannot finish in time expires and is refunded; a report interrupted by a crash and
//! by RPC faults is still sent exactly once; the Pricing resource drives the on-chain pricing.
//! Every wait is for a condition with a generous deadline; no timing decides a test.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    NAMESPACE, OperatorEnv, RunningOperator, echo_main_branch, git, operator_config,
    repositories_dir, start_operator, wait_for,
};
use e2e_localnet::{Fault, InitCall, Localnet, LocalnetConfig};
use k8s_openapi::api::core::v1::{ConfigMap, Event};
use kube::api::{Api, ListParams, PostParams};
use near_crypto::{KeyType, SecretKey};
use near_primitives::types::{AccountId, Balance, Gas};
use outlayer_operator::chain::{
    CallStatus, ChainClient, ChainConfig, ChainError, OperatorSigner, RetryPolicy, TxOutcome,
};
use outlayer_operator::config::OperatorConfig;
use outlayer_operator::context::Context;
use outlayer_operator::crd::{
    BUILD_TARGET_WASIP1, CompileJob, CompileJobSpec, CompileSource, ExecutionRequest,
    ExecutionRequestStatus, Phase, Pricing, PricingSpec, condition_status,
};
use serde_json::{Value, json};

const NEAR: u128 = 1_000_000_000_000_000_000_000_000;
const DEPOSIT: u128 = NEAR / 10;
/// The repository as users name it; the operator fetches it from a local mirror.
const REPO: &str = "https://github.com/outlayer/echo";

fn account(name: &str) -> AccountId {
    name.parse().unwrap()
}

fn secret(name: &str) -> SecretKey {
    SecretKey::from_seed(KeyType::ED25519, name)
}

/// A cluster with the operator's CRDs, a localnet with the contract, a user (alice, also the
/// contract's owner) and the operator's account, and the echo example in a git mirror.
struct ChainEnv {
    env: OperatorEnv,
    localnet: Localnet,
    repos: tempfile::TempDir,
    commit: String,
    block_time: Duration,
    /// One client for all of alice's calls: its clones share her nonce.
    alice: ChainClient,
}

impl ChainEnv {
    async fn start(block_time: Duration) -> Self {
        let env = OperatorEnv::start().await;
        let repos = repositories_dir();
        let repo = repos.path().join("outlayer").join("echo");
        echo_main_branch(&repo);
        let commit = git(&repo, &["rev-parse", "main"]);
        let contract = common::artifact("near/outlayer_contract.wasm", "scripts/build-wasm");
        let client_contract =
            common::artifact("near/example_client_contract.wasm", "scripts/build-wasm");
        let config = LocalnetConfig::default()
            .with_block_time(block_time)
            .with_tx_wait_timeout(Duration::from_secs(5))
            .with_account(
                account("alice.localnet"),
                1000 * NEAR,
                secret("alice.localnet").public_key(),
            )
            .with_account(
                account("operator.localnet"),
                10 * NEAR,
                secret("operator.localnet").public_key(),
            )
            .with_contract(
                account("outlayer.localnet"),
                10 * NEAR,
                contract,
                Some(InitCall {
                    method: "new".to_string(),
                    args: json!({"owner_id": "alice.localnet", "operator_id": "operator.localnet"}),
                }),
            )
            .with_contract(
                account("client.localnet"),
                10 * NEAR,
                client_contract,
                Some(InitCall {
                    method: "new".to_string(),
                    args: json!({"outlayer_id": "outlayer.localnet"}),
                }),
            );
        let localnet = Localnet::start(config).await.unwrap();
        let alice = client_for(&localnet, "alice.localnet");
        Self {
            env,
            localnet,
            repos,
            commit,
            block_time,
            alice,
        }
    }

    fn client_as(&self, name: &str) -> ChainClient {
        if name == "alice.localnet" {
            return self.alice.clone();
        }
        client_for(&self.localnet, name)
    }

    /// The operator as the tests run it: compiles through the mirror, plans with the localnet's
    /// block time, polls often.
    fn config(&self) -> OperatorConfig {
        let mut config = operator_config(self.repos.path());
        config.compiler.allowed_repo_prefixes = vec!["https://github.com/".to_string()];
        config.compiler.git_mirrors = vec![format!(
            "https://github.com/=file://{}/",
            self.repos.path().display()
        )];
        config.cache_mount_path = Some(self.env.cache.path().to_path_buf());
        config.on_chain.expected_block_time = self.block_time;
        config.on_chain.poll_interval = Duration::from_millis(200);
        config.on_chain.pricing_sync_interval = Duration::from_secs(1);
        config.on_chain.compile_budget = Duration::from_secs(30);
        config.on_chain.report_margin = Duration::from_secs(2);
        config
    }

    fn start_operator(&self, config: OperatorConfig) -> RunningOperator {
        let ctx = Context::new(self.env.cluster.client(), config, Some("test".to_string()))
            .with_chain(Arc::new(self.client_as("operator.localnet")));
        start_operator(Arc::new(ctx))
    }

    /// Alice calls `request_execution`; the transaction stays open until the request is settled, so
    /// it runs in a task whose result is the user's final outcome.
    fn request(&self, input: &str) -> tokio::task::JoinHandle<TxOutcome> {
        let alice = self.client_as("alice.localnet");
        let args = json!({
            "code_source": {"repo": REPO, "commit": self.commit},
            "resource_limits": {"max_instructions": 1_000_000_000u64, "max_memory_mb": 64,
                                "max_execution_seconds": 10},
            "input_data": input,
            "response_format": "Text"
        });
        tokio::spawn(async move {
            let sent = alice
                .call_function(
                    &account("outlayer.localnet"),
                    "request_execution",
                    &args,
                    Gas::from_teragas(50),
                    Balance::from_yoctonear(DEPOSIT),
                )
                .await;
            match sent {
                Ok(outcome) => outcome,
                // The request is open until the operator answers, which may outlast the client's
                // patience (e.g. across an operator crash): wait on its hash like a wallet would.
                Err(ChainError::Unconfirmed { tx_hash, .. }) => {
                    let deadline = Instant::now() + Duration::from_secs(300);
                    loop {
                        match alice
                            .transaction_status(tx_hash, &account("alice.localnet"))
                            .await
                        {
                            Ok(Some(outcome)) => break outcome,
                            Ok(None) | Err(_) => {
                                assert!(
                                    Instant::now() < deadline,
                                    "request {tx_hash} never settled"
                                );
                                tokio::time::sleep(Duration::from_millis(200)).await
                            }
                        }
                    }
                }
                Err(error) => panic!("request_execution failed: {error}"),
            }
        })
    }

    async fn view(&self, method: &str, args: Value) -> Value {
        self.client_as("alice.localnet")
            .view_call(&account("outlayer.localnet"), method, &args)
            .await
            .unwrap()
    }

    async fn balance(&self, name: &str) -> u128 {
        self.client_as(name)
            .view_account(&account(name))
            .await
            .unwrap()
            .amount
            .as_yoctonear()
    }

    /// A CompileJob created ahead of time, as `kubectl apply` would: later requests hit the cache.
    async fn precompile(&self) {
        let source = CompileSource {
            repo: REPO.to_string(),
            commit: self.commit.clone(),
            build_target: BUILD_TARGET_WASIP1.to_string(),
        };
        let name = source.compile_job_name();
        let api: Api<CompileJob> = Api::namespaced(self.env.cluster.client(), NAMESPACE);
        api.create(
            &PostParams::default(),
            &CompileJob::new(&name, CompileJobSpec { source }),
        )
        .await
        .unwrap();
        wait_for("the precompiled module", || async {
            let status = api.get(&name).await.ok()?.status?;
            (condition_status(&status.conditions, "Ready") == Some(true)).then_some(())
        })
        .await;
    }

    fn executions(&self) -> Api<ExecutionRequest> {
        Api::namespaced(self.env.cluster.client(), NAMESPACE)
    }
}

fn client_for(localnet: &Localnet, name: &str) -> ChainClient {
    let mut config = ChainConfig::new(vec![localnet.rpc_url()], account("outlayer.localnet"));
    config.view_timeout = Duration::from_secs(3);
    config.tx_timeout = Duration::from_secs(10);
    config.retry = RetryPolicy {
        max_attempts: 6,
        base_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(500),
    };
    let signer = OperatorSigner::from_secret_strings(name, &secret(name).to_string()).unwrap();
    ChainClient::new(config, Some(signer)).unwrap()
}

fn returned(outcome: &TxOutcome) -> Value {
    match &outcome.status {
        CallStatus::Success(bytes) => serde_json::from_slice(bytes).unwrap(),
        CallStatus::Failure(message) => panic!("the user's call failed: {message}"),
    }
}

fn event(outcome: &TxOutcome, name: &str) -> Value {
    outcome
        .events()
        .into_iter()
        .find(|e| e["event"] == name)
        .map(|e| e["data"][0].clone())
        .unwrap_or_else(|| panic!("no {name} event in {:?}", outcome.events()))
}

fn tokens_burnt(outcome: &TxOutcome) -> u128 {
    std::iter::once(&outcome.outcome.transaction_outcome)
        .chain(&outcome.outcome.receipts_outcome)
        .map(|o| o.outcome.tokens_burnt.as_yoctonear())
        .sum()
}

async fn finished(api: &Api<ExecutionRequest>, name: &str) -> ExecutionRequestStatus {
    wait_for(&format!("{name} to finish"), || async {
        let status = api.get(name).await.ok()?.status?;
        status
            .phase
            .is_some_and(Phase::is_terminal)
            .then_some(status)
    })
    .await
}

fn condition_reason(status: &ExecutionRequestStatus, kind: &str) -> String {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| c.reason.clone())
        .unwrap_or_default()
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

    // Cached now, and an output over the 1024-byte yield payload: the two-step path.
    let large = "0123456789abcdef".repeat(200);
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
        .get(outlayer_operator::watcher::CURSOR_CONFIG_MAP)
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

    // With the operator: an uncached compile cannot fit, so nothing starts and the request expires.
    let operator = net.start_operator(net.config());
    let outcome = net.request("too late to compile").await.unwrap();
    let status = finished(&net.executions(), "req-1").await;
    assert_eq!(status.phase, Some(Phase::Expired));
    assert_eq!(condition_reason(&status, "Succeeded"), "NoTimeToCompile");
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
    operator.stop().await;
}

#[tokio::test]
async fn a_report_cut_short_by_a_crash_and_rpc_faults_is_sent_exactly_once() {
    let net = ChainEnv::start(Duration::from_millis(300)).await;
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
        assert_eq!(returned(&outcome), format!("request {i}"));
    }
    chaos.await.unwrap();
    let stats = net.view("get_stats", json!({})).await;
    assert_eq!(stats["successful"], 101, "{stats}");
    assert_eq!(stats["failed"], 0, "{stats}");
    assert_eq!(stats["timed_out"], 0, "{stats}");
    assert_eq!(stats["pending"], 0, "{stats}");
    operator.stop().await;
}
