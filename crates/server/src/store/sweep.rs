//! Periodic clean-up: expired envelopes, idempotency keys, sessions and abandoned pending
//! devices, messages no queue refers to any more, key-package claim counts whose window ended
//! and reports past their retention (both would otherwise keep who contacted whom).

use std::collections::BTreeMap;

use sqlx::{ColumnIndex, Executor, IntoArguments, QueryBuilder};

use super::backend::{MAX_IDS, QueueCounter};
use super::{Backend, Column, Db, Param, Store, dispatch, to_i64};

/// How long abuse reports (of accounts, and of messages with their revealed content) are kept
/// for moderators.
pub(crate) const REPORT_RETENTION_MS: u64 = 90 * 24 * 3600 * 1000;

/// Expired envelopes looked at per transaction.
const EXPIRE_CHUNK: i64 = 1_000;

/// How many rows one sweep deleted, per kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SweepReport {
    pub(crate) envelopes: u64,
    pub(crate) messages: u64,
    pub(crate) idempotency_keys: u64,
    pub(crate) sessions: u64,
    pub(crate) pending_devices: u64,
    pub(crate) logins: u64,
    pub(crate) claim_counts: u64,
    pub(crate) reports: u64,
}

/// How long each kind of row lives (see [`Store::sweep`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lifetimes {
    /// Envelopes, their messages and idempotency keys.
    pub(crate) message_ttl_ms: u64,
    /// Pending devices never approved.
    pub(crate) pending_ttl_ms: u64,
    /// The key-package claim window: counts of an ended window are deleted.
    pub(crate) claim_window_ms: u64,
}

impl Store {
    /// Deletes what expired before `now_ms` under `lifetimes`, expired sessions and logins,
    /// and reports older than [`REPORT_RETENTION_MS`].
    pub(crate) async fn sweep(
        &self,
        now_ms: u64,
        lifetimes: Lifetimes,
    ) -> Result<SweepReport, sqlx::Error> {
        dispatch!(self, db => db.sweep(now_ms, lifetimes).await)
    }
}

impl<DB> Db<DB>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    usize: ColumnIndex<DB::Row>,
    i64: Column<DB>,
    bool: Column<DB>,
    String: Column<DB>,
    Vec<u8>: Column<DB>,
    for<'s> &'s str: Param<'s, DB>,
    for<'s> &'s [u8]: Param<'s, DB>,
    for<'s> Option<&'s str>: Param<'s, DB>,
{
    async fn delete(&self, sql: &'static str, before: i64) -> Result<u64, sqlx::Error> {
        let mut w = self.write().await?;
        let done = sqlx::query(sql).bind(before).execute(&mut *w.tx).await?;
        w.commit().await?;
        Ok(DB::rows_affected(&done))
    }

    /// Deletes envelopes created before `before`, a bounded number of devices per transaction,
    /// keeping each device's `queue_len` exact.
    async fn expire_envelopes(&self, before: i64) -> Result<u64, sqlx::Error> {
        let mut deleted = 0;
        loop {
            let mut w = self.write().await?;
            let mut devices: Vec<i64> =
                sqlx::query_scalar("SELECT device_pk FROM queue WHERE created_at_ms < $1 LIMIT $2")
                    .bind(before)
                    .bind(EXPIRE_CHUNK)
                    .fetch_all(&mut *w.tx)
                    .await?;
            let more = i64::try_from(devices.len()).unwrap_or(i64::MAX) >= EXPIRE_CHUNK;
            devices.sort_unstable();
            devices.dedup();
            if devices.is_empty() {
                w.commit().await?;
                return Ok(deleted);
            }
            // Device rows first, in id order, as every writer of queues does.
            let devices = Self::lock_devices(&mut w.tx, &devices).await?;
            let ids: Vec<i64> = devices.iter().map(|d| d.0).collect();
            let mut per_device: BTreeMap<i64, i64> = BTreeMap::new();
            for chunk in ids.chunks(MAX_IDS) {
                let mut q = QueryBuilder::<DB>::new("DELETE FROM queue WHERE created_at_ms < ");
                q.push_bind(before).push(" AND ");
                DB::push_id_filter(&mut q, "device_pk", chunk);
                q.push(" RETURNING device_pk");
                let gone: Vec<i64> = q.build_query_scalar().fetch_all(&mut *w.tx).await?;
                for pk in gone {
                    *per_device.entry(pk).or_default() += 1;
                }
            }
            let counters = QueueCounter::removals(per_device.iter().map(|(&pk, &n)| (pk, n)));
            DB::adjust_queues(&mut w.tx, &counters).await?;
            w.commit().await?;
            deleted += per_device
                .values()
                .map(|n| u64::try_from(*n).unwrap_or(0))
                .sum::<u64>();
            if !more {
                return Ok(deleted);
            }
        }
    }

    pub(super) async fn sweep(
        &self,
        now_ms: u64,
        lifetimes: Lifetimes,
    ) -> Result<SweepReport, sqlx::Error> {
        // Envelopes and idempotency keys carry times rounded down to the hour: they expire
        // up to an hour late, never early.
        let message_cutoff = to_i64(
            now_ms
                .saturating_sub(lifetimes.message_ttl_ms)
                .saturating_sub(super::STORED_TIME_MS),
        );
        let pending_cutoff = to_i64(now_ms.saturating_sub(lifetimes.pending_ttl_ms));
        let envelopes = self.expire_envelopes(message_cutoff).await?;
        let idempotency_keys = self
            .delete(
                "DELETE FROM idempotency WHERE created_at_ms < $1",
                message_cutoff,
            )
            .await?
            + self
                .delete(
                    "DELETE FROM sealed_submissions WHERE created_at_ms < $1",
                    message_cutoff,
                )
                .await?;
        let sessions = self
            .delete(
                "DELETE FROM sessions WHERE expires_at_ms <= $1",
                to_i64(now_ms),
            )
            .await?;
        let pending_devices = self
            .delete(
                "DELETE FROM devices WHERE status = 'pending' AND created_at_ms < $1",
                pending_cutoff,
            )
            .await?;
        let logins = self
            .delete(
                "DELETE FROM pending_logins WHERE expires_at_ms <= $1",
                to_i64(now_ms),
            )
            .await?;
        // Messages are written together with their queue rows in one transaction, so one
        // without any queue row is finished with (acknowledged, expired or never routed).
        let messages = self
            .delete(
                "DELETE FROM messages WHERE created_at_ms <= $1 AND NOT EXISTS \
                 (SELECT 1 FROM queue WHERE queue.message_id = messages.id)",
                to_i64(now_ms),
            )
            .await?;
        let claim_counts = self
            .delete(
                "DELETE FROM key_package_claims WHERE window_start_ms < $1",
                to_i64(now_ms.saturating_sub(lifetimes.claim_window_ms)),
            )
            .await?;
        let report_cutoff = to_i64(now_ms.saturating_sub(REPORT_RETENTION_MS));
        let reports = self
            .delete(
                "DELETE FROM reports WHERE created_at_ms < $1",
                report_cutoff,
            )
            .await?
            + self
                .delete(
                    "DELETE FROM message_reports WHERE created_at_ms < $1",
                    report_cutoff,
                )
                .await?;
        Ok(SweepReport {
            envelopes,
            messages,
            idempotency_keys,
            sessions,
            pending_devices,
            logins,
            claim_counts,
            reports,
        })
    }
}
