//! Encrypted attachments in the browser: the same cipher (`nightjar_core::attachment`), the
//! same transfer plans (`nightjar_machine::transfer`) and the same six blob routes as the
//! command line's driver (`crates/client/src/blobs.rs`), over `fetch` and the page's `File`.
//!
//! **Upload** ([`attach`]): the file is read a slice at a time (`Blob.slice` and
//! `arrayBuffer()`), never whole. A first pass seals it only to learn the ciphertext's digest;
//! `POST /v1/blobs` reserves the blob (for the conversation's other member devices); then
//! every part the [`UploadPlan`] names is sealed again from the plaintext it covers
//! ([`attachment::range_source`], [`attachment::seal_range`]: STREAM is deterministic under a
//! fixed key and position) and sent with `PUT /v1/blobs/{blob}/parts/{index}`. One part is in
//! memory at a time. Pictures get a JPEG thumbnail drawn by the browser's image decoder on an
//! `OffscreenCanvas`. The pointer then goes out as an end-to-end encrypted message.
//!
//! **Download** ([`download`]): `GET /v1/blobs/{blob}` streams the ciphertext through the
//! [`Opener`] as it arrives (every chunk authenticated; a connection cut short is resumed
//! with `Range` where the [`DownloadPlan`] stopped); the plaintext leaves the wasm heap at
//! once and, every [`SPILL_BYTES`], leaves the page's memory too: it becomes a `Blob`, which
//! the browser keeps in its blob store (paged to disk when large) rather than in the page. The
//! file is one `Blob` over those pieces (nothing copied), handed to the user (an
//! `<a download>` over an object URL) only once the opener has checked that the whole blob
//! came and its SHA-256 is the pointer's. Then `POST .../fetched` tells the server this
//! device has it. So any size the cipher takes ([`MAX_SIZE`]) downloads with the page holding
//! a few MiB.
//!
//! **Bytes the page holds** (a history archive for a device being approved, see
//! `crate::history`): [`upload_bytes`] seals and sends them the same way, reading from
//! memory instead of a file; [`download_bytes`] keeps the ciphertext in memory, checks its
//! SHA-256 against the pointer before decrypting anything, and returns the plaintext to the
//! page itself (wiped when dropped), never as a file.
//!
//! Network failures and server errors are retried with the machine's backoff, as the command
//! line does; creating a blob is not (it is not idempotent).

use std::borrow::Cow;
use std::future::Future;
use std::ops::Range;

use js_sys::{Array, Reflect, Uint8Array};
use leptos::prelude::{GetUntracked as _, Update as _, UpdateValue as _};
use nightjar_api::{B64, BLOB_ID_BYTES, BlobCreated, CreateBlob, ErrorCode, UploadStatus};
use nightjar_core::ConversationId;
use nightjar_core::attachment::{self, MAX_SIZE, Opener, Sealer};
use nightjar_core::content::{
    AttachmentKey, AttachmentPointer, Content, MAX_THUMBNAIL_BYTES, Message, Thumbnail,
};
use nightjar_machine::Failure;
use nightjar_machine::backoff::{UNSPECIFIED_WAIT_MS, retry_delay};
use nightjar_machine::rows::AttachmentRow;
use nightjar_machine::transfer::{DownloadPlan, UploadPlan, parse_content_range};
use sha2::{Digest as _, Sha256};
use wasm_bindgen::{JsCast as _, JsValue};
use wasm_bindgen_futures::JsFuture;
use zeroize::Zeroizing;

use crate::driver::Driver;
use crate::ui_state::{SavedFile, ThumbnailView, TransferView, Ui};
use crate::uploads::{self, FileIdentity, PendingUpload, Started};
use crate::{account, js, net};

/// How much plaintext a download holds in the page before handing it to the browser's blob
/// store as one piece.
const SPILL_BYTES: usize = 8 << 20;
/// How much of a file a streaming pass reads at a time.
const READ_SLICE: u64 = 1 << 20;
/// The largest part this page holds in memory; a server asking for larger parts is refused.
const MAX_PART_SIZE: u64 = 64 << 20;
/// Retries of one request after a network failure or a server error.
const TRANSIENT_RETRIES: u32 = 3;
/// Pictures larger than this get no thumbnail (decoding them would take too long).
const THUMBNAIL_MAX_FILE: u64 = 64 << 20;
/// A thumbnail's longer side, in pixels.
const THUMBNAIL_EDGE: u32 = 320;
/// JPEG qualities tried, best first, until the thumbnail fits [`MAX_THUMBNAIL_BYTES`].
const THUMBNAIL_QUALITIES: [f64; 6] = [0.8, 0.7, 0.6, 0.5, 0.4, 0.3];

/// The media types shown as pictures (a thumbnail inline).
const PICTURES: [&str; 4] = ["image/png", "image/jpeg", "image/gif", "image/webp"];
/// How long the browser may take to open a video and seek to its thumbnail's frame.
const VIDEO_FRAME_TIMEOUT_MS: i32 = 10_000;

/// Which step of a transfer the progress bar shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Upload, first pass: encrypting the file to learn its digest.
    Encrypting,
    /// Upload: sending the parts.
    Uploading,
    /// Download: receiving and decrypting the ciphertext.
    Downloading,
}

impl Step {
    pub(crate) fn label(self) -> &'static str {
        match self {
            Step::Encrypting => "Encrypting",
            Step::Uploading => "Uploading",
            Step::Downloading => "Downloading",
        }
    }
}

/// Whether `media_type` is a picture the page shows inline.
pub(crate) fn is_picture(media_type: &str) -> bool {
    PICTURES.contains(&media_type)
}

/// Whether `media_type` is a video (its thumbnail is a frame, shown inline).
pub(crate) fn is_video(media_type: &str) -> bool {
    media_type.starts_with("video/")
}

/// A file size as people read it: `512 bytes`, `12 KB`, `3.4 MB`, `1.2 GB` (binary units).
pub(crate) fn human_size(size: u64) -> String {
    const KB: u64 = 1024;
    const MB: u64 = KB * 1024;
    const GB: u64 = MB * 1024;
    #[allow(clippy::cast_precision_loss)]
    match size {
        0..KB => format!("{size} bytes"),
        KB..MB => format!("{} KB", size.div_ceil(KB)),
        MB..GB => format!("{:.1} MB", size as f64 / MB as f64),
        _ => format!("{:.1} GB", size as f64 / GB as f64),
    }
}

/// `done` of `total` as a whole percentage.
pub(crate) fn percent(done: u64, total: u64) -> u64 {
    if total == 0 {
        100
    } else {
        u64::try_from(u128::from(done.min(total)) * 100 / u128::from(total)).unwrap_or(100)
    }
}

/// The pointer an attachment row carries (decoded from its message).
pub(crate) fn pointer_of(row: &AttachmentRow) -> Option<AttachmentPointer> {
    match Message::decode(&row.message.0).map(|m| m.content) {
        Ok(Content::Attachment(pointer)) => Some(pointer),
        _ => None,
    }
}

/// One `Blob` of `media_type` over `parts` (`Uint8Array`s or `Blob`s; a `Blob` part is
/// referenced, not copied).
fn blob_of(parts: &Array, media_type: &str) -> Result<web_sys::Blob, String> {
    let options = web_sys::BlobPropertyBag::new();
    options.set_type(media_type);
    web_sys::Blob::new_with_u8_array_sequence_and_options(parts, &options)
        .map_err(|e| js::describe(&e))
}

/// An object URL for `parts` (`Uint8Array`s or `Blob`s) as one `Blob` of `media_type`.
fn object_url(parts: &Array, media_type: &str) -> Result<String, String> {
    let blob = blob_of(parts, media_type)?;
    web_sys::Url::create_object_url_with_blob(&blob).map_err(|e| js::describe(&e))
}

/// An object URL of the picture's thumbnail, with its size in pixels; `None` unless both the
/// file and the thumbnail are pictures the page shows.
pub(crate) fn thumbnail_url(row: &AttachmentRow) -> Option<ThumbnailView> {
    if !is_picture(&row.media_type) && !is_video(&row.media_type) {
        return None;
    }
    let thumbnail = pointer_of(row)?.thumbnail?;
    if !is_picture(&thumbnail.media_type) || thumbnail.data.is_empty() {
        return None;
    }
    let parts = Array::of1(&js::u8_array(&thumbnail.data));
    let url = object_url(&parts, &thumbnail.media_type).ok()?;
    Some(ThumbnailView {
        url,
        width: thumbnail.width,
        height: thumbnail.height,
    })
}

/// Waits `ms` milliseconds.
async fn sleep(ms: u64) {
    let delay = i32::try_from(ms).unwrap_or(i32::MAX);
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        if let Ok(window) = js::window() {
            let _ = window
                .set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, delay.max(0));
        }
    });
    let _ = JsFuture::from(promise).await;
}

/// Whether trying again later may work: the network, or the server's own failure.
fn is_transient(failure: &Failure) -> bool {
    match failure {
        Failure::Network(_) => true,
        Failure::Refused(e) => matches!(e.code, ErrorCode::Internal | ErrorCode::RateLimited),
    }
}

/// How long to wait before trying again after `failure`, the `failures`-th in a row.
fn wait_after(failure: &Failure, failures: u32) -> u64 {
    match failure {
        Failure::Refused(e) if e.code == ErrorCode::RateLimited => {
            e.retry_after_ms.unwrap_or(UNSPECIFIED_WAIT_MS)
        }
        _ => retry_delay(failures),
    }
}

/// Runs `op`, again after a transient failure, waiting the machine's backoff in between.
async fn with_retries<T, F, Fut>(mut op: F) -> Result<T, Failure>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure>>,
{
    let mut failures = 0;
    loop {
        match op().await {
            Err(e) if is_transient(&e) && failures < TRANSIENT_RETRIES => {
                failures += 1;
                sleep(wait_after(&e, failures)).await;
            }
            result => return result,
        }
    }
}

/// Hears of a transfer's progress: the step, and how many of its bytes are done.
pub(crate) trait Report {
    /// `done` of `total` bytes of `step`.
    fn report(&mut self, step: Step, done: u64, total: u64);
}

/// Reports a file's transfer to the page (only when the percentage moves): the progress bar
/// in its message, or under the composer.
struct Progress {
    ui: Ui,
    key: String,
    conversation: ConversationId,
    name: String,
    upload: bool,
    shown: Option<(Step, u64)>,
}

impl Progress {
    fn new(ui: Ui, key: String, conversation: ConversationId, name: String, upload: bool) -> Self {
        Self {
            ui,
            key,
            conversation,
            name,
            upload,
            shown: None,
        }
    }
}

impl Report for Progress {
    fn report(&mut self, step: Step, done: u64, total: u64) {
        let now = (step, percent(done, total));
        if self.shown == Some(now) {
            return;
        }
        self.shown = Some(now);
        let view = TransferView {
            key: self.key.clone(),
            conversation: self.conversation,
            name: self.name.clone(),
            upload: self.upload,
            step,
            done,
            total,
        };
        self.ui
            .transfers
            .update(|list| match list.iter_mut().find(|t| t.key == view.key) {
                Some(t) => *t = view,
                None => list.push(view),
            });
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        let key = std::mem::take(&mut self.key);
        self.ui
            .transfers
            .update(|list| list.retain(|t| t.key != key));
    }
}

// ---------------------------------------------------------------------------------------
// Upload
// ---------------------------------------------------------------------------------------

/// What an upload reads its plaintext from, a range at a time.
#[derive(Clone, Copy)]
enum Source<'a> {
    /// A file the user chose: read a slice at a time, never whole.
    File(&'a web_sys::File),
    /// Bytes this page made and holds (a history archive): borrowed, never copied.
    Bytes(&'a [u8]),
}

impl<'a> Source<'a> {
    /// The plaintext's size in bytes.
    fn size(self) -> u64 {
        match self {
            Source::File(file) => file_size(file),
            Source::Bytes(bytes) => bytes.len() as u64,
        }
    }

    /// The plaintext of `range`.
    async fn read(self, range: Range<u64>) -> Result<Cow<'a, [u8]>, String> {
        match self {
            Source::File(file) => read(file, range).await.map(Cow::Owned),
            Source::Bytes(bytes) => usize::try_from(range.start)
                .ok()
                .zip(usize::try_from(range.end).ok())
                .and_then(|(start, end)| bytes.get(start..end))
                .map(Cow::Borrowed)
                .ok_or_else(|| "a range outside the bytes to send".to_owned()),
        }
    }
}

/// The bytes `range` of `file`: one slice read, never the whole file.
async fn read(file: &web_sys::Blob, range: Range<u64>) -> Result<Vec<u8>, String> {
    #[allow(clippy::cast_precision_loss)]
    let slice = file
        .slice_with_f64_and_f64(range.start as f64, range.end as f64)
        .map_err(|e| format!("cannot read the file: {}", js::describe(&e)))?;
    let buffer = JsFuture::from(slice.array_buffer())
        .await
        .map_err(|e| format!("cannot read the file: {}", js::describe(&e)))?;
    let bytes = js::bytes(&buffer);
    if bytes.len() as u64 != range.end - range.start {
        return Err("the file changed while it was being sent; send it again".into());
    }
    Ok(bytes)
}

/// The file's size in bytes.
fn file_size(file: &web_sys::File) -> u64 {
    let size = file.size();
    if size.is_finite() && size > 0.0 {
        // Integral and far below 2^53.
        size as u64
    } else {
        0
    }
}

/// Sends `files`, one after the other, to `conversation`: each is encrypted and uploaded
/// here, then its pointer goes out as a message. Progress and errors show in the page. Each
/// upload is recorded (`crate::uploads`) once its blob exists, so that it can resume.
pub(crate) fn attach(driver: &Driver, conversation: ConversationId, files: Vec<web_sys::File>) {
    if files.is_empty() {
        return;
    }
    let again = driver.clone();
    driver.intent(move |machine, _, ui| {
        let ui = *ui;
        let token = account::token(machine);
        // Every member device but this one fetches it: the other members' and this
        // account's other devices.
        let recipients = match machine.engine().conversation(conversation) {
            Ok(info) => {
                u32::try_from(info.members.len().saturating_sub(1).max(1)).unwrap_or(u32::MAX)
            }
            Err(e) => {
                ui.error(format!("cannot send a file here: {e}"));
                return;
            }
        };
        wasm_bindgen_futures::spawn_local(async move {
            for file in files {
                let id = format!("upload/{}/{}", js::now_ms(), file.name());
                let upload = Upload {
                    driver: &again,
                    ui,
                    token: token.as_deref(),
                    conversation,
                    id: id.clone(),
                };
                let mut progress = upload.progress(&file);
                let started = upload.start(&file, recipients, &mut progress).await;
                upload.finish(started, file, progress);
            }
        });
    });
}

/// Resumes the recorded upload `id` with `file`, which the user chose again: sends the parts
/// the server lacks, then the message. A file that is not the one the upload started from
/// is refused.
pub(crate) fn resume(driver: &Driver, id: String, file: web_sys::File) {
    let again = driver.clone();
    driver.intent(move |machine, _, ui| {
        let ui = *ui;
        let token = account::token(machine);
        if ui.transfers.get_untracked().iter().any(|t| t.key == id) {
            // Resumed already (a second press).
            return;
        }
        let Some(record) = uploads::pending(machine.store())
            .into_iter()
            .find(|u| u.id == id)
        else {
            ui.error("that upload is no longer waiting".into());
            return;
        };
        if !record.is_same_file(&identity(&file)) {
            ui.error(format!(
                "that is not the file that was being sent: choose {} as it was then (its \
                 size or date differ), or send it anew",
                record.name
            ));
            return;
        }
        let Some(conversation) = record.conversation_id() else {
            return;
        };
        wasm_bindgen_futures::spawn_local(async move {
            let upload = Upload {
                driver: &again,
                ui,
                token: token.as_deref(),
                conversation,
                id,
            };
            let mut progress = upload.progress(&file);
            let resumed = upload.resume(record, &file, &mut progress).await;
            upload.finish(resumed, file, progress);
        });
    });
}

/// Forgets the recorded upload `id` without sending it (the server deletes its blob when it
/// expires).
pub(crate) fn discard(driver: &Driver, id: String) {
    driver.intent(move |machine, _, ui| {
        forget_upload(machine.store(), ui, &id);
    });
}

/// Forgets the recorded upload `id` and the file this page held for it.
fn forget_upload(store: &nightjar_machine::MemoryClientStore, ui: &Ui, id: &str) {
    uploads::forget(store, id);
    ui.held_files.update_value(|held| drop(held.remove(id)));
}

/// What a file's name, size and modification time say about its contents.
fn identity(file: &web_sys::File) -> FileIdentity {
    let modified = file.last_modified();
    FileIdentity {
        name: file.name(),
        size: file_size(file),
        // Integral milliseconds, far below 2^53.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        modified_ms: if modified.is_finite() && modified > 0.0 {
            modified as u64
        } else {
            0
        },
    }
}

/// Why an upload stopped.
enum Stop {
    /// It may go on: the record stays, and the chat offers to resume it.
    Resumable(String),
    /// It cannot: the record goes (the blob is gone, or the file is not what it was).
    Over(String),
}

/// One file upload of this page, as recorded under `id`.
struct Upload<'a> {
    driver: &'a Driver,
    ui: Ui,
    token: Option<&'a str>,
    conversation: ConversationId,
    id: String,
}

impl Upload<'_> {
    /// A new upload: a fresh key, the digest pass, the blob reserved and the record kept,
    /// then every part.
    async fn start(
        &self,
        file: &web_sys::File,
        recipients: u32,
        progress: &mut Progress,
    ) -> Result<Sent, Stop> {
        let source = Source::File(file);
        let prepared = prepare(source, self.token, recipients, progress)
            .await
            .map_err(Stop::Over)?;
        let record = PendingUpload::new(
            self.id.clone(),
            self.conversation,
            identity(file),
            Started {
                key: prepared.key.clone(),
                digest: prepared.digest,
                blob_id: prepared.blob_id.clone(),
                plan: prepared.plan.clone(),
                expires_at: prepared.expires_at,
            },
        );
        self.driver
            .ask(move |machine, _, _| uploads::save(machine.store(), &record))
            .await;
        self.send_rest(prepared, source, progress).await
    }

    /// A recorded upload, brought up to date with what the server holds, then the rest.
    async fn resume(
        &self,
        record: PendingUpload,
        file: &web_sys::File,
        progress: &mut Progress,
    ) -> Result<Sent, Stop> {
        // Under way from now on: no longer offered as stopped.
        progress.report(Step::Uploading, record.plan.uploaded(), record.plan.size());
        let (key, digest) = record
            .secrets()
            .ok_or_else(|| Stop::Over("its record is damaged; send it anew".into()))?;
        let mut plan = record.plan.clone();
        let path = format!("/v1/blobs/{}/upload", net::segment(&record.blob_id));
        let status: UploadStatus =
            with_retries(|| net::json("GET", &path, self.token, None::<&()>))
                .await
                .map_err(|e| match e {
                    Failure::Refused(r)
                        if matches!(r.code, ErrorCode::NotFound | ErrorCode::Forbidden) =>
                    {
                        Stop::Over(
                            "the server no longer holds what was sent of it (an unfinished \
                         upload is deleted after a while); send it anew"
                                .into(),
                        )
                    }
                    e => Stop::Resumable(e.to_string()),
                })?;
        plan.apply(&status).map_err(|e| Stop::Over(e.to_string()))?;
        let prepared = Prepared {
            key,
            digest,
            size: record.file_size,
            blob_id: record.blob_id,
            plan,
            expires_at: record.expires_at,
        };
        self.send_rest(prepared, Source::File(file), progress).await
    }

    fn progress(&self, file: &web_sys::File) -> Progress {
        Progress::new(
            self.ui,
            self.id.clone(),
            self.conversation,
            file.name(),
            true,
        )
    }

    /// Sends the parts `prepared.plan` lacks, noting each in the record.
    async fn send_rest(
        &self,
        prepared: Prepared,
        source: Source<'_>,
        progress: &mut Progress,
    ) -> Result<Sent, Stop> {
        let id = self.id.clone();
        let driver = self.driver.clone();
        let note = move |plan: &UploadPlan| {
            let (id, plan) = (id.clone(), plan.clone());
            driver.intent(move |machine, _, _| {
                let store = machine.store();
                if let Some(mut record) = uploads::pending(store).into_iter().find(|u| u.id == id) {
                    record.plan = plan;
                    uploads::save(store, &record);
                }
            });
        };
        let uploaded = send_parts(prepared, source, self.token, progress, &note)
            .await
            .map_err(|e| match e {
                PartsError::Transient(why) => Stop::Resumable(why),
                PartsError::Refused(why) => Stop::Over(why),
            })?;
        let thumbnail = match source {
            Source::File(file) => thumbnail(file, &media_type_of(file), uploaded.size)
                .await
                .map(Box::new),
            Source::Bytes(_) => None,
        };
        Ok(Sent {
            uploaded,
            thumbnail,
        })
    }

    /// Sends the message of a finished upload (forgetting its record in the same step), or
    /// says why it stopped; its progress bar goes only then, so that the page never shows
    /// it as stopped meanwhile.
    fn finish(&self, outcome: Result<Sent, Stop>, file: web_sys::File, progress: Progress) {
        let name = file.name();
        match outcome {
            Ok(sent) => {
                let pointer = AttachmentPointer {
                    blob_id: sent.uploaded.blob_id,
                    key: sent.uploaded.key,
                    digest: sent.uploaded.digest,
                    size: sent.uploaded.size,
                    media_type: media_type_of(&file),
                    file_name: Some(name).filter(|n| !n.is_empty()),
                    caption: None,
                    thumbnail: sent.thumbnail,
                };
                send(
                    self.driver,
                    self.conversation,
                    pointer,
                    file,
                    self.id.clone(),
                );
            }
            Err(Stop::Resumable(why)) => {
                self.ui.error(format!(
                    "could not send {name}: {why}. It waits above the message box to be \
                     resumed"
                ));
                // This page keeps the file, so Resume needs no choosing again until a reload.
                let id = self.id.clone();
                self.ui
                    .held_files
                    .update_value(|held| drop(held.insert(id, file)));
                // Drawn as stopped at the next refresh.
                self.driver.intent(|_, _, _| {});
            }
            Err(Stop::Over(why)) => {
                self.ui.error(format!("could not send {name}: {why}"));
                let id = self.id.clone();
                self.driver.intent(move |machine, _, ui| {
                    forget_upload(machine.store(), ui, &id);
                });
            }
        }
        drop(progress);
    }
}

/// A file uploaded whole, with its thumbnail.
struct Sent {
    uploaded: Uploaded,
    thumbnail: Option<Box<Thumbnail>>,
}

/// The media type a file says it has, or `application/octet-stream`.
fn media_type_of(file: &web_sys::File) -> String {
    match file.type_() {
        t if t.is_empty() || t.len() > 255 => "application/octet-stream".to_owned(),
        t => t,
    }
}

/// Sends the pointer of an uploaded file and forgets the upload's record (`id`) in the same
/// step; the page keeps the file itself at hand for this session (its own copy, without a
/// download).
fn send(
    driver: &Driver,
    conversation: ConversationId,
    pointer: AttachmentPointer,
    file: web_sys::File,
    id: String,
) {
    driver.intent(move |machine, now, ui| {
        let name = pointer.file_name.clone().unwrap_or_default();
        match machine.send_message(now, conversation, Content::Attachment(pointer)) {
            Ok(message) => {
                forget_upload(machine.store(), ui, &id);
                if let Ok(url) = web_sys::Url::create_object_url_with_blob(&file) {
                    let key = format!("{}/{}", machine.me().username, message.to_hex());
                    ui.saved.update(|saved| {
                        saved.insert(key, SavedFile { url, name });
                    });
                }
            }
            Err(e) => ui.error(format!("could not send {name}: {e}")),
        }
    });
}

/// Encrypts and uploads `bytes` this page holds (a history archive) as a blob for
/// `recipients` devices, as [`attach`] does a file; the pointer, without a name or thumbnail.
/// Not recorded: the bytes do not outlive the page either.
pub(crate) async fn upload_bytes(
    bytes: &[u8],
    media_type: &str,
    token: Option<&str>,
    recipients: u32,
    progress: &mut dyn Report,
) -> Result<AttachmentPointer, String> {
    let source = Source::Bytes(bytes);
    let prepared = prepare(source, token, recipients, progress).await?;
    let sealed = send_parts(prepared, source, token, progress, &|_| {})
        .await
        .map_err(|e| match e {
            PartsError::Transient(why) | PartsError::Refused(why) => why,
        })?;
    Ok(AttachmentPointer {
        blob_id: sealed.blob_id,
        key: sealed.key,
        digest: sealed.digest,
        size: sealed.size,
        media_type: media_type.to_owned(),
        file_name: None,
        caption: None,
        thumbnail: None,
    })
}

/// A blob uploaded whole: what a pointer to it needs besides the media type and name.
struct Uploaded {
    /// The blob's id (base64url).
    blob_id: String,
    /// The fresh key it is encrypted under.
    key: AttachmentKey,
    /// The ciphertext's SHA-256.
    digest: [u8; 32],
    /// The plaintext's size in bytes.
    size: u64,
}

/// An upload whose blob exists: the key, the digest, and the parts still to send.
struct Prepared {
    key: AttachmentKey,
    digest: [u8; 32],
    /// The plaintext's size in bytes.
    size: u64,
    blob_id: String,
    plan: UploadPlan,
    expires_at: u64,
}

/// Why sending the parts stopped.
enum PartsError {
    /// The network, the server's own failure, a rate limit, past the retries.
    Transient(String),
    /// Anything else: the server refused, or the file changed.
    Refused(String),
}

/// Encrypts `source` under a fresh key once, only to learn the ciphertext's digest, and
/// reserves a blob for `recipients` devices.
async fn prepare(
    source: Source<'_>,
    token: Option<&str>,
    recipients: u32,
    progress: &mut dyn Report,
) -> Result<Prepared, String> {
    let size = source.size();
    if size > MAX_SIZE {
        return Err(format!(
            "it is larger than an attachment may be ({} GiB)",
            MAX_SIZE >> 30
        ));
    }
    let key = AttachmentKey::generate().map_err(|e| format!("no randomness: {e}"))?;

    // The ciphertext's digest, sealing a slice at a time and keeping none of it.
    let mut sealer = Sealer::new(&key, size).map_err(|e| e.to_string())?;
    let mut done = 0;
    progress.report(Step::Encrypting, 0, size);
    while done < size {
        let end = (done + READ_SLICE).min(size);
        let plaintext = source.read(done..end).await?;
        sealer.push(&plaintext).map_err(|e| e.to_string())?;
        done = end;
        progress.report(Step::Encrypting, done, size);
    }
    while sealer.remaining_padding() > 0 {
        sealer.pad(READ_SLICE as usize).map_err(|e| e.to_string())?;
    }
    let (_, digest) = sealer.finish().map_err(|e| e.to_string())?;

    // The blob, reserved for the recipients' devices (not retried: not idempotent).
    let total = attachment::ciphertext_len(size);
    let created: BlobCreated = net::json(
        "POST",
        "/v1/blobs",
        token,
        Some(&CreateBlob {
            size: total,
            recipients,
        }),
    )
    .await
    .map_err(|e| e.to_string())?;
    if created.blob_id.0.len() != BLOB_ID_BYTES {
        return Err("the server gave a blob id of the wrong length".into());
    }
    if created.part_size > MAX_PART_SIZE {
        return Err(format!(
            "the server asks for parts of {} bytes (this page takes at most {MAX_PART_SIZE})",
            created.part_size
        ));
    }
    Ok(Prepared {
        key,
        digest,
        size,
        blob_id: B64::encode(&created.blob_id.0),
        plan: UploadPlan::new(total, created.part_size, created.parts)
            .map_err(|e| e.to_string())?,
        expires_at: created.expires_at,
    })
}

/// Sends every part `prepared.plan` still lacks, each sealed again from the plaintext it
/// covers; `note` hears of the plan after each part.
async fn send_parts(
    prepared: Prepared,
    source: Source<'_>,
    token: Option<&str>,
    progress: &mut dyn Report,
    note: &dyn Fn(&UploadPlan),
) -> Result<Uploaded, PartsError> {
    let Prepared {
        key,
        digest,
        size,
        blob_id,
        mut plan,
        ..
    } = prepared;
    let refused = |e: &dyn std::fmt::Display| PartsError::Refused(e.to_string());
    if source.size() != size {
        return Err(PartsError::Refused(
            "the file changed while it was being sent; send it again".into(),
        ));
    }
    let total = plan.size();
    progress.report(Step::Uploading, plan.uploaded(), total);
    let path = |index: u64| format!("/v1/blobs/{}/parts/{index}", net::segment(&blob_id));
    while let Some(part) = plan.next_part().map_err(|e| refused(&e))? {
        let range =
            attachment::range_source(size, part.start..part.end).map_err(|e| refused(&e))?;
        let plaintext = source
            .read(range.plaintext)
            .await
            .map_err(|e| refused(&e))?;
        let sealed = attachment::seal_range(&key, size, part.start..part.end, &plaintext)
            .map_err(|e| refused(&e))?;
        drop(plaintext);
        let body: JsValue = js::u8_array(&sealed).into();
        drop(sealed);
        let path = path(part.index);
        let status: UploadStatus = with_retries(|| put_part(&path, token, &body))
            .await
            .map_err(|e| {
                if is_transient(&e) {
                    PartsError::Transient(e.to_string())
                } else {
                    refused(&e)
                }
            })?;
        plan.apply(&status).map_err(|e| refused(&e))?;
        note(&plan);
        progress.report(Step::Uploading, plan.uploaded(), total);
    }
    Ok(Uploaded {
        blob_id,
        key,
        digest,
        size,
    })
}

/// `PUT /v1/blobs/{blob}/parts/{index}`: one part; where the upload stands.
async fn put_part(
    path: &str,
    token: Option<&str>,
    body: &JsValue,
) -> Result<UploadStatus, Failure> {
    let headers = [("content-type", "application/octet-stream")];
    let response = net::fetch("PUT", path, token, &headers, Some(body)).await?;
    if !(200..300).contains(&response.status()) {
        return Err(net::refusal(&response).await);
    }
    let bytes = net::body(&response).await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| Failure::Network(format!("unexpected answer to {path}: {e}")))
}

/// A JPEG of the picture, at most 320 pixels on its longer side and [`MAX_THUMBNAIL_BYTES`]
/// long (the quality lowered until it fits), over white; drawn by the browser's own image
/// decoder (which applies the EXIF orientation). `None` for other media types, files over
/// 64 MiB, and pictures the browser cannot decode.
async fn thumbnail(file: &web_sys::File, media_type: &str, size: u64) -> Option<Thumbnail> {
    let bitmap = if is_picture(media_type) && size <= THUMBNAIL_MAX_FILE {
        let window = js::window().ok()?;
        JsFuture::from(window.create_image_bitmap_with_blob(file).ok()?)
            .await
            .ok()?
            .dyn_into()
            .ok()?
    } else if is_video(media_type) {
        // The browser reads only what it needs of the file to decode one frame.
        video_frame(file).await?
    } else {
        return None;
    };
    let (width, height) = (bitmap.width(), bitmap.height());
    if width == 0 || height == 0 {
        bitmap.close();
        return None;
    }
    let scale = (f64::from(THUMBNAIL_EDGE) / f64::from(width.max(height))).min(1.0);
    // Rounded sizes of at most 320.
    let (w, h) = (
        ((f64::from(width) * scale).round() as u32).max(1),
        ((f64::from(height) * scale).round() as u32).max(1),
    );
    let canvas = web_sys::OffscreenCanvas::new(w, h).ok()?;
    let context: web_sys::OffscreenCanvasRenderingContext2d =
        canvas.get_context("2d").ok()??.dyn_into().ok()?;
    context.set_fill_style_str("#fff");
    context.fill_rect(0.0, 0.0, f64::from(w), f64::from(h));
    let drawn = context.draw_image_with_image_bitmap_and_dw_and_dh(
        &bitmap,
        0.0,
        0.0,
        f64::from(w),
        f64::from(h),
    );
    bitmap.close();
    drawn.ok()?;
    for quality in THUMBNAIL_QUALITIES {
        let options = web_sys::ImageEncodeOptions::new();
        options.set_type("image/jpeg");
        options.set_quality(quality);
        let blob: web_sys::Blob =
            JsFuture::from(canvas.convert_to_blob_with_options(&options).ok()?)
                .await
                .ok()?
                .dyn_into()
                .ok()?;
        if blob.size() > MAX_THUMBNAIL_BYTES as f64 {
            continue;
        }
        let data = js::bytes(&JsFuture::from(blob.array_buffer()).await.ok()?);
        if data.len() <= MAX_THUMBNAIL_BYTES {
            return Some(Thumbnail {
                media_type: "image/jpeg".into(),
                width: w,
                height: h,
                data,
            });
        }
    }
    None
}

/// A frame of the video `file`, a second in (or halfway through a shorter one), decoded by
/// the browser; `None` if it cannot decode the video within [`VIDEO_FRAME_TIMEOUT_MS`]. The
/// video is never shown or played.
async fn video_frame(file: &web_sys::File) -> Option<web_sys::ImageBitmap> {
    let window = js::window().ok()?;
    let video: web_sys::HtmlVideoElement = window
        .document()?
        .create_element("video")
        .ok()?
        .dyn_into()
        .ok()?;
    let url = web_sys::Url::create_object_url_with_blob(file).ok()?;
    video.set_muted(true);
    video.set_preload("auto");
    video.set_src(&url);
    let frame = async {
        wait_for(&video, "loadeddata").await?;
        let duration = video.duration();
        let at = if duration.is_finite() && duration > 0.0 {
            (duration / 2.0).min(1.0)
        } else {
            0.0
        };
        video.set_current_time(at);
        wait_for(&video, "seeked").await?;
        JsFuture::from(
            window
                .create_image_bitmap_with_html_video_element(&video)
                .ok()?,
        )
        .await
        .ok()?
        .dyn_into::<web_sys::ImageBitmap>()
        .ok()
    }
    .await;
    // Let go of the file.
    let _ = video.remove_attribute("src");
    video.load();
    let _ = web_sys::Url::revoke_object_url(&url);
    frame
}

/// Waits for `event` on `target`; `None` on an `error` event or after
/// [`VIDEO_FRAME_TIMEOUT_MS`].
async fn wait_for(target: &web_sys::EventTarget, event: &str) -> Option<()> {
    let promise = js_sys::Promise::new(&mut |resolve, reject| {
        let once = web_sys::AddEventListenerOptions::new();
        once.set_once(true);
        let _ = target.add_event_listener_with_callback_and_add_event_listener_options(
            event, &resolve, &once,
        );
        let _ = target.add_event_listener_with_callback_and_add_event_listener_options(
            "error", &reject, &once,
        );
        if let Ok(window) = js::window() {
            let _ = window.set_timeout_with_callback_and_timeout_and_arguments_0(
                &reject,
                VIDEO_FRAME_TIMEOUT_MS,
            );
        }
    });
    JsFuture::from(promise).await.ok().map(drop)
}

// ---------------------------------------------------------------------------------------
// Download
// ---------------------------------------------------------------------------------------

/// Fetches, verifies and decrypts the attachment of message `id` from `from` in
/// `conversation`, then offers it to the user as a file. A device fetching a file of its own
/// (sent from this browser) does not count as one of its recipients.
pub(crate) fn download(driver: &Driver, conversation: ConversationId, from: String, id: String) {
    driver.intent(move |machine, _, ui| {
        let ui = *ui;
        let row = machine
            .store()
            .messages(&conversation.to_string())
            .unwrap_or_default()
            .into_iter()
            .find(|m| m.id == id && m.from == from);
        let Some((row, attachment)) = row.and_then(|r| r.detail.attachment.clone().map(|a| (r, a)))
        else {
            ui.error("this file is no longer in the conversation".into());
            return;
        };
        let name = attachment
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| "attachment".into());
        let Some(pointer) = pointer_of(&attachment) else {
            ui.error(format!("the file {name} from {from} is malformed"));
            return;
        };
        let confirm = row.device != machine.me().device_id.to_string();
        let token = account::token(machine);
        let key = format!("{from}/{id}");
        wasm_bindgen_futures::spawn_local(async move {
            let mut progress = Progress::new(ui, key.clone(), conversation, name.clone(), false);
            let parts = match fetch_file(&pointer, token.as_deref(), &mut progress).await {
                Ok(parts) => parts,
                Err(e) => {
                    ui.error(format!("could not fetch {name}: {e}"));
                    return;
                }
            };
            // Never rendered by the page, only saved: a type the browser will not run.
            let url = match object_url(&parts, "application/octet-stream") {
                Ok(url) => url,
                Err(e) => {
                    ui.error(format!("could not keep {name}: {e}"));
                    return;
                }
            };
            save(&url, &name);
            ui.saved.update(|saved| {
                saved.insert(
                    key,
                    SavedFile {
                        url,
                        name: name.clone(),
                    },
                );
            });
            drop(progress);
            if confirm && let Err(e) = confirm_fetched(&pointer.blob_id, token.as_deref()).await {
                ui.show(format!(
                    "the server was not told this device has {name} ({e}); it keeps the \
                     encrypted file until it expires"
                ));
            }
        });
    });
}

/// Offers the file at `url` to the user as a download named `name` (the browser makes the
/// name safe for its file system).
fn save(url: &str, name: &str) {
    let Some(document) = web_sys::window().and_then(|w| w.document()) else {
        return;
    };
    let Ok(anchor) = document.create_element("a") else {
        return;
    };
    let anchor: web_sys::HtmlAnchorElement = anchor.unchecked_into();
    anchor.set_href(url);
    anchor.set_download(name);
    anchor.set_hidden(true);
    if let Some(body) = document.body() {
        let _ = body.append_child(&anchor);
        anchor.click();
        anchor.remove();
    }
}

/// Why a download failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum FetchError {
    /// Trying again later may work: the network, the server's own failure, a rate limit.
    Later(String),
    /// Never worth trying again: the blob is gone, refused to this device, or is not the one
    /// the pointer names (wrong size, digest or key).
    Gone(String),
}

impl std::fmt::Display for FetchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FetchError::Later(why) | FetchError::Gone(why) => f.write_str(why),
        }
    }
}

/// The download error `failure` (a request's) stands for.
fn fetch_error(failure: Failure) -> FetchError {
    match failure {
        f if is_transient(&f) => FetchError::Later(f.to_string()),
        Failure::Refused(e) if e.code == ErrorCode::NotFound => FetchError::Gone(
            "the server no longer has it (a file is deleted once every recipient's device \
             fetched it, or after 30 days)"
                .into(),
        ),
        f => FetchError::Gone(f.to_string()),
    }
}

/// What is not the blob the pointer names.
fn broken(e: &dyn std::fmt::Display) -> FetchError {
    FetchError::Gone(e.to_string())
}

/// The whole plaintext of the attachment, as the `Blob` parts of one, once the blob came
/// whole and verified.
async fn fetch_file(
    pointer: &AttachmentPointer,
    token: Option<&str>,
    progress: &mut Progress,
) -> Result<Array, FetchError> {
    let mut into = Decrypting {
        opener: Opener::new(&pointer.key, pointer.size, pointer.digest).map_err(|e| broken(&e))?,
        pointer,
        parts: Array::new(),
        pending: Array::new(),
        pending_bytes: 0,
    };
    fetch_blob(pointer, token, progress, &mut into).await?;
    into.spill()?;
    into.opener.finish().map_err(|e| broken(&e))?;
    Ok(into.parts)
}

/// Fetches the blob `pointer` names into this page's memory, checks the ciphertext's SHA-256
/// against the pointer's, and only then decrypts it: for what the page reads itself (a
/// history archive), never saved anywhere. Refuses a pointer claiming more than `max` bytes.
/// The plaintext is wiped when dropped. The server is not told this device has it: the
/// caller does that ([`confirm_fetched`]) once it kept what it needed.
pub(crate) async fn download_bytes(
    pointer: &AttachmentPointer,
    token: Option<&str>,
    max: u64,
    progress: &mut dyn Report,
) -> Result<Zeroizing<Vec<u8>>, FetchError> {
    if pointer.size > max.min(MAX_SIZE) {
        return Err(FetchError::Gone(format!(
            "it claims {}, more than the {} this page takes",
            human_size(pointer.size),
            human_size(max.min(MAX_SIZE))
        )));
    }
    let total = usize::try_from(attachment::ciphertext_len(pointer.size))
        .map_err(|_| FetchError::Gone("too large for this page".into()))?;
    let mut into = Collecting {
        ciphertext: Vec::with_capacity(total),
    };
    fetch_blob(pointer, token, progress, &mut into).await?;
    let ciphertext = into.ciphertext;
    if <[u8; 32]>::from(Sha256::digest(&ciphertext)) != pointer.digest {
        return Err(FetchError::Gone(
            "what the server sent is not what the approving device uploaded (its digest \
             differs)"
                .into(),
        ));
    }
    let mut opener =
        Opener::new(&pointer.key, pointer.size, pointer.digest).map_err(|e| broken(&e))?;
    let plaintext = Zeroizing::new(opener.push(&ciphertext).map_err(|e| broken(&e))?);
    opener.finish().map_err(|e| broken(&e))?;
    Ok(plaintext)
}

/// `POST /v1/blobs/{blob}/fetched`: tells the server this device has the blob, so that it
/// deletes it once every recipient has (retried after a transient failure).
pub(crate) async fn confirm_fetched(blob_id: &str, token: Option<&str>) -> Result<(), Failure> {
    let path = format!("/v1/blobs/{}/fetched", net::segment(blob_id));
    with_retries(|| net::call("POST", &path, token, None))
        .await
        .map(drop)
}

/// Where a download's ciphertext goes as it arrives.
trait Receiver {
    /// The server sends the blob from its first byte again: forget what came before.
    fn restart(&mut self) -> Result<(), FetchError>;
    /// The next bytes of ciphertext.
    fn take(&mut self, ciphertext: &[u8]) -> Result<(), FetchError>;
}

/// Decrypts as the ciphertext comes (every chunk authenticated) and keeps the plaintext
/// outside the wasm heap: the newest bytes as `Uint8Array`s (`pending`), the rest handed to
/// the browser's blob store every [`SPILL_BYTES`] as `Blob`s (`parts`): a file to save.
struct Decrypting<'a> {
    opener: Opener,
    pointer: &'a AttachmentPointer,
    parts: Array,
    pending: Array,
    pending_bytes: usize,
}

impl Decrypting<'_> {
    /// Makes the pending plaintext one `Blob` among the parts.
    fn spill(&mut self) -> Result<(), FetchError> {
        if self.pending_bytes == 0 {
            return Ok(());
        }
        let piece = blob_of(&self.pending, "application/octet-stream")
            .map_err(|e| FetchError::Later(format!("the browser could not keep it: {e}")))?;
        self.parts.push(&piece);
        self.pending.set_length(0);
        self.pending_bytes = 0;
        Ok(())
    }
}

impl Receiver for Decrypting<'_> {
    fn restart(&mut self) -> Result<(), FetchError> {
        let p = self.pointer;
        self.opener = Opener::new(&p.key, p.size, p.digest).map_err(|e| broken(&e))?;
        self.parts.set_length(0);
        self.pending.set_length(0);
        self.pending_bytes = 0;
        Ok(())
    }

    fn take(&mut self, ciphertext: &[u8]) -> Result<(), FetchError> {
        let plaintext = self.opener.push(ciphertext).map_err(|e| broken(&e))?;
        if !plaintext.is_empty() {
            self.pending.push(&js::u8_array(&plaintext));
            self.pending_bytes += plaintext.len();
        }
        if self.pending_bytes >= SPILL_BYTES {
            self.spill()?;
        }
        Ok(())
    }
}

/// Keeps the ciphertext, to check its digest before anything is decrypted.
struct Collecting {
    ciphertext: Vec<u8>,
}

impl Receiver for Collecting {
    fn restart(&mut self) -> Result<(), FetchError> {
        self.ciphertext.clear();
        Ok(())
    }

    fn take(&mut self, ciphertext: &[u8]) -> Result<(), FetchError> {
        self.ciphertext.extend_from_slice(ciphertext);
        Ok(())
    }
}

/// Fetches the whole blob `pointer` names into `into`, resuming with `Range` after a
/// connection cut short, and retrying transient failures with the machine's backoff.
async fn fetch_blob(
    pointer: &AttachmentPointer,
    token: Option<&str>,
    progress: &mut dyn Report,
    into: &mut dyn Receiver,
) -> Result<(), FetchError> {
    if B64::decode(&pointer.blob_id).is_none_or(|id| id.len() != BLOB_ID_BYTES) {
        return Err(FetchError::Gone("the message names no valid file".into()));
    }
    let path = format!("/v1/blobs/{}", net::segment(&pointer.blob_id));
    let mut plan = DownloadPlan::resume(attachment::ciphertext_len(pointer.size), 0);
    let mut failures = 0;
    progress.report(Step::Downloading, 0, plan.size());
    while !plan.is_complete() {
        let before = plan.have();
        let failure = match receive(&path, token, into, &mut plan, progress).await {
            Ok(()) if plan.is_complete() => break,
            Ok(()) => Failure::Network("the download was cut short".into()),
            Err(Fetch::Failed(e)) if is_transient(&e) => e,
            Err(Fetch::Failed(e)) => return Err(fetch_error(e)),
            Err(Fetch::Broken(e)) => return Err(e),
        };
        if plan.have() > before {
            failures = 0;
        }
        failures += 1;
        if failures > TRANSIENT_RETRIES {
            return Err(fetch_error(failure));
        }
        sleep(wait_after(&failure, failures)).await;
    }
    Ok(())
}

/// Why one request for the rest of a blob stopped.
enum Fetch {
    /// The request failed (maybe worth trying again).
    Failed(Failure),
    /// What came back is not the blob: never worth trying again.
    Broken(FetchError),
}

/// One request for the rest of the blob, its body handed to `into` as it comes.
async fn receive(
    path: &str,
    token: Option<&str>,
    into: &mut dyn Receiver,
    plan: &mut DownloadPlan,
    progress: &mut dyn Report,
) -> Result<(), Fetch> {
    let network = |e: JsValue| Fetch::Failed(Failure::Network(js::describe(&e)));
    let broken = |e: &dyn std::fmt::Display| Fetch::Broken(broken(e));
    let range = plan.range().unwrap_or_default();
    let response = net::fetch("GET", path, token, &[("range", &range)], None)
        .await
        .map_err(Fetch::Failed)?;
    let (start, total) = match response.status() {
        206 => {
            let header = response.headers().get("content-range").ok().flatten();
            let (start, _, total) = header
                .as_deref()
                .and_then(parse_content_range)
                .ok_or_else(|| broken(&"a partial answer without a valid Content-Range"))?;
            (start, total)
        }
        200 => {
            let length = response.headers().get("content-length").ok().flatten();
            (0, length.and_then(|l| l.trim().parse().ok()))
        }
        201..=299 => return Err(broken(&format!("unexpected status {}", response.status()))),
        _ => return Err(Fetch::Failed(net::refusal(&response).await)),
    };
    if plan.accept(start, total).map_err(|e| broken(&e))? {
        // The whole blob again: start over.
        into.restart().map_err(Fetch::Broken)?;
    }
    let Some(stream) = response.body() else {
        return Ok(());
    };
    let reader: web_sys::ReadableStreamDefaultReader = stream.get_reader().unchecked_into();
    loop {
        let chunk = JsFuture::from(reader.read()).await.map_err(network)?;
        let done = Reflect::get(&chunk, &JsValue::from_str("done"))
            .map_err(network)?
            .as_bool()
            .unwrap_or(true);
        if done {
            return Ok(());
        }
        let value = Reflect::get(&chunk, &JsValue::from_str("value")).map_err(network)?;
        let ciphertext = Uint8Array::new(&value).to_vec();
        plan.received(ciphertext.len() as u64)
            .map_err(|e| broken(&e))?;
        into.take(&ciphertext).map_err(Fetch::Broken)?;
        progress.report(Step::Downloading, plan.have(), plan.size());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_people_write_them() {
        assert_eq!(human_size(0), "0 bytes");
        assert_eq!(human_size(1023), "1023 bytes");
        assert_eq!(human_size(1024), "1 KB");
        assert_eq!(human_size(1025), "2 KB");
        assert_eq!(human_size(3 << 20), "3.0 MB");
        assert_eq!(human_size((5 << 30) / 2), "2.5 GB");
    }

    #[test]
    fn percentages_are_whole_and_capped() {
        assert_eq!(percent(0, 10), 0);
        assert_eq!(percent(5, 10), 50);
        assert_eq!(percent(11, 10), 100);
        assert_eq!(percent(0, 0), 100);
        assert_eq!(percent(u64::MAX - 1, u64::MAX), 99);
    }

    #[test]
    fn only_common_pictures_show_inline() {
        assert!(is_picture("image/jpeg") && is_picture("image/webp"));
        assert!(!is_picture("image/svg+xml") && !is_picture("text/html"));
    }
}
