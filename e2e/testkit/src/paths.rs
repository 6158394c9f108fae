//! Where the build put things. `scripts/build-wasm` and cargo agree on one rule: the target directory
//! is `$CARGO_TARGET_DIR` (relative to the workspace root when relative) or `<workspace>/target`.

use std::path::{Path, PathBuf};

/// The workspace root, without `..`.
pub fn workspace_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::canonicalize(&root).unwrap_or(root)
}

/// The workspace's target directory: `$CARGO_TARGET_DIR` (a relative one is taken from the workspace
/// root, as `scripts/build-wasm` does) or `<workspace>/target`, spelled without `..` when it exists:
/// paths from here become program paths inside sandboxes and repository URLs, where `..` does not
/// resolve.
pub fn target_dir() -> PathBuf {
    target_dir_from(std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from))
}

fn target_dir_from(configured: Option<PathBuf>) -> PathBuf {
    let dir = workspace_root().join(configured.unwrap_or_else(|| PathBuf::from("target")));
    std::fs::canonicalize(&dir).unwrap_or(dir)
}

/// `relative` under the target directory; panics, naming the command that builds it, when it is
/// missing.
pub fn artifact(relative: &str, how_to_build: &str) -> PathBuf {
    let path = target_dir().join(relative);
    assert!(
        path.exists(),
        "{} is missing: run {how_to_build}",
        path.display()
    );
    path
}

/// A deployable contract (`file` such as `outlayer_contract.wasm`): `<target>/near/<file>`, built and
/// shrunk by `scripts/build-wasm`.
pub fn contract_wasm(file: &str) -> PathBuf {
    artifact(&format!("near/{file}"), "scripts/build-wasm")
}

/// An example guest (`crate_name` such as `example-echo`) built by `scripts/build-wasm`:
/// `<target>/wasm32-wasip1/release/<crate_name>.wasm` (cargo keeps a binary's hyphens; a library's
/// become underscores).
pub fn guest_wasm(crate_name: &str) -> PathBuf {
    let dir = target_dir().join("wasm32-wasip1").join("release");
    let hyphen = dir.join(format!("{crate_name}.wasm"));
    if hyphen.exists() {
        return hyphen;
    }
    let underscore = format!(
        "wasm32-wasip1/release/{}.wasm",
        crate_name.replace('-', "_")
    );
    artifact(&underscore, "scripts/build-wasm")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_dir_follows_cargo_target_dir() {
        let root = workspace_root();
        let cases = [
            (None, root.join("target")),
            (
                Some(PathBuf::from("/var/tmp/elsewhere")),
                PathBuf::from("/var/tmp/elsewhere"),
            ),
            (Some(PathBuf::from("build/out")), root.join("build/out")),
        ];
        for (configured, expected) in cases {
            let expected = std::fs::canonicalize(&expected).unwrap_or(expected);
            assert_eq!(
                target_dir_from(configured.clone()),
                expected,
                "{configured:?}"
            );
        }
    }

    #[test]
    fn the_workspace_root_holds_the_workspace_manifest() {
        let manifest = std::fs::read_to_string(workspace_root().join("Cargo.toml")).unwrap();
        assert!(manifest.contains("[workspace]"));
        assert!(!workspace_root().to_string_lossy().contains(".."));
    }

    #[test]
    #[should_panic(expected = "run scripts/build-wasm")]
    fn a_missing_artifact_names_the_command_that_builds_it() {
        contract_wasm("no_such_contract.wasm");
    }
}
