//! The on-chain half of the execution controller: the contract's yield deadline (requests that cannot
//! finish in time are `Expired`, and the contract refunds them when the yield times out) and the
//! submitter (`Reporting`: the result goes back with `resolve_execution`, exactly once).
//!
//! Exactly once: before every send the contract is asked whether the request is still unresolved, so
//! a restart or a retry after an unconfirmed transaction never answers twice; and if two sends did
//! race, the contract accepts only the first (`AlreadyResolved` is final, not an error).

use std::time::Duration;

use base64::Engine as _;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use outlayer_contract::pricing::Settlement;
use serde_json::value::RawValue;
use tracing::{info, warn};

use super::execution::{CONDITION_EXECUTED, CONDITION_REPORTED, CONDITION_SUCCEEDED, now};
use crate::chain::{
    ChainClient, ChainError, ExecutionOutput, ExecutionResponse, ReportPlan, RequestCallOutcome,
    ResourceMetrics,
};
use crate::context::Context;
use crate::crd::{
    ExecutionRequest, ExecutionRequestStatus, OnChain, Phase, ResponseFormat, RunOutcome,
    set_condition,
};
use crate::metrics::{self, ExecutionResult};
use crate::{Error, Result};

/// How soon a report that the contract or the RPC refused for good is tried again (until the deadline).
const REPORT_RETRY: Duration = Duration::from_secs(10);
/// How often a request waiting for a chain client (none configured) looks again.
const NO_CHAIN_RETRY: Duration = Duration::from_secs(30);

fn chain_error(what: &str) -> impl FnOnce(ChainError) -> Error {
    let what = what.to_string();
    move |source| Error::Chain { what, source }
}

impl ExecutionRequest {
    /// What is left of an on-chain request's yield window; `None` for requests without a deadline
    /// (kubectl requests, or no chain client to read the head from).
    pub(super) async fn time_left(&self, ctx: &Context) -> Result<Option<Duration>> {
        let (Some(on_chain), Some(chain)) = (&self.spec.on_chain, &ctx.chain) else {
            return Ok(None);
        };
        let head = ctx
            .head
            .height(chain)
            .await
            .map_err(chain_error("reading the chain head"))?;
        Ok(Some(blocks_to_time(
            on_chain.yield_deadline_height.saturating_sub(head),
            ctx.config.on_chain.expected_block_time,
        )))
    }

    /// Ends a request that cannot (or can no longer) be answered before its yield times out. Nothing
    /// is sent: the contract's timeout callback refunds the sender all but the base fee.
    pub(super) async fn expire(
        &self,
        ctx: &Context,
        mut status: ExecutionRequestStatus,
        reason: &str,
        message: String,
    ) -> Result<Action> {
        let generation = self.metadata.generation;
        status.phase = Some(Phase::Expired);
        status.message = Some(message.clone());
        status.observed_generation = generation;
        set_condition(
            &mut status.conditions,
            CONDITION_SUCCEEDED,
            false,
            reason,
            message.clone(),
            generation,
            now(),
        );
        if self.spec.on_chain.is_some() {
            set_condition(
                &mut status.conditions,
                CONDITION_REPORTED,
                false,
                reason,
                "not reported: the contract refunds the deposit, less the base fee, when the yield times out"
                    .to_string(),
                generation,
                now(),
            );
        }
        self.apply_status(ctx, &status).await?;
        warn!(reason, %message, "execution expired");
        self.record_metrics(ctx, &status, ExecutionResult::Expired, reason);
        ctx.event(self, true, reason, message).await;
        self.delete_children(ctx).await?;
        self.after_finish(ctx, &status).await
    }

    /// Keeps the run's outcome and moves to `Reporting`; the status write wakes the next reconcile,
    /// which reports from the fresh object.
    pub(super) async fn start_reporting(
        &self,
        ctx: &Context,
        mut status: ExecutionRequestStatus,
        success: bool,
        reason: &str,
        message: String,
    ) -> Result<Action> {
        status.phase = Some(Phase::Reporting);
        status.message = Some(format!("reporting on chain: {message}"));
        status.outcome = Some(RunOutcome {
            success,
            reason: reason.to_string(),
            message,
        });
        set_condition(
            &mut status.conditions,
            CONDITION_REPORTED,
            false,
            "Reporting",
            "sending the result to the contract".to_string(),
            self.metadata.generation,
            now(),
        );
        self.apply_status(ctx, &status).await?;
        Ok(Action::await_change())
    }

    /// The submitter: one `resolve_execution` (two transactions for large outputs), unless the
    /// contract says the request is already answered or gone.
    pub(super) async fn report(
        &self,
        ctx: &Context,
        mut status: ExecutionRequestStatus,
    ) -> Result<Action> {
        let Some(on_chain) = &self.spec.on_chain else {
            return Err(Error::InvalidSpec(
                "a request without spec.onChain is Reporting".to_string(),
            ));
        };
        let outcome = status.outcome.clone().unwrap_or_else(|| RunOutcome {
            success: false,
            reason: "OutcomeLost".to_string(),
            message: "the run's outcome was not recorded".to_string(),
        });
        let Some(chain) = ctx.chain.clone() else {
            let waiting = "waiting for a chain client: the operator runs without --rpc-url, --contract-id and an operator key".to_string();
            if status.message.as_deref() != Some(waiting.as_str()) {
                status.message = Some(waiting);
                self.apply_status(ctx, &status).await?;
            }
            return Ok(Action::requeue(NO_CHAIN_RETRY));
        };
        let head = ctx
            .head
            .height(&chain)
            .await
            .map_err(chain_error("reading the chain head"))?;
        if head >= on_chain.yield_deadline_height {
            let message = format!(
                "the yield window closed at block {} before a resolve was confirmed",
                on_chain.yield_deadline_height
            );
            return self.expire(ctx, status, "YieldTimedOut", message).await;
        }
        match chain
            .get_request(on_chain.request_id)
            .await
            .map_err(chain_error("reading the request on chain"))?
        {
            None => {
                let message = "the request is no longer on chain: an earlier attempt answered it, or it timed out or was cancelled";
                return self
                    .reported(
                        ctx,
                        status,
                        &outcome,
                        "AlreadySettled",
                        message.to_string(),
                        None,
                    )
                    .await;
            }
            Some(request) if request.resolved => {
                let message = "the contract was already answered (by an earlier attempt)";
                return self
                    .reported(
                        ctx,
                        status,
                        &outcome,
                        "AlreadyResolved",
                        message.to_string(),
                        None,
                    )
                    .await;
            }
            Some(_) => {}
        }
        let response = self.response(ctx, &status, &outcome, on_chain.request_id)?;
        match chain
            .report_execution(on_chain.request_id, response.clone())
            .await
        {
            Ok(report) => match report.outcome {
                RequestCallOutcome::Applied { tx_hash } => {
                    status.cost_yocto = cost(&chain, on_chain, &response).await;
                    status.tx_hash = Some(tx_hash.to_string());
                    let message = match report.submit_tx {
                        Some(submit) => format!(
                            "resolved in transaction {tx_hash} (output submitted in {submit})"
                        ),
                        None => format!("resolved in transaction {tx_hash}"),
                    };
                    self.reported(ctx, status, &outcome, "Resolved", message, Some(&response))
                        .await
                }
                RequestCallOutcome::AlreadyResolved { tx_hash, message } => {
                    status.tx_hash = Some(tx_hash.to_string());
                    self.reported(ctx, status, &outcome, "AlreadyResolved", message, None)
                        .await
                }
                RequestCallOutcome::YieldTimedOut { message, .. } => {
                    self.expire(ctx, status, "YieldTimedOut", message).await
                }
            },
            Err(error) if error.is_transient() => Err(Error::Chain {
                what: format!("reporting request {}", on_chain.request_id),
                source: error,
            }),
            Err(error) => {
                warn!(%error, kind = error.kind(), "reporting failed; retrying until the deadline");
                let message = format!("reporting failed ({}): {error}", error.kind());
                status.message = Some(message.clone());
                set_condition(
                    &mut status.conditions,
                    CONDITION_REPORTED,
                    false,
                    "ReportFailed",
                    message.clone(),
                    self.metadata.generation,
                    now(),
                );
                self.apply_status(ctx, &status).await?;
                ctx.event(self, true, "ReportFailed", message).await;
                Ok(Action::requeue(REPORT_RETRY))
            }
        }
    }

    /// Final state of a reported request: `Succeeded`/`Failed` from the run, `Reported` from the chain.
    async fn reported(
        &self,
        ctx: &Context,
        mut status: ExecutionRequestStatus,
        outcome: &RunOutcome,
        reason: &str,
        message: String,
        response: Option<&ExecutionResponse>,
    ) -> Result<Action> {
        let generation = self.metadata.generation;
        status.phase = Some(if outcome.success {
            Phase::Succeeded
        } else {
            Phase::Failed
        });
        status.observed_generation = generation;
        status.message = Some(outcome.message.clone());
        set_condition(
            &mut status.conditions,
            CONDITION_REPORTED,
            true,
            reason,
            message.clone(),
            generation,
            now(),
        );
        set_condition(
            &mut status.conditions,
            CONDITION_SUCCEEDED,
            outcome.success,
            &outcome.reason,
            outcome.message.clone(),
            generation,
            now(),
        );
        self.apply_status(ctx, &status).await?;
        info!(
            success = outcome.success,
            reason,
            sent = response.is_some(),
            "execution reported"
        );
        let result = if outcome.success {
            ExecutionResult::Succeeded
        } else {
            ExecutionResult::Failed
        };
        self.record_metrics(ctx, &status, result, &outcome.reason);
        if let Some(executed) = status
            .conditions
            .iter()
            .find(|c| c.type_ == CONDITION_EXECUTED)
            && let Ok(took) =
                Duration::try_from(Timestamp::now().duration_since(executed.last_transition_time.0))
        {
            ctx.metrics.phase_duration(metrics::Phase::Report, took);
        }
        ctx.event(self, !outcome.success, reason, message).await;
        self.after_finish(ctx, &status).await
    }

    /// The contract's `ExecutionResponse` for this run. An output the contract cannot take (not the
    /// requested format, too large) turns into a failure that says why, charged only the base fee.
    fn response(
        &self,
        ctx: &Context,
        status: &ExecutionRequestStatus,
        outcome: &RunOutcome,
        request_id: u64,
    ) -> Result<ExecutionResponse> {
        let resources_used = ResourceMetrics {
            instructions: status.instructions.unwrap_or(0),
            time_ms: status.time_ms.unwrap_or(0),
            // Only a request that waited for the build pays for it; a cache hit is free.
            compile_time_ms: if status.cache_hit == Some(false) {
                status.compile_time_ms
            } else {
                None
            },
        };
        let failure = |error: String| ExecutionResponse {
            success: false,
            output: None,
            error: Some(error),
            resources_used: resources_used.clone(),
        };
        if !outcome.success {
            return Ok(failure(outcome.message.clone()));
        }
        let text = match (&status.output, &status.output_sha256) {
            (Some(output), _) => output.clone(),
            (None, Some(sha256)) => {
                match self.read_large_output(ctx, sha256, status.output_encoding)? {
                    Some(output) => output,
                    None => {
                        return Ok(failure(format!(
                            "the output ({} bytes) is larger than the contract accepts or the operator cannot read it",
                            status.output_size.unwrap_or(0)
                        )));
                    }
                }
            }
            (None, None) => String::new(),
        };
        let output = match self.spec.response_format {
            ResponseFormat::Text => ExecutionOutput::Text(text),
            ResponseFormat::Json => match RawValue::from_string(text) {
                Ok(raw) => ExecutionOutput::Json(raw),
                Err(error) => {
                    return Ok(failure(format!(
                        "the request asked for Json and the output is not valid JSON: {error}"
                    )));
                }
            },
            ResponseFormat::Bytes => {
                match base64::engine::general_purpose::STANDARD.decode(text.as_bytes()) {
                    Ok(bytes) => ExecutionOutput::Bytes(bytes),
                    Err(error) => {
                        return Err(Error::InvalidResult(format!(
                            "the executor's base64 output does not decode: {error}"
                        )));
                    }
                }
            }
        };
        let response = ExecutionResponse {
            success: true,
            output: Some(output),
            error: None,
            resources_used: resources_used.clone(),
        };
        match ReportPlan::new(request_id, response.clone()) {
            Err(ChainError::OutputTooLarge { bytes, max, .. }) => Ok(failure(format!(
                "the output is {bytes} bytes as JSON, over the contract's limit of {max}"
            ))),
            _ => Ok(response),
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
    let settlement = Settlement::for_outcome(
        &pricing,
        deposit,
        response.success,
        &response.resources_used,
    );
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
