//! Helpers shared by the integration tests and the benchmark.
#![allow(dead_code, unused_imports)]

use std::collections::BTreeMap;

use outlayer_executor::{Execution, Executor, Job, Limits, SystemEnv};

pub use outlayer_testkit::{guest_wasm as guest_path, target_dir};

/// The bytes of an example guest; panics with the command that builds it when it is missing.
pub fn guest(crate_name: &str) -> Vec<u8> {
    let path = guest_path(crate_name);
    std::fs::read(&path).unwrap_or_else(|error| {
        panic!(
            "guest {crate_name} not found at {} ({error}): run scripts/build-wasm",
            path.display()
        )
    })
}

/// Compiles WAT text of the hostile corpus.
pub fn wat(text: &str) -> Vec<u8> {
    wat::parse_str(text).unwrap_or_else(|error| panic!("test WAT does not compile: {error}"))
}

/// Limits small enough that a runaway test ends quickly. The time limit leaves room for debug
/// builds (an unoptimized wasmi interprets only a few million instructions per second) on a
/// loaded machine; tests about the time limit set their own.
pub fn limits() -> Limits {
    Limits {
        max_instructions: 200_000_000,
        max_memory_mb: 64,
        max_execution_seconds: 30,
        max_output_bytes: 1024 * 1024,
        max_module_bytes: 16 * 1024 * 1024,
    }
}

/// Runs `wasm` with `input` and no secrets.
pub fn run(wasm: &[u8], input: &[u8], limits: Limits) -> Execution {
    run_with(wasm, input, limits, &BTreeMap::new(), &SystemEnv::default())
}

pub fn run_with(
    wasm: &[u8],
    input: &[u8],
    limits: Limits,
    secrets: &BTreeMap<String, String>,
    system: &SystemEnv,
) -> Execution {
    let executor = Executor::new().expect("executor setup");
    executor.run(&Job {
        wasm,
        input,
        secrets,
        system,
        limits,
        deterministic: None,
    })
}

/// stdout of a successful execution as text; panics with the fault otherwise.
pub fn stdout_text(execution: &Execution) -> String {
    match &execution.outcome {
        Ok(stdout) => String::from_utf8(stdout.clone()).expect("stdout is UTF-8"),
        Err(fault) => panic!(
            "guest failed: {fault}; stderr: {}",
            String::from_utf8_lossy(&execution.stderr)
        ),
    }
}
