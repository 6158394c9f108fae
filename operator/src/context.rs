//! What every reconcile needs, shared as `Arc<Context>`: no globals.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use tracing::warn;

use crate::chain::{ChainClient, ChainError};
use crate::config::OperatorConfig;
use crate::crd::{CompileJob, Reason};
use crate::metrics::Metrics;
use crate::sealing::Keyring;

/// The field manager of everything the operator writes with server-side apply.
pub const FIELD_MANAGER: &str = "outlayer-operator";

pub struct Context {
    pub client: Client,
    pub config: OperatorConfig,
    pub metrics: Arc<Metrics>,
    /// The NEAR client, when the operator serves a contract; without it on-chain requests wait.
    pub chain: Option<Arc<ChainClient>>,
    /// The chain's head height, refreshed at most every block time, for yield-deadline decisions.
    pub head: HeadCache,
    /// The contract's limit caps (`get_max_limits`), refreshed at most every minute: kubectl requests
    /// are held to them too.
    pub max_limits: Mutex<Option<(crate::chain::ResourceLimits, Instant)>>,
    /// The sealing keys, once loaded (or created) from their Secret; `None` until then.
    keyring: RwLock<Option<Arc<Keyring>>>,
    /// The seed key, once loaded (or created) from its Secret; `None` until then.
    seed_key: RwLock<Option<Arc<crate::seed::SeedKey>>>,
    /// The warm pool, while this replica leads and `--warm-pool` is set.
    pool: std::sync::OnceLock<Arc<crate::pool::WarmPool>>,
    /// The watch cache of executor pods (cold and claimed warm ones), while the controllers run.
    executor_pods: std::sync::OnceLock<Store<Pod>>,
    /// The watch cache of CompileJobs, while the controllers run.
    compile_jobs: std::sync::OnceLock<Store<CompileJob>>,
    /// Finished requests whose children (pods, input, secrets) this replica has deleted, by uid. A
    /// finished request starts nothing new, so once is enough: the reconciles its pods' terminating
    /// events bring then ask the API server nothing.
    children_deleted: UidSet,
    recorder: Recorder,
}

/// How many finished requests [`Context::children_deleted`] remembers before it starts over.
const CHILDREN_DELETED_BOUND: usize = 100_000;

/// A set of object uids this replica has done something for, in memory only: forgotten on a
/// restart, and started over when it reaches its bound. What it saves must be safe to redo.
#[derive(Debug)]
pub struct UidSet {
    uids: Mutex<HashSet<String>>,
    bound: usize,
}

impl UidSet {
    pub fn new(bound: usize) -> Self {
        Self {
            uids: Mutex::new(HashSet::new()),
            bound,
        }
    }

    pub fn contains(&self, uid: &str) -> bool {
        self.lock().contains(uid)
    }

    pub fn insert(&self, uid: &str) {
        let mut uids = self.lock();
        if uids.len() >= self.bound {
            uids.clear();
        }
        uids.insert(uid.to_string());
    }

    pub fn remove(&self, uid: &str) {
        self.lock().remove(uid);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        // A poisoned lock still holds a valid set; a lost entry only costs a redo.
        self.uids.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Context {
    pub fn new(client: Client, config: OperatorConfig, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.to_string(),
            instance,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            head: HeadCache::new(config.on_chain.expected_block_time),
            max_limits: Mutex::new(None),
            client,
            config,
            metrics: Arc::new(Metrics::new()),
            chain: None,
            keyring: RwLock::new(None),
            seed_key: RwLock::new(None),
            pool: std::sync::OnceLock::new(),
            executor_pods: std::sync::OnceLock::new(),
            compile_jobs: std::sync::OnceLock::new(),
            children_deleted: UidSet::new(CHILDREN_DELETED_BOUND),
        }
    }

    /// The watch cache of executor pods, if the controllers keep one.
    pub fn executor_pods(&self) -> Option<&Store<Pod>> {
        self.executor_pods.get()
    }

    /// Reads ended executor pods from `store` from now on (set once).
    pub fn set_executor_pods(&self, store: Store<Pod>) {
        let _ = self.executor_pods.set(store);
    }

    /// The watch cache of CompileJobs, if the controllers keep one.
    pub fn compile_jobs(&self) -> Option<&Store<CompileJob>> {
        self.compile_jobs.get()
    }

    /// Reads Ready CompileJobs from `store` from now on (set once).
    pub fn set_compile_jobs(&self, store: Store<CompileJob>) {
        let _ = self.compile_jobs.set(store);
    }

    /// Finished requests whose children this replica has deleted.
    pub fn children_deleted(&self) -> &UidSet {
        &self.children_deleted
    }

    /// The warm pool, if one runs.
    pub fn pool(&self) -> Option<&Arc<crate::pool::WarmPool>> {
        self.pool.get()
    }

    /// Hands executions to `pool` from now on (set once).
    pub fn set_pool(&self, pool: Arc<crate::pool::WarmPool>) {
        let _ = self.pool.set(pool);
    }

    /// The sealing keys, if loaded.
    pub fn keyring(&self) -> Option<Arc<Keyring>> {
        self.keyring
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn set_keyring(&self, keyring: Keyring) {
        *self.keyring.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(keyring));
    }

    /// The seed key, if loaded.
    pub fn seed_key(&self) -> Option<Arc<crate::seed::SeedKey>> {
        self.seed_key
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn set_seed_key(&self, key: Arc<crate::seed::SeedKey>) {
        *self
            .seed_key
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(key);
    }

    /// Serves on-chain requests through `chain`.
    pub fn with_chain(mut self, chain: Arc<ChainClient>) -> Self {
        self.chain = Some(chain);
        self
    }

    /// Shares `metrics` (the registry the `/metrics` endpoint serves) instead of a private one.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Publishes a Normal Event about `object`: a step of its normal life.
    pub async fn note<K>(&self, object: &K, reason: Reason, note: impl Into<String>)
    where
        K: kube::Resource<DynamicType = ()>,
    {
        self.send_event(object, EventType::Normal, reason, note.into())
            .await;
    }

    /// Publishes a Warning Event about `object`: something failed or was refused.
    pub async fn warn<K>(&self, object: &K, reason: Reason, note: impl Into<String>)
    where
        K: kube::Resource<DynamicType = ()>,
    {
        self.send_event(object, EventType::Warning, reason, note.into())
            .await;
    }

    /// Publishes `note` (an Event decided by a pure step) about `object`.
    pub async fn publish<K>(&self, object: &K, note: Note)
    where
        K: kube::Resource<DynamicType = ()>,
    {
        match note {
            Note::Normal(reason, message) => self.note(object, reason, message).await,
            Note::Warning(reason, message) => self.warn(object, reason, message).await,
        }
    }

    /// An Event that cannot be written is logged, never fatal: the status carries the same facts.
    async fn send_event<K>(&self, object: &K, type_: EventType, reason: Reason, note: String)
    where
        K: kube::Resource<DynamicType = ()>,
    {
        let event = Event {
            type_,
            reason: reason.as_str().to_string(),
            note: Some(note),
            action: reason.as_str().to_string(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &object.object_ref(&())).await {
            warn!(%error, reason = reason.as_str(), "publishing an event failed");
        }
    }
}

/// A Kubernetes Event a step decided on: Normal (a step of the object's normal life) or Warning
/// (something failed or was refused), by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Note {
    Normal(Reason, String),
    Warning(Reason, String),
}

/// The last head height seen and when: many reconciles ask within one block, one RPC answers them.
pub struct HeadCache {
    max_age: Duration,
    last: Mutex<Option<(u64, Instant)>>,
}

impl Context {
    /// The contract's limit caps, from the cache when younger than a minute; `None` without a chain.
    pub async fn max_limits(&self) -> Result<Option<crate::chain::ResourceLimits>, ChainError> {
        let Some(chain) = &self.chain else {
            return Ok(None);
        };
        let cached = self
            .max_limits
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some((caps, at)) = cached
            && at.elapsed() < Duration::from_secs(60)
        {
            return Ok(Some(caps));
        }
        let caps = chain.get_max_limits().await?;
        *self
            .max_limits
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((caps.clone(), Instant::now()));
        Ok(Some(caps))
    }
}

impl HeadCache {
    pub fn new(max_age: Duration) -> Self {
        Self {
            max_age,
            last: Mutex::new(None),
        }
    }

    /// The head height, from the cache when it is younger than one block time.
    pub async fn height(&self, chain: &ChainClient) -> Result<u64, ChainError> {
        let cached = *self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((height, at)) = cached
            && at.elapsed() < self.max_age
        {
            return Ok(height);
        }
        let height = chain.block_height().await?;
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some((height, Instant::now()));
        Ok(height)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_uid_set_remembers_until_removed_and_starts_over_at_its_bound() {
        let set = UidSet::new(2);
        assert!(!set.contains("a"));
        set.insert("a");
        set.insert("a");
        assert!(set.contains("a"));
        set.remove("a");
        assert!(!set.contains("a"));
        set.insert("a");
        set.insert("b");
        // Full: the next insert forgets the others (they are redone once) and keeps itself.
        set.insert("c");
        assert!(set.contains("c"));
        assert!(!set.contains("a") && !set.contains("b"));
    }
}
