//! The whole chain-less path on the real control plane: an ExecutionRequest for a git repository gets a
//! shared CompileJob, whose fetch Job clones and vendors and whose build Job compiles offline into the
//! cache; the executor pod then runs the module. A second request reuses the module without new Jobs; a
//! commit that does not compile and a repository outside the allow-list fail with clear reasons.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common::{COMPILER_IMAGE, EXECUTOR_IMAGE, NAMESPACE, OperatorEnv, target_dir, wait_for};
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ListParams, PostParams};
use outlayer_operator::config::{CompilerConfig, OperatorConfig};
use outlayer_operator::context::Context;
use outlayer_operator::controllers;
use outlayer_operator::crd::{
    CodeRef, CompileJob, ExecutionRequest, ExecutionRequestSpec, ExecutionRequestStatus, Limits,
    Phase, ResponseFormat, condition_status,
};

fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git")
        .args([
            "-c",
            "user.name=OutLayer Tests",
            "-c",
            "user.email=tests@outlayer.dev",
        ])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("git runs");
    assert!(
        output.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

/// A git repository holding the echo example as a standalone crate on `main`, and a `broken` branch
/// whose code does not compile. It lives under target/ (not /tmp) because sandboxed pods see the host's
/// filesystem read-only but get an empty /tmp.
fn echo_repository(root: &Path) -> std::path::PathBuf {
    let repo = root.join("echo");
    std::fs::create_dir_all(repo.join("src")).unwrap();
    std::fs::write(
        repo.join("Cargo.toml"),
        "[package]\nname = \"echo\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n[dependencies]\n",
    )
    .unwrap();
    let main = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/echo/src/main.rs"),
    )
    .unwrap();
    std::fs::write(repo.join("src/main.rs"), main).unwrap();
    git(&repo, &["init", "-q", "-b", "main"]);
    git(&repo, &["add", "."]);
    git(&repo, &["commit", "-q", "-m", "echo"]);
    git(&repo, &["checkout", "-q", "-b", "broken"]);
    std::fs::write(
        repo.join("src/main.rs"),
        "fn main() { let x: u32 = \"not a number\"; }\n",
    )
    .unwrap();
    git(&repo, &["commit", "-q", "-am", "broken"]);
    git(&repo, &["checkout", "-q", "main"]);
    repo
}

fn request(name: &str, repo: &str, commit: &str, input: &str) -> ExecutionRequest {
    ExecutionRequest::new(
        name,
        ExecutionRequestSpec {
            code: CodeRef::from_repo(repo, commit),
            input: input.to_string(),
            limits: Limits {
                max_instructions: 100_000_000,
                max_memory_mb: 32,
                max_execution_seconds: 10,
            },
            response_format: ResponseFormat::Text,
            secrets_ref: None,
            on_chain: None,
        },
    )
}

async fn finished(api: &Api<ExecutionRequest>, name: &str) -> ExecutionRequestStatus {
    wait_for(&format!("{name} to finish"), || async {
        let status = api.get(name).await.ok()?.status?;
        status
            .phase
            .is_some_and(|p| p.is_terminal())
            .then_some(status)
    })
    .await
}

fn which(program: &str) -> String {
    let output = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .unwrap();
    String::from_utf8(output.stdout).unwrap().trim().to_string()
}

#[tokio::test]
async fn repositories_compile_once_into_the_cache_and_run() {
    let repos_root = target_dir().join("e2e-repos");
    std::fs::create_dir_all(&repos_root).unwrap();
    // Repository URLs may not contain `..` (CRD rule), so spell the path out.
    let repos_root = std::fs::canonicalize(repos_root).unwrap();
    let repos = tempfile::tempdir_in(&repos_root).unwrap();
    let repo_path = echo_repository(repos.path());
    let repo_url = format!("file://{}", repo_path.display());
    let main_sha = git(&repo_path, &["rev-parse", "main"]);

    let env = OperatorEnv::start().await;
    let client = env.cluster.client();
    let rustup_home = std::env::var("RUSTUP_HOME")
        .unwrap_or_else(|_| format!("{}/.rustup", std::env::var("HOME").unwrap()));
    let config = OperatorConfig {
        executor_image: EXECUTOR_IMAGE.to_string(),
        compiler: CompilerConfig {
            image: COMPILER_IMAGE.to_string(),
            allowed_repo_prefixes: vec![format!("file://{}/", repos.path().display())],
            // The node agent starts containers with an empty environment; a real compiler image has
            // these baked in.
            env: vec![
                ("PATH".to_string(), std::env::var("PATH").unwrap()),
                ("OUTLAYER_GIT".to_string(), which("git")),
                ("OUTLAYER_CARGO".to_string(), which("cargo")),
                ("RUSTUP_HOME".to_string(), rustup_home),
            ],
            ..CompilerConfig::default()
        },
        ..OperatorConfig::default()
    };
    let ctx = Arc::new(Context::new(
        client.clone(),
        config,
        Some("test".to_string()),
    ));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let operator = tokio::spawn(controllers::run(ctx, NAMESPACE, async move {
        let _ = stopped.await;
    }));
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
    let reason = broken
        .conditions
        .iter()
        .find(|c| c.type_ == "Succeeded")
        .unwrap();
    assert_eq!(reason.reason, "CompileFailed", "{}", reason.message);
    let broken_job = compile_jobs
        .get(broken.compile_job.as_deref().unwrap())
        .await
        .unwrap();
    let log = broken_job.status.unwrap().build_log.unwrap_or_default();
    assert!(log.contains("mismatched types"), "build log tail: {log}");

    // A repository outside the allow-list is refused by the fetch before git runs.
    let outside = format!("file://{}/elsewhere", repos_root.display());
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

    stop.send(()).unwrap();
    operator.await.unwrap();
}
