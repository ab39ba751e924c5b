//! Reporting a message with cryptographic proof of its sender and content (message franking),
//! and the moderators' view of the reports. See docs/reporting.md.
//!
//! Every application message carries a franking *commitment* beside its ciphertext (on the
//! send request); the server stamps it with a *tag* and its time and delivers the
//! [`FrankingStamp`] with the envelope. The key that opens the commitment and the sender
//! device's signature of it travel inside the ciphertext, so the server learns them only when
//! a recipient reports that one message ([`MessageReportRequest`]).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{B64, DeviceAddress};

/// The server's franking stamp on an application message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FrankingStamp {
    /// The sender's franking commitment, as it sent it (32 bytes).
    pub commitment: B64,
    /// The server's HMAC-SHA256 tag over the commitment, the conversation and `time_ms`,
    /// under a key only the server holds (32 bytes).
    pub tag: B64,
    /// The server's time when it accepted the message, as the tag binds it (ms since the Unix
    /// epoch, rounded down to the hour like every time the server stores).
    pub time_ms: u64,
}

/// `POST /v1/reports/messages`: reports one message to the operator, revealing it with the
/// proof that its sender sent exactly this content in this conversation. The reporter must be
/// a member of the conversation. Nothing is stored unless every check passes.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct MessageReportRequest {
    /// The conversation (32 hex digits).
    #[schema(pattern = "^[0-9a-f]{32}$")]
    pub conversation_id: String,
    /// The sending account and device, as MLS authenticated them to the reporter.
    pub sender: DeviceAddress,
    /// The message as encoded inside the ciphertext (`nightjar_core::content::Message`,
    /// content version 1): what the commitment covers, revealed.
    pub message: B64,
    /// The message's franking key, from inside the ciphertext (32 bytes).
    pub franking_key: B64,
    /// The sending device's Ed25519 signature of the commitment, from inside the ciphertext
    /// (64 bytes).
    pub signature: B64,
    /// The stamp the envelope carried.
    pub stamp: FrankingStamp,
    /// The reporter's words (at most 1,000 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Answer to [`MessageReportRequest`]: the report is stored for the moderators.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MessageReportResponse {
    /// The report's id (the same for a report of the same message sent again).
    pub report_id: u64,
}

/// A verified message report, as `GET /v1/moderation/reports` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MessageReport {
    /// The report's id.
    pub id: u64,
    /// The reporting account.
    pub reporter: String,
    /// The conversation (32 hex digits).
    pub conversation_id: String,
    /// The device that sent the message (proven by its signature).
    pub sender: DeviceAddress,
    /// The sender-chosen message id (32 hex digits).
    pub message_id: String,
    /// The sender's clock when it sent the message, as the message states it (ms).
    pub sent_at_ms: u64,
    /// The content kind: `text`, `reply`, `attachment`, `edit`, `reaction`, ...
    pub content_type: String,
    /// The text of text-like content (a reply's, an edit's new text, a reaction's emoji, an
    /// attachment's caption).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The whole revealed message, encoded (for content the fields above do not show, such
    /// as an attachment's pointer, whose key decrypts the blob while it is stored).
    pub message: B64,
    /// When the server accepted the message (the stamp's time, ms, to the hour).
    pub franked_at_ms: u64,
    /// The reporter's words.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it was reported (ms, to the hour).
    pub reported_at_ms: u64,
    /// When a moderator marked it reviewed (ms), if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reviewed_at_ms: Option<u64>,
}

/// `GET /v1/moderation/reports`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ModerationReportsResponse {
    /// Reports in id order.
    pub reports: Vec<MessageReport>,
}
