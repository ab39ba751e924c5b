//! Delivery: conversations (epoch and member devices), messages, per-device queues and
//! idempotency keys. A send is one transaction: it is durable before the sender hears "ok".

use std::collections::BTreeSet;

use nightjar_api::{B64, DeviceAddress, Envelope, EnvelopeKind, SendResponse};
use sqlx::{QueryBuilder, Sqlite, Transaction};

use super::{Store, to_i64, to_u64};
use crate::rules::delivery::{CheckedSend, ConversationFacts, Refusal, Verdict, order};

/// The authenticated sending device.
#[derive(Debug, Clone)]
pub(crate) struct Sender {
    pub(crate) device_pk: i64,
    pub(crate) address: DeviceAddress,
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
    Refused(Refusal),
    /// A recipient's queue is full; nothing was queued.
    QueueFull,
}

fn kind_text(kind: EnvelopeKind) -> &'static str {
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

type Tx = Transaction<'static, Sqlite>;

/// The conversation's member devices that exist and are active: `(address, device row id)`.
async fn routable_members(
    tx: &mut Tx,
    conversation: &str,
) -> Result<Vec<(DeviceAddress, i64)>, sqlx::Error> {
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT m.username, m.device_id, d.id FROM conversation_members m \
         JOIN accounts a ON a.username = m.username \
         JOIN devices d ON d.account_id = a.id AND d.device_id = m.device_id \
         WHERE m.conversation_id = ? AND d.status = 'active'",
    )
    .bind(conversation)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(username, device_id, pk)| {
            (
                DeviceAddress {
                    username,
                    device_id,
                },
                pk,
            )
        })
        .collect())
}

async fn conversation_facts(
    tx: &mut Tx,
    conversation: &str,
    sender: &DeviceAddress,
) -> Result<Option<ConversationFacts>, sqlx::Error> {
    let epoch: Option<i64> = sqlx::query_scalar("SELECT epoch FROM conversations WHERE id = ?")
        .bind(conversation)
        .fetch_optional(&mut **tx)
        .await?;
    let Some(epoch) = epoch else {
        return Ok(None);
    };
    let member: Option<i64> = sqlx::query_scalar(
        "SELECT 1 FROM conversation_members \
         WHERE conversation_id = ? AND username = ? AND device_id = ?",
    )
    .bind(conversation)
    .bind(&sender.username)
    .bind(&sender.device_id)
    .fetch_optional(&mut **tx)
    .await?;
    Ok(Some(ConversationFacts {
        epoch: to_u64(epoch),
        sender_is_member: member.is_some(),
    }))
}

async fn replace_members(
    tx: &mut Tx,
    conversation: &str,
    members: &[DeviceAddress],
) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM conversation_members WHERE conversation_id = ?")
        .bind(conversation)
        .execute(&mut **tx)
        .await?;
    if members.is_empty() {
        return Ok(());
    }
    let mut q = QueryBuilder::new(
        "INSERT INTO conversation_members (conversation_id, username, device_id) ",
    );
    q.push_values(members, |mut row, m| {
        row.push_bind(conversation)
            .push_bind(&m.username)
            .push_bind(&m.device_id);
    });
    q.build().execute(&mut **tx).await?;
    Ok(())
}

/// Whether any of `devices` already holds `max` or more envelopes.
async fn any_queue_full(tx: &mut Tx, devices: &[i64], max: u32) -> Result<bool, sqlx::Error> {
    if devices.is_empty() {
        return Ok(false);
    }
    let mut q = QueryBuilder::new("SELECT device_pk FROM queue WHERE device_pk IN (");
    let mut list = q.separated(", ");
    for pk in devices {
        list.push_bind(*pk);
    }
    q.push(") GROUP BY device_pk HAVING COUNT(*) >= ")
        .push_bind(i64::from(max))
        .push(" LIMIT 1");
    Ok(q.build().fetch_optional(&mut **tx).await?.is_some())
}

/// Stores one message and queues it for every recipient in a single multi-row insert.
async fn enqueue(
    tx: &mut Tx,
    conversation: Option<&str>,
    sender: &DeviceAddress,
    kind: EnvelopeKind,
    payload: &[u8],
    recipients: &[i64],
    now: i64,
) -> Result<i64, sqlx::Error> {
    let message_id: i64 = sqlx::query_scalar(
        "INSERT INTO messages (conversation_id, sender_username, sender_device_id, kind, \
         payload, created_at_ms) VALUES (?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(conversation)
    .bind(&sender.username)
    .bind(&sender.device_id)
    .bind(kind_text(kind))
    .bind(payload)
    .bind(now)
    .fetch_one(&mut **tx)
    .await?;
    if !recipients.is_empty() {
        let mut q = QueryBuilder::new("INSERT INTO queue (device_pk, message_id, created_at_ms) ");
        q.push_values(recipients, |mut row, pk| {
            row.push_bind(*pk).push_bind(message_id).push_bind(now);
        });
        q.build().execute(&mut **tx).await?;
    }
    Ok(message_id)
}

impl Store {
    /// Orders, stores and queues one message (and a commit's Welcome) in one transaction.
    pub(crate) async fn send(
        &self,
        sender: &Sender,
        send: &CheckedSend,
        idempotency_key: &str,
        now_ms: u64,
        max_queue: u32,
    ) -> Result<SendOutcome, sqlx::Error> {
        let now = to_i64(now_ms);
        let conversation = send.conversation.to_string();
        let mut w = self.write().await?;
        let tx = &mut w.tx;

        // A retry is answered before ordering, so an accepted commit is never a conflict later.
        let previous: Option<(i64, i64)> = sqlx::query_as(
            "SELECT message_id, epoch FROM idempotency WHERE device_pk = ? AND idempotency_key = ?",
        )
        .bind(sender.device_pk)
        .bind(idempotency_key)
        .fetch_optional(&mut **tx)
        .await?;
        if let Some((message_id, epoch)) = previous {
            return Ok(SendOutcome::Repeated(SendResponse {
                message_id: to_u64(message_id),
                epoch: to_u64(epoch),
            }));
        }

        let facts = conversation_facts(tx, &conversation, &sender.address).await?;
        let verdict = match order(send.kind, facts, send.epoch) {
            Ok(v) => v,
            Err(refusal) => return Ok(SendOutcome::Refused(refusal)),
        };
        if verdict == Verdict::Create {
            sqlx::query(
                "INSERT INTO conversations (id, epoch, created_at_ms, updated_at_ms) \
                 VALUES (?, 0, ?, ?)",
            )
            .bind(&conversation)
            .bind(now)
            .bind(now)
            .execute(&mut **tx)
            .await?;
            replace_members(tx, &conversation, std::slice::from_ref(&sender.address)).await?;
        }

        // Everyone but the sender who was a member when the message was made gets it; a
        // commit's removed devices included, so they learn of their removal.
        let recipients: Vec<i64> = routable_members(tx, &conversation)
            .await?
            .into_iter()
            .map(|(_, pk)| pk)
            .filter(|pk| *pk != sender.device_pk)
            .collect();
        let mut epoch_after = facts.map_or(0, |f| f.epoch);
        let mut welcome_recipients = Vec::new();
        if send.kind == EnvelopeKind::Commit {
            epoch_after = send.epoch.saturating_add(1);
            sqlx::query("UPDATE conversations SET epoch = ?, updated_at_ms = ? WHERE id = ?")
                .bind(to_i64(epoch_after))
                .bind(now)
                .bind(&conversation)
                .execute(&mut **tx)
                .await?;
            replace_members(tx, &conversation, &send.members).await?;
            if let Some((_, to)) = &send.welcome {
                let wanted: BTreeSet<&DeviceAddress> = to.iter().collect();
                welcome_recipients = routable_members(tx, &conversation)
                    .await?
                    .into_iter()
                    .filter(|(a, _)| wanted.contains(a))
                    .map(|(_, pk)| pk)
                    .collect();
            }
        }

        let mut everyone: Vec<i64> = recipients
            .iter()
            .chain(&welcome_recipients)
            .copied()
            .collect();
        everyone.sort_unstable();
        everyone.dedup();
        if any_queue_full(tx, &everyone, max_queue).await? {
            return Ok(SendOutcome::QueueFull);
        }

        let message_id = enqueue(
            tx,
            Some(&conversation),
            &sender.address,
            send.kind,
            &send.payload,
            &recipients,
            now,
        )
        .await?;
        if let Some((welcome, _)) = &send.welcome {
            enqueue(
                tx,
                None,
                &sender.address,
                EnvelopeKind::Welcome,
                welcome,
                &welcome_recipients,
                now,
            )
            .await?;
        }
        sqlx::query(
            "INSERT INTO idempotency (device_pk, idempotency_key, message_id, epoch, created_at_ms) \
             VALUES (?, ?, ?, ?, ?)",
        )
        .bind(sender.device_pk)
        .bind(idempotency_key)
        .bind(message_id)
        .bind(to_i64(epoch_after))
        .bind(now)
        .execute(&mut **tx)
        .await?;
        w.commit().await?;
        let queued = u64::try_from(recipients.len() + welcome_recipients.len()).unwrap_or(0);
        Ok(SendOutcome::Accepted {
            response: SendResponse {
                message_id: to_u64(message_id),
                epoch: epoch_after,
            },
            recipients: everyone,
            queued,
        })
    }

    /// Up to `limit` queued envelopes of the device with ids above `after`, oldest first.
    pub(crate) async fn inbox(
        &self,
        device_pk: i64,
        after: u64,
        limit: u32,
    ) -> Result<Vec<Envelope>, sqlx::Error> {
        type Row = (i64, Option<String>, String, String, String, Vec<u8>, i64);
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT q.id, m.conversation_id, m.sender_username, m.sender_device_id, m.kind, \
             m.payload, q.created_at_ms FROM queue q JOIN messages m ON m.id = q.message_id \
             WHERE q.device_pk = ? AND q.id > ? ORDER BY q.id LIMIT ?",
        )
        .bind(device_pk)
        .bind(to_i64(after))
        .bind(i64::from(limit))
        .fetch_all(self.reader())
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(id, conversation_id, username, device_id, kind, payload, at)| Envelope {
                    id: to_u64(id),
                    conversation_id,
                    sender: DeviceAddress {
                        username,
                        device_id,
                    },
                    kind: kind_from(&kind),
                    payload: B64(payload),
                    server_time_ms: to_u64(at),
                },
            )
            .collect())
    }

    /// Deletes acknowledged envelopes of the device (ids of other devices are ignored) and
    /// messages no queue refers to any more. Returns how many envelopes were deleted.
    pub(crate) async fn ack(&self, device_pk: i64, ids: &[u64]) -> Result<u64, sqlx::Error> {
        if ids.is_empty() {
            return Ok(0);
        }
        let mut w = self.write().await?;
        let mut q = QueryBuilder::new("DELETE FROM queue WHERE device_pk = ");
        q.push_bind(device_pk).push(" AND id IN (");
        let mut list = q.separated(", ");
        for id in ids {
            list.push_bind(to_i64(*id));
        }
        q.push(") RETURNING message_id");
        let mut messages: Vec<i64> = q.build_query_scalar().fetch_all(&mut *w.tx).await?;
        let deleted = u64::try_from(messages.len()).unwrap_or(0);
        messages.sort_unstable();
        messages.dedup();
        if !messages.is_empty() {
            let mut q = QueryBuilder::new("DELETE FROM messages WHERE id IN (");
            let mut list = q.separated(", ");
            for id in &messages {
                list.push_bind(*id);
            }
            q.push(") AND NOT EXISTS (SELECT 1 FROM queue WHERE queue.message_id = messages.id)");
            q.build().execute(&mut *w.tx).await?;
        }
        w.commit().await?;
        Ok(deleted)
    }

    /// Envelopes queued for all devices.
    pub(crate) async fn queue_depth(&self) -> Result<u64, sqlx::Error> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM queue")
            .fetch_one(self.reader())
            .await?;
        Ok(to_u64(n))
    }

    /// The conversation's epoch and member devices, if it exists.
    #[cfg(test)]
    pub(crate) async fn conversation(
        &self,
        id: &str,
    ) -> Result<Option<(u64, Vec<DeviceAddress>)>, sqlx::Error> {
        let epoch: Option<i64> = sqlx::query_scalar("SELECT epoch FROM conversations WHERE id = ?")
            .bind(id)
            .fetch_optional(self.reader())
            .await?;
        let Some(epoch) = epoch else {
            return Ok(None);
        };
        let members: Vec<(String, String)> = sqlx::query_as(
            "SELECT username, device_id FROM conversation_members WHERE conversation_id = ? \
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
    use super::super::NewAccount;
    use super::super::test_support::temp_store;
    use super::*;
    use nightjar_core::ConversationId;

    async fn account(store: &Store, name: &str, device: &str, token: u8) -> Sender {
        store
            .create_account(NewAccount {
                username: name.into(),
                opaque_record: vec![1],
                identity_key: vec![2; 32],
                device_list: vec![3],
                device_id: device.into(),
                signature_key: vec![4; 32],
                key_packages: vec![],
                last_resort: ([token; 32], vec![7]),
                token_hash: [token; 32],
                expires_at_ms: u64::MAX / 2,
                now_ms: 1,
            })
            .await
            .unwrap()
            .unwrap();
        let session = store.session(&[token; 32], 2).await.unwrap().unwrap();
        Sender {
            device_pk: session.device_pk,
            address: DeviceAddress {
                username: name.into(),
                device_id: device.into(),
            },
        }
    }

    fn send(kind: EnvelopeKind, epoch: u64, members: &[&Sender]) -> CheckedSend {
        CheckedSend {
            conversation: ConversationId([1; 16]),
            kind,
            epoch,
            payload: format!("{kind:?}@{epoch}").into_bytes(),
            members: members.iter().map(|s| s.address.clone()).collect(),
            welcome: None,
        }
    }

    #[tokio::test]
    async fn ordering_fan_out_idempotency_and_acks() {
        let (store, _dir) = temp_store().await;
        let alice = account(&store, "alice", "000000000000000a", 1).await;
        let bob = account(&store, "bob", "000000000000000b", 2).await;
        let carol = account(&store, "carol", "000000000000000c", 3).await;

        let mut create = send(EnvelopeKind::Commit, 0, &[&alice, &bob]);
        create.welcome = Some((b"welcome".to_vec(), vec![bob.address.clone()]));
        let first = store.send(&alice, &create, "k1", 10, 100).await.unwrap();
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
            store.send(&alice, &create, "k1", 11, 100).await.unwrap(),
            SendOutcome::Repeated(response.clone())
        );
        // Another commit for epoch 0 lost.
        assert_eq!(
            store.send(&bob, &create, "k1", 11, 100).await.unwrap(),
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
        let out = store.send(&bob, &hello, "k2", 12, 100).await.unwrap();
        assert!(
            matches!(out, SendOutcome::Accepted { ref recipients, .. } if *recipients == [alice.device_pk])
        );
        assert_eq!(
            store.send(&carol, &hello, "k2", 12, 100).await.unwrap(),
            SendOutcome::Refused(Refusal::NotAMember)
        );
        // alice holds one envelope: a limit of one refuses the next.
        assert_eq!(
            store.send(&bob, &hello, "k3", 13, 1).await.unwrap(),
            SendOutcome::QueueFull
        );

        // bob's queue: the Welcome; acking deletes it and its message.
        let inbox = store.inbox(bob.device_pk, 0, 10).await.unwrap();
        assert_eq!(inbox.len(), 1);
        assert_eq!(inbox[0].kind, EnvelopeKind::Welcome);
        assert_eq!(inbox[0].payload.0, b"welcome");
        assert_eq!(store.ack(alice.device_pk, &[inbox[0].id]).await.unwrap(), 0);
        assert_eq!(store.ack(bob.device_pk, &[inbox[0].id]).await.unwrap(), 1);
        assert!(store.inbox(bob.device_pk, 0, 10).await.unwrap().is_empty());
        assert_eq!(store.queue_depth().await.unwrap(), 1);

        // Expiry sweeps old envelopes and orphaned messages.
        let report = store.sweep(1_000, 500, 500).await.unwrap();
        assert_eq!(report.envelopes, 1);
        assert!(report.messages >= 2);
        assert_eq!(store.queue_depth().await.unwrap(), 0);
    }
}
