//! A cluster plus a localnet with the real contract: what the on-chain tests share.

use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e_localnet::Localnet;
use kube::api::{Api, PostParams};
use near_primitives::types::{Balance, Gas};
use outlayer_operator::chain::{
    CallStatus, ChainClient, ChainConfig, ChainError, OperatorSigner, RetryPolicy, TxOutcome,
};
use outlayer_operator::config::OperatorConfig;
use outlayer_operator::context::Context;
use outlayer_operator::crd::{
    BUILD_TARGET_WASIP1, CompileJob, CompileJobSpec, CompileSource, ExecutionRequest,
    ExecutionRequestStatus, condition_status,
};
use outlayer_testkit::localnet::{outlayer_genesis, with_client_contract};
use serde_json::{Value, json};

pub use super::finished;
use super::{
    NAMESPACE, OperatorEnv, RunningOperator, echo_main_branch, git, operator_config,
    repositories_dir, start_operator, wait_for,
};

pub use outlayer_testkit::near::{NEAR, account, secret};

/// Covers the estimate and the storage of a pending request with an input of up to ~40 KB.
pub const DEPOSIT: u128 = NEAR / 2;
/// The repository as users name it; the operator fetches it from a local mirror.
pub const REPO: &str = "https://github.com/outlayer/echo";

/// A cluster with the operator's CRDs, a localnet with the contract, a user (alice, also the
/// contract's owner) and the operator's account, and the echo example in a git mirror.
pub struct ChainEnv {
    pub env: OperatorEnv,
    pub localnet: Localnet,
    pub repos: tempfile::TempDir,
    pub commit: String,
    pub block_time: Duration,
    /// One client for all of alice's calls: its clones share her nonce.
    pub alice: ChainClient,
}

impl ChainEnv {
    pub async fn start(block_time: Duration) -> Self {
        let env = OperatorEnv::start().await;
        let repos = repositories_dir();
        let repo = repos.path().join("outlayer").join("echo");
        echo_main_branch(&repo);
        let commit = git(&repo, &["rev-parse", "main"]);
        super::example_main_branch(
            &repos.path().join("outlayer").join("env-reader"),
            "env-reader",
        );
        let config = with_client_contract(outlayer_genesis(1000 * NEAR))
            .with_block_time(block_time)
            .with_tx_wait_timeout(Duration::from_secs(5));
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

    pub fn client_as(&self, name: &str) -> ChainClient {
        if name == "alice.localnet" {
            return self.alice.clone();
        }
        client_for(&self.localnet, name)
    }

    /// The operator as the tests run it: compiles through the mirror, plans with the localnet's
    /// block time, polls often.
    pub fn config(&self) -> OperatorConfig {
        let mut config = operator_config(self.repos.path());
        config.compiler.allowed_repo_prefixes = vec!["https://github.com/".to_string()];
        config.compiler.git_mirrors = vec![format!(
            "https://github.com/=file://{}/",
            self.repos.path().display()
        )];
        config.cache_mount_path = Some(self.env.cache.path().to_path_buf());
        // As `run --contract-id` sets it: guests read it as NEAR_CONTRACT_ID.
        config.contract_id = Some("outlayer.localnet".to_string());
        config.on_chain.expected_block_time = self.block_time;
        config.on_chain.poll_interval = Duration::from_millis(200);
        config.on_chain.pricing_sync_interval = Duration::from_secs(1);
        config.on_chain.compile_budget = Duration::from_secs(30);
        config.on_chain.report_margin = Duration::from_secs(2);
        config
    }

    pub fn start_operator(&self, config: OperatorConfig) -> RunningOperator {
        let ctx = Context::new(self.env.cluster.client(), config, Some("test".to_string()))
            .with_chain(Arc::new(self.client_as("operator.localnet")));
        start_operator(Arc::new(ctx))
    }

    /// Alice calls `request_execution`; the transaction stays open until the request is settled, so
    /// it runs in a task whose result is the user's final outcome.
    pub fn request(&self, input: &str) -> tokio::task::JoinHandle<TxOutcome> {
        self.request_code(json!({"repo": REPO, "commit": self.commit}), input, None)
    }

    /// A request for any code source (`{"repo", "commit"}`), optionally with a `secrets_ref`
    /// (`{"account_id", "profile"}`).
    pub fn request_code(
        &self,
        code_source: Value,
        input: &str,
        secrets_ref: Option<Value>,
    ) -> tokio::task::JoinHandle<TxOutcome> {
        let mut args = json!({
            "code_source": code_source,
            "resource_limits": {"max_instructions": 1_000_000_000u64, "max_memory_mb": 64,
                                "max_execution_seconds": 10},
            "input_data": input,
            "response_format": "Text"
        });
        if let Some(secrets_ref) = secrets_ref {
            args["secrets_ref"] = secrets_ref;
        }
        self.request_args(args)
    }

    /// Alice calls `request_execution` with exactly these arguments (e.g. OutLayer's `source`).
    pub fn request_args(&self, args: Value) -> tokio::task::JoinHandle<TxOutcome> {
        let alice = self.client_as("alice.localnet");
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

    pub async fn view(&self, method: &str, args: Value) -> Value {
        self.client_as("alice.localnet")
            .view_call(&account("outlayer.localnet"), method, &args)
            .await
            .unwrap()
    }

    pub async fn balance(&self, name: &str) -> u128 {
        self.client_as(name)
            .view_account(&account(name))
            .await
            .unwrap()
            .amount
            .as_yoctonear()
    }

    /// A CompileJob created ahead of time, as `kubectl apply` would: later requests hit the cache.
    pub async fn precompile(&self) {
        let source = CompileSource {
            repo: REPO.to_string(),
            commit: self.commit.clone(),
            build_target: BUILD_TARGET_WASIP1.to_string(),
        };
        let name = source.compile_job_name();
        let api: Api<CompileJob> = Api::namespaced(self.env.cluster.client(), NAMESPACE);
        api.create(
            &PostParams::default(),
            &CompileJob::new(&name, CompileJobSpec::git(source)),
        )
        .await
        .unwrap();
        wait_for("the precompiled module", || async {
            let status = api.get(&name).await.ok()?.status?;
            (condition_status(&status.conditions, "Ready") == Some(true)).then_some(())
        })
        .await;
    }

    pub fn executions(&self) -> Api<ExecutionRequest> {
        Api::namespaced(self.env.cluster.client(), NAMESPACE)
    }
}

pub fn client_for(localnet: &Localnet, name: &str) -> ChainClient {
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

pub fn returned(outcome: &TxOutcome) -> Value {
    match &outcome.status {
        CallStatus::Success(bytes) => serde_json::from_slice(bytes).unwrap(),
        CallStatus::Failure(message) => panic!("the user's call failed: {message}"),
    }
}

pub fn event(outcome: &TxOutcome, name: &str) -> Value {
    outcome
        .events()
        .into_iter()
        .find(|e| e["event"] == name)
        .map(|e| e["data"][0].clone())
        .unwrap_or_else(|| panic!("no {name} event in {:?}", outcome.events()))
}

pub fn tokens_burnt(outcome: &TxOutcome) -> u128 {
    std::iter::once(&outcome.outcome.transaction_outcome)
        .chain(&outcome.outcome.receipts_outcome)
        .map(|o| o.outcome.tokens_burnt.as_yoctonear())
        .sum()
}

pub fn condition_reason(status: &ExecutionRequestStatus, kind: &str) -> String {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}
