//! Watches the ExecutionRequests the chain watcher creates and stamps each one's milestones with the
//! wall clock the moment the bench sees them. The localnet runs in this process and stamps its blocks
//! with the same clock, so "request block → created / executed / reported" is exact to the watch's
//! delivery; the objects' own timestamps (creationTimestamp, conditions) have 1 s resolution.

use std::collections::HashMap;
use std::time::SystemTime;

use e2e_bench::watch::RequestWatch;
use kube::api::Api;
use outlayer_operator::crd::{ExecutionRequest, Phase, condition_status};

/// What the bench saw of one on-chain ExecutionRequest.
#[derive(Clone, Debug)]
pub struct Timeline {
    /// `spec.onChain.blockHeight`: the block the contract stored the request in.
    pub block_height: Option<u64>,
    /// The first watch event for the object.
    pub seen: SystemTime,
    /// The first event with `Executed=True` (the run's result recorded).
    pub executed: Option<SystemTime>,
    /// The first event with a terminal phase (for a reported request: after the resolve
    /// transaction's outcome came back).
    pub finished: Option<SystemTime>,
    pub phase: Option<Phase>,
    pub reported: Option<bool>,
    /// `status.cacheHit`: whether the module was already compiled when the request arrived.
    pub cache_hit: Option<bool>,
    /// `status.txHash`: the resolve transaction.
    pub tx_hash: Option<String>,
    pub message: String,
}

/// Each on-chain ExecutionRequest's milestones, stamped as one watch delivers them; a timeline is
/// done once the request reached a terminal phase.
pub type TimelineObserver = RequestWatch<Timeline>;

/// Starts a [`TimelineObserver`] on `api`; returns once the initial list is in, so that every
/// request created afterwards is seen from its first event.
pub async fn observe_timelines(api: Api<ExecutionRequest>) -> anyhow::Result<TimelineObserver> {
    let record = |seen: &mut HashMap<String, Timeline>, object: &ExecutionRequest| {
        let now = SystemTime::now();
        let name = object.metadata.name.clone().unwrap_or_default();
        let entry = seen.entry(name).or_insert_with(|| Timeline {
            block_height: None,
            seen: now,
            executed: None,
            finished: None,
            phase: None,
            reported: None,
            cache_hit: None,
            tx_hash: None,
            message: String::new(),
        });
        update(entry, object, now);
        true
    };
    RequestWatch::start(api, record, |t| t.finished.is_some()).await
}

fn update(entry: &mut Timeline, object: &ExecutionRequest, now: SystemTime) {
    if let Some(on_chain) = &object.spec.on_chain {
        entry.block_height = Some(on_chain.block_height);
    }
    let Some(status) = &object.status else {
        return;
    };
    if entry.executed.is_none() && condition_status(&status.conditions, "Executed") == Some(true) {
        entry.executed = Some(now);
    }
    if entry.finished.is_none() && status.phase.is_some_and(Phase::is_terminal) {
        entry.finished = Some(now);
        entry.phase = status.phase;
        entry.reported = condition_status(&status.conditions, "Reported");
        entry.cache_hit = status.cache_hit;
        entry.tx_hash = status.tx_hash.clone();
        entry.message = status.message.clone().unwrap_or_default();
    }
}
