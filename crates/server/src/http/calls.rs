//! Calls over HTTP: short-lived credentials for the TURN relay that carries a call's media
//! when two devices cannot reach each other directly (the server mints them in `turn.rs` and
//! keeps nothing about them; the relay checks them on its own), and the join of a
//! conversation's group call on this node's SFU (`group_calls.rs`).

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use nightjar_api::{ApiError, ErrorCode, MAX_SFU_OFFER_BYTES, SfuAnswer, SfuJoin, TurnCredentials};
use nightjar_sfu::SfuError;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::messages::parse_conversation;
use super::{Json, Path};
use crate::auth::ActiveSession;
use crate::error::{Error, Result};
use crate::group_calls::JoinRefusal;
use crate::rules::calls::{Seat, participant_id};
use crate::state::{AppState, now_ms};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(turn))
        .routes(routes!(join_sfu))
}

/// Fresh credentials for the server's TURN relay (coturn, `use-auth-secret`), to pass as one
/// entry of `RTCPeerConnection({iceServers: [{urls, username, credential}]})`. Every call
/// returns a new random username (naming no account or device); the relay accepts it for new
/// allocations until `expires_at`. Fetch them for each call and each ICE restart.
#[utoipa::path(get, path = "/v1/calls/turn", tag = "calls",
    security(("bearer" = [])),
    responses(
        (status = 200, body = TurnCredentials,
            headers(("cache-control" = String, description = "`no-store`: the credential is a secret"))),
        (status = 401, body = ApiError),
        (status = 403, description = "pending device", body = ApiError),
        (status = 404, description = "`not_configured`: this server has no TURN relay", body = ApiError),
        (status = 429, description = "too many requests", body = ApiError),
    ))]
async fn turn(
    State(state): State<AppState>,
    ActiveSession(_): ActiveSession,
) -> Result<impl IntoResponse> {
    let turn = state
        .turn
        .as_ref()
        .ok_or_else(crate::turn::not_configured)?;
    let credentials = turn.credentials(now_ms() / 1000)?;
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(credentials),
    ))
}

/// Joins the conversation's group call on this server's selective forwarding unit (SFU) with
/// the device's SDP offer, which must open a data channel labelled `nightjar-sfu`; answers the
/// SFU's SDP answer and the device's participant id (its device id as a decimal number). Only an
/// active member device of the conversation (by the last commit the server accepted) may join;
/// a device that stops being one (removed by a commit, or the device removed) is cut off at
/// once. Joining again replaces the device's earlier connection. The SFU forwards the
/// SFrame-encrypted frames it receives without being able to decrypt them.
#[utoipa::path(post, path = "/v1/calls/{conversation_id}/sfu", tag = "calls",
    security(("bearer" = [])),
    params(("conversation_id" = String, Path, description = "32 lowercase hex digits",
        pattern = "^[0-9a-f]{32}$")),
    request_body = SfuJoin,
    responses(
        (status = 200, body = SfuAnswer,
            headers(("cache-control" = String, description = "`no-store`"))),
        (status = 400, description = "malformed request, an offer longer than 32 KiB, or an \
            offer the SFU cannot take (not SDP, or no `nightjar-sfu` data channel)",
            body = ApiError),
        (status = 401, body = ApiError),
        (status = 403, description = "`not_a_member`: the device is not an active member \
            device of the conversation (or there is no such conversation); or a pending \
            device", body = ApiError),
        (status = 404, description = "`not_configured`: this server runs no SFU", body = ApiError),
        (status = 409, description = "`call_full`: the call holds as many participants as the \
            SFU takes; `participant_conflict`: another device with this device id is in the \
            call", body = ApiError),
        (status = 429, description = "too many requests, or `too_many_calls`: the SFU holds \
            as many calls as it takes", body = ApiError),
    ))]
async fn join_sfu(
    State(state): State<AppState>,
    ActiveSession(session): ActiveSession,
    Path(conversation_id): Path<String>,
    Json(request): Json<SfuJoin>,
) -> Result<impl IntoResponse> {
    let conversation = parse_conversation(&conversation_id)?;
    let calls = state.calls.as_ref().ok_or_else(not_configured)?;
    if request.offer.len() > MAX_SFU_OFFER_BYTES {
        // 400, not 413: the document caps `offer` (maxLength), so this is a malformed request.
        return Err(Error::bad_request(format!(
            "the offer is longer than {MAX_SFU_OFFER_BYTES} bytes; an SDP offer is a few KB"
        )));
    }
    let seat = Seat {
        device_pk: session.device.device_pk,
        address: session.address(),
    };
    let participant = participant_id(&seat.address.username, &seat.address.device_id)
        .ok_or(Error::Internal("a stored device id is not 16 hex digits"))?;
    let answer = calls
        .join(&state.store, conversation, participant, seat, request.offer)
        .await
        .map_err(refusal)?;
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(SfuAnswer {
            answer,
            participant: participant.to_string(),
        }),
    ))
}

/// The refusal when no SFU runs.
fn not_configured() -> Error {
    Error::new(
        ErrorCode::NotConfigured,
        "this server runs no SFU for group calls",
    )
}

/// The API error for a refused join.
fn refusal(refusal: JoinRefusal) -> Error {
    match refusal {
        JoinRefusal::NotAMember => Error::new(
            ErrorCode::NotAMember,
            "this device is not a member of the conversation",
        ),
        JoinRefusal::Taken => Error::new(
            ErrorCode::ParticipantConflict,
            "another device with this device id is in the call",
        ),
        JoinRefusal::Database(e) => Error::Database(e),
        JoinRefusal::Sfu(e) => match e {
            // The engine's text may quote the offer (the device's addresses): neither logged
            // nor echoed.
            SfuError::InvalidSdp(_) => {
                Error::bad_request("the offer is not an SDP offer the SFU can take")
            }
            SfuError::NoDataChannel => Error::bad_request(
                "the offer has no data channel: open one labelled `nightjar-sfu`",
            ),
            SfuError::RoomFull { max, .. } => Error::new(
                ErrorCode::CallFull,
                format!("the call already has {max} participants"),
            ),
            SfuError::TooManyRooms(_) => Error::new(
                ErrorCode::TooManyCalls,
                "the server holds as many group calls as it can; try again later",
            ),
            SfuError::AlreadyJoined { .. } => Error::new(
                ErrorCode::ParticipantConflict,
                "this device is joining the call on another connection",
            ),
            _ => Error::Internal("the SFU failed"),
        },
    }
}
