//! The sealed-sender keys this node has seen registered, by conversation and epoch, so that a
//! sealed send costs no database read once its epoch's key is known. Keys are only ever added
//! for an epoch (the database forgets old epochs, which this cache may still accept: the send
//! path accepts messages of past epochs anyway), so a cached key never goes stale; a miss
//! reads the database, which other nodes write to.

use std::collections::HashMap;
use std::sync::Mutex;

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
    keys: Mutex<HashMap<EpochOf, Vec<[u8; 32]>>>,
}

impl SealedKeyCache {
    /// Whether `key` is known to be registered for `conversation` at `epoch`.
    pub(crate) fn contains(
        &self,
        conversation: ConversationId,
        epoch: u64,
        key: &[u8; 32],
    ) -> bool {
        let keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        keys.get(&EpochOf {
            conversation,
            epoch,
        })
        .is_some_and(|known| known.contains(key))
    }

    /// Notes that `key` is registered for `conversation` at `epoch`.
    pub(crate) fn insert(&self, conversation: ConversationId, epoch: u64, key: [u8; 32]) {
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
    use super::*;

    #[test]
    fn a_key_is_known_only_for_its_conversation_and_epoch() {
        let cache = SealedKeyCache::default();
        let c = ConversationId([1; 16]);
        cache.insert(c, 3, [7; 32]);
        cache.insert(c, 3, [7; 32]);
        assert!(cache.contains(c, 3, &[7; 32]));
        assert!(!cache.contains(c, 4, &[7; 32]));
        assert!(!cache.contains(ConversationId([2; 16]), 3, &[7; 32]));
        assert!(!cache.contains(c, 3, &[8; 32]));
    }
}
