//! Decrypted message history, the local conversation index and contacts.

pub use nightjar_machine::rows::{Amendment, ContactRecord, ConversationRow, StoredMessage};
use rusqlite::{Connection, OptionalExtension as _, Params, params};

use super::{Store, to_i64, to_u64};
use crate::error::Result;

impl Store {
    /// Adds a message to the history; returns false if it was already there (same conversation,
    /// sender and message id), so a retried or re-encrypted message is never shown twice.
    pub fn insert_message(&self, m: &StoredMessage, received_at: u64, shown: bool) -> Result<bool> {
        let detail = (!m.detail.is_empty())
            .then(|| serde_json::to_string(&m.detail))
            .transpose()?;
        let n = self.conn()?.execute(
            "INSERT OR IGNORE INTO messages
             (conversation, message_id, sender, device, sent_at, received_at, type, text, outgoing,
              shown, detail, expires_after, expires_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            params![
                m.conversation,
                m.id,
                m.from,
                m.device,
                to_i64(m.sent_at),
                to_i64(received_at),
                m.kind,
                m.text,
                m.outgoing,
                shown,
                detail,
                m.expires_after_secs,
                m.expires_at.map(to_i64),
            ],
        )?;
        Ok(n > 0)
    }

    /// Incoming messages not yet shown to the user, oldest first; marks them shown, which
    /// starts their disappearing timers.
    pub fn take_unshown(&self, now_ms: u64) -> Result<Vec<StoredMessage>> {
        let conn = self.conn()?;
        let rows = select_messages(&conn, "WHERE shown = 0 ORDER BY seq", [])?;
        conn.execute(
            "UPDATE messages SET shown = 1,
                 expires_at = CASE WHEN expires_after IS NULL THEN NULL
                                   ELSE ?1 + expires_after * 1000 END
             WHERE shown = 0",
            [to_i64(now_ms)],
        )?;
        Ok(rows
            .into_iter()
            .map(|mut m| {
                m.expires_at = m
                    .expires_after_secs
                    .map(|s| now_ms.saturating_add(u64::from(s) * 1000));
                m
            })
            .collect())
    }

    /// The newest stored message with this id (32 hex digits), in any conversation.
    pub fn find_message(&self, id: &str) -> Result<Option<StoredMessage>> {
        let conn = self.conn()?;
        Ok(select_messages(
            &conn,
            "WHERE message_id = ?1 ORDER BY seq DESC LIMIT 1",
            [id],
        )?
        .pop())
    }

    /// A conversation's history, oldest first.
    pub fn messages(&self, conversation: &str) -> Result<Vec<StoredMessage>> {
        let conn = self.conn()?;
        select_messages(
            &conn,
            "WHERE conversation = ?1 ORDER BY seq",
            [conversation],
        )
    }

    /// The newest `limit` messages sent at or after `since_ms` (all conversations, or one),
    /// oldest first: what `nightjar history` shows and a history archive carries.
    pub fn recent_messages(
        &self,
        conversation: Option<&str>,
        since_ms: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>> {
        let conn = self.conn()?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut rows = match conversation {
            Some(c) => select_messages(
                &conn,
                "WHERE conversation = ?1 AND sent_at >= ?2 ORDER BY seq DESC LIMIT ?3",
                params![c, to_i64(since_ms), limit],
            )?,
            None => select_messages(
                &conn,
                "WHERE sent_at >= ?1 ORDER BY seq DESC LIMIT ?2",
                params![to_i64(since_ms), limit],
            )?,
        };
        rows.reverse();
        Ok(rows)
    }

    /// Adds a conversation to the index unless it is there already (history from another
    /// device never overrides what this device learnt itself); whether it was added.
    pub fn insert_conversation(&self, c: &ConversationRow, now_ms: u64) -> Result<bool> {
        let n = self.conn()?.execute(
            "INSERT OR IGNORE INTO conversations (id, kind, name, peer, active, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![c.id, c.kind, c.name, c.peer, c.active, to_i64(now_ms)],
        )?;
        Ok(n > 0)
    }

    /// Applies an edit or a delete to the message `id` that `sender` sent in `conversation`
    /// (a text, reply or attachment not deleted yet); false when there is none, and then
    /// nothing changed.
    pub fn amend_message(
        &self,
        conversation: &str,
        sender: &str,
        id: &str,
        amendment: &Amendment,
    ) -> Result<bool> {
        let conn = self.conn()?;
        let Some(mut m) = one_message(&conn, conversation, sender, id)? else {
            return Ok(false);
        };
        let mut dropped_file = None;
        if !m.amend(amendment, &mut dropped_file) {
            return Ok(false);
        }
        if let Some(file) = dropped_file {
            // Deleted for everyone: the saved copy goes too.
            let _ = std::fs::remove_file(file);
        }
        conn.execute(
            "UPDATE messages SET text = ?1, detail = ?2
             WHERE conversation = ?3 AND sender = ?4 AND message_id = ?5",
            params![
                m.text,
                serde_json::to_string(&m.detail)?,
                conversation,
                sender,
                id
            ],
        )?;
        Ok(true)
    }

    /// Records where an attachment was saved.
    pub fn set_attachment_file(
        &self,
        conversation: &str,
        sender: &str,
        id: &str,
        file: &str,
    ) -> Result<()> {
        let conn = self.conn()?;
        if let Some(mut m) = one_message(&conn, conversation, sender, id)?
            && let Some(attachment) = m.detail.attachment.as_mut()
        {
            attachment.file = Some(file.to_owned());
            conn.execute(
                "UPDATE messages SET detail = ?1
                 WHERE conversation = ?2 AND sender = ?3 AND message_id = ?4",
                params![serde_json::to_string(&m.detail)?, conversation, sender, id],
            )?;
        }
        Ok(())
    }

    /// Attachments shown already but not saved yet (a download that failed or was cut off),
    /// oldest first, except those this device sent itself.
    pub fn unsaved_attachments(&self, device: &str) -> Result<Vec<StoredMessage>> {
        let conn = self.conn()?;
        let rows = select_messages(
            &conn,
            "WHERE type = 'attachment' AND shown = 1 AND device != ?1 ORDER BY seq",
            [device],
        )?;
        Ok(rows
            .into_iter()
            .filter(|m| {
                m.detail
                    .attachment
                    .as_ref()
                    .is_some_and(|a| a.file.is_none())
            })
            .collect())
    }

    /// Deletes every message whose disappearing timer ran out by `now_ms` and returns them
    /// (their saved attachments are the caller's to delete). `secure_delete` is on, so the
    /// freed pages are overwritten, not just unlinked.
    pub fn expire_messages(&self, now_ms: u64) -> Result<Vec<StoredMessage>> {
        let conn = self.conn()?;
        let gone = select_messages(
            &conn,
            "WHERE expires_at IS NOT NULL AND expires_at <= ?1 ORDER BY seq",
            [to_i64(now_ms)],
        )?;
        if !gone.is_empty() {
            conn.execute(
                "DELETE FROM messages WHERE expires_at IS NOT NULL AND expires_at <= ?1",
                [to_i64(now_ms)],
            )?;
        }
        Ok(gone)
    }

    /// When the next message disappears, if any will.
    pub fn next_expiry(&self) -> Result<Option<u64>> {
        let next: Option<i64> = self.conn()?.query_row(
            "SELECT min(expires_at) FROM messages WHERE expires_at IS NOT NULL",
            [],
            |r| r.get(0),
        )?;
        Ok(next.map(to_u64))
    }

    /// Number of messages in the history.
    pub fn message_count(&self) -> Result<u64> {
        let n: i64 = self
            .conn()?
            .query_row("SELECT count(*) FROM messages", [], |r| r.get(0))?;
        Ok(to_u64(n))
    }

    /// Adds or updates a conversation in the index.
    pub fn upsert_conversation(&self, c: &ConversationRow, now_ms: u64) -> Result<()> {
        self.conn()?.execute(
            "INSERT INTO conversations (id, kind, name, peer, active, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (id) DO UPDATE SET kind = excluded.kind, name = excluded.name,
                 peer = excluded.peer, active = excluded.active",
            params![c.id, c.kind, c.name, c.peer, c.active, to_i64(now_ms)],
        )?;
        Ok(())
    }

    /// Removes a conversation from the index (a creation the server refused).
    pub fn delete_conversation(&self, id: &str) -> Result<()> {
        self.conn()?
            .execute("DELETE FROM conversations WHERE id = ?1", [id])?;
        Ok(())
    }

    /// Every conversation in the index, oldest first.
    pub fn conversations(&self) -> Result<Vec<ConversationRow>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT id, kind, name, peer, active FROM conversations ORDER BY created_at, id",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok(ConversationRow {
                    id: r.get(0)?,
                    kind: r.get(1)?,
                    name: r.get(2)?,
                    peer: r.get(3)?,
                    active: r.get(4)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(rows)
    }

    /// One conversation of the index.
    pub fn conversation_row(&self, id: &str) -> Result<Option<ConversationRow>> {
        Ok(self.conversations()?.into_iter().find(|c| c.id == id))
    }

    /// Remembers a device list of `username` signed by an unexpected identity key.
    pub fn set_changed_identity(
        &self,
        username: &str,
        list: Option<&[u8]>,
        now_ms: u64,
    ) -> Result<()> {
        self.conn()?.execute(
            "INSERT INTO contacts (username, changed_list, updated_at) VALUES (?1, ?2, ?3)
             ON CONFLICT (username) DO UPDATE SET changed_list = excluded.changed_list,
                 updated_at = excluded.updated_at",
            params![username, list, to_i64(now_ms)],
        )?;
        Ok(())
    }

    /// Records the identity key and list version accepted for `username`.
    pub fn record_contact(
        &self,
        username: &str,
        identity_key: &[u8],
        version: u64,
        now_ms: u64,
    ) -> Result<()> {
        self.conn()?.execute(
            "INSERT INTO contacts (username, identity_key, list_version, updated_at)
             VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (username) DO UPDATE SET identity_key = excluded.identity_key,
                 list_version = excluded.list_version, updated_at = excluded.updated_at",
            params![username, identity_key, to_i64(version), to_i64(now_ms)],
        )?;
        Ok(())
    }

    /// What is remembered about `username`.
    pub fn contact(&self, username: &str) -> Result<Option<ContactRecord>> {
        Ok(self
            .conn()?
            .query_row(
                "SELECT username, changed_list FROM contacts WHERE username = ?1",
                [username],
                |r| {
                    Ok(ContactRecord {
                        username: r.get(0)?,
                        changed_list: r.get(1)?,
                    })
                },
            )
            .optional()?)
    }

    /// Accounts whose identity key changed and await the user's decision.
    pub fn changed_identities(&self) -> Result<Vec<String>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT username FROM contacts WHERE changed_list IS NOT NULL ORDER BY username",
        )?;
        let rows = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(rows)
    }
}

/// The message `id` that `sender` sent in `conversation` (unique: a sender's id is its own).
fn one_message(
    conn: &Connection,
    conversation: &str,
    sender: &str,
    id: &str,
) -> Result<Option<StoredMessage>> {
    Ok(select_messages(
        conn,
        "WHERE conversation = ?1 AND sender = ?2 AND message_id = ?3",
        [conversation, sender, id],
    )?
    .pop())
}

/// The stored messages `clause` (a `WHERE ... ORDER BY ...` tail) selects.
fn select_messages(
    conn: &Connection,
    clause: &str,
    params: impl Params,
) -> Result<Vec<StoredMessage>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT conversation, message_id, sender, device, sent_at, type, text, outgoing, detail,
                expires_after, expires_at
         FROM messages {clause}"
    ))?;
    let rows = stmt
        .query_map(params, |r| {
            Ok((
                StoredMessage {
                    conversation: r.get(0)?,
                    id: r.get(1)?,
                    from: r.get(2)?,
                    device: r.get(3)?,
                    sent_at: to_u64(r.get(4)?),
                    kind: r.get(5)?,
                    text: r.get(6)?,
                    outgoing: r.get(7)?,
                    detail: Default::default(),
                    expires_after_secs: r.get(9)?,
                    expires_at: r.get::<_, Option<i64>>(10)?.map(to_u64),
                },
                r.get::<_, Option<String>>(8)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(|(mut m, detail)| {
            if let Some(detail) = detail {
                m.detail = serde_json::from_str(&detail)?;
            }
            Ok(m)
        })
        .collect()
}
