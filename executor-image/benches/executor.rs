//! `cargo bench -p outlayer-executor`: prints the executor's figures, measured in one run.
//!
//! Not criterion: most figures are ratios between differently set-up runs, whole-process wall
//! times and child peak RSS, which criterion does not measure. Each figure is the median of
//! several runs. Needs the guests from scripts/build-wasm; builds the native sha256-loop itself.

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use outlayer_executor::{Executor, Job, Limits, SystemEnv};
use sha2::{Digest, Sha256};
use wasmi::{Config, Engine, Linker, Module, Store};
use wasmi_wasi::WasiCtx;
use wasmi_wasi::wasi_common::pipe::{ReadPipe, WritePipe};

const BINARY: &str = env!("CARGO_BIN_EXE_outlayer-executor");
/// Aim for sha256-loop runs of about this long, so timer noise is negligible.
const SHA_TARGET: Duration = Duration::from_millis(1500);
const SHA_RUNS: usize = 3;
const ECHO_RUNS: usize = 200;
const PROCESS_RUNS: usize = 50;

fn main() {
    println!("== outlayer-executor benchmarks ==");
    println!(
        "machine: {} CPUs, {}",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        cpu_model()
    );

    let sha_wasm = common::guest("example-sha256-loop");
    let echo_wasm = common::guest("example-echo");
    let limits = Limits {
        max_instructions: u64::MAX / 4,
        max_execution_seconds: 600,
        ..Limits::default()
    };
    let executor = Executor::new().expect("executor setup");

    // --- the release binary on echo: whole-process time and peak RSS ---
    println!("\n-- release binary on echo (16-byte input) --");
    let dir = tempfile::tempdir().expect("temp dir");
    let echo_path = common::guest_path("example-echo");
    let echo_sha = hex::encode(Sha256::digest(&echo_wasm));
    let result_path = dir.path().join("result.json");
    let process = median_of(PROCESS_RUNS, || {
        let started = Instant::now();
        run_binary(&echo_path, &echo_sha, &result_path);
        started.elapsed()
    });
    println!(
        "whole process (release binary, result file written): {:.3} ms (goal <= 10 ms)",
        millis(process)
    );
    // Read before any other child (cargo, the native guest) runs: ru_maxrss covers all of them.
    let peak_kib = children_peak_rss_kib();
    let guest_kib = initial_memory_bytes(&echo_wasm) / 1024;
    println!(
        "peak RSS of the binary on echo: {:.1} MiB, guest linear memory {:.1} MiB => {:.1} MiB beyond guest memory (goal <= 20 MiB)",
        peak_kib as f64 / 1024.0,
        guest_kib as f64 / 1024.0,
        peak_kib.saturating_sub(guest_kib) as f64 / 1024.0
    );

    // --- sha256-loop: interpreter throughput, metering overhead, native comparison ---
    let probe = run_executor(&executor, &sha_wasm, b"2000", limits);
    let per_iteration = probe.1 / 2000;
    let rate = probe.1 as f64 / probe.0.as_secs_f64();
    let iterations = ((rate * SHA_TARGET.as_secs_f64()) / per_iteration as f64).max(1000.0) as u64;
    let input = iterations.to_string();
    println!("\n-- sha256-loop, {iterations} iterations (~{per_iteration} instructions each) --");

    let mut executor_times = Vec::new();
    let mut instructions = 0;
    for _ in 0..SHA_RUNS {
        let (elapsed, used, _) = run_executor(&executor, &sha_wasm, input.as_bytes(), limits);
        executor_times.push(elapsed);
        instructions = used;
    }
    let executor_time = median(&mut executor_times);
    let raw_metered = median_of(SHA_RUNS, || raw_wasmi(&sha_wasm, input.as_bytes(), true));
    let raw_unmetered = median_of(SHA_RUNS, || raw_wasmi(&sha_wasm, input.as_bytes(), false));
    println!(
        "instructions: {instructions}; executor {:.3} s => {:.1} M instructions/s",
        executor_time.as_secs_f64(),
        instructions as f64 / executor_time.as_secs_f64() / 1e6
    );
    println!(
        "raw wasmi: metered {:.3} s, unmetered {:.3} s => metering ratio {:.3} (goal <= 1.15)",
        raw_metered.as_secs_f64(),
        raw_unmetered.as_secs_f64(),
        ratio(raw_metered, raw_unmetered)
    );
    println!(
        "executor (metered, adaptive fuel slices, deadline checks) vs raw unmetered: {:.3}",
        ratio(executor_time, raw_unmetered)
    );
    match native_sha256_loop() {
        Some(native) => {
            let native_time = median_of(SHA_RUNS, || run_native(&native, &input));
            println!(
                "native {:.3} s => executor / native = {:.1}x",
                native_time.as_secs_f64(),
                ratio(executor_time, native_time)
            );
        }
        None => println!("native sha256-loop unavailable; see the message above"),
    }

    // --- echo in process: fixed costs ---
    println!("\n-- echo in process (16-byte input) --");
    let setup = median_of(20, || {
        let started = Instant::now();
        let executor = Executor::new().expect("executor setup");
        let elapsed = started.elapsed();
        drop(executor);
        elapsed
    });
    println!(
        "Executor::new (engine + WASI linker): {:.3} ms",
        millis(setup)
    );
    let in_process = median_of(ECHO_RUNS, || {
        run_executor(&executor, &echo_wasm, b"0123456789abcdef", limits).0
    });
    println!(
        "in-process load + instantiate + run: {:.3} ms (goal <= 2 ms)",
        millis(in_process)
    );
}

fn run_executor(
    executor: &Executor,
    wasm: &[u8],
    input: &[u8],
    limits: Limits,
) -> (Duration, u64, Vec<u8>) {
    let started = Instant::now();
    let execution = executor.run(&Job {
        wasm,
        input,
        secrets: &BTreeMap::new(),
        system: &SystemEnv::default(),
        limits,
        deterministic: None,
    });
    let elapsed = started.elapsed();
    let stdout = execution
        .outcome
        .unwrap_or_else(|fault| panic!("benchmark guest failed: {fault}"));
    (elapsed, execution.instructions, stdout)
}

/// wasmi with wasmi_wasi's own setup and no executor around it: the baseline for the metering
/// ratio. Times only instantiation and the call, like the executor's figure includes both.
fn raw_wasmi(wasm: &[u8], input: &[u8], metered: bool) -> Duration {
    let started = Instant::now();
    let mut config = Config::default();
    config.consume_fuel(metered);
    let engine = Engine::new(&config);
    let mut linker = Linker::<WasiCtx>::new(&engine);
    wasmi_wasi::add_to_linker(&mut linker, |ctx| ctx).expect("link WASI");
    let ctx = wasmi_wasi::WasiCtxBuilder::new()
        .stdin(Box::new(ReadPipe::from(input)))
        .stdout(Box::new(WritePipe::new_in_memory()))
        .build();
    let module = Module::new(&engine, wasm).expect("module");
    let mut store = Store::new(&engine, ctx);
    if metered {
        store.set_fuel(u64::MAX / 4).expect("fuel");
    }
    let instance = linker
        .instantiate_and_start(&mut store, &module)
        .expect("instantiate");
    let start = instance
        .get_typed_func::<(), ()>(&store, "_start")
        .expect("_start");
    if let Err(error) = start.call(&mut store, ()) {
        assert_eq!(error.i32_exit_status(), Some(0), "raw run failed: {error}");
    }
    started.elapsed()
}

/// The natively built example, built here (release) when missing.
fn native_sha256_loop() -> Option<PathBuf> {
    let path = common::target_dir()
        .join("release")
        .join("example-sha256-loop");
    if !path.exists() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--release", "-p", "example-sha256-loop"])
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .status();
        if !matches!(status, Ok(status) if status.success()) {
            println!("building the native sha256-loop failed: {status:?}");
            return None;
        }
    }
    path.exists().then_some(path)
}

fn run_native(binary: &Path, input: &str) -> Duration {
    let started = Instant::now();
    let mut child = Command::new(binary)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn native sha256-loop");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(input.as_bytes()).expect("write input");
    }
    let status = child.wait().expect("wait for native sha256-loop");
    assert!(status.success(), "native sha256-loop failed: {status}");
    started.elapsed()
}

fn run_binary(module: &Path, sha: &str, result: &Path) {
    let status = Command::new(BINARY)
        .arg("--module")
        .arg(module)
        .arg("--module-sha256")
        .arg(sha)
        .args(["--input", "0123456789abcdef"])
        .arg("--result-path")
        .arg(result)
        .stdout(Stdio::null())
        .status()
        .expect("spawn executor");
    assert!(status.success(), "executor failed: {status}");
}

/// Largest peak RSS among waited-for children, in KiB (Linux reports ru_maxrss in KiB).
fn children_peak_rss_kib() -> u64 {
    // SAFETY: getrusage only writes into the zeroed struct we own.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage);
        usage
    };
    u64::try_from(usage.ru_maxrss).unwrap_or(0)
}

fn initial_memory_bytes(wasm: &[u8]) -> u64 {
    let engine = Engine::default();
    let module = Module::new(&engine, wasm).expect("module");
    module
        .exports()
        .filter_map(|export| export.ty().memory().map(|memory| memory.minimum()))
        .sum::<u64>()
        * 65536
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split(':').nth(1))
                .map(|model| model.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".to_string())
}

fn median(times: &mut [Duration]) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn median_of(runs: usize, mut f: impl FnMut() -> Duration) -> Duration {
    let mut times: Vec<Duration> = (0..runs).map(|_| f()).collect();
    median(&mut times)
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64()
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
