//! What may be fetched. Mirrors the contract's checks (contract/src/validation.rs) and the CRD's
//! schema, and runs before any process starts: a repository URL and a ref that pass here cannot be
//! read by git as an option, cannot name another transport (`ext::`, ssh) and carry no
//! credentials, query or `..`.

use crate::error::{Error, Result};

pub const MAX_REPO_LEN: usize = 512;
pub const MAX_REF_LEN: usize = 256;
pub const DEFAULT_ALLOWED_PREFIX: &str = "https://github.com/";
const GITHUB_PREFIX: &str = "https://github.com/";

/// URL prefixes a repository must start with: `https://<host>[:port]/[path/]` or `file:///<path>/`,
/// always ending in `/` so `https://github.com/` never admits `https://github.com.evil.org/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowList(Vec<String>);

impl Default for AllowList {
    fn default() -> Self {
        Self(vec![DEFAULT_ALLOWED_PREFIX.to_string()])
    }
}

impl AllowList {
    pub fn new(prefixes: &[String]) -> Result<Self> {
        if prefixes.is_empty() {
            return Err(Error::InvalidConfig(
                "the repo allow-list is empty: nothing could be fetched".to_string(),
            ));
        }
        for prefix in prefixes {
            let shape_ok = prefix.ends_with('/')
                && (prefix
                    .strip_prefix("https://")
                    .is_some_and(|rest| rest.len() > 1 && !rest.starts_with('/'))
                    || prefix.starts_with("file:///"))
                && !prefix.contains("..")
                && prefix
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._/-:".contains(&b));
            if !shape_ok {
                return Err(Error::InvalidConfig(format!(
                    "allow-list entry {prefix:?} must be https://<host>[:port]/[path/] or \
                     file:///<path>/, ending in '/', of [A-Za-z0-9._/:-] without '..'"
                )));
            }
        }
        Ok(Self(prefixes.to_vec()))
    }

    pub fn permits(&self, repo: &str) -> bool {
        self.0
            .iter()
            .any(|prefix| repo.starts_with(prefix.as_str()))
    }

    fn describe(&self) -> String {
        self.0.join(", ")
    }
}

/// Checks the form of `repo`, then that the allow-list admits it. Returns whether it is a local
/// (`file://`) repository, for which git's file protocol must be enabled.
pub fn validate_repo(repo: &str, allow: &AllowList) -> Result<bool> {
    let invalid = |reason: String| Error::InvalidRepo {
        repo: repo.to_string(),
        reason,
    };
    if repo.len() > MAX_REPO_LEN {
        return Err(invalid(format!(
            "must be at most {MAX_REPO_LEN} characters, got {}",
            repo.len()
        )));
    }
    if repo.contains("..") {
        return Err(invalid("must not contain '..'".to_string()));
    }
    let (is_file, path) = if let Some(rest) = repo.strip_prefix("https://") {
        let Some((authority, path)) = rest.split_once('/') else {
            return Err(invalid("must be https://<host>/<path>".to_string()));
        };
        // '@' (credentials) cannot pass this: a host is letters, digits, '.', '-' and a port.
        let (host, port) = match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        let host_ok = !host.is_empty()
            && !host.starts_with(['.', '-'])
            && host
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
        let port_ok = port
            .is_none_or(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()));
        if !host_ok || !port_ok {
            return Err(invalid(format!(
                "the host {authority:?} must be [A-Za-z0-9.-] with an optional numeric port \
                 (no credentials)"
            )));
        }
        (false, path)
    } else if let Some(path) = repo.strip_prefix("file:///") {
        (true, path)
    } else {
        return Err(invalid(
            "must start with https:// (or file:/// where allowed); no other transport".to_string(),
        ));
    };
    if let Some(bad) = path
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '-')))
    {
        return Err(invalid(format!(
            "the path may only contain [A-Za-z0-9._/-], found {bad:?} (no query, fragment or \
             credentials)"
        )));
    }
    if path
        .split('/')
        .any(|segment| segment.is_empty() || segment == "." || segment.starts_with('-'))
    {
        return Err(invalid(
            "the path must be non-empty segments, none '.' or starting with '-'".to_string(),
        ));
    }
    if !allow.permits(repo) {
        return Err(Error::RepoNotAllowed {
            repo: repo.to_string(),
            allowed: allow.describe(),
        });
    }
    if let Some(github_path) = repo.strip_prefix(GITHUB_PREFIX) {
        validate_github_path(github_path).map_err(invalid)?;
    }
    Ok(is_file)
}

/// The contract's rule for GitHub: exactly `<owner>/<name>`.
fn validate_github_path(path: &str) -> std::result::Result<(), String> {
    let mut segments = path.split('/');
    let (Some(owner), Some(name), None) = (segments.next(), segments.next(), segments.next())
    else {
        return Err("must be exactly https://github.com/<owner>/<name>".to_string());
    };
    let owner_ok = owner.len() <= 39
        && owner
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !owner_ok {
        return Err(format!(
            "the owner must be 1-39 characters of [A-Za-z0-9-], got {owner:?}"
        ));
    }
    if name.len() > 100 {
        return Err(format!(
            "the name must be at most 100 characters, got {name:?}"
        ));
    }
    Ok(())
}

/// What the user asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GitRef {
    /// A full commit SHA (lower case).
    Commit(String),
    /// A full ref name such as `refs/tags/v1`.
    Full(String),
    /// A branch or tag name, resolved against `refs/heads/` and `refs/tags/`.
    Name(String),
}

/// The contract's ref rules (1-256 of `[A-Za-z0-9._/+-]`, no leading '-', no `..`) plus git's own
/// ref-name rules that apply to that charset, and no leading '+' (a refspec's force marker).
pub fn parse_ref(reference: &str) -> Result<GitRef> {
    let invalid = |reason: &str| Error::InvalidRef {
        reference: reference.to_string(),
        reason: reason.to_string(),
    };
    if reference.is_empty() || reference.len() > MAX_REF_LEN {
        return Err(invalid("must be 1-256 characters"));
    }
    if reference.starts_with('-') || reference.starts_with('+') {
        return Err(invalid("must not start with '-' or '+'"));
    }
    if reference.contains("..") {
        return Err(invalid("must not contain '..'"));
    }
    if !reference
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._/+-".contains(&b))
    {
        return Err(invalid("may only contain [A-Za-z0-9._/+-]"));
    }
    if reference.len() == 40 && reference.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(GitRef::Commit(reference.to_ascii_lowercase()));
    }
    let bad_segment = reference
        .split('/')
        .any(|s| s.is_empty() || s.starts_with('.') || s.ends_with(".lock"));
    if bad_segment || reference.ends_with('.') {
        return Err(invalid(
            "is not a valid git ref name (empty segment, segment starting with '.', or ending \
             in '.lock' or '.')",
        ));
    }
    if reference.starts_with("refs/") {
        Ok(GitRef::Full(reference.to_string()))
    } else {
        Ok(GitRef::Name(reference.to_string()))
    }
}

pub fn is_full_sha(value: &str) -> bool {
    value.len() == 40
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(prefix: &str) -> AllowList {
        AllowList::new(&[DEFAULT_ALLOWED_PREFIX.to_string(), prefix.to_string()]).unwrap()
    }

    #[test]
    fn github_repositories_pass_by_default() {
        let allow = AllowList::default();
        assert!(!validate_repo("https://github.com/near/echo", &allow).unwrap());
        assert!(validate_repo("https://github.com/near/echo.git", &allow).is_ok());
    }

    #[test]
    fn malformed_repositories_are_rejected_with_the_reason() {
        let allow = AllowList::default();
        for (repo, kind) in [
            ("https://github.com/a/../b", "invalidRepo"),
            ("https://user:pw@github.com/a/b", "invalidRepo"),
            ("https://token@github.com/a/b", "invalidRepo"),
            ("https://github.com/a/b?x=1", "invalidRepo"),
            ("https://github.com/a/b#frag", "invalidRepo"),
            ("https://github.com/a/b/c", "invalidRepo"),
            ("https://github.com//b", "invalidRepo"),
            ("https://github.com/a/-b", "invalidRepo"),
            ("http://github.com/a/b", "invalidRepo"),
            ("ext::sh -c touch% /tmp/x", "invalidRepo"),
            ("git@github.com:a/b.git", "invalidRepo"),
            ("--upload-pack=touch /tmp/x", "invalidRepo"),
            ("https://github.com.evil.org/a/b", "repoNotAllowed"),
            ("https://gitlab.com/a/b", "repoNotAllowed"),
            ("file:///tmp/repo", "repoNotAllowed"),
        ] {
            let err = validate_repo(repo, &allow).unwrap_err();
            assert_eq!(err.kind(), kind, "{repo}: {err}");
            assert!(err.to_string().contains(repo), "{err}");
        }
    }

    #[test]
    fn the_allow_list_admits_local_repositories_under_its_prefixes_only() {
        let allow = local("file:///srv/git/");
        assert!(validate_repo("file:///srv/git/echo", &allow).unwrap());
        assert_eq!(
            validate_repo("file:///srv/gitx/echo", &allow)
                .unwrap_err()
                .kind(),
            "repoNotAllowed"
        );
        assert_eq!(
            validate_repo("file:///srv/git/../etc", &allow)
                .unwrap_err()
                .kind(),
            "invalidRepo"
        );
    }

    #[test]
    fn allow_list_entries_must_be_prefixes_ending_in_a_slash() {
        for bad in [
            "https://github.com",
            "ssh://x/",
            "file://tmp/",
            "https:///",
            "https://a/../",
        ] {
            assert!(AllowList::new(&[bad.to_string()]).is_err(), "{bad}");
        }
        assert!(AllowList::new(&[]).is_err());
        assert!(AllowList::new(&["https://git.example.com:8443/team/".to_string()]).is_ok());
    }

    #[test]
    fn refs_are_classified() {
        let sha = "0123456789abcdef0123456789ABCDEF01234567";
        assert_eq!(
            parse_ref(sha).unwrap(),
            GitRef::Commit(sha.to_ascii_lowercase())
        );
        assert_eq!(parse_ref("main").unwrap(), GitRef::Name("main".into()));
        assert_eq!(
            parse_ref("release/v1.2+x").unwrap(),
            GitRef::Name("release/v1.2+x".into())
        );
        assert_eq!(
            parse_ref("refs/tags/v1").unwrap(),
            GitRef::Full("refs/tags/v1".into())
        );
    }

    #[test]
    fn refs_that_git_could_read_as_options_or_paths_are_rejected() {
        for bad in [
            "--upload-pack=touch /tmp/x",
            "--upload-pack=x",
            "-c",
            "+refs/heads/x:refs/heads/y",
            "a..b",
            "a b",
            "a:b",
            "main^{}",
            "@{-1}",
            "HEAD~1",
            "",
            "/main",
            "main/",
            "a//b",
            ".hidden",
            "x.lock",
            "x.",
        ] {
            let err = parse_ref(bad).unwrap_err();
            assert_eq!(err.kind(), "invalidRef", "{bad}");
        }
        assert!(parse_ref(&"a".repeat(257)).is_err());
    }
}
