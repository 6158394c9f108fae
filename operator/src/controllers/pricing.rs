//! GitOps pricing: the cluster-scoped `Pricing/default` (kept in Git, applied by Argo CD, Flux or
//! helm) is the source of truth for the contract's fees. The controller compares it with
//! `get_pricing`, calls `set_pricing` as the contract's pricing manager when they differ, and reports
//! the on-chain values, a `Synced` condition and the last transaction in status. A change made on
//! chain by someone else is drift: it is reverted, with a Warning Event.

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use near_sdk::json_types::U128;
use outlayer_contract::Pricing as ContractPricing;
use outlayer_contract::admin::MAX_FEE_YOCTO;
use tracing::{debug, info, instrument, warn};

use super::{ERROR_BACKOFF, STALE_RETRY};
use crate::chain::ChainError;
use crate::context::{Context, FIELD_MANAGER};
use crate::crd::{
    ConditionStatus, ConditionType, HasConditions, PRICING_SINGLETON, Pricing, PricingSpec,
    PricingStatus, Reason, StatusUpdate,
};
use crate::metrics::ControllerKind;
use crate::{Error, Result};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

/// After a refusal that retrying soon will not fix (not the pricing manager, contract paused…).
const REFUSED_RETRY: Duration = Duration::from_secs(30);

pub async fn reconcile(pricing: Arc<Pricing>, ctx: Arc<Context>) -> Result<Action> {
    pricing.reconcile(&ctx).await
}

pub fn error_policy(pricing: Arc<Pricing>, error: &Error, ctx: Arc<Context>) -> Action {
    ctx.metrics.reconcile_error(ControllerKind::Pricing, error);
    if matches!(error, Error::StaleObject { .. }) {
        debug!(pricing = %pricing.name_any(), %error, "stale read; reconciling again");
        return Action::requeue(STALE_RETRY);
    }
    warn!(pricing = %pricing.name_any(), %error, "pricing sync failed; retrying");
    Action::requeue(ERROR_BACKOFF)
}

/// Parses the spec's decimal strings into the contract's type, with the contract's own ceiling, so a
/// bad value is explained here instead of in a failed transaction.
pub fn contract_pricing(spec: &PricingSpec) -> std::result::Result<ContractPricing, String> {
    let fee = |name: &str, value: &str| -> std::result::Result<U128, String> {
        let parsed: u128 = value.parse().map_err(|_| {
            format!("{name} must be a non-negative integer of yoctoNEAR, got {value:?}")
        })?;
        if parsed > MAX_FEE_YOCTO {
            return Err(format!(
                "{name} {parsed} exceeds the contract's ceiling of {MAX_FEE_YOCTO} yoctoNEAR (1000 NEAR)"
            ));
        }
        Ok(U128(parsed))
    };
    Ok(ContractPricing {
        base_fee: fee("baseFee", &spec.base_fee)?,
        per_million_instructions_fee: fee(
            "perMillionInstructionsFee",
            &spec.per_million_instructions_fee,
        )?,
        per_ms_fee: fee("perMsFee", &spec.per_ms_fee)?,
        per_compile_ms_fee: fee("perCompileMsFee", &spec.per_compile_ms_fee)?,
    })
}

fn spec_of(pricing: &ContractPricing) -> PricingSpec {
    PricingSpec {
        base_fee: pricing.base_fee.0.to_string(),
        per_million_instructions_fee: pricing.per_million_instructions_fee.0.to_string(),
        per_ms_fee: pricing.per_ms_fee.0.to_string(),
        per_compile_ms_fee: pricing.per_compile_ms_fee.0.to_string(),
    }
}

impl Pricing {
    #[instrument(skip(self, ctx), fields(pricing = %self.name_any()))]
    async fn reconcile(&self, ctx: &Context) -> Result<Action> {
        if self.name_any() != PRICING_SINGLETON {
            // The CRD's CEL rule makes this unreachable through the API server.
            return Ok(Action::await_change());
        }
        let mut status = self.status.clone().unwrap_or_default();
        let generation = self.metadata.generation;
        let resync = ctx.config.on_chain.pricing_sync_interval;
        let Some(chain) = ctx.chain.clone() else {
            return Ok(Action::await_change());
        };
        let wanted = match contract_pricing(&self.spec) {
            Ok(wanted) => wanted,
            Err(message) => {
                let changed = self.set_synced(
                    &mut status,
                    ConditionStatus::False,
                    Reason::InvalidSpec,
                    &message,
                );
                status.observed_generation = generation;
                self.write_status(ctx, &status).await?;
                if changed {
                    ctx.warn(self, Reason::InvalidSpec, message).await;
                }
                return Ok(Action::await_change());
            }
        };
        let on_chain = chain.get_pricing().await.map_err(|source| Error::Chain {
            what: "reading the on-chain pricing".to_string(),
            source,
        })?;
        if on_chain == wanted {
            status.on_chain = Some(spec_of(&on_chain));
            status.observed_generation = generation;
            let changed = self.set_synced(
                &mut status,
                ConditionStatus::True,
                Reason::InSync,
                "the on-chain pricing equals the spec",
            );
            if changed || self.status.as_ref() != Some(&status) {
                self.write_status(ctx, &status).await?;
            }
            return Ok(Action::requeue(resync));
        }
        // The spec was applied before and has not changed since, yet the chain differs: someone else
        // changed it. Git wins.
        let drifted = status.observed_generation == generation
            && status.condition(ConditionType::Synced) == Some(true);
        if drifted {
            let message = format!(
                "the on-chain pricing was changed outside the cluster (base fee {} yocto, spec {}); reverting to the spec",
                on_chain.base_fee.0, wanted.base_fee.0
            );
            warn!(%message, "pricing drift");
            ctx.warn(self, Reason::OnChainDrift, message).await;
        }
        match chain.set_pricing(&wanted).await {
            Ok(outcome) => {
                let tx_hash = outcome.tx_hash.to_string();
                info!(%tx_hash, "on-chain pricing set to the spec");
                status.on_chain = Some(spec_of(&wanted));
                status.last_tx_hash = Some(tx_hash.clone());
                status.observed_generation = generation;
                self.set_synced(
                    &mut status,
                    ConditionStatus::True,
                    Reason::Applied,
                    &format!("set_pricing in transaction {tx_hash}"),
                );
                self.write_status(ctx, &status).await?;
                ctx.note(
                    self,
                    Reason::PricingApplied,
                    format!("set_pricing in transaction {tx_hash}"),
                )
                .await;
                Ok(Action::requeue(resync))
            }
            Err(error) if error.is_transient() => Err(Error::Chain {
                what: "calling set_pricing".to_string(),
                source: error,
            }),
            Err(error) => {
                let message = refusal_message(&error);
                status.on_chain = Some(spec_of(&on_chain));
                status.observed_generation = generation;
                let changed = self.set_synced(
                    &mut status,
                    ConditionStatus::False,
                    Reason::SetPricingFailed,
                    &message,
                );
                self.write_status(ctx, &status).await?;
                if changed {
                    ctx.warn(self, Reason::SetPricingFailed, message).await;
                }
                Ok(Action::requeue(REFUSED_RETRY))
            }
        }
    }

    /// Sets `Synced`; true when its status or reason changed (worth an Event).
    fn set_synced(
        &self,
        status: &mut PricingStatus,
        synced: ConditionStatus,
        reason: Reason,
        message: &str,
    ) -> bool {
        let before = status
            .find_condition(ConditionType::Synced)
            .map(|c| (c.status.clone(), c.reason.clone()));
        let after = (synced.as_str().to_string(), reason.as_str().to_string());
        let mut update = StatusUpdate::new(
            std::mem::take(status),
            self.metadata.generation,
            Time(Timestamp::now()),
        );
        update.set(ConditionType::Synced, synced, reason, message);
        *status = update.into_inner();
        before != Some(after)
    }

    async fn write_status(&self, ctx: &Context, status: &PricingStatus) -> Result<()> {
        let name = self.name_any();
        let api: Api<Pricing> = Api::all(ctx.client.clone());
        let patch = serde_json::json!({
            "apiVersion": Pricing::api_version(&()),
            "kind": Pricing::kind(&()),
            "metadata": {"resourceVersion": self.meta().resource_version},
            "status": status,
        });
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match api
            .patch_status(&name, &params, &Patch::Apply(&patch))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Err(Error::StaleObject {
                kind: "Pricing".to_string(),
                name,
            }),
            Err(e) => Err(Error::api("writing status of", &name)(e)),
        }
    }
}

fn refusal_message(error: &ChainError) -> String {
    format!(
        "set_pricing failed ({}): {error}; the operator's account must be the contract's owner or its pricing manager (set_pricing_manager)",
        error.kind()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(base: &str) -> PricingSpec {
        PricingSpec {
            base_fee: base.to_string(),
            per_million_instructions_fee: "1".to_string(),
            per_ms_fee: "2".to_string(),
            per_compile_ms_fee: "3".to_string(),
        }
    }

    #[test]
    fn spec_round_trips_through_the_contract_type() {
        let wanted = contract_pricing(&spec("1000")).unwrap();
        assert_eq!(wanted.base_fee.0, 1000);
        assert_eq!(spec_of(&wanted), spec("1000"));
    }

    #[test]
    fn fees_above_the_contract_ceiling_or_not_numbers_are_explained() {
        let over = (MAX_FEE_YOCTO + 1).to_string();
        let error = contract_pricing(&spec(&over)).unwrap_err();
        assert!(
            error.contains("baseFee") && error.contains("ceiling"),
            "{error}"
        );
        assert!(contract_pricing(&spec(&MAX_FEE_YOCTO.to_string())).is_ok());
        let error = contract_pricing(&spec("-1")).unwrap_err();
        assert!(error.contains("non-negative integer"), "{error}");
    }
}
