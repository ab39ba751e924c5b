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

/// The key an existing device proves possession of when it signs in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeviceKeyRow {
    /// Active or pending.
    pub(crate) status: DeviceStatus,
    /// The MLS signature key the device registered (for a pending device, from its offer).
    pub(crate) signature_key: Vec<u8>,
}

/// One unexpired session of an account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AccountSession {
    pub(crate) token_hash: Vec<u8>,
    pub(crate) device_pk: i64,
    pub(crate) device_id: String,
    pub(crate) status: DeviceStatus,
    pub(crate) created_at_ms: u64,
    pub(crate) expires_at_ms: u64,
    pub(crate) last_seen_ms: u64,
}

/// A revoked session: its token hash and device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RevokedSession {
    pub(crate) token_hash: Vec<u8>,
    pub(crate) device_pk: i64,
}

impl Store {
    /// The status and registered signature key of an account's device.
    pub(crate) async fn device_key(
        &self,
        account_id: i64,
        device_id: &str,
    ) -> Result<Option<DeviceKeyRow>, sqlx::Error> {
        dispatch!(self, db => db.device_key(account_id, device_id).await)
    }

    /// The account's unexpired sessions, oldest first.
    pub(crate) async fn account_sessions(
        &self,
        account_id: i64,
        now_ms: u64,
    ) -> Result<Vec<AccountSession>, sqlx::Error> {
        dispatch!(self, db => db.account_sessions(account_id, now_ms).await)
    }

    /// Deletes every session of the account except the one with token hash `keep`.
    pub(crate) async fn revoke_other_sessions(
        &self,
        account_id: i64,
        keep: &[u8; 32],
    ) -> Result<Vec<RevokedSession>, sqlx::Error> {
        dispatch!(self, db => db.revoke_other_sessions(account_id, keep).await)
    }

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

    pub(super) async fn device_key(
        &self,
        account_id: i64,
        device_id: &str,
    ) -> Result<Option<DeviceKeyRow>, sqlx::Error> {
        let row: Option<(String, Vec<u8>)> = sqlx::query_as(
            "SELECT status, signature_key FROM devices WHERE account_id = $1 AND device_id = $2",
        )
        .bind(account_id)
        .bind(device_id)
        .fetch_optional(self.reader())
        .await?;
        Ok(row.map(|(status, signature_key)| DeviceKeyRow {
            status: status_from(&status),
            signature_key,
        }))
    }

    pub(super) async fn account_sessions(
        &self,
        account_id: i64,
        now_ms: u64,
    ) -> Result<Vec<AccountSession>, sqlx::Error> {
        type Row = (Vec<u8>, i64, String, String, i64, i64, i64);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT s.token_hash, d.id, d.device_id, d.status, s.created_at_ms, \
             s.expires_at_ms, d.last_seen_ms \
             FROM sessions s JOIN devices d ON d.id = s.device_pk \
             WHERE d.account_id = $1 AND s.expires_at_ms > $2 \
             ORDER BY s.created_at_ms, d.device_id",
        )
        .bind(account_id)
        .bind(to_i64(now_ms))
        .fetch_all(self.reader())
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(token_hash, device_pk, device_id, status, created, expires, seen)| {
                    AccountSession {
                        token_hash,
                        device_pk,
                        device_id,
                        status: status_from(&status),
                        created_at_ms: to_u64(created),
                        expires_at_ms: to_u64(expires),
                        last_seen_ms: to_u64(seen),
                    }
                },
            )
            .collect())
    }

    pub(super) async fn revoke_other_sessions(
        &self,
        account_id: i64,
        keep: &[u8; 32],
    ) -> Result<Vec<RevokedSession>, sqlx::Error> {
        let mut w = self.write().await?;
        let rows: Vec<(Vec<u8>, i64)> = sqlx::query_as(
            "DELETE FROM sessions WHERE token_hash <> $1 \
             AND device_pk IN (SELECT id FROM devices WHERE account_id = $2) \
             RETURNING token_hash, device_pk",
        )
        .bind(&keep[..])
        .bind(account_id)
        .fetch_all(&mut *w.tx)
        .await?;
        w.commit().await?;
        Ok(rows
            .into_iter()
            .map(|(token_hash, device_pk)| RevokedSession {
                token_hash,
                device_pk,
            })
            .collect())
    }
}
