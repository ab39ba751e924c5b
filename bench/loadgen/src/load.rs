//! The sending side: an open-loop scheduler and HTTP senders.
//!
//! Message `seq` is due at `start + seq / rate`, whatever the server is doing: the scheduler
//! never waits for answers (no coordinated omission), and latencies are measured from the due
//! time, so time spent queued in the generator counts against the server. Each due message is
//! a task that waits for one of `--http-conns` request slots (a keep-alive HTTP/1.1 pool) and
//! POSTs to `/v1/conversations/{id}/messages` as its sending device. With a retry budget
//! (`--retry-for`) a send that got no answer, a 5xx or a 429 is retried with the same
//! idempotency key, on the next server, as a client's outbox would.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use nightjar_api::ApiError;
use nightjar_core::ConversationId;
use nightjar_core::sealed::{SealedKey, SealedSubmission};
use tokio::sync::Semaphore;

use crate::api::{Api, exchange};
use crate::payload::{Stamp, Template};
use crate::track::{Outcome, Tracker};

/// One conversation as the senders see it.
#[derive(Debug)]
pub(crate) struct Conversation {
    /// Its id.
    pub(crate) id: ConversationId,
    /// The epoch messages are made in.
    pub(crate) epoch: u64,
    /// Session tokens of its member devices, in member order.
    pub(crate) tokens: Vec<String>,
    /// Index of its first device among the run's devices (member `m` is device `first + m`).
    pub(crate) first_device: usize,
    /// With `--sealed`: the key its sends are signed with.
    pub(crate) sealed: Option<SealedKey>,
}

/// Registers each conversation's sealed key as every member (which also accepts the
/// conversation for each, as its first sealed send would).
pub(crate) async fn register_sealed_keys(
    apis: &[Api],
    conversations: &[Conversation],
) -> crate::error::Result<()> {
    for (c, conversation) in conversations.iter().enumerate() {
        let Some(key) = &conversation.sealed else {
            continue;
        };
        let body = nightjar_api::SealedKeyRequest {
            epoch: conversation.epoch,
            key: nightjar_api::B64(key.public().to_vec()),
            accept: true,
        };
        let body = Bytes::from(serde_json::to_vec(&body)?);
        for (m, token) in conversation.tokens.iter().enumerate() {
            let api = &apis[(conversation.first_device + m) % apis.len()];
            let url = format!(
                "{}/v1/conversations/{}/sealed-key",
                api.base(),
                conversation.id
            );
            let answer = exchange(
                api.http(),
                http::Method::PUT,
                &url,
                Some(token),
                Some(body.clone()),
            )
            .await
            .map_err(|e| {
                crate::error::Error::other(format!("registering a sealed key: {}", e.label()))
            })?;
            if answer.status != 204 {
                return Err(crate::error::Error::other(format!(
                    "registering the sealed key of conversation {c}: status {}",
                    answer.status
                )));
            }
        }
    }
    Ok(())
}

/// What the senders share.
#[derive(Debug)]
pub(crate) struct Senders {
    /// One client per server; device `i` sends to server `i % len`.
    pub(crate) apis: Vec<Api>,
    /// The run's conversations.
    pub(crate) conversations: Vec<Conversation>,
    /// The payload template.
    pub(crate) template: Template,
    /// The run's bookkeeping.
    pub(crate) tracker: Arc<Tracker>,
    /// Request slots (`--http-conns`).
    pub(crate) slots: Semaphore,
    /// How long a send keeps retrying after failures without an answer.
    pub(crate) retry_for: Duration,
    /// Sends created and not finished.
    pub(crate) outstanding: AtomicU64,
    /// Whether sends carry the template's franking commitment, as real clients' do (the
    /// server stamps each: one HMAC).
    pub(crate) franking: bool,
}

/// How the schedule ran.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub(crate) struct Schedule {
    /// Messages that became due.
    pub(crate) due: u64,
    /// Messages handed to a sender (the rest were skipped for backlog).
    pub(crate) started: u64,
    /// Seconds from the first due time to the last.
    pub(crate) seconds: f64,
}

/// Runs the open-loop schedule: `rate` messages per second for `duration`, skipping (and
/// counting) messages while more than `max_backlog` sends are outstanding.
pub(crate) async fn schedule(
    senders: &Arc<Senders>,
    rate: f64,
    duration: Duration,
    max_backlog: u64,
) -> Schedule {
    let tracker = &senders.tracker;
    let total = ((rate * duration.as_secs_f64()) as u64).min(tracker.capacity());
    let interval_us = 1e6 / rate;
    let start_us = tracker.now_us();
    let mut ticker = tokio::time::interval(Duration::from_millis(1));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut report = Schedule::default();
    let mut seq = 0u64;
    while seq < total {
        ticker.tick().await;
        let elapsed = tracker.now_us().saturating_sub(start_us) as f64;
        let due_until = ((elapsed / interval_us) as u64 + 1).min(total);
        while seq < due_until {
            let due_us = start_us + (seq as f64 * interval_us) as u64;
            report.due += 1;
            if senders.outstanding.load(Relaxed) >= max_backlog {
                tracker.counters.backlog_skipped.fetch_add(1, Relaxed);
            } else {
                tracker.scheduled(seq, due_us);
                senders.outstanding.fetch_add(1, Relaxed);
                report.started += 1;
                let senders = senders.clone();
                tokio::spawn(async move {
                    send(&senders, seq).await;
                    senders.outstanding.fetch_sub(1, Relaxed);
                });
            }
            seq += 1;
        }
    }
    report.seconds = (tracker.now_us().saturating_sub(start_us)) as f64 / 1e6;
    report
}

/// What one attempt came to.
enum Attempt {
    Accepted,
    /// A refusal that retrying cannot fix.
    Refused(String),
    /// No answer, a 5xx or a 429: worth retrying (after the given pause).
    Retry(String, Duration),
}

async fn attempt(api: &Api, path: &str, token: Option<&str>, body: &Bytes) -> Attempt {
    let url = format!("{}{path}", api.base());
    let answer = match exchange(
        api.http(),
        http::Method::POST,
        &url,
        token,
        Some(body.clone()),
    )
    .await
    {
        Ok(a) => a,
        Err(e) => return Attempt::Retry(e.label().into(), Duration::from_millis(100)),
    };
    let status = answer.status;
    if status == 200 {
        return Attempt::Accepted;
    }
    let error = serde_json::from_slice::<ApiError>(&answer.body).ok();
    let label = error.as_ref().map_or_else(
        || format!("http_{status}"),
        |e| format!("{:?}", e.code).to_lowercase(),
    );
    match status {
        429 => {
            let wait = error.and_then(|e| e.retry_after_ms).unwrap_or(100);
            Attempt::Retry(label, Duration::from_millis(wait))
        }
        500..=599 if status != 507 => Attempt::Retry(label, Duration::from_millis(100)),
        _ => Attempt::Refused(label),
    }
}

fn request_body(senders: &Senders, seq: u64, conversation: &Conversation) -> Bytes {
    use base64::Engine as _;
    let stamp = Stamp {
        run: senders.tracker.run,
        seq,
    };
    let payload = senders
        .template
        .payload(&conversation.id, conversation.epoch, stamp);
    if let Some(key) = &conversation.sealed {
        let submission_id = format!("lg-{:08x}-{seq}", stamp.run);
        let signature = key.sign(&SealedSubmission {
            conversation: conversation.id,
            epoch: conversation.epoch,
            submission_id: &submission_id,
            payload: &payload,
        });
        let body = nightjar_api::SealedSendRequest {
            submission_id,
            epoch: conversation.epoch,
            payload: nightjar_api::B64(payload),
            key: nightjar_api::B64(key.public().to_vec()),
            signature: nightjar_api::B64(signature.to_vec()),
            franking_commitment: senders
                .franking
                .then(|| nightjar_api::B64(senders.template.commitment().to_vec())),
        };
        return Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
    }
    let mut body = Vec::with_capacity(payload.len() * 4 / 3 + 128);
    body.extend_from_slice(
        format!(
            "{{\"idempotency_key\":\"lg-{:08x}-{seq}\",\"kind\":\"application\",\"epoch\":{},\"payload\":\"",
            stamp.run, conversation.epoch
        )
        .as_bytes(),
    );
    let mut text = String::with_capacity(payload.len() * 4 / 3 + 4);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(&payload, &mut text);
    body.extend_from_slice(text.as_bytes());
    body.push(b'"');
    if senders.franking {
        body.extend_from_slice(b",\"franking_commitment\":\"");
        text.clear();
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode_string(senders.template.commitment(), &mut text);
        body.extend_from_slice(text.as_bytes());
        body.push(b'"');
    }
    body.push(b'}');
    Bytes::from(body)
}

/// Sends message `seq`, retrying within the budget, and records the outcome.
async fn send(senders: &Senders, seq: u64) {
    let tracker = &senders.tracker;
    let (c, member) = tracker.route(seq);
    let conversation = &senders.conversations[c];
    let token = &conversation.tokens[member];
    let body = request_body(senders, seq, conversation);
    let (path, token) = match conversation.sealed {
        Some(_) => (
            format!("/v1/conversations/{}/sealed", conversation.id),
            None,
        ),
        None => (
            format!("/v1/conversations/{}/messages", conversation.id),
            Some(token.as_str()),
        ),
    };
    let mut server = (conversation.first_device + member) % senders.apis.len();
    let deadline = tokio::time::Instant::now() + senders.retry_for;
    loop {
        let result = {
            let Ok(_slot) = senders.slots.acquire().await else {
                return;
            };
            attempt(&senders.apis[server], &path, token, &body).await
        };
        match result {
            Attempt::Accepted => {
                tracker.answered(seq, Outcome::Accepted, None);
                return;
            }
            Attempt::Refused(label) => {
                tracker.answered(seq, Outcome::Refused, Some(&label));
                return;
            }
            Attempt::Retry(label, wait) => {
                if tokio::time::Instant::now() + wait > deadline {
                    let outcome = if label.starts_with("http_") {
                        Outcome::Unknown
                    } else {
                        Outcome::Refused
                    };
                    tracker.answered(seq, outcome, Some(&label));
                    return;
                }
                tracker.error(&format!("retried_{label}"));
                tracker.counters.retries.fetch_add(1, Relaxed);
                server = (server + 1) % senders.apis.len();
                tokio::time::sleep(wait).await;
            }
        }
    }
}
