//! Sealed secrets end to end on the real control plane and the localnet: the operator creates its
//! keys and publishes the public key (ConfigMap and contract); a secret sealed for the env-reader's
//! repository reaches its execution as environment variables, from the cluster and from the
//! contract's store; the same ciphertext under another owner or profile, a tampered one and a
//! NearBalance condition above the requester's balance are refused with a reason and nothing else;
//! after a key rotation old ciphertexts still open; no ephemeral Secret outlives its pod; and no
//! secret value appears in any log (operator and node agent, every level), Event or status.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::chain::*;
use common::{NAMESPACE, wait_for};
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::api::{Api, ListParams, PostParams};
use near_primitives::types::{Balance, Gas};
use outlayer_contract::AccessCondition;
use outlayer_operator::crd::{ExecutionRequest, Phase};
use outlayer_operator::sealing::keys::{
    DEFAULT_PUBKEY_CONFIG_MAP, KeyStore, KeyStoreConfig, published_key,
};
use outlayer_operator::sealing::manifest::SealedSecret;
use outlayer_operator::sealing::{Plaintext, Scope, seal};
use serde_json::{Value, json};

const ENV_READER: &str = "https://github.com/outlayer/env-reader";

/// Every log line of this test process (operator and node agent run in it), at every level.
#[derive(Clone, Default)]
struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl Write for CapturedLogs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl CapturedLogs {
    fn install() -> Self {
        let logs = Self::default();
        let writer = logs.clone();
        tracing_subscriber::fmt()
            // Every level of our code and of the Kubernetes client; the rest at debug, except the
            // wasm compilers and the HTTP stack's frame dumps (gigabytes at trace, none of it ours).
            .with_env_filter(
                "debug,outlayer_operator=trace,e2e_node_agent=trace,e2e_cluster=trace,kube=trace,\
                 kube_client=trace,kube_runtime=trace,near_jsonrpc_client=trace,\
                 cranelift_codegen=info,wasmtime=info,wasmtime_cranelift=info,near_vm_runner=info,\
                 h2=info,hyper=info,hyper_util=info,tower=info,rustls=info",
            )
            .with_writer(move || writer.clone())
            .init();
        logs
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A value nobody could have typed: a hit is a leak, not a coincidence.
fn unique(prefix: &str) -> String {
    let mut bytes = [0u8; 12];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).unwrap();
    format!("{prefix}-{}", hex::encode(bytes))
}

fn secrets_ref(owner: &str, profile: &str) -> Option<Value> {
    Some(json!({"account_id": owner, "profile": profile}))
}

fn failure_reason(execution: &ExecutionRequest) -> String {
    let status = execution.status.as_ref().unwrap();
    status
        .conditions
        .iter()
        .find(|c| c.type_ == "Succeeded")
        .map(|c| c.reason.clone())
        .unwrap_or_default()
}

#[tokio::test]
async fn sealed_secrets_reach_only_the_executions_allowed_to_see_them() {
    let logs = CapturedLogs::install();
    let net = ChainEnv::start(Duration::from_millis(500)).await;
    let client = net.env.cluster.client();
    let operator = net.start_operator(net.config());
    let env_commit = common::git(
        &net.repos.path().join("outlayer").join("env-reader"),
        &["rev-parse", "main"],
    );
    let code = json!({"repo": ENV_READER, "commit": env_commit});

    // First start: a key pair, published in a ConfigMap and on the contract.
    let key = wait_for("the published sealing key", || async {
        published_key(client.clone(), NAMESPACE, DEFAULT_PUBKEY_CONFIG_MAP)
            .await
            .ok()?
    })
    .await;
    wait_for("the key on the contract", || async {
        let on_chain = net.view("get_secrets_pubkey", json!({})).await;
        (on_chain == key.to_published()).then_some(())
    })
    .await;

    let api_key = unique("ak");
    let password = unique("pw");
    let plaintext = Plaintext::from_pairs([
        ("API_KEY", api_key.as_str()),
        ("DB_PASSWORD", password.as_str()),
    ])
    .unwrap();
    let alice_only = AccessCondition::Whitelist {
        accounts: vec!["alice.localnet".parse().unwrap()],
    };
    let scope = |owner: &str, profile: &str| Scope::new(owner, ENV_READER, None, profile).unwrap();
    let sealed_prod = seal(&key, &scope("alice.localnet", "prod"), &plaintext).unwrap();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    let put = |sealed: SealedSecret| {
        let secrets = secrets.clone();
        async move {
            secrets
                .create(&PostParams::default(), &sealed.to_secret(Some(NAMESPACE)))
                .await
                .unwrap();
        }
    };
    put(SealedSecret {
        scope: scope("alice.localnet", "prod"),
        access: alice_only.clone(),
        sealed: sealed_prod.clone(),
    })
    .await;
    // The same ciphertext filed under another owner and another profile; a tampered one.
    put(SealedSecret {
        scope: scope("bob.localnet", "prod"),
        access: AccessCondition::AllowAll,
        sealed: sealed_prod.clone(),
    })
    .await;
    put(SealedSecret {
        scope: scope("alice.localnet", "staging"),
        access: alice_only.clone(),
        sealed: sealed_prod.clone(),
    })
    .await;
    let mut tampered = seal(&key, &scope("alice.localnet", "tampered"), &plaintext).unwrap();
    let last = tampered.len() - 1;
    tampered[last] ^= 0x01;
    put(SealedSecret {
        scope: scope("alice.localnet", "tampered"),
        access: alice_only.clone(),
        sealed: tampered,
    })
    .await;
    // A balance no test account has.
    put(SealedSecret {
        scope: scope("alice.localnet", "rich"),
        access: AccessCondition::NearBalance {
            min: near_sdk::json_types::U128(10u128.pow(33)),
        },
        sealed: seal(&key, &scope("alice.localnet", "rich"), &plaintext).unwrap(),
    })
    .await;

    // Allowed: the guest sees the secret in its environment.
    let outcome = net
        .request_code(
            code.clone(),
            "API_KEY",
            secrets_ref("alice.localnet", "prod"),
        )
        .await
        .unwrap();
    let output: Value = serde_json::from_str(returned(&outcome).as_str().unwrap()).unwrap();
    assert_eq!(output["API_KEY"], api_key.as_str());
    let executions = net.executions();
    let done = finished(&executions, "req-0").await;
    assert_eq!(done.phase, Some(Phase::Succeeded), "{done:?}");

    // Refused, each with a reason that names no value.
    for (id, owner, profile, reason) in [
        (1, "bob.localnet", "prod", "SecretsUnreadable"),
        (2, "alice.localnet", "staging", "SecretsUnreadable"),
        (3, "alice.localnet", "tampered", "SecretsUnreadable"),
        (4, "alice.localnet", "rich", "SecretsAccessDenied"),
        (5, "alice.localnet", "missing", "SecretsNotFound"),
    ] {
        let outcome = net
            .request_code(code.clone(), "API_KEY", secrets_ref(owner, profile))
            .await
            .unwrap();
        assert_eq!(returned(&outcome), Value::Null, "{owner}/{profile}");
        let name = format!("req-{id}");
        finished(&executions, &name).await;
        let execution = executions.get(&name).await.unwrap();
        assert_eq!(
            execution.status.as_ref().unwrap().phase,
            Some(Phase::Failed)
        );
        assert_eq!(failure_reason(&execution), reason, "{owner}/{profile}");
    }
    let denied = executions.get("req-4").await.unwrap();
    let message = denied.status.unwrap().message.unwrap();
    assert!(
        !message.contains("1000000000000000000000000000000000"),
        "{message}"
    );

    // From the contract's store, sealed offline with the key the contract publishes.
    let on_chain_key = outlayer_operator::sealing::SealingKey::parse(
        net.view("get_secrets_pubkey", json!({}))
            .await
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let chain_scope = scope("alice.localnet", "chain");
    let record = SealedSecret {
        scope: chain_scope.clone(),
        access: alice_only.clone(),
        sealed: seal(&on_chain_key, &chain_scope, &plaintext).unwrap(),
    };
    net.client_as("alice.localnet")
        .call_function(
            &"outlayer.localnet".parse().unwrap(),
            "store_secrets",
            &record.to_store_secrets_args().unwrap(),
            Gas::from_teragas(30),
            Balance::from_yoctonear(NEAR / 10),
        )
        .await
        .unwrap();
    let outcome = net
        .request_code(
            code.clone(),
            "API_KEY",
            secrets_ref("alice.localnet", "chain"),
        )
        .await
        .unwrap();
    let output: Value = serde_json::from_str(returned(&outcome).as_str().unwrap()).unwrap();
    assert_eq!(output["API_KEY"], api_key.as_str());

    // No ephemeral Secret outlives its pod.
    wait_for("no unsealed Secret left", || async {
        let list = secrets
            .list(&ListParams::default().fields("type=outlayer.dev/unsealed"))
            .await
            .ok()?;
        list.items.is_empty().then_some(())
    })
    .await;

    // Rotation: a new current key; ciphertexts sealed to the old one still open.
    operator.stop().await;
    let mut store_config = KeyStoreConfig::new(NAMESPACE);
    store_config.rotation_period = Some(Duration::from_secs(24 * 3600));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let rotated = KeyStore::new(client.clone(), store_config)
        .ensure_at(now + 2 * 24 * 3600, None)
        .await
        .unwrap();
    assert_ne!(rotated.keyring.current().sealing_key(), key);
    let operator = net.start_operator(net.config());
    let new_key = wait_for("the rotated key published", || async {
        let published = published_key(client.clone(), NAMESPACE, DEFAULT_PUBKEY_CONFIG_MAP)
            .await
            .ok()??;
        (published != key).then_some(published)
    })
    .await;
    assert_eq!(new_key, rotated.keyring.current().sealing_key());
    let outcome = net
        .request_code(
            code.clone(),
            "DB_PASSWORD_IS_NOT_ASKED",
            secrets_ref("alice.localnet", "prod"),
        )
        .await
        .unwrap();
    let output: Value = serde_json::from_str(returned(&outcome).as_str().unwrap()).unwrap();
    assert_eq!(output["DB_PASSWORD_IS_NOT_ASKED"], Value::Null);
    let done = finished(&executions, "req-7").await;
    assert_eq!(
        done.phase,
        Some(Phase::Succeeded),
        "an old ciphertext opens after rotation: {done:?}"
    );

    // Secrets stored for any branch reach only the repository's own commits: a commit that only a
    // pull-request ref holds (a fork's code) is built and run, but gets no secrets.
    let mirror = net.repos.path().join("outlayer").join("env-reader");
    common::git(&mirror, &["checkout", "-q", "-b", "pr-1"]);
    common::git(
        &mirror,
        &["commit", "-q", "--allow-empty", "-m", "from a fork"],
    );
    let forked = common::git(&mirror, &["rev-parse", "HEAD"]);
    common::git(&mirror, &["update-ref", "refs/pull/1/head", &forked]);
    common::git(&mirror, &["checkout", "-q", "main"]);
    common::git(&mirror, &["branch", "-q", "-D", "pr-1"]);
    let outcome = net
        .request_code(
            json!({"repo": ENV_READER, "commit": forked}),
            "API_KEY",
            secrets_ref("alice.localnet", "prod"),
        )
        .await
        .unwrap();
    assert_eq!(returned(&outcome), Value::Null);
    finished(&executions, "req-8").await;
    let forked_run = executions.get("req-8").await.unwrap();
    assert_eq!(failure_reason(&forked_run), "SecretsAccessDenied");
    let message = forked_run.status.unwrap().message.unwrap();
    assert!(message.contains("not on a branch or tag"), "{message}");

    // WasmHash pins a secret to one build: another module is refused, this one admitted.
    let module = done.wasm_sha256.clone().unwrap();
    for (profile, sha256) in [("pinned-elsewhere", "ab".repeat(32)), ("pinned", module)] {
        let pinned_scope = scope("alice.localnet", profile);
        put(SealedSecret {
            scope: pinned_scope.clone(),
            access: AccessCondition::WasmHash { sha256 },
            sealed: seal(&new_key, &pinned_scope, &plaintext).unwrap(),
        })
        .await;
    }
    let outcome = net
        .request_code(
            code.clone(),
            "API_KEY",
            secrets_ref("alice.localnet", "pinned-elsewhere"),
        )
        .await
        .unwrap();
    assert_eq!(returned(&outcome), Value::Null);
    finished(&executions, "req-9").await;
    assert_eq!(
        failure_reason(&executions.get("req-9").await.unwrap()),
        "SecretsAccessDenied"
    );
    let outcome = net
        .request_code(
            code.clone(),
            "API_KEY",
            secrets_ref("alice.localnet", "pinned"),
        )
        .await
        .unwrap();
    let output: Value = serde_json::from_str(returned(&outcome).as_str().unwrap()).unwrap();
    assert_eq!(
        output["API_KEY"],
        api_key.as_str(),
        "the pinned module sees it"
    );
    operator.stop().await;

    // Never leaked: the password was never printed by any guest, so it must appear nowhere; the API
    // key only in the outputs of the executions that printed it.
    // The localnet runs in this process too: it logs receipts, whose values are public on chain (the
    // guest chose to print the API key there). It must still never see the password.
    let text = logs.text();
    println!("scanning {} bytes of logs", text.len());
    for line in text.lines() {
        let masked = || {
            line.replace(&password, "<SECRET>")
                .replace(&api_key, "<SECRET>")
        };
        assert!(
            !line.contains(&password),
            "the password leaked into a log line: {}",
            masked()
        );
        assert!(
            !line.contains(&api_key) || line.contains("e2e_localnet::"),
            "the API key leaked into a log line: {}",
            masked()
        );
    }
    drop(text);
    let mut haystacks = Vec::new();
    let log_dir = net.env.agent.state_dir().join("logs");
    for entry in walk(&log_dir) {
        haystacks.push((
            entry.display().to_string(),
            std::fs::read_to_string(&entry).unwrap_or_default(),
        ));
    }
    let events: Api<Event> = Api::all(client.clone());
    for event in events.list(&ListParams::default()).await.unwrap().items {
        haystacks.push((
            "an Event".to_string(),
            serde_json::to_string(&event).unwrap(),
        ));
    }
    for mut execution in executions.list(&ListParams::default()).await.unwrap().items {
        if let Some(status) = execution.status.as_mut() {
            status.output = None;
        }
        haystacks.push((
            format!(
                "ExecutionRequest {}",
                execution.metadata.name.clone().unwrap_or_default()
            ),
            serde_json::to_string(&execution).unwrap(),
        ));
    }
    assert!(haystacks.len() > 10, "nothing to scan?");
    for (place, text) in &haystacks {
        for (what, value) in [("the password", &password), ("the API key", &api_key)] {
            let hits: Vec<String> = text
                .lines()
                .filter(|line| line.contains(value.as_str()))
                .take(3)
                .map(|line| line.replace(value.as_str(), "<SECRET>"))
                .collect();
            assert!(
                hits.is_empty(),
                "{what} leaked into {place}:\n{}",
                hits.join("\n")
            );
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return files;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}
