//! One send inside a batch transaction: ordering, idempotency, fan-out and the queue limit.
//!
//! Every refusal is decided before the first write, so a refused send leaves nothing behind
//! and the batch goes on. The queue rows themselves are inserted for the whole batch at once
//! (`batch.rs`). Whatever a concurrent writer (another node) can change under us is read after
//! taking the conversation's row lock; the two races that remain (two creations of one
//! conversation, one idempotency key on two conversations at once) make the batch run again.

use std::collections::{BTreeSet, HashMap, HashSet};

use nightjar_api::{DeviceAddress, EnvelopeKind, SendResponse};
use sqlx::{ColumnIndex, Executor, IntoArguments, QueryBuilder, Transaction};

use super::backend::MAX_IDS;
use super::consent::{ConsentCache, ConsentPlan, MemberAccount, SendQuota, ShareOf};
use super::delivery::kind_text;
use super::{Backend, Column, Db, Param, SendOutcome, Sender, to_i64, to_u64};
use crate::rules::delivery::{
    CheckedSend, ConversationFacts, Handshake, Refusal, Stamp, Verdict, order,
};

/// One send as the group-commit writer receives it.
#[derive(Debug, Clone)]
pub(crate) struct Submission {
    pub(crate) sender: Sender,
    pub(crate) send: CheckedSend,
    pub(crate) idempotency_key: String,
    pub(crate) now_ms: u64,
    pub(crate) max_queue: u32,
    /// Message requests, per-sender queue shares and per-account queue limits.
    pub(crate) quota: SendQuota,
}

/// One member device of a conversation in the batch, read for one account sending in it.
#[derive(Debug)]
struct MemberRow {
    conversation: String,
    username: String,
    device_id: String,
    /// The device's row id (`None`: not a registered device).
    device_pk: Option<i64>,
    queue_len: Option<i64>,
    status: Option<String>,
    /// The member's account row id (`None`: no such account).
    account_id: Option<i64>,
    /// The member account's acceptance of the conversation (`accepted`, `request`).
    conversation_state: Option<String>,
    /// Who added the member account to the conversation, while it has not accepted it.
    inviter_id: Option<i64>,
    /// The account sending in the conversation that `decision` is about.
    sender_id: i64,
    /// The member account's decision about that sender, if any.
    decision: Option<String>,
}

/// [`MemberRow`] as the statement returns it.
type MemberColumns = (
    String,
    String,
    String,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<String>,
    Option<i64>,
    i64,
    Option<String>,
);

impl From<MemberColumns> for MemberRow {
    fn from(c: MemberColumns) -> Self {
        Self {
            conversation: c.0,
            username: c.1,
            device_id: c.2,
            device_pk: c.3,
            queue_len: c.4,
            status: c.5,
            account_id: c.6,
            conversation_state: c.7,
            inviter_id: c.8,
            sender_id: c.9,
            decision: c.10,
        }
    }
}

/// What applying one send inside the batch transaction decided.
#[derive(Debug)]
pub(super) enum Applied {
    /// Answered without storing anything.
    Answered(SendOutcome),
    /// Stored; its envelopes are still to be queued.
    Stored(Stored),
    /// A concurrent writer changed what this send depends on: run the batch again.
    Rerun,
}

/// A stored send whose envelopes the batch still has to queue.
#[derive(Debug)]
pub(super) struct Stored {
    pub(super) response: SendResponse,
    /// The message and then, for a commit with one, its Welcome: `(message id, recipients)`.
    pub(super) messages: Vec<(i64, Vec<i64>)>,
    /// Every recipient device, sorted and distinct.
    pub(super) everyone: Vec<i64>,
}

/// A member device that can receive: `(device row id, envelopes queued for it)`.
type Routable = (i64, i64);

/// What a batch reads once for all its sends before applying them, so that an application
/// message costs one statement (its `INSERT`) instead of five.
#[derive(Debug, Default)]
pub(super) struct Prefetched {
    /// The batch's conversations as stored when the batch started, rows locked:
    /// id → (epoch, every member address, the routable members). A conversation a send of
    /// this batch creates or changes is removed, and later sends to it read it again.
    conversations: HashMap<String, (u64, HashSet<DeviceAddress>, Vec<Routable>)>,
    /// Conversations of the batch that do not exist yet (or did not when the batch started).
    missing: HashSet<String>,
    /// The batch's sending devices that still exist and are active, kept from being deleted
    /// until the batch commits: a send from a device removed since it authenticated is
    /// refused on its own instead of failing the batch's inserts.
    senders: HashSet<i64>,
    /// Idempotency keys stored before this batch: (device, key) → (message id, epoch).
    remembered: HashMap<(i64, String), (i64, i64)>,
    /// Keys this batch stores, in order; inserted together by [`Db::store_keys`].
    new_keys: Vec<NewKey>,
    /// Index into `new_keys` by (device, key).
    new_key_index: HashMap<(i64, String), usize>,
    /// Message ids reserved for this batch, in the order they are handed out.
    ids: std::vec::IntoIter<i64>,
    /// Messages this batch stores; inserted together by [`Db::store_messages`].
    new_messages: Vec<NewMessage>,
    /// Consent as read for the batch and as its sends change it (`consent.rs`).
    pub(super) consent: ConsentCache,
}

impl Prefetched {
    /// Plans a message row and returns its id.
    fn add_message(&mut self, message: NewMessage) -> Result<i64, sqlx::Error> {
        let id = self.ids.next().ok_or_else(|| {
            sqlx::Error::Protocol("a batch stored more messages than it reserved ids for".into())
        })?;
        self.new_messages.push(NewMessage { id, ..message });
        Ok(id)
    }
}

/// A `messages` row to insert at the end of a batch.
#[derive(Debug)]
struct NewMessage {
    id: i64,
    conversation: Option<String>,
    sender: DeviceAddress,
    kind: EnvelopeKind,
    payload: Vec<u8>,
    /// A franked application message's commitment and the server's tag.
    stamp: Option<Stamp>,
    now: i64,
}

/// An idempotency key to store at the end of a batch.
#[derive(Debug)]
struct NewKey {
    device_pk: i64,
    /// For a sealed send: its conversation (`key` is the submission id, stored in
    /// `sealed_submissions`).
    sealed_conversation: Option<String>,
    key: String,
    message_id: i64,
    epoch: i64,
    now: i64,
}

/// Rows per multi-row statement of the prefetch (two parameters each).
const PREFETCH_ROWS: usize = 1_000;

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
    /// Reads, for every send of a batch at once, what [`Self::apply`] decides on: the
    /// conversations (locked in id order, as the send path always locks them), their members
    /// and the idempotency keys, and that the senders still exist. Five statements per batch,
    /// whatever its size (the fifth reserves message ids).
    pub(super) async fn prefetch<'r>(
        tx: &mut Transaction<'static, DB>,
        requests: impl Iterator<Item = &'r Submission> + Clone,
    ) -> Result<Prefetched, sqlx::Error> {
        // One message id per send and one per Welcome the batch may store.
        let wanted: usize = requests
            .clone()
            .map(|r| 1 + usize::from(r.send.welcome.is_some()))
            .sum();
        let mut senders: Vec<i64> = requests.clone().map(|r| r.sender.device_pk).collect();
        senders.sort_unstable();
        senders.dedup();
        let mut live = HashSet::new();
        for chunk in senders.chunks(MAX_IDS) {
            let mut q =
                QueryBuilder::<DB>::new("SELECT id FROM devices WHERE status = 'active' AND ");
            DB::push_id_filter(&mut q, "id", chunk);
            q.push(" ORDER BY id").push(DB::FOR_KEY_SHARE);
            let rows: Vec<i64> = q.build_query_scalar().fetch_all(&mut **tx).await?;
            live.extend(rows);
        }
        let mut ids: Vec<String> = requests
            .clone()
            .map(|r| r.send.conversation.to_string())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let mut conversations: HashMap<String, (u64, HashSet<DeviceAddress>, Vec<Routable>)> =
            HashMap::new();
        let mut consent = ConsentCache::default();
        for chunk in ids.chunks(PREFETCH_ROWS) {
            let mut q =
                QueryBuilder::<DB>::new("SELECT id, epoch FROM conversations WHERE id IN (");
            let mut list = q.separated(", ");
            for id in chunk {
                list.push_bind(id.as_str());
            }
            q.push(") ORDER BY id").push(DB::FOR_UPDATE);
            let rows: Vec<(String, i64)> = q
                .build_query_as()
                .persistent(false)
                .fetch_all(&mut **tx)
                .await?;
            conversations.extend(
                rows.into_iter()
                    .map(|(id, epoch)| (id, (to_u64(epoch), HashSet::new(), Vec::new()))),
            );
        }
        // Every (conversation, sending account) of the batch drives the member read: each
        // member row comes with the member account's decision about that sender, so consent
        // costs no statement of its own. A conversation with k sending accounts yields its
        // members k times; the sets below keep each once.
        let mut sends: Vec<(String, i64)> = requests
            .clone()
            .map(|r| (r.send.conversation.to_string(), r.sender.account_id))
            .filter(|(c, _)| conversations.contains_key(c))
            .collect();
        sends.sort_unstable();
        sends.dedup();
        for chunk in sends.chunks(PREFETCH_ROWS) {
            let mut q = QueryBuilder::<DB>::new(
                "SELECT m.conversation_id AS conversation, m.username, m.device_id, \
                 d.id AS device_pk, d.queue_len, d.status, a.id AS account_id, \
                 cc.state AS conversation_state, cc.inviter_id, s.column2 AS sender_id, \
                 c.state AS decision \
                 FROM ",
            );
            DB::push_text_id_rows(&mut q, chunk);
            q.push(
                " AS s JOIN conversation_members m ON m.conversation_id = s.column1 \
                 LEFT JOIN accounts a ON a.username = m.username \
                 LEFT JOIN devices d ON d.account_id = a.id AND d.device_id = m.device_id \
                 LEFT JOIN conversation_consent cc ON cc.conversation_id = m.conversation_id \
                 AND cc.account_id = a.id \
                 LEFT JOIN consent c ON c.owner_id = a.id AND c.peer_id = s.column2",
            );
            // Prepared once: the text is the same for every batch.
            let rows: Vec<MemberColumns> = q
                .build_query_as()
                .persistent(true)
                .fetch_all(&mut **tx)
                .await?;
            for row in rows.into_iter().map(MemberRow::from) {
                let Some((_, members, receiving)) = conversations.get_mut(&row.conversation) else {
                    continue;
                };
                let account_id = row.account_id.unwrap_or(0);
                let member = MemberAccount {
                    account_id,
                    conversation_accepted: row.conversation_state.as_deref() == Some("accepted"),
                    inviter_id: row.inviter_id,
                };
                consent.member(
                    &row.conversation,
                    &row.username,
                    row.device_pk.unwrap_or(0),
                    member,
                );
                consent.decision(account_id, row.sender_id, row.decision.as_deref());
                let active = row.status.as_deref() == Some("active");
                let address = DeviceAddress {
                    username: row.username,
                    device_id: row.device_id,
                };
                if let (true, true, Some(pk)) = (members.insert(address), active, row.device_pk) {
                    receiving.push((pk, row.queue_len.unwrap_or(0)));
                }
            }
        }
        for (_, _, receiving) in conversations.values_mut() {
            *receiving = routable(std::mem::take(receiving));
        }

        let (sealed, devices): (Vec<&Submission>, Vec<&Submission>) =
            requests.partition(|r| r.sender.is_sealed());
        let mut keys: Vec<(i64, &str)> = devices
            .iter()
            .map(|r| (r.sender.device_pk, r.idempotency_key.as_str()))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        let mut remembered = HashMap::new();
        let mut submissions: Vec<(String, &str)> = sealed
            .iter()
            .map(|r| (r.send.conversation.to_string(), r.idempotency_key.as_str()))
            .collect();
        submissions.sort_unstable();
        submissions.dedup();
        for chunk in submissions.chunks(PREFETCH_ROWS) {
            let mut q = QueryBuilder::<DB>::new(
                "SELECT conversation_id, submission_id, message_id, epoch FROM \
                 sealed_submissions WHERE (conversation_id, submission_id) IN (",
            );
            q.push_values(chunk, |mut row, (conversation, id)| {
                row.push_bind(conversation.as_str()).push_bind(*id);
            });
            q.push(")");
            let rows: Vec<(String, String, i64, i64)> = q
                .build_query_as()
                .persistent(false)
                .fetch_all(&mut **tx)
                .await?;
            remembered.extend(rows.into_iter().map(|(conversation, id, message, epoch)| {
                ((0, sealed_slot(&conversation, &id)), (message, epoch))
            }));
        }
        for chunk in keys.chunks(PREFETCH_ROWS) {
            let mut q = QueryBuilder::<DB>::new(
                "SELECT device_pk, idempotency_key, message_id, epoch FROM idempotency \
                 WHERE (device_pk, idempotency_key) IN (",
            );
            q.push_values(chunk, |mut row, (pk, key)| {
                row.push_bind(*pk).push_bind(*key);
            });
            q.push(")");
            let rows: Vec<(i64, String, i64, i64)> = q
                .build_query_as()
                .persistent(false)
                .fetch_all(&mut **tx)
                .await?;
            remembered.extend(
                rows.into_iter()
                    .map(|(pk, key, message, epoch)| ((pk, key), (message, epoch))),
            );
        }
        let reserved = DB::reserve_message_ids(&mut **tx, wanted).await?;
        Ok(Prefetched {
            missing: ids
                .into_iter()
                .filter(|id| !conversations.contains_key(id))
                .collect(),
            conversations,
            senders: live,
            remembered,
            new_keys: Vec::new(),
            new_key_index: HashMap::new(),
            ids: reserved.into_iter(),
            new_messages: Vec::new(),
            consent,
        })
    }

    /// Stores the idempotency keys of the batch's stored sends in as few statements as the
    /// backend allows. `false` if another node stored one of them meanwhile (the same key
    /// sent to two nodes at once): the batch must run again.
    pub(super) async fn store_keys(
        tx: &mut Transaction<'static, DB>,
        prefetched: &Prefetched,
    ) -> Result<bool, sqlx::Error> {
        let mut stored = 0;
        let (sealed, devices): (Vec<&NewKey>, Vec<&NewKey>) = prefetched
            .new_keys
            .iter()
            .partition(|k| k.sealed_conversation.is_some());
        for chunk in sealed.chunks(PREFETCH_ROWS) {
            let mut q = QueryBuilder::<DB>::new(
                "INSERT INTO sealed_submissions (conversation_id, submission_id, message_id, \
                 epoch, created_at_ms) ",
            );
            q.push_values(chunk, |mut row, k| {
                row.push_bind(k.sealed_conversation.as_deref().unwrap_or_default())
                    .push_bind(k.key.as_str())
                    .push_bind(k.message_id)
                    .push_bind(k.epoch)
                    .push_bind(k.now);
            });
            q.push(" ON CONFLICT (conversation_id, submission_id) DO NOTHING");
            let done = q.build().persistent(false).execute(&mut **tx).await?;
            stored += DB::rows_affected(&done);
        }
        for chunk in devices.chunks(PREFETCH_ROWS) {
            let mut q = QueryBuilder::<DB>::new(
                "INSERT INTO idempotency (device_pk, idempotency_key, message_id, epoch, \
                 created_at_ms) ",
            );
            q.push_values(chunk, |mut row, k| {
                row.push_bind(k.device_pk)
                    .push_bind(k.key.as_str())
                    .push_bind(k.message_id)
                    .push_bind(k.epoch)
                    .push_bind(k.now);
            });
            q.push(" ON CONFLICT (device_pk, idempotency_key) DO NOTHING");
            let done = q.build().persistent(false).execute(&mut **tx).await?;
            stored += DB::rows_affected(&done);
        }
        Ok(stored == u64::try_from(prefetched.new_keys.len()).unwrap_or(u64::MAX))
    }

    /// Orders and stores one send; `pending` counts the envelopes this batch has planned per
    /// device so far and is advanced by what this send plans. Reads what `prefetched` holds
    /// from it, and records there what it changes.
    pub(super) async fn apply(
        tx: &mut Transaction<'static, DB>,
        request: &Submission,
        pending: &mut HashMap<i64, i64>,
        prefetched: &mut Prefetched,
    ) -> Result<Applied, sqlx::Error> {
        let Submission {
            sender,
            send,
            idempotency_key,
            now_ms,
            max_queue,
            quota,
        } = request;
        // Stored times only (message, idempotency key, conversation), rounded to the hour.
        let now = to_i64(super::stored_time(*now_ms));
        let sealed = sender.is_sealed();
        if !sealed && !prefetched.senders.contains(&sender.device_pk) {
            // Removed since it authenticated: it is in no conversation any more.
            return Ok(Applied::Answered(SendOutcome::Refused(Refusal::NotAMember)));
        }
        let conversation = send.conversation.to_string();
        let cached = prefetched.conversations.get(&conversation);
        let facts = match cached {
            Some((epoch, members, _)) => Some(ConversationFacts {
                epoch: *epoch,
                sender_is_member: members.contains(&sender.address),
            }),
            None if prefetched.missing.contains(&conversation) => None,
            // Changed by an earlier send of this batch: read it again.
            None => Self::lock_conversation(tx, &conversation, &sender.address).await?,
        };
        // A sealed message's signature under the epoch's key (checked before the batch)
        // proves a member sent it.
        let facts = facts.map(|f| ConversationFacts {
            sender_is_member: f.sender_is_member || sealed,
            ..f
        });

        // Read after the conversation's lock (the prefetch), so a retry racing its first
        // attempt on another node sees its answer; and before ordering, so an accepted commit
        // is never a conflict later.
        let key = if sealed {
            (0, sealed_slot(&conversation, idempotency_key))
        } else {
            (sender.device_pk, idempotency_key.clone())
        };
        let previous = match prefetched.new_key_index.get(&key) {
            Some(&i) => prefetched.new_keys.get(i).map(|k| (k.message_id, k.epoch)),
            None => prefetched.remembered.get(&key).copied(),
        };
        if let Some((message_id, epoch)) = previous {
            return Ok(Applied::Answered(SendOutcome::Repeated(SendResponse {
                message_id: to_u64(message_id),
                epoch: to_u64(epoch),
            })));
        }
        let verdict = match order(send.kind, facts, send.epoch) {
            Ok(v) => v,
            Err(refusal) => return Ok(Applied::Answered(SendOutcome::Refused(refusal))),
        };
        // A sealed message is taken in the current epoch only: the key of an epoch a member
        // was removed in must not let it post after its removal.
        if let (true, Some(f)) = (sealed, facts)
            && f.epoch != send.epoch
        {
            return Ok(Applied::Answered(SendOutcome::Refused(
                Refusal::EpochConflict { current: f.epoch },
            )));
        }
        // The handshake was validated against the state of `send.epoch`, read before this
        // transaction: it stands only if the conversation is still there.
        let handshake_refusal = match (&send.handshake, facts) {
            (Handshake::Stale, Some(f)) => Some(Refusal::EpochConflict { current: f.epoch }),
            (Handshake::Stale, None) => Some(Refusal::UnknownConversation),
            (Handshake::Proposal, Some(f)) if f.epoch != send.epoch => {
                Some(Refusal::EpochConflict { current: f.epoch })
            }
            (Handshake::Commit { .. }, _) | (Handshake::Proposal, _) => None,
            (Handshake::None, _) if send.kind == EnvelopeKind::Application => None,
            (Handshake::None, _) => Some(Refusal::NotValidated),
        };
        if let Some(refusal) = handshake_refusal {
            return Ok(Applied::Answered(SendOutcome::Refused(refusal)));
        }

        // Everyone but the sender who was a member when the message was made gets it; a
        // commit's removed devices included, so they learn of their removal. A new
        // conversation has only the sender.
        let not_sender = |(pk, _): &Routable| *pk != sender.device_pk;
        let recipients: Vec<Routable> = match (verdict, cached) {
            (Verdict::Create, _) => Vec::new(),
            (_, Some((_, _, members))) => members.iter().copied().filter(not_sender).collect(),
            (_, None) => Self::routable_members(tx, &conversation)
                .await?
                .into_iter()
                .filter(not_sender)
                .collect(),
        };
        let welcomed: Vec<Routable> = match &send.welcome {
            Some((_, to)) if send.kind == EnvelopeKind::Commit => {
                Self::routable_addresses(tx, to).await?
            }
            _ => Vec::new(),
        };
        // Consent: who gets an application message, who a Welcome (`consent.rs`).
        let mut plan = ConsentPlan::default();
        let recipients = if send.kind == EnvelopeKind::Application {
            let devices: Vec<i64> = recipients.iter().map(|(pk, _)| *pk).collect();
            plan = if sealed {
                Self::admit_sealed(
                    tx,
                    &conversation,
                    send.payload.len(),
                    &devices,
                    quota.requests,
                    &mut prefetched.consent,
                )
                .await?
            } else {
                Self::admit_message(
                    tx,
                    &conversation,
                    &sender.address,
                    send.payload.len(),
                    &devices,
                    quota.requests,
                    &mut prefetched.consent,
                )
                .await?
            };
            if let Some(refusal) = plan.refusal {
                return Ok(Applied::Answered(SendOutcome::NotAccepted(refusal)));
            }
            let kept: HashSet<i64> = plan.devices.iter().copied().collect();
            recipients
                .into_iter()
                .filter(|(pk, _)| kept.contains(pk))
                .collect()
        } else {
            recipients
        };
        let welcomed = if send.welcome.is_some() && send.kind == EnvelopeKind::Commit {
            let (kept, welcome_plan) = Self::admit_welcome(
                tx,
                &conversation,
                &sender.address,
                &welcomed,
                quota.requests,
                &mut prefetched.consent,
            )
            .await?;
            plan = welcome_plan;
            kept
        } else {
            welcomed
        };
        let mut everyone: Vec<(i64, i64)> = recipients.iter().chain(&welcomed).copied().collect();
        everyone.sort_unstable();
        everyone.dedup_by_key(|(pk, _)| *pk);
        let limits = crate::rules::consent::QueueLimits {
            max_device: (*max_queue).min(quota.queues.max_device),
            ..quota.queues
        };
        let share_of = if sealed {
            ShareOf::Conversation(&conversation)
        } else {
            ShareOf::Account(&sender.address.username)
        };
        if !Self::queues_take(
            tx,
            share_of,
            &everyone,
            pending,
            limits,
            &prefetched.consent,
        )
        .await?
        {
            return Ok(Applied::Answered(SendOutcome::QueueFull));
        }

        // Nothing is refused from here on.
        plan.commit(&mut prefetched.consent);
        let epoch_after = match (verdict, facts) {
            (Verdict::Deliver, Some(f)) => f.epoch,
            (Verdict::Deliver, None) => 0,
            (Verdict::Create | Verdict::Advance, _) => send.epoch.saturating_add(1),
        };
        if verdict != Verdict::Deliver {
            // Later sends of the batch read the changed conversation from the database.
            prefetched.conversations.remove(&conversation);
            prefetched.missing.remove(&conversation);
        }
        match verdict {
            Verdict::Create => {
                let created = sqlx::query(
                    "INSERT INTO conversations (id, epoch, created_at_ms, updated_at_ms) \
                     VALUES ($1, $2, $3, $3) ON CONFLICT (id) DO NOTHING",
                )
                .bind(conversation.as_str())
                .bind(to_i64(epoch_after))
                .bind(now)
                .execute(&mut **tx)
                .await?;
                if DB::rows_affected(&created) == 0 {
                    // Another node created it since we looked.
                    return Ok(Applied::Rerun);
                }
                Self::replace_members(tx, &conversation, &send.members).await?;
                if let Handshake::Commit { state } = &send.handshake {
                    Self::write_group_state(tx, &conversation, epoch_after, state).await?;
                }
            }
            Verdict::Advance => {
                sqlx::query(
                    "UPDATE conversations SET epoch = $1, updated_at_ms = $2 WHERE id = $3",
                )
                .bind(to_i64(epoch_after))
                .bind(now)
                .bind(conversation.as_str())
                .execute(&mut **tx)
                .await?;
                Self::replace_members(tx, &conversation, &send.members).await?;
                if let Handshake::Commit { state } = &send.handshake {
                    Self::write_group_state(tx, &conversation, epoch_after, state).await?;
                }
            }
            Verdict::Deliver => {
                if send.handshake == Handshake::Proposal {
                    Self::add_proposal(tx, &conversation, send.epoch, &send.payload).await?;
                }
            }
        }
        let recipients: Vec<i64> = recipients.iter().map(|(pk, _)| *pk).collect();
        // A message nobody receives (the commit that creates a conversation, a message to a
        // conversation of one device) is not stored at all; id 0 is never queued.
        let message_id = if recipients.is_empty() {
            0
        } else {
            prefetched.add_message(NewMessage {
                id: 0,
                conversation: Some(conversation.clone()),
                sender: sender.address.clone(),
                kind: send.kind,
                payload: send.payload.clone(),
                stamp: send.stamp,
                now,
            })?
        };
        let mut messages = vec![(message_id, recipients)];
        if let (Some((welcome, _)), false) = (&send.welcome, welcomed.is_empty()) {
            let welcome_id = prefetched.add_message(NewMessage {
                id: 0,
                conversation: None,
                sender: sender.address.clone(),
                kind: EnvelopeKind::Welcome,
                payload: welcome.clone(),
                stamp: None,
                now,
            })?;
            messages.push((welcome_id, welcomed.iter().map(|(pk, _)| *pk).collect()));
        }
        prefetched
            .new_key_index
            .insert(key, prefetched.new_keys.len());
        prefetched.new_keys.push(NewKey {
            device_pk: sender.device_pk,
            sealed_conversation: sealed.then(|| conversation.clone()),
            key: idempotency_key.clone(),
            message_id,
            epoch: to_i64(epoch_after),
            now,
        });
        for (_, devices) in &messages {
            for pk in devices {
                *pending.entry(*pk).or_default() += 1;
            }
        }
        Ok(Applied::Stored(Stored {
            response: SendResponse {
                message_id: to_u64(message_id),
                epoch: epoch_after,
            },
            messages,
            everyone: everyone.into_iter().map(|(pk, _)| pk).collect(),
        }))
    }

    /// The conversation's epoch and whether `sender` is a member, locking its row until the
    /// transaction ends (on PostgreSQL; SQLite's single writer already excludes the others).
    pub(super) async fn lock_conversation(
        tx: &mut Transaction<'static, DB>,
        conversation: &str,
        sender: &DeviceAddress,
    ) -> Result<Option<ConversationFacts>, sqlx::Error> {
        let sql = format!(
            "SELECT c.epoch, EXISTS (SELECT 1 FROM conversation_members m \
             WHERE m.conversation_id = c.id AND m.username = $2 AND m.device_id = $3) \
             FROM conversations c WHERE c.id = $1{}",
            DB::FOR_UPDATE
        );
        let row: Option<(i64, bool)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(conversation)
            .bind(sender.username.as_str())
            .bind(sender.device_id.as_str())
            .fetch_optional(&mut **tx)
            .await?;
        Ok(row.map(|(epoch, member)| ConversationFacts {
            epoch: to_u64(epoch),
            sender_is_member: member,
        }))
    }

    /// The conversation's member devices that exist and are active.
    async fn routable_members(
        tx: &mut Transaction<'static, DB>,
        conversation: &str,
    ) -> Result<Vec<Routable>, sqlx::Error> {
        let rows: Vec<Routable> = sqlx::query_as(
            "SELECT d.id, d.queue_len FROM conversation_members m \
             JOIN accounts a ON a.username = m.username \
             JOIN devices d ON d.account_id = a.id AND d.device_id = m.device_id \
             WHERE m.conversation_id = $1 AND d.status = 'active'",
        )
        .bind(conversation)
        .fetch_all(&mut **tx)
        .await?;
        Ok(routable(rows))
    }

    /// Those of `addresses` that exist and are active.
    async fn routable_addresses(
        tx: &mut Transaction<'static, DB>,
        addresses: &[DeviceAddress],
    ) -> Result<Vec<Routable>, sqlx::Error> {
        if addresses.is_empty() {
            return Ok(Vec::new());
        }
        let mut q = QueryBuilder::<DB>::new(
            "SELECT d.id, d.queue_len FROM accounts a \
             JOIN devices d ON d.account_id = a.id \
             WHERE d.status = 'active' AND (a.username, d.device_id) IN (",
        );
        q.push_values(addresses, |mut row, a| {
            row.push_bind(a.username.as_str())
                .push_bind(a.device_id.as_str());
        });
        q.push(")");
        let rows: Vec<Routable> = q
            .build_query_as()
            .persistent(false)
            .fetch_all(&mut **tx)
            .await?;
        Ok(routable(rows))
    }

    async fn replace_members(
        tx: &mut Transaction<'static, DB>,
        conversation: &str,
        members: &[DeviceAddress],
    ) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM conversation_members WHERE conversation_id = $1")
            .bind(conversation)
            .execute(&mut **tx)
            .await?;
        // Distinct already (a set); chunked to stay under SQLite's parameter limit.
        for chunk in members.chunks(5_000) {
            let mut q = QueryBuilder::<DB>::new(
                "INSERT INTO conversation_members (conversation_id, username, device_id) ",
            );
            q.push_values(chunk, |mut row, m| {
                row.push_bind(conversation)
                    .push_bind(m.username.as_str())
                    .push_bind(m.device_id.as_str());
            });
            q.build().persistent(false).execute(&mut **tx).await?;
        }
        Ok(())
    }
}

impl<DB> Db<DB>
where
    DB: Backend,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    i64: Column<DB>,
    for<'s> &'s str: Param<'s, DB>,
    for<'s> &'s [u8]: Param<'s, DB>,
    for<'s> Option<&'s str>: Param<'s, DB>,
    for<'s> Option<&'s [u8]>: Param<'s, DB>,
{
    /// Inserts the batch's messages with their reserved ids, in as few statements as the
    /// parameter limit allows.
    pub(super) async fn store_messages(
        tx: &mut Transaction<'static, DB>,
        prefetched: &Prefetched,
    ) -> Result<(), sqlx::Error> {
        for chunk in prefetched.new_messages.chunks(PREFETCH_ROWS) {
            let mut q = QueryBuilder::<DB>::new(
                "INSERT INTO messages (id, conversation_id, sender_username, sender_device_id, \
                 kind, payload, franking_commitment, franking_tag, created_at_ms)",
            );
            q.push(DB::OVERRIDE_IDS).push(" ");
            q.push_values(chunk, |mut row, m| {
                row.push_bind(m.id)
                    .push_bind(m.conversation.as_deref())
                    .push_bind(m.sender.username.as_str())
                    .push_bind(m.sender.device_id.as_str())
                    .push_bind(kind_text(m.kind))
                    .push_bind(m.payload.as_slice())
                    .push_bind(m.stamp.as_ref().map(|s| &s.commitment[..]))
                    .push_bind(m.stamp.as_ref().map(|s| &s.tag[..]))
                    .push_bind(m.now);
            });
            q.build().persistent(false).execute(&mut **tx).await?;
        }
        Ok(())
    }
}

/// The batch's key for a sealed submission's idempotency (device row id 0).
fn sealed_slot(conversation: &str, submission_id: &str) -> String {
    format!("{conversation}/{submission_id}")
}

/// Each device once (a device listed twice, in members or in a Welcome, gets one envelope).
fn routable(rows: Vec<Routable>) -> Vec<Routable> {
    let mut seen = BTreeSet::new();
    rows.into_iter()
        .filter(|(pk, _)| seen.insert(*pk))
        .collect()
}
