//! Starting, running and stopping the server: bind, serve, sweep, shut down gracefully.

use std::future::{Future, IntoFuture as _};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::ServerConfig;
use crate::error::ServerError;
use crate::group_calls::GroupCalls;
use crate::metrics::Metrics;
use crate::notify::{Notifier, Remote};
use crate::state::{AppState, Services, now_ms};
use crate::store::{CommitSink, DatabaseKind, Lifetimes, Queued, Store};
use prometheus_client::metrics::histogram::Histogram;

/// A server accepting connections. Dropping it does not stop it; call [`Self::shutdown`].
#[derive(Debug)]
pub struct RunningServer {
    local_addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    sfu: Option<nightjar_sfu::Sfu>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), ServerError>>,
}

impl RunningServer {
    /// The address the server is bound to (useful after listening on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The address `GET /metrics` is served on (its own listener, see
    /// [`ServerConfig::metrics_listen`]); `None` when metrics are not served.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The group-call SFU this server runs ([`ServerConfig::sfu`]), for its UDP address
    /// ([`nightjar_sfu::Sfu::local_addr`]) and, in tests, its rooms (`participants`, `tap`,
    /// `events`); `None` when it runs none.
    pub fn sfu(&self) -> Option<&nightjar_sfu::Sfu> {
        self.sfu.as_ref()
    }

    /// Stops accepting connections, lets in-flight requests finish, closes WebSockets with a
    /// "going away" frame, closes the database, and returns when all of that is done (or the
    /// configured grace period ran out).
    pub async fn shutdown(self) -> Result<(), ServerError> {
        self.shutdown.cancel();
        joined(self.task.await)
    }

    /// Serves until `shutdown` completes (for example [`shutdown_signal`]), then shuts down
    /// gracefully; returns early if the server fails on its own.
    pub async fn serve_until(
        mut self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        tokio::select! {
            () = shutdown => self.shutdown().await,
            result = &mut self.task => joined(result),
        }
    }
}

fn joined(
    result: Result<Result<(), ServerError>, tokio::task::JoinError>,
) -> Result<(), ServerError> {
    result.map_err(|_| ServerError::Io(std::io::Error::other("the server task failed")))?
}

/// What the group-commit writers report to: the push path, and the batch-size histogram.
#[derive(Debug)]
struct Committed {
    notifier: Notifier,
    batch_size: Histogram,
}

impl CommitSink for Committed {
    fn queued(&self, queued: Vec<Queued>) {
        self.notifier.queued(queued);
    }

    fn committed(&self, sends: usize) {
        self.batch_size.observe(sends as f64);
    }
}

/// Name of the stored cluster id (shared by the nodes of one database).
const CLUSTER_ID: &str = "cluster_id_v1";

/// Opens the database (running migrations), connects to NATS if configured, binds the listen
/// address and starts serving in the background.
pub async fn start(config: ServerConfig) -> Result<RunningServer, ServerError> {
    let kind = DatabaseKind::of(config.database_url.as_deref())?;
    if config.nats_url.is_some() && kind != DatabaseKind::Postgres {
        return Err(ServerError::Config(
            "NATS connects server nodes that share a PostgreSQL database; \
             --nats-url needs a postgres:// --database-url"
                .into(),
        ));
    }
    // Before anything is opened: a bad relay setting is a configuration error at once.
    let turn = config
        .turn
        .as_ref()
        .map(crate::turn::Turn::load)
        .transpose()?;
    let blobs = crate::blobs::BlobStore::open(&config.blobs, &config.data_dir)?;
    let moderator = config
        .moderator_token_file
        .as_deref()
        .map(crate::franking::ModeratorToken::load)
        .transpose()?;
    let calls = config
        .sfu
        .as_ref()
        .map(GroupCalls::start)
        .transpose()?
        .map(Arc::new);
    let sfu = calls.as_ref().map(|calls| calls.sfu().clone());
    let sfu_addr = sfu.as_ref().map(nightjar_sfu::Sfu::local_addr);
    let node = config.node_id.clone().unwrap_or_else(|| random_hex(4));
    let notifier = Notifier::default();
    let metrics = Metrics::new();
    let sink = Committed {
        notifier: notifier.clone(),
        batch_size: metrics.send_batch_size.clone(),
    };
    let store = Store::open(
        &config.data_dir,
        config.database_url.as_deref(),
        config.group_commit,
        Arc::new(sink),
    )
    .await?;
    let opaque = crate::opaque::load_setup(&store, &config).await?;
    let transparency = crate::transparency::Transparency::open(&store, &config).await?;
    let franker = crate::franking::load(&store, &config).await?;
    if let Some(url) = &config.nats_url {
        let cluster = store
            .init_server_state(CLUSTER_ID, random_hex(8).as_bytes())
            .await?;
        let cluster = String::from_utf8(cluster).map_err(|_| ServerError::Corrupt("cluster id"))?;
        notifier.attach(Remote::connect(url, &node, &cluster).await?);
    }
    let listener = TcpListener::bind(config.listen).await?;
    let local_addr = listener.local_addr()?;
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(TcpListener::bind(addr).await?),
        None => None,
    };
    let metrics_addr = metrics_listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?;
    let state = AppState::new(
        config,
        store,
        opaque,
        transparency,
        notifier,
        metrics,
        Services {
            turn,
            group: calls,
            blobs,
            franker,
            moderator,
        },
    );
    let depth = state.store.queue_depth().await?;
    state
        .metrics
        .queue_depth
        .set(i64::try_from(depth).unwrap_or(i64::MAX));
    let shutdown = state.shutdown.clone();
    if let Some(metrics) = metrics_listener {
        tokio::spawn(serve_metrics(metrics, state.clone()));
    }
    tokio::spawn(crate::blobs::probe(state.blobs.clone()));
    let task = tokio::spawn(serve(listener, state));
    tracing::info!(%local_addr, ?metrics_addr, ?sfu_addr, %node, database = ?kind, "nightjar server listening");
    Ok(RunningServer {
        local_addr,
        metrics_addr,
        sfu,
        shutdown,
        task,
    })
}

/// Runs the server until `shutdown` completes (for example [`shutdown_signal`]), then shuts
/// down gracefully.
pub async fn run(
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    start(config).await?.serve_until(shutdown).await
}

/// Completes on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
pub async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutdown requested");
}

async fn serve(listener: TcpListener, state: AppState) -> Result<(), ServerError> {
    let sweeper = tokio::spawn(sweep_loop(state.clone()));
    let publisher = tokio::spawn(crate::transparency::run_publisher(
        state.clone(),
        state.shutdown.clone(),
    ));
    let calls = state
        .calls
        .clone()
        .map(|calls| tokio::spawn(recheck_loop(calls, state.clone())));
    // Other nodes write to the same queues: bound what a lost notification costs.
    let poller = (state.store.kind() == DatabaseKind::Postgres)
        .then(|| tokio::spawn(poll_loop(state.clone())));
    let app = crate::http::router(state.clone());
    let shutdown = state.shutdown.clone();
    let grace = state.config.shutdown_grace;
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.clone().cancelled_owned())
    .into_future();
    let result = tokio::select! {
        result = server => result.map_err(ServerError::from),
        () = grace_expired(&shutdown, grace) => {
            tracing::warn!("in-flight requests did not finish in time");
            Ok(())
        }
    };
    // Streams watch the same token: each sends a close frame and ends.
    state.streams.close();
    if tokio::time::timeout(grace, state.streams.wait())
        .await
        .is_err()
    {
        tracing::warn!("WebSocket streams did not close in time");
    }
    sweeper.abort();
    publisher.abort();
    if let Some(calls) = calls {
        calls.abort();
    }
    if let Some(calls) = &state.calls {
        calls.close_all().await;
    }
    if let Some(poller) = poller {
        poller.abort();
    }
    state.store.close().await;
    tracing::info!("nightjar server stopped");
    result
}

/// Serves `GET /metrics` on its own listener until shutdown.
async fn serve_metrics(listener: TcpListener, state: AppState) {
    let shutdown = state.shutdown.clone();
    let app = crate::metrics::router(state);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "the metrics listener failed");
    }
}

async fn grace_expired(shutdown: &CancellationToken, grace: Duration) {
    shutdown.cancelled().await;
    tokio::time::sleep(grace).await;
}

async fn sweep_loop(state: AppState) {
    let mut tick = tokio::time::interval(state.config.sweep_interval.max(Duration::from_secs(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            _ = tick.tick() => sweep_once(&state).await,
        }
    }
}

/// Checks every group call's participants against the database, for commits accepted and
/// devices removed on other nodes (this node's own are checked at once).
async fn recheck_loop(calls: Arc<GroupCalls>, state: AppState) {
    let mut tick = tokio::time::interval(crate::group_calls::RECHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            _ = tick.tick() => calls.recheck_all(&state.store).await,
        }
    }
}

/// Wakes the streams of connected devices whose queues grew without a notification reaching
/// this node.
async fn poll_loop(state: AppState) {
    let period = state.config.safety_poll.max(Duration::from_millis(50));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = state.shutdown.cancelled() => return,
            _ = tick.tick() => {
                let devices = state.notifier.connected();
                if devices.is_empty() {
                    continue;
                }
                match state.store.queue_heads(&devices).await {
                    Ok(heads) => {
                        for (device, latest) in heads {
                            state.notifier.bump(device, latest);
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "safety poll failed"),
                }
            }
        }
    }
}

/// `n` random bytes as lowercase hex.
fn random_hex(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut bytes);
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One round of expiry: database rows (stale logins included), blobs and their objects,
/// rate-limit state; resets the queue gauge.
pub(crate) async fn sweep_once(state: &AppState) {
    let now = Instant::now();
    state.login_by_account.prune(now);
    state.login_by_ip.prune(now);
    state.device_login_by_ip.prune(now);
    state.device_rate.prune(now);
    state.sealed_refusals.prune(now);
    let config = &state.config;
    match state
        .store
        .sweep(
            now_ms(),
            Lifetimes {
                message_ttl_ms: millis(config.message_ttl),
                pending_ttl_ms: millis(config.pending_device_ttl),
                claim_window_ms: millis(config.limits.key_package_claim_window),
            },
        )
        .await
    {
        Ok(report) => tracing::debug!(?report, "sweep"),
        Err(e) => tracing::error!(error = %e, "sweep failed"),
    }
    crate::blobs::sweep(state, now_ms()).await;
    if let Ok(depth) = state.store.queue_depth().await {
        state
            .metrics
            .queue_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }
}
