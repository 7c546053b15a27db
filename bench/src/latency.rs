//! Latency samples and their percentiles.

use std::time::Duration;

/// Every sample of one measurement, kept whole (a run takes at most a few million), so
/// percentiles are exact rather than read from buckets.
#[derive(Debug, Clone, Default)]
pub struct Latencies {
    samples: Vec<Duration>,
    sorted: bool,
}

/// What a table prints of a set of samples.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Summary {
    pub count: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

impl Latencies {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn record(&mut self, sample: Duration) {
        self.samples.push(sample);
        self.sorted = false;
    }

    pub fn extend(&mut self, other: Latencies) {
        self.samples.extend(other.samples);
        self.sorted = false;
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// The nearest-rank percentile: the smallest sample with at least `percent` % of
    /// the samples at or below it (`percentile(100.0)` is the maximum). `None` without
    /// samples.
    pub fn percentile(&mut self, percent: f64) -> Option<Duration> {
        if self.samples.is_empty() {
            return None;
        }
        if !self.sorted {
            self.samples.sort_unstable();
            self.sorted = true;
        }
        let count = self.samples.len();
        let rank = (percent.clamp(0.0, 100.0) / 100.0 * count as f64).ceil() as usize;
        Some(self.samples[rank.clamp(1, count) - 1])
    }

    /// Count, median, 99th percentile and maximum (zeros without samples).
    pub fn summary(&mut self) -> Summary {
        let millis = |sample: Option<Duration>| sample.map_or(0.0, |d| d.as_secs_f64() * 1e3);
        Summary {
            count: self.samples.len(),
            p50_ms: millis(self.percentile(50.0)),
            p99_ms: millis(self.percentile(99.0)),
            max_ms: millis(self.percentile(100.0)),
        }
    }
}

impl Summary {
    /// `p50 / p99 ms`, e.g. `3.2 / 17.9 ms`.
    pub fn p50_p99(&self) -> String {
        format!("{:.1} / {:.1} ms", self.p50_ms, self.p99_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn millis(values: impl IntoIterator<Item = u64>) -> Latencies {
        let mut latencies = Latencies::new();
        for value in values {
            latencies.record(Duration::from_millis(value));
        }
        latencies
    }

    #[test]
    fn percentiles_are_nearest_rank_over_the_sorted_samples() {
        // 1..=100 ms in reverse order: the p-th percentile is p ms.
        let mut latencies = millis((1..=100).rev());
        assert_eq!(latencies.percentile(50.0), Some(Duration::from_millis(50)));
        assert_eq!(latencies.percentile(99.0), Some(Duration::from_millis(99)));
        assert_eq!(
            latencies.percentile(100.0),
            Some(Duration::from_millis(100))
        );
        assert_eq!(latencies.percentile(0.0), Some(Duration::from_millis(1)));
        assert_eq!(latencies.percentile(99.5), Some(Duration::from_millis(100)));
    }

    #[test]
    fn one_slow_sample_in_a_hundred_is_the_maximum_not_the_p99() {
        let mut latencies = millis(std::iter::repeat_n(2, 99).chain([500]));
        let summary = latencies.summary();
        assert_eq!(summary.p99_ms, 2.0);
        assert_eq!(summary.max_ms, 500.0);
        // With two slow samples in a hundred, the p99 is slow.
        let mut latencies = millis(std::iter::repeat_n(2, 98).chain([500, 600]));
        assert_eq!(latencies.summary().p99_ms, 500.0);
    }

    #[test]
    fn a_single_sample_is_every_percentile_and_no_sample_is_none() {
        let mut one = millis([7]);
        assert_eq!(one.percentile(1.0), Some(Duration::from_millis(7)));
        assert_eq!(one.percentile(99.0), Some(Duration::from_millis(7)));
        assert_eq!(Latencies::new().percentile(50.0), None);
        assert_eq!(Latencies::new().summary().count, 0);
    }

    #[test]
    fn samples_added_after_a_percentile_are_sorted_in() {
        let mut latencies = millis([5, 1, 3]);
        assert_eq!(latencies.percentile(100.0), Some(Duration::from_millis(5)));
        latencies.extend(millis([9, 0]));
        assert_eq!(latencies.percentile(100.0), Some(Duration::from_millis(9)));
        assert_eq!(latencies.percentile(50.0), Some(Duration::from_millis(3)));
    }
}
