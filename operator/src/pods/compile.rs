//! The Jobs of one CompileJob (DESIGN §5), all running `outlayer-compiler` (compiler-image/README.md
//! has its command line). The fetch and resolve Jobs may reach git and crate hosts (the chart's
//! NetworkPolicy narrows where); the build Job is sandboxed with no network at all.
//!
//! The build Job's pod has two containers, because the build runs the repository's build scripts and
//! proc macros (arbitrary code) and the cache is shared by every user:
//! - init container `build` (user code): sees its own CompileJob's workspace, a scratch `/tmp` and an
//!   `out` emptyDir, where it leaves the module and its report. Nothing of the shared cache.
//! - container `compiler` (`publish`, no user code): reads the module from `out` (read-only, never
//!   following a link, regular files only), validates it and publishes `wasm/<sha256>.wasm`. It has a
//!   scratch directory of its own: the `/tmp` the build wrote into could hold links aimed at `wasm/`.

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
use crate::config::{IsolationProbe, OperatorConfig};
use crate::crd::CompileJob;

/// The container whose termination message is the stage's report (for the build: the publish step).
pub const COMPILER_CONTAINER: &str = "compiler";
/// The build Job's init container: the only one that runs the repository's code.
pub const BUILD_CONTAINER: &str = "build";
/// Labels the Jobs (and so their pods) with the CompileJob they work for.
pub const COMPILE_JOB_LABEL: &str = "outlayer.dev/compile-job";
/// Each Job sees only its own CompileJob's workspace (checkout, vendored crates, target dir), never the
/// whole cache: cargo reads `.cargo/config.toml` from every parent directory, so a hostile build script
/// that could write into a shared parent could plant a `rustc-wrapper` for later fetches (which have
/// network).
const WORKSPACE_MOUNT: &str = "/workspace";
/// The publish step writes `<cache>/wasm` and sees nothing else of the cache.
const CACHE_MOUNT: &str = "/cache";
/// Where the build leaves the module and its report for the publish step (an emptyDir of the pod).
const OUT_MOUNT: &str = "/out";
/// Per-CompileJob working directories on the cache volume.
pub const WORKSPACES_SUBDIR: &str = "workspaces";

/// Which of the steps a Job runs.
pub use crate::crd::CompileStage as Stage;

/// `<compile job>-fetch` / `-build` / `-resolve`.
pub fn compile_stage_job_name(compile_job: &str, stage: Stage) -> String {
    bounded_name(compile_job, &format!("-{}", stage.as_str()))
}

/// The workspace of a CompileJob on the cache volume.
pub fn workspace_sub_path(compile_job: &str) -> String {
    format!("{WORKSPACES_SUBDIR}/{compile_job}")
}

/// The network side's arguments: the source, the allow-list and the mirrors.
fn source_args(
    command: &str,
    compile_job: &CompileJob,
    config: &OperatorConfig,
) -> Result<Vec<String>> {
    let source = compile_job.spec.source.as_ref().ok_or_else(|| {
        crate::Error::InvalidSpec("a git stage for a CompileJob without repo".to_string())
    })?;
    let mut args = vec![
        command.to_string(),
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
    Ok(args)
}

/// The fetch Job of a module by URL (`outlayer-compiler fetch-url`): the same Job name, labels (so
/// the same egress NetworkPolicy) and hardening as a git fetch. It runs no code of anyone's but
/// ours, so, like the build's publish step, it mounts `wasm/` to publish into; it sees no workspace.
fn url_fetch_job(
    compile_job: &CompileJob,
    module_url: &crate::crd::ModuleUrl,
    config: &OperatorConfig,
) -> Result<Job> {
    let compiler = &config.compiler;
    let mut args = vec![
        "fetch-url".to_string(),
        "--url".to_string(),
        module_url.url.clone(),
        "--sha256".to_string(),
        module_url.sha256.clone(),
        "--cache".to_string(),
        CACHE_MOUNT.to_string(),
        "--max-bytes".to_string(),
        compiler.url_fetch_max_bytes.to_string(),
        "--timeout-seconds".to_string(),
        compiler.fetch_timeout_seconds.to_string(),
    ];
    for cidr in &compiler.url_fetch_allow_cidrs {
        args.extend(["--allow-cidr".to_string(), cidr.clone()]);
    }
    let mut container = compiler_container(
        COMPILER_CONTAINER,
        args,
        vec![
            mount("cache", &format!("{CACHE_MOUNT}/wasm"), Some("wasm"), false),
            mount("tmp", "/tmp", None, false),
        ],
        config,
    );
    if let Some(pem) = &compiler.url_fetch_ca_pem {
        container.env.get_or_insert_with(Vec::new).push(EnvVar {
            name: "OUTLAYER_URL_CA_PEM".to_string(),
            value: Some(pem.clone()),
            ..Default::default()
        });
    }
    stage_job(compile_job, Stage::Fetch, Vec::new(), container, config)
}

/// The fetch Job: clone `spec.repo` at `spec.commit`, resolve it to a SHA (and, for a SHA, find a
/// branch or tag that holds it), vendor dependencies.
pub fn fetch_job(compile_job: &CompileJob, config: &OperatorConfig) -> Result<Job> {
    if let Some(module_url) = &compile_job.spec.module_url {
        return url_fetch_job(compile_job, module_url, config);
    }
    let mut args = source_args("fetch", compile_job, config)?;
    args.extend(["--workspace".to_string(), WORKSPACE_MOUNT.to_string()]);
    let container = compiler_container(
        COMPILER_CONTAINER,
        args,
        vec![
            workspace_mount(compile_job),
            mount("tmp", "/tmp", None, false),
        ],
        config,
    );
    stage_job(compile_job, Stage::Fetch, Vec::new(), container, config)
}

/// The resolve Job: where a branch or tag name points now (`git ls-remote`). It touches no part of
/// the cache: its scratch space is its own `/tmp`.
pub fn resolve_job(compile_job: &CompileJob, config: &OperatorConfig) -> Result<Job> {
    let mut args = source_args("resolve", compile_job, config)?;
    args.extend(["--workspace".to_string(), "/tmp/resolve".to_string()]);
    let container = compiler_container(
        COMPILER_CONTAINER,
        args,
        vec![mount("tmp", "/tmp", None, false)],
        config,
    );
    stage_job(compile_job, Stage::Resolve, Vec::new(), container, config)
}

/// The build Job: build the fetched workspace offline (init container `build`, no cache access),
/// then validate and publish the module (container `compiler`, no user code).
pub fn build_job(
    compile_job: &CompileJob,
    resolved_commit: &str,
    config: &OperatorConfig,
) -> Result<Job> {
    let mut args = vec![
        "build".to_string(),
        "--out".to_string(),
        OUT_MOUNT.to_string(),
        "--commit".to_string(),
        resolved_commit.to_string(),
        "--timeout-seconds".to_string(),
        config.compiler.build_timeout_seconds.to_string(),
        "--workspace".to_string(),
        WORKSPACE_MOUNT.to_string(),
    ];
    if let Some(IsolationProbe::At(probe)) = config.compiler.isolation_probe {
        args.extend(["--isolation-probe".to_string(), probe.to_string()]);
    }
    let build = compiler_container(
        BUILD_CONTAINER,
        args,
        vec![
            workspace_mount(compile_job),
            mount("tmp", "/tmp", None, false),
            mount("out", OUT_MOUNT, None, false),
        ],
        config,
    );
    let publish = compiler_container(
        COMPILER_CONTAINER,
        vec![
            "publish".to_string(),
            "--from".to_string(),
            OUT_MOUNT.to_string(),
            "--cache".to_string(),
            CACHE_MOUNT.to_string(),
            "--workspace".to_string(),
            "/scratch".to_string(),
        ],
        vec![
            mount("out", OUT_MOUNT, None, true),
            mount("cache", &format!("{CACHE_MOUNT}/wasm"), Some("wasm"), false),
            mount("scratch", "/scratch", None, false),
        ],
        config,
    );
    stage_job(compile_job, Stage::Build, vec![build], publish, config)
}

fn mount(volume: &str, path: &str, sub_path: Option<&str>, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: volume.to_string(),
        mount_path: path.to_string(),
        sub_path: sub_path.map(str::to_string),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

fn workspace_mount(compile_job: &CompileJob) -> VolumeMount {
    let name = compile_job.metadata.name.as_deref().unwrap_or_default();
    mount(
        "cache",
        WORKSPACE_MOUNT,
        Some(&workspace_sub_path(name)),
        false,
    )
}

fn compiler_container(
    name: &str,
    args: Vec<String>,
    volume_mounts: Vec<VolumeMount>,
    config: &OperatorConfig,
) -> Container {
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
    Container {
        name: name.to_string(),
        image: Some(config.compiler.image.clone()),
        args: Some(args),
        env: (!env.is_empty()).then_some(env),
        resources: Some(resources),
        security_context: Some(container_security_context()),
        termination_message_policy: Some("File".to_string()),
        volume_mounts: Some(volume_mounts),
        ..Default::default()
    }
}

fn stage_job(
    compile_job: &CompileJob,
    stage: Stage,
    init_containers: Vec<Container>,
    container: Container,
    config: &OperatorConfig,
) -> Result<Job> {
    let (name, namespace, owner) = super::owner_identity(compile_job)?;
    let mut labels = sandbox_labels(
        "outlayer-compiler",
        (COMPILE_JOB_LABEL, &bounded_name(name, "")),
    );
    labels.insert("outlayer.dev/stage".to_string(), stage.as_str().to_string());
    if stage != Stage::Build {
        // The fetch and resolve need the network; the chart gives them a NetworkPolicy of their own.
        labels.remove(SANDBOX_LABEL);
    }
    let timeout = match stage {
        Stage::Fetch | Stage::Resolve => config.compiler.fetch_timeout_seconds,
        Stage::Build => config.compiler.build_timeout_seconds,
    };
    let empty_dir = |name: &str| Volume {
        name: name.to_string(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    };
    let volumes = match stage {
        Stage::Fetch => vec![super::cache_volume(config), empty_dir("tmp")],
        Stage::Resolve => vec![empty_dir("tmp")],
        Stage::Build => vec![
            super::cache_volume(config),
            empty_dir("tmp"),
            empty_dir("out"),
            empty_dir("scratch"),
        ],
    };

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
                    init_containers: (!init_containers.is_empty()).then_some(init_containers),
                    containers: vec![container],
                    volumes: Some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    })
}

/// The compiler's report in a finished pod of a fetch or build Job (its termination message), if the
/// container has terminated. `Err` carries why there is no usable report.
pub fn read_compiler_report<T: serde::de::DeserializeOwned>(
    pod: &k8s_openapi::api::core::v1::Pod,
) -> Option<Result<T, String>> {
    let status = pod.status.as_ref()?;
    let terminated_in = |statuses: Option<&[k8s_openapi::api::core::v1::ContainerStatus]>,
                         name: &str| {
        statuses
            .unwrap_or_default()
            .iter()
            .find(|c| c.name == name)
            .and_then(|c| c.state.as_ref())
            .and_then(|state| state.terminated.as_ref())
            .cloned()
    };
    // A build container that crashed (killed, out of memory) leaves the publish step never started.
    if let Some(build) = terminated_in(status.init_container_statuses.as_deref(), BUILD_CONTAINER)
        && build.exit_code != 0
    {
        return Some(Err(format!(
            "the build container exited with code {} ({}): {}",
            build.exit_code,
            build.reason.as_deref().unwrap_or("Error"),
            build
                .message
                .as_deref()
                .unwrap_or("")
                .chars()
                .take(512)
                .collect::<String>()
        )));
    }
    let terminated = terminated_in(status.container_statuses.as_deref(), COMPILER_CONTAINER)?;
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
            CompileJobSpec::git(CompileSource {
                repo: "https://github.com/alice/echo".to_string(),
                commit: "main".to_string(),
                build_target: BUILD_TARGET_WASIP1.to_string(),
            }),
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
    fn a_module_by_url_is_fetched_by_the_fetch_job_into_the_cache_by_hash() {
        let mut config = OperatorConfig::default();
        config.compiler.url_fetch_allow_cidrs = vec!["10.9.0.0/16".to_string()];
        config.compiler.url_fetch_max_bytes = 1234;
        config.compiler.url_fetch_ca_pem = Some("-----BEGIN CERTIFICATE-----".to_string());
        let module_url = crate::crd::ModuleUrl {
            url: "https://modules.example/echo.wasm".to_string(),
            sha256: "ab".repeat(32),
        };
        let mut compile_job = CompileJob::new(
            &module_url.compile_job_name(),
            CompileJobSpec::url(module_url.clone()),
        );
        compile_job.metadata.namespace = Some("jobs".to_string());
        compile_job.metadata.uid = Some("uid-8".to_string());
        let job = fetch_job(&compile_job, &config).unwrap();
        let args = args(&job);
        assert_eq!(
            args,
            [
                "fetch-url",
                "--url",
                "https://modules.example/echo.wasm",
                "--sha256",
                &"ab".repeat(32),
                "--cache",
                "/cache",
                "--max-bytes",
                "1234",
                "--timeout-seconds",
                "300",
                "--allow-cidr",
                "10.9.0.0/16"
            ]
        );
        // The fetch's labels (so its egress policy), no workspace: only wasm/ and /tmp.
        assert_eq!(labels(&job)["outlayer.dev/stage"], "fetch");
        assert!(!labels(&job).contains_key(SANDBOX_LABEL));
        let container = &pod_spec(&job).containers[0];
        assert_eq!(
            layout(container),
            [
                (
                    "cache".to_string(),
                    Some("wasm".to_string()),
                    "/cache/wasm".to_string(),
                    false
                ),
                ("tmp".to_string(), None, "/tmp".to_string(), false),
            ]
        );
        let env = container.env.clone().unwrap_or_default();
        assert!(env.iter().any(|e| e.name == "OUTLAYER_URL_CA_PEM"
            && e.value.as_deref() == Some("-----BEGIN CERTIFICATE-----")));
        // A git stage is never made for it.
        assert!(resolve_job(&compile_job, &config).is_err());
    }

    fn pod_spec(job: &Job) -> PodSpec {
        job.spec.as_ref().unwrap().template.spec.clone().unwrap()
    }

    /// (volume, subPath, mountPath, read-only) of a container's mounts.
    fn layout(container: &Container) -> Vec<(String, Option<String>, String, bool)> {
        container
            .volume_mounts
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|m| {
                (
                    m.name,
                    m.sub_path,
                    m.mount_path,
                    m.read_only.unwrap_or(false),
                )
            })
            .collect()
    }

    #[test]
    fn build_job_is_sandboxed_and_pinned_to_the_resolved_commit() {
        let job = build_job(&compile_job(), &"a".repeat(40), &OperatorConfig::default()).unwrap();
        assert_eq!(
            job.metadata.name.as_deref(),
            Some("cj-0123456789abcdef-build")
        );
        let pod = pod_spec(&job);
        let build = &pod.init_containers.as_ref().unwrap()[0];
        assert_eq!(build.name, BUILD_CONTAINER);
        let args = build.args.clone().unwrap();
        assert_eq!(args[0], "build");
        let commit_at = args.iter().position(|a| a == "--commit").unwrap();
        assert_eq!(args[commit_at + 1], "a".repeat(40));
        assert!(!args.contains(&"--cache".to_string()), "{args:?}");
        assert_eq!(labels(&job)[SANDBOX_LABEL], "true");
        let spec = job.spec.clone().unwrap();
        assert_eq!(spec.backoff_limit, Some(0));
        assert_eq!(pod.automount_service_account_token, Some(false));
        for container in pod.init_containers.iter().flatten().chain(&pod.containers) {
            assert_eq!(
                container
                    .security_context
                    .as_ref()
                    .unwrap()
                    .read_only_root_filesystem,
                Some(true)
            );
        }
        let owner = &job.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("CompileJob", "uid-7")
        );
    }

    #[test]
    fn the_build_waits_for_its_network_policy_unless_told_not_to() {
        let args = |probe: Option<IsolationProbe>| {
            let mut config = OperatorConfig::default();
            config.compiler.isolation_probe = probe;
            let job = build_job(&compile_job(), &"a".repeat(40), &config).unwrap();
            pod_spec(&job).init_containers.as_ref().unwrap()[0]
                .args
                .clone()
                .unwrap()
        };
        let probed = args(Some(IsolationProbe::At("10.96.0.1:443".parse().unwrap())));
        let at = probed
            .iter()
            .position(|a| a == "--isolation-probe")
            .unwrap();
        assert_eq!(probed[at + 1], "10.96.0.1:443");
        for probe in [None, Some(IsolationProbe::Off)] {
            let args = args(probe);
            assert!(!args.contains(&"--isolation-probe".to_string()), "{args:?}");
        }
    }

    #[test]
    fn the_code_that_builds_cannot_reach_the_shared_cache_and_the_publisher_runs_none() {
        let job = build_job(&compile_job(), &"a".repeat(40), &OperatorConfig::default()).unwrap();
        let pod = pod_spec(&job);
        let build = &pod.init_containers.as_ref().unwrap()[0];
        // The build sees the cache volume only as its own workspace.
        assert_eq!(
            layout(build),
            [
                (
                    "cache".to_string(),
                    Some("workspaces/cj-0123456789abcdef".to_string()),
                    "/workspace".to_string(),
                    false
                ),
                ("tmp".to_string(), None, "/tmp".to_string(), false),
                ("out".to_string(), None, "/out".to_string(), false),
            ]
        );
        assert_eq!(pod.containers.len(), 1);
        let publish = &pod.containers[0];
        assert_eq!(publish.name, COMPILER_CONTAINER);
        assert_eq!(publish.args.as_ref().unwrap()[0], "publish");
        assert_eq!(
            layout(publish),
            [
                ("out".to_string(), None, "/out".to_string(), true),
                (
                    "cache".to_string(),
                    Some("wasm".to_string()),
                    "/cache/wasm".to_string(),
                    false
                ),
                ("scratch".to_string(), None, "/scratch".to_string(), false),
            ]
        );
        // Nothing the build could write is writable by, or a scratch space of, the publisher.
        let build_volumes: Vec<_> = layout(build)
            .into_iter()
            .map(|(v, s, _, _)| (v, s))
            .collect();
        for (volume, sub_path, path, read_only) in layout(publish) {
            if build_volumes.contains(&(volume.clone(), sub_path.clone())) {
                assert!(read_only, "{volume} at {path} is shared with the build");
            }
        }
        let volumes: Vec<_> = pod
            .volumes
            .unwrap()
            .into_iter()
            .map(|v| (v.name, v.empty_dir.is_some()))
            .collect();
        assert!(volumes.contains(&("out".to_string(), true)));
        assert!(volumes.contains(&("scratch".to_string(), true)));
    }

    #[test]
    fn resolve_job_has_network_and_no_cache() {
        let job = resolve_job(&compile_job(), &OperatorConfig::default()).unwrap();
        assert_eq!(
            job.metadata.name.as_deref(),
            Some("cj-0123456789abcdef-resolve")
        );
        assert_eq!(args(&job)[0], "resolve");
        assert!(!labels(&job).contains_key(SANDBOX_LABEL));
        assert_eq!(labels(&job)["outlayer.dev/stage"], "resolve");
        let pod = pod_spec(&job);
        let names: Vec<_> = pod.volumes.unwrap().into_iter().map(|v| v.name).collect();
        assert_eq!(names, ["tmp"]);
    }
}
