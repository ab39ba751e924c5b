//! Account identities, device identifiers and signed device lists.
//!
//! Each account has one *account identity key* (Ed25519), held only by the account's own
//! devices. It signs the account's [`DeviceList`]: the set of devices, each with its MLS
//! signature key, that may speak for the account. Peers accept a device into a conversation only
//! if it appears in a device list signed by the account identity key they have pinned, so a
//! server that injects a device of its own is detected.

use std::fmt;

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use tls_codec::{Deserialize as _, Serialize as _, TlsDeserialize, TlsSerialize, TlsSize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Why an identity, username or device list was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdentityError {
    /// A username must be 3–32 characters of `a-z`, `0-9` and `_`.
    #[error("invalid username: use 3-32 characters of a-z, 0-9 and _")]
    InvalidUsername,
    /// Bytes that should hold a key, credential or device list could not be decoded.
    #[error("malformed identity data")]
    Malformed,
    /// A signature did not verify under the expected key.
    #[error("bad signature on device list")]
    BadSignature,
    /// The device list names a different account than expected.
    #[error("device list is for another account")]
    WrongAccount,
    /// The device list is older than one already accepted (a rollback attempt).
    #[error("device list version {offered} is older than accepted version {accepted}")]
    Rollback {
        /// Version offered.
        offered: u64,
        /// Version already accepted.
        accepted: u64,
    },
    /// Same version as the accepted list but different contents: the signer equivocated.
    #[error("device list version {0} conflicts with the accepted list of the same version")]
    Equivocation(u64),
    /// The account's identity key differs from the pinned one; the user must confirm it.
    #[error("identity key of {0} changed; verify the safety number before trusting it")]
    IdentityChanged(String),
    /// A device list may hold at most [`MAX_DEVICES`] devices, each once.
    #[error("device list has too many or duplicate devices")]
    BadDeviceSet,
    /// A link offer or sealed bundle does not carry the approval code the user typed or was
    /// shown: someone (the server) swapped it, or the code was mistyped.
    #[error("the approval code does not match this device link")]
    WrongLinkCode,
}

/// Upper bound on devices per account, which bounds the size of every conversation.
pub const MAX_DEVICES: usize = 16;

/// Checks that `name` is a valid Nightjar username (3–32 of `a-z 0-9 _`).
pub fn validate_username(name: &str) -> Result<(), IdentityError> {
    let ok = (3..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(IdentityError::InvalidUsername)
    }
}

/// A device identifier, unique within its account; shown as 16 hex digits.
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    TlsSerialize,
    TlsDeserialize,
    TlsSize,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct DeviceId(pub u64);

impl DeviceId {
    /// Parses the 16-hex-digit form produced by `Display`.
    pub fn parse(s: &str) -> Option<Self> {
        // Only the canonical form: exactly 16 lowercase hex digits (no sign, no upper case).
        if s.len() != 16 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        u64::from_str_radix(s, 16).ok().map(DeviceId)
    }

    /// Draws a random device id from the operating system's generator.
    pub fn random() -> Result<Self, getrandom::Error> {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b)?;
        Ok(DeviceId(u64::from_be_bytes(b)))
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({self})")
    }
}

/// An account identity public key (Ed25519), the root of trust for an account's devices.
#[derive(Clone, Copy, PartialEq, Eq, Hash, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct IdentityKey(pub [u8; 32]);

impl IdentityKey {
    /// The raw 32 public key bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn verifying_key(&self) -> Result<VerifyingKey, IdentityError> {
        VerifyingKey::from_bytes(&self.0).map_err(|_| IdentityError::Malformed)
    }
}

impl fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentityKey(")?;
        for b in &self.0[..8] {
            write!(f, "{b:02x}")?;
        }
        write!(f, "…)")
    }
}

/// The secret account identity key. Never printed; wiped on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub struct AccountIdentity {
    secret: Box<[u8; 32]>,
}

impl AccountIdentity {
    /// Generates a fresh identity from the operating system's generator.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut secret = Box::new([0u8; 32]);
        getrandom::fill(&mut secret[..])?;
        Ok(Self { secret })
    }

    /// Restores an identity from its 32 secret bytes (as moved to a newly approved device).
    pub fn from_secret_bytes(bytes: &[u8; 32]) -> Self {
        Self {
            secret: Box::new(*bytes),
        }
    }

    /// The 32 secret bytes, for encrypted transfer to another of the account's devices.
    pub fn secret_bytes(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(*self.secret)
    }

    /// The public half that peers pin and key transparency publishes.
    pub fn public(&self) -> IdentityKey {
        IdentityKey(self.signing_key().verifying_key().to_bytes())
    }

    fn signing_key(&self) -> SigningKey {
        SigningKey::from_bytes(&self.secret)
    }

    /// Signs `list`, which must name this identity's public key.
    pub fn sign(&self, list: &DeviceList) -> Result<SignedDeviceList, IdentityError> {
        if list.identity_key != self.public() {
            return Err(IdentityError::WrongAccount);
        }
        list.check_devices()?;
        let body = list
            .tls_serialize_detached()
            .map_err(|_| IdentityError::Malformed)?;
        let signature = self.signing_key().sign(&signed_payload(&body));
        Ok(SignedDeviceList {
            body,
            signature: signature.to_bytes().to_vec(),
        })
    }
}

impl fmt::Debug for AccountIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccountIdentity")
            .field("public", &self.public())
            .finish_non_exhaustive()
    }
}

/// One device allowed to speak for an account.
#[derive(Clone, Debug, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct DeviceEntry {
    /// The device's identifier.
    pub device_id: DeviceId,
    /// The device's MLS signature public key (Ed25519).
    pub signature_key: [u8; 32],
    /// Milliseconds since the Unix epoch when the device was added.
    pub added_at_ms: u64,
}

/// The set of devices of one account at one version.
#[derive(Clone, Debug, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct DeviceList {
    /// The account's username.
    pub username: Vec<u8>,
    /// The account identity key that signs this list.
    pub identity_key: IdentityKey,
    /// Monotonic version; every change increments it.
    pub version: u64,
    /// The devices, at most [`MAX_DEVICES`], each id once.
    pub devices: Vec<DeviceEntry>,
}

impl DeviceList {
    /// The username as text; it was validated when the list was built or verified.
    pub fn username(&self) -> &str {
        std::str::from_utf8(&self.username).unwrap_or("")
    }

    /// Finds the entry for `device_id`.
    pub fn device(&self, device_id: DeviceId) -> Option<&DeviceEntry> {
        self.devices.iter().find(|d| d.device_id == device_id)
    }

    /// Whether `device_id` with exactly `signature_key` is listed.
    pub fn allows(&self, device_id: DeviceId, signature_key: &[u8]) -> bool {
        self.device(device_id)
            .is_some_and(|d| d.signature_key.as_slice() == signature_key)
    }

    fn check_devices(&self) -> Result<(), IdentityError> {
        validate_username(self.username())?;
        if self.devices.len() > MAX_DEVICES {
            return Err(IdentityError::BadDeviceSet);
        }
        for (i, d) in self.devices.iter().enumerate() {
            if self.devices[..i].iter().any(|e| e.device_id == d.device_id) {
                return Err(IdentityError::BadDeviceSet);
            }
        }
        Ok(())
    }
}

/// A device list with the account identity key's signature over it, as published and fetched.
#[derive(Clone, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct SignedDeviceList {
    body: Vec<u8>,
    signature: Vec<u8>,
}

const DEVICE_LIST_CONTEXT: &[u8] = b"nightjar device list v1\0";

fn signed_payload(body: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(DEVICE_LIST_CONTEXT.len() + body.len());
    p.extend_from_slice(DEVICE_LIST_CONTEXT);
    p.extend_from_slice(body);
    p
}

impl SignedDeviceList {
    /// Upper bound on an encoded signed list; larger input is refused before parsing.
    pub const MAX_BYTES: usize = 4096;

    /// Decodes an untrusted encoding; does not verify the signature (see [`Self::verify`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, IdentityError> {
        if bytes.len() > Self::MAX_BYTES {
            return Err(IdentityError::Malformed);
        }
        let mut rest = bytes;
        let list = Self::tls_deserialize(&mut rest).map_err(|_| IdentityError::Malformed)?;
        if !rest.is_empty() {
            return Err(IdentityError::Malformed);
        }
        Ok(list)
    }

    /// The canonical encoding; `decode(encode(x)) == x`.
    pub fn encode(&self) -> Vec<u8> {
        self.tls_serialize_detached().unwrap_or_default()
    }

    /// Verifies the signature under the identity key the list names and returns the list.
    ///
    /// The caller must still check that the named identity key is the one it trusts for the
    /// account (pinned, or proven by key transparency); the engine's directory does that.
    pub fn verify(&self) -> Result<DeviceList, IdentityError> {
        let mut rest = self.body.as_slice();
        let list = DeviceList::tls_deserialize(&mut rest).map_err(|_| IdentityError::Malformed)?;
        if !rest.is_empty() {
            return Err(IdentityError::Malformed);
        }
        list.check_devices()?;
        let signature =
            Signature::from_slice(&self.signature).map_err(|_| IdentityError::BadSignature)?;
        list.identity_key
            .verifying_key()?
            .verify(&signed_payload(&self.body), &signature)
            .map_err(|_| IdentityError::BadSignature)?;
        Ok(list)
    }
}

impl fmt::Debug for SignedDeviceList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SignedDeviceList")
            .field("bytes", &self.body.len())
            .finish_non_exhaustive()
    }
}

/// The leaf credential of a device: which account and which device it is.
#[derive(
    Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct DeviceCredential {
    /// The account's username.
    pub username: String,
    /// The device within the account.
    pub device_id: DeviceId,
}

impl DeviceCredential {
    /// The identity bytes put in the MLS basic credential: `username ":" device-id-hex`.
    pub fn to_identity(&self) -> Vec<u8> {
        format!("{}:{}", self.username, self.device_id).into_bytes()
    }

    /// Parses identity bytes from an MLS basic credential.
    pub fn from_identity(bytes: &[u8]) -> Result<Self, IdentityError> {
        let text = std::str::from_utf8(bytes).map_err(|_| IdentityError::Malformed)?;
        let (username, device) = text.split_once(':').ok_or(IdentityError::Malformed)?;
        validate_username(username)?;
        let device_id = DeviceId::parse(device).ok_or(IdentityError::Malformed)?;
        Ok(Self {
            username: username.to_owned(),
            device_id,
        })
    }
}

impl fmt::Display for DeviceCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.username, self.device_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(identity: &AccountIdentity, version: u64) -> DeviceList {
        DeviceList {
            username: b"alice".to_vec(),
            identity_key: identity.public(),
            version,
            devices: vec![DeviceEntry {
                device_id: DeviceId(7),
                signature_key: [1; 32],
                added_at_ms: 5,
            }],
        }
    }

    #[test]
    fn usernames() {
        for ok in ["abc", "alice_01", &"a".repeat(32)] {
            assert!(validate_username(ok).is_ok(), "{ok}");
        }
        for bad in [
            "ab",
            "Alice",
            "al ice",
            "al-ice",
            &"a".repeat(33),
            "ålice",
            "",
        ] {
            assert!(validate_username(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn signed_list_round_trip_and_verify() {
        let id = AccountIdentity::generate().unwrap();
        let signed = id.sign(&list(&id, 1)).unwrap();
        let decoded = SignedDeviceList::decode(&signed.encode()).unwrap();
        assert_eq!(decoded.verify().unwrap(), list(&id, 1));
    }

    #[test]
    fn tampered_list_fails() {
        let id = AccountIdentity::generate().unwrap();
        let mut bytes = id.sign(&list(&id, 1)).unwrap().encode();
        for i in 0..bytes.len() {
            bytes[i] ^= 1;
            if let Ok(l) = SignedDeviceList::decode(&bytes) {
                assert!(l.verify().is_err(), "flip at {i} accepted");
            }
            bytes[i] ^= 1;
        }
    }

    #[test]
    fn cannot_sign_for_another_key() {
        let id = AccountIdentity::generate().unwrap();
        let other = AccountIdentity::generate().unwrap();
        assert_eq!(
            other.sign(&list(&id, 1)).unwrap_err(),
            IdentityError::WrongAccount
        );
    }

    #[test]
    fn duplicate_devices_refused() {
        let id = AccountIdentity::generate().unwrap();
        let mut l = list(&id, 1);
        l.devices.push(l.devices[0].clone());
        assert_eq!(id.sign(&l).unwrap_err(), IdentityError::BadDeviceSet);
    }

    #[test]
    fn credential_round_trip() {
        let c = DeviceCredential {
            username: "bob".into(),
            device_id: DeviceId(0xabc),
        };
        assert_eq!(c.to_identity(), b"bob:0000000000000abc");
        assert_eq!(
            DeviceCredential::from_identity(&c.to_identity()).unwrap(),
            c
        );
        assert!(DeviceCredential::from_identity(b"bob:12").is_err());
        assert!(DeviceCredential::from_identity(b"bob:+000000000000abc").is_err());
        assert!(DeviceCredential::from_identity(b"bob:0000000000000ABC").is_err());
        assert!(DeviceCredential::from_identity(b"B:0000000000000abc").is_err());
    }

    #[test]
    fn debug_hides_secret() {
        let id = AccountIdentity::from_secret_bytes(&[0x42; 32]);
        let text = format!("{id:?}");
        assert!(!text.contains("4242"), "{text}");
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn decode_never_panics_and_is_canonical(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
                if let Ok(list) = SignedDeviceList::decode(&bytes) {
                    prop_assert_eq!(list.encode(), bytes);
                    let _ = list.verify();
                }
            }

            #[test]
            fn credential_parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
                if let Ok(c) = DeviceCredential::from_identity(&bytes) {
                    prop_assert_eq!(c.to_identity(), bytes);
                }
            }

            #[test]
            fn credential_round_trip(name in "[a-z0-9_]{3,32}", id in any::<u64>()) {
                let c = DeviceCredential { username: name, device_id: DeviceId(id) };
                prop_assert_eq!(DeviceCredential::from_identity(&c.to_identity()).unwrap(), c);
            }

            #[test]
            fn signed_lists_round_trip(version in any::<u64>(), n in 0usize..=MAX_DEVICES) {
                let id = AccountIdentity::from_secret_bytes(&[9; 32]);
                let l = DeviceList {
                    username: b"someone".to_vec(),
                    identity_key: id.public(),
                    version,
                    devices: (0..n as u64)
                        .map(|i| DeviceEntry { device_id: DeviceId(i), signature_key: [i as u8; 32], added_at_ms: i })
                        .collect(),
                };
                let signed = id.sign(&l).unwrap();
                prop_assert_eq!(SignedDeviceList::decode(&signed.encode()).unwrap().verify().unwrap(), l);
            }
        }
    }
}
