//! The executor pod of one ExecutionRequest, and the ConfigMap that carries its input (DESIGN §5).
//!
//! Input goes through a ConfigMap file rather than an argument or env var: Linux caps one argument or
//! env string at 128 KiB (MAX_ARG_STRLEN) and inputs may be 256 KiB.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, KeyToPath, Pod, PodSpec, SecretVolumeSource,
    Volume, VolumeMount,
};
use kube::core::ObjectMeta;
use sha2::{Digest, Sha256};

use super::hardening::{container_security_context, pod_security_context, sandbox_labels};
use crate::config::OperatorConfig;
use crate::crd::{ExecutionRequest, ResponseFormat};
use crate::sealing::unseal::ENV_FILE_KEY;
use crate::seed::RunSeed;
use crate::{Error, Result};

pub const EXECUTOR_CONTAINER: &str = "executor";
/// Labels an executor pod and its input with the ExecutionRequest they belong to.
pub const EXECUTION_LABEL: &str = "outlayer.dev/execution";
const CACHE_MOUNT: &str = "/cache";
const OUTPUTS_MOUNT: &str = "/outputs";
const INPUT_MOUNT: &str = "/input";
const INPUT_KEY: &str = "stdin";
/// Where large outputs land on the cache volume (the executor names them by sha256).
pub const RESULTS_SUBDIR: &str = "results";

/// The objects to create for one execution: the input first, then the pod that mounts it.
#[derive(Clone, Debug)]
pub struct ExecutorPod {
    pub input: ConfigMap,
    pub pod: Pod,
}

/// `<execution>-env`: the ephemeral Secret with the execution's unsealed secrets.
pub fn env_secret_name(execution_name: &str) -> String {
    bounded_name(execution_name, "-env")
}

/// `<execution>-run`, kept within the 63 characters a label value (and a DNS label) allows.
pub fn executor_pod_name(execution_name: &str) -> String {
    bounded_name(execution_name, "-run")
}

/// The pod of a re-run after `retries` platform failures: `<execution>-run`, then `-run-2`, `-run-3`…
/// A new name, so the failed pod can linger for `describe` without blocking the re-run.
pub fn executor_pod_name_for(execution_name: &str, retries: u32) -> String {
    match retries {
        0 => executor_pod_name(execution_name),
        n => bounded_name(execution_name, &format!("-run-{}", n + 1)),
    }
}

pub fn input_config_map_name(execution_name: &str) -> String {
    bounded_name(execution_name, "-input")
}

/// `base + suffix` when it fits in 63 characters; otherwise a prefix of `base`, 8 hex of its sha256, then
/// the suffix, so distinct long names stay distinct.
pub fn bounded_name(base: &str, suffix: &str) -> String {
    const MAX: usize = 63;
    if base.len() + suffix.len() <= MAX {
        return format!("{base}{suffix}");
    }
    let digest = Sha256::digest(base.as_bytes());
    let hash = hex::encode(&digest[..4]);
    let keep = MAX - suffix.len() - hash.len() - 1;
    let prefix = base[..keep].trim_end_matches('-');
    format!("{prefix}-{hash}{suffix}")
}

/// Builds the executor pod (owned by the ExecutionRequest, so garbage collection removes it with the
/// request) for `module_sha256`, already in the cache at `wasm/<sha256>.wasm`.
pub fn executor_pod(
    execution: &ExecutionRequest,
    module_sha256: &str,
    retries: u32,
    env_secret: Option<&str>,
    seed: Option<&RunSeed>,
    config: &OperatorConfig,
) -> Result<ExecutorPod> {
    let (name, namespace, owner) = super::owner_identity(execution)?;
    if !is_sha256_hex(module_sha256) {
        return Err(Error::InvalidModuleHash(module_sha256.to_string()));
    }
    let spec = &execution.spec;
    let pod_name = executor_pod_name_for(name, retries);
    let input_name = input_config_map_name(name);
    let labels = sandbox_labels(
        "outlayer-executor",
        (EXECUTION_LABEL, &bounded_name(name, "")),
    );

    let input = ConfigMap {
        metadata: ObjectMeta {
            name: Some(input_name.clone()),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([(
                EXECUTION_LABEL.to_string(),
                bounded_name(name, ""),
            )])),
            owner_references: Some(vec![owner.clone()]),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            INPUT_KEY.to_string(),
            spec.input.clone(),
        )])),
        immutable: Some(true),
        ..Default::default()
    };

    let mut args = vec![
        "--module".to_string(),
        format!("{CACHE_MOUNT}/wasm/{module_sha256}.wasm"),
        "--module-sha256".to_string(),
        module_sha256.to_string(),
        "--input-file".to_string(),
        format!("{INPUT_MOUNT}/{INPUT_KEY}"),
        "--max-instructions".to_string(),
        spec.limits.max_instructions.to_string(),
        "--max-memory-mb".to_string(),
        spec.limits.max_memory_mb.to_string(),
        "--max-execution-seconds".to_string(),
        spec.limits.max_execution_seconds.to_string(),
        "--max-output-bytes".to_string(),
        config.executor_max_output_bytes.to_string(),
        "--response-format".to_string(),
        response_format_arg(spec.response_format).to_string(),
        "--output-dir".to_string(),
        OUTPUTS_MOUNT.to_string(),
    ];
    if env_secret.is_some() {
        args.extend([
            "--env-file".to_string(),
            format!("{SECRETS_MOUNT}/{ENV_FILE_KEY}"),
        ]);
    }
    if let Some(seed) = seed {
        args.extend([
            "--deterministic".to_string(),
            "--seed".to_string(),
            seed.seed.clone(),
            "--fixed-unix-time-ns".to_string(),
            seed.unix_time_ns.to_string(),
        ]);
    }
    if let Some(on_chain) = &spec.on_chain {
        args.extend([
            "--sender-id".to_string(),
            on_chain.sender.clone(),
            "--request-id".to_string(),
            on_chain.request_id.to_string(),
            "--block-height".to_string(),
            on_chain.block_height.to_string(),
        ]);
        if let Some(contract) = &config.contract_id {
            args.extend(["--contract-id".to_string(), contract.clone()]);
        }
    }

    let memory_mb =
        u64::from(spec.limits.max_memory_mb) + u64::from(config.executor_memory_overhead_mb);
    let resources = super::executor_resources(config, format!("{memory_mb}Mi"));
    let deadline = i64::try_from(spec.limits.max_execution_seconds)
        .unwrap_or(i64::MAX)
        .saturating_add(config.pod_startup_grace_seconds);

    let (volume_mounts, volumes) = executor_volumes(input_name, env_secret, config);
    let pod = hardened_executor_pod(
        ObjectMeta {
            name: Some(pod_name),
            namespace: Some(namespace.to_string()),
            labels: Some(labels),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        deadline,
        Container {
            args: Some(args),
            resources: Some(resources),
            volume_mounts: Some(volume_mounts),
            ..Default::default()
        },
        volumes,
        config,
    );
    Ok(ExecutorPod { input, pod })
}

/// The unsealed secrets, read once by the executor (`--env-file`) and handed to the guest as its
/// environment.
const SECRETS_MOUNT: &str = "/secrets";

/// Labels a warm pod with its memory class (MiB); the pool lists its pods by it.
pub const WARM_CLASS_LABEL: &str = "outlayer.dev/warm-class";
/// `idle` while the pod waits in the pool, `claimed` once an execution owns it. A claimed pod never
/// goes back: it runs at most one execution, then exits.
pub const WARM_STATE_LABEL: &str = "outlayer.dev/warm";
pub const WARM_IDLE: &str = "idle";
pub const WARM_CLAIMED: &str = "claimed";
/// `warm` or `cold`: how the execution's pod started (kubectl-visible).
pub const POD_KIND_LABEL: &str = "outlayer.dev/pod-kind";
/// On a claimed warm pod: which attempt of its execution it runs.
pub const ATTEMPT_LABEL: &str = "outlayer.dev/attempt";
/// On a claimed warm pod: `pending` from the claim until the assignment was accepted, then `done`.
pub const HANDOFF_ANNOTATION: &str = "outlayer.dev/handoff";
/// The key of the handoff token in a warm pod's Secret.
pub const TOKEN_KEY: &str = "token";
const HANDOFF_MOUNT: &str = "/handoff";
const MODULES_MOUNT: &str = "/modules";
/// Where the module cache keeps compiled modules (`<sha256>.wasm`).
pub const MODULES_SUBDIR: &str = "wasm";
/// Past the wait for its assignment, how long a warm pod may exist before the kubelet kills it:
/// the claim lowers it to the run's own deadline.
const WARM_DEADLINE_SLACK_SECONDS: i64 = 3600;

/// What a warm pod is handed for `execution`: the same module, input, limits, format and identity a
/// cold pod gets on its command line, plus the unsealed `secrets` its env file would hold.
pub fn assignment(
    execution: &ExecutionRequest,
    module_sha256: &str,
    secrets: BTreeMap<String, String>,
    seed: Option<&RunSeed>,
    config: &OperatorConfig,
) -> Result<outlayer_executor::handoff::Assignment> {
    if !is_sha256_hex(module_sha256) {
        return Err(Error::InvalidModuleHash(module_sha256.to_string()));
    }
    let spec = &execution.spec;
    let on_chain = spec.on_chain.as_ref();
    Ok(outlayer_executor::handoff::Assignment {
        module_sha256: module_sha256.to_string(),
        input: spec.input.clone(),
        max_instructions: spec.limits.max_instructions,
        max_memory_mb: spec.limits.max_memory_mb,
        max_execution_seconds: spec.limits.max_execution_seconds,
        max_output_bytes: config.executor_max_output_bytes,
        response_format: response_format_arg(spec.response_format).to_string(),
        deterministic: seed.map(|seed| outlayer_executor::handoff::DeterministicAssignment {
            seed: seed.seed.clone(),
            fixed_unix_time_ns: seed.unix_time_ns,
        }),
        sender_id: on_chain.map(|c| c.sender.clone()).unwrap_or_default(),
        request_id: on_chain
            .map(|c| c.request_id.to_string())
            .unwrap_or_default(),
        contract_id: on_chain.and(config.contract_id.clone()).unwrap_or_default(),
        block_height: on_chain
            .map(|c| c.block_height.to_string())
            .unwrap_or_default(),
        secrets,
    })
}

/// `<pod>-handoff`: the Secret with a warm pod's one-time token.
pub fn handoff_secret_name(pod_name: &str) -> String {
    bounded_name(pod_name, "-handoff")
}

/// A warm executor pod of memory class `class_mb` (MiB), owned by the pool's owner object `owner`
/// (kept in the pool until claimed). The same hardening as a cold pod; of the cache it mounts only
/// the module area, read-only, and the results area; the token comes from the Secret
/// [`handoff_secret_name`], mounted as a file (never in the spec's env).
pub fn warm_executor_pod(
    pod_name: &str,
    namespace: &str,
    class_mb: u32,
    owner: k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
    config: &OperatorConfig,
) -> Pod {
    let mut labels = sandbox_labels(
        "outlayer-executor",
        (WARM_CLASS_LABEL, &class_mb.to_string()),
    );
    labels.insert(WARM_STATE_LABEL.to_string(), WARM_IDLE.to_string());
    labels.insert(POD_KIND_LABEL.to_string(), "warm".to_string());
    let wait_seconds = config.warm_pool.max_age.as_secs() + 30;
    let args = vec![
        "serve-once".to_string(),
        "--port".to_string(),
        config.warm_pool.handoff_port.to_string(),
        "--token-file".to_string(),
        format!("{HANDOFF_MOUNT}/{TOKEN_KEY}"),
        "--module-dir".to_string(),
        MODULES_MOUNT.to_string(),
        "--memory-class-mb".to_string(),
        class_mb.to_string(),
        "--wait-seconds".to_string(),
        wait_seconds.to_string(),
        "--output-dir".to_string(),
        OUTPUTS_MOUNT.to_string(),
    ];
    let memory_mb = u64::from(class_mb) + u64::from(config.executor_memory_overhead_mb);
    let deadline = i64::try_from(wait_seconds)
        .unwrap_or(i64::MAX)
        .saturating_add(WARM_DEADLINE_SLACK_SECONDS);
    let mounts = vec![
        VolumeMount {
            name: "cache".to_string(),
            mount_path: MODULES_MOUNT.to_string(),
            sub_path: Some(MODULES_SUBDIR.to_string()),
            read_only: Some(true),
            ..Default::default()
        },
        VolumeMount {
            name: "cache".to_string(),
            mount_path: OUTPUTS_MOUNT.to_string(),
            sub_path: Some(RESULTS_SUBDIR.to_string()),
            ..Default::default()
        },
        VolumeMount {
            name: "handoff".to_string(),
            mount_path: HANDOFF_MOUNT.to_string(),
            read_only: Some(true),
            ..Default::default()
        },
    ];
    let volumes = vec![
        super::cache_volume(config),
        Volume {
            name: "handoff".to_string(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(handoff_secret_name(pod_name)),
                items: Some(vec![KeyToPath {
                    key: TOKEN_KEY.to_string(),
                    path: TOKEN_KEY.to_string(),
                    mode: Some(0o444),
                }]),
                ..Default::default()
            }),
            ..Default::default()
        },
    ];
    hardened_executor_pod(
        ObjectMeta {
            name: Some(pod_name.to_string()),
            namespace: Some(namespace.to_string()),
            labels: Some(labels),
            owner_references: Some(vec![owner]),
            ..Default::default()
        },
        deadline,
        Container {
            args: Some(args),
            ports: Some(vec![k8s_openapi::api::core::v1::ContainerPort {
                name: Some("handoff".to_string()),
                container_port: i32::from(config.warm_pool.handoff_port),
                protocol: Some("TCP".to_string()),
                ..Default::default()
            }]),
            // Ready once the handoff port listens: the pool hands out only ready pods.
            readiness_probe: Some(k8s_openapi::api::core::v1::Probe {
                tcp_socket: Some(k8s_openapi::api::core::v1::TCPSocketAction {
                    port: k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(
                        i32::from(config.warm_pool.handoff_port),
                    ),
                    ..Default::default()
                }),
                period_seconds: Some(1),
                ..Default::default()
            }),
            resources: Some(super::executor_resources(config, format!("{memory_mb}Mi"))),
            volume_mounts: Some(mounts),
            ..Default::default()
        },
        volumes,
        config,
    )
}

/// The executor pod both kinds share, so their hardening cannot drift apart: never restarted, no
/// service-account token or service links, killed by the kubelet at `deadline_seconds`, the
/// configured runtime class, the restricted security contexts, and the result in the termination
/// message. `container` brings what differs (arguments, ports, probe, resources, mounts); its name,
/// image, security context and termination-message policy are set here.
fn hardened_executor_pod(
    metadata: ObjectMeta,
    deadline_seconds: i64,
    container: Container,
    volumes: Vec<Volume>,
    config: &OperatorConfig,
) -> Pod {
    Pod {
        metadata,
        spec: Some(PodSpec {
            restart_policy: Some("Never".to_string()),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            active_deadline_seconds: Some(deadline_seconds),
            runtime_class_name: config.runtime_class_name.clone(),
            security_context: Some(pod_security_context()),
            containers: vec![Container {
                name: EXECUTOR_CONTAINER.to_string(),
                image: Some(config.executor_image.clone()),
                security_context: Some(container_security_context()),
                termination_message_policy: Some("File".to_string()),
                ..container
            }],
            volumes: Some(volumes),
            ..Default::default()
        }),
        status: None,
    }
}

fn executor_volumes(
    input_name: String,
    env_secret: Option<&str>,
    config: &OperatorConfig,
) -> (Vec<VolumeMount>, Vec<Volume>) {
    let mut mounts = vec![
        VolumeMount {
            name: "cache".to_string(),
            mount_path: CACHE_MOUNT.to_string(),
            read_only: Some(true),
            ..Default::default()
        },
        VolumeMount {
            name: "cache".to_string(),
            mount_path: OUTPUTS_MOUNT.to_string(),
            sub_path: Some(RESULTS_SUBDIR.to_string()),
            ..Default::default()
        },
        VolumeMount {
            name: "input".to_string(),
            mount_path: INPUT_MOUNT.to_string(),
            read_only: Some(true),
            ..Default::default()
        },
    ];
    let mut volumes = vec![
        super::cache_volume(config),
        Volume {
            name: "input".to_string(),
            config_map: Some(ConfigMapVolumeSource {
                name: input_name,
                items: Some(vec![KeyToPath {
                    key: INPUT_KEY.to_string(),
                    path: INPUT_KEY.to_string(),
                    mode: Some(0o444),
                }]),
                ..Default::default()
            }),
            ..Default::default()
        },
    ];
    if let Some(secret) = env_secret {
        mounts.push(VolumeMount {
            name: "secrets".to_string(),
            mount_path: SECRETS_MOUNT.to_string(),
            read_only: Some(true),
            ..Default::default()
        });
        volumes.push(Volume {
            name: "secrets".to_string(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.to_string()),
                items: Some(vec![KeyToPath {
                    key: ENV_FILE_KEY.to_string(),
                    path: ENV_FILE_KEY.to_string(),
                    mode: Some(0o444),
                }]),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    (mounts, volumes)
}

fn response_format_arg(format: ResponseFormat) -> &'static str {
    match format {
        ResponseFormat::Text => "text",
        ResponseFormat::Json => "json",
        ResponseFormat::Bytes => "bytes",
    }
}

pub fn is_sha256_hex(value: &str) -> bool {
    value.len() == 64
        && value
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{CodeRef, ExecutionRequestSpec, Limits, OnChain};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    const SHA: &str = "3f0c2a9b3f0c2a9b3f0c2a9b3f0c2a9b3f0c2a9b3f0c2a9b3f0c2a9b3f0c2a9b";

    fn execution(name: &str) -> ExecutionRequest {
        let mut execution = ExecutionRequest::new(
            name,
            ExecutionRequestSpec {
                code: CodeRef::from_repo("https://github.com/alice/echo", "main"),
                input: "hello".to_string(),
                limits: Limits {
                    max_instructions: 1_000,
                    max_memory_mb: 32,
                    max_execution_seconds: 7,
                },
                response_format: ResponseFormat::Json,
                secrets_ref: None,
                compile_only: false,
                deterministic: None,
                on_chain: None,
            },
        );
        execution.metadata.namespace = Some("jobs".to_string());
        execution.metadata.uid = Some("uid-1".to_string());
        execution
    }

    fn arg_after<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
        let at = args.iter().position(|a| a == flag)?;
        args.get(at + 1).map(String::as_str)
    }

    #[test]
    fn pod_runs_the_module_with_the_requested_limits() {
        let built = executor_pod(
            &execution("req-1"),
            SHA,
            0,
            None,
            None,
            &OperatorConfig::default(),
        )
        .unwrap();
        let spec = built.pod.spec.unwrap();
        let container = &spec.containers[0];
        let args = container.args.clone().unwrap();
        assert_eq!(
            arg_after(&args, "--module"),
            Some(format!("/cache/wasm/{SHA}.wasm").as_str())
        );
        assert_eq!(arg_after(&args, "--module-sha256"), Some(SHA));
        assert_eq!(arg_after(&args, "--max-instructions"), Some("1000"));
        assert_eq!(arg_after(&args, "--max-memory-mb"), Some("32"));
        assert_eq!(arg_after(&args, "--max-execution-seconds"), Some("7"));
        assert_eq!(arg_after(&args, "--response-format"), Some("json"));
        assert_eq!(arg_after(&args, "--input-file"), Some("/input/stdin"));
        assert_eq!(arg_after(&args, "--sender-id"), None);
        assert_eq!(spec.active_deadline_seconds, Some(37));
        let limits = container
            .resources
            .as_ref()
            .unwrap()
            .limits
            .as_ref()
            .unwrap();
        assert_eq!(limits["memory"], Quantity("96Mi".to_string()));
        assert_eq!(limits["cpu"], Quantity("1".to_string()));
        let requests = container
            .resources
            .as_ref()
            .unwrap()
            .requests
            .as_ref()
            .unwrap();
        assert_eq!(requests["cpu"], Quantity("100m".to_string()));
        assert_eq!(requests["memory"], Quantity("96Mi".to_string()));
        assert_eq!(built.input.data.unwrap()["stdin"], "hello");
        assert_eq!(built.input.immutable, Some(true));
    }

    #[test]
    fn pod_is_hardened_and_owned_by_its_request() {
        let built = executor_pod(
            &execution("req-1"),
            SHA,
            0,
            None,
            None,
            &OperatorConfig::default(),
        )
        .unwrap();
        let pod = built.pod;
        assert_eq!(pod.metadata.name.as_deref(), Some("req-1-run"));
        let owner = &pod.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("ExecutionRequest", "uid-1")
        );
        assert_eq!(owner.controller, Some(true));
        assert_eq!(pod.metadata.labels.unwrap()["outlayer.dev/sandbox"], "true");
        let spec = pod.spec.unwrap();
        assert_eq!(spec.automount_service_account_token, Some(false));
        assert_eq!(spec.enable_service_links, Some(false));
        assert_eq!(spec.restart_policy.as_deref(), Some("Never"));
        let context = spec.containers[0].security_context.clone().unwrap();
        assert_eq!(context.read_only_root_filesystem, Some(true));
        assert_eq!(context.allow_privilege_escalation, Some(false));
        assert_eq!(
            context.capabilities.unwrap().drop,
            Some(vec!["ALL".to_string()])
        );
        let cache_mount = &spec.containers[0].volume_mounts.as_ref().unwrap()[0];
        assert_eq!(cache_mount.read_only, Some(true));
    }

    #[test]
    fn on_chain_requests_pass_their_identity_to_the_guest() {
        let mut execution = execution("req-9");
        execution.spec.on_chain = Some(OnChain {
            request_id: 9,
            data_id: "x".to_string(),
            sender: "alice.near".to_string(),
            deposit: "1".to_string(),
            block_height: 1234,
            block_timestamp_ns: 0,
            seed_public_key: None,
            yield_deadline_height: 1434,
            include_stderr: false,
        });
        let config = OperatorConfig {
            contract_id: Some("outlayer.near".to_string()),
            runtime_class_name: Some("gvisor".to_string()),
            ..OperatorConfig::default()
        };
        let spec = executor_pod(&execution, SHA, 0, None, None, &config)
            .unwrap()
            .pod
            .spec
            .unwrap();
        let args = spec.containers[0].args.clone().unwrap();
        assert_eq!(arg_after(&args, "--sender-id"), Some("alice.near"));
        assert_eq!(arg_after(&args, "--request-id"), Some("9"));
        assert_eq!(arg_after(&args, "--block-height"), Some("1234"));
        assert_eq!(arg_after(&args, "--contract-id"), Some("outlayer.near"));
        assert_eq!(spec.runtime_class_name.as_deref(), Some("gvisor"));
    }

    #[test]
    fn bad_module_hashes_and_unsaved_requests_are_refused() {
        let config = OperatorConfig::default();
        assert!(matches!(
            executor_pod(&execution("a"), "../../etc/passwd", 0, None, None, &config),
            Err(Error::InvalidModuleHash(_))
        ));
        let mut unsaved = execution("a");
        unsaved.metadata.uid = None;
        assert!(matches!(
            executor_pod(&unsaved, SHA, 0, None, None, &config),
            Err(Error::MissingMetadata("metadata.uid"))
        ));
    }

    #[test]
    fn a_warm_assignment_carries_what_a_cold_pods_command_line_does() {
        let mut execution = execution("req-9");
        execution.spec.on_chain = Some(OnChain {
            request_id: 9,
            data_id: "x".to_string(),
            sender: "alice.near".to_string(),
            deposit: "1".to_string(),
            block_height: 1234,
            block_timestamp_ns: 0,
            seed_public_key: None,
            yield_deadline_height: 1434,
            include_stderr: false,
        });
        let config = OperatorConfig {
            contract_id: Some("outlayer.near".to_string()),
            ..OperatorConfig::default()
        };
        let secrets = BTreeMap::from([("API_KEY".to_string(), "v".to_string())]);
        let handed = assignment(&execution, SHA, secrets.clone(), None, &config).unwrap();
        let cold = executor_pod(&execution, SHA, 0, None, None, &config).unwrap();
        let args = cold.pod.spec.unwrap().containers[0].args.clone().unwrap();
        assert_eq!(handed.module_sha256, SHA);
        assert_eq!(handed.input, "hello");
        for (flag, value) in [
            ("--max-instructions", handed.max_instructions.to_string()),
            ("--max-memory-mb", handed.max_memory_mb.to_string()),
            (
                "--max-execution-seconds",
                handed.max_execution_seconds.to_string(),
            ),
            ("--max-output-bytes", handed.max_output_bytes.to_string()),
            ("--response-format", handed.response_format.clone()),
            ("--sender-id", handed.sender_id.clone()),
            ("--request-id", handed.request_id.clone()),
            ("--block-height", handed.block_height.clone()),
            ("--contract-id", handed.contract_id.clone()),
        ] {
            assert_eq!(arg_after(&args, flag), Some(value.as_str()), "{flag}");
        }
        assert_eq!(handed.secrets, secrets);
        assert!(assignment(&execution, "../x", BTreeMap::new(), None, &config).is_err());
    }

    #[test]
    fn a_warm_pod_is_hardened_sees_only_the_module_area_and_reads_its_token_from_a_secret() {
        let mut config = OperatorConfig::default();
        config.warm_pool.classes = vec![(128, 1)];
        let owner = k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
            api_version: "v1".to_string(),
            kind: "ConfigMap".to_string(),
            name: "outlayer-warm-pool".to_string(),
            uid: "pool".to_string(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        };
        let pod = warm_executor_pod("warm-128-x", "jobs", 128, owner, &config);
        let labels = pod.metadata.labels.clone().unwrap();
        assert_eq!(labels["outlayer.dev/sandbox"], "true");
        assert_eq!(labels[WARM_CLASS_LABEL], "128");
        assert_eq!(labels[WARM_STATE_LABEL], WARM_IDLE);
        assert!(!labels.contains_key(EXECUTION_LABEL));
        let spec = pod.spec.unwrap();
        assert_eq!(spec.automount_service_account_token, Some(false));
        assert_eq!(spec.enable_service_links, Some(false));
        let container = &spec.containers[0];
        assert!(container.env.is_none(), "no token or secret in the env");
        let context = container.security_context.clone().unwrap();
        assert_eq!(context.read_only_root_filesystem, Some(true));
        assert_eq!(
            context.capabilities.unwrap().drop,
            Some(vec!["ALL".to_string()])
        );
        let args = container.args.clone().unwrap();
        assert_eq!(args[0], "serve-once");
        assert_eq!(arg_after(&args, "--memory-class-mb"), Some("128"));
        assert_eq!(arg_after(&args, "--token-file"), Some("/handoff/token"));
        assert_eq!(arg_after(&args, "--wait-seconds"), Some("330"));
        let mounts = container.volume_mounts.clone().unwrap();
        let modules = mounts.iter().find(|m| m.mount_path == "/modules").unwrap();
        assert_eq!(
            (modules.sub_path.as_deref(), modules.read_only),
            (Some("wasm"), Some(true))
        );
        let outputs = mounts.iter().find(|m| m.mount_path == "/outputs").unwrap();
        assert_eq!(outputs.sub_path.as_deref(), Some("results"));
        assert!(
            mounts
                .iter()
                .filter(|m| m.name == "cache")
                .all(|m| m.sub_path.is_some()),
            "never the whole cache"
        );
        let handoff = spec
            .volumes
            .unwrap()
            .into_iter()
            .find(|v| v.name == "handoff")
            .unwrap();
        assert_eq!(
            handoff.secret.unwrap().secret_name.as_deref(),
            Some("warm-128-x-handoff")
        );
        let resources = container.resources.clone().unwrap();
        assert_eq!(
            resources.limits.unwrap()["memory"],
            Quantity("192Mi".to_string())
        );
        assert_eq!(
            resources.requests.unwrap()["cpu"],
            Quantity("100m".to_string())
        );
    }

    #[test]
    fn long_names_stay_within_63_characters_and_distinct() {
        let long_a = "a".repeat(100);
        let long_b = format!("{}b", "a".repeat(99));
        let pod_a = executor_pod_name(&long_a);
        assert!(pod_a.len() <= 63, "{pod_a}");
        assert!(pod_a.ends_with("-run"));
        assert_ne!(pod_a, executor_pod_name(&long_b));
        assert_eq!(executor_pod_name("req-1"), "req-1-run");
        assert_eq!(executor_pod_name_for("req-1", 0), "req-1-run");
        assert_eq!(executor_pod_name_for("req-1", 1), "req-1-run-2");
        assert!(executor_pod_name_for(&long_a, 1).ends_with("-run-2"));
        assert!(executor_pod_name_for(&long_a, 1).len() <= 63);
    }
}
