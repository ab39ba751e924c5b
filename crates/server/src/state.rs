//! The state every handler shares.

use std::net::IpAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::blobs::BlobStore;
use crate::config::ServerConfig;
use crate::fan_out::FanOutMeters;
use crate::franking::{Franker, ModeratorToken};
use crate::group_calls::GroupCalls;
use crate::metrics::Metrics;
use crate::notify::Notifier;
use crate::opaque::OpaqueSetup;
use crate::rate_limit::{TokenBuckets, attempts_per_window};
use crate::sealed_keys::SealedKeyCache;
use crate::session_cache::SessionCache;
use crate::store::Store;
use crate::stream_slots::StreamSlots;
use crate::transparency::Transparency;
use crate::turn::Turn;

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// What this server offers beside its database: for calls, the TURN relay's credentials and
/// the group-call SFU, each if configured; for attachments, the blob store; for reports, the
/// franking key and the moderators' token.
#[derive(Debug)]
pub(crate) struct Services {
    /// The TURN relay.
    pub(crate) turn: Option<Turn>,
    /// The SFU.
    pub(crate) group: Option<Arc<GroupCalls>>,
    /// Where attachments' ciphertext lives.
    pub(crate) blobs: BlobStore,
    /// The key that stamps franked messages.
    pub(crate) franker: Franker,
    /// The moderators' token, if moderation is configured.
    pub(crate) moderator: Option<ModeratorToken>,
}

/// Cheap to clone; everything lives behind one `Arc`.
#[derive(Clone, Debug)]
pub(crate) struct AppState(Arc<Shared>);

/// What [`AppState`] holds.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: ServerConfig,
    pub(crate) store: Store,
    pub(crate) opaque: OpaqueSetup,
    /// The key-transparency directory.
    pub(crate) transparency: Transparency,
    /// Well-formed password login attempts per account (slowed, never locked out).
    pub(crate) login_by_account: TokenBuckets<String>,
    /// Well-formed password login and registration attempts per address group (IPv6 /64).
    pub(crate) login_by_ip: TokenBuckets<IpAddr>,
    /// Device-key sign-ins per address group; separate from the password limits, so a known
    /// device can sign in whatever they say.
    pub(crate) device_login_by_ip: TokenBuckets<IpAddr>,
    pub(crate) device_rate: TokenBuckets<i64>,
    pub(crate) notifier: Notifier,
    /// Sessions recently read, by token hash (also held by the notifier, which forgets
    /// revoked devices' sessions).
    pub(crate) sessions: Arc<SessionCache>,
    pub(crate) metrics: Metrics,
    /// Cancelled when the server shuts down; streams close on it.
    pub(crate) shutdown: CancellationToken,
    /// Tracks WebSocket tasks so shutdown can wait for them.
    pub(crate) streams: TaskTracker,
    /// What each sending account may still fan out (envelopes and bytes).
    pub(crate) fan_out: FanOutMeters,
    /// What each conversation may still fan out in sealed sends, whose sender is unknown.
    pub(crate) sealed_fan_out: FanOutMeters<nightjar_core::ConversationId>,
    /// Sealed-sender keys known to be registered.
    pub(crate) sealed_keys: SealedKeyCache,
    /// Refused sealed sends (unknown key, bad signature) per address group: past the burst,
    /// an address gets 429 before the server looks anything up.
    pub(crate) sealed_refusals: TokenBuckets<IpAddr>,
    /// Refused moderator tokens per address group: past the burst, an address gets 429.
    pub(crate) moderator_refusals: TokenBuckets<IpAddr>,
    /// The cap on streams per device.
    pub(crate) stream_slots: StreamSlots,
    /// The TURN relay calls may use, if one is configured.
    pub(crate) turn: Option<Turn>,
    /// This node's SFU for group calls, if it runs one.
    pub(crate) calls: Option<Arc<GroupCalls>>,
    /// The object store holding attachments' ciphertext.
    pub(crate) blobs: BlobStore,
    /// The key that stamps franked messages and checks reports.
    pub(crate) franker: Franker,
    /// The moderators' token; `None`: the moderation routes answer `not_configured`.
    pub(crate) moderator: Option<ModeratorToken>,
}

impl AppState {
    pub(crate) fn new(
        config: ServerConfig,
        store: Store,
        opaque: OpaqueSetup,
        transparency: Transparency,
        notifier: Notifier,
        metrics: Metrics,
        services: Services,
    ) -> Self {
        let Services {
            turn,
            group: calls,
            blobs,
            franker,
            moderator,
        } = services;
        let limits = &config.limits;
        let shared = Shared {
            login_by_account: attempts_per_window(
                limits.login_attempts_per_account,
                limits.login_window,
            ),
            login_by_ip: attempts_per_window(limits.login_attempts_per_ip, limits.login_window),
            device_login_by_ip: attempts_per_window(
                limits.login_attempts_per_ip,
                limits.login_window,
            ),
            device_rate: TokenBuckets::new(
                limits.device_requests_per_second,
                limits.device_request_burst,
            ),
            sessions: {
                let sessions = Arc::new(SessionCache::new(config.session_cache_ttl));
                notifier.attach_sessions(sessions.clone());
                sessions
            },
            notifier,
            metrics,
            shutdown: CancellationToken::new(),
            streams: TaskTracker::new(),
            fan_out: FanOutMeters::new(&config.limits),
            sealed_fan_out: FanOutMeters::new(&config.limits),
            sealed_keys: SealedKeyCache::default(),
            // Ten times the password allowance: an honest client meets an unknown key after
            // some commits (and many share an address behind a NAT).
            sealed_refusals: attempts_per_window(
                limits.login_attempts_per_ip.saturating_mul(10),
                limits.login_window,
            ),
            moderator_refusals: attempts_per_window(
                limits.login_attempts_per_ip,
                limits.login_window,
            ),
            stream_slots: StreamSlots::new(limits.max_streams_per_device),
            turn,
            calls,
            blobs,
            franker,
            moderator,
            config,
            store,
            opaque,
            transparency,
        };
        Self(Arc::new(shared))
    }
}

impl AppState {
    /// Ends every session of these devices on this node at once (their streams close, cached
    /// sessions are forgotten, they are cut off from the group calls on this node's SFU) and
    /// tells the other nodes.
    pub(crate) fn revoke_devices(&self, devices: &[i64]) {
        self.notifier.revoke(devices);
        if let Some(calls) = &self.calls
            && !devices.is_empty()
        {
            let calls = calls.clone();
            let devices = devices.to_vec();
            tokio::spawn(async move { calls.cut_off_devices(&devices).await });
        }
    }
}

impl Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}
