//! `outlayer-demo`: boots the local control plane and localnet, installs the chart, sends one on-chain
//! request from a user account and prints its progress and outcome. `scripts/demo` builds what it
//! needs first.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use outlayer_demo::{Demo, DemoOptions, Example, Log, NAMESPACE};

#[derive(Debug, Parser)]
#[command(
    name = "outlayer-demo",
    about = "OutLayer end to end on this machine: control plane, localnet, helm install, one on-chain request"
)]
struct Args {
    /// Leave everything running after the outcome (until Ctrl-C) and print how to look at it.
    #[arg(long)]
    keep: bool,
    /// The localnet's block time. A request must be answered within 200 blocks; below ~400 ms an
    /// uncached compile no longer fits the operator's compile budget and the request expires (the
    /// contract refunds all but the base fee).
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(50..=5_000))]
    block_time_ms: u64,
    /// The JSON document the json-transform example summarises (default: a small order).
    #[arg(long)]
    input: Option<String>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let kept = AtomicBool::new(false);
    // Ctrl-C drops the running demo, which stops every process it started and removes its files.
    let result = tokio::select! {
        result = run(args, &kept) => result,
        _ = tokio::signal::ctrl_c() => {
            if kept.load(Ordering::SeqCst) {
                println!("\nstopping…");
                Ok(())
            } else {
                Err(anyhow::anyhow!("interrupted; everything the demo started is being stopped"))
            }
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The cause chain, without the backtrace anyhow adds under RUST_BACKTRACE: the messages
        // already say what failed and what to run.
        Err(error) => {
            eprintln!("error: {error}");
            for cause in error.chain().skip(1) {
                eprintln!("  caused by: {cause}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}

/// The demo; with `--keep` it does not return once the outcome is shown (Ctrl-C ends it).
async fn run(args: Args, kept: &AtomicBool) -> anyhow::Result<()> {
    // The harness logs through tracing; quiet unless asked for with RUST_LOG.
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let log = Log::new();
    let options = DemoOptions {
        block_time: Duration::from_millis(args.block_time_ms),
        example: Example::json_transform(),
        input: args.input,
    };
    let mut demo = Demo::start(options, log)
        .await
        .context("starting the demo")?;
    let outcome = match demo.run_request().await {
        Ok(outcome) => outcome,
        Err(error) => {
            eprintln!("---- operator log ----\n{}", demo.operator_log());
            return Err(error).context("the on-chain request");
        }
    };
    demo.stop_watching();
    log.line("done");
    println!();
    println!("$ kubectl -n {NAMESPACE} get exr -o wide");
    match demo
        .kubectl()
        .run(&["-n", NAMESPACE, "get", "exr", "-o", "wide"], None)
    {
        Ok(table) => print!("{table}"),
        Err(error) => println!("({error})"),
    }
    println!();
    println!("{outcome}");
    if !(outcome.succeeded() && outcome.reported() == Some(true)) {
        anyhow::bail!(
            "{} ended {:?} (Reported={:?}): {}",
            outcome.execution_name,
            outcome.execution.phase,
            outcome.reported(),
            outcome.execution.message.as_deref().unwrap_or("no message")
        );
    }
    // Anyone can check the answer from the chain alone: rebuild, check the seed, replay.
    for round in ["cold", "with the module cached"] {
        let verified = demo
            .verify(&outcome.tx_hash)
            .await
            .context("outlayer-operator verify")?;
        println!(
            "
$ {}   # {round}: {:.2} s, exit {}
{}",
            verified.command,
            verified.elapsed.as_secs_f64(),
            verified.code,
            verified.report.trim_end()
        );
        if verified.code != 0 {
            anyhow::bail!("verify did not confirm the answer (exit {})", verified.code);
        }
    }
    println!(
        "\nWhole run {:.1} s. What ran where: the real Kubernetes control plane (etcd, \
         kube-apiserver, controller-manager, scheduler) as local processes; the operator, the fetch and \
         build Jobs and the executor as containers (images built from the repository's Dockerfiles) on a \
         real node (kubelet, containerd, runc, kube-proxy, NetworkPolicies enforced by kube-router); a \
         localnet running the real contract wasm in nearcore's VM.",
        log.elapsed().as_secs_f64()
    );

    if args.keep {
        let kubectl = demo.kubectl();
        let kubectl_dir = kubectl
            .bin
            .parent()
            .map_or_else(String::new, |dir| format!("{}:", dir.display()));
        println!(
            "\nStill running (--keep). In another shell:\n\
             \n  export KUBECONFIG={} PATH={kubectl_dir}$PATH\
             \n  kubectl -n {NAMESPACE} get exr -o wide\
             \n  kubectl -n {NAMESPACE} describe exr {}\
             \n  kubectl -n {NAMESPACE} get cjob,pods,jobs\
             \n  kubectl -n {NAMESPACE} get events --sort-by=.lastTimestamp\
             \n  curl -s http://{}/metrics | grep ^outlayer_\
             \n\nNEAR RPC (localnet): {} — contract {}, user {}\
             \nFiles (repository, cache, values): {}\
             \nCtrl-C stops and removes everything.",
            demo.kubeconfig_path().display(),
            outcome.execution_name,
            demo.operator_address(),
            demo.chain().rpc_url(),
            outlayer_demo::CONTRACT,
            outlayer_demo::USER,
            demo.work_dir().display(),
        );
        kept.store(true, Ordering::SeqCst);
        std::future::pending::<()>().await;
    }
    Ok(())
}
