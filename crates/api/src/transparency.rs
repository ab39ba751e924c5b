//! Key transparency: the directory's keys, signed epoch roots, lookup and history proofs, and
//! the append-only proofs auditors check. Proofs are AKD's protobuf encodings.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::B64;

/// `GET /v1/kt/keys`: the keys that check the directory. Clients pin them the first time
/// they talk to a server (or take them out of band: compare the fingerprint).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DirectoryKeysResponse {
    /// Ed25519 public key that signs every epoch root.
    pub root_key: B64,
    /// AKD's VRF public key (derives each username's place in the tree).
    pub vrf_public_key: B64,
    /// How often the server publishes an epoch when entries changed, in milliseconds.
    pub interval_ms: u64,
}

/// One epoch's root hash, signed by the directory's root key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EpochRoot {
    /// The epoch; 1 is the first published one.
    pub epoch: u64,
    /// The tree's root hash (32 bytes).
    pub root: B64,
    /// Ed25519 signature over `"nightjar directory root v1\0" ‖ epoch (u64 BE) ‖ root`.
    pub signature: B64,
}

/// `GET /v1/kt/epochs/{epoch}`: an epoch's signed root and the append-only proof that the
/// tree at this epoch extends the tree at the epoch before.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EpochResponse {
    /// The epoch's signed root.
    pub root: EpochRoot,
    /// AKD `AppendOnlyProof` (protobuf) from `epoch - 1` to `epoch`.
    pub audit_proof: B64,
}

/// Most epochs `GET /v1/kt/epochs` returns at once.
pub const MAX_EPOCHS_PER_PAGE: u32 = 64;

/// `GET /v1/kt/epochs?after=E&limit=N`: the signed epochs after `E`, oldest first, each with
/// its append-only proof from the epoch before. Fewer than asked for (or none) once the
/// newest epoch is reached, or once the page holds 4 MiB of proofs (never fewer than one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EpochsResponse {
    /// The epochs.
    pub epochs: Vec<EpochResponse>,
}

/// `GET /v1/kt/lookup/{username}` and `GET /v1/kt/history`: a proof against a signed root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProofResponse {
    /// The root the proof is checked against.
    pub root: EpochRoot,
    /// AKD `LookupProof` or `HistoryProof` (protobuf).
    pub proof: B64,
}

/// The transparency part of an account answer: the directory's keys (which the client pins
/// the first time and compares with ever after) and a lookup proof of the account's entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AccountTransparency {
    /// The directory's keys.
    pub keys: DirectoryKeysResponse,
    /// The lookup proof against the newest signed root.
    pub lookup: ProofResponse,
}
