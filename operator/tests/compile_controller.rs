//! The whole chain-less path on the real control plane: an ExecutionRequest for a git repository gets a
//! shared CompileJob, whose fetch Job clones and vendors and whose build Job compiles offline into the
//! cache; the executor pod then runs the module. A second request reuses the module without new Jobs; a
//! commit that does not compile and a repository outside the allow-list fail with clear reasons.

mod common;

use std::path::Path;

use common::{
    NAMESPACE, OperatorEnv, condition, echo_main_branch, example_main_branch, finished, git,
    network_probe_branch, operator_config, repositories_dir, request, start_operator, test_context,
    wait_for,
};
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use outlayer_operator::config::OperatorConfig;
use outlayer_operator::controllers;
use outlayer_operator::crd::{
    CompileJob, CompileJobSpec, CompileSource, ExecutionRequest, Phase, condition_status,
};
use sha2::{Digest, Sha256};

/// A git repository holding the echo example as a standalone crate on `main`, and a `broken` branch
/// whose code does not compile. It lives under target/ (not /tmp) because sandboxed pods see the host's
/// filesystem read-only but get an empty /tmp.
fn echo_repository(root: &Path) -> std::path::PathBuf {
    echo_repository_with(root, None)
}

/// The echo repository, plus (with a port) a `v2` branch (same code, new commit) and a `network` branch
/// whose build script tries to reach `127.0.0.1:<port>`.
fn echo_repository_with(root: &Path, network_probe_port: Option<u16>) -> std::path::PathBuf {
    let repo = root.join("echo");
    echo_main_branch(&repo);
    git(&repo, &["checkout", "-q", "-b", "broken"]);
    std::fs::write(
        repo.join("src/main.rs"),
        "fn main() { let x: u32 = \"not a number\"; }\n",
    )
    .unwrap();
    git(&repo, &["commit", "-q", "-am", "broken"]);
    git(&repo, &["checkout", "-q", "main"]);
    if let Some(port) = network_probe_port {
        // A different module, same behaviour: v2 also says hello on stderr.
        git(&repo, &["checkout", "-q", "-b", "v2"]);
        let main = std::fs::read_to_string(repo.join("src/main.rs")).unwrap();
        let v2 = main.replacen("fn main() {", "fn main() {\n    eprintln!(\"echo v2\");", 1);
        assert_ne!(main, v2);
        std::fs::write(repo.join("src/main.rs"), v2).unwrap();
        git(&repo, &["commit", "-q", "-am", "v2"]);
        network_probe_branch(&repo, &format!("127.0.0.1:{port}"));
    }
    repo
}

#[tokio::test]
async fn repositories_compile_once_into_the_cache_and_run() {
    let repos = repositories_dir();
    let repo_path = echo_repository(repos.path());
    let repo_url = format!("file://{}", repo_path.display());
    let main_sha = git(&repo_path, &["rev-parse", "main"]);

    let env = OperatorEnv::start().await;
    let client = env.cluster.client();
    let config = operator_config(repos.path());
    let ctx = test_context(client.clone(), config);
    let operator = start_operator(ctx);
    let executions: Api<ExecutionRequest> = Api::namespaced(client.clone(), NAMESPACE);
    let compile_jobs: Api<CompileJob> = Api::namespaced(client.clone(), NAMESPACE);
    let jobs: Api<Job> = Api::namespaced(client.clone(), NAMESPACE);
    let post = PostParams::default();

    executions
        .create(
            &post,
            &request("first", &repo_url, "main", "compiled and run"),
        )
        .await
        .unwrap();
    let first = finished(&executions, "first").await;
    assert_eq!(first.phase, Some(Phase::Succeeded), "{:?}", first.message);
    assert_eq!(first.output.as_deref(), Some("compiled and run"));
    assert_eq!(first.resolved_commit.as_deref(), Some(main_sha.as_str()));
    assert!(first.compile_time_ms.is_some());
    let module = first.wasm_sha256.clone().unwrap();
    assert!(
        env.cache
            .path()
            .join("wasm")
            .join(format!("{module}.wasm"))
            .exists()
    );
    let compile_job = compile_jobs
        .get(first.compile_job.as_deref().unwrap())
        .await
        .unwrap();
    let compile_status = compile_job.status.unwrap();
    for condition in ["Fetched", "Built", "Ready"] {
        assert_eq!(
            condition_status(&compile_status.conditions, condition),
            Some(true),
            "{condition}"
        );
    }
    assert_eq!(compile_status.wasm_sha256.as_deref(), Some(module.as_str()));
    let jobs_after_first = jobs.list(&ListParams::default()).await.unwrap().items.len();
    assert_eq!(jobs_after_first, 2, "one fetch and one build Job");

    // The same commit again: the module comes from the cache, no new Job runs.
    executions
        .create(&post, &request("second", &repo_url, "main", "again"))
        .await
        .unwrap();
    let second = finished(&executions, "second").await;
    assert_eq!(second.output.as_deref(), Some("again"));
    assert_eq!(second.wasm_sha256.as_deref(), Some(module.as_str()));
    assert_eq!(
        jobs.list(&ListParams::default()).await.unwrap().items.len(),
        jobs_after_first
    );

    // A commit that does not compile fails with the compiler's words, and stays failed.
    executions
        .create(&post, &request("broken", &repo_url, "broken", "x"))
        .await
        .unwrap();
    let broken = finished(&executions, "broken").await;
    assert_eq!(broken.phase, Some(Phase::Failed));
    let reason = condition(&broken, "Succeeded");
    assert_eq!(reason.reason, "CompileFailed", "{}", reason.message);
    let broken_job = compile_jobs
        .get(broken.compile_job.as_deref().unwrap())
        .await
        .unwrap();
    let log = broken_job.status.unwrap().build_log.unwrap_or_default();
    assert!(log.contains("mismatched types"), "build log tail: {log}");

    // A repository outside the allow-list is refused by the fetch before git runs.
    let outside = format!("file://{}-elsewhere/echo", repos.path().display());
    executions
        .create(&post, &request("outside", &outside, "main", "x"))
        .await
        .unwrap();
    let refused = finished(&executions, "outside").await;
    assert_eq!(refused.phase, Some(Phase::Failed));
    assert!(
        refused.message.as_deref().unwrap_or("").contains("allow"),
        "{:?}",
        refused.message
    );

    operator.stop().await;
}

#[tokio::test]
async fn builds_have_no_network_and_concurrent_requests_share_one_build_across_a_restart() {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = probe.local_addr().unwrap().port();
    let repos = repositories_dir();
    let repo_path = echo_repository_with(repos.path(), Some(port));
    let repo_url = format!("file://{}", repo_path.display());

    let env = OperatorEnv::start().await;
    let client = env.cluster.client();
    let ctx = test_context(client.clone(), operator_config(repos.path()));
    let executions: Api<ExecutionRequest> = Api::namespaced(client.clone(), NAMESPACE);
    let compile_jobs: Api<CompileJob> = Api::namespaced(client.clone(), NAMESPACE);
    let jobs: Api<Job> = Api::namespaced(client.clone(), NAMESPACE);
    let post = PostParams::default();
    let first_run = tokio::spawn(controllers::run(
        ctx.clone(),
        NAMESPACE,
        std::future::pending(),
    ));

    // A build script that can reach a listener on the host would succeed; in the sandbox it cannot.
    executions
        .create(&post, &request("network", &repo_url, "network", "x"))
        .await
        .unwrap();

    // Twenty requests for one new commit at once.
    let names: Vec<String> = (0..20).map(|i| format!("burst-{i}")).collect();
    for name in &names {
        executions
            .create(&post, &request(name, &repo_url, "v2", name))
            .await
            .unwrap();
    }
    // Kill the operator mid-flight, once the build is under way, and start a new one.
    wait_for("the v2 build Job to exist", || async {
        let listed = jobs
            .list(&ListParams::default().labels("outlayer.dev/stage=build"))
            .await
            .ok()?;
        (!listed.items.is_empty()).then_some(())
    })
    .await;
    first_run.abort();
    let _ = first_run.await;
    let second_run = start_operator(ctx);

    for name in &names {
        let status = finished(&executions, name).await;
        assert_eq!(
            status.phase,
            Some(Phase::Succeeded),
            "{name}: {:?}",
            status.message
        );
        assert_eq!(
            status.output.as_deref(),
            Some(name.as_str()),
            "each request gets its own input back"
        );
    }
    let network = finished(&executions, "network").await;
    assert_eq!(network.phase, Some(Phase::Failed));
    let network_job = compile_jobs
        .get(network.compile_job.as_deref().unwrap())
        .await
        .unwrap();
    let log = network_job.status.unwrap().build_log.unwrap_or_default();
    assert!(
        log.contains("network unreachable from the build"),
        "build log tail: {log}"
    );

    // Exactly one CompileJob per commit and one fetch + one build Job each: nothing ran twice.
    assert_eq!(
        compile_jobs
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    let stages: Vec<String> = jobs
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|job| job.metadata.name)
        .collect();
    assert_eq!(stages.len(), 4, "{stages:?}");
    drop(probe);
    second_run.stop().await;
}

#[tokio::test]
async fn failed_compiles_rerun_on_retry_and_the_cache_evicts_least_recently_used() {
    let repos = repositories_dir();
    let repo_path = echo_repository_with(repos.path(), Some(1));
    let repo_url = format!("file://{}", repo_path.display());

    let env = OperatorEnv::start().await;
    let client = env.cluster.client();
    let config = OperatorConfig {
        // Any second module overflows this bound, so the least recently used unused one must go.
        cache_max_bytes: Some(1),
        cache_mount_path: Some(env.cache.path().to_path_buf()),
        ..operator_config(repos.path())
    };
    let ctx = test_context(client.clone(), config);
    let metrics = ctx.metrics.clone();
    let operator = start_operator(ctx);
    let executions: Api<ExecutionRequest> = Api::namespaced(client.clone(), NAMESPACE);
    let compile_jobs: Api<CompileJob> = Api::namespaced(client.clone(), NAMESPACE);
    let post = PostParams::default();

    // A branch that does not exist yet fails the fetch, and the failure is kept...
    executions
        .create(&post, &request("early", &repo_url, "later", "x"))
        .await
        .unwrap();
    let early = finished(&executions, "early").await;
    assert_eq!(early.phase, Some(Phase::Failed));
    let later_job = early.compile_job.clone().unwrap();
    // ...until the branch exists and the CompileJob is annotated for a retry.
    git(&repo_path, &["branch", "later", "main"]);
    let retry = serde_json::json!({"metadata": {"annotations": {"outlayer.dev/retry": "1"}}});
    compile_jobs
        .patch(
            &later_job,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&retry),
        )
        .await
        .unwrap();
    wait_for("the retried CompileJob to become Ready", || async {
        let status = compile_jobs.get(&later_job).await.ok()?.status?;
        (condition_status(&status.conditions, "Ready") == Some(true)).then_some(())
    })
    .await;
    executions
        .create(
            &post,
            &request("after-retry", &repo_url, "later", "retried"),
        )
        .await
        .unwrap();
    let after = finished(&executions, "after-retry").await;
    assert_eq!(
        after.output.as_deref(),
        Some("retried"),
        "{:?}",
        after.message
    );
    let old_module = after.wasm_sha256.clone().unwrap();
    let old_file = env
        .cache
        .path()
        .join("wasm")
        .join(format!("{old_module}.wasm"));
    assert!(old_file.exists());

    // A new module overflows the bound: the unused old one goes, with its CompileJob and workspace.
    executions
        .create(&post, &request("newer", &repo_url, "v2", "fresh"))
        .await
        .unwrap();
    let newer = finished(&executions, "newer").await;
    assert_eq!(
        newer.output.as_deref(),
        Some("fresh"),
        "{:?}",
        newer.message
    );
    assert_ne!(newer.wasm_sha256.as_deref(), Some(old_module.as_str()));
    wait_for(
        "the least recently used CompileJob to be evicted",
        || async {
            compile_jobs
                .get_opt(&later_job)
                .await
                .ok()?
                .is_none()
                .then_some(())
        },
    )
    .await;
    assert!(!old_file.exists(), "the evicted module file is still there");
    assert!(
        !env.cache
            .path()
            .join("workspaces")
            .join(&later_job)
            .exists()
    );
    let kept = newer.compile_job.unwrap();
    assert!(
        compile_jobs.get_opt(&kept).await.unwrap().is_some(),
        "the module in use was evicted"
    );
    // The cache-size gauge follows the bound: after the eviction it holds the kept module alone.
    let kept_bytes = compile_jobs
        .get(&kept)
        .await
        .unwrap()
        .status
        .and_then(|s| s.size_bytes)
        .unwrap();
    let gauge = format!("outlayer_cache_bytes {kept_bytes}");
    wait_for("the cache-size gauge to show the kept module", || async {
        metrics.encode().lines().any(|l| l == gauge).then_some(())
    })
    .await;
    assert!(
        env.cache
            .path()
            .join("wasm")
            .join(format!("{}.wasm", newer.wasm_sha256.unwrap()))
            .exists()
    );

    operator.stop().await;
}

/// Item: a CompileJob is what its name says. Someone allowed to create CompileJobs plants one under the
/// name of another source (a popular repository's `main`), with a status claiming a ready module: the
/// request for that source fails with `CompileJobMismatch` instead of running it, and the compile
/// controller refuses the misnamed CompileJob without creating any Job.
#[tokio::test]
async fn a_compile_job_planted_under_another_sources_name_is_never_used() {
    let repos = repositories_dir();
    let repo_path = echo_repository(repos.path());
    let repo_url = format!("file://{}", repo_path.display());

    let env = OperatorEnv::start().await;
    let client = env.cluster.client();
    let ctx = test_context(client.clone(), operator_config(repos.path()));
    let executions: Api<ExecutionRequest> = Api::namespaced(client.clone(), NAMESPACE);
    let compile_jobs: Api<CompileJob> = Api::namespaced(client.clone(), NAMESPACE);
    let jobs: Api<Job> = Api::namespaced(client.clone(), NAMESPACE);
    let post = PostParams::default();

    let wanted = CompileSource {
        repo: repo_url.clone(),
        commit: "main".to_string(),
        build_target: "wasm32-wasip1".to_string(),
    };
    let planted_source = CompileSource {
        commit: "broken".to_string(),
        ..wanted.clone()
    };
    let name = wanted.compile_job_name();
    assert_eq!(name.len(), 35);
    compile_jobs
        .create(
            &post,
            &CompileJob::new(&name, CompileJobSpec::git(planted_source)),
        )
        .await
        .unwrap();
    // A status that claims a ready module (what an attacker with status access would write).
    let fake = serde_json::json!({"status": {
        "conditions": [{"type": "Ready", "status": "True", "reason": "ModuleReady", "message": "x",
                        "lastTransitionTime": "2026-01-01T00:00:00Z"}],
        "wasmSha256": "ab".repeat(32),
    }});
    compile_jobs
        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&fake))
        .await
        .unwrap();

    let operator = start_operator(ctx);
    executions
        .create(&post, &request("victim", &repo_url, "main", "x"))
        .await
        .unwrap();
    let victim = finished(&executions, "victim").await;
    assert_eq!(victim.phase, Some(Phase::Failed), "{:?}", victim.message);
    let reason = condition(&victim, "Succeeded");
    assert_eq!(reason.reason, "CompileJobMismatch", "{}", reason.message);
    assert!(reason.message.contains("broken"), "{}", reason.message);
    assert_eq!(victim.wasm_sha256, None);
    assert!(victim.pod_name.is_none(), "no executor pod ran");

    // The compile controller refuses a CompileJob whose name is not its spec's, and builds nothing.
    let misnamed_source = CompileSource {
        commit: "v9".to_string(),
        ..wanted.clone()
    };
    compile_jobs
        .create(
            &post,
            &CompileJob::new(
                "cj-precompiled-by-hand",
                CompileJobSpec::git(misnamed_source.clone()),
            ),
        )
        .await
        .unwrap();
    let refused = wait_for("the misnamed CompileJob to be refused", || async {
        let status = compile_jobs
            .get("cj-precompiled-by-hand")
            .await
            .ok()?
            .status?;
        status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready" && c.reason == "NameMismatch")
            .cloned()
    })
    .await;
    assert!(
        refused
            .message
            .contains(&misnamed_source.compile_job_name()),
        "{}",
        refused.message
    );
    // The planted one is refused too (the operator replaces the faked status).
    wait_for("the planted CompileJob to be refused", || async {
        let status = compile_jobs.get(&name).await.ok()?.status?;
        status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.reason == "NameMismatch")
            .then_some(())
    })
    .await;
    assert!(
        jobs.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty(),
        "no fetch or build Job runs for a misnamed CompileJob"
    );
    operator.stop().await;
}

/// The build script of the hostile guest: it finds every writable mount of its container (from
/// /proc/self/mountinfo) and, under each, truncates, replaces or deletes every file, puts FIFOs in place
/// of deleted `.wasm` files and in every directory, and plants symlinks; then it fails the build with a
/// summary of what it reached (the build log tail shows it).
const HOSTILE_BUILD_RS: &str = r#####"
use std::fs;
use std::path::{Path, PathBuf};

fn writable_mounts() -> Vec<PathBuf> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts = Vec::new();
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.len() < 6 || fields[5].split(',').any(|o| o == "ro") {
            continue;
        }
        let point = PathBuf::from(fields[4].replace("\\040", " "));
        if ["/proc", "/sys", "/dev"].iter().any(|p| point.starts_with(p)) {
            continue;
        }
        mounts.push(point);
    }
    mounts
}

fn mkfifo(path: &Path) -> bool {
    std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .is_ok_and(|s| s.success())
}

fn wreck(dir: &Path, depth: u32, touched: &mut u32, seen: &mut u32) {
    if depth > 12 || *seen > 50_000 {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else { return };
    let entries: Vec<_> = entries.flatten().collect();
    for entry in entries {
        *seen += 1;
        let path = entry.path();
        let Ok(meta) = fs::symlink_metadata(&path) else { continue };
        if meta.is_dir() {
            wreck(&path, depth + 1, touched, seen);
        } else if meta.is_file() {
            let done = match *seen % 3 {
                0 => fs::OpenOptions::new().write(true).truncate(true).open(&path).is_ok(),
                1 => fs::write(&path, b"\0asm\x01\0\0\0 replaced by a build script").is_ok(),
                _ => fs::remove_file(&path).is_ok(),
            };
            if done {
                *touched += 1;
            }
            if path.extension().is_some_and(|e| e == "wasm") {
                let _ = fs::remove_file(&path);
                if mkfifo(&path) {
                    *touched += 1;
                }
            }
        }
    }
    if mkfifo(&dir.join("planted.fifo")) {
        *touched += 1;
    }
    if std::os::unix::fs::symlink("/etc/passwd", dir.join("planted.link")).is_ok() {
        *touched += 1;
    }
}

fn main() {
    let mut report = Vec::new();
    for mount in writable_mounts() {
        let (mut touched, mut seen) = (0, 0);
        wreck(&mount, 0, &mut touched, &mut seen);
        report.push(format!("{}={touched}", mount.display()));
    }
    panic!("hostile build script ran; wrecked: {}", report.join(" "));
}
"#####;

/// Item: untrusted build code cannot touch the shared cache. Two modules are built and cached; then a
/// guest whose `build.rs` wrecks everything it can reach is built in the real build Job (its init
/// container and its publish container, as `build_job` declares them). Afterwards both cached modules
/// are byte for byte what was built, no FIFO or link sits in `wasm/`, and both still run.
#[tokio::test]
async fn a_hostile_build_script_leaves_every_other_cached_module_runnable() {
    let repos = repositories_dir();
    let echo_path = echo_repository(repos.path());
    let echo_url = format!("file://{}", echo_path.display());
    let reader_path = repos.path().join("env-reader");
    example_main_branch(&reader_path, "env-reader");
    let reader_url = format!("file://{}", reader_path.display());
    let hostile_path = repos.path().join("hostile");
    echo_main_branch(&hostile_path);
    std::fs::write(hostile_path.join("build.rs"), HOSTILE_BUILD_RS).unwrap();
    git(&hostile_path, &["add", "build.rs"]);
    git(
        &hostile_path,
        &["commit", "-q", "-m", "a build script that wrecks"],
    );
    let hostile_url = format!("file://{}", hostile_path.display());

    let env = OperatorEnv::start().await;
    let client = env.cluster.client();
    let ctx = test_context(client.clone(), operator_config(repos.path()));
    let operator = start_operator(ctx);
    let executions: Api<ExecutionRequest> = Api::namespaced(client.clone(), NAMESPACE);
    let compile_jobs: Api<CompileJob> = Api::namespaced(client.clone(), NAMESPACE);
    let jobs: Api<Job> = Api::namespaced(client.clone(), NAMESPACE);
    let post = PostParams::default();

    let mut cached = Vec::new();
    for (name, url, input, output) in [
        ("echo-1", &echo_url, "still here", "still here"),
        ("reader-1", &reader_url, "NOT_SET", "{\"NOT_SET\":null}\n"),
    ] {
        executions
            .create(&post, &request(name, url, "main", input))
            .await
            .unwrap();
        let status = finished(&executions, name).await;
        assert_eq!(
            status.phase,
            Some(Phase::Succeeded),
            "{name}: {:?}",
            status.message
        );
        if !output.is_empty() {
            assert_eq!(status.output.as_deref(), Some(output));
        }
        let sha = status.wasm_sha256.clone().unwrap();
        let bytes =
            std::fs::read(env.cache.path().join("wasm").join(format!("{sha}.wasm"))).unwrap();
        assert_eq!(hex::encode(Sha256::digest(&bytes)), sha);
        cached.push((url.clone(), input, status.output.clone(), sha, bytes));
    }

    executions
        .create(&post, &request("hostile", &hostile_url, "main", "x"))
        .await
        .unwrap();
    let hostile = finished(&executions, "hostile").await;
    assert_eq!(hostile.phase, Some(Phase::Failed), "{:?}", hostile.message);
    let hostile_job = hostile.compile_job.clone().unwrap();
    let log = compile_jobs
        .get(&hostile_job)
        .await
        .unwrap()
        .status
        .unwrap()
        .build_log
        .unwrap_or_default();
    // It ran, in the build container, and reached its own workspace and staging directory only.
    assert!(
        log.contains("hostile build script ran"),
        "build log tail: {log}"
    );
    assert!(log.contains("/workspace="), "{log}");
    assert!(log.contains("/out="), "{log}");
    assert!(!log.contains("/cache"), "the build saw the cache: {log}");
    // The build Job that ran is the two-step one the operator declares.
    let build_job = jobs.get(&format!("{hostile_job}-build")).await.unwrap();
    let pod = build_job.spec.unwrap().template.spec.unwrap();
    assert_eq!(pod.init_containers.unwrap()[0].name, "build");
    assert_eq!(pod.containers[0].args.as_ref().unwrap()[0], "publish");

    // Every cached module is intact and nothing was planted in the shared directories.
    let wasm_dir = env.cache.path().join("wasm");
    for entry in std::fs::read_dir(&wasm_dir).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        assert!(
            kind.is_file(),
            "{:?} in wasm/ is not a regular file",
            entry.path()
        );
    }
    for (_, _, _, sha, bytes) in &cached {
        let now = std::fs::read(wasm_dir.join(format!("{sha}.wasm"))).unwrap();
        assert!(now == *bytes, "module {sha} was changed");
    }
    for workspace in std::fs::read_dir(env.cache.path().join("workspaces")).unwrap() {
        let workspace = workspace.unwrap().path();
        if workspace.ends_with(&hostile_job) {
            continue;
        }
        assert!(
            workspace.join("fetch.json").is_file(),
            "{workspace:?} was wrecked"
        );
        assert!(!workspace.join("planted.fifo").exists(), "{workspace:?}");
    }
    // And they still run.
    for (index, (url, input, output, sha, _)) in cached.iter().enumerate() {
        let name = format!("again-{index}");
        executions
            .create(&post, &request(&name, url, "main", input))
            .await
            .unwrap();
        let status = finished(&executions, &name).await;
        assert_eq!(
            status.phase,
            Some(Phase::Succeeded),
            "{name}: {:?}",
            status.message
        );
        assert_eq!(status.wasm_sha256.as_deref(), Some(sha.as_str()));
        assert_eq!(&status.output, output);
    }
    operator.stop().await;
}

/// Item: cached names stay honest. A branch whose build failed is re-resolved after the name TTL; once a
/// fix is pushed, the CompileJob sees the branch moved, fetches and builds the new commit, and the next
/// request runs it. While the branch does not move, re-resolving keeps the module and restarts the clock.
#[tokio::test]
async fn a_branch_is_re_resolved_after_its_ttl_so_a_pushed_fix_is_picked_up() {
    let repos = repositories_dir();
    let repo_path = echo_repository(repos.path());
    let repo_url = format!("file://{}", repo_path.display());

    let env = OperatorEnv::start().await;
    let client = env.cluster.client();
    let mut config = operator_config(repos.path());
    config.compiler.name_ttl = std::time::Duration::from_secs(3);
    let operator = start_operator(test_context(client.clone(), config));
    let executions: Api<ExecutionRequest> = Api::namespaced(client.clone(), NAMESPACE);
    let compile_jobs: Api<CompileJob> = Api::namespaced(client.clone(), NAMESPACE);
    let post = PostParams::default();

    executions
        .create(&post, &request("before", &repo_url, "broken", "x"))
        .await
        .unwrap();
    let before = finished(&executions, "before").await;
    assert_eq!(before.phase, Some(Phase::Failed), "{:?}", before.message);
    let compile_job = before.compile_job.clone().unwrap();
    let broken_sha = git(&repo_path, &["rev-parse", "broken"]);

    // The fix is pushed to the same branch.
    git(&repo_path, &["checkout", "-q", "broken"]);
    git(&repo_path, &["checkout", "-q", "main", "--", "src/main.rs"]);
    git(&repo_path, &["commit", "-q", "-m", "fix"]);
    git(&repo_path, &["checkout", "-q", "main"]);
    let fixed_sha = git(&repo_path, &["rev-parse", "broken"]);
    assert_ne!(fixed_sha, broken_sha);

    let ready = wait_for("the moved branch to be rebuilt", || async {
        let status = compile_jobs.get(&compile_job).await.ok()?.status?;
        (condition_status(&status.conditions, "Ready") == Some(true)
            && status.resolved_commit.as_deref() == Some(fixed_sha.as_str()))
        .then_some(status)
    })
    .await;
    executions
        .create(&post, &request("after", &repo_url, "broken", "fixed"))
        .await
        .unwrap();
    let after = finished(&executions, "after").await;
    assert_eq!(after.phase, Some(Phase::Succeeded), "{:?}", after.message);
    assert_eq!(after.output.as_deref(), Some("fixed"));
    assert_eq!(after.resolved_commit.as_deref(), Some(fixed_sha.as_str()));

    // Unmoved, a later re-resolve only restarts the clock: same module, later resolvedAt.
    let first = ready.resolved_at.clone().unwrap();
    let later = wait_for("a later re-resolve", || async {
        let status = compile_jobs.get(&compile_job).await.ok()?.status?;
        status
            .resolved_at
            .clone()
            .filter(|at| at.0 > first.0)
            .map(|_| status)
    })
    .await;
    assert_eq!(later.wasm_sha256, ready.wasm_sha256);
    assert_eq!(later.resolved_commit.as_deref(), Some(fixed_sha.as_str()));
    assert_eq!(condition_status(&later.conditions, "Ready"), Some(true));
    operator.stop().await;
}

/// Item: a damaged module is evicted and rebuilt instead of failing every later request. The cached
/// module's file is overwritten: the executor's checksum check fails the next run's pod,
/// `cache::damaged_module` recognises that failure as the cache's, and the execution controller marks
/// the CompileJob (the rebuild annotation, once per finding) and waits for that very rebuild; the
/// compile controller evicts the file and builds again, and the request runs in a fresh pod.
#[tokio::test]
async fn a_damaged_module_is_evicted_and_rebuilt_when_marked() {
    let repos = repositories_dir();
    let repo_path = echo_repository(repos.path());
    let repo_url = format!("file://{}", repo_path.display());

    let env = OperatorEnv::start().await;
    let client = env.cluster.client();
    let config = OperatorConfig {
        cache_mount_path: Some(env.cache.path().to_path_buf()),
        ..operator_config(repos.path())
    };
    let operator = start_operator(test_context(client.clone(), config));
    let executions: Api<ExecutionRequest> = Api::namespaced(client.clone(), NAMESPACE);
    let compile_jobs: Api<CompileJob> = Api::namespaced(client.clone(), NAMESPACE);
    let post = PostParams::default();

    executions
        .create(&post, &request("first", &repo_url, "main", "one"))
        .await
        .unwrap();
    let first = finished(&executions, "first").await;
    assert_eq!(first.phase, Some(Phase::Succeeded), "{:?}", first.message);
    let sha = first.wasm_sha256.clone().unwrap();
    let compile_job = first.compile_job.clone().unwrap();
    let file = env.cache.path().join("wasm").join(format!("{sha}.wasm"));
    let good = std::fs::read(&file).unwrap();
    std::fs::write(&file, b"\0asm\x01\0\0\0 damaged").unwrap();

    executions
        .create(&post, &request("damaged", &repo_url, "main", "two"))
        .await
        .unwrap();
    let damaged = finished(&executions, "damaged").await;
    assert_eq!(
        damaged.phase,
        Some(Phase::Succeeded),
        "{:?}",
        damaged.message
    );
    assert_eq!(damaged.output.as_deref(), Some("two"));
    assert_eq!(
        damaged.retries,
        Some(1),
        "one pod found the damage, the next ran"
    );
    assert_eq!(damaged.wasm_sha256.as_deref(), Some(sha.as_str()));
    // The rebuild answered the first pod's finding (the pod itself went with the success).
    let token = format!("{sha}/damaged-run");
    let status = compile_jobs
        .get(&compile_job)
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(status.rebuild_token.as_deref(), Some(token.as_str()));
    assert_eq!(condition_status(&status.conditions, "Ready"), Some(true));
    assert!(
        std::fs::read(&file).unwrap() == good,
        "the rebuilt module differs"
    );

    executions
        .create(&post, &request("after", &repo_url, "main", "three"))
        .await
        .unwrap();
    let after = finished(&executions, "after").await;
    assert_eq!(after.phase, Some(Phase::Succeeded), "{:?}", after.message);
    assert_eq!(after.output.as_deref(), Some("three"));
    assert_eq!(after.retries, None, "the rebuilt module runs at once");
    // Answered once: the same annotation does not rebuild again.
    let jobs: Api<Job> = Api::namespaced(client.clone(), NAMESPACE);
    let build_uid = jobs
        .get(&format!("{compile_job}-build"))
        .await
        .unwrap()
        .metadata
        .uid;
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(
        jobs.get(&format!("{compile_job}-build"))
            .await
            .unwrap()
            .metadata
            .uid,
        build_uid
    );
    operator.stop().await;
}

/// Jobs are trusted by owner, not by name: a fetch Job planted under a CompileJob's stage name (the
/// operator's own Job, minus its owner reference) runs to a report that is never read. The CompileJob
/// waits, counted as an untrusted Job, and is built by its own Job once the plant is gone.
#[tokio::test]
async fn a_job_planted_under_a_stage_name_is_never_read() {
    let repos = repositories_dir();
    let repo_path = echo_repository(repos.path());
    let repo_url = format!("file://{}", repo_path.display());
    let env = OperatorEnv::start().await;
    let client = env.cluster.client();
    let config = operator_config(repos.path());
    let compile_jobs: Api<CompileJob> = Api::namespaced(client.clone(), NAMESPACE);
    let jobs: Api<Job> = Api::namespaced(client.clone(), NAMESPACE);
    let source = CompileSource {
        repo: repo_url,
        commit: "main".to_string(),
        build_target: "wasm32-wasip1".to_string(),
    };
    let name = source.compile_job_name();
    let mut template = CompileJob::new(&name, CompileJobSpec::git(source));
    template.metadata.namespace = Some(NAMESPACE.to_string());
    template.metadata.uid = Some("00000000-0000-0000-0000-000000000000".to_string());
    let mut planted = outlayer_operator::pods::compile::fetch_job(&template, &config).unwrap();
    planted.metadata.owner_references = None;
    let planted = jobs.create(&PostParams::default(), &planted).await.unwrap();
    let planted_name = planted.metadata.name.clone().unwrap();

    let ctx = test_context(client.clone(), config);
    let operator = start_operator(ctx.clone());
    compile_jobs
        .create(
            &PostParams::default(),
            &CompileJob::new(&name, template.spec.clone()),
        )
        .await
        .unwrap();
    wait_for("the planted Job to run to its report", || async {
        let status = jobs.get(&planted_name).await.ok()?.status?;
        (status.succeeded.unwrap_or(0) > 0).then_some(())
    })
    .await;
    let untrusted = || {
        ctx.metrics
            .encode()
            .lines()
            .find_map(|l| l.strip_prefix("outlayer_untrusted_objects_total{kind=\"Job\"} "))
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let seen = untrusted();
    // A reconcile after the plant finished still refuses it (and so never read its report).
    wait_for("another reconcile to refuse the planted Job", || async {
        (untrusted() > seen).then_some(())
    })
    .await;
    let status = compile_jobs
        .get(&name)
        .await
        .unwrap()
        .status
        .unwrap_or_default();
    assert_ne!(
        condition_status(&status.conditions, "Fetched"),
        Some(true),
        "the planted Job's report was read: {status:?}"
    );
    jobs.delete(
        &planted_name,
        &kube::api::DeleteParams {
            propagation_policy: Some(kube::api::PropagationPolicy::Background),
            preconditions: Some(kube::api::Preconditions {
                uid: planted.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    wait_for("the CompileJob to be built by its own Jobs", || async {
        let status = compile_jobs.get(&name).await.ok()?.status?;
        (condition_status(&status.conditions, "Ready") == Some(true)).then_some(())
    })
    .await;
    operator.stop().await;
}
