//! The Nightjar HTTP/WebSocket API, version 1: every request and response body, the WebSocket
//! frames, and the error codes. Binary fields are base64url without padding ([`B64`]).
//!
//! The server never receives anything it could decrypt: passwords travel as OPAQUE messages,
//! messages as MLS ciphertext, a new device's account identity key sealed to that device.

mod auth;
mod blobs;
mod bytes;
mod calls;
mod consent;
mod error;
#[cfg(feature = "opaque")]
pub mod opaque;
mod reports;
mod stream;
mod transparency;

pub use auth::*;
pub use blobs::*;
pub use bytes::{B64, B64_PATTERN};
pub use calls::*;
pub use consent::*;
pub use error::{ApiError, ErrorCode};
pub use reports::*;
pub use stream::*;
pub use transparency::*;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Path prefix of every versioned endpoint.
pub const PREFIX: &str = "/v1";
/// Header carrying the session token: `Authorization: Bearer <token>`.
pub const AUTHORIZATION: &str = "authorization";

/// One device of one account, as the server routes to it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
pub struct DeviceAddress {
    /// The account's username.
    #[schema(pattern = "^[a-z0-9_]{3,32}$")]
    pub username: String,
    /// The device id, 16 lowercase hex digits.
    #[schema(pattern = "^[0-9a-f]{16}$")]
    pub device_id: String,
}

// ---------------------------------------------------------------- accounts and sessions

/// `POST /v1/register/start`: first OPAQUE registration message.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RegisterStartRequest {
    /// Wanted username: 3–32 of `a-z 0-9 _`, unique ignoring case.
    #[schema(pattern = "^[a-z0-9_]{3,32}$")]
    pub username: String,
    /// OPAQUE `RegistrationRequest`.
    pub registration_request: B64,
}

/// Answer to [`RegisterStartRequest`].
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RegisterStartResponse {
    /// OPAQUE `RegistrationResponse`.
    pub registration_response: B64,
}

/// `POST /v1/register/finish`: creates the account and its first device atomically.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct RegisterFinishRequest {
    /// The username from the start step.
    #[schema(pattern = "^[a-z0-9_]{3,32}$")]
    pub username: String,
    /// OPAQUE `RegistrationUpload` (the password file; the password itself never leaves the device).
    pub registration_record: B64,
    /// The first device's id (16 hex digits).
    #[schema(pattern = "^[0-9a-f]{16}$")]
    pub device_id: String,
    /// Version 1 of the account's signed device list, naming exactly this device.
    pub device_list: B64,
    /// One-time MLS key packages of this device.
    pub key_packages: Vec<B64>,
    /// The device's last-resort key package.
    pub last_resort_key_package: B64,
}

/// A session: returned by registration and login.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionResponse {
    /// Bearer token; the server stores only its hash.
    pub token: String,
    /// The account.
    pub username: String,
    /// The device this session belongs to.
    pub device_id: String,
    /// When the token stops working (ms since the Unix epoch).
    pub expires_at_ms: u64,
    /// `active`, or `pending` for a new device awaiting approval.
    pub device_status: DeviceStatus,
}

/// `POST /v1/login/start`: first OPAQUE login message.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct LoginStartRequest {
    /// The username.
    #[schema(pattern = "^[A-Za-z0-9_]{3,32}$")]
    pub username: String,
    /// OPAQUE `CredentialRequest`.
    pub credential_request: B64,
}

/// Answer to [`LoginStartRequest`]. Unknown usernames get an indistinguishable answer.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct LoginStartResponse {
    /// Identifies the login attempt in the finish step; valid for 5 minutes.
    pub login_id: String,
    /// OPAQUE `CredentialResponse`.
    pub credential_response: B64,
    /// 32 fresh random bytes an existing device signs with its device key
    /// ([`LoginFinishRequest::device_signature`]).
    #[serde(default)]
    pub challenge: B64,
}

/// `POST /v1/login/finish`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct LoginFinishRequest {
    /// From [`LoginStartResponse`].
    pub login_id: String,
    /// OPAQUE `CredentialFinalization`.
    pub credential_finalization: B64,
    /// The device logging in (16 hex digits). An unknown id creates a pending device.
    #[schema(pattern = "^[0-9a-f]{16}$")]
    pub device_id: String,
    /// For a new device: its link offer (`nightjar_core::provisioning::LinkOffer`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_offer: Option<B64>,
    /// For an existing device: its Ed25519 signature over the login proof
    /// (`nightjar_core::device_auth::LoginProof`: username, device id, login id and the
    /// challenge from [`LoginStartResponse`]). Without it a password signs in no existing device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_signature: Option<B64>,
}

// ---------------------------------------------------------------- devices and directory

/// Whether a device may use the account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    /// Listed in the signed device list.
    Active,
    /// Logged in, waiting for an existing device to approve it.
    Pending,
}

/// One device in `GET /v1/devices`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct DeviceInfo {
    /// Device id.
    pub device_id: String,
    /// Active or pending.
    pub status: DeviceStatus,
    /// When it registered or logged in first (ms).
    pub created_at_ms: u64,
    /// Last authenticated request (ms).
    pub last_seen_ms: u64,
    /// Whether this is the device asking.
    pub current: bool,
}

/// `GET /v1/devices`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct DevicesResponse {
    /// Active and pending devices.
    pub devices: Vec<DeviceInfo>,
    /// The current signed device list.
    pub device_list: B64,
}

/// A device waiting for approval, in `GET /v1/devices/pending`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct PendingDevice {
    /// Device id.
    pub device_id: String,
    /// Its link offer; the approving device computes the approval code from it.
    pub link_offer: B64,
    /// When it asked (ms).
    pub created_at_ms: u64,
}

/// `GET /v1/devices/pending`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct PendingDevicesResponse {
    /// Devices waiting for approval.
    pub pending: Vec<PendingDevice>,
}

/// `POST /v1/devices/approve` (from an active device).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ApproveDeviceRequest {
    /// The pending device.
    #[schema(pattern = "^[0-9a-f]{16}$")]
    pub device_id: String,
    /// The next signed device list, which adds it.
    pub device_list: B64,
    /// The account identity key and that list, sealed to the new device's link key.
    pub sealed_identity: B64,
}

/// `GET /v1/devices/link` (from a pending device).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct LinkStatusResponse {
    /// `pending` until approved, then `active`.
    pub status: DeviceStatus,
    /// The sealed identity, once approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealed_identity: Option<B64>,
}

/// `DELETE /v1/devices/{device_id}` and `PUT /v1/device-list` body.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct DeviceListUpdate {
    /// The next signed device list (version + 1, same identity key).
    pub device_list: B64,
}

/// `GET /v1/accounts/{username}`: what peers need to talk to an account.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AccountResponse {
    /// Canonical username.
    pub username: String,
    /// The account identity key (Ed25519 public key).
    pub identity_key: B64,
    /// The current signed device list.
    pub device_list: B64,
    /// Proof that the key-transparency directory holds exactly this identity key and device
    /// list as the account's current entry. Clients refuse a list without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transparency: Option<Box<AccountTransparency>>,
}

// ---------------------------------------------------------------- key packages

/// `POST /v1/key-packages`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct UploadKeyPackagesRequest {
    /// One-time key packages of the calling device.
    pub key_packages: Vec<B64>,
    /// Replaces the device's last-resort key package.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_resort: Option<B64>,
}

/// Key-package stock of the calling device (`GET /v1/key-packages/count` and upload answer).
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct KeyPackageCount {
    /// Unclaimed one-time packages.
    pub available: u32,
    /// Whether a last-resort package is stored.
    pub last_resort: bool,
    /// True when `available` is below the server's threshold: upload more.
    pub replenish: bool,
}

/// A claimed key package of one device.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ClaimedKeyPackage {
    /// The device.
    pub device_id: String,
    /// The key package.
    pub key_package: B64,
    /// Whether it is the (reusable) last-resort package.
    pub last_resort: bool,
}

/// `POST /v1/accounts/{username}/key-packages/claim`: one package per active device,
/// each one-time package handed out at most once.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ClaimKeyPackagesResponse {
    /// One per active device that has any package.
    pub key_packages: Vec<ClaimedKeyPackage>,
}

// ---------------------------------------------------------------- delivery

/// The MLS message kind of an envelope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EnvelopeKind {
    /// Encrypted application message.
    Application,
    /// Encrypted commit; the server accepts one per epoch.
    Commit,
    /// Encrypted standalone proposal (a leave request).
    Proposal,
    /// Welcome for devices a commit added.
    Welcome,
}

/// A Welcome travelling with a commit.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct WelcomeOut {
    /// The MLS Welcome.
    pub payload: B64,
    /// Ignored (older clients send it): the server sends the Welcome exactly to the devices the
    /// validated commit adds.
    #[serde(default)]
    pub recipients: Vec<DeviceAddress>,
}

/// `POST /v1/conversations/{conversation_id}/messages`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct SendRequest {
    /// Client-chosen key (≤ 64 chars); retrying with the same key is a no-op that returns the
    /// first answer.
    #[schema(min_length = 1, max_length = 64)]
    pub idempotency_key: String,
    /// Application, commit or proposal (never welcome).
    pub kind: EnvelopeKind,
    /// The epoch the message was made in (checked against the MLS header).
    pub epoch: u64,
    /// The MLS message.
    pub payload: B64,
    /// For commits: the Welcome for added devices.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub welcome: Option<WelcomeOut>,
    /// Ignored: kept so that requests of older clients still parse. The server derives the
    /// member devices after a commit from the commit itself (validated against the group's
    /// public state), never from the sender's claim.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<DeviceAddress>>,
    /// For the commit that creates a conversation (epoch 0): the MLS GroupInfo of epoch 0 with
    /// the ratchet tree, from which the server builds the group's public state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group_info: Option<B64>,
    /// For application messages: the message's franking commitment (32 bytes), which the
    /// server stamps ([`FrankingStamp`]) so that a recipient can report the message. Refused on
    /// other kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub franking_commitment: Option<B64>,
}

/// Answer to [`SendRequest`]: the message is durably queued for every recipient device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SendResponse {
    /// Server-assigned message id; 0 when the message reached no device (the commit that
    /// creates a conversation, or a conversation with no other active device), so nothing
    /// was stored.
    pub message_id: u64,
    /// The conversation's epoch after this message.
    pub epoch: u64,
}

/// An application message posted without a session: a member of the conversation signs it
/// with the epoch's sealed-sender key, which identifies no member (see `nightjar_core::sealed`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SealedSendRequest {
    /// Client-chosen id (≤ 64 chars, signed); retrying with the same id is a no-op that
    /// returns the first answer.
    #[schema(min_length = 1, max_length = 64)]
    pub submission_id: String,
    /// The epoch the message was made in (checked against the MLS header).
    pub epoch: u64,
    /// The MLS message (an application `PrivateMessage`).
    pub payload: B64,
    /// The public half of the epoch's sealed-sender key (32 bytes).
    pub key: B64,
    /// Ed25519 signature of the submission under that key (64 bytes).
    pub signature: B64,
    /// The message's franking commitment (32 bytes), which the server stamps
    /// ([`FrankingStamp`]) so that a recipient can report the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub franking_commitment: Option<B64>,
}

/// Registers the public half of a conversation epoch's sealed-sender key. A member device
/// registers it when it commits, and before it first sends in a conversation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SealedKeyRequest {
    /// The conversation's current epoch.
    pub epoch: u64,
    /// The public key (32 bytes).
    pub key: B64,
    /// Whether this registration accepts the conversation for the account (the device is
    /// about to send in it; sending used to say so). A registration after a commit does not.
    #[serde(default)]
    pub accept: bool,
}

/// One queued message for one device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Envelope {
    /// Position in this device's queue; acknowledge it to delete it.
    pub id: u64,
    /// The conversation (32 hex digits); absent for Welcomes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    /// The sending device, as authenticated by the server (MLS authenticates it end to end).
    pub sender: DeviceAddress,
    /// Message kind.
    pub kind: EnvelopeKind,
    /// The MLS message.
    pub payload: B64,
    /// When the server accepted it (ms).
    pub server_time_ms: u64,
    /// For an application message the sender franked: the server's stamp on its commitment,
    /// which a recipient keeps to report the message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub franking: Option<FrankingStamp>,
}

/// `GET /v1/messages?after=ID&limit=N`: the device's queue, oldest first.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct InboxResponse {
    /// Queued envelopes in order.
    pub envelopes: Vec<Envelope>,
}

/// `POST /v1/messages/ack`: these envelopes are processed; delete them.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct AckRequest {
    /// Envelope ids.
    pub ids: Vec<u64>,
}

/// Frames the server sends on `GET /v1/stream` (WebSocket, JSON text frames).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    /// A queued envelope; queued ones come first, in order, then new ones as they arrive.
    Envelope {
        /// The envelope.
        envelope: Envelope,
    },
    /// Everything queued at connect time has been sent.
    Drained,
    /// A request was refused.
    Error {
        /// What went wrong.
        error: ApiError,
    },
}

/// Frames a client sends on `GET /v1/stream`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    /// These envelopes are processed; delete them.
    Ack {
        /// Envelope ids.
        ids: Vec<u64>,
    },
    /// The session token, as the first frame of a stream opened without an `Authorization`
    /// header (browsers cannot set one on a WebSocket; the URL must not carry it). Must arrive
    /// within a few seconds of the upgrade, else the server closes the stream (1008); a wrong
    /// token gets an `unauthorized` error frame and a close. Not accepted later.
    Auth {
        /// The session token.
        token: StreamToken,
    },
}

/// `GET /healthz`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// `ok` when the database answers.
    pub status: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_tagged_json() {
        let frame = ServerFrame::Drained;
        assert_eq!(
            serde_json::to_string(&frame).unwrap(),
            r#"{"type":"drained"}"#
        );
        let ack: ClientFrame = serde_json::from_str(r#"{"type":"ack","ids":[1,2]}"#).unwrap();
        assert_eq!(ack, ClientFrame::Ack { ids: vec![1, 2] });
    }

    #[test]
    fn send_request_round_trip() {
        let req = SendRequest {
            idempotency_key: "k1".into(),
            kind: EnvelopeKind::Commit,
            epoch: 3,
            payload: B64(vec![1, 2, 3]),
            welcome: None,
            members: None,
            group_info: None,
            franking_commitment: None,
        };
        let json = serde_json::to_string(&req).unwrap();
        assert_eq!(
            json,
            r#"{"idempotency_key":"k1","kind":"commit","epoch":3,"payload":"AQID"}"#
        );
        let back: SendRequest = serde_json::from_str(&json).unwrap();
        assert_eq!(back.payload, req.payload);
    }
}
