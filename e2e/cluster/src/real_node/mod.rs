//! A real node next to the local control plane: containerd + runc, the kubelet, kube-proxy (nftables)
//! and kube-router enforcing NetworkPolicies, on a bridge of their own, running images built from the
//! repository's Dockerfiles (`e2e/real-node/images.sh`). Built by `e2e/real-node/build.sh`.
//!
//! ```no_run
//! # async fn demo() -> e2e_cluster::Result<()> {
//! use e2e_cluster::{Cluster, ClusterOptions, real_node};
//! let images = real_node::build_images(std::path::Path::new("target/debug"))?;
//! let mut cluster = Cluster::start_with(ClusterOptions::real_node()).await?;
//! cluster.start_real_node(&images).await?;
//! // pods now run as containers; images.executor names the executor image
//! # Ok(())
//! # }
//! ```
//! Everything the node adds to the machine is removed when the [`crate::Cluster`] drops, and, should a
//! run be killed before that, by the next real node's start (see [`host::RunRecord`]).

pub mod config;
pub mod host;
mod mirror;
pub mod probe;

pub use mirror::GitMirror;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Error, Result, versions};

/// The node's IP, on [`host::BRIDGE`]; also the pods' gateway and where the apiserver listens.
pub const NODE_IP: &str = "10.213.0.1";
/// The node's pod CIDR (the bridge's subnet) and the cluster CIDR it is allocated from.
pub const POD_CIDR: &str = "10.213.0.0/24";
pub const CLUSTER_CIDR: &str = "10.213.0.0/16";
/// The cluster DNS address pods are told about (no DNS server runs; names are not resolved).
pub const CLUSTER_DNS: &str = "10.0.0.10";

/// The real node's executables, from `e2e/real-node/build.sh`'s cache directories.
#[derive(Debug, Clone)]
pub struct NodeBinaries {
    pub kubelet: PathBuf,
    pub kube_proxy: PathBuf,
    pub containerd: PathBuf,
    pub ctr: PathBuf,
    pub runc: PathBuf,
    pub cni_dir: PathBuf,
    pub kube_router: PathBuf,
}

impl NodeBinaries {
    pub fn locate() -> Result<Self> {
        let cache = cache()?;
        let v = versions::pinned();
        let node = |dir: String, name: &str| cache.join(dir).join("bin").join(name);
        let binaries = NodeBinaries {
            kubelet: node(format!("k8s-node-{}", v.kubernetes), "kubelet"),
            kube_proxy: node(format!("k8s-node-{}", v.kubernetes), "kube-proxy"),
            containerd: node(format!("containerd-{}", v.containerd), "containerd"),
            ctr: node(format!("containerd-{}", v.containerd), "ctr"),
            runc: node(format!("runc-{}", v.runc), "runc"),
            cni_dir: cache.join(format!("cni-plugins-{}/bin", v.cni_plugins)),
            kube_router: node(format!("kube-router-{}", v.kube_router), "kube-router"),
        };
        let missing: Vec<String> = [
            &binaries.kubelet,
            &binaries.kube_proxy,
            &binaries.containerd,
            &binaries.ctr,
            &binaries.runc,
            &binaries.cni_dir.join("bridge"),
            &binaries.kube_router,
        ]
        .iter()
        .filter(|p| !p.exists())
        .map(|p| p.display().to_string())
        .collect();
        if missing.is_empty() {
            Ok(binaries)
        } else {
            Err(Error::Config(format!(
                "real-node binaries missing: {}. Build them with `e2e/real-node/build.sh` \
                 (scripts/install-deps runs it; minutes the first time, cached afterwards)",
                missing.join(", ")
            )))
        }
    }

    /// The directory holding `containerd-shim-runc-v2` (containerd finds its shim on PATH).
    pub fn shim_dir(&self) -> PathBuf {
        self.ctr.parent().map(Path::to_path_buf).unwrap_or_default()
    }
}

fn cache() -> Result<PathBuf> {
    crate::binaries::cache_root()
        .ok_or_else(|| Error::Config("no cache directory: set OUTLAYER_E2E_CACHE or HOME".into()))
}

/// The images built for the real node: reference → OCI archive.
#[derive(Debug, Clone)]
pub struct Images {
    pub archives: BTreeMap<String, PathBuf>,
    pub executor: String,
    pub compiler: String,
    pub operator: String,
    /// A Debian shell image (bash, coreutils) for checks from inside a pod.
    pub debian: String,
    pub pause: String,
}

impl Images {
    /// These images with only `references` (and the sandbox image) to import: importing is most of
    /// a real node's start (the compiler image alone is ~1.2 GB unpacked).
    pub fn only(&self, references: &[&str]) -> Images {
        let mut images = self.clone();
        images.archives.retain(|reference, _| {
            *reference == self.pause || references.contains(&reference.as_str())
        });
        images
    }
}

/// Builds (or finds in the cache) the images from the repository's Dockerfiles with the prebuilt
/// binaries in `bin_dir` (`outlayer-executor`, `outlayer-compiler`, `outlayer-operator`).
pub fn build_images(bin_dir: &Path) -> Result<Images> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../real-node/images.sh");
    let started = std::time::Instant::now();
    let output = Command::new("bash")
        .arg(&script)
        .arg(bin_dir)
        .stderr(std::process::Stdio::inherit())
        .output()
        .map_err(|source| Error::Io {
            what: format!("run {}", script.display()),
            source,
        })?;
    if !output.status.success() {
        return Err(Error::Config(format!(
            "{} {} failed ({}); its progress lines above say where",
            script.display(),
            bin_dir.display(),
            output.status
        )));
    }
    let archives: BTreeMap<String, PathBuf> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let (reference, archive) = line.split_once('=')?;
            Some((reference.to_owned(), PathBuf::from(archive)))
        })
        .collect();
    let find = |prefix: &str| -> Result<String> {
        archives
            .keys()
            .find(|r| r.starts_with(prefix))
            .cloned()
            .ok_or_else(|| Error::Config(format!("images.sh printed no {prefix} image")))
    };
    let images = Images {
        executor: find("ghcr.io/outlayer/outlayer-executor:")?,
        compiler: find("ghcr.io/outlayer/outlayer-compiler:")?,
        operator: find("ghcr.io/outlayer/outlayer-operator:")?,
        debian: find("outlayer.local/debian:")?,
        pause: find("registry.k8s.io/pause:")?,
        archives: archives.clone(),
    };
    eprintln!(
        "real-node images ready in {:.1} s: {}",
        started.elapsed().as_secs_f64(),
        images
            .archives
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(images)
}

/// Host state owned by a cluster started for a real node: released (network removed, tunables
/// restored, stray paths deleted) when the cluster drops, after every process has stopped.
pub(crate) struct HostState {
    cache: PathBuf,
    state_dir: PathBuf,
    record: host::RunRecord,
    _lock: host::NodeLock,
}

impl HostState {
    /// Takes the machine's real-node lock, undoes whatever a killed run left, records the tunables,
    /// and creates the bridge and the forwarding guard.
    pub(crate) fn prepare(state_dir: &Path) -> Result<Self> {
        let cache = cache()?;
        let lock = host::NodeLock::acquire(&cache)?;
        if let Some(stale) = host::RunRecord::load(&cache) {
            eprintln!(
                "real node: a previous run (state {}) was not torn down; cleaning up after it",
                stale.state_dir.display()
            );
            cleanup(&stale);
            let _ = std::fs::remove_dir_all(&stale.state_dir);
        }
        // A bridge of ours with no record (a crash between creating it and writing the record).
        host::remove_network();
        let record = host::RunRecord {
            state_dir: state_dir.to_owned(),
            tunables: host::read_tunables(),
            pids: Vec::new(),
        };
        record.save(&cache)?;
        host::create_network(NODE_IP, 24)?;
        Ok(HostState {
            cache,
            state_dir: state_dir.to_owned(),
            record,
            _lock: lock,
        })
    }

    pub(crate) fn remember_pid(&mut self, pid: u32, program: &Path) {
        self.record.pids.push((pid, program.to_owned()));
        let _ = self.record.save(&self.cache);
    }

    /// The tunables as they were before the run (the kubelet rewrites some when it starts).
    pub(crate) fn restore_tunables(&self) -> Vec<String> {
        host::restore_tunables(&self.record.tunables)
    }
}

impl Drop for HostState {
    fn drop(&mut self) {
        let started = std::time::Instant::now();
        cleanup(&self.record);
        host::RunRecord::forget(&self.cache);
        eprintln!(
            "real node torn down in {:.1} s (state {})",
            started.elapsed().as_secs_f64(),
            self.state_dir.display()
        );
    }
}

/// Removes everything a run put on the machine; safe to repeat, and safe when parts never existed.
fn cleanup(record: &host::RunRecord) {
    // The node's own processes, if still alive and still what was started.
    let stale: Vec<i32> = record
        .pids
        .iter()
        .filter(|(pid, program)| {
            std::fs::read_link(format!("/proc/{pid}/exe"))
                .map(|exe| exe == *program)
                .unwrap_or(false)
        })
        .filter_map(|(pid, _)| i32::try_from(*pid).ok())
        .collect();
    host::kill_all(&stale);
    // Containers and sandboxes (their shims outlive containerd by design), then the shims.
    for _ in 0..3 {
        let pods = host::pod_processes();
        let shims = host::processes_mentioning(&record.state_dir.to_string_lossy());
        if pods.is_empty() && shims.is_empty() {
            break;
        }
        host::kill_all(&pods);
        host::kill_all(&shims);
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    host::unmount_under(&record.state_dir);
    host::remove_pod_cgroups();
    host::remove_network();
    host::remove_stray_paths();
    let changed = host::restore_tunables(&record.tunables);
    if !changed.is_empty() {
        eprintln!(
            "real node: restored kernel tunables: {}",
            changed.join(", ")
        );
    }
}
