//! The fetch Job: one commit of one repository into the workspace, dependencies vendored.
//!
//! Git never sees a user string in option position: the URL and refs come after `--` or inside
//! refspecs we build (`+refs/heads/<name>:refs/outlayer/target`), and both were validated by
//! [`crate::repo`] before git runs. `cargo vendor` runs with the workspace root as its working
//! directory, so the repository's own `.cargo/config.toml` and `rust-toolchain.toml` (which could
//! name a `rustc` wrapper or a toolchain to download) are not read while the network is open.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::log::Log;
use crate::repo::{AllowList, GitRef, is_full_sha, parse_ref, validate_repo};
use crate::report::{Failure, FetchReport, REPORT_VERSION, encode};
use crate::runner::{self, Limits, describe_status};
use crate::toolenv::Tools;
use crate::workspace::Workspace;

/// Where a named ref is fetched to inside the checkout.
const TARGET_REF: &str = "refs/outlayer/target";

#[derive(Debug, Clone)]
pub struct FetchConfig {
    pub repo: String,
    pub reference: String,
    pub workspace: PathBuf,
    pub allow: AllowList,
    pub timeout: Duration,
    pub max_workspace_bytes: u64,
    pub tools: Tools,
    /// Where repositories are really fetched from (an internal git mirror); see [`Mirrors`].
    pub mirrors: Mirrors,
}

/// URL prefix rewrites applied after the allow-list check: the repository's identity (what the
/// CompileJob and the cache are keyed by) stays the public URL, the bytes come from the mirror.
/// Clusters without egress to GitHub, and the tests (no internet), fetch this way.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mirrors(Vec<(String, String)>);

impl Mirrors {
    /// Parses `PREFIX=REPLACEMENT` pairs; both sides must end in '/' so a rewrite never joins a
    /// prefix with part of a name (`https://github.com/al` must not turn `alice` into another path).
    pub fn parse(pairs: &[String]) -> Result<Self> {
        let mut mirrors = Vec::new();
        for pair in pairs {
            // The pair may carry a token in its URL: name the prefix only.
            let invalid = |reason: &str| {
                let prefix = pair.split_once('=').map_or("", |(prefix, _)| prefix);
                Error::InvalidConfig(format!("--git-mirror for {prefix:?}: {reason}"))
            };
            let (prefix, replacement) = pair
                .split_once('=')
                .ok_or_else(|| invalid("expected PREFIX=REPLACEMENT"))?;
            if !prefix.ends_with('/') || !replacement.ends_with('/') {
                return Err(invalid("both sides must end with '/'"));
            }
            // git:// is for a mirror inside the cluster network (the tests' real node serves one with
            // `git daemon`): unencrypted, so a commit named by its SHA is still verified by git, but a
            // branch or tag name is only as trustworthy as the network path to the mirror.
            if !(replacement.starts_with("https://")
                || replacement.starts_with("file:///")
                || replacement.starts_with("git://"))
            {
                return Err(invalid(
                    "the replacement must be an https://, git:// or file:/// URL",
                ));
            }
            if replacement.contains("..") {
                return Err(invalid("the replacement must not contain '..'"));
            }
            mirrors.push((prefix.to_string(), replacement.to_string()));
        }
        Ok(Self(mirrors))
    }

    /// The URL to fetch `repo` from: the first matching prefix rewritten, else `repo` itself.
    pub fn rewrite(&self, repo: &str) -> String {
        self.0
            .iter()
            .find_map(|(prefix, replacement)| {
                repo.strip_prefix(prefix.as_str())
                    .map(|rest| format!("{replacement}{rest}"))
            })
            .unwrap_or_else(|| repo.to_string())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    pub resolved_commit: String,
    pub lockfile_generated: bool,
    pub vendored_crates: u64,
}

/// Runs the fetch and returns its report (already trimmed to fit), also saved as
/// `<workspace>/fetch.json` — the build's proof that the fetch completed.
pub fn run_fetch(config: &FetchConfig, log: &Arc<Log>) -> (FetchReport, String) {
    let started = Instant::now();
    if let Ok(workspace) = Workspace::new(&config.workspace) {
        // A record left by an earlier run must not vouch for this one.
        let _ = std::fs::remove_file(workspace.fetch_record());
    }
    let outcome = fetch(config, log);
    let mut report = FetchReport {
        v: REPORT_VERSION,
        time_ms: millis(started.elapsed()),
        ..Default::default()
    };
    match outcome {
        Ok(fetched) => {
            report.ok = true;
            report.resolved_commit = Some(fetched.resolved_commit);
            report.lockfile_generated = Some(fetched.lockfile_generated);
            report.vendored_crates = Some(fetched.vendored_crates);
        }
        Err(error) => {
            tracing::warn!(error = %error, kind = error.kind(), "fetch failed");
            log.step(&format!("fetch failed: {error}"));
            report.failure = Failure::new(&error, log.tail());
        }
    }
    let mut json = encode(&mut report);
    // Only a completed fetch leaves a record; a failed one leaves none for the build to trust.
    if report.ok
        && let Err(error) = Workspace::new(&config.workspace).and_then(|workspace| {
            let path = workspace.fetch_record();
            std::fs::write(&path, &json).map_err(|e| Error::io("writing the fetch record", path, e))
        })
    {
        report.ok = false;
        report.resolved_commit = None;
        report.lockfile_generated = None;
        report.vendored_crates = None;
        report.failure = Failure::new(&error, log.tail());
        json = encode(&mut report);
    }
    (report, json)
}

pub fn fetch(config: &FetchConfig, log: &Arc<Log>) -> Result<Fetched> {
    // Everything the user controls is checked before the first process starts.
    validate_repo(&config.repo, &config.allow)?;
    let source = config.mirrors.rewrite(&config.repo);
    let wanted = parse_ref(&config.reference)?;
    let workspace = Workspace::new(&config.workspace)?;
    workspace.reset_for_fetch()?;
    let limits = Limits::new(
        config.timeout,
        Some((workspace.root().to_path_buf(), config.max_workspace_bytes)),
    );
    let git = Git {
        tools: &config.tools,
        workspace: &workspace,
        log,
        limits: &limits,
        repo: &source,
        public_repo: &config.repo,
    };

    let via = if source == config.repo {
        ""
    } else {
        " (from the configured mirror)"
    };
    log.step(&format!(
        "fetching {} at {}{via}",
        config.repo, config.reference
    ));
    std::fs::create_dir_all(workspace.src())
        .map_err(|e| Error::io("creating the checkout directory", workspace.src(), e))?;
    git.run("git init", &["init", "--quiet"])?;

    let commit = match &wanted {
        GitRef::Commit(sha) => git.fetch_commit(sha)?,
        GitRef::Full(full) => git.fetch_named(&config.reference, std::slice::from_ref(full))?,
        GitRef::Name(name) => git.fetch_named(
            &config.reference,
            &[format!("refs/heads/{name}"), format!("refs/tags/{name}")],
        )?,
    };
    log.step(&format!("resolved {} to {commit}", config.reference));
    git.run(
        "git checkout",
        &["checkout", "--quiet", "--force", "--detach", &commit],
    )?;
    limits.check_size("git checkout")?;

    if !workspace.manifest().is_file() {
        return Err(Error::NoManifest {
            repo: config.repo.clone(),
            commit,
        });
    }
    let lockfile_generated = !workspace.src().join("Cargo.lock").is_file();
    let vendored_crates = vendor(&config.tools, &workspace, log, &limits)?;
    limits.check_size("cargo vendor")?;
    Ok(Fetched {
        resolved_commit: commit,
        lockfile_generated,
        vendored_crates,
    })
}

struct Git<'a> {
    tools: &'a Tools,
    workspace: &'a Workspace,
    log: &'a Arc<Log>,
    limits: &'a Limits,
    /// Where git fetches from: the request's repository, or the mirror it was rewritten to.
    repo: &'a str,
    /// The repository as the request named it: the only name errors may carry (they reach the chain).
    public_repo: &'a str,
}

impl Git<'_> {
    fn command(&self, args: &[&str]) -> Command {
        let mut command = self.tools.git(self.workspace, self.repo);
        command.args(args);
        command
    }

    fn run(&self, step: &'static str, args: &[&str]) -> Result<()> {
        let outcome = runner::run(step, self.command(args), self.log, self.limits, false)?;
        if outcome.status.success() {
            Ok(())
        } else {
            Err(Error::Git {
                step,
                detail: format!("{} (see the log)", describe_status(&outcome.status)),
            })
        }
    }

    fn capture(&self, step: &'static str, args: &[&str]) -> Result<String> {
        let outcome = runner::run(step, self.command(args), self.log, self.limits, true)?;
        if !outcome.status.success() {
            return Err(Error::Git {
                step,
                detail: format!("{} (see the log)", describe_status(&outcome.status)),
            });
        }
        Ok(String::from_utf8_lossy(&outcome.stdout).into_owned())
    }

    /// A commit by SHA: a shallow fetch of just that commit when the server allows fetching by SHA
    /// (GitHub, git's protocol v2), else every branch and tag, in which the commit must be found.
    fn fetch_commit(&self, sha: &str) -> Result<String> {
        let shallow = self.run(
            "git fetch (by commit)",
            &[
                "fetch",
                "--quiet",
                "--depth=1",
                "--no-tags",
                "--",
                self.repo,
                sha,
            ],
        );
        if let Err(error) = shallow {
            if matches!(
                error,
                Error::Timeout { .. } | Error::WorkspaceTooLarge { .. }
            ) {
                return Err(error);
            }
            self.log
                .step("the server refused a fetch by commit; fetching all branches and tags");
            self.run(
                "git fetch (all refs)",
                &[
                    "fetch",
                    "--quiet",
                    "--no-tags",
                    "--",
                    self.repo,
                    "+refs/heads/*:refs/outlayer/heads/*",
                    "+refs/tags/*:refs/outlayer/tags/*",
                ],
            )?;
        }
        let spec = format!("{sha}^{{commit}}");
        self.resolve(&spec).map_err(|_| Error::RefNotFound {
            repo: self.public_repo.to_string(),
            reference: sha.to_string(),
        })
    }

    /// A branch or tag: find which of `candidates` exists (`git ls-remote`), fetch it shallowly
    /// into [`TARGET_REF`] and peel it to its commit (an annotated tag points at a tag object).
    fn fetch_named(&self, reference: &str, candidates: &[String]) -> Result<String> {
        let mut args = vec!["ls-remote", "--", self.repo];
        args.extend(candidates.iter().map(String::as_str));
        let listing = self.capture("git ls-remote", &args)?;
        // ls-remote matches patterns by suffix; keep exact names only.
        let found: Vec<&String> = candidates
            .iter()
            .filter(|candidate| {
                listing
                    .lines()
                    .filter_map(|line| line.split_once('\t'))
                    .any(|(_, name)| name == candidate.as_str())
            })
            .collect();
        let full = match found.as_slice() {
            [] => {
                return Err(Error::RefNotFound {
                    repo: self.public_repo.to_string(),
                    reference: reference.to_string(),
                });
            }
            [one] => one.as_str(),
            _ => {
                return Err(Error::AmbiguousRef {
                    repo: self.public_repo.to_string(),
                    reference: reference.to_string(),
                });
            }
        };
        let refspec = format!("+{full}:{TARGET_REF}");
        self.run(
            "git fetch (by ref)",
            &[
                "fetch",
                "--quiet",
                "--depth=1",
                "--no-tags",
                "--",
                self.repo,
                &refspec,
            ],
        )?;
        self.resolve(&format!("{TARGET_REF}^{{commit}}"))
    }

    fn resolve(&self, spec: &str) -> Result<String> {
        let out = self.capture(
            "git rev-parse",
            &["rev-parse", "--verify", "--quiet", "--end-of-options", spec],
        )?;
        let sha = out.trim();
        if is_full_sha(sha) {
            Ok(sha.to_string())
        } else {
            Err(Error::Git {
                step: "git rev-parse",
                detail: format!("{spec} did not resolve to a commit SHA (got {sha:?})"),
            })
        }
    }
}

/// `cargo vendor` into `<workspace>/vendor` and the source replacement into
/// `<workspace>/.cargo/config.toml`. Returns how many crates were vendored.
fn vendor(tools: &Tools, workspace: &Workspace, log: &Arc<Log>, limits: &Limits) -> Result<u64> {
    log.step("vendoring dependencies (cargo vendor)");
    let mut command = tools.cargo(workspace, false);
    // Relative paths: cargo prints `directory = "vendor"`, which a config file in
    // <workspace>/.cargo/ resolves against <workspace>, wherever the build pod mounts it.
    command
        .current_dir(workspace.root())
        .arg("vendor")
        .arg("--manifest-path")
        .arg(Path::new("src").join("Cargo.toml"))
        .arg("vendor");
    let outcome = runner::run("cargo vendor", command, log, limits, true)?;
    if !outcome.status.success() {
        return Err(Error::Vendor(format!(
            "{}; the end of its output is in the log",
            describe_status(&outcome.status)
        )));
    }
    let replacement = String::from_utf8_lossy(&outcome.stdout);
    let config = workspace.cargo_config();
    let contents = if replacement.trim().is_empty() {
        "# cargo vendor found no dependencies to vendor.\n".to_string()
    } else {
        format!("# Written by outlayer-compiler fetch from `cargo vendor`.\n{replacement}")
    };
    log.append(contents.as_bytes());
    if let Some(dir) = config.parent() {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
    }
    std::fs::write(&config, contents)
        .map_err(|e| Error::io("writing the source replacement", &config, e))?;
    let crates = match std::fs::read_dir(workspace.vendor()) {
        Ok(entries) => entries.flatten().filter(|e| e.path().is_dir()).count() as u64,
        Err(_) => 0,
    };
    log.step(&format!("vendored {crates} crates"));
    Ok(crates)
}

pub(crate) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_rewrite_whole_path_segments_only() {
        let mirrors =
            Mirrors::parse(&["https://github.com/=file:///srv/mirror/".to_string()]).unwrap();
        assert_eq!(
            mirrors.rewrite("https://github.com/alice/app"),
            "file:///srv/mirror/alice/app"
        );
        assert_eq!(
            mirrors.rewrite("https://gitlab.com/alice/app"),
            "https://gitlab.com/alice/app"
        );
        assert_eq!(
            Mirrors::default().rewrite("https://github.com/a/b"),
            "https://github.com/a/b"
        );
        // A mirror inside the cluster network, served by `git daemon`.
        let mirrors =
            Mirrors::parse(&["https://github.com/=git://10.0.0.5:9418/".to_string()]).unwrap();
        assert_eq!(
            mirrors.rewrite("https://github.com/alice/app"),
            "git://10.0.0.5:9418/alice/app"
        );
    }

    #[test]
    fn bad_mirrors_are_refused_without_echoing_the_replacement() {
        for bad in [
            "https://github.com/",
            "https://github.com=file:///srv/",
            "https://github.com/=file:///srv",
            "https://github.com/=ssh://git@host/",
            "https://github.com/=http://mirror/",
            "https://github.com/=file:///srv/../etc/",
        ] {
            let error = Mirrors::parse(&[bad.to_string()]).unwrap_err().to_string();
            assert!(error.contains("--git-mirror"), "{bad}: {error}");
            if let Some((_, replacement)) = bad.split_once('=') {
                assert!(!error.contains(replacement), "{error}");
            }
        }
    }
}
