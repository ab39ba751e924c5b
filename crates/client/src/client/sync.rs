//! Receiving: drain the device's queue (HTTP or WebSocket), process envelopes in order, store
//! decrypted messages in the same transaction as the engine state, and acknowledge only then.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use nightjar_api::{ClientFrame, ErrorCode, ServerFrame};
use nightjar_core::ConversationId;
use nightjar_core::content::{Content, MessageId};
use nightjar_machine::rows::{ConversationRow, MessageDetail};
use nightjar_machine::{READABLE_KINDS, Request, Response};
use serde::Serialize;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use super::flush::session_expired;
use super::{Client, now_ms};
use crate::error::{Error, Result};
use crate::store::StoredMessage;

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
    /// The text (an edit's new text, a reaction's emoji, an attachment's caption).
    pub text: Option<String>,
    /// What the kind says besides its text (the message a reply, reaction, edit or delete
    /// is about, a receipt's messages, a timer, an attachment), and whether the message was
    /// edited or deleted since.
    #[serde(flatten)]
    pub detail: MessageDetail,
    /// When this device deletes the message (ms since the Unix epoch), if it disappears.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
}

/// Something [`Client::follow`] reports as it happens.
#[derive(Clone, Debug)]
pub enum FollowEvent<'a> {
    /// A new message.
    Message(&'a ReceivedMessage),
    /// Something the user should know (see [`Client::take_notices`]).
    Notice(&'a str),
}

/// How [`Client::follow`] follows.
#[derive(Clone, Debug, Default)]
pub struct FollowOptions {
    /// How long to stay connected.
    pub duration: Duration,
    /// Where to save the files of attachments as they arrive (as `sync` does: fetched,
    /// verified, decrypted); `None` leaves them to the next sync.
    pub save_files: Option<PathBuf>,
}

/// What a sync brought.
#[derive(Clone, Debug, Default)]
pub struct SyncReport {
    /// New messages, oldest first.
    pub messages: Vec<ReceivedMessage>,
}

/// A stored message as `sync` and `history` report it, with its group's name.
pub(super) fn received(m: StoredMessage, conversations: &[ConversationRow]) -> ReceivedMessage {
    ReceivedMessage {
        group: group_name(conversations, &m.conversation),
        conversation: m.conversation,
        id: m.id,
        from: m.from,
        device: m.device,
        sent_at: m.sent_at,
        kind: m.kind,
        text: m.text,
        // What the user sees: not the franking record kept for a report.
        detail: m.detail.shown(),
        expires_at: m.expires_at,
    }
}

/// The name of the group `conversation` is, if it is one.
fn group_name(conversations: &[ConversationRow], conversation: &str) -> Option<String> {
    conversations
        .iter()
        .find(|c| c.id == conversation && c.kind == "group")
        .and_then(|c| c.name.clone())
}

impl Client {
    /// Sends what is queued and processes what arrived, until both settle (the machine
    /// reconciles this account's devices once the inbox is drained); then tops up key
    /// packages (checking the stock only when due, so that a send costs one post and one inbox
    /// read).
    pub(crate) async fn pump(&mut self) -> Result<()> {
        // Whatever disappeared goes first, whichever command runs.
        self.expire(now_ms())?;
        let grace = u64::try_from(self.missing_after.as_millis()).unwrap_or(u64::MAX);
        self.machine()?.set_missing_after(grace);
        // Read receipts say "delivered" too; without them, delivery receipts do.
        let read_receipts = self.read_receipts()?;
        self.machine()?.set_delivery_receipts(!read_receipts);
        self.machine()?.sync(now_ms());
        self.drive().await?;
        self.replenish_key_packages_when_due().await?;
        Ok(())
    }

    /// Reports senders' messages that stayed missing past the grace time.
    pub(crate) fn report_missing(&mut self) -> Result<()> {
        let grace = u64::try_from(self.missing_after.as_millis()).unwrap_or(u64::MAX);
        let machine = self.machine()?;
        machine.set_missing_after(grace);
        machine.report_missing(now_ms())?;
        self.take_machine_notifications()
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
        let report = self.report()?;
        if self.machine()?.has_requests() {
            // The read receipts just queued.
            self.drive().await?;
            self.take_machine_notifications()?;
        }
        Ok(report)
    }

    async fn emit(
        &mut self,
        save_files: Option<&Path>,
        on_event: &mut impl FnMut(FollowEvent<'_>),
    ) -> Result<()> {
        self.report_missing()?;
        self.take_machine_notifications()?;
        let mut messages = self.report()?.messages;
        let fresh_files = messages.iter().any(|m| {
            m.detail
                .attachment
                .as_ref()
                .is_some_and(|a| a.file.is_none())
        });
        if let Some(dir) = save_files
            && fresh_files
        {
            self.save_attachments(&mut messages, Some(dir), &mut |_| {})
                .await?;
        }
        for n in self.take_notices() {
            on_event(FollowEvent::Notice(&n));
        }
        for m in &messages {
            on_event(FollowEvent::Message(m));
        }
        Ok(())
    }

    fn report(&mut self) -> Result<SyncReport> {
        let now = now_ms();
        self.expire(now)?;
        let rows = self.store.conversations()?;
        let me = self.device_id();
        let shown = self.store.take_unshown(now)?;
        let read = self.queue_read_receipts(now, &shown)?;
        let mut messages: Vec<ReceivedMessage> = shown
            .into_iter()
            .filter(|m| !m.outgoing || Some(&m.device) != me.as_ref())
            .map(|m| received(m, &rows))
            .collect();
        for mut m in std::mem::take(&mut self.receipts) {
            m.group = group_name(&rows, &m.conversation);
            messages.push(m);
        }
        if read {
            // Sent with the next exchange; a sync sends them before it returns.
            self.machine()?.tick(now);
        }
        Ok(SyncReport { messages })
    }

    /// Deletes the messages whose disappearing timer ran out, with their saved files.
    pub(crate) fn expire(&mut self, now: u64) -> Result<()> {
        for m in self.store.expire_messages(now)? {
            if let Some(file) = m.detail.attachment.and_then(|a| a.file) {
                let _ = std::fs::remove_file(file);
            }
        }
        Ok(())
    }

    /// Queues one read receipt per conversation for the readable messages just shown (unless
    /// read receipts are off); whether any was queued.
    fn queue_read_receipts(&mut self, now: u64, shown: &[StoredMessage]) -> Result<bool> {
        if !self.read_receipts()? {
            return Ok(false);
        }
        let mut by_conversation: BTreeMap<&str, Vec<MessageId>> = BTreeMap::new();
        for m in shown {
            if !m.outgoing
                && READABLE_KINDS.contains(&m.kind.as_str())
                && let Some(id) = MessageId::from_hex(&m.id)
            {
                by_conversation.entry(&m.conversation).or_default().push(id);
            }
        }
        let mut queued = false;
        for (conversation, message_ids) in by_conversation {
            let Some(id) = ConversationId::parse(conversation) else {
                continue;
            };
            match self
                .machine()?
                .queue_message(now, id, Content::ReadReceipt { message_ids })
            {
                Ok(_) => queued = true,
                // Left the conversation, or a changed key awaits the user: no receipt.
                Err(
                    nightjar_machine::Error::Usage(_) | nightjar_machine::Error::IdentityChanged(_),
                ) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(queued)
    }

    /// Stays connected to the WebSocket stream for `duration`, processing envelopes as they
    /// arrive (queued ones first) and acknowledging each after it is stored; `on_message` sees
    /// every new message. Queued outbox entries are sent first.
    pub async fn follow(
        &mut self,
        options: &FollowOptions,
        mut on_event: impl FnMut(FollowEvent<'_>),
    ) -> Result<()> {
        let save_files = options.save_files.as_deref();
        self.ensure_ready().await?;
        self.pump().await?;
        self.emit(save_files, &mut on_event).await?;
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
        let deadline = tokio::time::Instant::now() + options.duration;
        loop {
            // Carry what the machine asks for: acknowledgements on the stream, the rest over
            // HTTP.
            while let Some((id, request)) = self.machine()?.poll_request() {
                let outcome = match request {
                    Request::Ack { ids } => {
                        let ack = ClientFrame::Ack { ids };
                        socket
                            .send(WsMessage::Text(serde_json::to_string(&ack)?.into()))
                            .await
                            .map_err(|e| Error::Network(format!("stream: {e}")))?;
                        Ok(Response::Acked)
                    }
                    other => self.execute(other).await,
                };
                self.machine()?.handle_response(now_ms(), id, outcome)?;
            }
            if self.machine()?.session_expired() {
                return Err(super::drive::session_expired_error());
            }
            self.emit(save_files, &mut on_event).await?;
            let now = now_ms();
            let wake = self.machine()?.next_wakeup().map(|t| {
                tokio::time::Instant::now() + Duration::from_millis(t.saturating_sub(now))
            });
            let until = wake.map_or(deadline, |w| w.min(deadline));
            let frame = match tokio::time::timeout_at(until, socket.next()).await {
                Err(_) if until >= deadline => break,
                Err(_) => {
                    self.machine()?.tick(now_ms());
                    continue;
                }
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
                    self.machine()?.handle_pushed(now_ms(), vec![envelope]);
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
