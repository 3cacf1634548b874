//! A lock-free latency histogram for counters that thousands of tasks update at once.
//!
//! The worker runtime records how long each claim took, so `conftag bench fleet` can report
//! claim latency percentiles of a whole simulated fleet without a lock or a sample vector per
//! worker: buckets are log-linear (8 per doubling, about ±4.5% resolution) from 1 µs to about
//! 70 s, each an atomic counter. A snapshot is a copy of the counts; the difference of two
//! snapshots covers the calls made between them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Buckets per doubling of the latency.
const PER_OCTAVE: f64 = 8.0;
/// Enough buckets for 2^26 µs (about 67 s); longer calls land in the last one.
const BUCKETS: usize = 26 * 8 + 1;

/// Counts of calls per latency bucket.
#[derive(Debug)]
pub struct LatencyHistogram {
    counts: Vec<AtomicU64>,
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

fn bucket_of(d: Duration) -> usize {
    let us = d.as_secs_f64() * 1e6;
    if us <= 1.0 {
        return 0;
    }
    ((us.log2() * PER_OCTAVE).ceil() as usize).min(BUCKETS - 1)
}

/// The upper edge of a bucket.
fn bucket_upper(i: usize) -> Duration {
    Duration::from_secs_f64(2f64.powf(i as f64 / PER_OCTAVE) / 1e6)
}

impl LatencyHistogram {
    pub fn record(&self, d: Duration) {
        self.counts[bucket_of(d)].fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> LatencySnapshot {
        LatencySnapshot {
            counts: self
                .counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
        }
    }
}

/// The counts of a [`LatencyHistogram`] at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LatencySnapshot {
    counts: Vec<u64>,
}

impl Default for LatencySnapshot {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
        }
    }
}

impl LatencySnapshot {
    /// Add another snapshot's counts (e.g. of another worker).
    pub fn add(&mut self, other: &LatencySnapshot) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    /// The calls counted in `self` but not in `earlier`.
    pub fn since(&self, earlier: &LatencySnapshot) -> LatencySnapshot {
        LatencySnapshot {
            counts: self
                .counts
                .iter()
                .zip(&earlier.counts)
                .map(|(a, b)| a.saturating_sub(*b))
                .collect(),
        }
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The latency below which a share `q` (0..=1) of the calls fell (a bucket's upper edge),
    /// or `None` without calls.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64 * q).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(bucket_upper(i));
            }
        }
        Some(bucket_upper(BUCKETS - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_a_bucket() {
        let h = LatencyHistogram::default();
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        let s = h.snapshot();
        assert_eq!(s.count(), 100);
        let p50 = s.quantile(0.5).unwrap().as_secs_f64() * 1e3;
        let p99 = s.quantile(0.99).unwrap().as_secs_f64() * 1e3;
        assert!((50.0..=50.0 * 1.1).contains(&p50), "{p50}");
        assert!((99.0..=99.0 * 1.1).contains(&p99), "{p99}");
        let later = h.snapshot();
        assert_eq!(later.since(&s).count(), 0);
        h.record(Duration::from_secs(1000));
        assert_eq!(h.snapshot().since(&s).count(), 1);
        assert!(LatencySnapshot::default().quantile(0.5).is_none());
    }
}
