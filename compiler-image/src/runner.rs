//! Runs one child process (git or cargo) under the command's deadline and workspace-size cap,
//! with its output streamed into the [`Log`]. The child leads its own process group, so a timeout
//! or a cap kills everything it started (rustc, build scripts, linkers), not just cargo.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::os::unix::process::CommandExt;

use crate::error::{Error, Result};
use crate::log::Log;
use crate::workspace::disk_usage;

const POLL: Duration = Duration::from_millis(50);
/// Walking a target directory costs a few ms per thousand files; once a second is plenty to stop
/// a runaway long before a volume fills.
const SIZE_CHECK_EVERY: Duration = Duration::from_secs(1);
/// After the child is gone its pipes close; a reader still blocked after this long belongs to an
/// escaped grandchild and is left behind rather than hanging the command.
const READER_GRACE: Duration = Duration::from_secs(2);
/// Largest stdout a caller may capture (cargo metadata of a big workspace, vendor's config).
pub const MAX_CAPTURE_BYTES: usize = 32 * 1024 * 1024;

/// The limits shared by every step of one command.
#[derive(Debug, Clone)]
pub struct Limits {
    pub deadline: Instant,
    pub timeout: Duration,
    /// The directory whose size is capped, and the cap.
    pub watch: Option<(PathBuf, u64)>,
}

impl Limits {
    pub fn new(timeout: Duration, watch: Option<(PathBuf, u64)>) -> Self {
        Self {
            deadline: Instant::now() + timeout,
            timeout,
            watch,
        }
    }

    /// Fails when the workspace is already over its cap (checked between steps too).
    pub fn check_size(&self, step: &'static str) -> Result<()> {
        match &self.watch {
            Some((dir, cap)) if disk_usage(dir) > *cap => Err(Error::WorkspaceTooLarge {
                step,
                limit_mb: cap / (1024 * 1024),
            }),
            _ => Ok(()),
        }
    }
}

#[derive(Debug)]
pub struct Outcome {
    pub status: ExitStatus,
    /// Captured stdout (empty unless asked for).
    pub stdout: Vec<u8>,
}

/// Spawns `command` and waits for it within `limits`. Stderr always goes to the log; stdout goes
/// to the log too, or, with `capture_stdout`, is returned instead (at most [`MAX_CAPTURE_BYTES`]).
pub fn run(
    step: &'static str,
    mut command: Command,
    log: &Arc<Log>,
    limits: &Limits,
    capture_stdout: bool,
) -> Result<Outcome> {
    if Instant::now() >= limits.deadline {
        return Err(Error::Timeout {
            step,
            limit: limits.timeout,
        });
    }
    let program = command.get_program().to_string_lossy().into_owned();
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    let mut child = command.spawn().map_err(|source| Error::Spawn {
        step,
        program: program.clone(),
        source,
    })?;
    let pgid = Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX));

    let (done_tx, done_rx) = mpsc::channel::<Option<Vec<u8>>>();
    let mut readers = 0;
    if let Some(stderr) = child.stderr.take() {
        readers += 1;
        spawn_reader(stderr, Arc::clone(log), false, done_tx.clone());
    }
    if let Some(stdout) = child.stdout.take() {
        readers += 1;
        spawn_reader(stdout, Arc::clone(log), capture_stdout, done_tx.clone());
    }
    drop(done_tx);

    let mut last_size_check = Instant::now();
    let wait_result = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Ok(status),
            Ok(None) => {}
            Err(e) => break Err(Error::io("waiting for", PathBuf::from(&program), e)),
        }
        if Instant::now() >= limits.deadline {
            break Err(Error::Timeout {
                step,
                limit: limits.timeout,
            });
        }
        if last_size_check.elapsed() >= SIZE_CHECK_EVERY {
            last_size_check = Instant::now();
            if let Err(e) = limits.check_size(step) {
                break Err(e);
            }
        }
        std::thread::sleep(POLL);
    };
    // Whatever happened, nothing the step started may outlive it (ESRCH = already gone).
    let _ = killpg(pgid, Signal::SIGKILL);
    if wait_result.is_err() {
        let _ = child.wait();
    }

    let mut stdout = Vec::new();
    let grace_end = Instant::now() + READER_GRACE;
    for _ in 0..readers {
        let left = grace_end.saturating_duration_since(Instant::now());
        match done_rx.recv_timeout(left) {
            Ok(Some(captured)) => stdout = captured,
            Ok(None) => {}
            Err(_) => {
                log.step(&format!("{step}: output of an escaped process ignored"));
                break;
            }
        }
    }
    let status = wait_result?;
    Ok(Outcome { status, stdout })
}

fn spawn_reader(
    mut pipe: impl Read + Send + 'static,
    log: Arc<Log>,
    capture: bool,
    done: mpsc::Sender<Option<Vec<u8>>>,
) {
    std::thread::spawn(move || {
        let mut captured = Vec::new();
        let mut buffer = [0u8; 8192];
        loop {
            match pipe.read(&mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(n) if capture => {
                    let room = MAX_CAPTURE_BYTES.saturating_sub(captured.len());
                    captured.extend_from_slice(&buffer[..n.min(room)]);
                }
                Ok(n) => log.append(&buffer[..n]),
            }
        }
        let _ = done.send(capture.then_some(captured));
    });
}

/// `what` exited with `status`: the message names the step and the code or signal.
pub fn describe_status(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => "unknown exit status".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("survived");
        let log = Arc::new(Log::in_memory());
        let mut command = Command::new("sh");
        // The grandchild would create the marker after 2 s if it outlived the timeout.
        command.arg("-c").arg(format!(
            "(sleep 2; touch {}) & echo started; sleep 30",
            marker.display()
        ));
        let limits = Limits::new(Duration::from_millis(300), None);
        let started = Instant::now();
        let err = run("test", command, &log, &limits, false).unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(log.tail().contains("started"));
        std::thread::sleep(Duration::from_millis(2500));
        assert!(!marker.exists(), "a grandchild outlived the timeout");
    }

    #[test]
    fn the_size_cap_stops_a_runaway_writer() {
        let dir = tempfile::tempdir().unwrap();
        let log = Arc::new(Log::in_memory());
        let mut command = Command::new("sh");
        command.arg("-c").arg(format!(
            "while true; do head -c 1048576 /dev/zero >> {}/big; sleep 0.05; done",
            dir.path().display()
        ));
        let limits = Limits::new(
            Duration::from_secs(60),
            Some((dir.path().to_path_buf(), 4 * 1024 * 1024)),
        );
        let err = run("test", command, &log, &limits, false).unwrap_err();
        assert!(matches!(err, Error::WorkspaceTooLarge { .. }), "{err}");
    }

    #[test]
    fn stdout_is_captured_when_asked_and_exit_codes_come_back() {
        let log = Arc::new(Log::in_memory());
        let limits = Limits::new(Duration::from_secs(30), None);
        let mut command = Command::new("sh");
        command.arg("-c").arg("echo out; echo err >&2; exit 3");
        let outcome = run("test", command, &log, &limits, true).unwrap();
        assert_eq!(outcome.stdout, b"out\n");
        assert_eq!(outcome.status.code(), Some(3));
        assert_eq!(log.tail(), "err\n");
        assert_eq!(describe_status(&outcome.status), "exit code 3");
    }
}
