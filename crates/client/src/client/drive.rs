//! The native driver of the client state machine: it carries the machine's requests over HTTP
//! (acknowledgements over the WebSocket while one is open), hands back their outcomes with the
//! time, sleeps out short waits, and turns the machine's notifications into the CLI's notices.
//! Every decision (what to post, what to retry and when, what to process and acknowledge) is
//! the machine's.

use std::time::Duration;

use nightjar_api::{ApiError, ErrorCode};
use nightjar_machine::rows::MessageDetail;
use nightjar_machine::{Failure, Notification, Request, Response};

use super::{Client, ReceivedMessage, now_ms};
use crate::error::{Error, Result};

/// The longest wait a command sits through before it leaves the rest queued for later.
const MAX_WAIT_MS: u64 = 5_000;
/// Rounds of requests and waits one command drives at most.
const MAX_ROUNDS: usize = 64;

/// The outcome of a failed call, as the machine sees it.
fn failure(e: Error) -> Failure {
    match e {
        Error::Api(e) => Failure::Refused(e),
        other => Failure::Network(other.to_string()),
    }
}

/// The sentence for a session the server no longer accepts.
pub(crate) fn session_expired_error() -> Error {
    Error::Profile(
        "the session is no longer valid (it expired, or this device was removed): run `nightjar login --server URL USERNAME`"
            .into(),
    )
}

impl Client {
    /// Makes one request over HTTP.
    pub(crate) async fn execute(&self, request: Request) -> std::result::Result<Response, Failure> {
        let api = self.api().map_err(failure)?;
        let result = match request {
            Request::Send { conversation, body } => api
                .send(&conversation.to_string(), &body)
                .await
                .map(Response::Sent),
            Request::SealedSend { conversation, body } => api
                .sealed_send(&conversation.to_string(), &body)
                .await
                .map(Response::Sent),
            Request::RegisterSealedKey { conversation, body } => api
                .register_sealed_key(&conversation.to_string(), &body)
                .await
                .map(|()| Response::Registered),
            Request::Inbox { after, limit } => api
                .inbox(after, limit)
                .await
                .map(|r| Response::Inbox(r.envelopes)),
            Request::Ack { ids } => api.ack(ids).await.map(|()| Response::Acked),
            Request::Account { username } => api.account(&username).await.map(Response::Account),
            Request::ClaimKeyPackages { username } => api
                .claim_key_packages(&username)
                .await
                .map(Response::Claimed),
            Request::OwnHistory => api.kt_history().await.map(Response::OwnHistory),
            Request::DirectoryRoot { epoch } => {
                api.kt_epoch(epoch).await.map(Response::DirectoryRoot)
            }
            Request::DirectoryEpochs { after, limit } => api
                .kt_epochs(after, limit)
                .await
                .map(Response::DirectoryEpochs),
        };
        result.map_err(failure)
    }

    /// Carries the machine's requests until it has nothing left to do now, sitting through
    /// waits of up to [`MAX_WAIT_MS`]. An unreachable server ends the drive with
    /// [`Error::Network`] and a long rate limit with the server's refusal: what is queued stays
    /// queued for the next command either way.
    pub(crate) async fn drive(&mut self) -> Result<()> {
        let mut rate_limited: Option<ApiError> = None;
        for _ in 0..MAX_ROUNDS {
            let mut network: Option<String> = None;
            while let Some((id, request)) = self.machine()?.poll_request() {
                let outcome = self.execute(request).await;
                match &outcome {
                    Err(Failure::Network(text)) => network = Some(text.clone()),
                    Err(Failure::Refused(e)) if e.code == ErrorCode::RateLimited => {
                        rate_limited = Some(e.clone());
                    }
                    _ => {}
                }
                self.machine()?.handle_response(now_ms(), id, outcome)?;
            }
            self.take_machine_notifications()?;
            if self.machine()?.session_expired() {
                return Err(session_expired_error());
            }
            if let Some(text) = network {
                return Err(Error::Network(text));
            }
            let now = now_ms();
            match self.machine()?.next_wakeup() {
                None => return Ok(()),
                Some(t) if t <= now => self.machine()?.tick(now),
                Some(t) if t - now <= MAX_WAIT_MS => {
                    tokio::time::sleep(Duration::from_millis(t - now)).await;
                    self.machine()?.tick(now_ms());
                }
                Some(_) => {
                    return match rate_limited {
                        Some(e) => Err(Error::Api(e)),
                        None => Ok(()),
                    };
                }
            }
        }
        Ok(())
    }

    /// Turns what the machine wants the user to see into notices (messages are reported from
    /// the history by `sync`).
    pub(crate) fn take_machine_notifications(&mut self) -> Result<()> {
        while let Some(n) = self.machine()?.poll_notification() {
            match n {
                Notification::Notice(text) => self.notice(text),
                Notification::TransparencyAlarm(text) => {
                    self.notice(format!("KEY TRANSPARENCY ALARM: {text}"));
                }
                Notification::MessageRequest { from, .. } => {
                    self.notice(format!(
                        "new message request from {from}: run `nightjar requests`"
                    ));
                }
                Notification::IdentityChanged { username } => self.notice(format!(
                    "WARNING: the identity key of {username} changed. Messages from and to {username} are held until you verify it: compare `nightjar safety-number {username}` with them, then run `nightjar trust {username}`"
                )),
                Notification::Failed {
                    conversation,
                    reason,
                    ..
                } => self.notice(format!(
                    "the server refused a message to conversation {conversation}: {reason}; it \
                     stays in the outbox (`nightjar outbox --retry` or `--drop`)"
                )),
                Notification::Completed {
                    operation,
                    conversation,
                } => {
                    self.operations.insert(operation, Ok(conversation));
                }
                Notification::OperationFailed { operation, reason } => {
                    self.operations.insert(operation, Err(reason));
                }
                Notification::Read {
                    conversation,
                    from,
                    device,
                    id,
                    sent_at,
                    message_ids,
                } => self.receipts.push(receipt_row(ReceiptRow {
                    kind: "read",
                    conversation,
                    from,
                    device,
                    id,
                    sent_at,
                    message_ids,
                })),
                Notification::Delivered {
                    conversation,
                    from,
                    device,
                    id,
                    sent_at,
                    message_ids,
                } => self.receipts.push(receipt_row(ReceiptRow {
                    kind: "delivered",
                    conversation,
                    from,
                    device,
                    id,
                    sent_at,
                    message_ids,
                })),
                Notification::Received(_)
                | Notification::Typing { .. }
                | Notification::Sent { .. }
                | Notification::ConversationChanged(_)
                | Notification::Synced
                | Notification::SessionExpired
                // Calls are the browser's; their outcome is a history row `sync` reports.
                | Notification::Call(_) => {}
            }
        }
        Ok(())
    }
}

/// A read or delivery receipt as the machine reported it.
struct ReceiptRow {
    kind: &'static str,
    conversation: nightjar_core::ConversationId,
    from: String,
    device: String,
    id: nightjar_core::content::MessageId,
    sent_at: u64,
    message_ids: Vec<nightjar_core::content::MessageId>,
}

/// How `sync` reports a receipt: a row of its own, naming the messages it is about.
fn receipt_row(r: ReceiptRow) -> ReceivedMessage {
    ReceivedMessage {
        conversation: r.conversation.to_string(),
        group: None,
        id: r.id.to_hex(),
        from: r.from,
        device: r.device,
        sent_at: r.sent_at,
        kind: r.kind.into(),
        text: None,
        detail: MessageDetail {
            message_ids: r.message_ids.iter().map(|m| m.to_hex()).collect(),
            ..MessageDetail::default()
        },
        expires_at: None,
    }
}
