//! In-process "device X has new mail" notifications for connected WebSockets.
//!
//! A notification only says "look again": the stream then reads the database after the last
//! envelope id it sent, so a missed or merged notification costs latency, never a message.
//! Each device has a `watch` channel whose value counts notifications; a waiting stream sees
//! every change since it last looked, however many were sent meanwhile. With several server
//! nodes the same calls would publish to a message bus instead.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

/// What a device's channel carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Signal {
    /// Incremented for every notification.
    pub(crate) seq: u64,
    /// Set when the device was removed: its streams must close.
    pub(crate) revoked: bool,
}

/// Channels of the devices with at least one open stream.
#[derive(Debug, Clone, Default)]
pub(crate) struct Notifier {
    channels: Arc<Mutex<HashMap<i64, watch::Sender<Signal>>>>,
}

/// A stream's subscription; dropping the last one for a device frees its channel.
#[derive(Debug)]
pub(crate) struct Subscription {
    pub(crate) receiver: watch::Receiver<Signal>,
    device_pk: i64,
    notifier: Notifier,
}

impl Notifier {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, watch::Sender<Signal>>> {
        self.channels.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Subscribes to the device's notifications.
    pub(crate) fn subscribe(&self, device_pk: i64) -> Subscription {
        let receiver = self
            .lock()
            .entry(device_pk)
            .or_insert_with(|| watch::channel(Signal::default()).0)
            .subscribe();
        Subscription {
            receiver,
            device_pk,
            notifier: self.clone(),
        }
    }

    /// Tells the devices' open streams to look for new envelopes.
    pub(crate) fn notify(&self, devices: &[i64]) {
        let channels = self.lock();
        for pk in devices {
            if let Some(tx) = channels.get(pk) {
                tx.send_modify(|s| s.seq = s.seq.wrapping_add(1));
            }
        }
    }

    /// Tells the devices' open streams to close (the devices were removed).
    pub(crate) fn revoke(&self, devices: &[i64]) {
        let channels = self.lock();
        for pk in devices {
            if let Some(tx) = channels.get(pk) {
                tx.send_modify(|s| s.revoked = true);
            }
        }
    }

    /// Devices with an open stream.
    #[cfg(test)]
    pub(crate) fn connected_devices(&self) -> usize {
        self.lock().len()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut channels = self.notifier.lock();
        // Our own receiver is still alive here, so "only us" is a count of one.
        if channels
            .get(&self.device_pk)
            .is_some_and(|tx| tx.receiver_count() <= 1)
        {
            channels.remove(&self.device_pk);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn notifications_are_not_lost_while_busy() {
        let notifier = Notifier::default();
        let mut sub = notifier.subscribe(7);
        // Two notifications while the stream is not waiting merge into one wake-up.
        notifier.notify(&[7, 8]);
        notifier.notify(&[7]);
        sub.receiver.changed().await.unwrap();
        assert_eq!(sub.receiver.borrow_and_update().seq, 2);
        notifier.revoke(&[7]);
        sub.receiver.changed().await.unwrap();
        assert!(sub.receiver.borrow_and_update().revoked);
    }

    #[test]
    fn channels_are_freed_with_the_last_subscription() {
        let notifier = Notifier::default();
        let a = notifier.subscribe(1);
        let b = notifier.subscribe(1);
        assert_eq!(notifier.connected_devices(), 1);
        drop(a);
        assert_eq!(notifier.connected_devices(), 1);
        drop(b);
        assert_eq!(notifier.connected_devices(), 0);
    }
}
