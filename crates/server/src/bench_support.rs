//! Hooks for benchmarks of the key-transparency directory: a directory on a real database
//! filled with synthetic accounts in bulk (registering 10,000 accounts through OPAQUE would
//! measure Argon2, not the directory). Not part of the server's API.

use std::path::Path;
use std::sync::Arc;

use crate::config::{GroupCommit, ServerConfig};
use crate::error::ServerError;
use crate::store::Store;
use crate::transparency::Transparency;

/// A directory over a database, for benchmarks.
#[derive(Debug)]
pub struct KtBench {
    store: Store,
    kt: Transparency,
}

/// A proof as a client receives it.
#[derive(Debug, Clone)]
pub struct BenchProof {
    /// The epoch of the root it is checked against.
    pub epoch: u64,
    /// The root.
    pub root: Vec<u8>,
    /// The root's signature.
    pub signature: Vec<u8>,
    /// AKD's protobuf encoding of the proof.
    pub proof: Vec<u8>,
}

fn bench_proof(
    proven: Result<crate::transparency::Proven, crate::transparency::KtFailure>,
) -> Result<BenchProof, ServerError> {
    let proven = proven.map_err(|e| ServerError::Config(e.to_string()))?;
    Ok(BenchProof {
        epoch: proven.root.epoch,
        root: proven.root.root,
        signature: proven.root.signature,
        proof: proven.proof,
    })
}

impl KtBench {
    /// Opens (creating) the database and directory in `data_dir` (SQLite), or at
    /// `database_url`.
    pub async fn open(data_dir: &Path, database_url: Option<&str>) -> Result<Self, ServerError> {
        let config = ServerConfig {
            database_url: database_url.map(str::to_owned),
            ..ServerConfig::new(
                data_dir,
                "127.0.0.1:0"
                    .parse()
                    .map_err(|_| ServerError::Config("address".into()))?,
            )
        };
        let store = Store::open(
            data_dir,
            database_url,
            GroupCommit::default(),
            Arc::new(crate::store::NoSink),
        )
        .await?;
        // The OPAQUE key file a server needs once the database holds accounts.
        crate::opaque::load_setup(&store, &config).await?;
        let kt = Transparency::open(&store, &config).await?;
        Ok(Self { store, kt })
    }

    /// Inserts accounts `bench_{first}` to `bench_{first + count - 1}` (due for publication),
    /// each with a random identity key and a 200-byte device list.
    pub async fn add_accounts(&self, first: usize, count: usize) -> Result<(), ServerError> {
        Ok(self.store.bench_insert_accounts(first, count).await?)
    }

    /// Marks every account's entry as changed (a new device-list version each).
    pub async fn change_all(&self) -> Result<(), ServerError> {
        Ok(self.store.bench_bump_lists().await?)
    }

    /// Publishes what is due; the new epoch.
    pub async fn publish(&self) -> Result<Option<u64>, ServerError> {
        self.kt
            .publish_due(&self.store)
            .await
            .map_err(|e| ServerError::Config(e.to_string()))
    }

    /// The directory keys: root key, VRF public key.
    pub fn keys(&self) -> ([u8; 32], Vec<u8>) {
        (self.kt.root_public_key(), self.kt.vrf_public_key().to_vec())
    }

    /// A lookup proof of `username`.
    pub async fn lookup(&self, username: &str) -> Result<BenchProof, ServerError> {
        bench_proof(self.kt.lookup(&self.store, username).await)
    }

    /// A history proof of `username`.
    pub async fn history(&self, username: &str) -> Result<BenchProof, ServerError> {
        bench_proof(self.kt.history(&self.store, username).await)
    }

    /// A published epoch: its signed root, with the append-only proof from the epoch before
    /// as `proof`.
    pub async fn epoch(&self, epoch: u64) -> Result<BenchProof, ServerError> {
        let stored = self
            .store
            .kt_epoch(epoch)
            .await?
            .ok_or_else(|| ServerError::Config(format!("no epoch {epoch}")))?;
        Ok(BenchProof {
            epoch: stored.epoch,
            root: stored.root,
            signature: stored.signature,
            proof: stored.audit_proof,
        })
    }

    /// Closes the database.
    pub async fn close(self) {
        self.store.close().await;
    }
}
