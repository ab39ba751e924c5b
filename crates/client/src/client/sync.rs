//! Receiving: drain the device's queue (HTTP or WebSocket), process envelopes in order, store
//! decrypted messages in the same transaction as the engine state, and acknowledge only then.

use std::collections::HashSet;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use nightjar_api::{ClientFrame, Envelope, ErrorCode, ServerFrame};
use nightjar_core::content::Content;
use nightjar_core::{ConversationError, ConversationKind, Engine, Error as CoreError, Incoming};
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use super::consent;
use super::conversations::conversation_row;
use super::flush::session_expired;
use super::{Client, now_ms, random_hex};
use crate::error::{Error, Result};
use crate::store::{OutboxItem, OutboxKind, Store, StoredMessage};

/// Envelopes asked for per inbox page.
const PAGE: u32 = 200;

/// A message as `sync` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReceivedMessage {
    /// The conversation (32 hex digits).
    pub conversation: String,
    /// The group name, for group conversations.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// The message id (32 hex digits).
    pub id: String,
    /// The sending account.
    pub from: String,
    /// The sending device.
    pub device: String,
    /// The sender's clock at sending (ms since the Unix epoch).
    pub sent_at: u64,
    /// The content kind (`text`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    /// The text.
    pub text: Option<String>,
}

/// Something [`Client::follow`] reports as it happens.
#[derive(Clone, Debug)]
pub enum FollowEvent<'a> {
    /// A new message.
    Message(&'a ReceivedMessage),
    /// Something the user should know (see [`Client::take_notices`]).
    Notice(&'a str),
}

/// What a sync brought.
#[derive(Clone, Debug, Default)]
pub struct SyncReport {
    /// New messages, oldest first.
    pub messages: Vec<ReceivedMessage>,
}

/// What processing an envelope means for its queue entry.
enum Disposition {
    /// Processed (or dropped for good): acknowledge it.
    Ack,
    /// Held (an identity change awaits the user): leave it queued.
    Hold,
}

fn describe(content: &Content) -> (String, Option<String>) {
    match content {
        Content::Text { body } => ("text".into(), Some(body.clone())),
        Content::Reply { body, .. } => ("reply".into(), Some(body.clone())),
        Content::Edit { body, .. } => ("edit".into(), Some(body.clone())),
        Content::Reaction { emoji, .. } => ("reaction".into(), Some(emoji.clone())),
        other => (other.kind().into(), None),
    }
}

fn group_label(engine: &mut Engine<Store>, conversation: nightjar_core::ConversationId) -> String {
    match engine.conversation(conversation) {
        Ok(info) => match (info.kind, info.metadata.clone()) {
            (ConversationKind::Group, Some(m)) => format!("group {}", m.name),
            (ConversationKind::Direct, _) => {
                format!(
                    "your conversation with {}",
                    info.peer.as_deref().unwrap_or("nobody")
                )
            }
            _ => format!("conversation {conversation}"),
        },
        Err(_) => format!("conversation {conversation}"),
    }
}

/// Applies what an incoming message means to the SDK's tables (inside the engine's
/// transaction) and returns notices for the user.
fn record_incoming(
    engine: &mut Engine<Store>,
    store: &Store,
    incoming: &Incoming,
    now: u64,
) -> Result<Vec<String>> {
    let me = engine.device().clone();
    let mut notices = Vec::new();
    match incoming {
        Incoming::Message {
            conversation,
            sender,
            message,
            ..
        } => {
            let (kind, text) = describe(&message.content);
            if !matches!(
                message.content,
                Content::Typing { .. } | Content::ReadReceipt { .. }
            ) && store.insert_message(
                &StoredMessage {
                    conversation: conversation.to_string(),
                    id: message.id.to_hex(),
                    from: sender.username.clone(),
                    device: sender.device_id.to_string(),
                    sent_at: message.sent_at_ms,
                    kind,
                    text,
                    outgoing: sender.username == me.username,
                },
                now,
                false,
            )? && let Some(n) = consent::hold_if_request(
                store,
                &conversation.to_string(),
                &sender.username,
                &me.username,
                &message.id.to_hex(),
            )? {
                notices.push(n);
            }
            if store.conversation_row(&conversation.to_string())?.is_none() {
                let row = conversation_row(engine, *conversation)?;
                store.upsert_conversation(&row, now)?;
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
            let label = group_label(engine, *conversation);
            let mut accounts: Vec<&str> = added
                .iter()
                .filter(|d| d.username != sender.username && d.username != me.username)
                .map(|d| d.username.as_str())
                .collect();
            accounts.dedup();
            for a in accounts {
                notices.push(format!("{} added {a} to {label}", sender.username));
            }
            let mut gone: Vec<&str> = removed.iter().map(|d| d.username.as_str()).collect();
            gone.dedup();
            let info = engine.conversation(*conversation)?;
            for a in gone {
                if !info.members.iter().any(|m| m.username == a) {
                    notices.push(format!("{} removed {a} from {label}", sender.username));
                }
            }
            if *metadata_changed && let Some(name) = row.name {
                notices.push(format!("{} renamed the group to {name}", sender.username));
            }
            if superseded.is_some() {
                // Our commit for that epoch lost: retry it on the new epoch.
                let id = conversation.to_string();
                let stale: Vec<i64> = store
                    .outbox()?
                    .into_iter()
                    .filter(|r| r.conversation == id && matches!(r.item, OutboxItem::Commit { .. }))
                    .map(|r| r.seq)
                    .collect();
                for seq in stale {
                    store.remove_outbox(seq)?;
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
            let label = group_label(engine, *conversation);
            if sender.username == me.username {
                notices.push(format!("this device joined {label}"));
            } else if *kind == ConversationKind::Group {
                notices.push(format!("{} added you to {label}", sender.username));
            } else {
                notices.push(format!(
                    "{} started a conversation with you",
                    sender.username
                ));
            }
            if let Some(n) = consent::note_joined(
                store,
                &conversation.to_string(),
                &sender.username,
                &me.username,
            )? {
                notices.push(n);
            }
        }
        Incoming::Removed { conversation, by } => {
            let id = conversation.to_string();
            if let Some(mut row) = store.conversation_row(&id)? {
                row.active = false;
                store.upsert_conversation(&row, now)?;
                let name = row.name.unwrap_or_else(|| id.clone());
                notices.push(format!("{} removed you from {name}", by.username));
            }
            store.clear_outbox_for(&id)?;
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
            notices.push(format!("{} left a conversation", member.username));
        }
        _ => {}
    }
    Ok(notices)
}

impl Client {
    /// Sends what is queued and processes what arrived, until both settle (bounded); then
    /// keeps this account's devices in its conversations and tops up key packages (checking
    /// the stock only when due, so that a send costs one post and one inbox read).
    pub(crate) async fn pump(&mut self) -> Result<()> {
        for _ in 0..4 {
            let needs_sync = self.flush().await.map_err(session_expired)?;
            self.pull().await.map_err(session_expired)?;
            self.reconcile_own_devices().await?;
            let has_commits = self
                .store
                .outbox()?
                .iter()
                .any(|r| r.item.kind() == OutboxKind::Commit);
            if !needs_sync && !has_commits {
                self.flush().await?;
                break;
            }
        }
        self.replenish_key_packages_when_due().await?;
        Ok(())
    }

    /// Drains the queue over HTTP, processing every envelope in order, then reports senders'
    /// messages that stayed missing past the grace time.
    pub(crate) async fn pull(&mut self) -> Result<()> {
        self.drain().await?;
        self.report_missing()
    }

    /// Turns gaps in senders' sequence numbers that stayed open for the grace time into
    /// notices ("2 messages from alice are missing ..."), once each.
    pub(crate) fn report_missing(&mut self) -> Result<()> {
        let now = now_ms();
        let grace = u64::try_from(self.missing_after.as_millis()).unwrap_or(u64::MAX);
        let notices = self.atomic(|engine, _| {
            let missing = engine.missing_messages(now, grace)?;
            Ok(missing
                .into_iter()
                .map(|m| {
                    let label = group_label(engine, m.conversation);
                    let (noun, verb) = if m.count == 1 {
                        ("message", "is")
                    } else {
                        ("messages", "are")
                    };
                    format!(
                        "{} {noun} from {} {verb} missing in {label} (sent by its device {}; the server did not deliver them)",
                        m.count, m.sender.username, m.sender.device_id
                    )
                })
                .collect::<Vec<_>>())
        })?;
        self.notices.extend(notices);
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
        let key = format!("fork_reported/{conversation}");
        if self.store.meta(&key)? == Some(epoch.to_string()) {
            return Ok(());
        }
        self.store.set_meta(&key, &epoch.to_string())?;
        let label = group_label(self.engine()?, conversation);
        self.notice(format!(
            "{label} has forked: a message sent in epoch {epoch} does not match this device's \
             view of that epoch, so members were given different changes to the conversation \
             (by the server, or a broken client); messages from the other branch cannot be read"
        ));
        Ok(())
    }

    /// Fetches inbox pages until nothing new is queued, processing every envelope in order.
    async fn drain(&mut self) -> Result<()> {
        // Envelope ids are kept well beyond the server's envelope lifetime (30 days).
        self.store
            .prune_processed(now_ms().saturating_sub(90 * 24 * 3600 * 1000))?;
        let mut after = 0u64;
        loop {
            let inbox = self.api()?.inbox(after, PAGE).await?;
            // Envelopes held back (an identity change awaits the user) stay queued; only ever
            // move forward so they cannot make this loop spin.
            if !inbox.envelopes.iter().any(|e| e.id > after) {
                return Ok(());
            }
            let mut acks = Vec::new();
            let start = after;
            for envelope in inbox.envelopes.iter().filter(|e| e.id > start) {
                after = after.max(envelope.id);
                if let Disposition::Ack = self.handle_envelope(envelope).await? {
                    acks.push(envelope.id);
                }
            }
            if !acks.is_empty() {
                self.api()?.ack(acks).await?;
            }
        }
    }

    /// Processes one envelope: engine state and decrypted content commit in one transaction.
    /// Unknown accounts and unlisted devices make it fetch device lists and retry the same bytes.
    async fn handle_envelope(&mut self, envelope: &Envelope) -> Result<Disposition> {
        if self.store.is_processed(envelope.id)? {
            return Ok(Disposition::Ack);
        }
        let mut fetched: HashSet<String> = HashSet::new();
        for _ in 0..8 {
            let now = now_ms();
            let id = envelope.id;
            let result = self.atomic(|engine, store| {
                let incoming = engine.process(now, &envelope.payload.0)?;
                let notices = record_incoming(engine, store, &incoming, now)?;
                store.mark_processed(id, now)?;
                Ok(notices)
            });
            let error = match result {
                Ok(notices) => {
                    self.notices.extend(notices);
                    return Ok(Disposition::Ack);
                }
                Err(e) => e,
            };
            let needed: Vec<String> = match &error {
                Error::Engine(CoreError::Conversation(ConversationError::UnknownAccounts(
                    names,
                ))) => names.clone(),
                Error::Engine(CoreError::Conversation(ConversationError::DeviceNotInList(who))) => {
                    vec![who.split('/').next().unwrap_or_default().to_owned()]
                }
                Error::Engine(CoreError::Conversation(
                    ConversationError::OwnMessage
                    | ConversationError::Replayed
                    | ConversationError::Duplicate,
                )) => {
                    // A copy of something already processed (an echo, a replayed ciphertext,
                    // or the same message encrypted twice): drop it without a word.
                    self.store.mark_processed(envelope.id, now)?;
                    return Ok(Disposition::Ack);
                }
                Error::Engine(CoreError::Conversation(ConversationError::Forked { epoch })) => {
                    self.report_fork(envelope, *epoch)?;
                    self.store.mark_processed(envelope.id, now)?;
                    return Ok(Disposition::Ack);
                }
                Error::Engine(_) => Vec::new(),
                _ => return Err(error),
            };
            let fresh: Vec<String> = needed
                .into_iter()
                .filter(|n| !n.is_empty() && fetched.insert(n.clone()))
                .collect();
            if fresh.is_empty() {
                // Nothing authenticated the sender (MLS did not get that far): the name is only
                // what the server claims, and is shown as such.
                self.notice(format!(
                    "dropped a message the server attributed to {} that could not be processed: {error}",
                    envelope.sender.username
                ));
                self.store.mark_processed(envelope.id, now)?;
                return Ok(Disposition::Ack);
            }
            for name in fresh {
                match self.fetch_account(&name).await {
                    Ok(()) => {}
                    Err(Error::IdentityChanged(_)) => return Ok(Disposition::Hold),
                    Err(Error::Usage(_)) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        self.store.mark_processed(envelope.id, now_ms())?;
        Ok(Disposition::Ack)
    }

    /// Sends queued messages, fetches and processes everything waiting for this device, and
    /// returns the messages not shown to the user before (marking them shown).
    pub async fn sync(&mut self) -> Result<SyncReport> {
        self.ensure_ready().await?;
        // An explicit sync always checks the key-package stock.
        self.store.delete_meta(super::meta::KEY_PACKAGES_CHECKED)?;
        let held = self.store.held_messages()?.len();
        self.pump().await?;
        if self.store.held_messages()?.len() > held {
            // New requests: another device of this account may have accepted them already.
            self.refresh_consent().await?;
        }
        self.report()
    }

    fn emit(&mut self, on_event: &mut impl FnMut(FollowEvent<'_>)) -> Result<()> {
        self.report_missing()?;
        for n in self.take_notices() {
            on_event(FollowEvent::Notice(&n));
        }
        for m in self.report()?.messages {
            on_event(FollowEvent::Message(&m));
        }
        Ok(())
    }

    fn report(&mut self) -> Result<SyncReport> {
        let rows = self.store.conversations()?;
        let messages = self
            .store
            .take_unshown()?
            .into_iter()
            .filter(|m| !m.outgoing || Some(&m.device) != self.device_id().as_ref())
            .map(|m| {
                let group = rows
                    .iter()
                    .find(|c| c.id == m.conversation && c.kind == "group")
                    .and_then(|c| c.name.clone());
                ReceivedMessage {
                    conversation: m.conversation,
                    group,
                    id: m.id,
                    from: m.from,
                    device: m.device,
                    sent_at: m.sent_at,
                    kind: m.kind,
                    text: m.text,
                }
            })
            .collect();
        Ok(SyncReport { messages })
    }

    /// Stays connected to the WebSocket stream for `duration`, processing envelopes as they
    /// arrive (queued ones first) and acknowledging each after it is stored; `on_message` sees
    /// every new message. Queued outbox entries are sent first.
    pub async fn follow(
        &mut self,
        duration: Duration,
        mut on_event: impl FnMut(FollowEvent<'_>),
    ) -> Result<()> {
        self.ensure_ready().await?;
        self.pump().await?;
        self.emit(&mut on_event)?;
        let api = self.api()?;
        let mut request = api
            .stream_url()
            .into_client_request()
            .map_err(|e| Error::Network(e.to_string()))?;
        if let Some(token) = api.token() {
            let value = format!("Bearer {token}")
                .parse()
                .map_err(|_| Error::Profile("session token is not a valid header".into()))?;
            request.headers_mut().insert("authorization", value);
        }
        let connector = tokio_tungstenite::Connector::Rustls(crate::api::tls_config()?);
        let (mut socket, _) =
            tokio_tungstenite::connect_async_tls_with_config(request, None, false, Some(connector))
                .await
                .map_err(|e| Error::Network(format!("stream: {e}")))?;
        let deadline = tokio::time::Instant::now() + duration;
        loop {
            let frame = match tokio::time::timeout_at(deadline, socket.next()).await {
                Err(_) => break,
                Ok(None) => return Err(Error::Network("the server closed the stream".into())),
                Ok(Some(Err(e))) => return Err(Error::Network(format!("stream: {e}"))),
                Ok(Some(Ok(frame))) => frame,
            };
            let text = match frame {
                WsMessage::Text(t) => t.to_string(),
                WsMessage::Close(_) => {
                    return Err(Error::Network("the server closed the stream".into()));
                }
                _ => continue,
            };
            let frame: ServerFrame = serde_json::from_str(&text)
                .map_err(|e| Error::Protocol(format!("stream frame: {e}")))?;
            match frame {
                ServerFrame::Envelope { envelope } => {
                    if let Disposition::Ack = self.handle_envelope(&envelope).await? {
                        let ack = ClientFrame::Ack {
                            ids: vec![envelope.id],
                        };
                        socket
                            .send(WsMessage::Text(serde_json::to_string(&ack)?.into()))
                            .await
                            .map_err(|e| Error::Network(format!("stream: {e}")))?;
                    }
                    self.flush().await?;
                    self.emit(&mut on_event)?;
                }
                ServerFrame::Drained => {}
                ServerFrame::Error { error } => {
                    if error.code == ErrorCode::Unauthorized {
                        return Err(session_expired(Error::Api(error)));
                    }
                    self.notice(format!("stream: {}", error.message));
                }
            }
        }
        let _ = socket.close(None).await;
        Ok(())
    }
}
