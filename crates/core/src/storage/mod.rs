//! Where the engine keeps its state.
//!
//! Everything the engine must remember — MLS group state, key-package private keys, the device's
//! signing key, pinned peer identities and conversation bookkeeping — is written through
//! [`KvStore`], a byte-oriented key-value trait the caller implements. The engine never writes a
//! file itself: the SDK backs the store with an encrypted database, tests with [`MemoryStore`],
//! and [`crate::pickle`] exports a whole store as one encrypted blob.

mod memory;
mod mls;
mod overlay;

pub use memory::MemoryStore;
pub(crate) use mls::MlsStorage;
pub(crate) use overlay::Overlay;

/// A failure of the caller's store or of decoding a value it returned.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreError {
    /// The backing store failed; the text comes from the caller's implementation.
    #[error("storage backend failed: {0}")]
    Backend(String),
    /// A stored value could not be encoded or decoded.
    #[error("stored value could not be encoded or decoded")]
    Codec,
    /// A value that another stored value refers to is missing.
    #[error("stored state is inconsistent: a referenced value is missing")]
    Missing,
}

impl From<serde_json::Error> for StoreError {
    fn from(_: serde_json::Error) -> Self {
        Self::Codec
    }
}

/// One stored key and its value.
pub type Entry = (Vec<u8>, Vec<u8>);

/// A durable byte-oriented key-value store owned by the caller.
///
/// Implementations must make each call atomic and durable once it returns `Ok` (as far as the
/// backend allows), and must return exactly the bytes last written for a key. Values contain
/// private keys: implementations are expected to encrypt them at rest.
pub trait KvStore: Send + Sync {
    /// Returns the value stored under `key`, if any.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Stores `value` under `key`, replacing any previous value.
    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError>;
    /// Removes `key`; removing an absent key is not an error.
    fn delete(&self, key: &[u8]) -> Result<(), StoreError>;
    /// Returns every entry, in any order; used to export the whole state.
    fn entries(&self) -> Result<Vec<Entry>, StoreError>;
    /// Returns the entries whose key starts with `prefix`; override with a range query where
    /// the backend has one (the default scans everything).
    fn entries_with_prefix(&self, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        Ok(self
            .entries()?
            .into_iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .collect())
    }
    /// Applies a batch of writes (`Some`) and deletes (`None`) produced by one engine call.
    ///
    /// Implementations over a database should apply the batch in one transaction so a crash
    /// never leaves half of an engine call on disk; the default applies it entry by entry.
    fn apply(&self, batch: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<(), StoreError> {
        for (key, value) in batch {
            match value {
                Some(v) => self.put(&key, &v)?,
                None => self.delete(&key)?,
            }
        }
        Ok(())
    }
}

impl<T: KvStore + ?Sized> KvStore for std::sync::Arc<T> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).get(key)
    }
    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        (**self).put(key, value)
    }
    fn delete(&self, key: &[u8]) -> Result<(), StoreError> {
        (**self).delete(key)
    }
    fn entries(&self) -> Result<Vec<Entry>, StoreError> {
        (**self).entries()
    }
    fn entries_with_prefix(&self, prefix: &[u8]) -> Result<Vec<Entry>, StoreError> {
        (**self).entries_with_prefix(prefix)
    }
    fn apply(&self, batch: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<(), StoreError> {
        (**self).apply(batch)
    }
}
