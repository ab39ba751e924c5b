//! Key transparency in the client: a peer's identity key and device list are accepted only
//! with the directory's lookup proof that they are the account's current entry, checked
//! against a root signed by the directory key this device pinned the first time, and no
//! older than (or forked from) the newest root it verified before.
//!
//! So a server that shows this device a key it does not publish in its directory is caught
//! here, and one that publishes a substituted key is caught by the account's own devices
//! (their history check) and by auditors, who see every published entry.

use nightjar_api::{AccountResponse, AccountTransparency, B64, EpochRoot};
use nightjar_core::identity::SignedDeviceList;
use nightjar_core::transparency::{
    DirectoryKeys, KtError, ProvenEntry, RootKey, SignedRoot, verify_lookup,
};

use super::{Machine, meta};
use crate::error::{Error, Result};
use crate::store::ClientStore;

/// Why a device list was not accepted on the directory's word.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Unproven {
    /// The directory has not caught up (or gave no proof): ask again later.
    NotYet(String),
    /// The server showed something its directory contradicts: never accepted.
    Refused(String),
}

fn signed_root(view: &EpochRoot) -> std::result::Result<SignedRoot, KtError> {
    Ok(SignedRoot {
        epoch: view.epoch,
        root: view
            .root
            .0
            .as_slice()
            .try_into()
            .map_err(|_| KtError::Malformed)?,
        signature: view
            .signature
            .0
            .as_slice()
            .try_into()
            .map_err(|_| KtError::Malformed)?,
    })
}

fn encode_root(r: &SignedRoot) -> String {
    format!(
        "{}:{}:{}",
        r.epoch,
        B64::encode(&r.root),
        B64::encode(&r.signature)
    )
}

fn decode_root(s: &str) -> Option<SignedRoot> {
    let mut parts = s.split(':');
    let epoch = parts.next()?.parse().ok()?;
    let root = B64::decode(parts.next()?)?.try_into().ok()?;
    let signature = B64::decode(parts.next()?)?.try_into().ok()?;
    Some(SignedRoot {
        epoch,
        root,
        signature,
    })
}

fn encode_keys(k: &DirectoryKeys) -> String {
    format!(
        "{}:{}",
        B64::encode(&k.root_key.0),
        B64::encode(&k.vrf_public_key)
    )
}

fn served_keys(t: &AccountTransparency) -> Option<DirectoryKeys> {
    Some(DirectoryKeys {
        root_key: RootKey(t.keys.root_key.0.as_slice().try_into().ok()?),
        vrf_public_key: t.keys.vrf_public_key.0.clone(),
    })
}

impl<S: ClientStore> Machine<S> {
    /// Whether peers' device lists need a directory proof (the default). Off only where no
    /// directory exists: simulations of the delivery service alone.
    pub fn set_require_transparency(&mut self, required: bool) {
        self.require_transparency = required;
    }

    /// The directory keys this device pinned, if any.
    pub fn pinned_directory_keys(&self) -> Result<Option<DirectoryKeys>> {
        let Some(text) = self.store.meta(meta::KT_KEYS)? else {
            return Ok(None);
        };
        let mut parts = text.split(':');
        let root = parts.next().and_then(B64::decode);
        let vrf = parts.next().and_then(B64::decode);
        Ok(match (root.and_then(|r| r.try_into().ok()), vrf) {
            (Some(root), Some(vrf)) => Some(DirectoryKeys {
                root_key: RootKey(root),
                vrf_public_key: vrf,
            }),
            _ => None,
        })
    }

    /// The newest directory root this device verified.
    pub fn verified_root(&self) -> Result<Option<SignedRoot>> {
        Ok(self
            .store
            .meta(meta::KT_ROOT)?
            .as_deref()
            .and_then(decode_root))
    }

    /// Checks `signed`, served as `username`'s list, against the directory proof that came
    /// with it; on success remembers the (newer) root.
    pub(crate) fn prove_list(
        &mut self,
        username: &str,
        signed: &SignedDeviceList,
        transparency: Option<&AccountTransparency>,
    ) -> Result<std::result::Result<(), Unproven>> {
        if !self.require_transparency {
            return Ok(Ok(()));
        }
        let Some(t) = transparency else {
            return Ok(Err(Unproven::NotYet(format!(
                "the server gave no directory proof for {username}'s keys"
            ))));
        };
        let Some(keys) = served_keys(t) else {
            return Ok(Err(Unproven::Refused(
                "the server's directory keys are malformed".into(),
            )));
        };
        let keys = match self.pinned_directory_keys()? {
            Some(pinned) if pinned != keys => {
                return Ok(Err(Unproven::Refused(
                    "the server's key-transparency directory now signs with another key than \
                     the one this device pinned"
                        .into(),
                )));
            }
            Some(pinned) => pinned,
            None => {
                self.store.set_meta(meta::KT_KEYS, &encode_keys(&keys))?;
                keys
            }
        };
        let root = match signed_root(&t.lookup.root) {
            Ok(root) => root,
            Err(e) => return Ok(Err(Unproven::Refused(e.to_string()))),
        };
        if let Some(seen) = self.verified_root()?
            && let Err(e) = root.follows(&seen)
        {
            return Ok(Err(Unproven::Refused(e.to_string())));
        }
        let proven = match verify_lookup(&keys, &root, username, &t.lookup.proof.0) {
            Ok(proven) => proven,
            Err(e) => return Ok(Err(Unproven::Refused(e.to_string()))),
        };
        if let Err(unproven) = compare(username, signed, &proven) {
            return Ok(Err(unproven));
        }
        if self
            .verified_root()?
            .is_none_or(|seen| root.epoch > seen.epoch)
        {
            self.store.set_meta(meta::KT_ROOT, &encode_root(&root))?;
        }
        Ok(Ok(()))
    }

    /// Accepts a peer's account answer: its device list, if the directory proves it.
    pub fn accept_account(&mut self, now: u64, account: &AccountResponse) -> Result<()> {
        let signed = SignedDeviceList::decode(&account.device_list.0)?;
        match self.prove_list(&account.username, &signed, account.transparency.as_deref())? {
            Ok(()) => self.accept_list(now, &account.username, &signed),
            Err(Unproven::NotYet(why)) => Err(Error::NotYetProven(why)),
            Err(Unproven::Refused(why)) => Err(Error::Transparency(why)),
        }
    }
}

/// Whether the proven entry is exactly the served list.
fn compare(
    username: &str,
    signed: &SignedDeviceList,
    proven: &ProvenEntry,
) -> std::result::Result<(), Unproven> {
    let Ok(list) = signed.verify() else {
        return Err(Unproven::Refused(format!(
            "{username}'s device list does not verify"
        )));
    };
    let entry = &proven.entry;
    if entry.identity_key != list.identity_key {
        return Err(Unproven::Refused(format!(
            "the server showed an identity key for {username} that its key-transparency \
             directory does not hold"
        )));
    }
    if entry.list_version > list.version {
        return Err(Unproven::Refused(format!(
            "the server served {username}'s device list version {} while its directory holds \
             version {}: it is hiding a newer list",
            list.version, entry.list_version
        )));
    }
    if entry.list_version < list.version {
        return Err(Unproven::NotYet(format!(
            "the directory does not have {username}'s newest device list yet"
        )));
    }
    if !entry.matches(list.identity_key, list.version, &signed.encode()) {
        return Err(Unproven::Refused(format!(
            "the server served a device list of {username} that differs from the one its \
             directory holds for the same version"
        )));
    }
    Ok(())
}
