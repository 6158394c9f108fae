//! Keeps the operator's sealing keys (leader only): loads or creates them on start, rotates them when
//! the current key is older than the rotation period, hands them to the execution controller, and
//! publishes the current public key on the contract (`set_secrets_pubkey`) when it changed there.

use std::sync::Arc;
use std::time::Duration;

use tracing::{error, info, warn};

use super::keys::{KeyStore, KeyStoreConfig, KeyringChange};
use crate::context::Context;

/// How often the keys are checked for rotation once loaded.
const CHECK_INTERVAL: Duration = Duration::from_secs(10 * 60);
/// How soon a failed load (API error, or keys missing while sealed secrets exist) is tried again.
const RETRY_INTERVAL: Duration = Duration::from_secs(30);

/// Runs until `shutdown` resolves.
pub async fn run(ctx: Arc<Context>, namespace: String, shutdown: impl Future<Output = ()>) {
    let mut config = KeyStoreConfig::new(&namespace);
    config.rotation_period = ctx.config.sealing_key_rotation;
    let store = KeyStore::new(ctx.client.clone(), config);
    tokio::pin!(shutdown);
    loop {
        // Read first: with no keyring in the cluster, a key on the contract means users have sealed
        // to it, and generating a new one would strand their secrets.
        let contract_key = match &ctx.chain {
            None => None,
            Some(chain) => match chain.get_secrets_pubkey().await {
                Ok(key) => key,
                Err(error) => {
                    warn!(%error, "reading the contract's sealing public key failed; retrying");
                    tokio::select! {
                        () = &mut shutdown => return,
                        () = tokio::time::sleep(RETRY_INTERVAL) => {}
                    }
                    continue;
                }
            },
        };
        let wait = match store.ensure_for_contract(contract_key.as_deref()).await {
            Ok(ensured) => {
                let current = ensured.keyring.current().sealing_key().to_published();
                match &ensured.change {
                    KeyringChange::Created => info!(key = %current, "sealing key created"),
                    KeyringChange::Rotated { from, to } => {
                        info!(%from, %to, "sealing key rotated; old keys still open old secrets")
                    }
                    KeyringChange::Unchanged => {}
                }
                ctx.set_keyring(ensured.keyring);
                publish_on_contract(&ctx, &current).await;
                CHECK_INTERVAL
            }
            Err(error) => {
                // Executions that need secrets wait (and say why) until this succeeds.
                error!(%error, "the sealing keys are unavailable");
                RETRY_INTERVAL
            }
        };
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Sets the contract's public key when it differs (first start, rotation, or changed by hand).
async fn publish_on_contract(ctx: &Context, current: &str) {
    let Some(chain) = &ctx.chain else {
        return;
    };
    match chain.get_secrets_pubkey().await {
        Ok(Some(published)) if published == current => {}
        Ok(_) => match chain.set_secrets_pubkey(current).await {
            Ok(outcome) => {
                info!(key = %current, tx_hash = %outcome.tx_hash, "sealing public key published on the contract")
            }
            Err(error) => warn!(%error, "publishing the sealing public key on the contract failed"),
        },
        Err(error) => warn!(%error, "reading the contract's sealing public key failed"),
    }
}
