//! Progress lines: every step of the demo with the time since it started, and, while the request
//! runs, each change of the ExecutionRequests, CompileJobs and pods in the namespace — the lines
//! `kubectl get exr,cjob,pods -w` would print.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use outlayer_operator::crd::{
    CompileJob, CompileJobStatus, ExecutionRequest, ExecutionRequestStatus, Phase, condition_status,
};
use outlayer_operator::pods::compile::COMPILE_JOB_LABEL;
use outlayer_operator::pods::executor::EXECUTION_LABEL;

/// Prints `[  12.3s] message` lines, timed from the demo's start.
#[derive(Debug, Clone, Copy)]
pub struct Log {
    started: Instant,
}

impl Default for Log {
    fn default() -> Self {
        Self::new()
    }
}

impl Log {
    pub fn new() -> Self {
        Self {
            started: Instant::now(),
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn line(&self, message: impl Display) {
        println!("[{:>6.1}s] {message}", self.elapsed().as_secs_f64());
    }
}

/// Prints state changes of the namespace's resources until dropped.
pub struct Watch {
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Watch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Watch {
    pub fn start(client: kube::Client, namespace: &str, log: Log) -> Self {
        let executions: Api<ExecutionRequest> = Api::namespaced(client.clone(), namespace);
        let compile_jobs: Api<CompileJob> = Api::namespaced(client.clone(), namespace);
        let pods: Api<Pod> = Api::namespaced(client, namespace);
        let task = tokio::spawn(async move {
            let mut seen: BTreeMap<String, String> = BTreeMap::new();
            loop {
                let mut now: Vec<(String, String)> = Vec::new();
                // A failed list (the API server is busy) just skips a round: the next one catches up.
                if let Ok(list) = executions.list(&ListParams::default()).await {
                    for exr in list.items {
                        let name = format!("exr/{}", exr.metadata.name.unwrap_or_default());
                        now.push((name, describe_execution(exr.status.as_ref())));
                    }
                }
                if let Ok(list) = compile_jobs.list(&ListParams::default()).await {
                    for job in list.items {
                        let name = format!("cjob/{}", job.metadata.name.unwrap_or_default());
                        now.push((name, describe_compile_job(job.status.as_ref())));
                    }
                }
                if let Ok(list) = pods.list(&ListParams::default()).await {
                    for pod in list.items {
                        let role = pod_role(&pod);
                        let name = format!("pod/{}", pod.metadata.name.clone().unwrap_or_default());
                        let phase = pod
                            .status
                            .and_then(|s| s.phase)
                            .unwrap_or_else(|| "Pending".to_string());
                        now.push((name, format!("{phase:<9} ({role})")));
                    }
                }
                for (name, state) in now {
                    if seen.get(&name) != Some(&state) {
                        log.line(format_args!("{name:<44} {state}"));
                        seen.insert(name, state);
                    }
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        });
        Self { task }
    }
}

fn describe_execution(status: Option<&ExecutionRequestStatus>) -> String {
    let Some(status) = status else {
        return "Pending".to_string();
    };
    let phase = status
        .phase
        .map(|p| format!("{p:?}"))
        .unwrap_or_else(|| "Pending".to_string());
    let detail = match status.phase {
        Some(Phase::Compiling) => status
            .compile_job
            .as_ref()
            .map(|job| format!("cache miss: waits for CompileJob {job}")),
        Some(Phase::Executing) => status.pod_name.as_ref().map(|pod| {
            let cache = match status.cache_hit {
                Some(true) => "cache hit, ",
                Some(false) => "compiled, ",
                None => "",
            };
            format!("{cache}executor pod {pod}")
        }),
        Some(Phase::Reporting) => Some(format!(
            "{} instructions in {} ms; sending resolve_execution",
            status.instructions.unwrap_or_default(),
            status.time_ms.unwrap_or_default()
        )),
        Some(Phase::Succeeded) => status
            .tx_hash
            .as_ref()
            .map(|tx| format!("reported in tx {tx}")),
        Some(Phase::Failed | Phase::Expired) => status.message.clone(),
        Some(Phase::Pending) | None => None,
    };
    match detail {
        Some(detail) => format!("{phase:<10} {detail}"),
        None => phase,
    }
}

fn describe_compile_job(status: Option<&CompileJobStatus>) -> String {
    let Some(status) = status else {
        return "Pending".to_string();
    };
    let find = |kind: &str| status.conditions.iter().find(|c| c.type_ == kind);
    if condition_status(&status.conditions, "Ready") == Some(true) {
        return format!(
            "{:<10} {} bytes, built in {} ms, sha256 {}…",
            "Ready",
            status.size_bytes.unwrap_or_default(),
            status.compile_time_ms.unwrap_or_default(),
            status
                .wasm_sha256
                .as_deref()
                .map_or("?", |sha| &sha[..sha.len().min(12)])
        );
    }
    // The stage in progress (or failed) is the latest condition: Built once the build started.
    match find("Built").or_else(|| find("Fetched")) {
        Some(c) if c.status == "True" => format!("{:<10} {}", c.type_, c.message),
        Some(c) => format!("{:<10} {}", c.reason, c.message),
        None => "Pending".to_string(),
    }
}

fn pod_role(pod: &Pod) -> &'static str {
    let labels = pod.metadata.labels.clone().unwrap_or_default();
    if labels
        .get("app.kubernetes.io/component")
        .map(String::as_str)
        == Some("operator")
    {
        "the operator, installed by helm"
    } else if labels.contains_key(EXECUTION_LABEL) {
        "executor"
    } else if labels.contains_key(COMPILE_JOB_LABEL) {
        match labels.get("outlayer.dev/stage").map(String::as_str) {
            Some("fetch") => "fetch Job",
            Some("build") => "build Job",
            _ => "compile Job",
        }
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn condition(kind: &str, status: &str, reason: &str, message: &str) -> Value {
        json!({"type": kind, "status": status, "reason": reason, "message": message,
               "lastTransitionTime": "2026-11-24T00:00:00Z"})
    }

    fn compile_job(status: Value) -> String {
        describe_compile_job(Some(&serde_json::from_value(status).unwrap()))
    }

    fn execution(status: Value) -> String {
        describe_execution(Some(&serde_json::from_value(status).unwrap()))
    }

    #[test]
    fn a_compile_job_reads_as_its_current_stage() {
        assert_eq!(describe_compile_job(None), "Pending");
        let fetching = compile_job(json!({"conditions": [
            condition("Fetched", "False", "Fetching", "fetching r@c")]}));
        assert_eq!(fetching, "Fetching   fetching r@c");
        let building = compile_job(json!({"conditions": [
            condition("Fetched", "True", "Fetched", "fetched"),
            condition("Built", "False", "Building", "building c offline")]}));
        assert_eq!(building, "Building   building c offline");
        let failed = compile_job(json!({"conditions": [
            condition("Fetched", "True", "Fetched", "fetched"),
            condition("Built", "False", "BuildFailed", "error[E0308]: mismatched types")]}));
        assert_eq!(failed, "BuildFailed error[E0308]: mismatched types");
        let ready = compile_job(json!({
            "conditions": [condition("Ready", "True", "Ready", "")],
            "sizeBytes": 10, "compileTimeMs": 5, "wasmSha256": "ab".repeat(32)}));
        assert_eq!(
            ready,
            "Ready      10 bytes, built in 5 ms, sha256 abababababab…"
        );
    }

    #[test]
    fn an_execution_reads_as_its_phase_and_what_it_waits_for() {
        assert_eq!(describe_execution(None), "Pending");
        assert_eq!(
            execution(json!({"phase": "Compiling", "compileJob": "cj-1"})),
            "Compiling  cache miss: waits for CompileJob cj-1"
        );
        assert_eq!(
            execution(json!({"phase": "Executing", "podName": "req-0-run", "cacheHit": true})),
            "Executing  cache hit, executor pod req-0-run"
        );
        assert_eq!(
            execution(json!({"phase": "Reporting", "instructions": 7, "timeMs": 3})),
            "Reporting  7 instructions in 3 ms; sending resolve_execution"
        );
        assert_eq!(
            execution(json!({"phase": "Expired", "message": "no time to compile"})),
            "Expired    no time to compile"
        );
    }

    #[test]
    fn pods_are_named_by_what_created_them() {
        let pod = |labels: Value| -> Pod {
            serde_json::from_value(json!({"metadata": {"name": "p", "labels": labels}})).unwrap()
        };
        assert_eq!(
            pod_role(&pod(json!({"app.kubernetes.io/component": "operator"}))),
            "the operator, installed by helm"
        );
        assert_eq!(
            pod_role(&pod(json!({EXECUTION_LABEL: "req-0"}))),
            "executor"
        );
        assert_eq!(
            pod_role(&pod(
                json!({COMPILE_JOB_LABEL: "cj-1", "outlayer.dev/stage": "build"})
            )),
            "build Job"
        );
        assert_eq!(pod_role(&pod(json!({}))), "other");
    }
}
