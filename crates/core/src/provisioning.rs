//! Linking a new device to an account, end-to-end encrypted and authenticated both ways.
//!
//! 1. The new device draws a [`LinkCode`] (100 random bits, shown to the user as
//!    `XXXXX-XXXXX-XXXXX-XXXXX` in an unambiguous alphabet, or as a QR code) and makes a
//!    [`LinkOffer`]: its device entry (id and MLS signature key), a fresh X25519 public key, and
//!    a MAC over both under a key derived from the code. The code itself never leaves the device
//!    except through the user's eyes and fingers.
//! 2. The server relays the offer to the account's existing devices. On one of them the user
//!    types the code; the device checks the offer's MAC under it, so a server that swapped the
//!    offer's device key or link key is caught (it cannot recompute the MAC without the code).
//!    The device then signs a device list that includes the new device and seals a [`LinkBundle`]
//!    (the account identity key, that list, the account's pinned contacts with their
//!    verification marks and, if the user wants history on the new device, the pointer to the
//!    encrypted history archive it uploaded) to the offer's X25519 key, under a key that mixes the X25519 shared
//!    secret with the code (X25519 ‖ code → HKDF-SHA256 → ChaCha20-Poly1305, bound to the offer).
//! 3. The new device opens the bundle with its X25519 secret *and* the code. A bundle the server
//!    sealed (it knows the offer's public key, but not the code) does not open, so the server
//!    cannot make the new device pin an account identity of its own.
//!
//! The server only ever sees public keys, a MAC and ciphertext.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use hkdf::Hkdf;
use sha2::Sha256;
use tls_codec::{Deserialize as _, Serialize as _, TlsDeserialize, TlsSerialize, TlsSize};
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize as _, Zeroizing};

use crate::content::AttachmentPointer;
use crate::identity::{AccountIdentity, DeviceEntry, IdentityError, SignedDeviceList};

// Crockford base32: no I, L, O or U to misread.
const CODE_ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// Characters in a link code: 20 × 5 bits = 100 bits.
const CODE_CHARS: usize = 20;
/// Characters per dash-separated group when shown.
const CODE_GROUP: usize = 5;
const CODE_SALT: &[u8] = b"nightjar link code v2";
const MAC_INFO: &[u8] = b"nightjar link offer mac v2";
const SEAL_CODE_INFO: &[u8] = b"nightjar link seal code v2";
const SEAL_INFO: &[u8] = b"nightjar device link v2";

/// The secret half of a device link that only the user carries from one screen to the other:
/// 100 random bits. The server never sees it. Wiped on drop, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct LinkCode(Zeroizing<[u8; CODE_CHARS]>);

impl LinkCode {
    /// Bits of entropy in a code.
    pub const BITS: u32 = 5 * CODE_CHARS as u32;

    /// A fresh code from the operating system's generator.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut random = Zeroizing::new([0u8; CODE_CHARS]);
        getrandom::fill(&mut random[..])?;
        let mut chars = Zeroizing::new([0u8; CODE_CHARS]);
        for (c, r) in chars.iter_mut().zip(random.iter()) {
            *c = CODE_ALPHABET[usize::from(r & 31)];
        }
        Ok(Self(chars))
    }

    /// Parses a code as typed: any case, dashes and spaces optional, and the Crockford
    /// look-alikes `I`/`L` (read as `1`) and `O` (read as `0`) forgiven.
    pub fn parse(typed: &str) -> Option<Self> {
        let mut chars = Zeroizing::new([0u8; CODE_CHARS]);
        let mut n = 0;
        for c in typed.chars() {
            if c == '-' || c.is_whitespace() {
                continue;
            }
            let c = match c.to_ascii_uppercase() {
                'I' | 'L' => '1',
                'O' => '0',
                other => other,
            };
            let byte = u8::try_from(c).ok()?;
            if !CODE_ALPHABET.contains(&byte) || n == CODE_CHARS {
                return None;
            }
            chars[n] = byte;
            n += 1;
        }
        (n == CODE_CHARS).then_some(Self(chars))
    }

    /// The code for display: `XXXXX-XXXXX-XXXXX-XXXXX`.
    pub fn display(&self) -> Zeroizing<String> {
        let mut out = Zeroizing::new(String::with_capacity(CODE_CHARS + 3));
        for (i, c) in self.0.iter().enumerate() {
            if i > 0 && i % CODE_GROUP == 0 {
                out.push('-');
            }
            out.push(char::from(*c));
        }
        out
    }

    /// The canonical bytes, for the device's (encrypted) store.
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.0.to_vec())
    }

    /// Restores a code from [`Self::to_bytes`].
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        std::str::from_utf8(bytes).ok().and_then(Self::parse)
    }

    /// A key for `info`, derived from the code and bound to the offer's link key (so no work
    /// spent on one offer helps against another).
    fn derive(
        &self,
        link_key: &[u8; 32],
        info: &[u8],
    ) -> Result<Zeroizing<[u8; 32]>, IdentityError> {
        let salt = [CODE_SALT, link_key.as_slice()].concat();
        let mut key = Zeroizing::new([0u8; 32]);
        Hkdf::<Sha256>::new(Some(&salt), &self.0[..])
            .expand(info, &mut key[..])
            .map_err(|_| IdentityError::Malformed)?;
        Ok(key)
    }
}

impl std::fmt::Debug for LinkCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkCode(<redacted>)")
    }
}

/// The public part of an offer, which the MAC covers.
#[derive(TlsSerialize, TlsSize)]
struct OfferBody {
    username: Vec<u8>,
    device: DeviceEntry,
    link_key: [u8; 32],
}

/// What a new device publishes to ask for approval. Public data only, authenticated by the
/// [`LinkCode`] the user carries over.
#[derive(Clone, Debug, PartialEq, Eq, TlsSerialize, TlsDeserialize, TlsSize)]
pub struct LinkOffer {
    /// The account the device wants to join.
    pub username: Vec<u8>,
    /// The new device's id and MLS signature key.
    pub device: DeviceEntry,
    /// The new device's one-time X25519 public key for receiving the account identity key.
    pub link_key: [u8; 32],
    /// HMAC-SHA256 over the fields above under a key derived from the link code.
    pub mac: [u8; 32],
}

impl LinkOffer {
    /// Builds the offer for `device` and `link_key`, authenticated under `code`.
    pub fn new(
        username: Vec<u8>,
        device: DeviceEntry,
        link_key: [u8; 32],
        code: &LinkCode,
    ) -> Result<Self, IdentityError> {
        let mut offer = Self {
            username,
            device,
            link_key,
            mac: [0; 32],
        };
        offer.mac = offer.expected_mac(code)?;
        Ok(offer)
    }

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

    fn expected_mac(&self, code: &LinkCode) -> Result<[u8; 32], IdentityError> {
        let body = OfferBody {
            username: self.username.clone(),
            device: self.device.clone(),
            link_key: self.link_key,
        }
        .tls_serialize_detached()
        .map_err(|_| IdentityError::Malformed)?;
        let key = code.derive(&self.link_key, MAC_INFO)?;
        // HKDF-Extract(salt = key, ikm = body) is HMAC-SHA256(key, body).
        let (mac, _) = Hkdf::<Sha256>::extract(Some(&key[..]), &body);
        Ok(mac.into())
    }

    /// Whether this offer was made by the device showing `code` (constant time in the MAC).
    /// A server that changed any field of the offer cannot make this hold.
    pub fn verify_code(&self, code: &LinkCode) -> bool {
        let Ok(expected) = self.expected_mac(code) else {
            return false;
        };
        expected
            .iter()
            .zip(self.mac.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }

    /// Whether `typed` parses as a code and [`Self::verify_code`] holds for it.
    pub fn matches_code(&self, typed: &str) -> bool {
        LinkCode::parse(typed).is_some_and(|code| self.verify_code(&code))
    }
}

/// A contact the approving device has pinned, handed to the new device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkedContact {
    /// The contact's username.
    pub username: String,
    /// Its latest signed device list, which carries the pinned identity key.
    pub device_list: SignedDeviceList,
    /// Whether the user verified this identity key (compared safety numbers).
    pub verified: bool,
}

#[derive(Debug, TlsSerialize, TlsDeserialize, TlsSize)]
struct ContactWire {
    username: Vec<u8>,
    device_list: Vec<u8>,
    verified: u8,
}

/// Everything after the identity secret in a sealed bundle.
#[derive(TlsSerialize, TlsDeserialize, TlsSize)]
struct BundleTail {
    own_list: Vec<u8>,
    contacts: Vec<ContactWire>,
    /// The encoded [`AttachmentPointer`] of the history archive; empty when none.
    history: Vec<u8>,
}

impl Drop for BundleTail {
    fn drop(&mut self) {
        // The history pointer carries the archive's key.
        self.history.zeroize();
    }
}

/// What the approving device hands to the new one: the account identity key, the account's
/// new signed device list, and what the account trusts.
pub struct LinkBundle {
    /// The account identity key.
    pub identity: AccountIdentity,
    /// The account's device list naming the new device.
    pub own_list: SignedDeviceList,
    /// The approving device's pinned contacts and verification marks.
    pub contacts: Vec<LinkedContact>,
    /// Where the approving device uploaded the account's recent history for the new device,
    /// encrypted under the pointer's key (which only this bundle carries).
    pub history: Option<AttachmentPointer>,
}

impl std::fmt::Debug for LinkBundle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkBundle")
            .field("identity", &self.identity.public())
            .field("contacts", &self.contacts.len())
            .field("history", &self.history.is_some())
            .finish_non_exhaustive()
    }
}

/// What the new device got from a completed link, besides the account identity it installed.
#[derive(Debug)]
pub struct LinkCompleted {
    /// The contacts it pinned, with their verification marks.
    pub contacts: Vec<LinkedContact>,
    /// The history archive to fetch, if the approving device uploaded one.
    pub history: Option<AttachmentPointer>,
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

    /// Opens a sealed bundle for `offer` (which must carry this secret's public key) with the
    /// `code` this device showed. A bundle sealed without the code is refused with
    /// [`IdentityError::WrongLinkCode`].
    pub fn open(
        &self,
        offer: &LinkOffer,
        code: &LinkCode,
        sealed: &[u8],
    ) -> Result<LinkBundle, IdentityError> {
        if offer.link_key != self.public() || !offer.verify_code(code) {
            return Err(IdentityError::WrongLinkCode);
        }
        let (sender, ciphertext) = sealed
            .split_first_chunk::<32>()
            .ok_or(IdentityError::Malformed)?;
        let shared = self.0.diffie_hellman(&PublicKey::from(*sender));
        let key = seal_key(shared.as_bytes(), sender, offer, code)?;
        let plain = Zeroizing::new(
            ChaCha20Poly1305::new(key.as_ref().into())
                .decrypt(
                    Nonce::from_slice(&[0; 12]),
                    Payload {
                        msg: ciphertext,
                        aad: &offer.encode(),
                    },
                )
                .map_err(|_| IdentityError::WrongLinkCode)?,
        );
        let (secret, tail) = plain
            .split_first_chunk::<32>()
            .ok_or(IdentityError::Malformed)?;
        let mut rest = tail;
        let mut tail =
            BundleTail::tls_deserialize(&mut rest).map_err(|_| IdentityError::Malformed)?;
        if !rest.is_empty() {
            return Err(IdentityError::Malformed);
        }
        let contacts = std::mem::take(&mut tail.contacts)
            .into_iter()
            .map(|c| {
                Ok(LinkedContact {
                    username: String::from_utf8(c.username)
                        .map_err(|_| IdentityError::Malformed)?,
                    device_list: SignedDeviceList::decode(&c.device_list)?,
                    verified: c.verified == 1,
                })
            })
            .collect::<Result<Vec<_>, IdentityError>>()?;
        let history = if tail.history.is_empty() {
            None
        } else {
            Some(AttachmentPointer::decode(&tail.history).map_err(|_| IdentityError::Malformed)?)
        };
        Ok(LinkBundle {
            identity: AccountIdentity::from_secret_bytes(secret),
            own_list: SignedDeviceList::decode(&tail.own_list)?,
            contacts,
            history,
        })
    }
}

impl std::fmt::Debug for LinkSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkSecret(<redacted>)")
    }
}

/// The sealing key: the X25519 shared secret *and* a key derived from the link code, so that
/// knowing the offer's public key (as the server does) is not enough to seal or open.
fn seal_key(
    shared: &[u8; 32],
    sender: &[u8; 32],
    offer: &LinkOffer,
    code: &LinkCode,
) -> Result<Zeroizing<[u8; 32]>, IdentityError> {
    let salt = [sender.as_slice(), offer.link_key.as_slice()].concat();
    let code_key = code.derive(&offer.link_key, SEAL_CODE_INFO)?;
    let mut ikm = Zeroizing::new([0u8; 64]);
    ikm[..32].copy_from_slice(shared);
    ikm[32..].copy_from_slice(&code_key[..]);
    let mut key = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(&salt), &ikm[..])
        .expand(SEAL_INFO, &mut key[..])
        .map_err(|_| IdentityError::Malformed)?;
    Ok(key)
}

/// What the approving device seals for the new one, besides the account identity key.
#[derive(Clone, Copy, Debug)]
pub struct BundleContents<'a> {
    /// The account's device list naming the new device.
    pub own_list: &'a SignedDeviceList,
    /// The approving device's pinned contacts.
    pub contacts: &'a [LinkedContact],
    /// The history archive's pointer, if one was uploaded.
    pub history: Option<&'a AttachmentPointer>,
}

/// Seals `bundle` to the device that made `offer`, after checking the offer against the `code`
/// the user typed (a swapped offer is refused with [`IdentityError::WrongLinkCode`]).
pub fn seal_bundle(
    offer: &LinkOffer,
    code: &LinkCode,
    identity: &AccountIdentity,
    contents: BundleContents<'_>,
) -> Result<Vec<u8>, crate::Error> {
    let BundleContents {
        own_list,
        contacts,
        history,
    } = contents;
    if !offer.verify_code(code) {
        return Err(IdentityError::WrongLinkCode.into());
    }
    let ephemeral = LinkSecret::generate()?;
    let sender = ephemeral.public();
    let shared = ephemeral.0.diffie_hellman(&PublicKey::from(offer.link_key));
    if !shared.was_contributory() {
        return Err(IdentityError::Malformed.into());
    }
    let key = seal_key(shared.as_bytes(), &sender, offer, code)?;
    let tail = BundleTail {
        own_list: own_list.encode(),
        contacts: contacts
            .iter()
            .map(|c| ContactWire {
                username: c.username.as_bytes().to_vec(),
                device_list: c.device_list.encode(),
                verified: u8::from(c.verified),
            })
            .collect(),
        history: history.map(AttachmentPointer::encode).unwrap_or_default(),
    }
    .tls_serialize_detached()
    .map(Zeroizing::new)
    .map_err(|_| crate::Error::State("encoding the link bundle failed"))?;
    let mut plain = Zeroizing::new(identity.secret_bytes().to_vec());
    plain.extend_from_slice(&tail);
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

    fn entry(key: u8) -> DeviceEntry {
        DeviceEntry {
            device_id: DeviceId(2),
            signature_key: [key; 32],
            added_at_ms: 0,
        }
    }

    fn offer(secret: &LinkSecret, code: &LinkCode) -> LinkOffer {
        LinkOffer::new(b"alice".to_vec(), entry(5), secret.public(), code).unwrap()
    }

    fn list(identity: &AccountIdentity, name: &str, devices: Vec<DeviceEntry>) -> SignedDeviceList {
        identity
            .sign(&DeviceList {
                username: name.as_bytes().to_vec(),
                identity_key: identity.public(),
                version: 2,
                devices,
            })
            .unwrap()
    }

    fn contacts() -> Vec<LinkedContact> {
        let bob = AccountIdentity::generate().unwrap();
        vec![LinkedContact {
            username: "bob".into(),
            device_list: list(&bob, "bob", vec![entry(9)]),
            verified: true,
        }]
    }

    fn contents<'a>(
        own_list: &'a SignedDeviceList,
        contacts: &'a [LinkedContact],
    ) -> BundleContents<'a> {
        BundleContents {
            own_list,
            contacts,
            history: None,
        }
    }

    /// The history archive's pointer travels inside the sealed bundle, and only there.
    #[test]
    fn the_history_pointer_travels_sealed() {
        use crate::content::AttachmentKey;
        let secret = LinkSecret::generate().unwrap();
        let code = LinkCode::generate().unwrap();
        let offer = offer(&secret, &code);
        let identity = AccountIdentity::generate().unwrap();
        let own = list(&identity, "alice", vec![offer.device.clone()]);
        let pointer = AttachmentPointer {
            blob_id: "AAAA".into(),
            key: AttachmentKey::from_bytes([0x5a; 32]),
            digest: [3; 32],
            size: 10_000,
            media_type: "application/x-nightjar-history".into(),
            file_name: None,
            caption: None,
            thumbnail: None,
        };
        let sealed = seal_bundle(
            &offer,
            &code,
            &identity,
            BundleContents {
                own_list: &own,
                contacts: &[],
                history: Some(&pointer),
            },
        )
        .unwrap();
        assert!(!sealed.windows(32).any(|w| w == [0x5a; 32]));
        let got = secret.open(&offer, &code, &sealed).unwrap();
        assert_eq!(got.history, Some(pointer));
    }

    #[test]
    fn seal_and_open_carries_identity_list_and_contacts() {
        let secret = LinkSecret::generate().unwrap();
        let code = LinkCode::generate().unwrap();
        let offer = offer(&secret, &code);
        let identity = AccountIdentity::generate().unwrap();
        let own = list(&identity, "alice", vec![offer.device.clone()]);
        let sealed = seal_bundle(&offer, &code, &identity, contents(&own, &contacts())).unwrap();
        let got = secret.open(&offer, &code, &sealed).unwrap();
        assert_eq!(got.identity.public(), identity.public());
        assert_eq!(got.own_list, own);
        assert!(got.history.is_none());
        assert_eq!(got.contacts.len(), 1);
        assert_eq!(got.contacts[0].username, "bob");
        assert!(got.contacts[0].verified);
        // Another device's secret, another code, a swapped offer or a truncation: refused.
        let other = LinkSecret::generate().unwrap();
        assert!(other.open(&offer, &code, &sealed).is_err());
        let other_code = LinkCode::generate().unwrap();
        assert!(secret.open(&offer, &other_code, &sealed).is_err());
        let mut swapped = offer.clone();
        swapped.device.signature_key = [6; 32];
        assert!(secret.open(&swapped, &code, &sealed).is_err());
        assert!(secret.open(&offer, &code, &sealed[..40]).is_err());
    }

    /// The server knows the offer (and so its public link key), but not the code: a bundle it
    /// seals for its own made-up account identity, keyed by X25519 alone as the v1 protocol
    /// did, is refused.
    #[test]
    fn bundle_sealed_with_only_public_offer_data_is_refused() {
        let secret = LinkSecret::generate().unwrap();
        let code = LinkCode::generate().unwrap();
        let offer = offer(&secret, &code);
        let server_identity = AccountIdentity::generate().unwrap();
        let server_list = list(&server_identity, "alice", vec![offer.device.clone()]);

        // X25519-only seal, as the server can do with public data.
        let ephemeral = LinkSecret::generate().unwrap();
        let sender = ephemeral.public();
        let shared = ephemeral.0.diffie_hellman(&PublicKey::from(offer.link_key));
        let salt = [sender.as_slice(), offer.link_key.as_slice()].concat();
        let mut key = [0u8; 32];
        Hkdf::<Sha256>::new(Some(&salt), shared.as_bytes())
            .expand(SEAL_INFO, &mut key)
            .unwrap();
        let mut plain = server_identity.secret_bytes().to_vec();
        plain.extend_from_slice(
            &BundleTail {
                own_list: server_list.encode(),
                contacts: vec![],
                history: vec![],
            }
            .tls_serialize_detached()
            .unwrap(),
        );
        let ciphertext = ChaCha20Poly1305::new((&key).into())
            .encrypt(
                Nonce::from_slice(&[0; 12]),
                Payload {
                    msg: &plain,
                    aad: &offer.encode(),
                },
            )
            .unwrap();
        let forged = [sender.as_slice(), &ciphertext].concat();
        assert_eq!(
            secret.open(&offer, &code, &forged).unwrap_err(),
            IdentityError::WrongLinkCode
        );

        // Guessing a code does not help either.
        let guess = LinkCode::generate().unwrap();
        let forged = seal_bundle(
            &LinkOffer::new(
                offer.username.clone(),
                offer.device.clone(),
                offer.link_key,
                &guess,
            )
            .unwrap(),
            &guess,
            &server_identity,
            contents(&server_list, &[]),
        )
        .unwrap();
        assert!(secret.open(&offer, &code, &forged).is_err());
    }

    /// A server that swaps the offer's device key or link key (it cannot recompute the MAC) is
    /// caught by the approving device, which refuses to seal.
    #[test]
    fn swapped_offer_is_refused_by_the_approving_side() {
        let secret = LinkSecret::generate().unwrap();
        let code = LinkCode::generate().unwrap();
        let offer = offer(&secret, &code);
        let identity = AccountIdentity::generate().unwrap();
        let own = list(&identity, "alice", vec![offer.device.clone()]);
        assert!(offer.verify_code(&code));

        let mut device_swapped = offer.clone();
        device_swapped.device.signature_key = [66; 32];
        let mut link_swapped = offer.clone();
        link_swapped.link_key = LinkSecret::generate().unwrap().public();
        for swapped in [device_swapped, link_swapped] {
            assert!(!swapped.verify_code(&code));
            assert!(!swapped.matches_code(&code.display()));
            assert!(matches!(
                seal_bundle(&swapped, &code, &identity, contents(&own, &[])),
                Err(crate::Error::Identity(IdentityError::WrongLinkCode))
            ));
        }
    }

    #[test]
    fn code_has_at_least_80_bits_and_is_easy_to_type() {
        const { assert!(LinkCode::BITS >= 80) };
        let code = LinkCode::generate().unwrap();
        let shown = code.display();
        assert_eq!(shown.len(), 23);
        assert_eq!(shown.matches('-').count(), 3);
        assert!(
            shown
                .bytes()
                .all(|b| b == b'-' || CODE_ALPHABET.contains(&b))
        );
        // Any case, spaces instead of dashes, and look-alikes are forgiven.
        let typed = shown.to_lowercase().replace('-', " ");
        assert_eq!(LinkCode::parse(&typed).unwrap(), code);
        assert_eq!(
            LinkCode::parse("IIIII-OOOOO-LLLLL-00000").unwrap(),
            LinkCode::parse("11111-00000-11111-00000").unwrap()
        );
        assert!(LinkCode::parse("1111-0000").is_none());
        assert!(LinkCode::parse("UUUUU-00000-11111-00000").is_none());
        assert!(LinkCode::parse(&format!("{}0", &*shown)).is_none());
        assert_eq!(LinkCode::from_bytes(&code.to_bytes()).unwrap(), code);
        assert_eq!(format!("{code:?}"), "LinkCode(<redacted>)");
        // Codes differ.
        assert_ne!(LinkCode::generate().unwrap(), code);
    }

    #[test]
    fn offer_round_trips() {
        let secret = LinkSecret::generate().unwrap();
        let code = LinkCode::generate().unwrap();
        let offer = offer(&secret, &code);
        assert_eq!(LinkOffer::decode(&offer.encode()).unwrap(), offer);
        assert!(LinkOffer::decode(&offer.encode()[1..]).is_err());
    }
}
