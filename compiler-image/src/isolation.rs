//! The build runs the repository's code (build scripts, proc macros), which must never see the
//! network. The pod's NetworkPolicy denies it, but a policy engine that is not the CNI (kube-router
//! on the test node) programs a new pod's rules only after it sees the pod's address — measured here
//! at 0.1–1 s, longer on a busy node — and until then the pod's connections go out unfiltered. So
//! the build first waits until a connection to the probe address (one every pod reaches when no
//! policy applies: the API server, which the operator names) fails, and runs nothing of the
//! repository when it never does.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::log::Log;

/// How long the build waits for the policy before it refuses.
pub const ISOLATION_WAIT: Duration = Duration::from_secs(30);
/// A connection not made within this is a closed path (a policy that drops rather than refuses).
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// Whether `probe` accepts a connection from here.
fn reachable(probe: SocketAddr) -> bool {
    TcpStream::connect_timeout(&probe, CONNECT_TIMEOUT).is_ok()
}

/// Returns once `probe` cannot be reached (how long that took), or [`Error::NotIsolated`] when it
/// still can after `within`.
pub fn wait_until_isolated(probe: SocketAddr, within: Duration, log: &Log) -> Result<Duration> {
    let started = Instant::now();
    loop {
        if !reachable(probe) {
            let waited = started.elapsed();
            log.step(&format!(
                "network closed: {probe} is unreachable ({} ms after the start)",
                waited.as_millis()
            ));
            return Ok(waited);
        }
        if started.elapsed() >= within {
            return Err(Error::NotIsolated {
                probe: probe.to_string(),
                waited_seconds: within.as_secs(),
            });
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn log() -> Log {
        Log::in_memory()
    }

    #[test]
    fn a_reachable_probe_refuses_the_build_after_the_wait() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let probe = listener.local_addr().unwrap();
        let error = wait_until_isolated(probe, Duration::from_millis(500), &log()).unwrap_err();
        assert_eq!(error.kind(), "notIsolated");
        assert!(error.to_string().contains(&probe.to_string()), "{error}");
    }

    #[test]
    fn an_unreachable_probe_lets_the_build_start_at_once() {
        // A port nothing listens on: refused at once.
        let probe = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let waited = wait_until_isolated(probe, Duration::from_secs(5), &log()).unwrap();
        assert!(waited < Duration::from_secs(1), "{waited:?}");
    }

    #[test]
    fn a_probe_that_closes_while_waiting_lets_the_build_start_then() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let probe = listener.local_addr().unwrap();
        let closer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(600));
            drop(listener);
        });
        let waited = wait_until_isolated(probe, Duration::from_secs(10), &log()).unwrap();
        closer.join().unwrap();
        assert!(waited >= Duration::from_millis(500), "{waited:?}");
    }
}
