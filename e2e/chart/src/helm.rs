//! The helm CLI, run as a child process against the chart in this repository.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{Error, Result};

/// A helm binary and the directories it keeps its own state in (a fresh set per [`Helm`], so the
/// user's repositories, plugins and registry logins never change what a test sees).
pub struct Helm {
    bin: PathBuf,
    home: tempfile::TempDir,
}

impl Helm {
    /// The helm that `scripts/install-deps` builds; an error that says how to get it otherwise.
    pub fn locate() -> Result<Self> {
        let bin = e2e_cluster::binaries::helm()?;
        Ok(Helm {
            bin,
            home: tempfile::Builder::new()
                .prefix("e2e-chart-helm-")
                .tempdir()
                .map_err(|source| Error::Read {
                    path: std::env::temp_dir().display().to_string(),
                    source,
                })?,
        })
    }

    pub fn path(&self) -> &Path {
        &self.bin
    }

    /// Runs `helm args…` (with `stdin` on its standard input when given) and returns its stdout;
    /// a non-zero exit is an error carrying stderr.
    pub fn run(&self, args: &[String], stdin: Option<&str>) -> Result<String> {
        let mut command = Command::new(&self.bin);
        command
            .args(args)
            .env("HELM_CACHE_HOME", self.home.path().join("cache"))
            .env("HELM_CONFIG_HOME", self.home.path().join("config"))
            .env("HELM_DATA_HOME", self.home.path().join("data"));
        run(command, &self.bin, args, stdin)
    }

    /// `helm lint --strict <chart> extra…`.
    pub fn lint(&self, extra: &[&str]) -> Result<String> {
        let mut args = vec![
            "lint".to_string(),
            "--strict".to_string(),
            crate::chart_dir().display().to_string(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        self.run(&args, None)
    }

    /// `helm template <release> <chart> --namespace <namespace> extra…`: the manifests as text.
    pub fn template(&self, release: &str, namespace: &str, extra: &[&str]) -> Result<String> {
        let mut args = vec![
            "template".to_string(),
            release.to_string(),
            crate::chart_dir().display().to_string(),
            "--namespace".to_string(),
            namespace.to_string(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        self.run(&args, None)
    }
}

/// Runs a prepared command, feeding `stdin`, and returns stdout or an error with stderr.
pub fn run(
    mut command: Command,
    program: &Path,
    args: &[String],
    stdin: Option<&str>,
) -> Result<String> {
    let shown = args.join(" ");
    let spawn_error = |source| Error::Spawn {
        program: program.display().to_string(),
        args: shown.clone(),
        source,
    };
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().map_err(spawn_error)?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A child that exits early closes the pipe; its exit status and stderr then say why.
        let _ = pipe.write_all(input.as_bytes());
    }
    let output = child.wait_with_output().map_err(spawn_error)?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(Error::Failed {
            program: program.display().to_string(),
            args: shown,
            status: output.status.to_string(),
            stderr: format!(
                "{}{}",
                String::from_utf8_lossy(&output.stderr),
                String::from_utf8_lossy(&output.stdout)
            ),
        })
    }
}
