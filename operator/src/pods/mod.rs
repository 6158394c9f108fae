//! Pure builders: an object in, the Kubernetes objects the operator creates for it out. Nothing here
//! talks to the API server, so every field is unit-tested.

pub mod compile;
pub mod executor;
pub mod hardening;
pub mod result;

pub use executor::{ExecutorPod, executor_pod, executor_pod_name};
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
