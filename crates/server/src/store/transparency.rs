//! The key-transparency directory's storage: AKD's `Database` trait over the server's own
//! database (AKD ships only an in-memory store), on SQLite and PostgreSQL alike, plus the
//! signed epochs and the accounts whose entries are due for publication.
//!
//! AKD's tree nodes and its root record live in `kt_nodes` under AKD's binary ids, encoded
//! with postcard; every value a username ever had lives in `kt_values`, one row per epoch, so
//! history and "as of epoch" reads are plain indexed queries. A write batch (AKD commits an
//! epoch as one) is one transaction, so a crash leaves the directory at the previous epoch or
//! at the new one, never between.

use std::collections::HashMap;

use akd::errors::StorageError;
use akd::storage::types::{DbRecord, KeyData, StorageType, ValueState, ValueStateRetrievalFlag};
use akd::storage::{Database as AkdDatabase, DbSetState, Storable};
use akd::{AkdLabel, AkdValue};
use sqlx::{ColumnIndex, Executor, IntoArguments, QueryBuilder};

use super::{Backend, Backends, Column, Db, Param, Store, dispatch, to_i64, to_u64};

/// Rows per multi-row statement (at most three parameters each: well under SQLite's limit).
const CHUNK: usize = 1_000;

/// An account whose directory entry is behind its device list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DueEntry {
    pub(crate) account_id: i64,
    pub(crate) username: String,
    pub(crate) identity_key: Vec<u8>,
    pub(crate) device_list: Vec<u8>,
    pub(crate) device_list_version: u64,
}

/// A published epoch as stored: its root, the server's signature, and the append-only proof
/// from the epoch before (AKD's protobuf encoding).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredEpoch {
    pub(crate) epoch: u64,
    pub(crate) root: Vec<u8>,
    pub(crate) signature: Vec<u8>,
    pub(crate) audit_proof: Vec<u8>,
}

/// AKD's storage, over the server's database. Cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct KtStorage {
    backend: Backends,
}

/// Held while this node publishes: on PostgreSQL a session-level advisory lock on a
/// connection of its own (released when the connection closes, also if the node dies).
#[derive(Debug)]
pub(crate) struct KtPublishLock(Option<sqlx::PgConnection>);

impl KtPublishLock {
    /// Releases the lock at once (dropping it releases it when the server notices the closed
    /// connection, which may take a moment).
    pub(crate) async fn release(mut self) {
        if let Some(mut conn) = self.0.take() {
            let _ = sqlx::query("SELECT pg_advisory_unlock($1, hashtext(current_schema()))")
                .bind(PUBLISH_LOCK_CLASS)
                .execute(&mut conn)
                .await;
            let _ = sqlx::Connection::close(conn).await;
        }
    }
}

/// The advisory lock class of the directory's publisher ("njkt"); the second key is the
/// schema's, so directories in different schemas of one database do not exclude each other.
const PUBLISH_LOCK_CLASS: i32 = 0x6e6a_6b74;

impl Store {
    /// Takes the cluster-wide publishing lock, or `None` if another node holds it. (On
    /// SQLite one process owns the database; the caller excludes its own tasks.)
    pub(crate) async fn kt_publish_lock(&self) -> Result<Option<KtPublishLock>, sqlx::Error> {
        match &self.backend {
            Backends::Sqlite(_) => Ok(Some(KtPublishLock(None))),
            Backends::Postgres(db) => {
                let mut conn = db.reader().acquire().await?.detach();
                let got: bool = sqlx::query_scalar(
                    "SELECT pg_try_advisory_lock($1, hashtext(current_schema()))",
                )
                .bind(PUBLISH_LOCK_CLASS)
                .fetch_one(&mut conn)
                .await?;
                Ok(got.then_some(KtPublishLock(Some(conn))))
            }
        }
    }

    /// Benchmarks: inserts accounts `bench_{first}..` in bulk, each due for publication.
    pub(crate) async fn bench_insert_accounts(
        &self,
        first: usize,
        count: usize,
    ) -> Result<(), sqlx::Error> {
        dispatch!(self, db => db.bench_insert_accounts(first, count).await)
    }

    /// Benchmarks: gives every account a new device-list version.
    pub(crate) async fn bench_bump_lists(&self) -> Result<(), sqlx::Error> {
        dispatch!(self, db => {
            let mut w = db.write().await?;
            sqlx::query("UPDATE accounts SET device_list_version = device_list_version + 1")
                .execute(&mut *w.tx)
                .await?;
            w.commit().await
        })
    }

    /// The directory's storage on this database.
    pub(crate) fn kt_storage(&self) -> KtStorage {
        KtStorage {
            backend: self.backend.clone(),
        }
    }

    /// Up to `limit` accounts whose directory entry is behind their device list.
    pub(crate) async fn kt_due(&self, limit: usize) -> Result<Vec<DueEntry>, sqlx::Error> {
        dispatch!(self, db => db.kt_due(limit).await)
    }

    /// Records that `entries` are in the directory at their device-list versions (an entry
    /// that changed again since stays due).
    pub(crate) async fn kt_mark_published(&self, entries: &[DueEntry]) -> Result<(), sqlx::Error> {
        dispatch!(self, db => db.kt_mark_published(entries).await)
    }

    /// Stores a signed epoch (once; a second write of the same epoch is ignored).
    pub(crate) async fn kt_put_epoch(
        &self,
        epoch: &StoredEpoch,
        now_ms: u64,
    ) -> Result<(), sqlx::Error> {
        dispatch!(self, db => db.kt_put_epoch(epoch, now_ms).await)
    }

    /// A stored signed epoch.
    pub(crate) async fn kt_epoch(&self, epoch: u64) -> Result<Option<StoredEpoch>, sqlx::Error> {
        dispatch!(self, db => db.kt_epoch(epoch).await)
    }

    /// The stored signed epochs after `after`, oldest first, at most `limit`, ending after
    /// the epoch that takes their append-only proofs to `max_bytes` (never empty while there
    /// is one): proofs past that are never read.
    pub(crate) async fn kt_epochs_after(
        &self,
        after: u64,
        limit: u32,
        max_bytes: usize,
    ) -> Result<Vec<StoredEpoch>, sqlx::Error> {
        dispatch!(self, db => db.kt_epochs_after(after, limit, max_bytes).await)
    }

    /// The newest stored signed epoch.
    pub(crate) async fn kt_latest_epoch(&self) -> Result<Option<StoredEpoch>, sqlx::Error> {
        dispatch!(self, db => db.kt_latest_epoch().await)
    }
}

fn storage_error(e: sqlx::Error) -> StorageError {
    StorageError::Connection(e.to_string())
}

fn codec_error(e: postcard::Error) -> StorageError {
    StorageError::Other(format!("directory record codec: {e}"))
}

/// An `accounts` row as [`DueEntry`] reads it.
type DueRow = (i64, String, Vec<u8>, Vec<u8>, i64);

/// A `kt_epochs` row as [`StoredEpoch`] reads it.
type EpochRow = (i64, Vec<u8>, Vec<u8>, Vec<u8>);

/// The `kt_values` row a value state is stored as, read back.
type ValueRow = (Vec<u8>, i64, i64, Vec<u8>, Vec<u8>, i64);

fn value_state(row: ValueRow) -> Result<ValueState, StorageError> {
    let (label, epoch, version, value, node_label, node_label_len) = row;
    let node_label: [u8; 32] = node_label
        .try_into()
        .map_err(|_| StorageError::Other("stored node label is not 32 bytes".into()))?;
    Ok(DbRecord::build_user_state(
        label,
        value,
        to_u64(version),
        u32::try_from(node_label_len).unwrap_or(0),
        node_label,
        to_u64(epoch),
    ))
}

/// A `SELECT` of whole `kt_values` rows ([`ValueRow`]) followed by `$rest`.
macro_rules! select_values {
    ($rest:literal) => {
        concat!(
            "SELECT label, epoch, version, value, node_label, node_label_len FROM kt_values ",
            $rest
        )
    };
}

#[async_trait::async_trait]
impl AkdDatabase for KtStorage {
    async fn set(&self, record: DbRecord) -> Result<(), StorageError> {
        self.batch_set(vec![record], DbSetState::General).await
    }

    async fn batch_set(
        &self,
        records: Vec<DbRecord>,
        _state: DbSetState,
    ) -> Result<(), StorageError> {
        let mut nodes = Vec::new();
        let mut values = Vec::new();
        for record in records {
            match record {
                DbRecord::ValueState(v) => values.push(v),
                other => {
                    let bytes = postcard::to_allocvec(&other).map_err(codec_error)?;
                    nodes.push((other.get_full_binary_id(), bytes));
                }
            }
        }
        dispatch!(backends: self.backend, db => db.kt_write(&nodes, &values).await)
            .map_err(storage_error)
    }

    async fn get<St: Storable>(&self, id: &St::StorageKey) -> Result<DbRecord, StorageError> {
        let mut found = self.batch_get::<St>(std::slice::from_ref(id)).await?;
        found
            .pop()
            .ok_or_else(|| StorageError::NotFound(format!("{:?} {id:?}", St::data_type())))
    }

    async fn batch_get<St: Storable>(
        &self,
        ids: &[St::StorageKey],
    ) -> Result<Vec<DbRecord>, StorageError> {
        let binary: Vec<Vec<u8>> = ids.iter().map(St::get_full_binary_key_id).collect();
        if St::data_type() == StorageType::ValueState {
            let mut out = Vec::new();
            for id in &binary {
                let key = ValueState::key_from_full_binary(id).map_err(StorageError::Other)?;
                let row = dispatch!(backends: self.backend, db =>
                    db.kt_value_at(&key.0, key.1).await)
                .map_err(storage_error)?;
                if let Some(row) = row {
                    out.push(DbRecord::ValueState(value_state(row)?));
                }
            }
            return Ok(out);
        }
        let rows = dispatch!(backends: self.backend, db => db.kt_nodes(&binary).await)
            .map_err(storage_error)?;
        rows.iter()
            .map(|bytes| postcard::from_bytes::<DbRecord>(bytes).map_err(codec_error))
            .collect()
    }

    async fn get_user_data(&self, username: &AkdLabel) -> Result<KeyData, StorageError> {
        let rows = dispatch!(backends: self.backend, db => db.kt_values_of(&username.0).await)
            .map_err(storage_error)?;
        if rows.is_empty() {
            return Err(StorageError::NotFound(format!("ValueState {username:?}")));
        }
        let states = rows
            .into_iter()
            .map(value_state)
            .collect::<Result<_, _>>()?;
        Ok(KeyData { states })
    }

    async fn get_user_state(
        &self,
        username: &AkdLabel,
        flag: ValueStateRetrievalFlag,
    ) -> Result<ValueState, StorageError> {
        let row = dispatch!(backends: self.backend, db =>
            db.kt_value_by_flag(&username.0, flag).await)
        .map_err(storage_error)?;
        match row {
            Some(row) => value_state(row),
            None => Err(StorageError::NotFound(format!("ValueState {username:?}"))),
        }
    }

    async fn get_user_state_versions(
        &self,
        usernames: &[AkdLabel],
        flag: ValueStateRetrievalFlag,
    ) -> Result<HashMap<AkdLabel, (u64, AkdValue)>, StorageError> {
        let bound = match flag {
            ValueStateRetrievalFlag::MaxEpoch => Some(i64::MAX),
            ValueStateRetrievalFlag::LeqEpoch(e) => Some(to_i64(e)),
            _ => None,
        };
        let mut out = HashMap::new();
        if let Some(bound) = bound {
            let labels: Vec<&[u8]> = usernames.iter().map(|l| l.0.as_slice()).collect();
            for chunk in labels.chunks(CHUNK) {
                let rows = dispatch!(backends: self.backend, db =>
                    db.kt_latest_values(chunk, bound).await)
                .map_err(storage_error)?;
                for (label, version, value) in rows {
                    out.insert(AkdLabel(label), (to_u64(version), AkdValue(value)));
                }
            }
            return Ok(out);
        }
        for username in usernames {
            if let Ok(state) = self.get_user_state(username, flag).await {
                out.insert(username.clone(), (state.version, state.value));
            }
        }
        Ok(out)
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
    async fn kt_write(
        &self,
        nodes: &[(Vec<u8>, Vec<u8>)],
        values: &[ValueState],
    ) -> Result<(), sqlx::Error> {
        let mut w = self.write().await?;
        for chunk in nodes.chunks(CHUNK) {
            let mut q = QueryBuilder::<DB>::new("INSERT INTO kt_nodes (id, record) ");
            q.push_values(chunk, |mut row, (id, record)| {
                row.push_bind(id.clone()).push_bind(record.clone());
            });
            q.push(" ON CONFLICT (id) DO UPDATE SET record = excluded.record");
            q.build().execute(&mut *w.tx).await?;
        }
        for chunk in values.chunks(CHUNK) {
            let mut q = QueryBuilder::<DB>::new(
                "INSERT INTO kt_values (label, epoch, version, value, node_label, \
                 node_label_len) ",
            );
            q.push_values(chunk, |mut row, v| {
                row.push_bind(v.username.0.clone())
                    .push_bind(to_i64(v.epoch))
                    .push_bind(to_i64(v.version))
                    .push_bind(v.value.0.clone())
                    .push_bind(v.label.label_val.to_vec())
                    .push_bind(i64::from(v.label.label_len));
            });
            q.push(
                " ON CONFLICT (label, epoch) DO UPDATE SET version = excluded.version, \
                 value = excluded.value, node_label = excluded.node_label, \
                 node_label_len = excluded.node_label_len",
            );
            q.build().execute(&mut *w.tx).await?;
        }
        w.commit().await
    }

    async fn kt_nodes(&self, ids: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, sqlx::Error> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(CHUNK) {
            let mut q = QueryBuilder::<DB>::new("SELECT record FROM kt_nodes WHERE id IN (");
            let mut list = q.separated(", ");
            for id in chunk {
                list.push_bind(id.clone());
            }
            q.push(")");
            let rows: Vec<(Vec<u8>,)> = q.build_query_as().fetch_all(self.reader()).await?;
            out.extend(rows.into_iter().map(|(r,)| r));
        }
        Ok(out)
    }

    async fn kt_value_at(&self, label: &[u8], epoch: u64) -> Result<Option<ValueRow>, sqlx::Error> {
        sqlx::query_as(select_values!("WHERE label = $1 AND epoch = $2"))
            .bind(label)
            .bind(to_i64(epoch))
            .fetch_optional(self.reader())
            .await
    }

    async fn kt_values_of(&self, label: &[u8]) -> Result<Vec<ValueRow>, sqlx::Error> {
        sqlx::query_as(select_values!("WHERE label = $1 ORDER BY epoch"))
            .bind(label)
            .fetch_all(self.reader())
            .await
    }

    async fn kt_value_by_flag(
        &self,
        label: &[u8],
        flag: ValueStateRetrievalFlag,
    ) -> Result<Option<ValueRow>, sqlx::Error> {
        let (sql, n) = match flag {
            ValueStateRetrievalFlag::SpecificVersion(v) => (
                select_values!("WHERE label = $1 AND version = $2 LIMIT 1"),
                to_i64(v),
            ),
            ValueStateRetrievalFlag::SpecificEpoch(e) => (
                select_values!("WHERE label = $1 AND epoch = $2 LIMIT 1"),
                to_i64(e),
            ),
            ValueStateRetrievalFlag::LeqEpoch(e) => (
                select_values!("WHERE label = $1 AND epoch <= $2 ORDER BY epoch DESC LIMIT 1"),
                to_i64(e),
            ),
            ValueStateRetrievalFlag::MaxEpoch => (
                select_values!("WHERE label = $1 AND epoch <= $2 ORDER BY epoch DESC LIMIT 1"),
                i64::MAX,
            ),
            ValueStateRetrievalFlag::MinEpoch => (
                select_values!("WHERE label = $1 AND epoch >= $2 ORDER BY epoch ASC LIMIT 1"),
                0,
            ),
        };
        sqlx::query_as(sql)
            .bind(label)
            .bind(n)
            .fetch_optional(self.reader())
            .await
    }

    async fn kt_latest_values(
        &self,
        labels: &[&[u8]],
        max_epoch: i64,
    ) -> Result<Vec<(Vec<u8>, i64, Vec<u8>)>, sqlx::Error> {
        let mut q = QueryBuilder::<DB>::new(
            "SELECT v.label, v.version, v.value FROM kt_values v WHERE v.epoch = \
             (SELECT MAX(w.epoch) FROM kt_values w WHERE w.label = v.label AND w.epoch <= ",
        );
        q.push_bind(max_epoch);
        q.push(") AND v.label IN (");
        let mut list = q.separated(", ");
        for label in labels {
            list.push_bind(label.to_vec());
        }
        q.push(")");
        q.build_query_as().fetch_all(self.reader()).await
    }

    async fn bench_insert_accounts(&self, first: usize, count: usize) -> Result<(), sqlx::Error> {
        let mut w = self.write().await?;
        let rows: Vec<usize> = (first..first + count).collect();
        for chunk in rows.chunks(CHUNK / 2) {
            let mut q = QueryBuilder::<DB>::new(
                "INSERT INTO accounts (username, opaque_record, identity_key, device_list, \
                 device_list_version, created_at_ms) ",
            );
            q.push_values(chunk, |mut row, i| {
                let mut key = [0u8; 32];
                key[..8].copy_from_slice(&(*i as u64).to_be_bytes());
                row.push_bind(format!("bench_{i}"))
                    .push_bind(vec![0u8; 1])
                    .push_bind(key.to_vec())
                    .push_bind(vec![(*i % 251) as u8; 200])
                    .push_bind(1i64)
                    .push_bind(0i64);
            });
            q.build().execute(&mut *w.tx).await?;
        }
        w.commit().await
    }

    async fn kt_due(&self, limit: usize) -> Result<Vec<DueEntry>, sqlx::Error> {
        let rows: Vec<DueRow> = sqlx::query_as(
            "SELECT id, username, identity_key, device_list, device_list_version FROM accounts \
             WHERE device_list_version <> kt_published_version ORDER BY id LIMIT $1",
        )
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(self.reader())
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(account_id, username, identity_key, device_list, version)| DueEntry {
                    account_id,
                    username,
                    identity_key,
                    device_list,
                    device_list_version: to_u64(version),
                },
            )
            .collect())
    }

    async fn kt_mark_published(&self, entries: &[DueEntry]) -> Result<(), sqlx::Error> {
        let mut w = self.write().await?;
        for e in entries {
            sqlx::query("UPDATE accounts SET kt_published_version = $1 WHERE id = $2")
                .bind(to_i64(e.device_list_version))
                .bind(e.account_id)
                .execute(&mut *w.tx)
                .await?;
        }
        w.commit().await
    }

    async fn kt_put_epoch(&self, e: &StoredEpoch, now_ms: u64) -> Result<(), sqlx::Error> {
        let mut w = self.write().await?;
        sqlx::query(
            "INSERT INTO kt_epochs (epoch, root, signature, audit_proof, published_at_ms) \
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT (epoch) DO NOTHING",
        )
        .bind(to_i64(e.epoch))
        .bind(e.root.as_slice())
        .bind(e.signature.as_slice())
        .bind(e.audit_proof.as_slice())
        .bind(to_i64(super::stored_time(now_ms)))
        .execute(&mut *w.tx)
        .await?;
        w.commit().await
    }

    async fn kt_epoch(&self, epoch: u64) -> Result<Option<StoredEpoch>, sqlx::Error> {
        let row: Option<EpochRow> = sqlx::query_as(
            "SELECT epoch, root, signature, audit_proof FROM kt_epochs WHERE epoch = $1",
        )
        .bind(to_i64(epoch))
        .fetch_optional(self.reader())
        .await?;
        Ok(row.map(stored_epoch))
    }

    async fn kt_epochs_after(
        &self,
        after: u64,
        limit: u32,
        max_bytes: usize,
    ) -> Result<Vec<StoredEpoch>, sqlx::Error> {
        // Sizes first (LENGTH reads no blob), then only the proofs of the page.
        let rows: Vec<EpochRow> = sqlx::query_as(
            "SELECT k.epoch, k.root, k.signature, k.audit_proof FROM kt_epochs k JOIN ( \
               SELECT epoch, SUM(size) OVER (ORDER BY epoch) - size AS before FROM ( \
                 SELECT epoch, LENGTH(audit_proof) AS size FROM kt_epochs WHERE epoch > $1 \
                 ORDER BY epoch LIMIT $2) AS sized \
             ) AS page ON page.epoch = k.epoch \
             WHERE page.before < $3 ORDER BY k.epoch",
        )
        .bind(to_i64(after))
        .bind(i64::from(limit))
        .bind(i64::try_from(max_bytes).unwrap_or(i64::MAX))
        .fetch_all(self.reader())
        .await?;
        Ok(rows.into_iter().map(stored_epoch).collect())
    }

    async fn kt_latest_epoch(&self) -> Result<Option<StoredEpoch>, sqlx::Error> {
        let row: Option<EpochRow> = sqlx::query_as(
            "SELECT epoch, root, signature, audit_proof FROM kt_epochs \
             ORDER BY epoch DESC LIMIT 1",
        )
        .fetch_optional(self.reader())
        .await?;
        Ok(row.map(stored_epoch))
    }
}

fn stored_epoch(
    (epoch, root, signature, audit_proof): (i64, Vec<u8>, Vec<u8>, Vec<u8>),
) -> StoredEpoch {
    StoredEpoch {
        epoch: to_u64(epoch),
        root,
        signature,
        audit_proof,
    }
}
