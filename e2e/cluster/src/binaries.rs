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
        let pinned = versions::pinned();
        let assets = std::env::var_os("KUBEBUILDER_ASSETS").map(PathBuf::from);
        let cache = cache_root();
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

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}
