//! The group name and avatar, encrypted to the members.
//!
//! Handshake messages are MLS PublicMessages and the delivery service holds each group's public
//! state, so the group context is visible to the server. The metadata extension therefore holds
//! `nonce || XChaCha20-Poly1305(metadata key, GroupMetadata)`, never the metadata itself.
//!
//! The metadata key is per group and changes with every rename: the committer derives it from
//! the MLS exporter of the epoch the rename commit is made in, which every member of that epoch
//! (and nobody else) can derive too. Devices added later receive the current key inside the
//! Welcome's encrypted GroupInfo (extension [`METADATA_KEY_EXTENSION`]); that GroupInfo is never
//! sent to the server.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use openmls::prelude::{Extension, UnknownExtension};
use zeroize::Zeroizing;

use super::ConversationId;
use crate::content::GroupMetadata;

/// GroupInfo extension (inside the encrypted Welcome only) carrying the metadata key.
pub(crate) const METADATA_KEY_EXTENSION: u16 = 0xF1A2;
/// MLS exporter label of the metadata key.
pub(crate) const METADATA_KEY_LABEL: &str = "nightjar group metadata key";

const NONCE: usize = 24;

/// A group's metadata key; wiped on drop, never printed.
pub(crate) struct MetadataKey(Zeroizing<[u8; 32]>);

impl MetadataKey {
    pub(crate) fn from_slice(bytes: &[u8]) -> Option<Self> {
        let array: [u8; 32] = bytes.try_into().ok()?;
        Some(Self(Zeroizing::new(array)))
    }

    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The Welcome-only GroupInfo extension that hands this key to joiners.
    pub(crate) fn welcome_extension(&self) -> Extension {
        Extension::Unknown(METADATA_KEY_EXTENSION, UnknownExtension(self.0.to_vec()))
    }

    fn aad(conversation: ConversationId) -> Vec<u8> {
        [b"nightjar group metadata v1".as_slice(), &conversation.0].concat()
    }

    /// Encrypts `metadata` for the group context extension.
    pub(crate) fn seal(
        &self,
        conversation: ConversationId,
        metadata: &GroupMetadata,
    ) -> crate::error::Result<Vec<u8>> {
        let mut nonce = [0u8; NONCE];
        getrandom::fill(&mut nonce)?;
        let plaintext = Zeroizing::new(metadata.encode());
        let cipher = XChaCha20Poly1305::new(self.0.as_ref().into());
        let sealed = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: &plaintext,
                    aad: &Self::aad(conversation),
                },
            )
            .map_err(|_| super::internal("metadata encryption failed"))?;
        Ok([nonce.as_slice(), &sealed].concat())
    }

    /// Decrypts the extension's bytes; `None` if they were not sealed under this key.
    pub(crate) fn open(&self, conversation: ConversationId, bytes: &[u8]) -> Option<GroupMetadata> {
        if bytes.len() < NONCE {
            return None;
        }
        let (nonce, sealed) = bytes.split_at(NONCE);
        let cipher = XChaCha20Poly1305::new(self.0.as_ref().into());
        let plaintext = Zeroizing::new(
            cipher
                .decrypt(
                    XNonce::from_slice(nonce),
                    Payload {
                        msg: sealed,
                        aad: &Self::aad(conversation),
                    },
                )
                .ok()?,
        );
        GroupMetadata::decode(&plaintext).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_sealed_to_the_key_and_the_group() {
        let key = MetadataKey::from_slice(&[3; 32]).unwrap();
        let other = MetadataKey::from_slice(&[4; 32]).unwrap();
        let conv = ConversationId([1; 16]);
        let metadata = GroupMetadata {
            name: "hiking club".into(),
            avatar: None,
        };
        let sealed = key.seal(conv, &metadata).unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"hiking"));
        assert_eq!(key.open(conv, &sealed), Some(metadata));
        assert_eq!(other.open(conv, &sealed), None);
        assert_eq!(key.open(ConversationId([2; 16]), &sealed), None);
    }
}
