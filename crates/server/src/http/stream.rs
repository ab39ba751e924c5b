//! `GET /v1/stream`: the WebSocket that pushes a device's envelopes.
//!
//! On connect it sends everything queued, in order, then `drained`, then new envelopes as they
//! are accepted. It subscribes to notifications *before* its first read and only ever sends
//! the envelope after the last id it sent (a device's queue ids are committed in increasing
//! order), so nothing accepted meanwhile can be skipped or sent twice. Envelopes committed on
//! this node arrive in memory and are pushed without a database read; a gap in the ids, or a
//! newer id announced by another node or the safety poll, makes it read the database from the
//! last id sent. The client acknowledges with `ack` frames (or `POST /v1/messages/ack`);
//! unacknowledged envelopes are sent again on the next connection.
//!
//! Hostile clients (issue 8, findings 9 and 11): the session token comes in an
//! `Authorization` header or, for browsers, in an `auth` frame that must be the first frame,
//! within `Limits::stream_auth_timeout`; never in the URL, where logs would keep it. A client
//! frame may not announce more than [`MAX_CLIENT_FRAME`] bytes: the WebSocket layer refuses it
//! at the frame header, before reserving memory for it. A device holds at most
//! `Limits::max_streams_per_device` streams per node ([`crate::stream_slots`]), and a stream
//! that answers no ping for [`STALE`] is closed.

use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade, close_code};
use axum::http::{HeaderMap, Uri};
use axum::response::Response;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use nightjar_api::{ApiError, ClientFrame, ErrorCode, ServerFrame};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::messages::acknowledge;
use crate::auth::{Session, authenticate, bearer, require_active};
use crate::error::{Error, Result};
use crate::notify::Subscription;
use crate::state::{AppState, now_ms};

/// Envelopes read from the database per round.
const PAGE: u32 = 100;
/// Largest frame, and largest message, a client may send (acks and the auth frame). The frame
/// limit is what bounds memory: the WebSocket layer reserves a frame's announced length.
pub(crate) const MAX_CLIENT_FRAME: usize = 64 * 1024;
/// Acknowledgements of one stream committing at once; past that the stream stops reading.
const MAX_PENDING_ACKS: usize = 8;
/// The WebSocket read buffer, per connection.
const READ_BUFFER: usize = 4 * 1024;
/// How often the stream pings and re-checks that its session is still valid.
const HEARTBEAT: Duration = Duration::from_secs(30);
/// A stream from which nothing (not even a pong) arrived for this long is closed: it is dead,
/// or stuck in the middle of a frame it never finishes.
const STALE: Duration = Duration::from_secs(75);
/// How long a new stream waits for notifications from other nodes to reach it before its
/// first read (past that, the safety poll covers the gap).
const SUBSCRIBE_WAIT: Duration = Duration::from_secs(2);

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(stream))
}

/// Whether the query string names a `token` (the old way to authenticate a stream).
fn token_in_query(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&').any(|pair| {
            pair.split('=')
                .next()
                .is_some_and(|k| k.eq_ignore_ascii_case("token"))
        })
    })
}

/// Opens the push stream (WebSocket, JSON text frames: `ServerFrame` out, `ClientFrame` in).
/// Authenticate with an `Authorization: Bearer` header, or (browsers) with a first frame
/// `{"type":"auth","token":"..."}` within a few seconds; a token in the URL is refused.
/// Client frames and messages are limited to 64 KiB. A device holds at most a few streams per
/// server node: one more closes its oldest (close code 1008, "too many streams").
#[utoipa::path(get, path = "/v1/stream", tag = "messages",
    security(("bearer" = []), ()),
    responses(
        (status = 101, description = "switching to the WebSocket protocol"),
        (status = 400, description = "not a WebSocket upgrade, or a token in the URL", body = ApiError),
        (status = 401, description = "the Authorization header names no valid session", body = ApiError),
        (status = 403, description = "pending device", body = ApiError),
        (status = 429, description = "the device's request rate is exceeded", body = ApiError),
    ))]
async fn stream(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
    upgrade: std::result::Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response> {
    if token_in_query(uri.query()) {
        return Err(Error::bad_request(
            "a session token is not accepted in the URL (logs keep URLs): send it in an \
             Authorization header or as the first frame {\"type\":\"auth\",\"token\":\"...\"}",
        ));
    }
    let session = match bearer(&headers) {
        Some(token) => Some(require_active(authenticate(&state, token).await?)?.0),
        None => None,
    };
    let upgrade = upgrade.map_err(|_| Error::bad_request("expected a WebSocket upgrade"))?;
    let tracker = state.streams.clone();
    Ok(upgrade
        .max_frame_size(MAX_CLIENT_FRAME)
        .max_message_size(MAX_CLIENT_FRAME)
        // Clients only send acks: a small read buffer keeps an idle connection's memory low
        // (the default of 128 KiB is most of what a connection costs).
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| tracker.track_future(run(state, session, socket))))
}

/// Why a stream ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// The server is shutting down.
    Shutdown,
    /// The device or its session was revoked.
    Revoked,
    /// The client closed or the connection broke.
    Gone,
    /// The database failed.
    Failed,
    /// The device opened more streams than allowed; this was its oldest.
    Evicted,
    /// Nothing arrived for [`STALE`], not even a pong.
    Stale,
}

/// Counts the connection in the gauge while alive.
struct Connected<'a>(&'a prometheus_client::metrics::gauge::Gauge);

impl Drop for Connected<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Closes the socket with `code` and `reason` (best effort: the peer may be gone).
async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame {
        code,
        reason: reason.into(),
    };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

async fn run(state: AppState, session: Option<Session>, mut socket: WebSocket) {
    let session = match session {
        Some(session) => session,
        None => match first_frame_auth(&state, &mut socket).await {
            Ok(session) => session,
            Err(reason) => {
                if let Some(reason) = reason {
                    close(&mut socket, close_code::POLICY, reason).await;
                }
                return;
            }
        },
    };
    let slot = state
        .stream_slots
        .admit(session.device.device_pk, &state.shutdown);
    state.metrics.websockets.inc();
    let _connected = Connected(&state.metrics.websockets);
    let mut subscription = state.notifier.subscribe(session.device.device_pk);
    if let Some(ready) = subscription.ready.take() {
        let _ = tokio::time::timeout(SUBSCRIBE_WAIT, ready).await;
    }
    let end = drive(
        &state,
        &session,
        &mut socket,
        &mut subscription,
        &slot.evicted,
    )
    .await;
    let reason = match end {
        End::Shutdown => Some((close_code::AWAY, "server shutting down")),
        End::Revoked => Some((close_code::POLICY, "session revoked")),
        End::Failed => Some((close_code::ERROR, "server error")),
        End::Evicted => Some((
            close_code::POLICY,
            "too many streams for this device: the oldest is closed",
        )),
        End::Stale => Some((close_code::POLICY, "no answer to pings")),
        End::Gone => None,
    };
    if let Some((code, reason)) = reason {
        close(&mut socket, code, reason).await;
    }
    tracing::debug!(?end, "stream closed");
}

/// Waits for the `auth` frame of a stream opened without an `Authorization` header. `Err`
/// carries the close reason (`None`: the client is gone); a refused token also gets an error
/// frame first.
async fn first_frame_auth(
    state: &AppState,
    socket: &mut WebSocket,
) -> std::result::Result<Session, Option<&'static str>> {
    let wait = state.config.limits.stream_auth_timeout;
    let token = match tokio::time::timeout(wait, auth_token(socket)).await {
        Err(_) => return Err(Some("did not authenticate in time")),
        Ok(Err(AuthFrame::Gone)) => return Err(None),
        Ok(Err(AuthFrame::Other)) => {
            let error = ApiError::new(
                ErrorCode::Unauthorized,
                "authenticate first: send {\"type\":\"auth\",\"token\":\"...\"} as the first frame",
            );
            let _ = send_frame(socket, &ServerFrame::Error { error }).await;
            return Err(Some("authenticate with the first frame"));
        }
        Ok(Ok(token)) => token,
    };
    let checked = match authenticate(state, &token.0).await {
        Ok(session) => require_active(session).map(|active| active.0),
        Err(e) => Err(e),
    };
    match checked {
        Ok(session) => Ok(session),
        Err(e) => {
            let error = Error::into_api_error(e);
            let _ = send_frame(socket, &ServerFrame::Error { error }).await;
            Err(Some("authentication failed"))
        }
    }
}

/// Why no token arrived.
enum AuthFrame {
    /// The client closed or the connection broke.
    Gone,
    /// The first frame was not an `auth` frame.
    Other,
}

async fn auth_token(
    socket: &mut WebSocket,
) -> std::result::Result<nightjar_api::StreamToken, AuthFrame> {
    loop {
        match socket.recv().await {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            Some(Ok(Message::Text(text))) => {
                return match serde_json::from_str::<ClientFrame>(text.as_str()) {
                    Ok(ClientFrame::Auth { token }) => Ok(token),
                    _ => Err(AuthFrame::Other),
                };
            }
            Some(Ok(Message::Binary(_))) => return Err(AuthFrame::Other),
            Some(Ok(Message::Close(_)) | Err(_)) | None => return Err(AuthFrame::Gone),
        }
    }
}

async fn send_frame(socket: &mut WebSocket, frame: &ServerFrame) -> std::result::Result<(), End> {
    let text = serde_json::to_string(frame).map_err(|_| End::Failed)?;
    socket
        .send(Message::Text(text.into()))
        .await
        .map_err(|_| End::Gone)
}

/// Sends every envelope after `cursor` from the database, advancing it. When `known` ids up to
/// some id were committed before the read started, the cursor moves past that id even if the
/// queue no longer holds it (acknowledged elsewhere, expired): those ids need no other read.
async fn push_pending(
    state: &AppState,
    device_pk: i64,
    socket: &mut WebSocket,
    cursor: &mut u64,
    known: u64,
) -> std::result::Result<(), End> {
    loop {
        let page = state
            .store
            .inbox(device_pk, *cursor, PAGE)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "stream read failed");
                End::Failed
            })?;
        let done = page.len() < PAGE as usize;
        for envelope in page {
            *cursor = envelope.id;
            send_frame(socket, &ServerFrame::Envelope { envelope }).await?;
            state.metrics.envelopes_delivered.inc();
        }
        if done {
            *cursor = (*cursor).max(known);
            return Ok(());
        }
    }
}

/// Pushes an envelope handed over in memory, unless it was sent already; reads the database
/// when ids are missing before it.
async fn push_one(
    state: &AppState,
    device_pk: i64,
    socket: &mut WebSocket,
    cursor: &mut u64,
    envelope: nightjar_api::Envelope,
) -> std::result::Result<(), End> {
    if envelope.id <= *cursor {
        return Ok(());
    }
    if envelope.id != *cursor + 1 {
        return push_pending(state, device_pk, socket, cursor, 0).await;
    }
    *cursor = envelope.id;
    send_frame(socket, &ServerFrame::Envelope { envelope }).await?;
    state.metrics.envelopes_delivered.inc();
    Ok(())
}

/// What a client frame asks for.
enum Incoming {
    /// Nothing more to do (or a refusal was sent).
    Done,
    /// Acknowledge these envelopes.
    Ack(Vec<u64>),
}

async fn handle_client(
    socket: &mut WebSocket,
    message: Message,
) -> std::result::Result<Incoming, End> {
    let refusal = match message {
        Message::Text(text) => match serde_json::from_str::<ClientFrame>(text.as_str()) {
            Ok(ClientFrame::Ack { ids }) => return Ok(Incoming::Ack(ids)),
            Ok(ClientFrame::Auth { .. }) => ApiError::new(
                ErrorCode::BadRequest,
                "this stream is authenticated already",
            ),
            Err(_) => ApiError::new(ErrorCode::BadRequest, "unrecognised frame"),
        },
        Message::Binary(_) => ApiError::new(ErrorCode::BadRequest, "frames are JSON text"),
        Message::Close(_) => return Err(End::Gone),
        Message::Ping(_) | Message::Pong(_) => return Ok(Incoming::Done),
    };
    send_frame(socket, &ServerFrame::Error { error: refusal }).await?;
    Ok(Incoming::Done)
}

async fn drive(
    state: &AppState,
    session: &Session,
    socket: &mut WebSocket,
    subscription: &mut Subscription,
    stop: &CancellationToken,
) -> End {
    let device_pk = session.device.device_pk;
    let mut cursor = 0;
    if let Err(end) = push_pending(state, device_pk, socket, &mut cursor, 0).await {
        return end;
    }
    if let Err(end) = send_frame(socket, &ServerFrame::Drained).await {
        return end;
    }
    let mut heartbeat = tokio::time::interval_at(Instant::now() + HEARTBEAT, HEARTBEAT);
    let mut heard = Instant::now();
    // Acknowledgements commit in the background: an envelope accepted meanwhile is pushed at
    // once instead of waiting for the ack batch to commit.
    let mut acks = FuturesUnordered::new();
    // One token for shutdown and eviction (a child of the shutdown token), and its future made
    // once: a cancellation future registers with its token when first polled, and making new
    // ones on every turn would register and unregister on every frame.
    let stop = stop.cancelled();
    tokio::pin!(stop);
    loop {
        let step = tokio::select! {
            // Envelopes in memory before the id that announces them: usually no read at all.
            biased;
            () = &mut stop => Err(if state.shutdown.is_cancelled() {
                End::Shutdown
            } else {
                End::Evicted
            }),
            Some(envelope) = subscription.envelopes.recv() => {
                push_one(state, device_pk, socket, &mut cursor, envelope).await
            }
            changed = subscription.signal.changed() => {
                let signal = *subscription.signal.borrow_and_update();
                if changed.is_err() || signal.revoked {
                    Err(End::Revoked)
                } else if signal.latest > cursor {
                    push_pending(state, device_pk, socket, &mut cursor, signal.latest).await
                } else {
                    Ok(())
                }
            }
            Some(acked) = acks.next(), if !acks.is_empty() => match acked {
                Ok(()) => Ok(()),
                Err(e) => {
                    let error = Error::into_api_error(e);
                    send_frame(socket, &ServerFrame::Error { error }).await
                }
            },
            // A client that acknowledges faster than the database commits waits here.
            incoming = socket.recv(), if acks.len() < MAX_PENDING_ACKS => match incoming {
                Some(Ok(message)) => {
                    heard = Instant::now();
                    match handle_client(socket, message).await {
                        Ok(Incoming::Ack(ids)) => {
                            acks.push(async move { acknowledge(state, device_pk, &ids).await });
                            Ok(())
                        }
                        Ok(Incoming::Done) => Ok(()),
                        Err(end) => Err(end),
                    }
                }
                Some(Err(_)) | None => Err(End::Gone),
            },
            _ = heartbeat.tick() => if heard.elapsed() > STALE {
                Err(End::Stale)
            } else {
                match state.store.session(&session.token_hash, now_ms()).await {
                    Ok(Some(_)) => socket.send(Message::Ping(Default::default())).await.map_err(|_| End::Gone),
                    Ok(None) => Err(End::Revoked),
                    Err(_) => Err(End::Failed),
                }
            },
        };
        if let Err(end) = step {
            return end;
        }
    }
}
