//! Delivery: reading, acknowledging and counting per-device queues. Storing a message is the
//! send path (`send.rs`, run in batches by `batch.rs`); this is everything after it.

use nightjar_api::{B64, DeviceAddress, Envelope, EnvelopeKind, FrankingStamp, SendResponse};
use sqlx::{ColumnIndex, Executor, IntoArguments, QueryBuilder, Transaction};

use super::acks::AckRequest;
use super::backend::MAX_IDS;
use super::{Backend, Column, Db, Param, Store, dispatch, to_i64, to_u64};

/// The authenticated sending device, or [`Sender::sealed`] for a sealed application message.
#[derive(Debug, Clone)]
pub(crate) struct Sender {
    pub(crate) device_pk: i64,
    /// The row id of the device's account.
    pub(crate) account_id: i64,
    pub(crate) address: DeviceAddress,
}

impl Sender {
    /// The sender of a sealed message: some member device of the conversation, unknown to the
    /// server (row ids 0, an empty address; stored as the empty sender).
    pub(crate) fn sealed() -> Self {
        Self {
            device_pk: 0,
            account_id: 0,
            address: DeviceAddress {
                username: String::new(),
                device_id: String::new(),
            },
        }
    }

    /// Whether this is [`Sender::sealed`].
    pub(crate) fn is_sealed(&self) -> bool {
        self.device_pk == 0
    }
}

/// What became of a send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SendOutcome {
    /// Queued durably for `recipients` (device row ids); `queued` envelopes in all.
    Accepted {
        response: SendResponse,
        recipients: Vec<i64>,
        queued: u64,
    },
    /// The idempotency key was used before: the first answer, nothing queued.
    Repeated(SendResponse),
    /// Ordering refused it.
    Refused(crate::rules::delivery::Refusal),
    /// A recipient's queue is full; nothing was queued.
    QueueFull,
    /// Consent refused it for every recipient account; nothing was queued.
    NotAccepted(crate::rules::consent::ConsentRefusal),
}

pub(super) fn kind_text(kind: EnvelopeKind) -> &'static str {
    match kind {
        EnvelopeKind::Application => "application",
        EnvelopeKind::Commit => "commit",
        EnvelopeKind::Proposal => "proposal",
        EnvelopeKind::Welcome => "welcome",
    }
}

fn kind_from(text: &str) -> EnvelopeKind {
    match text {
        "commit" => EnvelopeKind::Commit,
        "proposal" => EnvelopeKind::Proposal,
        "welcome" => EnvelopeKind::Welcome,
        _ => EnvelopeKind::Application,
    }
}

impl Store {
    /// Up to `limit` queued envelopes of the device with ids above `after`, oldest first.
    pub(crate) async fn inbox(
        &self,
        device_pk: i64,
        after: u64,
        limit: u32,
    ) -> Result<Vec<Envelope>, sqlx::Error> {
        dispatch!(self, db => db.inbox(device_pk, after, limit).await)
    }

    /// Deletes acknowledged envelopes of the device (ids of other devices are ignored) and
    /// messages no queue refers to any more, in one transaction with whatever other
    /// acknowledgements arrive at the same time. Returns how many envelopes were deleted.
    pub(crate) async fn ack(&self, device_pk: i64, ids: &[u64]) -> Result<u64, sqlx::Error> {
        if ids.is_empty() {
            return Ok(0);
        }
        self.acks
            .submit(AckRequest {
                device_pk,
                seqs: ids.iter().map(|id| to_i64(*id)).collect(),
            })
            .await
    }

    /// Envelopes queued for all devices.
    pub(crate) async fn queue_depth(&self) -> Result<u64, sqlx::Error> {
        dispatch!(self, db => db.queue_depth().await)
    }

    /// The last queue id handed out to each of `devices` that exists: `(device, id)`.
    pub(crate) async fn queue_heads(
        &self,
        devices: &[i64],
    ) -> Result<Vec<(i64, u64)>, sqlx::Error> {
        dispatch!(self, db => db.queue_heads(devices).await)
    }

    /// Messages stored (each once, however many queues hold it).
    #[cfg(test)]
    pub(crate) async fn stored_messages(&self) -> Result<u64, sqlx::Error> {
        dispatch!(self, db => db.stored_messages().await)
    }

    /// The conversation's epoch and member devices, if it exists.
    #[cfg(test)]
    pub(crate) async fn conversation(
        &self,
        id: &str,
    ) -> Result<Option<(u64, Vec<DeviceAddress>)>, sqlx::Error> {
        dispatch!(self, db => db.conversation(id).await)
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
    /// Locks the existing ones of `devices` (sorted, distinct) in id order and returns
    /// `(id, queue_seq, queue_len)` of each. Every transaction that changes queues locks the
    /// device rows first, in this order, so writers on several nodes never deadlock on them.
    pub(super) async fn lock_devices(
        tx: &mut Transaction<'static, DB>,
        devices: &[i64],
    ) -> Result<Vec<(i64, i64, i64)>, sqlx::Error> {
        let mut rows = Vec::with_capacity(devices.len());
        for chunk in devices.chunks(MAX_IDS) {
            let mut q =
                QueryBuilder::<DB>::new("SELECT id, queue_seq, queue_len FROM devices WHERE ");
            DB::push_id_filter(&mut q, "id", chunk);
            q.push(" ORDER BY id").push(DB::FOR_NO_KEY_UPDATE);
            rows.extend(
                q.build_query_as::<(i64, i64, i64)>()
                    .fetch_all(&mut **tx)
                    .await?,
            );
        }
        Ok(rows)
    }

    pub(super) async fn inbox(
        &self,
        device_pk: i64,
        after: u64,
        limit: u32,
    ) -> Result<Vec<Envelope>, sqlx::Error> {
        type Row = (
            i64,
            Option<String>,
            String,
            String,
            String,
            Vec<u8>,
            i64,
            Option<Vec<u8>>,
            Option<Vec<u8>>,
            i64,
        );
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT q.seq, m.conversation_id, m.sender_username, m.sender_device_id, m.kind, \
             m.payload, q.created_at_ms, m.franking_commitment, m.franking_tag, \
             m.created_at_ms FROM queue q JOIN messages m ON m.id = q.message_id \
             WHERE q.device_pk = $1 AND q.seq > $2 ORDER BY q.seq LIMIT $3",
        )
        .bind(device_pk)
        .bind(to_i64(after))
        .bind(i64::from(limit))
        .fetch_all(self.reader())
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(
                    id,
                    conversation_id,
                    username,
                    device_id,
                    kind,
                    payload,
                    at,
                    commitment,
                    tag,
                    stamped_at,
                )| Envelope {
                    id: to_u64(id),
                    conversation_id,
                    sender: DeviceAddress {
                        username,
                        device_id,
                    },
                    kind: kind_from(&kind),
                    payload: B64(payload),
                    server_time_ms: to_u64(at),
                    franking: commitment.zip(tag).map(|(commitment, tag)| FrankingStamp {
                        commitment: B64(commitment),
                        tag: B64(tag),
                        time_ms: to_u64(stamped_at),
                    }),
                },
            )
            .collect())
    }

    pub(super) async fn queue_depth(&self) -> Result<u64, sqlx::Error> {
        let n: i64 =
            sqlx::query_scalar("SELECT CAST(COALESCE(SUM(queue_len), 0) AS BIGINT) FROM devices")
                .fetch_one(self.reader())
                .await?;
        Ok(to_u64(n))
    }

    pub(super) async fn queue_heads(
        &self,
        devices: &[i64],
    ) -> Result<Vec<(i64, u64)>, sqlx::Error> {
        let mut heads = Vec::with_capacity(devices.len());
        for chunk in devices.chunks(MAX_IDS) {
            let mut q = QueryBuilder::<DB>::new("SELECT id, queue_seq FROM devices WHERE ");
            DB::push_id_filter(&mut q, "id", chunk);
            let rows: Vec<(i64, i64)> = q.build_query_as().fetch_all(self.reader()).await?;
            heads.extend(rows.into_iter().map(|(pk, seq)| (pk, to_u64(seq))));
        }
        Ok(heads)
    }

    #[cfg(test)]
    pub(super) async fn stored_messages(&self) -> Result<u64, sqlx::Error> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM messages")
            .fetch_one(self.reader())
            .await?;
        Ok(to_u64(n))
    }

    #[cfg(test)]
    pub(super) async fn conversation(
        &self,
        id: &str,
    ) -> Result<Option<(u64, Vec<DeviceAddress>)>, sqlx::Error> {
        let epoch: Option<i64> =
            sqlx::query_scalar("SELECT epoch FROM conversations WHERE id = $1")
                .bind(id)
                .fetch_optional(self.reader())
                .await?;
        let Some(epoch) = epoch else {
            return Ok(None);
        };
        let members: Vec<(String, String)> = sqlx::query_as(
            "SELECT username, device_id FROM conversation_members WHERE conversation_id = $1 \
             ORDER BY username, device_id",
        )
        .bind(id)
        .fetch_all(self.reader())
        .await?;
        Ok(Some((
            to_u64(epoch),
            members
                .into_iter()
                .map(|(username, device_id)| DeviceAddress {
                    username,
                    device_id,
                })
                .collect(),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{account, checked as send, each_backend, submit};
    use super::*;
    use crate::rules::delivery::Refusal;
    use nightjar_core::ConversationId;

    #[tokio::test]
    async fn ordering_fan_out_idempotency_and_acks() {
        for store in each_backend("ordering_fan_out_idempotency_and_acks").await {
            ordering_fan_out_idempotency_and_acks_on(&store).await;
        }
    }

    async fn ordering_fan_out_idempotency_and_acks_on(store: &Store) {
        let alice = account(store, "alice", "000000000000000a", 1).await;
        let bob = account(store, "bob", "000000000000000b", 2).await;
        let carol = account(store, "carol", "000000000000000c", 3).await;

        let mut create = send(EnvelopeKind::Commit, 0, &[&alice, &bob]);
        create.welcome = Some((b"welcome".to_vec(), vec![bob.address.clone()]));
        let first = submit(store, &alice, &create, "k1", 10, 100).await;
        let SendOutcome::Accepted {
            response,
            recipients,
            queued,
        } = first
        else {
            panic!("{first:?}")
        };
        assert_eq!(response.epoch, 1);
        assert_eq!((recipients, queued), (vec![bob.device_pk], 1));
        // The same key again: the first answer, nothing queued.
        assert_eq!(
            submit(store, &alice, &create, "k1", 11, 100).await,
            SendOutcome::Repeated(response.clone())
        );
        // Another commit for epoch 0 lost.
        assert_eq!(
            submit(store, &bob, &create, "k1", 11, 100).await,
            SendOutcome::Refused(Refusal::EpochConflict { current: 1 })
        );
        let (epoch, members) = store
            .conversation(&ConversationId([1; 16]).to_string())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(epoch, 1);
        assert_eq!(members, vec![alice.address.clone(), bob.address.clone()]);

        // Application messages fan out to the other members only.
        let hello = send(EnvelopeKind::Application, 1, &[]);
        let out = submit(store, &bob, &hello, "k2", 12, 100).await;
        assert!(
            matches!(out, SendOutcome::Accepted { ref recipients, .. } if *recipients == [alice.device_pk])
        );
        assert_eq!(
            submit(store, &carol, &hello, "k2", 12, 100).await,
            SendOutcome::Refused(Refusal::NotAMember)
        );
        // alice holds one envelope: a limit of one refuses the next.
        assert_eq!(
            submit(store, &bob, &hello, "k3", 13, 1).await,
            SendOutcome::QueueFull
        );

        // bob's queue: the Welcome; acking deletes it and its message.
        let inbox = store.inbox(bob.device_pk, 0, 10).await.unwrap();
        assert_eq!(inbox.len(), 1);
        assert_eq!(inbox[0].kind, EnvelopeKind::Welcome);
        assert_eq!(inbox[0].payload.0, b"welcome");
        // Ids are per device: an id not in the queue is ignored.
        assert_eq!(
            store.ack(bob.device_pk, &[inbox[0].id + 1]).await.unwrap(),
            0
        );
        assert_eq!(store.ack(bob.device_pk, &[inbox[0].id]).await.unwrap(), 1);
        assert!(store.inbox(bob.device_pk, 0, 10).await.unwrap().is_empty());
        assert_eq!(store.queue_depth().await.unwrap(), 1);

        // Expiry sweeps old envelopes and their messages. The creating commit reached
        // nobody, so it was never stored.
        let report = store
            .sweep(
                1_000 + crate::store::STORED_TIME_MS,
                crate::store::Lifetimes {
                    message_ttl_ms: 500,
                    pending_ttl_ms: 500,
                    claim_window_ms: 500,
                },
            )
            .await
            .unwrap();
        assert_eq!(report.envelopes, 1);
        assert_eq!(report.messages, 1);
        assert_eq!(store.queue_depth().await.unwrap(), 0);
        assert_eq!(store.stored_messages().await.unwrap(), 0);
    }
}
