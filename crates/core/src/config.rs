//! Engine configuration: ciphersuite choice and the post-compromise-security update policy.

use openmls::prelude::Ciphersuite;
use serde::{Deserialize, Serialize};

/// The MLS ciphersuite of a conversation, stored per conversation so a later migration is possible.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum Suite {
    /// Hybrid post-quantum `MLS_256_XWING_CHACHA20POLY1305_SHA256_Ed25519` (0x004D, IETF draft
    /// code point): X-Wing (ML-KEM-768 + X25519) key agreement. The default.
    #[default]
    XWing,
    /// Classical `MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519` (0x0003), the fallback.
    Classic,
}

impl Suite {
    /// The MLS ciphersuite this stands for.
    pub fn ciphersuite(self) -> Ciphersuite {
        match self {
            Suite::XWing => Ciphersuite::MLS_256_XWING_CHACHA20POLY1305_SHA256_Ed25519,
            Suite::Classic => Ciphersuite::MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519,
        }
    }

    /// The IANA / draft code point.
    pub fn id(self) -> u16 {
        self.ciphersuite() as u16
    }

    /// The suite for a code point, if Nightjar supports it.
    pub fn from_ciphersuite(cs: Ciphersuite) -> Option<Self> {
        [Suite::XWing, Suite::Classic]
            .into_iter()
            .find(|s| s.ciphersuite() == cs)
    }
}

/// When a device refreshes its own leaf with a self-update commit (post-compromise security).
///
/// The check happens when the device sends: if it has received at least `max_received`
/// messages, or at least `max_age_ms` milliseconds have passed, since its last own commit, the
/// send also produces a self-update commit. Time is always passed in by the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdatePolicy {
    /// Received application messages after which the next send triggers an update.
    pub max_received: u32,
    /// Milliseconds after which the next send triggers an update.
    pub max_age_ms: u64,
}

impl Default for UpdatePolicy {
    fn default() -> Self {
        Self {
            max_received: 100,
            max_age_ms: 24 * 60 * 60 * 1000,
        }
    }
}

impl UpdatePolicy {
    /// Whether an update is due given counters since the last own commit.
    pub fn is_due(&self, received: u32, last_update_ms: u64, now_ms: u64) -> bool {
        received >= self.max_received || now_ms.saturating_sub(last_update_ms) >= self.max_age_ms
    }
}

/// Settings of an [`crate::Engine`]; the defaults suit a messenger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineConfig {
    /// Ciphersuite for new conversations and key packages.
    pub suite: Suite,
    /// Self-update policy.
    pub update_policy: UpdatePolicy,
    /// Past epochs whose keys are retained so late application messages still decrypt.
    pub max_past_epochs: usize,
    /// How many skipped messages per sender can still be decrypted later.
    pub out_of_order_tolerance: u32,
    /// How far ahead of the expected generation a message may be.
    pub maximum_forward_distance: u32,
    /// Ciphertexts are padded to a multiple of this many bytes to hide exact lengths.
    pub padding: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            suite: Suite::default(),
            update_policy: UpdatePolicy::default(),
            max_past_epochs: 2,
            out_of_order_tolerance: 100,
            maximum_forward_distance: 1000,
            padding: 64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suite_ids() {
        assert_eq!(Suite::XWing.id(), 0x004D);
        assert_eq!(Suite::Classic.id(), 0x0003);
        assert_eq!(Suite::default(), Suite::XWing);
    }

    #[test]
    fn policy_due() {
        let p = UpdatePolicy {
            max_received: 3,
            max_age_ms: 1000,
        };
        assert!(!p.is_due(2, 0, 999));
        assert!(p.is_due(3, 0, 10));
        assert!(p.is_due(0, 0, 1000));
        assert!(
            !p.is_due(0, 5000, 10),
            "a clock going backwards never triggers"
        );
    }
}
