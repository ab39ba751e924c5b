//! A hostile member's MLS toolkit: builds, with OpenMLS directly, what `nightjar-core` refuses
//! to make, signed with a real account's registered device key (read from its engine's store),
//! so every leaf still passes the victims' device-list checks.
//!
//! Shared by the server's and the client SDK's hostile tests (`#[path]`-included).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code,
    unreachable_pub,
    missing_docs
)]

use ed25519_dalek::{Signer as _, SigningKey};
use nightjar_core::identity::DeviceCredential;
use nightjar_core::storage::KvStore;
use openmls::prelude::*;
use openmls_libcrux_crypto::Provider;
use openmls_traits::signatures::{Signer, SignerError};
use openmls_traits::types::SignatureScheme;
use tls_codec::Serialize as _;

/// The wire format Nightjar clients use: handshakes as PublicMessages (which the server
/// validates), application messages as PrivateMessages. A hostile device uses it too, or the
/// server refuses its commits on their form before looking at what they do.
pub const HOSTILE_WIRE_FORMAT: WireFormatPolicy = MIXED_PLAINTEXT_WIRE_FORMAT_POLICY;

/// Nightjar's group-context extension for the conversation kind (1 = direct, 2 = group).
pub const KIND_EXTENSION: u16 = 0xF1A1;
/// Nightjar's group-context extension for the encrypted name and avatar.
pub const METADATA_EXTENSION: u16 = 0xF1A0;

/// A device key used outside the engine.
pub struct SeedSigner(SigningKey);

impl Signer for SeedSigner {
    fn sign(&self, payload: &[u8]) -> Result<Vec<u8>, SignerError> {
        Ok(self.0.sign(payload).to_bytes().to_vec())
    }

    fn signature_scheme(&self) -> SignatureScheme {
        SignatureScheme::ED25519
    }
}

/// The Ed25519 seed of the device whose engine state is in `kv` (the engine's device record).
pub fn device_seed(kv: &impl KvStore) -> [u8; 32] {
    let record = kv
        .get(b"nj/device")
        .unwrap()
        .expect("an engine device record");
    let value: serde_json::Value = serde_json::from_slice(&record).unwrap();
    let seed: Vec<u8> = serde_json::from_value(value["signing_seed"].clone()).unwrap();
    seed.try_into().unwrap()
}

/// A member that makes its own MLS messages.
pub struct HostileDevice {
    pub provider: Provider,
    pub signer: SeedSigner,
    pub me: DeviceCredential,
    pub group: Option<MlsGroup>,
}

/// A crafted commit (creating a group) and the Welcome for the devices it adds.
pub struct Crafted {
    pub group_id: [u8; 16],
    pub epoch: u64,
    pub commit: Vec<u8>,
    pub welcome: Vec<u8>,
    /// The GroupInfo of the new group before the commit, signed by its creator: the public
    /// state the server validates the commit against (`SendRequest::group_info`).
    pub group_info: Vec<u8>,
    pub recipients: Vec<DeviceCredential>,
}

impl HostileDevice {
    /// Acts as the device `me`, whose engine state is in `kv`.
    pub fn new(me: DeviceCredential, kv: &impl KvStore) -> Self {
        Self {
            provider: Provider::new().unwrap(),
            signer: SeedSigner(SigningKey::from_bytes(&device_seed(kv))),
            me,
            group: None,
        }
    }

    fn credential(&self) -> CredentialWithKey {
        CredentialWithKey {
            credential: BasicCredential::new(self.me.to_identity()).into(),
            signature_key: self.signer.0.verifying_key().to_bytes().to_vec().into(),
        }
    }

    /// Creates group `group_id` with the conversation-kind byte `kind` and adds every device
    /// of `key_packages` (claimed from the directory) in one commit at epoch 0.
    pub fn create_group(
        &mut self,
        suite: Ciphersuite,
        group_id: [u8; 16],
        kind: u8,
        key_packages: &[Vec<u8>],
    ) -> Crafted {
        let extensions = Extensions::from_vec(vec![
            Extension::Unknown(KIND_EXTENSION, UnknownExtension(vec![kind])),
            Extension::RequiredCapabilities(RequiredCapabilitiesExtension::new(
                &[
                    ExtensionType::Unknown(METADATA_EXTENSION),
                    ExtensionType::Unknown(KIND_EXTENSION),
                ],
                &[],
                &[],
            )),
        ])
        .unwrap();
        let capabilities = Capabilities::new(
            None,
            Some(&[suite]),
            Some(&[
                ExtensionType::Unknown(METADATA_EXTENSION),
                ExtensionType::Unknown(KIND_EXTENSION),
                ExtensionType::LastResort,
            ]),
            None,
            Some(&[CredentialType::Basic]),
        );
        let config = MlsGroupCreateConfig::builder()
            .ciphersuite(suite)
            .wire_format_policy(HOSTILE_WIRE_FORMAT)
            .use_ratchet_tree_extension(true)
            .capabilities(capabilities)
            .with_group_context_extensions(extensions)
            .build();
        let mut group = MlsGroup::new_with_group_id(
            &self.provider,
            &self.signer,
            &config,
            GroupId::from_slice(&group_id),
            self.credential(),
        )
        .unwrap();
        let group_info = group
            .export_group_info(self.provider.crypto(), &self.signer, true)
            .unwrap()
            .tls_serialize_detached()
            .unwrap();
        let packages: Vec<KeyPackage> = key_packages
            .iter()
            .map(|bytes| {
                KeyPackageIn::tls_deserialize_exact_bytes(bytes)
                    .unwrap()
                    .validate(self.provider.crypto(), ProtocolVersion::Mls10)
                    .unwrap()
            })
            .collect();
        let recipients = packages
            .iter()
            .map(|kp| {
                let basic = BasicCredential::try_from(kp.leaf_node().credential().clone()).unwrap();
                DeviceCredential::from_identity(basic.identity()).unwrap()
            })
            .collect();
        let (commit, welcome, _) = group
            .add_members(&self.provider, &self.signer, &packages)
            .unwrap();
        group.merge_pending_commit(&self.provider).unwrap();
        self.group = Some(group);
        Crafted {
            group_id,
            epoch: 0,
            commit: commit.tls_serialize_detached().unwrap(),
            welcome: welcome.tls_serialize_detached().unwrap(),
            group_info,
            recipients,
        }
    }

    /// Tries to decrypt `bytes` with the crafted group; the application message's bytes if
    /// it was one this device could read.
    pub fn read(&mut self, bytes: &[u8]) -> Option<Vec<u8>> {
        let group = self.group.as_mut()?;
        let message = MlsMessageIn::tls_deserialize_exact_bytes(bytes).ok()?;
        let protocol: ProtocolMessage = match message.extract() {
            MlsMessageBodyIn::PrivateMessage(m) => m.into(),
            MlsMessageBodyIn::PublicMessage(m) => m.into(),
            _ => return None,
        };
        match group
            .process_message(&self.provider, protocol)
            .ok()?
            .into_content()
        {
            ProcessedMessageContent::ApplicationMessage(app) => Some(app.into_bytes()),
            _ => None,
        }
    }
}
