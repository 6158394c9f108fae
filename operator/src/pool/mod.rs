//! The warm pool (DESIGN §5): single-use executor pods kept ready per memory class, so an execution
//! whose module is cached skips the pod start. The decisions are in [`plan`]; this is the I/O.
//!
//! - The pool's pods are controlled by one ConfigMap, `outlayer-warm-pool`, that the pool creates in
//!   the namespace; a pod is trusted only when that object (by uid) controls it and its spec is the
//!   one the operator builds ([`plan::membership`]); the pool's own pods of another spec (an earlier
//!   version or setting) are deleted and replaced.
//! - Each pod's one-time token is a Secret owned by the pod (`<pod>-handoff`), mounted as a file;
//!   only the operator (which may read Secrets) and that pod's executor process know it.
//! - An execution **claims** a ready pod with one conditional patch (resourceVersion precondition):
//!   the pod leaves the pool for good, owned by the ExecutionRequest, labelled with its attempt, its
//!   handoff marked `pending`. Only then is the assignment handed over, and the mark set to `done`.
//!   After a restart a claimed pod is the execution's pod (`done`) or deleted (`pending`): never
//!   re-pooled, never handed a second assignment.
//! - The manager ([`WarmPool::run`]) runs on the leader only: it tops each class up, deletes pods
//!   older than the maximum age or ended, and deletes the idle pods when the operator stops.

pub mod plan;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::ObjectMeta;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt as _, watcher};
use kube::{Client, Resource, ResourceExt};
use outlayer_executor::handoff::{Assignment, HANDOFF_VERSION, HandoffReply, HandoffRequest};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Notify;
use tracing::{debug, error, info, warn};

use crate::config::OperatorConfig;
use crate::context::UidSet;
use crate::crd::ExecutionRequest;
use crate::metrics::{Metrics, WarmClaim};
use crate::pods::executor::{
    ATTEMPT_LABEL, EXECUTION_LABEL, HANDOFF_ANNOTATION, TOKEN_KEY, WARM_CLAIMED, WARM_CLASS_LABEL,
    WARM_IDLE, WARM_STATE_LABEL, assignment, bounded_name, handoff_secret_name, warm_executor_pod,
};
use crate::pods::{ExecutorOutcome, hardening::SANDBOX_LABEL};
use crate::sealing::unseal::ENV_FILE_KEY;
use crate::{Error, Result};
use plan::{ClaimedPod, IdlePod, IdleState, Membership};

/// The label selector of idle pool pods (of `class`, or all).
fn idle_selector(class: Option<u32>) -> String {
    let mut selector = format!("{WARM_STATE_LABEL}={WARM_IDLE},{SANDBOX_LABEL}=true");
    if let Some(class) = class {
        selector.push_str(&format!(",{WARM_CLASS_LABEL}={class}"));
    }
    selector
}

/// The ConfigMap that controls every pod of the pool.
pub const POOL_OWNER_NAME: &str = "outlayer-warm-pool";
/// How often the manager looks at the pool when nothing wakes it.
const REFILL_INTERVAL: Duration = Duration::from_secs(1);
/// How many pods are remembered as said before the memory starts over (each is then said once
/// more).
const SAID_BOUND: usize = 10_000;
/// How long the handoff may take (connect, send, answer) before the pod is given up.
const HANDOFF_TIMEOUT: Duration = Duration::from_secs(3);

/// Pods labelled as idle warm pods, as [`WarmPool::sort_idle`] sorts them.
#[derive(Default)]
struct IdlePods {
    own: Vec<Pod>,
    /// Names of the pool's own pods built with another spec: deleted by the refill.
    outdated: Vec<String>,
}

/// A pod this execution claimed: its name, where it listens and its token.
struct Claimed {
    name: String,
    address: String,
    token: String,
    claimed_at: Instant,
}

pub struct WarmPool {
    client: Client,
    namespace: String,
    config: OperatorConfig,
    metrics: Arc<Metrics>,
    owner: tokio::sync::Mutex<Option<OwnerReference>>,
    /// Tokens of the pods this process created (else read from their Secret).
    tokens: Mutex<HashMap<String, String>>,
    wake: Notify,
    /// The idle pods as the manager's watch last saw them: where a claim looks first (a stale entry
    /// only costs a refused conditional patch).
    idle_cache: std::sync::OnceLock<Store<Pod>>,
    /// Pods already said to be foreign or mismatched (by uid): each is said once, not at every look.
    said: UidSet,
}

impl WarmPool {
    pub fn new(
        client: Client,
        namespace: &str,
        config: OperatorConfig,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            client,
            namespace: namespace.to_string(),
            config,
            metrics,
            owner: tokio::sync::Mutex::new(None),
            tokens: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            idle_cache: std::sync::OnceLock::new(),
            said: UidSet::new(SAID_BOUND),
        })
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// Keeps the pool filled until `shutdown`, then deletes its idle pods.
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        info!(classes = ?self.config.warm_pool.classes, "warm pool started");
        let (store, writer) = reflector::store();
        let _ = self.idle_cache.set(store);
        let idle_watch = watcher(
            self.pods(),
            watcher::Config::default().labels(&idle_selector(None)),
        )
        .default_backoff()
        .modify(crate::controllers::drop_managed_fields)
        .reflect(writer)
        .for_each(|_| std::future::ready(()));
        // The watch runs beside the loop until shutdown. It retries with backoff and does not end;
        // should it, claims list idle pods from the API server instead.
        let idle_watch = async move {
            idle_watch.await;
            warn!("the warm pool's watch of idle pods ended; claims list them instead");
            std::future::pending::<()>().await;
        };
        let shutdown = async move {
            tokio::select! {
                () = shutdown => {}
                () = idle_watch => {}
            }
        };
        tokio::pin!(shutdown);
        loop {
            if let Err(error) = self.refill().await {
                warn!(%error, "refilling the warm pool failed; trying again");
            }
            tokio::select! {
                () = &mut shutdown => break,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(REFILL_INTERVAL) => {}
            }
        }
        self.drain().await;
    }

    /// The pool's owner object (created on first use).
    async fn owner(&self) -> Result<OwnerReference> {
        let mut cached = self.owner.lock().await;
        if let Some(owner) = cached.as_ref() {
            return Ok(owner.clone());
        }
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
        let existing = api
            .get_opt(POOL_OWNER_NAME)
            .await
            .map_err(Error::api("reading", POOL_OWNER_NAME))?;
        let object = match existing {
            Some(object) => object,
            None => {
                let wanted = ConfigMap {
                    metadata: ObjectMeta {
                        name: Some(POOL_OWNER_NAME.to_string()),
                        namespace: Some(self.namespace.clone()),
                        labels: Some(BTreeMap::from([(
                            "app.kubernetes.io/managed-by".to_string(),
                            "outlayer-operator".to_string(),
                        )])),
                        ..Default::default()
                    },
                    data: Some(BTreeMap::from([(
                        "purpose".to_string(),
                        "controls the warm executor pods; deleting it deletes them".to_string(),
                    )])),
                    ..Default::default()
                };
                match api.create(&PostParams::default(), &wanted).await {
                    Ok(created) => created,
                    Err(kube::Error::Api(e)) if e.code == 409 => api
                        .get(POOL_OWNER_NAME)
                        .await
                        .map_err(Error::api("reading", POOL_OWNER_NAME))?,
                    Err(e) => return Err(Error::api("creating", POOL_OWNER_NAME)(e)),
                }
            }
        };
        let owner = object
            .controller_owner_ref(&())
            .ok_or(Error::MissingMetadata("metadata.uid"))?;
        *cached = Some(owner.clone());
        Ok(owner)
    }

    /// The pool's idle pods (of `class`, or all), sorted by [`plan::membership`].
    async fn idle_pods(&self, owner: &OwnerReference, class: Option<u32>) -> Result<IdlePods> {
        let selector = idle_selector(class);
        let listed = self
            .pods()
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(Error::api("listing warm pods", &selector))?;
        Ok(self.sort_idle(listed.items, owner))
    }

    /// Splits pods labelled idle into the pool's own and its outdated ones; a foreign one is left
    /// alone, and said once (a Warning log line and `outlayer_untrusted_objects_total{kind="Pod"}`),
    /// not at every look.
    fn sort_idle(&self, pods: impl IntoIterator<Item = Pod>, owner: &OwnerReference) -> IdlePods {
        let mut sorted = IdlePods::default();
        for pod in pods {
            match plan::membership(&pod, owner, &self.config) {
                Membership::Own => sorted.own.push(pod),
                // One this very process created cannot be of an earlier version or setting: the
                // API server changed what the comparison looks at. Deleting it would only start a
                // create-delete loop, so it is said once and left to its maximum age.
                Membership::Outdated if self.created_here(&pod) => {
                    if self.say_once(&pod) {
                        error!(pod = %pod.name_any(), "a warm pod this operator created no longer matches the spec it builds (the API server changed it); not used");
                    }
                }
                Membership::Outdated => sorted.outdated.push(pod.name_any()),
                Membership::Foreign => {
                    if self.say_once(&pod) {
                        self.metrics.untrusted_object("Pod");
                        warn!(pod = %pod.name_any(), "a pod labelled as an idle warm pod is not controlled by the pool; never used, left alone");
                    }
                }
            }
        }
        sorted
    }

    /// Whether `pod` was not said yet (by uid); it counts as said from now on.
    fn say_once(&self, pod: &Pod) -> bool {
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let first = !self.said.contains(uid);
        self.said.insert(uid);
        first
    }

    /// Whether this process created `pod` (it still holds its token).
    fn created_here(&self, pod: &Pod) -> bool {
        self.tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&pod.name_any())
    }

    async fn refill(&self) -> Result<()> {
        let owner = self.owner().await?;
        let IdlePods {
            own: pods,
            outdated,
        } = self.idle_pods(&owner, None).await?;
        for name in &outdated {
            info!(pod = %name, "deleting a warm pod built with another spec (an earlier version or setting); a new one replaces it");
            self.delete_pod(name).await?;
        }
        let now = Timestamp::now();
        let idle: Vec<IdlePod> = pods
            .iter()
            .filter_map(|pod| {
                let class = pod.labels().get(WARM_CLASS_LABEL)?.parse().ok()?;
                Some(IdlePod {
                    name: pod.name_any(),
                    class,
                    state: plan::idle_state(pod, now, self.config.warm_pool.max_age),
                })
            })
            .collect();
        for (class, _) in &self.config.warm_pool.classes {
            let ready = idle
                .iter()
                .filter(|p| p.class == *class && p.state == IdleState::Ready)
                .count();
            self.metrics.set_warm_pool_ready(*class, ready);
        }
        let refill = plan::refill(&idle, &self.config.warm_pool.classes);
        for name in &refill.delete {
            debug!(pod = %name, "deleting a warm pod that is too old or ended");
            self.delete_pod(name).await?;
        }
        for class in refill.create {
            self.create(class, &owner).await?;
        }
        Ok(())
    }

    async fn create(&self, class: u32, owner: &OwnerReference) -> Result<()> {
        let name = format!("outlayer-warm-{class}-{}", random_hex(5)?);
        let token = random_hex(32)?;
        let pod = warm_executor_pod(&name, &self.namespace, class, owner.clone(), &self.config);
        let created = self
            .pods()
            .create(&PostParams::default(), &pod)
            .await
            .map_err(Error::api("creating warm pod", &name))?;
        // The token's Secret goes with its pod. The kubelet waits for it to mount the volume.
        let pod_owner = OwnerReference {
            controller: Some(true),
            ..created
                .controller_owner_ref(&())
                .ok_or(Error::MissingMetadata("metadata.uid"))?
        };
        let secret_name = handoff_secret_name(&name);
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(secret_name.clone()),
                namespace: Some(self.namespace.clone()),
                owner_references: Some(vec![pod_owner]),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".to_string(),
                    "outlayer-operator".to_string(),
                )])),
                ..Default::default()
            },
            immutable: Some(true),
            data: Some(BTreeMap::from([(
                TOKEN_KEY.to_string(),
                ByteString(token.clone().into_bytes()),
            )])),
            ..Default::default()
        };
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        if let Err(error) = secrets.create(&PostParams::default(), &secret).await {
            self.delete_pod(&name).await?;
            return Err(Error::api("creating", &secret_name)(error));
        }
        self.tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.clone(), token);
        debug!(pod = %name, class, "warm pod created");
        Ok(())
    }

    /// A pod's token: remembered from its creation, else read from its Secret — which must be owned
    /// by that very pod (uid).
    async fn token(&self, pod: &Pod) -> Result<Option<String>> {
        let name = pod.name_any();
        if let Some(token) = self
            .tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&name)
        {
            return Ok(Some(token.clone()));
        }
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let secret_name = handoff_secret_name(&name);
        let Some(secret) = secrets
            .get_opt(&secret_name)
            .await
            .map_err(Error::api("reading", &secret_name))?
        else {
            return Ok(None);
        };
        let owned = secret
            .owner_references()
            .iter()
            .any(|r| Some(r.uid.as_str()) == pod.metadata.uid.as_deref() && r.kind == "Pod");
        if !owned {
            warn!(pod = %name, "the handoff Secret is not owned by its pod; not used");
            return Ok(None);
        }
        Ok(secret
            .data
            .and_then(|data| data.get(TOKEN_KEY).cloned())
            .and_then(|bytes| String::from_utf8(bytes.0).ok()))
    }

    /// Claims a ready pod of `class` for `execution`'s `attempt`; `None` when there is none.
    async fn claim(
        &self,
        execution: &ExecutionRequest,
        attempt: u32,
        class: u32,
    ) -> Result<Option<Claimed>> {
        let owner = self.owner().await?;
        let execution_owner = execution
            .controller_owner_ref(&())
            .ok_or(Error::MissingMetadata("metadata.uid"))?;
        let execution_label = bounded_name(&execution.name_any(), "");
        let now = Timestamp::now();
        let ready = |pod: &Pod| {
            plan::idle_state(pod, now, self.config.warm_pool.max_age) == IdleState::Ready
        };
        // The watch cache first (no round trip); the API server when it offers none.
        let cached: Vec<Pod> = self
            .idle_cache
            .get()
            .map(|store| {
                let of_class = store
                    .state()
                    .iter()
                    .filter(|pod| pod.labels().get(WARM_CLASS_LABEL) == Some(&class.to_string()))
                    .map(|pod| Pod::clone(pod))
                    .collect::<Vec<_>>();
                self.sort_idle(of_class, &owner).own
            })
            .unwrap_or_default()
            .into_iter()
            .filter(|pod| ready(pod))
            .collect();
        let mut candidates = if cached.is_empty() {
            self.idle_pods(&owner, Some(class))
                .await?
                .own
                .into_iter()
                .filter(|pod| ready(pod))
                .collect()
        } else {
            cached
        };
        // The oldest first: it is the nearest to its maximum age.
        candidates.sort_by_key(|pod| pod.metadata.creation_timestamp.as_ref().map(|t| t.0));
        for pod in candidates {
            let name = pod.name_any();
            let (Some(resource_version), Some(address)) = (
                pod.metadata.resource_version.clone(),
                pod.status.as_ref().and_then(|s| s.pod_ip.clone()),
            ) else {
                continue;
            };
            let Some(token) = self.token(&pod).await? else {
                continue;
            };
            let deadline = plan::run_deadline(
                &pod,
                now,
                execution.spec.limits.max_execution_seconds,
                self.config.pod_startup_grace_seconds,
            );
            let patch = plan::claim_patch(
                &resource_version,
                &execution_label,
                attempt,
                &execution_owner,
                deadline,
            );
            match self
                .pods()
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    self.tokens
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .remove(&name);
                    return Ok(Some(Claimed {
                        name,
                        address,
                        token,
                        claimed_at: Instant::now(),
                    }));
                }
                // Claimed by someone else meanwhile, or gone: the next one.
                Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => continue,
                Err(e) => return Err(Error::api("claiming warm pod", &name)(e)),
            }
        }
        Ok(None)
    }

    /// Sends the assignment; `Ok` once the executor accepted it.
    async fn hand_off(
        &self,
        claimed: &Claimed,
        assignment: Assignment,
    ) -> std::result::Result<(), String> {
        let request = HandoffRequest {
            v: HANDOFF_VERSION,
            token: claimed.token.clone(),
            assignment,
        };
        let mut line = serde_json::to_vec(&request).map_err(|e| e.to_string())?;
        line.push(b'\n');
        let address = format!("{}:{}", claimed.address, self.config.warm_pool.handoff_port);
        let exchange = async {
            let mut stream = tokio::net::TcpStream::connect(&address)
                .await
                .map_err(|e| format!("connecting to {address}: {e}"))?;
            let _ = stream.set_nodelay(true);
            stream
                .write_all(&line)
                .await
                .map_err(|e| format!("sending to {address}: {e}"))?;
            let mut reply = String::new();
            BufReader::new(&mut stream)
                .read_line(&mut reply)
                .await
                .map_err(|e| format!("reading the answer of {address}: {e}"))?;
            serde_json::from_str::<HandoffReply>(&reply)
                .map_err(|e| format!("the answer of {address} is not a handoff reply: {e}"))
        };
        let reply = tokio::time::timeout(HANDOFF_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("no answer from {address} within {HANDOFF_TIMEOUT:?}"))??;
        if reply.accepted {
            Ok(())
        } else {
            Err(format!(
                "refused: {}",
                reply.error.unwrap_or_else(|| "no reason".to_string())
            ))
        }
    }

    /// The execution controller's hook: runs `execution`'s attempt in a warm pod when one of its class
    /// is ready. `Some(pod name)` when a warm pod took it; `None`: start a cold pod.
    pub async fn start(
        &self,
        execution: &ExecutionRequest,
        module_sha256: &str,
        attempt: u32,
        env_secret: Option<&str>,
        seed: Option<&crate::seed::RunSeed>,
    ) -> Result<Option<String>> {
        let Some(class) = plan::class_for(
            execution.spec.limits.max_memory_mb,
            &self.config.warm_pool.classes,
        ) else {
            self.metrics.warm_claim(WarmClaim::MissTooLarge);
            return Ok(None);
        };
        let secrets = match env_secret {
            Some(name) => self.read_env_secret(name).await?,
            None => BTreeMap::new(),
        };
        let handed = assignment(execution, module_sha256, secrets, seed, &self.config)?;
        let Some(claimed) = self.claim(execution, attempt, class).await? else {
            self.metrics.warm_claim(WarmClaim::MissEmpty);
            self.wake.notify_one();
            return Ok(None);
        };
        // No refill yet: a new pod's sandbox start would compete with this run for the node's CPU
        // (on the 2-core test node it doubled the container exit → kubelet time of a warm hit).
        // The replacement starts when this pod ends (`claimed_pod_ended`) or at the next tick.
        if let Err(reason) = self.hand_off(&claimed, handed).await {
            warn!(pod = %claimed.name, %reason, "warm pod did not take its assignment; deleted, a cold pod runs it");
            self.metrics.warm_claim(WarmClaim::HandoffFailed);
            self.delete_pod(&claimed.name).await?;
            return Ok(None);
        }
        self.metrics.warm_handoff(claimed.claimed_at.elapsed());
        self.metrics.warm_claim(WarmClaim::Hit);
        let done = serde_json::json!({"metadata": {"annotations": {HANDOFF_ANNOTATION: "done"}}});
        self.pods()
            .patch(&claimed.name, &PatchParams::default(), &Patch::Merge(&done))
            .await
            .map_err(Error::api("marking the handoff of", &claimed.name))?;
        info!(pod = %claimed.name, class, "execution handed to a warm pod");
        Ok(Some(claimed.name))
    }

    /// A claimed pod ended: its replacement may start now.
    pub fn claimed_pod_ended(&self) {
        self.wake.notify_one();
    }

    async fn read_env_secret(&self, name: &str) -> Result<BTreeMap<String, String>> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let secret = secrets
            .get(name)
            .await
            .map_err(Error::api("reading", name))?;
        let bytes = secret
            .data
            .and_then(|mut data| data.remove(ENV_FILE_KEY))
            .ok_or_else(|| Error::Secrets(format!("Secret {name} has no {ENV_FILE_KEY}")))?;
        serde_json::from_slice(&bytes.0).map_err(|_| {
            Error::Secrets(format!(
                "Secret {name}'s {ENV_FILE_KEY} is not a JSON object of strings"
            ))
        })
    }

    /// The warm pod claimed for `execution`'s `attempt`, if any: `Some(None)` while it runs,
    /// `Some(Some(outcome))` once it ended. A pod abandoned mid-handoff is deleted here and reported
    /// as a platform failure (the execution re-runs in a fresh pod).
    pub async fn execution_pod(
        &self,
        execution: &ExecutionRequest,
        attempt: u32,
    ) -> Result<Option<Option<ExecutorOutcome>>> {
        let Some(uid) = execution.metadata.uid.as_deref() else {
            return Ok(None);
        };
        let selector = format!(
            "{EXECUTION_LABEL}={},{ATTEMPT_LABEL}={attempt},{WARM_STATE_LABEL}={WARM_CLAIMED}",
            bounded_name(&execution.name_any(), "")
        );
        let listed = self
            .pods()
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(Error::api("listing claimed warm pods", &selector))?;
        let Some(pod) = listed
            .items
            .into_iter()
            .find(|pod| plan::owned_by_execution(pod, uid, attempt))
        else {
            return Ok(None);
        };
        Ok(Some(match plan::claimed_pod(&pod) {
            ClaimedPod::Ended(outcome) => {
                self.claimed_pod_ended();
                Some(outcome)
            }
            ClaimedPod::Running => None,
            ClaimedPod::Abandoned => {
                let name = pod.name_any();
                warn!(pod = %name, "warm pod claimed but never handed its assignment; deleted");
                self.delete_pod(&name).await?;
                Some(ExecutorOutcome::PlatformFailure(format!(
                    "warm pod {name} was claimed but its handoff never completed (operator restart?); deleted"
                )))
            }
        }))
    }

    /// Deletes the warm pods `execution` claimed (its cleanup).
    pub async fn delete_execution_pods(&self, execution: &ExecutionRequest) -> Result<()> {
        let Some(uid) = execution.metadata.uid.as_deref() else {
            return Ok(());
        };
        let selector = format!(
            "{EXECUTION_LABEL}={},{WARM_STATE_LABEL}={WARM_CLAIMED}",
            bounded_name(&execution.name_any(), "")
        );
        let listed = self
            .pods()
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(Error::api("listing claimed warm pods", &selector))?;
        for pod in listed.items {
            let owned = pod
                .owner_references()
                .iter()
                .any(|r| r.uid == uid && r.controller == Some(true));
            if owned {
                self.delete_pod(&pod.name_any()).await?;
            }
        }
        Ok(())
    }

    async fn delete_pod(&self, name: &str) -> Result<()> {
        self.tokens
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(name);
        match self
            .pods()
            .delete(name, &DeleteParams::background().grace_period(0))
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(Error::api("deleting warm pod", name)(e)),
        }
    }

    /// Deletes every idle pod of the pool (the operator is stopping; the next leader refills).
    async fn drain(&self) {
        let owner = match self.owner().await {
            Ok(owner) => owner,
            Err(error) => {
                warn!(%error, "draining the warm pool: its owner cannot be read");
                return;
            }
        };
        match self.idle_pods(&owner, None).await {
            Ok(IdlePods { own, outdated }) => {
                let names: Vec<String> = own
                    .iter()
                    .map(ResourceExt::name_any)
                    .chain(outdated)
                    .collect();
                let count = names.len();
                for name in &names {
                    if let Err(error) = self.delete_pod(name).await {
                        warn!(%error, "draining the warm pool");
                    }
                }
                info!(deleted = count, "warm pool drained");
            }
            Err(error) => warn!(%error, "draining the warm pool: listing failed"),
        }
    }
}

/// `bytes` random bytes from the OS, as hex.
fn random_hex(bytes: usize) -> Result<String> {
    use ring::rand::SecureRandom;
    let mut buffer = vec![0u8; bytes];
    ring::rand::SystemRandom::new()
        .fill(&mut buffer)
        .map_err(|_| Error::Secrets("the OS random generator failed".to_string()))?;
    Ok(hex::encode(buffer))
}
