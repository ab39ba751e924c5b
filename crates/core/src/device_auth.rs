//! Proof that a device holds its own key, for signing in to the server.
//!
//! Device ids are public, so a password must never be enough to get a session on an existing
//! device. To sign in as one, the device signs a fresh server challenge with its MLS signature
//! key (Ed25519), the key the server knows from the account's signed device list. The signed
//! message binds the username, the device id, the login id and the challenge under a context
//! string of its own, so a proof is good for one login only and can never be mistaken for an
//! MLS signature.

use ed25519_dalek::{Signature, VerifyingKey};
use tls_codec::{Serialize as _, TlsSerialize, TlsSize};

use crate::identity::DeviceId;

/// Context string that starts every signed login proof.
pub const LOGIN_PROOF_CONTEXT: &[u8] = b"nightjar device login proof v1";

/// What a device signs to prove it holds its key for one login.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginProof<'a> {
    /// The account.
    pub username: &'a str,
    /// The device signing in.
    pub device_id: DeviceId,
    /// The server's id for this login attempt.
    pub login_id: &'a str,
    /// The server's fresh random challenge for this login attempt.
    pub challenge: &'a [u8],
}

#[derive(TlsSerialize, TlsSize)]
struct Signed {
    context: Vec<u8>,
    username: Vec<u8>,
    device_id: DeviceId,
    login_id: Vec<u8>,
    challenge: Vec<u8>,
}

impl LoginProof<'_> {
    /// The exact bytes that are signed.
    pub fn message(&self) -> Vec<u8> {
        Signed {
            context: LOGIN_PROOF_CONTEXT.to_vec(),
            username: self.username.as_bytes().to_vec(),
            device_id: self.device_id,
            login_id: self.login_id.as_bytes().to_vec(),
            challenge: self.challenge.to_vec(),
        }
        .tls_serialize_detached()
        .unwrap_or_default()
    }

    /// Whether `signature` is this proof signed by the device key `signature_key`. Strict
    /// Ed25519 verification (no malleable or small-order forms).
    pub fn verify(&self, signature_key: &[u8; 32], signature: &[u8]) -> bool {
        let Ok(key) = VerifyingKey::from_bytes(signature_key) else {
            return false;
        };
        let Ok(signature) = Signature::from_slice(signature) else {
            return false;
        };
        key.verify_strict(&self.message(), &signature).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::{Signer as _, SigningKey};

    use super::*;

    #[test]
    fn a_proof_binds_every_field() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let public = key.verifying_key().to_bytes();
        let proof = LoginProof {
            username: "alice",
            device_id: DeviceId(1),
            login_id: "login",
            challenge: &[1; 32],
        };
        let signature = key.sign(&proof.message()).to_bytes();
        assert!(proof.verify(&public, &signature));
        let others = [
            LoginProof {
                username: "mallory",
                ..proof.clone()
            },
            LoginProof {
                device_id: DeviceId(2),
                ..proof.clone()
            },
            LoginProof {
                login_id: "other",
                ..proof.clone()
            },
            LoginProof {
                challenge: &[2; 32],
                ..proof.clone()
            },
        ];
        for other in others {
            assert!(!other.verify(&public, &signature));
        }
        let stranger = SigningKey::from_bytes(&[8; 32]).verifying_key().to_bytes();
        assert!(!proof.verify(&stranger, &signature));
        assert!(!proof.verify(&public, &signature[..63]));
    }
}
