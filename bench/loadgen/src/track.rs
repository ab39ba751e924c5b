//! Bookkeeping for every message of a run: when it was due, whether the server accepted it,
//! which recipients got it, and the counters the report is built from.
//!
//! Message `seq` goes to conversation `seq % C` from member `(seq / C) % G`; every other member
//! must receive it exactly once. Each message keeps a bit per member, so a second delivery to
//! the same device is caught whatever its envelope id.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

use crate::histogram::Histogram;

/// What became of a message's send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Outcome {
    /// Not (yet) sent.
    Unsent = 0,
    /// The request is in flight.
    InFlight = 1,
    /// The server answered 200: it is durably queued for every recipient.
    Accepted = 2,
    /// The server refused it.
    Refused = 3,
    /// No answer (transport errors until the retry budget ran out): it may or may not exist.
    Unknown = 4,
}

impl Outcome {
    fn from_u8(v: u8) -> Self {
        match v {
            1 => Self::InFlight,
            2 => Self::Accepted,
            3 => Self::Refused,
            4 => Self::Unknown,
            _ => Self::Unsent,
        }
    }
}

/// How a delivered envelope was counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// First delivery of this message to this device.
    First,
    /// The same message again under a different envelope id: the server stored it twice.
    Duplicate,
    /// The message went to a device that is not one of its recipients.
    Misrouted,
    /// A stamp with a sequence number this run never used.
    Unknown,
}

/// Per-second counts, for the time series in the report.
#[derive(Debug)]
pub(crate) struct Series {
    accepted: Box<[AtomicU64]>,
    delivered: Box<[AtomicU64]>,
}

/// Everything the load phase records.
#[derive(Debug)]
pub(crate) struct Tracker {
    /// The run's clock origin.
    pub(crate) origin: Instant,
    /// This run's stamp id.
    pub(crate) run: u32,
    conversations: u64,
    group_size: u64,
    scheduled_us: Box<[AtomicU64]>,
    outcome: Box<[AtomicU8]>,
    delivered: Box<[AtomicU64]>,
    /// Scheduled send → first delivery to each recipient (µs).
    pub(crate) latency: Histogram,
    /// Scheduled send → HTTP answer (µs): includes the generator's own queueing.
    pub(crate) accept_latency: Histogram,
    /// Counters, by name.
    pub(crate) counters: Counters,
    errors: Mutex<BTreeMap<String, u64>>,
    series: Series,
}

/// Plain event counters.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Send requests answered 200.
    pub(crate) accepted: AtomicU64,
    /// Send requests refused (any non-2xx answer).
    pub(crate) refused: AtomicU64,
    /// Sends given up after transport errors.
    pub(crate) unknown: AtomicU64,
    /// Retries of a send with the same idempotency key.
    pub(crate) retries: AtomicU64,
    /// Due sends skipped because too many were already waiting in the generator.
    pub(crate) backlog_skipped: AtomicU64,
    /// First deliveries.
    pub(crate) deliveries: AtomicU64,
    /// Same message, same device, different envelope id.
    pub(crate) duplicates: AtomicU64,
    /// Same envelope id again (after a reconnect; allowed, at-least-once).
    pub(crate) redelivered: AtomicU64,
    /// Delivered to a device that was not a recipient.
    pub(crate) misrouted: AtomicU64,
    /// Sealed messages that came back to their sender's own device (expected, not counted
    /// as deliveries).
    pub(crate) echoes: AtomicU64,
    /// Envelopes without this run's stamp (Welcomes, commits, earlier runs).
    pub(crate) foreign: AtomicU64,
    /// Stamps with an unused sequence number.
    pub(crate) unknown_seq: AtomicU64,
    /// Stream error frames received.
    pub(crate) stream_errors: AtomicU64,
    /// WebSocket reconnects after the connection dropped.
    pub(crate) reconnects: AtomicU64,
    /// Ack frames sent.
    pub(crate) acks_sent: AtomicU64,
}

/// Seconds of per-second series kept.
const SERIES_SECONDS: usize = 4 * 3600;

fn zeroed(n: usize) -> Box<[AtomicU64]> {
    (0..n).map(|_| AtomicU64::new(0)).collect()
}

impl Tracker {
    /// Room for `capacity` messages over `conversations` conversations of `group_size`.
    pub(crate) fn new(run: u32, capacity: usize, conversations: usize, group_size: usize) -> Self {
        Self {
            origin: Instant::now(),
            run,
            conversations: conversations.max(1) as u64,
            group_size: group_size.max(1) as u64,
            scheduled_us: zeroed(capacity),
            outcome: (0..capacity).map(|_| AtomicU8::new(0)).collect(),
            delivered: zeroed(capacity),
            latency: Histogram::new(),
            accept_latency: Histogram::new(),
            counters: Counters::default(),
            errors: Mutex::new(BTreeMap::new()),
            series: Series {
                accepted: zeroed(SERIES_SECONDS),
                delivered: zeroed(SERIES_SECONDS),
            },
        }
    }

    /// Messages this run can track.
    pub(crate) fn capacity(&self) -> u64 {
        self.outcome.len() as u64
    }

    /// Microseconds since the origin.
    pub(crate) fn now_us(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// `(conversation index, sending member index)` of message `seq`.
    pub(crate) fn route(&self, seq: u64) -> (usize, usize) {
        let conversation = seq % self.conversations;
        let sender = (seq / self.conversations) % self.group_size;
        (conversation as usize, sender as usize)
    }

    fn expected_mask(&self, sender: usize) -> u64 {
        let all = if self.group_size >= 64 {
            u64::MAX
        } else {
            (1u64 << self.group_size) - 1
        };
        all & !(1u64 << sender)
    }

    /// Notes that `seq` is due at `due_us`.
    pub(crate) fn scheduled(&self, seq: u64, due_us: u64) {
        let i = seq as usize;
        self.scheduled_us[i].store(due_us, Relaxed);
        self.outcome[i].store(Outcome::InFlight as u8, Relaxed);
    }

    /// Records the answer to `seq`'s send (`error` names a refusal or transport failure).
    pub(crate) fn answered(&self, seq: u64, outcome: Outcome, error: Option<&str>) {
        let i = seq as usize;
        self.outcome[i].store(outcome as u8, Relaxed);
        let now = self.now_us();
        let due = self.scheduled_us[i].load(Relaxed);
        match outcome {
            Outcome::Accepted => {
                self.counters.accepted.fetch_add(1, Relaxed);
                self.accept_latency.record(now.saturating_sub(due));
                self.bump_series(&self.series.accepted, now);
            }
            Outcome::Refused => {
                self.counters.refused.fetch_add(1, Relaxed);
            }
            Outcome::Unknown => {
                self.counters.unknown.fetch_add(1, Relaxed);
            }
            Outcome::Unsent | Outcome::InFlight => {}
        }
        if let Some(code) = error {
            self.error(code);
        }
    }

    /// Counts one error by its code.
    pub(crate) fn error(&self, code: &str) {
        let mut errors = self.errors.lock().unwrap_or_else(|p| p.into_inner());
        *errors.entry(code.to_owned()).or_default() += 1;
    }

    /// Errors by code.
    pub(crate) fn errors(&self) -> BTreeMap<String, u64> {
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn bump_series(&self, series: &[AtomicU64], now_us: u64) {
        let second = (now_us / 1_000_000) as usize;
        if let Some(slot) = series.get(second) {
            slot.fetch_add(1, Relaxed);
        }
    }

    /// Records that member `member` of conversation `conversation` received message `seq`.
    pub(crate) fn delivered(&self, seq: u64, conversation: usize, member: usize) -> Delivery {
        if seq >= self.capacity() || member >= 64 {
            self.counters.unknown_seq.fetch_add(1, Relaxed);
            return Delivery::Unknown;
        }
        let (target, sender) = self.route(seq);
        if target != conversation || member == sender {
            self.counters.misrouted.fetch_add(1, Relaxed);
            return Delivery::Misrouted;
        }
        let bit = 1u64 << member;
        let before = self.delivered[seq as usize].fetch_or(bit, Relaxed);
        if before & bit != 0 {
            self.counters.duplicates.fetch_add(1, Relaxed);
            return Delivery::Duplicate;
        }
        let now = self.now_us();
        let due = self.scheduled_us[seq as usize].load(Relaxed);
        self.latency.record(now.saturating_sub(due));
        self.counters.deliveries.fetch_add(1, Relaxed);
        self.bump_series(&self.series.delivered, now);
        Delivery::First
    }

    /// Walks every message sent so far (`0..sent`) and checks what was delivered.
    pub(crate) fn audit(&self, sent: u64) -> Audit {
        let mut audit = Audit::default();
        for seq in 0..sent.min(self.capacity()) {
            let i = seq as usize;
            let (_, sender) = self.route(seq);
            let expected = self.expected_mask(sender);
            let got = self.delivered[i].load(Relaxed);
            match Outcome::from_u8(self.outcome[i].load(Relaxed)) {
                Outcome::Accepted => {
                    let missing = (expected & !got).count_ones();
                    if missing == 0 {
                        audit.complete += 1;
                    } else {
                        audit.lost_messages += 1;
                        audit.lost_deliveries += u64::from(missing);
                    }
                }
                Outcome::InFlight => audit.in_flight += 1,
                Outcome::Refused if got != 0 => audit.delivered_but_refused += 1,
                Outcome::Unknown if got != 0 => audit.unknown_but_delivered += 1,
                _ => {}
            }
        }
        audit
    }

    /// The accepted and delivered counts per second from `from` (inclusive) to `to`.
    pub(crate) fn series(&self, from: u64, to: u64) -> (Vec<u64>, Vec<u64>) {
        let range = (from as usize).min(SERIES_SECONDS)..(to as usize).min(SERIES_SECONDS);
        let read = |s: &[AtomicU64]| s[range.clone()].iter().map(|a| a.load(Relaxed)).collect();
        (read(&self.series.accepted), read(&self.series.delivered))
    }
}

/// The end-of-run check of every message id.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub(crate) struct Audit {
    /// Accepted messages every recipient received.
    pub(crate) complete: u64,
    /// Accepted messages at least one recipient never received.
    pub(crate) lost_messages: u64,
    /// (message, recipient) pairs missing.
    pub(crate) lost_deliveries: u64,
    /// Sends still without an answer.
    pub(crate) in_flight: u64,
    /// Refused sends that were delivered anyway.
    pub(crate) delivered_but_refused: u64,
    /// Sends with no answer that were delivered (they had been accepted).
    pub(crate) unknown_but_delivered: u64,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_recipient_once() {
        // 2 conversations of 3 members: seq 0 → conv 0 from member 0, seq 2 → conv 0 from 1.
        let t = Tracker::new(1, 10, 2, 3);
        assert_eq!(t.route(0), (0, 0));
        assert_eq!(t.route(1), (1, 0));
        assert_eq!(t.route(2), (0, 1));
        for seq in 0..3 {
            t.scheduled(seq, 0);
        }
        t.answered(0, Outcome::Accepted, None);
        t.answered(1, Outcome::Accepted, None);
        t.answered(2, Outcome::Refused, Some("queue_full"));
        assert_eq!(t.delivered(0, 0, 1), Delivery::First);
        assert_eq!(t.delivered(0, 0, 1), Delivery::Duplicate);
        assert_eq!(
            t.delivered(0, 0, 0),
            Delivery::Misrouted,
            "not to the sender"
        );
        assert_eq!(
            t.delivered(0, 1, 2),
            Delivery::Misrouted,
            "wrong conversation"
        );
        assert_eq!(t.delivered(0, 0, 2), Delivery::First);
        assert_eq!(t.delivered(1, 1, 1), Delivery::First);
        assert_eq!(t.delivered(99, 0, 1), Delivery::Unknown);
        let audit = t.audit(3);
        assert_eq!(audit.complete, 1);
        assert_eq!(audit.lost_messages, 1);
        assert_eq!(audit.lost_deliveries, 1);
        assert_eq!(t.errors().get("queue_full"), Some(&1));
        assert_eq!(t.counters.duplicates.load(Relaxed), 1);
        assert_eq!(t.latency.count(), 3);
    }
}
