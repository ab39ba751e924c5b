//! Delivery over HTTP: send (with commit ordering and idempotency), fetch the queue, acknowledge.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use nightjar_api::{
    AckRequest, ApiError, B64, EnvelopeKind, ErrorCode, InboxResponse, SealedKeyRequest,
    SealedSendRequest, SendRequest, SendResponse,
};
use nightjar_core::ConversationId;
use nightjar_core::sealed::{SealedSubmission, sealed_public_key};
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Json, Path, Query};
use crate::auth::ActiveSession;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::rate_limit::{address_group, retry_ms};
use crate::rules::consent::{ConsentRefusal, QueueLimits, RequestLimits};
use crate::rules::delivery::{CheckedSend, Refusal, SendError, Stamp, check_send};
use crate::state::{AppState, now_ms};
use crate::store::{Registration, SendOutcome, SendQuota, Sender, Submission};

/// Most ids in one acknowledgement.
pub(super) const MAX_ACK_IDS: usize = 1000;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(send))
        .routes(routes!(sealed_send))
        .routes(routes!(register_sealed_key))
        .routes(routes!(inbox))
        .routes(routes!(ack))
}

fn kind_label(kind: nightjar_api::EnvelopeKind) -> &'static str {
    match kind {
        nightjar_api::EnvelopeKind::Application => "application",
        nightjar_api::EnvelopeKind::Commit => "commit",
        nightjar_api::EnvelopeKind::Proposal => "proposal",
        nightjar_api::EnvelopeKind::Welcome => "welcome",
    }
}

/// Sends an MLS message to a conversation. It is queued durably for every other member device
/// before the answer. Commits are ordered: the first for the current epoch wins; others get
/// 409 `epoch_conflict`. A retry with the same idempotency key returns the first answer.
#[utoipa::path(post, path = "/v1/conversations/{conversation_id}/messages", tag = "messages",
    security(("bearer" = [])),
    params(("conversation_id" = String, Path, description = "32 lowercase hex digits",
        pattern = "^[0-9a-f]{32}$")),
    request_body = SendRequest,
    responses(
        (status = 200, body = SendResponse),
        (status = 400, description = "the request contradicts its MLS message, or the commit or proposal (an MLS PublicMessage) fails validation against the group's public state", body = ApiError),
        (status = 401, body = ApiError),
        (status = 403, description = "not a member, a pending device, a handshake whose \
            signature or sender does not verify, every recipient blocked the sender \
            (`blocked`), or a message request is used up (`message_request_limit`)",
            body = ApiError),
        (status = 404, description = "no such conversation", body = ApiError),
        (status = 409, description = "epoch conflict", body = ApiError),
        (status = 413, description = "message too large", body = ApiError),
        (status = 429, description = "too many requests, or the sending account's fan-out \
            allowance is used up", body = ApiError),
        (status = 507, description = "a recipient's queue is full, or holds this sender's \
            share", body = ApiError),
    ))]
async fn send(
    State(state): State<AppState>,
    ActiveSession(session): ActiveSession,
    Path(conversation_id): Path<String>,
    Json(request): Json<SendRequest>,
) -> Result<axum::Json<SendResponse>> {
    let conversation = parse_conversation(&conversation_id)?;
    let limits = &state.config.limits;
    let idempotency_key = request.idempotency_key.clone();
    let sender = session.sender();
    let mut checked = checked_send(conversation, request, limits.max_envelope_bytes)?;
    // Commits and proposals only: validated against the group's public state.
    super::handshakes::validate(&state, &sender, &mut checked).await?;
    let kind = checked.kind;
    let with_welcome = checked.welcome.is_some();
    let payload_len = u64::try_from(checked.payload.len()).unwrap_or(u64::MAX);
    let account = session.device.account_id;
    let now = now_ms();
    state
        .fan_out
        .check(account, now)
        .map_err(|wait| Error::rate_limited(retry_ms(wait)))?;
    stamp(&state, &mut checked, now);
    let outcome = state
        .store
        .send(Submission {
            sender,
            send: checked,
            idempotency_key,
            now_ms: now,
            max_queue: limits.max_queue_len,
            quota: send_quota(limits),
        })
        .await?;
    let commit_accepted =
        matches!(kind, EnvelopeKind::Commit) && matches!(outcome, SendOutcome::Accepted { .. });
    let response = answer(&state, outcome, kind, with_welcome, |queued| {
        state
            .fan_out
            .charge(account, now, queued, queued.saturating_mul(payload_len));
    })?;
    if commit_accepted {
        cut_off_from_call(&state, conversation).await;
    }
    Ok(response)
}

/// After a commit: whoever it removed (or is otherwise no longer an active member device) leaves
/// the conversation's group call on this node at once. A failure is logged; the periodic check
/// (`group_calls::RECHECK_INTERVAL`) tries again.
async fn cut_off_from_call(state: &AppState, conversation: ConversationId) {
    if state.calls.is_none() {
        return;
    }
    let state = state.clone();
    // A task of its own, awaited: the answer still waits for it, but a client that hangs up
    // mid-request cannot cancel the kick.
    let check = tokio::spawn(async move {
        if let Some(calls) = &state.calls
            && let Err(e) = calls.recheck(&state.store, conversation).await
        {
            tracing::warn!(error = %e, "group-call membership check failed");
        }
    });
    let _ = check.await;
}

/// Sends an application message *without a session* (sealed sender). A member of the
/// conversation signs it with the sealed-sender key of the message's epoch, which every member
/// device derives from the MLS epoch and which identifies none of them: the server learns
/// that a member of the conversation sent it, not which account or device. It is queued for
/// every member device (the sender's own device drops its copy). Allowances are per
/// conversation; refused submissions are counted per address group.
#[utoipa::path(post, path = "/v1/conversations/{conversation_id}/sealed", tag = "messages",
    params(("conversation_id" = String, Path, description = "32 lowercase hex digits",
        pattern = "^[0-9a-f]{32}$")),
    request_body = SealedSendRequest,
    responses(
        (status = 200, body = SendResponse),
        (status = 400, description = "the request contradicts its MLS message (which must \
            be an application message)", body = ApiError),
        (status = 403, description = "the key is not registered for the conversation and \
            epoch (`sealed_key_unknown`: register it and send again), the signature does not \
            verify (`forbidden`), or consent refused it for every other account (`blocked`, \
            `message_request_limit`)", body = ApiError),
        (status = 404, description = "no such conversation", body = ApiError),
        (status = 413, description = "message too large", body = ApiError),
        (status = 429, description = "the conversation's fan-out allowance is used up, or \
            this address sent too many refused submissions", body = ApiError),
        (status = 507, description = "a recipient's queue is full, or holds this \
            conversation's share", body = ApiError),
    ))]
async fn sealed_send(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(conversation_id): Path<String>,
    Json(request): Json<SealedSendRequest>,
) -> Result<axum::Json<SendResponse>> {
    let conversation = parse_conversation(&conversation_id)?;
    let group = address_group(peer.ip());
    state
        .sealed_refusals
        .check(&group, Instant::now())
        .map_err(|wait| Error::rate_limited(retry_ms(wait)))?;
    let limits = &state.config.limits;
    let key = sealed_key_bytes(&request.key)?;
    if request.signature.0.len() != 64 {
        return Err(Error::bad_request("a signature is 64 bytes"));
    }
    let SealedSendRequest {
        submission_id,
        epoch,
        payload,
        signature,
        franking_commitment,
        ..
    } = request;
    let send = SendRequest {
        idempotency_key: submission_id.clone(),
        kind: EnvelopeKind::Application,
        epoch,
        payload,
        welcome: None,
        members: None,
        group_info: None,
        franking_commitment,
    };
    let mut checked = checked_send(conversation, send, limits.max_envelope_bytes)?;
    let known = match state.sealed_keys.get(conversation, epoch, &key) {
        Some(decoded) => Some(decoded),
        None => {
            let stored = state
                .store
                .sealed_keys(&conversation.to_string(), epoch)
                .await?;
            let decoded = stored
                .iter()
                .any(|k| k.as_slice() == key)
                .then(|| sealed_public_key(&key))
                .flatten();
            if let Some(decoded) = decoded {
                state.sealed_keys.insert(conversation, epoch, decoded);
            }
            decoded
        }
    };
    let submission = SealedSubmission {
        conversation,
        epoch,
        submission_id: &submission_id,
        payload: &checked.payload,
    };
    let refused = if let Some(decoded) = known {
        (!submission.verify_with(&decoded, &signature.0))
            .then(|| Error::forbidden("the signature does not verify"))
    } else {
        Some(Error::new(
            ErrorCode::SealedKeyUnknown,
            "this key is not registered for the conversation's epoch: register it with \
             PUT /v1/conversations/{id}/sealed-key and send again",
        ))
    };
    if let Some(refused) = refused {
        let _ = state.sealed_refusals.take(&group, Instant::now());
        return Err(refused);
    }
    let payload_len = u64::try_from(checked.payload.len()).unwrap_or(u64::MAX);
    let now = now_ms();
    state
        .sealed_fan_out
        .check(conversation, now)
        .map_err(|wait| Error::rate_limited(retry_ms(wait)))?;
    stamp(&state, &mut checked, now);
    let outcome = state
        .store
        .send(Submission {
            sender: Sender::sealed(),
            send: checked,
            idempotency_key: submission_id,
            now_ms: now,
            max_queue: limits.max_queue_len,
            quota: send_quota(limits),
        })
        .await?;
    answer(
        &state,
        outcome,
        EnvelopeKind::Application,
        false,
        |queued| {
            state.sealed_fan_out.charge(
                conversation,
                now,
                queued,
                queued.saturating_mul(payload_len),
            );
        },
    )
}

/// Registers the calling member device's sealed-sender key for the conversation's current
/// epoch (the public half; see `POST /v1/conversations/{id}/sealed`). A device registers it
/// after each commit it makes and before it first sends in a conversation; the latter
/// (`accept`) accepts the conversation for its account. Each device holds one key per epoch, so a member who
/// registers a wrong key cannot keep the others' out.
#[utoipa::path(put, path = "/v1/conversations/{conversation_id}/sealed-key", tag = "messages",
    security(("bearer" = [])),
    params(("conversation_id" = String, Path, description = "32 lowercase hex digits",
        pattern = "^[0-9a-f]{32}$")),
    request_body = SealedKeyRequest,
    responses(
        (status = 204, description = "registered"),
        (status = 400, body = ApiError),
        (status = 401, body = ApiError),
        (status = 403, description = "not a member, or a pending device", body = ApiError),
        (status = 404, description = "no such conversation", body = ApiError),
        (status = 409, description = "the conversation is at another epoch", body = ApiError),
    ))]
async fn register_sealed_key(
    State(state): State<AppState>,
    ActiveSession(session): ActiveSession,
    Path(conversation_id): Path<String>,
    Json(request): Json<SealedKeyRequest>,
) -> Result<StatusCode> {
    let conversation = parse_conversation(&conversation_id)?;
    let key = sealed_key_bytes(&request.key)?;
    let Some(decoded) = sealed_public_key(&key) else {
        return Err(Error::bad_request(
            "the key is not an Ed25519 public key of large order",
        ));
    };
    if i64::try_from(request.epoch).is_err() {
        return Err(Error::bad_request("epoch out of range"));
    }
    let outcome = state
        .store
        .register_sealed_key(
            &conversation.to_string(),
            &session.sender(),
            request.epoch,
            &key,
            request.accept,
        )
        .await?;
    match outcome {
        Registration::Registered => {
            state
                .sealed_keys
                .insert(conversation, request.epoch, decoded);
            Ok(StatusCode::NO_CONTENT)
        }
        Registration::UnknownConversation => Err(Error::not_found("no such conversation")),
        Registration::NotAMember => Err(not_a_member()),
        Registration::EpochConflict { current } => Err(Error::epoch_conflict(current)),
    }
}

/// The conversation id of a request path: 400 unless it is 32 lowercase hex digits.
pub(super) fn parse_conversation(text: &str) -> Result<ConversationId> {
    ConversationId::parse(text)
        .ok_or_else(|| Error::bad_request("a conversation id is 32 lowercase hex digits"))
}

/// The bytes of a sealed-sender public key: 400 unless there are 32.
fn sealed_key_bytes(key: &B64) -> Result<[u8; 32]> {
    key.0
        .as_slice()
        .try_into()
        .map_err(|_| Error::bad_request("a sealed-sender key is 32 bytes"))
}

/// Stamps a franked application message (docs/reporting.md): the server's tag over its
/// commitment, its conversation and the time it is stored with (`now`, rounded as stored),
/// which recipients keep to report it. One HMAC-SHA256; nothing else about the message changes.
fn stamp(state: &AppState, send: &mut CheckedSend, now: u64) {
    if let Some(commitment) = &send.commitment {
        let time = crate::store::stored_time(now);
        send.stamp = Some(Stamp {
            commitment: commitment.0,
            tag: state.franker.tag(commitment, send.conversation, time),
        });
    }
}

/// [`check_send`] with its refusals as the HTTP errors they are.
fn checked_send(
    conversation: ConversationId,
    request: SendRequest,
    max_bytes: usize,
) -> Result<CheckedSend> {
    check_send(conversation, request, max_bytes).map_err(|e| match e {
        SendError::TooLarge => Error::too_large(e.to_string()),
        SendError::Invalid(why) => Error::bad_request(why),
    })
}

fn not_a_member() -> Error {
    Error::new(
        ErrorCode::NotAMember,
        "this device is not a member of the conversation",
    )
}

/// The answer to a stored or refused send; `charge` is told how many envelopes were queued.
fn answer(
    state: &AppState,
    outcome: SendOutcome,
    kind: EnvelopeKind,
    with_welcome: bool,
    charge: impl FnOnce(u64),
) -> Result<axum::Json<SendResponse>> {
    match outcome {
        SendOutcome::Accepted {
            response,
            recipients,
            queued,
        } => {
            // The writer already handed the envelopes to the push path.
            charge(queued);
            state.metrics.accepted(kind_label(kind));
            if with_welcome {
                state.metrics.accepted("welcome");
            }
            Metrics::add(&state.metrics.queue_depth, queued);
            tracing::debug!(
                kind = kind_label(kind),
                epoch = response.epoch,
                recipients = recipients.len(),
                "message accepted"
            );
            Ok(axum::Json(response))
        }
        SendOutcome::Repeated(response) => Ok(axum::Json(response)),
        SendOutcome::QueueFull => Err(Error::new(
            ErrorCode::QueueFull,
            "a recipient's queue is full; try again later",
        )),
        SendOutcome::Refused(Refusal::EpochConflict { current }) => {
            Err(Error::epoch_conflict(current))
        }
        SendOutcome::Refused(Refusal::NotAMember) => Err(not_a_member()),
        SendOutcome::Refused(Refusal::UnknownConversation) => {
            Err(Error::not_found("no such conversation"))
        }
        SendOutcome::Refused(Refusal::FutureEpoch) => Err(Error::bad_request(
            "the message was made in an epoch the conversation has not reached",
        )),
        SendOutcome::NotAccepted(ConsentRefusal::Blocked) => Err(Error::new(
            ErrorCode::Blocked,
            "the recipient does not accept messages from you",
        )),
        SendOutcome::NotAccepted(ConsentRefusal::RequestLimit) => Err(Error::new(
            ErrorCode::MessageRequestLimit,
            "the recipient has not accepted your message request yet; until then only a few \
             small messages are delivered",
        )),
        SendOutcome::Refused(Refusal::NotValidated) => Err(Error::bad_request(
            "a commit or proposal must be validated first",
        )),
    }
}

/// The consent limits of a send under `limits`.
fn send_quota(limits: &crate::config::Limits) -> SendQuota {
    SendQuota {
        requests: RequestLimits {
            max_messages: limits.max_request_messages,
            max_bytes: limits.max_request_message_bytes,
        },
        queues: QueueLimits {
            max_device: limits.max_queue_len,
            share_after: limits.queue_share_after,
            max_share: limits.max_queue_share,
            max_account: limits.max_account_queue_len,
        },
    }
}

/// Paging through the queue.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct InboxQuery {
    /// Return envelopes with ids above this (default 0: from the start).
    after: Option<u64>,
    /// At most this many (default and maximum set by the server).
    limit: Option<u32>,
}

/// The calling device's queued envelopes, oldest first. They stay queued until acknowledged.
#[utoipa::path(get, path = "/v1/messages", tag = "messages",
    security(("bearer" = [])),
    params(InboxQuery),
    responses(
        (status = 200, body = InboxResponse),
        (status = 400, body = ApiError),
        (status = 401, body = ApiError),
        (status = 403, description = "pending device", body = ApiError),
    ))]
async fn inbox(
    State(state): State<AppState>,
    ActiveSession(session): ActiveSession,
    Query(query): Query<InboxQuery>,
) -> Result<axum::Json<InboxResponse>> {
    // The document declares `after` as int64 and `limit` as int32: refuse what they exclude.
    if query.after.is_some_and(|a| i64::try_from(a).is_err())
        || query.limit.is_some_and(|l| i32::try_from(l).is_err())
    {
        return Err(Error::bad_request("`after` or `limit` is out of range"));
    }
    let max = state.config.limits.max_inbox_page;
    let limit = query.limit.unwrap_or(max).clamp(1, max.max(1));
    let envelopes = state
        .store
        .inbox(session.device.device_pk, query.after.unwrap_or(0), limit)
        .await?;
    state
        .metrics
        .envelopes_delivered
        .inc_by(u64::try_from(envelopes.len()).unwrap_or(0));
    Ok(axum::Json(InboxResponse { envelopes }))
}

/// Acknowledges envelopes: they are deleted from the calling device's queue.
#[utoipa::path(post, path = "/v1/messages/ack", tag = "messages",
    security(("bearer" = [])),
    request_body = AckRequest,
    responses(
        (status = 204, description = "deleted (unknown ids are ignored)"),
        (status = 400, body = ApiError),
        (status = 401, body = ApiError),
        (status = 403, description = "pending device", body = ApiError),
        (status = 413, description = "too many ids", body = ApiError),
    ))]
async fn ack(
    State(state): State<AppState>,
    ActiveSession(session): ActiveSession,
    Json(request): Json<AckRequest>,
) -> Result<StatusCode> {
    acknowledge(&state, session.device.device_pk, &request.ids).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes acknowledged envelopes and updates the metrics; shared with the stream.
pub(super) async fn acknowledge(state: &AppState, device_pk: i64, ids: &[u64]) -> Result<()> {
    if ids.len() > MAX_ACK_IDS {
        return Err(Error::too_large(format!(
            "acknowledge at most {MAX_ACK_IDS} envelopes at once"
        )));
    }
    if ids.iter().any(|id| i64::try_from(*id).is_err()) {
        return Err(Error::bad_request("an envelope id is out of range"));
    }
    let deleted = state.store.ack(device_pk, ids).await?;
    state.metrics.envelopes_acked.inc_by(deleted);
    Metrics::sub(&state.metrics.queue_depth, deleted);
    Ok(())
}
