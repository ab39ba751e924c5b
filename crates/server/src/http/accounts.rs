//! Registration and login with OPAQUE, logout, and account lookup.

use std::net::SocketAddr;
use std::time::Instant;

use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use nightjar_api::opaque::Suite;
use nightjar_api::{
    AccountResponse, AccountTransparency, ApiError, B64, DeviceStatus, ErrorCode,
    LoginFinishRequest, LoginStartRequest, LoginStartResponse, RegisterFinishRequest,
    RegisterStartRequest, RegisterStartResponse, SessionResponse,
};
use nightjar_core::device_auth::LoginProof;
use nightjar_core::identity::{DeviceCredential, DeviceId, validate_username};
use nightjar_core::provisioning::LinkOffer;
use nightjar_core::transparency::DirectoryEntry;
use opaque_ke::{
    CredentialFinalization, CredentialRequest, RegistrationRequest, RegistrationUpload,
    ServerLogin, ServerLoginParameters, ServerRegistration,
};
use rand_core::OsRng;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::key_packages::check_package;
use super::sessions::{DeviceProof, Opened, device_proof, login_caps, open_session};
use super::{Json, Path};
use crate::auth::{Session, expiry, new_token};
use crate::error::{Error, Result};
use crate::opaque::{LoginKind, keep_login, take_login};
use crate::rate_limit::{address_group, retry_ms};
use crate::rules::device_list;
use crate::rules::key_packages::Owner;
use crate::state::{AppState, now_ms};
use crate::store::{LoginCaps, LoginOutcome, NewAccount};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register_start))
        .routes(routes!(register_finish))
        .routes(routes!(login_start))
        .routes(routes!(login_finish))
        .routes(routes!(logout))
        .routes(routes!(account))
}

fn invalid_username() -> Error {
    Error::new(
        ErrorCode::InvalidUsername,
        "a username is 3-32 characters of a-z, 0-9 and _",
    )
}

/// Counts a well-formed attempt against the client's address group and, if given, the
/// account. Callers parse the request first: a malformed request never counts. A refusal
/// carries the wait until the next attempt is allowed (attempts are slowed, not locked out).
fn limit_attempt(state: &AppState, peer: SocketAddr, account: Option<&str>) -> Result<()> {
    let now = Instant::now();
    state
        .login_by_ip
        .take(&address_group(peer.ip()), now)
        .map_err(|wait| Error::rate_limited(retry_ms(wait)))?;
    if let Some(account) = account {
        state
            .login_by_account
            .take(&account.to_owned(), now)
            .map_err(|wait| Error::rate_limited(retry_ms(wait)))?;
    }
    Ok(())
}

fn session_response(
    token: String,
    username: String,
    device_id: String,
    expires_at_ms: u64,
    device_status: DeviceStatus,
) -> axum::Json<SessionResponse> {
    axum::Json(SessionResponse {
        token,
        username,
        device_id,
        expires_at_ms,
        device_status,
    })
}

/// Starts registration: the first OPAQUE message for a free username.
#[utoipa::path(post, path = "/v1/register/start", tag = "accounts",
    request_body = RegisterStartRequest,
    responses(
        (status = 200, body = RegisterStartResponse),
        (status = 400, description = "malformed request or invalid username", body = ApiError),
        (status = 409, description = "username taken", body = ApiError),
        (status = 429, description = "too many attempts from this address", body = ApiError),
    ))]
async fn register_start(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(request): Json<RegisterStartRequest>,
) -> Result<axum::Json<RegisterStartResponse>> {
    validate_username(&request.username).map_err(|_| invalid_username())?;
    let message = RegistrationRequest::<Suite>::deserialize(&request.registration_request.0)
        .map_err(|_| Error::bad_request("malformed OPAQUE registration request"))?;
    limit_attempt(&state, peer, None)?;
    if state.store.username_taken(&request.username).await? {
        return Err(Error::new(
            ErrorCode::UsernameTaken,
            "the username is taken",
        ));
    }
    let response =
        ServerRegistration::<Suite>::start(&state.opaque.0, message, request.username.as_bytes())
            .map_err(|_| Error::bad_request("malformed OPAQUE registration request"))?;
    Ok(axum::Json(RegisterStartResponse {
        registration_response: B64(response.message.serialize().to_vec()),
    }))
}

/// Finishes registration: creates the account, its first device, its OPAQUE password file,
/// device list version 1 and its key packages, all or nothing, and returns a session.
#[utoipa::path(post, path = "/v1/register/finish", tag = "accounts",
    request_body = RegisterFinishRequest,
    responses(
        (status = 200, body = SessionResponse),
        (status = 400, description = "malformed request, device list or key package", body = ApiError),
        (status = 409, description = "username taken", body = ApiError),
        (status = 413, description = "too many or too large key packages", body = ApiError),
        (status = 429, description = "too many attempts from this address", body = ApiError),
    ))]
async fn register_finish(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(request): Json<RegisterFinishRequest>,
) -> Result<axum::Json<SessionResponse>> {
    limit_attempt(&state, peer, None)?;
    let limits = &state.config.limits;
    validate_username(&request.username).map_err(|_| invalid_username())?;
    let device_id = DeviceId::parse(&request.device_id)
        .ok_or_else(|| Error::bad_request("a device id is 16 lowercase hex digits"))?;
    if request.key_packages.len() > limits.max_key_packages_per_request {
        return Err(Error::too_large("too many key packages in one request"));
    }
    let upload = RegistrationUpload::<Suite>::deserialize(&request.registration_record.0)
        .map_err(|_| Error::bad_request("malformed OPAQUE registration record"))?;
    let record = ServerRegistration::<Suite>::finish(upload)
        .serialize()
        .to_vec();

    let (_, list) = device_list::verify(&request.device_list.0)
        .map_err(|e| Error::bad_request(e.to_string()))?;
    device_list::check_first(&list, &request.username, device_id)
        .map_err(|e| Error::bad_request(e.to_string()))?;
    let signature_key = list
        .device(device_id)
        .map(|d| d.signature_key)
        .ok_or_else(|| Error::bad_request("the device list does not name the device"))?;
    let identity = DeviceCredential {
        username: request.username.clone(),
        device_id,
    }
    .to_identity();
    let owner = Owner {
        identity: &identity,
        signature_key: &signature_key,
    };
    let max_bytes = limits.max_key_package_bytes;
    let checked = |bytes: B64, last_resort| check_package(owner, bytes, last_resort, max_bytes);
    let mut packages = Vec::with_capacity(request.key_packages.len());
    for kp in request.key_packages {
        packages.push(checked(kp, false)?);
    }
    let last_resort = checked(request.last_resort_key_package, true)?;

    let now = now_ms();
    let expires_at_ms = expiry(now, state.config.session_ttl);
    let (token, token_hash) = new_token()?;
    let created = state
        .store
        .create_account(NewAccount {
            username: request.username.clone(),
            opaque_record: record,
            identity_key: list.identity_key.as_bytes().to_vec(),
            device_list: request.device_list.0,
            device_id: request.device_id.clone(),
            signature_key: signature_key.to_vec(),
            key_packages: packages,
            last_resort,
            token_hash,
            expires_at_ms,
            now_ms: now,
        })
        .await?;
    if created.is_none() {
        return Err(Error::new(
            ErrorCode::UsernameTaken,
            "the username is taken",
        ));
    }
    tracing::info!("account registered");
    Ok(session_response(
        token,
        request.username,
        request.device_id,
        expires_at_ms,
        DeviceStatus::Active,
    ))
}

/// Starts a login. Unknown usernames get an answer of the same shape, built from a dummy
/// password file, and fail only at the finish step.
#[utoipa::path(post, path = "/v1/login/start", tag = "accounts",
    request_body = LoginStartRequest,
    responses(
        (status = 200, body = LoginStartResponse),
        (status = 400, description = "malformed request or invalid username", body = ApiError),
        (status = 429, description = "too many attempts for this account or address, or too many \
            open logins from this address; retry after `retry_after_ms`", body = ApiError),
    ))]
async fn login_start(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(request): Json<LoginStartRequest>,
) -> Result<axum::Json<LoginStartResponse>> {
    let username = request.username.to_ascii_lowercase();
    validate_username(&username).map_err(|_| invalid_username())?;
    let message = CredentialRequest::<Suite>::deserialize(&request.credential_request.0)
        .map_err(|_| Error::bad_request("malformed OPAQUE credential request"))?;
    // Only a well-formed attempt counts, so nobody can use up an account's attempts (or
    // anybody's) with garbage.
    limit_attempt(&state, peer, Some(&username))?;
    let (account, record) = match state.store.password_file(&username).await? {
        Some((id, name, record)) => {
            let record = ServerRegistration::<Suite>::deserialize(&record)
                .map_err(|_| Error::Internal("stored OPAQUE password file is unreadable"))?;
            (Some((id, name)), Some(record))
        }
        None => (None, None),
    };
    let started = ServerLogin::start(
        &mut OsRng,
        &state.opaque.0,
        record,
        message,
        username.as_bytes(),
        ServerLoginParameters::default(),
    )
    .map_err(|_| Error::bad_request("malformed OPAQUE credential request"))?;
    let limits = &state.config.limits;
    let kept = keep_login(
        &state.store,
        account,
        &LoginKind::Password(started.state),
        &state.opaque.address_tag(address_group(peer.ip())),
        now_ms(),
        LoginCaps {
            total: Some(limits.max_pending_logins),
            ..login_caps(&state)
        },
    )
    .await?
    .ok_or_else(|| Error::rate_limited(1000))?;
    Ok(axum::Json(LoginStartResponse {
        login_id: kept.login_id,
        credential_response: B64(started.message.serialize().to_vec()),
        challenge: B64(kept.challenge.to_vec()),
    }))
}

/// Finishes a login and returns a session for the device. A device id the account does not
/// know needs its link offer and becomes a pending device. An existing device (active or
/// pending) also needs `device_signature`, its device key's signature over the login proof:
/// a password alone never signs in an existing device.
#[utoipa::path(post, path = "/v1/login/finish", tag = "accounts",
    request_body = LoginFinishRequest,
    responses(
        (status = 200, body = SessionResponse),
        (status = 400, description = "malformed request or link offer", body = ApiError),
        (status = 401, description = "wrong password or unknown username", body = ApiError),
        (status = 403, description = "too many devices waiting for approval, or an existing \
            device without a valid device signature", body = ApiError),
        (status = 404, description = "unknown, used or expired login attempt", body = ApiError),
    ))]
async fn login_finish(
    State(state): State<AppState>,
    Json(request): Json<LoginFinishRequest>,
) -> Result<axum::Json<SessionResponse>> {
    let login = take_login(&state.store, &request.login_id, now_ms())
        .await?
        .ok_or_else(|| Error::not_found("unknown, used or expired login attempt"))?;
    let wrong = || Error::new(ErrorCode::WrongCredentials, "wrong username or password");
    let LoginKind::Password(server_login) = login.kind else {
        return Err(Error::not_found("unknown, used or expired login attempt"));
    };
    let finalization =
        CredentialFinalization::<Suite>::deserialize(&request.credential_finalization.0)
            .map_err(|_| wrong())?;
    server_login
        .finish(finalization, ServerLoginParameters::default())
        .map_err(|_| wrong())?;
    let (account_id, username) = login.account.ok_or_else(wrong)?;

    let device_id = DeviceId::parse(&request.device_id)
        .ok_or_else(|| Error::bad_request("a device id is 16 lowercase hex digits"))?;
    let proven = match &request.device_signature {
        None => false,
        Some(signature) => {
            let proof = LoginProof {
                username: &username,
                device_id,
                login_id: &request.login_id,
                challenge: &login.challenge,
            };
            match device_proof(&state, account_id, &proof, &signature.0).await? {
                DeviceProof::Valid => true,
                // A new device has nothing to prove; it needs its link offer.
                DeviceProof::NoSuchDevice => false,
                DeviceProof::Invalid => {
                    return Err(Error::forbidden("the device signature does not verify"));
                }
            }
        }
    };
    let offer = match &request.link_offer {
        None => None,
        Some(bytes) => {
            let offer = LinkOffer::decode(&bytes.0)
                .map_err(|_| Error::bad_request("malformed link offer"))?;
            if offer.username != username.as_bytes() || offer.device.device_id != device_id {
                return Err(Error::bad_request(
                    "the link offer is for another account or device",
                ));
            }
            Some((offer.device.signature_key, bytes.0.as_slice()))
        }
    };
    let Opened {
        outcome,
        token,
        expires_at_ms,
    } = open_session(
        &state,
        account_id,
        &request.device_id,
        offer.as_ref().map(|(key, bytes)| (&key[..], *bytes)),
        proven,
    )
    .await?;
    let status = match outcome {
        LoginOutcome::Session(status) => status,
        LoginOutcome::NeedsOffer => {
            return Err(Error::bad_request("a new device must send its link offer"));
        }
        LoginOutcome::NeedsProof => {
            return Err(Error::forbidden(
                "this device exists: it signs in only with its device key (a password alone \
                 adds a new device, pending approval)",
            ));
        }
        LoginOutcome::TooManyPending => {
            return Err(Error::forbidden(
                "too many devices of this account are waiting for approval",
            ));
        }
    };
    tracing::info!(pending = status == DeviceStatus::Pending, "login");
    Ok(session_response(
        token,
        username,
        request.device_id,
        expires_at_ms,
        status,
    ))
}

/// Ends the calling session.
#[utoipa::path(post, path = "/v1/logout", tag = "accounts",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "the session is revoked"),
        (status = 401, body = ApiError),
    ))]
async fn logout(State(state): State<AppState>, session: Session) -> Result<StatusCode> {
    state.store.delete_session(&session.token_hash).await?;
    state.sessions.forget_token(&session.token_hash);
    Ok(StatusCode::NO_CONTENT)
}

/// An account's identity key and current signed device list; the name is matched ignoring
/// case and returned in canonical form.
#[utoipa::path(get, path = "/v1/accounts/{username}", tag = "accounts",
    security(("bearer" = [])),
    params(("username" = String, Path, description = "the account, any case",
        pattern = "^[A-Za-z0-9_]{3,32}$")),
    responses(
        (status = 200, body = AccountResponse),
        (status = 401, body = ApiError),
        (status = 404, body = ApiError),
    ))]
async fn account(
    State(state): State<AppState>,
    _session: Session,
    Path(username): Path<String>,
) -> Result<axum::Json<AccountResponse>> {
    let username = username.to_ascii_lowercase();
    if validate_username(&username).is_err() {
        return Err(Error::not_found("no such account"));
    }
    let account = state
        .store
        .account(&username)
        .await?
        .ok_or_else(|| Error::not_found("no such account"))?;
    let transparency = account_proof(&state, &account.username, &account.device_list).await;
    Ok(axum::Json(AccountResponse {
        username: account.username,
        identity_key: B64(account.identity_key),
        device_list: B64(account.device_list),
        transparency,
    }))
}

/// The directory's proof for an account's stored list (published first if it is new), or
/// `None` if the directory cannot give one now (the client then refuses the list and asks
/// again later).
async fn account_proof(
    state: &AppState,
    username: &str,
    signed: &[u8],
) -> Option<Box<AccountTransparency>> {
    let (_, list) = device_list::verify(signed).ok()?;
    let expected = DirectoryEntry::for_list(list.identity_key, list.version, signed);
    let kt = &state.transparency;
    match kt.prove_current(&state.store, username, &expected).await {
        Ok(proven) => Some(Box::new(AccountTransparency {
            keys: super::transparency::keys_view(kt),
            lookup: super::transparency::proof_view(proven),
        })),
        Err(e) => {
            tracing::warn!(error = %e, "no directory proof for an account answer");
            None
        }
    }
}
