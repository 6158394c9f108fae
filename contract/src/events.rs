//! NEP-297 events (`standard: "near-outlayer"`). Every state change emits one; indexers and the operator
//! read them from transaction outcomes. `data` is always a one-element array, as NEP-297 conventions expect.

use near_sdk::json_types::U128;
use near_sdk::{AccountId, PublicKey, near};

use crate::types::{Evidence, PendingRequest, Pricing, ResourceLimits, ResourceMetrics};

#[near(serializers = [json])]
#[derive(Clone, Debug)]
pub struct ExecutionCompletedData {
    pub request_id: u64,
    pub sender_id: AccountId,
    /// The account charged `payment_charged` and refunded `payment_refunded`: the request's
    /// `payer_account_id`, else the sender.
    pub payer_account_id: AccountId,
    pub success: bool,
    /// The guest's error, or a timeout message when the yield expired before the operator answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub timed_out: bool,
    pub resources_used: ResourceMetrics,
    pub payment_charged: U128,
    pub payment_refunded: U128,
    /// The module and build identity the operator reported (absent on a timeout, or when the
    /// operator sent none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<Evidence>,
}

#[near(serializers = [json])]
#[derive(Clone, Debug)]
pub struct ExecutionResolvedData {
    pub request_id: u64,
    pub success: bool,
    pub two_step: bool,
}

#[near(serializers = [json])]
#[derive(Clone, Debug)]
pub struct OutputSubmittedData {
    pub request_id: u64,
    pub output_bytes: u64,
}

#[near(serializers = [json])]
#[derive(Clone, Debug)]
pub struct ExecutionCancelledData {
    pub request_id: u64,
    pub sender_id: AccountId,
    pub cancelled_by: AccountId,
    /// Where the refund went: the request's `payer_account_id`, else the sender.
    pub payer_account_id: AccountId,
    pub reason: String,
    pub payment_refunded: U128,
}

#[near(serializers = [json])]
#[derive(Clone, Debug)]
pub struct SecretsChangedData {
    pub owner: AccountId,
    pub repo: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    pub profile: String,
    /// Storage deposit taken (store) or refunded (delete).
    pub storage_deposit: U128,
}

#[near(serializers = [json])]
#[derive(Clone, Debug)]
pub struct SecretsAccessUpdatedData {
    pub owner: AccountId,
    pub repo: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    pub profile: String,
    /// Paid for storage the new condition takes beyond the old one.
    pub storage_paid: U128,
    /// Refunded for storage the new condition frees.
    pub storage_refunded: U128,
}

#[near(serializers = [json])]
#[derive(Clone, Debug)]
pub struct RoleChangedData {
    pub old_account: Option<AccountId>,
    pub new_account: Option<AccountId>,
    pub changed_by: AccountId,
}

#[near(serializers = [json])]
#[derive(Clone, Debug)]
pub struct PausedChangedData {
    pub paused: bool,
    pub changed_by: AccountId,
}

#[near(serializers = [json])]
#[derive(Clone, Debug)]
pub struct PricingUpdatedData {
    pub old_pricing: Pricing,
    pub new_pricing: Pricing,
    pub changed_by: AccountId,
}

#[near(serializers = [json])]
#[derive(Clone, Debug)]
pub struct MaxLimitsUpdatedData {
    pub old_limits: ResourceLimits,
    pub new_limits: ResourceLimits,
    pub changed_by: AccountId,
}

#[near(serializers = [json])]
#[derive(Clone, Debug)]
pub struct SecretsPubkeyUpdatedData {
    pub pubkey: String,
    pub changed_by: AccountId,
}

#[near(serializers = [json])]
#[derive(Clone, Debug)]
pub struct SeedPublicKeyUpdatedData {
    pub public_key: PublicKey,
    pub changed_by: AccountId,
}

#[near(event_json(standard = "near-outlayer"))]
pub enum OutlayerEvent {
    #[event_version("1.0.0")]
    ExecutionRequested(Vec<PendingRequest>),
    #[event_version("1.0.0")]
    OutputSubmitted(Vec<OutputSubmittedData>),
    #[event_version("1.0.0")]
    ExecutionResolved(Vec<ExecutionResolvedData>),
    #[event_version("1.0.0")]
    ExecutionCompleted(Vec<ExecutionCompletedData>),
    #[event_version("1.0.0")]
    ExecutionCancelled(Vec<ExecutionCancelledData>),
    #[event_version("1.0.0")]
    SecretsStored(Vec<SecretsChangedData>),
    #[event_version("1.0.0")]
    SecretsDeleted(Vec<SecretsChangedData>),
    #[event_version("1.0.0")]
    SecretsAccessUpdated(Vec<SecretsAccessUpdatedData>),
    #[event_version("1.0.0")]
    OwnerChanged(Vec<RoleChangedData>),
    #[event_version("1.0.0")]
    OperatorChanged(Vec<RoleChangedData>),
    #[event_version("1.0.0")]
    PricingManagerChanged(Vec<RoleChangedData>),
    #[event_version("1.0.0")]
    PausedChanged(Vec<PausedChangedData>),
    #[event_version("1.0.0")]
    PricingUpdated(Vec<PricingUpdatedData>),
    #[event_version("1.0.0")]
    MaxLimitsUpdated(Vec<MaxLimitsUpdatedData>),
    #[event_version("1.0.0")]
    SecretsPubkeyUpdated(Vec<SecretsPubkeyUpdatedData>),
    #[event_version("1.0.0")]
    SeedPublicKeyUpdated(Vec<SeedPublicKeyUpdatedData>),
}
