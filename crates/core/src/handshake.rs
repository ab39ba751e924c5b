//! Secret-free validation of MLS handshake messages, for the delivery service.
//!
//! Commits and proposals travel as MLS `PublicMessage`s (application messages stay
//! `PrivateMessage`s). The server keeps each conversation's *public* group state — ratchet tree
//! of public keys, group context, transcript hashes, no secret at all — and runs every handshake
//! message through OpenMLS's [`PublicGroup`]: signature, epoch, sender membership, tree and
//! proposal validity. The member set the server routes to afterwards is read from the merged
//! state, never taken from what the sender claims.
//!
//! A conversation's state starts from the creator's GroupInfo of epoch 0 (one leaf: the creator)
//! and then follows the accepted commits. [`PublicState::encode`] gives the bytes to store;
//! proposals are stored as their messages and replayed by [`PublicState::decode`].

use std::collections::BTreeSet;

use openmls::prelude::*;
use openmls_libcrux_crypto::CryptoProvider;

use crate::engine::{ConversationId, ConversationKind, device_credential};
use crate::identity::DeviceCredential;
use crate::storage::{Entry, KvStore, MemoryStore, MlsStorage};

/// Version byte of [`PublicState::encode`]'s format.
const STATE_VERSION: u8 = 1;
/// Most entries an encoded state may hold (OpenMLS writes four per group).
const MAX_STATE_ENTRIES: usize = 64;

/// Why a handshake message (or a creation GroupInfo) is refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeError {
    /// Not a well-formed MLS message of the expected kind.
    #[error("not a well-formed MLS handshake message")]
    Malformed,
    /// A commit or proposal sent as an encrypted PrivateMessage (the server cannot check it).
    #[error("commits and proposals must be MLS PublicMessages")]
    NotPublic,
    /// The message was made for another conversation.
    #[error("the message belongs to another conversation")]
    WrongGroup,
    /// The message was made in an epoch other than the conversation's current one.
    #[error("the message was made in another epoch than the conversation's")]
    WrongEpoch,
    /// A signature does not verify, or the sender is not a member.
    #[error("the signature does not verify or the sender is not a member")]
    Forged,
    /// The MLS sender is not the device that posted the message.
    #[error("the MLS sender is not the posting device")]
    WrongSender,
    /// The creation GroupInfo does not describe a new conversation of the posting device alone.
    #[error("the creation GroupInfo is not acceptable: {0}")]
    BadGroupInfo(&'static str),
    /// The commit or proposal breaks a rule of MLS or of Nightjar.
    #[error("{0}")]
    Invalid(String),
    /// The stored state could not be read back.
    #[error("the stored group state is unreadable")]
    State,
}

/// One leaf: a device and the signature key its leaf carries.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Leaf {
    /// The device named by the leaf's credential (`username:device-id`).
    pub device: DeviceCredential,
    /// The leaf's signature public key.
    pub signature_key: Vec<u8>,
}

/// What an accepted commit did, as proven by the commit itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitFacts {
    /// The committing device.
    pub sender: DeviceCredential,
    /// The epoch after the commit.
    pub epoch: u64,
    /// Leaves added by the commit (the Welcome's only legitimate recipients).
    pub added: Vec<Leaf>,
    /// Existing leaves whose keys the commit replaced (same identity, checked).
    pub updated: Vec<Leaf>,
    /// Devices removed.
    pub removed: Vec<DeviceCredential>,
    /// Every member leaf after the commit, in leaf order.
    pub members: Vec<Leaf>,
    /// The accounts before the commit (empty for the creation commit).
    pub accounts_before: BTreeSet<String>,
    /// The conversation kind (fixed at creation; a commit cannot change it).
    pub kind: ConversationKind,
}

impl CommitFacts {
    /// The distinct accounts after the commit.
    pub fn accounts_after(&self) -> BTreeSet<String> {
        self.members
            .iter()
            .map(|l| l.device.username.clone())
            .collect()
    }
}

/// A conversation's public MLS state, as the delivery service holds it.
pub struct PublicState {
    crypto: CryptoProvider,
    storage: MlsStorage<MemoryStore>,
    group: PublicGroup,
}

impl std::fmt::Debug for PublicState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublicState")
            .field("epoch", &self.epoch())
            .field("members", &self.group.members().count())
            .finish_non_exhaustive()
    }
}

fn crypto() -> Result<CryptoProvider, HandshakeError> {
    CryptoProvider::new().map_err(|_| HandshakeError::State)
}

fn leaf_of(member: &Member) -> Result<Leaf, HandshakeError> {
    Ok(Leaf {
        device: device_credential(&member.credential).map_err(|_| HandshakeError::Malformed)?,
        signature_key: member.signature_key.clone(),
    })
}

fn leaf_node(leaf: &LeafNode) -> Result<Leaf, HandshakeError> {
    Ok(Leaf {
        device: device_credential(leaf.credential()).map_err(|_| HandshakeError::Malformed)?,
        signature_key: leaf.signature_key().as_slice().to_vec(),
    })
}

fn processing_error(e: PublicProcessMessageError) -> HandshakeError {
    match e {
        PublicProcessMessageError::IncompatibleWireFormat => HandshakeError::NotPublic,
        PublicProcessMessageError::ValidationError(v) => match v {
            ValidationError::WrongEpoch | ValidationError::NoPastEpochData => {
                HandshakeError::WrongEpoch
            }
            ValidationError::WrongGroupId => HandshakeError::WrongGroup,
            ValidationError::InvalidSignature
            | ValidationError::UnknownMember
            | ValidationError::InvalidLeafNodeSignature
            | ValidationError::NonMemberApplicationMessage
            | ValidationError::UnauthorizedExternalSender => HandshakeError::Forged,
            other => HandshakeError::Invalid(other.to_string()),
        },
        other => HandshakeError::Invalid(other.to_string()),
    }
}

/// Reads a handshake message addressed to `conversation`: a PublicMessage, or refused.
fn public_message(
    conversation: ConversationId,
    bytes: &[u8],
) -> Result<ProtocolMessage, HandshakeError> {
    let message =
        MlsMessageIn::tls_deserialize_exact_bytes(bytes).map_err(|_| HandshakeError::Malformed)?;
    let message: ProtocolMessage = match message.extract() {
        MlsMessageBodyIn::PublicMessage(m) => m.into(),
        MlsMessageBodyIn::PrivateMessage(_) => return Err(HandshakeError::NotPublic),
        _ => return Err(HandshakeError::Malformed),
    };
    if message.group_id().as_slice() != conversation.0 {
        return Err(HandshakeError::WrongGroup);
    }
    Ok(message)
}

impl PublicState {
    /// Builds the state of a new conversation from its creator's GroupInfo of epoch 0 (with the
    /// ratchet tree extension). The group must hold exactly one leaf, the posting device
    /// `sender` with `sender_key`, the signature key the server has registered for it.
    pub fn from_group_info(
        conversation: ConversationId,
        group_info: &[u8],
        sender: &DeviceCredential,
        sender_key: &[u8],
    ) -> Result<Self, HandshakeError> {
        let bad = HandshakeError::BadGroupInfo;
        let message = MlsMessageIn::tls_deserialize_exact_bytes(group_info)
            .map_err(|_| HandshakeError::Malformed)?;
        let MlsMessageBodyIn::GroupInfo(info) = message.extract() else {
            return Err(bad("not a GroupInfo"));
        };
        if info.group_id().as_slice() != conversation.0 {
            return Err(HandshakeError::WrongGroup);
        }
        if info.epoch().as_u64() != 0 {
            return Err(bad("not epoch 0"));
        }
        let tree = info
            .extensions()
            .ratchet_tree()
            .ok_or(bad("no ratchet tree"))?
            .ratchet_tree()
            .clone();
        let crypto = crypto()?;
        let storage = MlsStorage::new(MemoryStore::new());
        let (group, _) =
            PublicGroup::from_external(&crypto, &storage, tree, info, ProposalStore::new())
                .map_err(|_| bad("GroupInfo or ratchet tree does not verify"))?;
        let state = Self {
            crypto,
            storage,
            group,
        };
        let members = state.members()?;
        match members.as_slice() {
            [only] if only.device == *sender && only.signature_key == sender_key => Ok(state),
            [_] => Err(bad("the only leaf is not the posting device and its key")),
            _ => Err(bad(
                "a new conversation has exactly one leaf before its first commit",
            )),
        }
    }

    /// Reads a state written by [`Self::encode`] for `conversation`, then replays the stored
    /// `proposals` of its current epoch (ones that no longer validate are skipped).
    pub fn decode(
        conversation: ConversationId,
        state: &[u8],
        proposals: &[Vec<u8>],
    ) -> Result<Self, HandshakeError> {
        let store = MemoryStore::new();
        for (key, value) in decode_entries(state)? {
            store.put(&key, &value).map_err(|_| HandshakeError::State)?;
        }
        let storage = MlsStorage::new(store);
        let group = PublicGroup::load(&storage, &GroupId::from_slice(&conversation.0))
            .map_err(|_| HandshakeError::State)?
            .ok_or(HandshakeError::State)?;
        let mut state = Self {
            crypto: crypto()?,
            storage,
            group,
        };
        for proposal in proposals {
            if let Ok(queued) = state.check_proposal(conversation, proposal, None) {
                state
                    .group
                    .add_proposal(&state.storage, queued)
                    .map_err(|_| HandshakeError::State)?;
            }
        }
        Ok(state)
    }

    /// The bytes to store (proposals excluded: they are stored as their messages).
    pub fn encode(&self) -> Result<Vec<u8>, HandshakeError> {
        let entries = self
            .storage
            .kv()
            .entries()
            .map_err(|_| HandshakeError::State)?;
        Ok(encode_entries(&entries))
    }

    /// The current epoch.
    pub fn epoch(&self) -> u64 {
        self.group.group_context().epoch().as_u64()
    }

    /// The conversation kind recorded in the group context.
    pub fn kind(&self) -> ConversationKind {
        ConversationKind::from_extensions(self.group.group_context().extensions())
    }

    /// Every member leaf, in leaf order.
    pub fn members(&self) -> Result<Vec<Leaf>, HandshakeError> {
        self.group.members().map(|m| leaf_of(&m)).collect()
    }

    /// Validates a commit posted by `poster` against the current state and, if it passes every
    /// MLS and Nightjar rule that needs no outside knowledge, merges it and returns what it did.
    /// The caller still checks the device-list and conversation-kind rules on the facts and
    /// stores the new state only if they pass.
    pub fn process_commit(
        &mut self,
        conversation: ConversationId,
        bytes: &[u8],
        poster: &DeviceCredential,
    ) -> Result<CommitFacts, HandshakeError> {
        let Verified {
            processed,
            sender_leaf,
            sender,
        } = self.verify(conversation, bytes, ContentType::Commit)?;
        if sender != *poster {
            return Err(HandshakeError::WrongSender);
        }
        let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content() else {
            return Err(HandshakeError::Malformed);
        };
        for queued in staged.queued_proposals() {
            match queued.proposal().proposal_type() {
                ProposalType::Add
                | ProposalType::Remove
                | ProposalType::Update
                | ProposalType::GroupContextExtensions => {}
                other => {
                    return Err(HandshakeError::Invalid(format!(
                        "proposal type {other:?} is not accepted"
                    )));
                }
            }
        }
        let kind = self.kind();
        let kind_extension = |e: &Extensions<GroupContext>| {
            e.unknown(crate::engine::KIND_EXTENSION)
                .map(|u| u.0.clone())
        };
        if kind_extension(staged.group_context().extensions())
            != kind_extension(self.group.group_context().extensions())
        {
            return Err(HandshakeError::Invalid(
                "a commit may not change the conversation kind".into(),
            ));
        }
        let added = staged
            .add_proposals()
            .map(|a| leaf_node(a.add_proposal().key_package().leaf_node()))
            .collect::<Result<Vec<_>, _>>()?;
        let mut changed: Vec<(LeafNodeIndex, Leaf)> = Vec::new();
        if let Some(leaf) = staged.update_path_leaf_node() {
            changed.push((sender_leaf, leaf_node(leaf)?));
        }
        for update in staged.update_proposals() {
            if let Sender::Member(i) = update.sender() {
                changed.push((*i, leaf_node(update.update_proposal().leaf_node())?));
            }
        }
        let mut updated = Vec::with_capacity(changed.len());
        for (index, leaf) in changed {
            let current = self
                .group
                .leaf(index)
                .map(leaf_node)
                .transpose()?
                .ok_or(HandshakeError::Forged)?;
            if current.device != leaf.device {
                return Err(HandshakeError::Invalid(
                    "a leaf may not change its identity".into(),
                ));
            }
            updated.push(leaf);
        }
        let removed = staged
            .remove_proposals()
            .filter_map(|r| self.group.leaf(r.remove_proposal().removed()))
            .map(leaf_node)
            .map(|l| l.map(|l| l.device))
            .collect::<Result<Vec<_>, _>>()?;
        let accounts_before = if self.epoch() == 0 {
            BTreeSet::new()
        } else {
            self.members()?
                .into_iter()
                .map(|l| l.device.username)
                .collect()
        };
        self.group
            .merge_commit(&self.storage, *staged)
            .map_err(|e| HandshakeError::Invalid(e.to_string()))?;
        Ok(CommitFacts {
            sender,
            epoch: self.epoch(),
            added,
            updated,
            removed,
            members: self.members()?,
            accounts_before,
            kind,
        })
    }

    /// Validates a standalone proposal posted by `poster`: only a member's request to remove its
    /// own leaf (leaving) is accepted. On success the proposal is queued, so a commit that
    /// includes it by reference validates; the caller stores the message bytes.
    pub fn process_proposal(
        &mut self,
        conversation: ConversationId,
        bytes: &[u8],
        poster: &DeviceCredential,
    ) -> Result<(), HandshakeError> {
        let queued = self.check_proposal(conversation, bytes, Some(poster))?;
        self.group
            .add_proposal(&self.storage, queued)
            .map_err(|_| HandshakeError::State)
    }

    /// Decodes a PublicMessage of `content_type` made in the current epoch and verifies it
    /// against the public state: a member's signature and membership tag.
    fn verify(
        &self,
        conversation: ConversationId,
        bytes: &[u8],
        content_type: ContentType,
    ) -> Result<Verified, HandshakeError> {
        let message = public_message(conversation, bytes)?;
        if message.content_type() != content_type {
            return Err(HandshakeError::Malformed);
        }
        if message.epoch().as_u64() != self.epoch() {
            return Err(HandshakeError::WrongEpoch);
        }
        let processed = self
            .group
            .process_message(&self.crypto, message)
            .map_err(processing_error)?;
        let Sender::Member(sender_leaf) = *processed.sender() else {
            return Err(HandshakeError::Forged);
        };
        let sender =
            device_credential(processed.credential()).map_err(|_| HandshakeError::Malformed)?;
        Ok(Verified {
            processed,
            sender_leaf,
            sender,
        })
    }

    fn check_proposal(
        &self,
        conversation: ConversationId,
        bytes: &[u8],
        poster: Option<&DeviceCredential>,
    ) -> Result<QueuedProposal, HandshakeError> {
        let Verified {
            processed,
            sender_leaf,
            sender,
        } = self.verify(conversation, bytes, ContentType::Proposal)?;
        if poster.is_some_and(|p| *p != sender) {
            return Err(HandshakeError::WrongSender);
        }
        let ProcessedMessageContent::ProposalMessage(queued) = processed.into_content() else {
            return Err(HandshakeError::Malformed);
        };
        match queued.proposal() {
            Proposal::Remove(r) if r.removed() == sender_leaf => Ok(*queued),
            _ => Err(HandshakeError::Invalid(
                "only a member's own removal is accepted as a proposal".into(),
            )),
        }
    }
}

/// A handshake message that passed [`PublicState::verify`].
struct Verified {
    processed: ProcessedMessage,
    /// The sending member's leaf.
    sender_leaf: LeafNodeIndex,
    /// The sending member's device.
    sender: DeviceCredential,
}

fn encode_entries(entries: &[Entry]) -> Vec<u8> {
    let mut out = vec![STATE_VERSION];
    out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    for (key, value) in entries {
        for part in [key, value] {
            out.extend_from_slice(&(part.len() as u32).to_be_bytes());
            out.extend_from_slice(part);
        }
    }
    out
}

fn decode_entries(bytes: &[u8]) -> Result<Vec<Entry>, HandshakeError> {
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], HandshakeError> {
        if rest.len() < n {
            return Err(HandshakeError::State);
        }
        let (head, tail) = rest.split_at(n);
        *rest = tail;
        Ok(head)
    }
    fn length(rest: &mut &[u8]) -> Result<usize, HandshakeError> {
        let raw: [u8; 4] = take(rest, 4)?
            .try_into()
            .map_err(|_| HandshakeError::State)?;
        Ok(u32::from_be_bytes(raw) as usize)
    }
    let mut rest = bytes;
    if take(&mut rest, 1)? != [STATE_VERSION] {
        return Err(HandshakeError::State);
    }
    let count = length(&mut rest)?;
    if count > MAX_STATE_ENTRIES {
        return Err(HandshakeError::State);
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let n = length(&mut rest)?;
        let key = take(&mut rest, n)?.to_vec();
        let n = length(&mut rest)?;
        let value = take(&mut rest, n)?.to_vec();
        out.push((key, value));
    }
    if !rest.is_empty() {
        return Err(HandshakeError::State);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The stored-state codec round-trips and never panics on arbitrary bytes.
        #[test]
        fn state_codec_round_trips(entries in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 0..40), proptest::collection::vec(any::<u8>(), 0..80)),
            0..10,
        ), noise in proptest::collection::vec(any::<u8>(), 0..200)) {
            let bytes = encode_entries(&entries);
            prop_assert_eq!(decode_entries(&bytes).unwrap(), entries);
            let _ = decode_entries(&noise);
            let _ = PublicState::decode(ConversationId([7; 16]), &noise, std::slice::from_ref(&noise));
        }
    }
}
