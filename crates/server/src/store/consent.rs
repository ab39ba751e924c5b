//! Consent in the database: accounts' decisions about each other, conversations' acceptance,
//! message-request counters, reports, and the send path's view of them.
//!
//! The send path reads what it decides on once per batch, with the member rows the batch
//! already reads: each member's acceptance of its conversation, and the member account's
//! decision about each account sending in that conversation in the batch (the read is driven by
//! the batch's (conversation, sender) pairs, one index probe each): no statement of its own.
//! Message-request counters are read only for a recipient that accepted neither the sender nor
//! the conversation, and a sender's share of a queue only when the queue is past
//! `Limits::queue_share_after`. What a batch changes is written at its end, in key order.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use nightjar_api::{DeviceAddress, EnvelopeKind};
use sqlx::{ColumnIndex, Executor, IntoArguments, QueryBuilder, Transaction};

use super::backend::MAX_IDS;
use super::{Backend, Column, Db, Param, Store, dispatch, to_i64, to_u64};
use crate::rules::consent::{
    Admission, ConsentRefusal, Decision, QueueLimits, RecipientView, RequestLimits, SkipReason,
    account_takes, admit, device_takes, refusal,
};

/// The consent limits of one send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SendQuota {
    /// Message requests.
    pub(crate) requests: RequestLimits,
    /// Queues.
    pub(crate) queues: QueueLimits,
}

impl Default for SendQuota {
    /// No limits at all (store unit tests that are about something else).
    fn default() -> Self {
        Self {
            requests: RequestLimits {
                max_messages: u32::MAX,
                max_bytes: usize::MAX,
            },
            queues: QueueLimits::default(),
        }
    }
}

/// One stored decision, as `GET /v1/consent` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecisionRow {
    pub(crate) username: String,
    pub(crate) decision: Decision,
    pub(crate) updated_at_ms: u64,
}

/// A member device as the consent rules see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct MemberAccount {
    pub(super) account_id: i64,
    pub(super) conversation_accepted: bool,
    /// Who added the account to the conversation (kept while it has not accepted it).
    pub(super) inviter_id: Option<i64>,
}

/// Whose share of a long queue a send counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ShareOf<'a> {
    /// The sending account (an authenticated send), by username.
    Account(&'a str),
    /// The conversation (a sealed send: the server does not know the sender).
    Conversation(&'a str),
}

/// What a batch knows and plans about consent.
#[derive(Debug, Default)]
pub(super) struct ConsentCache {
    /// Account ids by username (members of the batch's conversations).
    ids: HashMap<String, i64>,
    /// The account of each member device, by device row id.
    devices: HashMap<i64, i64>,
    /// The member accounts of each conversation whose consent the batch read, each with
    /// whether it accepted the conversation.
    accounts: HashMap<String, BTreeMap<i64, bool>>,
    /// (conversation, account) → the account that added `account` to it, for accounts that
    /// have not accepted it.
    inviters: HashMap<(String, i64), i64>,
    /// (conversation, account) acceptances made by the batch's earlier sends.
    accepted_in_batch: HashSet<(String, i64)>,
    /// (owner, peer) → decision, for every pair read (absent: no decision).
    decisions: HashMap<(i64, i64), Decision>,
    /// (owner, peer) pairs whose decision was read in this batch, found or not.
    read_pairs: HashSet<(i64, i64)>,
    /// (recipient, sender) → message requests queued, once read.
    requests: HashMap<(i64, i64), u32>,
    /// Writes at the end of the batch: (conversation, account) → (inviter, accepted).
    conversation_writes: BTreeMap<(String, i64), (Option<i64>, bool)>,
    /// (recipient, sender) → new message-request count.
    request_writes: BTreeMap<(i64, i64), u32>,
    /// (owner, peer) pairs the owner accepted by sending (a commit with a Welcome).
    accept_writes: BTreeSet<(i64, i64)>,
}

impl ConsentCache {
    /// Notes a member device read with its conversation.
    pub(super) fn member(
        &mut self,
        conversation: &str,
        username: &str,
        device_pk: i64,
        member: MemberAccount,
    ) {
        if member.account_id == 0 {
            return;
        }
        if !self.ids.contains_key(username) {
            self.ids.insert(username.to_owned(), member.account_id);
        }
        if device_pk != 0 {
            self.devices.insert(device_pk, member.account_id);
        }
        let accepted = member.conversation_accepted;
        if let (false, Some(inviter)) = (accepted, member.inviter_id) {
            self.inviters
                .insert((conversation.to_owned(), member.account_id), inviter);
        }
        match self.accounts.get_mut(conversation) {
            Some(accounts) => {
                *accounts.entry(member.account_id).or_default() |= accepted;
            }
            None => {
                self.accounts.insert(
                    conversation.to_owned(),
                    BTreeMap::from([(member.account_id, accepted)]),
                );
            }
        }
    }

    /// The (member account, sender account) pairs whose decisions a send from `sender` in
    /// `conversation` needs, the sender's own account left out.
    fn pairs_for(&self, conversation: &str, sender: &str) -> Vec<(i64, i64)> {
        let (Some(peer), Some(accounts)) =
            (self.account_of(sender), self.accounts.get(conversation))
        else {
            return Vec::new();
        };
        accounts
            .keys()
            .filter(|&&owner| owner != peer)
            .map(|&owner| (owner, peer))
            .collect()
    }

    /// Notes the decision `state` (as stored; `None`: none) of account `owner` about `peer`.
    pub(super) fn decision(&mut self, owner: i64, peer: i64, state: Option<&str>) {
        if owner == 0 || owner == peer {
            return;
        }
        if let Some(d) = state.and_then(Decision::parse) {
            self.decisions.insert((owner, peer), d);
        }
    }

    /// Whether `account` accepted `conversation`, as read or as the batch changed it.
    fn has_accepted(&self, conversation: &str, account: i64) -> bool {
        let read = self
            .accounts
            .get(conversation)
            .and_then(|accounts| accounts.get(&account))
            .copied()
            .unwrap_or(false);
        read || (!self.accepted_in_batch.is_empty()
            && self
                .accepted_in_batch
                .contains(&(conversation.to_owned(), account)))
    }

    fn account_of(&self, username: &str) -> Option<i64> {
        self.ids.get(username).copied()
    }

    /// `devices` grouped by their account (`unknown` for a device the batch did not read).
    fn by_account(&self, devices: &[i64], unknown: i64) -> BTreeMap<i64, Vec<i64>> {
        let mut accounts: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
        for pk in devices {
            let account = self.devices.get(pk).copied().unwrap_or(unknown);
            accounts.entry(account).or_default().push(*pk);
        }
        accounts
    }

    /// Who is still asking `account` to accept `conversation`: its inviter, while it has not
    /// accepted the conversation.
    fn asking(&self, conversation: &str, account: i64) -> Option<i64> {
        if self.has_accepted(conversation, account) {
            return None;
        }
        self.inviters
            .get(&(conversation.to_owned(), account))
            .copied()
    }
}

/// A conversation acceptance to write: (conversation, account) → (inviter, accepted).
type ConversationWrite = ((String, i64), (Option<i64>, bool));

/// What consent decided for the recipients of one send.
#[derive(Debug, Default)]
pub(super) struct ConsentPlan {
    /// Recipient device row ids that get the message.
    pub(super) devices: Vec<i64>,
    /// Set when the message reaches nobody because of consent.
    pub(super) refusal: Option<ConsentRefusal>,
    conversation_writes: Vec<ConversationWrite>,
    request_counts: Vec<((i64, i64), u32)>,
    accepts: Vec<(i64, i64)>,
}

impl ConsentPlan {
    /// Records the plan of a stored send in the batch's cache (to be written at its end).
    pub(super) fn commit(self, cache: &mut ConsentCache) {
        for ((conversation, account), (inviter, accepted)) in self.conversation_writes {
            if accepted {
                cache
                    .accepted_in_batch
                    .insert((conversation.clone(), account));
            }
            cache
                .conversation_writes
                .insert((conversation, account), (inviter, accepted));
        }
        for (pair, count) in self.request_counts {
            cache.requests.insert(pair, count);
            cache.request_writes.insert(pair, count);
        }
        for (owner, peer) in self.accepts {
            cache
                .decisions
                .entry((owner, peer))
                .or_insert(Decision::Accepted);
            cache.accept_writes.insert((owner, peer));
        }
    }
}

impl Store {
    /// Records `owner`'s decision about the account `peer` (`None` forgets it: the peer is a
    /// stranger again, with a fresh message-request allowance). Accepting an account also
    /// accepts every conversation it added `owner` to. `false` if there is no such account.
    pub(crate) async fn set_consent(
        &self,
        owner_id: i64,
        peer: &str,
        decision: Option<Decision>,
        now_ms: u64,
    ) -> Result<bool, sqlx::Error> {
        dispatch!(self, db => db.set_consent(owner_id, peer, decision, None, now_ms).await)
    }

    /// Blocks `reported` for `reporter_id` and stores a report, in one transaction. `false` if
    /// there is no such account.
    pub(crate) async fn report(
        &self,
        reporter_id: i64,
        reported: &str,
        conversation: Option<&str>,
        reason: Option<&str>,
        now_ms: u64,
    ) -> Result<bool, sqlx::Error> {
        let report = Some((conversation, reason));
        dispatch!(self, db => db.set_consent(reporter_id, reported, Some(Decision::Blocked), report, now_ms).await)
    }

    /// Every decision of `owner_id`, by username.
    pub(crate) async fn decisions(&self, owner_id: i64) -> Result<Vec<DecisionRow>, sqlx::Error> {
        dispatch!(self, db => db.decisions(owner_id).await)
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
    async fn set_consent(
        &self,
        owner_id: i64,
        peer: &str,
        decision: Option<Decision>,
        report: Option<(Option<&str>, Option<&str>)>,
        now_ms: u64,
    ) -> Result<bool, sqlx::Error> {
        // Stored rounded to the hour, like every time that could date who talked to whom.
        let now = to_i64(super::stored_time(now_ms));
        let mut w = self.write().await?;
        let peer_id: Option<i64> =
            sqlx::query_scalar("SELECT id FROM accounts WHERE username = $1")
                .bind(peer)
                .fetch_optional(&mut *w.tx)
                .await?;
        let Some(peer_id) = peer_id else {
            return Ok(false);
        };
        match decision {
            Some(decision) => {
                sqlx::query(
                    "INSERT INTO consent (owner_id, peer_id, state, updated_at_ms) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (owner_id, peer_id) DO UPDATE \
                     SET state = excluded.state, updated_at_ms = excluded.updated_at_ms",
                )
                .bind(owner_id)
                .bind(peer_id)
                .bind(decision.as_str())
                .bind(now)
                .execute(&mut *w.tx)
                .await?;
                if decision == Decision::Accepted {
                    sqlx::query(
                        "UPDATE conversation_consent SET state = 'accepted' \
                         WHERE account_id = $1 AND inviter_id = $2",
                    )
                    .bind(owner_id)
                    .bind(peer_id)
                    .execute(&mut *w.tx)
                    .await?;
                }
                // Decided either way: the count of held requests has served its purpose.
                sqlx::query(
                    "DELETE FROM message_requests WHERE recipient_id = $1 AND sender_id = $2",
                )
                .bind(owner_id)
                .bind(peer_id)
                .execute(&mut *w.tx)
                .await?;
            }
            None => {
                for sql in [
                    "DELETE FROM consent WHERE owner_id = $1 AND peer_id = $2",
                    "DELETE FROM message_requests WHERE recipient_id = $1 AND sender_id = $2",
                ] {
                    sqlx::query(sql)
                        .bind(owner_id)
                        .bind(peer_id)
                        .execute(&mut *w.tx)
                        .await?;
                }
            }
        }
        if let Some((conversation, reason)) = report {
            sqlx::query(
                "INSERT INTO reports (reporter_id, reported_id, conversation_id, reason, \
                 created_at_ms) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(owner_id)
            .bind(peer_id)
            .bind(conversation)
            .bind(reason)
            .bind(now)
            .execute(&mut *w.tx)
            .await?;
        }
        w.commit().await?;
        Ok(true)
    }

    async fn decisions(&self, owner_id: i64) -> Result<Vec<DecisionRow>, sqlx::Error> {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT a.username, c.state, c.updated_at_ms FROM consent c \
             JOIN accounts a ON a.id = c.peer_id WHERE c.owner_id = $1 ORDER BY a.username",
        )
        .bind(owner_id)
        .fetch_all(self.reader())
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(username, state, at)| {
                Some(DecisionRow {
                    username,
                    decision: Decision::parse(&state)?,
                    updated_at_ms: to_u64(at),
                })
            })
            .collect())
    }

    /// Reads the decisions of `(owner, peer)` pairs, each by its primary key.
    async fn read_decisions(
        tx: &mut Transaction<'static, DB>,
        pairs: &[(i64, i64)],
        cache: &mut ConsentCache,
    ) -> Result<(), sqlx::Error> {
        cache.read_pairs.extend(pairs.iter().copied());
        for chunk in pairs.chunks(MAX_IDS / 2) {
            // `VALUES` columns are named column1, column2 on both databases.
            let mut q = QueryBuilder::<DB>::new("SELECT c.owner_id, c.peer_id, c.state FROM (");
            q.push_values(chunk, |mut row, (owner, peer)| {
                row.push_bind(*owner).push_bind(*peer);
            });
            q.push(") AS v JOIN consent c ON c.owner_id = v.column1 AND c.peer_id = v.column2");
            let rows: Vec<(i64, i64, String)> = q
                .build_query_as()
                .persistent(false)
                .fetch_all(&mut **tx)
                .await?;
            for (owner, peer, state) in rows {
                if let Some(d) = Decision::parse(&state) {
                    cache.decisions.insert((owner, peer), d);
                }
            }
        }
        Ok(())
    }

    /// Reads a conversation's member accounts and their acceptance, and their decisions
    /// about `sender`, when the batch's prefetch does not hold them (the conversation changed
    /// earlier in the batch).
    async fn load_conversation(
        tx: &mut Transaction<'static, DB>,
        conversation: &str,
        sender: &str,
        cache: &mut ConsentCache,
    ) -> Result<(), sqlx::Error> {
        let rows: Vec<(String, i64, i64, String, Option<i64>)> = sqlx::query_as(
            "SELECT m.username, COALESCE(d.id, 0), a.id, COALESCE(cc.state, ''), cc.inviter_id \
             FROM conversation_members m JOIN accounts a ON a.username = m.username \
             LEFT JOIN devices d ON d.account_id = a.id AND d.device_id = m.device_id \
             LEFT JOIN conversation_consent cc ON cc.conversation_id = m.conversation_id \
             AND cc.account_id = a.id WHERE m.conversation_id = $1",
        )
        .bind(conversation)
        .fetch_all(&mut **tx)
        .await?;
        for (username, device_pk, account_id, state, inviter_id) in rows {
            cache.member(
                conversation,
                &username,
                device_pk,
                MemberAccount {
                    account_id,
                    conversation_accepted: state == "accepted",
                    inviter_id,
                },
            );
        }
        let pairs = cache.pairs_for(conversation, sender);
        Self::read_decisions(tx, &pairs, cache).await
    }

    async fn requests_used(
        tx: &mut Transaction<'static, DB>,
        pair: (i64, i64),
        cache: &mut ConsentCache,
    ) -> Result<u32, sqlx::Error> {
        if let Some(n) = cache.requests.get(&pair) {
            return Ok(*n);
        }
        let n: Option<i64> = sqlx::query_scalar(
            "SELECT messages FROM message_requests WHERE recipient_id = $1 AND sender_id = $2",
        )
        .bind(pair.0)
        .bind(pair.1)
        .fetch_optional(&mut **tx)
        .await?;
        let n = u32::try_from(n.unwrap_or(0)).unwrap_or(u32::MAX);
        cache.requests.insert(pair, n);
        Ok(n)
    }

    /// Decides which of `devices` (members of `conversation`, the sender's own excluded) get
    /// an application message of `payload_len` bytes from `sender`, and what that changes.
    pub(super) async fn admit_message(
        tx: &mut Transaction<'static, DB>,
        conversation: &str,
        sender: &DeviceAddress,
        payload_len: usize,
        devices: &[i64],
        limits: RequestLimits,
        cache: &mut ConsentCache,
    ) -> Result<ConsentPlan, sqlx::Error> {
        if !cache.accounts.contains_key(conversation) {
            Self::load_conversation(tx, conversation, &sender.username, cache).await?;
        }
        let mut plan = ConsentPlan::default();
        let Some(sender_id) = cache.account_of(&sender.username) else {
            // Not a member account (cannot happen after ordering): deliver as before.
            plan.devices = devices.to_vec();
            return Ok(plan);
        };
        // Sending in a conversation accepts it.
        if !cache.has_accepted(conversation, sender_id) {
            plan.conversation_writes
                .push(((conversation.to_owned(), sender_id), (None, true)));
        }
        let by_account = cache.by_account(devices, sender_id);
        let mut delivered = 0;
        let mut skipped = Vec::new();
        for (account, pks) in by_account {
            if account == sender_id {
                plan.devices.extend(pks);
                continue;
            }
            let accepted = cache.has_accepted(conversation, account);
            let pair = (account, sender_id);
            let skip =
                Self::admit_from(tx, pair, accepted, payload_len, limits, cache, &mut plan).await?;
            if let Some(reason) = skip {
                skipped.push(reason);
                continue;
            }
            delivered += 1;
            plan.devices.extend(pks);
        }
        plan.refusal = refusal(delivered, &skipped);
        Ok(plan)
    }

    /// Decides an application message of `payload_len` bytes for one recipient account, as
    /// asked by `peer` (`pair` is (account, peer); the peer is the sender, or for a sealed
    /// message the account's inviter): `None` if it is delivered (the plan counts a message
    /// request if it is one), else why it is skipped.
    async fn admit_from(
        tx: &mut Transaction<'static, DB>,
        pair: (i64, i64),
        conversation_accepted: bool,
        payload_len: usize,
        limits: RequestLimits,
        cache: &mut ConsentCache,
        plan: &mut ConsentPlan,
    ) -> Result<Option<SkipReason>, sqlx::Error> {
        let mut view = RecipientView {
            sender: cache.decisions.get(&pair).copied(),
            conversation_accepted,
            requests_used: 0,
        };
        if view.sender.is_none() && !view.conversation_accepted {
            view.requests_used = Self::requests_used(tx, pair, cache).await?;
        }
        Ok(
            match admit(EnvelopeKind::Application, payload_len, view, limits) {
                Admission::Deliver => None,
                Admission::Request => {
                    plan.request_counts
                        .push((pair, view.requests_used.saturating_add(1)));
                    None
                }
                Admission::Skip(reason) => Some(reason),
            },
        )
    }

    /// Decides which of `devices` (every member device of `conversation`, the sender's own
    /// included: the server does not know it) get a sealed application message of
    /// `payload_len` bytes. An account that accepted the conversation gets it. An account
    /// that has not is still being asked by whoever added it: the message is that inviter's
    /// message request, refused if the account blocked the inviter and counted against the
    /// inviter's allowance otherwise. (An account that sends sealed messages registered the
    /// epoch's key first, which accepted the conversation: the sender is never among them.)
    /// The message is refused when it would reach no account but one (the sender's own).
    pub(super) async fn admit_sealed(
        tx: &mut Transaction<'static, DB>,
        conversation: &str,
        payload_len: usize,
        devices: &[i64],
        limits: RequestLimits,
        cache: &mut ConsentCache,
    ) -> Result<ConsentPlan, sqlx::Error> {
        if !cache.accounts.contains_key(conversation) {
            Self::load_conversation(tx, conversation, "", cache).await?;
        }
        let mut plan = ConsentPlan::default();
        let by_account = cache.by_account(devices, 0);
        // In a conversation of two accounts, a block of the other one stops its messages: any
        // sealed message reaching the blocker would be from the blocked account (or the
        // blocker's own, which it cannot send there while it blocks the only other member).
        // In larger groups blocking one member is the client's business.
        let pair: Option<(i64, i64)> = cache.accounts.get(conversation).and_then(|accounts| {
            let mut ids = accounts.keys().copied();
            match (ids.next(), ids.next(), ids.next()) {
                (Some(a), Some(b), None) => Some((a, b)),
                _ => None,
            }
        });
        let mut asked: Vec<(i64, i64)> = by_account
            .keys()
            .filter_map(|&a| Some((a, cache.asking(conversation, a)?)))
            .collect();
        if let Some((a, b)) = pair {
            asked.extend([(a, b), (b, a)]);
        }
        asked.retain(|p| !cache.decisions.contains_key(p) && !cache.read_pairs.contains(p));
        asked.sort_unstable();
        asked.dedup();
        if !asked.is_empty() {
            Self::read_decisions(tx, &asked, cache).await?;
        }
        let mut delivered = 0usize;
        let mut skipped = Vec::new();
        for (account, pks) in by_account {
            let other = pair.and_then(|(a, b)| match account {
                x if x == a => Some(b),
                x if x == b => Some(a),
                _ => None,
            });
            if other.is_some_and(|o| cache.decisions.get(&(account, o)) == Some(&Decision::Blocked))
            {
                skipped.push(SkipReason::Blocked);
                continue;
            }
            let Some(inviter) = cache.asking(conversation, account) else {
                delivered += 1;
                plan.devices.extend(pks);
                continue;
            };
            let pair = (account, inviter);
            let skip =
                Self::admit_from(tx, pair, false, payload_len, limits, cache, &mut plan).await?;
            if let Some(reason) = skip {
                skipped.push(reason);
                continue;
            }
            delivered += 1;
            plan.devices.extend(pks);
        }
        plan.refusal = refusal(delivered.saturating_sub(1), &skipped);
        Ok(plan)
    }

    /// Decides which welcomed devices get a Welcome from `sender` to `conversation`, and
    /// what that changes: each welcomed account accepts the conversation if it accepted the
    /// sender, holds it as a request otherwise (counted like a message), and never sees it
    /// if it blocked the sender. The sender accepts the conversation and every account it
    /// welcomes. `welcomed` are `(device row id, queue length)`.
    pub(super) async fn admit_welcome(
        tx: &mut Transaction<'static, DB>,
        conversation: &str,
        sender: &DeviceAddress,
        welcomed: &[(i64, i64)],
        limits: RequestLimits,
        cache: &mut ConsentCache,
    ) -> Result<(Vec<(i64, i64)>, ConsentPlan), sqlx::Error> {
        let mut plan = ConsentPlan::default();
        let sender_id: Option<i64> =
            sqlx::query_scalar("SELECT id FROM accounts WHERE username = $1")
                .bind(sender.username.as_str())
                .fetch_optional(&mut **tx)
                .await?;
        let Some(sender_id) = sender_id else {
            return Ok((welcomed.to_vec(), plan));
        };
        plan.conversation_writes
            .push(((conversation.to_owned(), sender_id), (None, true)));
        if welcomed.is_empty() {
            return Ok((Vec::new(), plan));
        }
        let mut q = QueryBuilder::<DB>::new(
            "SELECT d.id, d.account_id, c.state FROM devices d \
             LEFT JOIN consent c ON c.owner_id = d.account_id AND c.peer_id = ",
        );
        q.push_bind(sender_id).push(" WHERE ");
        let pks: Vec<i64> = welcomed.iter().map(|(pk, _)| *pk).collect();
        DB::push_id_filter(&mut q, "d.id", &pks);
        let rows: Vec<(i64, i64, Option<String>)> = q
            .build_query_as()
            .persistent(false)
            .fetch_all(&mut **tx)
            .await?;
        let mut accounts: BTreeMap<i64, (Option<Decision>, Vec<i64>)> = BTreeMap::new();
        for (pk, account, state) in rows {
            let entry = accounts
                .entry(account)
                .or_insert((state.as_deref().and_then(Decision::parse), Vec::new()));
            entry.1.push(pk);
        }
        let mut kept: HashSet<i64> = HashSet::new();
        for (account, (decision, pks)) in accounts {
            if account == sender_id {
                kept.extend(pks);
                continue;
            }
            let mut view = RecipientView {
                sender: decision.or_else(|| cache.decisions.get(&(account, sender_id)).copied()),
                conversation_accepted: false,
                requests_used: 0,
            };
            if view.sender.is_none() {
                view.requests_used = Self::requests_used(tx, (account, sender_id), cache).await?;
            }
            let accepted = match admit(EnvelopeKind::Welcome, 0, view, limits) {
                Admission::Deliver => true,
                Admission::Request => {
                    plan.request_counts
                        .push(((account, sender_id), view.requests_used.saturating_add(1)));
                    false
                }
                Admission::Skip(SkipReason::Blocked | SkipReason::RequestLimit) => continue,
            };
            plan.conversation_writes.push((
                (conversation.to_owned(), account),
                (Some(sender_id), accepted),
            ));
            plan.accepts.push((sender_id, account));
            kept.extend(pks);
        }
        let kept = welcomed
            .iter()
            .copied()
            .filter(|(pk, _)| kept.contains(pk))
            .collect();
        Ok((kept, plan))
    }

    /// Whether every recipient `(device, queue length)` takes one more envelope counted
    /// against `share_of`, counting what the batch already planned (`pending`): the device
    /// limit, the sender's (or conversation's) share of a long queue, and the per-account
    /// limit.
    pub(super) async fn queues_take(
        tx: &mut Transaction<'static, DB>,
        share_of: ShareOf<'_>,
        recipients: &[(i64, i64)],
        pending: &HashMap<i64, i64>,
        limits: QueueLimits,
        cache: &ConsentCache,
    ) -> Result<bool, sqlx::Error> {
        let mut per_account: HashMap<i64, i64> = HashMap::new();
        for (pk, len) in recipients {
            let queued = len + pending.get(pk).copied().unwrap_or(0);
            if queued >= i64::from(limits.share_after) && queued < i64::from(limits.max_device) {
                let share = Self::queue_share(tx, *pk, share_of).await?;
                if !device_takes(queued, limits, || share) {
                    return Ok(false);
                }
            } else if !device_takes(queued, limits, || 0) {
                return Ok(false);
            }
            if let Some(account) = cache.devices.get(pk) {
                *per_account.entry(*account).or_default() += queued;
            }
        }
        Ok(per_account.values().all(|q| account_takes(*q, limits)))
    }

    /// Envelopes from `share_of` (an account, or a conversation) in a device's queue.
    async fn queue_share(
        tx: &mut Transaction<'static, DB>,
        device_pk: i64,
        share_of: ShareOf<'_>,
    ) -> Result<i64, sqlx::Error> {
        let (sql, value) = match share_of {
            ShareOf::Account(username) => (
                "SELECT COUNT(*) FROM queue q JOIN messages m ON m.id = q.message_id \
                 WHERE q.device_pk = $1 AND m.sender_username = $2",
                username,
            ),
            ShareOf::Conversation(conversation) => (
                "SELECT COUNT(*) FROM queue q JOIN messages m ON m.id = q.message_id \
                 WHERE q.device_pk = $1 AND m.conversation_id = $2",
                conversation,
            ),
        };
        sqlx::query_scalar(sql)
            .bind(device_pk)
            .bind(value)
            .fetch_one(&mut **tx)
            .await
    }

    /// Writes what the batch's stored sends changed about consent, in key order.
    pub(super) async fn store_consent(
        tx: &mut Transaction<'static, DB>,
        cache: &ConsentCache,
        now_ms: i64,
    ) -> Result<(), sqlx::Error> {
        for ((conversation, account), (inviter, accepted)) in &cache.conversation_writes {
            // An acceptance is never undone by a later request.
            sqlx::query(
                "INSERT INTO conversation_consent (conversation_id, account_id, inviter_id, \
                 state) VALUES ($1, $2, NULLIF($3, 0), $4) ON CONFLICT (conversation_id, account_id) \
                 DO UPDATE SET state = CASE WHEN excluded.state = 'accepted' THEN 'accepted' \
                 ELSE conversation_consent.state END, \
                 inviter_id = COALESCE(conversation_consent.inviter_id, excluded.inviter_id)",
            )
            .bind(conversation.as_str())
            .bind(*account)
            .bind(inviter.unwrap_or(0))
            .bind(if *accepted { "accepted" } else { "request" })
            .execute(&mut **tx)
            .await?;
        }
        for ((recipient, sender), count) in &cache.request_writes {
            sqlx::query(
                "INSERT INTO message_requests (recipient_id, sender_id, messages) \
                 VALUES ($1, $2, $3) ON CONFLICT (recipient_id, sender_id) \
                 DO UPDATE SET messages = excluded.messages",
            )
            .bind(*recipient)
            .bind(*sender)
            .bind(i64::from(*count))
            .execute(&mut **tx)
            .await?;
        }
        for (owner, peer) in &cache.accept_writes {
            // Never turns a block into an acceptance.
            sqlx::query(
                "INSERT INTO consent (owner_id, peer_id, state, updated_at_ms) \
                 VALUES ($1, $2, 'accepted', $3) ON CONFLICT (owner_id, peer_id) DO NOTHING",
            )
            .bind(*owner)
            .bind(*peer)
            .bind(to_i64(super::stored_time(super::to_u64(now_ms))))
            .execute(&mut **tx)
            .await?;
        }
        Ok(())
    }
}
