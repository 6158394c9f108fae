//! Throughput: a burst of echo requests created at once, run to `Succeeded=True`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::{StreamExt, TryStreamExt};
use kube::api::{Api, PostParams};
use outlayer_operator::crd::ExecutionRequest;

use crate::observe::CompletionObserver;
use crate::requests;
use crate::stats::{Summary, summarize};

pub struct ThroughputFigures {
    pub requests: usize,
    /// First create sent → last create answered.
    pub create_time: Duration,
    /// First create sent → last `Succeeded=True` seen.
    pub total_time: Duration,
    pub per_second: f64,
    /// Each request's own create → Succeeded, under the burst's load.
    pub latency: Summary,
}

pub async fn run(
    api: &Api<ExecutionRequest>,
    prefix: &str,
    observer: &CompletionObserver,
    wasm_sha256: &str,
    count: usize,
    create_concurrency: usize,
) -> anyhow::Result<ThroughputFigures> {
    let names: Vec<String> = (0..count).map(|i| format!("{prefix}burst-{i}")).collect();
    let started = Instant::now();
    let created: HashMap<String, Instant> = futures::stream::iter(names.iter().cloned())
        .map(|name| async move {
            let request = requests::echo(&name, wasm_sha256);
            let sent = Instant::now();
            api.create(&PostParams::default(), &request)
                .await
                .with_context(|| format!("create ExecutionRequest {name}"))?;
            anyhow::Ok((name, sent))
        })
        .buffer_unordered(create_concurrency.max(1))
        .try_collect()
        .await?;
    let create_time = started.elapsed();
    println!(
        "  {count} requests created in {:.2} s",
        create_time.as_secs_f64()
    );
    let step = (count / 10).max(1);
    let mut next_report = step;
    let timeout = Duration::from_secs(120) + Duration::from_secs(count as u64);
    let outcomes = observer
        .wait_all(&names, timeout, |done| {
            if done >= next_report {
                println!(
                    "  {done}/{count} finished after {:.1} s",
                    started.elapsed().as_secs_f64()
                );
                next_report = (done / step + 1) * step;
            }
        })
        .await?;
    let failed: Vec<&str> = names
        .iter()
        .zip(&outcomes)
        .filter(|(_, o)| !o.succeeded)
        .map(|(n, _)| n.as_str())
        .collect();
    if let Some(first) = failed.first() {
        let message = outcomes
            .iter()
            .find(|o| !o.succeeded)
            .map(|o| o.message.as_str())
            .unwrap_or_default();
        bail!(
            "{} of {count} burst requests failed (first: {first}: {message})",
            failed.len()
        );
    }
    let last = outcomes
        .iter()
        .map(|o| o.observed)
        .max()
        .context("no outcomes")?;
    let total_time = last.duration_since(started);
    let latency: Vec<Duration> = names
        .iter()
        .zip(&outcomes)
        .filter_map(|(n, o)| Some(o.observed.duration_since(*created.get(n)?)))
        .collect();
    Ok(ThroughputFigures {
        requests: count,
        create_time,
        total_time,
        per_second: count as f64 / total_time.as_secs_f64(),
        latency: summarize(&latency).context("no burst latency samples")?,
    })
}
