//! The ExecutionRequests the benchmarks create.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use outlayer_operator::crd::{
    CodeRef, ExecutionRequest, ExecutionRequestSpec, ExecutionRequestStatus, Limits,
    OutputEncoding, Phase, ResponseFormat, set_condition,
};

pub const ECHO_INPUT: &str = "outlayer bench";

/// A run of the echo guest, named by the module's hash (already in the cache: no compile).
pub fn echo(name: &str, wasm_sha256: &str) -> ExecutionRequest {
    ExecutionRequest::new(
        name,
        ExecutionRequestSpec {
            code: CodeRef {
                module_url: None,
                source: None,
                wasm_sha256: Some(wasm_sha256.to_string()),
            },
            input: ECHO_INPUT.to_string(),
            limits: Limits {
                max_instructions: 100_000_000,
                max_memory_mb: 32,
                max_execution_seconds: 10,
            },
            response_format: ResponseFormat::Text,
            secrets_ref: None,
            compile_only: false,
            deterministic: None,
            on_chain: None,
        },
    )
}

/// The status a successful echo run leaves behind, finished just now (so the TTL keeps it): what
/// thousands of ExecutionRequests waiting for their TTL look like to the operator.
pub fn succeeded_status(wasm_sha256: &str, name: &str) -> ExecutionRequestStatus {
    let now = Time(Timestamp::now());
    let mut conditions = Vec::new();
    for (type_, reason, message) in [
        (
            "Compiled",
            "ModuleReady",
            format!("module {wasm_sha256} is in the cache"),
        ),
        (
            "Executed",
            "Exited",
            "the executor reported a result".to_string(),
        ),
        (
            "Succeeded",
            "Succeeded",
            "output recorded in status".to_string(),
        ),
    ] {
        set_condition(
            &mut conditions,
            type_,
            true,
            reason,
            message,
            Some(1),
            now.clone(),
        );
    }
    ExecutionRequestStatus {
        conditions,
        phase: Some(Phase::Succeeded),
        observed_generation: Some(1),
        wasm_sha256: Some(wasm_sha256.to_string()),
        output: Some(ECHO_INPUT.to_string()),
        output_encoding: Some(OutputEncoding::Text),
        output_size: Some(ECHO_INPUT.len() as u64),
        instructions: Some(41_000),
        time_ms: Some(3),
        time: Some("3ms".to_string()),
        pod_name: Some(format!("{name}-run")),
        ..ExecutionRequestStatus::default()
    }
}
