//! Decrypted message history, the local conversation index and contacts.

pub use nightjar_machine::rows::{ContactRecord, ConversationRow, StoredMessage};
use rusqlite::{OptionalExtension as _, params};

use super::{Store, to_i64, to_u64};
use crate::error::Result;

impl Store {
    /// Adds a message to the history; returns false if it was already there (same conversation,
    /// sender and message id), so a retried or re-encrypted message is never shown twice.
    pub fn insert_message(&self, m: &StoredMessage, received_at: u64, shown: bool) -> Result<bool> {
        let n = self.conn()?.execute(
            "INSERT OR IGNORE INTO messages
             (conversation, message_id, sender, device, sent_at, received_at, type, text, outgoing, shown)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
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
                shown
            ],
        )?;
        Ok(n > 0)
    }

    /// Incoming messages not yet shown to the user, oldest first; marks them shown.
    pub fn take_unshown(&self) -> Result<Vec<StoredMessage>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT conversation, message_id, sender, device, sent_at, type, text, outgoing
             FROM messages WHERE shown = 0 ORDER BY seq",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok(StoredMessage {
                    conversation: r.get(0)?,
                    id: r.get(1)?,
                    from: r.get(2)?,
                    device: r.get(3)?,
                    sent_at: to_u64(r.get(4)?),
                    kind: r.get(5)?,
                    text: r.get(6)?,
                    outgoing: r.get(7)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        conn.execute("UPDATE messages SET shown = 1 WHERE shown = 0", [])?;
        Ok(rows)
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
