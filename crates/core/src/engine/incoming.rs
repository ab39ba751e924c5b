//! Processing what arrives from the delivery service: application messages, commits,
//! proposals and Welcomes. Each is authenticated by MLS, then checked against the senders'
//! and new members' signed device lists before anything is applied.

use std::collections::BTreeSet;

use openmls::framing::errors::{MessageDecryptionError, SecretTreeError};
use openmls::group::{ProcessMessageError, ProcessedWelcome, ValidationError};
use openmls::prelude::*;

use super::integrity::{self, EpochTag};
use super::ops::load_group;
use super::records::{
    self, ConversationKind, ConversationRecord, Intent, KIND_EXTENSION, METADATA_EXTENSION,
};
use super::{ConversationId, Engine, device_credential, internal};
use crate::content::{Message, Plaintext, SenderState};
use crate::directory::DeviceCheck;
use crate::error::{ConversationError, Result};
use crate::franking::{self, Committed, FrankingCheck};
use crate::identity::DeviceCredential;
use crate::storage::KvStore;

/// What an incoming message turned out to be, after it was verified and applied.
#[derive(Debug)]
#[non_exhaustive]
pub enum Incoming {
    /// An application message from a member device.
    Message {
        /// The conversation.
        conversation: ConversationId,
        /// The authenticated sending device.
        sender: DeviceCredential,
        /// The epoch it was sent in.
        epoch: u64,
        /// The decrypted content.
        message: Message,
        /// What the sender states about its account's device list and the directory root it
        /// verified; `None` from senders before content version 3.
        sender_state: Option<SenderState>,
        /// Whether the message's franking opening holds for this sender, conversation and
        /// content ([`crate::franking`]); the caller still compares the commitment with the
        /// one the server stamped on the envelope.
        franking: FrankingCheck,
    },
    /// Another member's commit was applied; the conversation is now at `epoch`.
    Commit {
        /// The conversation.
        conversation: ConversationId,
        /// The committing device.
        sender: DeviceCredential,
        /// The new epoch.
        epoch: u64,
        /// Devices added.
        added: Vec<DeviceCredential>,
        /// Devices removed.
        removed: Vec<DeviceCredential>,
        /// Whether the group name or avatar changed.
        metadata_changed: bool,
        /// Our own commit for the previous epoch lost to this one; retry it with
        /// [`Engine::retry`] once the server confirms the rejection.
        superseded: Option<Intent>,
    },
    /// This device was added to a conversation.
    Joined {
        /// The conversation.
        conversation: ConversationId,
        /// Direct or group.
        kind: ConversationKind,
        /// The device that added us.
        sender: DeviceCredential,
        /// All member devices.
        members: Vec<DeviceCredential>,
    },
    /// This device was removed from the conversation (or its leave request was committed).
    Removed {
        /// The conversation.
        conversation: ConversationId,
        /// The device that committed the removal.
        by: DeviceCredential,
    },
    /// A member asked to leave; commit it with [`Engine::commit_pending_proposals`].
    LeaveRequested {
        /// The conversation.
        conversation: ConversationId,
        /// The device leaving.
        member: DeviceCredential,
    },
}

/// Maps OpenMLS's processing errors to ours without leaking library internals to peers.
fn processing_error<E: std::fmt::Debug>(e: ProcessMessageError<E>) -> ConversationError {
    use ConversationError as C;
    match e {
        ProcessMessageError::ValidationError(v) => match v {
            ValidationError::WrongEpoch | ValidationError::NoPastEpochData => C::WrongEpoch,
            ValidationError::WrongGroupId => C::UnknownConversation,
            ValidationError::InvalidSignature
            | ValidationError::InvalidMembershipTag
            | ValidationError::MissingMembershipTag
            | ValidationError::UnknownMember
            | ValidationError::InvalidLeafNodeSignature => C::Forged,
            ValidationError::UnableToDecrypt(d) => match d {
                MessageDecryptionError::SecretTreeError(SecretTreeError::SecretReuseError) => {
                    C::Replayed
                }
                MessageDecryptionError::SecretTreeError(SecretTreeError::TooDistantInThePast) => {
                    C::WrongEpoch
                }
                MessageDecryptionError::MalformedContent => C::Malformed,
                _ => C::Undecryptable,
            },
            ValidationError::NonMemberApplicationMessage
            | ValidationError::UnauthorizedExternalSender => C::ExternalSender,
            other => C::Invalid(other.to_string()),
        },
        ProcessMessageError::IncompatibleWireFormat => C::Malformed,
        ProcessMessageError::UnauthorizedExternalApplicationMessage
        | ProcessMessageError::UnauthorizedExternalCommitMessage
        | ProcessMessageError::UnsupportedProposalType => C::ExternalSender,
        ProcessMessageError::GroupStateError(_) => C::NotAMember,
        ProcessMessageError::InvalidCommit(c) => C::Invalid(c.to_string()),
        other => C::Internal(format!("{other:?}")),
    }
}

impl<S: KvStore> Engine<S> {
    /// Verifies, decrypts and applies one message from the delivery service.
    ///
    /// On any error nothing changes: a replayed, forged, tampered or wrong-epoch message, or a
    /// commit adding a device that is not in its account's signed device list, leaves the
    /// conversation exactly as it was. [`ConversationError::UnknownAccounts`] asks the caller to
    /// fetch those device lists and call again with the same bytes.
    pub fn process(&mut self, now_ms: u64, bytes: &[u8]) -> Result<Incoming> {
        let message = MlsMessageIn::tls_deserialize_exact_bytes(bytes)
            .map_err(|_| ConversationError::Malformed)?;
        match message.extract() {
            MlsMessageBodyIn::Welcome(welcome) => self.atomically(|e| e.join(now_ms, welcome)),
            // Application messages only ever as PrivateMessages, handshakes only as
            // PublicMessages (the form the delivery service validated).
            MlsMessageBodyIn::PrivateMessage(m) => {
                if m.content_type() != ContentType::Application {
                    return Err(ConversationError::Malformed.into());
                }
                let claimed = EpochTag::claimed_by(&m);
                self.atomically(|e| {
                    if let Some(claimed) = claimed {
                        e.check_fork(m.group_id(), claimed)?;
                    }
                    e.process_protocol(now_ms, ProtocolMessage::from(m))
                })
            }
            MlsMessageBodyIn::PublicMessage(m) => {
                if m.content_type() == ContentType::Application {
                    return Err(ConversationError::Malformed.into());
                }
                self.atomically(|e| e.process_protocol(now_ms, ProtocolMessage::from(m)))
            }
            _ => Err(ConversationError::Malformed.into()),
        }
    }

    fn process_protocol(&mut self, now_ms: u64, message: ProtocolMessage) -> Result<Incoming> {
        let conversation = ConversationId::from_group_id(message.group_id())?;
        let mut record = self.record(conversation)?;
        let group = load_group(&mut self.groups, &self.provider, conversation)?;
        let processed = group
            .process_message(&self.provider, message)
            .map_err(processing_error)?;
        let Sender::Member(sender_leaf) = *processed.sender() else {
            return Err(ConversationError::ExternalSender.into());
        };
        let sender = device_credential(processed.credential())?;
        let epoch = processed.epoch().as_u64();
        match processed.into_content() {
            ProcessedMessageContent::ApplicationMessage(app) => {
                let Plaintext {
                    seq,
                    sender: sender_state,
                    franking: opening,
                    message,
                } = Plaintext::decode(&app.into_bytes())?;
                let franking = match opening {
                    None => FrankingCheck::Absent,
                    Some(opening) => {
                        // The key MLS authenticated the message with: the sending leaf's.
                        let key = group
                            .member_at(sender_leaf)
                            .map(|m| m.signature_key)
                            .unwrap_or_default();
                        let encoded = message.encode();
                        let committed = Committed {
                            conversation,
                            sender: &sender,
                            message: &encoded,
                        };
                        franking::check(opening, &committed, &key)
                    }
                };
                if let Some(seq) = seq {
                    integrity::observe_incoming(
                        self.provider.kv(),
                        conversation,
                        &sender,
                        seq,
                        now_ms,
                    )?;
                }
                record.received_since_update = record.received_since_update.saturating_add(1);
                self.save_record(conversation, &record)?;
                Ok(Incoming::Message {
                    conversation,
                    sender,
                    epoch,
                    message,
                    sender_state,
                    franking,
                })
            }
            ProcessedMessageContent::ProposalMessage(proposal) => {
                let is_self_removal = matches!(
                    proposal.proposal(),
                    Proposal::Remove(r) if r.removed() == sender_leaf
                );
                if !is_self_removal {
                    return Err(ConversationError::Invalid(
                        "only leave requests are accepted as proposals".into(),
                    )
                    .into());
                }
                group
                    .store_pending_proposal(self.provider.storage(), *proposal)
                    .map_err(internal)?;
                Ok(Incoming::LeaveRequested {
                    conversation,
                    member: sender,
                })
            }
            ProcessedMessageContent::StagedCommitMessage(staged) => {
                self.apply_commit(conversation, record, sender, sender_leaf, *staged)
            }
            ProcessedMessageContent::ExternalJoinProposalMessage(_) => {
                Err(ConversationError::ExternalSender.into())
            }
            ProcessedMessageContent::OwnPrivateMessage => Err(ConversationError::OwnMessage.into()),
            #[allow(unreachable_patterns)]
            _ => Err(ConversationError::Malformed.into()),
        }
    }

    fn apply_commit(
        &mut self,
        conversation: ConversationId,
        mut record: ConversationRecord,
        sender: DeviceCredential,
        sender_leaf: LeafNodeIndex,
        staged: StagedCommit,
    ) -> Result<Incoming> {
        let group = load_group(&mut self.groups, &self.provider, conversation)?;
        let mut unknown = BTreeSet::new();
        let mut check = |cred: &DeviceCredential, key: &[u8]| -> Result<()> {
            match self.directory.check(cred, key) {
                Ok(()) => Ok(()),
                Err(DeviceCheck::UnknownAccount) => {
                    unknown.insert(cred.username.clone());
                    Ok(())
                }
                Err(DeviceCheck::NotListed) => {
                    Err(ConversationError::DeviceNotInList(cred.to_string()).into())
                }
            }
        };

        let mut added = Vec::new();
        for add in staged.add_proposals() {
            let leaf = add.add_proposal().key_package().leaf_node();
            let cred = device_credential(leaf.credential())?;
            check(&cred, leaf.signature_key().as_slice())?;
            added.push(cred);
        }
        let mut leaves: Vec<(LeafNodeIndex, LeafNode)> = staged
            .update_path_leaf_node()
            .map(|leaf| (sender_leaf, leaf.clone()))
            .into_iter()
            .collect();
        for update in staged.update_proposals() {
            if let Sender::Member(i) = update.sender() {
                leaves.push((*i, update.update_proposal().leaf_node().clone()));
            }
        }
        for (index, leaf) in leaves {
            let cred = device_credential(leaf.credential())?;
            let current = group.member(index).map(device_credential).transpose()?;
            if current.as_ref() != Some(&cred) {
                return Err(ConversationError::Invalid(
                    "a leaf may not change its identity".into(),
                )
                .into());
            }
            check(&cred, leaf.signature_key().as_slice())?;
        }
        let removed: Vec<DeviceCredential> = staged
            .remove_proposals()
            .filter_map(|r| group.member(r.remove_proposal().removed()))
            .filter_map(|c| device_credential(c).ok())
            .collect();
        if !unknown.is_empty() {
            return Err(ConversationError::UnknownAccounts(unknown.into_iter().collect()).into());
        }
        let self_removed = staged.self_removed();
        if staged.group_context().extensions().unknown(KIND_EXTENSION)
            != group.extensions().unknown(KIND_EXTENSION)
        {
            return Err(ConversationError::Invalid(
                "a commit may not change the conversation kind".into(),
            )
            .into());
        }
        if record.kind == ConversationKind::Direct && !self_removed {
            let before: BTreeSet<String> = group
                .members()
                .filter_map(|m| device_credential(&m.credential).ok())
                .map(|c| c.username)
                .collect();
            let mut after: BTreeSet<String> = group
                .members()
                .filter_map(|m| device_credential(&m.credential).ok())
                .filter(|c| !removed.contains(c))
                .map(|c| c.username)
                .collect();
            after.extend(added.iter().map(|c| c.username.clone()));
            let peer = record.peer.clone().or_else(|| {
                // Records from before the peer was kept: the pair the commit found.
                let mut others = before.iter().filter(|a| **a != self.me.username);
                match (others.next(), others.next()) {
                    (Some(only), None) => Some(only.clone()),
                    _ => None,
                }
            });
            let expected = peer.map(|p| BTreeSet::from([self.me.username.clone(), p]));
            if after.len() != 2 || expected.is_some_and(|e| e != after) {
                return Err(ConversationError::NotTwoAccounts.into());
            }
        }
        let metadata_changed = staged
            .group_context()
            .extensions()
            .unknown(METADATA_EXTENSION)
            != group.extensions().unknown(METADATA_EXTENSION);
        // A rename is sealed under a key from the exporter of the epoch it was made in:
        // derive it before merging moves the group on.
        let next_key = if metadata_changed {
            Some(super::ops::next_metadata_key(
                group,
                &self.provider,
                conversation,
            )?)
        } else {
            None
        };

        let superseded = if group.pending_commit().is_some() {
            group
                .clear_pending_commit(self.provider.storage())
                .map_err(internal)?;
            record.pending.take()
        } else {
            None
        };
        group
            .merge_staged_commit(&self.provider, staged)
            .map_err(internal)?;
        let epoch = group.epoch().as_u64();
        if let Some(key) = next_key {
            self.save_metadata_key(conversation, &key)?;
        }
        let group = load_group(&mut self.groups, &self.provider, conversation)?;
        record.remember_epoch(group);
        if self_removed {
            record.active = false;
            self.save_record(conversation, &record)?;
            return Ok(Incoming::Removed {
                conversation,
                by: sender,
            });
        }
        record.superseded = superseded.clone();
        self.save_record(conversation, &record)?;
        Ok(Incoming::Commit {
            conversation,
            sender,
            epoch,
            added,
            removed,
            metadata_changed,
            superseded,
        })
    }

    fn join(&mut self, _now_ms: u64, welcome: Welcome) -> Result<Incoming> {
        let welcome_error = |e: WelcomeError<_>| match e {
            WelcomeError::NoMatchingKeyPackage | WelcomeError::NoMatchingEncryptionKey => {
                ConversationError::Undecryptable
            }
            other => ConversationError::Invalid(other.to_string()),
        };
        let processed =
            ProcessedWelcome::new_from_welcome(&self.provider, &self.join_config(), welcome)
                .map_err(welcome_error)?;
        // Read now, trusted only once staging has verified the GroupInfo's signature.
        let metadata_key = processed
            .unverified_group_info()
            .extensions()
            .unknown(super::metadata::METADATA_KEY_EXTENSION)
            .and_then(|u| super::metadata::MetadataKey::from_slice(&u.0));
        // The id is known before anything is staged: a live conversation is never replaced
        // (whoever chose the id would take it over); stale state after a removal is dropped.
        let conversation =
            ConversationId::from_group_id(processed.unverified_group_info().group_id())?;
        let existing: Option<ConversationRecord> = records::load(
            self.provider.kv(),
            &records::conversation_key(&conversation.0),
        )?;
        let stored = MlsGroup::load(self.provider.storage(), &conversation.group_id())?;
        if existing.is_some_and(|r| r.active) && stored.as_ref().is_some_and(MlsGroup::is_active) {
            return Err(ConversationError::AlreadyJoined.into());
        }
        if let Some(mut old) = stored {
            old.delete(self.provider.storage())?;
        }
        self.groups.remove(&conversation);
        let staged = processed
            .into_staged_welcome(&self.provider, None)
            .map_err(welcome_error)?;
        let mut unknown = BTreeSet::new();
        let mut members = Vec::new();
        for member in staged.members() {
            let cred = device_credential(&member.credential)?;
            match self.directory.check(&cred, &member.signature_key) {
                Ok(()) => {}
                Err(DeviceCheck::UnknownAccount) => {
                    unknown.insert(cred.username.clone());
                }
                Err(DeviceCheck::NotListed) => {
                    return Err(ConversationError::DeviceNotInList(cred.to_string()).into());
                }
            }
            members.push(cred);
        }
        if !unknown.is_empty() {
            return Err(ConversationError::UnknownAccounts(unknown.into_iter().collect()).into());
        }
        let sender = device_credential(staged.welcome_sender().map_err(internal)?.credential())?;
        let kind = ConversationKind::from_extensions(staged.group_context().extensions());
        if ConversationId::from_group_id(staged.group_context().group_id())? != conversation {
            return Err(ConversationError::Invalid("the Welcome's group id changed".into()).into());
        }
        let peer = match kind {
            ConversationKind::Direct => {
                let accounts: BTreeSet<&str> =
                    members.iter().map(|m| m.username.as_str()).collect();
                let mut others = accounts.iter().filter(|a| **a != self.me.username);
                match (others.next(), others.next(), accounts.len()) {
                    (Some(peer), None, 2) => Some((*peer).to_owned()),
                    _ => return Err(ConversationError::NotTwoAccounts.into()),
                }
            }
            ConversationKind::Group => None,
        };
        let group = staged.into_group(&self.provider).map_err(internal)?;
        let suite = Self::suite_of(&group)?;
        match metadata_key {
            Some(key) => self.save_metadata_key(conversation, &key)?,
            None => self
                .provider
                .kv()
                .delete(&super::records::metadata_key_key(&conversation.0))?,
        }
        let mut record = ConversationRecord {
            kind,
            suite,
            received_since_update: 0,
            // A joiner's leaf comes from a key package that may be old: update on first send.
            last_update_ms: 0,
            pending: None,
            superseded: None,
            active: true,
            peer,
            epoch_tags: Vec::new(),
        };
        record.remember_epoch(&group);
        self.groups.insert(conversation, group);
        self.save_record(conversation, &record)?;
        Ok(Incoming::Joined {
            conversation,
            kind,
            sender,
            members,
        })
    }
}
