//! `secrets-bench`: what sealed secrets cost an execution (issue 7's benchmark). Two figures per bundle
//! size, on the local control plane:
//! - **operator time**: opening the sealed bundle with the keyring and building the ephemeral Secret
//!   (including its JSON encoding), in this process, no API calls — the goal is ≤ 5 ms;
//! - **with API round trips**: the operator's whole per-execution path — finding the sealed Secret
//!   (a list by type), authorizing, opening, creating the ephemeral Secret — plus deleting it after
//!   the pod, as the execution controller does.
//!
//! Prints; asserts nothing. Build profile matters: run with `--release` for production figures.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use e2e_bench::stats::summarize;
use e2e_cluster::Cluster;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use outlayer_contract::AccessCondition;
use outlayer_operator::chain::ChainClient;
use outlayer_operator::sealing::keys::{KeyStore, KeyStoreConfig};
use outlayer_operator::sealing::manifest::SealedSecret;
use outlayer_operator::sealing::{Plaintext, Scope, ephemeral_env_secret, open, seal, unseal};

const NAMESPACE: &str = "outlayer-secrets-bench";
const OWNER: &str = "alice.near";
const REPO: &str = "github.com/alice/app";

#[derive(Parser)]
#[command(
    name = "secrets-bench",
    about = "Measures unsealing an execution's secrets"
)]
struct Cli {
    /// Executions per bundle size.
    #[arg(long, default_value_t = 200)]
    runs: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    println!(
        "profile: {}",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    println!("[setup] starting the control plane");
    let cluster = Cluster::start()
        .await
        .context("start the local control plane (scripts/install-deps builds it)")?;
    cluster
        .create_namespace(NAMESPACE, &[])
        .await
        .context("create the bench namespace")?;
    let client = cluster.client();
    let keyring = KeyStore::new(client.clone(), KeyStoreConfig::new(NAMESPACE))
        .ensure()
        .await
        .context("create the sealing keys")?
        .keyring;
    let key = keyring.current().sealing_key();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    // A real owner for the ephemeral Secrets (the garbage collector deletes those of a missing one).
    let owner_map: ConfigMap = Api::namespaced(client.clone(), NAMESPACE)
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("bench-owner".to_string()),
                    ..ObjectMeta::default()
                },
                ..ConfigMap::default()
            },
        )
        .await
        .context("create the owner ConfigMap")?;
    let owner = OwnerReference {
        api_version: "v1".to_string(),
        kind: "ConfigMap".to_string(),
        name: "bench-owner".to_string(),
        uid: owner_map.metadata.uid.context("the owner has no uid")?,
        ..OwnerReference::default()
    };
    let requester: near_primitives::types::AccountId = OWNER.parse().context("owner account")?;

    let bundles = [
        (
            "2 variables, 60 B",
            Plaintext::from_pairs([("API_KEY", "k".repeat(30)), ("DB_URL", "u".repeat(30))])?,
        ),
        (
            "1 variable, 60 KiB",
            Plaintext::from_pairs([("BLOB", "b".repeat(60 * 1024))])?,
        ),
        (
            "500 variables, ~30 KiB",
            Plaintext::from_pairs((0..500).map(|i| (format!("VAR_{i}"), "v".repeat(50))))?,
        ),
    ];
    for (index, (label, plaintext)) in bundles.iter().enumerate() {
        let profile = format!("p{index}");
        let scope = Scope::new(OWNER, REPO, None, &profile)?;
        let sealed = seal(&key, &scope, plaintext)?;
        let record = SealedSecret {
            scope: scope.clone(),
            access: AccessCondition::Whitelist {
                accounts: vec![requester.clone()],
            },
            sealed: sealed.clone(),
        };
        secrets
            .create(&PostParams::default(), &record.to_secret(Some(NAMESPACE)))
            .await
            .context("store the sealed Secret")?;

        let mut operator_time = Vec::with_capacity(cli.runs);
        let mut round_trips = Vec::with_capacity(cli.runs);
        for run in 0..cli.runs {
            let name = format!("bench-{index}-{run}-env");
            let started = Instant::now();
            let opened = open(&keyring, &scope, &sealed)?;
            let secret =
                ephemeral_env_secret(&name, NAMESPACE, owner.clone(), BTreeMap::new(), &opened);
            let body = serde_json::to_vec(&secret)?;
            operator_time.push(started.elapsed());
            drop((opened, body));

            let started = Instant::now();
            let unsealed = unseal(
                client.clone(),
                NAMESPACE,
                None::<&ChainClient>,
                &keyring,
                &scope,
                &requester,
            )
            .await?;
            let secret = ephemeral_env_secret(
                &name,
                NAMESPACE,
                owner.clone(),
                BTreeMap::new(),
                &unsealed.plaintext,
            );
            secrets.create(&PostParams::default(), &secret).await?;
            secrets.delete(&name, &DeleteParams::default()).await?;
            round_trips.push(started.elapsed());
        }
        println!(
            "{label} (sealed {} bytes), {} executions:",
            sealed.len(),
            cli.runs
        );
        print_summary("  operator time (open + build the Secret)", &operator_time);
        print_summary(
            "  with API round trips (find, open, create, delete)",
            &round_trips,
        );
    }
    Ok(())
}

/// In milliseconds with microsecond precision: the figures are far below the seconds `Summary` prints.
fn print_summary(label: &str, samples: &[Duration]) {
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    match summarize(samples) {
        Some(s) => println!(
            "{label}: p50 {:.3} ms  p90 {:.3} ms  p99 {:.3} ms  max {:.3} ms  (n={})",
            ms(s.p50),
            ms(s.p90),
            ms(s.p99),
            ms(s.max),
            s.count
        ),
        None => println!("{label}: no samples"),
    }
}
