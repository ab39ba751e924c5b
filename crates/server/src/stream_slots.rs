//! The cap on push streams per device (issue 8, finding 9): every stream costs a task, socket
//! buffers and a subscription, so one device (stolen token, buggy client) may hold only a few
//! on a node. A new stream past the cap closes the device's *oldest* one rather than being
//! refused: a client whose previous connection died without a close (a phone changing
//! networks) reconnects at once instead of being locked out until the dead one times out.
//!
//! The count is per node: with several nodes a device may hold the cap on each.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use tokio_util::sync::CancellationToken;

/// The streams open on this node, per device, oldest first.
#[derive(Debug)]
pub(crate) struct StreamSlots {
    max_per_device: usize,
    inner: Mutex<Slots>,
}

#[derive(Debug, Default)]
struct Slots {
    next_id: u64,
    by_device: HashMap<i64, VecDeque<Slot>>,
}

#[derive(Debug)]
struct Slot {
    id: u64,
    /// Cancelled when a newer stream of the same device takes this one's place.
    evicted: CancellationToken,
}

/// A stream's place; gives it back when dropped.
#[derive(Debug)]
pub(crate) struct Held<'a> {
    slots: &'a StreamSlots,
    device: i64,
    id: u64,
    /// Completes when this stream must close because its device opened too many, or the
    /// server shuts down.
    pub(crate) evicted: CancellationToken,
}

impl StreamSlots {
    /// At most `max_per_device` streams per device (at least one).
    pub(crate) fn new(max_per_device: usize) -> Self {
        Self {
            max_per_device: max_per_device.max(1),
            inner: Mutex::new(Slots::default()),
        }
    }

    /// Takes a place for a new stream of `device`, evicting the device's oldest streams past
    /// the cap (their `evicted` tokens are cancelled). The new stream's token is a child of
    /// `shutdown`: it completes on eviction or on shutdown, so a stream waits on one token.
    pub(crate) fn admit(&self, device: i64, shutdown: &CancellationToken) -> Held<'_> {
        let evicted = shutdown.child_token();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let id = inner.next_id;
        inner.next_id += 1;
        let queue = inner.by_device.entry(device).or_default();
        queue.push_back(Slot {
            id,
            evicted: evicted.clone(),
        });
        while queue.len() > self.max_per_device {
            if let Some(oldest) = queue.pop_front() {
                oldest.evicted.cancel();
            }
        }
        Held {
            slots: self,
            device,
            id,
            evicted,
        }
    }

    /// Streams of `device` holding a place.
    #[cfg(test)]
    fn count(&self, device: i64) -> usize {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.by_device.get(&device).map_or(0, VecDeque::len)
    }

    fn release(&self, device: i64, id: u64) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(queue) = inner.by_device.get_mut(&device) {
            queue.retain(|s| s.id != id);
            if queue.is_empty() {
                inner.by_device.remove(&device);
            }
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.slots.release(self.device, self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_stream_past_the_cap_is_evicted() {
        let slots = StreamSlots::new(2);
        let a = slots.admit(7, &CancellationToken::new());
        let b = slots.admit(7, &CancellationToken::new());
        let other = slots.admit(8, &CancellationToken::new());
        assert!(!a.evicted.is_cancelled() && !b.evicted.is_cancelled());
        let c = slots.admit(7, &CancellationToken::new());
        assert!(a.evicted.is_cancelled(), "the oldest goes");
        assert!(!b.evicted.is_cancelled() && !c.evicted.is_cancelled());
        assert!(
            !other.evicted.is_cancelled(),
            "other devices are not counted"
        );
        assert_eq!(slots.count(7), 2);
        drop(a);
        assert_eq!(
            slots.count(7),
            2,
            "an evicted stream no longer holds a place"
        );
        drop(b);
        drop(c);
        assert_eq!(slots.count(7), 0);
        drop(other);
        assert!(
            slots.inner.lock().unwrap().by_device.is_empty(),
            "nothing left behind"
        );
    }

    #[test]
    fn a_cap_of_zero_still_admits_one() {
        let slots = StreamSlots::new(0);
        let a = slots.admit(1, &CancellationToken::new());
        assert!(!a.evicted.is_cancelled());
        let b = slots.admit(1, &CancellationToken::new());
        assert!(a.evicted.is_cancelled() && !b.evicted.is_cancelled());
    }

    #[test]
    fn shutdown_stops_every_stream_and_an_eviction_stops_only_its_own() {
        let slots = StreamSlots::new(1);
        let shutdown = CancellationToken::new();
        let a = slots.admit(1, &shutdown);
        let b = slots.admit(1, &shutdown);
        let other = slots.admit(2, &shutdown);
        assert!(a.evicted.is_cancelled(), "evicted by b");
        assert!(!shutdown.is_cancelled(), "an eviction is not a shutdown");
        assert!(!b.evicted.is_cancelled() && !other.evicted.is_cancelled());
        shutdown.cancel();
        assert!(b.evicted.is_cancelled() && other.evicted.is_cancelled());
    }
}
