//! Compute-heavy guest: hashes a seed, then re-hashes the digest N times, and prints the final
//! digest in hex. Input: `<iterations> [seed]` (whitespace separated; default 1000 iterations,
//! empty seed). SHA-256 is written out here because it is the workload being measured, and guests
//! stay std-only so they build offline.

use std::io::Read;

mod sha256;

const DEFAULT_ITERATIONS: u64 = 1000;

fn main() {
    let mut input = String::new();
    if let Err(error) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("sha256-loop: reading stdin failed: {error}");
        std::process::exit(1);
    }
    let mut words = input.split_whitespace();
    let iterations = match words.next() {
        None => DEFAULT_ITERATIONS,
        Some(text) => match text.parse::<u64>() {
            Ok(n) => n,
            Err(_) => {
                eprintln!("sha256-loop: iterations must be an unsigned integer, got {text:?}");
                std::process::exit(2);
            }
        },
    };
    let seed = words.next().unwrap_or("");
    let mut digest = sha256::digest(seed.as_bytes());
    for _ in 0..iterations {
        digest = sha256::digest(&digest);
    }
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    println!("{hex}");
}
