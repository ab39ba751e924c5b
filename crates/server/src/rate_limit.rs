//! In-memory rate limiters: fixed windows for login attempts (per account, per address) and
//! token buckets for authenticated requests (per device). Time is passed in, so the logic is
//! tested without sleeping.
//!
//! State is per process: with several server nodes each counts on its own, which loosens the
//! limits by the node count (acceptable; they exist to make guessing and floods expensive).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Counts events per key in fixed windows; refuses past `max` events per window.
#[derive(Debug)]
pub(crate) struct WindowLimiter<K> {
    max: u32,
    window: Duration,
    entries: Mutex<HashMap<K, (Instant, u32)>>,
}

impl<K: Eq + Hash + Clone> WindowLimiter<K> {
    pub(crate) fn new(max: u32, window: Duration) -> Self {
        Self {
            max,
            window,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Whether one more event for `key` at `now` is allowed; `Err` carries the wait until the
    /// window resets. An allowed event is counted; a refused one is not.
    pub(crate) fn check(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let entry = entries.entry(key.clone()).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        if entry.1 >= self.max {
            return Err(self.window.saturating_sub(now.duration_since(entry.0)));
        }
        entry.1 += 1;
        Ok(())
    }

    /// Forgets windows that have ended.
    pub(crate) fn prune(&self, now: Instant) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.retain(|_, (start, _)| now.duration_since(*start) < self.window);
    }
}

/// Token buckets per key: `burst` tokens, refilled at `rate` per second.
#[derive(Debug)]
pub(crate) struct TokenBuckets<K> {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<K, (Instant, f64)>>,
}

impl<K: Eq + Hash + Clone> TokenBuckets<K> {
    pub(crate) fn new(rate: f64, burst: u32) -> Self {
        Self {
            rate: rate.max(f64::MIN_POSITIVE),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`; `Err` carries the wait until one is available.
    pub(crate) fn take(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (last, tokens) = buckets.entry(key.clone()).or_insert((now, self.burst));
        let refill = now.duration_since(*last).as_secs_f64() * self.rate;
        *tokens = (*tokens + refill).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.rate))
        }
    }

    /// Forgets buckets that have refilled completely (they behave like new ones).
    pub(crate) fn prune(&self, now: Instant) {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let (rate, burst) = (self.rate, self.burst);
        buckets.retain(|_, (last, tokens)| {
            *tokens + now.duration_since(*last).as_secs_f64() * rate < burst
        });
    }
}

/// Milliseconds for a `retry_after_ms`, at least 1.
pub(crate) fn retry_ms(wait: Duration) -> u64 {
    u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_counts_and_resets() {
        let limiter = WindowLimiter::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check(&"alice", t0).is_ok());
        }
        let wait = limiter
            .check(&"alice", t0 + Duration::from_secs(10))
            .unwrap_err();
        assert_eq!(wait, Duration::from_secs(50));
        // Other keys are independent.
        assert!(limiter.check(&"bob", t0).is_ok());
        // Refusals are not counted, and the window resets.
        assert!(
            limiter
                .check(&"alice", t0 + Duration::from_secs(60))
                .is_ok()
        );
        limiter.prune(t0 + Duration::from_secs(200));
        assert!(limiter.entries.lock().unwrap().is_empty());
    }

    #[test]
    fn bucket_allows_burst_then_rate() {
        let buckets = TokenBuckets::new(2.0, 3);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(buckets.take(&1, t0).is_ok());
        }
        let wait = buckets.take(&1, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(buckets.take(&1, t0 + Duration::from_millis(500)).is_ok());
        assert!(buckets.take(&1, t0 + Duration::from_millis(500)).is_err());
        assert!(buckets.take(&2, t0).is_ok());
        buckets.prune(t0 + Duration::from_secs(10));
        assert!(buckets.buckets.lock().unwrap().is_empty());
    }

    #[test]
    fn retry_is_never_zero() {
        assert_eq!(retry_ms(Duration::ZERO), 1);
        assert_eq!(retry_ms(Duration::from_millis(1500)), 1500);
    }
}
