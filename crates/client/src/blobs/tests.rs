//! Attachments against an in-memory blob store that implements the six routes of
//! `nightjar_api::blobs` (and can be told to fail): round trips in several parts, resumed
//! uploads and downloads, tampered blobs, file names.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Json;
use axum::Router;
use axum::body::Bytes as Body;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use nightjar_api::{ApiError, BlobCreated, BlobUsage, UploadStatus};

use super::*;
use crate::ClientOptions;
use crate::client::meta;
use nightjar_core::attachment::CHUNK_SIZE;

const TOKEN: &str = "blob-test-token";
const PART: u64 = 1 << 20;

struct Blob {
    size: u64,
    part_size: u64,
    parts: Vec<Option<Vec<u8>>>,
}

impl Blob {
    fn status(&self) -> UploadStatus {
        let missing: Vec<u64> = (0..self.parts.len() as u64)
            .filter(|&i| self.parts[i as usize].is_none())
            .collect();
        UploadStatus {
            size: self.size,
            part_size: self.part_size,
            complete: missing.is_empty(),
            missing,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        self.parts.iter().flatten().flatten().copied().collect()
    }
}

/// The fake server's state, and its knobs.
#[derive(Default)]
struct Fake {
    blobs: HashMap<String, Blob>,
    creates: usize,
    /// Every part upload received, by index (refused ones too).
    puts: Vec<u64>,
    /// Accept this many more parts, then answer 500.
    parts_left: Option<usize>,
    /// Refuse the next blob creation for the quota.
    full: bool,
    /// Where each download asked to start.
    ranges: Vec<u64>,
    /// Serve this many more downloads, then answer 500.
    downloads_left: Option<usize>,
    /// Send at most this many bytes of a download's body (the answer still claims it all).
    cut_at: Option<u64>,
    fetched: usize,
}

type Shared = Arc<Mutex<Fake>>;

fn lock(fake: &Shared) -> MutexGuard<'_, Fake> {
    fake.lock().unwrap()
}

fn refuse(status: StatusCode, code: ErrorCode) -> Response {
    (status, Json(ApiError::new(code, "refused by the fake"))).into_response()
}

fn authorized(headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(&format!("Bearer {TOKEN}"))
}

async fn create(
    State(fake): State<Shared>,
    headers: HeaderMap,
    Json(request): Json<CreateBlob>,
) -> Response {
    if !authorized(&headers) {
        return refuse(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized);
    }
    let mut fake = lock(&fake);
    if fake.full {
        return refuse(StatusCode::INSUFFICIENT_STORAGE, ErrorCode::QuotaExceeded);
    }
    assert!(request.size >= 1 && request.recipients >= 1);
    fake.creates += 1;
    let mut id = [0u8; 32];
    getrandom::fill(&mut id).unwrap();
    let parts = request.size.div_ceil(PART);
    fake.blobs.insert(
        B64::encode(&id),
        Blob {
            size: request.size,
            part_size: PART,
            parts: vec![None; parts as usize],
        },
    );
    Json(BlobCreated {
        blob_id: B64(id.to_vec()),
        part_size: PART,
        parts,
        expires_at: now_ms() + 30 * 86_400_000,
    })
    .into_response()
}

async fn put_part(
    State(fake): State<Shared>,
    UrlPath((blob, index)): UrlPath<(String, u64)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if !authorized(&headers) {
        return refuse(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized);
    }
    assert_eq!(
        headers.get(header::CONTENT_TYPE).unwrap(),
        "application/octet-stream"
    );
    let mut fake = lock(&fake);
    fake.puts.push(index);
    match &mut fake.parts_left {
        Some(0) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal),
        Some(n) => *n -= 1,
        None => {}
    }
    let Some(stored) = fake.blobs.get_mut(&blob) else {
        return refuse(StatusCode::NOT_FOUND, ErrorCode::NotFound);
    };
    let start = index * stored.part_size;
    let expected = stored.part_size.min(stored.size - start);
    assert_eq!(
        body.len() as u64,
        expected,
        "part {index} has the wrong length"
    );
    stored.parts[index as usize] = Some(body.to_vec());
    Json(stored.status()).into_response()
}

async fn status(State(fake): State<Shared>, UrlPath(blob): UrlPath<String>) -> Response {
    match lock(&fake).blobs.get(&blob) {
        Some(stored) => Json(stored.status()).into_response(),
        None => refuse(StatusCode::NOT_FOUND, ErrorCode::NotFound),
    }
}

async fn download(
    State(fake): State<Shared>,
    UrlPath(blob): UrlPath<String>,
    headers: HeaderMap,
) -> Response {
    let mut fake = lock(&fake);
    let start = headers
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("bytes="))
        .and_then(|v| v.strip_suffix('-'))
        .and_then(|v| v.parse::<u64>().ok())
        .expect("a Range: bytes=N- header");
    fake.ranges.push(start);
    match &mut fake.downloads_left {
        Some(0) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::Internal),
        Some(n) => *n -= 1,
        None => {}
    }
    let cut = fake.cut_at;
    let Some(stored) = fake.blobs.get(&blob) else {
        return refuse(StatusCode::NOT_FOUND, ErrorCode::NotFound);
    };
    assert!(stored.status().complete, "download of an incomplete blob");
    let bytes = stored.bytes();
    let total = bytes.len() as u64;
    let end = cut.map_or(total, |cut| total.min(start + cut));
    let range = format!("bytes {start}-{}/{total}", total - 1);
    let body = bytes[start as usize..end as usize].to_vec();
    (
        StatusCode::PARTIAL_CONTENT,
        [(header::CONTENT_RANGE, range)],
        body,
    )
        .into_response()
}

async fn fetched(State(fake): State<Shared>, UrlPath(blob): UrlPath<String>) -> Response {
    let mut fake = lock(&fake);
    if !fake.blobs.contains_key(&blob) {
        return refuse(StatusCode::NOT_FOUND, ErrorCode::NotFound);
    }
    fake.fetched += 1;
    StatusCode::NO_CONTENT.into_response()
}

async fn usage() -> Json<BlobUsage> {
    Json(BlobUsage {
        used: 1,
        quota: 2,
        max_blob: 3,
    })
}

async fn fake_server() -> (Shared, SocketAddr) {
    let fake = Shared::default();
    let app = Router::new()
        .route("/v1/blobs", post(create))
        .route("/v1/blobs/usage", get(usage))
        .route("/v1/blobs/{blob}", get(download))
        .route("/v1/blobs/{blob}/upload", get(status))
        .route("/v1/blobs/{blob}/parts/{index}", put(put_part))
        .route("/v1/blobs/{blob}/fetched", post(fetched))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (fake, addr)
}

/// A profile that talks to the fake (no account: blobs need only the session token).
fn client(dir: &Path, addr: SocketAddr) -> Client {
    let options = ClientOptions {
        try_keyring: false,
        ..ClientOptions::default()
    };
    {
        let c = Client::open(dir, options.clone()).unwrap();
        c.store()
            .set_meta(meta::SERVER, &format!("http://{addr}"))
            .unwrap();
        c.store().set_meta(meta::TOKEN, TOKEN).unwrap();
    }
    Client::open(dir, options).unwrap()
}

struct World {
    tmp: tempfile::TempDir,
    fake: Shared,
    client: Client,
}

async fn world() -> World {
    let tmp = tempfile::tempdir().unwrap();
    let (fake, addr) = fake_server().await;
    let client = client(&tmp.path().join("profile"), addr);
    World { tmp, fake, client }
}

impl World {
    /// A file of `size` bytes that are not all alike.
    fn file(&self, name: &str, size: usize, seed: u8) -> PathBuf {
        let path = self.tmp.path().join(name);
        let bytes: Vec<u8> = (0..size)
            .map(|i| (i.wrapping_mul(7919) >> 3) as u8 ^ seed)
            .collect();
        fs::write(&path, bytes).unwrap();
        path
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }
}

/// A progress sink that keeps every report.
fn recorder() -> (
    Arc<Mutex<Vec<TransferProgress>>>,
    impl FnMut(TransferProgress),
) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    (seen, move |p| sink.lock().unwrap().push(p))
}

fn ignore(_: TransferProgress) {}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .map(|entries| {
            entries
                .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

#[tokio::test]
async fn a_five_mib_file_round_trips_in_several_parts() {
    let mut w = world().await;
    let path = w.file("holiday video.bin", 5 << 20, 1);
    let (seen, mut sink) = recorder();
    let pointer = w
        .client
        .upload_attachment(&path, None, 2, &mut sink)
        .await
        .unwrap();
    let total = attachment::ciphertext_len(5 << 20);
    assert_eq!(pointer.size, 5 << 20);
    assert_eq!(pointer.media_type, "application/octet-stream");
    assert_eq!(pointer.file_name.as_deref(), Some("holiday video.bin"));
    assert_eq!(pointer.thumbnail, None);
    {
        let fake = lock(&w.fake);
        let parts = total.div_ceil(PART);
        assert!(parts >= 5);
        assert_eq!(fake.puts, (0..parts).collect::<Vec<_>>(), "each part once");
        let stored = fake.blobs.get(&pointer.blob_id).unwrap();
        assert_eq!(stored.size, total);
        let digest: [u8; 32] = Sha256::digest(stored.bytes()).into();
        assert_eq!(digest, pointer.digest);
    }
    let seen = seen.lock().unwrap().clone();
    let last = |phase| seen.iter().rev().find(|p| p.phase == phase).copied();
    assert_eq!(
        last(TransferPhase::Encrypting).map(|p| (p.done, p.total)),
        Some((5 << 20, 5 << 20))
    );
    assert_eq!(
        last(TransferPhase::Uploading).map(|p| (p.done, p.total)),
        Some((total, total))
    );
    // Nothing left to resume.
    let key = fs::canonicalize(&path).unwrap();
    let pending = w.client.store().pending_upload(&key.to_string_lossy());
    assert_eq!(pending.unwrap(), None);

    let dir = w.dir("downloads");
    let (seen, mut sink) = recorder();
    let first = w
        .client
        .download_attachment(&pointer, &dir, &mut sink)
        .await
        .unwrap();
    assert_eq!(first, dir.join("holiday video.bin"));
    assert_eq!(fs::read(&first).unwrap(), fs::read(&path).unwrap());
    let seen = seen.lock().unwrap().clone();
    for phase in [
        TransferPhase::Downloading,
        TransferPhase::Verifying,
        TransferPhase::Decrypting,
    ] {
        let last = seen.iter().rev().find(|p| p.phase == phase).unwrap();
        assert_eq!((last.done, last.total), (total, total), "{phase:?}");
    }
    // A second download never replaces the first.
    let second = w
        .client
        .download_attachment(&pointer, &dir, &mut ignore)
        .await
        .unwrap();
    assert_eq!(second, dir.join("holiday video (1).bin"));
    assert_eq!(
        listing(&dir),
        ["holiday video (1).bin", "holiday video.bin"],
        "no temporary file is left"
    );
    assert_eq!(lock(&w.fake).fetched, 2);
    assert_eq!(w.client.blob_usage().await.unwrap().quota, 2);
}

#[tokio::test]
async fn empty_and_tiny_files_round_trip() {
    let mut w = world().await;
    for (size, name) in [(0, "empty.txt"), (1, "one.txt"), (100, "small.txt")] {
        let path = w.file(name, size, 3);
        let pointer = w
            .client
            .upload_attachment(&path, Some("text/x-test"), 1, &mut ignore)
            .await
            .unwrap();
        assert_eq!(pointer.media_type, "text/x-test");
        let got = w
            .client
            .download_attachment(&pointer, &w.dir("small"), &mut ignore)
            .await
            .unwrap();
        assert_eq!(fs::read(got).unwrap(), fs::read(&path).unwrap(), "{size}");
    }
}

#[tokio::test]
async fn an_interrupted_upload_sends_only_the_missing_parts() {
    let mut w = world().await;
    let path = w.file("big.bin", 5 << 20, 2);
    lock(&w.fake).parts_left = Some(3);
    let failed = w
        .client
        .upload_attachment(&path, None, 1, &mut ignore)
        .await;
    let error = failed.unwrap_err();
    assert_eq!(error.api_code(), Some(ErrorCode::Internal), "{error}");
    let parts = attachment::ciphertext_len(5 << 20).div_ceil(PART);
    {
        let mut fake = lock(&w.fake);
        // Three parts went up; the fourth was tried, then retried, then given up.
        assert_eq!(fake.puts[..3], [0, 1, 2]);
        assert_eq!(fake.puts[3..], [3; 1 + TRANSIENT_RETRIES as usize]);
        fake.parts_left = None;
        fake.puts.clear();
    }
    // The same call again (a new process would do the same: the record is in the profile).
    let (seen, mut sink) = recorder();
    let pointer = w
        .client
        .upload_attachment(&path, None, 1, &mut sink)
        .await
        .unwrap();
    {
        let fake = lock(&w.fake);
        assert_eq!(fake.creates, 1, "the same blob");
        assert_eq!(
            fake.puts,
            (3..parts).collect::<Vec<_>>(),
            "only the missing parts"
        );
    }
    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter().all(|p| p.phase == TransferPhase::Uploading),
        "no second encryption pass"
    );
    assert_eq!(seen[0].done, 3 * PART);
    let got = w
        .client
        .download_attachment(&pointer, &w.dir("out"), &mut ignore)
        .await
        .unwrap();
    assert_eq!(fs::read(got).unwrap(), fs::read(&path).unwrap());
}

#[tokio::test]
async fn a_file_changed_since_an_interrupted_upload_starts_over() {
    let mut w = world().await;
    let path = w.file("doc.bin", 3 << 20, 4);
    lock(&w.fake).parts_left = Some(1);
    assert!(
        w.client
            .upload_attachment(&path, None, 1, &mut ignore)
            .await
            .is_err()
    );
    lock(&w.fake).parts_left = None;
    // Other contents (and another size, so the change shows whatever the clock's grain).
    let path = w.file("doc.bin", (3 << 20) + 1, 5);
    let pointer = w
        .client
        .upload_attachment(&path, None, 1, &mut ignore)
        .await
        .unwrap();
    assert_eq!(lock(&w.fake).creates, 2);
    let got = w
        .client
        .download_attachment(&pointer, &w.dir("out"), &mut ignore)
        .await
        .unwrap();
    assert_eq!(fs::read(got).unwrap(), fs::read(&path).unwrap());
}

#[tokio::test]
async fn a_full_quota_is_reported_and_nothing_is_kept() {
    let mut w = world().await;
    let path = w.file("f.bin", 1000, 6);
    lock(&w.fake).full = true;
    let error = w
        .client
        .upload_attachment(&path, None, 1, &mut ignore)
        .await
        .unwrap_err();
    assert_eq!(error.api_code(), Some(ErrorCode::QuotaExceeded));
    let key = fs::canonicalize(&path).unwrap();
    let pending = w.client.store().pending_upload(&key.to_string_lossy());
    assert_eq!(pending.unwrap(), None);
    assert!(
        w.client
            .upload_attachment(&path, None, 0, &mut ignore)
            .await
            .is_err()
    );
}

#[tokio::test]
async fn an_interrupted_download_resumes_from_the_part_file() {
    let mut w = world().await;
    let path = w.file("movie.bin", 5 << 20, 7);
    let pointer = w
        .client
        .upload_attachment(&path, None, 1, &mut ignore)
        .await
        .unwrap();
    let dir = w.dir("downloads");
    {
        let mut fake = lock(&w.fake);
        fake.cut_at = Some(2 << 20);
        fake.downloads_left = Some(1);
    }
    let error = w
        .client
        .download_attachment(&pointer, &dir, &mut ignore)
        .await
        .unwrap_err();
    assert!(is_transient(&error), "{error}");
    let part = dir.join(format!(".nightjar-{}.part", hex(&pointer.digest[..16])));
    assert_eq!(fs::metadata(&part).unwrap().len(), 2 << 20);
    assert_eq!(listing(&dir).len(), 1, "only the partial download");
    {
        let mut fake = lock(&w.fake);
        fake.cut_at = None;
        fake.downloads_left = None;
        fake.ranges.clear();
    }
    let (seen, mut sink) = recorder();
    let got = w
        .client
        .download_attachment(&pointer, &dir, &mut sink)
        .await
        .unwrap();
    assert_eq!(lock(&w.fake).ranges, [2 << 20], "asked only for the rest");
    assert_eq!(seen.lock().unwrap()[0].done, 2 << 20);
    assert_eq!(fs::read(got).unwrap(), fs::read(&path).unwrap());
    assert_eq!(listing(&dir), ["movie.bin"]);
}

#[tokio::test]
async fn a_download_cut_short_goes_on_by_itself() {
    let mut w = world().await;
    let path = w.file("chunky.bin", 3 << 20, 8);
    let pointer = w
        .client
        .upload_attachment(&path, None, 1, &mut ignore)
        .await
        .unwrap();
    lock(&w.fake).cut_at = Some(1 << 20);
    let got = w
        .client
        .download_attachment(&pointer, &w.dir("d"), &mut ignore)
        .await
        .unwrap();
    assert_eq!(fs::read(got).unwrap(), fs::read(&path).unwrap());
    assert_eq!(lock(&w.fake).ranges, [0, 1 << 20, 2 << 20, 3 << 20]);
}

#[tokio::test]
async fn a_tampered_blob_leaves_no_file() {
    let mut w = world().await;
    let path = w.file("secret.pdf", 300_000, 9);
    let pointer = w
        .client
        .upload_attachment(&path, None, 1, &mut ignore)
        .await
        .unwrap();
    assert_eq!(pointer.media_type, "application/pdf");
    let original = lock(&w.fake).blobs.get(&pointer.blob_id).unwrap().bytes();
    assert!(original.len() as u64 <= PART, "one part");

    // The server flips a bit of the ciphertext: the digest does not match.
    lock(&w.fake).blobs.get_mut(&pointer.blob_id).unwrap().parts[0]
        .as_mut()
        .unwrap()[100] ^= 1;
    let dir = w.dir("a");
    let error = w
        .client
        .download_attachment(&pointer, &dir, &mut ignore)
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::Attachment(AttachmentError::DigestMismatch)),
        "{error}"
    );
    assert_eq!(listing(&dir), Vec::<String>::new());

    // A pointer whose digest matches what the server holds, under another key (a sender's
    // mistake or a forged pointer): nothing decrypts, nothing is kept.
    lock(&w.fake).blobs.get_mut(&pointer.blob_id).unwrap().parts[0] = Some(original);
    let mut forged = pointer.clone();
    forged.key = AttachmentKey::from_bytes([1; 32]);
    let dir = w.dir("b");
    let error = w
        .client
        .download_attachment(&forged, &dir, &mut ignore)
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::Attachment(AttachmentError::Tampered)),
        "{error}"
    );
    assert_eq!(listing(&dir), Vec::<String>::new());
    assert_eq!(lock(&w.fake).fetched, 0);
    let got = w
        .client
        .download_attachment(&pointer, &dir, &mut ignore)
        .await
        .unwrap();
    assert_eq!(fs::read(got).unwrap(), fs::read(&path).unwrap());
}

#[tokio::test]
async fn a_hostile_file_name_stays_in_the_download_directory() {
    let mut w = world().await;
    let path = w.file("x.txt", 10, 10);
    let mut pointer = w
        .client
        .upload_attachment(&path, None, 1, &mut ignore)
        .await
        .unwrap();
    let dir = w.dir("inbox");
    for (claimed, expected) in [
        ("../../etc/passwd", "_._etc_passwd"),
        (".bashrc", "bashrc"),
        ("photos/2024/cat.jpg", "photos_2024_cat.jpg"),
        ("..", "attachment"),
    ] {
        pointer.file_name = Some(claimed.into());
        let got = w
            .client
            .download_attachment(&pointer, &dir, &mut ignore)
            .await
            .unwrap();
        assert_eq!(got, dir.join(expected), "{claimed}");
    }
    assert_eq!(listing(&dir).len(), 4);
}

#[test]
fn file_names_are_made_safe() {
    let cases = [
        (Some("report.pdf"), "report.pdf"),
        (Some("../../etc/passwd"), "_._etc_passwd"),
        (Some("..\\..\\windows\\system32"), "_._windows_system32"),
        (Some(".bashrc"), "bashrc"),
        (Some("...hidden..txt"), "hidden.txt"),
        (Some("a/b/c.txt"), "a_b_c.txt"),
        (Some("ev\u{0}il\n\r\t.txt"), "evil.txt"),
        (Some("\u{202e}gpj.exe"), "gpj.exe"),
        (Some("C:con?.txt "), "C_con_.txt"),
        (Some("  spaced  "), "spaced"),
        (Some(".."), "attachment"),
        (Some("/"), "_"),
        (Some(""), "attachment"),
        (None, "attachment"),
    ];
    for (claimed, expected) in cases {
        assert_eq!(safe_file_name(claimed), expected, "{claimed:?}");
    }
    let long = safe_file_name(Some(&"é".repeat(300)));
    assert!(long.len() <= MAX_NAME_BYTES && long.chars().all(|c| c == 'é'));
    for claimed in ["../x", "./.x", "a/../b", "....", "x/..", "\\..\\"] {
        let name = safe_file_name(Some(claimed));
        assert!(
            !name.contains('/')
                && !name.contains('\\')
                && !name.contains("..")
                && !name.starts_with('.'),
            "{claimed:?} -> {name:?}"
        );
    }
    assert_eq!(numbered("cat.jpg", 2), "cat (2).jpg");
    assert_eq!(numbered("archive.tar.gz", 1), "archive.tar (1).gz");
    assert_eq!(numbered("README", 1), "README (1)");
    assert_eq!(numbered("cat.jpg", 0), "cat.jpg");
}

#[test]
fn media_types_follow_the_extension() {
    assert_eq!(guess_media_type(Path::new("a/B.JPG")), "image/jpeg");
    assert_eq!(guess_media_type(Path::new("x.tar.gz")), "application/gzip");
    assert_eq!(
        guess_media_type(Path::new("noext")),
        "application/octet-stream"
    );
    assert_eq!(
        guess_media_type(Path::new("weird.xyz")),
        "application/octet-stream"
    );
}

/// Encodes a `width` x `height` picture in `format` (noise when `noisy`, else a gradient).
fn picture(width: u32, height: u32, noisy: bool, format: image::ImageFormat) -> Vec<u8> {
    let img = image::RgbaImage::from_fn(width, height, |x, y| {
        let v = if noisy {
            (x.wrapping_mul(2_654_435_761) ^ y.wrapping_mul(40_503)).to_le_bytes()
        } else {
            [(x % 256) as u8, (y % 256) as u8, 128, 200]
        };
        image::Rgba([v[0], v[1], v[2], if noisy { 255 } else { v[3] }])
    });
    let mut img = image::DynamicImage::ImageRgba8(img);
    if format == image::ImageFormat::Jpeg {
        img = image::DynamicImage::ImageRgb8(img.to_rgb8());
    }
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, format).unwrap();
    out.into_inner()
}

#[tokio::test]
async fn pictures_get_a_small_jpeg_thumbnail() {
    let mut w = world().await;
    let png = w.tmp.path().join("wide.png");
    fs::write(&png, picture(1000, 500, false, image::ImageFormat::Png)).unwrap();
    let pointer = w
        .client
        .upload_attachment(&png, None, 1, &mut ignore)
        .await
        .unwrap();
    assert_eq!(pointer.media_type, "image/png");
    let small = pointer.thumbnail.unwrap();
    assert_eq!(small.media_type, "image/jpeg");
    assert_eq!((small.width, small.height), (320, 160));
    assert!(small.data.len() <= MAX_THUMBNAIL_BYTES);
    let decoded = image::load_from_memory(&small.data).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (320, 160));

    // Noise compresses badly: the quality goes down until it fits (or there is none).
    let noisy = w.tmp.path().join("noise.png");
    fs::write(&noisy, picture(900, 900, true, image::ImageFormat::Png)).unwrap();
    if let Some(t) = thumbnail_of(&noisy) {
        assert!(t.data.len() <= MAX_THUMBNAIL_BYTES);
        assert_eq!((t.width, t.height), (320, 320));
    }
    // A small picture is not enlarged; a JPEG and a GIF work too.
    let small = w.tmp.path().join("small.jpg");
    fs::write(&small, picture(40, 30, false, image::ImageFormat::Jpeg)).unwrap();
    let t = thumbnail_of(&small).unwrap();
    assert_eq!((t.width, t.height), (40, 30));
    let gif = w.tmp.path().join("anim.gif");
    fs::write(&gif, picture(64, 64, false, image::ImageFormat::Gif)).unwrap();
    assert!(thumbnail_of(&gif).is_some());

    // Not a picture, a picture that does not decode, one too large: no thumbnail.
    let fake_png = w.file("broken.png", 5000, 1);
    assert_eq!(thumbnail_of(&fake_png), None);
    assert_eq!(thumbnail(&png, "application/pdf", 10), None);
    assert_eq!(thumbnail(&png, "image/png", THUMBNAIL_MAX_FILE + 1), None);
}

fn thumbnail_of(path: &Path) -> Option<Thumbnail> {
    let size = fs::metadata(path).unwrap().len();
    thumbnail(path, guess_media_type(path), size)
}

#[test]
fn a_part_is_sealed_from_its_own_plaintext_only() {
    // What keeps memory flat: a part's body is its own bytes, read from its own range.
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("f");
    let size = 3 * CHUNK_SIZE + 12_345;
    let data: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
    fs::write(&path, &data).unwrap();
    let key = AttachmentKey::from_bytes([3; 32]);
    let mut sealer = Sealer::new(&key, size as u64).unwrap();
    let mut whole = sealer.push(&data).unwrap();
    whole.extend(sealer.finish().unwrap().0);
    let mut source = Source::open(&path).unwrap();
    let plan = UploadPlan::new(
        whole.len() as u64,
        100_000,
        (whole.len() as u64).div_ceil(100_000),
    )
    .unwrap();
    for index in 0..plan.parts() {
        let part = plan.part(index);
        let body = source.seal_part(&key, part).unwrap();
        assert_eq!(&body[..], &whole[part.start as usize..part.end as usize]);
    }
}
