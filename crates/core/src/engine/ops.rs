//! Conversation operations started by this device: create, add, remove, rename, update, leave,
//! send — and the delivery-service contract for commits (accepted → merge, rejected → discard
//! and retry on the new epoch).

use std::collections::BTreeSet;

use openmls::prelude::*;
use tls_codec::Serialize as _;
use zeroize::Zeroizing;

use super::integrity::{self, EpochTag};
use super::metadata::{METADATA_KEY_LABEL, MetadataKey};
use super::records::{self, ConversationKind, ConversationRecord, Intent, METADATA_EXTENSION};
use super::{ConversationId, Engine, capabilities, device_credential, internal};
use crate::content::{GroupMetadata, Message};
use crate::directory::DeviceCheck;
use crate::error::{ConversationError, Error, Result};
use crate::franking::{self, Commitment, Committed, Franked, FrankingKey, Opening};
use crate::identity::DeviceCredential;
use crate::sealed::{SEALED_SECRET_LEN, SEALED_SENDER_LABEL, SealedKey};
use crate::storage::KvStore;

/// A commit to hand to the delivery service, with the Welcome for devices it adds.
#[derive(Clone, Debug)]
pub struct CommitBundle {
    /// The conversation.
    pub conversation: ConversationId,
    /// The epoch the commit was made in; the delivery service accepts one commit per epoch.
    pub epoch: u64,
    /// The commit (an MLS PublicMessage the server validates), for every other member device.
    pub commit: Vec<u8>,
    /// The Welcome for added devices, if any.
    pub welcome: Option<Vec<u8>>,
    /// The devices the Welcome is for.
    pub welcome_recipients: Vec<DeviceCredential>,
    /// For the commit that creates a conversation: the GroupInfo of epoch 0 (with the ratchet
    /// tree), from which the server builds the group's public state. It holds only public keys
    /// and the (encrypted) group context.
    pub group_info: Option<Vec<u8>>,
}

/// An encrypted application message, possibly followed by a self-update commit.
#[derive(Clone, Debug)]
pub struct Outbound {
    /// The conversation.
    pub conversation: ConversationId,
    /// The epoch the message is encrypted in.
    pub epoch: u64,
    /// The MLS PrivateMessage, for every other member device.
    pub message: Vec<u8>,
    /// The message's franking commitment ([`crate::franking`]), sent beside the ciphertext
    /// for the server to stamp; the key that opens it is inside the ciphertext.
    pub franking_commitment: Commitment,
    /// A self-update commit the update policy asked for; send it after the message.
    pub self_update: Option<CommitBundle>,
}

/// How a hostile sender (a test acting as one, with the `hostile` feature) franks a message
/// wrongly; see `Engine::encrypt_forged`.
#[derive(Clone, Debug)]
#[cfg_attr(not(feature = "hostile"), allow(dead_code, unreachable_pub))]
pub enum Forgery {
    /// Commit to (and sign) another message than the one encrypted: the key in the message
    /// does not open the commitment for its content.
    CommitTo(Message),
    /// Sign the commitment with another key than this device's.
    ForeignSignature,
    /// Put another commitment beside the ciphertext than the one the message opens.
    OutsideCommitment(Commitment),
}

/// A snapshot of a conversation as this device sees it.
#[derive(Clone, Debug)]
pub struct ConversationInfo {
    /// The conversation.
    pub id: ConversationId,
    /// Direct or group.
    pub kind: ConversationKind,
    /// Its ciphersuite.
    pub suite: crate::config::Suite,
    /// Current epoch.
    pub epoch: u64,
    /// Every member device, in leaf order.
    pub members: Vec<DeviceCredential>,
    /// The group name and avatar, if set.
    pub metadata: Option<GroupMetadata>,
    /// Our commit awaiting a verdict, if any.
    pub pending: Option<Intent>,
    /// Whether this device is still a member.
    pub active: bool,
    /// For a direct conversation: the other account, fixed when this device created or joined
    /// it (every commit since kept exactly it and this account). `None` for groups.
    pub peer: Option<String>,
}

impl ConversationInfo {
    /// The distinct accounts in the conversation, sorted.
    pub fn accounts(&self) -> Vec<String> {
        let set: BTreeSet<&str> = self.members.iter().map(|m| m.username.as_str()).collect();
        set.into_iter().map(str::to_owned).collect()
    }
}

impl<S: KvStore> Engine<S> {
    /// Creates a conversation containing this device, every other device of this account and
    /// every device of each account in `members`, from their claimed key packages.
    ///
    /// Every key package must belong to a device in its account's accepted device list, and
    /// every listed device must be covered. The returned commit must be accepted by the
    /// delivery service (see [`Self::commit_accepted`]) before the conversation is usable.
    pub fn create_conversation(
        &mut self,
        now_ms: u64,
        kind: ConversationKind,
        members: &[&str],
        metadata: Option<&GroupMetadata>,
        key_packages: &[Vec<u8>],
    ) -> Result<(ConversationId, CommitBundle)> {
        let mut accounts: BTreeSet<&str> = members.iter().copied().collect();
        accounts.insert(self.me.username.as_str());
        if kind == ConversationKind::Direct && accounts.len() != 2 {
            return Err(ConversationError::Invalid(
                "a direct conversation has two accounts".into(),
            )
            .into());
        }
        let unknown: Vec<String> = accounts
            .iter()
            .filter(|a| self.directory.list(a).is_none())
            .map(|a| (*a).to_owned())
            .collect();
        if !unknown.is_empty() {
            return Err(ConversationError::UnknownAccounts(unknown).into());
        }
        let packages = self.verify_key_packages(key_packages)?;
        self.check_coverage(&accounts, &packages, &BTreeSet::new())?;

        let peer = match kind {
            ConversationKind::Direct => members
                .iter()
                .find(|a| **a != self.me.username)
                .map(|a| (*a).to_owned()),
            ConversationKind::Group => None,
        };
        let mut id = [0u8; 16];
        getrandom::fill(&mut id)?;
        let id = ConversationId(id);
        self.atomically(|e| {
            let mut extensions = vec![
                kind.extension(),
                Extension::RequiredCapabilities(RequiredCapabilitiesExtension::new(
                    &records::nightjar_extension_types(),
                    &[],
                    &[],
                )),
            ];
            // The first metadata key is random: only the creator holds the group at epoch 0.
            let mut key = [0u8; 32];
            getrandom::fill(&mut key)?;
            let key = MetadataKey::from_slice(&key)
                .ok_or_else(|| internal("metadata key of the wrong length"))?;
            if let Some(m) = metadata {
                extensions.push(metadata_extension(key.seal(id, m)?));
            }
            let config = MlsGroupCreateConfig::builder()
                .ciphersuite(e.config.suite.ciphersuite())
                .wire_format_policy(super::WIRE_FORMAT_POLICY)
                .use_ratchet_tree_extension(true)
                .max_past_epochs(e.config.max_past_epochs)
                .padding_size(e.config.padding)
                .sender_ratchet_configuration(SenderRatchetConfiguration::new(
                    e.config.out_of_order_tolerance,
                    e.config.maximum_forward_distance,
                ))
                .capabilities(capabilities())
                .with_group_context_extensions(Extensions::from_vec(extensions).map_err(internal)?)
                .build();
            let group = MlsGroup::new_with_group_id(
                &e.provider,
                &e.signer,
                &config,
                id.group_id(),
                e.credential_with_key(),
            )
            .map_err(internal)?;
            let group_info = group
                .export_group_info(e.provider.crypto(), &e.signer, true)
                .map_err(internal)?
                .tls_serialize_detached()
                .map_err(internal)?;
            e.groups.insert(id, group);
            e.save_metadata_key(id, &key)?;
            let record = ConversationRecord {
                kind,
                suite: e.config.suite,
                received_since_update: 0,
                last_update_ms: now_ms,
                pending: None,
                superseded: None,
                active: true,
                peer,
                epoch_tags: Vec::new(),
            };
            e.save_record(id, &record)?;
            let mut bundle = e
                .commit_intent(
                    id,
                    Intent::AddDevices {
                        key_packages: key_packages.to_vec(),
                    },
                )?
                .ok_or_else(|| ConversationError::Invalid("nobody to add".into()))?;
            bundle.group_info = Some(group_info);
            Ok((id, bundle))
        })
    }

    /// Adds every device of `username` (from their claimed key packages) to a conversation.
    pub fn add_member(
        &mut self,
        conversation: ConversationId,
        username: &str,
        key_packages: &[Vec<u8>],
    ) -> Result<CommitBundle> {
        if self.directory.list(username).is_none() {
            return Err(ConversationError::UnknownAccounts(vec![username.to_owned()]).into());
        }
        let info = self.conversation(conversation)?;
        if info.kind == ConversationKind::Direct {
            return Err(ConversationError::Invalid(
                "cannot add members to a direct conversation".into(),
            )
            .into());
        }
        if info.members.iter().any(|m| m.username == username) {
            return Err(ConversationError::AlreadyMember(username.to_owned()).into());
        }
        let packages = self.verify_key_packages(key_packages)?;
        let present = info.members.iter().cloned().collect();
        self.check_coverage(&BTreeSet::from([username]), &packages, &present)?;
        if packages.iter().any(|(c, _)| c.username != username) {
            return Err(ConversationError::Invalid("key package of another account".into()).into());
        }
        self.start(
            conversation,
            Intent::AddDevices {
                key_packages: key_packages.to_vec(),
            },
        )
    }

    /// Adds devices (for example a newly approved device of a member) to a conversation.
    pub fn add_devices(
        &mut self,
        conversation: ConversationId,
        key_packages: &[Vec<u8>],
    ) -> Result<CommitBundle> {
        self.verify_key_packages(key_packages)?;
        self.start(
            conversation,
            Intent::AddDevices {
                key_packages: key_packages.to_vec(),
            },
        )
    }

    /// Removes every device of `username` from a conversation.
    pub fn remove_member(
        &mut self,
        conversation: ConversationId,
        username: &str,
    ) -> Result<CommitBundle> {
        let info = self.conversation(conversation)?;
        let devices: Vec<DeviceCredential> = info
            .members
            .into_iter()
            .filter(|m| m.username == username)
            .collect();
        if devices.is_empty() {
            return Err(ConversationError::NotInConversation(username.to_owned()).into());
        }
        if username == self.me.username {
            return Err(
                ConversationError::Invalid("use leave to remove this account".into()).into(),
            );
        }
        self.start(conversation, Intent::RemoveDevices { devices })
    }

    /// Removes specific devices (for example a revoked device) from a conversation.
    pub fn remove_devices(
        &mut self,
        conversation: ConversationId,
        devices: Vec<DeviceCredential>,
    ) -> Result<CommitBundle> {
        if devices.contains(&self.me) {
            return Err(
                ConversationError::Invalid("use leave to remove this device".into()).into(),
            );
        }
        self.start(conversation, Intent::RemoveDevices { devices })
    }

    /// Sets the group's name and avatar; they travel encrypted inside the group state.
    pub fn set_metadata(
        &mut self,
        conversation: ConversationId,
        metadata: &GroupMetadata,
    ) -> Result<CommitBundle> {
        self.start(
            conversation,
            Intent::SetMetadata {
                metadata: metadata.encode(),
            },
        )
    }

    /// Refreshes this device's leaf keys (post-compromise security).
    pub fn self_update(&mut self, conversation: ConversationId) -> Result<CommitBundle> {
        self.start(conversation, Intent::SelfUpdate)
    }

    /// Commits queued leave requests of other members.
    pub fn commit_pending_proposals(
        &mut self,
        conversation: ConversationId,
    ) -> Result<CommitBundle> {
        self.start(conversation, Intent::CommitProposals)
    }

    /// Asks to leave: returns a proposal for the other members, one of whom commits it. This
    /// device stops sending; it learns it is out when that commit arrives.
    pub fn leave(&mut self, conversation: ConversationId) -> Result<Vec<u8>> {
        self.atomically(|e| {
            let group = load_group(&mut e.groups, &e.provider, conversation)?;
            let proposal = group
                .leave_group(&e.provider, &e.signer)
                .map_err(internal)?;
            proposal.tls_serialize_detached().map_err(internal)
        })
    }

    fn start(&mut self, conversation: ConversationId, intent: Intent) -> Result<CommitBundle> {
        self.atomically(|e| {
            e.commit_intent(conversation, intent)?
                .ok_or_else(|| ConversationError::Invalid("nothing to commit".into()).into())
        })
    }

    /// Retries an operation whose commit lost (see [`Self::commit_rejected`]) on the current
    /// epoch; returns `None` when the winning commit already did what it wanted.
    pub fn retry(
        &mut self,
        conversation: ConversationId,
        intent: Intent,
    ) -> Result<Option<CommitBundle>> {
        self.atomically(|e| e.commit_intent(conversation, intent))
    }

    /// The delivery service accepted our commit: apply it.
    pub fn commit_accepted(&mut self, now_ms: u64, conversation: ConversationId) -> Result<()> {
        self.atomically(|e| {
            let mut record = e.record(conversation)?;
            let group = load_group(&mut e.groups, &e.provider, conversation)?;
            if group.pending_commit().is_none() {
                return Err(ConversationError::NoPendingCommit.into());
            }
            group.merge_pending_commit(&e.provider).map_err(internal)?;
            let next = records::next_metadata_key_key(&conversation.0);
            if let Some(key) = e.provider.kv().get(&next)? {
                e.provider
                    .kv()
                    .put(&records::metadata_key_key(&conversation.0), &key)?;
                e.provider.kv().delete(&next)?;
            }
            record.remember_epoch(group);
            record.pending = None;
            record.received_since_update = 0;
            record.last_update_ms = now_ms;
            e.save_record(conversation, &record)
        })
    }

    /// The delivery service refused our commit because another commit won the epoch: discard
    /// ours. Returns the operation to [`Self::retry`] once the winning commit is processed.
    pub fn commit_rejected(&mut self, conversation: ConversationId) -> Result<Option<Intent>> {
        self.atomically(|e| {
            let mut record = e.record(conversation)?;
            let group = load_group(&mut e.groups, &e.provider, conversation)?;
            if group.pending_commit().is_some() {
                group
                    .clear_pending_commit(e.provider.storage())
                    .map_err(internal)?;
            }
            let intent = record.pending.take().or(record.superseded.take());
            e.save_record(conversation, &record)?;
            e.provider
                .kv()
                .delete(&records::next_metadata_key_key(&conversation.0))?;
            Ok(intent)
        })
    }

    /// Encrypts `message` for the conversation. If the update policy says this device's keys
    /// are due for refreshing, also returns a self-update commit to send after the message.
    ///
    /// The message gets this device's next sequence number in the conversation, or, when the
    /// same message id was encrypted in an earlier epoch (its ciphertext went stale), the number
    /// it got then; it states this account's device-list version and this device's directory
    /// view ([`crate::content::SenderState`]); and it carries the epoch's fork tag in its
    /// authenticated data.
    ///
    /// It is franked ([`crate::franking`]): a fresh key and this device's signature of the
    /// commitment travel inside the ciphertext, the commitment in
    /// [`Outbound::franking_commitment`].
    pub fn encrypt(
        &mut self,
        now_ms: u64,
        conversation: ConversationId,
        message: &Message,
    ) -> Result<Outbound> {
        self.encrypt_with(now_ms, conversation, message, None)
    }

    /// Test hook: [`Engine::encrypt`] as a hostile sender does it, with franking that does
    /// not hold (see [`Forgery`]). Only with the `hostile` feature, which no client enables.
    #[cfg(feature = "hostile")]
    pub fn encrypt_forged(
        &mut self,
        now_ms: u64,
        conversation: ConversationId,
        message: &Message,
        forgery: &Forgery,
    ) -> Result<Outbound> {
        self.encrypt_with(now_ms, conversation, message, Some(forgery))
    }

    /// The franking of `message` from this device in `conversation`: its opening (key and
    /// signature) and the commitment to send beside it (as a forgery, if one is given).
    fn frank(
        &self,
        conversation: ConversationId,
        message: &Message,
        forgery: Option<&Forgery>,
    ) -> Result<Franked> {
        let key =
            FrankingKey::generate().map_err(|_| Error::State("no randomness for franking"))?;
        let committed = match forgery {
            Some(Forgery::CommitTo(other)) => other.encode(),
            _ => message.encode(),
        };
        let commitment = franking::commit(
            &key,
            &Committed {
                conversation,
                sender: &self.me,
                message: &committed,
            },
        );
        let to_sign = franking::signed_bytes(&commitment);
        let signature = match forgery {
            Some(Forgery::ForeignSignature) => {
                use ed25519_dalek::Signer as _;
                let stranger = FrankingKey::generate()
                    .map_err(|_| Error::State("no randomness for franking"))?;
                ed25519_dalek::SigningKey::from_bytes(stranger.as_bytes())
                    .sign(&to_sign)
                    .to_bytes()
                    .to_vec()
            }
            _ => openmls_traits::signatures::Signer::sign(&self.signer, &to_sign)
                .map_err(|_| Error::State("signing the franking commitment failed"))?,
        };
        let signature = <[u8; franking::SIGNATURE_LEN]>::try_from(signature.as_slice())
            .map_err(|_| Error::State("the device key is not an Ed25519 key"))?;
        let outside = match forgery {
            Some(Forgery::OutsideCommitment(other)) => *other,
            _ => commitment,
        };
        Ok(Franked {
            commitment: outside,
            opening: Opening { key, signature },
        })
    }

    fn encrypt_with(
        &mut self,
        now_ms: u64,
        conversation: ConversationId,
        message: &Message,
        forgery: Option<&Forgery>,
    ) -> Result<Outbound> {
        let policy = self.config.update_policy;
        self.atomically(|e| {
            let record = e.record(conversation)?;
            let state = e.sender_state()?;
            let Franked {
                commitment: franking_commitment,
                opening,
            } = e.frank(conversation, message, forgery)?;
            let group = load_group(&mut e.groups, &e.provider, conversation)?;
            if !group.is_active() {
                return Err(ConversationError::NotAMember.into());
            }
            if group.pending_commit().is_some() {
                return Err(ConversationError::CommitInFlight.into());
            }
            if group.has_pending_proposals() {
                return Err(ConversationError::PendingProposals.into());
            }
            let epoch = group.epoch().as_u64();
            let seq = integrity::number_outgoing(e.provider.kv(), conversation, message.id, epoch)?;
            let plaintext = Zeroizing::new(message.encode_franked(seq, &state, &opening));
            group.set_aad(EpochTag::of(group).aad());
            let out = group
                .create_message(&e.provider, &e.signer, &plaintext)
                .map_err(internal)?;
            let bytes = out.tls_serialize_detached().map_err(internal)?;
            let self_update =
                if policy.is_due(record.received_since_update, record.last_update_ms, now_ms) {
                    e.commit_intent(conversation, Intent::SelfUpdate)?
                } else {
                    None
                };
            Ok(Outbound {
                conversation,
                epoch,
                message: bytes,
                franking_commitment,
                self_update,
            })
        })
    }

    /// Derives a secret from the conversation's current epoch (for example SFrame call keys);
    /// every member device derives the same bytes, nobody else can.
    pub fn export_secret(
        &mut self,
        conversation: ConversationId,
        label: &str,
        context: &[u8],
        len: usize,
    ) -> Result<Zeroizing<Vec<u8>>> {
        let group = load_group(&mut self.groups, &self.provider, conversation)?;
        let secret = group
            .export_secret(self.provider.crypto(), label, context, len)
            .map_err(internal)?;
        Ok(Zeroizing::new(secret))
    }

    /// The SFrame keys of call `call_id` in the conversation's current epoch (see
    /// [`crate::calls`]): the same base key on every member device, and this device's leaf
    /// index as its sender index.
    pub fn call_keys(
        &mut self,
        conversation: ConversationId,
        call_id: &[u8; 16],
    ) -> Result<crate::calls::CallKeys> {
        use crate::calls::{CALL_BASE_KEY_LABEL, CALL_BASE_KEY_LEN, CallKeys};
        let group = load_group(&mut self.groups, &self.provider, conversation)?;
        let epoch = group.epoch().as_u64();
        let leaf_index = group.own_leaf_index().u32();
        let secret = Zeroizing::new(
            group
                .export_secret(
                    self.provider.crypto(),
                    CALL_BASE_KEY_LABEL,
                    call_id,
                    CALL_BASE_KEY_LEN,
                )
                .map_err(internal)?,
        );
        CallKeys::from_secret(epoch, leaf_index, &secret)
            .ok_or_else(|| internal("a call secret of the wrong length"))
    }

    /// The sealed-sender key of the conversation's current epoch (see [`crate::sealed`]):
    /// every member device derives the same key, nobody else can.
    pub fn sealed_key(&mut self, conversation: ConversationId) -> Result<SealedKey> {
        let group = load_group(&mut self.groups, &self.provider, conversation)?;
        let epoch = group.epoch().as_u64();
        let secret = Zeroizing::new(
            group
                .export_secret(
                    self.provider.crypto(),
                    SEALED_SENDER_LABEL,
                    &conversation.0,
                    SEALED_SECRET_LEN,
                )
                .map_err(internal)?,
        );
        SealedKey::from_secret(epoch, &secret)
            .ok_or_else(|| internal("a sealed-sender secret of the wrong length"))
    }

    /// The conversations this device knows, newest state.
    pub fn conversations(&mut self) -> Result<Vec<ConversationInfo>> {
        let ids = records::conversation_ids(self.provider.kv())?;
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Ok(id) = <[u8; 16]>::try_from(id.as_slice()) {
                out.push(self.conversation(ConversationId(id))?);
            }
        }
        Ok(out)
    }

    /// A snapshot of one conversation.
    pub fn conversation(&mut self, conversation: ConversationId) -> Result<ConversationInfo> {
        let record = self.record(conversation)?;
        let metadata_key = self.metadata_key(conversation)?;
        let group = self.group_mut(conversation)?;
        let members = group
            .members()
            .filter_map(|m| device_credential(&m.credential).ok())
            .collect();
        let sealed = group
            .extensions()
            .unknown(METADATA_EXTENSION)
            .map(|u| u.0.clone());
        let metadata = match (sealed, metadata_key) {
            (Some(sealed), Some(key)) => key.open(conversation, &sealed),
            _ => None,
        };
        let mut info = ConversationInfo {
            id: conversation,
            kind: record.kind,
            suite: record.suite,
            epoch: group.epoch().as_u64(),
            members,
            metadata,
            pending: record.pending.clone(),
            active: group.is_active() && record.active,
            peer: None,
        };
        if record.kind == ConversationKind::Direct {
            // Records written before the peer was kept: only an exact pair names one.
            info.peer = record.peer.or_else(|| match info.accounts().as_slice() {
                [a, b] if *a == self.me.username => Some(b.clone()),
                [a, b] if *b == self.me.username => Some(a.clone()),
                _ => None,
            });
        }
        Ok(info)
    }

    /// Builds the commit for `intent` and leaves it pending; `None` if nothing is left to do.
    pub(super) fn commit_intent(
        &mut self,
        conversation: ConversationId,
        intent: Intent,
    ) -> Result<Option<CommitBundle>> {
        let mut record = self.record(conversation)?;
        let group = load_group(&mut self.groups, &self.provider, conversation)?;
        if !group.is_active() {
            return Err(ConversationError::NotAMember.into());
        }
        if group.pending_commit().is_some() {
            return Err(ConversationError::CommitInFlight.into());
        }
        let epoch = group.epoch().as_u64();
        let present: BTreeSet<DeviceCredential> = group
            .members()
            .filter_map(|m| device_credential(&m.credential).ok())
            .collect();
        let (commit, welcome, recipients) = match &intent {
            Intent::AddDevices { key_packages } => {
                let packages = verify_packages(&self.directory, &self.provider, key_packages)?;
                let (creds, kps): (Vec<_>, Vec<_>) = packages
                    .into_iter()
                    .filter(|(c, _)| !present.contains(c))
                    .unzip();
                if kps.is_empty() {
                    return Ok(None);
                }
                // The metadata key travels inside the Welcome's encrypted GroupInfo only.
                let extensions: Vec<Extension> = self
                    .metadata_key(conversation)?
                    .map(|k| k.welcome_extension())
                    .into_iter()
                    .collect();
                let group = load_group(&mut self.groups, &self.provider, conversation)?;
                let bundle = group
                    .commit_builder()
                    .propose_adds(kps)
                    .force_self_update(true)
                    .load_psks(self.provider.storage())
                    .map_err(internal)?
                    .use_ratchet_tree_extension(true)
                    .create_group_info_with_extensions(extensions)
                    .map_err(internal)?
                    .build(
                        self.provider.rand(),
                        self.provider.crypto(),
                        &self.signer,
                        |_| true,
                    )
                    .map_err(internal)?
                    .stage_commit(&self.provider)
                    .map_err(internal)?;
                let (commit, welcome, _exported_group_info) = bundle.into_messages();
                let welcome = welcome.ok_or_else(|| internal("an add commit without a Welcome"))?;
                (commit, Some(welcome), creds)
            }
            Intent::RemoveDevices { devices } => {
                let leaves: Vec<LeafNodeIndex> = group
                    .members()
                    .filter(|m| {
                        device_credential(&m.credential).is_ok_and(|c| devices.contains(&c))
                    })
                    .map(|m| m.index)
                    .collect();
                if leaves.is_empty() {
                    return Ok(None);
                }
                let (commit, _, _) = group
                    .remove_members(&self.provider, &self.signer, &leaves)
                    .map_err(internal)?;
                (commit, None, Vec::new())
            }
            Intent::SetMetadata { metadata } => {
                let metadata = GroupMetadata::decode(metadata)?;
                // A fresh key from this epoch's exporter: members of this epoch can derive
                // it, devices removed earlier and the server cannot.
                let key = next_metadata_key(group, &self.provider, conversation)?;
                let sealed = key.seal(conversation, &metadata)?;
                self.provider.kv().put(
                    &records::next_metadata_key_key(&conversation.0),
                    key.as_bytes(),
                )?;
                let group = load_group(&mut self.groups, &self.provider, conversation)?;
                let mut extensions = group.extensions().clone();
                extensions
                    .add_or_replace(metadata_extension(sealed))
                    .map_err(internal)?;
                let (commit, _, _) = group
                    .update_group_context_extensions(&self.provider, extensions, &self.signer)
                    .map_err(internal)?;
                (commit, None, Vec::new())
            }
            Intent::SelfUpdate => {
                let bundle = group
                    .self_update(&self.provider, &self.signer, LeafNodeParameters::default())
                    .map_err(internal)?;
                let (commit, _, _) = bundle.into_messages();
                (commit, None, Vec::new())
            }
            Intent::CommitProposals => {
                if !group.has_pending_proposals() {
                    return Ok(None);
                }
                let (commit, welcome, _) = group
                    .commit_to_pending_proposals(&self.provider, &self.signer)
                    .map_err(internal)?;
                (commit, welcome, Vec::new())
            }
        };
        record.pending = Some(intent);
        self.save_record(conversation, &record)?;
        Ok(Some(CommitBundle {
            conversation,
            epoch,
            commit: commit.tls_serialize_detached().map_err(internal)?,
            welcome: welcome
                .map(|w| w.tls_serialize_detached())
                .transpose()
                .map_err(internal)?,
            welcome_recipients: recipients,
            group_info: None,
        }))
    }

    fn verify_key_packages(
        &self,
        key_packages: &[Vec<u8>],
    ) -> Result<Vec<(DeviceCredential, KeyPackage)>> {
        verify_packages(&self.directory, &self.provider, key_packages)
    }

    /// Every listed device of each account in `accounts` must be present or have a package.
    fn check_coverage(
        &self,
        accounts: &BTreeSet<&str>,
        packages: &[(DeviceCredential, KeyPackage)],
        present: &BTreeSet<DeviceCredential>,
    ) -> Result<()> {
        let mut missing = Vec::new();
        for account in accounts {
            let Some(list) = self.directory.list(account) else {
                continue;
            };
            for device in &list.devices {
                let cred = DeviceCredential {
                    username: (*account).to_owned(),
                    device_id: device.device_id,
                };
                if cred != self.me
                    && !present.contains(&cred)
                    && !packages.iter().any(|(c, _)| *c == cred)
                {
                    missing.push(cred.to_string());
                }
            }
        }
        if missing.is_empty() {
            Ok(())
        } else {
            Err(ConversationError::MissingDevices(missing).into())
        }
    }

    pub(super) fn record(&self, conversation: ConversationId) -> Result<ConversationRecord> {
        records::load(
            self.provider.kv(),
            &records::conversation_key(&conversation.0),
        )?
        .ok_or(Error::Conversation(ConversationError::UnknownConversation))
    }

    pub(super) fn save_record(
        &self,
        conversation: ConversationId,
        record: &ConversationRecord,
    ) -> Result<()> {
        Ok(records::save(
            self.provider.kv(),
            &records::conversation_key(&conversation.0),
            record,
        )?)
    }

    pub(super) fn group_mut(&mut self, conversation: ConversationId) -> Result<&mut MlsGroup> {
        load_group(&mut self.groups, &self.provider, conversation)
    }
}

pub(super) fn load_group<'a, S: KvStore>(
    groups: &'a mut std::collections::HashMap<ConversationId, MlsGroup>,
    provider: &crate::provider::Provider<crate::storage::Overlay<S>>,
    conversation: ConversationId,
) -> Result<&'a mut MlsGroup> {
    use std::collections::hash_map::Entry;
    match groups.entry(conversation) {
        Entry::Occupied(o) => Ok(o.into_mut()),
        Entry::Vacant(v) => {
            let group = MlsGroup::load(
                openmls_traits::OpenMlsProvider::storage(provider),
                &conversation.group_id(),
            )?
            .ok_or(Error::Conversation(ConversationError::UnknownConversation))?;
            Ok(v.insert(group))
        }
    }
}

/// Decodes and verifies key packages and checks each device against its signed device list.
fn verify_packages<S: KvStore>(
    directory: &crate::directory::Directory,
    provider: &crate::provider::Provider<crate::storage::Overlay<S>>,
    key_packages: &[Vec<u8>],
) -> Result<Vec<(DeviceCredential, KeyPackage)>> {
    let mut out: Vec<(DeviceCredential, KeyPackage)> = Vec::with_capacity(key_packages.len());
    let mut unknown = Vec::new();
    for bytes in key_packages {
        let kp = KeyPackageIn::tls_deserialize_exact_bytes(bytes)
            .map_err(|_| ConversationError::Malformed)?
            .validate(
                openmls_traits::OpenMlsProvider::crypto(provider),
                ProtocolVersion::Mls10,
            )
            .map_err(|_| ConversationError::Forged)?;
        let leaf = kp.leaf_node();
        let cred = device_credential(leaf.credential())?;
        match directory.check(&cred, leaf.signature_key().as_slice()) {
            Ok(()) => {}
            Err(DeviceCheck::UnknownAccount) => unknown.push(cred.username.clone()),
            Err(DeviceCheck::NotListed) => {
                return Err(ConversationError::DeviceNotInList(cred.to_string()).into());
            }
        }
        if out.iter().any(|(c, _)| *c == cred) {
            return Err(ConversationError::Invalid(format!("two key packages for {cred}")).into());
        }
        out.push((cred, kp));
    }
    if !unknown.is_empty() {
        unknown.sort();
        unknown.dedup();
        return Err(ConversationError::UnknownAccounts(unknown).into());
    }
    Ok(out)
}

fn metadata_extension(sealed: Vec<u8>) -> Extension {
    Extension::Unknown(METADATA_EXTENSION, UnknownExtension(sealed))
}

/// The metadata key a rename committed in the group's current epoch uses.
pub(super) fn next_metadata_key<S: KvStore>(
    group: &MlsGroup,
    provider: &crate::provider::Provider<crate::storage::Overlay<S>>,
    conversation: ConversationId,
) -> Result<MetadataKey> {
    let secret = group
        .export_secret(
            openmls_traits::OpenMlsProvider::crypto(provider),
            METADATA_KEY_LABEL,
            &conversation.0,
            32,
        )
        .map_err(internal)?;
    MetadataKey::from_slice(&secret).ok_or_else(|| internal("metadata key of the wrong length"))
}
