//! Prints random bytes obtained through WASI `random_get` and the wall-clock time as JSON:
//! `{"random":"<hex>","unixNanos":<u128>}`. Input (optional): how many random bytes, default 32.
//! In the executor's deterministic mode both values must replay identically for the same seed.

use std::io::Read;
use std::time::{SystemTime, UNIX_EPOCH};

const DEFAULT_BYTES: usize = 32;
/// Keeps the output well inside the executor's result message.
const MAX_BYTES: usize = 1024;

fn main() {
    let count = match requested_count() {
        Ok(count) => count,
        Err(message) => {
            eprintln!("random: {message}");
            std::process::exit(2);
        }
    };
    let mut bytes = vec![0u8; count];
    if let Err(message) = fill_random(&mut bytes) {
        eprintln!("random: {message}");
        std::process::exit(1);
    }
    let unix_nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_nanos())
        .unwrap_or(0);
    let hex: String = bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    println!("{{\"random\":\"{hex}\",\"unixNanos\":{unix_nanos}}}");
}

fn requested_count() -> Result<usize, String> {
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .map_err(|error| format!("reading stdin failed: {error}"))?;
    let trimmed = input.trim();
    if trimmed.is_empty() {
        return Ok(DEFAULT_BYTES);
    }
    let count: usize = trimmed
        .parse()
        .map_err(|_| format!("input must be a byte count, got {trimmed:?}"))?;
    if count > MAX_BYTES {
        return Err(format!("at most {MAX_BYTES} bytes, got {count}"));
    }
    Ok(count)
}

/// Calls the WASI import directly so the guest exercises exactly `random_get`, with no crate in between.
#[cfg(target_os = "wasi")]
fn fill_random(buf: &mut [u8]) -> Result<(), String> {
    #[link(wasm_import_module = "wasi_snapshot_preview1")]
    unsafe extern "C" {
        fn random_get(buf: *mut u8, len: usize) -> u16;
    }
    // SAFETY: the pointer and length describe a live, exclusively borrowed buffer.
    let errno = unsafe { random_get(buf.as_mut_ptr(), buf.len()) };
    if errno == 0 {
        Ok(())
    } else {
        Err(format!("random_get failed with errno {errno}"))
    }
}

/// Native builds (benchmarks, workspace checks) read the OS generator instead.
#[cfg(not(target_os = "wasi"))]
fn fill_random(buf: &mut [u8]) -> Result<(), String> {
    std::fs::File::open("/dev/urandom")
        .and_then(|mut file| file.read_exact(buf))
        .map_err(|error| format!("reading /dev/urandom failed: {error}"))
}
