//! What the demo runs that cargo and `scripts/build-wasm` build, found under the target directory,
//! and the working directory it keeps its repository, cache and values in.

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// `$CARGO_TARGET_DIR`, else the workspace's `target/`, without `..`: these paths become program
/// paths inside sandboxes and repository URLs, where `..` does not resolve.
pub fn target_dir() -> PathBuf {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    std::fs::canonicalize(&dir).unwrap_or(dir)
}

/// The built binaries the images are made from (`e2e/real-node/images.sh`), and the contract the
/// localnet hosts.
#[derive(Debug, Clone)]
pub struct Artifacts {
    pub operator: PathBuf,
    pub executor: PathBuf,
    pub compiler: PathBuf,
    pub contract: PathBuf,
}

impl Artifacts {
    /// Every artifact, or an error naming the first missing one and the command that builds it.
    pub fn locate() -> Result<Self> {
        let target = target_dir();
        let find = |relative: &str, what: &'static str, how: &'static str| {
            let path = target.join(relative);
            if path.is_file() {
                Ok(path)
            } else {
                Err(Error::MissingArtifact {
                    what,
                    path: path.display().to_string(),
                    how,
                })
            }
        };
        let build = "cargo build -p outlayer-operator -p outlayer-executor -p outlayer-compiler";
        Ok(Self {
            operator: find("debug/outlayer-operator", "the operator binary", build)?,
            executor: find("debug/outlayer-executor", "the executor binary", build)?,
            compiler: find("debug/outlayer-compiler", "the compiler binary", build)?,
            contract: find(
                "near/outlayer_contract.wasm",
                "the contract wasm",
                "scripts/build-wasm",
            )?,
        })
    }
}

/// A fresh directory for the demo's repository, cache and values, removed when dropped. Sandboxed
/// pods see the host read-only but get an empty /tmp, so it lives under the target directory (else
/// the e2e cache), never under /tmp.
pub fn work_dir() -> Result<tempfile::TempDir> {
    let candidates = [
        Some(target_dir().join("outlayer-demo")),
        e2e_cluster::binaries::cache_root().map(|root| root.join("demo")),
    ];
    for root in candidates.into_iter().flatten() {
        std::fs::create_dir_all(&root).map_err(Error::io(format!("create {}", root.display())))?;
        let root = std::fs::canonicalize(&root)
            .map_err(Error::io(format!("resolve {}", root.display())))?;
        if root.starts_with("/tmp") {
            continue;
        }
        let dir = tempfile::Builder::new()
            .prefix("run-")
            .tempdir_in(&root)
            .map_err(Error::io(format!(
                "create a directory in {}",
                root.display()
            )))?;
        // The operator, executor and compiler run as uid 65532: they must reach what is inside.
        set_mode(dir.path(), 0o755)?;
        return Ok(dir);
    }
    Err(Error::Unexpected(
        "no place outside /tmp for the demo's files: set OUTLAYER_E2E_CACHE or CARGO_TARGET_DIR \
         to a directory outside /tmp"
            .into(),
    ))
}

pub(crate) fn set_mode(path: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
        .map_err(Error::io(format!("chmod {mode:o} {}", path.display())))
}
