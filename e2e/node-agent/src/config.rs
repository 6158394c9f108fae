//! What the node agent is told: its node name, where it keeps state, and which local binary
//! stands in for each container image.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{Error, Result};

/// The node agent's configuration (the YAML/JSON file of the `e2e-node-agent` binary).
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AgentConfig {
    /// Name of the Node object this agent registers and serves.
    pub node_name: String,
    /// Where pod volumes, termination-message files and container logs live.
    pub state_dir: PathBuf,
    /// Image reference → what runs for it.
    #[serde(default)]
    pub images: BTreeMap<String, ImageSpec>,
    /// The bubblewrap executable (default: `bwrap` on PATH).
    #[serde(default = "default_bwrap")]
    pub bwrap: PathBuf,
    /// Capacity the Node advertises.
    #[serde(default)]
    pub capacity: Capacity,
    /// Where pods reach the API server, passed to every container as `KUBERNETES_SERVICE_HOST`/
    /// `_PORT` as the kubelet does (there, from the `kubernetes` Service): in-cluster clients
    /// (kube-rs, client-go) read them with the service account files. Unset: not passed.
    #[serde(default)]
    pub kubernetes_service: Option<KubernetesService>,
}

/// The API server address given to pods (the local control plane's 127.0.0.1:<port>; the
/// Service's ClusterIP is not routable without a kube-proxy).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KubernetesService {
    pub host: String,
    pub port: u16,
}

/// The local stand-in for a container image.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ImageSpec {
    /// The image's ENTRYPOINT: used when the container sets no `command`. An empty entrypoint
    /// means the image only provides the host OS (containers must set `command`).
    #[serde(default)]
    pub entrypoint: Vec<String>,
    /// The image's CMD: used when the container sets neither `command` nor `args`.
    #[serde(default)]
    pub cmd: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Capacity {
    pub cpu: String,
    pub memory: String,
    pub pods: String,
    pub ephemeral_storage: String,
}

impl Default for Capacity {
    fn default() -> Self {
        Capacity {
            cpu: "8".into(),
            memory: "16Gi".into(),
            pods: "110".into(),
            ephemeral_storage: "100Gi".into(),
        }
    }
}

fn default_bwrap() -> PathBuf {
    PathBuf::from("bwrap")
}

impl AgentConfig {
    pub fn new(node_name: impl Into<String>, state_dir: impl Into<PathBuf>) -> Self {
        AgentConfig {
            node_name: node_name.into(),
            state_dir: state_dir.into(),
            images: BTreeMap::new(),
            bwrap: default_bwrap(),
            capacity: Capacity::default(),
            kubernetes_service: None,
        }
    }

    /// Adds an image whose ENTRYPOINT is `entrypoint` (empty: containers must set `command`).
    pub fn with_image(mut self, image: impl Into<String>, entrypoint: &[&str]) -> Self {
        self.images.insert(
            image.into(),
            ImageSpec {
                entrypoint: entrypoint.iter().map(|s| (*s).to_owned()).collect(),
                cmd: Vec::new(),
            },
        );
        self
    }

    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            what: format!("read config {}", path.display()),
            source,
        })?;
        serde_saphyr::from_str(&text)
            .map_err(|e| Error::Config(format!("parse config {}: {e}", path.display())))
    }

    /// The image spec for `image`; `name` and `name:latest` are the same image, as for a registry.
    pub fn image(&self, image: &str) -> Option<&ImageSpec> {
        self.images.get(image).or_else(|| {
            let has_tag = image
                .rsplit('/')
                .next()
                .is_some_and(|last| last.contains(':'));
            if has_tag {
                image
                    .strip_suffix(":latest")
                    .and_then(|bare| self.images.get(bare))
            } else {
                self.images.get(&format!("{image}:latest"))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_yaml_and_resolves_latest_tag() {
        let config: AgentConfig = serde_saphyr::from_str(
            "nodeName: n1\nstateDir: /tmp/x\nimages:\n  outlayer/executor:\n    entrypoint: [/bin/outlayer-executor]\n",
        )
        .unwrap();
        assert_eq!(config.node_name, "n1");
        let spec = config.image("outlayer/executor:latest").unwrap();
        assert_eq!(spec.entrypoint, vec!["/bin/outlayer-executor"]);
        assert!(config.image("outlayer/executor:v2").is_none());
        assert!(config.image("other").is_none());
    }

    #[test]
    fn readme_example_parses() {
        let config: AgentConfig = serde_saphyr::from_str(
            "nodeName: e2e-node\nstateDir: /var/tmp/e2e-node\nbwrap: bwrap\nimages:\n  outlayer/executor:dev:\n    entrypoint: [/work/main/target/release/outlayer-executor]\n  e2e/host: {}\n",
        )
        .unwrap();
        assert_eq!(
            config.image("e2e/host").unwrap().entrypoint,
            Vec::<String>::new()
        );
        assert_eq!(config.capacity.pods, "110");
        assert_eq!(config.kubernetes_service, None);
    }

    #[test]
    fn parses_the_kubernetes_service() {
        let config: AgentConfig = serde_saphyr::from_str(
            "nodeName: n1\nstateDir: /x\nkubernetesService: {host: 127.0.0.1, port: 6443}\n",
        )
        .unwrap();
        assert_eq!(
            config.kubernetes_service,
            Some(KubernetesService {
                host: "127.0.0.1".into(),
                port: 6443
            })
        );
    }
}
