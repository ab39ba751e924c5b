//! OPAQUE logins between their two steps. They live in the database so that any node can
//! finish a login another node started; what is stored is sealed by the caller under a key the
//! database never sees.

use sqlx::{ColumnIndex, Executor, IntoArguments};

use super::{Backend, Column, Db, Param, Store, dispatch, to_i64, to_u64};

/// Caps on open logins checked when one is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LoginCaps {
    /// Most open logins server-wide, if capped (a storage backstop).
    pub(crate) total: Option<usize>,
    /// Most open logins from one client address group.
    pub(crate) per_address: usize,
}

/// A started login as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StoredLogin {
    /// The account's row id and canonical name; `None` for an unknown username.
    pub(crate) account: Option<(i64, String)>,
    /// The sealed OPAQUE server state.
    pub(crate) sealed: Vec<u8>,
}

impl Store {
    /// Stores a started login from client address group `address` under `handle` until
    /// `expires_at_ms`, unless a cap of open logins is reached already (then `false`).
    pub(crate) async fn insert_login(
        &self,
        handle: &[u8],
        login: &StoredLogin,
        address: &str,
        now_ms: u64,
        expires_at_ms: u64,
        caps: LoginCaps,
    ) -> Result<bool, sqlx::Error> {
        dispatch!(self, db => {
            db.insert_login(handle, login, address, now_ms, expires_at_ms, caps).await
        })
    }

    /// Removes and returns the login stored under `handle` if it has not expired; a second
    /// call finds nothing.
    pub(crate) async fn take_login(
        &self,
        handle: &[u8],
        now_ms: u64,
    ) -> Result<Option<StoredLogin>, sqlx::Error> {
        dispatch!(self, db => db.take_login(handle, now_ms).await)
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
    pub(super) async fn insert_login(
        &self,
        handle: &[u8],
        login: &StoredLogin,
        address: &str,
        now_ms: u64,
        expires_at_ms: u64,
        caps: LoginCaps,
    ) -> Result<bool, sqlx::Error> {
        let cap = |max: usize| u64::try_from(max).unwrap_or(u64::MAX);
        let from_address: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pending_logins WHERE address = $1 AND expires_at_ms > $2",
        )
        .bind(address)
        .bind(to_i64(now_ms))
        .fetch_one(self.reader())
        .await?;
        if to_u64(from_address) >= cap(caps.per_address) {
            return Ok(false);
        }
        if let Some(total) = caps.total {
            let open: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM pending_logins WHERE expires_at_ms > $1")
                    .bind(to_i64(now_ms))
                    .fetch_one(self.reader())
                    .await?;
            if to_u64(open) >= cap(total) {
                return Ok(false);
            }
        }
        let (account_id, username) = match &login.account {
            Some((id, name)) => (*id, Some(name.as_str())),
            None => (0, None),
        };
        let mut w = self.write().await?;
        sqlx::query(
            "INSERT INTO pending_logins \
             (handle, account_id, username, sealed, expires_at_ms, address) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(handle)
        .bind(account_id)
        .bind(username)
        .bind(login.sealed.as_slice())
        .bind(to_i64(expires_at_ms))
        .bind(address)
        .execute(&mut *w.tx)
        .await?;
        w.commit().await?;
        Ok(true)
    }

    pub(super) async fn take_login(
        &self,
        handle: &[u8],
        now_ms: u64,
    ) -> Result<Option<StoredLogin>, sqlx::Error> {
        let mut w = self.write().await?;
        let row: Option<(i64, Option<String>, Vec<u8>, i64)> = sqlx::query_as(
            "DELETE FROM pending_logins WHERE handle = $1 \
             RETURNING account_id, username, sealed, expires_at_ms",
        )
        .bind(handle)
        .fetch_optional(&mut *w.tx)
        .await?;
        w.commit().await?;
        Ok(row
            .filter(|(_, _, _, expires)| to_u64(*expires) > now_ms)
            .map(|(account_id, username, sealed, _)| StoredLogin {
                account: username.map(|name| (account_id, name)),
                sealed,
            }))
    }
}
