//! Attachments: each blob's metadata, keyed by the SHA-256 of its capability (never the
//! capability), the parts an upload stored so far, and the devices that confirmed the
//! download. The bytes are in the object store (`crate::blobs`).
//!
//! A blob is `uploading`, then `complete` (readable), then `deleting` (its objects are being
//! deleted; the row goes last). Every change to a blob locks its row first (PostgreSQL), so
//! concurrent part uploads and confirmations of one blob take turns: the part that completes
//! the blob is always seen as such, and a device is counted once.

use sqlx::{ColumnIndex, Executor, IntoArguments};

use super::{Backend, Column, Db, Param, Store, dispatch, to_i64, to_u64};
use crate::blobs::BlobHash;

/// A blob to create.
#[derive(Debug, Clone)]
pub(crate) struct NewBlob {
    pub(crate) hash: BlobHash,
    pub(crate) account_id: i64,
    pub(crate) size: u64,
    pub(crate) part_size: u64,
    pub(crate) parts: u64,
    pub(crate) recipients: u32,
    /// The creation time as stored (rounded).
    pub(crate) created_at_ms: u64,
    /// The upload's deadline.
    pub(crate) expires_at_ms: u64,
    pub(crate) now_ms: u64,
    /// What the account's live blobs may add up to.
    pub(crate) quota_bytes: u64,
    /// Uploads the account may have under way.
    pub(crate) max_incomplete: u32,
}

/// Whether a blob was created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CreateOutcome {
    Created,
    /// The account's live blobs already take `used` bytes: this one does not fit.
    OverQuota {
        used: u64,
    },
    /// The account has as many uploads under way as it may.
    TooManyUploads,
}

/// A live blob (not expired, not being deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BlobRow {
    pub(crate) account_id: i64,
    pub(crate) size: u64,
    pub(crate) part_size: u64,
    pub(crate) parts: u64,
    pub(crate) complete: bool,
}

/// Where an upload stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Progress {
    /// The indexes of the parts not stored yet, ascending.
    pub(crate) missing: Vec<u64>,
    pub(crate) complete: bool,
}

/// What recording a part did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PartOutcome {
    Recorded(Progress),
    /// The blob completed before this part was recorded: nothing changed.
    Complete,
    /// No such live blob of this account (deleted or expired meanwhile).
    Gone,
}

/// What a download confirmation did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FetchOutcome {
    /// Counted (or counted before, for this device).
    Counted,
    /// That was the last recipient: the blob is marked `deleting`, its objects are to go.
    Finished { parts: u64 },
    /// No such readable blob.
    Gone,
}

impl Store {
    /// Creates a blob unless it would take the account past its quota or its uploads limit.
    pub(crate) async fn create_blob(&self, new: NewBlob) -> Result<CreateOutcome, sqlx::Error> {
        dispatch!(self, db => db.create_blob(new).await)
    }

    /// The blob, if live at `now_ms`.
    pub(crate) async fn blob(
        &self,
        hash: BlobHash,
        now_ms: u64,
    ) -> Result<Option<BlobRow>, sqlx::Error> {
        dispatch!(self, db => db.blob(hash, now_ms).await)
    }

    /// Records that part `index` of the account's blob is stored; the part that completes the
    /// blob moves its deadline to `created_at + lifetime_ms`.
    pub(crate) async fn record_part(
        &self,
        hash: BlobHash,
        account_id: i64,
        index: u64,
        now_ms: u64,
        lifetime_ms: u64,
    ) -> Result<PartOutcome, sqlx::Error> {
        dispatch!(self, db => db.record_part(hash, account_id, index, now_ms, lifetime_ms).await)
    }

    /// Where the account's upload of this blob stands; `None` if there is no such live blob.
    pub(crate) async fn upload_progress(
        &self,
        hash: BlobHash,
        account_id: i64,
        now_ms: u64,
    ) -> Result<Option<(BlobRow, Progress)>, sqlx::Error> {
        dispatch!(self, db => db.upload_progress(hash, account_id, now_ms).await)
    }

    /// Counts the device's download of a readable blob, once per device.
    pub(crate) async fn confirm_fetch(
        &self,
        hash: BlobHash,
        device_pk: i64,
        now_ms: u64,
    ) -> Result<FetchOutcome, sqlx::Error> {
        dispatch!(self, db => db.confirm_fetch(hash, device_pk, now_ms).await)
    }

    /// Bytes the account's live blobs take.
    pub(crate) async fn blob_usage(
        &self,
        account_id: i64,
        now_ms: u64,
    ) -> Result<u64, sqlx::Error> {
        dispatch!(self, db => db.blob_usage(account_id, now_ms).await.map(|(used, _)| used))
    }

    /// Marks every blob whose deadline passed for deletion; returns how many.
    pub(crate) async fn expire_blobs(&self, now_ms: u64) -> Result<u64, sqlx::Error> {
        dispatch!(self, db => db.expire_blobs(now_ms).await)
    }

    /// Up to `limit` blobs marked for deletion, with their part counts.
    pub(crate) async fn blobs_to_delete(
        &self,
        limit: i64,
    ) -> Result<Vec<(BlobHash, u64)>, sqlx::Error> {
        dispatch!(self, db => db.blobs_to_delete(limit).await)
    }

    /// Deletes the row (with its parts and confirmations) of a blob marked for deletion, once
    /// its objects are gone.
    pub(crate) async fn delete_blob_row(&self, hash: BlobHash) -> Result<(), sqlx::Error> {
        dispatch!(self, db => db.delete_blob_row(hash).await)
    }
}

/// `(account_id, size, part_size, parts, state, created_at_ms, expires_at_ms)`.
type Row = (i64, i64, i64, i64, String, i64, i64);

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
    /// `(bytes, uploads under way)` of the account's live blobs.
    async fn blob_usage_in<'e, E>(
        executor: E,
        account_id: i64,
        now_ms: u64,
    ) -> Result<(u64, u64), sqlx::Error>
    where
        E: Executor<'e, Database = DB>,
    {
        let (used, uploading): (i64, i64) = sqlx::query_as(
            "SELECT CAST(COALESCE(SUM(size), 0) AS BIGINT), \
             COUNT(*) FILTER (WHERE state = 'uploading') \
             FROM blobs WHERE account_id = $1 AND state <> 'deleting' AND expires_at_ms > $2",
        )
        .bind(account_id)
        .bind(to_i64(now_ms))
        .fetch_one(executor)
        .await?;
        Ok((to_u64(used), to_u64(uploading)))
    }

    pub(super) async fn blob_usage(
        &self,
        account_id: i64,
        now_ms: u64,
    ) -> Result<(u64, u64), sqlx::Error> {
        Self::blob_usage_in(self.reader(), account_id, now_ms).await
    }

    pub(super) async fn create_blob(&self, new: NewBlob) -> Result<CreateOutcome, sqlx::Error> {
        let mut w = self.write().await?;
        // The account row, locked: concurrent creations by one account take turns, so the
        // quota holds.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT id FROM accounts WHERE id = $1{}",
            DB::FOR_NO_KEY_UPDATE
        )))
        .bind(new.account_id)
        .fetch_optional(&mut *w.tx)
        .await?;
        let (used, uploading) = Self::blob_usage_in(&mut *w.tx, new.account_id, new.now_ms).await?;
        if uploading >= u64::from(new.max_incomplete) {
            return Ok(CreateOutcome::TooManyUploads);
        }
        if used.saturating_add(new.size) > new.quota_bytes {
            return Ok(CreateOutcome::OverQuota { used });
        }
        sqlx::query(
            "INSERT INTO blobs (hash, account_id, size, part_size, parts, recipients, fetches, \
             state, created_at_ms, expires_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, 0, 'uploading', $7, $8)",
        )
        .bind(&new.hash.0[..])
        .bind(new.account_id)
        .bind(to_i64(new.size))
        .bind(to_i64(new.part_size))
        .bind(to_i64(new.parts))
        .bind(i64::from(new.recipients))
        .bind(to_i64(new.created_at_ms))
        .bind(to_i64(new.expires_at_ms))
        .execute(&mut *w.tx)
        .await?;
        w.commit().await?;
        Ok(CreateOutcome::Created)
    }

    /// The row of a live blob; `lock` locks it for this transaction.
    async fn live_blob<'e, E>(
        executor: E,
        hash: BlobHash,
        now_ms: u64,
        lock: bool,
    ) -> Result<Option<(BlobRow, i64)>, sqlx::Error>
    where
        E: Executor<'e, Database = DB>,
    {
        let sql = format!(
            "SELECT account_id, size, part_size, parts, state, created_at_ms, expires_at_ms \
             FROM blobs WHERE hash = $1{}",
            if lock { DB::FOR_UPDATE } else { "" }
        );
        let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(&hash.0[..])
            .fetch_optional(executor)
            .await?;
        Ok(row.and_then(
            |(account_id, size, part_size, parts, state, created_at, expires_at)| {
                let live = state != "deleting" && expires_at > to_i64(now_ms);
                live.then(|| {
                    let row = BlobRow {
                        account_id,
                        size: to_u64(size),
                        part_size: to_u64(part_size),
                        parts: to_u64(parts),
                        complete: state == "complete",
                    };
                    (row, created_at)
                })
            },
        ))
    }

    pub(super) async fn blob(
        &self,
        hash: BlobHash,
        now_ms: u64,
    ) -> Result<Option<BlobRow>, sqlx::Error> {
        Ok(Self::live_blob(self.reader(), hash, now_ms, false)
            .await?
            .map(|(row, _)| row))
    }

    /// The parts of an upload not stored yet.
    async fn missing_parts<'e, E>(
        executor: E,
        hash: BlobHash,
        parts: u64,
    ) -> Result<Vec<u64>, sqlx::Error>
    where
        E: Executor<'e, Database = DB>,
    {
        let stored: Vec<i64> =
            sqlx::query_scalar("SELECT part FROM blob_parts WHERE blob_hash = $1 ORDER BY part")
                .bind(&hash.0[..])
                .fetch_all(executor)
                .await?;
        let mut stored = stored.into_iter().map(to_u64).peekable();
        Ok((0..parts)
            .filter(|index| {
                while stored.next_if(|s| s < index).is_some() {}
                stored.next_if_eq(index).is_none()
            })
            .collect())
    }

    pub(super) async fn record_part(
        &self,
        hash: BlobHash,
        account_id: i64,
        index: u64,
        now_ms: u64,
        lifetime_ms: u64,
    ) -> Result<PartOutcome, sqlx::Error> {
        let mut w = self.write().await?;
        let Some((blob, created_at)) = Self::live_blob(&mut *w.tx, hash, now_ms, true).await?
        else {
            return Ok(PartOutcome::Gone);
        };
        if blob.account_id != account_id {
            return Ok(PartOutcome::Gone);
        }
        if blob.complete {
            return Ok(PartOutcome::Complete);
        }
        sqlx::query(
            "INSERT INTO blob_parts (blob_hash, part) VALUES ($1, $2) \
             ON CONFLICT (blob_hash, part) DO NOTHING",
        )
        .bind(&hash.0[..])
        .bind(to_i64(index))
        .execute(&mut *w.tx)
        .await?;
        let missing = Self::missing_parts(&mut *w.tx, hash, blob.parts).await?;
        let complete = missing.is_empty();
        if complete {
            // Complete: readable until its lifetime ends; the part list is no longer needed.
            sqlx::query("UPDATE blobs SET state = 'complete', expires_at_ms = $1 WHERE hash = $2")
                .bind(created_at.saturating_add(to_i64(lifetime_ms)))
                .bind(&hash.0[..])
                .execute(&mut *w.tx)
                .await?;
            sqlx::query("DELETE FROM blob_parts WHERE blob_hash = $1")
                .bind(&hash.0[..])
                .execute(&mut *w.tx)
                .await?;
        }
        w.commit().await?;
        Ok(PartOutcome::Recorded(Progress { missing, complete }))
    }

    pub(super) async fn upload_progress(
        &self,
        hash: BlobHash,
        account_id: i64,
        now_ms: u64,
    ) -> Result<Option<(BlobRow, Progress)>, sqlx::Error> {
        // Both reads in one transaction, so a part completing the blob in between cannot make
        // an incomplete blob look as if it missed nothing, or the reverse.
        let mut tx = self.reader().begin().await?;
        let Some((blob, _)) = Self::live_blob(&mut *tx, hash, now_ms, false).await? else {
            return Ok(None);
        };
        if blob.account_id != account_id {
            return Ok(None);
        }
        let missing = if blob.complete {
            Vec::new()
        } else {
            Self::missing_parts(&mut *tx, hash, blob.parts).await?
        };
        tx.commit().await?;
        let complete = blob.complete;
        Ok(Some((blob, Progress { missing, complete })))
    }

    pub(super) async fn confirm_fetch(
        &self,
        hash: BlobHash,
        device_pk: i64,
        now_ms: u64,
    ) -> Result<FetchOutcome, sqlx::Error> {
        let mut w = self.write().await?;
        let row: Option<(i64, String, i64, i64, i64)> =
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT parts, state, expires_at_ms, recipients, fetches FROM blobs \
                 WHERE hash = $1{}",
                DB::FOR_UPDATE
            )))
            .bind(&hash.0[..])
            .fetch_optional(&mut *w.tx)
            .await?;
        let Some((parts, state, expires_at, recipients, fetches)) = row else {
            return Ok(FetchOutcome::Gone);
        };
        if state != "complete" || expires_at <= to_i64(now_ms) {
            return Ok(FetchOutcome::Gone);
        }
        let inserted = sqlx::query(
            "INSERT INTO blob_fetches (blob_hash, device_pk) VALUES ($1, $2) \
             ON CONFLICT (blob_hash, device_pk) DO NOTHING",
        )
        .bind(&hash.0[..])
        .bind(device_pk)
        .execute(&mut *w.tx)
        .await?;
        if DB::rows_affected(&inserted) == 0 {
            return Ok(FetchOutcome::Counted);
        }
        // A counter, not a count of rows: a device removed later still counted.
        let fetches = fetches.saturating_add(1);
        let finished = fetches >= recipients;
        sqlx::query(
            "UPDATE blobs SET fetches = $1, \
             state = CASE WHEN $2 THEN 'deleting' ELSE state END WHERE hash = $3",
        )
        .bind(fetches)
        .bind(finished)
        .bind(&hash.0[..])
        .execute(&mut *w.tx)
        .await?;
        w.commit().await?;
        Ok(if finished {
            FetchOutcome::Finished {
                parts: to_u64(parts),
            }
        } else {
            FetchOutcome::Counted
        })
    }

    pub(super) async fn expire_blobs(&self, now_ms: u64) -> Result<u64, sqlx::Error> {
        let mut w = self.write().await?;
        let done = sqlx::query(
            "UPDATE blobs SET state = 'deleting' \
             WHERE expires_at_ms <= $1 AND state <> 'deleting'",
        )
        .bind(to_i64(now_ms))
        .execute(&mut *w.tx)
        .await?;
        w.commit().await?;
        Ok(DB::rows_affected(&done))
    }

    pub(super) async fn blobs_to_delete(
        &self,
        limit: i64,
    ) -> Result<Vec<(BlobHash, u64)>, sqlx::Error> {
        let rows: Vec<(Vec<u8>, i64)> =
            sqlx::query_as("SELECT hash, parts FROM blobs WHERE state = 'deleting' LIMIT $1")
                .bind(limit)
                .fetch_all(self.reader())
                .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(hash, parts)| {
                let hash: [u8; 32] = hash.try_into().ok()?;
                Some((BlobHash(hash), to_u64(parts)))
            })
            .collect())
    }

    pub(super) async fn delete_blob_row(&self, hash: BlobHash) -> Result<(), sqlx::Error> {
        let mut w = self.write().await?;
        sqlx::query("DELETE FROM blobs WHERE hash = $1 AND state = 'deleting'")
            .bind(&hash.0[..])
            .execute(&mut *w.tx)
            .await?;
        w.commit().await
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::each_backend;
    use super::*;
    use crate::store::NewAccount;

    const NOW: u64 = 1_800_000_000_000;

    async fn account(store: &Store) -> i64 {
        store
            .create_account(NewAccount {
                username: "alice".into(),
                opaque_record: vec![1],
                identity_key: vec![2; 32],
                device_list: vec![3],
                device_id: "0000000000000001".into(),
                signature_key: vec![4; 32],
                key_packages: vec![],
                last_resort: ([7; 32], vec![7]),
                token_hash: [8; 32],
                expires_at_ms: u64::MAX / 2,
                now_ms: 1,
            })
            .await
            .unwrap()
            .unwrap();
        store
            .session(&[8; 32], 5)
            .await
            .unwrap()
            .unwrap()
            .account_id
    }

    fn new_blob(hash: BlobHash, account_id: i64, size: u64) -> NewBlob {
        NewBlob {
            hash,
            account_id,
            size,
            part_size: 4,
            parts: size.div_ceil(4),
            recipients: 2,
            created_at_ms: NOW,
            expires_at_ms: NOW + 1_000,
            now_ms: NOW,
            quota_bytes: 20,
            max_incomplete: 2,
        }
    }

    #[tokio::test]
    async fn parts_complete_a_blob_once_and_fetches_count_once() {
        for store in each_backend("blob_lifecycle").await {
            lifecycle_on(&store).await;
        }
    }

    async fn lifecycle_on(store: &Store) {
        let alice = account(store).await;
        let device = store.session(&[8; 32], 5).await.unwrap().unwrap().device_pk;
        let (a, b, c) = (BlobHash([1; 32]), BlobHash([2; 32]), BlobHash([3; 32]));
        let created = |h, size| store.create_blob(new_blob(h, alice, size));
        assert_eq!(created(a, 10).await.unwrap(), CreateOutcome::Created);
        // 10 of 20 bytes used: 11 more do not fit, and nothing is reserved.
        assert_eq!(
            created(b, 11).await.unwrap(),
            CreateOutcome::OverQuota { used: 10 }
        );
        assert_eq!(store.blob_usage(alice, NOW).await.unwrap(), 10);
        assert_eq!(created(b, 4).await.unwrap(), CreateOutcome::Created);
        assert_eq!(created(c, 1).await.unwrap(), CreateOutcome::TooManyUploads);
        // Parts in any order, one twice; another account records nothing.
        let record = |index| store.record_part(a, alice, index, NOW, 5_000);
        assert_eq!(
            store
                .record_part(a, alice + 1, 0, NOW, 5_000)
                .await
                .unwrap(),
            PartOutcome::Gone
        );
        let Ok(PartOutcome::Recorded(p)) = record(2).await else {
            panic!()
        };
        assert_eq!((p.missing, p.complete), (vec![0, 1], false));
        record(2).await.unwrap();
        record(0).await.unwrap();
        let (_, progress) = store.upload_progress(a, alice, NOW).await.unwrap().unwrap();
        assert_eq!(progress.missing, vec![1]);
        assert!(
            store
                .upload_progress(a, alice + 1, NOW)
                .await
                .unwrap()
                .is_none()
        );
        // Not readable yet: a confirmation counts nothing.
        assert_eq!(
            store.confirm_fetch(a, device, NOW).await.unwrap(),
            FetchOutcome::Gone
        );
        let Ok(PartOutcome::Recorded(p)) = record(1).await else {
            panic!()
        };
        assert!(p.complete && p.missing.is_empty());
        assert_eq!(record(1).await.unwrap(), PartOutcome::Complete);
        // Completed: it lives until created + lifetime.
        assert!(store.blob(a, NOW + 4_999).await.unwrap().unwrap().complete);
        assert!(store.blob(a, NOW + 5_000).await.unwrap().is_none());
        // One device, twice: counted once (two recipients).
        for _ in 0..2 {
            assert_eq!(
                store.confirm_fetch(a, device, NOW).await.unwrap(),
                FetchOutcome::Counted
            );
        }
        // The incomplete blob expires at its upload deadline.
        assert_eq!(store.expire_blobs(NOW + 1_000).await.unwrap(), 1);
        assert_eq!(store.blobs_to_delete(10).await.unwrap(), vec![(b, 1)]);
        store.delete_blob_row(b).await.unwrap();
        assert!(store.blobs_to_delete(10).await.unwrap().is_empty());
        assert_eq!(store.blob_usage(alice, NOW + 1_000).await.unwrap(), 10);
    }
}
