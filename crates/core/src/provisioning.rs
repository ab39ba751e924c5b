//! Linking a new device to an account, end-to-end encrypted.
//!
//! 1. The new device makes a [`LinkOffer`]: its device entry (id and MLS signature key) and a
//!    fresh X25519 public key, and shows the offer's [`LinkOffer::code`] to the user.
//! 2. The server relays the offer to the account's existing devices. On one of them the user
//!    types the code; the device recomputes the code from the offer it received, so a server
//!    that swapped the offer's keys is caught, then signs a device list that includes the new
//!    device and seals the account identity key and that list to the offer's X25519 key
//!    (X25519 → HKDF-SHA256 → ChaCha20-Poly1305, bound to the offer).
//! 3. The new device opens the sealed bundle with its X25519 secret.
//!
//! The server only ever sees public keys and ciphertext.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use hkdf::Hkdf;
use sha2::{Digest, Sha256};
use tls_codec::{Deserialize as _, Serialize as _, TlsDeserialize, TlsSerialize, TlsSize};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::Zeroizing;

use crate::identity::{AccountIdentity, DeviceEntry, IdentityError, SignedDeviceList};

// Crockford base32: no I, L, O or U to misread.
const CODE_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
const SEAL_INFO: &[u8] = b"nightjar device link v1";

/// What a new device publishes to ask for approval. Public data only.
#[derive(Clone, Debug, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct LinkOffer {
    /// The account the device wants to join.
    pub username: Vec<u8>,
    /// The new device's id and MLS signature key.
    pub device: DeviceEntry,
    /// The new device's one-time X25519 public key for receiving the account identity key.
    pub link_key: [u8; 32],
}

impl LinkOffer {
    /// Canonical encoding.
    pub fn encode(&self) -> Vec<u8> {
        self.tls_serialize_detached().unwrap_or_default()
    }

    /// Decodes untrusted bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, IdentityError> {
        let mut rest = bytes;
        let offer = Self::tls_deserialize(&mut rest).map_err(|_| IdentityError::Malformed)?;
        if !rest.is_empty() {
            return Err(IdentityError::Malformed);
        }
        Ok(offer)
    }

    /// The approval code: 60 bits of SHA-256 over the whole offer, as `XXXX-XXXX-XXXX` in an
    /// unambiguous alphabet. Finding a different offer with the same code takes ~2^60 work.
    pub fn code(&self) -> String {
        let digest = Sha256::new()
            .chain_update(b"nightjar link code v1\0")
            .chain_update(self.encode())
            .finalize();
        let mut bits = u64::from_be_bytes([
            digest[0], digest[1], digest[2], digest[3], digest[4], digest[5], digest[6], digest[7],
        ]) >> 4;
        let mut chars = Vec::with_capacity(14);
        for i in 0..12 {
            if i > 0 && i % 4 == 0 {
                chars.push(b'-');
            }
            chars.push(CODE_ALPHABET[(bits & 31) as usize]);
            bits >>= 5;
        }
        String::from_utf8(chars).unwrap_or_default()
    }

    /// Whether `typed` (any case, dashes and spaces optional) is this offer's code.
    pub fn matches_code(&self, typed: &str) -> bool {
        let normalise = |s: &str| -> String {
            s.chars()
                .filter(|c| c.is_ascii_alphanumeric())
                .map(|c| c.to_ascii_uppercase())
                .collect()
        };
        normalise(typed) == normalise(&self.code())
    }
}

/// The new device's secret half of a link; wiped on drop.
pub struct LinkSecret(StaticSecret);

impl LinkSecret {
    /// A fresh secret from the operating system's generator.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut bytes[..])?;
        Ok(Self(StaticSecret::from(*bytes)))
    }

    /// Restores from stored bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(StaticSecret::from(bytes))
    }

    /// The secret bytes, for the device's (encrypted) store.
    pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.0.to_bytes())
    }

    /// The public key to put in the offer.
    pub fn public(&self) -> [u8; 32] {
        PublicKey::from(&self.0).to_bytes()
    }

    /// Opens a sealed identity for `offer` (which must carry this secret's public key).
    pub fn open(
        &self,
        offer: &LinkOffer,
        sealed: &[u8],
    ) -> Result<(AccountIdentity, SignedDeviceList), IdentityError> {
        let (sender, ciphertext) = sealed
            .split_first_chunk::<32>()
            .ok_or(IdentityError::Malformed)?;
        let shared = self.0.diffie_hellman(&PublicKey::from(*sender));
        let key = seal_key(shared.as_bytes(), sender, &offer.link_key)?;
        let plain = Zeroizing::new(
            ChaCha20Poly1305::new(key.as_ref().into())
                .decrypt(
                    Nonce::from_slice(&[0; 12]),
                    Payload {
                        msg: ciphertext,
                        aad: &offer.encode(),
                    },
                )
                .map_err(|_| IdentityError::BadSignature)?,
        );
        let (secret, list) = plain
            .split_first_chunk::<32>()
            .ok_or(IdentityError::Malformed)?;
        Ok((
            AccountIdentity::from_secret_bytes(secret),
            SignedDeviceList::decode(list)?,
        ))
    }
}

impl std::fmt::Debug for LinkSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkSecret(<redacted>)")
    }
}

fn seal_key(
    shared: &[u8; 32],
    sender: &[u8; 32],
    recipient: &[u8; 32],
) -> Result<Zeroizing<[u8; 32]>, IdentityError> {
    let salt = [sender.as_slice(), recipient.as_slice()].concat();
    let mut key = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(&salt), shared)
        .expand(SEAL_INFO, &mut key[..])
        .map_err(|_| IdentityError::Malformed)?;
    Ok(key)
}

/// Seals the account identity key and the new device list to the device that made `offer`.
pub fn seal_identity(
    offer: &LinkOffer,
    identity: &AccountIdentity,
    list: &SignedDeviceList,
) -> Result<Vec<u8>, crate::Error> {
    let ephemeral = LinkSecret::generate()?;
    let sender = ephemeral.public();
    let shared = ephemeral.0.diffie_hellman(&PublicKey::from(offer.link_key));
    if !shared.was_contributory() {
        return Err(IdentityError::Malformed.into());
    }
    let key = seal_key(shared.as_bytes(), &sender, &offer.link_key)?;
    let mut plain = Zeroizing::new(identity.secret_bytes().to_vec());
    plain.extend_from_slice(&list.encode());
    let ciphertext = ChaCha20Poly1305::new(key.as_ref().into())
        .encrypt(
            Nonce::from_slice(&[0; 12]),
            Payload {
                msg: &plain,
                aad: &offer.encode(),
            },
        )
        .map_err(|_| crate::Error::State("sealing failed"))?;
    Ok([sender.as_slice(), &ciphertext].concat())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{DeviceId, DeviceList};

    fn offer(secret: &LinkSecret) -> LinkOffer {
        LinkOffer {
            username: b"alice".to_vec(),
            device: DeviceEntry {
                device_id: DeviceId(2),
                signature_key: [5; 32],
                added_at_ms: 0,
            },
            link_key: secret.public(),
        }
    }

    #[test]
    fn seal_and_open() {
        let secret = LinkSecret::generate().unwrap();
        let offer = offer(&secret);
        let identity = AccountIdentity::generate().unwrap();
        let list = identity
            .sign(&DeviceList {
                username: b"alice".to_vec(),
                identity_key: identity.public(),
                version: 2,
                devices: vec![offer.device.clone()],
            })
            .unwrap();
        let sealed = seal_identity(&offer, &identity, &list).unwrap();
        let (got, got_list) = secret.open(&offer, &sealed).unwrap();
        assert_eq!(got.public(), identity.public());
        assert_eq!(got_list, list);
        // Another device's secret, or a swapped offer, cannot open it.
        let other = LinkSecret::generate().unwrap();
        assert!(other.open(&offer, &sealed).is_err());
        let mut swapped = offer.clone();
        swapped.device.signature_key = [6; 32];
        assert!(secret.open(&swapped, &sealed).is_err());
        assert!(secret.open(&offer, &sealed[..40]).is_err());
    }

    #[test]
    fn code_binds_the_offer() {
        let secret = LinkSecret::generate().unwrap();
        let offer = offer(&secret);
        let code = offer.code();
        assert_eq!(code.len(), 14);
        assert!(offer.matches_code(&code.to_lowercase().replace('-', " ")));
        let mut swapped = offer.clone();
        swapped.link_key = LinkSecret::generate().unwrap().public();
        assert!(!swapped.matches_code(&code));
        assert_eq!(LinkOffer::decode(&offer.encode()).unwrap(), offer);
    }
}
