//! Fan-out allowances (envelopes and bytes queued per second) per sending account, and per
//! conversation for sealed sends (whose sender the server does not know), kept in memory per
//! node like the other rate limits. The decision logic is `rules::consent::FanOut`.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::Duration;

use crate::config::Limits;
use crate::rules::consent::{FanOut, FanOutLimits};

/// Entries kept before full allowances are forgotten.
const PRUNE_PAST: usize = 10_000;

/// The fan-out allowance of every sender (by account row id, or by conversation for sealed
/// sends) that sent recently.
#[derive(Debug)]
pub(crate) struct FanOutMeters<K = i64> {
    limits: FanOutLimits,
    meters: Mutex<HashMap<K, FanOut>>,
}

impl<K: Eq + Hash> FanOutMeters<K> {
    /// Meters with the limits' rates and bursts.
    pub(crate) fn new(limits: &Limits) -> Self {
        // Bursts past 2^53 bytes lose precision, which does not matter.
        #[allow(clippy::cast_precision_loss)]
        let byte_burst = limits.fan_out_bytes_burst as f64;
        Self {
            limits: FanOutLimits {
                envelopes_per_second: limits.fan_out_per_second,
                envelope_burst: f64::from(limits.fan_out_burst),
                bytes_per_second: limits.fan_out_bytes_per_second,
                byte_burst,
            },
            meters: Mutex::new(HashMap::new()),
        }
    }

    /// Whether `sender` may send now; `Err` is how long until it may.
    pub(crate) fn check(&self, sender: K, now_ms: u64) -> Result<(), Duration> {
        let mut meters = self.meters.lock().unwrap_or_else(|p| p.into_inner());
        match meters.get_mut(&sender) {
            Some(meter) => meter.check(&self.limits, now_ms),
            None => Ok(()),
        }
    }

    /// Charges `sender` for `envelopes` envelopes of `bytes` bytes in all.
    pub(crate) fn charge(&self, sender: K, now_ms: u64, envelopes: u64, bytes: u64) {
        if envelopes == 0 {
            return;
        }
        let mut meters = self.meters.lock().unwrap_or_else(|p| p.into_inner());
        if meters.len() > PRUNE_PAST {
            let limits = self.limits;
            meters.retain(|_, m| !m.is_full(&limits, now_ms));
        }
        meters
            .entry(sender)
            .or_insert_with(|| FanOut::full(&self.limits, now_ms))
            .charge(&self.limits, now_ms, envelopes, bytes);
    }
}
