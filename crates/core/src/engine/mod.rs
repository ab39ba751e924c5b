//! The engine: one device's view of its account, its peers and its conversations.
//!
//! An [`Engine`] is a sans-IO state machine. Calls take the current time where it matters and
//! return bytes for the caller to deliver; incoming bytes go to [`Engine::process`]. Every call
//! is atomic: it either completes and its state changes are handed to the caller's store in one
//! batch, or it fails with a typed error and nothing changes.

mod incoming;
mod integrity;
mod metadata;
mod ops;
mod records;

use std::collections::HashMap;
use std::fmt;

use openmls::prelude::*;
use tls_codec::Serialize as _;
use zeroize::Zeroizing;

use crate::config::{EngineConfig, Suite};
use crate::content::{AttachmentPointer, DirectoryView, SenderState};
use crate::directory::{Directory, DirectoryChange};
use crate::error::{ConversationError, Error, Result};
use crate::identity::{
    AccountIdentity, DeviceCredential, DeviceEntry, DeviceId, DeviceList, IdentityError,
    IdentityKey, SignedDeviceList, validate_username,
};
use crate::provider::{DeviceSigner, Provider};
use crate::provisioning::{
    BundleContents, LinkCode, LinkCompleted, LinkOffer, LinkSecret, LinkedContact, seal_bundle,
};
use crate::safety::SafetyNumber;
use crate::storage::{KvStore, Overlay, StoreError};

pub use incoming::Incoming;
pub use integrity::MissingMessages;
#[cfg(feature = "hostile")]
pub use ops::Forgery;
pub use ops::{CommitBundle, ConversationInfo, Outbound};
pub(crate) use records::KIND_EXTENSION;
use records::{
    ACCOUNT_IDENTITY_KEY, DEVICE_KEY, DIRECTORY_VIEW_KEY, DeviceRecord, LINK_CODE_KEY,
    LINK_OFFER_KEY, LINK_SECRET_KEY, VERIFIED_PREFIX,
};
pub use records::{ConversationKind, Intent};

/// A conversation's identifier: the MLS group id, 16 random bytes, shown as 32 hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConversationId(pub [u8; 16]);

impl ConversationId {
    /// Parses the 32-hex-digit form produced by `Display`.
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() != 32 || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Self(out))
    }

    pub(crate) fn from_group_id(id: &GroupId) -> Result<Self, ConversationError> {
        id.as_slice()
            .try_into()
            .map(Self)
            .map_err(|_| ConversationError::UnknownConversation)
    }

    pub(crate) fn group_id(&self) -> GroupId {
        GroupId::from_slice(&self.0)
    }
}

impl fmt::Display for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl fmt::Debug for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ConversationId({self})")
    }
}

/// One device's end-to-end encryption state, over the caller's store `S`.
pub struct Engine<S: KvStore> {
    provider: Provider<Overlay<S>>,
    signer: DeviceSigner,
    me: DeviceCredential,
    config: EngineConfig,
    directory: Directory,
    account_identity: Option<AccountIdentity>,
    groups: HashMap<ConversationId, MlsGroup>,
}

impl<S: KvStore> fmt::Debug for Engine<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("device", &self.me)
            .field("suite", &self.config.suite)
            .finish_non_exhaustive()
    }
}

pub(crate) fn internal(e: impl fmt::Display) -> Error {
    Error::Conversation(ConversationError::Internal(e.to_string()))
}

impl<S: KvStore> Engine<S> {
    /// Sets up the first device of a new account: a fresh account identity key, a fresh device
    /// key, and device list version 1 naming this device. Publish the returned list.
    pub fn create_account(
        store: S,
        username: &str,
        config: EngineConfig,
        now_ms: u64,
    ) -> Result<(Self, SignedDeviceList)> {
        let mut engine = Self::new_device(store, username, config)?;
        let identity = AccountIdentity::generate()?;
        let list = DeviceList {
            username: username.as_bytes().to_vec(),
            identity_key: identity.public(),
            version: 1,
            devices: vec![engine.device_entry(now_ms)],
        };
        let signed = identity.sign(&list)?;
        engine.install_account_identity(identity, &signed)?;
        Ok((engine, signed))
    }

    /// Sets up an additional device of an existing account. It holds no account identity key
    /// until an existing device approves it and hands one over ([`Self::install_account_identity`]).
    pub fn new_device(store: S, username: &str, config: EngineConfig) -> Result<Self> {
        validate_username(username)?;
        if store.get(DEVICE_KEY)?.is_some() {
            return Err(Error::State("store already holds a device"));
        }
        let signer = DeviceSigner::generate()?;
        let record = DeviceRecord {
            username: username.to_owned(),
            device_id: DeviceId::random()?,
            signing_seed: *signer.seed(),
            config,
        };
        records::save(&store, DEVICE_KEY, &record)?;
        Self::from_record(store, &record, signer)
    }

    /// Reopens an engine from a store written by an earlier run (or imported from an export).
    pub fn load(store: S) -> Result<Self> {
        let record: DeviceRecord =
            records::load(&store, DEVICE_KEY)?.ok_or(Error::State("store holds no device"))?;
        let signer = DeviceSigner::from_seed(&record.signing_seed);
        let mut engine = Self::from_record(store, &record, signer)?;
        if let Some(secret) = engine.provider.kv().get(ACCOUNT_IDENTITY_KEY)? {
            let bytes: Zeroizing<[u8; 32]> = Zeroizing::new(
                secret
                    .as_slice()
                    .try_into()
                    .map_err(|_| StoreError::Codec)?,
            );
            engine.account_identity = Some(AccountIdentity::from_secret_bytes(&bytes));
        }
        Ok(engine)
    }

    fn from_record(store: S, record: &DeviceRecord, signer: DeviceSigner) -> Result<Self> {
        let directory = Directory::load(&store)?;
        let provider = Provider::new(Overlay::new(store)).map_err(internal)?;
        Ok(Self {
            provider,
            signer,
            me: DeviceCredential {
                username: record.username.clone(),
                device_id: record.device_id,
            },
            config: record.config.clone(),
            directory,
            account_identity: None,
            groups: HashMap::new(),
        })
    }

    /// The caller's store.
    pub fn store(&self) -> &S {
        self.provider.kv().base()
    }

    /// This device's account and device id.
    pub fn device(&self) -> &DeviceCredential {
        &self.me
    }

    /// The engine's configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// This device's entry for its account's device list (id and MLS signature key).
    pub fn device_entry(&self, now_ms: u64) -> DeviceEntry {
        DeviceEntry {
            device_id: self.me.device_id,
            signature_key: self.signer.public_key(),
            added_at_ms: now_ms,
        }
    }

    /// Whether this device holds the account identity key (and so can approve devices).
    pub fn has_account_identity(&self) -> bool {
        self.account_identity.is_some()
    }

    /// The account identity secret, to hand to a newly approved device over an encrypted channel.
    pub fn account_identity(&self) -> Option<&AccountIdentity> {
        self.account_identity.as_ref()
    }

    /// Installs the account identity key received from an approving device, together with the
    /// account's current signed device list, which must be signed by that key and list this device.
    pub fn install_account_identity(
        &mut self,
        identity: AccountIdentity,
        signed: &SignedDeviceList,
    ) -> Result<()> {
        let list = signed.verify()?;
        if list.identity_key != identity.public() || list.username() != self.me.username {
            return Err(IdentityError::WrongAccount.into());
        }
        if !list.allows(self.me.device_id, &self.signer.public_key()) {
            return Err(ConversationError::DeviceNotInList(self.me.to_string()).into());
        }
        let username = self.me.username.clone();
        self.directory
            .accept(self.provider.kv(), &username, signed, true)?;
        self.provider
            .kv()
            .put(ACCOUNT_IDENTITY_KEY, &identity.secret_bytes()[..])?;
        self.account_identity = Some(identity);
        Ok(())
    }

    /// Signs the next version of this account's device list with `entry` added.
    pub fn approve_device(&mut self, entry: DeviceEntry) -> Result<SignedDeviceList> {
        self.change_own_list(|devices| {
            if devices.iter().any(|d| d.device_id == entry.device_id) {
                return Err(IdentityError::BadDeviceSet.into());
            }
            devices.push(entry);
            Ok(())
        })
    }

    /// Signs the next version of this account's device list without `device_id`.
    pub fn revoke_device(&mut self, device_id: DeviceId) -> Result<SignedDeviceList> {
        self.change_own_list(|devices| {
            let before = devices.len();
            devices.retain(|d| d.device_id != device_id);
            if devices.len() == before {
                return Err(ConversationError::NotInConversation(device_id.to_string()).into());
            }
            Ok(())
        })
    }

    fn change_own_list(
        &mut self,
        edit: impl FnOnce(&mut Vec<DeviceEntry>) -> Result<()>,
    ) -> Result<SignedDeviceList> {
        let identity = self
            .account_identity
            .as_ref()
            .ok_or(Error::State("this device holds no account identity key"))?;
        let mut list = self
            .directory
            .list(&self.me.username)
            .cloned()
            .ok_or(Error::State("own device list unknown"))?;
        edit(&mut list.devices)?;
        list.version += 1;
        let signed = identity.sign(&list)?;
        let username = self.me.username.clone();
        self.directory
            .accept(self.provider.kv(), &username, &signed, false)?;
        Ok(signed)
    }

    /// On a new device: creates (or returns the already created) request to join the account.
    /// Show [`Engine::link_code`] to the user and publish the offer through the server.
    pub fn link_offer(&mut self, now_ms: u64) -> Result<LinkOffer> {
        if let Some(bytes) = self.provider.kv().get(LINK_OFFER_KEY)?
            && self.provider.kv().get(LINK_CODE_KEY)?.is_some()
        {
            return Ok(LinkOffer::decode(&bytes)?);
        }
        let secret = LinkSecret::generate()?;
        let code = LinkCode::generate()?;
        let offer = LinkOffer::new(
            self.me.username.as_bytes().to_vec(),
            self.device_entry(now_ms),
            secret.public(),
            &code,
        )?;
        self.atomically(|e| {
            e.provider
                .kv()
                .put(LINK_SECRET_KEY, &secret.to_bytes()[..])?;
            e.provider.kv().put(LINK_CODE_KEY, &code.to_bytes())?;
            e.provider.kv().put(LINK_OFFER_KEY, &offer.encode())?;
            Ok(())
        })?;
        Ok(offer)
    }

    /// On a new device with a link in progress: the approval code to show the user (it never
    /// goes to the server).
    pub fn link_code(&self) -> Result<LinkCode> {
        let bytes = self
            .provider
            .kv()
            .get(LINK_CODE_KEY)?
            .ok_or(Error::State("no device link in progress"))?;
        Ok(LinkCode::from_bytes(&bytes).ok_or(StoreError::Codec)?)
    }

    /// On an existing device holding the account identity key: approves `offer` if it was made
    /// by the device showing `typed_code` (a swapped offer is refused). Returns the new signed
    /// device list to publish and the sealed bundle for the new device, which carries the
    /// account identity key, this device's pinned contacts with their verification marks and
    /// `history`, the pointer to the history archive uploaded for the new device (if any).
    pub fn approve_link(
        &mut self,
        offer: &LinkOffer,
        typed_code: &str,
        history: Option<&AttachmentPointer>,
    ) -> Result<(SignedDeviceList, Vec<u8>)> {
        let code = LinkCode::parse(typed_code).ok_or(IdentityError::WrongLinkCode)?;
        if !offer.verify_code(&code) {
            return Err(IdentityError::WrongLinkCode.into());
        }
        if offer.username != self.me.username.as_bytes() {
            return Err(IdentityError::WrongAccount.into());
        }
        let contacts = self.pinned_contacts()?;
        let list = self.approve_device(offer.device.clone())?;
        let identity = self
            .account_identity
            .as_ref()
            .ok_or(Error::State("this device holds no account identity key"))?;
        let contents = BundleContents {
            own_list: &list,
            contacts: &contacts,
            history,
        };
        let sealed = seal_bundle(offer, &code, identity, contents)?;
        Ok((list, sealed))
    }

    /// Every account this device has pinned (its own excepted), with its latest signed device
    /// list and whether the user verified its identity key.
    pub fn pinned_contacts(&self) -> Result<Vec<LinkedContact>> {
        let kv = self.provider.kv();
        self.directory
            .signed_lists(kv, &self.me.username)?
            .into_iter()
            .map(|(username, device_list)| {
                Ok(LinkedContact {
                    verified: self.is_verified(&username)?,
                    username,
                    device_list,
                })
            })
            .collect()
    }

    /// On the new device: opens the sealed bundle from the approving device with this device's
    /// link secret and code, installs the account identity and pins the account's contacts
    /// (with their verification marks). Returns the contacts it pinned and the history
    /// archive's pointer, if the approving device uploaded one.
    pub fn complete_link(&mut self, sealed: &[u8]) -> Result<LinkCompleted> {
        let kv = self.provider.kv();
        let (Some(secret), Some(offer)) = (kv.get(LINK_SECRET_KEY)?, kv.get(LINK_OFFER_KEY)?)
        else {
            return Err(Error::State("no device link in progress"));
        };
        let secret: [u8; 32] = secret
            .as_slice()
            .try_into()
            .map_err(|_| StoreError::Codec)?;
        let offer = LinkOffer::decode(&offer)?;
        let code = self.link_code()?;
        let mut bundle = LinkSecret::from_bytes(secret).open(&offer, &code, sealed)?;
        self.atomically(|e| {
            e.install_account_identity(bundle.identity, &bundle.own_list)?;
            let mut pinned = Vec::with_capacity(bundle.contacts.len());
            for contact in std::mem::take(&mut bundle.contacts) {
                if contact.username == e.me.username
                    || validate_username(&contact.username).is_err()
                {
                    continue;
                }
                // The bundle is authenticated by the code, so these lists come from the
                // account's own device; one that does not verify is skipped, not trusted.
                if e.directory
                    .accept(
                        e.provider.kv(),
                        &contact.username,
                        &contact.device_list,
                        false,
                    )
                    .is_err()
                {
                    continue;
                }
                if contact.verified {
                    e.mark_verified(&contact.username)?;
                }
                pinned.push(contact);
            }
            e.provider.kv().delete(LINK_SECRET_KEY)?;
            e.provider.kv().delete(LINK_CODE_KEY)?;
            e.provider.kv().delete(LINK_OFFER_KEY)?;
            Ok(LinkCompleted {
                contacts: pinned,
                history: bundle.history,
            })
        })
    }

    /// Signs a [`crate::device_auth::LoginProof`] with this device's key, to sign in to the
    /// server as this existing device. Only this device's own username and id are signed.
    pub fn sign_login_proof(&self, login_id: &str, challenge: &[u8]) -> Result<Vec<u8>> {
        let proof = crate::device_auth::LoginProof {
            username: &self.me.username,
            device_id: self.me.device_id,
            login_id,
            challenge,
        };
        openmls_traits::signatures::Signer::sign(&self.signer, &proof.message())
            .map_err(|_| Error::State("signing the login proof failed"))
    }

    /// Records `view` as the newest key-transparency root this device verified; every message
    /// it encrypts from now on states it (see [`crate::content::SenderState`]). An older view
    /// than the one recorded is ignored.
    pub fn set_directory_view(&mut self, view: DirectoryView) -> Result<()> {
        if self
            .directory_view()?
            .is_some_and(|seen| seen.epoch > view.epoch)
        {
            return Ok(());
        }
        let mut bytes = view.epoch.to_be_bytes().to_vec();
        bytes.extend_from_slice(&view.root);
        self.provider.kv().put(DIRECTORY_VIEW_KEY, &bytes)?;
        Ok(())
    }

    /// The newest key-transparency root recorded with [`Engine::set_directory_view`].
    pub fn directory_view(&self) -> Result<Option<DirectoryView>> {
        let Some(bytes) = self.provider.kv().get(DIRECTORY_VIEW_KEY)? else {
            return Ok(None);
        };
        let malformed = || Error::State("the stored directory view is malformed");
        let (epoch, root) = bytes.split_at_checked(8).ok_or_else(malformed)?;
        Ok(Some(DirectoryView {
            epoch: u64::from_be_bytes(epoch.try_into().map_err(|_| malformed())?),
            root: root.try_into().map_err(|_| malformed())?,
        }))
    }

    /// What this device states about its keys in each message: its account's device-list
    /// version and its directory view.
    pub(crate) fn sender_state(&self) -> Result<SenderState> {
        Ok(SenderState {
            list_version: self
                .directory
                .list(&self.me.username)
                .map_or(0, |list| list.version),
            directory: self.directory_view()?,
        })
    }

    /// Records that the user verified `username`'s currently pinned identity key (compared
    /// safety numbers). The mark holds only for that key: it lapses when the identity changes.
    pub fn mark_verified(&mut self, username: &str) -> Result<()> {
        let key = self
            .directory
            .identity(username)
            .ok_or(Error::State("no identity key pinned for this account"))?;
        let record = [VERIFIED_PREFIX, username.as_bytes()].concat();
        self.provider.kv().put(&record, key.as_bytes())?;
        Ok(())
    }

    /// Whether the user verified `username`'s currently pinned identity key.
    pub fn is_verified(&self, username: &str) -> Result<bool> {
        let Some(key) = self.directory.identity(username) else {
            return Ok(false);
        };
        let record = [VERIFIED_PREFIX, username.as_bytes()].concat();
        Ok(self
            .provider
            .kv()
            .get(&record)?
            .is_some_and(|stored| stored.as_slice() == key.as_bytes()))
    }

    /// Verifies `signed` as `username`'s device list and remembers it.
    ///
    /// The first list pins the account's identity key. A list signed by a different key is
    /// refused with [`IdentityError::IdentityChanged`]; a list older than the one known is refused
    /// as a rollback.
    pub fn accept_device_list(
        &mut self,
        username: &str,
        signed: &SignedDeviceList,
    ) -> Result<DirectoryChange> {
        self.directory
            .accept(self.provider.kv(), username, signed, false)
    }

    /// Accepts a changed identity key for `username` after the user has verified it (for
    /// example by comparing the new safety number).
    pub fn trust_new_identity(
        &mut self,
        username: &str,
        signed: &SignedDeviceList,
    ) -> Result<DirectoryChange> {
        self.directory
            .accept(self.provider.kv(), username, signed, true)
    }

    /// The latest accepted device list of `username`, if known.
    pub fn device_list(&self, username: &str) -> Option<&DeviceList> {
        self.directory.list(username)
    }

    /// The pinned identity key of `username`, if known.
    pub fn identity_key(&self, username: &str) -> Option<IdentityKey> {
        self.directory.identity(username)
    }

    /// The safety number between this account and `peer`; both must be known.
    pub fn safety_number(&self, peer: &str) -> Result<SafetyNumber> {
        let mine = self
            .identity_key(&self.me.username)
            .ok_or(Error::State("own device list unknown"))?;
        let theirs = self
            .identity_key(peer)
            .ok_or_else(|| ConversationError::UnknownAccounts(vec![peer.to_owned()]))?;
        Ok(SafetyNumber::new(
            &self.me.username,
            mine.as_bytes(),
            peer,
            theirs.as_bytes(),
        ))
    }

    /// Creates `count` one-time key packages (or one last-resort package) for upload; their
    /// private keys stay in the store until a Welcome uses them.
    pub fn generate_key_packages(
        &mut self,
        count: usize,
        last_resort: bool,
    ) -> Result<Vec<Vec<u8>>> {
        self.atomically(|e| {
            let mut out = Vec::with_capacity(count);
            for _ in 0..count {
                let mut builder = KeyPackage::builder().leaf_node_capabilities(capabilities());
                if last_resort {
                    builder = builder.mark_as_last_resort();
                }
                let bundle = builder
                    .build(
                        e.config.suite.ciphersuite(),
                        &e.provider,
                        &e.signer,
                        e.credential_with_key(),
                    )
                    .map_err(internal)?;
                out.push(
                    bundle
                        .key_package()
                        .tls_serialize_detached()
                        .map_err(internal)?,
                );
            }
            Ok(out)
        })
    }

    fn credential_with_key(&self) -> CredentialWithKey {
        CredentialWithKey {
            credential: BasicCredential::new(self.me.to_identity()).into(),
            signature_key: self.signer.public_key().to_vec().into(),
        }
    }

    /// Runs `f` as one transaction: its writes reach the caller's store only if it succeeds.
    fn atomically<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.provider.kv().begin()?;
        match f(self) {
            Ok(value) => match self.provider.kv().commit() {
                Ok(()) => Ok(value),
                Err(e) => {
                    self.groups.clear();
                    Err(e.into())
                }
            },
            Err(e) => {
                self.provider.kv().rollback();
                // In-memory group objects may hold the failed call's changes: reload them.
                self.groups.clear();
                Err(e)
            }
        }
    }

    fn join_config(&self) -> MlsGroupJoinConfig {
        MlsGroupJoinConfig::builder()
            .wire_format_policy(WIRE_FORMAT_POLICY)
            .use_ratchet_tree_extension(true)
            .max_past_epochs(self.config.max_past_epochs)
            .padding_size(self.config.padding)
            .sender_ratchet_configuration(SenderRatchetConfiguration::new(
                self.config.out_of_order_tolerance,
                self.config.maximum_forward_distance,
            ))
            .build()
    }

    /// The conversation's current metadata key, if this device holds one.
    pub(crate) fn metadata_key(
        &self,
        conversation: ConversationId,
    ) -> Result<Option<metadata::MetadataKey>> {
        Ok(self
            .provider
            .kv()
            .get(&records::metadata_key_key(&conversation.0))?
            .and_then(|b| metadata::MetadataKey::from_slice(&b)))
    }

    pub(crate) fn save_metadata_key(
        &self,
        conversation: ConversationId,
        key: &metadata::MetadataKey,
    ) -> Result<()> {
        Ok(self
            .provider
            .kv()
            .put(&records::metadata_key_key(&conversation.0), key.as_bytes())?)
    }

    fn suite_of(group: &MlsGroup) -> Result<Suite> {
        Suite::from_ciphersuite(group.ciphersuite())
            .ok_or(Error::Conversation(ConversationError::UnsupportedSuite))
    }
}

/// Handshake messages (commits, proposals) go out as PublicMessages, which the delivery service
/// validates against the group's public state; application messages are always PrivateMessages.
/// Incoming, OpenMLS accepts both; [`Engine::process`] then accepts handshakes only as
/// PublicMessages and application messages only as PrivateMessages.
pub(crate) const WIRE_FORMAT_POLICY: WireFormatPolicy = MIXED_PLAINTEXT_WIRE_FORMAT_POLICY;

/// Leaf capabilities every Nightjar device advertises.
fn capabilities() -> Capabilities {
    Capabilities::new(
        None,
        Some(&[Suite::XWing.ciphersuite(), Suite::Classic.ciphersuite()]),
        Some(
            &[
                records::nightjar_extension_types().as_slice(),
                // Key packages marked last-resort carry this extension; a leaf must advertise it.
                &[ExtensionType::LastResort],
            ]
            .concat(),
        ),
        None,
        Some(&[CredentialType::Basic]),
    )
}

/// Parses the Nightjar device credential inside an MLS credential.
pub(crate) fn device_credential(
    credential: &Credential,
) -> Result<DeviceCredential, ConversationError> {
    let basic =
        BasicCredential::try_from(credential.clone()).map_err(|_| ConversationError::Malformed)?;
    DeviceCredential::from_identity(basic.identity()).map_err(|_| ConversationError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::ConversationId;

    #[test]
    fn conversation_id_text_form_is_canonical() {
        let id = ConversationId([0xab; 16]);
        assert_eq!(ConversationId::parse(&id.to_string()), Some(id));
        assert_eq!(ConversationId::parse(&"AB".repeat(16)), None);
        assert_eq!(
            ConversationId::parse(&format!("+f{}", "00".repeat(15))),
            None
        );
        assert_eq!(ConversationId::parse("00"), None);
    }

    /// Debug output near secrets is pinned: it never shows key material.
    #[test]
    fn engine_debug_shows_no_secrets() {
        let store = crate::storage::MemoryStore::new();
        let (engine, _) =
            super::Engine::create_account(store, "alice", Default::default(), 0).unwrap();
        let text = format!("{engine:?}");
        assert!(
            text.starts_with("Engine { device: DeviceCredential { username: \"alice\""),
            "{text}"
        );
        assert!(text.contains("suite: XWing"), "{text}");
        let seed = engine.signer.seed();
        let hex: String = seed[..4].iter().map(|b| format!("{b:02x}")).collect();
        assert!(!text.contains(&hex));
        assert_eq!(format!("{:?}", engine.signer), "DeviceSigner { .. }");
        let identity = format!("{:?}", engine.account_identity().unwrap());
        assert!(
            identity.starts_with("AccountIdentity { public: IdentityKey("),
            "{identity}"
        );
    }
}
