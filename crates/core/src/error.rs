//! The engine's error type: one non-exhaustive enum built from small per-concern enums.

use crate::content::ContentError;
use crate::identity::IdentityError;
use crate::pickle::PickleError;
use crate::storage::StoreError;

/// Every way an engine call can fail. A failed call leaves the engine's state as it was, except
/// where a variant says otherwise.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An identity, username or device list was refused.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// Decrypted content could not be decoded.
    #[error(transparent)]
    Content(#[from] ContentError),
    /// The caller's store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A conversation operation or an incoming message was refused.
    #[error(transparent)]
    Conversation(#[from] ConversationError),
    /// An exported state blob could not be opened.
    #[error(transparent)]
    Pickle(#[from] PickleError),
    /// The operating system's random generator failed.
    #[error("no randomness available")]
    Randomness,
    /// The engine has not been set up on this store yet, or already has been.
    #[error("engine state: {0}")]
    State(&'static str),
}

/// Why a conversation operation or an incoming message was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConversationError {
    /// No conversation with this id is known on this device.
    #[error("unknown conversation")]
    UnknownConversation,
    /// This device is no longer a member (it left or was removed).
    #[error("this device is not a member of the conversation")]
    NotAMember,
    /// A commit of ours awaits the server's verdict; report it first.
    #[error("a commit is already waiting for the server's answer")]
    CommitInFlight,
    /// There is no commit of ours awaiting a verdict.
    #[error("no commit is waiting for the server's answer")]
    NoPendingCommit,
    /// Standalone proposals are queued; commit them before sending.
    #[error("pending proposals must be committed before sending")]
    PendingProposals,
    /// The device lists of these accounts are needed first; the commit or welcome is parked.
    #[error("device lists needed for: {}", .0.join(", "))]
    UnknownAccounts(Vec<String>),
    /// A device is not in its account's signed device list (or its key differs).
    #[error("device {0} is not in its account's signed device list")]
    DeviceNotInList(String),
    /// The operation would leave out some of an account's devices.
    #[error("key packages missing for devices: {}", .0.join(", "))]
    MissingDevices(Vec<String>),
    /// The account or device is not a member.
    #[error("{0} is not a member of the conversation")]
    NotInConversation(String),
    /// The account or device is already a member.
    #[error("{0} is already a member of the conversation")]
    AlreadyMember(String),
    /// The message comes from outside the group (external commit or proposal); never accepted.
    #[error("messages from outside the group are refused")]
    ExternalSender,
    /// The message is for an epoch this device does not have keys for.
    #[error("message is for an epoch this device cannot read")]
    WrongEpoch,
    /// The message was already processed; its key is deleted (forward secrecy).
    #[error("message was already received (replay)")]
    Replayed,
    /// Decryption failed: tampered, truncated or not for us.
    #[error("message could not be decrypted")]
    Undecryptable,
    /// A signature or membership tag did not verify.
    #[error("message authentication failed")]
    Forged,
    /// The bytes are not a well-formed message of the expected kind.
    #[error("malformed message")]
    Malformed,
    /// The message is our own, echoed back.
    #[error("message is this device's own")]
    OwnMessage,
    /// The ciphersuite is not one Nightjar supports.
    #[error("unsupported ciphersuite")]
    UnsupportedSuite,
    /// The commit or welcome was refused by the MLS state machine.
    #[error("invalid commit or welcome: {0}")]
    Invalid(String),
    /// An MLS library failure that is not the peer's fault.
    #[error("internal MLS error: {0}")]
    Internal(String),
    /// A Welcome or commit would make a direct conversation hold other accounts than exactly
    /// this device's account and its one peer (the peer fixed when the conversation began).
    #[error("a direct conversation has exactly two accounts: this one and the same other one")]
    NotTwoAccounts,
    /// A Welcome names a conversation this device is already an active member of.
    #[error("a Welcome for a conversation this device is already in")]
    AlreadyJoined,
    /// The sender's sequence number was received before: a duplicate copy, dropped.
    #[error("message was already received (same sender sequence number)")]
    Duplicate,
    /// The message was sent in another state of the same epoch than this device's: the
    /// delivery service gave members different commits, and the conversation has forked.
    #[error("the conversation has forked at epoch {epoch}")]
    Forked {
        /// The epoch the message was sent in.
        epoch: u64,
    },
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<getrandom::Error> for Error {
    fn from(_: getrandom::Error) -> Self {
        Error::Randomness
    }
}
