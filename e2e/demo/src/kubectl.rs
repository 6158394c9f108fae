//! The kubectl that matches the local control plane, run against its admin kubeconfig: what the demo
//! prints is what a user would see typing the same command.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Result;

#[derive(Debug, Clone)]
pub struct Kubectl {
    pub bin: PathBuf,
    pub kubeconfig: PathBuf,
}

impl Kubectl {
    pub fn new(bin: &Path, kubeconfig: &Path) -> Self {
        Self {
            bin: bin.to_path_buf(),
            kubeconfig: kubeconfig.to_path_buf(),
        }
    }

    /// `kubectl --kubeconfig … args…` with `stdin` fed in; stdout, or an error carrying stderr.
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        let mut command = Command::new(&self.bin);
        command.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        let shown: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        Ok(e2e_chart::helm::run(command, &self.bin, &shown, stdin)?)
    }
}
