//! Where a sealed secret may be used: (owner account, repository, branch or any, profile). The scope is
//! bound into every ciphertext (HKDF info and AEAD associated data), so the same bytes presented under
//! another owner, repository, branch or profile do not open.

use std::fmt;

use outlayer_contract::secrets::normalize_repo;
use outlayer_contract::validation::{validate_branch, validate_profile};

/// The error says which field is wrong and why; scope fields are public identifiers, never secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("owner {owner:?} is not a valid NEAR account id: {reason}")]
    Owner { owner: String, reason: String },
    #[error("repo: {0}")]
    Repo(String),
    #[error("branch: {0}")]
    Branch(String),
    #[error("profile: {0}")]
    Profile(String),
}

/// A validated scope. The repository is held in the contract's canonical form
/// (`github.com/<owner>/<name>`, lower case, no `.git`), so every spelling the contract accepts for a
/// repository seals to and opens under the same scope.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    owner: String,
    repo: String,
    branch: Option<String>,
    profile: String,
}

impl Scope {
    /// `branch: None` means the secret applies to every branch of the repository.
    pub fn new(
        owner: &str,
        repo: &str,
        branch: Option<&str>,
        profile: &str,
    ) -> Result<Self, ScopeError> {
        let account = owner
            .parse::<near_primitives::types::AccountId>()
            .map_err(|e| ScopeError::Owner {
                owner: owner.to_string(),
                reason: e.to_string(),
            })?;
        let repo = normalize_repo(repo).map_err(ScopeError::Repo)?;
        validate_branch(branch).map_err(ScopeError::Branch)?;
        validate_profile(profile).map_err(ScopeError::Profile)?;
        Ok(Self {
            owner: account.to_string(),
            repo,
            branch: branch.map(str::to_string),
            profile: profile.to_string(),
        })
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The canonical `github.com/<owner>/<name>`.
    pub fn repo(&self) -> &str {
        &self.repo
    }

    pub fn branch(&self) -> Option<&str> {
        self.branch.as_deref()
    }

    pub fn profile(&self) -> &str {
        &self.profile
    }

    /// The same scope for every branch: the fallback a lookup tries after the exact branch.
    pub fn any_branch(&self) -> Self {
        Self {
            branch: None,
            ..self.clone()
        }
    }

    /// An unambiguous byte encoding: a domain tag, then each field length-prefixed (u16 big endian), the
    /// branch preceded by a presence byte. No two distinct scopes encode the same; `alice.near` +
    /// `github.com/a/b` can never be confused with `alice.nea` + `rgithub.com/a/b`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(
            16 + self.owner.len()
                + self.repo.len()
                + self.profile.len()
                + self.branch.as_ref().map_or(0, String::len),
        );
        out.extend_from_slice(b"outlayer-scope-v1");
        push_field(&mut out, &self.owner);
        push_field(&mut out, &self.repo);
        match &self.branch {
            None => out.push(0),
            Some(branch) => {
                out.push(1);
                push_field(&mut out, branch);
            }
        }
        push_field(&mut out, &self.profile);
        out
    }
}

/// Every field is bounded far below 64 KiB by validation (accounts 64, repos 512, branches 255,
/// profiles 64 bytes), so the u16 prefix cannot overflow.
fn push_field(out: &mut Vec<u8>, value: &str) {
    let len = u16::try_from(value.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(value.as_bytes());
}

impl fmt::Debug for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// `alice.near:github.com/alice/app@main/prod` (`@*` for any branch).
impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}@{}/{}",
            self.owner,
            self.repo,
            self.branch.as_deref().unwrap_or("*"),
            self.profile
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repos_are_normalized_like_the_contract() {
        let a = Scope::new(
            "alice.near",
            "https://github.com/Alice/App.git",
            None,
            "prod",
        )
        .unwrap();
        let b = Scope::new("alice.near", "github.com/alice/app", None, "prod").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.repo(), "github.com/alice/app");
        assert_eq!(a.encode(), b.encode());
        assert_eq!(a.to_string(), "alice.near:github.com/alice/app@*/prod");
    }

    #[test]
    fn invalid_fields_are_named() {
        assert!(matches!(
            Scope::new("Alice!", "github.com/a/b", None, "p"),
            Err(ScopeError::Owner { .. })
        ));
        assert!(matches!(
            Scope::new("alice.near", "gitlab.com/a/b", None, "p"),
            Err(ScopeError::Repo(_))
        ));
        assert!(matches!(
            Scope::new("alice.near", "github.com/a/b", Some("-x"), "p"),
            Err(ScopeError::Branch(_))
        ));
        assert!(matches!(
            Scope::new("alice.near", "github.com/a/b", None, "a b"),
            Err(ScopeError::Profile(_))
        ));
    }

    #[test]
    fn encodings_differ_for_every_field_and_are_unambiguous() {
        let base = Scope::new("alice.near", "github.com/a/b", Some("main"), "prod").unwrap();
        let others = [
            Scope::new("bob.near", "github.com/a/b", Some("main"), "prod").unwrap(),
            Scope::new("alice.near", "github.com/a/c", Some("main"), "prod").unwrap(),
            Scope::new("alice.near", "github.com/a/b", Some("dev"), "prod").unwrap(),
            Scope::new("alice.near", "github.com/a/b", None, "prod").unwrap(),
            Scope::new("alice.near", "github.com/a/b", Some("main"), "dev").unwrap(),
        ];
        for other in &others {
            assert_ne!(base.encode(), other.encode(), "{other}");
        }
        assert_eq!(base.any_branch(), others[3]);
    }
}
