//! A lock-free latency histogram: log-linear buckets with 1/128 (< 0.8 %) relative precision,
//! exact below 256, recorded from many tasks at once.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Sub-buckets per power of two.
const SUB: u64 = 128;
/// Buckets for every `u64` value.
const BUCKETS: usize = 7424;

/// Counts of values (microseconds, by convention) in buckets.
#[derive(Debug)]
pub(crate) struct Histogram {
    counts: Box<[AtomicU64]>,
    total: AtomicU64,
    max: AtomicU64,
}

fn index(v: u64) -> usize {
    if v < 2 * SUB {
        return v as usize;
    }
    let e = 63 - u64::from(v.leading_zeros());
    let shift = e - 7;
    ((e - 7) * SUB + (v >> shift)) as usize
}

/// The smallest value that falls into bucket `i`.
fn lower(i: usize) -> u64 {
    let i = i as u64;
    if i < 2 * SUB {
        return i;
    }
    let e = i / SUB + 6;
    (i % SUB + SUB) << (e - 7)
}

impl Histogram {
    /// An empty histogram.
    pub(crate) fn new() -> Self {
        Self {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            total: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }

    /// Counts one value.
    pub(crate) fn record(&self, v: u64) {
        self.counts[index(v).min(BUCKETS - 1)].fetch_add(1, Relaxed);
        self.total.fetch_add(1, Relaxed);
        self.max.fetch_max(v, Relaxed);
    }

    /// Values counted.
    pub(crate) fn count(&self) -> u64 {
        self.total.load(Relaxed)
    }

    /// Largest value counted.
    pub(crate) fn max(&self) -> u64 {
        self.max.load(Relaxed)
    }

    /// The value at quantile `q` (0..=1): the lower bound of its bucket, or 0 when empty.
    pub(crate) fn quantile(&self, q: f64) -> u64 {
        let total = self.count();
        if total == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c.load(Relaxed);
            if seen >= rank {
                return lower(i).min(self.max());
            }
        }
        self.max()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_precise() {
        for v in [
            0,
            1,
            255,
            256,
            257,
            383,
            384,
            1000,
            12_345,
            1 << 40,
            u64::MAX,
        ] {
            let i = index(v);
            assert!(i < BUCKETS, "{v}");
            assert!(lower(i) <= v, "{v}");
            if i + 1 < BUCKETS {
                assert!(lower(i + 1) > v, "{v}");
            }
            assert!((v - lower(i)) as f64 <= v as f64 / 128.0, "{v}");
        }
        for i in 1..BUCKETS {
            assert!(lower(i) > lower(i - 1));
        }
    }

    #[test]
    fn quantiles() {
        let h = Histogram::new();
        assert_eq!(h.quantile(0.5), 0);
        for v in 1..=1000 {
            h.record(v);
        }
        assert_eq!(h.count(), 1000);
        assert_eq!(h.quantile(0.5), 500);
        let p99 = h.quantile(0.99);
        assert!((984..=990).contains(&p99), "{p99}");
        assert_eq!(h.quantile(1.0), 1000);
        assert_eq!(h.max(), 1000);
    }
}
