//! A lock-free histogram for connection timings, cheap enough to update once per connection on
//! any thread, read at scrape time by the admin endpoint.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Bucket upper bounds in seconds for connect times: backend connects on a LAN take well under a
/// millisecond; anything near the connect timeout (2 s by default) is a problem.
pub(crate) const CONNECT_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// Bucket upper bounds in seconds for whole connections: from one request to long-lived streams.
pub(crate) const DURATION_BUCKETS: &[f64] =
    &[0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 3600.0];

/// Counts of observations per bucket, plus their count and sum.
#[derive(Debug)]
pub(crate) struct Histogram {
    bounds: &'static [f64],
    /// Per bucket (not cumulative), plus one for values above the last bound.
    counts: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

/// A histogram read at one moment, in Prometheus' shape.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct HistogramSnapshot {
    /// `(upper bound in seconds, observations at or below it)`, cumulative, ending with +Inf.
    pub buckets: Vec<(f64, u64)>,
    /// Number of observations.
    pub count: u64,
    /// Sum of the observations, in seconds.
    pub sum: f64,
}

impl Histogram {
    /// An empty histogram with these bucket upper bounds (seconds, increasing).
    pub(crate) fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub(crate) fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self.bounds.iter().position(|&b| secs <= b).unwrap_or(self.bounds.len());
        self.counts[i].fetch_add(1, Relaxed);
        self.sum_nanos.fetch_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX), Relaxed);
    }

    /// Reads the histogram.
    pub(crate) fn snapshot(&self) -> HistogramSnapshot {
        let mut cumulative = 0;
        let mut buckets = Vec::with_capacity(self.counts.len());
        for (i, c) in self.counts.iter().enumerate() {
            cumulative += c.load(Relaxed);
            buckets.push((self.bounds.get(i).copied().unwrap_or(f64::INFINITY), cumulative));
        }
        HistogramSnapshot {
            buckets,
            count: cumulative,
            sum: self.sum_nanos.load(Relaxed) as f64 / 1e9,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_cumulative_and_end_with_infinity() {
        let h = Histogram::new(&[0.01, 0.1]);
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_millis(10));
        h.observe(Duration::from_millis(50));
        h.observe(Duration::from_secs(3));
        let s = h.snapshot();
        assert_eq!(s.buckets, vec![(0.01, 2), (0.1, 3), (f64::INFINITY, 4)]);
        assert_eq!(s.count, 4);
        assert!((s.sum - 3.065).abs() < 1e-9);
    }
}
