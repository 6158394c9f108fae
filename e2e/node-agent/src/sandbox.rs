//! The bubblewrap command line that gives a container the filesystem view a container runtime
//! would: the host OS read-only, each volume at its mount path, the termination-message file, an
//! empty read-only `/tmp` unless a volume is mounted there, and optionally no network.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

/// One bind mount into the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub host: PathBuf,
    pub container: PathBuf,
    pub read_only: bool,
}

/// Everything that decides one container's sandbox.
#[derive(Debug, Clone)]
pub struct SandboxSpec {
    pub mounts: Vec<Mount>,
    /// Host directories the container must not see (the agent's own state: other pods' secrets).
    pub hidden: Vec<PathBuf>,
    pub env: Vec<(String, String)>,
    pub argv: Vec<String>,
    pub working_dir: Option<String>,
    pub hostname: String,
    /// No network namespace shared with the host: only an isolated loopback.
    pub isolate_network: bool,
    /// `securityContext.runAsUser`/`runAsGroup`, as seen inside the sandbox.
    pub uid: Option<i64>,
    pub gid: Option<i64>,
    /// Privileged containers keep their capabilities; all others run with none.
    pub privileged: bool,
    /// `readOnlyRootFilesystem`: the sandbox's own root (a tmpfs standing in for the container's
    /// writable layer) becomes read-only too. Host directories are read-only either way.
    pub read_only_root: bool,
}

/// Host trees never bound into a sandbox: bwrap provides fresh /proc and /dev, and /tmp is
/// private to the pod.
const NOT_FROM_HOST: [&str; 3] = ["/proc", "/dev", "/tmp"];

fn private_to_sandbox(path: &Path) -> bool {
    NOT_FROM_HOST.iter().any(|p| path.starts_with(p))
}

/// bwrap arguments (without the program name) for `spec`. `host_root` is `/` except in tests.
pub fn bwrap_args(spec: &SandboxSpec, host_root: &Path) -> Vec<String> {
    let mut args: Vec<String> = [
        "--die-with-parent",
        "--unshare-pid",
        // The command is PID 1, as in a container without an init: SIGTERM only stops it when it
        // installs a handler, which is why graceful deletion falls back to SIGKILL.
        "--as-pid-1",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    if spec.isolate_network {
        args.push("--unshare-net".into());
    }
    if spec.uid.is_some() || spec.gid.is_some() {
        args.push("--unshare-user".into());
        if let Some(uid) = spec.uid {
            args.extend(["--uid".into(), uid.to_string()]);
        }
        if let Some(gid) = spec.gid {
            args.extend(["--gid".into(), gid.to_string()]);
        }
    }
    args.extend(["--hostname".into(), spec.hostname.clone()]);

    // Every path that gets something mounted on it must be creatable: the directories above it
    // are built on bwrap's tmpfs root and filled with read-only binds of their host entries,
    // instead of binding a whole read-only host directory in which mkdir would fail.
    let visible_hidden: Vec<PathBuf> = spec
        .hidden
        .iter()
        .map(|h| resolve_on_host(host_root, h))
        .filter(|h| !private_to_sandbox(h))
        .collect();
    let mut targets: Vec<PathBuf> = spec
        .mounts
        .iter()
        .map(|m| resolve_on_host(host_root, &m.container))
        .collect();
    targets.extend(visible_hidden.iter().cloned());
    targets.push(PathBuf::from("/tmp"));
    let mut exploded: BTreeSet<PathBuf> = BTreeSet::from([PathBuf::from("/")]);
    for t in &targets {
        for ancestor in t.ancestors().skip(1) {
            if !private_to_sandbox(ancestor) {
                exploded.insert(ancestor.to_owned());
            }
        }
    }
    let target_set: BTreeSet<&PathBuf> = targets.iter().collect();
    // BTreeSet order puts every directory before its subdirectories.
    for dir in &exploded {
        if dir != Path::new("/") {
            args.extend(["--dir".into(), path_str(dir)]);
        }
        let Ok(entries) = std::fs::read_dir(host_root.join(dir.strip_prefix("/").unwrap_or(dir)))
        else {
            continue;
        };
        let mut names: Vec<_> = entries.flatten().map(|e| e.file_name()).collect();
        names.sort();
        for name in names {
            let inner = dir.join(&name);
            if exploded.contains(&inner)
                || target_set.contains(&inner)
                || private_to_sandbox(&inner)
            {
                continue;
            }
            let host = host_root.join(inner.strip_prefix("/").unwrap_or(&inner));
            match std::fs::read_link(&host) {
                Ok(link) => args.extend(["--symlink".into(), path_str(&link), path_str(&inner)]),
                Err(_) => args.extend(["--ro-bind".into(), path_str(&host), path_str(&inner)]),
            }
        }
    }
    args.extend([
        "--dev".into(),
        "/dev".into(),
        "--proc".into(),
        "/proc".into(),
    ]);

    for hidden in &visible_hidden {
        let target = path_str(hidden);
        args.extend([
            "--tmpfs".into(),
            target.clone(),
            "--remount-ro".into(),
            target,
        ]);
    }
    let mut mounts = spec.mounts.clone();
    // Parents before children, so a volume mounted inside another volume stays visible.
    mounts.sort_by_key(|m| m.container.components().count());
    let tmp_is_volume = mounts.iter().any(|m| m.container == Path::new("/tmp"));
    if !tmp_is_volume {
        args.extend(["--tmpfs".into(), "/tmp".into()]);
    }
    for m in &mounts {
        let flag = if m.read_only { "--ro-bind" } else { "--bind" };
        args.extend([
            flag.into(),
            path_str(&m.host),
            path_str(&resolve_on_host(host_root, &m.container)),
        ]);
    }
    if !tmp_is_volume {
        // Read-only only after the mounts: bwrap creates their mount points under /tmp first.
        args.extend(["--remount-ro".into(), "/tmp".into()]);
    }

    if spec.read_only_root {
        // Last of the mount operations: everything above needed a writable root to be created.
        args.extend(["--remount-ro".into(), "/".into()]);
    }
    if !spec.privileged {
        args.extend(["--cap-drop".into(), "ALL".into()]);
    }
    args.push("--clearenv".into());
    for (k, v) in &spec.env {
        args.extend(["--setenv".into(), k.clone(), v.clone()]);
    }
    args.extend([
        "--chdir".into(),
        spec.working_dir.clone().unwrap_or_else(|| "/".into()),
    ]);
    args.push("--".into());
    args.extend(spec.argv.iter().cloned());
    args
}

/// `path` with symlinks in its existing host prefix resolved (`/var/run/x` → `/run/x`), so the
/// directories that need rebuilding are the real ones bwrap will traverse.
fn resolve_on_host(host_root: &Path, path: &Path) -> PathBuf {
    resolve_bounded(host_root, path, 16)
}

fn resolve_bounded(host_root: &Path, path: &Path, hops_left: u32) -> PathBuf {
    let mut resolved = PathBuf::from("/");
    let mut components = path
        .components()
        .filter(|c| matches!(c, Component::Normal(_)));
    while let Some(Component::Normal(name)) = components.next() {
        let candidate = resolved.join(name);
        let host = host_root.join(candidate.strip_prefix("/").unwrap_or(&candidate));
        match std::fs::read_link(&host) {
            Ok(link) if hops_left > 0 => {
                let rest: PathBuf = components.by_ref().collect();
                let next = if link.is_absolute() {
                    link.join(rest)
                } else {
                    resolved.join(link).join(rest)
                };
                return resolve_bounded(host_root, &normalize(&next), hops_left - 1);
            }
            _ => resolved = candidate,
        }
    }
    resolved
}

fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(mounts: Vec<Mount>) -> SandboxSpec {
        SandboxSpec {
            mounts,
            hidden: vec![],
            env: vec![("A".into(), "b".into())],
            argv: vec!["/bin/true".into()],
            working_dir: None,
            hostname: "pod".into(),
            isolate_network: true,
            uid: None,
            gid: None,
            privileged: false,
            read_only_root: false,
        }
    }

    #[test]
    fn rebuilds_only_the_directories_above_mount_points() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("usr/bin")).unwrap();
        std::fs::create_dir_all(r.join("etc")).unwrap();
        std::fs::create_dir_all(r.join("run/lock")).unwrap();
        std::fs::create_dir_all(r.join("var")).unwrap();
        std::os::unix::fs::symlink("usr/bin", r.join("bin")).unwrap();
        std::os::unix::fs::symlink("/run", r.join("var/run")).unwrap();
        let args = bwrap_args(
            &spec(vec![Mount {
                host: "/state/tok".into(),
                container: "/var/run/secrets/sa".into(),
                read_only: true,
            }]),
            r,
        );
        let joined = args.join(" ");
        let host = |p: &str| r.join(p).display().to_string();
        // /run is rebuilt (the mount resolves through the /var/run symlink), its host entries
        // stay visible read-only; /etc and /usr are bound whole; the symlink is recreated.
        assert!(
            joined.contains(&format!("--ro-bind {} /run/lock", host("run/lock"))),
            "{joined}"
        );
        assert!(
            joined.contains(&format!("--ro-bind {} /etc", host("etc"))),
            "{joined}"
        );
        assert!(joined.contains("--symlink usr/bin /bin"), "{joined}");
        assert!(joined.contains("--dir /run/secrets"), "{joined}");
        let mut read_only = spec(vec![]);
        read_only.read_only_root = true;
        let ro = bwrap_args(&read_only, r).join(" ");
        assert!(ro.contains("--remount-ro / --cap-drop ALL"), "{ro}");
        assert!(
            joined.contains("--ro-bind /state/tok /run/secrets/sa"),
            "{joined}"
        );
        assert!(joined.contains("--unshare-net"));
        assert!(
            joined.contains("--tmpfs /tmp --ro-bind /state/tok /run/secrets/sa --remount-ro /tmp"),
            "{joined}"
        );
        assert!(
            joined.ends_with("--clearenv --setenv A b --chdir / -- /bin/true"),
            "{joined}"
        );
    }

    #[test]
    fn tmp_is_writable_only_through_a_volume() {
        let root = tempfile::tempdir().unwrap();
        let args = bwrap_args(
            &spec(vec![Mount {
                host: "/state/scratch".into(),
                container: "/tmp".into(),
                read_only: false,
            }]),
            root.path(),
        )
        .join(" ");
        assert!(!args.contains("--tmpfs /tmp"), "{args}");
        assert!(!args.contains("--remount-ro /"), "{args}");
        assert!(args.contains("--bind /state/scratch /tmp"), "{args}");
    }

    #[test]
    fn termination_file_and_hidden_state_do_not_expose_host_dirs() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("var/lib/agent/pods")).unwrap();
        std::fs::create_dir_all(r.join("var/cache")).unwrap();
        std::fs::create_dir_all(r.join("tmp/agent")).unwrap();
        let mut s = spec(vec![Mount {
            host: "/state/term".into(),
            container: "/dev/termination-log".into(),
            read_only: false,
        }]);
        s.hidden = vec!["/var/lib/agent".into(), "/tmp/agent".into()];
        let joined = bwrap_args(&s, r).join(" ");
        // /dev comes from bwrap, never from the host, and the file is bound after it.
        assert!(!joined.contains("--dir /dev"), "{joined}");
        assert!(joined.contains("--dev /dev --proc /proc"), "{joined}");
        assert!(
            joined.contains("--bind /state/term /dev/termination-log"),
            "{joined}"
        );
        // The agent's state is covered by an empty read-only tmpfs; /tmp needs no cover.
        assert!(
            joined.contains("--tmpfs /var/lib/agent --remount-ro /var/lib/agent"),
            "{joined}"
        );
        assert!(
            joined.contains(&format!(
                "--ro-bind {} /var/cache",
                r.join("var/cache").display()
            )),
            "{joined}"
        );
        assert!(!joined.contains("/tmp/agent"), "{joined}");
        assert!(
            !joined.contains(&format!("{} /tmp", r.join("tmp").display())),
            "{joined}"
        );
    }
}
