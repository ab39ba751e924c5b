//! The outbox: every send is written here (with its idempotency key) before it is posted, and
//! removed only once the server has acknowledged it, so it survives restarts and network loss.
//!
//! Application messages keep their plaintext until acknowledged, so one whose epoch is gone
//! after a commit race can be encrypted again (same message id: receivers drop duplicates).

use nightjar_api::{B64, DeviceAddress};
use nightjar_core::Intent;
use rusqlite::params;
use serde::{Deserialize, Serialize};

use super::{Store, to_i64, to_u64};
use crate::error::Result;

/// What an outbox entry will send.
#[derive(Clone, Debug, Serialize, Deserialize)]
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
        }
    }

    /// Commits go before application messages: a pending commit blocks sending.
    fn priority(&self) -> i64 {
        match self.kind() {
            OutboxKind::Commit => 0,
            OutboxKind::Message => 1,
        }
    }
}

/// One stored outbox entry.
#[derive(Clone, Debug)]
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
    /// again by itself, and waits for the user (`Store::retry_refused`, `remove_outbox`).
    pub refused: Option<String>,
}

/// An outbox row as read, before its body is decoded.
struct RawRow {
    seq: i64,
    conversation: String,
    idempotency_key: String,
    body: String,
    attempts: i64,
    refused: Option<String>,
}

impl Store {
    /// Queues an entry; returns its position.
    pub fn push_outbox(
        &self,
        conversation: &str,
        item: &OutboxItem,
        idempotency_key: &str,
        now_ms: u64,
    ) -> Result<i64> {
        let conn = self.conn()?;
        conn.execute(
            "INSERT INTO outbox (priority, conversation, kind, idempotency_key, body, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                item.priority(),
                conversation,
                item.label(),
                idempotency_key,
                serde_json::to_string(item)?,
                to_i64(now_ms)
            ],
        )?;
        Ok(conn.last_insert_rowid())
    }

    /// Every queued entry, in sending order (commits first, then by position).
    pub fn outbox(&self) -> Result<Vec<OutboxRow>> {
        let conn = self.conn()?;
        let mut stmt = conn.prepare(
            "SELECT o.seq, o.conversation, o.idempotency_key, o.body, o.attempts, r.reason
             FROM outbox o LEFT JOIN outbox_refused r ON r.seq = o.seq
             ORDER BY o.priority, o.seq",
        )?;
        let rows = stmt
            .query_map([], |r| {
                Ok(RawRow {
                    seq: r.get(0)?,
                    conversation: r.get(1)?,
                    idempotency_key: r.get(2)?,
                    body: r.get(3)?,
                    attempts: r.get(4)?,
                    refused: r.get(5)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        rows.into_iter()
            .map(|raw| {
                Ok(OutboxRow {
                    seq: raw.seq,
                    conversation: raw.conversation,
                    idempotency_key: raw.idempotency_key,
                    item: serde_json::from_str(&raw.body)?,
                    attempts: to_u64(raw.attempts),
                    refused: raw.refused,
                })
            })
            .collect()
    }

    /// Replaces an entry's content and idempotency key (keeps its position).
    pub fn replace_outbox(&self, seq: i64, item: &OutboxItem, idempotency_key: &str) -> Result<()> {
        self.conn()?.execute(
            "UPDATE outbox SET kind = ?2, priority = ?3, idempotency_key = ?4, body = ?5
             WHERE seq = ?1",
            params![
                seq,
                item.label(),
                item.priority(),
                idempotency_key,
                serde_json::to_string(item)?
            ],
        )?;
        Ok(())
    }

    /// Counts a failed attempt.
    pub fn bump_outbox_attempts(&self, seq: i64) -> Result<()> {
        self.conn()?.execute(
            "UPDATE outbox SET attempts = attempts + 1 WHERE seq = ?1",
            [seq],
        )?;
        Ok(())
    }

    /// Removes an acknowledged (or abandoned) entry.
    pub fn remove_outbox(&self, seq: i64) -> Result<()> {
        let conn = self.conn()?;
        conn.execute("DELETE FROM outbox WHERE seq = ?1", [seq])?;
        conn.execute("DELETE FROM outbox_refused WHERE seq = ?1", [seq])?;
        Ok(())
    }

    /// Removes every entry of a conversation (this device left it).
    pub fn clear_outbox_for(&self, conversation: &str) -> Result<()> {
        let conn = self.conn()?;
        conn.execute(
            "DELETE FROM outbox_refused WHERE seq IN
             (SELECT seq FROM outbox WHERE conversation = ?1)",
            [conversation],
        )?;
        conn.execute("DELETE FROM outbox WHERE conversation = ?1", [conversation])?;
        Ok(())
    }

    /// Marks an entry as refused by the server for `reason`: it stays queued but is not
    /// posted again until the user asks ([`Self::retry_refused`]).
    pub fn mark_outbox_refused(&self, seq: i64, reason: &str, now_ms: u64) -> Result<()> {
        self.conn()?.execute(
            "INSERT INTO outbox_refused (seq, reason, at) VALUES (?1, ?2, ?3)
             ON CONFLICT (seq) DO UPDATE SET reason = excluded.reason, at = excluded.at",
            params![seq, reason, to_i64(now_ms)],
        )?;
        Ok(())
    }

    /// Clears every refusal mark, so the next flush posts those entries again; returns how
    /// many there were.
    pub fn retry_refused(&self) -> Result<u64> {
        let n = self.conn()?.execute("DELETE FROM outbox_refused", [])?;
        Ok(u64::try_from(n).unwrap_or(u64::MAX))
    }

    /// Removes every refused entry; returns how many there were.
    pub fn drop_refused(&self) -> Result<u64> {
        let conn = self.conn()?;
        conn.execute(
            "DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox_refused)",
            [],
        )?;
        let n = conn.execute("DELETE FROM outbox_refused", [])?;
        Ok(u64::try_from(n).unwrap_or(u64::MAX))
    }

    /// Number of queued entries.
    pub fn outbox_len(&self) -> Result<u64> {
        let n: i64 = self
            .conn()?
            .query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))?;
        Ok(to_u64(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbox_survives_reopen_in_order_with_commits_first() {
        let dir = tempfile::tempdir().unwrap();
        let (key, _) = crate::keys::load_or_create(dir.path(), false).unwrap();
        let path = dir.path().join(super::super::DB_FILE);
        {
            let store = Store::open(&path, &key).unwrap();
            let msg = OutboxItem::Message {
                plaintext: B64(b"queued while offline".to_vec()),
                message_id: "00".repeat(16),
                ciphertext: None,
                epoch: None,
            };
            store.push_outbox("c1", &msg, "key-1", 1).unwrap();
            store
                .push_outbox("c1", &OutboxItem::CommitProposals, "key-2", 2)
                .unwrap();
            store.bump_outbox_attempts(1).unwrap();
        }
        let store = Store::open(&path, &key).unwrap();
        let rows = store.outbox().unwrap();
        assert_eq!(rows.len(), 2);
        assert!(matches!(rows[0].item, OutboxItem::CommitProposals));
        assert_eq!(rows[1].idempotency_key, "key-1");
        assert_eq!(rows[1].attempts, 1);
        match &rows[1].item {
            OutboxItem::Message { plaintext, .. } => {
                assert_eq!(plaintext.0, b"queued while offline")
            }
            other => panic!("{other:?}"),
        }
        store.remove_outbox(rows[0].seq).unwrap();
        assert_eq!(store.outbox_len().unwrap(), 1);
        drop(store);
        let bytes = std::fs::read(&path).unwrap();
        assert!(!bytes.windows(12).any(|w| w == b"queued while"));
    }
}
