//! What the delivery service accepts: a send request checked against the MLS message it
//! carries, and the per-conversation epoch ordering (the first commit for an epoch wins).

use nightjar_api::{DeviceAddress, EnvelopeKind, SendRequest};
use nightjar_core::ConversationId;
use nightjar_core::franking::Commitment;
use nightjar_core::wire::{WireKind, inspect};

/// Longest idempotency key accepted, in characters.
pub(crate) const MAX_IDEMPOTENCY_KEY: usize = 64;

/// Why a send request is refused before any state is read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SendError {
    /// The request contradicts itself or its payload.
    #[error("{0}")]
    Invalid(&'static str),
    /// A payload is larger than the limit.
    #[error("the MLS message is larger than the server accepts")]
    TooLarge,
}

/// A send request whose claims match its MLS message.
#[derive(Debug, Clone)]
pub(crate) struct CheckedSend {
    pub(crate) conversation: ConversationId,
    pub(crate) kind: EnvelopeKind,
    pub(crate) epoch: u64,
    pub(crate) payload: Vec<u8>,
    /// For commits: the member devices after the commit (sender included), as the validated
    /// commit proves (see [`crate::rules::commits`]); empty until then.
    pub(crate) members: Vec<DeviceAddress>,
    /// For commits: the Welcome and its recipients, the devices the validated commit adds
    /// (empty until validated).
    pub(crate) welcome: Option<(Vec<u8>, Vec<DeviceAddress>)>,
    /// For the commit creating a conversation: the GroupInfo of epoch 0.
    pub(crate) group_info: Option<Vec<u8>>,
    /// What handshake validation decided (application messages: [`Handshake::None`]).
    pub(crate) handshake: Handshake,
    /// For a franked application message: the sender's commitment.
    pub(crate) commitment: Option<Commitment>,
    /// The commitment with the server's tag on it, made when the send is accepted (the tag
    /// binds the time the message is stored with).
    pub(crate) stamp: Option<Stamp>,
}

/// A franked message's commitment and the server's tag on it, stored with the message and
/// delivered with its envelopes; the time the tag binds is the message's stored time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// The sender's commitment.
    pub(crate) commitment: [u8; 32],
    /// The server's tag.
    pub(crate) tag: [u8; 32],
}

/// The outcome of validating a commit or proposal against the group's public state, for the
/// store to apply in the transaction that orders it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Handshake {
    /// An application message, or a handshake not validated yet.
    None,
    /// A valid commit; store this public state with the new epoch.
    Commit {
        /// The encoded public state after the commit.
        state: Vec<u8>,
    },
    /// A valid proposal; keep it for the commit of its epoch.
    Proposal,
    /// Made in another epoch than the stored state's: an epoch conflict, unless it repeats an
    /// accepted send (same idempotency key), which gets its first answer.
    Stale,
}

fn wire_kind(kind: EnvelopeKind) -> Option<WireKind> {
    match kind {
        EnvelopeKind::Application => Some(WireKind::Application),
        EnvelopeKind::Commit => Some(WireKind::Commit),
        EnvelopeKind::Proposal => Some(WireKind::Proposal),
        EnvelopeKind::Welcome => None,
    }
}

/// Checks a send request to `conversation` against its payload and the limits. A commit's
/// routing is not decided here: the request's `members` is ignored and the Welcome's recipients
/// are left empty, for [`crate::rules::commits`] to derive from the validated commit.
pub(crate) fn check_send(
    conversation: ConversationId,
    request: SendRequest,
    max_bytes: usize,
) -> Result<CheckedSend, SendError> {
    let invalid = SendError::Invalid;
    if request.idempotency_key.is_empty()
        || request.idempotency_key.chars().count() > MAX_IDEMPOTENCY_KEY
    {
        return Err(invalid("the idempotency key must be 1-64 characters"));
    }
    let expected = wire_kind(request.kind).ok_or(invalid("a Welcome travels with its commit"))?;
    if request.payload.0.len() > max_bytes {
        return Err(SendError::TooLarge);
    }
    let info = inspect(&request.payload.0)
        .map_err(|_| invalid("the payload is not an MLS message Nightjar accepts"))?;
    if info.kind != expected {
        return Err(invalid(
            "the payload's MLS content type differs from `kind`",
        ));
    }
    if info.conversation != Some(conversation) {
        return Err(invalid("the payload belongs to another conversation"));
    }
    if info.epoch != Some(request.epoch) {
        return Err(invalid(
            "the payload was made in another epoch than `epoch`",
        ));
    }
    if request.epoch > i64::MAX as u64 {
        return Err(invalid("epoch out of range"));
    }
    let commitment = match &request.franking_commitment {
        None => None,
        Some(_) if request.kind != EnvelopeKind::Application => {
            return Err(invalid(
                "only application messages carry a franking commitment",
            ));
        }
        Some(c) => {
            Some(Commitment::from_slice(&c.0).ok_or(invalid("a franking commitment is 32 bytes"))?)
        }
    };
    let mut checked = CheckedSend {
        conversation,
        kind: request.kind,
        epoch: request.epoch,
        payload: request.payload.0,
        members: Vec::new(),
        welcome: None,
        group_info: None,
        handshake: Handshake::None,
        commitment,
        stamp: None,
    };
    if request.kind != EnvelopeKind::Commit {
        if request.welcome.is_some() || request.group_info.is_some() {
            return Err(invalid("only commits carry `welcome` and `group_info`"));
        }
        return Ok(checked);
    }
    if let Some(info) = request.group_info {
        if info.0.len() > max_bytes {
            return Err(SendError::TooLarge);
        }
        checked.group_info = Some(info.0);
    }
    if let Some(welcome) = request.welcome {
        if welcome.payload.0.len() > max_bytes {
            return Err(SendError::TooLarge);
        }
        let info = inspect(&welcome.payload.0)
            .map_err(|_| invalid("the Welcome is not an MLS message"))?;
        if info.kind != WireKind::Welcome {
            return Err(invalid("the Welcome is not an MLS Welcome"));
        }
        checked.welcome = Some((welcome.payload.0, Vec::new()));
    }
    Ok(checked)
}

/// The stored facts about a conversation that ordering needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConversationFacts {
    /// The current epoch.
    pub(crate) epoch: u64,
    /// Whether the sending device is a member.
    pub(crate) sender_is_member: bool,
}

/// What to do with a message that passed [`check_send`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A first commit at epoch 0: create the conversation, then apply it (epoch becomes 1).
    Create,
    /// The commit takes the current epoch: the conversation moves to `epoch + 1`.
    Advance,
    /// An application message or proposal: fan out, epoch unchanged.
    Deliver,
}

/// Why ordering refused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No such conversation (and not a commit at epoch 0 that would create it).
    UnknownConversation,
    /// The sender is not a member.
    NotAMember,
    /// A commit for an epoch other than the current one.
    EpochConflict {
        /// Where the conversation is.
        current: u64,
    },
    /// A message made in an epoch the conversation has not reached.
    FutureEpoch,
    /// A commit or proposal that did not go through handshake validation (a server bug).
    NotValidated,
}

/// Decides a message of `kind` made in `epoch` against the stored conversation, if any.
pub(crate) fn order(
    kind: EnvelopeKind,
    conversation: Option<ConversationFacts>,
    epoch: u64,
) -> Result<Verdict, Refusal> {
    match (kind, conversation) {
        (EnvelopeKind::Commit, None) if epoch == 0 => Ok(Verdict::Create),
        (_, None) => Err(Refusal::UnknownConversation),
        (_, Some(c)) if !c.sender_is_member => Err(Refusal::NotAMember),
        (EnvelopeKind::Commit, Some(c)) if c.epoch == epoch => Ok(Verdict::Advance),
        (EnvelopeKind::Commit, Some(c)) => Err(Refusal::EpochConflict { current: c.epoch }),
        (_, Some(c)) if epoch > c.epoch => Err(Refusal::FutureEpoch),
        _ => Ok(Verdict::Deliver),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MEMBER: Option<ConversationFacts> = Some(ConversationFacts {
        epoch: 3,
        sender_is_member: true,
    });
    const STRANGER: Option<ConversationFacts> = Some(ConversationFacts {
        epoch: 3,
        sender_is_member: false,
    });

    #[test]
    fn first_commit_creates() {
        assert_eq!(order(EnvelopeKind::Commit, None, 0), Ok(Verdict::Create));
        assert_eq!(
            order(EnvelopeKind::Commit, None, 1),
            Err(Refusal::UnknownConversation)
        );
        assert_eq!(
            order(EnvelopeKind::Application, None, 0),
            Err(Refusal::UnknownConversation)
        );
    }

    #[test]
    fn one_commit_per_epoch() {
        assert_eq!(order(EnvelopeKind::Commit, MEMBER, 3), Ok(Verdict::Advance));
        for stale in [0, 2, 4, 100] {
            assert_eq!(
                order(EnvelopeKind::Commit, MEMBER, stale),
                Err(Refusal::EpochConflict { current: 3 })
            );
        }
        // A commit at epoch 0 for an existing conversation is a conflict, not a re-creation.
        assert_eq!(
            order(
                EnvelopeKind::Commit,
                Some(ConversationFacts {
                    epoch: 1,
                    sender_is_member: true
                }),
                0
            ),
            Err(Refusal::EpochConflict { current: 1 })
        );
    }

    #[test]
    fn messages_need_membership_and_a_reached_epoch() {
        for kind in [EnvelopeKind::Application, EnvelopeKind::Proposal] {
            assert_eq!(order(kind, MEMBER, 3), Ok(Verdict::Deliver));
            assert_eq!(order(kind, MEMBER, 1), Ok(Verdict::Deliver));
            assert_eq!(order(kind, MEMBER, 4), Err(Refusal::FutureEpoch));
            assert_eq!(order(kind, STRANGER, 3), Err(Refusal::NotAMember));
        }
        assert_eq!(
            order(EnvelopeKind::Commit, STRANGER, 3),
            Err(Refusal::NotAMember)
        );
    }

    #[test]
    fn garbage_payload_is_refused() {
        let request = SendRequest {
            idempotency_key: "k".into(),
            kind: EnvelopeKind::Application,
            epoch: 0,
            payload: nightjar_api::B64(vec![1, 2, 3]),
            welcome: None,
            members: None,
            group_info: None,
            franking_commitment: None,
        };
        let conv = ConversationId([0; 16]);
        assert!(matches!(
            check_send(conv, request.clone(), 1024),
            Err(SendError::Invalid(_))
        ));
        assert_eq!(
            check_send(conv, request.clone(), 2).unwrap_err(),
            SendError::TooLarge
        );
        let mut welcome = request.clone();
        welcome.kind = EnvelopeKind::Welcome;
        assert!(check_send(conv, welcome, 1024).is_err());
        let mut no_key = request;
        no_key.idempotency_key = String::new();
        assert!(check_send(conv, no_key, 1024).is_err());
    }
}
