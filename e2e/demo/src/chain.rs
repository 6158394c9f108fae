//! The chain side: the localnet with the contract deployed and initialised, its accounts (the
//! contract's owner, the operator, a user), and the user's request as a wallet would send it.

use std::path::Path;
use std::time::{Duration, Instant};

use e2e_localnet::{InitCall, Localnet, LocalnetConfig};
use near_crypto::{KeyType, SecretKey};
use near_primitives::types::{AccountId, Balance, Gas};
use outlayer_operator::chain::{ChainClient, ChainConfig, ChainError, RetryPolicy, TxOutcome};
use serde_json::{Value, json};

use crate::{Error, Result};

pub const CONTRACT: &str = "outlayer.localnet";
/// The contract's owner: names the pricing manager. Not the user, so the user's balance shows only
/// what the user's own request cost.
pub const OWNER: &str = "owner.localnet";
pub const OPERATOR: &str = "operator.localnet";
pub const USER: &str = "alice.localnet";

const NEAR: u128 = 1_000_000_000_000_000_000_000_000;
/// NEAR's storage staking price (protocol `storage_amount_per_byte`): 1e19 yoctoNEAR per byte.
const STORAGE_PRICE_PER_BYTE: u128 = 10_000_000_000_000_000_000;
/// Bytes of a pending request beyond its input, repository and commit (ids, data id, sender, limits,
/// map keys), rounded up twice over: the contract states the exact figure only in its refusal, and
/// whatever is not needed is refunded with the rest of the deposit.
const REQUEST_STORAGE_OVERHEAD_BYTES: u128 = 1024;
/// An uncached request is also charged for its compile (`per_compile_ms_fee`), which
/// `estimate_execution_cost` does not cover (it knows only the limits): the deposit carries this much
/// compile time on top, refunded when unused. The operator's default compile budget.
pub const COMPILE_ALLOWANCE_MS: u128 = 60_000;
/// Gas for `request_execution`; the contract wants ≥ 30 Tgas (20 reserved for its callback).
const REQUEST_GAS_TGAS: u64 = 50;

/// Deterministic demo keys: this chain lives for one run on 127.0.0.1.
pub fn secret_key(account: &str) -> SecretKey {
    SecretKey::from_seed(KeyType::ED25519, account)
}

fn account(name: &str) -> Result<AccountId> {
    name.parse()
        .map_err(|e| Error::Unexpected(format!("account id {name:?}: {e}")))
}

/// yoctoNEAR as NEAR with up to 12 decimals, e.g. `0.001234 NEAR`.
pub fn yocto_to_near(yocto: u128) -> String {
    let whole = yocto / NEAR;
    let fraction = format!("{:024}", yocto % NEAR);
    let fraction = fraction[..12].trim_end_matches('0');
    if fraction.is_empty() {
        format!("{whole} NEAR")
    } else {
        format!("{whole}.{fraction} NEAR")
    }
}

/// The deposit the user attaches and what it is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deposit {
    /// `estimate_execution_cost(limits)`.
    pub estimate: u128,
    /// The pending request's storage (see [`REQUEST_STORAGE_OVERHEAD_BYTES`]).
    pub storage: u128,
    /// `per_compile_ms_fee` × [`COMPILE_ALLOWANCE_MS`].
    pub compile: u128,
}

impl Deposit {
    pub fn total(&self) -> u128 {
        self.estimate + self.storage + self.compile
    }
}

/// The localnet and one client per account that signs (each keeps its own nonce).
pub struct DemoChain {
    pub localnet: Localnet,
    user: ChainClient,
    owner: ChainClient,
    block_time: Duration,
}

impl DemoChain {
    /// Genesis with the contract deployed on [`CONTRACT`] and initialised (`new(owner, operator)`),
    /// 100 NEAR for the user, 10 for the owner and the operator.
    /// The RPC server listens on `bind` (the real node's IP, so the operator pod reaches it).
    pub async fn start(contract_wasm: &Path, block_time: Duration, bind: &str) -> Result<Self> {
        let bind: std::net::IpAddr = bind
            .parse()
            .map_err(|e| crate::Error::Unexpected(format!("bind address {bind:?}: {e}")))?;
        let config = LocalnetConfig::default()
            .with_block_time(block_time)
            // Below the client's own timeout, so a long wait ends in the node's answer and the
            // client follows the transaction by hash.
            .with_tx_wait_timeout(Duration::from_secs(5))
            .with_account(account(USER)?, 100 * NEAR, secret_key(USER).public_key())
            .with_account(account(OWNER)?, 10 * NEAR, secret_key(OWNER).public_key())
            .with_account(
                account(OPERATOR)?,
                10 * NEAR,
                secret_key(OPERATOR).public_key(),
            )
            .with_contract(
                account(CONTRACT)?,
                10 * NEAR,
                contract_wasm.to_path_buf(),
                Some(InitCall {
                    method: "new".to_string(),
                    args: json!({"owner_id": OWNER, "operator_id": OPERATOR}),
                }),
            );
        let localnet = Localnet::start_on(config, std::net::SocketAddr::new(bind, 0)).await?;
        let user = client_for(&localnet, USER)?;
        let owner = client_for(&localnet, OWNER)?;
        Ok(Self {
            localnet,
            user,
            owner,
            block_time,
        })
    }

    pub fn rpc_url(&self) -> String {
        self.localnet.rpc_url()
    }

    pub fn rpc_port(&self) -> u16 {
        self.localnet.addr().port()
    }

    /// The NEAR yield window: the contract refunds a request the operator has not answered within
    /// 200 blocks.
    pub fn yield_window(&self) -> Duration {
        self.block_time * 200
    }

    pub async fn balance(&self, name: &str) -> Result<u128> {
        let view = self
            .user
            .view_account(&account(name)?)
            .await
            .map_err(Error::chain(format!("view account {name}")))?;
        Ok(view.amount.as_yoctonear())
    }

    /// A view of the contract.
    pub async fn view(&self, method: &str, args: Value) -> Result<Value> {
        self.user
            .view_call(&account(CONTRACT)?, method, &args)
            .await
            .map_err(Error::chain(format!("view {CONTRACT}.{method}")))
    }

    /// What the user attaches for `request`: the contract's estimate for the limits, the request's
    /// storage, and an allowance for an uncached compile.
    pub async fn deposit_for(&self, request: &Value) -> Result<Deposit> {
        let yocto = |value: &Value, what: &str| -> Result<u128> {
            value
                .as_str()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| Error::Unexpected(format!("{what} is not a yocto amount: {value}")))
        };
        let estimate = self
            .view(
                "estimate_execution_cost",
                json!({"resource_limits": request["resource_limits"]}),
            )
            .await?;
        let pricing = self.view("get_pricing", json!({})).await?;
        let stored = [
            &request["input_data"],
            &request["code_source"]["repo"],
            &request["code_source"]["commit"],
        ]
        .iter()
        .map(|v| v.as_str().map_or(0, str::len) as u128)
        .sum::<u128>();
        Ok(Deposit {
            estimate: yocto(&estimate, "estimate_execution_cost")?,
            storage: (stored + REQUEST_STORAGE_OVERHEAD_BYTES) * STORAGE_PRICE_PER_BYTE,
            compile: yocto(&pricing["per_compile_ms_fee"], "per_compile_ms_fee")?
                * COMPILE_ALLOWANCE_MS,
        })
    }

    /// The user's `request_execution` with `deposit`. The transaction stays open until the request is
    /// settled (resolved, or refunded when the yield times out), so it is followed by hash as a wallet
    /// would, for up to the yield window plus `margin`.
    pub async fn request_execution(
        &self,
        args: &Value,
        deposit: u128,
        margin: Duration,
    ) -> Result<TxOutcome> {
        let contract = account(CONTRACT)?;
        let sent = self
            .user
            .call_function(
                &contract,
                "request_execution",
                args,
                Gas::from_teragas(REQUEST_GAS_TGAS),
                Balance::from_yoctonear(deposit),
            )
            .await;
        let tx_hash = match sent {
            Ok(outcome) => return Ok(outcome),
            Err(ChainError::Unconfirmed { tx_hash, .. }) => tx_hash,
            Err(source) => {
                return Err(Error::Chain {
                    what: format!("{USER} calls {CONTRACT}.request_execution"),
                    source,
                });
            }
        };
        let limit = self.yield_window() + margin;
        let deadline = Instant::now() + limit;
        let user = account(USER)?;
        let mut last = String::from("not seen yet");
        while Instant::now() < deadline {
            match self.user.transaction_status(tx_hash, &user).await {
                Ok(Some(outcome)) => return Ok(outcome),
                Ok(None) => last = "unknown to the node".to_string(),
                Err(error) => last = error.to_string(),
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(Error::Timeout {
            what: format!("the user's request_execution transaction {tx_hash} to settle"),
            seconds: limit.as_secs(),
            last,
        })
    }

    /// The owner makes the operator the pricing manager: from then on the chart's `pricing.*` values,
    /// rendered into the Pricing resource, drive the contract's pricing.
    pub async fn make_operator_pricing_manager(&self) -> Result<TxOutcome> {
        let outcome = self
            .owner
            .call_function(
                &account(CONTRACT)?,
                "set_pricing_manager",
                &json!({"pricing_manager_id": OPERATOR}),
                Gas::from_teragas(10),
                Balance::from_yoctonear(0),
            )
            .await
            .map_err(Error::chain(format!(
                "{OWNER} calls {CONTRACT}.set_pricing_manager"
            )))?;
        if let outlayer_operator::chain::CallStatus::Failure(message) = &outcome.status {
            return Err(Error::Unexpected(format!(
                "set_pricing_manager failed: {message}"
            )));
        }
        Ok(outcome)
    }
}

fn client_for(localnet: &Localnet, name: &str) -> Result<ChainClient> {
    let mut config = ChainConfig::new(vec![localnet.rpc_url()], account(CONTRACT)?);
    config.view_timeout = Duration::from_secs(5);
    config.tx_timeout = Duration::from_secs(10);
    config.retry = RetryPolicy {
        max_attempts: 6,
        base_delay: Duration::from_millis(50),
        max_delay: Duration::from_millis(500),
    };
    let signer = outlayer_operator::chain::OperatorSigner::from_secret_strings(
        name,
        &secret_key(name).to_string(),
    )
    .map_err(Error::chain(format!("the signer of {name}")))?;
    ChainClient::new(config, Some(signer)).map_err(Error::chain(format!("a client for {name}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yocto_amounts_read_as_near() {
        assert_eq!(yocto_to_near(0), "0 NEAR");
        assert_eq!(yocto_to_near(100 * NEAR), "100 NEAR");
        assert_eq!(yocto_to_near(NEAR / 1000), "0.001 NEAR");
        assert_eq!(
            yocto_to_near(1_234_567_000_000_000_000_000),
            "0.001234567 NEAR"
        );
        // Below 1e-12 NEAR the amount rounds down to its whole part.
        assert_eq!(yocto_to_near(NEAR + 1), "1 NEAR");
    }
}
