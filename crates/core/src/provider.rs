//! The OpenMLS provider: [`Crypto`] over the caller's store, and the device's signer.
//!
//! [`Crypto`] is libcrux's provider (X-Wing, X25519, ChaCha20-Poly1305, its randomness) with
//! the three operations every message pays for handed to RustCrypto's implementations, which
//! are faster on this hardware: Ed25519 verification (`ed25519-dalek`: about 31 µs against
//! libcrux's 52 µs), and SHA-256, HMAC-SHA-256 and HKDF-SHA-256 (`sha2`, `hmac`, `hkdf`, which
//! use the CPU's SHA extensions where it has them; libcrux's portable SHA-256 does not). The
//! results are the same bytes (tests below compare them); verification is strict (RFC 8032
//! §5.1.7 with canonical encodings and no small-order keys), which every signature an honest
//! device makes passes.

use ed25519_dalek::{Signer as _, SigningKey};
use hmac::Mac as _;
use openmls_libcrux_crypto::CryptoProvider;
use openmls_traits::OpenMlsProvider;
use openmls_traits::crypto::OpenMlsCrypto;
use openmls_traits::signatures::{Signer, SignerError};
use openmls_traits::types::{
    AeadType, Ciphersuite, CryptoError, ExporterSecret, HashType, HpkeCiphertext, HpkeConfig,
    HpkeKeyPair, KemOutput, SignatureScheme,
};
use sha2::{Digest as _, Sha256};
use tls_codec::SecretVLBytes;
use zeroize::Zeroizing;

use crate::storage::{KvStore, MlsStorage};

/// Binds the crypto backend to the caller's store for OpenMLS.
pub(crate) struct Provider<S> {
    crypto: Crypto,
    storage: MlsStorage<S>,
}

impl<S: KvStore> Provider<S> {
    pub(crate) fn new(store: S) -> Result<Self, CryptoError> {
        Ok(Self {
            crypto: Crypto {
                libcrux: CryptoProvider::new()?,
            },
            storage: MlsStorage::new(store),
        })
    }

    /// The caller's store, for the engine's own records.
    pub(crate) fn kv(&self) -> &S {
        self.storage.kv()
    }
}

impl<S: KvStore> OpenMlsProvider for Provider<S> {
    type CryptoProvider = Crypto;
    type RandProvider = CryptoProvider;
    type StorageProvider = MlsStorage<S>;

    fn storage(&self) -> &Self::StorageProvider {
        &self.storage
    }

    fn crypto(&self) -> &Self::CryptoProvider {
        &self.crypto
    }

    fn rand(&self) -> &Self::RandProvider {
        &self.crypto.libcrux
    }
}

/// libcrux's cryptography with Ed25519 verification and the SHA-256 family from RustCrypto
/// (see the module's documentation).
pub(crate) struct Crypto {
    libcrux: CryptoProvider,
}

impl OpenMlsCrypto for Crypto {
    fn supports(&self, ciphersuite: Ciphersuite) -> Result<(), CryptoError> {
        self.libcrux.supports(ciphersuite)
    }

    fn supported_ciphersuites(&self) -> Vec<Ciphersuite> {
        self.libcrux.supported_ciphersuites()
    }

    fn hkdf_extract(
        &self,
        hash_type: HashType,
        salt: &[u8],
        ikm: &[u8],
    ) -> Result<SecretVLBytes, CryptoError> {
        match hash_type {
            HashType::Sha2_256 => {
                let (prk, _) = hkdf::Hkdf::<Sha256>::extract(Some(salt), ikm);
                Ok(prk.as_slice().into())
            }
            _ => self.libcrux.hkdf_extract(hash_type, salt, ikm),
        }
    }

    fn hmac(
        &self,
        hash_type: HashType,
        key: &[u8],
        message: &[u8],
    ) -> Result<SecretVLBytes, CryptoError> {
        match hash_type {
            HashType::Sha2_256 => {
                let mut mac = hmac::Hmac::<Sha256>::new_from_slice(key)
                    .map_err(|_| CryptoError::InvalidLength)?;
                mac.update(message);
                Ok(mac.finalize().into_bytes().as_slice().into())
            }
            _ => self.libcrux.hmac(hash_type, key, message),
        }
    }

    fn hkdf_expand(
        &self,
        hash_type: HashType,
        prk: &[u8],
        info: &[u8],
        okm_len: usize,
    ) -> Result<SecretVLBytes, CryptoError> {
        match hash_type {
            HashType::Sha2_256 => {
                let hkdf =
                    hkdf::Hkdf::<Sha256>::from_prk(prk).map_err(|_| CryptoError::InvalidLength)?;
                let mut okm = Zeroizing::new(vec![0u8; okm_len]);
                hkdf.expand(info, &mut okm)
                    .map_err(|_| CryptoError::HkdfOutputLengthInvalid)?;
                Ok(okm.as_slice().into())
            }
            _ => self.libcrux.hkdf_expand(hash_type, prk, info, okm_len),
        }
    }

    fn hash(&self, hash_type: HashType, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        match hash_type {
            HashType::Sha2_256 => Ok(Sha256::digest(data).to_vec()),
            _ => self.libcrux.hash(hash_type, data),
        }
    }

    fn aead_encrypt(
        &self,
        alg: AeadType,
        key: &[u8],
        data: &[u8],
        nonce: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        self.libcrux.aead_encrypt(alg, key, data, nonce, aad)
    }

    fn aead_decrypt(
        &self,
        alg: AeadType,
        key: &[u8],
        ct_tag: &[u8],
        nonce: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        self.libcrux.aead_decrypt(alg, key, ct_tag, nonce, aad)
    }

    fn signature_key_gen(&self, alg: SignatureScheme) -> Result<(Vec<u8>, Vec<u8>), CryptoError> {
        self.libcrux.signature_key_gen(alg)
    }

    fn verify_signature(
        &self,
        alg: SignatureScheme,
        data: &[u8],
        pk: &[u8],
        signature: &[u8],
    ) -> Result<(), CryptoError> {
        if alg != SignatureScheme::ED25519 {
            return self.libcrux.verify_signature(alg, data, pk, signature);
        }
        let pk = <&[u8; 32]>::try_from(pk).map_err(|_| CryptoError::InvalidLength)?;
        let key = ed25519_dalek::VerifyingKey::from_bytes(pk)
            .map_err(|_| CryptoError::InvalidSignature)?;
        let signature = ed25519_dalek::Signature::from_slice(signature)
            .map_err(|_| CryptoError::InvalidLength)?;
        key.verify_strict(data, &signature)
            .map_err(|_| CryptoError::InvalidSignature)
    }

    fn sign(&self, alg: SignatureScheme, data: &[u8], key: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.libcrux.sign(alg, data, key)
    }

    fn hpke_seal(
        &self,
        config: HpkeConfig,
        pk_r: &[u8],
        info: &[u8],
        aad: &[u8],
        ptxt: &[u8],
    ) -> Result<HpkeCiphertext, CryptoError> {
        self.libcrux.hpke_seal(config, pk_r, info, aad, ptxt)
    }

    fn hpke_open(
        &self,
        config: HpkeConfig,
        input: &HpkeCiphertext,
        sk_r: &[u8],
        info: &[u8],
        aad: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        self.libcrux.hpke_open(config, input, sk_r, info, aad)
    }

    fn hpke_setup_sender_and_export(
        &self,
        config: HpkeConfig,
        pk_r: &[u8],
        info: &[u8],
        exporter_context: &[u8],
        exporter_length: usize,
    ) -> Result<(KemOutput, ExporterSecret), CryptoError> {
        self.libcrux.hpke_setup_sender_and_export(
            config,
            pk_r,
            info,
            exporter_context,
            exporter_length,
        )
    }

    fn hpke_setup_receiver_and_export(
        &self,
        config: HpkeConfig,
        enc: &[u8],
        sk_r: &[u8],
        info: &[u8],
        exporter_context: &[u8],
        exporter_length: usize,
    ) -> Result<ExporterSecret, CryptoError> {
        self.libcrux.hpke_setup_receiver_and_export(
            config,
            enc,
            sk_r,
            info,
            exporter_context,
            exporter_length,
        )
    }

    fn derive_hpke_keypair(
        &self,
        config: HpkeConfig,
        ikm: &[u8],
    ) -> Result<HpkeKeyPair, CryptoError> {
        self.libcrux.derive_hpke_keypair(config, ikm)
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn both() -> (Crypto, CryptoProvider) {
        (
            Crypto {
                libcrux: CryptoProvider::new().unwrap(),
            },
            CryptoProvider::new().unwrap(),
        )
    }

    proptest! {
        /// The SHA-256 family gives libcrux's bytes exactly, for any input.
        #[test]
        fn sha256_family_matches_libcrux(
            key in proptest::collection::vec(any::<u8>(), 0..100),
            data in proptest::collection::vec(any::<u8>(), 0..300),
            okm_len in 1usize..200,
        ) {
            let (ours, libcrux) = both();
            let h = HashType::Sha2_256;
            prop_assert_eq!(ours.hash(h, &data).unwrap(), libcrux.hash(h, &data).unwrap());
            let (mac, expected) = (ours.hmac(h, &key, &data).unwrap(), libcrux.hmac(h, &key, &data).unwrap());
            prop_assert_eq!(mac.as_slice(), expected.as_slice());
            let (prk, expected) = (
                ours.hkdf_extract(h, &key, &data).unwrap(),
                libcrux.hkdf_extract(h, &key, &data).unwrap(),
            );
            prop_assert_eq!(prk.as_slice(), expected.as_slice());
            let (okm, expected) = (
                ours.hkdf_expand(h, prk.as_slice(), &data, okm_len).unwrap(),
                libcrux.hkdf_expand(h, prk.as_slice(), &data, okm_len).unwrap(),
            );
            prop_assert_eq!(okm.as_slice(), expected.as_slice());
        }

        /// Ed25519: a device's signature verifies, any changed bit of the data, the signature
        /// or the key is refused, as libcrux decides.
        #[test]
        fn ed25519_verification_agrees_with_libcrux(
            seed in any::<[u8; 32]>(),
            data in proptest::collection::vec(any::<u8>(), 0..200),
            flip in 0usize..(8 * 64),
        ) {
            let (ours, libcrux) = both();
            let signer = DeviceSigner::from_seed(&seed);
            let key = signer.public_key();
            let signature = signer.sign(&data).unwrap();
            fn verify(c: &impl OpenMlsCrypto, d: &[u8], k: &[u8], s: &[u8]) -> bool {
                c.verify_signature(SignatureScheme::ED25519, d, k, s).is_ok()
            }
            prop_assert!(verify(&ours, &data, &key, &signature));
            prop_assert!(verify(&libcrux, &data, &key, &signature));
            let mut bad_signature = signature.clone();
            bad_signature[flip / 8] ^= 1 << (flip % 8);
            prop_assert!(!verify(&ours, &data, &key, &bad_signature));
            prop_assert!(!verify(&libcrux, &data, &key, &bad_signature));
            let mut bad_key = key;
            bad_key[(flip / 8) % 32] ^= 1 << (flip % 8);
            prop_assert!(!verify(&ours, &data, &bad_key, &signature));
            if !data.is_empty() {
                let mut bad_data = data.clone();
                bad_data[(flip / 8) % data.len()] ^= 1 << (flip % 8);
                prop_assert!(!verify(&ours, &bad_data, &key, &signature));
            }
        }
    }

    #[test]
    fn malformed_keys_and_signatures_are_errors() {
        let (ours, _) = both();
        let ed = SignatureScheme::ED25519;
        assert_eq!(
            ours.verify_signature(ed, b"x", &[0; 31], &[0; 64]),
            Err(CryptoError::InvalidLength)
        );
        assert_eq!(
            ours.verify_signature(ed, b"x", &[0; 32], &[0; 63]),
            Err(CryptoError::InvalidLength)
        );
        // The identity point is a small-order key: refused whatever the signature.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        assert_eq!(
            ours.verify_signature(ed, b"x", &identity, &[0; 64]),
            Err(CryptoError::InvalidSignature)
        );
        assert_eq!(
            ours.hkdf_expand(HashType::Sha2_256, &[7; 32], b"", 255 * 32 + 1)
                .map(|_| ()),
            Err(CryptoError::HkdfOutputLengthInvalid)
        );
    }
}
