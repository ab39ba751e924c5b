//! Notifications between server nodes over NATS.
//!
//! Subject: `nightjar.<cluster>.dev.<device row id>`, one per device. `<cluster>` is a random
//! id stored in the shared database at its first start, so nodes on one database always talk
//! to each other and never to nodes (or test runs) on another database behind the same NATS.
//! A node subscribes to the subjects of the devices it holds streams for, and only while it
//! does, so NATS routes each notification to the nodes that need it; per-device subjects
//! cost a publish per recipient device, but NATS routes those in memory and each node
//! receives only its own devices' mail (one wildcard subject would send every notification to
//! every node). Payload: `m` and the newest queue id (8 bytes, big-endian), or `r` for a
//! removed device. The connection is made with `no_echo`: a node's own envelopes reach its
//! streams in memory.
//!
//! Publishing never waits on NATS: notifications go through a bounded queue to a publisher
//! task and are dropped if it is full (the safety poll delivers them a little later).

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use futures_util::StreamExt as _;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use nightjar_api::{B64, DeviceAddress, Envelope, EnvelopeKind, FrankingStamp};

use super::{Hub, Notifier};
use crate::error::ServerError;
use crate::rules::delivery::Stamp;
use crate::store::QueuedMessage;

/// Notification batches waiting for the publisher.
const PUBLISH_QUEUE: usize = 1024;

/// Largest envelope payload carried inside a notification; larger ones are announced by id
/// and read from the database by the node that holds the stream.
pub(super) const MAX_CARRIED_PAYLOAD: usize = 16 * 1024;

/// One notification to publish.
#[derive(Debug, Clone)]
enum Note {
    /// The device's queue holds ids up to this one.
    Mail(u64),
    /// The envelope with this id was queued for the device: the node holding its stream
    /// pushes it without reading the database (ids are contiguous per device, so a gap still
    /// makes it read).
    Envelope(Arc<QueuedMessage>, u64),
    /// The device was removed.
    Revoked,
}

/// One notification as received.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Received {
    Mail(u64),
    Envelope(Envelope),
    Revoked,
}

fn kind_byte(kind: EnvelopeKind) -> u8 {
    match kind {
        EnvelopeKind::Application => 0,
        EnvelopeKind::Commit => 1,
        EnvelopeKind::Proposal => 2,
        EnvelopeKind::Welcome => 3,
    }
}

fn put_text(out: &mut Vec<u8>, text: &str) {
    // Usernames, device ids and conversation ids are a few dozen bytes.
    let len = u16::try_from(text.len()).unwrap_or(u16::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&text.as_bytes()[..usize::from(len)]);
}

impl Note {
    /// `m` id; `r`; or `e` id, time, kind, conversation (flag + text), username, device id
    /// (u16-length-prefixed) and the payload to the end; or, for a franked message, `f`, its
    /// 32-byte commitment and 32-byte tag, then what follows `e` (a node that does not know
    /// `f` drops it, and the device reads the envelope from its queue instead). Integers
    /// big-endian.
    fn encode(&self) -> bytes::Bytes {
        match self {
            Self::Mail(id) => {
                let mut out = Vec::with_capacity(9);
                out.push(b'm');
                out.extend_from_slice(&id.to_be_bytes());
                out.into()
            }
            Self::Envelope(message, id) => {
                let mut out = Vec::with_capacity(128 + message.payload.len());
                match &message.stamp {
                    None => out.push(b'e'),
                    Some(stamp) => {
                        out.push(b'f');
                        out.extend_from_slice(&stamp.commitment);
                        out.extend_from_slice(&stamp.tag);
                    }
                }
                out.extend_from_slice(&id.to_be_bytes());
                out.extend_from_slice(&message.created_at_ms.to_be_bytes());
                out.push(kind_byte(message.kind));
                match &message.conversation_id {
                    Some(c) => {
                        out.push(1);
                        put_text(&mut out, c);
                    }
                    None => out.push(0),
                }
                put_text(&mut out, &message.sender.username);
                put_text(&mut out, &message.sender.device_id);
                out.extend_from_slice(&message.payload);
                out.into()
            }
            Self::Revoked => bytes::Bytes::from_static(b"r"),
        }
    }
}

/// A cursor over a received notification.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.0.split_at_checked(n)?;
        self.0 = tail;
        Some(head)
    }

    fn byte(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }

    fn text(&mut self) -> Option<String> {
        let len = u16::from_be_bytes(self.take(2)?.try_into().ok()?);
        String::from_utf8(self.take(usize::from(len))?.to_vec()).ok()
    }

    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }
}

/// Reads a notification; `None` for anything malformed.
fn decode(bytes: &[u8]) -> Option<Received> {
    let mut r = Reader(bytes);
    let received = match r.byte()? {
        b'm' => Received::Mail(r.u64()?),
        b'r' => Received::Revoked,
        tag @ (b'e' | b'f') => {
            let stamp = if tag == b'f' {
                Some(Stamp {
                    commitment: r.take(32)?.try_into().ok()?,
                    tag: r.take(32)?.try_into().ok()?,
                })
            } else {
                None
            };
            let id = r.u64()?;
            let server_time_ms = r.u64()?;
            let kind = match r.byte()? {
                0 => EnvelopeKind::Application,
                1 => EnvelopeKind::Commit,
                2 => EnvelopeKind::Proposal,
                3 => EnvelopeKind::Welcome,
                _ => return None,
            };
            let conversation_id = match r.byte()? {
                0 => None,
                1 => Some(r.text()?),
                _ => return None,
            };
            let username = r.text()?;
            let device_id = r.text()?;
            let payload = r.rest().to_vec();
            Received::Envelope(Envelope {
                id,
                conversation_id,
                sender: DeviceAddress {
                    username,
                    device_id,
                },
                kind,
                payload: B64(payload),
                server_time_ms,
                franking: stamp.map(|s| FrankingStamp {
                    commitment: B64(s.commitment.to_vec()),
                    tag: B64(s.tag.to_vec()),
                    time_ms: server_time_ms,
                }),
            })
        }
        _ => return None,
    };
    r.0.is_empty().then_some(received)
}

/// This node's NATS connection.
#[derive(Debug)]
pub(crate) struct Remote {
    client: async_nats::Client,
    prefix: String,
    outbox: mpsc::Sender<Vec<(i64, Note)>>,
}

impl Remote {
    /// Connects to `url` as `node` of `cluster` and starts the publisher.
    pub(crate) async fn connect(url: &str, node: &str, cluster: &str) -> Result<Self, ServerError> {
        let client = async_nats::ConnectOptions::new()
            .name(format!("nightjar-{node}"))
            .no_echo()
            .connect(url)
            .await
            .map_err(|e| ServerError::Config(format!("cannot connect to NATS at {url}: {e}")))?;
        let prefix = format!("nightjar.{cluster}.dev");
        let (outbox, queue) = mpsc::channel(PUBLISH_QUEUE);
        tokio::spawn(publish(client.clone(), prefix.clone(), queue));
        Ok(Self {
            client,
            prefix,
            outbox,
        })
    }

    /// Announces committed envelopes to the nodes holding their devices' streams: small ones
    /// whole (`(device, message, queue id)`, in commit order), and for the rest the newest
    /// queue id of each device.
    pub(super) fn mail(
        &self,
        envelopes: Vec<(i64, Arc<QueuedMessage>, u64)>,
        newest: HashMap<i64, u64>,
    ) {
        if envelopes.is_empty() && newest.is_empty() {
            return;
        }
        let notes = envelopes
            .into_iter()
            .map(|(pk, message, id)| (pk, Note::Envelope(message, id)))
            .chain(newest.into_iter().map(|(pk, id)| (pk, Note::Mail(id))))
            .collect();
        self.send(notes);
    }

    /// Announces removed devices.
    pub(super) fn revoked(&self, devices: &[i64]) {
        if devices.is_empty() {
            return;
        }
        self.send(devices.iter().map(|pk| (*pk, Note::Revoked)).collect());
    }

    fn send(&self, notes: Vec<(i64, Note)>) {
        if self.outbox.try_send(notes).is_err() {
            tracing::warn!("NATS publisher is behind; notifications dropped");
        }
    }

    /// Subscribes to the device's subject; `ready` completes once the subscription is in
    /// place at the NATS server. Ends when aborted (its last stream here closed).
    pub(super) fn listen(
        &self,
        device_pk: i64,
        hub: Weak<Hub>,
        ready: oneshot::Sender<()>,
    ) -> AbortHandle {
        let client = self.client.clone();
        let subject = format!("{}.{device_pk}", self.prefix);
        tokio::spawn(async move {
            let mut subscription = match client.subscribe(subject).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "NATS subscribe failed; relying on the poll");
                    return;
                }
            };
            // A round trip: the server has the subscription once the flush returns.
            let _ = client.flush().await;
            let _ = ready.send(());
            while let Some(message) = subscription.next().await {
                let Some(hub) = hub.upgrade() else { return };
                let notifier = Notifier { hub };
                match decode(&message.payload) {
                    Some(Received::Mail(id)) => notifier.bump(device_pk, id),
                    Some(Received::Envelope(envelope)) => {
                        notifier.deliver_here(device_pk, envelope)
                    }
                    Some(Received::Revoked) => notifier.revoke_here(&[device_pk]),
                    None => tracing::debug!("ignoring a malformed NATS notification"),
                }
            }
        })
        .abort_handle()
    }
}

async fn publish(
    client: async_nats::Client,
    prefix: String,
    mut queue: mpsc::Receiver<Vec<(i64, Note)>>,
) {
    while let Some(notes) = queue.recv().await {
        for (pk, note) in notes {
            if let Err(e) = client
                .publish(format!("{prefix}.{pk}"), note.encode())
                .await
            {
                tracing::debug!(error = %e, "NATS publish failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(conversation: Option<&str>, payload: &[u8]) -> Arc<QueuedMessage> {
        Arc::new(QueuedMessage {
            conversation_id: conversation.map(str::to_owned),
            sender: DeviceAddress {
                username: "alice".into(),
                device_id: "000000000000000a".into(),
            },
            kind: EnvelopeKind::Commit,
            payload: payload.to_vec(),
            created_at_ms: 1_700_000_000_000,
            stamp: None,
        })
    }

    #[test]
    fn notes_round_trip() {
        assert_eq!(decode(&Note::Mail(0).encode()), Some(Received::Mail(0)));
        assert_eq!(
            decode(&Note::Mail(u64::MAX).encode()),
            Some(Received::Mail(u64::MAX))
        );
        assert_eq!(decode(&Note::Revoked.encode()), Some(Received::Revoked));
        for m in [
            message(Some("0123456789abcdef0123456789abcdef"), b"ciphertext"),
            message(None, b""),
            Arc::new(QueuedMessage {
                kind: EnvelopeKind::Application,
                stamp: Some(Stamp {
                    commitment: [1; 32],
                    tag: [2; 32],
                }),
                ..(*message(Some("0123456789abcdef0123456789abcdef"), b"franked")).clone()
            }),
        ] {
            let note = Note::Envelope(m.clone(), 42);
            assert_eq!(
                decode(&note.encode()),
                Some(Received::Envelope(m.envelope(42)))
            );
        }
    }

    #[test]
    fn malformed_notes_are_refused() {
        for junk in [
            &b""[..],
            b"m",
            b"m1234567",
            b"m123456789",
            b"x",
            b"r1",
            b"e",
        ] {
            assert_eq!(decode(junk), None);
        }
        let whole = Note::Envelope(message(Some("c"), b"xyz"), 7).encode();
        // Every truncation that cuts into the header, and a bad kind or flag.
        for cut in 1..(whole.len() - 3) {
            assert_eq!(decode(&whole[..cut]), None, "cut at {cut}");
        }
        let mut bad_kind = whole.to_vec();
        bad_kind[17] = 9;
        assert_eq!(decode(&bad_kind), None);
        let mut bad_flag = whole.to_vec();
        bad_flag[18] = 2;
        assert_eq!(decode(&bad_flag), None);
    }
}
