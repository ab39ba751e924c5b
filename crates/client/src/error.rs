//! The SDK's error type: one enum whose `Display` is a single sentence a user can act on.

use nightjar_api::{ApiError, ErrorCode};

/// Every way an SDK call can fail.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server could not be reached (connection refused, timeout, TLS failure).
    #[error("server unreachable: {0}")]
    Network(String),
    /// The server refused the request.
    #[error("server refused the request: {}", .0.message)]
    Api(ApiError),
    /// The username or password is wrong (the OPAQUE login did not verify).
    #[error("wrong username or password")]
    WrongPassword,
    /// The end-to-end encryption engine refused the operation.
    #[error("{0}")]
    Engine(#[from] nightjar_core::Error),
    /// The local profile database failed.
    #[error("local profile database: {0}")]
    Database(String),
    /// The database key could not be found, read or stored.
    #[error("profile key: {0}")]
    Key(String),
    /// The profile is not in a state that allows this (not registered, already registered, ...).
    #[error("{0}")]
    Profile(String),
    /// The request names something that does not exist or is ambiguous.
    #[error("{0}")]
    Usage(String),
    /// A peer's account identity key changed; the user must verify it before trusting it.
    #[error(
        "the identity key of {0} changed: compare `nightjar safety-number {0}` with them, then run `nightjar trust {0}`"
    )]
    IdentityChanged(String),
    /// Waiting for something (a device approval) took too long.
    #[error("{0}")]
    Timeout(String),
    /// The server answered something that does not follow the API.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    /// An attachment could not be encrypted, or a downloaded one did not verify (nothing of
    /// it was kept).
    #[error("{0}")]
    Attachment(#[from] nightjar_core::attachment::AttachmentError),
    /// A local file could not be read or written.
    #[error("{0}")]
    File(String),
    /// The server refused a queued message for good; it stays in the outbox, marked refused.
    #[error(
        "the server refused the message: {0}; it stays in the outbox (`nightjar outbox --retry` sends it again, `nightjar outbox --drop` discards it)"
    )]
    Refused(String),
}

impl Error {
    /// Whether the failure is the network's (so the operation may succeed later as is).
    pub fn is_network(&self) -> bool {
        matches!(self, Error::Network(_))
    }

    /// The server's one-sentence reason, if the server refused the request.
    pub fn api_message(&self) -> Option<String> {
        match self {
            Error::Api(e) => Some(e.message.clone()),
            _ => None,
        }
    }

    /// The server's error code, if the server refused the request.
    pub fn api_code(&self) -> Option<ErrorCode> {
        match self {
            Error::Api(e) => Some(e.code),
            _ => None,
        }
    }
}

impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        Error::Database(e.to_string())
    }
}

impl From<nightjar_core::storage::StoreError> for Error {
    fn from(e: nightjar_core::storage::StoreError) -> Self {
        Error::Database(e.to_string())
    }
}

impl From<nightjar_core::identity::IdentityError> for Error {
    fn from(e: nightjar_core::identity::IdentityError) -> Self {
        Error::Engine(e.into())
    }
}

impl From<nightjar_core::ConversationError> for Error {
    fn from(e: nightjar_core::ConversationError) -> Self {
        Error::Engine(e.into())
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Database(format!("stored record could not be decoded: {e}"))
    }
}

/// The SDK's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<nightjar_machine::Error> for Error {
    fn from(e: nightjar_machine::Error) -> Self {
        use nightjar_machine::Error as M;
        match e {
            M::Engine(e) => Error::Engine(e),
            M::Store(e) => Error::Database(e.to_string()),
            M::Usage(text) => Error::Usage(text),
            M::IdentityChanged(name) => Error::IdentityChanged(name),
            other => Error::Database(other.to_string()),
        }
    }
}

impl From<nightjar_machine::transfer::TransferError> for Error {
    fn from(e: nightjar_machine::transfer::TransferError) -> Self {
        Error::Protocol(e.to_string())
    }
}

impl From<nightjar_machine::auth::AuthError> for Error {
    fn from(e: nightjar_machine::auth::AuthError) -> Self {
        match e {
            nightjar_machine::auth::AuthError::WrongPassword => Error::WrongPassword,
            nightjar_machine::auth::AuthError::Protocol(text) => {
                Error::Protocol(format!("OPAQUE: {text}"))
            }
        }
    }
}
