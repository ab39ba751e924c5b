//! The key-package directory: one-time packages handed out at most once, and one reusable
//! last-resort package per device.

use sqlx::{ColumnIndex, Executor, IntoArguments, QueryBuilder, Transaction};

use std::time::Duration;

use super::{Backend, Column, Db, Param, Store, dispatch, to_i64, to_u64};
use crate::rules::key_packages::{ClaimAllowance, ClaimWindow, claim_allowance};

/// Key-package stock of one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyPackageStock {
    /// Unclaimed one-time packages.
    pub(crate) available: u32,
    /// Whether a last-resort package is stored.
    pub(crate) last_resort: bool,
}

/// Who claims, and how many one-time claims of another account it may make per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClaimQuota {
    /// The claiming account's row id.
    pub(crate) claimer_id: i64,
    /// One-time claims per window.
    pub(crate) max: u32,
    /// The window.
    pub(crate) window: Duration,
    /// Now (ms).
    pub(crate) now_ms: u64,
}

/// Result of an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UploadOutcome {
    /// Stored; the stock afterwards.
    Stored(KeyPackageStock),
    /// Storing them would exceed the per-device maximum; nothing was stored.
    TooMany,
}

impl Store {
    /// The device's key-package stock.
    pub(crate) async fn key_package_stock(
        &self,
        device_pk: i64,
    ) -> Result<KeyPackageStock, sqlx::Error> {
        dispatch!(self, db => db.key_package_stock(device_pk).await)
    }

    /// Stores a device's uploaded packages (`(digest, bytes)`), refusing the whole batch if the
    /// device would hold more than `max_stored` one-time packages. An upload also ends the
    /// device's link: its sealed identity is no longer kept.
    pub(crate) async fn upload_key_packages(
        &self,
        device_pk: i64,
        one_time: &[([u8; 32], Vec<u8>)],
        last_resort: Option<&([u8; 32], Vec<u8>)>,
        max_stored: u32,
    ) -> Result<UploadOutcome, sqlx::Error> {
        dispatch!(self, db => db.upload_key_packages(device_pk, one_time, last_resort, max_stored).await)
    }

    /// Claims one package for every active device of the account: a one-time package (deleted
    /// as it is handed out, never to two claimants) or else the device's last-resort package
    /// (kept). Returns `(device id, package, is last resort)`; devices with no package at all
    /// are skipped. Past `quota` (claims by one account of another per window), only
    /// last-resort packages are handed out.
    pub(crate) async fn claim_key_packages(
        &self,
        account_id: i64,
        quota: ClaimQuota,
    ) -> Result<Vec<(String, Vec<u8>, bool)>, sqlx::Error> {
        dispatch!(self, db => db.claim_key_packages(account_id, quota).await)
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
    /// Inserts `(last_resort, digest, bytes)` packages in one statement; a new last-resort
    /// package replaces the old one, and a package already stored (same digest) is skipped.
    pub(super) async fn insert_packages<'a>(
        tx: &mut Transaction<'static, DB>,
        device_pk: i64,
        packages: impl Iterator<Item = (bool, &'a [u8; 32], &'a Vec<u8>)>,
    ) -> Result<(), sqlx::Error> {
        let packages: Vec<_> = packages.collect();
        if packages.is_empty() {
            return Ok(());
        }
        if packages.iter().any(|(last_resort, _, _)| *last_resort) {
            sqlx::query("DELETE FROM key_packages WHERE device_pk = $1 AND last_resort")
                .bind(device_pk)
                .execute(&mut **tx)
                .await?;
        }
        let mut q = QueryBuilder::<DB>::new(
            "INSERT INTO key_packages (device_pk, last_resort, digest, data) ",
        );
        q.push_values(packages, |mut row, (last_resort, digest, data)| {
            row.push_bind(device_pk)
                .push_bind(last_resort)
                .push_bind(&digest[..])
                .push_bind(data);
        });
        q.push(" ON CONFLICT (device_pk, digest) DO NOTHING");
        q.build().persistent(false).execute(&mut **tx).await?;
        Ok(())
    }

    async fn stock(
        conn: &mut DB::Connection,
        device_pk: i64,
    ) -> Result<KeyPackageStock, sqlx::Error> {
        let (available, last_resort): (i64, i64) = sqlx::query_as(STOCK)
            .bind(device_pk)
            .fetch_one(conn)
            .await?;
        Ok(stock_of(available, last_resort))
    }

    pub(super) async fn key_package_stock(
        &self,
        device_pk: i64,
    ) -> Result<KeyPackageStock, sqlx::Error> {
        let (available, last_resort): (i64, i64) = sqlx::query_as(STOCK)
            .bind(device_pk)
            .fetch_one(self.reader())
            .await?;
        Ok(stock_of(available, last_resort))
    }

    pub(super) async fn upload_key_packages(
        &self,
        device_pk: i64,
        one_time: &[([u8; 32], Vec<u8>)],
        last_resort: Option<&([u8; 32], Vec<u8>)>,
        max_stored: u32,
    ) -> Result<UploadOutcome, sqlx::Error> {
        let mut w = self.write().await?;
        // Concurrent uploads of one device take turns, so the limit holds.
        let lock = format!("SELECT id FROM devices WHERE id = $1{}", DB::FOR_UPDATE);
        sqlx::query(sqlx::AssertSqlSafe(lock))
            .bind(device_pk)
            .execute(&mut *w.tx)
            .await?;
        let before = Self::stock(&mut w.tx, device_pk).await?;
        let total = u64::from(before.available) + u64::try_from(one_time.len()).unwrap_or(u64::MAX);
        if total > u64::from(max_stored) {
            return Ok(UploadOutcome::TooMany);
        }
        let packages = one_time
            .iter()
            .map(|(d, b)| (false, d, b))
            .chain(last_resort.map(|(d, b)| (true, d, b)));
        Self::insert_packages(&mut w.tx, device_pk, packages).await?;
        sqlx::query("UPDATE devices SET sealed_identity = NULL WHERE id = $1")
            .bind(device_pk)
            .execute(&mut *w.tx)
            .await?;
        let after = Self::stock(&mut w.tx, device_pk).await?;
        w.commit().await?;
        Ok(UploadOutcome::Stored(after))
    }

    pub(super) async fn claim_key_packages(
        &self,
        account_id: i64,
        quota: ClaimQuota,
    ) -> Result<Vec<(String, Vec<u8>, bool)>, sqlx::Error> {
        let mut w = self.write().await?;
        let one_time_allowed = Self::count_claim(&mut w.tx, account_id, quota).await?;
        let devices: Vec<(i64, String)> = sqlx::query_as(
            "SELECT id, device_id FROM devices WHERE account_id = $1 AND status = 'active' \
             ORDER BY id",
        )
        .bind(account_id)
        .fetch_all(&mut *w.tx)
        .await?;
        // Concurrent claims (other connections, other nodes) skip each other's package.
        let claim = format!(
            "DELETE FROM key_packages WHERE id = (SELECT id FROM key_packages \
             WHERE device_pk = $1 AND NOT last_resort ORDER BY id LIMIT 1{}) RETURNING data",
            DB::SKIP_LOCKED
        );
        let mut claimed = Vec::with_capacity(devices.len());
        for (pk, device_id) in devices {
            let one_time: Option<Vec<u8>> = if one_time_allowed {
                sqlx::query_scalar(sqlx::AssertSqlSafe(claim.clone()))
                    .bind(pk)
                    .fetch_optional(&mut *w.tx)
                    .await?
            } else {
                None
            };
            if let Some(data) = one_time {
                claimed.push((device_id, data, false));
                continue;
            }
            let last: Option<Vec<u8>> = sqlx::query_scalar(
                "SELECT data FROM key_packages WHERE device_pk = $1 AND last_resort",
            )
            .bind(pk)
            .fetch_optional(&mut *w.tx)
            .await?;
            if let Some(data) = last {
                claimed.push((device_id, data, true));
            }
        }
        w.commit().await?;
        Ok(claimed)
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
    /// Counts a claim of `target_id`'s packages against the claimer's quota (the row locked
    /// until the transaction ends); `false` if only last-resort packages may be handed out.
    async fn count_claim(
        tx: &mut Transaction<'static, DB>,
        target_id: i64,
        quota: ClaimQuota,
    ) -> Result<bool, sqlx::Error> {
        let own = quota.claimer_id == target_id;
        if own {
            return Ok(true);
        }
        let sql = format!(
            "SELECT window_start_ms, claims FROM key_package_claims \
             WHERE claimer_id = $1 AND target_id = $2{}",
            DB::FOR_UPDATE
        );
        let row: Option<(i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(quota.claimer_id)
            .bind(target_id)
            .fetch_optional(&mut **tx)
            .await?;
        let previous = row.map(|(start, claims)| ClaimWindow {
            start_ms: to_u64(start),
            claims: u32::try_from(claims).unwrap_or(u32::MAX),
        });
        match claim_allowance(own, previous, quota.now_ms, quota.max, quota.window) {
            ClaimAllowance::LastResortOnly => Ok(false),
            ClaimAllowance::OneTime(next) => {
                sqlx::query(
                    "INSERT INTO key_package_claims (claimer_id, target_id, window_start_ms, \
                     claims) VALUES ($1, $2, $3, $4) ON CONFLICT (claimer_id, target_id) \
                     DO UPDATE SET window_start_ms = excluded.window_start_ms, \
                     claims = excluded.claims",
                )
                .bind(quota.claimer_id)
                .bind(target_id)
                .bind(to_i64(next.start_ms))
                .bind(i64::from(next.claims))
                .execute(&mut **tx)
                .await?;
                Ok(true)
            }
        }
    }
}

/// One-time packages and last-resort packages of a device.
const STOCK: &str = "SELECT COUNT(*) FILTER (WHERE NOT last_resort), \
     COUNT(*) FILTER (WHERE last_resort) FROM key_packages WHERE device_pk = $1";

fn stock_of(available: i64, last_resort: i64) -> KeyPackageStock {
    KeyPackageStock {
        available: u32::try_from(available).unwrap_or(u32::MAX),
        last_resort: last_resort > 0,
    }
}
