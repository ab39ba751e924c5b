//! Key transparency: the directory's keys and signed epochs (public, for auditors with no
//! account), and lookup and history proofs (for signed-in devices).

use axum::extract::State;
use nightjar_api::{
    ApiError, B64, DirectoryKeysResponse, EpochResponse, EpochRoot, EpochsResponse,
    MAX_EPOCHS_PER_PAGE, ProofResponse,
};
use nightjar_core::identity::validate_username;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Path, Query};
use crate::auth::ActiveSession;
use crate::error::{Error, Result};
use crate::state::AppState;
use crate::store::StoredEpoch;
use crate::transparency::{KtFailure, Proven};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(keys))
        .routes(routes!(latest_epoch))
        .routes(routes!(epoch))
        .routes(routes!(epochs))
        .routes(routes!(lookup))
        .routes(routes!(history))
}

fn root_view(e: &StoredEpoch) -> EpochRoot {
    EpochRoot {
        epoch: e.epoch,
        root: B64(e.root.clone()),
        signature: B64(e.signature.clone()),
    }
}

fn failure(state: &AppState, e: KtFailure) -> Error {
    match e {
        KtFailure::NotFound => Error::not_found("not in the directory yet"),
        KtFailure::NotReady => Error::rate_limited(state.transparency.interval_ms()),
        KtFailure::Store(e) => Error::Database(e),
        KtFailure::Akd(message) => {
            tracing::error!(error = %message, "the directory failed");
            Error::Internal("the directory failed")
        }
    }
}

/// A proof as it travels.
pub(super) fn proof_view(p: Proven) -> ProofResponse {
    ProofResponse {
        root: root_view(&p.root),
        proof: B64(p.proof),
    }
}

fn proof_response(p: Proven) -> axum::Json<ProofResponse> {
    axum::Json(proof_view(p))
}

/// The directory's keys as they travel.
pub(super) fn keys_view(kt: &crate::transparency::Transparency) -> DirectoryKeysResponse {
    DirectoryKeysResponse {
        root_key: B64(kt.root_public_key().to_vec()),
        vrf_public_key: B64(kt.vrf_public_key().to_vec()),
        interval_ms: kt.interval_ms(),
    }
}

/// The keys that check the directory: the root-signing key and AKD's VRF public key.
#[utoipa::path(get, path = "/v1/kt/keys", tag = "transparency",
    responses((status = 200, body = DirectoryKeysResponse)))]
async fn keys(State(state): State<AppState>) -> axum::Json<DirectoryKeysResponse> {
    axum::Json(keys_view(&state.transparency))
}

/// The newest signed epoch root.
#[utoipa::path(get, path = "/v1/kt/epochs/latest", tag = "transparency",
    responses(
        (status = 200, body = EpochRoot),
        (status = 404, description = "nothing published yet", body = ApiError),
    ))]
async fn latest_epoch(State(state): State<AppState>) -> Result<axum::Json<EpochRoot>> {
    let latest = state
        .store
        .kt_latest_epoch()
        .await?
        .ok_or_else(|| Error::not_found("nothing published yet"))?;
    Ok(axum::Json(root_view(&latest)))
}

/// One epoch's signed root and the append-only proof from the epoch before.
#[utoipa::path(get, path = "/v1/kt/epochs/{epoch}", tag = "transparency",
    params(("epoch" = u64, Path, minimum = 0, description = "the epoch (0: the empty directory)")),
    responses(
        (status = 200, body = EpochResponse),
        (status = 400, description = "the epoch is not a number", body = ApiError),
        (status = 404, description = "no such epoch", body = ApiError),
    ))]
async fn epoch(
    State(state): State<AppState>,
    Path(epoch): Path<u64>,
) -> Result<axum::Json<EpochResponse>> {
    let stored = state
        .store
        .kt_epoch(epoch)
        .await?
        .ok_or_else(|| Error::not_found("no such epoch"))?;
    Ok(axum::Json(epoch_view(stored)))
}

fn epoch_view(stored: StoredEpoch) -> EpochResponse {
    EpochResponse {
        root: root_view(&stored),
        audit_proof: B64(stored.audit_proof),
    }
}

/// Proof bytes after which a page of epochs ends (it always holds at least one epoch).
const MAX_PAGE_PROOF_BYTES: usize = 4 << 20;

/// Paging through the signed epochs.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
struct EpochsQuery {
    /// Return the epochs after this one.
    after: u64,
    /// At most this many (default and maximum 64).
    limit: Option<u32>,
}

/// The signed epochs after `after`, oldest first, each with its append-only proof from the
/// epoch before: a device (or an auditor) walks the directory's history a page at a time.
#[utoipa::path(get, path = "/v1/kt/epochs", tag = "transparency",
    params(EpochsQuery),
    responses(
        (status = 200, body = EpochsResponse),
        (status = 400, description = "a malformed query", body = ApiError),
    ))]
async fn epochs(
    State(state): State<AppState>,
    Query(query): Query<EpochsQuery>,
) -> Result<axum::Json<EpochsResponse>> {
    // The document declares `after` as int64: refuse what it excludes.
    if i64::try_from(query.after).is_err() {
        return Err(Error::bad_request("`after` is out of range"));
    }
    let limit = query.limit.unwrap_or(MAX_EPOCHS_PER_PAGE);
    if !(1..=MAX_EPOCHS_PER_PAGE).contains(&limit) {
        return Err(Error::bad_request(format!(
            "limit must be 1 to {MAX_EPOCHS_PER_PAGE}"
        )));
    }
    // A page ends after the epoch that takes its proofs to MAX_PAGE_PROOF_BYTES (epochs of
    // many changes have large proofs, and the route needs no account), but always holds the
    // first epoch, so a walk never stalls.
    let stored = state
        .store
        .kt_epochs_after(query.after, limit, MAX_PAGE_PROOF_BYTES)
        .await?;
    Ok(axum::Json(EpochsResponse {
        epochs: stored.into_iter().map(epoch_view).collect(),
    }))
}

/// A proof of an account's current directory entry (identity key and device list), against
/// the newest signed root.
#[utoipa::path(get, path = "/v1/kt/lookup/{username}", tag = "transparency",
    security(("bearer" = [])),
    params(("username" = String, Path, description = "the account")),
    responses(
        (status = 200, body = ProofResponse),
        (status = 404, description = "not in the directory (yet)", body = ApiError),
    ))]
async fn lookup(
    State(state): State<AppState>,
    _session: ActiveSession,
    Path(username): Path<String>,
) -> Result<axum::Json<ProofResponse>> {
    let username = username.to_ascii_lowercase();
    if validate_username(&username).is_err() {
        return Err(Error::not_found("not in the directory yet"));
    }
    let proven = state
        .transparency
        .lookup(&state.store, &username)
        .await
        .map_err(|e| failure(&state, e))?;
    Ok(proof_response(proven))
}

/// A proof of the calling account's complete directory history, so that its devices can see
/// every identity key and device list the directory ever showed for it.
#[utoipa::path(get, path = "/v1/kt/history", tag = "transparency",
    security(("bearer" = [])),
    responses(
        (status = 200, body = ProofResponse),
        (status = 404, description = "not in the directory (yet)", body = ApiError),
    ))]
async fn history(
    State(state): State<AppState>,
    ActiveSession(session): ActiveSession,
) -> Result<axum::Json<ProofResponse>> {
    let account = state
        .store
        .account_by_id(session.device.account_id)
        .await?
        .ok_or(Error::Internal("session of a vanished account"))?;
    let proven = state
        .transparency
        .history(&state.store, &account.username)
        .await
        .map_err(|e| failure(&state, e))?;
    Ok(proof_response(proven))
}
