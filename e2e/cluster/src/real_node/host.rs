//! The host side of a real node: the machine-wide lock, the pod bridge and the forwarding guard, the
//! kernel tunables the kubelet and CNI change, and removing everything a run (or a killed run) left.
//!
//! Everything here acts on fixed names ([`BRIDGE`], [`GUARD_TABLE`], the `kubepods` cgroups), which is
//! why one real node runs per machine at a time ([`NodeLock`]).

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The pod bridge; the node IP lives on it, so the kubelet, the apiserver and kube-proxy have a
/// non-loopback address before any pod exists.
pub const BRIDGE: &str = "outlayer0";
/// nftables table holding the guard that keeps every pod packet on this machine.
pub const GUARD_TABLE: &str = "outlayer_e2e_guard";

/// Kernel tunables the kubelet (`vm.overcommit_memory`, `kernel.panic`, `kernel.panic_on_oops`, key
/// quotas), the CNI bridge (`net.ipv4.ip_forward`) and kube-proxy/kube-router (bridge netfilter,
/// `route_localnet`) may change. Recorded before a run and written back after it.
pub const TUNABLES: &[&str] = &[
    "vm/overcommit_memory",
    "vm/panic_on_oom",
    "kernel/panic",
    "kernel/panic_on_oops",
    "kernel/keys/root_maxkeys",
    "kernel/keys/root_maxbytes",
    "net/ipv4/ip_forward",
    "net/ipv4/conf/all/route_localnet",
    "net/bridge/bridge-nf-call-iptables",
    "net/bridge/bridge-nf-call-ip6tables",
    "net/netfilter/nf_conntrack_max",
];

/// Holds the machine-wide real-node lock (an exclusive `flock`, released when the process dies).
pub struct NodeLock {
    _file: File,
}

impl NodeLock {
    pub fn acquire(cache: &Path) -> Result<Self> {
        std::fs::create_dir_all(cache).map_err(|source| Error::Io {
            what: format!("create {}", cache.display()),
            source,
        })?;
        let path = cache.join("real-node.lock");
        let file = File::create(&path).map_err(|source| Error::Io {
            what: format!("open {}", path.display()),
            source,
        })?;
        file.lock().map_err(|source| Error::Io {
            what: format!(
                "lock {} (another real node runs on this machine?)",
                path.display()
            ),
            source,
        })?;
        Ok(NodeLock { _file: file })
    }
}

/// What a run must undo, written to the cache before anything changes so that the next run can undo
/// it when this one was killed before its teardown.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RunRecord {
    /// The run's state directory (containerd, kubelet, CNI state, pod logs).
    pub state_dir: PathBuf,
    /// Tunable → value before the run.
    pub tunables: BTreeMap<String, String>,
    /// Node processes started so far (pid, executable path), killed if still alive.
    pub pids: Vec<(u32, PathBuf)>,
}

impl RunRecord {
    pub fn path(cache: &Path) -> PathBuf {
        cache.join("real-node-run.json")
    }

    pub fn save(&self, cache: &Path) -> Result<()> {
        let path = Self::path(cache);
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| Error::Config(format!("serialize the run record: {e}")))?;
        std::fs::write(&path, text).map_err(|source| Error::Io {
            what: format!("write {}", path.display()),
            source,
        })
    }

    pub fn load(cache: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(Self::path(cache)).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub fn forget(cache: &Path) {
        let _ = std::fs::remove_file(Self::path(cache));
    }
}

pub fn read_tunables() -> BTreeMap<String, String> {
    TUNABLES
        .iter()
        .filter_map(|name| {
            let value = std::fs::read_to_string(Path::new("/proc/sys").join(name)).ok()?;
            Some(((*name).to_owned(), value.trim().to_owned()))
        })
        .collect()
}

/// Writes back recorded values; returns the tunables that differed (for the log).
pub fn restore_tunables(saved: &BTreeMap<String, String>) -> Vec<String> {
    let mut changed = Vec::new();
    for (name, value) in saved {
        let path = Path::new("/proc/sys").join(name);
        let now = std::fs::read_to_string(&path)
            .map(|v| v.trim().to_owned())
            .unwrap_or_default();
        if now != *value && std::fs::write(&path, value).is_ok() {
            changed.push(format!("{name}: {now} -> {value}"));
        }
    }
    changed
}

/// Runs a command, returning stdout; the error names the command and carries its stderr.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let output = Command::new(program)
        .args(args)
        .output()
        .map_err(|source| Error::Io {
            what: format!("run {program} {}", args.join(" ")),
            source,
        })?;
    if !output.status.success() {
        return Err(Error::Config(format!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Like [`run`], ignoring failure (teardown of what may already be gone).
pub fn run_quiet(program: &str, args: &[&str]) {
    let _ = Command::new(program).args(args).output();
}

/// The bridge with the node IP, and the guard: no packet is forwarded between the pod bridge and
/// any other interface, so pods reach the node (and each other) but never anything beyond it.
pub fn create_network(node_ip: &str, prefix_len: u8) -> Result<()> {
    let _ = run("modprobe", &["br_netfilter"]);
    run("ip", &["link", "add", BRIDGE, "type", "bridge"])?;
    run(
        "ip",
        &[
            "addr",
            "add",
            &format!("{node_ip}/{prefix_len}"),
            "dev",
            BRIDGE,
        ],
    )?;
    run("ip", &["link", "set", BRIDGE, "up"])?;
    let guard = format!(
        "table inet {GUARD_TABLE} {{\n\
         chain forward {{\n\
         type filter hook forward priority -300; policy accept;\n\
         iifname \"{BRIDGE}\" oifname != \"{BRIDGE}\" counter drop\n\
         oifname \"{BRIDGE}\" iifname != \"{BRIDGE}\" counter drop\n\
         }}\n}}\n"
    );
    let file = std::env::temp_dir().join(format!("{GUARD_TABLE}-{}.nft", std::process::id()));
    std::fs::write(&file, guard).map_err(|source| Error::Io {
        what: format!("write {}", file.display()),
        source,
    })?;
    let result = run("nft", &["-f", &file.to_string_lossy()]);
    let _ = std::fs::remove_file(&file);
    result.map(|_| ())
}

/// Mount points at or under `dir`, deepest first (the order to unmount them in), from
/// `/proc/self/mountinfo` text. Octal escapes (`\040` for a space) are decoded.
pub fn mounts_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut mounts: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|raw| PathBuf::from(unescape_mount_path(raw)))
        .filter(|mount| mount.starts_with(dir))
        .collect();
    mounts.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    mounts.dedup();
    mounts
}

fn unescape_mount_path(raw: &str) -> String {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Ok(code) = u8::from_str_radix(&raw[i + 1..i + 4], 8)
        {
            out.push(code);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmounts everything under `dir` (lazily: a busy mount goes once its last user does).
pub fn unmount_under(dir: &Path) {
    // Several passes: unmounting a parent can reveal mounts that were shadowed beneath it.
    for _ in 0..4 {
        let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
            return;
        };
        let mounts = mounts_under(&mountinfo, dir);
        if mounts.is_empty() {
            return;
        }
        for mount in mounts {
            let _ = nix::mount::umount2(&mount, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Processes whose cgroup (any v1 hierarchy) lies under a `kubepods` cgroup: every container and
/// pod sandbox the kubelet started.
pub fn pod_processes() -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                .map(|c| in_kubepods(&c))
                .unwrap_or(false)
        })
        .collect()
}

/// Whether `/proc/<pid>/cgroup` text puts the process under `/kubepods`.
pub fn in_kubepods(cgroup: &str) -> bool {
    cgroup
        .lines()
        .filter_map(|line| line.splitn(3, ':').nth(2))
        .any(|path| path == "/kubepods" || path.starts_with("/kubepods/"))
}

/// Processes whose command line mentions `needle` (e.g. the run's state dir: the shims name it).
pub fn processes_mentioning(needle: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let own = std::process::id() as i32;
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| *pid != own)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .collect()
}

pub fn kill_all(pids: &[i32]) {
    for pid in pids {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(*pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

/// Removes the `kubepods` cgroup trees from every v1 hierarchy (deepest first; a cgroup can only be
/// removed once empty, so this runs after the processes are gone).
pub fn remove_pod_cgroups() {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    for hierarchy in hierarchies.flatten() {
        let root = hierarchy.path().join("kubepods");
        if !root.is_dir() {
            continue;
        }
        let mut dirs = Vec::new();
        collect_dirs(&root, &mut dirs);
        dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
        for dir in dirs {
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_owned());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                collect_dirs(&entry.path(), out);
            }
        }
    }
}

/// iptables chains kube-router and the kubelet create (kube-router's `--cleanup-config` needs IPVS,
/// which this kernel lacks): flushed and deleted in every table they may be in.
fn is_node_chain(chain: &str) -> bool {
    [
        "KUBE-ROUTER-",
        "KUBE-POD-FW-",
        "KUBE-NWPLCY-",
        "KUBE-KUBELET-CANARY",
        "KUBE-FIREWALL",
        "KUBE-IPTABLES-HINT",
    ]
    .iter()
    .any(|prefix| chain.starts_with(prefix))
}

/// Chains to remove per table, from `iptables-save` text: (table, chain) in file order.
pub fn node_chains(iptables_save: &str) -> Vec<(String, String)> {
    let mut table = String::new();
    let mut chains = Vec::new();
    for line in iptables_save.lines() {
        if let Some(name) = line.strip_prefix('*') {
            table = name.to_owned();
        } else if let Some(rest) = line.strip_prefix(':') {
            let chain = rest.split(' ').next().unwrap_or_default();
            if is_node_chain(chain) {
                chains.push((table.clone(), chain.to_owned()));
            }
        }
    }
    chains
}

fn remove_iptables_chains(save: &str, iptables: &str) {
    let Ok(text) = run(save, &[]) else {
        return;
    };
    let chains = node_chains(&text);
    if chains.is_empty() {
        return;
    }
    // Rules elsewhere that jump to ours go first (by number: their comments hold spaces and quotes
    // that a rule spec would have to reproduce exactly), else the chains cannot be deleted.
    for (table, chain) in referring_chains(&text) {
        let Ok(listing) = run(
            iptables,
            &["-t", &table, "-L", &chain, "-n", "--line-numbers"],
        ) else {
            continue;
        };
        for number in jumps_to_node_chains(&listing).into_iter().rev() {
            run_quiet(iptables, &["-t", &table, "-D", &chain, &number.to_string()]);
        }
    }
    for (table, chain) in &chains {
        run_quiet(iptables, &["-t", table, "-F", chain]);
    }
    for (table, chain) in &chains {
        run_quiet(iptables, &["-t", table, "-X", chain]);
    }
}

/// (table, chain) of every chain that is not ours but has a rule jumping to one of ours.
fn referring_chains(iptables_save: &str) -> Vec<(String, String)> {
    let mut table = String::new();
    let mut found: Vec<(String, String)> = Vec::new();
    for line in iptables_save.lines() {
        if let Some(name) = line.strip_prefix('*') {
            table = name.to_owned();
        } else if let Some(rule) = line.strip_prefix("-A ") {
            let chain = rule.split(' ').next().unwrap_or_default();
            let target = rule
                .rsplit_once(" -j ")
                .map(|(_, t)| t.split(' ').next().unwrap_or_default())
                .unwrap_or_default();
            let entry = (table.clone(), chain.to_owned());
            if !is_node_chain(chain) && is_node_chain(target) && !found.contains(&entry) {
                found.push(entry);
            }
        }
    }
    found
}

/// Rule numbers (ascending) in `iptables -L CHAIN -n --line-numbers` output whose target is ours.
fn jumps_to_node_chains(listing: &str) -> Vec<u32> {
    listing
        .lines()
        .filter_map(|line| {
            let mut columns = line.split_whitespace();
            let number = columns.next()?.parse::<u32>().ok()?;
            let target = columns.next()?;
            is_node_chain(target).then_some(number)
        })
        .collect()
}

/// Removes what a real node adds to the host network: the guard, kube-proxy's nftables tables,
/// kube-router's and the kubelet's iptables chains and kube-router's ipsets, and the bridge.
pub fn remove_network() {
    run_quiet("nft", &["delete", "table", "inet", GUARD_TABLE]);
    for family in ["ip", "ip6"] {
        run_quiet("nft", &["delete", "table", family, "kube-proxy"]);
    }
    remove_iptables_chains("iptables-save", "iptables");
    remove_iptables_chains("ip6tables-save", "ip6tables");
    if let Ok(sets) = run("ipset", &["list", "-n"]) {
        for set in sets.lines().filter(|s| {
            s.starts_with("KUBE-") || s.starts_with("kube-router") || s.starts_with("inet6:KUBE-")
        }) {
            run_quiet("ipset", &["destroy", set]);
        }
    }
    run_quiet("ip", &["link", "delete", BRIDGE]);
}

/// Paths the node's programs use whatever their configured directories say (REAL-NODE.md): removed
/// after a run.
pub const STRAY_PATHS: &[&str] = &[
    "/var/log/containers",
    "/var/lib/kubelet/device-plugins",
    "/run/containerd/s",
    "/var/lib/cni",
    "/run/buildkit",
];

pub fn remove_stray_paths() {
    for path in STRAY_PATHS {
        let _ = std::fs::remove_dir_all(path);
    }
    // Remove /var/lib/kubelet and /run/containerd too when nothing else is left in them.
    for dir in ["/var/lib/kubelet", "/run/containerd"] {
        let _ = std::fs::remove_dir(dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_under_a_dir_come_deepest_first_and_decoded() {
        let mountinfo = "\
22 1 0:21 / / rw shared:1 - ext4 /dev/vda rw
90 22 0:50 / /tmp/run/containerd/io.containerd.grpc.v1.cri/sandboxes/abc/shm rw - tmpfs shm rw
91 22 0:51 / /tmp/run/kubelet/pods/x/volumes/kubernetes.io~empty-dir/a\\040b rw - tmpfs tmpfs rw
92 22 0:52 / /tmp/run rw - tmpfs tmpfs rw
93 22 0:53 / /tmp/runner rw - tmpfs tmpfs rw
";
        let mounts = mounts_under(mountinfo, Path::new("/tmp/run"));
        assert_eq!(
            mounts,
            vec![
                PathBuf::from("/tmp/run/kubelet/pods/x/volumes/kubernetes.io~empty-dir/a b"),
                PathBuf::from("/tmp/run/containerd/io.containerd.grpc.v1.cri/sandboxes/abc/shm"),
                PathBuf::from("/tmp/run"),
            ]
        );
    }

    #[test]
    fn kubepods_membership_reads_any_hierarchy() {
        assert!(in_kubepods(
            "12:memory:/kubepods/besteffort/pod1/abc\n11:cpu,cpuacct:/kubepods/besteffort/pod1/abc\n"
        ));
        assert!(in_kubepods("3:pids:/kubepods\n"));
        assert!(!in_kubepods("12:memory:/user.slice\n0::/\n"));
        assert!(!in_kubepods("12:memory:/kubepods-other\n"));
    }

    #[test]
    fn node_chains_are_found_per_table_and_others_kept() {
        let save = "\
*filter
:INPUT ACCEPT [0:0]
:KUBE-ROUTER-INPUT - [0:0]
:KUBE-POD-FW-ABC - [0:0]
:DOCKER - [0:0]
-A INPUT -m comment --comment \"kube-router netpol - 4IA2\" -j KUBE-ROUTER-INPUT
COMMIT
*mangle
:KUBE-KUBELET-CANARY - [0:0]
COMMIT
";
        assert_eq!(
            node_chains(save),
            vec![
                ("filter".to_owned(), "KUBE-ROUTER-INPUT".to_owned()),
                ("filter".to_owned(), "KUBE-POD-FW-ABC".to_owned()),
                ("mangle".to_owned(), "KUBE-KUBELET-CANARY".to_owned()),
            ]
        );
        assert_eq!(
            referring_chains(save),
            vec![("filter".to_owned(), "INPUT".to_owned())]
        );
    }

    #[test]
    fn jumps_are_found_by_number_whatever_their_comments_hold() {
        let listing = "\
Chain INPUT (policy ACCEPT)
num  target     prot opt source               destination
1    KUBE-ROUTER-INPUT  0    --  0.0.0.0/0            0.0.0.0/0            /* kube-router netpol - 4IA2 */
2    ACCEPT     0    --  0.0.0.0/0            0.0.0.0/0
3    KUBE-ROUTER-INPUT  0    --  0.0.0.0/0            0.0.0.0/0
";
        assert_eq!(jumps_to_node_chains(listing), vec![1, 3]);
    }

    #[test]
    fn run_record_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let record = RunRecord {
            state_dir: PathBuf::from("/tmp/x"),
            tunables: BTreeMap::from([("kernel/panic".to_owned(), "1".to_owned())]),
            pids: vec![(42, PathBuf::from("/bin/kubelet"))],
        };
        record.save(dir.path()).unwrap();
        assert_eq!(RunRecord::load(dir.path()), Some(record));
        RunRecord::forget(dir.path());
        assert_eq!(RunRecord::load(dir.path()), None);
    }
}
