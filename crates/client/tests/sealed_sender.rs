//! Sealed sender against a real server: application messages travel without the session
//! token, the server stores no sender for them, and strangers, forgers, replayers and removed
//! members are refused. Real `nightjar_client::Client`s against an in-process server; the
//! attacks are raw HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{account, start};
use std::path::{Path, PathBuf};

use ed25519_dalek::{Signer as _, SigningKey};
use nightjar_api::{B64, SealedKeyRequest, SealedSendRequest};
use nightjar_client::Client;
use nightjar_core::ConversationId;
use nightjar_core::sealed::SealedSubmission;
use nightjar_server::{RunningServer, ServerConfig};
use nightjar_testkit::Mitm;

struct World {
    _tmp: tempfile::TempDir,
    _server: RunningServer,
    url: String,
    db: PathBuf,
    /// alice reaches the server through this proxy, which records what she sends.
    mitm: Mitm,
    alice: Client,
    bob: Client,
}

/// alice and bob, who accepted each other and exchanged a message each.
async fn world() -> World {
    world_with(|_| {}).await
}

/// [`world`] on a server whose limits `limits` changes.
async fn world_with(limits: impl FnOnce(&mut nightjar_server::Limits)) -> World {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("server");
    let mut config = ServerConfig::new(&data, "127.0.0.1:0".parse().unwrap());
    limits(&mut config.limits);
    let (server, url) = start(config).await;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mitm = Mitm::start(&url).await;
    let mut alice = account(tmp.path(), &mitm.base, "alice").await;
    let mut bob = account(tmp.path(), &url, "bob").await;
    alice.send_direct("bob", "hello bob").await.unwrap();
    bob.accept("alice").await.unwrap();
    bob.sync().await.unwrap();
    bob.send_direct("alice", "hello alice").await.unwrap();
    alice.sync().await.unwrap();
    bob.sync().await.unwrap();
    alice.take_notices();
    bob.take_notices();
    World {
        _tmp: tmp,
        _server: server,
        url,
        db: data.join("nightjar.db"),
        mitm,
        alice,
        bob,
    }
}

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

fn token(c: &Client) -> String {
    c.store().meta("token").unwrap().unwrap()
}

fn texts(report: &nightjar_client::SyncReport) -> Vec<String> {
    report
        .messages
        .iter()
        .filter_map(|m| m.text.clone())
        .collect()
}

/// The one conversation of the world, and its epoch on the server.
fn conversation(db: &Path) -> (ConversationId, u64) {
    let db = rusqlite::Connection::open(db).unwrap();
    let (id, epoch): (String, i64) = db
        .query_row("SELECT id, epoch FROM conversations", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    (
        ConversationId::parse(&id).unwrap(),
        u64::try_from(epoch).unwrap(),
    )
}

/// Posts a sealed send, with no session token; the status and the error code.
async fn post_sealed(
    url: &str,
    conversation: ConversationId,
    body: &SealedSendRequest,
) -> (u16, String) {
    let response = http()
        .post(format!("{url}/v1/conversations/{conversation}/sealed"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    (
        status,
        body["error"].as_str().unwrap_or_default().to_owned(),
    )
}

/// Registers the public half of `key` for `conversation` at `epoch`, with the session `token`
/// (or none); the status.
async fn register(
    url: &str,
    token: Option<&str>,
    conversation: ConversationId,
    epoch: u64,
    key: &SigningKey,
    accept: bool,
) -> u16 {
    let mut request = http()
        .put(format!("{url}/v1/conversations/{conversation}/sealed-key"))
        .json(&SealedKeyRequest {
            epoch,
            key: B64(key.verifying_key().to_bytes().to_vec()),
            accept,
        });
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().status().as_u16()
}

/// A sealed send of `payload` signed with `key` (whose public half it names).
fn signed(
    key: &SigningKey,
    conversation: ConversationId,
    epoch: u64,
    id: &str,
    payload: &[u8],
) -> SealedSendRequest {
    let submission = SealedSubmission {
        conversation,
        epoch,
        submission_id: id,
        payload,
    };
    SealedSendRequest {
        submission_id: id.into(),
        epoch,
        payload: B64(payload.to_vec()),
        key: B64(key.verifying_key().to_bytes().to_vec()),
        signature: B64(key.sign(&submission.message()).to_bytes().to_vec()),
        franking_commitment: None,
    }
}

/// The MLS bytes of the newest application message in the server's store (an honest
/// ciphertext a hostile party replays or re-signs).
fn stored_application(db: &Path) -> Vec<u8> {
    let db = rusqlite::Connection::open(db).unwrap();
    db.query_row(
        "SELECT payload FROM messages WHERE kind = 'application' ORDER BY id DESC LIMIT 1",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_travel_sealed_and_the_server_keeps_no_sender() {
    let mut w = world().await;
    w.alice.send_direct("bob", "sealed one").await.unwrap();

    // While it waits for delivery, the server holds it with no sender.
    let db = rusqlite::Connection::open(&w.db).unwrap();
    let rows: Vec<(String, String, String)> = db
        .prepare("SELECT kind, sender_username, sender_device_id FROM messages")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let application: Vec<_> = rows.iter().filter(|r| r.0 == "application").collect();
    assert!(!application.is_empty(), "{rows:?}");
    for (_, username, device) in &application {
        assert_eq!((username.as_str(), device.as_str()), ("", ""), "{rows:?}");
    }
    // Its idempotency key is kept by conversation, not by device.
    let keyed: i64 = db
        .query_row("SELECT COUNT(*) FROM sealed_submissions", [], |r| r.get(0))
        .unwrap();
    assert!(keyed >= 3, "{keyed}");
    drop(db);

    let report = w.bob.sync().await.unwrap();
    assert_eq!(texts(&report), ["sealed one"]);
    // alice's device got its own message back (the server cannot leave out a sender it does
    // not know) and dropped it without a word; then nothing is left on the server.
    let own = w.alice.sync().await.unwrap();
    assert!(texts(&own).is_empty(), "{:?}", texts(&own));
    assert!(w.alice.take_notices().is_empty());
    // bob's read receipt came back to bob's device the same way.
    w.bob.sync().await.unwrap();
    assert!(w.bob.take_notices().is_empty());
    let db = rusqlite::Connection::open(&w.db).unwrap();
    let left: i64 = db
        .query_row("SELECT COUNT(*) FROM queue", [], |r| r.get(0))
        .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stranger_and_a_forger_change_nothing() {
    let mut w = world().await;
    let (conversation, epoch) = conversation(&w.db);
    w.alice.send_direct("bob", "honest").await.unwrap();
    let honest = stored_application(&w.db);

    // A stranger with a key of her own: the server does not know it.
    let stranger = SigningKey::from_bytes(&[5; 32]);
    let forged = signed(&stranger, conversation, epoch, "s1", &honest);
    assert_eq!(
        post_sealed(&w.url, conversation, &forged).await,
        (403, "sealed_key_unknown".into())
    );
    // She cannot register it either: she is not a member.
    let status = register(&w.url, None, conversation, epoch, &stranger, true).await;
    assert_eq!(status, 401);

    // The real public key, learnt somehow, with a signature the stranger made: refused.
    let registered: Vec<u8> = rusqlite::Connection::open(&w.db)
        .unwrap()
        .query_row(
            "SELECT public_key FROM sealed_keys WHERE epoch = ?1 LIMIT 1",
            [i64::try_from(epoch).unwrap()],
            |r| r.get(0),
        )
        .unwrap();
    let mut wrong = signed(&stranger, conversation, epoch, "s2", &honest);
    wrong.key = B64(registered.clone());
    assert_eq!(
        post_sealed(&w.url, conversation, &wrong).await,
        (403, "forbidden".into())
    );

    // Nothing of it reached bob.
    let report = w.bob.sync().await.unwrap();
    assert_eq!(texts(&report), ["honest"]);
    let notices = w.bob.take_notices();
    assert!(notices.is_empty(), "{notices:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_who_registers_a_wrong_key_cannot_keep_the_others_out() {
    let mut w = world().await;
    let (conversation, epoch) = conversation(&w.db);
    // bob (a member, with his session) registers a key nobody else derives.
    let garbage = SigningKey::from_bytes(&[6; 32]);
    let bob = token(&w.bob);
    let status = register(&w.url, Some(&bob), conversation, epoch, &garbage, false).await;
    assert_eq!(status, 204);
    // alice still sends (her own registration stands beside his).
    w.alice.send_direct("bob", "still here").await.unwrap();
    let report = w.bob.sync().await.unwrap();
    assert_eq!(texts(&report), ["still here"]);
    // A registration for an epoch the conversation is not at is refused.
    let status = register(&w.url, Some(&bob), conversation, epoch + 5, &garbage, false).await;
    assert_eq!(status, 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_sealed_send_is_stored_once() {
    let mut w = world().await;
    let (conversation, epoch) = conversation(&w.db);
    // The request alice's client makes, as whoever holds its bytes would replay it.
    w.mitm.forget();
    w.alice.send_direct("bob", "once").await.unwrap();
    let exchange = w
        .mitm
        .recorded()
        .into_iter()
        .find(|e| e.request.path.ends_with("/sealed"))
        .expect("alice sent sealed");
    // It carries no session token.
    assert!(
        exchange
            .request
            .headers
            .iter()
            .all(|(name, _)| !name.eq_ignore_ascii_case("authorization")),
        "{:?}",
        exchange.request.headers
    );
    let captured: SealedSendRequest = serde_json::from_slice(&exchange.request.body).unwrap();
    assert_eq!(captured.epoch, epoch);
    let db = rusqlite::Connection::open(&w.db).unwrap();
    let before: i64 = db
        .query_row("SELECT COUNT(*) FROM queue", [], |r| r.get(0))
        .unwrap();
    drop(db);
    for _ in 0..3 {
        let (status, _) = post_sealed(&w.url, conversation, &captured).await;
        assert_eq!(status, 200);
    }
    let db = rusqlite::Connection::open(&w.db).unwrap();
    let after: i64 = db
        .query_row("SELECT COUNT(*) FROM queue", [], |r| r.get(0))
        .unwrap();
    assert_eq!(after, before, "a replay queued something");
    let report = w.bob.sync().await.unwrap();
    assert_eq!(texts(&report), ["once"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_that_sends_too_fast_is_slowed_and_loses_nothing() {
    // A conversation may queue 6 envelopes at once and 4 more per second (each sealed 1:1
    // message is two: bob's and alice's own copy).
    let mut w = world_with(|limits| {
        limits.fan_out_burst = 6;
        limits.fan_out_per_second = 4.0;
    })
    .await;
    w.mitm.forget();
    let sent: Vec<String> = (0..6).map(|i| format!("burst {i}")).collect();
    for text in &sent {
        w.alice.send_direct("bob", text).await.unwrap();
    }
    // The server said 429 to the conversation's sends (no account is named: the route has
    // no session); alice's client waited each out and sent again.
    let refused = w
        .mitm
        .recorded()
        .iter()
        .filter(|e| e.request.path.ends_with("/sealed") && e.response.status == 429)
        .count();
    assert!(refused > 0, "the burst was never slowed");
    let report = w.bob.sync().await.unwrap();
    assert_eq!(texts(&report), sent);
    assert!(w.alice.outbox().unwrap().is_empty());
}
