//! Device-key sign-in and the account's sessions.
//!
//! A known device signs in by signing a fresh challenge with its device key (no password), so
//! it can always sign in, whatever the password limits say; the same proof is what a password
//! login of an existing device must carry. The account's sessions can be listed, and every
//! session but the caller's revoked (after a password leak, say).

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, State};
use nightjar_api::{
    ApiError, B64, DeviceLoginFinishRequest, DeviceLoginStartRequest, DeviceLoginStartResponse,
    DeviceStatus, ErrorCode, RevokeSessionsResponse, SessionInfo, SessionResponse,
    SessionsResponse,
};
use nightjar_core::device_auth::LoginProof;
use nightjar_core::identity::{DeviceId, validate_username};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::Json;
use crate::auth::{ActiveSession, expiry, new_token};
use crate::error::{Error, Result};
use crate::opaque::{LoginKind, keep_login, take_login};
use crate::rate_limit::{address_group, retry_ms};
use crate::rules::device_list;
use crate::state::{AppState, now_ms};
use crate::store::{LoginCaps, LoginOutcome};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(device_login_start))
        .routes(routes!(device_login_finish))
        .routes(routes!(sessions))
        .routes(routes!(revoke_other_sessions))
}

/// The caps on open logins a client meets.
pub(super) fn login_caps(state: &AppState) -> LoginCaps {
    LoginCaps {
        total: None,
        per_address: state.config.limits.max_pending_logins_per_address,
    }
}

/// What checking a device's login proof found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum DeviceProof {
    /// The account has the device and the signature is its key's.
    Valid,
    /// The account has the device, and the signature is not its key's.
    Invalid,
    /// The account has no such device.
    NoSuchDevice,
}

/// Checks `signature` over `proof` against the device's key: for an active device the key in
/// the account's signed device list, for a pending one the key of its link offer.
pub(super) async fn device_proof(
    state: &AppState,
    account_id: i64,
    proof: &LoginProof<'_>,
    signature: &[u8],
) -> Result<DeviceProof> {
    let device_id = proof.device_id.to_string();
    let Some(device) = state.store.device_key(account_id, &device_id).await? else {
        return Ok(DeviceProof::NoSuchDevice);
    };
    let key: Option<[u8; 32]> = match device.status {
        DeviceStatus::Pending => device.signature_key.as_slice().try_into().ok(),
        DeviceStatus::Active => {
            let account = state
                .store
                .account_by_id(account_id)
                .await?
                .ok_or(Error::Internal("an account vanished during login"))?;
            let (_, list) = device_list::verify(&account.device_list)
                .map_err(|_| Error::Internal("the stored device list does not verify"))?;
            list.device(proof.device_id).map(|d| d.signature_key)
        }
    };
    Ok(match key {
        Some(key) if proof.verify(&key, signature) => DeviceProof::Valid,
        _ => DeviceProof::Invalid,
    })
}

/// A session the store just recorded: the token to hand out (once), when it expires, and
/// what the store made of the device.
pub(super) struct Opened {
    pub(super) outcome: LoginOutcome,
    pub(super) token: String,
    pub(super) expires_at_ms: u64,
}

/// How both logins end: a fresh token for `device_id` of `account_id`, recorded by the store
/// with the new device's link offer, if any, and whether the device proved its key.
pub(super) async fn open_session(
    state: &AppState,
    account_id: i64,
    device_id: &str,
    offer: Option<(&[u8], &[u8])>,
    proven: bool,
) -> Result<Opened> {
    let now = now_ms();
    let expires_at_ms = expiry(now, state.config.session_ttl);
    let (token, token_hash) = new_token()?;
    let outcome = state
        .store
        .login_device(
            account_id,
            device_id,
            offer,
            proven,
            state.config.limits.max_pending_devices,
            &token_hash,
            now,
            expires_at_ms,
        )
        .await?;
    Ok(Opened {
        outcome,
        token,
        expires_at_ms,
    })
}

/// Starts a device-key sign-in: a fresh challenge for a known device to sign. Unknown accounts
/// and devices get an answer of the same shape and fail at the finish step.
#[utoipa::path(post, path = "/v1/device-login/start", tag = "accounts",
    request_body = DeviceLoginStartRequest,
    responses(
        (status = 200, body = DeviceLoginStartResponse),
        (status = 400, description = "malformed request, username or device id", body = ApiError),
        (status = 429, description = "too many sign-ins or open logins from this address; \
            retry after `retry_after_ms`", body = ApiError),
    ))]
async fn device_login_start(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(request): Json<DeviceLoginStartRequest>,
) -> Result<axum::Json<DeviceLoginStartResponse>> {
    let username = request.username.to_ascii_lowercase();
    validate_username(&username).map_err(|_| {
        Error::new(
            ErrorCode::InvalidUsername,
            "a username is 3-32 characters of a-z, 0-9 and _",
        )
    })?;
    DeviceId::parse(&request.device_id)
        .ok_or_else(|| Error::bad_request("a device id is 16 lowercase hex digits"))?;
    let group = address_group(peer.ip());
    // Its own bucket: the password limits never stop a device that proves its key.
    state
        .device_login_by_ip
        .take(&group, Instant::now())
        .map_err(|wait| Error::rate_limited(retry_ms(wait)))?;
    let account = state
        .store
        .account(&username)
        .await?
        .map(|a| (a.id, a.username));
    let kept = keep_login(
        &state.store,
        account,
        &LoginKind::DeviceKey {
            device_id: request.device_id,
        },
        &state.opaque.address_tag(group),
        now_ms(),
        login_caps(&state),
    )
    .await?
    .ok_or_else(|| Error::rate_limited(1000))?;
    Ok(axum::Json(DeviceLoginStartResponse {
        login_id: kept.login_id,
        challenge: B64(kept.challenge.to_vec()),
    }))
}

/// Finishes a device-key sign-in: the device's signature over the login proof earns a session
/// for that device (active, or still pending if it awaits approval).
#[utoipa::path(post, path = "/v1/device-login/finish", tag = "accounts",
    request_body = DeviceLoginFinishRequest,
    responses(
        (status = 200, body = SessionResponse),
        (status = 400, description = "malformed request", body = ApiError),
        (status = 401, description = "unknown account or device, or a wrong signature", body = ApiError),
        (status = 404, description = "unknown, used or expired login attempt", body = ApiError),
    ))]
async fn device_login_finish(
    State(state): State<AppState>,
    Json(request): Json<DeviceLoginFinishRequest>,
) -> Result<axum::Json<SessionResponse>> {
    let login = take_login(&state.store, &request.login_id, now_ms())
        .await?
        .ok_or_else(|| Error::not_found("unknown, used or expired login attempt"))?;
    let LoginKind::DeviceKey { device_id } = login.kind else {
        return Err(Error::not_found("unknown, used or expired login attempt"));
    };
    let refused = || {
        Error::new(
            ErrorCode::WrongCredentials,
            "unknown device or wrong signature",
        )
    };
    let (account_id, username) = login.account.ok_or_else(refused)?;
    let parsed = DeviceId::parse(&device_id).ok_or_else(refused)?;
    let proof = LoginProof {
        username: &username,
        device_id: parsed,
        login_id: &request.login_id,
        challenge: &login.challenge,
    };
    if device_proof(&state, account_id, &proof, &request.device_signature.0).await?
        != DeviceProof::Valid
    {
        return Err(refused());
    }
    let Opened {
        outcome,
        token,
        expires_at_ms,
    } = open_session(&state, account_id, &device_id, None, true).await?;
    let LoginOutcome::Session(device_status) = outcome else {
        // The device was removed meanwhile.
        return Err(refused());
    };
    tracing::info!("device-key sign-in");
    Ok(axum::Json(SessionResponse {
        token,
        username,
        device_id,
        expires_at_ms,
        device_status,
    }))
}

/// The account's unexpired sessions, the caller's marked `current`.
#[utoipa::path(get, path = "/v1/sessions", tag = "accounts",
    security(("bearer" = [])),
    responses(
        (status = 200, body = SessionsResponse),
        (status = 401, body = ApiError),
        (status = 403, description = "a pending device", body = ApiError),
        (status = 429, description = "too many requests from this device", body = ApiError),
    ))]
async fn sessions(
    State(state): State<AppState>,
    ActiveSession(session): ActiveSession,
) -> Result<axum::Json<SessionsResponse>> {
    let rows = state
        .store
        .account_sessions(session.device.account_id, now_ms())
        .await?;
    Ok(axum::Json(SessionsResponse {
        sessions: rows
            .into_iter()
            .map(|row| SessionInfo {
                current: row.token_hash.as_slice() == session.token_hash.as_slice(),
                device_id: row.device_id,
                status: row.status,
                created_at_ms: row.created_at_ms,
                expires_at_ms: row.expires_at_ms,
                last_seen_ms: row.last_seen_ms,
            })
            .collect(),
    }))
}

/// Revokes every session of the account except the caller's. Other devices must sign in again
/// with their device key; a password alone gets nobody back in on an existing device.
#[utoipa::path(post, path = "/v1/sessions/revoke-others", tag = "accounts",
    security(("bearer" = [])),
    responses(
        (status = 200, body = RevokeSessionsResponse),
        (status = 401, body = ApiError),
        (status = 403, description = "a pending device", body = ApiError),
        (status = 429, description = "too many requests from this device", body = ApiError),
    ))]
async fn revoke_other_sessions(
    State(state): State<AppState>,
    ActiveSession(session): ActiveSession,
) -> Result<axum::Json<RevokeSessionsResponse>> {
    let revoked = state
        .store
        .revoke_other_sessions(session.device.account_id, &session.token_hash)
        .await?;
    let mut devices: Vec<i64> = revoked
        .iter()
        .map(|r| r.device_pk)
        .filter(|pk| *pk != session.device.device_pk)
        .collect();
    devices.sort_unstable();
    devices.dedup();
    for row in &revoked {
        if let Ok(hash) = <[u8; 32]>::try_from(row.token_hash.as_slice()) {
            state.sessions.forget_token(&hash);
        }
    }
    // Other devices' streams close and their cached sessions go, on every node.
    state.revoke_devices(&devices);
    tracing::info!(revoked = revoked.len(), "revoked other sessions");
    Ok(axum::Json(RevokeSessionsResponse {
        revoked: u64::try_from(revoked.len()).unwrap_or(u64::MAX),
    }))
}
