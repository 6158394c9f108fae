//! Memory and table limits, enforced by wasmi through the store's resource limiter.

use wasmi::ResourceLimiter;
use wasmi_core::LimiterError;

/// Tables hold function references; large ones cost host memory the memory limit does not see.
const MAX_TABLE_ELEMENTS: usize = 100_000;
/// A WASI command is one instance with (usually) one memory and one table.
const MAX_INSTANCES: usize = 1;
const MAX_MEMORIES: usize = 4;
const MAX_TABLES: usize = 4;

/// Limits the total linear memory of all memories together and remembers when it said no, so a
/// failure can be reported as "memory limit exceeded" rather than as a bare trap.
///
/// Growth past the limit traps instead of making `memory.grow` return -1: a guest's allocator
/// would otherwise abort with its own message (or loop on the failure), hiding the cause.
#[derive(Debug)]
pub struct MemoryLimiter {
    limit_bytes: u64,
    used_bytes: u64,
    exceeded: bool,
}

impl MemoryLimiter {
    pub fn new(limit_bytes: u64) -> Self {
        Self {
            limit_bytes,
            used_bytes: 0,
            exceeded: false,
        }
    }

    /// Whether a growth (or an initial memory) was refused.
    pub fn exceeded(&self) -> bool {
        self.exceeded
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> Result<bool, LimiterError> {
        let extra = desired.saturating_sub(current) as u64;
        let total = self.used_bytes.saturating_add(extra);
        if total > self.limit_bytes {
            self.exceeded = true;
            return Err(LimiterError::ResourceLimiterDeniedAllocation);
        }
        self.used_bytes = total;
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> Result<bool, LimiterError> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_all_memories_together() {
        let mut limiter = MemoryLimiter::new(100);
        assert!(limiter.memory_growing(0, 60, None).unwrap());
        assert!(limiter.memory_growing(0, 40, None).unwrap());
        assert!(!limiter.exceeded());
        assert!(limiter.memory_growing(40, 41, None).is_err());
        assert!(limiter.exceeded());
    }
}
