//! A write buffer over the caller's store that makes each engine call all-or-nothing.
//!
//! While a transaction is open, writes and deletes are held in memory and reads see them; on
//! success they are applied in one [`KvStore::apply`] batch, on failure they are dropped. So a
//! forged, replayed or refused message never leaves half-written state behind — not even a
//! consumed decryption key.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{KvStore, StoreError};

type Pending = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// The caller's store plus an optional open transaction.
pub(crate) struct Overlay<S> {
    base: S,
    pending: Mutex<Option<Pending>>,
}

fn poisoned<T>(_: T) -> StoreError {
    StoreError::Backend("transaction lock poisoned".into())
}

impl<S: KvStore> Overlay<S> {
    pub(crate) fn new(base: S) -> Self {
        Self {
            base,
            pending: Mutex::new(None),
        }
    }

    pub(crate) fn base(&self) -> &S {
        &self.base
    }

    /// Starts buffering writes; a transaction already open is discarded.
    pub(crate) fn begin(&self) -> Result<(), StoreError> {
        *self.pending.lock().map_err(poisoned)? = Some(Pending::new());
        Ok(())
    }

    /// Applies the buffered writes to the caller's store in one batch.
    pub(crate) fn commit(&self) -> Result<(), StoreError> {
        let pending = self.pending.lock().map_err(poisoned)?.take();
        match pending {
            Some(p) if !p.is_empty() => self.base.apply(p.into_iter().collect()),
            _ => Ok(()),
        }
    }

    /// Drops the buffered writes.
    pub(crate) fn rollback(&self) {
        if let Ok(mut p) = self.pending.lock() {
            *p = None;
        }
    }
}

impl<S: KvStore> KvStore for Overlay<S> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(p) = self.pending.lock().map_err(poisoned)?.as_ref()
            && let Some(v) = p.get(key)
        {
            return Ok(v.clone());
        }
        self.base.get(key)
    }

    fn put(&self, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        match self.pending.lock().map_err(poisoned)?.as_mut() {
            Some(p) => {
                p.insert(key.to_vec(), Some(value.to_vec()));
                Ok(())
            }
            None => self.base.put(key, value),
        }
    }

    fn delete(&self, key: &[u8]) -> Result<(), StoreError> {
        match self.pending.lock().map_err(poisoned)?.as_mut() {
            Some(p) => {
                p.insert(key.to_vec(), None);
                Ok(())
            }
            None => self.base.delete(key),
        }
    }

    fn entries(&self) -> Result<Vec<super::Entry>, StoreError> {
        self.entries_with_prefix(&[])
    }

    fn entries_with_prefix(&self, prefix: &[u8]) -> Result<Vec<super::Entry>, StoreError> {
        let mut all: BTreeMap<Vec<u8>, Vec<u8>> =
            self.base.entries_with_prefix(prefix)?.into_iter().collect();
        if let Some(p) = self.pending.lock().map_err(poisoned)?.as_ref() {
            for (k, v) in p.iter().filter(|(k, _)| k.starts_with(prefix)) {
                match v {
                    Some(v) => all.insert(k.clone(), v.clone()),
                    None => all.remove(k),
                };
            }
        }
        Ok(all.into_iter().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStore;

    #[test]
    fn rollback_leaves_base_untouched() {
        let o = Overlay::new(MemoryStore::new());
        o.put(b"a", b"1").unwrap();
        o.begin().unwrap();
        o.put(b"a", b"2").unwrap();
        o.put(b"b", b"3").unwrap();
        o.delete(b"a").unwrap();
        assert_eq!(o.get(b"a").unwrap(), None);
        assert_eq!(o.entries().unwrap().len(), 1);
        o.rollback();
        assert_eq!(o.get(b"a").unwrap(), Some(b"1".to_vec()));
        assert_eq!(o.get(b"b").unwrap(), None);
    }

    #[test]
    fn prefix_scan_merges_pending_writes() {
        let o = Overlay::new(MemoryStore::new());
        o.put(b"a/1", b"x").unwrap();
        o.put(b"a/2", b"x").unwrap();
        o.put(b"b/1", b"x").unwrap();
        o.begin().unwrap();
        o.delete(b"a/1").unwrap();
        o.put(b"a/3", b"y").unwrap();
        o.put(b"c/1", b"y").unwrap();
        let keys: Vec<Vec<u8>> = o
            .entries_with_prefix(b"a/")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec![b"a/2".to_vec(), b"a/3".to_vec()]);
    }

    #[test]
    fn commit_applies_batch() {
        let o = Overlay::new(MemoryStore::new());
        o.put(b"a", b"1").unwrap();
        o.begin().unwrap();
        o.delete(b"a").unwrap();
        o.put(b"b", b"2").unwrap();
        o.commit().unwrap();
        assert_eq!(o.base().get(b"a").unwrap(), None);
        assert_eq!(o.base().get(b"b").unwrap(), Some(b"2".to_vec()));
    }
}
