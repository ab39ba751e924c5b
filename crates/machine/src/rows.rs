//! What a client keeps besides the engine's own state: the outbox, the decrypted history, the
//! conversation index, contacts and consent decisions. Plain data; [`crate::ClientStore`] says
//! how they are stored.

use nightjar_api::{B64, DeviceAddress, FrankingStamp, MessageReportRequest};
use nightjar_core::Intent;
use serde::{Deserialize, Serialize};

/// What an outbox entry will send.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OutboxItem {
    /// An application message.
    Message {
        /// The encoded `nightjar_core::content::Message` (kept until acknowledged).
        plaintext: B64,
        /// Its message id (32 hex digits).
        message_id: String,
        /// The MLS ciphertext, once encrypted.
        ciphertext: Option<B64>,
        /// The epoch it was encrypted in.
        epoch: Option<u64>,
        /// The ciphertext's franking commitment, posted beside it for the server to stamp
        /// (`nightjar_core::franking`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        franking_commitment: Option<B64>,
    },
    /// A commit with its Welcome; the engine holds it as pending until the server's verdict.
    Commit {
        /// The epoch the commit was made in.
        epoch: u64,
        /// The MLS commit.
        commit: B64,
        /// The Welcome for added devices.
        welcome: Option<B64>,
        /// Who the Welcome is for.
        welcome_recipients: Vec<DeviceAddress>,
        /// Every member device after the commit (sent for older servers; the server derives
        /// it from the commit).
        members: Vec<DeviceAddress>,
        /// For the commit creating a conversation: the GroupInfo of epoch 0 for the server.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group_info: Option<B64>,
    },
    /// An operation whose commit lost an epoch race: make a new commit once the winner is in.
    Retry {
        /// What the lost commit wanted.
        intent: Intent,
    },
    /// Commit queued leave requests of other members.
    CommitProposals,
    /// This device asks to leave the group (a proposal another member commits); made when
    /// posted, in the epoch the group is at then.
    Leave,
}

/// The kind of an outbox entry, for counting and ordering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutboxKind {
    /// An application message.
    Message,
    /// A commit or something that becomes one.
    Commit,
}

impl OutboxItem {
    /// Whether this is an application message or a commit.
    pub fn kind(&self) -> OutboxKind {
        match self {
            OutboxItem::Message { .. } => OutboxKind::Message,
            _ => OutboxKind::Commit,
        }
    }

    /// What the entry is, in one word (`message`, `commit`, `retry`, ...).
    pub fn label(&self) -> &'static str {
        match self {
            OutboxItem::Message { .. } => "message",
            OutboxItem::Commit { .. } => "commit",
            OutboxItem::Retry { .. } => "retry",
            OutboxItem::CommitProposals => "proposals",
            OutboxItem::Leave => "leave",
        }
    }

    /// Sending order: commits go before application messages (a pending commit blocks
    /// sending in its conversation), then by position.
    pub fn priority(&self) -> i64 {
        match self.kind() {
            OutboxKind::Commit => 0,
            OutboxKind::Message => 1,
        }
    }
}

/// One stored outbox entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutboxRow {
    /// Position (insertion order).
    pub seq: i64,
    /// The conversation (32 hex digits).
    pub conversation: String,
    /// The key that makes re-posting this entry a no-op on the server.
    pub idempotency_key: String,
    /// What it sends.
    pub item: OutboxItem,
    /// How many times posting it failed.
    pub attempts: u64,
    /// Why the server refused it, if it did: a refused entry stays queued, is not posted
    /// again by itself, and waits for the user.
    pub refused: Option<String>,
}

/// Kinds that are messages people read: they get delivery and read receipts, and only they
/// may be edited or deleted.
pub const READABLE_KINDS: [&str; 3] = ["text", "reply", "attachment"];

/// One message in the local history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    /// The conversation (32 hex digits).
    pub conversation: String,
    /// The sender-chosen message id (32 hex digits).
    pub id: String,
    /// The sending account.
    pub from: String,
    /// The sending device (16 hex digits).
    pub device: String,
    /// The sender's clock at sending (ms since the Unix epoch).
    pub sent_at: u64,
    /// The content kind (`text`, `reply`, `reaction`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// The text, for text-like content.
    pub text: Option<String>,
    /// Whether this device's account sent it.
    pub outgoing: bool,
    /// What the content says besides its text: the message a reply, reaction, edit or
    /// delete is about, receipts' message ids, a timer, an attachment; and what later
    /// messages did to this one (edited, deleted).
    #[serde(default, skip_serializing_if = "MessageDetail::is_empty")]
    pub detail: MessageDetail,
    /// The message's disappearing timer, in seconds, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_after_secs: Option<u32>,
    /// When this device deletes it (ms since the Unix epoch): counted from when it was shown
    /// (read), or sent for the sender's own devices; `None` until then or without a timer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

/// The parts of a stored message that only some kinds have. Stored as one JSON column.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageDetail {
    /// The message a reply answers, or a reaction, edit or delete is about (32 hex digits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// A reaction that withdraws an earlier one with the same emoji.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub remove: bool,
    /// The messages a read or delivery receipt is about.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub message_ids: Vec<String>,
    /// A disappearing-timer change: the new lifetime in seconds (0 turns it off).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timer_secs: Option<u32>,
    /// The sender edited the message since (the text is the newest version).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub edited: bool,
    /// The sender deleted the message for everyone: its text and attachment are gone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleted: bool,
    /// The attached file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachment: Option<Box<AttachmentRow>>,
    /// What reporting the message needs (its franking opening and the server's stamp), for a
    /// received message whose franking verified; `None`: it cannot be reported. Stored, never
    /// shown: [`MessageDetail::shown`] leaves it out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub franking: Option<Box<FrankingRecord>>,
}

impl MessageDetail {
    /// Whether nothing is set (the common plain-text message).
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }

    /// The detail as shown to the user (`sync --json`, the web app): without the franking
    /// record, which holds the key that opens the message's commitment.
    pub fn shown(mut self) -> Self {
        self.franking = None;
        self
    }
}

/// What a recipient keeps to report a message (docs/reporting.md): the message as the
/// commitment covers it, the key that opens the commitment and the sender device's signature
/// of it (from inside the ciphertext), and the server's stamp from the envelope. `Debug` shows
/// none of it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FrankingRecord {
    /// The encoded `nightjar_core::content::Message` (content version 1), as committed to.
    pub message: B64,
    /// The franking key.
    pub key: B64,
    /// The sending device's signature of the commitment.
    pub signature: B64,
    /// The commitment.
    pub commitment: B64,
    /// The server's tag.
    pub tag: B64,
    /// The time the tag binds (ms since the Unix epoch).
    pub time_ms: u64,
}

impl std::fmt::Debug for FrankingRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FrankingRecord(<redacted>)")
    }
}

/// An attachment as the history keeps it: the pointer the sender sent (with the key that
/// decrypts the blob; the history is encrypted at rest) and, once fetched, where it was saved.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachmentRow {
    /// The encoded `nightjar_core::content::Message` whose content is the attachment
    /// pointer (with the blob's capability and key).
    pub message: B64,
    /// The file name the sender gave, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The plaintext size in bytes.
    pub size: u64,
    /// The media type the sender gave.
    pub media_type: String,
    /// Where this device saved the decrypted file, once fetched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

impl std::fmt::Debug for AttachmentRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The pointer holds the blob's read capability and its key.
        f.debug_struct("AttachmentRow")
            .field("name", &self.name)
            .field("size", &self.size)
            .field("media_type", &self.media_type)
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

/// Why a stored message cannot be reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unreportable {
    /// This account sent it.
    #[error("that message is from this account: there is nothing to report")]
    Own,
    /// It carries no verified franking record (an older sender or server, or deleted since).
    #[error(
        "that message cannot be reported: it carries no franking proof (its sender's app or \
         the server predates reporting), or its sender deleted it"
    )]
    NoProof,
}

impl StoredMessage {
    /// The report of this message to the operator (docs/reporting.md): the message revealed
    /// with its franking key, its sender device's signature and the server's stamp, plus the
    /// reporter's `reason`. Only a received message whose franking verified has one.
    pub fn report_request(
        &self,
        reason: Option<&str>,
    ) -> Result<MessageReportRequest, Unreportable> {
        if self.outgoing {
            return Err(Unreportable::Own);
        }
        let franking = self
            .detail
            .franking
            .as_deref()
            .ok_or(Unreportable::NoProof)?;
        Ok(MessageReportRequest {
            conversation_id: self.conversation.clone(),
            sender: DeviceAddress {
                username: self.from.clone(),
                device_id: self.device.clone(),
            },
            message: franking.message.clone(),
            franking_key: franking.key.clone(),
            signature: franking.signature.clone(),
            stamp: FrankingStamp {
                commitment: franking.commitment.clone(),
                tag: franking.tag.clone(),
                time_ms: franking.time_ms,
            },
            reason: reason.map(str::to_owned),
        })
    }

    /// Applies an edit or a delete if this message may take one (a text, reply or
    /// attachment not deleted yet); whether it did. A delete returns the saved file of the
    /// attachment it dropped, in `dropped_file`, for the caller to delete.
    pub fn amend(&mut self, amendment: &Amendment, dropped_file: &mut Option<String>) -> bool {
        if !READABLE_KINDS.contains(&self.kind.as_str()) || self.detail.deleted {
            return false;
        }
        match amendment {
            Amendment::Edit(text) => {
                self.text = Some(text.clone());
                self.detail.edited = true;
            }
            Amendment::Delete => {
                self.text = None;
                self.detail.deleted = true;
                self.detail.edited = false;
                // The franking record holds the message itself: deleted for everyone means
                // gone here too (it can no longer be reported).
                self.detail.franking = None;
                *dropped_file = self.detail.attachment.take().and_then(|a| a.file);
            }
        }
        true
    }
}

/// What a later message does to a stored one: only its own sender may do either.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Amendment {
    /// An edit: the new text.
    Edit(String),
    /// A delete for everyone: the text and attachment go.
    Delete,
}

/// One conversation in the local index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationRow {
    /// The conversation id (32 hex digits).
    pub id: String,
    /// `direct` or `group`.
    pub kind: String,
    /// The group name, for groups.
    pub name: Option<String>,
    /// The other account, for direct conversations.
    pub peer: Option<String>,
    /// Whether this device is still a member.
    pub active: bool,
}

/// What this device remembers about another account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactRecord {
    /// The account.
    pub username: String,
    /// A device list signed by a different identity key than the pinned one, awaiting the
    /// user's decision (`trust`).
    pub changed_list: Option<Vec<u8>>,
}

/// What this account decided about another account.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Consent {
    /// Its messages are shown.
    Accepted,
    /// Its messages are refused by the server and never shown.
    Blocked,
}

impl Consent {
    /// The stored word.
    pub fn as_str(self) -> &'static str {
        match self {
            Consent::Accepted => "accepted",
            Consent::Blocked => "blocked",
        }
    }

    /// Parses the stored word.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "accepted" => Some(Consent::Accepted),
            "blocked" => Some(Consent::Blocked),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delete_for_everyone_drops_the_franking_record_and_nothing_shows_it() {
        let record = FrankingRecord {
            message: B64(b"the message itself".to_vec()),
            key: B64(vec![1; 32]),
            signature: B64(vec![2; 64]),
            commitment: B64(vec![3; 32]),
            tag: B64(vec![4; 32]),
            time_ms: 3_600_000,
        };
        let mut row = StoredMessage {
            conversation: "c".into(),
            id: "m".into(),
            from: "alice".into(),
            device: "000000000000000a".into(),
            sent_at: 1,
            kind: "text".into(),
            text: Some("the message itself".into()),
            outgoing: false,
            detail: MessageDetail {
                franking: Some(Box::new(record)),
                ..MessageDetail::default()
            },
            expires_after_secs: None,
            expires_at: None,
        };
        assert_eq!(
            format!("{:?}", row.detail.franking),
            "Some(FrankingRecord(<redacted>))"
        );
        assert!(row.detail.clone().shown().franking.is_none());
        // An edit keeps it (the original can still be reported); a delete does not.
        assert!(row.amend(&Amendment::Edit("fixed".into()), &mut None));
        assert!(row.detail.franking.is_some());
        assert!(row.amend(&Amendment::Delete, &mut None));
        assert!(row.detail.franking.is_none());
        assert!(!serde_json::to_string(&row).unwrap().contains("franking"));
    }
}
