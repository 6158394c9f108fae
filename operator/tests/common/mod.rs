// Each test binary includes this module and uses a subset of it.
#![allow(dead_code)]

//! Helpers the operator's cluster tests share.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use e2e_cluster::Cluster;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use outlayer_operator::crd;

/// Generous: the control plane shares 2 cores with the build; a condition, not a timing, decides.
pub const WAIT: Duration = Duration::from_secs(120);

/// Polls `probe` until it yields a value; fails the test after [`WAIT`].
pub async fn wait_for<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Applies every CRD with server-side apply and waits until each is Established.
pub async fn install_crds(cluster: &Cluster) {
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client());
    let params = PatchParams::apply("outlayer-operator-tests").force();
    for definition in crd::all() {
        let name = definition.metadata.name.clone().unwrap();
        crds.patch(&name, &params, &Patch::Apply(&definition))
            .await
            .unwrap_or_else(|e| panic!("apiserver rejected CRD {name}: {e}"));
    }
    for definition in crd::all() {
        let name = definition.metadata.name.clone().unwrap();
        let crds = crds.clone();
        wait_for(&format!("CRD {name} to be Established"), || {
            let crds = crds.clone();
            let name = name.clone();
            async move {
                let current = crds.get(&name).await.ok()?;
                current
                    .status?
                    .conditions?
                    .iter()
                    .any(|c| c.type_ == "Established" && c.status == "True")
                    .then_some(())
            }
        })
        .await;
    }
}

/// The workspace's target directory (CARGO_TARGET_DIR or `<workspace>/target`).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

/// An artifact under the target directory, or a failure that says how to build it.
pub fn artifact(relative: &str, how_to_build: &str) -> PathBuf {
    let path = target_dir().join(relative);
    assert!(
        path.exists(),
        "{} is missing: run {how_to_build}",
        path.display()
    );
    path
}
