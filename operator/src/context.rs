//! What every reconcile needs, shared as `Arc<Context>`: no globals.

use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tracing::warn;

use crate::chain::{ChainClient, ChainError};
use crate::config::OperatorConfig;
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
    /// The sealing keys, once loaded (or created) from their Secret; `None` until then.
    keyring: RwLock<Option<Arc<Keyring>>>,
    recorder: Recorder,
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
            client,
            config,
            metrics: Arc::new(Metrics::new()),
            chain: None,
            keyring: RwLock::new(None),
        }
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

    /// Publishes a Kubernetes Event about `object`. An Event that cannot be written is logged, never
    /// fatal: the status carries the same facts.
    pub async fn event<K>(&self, object: &K, warning: bool, reason: &str, note: String)
    where
        K: kube::Resource<DynamicType = ()>,
    {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_string(),
            note: Some(note),
            action: reason.to_string(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &object.object_ref(&())).await {
            warn!(%error, reason, "publishing an event failed");
        }
    }
}

/// The last head height seen and when: many reconciles ask within one block, one RPC answers them.
pub struct HeadCache {
    max_age: Duration,
    last: Mutex<Option<(u64, Instant)>>,
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
