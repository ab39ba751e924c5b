//! Server configuration: where data lives, where to listen, and every limit the server enforces.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

/// Everything [`crate::start`] needs. `Default` gives a complete single-node server storing its
/// SQLite database under `./nightjar-data` and listening on `127.0.0.1:8080`; set fields with
/// `ServerConfig { data_dir, listen, ..ServerConfig::default() }`.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Directory for the database (created if missing).
    pub data_dir: PathBuf,
    /// Address to listen on; port 0 picks a free port (see [`crate::RunningServer::local_addr`]).
    pub listen: SocketAddr,
    /// Overrides the database: `sqlite:///var/lib/nightjar/db.sqlite`, or
    /// `postgres://user@host:5432/nightjar` to share one PostgreSQL database between any
    /// number of server nodes (the CLI's `--database-url`). `None` means SQLite in
    /// `nightjar.db` inside `data_dir`. Any other scheme is a [`crate::ServerError::Config`].
    pub database_url: Option<String>,
    /// The NATS server through which nodes sharing a PostgreSQL database tell each other that
    /// a device has new mail, e.g. `nats://127.0.0.1:4222` (the CLI's `--nats-url`). `None`
    /// means a single node: notifications stay in-process. Notifications are hints; the
    /// database stays the source of truth (see `safety_poll`).
    pub nats_url: Option<String>,
    /// This node's name in logs and in its NATS connection; `None` picks a random one.
    pub node_id: Option<String>,
    /// On PostgreSQL, how often a node compares the queues of its connected devices with what
    /// it has pushed, so that a lost notification delays an envelope by at most this long.
    pub safety_poll: Duration,
    /// How sends are batched into transactions.
    pub group_commit: GroupCommit,
    /// Sizes, counts and rates the server refuses to exceed.
    pub limits: Limits,
    /// How long a session token stays valid.
    pub session_ttl: Duration,
    /// How long a node reuses a session it read from the database, so that a device's
    /// requests do not each read it. A session logged out or a device removed on this node
    /// stops working at once; on another node sharing the database, within this long. Zero
    /// reads the database on every request.
    pub session_cache_ttl: Duration,
    /// How long an unacknowledged envelope (and an idempotency key) is kept.
    pub message_ttl: Duration,
    /// How long a device may stay pending (unapproved) before it is forgotten.
    pub pending_device_ttl: Duration,
    /// How often expired envelopes, sessions and rate-limit state are swept.
    pub sweep_interval: Duration,
    /// How long shutdown waits for in-flight requests and WebSockets before giving up on them.
    pub shutdown_grace: Duration,
    /// The file holding the OPAQUE server setup (OPRF seed and key-exchange key), kept out of
    /// the database so that a database copy alone allows no password guessing. `None` means
    /// `opaque-server-setup.key` in `data_dir` (mode 0600, created on first start). Several
    /// nodes sharing one database must share this file (the CLI's `--opaque-key-file`, env
    /// `NIGHTJAR_OPAQUE_KEY_FILE`).
    pub opaque_key_file: Option<PathBuf>,
    /// The file holding the key-transparency directory's secrets: the VRF key that places
    /// usernames in the tree and the key that signs epoch roots (clients pin the public
    /// halves). `None` means `directory.key` in `data_dir` (mode 0600, created with the
    /// directory). Nodes sharing a database share this file (the CLI's `--kt-key-file`).
    pub kt_key_file: Option<PathBuf>,
    /// How often the directory publishes a new epoch when entries changed (the CLI's
    /// `--kt-interval-ms`).
    pub kt_interval: Duration,
    /// The file holding the message-franking key, which stamps every franked application
    /// message so that a recipient can report it (docs/reporting.md). Kept out of the database
    /// so that a database copy cannot make stamps. `None` means `franking.key` in `data_dir`
    /// (mode 0600, created on first start). Nodes sharing a database share this file (the
    /// CLI's `--franking-key-file`); a node with another key refuses to start.
    pub franking_key_file: Option<PathBuf>,
    /// The file holding the moderators' bearer token for `GET /v1/moderation/reports` (one
    /// word of at least 16 characters, read once at start; the server keeps only its hash).
    /// `None` turns the moderation routes off: they answer 404 `not_configured` (the CLI's
    /// `--moderator-token-file`).
    pub moderator_token_file: Option<PathBuf>,
    /// Where Prometheus metrics (`GET /metrics`) are served: a listener of their own, never the
    /// public one, because they tell anyone the server's traffic. Loopback on a free port by
    /// default (see [`crate::RunningServer::metrics_addr`]); a fixed address for a scraper,
    /// e.g. `127.0.0.1:9464` (the CLI's `--metrics-listen`); `None` serves no metrics.
    pub metrics_listen: Option<SocketAddr>,
    /// The web app's built assets (`index.html`, the wasm module, its JavaScript glue and
    /// style sheet), served at `/`; `None` serves a page that says how to build them.
    pub web_dir: Option<PathBuf>,
    /// The TURN relay (coturn) that carries a call's media when two devices cannot reach each
    /// other directly; devices fetch short-lived credentials for it from `GET /v1/calls/turn`.
    /// `None` offers no relay: that route answers 404 `not_configured`.
    pub turn: Option<TurnConfig>,
    /// The selective forwarding unit that carries group calls (`POST
    /// /v1/calls/{conversation}/sfu`): one UDP socket in this process. On by default on
    /// loopback (`127.0.0.1:0`, a free port; see [`crate::RunningServer::sfu`]); `None` runs
    /// none, and the route answers 404 `not_configured`. A call's room lives on the node where
    /// it was joined: with several nodes, send a conversation's calls to one node.
    pub sfu: Option<SfuSettings>,
    /// Attachments: where the blob store keeps its ciphertext, and its limits and lifetimes
    /// (docs/attachments.md).
    pub blobs: BlobSettings,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./nightjar-data"),
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)),
            database_url: None,
            nats_url: None,
            node_id: None,
            safety_poll: Duration::from_secs(3),
            group_commit: GroupCommit::default(),
            limits: Limits::default(),
            session_ttl: Duration::from_secs(30 * 24 * 3600),
            session_cache_ttl: Duration::from_secs(1),
            message_ttl: Duration::from_secs(30 * 24 * 3600),
            pending_device_ttl: Duration::from_secs(7 * 24 * 3600),
            sweep_interval: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(20),
            opaque_key_file: None,
            kt_key_file: None,
            kt_interval: Duration::from_secs(2),
            franking_key_file: None,
            moderator_token_file: None,
            metrics_listen: Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))),
            web_dir: None,
            turn: None,
            sfu: Some(SfuSettings::default()),
            blobs: BlobSettings::default(),
        }
    }
}

impl ServerConfig {
    /// The default configuration with a different data directory and listen address.
    pub fn new(data_dir: impl Into<PathBuf>, listen: SocketAddr) -> Self {
        Self {
            data_dir: data_dir.into(),
            listen,
            ..Self::default()
        }
    }
}

/// A coturn relay running with `use-auth-secret`: the server hands devices credentials that
/// coturn checks against the same shared secret, with no database and no call between the two
/// (see docs/calls.md). Only the secret file's path is here; the secret itself is read at
/// start and never printed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TurnConfig {
    /// The relay's URLs as a browser's `RTCIceServer.urls` takes them (RFC 7065), e.g.
    /// `turn:turn.example.org:3478?transport=udp`, `turns:turn.example.org:5349?transport=tcp`
    /// (the CLI's repeatable `--turn-url`). At least one; each `turn:`, `turns:`, `stun:` or
    /// `stuns:`.
    pub urls: Vec<String>,
    /// The file holding coturn's `static-auth-secret`, alone (surrounding whitespace and the
    /// final newline are ignored); read once at start, which fails if it is unreadable or empty
    /// (the CLI's `--turn-secret-file`).
    pub secret_file: PathBuf,
    /// How long a credential is valid, between [`TurnConfig::MIN_TTL`] and
    /// [`TurnConfig::MAX_TTL`] (the CLI's `--turn-ttl-secs`).
    pub ttl: Duration,
}

impl TurnConfig {
    /// The default lifetime of a credential: ten minutes. A device fetches credentials when it
    /// starts or answers a call (and again for an ICE restart), and coturn checks the expiry
    /// when an allocation is made, not while it is refreshed, so a call outlives its
    /// credential; a credential copied out of a device lets others open relays only for this
    /// long. It also leaves room for some clock skew between this server and the relay.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(600);
    /// The shortest lifetime accepted: a minute, above any sane clock skew.
    pub const MIN_TTL: Duration = Duration::from_secs(60);
    /// The longest lifetime accepted: a day.
    pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

    /// A relay at `urls` sharing the secret in `secret_file`, with the default lifetime.
    pub fn new(urls: Vec<String>, secret_file: impl Into<PathBuf>) -> Self {
        Self {
            urls,
            secret_file: secret_file.into(),
            ttl: Self::DEFAULT_TTL,
        }
    }
}

/// Where the group-call SFU listens and what it tells clients (the CLI's `--sfu-udp`,
/// `--sfu-public-addr`, `--no-sfu`; see docs/calls.md).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SfuSettings {
    /// The UDP address the SFU binds; every participant of every call talks to this one
    /// socket. Port 0 picks a free port.
    pub udp: SocketAddr,
    /// The address clients are told to send to (the one ICE candidate of every answer): the
    /// public address when the socket is bound to `0.0.0.0` or sits behind NAT or a port
    /// forward. `None` advertises the socket's own address, which must then be a specific one.
    pub public_addr: Option<SocketAddr>,
    /// The SFU's limits and tuning (rooms, participants per room, bandwidth estimation).
    pub config: nightjar_sfu::SfuConfig,
}

impl Default for SfuSettings {
    /// Loopback on a free port, the SFU's default limits: enough for calls on one machine.
    fn default() -> Self {
        Self {
            udp: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            public_addr: None,
            config: nightjar_sfu::SfuConfig::default(),
        }
    }
}

/// The blob store that holds attachments' ciphertext (docs/attachments.md): where its bytes
/// live, how large a blob and an account's blobs may be, and how long they are kept. The
/// database keeps each blob's metadata; the bytes are one object per part, at
/// `blobs/<hex SHA-256 of the capability>/<index>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlobSettings {
    /// Where the bytes live (the CLI's `--blob-store`, env `NIGHTJAR_BLOB_STORE`): `None` keeps
    /// them under `data_dir` (in `data_dir/blobs`); `file:///abs/path` under `/abs/path/blobs`;
    /// `s3://bucket` or `s3://bucket/prefix` in an S3-compatible store, whose endpoint,
    /// region and keys come from object_store's `AWS_*` environment variables
    /// (`AWS_ENDPOINT`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_ALLOW_HTTP`, ...) and from [`BlobSettings::store_options`].
    pub store: Option<String>,
    /// object_store options for an `s3://` store, applied over the environment's, e.g.
    /// `("aws_endpoint", "http://127.0.0.1:9010")` (the keys `AmazonS3ConfigKey` parses). For
    /// embedding and tests; the CLI takes them from the environment only.
    pub store_options: Vec<(String, String)>,
    /// The largest blob, in bytes (→ 413 `too_large`; the CLI's `--blob-max-bytes`).
    pub max_blob_bytes: u64,
    /// What one account's live blobs may add up to, in bytes (→ 507 `quota_exceeded`; the
    /// CLI's `--blob-quota-bytes`).
    pub quota_bytes: u64,
    /// The size of every part but a blob's last, in bytes (the CLI's `--blob-part-bytes`): one
    /// object each, and one request each to upload. A part is held in memory while it is
    /// stored, so at most [`BlobSettings::MAX_PART_BYTES`].
    pub part_bytes: u64,
    /// Uploads one account may have under way at once (→ 507 `quota_exceeded`).
    pub max_incomplete: u32,
    /// How long a blob is kept after it was created, at most (deleted sooner once every
    /// recipient device confirmed the download).
    pub ttl: Duration,
    /// How long an upload may stay incomplete after the blob was created.
    pub upload_ttl: Duration,
}

impl BlobSettings {
    /// The largest part size accepted.
    pub const MAX_PART_BYTES: u64 = 64 * 1024 * 1024;
    /// The most parts a blob of the largest size may have.
    pub const MAX_PARTS: u64 = 65_536;
}

impl Default for BlobSettings {
    fn default() -> Self {
        Self {
            store: None,
            store_options: Vec::new(),
            max_blob_bytes: 3 << 30,
            quota_bytes: 10 << 30,
            part_bytes: 4 << 20,
            max_incomplete: 16,
            ttl: Duration::from_secs(30 * 24 * 3600),
            upload_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

/// Group commit: concurrent sends share one durable transaction (one fsync) instead of one
/// each. A writer takes every send already waiting, up to `max_batch`, and lingers up to
/// `linger` for more while it has fewer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupCommit {
    /// Most sends in one transaction (1 disables batching).
    pub max_batch: usize,
    /// Writers committing batches at the same time on PostgreSQL (while one commits, the next
    /// gathers); SQLite always has one.
    pub writers: usize,
    /// How long a batch may wait for more sends before it commits (zero: never waits; under
    /// load batches still form while the previous one commits).
    pub linger: Duration,
}

impl Default for GroupCommit {
    fn default() -> Self {
        Self {
            max_batch: 128,
            writers: 4,
            linger: Duration::ZERO,
        }
    }
}

/// Limits on input size and request rates. Each refusal is a typed [`nightjar_api::ApiError`].
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest MLS message (envelope payload or Welcome) accepted, in bytes (→ 413 `too_large`).
    pub max_envelope_bytes: usize,
    /// Largest request body, in bytes (→ 413 `too_large`). Must leave room for a base64 envelope.
    pub max_body_bytes: usize,
    /// Envelopes a device may have queued; a send that would exceed it gets 507 `queue_full`.
    pub max_queue_len: u32,
    /// Most envelopes returned by one `GET /v1/messages`.
    pub max_inbox_page: u32,
    /// Most member devices a commit may declare for a conversation.
    pub max_conversation_members: usize,
    /// Most key packages in one upload (→ 413 `too_large`).
    pub max_key_packages_per_request: usize,
    /// Most unclaimed one-time key packages stored per device (→ 413 `too_large`).
    pub max_key_packages_stored: u32,
    /// Largest single key package, in bytes.
    pub max_key_package_bytes: usize,
    /// `replenish` is true when fewer than this many one-time key packages remain.
    pub key_package_low_water: u32,
    /// Most devices waiting for approval per account.
    pub max_pending_devices: u32,
    /// Well-formed password login attempts per account: a burst of this many, then one more
    /// every `login_window / login_attempts_per_account` (slowed with `retry_after_ms`, never
    /// locked out). Malformed requests are not counted.
    pub login_attempts_per_account: u32,
    /// Well-formed login and registration attempts per client address group (an IPv4 address,
    /// an IPv6 /64): a burst of this many, refilled evenly over `login_window`. Device-key
    /// sign-ins count in a separate bucket of the same size.
    pub login_attempts_per_ip: u32,
    /// The time over which the login limits refill completely.
    pub login_window: Duration,
    /// Sustained authenticated requests per second per device (token bucket refill rate).
    pub device_requests_per_second: f64,
    /// Burst of authenticated requests a device may make at once (token bucket size).
    pub device_request_burst: u32,
    /// Open password logins (between start and finish) kept at once, server-wide: a backstop
    /// for storage only; the per-address cap below is what a client meets.
    pub max_pending_logins: usize,
    /// Open logins (password and device-key) kept at once per client address group (an IPv4
    /// address, an IPv6 /64).
    pub max_pending_logins_per_address: usize,
    /// Application messages (and Welcomes) an account may have queued for another account
    /// that has not accepted it, in conversations that account has not accepted: a message
    /// request carries this many until it is accepted (→ 403 `message_request_limit`).
    pub max_request_messages: u32,
    /// Largest application message of a message request, in bytes.
    pub max_request_message_bytes: usize,
    /// Once a device holds this many envelopes, each sending account may hold at most
    /// `max_queue_share` of them (→ 507 `queue_full` for that sender only), so one sender
    /// cannot fill a queue for everybody.
    pub queue_share_after: u32,
    /// A sending account's share of a device's queue past `queue_share_after`.
    pub max_queue_share: u32,
    /// Envelopes a recipient account may have queued across its devices
    /// (→ 507 `queue_full`).
    pub max_account_queue_len: u32,
    /// Sustained envelopes per second a sending account may enqueue (fan-out: one message to a
    /// group of n other devices is n envelopes), per server node (→ 429 `rate_limited`).
    pub fan_out_per_second: f64,
    /// Burst of envelopes a sending account may enqueue at once, per server node.
    pub fan_out_burst: u32,
    /// Sustained bytes per second a sending account may enqueue (payload × recipients), per
    /// server node.
    pub fan_out_bytes_per_second: f64,
    /// Burst of bytes a sending account may enqueue at once, per server node.
    pub fan_out_bytes_burst: u64,
    /// One-time key packages one account may claim of another account per
    /// `key_package_claim_window`; later claims get the last-resort packages. An account's
    /// claims of its own devices are not limited.
    pub key_package_claims_per_target: u32,
    /// The window `key_package_claims_per_target` counts in.
    pub key_package_claim_window: Duration,
    /// Push streams (`GET /v1/stream`) one device may hold open on one node. The next one
    /// closes the device's oldest stream (close code 1008, "too many streams"), so a client
    /// whose old connection died unnoticed is never locked out.
    pub max_streams_per_device: usize,
    /// How long a stream opened without an `Authorization` header has to send its `auth`
    /// frame before the server closes it (close code 1008).
    pub stream_auth_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_envelope_bytes: 256 * 1024,
            max_body_bytes: 2 * 1024 * 1024,
            max_queue_len: 10_000,
            max_inbox_page: 500,
            max_conversation_members: 1_000,
            max_key_packages_per_request: 100,
            max_key_packages_stored: 500,
            max_key_package_bytes: 16 * 1024,
            key_package_low_water: 10,
            max_pending_devices: 4,
            login_attempts_per_account: 10,
            login_attempts_per_ip: 30,
            login_window: Duration::from_secs(15 * 60),
            device_requests_per_second: 20.0,
            device_request_burst: 100,
            max_pending_logins: 100_000,
            max_pending_logins_per_address: 64,
            max_request_messages: 5,
            max_request_message_bytes: 4 * 1024,
            queue_share_after: 2_000,
            max_queue_share: 1_000,
            max_account_queue_len: 50_000,
            fan_out_per_second: 500.0,
            fan_out_burst: 20_000,
            fan_out_bytes_per_second: 8.0 * 1024.0 * 1024.0,
            fan_out_bytes_burst: 256 * 1024 * 1024,
            key_package_claims_per_target: 5,
            key_package_claim_window: Duration::from_secs(3600),
            max_streams_per_device: 4,
            stream_auth_timeout: Duration::from_secs(5),
        }
    }
}
