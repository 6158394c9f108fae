//! The module cache's size bound: least recently used modules go first, never one an unfinished execution
//! needs. The CompileJobs are the cache index (DESIGN §4); evicting a module deletes its CompileJobs (their
//! Jobs follow by garbage collection), its file and their workspaces.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use tracing::{info, warn};

use crate::crd::{CompileJob, ExecutionRequest, LAST_USED_ANNOTATION, Phase, REBUILD_ANNOTATION};
use crate::pods::compile::WORKSPACES_SUBDIR;
use crate::pods::executor::EXECUTOR_CONTAINER;
use crate::{Error, Result};

/// One module file and the CompileJobs that built it (identical code at two commits builds one module).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedModule {
    pub sha256: String,
    pub size_bytes: u64,
    pub compile_jobs: Vec<String>,
    pub last_used: Timestamp,
}

/// The modules to evict so that the cache fits in `max_bytes`, oldest use first, skipping modules in use.
/// The cache may stay over the bound when everything left is in use.
pub fn choose_evictions(
    mut modules: Vec<CachedModule>,
    in_use: &HashSet<String>,
    max_bytes: u64,
) -> Vec<CachedModule> {
    let mut total = cache_bytes(&modules);
    modules.sort_by_key(|m| m.last_used);
    let mut evicted = Vec::new();
    for module in modules {
        if total <= max_bytes {
            break;
        }
        if in_use.contains(&module.sha256) {
            continue;
        }
        total = total.saturating_sub(module.size_bytes);
        evicted.push(module);
    }
    evicted
}

/// Applies the size bound in `namespace`: reads the index (Ready CompileJobs), the modules unfinished
/// executions need, and deletes what [`choose_evictions`] picks. `just_built` is never evicted: a module
/// compiled ahead of time (a precompiling CompileJob) has no execution yet but is about to be used.
/// Returns the bytes of the modules the cache holds afterwards.
pub async fn enforce_cache_bound(
    client: &kube::Client,
    namespace: &str,
    cache_mount: &Path,
    max_bytes: u64,
    just_built: &str,
) -> Result<u64> {
    let compile_jobs: Api<CompileJob> = Api::namespaced(client.clone(), namespace);
    let executions: Api<ExecutionRequest> = Api::namespaced(client.clone(), namespace);
    let mut modules: BTreeMap<String, CachedModule> = BTreeMap::new();
    for job in compile_jobs
        .list(&ListParams::default())
        .await
        .map_err(Error::api("listing CompileJobs", namespace))?
    {
        let Some(status) = &job.status else { continue };
        let (Some(sha256), Some(size)) = (&status.wasm_sha256, status.size_bytes) else {
            continue;
        };
        let last_used = job
            .annotations()
            .get(LAST_USED_ANNOTATION)
            .and_then(|t| t.parse::<Timestamp>().ok())
            .or(status.last_used.as_ref().map(|t| t.0))
            .or(job.metadata.creation_timestamp.as_ref().map(|t| t.0))
            .unwrap_or(Timestamp::UNIX_EPOCH);
        let entry = modules
            .entry(sha256.clone())
            .or_insert_with(|| CachedModule {
                sha256: sha256.clone(),
                size_bytes: size,
                compile_jobs: Vec::new(),
                last_used,
            });
        entry.compile_jobs.push(job.name_any());
        entry.last_used = entry.last_used.max(last_used);
    }
    // What unfinished executions need: the module they run, or the CompileJob they wait on.
    let mut in_use: HashSet<String> = HashSet::from([just_built.to_string()]);
    let mut waiting_on: HashSet<String> = HashSet::new();
    for exr in executions
        .list(&ListParams::default())
        .await
        .map_err(Error::api("listing ExecutionRequests", namespace))?
    {
        let status = exr.status.unwrap_or_default();
        if status.phase.is_some_and(Phase::is_terminal) {
            continue;
        }
        in_use.extend(status.wasm_sha256.or(exr.spec.code.wasm_sha256));
        waiting_on.extend(status.compile_job);
    }
    let mut cache_bytes = cache_bytes(modules.values());
    for module in choose_evictions(modules.into_values().collect(), &in_use, max_bytes) {
        if module.compile_jobs.iter().any(|j| waiting_on.contains(j)) {
            continue;
        }
        cache_bytes = cache_bytes.saturating_sub(module.size_bytes);
        for name in &module.compile_jobs {
            match compile_jobs.delete(name, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(Error::api("deleting CompileJob", name)(e)),
            }
            remove(&cache_mount.join(WORKSPACES_SUBDIR).join(name));
        }
        remove(
            &cache_mount
                .join("wasm")
                .join(format!("{}.wasm", module.sha256)),
        );
        info!(sha256 = %module.sha256, size_bytes = module.size_bytes, "evicted module from the cache");
    }
    Ok(cache_bytes)
}

/// Removes `wasm/<sha256>.wasm` under the operator's cache mount: a module found damaged. Whatever is
/// there (a truncated file, a FIFO, a symlink) is unlinked, never followed or read.
pub fn evict_module_file(cache_mount: &Path, sha256: &str) {
    if !crate::pods::executor::is_sha256_hex(sha256) {
        return;
    }
    let path = cache_mount.join("wasm").join(format!("{sha256}.wasm"));
    match std::fs::remove_file(&path) {
        Ok(()) => info!(%sha256, "evicted a damaged module from the cache"),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => warn!(path = %path.display(), %error, "evicting a damaged module failed"),
    }
}

/// Whether an executor pod failed because its module file is damaged: the executor's checksum check
/// failed (exit 4, "has sha256 …, expected …") or it could not read the module (exit 3, "reading
/// module …"). Such a failure is the cache's, not the guest's: the CompileJob that built the module
/// is marked for a rebuild ([`mark_module_damaged`]) instead of every later request failing on it.
pub fn damaged_module(pod: &Pod) -> bool {
    let Some(terminated) = pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default()
        .iter()
        .find(|c| c.name == EXECUTOR_CONTAINER)
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref())
    else {
        return false;
    };
    let message = terminated.message.as_deref().unwrap_or_default();
    match terminated.exit_code {
        4 => message.contains(" has sha256 "),
        3 => message.starts_with("platform error: reading module "),
        _ => false,
    }
}

/// Asks the compile controller to evict module `sha256` and build it again: sets the CompileJob's
/// `outlayer.dev/rebuild` annotation to `<sha256>/<token>` (a token per finding, e.g. the executor
/// pod's name, so one finding triggers one rebuild). The compile controller acts only while the
/// CompileJob still holds that module.
pub async fn mark_module_damaged(
    client: &kube::Client,
    namespace: &str,
    compile_job: &str,
    sha256: &str,
    token: &str,
) -> Result<()> {
    let api: Api<CompileJob> = Api::namespaced(client.clone(), namespace);
    let patch = serde_json::json!({
        "metadata": {"annotations": {REBUILD_ANNOTATION: format!("{sha256}/{token}")}}
    });
    api.patch(compile_job, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .map(|_| ())
        .map_err(Error::api(
            "marking a damaged module on CompileJob",
            compile_job,
        ))
}

/// The size of `modules` together.
pub fn cache_bytes<'a>(modules: impl IntoIterator<Item = &'a CachedModule>) -> u64 {
    modules
        .into_iter()
        .fold(0, |total, module| total.saturating_add(module.size_bytes))
}

fn remove(path: &Path) {
    let result = if path.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    if let Err(error) = result
        && error.kind() != std::io::ErrorKind::NotFound
    {
        warn!(path = %path.display(), %error, "removing an evicted cache entry failed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(exit_code: i32, message: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "status": {"phase": "Failed", "containerStatuses": [{
                "name": EXECUTOR_CONTAINER, "image": "x", "imageID": "", "ready": false,
                "restartCount": 0,
                "state": {"terminated": {"exitCode": exit_code, "message": message}}
            }]}
        }))
        .unwrap()
    }

    #[test]
    fn only_a_damaged_module_file_marks_a_rebuild() {
        let rows = [
            (
                4,
                "platform error: module /cache/wasm/ab.wasm has sha256 cd, expected ab; nothing was run",
                true,
            ),
            (
                3,
                "platform error: reading module /cache/wasm/ab.wasm: No such file or directory (os error 2)",
                true,
            ),
            (
                3,
                "platform error: reading input /input/input: No such file or directory",
                false,
            ),
            (
                4,
                "platform error: expected sha256 \"x\" is not 64 hex characters",
                false,
            ),
            (5, "platform error: writing result", false),
            (0, "{\"v\":1,\"ok\":false}", false),
            (137, "", false),
        ];
        for (code, message, expected) in rows {
            assert_eq!(
                damaged_module(&ended(code, message)),
                expected,
                "{code} {message}"
            );
        }
        assert!(!damaged_module(&Pod::default()));
    }

    fn module(sha: &str, size: u64, used_at: i64) -> CachedModule {
        CachedModule {
            sha256: sha.to_string(),
            size_bytes: size,
            compile_jobs: vec![format!("cj-{sha}")],
            last_used: Timestamp::from_second(used_at).unwrap(),
        }
    }

    #[test]
    fn least_recently_used_goes_first_until_the_cache_fits() {
        let modules = vec![
            module("new", 40, 300),
            module("old", 30, 100),
            module("mid", 30, 200),
        ];
        let evicted = choose_evictions(modules, &HashSet::new(), 50);
        let names: Vec<_> = evicted.iter().map(|m| m.sha256.as_str()).collect();
        assert_eq!(names, ["old", "mid"]);
    }

    #[test]
    fn modules_in_use_are_never_evicted() {
        let modules = vec![module("old", 30, 100), module("mid", 30, 200)];
        let in_use = HashSet::from(["old".to_string(), "mid".to_string()]);
        assert!(choose_evictions(modules, &in_use, 0).is_empty());
    }

    #[test]
    fn nothing_goes_while_the_cache_fits() {
        let modules = vec![module("a", 10, 1), module("b", 10, 2)];
        assert!(choose_evictions(modules, &HashSet::new(), 20).is_empty());
    }

    #[test]
    fn the_cache_size_is_the_sum_of_its_modules() {
        let modules = [module("a", 40, 1), module("b", 30, 2)];
        assert_eq!(cache_bytes(&modules), 70);
        assert_eq!(
            cache_bytes(&[module("huge", u64::MAX, 1), module("b", 1, 2)]),
            u64::MAX
        );
        assert_eq!(cache_bytes(&[]), 0);
    }
}
