//! Devices: active ones (listed in the account's signed device list) and pending ones (logged
//! in with a link offer, waiting for approval), and device-list changes.

use nightjar_api::DeviceStatus;
use sqlx::{ColumnIndex, Executor, IntoArguments, QueryBuilder};

use super::sessions::status_from;
use super::{Backend, Column, Db, Param, Store, dispatch, to_i64, to_u64};

/// One device of an account.
#[derive(Debug, Clone)]
pub(crate) struct DeviceRow {
    pub(crate) pk: i64,
    pub(crate) device_id: String,
    pub(crate) status: DeviceStatus,
    pub(crate) link_offer: Option<Vec<u8>>,
    pub(crate) sealed_identity: Option<Vec<u8>>,
    pub(crate) created_at_ms: u64,
    pub(crate) last_seen_ms: u64,
}

type Row = (
    i64,
    String,
    String,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    i64,
    i64,
);

/// `SELECT <every device column> FROM devices <rest>`.
macro_rules! select_devices {
    ($rest:literal) => {
        concat!(
            "SELECT id, device_id, status, link_offer, sealed_identity, ",
            "created_at_ms, last_seen_ms FROM devices ",
            $rest
        )
    };
}

fn device_row(r: Row) -> DeviceRow {
    DeviceRow {
        pk: r.0,
        device_id: r.1,
        status: status_from(&r.2),
        link_offer: r.3,
        sealed_identity: r.4,
        created_at_ms: to_u64(r.5),
        last_seen_ms: to_u64(r.6),
    }
}

/// What a successful OPAQUE login did with the device it names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LoginOutcome {
    /// A session was created for a known device with this status.
    Session(DeviceStatus),
    /// The device is unknown and no link offer came with the login.
    NeedsOffer,
    /// The device exists, and the login did not prove possession of its key: a password alone
    /// never signs in an existing device.
    NeedsProof,
    /// The account already has the most pending devices allowed.
    TooManyPending,
}

/// A new signed device list, with what it does to the account's devices.
#[derive(Debug)]
pub(crate) struct ListUpdate<'a> {
    pub(crate) account_id: i64,
    /// The version the change was checked against; the update fails if it moved meanwhile.
    pub(crate) expected_version: u64,
    pub(crate) device_list: &'a [u8],
    pub(crate) version: u64,
    /// Activate this pending device and store its sealed identity.
    pub(crate) approve: Option<(&'a str, &'a [u8])>,
    /// Delete these devices with their sessions, queues and key packages.
    pub(crate) remove: Vec<String>,
}

impl Store {
    /// The device `device_id` of the account.
    pub(crate) async fn device(
        &self,
        account_id: i64,
        device_id: &str,
    ) -> Result<Option<DeviceRow>, sqlx::Error> {
        dispatch!(self, db => db.device(account_id, device_id).await)
    }

    /// The device with row id `pk`.
    pub(crate) async fn device_by_pk(&self, pk: i64) -> Result<Option<DeviceRow>, sqlx::Error> {
        dispatch!(self, db => db.device_by_pk(pk).await)
    }

    /// Every device of the account, oldest first.
    pub(crate) async fn devices(&self, account_id: i64) -> Result<Vec<DeviceRow>, sqlx::Error> {
        dispatch!(self, db => db.devices(account_id).await)
    }

    /// After a successful OPAQUE login: creates a session for the device, creating it as a
    /// pending device from `offer` (`(signature key, offer bytes)`) if it is new. A pending
    /// device that logs in again with an offer replaces its offer.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn login_device(
        &self,
        account_id: i64,
        device_id: &str,
        offer: Option<(&[u8], &[u8])>,
        proven: bool,
        max_pending: u32,
        token_hash: &[u8; 32],
        now_ms: u64,
        expires_at_ms: u64,
    ) -> Result<LoginOutcome, sqlx::Error> {
        dispatch!(self, db => {
            db.login_device(
                account_id, device_id, offer, proven, max_pending, token_hash, now_ms,
                expires_at_ms,
            )
            .await
        })
    }

    /// Stores a new device list if the stored version is still `expected_version`, applying
    /// its approval or removals. Returns the row ids of removed devices, or `None` if the list,
    /// or the pending device to approve, changed meanwhile (nothing is written then).
    pub(crate) async fn update_device_list(
        &self,
        update: ListUpdate<'_>,
    ) -> Result<Option<Vec<i64>>, sqlx::Error> {
        dispatch!(self, db => db.update_device_list(update).await)
    }

    /// Deletes a pending device (a refused link request) with its sessions.
    pub(crate) async fn delete_pending_device(
        &self,
        account_id: i64,
        device_id: &str,
    ) -> Result<Option<i64>, sqlx::Error> {
        dispatch!(self, db => db.delete_pending_device(account_id, device_id).await)
    }

    /// The stored version of the account's device list.
    #[cfg(test)]
    pub(crate) async fn device_list_version(&self, account_id: i64) -> Result<u64, sqlx::Error> {
        dispatch!(self, db => db.device_list_version(account_id).await)
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
    pub(super) async fn device(
        &self,
        account_id: i64,
        device_id: &str,
    ) -> Result<Option<DeviceRow>, sqlx::Error> {
        let row: Option<Row> =
            sqlx::query_as(select_devices!("WHERE account_id = $1 AND device_id = $2"))
                .bind(account_id)
                .bind(device_id)
                .fetch_optional(self.reader())
                .await?;
        Ok(row.map(device_row))
    }

    pub(super) async fn device_by_pk(&self, pk: i64) -> Result<Option<DeviceRow>, sqlx::Error> {
        let row: Option<Row> = sqlx::query_as(select_devices!("WHERE id = $1"))
            .bind(pk)
            .fetch_optional(self.reader())
            .await?;
        Ok(row.map(device_row))
    }

    pub(super) async fn devices(&self, account_id: i64) -> Result<Vec<DeviceRow>, sqlx::Error> {
        let rows: Vec<Row> = sqlx::query_as(select_devices!("WHERE account_id = $1 ORDER BY id"))
            .bind(account_id)
            .fetch_all(self.reader())
            .await?;
        Ok(rows.into_iter().map(device_row).collect())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) async fn login_device(
        &self,
        account_id: i64,
        device_id: &str,
        offer: Option<(&[u8], &[u8])>,
        proven: bool,
        max_pending: u32,
        token_hash: &[u8; 32],
        now_ms: u64,
        expires_at_ms: u64,
    ) -> Result<LoginOutcome, sqlx::Error> {
        // Device and session rows keep the hour only (ordering the account's own list needs no more).
        let now = to_i64(super::stored_time(now_ms));
        let mut w = self.write().await?;
        // Logins to one account take turns, so the pending-device limit holds.
        let lock = format!("SELECT id FROM accounts WHERE id = $1{}", DB::FOR_UPDATE);
        sqlx::query(sqlx::AssertSqlSafe(lock))
            .bind(account_id)
            .execute(&mut *w.tx)
            .await?;
        let existing: Option<(i64, String)> = sqlx::query_as(
            "SELECT id, status FROM devices WHERE account_id = $1 AND device_id = $2",
        )
        .bind(account_id)
        .bind(device_id)
        .fetch_optional(&mut *w.tx)
        .await?;
        let (device_pk, status) = match (existing, offer) {
            (Some(_), _) if !proven => return Ok(LoginOutcome::NeedsProof),
            (Some((pk, status)), offer) => {
                let status = status_from(&status);
                if let (DeviceStatus::Pending, Some((key, bytes))) = (status, offer) {
                    sqlx::query(
                        "UPDATE devices SET signature_key = $1, link_offer = $2, created_at_ms = $3 \
                         WHERE id = $4",
                    )
                    .bind(key)
                    .bind(bytes)
                    .bind(now)
                    .bind(pk)
                    .execute(&mut *w.tx)
                    .await?;
                }
                (pk, status)
            }
            (None, None) => return Ok(LoginOutcome::NeedsOffer),
            (None, Some((key, bytes))) => {
                let pending: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM devices WHERE account_id = $1 AND status = 'pending'",
                )
                .bind(account_id)
                .fetch_one(&mut *w.tx)
                .await?;
                if to_u64(pending) >= u64::from(max_pending) {
                    return Ok(LoginOutcome::TooManyPending);
                }
                let pk = sqlx::query_scalar(
                    "INSERT INTO devices (account_id, device_id, status, signature_key, \
                     link_offer, created_at_ms, last_seen_ms) \
                     VALUES ($1, $2, 'pending', $3, $4, $5, $6) RETURNING id",
                )
                .bind(account_id)
                .bind(device_id)
                .bind(key)
                .bind(bytes)
                .bind(now)
                .bind(to_i64(super::stored_day(now_ms)))
                .fetch_one(&mut *w.tx)
                .await?;
                (pk, DeviceStatus::Pending)
            }
        };
        Self::insert_session(&mut w.tx, device_pk, token_hash, now, to_i64(expires_at_ms)).await?;
        w.commit().await?;
        Ok(LoginOutcome::Session(status))
    }

    pub(super) async fn update_device_list(
        &self,
        update: ListUpdate<'_>,
    ) -> Result<Option<Vec<i64>>, sqlx::Error> {
        let mut w = self.write().await?;
        let updated = sqlx::query(
            "UPDATE accounts SET device_list = $1, device_list_version = $2 \
             WHERE id = $3 AND device_list_version = $4",
        )
        .bind(update.device_list)
        .bind(to_i64(update.version))
        .bind(update.account_id)
        .bind(to_i64(update.expected_version))
        .execute(&mut *w.tx)
        .await?;
        if DB::rows_affected(&updated) != 1 {
            return Ok(None);
        }
        if let Some((device_id, sealed)) = update.approve {
            let approved = sqlx::query(
                "UPDATE devices SET status = 'active', sealed_identity = $1, link_offer = NULL \
                 WHERE account_id = $2 AND device_id = $3 AND status = 'pending'",
            )
            .bind(sealed)
            .bind(update.account_id)
            .bind(device_id)
            .execute(&mut *w.tx)
            .await?;
            if DB::rows_affected(&approved) != 1 {
                return Ok(None);
            }
        }
        let mut removed = Vec::new();
        if !update.remove.is_empty() {
            let mut q = QueryBuilder::<DB>::new("DELETE FROM devices WHERE account_id = ");
            q.push_bind(update.account_id).push(" AND device_id IN (");
            let mut ids = q.separated(", ");
            for id in &update.remove {
                ids.push_bind(id);
            }
            q.push(") RETURNING id");
            removed = q.build_query_scalar::<i64>().fetch_all(&mut *w.tx).await?;
        }
        w.commit().await?;
        Ok(Some(removed))
    }

    pub(super) async fn delete_pending_device(
        &self,
        account_id: i64,
        device_id: &str,
    ) -> Result<Option<i64>, sqlx::Error> {
        let mut w = self.write().await?;
        let pk = sqlx::query_scalar(
            "DELETE FROM devices WHERE account_id = $1 AND device_id = $2 AND status = 'pending' \
             RETURNING id",
        )
        .bind(account_id)
        .bind(device_id)
        .fetch_optional(&mut *w.tx)
        .await?;
        w.commit().await?;
        Ok(pk)
    }

    #[cfg(test)]
    pub(super) async fn device_list_version(&self, account_id: i64) -> Result<u64, sqlx::Error> {
        let v: i64 = sqlx::query_scalar("SELECT device_list_version FROM accounts WHERE id = $1")
            .bind(account_id)
            .fetch_one(self.reader())
            .await?;
        Ok(to_u64(v))
    }
}

#[cfg(test)]
mod tests {
    use super::super::NewAccount;
    use super::super::test_support::each_backend;
    use super::*;

    #[tokio::test]
    async fn pending_then_approved_then_removed() {
        for store in each_backend("pending_then_approved_then_removed").await {
            pending_then_approved_then_removed_on(&store).await;
        }
    }

    async fn pending_then_approved_then_removed_on(store: &Store) {
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
                expires_at_ms: 10_000,
                now_ms: 1,
            })
            .await
            .unwrap()
            .unwrap();
        let account = store.account("alice").await.unwrap().unwrap();
        let new = "0000000000000002";
        let login = |hash: [u8; 32], offer: Option<(&'static [u8], &'static [u8])>| async move {
            store
                .login_device(account.id, new, offer, false, 1, &hash, 2, 10_000)
                .await
                .unwrap()
        };
        assert_eq!(login([9; 32], None).await, LoginOutcome::NeedsOffer);
        assert_eq!(
            login([9; 32], Some((&[5; 32], b"offer"))).await,
            LoginOutcome::Session(DeviceStatus::Pending)
        );
        let pending = store.device(account.id, new).await.unwrap().unwrap();
        assert_eq!(pending.link_offer.as_deref(), Some(&b"offer"[..]));

        // A concurrent change (wrong expected version) writes nothing.
        let stale = ListUpdate {
            account_id: account.id,
            expected_version: 5,
            device_list: b"v2",
            version: 6,
            approve: Some((new, b"sealed")),
            remove: vec![],
        };
        assert!(store.update_device_list(stale).await.unwrap().is_none());
        let approve = ListUpdate {
            account_id: account.id,
            expected_version: 1,
            device_list: b"v2",
            version: 2,
            approve: Some((new, b"sealed")),
            remove: vec![],
        };
        assert_eq!(
            store.update_device_list(approve).await.unwrap(),
            Some(vec![])
        );
        let active = store.device(account.id, new).await.unwrap().unwrap();
        assert_eq!(active.status, DeviceStatus::Active);
        assert_eq!(active.sealed_identity.as_deref(), Some(&b"sealed"[..]));
        assert_eq!(store.device_list_version(account.id).await.unwrap(), 2);
        // An existing device gets a session only with proof of its key.
        let again = |proven| async move {
            store
                .login_device(account.id, new, None, proven, 1, &[10; 32], 2, 10_000)
                .await
                .unwrap()
        };
        assert_eq!(again(false).await, LoginOutcome::NeedsProof);
        assert_eq!(
            again(true).await,
            LoginOutcome::Session(DeviceStatus::Active)
        );

        let remove = ListUpdate {
            account_id: account.id,
            expected_version: 2,
            device_list: b"v3",
            version: 3,
            approve: None,
            remove: vec![new.into()],
        };
        assert_eq!(
            store.update_device_list(remove).await.unwrap(),
            Some(vec![active.pk])
        );
        // Its session went with it.
        assert!(store.session(&[9; 32], 3).await.unwrap().is_none());
        assert_eq!(store.devices(account.id).await.unwrap().len(), 1);
    }
}
