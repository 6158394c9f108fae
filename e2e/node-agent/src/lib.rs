//! Test-only stand-in for the kubelet: registers a Node, keeps its Lease fresh, and runs the pods
//! bound to it as bubblewrap-sandboxed local processes, reporting real pod status.
//!
//! Everything else a cluster does (scheduling, Jobs, garbage collection, RBAC, admission) stays
//! the real Kubernetes code; this crate is only the node. See README.md for what it supports.

pub mod config;
mod container;
pub mod env;
mod node;
mod pod;
pub mod quantity;
pub mod sandbox;
pub mod status;
mod volumes;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::Api;
use kube::runtime::watcher;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{AgentConfig, ImageSpec, KubernetesService};
pub use pod::SANDBOX_LABEL;

/// Every pod on this node shares the host network, so its IP is the host's loopback address.
pub const POD_IP: &str = "127.0.0.1";
/// How often the Lease is renewed and the Ready condition refreshed (the kubelet's default).
const HEARTBEAT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{0}")]
    Config(String),
    /// The container cannot be configured (missing Secret/ConfigMap key, bad fieldRef, …).
    #[error("{0}")]
    ContainerConfig(String),
    /// A volume cannot be prepared yet (missing object, unbound claim, …).
    #[error("{0}")]
    Mount(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// State shared by the agent's tasks.
pub(crate) struct Shared {
    pub client: Client,
    pub config: AgentConfig,
    pub allocatable: BTreeMap<String, String>,
    /// Live sandboxes per pod uid, killed when the agent is dropped.
    sandboxes: Mutex<BTreeMap<String, Vec<container::Signaller>>>,
}

impl Shared {
    fn register(&self, uid: &str, signaller: &container::Signaller) {
        let mut map = self.sandboxes.lock().unwrap_or_else(|p| p.into_inner());
        map.entry(uid.to_owned())
            .or_default()
            .push(signaller.clone());
    }

    fn unregister(&self, uid: &str, signaller: &container::Signaller) {
        let mut map = self.sandboxes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(list) = map.get_mut(uid) {
            list.retain(|s| !s.same_as(signaller));
            if list.is_empty() {
                map.remove(uid);
            }
        }
    }

    fn kill_everything(&self) {
        let map = self.sandboxes.lock().unwrap_or_else(|p| p.into_inner());
        for signaller in map.values().flatten() {
            signaller.kill_bwrap();
        }
    }
}

/// `<state_dir>/logs/<namespace>_<pod>_<uid>`: one directory per container inside, one file per
/// restart (`0.log`, `1.log`, …), like the kubelet's `/var/log/pods`.
pub fn pod_log_dir(state_dir: &Path, namespace: &str, pod: &str, uid: &str) -> PathBuf {
    state_dir
        .join("logs")
        .join(format!("{namespace}_{pod}_{uid}"))
}

/// A running node agent. Dropping it stops its tasks and kills every container it started.
pub struct NodeAgent {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl NodeAgent {
    /// Registers the Node, then serves pods bound to it until dropped. `client` should carry the
    /// node's own identity (`system:node:<name>`), so the Node authorizer applies as for a kubelet.
    pub async fn start(client: Client, config: AgentConfig) -> Result<Self> {
        volumes::create_dir(&config.state_dir)?;
        let shared = Arc::new(Shared {
            allocatable: node::allocatable(&config),
            client,
            config,
            sandboxes: Mutex::new(BTreeMap::new()),
        });
        node::register(&shared.client, &shared.config).await?;
        node::heartbeat(&shared.client, &shared.config).await?;
        tracing::info!(node = %shared.config.node_name, "node registered");

        let heartbeat = tokio::spawn({
            let shared = shared.clone();
            async move {
                loop {
                    tokio::time::sleep(HEARTBEAT).await;
                    if let Err(e) = node::heartbeat(&shared.client, &shared.config).await {
                        tracing::warn!(error = %e, "heartbeat failed");
                    }
                }
            }
        });
        let pods = tokio::spawn(serve_pods(shared.clone()));
        Ok(NodeAgent {
            shared,
            tasks: vec![heartbeat, pods],
        })
    }

    pub fn node_name(&self) -> &str {
        &self.shared.config.node_name
    }

    pub fn state_dir(&self) -> &Path {
        &self.shared.config.state_dir
    }

    /// The output (stdout and stderr) of the latest run of `container` in pod `namespace/pod`.
    pub fn container_log(&self, namespace: &str, pod: &str, container: &str) -> Result<String> {
        let logs = self.shared.config.state_dir.join("logs");
        let prefix = format!("{namespace}_{pod}_");
        let entries = std::fs::read_dir(&logs).map_err(|source| Error::Io {
            what: format!("read {}", logs.display()),
            source,
        })?;
        // Newest pod incarnation first: a recreated pod gets a new uid.
        let mut dirs: Vec<(std::time::SystemTime, PathBuf)> = entries
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        dirs.sort();
        let dir = dirs
            .last()
            .map(|(_, d)| d.join(container))
            .ok_or_else(|| Error::Config(format!("no logs for pod {namespace}/{pod}")))?;
        let latest = std::fs::read_dir(&dir)
            .map_err(|source| Error::Io {
                what: format!("read {}", dir.display()),
                source,
            })?
            .flatten()
            .filter_map(|e| {
                let n = e
                    .file_name()
                    .to_string_lossy()
                    .strip_suffix(".log")?
                    .parse::<u32>()
                    .ok()?;
                Some((n, e.path()))
            })
            .max()
            .ok_or_else(|| {
                Error::Config(format!(
                    "no logs for container {container} of {namespace}/{pod}"
                ))
            })?;
        std::fs::read_to_string(&latest.1).map_err(|source| Error::Io {
            what: format!("read {}", latest.1.display()),
            source,
        })
    }
}

impl Drop for NodeAgent {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        self.shared.kill_everything();
    }
}

/// Watches pods bound to this node and hands each to its own worker.
async fn serve_pods(shared: Arc<Shared>) {
    let api = Api::<Pod>::all(shared.client.clone());
    let selector = format!("spec.nodeName={}", shared.config.node_name);
    let workers: Arc<Mutex<BTreeMap<String, watch::Sender<Option<Pod>>>>> = Arc::default();
    let stream = watcher(api, watcher::Config::default().fields(&selector));
    futures::pin_mut!(stream);
    loop {
        let event = match stream.try_next().await {
            Ok(Some(event)) => event,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "pod watch failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        match event {
            watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) => {
                let Some(uid) = pod.metadata.uid.clone() else {
                    continue;
                };
                let mut map = workers.lock().unwrap_or_else(|p| p.into_inner());
                match map.get(&uid) {
                    Some(sender) => {
                        sender.send_replace(Some(pod));
                    }
                    None => {
                        let (sender, receiver) = watch::channel(Some(pod));
                        map.insert(uid.clone(), sender);
                        let shared = shared.clone();
                        let workers = workers.clone();
                        tokio::spawn(async move {
                            pod::run(shared, receiver).await;
                            workers
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .remove(&uid);
                        });
                    }
                }
            }
            watcher::Event::Delete(pod) => {
                let Some(uid) = pod.metadata.uid.clone() else {
                    continue;
                };
                let map = workers.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(sender) = map.get(&uid) {
                    sender.send_replace(None);
                }
            }
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
    }
}
