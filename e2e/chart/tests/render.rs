//! The chart as helm renders it, without a cluster: lint, the objects and their security settings,
//! RBAC against the operator's code, env against the operator's flags, NetworkPolicy selectors against
//! the operator's pod builders, the dashboard against its metrics, the values schema, CRD drift.
//!
//! Every test needs the helm that `scripts/install-deps` builds and fails (never skips) without it.

use std::collections::{BTreeMap, BTreeSet};

use e2e_chart::manifests::{self, env_value, id, kind, name, namespace, of_kind, single, strings};
use e2e_chart::{Helm, chart_dir, repo_root, source};
use serde_json::{Value, json};

const RELEASE: &str = "outlayer";
const NS: &str = "outlayer-system";

fn helm() -> Helm {
    Helm::locate().unwrap_or_else(|e| panic!("{e}"))
}

fn render(extra: &[&str]) -> Vec<Value> {
    let text = helm()
        .template(RELEASE, NS, extra)
        .unwrap_or_else(|e| panic!("{e}"));
    manifests::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Value sets the tests render besides the defaults.
const VARIANTS: &[(&str, &[&str])] = &[
    ("defaults", &[]),
    (
        "single node (RWO), gVisor, ServiceMonitor, warm pool",
        &[
            "--set",
            "cache.accessMode=ReadWriteOnce",
            "--set",
            "cache.storageClassName=local-path",
            "--set",
            "cache.size=5Gi",
            "--set",
            "runtimeClassName=gvisor",
            "--set",
            "metrics.serviceMonitor.enabled=true",
            "--set",
            "executor.warmPool.enabled=true",
        ],
    ),
    (
        "chain, pricing, separate workload namespace",
        &[
            "--set",
            "chain.contractId=outlayer.testnet",
            "--set",
            "chain.rpcUrls={https://rpc.testnet.near.org,https://rpc2.example.org}",
            "--set",
            "chain.operatorKey.secretName=outlayer-operator-key",
            "--set",
            "pricing.enabled=true",
            "--set",
            "workload.namespace=outlayer-jobs",
            "--set",
            "workload.createNamespace=true",
        ],
    ),
];

fn deployment(objects: &[Value]) -> &Value {
    single(objects, "Deployment")
}

fn operator_container(objects: &[Value]) -> &Value {
    let containers = &deployment(objects)["spec"]["template"]["spec"]["containers"];
    assert_eq!(containers.as_array().map(Vec::len), Some(1), "{containers}");
    &containers[0]
}

#[test]
fn lint_passes_for_every_variant() {
    let helm = helm();
    for (what, extra) in VARIANTS {
        let out = helm
            .lint(extra)
            .unwrap_or_else(|e| panic!("helm lint ({what}): {e}"));
        assert!(out.contains("0 chart(s) failed"), "{what}: {out}");
    }
}

/// The policy names the operator's ServiceAccount of this release and binds to the workload namespace.
#[test]
fn admission_lets_only_the_operator_write_on_chain_requests() {
    let objects = render(&["--set", "workload.namespace=jobs"]);
    let policy = objects
        .iter()
        .find(|o| kind(o) == "ValidatingAdmissionPolicy")
        .expect("a ValidatingAdmissionPolicy");
    let expression = policy["spec"]["validations"][0]["expression"]
        .as_str()
        .unwrap();
    assert!(
        expression.contains("'system:serviceaccount:outlayer-system:outlayer-outlayer-operator'"),
        "{expression}"
    );
    let binding = objects
        .iter()
        .find(|o| kind(o) == "ValidatingAdmissionPolicyBinding")
        .expect("a binding");
    assert_eq!(binding["spec"]["policyName"], policy["metadata"]["name"]);
    assert_eq!(
        binding["spec"]["matchResources"]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"],
        "jobs"
    );
    let off = render(&["--set", "admission.enabled=false"]);
    assert!(
        !off.iter()
            .any(|o| kind(o).starts_with("ValidatingAdmission"))
    );
}

#[test]
fn default_render_has_the_expected_objects() {
    let objects = render(&[]);
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for object in &objects {
        *kinds.entry(kind(object)).or_default() += 1;
    }
    let expected: BTreeMap<&str, usize> = [
        ("ClusterRole", 1),
        ("ClusterRoleBinding", 1),
        ("ConfigMap", 1),
        ("Deployment", 1),
        ("NetworkPolicy", 3),
        ("PersistentVolumeClaim", 1),
        ("PodDisruptionBudget", 1),
        ("Role", 2),
        ("RoleBinding", 2),
        ("Service", 1),
        ("ServiceAccount", 1),
        ("ValidatingAdmissionPolicy", 1),
        ("ValidatingAdmissionPolicyBinding", 1),
    ]
    .into();
    assert_eq!(
        kinds,
        expected,
        "{:?}",
        objects.iter().map(id).collect::<Vec<_>>()
    );
    for object in &objects {
        let labels = &object["metadata"]["labels"];
        assert_eq!(
            labels["app.kubernetes.io/instance"],
            RELEASE,
            "{} lacks the release label",
            id(object)
        );
        let cluster_scoped = matches!(
            kind(object),
            "ClusterRole"
                | "ClusterRoleBinding"
                | "ValidatingAdmissionPolicy"
                | "ValidatingAdmissionPolicyBinding"
        );
        assert_eq!(
            namespace(object).is_none(),
            cluster_scoped,
            "{}: namespace {:?}",
            id(object),
            namespace(object)
        );
    }
}

#[test]
fn deployment_runs_two_replicas_with_leader_election_and_probes() {
    let objects = render(&[]);
    let deployment = deployment(&objects);
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "outlayer-outlayer-operator");
    let container = operator_container(&objects);
    assert_eq!(
        env_value(container, "OUTLAYER_LEADER_ELECTION").as_deref(),
        Some("true")
    );
    // Each replica names itself after its pod, and finds its Lease in its own namespace.
    for (var, field) in [
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
    ] {
        let entry = container["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == var)
            .unwrap_or_else(|| panic!("no {var}"));
        assert_eq!(entry["valueFrom"]["fieldRef"]["fieldPath"], field);
    }
    // The probes hit the port the operator listens on.
    let port = container["ports"][0]["containerPort"].as_u64().unwrap();
    assert_eq!(container["ports"][0]["name"], "http");
    assert_eq!(
        env_value(container, "OUTLAYER_METRICS_ADDR"),
        Some(format!("0.0.0.0:{port}"))
    );
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(container[probe]["httpGet"]["port"], "http", "{probe}");
    }
    assert_eq!(strings(&container["args"]), ["run"]);
    assert_eq!(
        env_value(container, "OUTLAYER_NAMESPACE").as_deref(),
        Some(NS)
    );
    // The shutdown drain fits in the grace period, so the Lease is handed back.
    let grace = pod["terminationGracePeriodSeconds"].as_u64().unwrap();
    let drain: u64 = env_value(container, "OUTLAYER_SHUTDOWN_TIMEOUT_SECONDS")
        .unwrap()
        .parse()
        .unwrap();
    assert!(drain < grace, "drain {drain} s, grace {grace} s");
    let pdb = single(&objects, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
}

/// Pod Security "restricted", field by field, for every pod spec of every variant (the dry-run test in
/// cluster.rs has the API server's own PodSecurity admission judge it too).
#[test]
fn every_pod_spec_is_restricted() {
    for (what, extra) in VARIANTS {
        let objects = render(extra);
        let specs = manifests::pod_specs(&objects);
        assert!(!specs.is_empty(), "{what}: no pod specs");
        for (owner, spec) in specs {
            let at = format!("{what}: {owner}");
            let pod_sc = &spec["securityContext"];
            assert_eq!(pod_sc["runAsNonRoot"], true, "{at}");
            assert!(
                pod_sc["runAsUser"].as_u64().is_some_and(|uid| uid > 0),
                "{at}: numeric non-root runAsUser"
            );
            assert_eq!(pod_sc["seccompProfile"]["type"], "RuntimeDefault", "{at}");
            assert_eq!(spec["enableServiceLinks"], false, "{at}");
            assert!(
                spec["hostNetwork"].is_null() && spec["hostPID"].is_null(),
                "{at}"
            );
            let containers = spec["containers"].as_array().unwrap();
            let init = spec["initContainers"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            for container in containers.iter().chain(init.iter()) {
                let at = format!("{at} container {}", container["name"]);
                let sc = &container["securityContext"];
                assert_eq!(sc["allowPrivilegeEscalation"], false, "{at}");
                assert_eq!(sc["readOnlyRootFilesystem"], true, "{at}");
                assert_eq!(sc["runAsNonRoot"], true, "{at}");
                assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"], "{at}");
                assert!(sc["capabilities"]["add"].is_null(), "{at}");
                assert!(
                    sc["privileged"].is_null() || sc["privileged"] == false,
                    "{at}"
                );
                let resources = &container["resources"];
                for field in ["memory", "ephemeral-storage"] {
                    assert!(
                        resources["limits"][field].is_string(),
                        "{at}: no {field} limit"
                    );
                }
                assert!(
                    resources["requests"]["cpu"].is_string(),
                    "{at}: no cpu request"
                );
            }
        }
    }
}

/// (API group, resource, cluster-scoped) of each kind the operator's code opens an `Api` for.
fn resource_of(kind: &str) -> Option<(&'static str, &'static str, bool)> {
    Some(match kind {
        "Pod" => ("", "pods", false),
        "ConfigMap" => ("", "configmaps", false),
        "Secret" => ("", "secrets", false),
        "Job" => ("batch", "jobs", false),
        "Lease" => ("coordination.k8s.io", "leases", false),
        "ExecutionRequest" => ("outlayer.dev", "executionrequests", false),
        "CompileJob" => ("outlayer.dev", "compilejobs", false),
        "Pricing" => ("outlayer.dev", "pricings", true),
        _ => return None,
    })
}

/// group/resource → verbs, merged over a Role's or ClusterRole's rules.
fn granted(role: &Value) -> BTreeMap<String, BTreeSet<String>> {
    let mut grants: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for rule in role["rules"].as_array().unwrap() {
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                grants
                    .entry(format!("{group}/{resource}"))
                    .or_default()
                    .extend(strings(&rule["verbs"]).into_iter().map(str::to_string));
            }
        }
    }
    grants
}

fn role<'a>(objects: &'a [Value], role_name: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| kind(o) == "Role" && name(o) == role_name)
        .unwrap_or_else(|| panic!("no Role {role_name}"))
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn rbac_is_least_privilege_and_covers_what_the_operator_uses() {
    for (what, extra) in VARIANTS {
        let objects = render(extra);
        for object in objects
            .iter()
            .filter(|o| matches!(kind(o), "Role" | "ClusterRole"))
        {
            for rule in object["rules"].as_array().unwrap() {
                for field in ["apiGroups", "resources", "verbs", "resourceNames"] {
                    assert!(
                        !strings(&rule[field]).contains(&"*"),
                        "{what}: wildcard in {field} of {}: {rule}",
                        id(object)
                    );
                }
                assert!(rule["nonResourceURLs"].is_null(), "{what}: {rule}");
            }
        }
    }

    let objects = render(&[]);
    let workload = granted(role(&objects, "outlayer-outlayer-operator"));
    let leader = granted(role(&objects, "outlayer-outlayer-operator-leader-election"));
    let cluster = granted(single(&objects, "ClusterRole"));

    // Every kind the code opens an Api for is granted, in the right scope.
    let kinds = source::api_kinds(&source::operator_src()).unwrap();
    assert!(
        kinds.iter().any(|(k, _)| k == "Pod"),
        "source scan found {kinds:?}"
    );
    for (kind, files) in &kinds {
        let (group, resource, cluster_scoped) = resource_of(kind).unwrap_or_else(|| {
            panic!(
                "the operator opens Api<{kind}> in {files:?}: grant it in \
                 charts/outlayer-operator/templates/rbac.yaml and add it to resource_of()"
            )
        });
        let key = format!("{group}/{resource}");
        let grants = match (cluster_scoped, kind.as_str()) {
            (true, _) => &cluster,
            (false, "Lease") => &leader,
            (false, _) => &workload,
        };
        assert!(
            grants.contains_key(&key),
            "Api<{kind}> ({files:?}) needs {key}; granted: {grants:?}"
        );
    }

    // Exactly the verbs the code uses (see the comments in rbac.yaml for which code uses each).
    let expected_workload: BTreeMap<String, BTreeSet<String>> = [
        (
            "outlayer.dev/executionrequests",
            &["get", "list", "watch", "create", "delete"][..],
        ),
        (
            "outlayer.dev/compilejobs",
            &["get", "list", "watch", "create", "patch", "delete"],
        ),
        ("outlayer.dev/executionrequests/status", &["patch"]),
        ("outlayer.dev/compilejobs/status", &["patch"]),
        (
            "/pods",
            &["get", "list", "watch", "create", "patch", "delete"],
        ),
        ("batch/jobs", &["get", "list", "watch", "create", "delete"]),
        ("/configmaps", &["create", "delete", "get", "patch"]),
        ("/secrets", &["get", "list", "create", "delete", "update"]),
        ("events.k8s.io/events", &["create", "patch"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), set(v)))
    .collect();
    assert_eq!(workload, expected_workload);
    assert_eq!(
        leader,
        BTreeMap::from([(
            "coordination.k8s.io/leases".to_string(),
            set(&["create", "get", "update"])
        )])
    );
    assert_eq!(
        cluster,
        BTreeMap::from([
            (
                "outlayer.dev/pricings".to_string(),
                set(&["get", "list", "watch"])
            ),
            ("outlayer.dev/pricings/status".to_string(), set(&["patch"])),
            (
                "apiextensions.k8s.io/customresourcedefinitions".to_string(),
                set(&["get"])
            ),
        ])
    );
    // Reading and renewing the Lease, and the watcher's ConfigMap, are limited to those names.
    let lease_rule = role(&objects, "outlayer-outlayer-operator-leader-election")["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| strings(&r["verbs"]).contains(&"update"))
        .unwrap();
    assert_eq!(strings(&lease_rule["resourceNames"]), ["outlayer-operator"]);
    let cursor_rule = role(&objects, "outlayer-outlayer-operator")["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| {
            strings(&r["resources"]) == ["configmaps"] && strings(&r["verbs"]).contains(&"patch")
        })
        .unwrap();
    assert_eq!(
        strings(&cursor_rule["resourceNames"]),
        [
            outlayer_operator::chain_watcher::CURSOR_CONFIG_MAP,
            outlayer_operator::sealing::keys::DEFAULT_PUBKEY_CONFIG_MAP
        ]
    );
    let pool_rule = role(&objects, "outlayer-outlayer-operator")["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| strings(&r["resources"]) == ["configmaps"] && strings(&r["verbs"]) == ["get"])
        .unwrap();
    assert_eq!(
        strings(&pool_rule["resourceNames"]),
        [outlayer_operator::pool::POOL_OWNER_NAME]
    );
    let key_rule = role(&objects, "outlayer-outlayer-operator")["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| strings(&r["resources"]) == ["secrets"] && strings(&r["verbs"]) == ["update"])
        .unwrap();
    assert_eq!(
        strings(&key_rule["resourceNames"]),
        [outlayer_operator::sealing::keys::DEFAULT_KEY_SECRET]
    );

    // The bindings name the chart's ServiceAccount and the roles above.
    let sa = name(single(&objects, "ServiceAccount"));
    for binding in of_kind(&objects, "RoleBinding")
        .into_iter()
        .chain(of_kind(&objects, "ClusterRoleBinding"))
    {
        assert_eq!(binding["subjects"][0]["name"], sa, "{}", id(binding));
        assert_eq!(binding["subjects"][0]["namespace"], NS, "{}", id(binding));
        assert_eq!(
            binding["roleRef"]["name"],
            name(binding),
            "{} binds its namesake",
            id(binding)
        );
    }
}

#[test]
fn workload_namespace_can_differ_from_the_release_namespace() {
    let objects = render(VARIANTS[2].1);
    let workload_role = role(&objects, "outlayer-outlayer-operator");
    assert_eq!(namespace(workload_role), Some("outlayer-jobs"));
    let leader_role = role(&objects, "outlayer-outlayer-operator-leader-election");
    assert_eq!(namespace(leader_role), Some(NS));
    let ns = single(&objects, "Namespace");
    assert_eq!(name(ns), "outlayer-jobs");
    assert_eq!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );
    let pvc = single(&objects, "PersistentVolumeClaim");
    assert_eq!(namespace(pvc), Some("outlayer-jobs"));
    // A pod cannot mount a claim of another namespace: the operator goes without the cache there…
    let container = operator_container(&objects);
    let mounts = container["volumeMounts"].as_array().unwrap();
    assert!(mounts.iter().all(|m| m["name"] != "cache"), "{mounts:?}");
    assert_eq!(env_value(container, "OUTLAYER_CACHE_MOUNT_PATH"), None);
    // …and eviction, which needs the mount, is refused rather than silently off.
    let mut extra = VARIANTS[2].1.to_vec();
    extra.extend(["--set", "cache.maxBytes=1000000"]);
    let err = helm()
        .template(RELEASE, NS, &extra)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cache.maxBytes needs the operator to mount the cache"),
        "{err}"
    );
    // Events about the cluster-scoped Pricing go to "default" (kube-runtime's Recorder).
    let events = role(
        &objects,
        "outlayer-system-outlayer-outlayer-operator-pricing-events",
    );
    assert_eq!(namespace(events), Some("default"));
}

#[test]
fn env_matches_the_operator_flags() {
    let declared = source::declared_env(&source::operator_src()).unwrap();
    assert!(declared.contains("OUTLAYER_NAMESPACE"), "{declared:?}");
    let extra: Vec<&str> = VARIANTS
        .iter()
        .flat_map(|(_, e)| e.iter().copied())
        .collect();
    let objects = render(
        &[
            extra.as_slice(),
            &[
                "--set",
                "cache.maxBytes=1073741824",
                "--set",
                "workload.namespace=",
                "--set",
                "compiler.gitMirrors={https://github.com/=https://git.internal.example/github/}",
                "--set",
                "compiler.urlFetch.allowCidrs={10.20.0.0/16}",
                "--set-string",
                "compiler.urlFetch.caBundle=-----BEGIN CERTIFICATE-----",
                "--set",
                "compiler.isolationProbe=10.96.0.1:443",
            ],
        ]
        .concat(),
    );
    let container = operator_container(&objects);
    let set_by_chart: Vec<String> = manifests::env(container)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    // RUST_LOG is read by tracing-subscriber's EnvFilter, not by a flag.
    let main_rs = e2e_chart::read(&source::operator_src().join("main.rs")).unwrap();
    assert!(main_rs.contains("EnvFilter::try_from_default_env"));
    for var in set_by_chart.iter().filter(|v| *v != "RUST_LOG") {
        assert!(
            declared.contains(var),
            "the chart sets {var}, which the operator does not read (declared: {declared:?})"
        );
    }
    // Every flag is settable through values.
    for var in &declared {
        assert!(
            set_by_chart.contains(var),
            "the operator reads {var}, which the chart never sets: add a value for it"
        );
    }
    // The account comes from the Secret by reference; the private key is a file from the Secret,
    // never in the environment.
    let account = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "OUTLAYER_OPERATOR_ACCOUNT_ID")
        .unwrap();
    assert_eq!(
        account["valueFrom"]["secretKeyRef"]["name"],
        "outlayer-operator-key"
    );
    let key_file = env_value(container, "OUTLAYER_OPERATOR_KEY_FILE").unwrap();
    // The resolve key pool: all keys of the file unless chain.operatorKey.signingKeys says how many.
    assert_eq!(
        env_value(container, "OUTLAYER_SIGNING_KEYS").as_deref(),
        Some("0")
    );
    let pooled = render(&[
        "--set",
        "chain.operatorKey.secretName=outlayer-operator-key",
        "--set",
        "chain.operatorKey.signingKeys=8",
    ]);
    assert_eq!(
        env_value(operator_container(&pooled), "OUTLAYER_SIGNING_KEYS").as_deref(),
        Some("8")
    );
    let pod = &deployment(&objects)["spec"]["template"]["spec"];
    let mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| key_file.starts_with(&format!("{}/", m["mountPath"].as_str().unwrap())))
        .unwrap_or_else(|| panic!("nothing mounted at {key_file}"));
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap();
    assert_eq!(volume["secret"]["secretName"], "outlayer-operator-key");
    assert_eq!(
        volume["secret"]["items"][0]["path"].as_str(),
        key_file.rsplit('/').next()
    );
    assert!(
        !set_by_chart.iter().any(|v| v.contains("PRIVATE_KEY")),
        "{set_by_chart:?}"
    );
    assert_eq!(
        env_value(container, "OUTLAYER_RPC_URLS").as_deref(),
        Some("https://rpc.testnet.near.org,https://rpc2.example.org")
    );
    assert_eq!(
        env_value(container, "OUTLAYER_CACHE_MAX_BYTES").as_deref(),
        Some("1073741824")
    );
    // Modules by URL: the mirror's CIDR reaches the operator and the fetch Jobs' egress; its CA is a
    // ConfigMap mounted where the flag points.
    assert_eq!(
        env_value(container, "OUTLAYER_URL_FETCH_ALLOW_CIDRS").as_deref(),
        Some("10.20.0.0/16")
    );
    let ca_file = env_value(container, "OUTLAYER_URL_FETCH_CA_FILE").unwrap();
    let ca_mount = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| ca_file.starts_with(&format!("{}/", m["mountPath"].as_str().unwrap())))
        .unwrap_or_else(|| panic!("nothing mounted at {ca_file}"));
    let ca_volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == ca_mount["name"])
        .unwrap();
    let ca_map = objects
        .iter()
        .find(|o| {
            o["kind"] == "ConfigMap" && o["metadata"]["name"] == ca_volume["configMap"]["name"]
        })
        .expect("the CA bundle's ConfigMap");
    assert_eq!(ca_map["data"]["ca.pem"], "-----BEGIN CERTIFICATE-----");
    let fetch_egress = objects
        .iter()
        .find(|o| {
            o["kind"] == "NetworkPolicy"
                && o["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with("-fetch-egress"))
        })
        .unwrap();
    assert!(
        fetch_egress["spec"]["egress"]
            .as_array()
            .unwrap()
            .iter()
            .any(|rule| rule["to"][0]["ipBlock"]["cidr"] == "10.20.0.0/16"),
        "{fetch_egress}"
    );
}

#[test]
fn cache_claim_follows_the_values() {
    let objects = render(&[]);
    let pvc = single(&objects, "PersistentVolumeClaim");
    assert_eq!(name(pvc), "outlayer-cache");
    assert_eq!(strings(&pvc["spec"]["accessModes"]), ["ReadWriteMany"]);
    assert_eq!(pvc["spec"]["resources"]["requests"]["storage"], "20Gi");
    assert!(pvc["spec"]["storageClassName"].is_null(), "{pvc}");
    let container = operator_container(&objects);
    assert_eq!(
        env_value(container, "OUTLAYER_CACHE_CLAIM").as_deref(),
        Some("outlayer-cache")
    );
    let volumes = &deployment(&objects)["spec"]["template"]["spec"]["volumes"];
    assert_eq!(
        volumes[0]["persistentVolumeClaim"]["claimName"],
        "outlayer-cache"
    );
    assert_eq!(
        container["volumeMounts"][0]["mountPath"].as_str(),
        env_value(container, "OUTLAYER_CACHE_MOUNT_PATH").as_deref()
    );

    let objects = render(VARIANTS[1].1);
    let pvc = single(&objects, "PersistentVolumeClaim");
    assert_eq!(strings(&pvc["spec"]["accessModes"]), ["ReadWriteOnce"]);
    assert_eq!(pvc["spec"]["storageClassName"], "local-path");
    assert_eq!(pvc["spec"]["resources"]["requests"]["storage"], "5Gi");

    let objects = render(&[
        "--set",
        "cache.create=false",
        "--set",
        "cache.claimName=shared",
    ]);
    assert!(of_kind(&objects, "PersistentVolumeClaim").is_empty());
    assert_eq!(
        env_value(operator_container(&objects), "OUTLAYER_CACHE_CLAIM").as_deref(),
        Some("shared")
    );
}

#[test]
fn images_and_runtime_class_reach_the_operator() {
    let objects = render(VARIANTS[1].1);
    let container = operator_container(&objects);
    assert_eq!(
        env_value(container, "OUTLAYER_RUNTIME_CLASS_NAME").as_deref(),
        Some("gvisor")
    );
    assert_eq!(
        container["image"],
        "ghcr.io/outlayer/outlayer-operator:0.1.0"
    );
    assert_eq!(
        env_value(container, "OUTLAYER_EXECUTOR_IMAGE").as_deref(),
        Some("ghcr.io/outlayer/outlayer-executor:0.1.0")
    );
    let digest = format!("sha256:{}", "ab".repeat(32));
    let objects = render(&[
        "--set",
        &format!("compiler.image.digest={digest}"),
        "--set",
        "executor.image.repository=registry.example/exec",
        "--set",
        "executor.image.tag=1.2.3",
    ]);
    let container = operator_container(&objects);
    assert_eq!(
        env_value(container, "OUTLAYER_COMPILER_IMAGE"),
        Some(format!("ghcr.io/outlayer/outlayer-compiler@{digest}"))
    );
    assert_eq!(
        env_value(container, "OUTLAYER_EXECUTOR_IMAGE").as_deref(),
        Some("registry.example/exec:1.2.3")
    );
    assert_eq!(env_value(container, "OUTLAYER_RUNTIME_CLASS_NAME"), None);
}

#[test]
fn service_monitor_scrapes_the_metrics_service() {
    assert!(of_kind(&render(&[]), "ServiceMonitor").is_empty());
    let objects = render(VARIANTS[1].1);
    let monitor = single(&objects, "ServiceMonitor");
    let service = single(&objects, "Service");
    let selector = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap();
    for (key, value) in selector {
        assert_eq!(&service["metadata"]["labels"][key], value, "{key}");
    }
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"],
        service["spec"]["ports"][0]["name"]
    );
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    // The Service selects the operator's pods and reaches their http port.
    let pod_labels = &deployment(&objects)["spec"]["template"]["metadata"]["labels"];
    for (key, value) in service["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&pod_labels[key], value, "{key}");
    }
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http");
}

fn matches(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
    let by_label = selector["matchLabels"]
        .as_object()
        .unwrap()
        .iter()
        .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str());
    let by_expression = selector["matchExpressions"]
        .as_array()
        .map(|expressions| {
            expressions.iter().all(|e| {
                assert_eq!(e["operator"], "In", "only In is read here: {e}");
                let key = e["key"].as_str().unwrap();
                labels.get(key).is_some_and(|value| {
                    e["values"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|v| v.as_str() == Some(value.as_str()))
                })
            })
        })
        .unwrap_or(true);
    by_label && by_expression
}

fn policy<'a>(objects: &'a [Value], suffix: &str) -> &'a Value {
    objects
        .iter()
        .find(|o| kind(o) == "NetworkPolicy" && name(o).ends_with(suffix))
        .unwrap_or_else(|| panic!("no NetworkPolicy *{suffix}"))
}

/// The policies select the pods the operator really builds (its own builders, not copies of labels).
#[test]
fn network_policies_select_the_operators_pods() {
    use outlayer_operator::config::OperatorConfig;
    use outlayer_operator::crd::CompileJob;
    use outlayer_operator::pods::compile::{build_job, fetch_job, resolve_job};
    use outlayer_operator::pods::hardening::sandbox_labels;

    let objects = render(&[]);
    let compile_job: CompileJob = serde_json::from_value(json!({
        "apiVersion": "outlayer.dev/v1alpha1",
        "kind": "CompileJob",
        "metadata": {"name": "cj-0123456789abcdef", "namespace": NS, "uid": "4c1d0d2e-0000-4000-8000-000000000000"},
        "spec": {"repo": "https://github.com/outlayer/examples", "commit": "0123456789abcdef0123456789abcdef01234567", "buildTarget": "wasm32-wasip1"},
    }))
    .unwrap();
    let config = OperatorConfig::default();
    let pod_labels = |job: k8s_openapi::api::batch::v1::Job| -> BTreeMap<String, String> {
        job.spec.unwrap().template.metadata.unwrap().labels.unwrap()
    };
    let fetch = pod_labels(fetch_job(&compile_job, &config).unwrap());
    let build = pod_labels(
        build_job(
            &compile_job,
            "0123456789abcdef0123456789abcdef01234567",
            &config,
        )
        .unwrap(),
    );
    let resolve = pod_labels(resolve_job(&compile_job, &config).unwrap());
    let executor = sandbox_labels("outlayer-executor", ("outlayer.dev/execution", "x"));

    let deny = policy(&objects, "-sandbox-deny-all");
    assert_eq!(strings(&deny["spec"]["policyTypes"]), ["Ingress", "Egress"]);
    assert!(deny["spec"]["ingress"].is_null() && deny["spec"]["egress"].is_null());
    assert!(matches(&deny["spec"]["podSelector"], &build), "{build:?}");
    assert!(
        matches(&deny["spec"]["podSelector"], &executor),
        "{executor:?}"
    );
    assert!(!matches(&deny["spec"]["podSelector"], &fetch), "{fetch:?}");

    let fetch_policy = policy(&objects, "-fetch-egress");
    assert!(
        matches(&fetch_policy["spec"]["podSelector"], &fetch),
        "{fetch:?}"
    );
    // The resolve Job (re-resolving a branch name) is held to the fetch's egress, never left open.
    assert!(
        matches(&fetch_policy["spec"]["podSelector"], &resolve),
        "{resolve:?}"
    );
    assert!(!matches(&deny["spec"]["podSelector"], &resolve));
    assert!(!matches(&fetch_policy["spec"]["podSelector"], &build));
    assert_eq!(
        strings(&fetch_policy["spec"]["policyTypes"]),
        ["Ingress", "Egress"]
    );
    assert!(fetch_policy["spec"]["ingress"].is_null());
    let egress = fetch_policy["spec"]["egress"].as_array().unwrap();
    assert_eq!(
        egress.len(),
        2,
        "DNS and the git/registry hosts: {egress:?}"
    );
    assert_eq!(egress[0]["ports"][0]["port"], 53);
    assert_eq!(egress[1]["to"][0]["ipBlock"]["cidr"], "0.0.0.0/0");
    assert!(strings(&egress[1]["to"][0]["ipBlock"]["except"]).contains(&"169.254.0.0/16"));
    assert_eq!(egress[1]["ports"][0]["port"], 443);

    // Narrowed to the hosts a platform team allows.
    let objects = render(&[
        "--set",
        "networkPolicy.fetchEgress.cidrs[0].cidr=140.82.112.0/20",
        "--set",
        "networkPolicy.operatorEgress.apiServerCidrs={10.0.0.1/32}",
    ]);
    let fetch_policy = policy(&objects, "-fetch-egress");
    assert_eq!(
        fetch_policy["spec"]["egress"][1]["to"][0]["ipBlock"]["cidr"],
        "140.82.112.0/20"
    );
    let operator = policy(&objects, "-operator");
    let pod_labels: BTreeMap<String, String> = serde_json::from_value(
        deployment(&objects)["spec"]["template"]["metadata"]["labels"].clone(),
    )
    .unwrap();
    assert!(matches(&operator["spec"]["podSelector"], &pod_labels));
    let egress = operator["spec"]["egress"].as_array().unwrap();
    let api = egress
        .iter()
        .find(|rule| {
            rule["ports"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["port"] == 6443)
        })
        .unwrap();
    assert_eq!(api["to"][0]["ipBlock"]["cidr"], "10.0.0.1/32");
    assert_eq!(operator["spec"]["ingress"][0]["ports"][0]["port"], 8080);

    // Builds wait for their policy: the operator finds the API server's address itself, unless
    // told one, or told there is no policy to wait for.
    let probe = |objects: &[Value]| {
        env_value(
            operator_container(objects),
            "OUTLAYER_BUILD_ISOLATION_PROBE",
        )
    };
    assert_eq!(probe(&render(&[])), None);
    assert_eq!(
        probe(&render(&["--set", "compiler.isolationProbe=10.96.0.1:443"])).as_deref(),
        Some("10.96.0.1:443")
    );

    let off = render(&["--set", "networkPolicy.enabled=false"]);
    assert!(of_kind(&off, "NetworkPolicy").is_empty());
    assert_eq!(probe(&off).as_deref(), Some("off"));
}

#[test]
fn pricing_is_rendered_from_values() {
    assert!(of_kind(&render(&[]), "Pricing").is_empty());
    let objects = render(&[
        "--set",
        "pricing.enabled=true",
        "--set-string",
        "pricing.baseFee=2000000000000000000000",
    ]);
    let pricing = single(&objects, "Pricing");
    assert_eq!(pricing["apiVersion"], "outlayer.dev/v1alpha1");
    assert_eq!(name(pricing), outlayer_operator::crd::PRICING_SINGLETON);
    assert_eq!(namespace(pricing), None);
    assert_eq!(pricing["spec"]["baseFee"], "2000000000000000000000");
    // The spec deserializes into the operator's own type: field names and formats agree.
    let typed: outlayer_operator::crd::Pricing = serde_json::from_value(pricing.clone()).unwrap();
    assert_eq!(typed.spec.base_fee, "2000000000000000000000");
}

#[test]
fn values_schema_rejects_bad_values() {
    let helm = helm();
    for (setting, complaint) in [
        ("cache.size=-5Gi", "/cache/size"),
        ("cache.size=0", "/cache/size"),
        ("cache.accessMode=ReadWriteSometimes", "/cache/accessMode"),
        ("cache.maxBytes=-1", "/cache/maxBytes"),
        ("operator.replicas=0", "/operator/replicas"),
        (
            "chain.operatorKey.signingKeys=-1",
            "/chain/operatorKey/signingKeys",
        ),
        ("operator.bogus=1", "bogus"),
        ("pricing.baseFee=-1", "/pricing/baseFee"),
        (
            "compiler.allowedRepoPrefixes={http://github.com/}",
            "/compiler/allowedRepoPrefixes",
        ),
        ("executor.image.digest=latest", "/executor/image/digest"),
    ] {
        let err = helm
            .template(RELEASE, NS, &["--set", setting])
            .expect_err(setting)
            .to_string();
        assert!(
            err.contains("schema") && err.contains(complaint),
            "{setting}: {err}"
        );
    }
}

#[test]
fn grafana_dashboard_queries_the_operators_metrics() {
    use outlayer_operator::metrics::{
        CompileOutcome, ControllerKind, ExecutionResult, Metrics, TimedPhase,
    };
    let objects = render(&[]);
    let config_map = single(&objects, "ConfigMap");
    assert_eq!(config_map["metadata"]["labels"]["grafana_dashboard"], "1");
    let json_text = config_map["data"]["outlayer-operator.json"]
        .as_str()
        .unwrap();
    let dashboard: Value = serde_json::from_str(json_text).unwrap();

    // Every family the operator exports, as Prometheus sees it (each touched so it is described).
    let metrics = Metrics::new();
    metrics.execution_finished(ExecutionResult::Succeeded, "Succeeded");
    metrics.phase_duration(TimedPhase::Execute, std::time::Duration::from_millis(1));
    metrics.compile_finished(CompileOutcome::Succeeded);
    metrics.reconcile_error(
        ControllerKind::Execution,
        &outlayer_operator::Error::InvalidSpec("x".into()),
    );
    let exported: BTreeSet<String> = metrics
        .encode()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let mut parts = l.split(' ');
            let family = parts.next().unwrap().to_string();
            match parts.next() {
                // A histogram's series are _bucket, _sum and _count.
                Some("histogram") => format!("{family}_bucket"),
                _ => family,
            }
        })
        .collect();

    let mut used = BTreeSet::new();
    let panels = dashboard["panels"].as_array().unwrap();
    for panel in panels {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for (at, _) in expr.match_indices("outlayer_") {
                let metric: String = expr[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    exported.contains(&metric),
                    "panel {:?} queries {metric}, which the operator does not export ({exported:?})",
                    panel["title"]
                );
                used.insert(metric);
            }
        }
    }
    // What the issue asks the dashboard to show.
    for needed in [
        "outlayer_executions_finished_total",
        "outlayer_phase_duration_seconds_bucket",
        "outlayer_cache_hits_total",
        "outlayer_cache_misses_total",
        "outlayer_queue_depth",
    ] {
        assert!(used.contains(needed), "no panel uses {needed}");
    }
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for phase in ["compile_wait", "execute"] {
        assert!(
            titles.iter().any(|t| t.contains(phase)),
            "no latency panel for {phase}: {titles:?}"
        );
    }
}

#[test]
fn notes_say_what_to_do_next() {
    let out = helm()
        .run(
            &[
                "install".into(),
                RELEASE.into(),
                chart_dir().display().to_string(),
                "--namespace".into(),
                NS.into(),
                "--dry-run=client".into(),
            ],
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    for expected in [
        "rollout status deploy/outlayer-outlayer-operator",
        "kubectl -n outlayer-system get exr -o wide",
        "Chain-less mode",
    ] {
        assert!(out.contains(expected), "NOTES lack {expected:?}:\n{out}");
    }
}

/// The chart's CRDs are copies of crds/ (which `crdgen` writes): same files, same bytes.
#[test]
fn chart_crds_equal_the_generated_crds() {
    let listing = |dir: &std::path::Path| -> BTreeMap<String, String> {
        std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
            .map(|path| {
                (
                    path.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read_to_string(&path).unwrap(),
                )
            })
            .collect()
    };
    let generated = listing(&repo_root().join("crds"));
    let in_chart = listing(&chart_dir().join("crds"));
    assert!(!generated.is_empty());
    let resync = "resync with: rm charts/outlayer-operator/crds/*.yaml && \
                  cp crds/*.yaml charts/outlayer-operator/crds/";
    assert_eq!(
        generated.keys().collect::<Vec<_>>(),
        in_chart.keys().collect::<Vec<_>>(),
        "charts/outlayer-operator/crds/ and crds/ hold different files; {resync}"
    );
    for (file, text) in &generated {
        assert!(
            in_chart[file] == *text,
            "charts/outlayer-operator/crds/{file} differs from crds/{file}; {resync}"
        );
    }
}
