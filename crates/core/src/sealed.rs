//! Sealed sender: the credential with which a member posts an application message without
//! saying who it is.
//!
//! Every member device of a conversation derives the same Ed25519 key pair from the epoch's
//! MLS exporter ([`SEALED_SENDER_LABEL`], the conversation id as context). Nobody outside the
//! epoch can derive it, so a signature under it proves "a member of this conversation in this
//! epoch" and nothing more. The server learns the public half when a member registers it (an
//! authenticated request, once per epoch) and checks each sealed submission's signature
//! against it. The signed message binds the conversation, the epoch, the submission id (the
//! idempotency key) and a hash of the MLS message under a context string of its own, so a
//! signature is good for one submission only and can never be mistaken for another signature.

use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest as _, Sha256};
use tls_codec::{Serialize as _, TlsSerialize, TlsSize};
use zeroize::Zeroizing;

use crate::ConversationId;

/// MLS exporter label of the sealed-sender key.
pub const SEALED_SENDER_LABEL: &str = "nightjar sealed sender v1";

/// Context string that starts every signed sealed submission.
pub const SEALED_SUBMISSION_CONTEXT: &[u8] = b"nightjar sealed submission v1";

/// Length of the exporter secret the key is made from.
pub const SEALED_SECRET_LEN: usize = 32;

/// The sealed-sender key of one conversation epoch. The secret half is zeroized on drop and
/// never printed.
pub struct SealedKey {
    /// The epoch the key belongs to.
    pub epoch: u64,
    signing: SigningKey,
}

impl std::fmt::Debug for SealedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedKey")
            .field("epoch", &self.epoch)
            .field("public", &self.public())
            .finish_non_exhaustive()
    }
}

impl SealedKey {
    /// The key of `epoch` made from the exporter secret of that epoch. `None` if the secret
    /// is not [`SEALED_SECRET_LEN`] bytes.
    pub fn from_secret(epoch: u64, secret: &[u8]) -> Option<Self> {
        let seed: Zeroizing<[u8; SEALED_SECRET_LEN]> = Zeroizing::new(secret.try_into().ok()?);
        Some(Self {
            epoch,
            signing: SigningKey::from_bytes(&seed),
        })
    }

    /// The public half, as registered with the server.
    pub fn public(&self) -> [u8; 32] {
        self.signing.verifying_key().to_bytes()
    }

    /// Signs a submission.
    pub fn sign(&self, submission: &SealedSubmission<'_>) -> [u8; 64] {
        self.signing.sign(&submission.message()).to_bytes()
    }
}

/// One sealed application message as the server receives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedSubmission<'a> {
    /// The conversation.
    pub conversation: ConversationId,
    /// The epoch the message was made in (the key's epoch).
    pub epoch: u64,
    /// The submission id: a retry with the same id returns the first answer.
    pub submission_id: &'a str,
    /// The MLS message.
    pub payload: &'a [u8],
}

#[derive(TlsSerialize, TlsSize)]
struct Signed {
    context: Vec<u8>,
    conversation: [u8; 16],
    epoch: u64,
    submission_id: Vec<u8>,
    payload_hash: [u8; 32],
}

impl SealedSubmission<'_> {
    /// The exact bytes that are signed.
    pub fn message(&self) -> Vec<u8> {
        Signed {
            context: SEALED_SUBMISSION_CONTEXT.to_vec(),
            conversation: self.conversation.0,
            epoch: self.epoch,
            submission_id: self.submission_id.as_bytes().to_vec(),
            payload_hash: Sha256::digest(self.payload).into(),
        }
        .tls_serialize_detached()
        .unwrap_or_default()
    }

    /// Whether `signature` is this submission signed with the sealed key whose public half
    /// is `public`. Strict Ed25519 verification (no malleable or small-order forms).
    pub fn verify(&self, public: &[u8], signature: &[u8]) -> bool {
        sealed_public_key(public).is_some_and(|key| self.verify_with(&key, signature))
    }

    /// [`Self::verify`] with a key already decoded by [`sealed_public_key`] (a verifier that
    /// sees the same key again keeps it decoded).
    pub fn verify_with(&self, key: &VerifyingKey, signature: &[u8]) -> bool {
        let Ok(signature) = Signature::from_slice(signature) else {
            return false;
        };
        key.verify_strict(&self.message(), &signature).is_ok()
    }
}

/// Decodes a sealed-sender public key: `None` unless it is 32 bytes of a valid Ed25519 point
/// of large order.
pub fn sealed_public_key(public: &[u8]) -> Option<VerifyingKey> {
    let public = <[u8; 32]>::try_from(public).ok()?;
    let key = VerifyingKey::from_bytes(&public).ok()?;
    (!key.is_weak()).then_some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_binds_every_field() {
        let key = SealedKey::from_secret(4, &[9; 32]).unwrap();
        let public = key.public();
        let submission = SealedSubmission {
            conversation: ConversationId([1; 16]),
            epoch: 4,
            submission_id: "abc",
            payload: b"mls",
        };
        let signature = key.sign(&submission);
        assert!(submission.verify(&public, &signature));
        let others = [
            SealedSubmission {
                conversation: ConversationId([2; 16]),
                ..submission.clone()
            },
            SealedSubmission {
                epoch: 5,
                ..submission.clone()
            },
            SealedSubmission {
                submission_id: "abd",
                ..submission.clone()
            },
            SealedSubmission {
                payload: b"mlt",
                ..submission.clone()
            },
        ];
        for other in others {
            assert!(!other.verify(&public, &signature));
        }
        let stranger = SealedKey::from_secret(4, &[8; 32]).unwrap().public();
        assert!(!submission.verify(&stranger, &signature));
        assert!(!submission.verify(&public, &signature[..63]));
        assert!(!submission.verify(&public[..31], &signature));
    }

    proptest::proptest! {
        /// Whatever a stranger posts (key, signature, payload, id), verification answers
        /// without panicking, and only the signature of exactly that submission under that
        /// key passes.
        #[test]
        fn only_the_exact_submission_verifies(
            seed in proptest::array::uniform32(proptest::num::u8::ANY),
            key in proptest::collection::vec(proptest::num::u8::ANY, 0..40),
            signature in proptest::collection::vec(proptest::num::u8::ANY, 0..80),
            payload in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
            id in "[a-z0-9]{0,16}",
            epoch in proptest::num::u64::ANY,
        ) {
            let submission = SealedSubmission {
                conversation: ConversationId([3; 16]),
                epoch,
                submission_id: &id,
                payload: &payload,
            };
            let _ = submission.verify(&key, &signature);
            let _ = sealed_public_key(&key);
            let real = SealedKey::from_secret(epoch, &seed).unwrap();
            let signed = real.sign(&submission);
            proptest::prop_assert!(submission.verify(&real.public(), &signed));
            let other = SealedSubmission {
                epoch: epoch.wrapping_add(1),
                ..submission.clone()
            };
            proptest::prop_assert!(!other.verify(&real.public(), &signed));
            proptest::prop_assert!(!submission.verify(&key, &signed) || key == real.public());
        }
    }

    #[test]
    fn the_key_depends_only_on_the_secret_and_never_prints_it() {
        let a = SealedKey::from_secret(1, &[3; 32]).unwrap();
        let b = SealedKey::from_secret(1, &[3; 32]).unwrap();
        assert_eq!(a.public(), b.public());
        assert!(SealedKey::from_secret(1, &[3; 31]).is_none());
        let printed = format!("{a:?}");
        assert!(!printed.contains("signing"), "{printed}");
    }
}
