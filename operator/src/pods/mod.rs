//! Pure builders: an object in, the Kubernetes objects the operator creates for it out. Nothing here
//! talks to the API server, so every field is unit-tested.

pub mod compile;
pub mod executor;
pub mod hardening;
pub mod result;

pub use executor::{ExecutorPod, executor_pod, executor_pod_name, executor_pod_name_for};
pub use result::{ExecutorOutcome, read_executor_outcome};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

/// The name, namespace and controller owner reference of an object the API server returned; children
/// built from it are named after it, live in its namespace and are garbage-collected with it.
pub(crate) fn owner_identity<K: kube::Resource<DynamicType = ()>>(
    owner: &K,
) -> crate::Result<(&str, &str, OwnerReference)> {
    let meta = owner.meta();
    let name = meta
        .name
        .as_deref()
        .ok_or(crate::Error::MissingMetadata("metadata.name"))?;
    let namespace = meta
        .namespace
        .as_deref()
        .ok_or(crate::Error::MissingMetadata("metadata.namespace"))?;
    let reference = owner
        .controller_owner_ref(&())
        .ok_or(crate::Error::MissingMetadata("metadata.uid"))?;
    Ok((name, namespace, reference))
}

/// An executor container's resources: a small CPU request under a CPU limit (so small jobs share a
/// node), memory and ephemeral storage requested as limited.
pub(crate) fn executor_resources(
    config: &crate::config::OperatorConfig,
    memory: String,
) -> k8s_openapi::api::core::v1::ResourceRequirements {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    let mut resources = guaranteed_resources(
        &config.executor_cpu,
        memory,
        &config.executor_ephemeral_storage,
    );
    if let Some(requests) = resources.requests.as_mut() {
        requests.insert(
            "cpu".to_string(),
            Quantity(config.executor_cpu_request.clone()),
        );
    }
    resources
}

/// Requests equal to limits (Guaranteed QoS), as every sandboxed container gets.
pub(crate) fn guaranteed_resources(
    cpu: &str,
    memory: String,
    ephemeral_storage: &str,
) -> k8s_openapi::api::core::v1::ResourceRequirements {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    let amounts = std::collections::BTreeMap::from([
        ("cpu".to_string(), Quantity(cpu.to_string())),
        ("memory".to_string(), Quantity(memory)),
        (
            "ephemeral-storage".to_string(),
            Quantity(ephemeral_storage.to_string()),
        ),
    ]);
    k8s_openapi::api::core::v1::ResourceRequirements {
        requests: Some(amounts.clone()),
        limits: Some(amounts),
        ..Default::default()
    }
}

/// The module cache volume (`cache`), the configured PersistentVolumeClaim; each container mounts the
/// parts it needs.
pub(crate) fn cache_volume(
    config: &crate::config::OperatorConfig,
) -> k8s_openapi::api::core::v1::Volume {
    k8s_openapi::api::core::v1::Volume {
        name: "cache".to_string(),
        persistent_volume_claim: Some(
            k8s_openapi::api::core::v1::PersistentVolumeClaimVolumeSource {
                claim_name: config.cache_claim_name.clone(),
                read_only: Some(false),
            },
        ),
        ..Default::default()
    }
}

/// Whether `child` names the object with uid `owner_uid` as its controller. Names are predictable and
/// anyone allowed to create objects in the namespace can squat one: a child is the operator's to read or
/// reuse only when it points at its owner's uid (which exists only once the owner does).
pub fn controlled_by(
    child: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    owner_uid: &str,
) -> bool {
    child
        .owner_references
        .iter()
        .flatten()
        .any(|reference| reference.uid == owner_uid && reference.controller == Some(true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn child(references: Vec<(&str, Option<bool>)>) -> ObjectMeta {
        ObjectMeta {
            owner_references: Some(
                references
                    .into_iter()
                    .map(|(uid, controller)| OwnerReference {
                        api_version: "outlayer.dev/v1alpha1".into(),
                        kind: "ExecutionRequest".into(),
                        name: "req-1".into(),
                        uid: uid.into(),
                        controller,
                        block_owner_deletion: Some(true),
                    })
                    .collect(),
            ),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn only_a_controller_reference_to_the_owner_uid_counts() {
        assert!(controlled_by(&child(vec![("u1", Some(true))]), "u1"));
        assert!(controlled_by(
            &child(vec![("u0", None), ("u1", Some(true))]),
            "u1"
        ));
        assert!(
            !controlled_by(&child(vec![("u1", None)]), "u1"),
            "not the controller"
        );
        assert!(
            !controlled_by(&child(vec![("u2", Some(true))]), "u1"),
            "another owner"
        );
        assert!(
            !controlled_by(&ObjectMeta::default(), "u1"),
            "no owner at all"
        );
    }
}
