//! Finding the control-plane binaries that `e2e/control-plane/build.sh` builds.

use std::path::{Path, PathBuf};

use crate::{Error, Result, versions};

/// Paths of the control-plane executables.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub etcd: PathBuf,
    pub kube_apiserver: PathBuf,
    pub kube_controller_manager: PathBuf,
    pub kube_scheduler: PathBuf,
    pub kubectl: PathBuf,
}

/// `$OUTLAYER_E2E_CACHE`, else `$HOME/.cache/outlayer-e2e` (the same default as build.sh).
pub fn cache_root() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("OUTLAYER_E2E_CACHE") {
        return Some(PathBuf::from(dir));
    }
    std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache/outlayer-e2e"))
}

impl Binaries {
    /// Looks in `$KUBEBUILDER_ASSETS` first (envtest convention), then in the build.sh cache.
    pub fn locate() -> Result<Self> {
        Self::locate_in(
            std::env::var_os("KUBEBUILDER_ASSETS").map(PathBuf::from),
            cache_root(),
        )
    }

    /// [`Binaries::locate`] with explicit directories instead of the environment.
    pub fn locate_in(assets: Option<PathBuf>, cache: Option<PathBuf>) -> Result<Self> {
        let pinned = versions::pinned();
        let k8s_dir = cache
            .as_ref()
            .map(|c| c.join(format!("k8s-{}/bin", pinned.kubernetes)));
        let etcd_dir = cache
            .as_ref()
            .map(|c| c.join(format!("etcd-{}/bin", pinned.etcd)));

        let mut searched = Vec::new();
        let mut missing = Vec::new();
        let mut find = |name: &str, cache_dir: &Option<PathBuf>| -> PathBuf {
            let candidates: Vec<PathBuf> = [assets.as_ref(), cache_dir.as_ref()]
                .into_iter()
                .flatten()
                .map(|dir| dir.join(name))
                .collect();
            match candidates.iter().find(|p| is_executable(p)) {
                Some(found) => found.clone(),
                None => {
                    missing.push(name.to_owned());
                    searched.extend(candidates.iter().map(|p| p.display().to_string()));
                    PathBuf::from(name)
                }
            }
        };
        let binaries = Binaries {
            etcd: find("etcd", &etcd_dir),
            kube_apiserver: find("kube-apiserver", &k8s_dir),
            kube_controller_manager: find("kube-controller-manager", &k8s_dir),
            kube_scheduler: find("kube-scheduler", &k8s_dir),
            kubectl: find("kubectl", &k8s_dir),
        };
        if missing.is_empty() {
            Ok(binaries)
        } else {
            Err(Error::BinariesMissing {
                missing: missing.join(", "),
                searched: searched.join(", "),
            })
        }
    }
}

/// The helm CLI that `e2e/control-plane/build.sh` builds (`scripts/install-deps` runs it):
/// `$OUTLAYER_E2E_HELM` when set, else `<cache>/helm-<version>/bin/helm`.
pub fn helm() -> Result<PathBuf> {
    helm_in(
        std::env::var_os("OUTLAYER_E2E_HELM").map(PathBuf::from),
        cache_root(),
    )
}

/// [`helm`] with explicit locations instead of the environment.
pub fn helm_in(explicit: Option<PathBuf>, cache: Option<PathBuf>) -> Result<PathBuf> {
    let candidates: Vec<PathBuf> = match explicit {
        Some(path) => vec![path],
        None => cache
            .map(|c| c.join(format!("helm-{}/bin/helm", versions::pinned().helm)))
            .into_iter()
            .collect(),
    };
    match candidates.iter().find(|p| is_executable(p)) {
        Some(found) => Ok(found.clone()),
        None => Err(Error::HelmMissing {
            version: versions::pinned().helm,
            searched: candidates
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_binaries_point_at_the_build_script() {
        let empty = tempfile::tempdir().unwrap();
        let err = Binaries::locate_in(None, Some(empty.path().to_owned())).unwrap_err();
        let message = err.to_string();
        assert!(message.contains("e2e/control-plane/build.sh"), "{message}");
        assert!(message.contains("kube-apiserver"), "{message}");
        assert!(message.contains("k8s-v1.36.3/bin"), "{message}");
    }

    #[test]
    fn missing_helm_points_at_the_build_script() {
        let empty = tempfile::tempdir().unwrap();
        let message = helm_in(None, Some(empty.path().to_owned()))
            .unwrap_err()
            .to_string();
        assert!(message.contains("scripts/install-deps"), "{message}");
        assert!(message.contains("helm-v4.3.1/bin/helm"), "{message}");
    }

    #[test]
    fn helm_is_found_in_the_cache() {
        use std::os::unix::fs::PermissionsExt;
        let cache = tempfile::tempdir().unwrap();
        let dir = cache
            .path()
            .join(format!("helm-{}/bin", versions::pinned().helm));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("helm");
        std::fs::write(&path, "").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(helm_in(None, Some(cache.path().to_owned())).unwrap(), path);
    }

    #[test]
    fn kubebuilder_assets_win_over_the_cache() {
        use std::os::unix::fs::PermissionsExt;
        let assets = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let pinned = versions::pinned();
        let k8s = cache.path().join(format!("k8s-{}/bin", pinned.kubernetes));
        let etcd = cache.path().join(format!("etcd-{}/bin", pinned.etcd));
        for (dir, names) in [
            (assets.path().to_owned(), &["etcd", "kube-apiserver"][..]),
            (
                k8s,
                &[
                    "kube-apiserver",
                    "kube-controller-manager",
                    "kube-scheduler",
                    "kubectl",
                ][..],
            ),
            (etcd, &["etcd"][..]),
        ] {
            std::fs::create_dir_all(&dir).unwrap();
            for name in names {
                let path = dir.join(name);
                std::fs::write(&path, "").unwrap();
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        let found = Binaries::locate_in(
            Some(assets.path().to_owned()),
            Some(cache.path().to_owned()),
        )
        .unwrap();
        assert_eq!(found.etcd, assets.path().join("etcd"));
        assert_eq!(found.kube_apiserver, assets.path().join("kube-apiserver"));
        assert!(found.kube_scheduler.starts_with(cache.path()));
    }
}
