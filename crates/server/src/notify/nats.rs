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
use std::sync::Weak;

use futures_util::StreamExt as _;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use super::{Hub, Notifier};
use crate::error::ServerError;

/// Notification batches waiting for the publisher.
const PUBLISH_QUEUE: usize = 1024;

/// One notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Note {
    /// The device's queue holds ids up to this one.
    Mail(u64),
    /// The device was removed.
    Revoked,
}

impl Note {
    fn encode(self) -> bytes::Bytes {
        match self {
            Self::Mail(id) => {
                let mut out = Vec::with_capacity(9);
                out.push(b'm');
                out.extend_from_slice(&id.to_be_bytes());
                out.into()
            }
            Self::Revoked => bytes::Bytes::from_static(b"r"),
        }
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        match bytes {
            [b'm', id @ ..] => Some(Self::Mail(u64::from_be_bytes(id.try_into().ok()?))),
            [b'r'] => Some(Self::Revoked),
            _ => None,
        }
    }
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

    /// Announces the newest queue id of each device.
    pub(super) fn mail(&self, newest: HashMap<i64, u64>) {
        if newest.is_empty() {
            return;
        }
        self.send(
            newest
                .into_iter()
                .map(|(pk, id)| (pk, Note::Mail(id)))
                .collect(),
        );
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
                match Note::decode(&message.payload) {
                    Some(Note::Mail(id)) => notifier.bump(device_pk, id),
                    Some(Note::Revoked) => notifier.revoke_here(&[device_pk]),
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

    #[test]
    fn notes_round_trip() {
        for note in [Note::Mail(0), Note::Mail(u64::MAX), Note::Revoked] {
            assert_eq!(Note::decode(&note.encode()), Some(note));
        }
        for junk in [&b""[..], b"m", b"m1234567", b"x", b"r1"] {
            assert_eq!(Note::decode(junk), None);
        }
    }
}
