//! Message payloads: real MLS framing, unique per message, cheap to make.
//!
//! The server checks every payload with `nightjar_core::wire::inspect`: it must be an MLS
//! PrivateMessage whose group id and epoch match the conversation and the request. At start
//! the generator builds a two-device group locally (no server), encrypts one text message of
//! `--size` bytes with `Engine::encrypt`, and keeps the result as a template. Each payload is
//! that template with the group id set to the target conversation and the last 16 bytes
//! (the tail of the AEAD ciphertext, opaque to the server) replaced by a [`Stamp`] naming the
//! message. The server cannot tell these from fresh encryptions (it never holds keys); a real
//! recipient would reject them at the AEAD check, which is why the generator's devices only
//! read the stamp. Encrypting each message for real would cost ~40 µs of the same two cores
//! the server runs on, and would measure the client.

use std::sync::Arc;

use nightjar_core::content::{Content, Message, MessageId};
use nightjar_core::storage::MemoryStore;
use nightjar_core::wire::{WireKind, inspect};
use nightjar_core::{ConversationId, ConversationKind, Engine, EngineConfig, Suite};

use crate::error::{Error, Result};

/// The first four bytes of every stamp.
const MAGIC: [u8; 4] = *b"NJLG";
/// Bytes a stamp takes at the end of a payload.
pub(crate) const STAMP_LEN: usize = 16;

/// Names one message of one run: written into the payload's last 16 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stamp {
    /// Random per run, so leftovers of earlier runs are recognised.
    pub(crate) run: u32,
    /// The message's sequence number in the run.
    pub(crate) seq: u64,
}

impl Stamp {
    fn bytes(self) -> [u8; STAMP_LEN] {
        let mut out = [0u8; STAMP_LEN];
        out[..4].copy_from_slice(&MAGIC);
        out[4..8].copy_from_slice(&self.run.to_be_bytes());
        out[8..].copy_from_slice(&self.seq.to_be_bytes());
        out
    }

    /// The stamp at the end of `payload`, if it carries one.
    pub(crate) fn read(payload: &[u8]) -> Option<Self> {
        let tail = payload.get(payload.len().checked_sub(STAMP_LEN)?..)?;
        if tail[..4] != MAGIC {
            return None;
        }
        let run = u32::from_be_bytes(tail[4..8].try_into().ok()?);
        let seq = u64::from_be_bytes(tail[8..].try_into().ok()?);
        Some(Self { run, seq })
    }
}

/// A real application message whose group id, epoch and tail can be rewritten.
#[derive(Clone, Debug)]
pub(crate) struct Template {
    bytes: Vec<u8>,
    group_id_at: usize,
    epoch_at: usize,
    /// The franking commitment the engine made with the message (sent with every copy).
    commitment: [u8; 32],
}

/// Reads an MLS variable-length integer (RFC 9420 §2.1.2) at `at`: `(value, bytes used)`.
fn varint(bytes: &[u8], at: usize) -> Option<(usize, usize)> {
    let first = *bytes.get(at)?;
    let len = 1usize << (first >> 6);
    if len > 4 {
        return None;
    }
    let mut value = usize::from(first & 0x3f);
    for i in 1..len {
        value = (value << 8) | usize::from(*bytes.get(at + i)?);
    }
    Some((value, len))
}

impl Template {
    /// Encrypts a `size`-byte text message in a local two-device group and keeps it.
    pub(crate) fn build(size: usize) -> Result<Self> {
        let config = EngineConfig {
            suite: Suite::Classic,
            ..EngineConfig::default()
        };
        let now = crate::setup::now_ms();
        let (mut alice, _) = Engine::create_account(
            Arc::new(MemoryStore::new()),
            "template_a",
            config.clone(),
            now,
        )?;
        let (mut bob, bob_list) =
            Engine::create_account(Arc::new(MemoryStore::new()), "template_b", config, now)?;
        let kp = bob.generate_key_packages(1, false)?;
        alice.accept_device_list("template_b", &bob_list)?;
        let (conversation, _) =
            alice.create_conversation(now, ConversationKind::Direct, &["template_b"], None, &kp)?;
        alice.commit_accepted(now, conversation)?;
        let message = Message {
            id: MessageId([7; 16]),
            sent_at_ms: now,
            expires_after_secs: None,
            content: Content::Text {
                body: "x".repeat(size),
            },
        };
        let out = alice.encrypt(now, conversation, &message)?;
        let mut template = Self::parse(out.message)?;
        template.commitment = out.franking_commitment.0;
        Ok(template)
    }

    /// The franking commitment each copy carries.
    pub(crate) fn commitment(&self) -> &[u8; 32] {
        &self.commitment
    }

    /// Finds the group id and epoch in an MLS PrivateMessage.
    fn parse(bytes: Vec<u8>) -> Result<Self> {
        let bad = || Error::other("template is not an MLS PrivateMessage with a 16-byte group id");
        let info = inspect(&bytes).map_err(|_| bad())?;
        if info.kind != WireKind::Application {
            return Err(bad());
        }
        // version (2) and wire format (2), then `opaque group_id<V>`, then `uint64 epoch`.
        let (len, used) = varint(&bytes, 4).ok_or_else(bad)?;
        if len != 16 {
            return Err(bad());
        }
        let group_id_at = 4 + used;
        let epoch_at = group_id_at + 16;
        if bytes.len() < epoch_at + 8 + STAMP_LEN {
            return Err(bad());
        }
        Ok(Self {
            bytes,
            group_id_at,
            epoch_at,
            commitment: [0; 32],
        })
    }

    /// Size of every payload, in bytes.
    pub(crate) fn len(&self) -> usize {
        self.bytes.len()
    }

    /// The template rewritten for `conversation` at `epoch`, carrying `stamp`.
    pub(crate) fn payload(
        &self,
        conversation: &ConversationId,
        epoch: u64,
        stamp: Stamp,
    ) -> Vec<u8> {
        let mut out = self.bytes.clone();
        out[self.group_id_at..self.group_id_at + 16].copy_from_slice(&conversation.0);
        out[self.epoch_at..self.epoch_at + 8].copy_from_slice(&epoch.to_be_bytes());
        let tail = out.len() - STAMP_LEN;
        out[tail..].copy_from_slice(&stamp.bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn payloads_pass_the_servers_inspection() {
        let template = Template::build(1024).unwrap();
        // 1 KiB of text, padded to 64 bytes, plus MLS framing, signature and AEAD tag.
        assert!(
            template.len() > 1024 && template.len() < 1400,
            "{}",
            template.len()
        );
        let conversation = ConversationId([0xab; 16]);
        let stamp = Stamp {
            run: 9,
            seq: 1 << 40,
        };
        let payload = template.payload(&conversation, 3, stamp);
        assert_eq!(payload.len(), template.len());
        let info = inspect(&payload).unwrap();
        assert_eq!(info.kind, WireKind::Application);
        assert_eq!(info.conversation, Some(conversation));
        assert_eq!(info.epoch, Some(3));
        assert_eq!(Stamp::read(&payload), Some(stamp));
        assert_eq!(Stamp::read(&template.bytes), None);
        assert_eq!(Stamp::read(&[1, 2]), None);
    }

    #[test]
    fn varints() {
        assert_eq!(varint(&[0x10], 0), Some((16, 1)));
        assert_eq!(varint(&[0x40, 0x10], 0), Some((16, 2)));
        assert_eq!(varint(&[0x80, 0, 1, 0], 0), Some((256, 4)));
        assert_eq!(varint(&[0xc0], 0), None);
        assert_eq!(varint(&[0x40], 0), None);
    }
}
