//! Replies, reactions, edits, deletes for everyone, the disappearing timer and the read-receipt
//! setting: each is one end-to-end encrypted message naming an earlier one by its id.

use nightjar_core::content::{Content, MessageId};
use nightjar_machine::READABLE_KINDS;

use super::{Client, SendOutcome};
use crate::error::{Error, Result};
use crate::store::StoredMessage;

/// The settings key of the read-receipt switch (`off` turns them off).
const READ_RECEIPTS: &str = "read_receipts";

/// The longest reaction accepted, in bytes (an emoji with its modifiers fits).
const MAX_REACTION_BYTES: usize = 32;

/// The longest disappearing timer: a year.
pub const MAX_TIMER_SECS: u32 = 365 * 24 * 3600;

/// Where a conversation-wide message goes: a person's 1:1 conversation or a group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Destination {
    /// The 1:1 conversation with this account (created on first use).
    User(String),
    /// A group, by name or conversation id.
    Group(String),
}

impl Client {
    /// The message with this id (32 hex digits) in this profile's history.
    pub fn find_message(&self, id: &str) -> Result<StoredMessage> {
        let id = id.trim().to_ascii_lowercase();
        if MessageId::from_hex(&id).is_none() {
            return Err(Error::Usage(format!(
                "{id} is no message id (32 hex digits, shown by `sync --json`)"
            )));
        }
        self.store
            .find_message(&id)?
            .ok_or_else(|| Error::Usage(format!("no message {id} in this profile")))
    }

    /// Answers the message `id` with `text`, quoting it.
    pub async fn reply(&mut self, id: &str, text: &str) -> Result<SendOutcome> {
        let target = self.readable(id)?;
        let content = Content::Reply {
            in_reply_to: message_id(&target)?,
            body: text.to_owned(),
        };
        self.send_about(&target, content).await
    }

    /// Reacts to the message `id` with `emoji` (or withdraws that reaction with `remove`).
    pub async fn react(&mut self, id: &str, emoji: &str, remove: bool) -> Result<SendOutcome> {
        let emoji = emoji.trim();
        if emoji.is_empty()
            || emoji.len() > MAX_REACTION_BYTES
            || emoji.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(Error::Usage(
                "a reaction is one emoji (no spaces, at most 32 bytes)".into(),
            ));
        }
        let target = self.readable(id)?;
        let content = Content::Reaction {
            target: message_id(&target)?,
            emoji: emoji.to_owned(),
            remove,
        };
        self.send_about(&target, content).await
    }

    /// Replaces the text of this account's message `id` for everyone.
    pub async fn edit(&mut self, id: &str, text: &str) -> Result<SendOutcome> {
        let target = self.own(id, "edited")?;
        if target.kind == "attachment" && text.is_empty() {
            return Err(Error::Usage("give the new caption".into()));
        }
        let content = Content::Edit {
            target: message_id(&target)?,
            body: text.to_owned(),
        };
        self.send_about(&target, content).await
    }

    /// Deletes this account's message `id` for everyone: every device drops its text and
    /// attachment.
    pub async fn delete(&mut self, id: &str) -> Result<SendOutcome> {
        let target = self.own(id, "deleted")?;
        let content = Content::Delete {
            target: message_id(&target)?,
        };
        self.send_about(&target, content).await
    }

    /// Sets the disappearing timer of a conversation (`None` turns it off): every message
    /// sent afterwards, by anyone, disappears that long after it was read.
    pub async fn set_timer(&mut self, to: &Destination, secs: Option<u32>) -> Result<SendOutcome> {
        if secs.is_some_and(|s| s == 0 || s > MAX_TIMER_SECS) {
            return Err(Error::Usage(
                "the timer is between 1 second and 365 days".into(),
            ));
        }
        let (conversation, offline) = match to {
            Destination::User(peer) => self.open_direct(peer).await?,
            Destination::Group(group) => self.open_group(group).await?,
        };
        let content = Content::DisappearingTimer {
            seconds: secs.unwrap_or(0),
        };
        self.send_content(&conversation, content, offline).await
    }

    /// The disappearing timer of a conversation, in seconds, if one is set.
    pub fn timer(&self, conversation: &str) -> Result<Option<u32>> {
        Ok(nightjar_machine::disappearing_timer(
            &self.store,
            conversation,
        )?)
    }

    /// Whether this device tells senders when their messages were read (on by default).
    pub fn read_receipts(&self) -> Result<bool> {
        Ok(self.store.meta(READ_RECEIPTS)?.as_deref() != Some("off"))
    }

    /// Turns read receipts on or off (for messages read from now on).
    pub fn set_read_receipts(&self, on: bool) -> Result<()> {
        self.store
            .set_meta(READ_RECEIPTS, if on { "on" } else { "off" })
    }

    /// The message `id`, if it is one that can be replied or reacted to.
    fn readable(&self, id: &str) -> Result<StoredMessage> {
        let target = self.find_message(id)?;
        if !READABLE_KINDS.contains(&target.kind.as_str()) || target.detail.deleted {
            return Err(Error::Usage(format!(
                "message {} is a {} and cannot be answered",
                target.id,
                if target.detail.deleted {
                    "deleted message"
                } else {
                    &target.kind
                }
            )));
        }
        Ok(target)
    }

    /// The message `id`, if it is this account's own and may be edited or deleted.
    fn own(&self, id: &str, done: &str) -> Result<StoredMessage> {
        let target = self.readable(id)?;
        if Some(&target.from) != self.username().as_ref() {
            return Err(Error::Usage(format!(
                "only your own messages can be {done}; {} was sent by {}",
                target.id, target.from
            )));
        }
        Ok(target)
    }

    /// Sends `content` into the conversation `target` is in.
    async fn send_about(
        &mut self,
        target: &StoredMessage,
        content: Content,
    ) -> Result<SendOutcome> {
        self.ensure_ready().await?;
        self.send_content(&target.conversation, content, None).await
    }
}

fn message_id(m: &StoredMessage) -> Result<MessageId> {
    MessageId::from_hex(&m.id).ok_or_else(|| Error::Database(format!("stored id {}", m.id)))
}
