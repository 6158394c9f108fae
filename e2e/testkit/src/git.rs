//! `git` with a fixed identity, so commits work on machines without a global git config.

use std::path::Path;
use std::process::Command;

/// Runs `git <args>` in `dir`; its trimmed stdout, or git's stderr as the error.
pub fn try_git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let output = Command::new("git")
        .args([
            "-c",
            "user.name=OutLayer Tests",
            "-c",
            "user.email=tests@outlayer.dev",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| format!("git {args:?} did not start: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "git {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// [`try_git`] for tests: panics with git's stderr when it fails.
pub fn git(dir: &Path, args: &[&str]) -> String {
    try_git(dir, args).unwrap_or_else(|e| panic!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commits_with_the_fixed_identity_and_reports_failures() {
        let repo = std::env::temp_dir().join(format!("testkit-git-{}", std::process::id()));
        std::fs::create_dir_all(&repo).unwrap();
        git(&repo, &["init", "-q", "-b", "main"]);
        std::fs::write(repo.join("file"), "x").unwrap();
        git(&repo, &["add", "."]);
        git(&repo, &["commit", "-q", "-m", "one"]);
        assert_eq!(
            git(&repo, &["log", "-1", "--format=%an <%ae>"]),
            "OutLayer Tests <tests@outlayer.dev>"
        );
        let error = try_git(&repo, &["rev-parse", "no-such-branch"]).unwrap_err();
        assert!(error.contains("rev-parse"), "{error}");
        std::fs::remove_dir_all(&repo).unwrap();
    }
}
