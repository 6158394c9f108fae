//! One container instance: a bwrap process whose output goes to a log file and whose sandboxed
//! PID is known, so it can be signalled like a container runtime signals a container.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::{Error, Result};

/// How a container instance ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// Exit code, or 128 + signal number when killed by a signal (the runtime convention).
    pub code: i32,
    /// False when the sandbox could not be set up and the command never ran.
    pub started: bool,
}

/// A running container instance. Dropping it kills the sandbox (bwrap gets SIGKILL, and
/// `--die-with-parent` takes the sandboxed process with it).
pub struct Running {
    child: tokio::process::Child,
    bwrap_pid: Option<u32>,
    status_file: PathBuf,
}

/// bwrap writes `{ "child-pid": N, ... }` here (`--json-status-fd`); the fd number in the child.
const STATUS_FD: i32 = 3;

impl Running {
    /// Starts `bwrap args…`, appending stdout and stderr to `log`.
    pub fn spawn(bwrap: &Path, args: &[String], log: &Path, status_file: PathBuf) -> Result<Self> {
        let io = |what: String| move |source| Error::Io { what, source };
        let out = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .map_err(io(format!("open container log {}", log.display())))?;
        let err = out
            .try_clone()
            .map_err(io(format!("duplicate container log {}", log.display())))?;
        let status =
            File::create(&status_file).map_err(io(format!("create {}", status_file.display())))?;
        let status_raw = status.as_raw_fd();

        let mut command = tokio::process::Command::new(bwrap);
        command
            .arg("--json-status-fd")
            .arg(STATUS_FD.to_string())
            .args(args)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true);
        // SAFETY: only async-signal-safe calls (dup2, prctl) between fork and exec.
        unsafe {
            command.pre_exec(move || {
                // dup2 clears FD_CLOEXEC on the copy, so bwrap inherits the status file as fd 3.
                if nix::libc::dup2(status_raw, STATUS_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let child = command
            .spawn()
            .map_err(io(format!("start {}", bwrap.display())))?;
        drop(status);
        Ok(Running {
            bwrap_pid: child.id(),
            child,
            status_file,
        })
    }

    /// A handle that can signal this container while another task waits for it.
    pub fn signaller(&self) -> Signaller {
        Signaller {
            bwrap_pid: self.bwrap_pid,
            status_file: self.status_file.clone(),
        }
    }

    /// Waits for the container to end.
    pub async fn wait(&mut self) -> Exit {
        let status = self.child.wait().await;
        let started = sandboxed_pid(&self.status_file).is_some();
        let code = match status {
            Ok(s) => {
                use std::os::unix::process::ExitStatusExt;
                s.code()
                    .or_else(|| s.signal().map(|sig| 128 + sig))
                    .unwrap_or(128)
            }
            Err(_) => 128,
        };
        Exit { code, started }
    }
}

#[derive(Debug, Clone)]
pub struct Signaller {
    bwrap_pid: Option<u32>,
    status_file: PathBuf,
}

impl Signaller {
    /// Sends `signal` to the container's process (PID 1 of its sandbox).
    pub fn signal(&self, signal: Signal) {
        match sandboxed_pid(&self.status_file) {
            Some(pid) => {
                let _ = kill(Pid::from_raw(pid), signal);
            }
            // Still setting up: only bwrap itself exists, and it can simply go.
            None => self.kill_bwrap(),
        }
    }

    /// SIGKILL to bwrap; `--die-with-parent` takes the sandboxed process with it.
    pub fn kill_bwrap(&self) {
        if let Some(pid) = self.bwrap_pid.and_then(|p| i32::try_from(p).ok()) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// The host PID of the sandboxed command, once bwrap has reported it.
fn sandboxed_pid(status_file: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(status_file).ok()?;
    text.lines().find_map(|line| {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        i32::try_from(v.get("child-pid")?.as_i64()?).ok()
    })
}

impl Signaller {
    pub(crate) fn same_as(&self, other: &Signaller) -> bool {
        self.status_file == other.status_file
    }
}
