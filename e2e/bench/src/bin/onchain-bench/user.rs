//! The user's side: one `request_execution` of the echo guest, followed until it settles.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use near_primitives::types::{Balance, Gas};
use outlayer_operator::chain::{CallStatus, ChainClient, ChainError, TxOutcome};
use serde_json::{Value, json};

use crate::setup::{CONTRACT, REPO, USER, account};

/// Covers the estimate for the limits below, as in the operator's on-chain tests; the contract
/// refunds what the run does not cost.
const DEPOSIT: u128 = 100_000_000_000_000_000_000_000;

/// A request the contract settled (answered, or refunded after its yield timed out).
pub struct Settled {
    pub request_id: u64,
    pub outcome: TxOutcome,
    /// `Ok` when the user's call returned the echoed input; else what it returned instead.
    pub answered: Result<(), String>,
}

impl Settled {
    pub fn execution_name(&self) -> String {
        format!("req-{}", self.request_id)
    }
}

/// Sends the request and waits for the user's transaction to finish, which happens only once the
/// request is answered or timed out: `call_function` may give up waiting first (`Unconfirmed`), and
/// then the transaction is followed by its hash, as a wallet would.
/// `compile_only`: the request asks only to compile (`params.compile_only`); with the module
/// cached, nothing runs and it is answered with the module's hash.
pub async fn request(
    user: &ChainClient,
    commit: &str,
    input: &str,
    compile_only: bool,
    timeout: Duration,
) -> anyhow::Result<Settled> {
    let contract = account(CONTRACT)?;
    let mut args = json!({
        "code_source": {"repo": REPO, "commit": commit},
        "resource_limits": {"max_instructions": 1_000_000_000u64, "max_memory_mb": 64,
                            "max_execution_seconds": 10},
        "input_data": input,
        "response_format": "Text"
    });
    if compile_only {
        args["params"] = json!({"compile_only": true});
    }
    let deadline = Instant::now() + timeout;
    let outcome = match user
        .call_function(
            &contract,
            "request_execution",
            &args,
            Gas::from_teragas(50),
            Balance::from_yoctonear(DEPOSIT),
        )
        .await
    {
        Ok(outcome) => outcome,
        Err(ChainError::Unconfirmed { tx_hash, .. }) => {
            let sender = account(USER)?;
            loop {
                match user.transaction_status(tx_hash, &sender).await {
                    Ok(Some(outcome)) => break outcome,
                    Ok(None) | Err(_) if Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(200)).await
                    }
                    Ok(None) => bail!("request {tx_hash} ({input:?}) is unknown to the localnet"),
                    Err(error) => bail!(
                        "request {tx_hash} ({input:?}) did not settle within {} s: {error}",
                        timeout.as_secs()
                    ),
                }
            }
        }
        Err(error) => return Err(error).with_context(|| format!("request_execution({input:?})")),
    };
    let request_id = outcome
        .events()
        .iter()
        .find(|e| e["event"] == "execution_requested")
        .and_then(|e| e["data"][0]["request_id"].as_u64())
        .with_context(|| {
            format!(
                "request_execution({input:?}) in {} stored no request: {:?}",
                outcome.tx_hash, outcome.status
            )
        })?;
    let answered = match &outcome.status {
        CallStatus::Success(bytes) => match serde_json::from_slice::<Value>(bytes) {
            Ok(Value::String(output)) if output == input && !compile_only => Ok(()),
            Ok(answer) if compile_only && answer["wasm_sha256"].is_string() => Ok(()),
            Ok(other) => Err(format!("returned {other}")),
            Err(_) => Err(format!("returned {}", String::from_utf8_lossy(bytes))),
        },
        CallStatus::Failure(message) => Err(format!("failed: {message}")),
    };
    Ok(Settled {
        request_id,
        outcome,
        answered,
    })
}
