//! Message franking: a recipient can prove to the server which device sent exactly which
//! content, and the server can check the proof without ever being able to read a message that
//! was not reported (see docs/reporting.md).
//!
//! Adapted from Messenger's franking to sealed sender, where the server does not know which
//! member posted a message:
//!
//! 1. For every application message the sender draws a fresh 32-byte [`FrankingKey`] and
//!    computes the **commitment** `c = HMAC-SHA256(key, CommitmentInput)` over the
//!    conversation, the sending account and device, and the encoded [`crate::content::Message`].
//!    It signs `c` with its device's MLS signature key (Ed25519) under a context string of its
//!    own ([`signed_bytes`]). The key and the signature travel *inside* the encrypted message
//!    (content version 4, [`crate::content::Plaintext`]); `c` travels *outside*, on the send
//!    request.
//! 2. The server, which sees only `c`, stamps it: `tag = HMAC-SHA256(server key, TagInput)`
//!    over `c`, the conversation and its own (hour-rounded) time, and delivers `c`, the tag and
//!    the time with the envelope.
//! 3. A recipient opens the commitment with the key from the decrypted message and the
//!    MLS-authenticated sender, checks the signature against that device's key, and checks the
//!    envelope carries the same `c` ([`check`] does the first two).
//! 4. To report, the recipient reveals the message, the key, the signature, `c`, the tag and
//!    the time. The server recomputes the tag under its key (so the message passed through this
//!    conversation at that time), opens the commitment (so this is the content, the sender and
//!    the conversation committed to) and verifies the signature under the device key it holds
//!    for the named sender (so no member can frame another: under sealed sender the server
//!    cannot bind the sender itself).
//!
//! Without the key, `c` is a MAC under a random key and says nothing about the content; the
//! server learns a key only when a recipient reports that one message.
//!
//! # Encodings
//!
//! TLS presentation language with MLS variable-length vectors, as in [`crate::content`]:
//!
//! ```text
//! struct {
//!     opaque context<V> = "nightjar franking commitment v1";
//!     opaque conversation[16];
//!     opaque username<V>;              // the sending account
//!     uint64 device_id;                // the sending device
//!     opaque message<V>;               // Message::encode(), content version 1
//! } CommitmentInput;                   // c = HMAC-SHA256(franking key, CommitmentInput)
//!
//! struct {
//!     opaque context<V> = "nightjar franking signature v1";
//!     opaque commitment[32];
//! } SignatureInput;                    // Ed25519 under the sender device's MLS signature key
//!
//! struct {
//!     opaque context<V> = "nightjar franking tag v1";
//!     opaque commitment[32];
//!     opaque conversation[16];
//!     uint64 time_ms;                  // the server's time, rounded as it stores times
//! } TagInput;                          // tag = HMAC-SHA256(server franking key, TagInput)
//! ```

use std::fmt;

use ed25519_dalek::{Signature, VerifyingKey};
use hmac::digest::{Key, KeyInit};
use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::content::Writer;
use crate::engine::ConversationId;
use crate::identity::DeviceCredential;

/// Context string of the commitment input.
pub const COMMITMENT_CONTEXT: &[u8] = b"nightjar franking commitment v1";
/// Context string of what the sender's device signs.
pub const SIGNATURE_CONTEXT: &[u8] = b"nightjar franking signature v1";
/// Context string of the server's tag input.
pub const TAG_CONTEXT: &[u8] = b"nightjar franking tag v1";

/// Length of a franking key, a commitment and a server tag, in bytes.
pub const KEY_LEN: usize = 32;
/// Length of a franking signature (Ed25519), in bytes.
pub const SIGNATURE_LEN: usize = 64;

type HmacSha256 = Hmac<Sha256>;

/// A 32-byte secret key: the per-message franking key, or the server's tag key. Wiped on drop,
/// compared in constant time, never printed.
#[derive(Clone)]
pub struct FrankingKey(Box<[u8; KEY_LEN]>);

impl FrankingKey {
    /// Takes ownership of a key, wiping the caller's by-value copy.
    pub fn from_bytes(mut bytes: [u8; KEY_LEN]) -> Self {
        let key = Self(Box::new(bytes));
        bytes.zeroize();
        key
    }

    /// A key from a slice of exactly [`KEY_LEN`] bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let array: &[u8; KEY_LEN] = bytes.try_into().ok()?;
        Some(Self(Box::new(*array)))
    }

    /// A fresh random key.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut key = Box::new([0u8; KEY_LEN]);
        getrandom::fill(&mut key[..])?;
        Ok(Self(key))
    }

    /// The raw key bytes (to store it, or to reveal it in a report).
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    fn mac(&self) -> HmacSha256 {
        // RFC 2104: a key shorter than the hash's block is padded with zeros to the block
        // size, so the padded block is the same HMAC key, and `KeyInit::new` (unlike
        // `new_from_slice`) cannot fail.
        let mut block = Zeroizing::new([0u8; 64]);
        block[..KEY_LEN].copy_from_slice(&self.0[..]);
        <HmacSha256 as KeyInit>::new(Key::<HmacSha256>::from_slice(&block[..]))
    }
}

impl Zeroize for FrankingKey {
    fn zeroize(&mut self) {
        self.0.zeroize();
    }
}

impl Drop for FrankingKey {
    fn drop(&mut self) {
        self.zeroize();
    }
}

impl ZeroizeOnDrop for FrankingKey {}

impl PartialEq for FrankingKey {
    fn eq(&self, other: &Self) -> bool {
        constant_time_eq(&self.0[..], &other.0[..])
    }
}

impl Eq for FrankingKey {}

impl fmt::Debug for FrankingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FrankingKey(<redacted>)")
    }
}

/// Whether two byte strings are equal, looking at every byte whatever the first difference.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A franking commitment: public, sent beside the ciphertext.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Commitment(pub [u8; KEY_LEN]);

impl Commitment {
    /// A commitment from a slice of exactly [`KEY_LEN`] bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.try_into().ok().map(Self)
    }

    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for Commitment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Commitment(")?;
        for b in &self.0[..4] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

/// What opens a commitment and proves who made it: the franking key and the sender device's
/// signature over the commitment. Travels inside the encrypted message; `Debug` shows neither.
#[derive(Clone, PartialEq, Eq)]
pub struct Opening {
    /// The per-message franking key.
    pub key: FrankingKey,
    /// Ed25519 signature of [`signed_bytes`] of the commitment, by the sending device.
    pub signature: [u8; SIGNATURE_LEN],
}

impl fmt::Debug for Opening {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Opening(<redacted>)")
    }
}

/// The facts a commitment binds: where, who and what.
#[derive(Clone, Copy, Debug)]
pub struct Committed<'a> {
    /// The conversation the message was sent in.
    pub conversation: ConversationId,
    /// The sending account and device.
    pub sender: &'a DeviceCredential,
    /// The message as [`crate::content::Message::encode`] encodes it.
    pub message: &'a [u8],
}

/// The commitment to `committed` under `key`.
pub fn commit(key: &FrankingKey, committed: &Committed<'_>) -> Commitment {
    let mut w = Writer::default();
    w.opaque(COMMITMENT_CONTEXT);
    w.raw(&committed.conversation.0);
    w.string(&committed.sender.username);
    w.u64(committed.sender.device_id.0);
    w.opaque(committed.message);
    let mut mac = key.mac();
    mac.update(&w.0);
    Commitment(mac.finalize().into_bytes().into())
}

/// Whether `key` opens `commitment` for `committed` (compared in constant time).
pub fn opens(key: &FrankingKey, committed: &Committed<'_>, commitment: &Commitment) -> bool {
    constant_time_eq(commit(key, committed).as_bytes(), commitment.as_bytes())
}

/// The exact bytes a sending device signs for `commitment`.
pub fn signed_bytes(commitment: &Commitment) -> Vec<u8> {
    let mut w = Writer::default();
    w.opaque(SIGNATURE_CONTEXT);
    w.raw(commitment.as_bytes());
    w.0
}

/// Whether `signature` is the device key `signature_key`'s signature of `commitment`. Strict
/// Ed25519 verification (no malleable or small-order forms).
pub fn verify_signature(signature_key: &[u8], commitment: &Commitment, signature: &[u8]) -> bool {
    let Ok(key) = <&[u8; 32]>::try_from(signature_key) else {
        return false;
    };
    let Ok(key) = VerifyingKey::from_bytes(key) else {
        return false;
    };
    let Ok(signature) = Signature::from_slice(signature) else {
        return false;
    };
    key.verify_strict(&signed_bytes(commitment), &signature)
        .is_ok()
}

/// The server's tag over `commitment` in `conversation` at `time_ms`, under its key.
pub fn tag(
    server_key: &FrankingKey,
    commitment: &Commitment,
    conversation: ConversationId,
    time_ms: u64,
) -> [u8; KEY_LEN] {
    tag_mac(server_key, commitment, conversation, time_ms)
        .finalize()
        .into_bytes()
        .into()
}

/// Whether `tag` is the server's tag over `commitment` in `conversation` at `time_ms`
/// (compared in constant time).
pub fn verify_tag(
    server_key: &FrankingKey,
    commitment: &Commitment,
    conversation: ConversationId,
    time_ms: u64,
    tag: &[u8],
) -> bool {
    tag_mac(server_key, commitment, conversation, time_ms)
        .verify_slice(tag)
        .is_ok()
}

fn tag_mac(
    server_key: &FrankingKey,
    commitment: &Commitment,
    conversation: ConversationId,
    time_ms: u64,
) -> HmacSha256 {
    let mut w = Writer::default();
    w.opaque(TAG_CONTEXT);
    w.raw(commitment.as_bytes());
    w.raw(&conversation.0);
    w.u64(time_ms);
    let mut mac = server_key.mac();
    mac.update(&w.0);
    mac
}

/// A verified opening: the commitment it opens, with the key and signature that prove it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Franked {
    /// What the sender committed to (the envelope must carry the same).
    pub commitment: Commitment,
    /// The key and the signature.
    pub opening: Opening,
}

/// What a receiving engine found about an application message's franking.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrankingCheck {
    /// The message carries none (content before version 4): it cannot be reported.
    Absent,
    /// The sender's device signed the commitment its key opens for this conversation, sender
    /// and content.
    Verified(Box<Franked>),
    /// The signature does not verify under the sending device's key: the sender's device (the
    /// only one that could have encrypted it) is hostile or broken.
    Invalid,
}

/// Checks an opening found inside a message from `committed.sender`, whose MLS signature
/// key is `signature_key`.
pub fn check(opening: Opening, committed: &Committed<'_>, signature_key: &[u8]) -> FrankingCheck {
    let commitment = commit(&opening.key, committed);
    if verify_signature(signature_key, &commitment, &opening.signature) {
        FrankingCheck::Verified(Box::new(Franked {
            commitment,
            opening,
        }))
    } else {
        FrankingCheck::Invalid
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer as _, SigningKey};
    use proptest::prelude::*;

    use super::*;
    use crate::identity::DeviceId;

    const CONVERSATION: ConversationId = ConversationId([3; 16]);

    fn alice() -> DeviceCredential {
        DeviceCredential {
            username: "alice".into(),
            device_id: DeviceId(0x0a),
        }
    }

    fn device_key() -> SigningKey {
        SigningKey::from_bytes(&[7; 32])
    }

    /// A commitment and its opening, made as a sending engine makes them.
    fn franked(message: &[u8]) -> (Commitment, Opening) {
        let sender = alice();
        let key = FrankingKey::from_bytes([9; 32]);
        let commitment = commit(
            &key,
            &Committed {
                conversation: CONVERSATION,
                sender: &sender,
                message,
            },
        );
        let signature = device_key().sign(&signed_bytes(&commitment)).to_bytes();
        (commitment, Opening { key, signature })
    }

    #[test]
    fn commitment_and_signature_round_trip() {
        let sender = alice();
        let committed = Committed {
            conversation: CONVERSATION,
            sender: &sender,
            message: b"hello",
        };
        let (commitment, opening) = franked(b"hello");
        let public = device_key().verifying_key().to_bytes();
        assert!(opens(&opening.key, &committed, &commitment));
        assert!(verify_signature(&public, &commitment, &opening.signature));
        assert_eq!(
            check(opening.clone(), &committed, &public),
            FrankingCheck::Verified(Box::new(Franked {
                commitment,
                opening: opening.clone()
            }))
        );
        // Any other device key: the sender cannot be another.
        let stranger = SigningKey::from_bytes(&[8; 32]).verifying_key().to_bytes();
        assert_eq!(
            check(opening.clone(), &committed, &stranger),
            FrankingCheck::Invalid
        );
        assert!(!verify_signature(
            &public[..31],
            &commitment,
            &opening.signature
        ));
        assert!(!verify_signature(
            &public,
            &commitment,
            &opening.signature[..63]
        ));
    }

    #[test]
    fn the_commitment_binds_conversation_sender_device_and_content() {
        let sender = alice();
        let key = FrankingKey::from_bytes([9; 32]);
        let committed = Committed {
            conversation: CONVERSATION,
            sender: &sender,
            message: b"hello",
        };
        let c = commit(&key, &committed);
        let mallory = DeviceCredential {
            username: "mallory".into(),
            ..alice()
        };
        let other_device = DeviceCredential {
            device_id: DeviceId(0x0b),
            ..alice()
        };
        let others = [
            Committed {
                conversation: ConversationId([4; 16]),
                ..committed
            },
            Committed {
                sender: &mallory,
                ..committed
            },
            Committed {
                sender: &other_device,
                ..committed
            },
            Committed {
                message: b"hellp",
                ..committed
            },
        ];
        for other in others {
            assert!(!opens(&key, &other, &c), "{other:?}");
        }
        assert!(!opens(&FrankingKey::from_bytes([8; 32]), &committed, &c));
        // Unambiguous: moving a byte from the username into the message changes it.
        let shorter = DeviceCredential {
            username: "alic".into(),
            ..alice()
        };
        assert!(!opens(
            &key,
            &Committed {
                sender: &shorter,
                message: b"ehello",
                ..committed
            },
            &c
        ));
    }

    #[test]
    fn the_tag_binds_commitment_conversation_and_time() {
        let server = FrankingKey::from_bytes([1; 32]);
        let c = Commitment([5; 32]);
        let t = tag(&server, &c, CONVERSATION, 3_600_000);
        assert!(verify_tag(&server, &c, CONVERSATION, 3_600_000, &t));
        assert!(!verify_tag(
            &server,
            &Commitment([6; 32]),
            CONVERSATION,
            3_600_000,
            &t
        ));
        assert!(!verify_tag(
            &server,
            &c,
            ConversationId([4; 16]),
            3_600_000,
            &t
        ));
        assert!(!verify_tag(&server, &c, CONVERSATION, 7_200_000, &t));
        assert!(!verify_tag(
            &FrankingKey::from_bytes([2; 32]),
            &c,
            CONVERSATION,
            3_600_000,
            &t
        ));
        assert!(!verify_tag(&server, &c, CONVERSATION, 3_600_000, &t[..31]));
    }

    #[test]
    fn the_padded_key_is_the_same_hmac_key() {
        let key = FrankingKey::from_bytes([0x5a; 32]);
        let mut padded = key.mac();
        padded.update(b"data");
        let mut plain = <HmacSha256 as hmac::Mac>::new_from_slice(&[0x5a; 32]).unwrap();
        plain.update(b"data");
        assert_eq!(
            padded.finalize().into_bytes(),
            plain.finalize().into_bytes()
        );
    }

    #[test]
    fn secrets_are_redacted() {
        let (_, opening) = franked(b"x");
        assert_eq!(format!("{opening:?}"), "Opening(<redacted>)");
        assert_eq!(format!("{:?}", opening.key), "FrankingKey(<redacted>)");
    }

    /// Flips bit `bit` of `bytes` (modulo its length).
    fn flip(bytes: &mut [u8], bit: usize) {
        let at = (bit / 8) % bytes.len();
        bytes[at] ^= 1 << (bit % 8);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Every part of a report is bound: one flipped bit anywhere (content, key, signature,
        /// commitment, tag, conversation, device, time) and it no longer verifies.
        #[test]
        fn any_bit_flip_fails(
            message in proptest::collection::vec(any::<u8>(), 1..300),
            part in 0usize..8,
            bit in any::<usize>(),
        ) {
            let sender = alice();
            let (commitment, opening) = franked(&message);
            let public = device_key().verifying_key().to_bytes();
            let server = FrankingKey::from_bytes([1; 32]);
            let time = 1_800_000_000_000u64;
            let t = tag(&server, &commitment, CONVERSATION, time);
            let verifies = |message: &[u8], key: &FrankingKey, signature: &[u8],
                            commitment: &Commitment, t: &[u8], conversation: ConversationId,
                            sender: &DeviceCredential, time: u64| {
                let committed = Committed { conversation, sender, message };
                verify_tag(&server, commitment, conversation, time, t)
                    && opens(key, &committed, commitment)
                    && verify_signature(&public, commitment, signature)
            };
            prop_assert!(verifies(&message, &opening.key, &opening.signature, &commitment,
                &t, CONVERSATION, &sender, time));
            let mut message = message;
            let mut key = *opening.key.as_bytes();
            let mut signature = opening.signature;
            let mut c = commitment.0;
            let mut t = t;
            let mut conversation = CONVERSATION.0;
            let mut device = sender.device_id.0.to_be_bytes();
            let mut time = time.to_be_bytes();
            match part {
                0 => flip(&mut message, bit),
                1 => flip(&mut key, bit),
                2 => flip(&mut signature, bit),
                3 => flip(&mut c, bit),
                4 => flip(&mut t, bit),
                5 => flip(&mut conversation, bit),
                6 => flip(&mut device, bit),
                _ => flip(&mut time, bit),
            }
            let sender = DeviceCredential {
                device_id: DeviceId(u64::from_be_bytes(device)),
                ..sender
            };
            prop_assert!(!verifies(&message, &FrankingKey::from_bytes(key), &signature,
                &Commitment(c), &t, ConversationId(conversation), &sender,
                u64::from_be_bytes(time)));
        }
    }
}
