//! The real `outlayer-operator run` binary against the control plane: health, readiness and metrics
//! over HTTP, the leader Lease, an execution to Succeeded, a standby taking over when the leader
//! shuts down, and SIGTERM → exit 0 with the Lease released.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;

use common::{EXECUTOR_IMAGE, NAMESPACE, OperatorEnv, WAIT, wait_for};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::PostParams;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use outlayer_operator::crd::{
    CodeRef, ExecutionRequest, ExecutionRequestSpec, Limits, Phase, ResponseFormat,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

const LEASE: &str = "outlayer-operator";

/// A running `outlayer-operator run`; killed if the test fails before it is stopped.
struct Operator {
    identity: String,
    addr: SocketAddr,
    child: Child,
    log: std::path::PathBuf,
}

impl Operator {
    fn start(env: &OperatorEnv, logs: &Path, identity: &str) -> Self {
        let port = e2e_cluster::ports::free_port().unwrap();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let log = logs.join(format!("{identity}.log"));
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_outlayer-operator"))
            .args(["run", "--namespace", NAMESPACE])
            .args(["--executor-image", EXECUTOR_IMAGE])
            .args(["--compiler-image", common::COMPILER_IMAGE])
            .args(["--cache-mount-path", env.cache.path().to_str().unwrap()])
            .args(["--metrics-addr", &addr.to_string()])
            .args(["--lease-name", LEASE, "--identity", identity])
            // Long enough that only a release (not expiry) lets a standby in within WAIT.
            .args(["--lease-duration-seconds", "600"])
            .args(["--shutdown-timeout-seconds", "10"])
            .env("KUBECONFIG", env.cluster.kubeconfig_path())
            .env("RUST_LOG", "info")
            .env_remove("POD_NAMESPACE")
            .env_remove("POD_NAME")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        Self {
            identity: identity.to_string(),
            addr,
            child,
            log,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn get(&self, path: &str) -> Option<(u16, String, String)> {
        get(self.addr, path).await
    }

    /// Waits until `path` answers 200 and returns the body.
    async fn get_ok(&self, path: &str) -> String {
        wait_for(
            &format!("{} {path} to answer 200", self.identity),
            || async {
                match self.get(path).await {
                    Some((200, _, body)) => Some(body),
                    _ => None,
                }
            },
        )
        .await
    }

    async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().unwrap();
        kill(Pid::from_raw(i32::try_from(pid).unwrap()), Signal::SIGTERM).unwrap();
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} ignored SIGTERM; log:\n{}", self.identity, self.log()))
            .unwrap();
        assert!(
            status.success(),
            "{} exited with {status}; log:\n{}",
            self.identity,
            self.log()
        );
        status
    }
}

/// A plain HTTP/1.1 GET: (status, content-type, body), or None while nothing listens.
async fn get(addr: SocketAddr, path: &str) -> Option<(u16, String, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: operator\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    let content_type = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-type")
                .then(|| value.trim().to_string())
        })
        .unwrap_or_default();
    Some((status, content_type, body.to_string()))
}

fn metric(body: &str, series: &str) -> Option<String> {
    body.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(str::to_string)
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get_opt(LEASE)
        .await
        .ok()??
        .spec?
        .holder_identity
        .filter(|h| !h.is_empty())
}

#[tokio::test]
async fn the_operator_binary_leads_executes_and_shuts_down_cleanly() {
    let env = OperatorEnv::start().await;
    let echo = env.publish("example-echo");
    let logs = tempfile::tempdir().unwrap();
    let leases: Api<Lease> = Api::namespaced(env.cluster.client(), NAMESPACE);

    let leader = Operator::start(&env, logs.path(), "replica-a");
    assert_eq!(leader.get_ok("/healthz").await, "ok\n");
    wait_for("replica-a to take the lease", || async {
        (holder(&leases).await.as_deref() == Some("replica-a")).then_some(())
    })
    .await;
    leader.get_ok("/readyz").await;
    let (status, content_type, body) = leader.get("/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    assert_eq!(
        metric(&body, "outlayer_leader").as_deref(),
        Some("1"),
        "{body}"
    );

    // A second replica stands by: healthy and ready, but not leading.
    let standby = Operator::start(&env, logs.path(), "replica-b");
    standby.get_ok("/readyz").await;
    let body = standby.get_ok("/metrics").await;
    assert_eq!(
        metric(&body, "outlayer_leader").as_deref(),
        Some("0"),
        "{body}"
    );
    assert_eq!(holder(&leases).await.as_deref(), Some("replica-a"));

    // The leader's controllers run an execution to a result.
    let executions: Api<ExecutionRequest> = Api::namespaced(env.cluster.client(), NAMESPACE);
    let request = ExecutionRequest::new(
        "through-the-binary",
        ExecutionRequestSpec {
            code: CodeRef {
                module_url: None,
                source: None,
                wasm_sha256: Some(echo.clone()),
            },
            input: "hello, binary".to_string(),
            limits: Limits {
                max_instructions: 100_000_000,
                max_memory_mb: 32,
                max_execution_seconds: 10,
            },
            response_format: ResponseFormat::Text,
            secrets_ref: None,
            compile_only: false,
            deterministic: None,
            on_chain: None,
        },
    );
    executions
        .create(&PostParams::default(), &request)
        .await
        .unwrap();
    let status = wait_for("the execution to finish", || async {
        let status = executions.get("through-the-binary").await.ok()?.status?;
        status
            .phase
            .is_some_and(|p| p.is_terminal())
            .then_some(status)
    })
    .await;
    assert_eq!(
        status.phase,
        Some(Phase::Succeeded),
        "{:?}; operator log:\n{}",
        status.message,
        leader.log()
    );
    assert_eq!(status.output.as_deref(), Some("hello, binary"));

    // SIGTERM: the leader exits 0 and hands the lease over; with a 600 s lease only the release
    // lets the standby in within the wait.
    let leader_log = leader.log.clone();
    leader.terminate().await;
    // Structured logs: every line is a JSON object with a level and a message.
    let log = std::fs::read_to_string(&leader_log).unwrap();
    let mut messages = Vec::new();
    for line in log.lines() {
        let entry: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("log line is not JSON ({e}): {line}"));
        assert!(entry["level"].is_string(), "{line}");
        messages.push(entry["message"].as_str().unwrap_or_default().to_string());
    }
    for expected in ["leading", "shutting down", "leader Lease handed back"] {
        assert!(
            messages.iter().any(|m| m == expected),
            "no {expected:?} in:\n{log}"
        );
    }
    wait_for("replica-b to take over", || async {
        (holder(&leases).await.as_deref() == Some("replica-b")).then_some(())
    })
    .await;
    wait_for("replica-b to report leading", || async {
        let body = standby.get_ok("/metrics").await;
        (metric(&body, "outlayer_leader").as_deref() == Some("1")).then_some(())
    })
    .await;
    standby.terminate().await;
    assert_eq!(
        holder(&leases).await,
        None,
        "the last replica released the lease"
    );
}

#[tokio::test]
async fn version_prints_the_crate_version() {
    let output = Command::new(env!("CARGO_BIN_EXE_outlayer-operator"))
        .arg("version")
        .output()
        .await
        .unwrap();
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        format!("outlayer-operator {}\n", env!("CARGO_PKG_VERSION"))
    );
}
