//! `operator-bench`: figures for the operator on the local control plane (issue 5's benchmarks).
//! Prints; asserts nothing. See README.md for what each figure means.

mod latency;
mod memory;
mod observe;
mod requests;
mod throughput;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use kube::api::Api;
use outlayer_operator::config::OperatorConfig;
use outlayer_operator::context::Context;
use outlayer_operator::controllers;
use outlayer_operator::crd::ExecutionRequest;

use e2e_bench::env::{self, BenchEnv, NAMESPACE};
use e2e_bench::{machine, stats};

#[derive(Parser)]
#[command(
    name = "operator-bench",
    about = "Measures warm-cache latency, throughput and operator memory on a local control plane"
)]
struct Cli {
    /// Sequential warm-cache runs for the latency figures (default 100; 20 with --quick).
    #[arg(long)]
    runs: Option<usize>,
    /// Pause between two sequential latency runs, not counted (default 0: back to back). With a
    /// warm pool, back-to-back runs measure a node busy starting each hit's replacement pod; a
    /// pause longer than a pod start (~1 s) measures a hit on a refilled pool.
    #[arg(long, default_value_t = 0)]
    pause_ms: u64,
    /// Requests created at once for the throughput figure (default 200; 40 with --quick).
    #[arg(long)]
    burst: Option<usize>,
    /// ExecutionRequests present for the memory figure (default 10000; 1000 with --quick).
    #[arg(long)]
    objects: Option<usize>,
    /// Smaller counts, for checking the bench itself.
    #[arg(long)]
    quick: bool,
    /// Create calls in flight at once (burst and memory steps).
    #[arg(long, default_value_t = 32)]
    create_concurrency: usize,
    /// CPU request and limit of each executor pod (the node agent advertises 8 CPUs, so this
    /// bounds how many executor pods run at once). Default: the operator's default.
    #[arg(long)]
    executor_cpu: Option<String>,
    /// Run executor pods as containers on a real node (kubelet, containerd, runc; needs root) with the
    /// executor image built from its Dockerfile, instead of under the node agent. The image is built
    /// from the directory of the executor binary, which must also hold the compiler and operator.
    #[arg(long)]
    real_node: bool,
    /// Also run the latency and throughput steps with the warm pool on (`CLASS_MB=COUNT,…`, e.g.
    /// `64=4`), after the same steps with it off: both in one run.
    #[arg(long)]
    warm_pool: Option<String>,
    /// Where the executor (and the other binaries the images are built from) come from: `auto`
    /// takes `target/release` when the binary is there, else `target/debug`.
    #[arg(long, value_enum, default_value_t = env::Binaries::Auto)]
    binaries: env::Binaries,
    /// Skip steps: any of latency, throughput, memory (repeatable or comma-separated).
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
}

impl Cli {
    fn count(&self, explicit: Option<usize>, full: usize, quick: usize) -> usize {
        explicit.unwrap_or(if self.quick { quick } else { full })
    }

    fn runs_step(&self, step: &str) -> bool {
        !self.skip.iter().any(|s| s == step)
    }
}

/// Waits until `count` warm pods are ready in the bench namespace.
async fn warm_pool_ready(client: &kube::Client, count: usize) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Pod;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let deadline = Instant::now() + std::time::Duration::from_secs(180);
    loop {
        let idle = pods
            .list(&kube::api::ListParams::default().labels("outlayer.dev/warm=idle"))
            .await?;
        let ready = idle
            .items
            .iter()
            .filter(|pod| {
                outlayer_operator::pool::plan::idle_state(
                    pod,
                    k8s_openapi::jiff::Timestamp::now(),
                    std::time::Duration::from_secs(3600),
                ) == outlayer_operator::pool::plan::IdleState::Ready
            })
            .count();
        if ready >= count {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {ready} of {count} warm pods ready after 180 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let runs = cli.count(cli.runs, 100, 20);
    let burst = cli.count(cli.burst, 200, 40);
    let objects = cli.count(cli.objects, 10_000, 1_000);
    let bench_started = Instant::now();

    let (executor, executor_profile) = env::built_binary("outlayer-executor", cli.binaries)?;
    let (operator, operator_profile) = env::built_binary("outlayer-operator", cli.binaries)?;
    let guest = env::target_dir().join("wasm32-wasip1/release/example-echo.wasm");
    anyhow::ensure!(
        guest.exists(),
        "{} is missing: run scripts/build-wasm",
        guest.display()
    );
    println!(
        "{}",
        machine::describe((&executor, executor_profile), (&operator, operator_profile))
    );
    let config = OperatorConfig {
        executor_cpu: cli
            .executor_cpu
            .clone()
            .unwrap_or_else(|| OperatorConfig::default().executor_cpu),
        ..OperatorConfig::default()
    };
    println!(
        "settings: runs {runs} (pause {} ms), burst {burst}, objects {objects}, create concurrency {}, \
         executor pod CPU {}, max concurrent reconciles {}",
        cli.pause_ms, cli.create_concurrency, config.executor_cpu, config.max_concurrent_reconciles
    );

    let env = if cli.real_node {
        println!("[setup] starting the control plane and a real node");
        let bin_dir = executor
            .parent()
            .context("the executor binary has no directory")?;
        BenchEnv::start_real_node(bin_dir, false).await?
    } else {
        println!("[setup] starting the control plane and node agent");
        BenchEnv::start(&executor, None).await?
    };
    let config = OperatorConfig {
        executor_image: env.executor_image.clone(),
        ..config
    };
    let wasm_sha256 = env.publish(&guest)?;
    let client = env.cluster.client();
    println!(
        "[setup] ready after {:.1} s; echo module {wasm_sha256} in the cache",
        bench_started.elapsed().as_secs_f64()
    );

    let mut report = Vec::new();
    let mut passes = vec![("pool off", "", Vec::new())];
    if let Some(pool) = &cli.warm_pool {
        let classes = pool
            .split(',')
            .map(|pair| {
                let (class, count) = pair
                    .split_once('=')
                    .with_context(|| format!("--warm-pool {pair:?} is not CLASS_MB=COUNT"))?;
                anyhow::Ok((class.trim().parse()?, count.trim().parse()?))
            })
            .collect::<anyhow::Result<Vec<(u32, u32)>>>()?;
        passes.push(("pool on", "warm-", classes));
    }
    for (label, prefix, classes) in passes {
        if !(cli.runs_step("latency") || cli.runs_step("throughput")) {
            break;
        }
        let mut config = OperatorConfig {
            cache_mount_path: Some(env.cache.path().to_path_buf()),
            ..config.clone()
        };
        config.warm_pool.classes = classes.clone();
        let mode = if cli.warm_pool.is_some() {
            format!(" [{label}]")
        } else {
            String::new()
        };
        let ctx = Arc::new(Context::new(
            client.clone(),
            config,
            Some("bench".to_string()),
        ));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let operator_task = tokio::spawn(controllers::run(ctx.clone(), NAMESPACE, async move {
            let _ = stopped.await;
        }));
        let api: Api<ExecutionRequest> = Api::namespaced(client.clone(), NAMESPACE);
        let observer = observe::observe_completions(api.clone()).await?;
        if !classes.is_empty() {
            let wanted: usize = classes.iter().map(|(_, n)| *n as usize).sum();
            println!("[setup{mode}] waiting for {wanted} ready warm pods");
            warm_pool_ready(&client, wanted).await?;
        }

        if cli.runs_step("latency") {
            println!("[1/3 latency{mode}] {runs} warm-cache echo runs, one after another");
            let pause = Duration::from_millis(cli.pause_ms);
            let figures = latency::run(&api, prefix, &observer, &wasm_sha256, runs, pause).await?;
            report.push(format!(
                "warm-cache latency{mode}, client clock:        {}",
                figures.client
            ));
            report.push(format!(
                "warm-cache latency{mode}, server timestamps:   {}",
                figures.server
            ));
            println!("  {}", report[report.len() - 2]);
            println!("  {}", report[report.len() - 1]);
        }
        if cli.runs_step("throughput") {
            if !classes.is_empty() {
                let wanted: usize = classes.iter().map(|(_, n)| *n as usize).sum();
                warm_pool_ready(&client, wanted).await?;
            }
            println!("[2/3 throughput{mode}] {burst} echo requests created at once");
            let figures = throughput::run(
                &api,
                prefix,
                &observer,
                &wasm_sha256,
                burst,
                cli.create_concurrency,
            )
            .await?;
            report.push(format!(
                "throughput{mode}: {} requests in {:.2} s = {:.1} executions/s (created in {:.2} s)",
                figures.requests,
                figures.total_time.as_secs_f64(),
                figures.per_second,
                figures.create_time.as_secs_f64()
            ));
            report.push(format!(
                "burst latency per request{mode}:               {}",
                figures.latency
            ));
            println!("  {}", report[report.len() - 2]);
            println!("  {}", report[report.len() - 1]);
        }
        if !classes.is_empty() {
            let metrics = ctx.metrics.encode();
            let claims: Vec<&str> = metrics
                .lines()
                .filter(|l| l.starts_with("outlayer_warm_claims_total"))
                .collect();
            report.push(format!("warm pool claims{mode}: {}", claims.join(", ")));
            println!("  {}", report[report.len() - 1]);
        }
        drop(observer);
        let _ = stop.send(());
        operator_task
            .await
            .context("the in-process controllers panicked")?;
    }

    if cli.runs_step("memory") {
        println!(
            "[3/3 memory] {objects} finished ExecutionRequests in {}, operator binary as its own process",
            memory::NAMESPACE
        );
        env.cluster
            .create_namespace(memory::NAMESPACE, &[])
            .await
            .with_context(|| format!("create namespace {}", memory::NAMESPACE))?;
        let command = memory::OperatorCommand {
            binary: &operator,
            kubeconfig: env.cluster.kubeconfig_path(),
        };
        let figures = memory::run(
            client.clone(),
            &command,
            &wasm_sha256,
            objects,
            cli.create_concurrency,
        )
        .await?;
        report.push(format!(
            "operator memory, idle (empty namespace): {}",
            figures.idle
        ));
        report.push(format!(
            "operator memory, {} objects reconciled:  {} (all reconciled {:.1} s after start; \
             objects created in {:.1} s, ~{} B of JSON each)",
            figures.objects,
            figures.after_reconcile,
            figures.reconcile_time.as_secs_f64(),
            figures.create_time.as_secs_f64(),
            figures.object_json_bytes
        ));
        report.push(format!(
            "operator memory, 10 s later:            {}",
            figures.steady
        ));
        for line in &report[report.len() - 3..] {
            println!("  {line}");
        }
    }

    println!(
        "\nsummary (total {:.0} s):",
        bench_started.elapsed().as_secs_f64()
    );
    for line in &report {
        println!("  {line}");
    }
    Ok(())
}
