//! The on-chain half of the execution controller: what it looks at on chain — the yield window (requests
//! that cannot finish in time are `Expired`, and the contract refunds them when the yield times out),
//! the request as the contract has it, and the resolve itself (`Reporting`: exactly once).
//!
//! Exactly once: before every send the contract is asked whether the request is still unresolved, so
//! a restart or a retry after an unconfirmed transaction never answers twice; and if two sends did
//! race, the contract accepts only the first (`AlreadyResolved` is final, not an error). The decisions
//! are in `execution_steps.rs`.

use std::time::Duration;

use outlayer_contract::pricing::Settlement;
use tracing::warn;

use super::execution_steps::{ChainHead, RequestOnChain, Sent, YieldWindow};
use crate::chain::{ChainClient, ChainError, ExecutionResponse, RequestCallOutcome};
use crate::context::Context;
use crate::crd::{ExecutionRequest, OnChain};
use crate::{Error, Result};

fn chain_error(what: &str) -> impl FnOnce(ChainError) -> Error {
    let what = what.to_string();
    move |source| Error::Chain { what, source }
}

impl ExecutionRequest {
    /// What is left of an on-chain request's yield window; unbounded for requests without a deadline
    /// (kubectl requests, or no chain client to read the head from).
    pub(super) async fn yield_window(&self, ctx: &Context) -> Result<YieldWindow> {
        let (Some(on_chain), Some(chain)) = (&self.spec.on_chain, &ctx.chain) else {
            return Ok(YieldWindow::Unbounded);
        };
        let head = ctx
            .head
            .height(chain)
            .await
            .map_err(chain_error("reading the chain head"))?;
        Ok(YieldWindow::Left(blocks_to_time(
            on_chain.yield_deadline_height.saturating_sub(head),
            ctx.config.on_chain.expected_block_time,
        )))
    }

    /// The chain's head, or that there is no chain client to ask.
    pub(super) async fn chain_head(&self, ctx: &Context) -> Result<ChainHead> {
        let Some(chain) = &ctx.chain else {
            return Ok(ChainHead::NoClient);
        };
        let head = ctx
            .head
            .height(chain)
            .await
            .map_err(chain_error("reading the chain head"))?;
        Ok(ChainHead::At(head))
    }

    /// Whether the contract still waits for this request's answer.
    pub(super) async fn request_on_chain(&self, ctx: &Context) -> Result<RequestOnChain> {
        let (Some(on_chain), Some(chain)) = (&self.spec.on_chain, &ctx.chain) else {
            return Err(Error::InvalidSpec(
                "only an on-chain request served by a chain client is looked up on chain"
                    .to_string(),
            ));
        };
        let request = chain
            .get_request(on_chain.request_id)
            .await
            .map_err(chain_error("reading the request on chain"))?;
        Ok(match request {
            None => RequestOnChain::Gone,
            Some(request) if request.resolved => RequestOnChain::Resolved,
            Some(_) => RequestOnChain::Pending,
        })
    }

    /// Sends the resolve (one or two transactions) and, when it lands, reads what it cost. A failure
    /// worth retrying soon is an error (the reconcile backs off); a final refusal is [`Sent::Refused`].
    pub(super) async fn send(&self, ctx: &Context, response: ExecutionResponse) -> Result<Sent> {
        let (Some(on_chain), Some(chain)) = (&self.spec.on_chain, &ctx.chain) else {
            return Err(Error::InvalidSpec(
                "only an on-chain request served by a chain client is reported".to_string(),
            ));
        };
        match chain
            .report_execution(on_chain.request_id, response.clone())
            .await
        {
            Ok(report) => Ok(match report.outcome {
                RequestCallOutcome::Applied { tx_hash } => Sent::Applied {
                    tx_hash: tx_hash.to_string(),
                    submit_tx: report.submit_tx.map(|submit| submit.to_string()),
                    cost_yocto: cost(chain, on_chain, &response).await,
                },
                RequestCallOutcome::AlreadyResolved { tx_hash, message } => Sent::AlreadyResolved {
                    tx_hash: tx_hash.to_string(),
                    message,
                },
                RequestCallOutcome::YieldTimedOut { message, .. } => {
                    Sent::YieldTimedOut { message }
                }
            }),
            Err(error) if error.is_transient() => Err(Error::Chain {
                what: format!("reporting request {}", on_chain.request_id),
                source: error,
            }),
            Err(error) => {
                warn!(%error, kind = error.kind(), "reporting failed; retrying until the deadline");
                Ok(Sent::Refused {
                    message: format!("reporting failed ({}): {error}", error.kind()),
                })
            }
        }
    }
}

/// What the contract charged, computed with its own settlement code and its pricing read after the
/// resolve (informational: `None` when the pricing cannot be read).
async fn cost(
    chain: &ChainClient,
    on_chain: &OnChain,
    response: &ExecutionResponse,
) -> Option<String> {
    let deposit: u128 = on_chain.deposit.parse().ok()?;
    let pricing = match chain.get_pricing().await {
        Ok(pricing) => pricing,
        Err(error) => {
            warn!(%error, "reading the pricing for the cost failed; status.costYocto stays empty");
            return None;
        }
    };
    let settlement = Settlement::for_run(&pricing, deposit, &response.resources_used);
    Some(settlement.charged.to_string())
}

/// `blocks` at `block_time` each, saturating instead of overflowing.
fn blocks_to_time(blocks: u64, block_time: Duration) -> Duration {
    let millis = u64::try_from(block_time.as_millis()).unwrap_or(u64::MAX);
    Duration::from_millis(blocks.saturating_mul(millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_turn_into_time_without_overflow() {
        assert_eq!(
            blocks_to_time(200, Duration::from_millis(600)),
            Duration::from_secs(120)
        );
        assert_eq!(
            blocks_to_time(0, Duration::from_millis(600)),
            Duration::ZERO
        );
        assert_eq!(
            blocks_to_time(u64::MAX, Duration::from_secs(1)),
            Duration::from_millis(u64::MAX)
        );
    }
}
