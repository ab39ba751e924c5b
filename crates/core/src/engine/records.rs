//! The engine's own persistent records, beside OpenMLS's state in the same store.

use openmls::prelude::{Extension, ExtensionType, Extensions, GroupContext, UnknownExtension};
use serde::{Deserialize, Serialize};

use super::integrity::EpochTag;
use crate::config::Suite;
use crate::identity::{DeviceCredential, DeviceId};
use crate::storage::{KvStore, StoreError};

/// Group-context extension holding the encrypted group name and avatar ([`crate::content::GroupMetadata`]).
pub(crate) const METADATA_EXTENSION: u16 = 0xF1A0;
/// Group-context extension holding the conversation kind (1 = direct, 2 = group).
pub(crate) const KIND_EXTENSION: u16 = 0xF1A1;

pub(crate) fn nightjar_extension_types() -> [ExtensionType; 2] {
    [
        ExtensionType::Unknown(METADATA_EXTENSION),
        ExtensionType::Unknown(KIND_EXTENSION),
    ]
}

/// Whether a conversation is a 1:1 direct conversation or a named group.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConversationKind {
    /// Two accounts, all their devices.
    Direct,
    /// Any number of accounts, with a name.
    Group,
}

impl ConversationKind {
    pub(crate) fn byte(self) -> u8 {
        match self {
            ConversationKind::Direct => 1,
            ConversationKind::Group => 2,
        }
    }

    pub(crate) fn from_extensions(ext: &Extensions<GroupContext>) -> Self {
        match ext.unknown(KIND_EXTENSION).map(|u| u.0.as_slice()) {
            Some([1]) => ConversationKind::Direct,
            _ => ConversationKind::Group,
        }
    }

    pub(crate) fn extension(self) -> Extension {
        Extension::Unknown(KIND_EXTENSION, UnknownExtension(vec![self.byte()]))
    }
}

/// The device this engine runs as.
#[derive(Serialize, Deserialize)]
pub(crate) struct DeviceRecord {
    pub(crate) username: String,
    pub(crate) device_id: DeviceId,
    /// Ed25519 seed of the device's MLS signature key.
    pub(crate) signing_seed: [u8; 32],
    pub(crate) config: crate::EngineConfig,
}

impl Drop for DeviceRecord {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.signing_seed);
    }
}

/// An operation whose commit awaits the delivery service's verdict, kept so it can be retried.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Intent {
    /// Add devices, from their (already verified) serialized key packages.
    AddDevices {
        /// TLS-encoded key packages.
        key_packages: Vec<Vec<u8>>,
    },
    /// Remove these devices.
    RemoveDevices {
        /// The devices to remove.
        devices: Vec<DeviceCredential>,
    },
    /// Replace the group metadata (encoded [`crate::content::GroupMetadata`]).
    SetMetadata {
        /// The encoded metadata.
        metadata: Vec<u8>,
    },
    /// Refresh this device's own leaf keys.
    SelfUpdate,
    /// Commit queued proposals (members leaving).
    CommitProposals,
}

/// Bookkeeping for one conversation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ConversationRecord {
    pub(crate) kind: ConversationKind,
    pub(crate) suite: Suite,
    pub(crate) received_since_update: u32,
    pub(crate) last_update_ms: u64,
    pub(crate) pending: Option<Intent>,
    /// Our pending commit lost to another commit that we already merged; retry this.
    pub(crate) superseded: Option<Intent>,
    pub(crate) active: bool,
    /// For a direct conversation: the other account, fixed when this device created or joined
    /// it; every later commit must keep exactly this account and ours.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) peer: Option<String>,
    /// Fork tags of the latest epochs, oldest first (see `integrity`).
    #[serde(default)]
    pub(crate) epoch_tags: Vec<EpochTag>,
}

const CONV_PREFIX: &[u8] = b"nj/conv/";
pub(crate) const DEVICE_KEY: &[u8] = b"nj/device";
pub(crate) const ACCOUNT_IDENTITY_KEY: &[u8] = b"nj/account-identity";
pub(crate) const LINK_SECRET_KEY: &[u8] = b"nj/link-secret";
pub(crate) const LINK_OFFER_KEY: &[u8] = b"nj/link-offer";
pub(crate) const LINK_CODE_KEY: &[u8] = b"nj/link-code";
/// Prefix of verification marks: `nj/verified/<username>` → the identity key the user verified.
pub(crate) const VERIFIED_PREFIX: &[u8] = b"nj/verified/";
/// The newest key-transparency root this device verified, stated in every message it sends.
pub(crate) const DIRECTORY_VIEW_KEY: &[u8] = b"nj/directory-view";

const METADATA_KEY_PREFIX: &[u8] = b"nj/meta-key/";
const NEXT_METADATA_KEY_PREFIX: &[u8] = b"nj/meta-key-next/";

/// Where a conversation's current metadata key is kept.
pub(crate) fn metadata_key_key(id: &[u8]) -> Vec<u8> {
    [METADATA_KEY_PREFIX, id].concat()
}

/// Where the metadata key of our own rename commit waits for the server's verdict.
pub(crate) fn next_metadata_key_key(id: &[u8]) -> Vec<u8> {
    [NEXT_METADATA_KEY_PREFIX, id].concat()
}

pub(crate) fn conversation_key(id: &[u8]) -> Vec<u8> {
    [CONV_PREFIX, id].concat()
}

pub(crate) fn conversation_ids(kv: &impl KvStore) -> Result<Vec<Vec<u8>>, StoreError> {
    Ok(kv
        .entries_with_prefix(CONV_PREFIX)?
        .into_iter()
        .filter_map(|(k, _)| k.strip_prefix(CONV_PREFIX).map(<[u8]>::to_vec))
        .collect())
}

pub(crate) fn load<T: for<'de> Deserialize<'de>>(
    kv: &impl KvStore,
    key: &[u8],
) -> Result<Option<T>, StoreError> {
    match kv.get(key)? {
        Some(bytes) => Ok(Some(serde_json::from_slice(&bytes)?)),
        None => Ok(None),
    }
}

pub(crate) fn save<T: Serialize>(
    kv: &impl KvStore,
    key: &[u8],
    value: &T,
) -> Result<(), StoreError> {
    kv.put(key, &serde_json::to_vec(value)?)
}
