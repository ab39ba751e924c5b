//! Sealed sender in the database: the public halves of conversation epochs' sealed-sender keys,
//! as member devices register them. Sealed sends themselves go through the send path
//! (`send.rs`) with [`super::Sender::sealed`].

use sqlx::{ColumnIndex, Executor, IntoArguments};

use super::{Backend, Column, Db, Param, Sender, Store, dispatch, to_i64};

/// Epochs before the current one whose keys are kept. Sealed messages are taken in the
/// current epoch only; the one before is kept for a registration racing a commit.
pub(crate) const SEALED_EPOCHS_KEPT: u64 = 1;

/// What became of a key registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Registration {
    /// Stored (or stored before) for the conversation's current epoch.
    Registered,
    /// No such conversation.
    UnknownConversation,
    /// The device is not a member.
    NotAMember,
    /// The conversation is at another epoch.
    EpochConflict {
        /// Where it is.
        current: u64,
    },
}

impl Store {
    /// Registers `key` as device `sender`'s view of the sealed-sender key of `conversation`
    /// at `epoch`, which must be its current epoch; with `accept`, the conversation is
    /// accepted for the device's account (it is about to send in it). Forgets the keys of
    /// epochs older than [`SEALED_EPOCHS_KEPT`] before the current one.
    pub(crate) async fn register_sealed_key(
        &self,
        conversation: &str,
        sender: &Sender,
        epoch: u64,
        key: &[u8],
        accept: bool,
    ) -> Result<Registration, sqlx::Error> {
        dispatch!(self, db => db.register_sealed_key(conversation, sender, epoch, key, accept).await)
    }

    /// The keys registered for `conversation` at `epoch`.
    pub(crate) async fn sealed_keys(
        &self,
        conversation: &str,
        epoch: u64,
    ) -> Result<Vec<Vec<u8>>, sqlx::Error> {
        dispatch!(self, db => db.sealed_keys(conversation, epoch).await)
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
    async fn register_sealed_key(
        &self,
        conversation: &str,
        sender: &Sender,
        epoch: u64,
        key: &[u8],
        accept: bool,
    ) -> Result<Registration, sqlx::Error> {
        let mut w = self.write().await?;
        let row = Self::lock_conversation(&mut w.tx, conversation, &sender.address).await?;
        let (current, member) = match row {
            None => return Ok(Registration::UnknownConversation),
            Some(facts) => (facts.epoch, facts.sender_is_member),
        };
        if !member {
            return Ok(Registration::NotAMember);
        }
        if current != epoch {
            return Ok(Registration::EpochConflict { current });
        }
        sqlx::query(
            "INSERT INTO sealed_keys (conversation_id, epoch, device_pk, public_key) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (conversation_id, epoch, device_pk) \
             DO UPDATE SET public_key = excluded.public_key",
        )
        .bind(conversation)
        .bind(to_i64(epoch))
        .bind(sender.device_pk)
        .bind(key)
        .execute(&mut *w.tx)
        .await?;
        sqlx::query("DELETE FROM sealed_keys WHERE conversation_id = $1 AND epoch < $2")
            .bind(conversation)
            .bind(to_i64(epoch.saturating_sub(SEALED_EPOCHS_KEPT)))
            .execute(&mut *w.tx)
            .await?;
        // Sending in a conversation accepts it; a sealed send cannot say who sent it, so the
        // registration before it does.
        if accept {
            sqlx::query(
                "INSERT INTO conversation_consent (conversation_id, account_id, inviter_id, state) \
             VALUES ($1, $2, NULL, 'accepted') ON CONFLICT (conversation_id, account_id) \
             DO UPDATE SET state = 'accepted'",
            )
            .bind(conversation)
            .bind(sender.account_id)
            .execute(&mut *w.tx)
            .await?;
        }
        w.commit().await?;
        Ok(Registration::Registered)
    }

    async fn sealed_keys(
        &self,
        conversation: &str,
        epoch: u64,
    ) -> Result<Vec<Vec<u8>>, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT public_key FROM sealed_keys WHERE conversation_id = $1 AND epoch = $2",
        )
        .bind(conversation)
        .bind(to_i64(epoch))
        .fetch_all(self.reader())
        .await
    }
}

#[cfg(test)]
mod tests {
    use nightjar_api::EnvelopeKind;

    use super::super::test_support::{account, checked, each_backend, submit};
    use super::super::{SendOutcome, Sender, Store};
    use super::*;
    use crate::rules::delivery::Refusal;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sealed_send_reaches_every_member_names_nobody_and_only_in_the_current_epoch() {
        for store in each_backend("sealed_sends").await {
            sealed_sends_on(&store).await;
        }
    }

    async fn sealed_sends_on(store: &Store) {
        let alice = account(store, "alice", "000000000000000a", 1).await;
        let bob = account(store, "bob", "000000000000000b", 2).await;
        let carol = account(store, "carol", "000000000000000c", 3).await;
        let create = checked(EnvelopeKind::Commit, 0, &[&alice, &bob]);
        let conversation = create.conversation.to_string();
        assert!(matches!(
            submit(store, &alice, &create, "create", 1, 100).await,
            SendOutcome::Accepted { .. }
        ));
        let sealed = Sender::sealed();
        let mut message = checked(EnvelopeKind::Application, 1, &[]);
        message.payload = b"sealed".to_vec();
        let first = submit(store, &sealed, &message, "s1", 2, 100).await;
        let SendOutcome::Accepted { response, .. } = &first else {
            panic!("{first:?}")
        };
        // A retry with the same submission id is answered from the first.
        assert_eq!(
            submit(store, &sealed, &message, "s1", 3, 100).await,
            SendOutcome::Repeated(response.clone())
        );
        // Every member device gets it, the sender's own included, and nobody is named.
        for device in [&alice, &bob] {
            let inbox = store.inbox(device.device_pk, 0, 100).await.unwrap();
            let sealed: Vec<_> = inbox
                .iter()
                .filter(|e| e.kind == EnvelopeKind::Application)
                .collect();
            assert_eq!(sealed.len(), 1, "{inbox:?}");
            assert_eq!(sealed[0].sender.username, "");
            assert_eq!(sealed[0].sender.device_id, "");
        }

        // Registration: members only, current epoch only.
        assert_eq!(
            store
                .register_sealed_key(&conversation, &carol, 1, &[9; 32], true)
                .await
                .unwrap(),
            Registration::NotAMember
        );
        assert_eq!(
            store
                .register_sealed_key(&conversation, &bob, 2, &[9; 32], true)
                .await
                .unwrap(),
            Registration::EpochConflict { current: 1 }
        );
        assert_eq!(
            store
                .register_sealed_key(&conversation, &bob, 1, &[9; 32], true)
                .await
                .unwrap(),
            Registration::Registered
        );
        assert_eq!(
            store
                .register_sealed_key(&conversation, &alice, 1, &[8; 32], false)
                .await
                .unwrap(),
            Registration::Registered
        );
        let mut keys = store.sealed_keys(&conversation, 1).await.unwrap();
        keys.sort();
        assert_eq!(keys, [vec![8; 32], vec![9; 32]]);

        // A commit moves the conversation on: a sealed message of the old epoch (a removed
        // member still holds its key) is refused.
        let commit = checked(EnvelopeKind::Commit, 1, &[&alice, &bob]);
        assert!(matches!(
            submit(store, &alice, &commit, "commit", 4, 100).await,
            SendOutcome::Accepted { .. }
        ));
        let mut late = checked(EnvelopeKind::Application, 1, &[]);
        late.payload = b"late".to_vec();
        assert_eq!(
            submit(store, &sealed, &late, "s2", 5, 100).await,
            SendOutcome::Refused(Refusal::EpochConflict { current: 2 })
        );
    }
}
