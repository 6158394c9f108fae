//! Wire types: the JSON shapes client contracts, the operator and indexers exchange with the contract.
//!
//! They follow the original OutLayer MVP so existing client code keeps working. u128 amounts are decimal
//! strings (`U128`), u64 counters are plain JSON numbers.

use near_sdk::base64::Engine as _;
use near_sdk::base64::engine::general_purpose::STANDARD as BASE64_STANDARD;
use near_sdk::env;
use near_sdk::json_types::U128;
use near_sdk::{AccountId, PublicKey, near};
use serde_json::value::RawValue;

/// The only build target the operator compiles for today.
pub const BUILD_TARGET_WASIP1: &str = "wasm32-wasip1";

/// Where the code to run comes from: a public GitHub repository at a commit or ref.
#[near(serializers = [json, borsh])]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeSource {
    /// `https://github.com/<owner>/<name>`.
    pub repo: String,
    /// A 40-hex commit SHA or a branch/tag the operator resolves to one.
    pub commit: String,
    /// Defaults to `wasm32-wasip1`, the only target supported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_target: Option<String>,
}

impl CodeSource {
    pub fn build_target_or_default(&self) -> &str {
        self.build_target.as_deref().unwrap_or(BUILD_TARGET_WASIP1)
    }
}

/// OutLayer's current `source` argument of `request_execution` (the seed's flat `code_source` is the
/// older shape of the same thing). Only the variants this contract understands are listed; any other
/// (e.g. OutLayer's `Project`) fails to deserialize.
#[near(serializers = [json])]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExecutionSource {
    GitHub {
        repo: String,
        commit: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        build_target: Option<String>,
    },
    /// A prebuilt module at an https URL, named by the sha256 of its bytes (64 hex).
    WasmUrl {
        url: String,
        hash: String,
        build_target: String,
    },
}

/// A prebuilt module by URL, as `source: {"WasmUrl": {url, hash, build_target}}` named it (the hash
/// stored in lower case). The operator downloads it (https, public addresses only, size-capped),
/// checks the sha256 before anything uses the bytes and caches it by that hash; nothing is built.
#[near(serializers = [json, borsh])]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WasmUrlSource {
    pub url: String,
    /// The module's sha256, 64 lower-case hex characters.
    pub hash: String,
    pub build_target: String,
}

/// Which argument of `request_execution` named the code: the seed's flat `code_source`, or OutLayer's
/// `source` enum with its variant. The code itself is always stored as a [`CodeSource`], so the
/// operator handles every kind the same way; this only tells clients and indexers what was sent.
#[near(serializers = [json, borsh])]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SourceKind {
    /// `code_source: {repo, commit, build_target?}`; also what requests stored before the kind
    /// existed report.
    #[default]
    CodeSource,
    /// `source: {"GitHub": {repo, commit, build_target?}}`.
    GitHub,
    /// `source: {"WasmUrl": {url, hash, build_target}}`: the request has `wasm_url` and no
    /// `code_source`.
    WasmUrl,
}

/// OutLayer's optional `params` of `request_execution`. Every option is off by default; the ones this
/// contract cannot honour yet are refused when switched on, never silently ignored.
#[near(serializers = [json])]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestParams {
    #[serde(default)]
    pub compile_only: bool,
    #[serde(default)]
    pub force_rebuild: bool,
    #[serde(default)]
    pub store_on_fastfs: bool,
    /// Publish the guest's whole error (its stderr may be part of it) on chain. Off by default: the
    /// `execution_completed` event then carries a fixed kind and at most the first
    /// [`ERROR_SUMMARY_BYTES`] of the message (see [`public_error`]).
    #[serde(default)]
    pub include_stderr: bool,
}

/// How much of a failure's message is published when the request did not ask for its stderr.
pub const ERROR_SUMMARY_BYTES: usize = 256;
/// The fixed kind a summarized failure starts with.
pub const FAILURE_KIND: &str = "execution failed";

/// The error of a failed run as it may go on chain: the whole message when the request asked for
/// its stderr (`params.include_stderr`), else `execution failed: ` and at most the first
/// [`ERROR_SUMMARY_BYTES`] bytes of the message (cut at a character boundary). The contract applies it
/// to the event; the operator applies it before it reports, since `resolve_execution`'s arguments are
/// public too. Idempotent.
pub fn public_error(message: &str, include_stderr: bool) -> String {
    if include_stderr {
        return message.to_string();
    }
    let body = message
        .strip_prefix(FAILURE_KIND)
        .and_then(|rest| rest.strip_prefix(": "))
        .unwrap_or(message);
    let mut end = body.len().min(ERROR_SUMMARY_BYTES);
    while !body.is_char_boundary(end) {
        end -= 1;
    }
    format!("{FAILURE_KIND}: {}", &body[..end])
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// The most a request may use; the deposit must cover what these limits could cost.
#[near(serializers = [json, borsh])]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceLimits {
    pub max_instructions: u64,
    pub max_memory_mb: u32,
    pub max_execution_seconds: u64,
}

/// What an execution actually used, as measured by the executor and the compiler.
#[near(serializers = [json, borsh])]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResourceMetrics {
    pub instructions: u64,
    pub time_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compile_time_ms: Option<u64>,
}

/// How the client wants the output handed back.
#[near(serializers = [json, borsh])]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ResponseFormat {
    #[default]
    Text,
    Json,
    Bytes,
}

/// Names the sealed secrets an execution should see as environment variables.
#[near(serializers = [json, borsh])]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretsReference {
    pub profile: String,
    /// The account that stored the secrets (their owner).
    pub account_id: AccountId,
}

/// The program's output, in the form the request asked for. Json outputs stay raw JSON text end to end.
#[near(serializers = [json])]
#[derive(Clone, Debug)]
pub enum ExecutionOutput {
    Text(String),
    Json(Box<RawValue>),
    Bytes(Vec<u8>),
}

impl ExecutionOutput {
    /// The value handed back to the client: Text as a string, Json as is, Bytes as a base64 string.
    pub fn into_client_value(self) -> Box<RawValue> {
        let as_string = match self {
            Self::Json(value) => return value,
            Self::Text(text) => serde_json::value::to_raw_value(&text),
            Self::Bytes(bytes) => serde_json::value::to_raw_value(&BASE64_STANDARD.encode(bytes)),
        };
        // Serializing a string to JSON cannot fail; stay explicit rather than unwrap.
        as_string.unwrap_or_else(|e| env::panic_str(&format!("output cannot be encoded: {e}")))
    }
}

/// What the operator reports for a request through `resolve_execution`.
#[near(serializers = [json])]
#[derive(Clone, Debug)]
pub struct ExecutionResponse {
    pub success: bool,
    /// Omitted when the output was stored beforehand with `submit_execution_output`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<ExecutionOutput>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub resources_used: ResourceMetrics,
    /// What a verifier needs to rebuild and replay the run (`outlayer-operator verify`): the module
    /// and the build identity. Optional, so a response without it is still accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
}

/// The evidence an answer carries: which module ran, built by what. With the request (code source,
/// input, limits) on chain and the instructions in `resources_used`, anyone can rebuild the module
/// from the commit and replay the run. About 230 bytes of JSON.
#[near(serializers = [json])]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Evidence {
    /// sha256 of the wasm module that ran (64 lower-case hex).
    pub wasm_sha256: String,
    /// The commit the module was built from (40 lower-case hex): what a branch or tag name in the
    /// request resolved to when it ran.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// The toolchain that built it: `rustc -vV`'s first line, e.g. `rustc 1.95.0 (59807616e 2026-04-14)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub toolchain: Option<String>,
    /// The build driver and its version, e.g. `outlayer-compiler 0.1.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compiler: Option<String>,
    /// The operator's signature (`ed25519:<base58>`, RFC 8032, deterministic) over
    /// [`seed_message`] with the seed key the request recorded; the run's randomness was seeded with
    /// its SHA-256. The contract checks it, so it is always the one signature that key can give.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed_signature: Option<String>,
}

/// What the operator signs to seed a request's randomness: domain-separated, with the contract, the
/// request id and the yield's data id, so no two requests (on any contract) share a seed and the
/// requester cannot compute it before the answer. NUL separates the parts (none can contain one).
pub fn seed_message(contract_id: &str, request_id: u64, data_id: &str) -> Vec<u8> {
    format!("{SEED_DOMAIN}\0{contract_id}\0{request_id}\0{data_id}").into_bytes()
}

/// The domain of [`seed_message`]; a new scheme gets a new version.
pub const SEED_DOMAIN: &str = "outlayer-seed-v1";

/// The prefix of a seed signature's text form (NEAR's notation for ed25519 signatures).
pub const SEED_SIGNATURE_PREFIX: &str = "ed25519:";

/// Decodes a seed signature's text form into its 64 bytes.
pub fn decode_seed_signature(text: &str) -> Result<[u8; 64], String> {
    let encoded = text.strip_prefix(SEED_SIGNATURE_PREFIX).ok_or_else(|| {
        format!("evidence.seed_signature must start with {SEED_SIGNATURE_PREFIX:?}, got {text:?}")
    })?;
    let bytes = near_sdk::bs58::decode(encoded)
        .into_vec()
        .map_err(|e| format!("evidence.seed_signature is not base58: {e}"))?;
    <[u8; 64]>::try_from(bytes.as_slice()).map_err(|_| {
        format!(
            "evidence.seed_signature must be 64 bytes, got {} bytes",
            bytes.len()
        )
    })
}

/// The longest `Evidence::toolchain` accepted.
pub const MAX_TOOLCHAIN_BYTES: usize = 128;
/// The longest `Evidence::compiler` accepted.
pub const MAX_COMPILER_BYTES: usize = 64;

impl Evidence {
    /// Why the evidence is malformed, if it is: a 64-hex sha256 and short printable identity strings,
    /// so the event that repeats them stays small and readable.
    pub fn problem(&self) -> Option<String> {
        let hex = |text: &str, len: usize| {
            text.len() == len
                && text
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        if let Some(commit) = &self.commit
            && !hex(commit, 40)
        {
            return Some(format!(
                "evidence.commit must be 40 lower-case hex characters, got {commit:?}"
            ));
        }
        if !hex(&self.wasm_sha256, 64) {
            return Some(format!(
                "evidence.wasm_sha256 must be 64 lower-case hex characters, got {:?}",
                self.wasm_sha256
            ));
        }
        if let Some(signature) = &self.seed_signature
            && let Err(problem) = decode_seed_signature(signature)
        {
            return Some(problem);
        }
        let printable = |text: &str| text.bytes().all(|b| (0x20..0x7f).contains(&b));
        for (name, value, max) in [
            ("toolchain", &self.toolchain, MAX_TOOLCHAIN_BYTES),
            ("compiler", &self.compiler, MAX_COMPILER_BYTES),
        ] {
            if let Some(value) = value
                && (value.is_empty() || value.len() > max || !printable(value))
            {
                return Some(format!(
                    "evidence.{name} must be 1 to {max} printable ASCII characters, got {} bytes",
                    value.len()
                ));
            }
        }
        None
    }
}

/// The fees, in yoctoNEAR.
#[near(serializers = [json, borsh])]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pricing {
    pub base_fee: U128,
    pub per_million_instructions_fee: U128,
    pub per_ms_fee: U128,
    pub per_compile_ms_fee: U128,
}

impl Default for Pricing {
    fn default() -> Self {
        Self {
            // 0.001 NEAR
            base_fee: U128(1_000_000_000_000_000_000_000),
            per_million_instructions_fee: U128(100_000_000_000_000),
            per_ms_fee: U128(100_000_000_000_000_000),
            per_compile_ms_fee: U128(100_000_000_000_000_000),
        }
    }
}

/// A request as the contract keeps it while it is pending.
#[near(serializers = [json, borsh])]
#[derive(Clone, Debug, PartialEq)]
pub struct ExecutionRequest {
    pub request_id: u64,
    /// The yield's data id (hex); the operator's resolve resumes it.
    pub data_id: String,
    pub sender_id: AccountId,
    /// The repository and commit, for every kind but `WasmUrl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_source: Option<CodeSource>,
    /// The prebuilt module, for `source_kind: WasmUrl` (then `code_source` is absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wasm_url: Option<WasmUrlSource>,
    /// Which argument named the code (`CodeSource` for requests stored before the field existed).
    #[serde(default)]
    pub source_kind: SourceKind,
    /// Who gets the refunds, when not the sender (`payer_account_id` of the request).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_account_id: Option<AccountId>,
    pub resource_limits: ResourceLimits,
    pub input_data: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_ref: Option<SecretsReference>,
    pub response_format: ResponseFormat,
    /// The whole attached deposit: the estimate, the storage reserve and any surplus.
    pub payment: U128,
    pub created_at_block: u64,
    /// Nanoseconds since the Unix epoch.
    pub created_at_ns: u64,
    /// True once the operator resolved it; the callback has not run yet.
    pub resolved: bool,
    /// The pricing when the request was made: what it is charged, whatever `set_pricing` does
    /// meanwhile. Absent only in requests stored before snapshots existed (charged at the current
    /// pricing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<Pricing>,
    /// `params.include_stderr`: the whole error may go on chain.
    #[serde(default, skip_serializing_if = "is_false")]
    pub include_stderr: bool,
    /// Only compile (`params.compile_only`, or no limits): answered with the module's sha256, size
    /// and compile time; charged the base fee and the compile time.
    #[serde(default, skip_serializing_if = "is_false")]
    pub compile_only: bool,
    /// The contract's seed key when the request was made: the only key whose signature may seed its
    /// run (see [`seed_message`]). Absent when none was published then (the run is not replayable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed_public_key: Option<PublicKey>,
}

impl ExecutionRequest {
    /// The pricing this request is charged at: its snapshot, else `current`.
    pub fn pricing_or<'a>(&'a self, current: &'a Pricing) -> &'a Pricing {
        self.pricing.as_ref().unwrap_or(current)
    }

    /// The account refunds go to and the events name as charged: `payer_account_id` when the request
    /// set one, else the sender.
    pub fn payer(&self) -> &AccountId {
        self.payer_account_id.as_ref().unwrap_or(&self.sender_id)
    }
}

/// A request as the operator's watcher (`get_pending_requests`) and indexers (`execution_requested`)
/// see it. Inputs of 10,000 bytes or more are left out and flagged (read them with `get_request`): a
/// page of requests stays small and an event fits NEAR's log limit.
#[near(serializers = [json])]
#[derive(Clone, Debug, PartialEq)]
pub struct PendingRequest {
    pub request_id: u64,
    pub data_id: String,
    pub sender_id: AccountId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_source: Option<CodeSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wasm_url: Option<WasmUrlSource>,
    #[serde(default)]
    pub source_kind: SourceKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer_account_id: Option<AccountId>,
    pub resource_limits: ResourceLimits,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_data: Option<String>,
    pub input_omitted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secrets_ref: Option<SecretsReference>,
    pub response_format: ResponseFormat,
    pub payment: U128,
    pub created_at_block: u64,
    pub created_at_ns: u64,
    /// The request asked for the guest's whole error on chain (`params.include_stderr`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub include_stderr: bool,
    /// Only compile (see [`ExecutionRequest::compile_only`]).
    #[serde(default, skip_serializing_if = "is_false")]
    pub compile_only: bool,
    /// The seed key the run's randomness is derived with (see [`ExecutionRequest::seed_public_key`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seed_public_key: Option<PublicKey>,
}

/// Inputs this large are left out of `PendingRequest`: NEAR caps a log line (max_total_log_length is
/// 16 KiB) and the operator reads big inputs with `get_request` anyway.
pub const MAX_ANNOUNCED_INPUT_BYTES: usize = 10_000;

impl From<&ExecutionRequest> for PendingRequest {
    fn from(request: &ExecutionRequest) -> Self {
        let input_omitted = request.input_data.len() >= MAX_ANNOUNCED_INPUT_BYTES;
        Self {
            request_id: request.request_id,
            data_id: request.data_id.clone(),
            sender_id: request.sender_id.clone(),
            code_source: request.code_source.clone(),
            wasm_url: request.wasm_url.clone(),
            source_kind: request.source_kind,
            payer_account_id: request.payer_account_id.clone(),
            resource_limits: request.resource_limits.clone(),
            input_data: (!input_omitted).then(|| request.input_data.clone()),
            input_omitted,
            secrets_ref: request.secrets_ref.clone(),
            response_format: request.response_format,
            payment: request.payment,
            created_at_block: request.created_at_block,
            created_at_ns: request.created_at_ns,
            include_stderr: request.include_stderr,
            compile_only: request.compile_only,
            seed_public_key: request.seed_public_key.clone(),
        }
    }
}

/// Counters for dashboards.
#[near(serializers = [json, borsh])]
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub total_requests: u64,
    pub successful: u64,
    pub failed: u64,
    pub timed_out: u64,
    pub cancelled: u64,
    pub pending: u64,
    pub total_fees_collected: U128,
}

/// Who runs the contract and how.
#[near(serializers = [json])]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub owner_id: AccountId,
    pub operator_id: AccountId,
    pub pricing_manager_id: Option<AccountId>,
    pub paused: bool,
    /// How long a sender waits before `cancel_stale_execution` may refund a request whose callback never ran.
    pub stale_timeout_ms: u64,
    pub callback_gas_tgas: u64,
}

/// The conditions under which an execution may see a stored secret. The operator evaluates them on chain
/// state at execution time; the contract only stores and validates their shape. Account conditions
/// (`Whitelist`, `AccountPattern`, balances, NFTs) are about the requester: an on-chain request's
/// `sender_id`. `WasmHash`, `ValidUntil` and `Predecessor` pin a secret to a build, a time and the
/// calling contract.
#[near(serializers = [json, borsh])]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessCondition {
    AllowAll,
    Whitelist {
        accounts: Vec<AccountId>,
    },
    AccountPattern {
        regex: String,
    },
    NearBalance {
        min: U128,
    },
    FtBalance {
        contract: AccountId,
        min: U128,
    },
    NftOwned {
        contract: AccountId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token_id: Option<String>,
    },
    Logic {
        operator: LogicOperator,
        conditions: Vec<AccessCondition>,
    },
    Not {
        condition: Box<AccessCondition>,
    },
    /// Only this exact module: the sha256 (64 lower-case hex) of the wasm the execution runs.
    WasmHash {
        sha256: String,
    },
    /// Only for requests made before this time (nanoseconds since the Unix epoch, as
    /// `env::block_timestamp`): an on-chain request's `created_at_ns`.
    ValidUntil {
        timestamp_ns: u64,
    },
    /// Only when the contract that called `request_execution` (its predecessor, stored as the
    /// request's `sender_id`) is one of these. Never met by a request made without the chain.
    Predecessor {
        accounts: Vec<AccountId>,
    },
}

#[near(serializers = [json, borsh])]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogicOperator {
    And,
    Or,
}

/// Ciphertext of a secrets bundle and who may use it. The contract never sees plaintext.
#[near(serializers = [json, borsh])]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretsRecord {
    pub owner: AccountId,
    pub repo: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    pub profile: String,
    pub encrypted_secrets_base64: String,
    pub access: AccessCondition,
    /// What the owner paid for this record's storage; refunded on delete.
    pub storage_deposit: U128,
    pub created_at_ns: u64,
    pub updated_at_ns: u64,
}

/// One entry of `list_user_secrets`: where a secret lives, without its ciphertext.
#[near(serializers = [json, borsh])]
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SecretsKey {
    pub repo: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    pub profile: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The operator parses `get_pending_requests` / `get_request` with these types: a contract from
    /// before the source kind and payer existed must still parse (as the seed's shape, no payer).
    #[test]
    fn pending_requests_without_the_new_fields_still_parse() {
        let old = serde_json::json!({
            "request_id": 7, "data_id": "x", "sender_id": "alice.near",
            "code_source": {"repo": "https://github.com/a/b", "commit": "main"},
            "resource_limits": {"max_instructions": 1, "max_memory_mb": 1, "max_execution_seconds": 1},
            "input_data": "", "input_omitted": false, "response_format": "Text",
            "payment": "1", "created_at_block": 1, "created_at_ns": 1
        });
        let parsed: PendingRequest = serde_json::from_value(old.clone()).unwrap();
        assert_eq!(parsed.source_kind, SourceKind::CodeSource);
        assert_eq!(parsed.payer_account_id, None);

        let mut new = old;
        new["source_kind"] = "GitHub".into();
        new["payer_account_id"] = "payer.near".into();
        let parsed: PendingRequest = serde_json::from_value(new).unwrap();
        assert_eq!(parsed.source_kind, SourceKind::GitHub);
        assert_eq!(parsed.payer_account_id, Some("payer.near".parse().unwrap()));
        assert!(!parsed.include_stderr);
    }

    #[test]
    fn errors_are_summarized_unless_the_request_asked_for_them() {
        let stderr = format!("panicked: {}", "s".repeat(1_000));
        assert_eq!(public_error(&stderr, true), stderr);
        let summary = public_error(&stderr, false);
        assert_eq!(
            summary,
            format!("execution failed: {}", &stderr[..ERROR_SUMMARY_BYTES])
        );
        assert_eq!(public_error(&summary, false), summary, "idempotent");
        assert_eq!(public_error("trap", false), "execution failed: trap");
        // Never cut inside a character: 'é' is two bytes and straddles byte 256.
        let accented = format!("{}é", "a".repeat(ERROR_SUMMARY_BYTES - 1));
        let summary = public_error(&accented, false);
        assert_eq!(summary, format!("execution failed: {}", "a".repeat(255)));
    }
}
