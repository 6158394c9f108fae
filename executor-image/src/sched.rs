//! The WASI scheduler (`poll_oneoff`, `sched_yield`, sleeps), bounded by the execution deadline.
//!
//! The fuel-slice loop only sees the clock between slices; a guest blocked in a host call would
//! never reach it. wasi-common's own scheduler sleeps for as long as the guest asks and polls
//! real file descriptors, so this one replaces it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use wasmi_wasi::wasi_common::sched::subscription::{RwEventFlags, Subscription};
use wasmi_wasi::wasi_common::{Error, Poll, WasiSched};

pub struct DeadlineSched {
    deadline: Instant,
    deadline_hit: Arc<AtomicBool>,
}

impl DeadlineSched {
    /// `deadline_hit` is set when a sleep would cross the deadline, so the executor can report
    /// the trap as a time limit.
    pub fn new(deadline: Instant, deadline_hit: Arc<AtomicBool>) -> Self {
        Self {
            deadline,
            deadline_hit,
        }
    }

    fn bounded_sleep(&self, duration: Duration) -> Result<(), Error> {
        let remaining = self.deadline.saturating_duration_since(Instant::now());
        if duration > remaining {
            // Sleep out the budget first, so the time charged matches a guest that spun instead.
            std::thread::sleep(remaining);
            self.deadline_hit.store(true, Ordering::SeqCst);
            return Err(Error::trap(anyhow::anyhow!(
                "time limit exceeded while sleeping"
            )));
        }
        std::thread::sleep(duration);
        Ok(())
    }
}

#[async_trait::async_trait]
impl WasiSched for DeadlineSched {
    async fn poll_oneoff<'a>(&self, poll: &mut Poll<'a>) -> Result<(), Error> {
        // stdin, stdout and stderr are in-memory and always ready; no other fds exist.
        let mut any_ready = false;
        for subscription in poll.rw_subscriptions() {
            match subscription {
                Subscription::Read(read) => {
                    let ready = read.file.num_ready_bytes().unwrap_or(0);
                    read.complete(ready, RwEventFlags::empty());
                    any_ready = true;
                }
                Subscription::Write(write) => {
                    write.complete(0, RwEventFlags::empty());
                    any_ready = true;
                }
                Subscription::MonotonicClock(_) => {}
            }
        }
        if any_ready {
            return Ok(());
        }
        if let Some(clock) = poll.earliest_clock_deadline() {
            // With deterministic (frozen) clocks the timer never fires after the sleep; the guest
            // then sees zero events, which POSIX allows for a poll.
            let wait = clock.duration_until().unwrap_or_default();
            self.bounded_sleep(wait)?;
        }
        Ok(())
    }

    async fn sched_yield(&self) -> Result<(), Error> {
        Ok(())
    }

    async fn sleep(&self, duration: Duration) -> Result<(), Error> {
        self.bounded_sleep(duration)
    }
}
