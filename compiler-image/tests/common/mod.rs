//! What the compiler's test files share: running the built binary.

use std::path::Path;
use std::process::Command;

use serde_json::Value;

pub const COMPILER: &str = env!("CARGO_BIN_EXE_outlayer-compiler");

/// Runs the binary; returns its exit code and the parsed report.
pub fn compiler(args: &[&str], result: &Path) -> (i32, Value) {
    let output = Command::new(COMPILER)
        .args(args)
        .arg("--result-path")
        .arg(result)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let code = output.status.code().unwrap_or(-1);
    let text = std::fs::read_to_string(result).unwrap_or_else(|e| {
        panic!(
            "no report at {} ({e}); exit {code}; stderr: {}",
            result.display(),
            String::from_utf8_lossy(&output.stderr)
        )
    });
    assert!(text.len() <= 4096, "report of {} bytes", text.len());
    (code, serde_json::from_str(&text).unwrap())
}
