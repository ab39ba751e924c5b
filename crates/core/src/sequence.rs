//! Per-sender sequence numbers: what a receiver has seen from one sending device in one
//! conversation, which sequence numbers are duplicates, and which gaps have stayed open too long.
//!
//! Every application message carries the sending device's sequence number for the conversation
//! inside its encrypted content (content version 2, see [`crate::content::Plaintext`]), so the
//! delivery service can neither change nor invent one. A [`SenderWindow`] is the receiver's record
//! for one (conversation, sending device). It is pure: the caller passes the clock in and stores
//! the window (the engine keeps one per sender in its store).
//!
//! Rules:
//! - The first number received from a sender sets the baseline. Numbers below it may still
//!   arrive (reordering) and are accepted once each; they are never reported missing, because
//!   this device cannot know what the sender sent before it first heard from it.
//! - A number already received is a [`Observation::Duplicate`]: the caller drops the message.
//! - Numbers skipped above the baseline are a gap. A gap that is still open `grace` after it
//!   opened is reported once ([`SenderWindow::settle`]) with the count of missing messages; the
//!   missing numbers stay acceptable, so a message that arrives after the report is shown
//!   ([`Observation::Late`]), once.
//! - Memory is bounded: at most [`MAX_AHEAD`] numbers are kept above the contiguous part and at
//!   most [`MAX_UNSEEN_RANGES`] ranges of not-yet-seen numbers below it (the oldest are forgotten,
//!   after which a very late arrival counts as a duplicate).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// Received numbers kept above the contiguous part before the oldest gap is settled early.
pub const MAX_AHEAD: usize = 1024;

/// Ranges of unseen numbers below the contiguous part that are remembered.
pub const MAX_UNSEEN_RANGES: usize = 64;

/// What a receiver should do with a message carrying a sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Observation {
    /// First time this number is seen, in or ahead of order.
    Fresh,
    /// First time this number is seen, after it was reported missing or from before the
    /// baseline (reordered around the first message received).
    Late,
    /// This number was already received: drop the message.
    Duplicate,
}

/// An inclusive range of sequence numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Span {
    first: u64,
    last: u64,
}

/// What one receiving device knows about one sending device's sequence numbers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SenderWindow {
    /// Every number up to and including this one is settled: received, reported missing, or
    /// before the baseline.
    floor: u64,
    /// Received numbers above `floor`; never contains `floor + 1`.
    ahead: BTreeSet<u64>,
    /// Settled numbers that were never received, oldest first; each is accepted once.
    unseen: Vec<Span>,
    /// When the current gap (a hole above `floor`) opened, in ms; `None` without a gap.
    gap_since_ms: Option<u64>,
}

impl SenderWindow {
    /// The window after the first message received from a sender, numbered `seq`.
    pub fn first(seq: u64) -> Self {
        let floor = seq;
        let unseen = if seq > 1 {
            vec![Span {
                first: 1,
                last: seq - 1,
            }]
        } else {
            Vec::new()
        };
        Self {
            floor,
            ahead: BTreeSet::new(),
            unseen,
            gap_since_ms: None,
        }
    }

    /// Records `seq` received at `now_ms` and says whether it is new.
    pub fn observe(&mut self, seq: u64, now_ms: u64) -> Observation {
        if seq <= self.floor {
            return if self.take_unseen(seq) {
                Observation::Late
            } else {
                Observation::Duplicate
            };
        }
        if !self.ahead.insert(seq) {
            return Observation::Duplicate;
        }
        while let Some(next) = self.floor.checked_add(1)
            && self.ahead.remove(&next)
        {
            self.floor = next;
        }
        if self.ahead.is_empty() {
            self.gap_since_ms = None;
        } else if self.gap_since_ms.is_none() {
            self.gap_since_ms = Some(now_ms);
        }
        if self.ahead.len() > MAX_AHEAD {
            self.settle_all();
        }
        Observation::Fresh
    }

    /// Whether a gap is open (some number above the contiguous part is missing).
    pub fn has_gap(&self) -> bool {
        !self.ahead.is_empty()
    }

    /// When the open gap opened, if one is open.
    pub fn gap_since_ms(&self) -> Option<u64> {
        self.gap_since_ms
    }

    /// If the open gap has stayed open for `grace_ms`, gives up waiting: returns how many
    /// messages are missing (each reported once) and keeps them acceptable as late arrivals.
    pub fn settle(&mut self, now_ms: u64, grace_ms: u64) -> Option<u64> {
        let since = self.gap_since_ms?;
        if now_ms.saturating_sub(since) < grace_ms {
            return None;
        }
        Some(self.settle_all())
    }

    /// Settles every hole below the highest received number; returns how many were missing.
    fn settle_all(&mut self) -> u64 {
        let mut holes = Vec::new();
        let mut next = self.floor.saturating_add(1);
        for &seq in &self.ahead {
            if seq > next {
                holes.push(Span {
                    first: next,
                    last: seq - 1,
                });
            }
            next = seq.saturating_add(1);
        }
        if let Some(&last) = self.ahead.last() {
            self.floor = last;
        }
        self.ahead.clear();
        self.gap_since_ms = None;
        let missing = holes.iter().map(|h| h.last - h.first + 1).sum();
        for hole in holes {
            self.push_unseen(hole);
        }
        missing
    }

    fn push_unseen(&mut self, span: Span) {
        self.unseen.push(span);
        if self.unseen.len() > MAX_UNSEEN_RANGES {
            self.unseen.remove(0);
        }
    }

    /// Removes `seq` from the unseen ranges; false if it is not in any.
    fn take_unseen(&mut self, seq: u64) -> bool {
        let Some(at) = self
            .unseen
            .iter()
            .position(|s| s.first <= seq && seq <= s.last)
        else {
            return false;
        };
        let span = self.unseen[at];
        let mut parts = Vec::with_capacity(2);
        if span.first < seq {
            parts.push(Span {
                first: span.first,
                last: seq - 1,
            });
        }
        if seq < span.last {
            parts.push(Span {
                first: seq + 1,
                last: span.last,
            });
        }
        self.unseen.splice(at..=at, parts);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::Observation::*;
    use super::*;
    use proptest::prelude::*;

    const GRACE: u64 = 1_000;

    #[test]
    fn in_order_messages_are_fresh_and_leave_no_gap() {
        let mut w = SenderWindow::first(1);
        for seq in 2..=5 {
            assert_eq!(w.observe(seq, 0), Fresh);
        }
        assert!(!w.has_gap());
        assert_eq!(w.settle(u64::MAX, GRACE), None);
    }

    #[test]
    fn duplicates_are_dropped_in_and_out_of_order() {
        let mut w = SenderWindow::first(1);
        assert_eq!(w.observe(1, 0), Duplicate);
        assert_eq!(w.observe(3, 0), Fresh);
        assert_eq!(w.observe(3, 0), Duplicate);
        assert_eq!(w.observe(2, 0), Fresh);
        assert_eq!(w.observe(2, 0), Duplicate);
        assert_eq!(w.observe(3, 0), Duplicate);
    }

    #[test]
    fn a_reordered_gap_fills_without_a_report() {
        let mut w = SenderWindow::first(1);
        assert_eq!(w.observe(3, 10), Fresh);
        assert_eq!(w.observe(4, 20), Fresh);
        assert!(w.has_gap());
        assert_eq!(w.gap_since_ms(), Some(10));
        assert_eq!(w.settle(10 + GRACE - 1, GRACE), None);
        assert_eq!(w.observe(2, 30), Fresh);
        assert!(!w.has_gap());
        assert_eq!(w.settle(u64::MAX, GRACE), None);
    }

    #[test]
    fn a_gap_is_reported_once_after_the_grace_time_and_late_arrivals_are_shown_once() {
        let mut w = SenderWindow::first(1);
        assert_eq!(w.observe(4, 100), Fresh);
        assert_eq!(w.settle(100 + GRACE - 1, GRACE), None);
        assert_eq!(w.settle(100 + GRACE, GRACE), Some(2));
        assert_eq!(w.settle(u64::MAX, GRACE), None, "reported once");
        assert_eq!(w.observe(5, 0), Fresh);
        assert_eq!(w.observe(3, 0), Late);
        assert_eq!(w.observe(3, 0), Duplicate);
        assert_eq!(w.observe(2, 0), Late);
        assert_eq!(w.observe(2, 0), Duplicate);
    }

    #[test]
    fn numbers_before_the_baseline_are_accepted_once_and_never_reported() {
        let mut w = SenderWindow::first(57);
        assert!(!w.has_gap());
        assert_eq!(w.observe(56, 0), Late);
        assert_eq!(w.observe(56, 0), Duplicate);
        assert_eq!(w.observe(1, 0), Late);
        assert_eq!(w.settle(u64::MAX, GRACE), None);
    }

    #[test]
    fn the_gap_clock_runs_from_the_first_hole() {
        let mut w = SenderWindow::first(1);
        w.observe(3, 100);
        w.observe(5, 900);
        w.observe(2, 950);
        // 3 is now contiguous; 4 is still missing, and the clock did not restart.
        assert_eq!(w.gap_since_ms(), Some(100));
        assert_eq!(w.settle(100 + GRACE, GRACE), Some(1));
    }

    #[test]
    fn a_sender_far_ahead_is_settled_early_and_memory_stays_bounded() {
        let mut w = SenderWindow::first(1);
        for seq in (3..).step_by(2).take(MAX_AHEAD + 1) {
            w.observe(seq, 0);
        }
        assert!(w.ahead.len() <= MAX_AHEAD);
        assert!(w.unseen.len() <= MAX_UNSEEN_RANGES);
        assert_eq!(w.observe(u64::MAX, 0), Fresh);
        assert_eq!(w.observe(u64::MAX, 0), Duplicate);
    }

    #[test]
    fn window_round_trips_through_json() {
        let mut w = SenderWindow::first(7);
        w.observe(9, 5);
        let json = serde_json::to_vec(&w).unwrap();
        assert_eq!(serde_json::from_slice::<SenderWindow>(&json).unwrap(), w);
    }

    proptest! {
        /// Whatever order the delivery service picks, each number is accepted exactly once, and
        /// a complete delivery leaves no gap.
        #[test]
        fn any_order_accepts_each_number_once(
            order in Just((1u64..=40).collect::<Vec<_>>()).prop_shuffle(),
            replays in proptest::collection::vec(1u64..=40, 0..20),
        ) {
            let mut w = SenderWindow::first(order[0]);
            let mut accepted = BTreeSet::from([order[0]]);
            for (i, seq) in order.iter().skip(1).chain(replays.iter()).enumerate() {
                let seen = w.observe(*seq, i as u64);
                prop_assert_eq!(seen != Duplicate, accepted.insert(*seq), "seq {}", seq);
            }
            prop_assert_eq!(accepted.len(), 40);
            prop_assert!(!w.has_gap());
            prop_assert_eq!(w.settle(u64::MAX, 0), None);
        }

        /// Dropped numbers above the first received are reported exactly, once.
        #[test]
        fn dropped_numbers_are_counted_exactly(
            drop in proptest::collection::btree_set(2u64..40, 0..10),
        ) {
            let mut w = SenderWindow::first(1);
            for seq in 2..=40 {
                if !drop.contains(&seq) {
                    prop_assert_eq!(w.observe(seq, 0), Fresh);
                }
            }
            let reported = w.settle(GRACE, GRACE);
            let expected = (!drop.is_empty()).then_some(drop.len() as u64);
            prop_assert_eq!(reported, expected);
            prop_assert_eq!(w.settle(u64::MAX, GRACE), None);
            for seq in &drop {
                prop_assert_eq!(w.observe(*seq, 0), Late);
            }
        }
    }
}
