//! An execution's secrets: unsealed just before its pod is created, into an immutable Secret
//! `<exr>-env` owned by the ExecutionRequest that the pod reads as its env file, and deleted as soon
//! as the pod has ended (owner garbage collection covers every other path).
//!
//! Who asks: for an on-chain request the requester is its sender, and the access condition is checked
//! on chain (cluster secrets first, then the contract's store). A request created with kubectl has no
//! authenticated account: it acts as the secrets' owner and may use only sealed Secrets in the
//! operator's namespace (never the contract's store), with chain-based conditions undecidable — so
//! whoever may create ExecutionRequests there may use that namespace's sealed secrets.

use std::time::Instant;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use near_primitives::types::AccountId;
use tracing::{debug, info, warn};

use crate::chain::ChainClient;
use crate::context::Context;
use crate::crd::{ExecutionRequest, Reason};
use crate::pods::executor::{EXECUTION_LABEL, bounded_name, env_secret_name};
use crate::sealing::access::AccessRequest;
use crate::sealing::{Scope, ephemeral_env_secret, unseal};
use crate::{Error, Result};

/// Where an execution's secrets stand before its pod starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SecretsStep {
    /// Nothing to mount, or the ephemeral Secret of this name exists.
    Ready(Option<String>),
    /// Refused for good: the execution fails with this reason; the message reveals no secret.
    Denied { reason: Reason, message: String },
    /// The operator cannot decide yet (keys not loaded); says why.
    Waiting(String),
}

/// A full commit SHA names no branch; anything else does (tags are names too), without its
/// `refs/heads/` or `refs/tags/` prefix: `refs/heads/main` and `main` are the same branch's secrets.
fn branch_of(commit: &str) -> Option<&str> {
    let is_sha = commit.len() == 40 && commit.bytes().all(|b| b.is_ascii_hexdigit());
    let name = commit
        .strip_prefix("refs/heads/")
        .or_else(|| commit.strip_prefix("refs/tags/"))
        .unwrap_or(commit);
    (!is_sha).then_some(name)
}

impl ExecutionRequest {
    /// `module_sha256`: the module the execution runs, for `WasmHash` conditions; `reachable`: whether
    /// its commit is on a branch or tag of the repository (the fetch Job's finding).
    pub(super) async fn prepare_secrets(
        &self,
        ctx: &Context,
        module_sha256: &str,
        reachable: Option<bool>,
    ) -> Result<SecretsStep> {
        let Some(secrets_ref) = &self.spec.secrets_ref else {
            return Ok(SecretsStep::Ready(None));
        };
        let namespace = self.namespace_or_err()?;
        let name = env_secret_name(&self.name_any());
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
        if let Some(existing) = secrets
            .get_metadata_opt(&name)
            .await
            .map_err(Error::api("reading Secret", &name))?
        {
            // Unsealed before a restart or for an earlier attempt — if it is this execution's at all:
            // a Secret planted under the name would hand the guest someone else's environment.
            if !crate::pods::controlled_by(&existing.metadata, &self.uid_or_err()?) {
                ctx.metrics.untrusted_object("Secret");
                return Err(Error::Untrusted {
                    kind: "Secret",
                    name,
                    why: "it has no controller reference to this execution; it is not mounted"
                        .to_string(),
                });
            }
            return Ok(SecretsStep::Ready(Some(name)));
        }
        let Some(keyring) = ctx.keyring() else {
            return Ok(SecretsStep::Waiting(
                "waiting for the operator's sealing keys (see the operator's log)".to_string(),
            ));
        };
        let Some(source) = &self.spec.code.source else {
            return Ok(SecretsStep::Denied {
                reason: Reason::SecretsInvalid,
                message:
                    "secrets are scoped to a repository; a module named by hash or URL has none"
                        .to_string(),
            });
        };
        if let Some(refusal) = unreachable_commit(&source.repo, &source.commit, reachable) {
            return Ok(SecretsStep::Denied {
                reason: Reason::SecretsAccessDenied,
                message: refusal,
            });
        }
        let scope = match Scope::new(
            &secrets_ref.account_id,
            &source.repo,
            branch_of(&source.commit),
            &secrets_ref.profile,
        ) {
            Ok(scope) => scope,
            Err(error) => {
                return Ok(SecretsStep::Denied {
                    reason: Reason::SecretsInvalid,
                    message: format!("secretsRef does not name a valid scope: {error}"),
                });
            }
        };
        // An on-chain request's sender is a fact only once the spec was compared with the contract's
        // copy, which takes a chain client (the step did so in this reconcile, before this look).
        let (requester, chain) = match (&self.spec.on_chain, ctx.chain.as_deref()) {
            (Some(on_chain), Some(chain)) => (on_chain.sender.as_str(), Some(chain)),
            (Some(_), None) => {
                return Ok(SecretsStep::Waiting(
                    "waiting for a chain client: an on-chain request's secrets are unsealed only after the request is checked against the contract".to_string(),
                ));
            }
            (None, _) => (secrets_ref.account_id.as_str(), None::<&ChainClient>),
        };
        let requester: AccountId = match requester.parse() {
            Ok(account) => account,
            Err(_) => {
                return Ok(SecretsStep::Denied {
                    reason: Reason::SecretsInvalid,
                    message: format!("{requester:?} is not a NEAR account id"),
                });
            }
        };
        // On chain the sender is the calling contract (`Predecessor`); the module is the one about to
        // run (`WasmHash`); `ValidUntil` is judged now (within the yield window of the request's block
        // time, so never more lenient than at its block timestamp).
        let mut access = AccessRequest::new(&requester).running(module_sha256);
        if self.spec.on_chain.is_some() {
            access = access.called_by(&requester);
        }
        let started = Instant::now();
        let unsealed = match unseal(
            ctx.client.clone(),
            &namespace,
            chain,
            &keyring,
            &scope,
            access,
        )
        .await
        {
            Ok(unsealed) => unsealed,
            Err(error) if error.is_transient() => {
                return Err(Error::Secrets(error.to_string()));
            }
            Err(error) => {
                warn!(reason = %error.reason(), "the execution may not use its secrets");
                return Ok(SecretsStep::Denied {
                    reason: error.reason(),
                    message: error.to_string(),
                });
            }
        };
        let (_, _, owner) = crate::pods::owner_identity(self)?;
        let labels = [(
            EXECUTION_LABEL.to_string(),
            bounded_name(&self.name_any(), ""),
        )]
        .into();
        let secret = ephemeral_env_secret(&name, &namespace, owner, labels, &unsealed.plaintext);
        drop(unsealed);
        let prepared = started.elapsed();
        match secrets.create(&PostParams::default(), &secret).await {
            Ok(_) => {}
            // Created since the look above: by an earlier pass (then it is ours), or planted.
            Err(kube::Error::Api(e)) if e.code == 409 => {
                let existing = secrets
                    .get_metadata(&name)
                    .await
                    .map_err(Error::api("reading Secret", &name))?;
                if !crate::pods::controlled_by(&existing.metadata, &self.uid_or_err()?) {
                    ctx.metrics.untrusted_object("Secret");
                    return Err(Error::Untrusted {
                        kind: "Secret",
                        name,
                        why: "it appeared without a controller reference to this execution; it is not mounted".to_string(),
                    });
                }
            }
            Err(e) => return Err(Error::api("creating Secret", &name)(e)),
        }
        ctx.metrics.secrets_unsealed(prepared, started.elapsed());
        info!(secret = %name, "secrets unsealed for this execution");
        Ok(SecretsStep::Ready(Some(name)))
    }

    /// Deletes the ephemeral Secret, if the execution had one; absent is fine.
    pub(super) async fn delete_env_secret(&self, ctx: &Context) -> Result<()> {
        if self.spec.secrets_ref.is_none() {
            return Ok(());
        }
        let namespace = self.namespace_or_err()?;
        let name = env_secret_name(&self.name_any());
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &namespace);
        super::execution::delete_owned(&secrets, &name, &self.uid_or_err()?).await?;
        debug!(secret = %name, "ephemeral secrets deleted");
        Ok(())
    }
}

/// Secrets stored for "no branch" are meant for the repository's own commits: a full SHA gets them
/// only when the fetch Job found it on a branch or tag (a fork's or a pull request's commit is fetched
/// by SHA all the same). Unknown counts as not reachable.
fn unreachable_commit(repo: &str, commit: &str, reachable: Option<bool>) -> Option<String> {
    let is_sha = branch_of(commit).is_none();
    (is_sha && reachable != Some(true)).then(|| {
        format!(
            "commit {commit} is not on a branch or tag of {repo} (a fork's or a pull request's?): secrets stored for any branch are offered only to commits on one"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_branch_secrets_reach_only_commits_on_a_branch_or_tag() {
        let sha = "0123456789abcdef0123456789abcdef01234567";
        assert_eq!(unreachable_commit("r", sha, Some(true)), None);
        assert!(unreachable_commit("r", sha, Some(false)).is_some());
        assert!(
            unreachable_commit("r", sha, None).is_some(),
            "unknown is not reachable"
        );
        assert_eq!(
            unreachable_commit("r", "main", None),
            None,
            "a name is its branch"
        );
    }

    #[test]
    fn only_names_are_branches() {
        assert_eq!(branch_of("main"), Some("main"));
        assert_eq!(branch_of("v1.2.0"), Some("v1.2.0"));
        assert_eq!(branch_of("refs/heads/main"), Some("main"));
        assert_eq!(branch_of("refs/tags/v1.2.0"), Some("v1.2.0"));
        assert_eq!(branch_of("0123456789abcdef0123456789abcdef01234567"), None);
    }
}
