//! Devices: listing, linking (pending → approved → sealed identity fetched), removal, and
//! device-list updates. Every list change must follow the stored list (see
//! [`crate::rules::device_list`]) and is written only if the stored version did not move.

use axum::extract::State;
use axum::http::StatusCode;
use nightjar_api::{
    ApiError, ApproveDeviceRequest, B64, DeviceInfo, DeviceListUpdate, DeviceStatus,
    DevicesResponse, LinkStatusResponse, PendingDevice, PendingDevicesResponse,
};
use nightjar_core::identity::{DeviceId, DeviceList};
use nightjar_core::provisioning::LinkOffer;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Body, Json, Path};
use crate::auth::{ActiveSession, Session};
use crate::error::{Error, Result};
use crate::rules::device_list::{self, Change, ListError};
use crate::state::AppState;
use crate::store::ListUpdate;

/// Largest sealed identity accepted (an identity key and a device list, encrypted).
const MAX_SEALED_IDENTITY: usize = 8 * 1024;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(devices))
        .routes(routes!(pending))
        .routes(routes!(approve))
        .routes(routes!(link_status))
        .routes(routes!(remove))
        .routes(routes!(replace_list))
}

fn list_error(e: ListError) -> Error {
    match e {
        ListError::Malformed => Error::bad_request(e.to_string()),
        _ => Error::list_conflict(e.to_string()),
    }
}

fn changed_meanwhile() -> Error {
    Error::list_conflict("the device list changed meanwhile; fetch it and try again")
}

/// The account's stored list, decoded (it was verified when stored).
async fn stored_list(state: &AppState, account_id: i64) -> Result<(Vec<u8>, DeviceList)> {
    let account = state
        .store
        .account_by_id(account_id)
        .await?
        .ok_or(Error::Internal("session of a vanished account"))?;
    let (_, list) = device_list::verify(&account.device_list)
        .map_err(|_| Error::Internal("stored device list does not verify"))?;
    Ok((account.device_list, list))
}

fn parse_device_id(text: &str) -> Result<DeviceId> {
    DeviceId::parse(text)
        .ok_or_else(|| Error::bad_request("a device id is 16 lowercase hex digits"))
}

/// The account's devices (active and pending) and its current signed device list.
#[utoipa::path(get, path = "/v1/devices", tag = "devices",
    security(("bearer" = [])),
    responses(
        (status = 200, body = DevicesResponse),
        (status = 401, body = ApiError),
        (status = 403, description = "pending device", body = ApiError),
    ))]
async fn devices(
    State(state): State<AppState>,
    ActiveSession(session): ActiveSession,
) -> Result<axum::Json<DevicesResponse>> {
    let (list_bytes, _) = stored_list(&state, session.device.account_id).await?;
    let devices = state
        .store
        .devices(session.device.account_id)
        .await?
        .into_iter()
        .map(|d| DeviceInfo {
            current: d.pk == session.device.device_pk,
            device_id: d.device_id,
            status: d.status,
            created_at_ms: d.created_at_ms,
            last_seen_ms: d.last_seen_ms,
        })
        .collect();
    Ok(axum::Json(DevicesResponse {
        devices,
        device_list: B64(list_bytes),
    }))
}

/// Devices waiting for approval, with their link offers.
#[utoipa::path(get, path = "/v1/devices/pending", tag = "devices",
    security(("bearer" = [])),
    responses(
        (status = 200, body = PendingDevicesResponse),
        (status = 401, body = ApiError),
        (status = 403, description = "pending device", body = ApiError),
    ))]
async fn pending(
    State(state): State<AppState>,
    ActiveSession(session): ActiveSession,
) -> Result<axum::Json<PendingDevicesResponse>> {
    let pending = state
        .store
        .devices(session.device.account_id)
        .await?
        .into_iter()
        .filter(|d| d.status == DeviceStatus::Pending)
        .filter_map(|d| {
            Some(PendingDevice {
                link_offer: B64(d.link_offer?),
                device_id: d.device_id,
                created_at_ms: d.created_at_ms,
            })
        })
        .collect();
    Ok(axum::Json(PendingDevicesResponse { pending }))
}

/// Approves a pending device with the next signed device list, which must add exactly it
/// (with the signature key of its link offer), and stores its sealed identity.
#[utoipa::path(post, path = "/v1/devices/approve", tag = "devices",
    security(("bearer" = [])),
    request_body = ApproveDeviceRequest,
    responses(
        (status = 204, description = "approved"),
        (status = 400, body = ApiError),
        (status = 401, body = ApiError),
        (status = 403, description = "pending device", body = ApiError),
        (status = 404, description = "no such pending device", body = ApiError),
        (status = 409, description = "the list does not follow the stored one", body = ApiError),
    ))]
async fn approve(
    State(state): State<AppState>,
    ActiveSession(session): ActiveSession,
    Json(request): Json<ApproveDeviceRequest>,
) -> Result<StatusCode> {
    parse_device_id(&request.device_id)?;
    if request.sealed_identity.0.is_empty() {
        return Err(Error::bad_request("the sealed identity is empty"));
    }
    if request.sealed_identity.0.len() > MAX_SEALED_IDENTITY {
        return Err(Error::too_large("the sealed identity is too large"));
    }
    let account_id = session.device.account_id;
    let target = state
        .store
        .device(account_id, &request.device_id)
        .await?
        .filter(|d| d.status == DeviceStatus::Pending)
        .ok_or_else(|| Error::not_found("no pending device with this id"))?;
    let offer = target
        .link_offer
        .as_deref()
        .and_then(|b| LinkOffer::decode(b).ok())
        .ok_or(Error::Internal("stored link offer is unreadable"))?;
    let (_, stored) = stored_list(&state, account_id).await?;
    let (_, next) = device_list::verify(&request.device_list.0).map_err(list_error)?;
    device_list::check_next(&stored, &next, Change::Add(&offer.device)).map_err(list_error)?;
    state
        .store
        .update_device_list(ListUpdate {
            account_id,
            expected_version: stored.version,
            device_list: &request.device_list.0,
            version: next.version,
            approve: Some((&request.device_id, &request.sealed_identity.0)),
            remove: Vec::new(),
        })
        .await?
        .ok_or_else(changed_meanwhile)?;
    tracing::info!(version = next.version, "device approved");
    Ok(StatusCode::NO_CONTENT)
}

/// For a pending device: whether it was approved, and then its sealed identity.
#[utoipa::path(get, path = "/v1/devices/link", tag = "devices",
    security(("bearer" = [])),
    responses(
        (status = 200, body = LinkStatusResponse),
        (status = 401, body = ApiError),
    ))]
async fn link_status(
    State(state): State<AppState>,
    session: Session,
) -> Result<axum::Json<LinkStatusResponse>> {
    let device = state
        .store
        .device_by_pk(session.device.device_pk)
        .await?
        .ok_or_else(Error::unauthorized)?;
    Ok(axum::Json(LinkStatusResponse {
        status: device.status,
        sealed_identity: device.sealed_identity.map(B64),
    }))
}

/// Removes a device. An active device needs the next signed list without it; a pending one
/// (a refused link request) needs no body. Its sessions, queue and key packages go with it;
/// a device may remove itself.
#[utoipa::path(delete, path = "/v1/devices/{device_id}", tag = "devices",
    security(("bearer" = [])),
    params(("device_id" = String, Path, description = "16 lowercase hex digits",
        pattern = "^[0-9a-f]{16}$")),
    request_body(content = DeviceListUpdate, description = "required for an active device"),
    responses(
        (status = 204, description = "removed"),
        (status = 400, body = ApiError),
        (status = 401, body = ApiError),
        (status = 403, description = "pending device", body = ApiError),
        (status = 404, body = ApiError),
        (status = 409, description = "the list does not follow the stored one", body = ApiError),
    ))]
async fn remove(
    State(state): State<AppState>,
    ActiveSession(session): ActiveSession,
    Path(device_id): Path<String>,
    Body(body): Body,
) -> Result<StatusCode> {
    parse_device_id(&device_id)?;
    let account_id = session.device.account_id;
    let target = state
        .store
        .device(account_id, &device_id)
        .await?
        .ok_or_else(|| Error::not_found("no such device"))?;
    if target.status == DeviceStatus::Pending {
        if let Some(pk) = state
            .store
            .delete_pending_device(account_id, &device_id)
            .await?
        {
            state.revoke_devices(&[pk]);
        }
        return Ok(StatusCode::NO_CONTENT);
    }
    if body.is_empty() {
        return Err(Error::bad_request(
            "removing an active device needs the next signed device list",
        ));
    }
    let update: DeviceListUpdate = serde_json::from_slice(&body)
        .map_err(|_| Error::bad_request("the body is not a device list update"))?;
    let (_, stored) = stored_list(&state, account_id).await?;
    let (_, next) = device_list::verify(&update.device_list.0).map_err(list_error)?;
    let gone = parse_device_id(&device_id)?;
    device_list::check_next(&stored, &next, Change::Remove(gone)).map_err(list_error)?;
    let removed = state
        .store
        .update_device_list(ListUpdate {
            account_id,
            expected_version: stored.version,
            device_list: &update.device_list.0,
            version: next.version,
            approve: None,
            remove: vec![device_id],
        })
        .await?
        .ok_or_else(changed_meanwhile)?;
    state.revoke_devices(&removed);
    tracing::info!(version = next.version, "device removed");
    Ok(StatusCode::NO_CONTENT)
}

/// Publishes the next signed device list: same identity key, version + 1, no device that is
/// not already listed (devices are added by approval). Devices it leaves out are removed.
#[utoipa::path(put, path = "/v1/device-list", tag = "devices",
    security(("bearer" = [])),
    request_body = DeviceListUpdate,
    responses(
        (status = 204, description = "stored"),
        (status = 400, body = ApiError),
        (status = 401, body = ApiError),
        (status = 403, description = "pending device", body = ApiError),
        (status = 409, description = "the list does not follow the stored one", body = ApiError),
    ))]
async fn replace_list(
    State(state): State<AppState>,
    ActiveSession(session): ActiveSession,
    Json(update): Json<DeviceListUpdate>,
) -> Result<StatusCode> {
    let account_id = session.device.account_id;
    let (_, stored) = stored_list(&state, account_id).await?;
    let (_, next) = device_list::verify(&update.device_list.0).map_err(list_error)?;
    device_list::check_next(&stored, &next, Change::Subset).map_err(list_error)?;
    let remove = stored
        .devices
        .iter()
        .filter(|d| next.device(d.device_id).is_none())
        .map(|d| d.device_id.to_string())
        .collect();
    let removed = state
        .store
        .update_device_list(ListUpdate {
            account_id,
            expected_version: stored.version,
            device_list: &update.device_list.0,
            version: next.version,
            approve: None,
            remove,
        })
        .await?
        .ok_or_else(changed_meanwhile)?;
    state.revoke_devices(&removed);
    tracing::info!(
        version = next.version,
        removed = removed.len(),
        "device list replaced"
    );
    Ok(StatusCode::NO_CONTENT)
}
