//! Attachments' ciphertext in an object store (docs/attachments.md).
//!
//! A blob is named by its capability, 32 random bytes handed to the uploader; the server keeps
//! only its SHA-256 (the database's key, and the objects' directory), so neither a copy of the
//! database nor a listing of the store names a readable blob. Each part is an object of its own
//! at `blobs/<hex SHA-256>/<index>`: an upload resumes across restarts part by part, and any
//! object store works (no multipart API). The bytes live on the local file system (under the
//! data directory by default) or in an S3-compatible store (Garage in production).
//!
//! Deleting a blob is crash-safe: its row is first marked `deleting` (in the transaction that
//! decides it: the last recipient's confirmation, or the sweep of expired blobs), then its
//! objects are deleted (every index below its part count, whether or not an upload wrote it;
//! deleting an absent object is no failure), then the row. A crash in between leaves a
//! `deleting` row that the next sweep finishes. A part upload that raced the deletion and
//! wrote its object after the objects were deleted finds the row gone or `deleting` when it
//! records the part, and deletes its own object.
//!
//! Nothing here logs a capability, a hash or an object path: object-store failures are logged
//! by kind only (their texts name the object).

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{BoxStream, StreamExt as _, TryStreamExt as _};
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, ObjectStore, ObjectStoreExt as _, PutPayload};
use sha2::{Digest as _, Sha256};

use crate::config::BlobSettings;
use crate::error::{Error, ServerError};
use crate::state::AppState;
use crate::store::STORED_TIME_MS;

/// The stored name of a blob: SHA-256 of its capability.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct BlobHash(pub(crate) [u8; 32]);

impl BlobHash {
    /// The hash of a capability.
    pub(crate) fn of(capability: &[u8]) -> Self {
        Self(Sha256::digest(capability).into())
    }

    /// Lowercase hex, the objects' directory name.
    fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The object holding part `index`.
    fn part(&self, index: u64) -> ObjectPath {
        ObjectPath::from(format!("{PREFIX}/{}/{index}", self.hex()))
    }
}

impl std::fmt::Debug for BlobHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never printed: it names the blob's objects.
        f.write_str("BlobHash(..)")
    }
}

/// The first segment of every blob object's path.
const PREFIX: &str = "blobs";

/// How long a request to the object store may be retried before it fails.
const RETRY_TIMEOUT: Duration = Duration::from_secs(20);

/// Blobs whose objects one sweep deletes at most.
const SWEEP_BATCH: i64 = 1_000;

/// The object store, and for a store on the local file system the directory it is rooted in
/// (to remove a deleted blob's empty directory).
#[derive(Clone, Debug)]
pub(crate) struct BlobStore {
    objects: Arc<dyn ObjectStore>,
    local_root: Option<PathBuf>,
}

/// An object-store failure, by kind: its text names the object, so only the kind is logged.
#[derive(Debug)]
pub(crate) enum StoreFailure {
    /// The object does not exist.
    NotFound,
    /// Anything else.
    Failed(&'static str),
}

impl From<object_store::Error> for StoreFailure {
    fn from(e: object_store::Error) -> Self {
        use object_store::Error as E;
        match e {
            E::NotFound { .. } => Self::NotFound,
            E::Generic { store, .. } => Self::Failed(store),
            E::PermissionDenied { .. } => Self::Failed("permission denied"),
            E::Unauthenticated { .. } => Self::Failed("unauthenticated"),
            E::Precondition { .. } => Self::Failed("precondition"),
            E::AlreadyExists { .. } => Self::Failed("already exists"),
            E::NotSupported { .. } | E::NotImplemented { .. } => Self::Failed("not supported"),
            E::InvalidPath { .. } => Self::Failed("invalid path"),
            E::JoinError { .. } => Self::Failed("task failed"),
            _ => Self::Failed("other"),
        }
    }
}

impl From<StoreFailure> for Error {
    fn from(failure: StoreFailure) -> Self {
        match failure {
            StoreFailure::NotFound => Error::not_found("no such blob"),
            StoreFailure::Failed(kind) => {
                tracing::error!(kind, "blob store failure");
                Error::Internal("the blob store failed")
            }
        }
    }
}

impl BlobStore {
    /// Checks the settings and opens the store they name (no request is made yet; see
    /// [`probe`]).
    pub(crate) fn open(settings: &BlobSettings, data_dir: &Path) -> Result<Self, ServerError> {
        check(settings)?;
        let config = |message: String| ServerError::Config(message);
        match settings.store.as_deref() {
            None => Self::local(data_dir),
            Some(url) if url.starts_with("file://") => {
                let dir = &url["file://".len()..];
                if !dir.starts_with('/') {
                    return Err(config(format!(
                        "--blob-store {url}: a file:// store needs an absolute path, \
                         e.g. file:///var/lib/nightjar"
                    )));
                }
                Self::local(Path::new(dir))
            }
            Some(url) if url.starts_with("s3://") => {
                let (bucket, prefix) = url["s3://".len()..]
                    .split_once('/')
                    .unwrap_or((&url["s3://".len()..], ""));
                if bucket.is_empty() {
                    return Err(config("--blob-store s3://BUCKET needs a bucket".into()));
                }
                Ok(Self {
                    objects: s3(bucket, prefix.trim_matches('/'), &settings.store_options)?,
                    local_root: None,
                })
            }
            Some(_) => Err(config(
                "--blob-store must be file:///ABSOLUTE/PATH or s3://BUCKET".into(),
            )),
        }
    }

    /// A store on the local file system rooted at `root` (objects under `root/blobs`).
    fn local(root: &Path) -> Result<Self, ServerError> {
        std::fs::create_dir_all(root.join(PREFIX))?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(root)
            .map_err(|e| ServerError::Config(format!("blob store directory: {e}")))?
            // A part is acknowledged once durable, as a message is.
            .with_fsync(true);
        Ok(Self {
            objects: Arc::new(store),
            local_root: Some(std::fs::canonicalize(root)?),
        })
    }

    /// Stores part `index` of a blob (replacing what was there).
    pub(crate) async fn put_part(
        &self,
        hash: BlobHash,
        index: u64,
        chunks: Vec<Bytes>,
    ) -> Result<(), StoreFailure> {
        let payload: PutPayload = chunks.into_iter().collect();
        self.objects.put(&hash.part(index), payload).await?;
        Ok(())
    }

    /// The bytes `range` (within the part) of part `index`, as they arrive from the store.
    pub(crate) async fn read_part(
        &self,
        hash: BlobHash,
        index: u64,
        range: Range<u64>,
    ) -> Result<BoxStream<'static, Result<Bytes, object_store::Error>>, StoreFailure> {
        let options = GetOptions::new().with_range(Some(range));
        let got = self.objects.get_opts(&hash.part(index), options).await?;
        Ok(got.into_stream())
    }

    /// Deletes part `index`; an absent object is no failure.
    pub(crate) async fn delete_part(&self, hash: BlobHash, index: u64) -> Result<(), StoreFailure> {
        match self.objects.delete(&hash.part(index)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes every object a blob of `parts` parts may have; absent ones are no failure.
    pub(crate) async fn delete_blob(&self, hash: BlobHash, parts: u64) -> Result<(), StoreFailure> {
        let paths = futures_util::stream::iter((0..parts).map(move |i| Ok(hash.part(i)))).boxed();
        let mut deleted = self.objects.delete_stream(paths);
        while let Some(result) = deleted.next().await {
            match result {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(root) = &self.local_root {
            // The blob's directory, now empty (S3 has no directories). A part written since
            // keeps it, and its upload deletes that part.
            let _ = std::fs::remove_dir(root.join(PREFIX).join(hash.hex()));
        }
        Ok(())
    }
}

/// Refuses settings that cannot work.
fn check(settings: &BlobSettings) -> Result<(), ServerError> {
    let refuse = |message: &str| Err(ServerError::Config(message.into()));
    if settings.part_bytes == 0 || settings.part_bytes > BlobSettings::MAX_PART_BYTES {
        return refuse("--blob-part-bytes must be between 1 and 67108864 (64 MiB)");
    }
    if settings.max_blob_bytes == 0 {
        return refuse("--blob-max-bytes must be at least 1");
    }
    if settings.max_blob_bytes.div_ceil(settings.part_bytes) > BlobSettings::MAX_PARTS {
        return refuse("--blob-max-bytes / --blob-part-bytes: a blob may have at most 65536 parts");
    }
    if settings.max_incomplete == 0 {
        return refuse("a blob upload limit of 0 refuses every upload");
    }
    if settings.upload_ttl.is_zero() || settings.ttl < settings.upload_ttl {
        return refuse("blobs must live at least as long as their upload may take");
    }
    Ok(())
}

/// An S3-compatible store: the `AWS_*` environment, then `options`, then the bucket.
fn s3(
    bucket: &str,
    prefix: &str,
    options: &[(String, String)],
) -> Result<Arc<dyn ObjectStore>, ServerError> {
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
    // The HTTP client (reqwest, rustls without a built-in provider) uses the process's default
    // TLS provider: ring, as everywhere in Nightjar. Already installed is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_retry(object_store::RetryConfig {
            max_retries: 3,
            retry_timeout: RETRY_TIMEOUT,
            ..object_store::RetryConfig::default()
        });
    for (key, value) in options {
        let key: AmazonS3ConfigKey = key
            .parse()
            .map_err(|_| ServerError::Config(format!("unknown S3 option {key}")))?;
        builder = builder.with_config(key, value);
    }
    let store = builder
        .build()
        .map_err(|e| ServerError::Config(format!("S3 blob store: {e}")))?;
    Ok(if prefix.is_empty() {
        Arc::new(store)
    } else {
        Arc::new(object_store::prefix::PrefixStore::new(store, prefix))
    })
}

/// Says at start whether the store answers (a store that does not is logged, not fatal:
/// messaging works without attachments).
pub(crate) async fn probe(store: BlobStore) {
    let probe = ObjectPath::from(format!("{PREFIX}/probe"));
    match store.objects.head(&probe).await {
        Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => {
            let StoreFailure::Failed(kind) = StoreFailure::from(e) else {
                return;
            };
            tracing::error!(
                kind,
                "the blob store does not answer: attachments fail until it does"
            );
        }
    }
}

/// Times stored with a blob are rounded to this many milliseconds (an hour, or a 24th of the
/// upload lifetime when that is shorter, as in tests): they serve expiry only, and exact
/// times would date each upload to the millisecond.
pub(crate) fn time_granularity(settings: &BlobSettings) -> u64 {
    let upload_ttl = u64::try_from(settings.upload_ttl.as_millis()).unwrap_or(u64::MAX);
    STORED_TIME_MS.min(upload_ttl / 24).max(1)
}

/// The length of part `index` of a blob of `size` bytes cut into `part_size`-byte parts.
pub(crate) fn part_len(size: u64, part_size: u64, index: u64) -> u64 {
    let start = index.saturating_mul(part_size);
    size.saturating_sub(start).min(part_size)
}

/// Deletes a blob whose row is marked `deleting`: its objects, then its row. A failure leaves
/// the row for the next sweep.
pub(crate) async fn delete(state: &AppState, hash: BlobHash, parts: u64) {
    if let Err(e) = state.blobs.delete_blob(hash, parts).await {
        if let StoreFailure::Failed(kind) = e {
            tracing::warn!(kind, "could not delete a blob's objects; the sweep retries");
        }
        return;
    }
    if let Err(e) = state.store.delete_blob_row(hash).await {
        tracing::warn!(error = %e, "could not delete a blob's row; the sweep retries");
    }
}

/// The blobs' share of the periodic sweep: blobs past their deadline are marked for deletion,
/// then the objects and rows of marked blobs are deleted (also those a crash left half-way).
pub(crate) async fn sweep(state: &AppState, now_ms: u64) {
    match state.store.expire_blobs(now_ms).await {
        Ok(expired) => {
            state.metrics.blobs_expired.inc_by(expired);
        }
        Err(e) => {
            tracing::error!(error = %e, "blob sweep failed");
            return;
        }
    }
    let doomed = match state.store.blobs_to_delete(SWEEP_BATCH).await {
        Ok(doomed) => doomed,
        Err(e) => {
            tracing::error!(error = %e, "blob sweep failed");
            return;
        }
    };
    let deleted = futures_util::stream::iter(doomed)
        .map(|(hash, parts)| delete(state, hash, parts))
        .buffer_unordered(4)
        .count()
        .await;
    if deleted > 0 {
        tracing::debug!(deleted, "blob sweep");
    }
}

/// The stream of bytes `range` of a complete blob, part by part: `first` is the opened
/// stream of the range's first part (opened by the caller, so that a missing object is a 404
/// before any byte is sent), the later parts are opened one after the other as the body is
/// read.
pub(crate) fn blob_stream(
    store: &BlobStore,
    hash: BlobHash,
    part_size: u64,
    size: u64,
    range: Range<u64>,
    first: BoxStream<'static, Result<Bytes, object_store::Error>>,
) -> BoxStream<'static, Result<Bytes, object_store::Error>> {
    let first_index = range.start / part_size;
    let last_index = (range.end - 1) / part_size;
    let store = store.clone();
    let later = futures_util::stream::iter(first_index + 1..=last_index)
        .then(move |index| {
            let store = store.clone();
            let start = index * part_size;
            let end = (range.end - start).min(part_len(size, part_size, index));
            async move {
                let options = GetOptions::new().with_range(Some(0..end));
                let got = store.objects.get_opts(&hash.part(index), options).await?;
                Ok::<_, object_store::Error>(got.into_stream())
            }
        })
        .try_flatten();
    first.chain(later).boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_cover_the_blob() {
        assert_eq!(part_len(10, 4, 0), 4);
        assert_eq!(part_len(10, 4, 2), 2);
        assert_eq!(part_len(10, 4, 3), 0);
        assert_eq!(part_len(8, 4, 1), 4);
        assert_eq!(part_len(u64::MAX, 4, u64::MAX), 0);
    }

    #[test]
    fn objects_are_named_by_the_hash() {
        let hash = BlobHash::of(&[7; 32]);
        let path = hash.part(3).to_string();
        assert!(path.starts_with("blobs/") && path.ends_with("/3"), "{path}");
        assert_eq!(path.len(), "blobs/".len() + 64 + 2);
        assert_eq!(format!("{hash:?}"), "BlobHash(..)");
    }

    #[test]
    fn stored_times_keep_the_hour_by_default() {
        assert_eq!(time_granularity(&BlobSettings::default()), STORED_TIME_MS);
        let short = BlobSettings {
            upload_ttl: Duration::from_secs(2),
            ..BlobSettings::default()
        };
        assert_eq!(time_granularity(&short), 83);
    }

    #[test]
    fn settings_that_cannot_work_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        for bad in [
            BlobSettings {
                part_bytes: 0,
                ..BlobSettings::default()
            },
            BlobSettings {
                part_bytes: 1,
                ..BlobSettings::default()
            },
            BlobSettings {
                store: Some("relative/dir".into()),
                ..BlobSettings::default()
            },
            BlobSettings {
                store: Some("file://relative".into()),
                ..BlobSettings::default()
            },
            BlobSettings {
                store: Some("s3://".into()),
                ..BlobSettings::default()
            },
            BlobSettings {
                store: Some("s3://bucket".into()),
                store_options: vec![("no_such_option".into(), "x".into())],
                ..BlobSettings::default()
            },
        ] {
            assert!(
                matches!(
                    BlobStore::open(&bad, dir.path()),
                    Err(ServerError::Config(_))
                ),
                "{bad:?}"
            );
        }
        assert!(BlobStore::open(&BlobSettings::default(), dir.path()).is_ok());
        assert!(dir.path().join("blobs").is_dir());
    }
}
