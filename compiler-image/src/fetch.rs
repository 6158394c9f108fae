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
    /// The branch or tag (full ref) that holds the commit; `None`: none does (see [`Reach`]).
    pub reachable_from: Option<String>,
}

/// Where a commit is reachable from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// A branch or tag (full ref, `refs/heads/…` or `refs/tags/…`) holds it.
    From(String),
    /// No branch or tag holds it: it is only under another ref (`refs/pull/…`) or unadvertised.
    Nowhere,
}

impl Reach {
    fn into_ref(self) -> Option<String> {
        match self {
            Self::From(full) => Some(full),
            Self::Nowhere => None,
        }
    }
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
            report.reachable = Some(fetched.reachable_from.is_some());
            report.reachable_from = fetched.reachable_from;
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
        report.reachable = None;
        report.reachable_from = None;
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

    let (commit, reach) = match &wanted {
        GitRef::Commit(sha) => git.fetch_commit(sha)?,
        GitRef::Full(_) | GitRef::Name(_) => {
            let (full, _) = git.find_named(&config.reference, &candidates(&wanted))?;
            let commit = git.fetch_named(&full)?;
            (commit, Reach::From(full))
        }
    };
    log.step(&format!(
        "resolved {} to {commit}{}",
        config.reference,
        match &reach {
            Reach::From(full) => format!(" (on {full})"),
            Reach::Nowhere => " (on no branch or tag of the repository)".to_string(),
        }
    ));
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
        reachable_from: reach.into_ref(),
    })
}

/// The full refs a name may be: itself when it is one, else the branch and the tag of that name.
fn candidates(wanted: &GitRef) -> Vec<String> {
    match wanted {
        GitRef::Full(full) => vec![full.clone()],
        GitRef::Name(name) => vec![format!("refs/heads/{name}"), format!("refs/tags/{name}")],
        GitRef::Commit(sha) => vec![sha.clone()],
    }
}

/// The resolve Job: where a branch or tag name points now (`git ls-remote`), nothing fetched or
/// checked out. A full SHA resolves to itself. The workspace holds only git's HOME and TMPDIR.
pub fn resolve(config: &FetchConfig, log: &Arc<Log>) -> Result<Fetched> {
    validate_repo(&config.repo, &config.allow)?;
    let source = config.mirrors.rewrite(&config.repo);
    let wanted = parse_ref(&config.reference)?;
    let workspace = Workspace::new(&config.workspace)?;
    workspace.ensure_scratch_dirs()?;
    std::fs::create_dir_all(workspace.src())
        .map_err(|e| Error::io("creating the scratch directory", workspace.src(), e))?;
    let limits = Limits::new(config.timeout, None);
    let git = Git {
        tools: &config.tools,
        workspace: &workspace,
        log,
        limits: &limits,
        repo: &source,
        public_repo: &config.repo,
    };
    let (commit, reach) = match &wanted {
        GitRef::Commit(sha) => (sha.clone(), None),
        GitRef::Full(_) | GitRef::Name(_) => {
            let (full, commit) = git.find_named(&config.reference, &candidates(&wanted))?;
            (commit, Some(full))
        }
    };
    log.step(&format!("{} points at {commit}", config.reference));
    Ok(Fetched {
        resolved_commit: commit,
        lockfile_generated: false,
        vendored_crates: 0,
        reachable_from: reach,
    })
}

/// Runs [`resolve`] and returns its report (a fetch report without the checkout's fields).
pub fn run_resolve(config: &FetchConfig, log: &Arc<Log>) -> (FetchReport, String) {
    let started = Instant::now();
    let outcome = resolve(config, log);
    let mut report = FetchReport {
        v: REPORT_VERSION,
        time_ms: millis(started.elapsed()),
        ..Default::default()
    };
    match outcome {
        Ok(resolved) => {
            report.ok = true;
            report.resolved_commit = Some(resolved.resolved_commit);
            report.reachable = resolved.reachable_from.as_ref().map(|_| true);
            report.reachable_from = resolved.reachable_from;
        }
        Err(error) => {
            tracing::warn!(error = %error, kind = error.kind(), "resolve failed");
            log.step(&format!("resolve failed: {error}"));
            report.failure = Failure::new(&error, log.tail());
        }
    }
    let json = encode(&mut report);
    (report, json)
}

/// `git ls-remote` output: (object, ref) pairs; a tag's `^{}` line is its peeled commit.
pub fn parse_ls_remote(listing: &str) -> Vec<(String, String)> {
    listing
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .map(|(sha, name)| (sha.trim().to_ascii_lowercase(), name.trim().to_string()))
        .collect()
}

/// The commit `full` points at in a listing: a tag's peeled line wins over the tag object.
pub fn commit_of(listing: &[(String, String)], full: &str) -> Option<String> {
    let peeled = format!("{full}^{{}}");
    listing
        .iter()
        .find(|(_, name)| *name == peeled)
        .or_else(|| listing.iter().find(|(_, name)| name == full))
        .map(|(sha, _)| sha.clone())
}

/// A branch or tag whose tip is `sha` (branches first), from a listing of heads and tags.
pub fn tip_ref(listing: &[(String, String)], sha: &str) -> Option<String> {
    let mut tips: Vec<String> = listing
        .iter()
        .filter(|(object, _)| object == sha)
        .map(|(_, name)| name.trim_end_matches("^{}").to_string())
        .filter(|name| name.starts_with("refs/heads/") || name.starts_with("refs/tags/"))
        .collect();
    // "refs/heads/" sorts before "refs/tags/".
    tips.sort();
    tips.into_iter().next()
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

    /// A commit by SHA, and whether a branch or tag holds it: the tip of one (a shallow fetch of
    /// just that commit), else inside the history of one (every branch and tag fetched, then
    /// `for-each-ref --contains`), else on no branch or tag at all (fetched by SHA, which servers
    /// like GitHub allow for any commit they hold, `refs/pull/*` included).
    fn fetch_commit(&self, sha: &str) -> Result<(String, Reach)> {
        let listing = parse_ls_remote(&self.capture(
            "git ls-remote",
            &["ls-remote", "--heads", "--tags", "--", self.repo],
        )?);
        if let Some(tip) = tip_ref(&listing, sha) {
            self.log.step(&format!("{sha} is the tip of {tip}"));
            self.fetch_by_sha(sha)
                .or_else(|_| self.fetch_all_branches_and_tags())?;
            let commit = self.resolve_sha(sha)?;
            return Ok((commit, Reach::From(tip)));
        }
        self.fetch_all_branches_and_tags()?;
        if let Ok(commit) = self.resolve(&format!("{sha}^{{commit}}")) {
            let containing = self.capture(
                "git for-each-ref --contains",
                &[
                    "for-each-ref",
                    "--format=%(refname)",
                    "--contains",
                    &commit,
                    "refs/outlayer/heads/",
                    "refs/outlayer/tags/",
                ],
            )?;
            let reach = containing
                .lines()
                .filter_map(|full| full.strip_prefix("refs/outlayer/"))
                .map(|rest| format!("refs/{rest}"))
                .next()
                .map_or(Reach::Nowhere, Reach::From);
            return Ok((commit, reach));
        }
        self.log
            .step(&format!("{sha} is on no branch or tag; fetching it by SHA"));
        self.fetch_by_sha(sha).map_err(|error| match error {
            Error::Timeout { .. } | Error::WorkspaceTooLarge { .. } => error,
            _ => Error::RefNotFound {
                repo: self.public_repo.to_string(),
                reference: sha.to_string(),
            },
        })?;
        Ok((self.resolve_sha(sha)?, Reach::Nowhere))
    }

    fn fetch_by_sha(&self, sha: &str) -> Result<()> {
        self.run(
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
        )
    }

    fn fetch_all_branches_and_tags(&self) -> Result<()> {
        self.run(
            "git fetch (all branches and tags)",
            &[
                "fetch",
                "--quiet",
                "--no-tags",
                "--",
                self.repo,
                "+refs/heads/*:refs/outlayer/heads/*",
                "+refs/tags/*:refs/outlayer/tags/*",
            ],
        )
    }

    fn resolve_sha(&self, sha: &str) -> Result<String> {
        self.resolve(&format!("{sha}^{{commit}}"))
            .map_err(|_| Error::RefNotFound {
                repo: self.public_repo.to_string(),
                reference: sha.to_string(),
            })
    }

    /// Which of `candidates` exists (`git ls-remote`): its full name and the commit it points at.
    fn find_named(&self, reference: &str, candidates: &[String]) -> Result<(String, String)> {
        // `<ref>*` so an annotated tag's peeled line (`<ref>^{}`) is listed too; only exact names
        // are kept below.
        let patterns: Vec<String> = candidates.iter().map(|c| format!("{c}*")).collect();
        let mut args = vec!["ls-remote", "--", self.repo];
        args.extend(patterns.iter().map(String::as_str));
        let listing = parse_ls_remote(&self.capture("git ls-remote", &args)?);
        // ls-remote matches patterns by suffix; keep exact names only.
        let found: Vec<(&String, String)> = candidates
            .iter()
            .filter_map(|candidate| commit_of(&listing, candidate).map(|sha| (candidate, sha)))
            .collect();
        match found.as_slice() {
            [] => Err(Error::RefNotFound {
                repo: self.public_repo.to_string(),
                reference: reference.to_string(),
            }),
            [(full, sha)] if is_full_sha(sha) => Ok(((*full).clone(), sha.clone())),
            [(full, sha)] => Err(Error::Git {
                step: "git ls-remote",
                detail: format!("{full} was listed with {sha:?}, not a commit SHA"),
            }),
            _ => Err(Error::AmbiguousRef {
                repo: self.public_repo.to_string(),
                reference: reference.to_string(),
            }),
        }
    }

    /// Fetches the branch or tag `full` shallowly into [`TARGET_REF`] and peels it to its commit (an
    /// annotated tag points at a tag object).
    fn fetch_named(&self, full: &str) -> Result<String> {
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

    #[test]
    fn listings_name_tips_and_peel_tags() {
        let a = "a".repeat(40);
        let b = "b".repeat(40);
        let t = "c".repeat(40);
        let listing = parse_ls_remote(&format!(
            "{b}\trefs/heads/main\n{a}\trefs/heads/old\n{t}\trefs/tags/v1\n{a}\trefs/tags/v1^{{}}\n{a}\trefs/pull/1/head\n"
        ));
        assert_eq!(commit_of(&listing, "refs/tags/v1"), Some(a.clone()));
        assert_eq!(commit_of(&listing, "refs/heads/main"), Some(b.clone()));
        assert_eq!(commit_of(&listing, "refs/heads/nope"), None);
        // Branches first; a pull ref never counts.
        assert_eq!(tip_ref(&listing, &a), Some("refs/heads/old".to_string()));
        let pull_only = parse_ls_remote(&format!("{a}\trefs/pull/1/head\n"));
        assert_eq!(tip_ref(&pull_only, &a), None);
        let tag_only = parse_ls_remote(&format!("{t}\trefs/tags/v1\n{a}\trefs/tags/v1^{{}}\n"));
        assert_eq!(tip_ref(&tag_only, &a), Some("refs/tags/v1".to_string()));
    }
}
