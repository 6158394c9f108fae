//! Evaluates the contract's `AccessCondition` for an execution ([`AccessRequest`]: who asks, which
//! contract called, which module would run, when), reading chain state through [`ChainState`] (the
//! operator's [`ChainClient`] in production).
//!
//! A denial names the kind of condition that failed (`NearBalance`, `Whitelist`…), never its values
//! (amounts, accounts, patterns, token ids), so it can go into status and Events as is. `And`/`Or`
//! short-circuit, so a cheap condition first saves RPC calls.

use std::fmt;
use std::future::Future;
use std::pin::Pin;

use near_primitives::types::AccountId;
use outlayer_contract::validation::validate_access_condition;
use outlayer_contract::{AccessCondition, LogicOperator};
use serde::Deserialize;
use serde_json::json;
use tracing::debug;

use crate::chain::{ChainClient, ChainError};

/// Compiled patterns are bounded (the contract bounds their length to 256): a hostile pattern cannot
/// make the operator build a huge automaton.
const PATTERN_SIZE_LIMIT: usize = 256 * 1024;
const PATTERN_NEST_LIMIT: u32 = 32;

/// The chain reads access conditions need. Every method answers for the latest final state.
pub trait ChainState: Sync {
    /// Liquid balance in yoctoNEAR; 0 for an account that does not exist.
    fn near_balance(
        &self,
        account: &AccountId,
    ) -> impl Future<Output = Result<u128, ChainReadError>> + Send;
    /// NEP-141 `ft_balance_of`.
    fn ft_balance(
        &self,
        token: &AccountId,
        account: &AccountId,
    ) -> impl Future<Output = Result<u128, ChainReadError>> + Send;
    /// NEP-171 `nft_token(token_id)`'s owner; `None` if no such token.
    fn nft_owner(
        &self,
        contract: &AccountId,
        token_id: &str,
    ) -> impl Future<Output = Result<Option<AccountId>, ChainReadError>> + Send;
    /// NEP-181 `nft_tokens_for_owner(account, limit 1)` is not empty.
    fn owns_any_nft(
        &self,
        contract: &AccountId,
        account: &AccountId,
    ) -> impl Future<Output = Result<bool, ChainReadError>> + Send;
}

/// A chain read failed. The message names the RPC method and the kind of failure only, not the
/// condition's contract or values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{method} failed ({kind}{})", if *.transient { ", transient" } else { "" })]
pub struct ChainReadError {
    pub method: &'static str,
    pub kind: &'static str,
    pub transient: bool,
}

impl ChainReadError {
    fn from_chain(method: &'static str, error: &ChainError) -> Self {
        debug!(method, error = %error, "chain read for an access condition failed");
        Self {
            method,
            kind: error.kind(),
            transient: error.is_transient(),
        }
    }
}

/// Why access was refused: only condition kinds appear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    reason: String,
}

impl Denial {
    fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
        }
    }

    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "access denied: {}", self.reason)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    /// The condition could not be decided; retry later if `transient`.
    #[error("cannot evaluate a {condition} access condition: {source}")]
    ChainRead {
        condition: &'static str,
        #[source]
        source: ChainReadError,
    },
    #[error("the access condition is malformed: {0}")]
    Malformed(String),
}

impl AccessError {
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::ChainRead { source, .. } if source.transient)
    }
}

/// What an access condition is judged against. Whatever is unknown makes the conditions that need it
/// fail (never pass): no predecessor → `Predecessor` is not met, no module hash → `WasmHash` is not met.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessRequest<'a> {
    /// The account the account conditions (`Whitelist`, `AccountPattern`, `NearBalance`, `FtBalance`,
    /// `NftOwned`) are about: an on-chain request's `sender_id`; for a kubectl request, which has no
    /// authenticated account, the secrets' owner.
    pub requester: &'a AccountId,
    /// The contract that called `request_execution`: the on-chain request's `sender_id` (the contract
    /// records its predecessor there). `None` for a request made without the chain.
    pub predecessor: Option<&'a AccountId>,
    /// sha256 (hex) of the module the execution will run, once known.
    pub module_sha256: Option<&'a str>,
    /// The moment `ValidUntil` is judged at, in ns since the Unix epoch: an on-chain request's
    /// `created_at_ns` (its block timestamp, from `get_request`), else the current time.
    pub at_ns: u64,
}

impl<'a> AccessRequest<'a> {
    /// A request by `requester` judged now, with no calling contract and no module known yet.
    pub fn new(requester: &'a AccountId) -> Self {
        Self {
            requester,
            predecessor: None,
            module_sha256: None,
            at_ns: now_ns(),
        }
    }

    /// Made on chain by the contract `predecessor` (the request's `sender_id`).
    pub fn called_by(self, predecessor: &'a AccountId) -> Self {
        Self {
            predecessor: Some(predecessor),
            ..self
        }
    }

    /// The execution runs the module with this sha256.
    pub fn running(self, module_sha256: &'a str) -> Self {
        Self {
            module_sha256: Some(module_sha256),
            ..self
        }
    }

    /// `ValidUntil` is judged at this time (ns since the Unix epoch).
    pub fn at(self, at_ns: u64) -> Self {
        Self { at_ns, ..self }
    }
}

impl<'a> From<&'a AccountId> for AccessRequest<'a> {
    fn from(requester: &'a AccountId) -> Self {
        Self::new(requester)
    }
}

/// Nanoseconds since the Unix epoch (0 if the clock is before it, u64::MAX past 2554).
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// `Ok(Ok(()))`: granted; `Ok(Err(denial))`: refused; `Err`: undecidable (chain unreachable…).
pub async fn evaluate<'a, S: ChainState>(
    condition: &AccessCondition,
    request: impl Into<AccessRequest<'a>>,
    chain: &S,
) -> Result<Result<(), Denial>, AccessError> {
    // Shape bounds (depth 8, 64 nodes) as the contract enforces: in-cluster Secrets skip the contract.
    validate_access_condition(condition).map_err(AccessError::Malformed)?;
    let request = request.into();
    eval(condition, &request, chain).await
}

pub fn kind(condition: &AccessCondition) -> &'static str {
    match condition {
        AccessCondition::AllowAll => "AllowAll",
        AccessCondition::Whitelist { .. } => "Whitelist",
        AccessCondition::AccountPattern { .. } => "AccountPattern",
        AccessCondition::NearBalance { .. } => "NearBalance",
        AccessCondition::FtBalance { .. } => "FtBalance",
        AccessCondition::NftOwned { .. } => "NftOwned",
        AccessCondition::Logic {
            operator: LogicOperator::And,
            ..
        } => "And",
        AccessCondition::Logic {
            operator: LogicOperator::Or,
            ..
        } => "Or",
        AccessCondition::Not { .. } => "Not",
        AccessCondition::WasmHash { .. } => "WasmHash",
        AccessCondition::ValidUntil { .. } => "ValidUntil",
        AccessCondition::Predecessor { .. } => "Predecessor",
    }
}

type Outcome = Result<Result<(), Denial>, AccessError>;

fn eval<'a, S: ChainState>(
    condition: &'a AccessCondition,
    request: &'a AccessRequest<'a>,
    chain: &'a S,
) -> Pin<Box<dyn Future<Output = Outcome> + Send + 'a>> {
    Box::pin(async move {
        let requester = request.requester;
        let name = kind(condition);
        let read = |source| AccessError::ChainRead {
            condition: name,
            source,
        };
        let holds = match condition {
            AccessCondition::AllowAll => true,
            AccessCondition::Whitelist { accounts } => accounts.contains(requester),
            AccessCondition::AccountPattern { regex } => match compile_pattern(regex) {
                Some(pattern) => pattern.is_match(requester.as_str()),
                None => {
                    return Ok(Err(Denial::new(
                        "the AccountPattern is not a valid pattern",
                    )));
                }
            },
            AccessCondition::NearBalance { min } => {
                chain.near_balance(requester).await.map_err(read)? >= min.0
            }
            AccessCondition::FtBalance { contract, min } => {
                chain.ft_balance(contract, requester).await.map_err(read)? >= min.0
            }
            AccessCondition::NftOwned {
                contract,
                token_id: Some(token_id),
            } => {
                chain
                    .nft_owner(contract, token_id)
                    .await
                    .map_err(read)?
                    .as_ref()
                    == Some(requester)
            }
            AccessCondition::NftOwned {
                contract,
                token_id: None,
            } => chain
                .owns_any_nft(contract, requester)
                .await
                .map_err(read)?,
            AccessCondition::WasmHash { sha256 } => request
                .module_sha256
                .is_some_and(|module| module.eq_ignore_ascii_case(sha256)),
            AccessCondition::ValidUntil { timestamp_ns } => request.at_ns <= *timestamp_ns,
            AccessCondition::Predecessor { accounts } => request
                .predecessor
                .is_some_and(|predecessor| accounts.contains(predecessor)),
            AccessCondition::Logic {
                operator: LogicOperator::And,
                conditions,
            } => {
                for inner in conditions {
                    if let Err(denial) = eval(inner, request, chain).await? {
                        return Ok(Err(denial));
                    }
                }
                true
            }
            AccessCondition::Logic {
                operator: LogicOperator::Or,
                conditions,
            } => {
                let mut failed = Vec::with_capacity(conditions.len());
                for inner in conditions {
                    match eval(inner, request, chain).await? {
                        Ok(()) => return Ok(Ok(())),
                        Err(_) => failed.push(kind(inner)),
                    }
                }
                return Ok(Err(Denial::new(format!(
                    "none of the Or conditions held ({})",
                    failed.join(", ")
                ))));
            }
            AccessCondition::Not { condition: inner } => {
                return Ok(match eval(inner, request, chain).await? {
                    Ok(()) => Err(Denial::new(format!("Not({}) failed: it held", kind(inner)))),
                    Err(_) => Ok(()),
                });
            }
        };
        Ok(if holds {
            Ok(())
        } else {
            Err(Denial::new(format!("{name} condition not met")))
        })
    })
}

/// The whole account id must match (the pattern is anchored), like a NEAR account regex is meant.
fn compile_pattern(pattern: &str) -> Option<regex::Regex> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})$"))
        .size_limit(PATTERN_SIZE_LIMIT)
        .dfa_size_limit(PATTERN_SIZE_LIMIT)
        .nest_limit(PATTERN_NEST_LIMIT)
        .build()
        .ok()
}

#[derive(Deserialize)]
struct NftToken {
    owner_id: AccountId,
}

fn parse_u128(method: &'static str, text: &str) -> Result<u128, ChainReadError> {
    text.parse().map_err(|_| ChainReadError {
        method,
        kind: "Decode",
        transient: false,
    })
}

impl ChainState for ChainClient {
    async fn near_balance(&self, account: &AccountId) -> Result<u128, ChainReadError> {
        match self.view_account(account).await {
            Ok(view) => Ok(view.amount.as_yoctonear()),
            // nearcore's UnknownAccount ("account … does not exist while viewing"): no balance at all.
            Err(ChainError::Rpc { message, .. }) if message.contains("does not exist") => Ok(0),
            Err(e) => Err(ChainReadError::from_chain("view_account", &e)),
        }
    }

    async fn ft_balance(
        &self,
        token: &AccountId,
        account: &AccountId,
    ) -> Result<u128, ChainReadError> {
        let balance: String = self
            .view_call(token, "ft_balance_of", &json!({ "account_id": account }))
            .await
            .map_err(|e| ChainReadError::from_chain("ft_balance_of", &e))?;
        parse_u128("ft_balance_of", &balance)
    }

    async fn nft_owner(
        &self,
        contract: &AccountId,
        token_id: &str,
    ) -> Result<Option<AccountId>, ChainReadError> {
        let token: Option<NftToken> = self
            .view_call(contract, "nft_token", &json!({ "token_id": token_id }))
            .await
            .map_err(|e| ChainReadError::from_chain("nft_token", &e))?;
        Ok(token.map(|t| t.owner_id))
    }

    async fn owns_any_nft(
        &self,
        contract: &AccountId,
        account: &AccountId,
    ) -> Result<bool, ChainReadError> {
        let tokens: Vec<serde_json::Value> = self
            .view_call(
                contract,
                "nft_tokens_for_owner",
                &json!({ "account_id": account, "from_index": "0", "limit": 1 }),
            )
            .await
            .map_err(|e| ChainReadError::from_chain("nft_tokens_for_owner", &e))?;
        Ok(!tokens.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Mutex;

    use near_sdk::json_types::U128;

    use super::*;

    /// In-memory chain state for the evaluator's logic; records which reads were made.
    #[derive(Default)]
    struct State {
        near: BTreeMap<String, u128>,
        ft: BTreeMap<(String, String), u128>,
        nft_tokens: BTreeMap<(String, String), String>,
        unreachable: bool,
        reads: Mutex<Vec<&'static str>>,
    }

    impl State {
        fn read(&self, method: &'static str) -> Result<(), ChainReadError> {
            self.reads.lock().unwrap().push(method);
            if self.unreachable {
                return Err(ChainReadError {
                    method,
                    kind: "Timeout",
                    transient: true,
                });
            }
            Ok(())
        }
    }

    impl ChainState for State {
        async fn near_balance(&self, account: &AccountId) -> Result<u128, ChainReadError> {
            self.read("view_account")?;
            Ok(self.near.get(account.as_str()).copied().unwrap_or(0))
        }

        async fn ft_balance(
            &self,
            token: &AccountId,
            account: &AccountId,
        ) -> Result<u128, ChainReadError> {
            self.read("ft_balance_of")?;
            Ok(self
                .ft
                .get(&(token.to_string(), account.to_string()))
                .copied()
                .unwrap_or(0))
        }

        async fn nft_owner(
            &self,
            contract: &AccountId,
            token_id: &str,
        ) -> Result<Option<AccountId>, ChainReadError> {
            self.read("nft_token")?;
            Ok(self
                .nft_tokens
                .get(&(contract.to_string(), token_id.to_string()))
                .map(|owner| owner.parse().unwrap()))
        }

        async fn owns_any_nft(
            &self,
            contract: &AccountId,
            account: &AccountId,
        ) -> Result<bool, ChainReadError> {
            self.read("nft_tokens_for_owner")?;
            let owners: BTreeSet<&String> = self
                .nft_tokens
                .iter()
                .filter(|((c, _), _)| c == contract.as_str())
                .map(|(_, owner)| owner)
                .collect();
            Ok(owners.contains(&account.to_string()))
        }
    }

    fn id(s: &str) -> AccountId {
        s.parse().unwrap()
    }

    fn cond(json: &str) -> AccessCondition {
        serde_json::from_str(json).unwrap()
    }

    fn state() -> State {
        State {
            near: BTreeMap::from([("alice.near".into(), 10u128.pow(24))]),
            ft: BTreeMap::from([(("usdc.near".into(), "alice.near".into()), 500)]),
            nft_tokens: BTreeMap::from([(("nft.near".into(), "t-1".into()), "alice.near".into())]),
            ..State::default()
        }
    }

    async fn check(condition: &str, who: &str) -> Result<(), Denial> {
        evaluate(&cond(condition), &id(who), &state())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn leaf_conditions_follow_chain_state() {
        let cases: &[(&str, &str, bool)] = &[
            (r#""AllowAll""#, "bob.near", true),
            (
                r#"{"Whitelist":{"accounts":["alice.near"]}}"#,
                "alice.near",
                true,
            ),
            (
                r#"{"Whitelist":{"accounts":["alice.near"]}}"#,
                "bob.near",
                false,
            ),
            (
                r#"{"AccountPattern":{"regex":"[a-z]+\\.near"}}"#,
                "alice.near",
                true,
            ),
            // Anchored: a suffix match is not enough.
            (
                r#"{"AccountPattern":{"regex":"alice"}}"#,
                "alice.near",
                false,
            ),
            (
                r#"{"AccountPattern":{"regex":"(unclosed"}}"#,
                "alice.near",
                false,
            ),
            (
                r#"{"NearBalance":{"min":"1000000000000000000000000"}}"#,
                "alice.near",
                true,
            ),
            (
                r#"{"NearBalance":{"min":"1000000000000000000000001"}}"#,
                "alice.near",
                false,
            ),
            (r#"{"NearBalance":{"min":"1"}}"#, "nobody.near", false),
            (
                r#"{"FtBalance":{"contract":"usdc.near","min":"500"}}"#,
                "alice.near",
                true,
            ),
            (
                r#"{"FtBalance":{"contract":"usdc.near","min":"501"}}"#,
                "alice.near",
                false,
            ),
            (
                r#"{"NftOwned":{"contract":"nft.near","token_id":"t-1"}}"#,
                "alice.near",
                true,
            ),
            (
                r#"{"NftOwned":{"contract":"nft.near","token_id":"t-1"}}"#,
                "bob.near",
                false,
            ),
            (
                r#"{"NftOwned":{"contract":"nft.near","token_id":"t-2"}}"#,
                "alice.near",
                false,
            ),
            (
                r#"{"NftOwned":{"contract":"nft.near"}}"#,
                "alice.near",
                true,
            ),
            (r#"{"NftOwned":{"contract":"nft.near"}}"#, "bob.near", false),
        ];
        for (condition, who, granted) in cases {
            assert_eq!(
                check(condition, who).await.is_ok(),
                *granted,
                "{condition} for {who}"
            );
        }
    }

    #[tokio::test]
    async fn logic_combines_and_short_circuits() {
        let and = r#"{"Logic":{"operator":"And","conditions":[{"Whitelist":{"accounts":["alice.near"]}},{"NearBalance":{"min":"5"}}]}}"#;
        assert!(check(and, "alice.near").await.is_ok());
        let denied = check(and, "bob.near").await.unwrap_err();
        assert_eq!(denied.reason(), "Whitelist condition not met");
        let s = state();
        evaluate(&cond(and), &id("bob.near"), &s)
            .await
            .unwrap()
            .unwrap_err();
        assert!(
            s.reads.lock().unwrap().is_empty(),
            "And stops at the first failure"
        );

        let or =
            r#"{"Logic":{"operator":"Or","conditions":["AllowAll",{"NearBalance":{"min":"5"}}]}}"#;
        let s = state();
        evaluate(&cond(or), &id("bob.near"), &s)
            .await
            .unwrap()
            .unwrap();
        assert!(
            s.reads.lock().unwrap().is_empty(),
            "Or stops at the first success"
        );
        let or_fail = r#"{"Logic":{"operator":"Or","conditions":[{"Whitelist":{"accounts":["x.near"]}},{"FtBalance":{"contract":"usdc.near","min":"9"}}]}}"#;
        assert_eq!(
            check(or_fail, "bob.near").await.unwrap_err().reason(),
            "none of the Or conditions held (Whitelist, FtBalance)"
        );

        let not = r#"{"Not":{"condition":{"Whitelist":{"accounts":["mallory.near"]}}}}"#;
        assert!(check(not, "alice.near").await.is_ok());
        assert!(check(not, "mallory.near").await.is_err());
    }

    #[tokio::test]
    async fn denials_never_reveal_values() {
        let secret_values = [
            "mallory.near",
            "123456789",
            "usdc.near",
            "t-1",
            "nft.near",
            "zz",
        ];
        let conditions = [
            r#"{"Whitelist":{"accounts":["mallory.near"]}}"#,
            r#"{"NearBalance":{"min":"123456789123456789123456789"}}"#,
            r#"{"FtBalance":{"contract":"usdc.near","min":"123456789"}}"#,
            r#"{"NftOwned":{"contract":"nft.near","token_id":"t-1"}}"#,
            r#"{"AccountPattern":{"regex":"zz"}}"#,
            r#"{"Not":{"condition":{"NftOwned":{"contract":"nft.near","token_id":"t-1"}}}}"#,
        ];
        for condition in conditions {
            let who = if condition.starts_with(r#"{"Not"#) {
                "alice.near"
            } else {
                "bob.near"
            };
            let denial = check(condition, who).await.unwrap_err();
            let shown = format!("{denial} {denial:?}");
            for value in secret_values {
                assert!(!shown.contains(value), "{condition}: {shown}");
            }
        }
        let mut unreachable = state();
        unreachable.unreachable = true;
        let error = evaluate(&cond(conditions[2]), &id("bob.near"), &unreachable)
            .await
            .unwrap_err();
        assert!(error.is_transient());
        let shown = format!("{error} {error:?}");
        assert!(
            !shown.contains("usdc.near") && !shown.contains("123456789"),
            "{shown}"
        );
    }

    #[tokio::test]
    async fn oversized_conditions_are_refused_before_any_read() {
        let mut condition = AccessCondition::NearBalance { min: U128(1) };
        for _ in 0..9 {
            condition = AccessCondition::Not {
                condition: Box::new(condition),
            };
        }
        let s = state();
        let error = evaluate(&condition, &id("alice.near"), &s)
            .await
            .unwrap_err();
        assert!(matches!(error, AccessError::Malformed(_)));
        assert!(s.reads.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn pinning_conditions_follow_the_module_the_caller_and_the_time() {
        let module = "ab".repeat(32);
        let other_module = "cd".repeat(32);
        let alice = id("alice.near");
        let client = id("client.near");
        let stranger = id("stranger.near");
        let t = 1_900_000_000_000_000_000u64;
        let wasm = format!(r#"{{"WasmHash":{{"sha256":"{module}"}}}}"#);
        let until = format!(r#"{{"ValidUntil":{{"timestamp_ns":{t}}}}}"#);
        let caller = r#"{"Predecessor":{"accounts":["client.near"]}}"#;
        let pinned =
            format!(r#"{{"Logic":{{"operator":"And","conditions":[{wasm},{caller},{until}]}}}}"#);
        let not_wasm = format!(r#"{{"Not":{{"condition":{wasm}}}}}"#);
        let upper = module.to_uppercase();
        let base = AccessRequest::new(&alice).at(t);
        let cases: Vec<(&str, &str, AccessRequest<'_>, bool)> = vec![
            ("the exact module", &wasm, base.running(&module), true),
            (
                "the module, hex case aside",
                &wasm,
                base.running(&upper),
                true,
            ),
            ("another module", &wasm, base.running(&other_module), false),
            ("no module known yet", &wasm, base, false),
            ("at the deadline", &until, base, true),
            ("before the deadline", &until, base.at(t - 1), true),
            ("after the deadline", &until, base.at(t + 1), false),
            ("the allowed caller", caller, base.called_by(&client), true),
            ("another caller", caller, base.called_by(&stranger), false),
            ("no caller (kubectl)", caller, base, false),
            (
                "the requester is not the caller",
                r#"{"Predecessor":{"accounts":["alice.near"]}}"#,
                base,
                false,
            ),
            (
                "all pins hold",
                &pinned,
                base.running(&module).called_by(&client),
                true,
            ),
            (
                "one pin fails",
                &pinned,
                base.running(&other_module).called_by(&client),
                false,
            ),
            (
                "Not(WasmHash) keeps one module out",
                &not_wasm,
                base.running(&other_module),
                true,
            ),
        ];
        for (case, condition, request, granted) in cases {
            let s = state();
            let verdict = evaluate(&cond(condition), request, &s).await.unwrap();
            assert_eq!(verdict.is_ok(), granted, "{case}: {condition} {verdict:?}");
            assert!(s.reads.lock().unwrap().is_empty(), "{case}: no chain read");
            if let Err(denial) = verdict {
                let shown = denial.to_string();
                for value in [module.as_str(), "client.near", "1900000000000000000"] {
                    assert!(!shown.contains(value), "{case}: {shown}");
                }
            }
        }
        let denied = evaluate(&cond(&pinned), base.running(&module), &state())
            .await
            .unwrap()
            .unwrap_err();
        assert_eq!(denied.reason(), "Predecessor condition not met");
    }

    #[test]
    fn a_bare_account_is_judged_now_with_nothing_else_known() {
        let alice = id("alice.near");
        let before = now_ns();
        let request = AccessRequest::from(&alice);
        assert_eq!(request.requester, &alice);
        assert_eq!((request.predecessor, request.module_sha256), (None, None));
        assert!(request.at_ns >= before && request.at_ns <= now_ns());
    }

    #[test]
    fn pathological_patterns_are_bounded() {
        assert!(compile_pattern("(a{1000}){1000}").is_none());
        let nested = format!("{}a{}", "(".repeat(100), ")".repeat(100));
        assert!(compile_pattern(&nested).is_none());
    }
}
