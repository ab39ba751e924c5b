//! A typed HTTP client for the `/v1` API (JSON over reqwest with rustls).
//!
//! Plain `http://` is accepted only to loopback (the session token and every request would
//! otherwise cross the network in clear). A 429 is waited out as the server says
//! ([`crate::backoff`]) and the request sent again; idempotency keys make that safe.

use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nightjar_api::{
    AccountResponse, AckRequest, ApiError, ApproveDeviceRequest, ClaimKeyPackagesResponse,
    DeviceListUpdate, DevicesResponse, DirectoryKeysResponse, EpochResponse, EpochRoot,
    EpochsResponse, ErrorCode, InboxResponse, KeyPackageCount, LinkStatusResponse,
    LoginFinishRequest, LoginStartRequest, LoginStartResponse, PendingDevicesResponse,
    ProofResponse, RegisterFinishRequest, RegisterStartRequest, RegisterStartResponse,
    SealedKeyRequest, SealedSendRequest, SendRequest, SendResponse, SessionResponse,
    TurnCredentials, UploadKeyPackagesRequest,
};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backoff;
use crate::error::{Error, Result};

/// The TLS configuration shared by HTTP and WebSocket connections: rustls with the *ring*
/// provider and the Mozilla root certificates.
pub(crate) fn tls_config() -> Result<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Network(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The server's HTTP API.
#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
    /// Connections of their own for sealed sends, so that none of them travels on a
    /// connection that also carried the session token.
    sealed_http: reqwest::Client,
    /// For blob parts and downloads: no deadline on a whole request (a download of a large
    /// blob takes as long as it takes), only on each read; uploads set one per part.
    blob_http: reqwest::Client,
    token: Option<String>,
    /// Set when the server asked for a wait longer than a request sits through: until then,
    /// requests fail at once instead of asking again sooner than told.
    not_before: Arc<Mutex<Option<Instant>>>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api")
            .field("base", &self.base)
            .field("authenticated", &self.token.is_some())
            .finish()
    }
}

fn network(e: reqwest::Error) -> Error {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    Error::Network(text)
}

/// A rate-limit refusal that says how long to wait, in its field and in its sentence.
fn rate_limited(mut error: ApiError, wait: Duration) -> ApiError {
    let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
    error.retry_after_ms = Some(ms);
    error.message = format!(
        "{} (the server asks to wait {} s)",
        error.message,
        ms.div_ceil(1000)
    );
    error
}

/// The error body of a refusal, or one made up from the status when the body is not one.
fn api_error(status: StatusCode, bytes: &[u8]) -> ApiError {
    serde_json::from_slice::<ApiError>(bytes).unwrap_or_else(|_| {
        let code = match status {
            StatusCode::UNAUTHORIZED => ErrorCode::Unauthorized,
            StatusCode::FORBIDDEN => ErrorCode::Forbidden,
            StatusCode::NOT_FOUND => ErrorCode::NotFound,
            StatusCode::TOO_MANY_REQUESTS => ErrorCode::RateLimited,
            StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::TooLarge,
            s if s.is_client_error() => ErrorCode::BadRequest,
            _ => ErrorCode::Internal,
        };
        ApiError::new(code, format!("HTTP {status}"))
    })
}

/// Percent-encodes a path segment (usernames and ids are plain, but never trust that).
fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Whether `host` (as a URL prints it) is this machine: `localhost`, 127.0.0.0/8 or ::1.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(ip)) => ip.is_loopback(),
        Ok(IpAddr::V6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

/// Refuses URLs that are not `https://`, except `http://` to loopback.
fn check_scheme(base: &str) -> Result<()> {
    let url = reqwest::Url::parse(base)
        .map_err(|e| {
            Error::Usage(format!(
                "server URL must start with https:// (or http:// to this machine); {base} is not a URL: {e}"
            ))
        })?;
    match url.scheme() {
        "https" => Ok(()),
        "http" if url.host_str().is_some_and(is_loopback) => Ok(()),
        "http" => Err(Error::Usage(format!(
            "refusing plain http:// to {}: the session token and your requests would cross the \
             network unencrypted; use https:// (http:// is allowed only to this machine: \
             localhost, 127.0.0.0/8, ::1)",
            url.host_str().unwrap_or_default()
        ))),
        _ => Err(Error::Usage(format!(
            "server URL must start with https:// (or http:// to this machine), got {base}"
        ))),
    }
}

impl Api {
    /// A client for the server at `base`: `https://...`, or `http://` to loopback only.
    pub fn new(base: &str) -> Result<Self> {
        let base = base.trim_end_matches('/').to_owned();
        check_scheme(&base)?;
        let client = || -> Result<reqwest::Client> {
            reqwest::Client::builder()
                .use_preconfigured_tls((*tls_config()?).clone())
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(60))
                .user_agent(concat!("nightjar-client/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(network)
        };
        let http = client()?;
        let sealed_http = client()?;
        let blob_http = reqwest::Client::builder()
            .use_preconfigured_tls((*tls_config()?).clone())
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(Duration::from_secs(60))
            .user_agent(concat!("nightjar-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(network)?;
        Ok(Self {
            base,
            http,
            sealed_http,
            blob_http,
            token: None,
            not_before: Arc::new(Mutex::new(None)),
        })
    }

    /// The server's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Uses `token` as the session for later requests.
    pub fn set_token(&mut self, token: Option<String>) {
        self.token = token;
    }

    /// The session token, if any.
    pub(crate) fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T> {
        let bytes = self.call_raw(method, path, body).await?;
        let bytes = if bytes.is_empty() {
            b"null".to_vec()
        } else {
            bytes
        };
        serde_json::from_slice(&bytes).map_err(|e| Error::Protocol(format!("{path}: {e}")))
    }

    async fn call_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<Vec<u8>> {
        let response = self
            .exchange(&self.http, method, path, |request| match body {
                Some(body) => request.json(body),
                None => request,
            })
            .await?;
        Ok(response.bytes().await.map_err(network)?.to_vec())
    }

    /// Sends the request `build` makes of a bare one (with the session token), again after a
    /// short 429; returns a successful response with its body unread, or the refusal.
    async fn exchange(
        &self,
        http: &reqwest::Client,
        method: Method,
        path: &str,
        build: impl Fn(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Result<reqwest::Response> {
        let mut retries = 0;
        loop {
            if let Some(wait) = self.rate_limited_for() {
                if wait > backoff::MAX_WAIT {
                    return Err(Error::Api(rate_limited(
                        ApiError::new(ErrorCode::RateLimited, "too many requests; slow down"),
                        wait,
                    )));
                }
                tokio::time::sleep(wait).await;
            }
            let mut request = http.request(method.clone(), format!("{}{path}", self.base));
            if let Some(token) = &self.token {
                request = request.bearer_auth(token);
            }
            let response = build(request).send().await.map_err(network)?;
            let status = response.status();
            if status.is_success() {
                return Ok(response);
            }
            let retry_header = response
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .map(|v| v.to_str().unwrap_or_default().to_owned());
            let bytes = response.bytes().await.map_err(network)?.to_vec();
            let mut error = api_error(status, &bytes);
            if status == StatusCode::TOO_MANY_REQUESTS {
                let requested =
                    backoff::requested_wait(retry_header.as_deref(), error.retry_after_ms);
                if let Some(wait) = backoff::retry_after(requested, retries) {
                    retries += 1;
                    tokio::time::sleep(wait).await;
                    continue;
                }
                if let Some(wait) = requested {
                    self.wait_before_next(wait);
                    error = rate_limited(error, wait);
                }
            }
            return Err(Error::Api(error));
        }
    }

    /// How long requests must still wait, if the server asked for a long wait before.
    fn rate_limited_for(&self) -> Option<Duration> {
        let until = (*self.not_before.lock().unwrap_or_else(|p| p.into_inner()))?;
        until.checked_duration_since(Instant::now())
    }

    fn wait_before_next(&self, wait: Duration) {
        let mut until = self.not_before.lock().unwrap_or_else(|p| p.into_inner());
        *until = Instant::now().checked_add(wait);
    }

    /// `POST /v1/register/start`.
    pub async fn register_start(&self, r: &RegisterStartRequest) -> Result<RegisterStartResponse> {
        self.call(Method::POST, "/v1/register/start", Some(r)).await
    }

    /// `POST /v1/register/finish`.
    pub async fn register_finish(&self, r: &RegisterFinishRequest) -> Result<SessionResponse> {
        self.call(Method::POST, "/v1/register/finish", Some(r))
            .await
    }

    /// `POST /v1/login/start`.
    pub async fn login_start(&self, r: &LoginStartRequest) -> Result<LoginStartResponse> {
        self.call(Method::POST, "/v1/login/start", Some(r)).await
    }

    /// `POST /v1/login/finish`.
    pub async fn login_finish(&self, r: &LoginFinishRequest) -> Result<SessionResponse> {
        self.call(Method::POST, "/v1/login/finish", Some(r)).await
    }

    /// `POST /v1/device-login/start`.
    pub async fn device_login_start(
        &self,
        r: &nightjar_api::DeviceLoginStartRequest,
    ) -> Result<nightjar_api::DeviceLoginStartResponse> {
        self.call(Method::POST, "/v1/device-login/start", Some(r))
            .await
    }

    /// `POST /v1/device-login/finish`.
    pub async fn device_login_finish(
        &self,
        r: &nightjar_api::DeviceLoginFinishRequest,
    ) -> Result<SessionResponse> {
        self.call(Method::POST, "/v1/device-login/finish", Some(r))
            .await
    }

    /// `GET /v1/sessions`.
    pub async fn sessions(&self) -> Result<nightjar_api::SessionsResponse> {
        self.call(Method::GET, "/v1/sessions", None::<&()>).await
    }

    /// `POST /v1/sessions/revoke-others`.
    pub async fn revoke_other_sessions(&self) -> Result<nightjar_api::RevokeSessionsResponse> {
        self.call(Method::POST, "/v1/sessions/revoke-others", None::<&()>)
            .await
    }

    /// `GET /v1/calls/turn`: fresh short-lived credentials for the server's TURN relay, ready
    /// for a WebRTC `iceServers` entry; a server without a relay answers with the error code
    /// `not_configured`.
    pub async fn turn_credentials(&self) -> Result<TurnCredentials> {
        self.call(Method::GET, "/v1/calls/turn", None::<&()>).await
    }

    /// `GET /v1/devices`.
    pub async fn devices(&self) -> Result<DevicesResponse> {
        self.call(Method::GET, "/v1/devices", None::<&()>).await
    }

    /// `GET /v1/devices/pending`.
    pub async fn pending_devices(&self) -> Result<PendingDevicesResponse> {
        self.call(Method::GET, "/v1/devices/pending", None::<&()>)
            .await
    }

    /// `POST /v1/devices/approve`.
    pub async fn approve_device(&self, r: &ApproveDeviceRequest) -> Result<()> {
        self.call_raw(Method::POST, "/v1/devices/approve", Some(r))
            .await
            .map(drop)
    }

    /// `GET /v1/devices/link` (from a pending device).
    pub async fn link_status(&self) -> Result<LinkStatusResponse> {
        self.call(Method::GET, "/v1/devices/link", None::<&()>)
            .await
    }

    /// `DELETE /v1/devices/{device_id}` with the next device list.
    pub async fn remove_device(&self, device_id: &str, r: &DeviceListUpdate) -> Result<()> {
        self.call_raw(
            Method::DELETE,
            &format!("/v1/devices/{}", segment(device_id)),
            Some(r),
        )
        .await
        .map(drop)
    }

    /// The keys that check the server's key-transparency directory.
    pub async fn kt_keys(&self) -> Result<DirectoryKeysResponse> {
        self.call(Method::GET, "/v1/kt/keys", None::<&()>).await
    }

    /// The directory's newest signed epoch root.
    pub async fn kt_latest(&self) -> Result<EpochRoot> {
        self.call(Method::GET, "/v1/kt/epochs/latest", None::<&()>)
            .await
    }

    /// One epoch's signed root and the append-only proof from the epoch before.
    pub async fn kt_epoch(&self, epoch: u64) -> Result<EpochResponse> {
        self.call(Method::GET, &format!("/v1/kt/epochs/{epoch}"), None::<&()>)
            .await
    }

    /// The signed epochs after `after` (at most `limit`), each with its append-only proof.
    pub async fn kt_epochs(&self, after: u64, limit: u32) -> Result<EpochsResponse> {
        self.call(
            Method::GET,
            &format!("/v1/kt/epochs?after={after}&limit={limit}"),
            None::<&()>,
        )
        .await
    }

    /// This account's complete key-transparency history, with its proof.
    pub async fn kt_history(&self) -> Result<ProofResponse> {
        self.call(Method::GET, "/v1/kt/history", None::<&()>).await
    }

    /// `GET /v1/accounts/{username}`.
    pub async fn account(&self, username: &str) -> Result<AccountResponse> {
        self.call(
            Method::GET,
            &format!("/v1/accounts/{}", segment(username)),
            None::<&()>,
        )
        .await
    }

    /// `POST /v1/key-packages`.
    pub async fn upload_key_packages(
        &self,
        r: &UploadKeyPackagesRequest,
    ) -> Result<KeyPackageCount> {
        self.call(Method::POST, "/v1/key-packages", Some(r)).await
    }

    /// `GET /v1/key-packages/count`.
    pub async fn key_package_count(&self) -> Result<KeyPackageCount> {
        self.call(Method::GET, "/v1/key-packages/count", None::<&()>)
            .await
    }

    /// `POST /v1/accounts/{username}/key-packages/claim`.
    pub async fn claim_key_packages(&self, username: &str) -> Result<ClaimKeyPackagesResponse> {
        self.call(
            Method::POST,
            &format!("/v1/accounts/{}/key-packages/claim", segment(username)),
            None::<&()>,
        )
        .await
    }

    /// `POST /v1/conversations/{id}/messages`.
    pub async fn send(&self, conversation: &str, r: &SendRequest) -> Result<SendResponse> {
        self.call(
            Method::POST,
            &format!("/v1/conversations/{}/messages", segment(conversation)),
            Some(r),
        )
        .await
    }

    /// `POST /v1/conversations/{id}/sealed`: without the session token, on connections that
    /// never carry it.
    pub async fn sealed_send(
        &self,
        conversation: &str,
        r: &SealedSendRequest,
    ) -> Result<SendResponse> {
        let anonymous = Self {
            http: self.sealed_http.clone(),
            token: None,
            ..self.clone()
        };
        anonymous
            .call(
                Method::POST,
                &format!("/v1/conversations/{}/sealed", segment(conversation)),
                Some(r),
            )
            .await
    }

    /// `PUT /v1/conversations/{id}/sealed-key`.
    pub async fn register_sealed_key(
        &self,
        conversation: &str,
        r: &SealedKeyRequest,
    ) -> Result<()> {
        self.call_raw(
            Method::PUT,
            &format!("/v1/conversations/{}/sealed-key", segment(conversation)),
            Some(r),
        )
        .await
        .map(|_| ())
    }

    /// `GET /v1/messages?after=ID&limit=N`.
    pub async fn inbox(&self, after: u64, limit: u32) -> Result<InboxResponse> {
        self.call(
            Method::GET,
            &format!("/v1/messages?after={after}&limit={limit}"),
            None::<&()>,
        )
        .await
    }

    /// `POST /v1/messages/ack`.
    pub async fn ack(&self, ids: Vec<u64>) -> Result<()> {
        self.call_raw(Method::POST, "/v1/messages/ack", Some(&AckRequest { ids }))
            .await
            .map(drop)
    }

    /// The WebSocket URL of `/v1/stream`.
    pub(crate) fn stream_url(&self) -> String {
        let rest = self
            .base
            .strip_prefix("https://")
            .map(|r| format!("wss://{r}"))
            .or_else(|| {
                self.base
                    .strip_prefix("http://")
                    .map(|r| format!("ws://{r}"))
            })
            .unwrap_or_else(|| self.base.clone());
        format!("{rest}/v1/stream")
    }
}

mod blobs;
mod consent;

pub use blobs::BlobDownload;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_refused_except_to_loopback() {
        for url in [
            "http://127.0.0.1:8080",
            "http://127.1.2.3",
            "http://localhost:8080/",
            "http://LOCALHOST",
            "http://[::1]:8080",
            "http://[::ffff:127.0.0.1]:80",
            "https://chat.example.org",
            "https://203.0.113.7:8443",
        ] {
            assert!(Api::new(url).is_ok(), "{url} refused");
        }
        for url in [
            "http://chat.example.org",
            "http://203.0.113.7:8080",
            "http://10.0.0.1",
            "http://[2001:db8::1]:8080",
            "http://localhost.example.org",
            "http://127.0.0.1.example.org",
            "ftp://127.0.0.1",
            "127.0.0.1:8080",
        ] {
            match Api::new(url) {
                Err(Error::Usage(message)) => {
                    assert!(message.contains("https://"), "{url}: {message}")
                }
                other => panic!("{url} accepted: {other:?}"),
            }
        }
    }
}
