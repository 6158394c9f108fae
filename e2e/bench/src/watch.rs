//! One watch on ExecutionRequests that keeps, per object name, what a bench makes of the events it
//! sees, stamped the moment they arrive (polling would add up to its interval to every figure). Both
//! benches build their observer on it: `operator-bench`'s `CompletionObserver` (how each request
//! ended) and `onchain-bench`'s `TimelineObserver` (each request's milestones), both a
//! `RequestWatch` of their own record type.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use outlayer_operator::crd::ExecutionRequest;

type Records<T> = Arc<Mutex<HashMap<String, T>>>;

pub struct RequestWatch<T> {
    records: Records<T>,
    /// Whether a record is final: what [`RequestWatch::wait_all`] waits for.
    done: fn(&T) -> bool,
    changed: tokio::sync::watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl<T: Clone + Send + 'static> RequestWatch<T> {
    /// Starts watching `api` and returns once the initial list is in, so that every request created
    /// afterwards is seen from its first event. `record` folds each object event into the records
    /// and says whether anything a waiter cares about may have changed; `done` says whether a record
    /// is final.
    pub async fn start(
        api: Api<ExecutionRequest>,
        mut record: impl FnMut(&mut HashMap<String, T>, &ExecutionRequest) -> bool + Send + 'static,
        done: fn(&T) -> bool,
    ) -> anyhow::Result<Self> {
        let records: Records<T> = Arc::default();
        let (notify, changed) = tokio::sync::watch::channel(0u64);
        let (ready, listed) = tokio::sync::oneshot::channel::<()>();
        let shared = records.clone();
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
                let changed = match shared.lock() {
                    Ok(mut map) => record(&mut map, &object),
                    Err(_) => false,
                };
                if changed {
                    notify.send_modify(|n| *n += 1);
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(60), listed)
            .await
            .context("the ExecutionRequest watch did not list within 60 s")?
            .context("the ExecutionRequest watch stopped before its first list")?;
        Ok(Self {
            records,
            done,
            changed,
            task,
        })
    }

    /// Waits until the record of every one of `names` is done, calling `progress` with the count as
    /// it grows; the records in the order of `names`.
    pub async fn wait_all(
        &self,
        names: &[String],
        timeout: Duration,
        mut progress: impl FnMut(usize),
    ) -> anyhow::Result<Vec<T>> {
        let done = self.done;
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changed = self.changed.clone();
        let mut reported = 0;
        loop {
            changed.borrow_and_update();
            let finished: Vec<T> = {
                let map = self
                    .records
                    .lock()
                    .map_err(|_| anyhow::anyhow!("the observer's map is poisoned"))?;
                names
                    .iter()
                    .filter_map(|n| map.get(n).filter(|r| done(r)).cloned())
                    .collect()
            };
            if finished.len() == names.len() {
                return Ok(finished);
            }
            if finished.len() != reported {
                reported = finished.len();
                progress(reported);
            }
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => bail!("the ExecutionRequest watch stopped"),
                Err(_) => bail!(
                    "only {} of {} ExecutionRequests finished within {} s",
                    finished.len(),
                    names.len(),
                    timeout.as_secs()
                ),
            }
        }
    }
}

impl<T> Drop for RequestWatch<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}
