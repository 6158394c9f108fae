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
use crate::chain::{
    ChainClient, ChainError, ContractRequest, ExecutionResponse, PendingRequest, Pricing,
    RequestCallOutcome,
};
use crate::context::Context;
use crate::crd::{ExecutionRequest, ExecutionRequestSpec, OnChain, SignedResolve};
use crate::{Error, Result};

fn chain_error(what: &str) -> impl FnOnce(ChainError) -> Error {
    let what = what.to_string();
    move |source| Error::Chain { what, source }
}

impl ExecutionRequest {
    /// What is left of an on-chain request's yield window, with the request as the contract holds it
    /// and its pricing snapshot (one view serves both: the deadline is the chain's, never the
    /// spec's); unbounded and not looked up for requests without a deadline (kubectl requests, or no
    /// chain client to ask).
    pub(super) async fn yield_window(
        &self,
        ctx: &Context,
    ) -> Result<(YieldWindow, Option<(RequestOnChain, Option<Pricing>)>)> {
        let (Some(on_chain), Some(chain)) = (&self.spec.on_chain, &ctx.chain) else {
            return Ok((YieldWindow::Unbounded, None));
        };
        let head = ctx
            .head
            .height(chain)
            .await
            .map_err(chain_error("reading the chain head"))?;
        let stored = chain
            .get_request(on_chain.request_id)
            .await
            .map_err(chain_error("reading the request on chain"))?;
        let blocks = ctx.config.on_chain.yield_timeout_blocks;
        // A request gone from the contract has no deadline left to read; the spec's is only used to
        // word the outcome, which ends the run either way.
        let deadline = stored
            .as_ref()
            .map_or(on_chain.yield_deadline_height, |request| {
                request.created_at_block.saturating_add(blocks)
            });
        let window = YieldWindow::Left(blocks_to_time(
            deadline.saturating_sub(head),
            ctx.config.on_chain.expected_block_time,
        ));
        let compared = compare_with_chain(&self.spec, stored.as_ref(), blocks);
        Ok((
            window,
            Some((compared, stored.and_then(|request| request.pricing))),
        ))
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

    /// What the resolve this operator signed and recorded did: `None` when no node knows it (it was
    /// never sent, or never included), else as if it had just been sent.
    pub(super) async fn signed_resolve_outcome(
        &self,
        ctx: &Context,
        signed: &SignedResolve,
    ) -> Result<Option<Sent>> {
        let Some(chain) = &ctx.chain else {
            return Ok(None);
        };
        let tx_hash: near_primitives::hash::CryptoHash = signed.tx_hash.parse().map_err(|_| {
            Error::InvalidSpec(format!(
                "status.signedResolve.txHash {:?} is not a transaction hash",
                signed.tx_hash
            ))
        })?;
        let outcome = match chain.resolve_outcome(tx_hash).await {
            Ok(outcome) => outcome,
            Err(error) if error.is_transient() => {
                return Err(chain_error("looking up the signed resolve")(error));
            }
            // It ran and failed for another reason: as good as never sent.
            Err(error) => {
                warn!(%error, "the recorded resolve failed on chain; deciding from the request");
                return Ok(None);
            }
        };
        Ok(outcome.map(|outcome| match outcome {
            RequestCallOutcome::Applied { tx_hash } => Sent::Applied {
                tx_hash: tx_hash.to_string(),
                submit_tx: None,
                cost_yocto: signed.cost_yocto.clone(),
            },
            RequestCallOutcome::AlreadyResolved { tx_hash, message } => Sent::AlreadyResolved {
                tx_hash: tx_hash.to_string(),
                message,
            },
            RequestCallOutcome::YieldTimedOut { message, .. } => Sent::YieldTimedOut { message },
        }))
    }

    /// Whether the contract still waits for this request's answer, and the pricing it was made at
    /// (its snapshot; `None` when stored without one, or gone).
    pub(super) async fn request_on_chain(
        &self,
        ctx: &Context,
    ) -> Result<(RequestOnChain, Option<Pricing>)> {
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
        let compared = compare_with_chain(
            &self.spec,
            request.as_ref(),
            ctx.config.on_chain.yield_timeout_blocks,
        );
        Ok((compared, request.and_then(|request| request.pricing)))
    }

    /// Sends the resolve (one or two transactions) and, when it lands, reads what it cost. A failure
    /// worth retrying soon is an error (the reconcile backs off); a final refusal is [`Sent::Refused`].
    /// `pricing_at_request`: the request's pricing snapshot as the check before this send read it.
    pub(super) async fn send(
        &self,
        ctx: &Context,
        response: ExecutionResponse,
        pricing_at_request: Option<Pricing>,
    ) -> Result<Sent> {
        let (Some(on_chain), Some(chain)) = (&self.spec.on_chain, &ctx.chain) else {
            return Err(Error::InvalidSpec(
                "only an on-chain request served by a chain client is reported".to_string(),
            ));
        };
        // What the contract will charge, at the pricing the request was made at (read while it is
        // still pending, by the check before this send: no second view), recorded with the signed
        // transaction's hash before it is sent: after a crash the next reconcile finds the
        // transaction, and what it cost, from the status alone.
        let cost_yocto = cost(chain, on_chain, &response, pricing_at_request).await;
        let base = self.status.clone().unwrap_or_default();
        let record = |tx_hash: near_primitives::hash::CryptoHash| {
            let mut status = base.clone();
            status.signed_resolve = Some(SignedResolve {
                tx_hash: tx_hash.to_string(),
                cost_yocto: cost_yocto.clone(),
            });
            async move {
                super::apply_status_if(ctx, self, &status, false)
                    .await
                    .map_err(|error| error.to_string())
            }
        };
        match chain
            .report_execution_recorded(on_chain.request_id, response.clone(), record)
            .await
        {
            Ok(report) => Ok(match report.outcome {
                RequestCallOutcome::Applied { tx_hash } => Sent::Applied {
                    tx_hash: tx_hash.to_string(),
                    submit_tx: report.submit_tx.map(|submit| submit.to_string()),
                    cost_yocto: cost_yocto.clone(),
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

/// Where the request `spec` claims to be stands on chain. `spec.onChain` is a claim (anyone who may
/// create ExecutionRequests can write one); the contract's copy is the fact. Every field the watcher
/// would have written from the chain must be what it would have written — else the request is
/// [`RequestOnChain::Mismatch`], checked before anything is resolved or unsealed for it.
pub(crate) fn compare_with_chain(
    spec: &ExecutionRequestSpec,
    stored: Option<&ContractRequest>,
    yield_timeout_blocks: u64,
) -> RequestOnChain {
    let Some(stored) = stored else {
        return RequestOnChain::Gone;
    };
    // A resolved request's input is dropped by the contract (the resolve pays for freeing it): there
    // is nothing left to compare it with, and nothing more will be unsealed or reported for it.
    let input = if stored.resolved {
        spec.input.clone()
    } else {
        stored.input_data.clone()
    };
    let expected = crate::chain_watcher::execution_request(
        &PendingRequest::from(stored),
        input,
        yield_timeout_blocks,
    )
    .spec;
    let differences = spec_differences(spec, &expected);
    if !differences.is_empty() {
        return RequestOnChain::Mismatch(format!(
            "{} differ from request {} on chain",
            differences.join(", "),
            stored.request_id
        ));
    }
    if stored.resolved {
        RequestOnChain::Resolved
    } else {
        RequestOnChain::Pending
    }
}

/// The spec fields of `actual` that are not `expected`'s, by name (values are left out: the message
/// goes into status and Events).
fn spec_differences(
    actual: &ExecutionRequestSpec,
    expected: &ExecutionRequestSpec,
) -> Vec<&'static str> {
    let mut differences = Vec::new();
    let mut check = |name, same: bool| {
        if !same {
            differences.push(name);
        }
    };
    check("spec.code", actual.code == expected.code);
    check("spec.input", actual.input == expected.input);
    check("spec.limits", actual.limits == expected.limits);
    check(
        "spec.responseFormat",
        actual.response_format == expected.response_format,
    );
    check(
        "spec.secretsRef",
        actual.secrets_ref == expected.secrets_ref,
    );
    check(
        "spec.compileOnly",
        actual.compile_only == expected.compile_only,
    );
    check(
        "spec.deterministic",
        actual.deterministic == expected.deterministic,
    );
    match (&actual.on_chain, &expected.on_chain) {
        (Some(actual), Some(expected)) => {
            check(
                "spec.onChain.requestId",
                actual.request_id == expected.request_id,
            );
            check("spec.onChain.dataId", actual.data_id == expected.data_id);
            check("spec.onChain.sender", actual.sender == expected.sender);
            check("spec.onChain.deposit", actual.deposit == expected.deposit);
            check(
                "spec.onChain.blockHeight",
                actual.block_height == expected.block_height,
            );
            check(
                "spec.onChain.yieldDeadlineHeight",
                actual.yield_deadline_height == expected.yield_deadline_height,
            );
            check(
                "spec.onChain.includeStderr",
                actual.include_stderr == expected.include_stderr,
            );
            check(
                "spec.onChain.blockTimestampNs",
                actual.block_timestamp_ns == expected.block_timestamp_ns,
            );
            check(
                "spec.onChain.seedPublicKey",
                actual.seed_public_key == expected.seed_public_key,
            );
        }
        (actual, expected) => check("spec.onChain", actual.is_some() == expected.is_some()),
    }
    differences
}

/// What the contract charges for `response`, computed with its own settlement code at the pricing
/// the request was made at (`snapshot`; the current pricing for a request stored without one).
/// Informational: `None` when neither can be read.
async fn cost(
    chain: &ChainClient,
    on_chain: &OnChain,
    response: &ExecutionResponse,
    snapshot: Option<Pricing>,
) -> Option<String> {
    let deposit: u128 = on_chain.deposit.parse().ok()?;
    let pricing = match snapshot {
        Some(pricing) => pricing,
        None => match chain.get_pricing().await {
            Ok(pricing) => pricing,
            Err(error) => {
                warn!(%error, "reading the pricing for the cost failed; status.costYocto stays empty");
                return None;
            }
        },
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

    fn stored() -> ContractRequest {
        serde_json::from_value(serde_json::json!({
            "request_id": 42, "data_id": "3xQ", "sender_id": "client.near",
            "code_source": {"repo": "https://github.com/alice/app", "commit": "main"},
            "resource_limits": {"max_instructions": 5_000_000u64, "max_memory_mb": 64,
                                "max_execution_seconds": 7},
            "input_data": "hi",
            "secrets_ref": {"profile": "prod", "account_id": "alice.near"},
            "response_format": "Json", "payment": "1000", "created_at_block": 900,
            "created_at_ns": 1, "resolved": false
        }))
        .unwrap()
    }

    /// The spec the watcher writes for `stored`, edited.
    fn spec(edit: impl FnOnce(&mut ExecutionRequestSpec)) -> ExecutionRequestSpec {
        let request = stored();
        let mut spec = crate::chain_watcher::execution_request(
            &PendingRequest::from(&request),
            request.input_data.clone(),
            200,
        )
        .spec;
        edit(&mut spec);
        spec
    }

    #[test]
    fn a_spec_is_trusted_only_as_far_as_the_chain_agrees() {
        let on_chain = |spec: &mut ExecutionRequestSpec| spec.on_chain.as_mut().unwrap().clone();
        let rows: Vec<(&str, ExecutionRequestSpec, RequestOnChain)> = vec![
            (
                "as the watcher wrote it",
                spec(|_| {}),
                RequestOnChain::Pending,
            ),
            (
                "another module",
                spec(|s| {
                    s.code.source.as_mut().unwrap().repo = "https://github.com/eve/app".into()
                }),
                RequestOnChain::Mismatch("spec.code differ from request 42 on chain".into()),
            ),
            (
                "another input",
                spec(|s| s.input = "hi!".into()),
                RequestOnChain::Mismatch("spec.input differ from request 42 on chain".into()),
            ),
            (
                "more time",
                spec(|s| s.limits.max_execution_seconds = 8),
                RequestOnChain::Mismatch("spec.limits differ from request 42 on chain".into()),
            ),
            (
                "another sender and someone else's secrets",
                spec(|s| {
                    s.on_chain.as_mut().unwrap().sender = "eve.near".into();
                    s.secrets_ref.as_mut().unwrap().account_id = "bob.near".into();
                }),
                RequestOnChain::Mismatch(
                    "spec.secretsRef, spec.onChain.sender differ from request 42 on chain".into(),
                ),
            ),
            (
                "a later deadline",
                spec(|s| {
                    let mut changed = on_chain(s);
                    changed.yield_deadline_height += 1_000;
                    s.on_chain = Some(changed);
                }),
                RequestOnChain::Mismatch(
                    "spec.onChain.yieldDeadlineHeight differ from request 42 on chain".into(),
                ),
            ),
            (
                "another data id and format",
                spec(|s| {
                    s.on_chain.as_mut().unwrap().data_id = "4yR".into();
                    s.response_format = crate::crd::ResponseFormat::Text;
                }),
                RequestOnChain::Mismatch(
                    "spec.responseFormat, spec.onChain.dataId differ from request 42 on chain"
                        .into(),
                ),
            ),
            (
                "no onChain at all",
                spec(|s| s.on_chain = None),
                RequestOnChain::Mismatch("spec.onChain differ from request 42 on chain".into()),
            ),
        ];
        for (name, spec, expected) in rows {
            assert_eq!(
                compare_with_chain(&spec, Some(&stored()), 200),
                expected,
                "{name}"
            );
        }
        // The resolve drops the stored input; everything else still counts.
        let mut resolved = stored();
        resolved.resolved = true;
        resolved.input_data = String::new();
        assert_eq!(
            compare_with_chain(&spec(|_| {}), Some(&resolved), 200),
            RequestOnChain::Resolved
        );
        assert_eq!(
            compare_with_chain(
                &spec(|s| s.on_chain.as_mut().unwrap().sender = "eve.near".into()),
                Some(&resolved),
                200
            ),
            RequestOnChain::Mismatch("spec.onChain.sender differ from request 42 on chain".into()),
            "a mismatch is named even when the request is answered"
        );
        assert_eq!(
            compare_with_chain(&spec(|_| {}), None, 200),
            RequestOnChain::Gone
        );
    }

    #[test]
    fn a_module_by_url_is_compared_with_the_chain_too() {
        let mut stored = stored();
        stored.code_source = None;
        stored.source_kind = outlayer_contract::SourceKind::WasmUrl;
        stored.wasm_url = Some(outlayer_contract::WasmUrlSource {
            url: "https://modules.example/app.wasm".to_string(),
            hash: "ab".repeat(32),
            build_target: "wasm32-wasip1".to_string(),
        });
        let written = crate::chain_watcher::execution_request(
            &PendingRequest::from(&stored),
            stored.input_data.clone(),
            200,
        )
        .spec;
        assert_eq!(
            written.code,
            crate::crd::CodeRef::from_url("https://modules.example/app.wasm", "ab".repeat(32))
        );
        assert_eq!(
            compare_with_chain(&written, Some(&stored), 200),
            RequestOnChain::Pending
        );
        let mismatch = RequestOnChain::Mismatch("spec.code differ from request 42 on chain".into());
        type Edit = fn(&mut crate::crd::ModuleUrl);
        let edits: [(&str, Edit); 2] = [
            ("another URL", |u| {
                u.url = "https://eve.example/app.wasm".into()
            }),
            ("another hash", |u| u.sha256 = "cd".repeat(32)),
        ];
        for (what, edit) in edits {
            let mut spec = written.clone();
            edit(spec.code.module_url.as_mut().unwrap());
            assert_eq!(
                compare_with_chain(&spec, Some(&stored), 200),
                mismatch,
                "{what}"
            );
        }
        // A repository where the chain has a URL (or the reverse) differs as well.
        let swapped = spec(|_| {});
        assert_eq!(compare_with_chain(&swapped, Some(&stored), 200), mismatch);
    }

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
