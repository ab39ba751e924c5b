//! The key-package directory: one-time packages handed out at most once, and one reusable
//! last-resort package per device.

use sqlx::{QueryBuilder, Sqlite, Transaction};

use super::Store;

/// Key-package stock of one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct KeyPackageStock {
    /// Unclaimed one-time packages.
    pub(crate) available: u32,
    /// Whether a last-resort package is stored.
    pub(crate) last_resort: bool,
}

/// Result of an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UploadOutcome {
    /// Stored; the stock afterwards.
    Stored(KeyPackageStock),
    /// Storing them would exceed the per-device maximum; nothing was stored.
    TooMany,
}

/// Inserts `(last_resort, digest, bytes)` packages in one statement; a new last-resort package
/// replaces the old one, and a package already stored (same digest) is skipped.
pub(super) async fn insert_packages<'a>(
    tx: &mut Transaction<'static, Sqlite>,
    device_pk: i64,
    packages: impl Iterator<Item = (bool, &'a [u8; 32], &'a Vec<u8>)>,
) -> Result<(), sqlx::Error> {
    let packages: Vec<_> = packages.collect();
    if packages.is_empty() {
        return Ok(());
    }
    if packages.iter().any(|(last_resort, _, _)| *last_resort) {
        sqlx::query("DELETE FROM key_packages WHERE device_pk = ? AND last_resort = 1")
            .bind(device_pk)
            .execute(&mut **tx)
            .await?;
    }
    let mut q =
        QueryBuilder::new("INSERT INTO key_packages (device_pk, last_resort, digest, data) ");
    q.push_values(packages, |mut row, (last_resort, digest, data)| {
        row.push_bind(device_pk)
            .push_bind(i64::from(last_resort))
            .push_bind(&digest[..])
            .push_bind(data);
    });
    q.push(" ON CONFLICT (device_pk, digest) DO NOTHING");
    q.build().execute(&mut **tx).await?;
    Ok(())
}

async fn stock(
    executor: impl sqlx::SqliteExecutor<'_>,
    device_pk: i64,
) -> Result<KeyPackageStock, sqlx::Error> {
    let (available, last_resort): (i64, i64) = sqlx::query_as(
        "SELECT COALESCE(SUM(1 - last_resort), 0), COALESCE(SUM(last_resort), 0) \
         FROM key_packages WHERE device_pk = ?",
    )
    .bind(device_pk)
    .fetch_one(executor)
    .await?;
    Ok(KeyPackageStock {
        available: u32::try_from(available).unwrap_or(u32::MAX),
        last_resort: last_resort > 0,
    })
}

impl Store {
    /// The device's key-package stock.
    pub(crate) async fn key_package_stock(
        &self,
        device_pk: i64,
    ) -> Result<KeyPackageStock, sqlx::Error> {
        stock(self.reader(), device_pk).await
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
        let mut w = self.write().await?;
        let before = stock(&mut *w.tx, device_pk).await?;
        let total = u64::from(before.available) + u64::try_from(one_time.len()).unwrap_or(u64::MAX);
        if total > u64::from(max_stored) {
            return Ok(UploadOutcome::TooMany);
        }
        let packages = one_time
            .iter()
            .map(|(d, b)| (false, d, b))
            .chain(last_resort.map(|(d, b)| (true, d, b)));
        insert_packages(&mut w.tx, device_pk, packages).await?;
        sqlx::query("UPDATE devices SET sealed_identity = NULL WHERE id = ?")
            .bind(device_pk)
            .execute(&mut *w.tx)
            .await?;
        let after = stock(&mut *w.tx, device_pk).await?;
        w.commit().await?;
        Ok(UploadOutcome::Stored(after))
    }

    /// Claims one package for every active device of the account: a one-time package (deleted
    /// as it is handed out) or else the device's last-resort package (kept). Returns
    /// `(device id, package, is last resort)`; devices with no package at all are skipped.
    pub(crate) async fn claim_key_packages(
        &self,
        account_id: i64,
    ) -> Result<Vec<(String, Vec<u8>, bool)>, sqlx::Error> {
        let mut w = self.write().await?;
        let devices: Vec<(i64, String)> = sqlx::query_as(
            "SELECT id, device_id FROM devices WHERE account_id = ? AND status = 'active' \
             ORDER BY id",
        )
        .bind(account_id)
        .fetch_all(&mut *w.tx)
        .await?;
        let mut claimed = Vec::with_capacity(devices.len());
        for (pk, device_id) in devices {
            let one_time: Option<Vec<u8>> = sqlx::query_scalar(
                "DELETE FROM key_packages WHERE id = (SELECT id FROM key_packages \
                 WHERE device_pk = ? AND last_resort = 0 ORDER BY id LIMIT 1) RETURNING data",
            )
            .bind(pk)
            .fetch_optional(&mut *w.tx)
            .await?;
            if let Some(data) = one_time {
                claimed.push((device_id, data, false));
                continue;
            }
            let last: Option<Vec<u8>> = sqlx::query_scalar(
                "SELECT data FROM key_packages WHERE device_pk = ? AND last_resort = 1",
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
