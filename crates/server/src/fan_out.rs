//! Per-sending-account fan-out allowances (envelopes and bytes queued per second), kept in
//! memory per node like the other rate limits. The decision logic is `rules::consent::FanOut`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::config::Limits;
use crate::rules::consent::{FanOut, FanOutLimits};

/// Entries kept before full allowances are forgotten.
const PRUNE_PAST: usize = 10_000;

/// The fan-out allowance of every account that sent recently, by account row id.
#[derive(Debug)]
pub(crate) struct FanOutMeters {
    limits: FanOutLimits,
    meters: Mutex<HashMap<i64, FanOut>>,
}

impl FanOutMeters {
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

    /// Whether `account` may send now; `Err` is how long until it may.
    pub(crate) fn check(&self, account: i64, now_ms: u64) -> Result<(), Duration> {
        let mut meters = self.meters.lock().unwrap_or_else(|p| p.into_inner());
        match meters.get_mut(&account) {
            Some(meter) => meter.check(&self.limits, now_ms),
            None => Ok(()),
        }
    }

    /// Charges `account` for `envelopes` envelopes of `bytes` bytes in all.
    pub(crate) fn charge(&self, account: i64, now_ms: u64, envelopes: u64, bytes: u64) {
        if envelopes == 0 {
            return;
        }
        let mut meters = self.meters.lock().unwrap_or_else(|p| p.into_inner());
        if meters.len() > PRUNE_PAST {
            let limits = self.limits;
            meters.retain(|_, m| !m.is_full(&limits, now_ms));
        }
        meters
            .entry(account)
            .or_insert_with(|| FanOut::full(&self.limits, now_ms))
            .charge(&self.limits, now_ms, envelopes, bytes);
    }
}
