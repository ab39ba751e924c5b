//! Shared helpers for the end-to-end tests: a server on 127.0.0.1:0 with a temporary data
//! directory, real OPAQUE client flows, real `nightjar_core::Engine` devices, HTTP and
//! WebSocket clients.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    dead_code,
    unreachable_pub,
    missing_docs
)]

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use nightjar_api::opaque::Suite as OpaqueSuite;
use nightjar_api::*;
use nightjar_core::content::{Content, Message, MessageId};
use nightjar_core::provisioning::LinkOffer;
use nightjar_core::storage::MemoryStore;
use nightjar_core::{Engine, EngineConfig, Incoming, Suite, UpdatePolicy};
use nightjar_server::{Limits, RunningServer, ServerConfig};
use opaque_ke::{
    ClientLogin, ClientLoginFinishParameters, ClientRegistration,
    ClientRegistrationFinishParameters, CredentialResponse, Identifiers, RegistrationResponse,
};
use rand_core::OsRng;
use reqwest::StatusCode;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::protocol::Message as WsMessage;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub const NOW: u64 = 1_800_000_000_000;
pub const PASSWORD: &[u8] = b"correct horse battery staple";

/// Argon2id with small parameters: the tests run many OPAQUE flows. Production clients use
/// the suite's default (Argon2id, m = 19 MiB, t = 2, p = 1).
pub fn test_ksf() -> argon2::Argon2<'static> {
    argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon2::Params::new(1024, 1, 1, None).unwrap(),
    )
}

pub fn engine_config() -> EngineConfig {
    EngineConfig {
        suite: Suite::Classic,
        update_policy: UpdatePolicy {
            max_received: 1_000,
            max_age_ms: u64::MAX,
        },
        ..EngineConfig::default()
    }
}

/// Limits loose enough for tests that register and log in many times.
pub fn test_limits() -> Limits {
    Limits {
        login_attempts_per_ip: 10_000,
        login_attempts_per_account: 1_000,
        device_request_burst: 10_000,
        device_requests_per_second: 10_000.0,
        ..Limits::default()
    }
}

/// The database a test server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite in the server's temporary data directory.
    Sqlite,
    /// A fresh schema in the PostgreSQL database named by `NIGHTJAR_TEST_POSTGRES_URL`.
    Postgres,
}

/// The variable naming the NATS server tests may use, e.g. `nats://127.0.0.1:4222`.
pub const NATS_ENV: &str = "NIGHTJAR_TEST_NATS_URL";

/// The value of `var` if set and not empty; otherwise says (past the harness's output capture)
/// that `test` was skipped and why.
pub fn configured(var: &str, test: &str) -> Option<String> {
    let value = std::env::var(var).ok().filter(|v| !v.is_empty());
    if value.is_none() {
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "{test}: skipped: {var} not set");
    }
    value
}

/// Runs each named `async fn(Backend)` as two tests, `<name>::sqlite` and `<name>::postgres`;
/// the second says it was skipped unless `NIGHTJAR_TEST_POSTGRES_URL` is set. Tests run on
/// tokio's current-thread runtime unless listed after `multi_thread:`.
#[allow(unused_macros)]
macro_rules! backend_tests {
    (multi_thread: $($name:ident),* $(,)?) => {
        $(backend_tests!(@one $name, tokio::test(flavor = "multi_thread", worker_threads = 2));)*
    };
    (@one $name:ident, $attr:meta) => {
        mod $name {
            #[$attr]
            async fn sqlite() {
                super::$name(crate::common::Backend::Sqlite).await;
            }

            #[$attr]
            async fn postgres() {
                let test = concat!(stringify!($name), "::postgres");
                if crate::common::configured(crate::common::POSTGRES_ENV, test).is_some() {
                    super::$name(crate::common::Backend::Postgres).await;
                }
            }
        }
    };
    ($($name:ident),* $(,)?) => {
        $(backend_tests!(@one $name, tokio::test);)*
    };
}
#[allow(unused_imports)]
pub(crate) use backend_tests;

pub struct TestServer {
    pub server: Option<RunningServer>,
    pub dir: tempfile::TempDir,
    pub base: String,
    pub http: reqwest::Client,
    pub limits: Limits,
    /// The PostgreSQL schema the server runs in, if it runs on PostgreSQL.
    pub schema: Option<Schema>,
    /// Changes to the configuration (beyond limits), applied again on restart.
    pub configure: Configure,
}

/// A change to a test server's configuration.
pub type Configure = Arc<dyn Fn(&mut ServerConfig) + Send + Sync>;

impl TestServer {
    pub async fn start(backend: Backend) -> Self {
        Self::with_limits(backend, test_limits()).await
    }

    pub async fn with_limits(backend: Backend, limits: Limits) -> Self {
        Self::with_config(backend, limits, |_| {}).await
    }

    /// A server whose configuration `configure` changes after the test defaults are set.
    pub async fn with_config(
        backend: Backend,
        limits: Limits,
        configure: impl Fn(&mut ServerConfig) + Send + Sync + 'static,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let schema = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(schema().await),
        };
        let url = schema.as_ref().map(|s| s.url.clone());
        let configure: Configure = Arc::new(configure);
        let (server, base) = boot(dir.path(), url, limits.clone(), &*configure).await;
        Self {
            server: Some(server),
            dir,
            base,
            http: http_client(),
            limits,
            schema,
            configure,
        }
    }

    /// A client of a server running elsewhere (another process) at `base`.
    pub fn at(base: String) -> Self {
        Self {
            server: None,
            dir: tempfile::tempdir().unwrap(),
            base,
            http: http_client(),
            limits: test_limits(),
            schema: None,
            configure: Arc::new(|_| {}),
        }
    }

    /// Stops the server and starts a new one on the same database.
    pub async fn restart(&mut self) {
        self.server.take().unwrap().shutdown().await.unwrap();
        let url = self.schema.as_ref().map(|s| s.url.clone());
        let (server, base) =
            boot(self.dir.path(), url, self.limits.clone(), &*self.configure).await;
        self.server = Some(server);
        self.base = base;
    }

    pub async fn stop(&mut self) {
        self.server.take().unwrap().shutdown().await.unwrap();
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<&Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let response = req.send().await.unwrap();
        let status = response.status();
        let text = response.text().await.unwrap();
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
        };
        (status, value)
    }

    pub async fn post<B: Serialize>(
        &self,
        path: &str,
        token: Option<&str>,
        body: &B,
    ) -> (StatusCode, Value) {
        let body = serde_json::to_value(body).unwrap();
        self.request(reqwest::Method::POST, path, token, Some(&body))
            .await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.request(reqwest::Method::GET, path, token, None).await
    }

    /// POST expecting 200 and a typed answer.
    pub async fn post_ok<B: Serialize, R: DeserializeOwned>(
        &self,
        path: &str,
        token: Option<&str>,
        body: &B,
    ) -> R {
        let (status, value) = self.post(path, token, body).await;
        assert_eq!(status, StatusCode::OK, "POST {path}: {value}");
        serde_json::from_value(value).unwrap()
    }

    pub async fn get_ok<R: DeserializeOwned>(&self, path: &str, token: Option<&str>) -> R {
        let (status, value) = self.get(path, token).await;
        assert_eq!(status, StatusCode::OK, "GET {path}: {value}");
        serde_json::from_value(value).unwrap()
    }

    pub async fn connect(&self, token: &str) -> Stream {
        let url = self.base.replacen("http://", "ws://", 1) + "/v1/stream";
        let mut request = url.into_client_request().unwrap();
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
        let (ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
        Stream { ws }
    }
}

async fn boot(
    dir: &std::path::Path,
    database_url: Option<String>,
    limits: Limits,
    configure: &(dyn Fn(&mut ServerConfig) + Send + Sync),
) -> (RunningServer, String) {
    let mut config = ServerConfig::new(dir, "127.0.0.1:0".parse().unwrap());
    config.database_url = database_url;
    config.limits = limits;
    config.shutdown_grace = Duration::from_secs(5);
    configure(&mut config);
    let server = nightjar_server::start(config).await.unwrap();
    let base = format!("http://{}", server.local_addr());
    (server, base)
}

/// A fresh schema per test: the same code as the store's unit tests use.
#[path = "../../src/store/test_schema.rs"]
mod test_schema;
pub use test_schema::{POSTGRES_ENV, Schema};

/// Creates a schema; panics unless `NIGHTJAR_TEST_POSTGRES_URL` is set.
pub async fn schema() -> Schema {
    Schema::create_if_configured()
        .await
        .expect("NIGHTJAR_TEST_POSTGRES_URL")
}

impl Drop for Schema {
    fn drop(&mut self) {
        self.drop_blocking();
    }
}

/// The error code of an error body.
pub fn code(body: &Value) -> &str {
    body["error"]
        .as_str()
        .unwrap_or_else(|| panic!("no error code in {body}"))
}

pub struct Stream {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Stream {
    /// The next server frame (skipping pings), or `None` if the stream closed.
    pub async fn next(&mut self) -> Option<ServerFrame> {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(10), self.ws.next())
                .await
                .expect("no frame within 10 s")?
                .ok()?;
            match message {
                WsMessage::Text(text) => return Some(serde_json::from_str(&text).unwrap()),
                WsMessage::Close(_) => return None,
                _ => {}
            }
        }
    }

    pub async fn envelope(&mut self) -> Envelope {
        match self.next().await {
            Some(ServerFrame::Envelope { envelope }) => envelope,
            other => panic!("expected an envelope, got {other:?}"),
        }
    }

    pub async fn drained(&mut self) {
        assert_eq!(self.next().await, Some(ServerFrame::Drained));
    }

    pub async fn ack(&mut self, ids: Vec<u64>) {
        let text = serde_json::to_string(&ClientFrame::Ack { ids }).unwrap();
        self.ws.send(WsMessage::Text(text.into())).await.unwrap();
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// One device: its engine (over an in-memory store) and its session.
pub struct Device {
    pub engine: Engine<Arc<MemoryStore>>,
    pub store: Arc<MemoryStore>,
    pub token: String,
}

impl Device {
    pub fn username(&self) -> String {
        self.engine.device().username.clone()
    }

    pub fn device_id(&self) -> String {
        self.engine.device().device_id.to_string()
    }

    pub fn address(&self) -> DeviceAddress {
        DeviceAddress {
            username: self.username(),
            device_id: self.device_id(),
        }
    }

    pub fn token(&self) -> Option<&str> {
        Some(&self.token)
    }
}

/// OPAQUE registration messages for `username`: `(registration_request, finish)` where
/// `finish` turns the server's response into the registration record.
pub async fn opaque_register(
    server: &TestServer,
    username: &str,
    password: &[u8],
) -> Result<B64, (StatusCode, Value)> {
    let start = ClientRegistration::<OpaqueSuite>::start(&mut OsRng, password).unwrap();
    let (status, body) = server
        .post(
            "/v1/register/start",
            None,
            &RegisterStartRequest {
                username: username.into(),
                registration_request: B64(start.message.serialize().to_vec()),
            },
        )
        .await;
    if status != StatusCode::OK {
        return Err((status, body));
    }
    let response: RegisterStartResponse = serde_json::from_value(body).unwrap();
    let ksf = test_ksf();
    let finish = start
        .state
        .finish(
            &mut OsRng,
            password,
            RegistrationResponse::deserialize(&response.registration_response.0).unwrap(),
            ClientRegistrationFinishParameters::new(Identifiers::default(), Some(&ksf)),
        )
        .unwrap();
    Ok(B64(finish.message.serialize().to_vec()))
}

/// Registers `username` with a fresh engine and `key_packages` one-time packages.
pub async fn register(server: &TestServer, username: &str, key_packages: usize) -> Device {
    let store = Arc::new(MemoryStore::new());
    let (mut engine, list) =
        Engine::create_account(store.clone(), username, engine_config(), NOW).unwrap();
    let kps = engine.generate_key_packages(key_packages, false).unwrap();
    let last = engine.generate_key_packages(1, true).unwrap().remove(0);
    let record = opaque_register(server, username, PASSWORD).await.unwrap();
    let session: SessionResponse = server
        .post_ok(
            "/v1/register/finish",
            None,
            &RegisterFinishRequest {
                username: username.into(),
                registration_record: record,
                device_id: engine.device().device_id.to_string(),
                device_list: B64(list.encode()),
                key_packages: kps.into_iter().map(B64).collect(),
                last_resort_key_package: B64(last),
            },
        )
        .await;
    assert_eq!(session.device_status, DeviceStatus::Active);
    assert_eq!(session.username, username);
    Device {
        engine,
        store,
        token: session.token,
    }
}

/// Runs an OPAQUE login; returns the raw finish answer.
pub async fn login_raw(
    server: &TestServer,
    username: &str,
    password: &[u8],
    device_id: &str,
    link_offer: Option<&LinkOffer>,
) -> (StatusCode, Value) {
    login_via(server, server, username, password, device_id, link_offer).await
}

/// Runs an OPAQUE login started on `first` and finished on `second` (two nodes), with no
/// device signature (a password alone).
pub async fn login_via(
    first: &TestServer,
    second: &TestServer,
    username: &str,
    password: &[u8],
    device_id: &str,
    link_offer: Option<&LinkOffer>,
) -> (StatusCode, Value) {
    login_signed(
        first,
        second,
        username,
        password,
        device_id,
        link_offer,
        |_, _| None,
    )
    .await
}

/// Links a second device to `first`'s account through the server and returns it, active.
pub async fn link_device(server: &TestServer, first: &mut Device) -> Device {
    let name = first.username();
    let store = Arc::new(MemoryStore::new());
    let mut engine = Engine::new_device(store.clone(), &name, engine_config()).unwrap();
    let offer = engine.link_offer(NOW).unwrap();
    let (status, body) = login_raw(
        server,
        &name,
        PASSWORD,
        &engine.device().device_id.to_string(),
        Some(&offer),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let session: SessionResponse = serde_json::from_value(body).unwrap();
    assert_eq!(session.device_status, DeviceStatus::Pending);

    let pending: PendingDevicesResponse = server.get_ok("/v1/devices/pending", first.token()).await;
    let relayed = pending
        .pending
        .iter()
        .find(|p| p.device_id == session.device_id)
        .unwrap();
    let relayed = LinkOffer::decode(&relayed.link_offer.0).unwrap();
    let (list, sealed) = first
        .engine
        .approve_link(&relayed, &engine.link_code().unwrap().display(), None)
        .unwrap();
    let (status, body) = server
        .post(
            "/v1/devices/approve",
            first.token(),
            &ApproveDeviceRequest {
                device_id: session.device_id.clone(),
                device_list: B64(list.encode()),
                sealed_identity: B64(sealed),
            },
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let link: LinkStatusResponse = server
        .get_ok("/v1/devices/link", Some(&session.token))
        .await;
    assert_eq!(link.status, DeviceStatus::Active);
    engine
        .complete_link(&link.sealed_identity.unwrap().0)
        .unwrap();
    let mut device = Device {
        engine,
        store,
        token: session.token,
    };
    upload_key_packages(server, &mut device, 3).await;
    device
}

pub async fn upload_key_packages(
    server: &TestServer,
    device: &mut Device,
    n: usize,
) -> KeyPackageCount {
    let kps = device.engine.generate_key_packages(n, false).unwrap();
    let last = device
        .engine
        .generate_key_packages(1, true)
        .unwrap()
        .remove(0);
    server
        .post_ok(
            "/v1/key-packages",
            device.token(),
            &UploadKeyPackagesRequest {
                key_packages: kps.into_iter().map(B64).collect(),
                last_resort: Some(B64(last)),
            },
        )
        .await
}

/// Every device learns the current device lists of `accounts` from the server.
pub async fn learn(server: &TestServer, device: &mut Device, accounts: &[&str]) {
    for name in accounts {
        let account: AccountResponse = server
            .get_ok(&format!("/v1/accounts/{name}"), device.token())
            .await;
        let list =
            nightjar_core::identity::SignedDeviceList::decode(&account.device_list.0).unwrap();
        device.engine.accept_device_list(name, &list).unwrap();
    }
}

pub fn text(body: &str) -> Message {
    let mut id = [0u8; 16];
    let n = body.len().min(16);
    id[..n].copy_from_slice(&body.as_bytes()[..n]);
    Message {
        id: MessageId(id),
        sent_at_ms: NOW,
        expires_after_secs: None,
        content: Content::Text { body: body.into() },
    }
}

pub fn expect_text(incoming: &Incoming, body: &str) {
    match incoming {
        Incoming::Message { message, .. } => {
            assert_eq!(message.content, Content::Text { body: body.into() });
        }
        other => panic!("expected a message, got {other:?}"),
    }
}

pub fn send_request(key: &str, kind: EnvelopeKind, epoch: u64, payload: Vec<u8>) -> SendRequest {
    SendRequest {
        idempotency_key: key.into(),
        kind,
        epoch,
        payload: B64(payload),
        welcome: None,
        members: None,
        group_info: None,
        franking_commitment: None,
    }
}

/// Sends a commit bundle with the committing device's view of the members after it.
pub async fn post_commit(
    server: &TestServer,
    device: &mut Device,
    bundle: &nightjar_core::CommitBundle,
    key: &str,
) -> (StatusCode, Value) {
    // The members after the commit are what the engine will have once it merges; the engine
    // reports them only after `commit_accepted`, so compute from the pending view.
    let members = pending_members(device, bundle);
    let mut request = send_request(
        key,
        EnvelopeKind::Commit,
        bundle.epoch,
        bundle.commit.clone(),
    );
    request.members = Some(members);
    request.group_info = bundle.group_info.clone().map(B64);
    if let Some(welcome) = &bundle.welcome {
        request.welcome = Some(WelcomeOut {
            payload: B64(welcome.clone()),
            recipients: bundle
                .welcome_recipients
                .iter()
                .map(|c| DeviceAddress {
                    username: c.username.clone(),
                    device_id: c.device_id.to_string(),
                })
                .collect(),
        });
    }
    server
        .post(
            &format!("/v1/conversations/{}/messages", bundle.conversation),
            device.token(),
            &request,
        )
        .await
}

/// Members after `bundle`: the current members plus the Welcome's recipients.
fn pending_members(
    device: &mut Device,
    bundle: &nightjar_core::CommitBundle,
) -> Vec<DeviceAddress> {
    let mut members: Vec<DeviceAddress> = device
        .engine
        .conversation(bundle.conversation)
        .map(|c| c.members)
        .unwrap_or_default()
        .into_iter()
        .chain(bundle.welcome_recipients.iter().cloned())
        .map(|c| DeviceAddress {
            username: c.username,
            device_id: c.device_id.to_string(),
        })
        .collect();
    members.push(device.address());
    members.sort();
    members.dedup();
    members
}

/// alice registered on `alice_node` and bob on `bob_node`, each knowing both accounts, and
/// a direct conversation that alice created and the server accepted at epoch 1 (bob has not
/// processed his Welcome yet).
pub async fn create_direct(
    alice_node: &TestServer,
    bob_node: &TestServer,
) -> (Device, Device, nightjar_core::ConversationId) {
    let mut alice = register(alice_node, "alice", 2).await;
    let mut bob = register(bob_node, "bob", 2).await;
    learn(alice_node, &mut alice, &["alice", "bob"]).await;
    learn(bob_node, &mut bob, &["alice", "bob"]).await;
    let kps: Vec<Vec<u8>> = claim(alice_node, &alice, "bob")
        .await
        .key_packages
        .into_iter()
        .map(|k| k.key_package.0)
        .collect();
    let (conv, bundle) = alice
        .engine
        .create_conversation(
            NOW,
            nightjar_core::ConversationKind::Direct,
            &["bob"],
            None,
            &kps,
        )
        .unwrap();
    let (status, body) = post_commit(alice_node, &mut alice, &bundle, "create").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let sent: SendResponse = serde_json::from_value(body).unwrap();
    assert_eq!(sent.epoch, 1);
    alice.engine.commit_accepted(NOW, conv).unwrap();
    (alice, bob, conv)
}

/// Registers `names`, has the first create a conversation of `kind` with the others, and has
/// every other device join it.
pub async fn conversation(
    server: &TestServer,
    names: &[&str],
    kind: nightjar_core::ConversationKind,
) -> (Vec<Device>, nightjar_core::ConversationId) {
    let mut devices = Vec::new();
    for name in names {
        devices.push(register(server, name, 2).await);
    }
    for device in devices.iter_mut() {
        learn(server, device, names).await;
    }
    let mut kps = Vec::new();
    for name in &names[1..] {
        kps.extend(
            claim(server, &devices[0], name)
                .await
                .key_packages
                .into_iter()
                .map(|k| k.key_package.0),
        );
    }
    let (conv, bundle) = devices[0]
        .engine
        .create_conversation(NOW, kind, &names[1..], None, &kps)
        .unwrap();
    let (status, body) = post_commit(server, &mut devices[0], &bundle, "create").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    devices[0].engine.commit_accepted(NOW, conv).unwrap();
    for device in devices[1..].iter_mut() {
        let got = deliver(server, device).await;
        assert!(
            matches!(got.as_slice(), [Ok(Incoming::Joined { .. })]),
            "{got:?}"
        );
    }
    (devices, conv)
}

/// Fetches, processes and acknowledges everything queued for `device`.
pub async fn deliver(
    server: &TestServer,
    device: &mut Device,
) -> Vec<Result<Incoming, nightjar_core::Error>> {
    deliver_envelopes(server, device)
        .await
        .into_iter()
        .map(|(_, processed)| processed)
        .collect()
}

/// [`deliver`], keeping each envelope beside what processing it gave (for what the server
/// put on the envelope, such as its franking stamp).
pub async fn deliver_envelopes(
    server: &TestServer,
    device: &mut Device,
) -> Vec<(Envelope, Result<Incoming, nightjar_core::Error>)> {
    let inbox: InboxResponse = server.get_ok("/v1/messages", device.token()).await;
    let ids: Vec<u64> = inbox.envelopes.iter().map(|e| e.id).collect();
    let out = inbox
        .envelopes
        .into_iter()
        .map(|e| {
            let processed = device.engine.process(NOW, &e.payload.0);
            (e, processed)
        })
        .collect();
    if !ids.is_empty() {
        let (status, body) = server
            .post("/v1/messages/ack", device.token(), &AckRequest { ids })
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    }
    out
}

/// Claims key packages of `account` as `device`, returning the raw bytes.
pub async fn claim(
    server: &TestServer,
    device: &Device,
    account: &str,
) -> ClaimKeyPackagesResponse {
    server
        .post_ok(
            &format!("/v1/accounts/{account}/key-packages/claim"),
            device.token(),
            &serde_json::json!({}),
        )
        .await
}

/// An HTTP client for the tests. When the whole workspace is built together, reqwest's features
/// unify with the client SDK's `rustls-no-provider`, so a process-wide rustls provider must exist
/// before any client is built (plain HTTP is used either way).
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

// ---------------------------------------------------------------- device authentication (h1)

/// Runs an OPAQUE login started on `first` and finished on `second`; `sign(login_id,
/// challenge)` gives the device signature to send, if any.
pub async fn login_signed(
    first: &TestServer,
    second: &TestServer,
    username: &str,
    password: &[u8],
    device_id: &str,
    link_offer: Option<&LinkOffer>,
    sign: impl FnOnce(&str, &[u8]) -> Option<Vec<u8>>,
) -> (StatusCode, Value) {
    let start = ClientLogin::<OpaqueSuite>::start(&mut OsRng, password).unwrap();
    let (status, body) = first
        .post(
            "/v1/login/start",
            None,
            &LoginStartRequest {
                username: username.into(),
                credential_request: B64(start.message.serialize().to_vec()),
            },
        )
        .await;
    if status != StatusCode::OK {
        return (status, body);
    }
    let response: LoginStartResponse = serde_json::from_value(body).unwrap();
    let ksf = test_ksf();
    let finalization = start
        .state
        .finish(
            &mut OsRng,
            password,
            CredentialResponse::deserialize(&response.credential_response.0).unwrap(),
            ClientLoginFinishParameters::new(None, Identifiers::default(), Some(&ksf)),
        )
        // A wrong password fails on the client already; send garbage to let the server decide.
        .map(|f| f.message.serialize().to_vec())
        .unwrap_or_else(|_| vec![0; 64]);
    let device_signature = sign(&response.login_id, &response.challenge.0).map(B64);
    second
        .post(
            "/v1/login/finish",
            None,
            &LoginFinishRequest {
                login_id: response.login_id,
                credential_finalization: B64(finalization),
                device_id: device_id.into(),
                link_offer: link_offer.map(|o| B64(o.encode())),
                device_signature,
            },
        )
        .await
}

/// A password login of an existing device that proves possession of its key, as a real
/// client does.
pub async fn login_existing(
    server: &TestServer,
    device: &Device,
    password: &[u8],
) -> (StatusCode, Value) {
    let engine = &device.engine;
    login_signed(
        server,
        server,
        &device.username(),
        password,
        &device.device_id(),
        None,
        |login_id, challenge| Some(engine.sign_login_proof(login_id, challenge).unwrap()),
    )
    .await
}

/// A device-key sign-in (no password): start, then finish with `sign(login_id, challenge)`.
pub async fn device_sign_in_with(
    server: &TestServer,
    username: &str,
    device_id: &str,
    sign: impl FnOnce(&str, &[u8]) -> Vec<u8>,
) -> (StatusCode, Value) {
    let (status, body) = server
        .post(
            "/v1/device-login/start",
            None,
            &DeviceLoginStartRequest {
                username: username.into(),
                device_id: device_id.into(),
            },
        )
        .await;
    if status != StatusCode::OK {
        return (status, body);
    }
    let start: DeviceLoginStartResponse = serde_json::from_value(body).unwrap();
    let signature = sign(&start.login_id, &start.challenge.0);
    server
        .post(
            "/v1/device-login/finish",
            None,
            &DeviceLoginFinishRequest {
                login_id: start.login_id,
                device_signature: B64(signature),
            },
        )
        .await
}

/// A device-key sign-in of `device` with its own key.
pub async fn device_sign_in(server: &TestServer, device: &Device) -> (StatusCode, Value) {
    let engine = &device.engine;
    device_sign_in_with(
        server,
        &device.username(),
        &device.device_id(),
        |login_id, challenge| engine.sign_login_proof(login_id, challenge).unwrap(),
    )
    .await
}

/// `GET /metrics` of a server started in this process (its own, loopback listener).
pub fn metrics_url(server: &TestServer) -> String {
    let addr = server
        .server
        .as_ref()
        .and_then(RunningServer::metrics_addr)
        .expect("the test server serves metrics");
    format!("http://{addr}/metrics")
}

/// `device`'s account accepts `peer` (`PUT /v1/consent/{peer}`): `peer`'s conversations are no
/// longer message requests for it.
pub async fn accept(server: &TestServer, device: &Device, peer: &str) {
    let body = serde_json::to_value(SetConsentRequest {
        state: ConsentState::Accepted,
    })
    .unwrap();
    let (status, body) = server
        .request(
            reqwest::Method::PUT,
            &format!("/v1/consent/{peer}"),
            device.token(),
            Some(&body),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
}
