//! Configuration files of the real node's programs, as pure functions of the run's paths and ports
//! (the settings REAL-NODE.md found necessary on this machine are commented where they are set).

use std::path::Path;

use serde_json::json;

/// Everything the node's configuration files refer to.
#[derive(Debug, Clone)]
pub struct NodePaths<'a> {
    pub state_dir: &'a Path,
    pub containerd_socket: &'a Path,
    pub runc: &'a Path,
    pub cni_bin_dir: &'a Path,
    pub cni_conf_dir: &'a Path,
    pub ca_cert: &'a Path,
    pub pause_image: &'a str,
}

/// containerd 2.x (config version 3).
pub fn containerd_toml(p: &NodePaths<'_>) -> String {
    let state = p.state_dir.display();
    format!(
        r#"version = 3
root = "{state}/containerd/root"
state = "{state}/containerd/state"
# Plugins this machine cannot or need not run.
disabled_plugins = [
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.blockfile",
  "io.containerd.snapshotter.v1.erofs",
  "io.containerd.differ.v1.erofs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
  "io.containerd.nri.v1.nri",
]

[grpc]
  address = "{socket}"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  # Images come only from what the harness imports: nothing can be pulled here.
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{pause}"

[plugins."io.containerd.cri.v1.runtime"]
  enable_selinux = false
  # Without it every sandbox fails here: `runc init … failed to update /proc/self/oom_score_adj:
  # Permission denied` (no CAP_SYS_RESOURCE in this VM).
  restrict_oom_score_adj = true
  # Network namespaces under the run's state dir, not /var/run/netns.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "{runc}"
        Root = "{state}/runc"
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{cni_bin}"]
    conf_dir = "{cni_conf}"
    max_conf_num = 1

[plugins."io.containerd.grpc.v1.cri"]
  disable_tcp_service = true
"#,
        socket = p.containerd_socket.display(),
        pause = p.pause_image,
        runc = p.runc.display(),
        cni_bin = p.cni_bin_dir.display(),
        cni_conf = p.cni_conf_dir.display(),
    )
}

/// The CNI network: the bridge the harness created (it already holds the gateway, which is the node
/// IP), host-local addresses from the node's pod CIDR, no masquerade (nothing may leave anyway).
pub fn cni_conflist(bridge: &str, pod_cidr: &str, gateway: &str, ipam_dir: &Path) -> String {
    json!({
        "cniVersion": "1.0.0",
        "name": "outlayer-e2e",
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "dataDir": ipam_dir,
                    "ranges": [[{"subnet": pod_cidr, "gateway": gateway}]],
                    "routes": [{"dst": "0.0.0.0/0"}]
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}}
        ]
    })
    .to_string()
}

/// What varies in the kubelet's configuration.
#[derive(Debug, Clone)]
pub struct KubeletSettings<'a> {
    pub node_ip: &'a str,
    pub port: u16,
    pub healthz_port: u16,
    pub containerd_socket: &'a Path,
    pub ca_cert: &'a Path,
    pub pod_logs_dir: &'a Path,
    pub cluster_dns: &'a str,
}

/// Kubelet feature gates the real node runs with unless `OUTLAYER_E2E_KUBELET_FEATURE_GATES` says
/// otherwise.
///
/// `EventedPLEG` (alpha since 1.26, off by default in 1.36): the kubelet learns of container starts
/// and exits from the runtime's CRI event stream (`GetContainerEvents`, which containerd 2.x serves
/// with no configuration) instead of waiting for its generic PLEG, which relists every container
/// once a second (a constant in the kubelet, not a setting). A container's exit then reaches the
/// pod's status (and its termination message the operator) in tens of milliseconds instead of up to
/// a second; the generic relist still runs, every 300 s, as a safety net, and the kubelet falls back
/// to the 1 s relist by itself if the event stream fails. Measured in e2e/bench/README.md. Known
/// caveats: alpha; with containerd 2.0.0–2.0.2 (which set `PodSandboxStatusResponse.timestamp`
/// without container statuses) pod status went stale — containerd reverted that in 2.0.3
/// (containerd#11323), and 2.4 leaves it unset, so the kubelet reads container statuses itself.
pub const DEFAULT_FEATURE_GATES: &[(&str, bool)] = &[("EventedPLEG", true)];

/// Feature gates in the variable's syntax (`Name=true,Other=false`); anything else is ignored.
pub fn feature_gates(text: &str) -> serde_json::Map<String, serde_json::Value> {
    text.split(',')
        .filter_map(|pair| {
            let (name, value) = pair.split_once('=')?;
            Some((name.trim().to_string(), json!(value.trim() == "true")))
        })
        .collect()
}

/// [`DEFAULT_FEATURE_GATES`] with the variable's gates on top (`EventedPLEG=false` turns the default
/// off; other gates are added).
pub fn feature_gates_with_defaults(
    variable: Option<&str>,
) -> serde_json::Map<String, serde_json::Value> {
    let mut gates: serde_json::Map<String, serde_json::Value> = DEFAULT_FEATURE_GATES
        .iter()
        .map(|(name, on)| ((*name).to_string(), json!(on)))
        .collect();
    gates.extend(feature_gates(variable.unwrap_or_default()));
    gates
}

pub fn kubelet_config(s: &KubeletSettings<'_>) -> String {
    let endpoint = format!("unix://{}", s.containerd_socket.display());
    let gates = feature_gates_with_defaults(
        std::env::var("OUTLAYER_E2E_KUBELET_FEATURE_GATES")
            .ok()
            .as_deref(),
    );
    let mut config = json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        // This VM has cgroup v1 for every controller (cgroup2 holds hugetlb only); 1.36 refuses v1
        // unless told otherwise.
        "failCgroupV1": false,
        "cgroupDriver": "cgroupfs",
        "failSwapOn": false,
        "address": s.node_ip,
        "port": s.port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": s.healthz_port,
        // Only holders of a certificate from the cluster's CA (the apiserver, for logs and exec) may
        // talk to the kubelet; what they may do is not narrowed further (test infrastructure).
        "authentication": {
            "anonymous": {"enabled": false},
            "webhook": {"enabled": false},
            "x509": {"clientCAFile": s.ca_cert}
        },
        "authorization": {"mode": "AlwaysAllow"},
        "containerRuntimeEndpoint": endpoint,
        "imageServiceEndpoint": endpoint,
        "clusterDomain": "cluster.local",
        // No DNS server runs; without a clusterDNS every pod gets a MissingClusterDNS warning.
        "clusterDNS": [s.cluster_dns],
        "podLogsDir": s.pod_logs_dir,
        // Images cannot be pulled again here: never garbage-collect them.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        // A shared test machine: evict only when really short.
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%"
        },
        "serializeImagePulls": false,
        "maxPods": 110,
        "protectKernelDefaults": false,
        "shutdownGracePeriod": "0s",
        "nodeStatusReportFrequency": "10s",
        "nodeStatusUpdateFrequency": "2s",
        "syncFrequency": "10s",
        "fileCheckFrequency": "20s",
        "runtimeRequestTimeout": "2m",
        "registerNode": true,
        "logging": {"format": "text"}
    });
    if !gates.is_empty() {
        config["featureGates"] = serde_json::Value::Object(gates);
    }
    config.to_string()
}

/// What varies in kube-proxy's configuration.
#[derive(Debug, Clone)]
pub struct ProxySettings<'a> {
    pub kubeconfig: &'a Path,
    pub node_name: &'a str,
    pub cluster_cidr: &'a str,
    pub node_ip: &'a str,
    pub healthz_port: u16,
    pub metrics_port: u16,
}

pub fn kube_proxy_config(s: &ProxySettings<'_>) -> String {
    json!({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        // IPVS is not in this kernel; nftables mode works.
        "mode": "nftables",
        "clientConnection": {"kubeconfig": s.kubeconfig},
        "hostnameOverride": s.node_name,
        "clusterCIDR": s.cluster_cidr,
        "bindAddress": s.node_ip,
        "healthzBindAddress": format!("127.0.0.1:{}", s.healthz_port),
        "metricsBindAddress": format!("127.0.0.1:{}", s.metrics_port),
        "nodePortAddresses": [format!("{}/32", s.node_ip)],
        // Zeros leave the machine's conntrack sysctls alone.
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s"
        },
        "logging": {"format": "text"}
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> NodePaths<'static> {
        NodePaths {
            state_dir: Path::new("/tmp/run"),
            containerd_socket: Path::new("/tmp/run/containerd.sock"),
            runc: Path::new("/cache/runc"),
            cni_bin_dir: Path::new("/cache/cni"),
            cni_conf_dir: Path::new("/tmp/run/cni/net.d"),
            ca_cert: Path::new("/tmp/run/ca.crt"),
            pause_image: "registry.k8s.io/pause:3.10.1",
        }
    }

    #[test]
    fn feature_gates_parse_from_the_variable_syntax() {
        let gates = feature_gates("EventedPLEG=true, Other=false,junk");
        assert_eq!(gates["EventedPLEG"], json!(true));
        assert_eq!(gates["Other"], json!(false));
        assert_eq!(gates.len(), 2);
    }

    #[test]
    fn evented_pleg_is_on_unless_the_variable_turns_it_off() {
        let defaults = feature_gates_with_defaults(None);
        assert_eq!(defaults["EventedPLEG"], json!(true));
        assert_eq!(defaults.len(), 1);
        let off = feature_gates_with_defaults(Some("EventedPLEG=false,Other=true"));
        assert_eq!(off["EventedPLEG"], json!(false));
        assert_eq!(off["Other"], json!(true));
    }

    #[test]
    fn containerd_keeps_its_state_in_the_run_and_has_the_settings_this_machine_needs() {
        let toml = containerd_toml(&paths());
        for needle in [
            "root = \"/tmp/run/containerd/root\"",
            "state = \"/tmp/run/containerd/state\"",
            "address = \"/tmp/run/containerd.sock\"",
            "restrict_oom_score_adj = true",
            "netns_mounts_under_state_dir = true",
            "Root = \"/tmp/run/runc\"",
            "BinaryName = \"/cache/runc\"",
            "sandbox = \"registry.k8s.io/pause:3.10.1\"",
            "\"io.containerd.nri.v1.nri\"",
        ] {
            assert!(toml.contains(needle), "missing {needle} in\n{toml}");
        }
    }

    #[test]
    fn cni_uses_the_existing_bridge_without_masquerade() {
        let conf: serde_json::Value = serde_json::from_str(&cni_conflist(
            "outlayer0",
            "10.213.0.0/24",
            "10.213.0.1",
            Path::new("/tmp/run/ipam"),
        ))
        .unwrap();
        let bridge = &conf["plugins"][0];
        assert_eq!(bridge["bridge"], "outlayer0");
        assert_eq!(bridge["ipMasq"], false);
        assert_eq!(bridge["ipam"]["ranges"][0][0]["gateway"], "10.213.0.1");
        assert_eq!(bridge["ipam"]["dataDir"], "/tmp/run/ipam");
    }

    #[test]
    fn kubelet_runs_on_cgroup_v1_and_trusts_only_the_cluster_ca() {
        let conf: serde_json::Value = serde_json::from_str(&kubelet_config(&KubeletSettings {
            node_ip: "10.213.0.1",
            port: 10250,
            healthz_port: 10248,
            containerd_socket: Path::new("/tmp/run/containerd.sock"),
            ca_cert: Path::new("/tmp/run/ca.crt"),
            pod_logs_dir: Path::new("/tmp/run/pod-logs"),
            cluster_dns: "10.0.0.10",
        }))
        .unwrap();
        assert_eq!(conf["failCgroupV1"], false);
        assert_eq!(conf["cgroupDriver"], "cgroupfs");
        assert_eq!(conf["authentication"]["anonymous"]["enabled"], false);
        assert_eq!(
            conf["authentication"]["x509"]["clientCAFile"],
            "/tmp/run/ca.crt"
        );
        assert_eq!(
            conf["containerRuntimeEndpoint"],
            "unix:///tmp/run/containerd.sock"
        );
        assert_eq!(conf["podLogsDir"], "/tmp/run/pod-logs");
    }

    #[test]
    fn kube_proxy_uses_nftables_and_leaves_conntrack_alone() {
        let conf: serde_json::Value = serde_json::from_str(&kube_proxy_config(&ProxySettings {
            kubeconfig: Path::new("/tmp/run/proxy.kubeconfig"),
            node_name: "e2e-node",
            cluster_cidr: "10.213.0.0/16",
            node_ip: "10.213.0.1",
            healthz_port: 1,
            metrics_port: 2,
        }))
        .unwrap();
        assert_eq!(conf["mode"], "nftables");
        assert_eq!(conf["conntrack"]["maxPerCore"], 0);
        assert_eq!(conf["hostnameOverride"], "e2e-node");
    }
}
