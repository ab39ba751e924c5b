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
//! with `Range` where the [`DownloadPlan`] stopped); the plaintext is collected, outside the
//! wasm heap, as the parts of a `Blob`, and handed to the user (an `<a download>` over an
//! object URL) only once the opener has checked that the whole blob came and its SHA-256 is
//! the pointer's. Then `POST .../fetched` tells the server this device has it. Files over
//! [`MAX_DOWNLOAD`] are refused in this first version (the plaintext is held in memory).
//!
//! Network failures and server errors are retried with the machine's backoff, as the command
//! line does; creating a blob is not (it is not idempotent).

use std::future::Future;
use std::ops::Range;

use js_sys::{Array, Reflect, Uint8Array};
use leptos::prelude::Update as _;
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
use wasm_bindgen::{JsCast as _, JsValue};
use wasm_bindgen_futures::JsFuture;

use crate::driver::Driver;
use crate::ui_state::{SavedFile, ThumbnailView, TransferView, Ui};
use crate::{account, js, net};

/// The largest file this page downloads: it holds the plaintext in memory until it is saved.
pub(crate) const MAX_DOWNLOAD: u64 = 256 << 20;
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

/// An object URL for `parts` (`Uint8Array`s) as one `Blob` of `media_type`.
fn object_url(parts: &Array, media_type: &str) -> Result<String, String> {
    let options = web_sys::BlobPropertyBag::new();
    options.set_type(media_type);
    let blob = web_sys::Blob::new_with_u8_array_sequence_and_options(parts, &options)
        .map_err(|e| js::describe(&e))?;
    web_sys::Url::create_object_url_with_blob(&blob).map_err(|e| js::describe(&e))
}

/// An object URL of the picture's thumbnail, with its size in pixels; `None` unless both the
/// file and the thumbnail are pictures the page shows.
pub(crate) fn thumbnail_url(row: &AttachmentRow) -> Option<ThumbnailView> {
    if !is_picture(&row.media_type) {
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

/// Reports a transfer's progress to the page (only when the percentage moves).
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
/// here, then its pointer goes out as a message. Progress and errors show in the page.
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
                let name = file.name();
                let key = format!("upload/{}/{name}", js::now_ms());
                let mut progress = Progress::new(ui, key, conversation, name.clone(), true);
                match upload(&file, token.as_deref(), recipients, &mut progress).await {
                    Ok(pointer) => {
                        drop(progress);
                        send(&again, conversation, pointer, file);
                    }
                    Err(e) => ui.error(format!("could not send {name}: {e}")),
                }
            }
        });
    });
}

/// Sends the pointer of an uploaded file; the page keeps the file itself at hand for this
/// session (its own copy, without a download).
fn send(
    driver: &Driver,
    conversation: ConversationId,
    pointer: AttachmentPointer,
    file: web_sys::File,
) {
    driver.intent(move |machine, now, ui| {
        let name = pointer.file_name.clone().unwrap_or_default();
        match machine.send_message(now, conversation, Content::Attachment(pointer)) {
            Ok(id) => {
                if let Ok(url) = web_sys::Url::create_object_url_with_blob(&file) {
                    let key = format!("{}/{}", machine.me().username, id.to_hex());
                    ui.saved.update(|saved| {
                        saved.insert(key, SavedFile { url, name });
                    });
                }
            }
            Err(e) => ui.error(format!("could not send {name}: {e}")),
        }
    });
}

/// Encrypts and uploads `file`; the pointer to send.
async fn upload(
    file: &web_sys::File,
    token: Option<&str>,
    recipients: u32,
    progress: &mut Progress,
) -> Result<AttachmentPointer, String> {
    let size = file_size(file);
    if size > MAX_SIZE {
        return Err(format!(
            "it is larger than an attachment may be ({} GiB)",
            MAX_SIZE >> 30
        ));
    }
    let media_type = match file.type_() {
        t if t.is_empty() || t.len() > 255 => "application/octet-stream".to_owned(),
        t => t,
    };
    let key = AttachmentKey::generate().map_err(|e| format!("no randomness: {e}"))?;

    // Pass 1: the ciphertext's digest, sealing a slice at a time and keeping none of it.
    let mut sealer = Sealer::new(&key, size).map_err(|e| e.to_string())?;
    let mut done = 0;
    progress.report(Step::Encrypting, 0, size);
    while done < size {
        let end = (done + READ_SLICE).min(size);
        let plaintext = read(file, done..end).await?;
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
    let blob_id = B64::encode(&created.blob_id.0);
    let mut plan =
        UploadPlan::new(total, created.part_size, created.parts).map_err(|e| e.to_string())?;

    // Pass 2: every part sealed again from the plaintext it covers, and sent.
    progress.report(Step::Uploading, plan.uploaded(), total);
    let path = |index: u64| format!("/v1/blobs/{}/parts/{index}", net::segment(&blob_id));
    while let Some(part) = plan.next_part().map_err(|e| e.to_string())? {
        let source =
            attachment::range_source(size, part.start..part.end).map_err(|e| e.to_string())?;
        let plaintext = read(file, source.plaintext).await?;
        let sealed = attachment::seal_range(&key, size, part.start..part.end, &plaintext)
            .map_err(|e| e.to_string())?;
        drop(plaintext);
        let body: JsValue = js::u8_array(&sealed).into();
        drop(sealed);
        let path = path(part.index);
        let status: UploadStatus = with_retries(|| put_part(&path, token, &body))
            .await
            .map_err(|e| e.to_string())?;
        plan.apply(&status).map_err(|e| e.to_string())?;
        progress.report(Step::Uploading, plan.uploaded(), total);
    }

    let thumbnail = thumbnail(file, &media_type, size).await.map(Box::new);
    Ok(AttachmentPointer {
        blob_id,
        key,
        digest,
        size,
        media_type,
        file_name: Some(file.name()).filter(|n| !n.is_empty()),
        caption: None,
        thumbnail,
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
    if !is_picture(media_type) || size > THUMBNAIL_MAX_FILE {
        return None;
    }
    let window = js::window().ok()?;
    let bitmap: web_sys::ImageBitmap =
        JsFuture::from(window.create_image_bitmap_with_blob(file).ok()?)
            .await
            .ok()?
            .dyn_into()
            .ok()?;
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
        if pointer.size > MAX_DOWNLOAD {
            ui.error(format!(
                "{name} is {}: this browser opens files up to {} for now (the command line \
                 fetches any size: nightjar sync)",
                human_size(pointer.size),
                human_size(MAX_DOWNLOAD)
            ));
            return;
        }
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
            if confirm {
                let path = format!("/v1/blobs/{}/fetched", net::segment(&pointer.blob_id));
                let token = token.as_deref();
                if let Err(e) = with_retries(|| net::call("POST", &path, token, None)).await {
                    ui.show(format!(
                        "the server was not told this device has {name} ({e}); it keeps the \
                         encrypted file until it expires"
                    ));
                }
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

/// The whole plaintext of the attachment, as `Uint8Array` parts of a `Blob`, once the blob
/// came whole and verified.
async fn fetch_file(
    pointer: &AttachmentPointer,
    token: Option<&str>,
    progress: &mut Progress,
) -> Result<Array, String> {
    if B64::decode(&pointer.blob_id).is_none_or(|id| id.len() != BLOB_ID_BYTES) {
        return Err("the message names no valid file".into());
    }
    let path = format!("/v1/blobs/{}", net::segment(&pointer.blob_id));
    let mut opener =
        Opener::new(&pointer.key, pointer.size, pointer.digest).map_err(|e| e.to_string())?;
    let parts = Array::new();
    let mut plan = DownloadPlan::resume(attachment::ciphertext_len(pointer.size), 0);
    let mut failures = 0;
    progress.report(Step::Downloading, 0, plan.size());
    while !plan.is_complete() {
        let before = plan.have();
        let failure = match receive(
            &path,
            token,
            pointer,
            &mut opener,
            &parts,
            &mut plan,
            progress,
        )
        .await
        {
            Ok(()) if plan.is_complete() => break,
            Ok(()) => Failure::Network("the download was cut short".into()),
            Err(Fetch::Failed(e)) if is_transient(&e) => e,
            Err(Fetch::Failed(Failure::Refused(e))) if e.code == ErrorCode::NotFound => {
                return Err("the server no longer has it (a file is deleted once every \
                            recipient's device fetched it, or after 30 days)"
                    .into());
            }
            Err(Fetch::Failed(e)) => return Err(e.to_string()),
            Err(Fetch::Broken(e)) => return Err(e),
        };
        if plan.have() > before {
            failures = 0;
        }
        failures += 1;
        if failures > TRANSIENT_RETRIES {
            return Err(failure.to_string());
        }
        sleep(wait_after(&failure, failures)).await;
    }
    opener.finish().map_err(|e| e.to_string())?;
    Ok(parts)
}

/// Why one request for the rest of a blob stopped.
enum Fetch {
    /// The request failed (maybe worth trying again).
    Failed(Failure),
    /// What came back is not the blob: never worth trying again.
    Broken(String),
}

/// One request for the rest of the blob, its body decrypted as it comes.
async fn receive(
    path: &str,
    token: Option<&str>,
    pointer: &AttachmentPointer,
    opener: &mut Opener,
    parts: &Array,
    plan: &mut DownloadPlan,
    progress: &mut Progress,
) -> Result<(), Fetch> {
    let network = |e: JsValue| Fetch::Failed(Failure::Network(js::describe(&e)));
    let broken = |e: &dyn std::fmt::Display| Fetch::Broken(e.to_string());
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
        *opener =
            Opener::new(&pointer.key, pointer.size, pointer.digest).map_err(|e| broken(&e))?;
        parts.set_length(0);
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
        let plaintext = opener.push(&ciphertext).map_err(|e| broken(&e))?;
        if !plaintext.is_empty() {
            parts.push(&js::u8_array(&plaintext));
        }
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
