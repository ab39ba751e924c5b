//! What a message means for the history, one path for messages sent and received: the row it
//! adds, and for an edit or a delete the change to an earlier message of the same sender.
//!
//! Hostile members are the reason for the checks: an edit or a delete names its target by
//! message id only, so it applies only to a message of the same conversation sent by the
//! same account. Anything else changes nothing and is reported as refused.

use nightjar_api::B64;
use nightjar_core::content::{Content, Message};

use crate::error::Result;
pub(crate) use crate::rows::READABLE_KINDS;
use crate::rows::{Amendment, AttachmentRow, MessageDetail, StoredMessage};
use crate::store::ClientStore;

/// Who sent a message, as the history records it.
pub(crate) struct Author<'a> {
    /// The sending account.
    pub(crate) username: &'a str,
    /// The sending device (16 hex digits).
    pub(crate) device: String,
    /// Whether it is this device's account.
    pub(crate) outgoing: bool,
}

/// The history row `message` adds, or `None` for content that is no row (typing, receipts and
/// call signals are events).
pub(crate) fn row(
    conversation: &str,
    author: &Author<'_>,
    message: &Message,
) -> Option<StoredMessage> {
    let mut detail = MessageDetail::default();
    let (kind, text) = match &message.content {
        Content::Typing { .. }
        | Content::ReadReceipt { .. }
        | Content::DeliveryReceipt { .. }
        | Content::Call(_) => return None,
        Content::Text { body } => ("text", Some(body.clone())),
        Content::Reply { in_reply_to, body } => {
            detail.target = Some(in_reply_to.to_hex());
            ("reply", Some(body.clone()))
        }
        Content::Edit { target, body } => {
            detail.target = Some(target.to_hex());
            ("edit", Some(body.clone()))
        }
        Content::Delete { target } => {
            detail.target = Some(target.to_hex());
            ("delete", None)
        }
        Content::Reaction {
            target,
            emoji,
            remove,
        } => {
            detail.target = Some(target.to_hex());
            detail.remove = *remove;
            ("reaction", Some(emoji.clone()))
        }
        Content::DisappearingTimer { seconds } => {
            detail.timer_secs = Some(*seconds);
            ("timer", None)
        }
        Content::Attachment(pointer) => {
            detail.attachment = Some(Box::new(AttachmentRow {
                message: B64(message.encode()),
                name: pointer.file_name.clone(),
                size: pointer.size,
                media_type: pointer.media_type.clone(),
                file: None,
            }));
            ("attachment", pointer.caption.clone())
        }
        other => (other.kind(), None),
    };
    Some(StoredMessage {
        conversation: conversation.to_owned(),
        id: message.id.to_hex(),
        from: author.username.to_owned(),
        device: author.device.clone(),
        sent_at: message.sent_at_ms,
        kind: kind.to_owned(),
        text,
        outgoing: author.outgoing,
        detail,
        expires_after_secs: message.expires_after_secs.filter(|s| *s > 0),
        expires_at: None,
    })
}

/// What recording a row did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Recorded {
    /// A new row.
    Stored,
    /// The same sender's message with that id was already there (a retry): nothing changed.
    Duplicate,
    /// An edit or delete of a message that is not the sender's own (or not there): nothing
    /// changed.
    Refused,
}

/// Stores `row` (shown already when `shown`), applying an edit or delete to its target and a
/// timer change to the conversation. The sender's own rows start their disappearing timer at
/// once (counted from sending); others' when shown.
pub(crate) fn record<S: ClientStore>(
    store: &S,
    mut row: StoredMessage,
    now: u64,
    shown: bool,
) -> Result<Recorded> {
    let amendment = match row.kind.as_str() {
        "edit" => row.text.clone().map(Amendment::Edit),
        "delete" => Some(Amendment::Delete),
        _ => None,
    };
    if let (Some(amendment), Some(target)) = (amendment, row.detail.target.as_deref())
        && !store.amend_message(&row.conversation, &row.from, target, &amendment)?
    {
        return Ok(Recorded::Refused);
    }
    if shown && let Some(secs) = row.expires_after_secs {
        row.expires_at = Some(row.sent_at.min(now).saturating_add(u64::from(secs) * 1000));
    }
    if !store.insert_message(&row, now, shown)? {
        return Ok(Recorded::Duplicate);
    }
    if let Some(secs) = row.detail.timer_secs {
        store.set_meta(&timer_key(&row.conversation), &secs.to_string())?;
    }
    Ok(Recorded::Stored)
}

/// The settings key of a conversation's disappearing timer.
pub fn timer_key(conversation: &str) -> String {
    format!("timer/{conversation}")
}

/// The conversation's disappearing timer in seconds, if one is set.
pub fn timer<S: ClientStore>(store: &S, conversation: &str) -> Result<Option<u32>> {
    Ok(store
        .meta(&timer_key(conversation))?
        .and_then(|s| s.parse().ok())
        .filter(|s| *s > 0))
}
