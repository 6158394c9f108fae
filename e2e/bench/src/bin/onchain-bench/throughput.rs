//! Sustained resolves/s: a burst of requests sent at once from one user (one client, shared nonce),
//! measured on the chain's clock from the first request's block to the last resolve's block.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt;
use futures::stream::FuturesUnordered;

use crate::latency::SETTLE_TIMEOUT;
use crate::measure::{self, Sample};
use crate::setup::ChainBench;
use crate::timeline::Observer;
use crate::user::{self, Settled};

const OBSERVE_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Figures {
    pub sent: usize,
    pub samples: Vec<Sample>,
    /// Requests that never made it into a block, or settled without the operator's resolve.
    pub failures: Vec<String>,
    /// First request's block → last request's block: how long the burst took to land.
    pub arrival: Duration,
    /// First request's block → last resolve transaction's block.
    pub span: Duration,
    /// Resolves in `span`, per second.
    pub per_second: f64,
    /// Wall clock: the first send → the last user transaction settled.
    pub wall: Duration,
}

pub async fn run(
    bench: &ChainBench,
    observer: &Observer,
    burst: usize,
    label: &str,
) -> anyhow::Result<Figures> {
    let started = Instant::now();
    let mut pending: FuturesUnordered<_> = (0..burst)
        .map(|i| {
            let client = bench.user.clone();
            let commit = bench.commit.clone();
            let compile_only = bench.compile_only;
            let input = format!("{label} burst {i}");
            tokio::spawn(async move {
                user::request(&client, &commit, &input, compile_only, SETTLE_TIMEOUT)
                    .await
                    .map_err(|e| format!("{input}: {e:#}"))
            })
        })
        .collect();
    let mut settled: Vec<Settled> = Vec::with_capacity(burst);
    let mut failures = Vec::new();
    let step = (burst / 5).max(1);
    while let Some(joined) = pending.next().await {
        match joined.context("a request task panicked")? {
            Ok(done) => settled.push(done),
            Err(why) => failures.push(why),
        }
        let count = settled.len() + failures.len();
        if count.is_multiple_of(step) || count == burst {
            println!(
                "  {count}/{burst} user transactions settled after {:.1} s",
                started.elapsed().as_secs_f64()
            );
        }
    }
    let wall = started.elapsed();
    let names: Vec<String> = settled.iter().map(Settled::execution_name).collect();
    let timelines = observer.wait_all(&names, OBSERVE_TIMEOUT, |_| {}).await?;
    let mut samples = Vec::with_capacity(settled.len());
    for (done, timeline) in settled.iter().zip(&timelines) {
        match measure::sample(bench, done, timeline).await {
            Ok(sample) => samples.push(sample),
            Err(why) => failures.push(format!("{why:#}")),
        }
    }
    let first_request = samples.iter().map(|s| s.request.timestamp_ns).min();
    let last_request = samples.iter().map(|s| s.request.timestamp_ns).max();
    let last_resolve = samples.iter().map(|s| s.resolve.timestamp_ns).max();
    let between = |from: Option<u64>, to: Option<u64>| match (from, to) {
        (Some(from), Some(to)) => Duration::from_nanos(to.saturating_sub(from)),
        _ => Duration::ZERO,
    };
    let span = between(first_request, last_resolve);
    let per_second = if span.is_zero() {
        0.0
    } else {
        samples.len() as f64 / span.as_secs_f64()
    };
    Ok(Figures {
        sent: burst,
        samples,
        failures,
        arrival: between(first_request, last_request),
        span,
        per_second,
        wall,
    })
}
