//! The pinned control-plane versions, read from the same file `e2e/control-plane/build.sh` sources.

const VERSIONS_ENV: &str = include_str!("../../control-plane/versions.env");

/// Versions the harness expects the control-plane binaries to report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Versions {
    /// e.g. `v1.36.3`
    pub kubernetes: &'static str,
    /// e.g. `v3.6.8`
    pub etcd: &'static str,
    /// The helm CLI, e.g. `v4.3.1`.
    pub helm: &'static str,
    /// The real node's containerd, runc, CNI plugins, kube-router and BuildKit.
    pub containerd: &'static str,
    pub runc: &'static str,
    pub cni_plugins: &'static str,
    pub kube_router: &'static str,
    pub buildkit: &'static str,
    /// The sandbox image reference containerd is pinned to.
    pub pause_image: &'static str,
}

/// The versions pinned in `e2e/control-plane/versions.env`.
pub fn pinned() -> Versions {
    Versions {
        kubernetes: value("KUBERNETES_VERSION"),
        etcd: value("ETCD_VERSION"),
        helm: value("HELM_VERSION"),
        containerd: value("CONTAINERD_VERSION"),
        runc: value("RUNC_VERSION"),
        cni_plugins: value("CNI_PLUGINS_VERSION"),
        kube_router: value("KUBE_ROUTER_VERSION"),
        buildkit: value("BUILDKIT_VERSION"),
        pause_image: value("PAUSE_IMAGE"),
    }
}

/// The value of `key` in versions.env; the file is compiled in, so a missing key is a build-time
/// bug caught by this crate's unit test, not something a user can cause.
fn value(key: &str) -> &'static str {
    VERSIONS_ENV
        .lines()
        .map(str::trim)
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
        .map(str::trim)
        .unwrap_or_else(|| panic!("e2e/control-plane/versions.env has no {key}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_env_pins_exact_versions() {
        let versions = pinned();
        for v in [
            versions.kubernetes,
            versions.etcd,
            versions.helm,
            versions.containerd,
            versions.runc,
            versions.cni_plugins,
            versions.kube_router,
            versions.buildkit,
        ] {
            let parts: Vec<_> = v.trim_start_matches('v').split('.').collect();
            assert!(v.starts_with('v') && parts.len() == 3, "{v} is not vX.Y.Z");
            assert!(
                parts.iter().all(|p| p.parse::<u32>().is_ok()),
                "{v} is not vX.Y.Z"
            );
        }
    }

    #[test]
    // The push exists only when k8s-openapi's v1_36 feature is on; that is the point.
    #[allow(clippy::vec_init_then_push)]
    fn kubernetes_minor_matches_k8s_openapi_feature() {
        // The server and the Rust types must agree: k8s-openapi is built with the v1_36 feature.
        assert!(pinned().kubernetes.starts_with("v1.36."), "{:?}", pinned());
        let mut enabled: Vec<&str> = Vec::new();
        k8s_openapi::k8s_if_1_36! { enabled.push("1.36"); }
        assert_eq!(
            enabled,
            ["1.36"],
            "k8s-openapi is not built for Kubernetes 1.36"
        );
    }
}
