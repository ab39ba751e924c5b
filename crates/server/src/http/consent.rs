//! Consent over HTTP: accept, block or forget an account, list those decisions, and report an
//! account (which blocks it). The send path enforces them (`rules::consent`).

use axum::extract::State;
use axum::http::StatusCode;
use nightjar_api::{
    ApiError, ConsentEntry, ConsentListResponse, ConsentState, ReportRequest, SetConsentRequest,
};
use nightjar_core::identity::validate_username;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Json, Path};
use crate::auth::{ActiveSession, Session};
use crate::error::{Error, Result};
use crate::rules::consent::Decision;
use crate::state::{AppState, now_ms};

/// Longest report reason, in characters.
const MAX_REASON_CHARS: usize = 1_000;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(set, forget))
        .routes(routes!(report))
}

/// The other account named in a path or body: canonical, existing, not the caller's own.
fn peer(session: &Session, username: &str) -> Result<String> {
    let username = username.to_ascii_lowercase();
    if validate_username(&username).is_err() {
        return Err(Error::not_found("no such account"));
    }
    if username == session.device.username {
        return Err(Error::bad_request("that is your own account"));
    }
    Ok(username)
}

fn decision(state: ConsentState) -> Decision {
    match state {
        ConsentState::Accepted => Decision::Accepted,
        ConsentState::Blocked => Decision::Blocked,
    }
}

/// Every account this account accepted or blocked.
#[utoipa::path(get, path = "/v1/consent", tag = "consent",
    security(("bearer" = [])),
    responses(
        (status = 200, body = ConsentListResponse),
        (status = 401, body = ApiError),
        (status = 403, description = "pending device", body = ApiError),
        (status = 429, description = "too many requests", body = ApiError),
    ))]
async fn list(
    State(state): State<AppState>,
    ActiveSession(session): ActiveSession,
) -> Result<axum::Json<ConsentListResponse>> {
    let rows = state.store.decisions(session.device.account_id).await?;
    let entries = rows
        .into_iter()
        .map(|r| ConsentEntry {
            username: r.username,
            state: match r.decision {
                Decision::Accepted => ConsentState::Accepted,
                Decision::Blocked => ConsentState::Blocked,
            },
            updated_at_ms: r.updated_at_ms,
        })
        .collect();
    Ok(axum::Json(ConsentListResponse { entries }))
}

/// Accepts or blocks an account. Accepting it also accepts the conversations it added this
/// account to (their messages are no longer message requests); blocking it stops its
/// application messages and Welcomes reaching this account's devices (its commits to shared
/// groups still arrive, so the groups keep working).
#[utoipa::path(put, path = "/v1/consent/{username}", tag = "consent",
    security(("bearer" = [])),
    params(("username" = String, Path, description = "the other account, any case")),
    request_body = SetConsentRequest,
    responses(
        (status = 204, description = "recorded"),
        (status = 400, description = "malformed, or your own account", body = ApiError),
        (status = 401, body = ApiError),
        (status = 403, description = "pending device", body = ApiError),
        (status = 404, description = "no such account", body = ApiError),
        (status = 429, description = "too many requests", body = ApiError),
    ))]
async fn set(
    State(state): State<AppState>,
    ActiveSession(session): ActiveSession,
    Path(username): Path<String>,
    Json(request): Json<SetConsentRequest>,
) -> Result<StatusCode> {
    let peer = peer(&session, &username)?;
    let found = state
        .store
        .set_consent(
            session.device.account_id,
            &peer,
            Some(decision(request.state)),
            now_ms(),
        )
        .await?;
    if !found {
        return Err(Error::not_found("no such account"));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Forgets the decision about an account (unblocks it): it is a stranger again, whose new
/// conversations are message requests with a fresh allowance.
#[utoipa::path(delete, path = "/v1/consent/{username}", tag = "consent",
    security(("bearer" = [])),
    params(("username" = String, Path, description = "the other account, any case")),
    responses(
        (status = 204, description = "forgotten (also when there was nothing to forget)"),
        (status = 400, description = "malformed, or your own account", body = ApiError),
        (status = 401, body = ApiError),
        (status = 403, description = "pending device", body = ApiError),
        (status = 404, description = "no such account", body = ApiError),
        (status = 429, description = "too many requests", body = ApiError),
    ))]
async fn forget(
    State(state): State<AppState>,
    ActiveSession(session): ActiveSession,
    Path(username): Path<String>,
) -> Result<StatusCode> {
    let peer = peer(&session, &username)?;
    let found = state
        .store
        .set_consent(session.device.account_id, &peer, None, now_ms())
        .await?;
    if !found {
        return Err(Error::not_found("no such account"));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// Reports an account for abuse and blocks it. The server keeps who reported whom, when,
/// the conversation id if given, and the reporter's own words if given; never message
/// content unless the reporter typed it into `reason`.
#[utoipa::path(post, path = "/v1/reports", tag = "consent",
    security(("bearer" = [])),
    request_body = ReportRequest,
    responses(
        (status = 204, description = "reported and blocked"),
        (status = 400, description = "malformed, or your own account", body = ApiError),
        (status = 401, body = ApiError),
        (status = 403, description = "pending device", body = ApiError),
        (status = 404, description = "no such account", body = ApiError),
        (status = 413, description = "the reason is too long", body = ApiError),
        (status = 429, description = "too many requests", body = ApiError),
    ))]
async fn report(
    State(state): State<AppState>,
    ActiveSession(session): ActiveSession,
    Json(request): Json<ReportRequest>,
) -> Result<StatusCode> {
    let peer = peer(&session, &request.username)?;
    if let Some(id) = &request.conversation_id {
        super::messages::parse_conversation(id)?;
    }
    if request
        .reason
        .as_ref()
        .is_some_and(|r| r.chars().count() > MAX_REASON_CHARS)
    {
        return Err(Error::too_large(format!(
            "a report's reason holds at most {MAX_REASON_CHARS} characters"
        )));
    }
    let found = state
        .store
        .report(
            session.device.account_id,
            &peer,
            request.conversation_id.as_deref(),
            request.reason.as_deref(),
            now_ms(),
        )
        .await?;
    if !found {
        return Err(Error::not_found("no such account"));
    }
    Ok(StatusCode::NO_CONTENT)
}
