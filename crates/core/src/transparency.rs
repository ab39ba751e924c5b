//! Key transparency: what the server's verifiable directory holds for an account, the epoch
//! roots the server signs, and the client-side checks of its proofs.
//!
//! The directory (Meta's AKD, built on the server) maps each username to a [`DirectoryEntry`]:
//! the account's identity key and the version and hash of its current signed device list. The
//! server publishes changes in epochs and signs every epoch's root hash with a key clients pin
//! ([`RootKey`]). A client accepts an identity key or device list only with a lookup proof
//! that binds it to a signed root ([`verify_lookup`]); it checks its own account's complete
//! history ([`verify_history`]) for changes it did not make. Proofs travel as AKD's protobuf
//! encoding; verification is `akd_core`'s, which also runs in the browser (wasm32).

use std::fmt;

use akd_core::configuration::{DomainLabel, ExperimentalConfiguration};
use akd_core::verify::history::{HistoryParams, HistoryVerificationParams};
use akd_core::{AkdLabel, HistoryProof, LookupProof};
use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use protobuf::Message as _;
use sha2::{Digest as _, Sha256};

use crate::identity::IdentityKey;

/// The directory's domain label, mixed into every hash of the tree.
#[derive(Clone, Copy, Debug)]
pub struct NightjarDomain;

impl DomainLabel for NightjarDomain {
    fn domain_label() -> &'static [u8] {
        b"nightjar key transparency v1"
    }
}

/// The AKD configuration (hash function, commitment scheme) of Nightjar's directory.
pub type KtConfig = ExperimentalConfiguration<NightjarDomain>;

/// Largest lookup or history proof a client decodes; a larger one is refused before parsing.
pub const MAX_PROOF_BYTES: usize = 1 << 20;

/// Largest append-only proof (one epoch to the next) an auditor decodes.
pub const MAX_AUDIT_PROOF_BYTES: usize = 256 << 20;

/// Why a transparency check failed. Every variant but [`KtError::Malformed`] means the server
/// showed something the directory does not prove: the caller must not use it.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KtError {
    /// Bytes that do not decode as what they claim to be.
    #[error("malformed transparency data")]
    Malformed,
    /// An epoch root not signed by the pinned directory key.
    #[error("epoch {0}'s root is not signed by the directory key")]
    BadRootSignature(u64),
    /// A proof that does not verify against the signed root.
    #[error("the directory's proof does not verify: {0}")]
    BadProof(String),
    /// The directory proves a different entry than the one the server served.
    #[error("the directory holds a different entry for {0} than the one served")]
    EntryMismatch(String),
    /// A root older than one already verified.
    #[error("the directory went back from epoch {seen} to epoch {offered}")]
    Rollback {
        /// The newest epoch this client verified.
        seen: u64,
        /// The epoch now offered.
        offered: u64,
    },
    /// Two different roots for one epoch.
    #[error("the directory shows two different roots for epoch {0}")]
    Fork(u64),
    /// An epoch's tree is not the tree before it plus new entries: a published entry was
    /// changed or removed.
    #[error("not append-only: {0}")]
    NotAppendOnly(String),
}

/// What the directory publishes for one account.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct DirectoryEntry {
    /// The account's identity key.
    pub identity_key: IdentityKey,
    /// The version of its current signed device list.
    pub list_version: u64,
    /// SHA-256 of that signed list's encoding.
    pub list_hash: [u8; 32],
}

const ENTRY_TAG: &[u8; 4] = b"NJK1";
const ENTRY_LEN: usize = 4 + 32 + 8 + 32;

impl DirectoryEntry {
    /// The entry for a signed device list, as the server computes it when it publishes.
    /// Does not verify the list (the caller has).
    pub fn for_list(identity_key: IdentityKey, list_version: u64, signed: &[u8]) -> Self {
        Self {
            identity_key,
            list_version,
            list_hash: Sha256::digest(signed).into(),
        }
    }

    /// Whether `signed` (an encoded signed device list of `version` under `identity_key`) is
    /// exactly this entry.
    pub fn matches(&self, identity_key: IdentityKey, list_version: u64, signed: &[u8]) -> bool {
        *self == Self::for_list(identity_key, list_version, signed)
    }

    /// The directory value.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(ENTRY_LEN);
        out.extend_from_slice(ENTRY_TAG);
        out.extend_from_slice(self.identity_key.as_bytes());
        out.extend_from_slice(&self.list_version.to_be_bytes());
        out.extend_from_slice(&self.list_hash);
        out
    }

    /// Decodes a directory value.
    pub fn decode(bytes: &[u8]) -> Result<Self, KtError> {
        if bytes.len() != ENTRY_LEN || &bytes[..4] != ENTRY_TAG {
            return Err(KtError::Malformed);
        }
        let key: [u8; 32] = bytes[4..36].try_into().map_err(|_| KtError::Malformed)?;
        let version: [u8; 8] = bytes[36..44].try_into().map_err(|_| KtError::Malformed)?;
        let hash: [u8; 32] = bytes[44..76].try_into().map_err(|_| KtError::Malformed)?;
        Ok(Self {
            identity_key: IdentityKey(key),
            list_version: u64::from_be_bytes(version),
            list_hash: hash,
        })
    }
}

/// The public key the server signs epoch roots with; clients pin it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct RootKey(pub [u8; 32]);

/// The keys a client needs to check the directory: the root-signing key and the VRF public
/// key that derives each username's position in the tree.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct DirectoryKeys {
    /// Verifies epoch roots.
    pub root_key: RootKey,
    /// AKD's VRF public key.
    pub vrf_public_key: Vec<u8>,
}

impl DirectoryKeys {
    /// A short printable fingerprint of both keys, for pinning out of band.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"nightjar directory keys v1\0");
        h.update(self.root_key.0);
        h.update(&self.vrf_public_key);
        let digest = h.finalize();
        digest[..16].iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// An epoch's root hash with the server's signature over it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SignedRoot {
    /// The epoch (the first published epoch is 1; 0 is the empty directory).
    pub epoch: u64,
    /// The tree's root hash at that epoch.
    pub root: [u8; 32],
    /// Ed25519 signature by the [`RootKey`] over [`SignedRoot::message`].
    pub signature: [u8; 64],
}

impl fmt::Debug for SignedRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SignedRoot(epoch {}, {})", self.epoch, hex8(&self.root))
    }
}

fn hex8(bytes: &[u8]) -> String {
    bytes.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

impl SignedRoot {
    /// A root as it travels: `root` must be 32 bytes and `signature` 64 (not verified here).
    pub fn from_slices(epoch: u64, root: &[u8], signature: &[u8]) -> Result<Self, KtError> {
        Ok(Self {
            epoch,
            root: root.try_into().map_err(|_| KtError::Malformed)?,
            signature: signature.try_into().map_err(|_| KtError::Malformed)?,
        })
    }

    /// The bytes the server signs for `epoch` and `root`.
    pub fn message(epoch: u64, root: &[u8; 32]) -> Vec<u8> {
        let mut m = Vec::with_capacity(64);
        m.extend_from_slice(b"nightjar directory root v1\0");
        m.extend_from_slice(&epoch.to_be_bytes());
        m.extend_from_slice(root);
        m
    }

    /// Checks the signature under the pinned key.
    pub fn verify(&self, key: &RootKey) -> Result<(), KtError> {
        let key =
            VerifyingKey::from_bytes(&key.0).map_err(|_| KtError::BadRootSignature(self.epoch))?;
        key.verify(
            &Self::message(self.epoch, &self.root),
            &Signature::from_bytes(&self.signature),
        )
        .map_err(|_| KtError::BadRootSignature(self.epoch))
    }

    /// Checks that `self` may follow `seen`, the newest root this client verified: it is not
    /// older, and the same epoch has the same root. (Append-only between different epochs is
    /// the auditor's proof, not this check.)
    pub fn follows(&self, seen: &SignedRoot) -> Result<(), KtError> {
        if self.epoch < seen.epoch {
            return Err(KtError::Rollback {
                seen: seen.epoch,
                offered: self.epoch,
            });
        }
        if self.epoch == seen.epoch && self.root != seen.root {
            return Err(KtError::Fork(self.epoch));
        }
        Ok(())
    }
}

/// A verified lookup: the account's current entry and where the directory holds it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ProvenEntry {
    /// The entry.
    pub entry: DirectoryEntry,
    /// The epoch it was published in.
    pub published: u64,
    /// The account's directory version (1 for the first entry, one more per change).
    pub version: u64,
}

fn decode_proof<P: protobuf::Message>(bytes: &[u8]) -> Result<P, KtError> {
    if bytes.len() > MAX_PROOF_BYTES {
        return Err(KtError::Malformed);
    }
    P::parse_from_bytes(bytes).map_err(|_| KtError::Malformed)
}

/// Verifies a lookup proof for `username` against `root` (whose signature is checked too) and
/// returns the entry it proves is current.
pub fn verify_lookup(
    keys: &DirectoryKeys,
    root: &SignedRoot,
    username: &str,
    proof: &[u8],
) -> Result<ProvenEntry, KtError> {
    root.verify(&keys.root_key)?;
    let proto: akd_core::proto::specs::types::LookupProof = decode_proof(proof)?;
    let proof = LookupProof::try_from(&proto).map_err(|_| KtError::Malformed)?;
    let result = akd_core::verify::lookup_verify::<KtConfig>(
        &keys.vrf_public_key,
        root.root,
        root.epoch,
        AkdLabel::from(username),
        proof,
    )
    .map_err(|e| KtError::BadProof(e.to_string()))?;
    Ok(ProvenEntry {
        entry: DirectoryEntry::decode(&result.value.0)?,
        published: result.epoch,
        version: result.version,
    })
}

/// Verifies `username`'s complete history against `root` and returns every entry the
/// directory ever held for it, newest first.
pub fn verify_history(
    keys: &DirectoryKeys,
    root: &SignedRoot,
    username: &str,
    proof: &[u8],
) -> Result<Vec<ProvenEntry>, KtError> {
    root.verify(&keys.root_key)?;
    let proto: akd_core::proto::specs::types::HistoryProof = decode_proof(proof)?;
    let proof = HistoryProof::try_from(&proto).map_err(|_| KtError::Malformed)?;
    let results = akd_core::verify::key_history_verify::<KtConfig>(
        &keys.vrf_public_key,
        root.root,
        root.epoch,
        AkdLabel::from(username),
        proof,
        HistoryVerificationParams::Default {
            history_params: HistoryParams::Complete,
        },
    )
    .map_err(|e| KtError::BadProof(e.to_string()))?;
    results
        .into_iter()
        .map(|r| {
            Ok(ProvenEntry {
                entry: DirectoryEntry::decode(&r.value.0)?,
                published: r.epoch,
                version: r.version,
            })
        })
        .collect()
}

/// Encodes a lookup proof for the wire (the server's side of [`verify_lookup`]).
pub fn encode_lookup_proof(proof: &LookupProof) -> Vec<u8> {
    akd_core::proto::specs::types::LookupProof::from(proof)
        .write_to_bytes()
        .unwrap_or_default()
}

/// Encodes a history proof for the wire (the server's side of [`verify_history`]).
pub fn encode_history_proof(proof: &HistoryProof) -> Vec<u8> {
    akd_core::proto::specs::types::HistoryProof::from(proof)
        .write_to_bytes()
        .unwrap_or_default()
}

/// Checks AKD's append-only proof (protobuf, as the server keeps it for `to`'s epoch) that
/// `to`, the root of the epoch after `from`'s, only adds entries to `from`'s tree: nothing
/// published at `from` was changed or removed. Both roots must already be verified as signed.
///
/// This is AKD's auditor check (`akd::auditor::verify_consecutive_append_only`) run without
/// its task parallelism: each of the two trees is rebuilt from the proof's nodes in memory,
/// one after the other, so it needs no async runtime and runs in the browser as it does
/// natively.
pub fn verify_append_only(from: &SignedRoot, to: &SignedRoot, proof: &[u8]) -> Result<(), KtError> {
    if proof.len() > MAX_AUDIT_PROOF_BYTES {
        return Err(KtError::Malformed);
    }
    let proto = akd::proto::specs::types::AppendOnlyProof::parse_from_bytes(proof)
        .map_err(|_| KtError::Malformed)?;
    let proof = akd::AppendOnlyProof::try_from(&proto).map_err(|_| KtError::Malformed)?;
    let (Some(end_epoch), [single]) = (from.epoch.checked_add(1), proof.proofs.as_slice()) else {
        return Err(KtError::BadProof("not a proof of one epoch".into()));
    };
    if proof.epochs != [from.epoch] || to.epoch != end_epoch {
        return Err(KtError::BadProof(format!(
            "the append-only proof covers epochs {:?}, not {} to {}",
            proof.epochs, from.epoch, to.epoch
        )));
    }
    let unchanged = single.unchanged_nodes.clone();
    let mut grown = unchanged.clone();
    grown.extend(single.inserted.iter().map(|inserted| {
        let mut node = *inserted;
        node.value = akd_core::AzksValue(
            <KtConfig as akd_core::configuration::Configuration>::hash_leaf_with_commitment(
                inserted.value,
                end_epoch,
            )
            .0,
        );
        node
    }));
    if complete(tree_root(unchanged, None))? != from.root {
        return Err(KtError::NotAppendOnly(format!(
            "the proof's unchanged nodes do not make epoch {}'s root",
            from.epoch
        )));
    }
    if complete(tree_root(grown, Some(from.epoch)))? != to.root {
        return Err(KtError::NotAppendOnly(format!(
            "epoch {}'s root is not epoch {}'s tree plus the inserted entries",
            to.epoch, from.epoch
        )));
    }
    Ok(())
}

/// The root hash of an auditor's tree of `nodes`, as AKD's auditor builds it.
async fn tree_root(
    nodes: Vec<akd_core::AzksElement>,
    latest_epoch: Option<u64>,
) -> Result<[u8; 32], akd::errors::AkdError> {
    use akd::append_only_zks::InsertMode;
    use akd::storage::StorageManager;
    use akd::storage::memory::AsyncInMemoryDatabase;
    use akd::{Azks, AzksParallelismConfig};

    let manager = StorageManager::new_no_cache(
        AsyncInMemoryDatabase::new_with_remove_child_nodes_on_insertion(),
    );
    let mut azks = Azks::new::<KtConfig, _>(&manager).await?;
    if let Some(epoch) = latest_epoch {
        azks.latest_epoch = epoch;
    }
    azks.batch_insert_nodes::<KtConfig, _>(
        &manager,
        nodes,
        InsertMode::Auditor,
        AzksParallelismConfig::disabled(),
    )
    .await?;
    azks.get_root_hash::<KtConfig, _>(&manager).await
}

/// Runs a future that never waits on anything (the tree above lives in memory and spawns no
/// tasks) to its end, with no runtime.
fn complete(
    future: impl Future<Output = Result<[u8; 32], akd::errors::AkdError>>,
) -> Result<[u8; 32], KtError> {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    // A bound, not a loop forever: each poll does the whole computation unless something
    // unexpectedly yields.
    for _ in 0..1_000 {
        if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out.map_err(|e| KtError::BadProof(e.to_string()));
        }
    }
    Err(KtError::BadProof(
        "the append-only check did not finish".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer as _, SigningKey};

    fn signed(key: &SigningKey, epoch: u64, root: [u8; 32]) -> SignedRoot {
        SignedRoot {
            epoch,
            root,
            signature: key.sign(&SignedRoot::message(epoch, &root)).to_bytes(),
        }
    }

    #[test]
    fn entry_round_trips_and_refuses_other_lengths() {
        let e = DirectoryEntry::for_list(IdentityKey([7; 32]), 3, b"list");
        assert_eq!(DirectoryEntry::decode(&e.encode()), Ok(e));
        assert!(e.matches(IdentityKey([7; 32]), 3, b"list"));
        assert!(!e.matches(IdentityKey([7; 32]), 4, b"list"));
        assert!(!e.matches(IdentityKey([8; 32]), 3, b"list"));
        assert!(!e.matches(IdentityKey([7; 32]), 3, b"lisT"));
        let mut long = e.encode();
        long.push(0);
        assert_eq!(DirectoryEntry::decode(&long), Err(KtError::Malformed));
        assert_eq!(DirectoryEntry::decode(&long[..10]), Err(KtError::Malformed));
    }

    #[test]
    fn roots_verify_only_under_the_pinned_key_and_only_move_forward() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let other = SigningKey::from_bytes(&[2; 32]);
        let pinned = RootKey(key.verifying_key().to_bytes());
        let r5 = signed(&key, 5, [9; 32]);
        assert_eq!(r5.verify(&pinned), Ok(()));
        assert_eq!(SignedRoot::from_slices(5, &r5.root, &r5.signature), Ok(r5));
        assert_eq!(
            SignedRoot::from_slices(5, &r5.root[..31], &r5.signature),
            Err(KtError::Malformed)
        );
        assert_eq!(
            SignedRoot::from_slices(5, &r5.root, &r5.signature[..63]),
            Err(KtError::Malformed)
        );
        assert_eq!(
            signed(&other, 5, [9; 32]).verify(&pinned),
            Err(KtError::BadRootSignature(5))
        );
        let mut tampered = r5;
        tampered.root[0] ^= 1;
        assert_eq!(tampered.verify(&pinned), Err(KtError::BadRootSignature(5)));

        assert_eq!(signed(&key, 6, [1; 32]).follows(&r5), Ok(()));
        assert_eq!(r5.follows(&r5), Ok(()));
        assert_eq!(
            signed(&key, 4, [9; 32]).follows(&r5),
            Err(KtError::Rollback {
                seen: 5,
                offered: 4
            })
        );
        assert_eq!(signed(&key, 5, [8; 32]).follows(&r5), Err(KtError::Fork(5)));
    }

    #[test]
    fn garbage_proofs_are_refused_not_panicked_on() {
        let key = SigningKey::from_bytes(&[1; 32]);
        let keys = DirectoryKeys {
            root_key: RootKey(key.verifying_key().to_bytes()),
            vrf_public_key: vec![0; 32],
        };
        let root = signed(&key, 1, [0; 32]);
        for bytes in [&b""[..], b"\xff\xff\xff", &[0u8; 200]] {
            assert!(verify_lookup(&keys, &root, "alice", bytes).is_err());
            assert!(verify_history(&keys, &root, "alice", bytes).is_err());
        }
        let huge = vec![0u8; MAX_PROOF_BYTES + 1];
        assert_eq!(
            verify_lookup(&keys, &root, "alice", &huge),
            Err(KtError::Malformed)
        );
    }
}
