//! Sees ExecutionRequests finish through one watch, stamping each with the client's clock the moment
//! its terminal status arrives: polling would add up to its interval to every figure.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
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

type Finished = Arc<Mutex<HashMap<String, Outcome>>>;

pub struct Observer {
    finished: Finished,
    changed: tokio::sync::watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Observer {
    /// Starts watching `api` and returns once the initial list is in, so that every request created
    /// afterwards is seen.
    pub async fn start(api: Api<ExecutionRequest>) -> anyhow::Result<Self> {
        let finished: Finished = Arc::default();
        let (notify, changed) = tokio::sync::watch::channel(0u64);
        let (ready, listed) = tokio::sync::oneshot::channel::<()>();
        let record = finished.clone();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready);
            let mut events = watcher(api, watcher::Config::default())
                .default_backoff()
                .boxed();
            while let Some(event) = events.next().await {
                let object = match event {
                    Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => o,
                    Ok(watcher::Event::InitDone) => {
                        if let Some(ready) = ready.take() {
                            let _ = ready.send(());
                        }
                        continue;
                    }
                    // The watcher retries on its own with backoff.
                    Ok(_) | Err(_) => continue,
                };
                if let Some(outcome) = terminal_outcome(&object) {
                    let name = object.metadata.name.clone().unwrap_or_default();
                    if let Ok(mut map) = record.lock() {
                        map.entry(name).or_insert(outcome);
                    }
                    notify.send_modify(|n| *n += 1);
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(60), listed)
            .await
            .context("the ExecutionRequest watch did not list within 60 s")?
            .context("the ExecutionRequest watch stopped before its first list")?;
        Ok(Self {
            finished,
            changed,
            task,
        })
    }

    /// Waits until every one of `names` has finished, calling `progress` with the count as it grows.
    pub async fn wait_all(
        &self,
        names: &[String],
        timeout: Duration,
        mut progress: impl FnMut(usize),
    ) -> anyhow::Result<Vec<Outcome>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changed = self.changed.clone();
        let mut reported = 0;
        loop {
            changed.borrow_and_update();
            let outcomes: Vec<Outcome> = {
                let map = self
                    .finished
                    .lock()
                    .map_err(|_| anyhow::anyhow!("the observer's map is poisoned"))?;
                names.iter().filter_map(|n| map.get(n).cloned()).collect()
            };
            if outcomes.len() == names.len() {
                return Ok(outcomes);
            }
            if outcomes.len() != reported {
                reported = outcomes.len();
                progress(reported);
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => bail!("the ExecutionRequest watch stopped"),
                Err(_) => bail!(
                    "only {} of {} ExecutionRequests finished within {} s",
                    outcomes.len(),
                    names.len(),
                    timeout.as_secs()
                ),
            }
        }
    }
}

impl Drop for Observer {
    fn drop(&mut self) {
        self.task.abort();
    }
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
