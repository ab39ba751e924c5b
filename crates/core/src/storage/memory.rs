//! An in-memory [`KvStore`] for tests, benchmarks and short-lived clients.

use std::collections::BTreeMap;
use std::sync::RwLock;

use zeroize::Zeroize;

use super::{KvStore, StoreError};

/// A [`KvStore`] that keeps everything in process memory and wipes values when dropped.
#[derive(Default)]
pub struct MemoryStore {
    values: RwLock<BTreeMap<Vec<u8>, Vec<u8>>>,
}

impl MemoryStore {
    /// Creates an empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of entries held; useful to check that state was really written or removed.
    pub fn len(&self) -> usize {
        self.values.read().map(|v| v.len()).unwrap_or(0)
    }

    /// Whether the store holds no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Total size in bytes of all keys and values.
    pub fn size_bytes(&self) -> usize {
        self.values
            .read()
            .map(|v| v.iter().map(|(k, v)| k.len() + v.len()).sum())
            .unwrap_or(0)
    }
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("entries", &self.len())
            .finish_non_exhaustive()
    }
}

fn poisoned<T>(_: T) -> StoreError {
    StoreError::Backend("memory store lock poisoned".into())
}

impl KvStore for MemoryStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.values.read().map_err(poisoned)?.get(key).cloned())
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        let mut values = self.values.write().map_err(poisoned)?;
        if let Some(mut old) = values.insert(key.to_vec(), value.to_vec()) {
            old.zeroize();
        }
        Ok(())
    }

    fn delete(&self, key: &[u8]) -> Result<(), StoreError> {
        if let Some(mut old) = self.values.write().map_err(poisoned)?.remove(key) {
            old.zeroize();
        }
        Ok(())
    }

    fn entries(&self) -> Result<Vec<super::Entry>, StoreError> {
        let values = self.values.read().map_err(poisoned)?;
        Ok(values.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    fn entries_with_prefix(&self, prefix: &[u8]) -> Result<Vec<super::Entry>, StoreError> {
        self.range(prefix)
    }
}

impl MemoryStore {
    fn range(&self, prefix: &[u8]) -> Result<Vec<super::Entry>, StoreError> {
        let values = self.values.read().map_err(poisoned)?;
        Ok(values
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

impl Drop for MemoryStore {
    fn drop(&mut self) {
        if let Ok(values) = self.values.get_mut() {
            for value in values.values_mut() {
                value.zeroize();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn put_get_delete() {
        let store = MemoryStore::new();
        assert_eq!(store.get(b"k").unwrap(), None);
        store.put(b"k", b"v1").unwrap();
        store.put(b"k", b"v2").unwrap();
        assert_eq!(store.get(b"k").unwrap(), Some(b"v2".to_vec()));
        assert_eq!(store.len(), 1);
        store.delete(b"k").unwrap();
        store.delete(b"absent").unwrap();
        assert!(store.is_empty());
    }
}
