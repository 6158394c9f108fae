//! What every reconcile needs, shared as `Arc<Context>`: no globals.

use std::sync::Arc;

use kube::Client;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tracing::warn;

use crate::config::OperatorConfig;
use crate::metrics::Metrics;

/// The field manager of everything the operator writes with server-side apply.
pub const FIELD_MANAGER: &str = "outlayer-operator";

pub struct Context {
    pub client: Client,
    pub config: OperatorConfig,
    pub metrics: Arc<Metrics>,
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
            client,
            config,
            metrics: Arc::new(Metrics::new()),
        }
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
