//! Copies stdin to stdout unchanged: the smallest useful guest, used to measure fixed costs.

use std::io::{Read, Write};

fn main() {
    let mut input = Vec::new();
    if let Err(error) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("echo: reading stdin failed: {error}");
        std::process::exit(1);
    }
    if let Err(error) = std::io::stdout().write_all(&input) {
        eprintln!("echo: writing stdout failed: {error}");
        std::process::exit(1);
    }
}
