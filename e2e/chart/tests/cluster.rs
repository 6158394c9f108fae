//! The chart against the real local control plane (e2e/cluster): the rendered manifests pass the API
//! server's own validation (server-side dry-run, CRD schemas, Pod Security "restricted" admission), and
//! the install-time lookup of the API server's addresses works.
//!
//! Fails (never skips) when helm or the control-plane binaries are missing; `scripts/install-deps`
//! builds both.

use std::path::{Path, PathBuf};
use std::process::Command;

use e2e_chart::manifests::{self, id, kind, name, single};
use e2e_chart::{Helm, chart_dir};
use e2e_cluster::Cluster;
use outlayer_testkit::cluster::repositories_dir;
use outlayer_testkit::{artifact, example_repository, target_dir, wait_until, which};
use serde_json::{Value, json};

const RELEASE: &str = "outlayer";
const NS: &str = "outlayer-system";
const WORKLOAD_NS: &str = "outlayer-jobs";
const CRDS: [&str; 3] = [
    "crd/executionrequests.outlayer.dev",
    "crd/compilejobs.outlayer.dev",
    "crd/pricings.outlayer.dev",
];

struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
}

impl Kubectl {
    fn for_cluster(cluster: &Cluster) -> Self {
        Kubectl {
            bin: cluster
                .kubectl()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("kubectl")),
            kubeconfig: cluster.kubeconfig_path().to_path_buf(),
        }
    }

    fn run(&self, args: &[&str], stdin: Option<&str>) -> e2e_chart::Result<String> {
        let mut command = Command::new(&self.bin);
        command.arg("--kubeconfig").arg(&self.kubeconfig).args(args);
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        e2e_chart::helm::run(command, &self.bin, &args, stdin)
    }
}

/// The CRDs applied for real (so custom resources can be dry-run) and two restricted namespaces.
async fn prepared_cluster() -> (Helm, Cluster, Kubectl) {
    // helm first: a missing helm fails before a control plane is started for nothing.
    let helm = Helm::locate().unwrap_or_else(|e| panic!("{e}"));
    let cluster = Cluster::start().await.unwrap_or_else(|e| panic!("{e}"));
    let kubectl = Kubectl::for_cluster(&cluster);
    let crds = chart_dir().join("crds");
    kubectl
        .run(
            &["apply", "--server-side", "-f", crds.to_str().unwrap()],
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let mut wait = vec!["wait", "--for=condition=Established", "--timeout=60s"];
    wait.extend(CRDS);
    kubectl.run(&wait, None).unwrap_or_else(|e| panic!("{e}"));
    for ns in [NS, WORKLOAD_NS] {
        cluster
            .create_namespace(
                ns,
                &[
                    ("pod-security.kubernetes.io/enforce", "restricted"),
                    ("pod-security.kubernetes.io/enforce-version", "latest"),
                ],
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    (helm, cluster, kubectl)
}

#[tokio::test]
async fn rendered_manifests_pass_server_side_dry_run() {
    let (helm, _cluster, kubectl) = prepared_cluster().await;
    let variants: &[(&str, &[&str])] = &[
        ("defaults", &[]),
        (
            "single node (RWO), runtimeClassName, no NetworkPolicies",
            &[
                "--set",
                "cache.accessMode=ReadWriteOnce",
                "--set",
                "cache.storageClassName=local-path",
                "--set",
                "runtimeClassName=gvisor",
                "--set",
                "networkPolicy.enabled=false",
            ],
        ),
        (
            "chain, pricing, separate workload namespace, one replica",
            &[
                "--set",
                "chain.contractId=outlayer.testnet",
                "--set",
                "chain.rpcUrls={https://rpc.testnet.near.org}",
                "--set",
                "chain.operatorKey.secretName=outlayer-operator-key",
                "--set",
                "pricing.enabled=true",
                "--set",
                "workload.namespace=outlayer-jobs",
                "--set",
                "operator.leaderElection.enabled=false",
                "--set",
                "operator.replicas=1",
            ],
        ),
    ];
    for (what, extra) in variants {
        let rendered = helm
            .template(RELEASE, NS, extra)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let objects = manifests::parse(&rendered).unwrap();
        let out = kubectl
            .run(
                &["apply", "--server-side", "--dry-run=server", "-f", "-"],
                Some(&rendered),
            )
            .unwrap_or_else(|e| panic!("{what}: the API server refused the chart: {e}"));
        // One line per object, each accepted by the server.
        let accepted = out
            .lines()
            .filter(|l| l.contains("serverside-applied (server dry run)"))
            .count();
        assert_eq!(
            accepted,
            objects.len(),
            "{what}: {out}\nrendered: {:?}",
            objects.iter().map(id).collect::<Vec<_>>()
        );
        if extra.contains(&"pricing.enabled=true") {
            assert!(
                out.contains("pricing.outlayer.dev/default"),
                "{what}: {out}"
            );
        }
    }

    // The CRD schema is enforced on what the chart renders: a fee the contract would refuse is refused here.
    let bad = helm
        .template(
            RELEASE,
            NS,
            &[
                "--set",
                "pricing.enabled=true",
                "--skip-schema-validation",
                "--set-string",
                "pricing.baseFee=01",
            ],
        )
        .unwrap();
    let pricing = manifests::parse(&bad)
        .unwrap()
        .into_iter()
        .find(|o| kind(o) == "Pricing")
        .unwrap();
    let err = kubectl
        .run(
            &["apply", "--server-side", "--dry-run=server", "-f", "-"],
            Some(&pricing.to_string()),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("spec.baseFee"), "{err}");
}

/// The operator's pod, as the Deployment would create it, is admitted by PodSecurity "restricted"; the
/// same pod without its security context is not (so the admission is really judging).
#[tokio::test]
async fn operator_pod_passes_pod_security_restricted() {
    let (helm, _cluster, kubectl) = prepared_cluster().await;
    let objects = manifests::parse(&helm.template(RELEASE, NS, &[]).unwrap()).unwrap();
    let deployment = single(&objects, "Deployment");
    let template = &deployment["spec"]["template"];
    let pod = |spec: Value| {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "operator-admission-probe", "namespace": NS, "labels": template["metadata"]["labels"]},
            "spec": spec,
        })
        .to_string()
    };
    let dry_run = ["apply", "--server-side", "--dry-run=server", "-f", "-"];
    // Pod admission looks the ServiceAccount up: create the chart's for real.
    let service_account = single(&objects, "ServiceAccount").to_string();
    kubectl
        .run(
            &["apply", "--server-side", "-f", "-"],
            Some(&service_account),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    kubectl
        .run(&dry_run, Some(&pod(template["spec"].clone())))
        .unwrap_or_else(|e| {
            panic!("the operator's pod is not admitted in a restricted namespace: {e}")
        });

    let mut weakened = template["spec"].clone();
    weakened["containers"][0]
        .as_object_mut()
        .unwrap()
        .remove("securityContext");
    let err = kubectl
        .run(&dry_run, Some(&pod(weakened)))
        .expect_err("a pod without a security context must be refused")
        .to_string();
    assert!(err.contains("violates PodSecurity"), "{err}");
}

/// With a cluster to ask, the operator's NetworkPolicy allows the API server's real addresses instead
/// of the API ports to anywhere.
#[tokio::test]
async fn install_time_lookup_narrows_the_operator_egress_to_the_api_server() {
    let (helm, cluster, kubectl) = prepared_cluster().await;
    let policy = |objects: &[Value]| -> Value {
        objects
            .iter()
            .find(|o| kind(o) == "NetworkPolicy" && name(o).ends_with("-operator"))
            .unwrap()
            .clone()
    };
    let api_rule = |policy: &Value| -> Value {
        policy["spec"]["egress"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| {
                r["ports"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|p| p["port"] == 6443)
            })
            .unwrap()
            .clone()
    };
    let offline = manifests::parse(&helm.template(RELEASE, NS, &[]).unwrap()).unwrap();
    assert!(api_rule(&policy(&offline))["to"].is_null());

    // A real cluster's API server publishes its addresses in EndpointSlice default/kubernetes. The local
    // one advertises 127.0.0.1, which Endpoints may not hold, so it publishes none: publish one here
    // (a documentation address; nothing connects to it).
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default", "labels": {"kubernetes.io/service-name": "kubernetes"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["192.0.2.10"]}],
        "ports": [{"name": "https", "port": 6443, "protocol": "TCP"}],
    });
    kubectl
        .run(
            &["apply", "--server-side", "-f", "-"],
            Some(&slice.to_string()),
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let kubeconfig = cluster.kubeconfig_path().display().to_string();
    let online = helm
        .template(
            RELEASE,
            NS,
            &["--dry-run=server", "--kubeconfig", &kubeconfig],
        )
        .unwrap_or_else(|e| panic!("{e}"));
    let rule = api_rule(&policy(&manifests::parse(&online).unwrap()));
    let cidrs: Vec<&str> = rule["to"]
        .as_array()
        .unwrap_or_else(|| panic!("no addresses looked up: {rule}"))
        .iter()
        .filter_map(|peer| peer["ipBlock"]["cidr"].as_str())
        .collect();
    assert_eq!(cidrs, ["192.0.2.10/32"], "{rule}");
}

/// One plain HTTP/1.1 GET on 127.0.0.1: (status, body).
async fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

/// The echo example as a standalone crate, committed on branch `main` of a new repository.
fn echo_repository(root: &Path) -> PathBuf {
    let repo = root.join("echo");
    example_repository(&repo, "echo");
    repo
}

const OPERATOR_IMAGE: &str = "outlayer/operator:e2e";
const EXECUTOR_IMAGE: &str = "outlayer/executor:e2e";
const COMPILER_IMAGE: &str = "outlayer/compiler:e2e";

/// `helm install` on the local control plane with the operator as a pod (the node agent maps its image
/// to the built binary, and gives it the in-cluster API address): the chart's CRDs, ServiceAccount
/// token, RBAC, env and cache volume are what the operator really runs with. It becomes ready (which
/// needs the leader Lease and listing its resources), runs chain-less executions end to end (a cached
/// module, and a repository compiled by the fetch and build Jobs it creates), takes new
/// fees into the Pricing resource on `helm upgrade`, and `helm uninstall` leaves nothing orphaned.
#[tokio::test]
async fn helm_install_runs_the_operator_as_a_pod() {
    use sha2::Digest as _;
    let helm = Helm::locate().unwrap_or_else(|e| panic!("{e}"));
    let operator_bin = artifact(
        "debug/outlayer-operator",
        "cargo build -p outlayer-operator",
    );
    let executor_bin = artifact(
        "debug/outlayer-executor",
        "cargo build -p outlayer-executor",
    );
    let compiler_bin = artifact(
        "debug/outlayer-compiler",
        "cargo build -p outlayer-compiler",
    );
    let repos = repositories_dir();
    let repo = echo_repository(repos.path());
    let echo = std::fs::read(artifact(
        "wasm32-wasip1/release/example-echo.wasm",
        "scripts/build-wasm",
    ))
    .unwrap();
    let cluster = Cluster::start().await.unwrap_or_else(|e| panic!("{e}"));
    let kubectl = Kubectl::for_cluster(&cluster);
    let api_port = cluster.server_port().unwrap();
    let mut agent_config = cluster
        .node_agent_config(e2e_cluster::DEFAULT_NODE)
        .unwrap()
        .with_image(OPERATOR_IMAGE, &[operator_bin.to_str().unwrap()])
        .with_image(EXECUTOR_IMAGE, &[executor_bin.to_str().unwrap()])
        .with_image(COMPILER_IMAGE, &[compiler_bin.to_str().unwrap()]);
    agent_config.kubernetes_service = Some(e2e_cluster::node_agent::KubernetesService {
        host: "127.0.0.1".into(),
        port: api_port,
    });
    let agent = cluster
        .start_node_agent(agent_config)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    cluster
        .create_namespace(NS, &[("pod-security.kubernetes.io/enforce", "restricted")])
        .await
        .unwrap();

    // The cache: a hostPath volume (outside /tmp, which sandboxes do not see) for the chart's claim.
    let cache = tempfile::Builder::new()
        .prefix("chart-cache-")
        .tempdir_in(target_dir())
        .unwrap();
    for dir in ["wasm", "results"] {
        std::fs::create_dir_all(cache.path().join(dir)).unwrap();
    }
    // The operator and executor run as uid 65532.
    for dir in [cache.path().to_path_buf(), cache.path().join("results")] {
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
    }
    let sha = hex::encode(sha2::Sha256::digest(&echo));
    std::fs::write(cache.path().join(format!("wasm/{sha}.wasm")), &echo).unwrap();
    let pv = json!({
        "apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "chart-cache"},
        "spec": {
            "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteMany"],
            "storageClassName": "e2e-hostpath", "hostPath": {"path": cache.path().to_str().unwrap()},
        },
    });
    kubectl
        .run(
            &["apply", "--server-side", "-f", "-"],
            Some(&pv.to_string()),
        )
        .unwrap_or_else(|e| panic!("{e}"));

    // The compile Jobs' settings: the test repositories as the only allowed prefix, and the host's
    // toolchain (a real compiler image has it baked in; the node agent starts containers with an
    // empty environment). A values file: PATH may hold characters `--set` would split on.
    let rustup_home = std::env::var("RUSTUP_HOME")
        .unwrap_or_else(|_| format!("{}/.rustup", std::env::var("HOME").unwrap()));
    let values = json!({
        "compiler": {
            "image": {"repository": "outlayer/compiler", "tag": "e2e"},
            "allowedRepoPrefixes": [format!("file://{}/", repos.path().display())],
            "env": {
                "PATH": std::env::var("PATH").unwrap(),
                "OUTLAYER_GIT": which("git"),
                "OUTLAYER_CARGO": which("cargo"),
                "RUSTUP_HOME": rustup_home,
            },
        },
    });
    let values_file = repos.path().join("values.json");
    std::fs::write(&values_file, values.to_string()).unwrap();
    let http_port = e2e_cluster::ports::free_port().unwrap();
    let kubeconfig = cluster.kubeconfig_path().display().to_string();
    let started = std::time::Instant::now();
    let install = helm
        .run(
            &[
                "install",
                RELEASE,
                chart_dir().to_str().unwrap(),
                "--namespace",
                NS,
                "--kubeconfig",
                &kubeconfig,
                // Pods share the host's network here: one replica, on a free port.
                "--set",
                "operator.replicas=1",
                "--set",
                &format!("operator.httpPort={http_port}"),
                "--set",
                "operator.image.repository=outlayer/operator",
                "--set",
                "operator.image.tag=e2e",
                "--set",
                "executor.image.repository=outlayer/executor",
                "--set",
                "executor.image.tag=e2e",
                "--set",
                "cache.storageClassName=e2e-hostpath",
                "--set",
                "cache.size=1Gi",
                "--set",
                "pricing.enabled=true",
                "--values",
                values_file.to_str().unwrap(),
            ]
            .map(String::from),
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(install.contains("STATUS: deployed"), "{install}");

    let pod_name = wait_until(
        "the operator pod to run",
        std::time::Duration::from_secs(120),
        || async {
            let out = kubectl
                .run(
                    &[
                        "-n",
                        NS,
                        "get",
                        "pods",
                        "-l",
                        "app.kubernetes.io/component=operator",
                        "-o",
                        "jsonpath={range .items[*]}{.metadata.name} {.status.phase}{\"\\n\"}{end}",
                    ],
                    None,
                )
                .map_err(|e| e.to_string())?;
            out.lines()
                .find_map(|l| l.strip_suffix(" Running").map(str::to_string))
                .ok_or(out)
        },
    )
    .await;
    let log = || {
        agent
            .container_log(NS, &pod_name, "operator")
            .unwrap_or_else(|e| e.to_string())
    };
    // /readyz turns ok once this replica holds the Lease and can list its resources with the
    // chart's ServiceAccount and RBAC.
    let ready = wait_until(
        "the operator's /readyz",
        std::time::Duration::from_secs(60),
        || async {
            match http_get(http_port, "/readyz").await {
                Ok((200, body)) => Ok(body),
                Ok((status, body)) => Err(format!("{status} {body}")),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await;
    eprintln!(
        "helm install → operator pod ready in {:.1} s ({})",
        started.elapsed().as_secs_f64(),
        ready.trim()
    );
    let holder = kubectl
        .run(
            &[
                "-n",
                NS,
                "get",
                "lease",
                "outlayer-operator",
                "-o",
                "jsonpath={.spec.holderIdentity}",
            ],
            None,
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", log()));
    assert_eq!(holder, pod_name, "{}", log());
    let (_, metrics) = http_get(http_port, "/metrics").await.unwrap();
    assert!(metrics.contains("outlayer_leader 1"), "{metrics}");

    // Chain-less executions through the chart-installed operator: a module already in the cache, then
    // a repository compiled by fetch and build Jobs the operator creates.
    let run = |name: &'static str, code: Value, input: &'static str| {
        let kubectl = &kubectl;
        async move {
            let request = json!({
                "apiVersion": "outlayer.dev/v1alpha1", "kind": "ExecutionRequest",
                "metadata": {"name": name, "namespace": NS},
                "spec": {
                    "code": code,
                    "input": input,
                    "limits": {"maxInstructions": 100000000, "maxMemoryMb": 64, "maxExecutionSeconds": 10},
                },
            });
            kubectl
                .run(
                    &["apply", "--server-side", "-f", "-"],
                    Some(&request.to_string()),
                )
                .unwrap_or_else(|e| panic!("{e}"));
            wait_until(
                &format!("ExecutionRequest {name} to finish"),
                std::time::Duration::from_secs(240),
                || async {
                    let out = kubectl
                        .run(&["-n", NS, "get", "exr", name, "-o", "json"], None)
                        .map_err(|e| e.to_string())?;
                    let object: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
                    let status = object["status"].clone();
                    match status["phase"].as_str() {
                        Some("Succeeded" | "Failed" | "Expired") => Ok(status),
                        _ => Err(status.to_string()),
                    }
                },
            )
            .await
        }
    };
    let status = run(
        "chart-echo",
        json!({"wasmSha256": sha}),
        "hello from the chart",
    )
    .await;
    assert_eq!(status["phase"], "Succeeded", "{status}\n{}", log());
    assert_eq!(status["output"], "hello from the chart", "{status}");

    // Only the operator's ServiceAccount may write spec.onChain (the chart's ValidatingAdmissionPolicy):
    // an administrator's forged on-chain request is refused at create, with a message that says why.
    let forged = json!({
        "apiVersion": "outlayer.dev/v1alpha1", "kind": "ExecutionRequest",
        "metadata": {"name": "req-7", "namespace": NS},
        "spec": {
            "code": {"wasmSha256": sha},
            "input": "forged",
            "limits": {"maxInstructions": 100000000, "maxMemoryMb": 64, "maxExecutionSeconds": 10},
            "onChain": {"requestId": 7, "dataId": "3xQ", "sender": "eve.near", "deposit": "1",
                        "blockHeight": 1, "yieldDeadlineHeight": 201},
        },
    })
    .to_string();
    // A new policy takes effect within a few seconds; a server-side dry run sees admission without
    // creating anything.
    wait_until(
        "the admission policy to refuse a forged spec.onChain",
        std::time::Duration::from_secs(30),
        || async {
            match kubectl.run(&["create", "--dry-run=server", "-f", "-"], Some(&forged)) {
                Err(refused) => Ok(refused.to_string()),
                Ok(created) => Err(created),
            }
        },
    )
    .await;
    let refused = kubectl
        .run(&["create", "-f", "-"], Some(&forged))
        .expect_err("a forged spec.onChain must be refused");
    assert!(
        refused
            .to_string()
            .contains("spec.onChain is written only by the OutLayer operator"),
        "{refused}"
    );

    let compiled = std::time::Instant::now();
    let code = json!({"repo": format!("file://{}", repo.display()), "commit": "main", "buildTarget": "wasm32-wasip1"});
    let status = run("chart-compiled", code, "compiled in the cluster").await;
    assert_eq!(status["phase"], "Succeeded", "{status}\n{}", log());
    assert_eq!(status["output"], "compiled in the cluster", "{status}");
    eprintln!(
        "repository compiled and run through the chart-installed operator in {:.1} s",
        compiled.elapsed().as_secs_f64()
    );
    let jobs = kubectl
        .run(&["-n", NS, "get", "jobs", "-o", "name"], None)
        .unwrap();
    assert_eq!(
        jobs.lines().count(),
        2,
        "one fetch and one build Job: {jobs}"
    );

    // The GitOps path: new fees in values reach the Pricing resource on upgrade (the operator's
    // pricing sync takes them on chain; that part needs a chain and is tested with the localnet).
    let fee = || {
        kubectl
            .run(
                &["get", "price", "default", "-o", "jsonpath={.spec.baseFee}"],
                None,
            )
            .unwrap_or_else(|e| panic!("{e}"))
    };
    assert_eq!(fee(), "1000000000000000000000");
    helm.run(
        &[
            "upgrade",
            RELEASE,
            chart_dir().to_str().unwrap(),
            "--namespace",
            NS,
            "--kubeconfig",
            &kubeconfig,
            "--reuse-values",
            "--set-string",
            "pricing.baseFee=2000000000000000000000",
        ]
        .map(String::from),
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(fee(), "2000000000000000000000");

    let uninstalling = std::time::Instant::now();
    helm.run(
        &[
            "uninstall",
            RELEASE,
            "--namespace",
            NS,
            "--kubeconfig",
            &kubeconfig,
            "--wait",
        ]
        .map(String::from),
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // What is left is owned, not orphaned: the operator's pod is gone, finished executions left no
    // executor pod, input ConfigMap or Secret, and the compile Jobs (kept for their TTL) belong to their
    // CompileJob, which stays as the cache's index like the cache claim itself.
    let leftovers = wait_until(
        "the operator's pod to be gone after helm uninstall",
        std::time::Duration::from_secs(60),
        || async {
            let out = kubectl
                .run(
                    &[
                        "-n",
                        NS,
                        "get",
                        "pods,jobs,configmaps,secrets",
                        "-o",
                        "json",
                    ],
                    None,
                )
                .map_err(|e| e.to_string())?;
            let items: Value = serde_json::from_str(&out).map_err(|e| e.to_string())?;
            let items = items["items"].as_array().cloned().unwrap_or_default();
            let operator_left = items
                .iter()
                .any(|o| o["metadata"]["labels"]["app.kubernetes.io/component"] == "operator");
            if operator_left { Err(out) } else { Ok(items) }
        },
    )
    .await;
    let uids: Vec<Value> = leftovers
        .iter()
        .map(|o| o["metadata"]["uid"].clone())
        .collect();
    let compile_jobs = kubectl
        .run(&["-n", NS, "get", "cjob", "-o", "json"], None)
        .unwrap();
    let compile_job_uids: Vec<Value> =
        serde_json::from_str::<Value>(&compile_jobs).unwrap()["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["metadata"]["uid"].clone())
            .collect();
    for object in &leftovers {
        let what = format!("{} {}", object["kind"], name(object));
        match kind(object) {
            "Job" | "Pod" => {
                let owner = object["metadata"]["ownerReferences"][0]["uid"].clone();
                assert!(
                    uids.contains(&owner) || compile_job_uids.contains(&owner),
                    "{what} is orphaned: {object}"
                );
                if kind(object) == "Pod" {
                    assert_eq!(object["status"]["phase"], "Succeeded", "{what}");
                }
            }
            // Published by kube-controller-manager into every namespace, and the sealing public keys,
            // kept on purpose like the key Secret below (losing the keys loses every sealed secret).
            "ConfigMap" => assert!(
                [
                    "kube-root-ca.crt",
                    outlayer_operator::sealing::keys::DEFAULT_PUBKEY_CONFIG_MAP
                ]
                .contains(&name(object)),
                "{what} left behind"
            ),
            // The sealing keys and the seed key: kept like the public keys above (the seed key is the
            // one the contract's pending requests recorded).
            "Secret" => assert!(
                [
                    outlayer_operator::sealing::keys::DEFAULT_KEY_SECRET,
                    outlayer_operator::seed::SEED_KEY_SECRET
                ]
                .contains(&name(object)),
                "{what} left behind"
            ),
            _ => panic!("{what} left behind"),
        }
    }
    eprintln!(
        "helm uninstall, operator pod gone: {:.1} s",
        uninstalling.elapsed().as_secs_f64()
    );
    // Dropping the cache index takes its Jobs and their pods with it (garbage collection; the
    // collector learns of a new CRD at its next discovery resync, every 30 s, hence the bound).
    kubectl
        .run(&["-n", NS, "delete", "cjob", "--all", "--wait=false"], None)
        .unwrap_or_else(|e| panic!("{e}"));
    wait_until(
        "every pod and Job to be gone once the CompileJobs are deleted",
        std::time::Duration::from_secs(120),
        || async {
            let out = kubectl
                .run(&["-n", NS, "get", "pods,jobs", "-o", "name"], None)
                .map_err(|e| e.to_string())?;
            if out.trim().is_empty() {
                Ok(())
            } else {
                Err(out)
            }
        },
    )
    .await;
    drop(agent);
}
