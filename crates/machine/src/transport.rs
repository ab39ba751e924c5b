//! What the machine asks its driver to carry to the server, and what comes back. Drivers map
//! each [`Request`] to one HTTP call (or, for [`Request::Ack`], a WebSocket frame when the
//! stream is open) and hand the outcome to [`crate::Machine::handle_response`].

use nightjar_api::{
    AccountResponse, ApiError, ClaimKeyPackagesResponse, Envelope, EpochResponse, EpochsResponse,
    ProofResponse, SealedKeyRequest, SealedSendRequest, SendRequest, SendResponse,
};
use nightjar_core::ConversationId;

/// Identifies one request until its outcome is handed back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestId(pub u64);

/// A call to the server.
#[derive(Clone, Debug)]
pub enum Request {
    /// `POST /v1/conversations/{conversation}/messages`.
    Send {
        /// Where.
        conversation: ConversationId,
        /// What.
        body: SendRequest,
    },
    /// `POST /v1/conversations/{conversation}/sealed`, *without* the session token: an
    /// application message signed with the epoch's sealed-sender key.
    SealedSend {
        /// Where.
        conversation: ConversationId,
        /// What.
        body: SealedSendRequest,
    },
    /// `PUT /v1/conversations/{conversation}/sealed-key`: registers this device's view of
    /// the epoch's sealed-sender key.
    RegisterSealedKey {
        /// Where.
        conversation: ConversationId,
        /// The epoch and key.
        body: SealedKeyRequest,
    },
    /// `GET /v1/messages?after=&limit=`.
    Inbox {
        /// Only envelopes with a larger queue id.
        after: u64,
        /// Page size.
        limit: u32,
    },
    /// `POST /v1/messages/ack` (or an `ack` frame on the stream): these envelopes are stored.
    Ack {
        /// Envelope ids.
        ids: Vec<u64>,
    },
    /// `GET /v1/accounts/{username}`: the account's signed device list.
    Account {
        /// The account.
        username: String,
    },
    /// `POST /v1/accounts/{username}/key-packages/claim`.
    ClaimKeyPackages {
        /// The account.
        username: String,
    },
    /// `GET /v1/kt/history`: this account's complete key-transparency history.
    OwnHistory,
    /// `GET /v1/kt/epochs/{epoch}`: the directory's signed root for an epoch (public).
    DirectoryRoot {
        /// The epoch.
        epoch: u64,
    },
    /// `GET /v1/kt/epochs?after=&limit=`: the directory's signed epochs after one, each with
    /// its append-only proof (public).
    DirectoryEpochs {
        /// Epochs after this one.
        after: u64,
        /// At most this many.
        limit: u32,
    },
}

/// A successful answer to a [`Request`] of the same kind.
#[derive(Clone, Debug)]
pub enum Response {
    /// To [`Request::Send`] and [`Request::SealedSend`].
    Sent(SendResponse),
    /// To [`Request::RegisterSealedKey`].
    Registered,
    /// To [`Request::Inbox`].
    Inbox(Vec<Envelope>),
    /// To [`Request::Ack`].
    Acked,
    /// To [`Request::Account`].
    Account(AccountResponse),
    /// To [`Request::ClaimKeyPackages`].
    Claimed(ClaimKeyPackagesResponse),
    /// To [`Request::OwnHistory`].
    OwnHistory(ProofResponse),
    /// To [`Request::DirectoryRoot`].
    DirectoryRoot(EpochResponse),
    /// To [`Request::DirectoryEpochs`].
    DirectoryEpochs(EpochsResponse),
}

/// Why a request failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No answer (refused connection, timeout, dropped connection): the request may or may
    /// not have reached the server.
    Network(String),
    /// The server refused it. For a 429 the driver puts the `Retry-After` header's wait into
    /// `retry_after_ms` (see [`crate::backoff::requested_wait`]).
    Refused(ApiError),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Network(e) => write!(f, "server unreachable: {e}"),
            Failure::Refused(e) => write!(f, "server refused the request: {}", e.message),
        }
    }
}
