//! All SQL lives under this module; the rest of the server calls [`Store`] methods.
//!
//! Two backends share one code path. The logic is written once, generic over [`Backend`]
//! (implemented for `sqlx::Sqlite` and `sqlx::Postgres`), in `impl<DB> Db<DB>` blocks; [`Store`]
//! holds one of the two and dispatches. The SQL is the common dialect of both (`$n`
//! placeholders, `ON CONFLICT`, `RETURNING`, `COUNT(*) FILTER`, row values); what differs lives
//! in `backend.rs` and nowhere else: how a write transaction starts, `FOR UPDATE` /
//! `SKIP LOCKED`, which errors are worth retrying, and the bulk statements of the send path
//! (`UNNEST` arrays on PostgreSQL, chunked multi-row `VALUES` on SQLite).
//!
//! - SQLite (the default): WAL, `synchronous=FULL`, so a committed transaction survives a power
//!   cut before the sender gets its acknowledgement. Acknowledgements alone commit without an
//!   fsync of their own (`Db::write_relaxed`): losing one resends an envelope, never loses one. Writes are serialised in-process and start
//!   with `BEGIN IMMEDIATE`, so a transaction that reads then writes never fails half-way on a
//!   lock upgrade.
//! - PostgreSQL: any number of server nodes share one database (READ COMMITTED). Writers run
//!   concurrently; rows that decide an outcome are locked (`SELECT ... FOR UPDATE` on the
//!   conversation, on the account for logins, on the device for uploads and acks, on the
//!   recipient devices in ascending id order for queueing, `FOR UPDATE SKIP LOCKED` on key
//!   packages). Locks are taken in one global order (conversations, then devices, then their
//!   queue rows), and a deadlock or serialisation failure that still happens is retried.
//!
//! Queue ids are per device: `devices.queue_seq` is the last id handed out and is advanced in
//! the transaction that inserts the rows, with the device row locked, so a device's ids are
//! committed in increasing order on every backend and "after the last id sent" never skips an
//! envelope. `devices.queue_len` counts queued envelopes, so the queue limit is checked without
//! counting rows. Sends go through group-commit writers (`batch.rs`), acknowledgements
//! through writers of their own (`acks.rs`); on SQLite both run on a thread of their own
//! (`writer_thread.rs`), so that the task holding the only write lock is never queued behind
//! request handlers between its statements. Everything a node keeps
//! between requests that another node may need lives here too: started OPAQUE logins
//! (`logins.rs`), the OPAQUE setup and the cluster id (`server_state.rs`).

mod accounts;
mod acks;
mod backend;
mod batch;
mod blobs;
mod consent;
mod delivery;
mod devices;
mod groups;
mod key_packages;
mod logins;
mod reports;
mod sealed;
mod send;
mod server_state;
mod sessions;
mod sweep;
mod transparency;
mod writer_thread;

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection as _, Database, Decode, Encode, Pool, Postgres, Sqlite, Transaction, Type};
use tokio::sync::{Mutex, MutexGuard};

pub(crate) use accounts::NewAccount;
pub(crate) use backend::Backend;
pub(crate) use batch::{CommitSink, NoSink, Queued, QueuedMessage};
pub(crate) use blobs::{CreateOutcome, FetchOutcome, NewBlob, PartOutcome};
pub(crate) use consent::SendQuota;
pub(crate) use delivery::{SendOutcome, Sender};
pub(crate) use devices::{ListUpdate, LoginOutcome};
pub(crate) use groups::StoredGroup;
pub(crate) use key_packages::{ClaimQuota, KeyPackageStock, UploadOutcome};
pub(crate) use logins::{LoginCaps, StoredLogin};
pub(crate) use reports::{NewReport, StoredReport};
pub(crate) use sealed::Registration;
pub(crate) use send::Submission;
pub(crate) use sessions::SessionRow;
pub(crate) use sweep::Lifetimes;
pub(crate) use transparency::{KtStorage, StoredEpoch};

use crate::config::GroupCommit;
use crate::error::ServerError;

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// File name of the database inside the data directory.
const DATABASE_FILE: &str = "nightjar.db";

/// A Rust type stored in and read from columns of `DB`.
pub(crate) trait Column<DB: Database>:
    for<'a> Encode<'a, DB> + for<'r> Decode<'r, DB> + Type<DB> + Send
{
}
impl<DB: Database, T> Column<DB> for T where
    T: for<'a> Encode<'a, DB> + for<'r> Decode<'r, DB> + Type<DB> + Send
{
}

/// A value borrowed for `'s` and bound as a query parameter.
pub(crate) trait Param<'s, DB: Database>: Encode<'s, DB> + Type<DB> + Send {}
impl<'s, DB: Database, T> Param<'s, DB> for T where T: Encode<'s, DB> + Type<DB> + Send {}

/// The bounds every generic `impl<DB> Db<DB>` block repeats (Rust does not let a trait imply
/// bounds on other types, so they cannot live on [`Backend`] itself):
///
/// ```text
/// where
///     DB: Backend,
///     for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
///     DB::Arguments: IntoArguments<DB>,
///     usize: ColumnIndex<DB::Row>,
///     i64: Column<DB>, bool: Column<DB>, String: Column<DB>, Vec<u8>: Column<DB>,
///     for<'s> &'s str: Param<'s, DB>, for<'s> &'s [u8]: Param<'s, DB>,
///     for<'s> Option<&'s str>: Param<'s, DB>,
/// ```
#[derive(Debug)]
pub(crate) struct Db<DB: Database> {
    pool: Pool<DB>,
    /// SQLite: one connection with `synchronous=NORMAL` for [`Db::write_relaxed`].
    relaxed: Option<Pool<DB>>,
    writer: Mutex<()>,
}

/// A write transaction; on SQLite it also holds the in-process write lock until it ends.
pub(crate) struct WriteTx<'a, DB: Database> {
    pub(crate) tx: Transaction<'static, DB>,
    _lock: Option<MutexGuard<'a, ()>>,
}

impl<DB: Database> WriteTx<'_, DB> {
    /// Commits durably.
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }
}

impl<DB: Backend> Db<DB> {
    /// Starts a write transaction.
    pub(crate) async fn write(&self) -> Result<WriteTx<'_, DB>, sqlx::Error> {
        let lock = if DB::SINGLE_WRITER {
            Some(self.writer.lock().await)
        } else {
            None
        };
        let tx = self.pool.begin_with(DB::BEGIN).await?;
        Ok(WriteTx { tx, _lock: lock })
    }

    /// Starts a write transaction whose commit is atomic but need not survive a crash or
    /// power cut: only for acknowledgements, where a lost commit means the envelope is sent
    /// again (delivery is at least once). It is made durable by the next durable commit
    /// (SQLite: its WAL fsync; PostgreSQL: the WAL writer, within milliseconds), and it saves
    /// acknowledgements an fsync each.
    pub(crate) async fn write_relaxed(&self) -> Result<WriteTx<'_, DB>, sqlx::Error>
    where
        for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
        DB::Arguments: sqlx::IntoArguments<DB>,
    {
        let lock = if DB::SINGLE_WRITER {
            Some(self.writer.lock().await)
        } else {
            None
        };
        let pool = self.relaxed.as_ref().unwrap_or(&self.pool);
        let mut tx = pool.begin_with(DB::BEGIN).await?;
        if let Some(sql) = DB::RELAXED_COMMIT {
            sqlx::query(sql).execute(&mut *tx).await?;
        }
        Ok(WriteTx { tx, _lock: lock })
    }

    /// The read pool.
    pub(crate) fn reader(&self) -> &Pool<DB> {
        &self.pool
    }
}

/// The granularity of the times stored with messages, queue rows, idempotency keys,
/// conversations and directory epochs: they serve expiry (and nothing orders by them), and a
/// time to the millisecond would give whoever reads the database a timeline of who sent when.
pub(crate) const STORED_TIME_MS: u64 = 3_600_000;

/// The granularity of account creation times.
pub(crate) const STORED_DAY_MS: u64 = 24 * 3_600_000;

/// `now_ms` rounded down to [`STORED_TIME_MS`], as stored.
pub(crate) fn stored_time(now_ms: u64) -> u64 {
    now_ms - now_ms % STORED_TIME_MS
}

/// `now_ms` rounded down to [`STORED_DAY_MS`]: account creation and last-seen days.
pub(crate) fn stored_day(now_ms: u64) -> u64 {
    now_ms - now_ms % STORED_DAY_MS
}

/// Converts a stored integer that is never negative.
pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Converts a client-supplied integer for storage; values past `i64::MAX` saturate.
pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The backend in use.
#[derive(Debug, Clone)]
enum Backends {
    Sqlite(Arc<Db<Sqlite>>),
    Postgres(Arc<Db<Postgres>>),
}

/// Runs `$body` with `$db` bound to the backend's `Db`, whichever it is.
macro_rules! dispatch {
    (backends: $backends:expr, $db:ident => $body:expr) => {
        match &$backends {
            $crate::store::Backends::Sqlite($db) => $body,
            $crate::store::Backends::Postgres($db) => $body,
        }
    };
    ($store:expr, $db:ident => $body:expr) => {
        dispatch!(backends: $store.backend, $db => $body)
    };
}
pub(crate) use dispatch;

/// The server's database, and the group-commit writers that store messages and delete
/// acknowledged ones.
#[derive(Debug)]
pub(crate) struct Store {
    backend: Backends,
    sends: batch::Batcher<Submission, SendOutcome>,
    acks: batch::Batcher<acks::AckRequest, u64>,
    /// SQLite: where the writers run (see `writer_thread.rs`).
    _writer_thread: Option<writer_thread::WriterThread>,
}

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DatabaseKind {
    /// SQLite, in the data directory or at a `sqlite:` URL.
    Sqlite,
    /// PostgreSQL at a `postgres://` or `postgresql://` URL.
    Postgres,
}

impl DatabaseKind {
    /// The kind of database `url` names, or why it is not supported.
    pub(crate) fn of(url: Option<&str>) -> Result<Self, ServerError> {
        match url {
            None => Ok(Self::Sqlite),
            Some(u) if u.starts_with("sqlite:") => Ok(Self::Sqlite),
            Some(u) if u.starts_with("postgres://") || u.starts_with("postgresql://") => {
                Ok(Self::Postgres)
            }
            Some(_) => Err(ServerError::Config(
                "the database URL must start with sqlite:, postgres:// or postgresql://".into(),
            )),
        }
    }
}

impl Store {
    /// Opens (creating if needed) the database, brings its schema up to date and starts the
    /// group-commit writer, which hands every committed batch to `sink`.
    pub(crate) async fn open(
        data_dir: &Path,
        database_url: Option<&str>,
        group_commit: GroupCommit,
        sink: Arc<dyn CommitSink>,
    ) -> Result<Self, ServerError> {
        let backend = match DatabaseKind::of(database_url)? {
            DatabaseKind::Sqlite => {
                Backends::Sqlite(Arc::new(open_sqlite(data_dir, database_url).await?))
            }
            DatabaseKind::Postgres => {
                let url = database_url.unwrap_or_default();
                Backends::Postgres(Arc::new(open_postgres(url).await?))
            }
        };
        let (mut sends, queue) = batch::Batcher::new(group_commit);
        let (mut acks, ack_queue) = batch::Batcher::new(group_commit);
        // SQLite has one writer whatever we do; PostgreSQL takes several at once.
        let writers = match backend {
            Backends::Sqlite(_) => 1,
            Backends::Postgres(_) => group_commit.writers.max(1),
        };
        // PostgreSQL's writers wait on the network like every other task; SQLite's one writer
        // waits on a thread hand-off per statement while it holds the write lock.
        let writer_thread = match backend {
            Backends::Sqlite(_) => Some(writer_thread::WriterThread::start()?),
            Backends::Postgres(_) => None,
        };
        for _ in 0..writers {
            let (queue, sink, ack_queue) = (queue.clone(), sink.clone(), ack_queue.clone());
            // Spawned per backend so each writer future is a concrete (provably `Send`) type.
            let (writer, ack_writer) = dispatch!(backends: backend, db => (
                spawn_on(&writer_thread, batch::run(db.clone(), queue, group_commit, sink)),
                spawn_on(&writer_thread, acks::run(db.clone(), ack_queue, group_commit)),
            ));
            sends.attach(writer);
            acks.attach(ack_writer);
        }
        Ok(Self {
            backend,
            sends,
            acks,
            _writer_thread: writer_thread,
        })
    }

    /// Which database this is.
    pub(crate) fn kind(&self) -> DatabaseKind {
        match self.backend {
            Backends::Sqlite(_) => DatabaseKind::Sqlite,
            Backends::Postgres(_) => DatabaseKind::Postgres,
        }
    }

    /// Whether the database answers.
    pub(crate) async fn healthy(&self) -> bool {
        dispatch!(self, db => sqlx::query("SELECT 1").execute(db.reader()).await.is_ok())
    }

    /// A named blob of server state.
    pub(crate) async fn server_state(&self, name: &str) -> Result<Option<Vec<u8>>, sqlx::Error> {
        dispatch!(self, db => db.server_state(name).await)
    }

    /// Stores `value` under `name` unless something is stored already; returns what is stored.
    pub(crate) async fn init_server_state(
        &self,
        name: &str,
        value: &[u8],
    ) -> Result<Vec<u8>, sqlx::Error> {
        dispatch!(self, db => db.init_server_state(name, value).await)
    }

    /// Orders, stores and queues one message (and a commit's Welcome), durably, in a batch
    /// with whatever other sends arrive at the same time. The envelopes go to the sink given
    /// to [`Store::open`] after the commit.
    pub(crate) async fn send(&self, request: Submission) -> Result<SendOutcome, sqlx::Error> {
        self.sends.submit(request).await
    }

    /// Stops the group-commit writers (after they answered every request they took) and
    /// closes every connection (on SQLite, checkpointing the WAL).
    pub(crate) async fn close(&self) {
        self.sends.stop().await;
        self.acks.stop().await;
        dispatch!(self, db => {
            db.pool.close().await;
            if let Some(relaxed) = &db.relaxed {
                relaxed.close().await;
            }
        });
    }
}

/// Runs a writer on the writer thread if there is one, else on the server's runtime.
fn spawn_on<F>(thread: &Option<writer_thread::WriterThread>, task: F) -> tokio::task::JoinHandle<()>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    match thread {
        Some(thread) => thread.spawn(task),
        None => tokio::spawn(task),
    }
}

async fn open_sqlite(data_dir: &Path, url: Option<&str>) -> Result<Db<Sqlite>, ServerError> {
    let options = match url {
        None => {
            std::fs::create_dir_all(data_dir)?;
            SqliteConnectOptions::new().filename(data_dir.join(DATABASE_FILE))
        }
        Some(url) => SqliteConnectOptions::from_str(url)?,
    };
    let options = options
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(10))
        // Statement journals (multi-row statements inside a transaction) in memory, not in a
        // temporary file created and deleted per batch.
        .pragma("temp_store", "memory")
        // Deleted rows (delivered messages, expired sessions) are zeroed on the pages the
        // delete writes anyway; `fast` never adds IO for it.
        .pragma("secure_delete", "fast")
        // A batch reads hundreds of rows per statement: room for them all in one hand-over.
        .row_buffer_size(1024);
    // Readers and the writer take turns on the same cores; more connections than that only
    // add threads to wake (each sqlx SQLite connection is a thread).
    let connections = std::thread::available_parallelism()
        .map_or(4, |n| n.get() * 2)
        .clamp(4, 16);
    let pool = SqlitePoolOptions::new()
        .max_connections(u32::try_from(connections).unwrap_or(4))
        .connect_with(options.clone())
        .await?;
    SQLITE_MIGRATIONS.run(&pool).await?;
    // An in-memory database exists per connection pool: acknowledgements then share the
    // main pool (there is nothing to fsync anyway).
    let in_memory = url.is_some_and(|u| u.contains(":memory:") || u.contains("mode=memory"));
    let relaxed = if in_memory {
        None
    } else {
        let relaxed = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options.synchronous(SqliteSynchronous::Normal))
            .await?;
        Some(relaxed)
    };
    Ok(Db {
        pool,
        relaxed,
        writer: Mutex::new(()),
    })
}

async fn open_postgres(url: &str) -> Result<Db<Postgres>, ServerError> {
    let options = PgConnectOptions::from_str(url)?;
    // One plain connection first: an unreachable server fails the start at once instead of
    // after the pool's acquire timeout.
    sqlx::PgConnection::connect_with(&options)
        .await?
        .close()
        .await?;
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .connect_with(options)
        .await?;
    // Concurrent nodes starting on one database take turns (the migrator locks).
    POSTGRES_MIGRATIONS.run(&pool).await?;
    Ok(Db {
        pool,
        relaxed: None,
        writer: Mutex::new(()),
    })
}

#[cfg(test)]
mod plans;
#[cfg(test)]
mod test_schema;
#[cfg(test)]
pub(crate) mod test_support;
