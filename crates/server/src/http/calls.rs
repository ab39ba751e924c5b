//! Calls over HTTP: short-lived credentials for the TURN relay that carries a call's media
//! when two devices cannot reach each other directly. The server mints them (`turn.rs`) and
//! keeps nothing about them; the relay checks them on its own.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use nightjar_api::{ApiError, TurnCredentials};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::auth::ActiveSession;
use crate::error::Result;
use crate::state::{AppState, now_ms};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(turn))
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
