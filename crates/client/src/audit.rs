//! A third-party auditor of a server's key-transparency directory: it needs no account.
//!
//! It walks the signed epochs from the first (or a chosen one) to the newest and checks, for
//! each, that the root is signed by the directory's root key and that AKD's append-only proof
//! takes the previous root to this one, so no entry was ever changed or removed, only added.
//! Kept running (`watch`), it also notices a directory that goes back to an older epoch or
//! shows a different root for an epoch it already audited.

use nightjar_api::EpochRoot;
use nightjar_core::transparency::{
    DirectoryKeys, KtError, RootKey, SignedRoot, verify_append_only,
};

use crate::api::Api;
use crate::error::{Error, Result};

/// Why the directory failed an audit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditFailure {
    /// A root, signature or proof that does not check out at this epoch.
    #[error("epoch {epoch}: {reason}")]
    Epoch {
        /// The epoch that failed.
        epoch: u64,
        /// What failed.
        reason: String,
    },
    /// The directory went back, or forked, against what this auditor saw before.
    #[error(transparent)]
    Directory(#[from] KtError),
    /// The directory's keys are not the pinned ones.
    #[error("the directory's root key is {found}, not the pinned {pinned}")]
    KeyChanged {
        /// The pinned key (base64url).
        pinned: String,
        /// The key the server shows now.
        found: String,
    },
}

/// What a successful audit covered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditReport {
    /// The first epoch whose root was checked.
    pub from: u64,
    /// The newest epoch checked.
    pub to: u64,
    /// How many append-only proofs were verified.
    pub proofs: u64,
    /// The newest root.
    pub root: [u8; 32],
    /// The fingerprint of the directory keys (see [`DirectoryKeys::fingerprint`]).
    pub fingerprint: String,
}

/// The outcome of one audit round: the directory passed, or failed (a finding, not an error:
/// errors are the network's or the server's refusals).
pub type AuditOutcome = std::result::Result<AuditReport, AuditFailure>;

/// An auditor of one server. It remembers the newest root it verified between rounds.
#[derive(Debug)]
pub struct Auditor {
    api: Api,
    keys: DirectoryKeys,
    last: Option<SignedRoot>,
}

fn signed_root(view: &EpochRoot) -> std::result::Result<SignedRoot, AuditFailure> {
    SignedRoot::from_slices(view.epoch, &view.root.0, &view.signature.0).map_err(|e| {
        AuditFailure::Epoch {
            epoch: view.epoch,
            reason: e.to_string(),
        }
    })
}

impl Auditor {
    /// Connects to `server` and takes the directory's keys from it, or checks them against
    /// `pinned` (the root key, as `nightjar audit` printed it before).
    pub async fn connect(
        server: &str,
        pinned: Option<RootKey>,
    ) -> Result<(Self, Option<AuditFailure>)> {
        let api = Api::new(server)?;
        let served = api.kt_keys().await?;
        let root_key =
            RootKey(
                served.root_key.0.as_slice().try_into().map_err(|_| {
                    Error::Protocol("the directory's root key is not 32 bytes".into())
                })?,
            );
        let mismatch = pinned
            .filter(|p| *p != root_key)
            .map(|p| AuditFailure::KeyChanged {
                pinned: nightjar_api::B64::encode(&p.0),
                found: nightjar_api::B64::encode(&root_key.0),
            });
        let keys = DirectoryKeys {
            root_key: pinned.unwrap_or(root_key),
            vrf_public_key: served.vrf_public_key.0,
        };
        Ok((
            Self {
                api,
                keys,
                last: None,
            },
            mismatch,
        ))
    }

    /// The directory keys being audited against.
    pub fn keys(&self) -> &DirectoryKeys {
        &self.keys
    }

    /// Fetches and checks one epoch's root.
    async fn root(
        &self,
        epoch: u64,
    ) -> Result<std::result::Result<(SignedRoot, Vec<u8>), AuditFailure>> {
        let served = self.api.kt_epoch(epoch).await?;
        if served.root.epoch != epoch {
            return Ok(Err(AuditFailure::Epoch {
                epoch,
                reason: format!("the server answered epoch {}", served.root.epoch),
            }));
        }
        let root = match signed_root(&served.root) {
            Ok(root) => root,
            Err(f) => return Ok(Err(f)),
        };
        if let Err(e) = root.verify(&self.keys.root_key) {
            return Ok(Err(AuditFailure::Epoch {
                epoch,
                reason: e.to_string(),
            }));
        }
        Ok(Ok((root, served.audit_proof.0)))
    }

    /// Audits from where the last round ended (or from `from`, or epoch 0) to the newest
    /// epoch.
    pub async fn audit(&mut self, from: Option<u64>) -> Result<AuditOutcome> {
        let latest = self.api.kt_latest().await?;
        let latest = match signed_root(&latest) {
            Ok(root) => root,
            Err(f) => return Ok(Err(f)),
        };
        if let Err(e) = latest.verify(&self.keys.root_key) {
            return Ok(Err(AuditFailure::Directory(e)));
        }
        if let Some(seen) = &self.last
            && let Err(e) = latest.follows(seen)
        {
            return Ok(Err(e.into()));
        }
        let start = match (&self.last, from) {
            (Some(seen), _) => seen.epoch,
            (None, Some(from)) => from,
            (None, None) => 0,
        };
        if start > latest.epoch {
            return Ok(Err(AuditFailure::Epoch {
                epoch: start,
                reason: format!("the newest epoch is {}", latest.epoch),
            }));
        }
        let mut previous = match self.root(start).await? {
            Ok((root, _)) => root,
            Err(f) => return Ok(Err(f)),
        };
        if let Some(seen) = &self.last
            && let Err(e) = previous.follows(seen)
        {
            return Ok(Err(e.into()));
        }
        let mut proofs = 0;
        for epoch in start + 1..=latest.epoch {
            let (root, proof) = match self.root(epoch).await? {
                Ok(found) => found,
                Err(f) => return Ok(Err(f)),
            };
            if let Err(e) = verify_append_only(&previous, &root, &proof) {
                return Ok(Err(AuditFailure::Epoch {
                    epoch,
                    reason: e.to_string(),
                }));
            }
            proofs += 1;
            previous = root;
        }
        if previous.root != latest.root {
            return Ok(Err(KtError::Fork(latest.epoch).into()));
        }
        self.last = Some(previous);
        Ok(Ok(AuditReport {
            from: start,
            to: previous.epoch,
            proofs,
            root: previous.root,
            fingerprint: self.keys.fingerprint(),
        }))
    }
}
