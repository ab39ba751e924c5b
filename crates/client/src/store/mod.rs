//! The local profile: one SQLCipher database holding the engine's key/value state, the
//! decrypted message history, conversations, contacts, the outbox and the session.
//!
//! Everything in the file is encrypted at rest (SQLCipher, raw 256-bit key from
//! [`crate::keys`]). [`Store`] implements [`KvStore`] for the engine; each engine call's batch is
//! applied in one transaction, and [`Store::begin`] opens an outer transaction so an engine call
//! and the SDK's own rows (a decrypted message, an outbox entry) commit together.

mod consent;
mod history;
mod machine;
mod outbox;
mod transfers;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use nightjar_core::storage::{Entry, KvStore, StoreError};
use rusqlite::{Connection, OptionalExtension as _, params};

pub use consent::{Consent, HeldMessages};
pub use history::{Amendment, ContactRecord, ConversationRow, StoredMessage};
pub use outbox::{OutboxItem, OutboxKind, OutboxRow};
pub use transfers::PendingUpload;

use crate::error::{Error, Result};
use crate::keys::DatabaseKey;

/// Name of the database file inside the profile directory.
pub const DB_FILE: &str = "profile.db";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS kv (key BLOB PRIMARY KEY, value BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    name TEXT,
    peer TEXT,
    active INTEGER NOT NULL DEFAULT 1,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS contacts (
    username TEXT PRIMARY KEY,
    identity_key BLOB,
    list_version INTEGER,
    changed_list BLOB,
    updated_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation TEXT NOT NULL,
    message_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    device TEXT NOT NULL,
    sent_at INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    type TEXT NOT NULL,
    text TEXT,
    outgoing INTEGER NOT NULL,
    shown INTEGER NOT NULL DEFAULT 0,
    UNIQUE (conversation, sender, message_id)
);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    priority INTEGER NOT NULL,
    conversation TEXT NOT NULL,
    kind TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    body TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS processed (envelope_id INTEGER PRIMARY KEY, at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outbox_refused (
    seq INTEGER PRIMARY KEY,
    reason TEXT NOT NULL,
    at INTEGER NOT NULL
);
";

/// `(table, column, declaration)` of every column added after a table was first created.
const ADDED_COLUMNS: [(&str, &str, &str); 3] = [
    ("messages", "detail", "TEXT"),
    ("messages", "expires_after", "INTEGER"),
    ("messages", "expires_at", "INTEGER"),
];

/// Adds `column` to `table` unless it is there.
fn add_column(conn: &Connection, table: &str, column: &str, declaration: &str) -> Result<()> {
    let mut stmt = conn.prepare(&format!("PRAGMA table_info({table})"))?;
    let present = stmt
        .query_map([], |r| r.get::<_, String>(1))?
        .collect::<Result<Vec<_>, _>>()?
        .iter()
        .any(|c| c == column);
    if !present {
        conn.execute_batch(&format!(
            "ALTER TABLE {table} ADD COLUMN {column} {declaration}"
        ))?;
    }
    Ok(())
}

struct Inner {
    conn: Mutex<Connection>,
    /// An outer transaction is open: engine batches join it instead of committing alone.
    outer: AtomicBool,
}

/// The profile database. Cheap to clone; all clones share one connection.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Store { .. }")
    }
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl Store {
    /// Opens (or creates) the encrypted database at `path` with `key`. A wrong key is an error.
    pub fn open(path: &Path, key: &DatabaseKey) -> Result<Self> {
        let conn = Connection::open(path)?;
        // SQLCipher logs decryption failures to stderr; errors are reported as values instead.
        let _ = conn.execute_batch("PRAGMA cipher_log_level = NONE;");
        // Raw-key syntax: the key is already 256 random bits, so no passphrase stretching.
        conn.execute_batch(&key.pragma())?;
        conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        })
        .map_err(|_| {
            Error::Key(format!(
                "{} cannot be opened with its key (wrong key or not a Nightjar profile)",
                path.display()
            ))
        })?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch("PRAGMA foreign_keys = ON; PRAGMA secure_delete = ON;")?;
        conn.execute_batch(SCHEMA)?;
        conn.execute_batch(consent::SCHEMA)?;
        conn.execute_batch(transfers::SCHEMA)?;
        // Columns later versions added to tables of older profiles.
        for (table, column, declaration) in ADDED_COLUMNS {
            add_column(&conn, table, column, declaration)?;
        }
        conn.execute_batch(
            "CREATE INDEX IF NOT EXISTS messages_expiry ON messages (expires_at)
             WHERE expires_at IS NOT NULL;
             CREATE INDEX IF NOT EXISTS messages_by_id ON messages (message_id);",
        )?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                conn: Mutex::new(conn),
                outer: AtomicBool::new(false),
            }),
        })
    }

    pub(crate) fn conn(&self) -> Result<MutexGuard<'_, Connection>> {
        self.inner
            .conn
            .lock()
            .map_err(|_| Error::Database("connection lock poisoned".into()))
    }

    /// Opens an outer transaction: engine batches and SDK rows written until [`Self::commit`]
    /// reach the disk together, or not at all after [`Self::rollback`].
    pub fn begin(&self) -> Result<()> {
        let conn = self.conn()?;
        conn.execute_batch("BEGIN IMMEDIATE")?;
        self.inner.outer.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Commits the outer transaction.
    pub fn commit(&self) -> Result<()> {
        let conn = self.conn()?;
        let result = conn.execute_batch("COMMIT");
        if result.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        self.inner.outer.store(false, Ordering::SeqCst);
        Ok(result?)
    }

    /// Abandons the outer transaction.
    pub fn rollback(&self) {
        if let Ok(conn) = self.conn() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        self.inner.outer.store(false, Ordering::SeqCst);
    }

    /// A value from the profile's settings table.
    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        Ok(self
            .conn()?
            .query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
            .optional()?)
    }

    /// Sets a value in the profile's settings table.
    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.conn()?.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![key, value],
        )?;
        Ok(())
    }

    /// Removes a value from the profile's settings table.
    pub fn delete_meta(&self, key: &str) -> Result<()> {
        self.conn()?
            .execute("DELETE FROM meta WHERE key = ?1", [key])?;
        Ok(())
    }

    /// Whether the engine has written anything yet (a device exists in this profile).
    pub fn has_engine_state(&self) -> Result<bool> {
        let n: i64 = self
            .conn()?
            .query_row("SELECT count(*) FROM kv", [], |r| r.get(0))?;
        Ok(n > 0)
    }

    /// Deletes every row of every table: used when a registration or login fails half way.
    pub fn wipe(&self) -> Result<()> {
        self.conn()?.execute_batch(
            "DELETE FROM kv; DELETE FROM meta; DELETE FROM conversations; DELETE FROM contacts;
             DELETE FROM messages; DELETE FROM outbox; DELETE FROM processed;
             DELETE FROM uploads;",
        )?;
        Ok(())
    }

    /// Whether the envelope with this queue id was already processed and committed.
    pub fn is_processed(&self, envelope_id: u64) -> Result<bool> {
        let n: i64 = self.conn()?.query_row(
            "SELECT count(*) FROM processed WHERE envelope_id = ?1",
            [to_i64(envelope_id)],
            |r| r.get(0),
        )?;
        Ok(n > 0)
    }

    /// Forgets processed envelope ids older than `cutoff_ms`: the server keeps envelopes for a
    /// bounded time, so such an id can never come back.
    pub fn prune_processed(&self, cutoff_ms: u64) -> Result<()> {
        self.conn()?
            .execute("DELETE FROM processed WHERE at < ?1", [to_i64(cutoff_ms)])?;
        Ok(())
    }

    /// Records that an envelope is processed (in the caller's transaction).
    pub fn mark_processed(&self, envelope_id: u64, now_ms: u64) -> Result<()> {
        self.conn()?.execute(
            "INSERT OR IGNORE INTO processed (envelope_id, at) VALUES (?1, ?2)",
            params![to_i64(envelope_id), to_i64(now_ms)],
        )?;
        Ok(())
    }
}

pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

pub(crate) fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// The smallest key greater than every key starting with `prefix` (`None`: no upper bound).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

impl KvStore for Store {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let conn = self.inner.conn.lock().map_err(backend)?;
        conn.query_row("SELECT value FROM kv WHERE key = ?1", [key], |r| r.get(0))
            .optional()
            .map_err(backend)
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.apply(vec![(key.to_vec(), Some(value.to_vec()))])
    }

    fn delete(&self, key: &[u8]) -> Result<(), StoreError> {
        self.apply(vec![(key.to_vec(), None)])
    }

    fn entries(&self) -> Result<Vec<Entry>, StoreError> {
        let conn = self.inner.conn.lock().map_err(backend)?;
        let mut stmt = conn
            .prepare_cached("SELECT key, value FROM kv")
            .map_err(backend)?;
        let rows = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .map_err(backend)?;
        rows.collect::<Result<Vec<Entry>, _>>().map_err(backend)
    }

    fn entries_with_prefix(&self, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        let conn = self.inner.conn.lock().map_err(backend)?;
        let rows = match prefix_end(prefix) {
            Some(end) => {
                let mut stmt = conn
                    .prepare_cached("SELECT key, value FROM kv WHERE key >= ?1 AND key < ?2")
                    .map_err(backend)?;
                stmt.query_map(params![prefix, end], |r| Ok((r.get(0)?, r.get(1)?)))
                    .map_err(backend)?
                    .collect::<Result<Vec<Entry>, _>>()
            }
            None => {
                let mut stmt = conn
                    .prepare_cached("SELECT key, value FROM kv WHERE key >= ?1")
                    .map_err(backend)?;
                stmt.query_map(params![prefix], |r| Ok((r.get(0)?, r.get(1)?)))
                    .map_err(backend)?
                    .collect::<Result<Vec<Entry>, _>>()
            }
        };
        rows.map_err(backend)
    }

    /// Applies the whole batch in one SQLite transaction (or inside the open outer one).
    fn apply(&self, batch: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<(), StoreError> {
        let mut conn = self.inner.conn.lock().map_err(backend)?;
        let write = |conn: &Connection| -> rusqlite::Result<()> {
            let mut put = conn.prepare_cached(
                "INSERT INTO kv (key, value) VALUES (?1, ?2)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )?;
            let mut del = conn.prepare_cached("DELETE FROM kv WHERE key = ?1")?;
            for (key, value) in &batch {
                match value {
                    Some(v) => put.execute(params![key, v])?,
                    None => del.execute([key])?,
                };
            }
            Ok(())
        };
        if self.inner.outer.load(Ordering::SeqCst) {
            return write(&conn).map_err(backend);
        }
        let tx = conn.transaction().map_err(backend)?;
        write(&tx).map_err(backend)?;
        tx.commit().map_err(backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open_temp() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let (key, _) = crate::keys::load_or_create(dir.path(), false).unwrap();
        let store = Store::open(&dir.path().join(DB_FILE), &key).unwrap();
        (dir, store)
    }

    #[test]
    fn kv_round_trip_and_atomic_apply() {
        let (_dir, store) = open_temp();
        store.put(b"a", b"1").unwrap();
        store.put(b"a", b"2").unwrap();
        assert_eq!(store.get(b"a").unwrap(), Some(b"2".to_vec()));
        store.delete(b"a").unwrap();
        assert_eq!(store.get(b"a").unwrap(), None);

        store
            .apply(vec![
                (b"x".to_vec(), Some(b"1".to_vec())),
                (b"y".to_vec(), Some(b"2".to_vec())),
            ])
            .unwrap();
        assert_eq!(store.entries().unwrap().len(), 2);

        // A batch that fails half way (a trigger refuses its last write) leaves nothing behind.
        store
            .conn()
            .unwrap()
            .execute_batch(
                "CREATE TEMP TRIGGER refuse BEFORE INSERT ON kv WHEN NEW.key = X'626164'
                 BEGIN SELECT RAISE(ABORT, 'refused'); END;",
            )
            .unwrap();
        let err = store.apply(vec![
            (b"z".to_vec(), Some(b"3".to_vec())),
            (b"x".to_vec(), None),
            (b"bad".to_vec(), Some(b"4".to_vec())),
        ]);
        assert!(err.is_err());
        assert_eq!(store.get(b"z").unwrap(), None);
        assert_eq!(store.get(b"x").unwrap(), Some(b"1".to_vec()));
    }

    #[test]
    fn prefix_scan_is_exact() {
        let (_dir, store) = open_temp();
        for k in [
            &b"nj/a"[..],
            b"nj/b",
            b"nj",
            b"nk/a",
            b"mls/x",
            b"nj\xff",
            b"\xff\xff",
        ] {
            store.put(k, b"v").unwrap();
        }
        let mut keys: Vec<Vec<u8>> = store
            .entries_with_prefix(b"nj/")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        keys.sort();
        assert_eq!(keys, [b"nj/a".to_vec(), b"nj/b".to_vec()]);
        assert_eq!(store.entries_with_prefix(b"\xff").unwrap().len(), 1);
        assert_eq!(store.entries_with_prefix(b"").unwrap().len(), 7);
        assert_eq!(prefix_end(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff"), None);
    }

    #[test]
    fn outer_transaction_rolls_back_engine_batches_too() {
        let (_dir, store) = open_temp();
        store.begin().unwrap();
        store.put(b"k", b"v").unwrap();
        store.set_meta("m", "1").unwrap();
        store.rollback();
        assert_eq!(store.get(b"k").unwrap(), None);
        assert_eq!(store.meta("m").unwrap(), None);
        store.begin().unwrap();
        store.put(b"k", b"v").unwrap();
        store.commit().unwrap();
        assert_eq!(store.get(b"k").unwrap(), Some(b"v".to_vec()));
    }

    #[test]
    fn file_is_not_plaintext_and_wrong_key_fails() {
        let dir = tempfile::tempdir().unwrap();
        let (key, _) = crate::keys::load_or_create(dir.path(), false).unwrap();
        let path = dir.path().join(DB_FILE);
        let secret = b"correct horse battery staple secret";
        {
            let store = Store::open(&path, &key).unwrap();
            store.put(b"engine/secret", secret).unwrap();
            store
                .set_meta("token", "tok-very-secret-session-token")
                .unwrap();
        }
        let bytes = std::fs::read(&path).unwrap();
        assert!(!bytes.is_empty());
        assert!(!bytes.windows(secret.len()).any(|w| w == secret));
        assert!(!bytes.windows(12).any(|w| w == b"engine/secre"));
        assert!(!bytes.windows(10).any(|w| w == b"tok-very-s"));
        assert!(!bytes.starts_with(b"SQLite format 3"));

        let other = tempfile::tempdir().unwrap();
        let (wrong, _) = crate::keys::load_or_create(other.path(), false).unwrap();
        assert!(Store::open(&path, &wrong).is_err());
        let store = Store::open(&path, &key).unwrap();
        assert_eq!(store.get(b"engine/secret").unwrap(), Some(secret.to_vec()));
    }
}
