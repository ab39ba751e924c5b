//! Message reports (docs/reporting.md): what checking a report reads (the sending device's
//! key, the reporter's membership), the verified reports themselves, and the moderators' view.

use sqlx::{ColumnIndex, Executor, IntoArguments};

use super::{Backend, Column, Db, Param, Store, dispatch, to_i64, to_u64};

/// A verified message report to store.
#[derive(Debug)]
pub(crate) struct NewReport<'a> {
    /// The reporting account.
    pub(crate) reporter_id: i64,
    /// The conversation (32 hex digits).
    pub(crate) conversation: &'a str,
    /// The sending account.
    pub(crate) sender_username: &'a str,
    /// The sending device (16 hex digits).
    pub(crate) sender_device_id: &'a str,
    /// The revealed message, encoded.
    pub(crate) message: &'a [u8],
    /// The franking key that opens the commitment.
    pub(crate) franking_key: &'a [u8],
    /// The sending device's signature of the commitment.
    pub(crate) signature: &'a [u8],
    /// The commitment.
    pub(crate) commitment: &'a [u8],
    /// The server's tag.
    pub(crate) tag: &'a [u8],
    /// The time the tag binds.
    pub(crate) franked_at_ms: u64,
    /// The reporter's words.
    pub(crate) reason: Option<&'a str>,
    /// Now.
    pub(crate) now_ms: u64,
}

/// A stored message report, as moderators read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredReport {
    /// The report's id.
    pub(crate) id: u64,
    /// The reporting account.
    pub(crate) reporter: String,
    /// The conversation.
    pub(crate) conversation: String,
    /// The sending account.
    pub(crate) sender_username: String,
    /// The sending device.
    pub(crate) sender_device_id: String,
    /// The revealed message, encoded.
    pub(crate) message: Vec<u8>,
    /// The time the tag binds.
    pub(crate) franked_at_ms: u64,
    /// The reporter's words.
    pub(crate) reason: Option<String>,
    /// When it was reported (to the hour).
    pub(crate) reported_at_ms: u64,
    /// When a moderator marked it reviewed.
    pub(crate) reviewed_at_ms: Option<u64>,
}

/// [`StoredReport`] as the statement returns it.
type ReportColumns = (
    i64,
    String,
    String,
    String,
    String,
    Vec<u8>,
    i64,
    Option<String>,
    i64,
    Option<i64>,
);

impl From<ReportColumns> for StoredReport {
    fn from(c: ReportColumns) -> Self {
        Self {
            id: to_u64(c.0),
            reporter: c.1,
            conversation: c.2,
            sender_username: c.3,
            sender_device_id: c.4,
            message: c.5,
            franked_at_ms: to_u64(c.6),
            reason: c.7,
            reported_at_ms: to_u64(c.8),
            reviewed_at_ms: c.9.map(to_u64),
        }
    }
}

impl Store {
    /// The signature key of `username`'s active device `device_id`, as its signed device list
    /// registered it; `None` if there is no such device.
    pub(crate) async fn device_signature_key(
        &self,
        username: &str,
        device_id: &str,
    ) -> Result<Option<Vec<u8>>, sqlx::Error> {
        dispatch!(self, db => db.device_signature_key(username, device_id).await)
    }

    /// Whether a device of `username` is a member of `conversation`.
    pub(crate) async fn account_in_conversation(
        &self,
        conversation: &str,
        username: &str,
    ) -> Result<bool, sqlx::Error> {
        dispatch!(self, db => db.account_in_conversation(conversation, username).await)
    }

    /// Stores a verified report and returns its id; a report of the same message by the same
    /// account is stored once (its id is returned again).
    pub(crate) async fn store_message_report(
        &self,
        report: &NewReport<'_>,
    ) -> Result<u64, sqlx::Error> {
        dispatch!(self, db => db.store_message_report(report).await)
    }

    /// Reports with ids above `after`, oldest first, at most `limit` (only those not reviewed
    /// yet when `unreviewed`).
    pub(crate) async fn message_reports(
        &self,
        after: u64,
        limit: u32,
        unreviewed: bool,
    ) -> Result<Vec<StoredReport>, sqlx::Error> {
        dispatch!(self, db => db.message_reports(after, limit, unreviewed).await)
    }

    /// Marks report `id` reviewed at `now_ms` (once: a second mark keeps the first time);
    /// `false` if there is no such report.
    pub(crate) async fn mark_report_reviewed(
        &self,
        id: u64,
        now_ms: u64,
    ) -> Result<bool, sqlx::Error> {
        dispatch!(self, db => db.mark_report_reviewed(id, now_ms).await)
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
    async fn device_signature_key(
        &self,
        username: &str,
        device_id: &str,
    ) -> Result<Option<Vec<u8>>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT d.signature_key FROM accounts a JOIN devices d ON d.account_id = a.id \
             WHERE a.username = $1 AND d.device_id = $2 AND d.status = 'active'",
        )
        .bind(username)
        .bind(device_id)
        .fetch_optional(self.reader())
        .await
    }

    async fn account_in_conversation(
        &self,
        conversation: &str,
        username: &str,
    ) -> Result<bool, sqlx::Error> {
        let found: Option<String> = sqlx::query_scalar(
            "SELECT username FROM conversation_members WHERE conversation_id = $1 \
             AND username = $2 LIMIT 1",
        )
        .bind(conversation)
        .bind(username)
        .fetch_optional(self.reader())
        .await?;
        Ok(found.is_some())
    }

    async fn store_message_report(&self, r: &NewReport<'_>) -> Result<u64, sqlx::Error> {
        // Stored rounded to the hour, like every other time the server keeps.
        let now = to_i64(super::stored_time(r.now_ms));
        let mut w = self.write().await?;
        sqlx::query(
            "INSERT INTO message_reports (reporter_id, conversation_id, sender_username, \
             sender_device_id, message, franking_key, signature, commitment, tag, \
             franked_at_ms, reason, created_at_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             ON CONFLICT (reporter_id, commitment) DO NOTHING",
        )
        .bind(r.reporter_id)
        .bind(r.conversation)
        .bind(r.sender_username)
        .bind(r.sender_device_id)
        .bind(r.message)
        .bind(r.franking_key)
        .bind(r.signature)
        .bind(r.commitment)
        .bind(r.tag)
        .bind(to_i64(r.franked_at_ms))
        .bind(r.reason)
        .bind(now)
        .execute(&mut *w.tx)
        .await?;
        let id: i64 = sqlx::query_scalar(
            "SELECT id FROM message_reports WHERE reporter_id = $1 AND commitment = $2",
        )
        .bind(r.reporter_id)
        .bind(r.commitment)
        .fetch_one(&mut *w.tx)
        .await?;
        w.commit().await?;
        Ok(to_u64(id))
    }

    async fn message_reports(
        &self,
        after: u64,
        limit: u32,
        unreviewed: bool,
    ) -> Result<Vec<StoredReport>, sqlx::Error> {
        let rows: Vec<ReportColumns> = sqlx::query_as(
            "SELECT r.id, a.username, r.conversation_id, r.sender_username, r.sender_device_id, \
             r.message, r.franked_at_ms, r.reason, r.created_at_ms, r.reviewed_at_ms \
             FROM message_reports r JOIN accounts a ON a.id = r.reporter_id \
             WHERE r.id > $1 AND ($2 = 0 OR r.reviewed_at_ms IS NULL) ORDER BY r.id LIMIT $3",
        )
        .bind(to_i64(after))
        .bind(i64::from(unreviewed))
        .bind(i64::from(limit))
        .fetch_all(self.reader())
        .await?;
        Ok(rows.into_iter().map(StoredReport::from).collect())
    }

    async fn mark_report_reviewed(&self, id: u64, now_ms: u64) -> Result<bool, sqlx::Error> {
        let mut w = self.write().await?;
        let found: Option<i64> = sqlx::query_scalar(
            "UPDATE message_reports SET reviewed_at_ms = COALESCE(reviewed_at_ms, $1) \
             WHERE id = $2 RETURNING id",
        )
        .bind(to_i64(now_ms))
        .bind(to_i64(id))
        .fetch_optional(&mut *w.tx)
        .await?;
        w.commit().await?;
        Ok(found.is_some())
    }
}
