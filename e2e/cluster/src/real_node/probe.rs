//! A probe pod for real-node tests: hardened as the chart runs every OutLayer pod (restricted Pod
//! Security), it reports from inside what the kernel enforces — which addresses it can connect to, its
//! uid, capabilities, no_new_privs, seccomp mode and whether its root filesystem is writable — one
//! `key=value` line each, in its log.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use serde_json::json;

use crate::{Error, Result};

/// What every hardened probe reports besides its connections.
pub const HARDENED: [&str; 5] = [
    "uid=65532",
    "CapEff=0000000000000000",
    "NoNewPrivs=1",
    "Seccomp=2",
    "rootfs=readonly",
];

/// A probe named `name` with `labels`, running `image` (a shell image: bash, coreutils), trying each
/// `(label, address, port)` and reporting `<label>=open|closed`. It waits `delay_seconds` first:
/// kube-router programs a new pod's rules from its watch, about a second after the pod gets its IP.
pub fn pod(
    name: &str,
    image: &str,
    labels: serde_json::Value,
    targets: &[(&str, &str, u16)],
    delay_seconds: u32,
) -> Result<Pod> {
    let tries: String = targets
        .iter()
        .map(|(label, address, port)| format!("try {label} {address} {port}; "))
        .collect();
    let script = format!(
        "try() {{ if timeout 3 bash -c \"exec 3<>/dev/tcp/$2/$3\" 2>/dev/null; then echo \"$1=open\"; \
         else echo \"$1=closed\"; fi; }}; sleep {delay_seconds}; {tries}echo uid=$(id -u); \
         grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status | tr -d '\\t' | tr ':' '='; \
         if touch /rootfs-write 2>/dev/null; then echo rootfs=writable; else echo rootfs=readonly; fi"
    );
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": false,
            "securityContext": {
                "runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
                "seccompProfile": {"type": "RuntimeDefault"}
            },
            "containers": [{
                "name": "main", "image": image, "imagePullPolicy": "Never",
                "command": ["bash", "-c", script],
                "securityContext": {
                    "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                    "capabilities": {"drop": ["ALL"]}
                },
                "resources": {"limits": {"memory": "64Mi", "cpu": "100m"}}
            }]
        }
    }))
    .map_err(|e| Error::Config(format!("build probe pod {name}: {e}")))
}

/// The phase (`Succeeded` or `Failed`) and log of pod `name` once it has finished.
pub async fn finished(pods: &Api<Pod>, name: &str, limit: Duration) -> Result<(String, String)> {
    let deadline = Instant::now() + limit;
    let kube = |what: String| move |source| Error::Kube { what, source };
    loop {
        let pod = pods
            .get(name)
            .await
            .map_err(kube(format!("read pod {name}")))?;
        let phase = pod
            .status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default();
        if phase == "Succeeded" || phase == "Failed" {
            let log = pods
                .logs(name, &Default::default())
                .await
                .map_err(kube(format!("read the log of pod {name}")))?;
            return Ok((phase, log));
        }
        if Instant::now() > deadline {
            return Err(Error::Timeout {
                what: format!("pod {name} to finish"),
                last: format!("{phase}: {:?}", pod.status),
            });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The lines of `expected` missing from a probe's `log`.
pub fn missing<'a>(log: &str, expected: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
    expected
        .into_iter()
        .filter(|line| !log.lines().any(|l| l == *line))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_tries_each_target_and_runs_hardened() {
        let pod = pod(
            "p",
            "img",
            json!({"a": "b"}),
            &[("node", "10.0.0.1", 80), ("api", "10.0.0.2", 443)],
            4,
        )
        .unwrap();
        let spec = pod.spec.unwrap();
        let container = &spec.containers[0];
        let script = &container.command.as_ref().unwrap()[2];
        assert!(script.contains("sleep 4; try node 10.0.0.1 80; try api 10.0.0.2 443; "));
        let context = container.security_context.as_ref().unwrap();
        assert_eq!(context.read_only_root_filesystem, Some(true));
        assert_eq!(context.allow_privilege_escalation, Some(false));
        assert_eq!(spec.automount_service_account_token, Some(false));
    }

    #[test]
    fn missing_lines_are_named() {
        let log = "node=open\nuid=65532\n";
        assert_eq!(
            missing(log, ["node=open", "api=closed", "uid=65532"]),
            vec!["api=closed"]
        );
    }
}
