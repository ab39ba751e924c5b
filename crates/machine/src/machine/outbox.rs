//! Posting the outbox. Commits go first (a pending commit blocks sending in its conversation);
//! a lost epoch race turns a commit into a retry made after the winner is processed; an
//! application message whose epoch moved on is encrypted again under the same message id. A
//! 429 holds the conversation for as long as the server asked; a server error or a network
//! failure backs off; a refusal for good keeps the entry, marked, for the user.

use std::collections::{BTreeSet, HashSet};

use nightjar_api::{
    B64, DeviceAddress, EnvelopeKind, ErrorCode, SealedKeyRequest, SealedSendRequest, SendRequest,
    WelcomeOut,
};
use nightjar_core::content::{Message, MessageId};
use nightjar_core::identity::DeviceCredential;
use nightjar_core::sealed::SealedSubmission;
use nightjar_core::{
    CommitBundle, ConversationError, ConversationId, Engine, Error as CoreError, Intent,
};

use super::{Hold, Machine, Notification, Pending, Pull, conversation_row, meta, random_hex};
use crate::backoff;
use crate::error::{Error, Result};
use crate::rows::{OutboxItem, OutboxRow};
use crate::store::ClientStore;
use crate::transport::{Failure, Request, Response};

/// Attempts after which a message still refused for its epoch is given up as refused.
const MAX_EPOCH_RETRIES: u64 = 5;

/// Epoch conflicts in a row a conversation retries right after the next sync; later ones
/// wait with backoff.
const CONFLICTS_BEFORE_BACKOFF: u32 = 3;
/// Local steps (re-encryptions, retried commits) one pass makes at most.
const MAX_STEPS: usize = 500;

/// What one entry led to.
enum Step {
    /// Go on with the next entry.
    Continue,
    /// Leave this conversation's remaining entries for later.
    Block,
    /// A request went out.
    Posted,
}

/// The routing address of a device.
pub fn address(c: &DeviceCredential) -> DeviceAddress {
    DeviceAddress {
        username: c.username.clone(),
        device_id: c.device_id.to_string(),
    }
}

fn conversation_error(e: &Error) -> Option<&ConversationError> {
    match e {
        Error::Engine(CoreError::Conversation(c)) => Some(c),
        _ => None,
    }
}

/// Queues a commit the engine just made (it stays pending in the engine until the verdict).
pub fn enqueue_commit<S: ClientStore>(
    engine: &mut Engine<S>,
    store: &S,
    bundle: &CommitBundle,
    now: u64,
) -> Result<()> {
    let info = engine.conversation(bundle.conversation)?;
    let mut members: BTreeSet<DeviceCredential> = info.members.into_iter().collect();
    if let Some(Intent::RemoveDevices { devices }) = &info.pending {
        for d in devices {
            members.remove(d);
        }
    }
    members.extend(bundle.welcome_recipients.iter().cloned());
    let item = OutboxItem::Commit {
        epoch: bundle.epoch,
        commit: B64(bundle.commit.clone()),
        welcome: bundle.welcome.clone().map(B64),
        welcome_recipients: bundle.welcome_recipients.iter().map(address).collect(),
        members: members.iter().map(address).collect(),
        group_info: bundle.group_info.clone().map(B64),
    };
    store.push_outbox(&bundle.conversation.to_string(), &item, &random_hex()?, now)?;
    Ok(())
}

impl<S: ClientStore> Machine<S> {
    /// Whether an outbox entry could be posted now.
    pub(super) fn can_post(&self, now: u64) -> bool {
        if self.posting || self.paused_until.is_some_and(|t| t > now) {
            return false;
        }
        if !self.registrations_due.is_empty() {
            return true;
        }
        self.store.outbox().is_ok_and(|rows| {
            rows.iter()
                .any(|r| r.refused.is_none() && !self.is_held(&r.conversation, now))
        })
    }

    fn is_held(&self, conversation: &str, now: u64) -> bool {
        match self.holds.get(conversation) {
            Some(Hold::Until(t)) => *t > now,
            Some(Hold::AfterSync) => true,
            None => false,
        }
    }

    /// Posts the next entry that can go, after making every local step before it. Waits while
    /// the inbox is being read and processed, so a message is encrypted in the epoch the
    /// server is at and reaches devices added meanwhile (but not for a read that failed and
    /// waits to be retried: the outbox tries on its own).
    pub(super) fn flush(&mut self, now: u64) -> Result<()> {
        let reading = self.pull != Pull::Idle
            || !self.queue.is_empty()
            || (self.pull_wanted && self.inbox_paused_until.is_none());
        if self.posting || self.paused_until.is_some() || reading {
            return Ok(());
        }
        if let Some(conversation) = self.registrations_due.pop_first()
            && self.register_sealed_key(conversation, None)?
        {
            return Ok(());
        }
        let mut blocked: HashSet<String> = HashSet::new();
        for _ in 0..MAX_STEPS {
            let Some(row) = self.store.outbox()?.into_iter().find(|r| {
                r.refused.is_none()
                    && !blocked.contains(&r.conversation)
                    && !self.is_held(&r.conversation, now)
            }) else {
                return Ok(());
            };
            let conversation = row.conversation.clone();
            match self.step(now, row)? {
                Step::Continue => {}
                Step::Block => {
                    blocked.insert(conversation);
                }
                Step::Posted => return Ok(()),
            }
        }
        Ok(())
    }

    fn step(&mut self, now: u64, row: OutboxRow) -> Result<Step> {
        let Some(conversation) = ConversationId::parse(&row.conversation) else {
            self.store.remove_outbox(row.seq)?;
            return Ok(Step::Continue);
        };
        match row.item.clone() {
            OutboxItem::Message { .. } => self.step_message(now, &row, conversation),
            OutboxItem::Commit {
                epoch,
                commit,
                welcome,
                welcome_recipients,
                members,
                group_info,
            } => {
                let body = SendRequest {
                    idempotency_key: row.idempotency_key.clone(),
                    kind: EnvelopeKind::Commit,
                    epoch,
                    payload: commit,
                    welcome: welcome.map(|payload| WelcomeOut {
                        payload,
                        recipients: welcome_recipients,
                    }),
                    members: Some(members),
                    group_info,
                    franking_commitment: None,
                };
                self.post(row.seq, conversation, body);
                Ok(Step::Posted)
            }
            OutboxItem::Retry { intent } => {
                let seq = row.seq;
                let result =
                    self.atomic(|engine, store| match engine.retry(conversation, intent)? {
                        Some(bundle) => {
                            store.remove_outbox(seq)?;
                            enqueue_commit(engine, store, &bundle, now)
                        }
                        None => Ok(store.remove_outbox(seq)?),
                    });
                self.settle_local(&row, result)
            }
            OutboxItem::Leave => self.step_leave(&row, conversation),
            OutboxItem::CommitProposals => {
                let seq = row.seq;
                let result = self.atomic(|engine, store| {
                    let bundle = engine.commit_pending_proposals(conversation)?;
                    store.remove_outbox(seq)?;
                    enqueue_commit(engine, store, &bundle, now)
                });
                self.settle_local(&row, result)
            }
        }
    }

    /// The leave proposal, made in the epoch the group is at now (after this device's own
    /// commits, which go first).
    fn step_leave(&mut self, row: &OutboxRow, conversation: ConversationId) -> Result<Step> {
        let info = match self.engine.conversation(conversation) {
            Ok(info) if info.active => info,
            _ => {
                self.store.remove_outbox(row.seq)?;
                return Ok(Step::Continue);
            }
        };
        if info.pending.is_some() {
            return Ok(Step::Block);
        }
        let proposal = self.atomic(|engine, _| Ok(engine.leave(conversation)?))?;
        let body = SendRequest {
            idempotency_key: random_hex()?,
            kind: EnvelopeKind::Proposal,
            epoch: info.epoch,
            payload: B64(proposal),
            welcome: None,
            members: None,
            group_info: None,
            franking_commitment: None,
        };
        self.post(row.seq, conversation, body);
        Ok(Step::Posted)
    }

    fn post(&mut self, seq: i64, conversation: ConversationId, body: SendRequest) {
        self.posting = true;
        self.request(Request::Send { conversation, body }, Pending::Post { seq });
    }

    /// Outcome of turning an entry into a commit locally (no network involved).
    fn settle_local(&mut self, row: &OutboxRow, result: Result<()>) -> Result<Step> {
        match result {
            Ok(()) => Ok(Step::Continue),
            Err(e) => match conversation_error(&e) {
                Some(ConversationError::CommitInFlight) => Ok(Step::Block),
                _ if matches!(e, Error::Engine(_)) => {
                    // Nothing left to commit, or this device left: drop the entry.
                    self.store.remove_outbox(row.seq)?;
                    self.notice(format!(
                        "a queued change to conversation {} was dropped: {e}",
                        row.conversation
                    ));
                    Ok(Step::Continue)
                }
                _ => Err(e),
            },
        }
    }

    fn step_message(
        &mut self,
        now: u64,
        row: &OutboxRow,
        conversation: ConversationId,
    ) -> Result<Step> {
        let OutboxItem::Message {
            plaintext,
            message_id,
            ciphertext,
            epoch,
            franking_commitment,
        } = row.item.clone()
        else {
            return Ok(Step::Continue);
        };
        let info = match self.engine.conversation(conversation) {
            Ok(info) if info.active => info,
            _ => {
                self.store.remove_outbox(row.seq)?;
                self.notice(format!(
                    "a message to conversation {} was not sent: this device is not a member",
                    row.conversation
                ));
                return Ok(Step::Continue);
            }
        };
        if info.pending.is_some() {
            let has_commit = self.store.outbox()?.iter().any(|r| {
                r.conversation == row.conversation && matches!(r.item, OutboxItem::Commit { .. })
            });
            if !has_commit {
                // A pending commit with no outbox entry (a crash between the two): discard it
                // and redo its intent.
                self.atomic(|engine, store| {
                    if let Some(intent) = engine.commit_rejected(conversation)? {
                        store.push_outbox(
                            &conversation.to_string(),
                            &OutboxItem::Retry { intent },
                            &random_hex()?,
                            now,
                        )?;
                    }
                    Ok(())
                })?;
                return Ok(Step::Continue);
            }
            return Ok(Step::Block);
        }
        // Sealed: the server learns "a member of this conversation", not who. The first
        // message of this device in a conversation is preceded by a key registration, which
        // accepts the conversation on the server (as an authenticated send would). It goes
        // before the encryption, so that the message and any commit the encryption queues keep
        // their order.
        let joined = format!("{}{conversation}", meta::SEALED_JOINED);
        if self.store.meta(&joined)?.is_none() {
            return Ok(if self.register_sealed_key(conversation, Some(row.seq))? {
                Step::Posted
            } else {
                Step::Block
            });
        }
        let (payload, epoch, key, commitment) = match (ciphertext, epoch) {
            (Some(ct), Some(ep)) if ep == info.epoch => {
                (ct, ep, row.idempotency_key.clone(), franking_commitment)
            }
            (previous, _) => {
                let message = Message::decode(&plaintext.0)
                    .map_err(|e| Error::Usage(format!("a queued message is unreadable: {e}")))?;
                // A ciphertext that may have reached the server gets a new key: the old one
                // would return the old answer. Receivers drop the duplicate by message id.
                let key = if previous.is_some() {
                    random_hex()?
                } else {
                    row.idempotency_key.clone()
                };
                let seq = row.seq;
                let result = self.atomic(|engine, store| {
                    let out = engine.encrypt(now, conversation, &message)?;
                    let commitment = B64(out.franking_commitment.as_bytes().to_vec());
                    let item = OutboxItem::Message {
                        plaintext: plaintext.clone(),
                        message_id: message_id.clone(),
                        ciphertext: Some(B64(out.message.clone())),
                        epoch: Some(out.epoch),
                        franking_commitment: Some(commitment.clone()),
                    };
                    store.replace_outbox(seq, &item, &key)?;
                    if let Some(update) = &out.self_update {
                        enqueue_commit(engine, store, update, now)?;
                    }
                    Ok((B64(out.message), out.epoch, commitment))
                });
                match result {
                    Ok((payload, epoch, commitment)) => (payload, epoch, key, Some(commitment)),
                    Err(e) => {
                        return match conversation_error(&e) {
                            Some(ConversationError::PendingProposals) => {
                                self.store.push_outbox(
                                    &row.conversation,
                                    &OutboxItem::CommitProposals,
                                    &random_hex()?,
                                    now,
                                )?;
                                Ok(Step::Continue)
                            }
                            Some(ConversationError::CommitInFlight) => Ok(Step::Block),
                            _ if matches!(e, Error::Engine(_)) => {
                                self.store.remove_outbox(row.seq)?;
                                self.notice(format!("a message could not be encrypted: {e}"));
                                Ok(Step::Continue)
                            }
                            _ => Err(e),
                        };
                    }
                }
            }
        };
        let sealed = self.atomic(|engine, _| Ok(engine.sealed_key(conversation)?))?;
        if sealed.epoch != epoch {
            return Ok(Step::Block);
        }
        let submission = SealedSubmission {
            conversation,
            epoch,
            submission_id: &key,
            payload: &payload.0,
        };
        let body = SealedSendRequest {
            signature: B64(sealed.sign(&submission).to_vec()),
            submission_id: key,
            epoch,
            payload,
            key: B64(sealed.public().to_vec()),
            franking_commitment: commitment,
        };
        self.posting = true;
        self.request(
            Request::SealedSend { conversation, body },
            Pending::Post { seq: row.seq },
        );
        Ok(Step::Posted)
    }

    /// Registers this device's sealed-sender key of the conversation's current epoch, before
    /// the outbox entry `seq` (if any) is posted; `false` if there is nothing to register.
    fn register_sealed_key(
        &mut self,
        conversation: ConversationId,
        seq: Option<i64>,
    ) -> Result<bool> {
        let sealed = match self.atomic(|engine, _| Ok(engine.sealed_key(conversation)?)) {
            Ok(sealed) => sealed,
            // Not (or no longer) a member: nothing to register.
            Err(Error::Engine(_)) => return Ok(false),
            Err(e) => return Err(e),
        };
        let body = SealedKeyRequest {
            epoch: sealed.epoch,
            key: B64(sealed.public().to_vec()),
            // Only the registration before a first message accepts the conversation: a
            // commit (an automatic key update, say) is not consent.
            accept: seq.is_some(),
        };
        self.posting = true;
        self.request(
            Request::RegisterSealedKey { conversation, body },
            Pending::Register { conversation, seq },
        );
        Ok(true)
    }

    /// The server's answer to a sealed-key registration.
    pub(super) fn on_registered(
        &mut self,
        now: u64,
        conversation: ConversationId,
        seq: Option<i64>,
        outcome: std::result::Result<Response, Failure>,
    ) -> Result<()> {
        let text = conversation.to_string();
        match outcome {
            Ok(_) => {
                if seq.is_some() {
                    self.store
                        .set_meta(&format!("{}{text}", meta::SEALED_JOINED), "1")?;
                }
            }
            Err(Failure::Network(_)) => {
                self.network_failures += 1;
                self.paused_until = Some(now + backoff::retry_delay(self.network_failures));
                if seq.is_none() {
                    self.registrations_due.insert(conversation);
                }
            }
            Err(Failure::Refused(e)) => match e.code {
                ErrorCode::EpochConflict => {
                    // This device is behind: the entry is encrypted again once the inbox is
                    // read (a commit's own registration is moot: the next commit registers).
                    if let Some(seq) = seq {
                        self.reencrypt(seq)?;
                    }
                    self.after_conflict(now, &text);
                }
                ErrorCode::RateLimited => {
                    let wait = e.retry_after_ms.unwrap_or(backoff::UNSPECIFIED_WAIT_MS);
                    self.holds.insert(text, Hold::Until(now + wait));
                }
                _ => {
                    if let Some(row) = self
                        .store
                        .outbox()?
                        .into_iter()
                        .find(|r| Some(r.seq) == seq)
                    {
                        self.refuse(now, &row, conversation, &e.message)?;
                    }
                }
            },
        }
        Ok(())
    }

    /// Drops an entry's ciphertext (made in an epoch the conversation has left) so that it is
    /// encrypted again, under a new idempotency key, when it is next posted.
    fn reencrypt(&mut self, seq: i64) -> Result<()> {
        let Some(row) = self.store.outbox()?.into_iter().find(|r| r.seq == seq) else {
            return Ok(());
        };
        if let OutboxItem::Message {
            plaintext,
            message_id,
            ..
        } = row.item
        {
            self.store.bump_outbox_attempts(seq)?;
            let item = OutboxItem::Message {
                plaintext,
                message_id,
                ciphertext: None,
                epoch: None,
                franking_commitment: None,
            };
            self.store.replace_outbox(seq, &item, &random_hex()?)?;
        }
        Ok(())
    }

    /// The server's answer to a posted entry.
    pub(super) fn on_posted(
        &mut self,
        now: u64,
        seq: i64,
        outcome: std::result::Result<Response, Failure>,
    ) -> Result<()> {
        let Some(row) = self.store.outbox()?.into_iter().find(|r| r.seq == seq) else {
            return Ok(());
        };
        let Some(conversation) = ConversationId::parse(&row.conversation) else {
            return Ok(());
        };
        if outcome.is_ok() {
            self.epoch_conflicts.remove(&row.conversation);
        }
        match (&row.item, outcome) {
            (OutboxItem::Message { message_id, .. }, Ok(_)) => {
                self.store.remove_outbox(seq)?;
                if let Some(id) = MessageId::from_hex(message_id) {
                    self.notifications.push_back(Notification::Sent {
                        conversation,
                        message_id: id,
                    });
                }
            }
            (OutboxItem::Commit { .. }, Ok(_)) => {
                // The members of the new epoch send sealed under its key: register it.
                self.registrations_due.insert(conversation);
                let mut notes = Vec::new();
                let result = self.atomic(|engine, store| {
                    engine.commit_accepted(now, conversation)?;
                    store.remove_outbox(seq)?;
                    let row = conversation_row(engine, conversation)?;
                    store.upsert_conversation(&row, now)?;
                    super::calling::on_members_changed(engine, store, now, conversation, &mut notes)
                });
                self.notifications.extend(notes);
                match result {
                    Ok(()) => {}
                    // Our pending commit is gone (superseded locally): nothing to merge.
                    Err(Error::Engine(_)) => self.store.remove_outbox(seq)?,
                    Err(e) => return Err(e),
                }
                self.notifications
                    .push_back(Notification::ConversationChanged(conversation));
            }
            (OutboxItem::Retry { .. } | OutboxItem::CommitProposals, Ok(_)) => {
                self.store.remove_outbox(seq)?;
            }
            (OutboxItem::Leave, Ok(_)) => {
                // Out of the list now; the members' next commit removes this device.
                self.store.remove_outbox(seq)?;
                if let Some(mut r) = self.store.conversation_row(&row.conversation)? {
                    r.active = false;
                    self.store.upsert_conversation(&r, now)?;
                }
                self.notifications
                    .push_back(Notification::ConversationChanged(conversation));
            }
            (_, Err(Failure::Network(_))) => {
                // It may or may not have arrived: the same idempotency key makes the retry
                // safe either way.
                self.store.bump_outbox_attempts(seq)?;
                self.network_failures += 1;
                self.paused_until = Some(now + backoff::retry_delay(self.network_failures));
            }
            (item, Err(Failure::Refused(e))) => match e.code {
                ErrorCode::RateLimited => {
                    self.store.bump_outbox_attempts(seq)?;
                    let wait = e.retry_after_ms.unwrap_or(backoff::UNSPECIFIED_WAIT_MS);
                    self.holds
                        .insert(row.conversation.clone(), Hold::Until(now + wait));
                }
                ErrorCode::QueueFull | ErrorCode::Internal => {
                    self.store.bump_outbox_attempts(seq)?;
                    let failures = u32::try_from(row.attempts + 1).unwrap_or(u32::MAX);
                    let wait = backoff::retry_delay(failures);
                    self.holds
                        .insert(row.conversation.clone(), Hold::Until(now + wait));
                }
                ErrorCode::SealedKeyUnknown
                    if matches!(item, OutboxItem::Message { .. })
                        && row.attempts < MAX_EPOCH_RETRIES =>
                {
                    // The server does not know this epoch's key (its committer did not
                    // register it yet, or registered another): register it, then post again.
                    self.store.bump_outbox_attempts(seq)?;
                    self.registrations_due.insert(conversation);
                }
                ErrorCode::EpochConflict => match item {
                    OutboxItem::Message { .. } if row.attempts < MAX_EPOCH_RETRIES => {
                        // The server is at another epoch: encrypt again once in step.
                        self.reencrypt(seq)?;
                        self.after_conflict(now, &row.conversation);
                    }
                    OutboxItem::Leave => {
                        self.store.bump_outbox_attempts(seq)?;
                        self.after_conflict(now, &row.conversation);
                    }
                    OutboxItem::Commit { .. } => {
                        self.atomic(|engine, store| {
                            match engine.commit_rejected(conversation)? {
                                Some(intent) => Ok(store.replace_outbox(
                                    seq,
                                    &OutboxItem::Retry { intent },
                                    &random_hex()?,
                                )?),
                                None => Ok(store.remove_outbox(seq)?),
                            }
                        })?;
                        self.after_conflict(now, &row.conversation);
                    }
                    _ => self.refuse(now, &row, conversation, &e.message)?,
                },
                _ => self.refuse(now, &row, conversation, &e.message)?,
            },
        }
        Ok(())
    }

    /// After an epoch conflict: retried once the inbox is drained, so the winning commit is
    /// processed first. A conversation that keeps conflicting (the winner is a commit this
    /// device cannot process, or the server lies about the epoch) waits longer each time
    /// instead of asking again at once, for ever.
    fn after_conflict(&mut self, now: u64, conversation: &str) {
        let conflicts = self
            .epoch_conflicts
            .entry(conversation.to_owned())
            .or_default();
        *conflicts += 1;
        if *conflicts <= CONFLICTS_BEFORE_BACKOFF {
            self.after_sync(conversation);
        } else {
            let wait = backoff::retry_delay(*conflicts - CONFLICTS_BEFORE_BACKOFF);
            self.holds
                .insert(conversation.to_owned(), Hold::Until(now + wait));
            self.pull_wanted = true;
        }
    }

    /// Holds a conversation until the inbox is drained, and asks for it.
    fn after_sync(&mut self, conversation: &str) {
        self.holds.insert(conversation.to_owned(), Hold::AfterSync);
        self.pull_wanted = true;
    }

    /// Refused for good as it is (a block, a used-up message request, a malformed or
    /// unauthorised send): a message is kept, with the server's reason, for the user to retry
    /// or drop, and never posted again by itself; a refused commit is undone.
    fn refuse(
        &mut self,
        now: u64,
        row: &OutboxRow,
        conversation: ConversationId,
        reason: &str,
    ) -> Result<()> {
        match &row.item {
            OutboxItem::Message { message_id, .. } => {
                self.store.mark_outbox_refused(row.seq, reason, now)?;
                if let Some(id) = MessageId::from_hex(message_id) {
                    self.notifications.push_back(Notification::Failed {
                        conversation,
                        message_id: id,
                        reason: reason.to_owned(),
                    });
                }
            }
            OutboxItem::Commit { epoch, .. } => {
                let seq = row.seq;
                let created = *epoch == 0;
                self.atomic(|engine, store| {
                    engine.commit_rejected(conversation)?;
                    store.remove_outbox(seq)?;
                    if created {
                        store.delete_conversation(&conversation.to_string())?;
                    }
                    Ok(())
                })?;
                self.notice(format!(
                    "a change to conversation {conversation} was refused: {reason}"
                ));
                self.notifications
                    .push_back(Notification::ConversationChanged(conversation));
            }
            _ => self.store.remove_outbox(row.seq)?,
        }
        Ok(())
    }
}
