//! Export and import of a device's entire state as one encrypted, versioned blob.
//!
//! The blob is `"NJP1" || 24-byte nonce || XChaCha20-Poly1305(key, entries)`, the entries a
//! length-prefixed list of key/value pairs. The key is the caller's (for example from the OS
//! keyring); without it the blob reveals nothing but its length. Import verifies the whole blob
//! before writing anything.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::storage::KvStore;

const MAGIC: &[u8; 4] = b"NJP1";
const NONCE_LEN: usize = 24;

/// Why an exported blob could not be opened.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PickleError {
    /// Not a Nightjar state blob, or a version this build does not read.
    #[error("not a Nightjar state export of a supported version")]
    UnknownFormat,
    /// Wrong key, or the blob was altered.
    #[error("state export could not be decrypted (wrong key or altered)")]
    Decrypt,
    /// The decrypted entries are malformed.
    #[error("state export is malformed")]
    Malformed,
}

/// A 32-byte key that encrypts exported state. Wiped on drop, never printed.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct PickleKey(Box<[u8; 32]>);

impl PickleKey {
    /// Wraps raw key bytes.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(Box::new(bytes))
    }

    /// A fresh random key.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut k = Box::new([0u8; 32]);
        getrandom::fill(&mut k[..])?;
        Ok(Self(k))
    }

    /// The raw key bytes, for the caller to keep in a keyring or key file.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for PickleKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PickleKey(<redacted>)")
    }
}

/// Encrypts every entry of `store` under `key`.
pub fn export(store: &impl KvStore, key: &PickleKey) -> crate::Result<Vec<u8>> {
    let mut plain = Zeroizing::new(Vec::new());
    for (k, v) in store.entries()? {
        put_bytes(&mut plain, &k);
        put_bytes(&mut plain, &v);
    }
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce)?;
    let cipher = XChaCha20Poly1305::new(key.as_bytes().into());
    let sealed = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: &plain,
                aad: MAGIC,
            },
        )
        .map_err(|_| crate::Error::State("encryption failed"))?;
    Ok([MAGIC.as_slice(), &nonce, &sealed].concat())
}

/// Decrypts `blob` and writes its entries into `store`; writes nothing if any check fails.
pub fn import(blob: &[u8], key: &PickleKey, store: &impl KvStore) -> crate::Result<()> {
    let entries = open(blob, key)?;
    for (k, v) in entries.iter() {
        store.put(k, v)?;
    }
    Ok(())
}

type Entries = Zeroizing<Vec<(Vec<u8>, Vec<u8>)>>;

fn open(blob: &[u8], key: &PickleKey) -> Result<Entries, PickleError> {
    let rest = blob.strip_prefix(MAGIC).ok_or(PickleError::UnknownFormat)?;
    if rest.len() < NONCE_LEN {
        return Err(PickleError::UnknownFormat);
    }
    let (nonce, sealed) = rest.split_at(NONCE_LEN);
    let cipher = XChaCha20Poly1305::new(key.as_bytes().into());
    let plain = Zeroizing::new(
        cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: MAGIC,
                },
            )
            .map_err(|_| PickleError::Decrypt)?,
    );
    let mut entries = Zeroizing::new(Vec::new());
    let mut input = plain.as_slice();
    while !input.is_empty() {
        let k = take_bytes(&mut input)?;
        let v = take_bytes(&mut input)?;
        entries.push((k, v));
    }
    Ok(entries)
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn take_bytes(input: &mut &[u8]) -> Result<Vec<u8>, PickleError> {
    let (len, rest) = input
        .split_first_chunk::<8>()
        .ok_or(PickleError::Malformed)?;
    let len = usize::try_from(u64::from_be_bytes(*len)).map_err(|_| PickleError::Malformed)?;
    if rest.len() < len {
        return Err(PickleError::Malformed);
    }
    let (bytes, rest) = rest.split_at(len);
    *input = rest;
    Ok(bytes.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStore;

    #[test]
    fn round_trip() {
        let store = MemoryStore::new();
        store.put(b"a", b"1").unwrap();
        store.put(b"b", &[0u8; 1000]).unwrap();
        let key = PickleKey::generate().unwrap();
        let blob = export(&store, &key).unwrap();
        let restored = MemoryStore::new();
        import(&blob, &key, &restored).unwrap();
        assert_eq!(restored.entries().unwrap(), store.entries().unwrap());
    }

    #[test]
    fn wrong_key_or_tamper_writes_nothing() {
        let store = MemoryStore::new();
        store.put(b"secret-key", b"secret-value").unwrap();
        let key = PickleKey::generate().unwrap();
        let mut blob = export(&store, &key).unwrap();
        assert!(!blob.windows(12).any(|w| w == b"secret-value"));
        let target = MemoryStore::new();
        let other = PickleKey::generate().unwrap();
        assert!(matches!(
            import(&blob, &other, &target),
            Err(crate::Error::Pickle(PickleError::Decrypt))
        ));
        let last = blob.len() - 1;
        blob[last] ^= 1;
        assert!(import(&blob, &key, &target).is_err());
        assert!(import(b"NJP", &key, &target).is_err());
        assert!(target.is_empty());
    }

    #[test]
    fn debug_is_redacted() {
        let key = PickleKey::from_bytes([0x41; 32]);
        assert_eq!(format!("{key:?}"), "PickleKey(<redacted>)");
    }
}
