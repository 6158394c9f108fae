//! The `outlayer-executor` binary: command line, exit codes, result file, watchdog.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{guest_path, wat};
use sha2::{Digest, Sha256};

const BINARY: &str = env!("CARGO_BIN_EXE_outlayer-executor");

struct Sandbox {
    dir: tempfile::TempDir,
}

impl Sandbox {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.path(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    /// Runs the binary on `module` with its correct checksum plus `args`; the result goes to
    /// `result.json` in the sandbox.
    fn run(&self, module: &Path, args: &[&str]) -> Output {
        let sha = hex::encode(Sha256::digest(std::fs::read(module).unwrap()));
        self.run_with_sha(module, &sha, args)
    }

    fn run_with_sha(&self, module: &Path, sha: &str, args: &[&str]) -> Output {
        Command::new(BINARY)
            .arg("--module")
            .arg(module)
            .arg("--module-sha256")
            .arg(sha)
            .arg("--result-path")
            .arg(self.path("result.json"))
            .args(args)
            // The operator passes everything explicitly; the test environment must not leak in.
            .env_remove("OUTLAYER_OUTPUT_DIR")
            .output()
            .unwrap()
    }

    fn result_text(&self) -> String {
        std::fs::read_to_string(self.path("result.json")).unwrap()
    }

    fn result(&self) -> serde_json::Value {
        let text = self.result_text();
        assert!(text.len() <= 4096, "result is {} bytes", text.len());
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("result {text:?} is not JSON: {e}"))
    }
}

fn echo() -> PathBuf {
    let path = guest_path("example-echo");
    assert!(
        path.exists(),
        "{} missing: run scripts/build-wasm",
        path.display()
    );
    path
}

#[test]
fn echo_writes_a_result_and_exits_zero() {
    let sandbox = Sandbox::new();
    let output = sandbox.run(&echo(), &["--input", "hi there"]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let result = sandbox.result();
    assert_eq!(result["ok"], true);
    assert_eq!(result["output"], "hi there");
    assert_eq!(result["outputEncoding"], "text");
    assert!(result["instructions"].as_u64().unwrap() > 0);
}

#[test]
fn input_file_and_response_format_from_env() {
    let sandbox = Sandbox::new();
    let input = sandbox.write("input.bin", &[1, 2, 3]);
    let output = Command::new(BINARY)
        .env("OUTLAYER_MODULE", echo())
        .env(
            "OUTLAYER_MODULE_SHA256",
            hex::encode(Sha256::digest(std::fs::read(echo()).unwrap())),
        )
        .env("OUTLAYER_INPUT_FILE", &input)
        .env("OUTLAYER_RESPONSE_FORMAT", "Bytes")
        .env("OUTLAYER_RESULT_PATH", sandbox.path("result.json"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let result = sandbox.result();
    assert_eq!(result["output"], "AQID");
    assert_eq!(result["outputEncoding"], "base64");
}

#[test]
fn checksum_mismatch_is_a_platform_error_and_nothing_runs() {
    let sandbox = Sandbox::new();
    let output = sandbox.run_with_sha(&echo(), &"00".repeat(32), &["--input", "x"]);
    assert_eq!(output.status.code(), Some(4), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("expected 0000"), "{stderr}");
    let text = sandbox.result_text();
    assert!(text.starts_with("platform error: "), "{text}");
    assert!(serde_json::from_str::<serde_json::Value>(&text).is_err());
}

#[test]
fn missing_module_is_a_platform_error() {
    let sandbox = Sandbox::new();
    let output = sandbox.run_with_sha(&sandbox.path("nope.wasm"), &"00".repeat(32), &[]);
    assert_eq!(output.status.code(), Some(3), "{output:?}");
}

#[test]
fn malformed_env_file_is_a_platform_error() {
    let sandbox = Sandbox::new();
    let env = sandbox.write("env.json", br#"{"A": 1}"#);
    let output = sandbox.run(&echo(), &["--env-file", env.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(3), "{output:?}");
}

#[test]
fn deterministic_without_seed_is_a_usage_error() {
    let sandbox = Sandbox::new();
    let output = sandbox.run(&echo(), &["--deterministic"]);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
}

#[test]
fn guest_failure_still_exits_zero_with_a_result() {
    let sandbox = Sandbox::new();
    let module = sandbox.write(
        "exit3.wasm",
        &wat(r#"(module
            (import "wasi_snapshot_preview1" "proc_exit" (func $exit (param i32)))
            (memory (export "memory") 1)
            (func (export "_start") (call $exit (i32.const 3))))"#),
    );
    let output = sandbox.run(&module, &[]);
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let result = sandbox.result();
    assert_eq!(result["ok"], false);
    assert_eq!(result["exitCode"], 3);
    assert_eq!(result["errorKind"], "exit");
    assert_eq!(result["error"], "guest exited with code 3");
}

#[test]
fn secrets_and_system_values_reach_the_guest() {
    let sandbox = Sandbox::new();
    let env = sandbox.write("env.json", br#"{"API_KEY": "k-123"}"#);
    let output = sandbox.run(
        &guest_path("example-env-reader"),
        &[
            "--env-file",
            env.to_str().unwrap(),
            "--input",
            "API_KEY NEAR_SENDER_ID NEAR_REQUEST_ID NEAR_CONTRACT_ID NEAR_BLOCK_HEIGHT NEAR_MAX_MEMORY_MB",
            "--sender-id",
            "alice.near",
            "--request-id",
            "42",
            "--contract-id",
            "outlayer.near",
            "--block-height",
            "1000",
            "--max-memory-mb",
            "32",
            "--response-format",
            "json",
        ],
    );
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let result = sandbox.result();
    assert_eq!(
        result["output"],
        serde_json::json!({
            "API_KEY": "k-123",
            "NEAR_SENDER_ID": "alice.near",
            "NEAR_REQUEST_ID": "42",
            "NEAR_CONTRACT_ID": "outlayer.near",
            "NEAR_BLOCK_HEIGHT": "1000",
            "NEAR_MAX_MEMORY_MB": "32",
        })
    );
}

#[test]
fn large_output_goes_to_the_output_directory() {
    let sandbox = Sandbox::new();
    let outputs = sandbox.path("outputs");
    std::fs::create_dir(&outputs).unwrap();
    let input = "y".repeat(100_000);
    let output = sandbox.run(
        &echo(),
        &["--input", &input, "--output-dir", outputs.to_str().unwrap()],
    );
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let result = sandbox.result();
    assert_eq!(result["ok"], true);
    assert!(result.get("output").is_none());
    assert_eq!(result["outputSize"], 100_000);
    let sha = result["outputSha256"].as_str().unwrap();
    assert_eq!(std::fs::read(outputs.join(sha)).unwrap(), input.as_bytes());
}

#[test]
fn deterministic_flag_replays_identically() {
    let sandbox = Sandbox::new();
    let module = guest_path("example-random");
    let args = [
        "--deterministic",
        "--seed",
        "req-9",
        "--fixed-unix-time-ns",
        "5",
    ];
    assert_eq!(sandbox.run(&module, &args).status.code(), Some(0));
    let first = sandbox.result();
    assert_eq!(sandbox.run(&module, &args).status.code(), Some(0));
    let second = sandbox.result();
    assert_eq!(first["output"], second["output"]);
    assert_eq!(first["instructions"], second["instructions"]);
    assert!(
        first["output"]
            .as_str()
            .unwrap()
            .contains("\"unixNanos\":5}")
    );
}

#[test]
fn watchdog_ends_a_start_function_loop_within_the_time_limit() {
    let sandbox = Sandbox::new();
    let module = sandbox.write(
        "start-loop.wasm",
        &wat(r#"(module
            (memory (export "memory") 1)
            (func $init (loop $l (br $l)))
            (start $init)
            (func (export "_start")))"#),
    );
    let started = Instant::now();
    let output = sandbox.run(
        &module,
        &[
            "--max-instructions",
            "1000000000000000",
            "--max-execution-seconds",
            "1",
        ],
    );
    let elapsed = started.elapsed();
    assert!(elapsed <= Duration::from_secs(2), "took {elapsed:?}");
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let result = sandbox.result();
    assert_eq!(result["ok"], false);
    assert_eq!(result["errorKind"], "timeLimit");
}

/// A free localhost port for a serve-once executor.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn serve_once(sandbox: &Sandbox, port: u16, wait_seconds: u64) -> std::process::Child {
    Command::new(BINARY)
        .arg("serve-once")
        .args(["--port", &port.to_string()])
        .arg("--token-file")
        .arg(sandbox.path("token"))
        .arg("--module-dir")
        .arg(sandbox.path("modules"))
        .args(["--memory-class-mb", "64"])
        .args(["--wait-seconds", &wait_seconds.to_string()])
        .arg("--result-path")
        .arg(sandbox.path("result.json"))
        .env_remove("OUTLAYER_OUTPUT_DIR")
        .spawn()
        .unwrap()
}

fn handoff(port: u16, token: &str, sha: &str, input: &str) -> std::io::Result<serde_json::Value> {
    use std::io::{BufRead, BufReader, Write};
    let deadline = Instant::now() + Duration::from_secs(10);
    let stream = loop {
        match std::net::TcpStream::connect(("127.0.0.1", port)) {
            Ok(stream) => break stream,
            Err(error) if Instant::now() > deadline => return Err(error),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let request = serde_json::json!({
        "v": 1, "token": token,
        "assignment": {
            "moduleSha256": sha, "input": input, "maxInstructions": 100_000_000u64,
            "maxMemoryMb": 32, "maxExecutionSeconds": 5, "maxOutputBytes": 1024,
            "responseFormat": "text"
        }
    });
    (&stream).write_all(format!("{request}\n").as_bytes())?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    serde_json::from_str(&line).map_err(std::io::Error::other)
}

#[test]
fn serve_once_refuses_a_wrong_token_then_runs_the_one_assignment_and_exits() {
    let sandbox = Sandbox::new();
    std::fs::create_dir(sandbox.path("modules")).unwrap();
    let wasm = std::fs::read(echo()).unwrap();
    let sha = hex::encode(Sha256::digest(&wasm));
    sandbox.write(&format!("modules/{sha}.wasm"), &wasm);
    sandbox.write("token", b"pod-token-1\n");
    let port = free_port();
    let mut child = serve_once(&sandbox, port, 60);

    let refused = handoff(port, "guessed", &sha, "stolen").unwrap();
    assert_eq!(refused["accepted"], false, "{refused}");
    assert_eq!(refused["error"], "wrong token");
    let accepted = handoff(port, "pod-token-1", &sha, "warm hello").unwrap();
    assert_eq!(accepted["accepted"], true, "{accepted}");
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    let result = sandbox.result();
    assert_eq!(result["output"], "warm hello", "{result}");
    // Single use: the listener is gone with the process, a second assignment finds nobody.
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[test]
fn serve_once_exits_with_a_clear_message_when_no_assignment_comes() {
    let sandbox = Sandbox::new();
    std::fs::create_dir(sandbox.path("modules")).unwrap();
    sandbox.write("token", b"t");
    let started = Instant::now();
    let status = serve_once(&sandbox, free_port(), 1).wait().unwrap();
    assert_eq!(status.code(), Some(6));
    assert!(started.elapsed() < Duration::from_secs(5));
    let text = sandbox.result_text();
    assert!(
        text.starts_with("platform error: no assignment arrived within 1 s"),
        "{text}"
    );
}

#[test]
fn serve_once_checks_the_module_checksum_as_a_cold_run_does() {
    let sandbox = Sandbox::new();
    std::fs::create_dir(sandbox.path("modules")).unwrap();
    let sha = "ab".repeat(32);
    sandbox.write(&format!("modules/{sha}.wasm"), b"\0asm\x01\0\0\0");
    sandbox.write("token", b"t");
    let port = free_port();
    let mut child = serve_once(&sandbox, port, 60);
    assert_eq!(handoff(port, "t", &sha, "").unwrap()["accepted"], true);
    assert_eq!(child.wait().unwrap().code(), Some(4));
    assert!(
        sandbox.result_text().contains("expected"),
        "{}",
        sandbox.result_text()
    );
}
