//! The machine's error type.

use nightjar_core::storage::StoreError;

/// Why a machine call failed. Server refusals and network failures are not errors: they are
/// responses the machine decides about.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The end-to-end encryption engine refused the operation.
    #[error("{0}")]
    Engine(#[from] nightjar_core::Error),
    /// The client store failed.
    #[error("local profile: {0}")]
    Store(#[from] StoreError),
    /// The request names something that does not exist, or is not allowed.
    #[error("{0}")]
    Usage(String),
    /// A peer's identity key changed; the user must verify it before it is trusted.
    #[error("the identity key of {0} changed")]
    IdentityChanged(String),
    /// The server showed keys its key-transparency directory contradicts (or signed with
    /// another directory key than the pinned one): never accepted.
    #[error("key transparency: {0}")]
    Transparency(String),
    /// The directory does not prove these keys yet (it publishes every few seconds): ask
    /// again later.
    #[error("not yet in the key-transparency directory: {0}")]
    NotYetProven(String),
    /// No randomness was available.
    #[error("no randomness: {0}")]
    Randomness(String),
}

impl From<nightjar_core::ConversationError> for Error {
    fn from(e: nightjar_core::ConversationError) -> Self {
        Error::Engine(e.into())
    }
}

impl From<nightjar_core::identity::IdentityError> for Error {
    fn from(e: nightjar_core::identity::IdentityError) -> Self {
        Error::Engine(e.into())
    }
}

/// The machine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
