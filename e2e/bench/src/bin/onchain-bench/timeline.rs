//! Watches the ExecutionRequests the chain watcher creates and stamps each one's milestones with the
//! wall clock the moment the bench sees them. The localnet runs in this process and stamps its blocks
//! with the same clock, so "request block → created / executed / reported" is exact to the watch's
//! delivery; the objects' own timestamps (creationTimestamp, conditions) have 1 s resolution.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, bail};
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
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

type Seen = Arc<Mutex<HashMap<String, Timeline>>>;

pub struct Observer {
    seen: Seen,
    changed: tokio::sync::watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Observer {
    /// Starts watching `api` and returns once the initial list is in, so that every request created
    /// afterwards is seen from its first event.
    pub async fn start(api: Api<ExecutionRequest>) -> anyhow::Result<Self> {
        let seen: Seen = Arc::default();
        let (notify, changed) = tokio::sync::watch::channel(0u64);
        let (ready, listed) = tokio::sync::oneshot::channel::<()>();
        let record = seen.clone();
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
                let now = SystemTime::now();
                let name = object.metadata.name.clone().unwrap_or_default();
                if let Ok(mut map) = record.lock() {
                    let entry = map.entry(name).or_insert_with(|| Timeline {
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
                    update(entry, &object, now);
                }
                notify.send_modify(|n| *n += 1);
            }
        });
        tokio::time::timeout(Duration::from_secs(60), listed)
            .await
            .context("the ExecutionRequest watch did not list within 60 s")?
            .context("the ExecutionRequest watch stopped before its first list")?;
        Ok(Self {
            seen,
            changed,
            task,
        })
    }

    /// Waits until every one of `names` has reached a terminal phase, calling `progress` with the
    /// count as it grows.
    pub async fn wait_all(
        &self,
        names: &[String],
        timeout: Duration,
        mut progress: impl FnMut(usize),
    ) -> anyhow::Result<Vec<Timeline>> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changed = self.changed.clone();
        let mut reported = 0;
        loop {
            changed.borrow_and_update();
            let done: Vec<Timeline> = {
                let map = self
                    .seen
                    .lock()
                    .map_err(|_| anyhow::anyhow!("the observer's map is poisoned"))?;
                names
                    .iter()
                    .filter_map(|n| map.get(n).filter(|t| t.finished.is_some()).cloned())
                    .collect()
            };
            if done.len() == names.len() {
                return Ok(done);
            }
            if done.len() != reported {
                reported = done.len();
                progress(reported);
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => bail!("the ExecutionRequest watch stopped"),
                Err(_) => bail!(
                    "only {} of {} ExecutionRequests finished within {} s",
                    done.len(),
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
