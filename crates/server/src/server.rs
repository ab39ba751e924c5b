//! Starting, running and stopping the server: bind, serve, sweep, shut down gracefully.

use std::future::{Future, IntoFuture as _};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::ServerConfig;
use crate::error::ServerError;
use crate::state::{AppState, now_ms};
use crate::store::Store;

/// A server accepting connections. Dropping it does not stop it; call [`Self::shutdown`].
#[derive(Debug)]
pub struct RunningServer {
    local_addr: SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), ServerError>>,
}

impl RunningServer {
    /// The address the server is bound to (useful after listening on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting connections, lets in-flight requests finish, closes WebSockets with a
    /// "going away" frame, closes the database, and returns when all of that is done (or the
    /// configured grace period ran out).
    pub async fn shutdown(self) -> Result<(), ServerError> {
        self.shutdown.cancel();
        joined(self.task.await)
    }
}

fn joined(
    result: Result<Result<(), ServerError>, tokio::task::JoinError>,
) -> Result<(), ServerError> {
    result.map_err(|_| ServerError::Io(std::io::Error::other("the server task failed")))?
}

/// Opens the database (running migrations), binds the listen address and starts serving in
/// the background.
pub async fn start(config: ServerConfig) -> Result<RunningServer, ServerError> {
    let store = Store::open(&config.data_dir, config.database_url.as_deref()).await?;
    let opaque = crate::opaque::load_setup(&store).await?;
    let listener = TcpListener::bind(config.listen).await?;
    let local_addr = listener.local_addr()?;
    let state = AppState::new(config, store, opaque);
    let depth = state.store.queue_depth().await?;
    state
        .metrics
        .queue_depth
        .set(i64::try_from(depth).unwrap_or(i64::MAX));
    let shutdown = state.shutdown.clone();
    let task = tokio::spawn(serve(listener, state));
    tracing::info!(%local_addr, "nightjar server listening");
    Ok(RunningServer {
        local_addr,
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
    let mut server = start(config).await?;
    tokio::select! {
        () = shutdown => server.shutdown().await,
        result = &mut server.task => joined(result),
    }
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
    state.store.close().await;
    tracing::info!("nightjar server stopped");
    result
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

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One round of expiry: database rows, rate-limit state, stale logins; resets the queue gauge.
pub(crate) async fn sweep_once(state: &AppState) {
    let now = Instant::now();
    state.login_by_account.prune(now);
    state.login_by_ip.prune(now);
    state.device_rate.prune(now);
    state.logins.prune(now);
    let config = &state.config;
    match state
        .store
        .sweep(
            now_ms(),
            millis(config.message_ttl),
            millis(config.pending_device_ttl),
        )
        .await
    {
        Ok(report) => tracing::debug!(?report, "sweep"),
        Err(e) => tracing::error!(error = %e, "sweep failed"),
    }
    if let Ok(depth) = state.store.queue_depth().await {
        state
            .metrics
            .queue_depth
            .set(i64::try_from(depth).unwrap_or(i64::MAX));
    }
}
