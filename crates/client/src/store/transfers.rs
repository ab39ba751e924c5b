//! Uploads in progress: what it takes to resume an attachment upload after a crash or a lost
//! connection without encrypting or sending again what the server already holds.
//!
//! One row per file (its canonical path), with what identifies the file's contents (size and
//! modification time: a file changed since starts over), the attachment's key (encrypted at
//! rest with the rest of the profile), the ciphertext's digest, the blob's capability and
//! the upload plan (`nightjar_machine::transfer::UploadPlan`, JSON). The row goes once the
//! upload is complete.

use nightjar_core::content::AttachmentKey;
use nightjar_machine::transfer::UploadPlan;
use rusqlite::{OptionalExtension as _, params};
use zeroize::{Zeroize as _, Zeroizing};

use super::{Store, to_i64, to_u64};
use crate::error::{Error, Result};

pub(super) const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS uploads (
    path TEXT PRIMARY KEY,
    file_size INTEGER NOT NULL,
    modified_ns INTEGER NOT NULL,
    attachment_key BLOB NOT NULL,
    digest BLOB NOT NULL,
    blob_id TEXT NOT NULL,
    plan TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
";

/// An attachment upload that has a blob on the server and is not complete yet.
#[derive(Clone, PartialEq, Eq)]
pub struct PendingUpload {
    /// The file's canonical path.
    pub path: String,
    /// Its size when the upload started.
    pub file_size: u64,
    /// Its modification time then, in nanoseconds since the Unix epoch.
    pub modified_ns: u64,
    /// The attachment's key.
    pub key: AttachmentKey,
    /// SHA-256 of the whole ciphertext.
    pub digest: [u8; 32],
    /// The blob's capability (base64url).
    pub blob_id: String,
    /// Which parts are still to go up.
    pub plan: UploadPlan,
    /// When the server deletes the blob at the latest (ms since the Unix epoch).
    pub expires_at: u64,
}

impl std::fmt::Debug for PendingUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key decrypts the file and the blob id reads it: neither is printed.
        f.debug_struct("PendingUpload")
            .field("path", &self.path)
            .field("file_size", &self.file_size)
            .field("plan", &self.plan)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// The upload in progress for the file at `path`, if any.
    pub fn pending_upload(&self, path: &str) -> Result<Option<PendingUpload>> {
        let conn = self.conn()?;
        let row = conn
            .query_row(
                "SELECT file_size, modified_ns, attachment_key, digest, blob_id, plan, expires_at
                 FROM uploads WHERE path = ?1",
                [path],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        Zeroizing::new(r.get::<_, Vec<u8>>(2)?),
                        r.get::<_, Vec<u8>>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, String>(5)?,
                        r.get::<_, i64>(6)?,
                    ))
                },
            )
            .optional()?;
        let Some((file_size, modified_ns, key, digest, blob_id, plan, expires_at)) = row else {
            return Ok(None);
        };
        let corrupt = || Error::Database("a stored upload is malformed".into());
        let mut raw: [u8; 32] = key.as_slice().try_into().map_err(|_| corrupt())?;
        let key = AttachmentKey::from_bytes(raw);
        raw.zeroize();
        Ok(Some(PendingUpload {
            path: path.to_owned(),
            file_size: to_u64(file_size),
            modified_ns: to_u64(modified_ns),
            key,
            digest: digest.as_slice().try_into().map_err(|_| corrupt())?,
            blob_id,
            plan: serde_json::from_str(&plan)?,
            expires_at: to_u64(expires_at),
        }))
    }

    /// Records (or replaces) an upload in progress.
    pub fn save_upload(&self, upload: &PendingUpload, now_ms: u64) -> Result<()> {
        self.conn()?.execute(
            "INSERT INTO uploads (path, file_size, modified_ns, attachment_key, digest, blob_id,
                                  plan, expires_at, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT (path) DO UPDATE SET file_size = excluded.file_size,
                 modified_ns = excluded.modified_ns, attachment_key = excluded.attachment_key,
                 digest = excluded.digest, blob_id = excluded.blob_id, plan = excluded.plan,
                 expires_at = excluded.expires_at, created_at = excluded.created_at",
            params![
                upload.path,
                to_i64(upload.file_size),
                to_i64(upload.modified_ns),
                upload.key.as_bytes().as_slice(),
                upload.digest.as_slice(),
                upload.blob_id,
                serde_json::to_string(&upload.plan)?,
                to_i64(upload.expires_at),
                to_i64(now_ms),
            ],
        )?;
        Ok(())
    }

    /// Records how far the upload of the file at `path` got.
    pub fn update_upload_plan(&self, path: &str, plan: &UploadPlan) -> Result<()> {
        self.conn()?.execute(
            "UPDATE uploads SET plan = ?2 WHERE path = ?1",
            params![path, serde_json::to_string(plan)?],
        )?;
        Ok(())
    }

    /// Forgets the upload of the file at `path` (complete, or started over).
    pub fn remove_upload(&self, path: &str) -> Result<()> {
        self.conn()?
            .execute("DELETE FROM uploads WHERE path = ?1", [path])?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uploads_survive_a_reopen_encrypted() {
        let dir = tempfile::tempdir().unwrap();
        let (key, _) = crate::keys::load_or_create(dir.path(), false).unwrap();
        let path = dir.path().join(super::super::DB_FILE);
        let mut upload = PendingUpload {
            path: "/home/a/cat.png".into(),
            file_size: 5 << 20,
            modified_ns: 1_700_000_000_123_456_789,
            key: AttachmentKey::from_bytes([0x5c; 32]),
            digest: [7; 32],
            blob_id: "capability-capability".into(),
            plan: UploadPlan::new(1000, 300, 4).unwrap(),
            expires_at: 99,
        };
        {
            let store = Store::open(&path, &key).unwrap();
            assert_eq!(store.pending_upload(&upload.path).unwrap(), None);
            store.save_upload(&upload, 1).unwrap();
            upload.plan.next_part().unwrap();
            store
                .update_upload_plan(&upload.path, &upload.plan)
                .unwrap();
        }
        let store = Store::open(&path, &key).unwrap();
        assert_eq!(
            store.pending_upload(&upload.path).unwrap(),
            Some(upload.clone())
        );
        let printed = format!("{upload:?}");
        assert!(!printed.contains("capability") && !printed.contains("92"));
        store.remove_upload(&upload.path).unwrap();
        assert_eq!(store.pending_upload(&upload.path).unwrap(), None);
        drop(store);
        let bytes = std::fs::read(&path).unwrap();
        assert!(!bytes.windows(8).any(|w| w == [0x5c; 8]));
        assert!(!bytes.windows(10).any(|w| w == b"capability"));
    }
}
