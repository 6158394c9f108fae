//! `git` with a fixed identity, so commits work on machines without a global git config; and a
//! reproducible variant for tests that compare commit hashes across runs.

use std::path::Path;
use std::process::Command;

/// Runs `git <args>` in `dir`; its trimmed stdout, or git's stderr as the error.
pub fn try_git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let mut command = Command::new("git");
    command
        .args([
            "-c",
            "user.name=OutLayer Tests",
            "-c",
            "user.email=tests@outlayer.dev",
        ])
        .args(args)
        .current_dir(dir);
    run(command, args)
}

/// Runs `git <args>` in `dir` with no global or system configuration and fixed author and committer
/// (names and dates), so the same commits get the same hashes on every machine and run; panics with
/// git's stderr when it fails.
pub fn reproducible_git(dir: &Path, args: &[&str]) -> String {
    let mut command = Command::new("git");
    command
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "OutLayer Test")
        .env("GIT_AUTHOR_EMAIL", "test@outlayer.invalid")
        .env("GIT_AUTHOR_DATE", "2026-01-01T00:00:00Z")
        .env("GIT_COMMITTER_NAME", "OutLayer Test")
        .env("GIT_COMMITTER_EMAIL", "test@outlayer.invalid")
        .env("GIT_COMMITTER_DATE", "2026-01-01T00:00:00Z");
    run(command, args).unwrap_or_else(|e| panic!("{e}"))
}

/// Commits `examples/<example>` (a std-only guest) as a standalone crate (its own manifest: the
/// example's uses workspace inheritance) on branch `main` of a new repository at `repo`.
pub fn example_repository(repo: &Path, example: &str) {
    let source = crate::workspace_root().join(format!("examples/{example}/src/main.rs"));
    let main = std::fs::read_to_string(&source)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", source.display()));
    let written = std::fs::create_dir_all(repo.join("src"))
        .and_then(|()| {
            std::fs::write(
                repo.join("Cargo.toml"),
                format!(
                    "[package]\nname = \"{example}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[dependencies]\n"
                ),
            )
        })
        .and_then(|()| std::fs::write(repo.join("src/main.rs"), main));
    if let Err(e) = written {
        panic!(
            "cannot write the {example} repository at {}: {e}",
            repo.display()
        );
    }
    git(repo, &["init", "-q", "-b", "main"]);
    git(repo, &["add", "."]);
    git(repo, &["commit", "-q", "-m", example]);
}

/// The path of `program` as the shell finds it; panics when it is not on PATH.
pub fn which(program: &str) -> String {
    let output = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .unwrap_or_else(|e| panic!("sh did not start: {e}"));
    let path = String::from_utf8_lossy(&output.stdout).trim().to_string();
    assert!(!path.is_empty(), "{program} is not on PATH");
    path
}

fn run(mut command: Command, args: &[&str]) -> Result<String, String> {
    let output = command
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

    #[test]
    fn an_example_becomes_a_standalone_repository_on_main() {
        let repo = std::env::temp_dir().join(format!("testkit-example-{}", std::process::id()));
        example_repository(&repo, "echo");
        assert_eq!(git(&repo, &["branch", "--show-current"]), "main");
        assert_eq!(git(&repo, &["log", "-1", "--format=%s"]), "echo");
        let manifest = std::fs::read_to_string(repo.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("name = \"echo\""), "{manifest}");
        std::fs::remove_dir_all(&repo).unwrap();
        assert!(which("git").ends_with("git"));
    }

    #[test]
    fn reproducible_commits_get_the_same_hash_anywhere() {
        let hashes: Vec<String> = ["a", "b/deeper"]
            .iter()
            .map(|sub| {
                let base =
                    std::env::temp_dir().join(format!("testkit-repro-{}", std::process::id()));
                let repo = base.join(sub);
                std::fs::create_dir_all(&repo).unwrap();
                reproducible_git(&repo, &["init", "-q", "-b", "main"]);
                std::fs::write(repo.join("file"), "same").unwrap();
                reproducible_git(&repo, &["add", "."]);
                reproducible_git(&repo, &["commit", "-q", "-m", "same"]);
                let hash = reproducible_git(&repo, &["rev-parse", "HEAD"]);
                std::fs::remove_dir_all(&repo).unwrap();
                hash
            })
            .collect();
        assert_eq!(hashes[0], hashes[1]);
    }
}
