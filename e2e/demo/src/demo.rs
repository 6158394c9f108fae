//! The demo's stack and flow: start everything ([`Demo::start`]), send the user's request and follow
//! it to its outcome ([`Demo::run_request`]).

use std::time::Duration;

use e2e_chart::Helm;
use e2e_cluster::real_node::{self, GitMirror, NODE_IP};
use e2e_cluster::{Cluster, ClusterOptions};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use outlayer_operator::chain::{Pricing, ResourceMetrics};
use outlayer_operator::crd::{ExecutionRequest, ExecutionRequestStatus};
use serde_json::{Value, json};

use crate::artifacts::{Artifacts, set_mode, target_dir, work_dir};
use crate::chain::{DemoChain, OPERATOR, USER, secret_key, yocto_to_near};
use crate::chart::{ChartSettings, NAMESPACE, RELEASE, Release};
use crate::outcome::{Outcome, event, returned_value, tokens_burnt, yocto_field};
use crate::progress::{Log, Watch};
use crate::{Error, Example, Kubectl, Result, wait_until};

/// Bounds on waits for the cluster: generous, since the machine may be busy building; only a hang
/// reaches them.
const OPERATOR_READY_LIMIT: Duration = Duration::from_secs(180);
const STATUS_LIMIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// The localnet's block time; the yield window is 200 blocks of it.
    pub block_time: Duration,
    pub example: Example,
    /// The program's input; the example's own when `None`.
    pub input: Option<String>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        Self {
            block_time: Duration::from_millis(600),
            example: Example::json_transform(),
            input: None,
        }
    }
}

/// The operator's `/metrics`, `/healthz` and `/readyz` port (the chart's default `operator.httpPort`).
const OPERATOR_HTTP_PORT: u16 = 8080;

/// The running stack. Fields drop in declaration order: the progress watch first, the git mirror and
/// the chain, then the cluster with its real node (containers, network), the working directory last.
pub struct Demo {
    pub log: Log,
    watch: Option<Watch>,
    release: Release,
    _mirror: GitMirror,
    chain: DemoChain,
    cluster: Cluster,
    kubectl: Kubectl,
    operator_address: std::net::SocketAddr,
    options: DemoOptions,
    commit: String,
    artifacts: Artifacts,
    mirror_url: String,
    /// The verifier's cache: on the host, outside the repository (it runs no pod).
    verify_cache: tempfile::TempDir,
    work: tempfile::TempDir,
}

/// What `outlayer-operator verify` said about the demo's answer.
#[derive(Debug, Clone)]
pub struct Verification {
    /// The command as a third party types it.
    pub command: String,
    /// Its exit status: 0 every check matches, 1 a mismatch, 2 something could not be checked.
    pub code: i32,
    /// Its lines (the verdict per check and the time it took).
    pub report: String,
    pub elapsed: Duration,
}

impl Demo {
    /// Boots the control plane with a real node (kubelet, containerd, kube-proxy, kube-router; images
    /// built from the repository's Dockerfiles) and the localnet with the contract, then installs the
    /// chart with `helm install` and waits until the operator pod is ready.
    pub async fn start(options: DemoOptions, log: Log) -> Result<Self> {
        // Everything that can be missing is looked for before anything starts.
        let artifacts = Artifacts::locate()?;
        let helm = Helm::locate()?;
        let work = work_dir()?;
        let mirror_root = work.path().join("repos");
        let cache = work.path().join("cache");
        for dir in [cache.join("wasm"), cache.join("results")] {
            std::fs::create_dir_all(&dir)
                .map_err(Error::io(format!("create {}", dir.display())))?;
        }
        // The operator, executor and compiler run as uid 65532 and write here.
        set_mode(&cache, 0o777)?;
        set_mode(&cache.join("results"), 0o777)?;
        set_mode(&cache.join("wasm"), 0o777)?;

        let commit = options.example.publish(&mirror_root)?;
        log.line(format_args!(
            "example {} ({}) committed at {} in a local repository, served as {} through a git mirror",
            options.example.dir,
            options.example.what_it_does,
            short(&commit),
            options.example.repo
        ));

        log.line("images from the repository's Dockerfiles (BuildKit; cached by content)");
        let bin_dir = target_dir().join("debug");
        let images = tokio::task::spawn_blocking(move || real_node::build_images(&bin_dir))
            .await
            .map_err(|e| Error::Unexpected(format!("the image build task failed: {e}")))??;
        // The control plane first: it brings up the node's bridge, where the localnet listens too
        // (the operator, a pod, reaches it there).
        let mut cluster = Cluster::start_with(ClusterOptions::real_node()).await?;
        log.line(format_args!(
            "local control plane up at {}",
            cluster.server_url()
        ));
        cluster
            .start_real_node(&images.only(&[&images.operator, &images.executor, &images.compiler]))
            .await?;
        log.line(format_args!(
            "real node {} ready: kubelet {}, containerd, runc, kube-proxy (nftables), kube-router \
             enforcing NetworkPolicies; images {}, {}, {}",
            e2e_cluster::DEFAULT_NODE,
            e2e_cluster::versions::pinned().kubernetes,
            images.operator,
            images.executor,
            images.compiler
        ));
        let chain = DemoChain::start(&artifacts.contract, options.block_time, NODE_IP).await?;
        log.line(format_args!(
            "localnet at {} ({} ms blocks): contract {} deployed from {}, user {USER} holds {}",
            chain.rpc_url(),
            options.block_time.as_millis(),
            crate::CONTRACT,
            artifacts.contract.display(),
            yocto_to_near(chain.balance(USER).await?),
        ));
        let mirror = GitMirror::start(&mirror_root, work.path())?;
        let mirror_url = mirror.url();
        log.line(format_args!(
            "git mirror (git daemon) at {} serving {}",
            mirror.url(),
            mirror_root.display()
        ));

        cluster
            .create_namespace(
                NAMESPACE,
                &[("pod-security.kubernetes.io/enforce", "restricted")],
            )
            .await?;
        let client = cluster.client();
        crate::chart::create_cache_volume(&client, &cache).await?;
        crate::chart::create_key_secret(&client, OPERATOR, &secret_key(OPERATOR).to_string())
            .await?;
        log.line(format_args!(
            "namespace {NAMESPACE} (Pod Security \"restricted\"), Secret {} with the key of {OPERATOR}",
            crate::chart::KEY_SECRET
        ));

        let kubectl = Kubectl::new(
            cluster.kubectl().ok_or_else(|| {
                Error::Unexpected("the demo needs the local control plane's kubectl".into())
            })?,
            cluster.kubeconfig_path(),
        );
        let values = crate::chart::values(&ChartSettings {
            images: &images,
            rpc_url: chain.rpc_url(),
            block_time_ms: u64::try_from(options.block_time.as_millis()).unwrap_or(u64::MAX),
            git_mirror: mirror.url(),
            node_ip: NODE_IP,
            mirror_port: mirror.port(),
            api_server_port: cluster
                .server_port()
                .ok_or_else(|| Error::Unexpected(format!("no port in {}", cluster.server_url())))?,
            rpc_port: chain.rpc_port(),
        })?;
        let release = Release::new(
            helm,
            cluster.kubeconfig_path(),
            &work.path().join("values.json"),
            &values,
        )?;
        let watch = Watch::start(client, NAMESPACE, log);
        let installed = release.install()?;
        let status = installed
            .lines()
            .find(|l| l.starts_with("STATUS:"))
            .unwrap_or("STATUS: ?");
        log.line(format_args!(
            "helm install {RELEASE} charts/outlayer-operator -n {NAMESPACE}: {status}"
        ));
        let pods: Api<Pod> = Api::namespaced(cluster.client(), NAMESPACE);
        let (operator_address, ready) =
            wait_until("the operator's /readyz", OPERATOR_READY_LIMIT, || {
                let pods = pods.clone();
                async move {
                    let address = operator_address(&pods).await?;
                    let body = crate::chart::readyz(address).await?;
                    Ok((address, body))
                }
            })
            .await?;
        log.line(format_args!(
            "operator ready ({}); it watches {} on {}",
            ready.trim(),
            crate::CONTRACT,
            chain.rpc_url()
        ));
        // A request records the seed key the contract holds when it is made; one made before the
        // leader's first publication lands is answered unseeded. The demo shows a seeded run.
        let chain_ref = &chain;
        let seed_key = wait_until(
            "the operator's seed key on the contract",
            OPERATOR_READY_LIMIT,
            || async move {
                match chain_ref.view("get_seed_public_key", json!({})).await {
                    Ok(Value::String(key)) => Ok(key),
                    Ok(other) => Err(format!("get_seed_public_key returned {other}")),
                    Err(e) => Err(e.to_string()),
                }
            },
        )
        .await?;
        log.line(format_args!(
            "the operator published its seed key {seed_key} on {}",
            crate::CONTRACT
        ));
        Ok(Self {
            log,
            watch: Some(watch),
            release,
            _mirror: mirror,
            chain,
            cluster,
            kubectl,
            operator_address,
            options,
            commit,
            artifacts,
            mirror_url,
            verify_cache: tempfile::tempdir().map_err(Error::io(
                "create the verifier's cache directory".to_string(),
            ))?,
            work,
        })
    }

    /// Checks the answer to the request made by `tx_hash` the way anyone can, from the chain alone:
    /// `outlayer-operator verify` rebuilds the module from the commit (through the git mirror, with the
    /// compiler binary and this machine's toolchain) and replays the request. Modules it rebuilt are
    /// kept in the demo's working directory, so a second call finds them.
    pub async fn verify(&self, tx_hash: &str) -> Result<Verification> {
        // Outside the repository: a checkout under its Cargo workspace would be taken for a member.
        let cache = self.verify_cache.path();
        let mut command = std::process::Command::new(&self.artifacts.operator);
        command
            .arg("verify")
            .args(["--rpc-url", &self.chain.rpc_url()])
            .args(["--contract-id", crate::CONTRACT])
            .args(["--tx", tx_hash])
            .args(["--sender", USER])
            .arg("--compiler")
            .arg(&self.artifacts.compiler)
            .arg(format!(
                "--git-mirror=https://github.com/={}",
                self.mirror_url
            ))
            .arg("--cache-dir")
            .arg(cache);
        let shown = format!(
            "outlayer-operator verify --rpc-url {} --contract-id {} --tx {tx_hash} --sender {USER}",
            self.chain.rpc_url(),
            crate::CONTRACT
        );
        let started = std::time::Instant::now();
        let output = tokio::task::spawn_blocking(move || command.output())
            .await
            .map_err(|e| Error::Unexpected(format!("the verify task failed: {e}")))?
            .map_err(Error::io("run outlayer-operator verify".to_string()))?;
        let mut report = String::from_utf8_lossy(&output.stdout).into_owned();
        if !output.status.success() {
            report.push_str(&String::from_utf8_lossy(&output.stderr));
        }
        Ok(Verification {
            command: shown,
            code: output.status.code().unwrap_or(-1),
            report,
            elapsed: started.elapsed(),
        })
    }

    /// The request the user sends: the example at its commit, its input, limits, the response format.
    pub fn request_args(&self) -> Value {
        let example = &self.options.example;
        json!({
            "code_source": {"repo": example.repo, "commit": self.commit, "build_target": "wasm32-wasip1"},
            "resource_limits": {"max_instructions": 1_000_000_000u64, "max_memory_mb": 64,
                                "max_execution_seconds": 10},
            "input_data": self.options.input.as_deref().unwrap_or(example.default_input),
            "response_format": example.response_format,
        })
    }

    /// The user's `request_execution`, with a deposit from `estimate_execution_cost` plus storage and
    /// a compile allowance; waits for the transaction to settle and the ExecutionRequest to finish.
    pub async fn run_request(&self) -> Result<Outcome> {
        let args = self.request_args();
        let deposit = self.chain.deposit_for(&args).await?;
        let pricing: Pricing =
            serde_json::from_value(self.chain.view("get_pricing", json!({})).await?)
                .map_err(|e| Error::Unexpected(format!("get_pricing: {e}")))?;
        let balance_before = self.chain.balance(USER).await?;
        self.log.line(format_args!(
            "{USER} calls {}.request_execution({}@{}, input {} bytes) with {} attached",
            crate::CONTRACT,
            self.options.example.repo,
            short(&self.commit),
            args["input_data"].as_str().map_or(0, str::len),
            yocto_to_near(deposit.total())
        ));
        let outcome = self
            .chain
            .request_execution(&args, deposit.total(), Duration::from_secs(60))
            .await?;
        let returned = returned_value(&outcome)?;
        let requested = event(&outcome, "execution_requested")?;
        let request_id = requested["request_id"].as_u64().ok_or_else(|| {
            Error::Unexpected(format!(
                "execution_requested has no request_id: {requested}"
            ))
        })?;
        let completed = event(&outcome, "execution_completed")?;
        self.log.line(format_args!(
            "the user's transaction {} settled: success={}",
            outcome.tx_hash, completed["success"]
        ));
        let used: ResourceMetrics = serde_json::from_value(completed["resources_used"].clone())
            .map_err(|e| {
                Error::Unexpected(format!(
                    "execution_completed's resources_used: {e}: {completed}"
                ))
            })?;
        let execution_name = format!("req-{request_id}");
        let execution = self.finished(&execution_name).await?;
        Ok(Outcome {
            tx_hash: outcome.tx_hash.to_string(),
            returned,
            execution_name,
            execution,
            deposit,
            pricing,
            used,
            charged: yocto_field(&completed, "payment_charged")?,
            refunded: yocto_field(&completed, "payment_refunded")?,
            completed_event: completed,
            gas_burnt: tokens_burnt(&outcome),
            balance_before,
            balance_after: self.chain.balance(USER).await?,
        })
    }

    /// The ExecutionRequest's status once it is terminal (and, when it succeeded, reported).
    async fn finished(&self, name: &str) -> Result<ExecutionRequestStatus> {
        let api: Api<ExecutionRequest> = Api::namespaced(self.cluster.client(), NAMESPACE);
        wait_until(
            &format!("ExecutionRequest {name} to finish"),
            STATUS_LIMIT,
            || {
                let api = api.clone();
                async move {
                    let status = api
                        .get(name)
                        .await
                        .map_err(|e| e.to_string())?
                        .status
                        .ok_or("no status yet")?;
                    match status.phase {
                        Some(phase) if phase.is_terminal() => Ok(status),
                        other => Err(format!("phase {other:?}")),
                    }
                }
            },
        )
        .await
    }

    /// Stops printing the namespace's changes.
    pub fn stop_watching(&mut self) {
        self.watch = None;
    }

    /// `kubectl args…` against the cluster (what the user would type).
    pub fn kubectl(&self) -> &Kubectl {
        &self.kubectl
    }

    pub fn client(&self) -> kube::Client {
        self.cluster.client()
    }

    pub fn chain(&self) -> &DemoChain {
        &self.chain
    }

    pub fn release(&self) -> &Release {
        &self.release
    }

    pub fn kubeconfig_path(&self) -> &std::path::Path {
        self.cluster.kubeconfig_path()
    }

    /// The operator pod's `/metrics`, `/healthz` and `/readyz` address (pod IP and port).
    pub fn operator_address(&self) -> std::net::SocketAddr {
        self.operator_address
    }

    /// The operator containers' logs (`kubectl logs`: through the API server from the kubelet).
    pub fn operator_log(&self) -> String {
        self.kubectl
            .run(
                &[
                    "-n",
                    NAMESPACE,
                    "logs",
                    "-l",
                    "app.kubernetes.io/component=operator",
                    "-c",
                    "operator",
                    "--tail=-1",
                    "--prefix",
                ],
                None,
            )
            .unwrap_or_else(|e| e.to_string())
    }

    pub fn work_dir(&self) -> &std::path::Path {
        self.work.path()
    }
}

/// The ready operator pod's IP and HTTP port.
async fn operator_address(pods: &Api<Pod>) -> std::result::Result<std::net::SocketAddr, String> {
    let params = ListParams::default().labels("app.kubernetes.io/component=operator");
    let list = pods.list(&params).await.map_err(|e| e.to_string())?;
    list.into_iter()
        .find_map(|pod| {
            let ip: std::net::IpAddr = pod.status?.pod_ip?.parse().ok()?;
            Some(std::net::SocketAddr::new(ip, OPERATOR_HTTP_PORT))
        })
        .ok_or_else(|| "no operator pod with an IP yet".to_owned())
}

/// A commit's first 12 hex digits, as `kubectl get exr` shows it.
fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}
