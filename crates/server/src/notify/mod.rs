//! "Device X has new mail" for the WebSocket streams a node holds.
//!
//! A notification is a hint; the database is the source of truth. A stream always continues
//! from the last queue id it sent, so a lost notification costs latency and a duplicated one
//! costs nothing. Three paths feed a device's streams:
//!
//! - envelopes this node just committed: handed over in memory ([`CommitSink::queued`]), so
//!   the stream pushes them without reading them back (it reads the database only if an id is
//!   missing in between);
//! - envelopes committed by other nodes: a NATS message per device and envelope carrying it
//!   (`nats.rs`), pushed like a local one; for large payloads or large fan-out, a NATS message
//!   per device naming the newest queue id, after which the stream reads the database from its
//!   last id;
//! - the safety poll (PostgreSQL): every few seconds the node reads the newest queue id of its
//!   connected devices and wakes any stream that is behind.
//!
//! Each device with an open stream has a `watch` channel holding the newest queue id the node
//! knows of (and whether the device was removed), and each stream a small channel of
//! envelopes; a stream that falls behind loses envelopes from that channel, never the id.

mod nats;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use nightjar_api::Envelope;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::AbortHandle;

pub(crate) use nats::Remote;

use crate::session_cache::SessionCache;
use crate::store::{CommitSink, Queued};

/// Envelopes held for one stream before it must read them from the database instead.
const STREAM_BUFFER: usize = 64;
/// A message queued for more devices than this is announced to other nodes by id only
/// (one notification per device each carrying the payload would multiply it on NATS).
const MAX_CARRIED_RECIPIENTS: usize = 64;

/// What a device's channel carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Signal {
    /// The newest queue id known to exist for the device; every lower one is committed.
    pub(crate) latest: u64,
    /// Set when the device was removed: its streams must close.
    pub(crate) revoked: bool,
}

/// The devices with at least one open stream on this node, and the link to other nodes.
#[derive(Debug, Clone, Default)]
pub(crate) struct Notifier {
    hub: Arc<Hub>,
}

#[derive(Debug, Default)]
struct Hub {
    devices: Mutex<HashMap<i64, Device>>,
    next_stream: AtomicU64,
    remote: OnceLock<Remote>,
    /// Sessions cached on this node: forgotten for every device revoked here or announced
    /// as revoked by another node.
    sessions: OnceLock<Arc<SessionCache>>,
}

#[derive(Debug)]
struct Device {
    signal: watch::Sender<Signal>,
    streams: Vec<(u64, mpsc::Sender<Envelope>)>,
    /// The NATS subscription for this device, while it has streams here.
    remote: Option<AbortHandle>,
}

impl Drop for Device {
    fn drop(&mut self) {
        if let Some(task) = self.remote.take() {
            task.abort();
        }
    }
}

/// A stream's subscription; dropping the last one of a device frees its channel.
#[derive(Debug)]
pub(crate) struct Subscription {
    pub(crate) signal: watch::Receiver<Signal>,
    pub(crate) envelopes: mpsc::Receiver<Envelope>,
    /// Completes once notifications from other nodes reach this device (if there are any).
    pub(crate) ready: Option<oneshot::Receiver<()>>,
    device_pk: i64,
    id: u64,
    notifier: Notifier,
}

impl Notifier {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i64, Device>> {
        self.hub.devices.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// From now on, tells other nodes about envelopes committed here and listens to them.
    pub(crate) fn attach(&self, remote: Remote) {
        let _ = self.hub.remote.set(remote);
    }

    /// From now on, revoking a device (here or on another node) also forgets its cached
    /// sessions.
    pub(crate) fn attach_sessions(&self, sessions: Arc<SessionCache>) {
        let _ = self.hub.sessions.set(sessions);
    }

    /// Subscribes a stream to the device's notifications.
    pub(crate) fn subscribe(&self, device_pk: i64) -> Subscription {
        let id = self.hub.next_stream.fetch_add(1, Ordering::Relaxed);
        let (tx, envelopes) = mpsc::channel(STREAM_BUFFER);
        let mut ready = None;
        let mut devices = self.lock();
        let device = devices.entry(device_pk).or_insert_with(|| {
            let remote = self.hub.remote.get().map(|remote| {
                let (done, wait) = oneshot::channel();
                ready = Some(wait);
                remote.listen(device_pk, Arc::downgrade(&self.hub), done)
            });
            Device {
                signal: watch::channel(Signal::default()).0,
                streams: Vec::new(),
                remote,
            }
        });
        device.streams.push((id, tx));
        Subscription {
            signal: device.signal.subscribe(),
            envelopes,
            ready,
            device_pk,
            id,
            notifier: self.clone(),
        }
    }

    /// The device's queue holds ids up to `latest`: wakes its streams if that is news.
    pub(crate) fn bump(&self, device_pk: i64, latest: u64) {
        if let Some(device) = self.lock().get(&device_pk) {
            bump(&device.signal, latest);
        }
    }

    /// Tells the devices' streams, here and on other nodes, to close and their cached
    /// sessions to be forgotten (the devices were removed).
    pub(crate) fn revoke(&self, devices: &[i64]) {
        self.revoke_here(devices);
        if let Some(remote) = self.hub.remote.get() {
            remote.revoked(devices);
        }
    }

    fn revoke_here(&self, devices: &[i64]) {
        if let Some(sessions) = self.hub.sessions.get() {
            sessions.forget_devices(devices);
        }
        let channels = self.lock();
        for pk in devices {
            if let Some(device) = channels.get(pk) {
                device.signal.send_modify(|s| s.revoked = true);
            }
        }
    }

    /// Devices with an open stream on this node.
    pub(crate) fn connected(&self) -> Vec<i64> {
        self.lock().keys().copied().collect()
    }
}

fn bump(signal: &watch::Sender<Signal>, latest: u64) {
    signal.send_if_modified(|s| {
        let newer = latest > s.latest;
        if newer {
            s.latest = latest;
        }
        newer
    });
}

impl CommitSink for Notifier {
    fn queued(&self, queued: Vec<Queued>) {
        let mut newest: HashMap<i64, u64> = HashMap::new();
        let mut carried = Vec::new();
        let remote = self.hub.remote.get();
        {
            let devices = self.lock();
            for q in &queued {
                let carry = q.message.payload.len() <= nats::MAX_CARRIED_PAYLOAD
                    && q.recipients.len() <= MAX_CARRIED_RECIPIENTS;
                for &(pk, id) in &q.recipients {
                    if remote.is_some() {
                        // Whole to the node holding the device's stream; by id where this
                        // node holds one too (another node may hold an older stream of it).
                        if carry && !devices.contains_key(&pk) {
                            carried.push((pk, q.message.clone(), id));
                        } else {
                            let n = newest.entry(pk).or_default();
                            *n = (*n).max(id);
                        }
                    }
                    let Some(device) = devices.get(&pk) else {
                        continue;
                    };
                    hand_over(device, q.message.envelope(id));
                }
            }
        }
        if let Some(remote) = remote {
            remote.mail(carried, newest);
        }
    }
}

impl Notifier {
    /// An envelope committed on another node for a device with streams here: handed to the
    /// streams like one committed here.
    fn deliver_here(&self, device_pk: i64, envelope: Envelope) {
        let devices = self.lock();
        if let Some(device) = devices.get(&device_pk) {
            hand_over(device, envelope);
        }
    }
}

/// Gives a committed envelope to the device's streams on this node. The envelope first, then
/// the id: a stream woken by the id finds the envelope already waiting and need not read the
/// database.
fn hand_over(device: &Device, envelope: Envelope) {
    let id = envelope.id;
    for (_, stream) in &device.streams {
        let _ = stream.try_send(envelope.clone());
    }
    bump(&device.signal, id);
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut devices = self.notifier.lock();
        if let Some(device) = devices.get_mut(&self.device_pk) {
            device.streams.retain(|(id, _)| *id != self.id);
            if device.streams.is_empty() {
                devices.remove(&self.device_pk);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::QueuedMessage;
    use nightjar_api::{DeviceAddress, EnvelopeKind};

    fn queued(recipients: Vec<(i64, u64)>) -> Queued {
        Queued {
            message: Arc::new(QueuedMessage {
                conversation_id: None,
                sender: DeviceAddress {
                    username: "alice".into(),
                    device_id: "0000000000000001".into(),
                },
                kind: EnvelopeKind::Application,
                payload: vec![1, 2, 3],
                created_at_ms: 5,
                stamp: None,
            }),
            recipients,
        }
    }

    #[tokio::test]
    async fn envelopes_and_ids_reach_streams() {
        let notifier = Notifier::default();
        let mut a = notifier.subscribe(7);
        let mut b = notifier.subscribe(7);
        notifier.queued(vec![queued(vec![(7, 3), (8, 1)])]);
        for sub in [&mut a, &mut b] {
            assert_eq!(sub.envelopes.recv().await.unwrap().id, 3);
            sub.signal.changed().await.unwrap();
            assert_eq!(sub.signal.borrow_and_update().latest, 3);
        }
        // Older ids (a late or duplicated notification) wake nobody.
        notifier.bump(7, 2);
        assert!(!a.signal.has_changed().unwrap());
        notifier.bump(7, 9);
        assert!(a.signal.has_changed().unwrap());
        notifier.revoke(&[7]);
        a.signal.changed().await.unwrap();
        assert!(a.signal.borrow_and_update().revoked);
    }

    #[tokio::test]
    async fn a_slow_stream_loses_envelopes_not_ids() {
        let notifier = Notifier::default();
        let mut sub = notifier.subscribe(1);
        for id in 1..=(STREAM_BUFFER as u64 + 10) {
            notifier.queued(vec![queued(vec![(1, id)])]);
        }
        let mut got = 0;
        while sub.envelopes.try_recv().is_ok() {
            got += 1;
        }
        assert_eq!(got, STREAM_BUFFER);
        assert_eq!(sub.signal.borrow().latest, STREAM_BUFFER as u64 + 10);
    }

    #[test]
    fn revoking_forgets_cached_sessions() {
        let notifier = Notifier::default();
        let sessions = Arc::new(SessionCache::new(std::time::Duration::from_secs(60)));
        notifier.attach_sessions(sessions.clone());
        let row = crate::store::SessionRow {
            device_pk: 7,
            account_id: 1,
            username: "alice".into(),
            device_id: "000000000000000a".into(),
            status: nightjar_api::DeviceStatus::Active,
            last_seen_ms: 0,
        };
        let now = std::time::Instant::now();
        sessions.put([1; 32], &row, now, sessions.read_started());
        assert!(sessions.get(&[1; 32], now).is_some());
        // As when another node's revocation arrives over NATS.
        notifier.revoke_here(&[7]);
        assert!(sessions.get(&[1; 32], now).is_none());
    }

    #[test]
    fn channels_are_freed_with_the_last_subscription() {
        let notifier = Notifier::default();
        let a = notifier.subscribe(1);
        let b = notifier.subscribe(1);
        assert_eq!(notifier.connected(), vec![1]);
        drop(a);
        assert_eq!(notifier.connected(), vec![1]);
        drop(b);
        assert!(notifier.connected().is_empty());
    }
}
