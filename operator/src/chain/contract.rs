//! The OutLayer contract's methods as the watcher and submitter use them, with the contract's own wire
//! types (`outlayer_contract`), so both sides provably speak the same JSON.

use near_primitives::hash::CryptoHash;
use near_primitives::types::Balance;
use outlayer_contract::{
    ExecutionOutput, ExecutionRequest as ContractRequest, ExecutionResponse, MAX_OUTPUT_BYTES,
    MAX_YIELD_PAYLOAD_BYTES, PendingRequest, Pricing,
};
use serde_json::json;

use super::client::{CallStatus, ChainClient, TxOutcome};
use super::errors::ChainError;

/// The contract's panic when a request is unknown or was resolved before (`unresolved_request`).
const ALREADY_RESOLVED: &str = "not found or already resolved";
/// The contract's panic when the yield was already timed out by the protocol (200 blocks).
const YIELD_TIMED_OUT: &str = "is no longer pending (it timed out)";

/// How a call about one request ended. Every variant is final: none is worth re-sending.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestCallOutcome {
    /// The call took effect.
    Applied { tx_hash: CryptoHash },
    /// The contract says the request is unknown or already resolved: someone (maybe an earlier
    /// attempt of ours) answered it, or it was cancelled.
    AlreadyResolved {
        tx_hash: CryptoHash,
        message: String,
    },
    /// The yield timed out before the resolve; the contract's timeout callback refunds the sender.
    YieldTimedOut {
        tx_hash: CryptoHash,
        message: String,
    },
}

impl RequestCallOutcome {
    pub fn tx_hash(&self) -> CryptoHash {
        match self {
            Self::Applied { tx_hash }
            | Self::AlreadyResolved { tx_hash, .. }
            | Self::YieldTimedOut { tx_hash, .. } => *tx_hash,
        }
    }
}

/// One or two transactions, decided by the serialized size of the resolve payload: NEAR's
/// `max_yield_payload_size` is 1024 bytes, and the contract resumes the yield with exactly the JSON
/// of `ExecutionResponse` (re-serialized from the same type, so the size computed here is the one the
/// contract sees).
#[derive(Clone, Debug)]
pub enum ReportPlan {
    OneStep {
        response: ExecutionResponse,
    },
    /// `submit_execution_output(output)` then `resolve_execution(response)` with the output omitted.
    TwoStep {
        output: ExecutionOutput,
        response: ExecutionResponse,
    },
}

impl ReportPlan {
    /// Decides the path. A two-step response whose error alone still overflows the payload gets its
    /// error shortened (marked with `…`), since the contract would refuse it otherwise.
    pub fn new(request_id: u64, mut response: ExecutionResponse) -> Result<Self, ChainError> {
        if payload_len(&response)? <= MAX_YIELD_PAYLOAD_BYTES {
            return Ok(Self::OneStep { response });
        }
        let Some(output) = response.output.take() else {
            shorten_error(&mut response)?;
            return Ok(Self::OneStep { response });
        };
        let output_len = serde_json::to_vec(&output)
            .map_err(|e| encode_error("submit_execution_output", e))?
            .len();
        if output_len > MAX_OUTPUT_BYTES {
            return Err(ChainError::OutputTooLarge {
                request_id,
                bytes: output_len,
                max: MAX_OUTPUT_BYTES,
            });
        }
        shorten_error(&mut response)?;
        Ok(Self::TwoStep { output, response })
    }

    pub fn is_two_step(&self) -> bool {
        matches!(self, Self::TwoStep { .. })
    }
}

/// What `report_execution` did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// The `submit_execution_output` transaction, on the two-step path.
    pub submit_tx: Option<CryptoHash>,
    /// The resolve (or the submit, if the contract refused it as already resolved).
    pub outcome: RequestCallOutcome,
}

fn payload_len(response: &ExecutionResponse) -> Result<usize, ChainError> {
    serde_json::to_vec(response)
        .map(|payload| payload.len())
        .map_err(|e| encode_error("resolve_execution", e))
}

fn encode_error(method: &str, error: serde_json::Error) -> ChainError {
    ChainError::EncodeArgs {
        method: method.to_string(),
        reason: error.to_string(),
    }
}

fn shorten_error(response: &mut ExecutionResponse) -> Result<(), ChainError> {
    const MARK: &str = "…";
    if payload_len(response)? <= MAX_YIELD_PAYLOAD_BYTES {
        return Ok(());
    }
    let Some(full) = response.error.take() else {
        // Nothing to shorten: only a pathological response gets here, and the contract's own refusal
        // will say so.
        return Ok(());
    };
    // JSON escapes make bytes cost unevenly, so search for the longest prefix that fits.
    let (mut fits, mut too_long) = (0usize, full.len());
    while too_long - fits > 1 {
        let mut middle = fits + (too_long - fits) / 2;
        while !full.is_char_boundary(middle) {
            middle -= 1;
        }
        if middle <= fits {
            break;
        }
        response.error = Some(format!("{}{MARK}", &full[..middle]));
        if payload_len(response)? <= MAX_YIELD_PAYLOAD_BYTES {
            fits = middle;
        } else {
            too_long = middle;
        }
    }
    response.error = Some(format!("{}{MARK}", &full[..fits]));
    Ok(())
}

/// Turns a finished request call into its final outcome, or an error for any other contract failure.
fn classify_request_call(
    method: &str,
    client: &ChainClient,
    outcome: TxOutcome,
) -> Result<RequestCallOutcome, ChainError> {
    let tx_hash = outcome.tx_hash;
    match outcome.status {
        CallStatus::Success(_) => Ok(RequestCallOutcome::Applied { tx_hash }),
        CallStatus::Failure(message) if message.contains(ALREADY_RESOLVED) => {
            Ok(RequestCallOutcome::AlreadyResolved { tx_hash, message })
        }
        CallStatus::Failure(message) if message.contains(YIELD_TIMED_OUT) => {
            Ok(RequestCallOutcome::YieldTimedOut { tx_hash, message })
        }
        CallStatus::Failure(message) => Err(ChainError::TransactionFailed {
            method: method.to_string(),
            receiver: client.contract_id().clone(),
            tx_hash,
            message,
        }),
    }
}

impl ChainClient {
    /// Unresolved requests with id ≥ `from_id`, in id order; the contract caps `limit` at 100.
    pub async fn get_pending_requests(
        &self,
        from_id: u64,
        limit: u32,
    ) -> Result<Vec<PendingRequest>, ChainError> {
        self.view_call(
            self.contract_id(),
            "get_pending_requests",
            &json!({"from_id": from_id, "limit": limit}),
        )
        .await
    }

    /// A request until its callback settled it; carries the full input even when
    /// `PendingRequest::input_omitted` is set.
    pub async fn get_request(
        &self,
        request_id: u64,
    ) -> Result<Option<ContractRequest>, ChainError> {
        self.view_call(
            self.contract_id(),
            "get_request",
            &json!({"request_id": request_id}),
        )
        .await
    }

    /// The contract's caps on a request's limits.
    pub async fn get_max_limits(&self) -> Result<outlayer_contract::ResourceLimits, ChainError> {
        self.view_call(self.contract_id(), "get_max_limits", &json!({}))
            .await
    }

    pub async fn get_pricing(&self) -> Result<Pricing, ChainError> {
        self.view_call(self.contract_id(), "get_pricing", &json!({}))
            .await
    }

    /// Resumes the request's yield with `response` (which must fit in 1024 bytes; see `ReportPlan`).
    pub async fn resolve_execution(
        &self,
        request_id: u64,
        response: &ExecutionResponse,
    ) -> Result<RequestCallOutcome, ChainError> {
        self.resolve_execution_recorded(request_id, response, |_| std::future::ready(Ok(())))
            .await
    }

    /// [`Self::resolve_execution`], handing each signed transaction's hash to `on_signed` before it is
    /// sent (see [`ChainClient::call_function_recorded`]).
    pub async fn resolve_execution_recorded<F, Fut>(
        &self,
        request_id: u64,
        response: &ExecutionResponse,
        on_signed: F,
    ) -> Result<RequestCallOutcome, ChainError>
    where
        F: Fn(CryptoHash) -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        let outcome = self
            .call_pooled(
                "resolve_execution",
                &json!({"request_id": request_id, "response": response}),
                self.config().resolve_gas,
                on_signed,
            )
            .await?;
        let result = classify_request_call("resolve_execution", self, outcome)?;
        tracing::info!(request_id, tx_hash = %result.tx_hash(), ?result, "resolve_execution finished");
        Ok(result)
    }

    /// Stores an output too large for the yield payload; calling it again before the resolve
    /// replaces it, so a retry after a crash is harmless.
    pub async fn submit_execution_output(
        &self,
        request_id: u64,
        output: &ExecutionOutput,
    ) -> Result<RequestCallOutcome, ChainError> {
        let outcome = self
            .call_pooled(
                "submit_execution_output",
                &json!({"request_id": request_id, "output": output}),
                self.config().submit_output_gas,
                |_| std::future::ready(Ok(())),
            )
            .await?;
        let result = classify_request_call("submit_execution_output", self, outcome)?;
        tracing::info!(request_id, tx_hash = %result.tx_hash(), ?result, "submit_execution_output finished");
        Ok(result)
    }

    /// Reports a finished execution in one or two transactions (`ReportPlan`). Not idempotent by
    /// itself: after an `Unconfirmed` error the caller checks `get_request` before calling again.
    pub async fn report_execution(
        &self,
        request_id: u64,
        response: ExecutionResponse,
    ) -> Result<Report, ChainError> {
        self.report_execution_recorded(request_id, response, |_| std::future::ready(Ok(())))
            .await
    }

    /// [`Self::report_execution`], handing the resolve's signed hash to `on_signed` before it is sent.
    pub async fn report_execution_recorded<F, Fut>(
        &self,
        request_id: u64,
        response: ExecutionResponse,
        on_signed: F,
    ) -> Result<Report, ChainError>
    where
        F: Fn(CryptoHash) -> Fut,
        Fut: Future<Output = Result<(), String>>,
    {
        match ReportPlan::new(request_id, response)? {
            ReportPlan::OneStep { response } => Ok(Report {
                submit_tx: None,
                outcome: self
                    .resolve_execution_recorded(request_id, &response, on_signed)
                    .await?,
            }),
            ReportPlan::TwoStep { output, response } => {
                let submitted = self.submit_execution_output(request_id, &output).await?;
                let submit_tx = Some(submitted.tx_hash());
                if !matches!(submitted, RequestCallOutcome::Applied { .. }) {
                    return Ok(Report {
                        submit_tx,
                        outcome: submitted,
                    });
                }
                Ok(Report {
                    submit_tx,
                    outcome: self
                        .resolve_execution_recorded(request_id, &response, on_signed)
                        .await?,
                })
            }
        }
    }

    /// What a `resolve_execution` transaction this client signed did, looked up by hash: `None` when no
    /// node knows it (never sent, or dropped before it was included).
    pub async fn resolve_outcome(
        &self,
        tx_hash: CryptoHash,
    ) -> Result<Option<RequestCallOutcome>, ChainError> {
        let signer = self.signer().ok_or_else(|| ChainError::NoSigner {
            method: "resolve_execution".to_string(),
        })?;
        match self
            .transaction_status(tx_hash, signer.account_id())
            .await?
        {
            None => Ok(None),
            Some(outcome) => classify_request_call("resolve_execution", self, outcome).map(Some),
        }
    }

    /// The public key users seal secrets to, as the contract publishes it.
    pub async fn get_secrets_pubkey(&self) -> Result<Option<String>, ChainError> {
        self.view_call(self.contract_id(), "get_secrets_pubkey", &json!({}))
            .await
    }

    /// Publishes the sealing public key on the contract (as its owner or operator).
    /// The key new requests record as their seed key (`ed25519:<base58>`).
    pub async fn get_seed_public_key(&self) -> Result<Option<String>, ChainError> {
        self.view_call(self.contract_id(), "get_seed_public_key", &json!({}))
            .await
    }

    pub async fn set_seed_public_key(&self, public_key: &str) -> Result<TxOutcome, ChainError> {
        self.admin_call("set_seed_public_key", &json!({"public_key": public_key}))
            .await
    }

    pub async fn set_secrets_pubkey(&self, pubkey: &str) -> Result<TxOutcome, ChainError> {
        self.admin_call("set_secrets_pubkey", &json!({"pubkey": pubkey}))
            .await
    }

    /// Sets the contract's fees (as the owner or the pricing manager).
    pub async fn set_pricing(&self, pricing: &Pricing) -> Result<TxOutcome, ChainError> {
        self.admin_call("set_pricing", &json!({"pricing": pricing}))
            .await
    }

    /// A configuration call without deposit; a contract refusal is an error.
    async fn admin_call(
        &self,
        method: &str,
        args: &serde_json::Value,
    ) -> Result<TxOutcome, ChainError> {
        let outcome = self
            .call_function(
                self.contract_id(),
                method,
                args,
                self.config().set_pricing_gas,
                Balance::from_yoctonear(0),
            )
            .await?;
        match &outcome.status {
            CallStatus::Success(_) => Ok(outcome),
            CallStatus::Failure(message) => Err(ChainError::TransactionFailed {
                method: method.to_string(),
                receiver: self.contract_id().clone(),
                tx_hash: outcome.tx_hash,
                message: message.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use outlayer_contract::ResourceMetrics;

    use super::*;

    fn response(output: Option<ExecutionOutput>, error: Option<String>) -> ExecutionResponse {
        ExecutionResponse {
            success: error.is_none(),
            output,
            error,
            resources_used: ResourceMetrics {
                instructions: 1,
                time_ms: 2,
                compile_time_ms: Some(3),
            },
            evidence: None,
        }
    }

    #[test]
    fn small_responses_go_in_one_step_large_ones_in_two() {
        let small = response(Some(ExecutionOutput::Text("hi".into())), None);
        assert!(!ReportPlan::new(0, small).unwrap().is_two_step());

        // Find the exact boundary: the payload is the response's JSON.
        let overhead =
            payload_len(&response(Some(ExecutionOutput::Text(String::new())), None)).unwrap();
        let fits = "x".repeat(MAX_YIELD_PAYLOAD_BYTES - overhead);
        let fits = response(Some(ExecutionOutput::Text(fits)), None);
        assert_eq!(payload_len(&fits).unwrap(), MAX_YIELD_PAYLOAD_BYTES);
        assert!(!ReportPlan::new(0, fits).unwrap().is_two_step());

        let over = "x".repeat(MAX_YIELD_PAYLOAD_BYTES - overhead + 1);
        match ReportPlan::new(0, response(Some(ExecutionOutput::Text(over.clone())), None)) {
            Ok(ReportPlan::TwoStep { output, response }) => {
                assert!(matches!(output, ExecutionOutput::Text(text) if text == over));
                assert!(response.output.is_none());
                assert!(payload_len(&response).unwrap() <= MAX_YIELD_PAYLOAD_BYTES);
            }
            other => panic!("expected two steps, got {other:?}"),
        }
    }

    #[test]
    fn escaping_counts_towards_the_limit() {
        // 600 quotes are 1200 bytes as JSON.
        let quotes = response(Some(ExecutionOutput::Text("\"".repeat(600))), None);
        assert!(ReportPlan::new(0, quotes).unwrap().is_two_step());
    }

    #[test]
    fn a_long_error_is_shortened_to_fit_at_a_char_boundary() {
        let error = "é\"".repeat(2000);
        let plan = ReportPlan::new(0, response(None, Some(error))).unwrap();
        let ReportPlan::OneStep { response } = plan else {
            panic!("no output: one step");
        };
        let len = payload_len(&response).unwrap();
        assert!(
            len <= MAX_YIELD_PAYLOAD_BYTES && len > MAX_YIELD_PAYLOAD_BYTES - 16,
            "{len}"
        );
        assert!(response.error.unwrap().ends_with('…'));
    }

    #[test]
    fn outputs_over_the_contract_maximum_are_refused_before_sending() {
        let huge = response(
            Some(ExecutionOutput::Text("x".repeat(MAX_OUTPUT_BYTES))),
            None,
        );
        match ReportPlan::new(7, huge) {
            Err(ChainError::OutputTooLarge {
                request_id: 7,
                bytes,
                max,
            }) => {
                assert_eq!(bytes, MAX_OUTPUT_BYTES + 11);
                assert_eq!(max, MAX_OUTPUT_BYTES);
            }
            other => panic!("expected OutputTooLarge, got {other:?}"),
        }
    }
}
