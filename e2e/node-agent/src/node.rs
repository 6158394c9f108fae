//! The Node object and its heartbeat (Lease renewals and a fresh Ready condition), which the
//! node-lifecycle controller watches exactly as it watches a kubelet.

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{Node, NodeAddress, NodeCondition, NodeStatus, NodeSystemInfo};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};

use crate::config::AgentConfig;
use crate::{Error, POD_IP, Result};

pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// The kubelet's defaults: a 40 s lease renewed every 10 s.
pub const LEASE_DURATION_SECONDS: i32 = 40;

pub fn allocatable(config: &AgentConfig) -> BTreeMap<String, String> {
    let c = &config.capacity;
    [
        ("cpu", &c.cpu),
        ("memory", &c.memory),
        ("pods", &c.pods),
        ("ephemeral-storage", &c.ephemeral_storage),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.clone()))
    .collect()
}

/// Creates the Node if it does not exist yet (labels as a kubelet sets them).
pub async fn register(client: &Client, config: &AgentConfig) -> Result<()> {
    let api = Api::<Node>::all(client.clone());
    let labels: BTreeMap<String, String> = [
        ("kubernetes.io/hostname", config.node_name.as_str()),
        ("kubernetes.io/os", "linux"),
        ("kubernetes.io/arch", std::env::consts::ARCH),
        ("outlayer.dev/node-agent", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let node = Node {
        metadata: ObjectMeta {
            name: Some(config.node_name.clone()),
            labels: Some(labels),
            ..ObjectMeta::default()
        },
        ..Node::default()
    };
    match api.create(&PostParams::default(), &node).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(source) => Err(Error::Kube {
            what: format!("register node {}", config.node_name),
            source,
        }),
    }
}

/// One heartbeat: the Ready condition and capacity in the Node status, and the Lease renewed.
pub async fn heartbeat(client: &Client, config: &AgentConfig) -> Result<()> {
    let now = Timestamp::now();
    let quantities: BTreeMap<String, Quantity> = allocatable(config)
        .into_iter()
        .map(|(k, v)| (k, Quantity(v)))
        .collect();
    let condition = |type_: &str, status: &str, reason: &str, message: &str| NodeCondition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: Some(reason.to_owned()),
        message: Some(message.to_owned()),
        last_heartbeat_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    };
    let status = NodeStatus {
        capacity: Some(quantities.clone()),
        allocatable: Some(quantities),
        conditions: Some(vec![
            condition(
                "Ready",
                "True",
                "KubeletReady",
                "e2e node agent is posting ready status",
            ),
            condition(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "no pressure",
            ),
            condition(
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "no pressure",
            ),
            condition(
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "no pressure",
            ),
        ]),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: POD_IP.into(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: config.node_name.clone(),
            },
        ]),
        node_info: Some(NodeSystemInfo {
            architecture: std::env::consts::ARCH.into(),
            operating_system: "linux".into(),
            container_runtime_version: "bwrap://e2e-node-agent".into(),
            kubelet_version: format!("e2e-node-agent/{}", env!("CARGO_PKG_VERSION")),
            os_image: "host".into(),
            kernel_version: kernel_version(),
            ..NodeSystemInfo::default()
        }),
        ..NodeStatus::default()
    };
    Api::<Node>::all(client.clone())
        .patch_status(
            &config.node_name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "status": status })),
        )
        .await
        .map_err(|source| Error::Kube {
            what: format!("update status of node {}", config.node_name),
            source,
        })?;
    renew_lease(client, &config.node_name, now).await
}

async fn renew_lease(client: &Client, node: &str, now: Timestamp) -> Result<()> {
    let api = Api::<Lease>::namespaced(client.clone(), LEASE_NAMESPACE);
    let spec = LeaseSpec {
        holder_identity: Some(node.to_owned()),
        lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
        renew_time: Some(MicroTime(now)),
        ..LeaseSpec::default()
    };
    let kube_err = |what: &str| {
        let what = format!("{what} lease {LEASE_NAMESPACE}/{node}");
        move |source| Error::Kube { what, source }
    };
    match api.get_opt(node).await.map_err(kube_err("get"))? {
        Some(_) => {
            api.patch(
                node,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({ "spec": spec })),
            )
            .await
            .map_err(kube_err("renew"))?;
        }
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(node.to_owned()),
                    namespace: Some(LEASE_NAMESPACE.to_owned()),
                    ..ObjectMeta::default()
                },
                spec: Some(spec),
            };
            api.create(&PostParams::default(), &lease)
                .await
                .map_err(kube_err("create"))?;
        }
    }
    Ok(())
}

fn kernel_version() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}
