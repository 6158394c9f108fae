//! The secrets store: ciphertext sealed to the operator's public key, addressed by (owner, repo, branch,
//! profile), with an access condition the operator checks before it opens one for an execution. The
//! contract never sees plaintext. Owners pay for the storage their records take and get it back on delete.

use near_sdk::json_types::U128;
use near_sdk::{AccountId, NearToken, Promise, env, near};

use crate::events::{OutlayerEvent, SecretsAccessUpdatedData, SecretsChangedData};
use crate::types::{AccessCondition, SecretsKey, SecretsRecord};
use crate::validation::{
    validate_access_condition, validate_branch, validate_encrypted_secrets, validate_profile,
    validate_repo,
};
use crate::{Contract, ContractExt, require_valid};

/// Bounds the per-owner index that `list_user_secrets` serves.
pub const MAX_SECRETS_PER_OWNER: usize = 100;

/// Storage key of one record.
#[near(serializers = [borsh])]
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct SecretsId {
    pub owner: AccountId,
    pub key: SecretsKey,
}

/// The canonical form of a repository in the secrets store: `github.com/<owner>/<name>`, lower case,
/// without `.git`. Accepts the same URLs as a code source, with or without `https://`, so a secret stored
/// for `https://github.com/Alice/App.git` matches requests for `https://github.com/alice/app`.
pub fn normalize_repo(repo: &str) -> Result<String, String> {
    let with_scheme = if repo.starts_with("https://") {
        repo.to_string()
    } else {
        format!("https://{repo}")
    };
    validate_repo(&with_scheme)?;
    let path = with_scheme
        .trim_start_matches("https://")
        .to_ascii_lowercase();
    Ok(path.strip_suffix(".git").unwrap_or(&path).to_string())
}

fn secrets_key(repo: &str, branch: Option<String>, profile: String) -> SecretsKey {
    require_valid(validate_branch(branch.as_deref()));
    require_valid(validate_profile(&profile));
    let repo = normalize_repo(repo).unwrap_or_else(|message| env::panic_str(&message));
    SecretsKey {
        repo,
        branch,
        profile,
    }
}

fn storage_cost(bytes: u64) -> u128 {
    u128::from(bytes).saturating_mul(env::storage_byte_cost().as_yoctonear())
}

/// Settles a record's storage change with its owner: growth is paid from `attached` (the call fails
/// when it does not cover it), freed storage is refunded; the surplus goes back. Updates the record's
/// `storage_deposit` and returns (paid, freed).
fn settle_storage(
    owner: &AccountId,
    attached: u128,
    storage_before: u64,
    storage_after: u64,
    record: &mut SecretsRecord,
) -> (u128, u128) {
    let (paid, freed) = if storage_after >= storage_before {
        (storage_cost(storage_after - storage_before), 0)
    } else {
        (0, storage_cost(storage_before - storage_after))
    };
    if attached < paid {
        env::panic_str(&format!(
            "attached deposit {attached} yoctoNEAR does not cover the {} bytes of storage these \
             secrets take: {paid} yoctoNEAR is required",
            storage_after - storage_before
        ));
    }
    record.storage_deposit = U128(
        record
            .storage_deposit
            .0
            .saturating_add(paid)
            .saturating_sub(freed),
    );
    let refund = (attached - paid).saturating_add(freed);
    if refund > 0 {
        Promise::new(owner.clone())
            .transfer(NearToken::from_yoctonear(refund))
            .detach();
    }
    (paid, freed)
}

#[near]
impl Contract {
    /// Stores (or replaces) the caller's ciphertext for `repo`/`branch`/`profile`. Attach enough to pay
    /// for the storage it takes; the surplus is refunded. `branch: null` applies to every branch.
    #[payable]
    pub fn store_secrets(
        &mut self,
        repo: String,
        branch: Option<String>,
        profile: String,
        encrypted_secrets_base64: String,
        access: AccessCondition,
    ) {
        let owner = env::predecessor_account_id();
        let key = secrets_key(&repo, branch, profile);
        require_valid(validate_encrypted_secrets(&encrypted_secrets_base64));
        require_valid(validate_access_condition(&access));
        let attached = env::attached_deposit().as_yoctonear();
        let id = SecretsId {
            owner: owner.clone(),
            key: key.clone(),
        };
        let now = env::block_timestamp();
        let previous = self.secrets.get(&id).cloned();
        if previous.is_none() {
            let index = self.user_secrets.get(&owner).map_or(0, Vec::len);
            if index >= MAX_SECRETS_PER_OWNER {
                env::panic_str(&format!(
                    "{owner} already has {MAX_SECRETS_PER_OWNER} secrets; delete one first"
                ));
            }
        }

        let storage_before = env::storage_usage();
        let mut record = SecretsRecord {
            owner: owner.clone(),
            repo: key.repo.clone(),
            branch: key.branch.clone(),
            profile: key.profile.clone(),
            encrypted_secrets_base64,
            access,
            storage_deposit: previous.as_ref().map_or(U128(0), |p| p.storage_deposit),
            created_at_ns: previous.as_ref().map_or(now, |p| p.created_at_ns),
            updated_at_ns: now,
        };
        self.secrets.insert(id.clone(), record.clone());
        if previous.is_none() {
            self.user_secrets
                .entry(owner.clone())
                .or_default()
                .push(key.clone());
        }
        self.secrets.flush();
        self.user_secrets.flush();
        let (paid, _) = settle_storage(
            &owner,
            attached,
            storage_before,
            env::storage_usage(),
            &mut record,
        );
        self.secrets.insert(id, record);
        OutlayerEvent::SecretsStored(vec![SecretsChangedData {
            owner,
            repo: key.repo,
            branch: key.branch,
            profile: key.profile,
            storage_deposit: U128(paid),
        }])
        .emit();
    }

    /// Replaces the access condition of the caller's stored secrets for `repo`/`branch`/`profile`
    /// without touching the ciphertext: owners pin a secret to a build (`WasmHash`), a time
    /// (`ValidUntil`) or the calling contracts (`Predecessor`) without sealing it again. Only the
    /// owner can (the record is looked up under the caller's account). Storage growth is paid from
    /// the attached deposit, freed storage refunded with the surplus.
    #[payable]
    pub fn update_access(
        &mut self,
        repo: String,
        branch: Option<String>,
        profile: String,
        access: AccessCondition,
    ) {
        let owner = env::predecessor_account_id();
        let key = secrets_key(&repo, branch, profile);
        require_valid(validate_access_condition(&access));
        let attached = env::attached_deposit().as_yoctonear();
        let id = SecretsId {
            owner: owner.clone(),
            key: key.clone(),
        };
        let Some(mut record) = self.secrets.get(&id).cloned() else {
            env::panic_str(&format!(
                "no secrets of {owner} for repo {} branch {:?} profile {}: store them first",
                key.repo, key.branch, key.profile
            ));
        };
        let storage_before = env::storage_usage();
        record.access = access;
        record.updated_at_ns = env::block_timestamp();
        self.secrets.insert(id.clone(), record.clone());
        self.secrets.flush();
        let (paid, freed) = settle_storage(
            &owner,
            attached,
            storage_before,
            env::storage_usage(),
            &mut record,
        );
        self.secrets.insert(id, record);
        OutlayerEvent::SecretsAccessUpdated(vec![SecretsAccessUpdatedData {
            owner,
            repo: key.repo,
            branch: key.branch,
            profile: key.profile,
            storage_paid: U128(paid),
            storage_refunded: U128(freed),
        }])
        .emit();
    }

    /// Deletes the caller's secrets for `repo`/`branch`/`profile` and refunds their storage deposit.
    pub fn delete_secrets(&mut self, repo: String, branch: Option<String>, profile: String) {
        let owner = env::predecessor_account_id();
        let key = secrets_key(&repo, branch, profile);
        let id = SecretsId {
            owner: owner.clone(),
            key: key.clone(),
        };
        let Some(record) = self.secrets.remove(&id) else {
            env::panic_str(&format!(
                "no secrets of {owner} for repo {} branch {:?} profile {}",
                key.repo, key.branch, key.profile
            ));
        };
        if let Some(keys) = self.user_secrets.get_mut(&owner) {
            keys.retain(|k| k != &key);
            if keys.is_empty() {
                self.user_secrets.remove(&owner);
            }
        }
        if record.storage_deposit.0 > 0 {
            Promise::new(owner.clone())
                .transfer(NearToken::from_yoctonear(record.storage_deposit.0))
                .detach();
        }
        OutlayerEvent::SecretsDeleted(vec![SecretsChangedData {
            owner,
            repo: key.repo,
            branch: key.branch,
            profile: key.profile,
            storage_deposit: record.storage_deposit,
        }])
        .emit();
    }

    pub fn get_secrets(
        &self,
        repo: String,
        branch: Option<String>,
        profile: String,
        owner: AccountId,
    ) -> Option<SecretsRecord> {
        let key = secrets_key(&repo, branch, profile);
        self.secrets.get(&SecretsId { owner, key }).cloned()
    }

    pub fn secrets_exist(
        &self,
        repo: String,
        branch: Option<String>,
        profile: String,
        owner: AccountId,
    ) -> bool {
        let key = secrets_key(&repo, branch, profile);
        self.secrets.contains_key(&SecretsId { owner, key })
    }

    pub fn list_user_secrets(&self, account_id: AccountId) -> Vec<SecretsKey> {
        self.user_secrets
            .get(&account_id)
            .cloned()
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::*;
    use crate::types::LogicOperator;
    use near_sdk::testing_env;

    const ATTACHED: u128 = 10u128.pow(24);

    fn store(contract: &mut Contract, branch: Option<&str>, ciphertext: &str) {
        set_caller(user(), ATTACHED);
        contract.store_secrets(
            "https://github.com/alice/app".to_string(),
            branch.map(str::to_string),
            "prod".to_string(),
            ciphertext.to_string(),
            AccessCondition::Whitelist {
                accounts: vec![user()],
            },
        );
    }

    fn stored(contract: &Contract, branch: Option<&str>) -> Option<SecretsRecord> {
        contract.get_secrets(
            "github.com/alice/app".to_string(),
            branch.map(str::to_string),
            "prod".to_string(),
            user(),
        )
    }

    #[test]
    fn storing_takes_the_storage_cost_and_refunds_the_surplus() {
        let mut contract = new_contract();
        store(&mut contract, Some("main"), "AAECAw==");
        let record = stored(&contract, Some("main")).expect("stored");
        assert_eq!(record.repo, "github.com/alice/app");
        assert_eq!(record.encrypted_secrets_base64, "AAECAw==");
        let paid = record.storage_deposit.0;
        assert!(paid > 0);
        assert_eq!(transfers(), vec![(user(), ATTACHED - paid)]);
        assert_eq!(event("secrets_stored")["storage_deposit"], paid.to_string());
        assert!(contract.secrets_exist(
            "https://github.com/alice/app".to_string(),
            Some("main".to_string()),
            "prod".to_string(),
            user()
        ));
        assert!(
            stored(&contract, None).is_none(),
            "branch-less lookup is a different key"
        );
        assert_eq!(
            contract.list_user_secrets(user()),
            vec![SecretsKey {
                repo: "github.com/alice/app".to_string(),
                branch: Some("main".to_string()),
                profile: "prod".to_string()
            }]
        );
    }

    #[test]
    fn replacing_with_a_smaller_ciphertext_refunds_the_freed_storage() {
        let mut contract = new_contract();
        store(&mut contract, None, &"A".repeat(4_000));
        let first = stored(&contract, None).unwrap().storage_deposit.0;
        store(&mut contract, None, "AAAA");
        let second = stored(&contract, None).unwrap().storage_deposit.0;
        assert!(second < first);
        let freed = first - second;
        assert_eq!(transfers(), vec![(user(), ATTACHED + freed)]);
        assert_eq!(contract.list_user_secrets(user()).len(), 1);
    }

    #[test]
    fn deleting_refunds_the_storage_deposit() {
        let mut contract = new_contract();
        store(&mut contract, None, "AAECAw==");
        let paid = stored(&contract, None).unwrap().storage_deposit.0;
        set_caller(user(), 0);
        contract.delete_secrets("github.com/alice/app".to_string(), None, "prod".to_string());
        assert_eq!(transfers(), vec![(user(), paid)]);
        assert_eq!(
            event("secrets_deleted")["storage_deposit"],
            paid.to_string()
        );
        assert!(stored(&contract, None).is_none());
        assert!(contract.list_user_secrets(user()).is_empty());
    }

    #[test]
    #[should_panic(expected = "does not cover the")]
    fn storing_without_a_deposit_fails() {
        let mut contract = new_contract();
        set_caller(user(), 0);
        contract.store_secrets(
            "github.com/alice/app".to_string(),
            None,
            "prod".to_string(),
            "AAECAw==".to_string(),
            AccessCondition::AllowAll,
        );
    }

    #[test]
    #[should_panic(expected = "no secrets of")]
    fn deleting_someone_elses_secrets_fails() {
        let mut contract = new_contract();
        store(&mut contract, None, "AAECAw==");
        set_caller(stranger(), 0);
        contract.delete_secrets("github.com/alice/app".to_string(), None, "prod".to_string());
    }

    #[test]
    #[should_panic(expected = "access condition nests deeper than 8 levels")]
    fn deep_access_conditions_are_rejected() {
        let mut contract = new_contract();
        let mut condition = AccessCondition::AllowAll;
        for _ in 0..9 {
            condition = AccessCondition::Logic {
                operator: LogicOperator::And,
                conditions: vec![condition],
            };
        }
        set_caller(user(), ATTACHED);
        contract.store_secrets(
            "github.com/alice/app".to_string(),
            None,
            "prod".to_string(),
            "AAECAw==".to_string(),
            condition,
        );
    }

    #[test]
    #[should_panic(expected = "profile must be 1-64 characters")]
    fn bad_profiles_are_rejected() {
        let mut contract = new_contract();
        set_caller(user(), ATTACHED);
        contract.store_secrets(
            "github.com/alice/app".to_string(),
            None,
            "../x".to_string(),
            "AAECAw==".to_string(),
            AccessCondition::AllowAll,
        );
    }

    fn update(contract: &mut Contract, caller: AccountId, attached: u128, access: AccessCondition) {
        set_caller(caller, attached);
        contract.update_access(
            "https://github.com/alice/app".to_string(),
            Some("main".to_string()),
            "prod".to_string(),
            access,
        );
    }

    #[test]
    fn updating_access_keeps_the_ciphertext_and_settles_the_storage_difference() {
        let mut contract = new_contract();
        store(&mut contract, Some("main"), "AAECAw==");
        let before = stored(&contract, Some("main")).unwrap();

        // A larger condition: its extra storage is paid, the surplus refunded.
        let pinned = AccessCondition::Logic {
            operator: LogicOperator::And,
            conditions: vec![
                AccessCondition::WasmHash {
                    sha256: "ab".repeat(32),
                },
                AccessCondition::Predecessor {
                    accounts: vec!["client.near".parse().unwrap()],
                },
                AccessCondition::ValidUntil {
                    timestamp_ns: 1_900_000_000_000_000_000,
                },
            ],
        };
        testing_env!(context(user(), ATTACHED).block_timestamp(42).build());
        contract.update_access(
            "https://github.com/alice/app".to_string(),
            Some("main".to_string()),
            "prod".to_string(),
            pinned.clone(),
        );
        let after = stored(&contract, Some("main")).unwrap();
        assert_eq!(after.access, pinned);
        assert_eq!(
            after.encrypted_secrets_base64,
            before.encrypted_secrets_base64
        );
        assert_eq!(after.created_at_ns, before.created_at_ns);
        assert_eq!(after.updated_at_ns, 42);
        let paid = after.storage_deposit.0 - before.storage_deposit.0;
        assert!(paid > 0);
        assert_eq!(transfers(), vec![(user(), ATTACHED - paid)]);
        let updated = event("secrets_access_updated");
        assert_eq!(updated["storage_paid"], paid.to_string());
        assert_eq!(updated["storage_refunded"], "0");
        assert_eq!(updated["repo"], "github.com/alice/app");
        assert_eq!(updated["branch"], "main");

        // Back to a smaller condition, nothing attached: the freed storage is refunded.
        update(&mut contract, user(), 0, AccessCondition::AllowAll);
        let last = stored(&contract, Some("main")).unwrap();
        assert_eq!(last.access, AccessCondition::AllowAll);
        assert!(last.storage_deposit.0 < after.storage_deposit.0);
        let freed = after.storage_deposit.0 - last.storage_deposit.0;
        assert_eq!(transfers(), vec![(user(), freed)]);
        assert_eq!(
            event("secrets_access_updated")["storage_refunded"],
            freed.to_string()
        );
    }

    #[test]
    #[should_panic(expected = "does not cover the")]
    fn a_larger_condition_without_a_deposit_fails() {
        let mut contract = new_contract();
        store(&mut contract, Some("main"), "AAECAw==");
        let larger = AccessCondition::Predecessor {
            accounts: vec![
                "client.near".parse().unwrap(),
                "other.near".parse().unwrap(),
            ],
        };
        update(&mut contract, user(), 0, larger);
    }

    #[test]
    #[should_panic(expected = "no secrets of")]
    fn only_the_owner_updates_access() {
        let mut contract = new_contract();
        store(&mut contract, Some("main"), "AAECAw==");
        update(
            &mut contract,
            stranger(),
            ATTACHED,
            AccessCondition::AllowAll,
        );
    }

    #[test]
    #[should_panic(expected = "WasmHash sha256 must be the module's sha256")]
    fn updated_conditions_are_validated() {
        let mut contract = new_contract();
        store(&mut contract, Some("main"), "AAECAw==");
        let bad = AccessCondition::WasmHash {
            sha256: "not a hash".to_string(),
        };
        update(&mut contract, user(), ATTACHED, bad);
    }

    #[test]
    fn access_conditions_keep_their_json_shape() {
        let json = r#"{"Logic":{"operator":"Or","conditions":["AllowAll",{"NearBalance":{"min":"5"}},{"Not":{"condition":{"NftOwned":{"contract":"nft.near"}}}},{"WasmHash":{"sha256":"ab"}},{"ValidUntil":{"timestamp_ns":1900000000000000000}},{"Predecessor":{"accounts":["client.near"]}}]}}"#;
        let parsed: AccessCondition = near_sdk::serde_json::from_str(json).unwrap();
        assert_eq!(near_sdk::serde_json::to_string(&parsed).unwrap(), json);
    }

    #[test]
    fn repos_normalize_to_one_form() {
        for repo in [
            "https://github.com/Alice/App.git",
            "https://github.com/alice/app",
            "github.com/alice/APP",
        ] {
            assert_eq!(normalize_repo(repo), Ok("github.com/alice/app".to_string()));
        }
        assert!(normalize_repo("gitlab.com/alice/app").is_err());
        assert!(normalize_repo("http://github.com/alice/app").is_err());
    }
}
