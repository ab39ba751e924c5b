//! The peers (and own account) this device knows: pinned identity keys and their latest
//! verified device lists.
//!
//! The first verified list pins an account's identity key (trust on first use, to be confirmed
//! by safety numbers or key transparency). A later list signed by another key is refused with
//! [`IdentityError::IdentityChanged`] until the user explicitly trusts the new key, so a key
//! substitution is always visible. Older versions are refused (no rollback).

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::identity::{DeviceCredential, DeviceList, IdentityError, IdentityKey, SignedDeviceList};
use crate::storage::{KvStore, StoreError};

const PREFIX: &[u8] = b"nj/dir/";

#[derive(Serialize, Deserialize)]
struct Record {
    signed: Vec<u8>,
}

/// What accepting a device list changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DirectoryChange {
    /// First list seen for this account; its identity key is now pinned.
    Pinned,
    /// A newer list replaced the previous one.
    Updated,
    /// The same list was already known.
    Unchanged,
}

/// Pinned accounts, cached in memory and written through to the store.
#[derive(Default)]
pub(crate) struct Directory {
    lists: HashMap<String, DeviceList>,
}

fn key(username: &str) -> Vec<u8> {
    [PREFIX, username.as_bytes()].concat()
}

impl Directory {
    pub(crate) fn load(kv: &impl KvStore) -> Result<Self, crate::Error> {
        let mut lists = HashMap::new();
        for (k, v) in kv.entries_with_prefix(PREFIX)? {
            if let Some(name) = k.strip_prefix(PREFIX) {
                let record: Record = serde_json::from_slice(&v).map_err(StoreError::from)?;
                let list = SignedDeviceList::decode(&record.signed)?.verify()?;
                let name = String::from_utf8(name.to_vec()).map_err(|_| StoreError::Codec)?;
                lists.insert(name, list);
            }
        }
        Ok(Self { lists })
    }

    pub(crate) fn list(&self, username: &str) -> Option<&DeviceList> {
        self.lists.get(username)
    }

    pub(crate) fn identity(&self, username: &str) -> Option<IdentityKey> {
        self.lists.get(username).map(|l| l.identity_key)
    }

    /// Verifies and stores `signed` as `username`'s device list.
    pub(crate) fn accept(
        &mut self,
        kv: &impl KvStore,
        username: &str,
        signed: &SignedDeviceList,
        allow_new_identity: bool,
    ) -> Result<DirectoryChange, crate::Error> {
        let list = signed.verify()?;
        if list.username() != username {
            return Err(IdentityError::WrongAccount.into());
        }
        let change = match self.lists.get(username) {
            None => DirectoryChange::Pinned,
            Some(old) if old.identity_key != list.identity_key => {
                if !allow_new_identity {
                    return Err(IdentityError::IdentityChanged(username.to_owned()).into());
                }
                DirectoryChange::Pinned
            }
            Some(old) if list.version < old.version => {
                return Err(IdentityError::Rollback {
                    offered: list.version,
                    accepted: old.version,
                }
                .into());
            }
            Some(old) if list.version == old.version => {
                if *old != list {
                    return Err(IdentityError::Equivocation(list.version).into());
                }
                return Ok(DirectoryChange::Unchanged);
            }
            Some(_) => DirectoryChange::Updated,
        };
        let record = Record {
            signed: signed.encode(),
        };
        kv.put(
            &key(username),
            &serde_json::to_vec(&record).map_err(StoreError::from)?,
        )?;
        self.lists.insert(username.to_owned(), list);
        Ok(change)
    }

    /// Every pinned account's latest signed device list, `username`'s own excepted.
    pub(crate) fn signed_lists(
        &self,
        kv: &impl KvStore,
        except: &str,
    ) -> Result<Vec<(String, SignedDeviceList)>, crate::Error> {
        let mut out = Vec::new();
        for (k, v) in kv.entries_with_prefix(PREFIX)? {
            let Some(name) = k.strip_prefix(PREFIX) else {
                continue;
            };
            let name = String::from_utf8(name.to_vec()).map_err(|_| StoreError::Codec)?;
            if name == except {
                continue;
            }
            let record: Record = serde_json::from_slice(&v).map_err(StoreError::from)?;
            out.push((name, SignedDeviceList::decode(&record.signed)?));
        }
        Ok(out)
    }

    /// Checks that `credential` with `signature_key` is in its account's accepted list.
    pub(crate) fn check(
        &self,
        credential: &DeviceCredential,
        signature_key: &[u8],
    ) -> Result<(), DeviceCheck> {
        match self.lists.get(&credential.username) {
            None => Err(DeviceCheck::UnknownAccount),
            Some(list) if list.allows(credential.device_id, signature_key) => Ok(()),
            Some(_) => Err(DeviceCheck::NotListed),
        }
    }
}

/// Outcome of a failed [`Directory::check`].
pub(crate) enum DeviceCheck {
    UnknownAccount,
    NotListed,
}
