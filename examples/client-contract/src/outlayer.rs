//! The part of the OutLayer contract's interface this client uses, declared locally.
//!
//! Depending on `outlayer-contract` itself would link its exported methods into this wasm, so the few
//! argument types are restated here with the same JSON shape; a unit test checks them against the real
//! ones.

use near_sdk::{ext_contract, near};

/// A public GitHub repository at a commit (40-hex SHA) or a branch/tag the operator resolves.
#[near(serializers = [json])]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CodeSource {
    pub repo: String,
    pub commit: String,
    /// `wasm32-wasip1` when omitted, the only target OutLayer builds today.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build_target: Option<String>,
}

/// The most an execution may use; OutLayer's `estimate_execution_cost` prices exactly these.
#[near(serializers = [json])]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourceLimits {
    pub max_instructions: u64,
    pub max_memory_mb: u32,
    pub max_execution_seconds: u64,
}

/// How OutLayer hands the output back: Text as a JSON string, Json as the value, Bytes as base64.
#[near(serializers = [json])]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ResponseFormat {
    #[default]
    Text,
    Json,
    Bytes,
}

/// `request_execution` as a cross-contract call. It returns (through NEAR's yield) the output, or
/// `null` when the execution failed or the operator did not answer within the yield window.
/// `secrets_ref` is left out: this client runs no code that needs secrets.
#[ext_contract(ext_outlayer)]
pub trait OutLayer {
    fn request_execution(
        &mut self,
        code_source: CodeSource,
        resource_limits: ResourceLimits,
        input_data: String,
        response_format: Option<ResponseFormat>,
    );
}
