//! One request's figures on the chain's clock: its block, the resolve transaction's block, the block
//! the user's answer came in; and, on the same wall clock, when the bench saw the ExecutionRequest
//! created, executed and reported.

use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use e2e_bench::stats::{percentile, summarize};
use near_primitives::hash::CryptoHash;

use crate::setup::{BlockId, ChainBench, OPERATOR, account};
use crate::timeline::Timeline;
use crate::user::Settled;

#[derive(Clone, Copy, Debug)]
pub struct Block {
    pub height: u64,
    /// Nanoseconds since the Unix epoch, as the localnet stamped the block.
    pub timestamp_ns: u64,
}

pub struct Sample {
    /// The block the contract stored the request in.
    pub request: Block,
    /// The block that included the operator's `resolve_execution` transaction.
    pub resolve: Block,
    /// The block whose receipt (the contract's callback, `execution_completed`) gave the user's
    /// transaction its answer.
    pub answer: Option<Block>,
    pub seen: SystemTime,
    pub executed: Option<SystemTime>,
    pub finished: SystemTime,
    pub cache_hit: bool,
}

impl Sample {
    /// Request block → resolve transaction's block: the on-chain latency.
    pub fn latency(&self) -> Duration {
        nanos_between(self.request.timestamp_ns, self.resolve.timestamp_ns)
    }
}

/// The figures of one settled request, or why it has none (not resolved: expired, failed to report).
pub async fn sample(
    bench: &ChainBench,
    settled: &Settled,
    timeline: &Timeline,
) -> anyhow::Result<Sample> {
    let name = settled.execution_name();
    if let Err(why) = &settled.answered {
        anyhow::bail!("{name}: the user's call {why} ({})", timeline.message);
    }
    let (Some(tx_hash), Some(true), Some(finished)) =
        (&timeline.tx_hash, timeline.reported, timeline.finished)
    else {
        anyhow::bail!(
            "{name} was not resolved by the operator: phase {:?}, Reported {:?}: {}",
            timeline.phase,
            timeline.reported,
            timeline.message
        );
    };
    let height = timeline
        .block_height
        .with_context(|| format!("{name} has no spec.onChain.blockHeight"))?;
    let request = bench
        .localnet
        .block(BlockId::Height(height))
        .await?
        .map(record)
        .with_context(|| format!("block {height} ({name}'s request) is unknown to the localnet"))?;
    let hash = CryptoHash::from_str(tx_hash)
        .map_err(|e| anyhow::anyhow!("{name}: status.txHash {tx_hash:?} is not a hash: {e}"))?;
    let resolve_tx = bench
        .viewer
        .transaction_status(hash, &account(OPERATOR)?)
        .await
        .with_context(|| format!("look up {name}'s resolve transaction {tx_hash}"))?
        .with_context(|| format!("{name}'s resolve transaction {tx_hash} is unknown"))?;
    let resolve = block_by_hash(bench, &resolve_tx.outcome.transaction_outcome.block_hash)
        .await?
        .with_context(|| format!("the block of {name}'s resolve transaction {tx_hash}"))?;
    let answer_block = settled
        .outcome
        .outcome
        .receipts_outcome
        .iter()
        .find(|receipt| {
            receipt
                .outcome
                .logs
                .iter()
                .any(|line| line.contains("\"execution_completed\""))
        })
        .map(|receipt| receipt.block_hash);
    let answer = match answer_block {
        Some(hash) => block_by_hash(bench, &hash).await?,
        None => None,
    };
    Ok(Sample {
        request,
        resolve,
        answer,
        seen: timeline.seen,
        executed: timeline.executed,
        finished,
        cache_hit: timeline.cache_hit == Some(true),
    })
}

fn record((height, timestamp_ns): (u64, u64)) -> Block {
    Block {
        height,
        timestamp_ns,
    }
}

async fn block_by_hash(bench: &ChainBench, hash: &CryptoHash) -> anyhow::Result<Option<Block>> {
    Ok(bench
        .localnet
        .block(BlockId::Hash(*hash))
        .await?
        .map(record))
}

fn nanos_between(from_ns: u64, to_ns: u64) -> Duration {
    Duration::from_nanos(to_ns.saturating_sub(from_ns))
}

fn wall_since(from_ns: u64, at: SystemTime) -> Duration {
    let at_ns = at
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or_default();
    nanos_between(from_ns, at_ns)
}

/// Printable lines: the on-chain latency, the user's answer, and the split of the way there.
pub fn describe(samples: &[Sample]) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = |label: &str, values: Vec<Duration>| {
        if let Some(summary) = summarize(&values) {
            lines.push(format!("{label:<44}{summary}"));
        }
    };
    line(
        "request block → resolve tx block:",
        samples.iter().map(Sample::latency).collect(),
    );
    line(
        "request block → user's answer (callback):",
        samples
            .iter()
            .filter_map(|s| {
                s.answer
                    .map(|a| nanos_between(s.request.timestamp_ns, a.timestamp_ns))
            })
            .collect(),
    );
    line(
        "  split: → ExecutionRequest seen",
        samples
            .iter()
            .map(|s| wall_since(s.request.timestamp_ns, s.seen))
            .collect(),
    );
    line(
        "  split: → Executed=True seen",
        samples
            .iter()
            .filter_map(|s| Some(wall_since(s.request.timestamp_ns, s.executed?)))
            .collect(),
    );
    line(
        "  split: → Reported (terminal) seen",
        samples
            .iter()
            .map(|s| wall_since(s.request.timestamp_ns, s.finished))
            .collect(),
    );
    let blocks: Vec<u64> = samples
        .iter()
        .map(|s| s.resolve.height.saturating_sub(s.request.height))
        .collect();
    if let Some(blocks) = block_counts(&blocks) {
        lines.push(format!("{:<44}{blocks}", "blocks, request → resolve tx:"));
    }
    let hits = samples.iter().filter(|s| s.cache_hit).count();
    lines.push(format!(
        "{:<44}{hits} of {} (a miss would include a compile)",
        "cache hits:",
        samples.len()
    ));
    lines
}

/// Block distances: how many blocks a request waited for its resolve.
fn block_counts(blocks: &[u64]) -> Option<String> {
    let mut sorted = blocks.to_vec();
    sorted.sort_unstable();
    let (&min, &max) = (sorted.first()?, sorted.last()?);
    Some(format!(
        "p50 {}  p90 {}  p99 {}  max {}  (min {})",
        percentile(&sorted, 50),
        percentile(&sorted, 90),
        percentile(&sorted, 99),
        max,
        min
    ))
}
