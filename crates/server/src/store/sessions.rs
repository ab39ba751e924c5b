//! Sessions: SHA-256 hashes of bearer tokens, each bound to one device, with an expiry.

use nightjar_api::DeviceStatus;
use sqlx::{ColumnIndex, Executor, IntoArguments, Transaction};

use super::{Backend, Column, Db, Param, Store, dispatch, to_i64, to_u64};

/// The device a valid session token belongs to.
#[derive(Debug, Clone)]
pub(crate) struct SessionRow {
    pub(crate) device_pk: i64,
    pub(crate) account_id: i64,
    pub(crate) username: String,
    pub(crate) device_id: String,
    pub(crate) status: DeviceStatus,
    pub(crate) last_seen_ms: u64,
}

pub(crate) fn status_from(text: &str) -> DeviceStatus {
    if text == "active" {
        DeviceStatus::Active
    } else {
        DeviceStatus::Pending
    }
}

impl Store {
    /// The device of an unexpired session with this token hash.
    pub(crate) async fn session(
        &self,
        token_hash: &[u8; 32],
        now_ms: u64,
    ) -> Result<Option<SessionRow>, sqlx::Error> {
        dispatch!(self, db => db.session(token_hash, now_ms).await)
    }

    /// Records that the device made a request.
    pub(crate) async fn touch_device(
        &self,
        device_pk: i64,
        now_ms: u64,
    ) -> Result<(), sqlx::Error> {
        dispatch!(self, db => db.touch_device(device_pk, now_ms).await)
    }

    /// Revokes one session.
    pub(crate) async fn delete_session(&self, token_hash: &[u8; 32]) -> Result<(), sqlx::Error> {
        dispatch!(self, db => db.delete_session(token_hash).await)
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
    pub(super) async fn insert_session(
        tx: &mut Transaction<'static, DB>,
        device_pk: i64,
        token_hash: &[u8; 32],
        now: i64,
        expires_at: i64,
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO sessions (token_hash, device_pk, created_at_ms, expires_at_ms) \
             VALUES ($1, $2, $3, $4)",
        )
        .bind(&token_hash[..])
        .bind(device_pk)
        .bind(now)
        .bind(expires_at)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    pub(super) async fn session(
        &self,
        token_hash: &[u8; 32],
        now_ms: u64,
    ) -> Result<Option<SessionRow>, sqlx::Error> {
        let row: Option<(i64, i64, String, String, String, i64)> = sqlx::query_as(
            "SELECT d.id, a.id, a.username, d.device_id, d.status, d.last_seen_ms \
             FROM sessions s JOIN devices d ON d.id = s.device_pk \
             JOIN accounts a ON a.id = d.account_id \
             WHERE s.token_hash = $1 AND s.expires_at_ms > $2",
        )
        .bind(&token_hash[..])
        .bind(to_i64(now_ms))
        .fetch_optional(self.reader())
        .await?;
        Ok(row.map(
            |(device_pk, account_id, username, device_id, status, last_seen)| SessionRow {
                device_pk,
                account_id,
                username,
                device_id,
                status: status_from(&status),
                last_seen_ms: to_u64(last_seen),
            },
        ))
    }

    pub(super) async fn touch_device(
        &self,
        device_pk: i64,
        now_ms: u64,
    ) -> Result<(), sqlx::Error> {
        let mut w = self.write().await?;
        sqlx::query("UPDATE devices SET last_seen_ms = $1 WHERE id = $2")
            .bind(to_i64(now_ms))
            .bind(device_pk)
            .execute(&mut *w.tx)
            .await?;
        w.commit().await
    }

    pub(super) async fn delete_session(&self, token_hash: &[u8; 32]) -> Result<(), sqlx::Error> {
        let mut w = self.write().await?;
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(&token_hash[..])
            .execute(&mut *w.tx)
            .await?;
        w.commit().await
    }
}
