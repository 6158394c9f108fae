//! The `seal` and `pubkey` subcommands. `main.rs` adds them as enum variants and calls [`run_seal`] /
//! [`run_pubkey`]. Results go to stdout; stderr never carries anything secret (errors name fields and
//! reasons, not values).

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Args, ValueEnum};
use outlayer_contract::AccessCondition;
use outlayer_contract::validation::validate_access_condition;
use serde_json::json;

use super::crypto::{SealingKey, seal};
use super::keys::{DEFAULT_PUBKEY_CONFIG_MAP, published_key};
use super::manifest::SealedSecret;
use super::plaintext::{MAX_PLAINTEXT_BYTES, Plaintext};
use super::scope::Scope;
use crate::chain::{ChainClient, ChainConfig};

/// Where the operator's public key comes from (at most one; `seal` needs one, `pubkey` defaults to
/// the cluster).
#[derive(Args, Debug, Clone, Default)]
#[group(multiple = false)]
pub struct KeySourceArgs {
    /// A file holding the published key (`x25519:<key id>:<base64>`, as `outlayer-operator pubkey`
    /// prints it): sealing offline.
    #[arg(long, value_name = "FILE")]
    pub pubkey: Option<PathBuf>,
    /// Read the ConfigMap the operator publishes in --namespace (uses the current kubeconfig).
    #[arg(long)]
    pub from_cluster: bool,
    /// Read the contract's `get_secrets_pubkey` (needs --rpc-url and --contract-id).
    #[arg(long)]
    pub from_contract: bool,
}

/// How to reach the cluster or the chain for `--from-cluster` / `--from-contract`.
#[derive(Args, Debug, Clone)]
pub struct KeyLocationArgs {
    /// The operator's namespace: where its public-key ConfigMap lives (and the sealed Secret goes).
    #[arg(long, env = "OUTLAYER_NAMESPACE")]
    pub namespace: Option<String>,
    /// Name of the operator's public-key ConfigMap.
    #[arg(long, default_value = DEFAULT_PUBKEY_CONFIG_MAP)]
    pub pubkey_config_map: String,
    /// NEAR JSON-RPC endpoint(s) for --from-contract; repeat or comma-separate.
    #[arg(
        long = "rpc-url",
        env = "OUTLAYER_RPC_URLS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub rpc_urls: Vec<String>,
    /// The OutLayer contract's account, for --from-contract.
    #[arg(long, env = "OUTLAYER_CONTRACT_ID")]
    pub contract_id: Option<String>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SealFormat {
    /// A Kubernetes Secret of type outlayer.dev/sealed (YAML), safe to commit.
    #[default]
    K8s,
    /// The JSON arguments of the contract's `store_secrets` (the ciphertext in base64 inside).
    Near,
    /// The base64 ciphertext alone (`store_secrets`' `encrypted_secrets_base64`).
    Base64,
}

/// `outlayer-operator seal --owner alice.near --repo github.com/alice/app [--branch main] --profile
/// prod [--access JSON] (--pubkey FILE | --from-cluster | --from-contract) [--format k8s|near|base64]
/// < secrets.json`
#[derive(Args, Debug, Clone)]
pub struct SealArgs {
    /// The NEAR account that owns the secrets (the secretsRef's accountId).
    #[arg(long)]
    pub owner: String,
    /// The repository whose code may see them: github.com/<owner>/<name> (https:// and .git accepted).
    #[arg(long)]
    pub repo: String,
    /// Only executions of this branch; omitted: every branch.
    #[arg(long)]
    pub branch: Option<String>,
    /// The name requests use in secretsRef.profile (e.g. prod, staging): one bundle per profile.
    #[arg(long)]
    pub profile: String,
    /// Who may use them: the contract's AccessCondition as JSON, e.g. '"AllowAll"' or
    /// '{"NearBalance":{"min":"1000000000000000000000000"}}'. Default: only the owner
    /// ({"Whitelist":{"accounts":[<owner>]}}).
    #[arg(long, value_name = "JSON")]
    pub access: Option<String>,
    #[command(flatten)]
    pub source: KeySourceArgs,
    #[command(flatten)]
    pub location: KeyLocationArgs,
    #[arg(long, value_enum, default_value_t = SealFormat::K8s)]
    pub format: SealFormat,
}

/// `outlayer-operator pubkey [--from-cluster | --from-contract | --pubkey FILE]`: prints the current
/// public key as `x25519:<key id>:<base64>`.
#[derive(Args, Debug, Clone)]
pub struct PubkeyArgs {
    #[command(flatten)]
    pub source: KeySourceArgs,
    #[command(flatten)]
    pub location: KeyLocationArgs,
}

/// Reads the secrets JSON from stdin, seals it and prints the chosen format.
pub async fn run_seal(args: SealArgs) -> anyhow::Result<()> {
    if args.source.pubkey.is_none() && !args.source.from_cluster && !args.source.from_contract {
        bail!(
            "seal needs the operator's public key: --pubkey FILE, --from-cluster or --from-contract"
        );
    }
    let key = resolve_key(&args.source, &args.location).await?;
    let mut input = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_PLAINTEXT_BYTES as u64 + 1)
        .read_to_end(&mut input)
        .context("read the secrets JSON from stdin")?;
    let input = zeroize::Zeroizing::new(input);
    let output = seal_output(&args, &key, &input)?;
    println!("{}", output.trim_end());
    Ok(())
}

pub async fn run_pubkey(args: PubkeyArgs) -> anyhow::Result<()> {
    let mut source = args.source;
    if source.pubkey.is_none() && !source.from_contract {
        source.from_cluster = true;
    }
    let key = resolve_key(&source, &args.location).await?;
    println!("{}", key.to_published());
    Ok(())
}

/// The pure part of `seal`: validates, seals and renders. Errors name fields, never values.
pub fn seal_output(args: &SealArgs, key: &SealingKey, input: &[u8]) -> anyhow::Result<String> {
    let scope = Scope::new(
        &args.owner,
        &args.repo,
        args.branch.as_deref(),
        &args.profile,
    )?;
    let access = match &args.access {
        Some(json) => serde_json::from_str::<AccessCondition>(json)
            .map_err(|e| anyhow::anyhow!("--access is not an AccessCondition: {e}"))?,
        None => AccessCondition::Whitelist {
            accounts: vec![scope.owner().parse().context("owner account id")?],
        },
    };
    validate_access_condition(&access).map_err(|e| anyhow::anyhow!("--access: {e}"))?;
    let plaintext = Plaintext::from_json(input).context("secrets JSON on stdin")?;
    let sealed = SealedSecret {
        sealed: seal(key, &scope, &plaintext)?,
        scope,
        access,
    };
    Ok(match args.format {
        SealFormat::K8s => sealed.to_yaml(args.location.namespace.as_deref())?,
        SealFormat::Near => serde_json::to_string(&sealed.to_store_secrets_args()?)?,
        SealFormat::Base64 => sealed.to_store_secrets_args()?["encrypted_secrets_base64"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
    })
}

async fn resolve_key(
    source: &KeySourceArgs,
    location: &KeyLocationArgs,
) -> anyhow::Result<SealingKey> {
    if let Some(path) = &source.pubkey {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("read the public key file {}", path.display()))?;
        return SealingKey::parse(&text)
            .with_context(|| format!("public key file {}", path.display()));
    }
    if source.from_contract {
        let Some(contract) = &location.contract_id else {
            bail!("--from-contract needs --contract-id");
        };
        if location.rpc_urls.is_empty() {
            bail!("--from-contract needs --rpc-url");
        }
        let contract = contract
            .parse()
            .with_context(|| format!("--contract-id {contract:?} is not a NEAR account id"))?;
        let client = ChainClient::new(ChainConfig::new(location.rpc_urls.clone(), contract), None)?;
        let published: Option<String> = client
            .view_call(client.contract_id(), "get_secrets_pubkey", &json!({}))
            .await
            .context("read get_secrets_pubkey")?;
        let Some(published) = published else {
            bail!(
                "the contract {} has no secrets public key yet (set_secrets_pubkey)",
                client.contract_id()
            );
        };
        return SealingKey::parse(&published).context("the contract's secrets public key");
    }
    let Some(namespace) = &location.namespace else {
        bail!("--from-cluster needs --namespace (the operator's namespace)");
    };
    let client = kube::Client::try_default()
        .await
        .context("connect to the cluster (kubeconfig or in-cluster config)")?;
    published_key(client, namespace, &location.pubkey_config_map)
        .await?
        .with_context(|| {
            format!(
                "ConfigMap {namespace}/{} holds no current public key: has the operator started?",
                location.pubkey_config_map
            )
        })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::sealing::crypto::{KeyId, KeyPair, Keyring, open};

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }

    #[derive(clap::Subcommand)]
    enum Command {
        Seal(SealArgs),
        Pubkey(PubkeyArgs),
    }

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_from(std::iter::once("outlayer-operator").chain(args.iter().copied()))
            .map(|cli| cli.command)
    }

    fn seal_args(extra: &[&str]) -> SealArgs {
        let mut args = vec![
            "seal",
            "--owner",
            "alice.near",
            "--repo",
            "github.com/alice/app",
            "--profile",
            "prod",
            "--pubkey",
            "/k",
        ];
        args.extend_from_slice(extra);
        match parse(&args).unwrap() {
            Command::Seal(args) => args,
            Command::Pubkey(_) => unreachable!(),
        }
    }

    #[test]
    fn key_sources_are_exclusive() {
        assert!(parse(&["pubkey", "--from-cluster", "--from-contract"]).is_err());
        assert!(parse(&["pubkey"]).is_ok());
        assert!(
            parse(&[
                "seal",
                "--owner",
                "a.near",
                "--repo",
                "github.com/a/b",
                "--profile",
                "p",
                "--pubkey",
                "f",
                "--from-cluster"
            ])
            .is_err()
        );
    }

    #[test]
    fn seal_prints_a_manifest_that_opens_with_the_operator_key() {
        let pair = KeyPair::generate(KeyId::new("k1").unwrap()).unwrap();
        let keyring = Keyring::new(vec![pair.clone()], &pair.id).unwrap();
        let args = seal_args(&["--branch", "main", "--namespace", "apps"]);
        let yaml = seal_output(&args, &pair.sealing_key(), br#"{"API_KEY":"top-secret"}"#).unwrap();
        assert!(!yaml.contains("top-secret"));
        let secret: k8s_openapi::api::core::v1::Secret = serde_saphyr::from_str(&yaml).unwrap();
        assert_eq!(secret.metadata.namespace.as_deref(), Some("apps"));
        let sealed = SealedSecret::from_secret(&secret).unwrap();
        assert_eq!(
            sealed.access,
            AccessCondition::Whitelist {
                accounts: vec!["alice.near".parse().unwrap()]
            }
        );
        let opened = open(&keyring, &sealed.scope, &sealed.sealed).unwrap();
        assert_eq!(opened.get("API_KEY"), Some("top-secret"));
    }

    #[test]
    fn near_format_is_store_secrets_arguments() {
        let pair = KeyPair::generate(KeyId::new("k1").unwrap()).unwrap();
        let args = seal_args(&["--format", "near", "--access", r#""AllowAll""#]);
        let out = seal_output(&args, &pair.sealing_key(), br#"{"A":"1"}"#).unwrap();
        let value: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(value["access"], "AllowAll");
        assert_eq!(value["profile"], "prod");
        let b64 = seal_output(
            &seal_args(&["--format", "base64"]),
            &pair.sealing_key(),
            br#"{"A":"1"}"#,
        )
        .unwrap();
        outlayer_contract::validation::validate_encrypted_secrets(&b64).unwrap();
    }

    #[test]
    fn bad_input_is_refused_without_echoing_it() {
        let pair = KeyPair::generate(KeyId::new("k1").unwrap()).unwrap();
        let key = pair.sealing_key();
        let error = seal_output(&seal_args(&[]), &key, br#"{"PATH":"hunter2"}"#).unwrap_err();
        let shown = format!("{error:#}");
        assert!(
            shown.contains("PATH") && !shown.contains("hunter2"),
            "{shown}"
        );
        let error = seal_output(&seal_args(&[]), &key, br#"{"A":hunter2}"#).unwrap_err();
        assert!(!format!("{error:#}").contains("hunter2"));
        let error =
            seal_output(&seal_args(&["--access", r#"{"Nope":1}"#]), &key, b"{}").unwrap_err();
        assert!(format!("{error:#}").contains("--access"));
    }
}
