//! Safety numbers: a fingerprint of two accounts' identity keys that people compare out of band.
//!
//! The server distributes identity keys, so a malicious or compromised server could hand Alice a
//! key it controls while claiming it is Bob's (a key-substitution, or man-in-the-middle, attack).
//! End-to-end encryption alone cannot detect that. A safety number lets Alice and Bob check, by
//! reading digits aloud or scanning a QR code in person, that each holds the other's real identity
//! key: if the server substituted either key, the two screens show different numbers.
//!
//! # Construction
//!
//! This is Signal's numeric fingerprint (version 2), with accounts identified by username instead
//! of a phone number. For each party:
//!
//! ```text
//! h = SHA-512(FINGERPRINT_VERSION as big-endian u16 || public_key || username as UTF-8)
//! repeat ITERATIONS times: h = SHA-512(h || public_key)
//! ```
//!
//! The first 30 bytes of `h` are split into six 5-byte big-endian integers; each, taken modulo
//! 100 000, becomes five zero-padded digits, giving 30 digits per party. The safety number is the
//! two 30-digit strings concatenated with the smaller one first, so both sides display the same 60
//! digits. Binding the username means a key cannot be silently re-presented under another name.
//! Finding a different key whose 30 digits match a given party's costs about 10^30 trials of
//! [`ITERATIONS`] hashes each.
//!
//! The QR payload is stronger than the digits: it carries the first 32 bytes of each party's final
//! hash (`[QR_VERSION] || local || remote`), and scanning checks both against our own view.
//!
//! A matching safety number proves only that both sides see the same two identity keys; it says
//! nothing about whether a device holding one of those keys is compromised.

use sha2::{Digest, Sha512};
use thiserror::Error;

/// Version of the fingerprint construction, hashed into every fingerprint; changing it changes
/// every safety number.
pub const FINGERPRINT_VERSION: u16 = 0;

/// Number of chained SHA-512 rounds after the initial hash; fixed by the format.
pub const ITERATIONS: u32 = 5200;

/// First byte of every QR payload this module produces; [`SafetyNumber::verify_scanned`] rejects
/// any other value with [`SafetyError::UnsupportedVersion`].
pub const QR_VERSION: u8 = 1;

/// Length in bytes of one party's fingerprint inside a QR payload.
const FINGERPRINT_LEN: usize = 32;

/// Exact length in bytes of a QR payload: version byte plus two fingerprints.
pub const QR_PAYLOAD_LEN: usize = 1 + 2 * FINGERPRINT_LEN;

/// Digits contributed by each party to the displayed number.
const DIGITS_PER_PARTY: usize = 30;

/// Bytes of the final hash turned into digits, five per 5-digit group.
const DISPLAYED_HASH_BYTES: usize = 30;

/// Why a scanned QR payload was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SafetyError {
    /// The payload is empty or is not exactly [`QR_PAYLOAD_LEN`] bytes long, so it is not a
    /// safety-number QR code (or was only partly scanned).
    #[error("scanned safety-number code is malformed")]
    Malformed,
    /// The payload's version byte is not [`QR_VERSION`]; the other side runs an incompatible
    /// format, so nothing can be concluded about the keys.
    #[error("scanned safety-number code has unsupported version {0}")]
    UnsupportedVersion(u8),
    /// The payload is well formed but its fingerprints differ from ours: the two sides see
    /// different identity keys (or usernames), or it was produced for a different conversation.
    #[error("scanned safety number does not match")]
    Mismatch,
}

/// The safety number of one conversation between two accounts, as seen by the local account.
///
/// [`digits`](Self::digits) and [`grouped`](Self::grouped) are identical on both sides; the QR
/// payload is directional (local first), so equality of two `SafetyNumber` values also compares
/// the point of view.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SafetyNumber {
    digits: String,
    local_fingerprint: [u8; FINGERPRINT_LEN],
    remote_fingerprint: [u8; FINGERPRINT_LEN],
}

impl SafetyNumber {
    /// Computes the safety number between the local account (`local_username`, `local_key`) and
    /// the peer (`remote_username`, `remote_key`); `*_key` are Ed25519 identity public keys.
    ///
    /// Usernames are hashed byte for byte, so callers must pass each username in its canonical
    /// form. Swapping local and remote yields the same digits.
    #[must_use]
    pub fn new(
        local_username: &str,
        local_key: &[u8; 32],
        remote_username: &str,
        remote_key: &[u8; 32],
    ) -> SafetyNumber {
        let local = PartyFingerprint::compute(local_username, local_key);
        let remote = PartyFingerprint::compute(remote_username, remote_key);
        let (first, second) = if local.digits <= remote.digits {
            (&local.digits, &remote.digits)
        } else {
            (&remote.digits, &local.digits)
        };
        SafetyNumber {
            digits: format!("{first}{second}"),
            local_fingerprint: local.scannable,
            remote_fingerprint: remote.scannable,
        }
    }

    /// The 60-digit safety number with no separators; the same string on both sides.
    #[must_use]
    pub fn digits(&self) -> String {
        self.digits.clone()
    }

    /// The safety number as 12 groups of 5 digits separated by single spaces, for display and for
    /// reading aloud; the same string on both sides.
    #[must_use]
    pub fn grouped(&self) -> String {
        let mut out = String::with_capacity(self.digits.len() + self.digits.len() / 5);
        for (i, digit) in self.digits.chars().enumerate() {
            if i > 0 && i % 5 == 0 {
                out.push(' ');
            }
            out.push(digit);
        }
        out
    }

    /// The bytes to encode in this side's QR code: `[QR_VERSION] || local || remote`, each
    /// fingerprint the first 32 bytes of that party's final hash. Always [`QR_PAYLOAD_LEN`] bytes.
    #[must_use]
    pub fn qr_payload(&self) -> Vec<u8> {
        let mut payload = Vec::with_capacity(QR_PAYLOAD_LEN);
        payload.push(QR_VERSION);
        payload.extend_from_slice(&self.local_fingerprint);
        payload.extend_from_slice(&self.remote_fingerprint);
        payload
    }

    /// Checks a payload scanned from the peer's screen, which lists the peer first.
    ///
    /// Returns `Ok(())` only if the payload is a current-version code whose first fingerprint is
    /// our remote party's and whose second is ours, i.e. both sides see the same keys and
    /// usernames. Never panics, whatever the input.
    ///
    /// # Errors
    ///
    /// [`SafetyError::Malformed`] if the payload is empty or has the wrong length,
    /// [`SafetyError::UnsupportedVersion`] if its version byte is not [`QR_VERSION`], and
    /// [`SafetyError::Mismatch`] if it is well formed but either fingerprint differs from ours.
    pub fn verify_scanned(&self, payload: &[u8]) -> Result<(), SafetyError> {
        let (&version, fingerprints) = payload.split_first().ok_or(SafetyError::Malformed)?;
        if version != QR_VERSION {
            return Err(SafetyError::UnsupportedVersion(version));
        }
        if fingerprints.len() != 2 * FINGERPRINT_LEN {
            return Err(SafetyError::Malformed);
        }
        let (their_local, their_remote) = fingerprints.split_at(FINGERPRINT_LEN);
        // Both halves are always compared so timing does not reveal which one differed.
        let local_ok = bytes_equal(their_remote, &self.local_fingerprint);
        let remote_ok = bytes_equal(their_local, &self.remote_fingerprint);
        if local_ok & remote_ok {
            Ok(())
        } else {
            Err(SafetyError::Mismatch)
        }
    }
}

/// One party's contribution: its 30 displayed digits and its 32-byte scannable fingerprint.
struct PartyFingerprint {
    digits: String,
    scannable: [u8; FINGERPRINT_LEN],
}

impl PartyFingerprint {
    fn compute(username: &str, key: &[u8; 32]) -> PartyFingerprint {
        let mut hash = Sha512::new()
            .chain_update(FINGERPRINT_VERSION.to_be_bytes())
            .chain_update(key)
            .chain_update(username.as_bytes())
            .finalize();
        for _ in 0..ITERATIONS {
            hash = Sha512::new()
                .chain_update(hash)
                .chain_update(key)
                .finalize();
        }

        let mut digits = String::with_capacity(DIGITS_PER_PARTY);
        for chunk in hash[..DISPLAYED_HASH_BYTES].chunks_exact(5) {
            let value = chunk
                .iter()
                .fold(0u64, |acc, &byte| (acc << 8) | u64::from(byte));
            digits.push_str(&format!("{:05}", value % 100_000));
        }

        let mut scannable = [0u8; FINGERPRINT_LEN];
        scannable.copy_from_slice(&hash[..FINGERPRINT_LEN]);
        PartyFingerprint { digits, scannable }
    }
}

/// Equality whose running time depends only on the lengths, not on where the inputs differ.
fn bytes_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::LazyLock;

    const ALICE_KEY: [u8; 32] = {
        let mut key = [0u8; 32];
        let mut i = 0;
        while i < 32 {
            key[i] = i as u8;
            i += 1;
        }
        key
    };
    const BOB_KEY: [u8; 32] = {
        let mut key = [0u8; 32];
        let mut i = 0;
        while i < 32 {
            key[i] = 0xff - i as u8;
            i += 1;
        }
        key
    };

    fn alice_view() -> SafetyNumber {
        SafetyNumber::new("alice", &ALICE_KEY, "bob", &BOB_KEY)
    }

    fn bob_view() -> SafetyNumber {
        SafetyNumber::new("bob", &BOB_KEY, "alice", &ALICE_KEY)
    }

    /// Bob's view computed once, for property tests that run hundreds of cases.
    static BOB: LazyLock<SafetyNumber> = LazyLock::new(bob_view);

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn both_sides_see_the_same_sixty_digits() {
        let (alice, bob) = (alice_view(), bob_view());
        assert_eq!(alice.digits(), bob.digits());
        assert_eq!(alice.grouped(), bob.grouped());
        assert_eq!(alice.digits().len(), 60);
        assert!(alice.digits().bytes().all(|b| b.is_ascii_digit()));
    }

    #[test]
    fn grouped_is_twelve_groups_of_five() {
        let number = alice_view();
        let grouped = number.grouped();
        let groups: Vec<&str> = grouped.split(' ').collect();
        assert_eq!(groups.len(), 12);
        assert!(groups.iter().all(|g| g.len() == 5));
        assert_eq!(groups.concat(), number.digits());
    }

    /// Pins the format: if this changes, every user's safety number changes.
    /// Cross-checked against an independent Python `hashlib` implementation of the construction.
    #[test]
    fn pinned_test_vector() {
        let alice = alice_view();
        assert_eq!(
            alice.digits(),
            "057139774184575576041495828849312853211110151013083951080530"
        );
        assert_eq!(
            hex(&alice.qr_payload()),
            concat!(
                "01",
                "dd0b7a37156861223b2f77eea83887ba0dcc2b5c3b1dff46b69091da1a52cd60",
                "99d94a0f31a26ea7e0adc0901c259f522c25426468ff7d852e4fe37ce271810f",
            )
        );
    }

    #[test]
    fn changes_exactly_when_a_key_or_username_changes() {
        let base = alice_view().digits();
        assert_eq!(
            SafetyNumber::new("alice", &ALICE_KEY, "bob", &BOB_KEY).digits(),
            base
        );

        for bit in [0usize, 7, 100, 255] {
            let mut alice_key = ALICE_KEY;
            alice_key[bit / 8] ^= 1 << (bit % 8);
            let changed = SafetyNumber::new("alice", &alice_key, "bob", &BOB_KEY);
            assert_ne!(changed.digits(), base, "alice key bit {bit}");

            let mut bob_key = BOB_KEY;
            bob_key[bit / 8] ^= 1 << (bit % 8);
            let changed = SafetyNumber::new("alice", &ALICE_KEY, "bob", &bob_key);
            assert_ne!(changed.digits(), base, "bob key bit {bit}");
        }

        let renamed_local = SafetyNumber::new("alicf", &ALICE_KEY, "bob", &BOB_KEY);
        let renamed_remote = SafetyNumber::new("alice", &ALICE_KEY, "bob2", &BOB_KEY);
        assert_ne!(renamed_local.digits(), base);
        assert_ne!(renamed_remote.digits(), base);
    }

    #[test]
    fn each_side_accepts_the_others_qr_code() {
        let (alice, bob) = (alice_view(), bob_view());
        assert_eq!(alice.qr_payload().len(), QR_PAYLOAD_LEN);
        assert_eq!(bob.verify_scanned(&alice.qr_payload()), Ok(()));
        assert_eq!(alice.verify_scanned(&bob.qr_payload()), Ok(()));
    }

    #[test]
    fn own_qr_code_is_not_accepted() {
        let alice = alice_view();
        assert_eq!(
            alice.verify_scanned(&alice.qr_payload()),
            Err(SafetyError::Mismatch)
        );
    }

    #[test]
    fn substituted_key_is_a_mismatch() {
        let mut mallory_key = BOB_KEY;
        mallory_key[0] ^= 1;
        // The server gave Alice Mallory's key under Bob's name.
        let fooled_alice = SafetyNumber::new("alice", &ALICE_KEY, "bob", &mallory_key);
        let bob = bob_view();
        assert_eq!(
            fooled_alice.verify_scanned(&bob.qr_payload()),
            Err(SafetyError::Mismatch)
        );
        assert_eq!(
            bob.verify_scanned(&fooled_alice.qr_payload()),
            Err(SafetyError::Mismatch)
        );

        let stranger = SafetyNumber::new("carol", &[7; 32], "dave", &[9; 32]);
        assert_eq!(
            bob.verify_scanned(&stranger.qr_payload()),
            Err(SafetyError::Mismatch)
        );
    }

    #[test]
    fn malformed_and_unsupported_payloads_are_typed_errors() {
        let bob = bob_view();
        let payload = alice_view().qr_payload();

        assert_eq!(bob.verify_scanned(&[]), Err(SafetyError::Malformed));
        assert_eq!(
            bob.verify_scanned(&payload[..1]),
            Err(SafetyError::Malformed)
        );
        assert_eq!(
            bob.verify_scanned(&payload[..QR_PAYLOAD_LEN - 1]),
            Err(SafetyError::Malformed)
        );
        let mut too_long = payload.clone();
        too_long.push(0);
        assert_eq!(bob.verify_scanned(&too_long), Err(SafetyError::Malformed));

        let mut wrong_version = payload;
        wrong_version[0] = 2;
        assert_eq!(
            bob.verify_scanned(&wrong_version),
            Err(SafetyError::UnsupportedVersion(2))
        );
    }

    proptest! {
        #[test]
        fn verify_scanned_never_panics(payload in proptest::collection::vec(any::<u8>(), 0..200)) {
            // A random payload equal to Alice's 65-byte code is not a realistic outcome.
            prop_assert!(BOB.verify_scanned(&payload).is_err());
        }

        #[test]
        fn verify_scanned_rejects_random_well_formed_payloads(
            fingerprints in proptest::collection::vec(any::<u8>(), 2 * FINGERPRINT_LEN),
        ) {
            let mut payload = vec![QR_VERSION];
            payload.extend_from_slice(&fingerprints);
            prop_assert_eq!(BOB.verify_scanned(&payload), Err(SafetyError::Mismatch));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]

        #[test]
        fn any_pair_is_symmetric_and_cross_verifies(
            a_name in "[a-z0-9_]{1,16}",
            a_key in any::<[u8; 32]>(),
            b_name in "[a-z0-9_]{1,16}",
            b_key in any::<[u8; 32]>(),
        ) {
            let a = SafetyNumber::new(&a_name, &a_key, &b_name, &b_key);
            let b = SafetyNumber::new(&b_name, &b_key, &a_name, &a_key);
            prop_assert_eq!(a.digits(), b.digits());
            prop_assert_eq!(a.digits().len(), 60);
            prop_assert_eq!(a.verify_scanned(&b.qr_payload()), Ok(()));
            prop_assert_eq!(b.verify_scanned(&a.qr_payload()), Ok(()));
        }
    }
}
