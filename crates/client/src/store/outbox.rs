//! The outbox: every send is written here (with its idempotency key) before it is posted, and
//! removed only once the server has acknowledged it, so it survives restarts and network loss.
//!
//! Application messages keep their plaintext until acknowledged, so one whose epoch is gone
//! after a commit race can be encrypted again (same message id: receivers drop duplicates).

pub use nightjar_machine::rows::{OutboxItem, OutboxKind, OutboxRow};
use rusqlite::params;

use super::{Store, to_i64, to_u64};
use crate::error::Result;

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
    use nightjar_api::B64;

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
                franking_commitment: None,
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
