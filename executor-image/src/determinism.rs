//! Randomness and clocks for deterministic mode, so a request replays to the same output and
//! the same instruction count on any node and any executor version.

use cap_std::time::{Duration, Instant, SystemTime};
use sha2::{Digest, Sha256};
use wasmi_wasi::wasi_common::{RngCore, WasiClocks, WasiMonotonicClock, WasiSystemClock};

/// `random_get` output for deterministic mode: block `i` is `SHA-256(SHA-256(seed) || i)` with `i`
/// a little-endian u64. Spelled out here (not a library RNG) so the stream is fixed by this
/// definition rather than by whichever RNG crate version happens to be linked.
pub struct SeededRng {
    key: [u8; 32],
    counter: u64,
    block: [u8; 32],
    used: usize,
}

impl SeededRng {
    pub fn new(seed: &[u8]) -> Self {
        Self {
            key: Sha256::digest(seed).into(),
            counter: 0,
            block: [0; 32],
            used: 32,
        }
    }

    fn refill(&mut self) {
        let mut hasher = Sha256::new();
        hasher.update(self.key);
        hasher.update(self.counter.to_le_bytes());
        self.block = hasher.finalize().into();
        self.counter = self.counter.wrapping_add(1);
        self.used = 0;
    }
}

impl RngCore for SeededRng {
    fn next_u32(&mut self) -> u32 {
        let mut bytes = [0; 4];
        self.fill_bytes(&mut bytes);
        u32::from_le_bytes(bytes)
    }

    fn next_u64(&mut self) -> u64 {
        let mut bytes = [0; 8];
        self.fill_bytes(&mut bytes);
        u64::from_le_bytes(bytes)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        let mut filled = 0;
        while filled < dest.len() {
            if self.used == self.block.len() {
                self.refill();
            }
            let take = (self.block.len() - self.used).min(dest.len() - filled);
            dest[filled..filled + take].copy_from_slice(&self.block[self.used..self.used + take]);
            self.used += take;
            filled += take;
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), cap_rand::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

/// A realtime clock that always reads the same instant.
struct FixedSystemClock(SystemTime);

impl WasiSystemClock for FixedSystemClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self, _precision: Duration) -> SystemTime {
        self.0
    }
}

/// A monotonic clock that never advances: guests read 0 ns since start.
struct FixedMonotonicClock(Instant);

impl WasiMonotonicClock for FixedMonotonicClock {
    fn resolution(&self) -> Duration {
        Duration::from_nanos(1)
    }

    fn now(&self, _precision: Duration) -> Instant {
        self.0
    }
}

/// Clocks frozen at `unix_time_nanos` (realtime) and 0 (monotonic).
pub fn fixed_clocks(unix_time_nanos: u64) -> WasiClocks {
    let realtime = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(unix_time_nanos);
    WasiClocks::new()
        .with_system(FixedSystemClock(SystemTime::from_std(realtime)))
        .with_monotonic(FixedMonotonicClock(Instant::from_std(
            std::time::Instant::now(),
        )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_stream_is_the_documented_construction() {
        let mut rng = SeededRng::new(b"seed");
        let mut out = [0u8; 40];
        rng.fill_bytes(&mut out);

        let key = Sha256::digest(b"seed");
        let block = |i: u64| {
            let mut hasher = Sha256::new();
            hasher.update(key);
            hasher.update(i.to_le_bytes());
            hasher.finalize()
        };
        assert_eq!(&out[..32], &block(0)[..]);
        assert_eq!(&out[32..], &block(1)[..8]);
    }

    #[test]
    fn split_reads_equal_one_read() {
        let mut whole = [0u8; 100];
        SeededRng::new(b"x").fill_bytes(&mut whole);
        let mut rng = SeededRng::new(b"x");
        let mut parts = [0u8; 100];
        for chunk in parts.chunks_mut(7) {
            rng.fill_bytes(chunk);
        }
        assert_eq!(whole, parts);
        let mut other = [0u8; 100];
        SeededRng::new(b"y").fill_bytes(&mut other);
        assert_ne!(whole, other);
    }
}
