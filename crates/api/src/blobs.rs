//! Attachments: the opaque blob store.
//!
//! A device encrypts a file on its side (a fresh key per file, chunked AEAD) and uploads only
//! the ciphertext here; the key, the digest and the real size travel inside the MLS message, so
//! the server never learns what a blob holds. A blob is named by its **capability**: 32 random
//! bytes the uploader gets from the server when it creates the blob. Whoever holds it (the
//! conversation's members, who get it inside the encrypted message) may read the blob; nothing
//! lists blobs, and the server keeps only a hash of the capability, so a copy of its database
//! names no readable blob.
//!
//! Uploads are resumable: the blob is cut into parts of `part_size` bytes (the last one
//! shorter), each uploaded with `PUT /v1/blobs/{blob}/parts/{index}` in any order and any
//! number of times; `GET /v1/blobs/{blob}/upload` says which parts the server holds. Once
//! every part is there the blob is complete and readable, with `Range` requests for resumable
//! downloads. It is deleted once as many devices as the uploader declared have confirmed the
//! download (`POST /v1/blobs/{blob}/fetched`), or 30 days after it was created, whichever
//! comes first; an upload left incomplete for a day is deleted too.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::B64;

/// Bytes in a blob's capability (its id).
pub const BLOB_ID_BYTES: usize = 32;

/// `POST /v1/blobs`: reserve a blob of `size` bytes for upload.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CreateBlob {
    /// The ciphertext's exact size in bytes (at least 1, at most the server's limit).
    #[schema(minimum = 1)]
    pub size: u64,
    /// How many devices will fetch it (the conversation's other member devices, this
    /// account's other devices included): once that many confirmed, the blob is deleted.
    #[schema(minimum = 1)]
    pub recipients: u32,
}

/// The answer to `POST /v1/blobs`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BlobCreated {
    /// The capability: whoever holds it may read the blob once complete. Only the creating
    /// account may upload its parts.
    pub blob_id: B64,
    /// The size of every part but the last, in bytes.
    pub part_size: u64,
    /// How many parts the blob has.
    pub parts: u64,
    /// When the blob is deleted at the latest (ms since the Unix epoch).
    pub expires_at: u64,
}

impl std::fmt::Debug for BlobCreated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The id is a read capability.
        f.debug_struct("BlobCreated")
            .field("part_size", &self.part_size)
            .field("parts", &self.parts)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// `GET /v1/blobs/{blob}/upload` and the answer to every part upload: where an upload stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct UploadStatus {
    /// The blob's size in bytes.
    pub size: u64,
    /// The size of every part but the last.
    pub part_size: u64,
    /// The indexes of the parts still missing, ascending (empty once complete).
    pub missing: Vec<u64>,
    /// Whether every part is there: the blob is readable.
    pub complete: bool,
}

/// `GET /v1/blobs/usage`: what the account's blobs take of its quota.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BlobUsage {
    /// Bytes reserved by the account's live blobs (complete or not).
    pub used: u64,
    /// The account's limit in bytes.
    pub quota: u64,
    /// The largest blob the server takes, in bytes.
    pub max_blob: u64,
}
