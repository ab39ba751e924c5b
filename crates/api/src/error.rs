//! The one error body every refusal carries.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Machine-readable reason for a refusal; the HTTP status follows from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// 400: the request is malformed or inconsistent.
    BadRequest,
    /// 400: the username is not 3–32 of `a-z 0-9 _`.
    InvalidUsername,
    /// 401: missing, unknown, expired or revoked session token.
    Unauthorized,
    /// 401: the password (OPAQUE proof) was wrong.
    WrongCredentials,
    /// 403: the device is pending approval, or not allowed to do this.
    Forbidden,
    /// 403: the device is not a member of the conversation.
    NotAMember,
    /// 404: no such account, device, conversation or login attempt.
    NotFound,
    /// 409: the username is taken.
    UsernameTaken,
    /// 409: another commit already took this epoch; `current_epoch` says where the group is.
    EpochConflict,
    /// 409: the device list version or signature does not follow the stored one.
    DeviceListConflict,
    /// 413: the payload is larger than the server accepts.
    TooLarge,
    /// 429: too many requests or login attempts; `retry_after_ms` says when to try again.
    RateLimited,
    /// 507: the recipient's queue is full.
    QueueFull,
    /// 500: something failed on the server; details are in its logs, never here.
    Internal,
    /// 403: every recipient of the message blocked the sending account.
    Blocked,
    /// 403: the recipient has not accepted the sending account yet, and the few small
    /// messages a message request may carry are used up (or this one is too large).
    MessageRequestLimit,
    /// 403: a sealed message's key is not registered for its conversation and epoch, or its
    /// signature does not verify; a member registers the epoch's key and sends again.
    SealedKeyUnknown,
    /// 404: the server does not offer this feature (for example no TURN relay is configured
    /// for calls); asking again will not help until its operator configures it.
    NotConfigured,
    /// 409: the group call already holds as many participants as the server's SFU takes.
    CallFull,
    /// 409: another device with the same device id is in this group call.
    ParticipantConflict,
    /// 429: the server's SFU already holds as many group calls as it takes; try later.
    TooManyCalls,
    /// 507: the account's attachment storage is full (its quota), or it has too many uploads
    /// going on.
    QuotaExceeded,
    /// 409: the blob is complete: its parts can no longer change.
    BlobComplete,
    /// 422: a message report's tag is not the server's over its commitment, conversation and
    /// time (made up, or taken from another message or conversation).
    FrankingTagInvalid,
    /// 422: a message report's franking key does not open its commitment for the content,
    /// sender and conversation it names (one of them was altered).
    FrankingCommitmentInvalid,
    /// 422: a message report's signature is not the named sender device's signature of the
    /// commitment (the message is not that device's).
    FrankingSignatureInvalid,
}

impl ErrorCode {
    /// The HTTP status code for this error.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::BadRequest | ErrorCode::InvalidUsername => 400,
            ErrorCode::Unauthorized | ErrorCode::WrongCredentials => 401,
            ErrorCode::Forbidden | ErrorCode::NotAMember => 403,
            ErrorCode::NotFound | ErrorCode::NotConfigured => 404,
            ErrorCode::UsernameTaken
            | ErrorCode::EpochConflict
            | ErrorCode::DeviceListConflict
            | ErrorCode::CallFull
            | ErrorCode::ParticipantConflict
            | ErrorCode::BlobComplete => 409,
            ErrorCode::TooLarge => 413,
            ErrorCode::RateLimited | ErrorCode::TooManyCalls => 429,
            ErrorCode::QueueFull | ErrorCode::QuotaExceeded => 507,
            ErrorCode::FrankingTagInvalid
            | ErrorCode::FrankingCommitmentInvalid
            | ErrorCode::FrankingSignatureInvalid => 422,
            ErrorCode::Internal => 500,
            ErrorCode::Blocked | ErrorCode::MessageRequestLimit | ErrorCode::SealedKeyUnknown => {
                403
            }
        }
    }
}

/// The JSON body of every refusal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema, thiserror::Error)]
#[error("{message} ({code:?})")]
pub struct ApiError {
    /// Machine-readable reason.
    #[serde(rename = "error")]
    pub code: ErrorCode,
    /// One human-readable sentence.
    pub message: String,
    /// For `epoch_conflict`: the conversation's current epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_epoch: Option<u64>,
    /// For `rate_limited`: milliseconds until a retry may succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl ApiError {
    /// An error with just a code and a message.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            current_epoch: None,
            retry_after_ms: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_shape() {
        let mut e = ApiError::new(ErrorCode::EpochConflict, "epoch taken");
        e.current_epoch = Some(4);
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"error":"epoch_conflict","message":"epoch taken","current_epoch":4}"#
        );
        assert_eq!(e.code.status(), 409);
    }
}
