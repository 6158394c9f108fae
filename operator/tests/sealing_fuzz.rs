//! Fuzzing the opening path: random and mutated byte strings go through the envelope parser, `open`,
//! the plaintext parser and the public-key parser; nothing may panic, and no altered envelope may open.
//!
//! The short run (3,000 cases per target, fixed seed) is part of `cargo test`. A longer one:
//! `OUTLAYER_SEALING_FUZZ_ITERATIONS=1000000 OUTLAYER_SEALING_FUZZ_SEED=7 cargo test -p outlayer-operator
//! --test sealing_fuzz -- --ignored --nocapture` (any seed; a failure prints the seed and case to replay).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use outlayer_operator::sealing::crypto::Envelope;
use outlayer_operator::sealing::{
    KeyId, KeyPair, Keyring, Plaintext, Scope, SealingKey, SecretKey, open,
};

const SHORT_RUN: u64 = 3_000;

/// splitmix64: a tiny deterministic generator, so a failing case replays from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

struct Fixture {
    keyring: Keyring,
    scope: Scope,
    sealed: Vec<u8>,
}

/// The first committed test vector: a real envelope to mutate.
fn fixture() -> Fixture {
    let vectors: serde_json::Value =
        serde_json::from_str(include_str!("../src/sealing/test_vectors.json")).unwrap();
    let v = &vectors[0];
    let secret_hex = v["recipientSecretHex"].as_str().unwrap();
    let secret: Vec<u8> = (0..64)
        .step_by(2)
        .map(|i| u8::from_str_radix(&secret_hex[i..i + 2], 16).unwrap())
        .collect();
    let id = KeyId::new(v["keyId"].as_str().unwrap()).unwrap();
    let pair = KeyPair::new(id.clone(), SecretKey::from_slice(&secret).unwrap());
    let scope = Scope::new(
        v["owner"].as_str().unwrap(),
        v["repo"].as_str().unwrap(),
        v["branch"].as_str(),
        v["profile"].as_str().unwrap(),
    )
    .unwrap();
    let sealed = BASE64.decode(v["sealedBase64"].as_str().unwrap()).unwrap();
    let keyring = Keyring::new(vec![pair], &id).unwrap();
    open(&keyring, &scope, &sealed).expect("the committed vector opens");
    Fixture {
        keyring,
        scope,
        sealed,
    }
}

fn mutate(rng: &mut Rng, base: &[u8]) -> Vec<u8> {
    let mut out = base.to_vec();
    match rng.below(9) {
        0 => {
            let len = rng.below(160);
            out = rng.bytes(len);
        }
        1 => {
            for _ in 0..=rng.below(4) {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
        }
        2 => {
            let i = rng.below(out.len());
            out[i] = rng.next() as u8;
        }
        3 => out.truncate(rng.below(out.len())),
        4 => {
            let extra = rng.below(64) + 1;
            out.extend(rng.bytes(extra));
        }
        5 => {
            // Header fields: version, key id length, key id bytes.
            let i = 3 + rng.below(6);
            out[i] = rng.next() as u8;
        }
        6 => {
            let i = rng.below(out.len());
            let len = rng.below(16) + 1;
            out.splice(i..i, rng.bytes(len));
        }
        7 => {
            let start = rng.below(out.len());
            let end = (start + rng.below(16) + 1).min(out.len());
            out.drain(start..end);
        }
        _ => {
            // Valid magic and version, random rest: reaches the deeper checks.
            let len = rng.below(120);
            out = b"OLS\x01".to_vec();
            out.extend(rng.bytes(len));
        }
    }
    out
}

fn fuzz_open(seed: u64, iterations: u64) {
    let fixture = fixture();
    let mut rng = Rng(seed);
    for case in 0..iterations {
        let input = mutate(&mut rng, &fixture.sealed);
        let _ = Envelope::parse(&input);
        let opened = open(&fixture.keyring, &fixture.scope, &input);
        if input != fixture.sealed {
            assert!(
                opened.is_err(),
                "seed {seed} case {case}: an altered envelope opened"
            );
        }
    }
}

fn fuzz_parsers(seed: u64, iterations: u64) {
    let alphabet = br#"{}[]":,\ u0aAZ_9.-tfnl"#;
    let mut rng = Rng(seed);
    for _ in 0..iterations {
        let len = rng.below(48);
        let json: Vec<u8> = if rng.below(2) == 0 {
            rng.bytes(len)
        } else {
            (0..len)
                .map(|_| alphabet[rng.below(alphabet.len())])
                .collect()
        };
        let _ = Plaintext::from_json(&json);
        let text = String::from_utf8_lossy(&json);
        let _ = SealingKey::parse(&format!("x25519:{text}"));
        let _ = SealingKey::parse(&text);
    }
}

fn iterations_from_env(default: u64) -> (u64, u64) {
    let iterations = std::env::var("OUTLAYER_SEALING_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default);
    let seed = std::env::var("OUTLAYER_SEALING_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    (iterations, seed)
}

#[test]
fn garbage_never_panics_and_altered_envelopes_never_open() {
    fuzz_open(0x5eed, SHORT_RUN);
}

#[test]
fn the_plaintext_and_key_parsers_never_panic() {
    fuzz_parsers(0x5eed, SHORT_RUN);
}

#[test]
#[ignore = "long fuzz run; see the module docs"]
fn long_fuzz_run() {
    let (iterations, seed) = iterations_from_env(200_000);
    let started = std::time::Instant::now();
    fuzz_open(seed, iterations);
    fuzz_parsers(seed, iterations);
    println!(
        "fuzzed {iterations} cases per target with seed {seed} in {:?}",
        started.elapsed()
    );
}
