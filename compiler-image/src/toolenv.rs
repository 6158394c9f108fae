//! The environment of every child process. It starts empty (`env_clear`): nothing of the pod's
//! environment reaches git, cargo or a build script unless listed here, and everything they
//! write lands inside the workspace (the root filesystem is read-only).

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;

use crate::reproducible;
use crate::workspace::Workspace;

/// Used when the pod has no PATH: where the official rust images and Debian keep the tools.
const DEFAULT_PATH: &str =
    "/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Variables passed through unchanged when the pod sets them: the toolchain selection and what a
/// cluster may need to reach git hosts (proxies, a private CA bundle).
const PASSTHROUGH: &[&str] = &[
    "RUSTUP_HOME",
    "RUSTUP_TOOLCHAIN",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "NO_PROXY",
    "no_proxy",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
];

/// The git settings of every git command: no hooks, no credential helpers or prompts, no
/// redirects off the allow-listed host, symlinks checked out as plain files (so nothing in the
/// checkout points outside it), objects checked as they arrive, and only https (plus `file`
/// when the repository itself is a local one the allow-list admitted).
const GIT_CONFIG: &[&str] = &[
    "core.hooksPath=/dev/null",
    "core.fsmonitor=false",
    "core.symlinks=false",
    "credential.helper=",
    "http.followRedirects=false",
    "transfer.fsckObjects=true",
    "submodule.recurse=false",
    "advice.detachedHead=false",
    "protocol.allow=never",
    "protocol.https.allow=always",
];

#[derive(Debug, Clone)]
pub struct Tools {
    pub git: String,
    pub cargo: String,
    path: OsString,
    passthrough: Vec<(&'static str, OsString)>,
}

impl Tools {
    /// Reads PATH and the pass-through variables from this process's environment once.
    pub fn from_env(git: String, cargo: String) -> Self {
        let path = std::env::var_os("PATH")
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| DEFAULT_PATH.into());
        let mut passthrough: Vec<(&'static str, OsString)> = PASSTHROUGH
            .iter()
            .filter_map(|name| std::env::var_os(name).map(|value| (*name, value)))
            .collect();
        // HOME moves into the workspace, so rustup would no longer find its default ~/.rustup.
        if !passthrough.iter().any(|(name, _)| *name == "RUSTUP_HOME")
            && let Some(home) = std::env::var_os("HOME")
        {
            let rustup = Path::new(&home).join(".rustup");
            if rustup.is_dir() {
                passthrough.push(("RUSTUP_HOME", rustup.into_os_string()));
            }
        }
        Self {
            git,
            cargo,
            path,
            passthrough,
        }
    }

    fn base(&self, program: &str, workspace: &Workspace) -> Command {
        let mut command = Command::new(program);
        command
            .env_clear()
            .env("PATH", &self.path)
            .env("HOME", workspace.home())
            .env("TMPDIR", workspace.tmp())
            .env("LC_ALL", "C");
        for (name, value) in &self.passthrough {
            command.env(name, value);
        }
        command
    }

    /// `git -c … <args>` in the checkout directory, allowing only https and the transport `source`
    /// uses: `file://` (a local repository, where the allow-list admits one) or `git://` (a mirror
    /// inside the cluster network, which only the operator's `--git-mirror` can name).
    pub fn git(&self, workspace: &Workspace, source: &str) -> Command {
        let mut command = self.base(&self.git, workspace);
        command
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_LFS_SKIP_SMUDGE", "1")
            .env("GIT_NO_REPLACE_OBJECTS", "1")
            .env("GIT_PROTOCOL_FROM_USER", "0");
        for setting in GIT_CONFIG {
            command.arg("-c").arg(setting);
        }
        if source.starts_with("file://") {
            command.arg("-c").arg("protocol.file.allow=always");
        } else if source.starts_with("git://") {
            command.arg("-c").arg("protocol.git.allow=always");
        }
        command.arg("-C").arg(workspace.src());
        command
    }

    /// The rustup home passed to children, when there is one.
    pub fn rustup_home(&self) -> Option<&Path> {
        self.passthrough
            .iter()
            .find(|(name, _)| *name == "RUSTUP_HOME")
            .map(|(_, value)| Path::new(value))
    }

    /// `rustc` (the one [`reproducible::rustc_for`] picks for the cargo program) with the same
    /// clean environment, to ask it for its version.
    pub fn rustc(&self, workspace: &Workspace) -> Command {
        self.base(
            &reproducible::rustc_for(&self.cargo).to_string_lossy(),
            workspace,
        )
    }

    /// `cargo build`'s command: [`Tools::cargo`] offline, plus what makes the module independent
    /// of where the workspace is (DESIGN §5, `reproducible`): this binary as `RUSTC_WRAPPER`
    /// adding `--remap-path-prefix` to every compilation, and a fixed `SOURCE_DATE_EPOCH`.
    pub fn cargo_build(&self, workspace: &Workspace, wrapper: &Path) -> Command {
        let mut command = self.cargo(workspace, true);
        let remap = reproducible::remappings(workspace.root(), self.rustup_home()).join("\n");
        command
            .env("RUSTC_WRAPPER", wrapper)
            .env(reproducible::REMAP_ENV, remap)
            .env("SOURCE_DATE_EPOCH", reproducible::SOURCE_DATE_EPOCH);
        command
    }

    /// `cargo` with CARGO_HOME (and CARGO_TARGET_DIR) inside the workspace. `offline` also sets
    /// CARGO_NET_OFFLINE, so even a subcommand without `--offline` cannot reach the network.
    pub fn cargo(&self, workspace: &Workspace, offline: bool) -> Command {
        let mut command = self.base(&self.cargo, workspace);
        command
            .env("CARGO_HOME", workspace.cargo_home())
            .env("CARGO_TARGET_DIR", workspace.target())
            .env("CARGO_TERM_COLOR", "never")
            .env("CARGO_TERM_PROGRESS_WHEN", "never")
            .env("CARGO_INCREMENTAL", "0");
        if offline {
            command.env("CARGO_NET_OFFLINE", "true");
        }
        command
    }
}
