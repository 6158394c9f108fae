//! Checks on user input. Each returns a message that says what was expected and what came, so a client
//! developer can fix the call from the failed transaction alone.

use crate::types::{
    AccessCondition, BUILD_TARGET_WASIP1, CodeSource, RequestParams, ResourceLimits,
    SecretsReference,
};

pub const MAX_REPO_LEN: usize = 512;
pub const MAX_REF_LEN: usize = 256;
pub const MAX_INPUT_BYTES: usize = 256 * 1024;
pub const MAX_PROFILE_LEN: usize = 64;
pub const MAX_BRANCH_LEN: usize = 255;
/// Ciphertext of a secrets bundle: 64 KiB of plaintext, base64 and sealing overhead.
pub const MAX_ENCRYPTED_SECRETS_LEN: usize = 96 * 1024;
pub const MAX_ACCESS_CONDITION_DEPTH: usize = 8;
pub const MAX_ACCESS_CONDITION_NODES: usize = 64;
pub const MAX_WHITELIST_ACCOUNTS: usize = 256;
pub const MAX_PATTERN_LEN: usize = 256;
pub const MAX_TOKEN_ID_LEN: usize = 256;

const GITHUB_PREFIX: &str = "https://github.com/";

/// `https://github.com/<owner>/<name>` and nothing else: no credentials, query, fragment, port or extra path.
pub fn validate_repo(repo: &str) -> Result<(), String> {
    if repo.len() > MAX_REPO_LEN {
        return Err(format!(
            "repo must be at most {MAX_REPO_LEN} characters, got {}",
            repo.len()
        ));
    }
    let Some(path) = repo.strip_prefix(GITHUB_PREFIX) else {
        return Err(format!(
            "repo must look like https://github.com/<owner>/<name>, got {repo:?}"
        ));
    };
    let mut segments = path.split('/');
    let (Some(owner), Some(name), None) = (segments.next(), segments.next(), segments.next())
    else {
        return Err(format!(
            "repo must be exactly https://github.com/<owner>/<name> with no extra path, got {repo:?}"
        ));
    };
    // GitHub user and organisation names: alphanumerics and single hyphens, at most 39 characters.
    let owner_ok = !owner.is_empty()
        && owner.len() <= 39
        && !owner.starts_with('-')
        && owner
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if !owner_ok {
        return Err(format!(
            "repo owner must be 1-39 characters of [A-Za-z0-9-] not starting with '-', got {owner:?}"
        ));
    }
    let name_ok = !name.is_empty()
        && name.len() <= 100
        && name != "."
        && !name.contains("..")
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !name_ok {
        return Err(format!(
            "repo name must be 1-100 characters of [A-Za-z0-9._-] without '..', got {name:?}"
        ));
    }
    Ok(())
}

/// A git ref the operator may pass to `git`: a 40-hex SHA, a branch or tag name (the compiler resolves
/// it against `refs/heads/` and `refs/tags/` only), or a full `refs/heads/…` / `refs/tags/…` name.
/// Never something git could read as an option (`-…`, `+…`) or a path escape (`..`), never a name git
/// itself refuses (empty segment, segment starting with '.', `.lock`, trailing '.'), and never another
/// namespace under `refs/`: `refs/pull/<n>/head` is code a pull-request author chose, not the
/// repository owner, and must not run with the owner's secrets.
pub fn validate_git_ref(what: &str, value: &str, max_len: usize) -> Result<(), String> {
    if value.is_empty() || value.len() > max_len {
        return Err(format!(
            "{what} must be 1-{max_len} characters, got {} characters",
            value.len()
        ));
    }
    if value.starts_with('-') || value.starts_with('+') {
        return Err(format!(
            "{what} must not start with '-' or '+', got {value:?}"
        ));
    }
    if value.contains("..") {
        return Err(format!("{what} must not contain '..', got {value:?}"));
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '/' | '+' | '-')))
    {
        return Err(format!(
            "{what} may only contain [A-Za-z0-9._/+-], found {bad:?} in {value:?}"
        ));
    }
    let bad_segment = value
        .split('/')
        .any(|s| s.is_empty() || s.starts_with('.') || s.ends_with(".lock"));
    if bad_segment || value.ends_with('.') {
        return Err(format!(
            "{what} {value:?} is not a valid git ref name (empty segment, segment starting with \
             '.', or ending in '.lock' or '.')"
        ));
    }
    if value.starts_with("refs/")
        && !(value.starts_with("refs/heads/") || value.starts_with("refs/tags/"))
    {
        return Err(format!(
            "{what} {value:?} is refused: only a 40-hex commit SHA, a branch or tag name, or \
             refs/heads/<branch> or refs/tags/<tag> may be run (other refs such as refs/pull/* hold \
             code the repository owner did not choose)"
        ));
    }
    Ok(())
}

pub fn validate_code_source(code: &CodeSource) -> Result<(), String> {
    validate_repo(&code.repo)?;
    validate_git_ref("commit", &code.commit, MAX_REF_LEN)?;
    let target = code.build_target_or_default();
    if target != BUILD_TARGET_WASIP1 {
        return Err(format!(
            "build_target {target:?} is not supported; the only supported target is {BUILD_TARGET_WASIP1:?}"
        ));
    }
    Ok(())
}

/// OutLayer's `params`: the options this deployment cannot honour yet are refused when switched on,
/// so a client never gets an execution it did not ask for.
pub fn validate_request_params(params: &RequestParams) -> Result<(), String> {
    for (name, on) in [
        ("force_rebuild", params.force_rebuild),
        ("store_on_fastfs", params.store_on_fastfs),
    ] {
        if on {
            return Err(format!(
                "params.{name} is not supported yet; omit it or set it to false"
            ));
        }
    }
    Ok(())
}

/// The longest URL a `WasmUrl` source may name.
pub const MAX_WASM_URL_LEN: usize = 2048;

/// A `WasmUrl` source: an https URL without credentials, the module's sha256 as 64 hex characters and
/// the one supported build target. (Whether the host is private is decided where the URL is fetched,
/// after DNS resolution; the contract cannot know.)
pub fn validate_wasm_url(url: &str, hash: &str, build_target: &str) -> Result<(), String> {
    if url.len() > MAX_WASM_URL_LEN {
        return Err(format!(
            "source.WasmUrl.url must be at most {MAX_WASM_URL_LEN} characters, got {}",
            url.len()
        ));
    }
    let Some(rest) = url.strip_prefix("https://") else {
        return Err(format!(
            "source.WasmUrl.url must start with https://, got {url:?}"
        ));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() {
        return Err(format!("source.WasmUrl.url has no host, got {url:?}"));
    }
    if authority.contains('@') {
        // Never echo the URL here: the part before '@' is a credential.
        return Err(
            "source.WasmUrl.url must not carry credentials (user:password@host)".to_string(),
        );
    }
    if let Some(bad) = url.chars().find(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "source.WasmUrl.url must not contain whitespace or control characters, found {bad:?}"
        ));
    }
    if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "source.WasmUrl.hash must be the module's sha256 as 64 hex characters, got {hash:?}"
        ));
    }
    if build_target != BUILD_TARGET_WASIP1 {
        return Err(format!(
            "build_target {build_target:?} is not supported; the only supported target is {BUILD_TARGET_WASIP1:?}"
        ));
    }
    Ok(())
}

/// Every limit must be positive and within the contract's current caps.
pub fn validate_limits(limits: &ResourceLimits, caps: &ResourceLimits) -> Result<(), String> {
    let checks: [(&str, u64, u64); 3] = [
        (
            "max_instructions",
            limits.max_instructions,
            caps.max_instructions,
        ),
        (
            "max_memory_mb",
            u64::from(limits.max_memory_mb),
            u64::from(caps.max_memory_mb),
        ),
        (
            "max_execution_seconds",
            limits.max_execution_seconds,
            caps.max_execution_seconds,
        ),
    ];
    for (name, value, cap) in checks {
        if value == 0 {
            return Err(format!("{name} must be greater than 0"));
        }
        if value > cap {
            return Err(format!("{name} {value} exceeds the maximum of {cap}"));
        }
    }
    Ok(())
}

pub fn validate_input(input: &str) -> Result<(), String> {
    if input.len() > MAX_INPUT_BYTES {
        return Err(format!(
            "input_data must be at most {MAX_INPUT_BYTES} bytes, got {}",
            input.len()
        ));
    }
    Ok(())
}

/// Profiles name a secrets bundle: `[A-Za-z0-9_-]`, 1-64 characters.
pub fn validate_profile(profile: &str) -> Result<(), String> {
    let ok = !profile.is_empty()
        && profile.len() <= MAX_PROFILE_LEN
        && profile
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "profile must be 1-{MAX_PROFILE_LEN} characters of [A-Za-z0-9_-], got {profile:?}"
        ))
    }
}

pub fn validate_branch(branch: Option<&str>) -> Result<(), String> {
    match branch {
        Some(branch) => validate_git_ref("branch", branch, MAX_BRANCH_LEN),
        None => Ok(()),
    }
}

pub fn validate_secrets_ref(secrets_ref: &SecretsReference) -> Result<(), String> {
    validate_profile(&secrets_ref.profile)
}

pub fn validate_encrypted_secrets(encrypted: &str) -> Result<(), String> {
    if encrypted.is_empty() || encrypted.len() > MAX_ENCRYPTED_SECRETS_LEN {
        return Err(format!(
            "encrypted_secrets_base64 must be 1-{MAX_ENCRYPTED_SECRETS_LEN} characters, got {}",
            encrypted.len()
        ));
    }
    let is_base64 = encrypted.len().is_multiple_of(4)
        && encrypted
            .trim_end_matches('=')
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/');
    if !is_base64 {
        return Err("encrypted_secrets_base64 must be standard padded base64".to_string());
    }
    Ok(())
}

fn is_lower_hex(value: &str, len: usize) -> bool {
    value.len() == len
        && value
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Bounds the shape of an access condition so that evaluating it stays cheap and predictable.
pub fn validate_access_condition(condition: &AccessCondition) -> Result<(), String> {
    let mut nodes = 0;
    validate_condition_node(condition, 1, &mut nodes)
}

fn validate_condition_node(
    condition: &AccessCondition,
    depth: usize,
    nodes: &mut usize,
) -> Result<(), String> {
    *nodes += 1;
    if depth > MAX_ACCESS_CONDITION_DEPTH {
        return Err(format!(
            "access condition nests deeper than {MAX_ACCESS_CONDITION_DEPTH} levels"
        ));
    }
    if *nodes > MAX_ACCESS_CONDITION_NODES {
        return Err(format!(
            "access condition has more than {MAX_ACCESS_CONDITION_NODES} conditions"
        ));
    }
    match condition {
        AccessCondition::AllowAll | AccessCondition::NearBalance { .. } => Ok(()),
        AccessCondition::FtBalance { .. } => Ok(()),
        AccessCondition::Whitelist { accounts } => {
            if accounts.is_empty() || accounts.len() > MAX_WHITELIST_ACCOUNTS {
                return Err(format!(
                    "Whitelist must list 1-{MAX_WHITELIST_ACCOUNTS} accounts, got {}",
                    accounts.len()
                ));
            }
            Ok(())
        }
        AccessCondition::AccountPattern { regex } => {
            if regex.is_empty() || regex.len() > MAX_PATTERN_LEN {
                return Err(format!(
                    "AccountPattern regex must be 1-{MAX_PATTERN_LEN} characters, got {}",
                    regex.len()
                ));
            }
            Ok(())
        }
        AccessCondition::NftOwned { token_id, .. } => match token_id {
            Some(id) if id.is_empty() || id.len() > MAX_TOKEN_ID_LEN => Err(format!(
                "NftOwned token_id must be 1-{MAX_TOKEN_ID_LEN} characters, got {}",
                id.len()
            )),
            _ => Ok(()),
        },
        AccessCondition::Logic { conditions, .. } => {
            if conditions.is_empty() {
                return Err("Logic must combine at least one condition".to_string());
            }
            conditions
                .iter()
                .try_for_each(|c| validate_condition_node(c, depth + 1, nodes))
        }
        AccessCondition::Not { condition } => validate_condition_node(condition, depth + 1, nodes),
        AccessCondition::WasmHash { sha256 } => {
            if !is_lower_hex(sha256, 64) {
                return Err(format!(
                    "WasmHash sha256 must be the module's sha256 as 64 lower-case hex characters, got {sha256:?}"
                ));
            }
            Ok(())
        }
        AccessCondition::ValidUntil { timestamp_ns } => {
            if *timestamp_ns == 0 {
                return Err(
                    "ValidUntil timestamp_ns must be nanoseconds since the Unix epoch, got 0"
                        .to_string(),
                );
            }
            Ok(())
        }
        AccessCondition::Predecessor { accounts } => {
            if accounts.is_empty() || accounts.len() > MAX_WHITELIST_ACCOUNTS {
                return Err(format!(
                    "Predecessor must list 1-{MAX_WHITELIST_ACCOUNTS} accounts, got {}",
                    accounts.len()
                ));
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::LogicOperator;

    fn code(repo: &str, commit: &str, target: Option<&str>) -> CodeSource {
        CodeSource {
            repo: repo.to_string(),
            commit: commit.to_string(),
            build_target: target.map(str::to_string),
        }
    }

    #[test]
    fn wasm_urls_must_be_https_without_credentials_with_a_sha256() {
        let hash = "ab".repeat(32);
        let target = BUILD_TARGET_WASIP1;
        assert_eq!(
            validate_wasm_url("https://example.com/m.wasm?v=1", &hash, target),
            Ok(())
        );
        for (url, hash, target, expected) in [
            (
                "http://example.com/m.wasm",
                hash.as_str(),
                target,
                "must start with https://",
            ),
            ("https:///m.wasm", &hash, target, "has no host"),
            (
                "https://u:secret@example.com/m.wasm",
                &hash,
                target,
                "must not carry credentials",
            ),
            ("https://example.com/a b", &hash, target, "whitespace"),
            (
                "https://example.com/m.wasm",
                "ab",
                target,
                "64 hex characters",
            ),
            (
                "https://example.com/m.wasm",
                &"zz".repeat(32),
                target,
                "64 hex characters",
            ),
            (
                "https://example.com/m.wasm",
                &hash,
                "x86_64",
                "is not supported",
            ),
        ] {
            let error = validate_wasm_url(url, hash, target).unwrap_err();
            assert!(error.contains(expected), "{url}: {error}");
            assert!(!error.contains("secret"), "credentials echoed: {error}");
        }
    }

    #[test]
    fn accepts_github_repos() {
        for repo in [
            "https://github.com/alice/app",
            "https://github.com/near-org/my_app.rs",
            "https://github.com/a/b.git",
        ] {
            assert_eq!(validate_repo(repo), Ok(()), "{repo}");
        }
    }

    #[test]
    fn rejects_repos_that_are_not_plain_github_urls() {
        let long = format!("https://github.com/alice/{}", "a".repeat(600));
        for (repo, expected) in [
            ("http://github.com/alice/app", "must look like"),
            ("https://gitlab.com/alice/app", "must look like"),
            ("https://user:pw@github.com/alice/app", "must look like"),
            ("https://github.com/alice/app?x=1", "repo name"),
            ("https://github.com/alice/app#frag", "repo name"),
            ("https://github.com/alice/app/tree/main", "no extra path"),
            ("https://github.com/alice", "no extra path"),
            ("https://github.com/alice/..", "repo name"),
            ("https://github.com/alice/a..b", "repo name"),
            ("https://github.com/-alice/app", "repo owner"),
            ("https://github.com/al ice/app", "repo owner"),
            ("https://github.com/alice/", "repo name"),
            (long.as_str(), "at most 512"),
        ] {
            let err = validate_repo(repo).expect_err(repo);
            assert!(err.contains(expected), "{repo}: {err}");
        }
    }

    #[test]
    fn accepts_shas_and_refs() {
        for commit in [
            "0123456789abcdef0123456789abcdef01234567",
            "0123456789ABCDEF0123456789abcdef01234567",
            "main",
            "refs/heads/main",
            "refs/tags/v1.0.0",
            // A bare name is looked up under refs/heads/ and refs/tags/ only, so this is a branch.
            "pull/1/head",
            "release/v1.2+build",
            "v1.0.0-rc_1",
        ] {
            assert_eq!(validate_git_ref("commit", commit, MAX_REF_LEN), Ok(()));
        }
    }

    #[test]
    fn rejects_refs_that_could_inject_options_or_escape() {
        for (commit, expected) in [
            ("", "1-256 characters"),
            ("--upload-pack=evil", "must not start with '-'"),
            ("main..other", "must not contain '..'"),
            ("main;rm -rf", "may only contain"),
            ("ma in", "may only contain"),
            ("ref$(x)", "may only contain"),
            ("+main", "must not start with '-' or '+'"),
            (
                "refs/pull/7/head",
                "refs/pull/* hold code the repository owner did not choose",
            ),
            ("refs/pull/7/merge", "is refused: only a 40-hex commit SHA"),
            ("refs/remotes/origin/main", "is refused"),
            ("refs/notes/commits", "is refused"),
            ("refs/heads", "is refused"),
            ("main/", "not a valid git ref name"),
            ("a//b", "not a valid git ref name"),
            (".hidden", "not a valid git ref name"),
            ("feature/.x", "not a valid git ref name"),
            ("main.lock", "not a valid git ref name"),
            ("v1.", "not a valid git ref name"),
        ] {
            let err = validate_git_ref("commit", commit, MAX_REF_LEN).expect_err(commit);
            assert!(err.contains(expected), "{commit}: {err}");
        }
        let long = "a".repeat(MAX_REF_LEN + 1);
        assert!(validate_git_ref("commit", &long, MAX_REF_LEN).is_err());
        assert!(validate_git_ref("commit", &long[..MAX_REF_LEN], MAX_REF_LEN).is_ok());
    }

    #[test]
    fn only_wasip1_is_a_build_target() {
        let repo = "https://github.com/alice/app";
        assert_eq!(validate_code_source(&code(repo, "main", None)), Ok(()));
        assert_eq!(
            validate_code_source(&code(repo, "main", Some("wasm32-wasip1"))),
            Ok(())
        );
        let err = validate_code_source(&code(repo, "main", Some("wasm32-wasip2"))).unwrap_err();
        assert!(err.contains("\"wasm32-wasip2\" is not supported"), "{err}");
    }

    #[test]
    fn limits_must_be_positive_and_within_caps() {
        let caps = ResourceLimits {
            max_instructions: 100,
            max_memory_mb: 64,
            max_execution_seconds: 10,
        };
        assert_eq!(validate_limits(&caps, &caps), Ok(()));
        let mut over = caps.clone();
        over.max_memory_mb = 65;
        assert_eq!(
            validate_limits(&over, &caps),
            Err("max_memory_mb 65 exceeds the maximum of 64".to_string())
        );
        let mut zero = caps.clone();
        zero.max_execution_seconds = 0;
        assert_eq!(
            validate_limits(&zero, &caps),
            Err("max_execution_seconds must be greater than 0".to_string())
        );
    }

    #[test]
    fn input_is_bounded_at_256_kib() {
        assert!(validate_input(&"x".repeat(MAX_INPUT_BYTES)).is_ok());
        let err = validate_input(&"x".repeat(MAX_INPUT_BYTES + 1)).unwrap_err();
        assert!(err.contains("at most 262144 bytes"), "{err}");
    }

    #[test]
    fn profiles_and_branches() {
        assert!(validate_profile("prod_eu-1").is_ok());
        assert!(validate_profile("").is_err());
        assert!(validate_profile("a/b").is_err());
        assert!(validate_profile(&"p".repeat(65)).is_err());
        assert!(validate_branch(None).is_ok());
        assert!(validate_branch(Some("feature/x")).is_ok());
        assert!(validate_branch(Some(&"b".repeat(256))).is_err());
        assert!(validate_branch(Some("-x")).is_err());
    }

    #[test]
    fn encrypted_secrets_must_be_bounded_base64() {
        assert!(validate_encrypted_secrets("AAECAw==").is_ok());
        assert!(validate_encrypted_secrets("").is_err());
        assert!(validate_encrypted_secrets("not base64!").is_err());
        assert!(validate_encrypted_secrets("AAE").is_err());
        let big = "A".repeat(MAX_ENCRYPTED_SECRETS_LEN + 4);
        assert!(validate_encrypted_secrets(&big).is_err());
    }

    #[test]
    fn access_conditions_are_bounded() {
        assert!(validate_access_condition(&AccessCondition::AllowAll).is_ok());
        assert!(
            validate_access_condition(&AccessCondition::Whitelist { accounts: vec![] }).is_err()
        );
        let mut deep = AccessCondition::AllowAll;
        for _ in 0..MAX_ACCESS_CONDITION_DEPTH {
            deep = AccessCondition::Not {
                condition: Box::new(deep),
            };
        }
        let err = validate_access_condition(&deep).unwrap_err();
        assert!(err.contains("deeper than 8"), "{err}");
        let wide = AccessCondition::Logic {
            operator: LogicOperator::Or,
            conditions: vec![AccessCondition::AllowAll; MAX_ACCESS_CONDITION_NODES],
        };
        let err = validate_access_condition(&wide).unwrap_err();
        assert!(err.contains("more than 64"), "{err}");
        let empty = AccessCondition::Logic {
            operator: LogicOperator::And,
            conditions: vec![],
        };
        assert!(validate_access_condition(&empty).is_err());
        let pattern = AccessCondition::AccountPattern {
            regex: String::new(),
        };
        assert!(validate_access_condition(&pattern).is_err());
    }

    #[test]
    fn pinning_conditions_are_bounded() {
        let hash = "ab".repeat(32);
        for (condition, expected) in [
            (
                AccessCondition::WasmHash {
                    sha256: hash.clone(),
                },
                None,
            ),
            (
                AccessCondition::WasmHash {
                    sha256: hash.to_uppercase(),
                },
                Some("64 lower-case hex"),
            ),
            (
                AccessCondition::WasmHash {
                    sha256: hash[..62].to_string(),
                },
                Some("64 lower-case hex"),
            ),
            (AccessCondition::ValidUntil { timestamp_ns: 1 }, None),
            (
                AccessCondition::ValidUntil { timestamp_ns: 0 },
                Some("got 0"),
            ),
            (
                AccessCondition::Predecessor {
                    accounts: vec!["client.near".parse().unwrap()],
                },
                None,
            ),
            (
                AccessCondition::Predecessor { accounts: vec![] },
                Some("Predecessor must list 1-256 accounts, got 0"),
            ),
            (
                AccessCondition::Predecessor {
                    accounts: vec!["client.near".parse().unwrap(); MAX_WHITELIST_ACCOUNTS + 1],
                },
                Some("got 257"),
            ),
        ] {
            match (validate_access_condition(&condition), expected) {
                (Ok(()), None) => {}
                (Err(error), Some(expected)) => {
                    assert!(error.contains(expected), "{condition:?}: {error}")
                }
                (result, _) => panic!("{condition:?}: unexpected {result:?}"),
            }
        }
    }
}
