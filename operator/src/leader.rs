//! Lease-based leader election on `coordination.k8s.io/v1`, so two replicas never reconcile at once.
//!
//! The algorithm is client-go's `leaderelection` package (the one kube-controller-manager uses):
//! - a contender reads the Lease; it may take it when nobody holds it, when it already holds it, or
//!   when the Lease has not changed for `leaseDurationSeconds` of the contender's *own* clock since it
//!   last saw it change (comparing `renewTime` with the local clock would trust clock sync between
//!   nodes; observing the record's resourceVersion does not);
//! - every write is a `replace` carrying the resourceVersion just read, so of two contenders writing
//!   at once the apiserver accepts one and answers 409 Conflict to the other;
//! - the leader renews every `renew_interval` (≈ lease/3); if it cannot renew for `renew_deadline`
//!   (≈ 2/3 of the lease) it declares the leadership lost *before* anyone else may take over, and the
//!   process exits so the pod restarts and contends again;
//! - on graceful shutdown the leader clears `holderIdentity`, which lets a standby take over at once.
//!
//! kube-leader-election implements the same on kube 4; this module exists so the workspace keeps a
//! single kube version.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::{Mutex, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::{Error, Result};

/// client-go's default lease duration.
pub const DEFAULT_LEASE_DURATION: Duration = Duration::from_secs(15);

/// client-go's default retry period.
const MAX_RETRY_INTERVAL: Duration = Duration::from_secs(2);

/// Which Lease to contend for, as whom, and how often.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    /// Unique per replica (the pod name): the Lease's `holderIdentity`.
    pub identity: String,
    /// How long a holder's last renewal keeps others away (`leaseDurationSeconds`, whole seconds).
    pub lease_duration: Duration,
    /// How often the leader renews.
    pub renew_interval: Duration,
    /// The leader gives up when it has not renewed for this long; it must be shorter than
    /// `lease_duration` so it stops before a standby can take over.
    pub renew_deadline: Duration,
    /// How often a standby retries, and how soon a leader retries a failed renewal.
    pub retry_interval: Duration,
}

impl LeaseConfig {
    pub fn new(namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            namespace: namespace.to_string(),
            name: name.to_string(),
            identity: identity.to_string(),
            lease_duration: Duration::ZERO,
            renew_interval: Duration::ZERO,
            renew_deadline: Duration::ZERO,
            retry_interval: Duration::ZERO,
        }
        .with_lease_duration(DEFAULT_LEASE_DURATION)
    }

    /// Sets the lease duration (rounded up to whole seconds, at least 1) and derives the intervals
    /// from it: renew every third, give up after two thirds, retry every third but at least every
    /// 2 s (client-go's retry period) so a released Lease is picked up promptly.
    pub fn with_lease_duration(mut self, duration: Duration) -> Self {
        let seconds = duration.as_secs_f64().ceil().max(1.0) as u64;
        self.lease_duration = Duration::from_secs(seconds);
        self.renew_interval = self.lease_duration / 3;
        self.renew_deadline = self.lease_duration * 2 / 3;
        self.retry_interval = (self.lease_duration / 3).min(MAX_RETRY_INTERVAL);
        self
    }

    fn lease_duration_seconds(&self) -> i32 {
        i32::try_from(self.lease_duration.as_secs()).unwrap_or(i32::MAX)
    }
}

/// The outcome of one attempt to acquire or renew the Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// This replica holds the Lease now.
    Leading,
    /// Another replica holds it (its identity when known).
    Held { holder: Option<String> },
}

/// When the Lease last changed, by this process's clock.
struct Observed {
    resource_version: Option<String>,
    at: Instant,
    lease_duration: Duration,
}

/// One replica's view of one Lease.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
    observed: Option<Observed>,
}

impl LeaderElector {
    pub fn new(client: Client, config: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
        }
    }

    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// Reads the Lease and takes or renews it when this replica may. Never waits.
    pub async fn try_acquire_or_renew(&mut self) -> Result<Attempt> {
        let name = self.config.name.clone();
        let now = MicroTime(Timestamp::now());
        let Some(mut lease) = self
            .api
            .get_opt(&name)
            .await
            .map_err(Error::api("read Lease", &name))?
        else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.config.identity.clone()),
                    lease_duration_seconds: Some(self.config.lease_duration_seconds()),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.observe(&created);
                    Ok(Attempt::Leading)
                }
                // Another contender created it first.
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    Ok(Attempt::Held { holder: None })
                }
                Err(source) => Err(Error::api("create Lease", &name)(source)),
            };
        };
        self.observe(&lease);
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let ours = holder.as_deref() == Some(self.config.identity.as_str());
        if !ours && holder.is_some() && !self.observed_expired() {
            return Ok(Attempt::Held { holder });
        }
        if !ours {
            spec.holder_identity = Some(self.config.identity.clone());
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0).saturating_add(1));
        }
        spec.renew_time = Some(now);
        spec.lease_duration_seconds = Some(self.config.lease_duration_seconds());
        // `replace` sends the resourceVersion just read: a concurrent writer makes this a 409.
        match self
            .api
            .replace(&name, &PostParams::default(), &lease)
            .await
        {
            Ok(written) => {
                if !ours {
                    info!(lease = %name, identity = %self.config.identity, previous = ?holder, "took the lease");
                }
                self.observe(&written);
                Ok(Attempt::Leading)
            }
            Err(kube::Error::Api(status)) if status.code == 409 => {
                debug!(lease = %name, "lost a race for the lease");
                Ok(Attempt::Held { holder })
            }
            Err(source) => Err(Error::api("update Lease", &name)(source)),
        }
    }

    /// Gives the Lease up if this replica holds it, so a standby takes over without waiting for
    /// expiry. Returns whether it was released.
    pub async fn release(&mut self) -> Result<bool> {
        let name = self.config.name.clone();
        let Some(mut lease) = self
            .api
            .get_opt(&name)
            .await
            .map_err(Error::api("read Lease", &name))?
        else {
            return Ok(false);
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(false);
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(false);
        }
        // What client-go writes on release: no holder, and a one-second lease for older clients
        // that ignore an empty holder.
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self
            .api
            .replace(&name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(source) => Err(Error::api("release Lease", &name)(source)),
        }
    }

    /// Contends until this replica leads, then keeps renewing in a background task. `observe` hears
    /// of every unsuccessful attempt (a standby's health); cancel the future to stop contending.
    pub async fn acquire(self, mut observe: impl FnMut(Result<&Attempt, &Error>)) -> Leadership {
        let mut elector = self;
        loop {
            match tokio::time::timeout(
                elector.config.renew_deadline.max(Duration::from_secs(1)),
                elector.try_acquire_or_renew(),
            )
            .await
            {
                Ok(Ok(Attempt::Leading)) => break,
                Ok(Ok(attempt)) => {
                    debug!(lease = %elector.config.name, ?attempt, "standing by");
                    observe(Ok(&attempt));
                }
                Ok(Err(error)) => {
                    warn!(lease = %elector.config.name, %error, "contending for the lease failed");
                    observe(Err(&error));
                }
                Err(_) => {
                    let error = Error::LeaseTimeout(elector.config.name.clone());
                    warn!(lease = %elector.config.name, %error, "contending for the lease failed");
                    observe(Err(&error));
                }
            }
            tokio::time::sleep(elector.config.retry_interval).await;
        }
        info!(lease = %elector.config.name, identity = %elector.config.identity, "leading");
        Leadership::start(elector)
    }

    fn observe(&mut self, lease: &Lease) {
        let resource_version = lease.metadata.resource_version.clone();
        if self
            .observed
            .as_ref()
            .is_some_and(|o| o.resource_version == resource_version)
        {
            return;
        }
        let seconds = lease
            .spec
            .as_ref()
            .and_then(|s| s.lease_duration_seconds)
            .and_then(|s| u64::try_from(s).ok())
            .unwrap_or(self.config.lease_duration.as_secs());
        self.observed = Some(Observed {
            resource_version,
            at: Instant::now(),
            lease_duration: Duration::from_secs(seconds),
        });
    }

    fn observed_expired(&self) -> bool {
        self.observed
            .as_ref()
            .is_some_and(|o| o.at.elapsed() >= o.lease_duration)
    }
}

/// This replica leads until [`Leadership::lost`] resolves. Dropping it stops renewing without
/// releasing (as a crash would); [`Leadership::release`] is the graceful way out.
pub struct Leadership {
    elector: Arc<Mutex<LeaderElector>>,
    lost: watch::Receiver<Option<String>>,
    stop: Option<oneshot::Sender<()>>,
    renewal: Option<JoinHandle<()>>,
}

impl Leadership {
    fn start(elector: LeaderElector) -> Self {
        let elector = Arc::new(Mutex::new(elector));
        let (lost_tx, lost) = watch::channel(None);
        let (stop, stopped) = oneshot::channel();
        let renewal = tokio::spawn(keep_renewing(elector.clone(), lost_tx, stopped));
        Self {
            elector,
            lost,
            stop: Some(stop),
            renewal: Some(renewal),
        }
    }

    /// Resolves with the reason once this replica is no longer the leader.
    pub fn lost(&self) -> impl Future<Output = String> + Send + Sync + 'static {
        let mut lost = self.lost.clone();
        async move {
            match lost.wait_for(Option::is_some).await {
                Ok(reason) => reason.clone().unwrap_or_default(),
                Err(_) => "the lease renewal stopped".to_string(),
            }
        }
    }

    pub fn is_leading(&self) -> bool {
        self.lost.borrow().is_none()
    }

    /// Stops renewing and gives the Lease up. Returns whether this replica still held it.
    pub async fn release(mut self) -> Result<bool> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(renewal) = self.renewal.take() {
            // The task only ends by returning or being aborted; either way it no longer renews.
            let _ = renewal.await;
        }
        let mut elector = self.elector.lock().await;
        let released = elector.release().await?;
        info!(lease = %elector.config.name, identity = %elector.config.identity, released, "released the lease");
        Ok(released)
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        if let Some(renewal) = self.renewal.take() {
            renewal.abort();
        }
    }
}

async fn keep_renewing(
    elector: Arc<Mutex<LeaderElector>>,
    lost: watch::Sender<Option<String>>,
    mut stop: oneshot::Receiver<()>,
) {
    let config = elector.lock().await.config.clone();
    let mut renewed = Instant::now();
    let mut wait = config.renew_interval;
    loop {
        tokio::select! {
            _ = &mut stop => return,
            () = tokio::time::sleep(wait) => {}
        }
        // A renewal that lands within the deadline still keeps the lease.
        let attempt =
            tokio::time::timeout(config.renew_deadline.max(Duration::from_secs(1)), async {
                elector.lock().await.try_acquire_or_renew().await
            })
            .await;
        let failure = match attempt {
            Ok(Ok(Attempt::Leading)) => {
                renewed = Instant::now();
                wait = config.renew_interval;
                continue;
            }
            Ok(Ok(Attempt::Held { holder })) => {
                let reason = format!(
                    "lease {} is now held by {}",
                    config.name,
                    holder.as_deref().unwrap_or("another replica")
                );
                warn!(lease = %config.name, %reason, "leadership lost");
                let _ = lost.send(Some(reason));
                return;
            }
            Ok(Err(error)) => error.to_string(),
            Err(_) => Error::LeaseTimeout(config.name.clone()).to_string(),
        };
        warn!(lease = %config.name, error = %failure, "renewing the lease failed");
        wait = config.retry_interval.min(config.renew_interval);
        if renewed.elapsed() >= config.renew_deadline {
            let reason = format!(
                "lease {} not renewed for {:?} (last error: {failure})",
                config.name, config.renew_deadline
            );
            warn!(lease = %config.name, %reason, "leadership lost");
            let _ = lost.send(Some(reason));
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals_follow_the_lease_duration() {
        let config = LeaseConfig::new("ns", "lease", "me");
        assert_eq!(config.lease_duration, Duration::from_secs(15));
        assert_eq!(config.renew_interval, Duration::from_secs(5));
        assert_eq!(config.renew_deadline, Duration::from_secs(10));
        assert_eq!(config.retry_interval, Duration::from_secs(2));
        let short = config.with_lease_duration(Duration::from_millis(2500));
        assert_eq!(short.lease_duration, Duration::from_secs(3));
        assert_eq!(short.lease_duration_seconds(), 3);
        assert_eq!(short.renew_interval, Duration::from_secs(1));
        assert_eq!(short.renew_deadline, Duration::from_secs(2));
        assert_eq!(short.retry_interval, Duration::from_secs(1));
        assert!(short.renew_deadline < short.lease_duration);
    }
}
