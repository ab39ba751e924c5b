//! A malicious server for tests: [`Mitm`] is a real HTTP and WebSocket reverse proxy that sits
//! between real Nightjar clients and a real Nightjar server and does whatever a test's hooks
//! say — rewrite, drop, replay, reorder or inject requests, answers and pushed frames.
//!
//! Everything a client can see from a hostile operator passes through here, so the adversarial
//! suites prove their claims against the bytes a real client really receives, not against a
//! mocked API. The proxy itself makes no decisions: with no hooks it forwards faithfully.
//!
//! ```no_run
//! # async fn demo(server_base: &str) {
//! use nightjar_testkit::{Mitm, Verdict};
//! let mitm = Mitm::start(server_base).await;
//! // Lose every acknowledgement on the way back: the server deleted the envelopes, the client
//! // is told the network failed.
//! mitm.on_response(|request, _response| {
//!     if request.path.starts_with("/v1/messages/ack") { Verdict::Drop } else { Verdict::Forward }
//! });
//! // ...point a client at `mitm.base`...
//! # }
//! ```

use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Body;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message as AxMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{Request as AxRequest, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response as AxResponse};
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message as TgMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

/// Largest body the proxy reads; bigger ones are cut off with 413, as a server would.
const MAX_BODY: usize = 16 * 1024 * 1024;
/// Headers that describe one hop, never forwarded.
const HOP_HEADERS: &[&str] = &[
    "host",
    "connection",
    "content-length",
    "transfer-encoding",
    "keep-alive",
    "upgrade",
    "proxy-connection",
];

/// An HTTP request as the proxy forwards it.
#[derive(Clone, Debug, Default)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path and query, e.g. `/v1/messages?after=0&limit=200`.
    pub path: String,
    /// Headers (names lower-case), hop-by-hop ones removed.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// An HTTP answer as the proxy returns it.
#[derive(Clone, Debug, Default)]
pub struct Response {
    /// Status code; 0 in [`Mitm::recorded`] when the answer was dropped.
    pub status: u16,
    /// Headers (names lower-case), hop-by-hop ones removed.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

macro_rules! json_body {
    ($t:ty) => {
        impl $t {
            /// The body as JSON, if it is JSON.
            pub fn json(&self) -> Option<serde_json::Value> {
                serde_json::from_slice(&self.body).ok()
            }

            /// Replaces the body with `value`.
            pub fn set_json(&mut self, value: &serde_json::Value) {
                self.body = value.to_string().into_bytes();
                self.set_header("content-type", "application/json");
            }

            /// The first header called `name` (lower-case).
            pub fn header(&self, name: &str) -> Option<&str> {
                self.headers
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.as_str())
            }

            /// Sets header `name` (lower-case), replacing any value it had.
            pub fn set_header(&mut self, name: &str, value: &str) {
                self.headers.retain(|(n, _)| n != name);
                self.headers.push((name.to_owned(), value.to_owned()));
            }
        }
    };
}
json_body!(Request);
json_body!(Response);

impl Response {
    /// A JSON answer with `status`.
    pub fn json_answer(status: u16, value: &serde_json::Value) -> Self {
        let mut response = Self {
            status,
            ..Self::default()
        };
        response.set_json(value);
        response
    }
}

/// What to do with a request or an answer.
#[derive(Clone, Debug)]
pub enum Verdict {
    /// Pass it on (with the hook's edits).
    Forward,
    /// Answer this instead (for a request: the server never sees it).
    Respond(Response),
    /// Break the connection without an answer, as a network failure would. On a request the
    /// server never sees it; on an answer the server has acted and the client never learns it.
    Drop,
}

/// What to do with a text frame the server pushes on the WebSocket.
#[derive(Clone, Debug)]
pub enum FrameVerdict {
    /// Pass it on (with the hook's edits).
    Forward,
    /// Swallow it.
    Drop,
    /// Pass it on, then send these frames too (replays, forgeries).
    ForwardThen(Vec<String>),
}

type RequestHook = Arc<dyn Fn(&mut Request) -> Verdict + Send + Sync>;
type ResponseHook = Arc<dyn Fn(&Request, &mut Response) -> Verdict + Send + Sync>;
type FrameHook = Arc<dyn Fn(&mut String) -> FrameVerdict + Send + Sync>;

#[derive(Default)]
struct Hooks {
    request: Option<RequestHook>,
    response: Option<ResponseHook>,
    frame: Option<FrameHook>,
}

/// One request and the answer the client got.
#[derive(Clone, Debug)]
pub struct Exchange {
    /// What reached the server (or would have).
    pub request: Request,
    /// What the client got.
    pub response: Response,
}

struct Shared {
    upstream: String,
    http: reqwest::Client,
    hooks: Mutex<Hooks>,
    log: Mutex<Vec<Exchange>>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The proxy. Dropping it stops it.
pub struct Mitm {
    /// The proxy's base URL (`http://127.0.0.1:PORT`): give this to clients as the server.
    pub base: String,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for Mitm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mitm")
            .field("base", &self.base)
            .field("upstream", &self.shared.upstream)
            .finish()
    }
}

impl Drop for Mitm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Mitm {
    /// Starts a proxy on 127.0.0.1 (a free port) in front of the server at `upstream`
    /// (`http://host:port`).
    ///
    /// # Panics
    /// If no local port can be bound: this is test support.
    #[allow(clippy::expect_used)]
    pub async fn start(upstream: &str) -> Self {
        // Idempotent; another test may have installed it first.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("an HTTP client"),
            hooks: Mutex::new(Hooks::default()),
            log: Mutex::new(Vec::new()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a local port");
        let base = format!("http://{}", listener.local_addr().expect("bound address"));
        let app = Router::new().fallback(proxy).with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { base, shared, task }
    }

    /// The server behind the proxy.
    pub fn upstream(&self) -> &str {
        &self.shared.upstream
    }

    /// Sees (and may edit or refuse) every HTTP request before it goes to the server.
    pub fn on_request(&self, hook: impl Fn(&mut Request) -> Verdict + Send + Sync + 'static) {
        locked(&self.shared.hooks).request = Some(Arc::new(hook));
    }

    /// Sees (and may edit or replace) every HTTP answer before it goes back to the client.
    pub fn on_response(
        &self,
        hook: impl Fn(&Request, &mut Response) -> Verdict + Send + Sync + 'static,
    ) {
        locked(&self.shared.hooks).response = Some(Arc::new(hook));
    }

    /// Sees (and may edit, drop or add to) every text frame the server pushes on a WebSocket.
    pub fn on_server_frame(
        &self,
        hook: impl Fn(&mut String) -> FrameVerdict + Send + Sync + 'static,
    ) {
        locked(&self.shared.hooks).frame = Some(Arc::new(hook));
    }

    /// Removes every hook: the proxy forwards faithfully again.
    pub fn clear(&self) {
        *locked(&self.shared.hooks) = Hooks::default();
    }

    /// Every HTTP exchange so far, oldest first.
    pub fn recorded(&self) -> Vec<Exchange> {
        locked(&self.shared.log).clone()
    }

    /// Forgets the recorded exchanges.
    pub fn forget(&self) {
        locked(&self.shared.log).clear();
    }
}

async fn proxy(
    State(shared): State<Arc<Shared>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    request: AxRequest,
) -> AxResponse {
    match upgrade {
        Ok(upgrade) => websocket(shared, upgrade, request).await,
        Err(_) => http(shared, request).await,
    }
}

fn headers_of(map: &axum::http::HeaderMap) -> Vec<(String, String)> {
    map.iter()
        .filter(|(name, _)| !HOP_HEADERS.contains(&name.as_str()))
        .filter_map(|(name, value)| {
            value
                .to_str()
                .ok()
                .map(|v| (name.as_str().to_owned(), v.to_owned()))
        })
        .collect()
}

fn answer(response: &Response) -> AxResponse {
    let mut out = (
        StatusCode::from_u16(response.status).unwrap_or(StatusCode::BAD_GATEWAY),
        response.body.clone(),
    )
        .into_response();
    for (name, value) in &response.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            out.headers_mut().insert(name, value);
        }
    }
    out
}

/// An answer that breaks off: the headers promise a body that never comes, so the client sees
/// a failed connection rather than a status code.
fn broken() -> AxResponse {
    let body = Body::from_stream(futures_util::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other("dropped by the proxy"))
    }));
    let mut response = AxResponse::new(body);
    response
        .headers_mut()
        .insert("content-length", HeaderValue::from_static("1024"));
    response
}

async fn http(shared: Arc<Shared>, request: AxRequest) -> AxResponse {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let mut forwarded = Request {
        method: parts.method.as_str().to_owned(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned()),
        headers: headers_of(&parts.headers),
        body: body.to_vec(),
    };
    let (request_hook, response_hook) = {
        let hooks = locked(&shared.hooks);
        (hooks.request.clone(), hooks.response.clone())
    };
    let early = request_hook.map_or(Verdict::Forward, |hook| hook(&mut forwarded));
    let mut response = match early {
        Verdict::Forward => match send_upstream(&shared, &forwarded).await {
            Some(response) => response,
            None => return record(&shared, forwarded, None),
        },
        Verdict::Respond(response) => return record(&shared, forwarded, Some(response)),
        Verdict::Drop => return record(&shared, forwarded, None),
    };
    match response_hook.map_or(Verdict::Forward, |hook| hook(&forwarded, &mut response)) {
        Verdict::Forward => record(&shared, forwarded, Some(response)),
        Verdict::Respond(other) => record(&shared, forwarded, Some(other)),
        Verdict::Drop => record(&shared, forwarded, None),
    }
}

fn record(shared: &Shared, request: Request, response: Option<Response>) -> AxResponse {
    let out = response.as_ref().map_or_else(broken, answer);
    locked(&shared.log).push(Exchange {
        request,
        response: response.unwrap_or_default(),
    });
    out
}

async fn send_upstream(shared: &Shared, request: &Request) -> Option<Response> {
    let method = reqwest::Method::from_bytes(request.method.as_bytes()).ok()?;
    let mut outgoing = shared
        .http
        .request(method, format!("{}{}", shared.upstream, request.path))
        .body(request.body.clone());
    for (name, value) in &request.headers {
        outgoing = outgoing.header(name.as_str(), value.as_str());
    }
    let answer = outgoing.send().await.ok()?;
    let status = answer.status().as_u16();
    let headers = headers_of(answer.headers());
    let body = answer.bytes().await.ok()?.to_vec();
    Some(Response {
        status,
        headers,
        body,
    })
}

async fn websocket(
    shared: Arc<Shared>,
    upgrade: WebSocketUpgrade,
    request: AxRequest,
) -> AxResponse {
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let url = format!(
        "{}{path}",
        shared
            .upstream
            .replacen("https://", "wss://", 1)
            .replacen("http://", "ws://", 1)
    );
    let Ok(mut outgoing) = url.into_client_request() else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    for (name, value) in request.headers() {
        let name_text = name.as_str();
        if name_text == "authorization" || name_text == "sec-websocket-protocol" {
            outgoing.headers_mut().insert(name.clone(), value.clone());
        }
    }
    let upstream = match tokio_tungstenite::connect_async(outgoing).await {
        Ok((socket, _)) => socket,
        Err(tokio_tungstenite::tungstenite::Error::Http(refused)) => {
            let status = refused.status().as_u16();
            let body = refused.body().clone().unwrap_or_default();
            return answer(&Response {
                status,
                headers: vec![("content-type".into(), "application/json".into())],
                body,
            });
        }
        Err(_) => return StatusCode::BAD_GATEWAY.into_response(),
    };
    upgrade.on_upgrade(move |client| relay(shared, client, upstream))
}

type Upstream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn to_client(message: TgMessage) -> Option<AxMessage> {
    Some(match message {
        TgMessage::Text(t) => AxMessage::Text(t.as_str().into()),
        TgMessage::Binary(b) => AxMessage::Binary(b),
        TgMessage::Ping(b) => AxMessage::Ping(b),
        TgMessage::Pong(b) => AxMessage::Pong(b),
        TgMessage::Close(frame) => AxMessage::Close(frame.map(|f| axum::extract::ws::CloseFrame {
            code: f.code.into(),
            reason: f.reason.as_str().into(),
        })),
        TgMessage::Frame(_) => return None,
    })
}

fn to_server(message: AxMessage) -> TgMessage {
    match message {
        AxMessage::Text(t) => TgMessage::Text(t.as_str().into()),
        AxMessage::Binary(b) => TgMessage::Binary(b),
        AxMessage::Ping(b) => TgMessage::Ping(b),
        AxMessage::Pong(b) => TgMessage::Pong(b),
        AxMessage::Close(frame) => {
            TgMessage::Close(
                frame.map(|f| tokio_tungstenite::tungstenite::protocol::CloseFrame {
                    code: f.code.into(),
                    reason: f.reason.as_str().into(),
                }),
            )
        }
    }
}

/// Copies frames both ways until either side ends, passing server text frames through the hook.
async fn relay(shared: Arc<Shared>, client: WebSocket, upstream: Upstream) {
    let (mut client_tx, mut client_rx) = client.split();
    let (mut upstream_tx, mut upstream_rx) = upstream.split();
    let down = async {
        while let Some(Ok(message)) = upstream_rx.next().await {
            let frames = match message {
                TgMessage::Text(text) => {
                    let mut text = text.as_str().to_owned();
                    let hook = locked(&shared.hooks).frame.clone();
                    match hook.map_or(FrameVerdict::Forward, |hook| hook(&mut text)) {
                        FrameVerdict::Forward => vec![text],
                        FrameVerdict::Drop => Vec::new(),
                        FrameVerdict::ForwardThen(more) => {
                            std::iter::once(text).chain(more).collect()
                        }
                    }
                    .into_iter()
                    .map(|t| AxMessage::Text(t.into()))
                    .collect()
                }
                other => to_client(other).into_iter().collect::<Vec<_>>(),
            };
            for frame in frames {
                if client_tx.send(frame).await.is_err() {
                    return;
                }
            }
        }
        let _ = client_tx.close().await;
    };
    let up = async {
        while let Some(Ok(message)) = client_rx.next().await {
            if upstream_tx.send(to_server(message)).await.is_err() {
                return;
            }
        }
        let _ = upstream_tx.close().await;
    };
    tokio::select! {
        () = down => {},
        () = up => {},
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use axum::routing::{get, post};

    /// A small upstream: `POST /echo` answers its body, `GET /v1/stream` pushes two frames and
    /// echoes what it receives.
    async fn upstream() -> String {
        let app = Router::new()
            .route("/echo", post(|body: Bytes| async move { body }))
            .route(
                "/v1/stream",
                get(|ws: WebSocketUpgrade| async move {
                    ws.on_upgrade(|mut socket| async move {
                        let _ = socket.send(AxMessage::Text("one".into())).await;
                        let _ = socket.send(AxMessage::Text("two".into())).await;
                        while let Some(Ok(AxMessage::Text(t))) = socket.recv().await {
                            let _ = socket
                                .send(AxMessage::Text(format!("echo {t}").into()))
                                .await;
                        }
                    })
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        base
    }

    #[tokio::test]
    async fn forwards_rewrites_answers_and_drops() {
        let mitm = Mitm::start(&upstream().await).await;
        let http = reqwest::Client::new();
        let echo = |body: &'static str| http.post(format!("{}/echo", mitm.base)).body(body).send();
        assert_eq!(echo("plain").await.unwrap().text().await.unwrap(), "plain");

        mitm.on_request(|r| {
            r.body = b"rewritten".to_vec();
            Verdict::Forward
        });
        assert_eq!(echo("x").await.unwrap().text().await.unwrap(), "rewritten");

        mitm.on_response(|_, r| {
            r.status = 409;
            Verdict::Forward
        });
        assert_eq!(echo("x").await.unwrap().status(), 409);

        mitm.clear();
        mitm.on_request(|_| {
            Verdict::Respond(Response::json_answer(
                200,
                &serde_json::json!({"forged": true}),
            ))
        });
        let forged: serde_json::Value =
            serde_json::from_str(&echo("x").await.unwrap().text().await.unwrap()).unwrap();
        assert_eq!(forged["forged"], true);

        // A dropped answer is a transport failure, not a status code.
        mitm.clear();
        mitm.on_response(|_, _| Verdict::Drop);
        let dropped = match echo("x").await {
            Err(_) => true,
            Ok(r) => r.bytes().await.is_err(),
        };
        assert!(dropped);

        let log = mitm.recorded();
        assert_eq!(log.len(), 5);
        assert_eq!(log[0].request.body, b"plain");
        assert_eq!(log[1].request.body, b"rewritten");
        assert_eq!(log[4].response.status, 0);
    }

    #[tokio::test]
    async fn websocket_frames_can_be_dropped_edited_and_replayed() {
        let mitm = Mitm::start(&upstream().await).await;
        mitm.on_server_frame(|text| match text.as_str() {
            "one" => FrameVerdict::Drop,
            "two" => {
                *text = "TWO".into();
                FrameVerdict::ForwardThen(vec!["TWO again".into()])
            }
            _ => FrameVerdict::Forward,
        });
        let url = mitm.base.replacen("http://", "ws://", 1) + "/v1/stream";
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let mut next = async || match ws.next().await.unwrap().unwrap() {
            TgMessage::Text(t) => t.as_str().to_owned(),
            other => panic!("{other:?}"),
        };
        assert_eq!(next().await, "TWO");
        assert_eq!(next().await, "TWO again");
        ws.send(TgMessage::Text("hi".into())).await.unwrap();
        let mut next = async || match ws.next().await.unwrap().unwrap() {
            TgMessage::Text(t) => t.as_str().to_owned(),
            other => panic!("{other:?}"),
        };
        assert_eq!(next().await, "echo hi");
    }
}
