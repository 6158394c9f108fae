//! Warm-cache latency: one echo request at a time, from create to `Succeeded=True`.

use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use kube::api::{Api, PostParams};
use outlayer_operator::crd::ExecutionRequest;

use crate::observe::CompletionObserver;
use crate::requests;
use crate::stats::{Summary, summarize};

/// Bounds a hang, not a figure.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

pub struct LatencyFigures {
    /// Client clock: just before the create call → the watch delivering the terminal status.
    pub client: Summary,
    /// Server clock: creationTimestamp → the Succeeded condition's lastTransitionTime (whole seconds).
    pub server: Summary,
}

pub async fn run(
    api: &Api<ExecutionRequest>,
    prefix: &str,
    observer: &CompletionObserver,
    wasm_sha256: &str,
    runs: usize,
    pause: Duration,
) -> anyhow::Result<LatencyFigures> {
    // Not counted: the first run pays for the executor binary and the module entering the page cache.
    let warm_up = once(
        api,
        observer,
        wasm_sha256,
        &format!("{prefix}latency-warm-up"),
    )
    .await?;
    println!(
        "  warm-up run (not counted): {:.3} s",
        warm_up.0.as_secs_f64()
    );
    let mut client = Vec::with_capacity(runs);
    let mut server = Vec::with_capacity(runs);
    let step = (runs / 10).max(1);
    for i in 0..runs {
        tokio::time::sleep(pause).await;
        let (elapsed, on_server) =
            once(api, observer, wasm_sha256, &format!("{prefix}latency-{i}")).await?;
        client.push(elapsed);
        server.push(on_server);
        if (i + 1) % step == 0 || i + 1 == runs {
            let so_far = summarize(&client).context("no latency samples")?;
            println!(
                "  {}/{runs} runs: last {:.3} s, p50 so far {:.3} s",
                i + 1,
                elapsed.as_secs_f64(),
                so_far.p50.as_secs_f64()
            );
        }
    }
    Ok(LatencyFigures {
        client: summarize(&client).context("no latency samples")?,
        server: summarize(&server).context("no latency samples")?,
    })
}

/// One request created and waited for: (client-clock latency, server-clock latency).
async fn once(
    api: &Api<ExecutionRequest>,
    observer: &CompletionObserver,
    wasm_sha256: &str,
    name: &str,
) -> anyhow::Result<(Duration, Duration)> {
    let request = requests::echo(name, wasm_sha256);
    let started = Instant::now();
    api.create(&PostParams::default(), &request)
        .await
        .with_context(|| format!("create ExecutionRequest {name}"))?;
    let outcome = observer
        .wait_all(&[name.to_string()], RUN_TIMEOUT, |_| {})
        .await?
        .pop()
        .with_context(|| format!("no outcome for {name}"))?;
    if !outcome.succeeded {
        bail!("{name} did not succeed: {}", outcome.message);
    }
    let on_server = outcome
        .server_latency()
        .with_context(|| format!("{name} has no creation or Succeeded transition time"))?;
    Ok((outcome.observed.duration_since(started), on_server))
}
