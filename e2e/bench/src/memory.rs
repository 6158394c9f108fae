//! Operator memory with many ExecutionRequests present: the real `outlayer-operator` binary as its own
//! process (its RSS is then the operator's alone), watching a namespace full of finished requests.

use std::collections::{HashSet, VecDeque};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, Patch, PatchParams, PostParams};
use outlayer_operator::crd::ExecutionRequest;
use serde_json::json;
use tokio::io::AsyncBufReadExt;

use crate::env::EXECUTOR_IMAGE;
use crate::requests;

/// Its own namespace, so only the bench's objects count and no in-process controller sees them.
pub const NAMESPACE: &str = "outlayer-bench-rss";
/// How long the operator may take to list and reconcile everything; bounds a hang, not a figure.
const RECONCILE_TIMEOUT: Duration = Duration::from_secs(600);
/// An idle operator's figure is read this long after start (it has listed its empty namespace).
const IDLE_SETTLE: Duration = Duration::from_secs(5);
/// After the last object is reconciled, how long until the steady-state figure is read.
const STEADY_SETTLE: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug)]
pub struct Rss {
    pub vm_rss_kib: u64,
    pub vm_hwm_kib: u64,
}

impl std::fmt::Display for Rss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "VmRSS {:.1} MiB, VmHWM {:.1} MiB",
            self.vm_rss_kib as f64 / 1024.0,
            self.vm_hwm_kib as f64 / 1024.0
        )
    }
}

pub struct MemoryFigures {
    pub objects: usize,
    pub object_json_bytes: usize,
    pub create_time: Duration,
    pub idle: Rss,
    pub reconcile_time: Duration,
    pub after_reconcile: Rss,
    pub steady: Rss,
}

pub struct OperatorCommand<'a> {
    pub binary: &'a Path,
    pub kubeconfig: &'a Path,
}

pub async fn run(
    client: kube::Client,
    operator: &OperatorCommand<'_>,
    wasm_sha256: &str,
    objects: usize,
    create_concurrency: usize,
) -> anyhow::Result<MemoryFigures> {
    let api: Api<ExecutionRequest> = Api::namespaced(client, NAMESPACE);

    let idle_operator = OperatorProcess::start(operator)?;
    tokio::time::sleep(IDLE_SETTLE).await;
    let idle = idle_operator.rss()?;
    idle_operator.stop().await;
    println!("  idle operator (empty namespace, {IDLE_SETTLE:?} after start): {idle}");

    let sample = finished_request(wasm_sha256, "sample");
    let object_json_bytes = serde_json::to_vec(&sample)?.len();
    let started = Instant::now();
    let step = (objects / 10).max(1);
    futures::stream::iter(0..objects)
        .map(|i| create_finished(&api, wasm_sha256, i))
        .buffer_unordered(create_concurrency.max(1))
        .try_fold(0usize, |done, ()| async move {
            let done = done + 1;
            if done % step == 0 || done == objects {
                println!(
                    "  created {done}/{objects} finished ExecutionRequests ({:.0} s)",
                    started.elapsed().as_secs_f64()
                );
            }
            Ok(done)
        })
        .await?;
    let create_time = started.elapsed();

    let mut process = OperatorProcess::start(operator)?;
    let started = Instant::now();
    let deadline = started + RECONCILE_TIMEOUT;
    let mut next_report = step;
    loop {
        let done = process.reconciled()?;
        if done >= next_report || done >= objects {
            println!(
                "  operator reconciled {done}/{objects} after {:.1} s; {}",
                started.elapsed().as_secs_f64(),
                process.rss()?
            );
            next_report = (done / step + 1) * step;
        }
        if done >= objects {
            break;
        }
        if let Some(status) = process.exited()? {
            bail!(
                "the operator exited ({status}) after reconciling {done} objects; its last log lines:\n{}",
                process.log_tail()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "the operator reconciled only {done} of {objects} objects within {} s",
                RECONCILE_TIMEOUT.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let reconcile_time = started.elapsed();
    let after_reconcile = process.rss()?;
    tokio::time::sleep(STEADY_SETTLE).await;
    let steady = process.rss()?;
    process.stop().await;
    Ok(MemoryFigures {
        objects,
        object_json_bytes,
        create_time,
        idle,
        reconcile_time,
        after_reconcile,
        steady,
    })
}

fn finished_request(wasm_sha256: &str, name: &str) -> ExecutionRequest {
    let mut request = requests::echo(name, wasm_sha256);
    request.status = Some(requests::succeeded_status(wasm_sha256, name));
    request
}

/// Creates one request and gives it a finished status (status is a subresource: a create ignores it).
async fn create_finished(
    api: &Api<ExecutionRequest>,
    wasm_sha256: &str,
    index: usize,
) -> anyhow::Result<()> {
    let name = format!("finished-{index:05}");
    api.create(&PostParams::default(), &requests::echo(&name, wasm_sha256))
        .await
        .with_context(|| format!("create ExecutionRequest {name} in {NAMESPACE}"))?;
    let status = requests::succeeded_status(wasm_sha256, &name);
    api.patch_status(
        &name,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await
    .with_context(|| format!("write the finished status of {name}"))?;
    Ok(())
}

/// `outlayer-operator run` as a child process, its JSON log read for the objects it reconciled.
struct OperatorProcess {
    child: tokio::process::Child,
    pid: u32,
    reconciled: Arc<Mutex<HashSet<String>>>,
    tail: Arc<Mutex<VecDeque<String>>>,
}

impl OperatorProcess {
    fn start(operator: &OperatorCommand<'_>) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .context("pick a free port for the operator's /metrics")?
            .port();
        let mut child = tokio::process::Command::new(operator.binary)
            .args([
                "run",
                "--namespace",
                NAMESPACE,
                "--leader-election",
                "false",
            ])
            .args(["--executor-image", EXECUTOR_IMAGE])
            .arg("--metrics-addr")
            .arg(format!("127.0.0.1:{port}"))
            .env("KUBECONFIG", operator.kubeconfig)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", operator.binary.display()))?;
        let pid = child.id().context("the operator exited at once")?;
        let reconciled: Arc<Mutex<HashSet<String>>> = Arc::default();
        let tail: Arc<Mutex<VecDeque<String>>> = Arc::default();
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(read_log(stdout, reconciled.clone(), tail.clone()));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(read_log(stderr, reconciled.clone(), tail.clone()));
        }
        Ok(Self {
            child,
            pid,
            reconciled,
            tail,
        })
    }

    fn reconciled(&self) -> anyhow::Result<usize> {
        self.reconciled
            .lock()
            .map(|set| set.len())
            .map_err(|_| anyhow::anyhow!("the operator log reader panicked"))
    }

    fn rss(&self) -> anyhow::Result<Rss> {
        let path = format!("/proc/{}/status", self.pid);
        let text = std::fs::read_to_string(&path).with_context(|| format!("read {path}"))?;
        let field =
            |key| status_kib(&text, key).with_context(|| format!("{path} has no {key} line"));
        Ok(Rss {
            vm_rss_kib: field("VmRSS")?,
            vm_hwm_kib: field("VmHWM")?,
        })
    }

    fn exited(&mut self) -> anyhow::Result<Option<std::process::ExitStatus>> {
        self.child
            .try_wait()
            .context("check whether the operator still runs")
    }

    fn log_tail(&self) -> String {
        self.tail
            .lock()
            .map(|t| t.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default()
    }

    async fn stop(mut self) {
        // Its shutdown is not what is measured: SIGKILL, like a pod eviction would end it anyway.
        let _ = self.child.kill().await;
    }
}

async fn read_log(
    stream: impl tokio::io::AsyncRead + Unpin,
    reconciled: Arc<Mutex<HashSet<String>>>,
    tail: Arc<Mutex<VecDeque<String>>>,
) {
    let mut lines = tokio::io::BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(name) = reconciled_execution(&line)
            && let Ok(mut set) = reconciled.lock()
        {
            set.insert(name);
        }
        if let Ok(mut tail) = tail.lock() {
            if tail.len() == 20 {
                tail.pop_front();
            }
            tail.push_back(line);
        }
    }
}

/// The request named by an operator log line `{"message":"reconciled","execution":"<name>",…}`.
fn reconciled_execution(line: &str) -> Option<String> {
    let entry: serde_json::Value = serde_json::from_str(line).ok()?;
    if entry.get("message")?.as_str()? != "reconciled" {
        return None;
    }
    Some(entry.get("execution")?.as_str()?.to_string())
}

/// A `Key:   1234 kB` line of /proc/<pid>/status, in KiB.
fn status_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix(':')?;
        value.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_kib_fields_of_proc_status() {
        let status = "Name:\toutlayer-operator\nVmHWM:\t   61234 kB\nVmRSS:\t   59876 kB\n";
        assert_eq!(status_kib(status, "VmRSS"), Some(59_876));
        assert_eq!(status_kib(status, "VmHWM"), Some(61_234));
        assert_eq!(status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn counts_only_execution_reconciles() {
        assert_eq!(
            reconciled_execution(
                r#"{"level":"INFO","message":"reconciled","execution":"finished-00001"}"#
            ),
            Some("finished-00001".to_string())
        );
        assert_eq!(
            reconciled_execution(r#"{"message":"reconciled","compile_job":"cj"}"#),
            None
        );
        assert_eq!(reconciled_execution("not json"), None);
    }
}
