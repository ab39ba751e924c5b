//! Posting the outbox. Commits go first (a pending commit blocks sending in its conversation);
//! a lost epoch race turns a commit into a retry made after the winner is processed; an
//! application message whose epoch moved on is encrypted again under the same message id.

use std::collections::HashSet;

use nightjar_api::{B64, EnvelopeKind, ErrorCode, SendRequest, WelcomeOut};
use nightjar_core::content::Message;
use nightjar_core::{ConversationError, ConversationId, Error as CoreError};

use super::conversations::{conversation_row, enqueue_commit};
use super::{Client, now_ms, random_hex};
use crate::error::{Error, Result};
use crate::store::{OutboxItem, OutboxKind, OutboxRow};

/// What posting one entry led to.
enum Step {
    /// Go on with the next entry.
    Continue,
    /// Leave this conversation's remaining entries for later.
    Block,
    /// Leave them until the inbox has been processed (a commit lost its epoch).
    NeedsSync,
}

fn conversation_error(e: &Error) -> Option<&ConversationError> {
    match e {
        Error::Engine(CoreError::Conversation(c)) => Some(c),
        _ => None,
    }
}

impl Client {
    /// Posts every outbox entry it can. Returns whether the inbox must be processed before
    /// the rest can go (a commit lost an epoch race). An unreachable server stops the flush
    /// with [`Error::Network`]; everything stays queued.
    pub(crate) async fn flush(&mut self) -> Result<bool> {
        let mut blocked: HashSet<String> = HashSet::new();
        let mut needs_sync = false;
        for _ in 0..500 {
            let Some(row) = self
                .store
                .outbox()?
                .into_iter()
                // Refused entries wait for the user (`nightjar outbox --retry` or `--drop`).
                .find(|r| r.refused.is_none() && !blocked.contains(&r.conversation))
            else {
                break;
            };
            let conversation = row.conversation.clone();
            match self.flush_one(row).await? {
                Step::Continue => {}
                Step::Block => {
                    blocked.insert(conversation);
                }
                Step::NeedsSync => {
                    needs_sync = true;
                    blocked.insert(conversation);
                }
            }
        }
        Ok(needs_sync)
    }

    async fn flush_one(&mut self, row: OutboxRow) -> Result<Step> {
        let Some(conversation) = ConversationId::parse(&row.conversation) else {
            self.store.remove_outbox(row.seq)?;
            return Ok(Step::Continue);
        };
        match row.item.clone() {
            OutboxItem::Message {
                plaintext,
                message_id,
                ciphertext,
                epoch,
            } => {
                self.flush_message(&row, conversation, plaintext, message_id, ciphertext, epoch)
                    .await
            }
            OutboxItem::Commit { .. } => self.flush_commit(&row, conversation).await,
            OutboxItem::Retry { intent } => {
                let seq = row.seq;
                let result =
                    self.atomic(|engine, store| match engine.retry(conversation, intent)? {
                        Some(bundle) => {
                            store.remove_outbox(seq)?;
                            enqueue_commit(engine, store, &bundle)
                        }
                        None => store.remove_outbox(seq),
                    });
                self.settle_local(row, result)
            }
            OutboxItem::CommitProposals => {
                let seq = row.seq;
                let result = self.atomic(|engine, store| {
                    let bundle = engine.commit_pending_proposals(conversation)?;
                    store.remove_outbox(seq)?;
                    enqueue_commit(engine, store, &bundle)
                });
                self.settle_local(row, result)
            }
        }
    }

    /// Outcome of turning an entry into a commit locally (no network involved).
    fn settle_local(&mut self, row: OutboxRow, result: Result<()>) -> Result<Step> {
        match result {
            Ok(()) => Ok(Step::Continue),
            Err(e) => match conversation_error(&e) {
                Some(ConversationError::CommitInFlight) => Ok(Step::Block),
                Some(_) | None if matches!(e, Error::Engine(_)) => {
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

    async fn flush_message(
        &mut self,
        row: &OutboxRow,
        conversation: ConversationId,
        plaintext: B64,
        message_id: String,
        ciphertext: Option<B64>,
        epoch: Option<u64>,
    ) -> Result<Step> {
        let info = match self.engine()?.conversation(conversation) {
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
            let has_commit =
                self.store.outbox()?.iter().any(|r| {
                    r.conversation == row.conversation && r.item.kind() == OutboxKind::Commit
                });
            if !has_commit {
                // A pending commit with no outbox entry (a crash between the two): discard it
                // and redo its intent.
                let now = now_ms();
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
        let (payload, epoch, key) = match (ciphertext, epoch) {
            (Some(ct), Some(ep)) if ep == info.epoch => (ct, ep, row.idempotency_key.clone()),
            (previous, _) => {
                let message = Message::decode(&plaintext.0)
                    .map_err(|e| Error::Database(format!("queued message unreadable: {e}")))?;
                // A ciphertext that may have reached the server gets a new key: the old one
                // would return the old answer. Receivers drop the duplicate by message id.
                let key = if previous.is_some() {
                    random_hex()?
                } else {
                    row.idempotency_key.clone()
                };
                let seq = row.seq;
                let now = now_ms();
                let result = self.atomic(|engine, store| {
                    let out = engine.encrypt(now, conversation, &message)?;
                    let item = OutboxItem::Message {
                        plaintext: plaintext.clone(),
                        message_id: message_id.clone(),
                        ciphertext: Some(B64(out.message.clone())),
                        epoch: Some(out.epoch),
                    };
                    store.replace_outbox(seq, &item, &key)?;
                    if let Some(update) = &out.self_update {
                        enqueue_commit(engine, store, update)?;
                    }
                    Ok((B64(out.message), out.epoch))
                });
                match result {
                    Ok((payload, epoch)) => (payload, epoch, key),
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
        let request = SendRequest {
            idempotency_key: key,
            kind: EnvelopeKind::Application,
            epoch,
            payload,
            welcome: None,
            members: None,
            group_info: None,
        };
        match self.api()?.send(&row.conversation, &request).await {
            Ok(_) => {
                self.store.remove_outbox(row.seq)?;
                Ok(Step::Continue)
            }
            Err(e) if e.is_network() => {
                self.store.bump_outbox_attempts(row.seq)?;
                Err(e)
            }
            Err(e) => match e.api_code() {
                Some(ErrorCode::RateLimited) => {
                    // Longer than a command waits (short waits were sat out by the API client).
                    self.store.bump_outbox_attempts(row.seq)?;
                    self.notice(format!("{e}; the message stays queued"));
                    Ok(Step::Block)
                }
                Some(ErrorCode::QueueFull | ErrorCode::Internal) => {
                    self.store.bump_outbox_attempts(row.seq)?;
                    Ok(Step::Block)
                }
                Some(ErrorCode::EpochConflict) if row.attempts < 5 => {
                    // The server does not take this epoch: encrypt again once in step.
                    self.store.bump_outbox_attempts(row.seq)?;
                    let item = OutboxItem::Message {
                        plaintext,
                        message_id,
                        ciphertext: None,
                        epoch: None,
                    };
                    self.store.replace_outbox(row.seq, &item, &random_hex()?)?;
                    Ok(Step::NeedsSync)
                }
                Some(ErrorCode::Unauthorized) => Err(session_expired(e)),
                _ => {
                    // Refused for good as it is (a block, a used-up message request, a
                    // malformed or unauthorised send): keep it, with the server's reason, for
                    // the user to retry or drop; never post it again by itself.
                    let reason = e.api_message().unwrap_or_else(|| e.to_string());
                    self.store.mark_outbox_refused(row.seq, &reason, now_ms())?;
                    self.notice(format!(
                        "the server refused a message to conversation {}: {reason}; it stays \
                         in the outbox (`nightjar outbox --retry` or `--drop`)",
                        row.conversation
                    ));
                    Ok(Step::Continue)
                }
            },
        }
    }

    async fn flush_commit(
        &mut self,
        row: &OutboxRow,
        conversation: ConversationId,
    ) -> Result<Step> {
        let OutboxItem::Commit {
            epoch,
            commit,
            welcome,
            welcome_recipients,
            members,
            group_info,
        } = row.item.clone()
        else {
            return Ok(Step::Continue);
        };
        let request = SendRequest {
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
        };
        let seq = row.seq;
        let now = now_ms();
        match self.api()?.send(&row.conversation, &request).await {
            Ok(_) => {
                let result = self.atomic(|engine, store| {
                    engine.commit_accepted(now, conversation)?;
                    store.remove_outbox(seq)?;
                    let row = conversation_row(engine, conversation)?;
                    store.upsert_conversation(&row, now)
                });
                if let Err(e) = result {
                    if !matches!(e, Error::Engine(_)) {
                        return Err(e);
                    }
                    // Our pending commit is gone (superseded locally): nothing to merge.
                    self.store.remove_outbox(seq)?;
                }
                Ok(Step::Continue)
            }
            Err(e) if e.is_network() => {
                self.store.bump_outbox_attempts(seq)?;
                Err(e)
            }
            Err(e) if e.api_code() == Some(ErrorCode::EpochConflict) => {
                self.atomic(
                    |engine, store| match engine.commit_rejected(conversation)? {
                        Some(intent) => {
                            store.replace_outbox(seq, &OutboxItem::Retry { intent }, &random_hex()?)
                        }
                        None => store.remove_outbox(seq),
                    },
                )?;
                Ok(Step::NeedsSync)
            }
            Err(e) => match e.api_code() {
                Some(ErrorCode::RateLimited) => {
                    self.store.bump_outbox_attempts(seq)?;
                    self.notice(format!("{e}; the change stays queued"));
                    Ok(Step::Block)
                }
                Some(ErrorCode::QueueFull | ErrorCode::Internal) => {
                    self.store.bump_outbox_attempts(seq)?;
                    Ok(Step::Block)
                }
                Some(ErrorCode::Unauthorized) => Err(session_expired(e)),
                _ => {
                    self.atomic(|engine, store| {
                        engine.commit_rejected(conversation)?;
                        store.remove_outbox(seq)?;
                        if epoch == 0 {
                            store.delete_conversation(&conversation.to_string())?;
                        }
                        Ok(())
                    })?;
                    self.notice(format!(
                        "a change to conversation {conversation} was refused: {e}"
                    ));
                    Ok(Step::Continue)
                }
            },
        }
    }
}

pub(crate) fn session_expired(e: Error) -> Error {
    match e.api_code() {
        Some(ErrorCode::Unauthorized) => Error::Profile(
            "the session is no longer valid (it expired, or this device was removed): run `nightjar login --server URL USERNAME`"
                .into(),
        ),
        _ => e,
    }
}

impl Client {
    /// Every entry waiting in the outbox, in sending order; refused ones carry the server's
    /// reason.
    pub fn outbox(&self) -> Result<Vec<OutboxRow>> {
        self.store.outbox()
    }

    /// Sends the refused entries again (the user fixed the cause: was unblocked, was
    /// accepted, ...); returns how many there were. What the server refuses again is marked
    /// refused again.
    pub async fn retry_refused(&mut self) -> Result<u64> {
        self.ensure_ready().await?;
        let n = self.store.retry_refused()?;
        self.pump_tolerant().await?;
        Ok(n)
    }

    /// Discards the refused entries; returns how many there were.
    pub fn drop_refused(&mut self) -> Result<u64> {
        self.store.drop_refused()
    }
}
