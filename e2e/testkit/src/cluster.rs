//! What cluster tests share beyond the cluster itself: a place for test repositories that sandboxed
//! pods can read, and waits on Kubernetes conditions through kube's `await_condition`.

use std::fmt::Debug;
use std::time::Duration;

use kube::Resource;
use kube::api::Api;
use kube::runtime::wait::{Condition, await_condition};

/// A fresh directory for test repositories, spelled without `..` (repository URLs may not contain it),
/// somewhere sandboxed pods can read: they see the host's filesystem read-only but get an empty /tmp,
/// so a checkout under /tmp (as CI may use) keeps its test repositories in the e2e cache instead.
pub fn repositories_dir() -> tempfile::TempDir {
    let candidates = [
        Some(crate::target_dir().join("e2e-repos")),
        e2e_cluster::binaries::cache_root().map(|root| root.join("test-repos")),
    ];
    for root in candidates.into_iter().flatten() {
        std::fs::create_dir_all(&root)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", root.display()));
        let root = std::fs::canonicalize(&root)
            .unwrap_or_else(|e| panic!("cannot resolve {}: {e}", root.display()));
        if !root.starts_with("/tmp") {
            return tempfile::tempdir_in(&root).unwrap_or_else(|e| {
                panic!("cannot create a directory in {}: {e}", root.display())
            });
        }
    }
    panic!(
        "no place outside /tmp for test repositories: set OUTLAYER_E2E_CACHE to a directory outside /tmp"
    )
}

/// Waits (one watch, no polling) until object `name` in `api` meets `condition`, e.g.
/// `kube::runtime::wait::conditions::is_crd_established()`, and returns it as last seen (`None`
/// when the condition holds of a missing object, as `is_deleted` does); panics after `limit` naming
/// `what`.
pub async fn await_condition_within<K>(
    what: &str,
    limit: Duration,
    api: Api<K>,
    name: &str,
    condition: impl Condition<K>,
) -> Option<K>
where
    K: Resource + Clone + Debug + serde::de::DeserializeOwned + Send + 'static,
{
    match tokio::time::timeout(limit, await_condition(api, name, condition)).await {
        Ok(Ok(object)) => object,
        Ok(Err(e)) => panic!("{what}: the watch on {name} failed: {e}"),
        Err(_) => panic!("timed out after {limit:?} waiting for {what}"),
    }
}
