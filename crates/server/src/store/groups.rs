//! Each conversation's public MLS state and waiting proposals, which commits and proposals are
//! validated against (`rules/commits.rs`), and the registered signature keys of devices.
//!
//! Only the handshake path reads these; application messages never do (they are routed by
//! `conversation_members`, which the commit path keeps equal to the validated member set).
//! The writes happen in the send transaction (`send.rs`), with the conversation row locked.

use std::collections::HashMap;

use nightjar_api::DeviceAddress;
use sqlx::{ColumnIndex, Executor, IntoArguments, QueryBuilder, Transaction};

use super::{Backend, Column, Db, Param, Store, dispatch, to_i64, to_u64};

/// What the server holds about a conversation's group state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StoredGroup {
    /// No such conversation.
    Missing,
    /// The conversation exists but predates server-side validation.
    NoState,
    /// The public state at `epoch` and the proposals waiting in that epoch.
    State {
        /// The conversation's epoch.
        epoch: u64,
        /// The encoded public state.
        state: Vec<u8>,
        /// The waiting proposals' messages, oldest first.
        proposals: Vec<Vec<u8>>,
    },
}

/// A member device of a conversation that exists and is active.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemberDevice {
    /// Its address.
    pub(crate) address: DeviceAddress,
    /// Its row id.
    pub(crate) device_pk: i64,
}

impl Store {
    /// The member devices of `conversation` by the last commit the server accepted
    /// (`conversation_members`) that exist and are active: who may be in its group call.
    /// Empty for an unknown conversation.
    pub(crate) async fn active_members(
        &self,
        conversation: &str,
    ) -> Result<Vec<MemberDevice>, sqlx::Error> {
        dispatch!(self, db => db.active_members(conversation).await)
    }

    /// The public group state of `conversation`, read outside any transaction: the send
    /// transaction checks the epoch again before writing anything that depends on it.
    pub(crate) async fn group_state(&self, conversation: &str) -> Result<StoredGroup, sqlx::Error> {
        dispatch!(self, db => db.group_state(conversation).await)
    }

    /// The registered signature keys of those of `addresses` that are active devices.
    pub(crate) async fn device_keys(
        &self,
        addresses: &[DeviceAddress],
    ) -> Result<HashMap<DeviceAddress, Vec<u8>>, sqlx::Error> {
        dispatch!(self, db => db.device_keys(addresses).await)
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
    async fn group_state(&self, conversation: &str) -> Result<StoredGroup, sqlx::Error> {
        let row: Option<(i64, Option<Vec<u8>>)> = sqlx::query_as(
            "SELECT c.epoch, g.state FROM conversations c \
             LEFT JOIN group_states g ON g.conversation_id = c.id WHERE c.id = $1",
        )
        .bind(conversation)
        .fetch_optional(self.reader())
        .await?;
        let Some((epoch, state)) = row else {
            return Ok(StoredGroup::Missing);
        };
        let Some(state) = state else {
            return Ok(StoredGroup::NoState);
        };
        let proposals: Vec<Vec<u8>> = sqlx::query_scalar(
            "SELECT message FROM group_proposals WHERE conversation_id = $1 AND epoch = $2 \
             ORDER BY id",
        )
        .bind(conversation)
        .bind(epoch)
        .fetch_all(self.reader())
        .await?;
        Ok(StoredGroup::State {
            epoch: to_u64(epoch),
            state,
            proposals,
        })
    }

    async fn active_members(&self, conversation: &str) -> Result<Vec<MemberDevice>, sqlx::Error> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT m.username, m.device_id, d.id FROM conversation_members m \
             JOIN accounts a ON a.username = m.username \
             JOIN devices d ON d.account_id = a.id AND d.device_id = m.device_id \
             WHERE m.conversation_id = $1 AND d.status = 'active'",
        )
        .bind(conversation)
        .fetch_all(self.reader())
        .await?;
        Ok(rows
            .into_iter()
            .map(|(username, device_id, device_pk)| MemberDevice {
                address: DeviceAddress {
                    username,
                    device_id,
                },
                device_pk,
            })
            .collect())
    }

    async fn device_keys(
        &self,
        addresses: &[DeviceAddress],
    ) -> Result<HashMap<DeviceAddress, Vec<u8>>, sqlx::Error> {
        let mut out = HashMap::new();
        for chunk in addresses.chunks(1_000) {
            let mut q = QueryBuilder::<DB>::new(
                "SELECT a.username, d.device_id, d.signature_key FROM accounts a \
                 JOIN devices d ON d.account_id = a.id \
                 WHERE d.status = 'active' AND (a.username, d.device_id) IN (",
            );
            q.push_values(chunk, |mut row, a| {
                row.push_bind(a.username.as_str())
                    .push_bind(a.device_id.as_str());
            });
            q.push(")");
            let rows: Vec<(String, String, Vec<u8>)> = q
                .build_query_as()
                .persistent(false)
                .fetch_all(self.reader())
                .await?;
            out.extend(rows.into_iter().map(|(username, device_id, key)| {
                (
                    DeviceAddress {
                        username,
                        device_id,
                    },
                    key,
                )
            }));
        }
        Ok(out)
    }

    /// Stores the state an accepted commit produced and drops the proposals it settled.
    pub(super) async fn write_group_state(
        tx: &mut Transaction<'static, DB>,
        conversation: &str,
        epoch: u64,
        state: &[u8],
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO group_states (conversation_id, epoch, state) VALUES ($1, $2, $3) \
             ON CONFLICT (conversation_id) DO UPDATE SET epoch = $2, state = $3",
        )
        .bind(conversation)
        .bind(to_i64(epoch))
        .bind(state)
        .execute(&mut **tx)
        .await?;
        sqlx::query("DELETE FROM group_proposals WHERE conversation_id = $1")
            .bind(conversation)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Keeps a validated proposal for the commit of its epoch.
    pub(super) async fn add_proposal(
        tx: &mut Transaction<'static, DB>,
        conversation: &str,
        epoch: u64,
        message: &[u8],
    ) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO group_proposals (conversation_id, epoch, message) VALUES ($1, $2, $3)",
        )
        .bind(conversation)
        .bind(to_i64(epoch))
        .bind(message)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }
}
