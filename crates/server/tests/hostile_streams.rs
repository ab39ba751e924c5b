//! Hostile clients against the push stream and the operations endpoints (issue 8, findings 9
//! and 11): frames announcing more than a client may send, many streams for one device, the
//! session token in the stream's URL, authentication by the first frame, and `/metrics` on the
//! public listener.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt as _, StreamExt as _};
use nightjar_api::*;
use nightjar_core::ConversationId;
use reqwest::StatusCode;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

backend_tests!(
    a_frame_announcing_megabytes_is_refused_at_its_header,
    a_message_split_into_frames_is_refused_past_the_limit,
    a_device_holds_at_most_four_streams_and_the_oldest_is_closed,
    a_token_in_the_stream_url_no_longer_authenticates,
    the_first_frame_authenticates_a_stream_without_headers,
    a_stream_that_does_not_authenticate_in_time_is_closed,
    metrics_are_not_served_on_the_public_listener,
    metrics_are_served_on_their_own_loopback_listener,
);

/// What a client may send in one frame or one message (acks, the auth frame).
const CLIENT_LIMIT: usize = 64 * 1024;

/// A WebSocket opened by hand over TCP, so the test can write frames no library would.
struct RawStream {
    tcp: TcpStream,
}

impl RawStream {
    /// Upgrades `GET /v1/stream` with `token` in an `Authorization` header.
    async fn open(server: &TestServer, token: &str) -> RawStream {
        let addr = server.base.trim_start_matches("http://").to_owned();
        let mut tcp = TcpStream::connect(&addr).await.unwrap();
        let request = format!(
            "GET /v1/stream HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\nAuthorization: Bearer {token}\r\n\r\n"
        );
        tcp.write_all(request.as_bytes()).await.unwrap();
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            tcp.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        let head = String::from_utf8(head).unwrap();
        assert!(head.starts_with("HTTP/1.1 101"), "{head}");
        RawStream { tcp }
    }

    /// Writes a masked client frame header: `opcode`, FIN as given, and a payload length of
    /// `len` (the payload itself follows separately, all zero bytes under a zero mask).
    async fn header(&mut self, fin: bool, opcode: u8, len: u64) -> std::io::Result<()> {
        let mut header = vec![if fin { 0x80 } else { 0 } | opcode];
        if len < 126 {
            header.push(0x80 | len as u8);
        } else if len <= u64::from(u16::MAX) {
            header.push(0x80 | 126);
            header.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            header.push(0x80 | 127);
            header.extend_from_slice(&len.to_be_bytes());
        }
        header.extend_from_slice(&[0, 0, 0, 0]);
        self.tcp.write_all(&header).await
    }

    /// Writes `n` payload bytes (spaces) in 8 KiB chunks; stops at the first write error
    /// (the server hung up), returning how many bytes it wrote.
    async fn payload(&mut self, n: usize) -> usize {
        let chunk = [b' '; 8 * 1024];
        let mut written = 0;
        while written < n {
            let take = chunk.len().min(n - written);
            if self.tcp.write_all(&chunk[..take]).await.is_err() {
                break;
            }
            written += take;
        }
        written
    }

    /// Whether the server closes the connection within `wait`: reads (skipping whatever
    /// frames the server still sends) until end of stream or a reset.
    async fn closed_within(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match tokio::time::timeout_at(deadline, self.tcp.read(&mut buf)).await {
                Err(_) => return false,
                Ok(Ok(0) | Err(_)) => return true,
                Ok(Ok(_)) => {}
            }
        }
    }
}

/// The partial-frame attack of the report: a frame header announcing 11 MiB, then some of
/// its payload, then nothing. The server must hang up once the frame passes the client limit
/// (it knows at the header), not buffer up to its 16 MiB default.
async fn a_frame_announcing_megabytes_is_refused_at_its_header(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = register(&server, "alice", 0).await;

    let mut raw = RawStream::open(&server, &alice.token).await;
    raw.header(true, 0x1, 11 * 1024 * 1024).await.unwrap();
    raw.payload(CLIENT_LIMIT + 8 * 1024).await;
    assert!(
        raw.closed_within(Duration::from_secs(5)).await,
        "the server kept waiting for the rest of an 11 MiB frame"
    );

    // One byte over the limit is refused too; the limit itself is what an ack may use.
    let mut raw = RawStream::open(&server, &alice.token).await;
    raw.header(true, 0x1, CLIENT_LIMIT as u64 + 1)
        .await
        .unwrap();
    raw.payload(1024).await;
    assert!(
        raw.closed_within(Duration::from_secs(5)).await,
        "a frame one byte over the limit was accepted"
    );

    // A well-behaved stream of the same device still works.
    let mut ws = server.connect(&alice.token).await;
    ws.drained().await;
}

/// The same limit for a message spread over continuation frames, each under the limit.
async fn a_message_split_into_frames_is_refused_past_the_limit(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = register(&server, "alice", 0).await;

    let mut raw = RawStream::open(&server, &alice.token).await;
    let part = CLIENT_LIMIT / 2 + 1;
    let mut sent = 0;
    for first in [true, false, false] {
        let opcode = if first { 0x1 } else { 0x0 };
        if raw.header(false, opcode, part as u64).await.is_err() {
            break;
        }
        sent += raw.payload(part).await;
    }
    assert!(
        raw.closed_within(Duration::from_secs(5)).await,
        "the server kept buffering a fragmented message past {CLIENT_LIMIT} bytes ({sent} sent)"
    );
}

async fn send_text(
    server: &TestServer,
    device: &mut Device,
    conv: ConversationId,
    key: &str,
    body: &str,
) -> StatusCode {
    let out = device.engine.encrypt(NOW, conv, &text(body)).unwrap();
    let request = send_request(key, EnvelopeKind::Application, out.epoch, out.message);
    server
        .post(
            &format!("/v1/conversations/{conv}/messages"),
            device.token(),
            &request,
        )
        .await
        .0
}

/// The next frame of a stream within `wait`, or `Err` with the close frame (or `None` when
/// the connection ended without one).
async fn next_or_close(
    stream: &mut Stream,
    wait: Duration,
) -> Result<Option<ServerFrame>, Option<(CloseCode, String)>> {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.ws.next()).await {
            Err(_) => return Ok(None),
            Ok(None | Some(Err(_))) => return Err(None),
            Ok(Some(Ok(WsMessage::Text(text)))) => {
                return Ok(Some(serde_json::from_str(&text).unwrap()));
            }
            Ok(Some(Ok(WsMessage::Close(frame)))) => {
                return Err(frame.map(|f| (f.code, f.reason.to_string())));
            }
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// Every stream costs the server a task, buffers and a subscription: one stolen or buggy
/// device must not open thousands. The fifth stream of a device closes its oldest (a client
/// whose old connection died unnoticed is never locked out), with a close frame that says why.
async fn a_device_holds_at_most_four_streams_and_the_oldest_is_closed(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (mut alice, bob, conv) = create_direct(&server, &server).await;

    let mut streams = Vec::new();
    for _ in 0..4 {
        let mut ws = server.connect(&bob.token).await;
        assert!(matches!(ws.envelope().await.kind, EnvelopeKind::Welcome));
        ws.drained().await;
        streams.push(ws);
    }
    let mut fifth = server.connect(&bob.token).await;
    fifth.envelope().await;
    fifth.drained().await;

    match next_or_close(&mut streams[0], Duration::from_secs(5)).await {
        Err(Some((code, reason))) => {
            assert_eq!(code, CloseCode::Policy);
            assert!(reason.contains("too many streams"), "{reason}");
        }
        other => panic!("the oldest of five streams was not closed: {other:?}"),
    }
    streams.remove(0);
    streams.push(fifth);

    // The four newest still deliver.
    assert_eq!(
        send_text(&server, &mut alice, conv, "m1", "still four").await,
        StatusCode::OK
    );
    for ws in &mut streams {
        assert_eq!(ws.envelope().await.kind, EnvelopeKind::Application);
    }
    // Another device is not affected by bob's count.
    let mut ws = server.connect(&alice.token).await;
    ws.drained().await;
}

/// Secrets in URLs end up in access logs, proxies and browser history: `?token=` must not
/// open a stream any more, and says so.
async fn a_token_in_the_stream_url_no_longer_authenticates(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = register(&server, "alice", 0).await;
    let url = server.base.replacen("http://", "ws://", 1);
    match tokio_tungstenite::connect_async(format!("{url}/v1/stream?token={}", alice.token)).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 400);
            let body = String::from_utf8(response.body().clone().unwrap_or_default()).unwrap();
            assert!(body.contains("URL"), "{body}");
        }
        Ok(_) => panic!("a token in the URL opened the stream"),
        Err(other) => panic!("{other:?}"),
    }
}

async fn auth_frame(ws: &mut Stream, token: &str) {
    let text = format!(r#"{{"type":"auth","token":"{token}"}}"#);
    ws.ws.send(WsMessage::Text(text.into())).await.unwrap();
}

async fn unauthenticated(server: &TestServer) -> Stream {
    let url = server.base.replacen("http://", "ws://", 1) + "/v1/stream";
    let (ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    Stream { ws }
}

/// Browsers cannot set headers on a WebSocket: the first frame carries the token instead.
async fn the_first_frame_authenticates_a_stream_without_headers(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (mut alice, bob, conv) = create_direct(&server, &server).await;

    let mut ws = unauthenticated(&server).await;
    auth_frame(&mut ws, &bob.token).await;
    assert_eq!(ws.envelope().await.kind, EnvelopeKind::Welcome);
    ws.drained().await;
    assert_eq!(
        send_text(&server, &mut alice, conv, "m1", "hello").await,
        StatusCode::OK
    );
    let envelope = ws.envelope().await;
    ws.ack(vec![envelope.id]).await;

    // A wrong token: an `unauthorized` error frame, then the server closes.
    let mut ws = unauthenticated(&server).await;
    auth_frame(&mut ws, "not-a-token").await;
    match next_or_close(&mut ws, Duration::from_secs(5)).await {
        Ok(Some(ServerFrame::Error { error })) => assert_eq!(error.code, ErrorCode::Unauthorized),
        other => panic!("{other:?}"),
    }
    assert!(
        next_or_close(&mut ws, Duration::from_secs(5))
            .await
            .is_err(),
        "the server kept an unauthenticated stream open"
    );

    // Anything else first (an ack) is refused the same way: nothing before authentication.
    let mut ws = unauthenticated(&server).await;
    ws.ack(vec![1]).await;
    match next_or_close(&mut ws, Duration::from_secs(5)).await {
        Ok(Some(ServerFrame::Error { error })) => assert_eq!(error.code, ErrorCode::Unauthorized),
        other => panic!("{other:?}"),
    }
    assert!(
        next_or_close(&mut ws, Duration::from_secs(5))
            .await
            .is_err(),
        "the server kept an unauthenticated stream open"
    );
}

/// An upgraded connection that never authenticates holds a socket and a task: it gets a few
/// seconds, then the server closes it.
async fn a_stream_that_does_not_authenticate_in_time_is_closed(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut ws = unauthenticated(&server).await;
    match next_or_close(&mut ws, Duration::from_secs(15)).await {
        Err(Some((code, reason))) => {
            assert_eq!(code, CloseCode::Policy);
            assert!(reason.contains("authenticate"), "{reason}");
        }
        other => panic!("an unauthenticated stream stayed open: {other:?}"),
    }
}

/// `/metrics` tells anyone the traffic of the server; it moves to its own (loopback by
/// default) listener.
async fn metrics_are_not_served_on_the_public_listener(backend: Backend) {
    let server = TestServer::start(backend).await;
    let response = server
        .http
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let doc: serde_json::Value = server.get_ok("/v1/openapi.json", None).await;
    assert!(doc["paths"].get("/metrics").is_none());
}

async fn metrics_are_served_on_their_own_loopback_listener(backend: Backend) {
    let server = TestServer::start(backend).await;
    let addr = server.server.as_ref().unwrap().metrics_addr().unwrap();
    assert!(addr.ip().is_loopback(), "{addr}");
    assert_ne!(addr, server.server.as_ref().unwrap().local_addr());
    let default = nightjar_server::ServerConfig::default()
        .metrics_listen
        .unwrap();
    assert!(default.ip().is_loopback(), "{default}");
    let _ = server.get("/healthz", None).await;
    let text = server
        .http
        .get(metrics_url(&server))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains(
            r#"nightjar_http_requests_total{method="GET",route="/healthz",status="200"} 1"#
        ),
        "{text}"
    );
}
