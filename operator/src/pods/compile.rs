//! The fetch and build Jobs of one CompileJob (DESIGN §5), both running `outlayer-compiler`
//! (compiler-image/README.md has its command line). The fetch Job may reach git and crate hosts (the
//! chart's NetworkPolicy narrows where); the build Job is sandboxed with no network at all.

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Container, EmptyDirVolumeSource, EnvVar, PodSpec, PodTemplateSpec, Volume, VolumeMount,
};
use kube::core::ObjectMeta;

use super::executor::bounded_name;
use super::hardening::{
    SANDBOX_LABEL, container_security_context, pod_security_context, sandbox_labels,
};
use crate::Result;
use crate::config::OperatorConfig;
use crate::crd::CompileJob;

pub const COMPILER_CONTAINER: &str = "compiler";
/// Labels the Jobs (and so their pods) with the CompileJob they work for.
pub const COMPILE_JOB_LABEL: &str = "outlayer.dev/compile-job";
/// Each Job sees only its own CompileJob's workspace (checkout, vendored crates, target dir), never the
/// whole cache: cargo reads `.cargo/config.toml` from every parent directory, so a hostile build script
/// that could write into a shared parent could plant a `rustc-wrapper` for later fetches (which have
/// network).
const WORKSPACE_MOUNT: &str = "/workspace";
/// The build publishes into `<cache>/wasm` and sees nothing else of the cache. Modules are named by
/// sha256 and the executor checks the hash, so a hostile build there can break runs, never swap a module.
const CACHE_MOUNT: &str = "/cache";
/// Per-CompileJob working directories on the cache volume.
pub const WORKSPACES_SUBDIR: &str = "workspaces";

/// Which of the two steps a Job runs.
pub use crate::crd::CompileStage as Stage;

/// `<compile job>-fetch` / `<compile job>-build`.
pub fn compile_stage_job_name(compile_job: &str, stage: Stage) -> String {
    bounded_name(compile_job, &format!("-{}", stage.as_str()))
}

/// The workspace of a CompileJob on the cache volume.
pub fn workspace_sub_path(compile_job: &str) -> String {
    format!("{WORKSPACES_SUBDIR}/{compile_job}")
}

/// The fetch Job: clone `spec.repo` at `spec.commit`, resolve it to a SHA, vendor dependencies.
pub fn fetch_job(compile_job: &CompileJob, config: &OperatorConfig) -> Result<Job> {
    let source = &compile_job.spec.source;
    let mut args = vec![
        "fetch".to_string(),
        "--repo".to_string(),
        source.repo.clone(),
        "--commit".to_string(),
        source.commit.clone(),
        "--timeout-seconds".to_string(),
        config.compiler.fetch_timeout_seconds.to_string(),
    ];
    for prefix in &config.compiler.allowed_repo_prefixes {
        args.extend(["--allow-repo-prefix".to_string(), prefix.clone()]);
    }
    for mirror in &config.compiler.git_mirrors {
        args.extend(["--git-mirror".to_string(), mirror.clone()]);
    }
    stage_job(compile_job, Stage::Fetch, args, config)
}

/// The build Job: build the fetched workspace offline and publish the module into the cache.
pub fn build_job(
    compile_job: &CompileJob,
    resolved_commit: &str,
    config: &OperatorConfig,
) -> Result<Job> {
    let args = vec![
        "build".to_string(),
        "--cache".to_string(),
        CACHE_MOUNT.to_string(),
        "--commit".to_string(),
        resolved_commit.to_string(),
        "--timeout-seconds".to_string(),
        config.compiler.build_timeout_seconds.to_string(),
    ];
    stage_job(compile_job, Stage::Build, args, config)
}

fn stage_job(
    compile_job: &CompileJob,
    stage: Stage,
    mut args: Vec<String>,
    config: &OperatorConfig,
) -> Result<Job> {
    let (name, namespace, owner) = super::owner_identity(compile_job)?;
    args.extend(["--workspace".to_string(), WORKSPACE_MOUNT.to_string()]);

    let mut labels = sandbox_labels(
        "outlayer-compiler",
        (COMPILE_JOB_LABEL, &bounded_name(name, "")),
    );
    labels.insert("outlayer.dev/stage".to_string(), stage.as_str().to_string());
    if stage == Stage::Fetch {
        // The fetch needs the network; the chart gives it a NetworkPolicy of its own instead.
        labels.remove(SANDBOX_LABEL);
    }
    let timeout = match stage {
        Stage::Fetch => config.compiler.fetch_timeout_seconds,
        Stage::Build => config.compiler.build_timeout_seconds,
    };
    let resources = super::guaranteed_resources(
        &config.compiler.cpu,
        config.compiler.memory.clone(),
        &config.compiler.ephemeral_storage,
    );
    let env: Vec<EnvVar> = config
        .compiler
        .env
        .iter()
        .map(|(name, value)| EnvVar {
            name: name.clone(),
            value: Some(value.clone()),
            ..Default::default()
        })
        .collect();

    Ok(Job {
        metadata: ObjectMeta {
            name: Some(compile_stage_job_name(name, stage)),
            namespace: Some(namespace.to_string()),
            labels: Some(labels.clone()),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            // The compiler reports its own failures (exit 0 with ok:false); a crash is ours and is not
            // worth repeating blindly.
            backoff_limit: Some(0),
            active_deadline_seconds: Some(
                i64::try_from(timeout)
                    .unwrap_or(i64::MAX)
                    .saturating_add(60),
            ),
            ttl_seconds_after_finished: Some(config.compiler.job_ttl_seconds),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".to_string()),
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    runtime_class_name: config.runtime_class_name.clone(),
                    security_context: Some(pod_security_context()),
                    containers: vec![Container {
                        name: COMPILER_CONTAINER.to_string(),
                        image: Some(config.compiler.image.clone()),
                        args: Some(args),
                        env: (!env.is_empty()).then_some(env),
                        resources: Some(resources),
                        security_context: Some(container_security_context()),
                        termination_message_policy: Some("File".to_string()),
                        volume_mounts: Some(volume_mounts(name, stage)),
                        ..Default::default()
                    }],
                    volumes: Some(vec![
                        super::cache_volume(config),
                        Volume {
                            name: "tmp".to_string(),
                            empty_dir: Some(EmptyDirVolumeSource::default()),
                            ..Default::default()
                        },
                    ]),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    })
}

fn volume_mounts(compile_job: &str, stage: Stage) -> Vec<VolumeMount> {
    let mut mounts = vec![
        VolumeMount {
            name: "cache".to_string(),
            mount_path: WORKSPACE_MOUNT.to_string(),
            sub_path: Some(workspace_sub_path(compile_job)),
            ..Default::default()
        },
        VolumeMount {
            name: "tmp".to_string(),
            mount_path: "/tmp".to_string(),
            ..Default::default()
        },
    ];
    if stage == Stage::Build {
        mounts.push(VolumeMount {
            name: "cache".to_string(),
            mount_path: format!("{CACHE_MOUNT}/wasm"),
            sub_path: Some("wasm".to_string()),
            ..Default::default()
        });
    }
    mounts
}

/// The compiler's report in a finished pod of a fetch or build Job (its termination message), if the
/// container has terminated. `Err` carries why there is no usable report.
pub fn read_compiler_report<T: serde::de::DeserializeOwned>(
    pod: &k8s_openapi::api::core::v1::Pod,
) -> Option<Result<T, String>> {
    let terminated = pod
        .status
        .as_ref()?
        .container_statuses
        .as_deref()
        .unwrap_or_default()
        .iter()
        .find(|c| c.name == COMPILER_CONTAINER)?
        .state
        .as_ref()?
        .terminated
        .as_ref()?;
    let message = terminated.message.as_deref().unwrap_or("").trim();
    if terminated.exit_code != 0 {
        return Some(Err(format!(
            "outlayer-compiler exited with code {} ({}): {}",
            terminated.exit_code,
            terminated.reason.as_deref().unwrap_or("Error"),
            message.chars().take(512).collect::<String>()
        )));
    }
    Some(serde_json::from_str::<T>(message).map_err(|e| {
        format!(
            "outlayer-compiler wrote an unreadable report ({e}): {}",
            message.chars().take(256).collect::<String>()
        )
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{BUILD_TARGET_WASIP1, CompileJobSpec, CompileSource};
    use std::collections::BTreeMap;

    fn compile_job() -> CompileJob {
        let mut job = CompileJob::new(
            "cj-0123456789abcdef",
            CompileJobSpec {
                source: CompileSource {
                    repo: "https://github.com/alice/echo".to_string(),
                    commit: "main".to_string(),
                    build_target: BUILD_TARGET_WASIP1.to_string(),
                },
            },
        );
        job.metadata.namespace = Some("jobs".to_string());
        job.metadata.uid = Some("uid-7".to_string());
        job
    }

    fn args(job: &Job) -> Vec<String> {
        job.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .args
            .clone()
            .unwrap()
    }

    fn mounts(job: &Job) -> Vec<VolumeMount> {
        job.spec
            .as_ref()
            .unwrap()
            .template
            .spec
            .as_ref()
            .unwrap()
            .containers[0]
            .volume_mounts
            .clone()
            .unwrap()
    }

    fn labels(job: &Job) -> BTreeMap<String, String> {
        job.spec
            .as_ref()
            .unwrap()
            .template
            .metadata
            .as_ref()
            .unwrap()
            .labels
            .clone()
            .unwrap()
    }

    #[test]
    fn fetch_job_has_network_and_the_allow_list() {
        let mut config = OperatorConfig::default();
        config.compiler.allowed_repo_prefixes = vec![
            "https://github.com/".to_string(),
            "file:///srv/git/".to_string(),
        ];
        let job = fetch_job(&compile_job(), &config).unwrap();
        assert_eq!(
            job.metadata.name.as_deref(),
            Some("cj-0123456789abcdef-fetch")
        );
        let args = args(&job);
        assert_eq!(
            &args[..5],
            [
                "fetch",
                "--repo",
                "https://github.com/alice/echo",
                "--commit",
                "main"
            ]
        );
        assert_eq!(
            args.iter().filter(|a| *a == "--allow-repo-prefix").count(),
            2
        );
        assert!(args.ends_with(&["--workspace".to_string(), "/workspace".to_string()]));
        let mounts = mounts(&job);
        assert_eq!(
            mounts.len(),
            2,
            "the fetch sees its workspace and /tmp only: {mounts:?}"
        );
        assert_eq!(
            mounts[0].sub_path.as_deref(),
            Some("workspaces/cj-0123456789abcdef")
        );
        assert!(!labels(&job).contains_key(SANDBOX_LABEL));
        assert_eq!(labels(&job)["outlayer.dev/stage"], "fetch");
    }

    #[test]
    fn build_job_is_sandboxed_and_pinned_to_the_resolved_commit() {
        let job = build_job(&compile_job(), &"a".repeat(40), &OperatorConfig::default()).unwrap();
        assert_eq!(
            job.metadata.name.as_deref(),
            Some("cj-0123456789abcdef-build")
        );
        let args = args(&job);
        assert_eq!(args[0], "build");
        let commit_at = args.iter().position(|a| a == "--commit").unwrap();
        assert_eq!(args[commit_at + 1], "a".repeat(40));
        assert_eq!(labels(&job)[SANDBOX_LABEL], "true");
        let sub_paths: Vec<_> = mounts(&job)
            .into_iter()
            .filter_map(|m| m.sub_path)
            .collect();
        assert_eq!(sub_paths, ["workspaces/cj-0123456789abcdef", "wasm"]);
        let spec = job.spec.unwrap();
        assert_eq!(spec.backoff_limit, Some(0));
        let pod = spec.template.spec.unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(
            pod.containers[0]
                .security_context
                .as_ref()
                .unwrap()
                .read_only_root_filesystem,
            Some(true)
        );
        let owner = &job.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("CompileJob", "uid-7")
        );
    }
}
