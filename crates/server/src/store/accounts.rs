//! Accounts: username, OPAQUE password file, identity key and the current signed device list.

use sqlx::{ColumnIndex, Executor, IntoArguments};

use super::{Backend, Column, Db, Param, Store, dispatch, to_i64};

/// One stored account as peers see it, plus its row id.
#[derive(Debug, Clone)]
pub(crate) struct AccountRow {
    pub(crate) id: i64,
    pub(crate) username: String,
    pub(crate) identity_key: Vec<u8>,
    pub(crate) device_list: Vec<u8>,
}

/// Everything registration creates, in one transaction.
#[derive(Debug)]
pub(crate) struct NewAccount {
    pub(crate) username: String,
    pub(crate) opaque_record: Vec<u8>,
    pub(crate) identity_key: Vec<u8>,
    pub(crate) device_list: Vec<u8>,
    pub(crate) device_id: String,
    pub(crate) signature_key: Vec<u8>,
    /// `(digest, bytes)` of each one-time key package.
    pub(crate) key_packages: Vec<([u8; 32], Vec<u8>)>,
    /// `(digest, bytes)` of the last-resort key package.
    pub(crate) last_resort: ([u8; 32], Vec<u8>),
    pub(crate) token_hash: [u8; 32],
    pub(crate) expires_at_ms: u64,
    pub(crate) now_ms: u64,
}

impl Store {
    /// Whether `username` (canonical, lower case) is taken.
    pub(crate) async fn username_taken(&self, username: &str) -> Result<bool, sqlx::Error> {
        dispatch!(self, db => db.username_taken(username).await)
    }

    /// The account's row id, canonical name and OPAQUE password file.
    pub(crate) async fn password_file(
        &self,
        username: &str,
    ) -> Result<Option<(i64, String, Vec<u8>)>, sqlx::Error> {
        dispatch!(self, db => db.password_file(username).await)
    }

    /// The account named `username` (canonical, lower case).
    pub(crate) async fn account(&self, username: &str) -> Result<Option<AccountRow>, sqlx::Error> {
        dispatch!(self, db => db.account(username).await)
    }

    /// The account with row id `id`.
    pub(crate) async fn account_by_id(&self, id: i64) -> Result<Option<AccountRow>, sqlx::Error> {
        dispatch!(self, db => db.account_by_id(id).await)
    }

    /// Creates the account, its first (active) device, its key packages and a session, all or
    /// nothing. `None` means the username is taken.
    pub(crate) async fn create_account(&self, new: NewAccount) -> Result<Option<()>, sqlx::Error> {
        dispatch!(self, db => db.create_account(new).await)
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
    pub(super) async fn username_taken(&self, username: &str) -> Result<bool, sqlx::Error> {
        let found: Option<i64> = sqlx::query_scalar("SELECT id FROM accounts WHERE username = $1")
            .bind(username)
            .fetch_optional(self.reader())
            .await?;
        Ok(found.is_some())
    }

    pub(super) async fn password_file(
        &self,
        username: &str,
    ) -> Result<Option<(i64, String, Vec<u8>)>, sqlx::Error> {
        sqlx::query_as("SELECT id, username, opaque_record FROM accounts WHERE username = $1")
            .bind(username)
            .fetch_optional(self.reader())
            .await
    }

    pub(super) async fn account(&self, username: &str) -> Result<Option<AccountRow>, sqlx::Error> {
        let row: Option<(i64, String, Vec<u8>, Vec<u8>)> = sqlx::query_as(
            "SELECT id, username, identity_key, device_list FROM accounts WHERE username = $1",
        )
        .bind(username)
        .fetch_optional(self.reader())
        .await?;
        Ok(
            row.map(|(id, username, identity_key, device_list)| AccountRow {
                id,
                username,
                identity_key,
                device_list,
            }),
        )
    }

    pub(super) async fn account_by_id(&self, id: i64) -> Result<Option<AccountRow>, sqlx::Error> {
        let row: Option<(i64, String, Vec<u8>, Vec<u8>)> = sqlx::query_as(
            "SELECT id, username, identity_key, device_list FROM accounts WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.reader())
        .await?;
        Ok(
            row.map(|(id, username, identity_key, device_list)| AccountRow {
                id,
                username,
                identity_key,
                device_list,
            }),
        )
    }

    pub(super) async fn create_account(&self, new: NewAccount) -> Result<Option<()>, sqlx::Error> {
        // The first device and session keep the hour; the account only the day it was made.
        let now = to_i64(super::stored_time(new.now_ms));
        let created = to_i64(super::stored_day(new.now_ms));
        let mut w = self.write().await?;
        let account_id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO accounts (username, opaque_record, identity_key, device_list, \
             device_list_version, created_at_ms) VALUES ($1, $2, $3, $4, 1, $5) \
             ON CONFLICT (username) DO NOTHING RETURNING id",
        )
        .bind(&new.username)
        .bind(&new.opaque_record)
        .bind(&new.identity_key)
        .bind(&new.device_list)
        .bind(created)
        .fetch_optional(&mut *w.tx)
        .await?;
        let Some(account_id) = account_id else {
            return Ok(None);
        };
        let device_pk: i64 = sqlx::query_scalar(
            "INSERT INTO devices (account_id, device_id, status, signature_key, created_at_ms, \
             last_seen_ms) VALUES ($1, $2, 'active', $3, $4, $5) RETURNING id",
        )
        .bind(account_id)
        .bind(&new.device_id)
        .bind(&new.signature_key)
        .bind(now)
        .bind(created)
        .fetch_one(&mut *w.tx)
        .await?;
        let packages = new
            .key_packages
            .iter()
            .map(|(d, b)| (false, d, b))
            .chain(std::iter::once((
                true,
                &new.last_resort.0,
                &new.last_resort.1,
            )));
        Self::insert_packages(&mut w.tx, device_pk, packages).await?;
        Self::insert_session(
            &mut w.tx,
            device_pk,
            &new.token_hash,
            now,
            to_i64(new.expires_at_ms),
        )
        .await?;
        w.commit().await?;
        Ok(Some(()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::each_backend;
    use super::*;

    fn new_account(name: &str) -> NewAccount {
        NewAccount {
            username: name.into(),
            opaque_record: vec![1],
            identity_key: vec![2; 32],
            device_list: vec![3],
            device_id: "0000000000000001".into(),
            signature_key: vec![4; 32],
            key_packages: vec![([5; 32], vec![5]), ([6; 32], vec![6])],
            last_resort: ([7; 32], vec![7]),
            token_hash: [8; 32],
            expires_at_ms: 10_000,
            now_ms: 1,
        }
    }

    #[tokio::test]
    async fn create_is_unique_and_complete() {
        for store in each_backend("create_is_unique_and_complete").await {
            create_is_unique_and_complete_on(&store).await;
        }
    }

    async fn create_is_unique_and_complete_on(store: &Store) {
        assert!(
            store
                .create_account(new_account("alice"))
                .await
                .unwrap()
                .is_some()
        );
        let mut again = new_account("alice");
        again.token_hash = [9; 32];
        assert!(store.create_account(again).await.unwrap().is_none());
        assert!(store.username_taken("alice").await.unwrap());
        let account = store.account("alice").await.unwrap().unwrap();
        assert_eq!(account.identity_key, vec![2; 32]);
        let session = store.session(&[8; 32], 5).await.unwrap().unwrap();
        assert_eq!(session.username, "alice");
        let stock = store.key_package_stock(session.device_pk).await.unwrap();
        assert_eq!((stock.available, stock.last_resort), (2, true));
        // The failed duplicate left no session behind.
        assert!(store.session(&[9; 32], 5).await.unwrap().is_none());
    }
}
