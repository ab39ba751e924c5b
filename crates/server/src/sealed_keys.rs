//! The sealed-sender keys this node has seen registered, by conversation and epoch, decoded, so
//! that a sealed send costs no database read (and no point decompression) once its epoch's key
//! is known. Keys are only ever added for an epoch (the database forgets old epochs, which this
//! cache may still hold: the send path takes the current epoch only anyway), so a cached key
//! never goes stale; a miss reads the database, which other nodes write to.

use std::collections::HashMap;
use std::sync::Mutex;

use ed25519_dalek::VerifyingKey;
use nightjar_core::ConversationId;

/// Conversation epochs kept before the cache starts again empty.
const MAX_EPOCHS: usize = 100_000;

/// A conversation at one epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct EpochOf {
    conversation: ConversationId,
    epoch: u64,
}

/// Registered public keys by conversation epoch.
#[derive(Debug, Default)]
pub(crate) struct SealedKeyCache {
    keys: Mutex<HashMap<EpochOf, Vec<VerifyingKey>>>,
}

impl SealedKeyCache {
    /// `key`, decoded, if it is known to be registered for `conversation` at `epoch`.
    pub(crate) fn get(
        &self,
        conversation: ConversationId,
        epoch: u64,
        key: &[u8; 32],
    ) -> Option<VerifyingKey> {
        let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.get(&EpochOf {
            conversation,
            epoch,
        })?
        .iter()
        .find(|k| k.as_bytes() == key)
        .copied()
    }

    /// Notes that `key` is registered for `conversation` at `epoch`.
    pub(crate) fn insert(&self, conversation: ConversationId, epoch: u64, key: VerifyingKey) {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        if keys.len() >= MAX_EPOCHS {
            keys.clear();
        }
        let known = keys
            .entry(EpochOf {
                conversation,
                epoch,
            })
            .or_default();
        if !known.contains(&key) {
            known.push(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;

    use super::*;

    #[test]
    fn a_key_is_known_only_for_its_conversation_and_epoch() {
        let cache = SealedKeyCache::default();
        let c = ConversationId([1; 16]);
        let key = SigningKey::from_bytes(&[7; 32]).verifying_key();
        let other = SigningKey::from_bytes(&[8; 32]).verifying_key();
        cache.insert(c, 3, key);
        cache.insert(c, 3, key);
        assert_eq!(cache.get(c, 3, key.as_bytes()), Some(key));
        assert!(cache.get(c, 4, key.as_bytes()).is_none());
        assert!(
            cache
                .get(ConversationId([2; 16]), 3, key.as_bytes())
                .is_none()
        );
        assert!(cache.get(c, 3, other.as_bytes()).is_none());
    }
}
