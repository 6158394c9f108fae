//! On-chain latency: one request at a time, from the user's `request_execution` to its resolve.

use std::time::Duration;

use crate::measure::{self, Sample};
use crate::setup::ChainBench;
use crate::timeline::Observer;
use crate::user;

/// Bound a hang, not a figure: the yield window is 200 blocks (2 min at 600 ms).
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(300);
const OBSERVE_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Figures {
    pub samples: Vec<Sample>,
    /// Requests that settled without the operator's resolve (expired, failed to report), and why.
    pub failures: Vec<String>,
}

pub async fn run(
    bench: &ChainBench,
    observer: &Observer,
    runs: usize,
    label: &str,
) -> anyhow::Result<Figures> {
    let mut figures = Figures {
        samples: Vec::with_capacity(runs),
        failures: Vec::new(),
    };
    let step = (runs / 10).max(1);
    for i in 0..runs {
        match once(bench, observer, &format!("{label} latency {i}")).await? {
            Ok(sample) => figures.samples.push(sample),
            Err(why) => figures.failures.push(why),
        }
        if (i + 1).is_multiple_of(step) || i + 1 == runs {
            let last = figures
                .samples
                .last()
                .map(|s| format!("{:.3} s", s.latency().as_secs_f64()))
                .unwrap_or_else(|| "-".to_string());
            println!(
                "  {}/{runs} done (last latency {last}, {} not resolved)",
                i + 1,
                figures.failures.len()
            );
        }
    }
    Ok(figures)
}

/// One request: `Err` (outer) when the bench itself failed, `Ok(Err)` when the request settled
/// without being resolved (counted, not measured).
pub async fn once(
    bench: &ChainBench,
    observer: &Observer,
    input: &str,
) -> anyhow::Result<Result<Sample, String>> {
    let settled = user::request(
        &bench.user,
        &bench.commit,
        input,
        bench.compile_only,
        SETTLE_TIMEOUT,
    )
    .await?;
    let timeline = observer
        .wait_all(&[settled.execution_name()], OBSERVE_TIMEOUT, |_| {})
        .await?;
    let Some(timeline) = timeline.first() else {
        anyhow::bail!("no timeline for {}", settled.execution_name());
    };
    Ok(measure::sample(bench, &settled, timeline)
        .await
        .map_err(|e| format!("{e:#}")))
}
