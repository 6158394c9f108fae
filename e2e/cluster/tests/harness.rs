//! The harness against the real control plane: Jobs, deadlines, network sandboxing, env and
//! volume resolution, garbage collection, Pod Security admission, restarts, graceful deletion.
//! Each test starts its own cluster and node agent; both are torn down when the test ends.

use std::future::Future;
use std::time::{Duration, Instant};

use e2e_cluster::{Cluster, DEFAULT_NODE, NodeAgent};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, ContainerStateTerminated, PersistentVolume, PersistentVolumeClaim, Pod, Secret,
};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::wait::conditions;
use outlayer_testkit::cluster::await_condition_within;
use serde_json::json;

/// Image whose "entrypoint" is the host OS: containers name their command.
const HOST_IMAGE: &str = "e2e/host";
/// Bounds only against hangs; nothing here is a timing assertion.
const WAIT: Duration = Duration::from_secs(90);

/// Field order matters: the agent (and its containers) goes before the control plane.
struct Env {
    agent: NodeAgent,
    cluster: Cluster,
    ns: String,
}

async fn env(ns: &str, labels: &[(&str, &str)]) -> Env {
    let cluster = Cluster::start().await.unwrap();
    let config = cluster
        .node_agent_config(DEFAULT_NODE)
        .unwrap()
        .with_image(HOST_IMAGE, &[]);
    let agent = cluster.start_node_agent(config).await.unwrap();
    cluster.create_namespace(ns, labels).await.unwrap();
    Env {
        agent,
        cluster,
        ns: ns.to_owned(),
    }
}

impl Env {
    fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.cluster.client(), &self.ns)
    }

    async fn create<K>(&self, value: serde_json::Value) -> K
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::Serialize
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        <K as kube::Resource>::DynamicType: Default,
    {
        let object: K = serde_json::from_value(value).unwrap();
        self.api::<K>()
            .create(&PostParams::default(), &object)
            .await
            .unwrap()
    }

    async fn pod(&self, name: &str) -> Option<Pod> {
        self.api::<Pod>().get_opt(name).await.unwrap()
    }

    /// Waits until pod `name` is Succeeded or Failed.
    async fn terminal_pod(&self, name: &str) -> Pod {
        let finished = |pod: Option<&Pod>| {
            pod.and_then(|p| p.status.as_ref()?.phase.as_deref())
                .is_some_and(|phase| matches!(phase, "Succeeded" | "Failed"))
        };
        await_condition_within(
            &format!("pod {name} to finish"),
            WAIT,
            self.api::<Pod>(),
            name,
            finished,
        )
        .await
        .unwrap_or_else(|| panic!("pod {name} finished without a pod"))
    }
}

async fn wait_for<T, F, Fut>(what: &str, probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    outlayer_testkit::wait_for(what, WAIT, probe).await
}

fn terminated(pod: &Pod, container: &str) -> ContainerStateTerminated {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.name == container))
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.clone())
        .unwrap_or_else(|| panic!("container {container} not terminated: {:?}", pod.status))
}

fn phase(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.clone())
        .unwrap_or_default()
}

fn shell_pod(name: &str, script: &str) -> serde_json::Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 2,
            "containers": [{"name": "main", "image": HOST_IMAGE, "command": ["/bin/sh", "-c", script]}]
        }
    })
}

#[tokio::test]
async fn job_runs_to_completion() {
    let env = env("jobs", &[]).await;
    env.create::<Job>(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "hello"},
        "spec": {
            "backoffLimit": 0,
            "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "main",
                    "image": HOST_IMAGE,
                    "command": ["/bin/sh", "-c", "echo hello from the job; printf done > /dev/termination-log"]
                }]
            }}
        }
    }))
    .await;
    let jobs = env.api::<Job>();
    await_condition_within(
        "job hello to complete",
        WAIT,
        jobs,
        "hello",
        conditions::is_job_completed(),
    )
    .await;

    let pods = env
        .api::<Pod>()
        .list(&ListParams::default().labels("job-name=hello"))
        .await
        .unwrap();
    assert_eq!(pods.items.len(), 1);
    let pod = &pods.items[0];
    assert_eq!(phase(pod), "Succeeded");
    let state = terminated(pod, "main");
    assert_eq!(
        (state.exit_code, state.reason.as_deref()),
        (0, Some("Completed"))
    );
    assert_eq!(state.message.as_deref(), Some("done"));
    let name = pod.metadata.name.clone().unwrap();
    let log = env.agent.container_log(&env.ns, &name, "main").unwrap();
    assert_eq!(log, "hello from the job\n");
}

#[tokio::test]
async fn pod_over_its_deadline_is_killed() {
    let env = env("deadline", &[]).await;
    let mut pod = shell_pod("slow", "sleep 300");
    pod["spec"]["activeDeadlineSeconds"] = json!(2);
    pod["spec"]["terminationGracePeriodSeconds"] = json!(1);
    let created = Instant::now();
    env.create::<Pod>(pod).await;
    let pod = env.terminal_pod("slow").await;
    let took = created.elapsed();
    let status = pod.status.clone().unwrap();
    assert_eq!(status.phase.as_deref(), Some("Failed"));
    assert_eq!(status.reason.as_deref(), Some("DeadlineExceeded"));
    // `sleep` as PID 1 ignores SIGTERM, so the grace period ends in SIGKILL (128 + 9).
    assert_eq!(terminated(&pod, "main").exit_code, 137);
    eprintln!(
        "deadline 2 s + grace 1 s: pod failed {:.1} s after creation",
        took.as_secs_f64()
    );
    assert!(took < Duration::from_secs(60), "killed only after {took:?}");
}

#[tokio::test]
async fn sandboxed_pod_has_no_network_but_normal_pod_does() {
    let env = env("network", &[]).await;
    let port = env.cluster.server_port().unwrap();
    // bash's /dev/tcp connects; exit 0 = the apiserver port was reachable.
    let probe = format!("exec 3<>/dev/tcp/127.0.0.1/{port}");
    for (name, sandboxed) in [("open", false), ("closed", true)] {
        let mut pod = shell_pod(name, "");
        pod["spec"]["containers"][0]["command"] = json!(["/bin/bash", "-c", probe]);
        if sandboxed {
            pod["metadata"]["labels"] = json!({"outlayer.dev/sandbox": "true"});
        }
        env.create::<Pod>(pod).await;
    }
    let open = env.terminal_pod("open").await;
    let closed = env.terminal_pod("closed").await;
    assert_eq!(
        terminated(&open, "main").exit_code,
        0,
        "normal pod could not connect"
    );
    assert_ne!(
        terminated(&closed, "main").exit_code,
        0,
        "sandboxed pod reached the apiserver"
    );
    assert_eq!(
        (phase(&open).as_str(), phase(&closed).as_str()),
        ("Succeeded", "Failed")
    );
}

#[tokio::test]
async fn env_secrets_config_maps_and_volumes_resolve() {
    let env = env("resolve", &[]).await;
    let pv_dir = env.cluster.state_dir().unwrap().join("pv-data");
    std::fs::create_dir_all(&pv_dir).unwrap();
    std::fs::write(pv_dir.join("seed"), "seeded\n").unwrap();

    env.create::<Secret>(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
        "stringData": {"token": "s3cret"}
    }))
    .await;
    env.create::<ConfigMap>(json!({
        "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
        "data": {"mode": "fast"}
    }))
    .await;
    let pvs: Api<PersistentVolume> = Api::all(env.cluster.client());
    let pv: PersistentVolume = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "data-pv"},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "manual",
            "hostPath": {"path": pv_dir.to_str().unwrap()}
        }
    }))
    .unwrap();
    pvs.create(&PostParams::default(), &pv).await.unwrap();
    env.create::<PersistentVolumeClaim>(json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "data"},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "manual",
            "resources": {"requests": {"storage": "1Gi"}}
        }
    }))
    .await;

    // The service-account token is the projected volume the ServiceAccount admission plugin adds
    // to every pod; the node agent fills it through the TokenRequest API as the kubelet does.
    let script = r#"sa=/var/run/secrets/kubernetes.io/serviceaccount
ns=`cat $sa/namespace`
test -s $sa/token && test -s $sa/ca.crt || exit 9
printf '%s' "$(GREETING)|$SECRET_TOKEN|$CM_MODE|$MEM_MI|$CFG_mode|$POD_NAME|$ns" > /dev/termination-log
cat /etc/creds/token > /data/copied
cat /etc/podinfo/labels > /data/labels
if (echo x > /etc/creds/new) 2>/dev/null; then echo writable > /data/secret-mount; else echo read-only > /data/secret-mount; fi
echo scratch > /tmp/s && cat /tmp/s /data/seed > /data/tmp-and-seed"#;
    env.create::<Pod>(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "resolver", "labels": {"app": "resolver"}},
        "spec": {
            "restartPolicy": "Never",
            "containers": [{
                "name": "main",
                "image": HOST_IMAGE,
                "command": ["/bin/sh", "-c"],
                "args": [script],
                "resources": {"limits": {"memory": "64Mi", "cpu": "500m"}},
                "envFrom": [{"prefix": "CFG_", "configMapRef": {"name": "settings"}}],
                "env": [
                    {"name": "SECRET_TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
                    {"name": "CM_MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "MEM_MI", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                    {"name": "GREETING", "value": "hi-$(POD_NAME)"}
                ],
                "volumeMounts": [
                    {"name": "creds", "mountPath": "/etc/creds"},
                    {"name": "data", "mountPath": "/data"},
                    {"name": "scratch", "mountPath": "/tmp"},
                    {"name": "podinfo", "mountPath": "/etc/podinfo"}
                ]
            }],
            "volumes": [
                {"name": "creds", "secret": {"secretName": "creds"}},
                {"name": "data", "persistentVolumeClaim": {"claimName": "data"}},
                {"name": "scratch", "emptyDir": {}},
                {"name": "podinfo", "downwardAPI": {"items": [
                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}
                ]}}
            ]
        }
    }))
    .await;
    let pod = env.terminal_pod("resolver").await;
    let read = |f: &str| std::fs::read_to_string(pv_dir.join(f)).unwrap();
    let state = terminated(&pod, "main");
    assert_eq!(state.exit_code, 0, "{state:?}");
    assert_eq!(
        state.message.as_deref(),
        Some("hi-resolver|s3cret|fast|64|fast|resolver|resolve")
    );
    assert_eq!(read("labels"), "app=\"resolver\"");
    assert_eq!(read("copied"), "s3cret");
    assert_eq!(read("secret-mount"), "read-only\n");
    assert_eq!(read("tmp-and-seed"), "scratch\nseeded\n");
}

#[tokio::test]
async fn deleting_an_owner_garbage_collects_its_pods() {
    let env = env("gc", &[]).await;
    env.create::<Job>(json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "forever"},
        "spec": {"template": {"spec": {
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": HOST_IMAGE, "command": ["/bin/sh", "-c", "echo started; sleep 300"]}]
        }}}
    }))
    .await;
    let pods = env.api::<Pod>();
    let by_job = ListParams::default().labels("job-name=forever");
    wait_for("the job's pod to run", || async {
        let list = pods.list(&by_job).await.ok()?;
        list.items
            .iter()
            .any(|p| phase(p) == "Running")
            .then_some(())
    })
    .await;
    env.api::<Job>()
        .delete("forever", &DeleteParams::background())
        .await
        .unwrap();
    wait_for("the garbage collector to remove the pod", || async {
        pods.list(&by_job)
            .await
            .ok()?
            .items
            .is_empty()
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn restricted_namespace_rejects_privileged_pods_and_runs_compliant_ones() {
    let env = env(
        "locked",
        &[("pod-security.kubernetes.io/enforce", "restricted")],
    )
    .await;
    let cluster = &env.cluster;
    cluster
        .create_namespace(
            "open",
            &[("pod-security.kubernetes.io/enforce", "privileged")],
        )
        .await
        .unwrap();
    let mut pod: Pod = serde_json::from_value(shell_pod("root", "true")).unwrap();
    pod.spec.as_mut().unwrap().containers[0].security_context =
        Some(serde_json::from_value(json!({"privileged": true})).unwrap());

    let locked: Api<Pod> = env.api();
    match locked.create(&PostParams::default(), &pod).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{status:?}");
            assert!(
                status.message.contains("violates PodSecurity"),
                "{}",
                status.message
            );
        }
        other => panic!("privileged pod was not rejected: {other:?}"),
    }
    // The same pod passes where the namespace allows it: the label made the difference.
    let open: Api<Pod> = Api::namespaced(cluster.client(), "open");
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    open.create(&dry_run, &pod).await.unwrap();

    // A pod hardened like the operator's (Pod Security "restricted") is admitted and runs as its
    // numeric uid with a read-only root filesystem and a writable emptyDir.
    let mut hardened = shell_pod(
        "hardened",
        "touch /rootfs-test 2>/dev/null && exit 7; echo ok > /work/f && printf '%s:%s' `id -u` `cat /work/f` > /dev/termination-log",
    );
    hardened["spec"]["automountServiceAccountToken"] = json!(false);
    hardened["spec"]["securityContext"] = json!({
        "runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532,
        "seccompProfile": {"type": "RuntimeDefault"}
    });
    hardened["spec"]["containers"][0]["securityContext"] = json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "capabilities": {"drop": ["ALL"]}
    });
    hardened["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "work", "mountPath": "/work"}]);
    hardened["spec"]["volumes"] = json!([{"name": "work", "emptyDir": {}}]);
    env.create::<Pod>(hardened).await;
    let pod = env.terminal_pod("hardened").await;
    let state = terminated(&pod, "main");
    assert_eq!(
        (state.exit_code, state.message.as_deref()),
        (0, Some("65532:ok")),
        "{state:?}"
    );
}

#[tokio::test]
async fn restart_policy_unknown_images_and_graceful_deletion() {
    let env = env("lifecycle", &[]).await;

    // OnFailure: the first run fails, the restart succeeds.
    let mut flaky = shell_pod(
        "flaky",
        "if [ -f /work/ran ]; then echo second; exit 0; fi; touch /work/ran; echo first >&2; exit 3",
    );
    flaky["spec"]["restartPolicy"] = json!("OnFailure");
    flaky["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "work", "mountPath": "/work"}]);
    flaky["spec"]["volumes"] = json!([{"name": "work", "emptyDir": {}}]);
    env.create::<Pod>(flaky).await;

    // An image the node does not know stays in ErrImagePull, as on a real node.
    let mut unknown = shell_pod("unknown", "true");
    unknown["spec"]["containers"][0]["image"] = json!("registry.example/nope:1");
    env.create::<Pod>(unknown).await;

    // A handler for SIGTERM runs on graceful deletion; FallbackToLogsOnError on failure.
    let mut graceful = shell_pod(
        "graceful",
        "trap 'echo got TERM; exit 0' TERM; echo waiting; while true; do sleep 0.2; done",
    );
    graceful["spec"]["terminationGracePeriodSeconds"] = json!(30);
    env.create::<Pod>(graceful).await;
    // Init containers run first, in order, and share volumes with the main container.
    let mut init = shell_pod("init", "cat /shared/order > /dev/termination-log");
    init["spec"]["initContainers"] = json!([
        {"name": "first", "image": HOST_IMAGE, "command": ["/bin/sh", "-c", "echo -n 1 >> /shared/order"],
         "volumeMounts": [{"name": "shared", "mountPath": "/shared"}]},
        {"name": "second", "image": HOST_IMAGE, "command": ["/bin/sh", "-c", "echo -n 2 >> /shared/order"],
         "volumeMounts": [{"name": "shared", "mountPath": "/shared"}]}
    ]);
    init["spec"]["containers"][0]["volumeMounts"] =
        json!([{"name": "shared", "mountPath": "/shared"}]);
    init["spec"]["volumes"] = json!([{"name": "shared", "emptyDir": {}}]);
    env.create::<Pod>(init).await;
    let mut fallback = shell_pod("fallback", "echo last words; exit 4");
    fallback["spec"]["containers"][0]["terminationMessagePolicy"] = json!("FallbackToLogsOnError");
    env.create::<Pod>(fallback).await;

    let flaky = env.terminal_pod("flaky").await;
    assert_eq!(phase(&flaky), "Succeeded");
    let status = &flaky
        .status
        .as_ref()
        .unwrap()
        .container_statuses
        .as_ref()
        .unwrap()[0];
    assert_eq!(status.restart_count, 1);
    let last = status
        .last_state
        .as_ref()
        .unwrap()
        .terminated
        .as_ref()
        .unwrap();
    assert_eq!(last.exit_code, 3);
    assert_eq!(
        env.agent
            .container_log("lifecycle", "flaky", "main")
            .unwrap(),
        "second\n"
    );

    let init = env.terminal_pod("init").await;
    assert_eq!(terminated(&init, "main").message.as_deref(), Some("12"));
    let init_statuses = init
        .status
        .as_ref()
        .unwrap()
        .init_container_statuses
        .clone()
        .unwrap();
    assert_eq!(init_statuses.len(), 2);
    assert!(init_statuses.iter().all(|s| {
        s.state
            .as_ref()
            .unwrap()
            .terminated
            .as_ref()
            .unwrap()
            .exit_code
            == 0
    }));

    let fallback = env.terminal_pod("fallback").await;
    assert_eq!(
        terminated(&fallback, "main").message.as_deref(),
        Some("last words")
    );

    let waiting = wait_for("unknown image to be reported", || async {
        let pod = env.pod("unknown").await?;
        let cs = pod.status?.container_statuses?;
        cs[0].state.as_ref()?.waiting.as_ref()?.reason.clone()
    })
    .await;
    assert_eq!(waiting, "ErrImagePull");

    wait_for("graceful pod to run", || async {
        (phase(&env.pod("graceful").await?) == "Running").then_some(())
    })
    .await;
    let deleted = Instant::now();
    env.api::<Pod>()
        .delete("graceful", &DeleteParams::default())
        .await
        .unwrap();
    wait_for("graceful pod to be removed", || async {
        env.pod("graceful").await.is_none().then_some(())
    })
    .await;
    // SIGTERM reached the handler: the pod went long before its 30 s grace period.
    let took = deleted.elapsed();
    assert!(took < Duration::from_secs(25), "deletion took {took:?}");
    let log = env
        .agent
        .container_log("lifecycle", "graceful", "main")
        .unwrap();
    assert_eq!(log, "waiting\ngot TERM\n");
}
