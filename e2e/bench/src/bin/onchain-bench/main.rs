//! `onchain-bench`: the on-chain path's figures (issue 6's benchmarks) — latency from a request's
//! block to its resolve transaction's block with a warm cache, and sustained resolves/s — on the
//! local control plane and the test localnet running the real contract. Prints; asserts nothing.
//! See e2e/bench/README.md for what each figure means.

mod latency;
mod measure;
mod setup;
mod throughput;
mod timeline;
mod user;

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use e2e_bench::apiserver::RequestCounts;
use e2e_bench::cpu::CpuSnapshot;
use e2e_bench::env::{self, NAMESPACE};
use e2e_bench::machine;
use kube::api::Api;
use outlayer_operator::crd::ExecutionRequest;

use crate::setup::ChainBench;

/// How many kinds of API request the report names besides the total (all of them, in practice:
/// the point is to see which client's traffic grows with requests).
const API_KINDS_SHOWN: usize = 40;

#[derive(Parser)]
#[command(
    name = "onchain-bench",
    about = "Measures on-chain latency (request block → resolve block) and resolves/s on a localnet"
)]
struct Cli {
    /// Sequential requests for the latency figures (default 50; 10 with --quick).
    #[arg(long)]
    runs: Option<usize>,
    /// Requests sent at once for the throughput figure (default 100; 20 with --quick).
    #[arg(long)]
    burst: Option<usize>,
    /// Smaller counts, for checking the bench itself.
    #[arg(long)]
    quick: bool,
    /// The operator's chain poll interval in ms; several (comma-separated) run every step once per
    /// value, restarting the in-process operator in between.
    #[arg(long, value_delimiter = ',', default_value = "1000")]
    poll_interval_ms: Vec<u64>,
    /// How many access keys sign resolves (the operator's own key plus function-call keys the
    /// bench adds); several (comma-separated) run every step once per value.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    signing_keys: Vec<usize>,
    /// The localnet's block time in ms (also the operator's expected block time).
    #[arg(long, default_value_t = 600)]
    block_time_ms: u64,
    /// Run pods as containers on a real node (kubelet, containerd, runc; needs root) with the images
    /// built from the Dockerfiles, instead of under the node agent: the fetch Job clones from a git
    /// mirror on the node over the pod network, the build Job compiles in the compiler image. The
    /// images are built from the directory of the executor binary, which must also hold the
    /// compiler and operator.
    #[arg(long)]
    real_node: bool,
    /// Where the executor (and the other binaries the images are built from) come from: `auto`
    /// takes `target/release` when the binary is there, else `target/debug`.
    #[arg(long, value_enum, default_value_t = env::Binaries::Auto)]
    binaries: env::Binaries,
    /// Requests ask only to compile (`params.compile_only`; the module is cached): nothing runs, so
    /// the figures are the watcher → report → resolve path alone, without pods.
    #[arg(long)]
    compile_only: bool,
    /// Run the localnet as an `e2e-localnet` process of its own (built next to this binary: `cargo
    /// build [--release] -p e2e-localnet`) instead of in this process, so its CPU time is reported
    /// apart from the operator's and `perf record -p` can profile it alone.
    #[arg(long)]
    localnet_process: bool,
    /// How many reconciles the operator runs at once (its `--max-concurrent-reconciles`; default:
    /// the operator's).
    #[arg(long)]
    concurrent_reconciles: Option<u16>,
    /// Skip steps: latency, throughput (repeatable or comma-separated).
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    anyhow::ensure!(
        !cli.poll_interval_ms.is_empty(),
        "--poll-interval-ms needs a value"
    );
    let runs = cli.count(cli.runs, 50, 10);
    let burst = cli.count(cli.burst, 100, 20);
    let block_time = Duration::from_millis(cli.block_time_ms);
    let bench_started = Instant::now();

    let (executor, executor_profile) = env::built_binary("outlayer-executor", cli.binaries)?;
    let (compiler, compiler_profile) = env::built_binary("outlayer-compiler", cli.binaries)?;
    let contract = env::target_dir().join("near/outlayer_contract.wasm");
    anyhow::ensure!(
        contract.exists(),
        "{} is missing: run scripts/build-wasm",
        contract.display()
    );
    println!("{}", machine::machine());
    println!(
        "builds: executor {executor_profile} ({}), compiler {compiler_profile} ({}), in-process \
         operator (controllers, chain watcher, submitter) and localnet {}",
        executor.display(),
        compiler.display(),
        machine::in_process_profile()
    );
    println!(
        "settings: runs {runs}, burst {burst}, block time {} ms, poll interval(s) {:?} ms, {}, \
         {} concurrent reconciles, operator otherwise at its defaults (chain client, yield planning)",
        cli.block_time_ms,
        cli.poll_interval_ms,
        if cli.compile_only {
            "compile-only requests (nothing runs)"
        } else {
            "requests run the echo guest"
        },
        cli.concurrent_reconciles.unwrap_or_else(|| {
            outlayer_operator::config::OperatorConfig::default().max_concurrent_reconciles
        })
    );

    println!(
        "[setup] starting the control plane, {} and localnet",
        if cli.real_node {
            "a real node"
        } else {
            "node agent"
        }
    );
    let localnet_binary = if cli.localnet_process {
        let binary = std::env::current_exe()
            .context("locate this binary")?
            .with_file_name("e2e-localnet");
        anyhow::ensure!(
            binary.exists(),
            "{} is missing: build it with `cargo build -p e2e-localnet` (with --release for a release bench)",
            binary.display()
        );
        Some(binary)
    } else {
        None
    };
    let mut bench = ChainBench::start(
        block_time,
        &executor,
        &compiler,
        contract,
        cli.real_node,
        localnet_binary.as_deref(),
    )
    .await?;
    if let setup::LocalnetHost::Process(process) = &bench.localnet {
        println!(
            "[setup] localnet in its own process (pid {})",
            process.pid()
        );
    }
    bench.compile_only = cli.compile_only;
    let client = bench.env.cluster.client();
    let api: Api<ExecutionRequest> = Api::namespaced(client.clone(), NAMESPACE);
    let observer = timeline::observe_timelines(api).await?;
    let poll = |ms: u64| Duration::from_millis(ms);
    anyhow::ensure!(
        !cli.signing_keys.is_empty() && !cli.signing_keys.contains(&0),
        "--signing-keys needs values ≥ 1"
    );
    bench
        .add_pool_keys(cli.signing_keys.iter().copied().max().unwrap_or(1))
        .await?;
    let config = |poll_ms: u64| {
        bench.operator_config(poll(poll_ms)).map(|mut config| {
            if let Some(reconciles) = cli.concurrent_reconciles {
                config.max_concurrent_reconciles = reconciles;
            }
            config
        })
    };
    let mut operator =
        bench.start_operator(config(cli.poll_interval_ms[0])?, cli.signing_keys[0])?;
    let compile_time = bench.precompile().await?;
    println!(
        "[setup] ready after {:.1} s; echo compiled ahead of time in {:.1} s (the cache is warm)",
        bench_started.elapsed().as_secs_f64(),
        compile_time.as_secs_f64()
    );
    // Not counted: the first request pays for the first executor start and the module entering the
    // page cache.
    match latency::once(&bench, &observer, "warm-up").await? {
        Ok(sample) => println!(
            "[setup] warm-up request (not counted): {:.3} s from its block to the resolve block",
            sample.latency().as_secs_f64()
        ),
        Err(why) => println!("[setup] warm-up request was not resolved: {why}"),
    }

    let mut report = Vec::new();
    let combinations: Vec<(u64, usize)> = cli
        .poll_interval_ms
        .iter()
        .flat_map(|&poll_ms| cli.signing_keys.iter().map(move |&keys| (poll_ms, keys)))
        .collect();
    for (index, &(poll_ms, keys)) in combinations.iter().enumerate() {
        if index > 0 {
            operator.stop().await?;
            operator = bench.start_operator(config(poll_ms)?, keys)?;
        }
        let label = format!("poll {poll_ms} ms, {keys} signing key(s)");
        if cli.runs_step("latency") {
            println!("[latency, {label}] {runs} requests, one after another");
            let cpu = CpuSnapshot::take();
            let served = RequestCounts::take(&client).await?;
            let figures = latency::run(&bench, &observer, runs, &label).await?;
            let cpu = cpu_use(cpu);
            let served = RequestCounts::take(&client).await?.since(&served);
            report.push(format!(
                "latency, {label}, block {} ms: {} resolved, {} not",
                cli.block_time_ms,
                figures.samples.len(),
                figures.failures.len()
            ));
            report.extend(measure::describe(&figures.samples));
            report.extend(cpu.map(|c| format!("  {c}")));
            report.push(format!("  {}", served.per_request(runs, API_KINDS_SHOWN)));
            report.extend(
                figures
                    .failures
                    .iter()
                    .map(|f| format!("  not resolved: {f}")),
            );
        }
        if cli.runs_step("throughput") {
            println!("[throughput, {label}] {burst} requests sent at once");
            let cpu = CpuSnapshot::take();
            let resigns = operator.chain.resigns();
            let served = RequestCounts::take(&client).await?;
            let figures = throughput::run(&bench, &observer, burst, &label).await?;
            let cpu = cpu_use(cpu);
            let served = RequestCounts::take(&client).await?.since(&served);
            let resigns = operator.chain.resigns() - resigns;
            report.push(format!(
                "throughput, {label}, block {} ms: {} of {} resolved in {:.2} s (first request block → \
                 last resolve block) = {:.1} resolves/s; the burst landed over {:.2} s of blocks; \
                 wall clock first send → last user tx settled {:.1} s",
                cli.block_time_ms,
                figures.samples.len(),
                figures.sent,
                figures.span.as_secs_f64(),
                figures.per_second,
                figures.arrival.as_secs_f64(),
                figures.wall.as_secs_f64()
            ));
            report.push(format!("  operator re-signs during the burst: {resigns}"));
            report.extend(
                measure::describe(&figures.samples)
                    .into_iter()
                    .map(|l| format!("  in the burst, {l}")),
            );
            report.extend(cpu.map(|c| format!("  {c}")));
            report.push(format!("  {}", served.per_request(burst, API_KINDS_SHOWN)));
            report.extend(
                figures
                    .failures
                    .iter()
                    .map(|f| format!("  not resolved: {f}")),
            );
        }
    }
    operator.stop().await?;
    drop(observer);

    println!(
        "\nsummary (total {:.0} s):",
        bench_started.elapsed().as_secs_f64()
    );
    for line in &report {
        println!("  {line}");
    }
    Ok(())
}

/// The CPU used since `start`, as a report line (none where /proc is unreadable).
fn cpu_use(start: Option<CpuSnapshot>) -> Option<String> {
    let end = CpuSnapshot::take()?;
    Some(start?.until(&end).to_string())
}
