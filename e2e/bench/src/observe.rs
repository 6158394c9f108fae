//! Sees ExecutionRequests finish through one watch, stamping each with the client's clock the moment
//! its terminal status arrives: polling would add up to its interval to every figure.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use e2e_bench::watch::RequestWatch;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use outlayer_operator::crd::{ExecutionRequest, Phase, condition_status};

/// How one request ended, as first seen by the watch.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub observed: Instant,
    pub succeeded: bool,
    pub message: String,
    /// Server clock (1 s resolution): `metadata.creationTimestamp`.
    pub created: Option<Timestamp>,
    /// Server clock (1 s resolution): the `Succeeded` condition's `lastTransitionTime`.
    pub finished: Option<Timestamp>,
}

impl Outcome {
    /// Created → finished on the server's clock; whole seconds at best.
    pub fn server_latency(&self) -> Option<Duration> {
        let span = self.finished?.duration_since(self.created?);
        Duration::try_from(span).ok()
    }
}

/// How each ExecutionRequest ended, as first seen by one watch.
pub type CompletionObserver = RequestWatch<Outcome>;

/// Starts a [`CompletionObserver`] on `api`; returns once the initial list is in, so that every
/// request created afterwards is seen.
pub async fn observe_completions(api: Api<ExecutionRequest>) -> anyhow::Result<CompletionObserver> {
    let record = |finished: &mut HashMap<String, Outcome>, object: &ExecutionRequest| {
        let Some(outcome) = terminal_outcome(object) else {
            return false;
        };
        let name = object.metadata.name.clone().unwrap_or_default();
        finished.entry(name).or_insert(outcome);
        true
    };
    // Only finished requests have a record.
    RequestWatch::start(api, record, |_| true).await
}

fn terminal_outcome(object: &ExecutionRequest) -> Option<Outcome> {
    let observed = Instant::now();
    let status = object.status.as_ref()?;
    if !status.phase.is_some_and(Phase::is_terminal) {
        return None;
    }
    let finished = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Succeeded")
        .map(|c| c.last_transition_time.0);
    Some(Outcome {
        observed,
        succeeded: condition_status(&status.conditions, "Succeeded") == Some(true)
            && status.phase == Some(Phase::Succeeded),
        message: status.message.clone().unwrap_or_default(),
        created: object.metadata.creation_timestamp.as_ref().map(|t| t.0),
        finished,
    })
}
