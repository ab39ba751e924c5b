//! Attachments over HTTP: the opaque blob store (docs/attachments.md). A device uploads a
//! file's ciphertext in parts, resumably; any device holding the capability downloads it, with
//! `Range` for resumable downloads, and confirms it has it; the blob goes once every declared
//! recipient did, or when its lifetime ends. The server never sees a key or a plaintext byte.
//!
//! A blob that is incomplete, expired, deleted, unknown, or (for the upload routes) another
//! account's answers the same 404 `not_found`. Handlers log nothing that names a blob.

use std::ops::Range;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use futures_util::{StreamExt as _, TryStreamExt as _};
use nightjar_api::{
    ApiError, B64, BLOB_ID_BYTES, BlobCreated, BlobUsage, CreateBlob, ErrorCode, UploadStatus,
};
use rand_core::{OsRng, RngCore as _};
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{Json, Path};
use crate::auth::ActiveSession;
use crate::blobs::{BlobHash, StoreFailure, blob_stream, part_len, time_granularity};
use crate::error::{Error, Result, api_error_response};
use crate::state::{AppState, now_ms};
use crate::store::{CreateOutcome, FetchOutcome, NewBlob, PartOutcome};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create))
        .routes(routes!(usage))
        .routes(routes!(put_part))
        .routes(routes!(upload_status))
        .routes(routes!(download))
        .routes(routes!(fetched))
}

/// Raw bytes (`application/octet-stream`), for the document.
enum Binary {}

impl PartialSchema for Binary {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .into()
    }
}

impl ToSchema for Binary {}

/// The capability named in a path, hashed as stored.
fn parse_blob(text: &str) -> Result<BlobHash> {
    B64::decode(text)
        .filter(|bytes| bytes.len() == BLOB_ID_BYTES)
        .map(|bytes| BlobHash::of(&bytes))
        .ok_or_else(|| {
            Error::bad_request("a blob id is 43 base64url characters (32 bytes, no padding)")
        })
}

/// The one answer for a blob that is not there to this caller.
fn no_such_blob() -> Error {
    Error::not_found("no such blob")
}

fn millis(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Reserves a blob of `size` bytes (the ciphertext's exact size) for upload and answers its
/// capability, the part size and count, and when it is deleted at the latest. Only this
/// account may upload its parts; whoever holds the capability may read it once complete. An
/// upload not complete a day after this is deleted; a complete blob is deleted once
/// `recipients` devices confirmed the download, or 30 days after this.
#[utoipa::path(post, path = "/v1/blobs", tag = "blobs",
    security(("bearer" = [])),
    request_body = CreateBlob,
    responses(
        (status = 201, body = BlobCreated),
        (status = 400, description = "size or recipients 0 (or out of range), or a malformed \
            request", body = ApiError),
        (status = 401, body = ApiError),
        (status = 403, description = "pending device", body = ApiError),
        (status = 413, description = "`too_large`: larger than the largest blob the server \
            takes (`GET /v1/blobs/usage` says how large)", body = ApiError),
        (status = 507, description = "`quota_exceeded`: the account's blobs would take more \
            than its quota, or it has as many uploads under way as it may", body = ApiError),
    ))]
async fn create(
    State(state): State<AppState>,
    ActiveSession(session): ActiveSession,
    Json(request): Json<CreateBlob>,
) -> Result<(StatusCode, axum::Json<BlobCreated>)> {
    let settings = &state.config.blobs;
    // The document declares `size` as int64 and `recipients` as int32: refuse what they
    // exclude.
    if i64::try_from(request.size).is_err() || i32::try_from(request.recipients).is_err() {
        return Err(Error::bad_request("`size` or `recipients` is out of range"));
    }
    if request.size == 0 {
        return Err(Error::bad_request("a blob has at least 1 byte"));
    }
    if request.recipients == 0 {
        return Err(Error::bad_request("a blob has at least 1 recipient"));
    }
    if request.size > settings.max_blob_bytes {
        return Err(Error::too_large(format!(
            "a blob may have at most {} bytes",
            settings.max_blob_bytes
        )));
    }
    let mut capability = [0u8; BLOB_ID_BYTES];
    OsRng
        .try_fill_bytes(&mut capability)
        .map_err(|_| Error::Internal("the system random generator failed"))?;
    let hash = BlobHash::of(&capability);
    let part_size = settings.part_bytes;
    let parts = request.size.div_ceil(part_size);
    let now = now_ms();
    let granularity = time_granularity(settings);
    let created_at_ms = now - now % granularity;
    let deadline = |ttl| {
        created_at_ms
            .saturating_add(granularity)
            .saturating_add(ttl)
    };
    let account_id = session.device.account_id;
    let outcome = state
        .store
        .create_blob(NewBlob {
            hash,
            account_id,
            size: request.size,
            part_size,
            parts,
            recipients: request.recipients,
            created_at_ms,
            expires_at_ms: deadline(millis(settings.upload_ttl)),
            now_ms: now,
            quota_bytes: settings.quota_bytes,
            max_incomplete: settings.max_incomplete,
        })
        .await?;
    match outcome {
        CreateOutcome::Created => {}
        CreateOutcome::OverQuota { used } => {
            return Err(Error::new(
                ErrorCode::QuotaExceeded,
                format!(
                    "the account's blobs take {used} of its {} bytes: this one does not fit",
                    settings.quota_bytes
                ),
            ));
        }
        CreateOutcome::TooManyUploads => {
            return Err(Error::new(
                ErrorCode::QuotaExceeded,
                format!(
                    "the account has {} uploads under way: finish one first",
                    settings.max_incomplete
                ),
            ));
        }
    }
    state.metrics.blobs_created.inc();
    Ok((
        StatusCode::CREATED,
        axum::Json(BlobCreated {
            blob_id: B64(capability.to_vec()),
            part_size,
            parts,
            expires_at: deadline(millis(settings.ttl)),
        }),
    ))
}

/// What the account's blobs take of its quota, and the largest blob the server takes.
#[utoipa::path(get, path = "/v1/blobs/usage", tag = "blobs",
    security(("bearer" = [])),
    responses(
        (status = 200, body = BlobUsage),
        (status = 401, body = ApiError),
        (status = 403, description = "pending device", body = ApiError),
    ))]
async fn usage(
    State(state): State<AppState>,
    ActiveSession(session): ActiveSession,
) -> Result<axum::Json<BlobUsage>> {
    let settings = &state.config.blobs;
    let used = state
        .store
        .blob_usage(session.device.account_id, now_ms())
        .await?;
    Ok(axum::Json(BlobUsage {
        used,
        quota: settings.quota_bytes,
        max_blob: settings.max_blob_bytes,
    }))
}

/// Uploads part `index` of a blob this account created: exactly `part_size` bytes, the last
/// part the rest (`size - (parts - 1) * part_size`). Parts may come in any order and any
/// number of times (the same bytes again replace the part); the answer says which parts are
/// still missing. Once none is, the blob is complete and its parts can no longer change.
#[utoipa::path(put, path = "/v1/blobs/{blob}/parts/{index}", tag = "blobs",
    security(("bearer" = [])),
    params(
        ("blob" = String, Path, description = "the blob id (43 base64url characters)",
            pattern = "^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$"),
        ("index" = u64, Path, description = "the part's index, from 0"),
    ),
    request_body(content = inline(Binary), content_type = "application/octet-stream",
        description = "the part's bytes"),
    responses(
        (status = 200, body = UploadStatus),
        (status = 400, description = "a malformed blob id, an index past the last part, or a \
            body not exactly the part's length", body = ApiError),
        (status = 401, body = ApiError),
        (status = 403, description = "pending device", body = ApiError),
        (status = 404, description = "no such upload of this account (unknown, expired, \
            deleted, or another account's)", body = ApiError),
        (status = 409, description = "`blob_complete`: the blob is complete", body = ApiError),
    ))]
async fn put_part(
    State(state): State<AppState>,
    ActiveSession(session): ActiveSession,
    Path((blob, index)): Path<(String, u64)>,
    headers: HeaderMap,
    body: Body,
) -> Result<axum::Json<UploadStatus>> {
    let hash = parse_blob(&blob)?;
    let account_id = session.device.account_id;
    let blob = state
        .store
        .blob(hash, now_ms())
        .await?
        .filter(|b| b.account_id == account_id)
        .ok_or_else(no_such_blob)?;
    if blob.complete {
        return Err(complete());
    }
    if index >= blob.parts {
        return Err(Error::bad_request(format!(
            "this blob has {} parts: the last index is {}",
            blob.parts,
            blob.parts - 1
        )));
    }
    let expected = part_len(blob.size, blob.part_size, index);
    let chunks = read_exactly(&headers, body, expected).await?;
    state.blobs.put_part(hash, index, chunks).await?;
    state.metrics.blob_bytes_uploaded.inc_by(expected);
    let settings = &state.config.blobs;
    let lifetime = time_granularity(settings).saturating_add(millis(settings.ttl));
    let outcome = state
        .store
        .record_part(hash, account_id, index, now_ms(), lifetime)
        .await?;
    match outcome {
        PartOutcome::Recorded(progress) => Ok(axum::Json(UploadStatus {
            size: blob.size,
            part_size: blob.part_size,
            missing: progress.missing,
            complete: progress.complete,
        })),
        PartOutcome::Complete => Err(complete()),
        PartOutcome::Gone => {
            // Deleted or expired while the part was stored: the deletion may have run before
            // this object was written, so it goes here.
            if let Err(StoreFailure::Failed(kind)) = state.blobs.delete_part(hash, index).await {
                tracing::warn!(kind, "could not delete a part of a deleted blob");
            }
            Err(no_such_blob())
        }
    }
}

fn complete() -> Error {
    Error::new(
        ErrorCode::BlobComplete,
        "the blob is complete: its parts can no longer change",
    )
}

fn wrong_length(expected: u64) -> Error {
    Error::bad_request(format!("this part is exactly {expected} bytes"))
}

/// The body, which must be exactly `expected` bytes: read chunk by chunk (never more than
/// `expected` and one chunk), refused as soon as it is longer.
async fn read_exactly(headers: &HeaderMap, body: Body, expected: u64) -> Result<Vec<bytes::Bytes>> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len != expected) {
        return Err(wrong_length(expected));
    }
    let mut stream = body.into_data_stream();
    let mut chunks = Vec::new();
    let mut len = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| Error::bad_request("the request body could not be read"))?;
        len = len.saturating_add(u64::try_from(chunk.len()).unwrap_or(u64::MAX));
        if len > expected {
            return Err(wrong_length(expected));
        }
        chunks.push(chunk);
    }
    if len != expected {
        return Err(wrong_length(expected));
    }
    Ok(chunks)
}

/// Where the upload of a blob this account created stands: which parts are missing. A client
/// resuming an upload (after a crash or a lost connection) asks this first.
#[utoipa::path(get, path = "/v1/blobs/{blob}/upload", tag = "blobs",
    security(("bearer" = [])),
    params(("blob" = String, Path, description = "the blob id (43 base64url characters)",
        pattern = "^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$")),
    responses(
        (status = 200, body = UploadStatus),
        (status = 400, description = "a malformed blob id", body = ApiError),
        (status = 401, body = ApiError),
        (status = 403, description = "pending device", body = ApiError),
        (status = 404, description = "no such upload of this account (unknown, expired, \
            deleted, or another account's)", body = ApiError),
    ))]
async fn upload_status(
    State(state): State<AppState>,
    ActiveSession(session): ActiveSession,
    Path(blob): Path<String>,
) -> Result<axum::Json<UploadStatus>> {
    let hash = parse_blob(&blob)?;
    let (blob, progress) = state
        .store
        .upload_progress(hash, session.device.account_id, now_ms())
        .await?
        .ok_or_else(no_such_blob)?;
    Ok(axum::Json(UploadStatus {
        size: blob.size,
        part_size: blob.part_size,
        missing: progress.missing,
        complete: progress.complete,
    }))
}

/// What a `Range` header asks of a blob of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
enum Wanted {
    /// No range, or one the server ignores (malformed, several ranges, another unit): the
    /// whole blob.
    Whole,
    /// One satisfiable range.
    Part(Range<u64>),
    /// A range that starts past the end.
    Unsatisfiable,
}

/// Parses a single `bytes=a-b`, `bytes=a-` or `bytes=-n` range (RFC 9110 §14.1.2).
fn wanted(range: Option<&HeaderValue>, size: u64) -> Wanted {
    let Some(spec) = range
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().strip_prefix("bytes="))
    else {
        return Wanted::Whole;
    };
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Wanted::Whole;
    };
    let number = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    match (first.trim(), last.trim()) {
        ("", suffix) => match number(suffix) {
            Some(0) => Wanted::Unsatisfiable,
            Some(n) => Wanted::Part(size.saturating_sub(n)..size),
            None => Wanted::Whole,
        },
        (first, "") => match number(first) {
            Some(a) if a >= size => Wanted::Unsatisfiable,
            Some(a) => Wanted::Part(a..size),
            None => Wanted::Whole,
        },
        (first, last) => match (number(first), number(last)) {
            (Some(a), Some(b)) if a <= b => {
                if a >= size {
                    Wanted::Unsatisfiable
                } else {
                    Wanted::Part(a..b.saturating_add(1).min(size))
                }
            }
            _ => Wanted::Whole,
        },
    }
}

/// Downloads a complete blob: its ciphertext, streamed from the object store part by part.
/// One `Range` (`bytes=a-b`, `bytes=a-`, `bytes=-n`) resumes a download: 206 with
/// `Content-Range`; a range starting past the end is 416; any other `Range` is ignored.
#[utoipa::path(get, path = "/v1/blobs/{blob}", tag = "blobs",
    security(("bearer" = [])),
    params(
        ("blob" = String, Path, description = "the blob id (43 base64url characters)",
            pattern = "^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$"),
        ("range" = Option<String>, Header, description = "one byte range, e.g. `bytes=1048576-`"),
    ),
    responses(
        (status = 200, description = "the whole blob", content_type = "application/octet-stream",
            body = inline(Binary),
            headers(("content-length" = u64), ("accept-ranges" = String, description = "`bytes`"))),
        (status = 206, description = "the range asked for", content_type = "application/octet-stream",
            body = inline(Binary),
            headers(("content-length" = u64), ("content-range" = String, description = "`bytes a-b/size`"))),
        (status = 400, description = "a malformed blob id", body = ApiError),
        (status = 401, body = ApiError),
        (status = 403, description = "pending device", body = ApiError),
        (status = 404, description = "no such readable blob (unknown, incomplete, expired or \
            deleted)", body = ApiError),
        (status = 416, description = "the range starts past the end", body = ApiError,
            headers(("content-range" = String, description = "`bytes */size`"))),
    ))]
async fn download(
    State(state): State<AppState>,
    ActiveSession(_): ActiveSession,
    Path(blob): Path<String>,
    headers: HeaderMap,
) -> Result<Response> {
    let hash = parse_blob(&blob)?;
    let blob = state
        .store
        .blob(hash, now_ms())
        .await?
        .filter(|b| b.complete)
        .ok_or_else(no_such_blob)?;
    let (status, range) = match wanted(headers.get(header::RANGE), blob.size) {
        Wanted::Whole => (StatusCode::OK, 0..blob.size),
        Wanted::Part(range) => (StatusCode::PARTIAL_CONTENT, range),
        Wanted::Unsatisfiable => {
            let mut response = api_error_response(ApiError::new(
                ErrorCode::BadRequest,
                format!("the blob has {} bytes", blob.size),
            ));
            *response.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            if let Ok(value) = HeaderValue::from_str(&format!("bytes */{}", blob.size)) {
                response.headers_mut().insert(header::CONTENT_RANGE, value);
            }
            return Ok(response);
        }
    };
    // The first part is opened here: a missing object is a 404, not a cut-off body.
    let first_index = range.start / blob.part_size;
    let part_start = first_index * blob.part_size;
    let first_end = (range.end - part_start).min(part_len(blob.size, blob.part_size, first_index));
    let first = state
        .blobs
        .read_part(hash, first_index, range.start - part_start..first_end)
        .await?;
    let downloaded = state.metrics.blob_bytes_downloaded.clone();
    let stream = blob_stream(
        &state.blobs,
        hash,
        blob.part_size,
        blob.size,
        range.clone(),
        first,
    )
    .inspect_ok(move |chunk| {
        downloaded.inc_by(u64::try_from(chunk.len()).unwrap_or(u64::MAX));
    });
    let mut response = Response::new(Body::from_stream(stream));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    headers.insert(
        header::CONTENT_LENGTH,
        HeaderValue::from(range.end - range.start),
    );
    if status == StatusCode::PARTIAL_CONTENT {
        let value = format!("bytes {}-{}/{}", range.start, range.end - 1, blob.size);
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(header::CONTENT_RANGE, value);
        }
    }
    Ok(response)
}

/// Confirms that this device has the blob (downloaded and checked it). Each device counts
/// once, however often it confirms; once as many devices as the uploader declared confirmed,
/// the blob is deleted.
#[utoipa::path(post, path = "/v1/blobs/{blob}/fetched", tag = "blobs",
    security(("bearer" = [])),
    params(("blob" = String, Path, description = "the blob id (43 base64url characters)",
        pattern = "^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$")),
    responses(
        (status = 204, description = "counted"),
        (status = 400, description = "a malformed blob id", body = ApiError),
        (status = 401, body = ApiError),
        (status = 403, description = "pending device", body = ApiError),
        (status = 404, description = "no such readable blob (unknown, incomplete, expired or \
            deleted)", body = ApiError),
    ))]
async fn fetched(
    State(state): State<AppState>,
    ActiveSession(session): ActiveSession,
    Path(blob): Path<String>,
) -> Result<StatusCode> {
    let hash = parse_blob(&blob)?;
    let outcome = state
        .store
        .confirm_fetch(hash, session.device.device_pk, now_ms())
        .await?;
    match outcome {
        FetchOutcome::Gone => Err(no_such_blob()),
        FetchOutcome::Counted => Ok(StatusCode::NO_CONTENT),
        FetchOutcome::Finished { parts } => {
            state.metrics.blobs_fetched.inc();
            // A task of its own, awaited: a client hanging up cannot cancel the deletion half
            // way (which the sweep would finish anyway).
            let deleting = state.clone();
            let _ = tokio::spawn(async move {
                crate::blobs::delete(&deleting, hash, parts).await;
            })
            .await;
            Ok(StatusCode::NO_CONTENT)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(value: &str, size: u64) -> Wanted {
        wanted(Some(&HeaderValue::from_str(value).unwrap()), size)
    }

    #[test]
    fn ranges() {
        assert_eq!(wanted(None, 10), Wanted::Whole);
        assert_eq!(range("bytes=0-3", 10), Wanted::Part(0..4));
        assert_eq!(range("bytes=4-", 10), Wanted::Part(4..10));
        assert_eq!(range("bytes=4-100", 10), Wanted::Part(4..10));
        assert_eq!(range("bytes=9-9", 10), Wanted::Part(9..10));
        assert_eq!(range("bytes=-3", 10), Wanted::Part(7..10));
        assert_eq!(range("bytes=-30", 10), Wanted::Part(0..10));
        assert_eq!(range("bytes=10-", 10), Wanted::Unsatisfiable);
        assert_eq!(range("bytes=10-20", 10), Wanted::Unsatisfiable);
        assert_eq!(range("bytes=-0", 10), Wanted::Unsatisfiable);
        // Ignored: malformed, backwards, several ranges, another unit.
        for ignored in [
            "bytes=5-4",
            "bytes=a-b",
            "bytes=0-1,3-4",
            "items=0-1",
            "bytes=-",
            "bytes=+1-2",
        ] {
            assert_eq!(range(ignored, 10), Wanted::Whole, "{ignored}");
        }
    }

    /// The document's pattern for blob ids (in every route's `params`).
    const BLOB_PATTERN: &str = "^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$";

    #[test]
    fn blob_ids_are_32_bytes_of_base64url() {
        let pattern = regex_lite(BLOB_PATTERN);
        let id = B64::encode(&[0xff; 32]);
        assert!(parse_blob(&id).is_ok() && pattern(&id));
        for bad in [B64::encode(&[1; 31]), B64::encode(&[1; 33]), "a".repeat(43)] {
            assert!(parse_blob(&bad).is_err() && !pattern(&bad), "{bad}");
        }
    }

    /// The document's pattern, checked by hand (no regex engine in this crate): 42 characters
    /// of the alphabet, then one whose two low bits are zero.
    fn regex_lite(pattern: &str) -> impl Fn(&str) -> bool {
        assert_eq!(pattern, "^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$");
        |s: &str| {
            s.len() == 43
                && s[..42]
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                && "AEIMQUYcgkosw048".contains(&s[42..])
        }
    }
}
