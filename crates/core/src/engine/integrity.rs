//! Integrity of a conversation's message stream against a delivery service that drops,
//! replays, reorders or forks: per-sender sequence numbers and epoch fork tags.
//!
//! - **Sequence numbers.** Each device numbers its application messages per conversation from
//!   1 ([`crate::content::Plaintext::seq`], inside the encryption). A message encrypted again in
//!   a later epoch (its first ciphertext lost a commit race) keeps its number, so a receiver that
//!   gets both copies drops one and a receiver that gets one sees no gap. Receivers keep a
//!   [`SenderWindow`] per (conversation, sending device) and refuse a number seen before
//!   ([`ConversationError::Duplicate`]); [`Engine::missing_messages`] reports gaps that stayed open.
//! - **Fork tags.** Every application message carries, in its MLS authenticated data (clear text,
//!   but bound to the ciphertext), an 8-byte digest of the sender's epoch authenticator. A
//!   receiver at that epoch (or remembering it) whose own digest differs refuses the message as
//!   [`ConversationError::Forked`]: the delivery service handed the two devices different commits
//!   for the same epoch. A branch's messages cannot be decrypted on the other branch, which is
//!   why the tag travels outside the encrypted content.
//!
//! Stored beside the conversation record: `nj/seq-out/<conversation>` (this device's counter),
//! `nj/seq-in/<conversation><sender>` (one window per sender) and `nj/seq-gap/<conversation><sender>`
//! (present while that window has a gap, so polling for gaps reads only those).

use openmls::prelude::{ContentType, GroupId, MlsGroup, PrivateMessageIn};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::records::{self, ConversationRecord};
use super::{ConversationId, Engine};
use crate::content::MessageId;
use crate::error::{ConversationError, Result};
use crate::identity::DeviceCredential;
use crate::sequence::{Observation, SenderWindow};
use crate::storage::{KvStore, StoreError};

const SEQ_OUT_PREFIX: &[u8] = b"nj/seq-out/";
const SEQ_IN_PREFIX: &[u8] = b"nj/seq-in/";
const SEQ_GAP_PREFIX: &[u8] = b"nj/seq-gap/";

/// The first byte of the authenticated data Nightjar puts on application messages.
const AAD_VERSION: u8 = 1;
/// Length of a fork tag in bytes.
const TAG_LEN: usize = 8;
/// Epochs whose fork tags a conversation record remembers (the current one included).
const REMEMBERED_EPOCHS: usize = 4;
/// Messages whose sequence numbers are remembered for re-encryption in a later epoch.
const REMEMBERED_SENDS: usize = 32;

/// A short public digest of one epoch's authenticator: equal on every member that processed
/// the same commits, different on a fork. It reveals nothing about the epoch's keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct EpochTag {
    pub(crate) epoch: u64,
    pub(crate) tag: [u8; TAG_LEN],
}

impl EpochTag {
    /// The tag of `group`'s current epoch.
    pub(crate) fn of(group: &MlsGroup) -> Self {
        let epoch = group.epoch().as_u64();
        let digest = Sha256::new()
            .chain_update(b"nightjar fork tag v1")
            .chain_update(group.group_id().as_slice())
            .chain_update(epoch.to_be_bytes())
            .chain_update(group.epoch_authenticator().as_slice())
            .finalize();
        let mut tag = [0u8; TAG_LEN];
        tag.copy_from_slice(&digest[..TAG_LEN]);
        Self { epoch, tag }
    }

    /// The authenticated data for an application message sent in this epoch.
    pub(crate) fn aad(&self) -> Vec<u8> {
        [&[AAD_VERSION][..], &self.tag].concat()
    }

    /// The epoch and tag an incoming application message claims, if it carries one.
    pub(crate) fn claimed_by(message: &PrivateMessageIn) -> Option<Self> {
        if message.content_type() != ContentType::Application {
            return None;
        }
        match message.aad() {
            [AAD_VERSION, rest @ ..] => Some(Self {
                epoch: message.epoch().as_u64(),
                tag: rest.try_into().ok()?,
            }),
            _ => None,
        }
    }
}

impl ConversationRecord {
    /// Remembers the fork tag of `group`'s current epoch (call after every epoch change).
    pub(crate) fn remember_epoch(&mut self, group: &MlsGroup) {
        let tag = EpochTag::of(group);
        self.epoch_tags.retain(|t| t.epoch != tag.epoch);
        self.epoch_tags.push(tag);
        let excess = self.epoch_tags.len().saturating_sub(REMEMBERED_EPOCHS);
        self.epoch_tags.drain(..excess);
    }
}

/// One message this device numbered, kept so a re-encryption keeps the number.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct NumberedSend {
    id: [u8; 16],
    seq: u64,
    epoch: u64,
}

/// This device's sending counter in one conversation.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
struct OutgoingSequence {
    /// The last number used; 0 before the first message.
    last: u64,
    recent: Vec<NumberedSend>,
}

/// Messages from one sending device that did not arrive within the grace time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissingMessages {
    /// The conversation.
    pub conversation: ConversationId,
    /// The sending device, as authenticated by MLS on the messages that did arrive.
    pub sender: DeviceCredential,
    /// How many of its messages are missing.
    pub count: u64,
}

fn sender_key(prefix: &[u8], conversation: ConversationId, sender: &DeviceCredential) -> Vec<u8> {
    [prefix, &conversation.0, &sender.to_identity()].concat()
}

/// The sequence number for message `id` sent in `epoch`: the one it got when it was first
/// encrypted in an earlier epoch, else the next one.
pub(crate) fn number_outgoing(
    kv: &impl KvStore,
    conversation: ConversationId,
    id: MessageId,
    epoch: u64,
) -> Result<u64> {
    let key = [SEQ_OUT_PREFIX, &conversation.0].concat();
    let mut state: OutgoingSequence = records::load(kv, &key)?.unwrap_or_default();
    let id = id.0;
    if let Some(earlier) = state.recent.iter().find(|s| s.id == id && s.epoch < epoch) {
        return Ok(earlier.seq);
    }
    state.last = state.last.saturating_add(1);
    let seq = state.last;
    state.recent.push(NumberedSend { id, seq, epoch });
    let excess = state.recent.len().saturating_sub(REMEMBERED_SENDS);
    state.recent.drain(..excess);
    records::save(kv, &key, &state)?;
    Ok(seq)
}

/// Records `seq` from `sender` and refuses a number already received.
pub(crate) fn observe_incoming(
    kv: &impl KvStore,
    conversation: ConversationId,
    sender: &DeviceCredential,
    seq: u64,
    now_ms: u64,
) -> Result<Observation> {
    let key = sender_key(SEQ_IN_PREFIX, conversation, sender);
    let (observation, window, had_gap) = match records::load::<SenderWindow>(kv, &key)? {
        None => (Observation::Fresh, SenderWindow::first(seq), false),
        Some(mut window) => {
            let had_gap = window.has_gap();
            (window.observe(seq, now_ms), window, had_gap)
        }
    };
    if observation == Observation::Duplicate {
        return Err(ConversationError::Duplicate.into());
    }
    records::save(kv, &key, &window)?;
    let gap_key = sender_key(SEQ_GAP_PREFIX, conversation, sender);
    match (had_gap, window.has_gap()) {
        (false, true) => kv.put(&gap_key, &[])?,
        (true, false) => kv.delete(&gap_key)?,
        _ => {}
    }
    Ok(observation)
}

impl<S: KvStore> Engine<S> {
    /// Refuses an application message whose fork tag differs from this device's tag for the
    /// same epoch. Epochs this device does not remember are not compared.
    pub(crate) fn check_fork(&mut self, group_id: &GroupId, claimed: EpochTag) -> Result<()> {
        let Ok(conversation) = ConversationId::from_group_id(group_id) else {
            return Ok(());
        };
        let Some(record) = records::load::<ConversationRecord>(
            self.provider.kv(),
            &records::conversation_key(&conversation.0),
        )?
        else {
            return Ok(());
        };
        let group = self.group_mut(conversation)?;
        if !record.active || !group.is_active() {
            // A removed device has no view of later epochs to compare with.
            return Ok(());
        }
        let mine = if group.epoch().as_u64() == claimed.epoch {
            Some(EpochTag::of(group))
        } else {
            record
                .epoch_tags
                .iter()
                .find(|t| t.epoch == claimed.epoch)
                .copied()
        };
        match mine {
            Some(mine) if mine.tag != claimed.tag => Err(ConversationError::Forked {
                epoch: claimed.epoch,
            }
            .into()),
            _ => Ok(()),
        }
    }

    /// Reports, once each, the gaps in senders' sequence numbers that have stayed open for
    /// `grace_ms` or longer at `now_ms`. Messages reported missing that arrive afterwards are
    /// still accepted (once).
    pub fn missing_messages(&mut self, now_ms: u64, grace_ms: u64) -> Result<Vec<MissingMessages>> {
        self.atomically(|e| {
            let kv = e.provider.kv();
            let mut out = Vec::new();
            for (gap_key, _) in kv.entries_with_prefix(SEQ_GAP_PREFIX)? {
                let suffix = &gap_key[SEQ_GAP_PREFIX.len()..];
                let window_key = [SEQ_IN_PREFIX, suffix].concat();
                let Some(mut window) = records::load::<SenderWindow>(kv, &window_key)? else {
                    kv.delete(&gap_key)?;
                    continue;
                };
                let Some(count) = window.settle(now_ms, grace_ms) else {
                    continue;
                };
                records::save(kv, &window_key, &window)?;
                kv.delete(&gap_key)?;
                let (id, identity) = suffix.split_at_checked(16).ok_or(StoreError::Codec)?;
                let conversation = ConversationId(id.try_into().map_err(|_| StoreError::Codec)?);
                let sender =
                    DeviceCredential::from_identity(identity).map_err(|_| StoreError::Codec)?;
                out.push(MissingMessages {
                    conversation,
                    sender,
                    count,
                });
            }
            Ok(out)
        })
    }
}
