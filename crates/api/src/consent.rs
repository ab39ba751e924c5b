//! Consent: message requests, accepting and blocking accounts, and reports.
//!
//! A conversation started by an account the recipient never accepted is a *message request*:
//! the server queues only a few small application messages from that account until the
//! recipient accepts it. A blocked account's messages are not queued for the blocker at all.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What an account decided about another account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConsentState {
    /// Messages from the account are delivered without limit (besides the usual quotas).
    Accepted,
    /// Messages from the account are refused; its commits still reach shared groups.
    Blocked,
}

/// `PUT /v1/consent/{username}`: accept or block an account.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct SetConsentRequest {
    /// The decision.
    pub state: ConsentState,
}

/// One decision in `GET /v1/consent`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ConsentEntry {
    /// The other account.
    pub username: String,
    /// What this account decided about it.
    pub state: ConsentState,
    /// When (ms since the Unix epoch).
    pub updated_at_ms: u64,
}

/// `GET /v1/consent`: every account this account accepted or blocked.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ConsentListResponse {
    /// The decisions, by username.
    pub entries: Vec<ConsentEntry>,
}

/// `POST /v1/reports`: reports an account for abuse and blocks it. The server stores who
/// reported whom, when, the conversation if given, and the reporter's own words if given:
/// never message content unless the reporter typed it into `reason`.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
pub struct ReportRequest {
    /// The reported account.
    pub username: String,
    /// The conversation (32 hex digits) the report is about, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation_id: Option<String>,
    /// The reporter's words (at most 1,000 characters).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}
