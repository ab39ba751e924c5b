//! Message reports over HTTP (docs/reporting.md): a member reports a franked message with the
//! proof that its sender sent exactly this content; moderators read the verified reports
//! behind a token of their own.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode};
use nightjar_api::{
    ApiError, B64, DeviceAddress, ErrorCode, MessageReport, MessageReportRequest,
    MessageReportResponse, ModerationReportsResponse,
};
use nightjar_core::content::Message;
use nightjar_core::franking;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Json, Path, Query};
use crate::auth::{ActiveSession, bearer};
use crate::error::{Error, Result};
use crate::franking::shown;
use crate::rate_limit::{address_group, retry_ms};
use crate::state::{AppState, now_ms};
use crate::store::{NewReport, StoredReport};

/// Most reports in one page, and the default.
const MAX_PAGE: u32 = 500;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(report_message))
        .routes(routes!(list_reports))
        .routes(routes!(mark_reviewed))
}

/// Reports a franked message to the operator. The server checks, in this order: its own tag
/// over the commitment, conversation and time (`franking_tag_invalid`); that the key opens the
/// commitment for the revealed content, the named sender device and the conversation
/// (`franking_commitment_invalid`); that the reporting account is a member of the
/// conversation (`not_a_member`); and that the signature is the named sender device's, under
/// the key its account's signed device list registered (`franking_signature_invalid`). Only
/// then is the report stored, with the revealed content, for the moderators; a report of the
/// same message by the same account is stored once.
#[utoipa::path(post, path = "/v1/reports/messages", tag = "consent",
    security(("bearer" = [])),
    request_body = MessageReportRequest,
    responses(
        (status = 200, description = "verified and stored", body = MessageReportResponse),
        (status = 400, description = "malformed (a field of the wrong length, a message \
            that does not decode)", body = ApiError),
        (status = 401, body = ApiError),
        (status = 403, description = "a pending device, or the reporting account is not a \
            member of the conversation (`not_a_member`)", body = ApiError),
        (status = 413, description = "the reason or the message is too long", body = ApiError),
        (status = 422, description = "the proof does not verify: `franking_tag_invalid`, \
            `franking_commitment_invalid` or `franking_signature_invalid`", body = ApiError),
        (status = 429, description = "too many requests", body = ApiError),
    ))]
async fn report_message(
    State(state): State<AppState>,
    ActiveSession(session): ActiveSession,
    Json(request): Json<MessageReportRequest>,
) -> Result<axum::Json<MessageReportResponse>> {
    let report = state.franker.check_report(&request)?;
    let conversation = report.conversation.to_string();
    if !state
        .store
        .account_in_conversation(&conversation, &session.device.username)
        .await?
    {
        return Err(Error::new(
            ErrorCode::NotAMember,
            "your account is not a member of this conversation",
        ));
    }
    let key = state
        .store
        .device_signature_key(&request.sender.username, &request.sender.device_id)
        .await?;
    let signed = key.is_some_and(|key| {
        franking::verify_signature(&key, &report.commitment, &request.signature.0)
    });
    if !signed {
        return Err(Error::new(
            ErrorCode::FrankingSignatureInvalid,
            "the signature is not the named sender device's signature of the commitment",
        ));
    }
    let report_id = state
        .store
        .store_message_report(&NewReport {
            reporter_id: session.device.account_id,
            conversation: &conversation,
            sender_username: &request.sender.username,
            sender_device_id: &request.sender.device_id,
            message: &request.message.0,
            franking_key: &request.franking_key.0,
            signature: &request.signature.0,
            commitment: report.commitment.as_bytes(),
            tag: &request.stamp.tag.0,
            franked_at_ms: request.stamp.time_ms,
            reason: request.reason.as_deref(),
            now_ms: now_ms(),
        })
        .await?;
    tracing::info!(report_id, "message report stored");
    Ok(axum::Json(MessageReportResponse { report_id }))
}

/// Admits a request bearing the moderators' token; `not_configured` without one configured.
/// Refused tokens count against the address's allowance, so the token cannot be guessed fast.
fn moderator(state: &AppState, headers: &HeaderMap, peer: SocketAddr) -> Result<()> {
    let Some(token) = &state.moderator else {
        return Err(Error::new(
            ErrorCode::NotConfigured,
            "this server has no moderator token configured (--moderator-token-file)",
        ));
    };
    let group = address_group(peer.ip());
    state
        .moderator_refusals
        .check(&group, Instant::now())
        .map_err(|wait| Error::rate_limited(retry_ms(wait)))?;
    if bearer(headers).is_some_and(|t| token.admits(t)) {
        return Ok(());
    }
    let _ = state.moderator_refusals.take(&group, Instant::now());
    Err(Error::new(
        ErrorCode::Unauthorized,
        "missing or wrong moderator token",
    ))
}

/// Paging through the reports.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct ReportsQuery {
    /// Only reports with ids above this (default 0: from the start).
    after: Option<u64>,
    /// At most this many (default and maximum 500).
    limit: Option<u32>,
    /// Only reports no moderator marked reviewed yet (default false).
    unreviewed: Option<bool>,
}

fn listed(stored: StoredReport) -> MessageReport {
    let message = Message::decode(&stored.message).ok();
    let (content_type, text) = message
        .as_ref()
        .map_or(("unknown", None), |m| shown(&m.content));
    MessageReport {
        id: stored.id,
        reporter: stored.reporter,
        conversation_id: stored.conversation,
        sender: DeviceAddress {
            username: stored.sender_username,
            device_id: stored.sender_device_id,
        },
        message_id: message.as_ref().map(|m| m.id.to_hex()).unwrap_or_default(),
        sent_at_ms: message.as_ref().map_or(0, |m| m.sent_at_ms),
        content_type: content_type.to_owned(),
        text,
        message: B64(stored.message),
        franked_at_ms: stored.franked_at_ms,
        reason: stored.reason,
        reported_at_ms: stored.reported_at_ms,
        reviewed_at_ms: stored.reviewed_at_ms,
    }
}

/// The verified message reports, oldest first, with the content each reporter revealed. For
/// moderators: the bearer token is the one in the server's `--moderator-token-file`, not a
/// session.
#[utoipa::path(get, path = "/v1/moderation/reports", tag = "moderation",
    security(("moderator" = [])),
    params(ReportsQuery),
    responses(
        (status = 200, body = ModerationReportsResponse),
        (status = 400, body = ApiError),
        (status = 401, description = "missing or wrong moderator token", body = ApiError),
        (status = 404, description = "no moderator token configured (`not_configured`)",
            body = ApiError),
        (status = 429, description = "too many refused tokens from this address",
            body = ApiError),
    ))]
async fn list_reports(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Query(query): Query<ReportsQuery>,
) -> Result<axum::Json<ModerationReportsResponse>> {
    moderator(&state, &headers, peer)?;
    if query.after.is_some_and(|a| i64::try_from(a).is_err())
        || query.limit.is_some_and(|l| i32::try_from(l).is_err())
    {
        return Err(Error::bad_request("`after` or `limit` is out of range"));
    }
    let limit = query.limit.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE);
    let reports = state
        .store
        .message_reports(
            query.after.unwrap_or(0),
            limit,
            query.unreviewed.unwrap_or(false),
        )
        .await?;
    Ok(axum::Json(ModerationReportsResponse {
        reports: reports.into_iter().map(listed).collect(),
    }))
}

/// Marks a report reviewed (the first time counts).
#[utoipa::path(post, path = "/v1/moderation/reports/{report_id}/reviewed", tag = "moderation",
    security(("moderator" = [])),
    params(("report_id" = u64, Path, description = "the report's id",
        minimum = 1, maximum = 9_223_372_036_854_775_807_i64)),
    responses(
        (status = 204, description = "marked reviewed"),
        (status = 400, body = ApiError),
        (status = 401, description = "missing or wrong moderator token", body = ApiError),
        (status = 404, description = "no such report, or no moderator token configured \
            (`not_configured`)", body = ApiError),
        (status = 429, description = "too many refused tokens from this address",
            body = ApiError),
    ))]
async fn mark_reviewed(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Path(report_id): Path<u64>,
) -> Result<StatusCode> {
    moderator(&state, &headers, peer)?;
    if i64::try_from(report_id).is_err() {
        return Err(Error::bad_request("the report id is out of range"));
    }
    if !state
        .store
        .mark_report_reviewed(report_id, now_ms())
        .await?
    {
        return Err(Error::not_found("no such report"));
    }
    Ok(StatusCode::NO_CONTENT)
}
