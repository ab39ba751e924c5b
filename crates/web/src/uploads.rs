//! File uploads that outlive the page: each upload under way is recorded in the profile's
//! encrypted store (the vault) once its blob exists, with what resuming it takes — the
//! attachment key, the ciphertext's digest, the blob's capability and which parts went up —
//! and forgotten in the same step that queues its message. After a reload (or a failure
//! past the retries) the chat offers the stopped upload: the page cannot keep the user's
//! `File` across a reload, so the user chooses the same file again and only the parts the
//! server lacks are sent (STREAM is deterministic under the same key and position, so a part
//! sealed again is the part that went up). A file whose name, size or modification time
//! differ is refused: parts of two versions would never verify. This is the command line's
//! resumable upload (`crates/client/src/store/transfers.rs`) for a page.
//!
//! Records live under one settings key as a JSON list: a page has a handful of uploads at
//! most. A record whose blob the server has deleted (it expires unfinished) is dropped.

use nightjar_api::B64;
use nightjar_core::ConversationId;
use nightjar_core::content::AttachmentKey;
use nightjar_machine::transfer::UploadPlan;
use nightjar_machine::{ClientStore as _, MemoryClientStore};
use serde::{Deserialize, Serialize};

/// The settings key of the records.
const PENDING_UPLOADS: &str = "web/pending_uploads";

/// An upload with a blob on the server that has not been sent as a message yet.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PendingUpload {
    /// The upload's key in the page (its progress bar's): `upload/<ms>/<name>`.
    pub(crate) id: String,
    /// Where its message goes (32 hex digits).
    pub(crate) conversation: String,
    /// The file's name, size and modification time (ms) when it started.
    pub(crate) name: String,
    pub(crate) file_size: u64,
    pub(crate) modified_ms: u64,
    /// The attachment key (32 bytes).
    key: B64,
    /// The ciphertext's SHA-256.
    digest: B64,
    /// The blob's capability (base64url).
    pub(crate) blob_id: String,
    /// Which parts are still to go up.
    pub(crate) plan: UploadPlan,
    /// When the server deletes the unfinished blob (ms since the Unix epoch).
    pub(crate) expires_at: u64,
}

impl std::fmt::Debug for PendingUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key decrypts the file and the blob id reads it: neither is printed.
        f.debug_struct("PendingUpload")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("file_size", &self.file_size)
            .finish_non_exhaustive()
    }
}

/// What identifies a file's contents well enough to resume its upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct FileIdentity {
    pub(crate) name: String,
    pub(crate) size: u64,
    pub(crate) modified_ms: u64,
}

/// The parts of a new upload that a record keeps.
pub(crate) struct Started {
    pub(crate) key: AttachmentKey,
    pub(crate) digest: [u8; 32],
    pub(crate) blob_id: String,
    pub(crate) plan: UploadPlan,
    pub(crate) expires_at: u64,
}

impl PendingUpload {
    /// The record of an upload `id` of `file` into `conversation` whose blob now exists.
    pub(crate) fn new(
        id: String,
        conversation: ConversationId,
        file: FileIdentity,
        started: Started,
    ) -> Self {
        Self {
            id,
            conversation: conversation.to_string(),
            name: file.name,
            file_size: file.size,
            modified_ms: file.modified_ms,
            key: B64(started.key.as_bytes().to_vec()),
            digest: B64(started.digest.to_vec()),
            blob_id: started.blob_id,
            plan: started.plan,
            expires_at: started.expires_at,
        }
    }

    /// The attachment key and the ciphertext's digest; `None` for a damaged record.
    pub(crate) fn secrets(&self) -> Option<(AttachmentKey, [u8; 32])> {
        let key = <[u8; 32]>::try_from(self.key.0.as_slice()).ok()?;
        let digest = <[u8; 32]>::try_from(self.digest.0.as_slice()).ok()?;
        Some((AttachmentKey::from_bytes(key), digest))
    }

    /// Whether `file` is the file this upload started from, unchanged.
    pub(crate) fn is_same_file(&self, file: &FileIdentity) -> bool {
        self.name == file.name
            && self.file_size == file.size
            && self.modified_ms == file.modified_ms
    }

    /// The conversation its message goes to.
    pub(crate) fn conversation_id(&self) -> Option<ConversationId> {
        ConversationId::parse(&self.conversation)
    }
}

/// The recorded uploads; a damaged list reads as none.
pub(crate) fn pending(store: &MemoryClientStore) -> Vec<PendingUpload> {
    store
        .meta(PENDING_UPLOADS)
        .ok()
        .flatten()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default()
}

fn write(store: &MemoryClientStore, list: &[PendingUpload]) {
    let result = if list.is_empty() {
        store.delete_meta(PENDING_UPLOADS)
    } else {
        match serde_json::to_string(list) {
            Ok(text) => store.set_meta(PENDING_UPLOADS, &text),
            Err(_) => return,
        }
    };
    if let Err(e) = result {
        web_sys::console::warn_1(&format!("could not record an upload: {e}").into());
    }
}

/// Records `upload`, replacing the record of the same id.
pub(crate) fn save(store: &MemoryClientStore, upload: &PendingUpload) {
    let mut list = pending(store);
    list.retain(|u| u.id != upload.id);
    list.push(upload.clone());
    write(store, &list);
}

/// Forgets the upload `id` (sent, discarded, or its blob gone).
pub(crate) fn forget(store: &MemoryClientStore, id: &str) {
    let mut list = pending(store);
    let before = list.len();
    list.retain(|u| u.id != id);
    if list.len() != before {
        write(store, &list);
    }
}

/// Forgets the uploads whose blob the server has deleted by `now_ms`; the others.
pub(crate) fn forget_expired(store: &MemoryClientStore, now_ms: u64) -> Vec<PendingUpload> {
    let mut list = pending(store);
    let before = list.len();
    list.retain(|u| u.expires_at > now_ms);
    if list.len() != before {
        write(store, &list);
    }
    list
}

/// A stopped upload as the chat offers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StoppedUpload {
    pub(crate) id: String,
    pub(crate) conversation: ConversationId,
    pub(crate) name: String,
    pub(crate) size: u64,
    /// How much of the ciphertext the server held when last heard.
    pub(crate) uploaded: u64,
    pub(crate) total: u64,
}

/// The uploads of `pending` not under way in this page (`running` names those that are).
pub(crate) fn stopped(pending: Vec<PendingUpload>, running: &[String]) -> Vec<StoppedUpload> {
    pending
        .into_iter()
        .filter(|u| !running.contains(&u.id))
        .filter_map(|u| {
            Some(StoppedUpload {
                conversation: u.conversation_id()?,
                uploaded: u.plan.uploaded(),
                total: u.plan.size(),
                size: u.file_size,
                name: u.name,
                id: u.id,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload(id: &str, expires_at: u64) -> PendingUpload {
        PendingUpload::new(
            id.into(),
            ConversationId::parse("00112233445566778899aabbccddeeff").unwrap(),
            FileIdentity {
                name: "big.bin".into(),
                size: 3 << 20,
                modified_ms: 1_700_000_000_000,
            },
            Started {
                key: AttachmentKey::from_bytes([7; 32]),
                digest: [9; 32],
                blob_id: "blob".into(),
                plan: UploadPlan::new(3 << 20, 1 << 20, 3).unwrap(),
                expires_at,
            },
        )
    }

    #[test]
    fn records_are_kept_replaced_forgotten_and_expire() {
        let store = MemoryClientStore::new();
        assert!(pending(&store).is_empty());
        save(&store, &upload("a", 100));
        save(&store, &upload("b", 200));
        save(&store, &upload("a", 300));
        let ids: Vec<_> = pending(&store)
            .into_iter()
            .map(|u| (u.id, u.expires_at))
            .collect();
        assert_eq!(ids, [("b".to_owned(), 200), ("a".to_owned(), 300)]);
        let (key, digest) = pending(&store)[0].secrets().unwrap();
        assert_eq!((key.as_bytes(), digest), (&[7; 32], [9; 32]));

        assert_eq!(stopped(pending(&store), &["a".into()]).len(), 1);
        let kept = forget_expired(&store, 250);
        assert_eq!(kept, pending(&store));
        assert_eq!(stopped(kept, &[])[0].id, "a");
        forget(&store, "a");
        assert!(pending(&store).is_empty());
        assert_eq!(store.meta(PENDING_UPLOADS).unwrap(), None);
    }

    #[test]
    fn only_the_same_unchanged_file_resumes_and_debug_hides_the_secrets() {
        let u = upload("a", 1);
        let same = FileIdentity {
            name: "big.bin".into(),
            size: 3 << 20,
            modified_ms: 1_700_000_000_000,
        };
        assert!(u.is_same_file(&same));
        for other in [
            FileIdentity {
                name: "other.bin".into(),
                ..same.clone()
            },
            FileIdentity {
                size: 3 << 20 | 1,
                ..same.clone()
            },
            FileIdentity {
                modified_ms: 1,
                ..same.clone()
            },
        ] {
            assert!(!u.is_same_file(&other), "{other:?}");
        }
        let shown = format!("{u:?}");
        assert!(!shown.contains("blob") && !shown.contains("key"), "{shown}");
    }
}
