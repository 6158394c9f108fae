//! Pure builders: an object in, the Kubernetes objects the operator creates for it out. Nothing here
//! talks to the API server, so every field is unit-tested.

pub mod compile;
pub mod executor;
pub mod hardening;
pub mod result;

pub use executor::{ExecutorPod, executor_pod, executor_pod_name};
pub use result::{ExecutorOutcome, read_executor_outcome};
