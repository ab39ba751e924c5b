//! Attachments: the opaque blob store, end to end against a real server, on SQLite and
//! PostgreSQL, with the bytes on the local file system and in a real S3-compatible server
//! (s3s-fs, started by scripts/s3.sh, which sets `NIGHTJAR_TEST_S3_*`; without it the S3 runs
//! say they were skipped, as the PostgreSQL runs do without `NIGHTJAR_TEST_POSTGRES_URL`).
//!
//! Round trips (parts out of order, one sent again, ranges), a 50 MiB blob, and the hostile
//! cases: other accounts, no session, unknown or incomplete blobs, malformed parts, quotas,
//! confirmations, expiry, and a completed blob's immutability. The server here only ever sees
//! random bytes: the client encrypts (its tests check that no plaintext reaches the server).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt as _;
use nightjar_api::*;
use nightjar_server::BlobSettings;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt as _};
use rand_core::RngCore as _;
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, HeaderValue};
use serde_json::Value;

/// The variables scripts/s3.sh prints.
const S3_ENDPOINT_ENV: &str = "NIGHTJAR_TEST_S3_ENDPOINT";
const S3_BUCKET_ENV: &str = "NIGHTJAR_TEST_S3_BUCKET";
const S3_KEY_ENV: &str = "NIGHTJAR_TEST_S3_ACCESS_KEY_ID";
const S3_SECRET_ENV: &str = "NIGHTJAR_TEST_S3_SECRET_ACCESS_KEY";

/// A part size that makes small blobs of several parts.
const PART: u64 = 64 * 1024;

/// Where a test server keeps blob bytes.
#[derive(Clone, Debug)]
enum Objects {
    /// Under the server's data directory (the default).
    Local,
    /// In the test S3 server, under a prefix of this test's own.
    S3 {
        bucket: String,
        prefix: String,
        options: Vec<(String, String)>,
    },
}

impl Objects {
    /// The test S3 server with a fresh prefix, or `None` (and a note) when it is not set up.
    fn s3(test: &str) -> Option<Self> {
        let endpoint = configured(S3_ENDPOINT_ENV, test)?;
        let var = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| panic!("{name} with {S3_ENDPOINT_ENV}"))
        };
        let options = vec![
            ("aws_endpoint".to_owned(), endpoint),
            ("aws_access_key_id".to_owned(), var(S3_KEY_ENV)),
            ("aws_secret_access_key".to_owned(), var(S3_SECRET_ENV)),
            ("aws_region".to_owned(), "us-east-1".to_owned()),
            ("aws_allow_http".to_owned(), "true".to_owned()),
        ];
        Some(Self::S3 {
            bucket: var(S3_BUCKET_ENV),
            prefix: format!("test-{}", hex(&random(8))),
            options,
        })
    }

    /// The server's blob settings for this store.
    fn settings(&self, settings: BlobSettings) -> BlobSettings {
        match self {
            Self::Local => settings,
            Self::S3 {
                bucket,
                prefix,
                options,
            } => BlobSettings {
                store: Some(format!("s3://{bucket}/{prefix}")),
                store_options: options.clone(),
                ..settings
            },
        }
    }

    /// Every object the server stored (paths under `blobs/`), read from the store itself.
    async fn list(&self, server: &TestServer) -> Vec<String> {
        let mut found: Vec<String> = self
            .store(server)
            .list(Some(&ObjectPath::from("blobs")))
            .map(|meta| meta.unwrap().location.to_string())
            .collect()
            .await;
        found.sort();
        found
    }

    /// Deletes what the test left in the S3 server (the local store goes with its temporary
    /// directory).
    async fn clean(&self, server: &TestServer) {
        if let Self::S3 { .. } = self {
            let store = self.store(server);
            for path in self.list(server).await {
                store.delete(&ObjectPath::from(path)).await.unwrap();
            }
        }
    }

    /// The store, as the test reads it.
    fn store(&self, server: &TestServer) -> Box<dyn ObjectStore> {
        match self {
            Self::Local => Box::new(
                object_store::local::LocalFileSystem::new_with_prefix(server.dir.path()).unwrap(),
            ),
            Self::S3 {
                bucket,
                prefix,
                options,
            } => {
                let mut builder =
                    object_store::aws::AmazonS3Builder::new().with_bucket_name(bucket);
                for (key, value) in options {
                    builder = builder.with_config(key.parse().unwrap(), value);
                }
                Box::new(object_store::prefix::PrefixStore::new(
                    builder.build().unwrap(),
                    prefix.as_str(),
                ))
            }
        }
    }
}

/// Runs each named `async fn(Backend, Objects)` four times: SQLite and PostgreSQL, each with
/// the local store and with S3; a run whose service is not configured says it was skipped.
macro_rules! store_tests {
    ($($name:ident),* $(,)?) => {
        $(mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite_local() {
                super::$name(Backend::Sqlite, Objects::Local).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite_s3() {
                if let Some(s3) = Objects::s3(concat!(stringify!($name), "::sqlite_s3")) {
                    super::$name(Backend::Sqlite, s3).await;
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres_local() {
                let test = concat!(stringify!($name), "::postgres_local");
                if configured(POSTGRES_ENV, test).is_some() {
                    super::$name(Backend::Postgres, Objects::Local).await;
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres_s3() {
                let test = concat!(stringify!($name), "::postgres_s3");
                if configured(POSTGRES_ENV, test).is_some()
                    && let Some(s3) = Objects::s3(test)
                {
                    super::$name(Backend::Postgres, s3).await;
                }
            }
        })*
    };
}

store_tests!(
    parts_out_of_order_round_trip_whole_and_by_ranges,
    the_last_recipient_deletes_the_blob_and_its_objects,
    expiry_deletes_rows_and_objects,
);

backend_tests!(
    another_account_cannot_touch_an_upload,
    no_session_is_refused_everywhere,
    unknown_and_incomplete_blobs_are_not_found,
    malformed_uploads_are_refused_and_store_nothing,
    quota_and_upload_limits_reserve_nothing,
    one_device_counts_once,
    a_completed_blob_cannot_change,
);

fn random(n: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; n];
    rand_core::OsRng.fill_bytes(&mut bytes);
    bytes
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A server with these blob settings (small parts unless the test says otherwise).
async fn blob_server(
    backend: Backend,
    objects: &Objects,
    change: impl Fn(&mut BlobSettings) + Send + Sync + 'static,
) -> TestServer {
    let mut settings = BlobSettings {
        part_bytes: PART,
        ..BlobSettings::default()
    };
    change(&mut settings);
    let settings = objects.settings(settings);
    TestServer::with_config(backend, test_limits(), move |config| {
        config.blobs = settings.clone();
        config.sweep_interval = Duration::from_secs(1);
    })
    .await
}

/// `POST /v1/blobs`.
async fn create(
    server: &TestServer,
    device: &Device,
    size: u64,
    recipients: u32,
) -> (StatusCode, Value) {
    server
        .post(
            "/v1/blobs",
            device.token(),
            &CreateBlob { size, recipients },
        )
        .await
}

/// `POST /v1/blobs`, expecting 201.
async fn created(server: &TestServer, device: &Device, size: u64, recipients: u32) -> BlobCreated {
    let (status, body) = create(server, device, size, recipients).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    serde_json::from_value(body).unwrap()
}

fn id(blob: &BlobCreated) -> String {
    B64::encode(&blob.blob_id.0)
}

/// `PUT /v1/blobs/{id}/parts/{index}` with `bytes`.
async fn put(
    server: &TestServer,
    token: Option<&str>,
    id: &str,
    index: u64,
    bytes: Vec<u8>,
) -> (StatusCode, Value) {
    let mut request = server
        .http
        .put(server.url(&format!("/v1/blobs/{id}/parts/{index}")))
        .header("content-type", "application/octet-stream")
        .body(bytes);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let text = response.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// The part `index` of `data` cut into `part_size`-byte parts.
fn part(data: &[u8], part_size: u64, index: u64) -> Vec<u8> {
    let start = usize::try_from(index * part_size).unwrap();
    let end = (start + usize::try_from(part_size).unwrap()).min(data.len());
    data[start..end].to_vec()
}

/// Uploads every part of `data` in order, expecting success.
async fn upload_all(server: &TestServer, device: &Device, blob: &BlobCreated, data: &[u8]) {
    for index in 0..blob.parts {
        let (status, body) = put(
            server,
            device.token(),
            &id(blob),
            index,
            part(data, blob.part_size, index),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "part {index}: {body}");
    }
}

/// A blob of `data` created and completely uploaded by `device`.
async fn stored(server: &TestServer, device: &Device, data: &[u8], recipients: u32) -> BlobCreated {
    let blob = created(server, device, data.len() as u64, recipients).await;
    upload_all(server, device, &blob, data).await;
    blob
}

/// `GET /v1/blobs/{id}`, with a `Range` header if given.
async fn download(
    server: &TestServer,
    token: Option<&str>,
    id: &str,
    range: Option<&str>,
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mut request = server.http.get(server.url(&format!("/v1/blobs/{id}")));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(range) = range {
        request = request.header("range", range);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await.unwrap().to_vec();
    (status, headers, body)
}

/// `GET /v1/blobs/{id}` as JSON (for refusals).
async fn download_refused(
    server: &TestServer,
    token: Option<&str>,
    id: &str,
) -> (StatusCode, Value) {
    let (status, _, body) = download(server, token, id, None).await;
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

async fn upload_status(server: &TestServer, token: Option<&str>, id: &str) -> (StatusCode, Value) {
    server.get(&format!("/v1/blobs/{id}/upload"), token).await
}

async fn fetched(server: &TestServer, token: Option<&str>, id: &str) -> (StatusCode, Value) {
    server
        .request(
            reqwest::Method::POST,
            &format!("/v1/blobs/{id}/fetched"),
            token,
            None,
        )
        .await
}

async fn usage(server: &TestServer, device: &Device) -> BlobUsage {
    server.get_ok("/v1/blobs/usage", device.token()).await
}

/// The capability of a blob nobody created.
fn unknown_id() -> String {
    B64::encode(&random(32))
}

/// The answer to asking for a blob that is not there: every route, the same body.
fn not_found() -> (StatusCode, Value) {
    (
        StatusCode::NOT_FOUND,
        serde_json::json!({"error": "not_found", "message": "no such blob"}),
    )
}

/// Rows left in the blob tables, read from the server's database itself.
async fn blob_rows(server: &TestServer) -> [i64; 3] {
    let count = "SELECT (SELECT COUNT(*) FROM blobs), (SELECT COUNT(*) FROM blob_parts), \
                 (SELECT COUNT(*) FROM blob_fetches)";
    match &server.schema {
        Some(schema) => {
            let pool = sqlx::PgPool::connect(&schema.url).await.unwrap();
            let (a, b, c): (i64, i64, i64) = sqlx::query_as(count).fetch_one(&pool).await.unwrap();
            pool.close().await;
            [a, b, c]
        }
        None => {
            let file = server.dir.path().join("nightjar.db");
            let options = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(file)
                .read_only(true);
            let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
            let (a, b, c): (i64, i64, i64) = sqlx::query_as(count).fetch_one(&pool).await.unwrap();
            pool.close().await;
            [a, b, c]
        }
    }
}

/// Waits (up to 20 s) until `done` holds.
async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut done: impl FnMut() -> F,
) {
    for _ in 0..100 {
        if done().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{what} did not happen within 20 s");
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> &'h str {
    headers
        .get(name)
        .map(HeaderValue::to_str)
        .unwrap_or_else(|| panic!("no {name}"))
        .unwrap()
}

// ------------------------------------------------------------------------------ round trips

async fn parts_out_of_order_round_trip_whole_and_by_ranges(backend: Backend, objects: Objects) {
    let server = blob_server(backend, &objects, |_| {}).await;
    let alice = register(&server, "alice", 1).await;
    let bob = register(&server, "bob", 1).await;
    // Three and a bit parts.
    let data = random(usize::try_from(3 * PART + 1234).unwrap());
    let blob = created(&server, &alice, data.len() as u64, 2).await;
    assert_eq!((blob.part_size, blob.parts), (PART, 4));
    let (status, body) = upload_status(&server, alice.token(), &id(&blob)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let fresh: UploadStatus = serde_json::from_value(body).unwrap();
    assert_eq!((fresh.missing, fresh.complete), (vec![0, 1, 2, 3], false));

    // Out of order, part 2 twice (the second time after a "crash": the status says it is
    // there already), the short last part before the others.
    let mut last = None;
    for index in [3, 2, 2, 0, 1] {
        let (status, body) = put(
            &server,
            alice.token(),
            &id(&blob),
            index,
            part(&data, PART, index),
        )
        .await;
        assert_eq!(status, StatusCode::OK, "part {index}: {body}");
        let progress: UploadStatus = serde_json::from_value(body).unwrap();
        assert_eq!(progress.size, data.len() as u64);
        last = Some(progress);
        if index == 0 {
            let (_, body) = upload_status(&server, alice.token(), &id(&blob)).await;
            let resumed: UploadStatus = serde_json::from_value(body).unwrap();
            assert_eq!((resumed.missing, resumed.complete), (vec![1], false));
        }
    }
    let last = last.unwrap();
    assert!(last.complete && last.missing.is_empty(), "{last:?}");
    let (_, body) = upload_status(&server, alice.token(), &id(&blob)).await;
    assert_eq!(body["complete"], true);
    assert_eq!(usage(&server, &alice).await.used, data.len() as u64);

    // Another account's device reads it whole...
    let (status, headers, body) = download(&server, bob.token(), &id(&blob), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&headers, "content-type"), "application/octet-stream");
    assert_eq!(header(&headers, "accept-ranges"), "bytes");
    assert_eq!(header(&headers, "content-length"), data.len().to_string());
    assert!(body == data, "the blob came back changed");
    // ... and by ranges: within a part, across parts, from an offset, the last bytes.
    let size = data.len();
    let cases: [(&str, std::ops::Range<usize>); 6] = [
        ("bytes=0-99", 0..100),
        ("bytes=65530-65545", 65530..65546),
        ("bytes=1000-150000", 1000..150_001),
        ("bytes=131072-", 131_072..size),
        ("bytes=-10", size - 10..size),
        ("bytes=196608-999999999", 196_608..size),
    ];
    for (range, expected) in cases {
        let (status, headers, body) = download(&server, bob.token(), &id(&blob), Some(range)).await;
        assert_eq!(status, StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            header(&headers, "content-range"),
            format!("bytes {}-{}/{size}", expected.start, expected.end - 1),
            "{range}"
        );
        assert!(body == data[expected.clone()], "{range}: wrong bytes");
    }
    // A range past the end is unsatisfiable; a malformed one is ignored.
    let (status, headers, _) = download(
        &server,
        bob.token(),
        &id(&blob),
        Some(&format!("bytes={size}-")),
    )
    .await;
    assert_eq!(status, StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(header(&headers, "content-range"), format!("bytes */{size}"));
    let (status, _, body) = download(&server, bob.token(), &id(&blob), Some("bytes=9-2")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body.len(), size);

    // One object per part, named by the hash of the capability: not the capability.
    let stored = objects.list(&server).await;
    assert_eq!(stored.len(), 4, "{stored:?}");
    let capability = hex(&blob.blob_id.0);
    for path in &stored {
        let name: Vec<&str> = path.split('/').collect();
        assert_eq!(name.len(), 3, "{path}");
        assert_eq!((name[0], name[1].len()), ("blobs", 64), "{path}");
        assert!(
            !path.contains(&capability) && !path.contains(&id(&blob)),
            "{path}"
        );
    }
    objects.clean(&server).await;
}

/// 50 MiB through the default part size, on SQLite (local store and S3); the database (and,
/// for the local store, everything in the data directory) holds neither the capability nor
/// its base64.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_mib_blob_local() {
    fifty_mib(Objects::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_50_mib_blob_s3() {
    if let Some(s3) = Objects::s3("a_50_mib_blob_s3") {
        fifty_mib(s3).await;
    }
}

async fn fifty_mib(objects: Objects) {
    let server = blob_server(Backend::Sqlite, &objects, |settings| {
        settings.part_bytes = BlobSettings::default().part_bytes;
    })
    .await;
    let alice = register(&server, "alice", 1).await;
    let bob = register(&server, "bob", 1).await;
    let data = random(50 << 20);
    let blob = stored(&server, &alice, &data, 1).await;
    assert_eq!((blob.part_size, blob.parts), (4 << 20, 13));
    let (status, headers, body) = download(&server, bob.token(), &id(&blob), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        header(&headers, "content-length"),
        (50u64 << 20).to_string()
    );
    assert!(body == data, "50 MiB came back changed");
    let (status, _, tail) =
        download(&server, bob.token(), &id(&blob), Some("bytes=52000000-")).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT);
    assert!(tail == data[52_000_000..]);
    assert_eq!(objects.list(&server).await.len(), 13);

    let capability = blob.blob_id.0.clone();
    let text = id(&blob);
    let mut files = Vec::new();
    collect_files(server.dir.path(), &mut files);
    let database: Vec<_> = files
        .iter()
        .filter(|path| path.to_string_lossy().contains("nightjar.db"))
        .collect();
    assert!(!database.is_empty(), "{files:?}");
    for path in &files {
        let bytes = std::fs::read(path).unwrap();
        for (what, needle) in [("capability", &capability[..]), ("base64", text.as_bytes())] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "{} holds the blob's {what}",
                path.display()
            );
        }
    }
    objects.clean(&server).await;
}

fn collect_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_files(&path, out);
        } else {
            out.push(path);
        }
    }
}

// ----------------------------------------------------------------------------------- hostile

/// Another account can neither upload parts nor see the upload's status: it gets exactly
/// what an unknown blob gets.
async fn another_account_cannot_touch_an_upload(backend: Backend) {
    let server = blob_server(backend, &Objects::Local, |_| {}).await;
    let alice = register(&server, "alice", 1).await;
    let mallory = register(&server, "mallory", 1).await;
    let data = random(usize::try_from(PART + 10).unwrap());
    let blob = created(&server, &alice, data.len() as u64, 1).await;
    put(&server, alice.token(), &id(&blob), 0, part(&data, PART, 0)).await;

    let unknown = unknown_id();
    for target in [id(&blob), unknown] {
        let forged = part(&data, PART, 1).iter().map(|b| !b).collect();
        assert_eq!(
            put(&server, mallory.token(), &target, 1, forged).await,
            not_found(),
            "mallory uploaded a part"
        );
        assert_eq!(
            upload_status(&server, mallory.token(), &target).await,
            not_found(),
            "mallory read the upload's status"
        );
    }
    // Nothing of mallory's was stored; alice's upload goes on as before.
    let (_, body) = upload_status(&server, alice.token(), &id(&blob)).await;
    assert_eq!(body["missing"], serde_json::json!([1]));
    assert_eq!(Objects::Local.list(&server).await.len(), 1);
    assert_eq!(usage(&server, &mallory).await.used, 0);
}

/// Every blob route refuses a request without a session (or with a bad one) with 401.
async fn no_session_is_refused_everywhere(backend: Backend) {
    let server = blob_server(backend, &Objects::Local, |_| {}).await;
    let alice = register(&server, "alice", 1).await;
    let blob = stored(&server, &alice, b"ciphertext", 1).await;
    for token in [None, Some("not-a-session")] {
        let unauthorized = |(status, body): (StatusCode, Value)| {
            assert_eq!(
                (status, code(&body).to_owned()),
                (StatusCode::UNAUTHORIZED, "unauthorized".to_owned()),
                "{body}"
            );
        };
        unauthorized(
            server
                .post(
                    "/v1/blobs",
                    token,
                    &CreateBlob {
                        size: 1,
                        recipients: 1,
                    },
                )
                .await,
        );
        unauthorized(server.get("/v1/blobs/usage", token).await);
        unauthorized(put(&server, token, &id(&blob), 0, b"x".to_vec()).await);
        unauthorized(upload_status(&server, token, &id(&blob)).await);
        unauthorized(download_refused(&server, token, &id(&blob)).await);
        unauthorized(fetched(&server, token, &id(&blob)).await);
    }
    // The blob is still whole and unconfirmed.
    let (status, _, body) = download(&server, alice.token(), &id(&blob), None).await;
    assert_eq!(
        (status, body.as_slice()),
        (StatusCode::OK, &b"ciphertext"[..])
    );
}

/// A random capability, and a blob whose upload is not complete (even to its uploader), are
/// not found, with the same answer.
async fn unknown_and_incomplete_blobs_are_not_found(backend: Backend) {
    let server = blob_server(backend, &Objects::Local, |_| {}).await;
    let alice = register(&server, "alice", 1).await;
    let bob = register(&server, "bob", 1).await;
    let data = random(usize::try_from(2 * PART).unwrap());
    let blob = created(&server, &alice, data.len() as u64, 1).await;
    // The first part is there, the second is not.
    put(&server, alice.token(), &id(&blob), 0, part(&data, PART, 0)).await;
    for reader in [&alice, &bob] {
        assert_eq!(
            download_refused(&server, reader.token(), &id(&blob)).await,
            not_found(),
            "an incomplete blob was readable"
        );
        assert_eq!(
            fetched(&server, reader.token(), &id(&blob)).await,
            not_found(),
            "an incomplete blob was confirmed"
        );
        let unknown = unknown_id();
        assert_eq!(
            download_refused(&server, reader.token(), &unknown).await,
            not_found()
        );
        assert_eq!(
            fetched(&server, reader.token(), &unknown).await,
            not_found()
        );
        assert_eq!(
            upload_status(&server, reader.token(), &unknown).await,
            not_found()
        );
    }
    // A malformed id is a malformed request.
    for bad in ["short", &"A".repeat(44), &B64::encode(&[1; 31])] {
        let (status, body) = download_refused(&server, bob.token(), bad).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::BAD_REQUEST, "bad_request"),
            "{bad}"
        );
    }
}

/// Wrong part lengths, an index past the end, an empty or too large blob, no recipients:
/// clear refusals, and nothing stored.
async fn malformed_uploads_are_refused_and_store_nothing(backend: Backend) {
    let server = blob_server(backend, &Objects::Local, |settings| {
        settings.max_blob_bytes = 10 * PART;
    })
    .await;
    let alice = register(&server, "alice", 1).await;
    let refused = |(status, body): (StatusCode, Value), expected: StatusCode, code_: &str| {
        assert_eq!((status, code(&body)), (expected, code_), "{body}");
    };
    // Size 0, past the largest blob, no recipients: no blob.
    refused(
        create(&server, &alice, 0, 1).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    refused(
        create(&server, &alice, 10 * PART + 1, 1).await,
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
    );
    refused(
        create(&server, &alice, 5, 0).await,
        StatusCode::BAD_REQUEST,
        "bad_request",
    );
    assert_eq!(usage(&server, &alice).await.used, 0);
    assert_eq!(usage(&server, &alice).await.max_blob, 10 * PART);

    let size = PART + 100;
    let blob = created(&server, &alice, size, 1).await;
    let blob_id = id(&blob);
    let put_ = |index, len: u64| {
        put(
            &server,
            alice.token(),
            &blob_id,
            index,
            random(usize::try_from(len).unwrap()),
        )
    };
    // A full part one byte short or long, the last part at full size, nothing, an index past
    // the last part (and a huge one).
    for (index, len) in [
        (0, PART - 1),
        (0, PART + 1),
        (1, PART),
        (1, 99),
        (1, 101),
        (0, 0),
    ] {
        let (status, body) = put_(index, len).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::BAD_REQUEST, "bad_request"),
            "part {index} of {len} bytes: {body}"
        );
        assert!(
            body["message"].as_str().unwrap().contains("exactly"),
            "{body}"
        );
    }
    // (An empty body, too: a part past the end would have no bytes.)
    for (index, len) in [(2, 0), (2, 100), (u64::MAX, 0)] {
        let (status, body) = put_(index, len).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::BAD_REQUEST, "bad_request"),
            "index {index}: {body}"
        );
    }
    // A body larger than the part without a length header (chunked) is refused too.
    let chunked = reqwest::Body::wrap_stream(futures_util::stream::iter(
        (0..3).map(|_| Ok::<_, std::io::Error>(random(usize::try_from(PART / 2).unwrap()))),
    ));
    let response = server
        .http
        .put(server.url(&format!("/v1/blobs/{}/parts/0", id(&blob))))
        .bearer_auth(&alice.token)
        .body(chunked)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    // Nothing was stored: no object, every part still missing.
    assert!(Objects::Local.list(&server).await.is_empty());
    let (_, body) = upload_status(&server, alice.token(), &id(&blob)).await;
    assert_eq!(body["missing"], serde_json::json!([0, 1]));
}

/// Over the byte quota, and past the uploads allowed at once: 507, and nothing reserved.
async fn quota_and_upload_limits_reserve_nothing(backend: Backend) {
    let server = blob_server(backend, &Objects::Local, |settings| {
        settings.quota_bytes = 1000;
        settings.max_blob_bytes = 1000;
        settings.max_incomplete = 2;
    })
    .await;
    let alice = register(&server, "alice", 1).await;
    let first = stored(&server, &alice, &random(600), 1).await;
    let (status, body) = create(&server, &alice, 401, 1).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::INSUFFICIENT_STORAGE, "quota_exceeded"),
        "{body}"
    );
    let now = usage(&server, &alice).await;
    assert_eq!(
        (now.used, now.quota),
        (600, 1000),
        "the refused blob reserved something"
    );
    // Exactly the rest fits.
    let second = created(&server, &alice, 400, 1).await;
    assert_eq!(usage(&server, &alice).await.used, 1000);
    let (status, body) = create(&server, &alice, 1, 1).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::INSUFFICIENT_STORAGE, "quota_exceeded"),
        "{body}"
    );
    // Another account's quota is its own.
    let bob = register(&server, "bob", 1).await;
    created(&server, &bob, 1000, 1).await;
    // Once a blob is gone (its recipient confirmed), its bytes are free again.
    let (status, _) = fetched(&server, bob.token(), &id(&first)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(usage(&server, &alice).await.used, 400);
    drop(second);

    // Uploads under way: two at once, the third waits for one to complete.
    let server = blob_server(backend, &Objects::Local, |settings| {
        settings.max_incomplete = 2;
    })
    .await;
    let alice = register(&server, "alice", 1).await;
    let a = created(&server, &alice, 10, 1).await;
    created(&server, &alice, 10, 1).await;
    let (status, body) = create(&server, &alice, 10, 1).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::INSUFFICIENT_STORAGE, "quota_exceeded"),
        "{body}"
    );
    assert_eq!(usage(&server, &alice).await.used, 20);
    upload_all(&server, &alice, &a, &random(10)).await;
    created(&server, &alice, 10, 1).await;
}

/// A device confirming a download twice counts once; a blob for two recipients goes only
/// when a second device confirms.
async fn one_device_counts_once(backend: Backend) {
    let server = blob_server(backend, &Objects::Local, |_| {}).await;
    let alice = register(&server, "alice", 1).await;
    let bob = register(&server, "bob", 1).await;
    let data = random(1000);
    let blob = stored(&server, &alice, &data, 2).await;
    for _ in 0..3 {
        let (status, body) = fetched(&server, bob.token(), &id(&blob)).await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    }
    let (status, _, body) = download(&server, bob.token(), &id(&blob), None).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "one device confirming three times deleted the blob"
    );
    assert!(body == data);
    assert_eq!(Objects::Local.list(&server).await.len(), 1);
}

/// Once as many devices as declared confirmed, the blob is gone: not found for everybody,
/// its objects deleted from the store, its bytes no longer counted.
async fn the_last_recipient_deletes_the_blob_and_its_objects(backend: Backend, objects: Objects) {
    let server = blob_server(backend, &objects, |_| {}).await;
    let mut alice = register(&server, "alice", 1).await;
    let bob = register(&server, "bob", 1).await;
    let alice_laptop = link_device(&server, &mut alice).await;
    let data = random(usize::try_from(2 * PART + 7).unwrap());
    let blob = stored(&server, &alice, &data, 2).await;
    let other = stored(&server, &alice, &data, 2).await;
    assert_eq!(objects.list(&server).await.len(), 6);
    let (status, _) = fetched(&server, bob.token(), &id(&blob)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = fetched(&server, bob.token(), &id(&blob)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        objects.list(&server).await.len(),
        6,
        "one device deleted the blob"
    );
    // The second device: alice's own other device.
    let (status, _) = fetched(&server, alice_laptop.token(), &id(&blob)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for device in [&alice, &bob, &alice_laptop] {
        assert_eq!(
            download_refused(&server, device.token(), &id(&blob)).await,
            not_found()
        );
        assert_eq!(
            fetched(&server, device.token(), &id(&blob)).await,
            not_found()
        );
    }
    assert_eq!(
        upload_status(&server, alice.token(), &id(&blob)).await,
        not_found()
    );
    // Its three objects are gone, and its row with its confirmations; the other blob's are not.
    let left = objects.list(&server).await;
    assert_eq!(left.len(), 3, "{left:?}");
    assert_eq!(blob_rows(&server).await, [1, 0, 0]);
    assert_eq!(usage(&server, &alice).await.used, data.len() as u64);
    let (status, _, body) = download(&server, bob.token(), &id(&other), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body == data);
    objects.clean(&server).await;
}

/// An upload left incomplete past its deadline, and a complete blob past its lifetime, are
/// deleted by the periodic sweep: rows (not found, no longer counted) and objects.
async fn expiry_deletes_rows_and_objects(backend: Backend, objects: Objects) {
    let server = blob_server(backend, &objects, |settings| {
        settings.upload_ttl = Duration::from_secs(2);
        settings.ttl = Duration::from_secs(6);
    })
    .await;
    let alice = register(&server, "alice", 1).await;
    let data = random(usize::try_from(2 * PART).unwrap());
    let incomplete = created(&server, &alice, data.len() as u64, 1).await;
    put(
        &server,
        alice.token(),
        &id(&incomplete),
        0,
        part(&data, PART, 0),
    )
    .await;
    let complete = stored(&server, &alice, &data, 1).await;
    assert_eq!(objects.list(&server).await.len(), 3);
    assert_eq!(usage(&server, &alice).await.used, 2 * data.len() as u64);

    // The upload's deadline passes: the incomplete blob and its one object go.
    eventually("the incomplete upload's deletion", || async {
        objects.list(&server).await.len() == 2
    })
    .await;
    assert_eq!(
        upload_status(&server, alice.token(), &id(&incomplete)).await,
        not_found()
    );
    let (status, _) = put(
        &server,
        alice.token(),
        &id(&incomplete),
        1,
        part(&data, PART, 1),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "an expired upload took a part"
    );
    // The complete blob is still readable, until its lifetime ends.
    let (status, _, _) = download(&server, alice.token(), &id(&complete), None).await;
    assert_eq!(status, StatusCode::OK);
    eventually("the complete blob's deletion", || async {
        objects.list(&server).await.is_empty()
    })
    .await;
    assert_eq!(
        download_refused(&server, alice.token(), &id(&complete)).await,
        not_found()
    );
    assert_eq!(usage(&server, &alice).await.used, 0);
    eventually("the rows' deletion", || async {
        blob_rows(&server).await == [0, 0, 0]
    })
    .await;
    let metrics = server
        .http
        .get(metrics_url(&server))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("nightjar_blobs_expired_total 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("nightjar_blobs_created_total 2"),
        "{metrics}"
    );
}

/// Parts of a complete blob are refused (409), and its bytes stay as they were.
async fn a_completed_blob_cannot_change(backend: Backend) {
    let server = blob_server(backend, &Objects::Local, |_| {}).await;
    let alice = register(&server, "alice", 1).await;
    let data = random(usize::try_from(PART + 5).unwrap());
    let blob = stored(&server, &alice, &data, 1).await;
    for index in [0, 1] {
        let changed: Vec<u8> = part(&data, PART, index).iter().map(|b| !b).collect();
        let (status, body) = put(&server, alice.token(), &id(&blob), index, changed).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::CONFLICT, "blob_complete"),
            "part {index}: {body}"
        );
    }
    let (status, _, body) = download(&server, alice.token(), &id(&blob), None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body == data, "a completed blob changed");
}
