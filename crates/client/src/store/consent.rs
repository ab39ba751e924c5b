//! Consent in the profile: this account's decisions about other accounts (mirroring the
//! server's), which conversations it accepted, and the message requests held back meanwhile.
//!
//! A message is held (`messages.shown = 2`) when its sender is neither accepted nor this
//! account, and its conversation was not accepted: this account did not create it, never sent
//! in it, and was added to it by an account it had not accepted. Held messages are not shown by
//! `sync`; `requests` lists them; accepting the sender (or the account that added this one to
//! the conversation) releases them to the next `sync`.

pub use nightjar_machine::rows::Consent;
use rusqlite::{OptionalExtension as _, params};

use super::{Store, to_i64};
use crate::error::Result;

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS consent (
    username TEXT PRIMARY KEY,
    state TEXT NOT NULL CHECK (state IN ('accepted', 'blocked')),
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS conversation_consent (
    conversation TEXT PRIMARY KEY,
    inviter TEXT,
    accepted INTEGER NOT NULL
);
";

/// `messages.shown` of a held message request.
const HELD: i64 = 2;

/// Held messages of one sender in one conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldMessages {
    /// The conversation.
    pub conversation: String,
    /// The sending account.
    pub from: String,
    /// How many.
    pub count: u64,
    /// The latest one's text, if it has text.
    pub latest: Option<String>,
}

impl Store {
    /// This account's decision about `username`, if any.
    pub fn consent(&self, username: &str) -> Result<Option<Consent>> {
        let state: Option<String> = self
            .conn()?
            .query_row(
                "SELECT state FROM consent WHERE username = ?1",
                params![username],
                |r| r.get(0),
            )
            .optional()?;
        Ok(state.as_deref().and_then(Consent::parse))
    }

    /// Records a decision (`None` forgets it). Accepting an account also accepts the
    /// conversations it added this account to and releases their held messages.
    pub fn set_consent(&self, username: &str, consent: Option<Consent>, now: u64) -> Result<()> {
        let conn = self.conn()?;
        match consent {
            Some(c) => {
                conn.execute(
                    "INSERT INTO consent (username, state, updated_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (username) DO UPDATE SET state = excluded.state,
                     updated_at = excluded.updated_at",
                    params![username, c.as_str(), to_i64(now)],
                )?;
                if c == Consent::Accepted {
                    conn.execute(
                        "UPDATE conversation_consent SET accepted = 1 WHERE inviter = ?1",
                        params![username],
                    )?;
                }
            }
            None => {
                conn.execute("DELETE FROM consent WHERE username = ?1", params![username])?;
            }
        }
        // Release what is no longer a request: from accepted senders, or in accepted
        // conversations from anyone not blocked.
        conn.execute(
            "UPDATE messages SET shown = 0 WHERE shown = ?1 AND sender NOT IN
                 (SELECT username FROM consent WHERE state = 'blocked')
             AND (sender IN (SELECT username FROM consent WHERE state = 'accepted')
                  OR conversation NOT IN
                     (SELECT conversation FROM conversation_consent WHERE accepted = 0))",
            params![HELD],
        )?;
        Ok(())
    }

    /// Every decision, by username.
    pub fn consents(&self) -> Result<Vec<(String, Consent)>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare("SELECT username, state FROM consent ORDER BY username")?;
        let rows = stmt
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows
            .into_iter()
            .filter_map(|(u, s)| Some((u, Consent::parse(&s)?)))
            .collect())
    }

    /// Notes that `inviter` added this account to `conversation`: accepted if this account
    /// accepted the inviter, a request otherwise.
    pub fn joined_conversation(&self, conversation: &str, inviter: &str) -> Result<bool> {
        let accepted = self.consent(inviter)? == Some(Consent::Accepted);
        self.conn()?.execute(
            "INSERT INTO conversation_consent (conversation, inviter, accepted) VALUES (?1, ?2, ?3)
             ON CONFLICT (conversation) DO NOTHING",
            params![conversation, inviter, accepted],
        )?;
        Ok(accepted)
    }

    /// Accepts a conversation (this account sends in it).
    pub fn accept_conversation(&self, conversation: &str) -> Result<()> {
        let conn = self.conn()?;
        conn.execute(
            "UPDATE conversation_consent SET accepted = 1 WHERE conversation = ?1",
            params![conversation],
        )?;
        conn.execute(
            "UPDATE messages SET shown = 0 WHERE shown = ?1 AND conversation = ?2 AND sender NOT IN
                 (SELECT username FROM consent WHERE state = 'blocked')",
            params![HELD, conversation],
        )?;
        Ok(())
    }

    /// Whether a message from `sender` in `conversation` is a request to hold back.
    pub fn is_request(&self, conversation: &str, sender: &str) -> Result<bool> {
        if self.consent(sender)?.is_some() {
            return Ok(self.consent(sender)? == Some(Consent::Blocked));
        }
        let accepted: Option<bool> = self
            .conn()?
            .query_row(
                "SELECT accepted FROM conversation_consent WHERE conversation = ?1",
                params![conversation],
                |r| r.get(0),
            )
            .optional()?;
        // No row: a conversation this device created (or had before consent existed).
        Ok(accepted == Some(false))
    }

    /// Holds a stored message back as a request; returns whether it is the first held from
    /// that sender in that conversation.
    pub fn hold_message(&self, conversation: &str, sender: &str, message_id: &str) -> Result<bool> {
        let conn = self.conn()?;
        let before: i64 = conn.query_row(
            "SELECT count(*) FROM messages WHERE shown = ?1 AND conversation = ?2 AND sender = ?3",
            params![HELD, conversation, sender],
            |r| r.get(0),
        )?;
        conn.execute(
            "UPDATE messages SET shown = ?1
             WHERE conversation = ?2 AND sender = ?3 AND message_id = ?4 AND shown = 0",
            params![HELD, conversation, sender, message_id],
        )?;
        Ok(before == 0)
    }

    /// Held messages per (conversation, sender) of senders not blocked, oldest first.
    pub fn held_messages(&self) -> Result<Vec<HeldMessages>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT conversation, sender, text FROM messages WHERE shown = ?1 AND sender NOT IN
                 (SELECT username FROM consent WHERE state = 'blocked')
             ORDER BY seq",
        )?;
        let rows = stmt
            .query_map(params![HELD], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, Option<String>>(2)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut held: Vec<HeldMessages> = Vec::new();
        for (conversation, from, text) in rows {
            match held
                .iter_mut()
                .find(|h| h.conversation == conversation && h.from == from)
            {
                Some(h) => {
                    h.count += 1;
                    h.latest = text;
                }
                None => held.push(HeldMessages {
                    conversation,
                    from,
                    count: 1,
                    latest: text,
                }),
            }
        }
        Ok(held)
    }

    /// Conversations this account was added to but has not accepted, with who added it
    /// (blocked inviters left out).
    pub fn pending_conversations(&self) -> Result<Vec<(String, String)>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT conversation, inviter FROM conversation_consent
             WHERE accepted = 0 AND inviter IS NOT NULL AND inviter NOT IN
                 (SELECT username FROM consent WHERE state = 'blocked')
             ORDER BY rowid",
        )?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }
}
