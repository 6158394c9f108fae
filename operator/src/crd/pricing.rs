//! `Pricing`: the contract's fees, kept in Git and applied on chain by the operator (GitOps).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::conditions::{HasConditions, conditions_schema};

/// The name of the one Pricing object the operator reads.
pub const PRICING_SINGLETON: &str = "default";

/// Fees in yoctoNEAR as decimal strings (u128 does not fit a JSON number). The contract caps each fee
/// at 1000 NEAR (1e27 yocto, 28 digits).
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[kube(
    group = "outlayer.dev",
    version = "v1alpha1",
    kind = "Pricing",
    plural = "pricings",
    shortname = "price",
    category = "outlayer",
    status = "PricingStatus",
    validation = kube::core::Rule::new("self.metadata.name == 'default'").message("Pricing is a singleton named 'default'"),
    printcolumn = r#"{"name":"Synced","type":"string","jsonPath":".status.conditions[?(@.type==\"Synced\")].status"}"#,
    printcolumn = r#"{"name":"Base","type":"string","jsonPath":".spec.baseFee"}"#,
    printcolumn = r#"{"name":"PerMInstr","type":"string","jsonPath":".spec.perMillionInstructionsFee"}"#,
    printcolumn = r#"{"name":"PerMs","type":"string","jsonPath":".spec.perMsFee"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct PricingSpec {
    #[schemars(regex(pattern = r"^(0|[1-9][0-9]{0,27})$"))]
    pub base_fee: String,
    #[schemars(regex(pattern = r"^(0|[1-9][0-9]{0,27})$"))]
    pub per_million_instructions_fee: String,
    #[schemars(regex(pattern = r"^(0|[1-9][0-9]{0,27})$"))]
    pub per_ms_fee: String,
    #[schemars(regex(pattern = r"^(0|[1-9][0-9]{0,27})$"))]
    pub per_compile_ms_fee: String,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PricingStatus {
    /// `Synced`: the on-chain pricing equals the spec.
    #[serde(default)]
    #[schemars(schema_with = "conditions_schema")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// What `get_pricing` returned at the last check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_chain: Option<PricingSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_tx_hash: Option<String>,
}

impl HasConditions for PricingStatus {
    fn conditions(&self) -> &[Condition] {
        &self.conditions
    }
    fn conditions_mut(&mut self) -> &mut Vec<Condition> {
        &mut self.conditions
    }
}
