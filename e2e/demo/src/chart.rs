//! The chart as a platform team installs it: the operator key Secret, a volume for the cache claim,
//! then `helm install charts/outlayer-operator` with chain values pointing at the localnet; later
//! `helm upgrade` and `helm uninstall`.

use std::path::{Path, PathBuf};

use e2e_chart::Helm;
use k8s_openapi::api::core::v1::{PersistentVolume, Secret};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

use crate::{Error, Result};

pub const RELEASE: &str = "outlayer";
/// The release namespace, also the workload namespace: the operator then mounts the cache itself.
pub const NAMESPACE: &str = "outlayer-system";
pub const KEY_SECRET: &str = "outlayer-operator-key";
const STORAGE_CLASS: &str = "demo-hostpath";

/// `(repository, tag)` of an image reference, as the chart's `image` values take it.
pub fn split_image(reference: &str) -> Result<(&str, &str)> {
    reference
        .rsplit_once(':')
        .filter(|(repository, tag)| !repository.is_empty() && !tag.contains('/'))
        .ok_or_else(|| Error::Unexpected(format!("image reference {reference:?} has no tag")))
}

/// Everything the values depend on that is only known at run time.
pub struct ChartSettings<'a> {
    pub images: &'a e2e_cluster::real_node::Images,
    pub rpc_url: String,
    pub block_time_ms: u64,
    /// The `git://` mirror the `https://github.com/` rewrite points at (`git daemon` on the node).
    pub git_mirror: String,
    /// Where the fetch Jobs, and the operator, may connect: the node's address and the ports of the
    /// git mirror, the API server and the localnet.
    pub node_ip: &'a str,
    pub mirror_port: u16,
    pub api_server_port: u16,
    pub rpc_port: u16,
}

/// The values file: one operator replica, the images built from the repository's Dockerfiles, the
/// cache on the demo's volume, the chain, the git mirror, and NetworkPolicies narrowed to this
/// machine's node (the fetch Jobs may reach the mirror only; the operator the API server and the
/// localnet only).
pub fn values(settings: &ChartSettings<'_>) -> Result<Value> {
    let image = |reference: &str| -> Result<Value> {
        let (repository, tag) = split_image(reference)?;
        Ok(json!({"repository": repository, "tag": tag, "pullPolicy": "Never"}))
    };
    let node = format!("{}/32", settings.node_ip);
    Ok(json!({
        "operator": {
            "replicas": 1,
            "image": image(&settings.images.operator)?,
        },
        "executor": {"image": image(&settings.images.executor)?},
        "compiler": {
            "image": image(&settings.images.compiler)?,
            "allowedRepoPrefixes": ["https://github.com/"],
            "gitMirrors": [format!("https://github.com/={}", settings.git_mirror)],
            // The node has 2 CPUs and the operator requests some: a 2-CPU Job would never schedule.
            "cpu": "1",
            "memory": "2Gi",
        },
        "cache": {"storageClassName": STORAGE_CLASS, "size": "1Gi"},
        "networkPolicy": {
            "fetchEgress": {"ports": [settings.mirror_port], "cidrs": [{"cidr": node}]},
            "operatorEgress": {
                "apiServerCidrs": [node],
                "apiServerPorts": [settings.api_server_port],
                "rpcPorts": [settings.rpc_port],
                "rpcCidrs": [{"cidr": node}],
            },
        },
        "chain": {
            "contractId": crate::CONTRACT,
            "rpcUrls": [settings.rpc_url],
            "operatorKey": {"secretName": KEY_SECRET},
            "expectedBlockTimeMs": settings.block_time_ms,
            // A local chain has no rate limits: poll more often than the defaults (1 s, 5 s), which
            // suit a public RPC endpoint.
            "pollIntervalMs": 250,
            "pricingSyncIntervalSeconds": 1,
        },
    }))
}

/// The operator's account and key as the chart expects them (`chain.operatorKey`). The key goes
/// through the API only; it is never printed.
pub async fn create_key_secret(client: &kube::Client, account: &str, key: &str) -> Result<()> {
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": KEY_SECRET, "namespace": NAMESPACE},
        "type": "Opaque",
        "stringData": {"account_id": account, "private_key": key},
    }))
    .map_err(|e| Error::Unexpected(format!("build Secret {KEY_SECRET}: {e}")))?;
    Api::<Secret>::namespaced(client.clone(), NAMESPACE)
        .create(&PostParams::default(), &secret)
        .await
        .map_err(Error::kube(format!(
            "create Secret {NAMESPACE}/{KEY_SECRET}"
        )))?;
    Ok(())
}

/// A hostPath PersistentVolume in the chart's storage class for its cache claim (a real cluster's
/// provisioner makes one; the local control plane has none).
pub async fn create_cache_volume(client: &kube::Client, dir: &Path) -> Result<()> {
    let pv: PersistentVolume = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "outlayer-demo-cache"},
        "spec": {
            "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"],
            "storageClassName": STORAGE_CLASS, "hostPath": {"path": dir.display().to_string()},
        },
    }))
    .map_err(|e| Error::Unexpected(format!("build the cache PersistentVolume: {e}")))?;
    Api::<PersistentVolume>::all(client.clone())
        .create(&PostParams::default(), &pv)
        .await
        .map_err(Error::kube("create PersistentVolume outlayer-demo-cache"))?;
    Ok(())
}

/// The helm release of `charts/outlayer-operator` on the local control plane.
pub struct Release {
    helm: Helm,
    kubeconfig: PathBuf,
    values_file: PathBuf,
}

impl Release {
    /// Writes the values to `values_file`; nothing is installed yet.
    pub fn new(helm: Helm, kubeconfig: &Path, values_file: &Path, values: &Value) -> Result<Self> {
        std::fs::write(values_file, values.to_string())
            .map_err(Error::io(format!("write {}", values_file.display())))?;
        Ok(Self {
            helm,
            kubeconfig: kubeconfig.to_path_buf(),
            values_file: values_file.to_path_buf(),
        })
    }

    fn run(&self, verb: &str, extra: &[&str]) -> Result<String> {
        let kubeconfig = self.kubeconfig.display().to_string();
        let chart = e2e_chart::chart_dir().display().to_string();
        let mut args: Vec<String> = vec![verb.into(), RELEASE.into()];
        if verb != "uninstall" {
            args.push(chart);
        }
        args.extend(["--namespace", NAMESPACE, "--kubeconfig", &kubeconfig].map(String::from));
        args.extend(extra.iter().map(|a| a.to_string()));
        Ok(self.helm.run(&args, None)?)
    }

    /// `helm install` with the demo's values; helm's output (with the chart's NOTES).
    pub fn install(&self) -> Result<String> {
        let values = self.values_file.display().to_string();
        self.run("install", &["--values", &values])
    }

    /// `helm upgrade --reuse-values` with `--set key=value` pairs (booleans and numbers keep their
    /// type) and `--set-string` pairs (fees: decimal strings that must stay strings).
    pub fn upgrade(&self, set: &[(&str, &str)], set_string: &[(&str, &str)]) -> Result<String> {
        let typed: Vec<String> = set.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let strings: Vec<String> = set_string.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut extra = vec!["--reuse-values"];
        for pair in &typed {
            extra.extend(["--set", pair]);
        }
        for pair in &strings {
            extra.extend(["--set-string", pair]);
        }
        self.run("upgrade", &extra)
    }

    /// `helm uninstall --wait`.
    pub fn uninstall(&self) -> Result<String> {
        self.run("uninstall", &["--wait"])
    }
}

/// One GET of the operator's `/readyz` at `address` (its pod IP and port): `Ok` with the body when ready.
pub async fn readyz(address: std::net::SocketAddr) -> std::result::Result<String, String> {
    // A node-local address: never through a proxy from the environment.
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(2))
        .build()
        .map_err(|e| e.to_string())?;
    let response = client
        .get(format!("http://{address}/readyz"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response.text().await.map_err(|e| e.to_string())?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(format!("{status} {body}"))
    }
}
