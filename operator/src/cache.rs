//! The module cache's size bound: least recently used modules go first, never one an unfinished execution
//! needs. The CompileJobs are the cache index (DESIGN §4); evicting a module deletes its CompileJobs (their
//! Jobs follow by garbage collection), its file and their workspaces.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams};
use tracing::{info, warn};

use crate::crd::{CompileJob, ExecutionRequest, LAST_USED_ANNOTATION, Phase};
use crate::pods::compile::WORKSPACES_SUBDIR;
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
