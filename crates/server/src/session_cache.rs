//! Sessions recently read from the database, so that a busy device's requests skip the read.
//!
//! Only active devices' sessions are cached (a pending device sees its approval at once), for
//! at most [`crate::ServerConfig::session_cache_ttl`]. Logging out and removing a device on
//! this node forget the entries at once (and a read that raced with them is not cached); on
//! other nodes sharing the database, a removed device's sessions are forgotten when the NATS
//! revocation reaches them (nodes holding a stream of the device) and otherwise keep working
//! for at most the TTL (1 s by default), as does a session logged out elsewhere; an expired
//! session works for at most the TTL past its expiry. A zero TTL turns the
//! cache off.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nightjar_api::DeviceStatus;

use crate::store::SessionRow;

/// Entries kept before expired ones are dropped; past twice this, everything is dropped.
const MAX_ENTRIES: usize = 100_000;

/// Token hash → session, with the time it was read.
#[derive(Debug)]
pub(crate) struct SessionCache {
    ttl: Duration,
    entries: Mutex<HashMap<[u8; 32], (SessionRow, Instant)>>,
    /// Advanced by every forget, so that a session read before a revocation is not cached
    /// after it.
    revocations: AtomicU64,
}

/// When a database read of a session started, for [`SessionCache::put`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadStarted(u64);

impl SessionCache {
    /// An empty cache whose entries live for `ttl` (zero: nothing is cached).
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            entries: Mutex::new(HashMap::new()),
            revocations: AtomicU64::new(0),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], (SessionRow, Instant)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session for `token_hash`, if it was read less than the TTL before `now`.
    pub(crate) fn get(&self, token_hash: &[u8; 32], now: Instant) -> Option<SessionRow> {
        if self.ttl.is_zero() {
            return None;
        }
        let entries = self.entries();
        let (row, read_at) = entries.get(token_hash)?;
        (now.saturating_duration_since(*read_at) < self.ttl).then(|| row.clone())
    }

    /// To call before reading a session from the database.
    pub(crate) fn read_started(&self) -> ReadStarted {
        ReadStarted(self.revocations.load(Ordering::SeqCst))
    }

    /// Remembers a session read from the database at `now` (active devices only), unless a
    /// session or device was forgotten since the read started (it may be that one).
    pub(crate) fn put(
        &self,
        token_hash: [u8; 32],
        row: &SessionRow,
        now: Instant,
        started: ReadStarted,
    ) {
        if self.ttl.is_zero() || row.status != DeviceStatus::Active {
            return;
        }
        let mut entries = self.entries();
        // Under the lock: a forget either ran before (and is seen here) or waits for us.
        if self.revocations.load(Ordering::SeqCst) != started.0 {
            return;
        }
        if entries.len() >= MAX_ENTRIES {
            let ttl = self.ttl;
            entries.retain(|_, (_, read_at)| now.saturating_duration_since(*read_at) < ttl);
            if entries.len() >= 2 * MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(token_hash, (row.clone(), now));
    }

    /// Notes that the device of `token_hash` was marked seen at `last_seen_ms`.
    pub(crate) fn seen(&self, token_hash: &[u8; 32], last_seen_ms: u64) {
        if let Some((row, _)) = self.entries().get_mut(token_hash) {
            row.last_seen_ms = last_seen_ms;
        }
    }

    /// Forgets one session (logout; call after deleting it from the database).
    pub(crate) fn forget_token(&self, token_hash: &[u8; 32]) {
        let mut entries = self.entries();
        self.revocations.fetch_add(1, Ordering::SeqCst);
        entries.remove(token_hash);
    }

    /// Forgets every session of these devices (removed or revoked).
    pub(crate) fn forget_devices(&self, devices: &[i64]) {
        if devices.is_empty() {
            return;
        }
        let mut entries = self.entries();
        self.revocations.fetch_add(1, Ordering::SeqCst);
        entries.retain(|_, (row, _)| !devices.contains(&row.device_pk));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(device_pk: i64, status: DeviceStatus) -> SessionRow {
        SessionRow {
            device_pk,
            account_id: 1,
            username: "alice".into(),
            device_id: "000000000000000a".into(),
            status,
            last_seen_ms: 0,
        }
    }

    #[test]
    fn entries_expire_and_can_be_forgotten() {
        let cache = SessionCache::new(Duration::from_secs(1));
        let t0 = Instant::now();
        let read = cache.read_started();
        cache.put([1; 32], &row(7, DeviceStatus::Active), t0, read);
        cache.put([2; 32], &row(7, DeviceStatus::Active), t0, read);
        cache.put([3; 32], &row(8, DeviceStatus::Active), t0, read);
        cache.put([4; 32], &row(9, DeviceStatus::Pending), t0, read);
        assert_eq!(cache.get(&[1; 32], t0).map(|r| r.device_pk), Some(7));
        assert!(
            cache.get(&[4; 32], t0).is_none(),
            "pending devices are not cached"
        );
        assert!(cache.get(&[1; 32], t0 + Duration::from_secs(1)).is_none());

        cache.seen(&[3; 32], 42);
        assert_eq!(cache.get(&[3; 32], t0).map(|r| r.last_seen_ms), Some(42));
        cache.forget_devices(&[7]);
        assert!(cache.get(&[1; 32], t0).is_none());
        assert!(cache.get(&[2; 32], t0).is_none());
        cache.forget_token(&[3; 32]);
        assert!(cache.get(&[3; 32], t0).is_none());
    }

    #[test]
    fn a_session_read_before_a_revocation_is_not_cached() {
        let cache = SessionCache::new(Duration::from_secs(1));
        let now = Instant::now();
        let read = cache.read_started();
        cache.forget_devices(&[7]);
        cache.put([1; 32], &row(7, DeviceStatus::Active), now, read);
        assert!(cache.get(&[1; 32], now).is_none());
        let read = cache.read_started();
        cache.put([1; 32], &row(7, DeviceStatus::Active), now, read);
        assert!(cache.get(&[1; 32], now).is_some());
    }

    #[test]
    fn a_zero_ttl_caches_nothing() {
        let cache = SessionCache::new(Duration::ZERO);
        let now = Instant::now();
        cache.put(
            [1; 32],
            &row(7, DeviceStatus::Active),
            now,
            cache.read_started(),
        );
        assert!(cache.get(&[1; 32], now).is_none());
    }
}
