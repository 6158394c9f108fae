//! The layout of one CompileJob's workspace on the cache volume. The fetch Job fills it, the build
//! Job (another pod, maybe another mount path) reads it, so every path inside is relative to the
//! root and nothing records an absolute path.
//!
//! ```text
//! <workspace>/src/                 the checkout at the resolved commit
//! <workspace>/vendor/              vendored dependencies (absent when there are none)
//! <workspace>/.cargo/config.toml   source replacement pointing at vendor/ (relative)
//! <workspace>/cargo-home/          CARGO_HOME of both steps
//! <workspace>/target/              CARGO_TARGET_DIR of the build
//! <workspace>/home/, tmp/          HOME and TMPDIR of child processes (the root FS is read-only)
//! <workspace>/logs/fetch.log, build.log
//! <workspace>/fetch.json, build.json   the reports, as also written to the result path
//! ```

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct Workspace {
    root: PathBuf,
}

impl Workspace {
    pub fn new(root: &Path) -> Result<Self> {
        let root = std::path::absolute(root)
            .map_err(|e| Error::io("resolving the workspace path", root, e))?;
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn src(&self) -> PathBuf {
        self.root.join("src")
    }
    pub fn manifest(&self) -> PathBuf {
        self.src().join("Cargo.toml")
    }
    pub fn vendor(&self) -> PathBuf {
        self.root.join("vendor")
    }
    pub fn cargo_config(&self) -> PathBuf {
        self.root.join(".cargo").join("config.toml")
    }
    pub fn cargo_home(&self) -> PathBuf {
        self.root.join("cargo-home")
    }
    pub fn target(&self) -> PathBuf {
        self.root.join("target")
    }
    pub fn home(&self) -> PathBuf {
        self.root.join("home")
    }
    pub fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }
    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }
    pub fn fetch_record(&self) -> PathBuf {
        self.root.join("fetch.json")
    }
    pub fn build_record(&self) -> PathBuf {
        self.root.join("build.json")
    }

    /// Empties what a previous (possibly interrupted) fetch left, so a retried fetch Job starts
    /// clean. Only the entries this layout names are removed: a mistaken `--workspace` can never
    /// make us delete anything else.
    pub fn reset_for_fetch(&self) -> Result<()> {
        std::fs::create_dir_all(&self.root)
            .map_err(|e| Error::io("creating the workspace", &self.root, e))?;
        for dir in [
            self.src(),
            self.vendor(),
            self.root.join(".cargo"),
            self.cargo_home(),
            self.target(),
            self.home(),
            self.tmp(),
        ] {
            remove_if_present(&dir)?;
        }
        for file in [self.fetch_record(), self.build_record()] {
            remove_if_present(&file)?;
        }
        self.ensure_scratch_dirs()
    }

    /// HOME, TMPDIR and the log directory must exist before any child process runs.
    pub fn ensure_scratch_dirs(&self) -> Result<()> {
        for dir in [self.home(), self.tmp(), self.logs()] {
            std::fs::create_dir_all(&dir)
                .map_err(|e| Error::io("creating a workspace directory", &dir, e))?;
        }
        Ok(())
    }
}

fn remove_if_present(path: &Path) -> Result<()> {
    // symlink_metadata: a symlink planted where a directory belongs is removed, never followed.
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path)
            .map_err(|e| Error::io("clearing the workspace entry", path, e)),
        Ok(_) => std::fs::remove_file(path)
            .map_err(|e| Error::io("clearing the workspace entry", path, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io("inspecting the workspace entry", path, e)),
    }
}

/// Bytes of regular files under `dir` (symlinks not followed). Files that vanish mid-walk — a
/// build is running — are skipped: the figure only has to be good enough to stop a runaway.
pub fn disk_usage(dir: &Path) -> u64 {
    let mut total = 0u64;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&path) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                total = total.saturating_add(meta.len());
            }
        }
    }
    total
}
