//! Periodic clean-up: expired envelopes, idempotency keys, sessions and abandoned pending
//! devices, and messages no queue refers to any more.

use super::{Store, to_i64};

/// How many rows one sweep deleted, per kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SweepReport {
    pub(crate) envelopes: u64,
    pub(crate) messages: u64,
    pub(crate) idempotency_keys: u64,
    pub(crate) sessions: u64,
    pub(crate) pending_devices: u64,
}

impl Store {
    async fn delete(&self, sql: &'static str, before: i64) -> Result<u64, sqlx::Error> {
        let mut w = self.write().await?;
        let done = sqlx::query(sql).bind(before).execute(&mut *w.tx).await?;
        w.commit().await?;
        Ok(done.rows_affected())
    }

    /// Deletes what expired before `now_ms`: envelopes and idempotency keys older than
    /// `message_ttl_ms`, pending devices older than `pending_ttl_ms`, expired sessions.
    pub(crate) async fn sweep(
        &self,
        now_ms: u64,
        message_ttl_ms: u64,
        pending_ttl_ms: u64,
    ) -> Result<SweepReport, sqlx::Error> {
        let message_cutoff = to_i64(now_ms.saturating_sub(message_ttl_ms));
        let pending_cutoff = to_i64(now_ms.saturating_sub(pending_ttl_ms));
        let envelopes = self
            .delete("DELETE FROM queue WHERE created_at_ms < ?", message_cutoff)
            .await?;
        let idempotency_keys = self
            .delete(
                "DELETE FROM idempotency WHERE created_at_ms < ?",
                message_cutoff,
            )
            .await?;
        let sessions = self
            .delete(
                "DELETE FROM sessions WHERE expires_at_ms <= ?",
                to_i64(now_ms),
            )
            .await?;
        let pending_devices = self
            .delete(
                "DELETE FROM devices WHERE status = 'pending' AND created_at_ms < ?",
                pending_cutoff,
            )
            .await?;
        // Messages are written together with their queue rows in one transaction, so one
        // without any queue row is finished with (acknowledged, expired or never routed).
        let messages = self
            .delete(
                "DELETE FROM messages WHERE created_at_ms <= ? AND NOT EXISTS \
                 (SELECT 1 FROM queue WHERE queue.message_id = messages.id)",
                to_i64(now_ms),
            )
            .await?;
        Ok(SweepReport {
            envelopes,
            messages,
            idempotency_keys,
            sessions,
            pending_devices,
        })
    }
}
