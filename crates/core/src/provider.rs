//! The OpenMLS provider: libcrux cryptography (X-Wing, ChaCha20-Poly1305, Ed25519 verification)
//! over the caller's store, and the device's signer.

use ed25519_dalek::{Signer as _, SigningKey};
use openmls_libcrux_crypto::CryptoProvider;
use openmls_traits::OpenMlsProvider;
use openmls_traits::signatures::{Signer, SignerError};
use openmls_traits::types::SignatureScheme;
use zeroize::Zeroizing;

use crate::storage::{KvStore, MlsStorage};

/// Binds the crypto backend to the caller's store for OpenMLS.
pub(crate) struct Provider<S> {
    crypto: CryptoProvider,
    storage: MlsStorage<S>,
}

impl<S: KvStore> Provider<S> {
    pub(crate) fn new(store: S) -> Result<Self, openmls_traits::types::CryptoError> {
        Ok(Self {
            crypto: CryptoProvider::new()?,
            storage: MlsStorage::new(store),
        })
    }

    /// The caller's store, for the engine's own records.
    pub(crate) fn kv(&self) -> &S {
        self.storage.kv()
    }
}

impl<S: KvStore> OpenMlsProvider for Provider<S> {
    type CryptoProvider = CryptoProvider;
    type RandProvider = CryptoProvider;
    type StorageProvider = MlsStorage<S>;

    fn storage(&self) -> &Self::StorageProvider {
        &self.storage
    }

    fn crypto(&self) -> &Self::CryptoProvider {
        &self.crypto
    }

    fn rand(&self) -> &Self::RandProvider {
        &self.crypto
    }
}

/// A device's MLS signing key. It keeps the expanded Ed25519 key, so signing does not rebuild it
/// each time (about half the cost of a sign); the key is wiped on drop and never printed.
pub(crate) struct DeviceSigner {
    key: SigningKey,
}

impl DeviceSigner {
    pub(crate) fn generate() -> Result<Self, getrandom::Error> {
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(&mut seed[..])?;
        Ok(Self::from_seed(&seed))
    }

    pub(crate) fn from_seed(seed: &[u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(seed),
        }
    }

    pub(crate) fn seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.key.to_bytes())
    }

    pub(crate) fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }
}

impl Signer for DeviceSigner {
    fn sign(&self, payload: &[u8]) -> Result<Vec<u8>, SignerError> {
        Ok(self.key.sign(payload).to_bytes().to_vec())
    }

    fn signature_scheme(&self) -> SignatureScheme {
        SignatureScheme::ED25519
    }
}

impl std::fmt::Debug for DeviceSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceSigner").finish_non_exhaustive()
    }
}
