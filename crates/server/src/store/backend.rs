//! Everything that differs between SQLite and PostgreSQL, in one place: how a write
//! transaction starts, row locks, which errors are worth a retry, and the bulk statements of
//! the send path. The rest of the store is written once against [`Backend`].

use std::future::Future;

use sqlx::database::HasStatementCache;
use sqlx::postgres::PgConnection;
use sqlx::sqlite::SqliteConnection;
use sqlx::{Database, Postgres, QueryBuilder, Sqlite};

/// One envelope to insert into a device queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueRow {
    pub(crate) device_pk: i64,
    pub(crate) seq: i64,
    pub(crate) message_id: i64,
    pub(crate) created_at_ms: i64,
}

/// A change to a device's queue counters: `queue_seq` rises to `seq` (if higher) and
/// `queue_len` changes by `delta`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueCounter {
    pub(crate) device_pk: i64,
    pub(crate) seq: i64,
    pub(crate) delta: i64,
}

impl QueueCounter {
    /// The counter changes for envelopes removed from queues, `(device, how many)` with each
    /// device once, sorted by device as [`Backend::adjust_queues`] takes them.
    pub(crate) fn removals(removed: impl IntoIterator<Item = (i64, i64)>) -> Vec<Self> {
        let mut counters: Vec<Self> = removed
            .into_iter()
            .map(|(device_pk, n)| Self {
                device_pk,
                seq: 0,
                delta: -n,
            })
            .collect();
        counters.sort_unstable_by_key(|c| c.device_pk);
        counters
    }
}

/// Most ids one statement filters on (SQLite allows 32,766 parameters per statement).
pub(crate) const MAX_IDS: usize = 10_000;

/// Rows per multi-row `VALUES` statement on SQLite (four parameters each).
const SQLITE_ROWS: usize = 1_000;

/// A database the store runs on. Implemented for `Sqlite` and `Postgres` only.
pub(crate) trait Backend: Database + HasStatementCache {
    /// Whether writes must be serialised in-process (SQLite has a single writer).
    const SINGLE_WRITER: bool;
    /// The statement that starts a write transaction.
    const BEGIN: &'static str;
    /// Appended to a `SELECT` of rows this transaction decides on or is about to change.
    const FOR_UPDATE: &'static str;
    /// Appended to a `SELECT` of rows this transaction is about to change in columns no
    /// foreign key refers to (device queue counters): it does not block the `KEY SHARE` locks
    /// that inserting rows which refer to them takes, so queue writers never deadlock with
    /// sends that insert rows referring to the same devices.
    const FOR_NO_KEY_UPDATE: &'static str;
    /// Appended to a `SELECT` of rows that must not be deleted before this transaction ends
    /// (the devices a batch's rows will refer to).
    const FOR_KEY_SHARE: &'static str;
    /// Appended to a `SELECT` that claims one of several equivalent rows.
    const SKIP_LOCKED: &'static str;
    /// Between the column list and `VALUES` of an `INSERT` that sets generated ids itself.
    const OVERRIDE_IDS: &'static str;
    /// Run first in a transaction whose commit may be lost in a crash (acknowledgements:
    /// the envelope is then sent again); `None` where a separate connection does that.
    const RELAXED_COMMIT: Option<&'static str>;

    /// `count` ids for new `messages` rows, ascending and not used by any stored message, for
    /// this transaction to insert (ids it leaves unused are handed out again on SQLite and
    /// skipped on PostgreSQL).
    fn reserve_message_ids(
        conn: &mut Self::Connection,
        count: usize,
    ) -> impl Future<Output = Result<Vec<i64>, sqlx::Error>> + Send + '_;

    /// Whether a failed transaction may succeed if run again (deadlock, serialisation, busy).
    fn is_transient(error: &sqlx::Error) -> bool;

    /// Rows a statement changed.
    fn rows_affected(result: &Self::QueryResult) -> u64;

    /// Appends a filter `column` ∈ `ids` (at most [`MAX_IDS`]).
    fn push_id_filter(q: &mut QueryBuilder<Self>, column: &str, ids: &[i64]);

    /// Appends a table of `(text, id)` rows with columns `column1` and `column2` (wrap it in
    /// `FROM ... AS name`). The rows travel in bound parameters whose number does not depend
    /// on theirs, so the statement's text is the same for any count and is prepared once per
    /// connection (`persistent(true)`).
    fn push_text_id_rows(q: &mut QueryBuilder<Self>, rows: &[(String, i64)]);

    /// Inserts queue rows in as few statements as the backend allows.
    fn insert_queue<'c>(
        conn: &'c mut Self::Connection,
        rows: &'c [QueueRow],
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send + 'c;

    /// Deletes the queue rows `(device, queue id)` that exist, in as few statements as the
    /// backend allows; returns `(device, queue id, message id)` of each deleted row.
    fn delete_queue_rows<'c>(
        conn: &'c mut Self::Connection,
        rows: &'c [(i64, i64)],
    ) -> impl Future<Output = Result<Vec<(i64, i64, i64)>, sqlx::Error>> + Send + 'c;

    /// Applies counter changes (sorted by device, at most one per device) in as few
    /// statements as the backend allows.
    fn adjust_queues<'c>(
        conn: &'c mut Self::Connection,
        counters: &'c [QueueCounter],
    ) -> impl Future<Output = Result<(), sqlx::Error>> + Send + 'c;
}

fn sqlstate(error: &sqlx::Error) -> Option<String> {
    match error {
        sqlx::Error::Database(e) => e.code().map(|c| c.into_owned()),
        _ => None,
    }
}

impl Backend for Sqlite {
    const SINGLE_WRITER: bool = true;
    // Takes the write lock at once: a transaction that reads then writes never fails half-way.
    const BEGIN: &'static str = "BEGIN IMMEDIATE";
    // The single writer already excludes every other writer.
    const FOR_UPDATE: &'static str = "";
    const FOR_NO_KEY_UPDATE: &'static str = "";
    const FOR_KEY_SHARE: &'static str = "";
    const SKIP_LOCKED: &'static str = "";
    const OVERRIDE_IDS: &'static str = "";
    // A connection of its own with `synchronous=NORMAL` (see `Db::write_relaxed`).
    const RELAXED_COMMIT: Option<&'static str> = None;

    async fn reserve_message_ids(
        conn: &mut SqliteConnection,
        count: usize,
    ) -> Result<Vec<i64>, sqlx::Error> {
        // AUTOINCREMENT keeps the highest id ever used here; the single writer holds the
        // write lock until this transaction ends, and its inserts move the counter on.
        let last: i64 = sqlx::query_scalar(
            "SELECT COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'messages'), 0)",
        )
        .fetch_one(conn)
        .await?;
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        Ok((1..=count).map(|i| last.saturating_add(i)).collect())
    }

    fn is_transient(error: &sqlx::Error) -> bool {
        // SQLITE_BUSY and SQLITE_LOCKED (another process holds the database).
        matches!(sqlstate(error).as_deref(), Some("5" | "6" | "517"))
    }

    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }

    fn push_id_filter(q: &mut QueryBuilder<Self>, column: &str, ids: &[i64]) {
        q.push(column).push(" IN (");
        let mut list = q.separated(", ");
        for id in ids {
            list.push_bind(*id);
        }
        if ids.is_empty() {
            list.push("NULL");
        }
        q.push(")");
    }

    fn push_text_id_rows(q: &mut QueryBuilder<Self>, rows: &[(String, i64)]) {
        // One JSON array of pairs, unpacked by `json_each`.
        let json = serde_json::Value::Array(
            rows.iter()
                .map(|(text, id)| serde_json::json!([text, id]))
                .collect(),
        );
        q.push("(SELECT value ->> 0 AS column1, value ->> 1 AS column2 FROM json_each(")
            .push_bind(json.to_string())
            .push("))");
    }

    async fn insert_queue(
        conn: &mut SqliteConnection,
        rows: &[QueueRow],
    ) -> Result<(), sqlx::Error> {
        for chunk in rows.chunks(SQLITE_ROWS) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "INSERT INTO queue (device_pk, seq, message_id, created_at_ms) ",
            );
            q.push_values(chunk, |mut row, r| {
                row.push_bind(r.device_pk)
                    .push_bind(r.seq)
                    .push_bind(r.message_id)
                    .push_bind(r.created_at_ms);
            });
            q.build().persistent(false).execute(&mut *conn).await?;
        }
        Ok(())
    }

    async fn delete_queue_rows(
        conn: &mut SqliteConnection,
        rows: &[(i64, i64)],
    ) -> Result<Vec<(i64, i64, i64)>, sqlx::Error> {
        let mut deleted = Vec::with_capacity(rows.len());
        for chunk in rows.chunks(SQLITE_ROWS) {
            let mut q =
                QueryBuilder::<Sqlite>::new("DELETE FROM queue WHERE (device_pk, seq) IN (");
            q.push_values(chunk, |mut row, (device_pk, seq)| {
                row.push_bind(*device_pk).push_bind(*seq);
            });
            q.push(") RETURNING device_pk, seq, message_id");
            deleted.extend(
                q.build_query_as::<(i64, i64, i64)>()
                    .persistent(false)
                    .fetch_all(&mut *conn)
                    .await?,
            );
        }
        Ok(deleted)
    }

    async fn adjust_queues(
        conn: &mut SqliteConnection,
        counters: &[QueueCounter],
    ) -> Result<(), sqlx::Error> {
        for chunk in counters.chunks(SQLITE_ROWS) {
            // `VALUES` columns are named column1, column2, ... on both databases.
            let mut q = QueryBuilder::<Sqlite>::new(
                "UPDATE devices SET \
                 queue_seq = CASE WHEN v.column2 > queue_seq THEN v.column2 ELSE queue_seq END, \
                 queue_len = queue_len + v.column3 FROM (",
            );
            q.push_values(chunk, |mut row, c| {
                row.push_bind(c.device_pk)
                    .push_bind(c.seq)
                    .push_bind(c.delta);
            });
            q.push(") AS v WHERE devices.id = v.column1");
            q.build().persistent(false).execute(&mut *conn).await?;
        }
        Ok(())
    }
}

impl Backend for Postgres {
    const SINGLE_WRITER: bool = false;
    const BEGIN: &'static str = "BEGIN";
    const FOR_UPDATE: &'static str = " FOR UPDATE";
    const FOR_NO_KEY_UPDATE: &'static str = " FOR NO KEY UPDATE";
    const FOR_KEY_SHARE: &'static str = " FOR KEY SHARE";
    const SKIP_LOCKED: &'static str = " FOR UPDATE SKIP LOCKED";
    const OVERRIDE_IDS: &'static str = " OVERRIDING SYSTEM VALUE";
    // The commit returns before its WAL record is flushed (within 3 × wal_writer_delay).
    const RELAXED_COMMIT: Option<&'static str> = Some("SET LOCAL synchronous_commit = off");

    async fn reserve_message_ids(
        conn: &mut PgConnection,
        count: usize,
    ) -> Result<Vec<i64>, sqlx::Error> {
        // Sequence values are never handed out twice, whatever other nodes do.
        sqlx::query_scalar(
            "SELECT nextval(pg_get_serial_sequence('messages', 'id')) \
             FROM generate_series(1, $1)",
        )
        .bind(i64::try_from(count).unwrap_or(i64::MAX))
        .fetch_all(conn)
        .await
    }

    fn is_transient(error: &sqlx::Error) -> bool {
        // serialization_failure, deadlock_detected.
        matches!(sqlstate(error).as_deref(), Some("40001" | "40P01"))
    }

    fn rows_affected(result: &Self::QueryResult) -> u64 {
        result.rows_affected()
    }

    fn push_id_filter(q: &mut QueryBuilder<Self>, column: &str, ids: &[i64]) {
        // One array parameter: the statement text does not depend on the count, so it is
        // prepared once per connection.
        q.push(column)
            .push(" = ANY(")
            .push_bind(ids.to_vec())
            .push(")");
    }

    fn push_text_id_rows(q: &mut QueryBuilder<Self>, rows: &[(String, i64)]) {
        let (texts, ids): (Vec<String>, Vec<i64>) = rows.iter().cloned().unzip();
        q.push("(SELECT * FROM unnest(")
            .push_bind(texts)
            .push("::text[], ")
            .push_bind(ids)
            .push("::int8[]) AS rows (column1, column2))");
    }

    async fn insert_queue(conn: &mut PgConnection, rows: &[QueueRow]) -> Result<(), sqlx::Error> {
        if rows.is_empty() {
            return Ok(());
        }
        let column = |f: fn(&QueueRow) -> i64| rows.iter().map(f).collect::<Vec<i64>>();
        sqlx::query(
            "INSERT INTO queue (device_pk, seq, message_id, created_at_ms) \
             SELECT * FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::BIGINT[], $4::BIGINT[])",
        )
        .bind(column(|r| r.device_pk))
        .bind(column(|r| r.seq))
        .bind(column(|r| r.message_id))
        .bind(column(|r| r.created_at_ms))
        .execute(conn)
        .await?;
        Ok(())
    }

    async fn delete_queue_rows(
        conn: &mut PgConnection,
        rows: &[(i64, i64)],
    ) -> Result<Vec<(i64, i64, i64)>, sqlx::Error> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let devices: Vec<i64> = rows.iter().map(|r| r.0).collect();
        let seqs: Vec<i64> = rows.iter().map(|r| r.1).collect();
        sqlx::query_as(
            "DELETE FROM queue q USING UNNEST($1::BIGINT[], $2::BIGINT[]) AS v (device_pk, seq) \
             WHERE q.device_pk = v.device_pk AND q.seq = v.seq \
             RETURNING q.device_pk, q.seq, q.message_id",
        )
        .bind(devices)
        .bind(seqs)
        .fetch_all(conn)
        .await
    }

    async fn adjust_queues(
        conn: &mut PgConnection,
        counters: &[QueueCounter],
    ) -> Result<(), sqlx::Error> {
        if counters.is_empty() {
            return Ok(());
        }
        let column = |f: fn(&QueueCounter) -> i64| counters.iter().map(f).collect::<Vec<i64>>();
        sqlx::query(
            "UPDATE devices SET queue_seq = GREATEST(devices.queue_seq, v.seq), \
             queue_len = devices.queue_len + v.delta \
             FROM UNNEST($1::BIGINT[], $2::BIGINT[], $3::BIGINT[]) AS v (id, seq, delta) \
             WHERE devices.id = v.id",
        )
        .bind(column(|c| c.device_pk))
        .bind(column(|c| c.seq))
        .bind(column(|c| c.delta))
        .execute(conn)
        .await?;
        Ok(())
    }
}
