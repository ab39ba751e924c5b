//! All SQL lives under this module; the rest of the server calls [`Store`] methods.
//!
//! Today the backend is SQLite (WAL, `synchronous=FULL`, so a committed transaction survives a
//! power cut before the sender gets its acknowledgement). Writes are serialised in-process and
//! start with `BEGIN IMMEDIATE`, so a transaction that reads then writes never fails half-way on
//! a lock upgrade, and queue ids are committed in increasing order (the stream pushes "after the
//! last id sent"). The SQL is kept portable where that is cheap (`ON CONFLICT`, `RETURNING`,
//! multi-row `VALUES`). A PostgreSQL backend needs: its own migrations (`BIGINT GENERATED ...
//! AS IDENTITY`, `BOOLEAN`, `BYTEA`), `$n` placeholders, `FOR UPDATE SKIP LOCKED` in the
//! key-package claim, `SELECT ... FOR UPDATE` on the conversation row in `send`, and a per-device
//! sequence (or commit-ordered cursor) for queue ids, since identity values there are not
//! committed in order.

mod accounts;
mod delivery;
mod devices;
mod key_packages;
mod sessions;
mod sweep;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};
use tokio::sync::{Mutex, MutexGuard};

pub(crate) use accounts::NewAccount;
pub(crate) use delivery::{SendOutcome, Sender};
pub(crate) use devices::{ListUpdate, LoginOutcome};
pub(crate) use key_packages::{KeyPackageStock, UploadOutcome};
pub(crate) use sessions::SessionRow;

use crate::error::ServerError;

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// File name of the database inside the data directory.
const DATABASE_FILE: &str = "nightjar.db";

/// The server's database.
#[derive(Debug)]
pub(crate) struct Store {
    pool: SqlitePool,
    writer: Mutex<()>,
}

/// A write transaction holding the in-process write lock until it ends.
pub(crate) struct WriteTx<'a> {
    pub(crate) tx: Transaction<'static, Sqlite>,
    _lock: MutexGuard<'a, ()>,
}

impl WriteTx<'_> {
    /// Commits durably.
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

/// Converts a stored integer that is never negative.
pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Converts a client-supplied integer for storage; values past `i64::MAX` saturate.
pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Store {
    /// Opens (creating if needed) the database and brings its schema up to date.
    pub(crate) async fn open(
        data_dir: &Path,
        database_url: Option<&str>,
    ) -> Result<Self, ServerError> {
        let options = match database_url {
            None => {
                std::fs::create_dir_all(data_dir)?;
                SqliteConnectOptions::new().filename(data_dir.join(DATABASE_FILE))
            }
            Some(url) if url.starts_with("sqlite:") => SqliteConnectOptions::from_str(url)?,
            Some(_) => {
                return Err(ServerError::Config(
                    "only sqlite: database URLs are supported by this build".into(),
                ));
            }
        };
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await?;
        MIGRATIONS.run(&pool).await?;
        Ok(Self {
            pool,
            writer: Mutex::new(()),
        })
    }

    /// Starts a write transaction.
    pub(crate) async fn write(&self) -> Result<WriteTx<'_>, sqlx::Error> {
        let lock = self.writer.lock().await;
        let tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        Ok(WriteTx { tx, _lock: lock })
    }

    /// The read pool.
    pub(crate) fn reader(&self) -> &SqlitePool {
        &self.pool
    }

    /// Whether the database answers.
    pub(crate) async fn healthy(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }

    /// A named blob of server state.
    pub(crate) async fn server_state(&self, name: &str) -> Result<Option<Vec<u8>>, sqlx::Error> {
        sqlx::query_scalar("SELECT value FROM server_state WHERE name = ?")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
    }

    /// Stores `value` under `name` unless something is stored already; returns what is stored.
    pub(crate) async fn init_server_state(
        &self,
        name: &str,
        value: &[u8],
    ) -> Result<Vec<u8>, sqlx::Error> {
        let mut w = self.write().await?;
        sqlx::query(
            "INSERT INTO server_state (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(value)
        .execute(&mut *w.tx)
        .await?;
        let stored = sqlx::query_scalar("SELECT value FROM server_state WHERE name = ?")
            .bind(name)
            .fetch_one(&mut *w.tx)
            .await?;
        w.commit().await?;
        Ok(stored)
    }

    /// Closes every connection (checkpointing the WAL).
    pub(crate) async fn close(&self) {
        self.pool.close().await;
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// A store in a fresh temporary directory (removed when the guard drops).
    pub(crate) async fn temp_store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), None).await.unwrap();
        (store, dir)
    }
}
