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

/// Image references in the chart's values, and the local binaries the node agent runs for them.
pub const OPERATOR_IMAGE: (&str, &str) = ("outlayer/operator", "demo");
pub const EXECUTOR_IMAGE: (&str, &str) = ("outlayer/executor", "demo");
pub const COMPILER_IMAGE: (&str, &str) = ("outlayer/compiler", "demo");

pub fn image_ref((repository, tag): (&str, &str)) -> String {
    format!("{repository}:{tag}")
}

/// Everything the values depend on that is only known at run time.
pub struct ChartSettings<'a> {
    pub http_port: u16,
    pub rpc_url: String,
    pub block_time_ms: u64,
    /// `file://` root the `https://github.com/` mirror rewrite points at.
    pub mirror_root: &'a Path,
}

/// The values file: one operator replica (pods share the host's network here, so one port), the
/// images the node agent maps, the cache on the demo's volume, the chain, and the compile Jobs'
/// toolchain (a real compiler image has it baked in; the node agent starts containers with an empty
/// environment). A file, not `--set`: PATH may hold characters `--set` would split on.
pub fn values(settings: &ChartSettings<'_>) -> Result<Value> {
    let image = |(repository, tag): (&str, &str)| json!({"repository": repository, "tag": tag});
    let rustup_home = match std::env::var("RUSTUP_HOME") {
        Ok(home) => home,
        Err(_) => format!(
            "{}/.rustup",
            std::env::var("HOME").map_err(|_| Error::Unexpected(
                "neither RUSTUP_HOME nor HOME is set: the compile Jobs need the toolchain".into()
            ))?
        ),
    };
    let path = std::env::var("PATH")
        .map_err(|_| Error::Unexpected("PATH is not set: the compile Jobs need cargo".into()))?;
    Ok(json!({
        "operator": {
            "replicas": 1,
            "httpPort": settings.http_port,
            "image": image(OPERATOR_IMAGE),
        },
        "executor": {"image": image(EXECUTOR_IMAGE)},
        "compiler": {
            "image": image(COMPILER_IMAGE),
            "allowedRepoPrefixes": ["https://github.com/"],
            "gitMirrors": [format!("https://github.com/=file://{}/", settings.mirror_root.display())],
            "env": {
                "PATH": path,
                "OUTLAYER_GIT": crate::artifacts::which("git")?,
                "OUTLAYER_CARGO": crate::artifacts::which("cargo")?,
                "RUSTUP_HOME": rustup_home,
            },
        },
        "cache": {"storageClassName": STORAGE_CLASS, "size": "1Gi"},
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

/// One GET of the operator's `/readyz` on 127.0.0.1:`port`: `Ok` with the body when ready.
pub async fn readyz(port: u16) -> std::result::Result<String, String> {
    // Loopback: never through a proxy from the environment.
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(std::time::Duration::from_secs(2))
        .build()
        .map_err(|e| e.to_string())?;
    let response = client
        .get(format!("http://127.0.0.1:{port}/readyz"))
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
