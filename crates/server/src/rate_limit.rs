//! In-memory rate limiters: token buckets for login attempts (per account, per address group)
//! and for authenticated requests (per device). Time is passed in, so the
//! logic is tested without sleeping.
//!
//! Login attempts are *slowed*, never locked out: an account's bucket refills one attempt every
//! `window / attempts`, and a refusal says exactly when the next attempt is allowed. Addresses
//! are grouped per IPv6 /64 (one subscriber's usual allocation), IPv4 per address.
//!
//! State is per process: with several server nodes each counts on its own, which loosens the
//! limits by the node count (acceptable; they exist to make guessing and floods expensive).

use std::collections::HashMap;
use std::hash::Hash;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

    /// Whether `key` has a token now, without taking it; `Err` carries the wait until it has.
    pub(crate) fn check(&self, key: &K, now: Instant) -> Result<(), Duration> {
        let buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let Some((last, tokens)) = buckets.get(key) else {
            return Ok(());
        };
        let tokens = (tokens + now.duration_since(*last).as_secs_f64() * self.rate).min(self.burst);
        if tokens >= 1.0 {
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - tokens) / self.rate))
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

/// The key per-address limits count under: an IPv4 address as is (also when written as an
/// IPv4-mapped IPv6 address), an IPv6 address as its /64 prefix.
pub(crate) fn address_group(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(Ipv6Addr::from(prefix))
            }
        },
    }
}

/// A token bucket that allows `attempts` at once and refills them evenly over `window`.
pub(crate) fn attempts_per_window<K: Eq + Hash + Clone>(
    attempts: u32,
    window: Duration,
) -> TokenBuckets<K> {
    let seconds = window.as_secs_f64().max(f64::MIN_POSITIVE);
    TokenBuckets::new(f64::from(attempts.max(1)) / seconds, attempts)
}

/// Milliseconds for a `retry_after_ms`, at least 1.
pub(crate) fn retry_ms(wait: Duration) -> u64 {
    u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn addresses_group_per_ipv6_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff:1:2:3".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(address_group(a), address_group(b));
        assert_ne!(address_group(a), address_group(c));
        assert_eq!(
            address_group(a),
            "2001:db8:1:2::".parse::<IpAddr>().unwrap()
        );
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(address_group(v4), v4);
        assert_eq!(address_group(mapped), v4);
        assert_ne!(
            address_group("192.0.2.8".parse().unwrap()),
            address_group(v4)
        );
        // Ten attempts from one /64 share one bucket.
        let buckets = attempts_per_window(3, Duration::from_secs(30));
        let t0 = Instant::now();
        for i in 0..3u16 {
            let ip = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 1, 2, i, 0, 0, 1));
            assert!(buckets.take(&address_group(ip), t0).is_ok());
        }
        assert!(buckets.take(&address_group(a), t0).is_err());
        assert!(buckets.take(&address_group(c), t0).is_ok());
    }

    #[test]
    fn login_attempts_slow_down_instead_of_locking_out() {
        // 10 attempts per 15 minutes: after a burst of 10, one more every 90 s, not 15 min.
        let buckets = attempts_per_window(10, Duration::from_secs(15 * 60));
        let t0 = Instant::now();
        for _ in 0..10 {
            assert!(buckets.take(&"victim", t0).is_ok());
        }
        let wait = buckets.take(&"victim", t0).unwrap_err();
        assert!(wait <= Duration::from_secs(90), "{wait:?}");
        assert!(buckets.take(&"victim", t0 + wait).is_ok());
    }

    #[test]
    fn retry_is_never_zero() {
        assert_eq!(retry_ms(Duration::ZERO), 1);
        assert_eq!(retry_ms(Duration::from_millis(1500)), 1500);
    }
}
