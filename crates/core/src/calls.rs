//! Media keys for calls: every member device of a conversation derives the same SFrame base
//! key for a call from the conversation's current MLS epoch, and nobody else can.
//!
//! This is RFC 9605 section 5.2 (SFrame keyed from MLS) with one change: the exporter's
//! context is the call id instead of the empty string, so two calls in one epoch never share a
//! key, and a sender's frame counter, which starts at zero with every call, never repeats a
//! nonce under one key. Per-sender keys come from the SFrame key id (the sender's leaf index
//! and the epoch), which the media layer (`nightjar-media`) folds into SFrame's own key
//! derivation. A member removed from the conversation is left in the old epoch: the next
//! commit gives the call a base key it cannot derive.

use zeroize::Zeroizing;

/// MLS exporter label of a call's SFrame base key (RFC 9605 section 5.2).
pub const CALL_BASE_KEY_LABEL: &str = "SFrame 1.0 Base Key";

/// Length of the base key: `Nk` of the SFrame suite calls use, AES_128_GCM_SHA256_128.
pub const CALL_BASE_KEY_LEN: usize = 16;

/// The SFrame keying material of one call in one epoch of its conversation. The base key is
/// zeroized on drop and never printed.
pub struct CallKeys {
    /// The MLS epoch the key belongs to.
    pub epoch: u64,
    /// This device's leaf index in that epoch (its SFrame sender index).
    pub leaf_index: u32,
    base_key: Zeroizing<[u8; CALL_BASE_KEY_LEN]>,
}

impl std::fmt::Debug for CallKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallKeys")
            .field("epoch", &self.epoch)
            .field("leaf_index", &self.leaf_index)
            .finish_non_exhaustive()
    }
}

impl CallKeys {
    /// The keys of `epoch` from that epoch's exporter secret. `None` if the secret is not
    /// [`CALL_BASE_KEY_LEN`] bytes.
    pub fn from_secret(epoch: u64, leaf_index: u32, secret: &[u8]) -> Option<Self> {
        Some(Self {
            epoch,
            leaf_index,
            base_key: Zeroizing::new(secret.try_into().ok()?),
        })
    }

    /// The SFrame base key every member of the epoch shares for this call.
    pub fn base_key(&self) -> &[u8; CALL_BASE_KEY_LEN] {
        &self.base_key
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_key() {
        let keys = CallKeys::from_secret(7, 2, &[0xab; CALL_BASE_KEY_LEN]).unwrap();
        assert_eq!(
            format!("{keys:?}"),
            "CallKeys { epoch: 7, leaf_index: 2, .. }"
        );
        assert!(CallKeys::from_secret(7, 2, &[0; 15]).is_none());
    }
}

/// The label of [`sfu_participant`]'s hash.
const SFU_PARTICIPANT_LABEL: &[u8] = b"nightjar sfu participant v1";

/// A device's participant id at the group-call forwarding unit: the first 8 bytes (big-endian)
/// of SHA-256 over a label, the account name and the device id. Device ids are unique only
/// within an account (each device picks its own), so the account is part of it: another
/// account cannot take a device's place in a call by choosing the same device id. The server
/// and every member compute it alike, so members can name the tiles of a call.
pub fn sfu_participant(username: &str, device: crate::identity::DeviceId) -> u64 {
    use sha2::{Digest as _, Sha256};
    let mut hash = Sha256::new();
    hash.update(SFU_PARTICIPANT_LABEL);
    hash.update((username.len() as u64).to_be_bytes());
    hash.update(username.as_bytes());
    hash.update(device.0.to_be_bytes());
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod participant_tests {
    use super::sfu_participant;
    use crate::identity::DeviceId;

    #[test]
    fn the_same_device_id_in_two_accounts_is_two_participants() {
        let id = DeviceId(0x1234);
        assert_ne!(sfu_participant("alice", id), sfu_participant("mallory", id));
        assert_eq!(sfu_participant("alice", id), sfu_participant("alice", id));
        assert_ne!(
            sfu_participant("alice", id),
            sfu_participant("alice", DeviceId(0x1235))
        );
        // The name's length is hashed: "ab"+device is not "a"+("b"...)+device.
        assert_ne!(
            sfu_participant("ab", DeviceId(1)),
            sfu_participant("a", DeviceId(1))
        );
    }
}
