//! A git mirror on the node for real-node tests: `git daemon` serving a directory of repositories on
//! the node IP, so fetch Jobs clone over the pod network as a cluster without egress to GitHub would
//! from an internal mirror (`--git-mirror https://github.com/=git://<node>:<port>/`).

use std::path::Path;
use std::process::Command;

use super::NODE_IP;
use crate::process::ManagedProcess;
use crate::{Error, Result};

/// A running `git daemon` exporting every repository under its root; stopped when dropped.
pub struct GitMirror {
    _daemon: ManagedProcess,
    port: u16,
}

impl GitMirror {
    /// Serves `root` on the node IP (the real node's bridge must exist), logging to `log_dir`.
    pub fn start(root: &Path, log_dir: &Path) -> Result<Self> {
        let port = std::net::TcpListener::bind((NODE_IP, 0))
            .and_then(|listener| listener.local_addr())
            .map_err(|source| Error::Io {
                what: format!("find a free port on {NODE_IP}"),
                source,
            })?
            .port();
        let exec_path = Command::new("git")
            .arg("--exec-path")
            .output()
            .map_err(|source| Error::Io {
                what: "run git --exec-path".into(),
                source,
            })?;
        let exec_path = String::from_utf8_lossy(&exec_path.stdout).trim().to_owned();
        let daemon = ManagedProcess::spawn(
            "git-daemon",
            &Path::new(&exec_path).join("git-daemon"),
            &[
                "--reuseaddr".into(),
                "--export-all".into(),
                format!("--base-path={}", root.display()),
                format!("--listen={NODE_IP}"),
                format!("--port={port}"),
                "--informative-errors".into(),
                root.display().to_string(),
            ],
            log_dir.join("git-daemon.log"),
        )?;
        Ok(GitMirror {
            _daemon: daemon,
            port,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `git://<node IP>:<port>/`, the replacement side of a `--git-mirror` rewrite.
    pub fn url(&self) -> String {
        format!("git://{NODE_IP}:{}/", self.port)
    }
}
