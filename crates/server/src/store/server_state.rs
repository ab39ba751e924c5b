//! Named blobs of server-wide state (the OPAQUE server setup, the cluster id), shared by every
//! node on the database.

use sqlx::{ColumnIndex, Executor, IntoArguments};

use super::{Backend, Column, Db, Param, Store, dispatch};

impl Store {
    /// Deletes a named blob of server state; true if there was one.
    pub(crate) async fn delete_server_state(&self, name: &str) -> Result<bool, sqlx::Error> {
        dispatch!(self, db => db.delete_server_state(name).await)
    }

    /// Whether any account exists (then a lost OPAQUE setup must not be silently replaced).
    pub(crate) async fn has_accounts(&self) -> Result<bool, sqlx::Error> {
        dispatch!(self, db => db.has_accounts().await)
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
    pub(super) async fn server_state(&self, name: &str) -> Result<Option<Vec<u8>>, sqlx::Error> {
        sqlx::query_scalar("SELECT value FROM server_state WHERE name = $1")
            .bind(name)
            .fetch_optional(self.reader())
            .await
    }

    pub(super) async fn init_server_state(
        &self,
        name: &str,
        value: &[u8],
    ) -> Result<Vec<u8>, sqlx::Error> {
        let mut w = self.write().await?;
        // Another node may insert first; then its value wins and is returned.
        sqlx::query(
            "INSERT INTO server_state (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(value)
        .execute(&mut *w.tx)
        .await?;
        let stored = sqlx::query_scalar("SELECT value FROM server_state WHERE name = $1")
            .bind(name)
            .fetch_one(&mut *w.tx)
            .await?;
        w.commit().await?;
        Ok(stored)
    }

    pub(super) async fn delete_server_state(&self, name: &str) -> Result<bool, sqlx::Error> {
        let mut w = self.write().await?;
        let deleted = sqlx::query("DELETE FROM server_state WHERE name = $1")
            .bind(name)
            .execute(&mut *w.tx)
            .await?;
        w.commit().await?;
        Ok(DB::rows_affected(&deleted) > 0)
    }

    pub(super) async fn has_accounts(&self) -> Result<bool, sqlx::Error> {
        let any: Option<i64> = sqlx::query_scalar("SELECT id FROM accounts LIMIT 1")
            .fetch_optional(self.reader())
            .await?;
        Ok(any.is_some())
    }
}
