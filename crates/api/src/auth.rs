//! Device authentication: device-key sign-in for a known device, and the account's sessions.
//!
//! Device ids are public, so a password alone never signs in an existing device: it must also
//! sign a fresh server challenge with its device key (`nightjar_core::device_auth::LoginProof`).
//! A known device can also sign in with that proof alone, without the password.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{B64, DeviceStatus};

/// `POST /v1/device-login/start`: a known device asks for a challenge to sign.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct DeviceLoginStartRequest {
    /// The account, any case.
    #[schema(min_length = 3, max_length = 32)]
    pub username: String,
    /// The device signing in, 16 lowercase hex digits.
    #[schema(pattern = "^[0-9a-f]{16}$")]
    pub device_id: String,
}

/// Answer to [`DeviceLoginStartRequest`]. Unknown accounts and devices get an answer of the
/// same shape and fail only at the finish step.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct DeviceLoginStartResponse {
    /// Identifies the attempt in the finish step; valid for 5 minutes, single use.
    pub login_id: String,
    /// 32 fresh random bytes to sign.
    pub challenge: B64,
}

/// `POST /v1/device-login/finish`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct DeviceLoginFinishRequest {
    /// From [`DeviceLoginStartResponse`].
    pub login_id: String,
    /// Ed25519 signature by the device's key over the login proof (username, device id,
    /// login id, challenge).
    pub device_signature: B64,
}

/// One session of the account in `GET /v1/sessions`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionInfo {
    /// The device the session belongs to.
    pub device_id: String,
    /// The device's status.
    pub status: DeviceStatus,
    /// When the session was created (ms since the Unix epoch).
    pub created_at_ms: u64,
    /// When the session expires (ms).
    pub expires_at_ms: u64,
    /// The device's last authenticated request (ms).
    pub last_seen_ms: u64,
    /// Whether this is the session asking.
    pub current: bool,
}

/// `GET /v1/sessions`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionsResponse {
    /// Every unexpired session of the account, oldest first.
    pub sessions: Vec<SessionInfo>,
}

/// Answer to `POST /v1/sessions/revoke-others`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RevokeSessionsResponse {
    /// How many sessions were revoked.
    pub revoked: u64,
}
