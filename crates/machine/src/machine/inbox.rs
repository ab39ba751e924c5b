//! Receiving: the server's queue is read page by page (and pushed envelopes join it), each
//! envelope is processed in order with its decrypted content stored in the same transaction as
//! the engine state, and acknowledged only then. Unknown accounts and unlisted devices make
//! the machine fetch device lists and process the same bytes again; an identity key change is
//! held and surfaced, never accepted silently.

use nightjar_api::{B64, Envelope, FrankingStamp};
use nightjar_core::content::{Content, Message};
use nightjar_core::franking::FrankingCheck;
use nightjar_core::{
    ConversationError, ConversationId, ConversationKind, Engine, Error as CoreError, Incoming,
};

use super::{
    Hold, Machine, Notification, Pending, Pull, conversation_row, history, meta, random_hex,
};
use crate::backoff;
use crate::error::{Error, Result};
use crate::rows::{FrankingRecord, OutboxItem};
use crate::store::ClientStore;
use crate::transport::{Failure, Request, Response};

/// Envelopes asked for per inbox page.
pub const INBOX_PAGE: u32 = 200;

/// Processed envelope ids are remembered this long: well beyond the server's envelope
/// lifetime (30 days), so a redelivered id is always recognised.
const PROCESSED_KEPT_MS: u64 = 90 * 24 * 3600 * 1000;

/// What processing the envelope at the front of the queue led to.
enum Outcome {
    /// Stored (or dropped for good): acknowledge it.
    Done,
    /// Held (an identity change awaits the user): leave it queued on the server.
    Held,
    /// Waiting for device lists.
    Waiting,
}

/// How a conversation is named in notices.
pub(crate) fn label<S: ClientStore>(
    engine: &mut Engine<S>,
    conversation: ConversationId,
) -> String {
    match engine.conversation(conversation) {
        Ok(info) => match (info.kind, info.metadata.clone()) {
            (ConversationKind::Group, Some(m)) => format!("group {}", m.name),
            (ConversationKind::Direct, _) => format!(
                "your conversation with {}",
                info.peer.as_deref().unwrap_or("nobody")
            ),
            _ => format!("conversation {conversation}"),
        },
        Err(_) => format!("conversation {conversation}"),
    }
}

/// What a received message's franking (docs/reporting.md) means for it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Franking {
    /// It can be reported: the record to keep with its history row.
    Reportable(Box<FrankingRecord>),
    /// Kept, but it cannot be reported: the sender franked nothing (a client from before
    /// franking) or the envelope carries no stamp (a server from before franking).
    Unreportable,
    /// Dropped, with a notice saying why: its franking does not hold. No honest sender makes
    /// such a message (the opening is inside the MLS-authenticated plaintext), so the sending
    /// device is hostile or broken, or the server altered the commitment on the envelope;
    /// keeping it would show a message its recipient could not report.
    Broken(&'static str),
}

/// Decides what `check` (the engine's verdict on the opening inside the message) and the
/// envelope's `stamp` make of `message`.
pub(crate) fn franking(
    check: &FrankingCheck,
    stamp: Option<&FrankingStamp>,
    message: &Message,
) -> Franking {
    match (check, stamp) {
        (FrankingCheck::Invalid, _) => Franking::Broken(
            "its franking does not verify (its sender's device did not sign a commitment to \
             this content), so it could not be reported",
        ),
        (FrankingCheck::Absent, _) | (FrankingCheck::Verified(_), None) => Franking::Unreportable,
        (FrankingCheck::Verified(franked), Some(stamp))
            if stamp.commitment.0 == franked.commitment.as_bytes() =>
        {
            Franking::Reportable(Box::new(FrankingRecord {
                message: B64(message.encode()),
                key: B64(franked.opening.key.as_bytes().to_vec()),
                signature: B64(franked.opening.signature.to_vec()),
                commitment: stamp.commitment.clone(),
                tag: stamp.tag.clone(),
                time_ms: stamp.time_ms,
            }))
        }
        (FrankingCheck::Verified(_), Some(_)) => Franking::Broken(
            "the franking commitment on its envelope is not the one the message opens, so it \
             could not be reported",
        ),
    }
}

/// Applies what an incoming message means to the client's rows (inside the engine's
/// transaction); returns the notifications for the user. `stamp` is the envelope's franking
/// stamp.
fn record_incoming<S: ClientStore>(
    engine: &mut Engine<S>,
    store: &S,
    incoming: &Incoming,
    stamp: Option<&FrankingStamp>,
    now: u64,
    call_replies: &mut Option<Vec<crate::calls::CallReply>>,
) -> Result<Vec<Notification>> {
    let me = engine.device().clone();
    let mut out = Vec::new();
    match incoming {
        Incoming::Message {
            conversation,
            sender,
            message,
            franking: check,
            ..
        } => {
            let record = match franking(check, stamp, message) {
                Franking::Broken(why) => {
                    out.push(Notification::Notice(format!(
                        "dropped a message from {} in {}: {why}",
                        sender.username,
                        label(engine, *conversation)
                    )));
                    return Ok(out);
                }
                // This account's own messages are not reported: no record.
                Franking::Reportable(record) if sender.username != me.username => Some(record),
                Franking::Reportable(_) | Franking::Unreportable => None,
            };
            let id = conversation.to_string();
            match &message.content {
                Content::Typing { active } => out.push(Notification::Typing {
                    conversation: *conversation,
                    from: sender.username.clone(),
                    active: *active,
                }),
                Content::ReadReceipt { message_ids } => out.push(Notification::Read {
                    conversation: *conversation,
                    from: sender.username.clone(),
                    device: sender.device_id.to_string(),
                    id: message.id,
                    sent_at: message.sent_at_ms,
                    message_ids: message_ids.clone(),
                }),
                Content::DeliveryReceipt { message_ids } => out.push(Notification::Delivered {
                    conversation: *conversation,
                    from: sender.username.clone(),
                    device: sender.device_id.to_string(),
                    id: message.id,
                    sent_at: message.sent_at_ms,
                    message_ids: message_ids.clone(),
                }),
                Content::Call(signal) => {
                    let origin = crate::calls::SignalOrigin {
                        conversation: *conversation,
                        sender,
                        sent_at: message.sent_at_ms,
                    };
                    *call_replies = Some(super::calling::on_call_signal(
                        engine, store, now, origin, signal, &mut out,
                    )?);
                }
                _ => {}
            }
            let author = history::Author {
                username: &sender.username,
                device: sender.device_id.to_string(),
                outgoing: sender.username == me.username,
            };
            if let Some(mut stored) = history::row(&id, &author, message) {
                stored.detail.franking = record;
                let recorded = history::record(store, stored.clone(), now, false)?;
                if recorded == history::Recorded::Refused {
                    out.push(Notification::Notice(format!(
                        "{} tried to {} a message that is not theirs in {}: ignored",
                        sender.username,
                        stored.kind,
                        label(engine, *conversation)
                    )));
                }
                if recorded == history::Recorded::Stored {
                    let held = sender.username != me.username
                        && store.is_request(&id, &sender.username)?;
                    if held {
                        let first = store.hold_message(&id, &sender.username, &stored.id)?;
                        let blocked =
                            store.consent(&sender.username)? == Some(crate::rows::Consent::Blocked);
                        if first && !blocked {
                            out.push(Notification::MessageRequest {
                                conversation: *conversation,
                                from: sender.username.clone(),
                            });
                        }
                    } else {
                        let detail = stored.detail.clone().shown();
                        out.push(Notification::Received(crate::rows::StoredMessage {
                            detail,
                            ..stored
                        }));
                    }
                }
            }
            if store.conversation_row(&id)?.is_none() {
                let row = conversation_row(engine, *conversation)?;
                store.upsert_conversation(&row, now)?;
                out.push(Notification::ConversationChanged(*conversation));
            }
        }
        Incoming::Commit {
            conversation,
            sender,
            added,
            removed,
            metadata_changed,
            superseded,
            ..
        } => {
            let row = conversation_row(engine, *conversation)?;
            store.upsert_conversation(&row, now)?;
            out.push(Notification::ConversationChanged(*conversation));
            let name = label(engine, *conversation);
            let mut accounts: Vec<&str> = added
                .iter()
                .filter(|d| d.username != sender.username && d.username != me.username)
                .map(|d| d.username.as_str())
                .collect();
            accounts.dedup();
            for a in accounts {
                out.push(Notification::Notice(format!(
                    "{} added {a} to {name}",
                    sender.username
                )));
            }
            if !removed.is_empty() {
                super::calling::on_members_changed(engine, store, now, *conversation, &mut out)?;
            }
            let mut gone: Vec<&str> = removed.iter().map(|d| d.username.as_str()).collect();
            gone.dedup();
            let info = engine.conversation(*conversation)?;
            for a in gone {
                if !info.members.iter().any(|m| m.username == a) {
                    out.push(Notification::Notice(format!(
                        "{} removed {a} from {name}",
                        sender.username
                    )));
                }
            }
            if *metadata_changed && let Some(group) = row.name {
                out.push(Notification::Notice(format!(
                    "{} renamed the group to {group}",
                    sender.username
                )));
            }
            if superseded.is_some() {
                // Our commit for that epoch lost: retry it on the new epoch.
                let id = conversation.to_string();
                for r in store.outbox()? {
                    if r.conversation == id && matches!(r.item, OutboxItem::Commit { .. }) {
                        store.remove_outbox(r.seq)?;
                    }
                }
                if let Some(intent) = engine.commit_rejected(*conversation)? {
                    store.push_outbox(&id, &OutboxItem::Retry { intent }, &random_hex()?, now)?;
                }
            }
        }
        Incoming::Joined {
            conversation,
            kind,
            sender,
            ..
        } => {
            let row = conversation_row(engine, *conversation)?;
            store.upsert_conversation(&row, now)?;
            out.push(Notification::ConversationChanged(*conversation));
            let name = label(engine, *conversation);
            out.push(Notification::Notice(if sender.username == me.username {
                format!("this device joined {name}")
            } else if *kind == ConversationKind::Group {
                format!("{} added you to {name}", sender.username)
            } else {
                format!("{} started a conversation with you", sender.username)
            }));
            let id = conversation.to_string();
            if sender.username != me.username
                && !store.joined_conversation(&id, &sender.username)?
            {
                out.push(Notification::MessageRequest {
                    conversation: *conversation,
                    from: sender.username.clone(),
                });
            }
        }
        Incoming::Removed { conversation, by } => {
            let id = conversation.to_string();
            if let Some(mut row) = store.conversation_row(&id)? {
                row.active = false;
                store.upsert_conversation(&row, now)?;
                let name = row.name.unwrap_or_else(|| id.clone());
                out.push(Notification::Notice(format!(
                    "{} removed you from {name}",
                    by.username
                )));
                out.push(Notification::ConversationChanged(*conversation));
            }
            store.clear_outbox_for(&id)?;
            super::calling::on_members_changed(engine, store, now, *conversation, &mut out)?;
        }
        Incoming::LeaveRequested {
            conversation,
            member,
        } => {
            store.push_outbox(
                &conversation.to_string(),
                &OutboxItem::CommitProposals,
                &random_hex()?,
                now,
            )?;
            out.push(Notification::Notice(format!(
                "{} left a conversation",
                member.username
            )));
        }
        _ => {}
    }
    Ok(out)
}

impl<S: ClientStore> Machine<S> {
    /// Envelopes pushed on the stream: processed in order after anything queued before them;
    /// a duplicate (already queued or processed) is acknowledged and dropped.
    pub fn handle_pushed(&mut self, now: u64, envelopes: Vec<Envelope>) {
        self.enqueue(envelopes);
        self.work(now);
    }

    fn enqueue(&mut self, envelopes: Vec<Envelope>) {
        for e in envelopes {
            if !self.queue.iter().any(|q| q.id == e.id) {
                self.queue.push_back(e);
            }
        }
    }

    /// The answer to an inbox page.
    pub(super) fn on_inbox(&mut self, now: u64, outcome: Result<Response, Failure>) -> Result<()> {
        let Pull::Asking { after } = self.pull else {
            return Ok(());
        };
        match outcome {
            Ok(Response::Inbox(envelopes)) => {
                let fresh: Vec<Envelope> = envelopes.into_iter().filter(|e| e.id > after).collect();
                match fresh.iter().map(|e| e.id).max() {
                    // Envelopes held back (an identity change awaits the user) stay queued on
                    // the server: only ever move forward, so the reading ends.
                    None => {
                        self.pull = Pull::Idle;
                        self.drained(now)?;
                    }
                    Some(last) => {
                        self.pull = Pull::Processing { after: last };
                        self.enqueue(fresh);
                    }
                }
            }
            Ok(_) => self.pull = Pull::Idle,
            Err(Failure::Network(_)) => {
                self.network_failures += 1;
                self.inbox_paused_until = Some(now + backoff::retry_delay(self.network_failures));
                self.pull = Pull::Idle;
                self.pull_wanted = true;
            }
            Err(Failure::Refused(e)) => {
                self.pull = Pull::Idle;
                self.notice(format!("could not read the inbox: {}", e.message));
            }
        }
        Ok(())
    }

    /// Reads the next page once the previous one is processed.
    pub(super) fn advance_pull(&mut self, now: u64) -> Result<()> {
        if self.inbox_paused_until.is_some() {
            return Ok(());
        }
        let after = match self.pull {
            Pull::Asking { .. } => return Ok(()),
            Pull::Processing { after } if self.queue.is_empty() && self.fetching.is_empty() => {
                after
            }
            Pull::Processing { .. } => return Ok(()),
            Pull::Idle if self.pull_wanted => {
                self.pull_wanted = false;
                self.store
                    .prune_processed(now.saturating_sub(PROCESSED_KEPT_MS))?;
                0
            }
            Pull::Idle => return Ok(()),
        };
        self.pull = Pull::Asking { after };
        self.request(
            Request::Inbox {
                after,
                limit: INBOX_PAGE,
            },
            Pending::Inbox,
        );
        Ok(())
    }

    /// The queue is drained: epoch races may be retried, missing messages reported, and this
    /// account's devices reconciled.
    fn drained(&mut self, now: u64) -> Result<()> {
        self.holds.retain(|_, h| *h != Hold::AfterSync);
        self.report_missing(now)?;
        self.reconcile_own_devices(now)?;
        self.notifications.push_back(Notification::Synced);
        Ok(())
    }

    pub(super) fn send_acks(&mut self) {
        if self.acks.is_empty() {
            return;
        }
        let ids = std::mem::take(&mut self.acks);
        self.request(Request::Ack { ids }, Pending::Ack);
    }

    /// Processes the queue from the front until it is empty or waits for device lists; then
    /// tells the senders what arrived, if delivery receipts are on.
    pub(super) fn process_queue(&mut self, now: u64) -> Result<()> {
        self.process_envelopes(now)?;
        if self.queue.is_empty() {
            self.send_delivery_receipts(now)?;
        }
        Ok(())
    }

    /// One delivery receipt per conversation for the messages stored since the last one
    /// (never for message requests: a receipt would tell a stranger, and sending accepts).
    fn send_delivery_receipts(&mut self, now: u64) -> Result<()> {
        for (conversation, ids) in std::mem::take(&mut self.delivered) {
            if ids.is_empty() {
                continue;
            }
            match self.send_message(
                now,
                conversation,
                Content::DeliveryReceipt { message_ids: ids },
            ) {
                Ok(_) | Err(Error::IdentityChanged(_) | Error::Usage(_)) => {}
                Err(Error::Engine(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn process_envelopes(&mut self, now: u64) -> Result<()> {
        while self.fetching.is_empty()
            && self.inbox_paused_until.is_none()
            && let Some(envelope) = self.queue.front().cloned()
        {
            match self.process_front(now, &envelope)? {
                Outcome::Done => {
                    self.acks.push(envelope.id);
                    self.queue.pop_front();
                    self.fetched.clear();
                }
                Outcome::Held => {
                    self.queue.pop_front();
                    self.fetched.clear();
                }
                Outcome::Waiting => return Ok(()),
            }
        }
        Ok(())
    }

    fn process_front(&mut self, now: u64, envelope: &Envelope) -> Result<Outcome> {
        if self.store.is_processed(envelope.id)? {
            return Ok(Outcome::Done);
        }
        let id = envelope.id;
        // Set when the envelope was a call signal: what to send back.
        let mut call_replies = None;
        let result = self.atomic(|engine, store| {
            let incoming = engine.process(now, &envelope.payload.0)?;
            let notes = record_incoming(
                engine,
                store,
                &incoming,
                envelope.franking.as_ref(),
                now,
                &mut call_replies,
            )?;
            store.mark_processed(id, now)?;
            let stated = match incoming {
                Incoming::Message {
                    sender,
                    sender_state: Some(state),
                    ..
                } => Some((sender.username, state)),
                _ => None,
            };
            Ok((notes, stated))
        });
        let error = match result {
            Ok((notes, stated)) => {
                if let Some((sender, state)) = stated {
                    self.check_sender_state(&sender, &state)?;
                }
                if self.delivery_receipts {
                    for n in &notes {
                        // A call's history row is no message of the sender's: no receipt.
                        if let Notification::Received(m) = n
                            && !m.outgoing
                            && history::READABLE_KINDS.contains(&m.kind.as_str())
                            && let (Some(c), Some(id)) = (
                                ConversationId::parse(&m.conversation),
                                nightjar_core::content::MessageId::from_hex(&m.id),
                            )
                        {
                            self.delivered.entry(c).or_default().push(id);
                        }
                    }
                }
                self.notifications.extend(notes);
                if let Some(replies) = call_replies {
                    for reply in replies {
                        self.send_call_signal(now, reply)?;
                    }
                    self.call_deadline = super::calling::load_book(&self.store)?.next_deadline();
                }
                return Ok(Outcome::Done);
            }
            Err(e) => e,
        };
        let needed: Vec<String> = match &error {
            Error::Engine(CoreError::Conversation(ConversationError::UnknownAccounts(names))) => {
                names.clone()
            }
            Error::Engine(CoreError::Conversation(ConversationError::DeviceNotInList(who))) => {
                vec![who.split('/').next().unwrap_or_default().to_owned()]
            }
            Error::Engine(CoreError::Conversation(
                ConversationError::OwnMessage
                | ConversationError::Replayed
                | ConversationError::Duplicate,
            )) => {
                // A copy of something already processed (an echo, a replayed ciphertext, or
                // the same message encrypted twice): dropped without a word.
                self.store.mark_processed(id, now)?;
                return Ok(Outcome::Done);
            }
            Error::Engine(CoreError::Conversation(ConversationError::Forked { epoch })) => {
                self.report_fork(envelope, *epoch)?;
                self.store.mark_processed(id, now)?;
                return Ok(Outcome::Done);
            }
            Error::Engine(_) => Vec::new(),
            _ => return Err(error),
        };
        let fresh: Vec<String> = needed
            .into_iter()
            .filter(|n| !n.is_empty() && !self.fetched.contains(n))
            .collect();
        if fresh.is_empty() {
            if self.held_for_identity(&error)? {
                return Ok(Outcome::Held);
            }
            // Nothing authenticated the sender (MLS did not get that far): the name is only
            // what the server claims, and is shown as such (a sealed message names nobody).
            if envelope.sender.username.is_empty() {
                self.notice(format!(
                    "dropped a sealed message that could not be processed: {error}"
                ));
            } else {
                self.notice(format!(
                    "dropped a message the server attributed to {} that could not be processed: {error}",
                    envelope.sender.username
                ));
            }
            self.store.mark_processed(id, now)?;
            return Ok(Outcome::Done);
        }
        for name in fresh {
            self.fetch_account(&name);
            self.fetched.insert(name);
        }
        Ok(Outcome::Waiting)
    }

    /// Whether the envelope needs an account whose identity change awaits the user.
    fn held_for_identity(&self, error: &Error) -> Result<bool> {
        let names: Vec<String> = match error {
            Error::Engine(CoreError::Conversation(ConversationError::UnknownAccounts(names))) => {
                names.clone()
            }
            Error::Engine(CoreError::Conversation(ConversationError::DeviceNotInList(who))) => {
                vec![who.split('/').next().unwrap_or_default().to_owned()]
            }
            _ => return Ok(false),
        };
        for n in names {
            if self
                .store
                .contact(&n)?
                .is_some_and(|c| c.changed_list.is_some())
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// The answer to a device-list fetch made for the envelope at the front of the queue.
    pub(super) fn on_account(
        &mut self,
        now: u64,
        username: &str,
        outcome: Result<Response, Failure>,
    ) -> Result<()> {
        self.fetching.remove(username);
        match outcome {
            Ok(Response::Account(account)) => match self.accept_account(now, username, &account) {
                Ok(()) | Err(Error::IdentityChanged(_)) => {}
                Err(Error::NotYetProven(_)) => {
                    // The directory catches up within seconds: ask again after a while.
                    self.fetched.remove(username);
                    self.network_failures += 1;
                    self.inbox_paused_until =
                        Some(now + backoff::retry_delay(self.network_failures));
                    return Ok(());
                }
                Err(Error::Transparency(why)) => {
                    self.notice(format!("refused the keys of {username}: {why}"));
                }
                Err(Error::Engine(e)) => {
                    self.notice(format!("the device list of {username} is invalid: {e}"));
                }
                Err(e) => return Err(e),
            },
            Ok(_) | Err(Failure::Refused(_)) => {}
            Err(Failure::Network(_)) => {
                // Ask again after a while: the envelope stays at the front.
                self.fetched.remove(username);
                self.network_failures += 1;
                self.inbox_paused_until = Some(now + backoff::retry_delay(self.network_failures));
                return Ok(());
            }
        }
        self.check_stated_list(username)
    }

    /// Turns gaps in senders' sequence numbers that stayed open for the grace time into
    /// notices, once each.
    pub fn report_missing(&mut self, now: u64) -> Result<()> {
        let grace = self.missing_after_ms;
        let notes = self.atomic(|engine, _| {
            let missing = engine.missing_messages(now, grace)?;
            Ok(missing
                .into_iter()
                .map(|m| {
                    let name = label(engine, m.conversation);
                    let (noun, verb) = if m.count == 1 {
                        ("message", "is")
                    } else {
                        ("messages", "are")
                    };
                    format!(
                        "{} {noun} from {} {verb} missing in {name} (sent by its device {}; the server did not deliver them)",
                        m.count, m.sender.username, m.sender.device_id
                    )
                })
                .collect::<Vec<_>>())
        })?;
        for n in notes {
            self.notice(n);
        }
        Ok(())
    }

    /// Says, once per conversation and epoch, that a message showed the conversation forked.
    fn report_fork(&mut self, envelope: &Envelope, epoch: u64) -> Result<()> {
        let Some(conversation) = nightjar_core::wire::inspect(&envelope.payload.0)
            .ok()
            .and_then(|info| info.conversation)
        else {
            return Ok(());
        };
        let key = format!("{}{conversation}", meta::FORK_REPORTED);
        if self.store.meta(&key)? == Some(epoch.to_string()) {
            return Ok(());
        }
        self.store.set_meta(&key, &epoch.to_string())?;
        let name = label(&mut self.engine, conversation);
        self.notice(format!(
            "{name} has forked: a message sent in epoch {epoch} does not match this device's \
             view of that epoch, so members were given different changes to the conversation \
             (by the server, or a broken client); messages from the other branch cannot be read"
        ));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use nightjar_core::content::MessageId;
    use nightjar_core::franking::{Commitment, Franked, FrankingKey, Opening};

    use super::*;

    fn message() -> Message {
        Message {
            id: MessageId([1; 16]),
            sent_at_ms: 5,
            expires_after_secs: None,
            content: Content::Text { body: "hi".into() },
        }
    }

    fn stamp(commitment: [u8; 32]) -> FrankingStamp {
        FrankingStamp {
            commitment: B64(commitment.to_vec()),
            tag: B64(vec![2; 32]),
            time_ms: 3_600_000,
        }
    }

    #[test]
    fn only_a_verified_opening_with_the_same_stamped_commitment_is_reportable() {
        let verified = FrankingCheck::Verified(Box::new(Franked {
            commitment: Commitment([7; 32]),
            opening: Opening {
                key: FrankingKey::from_bytes([3; 32]),
                signature: [4; 64],
            },
        }));
        let m = message();
        match franking(&verified, Some(&stamp([7; 32])), &m) {
            Franking::Reportable(record) => {
                assert_eq!(record.message.0, m.encode());
                assert_eq!(record.key.0, [3; 32]);
                assert_eq!(record.signature.0, [4; 64]);
                assert_eq!(record.commitment.0, [7; 32]);
                assert_eq!(record.tag.0, [2; 32]);
                assert_eq!(record.time_ms, 3_600_000);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            franking(&verified, Some(&stamp([8; 32])), &m),
            Franking::Broken(_)
        ));
        assert_eq!(franking(&verified, None, &m), Franking::Unreportable);
        assert_eq!(
            franking(&FrankingCheck::Absent, Some(&stamp([7; 32])), &m),
            Franking::Unreportable
        );
        assert_eq!(
            franking(&FrankingCheck::Absent, None, &m),
            Franking::Unreportable
        );
        for s in [None, Some(stamp([7; 32]))] {
            assert!(matches!(
                franking(&FrankingCheck::Invalid, s.as_ref(), &m),
                Franking::Broken(_)
            ));
        }
    }
}
