//! The key-package directory: upload, stock, and the atomic claim.

use axum::extract::State;
use nightjar_api::{
    ApiError, B64, ClaimKeyPackagesResponse, ClaimedKeyPackage, KeyPackageCount,
    UploadKeyPackagesRequest,
};
use nightjar_core::identity::{DeviceCredential, DeviceId, validate_username};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Json, Path};
use crate::auth::ActiveSession;
use crate::error::{Error, Result};
use crate::rules::device_list;
use crate::rules::key_packages::{self, Owner, PackageError};
use crate::state::{AppState, now_ms};
use crate::store::{ClaimQuota, KeyPackageStock, UploadOutcome};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(upload))
        .routes(routes!(count))
        .routes(routes!(claim))
}

fn stock_response(state: &AppState, stock: KeyPackageStock) -> axum::Json<KeyPackageCount> {
    axum::Json(KeyPackageCount {
        available: stock.available,
        last_resort: stock.last_resort,
        replenish: stock.available < state.config.limits.key_package_low_water,
    })
}

/// Uploads one-time key packages (and optionally a new last-resort one) of the calling device.
/// Each must be validly signed, carry this device's credential and its signature key from the
/// account's device list.
#[utoipa::path(post, path = "/v1/key-packages", tag = "key-packages",
    security(("bearer" = [])),
    request_body = UploadKeyPackagesRequest,
    responses(
        (status = 200, body = KeyPackageCount),
        (status = 400, description = "a key package is not this device's", body = ApiError),
        (status = 401, body = ApiError),
        (status = 403, description = "pending device", body = ApiError),
        (status = 413, description = "too many or too large key packages", body = ApiError),
    ))]
async fn upload(
    State(state): State<AppState>,
    ActiveSession(session): ActiveSession,
    Json(request): Json<UploadKeyPackagesRequest>,
) -> Result<axum::Json<KeyPackageCount>> {
    let limits = &state.config.limits;
    if request.key_packages.len() > limits.max_key_packages_per_request {
        return Err(Error::too_large("too many key packages in one request"));
    }
    let account = state
        .store
        .account_by_id(session.device.account_id)
        .await?
        .ok_or(Error::Internal("session of a vanished account"))?;
    let (_, list) = device_list::verify(&account.device_list)
        .map_err(|_| Error::Internal("stored device list does not verify"))?;
    let device_id = DeviceId::parse(&session.device.device_id)
        .ok_or(Error::Internal("stored device id is malformed"))?;
    let signature_key = list
        .device(device_id)
        .map(|d| d.signature_key)
        .ok_or_else(|| Error::forbidden("this device is not in the account's device list"))?;
    let identity = DeviceCredential {
        username: account.username,
        device_id,
    }
    .to_identity();
    let owner = Owner {
        identity: &identity,
        signature_key: &signature_key,
    };
    let max_bytes = limits.max_key_package_bytes;
    let checked = |bytes: B64, last_resort| check_package(owner, bytes, last_resort, max_bytes);
    let mut one_time = Vec::with_capacity(request.key_packages.len());
    for kp in request.key_packages {
        one_time.push(checked(kp, false)?);
    }
    let last_resort = request
        .last_resort
        .map(|kp| checked(kp, true))
        .transpose()?;
    let outcome = state
        .store
        .upload_key_packages(
            session.device.device_pk,
            &one_time,
            last_resort.as_ref(),
            limits.max_key_packages_stored,
        )
        .await?;
    match outcome {
        UploadOutcome::Stored(stock) => Ok(stock_response(&state, stock)),
        UploadOutcome::TooMany => Err(Error::too_large(format!(
            "a device may store at most {} key packages",
            limits.max_key_packages_stored
        ))),
    }
}

/// The calling device's key-package stock.
#[utoipa::path(get, path = "/v1/key-packages/count", tag = "key-packages",
    security(("bearer" = [])),
    responses(
        (status = 200, body = KeyPackageCount),
        (status = 401, body = ApiError),
        (status = 403, description = "pending device", body = ApiError),
    ))]
async fn count(
    State(state): State<AppState>,
    ActiveSession(session): ActiveSession,
) -> Result<axum::Json<KeyPackageCount>> {
    let stock = state
        .store
        .key_package_stock(session.device.device_pk)
        .await?;
    Ok(stock_response(&state, stock))
}

/// Claims one key package for every active device of the account: a one-time package, each
/// handed out at most once, or else the device's reusable last-resort package. One account may
/// claim one-time packages of another a few times per hour (`key_package_claims_per_target`);
/// past that it gets the last-resort packages, so nobody can drain another account's stock.
#[utoipa::path(post, path = "/v1/accounts/{username}/key-packages/claim", tag = "key-packages",
    security(("bearer" = [])),
    params(("username" = String, Path, description = "the account, any case",
        pattern = "^[A-Za-z0-9_]{3,32}$")),
    responses(
        (status = 200, body = ClaimKeyPackagesResponse),
        (status = 401, body = ApiError),
        (status = 403, description = "pending device", body = ApiError),
        (status = 404, body = ApiError),
        (status = 429, description = "too many requests", body = ApiError),
    ))]
async fn claim(
    State(state): State<AppState>,
    ActiveSession(session): ActiveSession,
    Path(username): Path<String>,
) -> Result<axum::Json<ClaimKeyPackagesResponse>> {
    let username = username.to_ascii_lowercase();
    if validate_username(&username).is_err() {
        return Err(Error::not_found("no such account"));
    }
    let account = state
        .store
        .account(&username)
        .await?
        .ok_or_else(|| Error::not_found("no such account"))?;
    let key_packages = state
        .store
        .claim_key_packages(
            account.id,
            ClaimQuota {
                claimer_id: session.device.account_id,
                max: state.config.limits.key_package_claims_per_target,
                window: state.config.limits.key_package_claim_window,
                now_ms: now_ms(),
            },
        )
        .await?
        .into_iter()
        .map(|(device_id, data, last_resort)| ClaimedKeyPackage {
            device_id,
            key_package: B64(data),
            last_resort,
        })
        .collect();
    Ok(axum::Json(ClaimKeyPackagesResponse { key_packages }))
}

/// Checks one uploaded key package of `owner` and maps a refusal to its API error
/// (413 for an oversized package, 400 for anything else).
pub(super) fn check_package(
    owner: Owner<'_>,
    bytes: B64,
    last_resort: bool,
    max_bytes: usize,
) -> Result<([u8; 32], Vec<u8>)> {
    key_packages::check(owner, bytes.0, last_resort, max_bytes).map_err(|e| match e {
        PackageError::TooLarge => Error::too_large(e.to_string()),
        PackageError::Invalid(why) => Error::bad_request(why),
    })
}
