//! Key transparency on the server: a verifiable, append-only directory (Meta's AKD) of every
//! account's identity key and current signed device list, published in signed epochs.
//!
//! An account's entry is due whenever its stored device-list version moves past the version
//! last published (registration, a device added or removed). A publisher task collects the due
//! entries every [`ServerConfig::kt_interval`] and, if there are any, publishes them as one
//! new epoch: AKD writes the epoch's tree in one transaction, then the server signs the new
//! root with its root key and stores the signature with the append-only proof from the epoch
//! before, which auditors fetch. A crash between the two steps is repaired by the next round,
//! which signs any epoch AKD has and the server has not signed yet. With several nodes on one
//! PostgreSQL database, one node publishes at a time (an advisory lock); every node answers
//! proofs straight from the database (no cache to go stale).
//!
//! The directory's secrets (the VRF key and the root key) live in a key file outside the
//! database, like the OPAQUE setup: a database copy alone cannot forge a root or compute
//! where a username sits in the tree.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use akd::directory::Directory;
use akd::ecvrf::{VRFKeyStorage, VrfError};
use akd::storage::StorageManager;
use akd::{AkdLabel, AkdValue, AzksParallelismConfig};
use ed25519_dalek::{Signer as _, SigningKey};
use nightjar_core::identity::IdentityKey;
use nightjar_core::transparency::{DirectoryEntry, KtConfig, SignedRoot};
use protobuf::Message as _;
use rand_core::{OsRng, RngCore as _};
use tokio_util::sync::CancellationToken;
use zeroize::Zeroizing;

use crate::config::ServerConfig;
use crate::error::ServerError;
use crate::secret_files::{create_key_file, read_key_file};
use crate::state::{AppState, now_ms};
use crate::store::{KtStorage, Store, StoredEpoch};

/// Name of the key file in the data directory when none is configured.
pub(crate) const KEY_FILE_NAME: &str = "directory.key";

/// Most entries one epoch publishes; more wait for the next round (which starts at once).
const MAX_PER_EPOCH: usize = 50_000;

/// The directory's VRF secret, as AKD asks for it.
#[derive(Clone)]
pub(crate) struct VrfKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for VrfKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("VrfKey(<redacted>)")
    }
}

#[async_trait::async_trait]
impl VRFKeyStorage for VrfKey {
    async fn retrieve(&self) -> Result<Vec<u8>, VrfError> {
        Ok(self.0.to_vec())
    }
}

type Akd = Directory<KtConfig, KtStorage, VrfKey>;

/// Why a transparency request failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum KtFailure {
    /// The username has no entry (yet: a new account is published within an interval).
    #[error("not in the directory")]
    NotFound,
    /// Nothing is published yet, or the newest epoch is not signed yet.
    #[error("the directory is not ready")]
    NotReady,
    /// The directory or its storage failed.
    #[error("directory: {0}")]
    Akd(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] sqlx::Error),
}

fn akd_error(e: akd::errors::AkdError) -> KtFailure {
    match e {
        akd::errors::AkdError::Storage(akd::errors::StorageError::NotFound(_)) => {
            KtFailure::NotFound
        }
        other => KtFailure::Akd(other.to_string()),
    }
}

/// A proof with the signed root it is checked against.
#[derive(Debug, Clone)]
pub(crate) struct Proven {
    pub(crate) root: StoredEpoch,
    pub(crate) proof: Vec<u8>,
}

/// The server's directory.
pub(crate) struct Transparency {
    akd: Akd,
    /// One publishing round at a time in this process.
    publishing: tokio::sync::Mutex<()>,
    /// Wakes the publisher before its interval ends (someone waits for an entry).
    kick: tokio::sync::Notify,
    root_key: SigningKey,
    vrf_public_key: Vec<u8>,
    interval: Duration,
}

impl fmt::Debug for Transparency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Transparency").finish_non_exhaustive()
    }
}

/// Where the key file is for `config`.
fn key_file_path(config: &ServerConfig) -> PathBuf {
    config
        .kt_key_file
        .clone()
        .unwrap_or_else(|| config.data_dir.join(KEY_FILE_NAME))
}

/// The directory's two secrets: 32 bytes of VRF key, then 32 bytes of root key.
fn load_keys(
    config: &ServerConfig,
    directory_exists: bool,
) -> Result<(VrfKey, SigningKey), ServerError> {
    let path = key_file_path(config);
    let bytes = match read_key_file(&path)? {
        Some(bytes) => bytes,
        None if directory_exists => {
            return Err(ServerError::Config(format!(
                "the directory key file {} is missing but the directory has published epochs: \
                 restore the file (or point --kt-key-file at the one the other nodes use); a \
                 new key would make every client refuse the directory",
                path.display()
            )));
        }
        None => {
            let mut fresh = Zeroizing::new([0u8; 64]);
            OsRng.fill_bytes(fresh.as_mut());
            if create_key_file(&path, fresh.as_ref())? {
                tracing::info!(path = %path.display(), "created the directory key file");
            }
            // Another node may have won the race; read what is there either way.
            read_key_file(&path)?.ok_or(ServerError::Corrupt("directory key file"))?
        }
    };
    let bytes: &[u8; 64] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| ServerError::Corrupt("directory key file"))?;
    let mut vrf = Zeroizing::new([0u8; 32]);
    vrf.copy_from_slice(&bytes[..32]);
    let mut root = Zeroizing::new([0u8; 32]);
    root.copy_from_slice(&bytes[32..]);
    Ok((VrfKey(vrf), SigningKey::from_bytes(&root)))
}

impl Transparency {
    /// Opens the directory on `store` (creating the empty epoch 0 if needed).
    pub(crate) async fn open(store: &Store, config: &ServerConfig) -> Result<Self, ServerError> {
        let directory_exists = store.kt_latest_epoch().await?.is_some();
        let (vrf, root_key) = load_keys(config, directory_exists)?;
        let vrf_public_key = vrf
            .get_vrf_public_key()
            .await
            .map_err(|e| ServerError::Config(format!("directory VRF key: {e}")))?
            .to_bytes()
            .to_vec();
        let manager = StorageManager::new_no_cache(store.kt_storage());
        let akd = Akd::new(manager, vrf, AzksParallelismConfig::disabled())
            .await
            .map_err(|e| ServerError::Config(format!("opening the directory: {e}")))?;
        let kt = Self {
            akd,
            publishing: tokio::sync::Mutex::new(()),
            kick: tokio::sync::Notify::new(),
            root_key,
            vrf_public_key,
            interval: config.kt_interval,
        };
        // A new directory's empty epoch 0 is signed at once, so auditors start from it.
        if let Some(lock) = store.kt_publish_lock().await? {
            let signed = kt.sign_unsigned(store).await;
            lock.release().await;
            signed.map_err(|e| ServerError::Config(format!("signing the directory: {e}")))?;
        }
        Ok(kt)
    }

    /// The public key that signs roots.
    pub(crate) fn root_public_key(&self) -> [u8; 32] {
        self.root_key.verifying_key().to_bytes()
    }

    /// AKD's VRF public key.
    pub(crate) fn vrf_public_key(&self) -> &[u8] {
        &self.vrf_public_key
    }

    /// The publishing interval.
    pub(crate) fn interval(&self) -> Duration {
        self.interval
    }

    /// The publishing interval in milliseconds, as the API states it.
    pub(crate) fn interval_ms(&self) -> u64 {
        u64::try_from(self.interval.as_millis()).unwrap_or(u64::MAX)
    }

    fn sign(&self, epoch: u64, root: [u8; 32]) -> Vec<u8> {
        self.root_key
            .sign(&SignedRoot::message(epoch, &root))
            .to_bytes()
            .to_vec()
    }

    /// Signs and stores every epoch AKD has published that is not signed yet: the empty
    /// epoch 0 of a new directory, or an epoch whose round crashed between AKD's commit and
    /// the signature. Returns the newest epoch it signed.
    async fn sign_unsigned(&self, store: &Store) -> Result<Option<u64>, KtFailure> {
        let current = self.akd.get_epoch_hash().await.map_err(akd_error)?;
        let next = store.kt_latest_epoch().await?.map_or(0, |e| e.epoch + 1);
        if next > current.epoch() {
            return Ok(None);
        }
        if next < current.epoch() {
            // AKD answers only for its newest root; an older unsigned epoch cannot be signed
            // after the fact (two rounds would have had to crash in a row).
            return Err(KtFailure::Akd(format!(
                "epochs {next} to {} were published but never signed",
                current.epoch() - 1
            )));
        }
        let epoch = current.epoch();
        let audit_proof = match epoch {
            0 => Vec::new(),
            _ => self.audit_bytes(epoch - 1, epoch).await?,
        };
        let stored = StoredEpoch {
            epoch,
            root: current.hash().to_vec(),
            signature: self.sign(epoch, current.hash()),
            audit_proof,
        };
        store.kt_put_epoch(&stored, now_ms()).await?;
        Ok(Some(epoch))
    }

    async fn audit_bytes(&self, from: u64, to: u64) -> Result<Vec<u8>, KtFailure> {
        let proof = self.akd.audit(from, to).await.map_err(akd_error)?;
        akd::proto::specs::types::AppendOnlyProof::from(&proof)
            .write_to_bytes()
            .map_err(|e| KtFailure::Akd(e.to_string()))
    }

    /// Publishes every due entry as one new epoch; returns the epoch, or `None` when nothing
    /// was due (or another node is publishing).
    pub(crate) async fn publish_due(&self, store: &Store) -> Result<Option<u64>, KtFailure> {
        let _round = self.publishing.lock().await;
        let Some(lock) = store.kt_publish_lock().await? else {
            return Ok(None);
        };
        let published = self.publish_locked(store).await;
        lock.release().await;
        published
    }

    async fn publish_locked(&self, store: &Store) -> Result<Option<u64>, KtFailure> {
        // A round that crashed after AKD's commit left an unsigned epoch: sign it first.
        self.sign_unsigned(store).await?;
        let due = store.kt_due(MAX_PER_EPOCH).await?;
        if due.is_empty() {
            return Ok(None);
        }
        let mut updates = Vec::with_capacity(due.len());
        for entry in &due {
            let key: [u8; 32] = entry
                .identity_key
                .as_slice()
                .try_into()
                .map_err(|_| KtFailure::Akd("stored identity key is not 32 bytes".into()))?;
            let value = DirectoryEntry::for_list(
                IdentityKey(key),
                entry.device_list_version,
                &entry.device_list,
            );
            updates.push((
                AkdLabel::from(entry.username.as_str()),
                AkdValue(value.encode()),
            ));
        }
        self.akd.publish(updates).await.map_err(akd_error)?;
        let epoch = self.sign_unsigned(store).await?;
        store.kt_mark_published(&due).await?;
        if let Some(epoch) = epoch {
            // Debug only: with its exact time, the line would date whose device lists changed
            // (the directory keeps epochs, and their times only to the hour).
            tracing::debug!(epoch, entries = due.len(), "published a directory epoch");
        }
        Ok(epoch)
    }

    /// A lookup proof of `username`'s current entry, against the newest signed root.
    pub(crate) async fn lookup(&self, store: &Store, username: &str) -> Result<Proven, KtFailure> {
        self.lookup_value(store, username).await.map(|(p, _)| p)
    }

    async fn lookup_value(
        &self,
        store: &Store,
        username: &str,
    ) -> Result<(Proven, Vec<u8>), KtFailure> {
        let (proof, hash) = self
            .akd
            .lookup(AkdLabel::from(username))
            .await
            .map_err(akd_error)?;
        let root = self.signed(store, hash).await?;
        let value = proof.value.0.clone();
        let proven = Proven {
            root,
            proof: nightjar_core::transparency::encode_lookup_proof(&proof),
        };
        Ok((proven, value))
    }

    /// A lookup proof that the directory holds `expected` as `username`'s entry. An entry
    /// not published yet (the account or its devices just changed) is published first: the
    /// publisher is woken and the answer waits for it, up to two intervals, so that clients
    /// always get a list and a proof that agree. After that the newest proof is returned as
    /// it is (and the client refuses the list).
    pub(crate) async fn prove_current(
        &self,
        store: &Store,
        username: &str,
        expected: &DirectoryEntry,
    ) -> Result<Proven, KtFailure> {
        let deadline = tokio::time::Instant::now() + self.interval * 2 + Duration::from_secs(1);
        let wanted = expected.encode();
        loop {
            let found = self.lookup_value(store, username).await;
            match found {
                Ok((proven, value)) if value == wanted => return Ok(proven),
                Ok((proven, _)) if tokio::time::Instant::now() >= deadline => return Ok(proven),
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Ok(_) | Err(KtFailure::NotFound | KtFailure::NotReady) => {}
                Err(e) => return Err(e),
            }
            self.kick.notify_one();
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// A proof of `username`'s complete history, against the newest signed root.
    pub(crate) async fn history(&self, store: &Store, username: &str) -> Result<Proven, KtFailure> {
        let (proof, hash) = self
            .akd
            .key_history(&AkdLabel::from(username), akd::HistoryParams::Complete)
            .await
            .map_err(akd_error)?;
        let root = self.signed(store, hash).await?;
        Ok(Proven {
            root,
            proof: nightjar_core::transparency::encode_history_proof(&proof),
        })
    }

    async fn signed(&self, store: &Store, hash: akd::EpochHash) -> Result<StoredEpoch, KtFailure> {
        let stored = store
            .kt_epoch(hash.epoch())
            .await?
            .ok_or(KtFailure::NotReady)?;
        if stored.root != hash.hash() {
            return Err(KtFailure::Akd(format!(
                "the signed root of epoch {} differs from the tree's",
                hash.epoch()
            )));
        }
        Ok(stored)
    }
}

/// Publishes due entries every interval until `shutdown`.
pub(crate) async fn run_publisher(state: AppState, shutdown: CancellationToken) {
    let kt = &state.transparency;
    loop {
        match kt.publish_due(&state.store).await {
            // More may be due than one epoch takes: go again at once.
            Ok(Some(_)) => continue,
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "publishing the directory failed"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(kt.interval()) => {}
            () = kt.kick.notified() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use akd::AppendOnlyProof;
    use nightjar_core::transparency::{
        DirectoryKeys, RootKey, SignedRoot, verify_append_only, verify_history, verify_lookup,
    };

    use super::*;
    use crate::store::ListUpdate;
    use crate::store::test_support::{account, each_backend};

    fn config(dir: &std::path::Path) -> ServerConfig {
        ServerConfig {
            kt_key_file: Some(dir.join("directory.key")),
            ..ServerConfig::new(dir, "127.0.0.1:0".parse().unwrap())
        }
    }

    fn keys(kt: &Transparency) -> DirectoryKeys {
        DirectoryKeys {
            root_key: RootKey(kt.root_public_key()),
            vrf_public_key: kt.vrf_public_key().to_vec(),
        }
    }

    fn root(e: &StoredEpoch) -> SignedRoot {
        SignedRoot::from_slices(e.epoch, &e.root, &e.signature).unwrap()
    }

    /// Checks the append-only proof of `epoch` with AKD's own auditor and with the clients'
    /// check (`verify_append_only`), which must agree; a proof is also tried against a root
    /// with one bit changed, which both must refuse.
    async fn append_only(store: &Store, epoch: u64) -> Result<(), String> {
        let before = root(&store.kt_epoch(epoch - 1).await.unwrap().unwrap());
        let after = root(&store.kt_epoch(epoch).await.unwrap().unwrap());
        let bytes = store.kt_epoch(epoch).await.unwrap().unwrap().audit_proof;
        let akd_says = |end: [u8; 32]| {
            let proto =
                akd::proto::specs::types::AppendOnlyProof::parse_from_bytes(&bytes).unwrap();
            let proof = AppendOnlyProof::try_from(&proto).unwrap();
            akd::auditor::audit_verify::<KtConfig>(vec![before.root, end], proof)
        };
        let mut bent = after;
        bent.root[7] ^= 1;
        assert!(akd_says(bent.root).await.is_err());
        assert!(verify_append_only(&before, &bent, &bytes).is_err());
        let ours = verify_append_only(&before, &after, &bytes).map_err(|e| e.to_string());
        let theirs = akd_says(after.root).await.map_err(|e| e.to_string());
        assert_eq!(ours.is_ok(), theirs.is_ok(), "{ours:?} / {theirs:?}");
        ours
    }

    /// The epoch numbers of a page of epochs.
    async fn page(store: &Store, after: u64, limit: u32, max_bytes: usize) -> Vec<u64> {
        let page = store
            .kt_epochs_after(after, limit, max_bytes)
            .await
            .unwrap();
        page.iter().map(|e| e.epoch).collect()
    }

    #[tokio::test]
    async fn changed_accounts_are_published_in_signed_epochs_that_clients_and_auditors_verify() {
        for store in each_backend("kt_publish").await {
            let dir = tempfile::tempdir().unwrap();
            let kt = Transparency::open(&store, &config(dir.path()))
                .await
                .unwrap();
            let genesis = store.kt_latest_epoch().await.unwrap().unwrap();
            assert_eq!(genesis.epoch, 0, "a new directory signs its empty epoch 0");
            root(&genesis).verify(&keys(&kt).root_key).unwrap();

            let alice = account(&store, "alice", "00000000000000a1", 1).await;
            account(&store, "bob", "00000000000000b1", 2).await;
            assert_eq!(kt.publish_due(&store).await.unwrap(), Some(1));
            assert_eq!(
                kt.publish_due(&store).await.unwrap(),
                None,
                "nothing left due"
            );

            let proven = kt.lookup(&store, "alice").await.unwrap();
            let found =
                verify_lookup(&keys(&kt), &root(&proven.root), "alice", &proven.proof).unwrap();
            assert!(found.entry.matches(IdentityKey([2; 32]), 1, &[3]));
            assert_eq!((found.published, found.version), (1, 1));
            // A proof is for its own username only.
            assert!(verify_lookup(&keys(&kt), &root(&proven.root), "bob", &proven.proof).is_err());
            assert!(matches!(
                kt.lookup(&store, "carol").await,
                Err(KtFailure::NotFound)
            ));

            // alice's list changes: the next epoch has it, and her history shows both.
            let updated = store
                .update_device_list(ListUpdate {
                    account_id: alice.account_id,
                    expected_version: 1,
                    device_list: &[4, 4],
                    version: 2,
                    approve: None,
                    remove: vec![],
                })
                .await
                .unwrap();
            assert!(updated.is_some());
            assert_eq!(kt.publish_due(&store).await.unwrap(), Some(2));
            let proven = kt.history(&store, "alice").await.unwrap();
            let history =
                verify_history(&keys(&kt), &root(&proven.root), "alice", &proven.proof).unwrap();
            let versions: Vec<u64> = history.iter().map(|h| h.entry.list_version).collect();
            assert_eq!(versions, [2, 1], "newest first");
            assert!(history[0].entry.matches(IdentityKey([2; 32]), 2, &[4, 4]));

            // Every step from the empty directory on is append-only, and a proof does not
            // pass for another step.
            append_only(&store, 1).await.unwrap();
            append_only(&store, 2).await.unwrap();
            let step1 = store.kt_epoch(1).await.unwrap().unwrap();
            let step2 = store.kt_epoch(2).await.unwrap().unwrap();
            let proto =
                akd::proto::specs::types::AppendOnlyProof::parse_from_bytes(&step2.audit_proof)
                    .unwrap();
            let wrong = akd::auditor::audit_verify::<KtConfig>(
                vec![
                    genesis.root.as_slice().try_into().unwrap(),
                    root(&step1).root,
                ],
                AppendOnlyProof::try_from(&proto).unwrap(),
            )
            .await;
            assert!(wrong.is_err());
            assert!(
                verify_append_only(&root(&genesis), &root(&step1), &step2.audit_proof).is_err()
            );
            assert!(verify_append_only(&root(&step1), &root(&step2), &step1.audit_proof).is_err());
            assert!(verify_append_only(&root(&step1), &root(&step2), b"\x01junk").is_err());

            // Pages of epochs end at the limit, or after the epoch whose proof reaches the
            // byte budget, and never hold nothing while an epoch follows.
            let first = step1.audit_proof.len();
            assert_eq!(page(&store, 0, 64, 1 << 20).await, [1, 2]);
            assert_eq!(page(&store, 0, 1, 1 << 20).await, [1]);
            assert_eq!(page(&store, 1, 64, 1 << 20).await, [2]);
            assert_eq!(page(&store, 2, 64, 1 << 20).await, [] as [u64; 0]);
            assert_eq!(page(&store, 0, 64, 1).await, [1], "the first epoch always");
            assert_eq!(page(&store, 0, 64, first).await, [1]);
            assert_eq!(page(&store, 0, 64, first + 1).await, [1, 2]);
            assert_eq!(
                store.kt_epochs_after(0, 64, 1 << 20).await.unwrap()[1],
                step2
            );
        }
    }

    #[tokio::test]
    async fn a_second_node_serves_proofs_of_what_the_first_published() {
        for store in each_backend("kt_two_nodes").await {
            let dir = tempfile::tempdir().unwrap();
            let first = Transparency::open(&store, &config(dir.path()))
                .await
                .unwrap();
            let other_store = store
                .another_node(crate::config::GroupCommit::default())
                .await;
            let second = Transparency::open(&other_store, &config(dir.path()))
                .await
                .unwrap();
            assert_eq!(first.root_public_key(), second.root_public_key());
            account(&store, "alice", "00000000000000a1", 1).await;
            // While one node holds the publishing lock, the other publishes nothing.
            if let Some(lock) = store.kt_publish_lock().await.unwrap()
                && store.kind() == crate::store::DatabaseKind::Postgres
            {
                assert!(other_store.kt_publish_lock().await.unwrap().is_none());
                lock.release().await;
            }
            assert_eq!(first.publish_due(&store).await.unwrap(), Some(1));
            let proven = second.lookup(&other_store, "alice").await.unwrap();
            verify_lookup(&keys(&second), &root(&proven.root), "alice", &proven.proof).unwrap();
            other_store.close().await;
        }
    }

    #[tokio::test]
    async fn a_lost_key_file_is_an_error_once_epochs_were_signed() {
        for store in each_backend("kt_key_file").await {
            let dir = tempfile::tempdir().unwrap();
            Transparency::open(&store, &config(dir.path()))
                .await
                .unwrap();
            std::fs::remove_file(dir.path().join("directory.key")).unwrap();
            let reopened = Transparency::open(&store, &config(dir.path())).await;
            assert!(matches!(reopened, Err(ServerError::Config(_))));
        }
    }
}
