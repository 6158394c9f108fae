//! Starting and stopping one local control plane.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use e2e_node_agent::{AgentConfig, NodeAgent};
use k8s_openapi::api::core::v1::{Namespace, Node, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::binaries::Binaries;
use crate::pki::{Pki, random_token};
use crate::ports::free_port;
use crate::process::ManagedProcess;
use crate::{Error, Result, versions};

/// Generous: a cold start on a loaded 2-core machine takes a few seconds; this only bounds a hang.
const START_TIMEOUT: Duration = Duration::from_secs(120);
const POLL: Duration = Duration::from_millis(100);

/// Controllers of kube-controller-manager the operator relies on, plus the ones that make pods
/// schedulable and service accounts usable (names as `kube-controller-manager --help` lists them).
const CONTROLLERS: &[&str] = &[
    "serviceaccount-token-controller",
    "serviceaccount-controller",
    "root-ca-certificate-publisher-controller",
    "namespace-controller",
    "garbage-collector-controller",
    "job-controller",
    "cronjob-controller",
    "ttl-after-finished-controller",
    "persistentvolume-binder-controller",
    "persistentvolume-protection-controller",
    "persistentvolumeclaim-protection-controller",
    "replicaset-controller",
    "deployment-controller",
    "endpointslice-controller",
    "node-lifecycle-controller",
    "pod-garbage-collector-controller",
];

/// What the local control plane is started with.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Node names that get a kubelet-like identity (`system:node:<name>` in `system:nodes`), for
    /// node agents started later with [`Cluster::node_kubeconfig`].
    pub nodes: Vec<String>,
    /// Prepare for a real node ([`Cluster::start_real_node`]): the apiserver listens on the node's
    /// bridge ([`crate::real_node::NODE_IP`]) so pods reach it through the `kubernetes` Service, and
    /// node CIDRs are allocated. One such cluster runs per machine at a time (a machine-wide lock).
    pub real_node: bool,
}

impl Default for ClusterOptions {
    fn default() -> Self {
        ClusterOptions {
            nodes: vec![crate::DEFAULT_NODE.to_owned()],
            real_node: false,
        }
    }
}

impl ClusterOptions {
    /// Default options, prepared for a real node named [`crate::DEFAULT_NODE`].
    pub fn real_node() -> Self {
        ClusterOptions {
            real_node: true,
            ..ClusterOptions::default()
        }
    }
}

/// A Kubernetes cluster for tests: a local control plane started by this process, or an existing
/// cluster named by `KUBECONFIG` when `OUTLAYER_E2E_CLUSTER=existing`.
pub struct Cluster {
    client: Client,
    client_server: String,
    kubeconfig_path: PathBuf,
    local: Option<LocalControlPlane>,
    /// Held for the cluster's lifetime; see [`MAX_LOCAL_CLUSTERS`]. Declared last: released
    /// after the processes have stopped.
    _permit: Option<tokio::sync::SemaphorePermit<'static>>,
}

/// Local control planes that may run at once in one test process (each is ~0.5 GiB and a few
/// seconds of CPU to start); tests beyond it wait for a slot. `OUTLAYER_E2E_MAX_CLUSTERS`
/// overrides it when the process starts its first cluster.
pub const MAX_LOCAL_CLUSTERS: usize = 2;
static CLUSTER_SLOTS: std::sync::OnceLock<tokio::sync::Semaphore> = std::sync::OnceLock::new();

fn cluster_slots() -> &'static tokio::sync::Semaphore {
    CLUSTER_SLOTS.get_or_init(|| {
        let n = std::env::var("OUTLAYER_E2E_MAX_CLUSTERS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|n| *n > 0)
            .unwrap_or(MAX_LOCAL_CLUSTERS);
        tokio::sync::Semaphore::new(n)
    })
}

struct LocalControlPlane {
    /// In start order: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, then the real
    /// node's containerd, kubelet, kube-proxy and kube-router when one was started.
    processes: Vec<ManagedProcess>,
    /// The real node's hold on the machine (bridge, guard, tunables, lock); dropped after the
    /// processes have stopped, and before the temp dir goes.
    host: Option<crate::real_node::HostState>,
    dir: tempfile::TempDir,
    kube_proxy_token: String,
    real_node_started: bool,
    server: String,
    ca_cert_pem: String,
    node_tokens: BTreeMap<String, String>,
    binaries: Binaries,
}

impl Cluster {
    /// [`Cluster::start_with`] default options.
    pub async fn start() -> Result<Self> {
        Self::start_with(ClusterOptions::default()).await
    }

    /// Starts a local control plane and waits until it serves requests and its controllers run;
    /// with `OUTLAYER_E2E_CLUSTER=existing`, connects to the `KUBECONFIG` cluster instead.
    pub async fn start_with(options: ClusterOptions) -> Result<Self> {
        match std::env::var("OUTLAYER_E2E_CLUSTER").as_deref() {
            Ok("existing") => Self::existing().await,
            Ok("local") | Err(_) => Self::start_local(options).await,
            Ok(other) => Err(Error::Config(format!(
                "OUTLAYER_E2E_CLUSTER={other:?}: expected \"local\" (default) or \"existing\""
            ))),
        }
    }

    async fn existing() -> Result<Self> {
        let path = std::env::var_os("KUBECONFIG")
            .map(PathBuf::from)
            .ok_or_else(|| {
                Error::Config(
                    "OUTLAYER_E2E_CLUSTER=existing needs KUBECONFIG to name a kubeconfig file"
                        .into(),
                )
            })?;
        let config = Config::infer()
            .await
            .map_err(|e| Error::Config(format!("load KUBECONFIG {}: {e}", path.display())))?;
        let client_server = config.cluster_url.to_string();
        let client = Client::try_from(config).map_err(|source| Error::Kube {
            what: "build a client for the existing cluster".into(),
            source,
        })?;
        tracing::info!(kubeconfig = %path.display(), "using an existing cluster");
        Ok(Cluster {
            client,
            client_server,
            kubeconfig_path: path,
            local: None,
            _permit: None,
        })
    }

    async fn start_local(options: ClusterOptions) -> Result<Self> {
        let binaries = Binaries::locate()?;
        let permit = cluster_slots()
            .acquire()
            .await
            .map_err(|_| Error::Config("cluster slots closed".into()))?;
        let started = Instant::now();
        let dir = tempfile::Builder::new()
            .prefix("outlayer-e2e-")
            .tempdir()
            .map_err(|source| Error::Io {
                what: "create the cluster's temp dir".into(),
                source,
            })?;
        let root = dir.path().to_owned();
        let pki = Pki::generate()?;
        let files = write_files(&root, &pki, &options)?;

        // Before anything listens: the bridge carries the address the apiserver binds.
        let host = if options.real_node {
            Some(crate::real_node::HostState::prepare(&root)?)
        } else {
            None
        };
        let apiserver_ip = if options.real_node {
            crate::real_node::NODE_IP
        } else {
            "127.0.0.1"
        };

        let etcd_port = free_port()?;
        let etcd_peer_port = free_port()?;
        let apiserver_port = free_port()?;
        let server = format!("https://{apiserver_ip}:{apiserver_port}");

        let mut local = LocalControlPlane {
            processes: Vec::new(),
            host,
            kube_proxy_token: files.kube_proxy_token.clone(),
            real_node_started: false,
            dir,
            server: server.clone(),
            ca_cert_pem: pki.ca_cert_pem.clone(),
            node_tokens: files.node_tokens.clone(),
            binaries,
        };

        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let etcd_peer_url = format!("http://127.0.0.1:{etcd_peer_port}");
        let etcd_args = vec![
            format!("--data-dir={}", root.join("etcd").display()),
            "--name=default".into(),
            format!("--listen-client-urls={etcd_url}"),
            format!("--advertise-client-urls={etcd_url}"),
            format!("--listen-peer-urls={etcd_peer_url}"),
            format!("--initial-advertise-peer-urls={etcd_peer_url}"),
            format!("--initial-cluster=default={etcd_peer_url}"),
            // Test data is disposable; fsync would make every write wait on the disk.
            "--unsafe-no-fsync=true".into(),
            "--log-level=warn".into(),
        ];
        local.spawn("etcd", &local.binaries.etcd.clone(), &etcd_args)?;

        let mut apiserver_args = vec![
            format!("--etcd-servers={etcd_url}"),
            format!("--cert-dir={}", root.join("certs").display()),
            format!("--tls-cert-file={}", files.serving_cert.display()),
            format!("--tls-private-key-file={}", files.serving_key.display()),
            format!("--client-ca-file={}", files.ca_cert.display()),
            format!("--secure-port={apiserver_port}"),
            format!("--bind-address={apiserver_ip}"),
            format!("--advertise-address={apiserver_ip}"),
            "--service-cluster-ip-range=10.0.0.0/24".into(),
            "--allow-privileged=true".into(),
            "--authorization-mode=Node,RBAC".into(),
            // On top of the defaults (which include PodSecurity): nodes may only touch their own
            // Node and the pods bound to them, as with a real kubelet.
            "--enable-admission-plugins=NodeRestriction".into(),
            format!("--token-auth-file={}", files.tokens.display()),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={}", files.sa_public.display()),
            format!(
                "--service-account-signing-key-file={}",
                files.sa_key.display()
            ),
            "--profiling=false".into(),
        ];
        if options.real_node {
            apiserver_args.extend([
                // Logs and exec: the apiserver dials the kubelet at the node IP with a client
                // certificate the kubelet's client CA accepts.
                "--kubelet-preferred-address-types=InternalIP".into(),
                format!(
                    "--kubelet-client-certificate={}",
                    files.kubelet_client_cert.display()
                ),
                format!(
                    "--kubelet-client-key={}",
                    files.kubelet_client_key.display()
                ),
            ]);
        }
        local.spawn(
            "kube-apiserver",
            &local.binaries.kube_apiserver.clone(),
            &apiserver_args,
        )?;

        let admin_kubeconfig = kubeconfig(&server, &pki.ca_cert_pem, "admin", &files.admin_token);
        let kubeconfig_path = root.join("admin.kubeconfig");
        write(&kubeconfig_path, &admin_kubeconfig)?;
        let client = client_for(&admin_kubeconfig).await?;

        local.wait_for_readyz(&client).await?;
        let apiserver_ready = started.elapsed();

        let kcm_kubeconfig = root.join("controller-manager.kubeconfig");
        write(
            &kcm_kubeconfig,
            &kubeconfig(
                &server,
                &pki.ca_cert_pem,
                "system:kube-controller-manager",
                &files.controller_manager_token,
            ),
        )?;
        let mut kcm_args = vec![
            format!("--kubeconfig={}", kcm_kubeconfig.display()),
            format!("--authentication-kubeconfig={}", kcm_kubeconfig.display()),
            format!("--authorization-kubeconfig={}", kcm_kubeconfig.display()),
            format!("--secure-port={}", free_port()?),
            "--bind-address=127.0.0.1".into(),
            "--leader-elect=false".into(),
            // Each controller acts as its own service account, so RBAC applies as in production.
            "--use-service-account-credentials=true".into(),
            format!(
                "--service-account-private-key-file={}",
                files.sa_key.display()
            ),
            format!("--root-ca-file={}", files.ca_cert.display()),
            format!("--cert-dir={}", root.join("certs").display()),
            "--profiling=false".into(),
        ];
        if options.real_node {
            // The node's pod CIDR (kube-router and kube-proxy read it) is the bridge's subnet: the
            // first /24 of the cluster CIDR goes to the first (only) node.
            kcm_args.extend([
                format!(
                    "--controllers={},node-ipam-controller",
                    CONTROLLERS.join(",")
                ),
                "--allocate-node-cidrs=true".into(),
                format!("--cluster-cidr={}", crate::real_node::CLUSTER_CIDR),
                "--node-cidr-mask-size=24".into(),
                "--service-cluster-ip-range=10.0.0.0/24".into(),
            ]);
        } else {
            kcm_args.push(format!("--controllers={}", CONTROLLERS.join(",")));
        }
        local.spawn(
            "kube-controller-manager",
            &local.binaries.kube_controller_manager.clone(),
            &kcm_args,
        )?;

        let scheduler_kubeconfig = root.join("scheduler.kubeconfig");
        write(
            &scheduler_kubeconfig,
            &kubeconfig(
                &server,
                &pki.ca_cert_pem,
                "system:kube-scheduler",
                &files.scheduler_token,
            ),
        )?;
        let scheduler_args = vec![
            format!("--kubeconfig={}", scheduler_kubeconfig.display()),
            format!(
                "--authentication-kubeconfig={}",
                scheduler_kubeconfig.display()
            ),
            format!(
                "--authorization-kubeconfig={}",
                scheduler_kubeconfig.display()
            ),
            format!("--secure-port={}", free_port()?),
            "--bind-address=127.0.0.1".into(),
            "--leader-elect=false".into(),
            format!("--cert-dir={}", root.join("certs").display()),
            "--profiling=false".into(),
        ];
        local.spawn(
            "kube-scheduler",
            &local.binaries.kube_scheduler.clone(),
            &scheduler_args,
        )?;

        // The default ServiceAccount appears once kube-controller-manager runs its controllers
        // with their own credentials; pods cannot be admitted before it exists.
        local
            .wait_for_service_account(&client, "default", "default")
            .await?;
        let ready = started.elapsed();
        let message = format!(
            "local control plane (Kubernetes {}, etcd {}) ready in {:.1} s (apiserver /readyz after {:.1} s) at {server}",
            versions::pinned().kubernetes,
            versions::pinned().etcd,
            ready.as_secs_f64(),
            apiserver_ready.as_secs_f64(),
        );
        // Printed, not only traced: the readiness figure is part of what tests report.
        eprintln!("{message}");
        tracing::info!(ready_ms = ready.as_millis() as u64, %server, "control plane ready");

        Ok(Cluster {
            client,
            client_server: server,
            kubeconfig_path,
            local: Some(local),
            _permit: Some(permit),
        })
    }

    /// A client with cluster-admin rights (`system:masters`).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The admin kubeconfig, e.g. for `kubectl --kubeconfig`.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// Whether this is a control plane started by this process (not `OUTLAYER_E2E_CLUSTER=existing`).
    pub fn is_local(&self) -> bool {
        self.local.is_some()
    }

    /// The `kubectl` binary matching the control plane, when it is local.
    pub fn kubectl(&self) -> Option<&Path> {
        self.local.as_ref().map(|l| l.binaries.kubectl.as_path())
    }

    /// A kubeconfig with the kubelet identity of `node` (`system:node:<node>`), which the Node
    /// authorizer and NodeRestriction admission restrict as they would a real kubelet.
    pub fn node_kubeconfig(&self, node: &str) -> Result<Kubeconfig> {
        let local = self.local.as_ref().ok_or_else(|| {
            Error::Config("node identities exist only on a local control plane".into())
        })?;
        let token = local.node_tokens.get(node).ok_or_else(|| {
            Error::Config(format!(
                "node {node:?} was not in ClusterOptions::nodes ({:?})",
                local.node_tokens.keys().collect::<Vec<_>>()
            ))
        })?;
        let text = kubeconfig(
            &local.server,
            &local.ca_cert_pem,
            &format!("system:node:{node}"),
            token,
        );
        Kubeconfig::from_yaml(&text).map_err(|e| Error::Config(format!("node kubeconfig: {e}")))
    }

    /// A client acting as node `node` (see [`Cluster::node_kubeconfig`]).
    pub async fn node_client(&self, node: &str) -> Result<Client> {
        let kubeconfig = self.node_kubeconfig(node)?;
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| Error::Config(format!("node {node} kubeconfig: {e}")))?;
        Client::try_from(config).map_err(|source| Error::Kube {
            what: format!("build a client for node {node}"),
            source,
        })
    }

    /// Creates namespace `name` with `labels` and waits until pods can be admitted in it (its
    /// default ServiceAccount exists).
    pub async fn create_namespace(&self, name: &str, labels: &[(&str, &str)]) -> Result<()> {
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        };
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .map_err(|source| Error::Kube {
                what: format!("create namespace {name}"),
                source,
            })?;
        wait_for_service_account(&self.client, name, "default", None).await
    }

    /// The last `max_bytes` of a component's log (`etcd`, `kube-apiserver`, …), for diagnostics.
    pub fn component_log(&self, component: &str, max_bytes: u64) -> Option<String> {
        let local = self.local.as_ref()?;
        local
            .processes
            .iter()
            .find(|p| p.name() == component)
            .map(|p| p.log_tail(max_bytes))
    }

    /// Process ids of the control-plane components (empty for an existing cluster).
    pub fn pids(&self) -> Vec<u32> {
        self.local
            .iter()
            .flat_map(|l| l.processes.iter().map(ManagedProcess::pid))
            .collect()
    }

    /// The API server URL (`https://127.0.0.1:<port>` for a local control plane).
    pub fn server_url(&self) -> String {
        self.client_server.clone()
    }

    /// The API server's port (what NetworkPolicies see once kube-proxy has translated the
    /// `kubernetes` Service), when the URL names one.
    pub fn server_port(&self) -> Option<u16> {
        self.client_server
            .trim_end_matches('/')
            .rsplit_once(':')
            .and_then(|(_, port)| port.parse().ok())
    }

    /// A node-agent configuration for `node` with its state under this cluster's temp dir.
    pub fn node_agent_config(&self, node: &str) -> Result<AgentConfig> {
        let dir = self.state_dir().ok_or_else(|| {
            Error::Config("the node agent runs only against a local control plane".into())
        })?;
        Ok(AgentConfig::new(node, dir.join(format!("node-{node}"))))
    }

    /// Starts a node agent with `config` under the node's own identity, and waits until the
    /// scheduler may place pods on it (Ready, and the not-ready taint the TaintNodesByCondition
    /// admission adds on registration removed by the node-lifecycle controller).
    pub async fn start_node_agent(&self, config: AgentConfig) -> Result<NodeAgent> {
        let started = Instant::now();
        let node = config.node_name.clone();
        let client = self.node_client(&node).await?;
        let agent = NodeAgent::start(client, config)
            .await
            .map_err(|e| Error::NodeAgent(e.to_string()))?;
        wait_for_schedulable(&self.client, &node, None).await?;
        eprintln!(
            "node agent {node} schedulable after {:.1} s",
            started.elapsed().as_secs_f64()
        );
        Ok(agent)
    }

    /// Starts a real node named [`crate::DEFAULT_NODE`] on a cluster started with
    /// [`ClusterOptions::real_node`]: containerd (with `images` imported), the kubelet, kube-proxy and
    /// kube-router, and waits until pods can be scheduled on it. The node's processes stop, and
    /// everything it put on the machine is removed, when the cluster drops.
    pub async fn start_real_node(&mut self, images: &crate::real_node::Images) -> Result<()> {
        use crate::real_node::{self, config};
        let node_name = crate::DEFAULT_NODE;
        let node_kubeconfig = self.node_kubeconfig(node_name)?;
        let local = self.local.as_mut().ok_or_else(|| {
            Error::Config("a real node runs only against a local control plane".into())
        })?;
        if local.host.is_none() {
            return Err(Error::Config(
                "start the cluster with ClusterOptions::real_node() to run a real node".into(),
            ));
        }
        if local.real_node_started {
            return Err(Error::Config("the real node is already running".into()));
        }
        local.real_node_started = true;
        let binaries = real_node::NodeBinaries::locate()?;
        let started = Instant::now();
        let root = local.dir.path().to_owned();
        let node_dir = root.join("node");
        let socket = node_dir.join("containerd.sock");
        let cni_conf_dir = node_dir.join("cni/net.d");
        let pod_logs = node_dir.join("pod-logs");
        for dir in [&node_dir, &cni_conf_dir, &pod_logs] {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io {
                what: format!("create {}", dir.display()),
                source,
            })?;
        }
        let ca_cert = root.join("certs/ca.crt");
        let paths = config::NodePaths {
            state_dir: &node_dir,
            containerd_socket: &socket,
            runc: &binaries.runc,
            cni_bin_dir: &binaries.cni_dir,
            cni_conf_dir: &cni_conf_dir,
            ca_cert: &ca_cert,
            pause_image: &images.pause,
        };
        let containerd_config = node_dir.join("containerd.toml");
        write(&containerd_config, &config::containerd_toml(&paths))?;
        // containerd finds containerd-shim-runc-v2 on PATH.
        let path_env = format!(
            "{}:{}",
            binaries.shim_dir().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        local.spawn_with_env(
            "containerd",
            &binaries.containerd,
            &[format!("--config={}", containerd_config.display())],
            &[("PATH", path_env.as_str())],
        )?;
        local.wait_for_containerd(&binaries.ctr, &socket).await?;
        let import_started = Instant::now();
        for (reference, archive) in &images.archives {
            let output = std::process::Command::new(&binaries.ctr)
                .arg(format!("--address={}", socket.display()))
                .args(["-n", "k8s.io", "images", "import", "--local"])
                .arg(archive)
                .output()
                .map_err(|source| Error::Io {
                    what: format!("run ctr images import {}", archive.display()),
                    source,
                })?;
            if !output.status.success() {
                return Err(Error::Config(format!(
                    "ctr images import {} ({reference}) failed: {}",
                    archive.display(),
                    String::from_utf8_lossy(&output.stderr).trim()
                )));
            }
        }
        let imported = import_started.elapsed();

        write(
            &cni_conf_dir.join("10-outlayer-e2e.conflist"),
            &config::cni_conflist(
                real_node::host::BRIDGE,
                real_node::POD_CIDR,
                real_node::NODE_IP,
                &node_dir.join("cni/ipam"),
            ),
        )?;

        let kubelet_kubeconfig = node_dir.join("kubelet.kubeconfig");
        write(
            &kubelet_kubeconfig,
            &serde_json::to_string(&node_kubeconfig)
                .map_err(|e| Error::Config(format!("serialize the kubelet kubeconfig: {e}")))?,
        )?;
        let kubelet_config = node_dir.join("kubelet.json");
        write(
            &kubelet_config,
            &config::kubelet_config(&config::KubeletSettings {
                node_ip: real_node::NODE_IP,
                port: free_port()?,
                healthz_port: free_port()?,
                containerd_socket: &socket,
                ca_cert: &ca_cert,
                pod_logs_dir: &pod_logs,
                cluster_dns: real_node::CLUSTER_DNS,
            }),
        )?;
        local.spawn(
            "kubelet",
            &binaries.kubelet,
            &[
                format!("--config={}", kubelet_config.display()),
                format!("--kubeconfig={}", kubelet_kubeconfig.display()),
                format!("--root-dir={}", node_dir.join("kubelet").display()),
                format!("--cert-dir={}", node_dir.join("kubelet-pki").display()),
                format!("--hostname-override={node_name}"),
                format!("--node-ip={}", real_node::NODE_IP),
                // `OUTLAYER_E2E_KUBELET_VERBOSITY=3` logs PLEG events and status patches with times.
                format!(
                    "--v={}",
                    std::env::var("OUTLAYER_E2E_KUBELET_VERBOSITY")
                        .ok()
                        .and_then(|v| v.parse::<u8>().ok())
                        .unwrap_or(1)
                ),
            ],
        )?;

        let proxy_kubeconfig = node_dir.join("kube-proxy.kubeconfig");
        write(
            &proxy_kubeconfig,
            &kubeconfig(
                &local.server,
                &local.ca_cert_pem,
                "system:kube-proxy",
                &local.kube_proxy_token,
            ),
        )?;
        let proxy_config = node_dir.join("kube-proxy.json");
        write(
            &proxy_config,
            &config::kube_proxy_config(&config::ProxySettings {
                kubeconfig: &proxy_kubeconfig,
                node_name,
                cluster_cidr: real_node::CLUSTER_CIDR,
                node_ip: real_node::NODE_IP,
                healthz_port: free_port()?,
                metrics_port: free_port()?,
            }),
        )?;
        local.spawn(
            "kube-proxy",
            &binaries.kube_proxy,
            &[format!("--config={}", proxy_config.display())],
        )?;

        wait_for_schedulable(&self.client, node_name, self.local.as_mut()).await?;
        // kube-router only as the NetworkPolicy engine (routing and service proxy stay off): test use
        // only, see e2e/README.md. It reads pods, namespaces and policies cluster-wide.
        // It identifies its node by name at start, so it comes after the kubelet registered it.
        let admin_kubeconfig = self.kubeconfig_path.clone();
        let health_port = free_port()?;
        let local = self
            .local
            .as_mut()
            .ok_or_else(|| Error::Config("local control plane gone".into()))?;
        local.spawn(
            "kube-router",
            &binaries.kube_router,
            &[
                format!("--kubeconfig={}", admin_kubeconfig.display()),
                "--run-firewall=true".into(),
                "--run-router=false".into(),
                "--run-service-proxy=false".into(),
                "--run-loadbalancer=false".into(),
                format!("--hostname-override={node_name}"),
                "--metrics-port=0".into(),
                format!("--health-port={health_port}"),
                "--iptables-sync-period=30s".into(),
                "--v=1".into(),
            ],
        )?;

        local.wait_for_health("kube-router", health_port).await?;
        let restored = local
            .host
            .as_ref()
            .map(|h| h.restore_tunables())
            .unwrap_or_default();
        eprintln!(
            "real node {node_name} schedulable after {:.1} s (images imported in {:.1} s; kernel \
             tunables the kubelet changed, restored: {})",
            started.elapsed().as_secs_f64(),
            imported.as_secs_f64(),
            if restored.is_empty() {
                "none".to_owned()
            } else {
                restored.join(", ")
            }
        );
        Ok(())
    }

    /// The temp dir holding this cluster's data, certificates and logs (removed on drop).
    pub fn state_dir(&self) -> Option<&Path> {
        self.local.as_ref().map(|l| l.dir.path())
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let Some(local) = self.local.as_mut() else {
            return;
        };
        if std::thread::panicking() {
            // The temp dir (and the logs in it) is about to go; keep the evidence in the output.
            for process in &local.processes {
                eprintln!(
                    "---- last lines of {} (pid {}) ----\n{}",
                    process.name(),
                    process.pid(),
                    process.log_tail(3000)
                );
            }
        }
        // Reverse start order: clients of the apiserver first, etcd last.
        while let Some(mut process) = local.processes.pop() {
            process.stop();
        }
        // Then the real node's containers, mounts, cgroups and network, while the temp dir (its
        // state) still exists.
        local.host.take();
    }
}

impl LocalControlPlane {
    fn spawn(&mut self, name: &str, program: &Path, args: &[String]) -> Result<()> {
        self.spawn_with_env(name, program, args, &[])
    }

    fn spawn_with_env(
        &mut self,
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, &str)],
    ) -> Result<()> {
        let log = self.dir.path().join(format!("{name}.log"));
        let process = ManagedProcess::spawn_with_env(name, program, args, env, log)?;
        if let Some(host) = self.host.as_mut() {
            // A run killed before its teardown leaves these to the next real node's start.
            host.remember_pid(process.pid(), program);
        }
        self.processes.push(process);
        Ok(())
    }

    /// Waits until `http://127.0.0.1:<port>/healthz` answers 200.
    async fn wait_for_health(&mut self, component: &str, port: u16) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last = String::new();
        while Instant::now() < deadline {
            self.check_alive()?;
            match health_check(port).await {
                Ok(()) => return Ok(()),
                Err(e) => last = e,
            }
            tokio::time::sleep(POLL).await;
        }
        Err(Error::Timeout {
            what: format!("{component} /healthz on 127.0.0.1:{port}"),
            last,
        })
    }

    async fn wait_for_containerd(&mut self, ctr: &Path, socket: &Path) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last = String::new();
        while Instant::now() < deadline {
            self.check_alive()?;
            let output = std::process::Command::new(ctr)
                .arg(format!("--address={}", socket.display()))
                .arg("version")
                .output();
            match output {
                Ok(o) if o.status.success() => return Ok(()),
                Ok(o) => last = String::from_utf8_lossy(&o.stderr).trim().to_owned(),
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(POLL).await;
        }
        Err(Error::Timeout {
            what: format!("containerd at {}", socket.display()),
            last,
        })
    }

    /// Fails fast, with its log, when a component has exited.
    fn check_alive(&mut self) -> Result<()> {
        for process in &mut self.processes {
            if let Some(status) = process.exited() {
                return Err(Error::ComponentExited {
                    component: process.name().to_owned(),
                    status: status.to_string(),
                    log_tail: process.log_tail(4000),
                });
            }
        }
        Ok(())
    }

    async fn wait_for_readyz(&mut self, client: &Client) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut last = String::new();
        while Instant::now() < deadline {
            self.check_alive()?;
            let request = http::Request::get("/readyz")
                .body(Vec::new())
                .map_err(|e| Error::Config(format!("build /readyz request: {e}")))?;
            match client.request_text(request).await {
                Ok(body) if body.trim() == "ok" => return Ok(()),
                Ok(body) => last = body,
                Err(e) => last = e.to_string(),
            }
            tokio::time::sleep(POLL).await;
        }
        Err(Error::Timeout {
            what: format!("kube-apiserver /readyz at {}", self.server),
            last,
        })
    }

    async fn wait_for_service_account(
        &mut self,
        client: &Client,
        ns: &str,
        name: &str,
    ) -> Result<()> {
        wait_for_service_account(client, ns, name, Some(self)).await
    }
}

/// One plain HTTP/1.0 `GET /healthz` to 127.0.0.1:`port`; Ok when the status is 200.
async fn health_check(port: u16) -> std::result::Result<(), String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    stream
        .write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&response);
    let status = text.lines().next().unwrap_or_default().to_owned();
    if status.contains(" 200 ") {
        Ok(())
    } else {
        Err(status)
    }
}

/// Waits until `node` is registered, Ready and without taints (the not-ready taint the
/// TaintNodesByCondition admission adds on registration is removed by the node-lifecycle controller).
async fn wait_for_schedulable(
    client: &Client,
    node: &str,
    mut local: Option<&mut LocalControlPlane>,
) -> Result<()> {
    let api = Api::<Node>::all(client.clone());
    let deadline = Instant::now() + START_TIMEOUT;
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Some(local) = local.as_deref_mut() {
            local.check_alive()?;
        }
        match api.get_opt(node).await {
            Ok(Some(n)) => {
                let ready = n
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                let taints: Vec<String> = n
                    .spec
                    .and_then(|s| s.taints)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|t| t.key)
                    .collect();
                if ready && taints.is_empty() {
                    return Ok(());
                }
                last = format!("ready {ready}, taints {taints:?}");
            }
            Ok(None) => last = "node not registered".into(),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(POLL).await;
    }
    Err(Error::Timeout {
        what: format!("node {node} to become schedulable"),
        last,
    })
}

async fn wait_for_service_account(
    client: &Client,
    ns: &str,
    name: &str,
    mut local: Option<&mut LocalControlPlane>,
) -> Result<()> {
    let api = Api::<ServiceAccount>::namespaced(client.clone(), ns);
    let deadline = Instant::now() + START_TIMEOUT;
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Some(local) = local.as_deref_mut() {
            local.check_alive()?;
        }
        match api.get_opt(name).await {
            Ok(Some(_)) => return Ok(()),
            Ok(None) => last = "not created yet".into(),
            Err(e) => last = e.to_string(),
        }
        tokio::time::sleep(POLL).await;
    }
    Err(Error::Timeout {
        what: format!("service account {ns}/{name} (created by kube-controller-manager)"),
        last,
    })
}

struct Files {
    ca_cert: PathBuf,
    serving_cert: PathBuf,
    serving_key: PathBuf,
    sa_key: PathBuf,
    sa_public: PathBuf,
    tokens: PathBuf,
    kubelet_client_cert: PathBuf,
    kubelet_client_key: PathBuf,
    admin_token: String,
    kube_proxy_token: String,
    controller_manager_token: String,
    scheduler_token: String,
    node_tokens: BTreeMap<String, String>,
}

fn write_files(root: &Path, pki: &Pki, options: &ClusterOptions) -> Result<Files> {
    let certs = root.join("certs");
    std::fs::create_dir_all(&certs).map_err(|source| Error::Io {
        what: format!("create {}", certs.display()),
        source,
    })?;
    let files = Files {
        ca_cert: certs.join("ca.crt"),
        serving_cert: certs.join("apiserver.crt"),
        serving_key: certs.join("apiserver.key"),
        sa_key: certs.join("sa.key"),
        sa_public: certs.join("sa.pub"),
        tokens: certs.join("tokens.csv"),
        kubelet_client_cert: certs.join("kubelet-client.crt"),
        kubelet_client_key: certs.join("kubelet-client.key"),
        admin_token: random_token()?,
        kube_proxy_token: random_token()?,
        controller_manager_token: random_token()?,
        scheduler_token: random_token()?,
        node_tokens: options
            .nodes
            .iter()
            .map(|node| Ok((node.clone(), random_token()?)))
            .collect::<Result<_>>()?,
    };
    write(&files.ca_cert, &pki.ca_cert_pem)?;
    write(&files.serving_cert, &pki.serving_cert_pem)?;
    write(&files.serving_key, &pki.serving_key_pem)?;
    write(&files.sa_key, &pki.service_account_key_pem)?;
    write(&files.sa_public, &pki.service_account_public_pem)?;
    write(&files.kubelet_client_cert, &pki.kubelet_client_cert_pem)?;
    write(&files.kubelet_client_key, &pki.kubelet_client_key_pem)?;

    // Static token file: token,user,uid,"group1,group2". The component users are the ones the
    // bootstrap RBAC policy binds (system:kube-controller-manager, system:kube-scheduler).
    // system:kube-proxy is bound to system:node-proxier by the bootstrap policy.
    let mut tokens = format!(
        "{},admin,admin,\"system:masters\"\n{},system:kube-controller-manager,system:kube-controller-manager\n{},system:kube-scheduler,system:kube-scheduler\n{},system:kube-proxy,system:kube-proxy\n",
        files.admin_token,
        files.controller_manager_token,
        files.scheduler_token,
        files.kube_proxy_token
    );
    for (node, token) in &files.node_tokens {
        tokens.push_str(&format!(
            "{token},system:node:{node},system:node:{node},\"system:nodes\"\n"
        ));
    }
    write(&files.tokens, &tokens)?;
    Ok(files)
}

/// A kubeconfig (JSON, which every kubeconfig reader accepts) for `user` with a bearer token.
fn kubeconfig(server: &str, ca_pem: &str, user: &str, token: &str) -> String {
    use base64::Engine as _;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "outlayer-e2e", "cluster": {"server": server, "certificate-authority-data": ca}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "outlayer-e2e", "context": {"cluster": "outlayer-e2e", "user": user, "namespace": "default"}}],
        "current-context": "outlayer-e2e",
    })
    .to_string()
}

async fn client_for(kubeconfig_text: &str) -> Result<Client> {
    let kubeconfig = Kubeconfig::from_yaml(kubeconfig_text)
        .map_err(|e| Error::Config(format!("parse generated kubeconfig: {e}")))?;
    let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Config(format!("load generated kubeconfig: {e}")))?;
    Client::try_from(config).map_err(|source| Error::Kube {
        what: "build the admin client".into(),
        source,
    })
}

fn write(path: &Path, contents: &str) -> Result<()> {
    std::fs::write(path, contents).map_err(|source| Error::Io {
        what: format!("write {}", path.display()),
        source,
    })
}
