//! Reproducible builds: the same (repository, commit, target, compiler version) gives the same
//! module bytes wherever the workspace lives, so anyone can rebuild a module and compare its
//! sha256 with the one an answer names (`outlayer-operator verify`).
//!
//! What could differ between two machines, and what fixes it:
//! - **Paths.** rustc writes the path of every source file it was given into the module (panic
//!   locations, `file!()`): the checkout's own files are relative (cargo passes paths under the
//!   package's workspace relative), but vendored crates, `cargo-home/` and code generated into
//!   `OUT_DIR` (under `target/`) are absolute, i.e. contain the workspace's mount point. Every
//!   rustc invocation therefore gets `--remap-path-prefix <workspace>=/outlayer` (and the rustup
//!   home → `/rustup`). It is added by a rustc wrapper — this binary, `RUSTC_WRAPPER` — rather
//!   than through `RUSTFLAGS`, which would replace the repository's own `rustflags` instead of
//!   adding to them.
//! - **Time.** `SOURCE_DATE_EPOCH` is fixed ([`SOURCE_DATE_EPOCH`]) for build scripts that stamp
//!   dates; rustc itself records none.
//! - **Dependencies.** Locked (`--locked`, the lock file `cargo vendor` wrote) and vendored; the
//!   build is offline.
//! - **Parallelism.** Output does not depend on `--jobs`; codegen units come from the profile (a
//!   fixed number, never the CPU count); incremental compilation is off.
//! - **Toolchain.** Part of the identity: the report carries `rustc -vV`'s version line
//!   ([`toolchain_identity`]) and this binary's version ([`COMPILER_VERSION`]).
//!
//! What remains the repository's business: a guest that reads an absolute path at compile time
//! (`env!("CARGO_MANIFEST_DIR")`, a build script embedding `OUT_DIR` as a string) still
//! differs per workspace path, and so does one whose build script reads the clock or the machine.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The prefix the workspace's absolute paths become inside a module.
pub const REMAPPED_WORKSPACE: &str = "/outlayer";
/// The prefix the rustup home becomes.
pub const REMAPPED_RUSTUP: &str = "/rustup";
/// 1980-01-01T00:00:00Z: fixed, and the earliest date a zip archive can hold (some build scripts
/// package files).
pub const SOURCE_DATE_EPOCH: &str = "315532800";
/// This binary's name and version: the compiler half of a module's build identity.
pub const COMPILER_VERSION: &str = concat!("outlayer-compiler ", env!("CARGO_PKG_VERSION"));
/// Set on cargo when this binary is its `RUSTC_WRAPPER`: newline-separated `FROM=TO` remappings.
pub const REMAP_ENV: &str = "OUTLAYER_REMAP_PATH_PREFIXES";

/// The remappings for a workspace: the path as given and its canonical form (when a symlink
/// leads there), and the rustup home. rustc applies the last matching remapping, so the more
/// specific ones come last.
pub fn remappings(workspace: &Path, rustup_home: Option<&Path>) -> Vec<String> {
    let mut out = Vec::new();
    let mut add = |from: &Path, to: &str| {
        let entry = format!("{}={to}", from.display());
        if !out.contains(&entry) {
            out.push(entry);
        }
    };
    if let Some(home) = rustup_home {
        add(home, REMAPPED_RUSTUP);
        if let Ok(canonical) = std::fs::canonicalize(home) {
            add(&canonical, REMAPPED_RUSTUP);
        }
    }
    add(workspace, REMAPPED_WORKSPACE);
    if let Ok(canonical) = std::fs::canonicalize(workspace) {
        add(&canonical, REMAPPED_WORKSPACE);
    }
    out
}

/// The rustc arguments the wrapper appends for the value of [`REMAP_ENV`].
pub fn wrapper_args(remap: &str) -> Vec<OsString> {
    remap
        .lines()
        .filter(|line| !line.is_empty())
        .flat_map(|line| [OsString::from("--remap-path-prefix"), OsString::from(line)])
        .collect()
}

/// When cargo runs this binary as `RUSTC_WRAPPER` (`<this> <rustc> <args…>`, with [`REMAP_ENV`]
/// set), the rustc command to run instead; `None` when this is not such an invocation.
pub fn wrapped_rustc(args: &[OsString], remap: Option<&OsString>) -> Option<Command> {
    let remap = remap?.to_str()?;
    let (rustc, rest) = args.get(1..)?.split_first()?;
    // Our own subcommands are never a rustc to wrap (the variable may be inherited).
    if ["fetch", "build", "publish", "resolve", "help"]
        .iter()
        .any(|own| rustc == own)
        || rustc.to_string_lossy().starts_with('-')
    {
        return None;
    }
    let mut command = Command::new(rustc);
    command.args(rest);
    // `rustc -vV` and other queries take no remapping; compilations name a crate.
    if rest.iter().any(|arg| arg == "--crate-name") {
        command.args(wrapper_args(remap));
    }
    Some(command)
}

/// The rustc that cargo will use: the sibling of an explicit cargo path, else `rustc` from PATH
/// (the rustup proxy, which picks the same toolchain cargo's proxy picks in the same directory).
pub fn rustc_for(cargo: &str) -> PathBuf {
    let cargo = Path::new(cargo);
    if cargo.components().count() > 1
        && let Some(dir) = cargo.parent()
    {
        let sibling = dir.join("rustc");
        if sibling.is_file() {
            return sibling;
        }
    }
    PathBuf::from("rustc")
}

/// The toolchain half of the build identity from `rustc -vV`'s output: `rustc 1.95.0 (59807616e
/// 2026-04-14)` (its first line: release, short commit hash and date).
pub fn toolchain_identity(verbose_version: &str) -> Option<String> {
    let first = verbose_version.lines().next()?.trim();
    (first.starts_with("rustc ") && first.len() <= 128).then(|| first.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remappings_put_the_workspace_last_and_dedupe() {
        let dir = tempfile::tempdir().unwrap();
        let canonical = std::fs::canonicalize(dir.path()).unwrap();
        let remaps = remappings(&canonical, Some(Path::new("/nonexistent/rustup")));
        assert_eq!(
            remaps,
            vec![
                "/nonexistent/rustup=/rustup".to_string(),
                format!("{}=/outlayer", canonical.display()),
            ]
        );
    }

    #[test]
    fn remappings_include_the_canonical_path_of_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let remaps = remappings(&link, None);
        assert_eq!(remaps.len(), 2, "{remaps:?}");
        assert_eq!(remaps[0], format!("{}=/outlayer", link.display()));
        assert!(remaps[1].ends_with("/real=/outlayer"), "{remaps:?}");
    }

    #[test]
    fn the_wrapper_adds_remappings_to_compilations_only() {
        let remap = OsString::from("/w=/outlayer\n/r=/rustup");
        let args: Vec<OsString> = ["self", "/bin/rustc", "--crate-name", "x", "src/main.rs"]
            .iter()
            .map(OsString::from)
            .collect();
        let command = wrapped_rustc(&args, Some(&remap)).unwrap();
        assert_eq!(command.get_program(), "/bin/rustc");
        let got: Vec<_> = command.get_args().collect();
        assert_eq!(
            got,
            [
                "--crate-name",
                "x",
                "src/main.rs",
                "--remap-path-prefix",
                "/w=/outlayer",
                "--remap-path-prefix",
                "/r=/rustup"
            ]
        );

        let query: Vec<OsString> = ["self", "rustc", "-vV"]
            .iter()
            .map(OsString::from)
            .collect();
        let command = wrapped_rustc(&query, Some(&remap)).unwrap();
        assert_eq!(command.get_args().collect::<Vec<_>>(), ["-vV"]);
        // Not a wrapper invocation: no environment, or no rustc to wrap.
        assert!(wrapped_rustc(&args, None).is_none());
        assert!(wrapped_rustc(&args[..1], Some(&remap)).is_none());
        let own: Vec<OsString> = ["self", "build", "--workspace", "w"]
            .iter()
            .map(OsString::from)
            .collect();
        assert!(wrapped_rustc(&own, Some(&remap)).is_none());
    }

    #[test]
    fn toolchain_identity_is_the_first_line() {
        let vv = "rustc 1.95.0 (59807616e 2026-04-14)\nbinary: rustc\ncommit-hash: 59807616e1fa\n";
        assert_eq!(
            toolchain_identity(vv).as_deref(),
            Some("rustc 1.95.0 (59807616e 2026-04-14)")
        );
        assert_eq!(toolchain_identity("error: no such toolchain"), None);
        assert_eq!(toolchain_identity(""), None);
    }
}
