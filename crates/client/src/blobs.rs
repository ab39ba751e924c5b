//! Encrypted attachments: a file goes up as an encrypted blob and comes back down as a file,
//! through the blob store's six routes. The cipher is `nightjar_core::attachment`, the plans
//! (which part next, which range) are `nightjar_machine::transfer`; this module does the IO.
//!
//! **Upload** ([`Client::upload_attachment`]): a first pass streams the file through the
//! sealer only to learn the ciphertext's digest (nothing is stored), then `POST /v1/blobs`
//! reserves the blob and every part is sent by sealing its plaintext range from the file
//! again (STREAM is deterministic under a fixed key and position): one part in memory at a
//! time, whatever the file's size. The upload in progress (file, size and modification time,
//! key, digest, blob, plan) is kept in the encrypted profile, so calling it again for the same
//! file after a crash or a lost connection asks the server which parts it lacks
//! (`GET .../upload`) and sends only those; a file that changed meanwhile starts over.
//!
//! **Download** ([`Client::download_attachment`]): the ciphertext goes to
//! `DIR/.nightjar-<digest>.part`, resumed with `Range` from the length already there. Once all
//! of it is on disk its SHA-256 is checked against the pointer, it is decrypted (every chunk
//! authenticated, the padding checked) into a hidden temporary file, and only then does the
//! file take its name: the sender's name made safe ([`safe_file_name`]), never over an
//! existing file. A blob that does not verify leaves nothing behind. The server is then told
//! the download happened (`POST .../fetched`), so it can delete the blob once every recipient
//! has it.
//!
//! Network failures and server errors are retried with the machine's backoff
//! (`nightjar_machine::backoff::retry_delay`: 0.5 s, 1 s, 2 s); 429s are waited out by the
//! HTTP layer. Creating the blob is not retried (it is not idempotent): a failure there is
//! the caller's to retry.

use std::fs::{self, File, OpenOptions};
use std::future::Future;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use nightjar_api::{B64, BLOB_ID_BYTES, CreateBlob, ErrorCode};
use nightjar_core::attachment::{self, AttachmentError, MAX_SIZE, Opener, Sealer};
use nightjar_core::content::{AttachmentKey, AttachmentPointer, MAX_THUMBNAIL_BYTES, Thumbnail};
use nightjar_machine::backoff::retry_delay;
use nightjar_machine::transfer::{DownloadPlan, Part, UploadPlan};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::api::Api;
use crate::client::{Client, now_ms};
use crate::error::{Error, Result};
use crate::store::PendingUpload;

/// How much of a file a streaming pass (digest, verification, decryption) reads at a time.
const READ_BUFFER: usize = 1 << 20;
/// The largest part this client holds in memory; a server asking for larger parts is refused.
pub const MAX_PART_SIZE: u64 = 64 << 20;
/// Retries of one request after a network failure or a server error.
const TRANSIENT_RETRIES: u32 = 3;
/// Pictures larger than this get no thumbnail (decoding them would take too long).
const THUMBNAIL_MAX_FILE: u64 = 64 << 20;
/// A thumbnail's longer side, in pixels.
const THUMBNAIL_EDGE: u32 = 320;
/// JPEG qualities tried, best first, until the thumbnail fits [`MAX_THUMBNAIL_BYTES`].
const THUMBNAIL_QUALITIES: [u8; 6] = [80, 70, 60, 50, 40, 30];
/// The longest file name a download gets (bytes), before any ` (n)`.
const MAX_NAME_BYTES: usize = 200;

/// Which step of a transfer a [`TransferProgress`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferPhase {
    /// Upload, first pass: encrypting the file to learn its digest.
    Encrypting,
    /// Upload: sending parts (`done` counts the bytes the server holds, resumed ones too).
    Uploading,
    /// Download: receiving the ciphertext (`done` counts the bytes on disk, resumed ones too).
    Downloading,
    /// Download: checking the ciphertext's digest.
    Verifying,
    /// Download: decrypting into the file.
    Decrypting,
}

/// How far a transfer got: `done` of `total` bytes in `phase` (ciphertext bytes, except
/// while encrypting, which counts the file's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferProgress {
    /// The step under way.
    pub phase: TransferPhase,
    /// Bytes done in this step.
    pub done: u64,
    /// Bytes this step takes.
    pub total: u64,
}

fn report(progress: &mut dyn FnMut(TransferProgress), phase: TransferPhase, done: u64, total: u64) {
    progress(TransferProgress { phase, done, total });
}

/// A file error that names the file.
fn file_error(what: &str, path: &Path) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.display().to_string();
    let what = what.to_owned();
    move |e| Error::File(format!("cannot {what} {path}: {e}"))
}

/// Whether trying again later may work: the network, or the server's own failure.
pub(crate) fn is_transient(error: &Error) -> bool {
    match error {
        Error::Network(_) => true,
        Error::Api(e) => e.code == ErrorCode::Internal,
        _ => false,
    }
}

/// Runs `op`, again after a transient failure, waiting the machine's backoff in between.
async fn with_retries<T, F, Fut>(mut op: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut failures = 0;
    loop {
        match op().await {
            Err(e) if is_transient(&e) && failures < TRANSIENT_RETRIES => {
                failures += 1;
                tokio::time::sleep(Duration::from_millis(retry_delay(failures))).await;
            }
            result => return result,
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The file being uploaded, and what identifies its contents.
struct Source {
    file: File,
    path: PathBuf,
    /// Its canonical path: the key of its upload record.
    key: String,
    size: u64,
    modified_ns: u64,
}

fn modified_ns(meta: &fs::Metadata) -> u64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

impl Source {
    fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(file_error("read", path))?;
        let meta = file.metadata().map_err(file_error("read", path))?;
        if !meta.is_file() {
            return Err(Error::Usage(format!("{} is not a file", path.display())));
        }
        if meta.len() > MAX_SIZE {
            return Err(Error::Usage(format!(
                "{} is larger than an attachment may be ({} GiB)",
                path.display(),
                MAX_SIZE >> 30
            )));
        }
        let canonical = fs::canonicalize(path).map_err(file_error("read", path))?;
        Ok(Self {
            file,
            path: path.to_path_buf(),
            key: canonical.to_string_lossy().into_owned(),
            size: meta.len(),
            modified_ns: modified_ns(&meta),
        })
    }

    /// Whether the file on disk is still the one this upload encrypts.
    fn unchanged(&self) -> bool {
        fs::metadata(&self.path)
            .is_ok_and(|m| m.len() == self.size && modified_ns(&m) == self.modified_ns)
    }

    fn changed(&self) -> Error {
        Error::File(format!(
            "{} changed while it was being uploaded; send it again",
            self.path.display()
        ))
    }

    /// The first pass: the digest of the ciphertext, sealing the file a buffer at a time and
    /// keeping none of it.
    fn digest(
        &mut self,
        key: &AttachmentKey,
        progress: &mut dyn FnMut(TransferProgress),
    ) -> Result<[u8; 32]> {
        self.file
            .seek(SeekFrom::Start(0))
            .map_err(file_error("read", &self.path))?;
        let mut sealer = Sealer::new(key, self.size)?;
        let mut buffer = vec![0u8; READ_BUFFER];
        let mut done = 0u64;
        report(progress, TransferPhase::Encrypting, 0, self.size);
        while done < self.size {
            let want =
                usize::try_from(self.size - done).map_or(READ_BUFFER, |n| n.min(READ_BUFFER));
            let n = self
                .file
                .read(&mut buffer[..want])
                .map_err(file_error("read", &self.path))?;
            if n == 0 {
                return Err(self.changed());
            }
            sealer.push(&buffer[..n])?;
            done += n as u64;
            report(progress, TransferPhase::Encrypting, done, self.size);
        }
        while sealer.remaining_padding() > 0 {
            sealer.pad(READ_BUFFER)?;
        }
        let (_, digest) = sealer.finish()?;
        Ok(digest)
    }

    /// The ciphertext of one part, sealed again from the plaintext it covers.
    fn seal_part(&mut self, key: &AttachmentKey, part: Part) -> Result<Bytes> {
        let source = attachment::range_source(self.size, part.start..part.end)?;
        let len = usize::try_from(source.plaintext.end - source.plaintext.start)
            .map_err(|_| AttachmentError::TooLarge)?;
        let mut plaintext = vec![0u8; len];
        self.file
            .seek(SeekFrom::Start(source.plaintext.start))
            .map_err(file_error("read", &self.path))?;
        if self.file.read_exact(&mut plaintext).is_err() {
            return Err(self.changed());
        }
        let sealed = attachment::seal_range(key, self.size, part.start..part.end, &plaintext)?;
        Ok(Bytes::from(sealed))
    }
}

impl Client {
    /// Encrypts the file at `path` and uploads it as a blob `recipients` devices will fetch
    /// (the conversation's other member devices, this account's other devices included);
    /// returns the pointer to send in a message. `media_type` is guessed from the extension
    /// when not given; pictures (PNG, JPEG, GIF, WebP up to 64 MiB) get a thumbnail.
    ///
    /// Resumable: after a crash or a failure, calling it again for the same, unchanged file
    /// sends only the parts the server lacks. Memory stays at about two parts (one part's
    /// plaintext and ciphertext) whatever the file's size. `progress` hears of every step.
    pub async fn upload_attachment(
        &mut self,
        path: &Path,
        media_type: Option<&str>,
        recipients: u32,
        progress: &mut dyn FnMut(TransferProgress),
    ) -> Result<AttachmentPointer> {
        if recipients == 0 {
            return Err(Error::Usage(
                "an attachment needs at least one recipient device".into(),
            ));
        }
        let api = self.api()?.clone();
        let mut source = Source::open(path)?;
        let media_type =
            media_type.map_or_else(|| guess_media_type(path).to_owned(), str::to_owned);
        let mut upload = match self.resume_upload(&api, &source).await? {
            Some(upload) => upload,
            None => {
                self.start_upload(&api, &mut source, recipients, progress)
                    .await?
            }
        };
        let total = upload.plan.size();
        report(
            progress,
            TransferPhase::Uploading,
            upload.plan.uploaded(),
            total,
        );
        while let Some(part) = upload.plan.next_part()? {
            let body = source.seal_part(&upload.key, part)?;
            let blob = upload.blob_id.as_str();
            let status = with_retries(|| api.put_blob_part(blob, part.index, body.clone())).await?;
            drop(body);
            upload.plan.apply(&status)?;
            self.store()
                .update_upload_plan(&upload.path, &upload.plan)?;
            report(
                progress,
                TransferPhase::Uploading,
                upload.plan.uploaded(),
                total,
            );
        }
        if !source.unchanged() {
            // What went up mixes two versions of the file: it would never verify.
            self.store().remove_upload(&upload.path)?;
            return Err(source.changed());
        }
        self.store().remove_upload(&upload.path)?;
        let thumbnail = thumbnail(path, &media_type, source.size).map(Box::new);
        let file_name = path
            .file_name()
            .map(|name| name.to_string_lossy().into_owned());
        Ok(AttachmentPointer {
            blob_id: upload.blob_id,
            key: upload.key,
            digest: upload.digest,
            size: source.size,
            media_type,
            file_name,
            caption: None,
            thumbnail,
        })
    }

    /// The stored upload of this file, brought up to date with what the server holds; `None`
    /// (and the record forgotten) when there is none to resume: the file changed, or the
    /// server no longer has the blob.
    async fn resume_upload(&mut self, api: &Api, source: &Source) -> Result<Option<PendingUpload>> {
        let Some(mut upload) = self.store().pending_upload(&source.key)? else {
            return Ok(None);
        };
        let same_file = upload.file_size == source.size && upload.modified_ns == source.modified_ns;
        if same_file && upload.expires_at > now_ms() {
            let blob = upload.blob_id.as_str();
            match with_retries(|| api.upload_status(blob)).await {
                Ok(status) => {
                    if upload.plan.apply(&status).is_ok() {
                        self.store()
                            .update_upload_plan(&upload.path, &upload.plan)?;
                        return Ok(Some(upload));
                    }
                }
                Err(e)
                    if matches!(
                        e.api_code(),
                        Some(ErrorCode::NotFound | ErrorCode::Forbidden)
                    ) => {}
                Err(e) => return Err(e),
            }
        }
        self.store().remove_upload(&source.key)?;
        Ok(None)
    }

    /// A new upload: a fresh key, the digest pass, the blob reserved and the record stored.
    async fn start_upload(
        &mut self,
        api: &Api,
        source: &mut Source,
        recipients: u32,
        progress: &mut dyn FnMut(TransferProgress),
    ) -> Result<PendingUpload> {
        let key = AttachmentKey::generate()
            .map_err(|e| Error::Database(format!("no randomness: {e}")))?;
        let digest = source.digest(&key, progress)?;
        let size = attachment::ciphertext_len(source.size);
        let created = create_blob(api, size, recipients).await?;
        let upload = PendingUpload {
            path: source.key.clone(),
            file_size: source.size,
            modified_ns: source.modified_ns,
            key,
            digest,
            blob_id: B64::encode(&created.blob_id.0),
            plan: UploadPlan::new(size, created.part_size, created.parts)?,
            expires_at: created.expires_at,
        };
        self.store().save_upload(&upload, now_ms())?;
        Ok(upload)
    }

    /// Downloads, verifies and decrypts the attachment into the directory `dir`; returns the
    /// file's path. Resumable: a download cut short goes on from the bytes already on disk
    /// (`dir/.nightjar-<digest>.part`) the next time. The file gets the sender's name made
    /// safe (see [`safe_file_name`]), with ` (1)`, ` (2)`... rather than replace a file. A
    /// blob that does not verify leaves no file behind and is an [`Error::Attachment`].
    pub async fn download_attachment(
        &mut self,
        pointer: &AttachmentPointer,
        dir: &Path,
        progress: &mut dyn FnMut(TransferProgress),
    ) -> Result<PathBuf> {
        let api = self.api()?.clone();
        if pointer.size > MAX_SIZE {
            return Err(AttachmentError::TooLarge.into());
        }
        let Fetched {
            mut part,
            part_path,
        } = fetch(&api, pointer, dir, progress).await?;
        let stem = format!(".nightjar-{}", hex(&pointer.digest[..16]));
        let temporary = dir.join(format!("{stem}.tmp"));
        let decrypted = decrypt(&mut part, &part_path, &temporary, pointer, progress);
        if let Err(e) = decrypted {
            let _ = fs::remove_file(&temporary);
            if matches!(e, Error::Attachment(_)) {
                drop(part);
                let _ = fs::remove_file(&part_path);
            }
            return Err(e);
        }
        let name = safe_file_name(pointer.file_name.as_deref());
        let placed = place(&temporary, dir, &name);
        if placed.is_err() {
            let _ = fs::remove_file(&temporary);
        }
        let path = placed?;
        drop(part);
        let _ = fs::remove_file(&part_path);
        self.confirm_fetched(&api, pointer).await;
        Ok(path)
    }

    /// Encrypts `plaintext` — something small this client holds in memory, such as a history
    /// archive — under a fresh key and uploads it as a blob for `recipients` devices. Each
    /// part is retried after a transient failure; a failure past those is the caller's to
    /// retry (with a new blob: the plaintext is not kept).
    pub async fn upload_bytes(
        &mut self,
        plaintext: &[u8],
        media_type: &str,
        recipients: u32,
        progress: &mut dyn FnMut(TransferProgress),
    ) -> Result<AttachmentPointer> {
        let api = self.api()?.clone();
        let size = plaintext.len() as u64;
        let key = AttachmentKey::generate()
            .map_err(|e| Error::Database(format!("no randomness: {e}")))?;
        report(progress, TransferPhase::Encrypting, 0, size);
        let mut sealer = Sealer::new(&key, size)?;
        let mut ciphertext = sealer.push(plaintext)?;
        while sealer.remaining_padding() > 0 {
            ciphertext.extend_from_slice(&sealer.pad(READ_BUFFER)?);
        }
        let (last, digest) = sealer.finish()?;
        ciphertext.extend_from_slice(&last);
        report(progress, TransferPhase::Encrypting, size, size);
        let ciphertext = Bytes::from(ciphertext);
        let total = ciphertext.len() as u64;
        let created = create_blob(&api, total, recipients).await?;
        let blob_id = B64::encode(&created.blob_id.0);
        let mut plan = UploadPlan::new(total, created.part_size, created.parts)?;
        report(progress, TransferPhase::Uploading, 0, total);
        while let Some(part) = plan.next_part()? {
            let range = usize::try_from(part.start).map_err(|_| AttachmentError::TooLarge)?
                ..usize::try_from(part.end).map_err(|_| AttachmentError::TooLarge)?;
            let body = ciphertext.slice(range);
            let blob = blob_id.as_str();
            let status = with_retries(|| api.put_blob_part(blob, part.index, body.clone())).await?;
            plan.apply(&status)?;
            report(progress, TransferPhase::Uploading, plan.uploaded(), total);
        }
        Ok(AttachmentPointer {
            blob_id,
            key,
            digest,
            size,
            media_type: media_type.to_owned(),
            file_name: None,
            caption: None,
            thumbnail: None,
        })
    }

    /// Downloads and verifies the blob `pointer` names, as [`Self::download_attachment`] does
    /// (resumable through `dir/.nightjar-<digest>.part`, which holds ciphertext only), and
    /// decrypts it into memory instead of a file: for things this client reads itself, such
    /// as a history archive, whose plaintext must not touch the disk. Refuses a pointer
    /// claiming more than `max` bytes.
    pub async fn download_bytes(
        &mut self,
        pointer: &AttachmentPointer,
        dir: &Path,
        max: u64,
        progress: &mut dyn FnMut(TransferProgress),
    ) -> Result<Zeroizing<Vec<u8>>> {
        let api = self.api()?.clone();
        if pointer.size > max.min(MAX_SIZE) {
            return Err(AttachmentError::TooLarge.into());
        }
        let Fetched {
            mut part,
            part_path,
        } = fetch(&api, pointer, dir, progress).await?;
        let opened = open_in_memory(&mut part, &part_path, pointer, progress);
        if matches!(opened, Ok(_) | Err(Error::Attachment(_))) {
            drop(part);
            let _ = fs::remove_file(&part_path);
        }
        let plaintext = opened?;
        self.confirm_fetched(&api, pointer).await;
        Ok(plaintext)
    }

    /// Tells the server this device has the blob, so it can delete it once every recipient
    /// does; a failure only delays that until the blob expires.
    async fn confirm_fetched(&mut self, api: &Api, pointer: &AttachmentPointer) {
        let blob = pointer.blob_id.as_str();
        if let Err(e) = with_retries(|| api.blob_fetched(blob)).await {
            self.notice(format!(
                "the server was not told this device has the attachment ({e}); it keeps the \
                 blob until it expires"
            ));
        }
    }

    /// `GET /v1/blobs/usage`: what this account's blobs take of its quota.
    pub async fn blob_usage(&self) -> Result<nightjar_api::BlobUsage> {
        self.api()?.blob_usage().await
    }
}

/// `POST /v1/blobs`: reserves a blob of `size` ciphertext bytes, checking the answer.
async fn create_blob(api: &Api, size: u64, recipients: u32) -> Result<nightjar_api::BlobCreated> {
    let created = api.create_blob(&CreateBlob { size, recipients }).await?;
    if created.blob_id.0.len() != BLOB_ID_BYTES {
        return Err(Error::Protocol("a blob id of the wrong length".into()));
    }
    if created.part_size > MAX_PART_SIZE {
        return Err(Error::Protocol(format!(
            "parts of {} bytes (this client takes at most {MAX_PART_SIZE})",
            created.part_size
        )));
    }
    Ok(created)
}

/// A blob's ciphertext, all of it on disk and its digest checked.
struct Fetched {
    part: File,
    part_path: PathBuf,
}

/// Downloads the ciphertext `pointer` names into `dir/.nightjar-<digest>.part`, going on from
/// what an earlier attempt left there, and checks its digest before anything is decrypted (a
/// blob that does not match is deleted).
async fn fetch(
    api: &Api,
    pointer: &AttachmentPointer,
    dir: &Path,
    progress: &mut dyn FnMut(TransferProgress),
) -> Result<Fetched> {
    if B64::decode(&pointer.blob_id).is_none_or(|id| id.len() != BLOB_ID_BYTES) {
        return Err(Error::Usage("the attachment names no valid blob".into()));
    }
    fs::create_dir_all(dir).map_err(file_error("create", dir))?;
    let part_path = dir.join(format!(".nightjar-{}.part", hex(&pointer.digest[..16])));
    let mut part = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&part_path)
        .map_err(file_error("create", &part_path))?;
    let on_disk = part
        .metadata()
        .map_err(file_error("read", &part_path))?
        .len();
    let mut plan = DownloadPlan::resume(attachment::ciphertext_len(pointer.size), on_disk);
    if plan.have() != on_disk {
        part.set_len(plan.have())
            .map_err(file_error("write", &part_path))?;
    }
    receive(
        api,
        &pointer.blob_id,
        &mut part,
        &part_path,
        &mut plan,
        progress,
    )
    .await?;
    let digest = hash_file(&mut part, &part_path, plan.size(), progress)?;
    if digest != pointer.digest {
        drop(part);
        let _ = fs::remove_file(&part_path);
        return Err(AttachmentError::DigestMismatch.into());
    }
    Ok(Fetched { part, part_path })
}

/// Decrypts the downloaded blob into memory; fails unless the whole blob opens.
fn open_in_memory(
    part: &mut File,
    part_path: &Path,
    pointer: &AttachmentPointer,
    progress: &mut dyn FnMut(TransferProgress),
) -> Result<Zeroizing<Vec<u8>>> {
    let capacity = usize::try_from(pointer.size).map_err(|_| AttachmentError::TooLarge)?;
    let mut plaintext = Zeroizing::new(Vec::with_capacity(capacity));
    open_blob(part, part_path, pointer, progress, &mut |chunk| {
        plaintext.extend_from_slice(&Zeroizing::new(chunk));
        Ok(())
    })?;
    Ok(plaintext)
}

/// Streams the downloaded blob through the opener, handing each piece of plaintext to
/// `out`; fails unless the whole blob opens (`out` may have had pieces by then: the caller
/// drops them).
fn open_blob(
    part: &mut File,
    part_path: &Path,
    pointer: &AttachmentPointer,
    progress: &mut dyn FnMut(TransferProgress),
    out: &mut dyn FnMut(Vec<u8>) -> Result<()>,
) -> Result<()> {
    part.seek(SeekFrom::Start(0))
        .map_err(file_error("read", part_path))?;
    let mut opener = Opener::new(&pointer.key, pointer.size, pointer.digest)?;
    let total = attachment::ciphertext_len(pointer.size);
    let mut buffer = vec![0u8; READ_BUFFER];
    let mut done = 0u64;
    loop {
        let n = part
            .read(&mut buffer)
            .map_err(file_error("read", part_path))?;
        if n == 0 {
            break;
        }
        out(opener.push(&buffer[..n])?)?;
        done += n as u64;
        report(progress, TransferPhase::Decrypting, done, total);
    }
    opener.finish()?;
    Ok(())
}

/// Downloads what is missing of the blob into `file`, retrying (and resuming) after network
/// failures and answers cut short, as long as the retries last or bytes keep coming.
async fn receive(
    api: &Api,
    blob: &str,
    file: &mut File,
    path: &Path,
    plan: &mut DownloadPlan,
    progress: &mut dyn FnMut(TransferProgress),
) -> Result<()> {
    let mut failures = 0;
    report(
        progress,
        TransferPhase::Downloading,
        plan.have(),
        plan.size(),
    );
    while !plan.is_complete() {
        let before = plan.have();
        let error = match receive_once(api, blob, file, path, plan, progress).await {
            Ok(()) if plan.is_complete() => break,
            Ok(()) => Error::Network("the download was cut short".into()),
            Err(e) if is_transient(&e) => e,
            Err(e) => return Err(e),
        };
        if plan.have() > before {
            failures = 0;
        }
        failures += 1;
        if failures > TRANSIENT_RETRIES {
            return Err(error);
        }
        tokio::time::sleep(Duration::from_millis(retry_delay(failures))).await;
    }
    file.sync_data().map_err(file_error("write", path))
}

/// One request for the rest of the blob, its body appended to `file` as it comes.
async fn receive_once(
    api: &Api,
    blob: &str,
    file: &mut File,
    path: &Path,
    plan: &mut DownloadPlan,
    progress: &mut dyn FnMut(TransferProgress),
) -> Result<()> {
    let mut body = api.download_blob(blob, plan.have()).await?;
    if plan.accept(body.start(), body.total())? {
        file.set_len(0).map_err(file_error("write", path))?;
    }
    file.seek(SeekFrom::Start(plan.have()))
        .map_err(file_error("write", path))?;
    while let Some(bytes) = body.chunk().await? {
        plan.received(bytes.len() as u64)?;
        file.write_all(&bytes).map_err(file_error("write", path))?;
        report(
            progress,
            TransferPhase::Downloading,
            plan.have(),
            plan.size(),
        );
    }
    Ok(())
}

/// SHA-256 of the first `len` bytes of `file`, a buffer at a time.
fn hash_file(
    file: &mut File,
    path: &Path,
    len: u64,
    progress: &mut dyn FnMut(TransferProgress),
) -> Result<[u8; 32]> {
    file.seek(SeekFrom::Start(0))
        .map_err(file_error("read", path))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; READ_BUFFER];
    let mut done = 0u64;
    loop {
        let n = file.read(&mut buffer).map_err(file_error("read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buffer[..n]);
        done += n as u64;
        report(progress, TransferPhase::Verifying, done, len);
    }
    Ok(hasher.finalize().into())
}

/// Decrypts the downloaded blob into `out`, streaming; fails unless the whole blob opens.
fn decrypt(
    part: &mut File,
    part_path: &Path,
    out: &Path,
    pointer: &AttachmentPointer,
    progress: &mut dyn FnMut(TransferProgress),
) -> Result<()> {
    let mut output = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(out)
        .map_err(file_error("create", out))?;
    open_blob(part, part_path, pointer, progress, &mut |plaintext| {
        output
            .write_all(&plaintext)
            .map_err(file_error("write", out))
    })?;
    output.sync_all().map_err(file_error("write", out))
}

/// Gives the decrypted file at `temporary` its name in `dir`: `name`, else `name (1)`,
/// `name (2)`... Each candidate is first created empty with `create_new` (so an existing file
/// is never touched, even one appearing meanwhile), then the file is renamed over it.
fn place(temporary: &Path, dir: &Path, name: &str) -> Result<PathBuf> {
    for n in 0..10_000u32 {
        let candidate = dir.join(numbered(name, n));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&candidate)
        {
            Ok(_) => {
                fs::rename(temporary, &candidate).map_err(file_error("write", &candidate))?;
                return Ok(candidate);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(file_error("create", &candidate)(e)),
        }
    }
    Err(Error::File(format!(
        "no free name for {name} in {}",
        dir.display()
    )))
}

/// `name`, or with ` (n)` before its extension.
fn numbered(name: &str, n: u32) -> String {
    if n == 0 {
        return name.to_owned();
    }
    match name.rfind('.') {
        Some(dot) if dot > 0 => format!("{} ({n}){}", &name[..dot], &name[dot..]),
        _ => format!("{name} ({n})"),
    }
}

/// A file name from what a sender claimed, safe to create in the download directory: no path
/// separators (`/`, `\` become `_`), no control or bidirectional-override characters, no `..`
/// (runs of dots become one), no leading dot (no hidden files, no `.` or `..`), no trailing
/// dots or spaces, characters Windows refuses replaced, at most 200 bytes; `attachment` if
/// nothing is left.
pub fn safe_file_name(claimed: Option<&str>) -> String {
    let mut name: String = claimed
        .unwrap_or_default()
        .chars()
        .filter(|c| {
            !c.is_control()
                && !matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        })
        .map(|c| match c {
            '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|' => '_',
            c => c,
        })
        .collect();
    while name.contains("..") {
        name = name.replace("..", ".");
    }
    let trimmed = name
        .trim_start_matches(|c: char| c == '.' || c.is_whitespace())
        .trim_end_matches(|c: char| c == '.' || c.is_whitespace());
    let mut end = trimmed.len().min(MAX_NAME_BYTES);
    while !trimmed.is_char_boundary(end) {
        end -= 1;
    }
    let cut = trimmed[..end].trim_end_matches(|c: char| c == '.' || c.is_whitespace());
    if cut.is_empty() {
        "attachment".to_owned()
    } else {
        cut.to_owned()
    }
}

/// The MIME type of a file, from its extension; `application/octet-stream` when unknown.
pub fn guess_media_type(path: &Path) -> &'static str {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    match extension.as_str() {
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "avif" => "image/avif",
        "svg" => "image/svg+xml",
        "bmp" => "image/bmp",
        "tif" | "tiff" => "image/tiff",
        "mp4" | "m4v" => "video/mp4",
        "mov" => "video/quicktime",
        "webm" => "video/webm",
        "mkv" => "video/x-matroska",
        "mp3" => "audio/mpeg",
        "m4a" => "audio/mp4",
        "ogg" | "oga" => "audio/ogg",
        "opus" => "audio/opus",
        "wav" => "audio/wav",
        "flac" => "audio/flac",
        "pdf" => "application/pdf",
        "txt" | "log" => "text/plain",
        "md" => "text/markdown",
        "csv" => "text/csv",
        "html" | "htm" => "text/html",
        "json" => "application/json",
        "zip" => "application/zip",
        "gz" => "application/gzip",
        "tar" => "application/x-tar",
        "7z" => "application/x-7z-compressed",
        "doc" => "application/msword",
        "docx" => "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xls" => "application/vnd.ms-excel",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "ppt" => "application/vnd.ms-powerpoint",
        "pptx" => "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "odt" => "application/vnd.oasis.opendocument.text",
        _ => "application/octet-stream",
    }
}

/// A JPEG of the picture at `path`, at most 320 pixels on its longer side and
/// [`MAX_THUMBNAIL_BYTES`] long (the quality lowered until it fits), upright (EXIF
/// orientation applied), transparency over white; `None` for other media types, files over
/// 64 MiB, pictures that do not decode (or decode past the limits: 16384 pixels a side,
/// 256 MiB of memory), and thumbnails that do not fit even at the lowest quality.
pub fn thumbnail(path: &Path, media_type: &str, size: u64) -> Option<Thumbnail> {
    use image::{DynamicImage, ImageDecoder as _, ImageReader, Limits, codecs::jpeg::JpegEncoder};

    let picture = matches!(
        media_type,
        "image/png" | "image/jpeg" | "image/gif" | "image/webp"
    );
    if !picture || size > THUMBNAIL_MAX_FILE {
        return None;
    }
    let file = BufReader::new(File::open(path).ok()?);
    let mut reader = ImageReader::new(file).with_guessed_format().ok()?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(16_384);
    limits.max_image_height = Some(16_384);
    limits.max_alloc = Some(256 << 20);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().ok()?;
    let orientation = decoder.orientation().ok();
    let mut picture = DynamicImage::from_decoder(decoder).ok()?;
    if let Some(orientation) = orientation {
        picture.apply_orientation(orientation);
    }
    if picture.width() > THUMBNAIL_EDGE || picture.height() > THUMBNAIL_EDGE {
        picture = picture.thumbnail(THUMBNAIL_EDGE, THUMBNAIL_EDGE);
    }
    let mut rgba = picture.to_rgba8();
    for pixel in rgba.pixels_mut() {
        let [r, g, b, a] = pixel.0;
        let over_white = |c: u8| {
            let blended = (u16::from(c) * u16::from(a) + 255 * (255 - u16::from(a))) / 255;
            u8::try_from(blended).unwrap_or(u8::MAX)
        };
        pixel.0 = [over_white(r), over_white(g), over_white(b), 255];
    }
    let rgb = DynamicImage::ImageRgba8(rgba).to_rgb8();
    for quality in THUMBNAIL_QUALITIES {
        let mut data = Vec::new();
        JpegEncoder::new_with_quality(&mut data, quality)
            .encode_image(&rgb)
            .ok()?;
        if data.len() <= MAX_THUMBNAIL_BYTES {
            return Some(Thumbnail {
                media_type: "image/jpeg".into(),
                width: rgb.width(),
                height: rgb.height(),
                data,
            });
        }
    }
    None
}

#[cfg(test)]
mod tests;
