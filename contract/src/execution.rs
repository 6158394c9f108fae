//! The request lifecycle: request → (optional output submission) → resolve → callback, plus cancels.

use near_sdk::json_types::U128;
use near_sdk::serde_json;
use near_sdk::{AccountId, GasWeight, NearToken, PromiseError, env, near, require};
use serde_json::value::RawValue;

use crate::events::{
    ExecutionCancelledData, ExecutionCompletedData, ExecutionResolvedData, OutlayerEvent,
    OutputSubmittedData,
};
use crate::pricing::{Settlement, estimate_cost};
use crate::types::{
    CodeSource, Evidence, ExecutionOutput, ExecutionRequest, ExecutionResponse, ExecutionSource,
    PendingRequest, RequestParams, ResourceLimits, ResourceMetrics, ResponseFormat,
    SecretsReference, SourceKind, WasmUrlSource, decode_seed_signature, public_error, seed_message,
};
use crate::validation::{
    validate_code_source, validate_input, validate_limits, validate_request_params,
    validate_secrets_ref, validate_wasm_url,
};
use crate::{
    CALLBACK_GAS, Contract, ContractExt, MAX_OUTPUT_BYTES, MAX_YIELD_PAYLOAD_BYTES,
    MIN_REQUEST_GAS, require_valid,
};

const CALLBACK_METHOD: &str = "on_execution_response";
/// What a compile-only request without limits stores as its limits: it runs nothing.
const NO_LIMITS: ResourceLimits = ResourceLimits {
    max_instructions: 0,
    max_memory_mb: 0,
    max_execution_seconds: 0,
};
const DATA_ID_REGISTER: u64 = 0;
/// The longest base58 encoding of a 32-byte data id.
const MAX_DATA_ID_LEN: usize = 44;
const TIMEOUT_ERROR: &str =
    "timeout: the operator did not resolve the request within the yield window";

#[near]
impl Contract {
    /// Asks the operator to compile the code and run it on `input_data` within `resource_limits`.
    /// The code is named by exactly one of `code_source` (the seed's flat `{repo, commit,
    /// build_target?}`) or `source` (OutLayer's `{"GitHub": {...}}` / `{"WasmUrl": {...}}`); both are
    /// stored as the same [`CodeSource`], so they behave identically. The deposit must cover the
    /// estimated cost of the limits plus the storage the request occupies while it is pending; what is
    /// not used is refunded — to `payer_account_id` when given, else to the caller — when the request
    /// completes. Returns (through the yield) the output: Text as a string, Json as a value, Bytes as
    /// base64; `null` on failure.
    #[payable]
    #[allow(clippy::too_many_arguments)] // the JSON arguments OutLayer clients send, one by one
    pub fn request_execution(
        &mut self,
        code_source: Option<CodeSource>,
        source: Option<ExecutionSource>,
        resource_limits: Option<ResourceLimits>,
        input_data: Option<String>,
        secrets_ref: Option<SecretsReference>,
        response_format: Option<ResponseFormat>,
        payer_account_id: Option<String>,
        params: Option<RequestParams>,
    ) {
        require!(
            !self.paused,
            "the contract is paused: new execution requests are not accepted"
        );
        let (code_source, wasm_url, source_kind) = code_source_of(code_source, source);
        if let Some(code_source) = &code_source {
            require_valid(validate_code_source(code_source));
        }
        let params = params.unwrap_or_default();
        require_valid(validate_request_params(&params));
        // A request that asks only to compile (OutLayer's `params.compile_only`, or no limits) warms
        // the cache: it is answered with the module's hash, size and compile time, and charged the
        // base fee plus the compile time. Limits given with it are checked, then unused.
        let compile_only = params.compile_only || resource_limits.is_none();
        if let Some(limits) = &resource_limits {
            require_valid(validate_limits(limits, &self.max_limits));
        }
        let resource_limits = resource_limits.unwrap_or(NO_LIMITS);
        let input_data = input_data.unwrap_or_default();
        require_valid(validate_input(&input_data));
        if let Some(secrets_ref) = &secrets_ref {
            require_valid(validate_secrets_ref(secrets_ref));
        }
        let payer_account_id = payer_account_id.map(|payer| {
            payer.parse::<AccountId>().unwrap_or_else(|e| {
                env::panic_str(&format!(
                    "payer_account_id must be a valid NEAR account id, got {payer:?}: {e}"
                ))
            })
        });
        let required_gas = CALLBACK_GAS.saturating_add(MIN_REQUEST_GAS);
        if env::prepaid_gas() < required_gas {
            env::panic_str(&format!(
                "attach at least {} Tgas: {} Tgas are reserved for the result callback, got {} Tgas",
                required_gas.as_tgas(),
                CALLBACK_GAS.as_tgas(),
                env::prepaid_gas().as_tgas()
            ));
        }
        // The deposit is checked once the request is stored (below), against the estimate plus the
        // storage it measurably takes, so a client learns the whole amount from one failed call.
        let deposit = env::attached_deposit().as_yoctonear();
        // The pricing is fixed now: the request is charged at it whatever `set_pricing` does later.
        let pricing = self.pricing.clone();
        let estimate = if compile_only {
            pricing.base_fee.0
        } else {
            estimate_cost(&pricing, &resource_limits)
        };

        let request_id = self.next_request_id;
        self.next_request_id += 1;
        let storage_before = env::storage_usage();

        let callback_args = format!("{{\"request_id\":{request_id}}}");
        let yield_promise = env::promise_yield_create(
            CALLBACK_METHOD,
            callback_args,
            CALLBACK_GAS,
            GasWeight(0),
            DATA_ID_REGISTER,
        );
        let data_id = env::read_register(DATA_ID_REGISTER)
            .map(|bytes| near_sdk::bs58::encode(bytes).into_string())
            .unwrap_or_else(|| env::panic_str("promise_yield_create returned no data id"));

        let request = ExecutionRequest {
            request_id,
            data_id: data_id.clone(),
            sender_id: env::predecessor_account_id(),
            code_source,
            wasm_url,
            source_kind,
            payer_account_id,
            resource_limits,
            input_data,
            secrets_ref,
            response_format: response_format.unwrap_or_default(),
            payment: U128(deposit),
            created_at_block: env::block_height(),
            created_at_ns: env::block_timestamp(),
            resolved: false,
            pricing: Some(pricing),
            include_stderr: params.include_stderr,
            compile_only,
            // Nothing runs, so nothing is seeded.
            seed_public_key: (!compile_only)
                .then(|| self.seed_public_key.clone())
                .flatten(),
        };
        let event = PendingRequest::from(&request);
        self.requests.insert(request_id, request);
        self.pending.insert(request_id, 0);
        self.requests.flush();
        self.pending.flush();

        // Pending requests pay for the state they occupy; it is freed (and so refunded) on completion.
        // The data id is stored base58, whose length varies with the 32 bytes (usually 43 or 44
        // characters, at most 44): the reserve counts the longest, so the amount quoted below also
        // suffices on a retry, which gets another data id.
        let storage_bytes = env::storage_usage()
            .saturating_sub(storage_before)
            .saturating_add(MAX_DATA_ID_LEN.saturating_sub(data_id.len()) as u64);
        let storage_cost = storage_cost(storage_bytes);
        let required = estimate.saturating_add(storage_cost);
        if deposit < required {
            env::panic_str(&format!(
                "attached deposit {deposit} yoctoNEAR is too small: {required} yoctoNEAR is required \
                 (estimated cost {estimate} + storage of the pending request {storage_cost}; \
                 the storage part is refunded when the request completes)"
            ));
        }

        // The index keeps the request's storage: a two-step output must fit in what is left of the
        // deposit (`submit_execution_output`). Same size as the placeholder, so storage is unchanged.
        self.pending.insert(request_id, storage_bytes);
        self.pending.flush();

        self.stats.total_requests += 1;
        self.stats.pending += 1;
        OutlayerEvent::ExecutionRequested(vec![event]).emit();
        env::promise_return(yield_promise);
    }

    /// Stores an output too large for the 1024-byte resume payload; `resolve_execution` then follows
    /// with `output` omitted. Calling it again before the resolve replaces the stored output. The
    /// request's deposit pays for the output's storage while it is held: beyond the request's estimate
    /// and its own storage, it must cover the output's bytes, else the call fails and says how much.
    pub fn submit_execution_output(&mut self, request_id: u64, output: ExecutionOutput) {
        self.assert_operator();
        let request = self.unresolved_request(request_id);
        let json = serde_json::to_string(&output)
            .unwrap_or_else(|e| env::panic_str(&format!("output cannot be serialized: {e}")));
        if json.len() > MAX_OUTPUT_BYTES {
            env::panic_str(&format!(
                "output of request {request_id} is {} bytes as JSON; at most {MAX_OUTPUT_BYTES} are accepted",
                json.len()
            ));
        }
        let output_bytes = json.len() as u64;
        self.outputs.remove(&request_id);
        self.outputs.flush();
        let storage_before = env::storage_usage();
        self.outputs.insert(request_id, json);
        self.outputs.flush();
        let output_storage = env::storage_usage().saturating_sub(storage_before);
        let request_storage = self.pending.get(&request_id).copied().unwrap_or(0);
        let estimate = estimate_cost(request.pricing_or(&self.pricing), &request.resource_limits);
        let required = estimate
            .saturating_add(storage_cost(request_storage))
            .saturating_add(storage_cost(output_storage));
        if request.payment.0 < required {
            env::panic_str(&format!(
                "the deposit of request {request_id} ({} yoctoNEAR) does not cover the storage of \
                 its {output_storage}-byte output: {required} yoctoNEAR would be required (estimated \
                 cost {estimate} + storage of the request {} + of the output {}); resolve it as \
                 failed or with a shorter output",
                request.payment.0,
                storage_cost(request_storage),
                storage_cost(output_storage)
            ));
        }
        OutlayerEvent::OutputSubmitted(vec![OutputSubmittedData {
            request_id,
            output_bytes,
        }])
        .emit();
    }

    /// The operator's answer: resumes the request's yield with `response` as payload. A request can be
    /// resolved once; a second call fails with "not found or already resolved". The request's input
    /// is dropped (a resolved request reads `input_data: ""` until its callback settles it).
    pub fn resolve_execution(&mut self, request_id: u64, response: ExecutionResponse) {
        self.assert_operator();
        let mut request = self.unresolved_request(request_id);
        let two_step = self.outputs.contains_key(&request_id);
        if two_step && response.output.is_some() {
            env::panic_str(&format!(
                "request {request_id} already has an output from submit_execution_output; \
                 resolve it with the output omitted"
            ));
        }
        if let Some(problem) = response.evidence.as_ref().and_then(Evidence::problem) {
            env::panic_str(&format!("response for request {request_id}: {problem}"));
        }
        check_seed_signature(&request, &response);
        let payload = serde_json::to_vec(&response)
            .unwrap_or_else(|e| env::panic_str(&format!("response cannot be serialized: {e}")));
        if payload.len() > MAX_YIELD_PAYLOAD_BYTES {
            env::panic_str(&format!(
                "response for request {request_id} is {} bytes, over the {MAX_YIELD_PAYLOAD_BYTES}-byte \
                 yield payload limit: store the output with submit_execution_output first and resolve \
                 with the output omitted (and keep the error short)",
                payload.len()
            ));
        }
        let data_id = decode_data_id(&request.data_id);
        if !env::promise_yield_resume(&data_id, payload) {
            env::panic_str(&format!(
                "the yield of request {request_id} is no longer pending (it timed out); \
                 the sender is refunded by the timeout callback"
            ));
        }
        request.resolved = true;
        // The run is over: the input (up to 256 KiB) is dropped now, at the operator's expense, so the
        // callback never reads or frees it within its fixed gas reserve.
        request.input_data = String::new();
        self.requests.insert(request_id, request);
        self.pending.remove(&request_id);
        OutlayerEvent::ExecutionResolved(vec![ExecutionResolvedData {
            request_id,
            success: response.success,
            two_step,
        }])
        .emit();
    }

    /// The yield's callback: runs once, after a resolve or after the yield timed out. Settles the deposit
    /// and hands the output back to the original caller.
    #[private]
    pub fn on_execution_response(
        &mut self,
        request_id: u64,
        #[callback_result] response: Result<ExecutionResponse, PromiseError>,
    ) -> Option<Box<RawValue>> {
        let Some(request) = self.requests.remove(&request_id) else {
            // Cancelled (emergency or stale) before the callback ran; the sender was refunded then.
            env::log_str(&format!(
                "request {request_id} was already settled; nothing to do"
            ));
            return None;
        };
        self.pending.remove(&request_id);
        let stored_output = self
            .outputs
            .remove(&request_id)
            .and_then(|json| serde_json::from_str::<ExecutionOutput>(&json).ok());

        let (success, output, error, used, timed_out, evidence) = match response {
            Ok(response) => (
                response.success,
                response.output.or(stored_output),
                response
                    .error
                    .map(|error| public_error(&error, request.include_stderr)),
                response.resources_used,
                false,
                response.evidence,
            ),
            Err(_) => (
                false,
                None,
                Some(TIMEOUT_ERROR.to_string()),
                ResourceMetrics::default(),
                true,
                None,
            ),
        };

        // A compile-only request ran nothing: whatever the answer says, only compile time is charged.
        let used = if request.compile_only {
            ResourceMetrics {
                instructions: 0,
                time_ms: 0,
                ..used
            }
        } else {
            used
        };
        let pricing = request.pricing_or(&self.pricing);
        let settlement = if timed_out {
            Settlement::for_timeout(pricing, request.payment.0)
        } else {
            Settlement::for_run(pricing, request.payment.0, &used)
        };
        if settlement.refunded > 0 {
            near_sdk::Promise::new(request.payer().clone())
                .transfer(NearToken::from_yoctonear(settlement.refunded))
                .detach();
        }
        self.stats.pending = self.stats.pending.saturating_sub(1);
        match (success, timed_out) {
            (true, _) => self.stats.successful += 1,
            (false, true) => self.stats.timed_out += 1,
            (false, false) => self.stats.failed += 1,
        }
        self.stats.total_fees_collected = U128(
            self.stats
                .total_fees_collected
                .0
                .saturating_add(settlement.charged),
        );

        OutlayerEvent::ExecutionCompleted(vec![ExecutionCompletedData {
            request_id,
            payer_account_id: request.payer().clone(),
            sender_id: request.sender_id,
            success,
            error,
            timed_out,
            resources_used: used,
            payment_charged: U128(settlement.charged),
            payment_refunded: U128(settlement.refunded),
            evidence,
        }])
        .emit();

        if success {
            output.map(ExecutionOutput::into_client_value)
        } else {
            None
        }
    }

    /// Lets the sender take back the whole deposit of a request whose callback never ran, once the
    /// stale timeout has passed since it was made.
    pub fn cancel_stale_execution(&mut self, request_id: u64) {
        let request = self.existing_request(request_id);
        let caller = env::predecessor_account_id();
        if caller != request.sender_id {
            env::panic_str(&format!(
                "only the sender {} may cancel request {request_id}, called by {caller}",
                request.sender_id
            ));
        }
        let age_ms = env::block_timestamp().saturating_sub(request.created_at_ns) / 1_000_000;
        if age_ms < self.stale_timeout_ms {
            env::panic_str(&format!(
                "request {request_id} is {age_ms} ms old; it can be cancelled after {} ms",
                self.stale_timeout_ms
            ));
        }
        self.cancel_with_full_refund(request, "stale");
    }

    /// Owner only: settles a request at once with a full refund (e.g. after an operator incident).
    pub fn emergency_cancel_execution(&mut self, request_id: u64) {
        self.assert_owner();
        let request = self.existing_request(request_id);
        self.cancel_with_full_refund(request, "emergency");
    }
}

impl Contract {
    fn existing_request(&self, request_id: u64) -> ExecutionRequest {
        self.requests
            .get(&request_id)
            .cloned()
            .unwrap_or_else(|| env::panic_str(&format!("request {request_id} not found")))
    }

    fn unresolved_request(&self, request_id: u64) -> ExecutionRequest {
        match self.requests.get(&request_id) {
            Some(request) if !request.resolved => request.clone(),
            _ => env::panic_str(&format!(
                "request {request_id} not found or already resolved"
            )),
        }
    }

    fn cancel_with_full_refund(&mut self, request: ExecutionRequest, reason: &str) {
        let request_id = request.request_id;
        self.requests.remove(&request_id);
        self.pending.remove(&request_id);
        self.outputs.remove(&request_id);
        if request.payment.0 > 0 {
            near_sdk::Promise::new(request.payer().clone())
                .transfer(NearToken::from_yoctonear(request.payment.0))
                .detach();
        }
        self.stats.pending = self.stats.pending.saturating_sub(1);
        self.stats.cancelled += 1;
        OutlayerEvent::ExecutionCancelled(vec![ExecutionCancelledData {
            request_id,
            payer_account_id: request.payer().clone(),
            sender_id: request.sender_id,
            cancelled_by: env::predecessor_account_id(),
            reason: reason.to_string(),
            payment_refunded: request.payment,
        }])
        .emit();
    }
}

/// Exactly one of the two shapes names the code: a repository (`code_source`, or `source.GitHub`,
/// both stored as the same [`CodeSource`]) or a prebuilt module (`source.WasmUrl`, validated and
/// stored as sent, its hash in lower case).
fn code_source_of(
    code_source: Option<CodeSource>,
    source: Option<ExecutionSource>,
) -> (Option<CodeSource>, Option<WasmUrlSource>, SourceKind) {
    match (code_source, source) {
        (Some(code_source), None) => (Some(code_source), None, SourceKind::CodeSource),
        (
            None,
            Some(ExecutionSource::GitHub {
                repo,
                commit,
                build_target,
            }),
        ) => (
            Some(CodeSource {
                repo,
                commit,
                build_target,
            }),
            None,
            SourceKind::GitHub,
        ),
        (
            None,
            Some(ExecutionSource::WasmUrl {
                url,
                hash,
                build_target,
            }),
        ) => {
            require_valid(validate_wasm_url(&url, &hash, &build_target));
            (
                None,
                Some(WasmUrlSource {
                    url,
                    hash: hash.to_ascii_lowercase(),
                    build_target,
                }),
                SourceKind::WasmUrl,
            )
        }
        (Some(_), Some(_)) => env::panic_str(
            "give the code once: either code_source {repo, commit, build_target?} or source \
             {\"GitHub\": {...}} / {\"WasmUrl\": {...}}, not both",
        ),
        (None, None) => env::panic_str(
            "the code to run is missing: pass code_source {repo, commit, build_target?} or source \
             {\"GitHub\": {repo, commit, build_target?}} / {\"WasmUrl\": {url, hash, build_target}}",
        ),
    }
}

/// A successful answer to a request that recorded a seed key must carry that key's signature over
/// the request's [`seed_message`] (its SHA-256 seeded the run); any answer that carries one must
/// carry the right one. So the seed of every replayable run is fixed by the chain before the run.
fn check_seed_signature(request: &ExecutionRequest, response: &ExecutionResponse) {
    let request_id = request.request_id;
    let signature = response
        .evidence
        .as_ref()
        .and_then(|evidence| evidence.seed_signature.as_deref());
    let Some(key) = &request.seed_public_key else {
        if signature.is_some() {
            env::panic_str(&format!(
                "request {request_id} recorded no seed key (none was published when it was made): \
                 its response must not carry a seed signature"
            ));
        }
        return;
    };
    let Some(signature) = signature else {
        if response.success {
            env::panic_str(&format!(
                "request {request_id} recorded the seed key {key}: a successful response must carry \
                 evidence.seed_signature"
            ));
        }
        return;
    };
    let signature = decode_seed_signature(signature).unwrap_or_else(|problem| {
        env::panic_str(&format!("response for request {request_id}: {problem}"))
    });
    // An ed25519 PublicKey is its curve byte followed by the 32 key bytes.
    let key_bytes = <&[u8; 32]>::try_from(&key.as_bytes()[1..]).unwrap_or_else(|_| {
        env::panic_str(&format!(
            "request {request_id}: seed key {key} is not an ed25519 key"
        ))
    });
    let message = seed_message(
        env::current_account_id().as_str(),
        request_id,
        &request.data_id,
    );
    if !env::ed25519_verify(&signature, &message, key_bytes) {
        env::panic_str(&format!(
            "response for request {request_id}: evidence.seed_signature is not the seed key {key}'s \
             signature over the request's seed message"
        ));
    }
}

fn storage_cost(bytes: u64) -> u128 {
    u128::from(bytes).saturating_mul(env::storage_byte_cost().as_yoctonear())
}

fn decode_data_id(encoded: &str) -> near_sdk::CryptoHash {
    near_sdk::bs58::decode(encoded)
        .into_vec()
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .unwrap_or_else(|| env::panic_str(&format!("stored data id {encoded:?} is corrupt")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::*;
    use crate::types::MAX_ANNOUNCED_INPUT_BYTES;
    use crate::types::{Pricing, ResponseFormat};
    use near_sdk::json_types::U128;
    use near_sdk::testing_env;

    const DEPOSIT: u128 = 10u128.pow(24); // 1 NEAR

    fn code() -> CodeSource {
        CodeSource {
            repo: "https://github.com/alice/echo".to_string(),
            commit: "0123456789abcdef0123456789abcdef01234567".to_string(),
            build_target: None,
        }
    }

    fn limits() -> ResourceLimits {
        ResourceLimits {
            max_instructions: 1_000_000_000,
            max_memory_mb: 64,
            max_execution_seconds: 5,
        }
    }

    /// A contract with cheap pricing so that 1 NEAR covers estimate + storage comfortably.
    fn contract() -> Contract {
        let mut contract = new_contract();
        contract.pricing = Pricing {
            base_fee: U128(1_000),
            per_million_instructions_fee: U128(10),
            per_ms_fee: U128(3),
            per_compile_ms_fee: U128(2),
        };
        contract
    }

    /// `request_execution` with the seed's flat `code_source` shape.
    fn request_with(
        contract: &mut Contract,
        code: CodeSource,
        limits: ResourceLimits,
        input: String,
        secrets: Option<SecretsReference>,
    ) {
        contract.request_execution(
            Some(code),
            None,
            Some(limits),
            Some(input),
            secrets,
            None,
            None,
            None,
        );
    }

    fn request(contract: &mut Contract, input: &str) -> ExecutionRequest {
        set_caller(user(), DEPOSIT);
        request_with(contract, code(), limits(), input.to_string(), None);
        let id = contract.next_request_id - 1;
        contract.get_request(id).expect("request stored")
    }

    fn response(success: bool, output: Option<ExecutionOutput>) -> ExecutionResponse {
        ExecutionResponse {
            success,
            output,
            error: (!success).then(|| "guest trapped".to_string()),
            resources_used: ResourceMetrics {
                instructions: 2_000_000,
                time_ms: 10,
                compile_time_ms: Some(100),
            },
            evidence: None,
        }
    }

    fn as_operator(data_id: &str) {
        set_caller(operator(), 0);
        reregister_yields(&[data_id.to_string()]);
    }

    fn as_callback() {
        set_caller(contract_account(), 0);
    }

    fn text(s: &str) -> ExecutionOutput {
        ExecutionOutput::Text(s.to_string())
    }

    #[test]
    fn request_is_stored_pending_and_announced() {
        let mut contract = contract();
        let request = request(&mut contract, "hello");
        assert_eq!(request.request_id, 0);
        assert_eq!(request.sender_id, user());
        assert_eq!(request.payment, U128(DEPOSIT));
        assert_eq!(request.response_format, ResponseFormat::Text);
        assert!(!request.resolved);
        assert!(request.data_id.len() >= 32);

        let event = event("execution_requested");
        assert_eq!(event["request_id"], 0);
        assert_eq!(event["input_data"], "hello");
        assert_eq!(event["input_omitted"], false);
        assert_eq!(event["payment"], DEPOSIT.to_string());
        assert_eq!(event["data_id"], request.data_id);

        let pending = contract.get_pending_requests(None, None);
        assert_eq!(pending, vec![PendingRequest::from(&request)]);
        assert_eq!(contract.get_stats().pending, 1);
        assert_eq!(contract.get_stats().total_requests, 1);
    }

    #[test]
    fn large_inputs_are_left_out_of_the_event_and_the_pending_page() {
        let mut contract = contract();
        let input = "x".repeat(MAX_ANNOUNCED_INPUT_BYTES);
        let request = request(&mut contract, &input);
        let event = event("execution_requested");
        assert_eq!(event["input_omitted"], true);
        assert!(event.get("input_data").is_none());
        let pending = contract.get_pending_requests(None, None);
        assert!(pending[0].input_omitted);
        assert_eq!(pending[0].input_data, None);
        assert_eq!(
            contract.get_request(request.request_id).unwrap().input_data,
            input
        );
    }

    #[test]
    // The whole amount at once, estimate and storage (not the estimate first, the storage on a retry).
    #[should_panic(
        expected = "yoctoNEAR is required (estimated cost 26000 + storage of the pending \
                               request"
    )]
    fn deposit_below_the_estimate_is_rejected_with_the_full_amount() {
        let mut contract = contract();
        // 1000 base + 1e9/1e6 × 10 + 5000 ms × 3 = 26_000
        set_caller(user(), 25_999);
        request_with(&mut contract, code(), limits(), String::new(), None);
    }

    #[test]
    #[should_panic(expected = "storage of the pending request")]
    fn deposit_must_also_cover_the_requests_storage() {
        let mut contract = contract();
        set_caller(user(), 26_000);
        request_with(&mut contract, code(), limits(), String::new(), None);
    }

    fn github(code: CodeSource) -> ExecutionSource {
        ExecutionSource::GitHub {
            repo: code.repo,
            commit: code.commit,
            build_target: code.build_target,
        }
    }

    /// `request_execution` with OutLayer's `source` shape and the given payer.
    fn request_with_source(contract: &mut Contract, source: ExecutionSource, payer: Option<&str>) {
        set_caller(user(), DEPOSIT);
        contract.request_execution(
            None,
            Some(source),
            Some(limits()),
            Some("hi".to_string()),
            None,
            None,
            payer.map(str::to_string),
            None,
        );
    }

    #[test]
    fn both_request_shapes_store_the_same_code_and_say_which_was_used() {
        let mut seed = contract();
        let by_code_source = request(&mut seed, "hi");
        let seed_event = event("execution_requested");
        assert_eq!(seed_event["source_kind"], "CodeSource");

        let mut outlayer = contract();
        request_with_source(&mut outlayer, github(code()), None);
        let by_source = outlayer.get_request(0).unwrap();
        let event = event("execution_requested");
        assert_eq!(event["source_kind"], "GitHub");
        assert_eq!(event["code_source"], seed_event["code_source"]);
        assert_eq!(by_source.source_kind, SourceKind::GitHub);
        assert_eq!(by_source.code_source, by_code_source.code_source);
        assert_eq!(
            ExecutionRequest {
                source_kind: SourceKind::CodeSource,
                ..by_source
            },
            by_code_source
        );
    }

    #[test]
    #[should_panic(expected = "give the code once: either code_source")]
    fn both_shapes_at_once_are_rejected() {
        let mut contract = contract();
        set_caller(user(), DEPOSIT);
        contract.request_execution(
            Some(code()),
            Some(github(code())),
            Some(limits()),
            None,
            None,
            None,
            None,
            None,
        );
    }

    #[test]
    #[should_panic(expected = "the code to run is missing: pass code_source")]
    fn a_request_without_code_is_rejected() {
        let mut contract = contract();
        set_caller(user(), DEPOSIT);
        contract.request_execution(None, None, Some(limits()), None, None, None, None, None);
    }

    #[test]
    #[should_panic(expected = "repo must look like https://github.com/<owner>/<name>")]
    fn the_github_source_is_validated_like_code_source() {
        let mut contract = contract();
        let mut code = code();
        code.repo = "https://evil.example/x/y".to_string();
        request_with_source(&mut contract, github(code), None);
    }

    #[test]
    fn wasm_url_sources_are_stored_and_reported_as_sent() {
        let mut contract = contract();
        let source = ExecutionSource::WasmUrl {
            url: "https://example.com/m.wasm?v=2".to_string(),
            hash: "AB".repeat(32),
            build_target: "wasm32-wasip1".to_string(),
        };
        request_with_source(&mut contract, source, None);
        let stored = contract.get_request(0).unwrap();
        assert_eq!(stored.source_kind, SourceKind::WasmUrl);
        assert_eq!(stored.code_source, None);
        let wasm_url = WasmUrlSource {
            url: "https://example.com/m.wasm?v=2".to_string(),
            hash: "ab".repeat(32),
            build_target: "wasm32-wasip1".to_string(),
        };
        assert_eq!(stored.wasm_url.as_ref(), Some(&wasm_url));
        // The operator's page and the event carry it the same way, without a code_source.
        let pending = contract.get_pending_requests(None, None);
        assert_eq!(pending[0].wasm_url.as_ref(), Some(&wasm_url));
        let event = event("execution_requested");
        assert_eq!(event["source_kind"], "WasmUrl");
        assert_eq!(event["wasm_url"]["url"], "https://example.com/m.wasm?v=2");
        assert_eq!(event["wasm_url"]["hash"], "ab".repeat(32));
        assert!(event.get("code_source").is_none(), "{event}");
    }

    #[test]
    #[should_panic(expected = "source.WasmUrl.hash must be the module's sha256")]
    fn wasm_url_sources_need_a_sha256() {
        let mut contract = contract();
        let source = ExecutionSource::WasmUrl {
            url: "https://example.com/m.wasm".to_string(),
            hash: "abc".to_string(),
            build_target: "wasm32-wasip1".to_string(),
        };
        request_with_source(&mut contract, source, None);
    }

    #[test]
    #[should_panic(expected = "source.WasmUrl.url must start with https://")]
    fn wasm_url_sources_over_http_are_rejected() {
        let mut contract = contract();
        let source = ExecutionSource::WasmUrl {
            url: "http://example.com/m.wasm".to_string(),
            hash: "ab".repeat(32),
            build_target: "wasm32-wasip1".to_string(),
        };
        request_with_source(&mut contract, source, None);
    }

    /// A compile-only request: by `params.compile_only` (with limits, checked then unused) or by
    /// leaving the limits out.
    fn compile_only_request(contract: &mut Contract, by_params: bool, deposit: u128) {
        set_caller(user(), deposit);
        let params = RequestParams {
            compile_only: by_params,
            ..RequestParams::default()
        };
        contract.request_execution(
            Some(code()),
            None,
            by_params.then(limits),
            None,
            None,
            None,
            None,
            Some(params),
        );
    }

    #[test]
    fn compile_only_requests_are_stored_announced_and_not_seeded() {
        for by_params in [true, false] {
            let mut contract = contract();
            set_caller(operator(), 0);
            let key = seed_key("operator").public_key().to_string();
            contract.set_seed_public_key(key.parse().unwrap());
            compile_only_request(&mut contract, by_params, DEPOSIT);
            let stored = contract.get_request(0).unwrap();
            assert!(stored.compile_only, "by_params {by_params}");
            assert_eq!(
                stored.seed_public_key, None,
                "nothing runs, nothing is seeded"
            );
            let event = event("execution_requested");
            assert_eq!(event["compile_only"], true);
            if !by_params {
                assert_eq!(event["resource_limits"]["max_instructions"], 0);
            }
        }
    }

    #[test]
    fn a_compile_only_deposit_covers_the_base_fee_and_storage() {
        // Pricing: base 1,000 yocto; the limits' estimate would be ~10^10 more.
        let mut contract = contract();
        let error = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            compile_only_request(&mut contract, false, 1_000)
        }))
        .unwrap_err();
        let message = error.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(
            message.contains("(estimated cost 1000 + storage"),
            "{message}"
        );
    }

    #[test]
    fn a_compile_only_answer_is_charged_base_and_compile_time_only() {
        let mut contract = contract();
        compile_only_request(&mut contract, true, DEPOSIT);
        let request = contract.get_request(0).unwrap();
        // Whatever the answer claims to have run, nothing ran.
        let mut answer = response(true, Some(text("{}")));
        answer.resources_used.compile_time_ms = Some(40);
        as_operator(&request.data_id);
        contract.resolve_execution(0, answer.clone());
        as_callback();
        contract.on_execution_response(0, Ok(answer));
        let completed = event("execution_completed");
        assert_eq!(completed["payment_charged"], (1_000 + 40 * 2).to_string());
        assert_eq!(completed["resources_used"]["instructions"], 0);
        assert_eq!(completed["resources_used"]["time_ms"], 0);
        assert_eq!(completed["resources_used"]["compile_time_ms"], 40);
    }

    #[test]
    #[should_panic(expected = "max_instructions 2000000000000 exceeds the maximum")]
    fn limits_given_with_compile_only_are_still_checked() {
        let mut contract = contract();
        set_caller(user(), DEPOSIT);
        let params = RequestParams {
            compile_only: true,
            ..RequestParams::default()
        };
        let over = ResourceLimits {
            max_instructions: 2_000_000_000_000,
            ..limits()
        };
        contract.request_execution(
            Some(code()),
            None,
            Some(over),
            None,
            None,
            None,
            None,
            Some(params),
        );
    }

    #[test]
    #[should_panic(expected = "payer_account_id must be a valid NEAR account id")]
    fn an_invalid_payer_is_rejected() {
        let mut contract = contract();
        request_with_source(&mut contract, github(code()), Some("Not An Account"));
    }

    #[test]
    fn refunds_and_charges_go_to_the_payer() {
        let mut contract = contract();
        request_with_source(&mut contract, github(code()), Some("payer.near"));
        let payer: AccountId = "payer.near".parse().unwrap();
        let stored = contract.get_request(0).unwrap();
        assert_eq!(stored.sender_id, user());
        assert_eq!(stored.payer_account_id, Some(payer.clone()));
        assert_eq!(
            event("execution_requested")["payer_account_id"],
            "payer.near"
        );

        as_callback();
        contract.on_execution_response(0, Ok(response(true, Some(text("HI")))));
        let cost = 1_000 + 20 + 30 + 200;
        assert_eq!(transfers(), vec![(payer.clone(), DEPOSIT - cost)]);
        let completed = event("execution_completed");
        assert_eq!(completed["sender_id"], user().to_string());
        assert_eq!(completed["payer_account_id"], "payer.near");
        assert_eq!(completed["payment_charged"], cost.to_string());
    }

    #[test]
    fn without_a_payer_the_sender_is_refunded_and_named_as_payer() {
        let mut contract = contract();
        request(&mut contract, "hi");
        assert!(
            event("execution_requested")
                .get("payer_account_id")
                .is_none()
        );
        as_callback();
        contract.on_execution_response(0, Err(PromiseError::Failed));
        assert_eq!(transfers(), vec![(user(), DEPOSIT - 1_000)]);
        assert_eq!(
            event("execution_completed")["payer_account_id"],
            user().to_string()
        );
    }

    #[test]
    fn cancels_refund_the_payer() {
        let mut contract = contract();
        request_with_source(&mut contract, github(code()), Some("payer.near"));
        set_caller(owner(), 0);
        contract.emergency_cancel_execution(0);
        let payer: AccountId = "payer.near".parse().unwrap();
        assert_eq!(transfers(), vec![(payer, DEPOSIT)]);
        assert_eq!(
            event("execution_cancelled")["payer_account_id"],
            "payer.near"
        );
    }

    #[test]
    #[should_panic(expected = "the contract is paused")]
    fn paused_contract_rejects_requests() {
        let mut contract = contract();
        contract.paused = true;
        request(&mut contract, "x");
    }

    #[test]
    #[should_panic(expected = "max_execution_seconds 61 exceeds the maximum of 60")]
    fn limits_over_the_caps_are_rejected() {
        let mut contract = contract();
        set_caller(user(), DEPOSIT);
        let mut limits = limits();
        limits.max_execution_seconds = 61;
        request_with(&mut contract, code(), limits, String::new(), None);
    }

    #[test]
    #[should_panic(expected = "repo must look like https://github.com/<owner>/<name>")]
    fn bad_repo_is_rejected() {
        let mut contract = contract();
        set_caller(user(), DEPOSIT);
        let mut code = code();
        code.repo = "https://evil.example/x/y".to_string();
        request_with(&mut contract, code, limits(), String::new(), None);
    }

    #[test]
    #[should_panic(expected = "commit must not start with '-'")]
    fn option_like_commit_is_rejected() {
        let mut contract = contract();
        set_caller(user(), DEPOSIT);
        let mut code = code();
        code.commit = "--upload-pack=touch".to_string();
        request_with(&mut contract, code, limits(), String::new(), None);
    }

    #[test]
    #[should_panic(expected = "is not supported; the only supported target is")]
    fn other_build_targets_are_rejected() {
        let mut contract = contract();
        set_caller(user(), DEPOSIT);
        let mut code = code();
        code.build_target = Some("x86_64".to_string());
        request_with(&mut contract, code, limits(), String::new(), None);
    }

    #[test]
    #[should_panic(expected = "input_data must be at most 262144 bytes")]
    fn oversized_input_is_rejected() {
        let mut contract = contract();
        request(&mut contract, &"x".repeat(256 * 1024 + 1));
    }

    #[test]
    #[should_panic(expected = "profile must be 1-64 characters")]
    fn bad_secrets_profile_is_rejected() {
        let mut contract = contract();
        set_caller(user(), DEPOSIT);
        let secrets = SecretsReference {
            profile: "bad profile".to_string(),
            account_id: user(),
        };
        request_with(
            &mut contract,
            code(),
            limits(),
            String::new(),
            Some(secrets),
        );
    }

    #[test]
    #[should_panic(expected = "attach at least 30 Tgas")]
    fn too_little_gas_is_rejected_up_front() {
        let mut contract = contract();
        testing_env!(
            context(user(), DEPOSIT)
                .prepaid_gas(near_sdk::Gas::from_tgas(25))
                .build()
        );
        request_with(&mut contract, code(), limits(), String::new(), None);
    }

    #[test]
    fn success_charges_usage_and_refunds_the_rest() {
        let mut contract = contract();
        let request = request(&mut contract, "hi");
        as_operator(&request.data_id);
        contract.resolve_execution(0, response(true, Some(text("HI"))));
        let resolved = event("execution_resolved");
        assert_eq!(resolved["two_step"], false);
        let stored = contract.get_request(0).unwrap();
        assert!(stored.resolved);
        assert_eq!(stored.input_data, "", "the input is dropped at the resolve");
        assert!(contract.get_pending_requests(None, None).is_empty());

        as_callback();
        let returned = contract.on_execution_response(0, Ok(response(true, Some(text("HI")))));
        assert_eq!(
            returned.map(|raw| raw.get().to_string()),
            Some("\"HI\"".to_string())
        );
        // 1000 base + 2e6/1e6 × 10 + 10 ms × 3 + 100 compile ms × 2
        let cost = 1_000 + 20 + 30 + 200;
        assert_eq!(transfers(), vec![(user(), DEPOSIT - cost)]);
        let completed = event("execution_completed");
        assert_eq!(completed["success"], true);
        assert_eq!(completed["payment_charged"], cost.to_string());
        assert_eq!(completed["payment_refunded"], (DEPOSIT - cost).to_string());
        assert_eq!(completed["resources_used"]["instructions"], 2_000_000);
        assert_eq!(contract.get_request(0), None);
        let stats = contract.get_stats();
        assert_eq!((stats.successful, stats.pending), (1, 0));
        assert_eq!(stats.total_fees_collected, U128(cost));
    }

    fn evidence() -> Evidence {
        Evidence {
            wasm_sha256: "a5".repeat(32),
            commit: Some("0123456789abcdef0123456789abcdef01234567".to_string()),
            toolchain: Some("rustc 1.95.0 (59807616e 2026-04-14)".to_string()),
            compiler: Some("outlayer-compiler 0.1.0".to_string()),
            seed_signature: None,
        }
    }

    fn seed_key(name: &str) -> near_crypto::SecretKey {
        near_crypto::SecretKey::from_seed(near_crypto::KeyType::ED25519, name)
    }

    /// A contract whose seed key is `seed_key("operator")`, and a request made after it was set.
    fn keyed_request(contract: &mut Contract) -> ExecutionRequest {
        set_caller(operator(), 0);
        let public = seed_key("operator").public_key().to_string();
        contract.set_seed_public_key(public.parse().unwrap());
        request(contract, "hi")
    }

    /// `key`'s seed signature for request `request` on this test's contract account.
    fn seed_signature(key: &near_crypto::SecretKey, request: &ExecutionRequest) -> String {
        let message = seed_message(
            contract_account().as_str(),
            request.request_id,
            &request.data_id,
        );
        key.sign(&message).to_string()
    }

    fn signed(success: bool, signature: Option<String>) -> ExecutionResponse {
        let output = success.then(|| text("HI"));
        ExecutionResponse {
            evidence: Some(Evidence {
                seed_signature: signature,
                ..evidence()
            }),
            ..response(success, output)
        }
    }

    #[test]
    fn a_request_records_the_seed_key_current_when_it_was_made() {
        let mut contract = contract();
        let before = request(&mut contract, "hi");
        assert_eq!(before.seed_public_key, None);
        let keyed = keyed_request(&mut contract);
        let first_key = seed_key("operator").public_key().to_string();
        assert_eq!(
            keyed.seed_public_key.as_ref().map(ToString::to_string),
            Some(first_key.clone())
        );
        assert_eq!(
            event("execution_requested")["seed_public_key"],
            first_key.as_str()
        );
        // A later key changes new requests only.
        set_caller(owner(), 0);
        let second_key = seed_key("rotated").public_key().to_string();
        contract.set_seed_public_key(second_key.parse().unwrap());
        assert_eq!(
            event("seed_public_key_updated")["public_key"],
            second_key.as_str()
        );
        let stored = contract.get_request(keyed.request_id).unwrap();
        assert_eq!(
            stored.seed_public_key.map(|k| k.to_string()),
            Some(first_key)
        );
        let later = request(&mut contract, "hi");
        assert_eq!(
            later.seed_public_key.map(|k| k.to_string()),
            Some(second_key)
        );
    }

    #[test]
    fn the_seed_keys_signature_is_accepted_and_goes_into_the_event() {
        let mut contract = contract();
        let request = keyed_request(&mut contract);
        let signature = seed_signature(&seed_key("operator"), &request);
        let answer = signed(true, Some(signature.clone()));
        as_operator(&request.data_id);
        contract.resolve_execution(request.request_id, answer.clone());
        as_callback();
        contract.on_execution_response(request.request_id, Ok(answer.clone()));
        let completed = event("execution_completed");
        assert_eq!(completed["evidence"]["seed_signature"], signature.as_str());
        // The whole evidence with a signature still leaves most of the 1,024-byte payload.
        let size = serde_json::to_vec(&answer).unwrap().len();
        assert!(size < 512, "a signed answer is {size} bytes");
    }

    #[test]
    #[should_panic(expected = "is not the seed key")]
    fn another_keys_signature_is_refused() {
        let mut contract = contract();
        let request = keyed_request(&mut contract);
        let signature = seed_signature(&seed_key("another"), &request);
        as_operator(&request.data_id);
        contract.resolve_execution(request.request_id, signed(true, Some(signature)));
    }

    #[test]
    #[should_panic(expected = "is not the seed key")]
    fn a_signature_for_another_request_is_refused() {
        let mut contract = contract();
        let first = keyed_request(&mut contract);
        let second = request(&mut contract, "hi");
        let signature = seed_signature(&seed_key("operator"), &first);
        as_operator(&second.data_id);
        contract.resolve_execution(second.request_id, signed(true, Some(signature)));
    }

    #[test]
    #[should_panic(expected = "a successful response must carry evidence.seed_signature")]
    fn a_success_without_the_signature_is_refused() {
        let mut contract = contract();
        let request = keyed_request(&mut contract);
        as_operator(&request.data_id);
        contract.resolve_execution(request.request_id, signed(true, None));
    }

    #[test]
    fn a_failure_may_come_without_the_signature() {
        let mut contract = contract();
        let request = keyed_request(&mut contract);
        as_operator(&request.data_id);
        contract.resolve_execution(request.request_id, signed(false, None));
        assert_eq!(event("execution_resolved")["success"], false);
    }

    #[test]
    #[should_panic(expected = "its response must not carry a seed signature")]
    fn a_signature_on_a_request_without_a_seed_key_is_refused() {
        let mut contract = contract();
        let request = request(&mut contract, "hi");
        let signature = seed_signature(&seed_key("operator"), &request);
        as_operator(&request.data_id);
        contract.resolve_execution(request.request_id, signed(true, Some(signature)));
    }

    #[test]
    #[should_panic(expected = "evidence.seed_signature must be 64 bytes")]
    fn a_short_signature_is_refused_as_malformed() {
        let mut contract = contract();
        let request = keyed_request(&mut contract);
        as_operator(&request.data_id);
        contract.resolve_execution(
            request.request_id,
            signed(true, Some("ed25519:3yZe7d".into())),
        );
    }

    #[test]
    #[should_panic(expected = "only the owner or the operator may set the seed public key")]
    fn strangers_cannot_set_the_seed_key() {
        let mut contract = contract();
        set_caller(stranger(), 0);
        let public = seed_key("stranger").public_key().to_string();
        contract.set_seed_public_key(public.parse().unwrap());
    }

    #[test]
    #[should_panic(expected = "the seed public key must be an ed25519 key")]
    fn the_seed_key_must_be_ed25519() {
        let mut contract = contract();
        set_caller(owner(), 0);
        let secp = near_crypto::SecretKey::from_seed(near_crypto::KeyType::SECP256K1, "k")
            .public_key()
            .to_string();
        contract.set_seed_public_key(secp.parse().unwrap());
    }

    #[test]
    fn the_seed_message_is_the_documented_bytes() {
        // The operator and `outlayer-operator verify` sign and check exactly these bytes.
        assert_eq!(
            seed_message("outlayer.near", 7, "4Kx"),
            b"outlayer-seed-v1\0outlayer.near\x007\x004Kx".to_vec()
        );
    }

    #[test]
    fn the_evidence_goes_into_execution_completed_and_fits_the_payload() {
        let mut contract = contract();
        let request = request(&mut contract, "hi");
        let with_evidence = ExecutionResponse {
            evidence: Some(evidence()),
            ..response(true, Some(text("HI")))
        };
        as_operator(&request.data_id);
        contract.resolve_execution(0, with_evidence.clone());
        as_callback();
        contract.on_execution_response(0, Ok(with_evidence.clone()));
        let completed = event("execution_completed");
        assert_eq!(completed["evidence"]["wasm_sha256"], "a5".repeat(32));
        assert_eq!(
            completed["evidence"]["toolchain"],
            "rustc 1.95.0 (59807616e 2026-04-14)"
        );
        assert_eq!(completed["evidence"]["compiler"], "outlayer-compiler 0.1.0");
        // What the evidence adds to the resume payload (the common case stays far below 1024).
        let with = serde_json::to_vec(&with_evidence).unwrap().len();
        let without = serde_json::to_vec(&response(true, Some(text("HI"))))
            .unwrap()
            .len();
        assert_eq!(with - without, 233, "added bytes");
    }

    #[test]
    fn a_response_without_evidence_is_still_accepted() {
        // An operator from before the evidence: the event simply has none.
        let mut contract = contract();
        let request = request(&mut contract, "hi");
        as_operator(&request.data_id);
        contract.resolve_execution(0, response(true, Some(text("HI"))));
        as_callback();
        contract.on_execution_response(0, Ok(response(true, Some(text("HI")))));
        assert_eq!(event("execution_completed")["success"], true);
        assert!(event("execution_completed").get("evidence").is_none());
    }

    #[test]
    #[should_panic(expected = "evidence.wasm_sha256 must be 64 lower-case hex characters")]
    fn malformed_evidence_is_refused() {
        let mut contract = contract();
        let request = request(&mut contract, "hi");
        as_operator(&request.data_id);
        let bad = Evidence {
            wasm_sha256: "A5".repeat(32),
            ..evidence()
        };
        contract.resolve_execution(
            0,
            ExecutionResponse {
                evidence: Some(bad),
                ..response(true, Some(text("HI")))
            },
        );
    }

    #[test]
    fn evidence_problems_name_the_field() {
        assert_eq!(evidence().problem(), None);
        let long = Evidence {
            toolchain: Some("r".repeat(129)),
            ..evidence()
        };
        assert!(long.problem().unwrap().contains("evidence.toolchain"));
        let control = Evidence {
            compiler: Some("outlayer\ncompiler".to_string()),
            ..evidence()
        };
        assert!(control.problem().unwrap().contains("evidence.compiler"));
        let empty = Evidence {
            compiler: Some(String::new()),
            ..evidence()
        };
        assert!(empty.problem().is_some());
        let short_commit = Evidence {
            commit: Some("0123abc".to_string()),
            ..evidence()
        };
        assert!(short_commit.problem().unwrap().contains("evidence.commit"));
    }

    #[test]
    fn failure_is_charged_for_what_it_used_and_returns_null() {
        let mut contract = contract();
        request(&mut contract, "hi");
        as_callback();
        let returned = contract.on_execution_response(0, Ok(response(false, None)));
        assert!(returned.is_none());
        // Not the base fee alone: 1000 base + 20 instructions + 30 ms + 200 compile ms.
        let cost = 1_000 + 20 + 30 + 200;
        assert_eq!(transfers(), vec![(user(), DEPOSIT - cost)]);
        let completed = event("execution_completed");
        assert_eq!(completed["success"], false);
        assert_eq!(completed["payment_charged"], cost.to_string());
        assert_eq!(completed["error"], "execution failed: guest trapped");
        assert_eq!(contract.get_stats().failed, 1);
    }

    fn failure_with(error: &str) -> ExecutionResponse {
        ExecutionResponse {
            error: Some(error.to_string()),
            ..response(false, None)
        }
    }

    #[test]
    fn the_guests_stderr_is_published_only_when_the_request_asked() {
        let stderr = format!("thread main panicked: API_KEY=sk-{}", "x".repeat(1_000));
        let mut contract = contract();
        request(&mut contract, "hi");
        assert!(event("execution_requested").get("include_stderr").is_none());
        as_callback();
        contract.on_execution_response(0, Ok(failure_with(&stderr)));
        let published = event("execution_completed")["error"]
            .as_str()
            .unwrap()
            .to_string();
        assert_eq!(
            published,
            format!("execution failed: {}", &stderr[..256]),
            "a fixed kind and the first 256 bytes"
        );

        set_caller(user(), DEPOSIT);
        let params = RequestParams {
            include_stderr: true,
            ..RequestParams::default()
        };
        contract.request_execution(
            Some(code()),
            None,
            Some(limits()),
            None,
            None,
            None,
            None,
            Some(params),
        );
        assert_eq!(event("execution_requested")["include_stderr"], true);
        assert!(contract.get_request(1).unwrap().include_stderr);
        assert!(contract.get_pending_requests(Some(1), None)[0].include_stderr);
        as_callback();
        contract.on_execution_response(1, Ok(failure_with(&stderr)));
        assert_eq!(event("execution_completed")["error"], stderr.as_str());
    }

    #[test]
    fn a_request_pays_the_pricing_of_when_it_was_made() {
        let mut contract = contract();
        request(&mut contract, "hi");
        assert_eq!(
            contract.get_request(0).unwrap().pricing,
            Some(contract.get_pricing())
        );
        set_caller(owner(), 0);
        contract.set_pricing(Pricing {
            base_fee: U128(1_000_000),
            per_million_instructions_fee: U128(1_000_000),
            per_ms_fee: U128(1_000_000),
            per_compile_ms_fee: U128(1_000_000),
        });
        as_callback();
        contract.on_execution_response(0, Ok(response(true, Some(text("ok")))));
        let cost = 1_000 + 20 + 30 + 200;
        assert_eq!(
            event("execution_completed")["payment_charged"],
            cost.to_string()
        );
        assert_eq!(transfers(), vec![(user(), DEPOSIT - cost)]);

        // A timeout too: the base fee of the snapshot.
        request(&mut contract, "hi");
        as_callback();
        contract.on_execution_response(1, Err(PromiseError::Failed));
        assert_eq!(event("execution_completed")["payment_charged"], "1000000");
    }

    #[test]
    fn yield_timeout_refunds_all_but_the_base_fee() {
        let mut contract = contract();
        request(&mut contract, "hi");
        as_callback();
        let returned = contract.on_execution_response(0, Err(PromiseError::Failed));
        assert!(returned.is_none());
        assert_eq!(transfers(), vec![(user(), DEPOSIT - 1_000)]);
        let completed = event("execution_completed");
        assert_eq!(completed["timed_out"], true);
        assert_eq!(completed["payment_charged"], "1000");
        assert_eq!(contract.get_stats().timed_out, 1);
        assert_eq!(contract.get_request(0), None);
    }

    #[test]
    fn usage_above_the_deposit_is_capped() {
        let mut contract = contract();
        contract.pricing.per_ms_fee = U128(10u128.pow(6));
        request(&mut contract, "hi");
        as_callback();
        let mut expensive = response(true, Some(text("x")));
        expensive.resources_used.time_ms = u64::MAX;
        contract.on_execution_response(0, Ok(expensive));
        assert!(transfers().is_empty());
        assert_eq!(
            event("execution_completed")["payment_charged"],
            DEPOSIT.to_string()
        );
    }

    #[test]
    fn outputs_come_back_in_the_requested_form() {
        let mut contract = contract();
        for (output, expected) in [
            (ExecutionOutput::Bytes(vec![0, 1, 2, 255]), "\"AAEC/w==\""),
            (
                ExecutionOutput::Json(
                    RawValue::from_string("{\"a\":[1,2.5]}".to_string()).unwrap(),
                ),
                "{\"a\":[1,2.5]}",
            ),
        ] {
            request(&mut contract, "");
            let id = contract.next_request_id - 1;
            as_callback();
            let returned = contract.on_execution_response(id, Ok(response(true, Some(output))));
            assert_eq!(returned.unwrap().get(), expected);
        }
    }

    #[test]
    fn two_step_output_is_stored_then_handed_out() {
        let mut contract = contract();
        let request = request(&mut contract, "hi");
        let big = "y".repeat(5_000);
        as_operator(&request.data_id);
        contract.submit_execution_output(0, text(&big));
        assert_eq!(event("output_submitted")["output_bytes"], 5_000 + 11);
        contract.resolve_execution(0, response(true, None));
        assert_eq!(event("execution_resolved")["two_step"], true);

        as_callback();
        let returned = contract.on_execution_response(0, Ok(response(true, None)));
        assert_eq!(returned.unwrap().get(), format!("\"{big}\""));
        assert!(!contract.outputs.contains_key(&0));
    }

    /// A request with exactly `deposit` attached (the default limits cost 26,000 at test pricing).
    fn request_with_deposit(contract: &mut Contract, deposit: u128) {
        set_caller(user(), deposit);
        request_with(contract, code(), limits(), "hi".to_string(), None);
    }

    #[test]
    fn a_two_step_output_must_fit_in_the_deposit() {
        let byte = near_sdk::env::storage_byte_cost().as_yoctonear();
        let output = text(&"o".repeat(5_000));
        // The request's estimate and storage, plus 4,000 bytes: not enough for a 5,000-byte output.
        let request_bytes = {
            let mut probe = contract();
            request_with_deposit(&mut probe, DEPOSIT);
            *probe.pending.get(&0).unwrap()
        };
        assert!(request_bytes > 100, "the reserve is the request's storage");
        let small = 26_000 + u128::from(request_bytes + 4_000) * byte;
        let mut first = contract();
        request_with_deposit(&mut first, small);
        let data_id = first.get_request(0).unwrap().data_id;
        as_operator(&data_id);
        let refused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            first.submit_execution_output(0, output.clone())
        }));
        assert!(refused.is_err(), "the contract does not pay for the output");

        // With room for the output (its JSON and the key's overhead) it is stored.
        let mut contract = contract();
        request_with_deposit(&mut contract, small + 2_000 * byte);
        let data_id = contract.get_request(0).unwrap().data_id;
        as_operator(&data_id);
        contract.submit_execution_output(0, output);
        assert!(contract.outputs.contains_key(&0));
    }

    #[test]
    #[should_panic(expected = "does not cover the storage of its")]
    fn an_output_the_deposit_cannot_hold_is_refused_with_the_amounts() {
        let mut contract = contract();
        request_with_deposit(&mut contract, 10u128.pow(22));
        let data_id = contract.get_request(0).unwrap().data_id;
        as_operator(&data_id);
        contract.submit_execution_output(0, text(&"o".repeat(60_000)));
    }

    #[test]
    #[should_panic(expected = "over the 1024-byte yield payload limit")]
    fn oversized_resolve_payload_points_to_the_two_step_path() {
        let mut contract = contract();
        let request = request(&mut contract, "hi");
        as_operator(&request.data_id);
        contract.resolve_execution(0, response(true, Some(text(&"z".repeat(1_100)))));
    }

    #[test]
    #[should_panic(expected = "already has an output from submit_execution_output")]
    fn output_in_both_steps_is_rejected() {
        let mut contract = contract();
        let request = request(&mut contract, "hi");
        as_operator(&request.data_id);
        contract.submit_execution_output(0, text("a"));
        contract.resolve_execution(0, response(true, Some(text("b"))));
    }

    #[test]
    #[should_panic(expected = "is 65548 bytes as JSON; at most 65536 are accepted")]
    fn oversized_stored_output_is_rejected() {
        let mut contract = contract();
        let request = request(&mut contract, "hi");
        as_operator(&request.data_id);
        contract.submit_execution_output(0, text(&"o".repeat(65_537)));
    }

    #[test]
    #[should_panic(expected = "request 0 not found or already resolved")]
    fn a_request_resolves_only_once() {
        let mut contract = contract();
        let request = request(&mut contract, "hi");
        as_operator(&request.data_id);
        contract.resolve_execution(0, response(true, Some(text("1"))));
        contract.resolve_execution(0, response(true, Some(text("2"))));
    }

    #[test]
    #[should_panic(expected = "request 9 not found or already resolved")]
    fn resolving_an_unknown_request_fails() {
        let mut contract = contract();
        set_caller(operator(), 0);
        contract.resolve_execution(9, response(true, None));
    }

    #[test]
    #[should_panic(expected = "is no longer pending (it timed out)")]
    fn resolving_after_the_yield_expired_fails_cleanly() {
        let mut contract = contract();
        request(&mut contract, "hi");
        // No re-registered yield: the runtime reports the data id as unknown, as after a timeout.
        set_caller(operator(), 0);
        contract.resolve_execution(0, response(true, Some(text("late"))));
    }

    #[test]
    #[should_panic(expected = "only the operator")]
    fn only_the_operator_resolves() {
        let mut contract = contract();
        request(&mut contract, "hi");
        set_caller(stranger(), 0);
        contract.resolve_execution(0, response(true, None));
    }

    #[test]
    #[should_panic(expected = "only the operator")]
    fn only_the_operator_submits_outputs() {
        let mut contract = contract();
        request(&mut contract, "hi");
        set_caller(user(), 0);
        contract.submit_execution_output(0, text("x"));
    }

    #[test]
    fn pending_requests_page_in_id_order_from_a_cursor() {
        let mut contract = contract();
        for i in 0..5 {
            request(&mut contract, &i.to_string());
        }
        // Settle request 1 so the pending set has a hole.
        as_callback();
        contract.on_execution_response(1, Ok(response(false, None)));
        let ids = |page: Vec<PendingRequest>| page.iter().map(|r| r.request_id).collect::<Vec<_>>();
        assert_eq!(
            ids(contract.get_pending_requests(None, None)),
            vec![0, 2, 3, 4]
        );
        assert_eq!(
            ids(contract.get_pending_requests(Some(2), Some(2))),
            vec![2, 3]
        );
        assert_eq!(
            ids(contract.get_pending_requests(Some(5), None)),
            Vec::<u64>::new()
        );
        assert_eq!(contract.get_pending_requests(None, Some(1_000)).len(), 4);
    }

    #[test]
    fn stale_requests_can_be_cancelled_by_their_sender_for_a_full_refund() {
        let mut contract = contract();
        request(&mut contract, "hi");
        let eleven_minutes_ns = 11 * 60 * 1_000_000_000;
        testing_env!(
            context(user(), 0)
                .block_timestamp(eleven_minutes_ns)
                .build()
        );
        contract.cancel_stale_execution(0);
        assert_eq!(transfers(), vec![(user(), DEPOSIT)]);
        let cancelled = event("execution_cancelled");
        assert_eq!(cancelled["reason"], "stale");
        assert_eq!(cancelled["payment_refunded"], DEPOSIT.to_string());
        assert_eq!(contract.get_stats().cancelled, 1);

        // A late callback finds nothing to settle and refunds nothing twice.
        as_callback();
        assert!(
            contract
                .on_execution_response(0, Err(PromiseError::Failed))
                .is_none()
        );
        assert!(transfers().is_empty());
    }

    #[test]
    #[should_panic(expected = "it can be cancelled after 600000 ms")]
    fn fresh_requests_cannot_be_cancelled() {
        let mut contract = contract();
        request(&mut contract, "hi");
        contract.cancel_stale_execution(0);
    }

    #[test]
    #[should_panic(expected = "only the sender")]
    fn others_cannot_cancel_a_request() {
        let mut contract = contract();
        request(&mut contract, "hi");
        testing_env!(context(stranger(), 0).block_timestamp(u64::MAX / 2).build());
        contract.cancel_stale_execution(0);
    }

    #[test]
    fn owner_can_emergency_cancel() {
        let mut contract = contract();
        request(&mut contract, "hi");
        set_caller(owner(), 0);
        contract.emergency_cancel_execution(0);
        assert_eq!(transfers(), vec![(user(), DEPOSIT)]);
        assert_eq!(event("execution_cancelled")["reason"], "emergency");
        assert!(contract.get_pending_requests(None, None).is_empty());
    }

    #[test]
    #[should_panic(expected = "only the owner")]
    fn emergency_cancel_is_owner_only() {
        let mut contract = contract();
        request(&mut contract, "hi");
        set_caller(operator(), 0);
        contract.emergency_cancel_execution(0);
    }
}
