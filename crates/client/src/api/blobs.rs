//! Blob routes: the encrypted attachments' store (`nightjar_api::blobs`). `{blob}` is the
//! blob's capability in base64url, as the server handed it out.

use std::time::Duration;

use bytes::Bytes;
use nightjar_api::{BlobCreated, BlobUsage, CreateBlob, UploadStatus};
use nightjar_machine::transfer::parse_content_range;
use reqwest::header::{CONTENT_RANGE, CONTENT_TYPE, RANGE};
use reqwest::{Method, StatusCode};

use super::{Api, network, segment};
use crate::error::{Error, Result};

/// The slowest upload a part may take before it counts as failed: a minute, plus the time to
/// send it at 16 KiB/s.
fn part_deadline(len: usize) -> Duration {
    let len = u64::try_from(len).unwrap_or(u64::MAX);
    Duration::from_secs(60).saturating_add(Duration::from_secs(len / (16 * 1024)))
}

/// A blob download under way: where its body starts in the blob, and the body in pieces.
#[derive(Debug)]
pub struct BlobDownload {
    response: reqwest::Response,
    start: u64,
    total: Option<u64>,
}

impl BlobDownload {
    /// Where the body begins in the blob: the `Content-Range` start of a `206`, 0 for a
    /// `200` (the server sent the whole blob).
    pub fn start(&self) -> u64 {
        self.start
    }

    /// The blob's size, when the answer states it.
    pub fn total(&self) -> Option<u64> {
        self.total
    }

    /// The next piece of the body, `None` at its end.
    pub async fn chunk(&mut self) -> Result<Option<Bytes>> {
        self.response.chunk().await.map_err(network)
    }
}

impl Api {
    /// `POST /v1/blobs`: reserves a blob for upload.
    pub async fn create_blob(&self, r: &CreateBlob) -> Result<BlobCreated> {
        self.call(Method::POST, "/v1/blobs", Some(r)).await
    }

    /// `PUT /v1/blobs/{blob}/parts/{index}`: uploads one part (`application/octet-stream`).
    pub async fn put_blob_part(&self, blob: &str, index: u64, body: Bytes) -> Result<UploadStatus> {
        let path = format!("/v1/blobs/{}/parts/{index}", segment(blob));
        let deadline = part_deadline(body.len());
        let response = self
            .exchange(&self.blob_http, Method::PUT, &path, |request| {
                request
                    .header(CONTENT_TYPE, "application/octet-stream")
                    .timeout(deadline)
                    .body(body.clone())
            })
            .await?;
        let bytes = response.bytes().await.map_err(network)?;
        serde_json::from_slice(&bytes).map_err(|e| Error::Protocol(format!("{path}: {e}")))
    }

    /// `GET /v1/blobs/{blob}/upload`: which parts the server holds.
    pub async fn upload_status(&self, blob: &str) -> Result<UploadStatus> {
        let path = format!("/v1/blobs/{}/upload", segment(blob));
        self.call(Method::GET, &path, None::<&()>).await
    }

    /// `GET /v1/blobs/{blob}` with `Range: bytes={from}-`: the ciphertext from byte `from`.
    pub async fn download_blob(&self, blob: &str, from: u64) -> Result<BlobDownload> {
        let path = format!("/v1/blobs/{}", segment(blob));
        let response = self
            .exchange(&self.blob_http, Method::GET, &path, |request| {
                request.header(RANGE, format!("bytes={from}-"))
            })
            .await?;
        let (start, total) = match response.status() {
            StatusCode::PARTIAL_CONTENT => {
                let range = response
                    .headers()
                    .get(CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .and_then(parse_content_range)
                    .ok_or_else(|| {
                        Error::Protocol(format!("{path}: a 206 without a valid Content-Range"))
                    })?;
                (range.0, range.2)
            }
            StatusCode::OK => (0, response.content_length()),
            other => {
                return Err(Error::Protocol(format!(
                    "{path}: unexpected status {other}"
                )));
            }
        };
        Ok(BlobDownload {
            response,
            start,
            total,
        })
    }

    /// `POST /v1/blobs/{blob}/fetched`: confirms this device downloaded the blob.
    pub async fn blob_fetched(&self, blob: &str) -> Result<()> {
        let path = format!("/v1/blobs/{}/fetched", segment(blob));
        self.call_raw(Method::POST, &path, None::<&()>)
            .await
            .map(drop)
    }

    /// `GET /v1/blobs/usage`: what the account's blobs take of its quota.
    pub async fn blob_usage(&self) -> Result<BlobUsage> {
        self.call(Method::GET, "/v1/blobs/usage", None::<&()>).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_deadlines_grow_with_the_part() {
        assert_eq!(part_deadline(0), Duration::from_secs(60));
        assert_eq!(part_deadline(8 << 20), Duration::from_secs(60 + 512));
    }
}
