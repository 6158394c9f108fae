//! The example the user asks for: `examples/json-transform` committed to a local git repository that
//! the operator's fetch Job reads through a git mirror (the contract only takes GitHub URLs, and the
//! machine may have no internet).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Error, Result};

/// A guest from `examples/` as users would publish it: its own repository, its own crate.
#[derive(Debug, Clone)]
pub struct Example {
    /// The folder under `examples/`.
    pub dir: &'static str,
    /// The package (and binary) name in the published repository.
    pub package: &'static str,
    /// The GitHub URL the user names; the operator fetches it from the mirror.
    pub repo: &'static str,
    /// `Json`: the guest prints one JSON document, which the user's transaction returns as a value.
    pub response_format: &'static str,
    pub default_input: &'static str,
    pub what_it_does: &'static str,
}

impl Example {
    /// `examples/json-transform`: a JSON document in, a JSON summary of it out — the user gets back a
    /// value computed off chain that a contract could not cheaply compute itself.
    pub fn json_transform() -> Self {
        Self {
            dir: "json-transform",
            package: "json-transform",
            repo: "https://github.com/outlayer/json-transform",
            response_format: "Json",
            default_input: r#"{"order":"A-1001","customer":"alice.localnet","paid":true,"items":[{"sku":"apple","qty":3,"price":0.5},{"sku":"pear","qty":2,"price":0.75},{"sku":"fig","qty":12,"price":0.2}]}"#,
            what_it_does: "summarises a JSON document: its type, top-level keys, how many numbers and their sum, strings, depth",
        }
    }

    /// Commits the example as a standalone crate on branch `main` of a new repository at
    /// `<mirror_root>/<owner>/<name>` (the path the mirror rewrite of [`Example::repo`] points at)
    /// and returns the commit's full hash.
    pub fn publish(&self, mirror_root: &Path) -> Result<String> {
        let owner_and_name = self
            .repo
            .strip_prefix("https://github.com/")
            .ok_or_else(|| {
                Error::Unexpected(format!("{} is not a GitHub repository URL", self.repo))
            })?;
        let repo = mirror_root.join(owner_and_name);
        let source = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples")
            .join(self.dir)
            .join("src");
        let source = std::fs::canonicalize(&source).map_err(Error::io(format!(
            "find the example at {}",
            source.display()
        )))?;
        copy_dir(&source, &repo.join("src"))?;
        // The workspace's manifest inherits from the workspace; the published crate stands alone.
        let manifest = format!(
            "[package]\nname = \"{}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[dependencies]\n",
            self.package
        );
        write(&repo.join("Cargo.toml"), &manifest)?;
        git(&repo, &["init", "-q", "-b", "main"])?;
        git(&repo, &["add", "."])?;
        git(
            &repo,
            &["commit", "-q", "-m", &format!("{} example", self.package)],
        )?;
        git(&repo, &["rev-parse", "HEAD"])
    }
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(Error::io(format!("write {}", path.display())))
}

fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(Error::io(format!("create {}", to.display())))?;
    let entries = std::fs::read_dir(from).map_err(Error::io(format!("read {}", from.display())))?;
    for entry in entries {
        let entry = entry.map_err(Error::io(format!("read {}", from.display())))?;
        let path: PathBuf = entry.path();
        let target = to.join(entry.file_name());
        if path.is_dir() {
            copy_dir(&path, &target)?;
        } else {
            std::fs::copy(&path, &target).map_err(Error::io(format!(
                "copy {} to {}",
                path.display(),
                target.display()
            )))?;
        }
    }
    Ok(())
}

/// Runs git in `dir` with a fixed identity (the machine may have none configured); its trimmed stdout.
fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let output = Command::new("git")
        .args([
            "-c",
            "user.name=OutLayer Demo",
            "-c",
            "user.email=demo@outlayer.dev",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(Error::io(format!("run git {}", args.join(" "))))?;
    if !output.status.success() {
        return Err(Error::Git {
            args: args.join(" "),
            dir: dir.display().to_string(),
            message: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}
