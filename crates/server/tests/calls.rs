//! Calls, end to end.
//!
//! TURN credentials: `GET /v1/calls/turn` hands an authenticated device coturn
//! `use-auth-secret` credentials that name nobody and check out against the shared secret; a
//! server without a relay says so with a typed error; and, when a coturn is running
//! (`NIGHTJAR_TEST_TURN_URL` and `NIGHTJAR_TEST_TURN_SECRET_FILE`, set by scripts/coturn.sh),
//! the credentials open a real relay allocation through coturn's own `turnutils_uclient`,
//! while a wrong or expired one is refused.
//!
//! Group calls on the server's SFU: `POST /v1/calls/{conversation}/sfu` admits member devices
//! only (native WebRTC clients from `nightjar_sfu::test_client` connect over loopback UDP),
//! refuses strangers, bad offers and oversized ones without touching the SFU, cuts a member
//! off the moment a commit removes it, and the SFU only ever sees SFrame ciphertext made with
//! the members' real MLS call keys.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[allow(unused_imports)]
mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::*;
use hmac::{Hmac, Mac as _};
use nightjar_api::{SfuAnswer, SfuJoin, TurnCredentials};
use nightjar_core::{ConversationId, ConversationKind, Incoming};
use nightjar_media::{CallMedia, FrameKind, MediaError};
use nightjar_server::{ServerConfig, ServerError, SfuSettings, TurnConfig};
use nightjar_sfu::test_client::{
    Client, FrameSource, Options, VideoFrame, eventually, offerer, vp8_delta_header,
    vp8_keyframe_header,
};
use nightjar_sfu::{ParticipantId, RoomId, Sfu, SfuConfig, TappedFrame, TrackKind};
use reqwest::StatusCode;
use serde_json::Value;
use sha1::Sha1;

/// The variable naming the test relay's URL, e.g. `turn:127.0.0.1:3478`.
const TURN_URL_ENV: &str = "NIGHTJAR_TEST_TURN_URL";
/// The variable naming the file with the test relay's `static-auth-secret`.
const TURN_SECRET_ENV: &str = "NIGHTJAR_TEST_TURN_SECRET_FILE";

const URLS: [&str; 2] = [
    "turn:127.0.0.1:3478?transport=udp",
    "turn:127.0.0.1:3478?transport=tcp",
];
const SECRET: &str = "test-relay-secret-0123456789";

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// `base64(HMAC-SHA1(secret, username))`, computed here independently of the server.
fn hmac_credential(secret: &[u8], username: &str) -> String {
    let mut mac = <Hmac<Sha1>>::new_from_slice(secret).unwrap();
    mac.update(username.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// A server whose relay is `urls` with the secret in `secret_file`.
async fn server_with_turn(urls: Vec<String>, secret_file: PathBuf) -> TestServer {
    TestServer::with_config(Backend::Sqlite, test_limits(), move |config| {
        config.turn = Some(TurnConfig::new(urls.clone(), secret_file.clone()));
    })
    .await
}

fn write_secret(dir: &Path, secret: &str) -> PathBuf {
    let path = dir.join("turn-secret");
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    path
}

async fn fetch(server: &TestServer, token: &str) -> TurnCredentials {
    let response = server
        .http
        .get(server.url("/v1/calls/turn"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["cache-control"], "no-store");
    response.json().await.unwrap()
}

#[tokio::test]
async fn credentials_need_a_session() {
    let secrets = tempfile::tempdir().unwrap();
    let file = write_secret(secrets.path(), SECRET);
    let server = server_with_turn(URLS.map(String::from).to_vec(), file).await;
    let (status, body) = server.get("/v1/calls/turn", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(code(&body), "unauthorized");
    let (status, body) = server.get("/v1/calls/turn", Some("not-a-token")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(code(&body), "unauthorized");
}

#[tokio::test]
async fn without_a_relay_the_answer_is_not_configured() {
    let server = TestServer::start(Backend::Sqlite).await;
    let alice = register(&server, "alice", 1).await;
    let (status, body) = server.get("/v1/calls/turn", alice.token()).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(code(&body), "not_configured");
}

#[tokio::test]
async fn a_device_gets_fresh_credentials_that_name_nobody() {
    let secrets = tempfile::tempdir().unwrap();
    let file = write_secret(secrets.path(), SECRET);
    let server = server_with_turn(URLS.map(String::from).to_vec(), file).await;
    let alice = register(&server, "alice", 1).await;

    let before = now_secs();
    let first = fetch(&server, &alice.token).await;
    let after = now_secs();
    assert_eq!(first.urls, URLS);
    assert_eq!(first.ttl_secs, TurnConfig::DEFAULT_TTL.as_secs());
    assert!(
        (before + first.ttl_secs..=after + first.ttl_secs).contains(&first.expires_at),
        "{first:?}"
    );

    // `<expiry>:<random id>`, and nothing else: no account name, no device id.
    let (expiry, id) = first.username.split_once(':').unwrap();
    assert_eq!(expiry.parse::<u64>().unwrap(), first.expires_at);
    assert_eq!(id.len(), 22, "{}", first.username);
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "{}",
        first.username
    );
    assert!(!first.username.contains("alice"));
    assert!(!first.username.contains(&alice.device_id()));

    // The credential is coturn's: base64(HMAC-SHA1(secret, username)).
    assert_eq!(
        first.credential,
        hmac_credential(SECRET.as_bytes(), &first.username)
    );
    assert_ne!(
        first.credential,
        hmac_credential(b"another secret", &first.username)
    );

    // Every request gets a different username (and so a different credential).
    let second = fetch(&server, &alice.token).await;
    assert_ne!(second.username, first.username);
    assert_ne!(second.credential, first.credential);
    assert_eq!(
        second.credential,
        hmac_credential(SECRET.as_bytes(), &second.username)
    );
    // The credential never shows in Debug output.
    assert!(!format!("{second:?}").contains(&second.credential));
}

#[tokio::test]
async fn a_bad_relay_setting_stops_the_server_from_starting() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let cases = [
        TurnConfig::new(vec![URLS[0].into()], dir.path().join("missing")),
        TurnConfig::new(vec![URLS[0].into()], empty.clone()),
        TurnConfig::new(Vec::new(), write_secret(dir.path(), SECRET)),
        TurnConfig::new(vec!["https://relay".into()], empty),
    ];
    for turn in cases {
        let config = ServerConfig {
            turn: Some(turn.clone()),
            ..ServerConfig::new(dir.path().join("data"), "127.0.0.1:0".parse().unwrap())
        };
        match nightjar_server::start(config).await {
            Err(ServerError::Config(message)) => {
                assert!(
                    message.contains("TURN") || message.contains("turn"),
                    "{message}"
                );
                assert!(!message.contains(SECRET), "{message}");
            }
            Err(other) => panic!("{turn:?}: {other}"),
            Ok(_) => panic!("{turn:?}: started"),
        }
    }
}

/// What one `turnutils_uclient` run showed.
struct Relayed {
    succeeded: bool,
    output: String,
}

/// Runs coturn's test client against the relay at `url` with these credentials: two clients
/// each allocate a relayed address and send each other a few packets through the relay.
async fn uclient(url: &str, username: &str, credential: &str) -> Relayed {
    let rest = url.split_once(':').unwrap().1;
    let hostport = rest.split('?').next().unwrap();
    let (host, port) = hostport.rsplit_once(':').unwrap_or((hostport, "3478"));
    let mut command = std::process::Command::new("turnutils_uclient");
    command
        .args(["-v", "-y", "-c", "-n", "2"])
        .args(["-u", username, "-w", credential, "-p", port, host]);
    let output = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::task::spawn_blocking(move || command.output()),
    )
    .await
    .expect("turnutils_uclient finishes within 60 s")
    .unwrap()
    .expect("turnutils_uclient runs (it ships in Debian's coturn package)");
    Relayed {
        succeeded: output.status.success(),
        output: format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

/// The packets the clients received through the relay, from the client's closing summary
/// (`start_mclient: tot_send_msgs=4, tot_recv_msgs=4`).
fn received_through_relay(output: &str) -> u64 {
    output
        .lines()
        .filter(|line| !line.contains("msz="))
        .filter_map(|line| line.split_once("tot_recv_msgs=").map(|(_, n)| n))
        .filter_map(|n| n.trim().parse::<u64>().ok())
        .next_back()
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_open_a_relay_on_a_real_coturn() {
    let test = "credentials_open_a_relay_on_a_real_coturn";
    let (Some(url), Some(secret_file)) = (
        configured(TURN_URL_ENV, test),
        configured(TURN_SECRET_ENV, test),
    ) else {
        return;
    };
    let server = server_with_turn(vec![url.clone()], PathBuf::from(&secret_file)).await;
    let alice = register(&server, "alice", 1).await;
    let credentials = fetch(&server, &alice.token).await;

    // The server's credentials allocate relayed addresses, and packets cross the relay.
    let relayed = uclient(&url, &credentials.username, &credentials.credential).await;
    let output = &relayed.output;
    assert!(
        relayed.succeeded,
        "coturn refused the credentials:\n{output}"
    );
    assert!(output.contains("Received relay addr: "), "{output}");
    assert!(received_through_relay(output) > 0, "{output}");

    // A tampered credential and an expired one (made with the right secret) are refused:
    // coturn answers every Allocate with 401 and a fresh nonce, which the client takes as a
    // new challenge until it gives up.
    let mut tampered = credentials.credential.clone().into_bytes();
    tampered[0] = if tampered[0] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let secret = std::fs::read_to_string(&secret_file).unwrap();
    let expired = format!("{}:AAAAAAAAAAAAAAAAAAAAAA", now_secs() - 60);
    let expired_credential = hmac_credential(secret.trim().as_bytes(), &expired);
    for (what, username, credential) in [
        ("tampered", credentials.username.as_str(), tampered.as_str()),
        ("expired", expired.as_str(), expired_credential.as_str()),
    ] {
        let refused = uclient(&url, username, credential).await;
        let output = &refused.output;
        assert!(!refused.succeeded, "{what}: coturn allocated:\n{output}");
        assert!(
            output.contains("allocate response received"),
            "{what}: {output}"
        );
        assert!(
            output.contains("Cannot complete Allocation"),
            "{what}: {output}"
        );
        assert!(!output.contains("Received relay addr"), "{what}: {output}");
    }
}

// ---------------------------------------------------------------------------------------------
// Group calls on the SFU

/// How long a loopback WebRTC connection may take to come up, with margin for a busy machine.
const CONNECT: Duration = Duration::from_secs(20);

/// The server's SFU.
fn sfu(server: &TestServer) -> &Sfu {
    server.server.as_ref().unwrap().sfu().expect("the SFU runs")
}

/// The SFU room of a conversation.
fn room(conversation: ConversationId) -> RoomId {
    RoomId(conversation.0)
}

/// A device's participant id: a hash of its account and device id.
fn participant(device: &Device) -> ParticipantId {
    let id =
        nightjar_core::identity::DeviceId(u64::from_str_radix(&device.device_id(), 16).unwrap());
    ParticipantId(nightjar_core::calls::sfu_participant(
        &device.username(),
        id,
    ))
}

fn sfu_path(conversation: impl std::fmt::Display) -> String {
    format!("/v1/calls/{conversation}/sfu")
}

/// Posts `offer` as `token`'s join of `conversation`'s call.
async fn post_join(
    server: &TestServer,
    token: Option<&str>,
    conversation: impl std::fmt::Display,
    offer: String,
) -> (StatusCode, Value) {
    server
        .post(&sfu_path(conversation), token, &SfuJoin { offer })
        .await
}

/// `device` joins the call of `conversation` through the server with a fresh native client
/// publishing `frames`, and the client starts.
async fn join_call(
    server: &TestServer,
    device: &Device,
    conversation: ConversationId,
    frames: impl FrameSource,
) -> Client {
    let offerer = offerer(Options::default(), true).unwrap();
    let (status, body) =
        post_join(server, device.token(), conversation, offerer.offer.clone()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let answer: SfuAnswer = serde_json::from_value(body).unwrap();
    assert_eq!(answer.participant, participant(device).to_string());
    offerer
        .start(participant(device), &answer.answer, frames)
        .unwrap()
}

/// `device` joins with random stand-in frames.
async fn join_random(server: &TestServer, device: &Device, conversation: ConversationId) -> Client {
    let seed = participant(device).0;
    join_call(
        server,
        device,
        conversation,
        nightjar_sfu::test_client::RandomFrames::new(seed),
    )
    .await
}

async fn connected(client: &Client) -> bool {
    eventually(CONNECT, || client.state().connected).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_joins_the_group_call_and_media_flows() {
    let server = TestServer::start(Backend::Sqlite).await;
    let (devices, conv) = conversation(&server, &["alice", "bob"], ConversationKind::Group).await;
    let [alice, bob] = devices.as_slice() else {
        unreachable!()
    };
    let a = join_random(&server, alice, conv).await;
    assert!(connected(&a).await, "alice's connection did not come up");
    assert_eq!(sfu(&server).participants(room(conv)), [participant(alice)]);
    let b = join_random(&server, bob, conv).await;
    assert!(connected(&b).await, "bob's connection did not come up");
    assert_eq!(
        sfu(&server).participants(room(conv)),
        [participant(alice), participant(bob)]
    );
    // Each receives the other's frames, byte for byte as sent.
    let flowing = eventually(CONNECT, || {
        a.state().received_from(b.id, TrackKind::Video).len() >= 3
            && b.state().received_from(a.id, TrackKind::Video).len() >= 3
    })
    .await;
    assert!(flowing, "media did not flow between the two");
    let sent = a.state().sent_of(TrackKind::Video);
    for frame in b.state().received_from(a.id, TrackKind::Video) {
        assert!(sent.contains(&frame), "bob got a frame alice never sent");
    }
    assert!(a.state().problems.is_empty(), "{:?}", a.state().problems);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_again_replaces_the_devices_earlier_connection() {
    let server = TestServer::start(Backend::Sqlite).await;
    let (devices, conv) = conversation(&server, &["alice", "bob"], ConversationKind::Group).await;
    let alice = &devices[0];
    let first = join_random(&server, alice, conv).await;
    assert!(connected(&first).await);
    let second = join_random(&server, alice, conv).await;
    assert!(
        connected(&second).await,
        "the new connection did not come up"
    );
    // One participant for alice's device, on the new connection; the old one was closed.
    assert_eq!(sfu(&server).participants(room(conv)), [participant(alice)]);
    assert!(
        eventually(CONNECT, || first.state().closed).await,
        "the old connection was not closed"
    );
    assert!(!second.state().closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_bad_offers_and_missing_sessions_are_refused_and_change_nothing() {
    let server = TestServer::start(Backend::Sqlite).await;
    let (devices, conv) = conversation(&server, &["alice", "bob"], ConversationKind::Group).await;
    let alice = &devices[0];
    let eve = register(&server, "eve", 1).await;
    let offer = || offerer(Options::default(), true).unwrap().offer;
    let unchanged = |server: &TestServer| {
        let stats = sfu(server).stats();
        assert_eq!((stats.rooms, stats.participants), (0, 0));
        assert!(sfu(server).participants(room(conv)).is_empty());
    };

    // A stranger's device, with a perfectly good offer.
    let (status, body) = post_join(&server, eve.token(), conv, offer()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(code(&body), "not_a_member");
    unchanged(&server);
    // A conversation that does not exist looks the same to a stranger.
    let (status, body) = post_join(&server, eve.token(), "ab".repeat(16), offer()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(code(&body), "not_a_member");
    // No session, a made-up one.
    for token in [None, Some("not-a-token")] {
        let (status, body) = post_join(&server, token, conv, offer()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(code(&body), "unauthorized");
    }
    // A member's bad offers: garbage, SDP without the signalling channel, far too long.
    let no_channel = offerer(Options::default(), false).unwrap().offer;
    let oversized = format!("{}a=x:{}\r\n", offer(), "y".repeat(40 * 1024));
    for (what, bad, status) in [
        ("garbage", "hello".to_owned(), StatusCode::BAD_REQUEST),
        ("empty", String::new(), StatusCode::BAD_REQUEST),
        ("no data channel", no_channel, StatusCode::BAD_REQUEST),
        ("oversized", oversized, StatusCode::BAD_REQUEST),
    ] {
        let (got, body) = post_join(&server, alice.token(), conv, bad).await;
        assert_eq!(got, status, "{what}: {body}");
        assert!(!body["message"].as_str().unwrap().is_empty(), "{what}");
        unchanged(&server);
    }
    // A malformed conversation id and a malformed body.
    let (status, _) = post_join(&server, alice.token(), "not-hex", offer()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, _) = server
        .post(
            &sfu_path(conv),
            alice.token(),
            &serde_json::json!({"sdp": offer()}),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    unchanged(&server);

    // The member still joins properly afterwards.
    let a = join_random(&server, alice, conv).await;
    assert!(connected(&a).await);
    assert_eq!(sfu(&server).participants(room(conv)), [participant(alice)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_removed_by_a_commit_is_cut_off_at_once_and_cannot_rejoin() {
    let server = TestServer::start(Backend::Sqlite).await;
    let (mut devices, conv) =
        conversation(&server, &["alice", "bob", "carol"], ConversationKind::Group).await;
    let a = join_random(&server, &devices[0], conv).await;
    let c = join_random(&server, &devices[2], conv).await;
    assert!(connected(&a).await && connected(&c).await);
    let carol = participant(&devices[2]);
    assert!(
        eventually(CONNECT, || a
            .state()
            .received_from(carol, TrackKind::Audio)
            .len()
            >= 3)
        .await,
        "carol's media did not reach alice"
    );
    let mut left = sfu(&server).events();

    // alice removes carol from the group.
    let alice = &mut devices[0];
    let bundle = alice.engine.remove_member(conv, "carol").unwrap();
    let (status, body) = post_commit(&server, alice, &bundle, "remove-carol").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    alice.engine.commit_accepted(NOW, conv).unwrap();

    // Gone when the commit's answer arrives, not some time later.
    assert_eq!(
        sfu(&server).participants(room(conv)),
        [participant(&devices[0])]
    );
    let kicked = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match left.recv().await.unwrap() {
                nightjar_sfu::SfuEvent::Left {
                    participant,
                    reason,
                    ..
                } if participant == carol => break reason,
                _ => continue,
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(kicked, nightjar_sfu::LeaveReason::Kicked);
    // carol's client is told, and stops receiving.
    assert!(
        eventually(CONNECT, || c.state().bye.as_deref() == Some("kicked")
            || c.state().closed)
        .await,
        "carol's client was not told"
    );
    let got = c.state().frames_received;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(c.state().frames_received, got, "carol still receives media");

    // carol processes her removal; her device may not come back into the call.
    let carol_device = &mut devices[2];
    let got = deliver(&server, carol_device).await;
    assert!(
        matches!(got.as_slice(), [Ok(Incoming::Removed { .. })]),
        "{got:?}"
    );
    let offer = offerer(Options::default(), true).unwrap().offer;
    let (status, body) = post_join(&server, carol_device.token(), conv, offer).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(code(&body), "not_a_member");
    assert_eq!(
        sfu(&server).participants(room(conv)),
        [participant(&devices[0])]
    );
    // bob, still a member, joins.
    let b = join_random(&server, &devices[1], conv).await;
    assert!(connected(&b).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_call_is_refused_with_call_full() {
    let server = TestServer::with_config(Backend::Sqlite, test_limits(), |config| {
        config.sfu = Some(SfuSettings {
            config: SfuConfig {
                max_participants_per_room: 1,
                ..SfuConfig::default()
            },
            ..SfuSettings::default()
        });
    })
    .await;
    let (devices, conv) = conversation(&server, &["alice", "bob"], ConversationKind::Group).await;
    let _a = join_random(&server, &devices[0], conv).await;
    let offer = offerer(Options::default(), true).unwrap().offer;
    let (status, body) = post_join(&server, devices[1].token(), conv, offer).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(code(&body), "call_full");
    assert_eq!(
        sfu(&server).participants(room(conv)),
        [participant(&devices[0])]
    );
}

#[tokio::test]
async fn without_an_sfu_the_answer_is_not_configured() {
    let server = TestServer::with_config(Backend::Sqlite, test_limits(), |config| {
        config.sfu = None;
    })
    .await;
    assert!(server.server.as_ref().unwrap().sfu().is_none());
    let alice = register(&server, "alice", 1).await;
    let (status, body) = post_join(&server, alice.token(), "ab".repeat(16), "v=0".into()).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(code(&body), "not_configured");
}

/// Bytes every plaintext frame carries: they must never show at the SFU.
const MARKER: &[u8] = b"PLAINTEXT-MEDIA-MARKER-7f3c";

/// Frames made like a Nightjar client's: a plaintext holding [`MARKER`], SFrame-encrypted with
/// the member's call keys (VP8 frames keep their payload header readable).
struct SframeFrames {
    media: CallMedia,
    count: u32,
    /// Every plaintext, in order, for the test to compare.
    plaintexts: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl SframeFrames {
    fn plaintext(&mut self, clear: &[u8], len: usize) -> Vec<u8> {
        self.count += 1;
        let mut frame = clear.to_vec();
        frame.extend_from_slice(MARKER);
        frame.extend_from_slice(&self.count.to_be_bytes());
        frame.resize(len, 0x5a);
        self.plaintexts.lock().unwrap().push(frame.clone());
        frame
    }
}

impl FrameSource for SframeFrames {
    fn audio(&mut self) -> Vec<u8> {
        let frame = self.plaintext(&[], 80);
        self.media.encrypt(&frame, FrameKind::Audio).unwrap()
    }

    fn video(&mut self, keyframe: bool) -> VideoFrame {
        let (frame, kind) = if keyframe {
            (
                self.plaintext(&vp8_keyframe_header(), 300),
                FrameKind::VideoKey,
            )
        } else {
            (
                self.plaintext(&vp8_delta_header(), 150),
                FrameKind::VideoDelta,
            )
        };
        VideoFrame {
            data: self.media.encrypt(&frame, kind).unwrap(),
            keyframe,
        }
    }
}

/// The SFrame kind of a frame as a receiver tells it: audio, or VP8 by its readable P bit.
fn frame_kind(kind: TrackKind, data: &[u8]) -> FrameKind {
    match kind {
        TrackKind::Audio => FrameKind::Audio,
        TrackKind::Video if data[0] & 1 == 0 => FrameKind::VideoKey,
        TrackKind::Video => FrameKind::VideoDelta,
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sfu_only_ever_sees_sframe_ciphertext() {
    let server = TestServer::start(Backend::Sqlite).await;
    let (mut devices, conv) =
        conversation(&server, &["alice", "bob"], ConversationKind::Group).await;
    let call_id = [0x42; 16];
    let mut keys = Vec::new();
    let mut sources = Vec::new();
    for device in devices.iter_mut() {
        let k = device.engine.call_keys(conv, &call_id).unwrap();
        let mut media = CallMedia::new();
        media
            .set_epoch(k.epoch, k.leaf_index, k.base_key())
            .unwrap();
        let plaintexts = Arc::new(Mutex::new(Vec::new()));
        sources.push((
            SframeFrames {
                media,
                count: 0,
                plaintexts: plaintexts.clone(),
            },
            plaintexts,
        ));
        keys.push(k);
    }
    assert_eq!(keys[0].epoch, keys[1].epoch);
    assert_eq!(
        keys[0].base_key(),
        keys[1].base_key(),
        "one base key per call"
    );
    assert_ne!(keys[0].leaf_index, keys[1].leaf_index);

    let mut tap = sfu(&server).tap(room(conv));
    let (bob_frames, bob_plain) = sources.pop().unwrap();
    let (alice_frames, alice_plain) = sources.pop().unwrap();
    let a = join_call(&server, &devices[0], conv, alice_frames).await;
    let b = join_call(&server, &devices[1], conv, bob_frames).await;
    assert!(connected(&a).await && connected(&b).await);

    // A few dozen frames from each, audio and video.
    let mut tapped: Vec<TappedFrame> = Vec::new();
    let enough = |tapped: &[TappedFrame], who: ParticipantId| {
        let of = |kind| {
            tapped
                .iter()
                .filter(|f| f.participant == who && f.kind == kind)
                .count()
        };
        of(TrackKind::Audio) >= 20 && of(TrackKind::Video) >= 10
    };
    tokio::time::timeout(CONNECT, async {
        while !(enough(&tapped, a.id) && enough(&tapped, b.id)) {
            tapped.push(tap.recv().await.unwrap());
        }
    })
    .await
    .expect("the tap saw too few frames");
    a.publish(false);
    b.publish(false);

    // The SFU saw exactly what the devices sent, and never the plaintext.
    for frame in &tapped {
        assert!(
            !contains(&frame.data, MARKER),
            "the SFU saw plaintext: {frame:?}"
        );
        let publisher = if frame.participant == a.id { &a } else { &b };
        assert!(
            publisher.state().sent_of(frame.kind).contains(&frame.data),
            "the SFU forwards a frame that was not sent as it is"
        );
    }

    // A member holding the epoch's keys decrypts every frame to what its sender encrypted; a
    // receiver with a wrong base key refuses every one.
    let mut member = CallMedia::new();
    member
        .set_epoch(keys[1].epoch, 300, keys[1].base_key())
        .unwrap();
    let mut outsider = CallMedia::new();
    outsider.set_epoch(keys[1].epoch, 300, &[0x55; 16]).unwrap();
    for frame in &tapped {
        let kind = frame_kind(frame.kind, &frame.data);
        let plain = member
            .decrypt(&frame.data, kind)
            .unwrap_or_else(|e| panic!("a member could not decrypt {frame:?}: {e}"));
        assert!(contains(&plain, MARKER));
        let sent = if frame.participant == a.id {
            &alice_plain
        } else {
            &bob_plain
        };
        assert!(sent.lock().unwrap().contains(&plain));
        assert_eq!(
            outsider.decrypt(&frame.data, kind),
            Err(MediaError::Undecryptable),
            "a wrong key decrypted {frame:?}"
        );
    }
    assert_eq!(outsider.stats().decrypted, 0);
    assert_eq!(member.stats().failed, 0);

    // And what bob's client received from alice decrypts with bob's own keys.
    let mut bob_media = CallMedia::new();
    bob_media
        .set_epoch(keys[1].epoch, keys[1].leaf_index, keys[1].base_key())
        .unwrap();
    let received: Vec<_> = b
        .state()
        .received
        .iter()
        .filter(|f| f.from == Some(a.id))
        .map(|f| (f.kind, f.data.clone()))
        .collect();
    assert!(
        received.len() >= 10,
        "bob received {} frames",
        received.len()
    );
    for (kind, data) in received {
        assert!(!contains(&data, MARKER));
        let plain = bob_media.decrypt(&data, frame_kind(kind, &data)).unwrap();
        assert!(contains(&plain, MARKER));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_removed_through_another_node_is_cut_off_by_the_periodic_check() {
    let test = "a_member_removed_through_another_node_is_cut_off_by_the_periodic_check";
    if configured(POSTGRES_ENV, test).is_none() {
        return;
    }
    // Two nodes on one database, no NATS: the call lives on the first, the commit goes to the
    // second, which runs no SFU.
    let schema = schema().await;
    let dir = tempfile::tempdir().unwrap();
    let start = |sfu: bool| {
        let mut config = ServerConfig::new(dir.path(), "127.0.0.1:0".parse().unwrap());
        config.database_url = Some(schema.url.clone());
        config.limits = test_limits();
        if !sfu {
            config.sfu = None;
        }
        nightjar_server::start(config)
    };
    let (one, two) = (start(true).await.unwrap(), start(false).await.unwrap());
    let a = TestServer::at(format!("http://{}", one.local_addr()));
    let b = TestServer::at(format!("http://{}", two.local_addr()));
    let (mut devices, conv) =
        conversation(&a, &["alice", "bob", "carol"], ConversationKind::Group).await;
    let carol = join_random(&a, &devices[2], conv).await;
    assert!(connected(&carol).await);
    let sfu = one.sfu().unwrap();
    assert_eq!(sfu.participants(room(conv)), [carol.id]);
    // Node two has no SFU.
    let offer = offerer(Options::default(), true).unwrap().offer;
    let (status, body) = post_join(&b, devices[0].token(), conv, offer).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");

    let alice = &mut devices[0];
    let bundle = alice.engine.remove_member(conv, "carol").unwrap();
    let (status, body) = post_commit(&b, alice, &bundle, "remove-carol").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Node one learns of it from the database within its check interval.
    let gone = eventually(Duration::from_secs(15), || {
        sfu.participants(room(conv)).is_empty()
    })
    .await;
    assert!(gone, "carol is still in the call on node one");
    assert!(
        eventually(CONNECT, || carol.state().bye.as_deref() == Some("kicked")).await,
        "carol's client was not told"
    );
    one.shutdown().await.unwrap();
    two.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_whose_sessions_are_revoked_is_cut_off() {
    let server = TestServer::start(Backend::Sqlite).await;
    let mut alice = register(&server, "alice", 2).await;
    let mut phone = link_device(&server, &mut alice).await;
    let mut bob = register(&server, "bob", 2).await;
    for device in [&mut alice, &mut phone, &mut bob] {
        learn(&server, device, &["alice", "bob"]).await;
    }
    let mut kps = Vec::new();
    for name in ["alice", "bob"] {
        let claimed = claim(&server, &alice, name).await.key_packages;
        kps.extend(claimed.into_iter().map(|k| k.key_package.0));
    }
    let (conv, bundle) = alice
        .engine
        .create_conversation(NOW, ConversationKind::Group, &["bob"], None, &kps)
        .unwrap();
    let (status, body) = post_commit(&server, &mut alice, &bundle, "create").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    alice.engine.commit_accepted(NOW, conv).unwrap();
    let got = deliver(&server, &mut phone).await;
    assert!(
        matches!(got.as_slice(), [Ok(Incoming::Joined { .. })]),
        "{got:?}"
    );

    let on_phone = join_random(&server, &phone, conv).await;
    let on_laptop = join_random(&server, &alice, conv).await;
    assert!(connected(&on_phone).await && connected(&on_laptop).await);
    assert_eq!(
        sfu(&server).participants(room(conv)),
        [participant(&phone), participant(&alice)]
    );
    // The laptop ends every other session of the account: the phone leaves the call too.
    let (status, body) = server
        .post(
            "/v1/sessions/revoke-others",
            alice.token(),
            &serde_json::json!({}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        eventually(Duration::from_secs(5), || {
            sfu(&server).participants(room(conv)) == [participant(&alice)]
        })
        .await,
        "the phone is still in the call"
    );
    let told = eventually(CONNECT, || {
        on_phone.state().bye.as_deref() == Some("kicked")
    })
    .await;
    assert!(told, "the phone was not told");
    let offer = offerer(Options::default(), true).unwrap().offer;
    let (status, _) = post_join(&server, phone.token(), conv, offer).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
