//! Percentiles of latency samples.

use std::time::Duration;

pub struct Summary {
    pub count: usize,
    pub min: Duration,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
    pub mean: Duration,
}

/// Nearest-rank percentiles: every figure is one of the samples, never an interpolation.
pub fn summarize(samples: &[Duration]) -> Option<Summary> {
    let mut sorted = samples.to_vec();
    sorted.sort();
    let (&min, &max) = (sorted.first()?, sorted.last()?);
    let total: Duration = sorted.iter().sum();
    Some(Summary {
        count: sorted.len(),
        min,
        p50: percentile(&sorted, 50),
        p90: percentile(&sorted, 90),
        p99: percentile(&sorted, 99),
        max,
        mean: total / u32::try_from(sorted.len()).unwrap_or(u32::MAX),
    })
}

/// The nearest-rank `p`th percentile of sorted, non-empty `sorted`.
pub fn percentile<T: Copy>(sorted: &[T], p: usize) -> T {
    let rank = (p * sorted.len()).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

impl std::fmt::Display for Summary {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "p50 {:.3} s  p90 {:.3} s  p99 {:.3} s  max {:.3} s  (min {:.3} s, mean {:.3} s, n={})",
            self.p50.as_secs_f64(),
            self.p90.as_secs_f64(),
            self.p99.as_secs_f64(),
            self.max.as_secs_f64(),
            self.min.as_secs_f64(),
            self.mean.as_secs_f64(),
            self.count
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(values: impl IntoIterator<Item = u64>) -> Vec<Duration> {
        values.into_iter().map(Duration::from_millis).collect()
    }

    #[test]
    fn nearest_rank_percentiles_of_a_hundred_samples() {
        // Shuffled on purpose: the summary sorts.
        let samples = ms((1..=100).rev());
        let s = summarize(&samples).unwrap();
        assert_eq!(s.p50, Duration::from_millis(50));
        assert_eq!(s.p90, Duration::from_millis(90));
        assert_eq!(s.p99, Duration::from_millis(99));
        assert_eq!(s.max, Duration::from_millis(100));
        assert_eq!(s.min, Duration::from_millis(1));
        assert_eq!(s.count, 100);
    }

    #[test]
    fn small_sample_sets_report_real_samples() {
        let s = summarize(&ms([30, 10, 20])).unwrap();
        assert_eq!(s.p50, Duration::from_millis(20));
        assert_eq!(s.p99, Duration::from_millis(30));
        assert_eq!(s.mean, Duration::from_millis(20));
        assert!(summarize(&[]).is_none());
    }
}
