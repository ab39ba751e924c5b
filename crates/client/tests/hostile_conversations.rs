//! Hostile members against the SDK's choice of conversation (issue 8, finding 1) and its notes
//! about messages it could not process (finding 11): real `nightjar_client::Client`s against an
//! in-process server. mallory is a real account that builds her own MLS messages.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

#[path = "../../server/tests/common/hostile_mls.rs"]
mod hostile_mls;

use common::{account, start};
use std::path::Path;

use hostile_mls::HostileDevice;
use nightjar_api::{
    B64, ClaimKeyPackagesResponse, DeviceAddress, EnvelopeKind, InboxResponse, SendRequest,
    WelcomeOut,
};
use nightjar_client::Client;
use nightjar_core::ConversationId;
use nightjar_core::identity::{DeviceCredential, DeviceId};
use nightjar_server::{RunningServer, ServerConfig};
use openmls::prelude::Ciphersuite;

const SUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519;

async fn server(data: &Path) -> (RunningServer, String) {
    start(ServerConfig::new(data, "127.0.0.1:0".parse().unwrap())).await
}

fn http() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

fn token(c: &Client) -> String {
    c.store().meta("token").unwrap().unwrap()
}

fn credential(c: &Client) -> DeviceCredential {
    DeviceCredential {
        username: c.username().unwrap(),
        device_id: DeviceId::parse(&c.device_id().unwrap()).unwrap(),
    }
}

async fn claim(url: &str, as_: &Client, account: &str) -> Vec<Vec<u8>> {
    let answer: ClaimKeyPackagesResponse = http()
        .post(format!("{url}/v1/accounts/{account}/key-packages/claim"))
        .bearer_auth(token(as_))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer
        .key_packages
        .into_iter()
        .map(|k| k.key_package.0)
        .collect()
}

/// What mallory's attack left: her crafted group, its Welcome, and the server's answer.
struct Attack {
    evil: HostileDevice,
    welcome: Vec<u8>,
    status: reqwest::StatusCode,
    /// The server's error message, if it refused.
    refusal: String,
}

/// mallory's "direct" conversation with alice, bob and herself, under the lowest possible id.
async fn mallory_attacks(url: &str, mallory: &Client) -> Attack {
    let mut kps = claim(url, mallory, "alice").await;
    kps.extend(claim(url, mallory, "bob").await);
    let mut evil = HostileDevice::new(credential(mallory), mallory.store());
    let crafted = evil.create_group(SUITE, [0; 16], 1, &kps);
    let address = |c: &DeviceCredential| DeviceAddress {
        username: c.username.clone(),
        device_id: c.device_id.to_string(),
    };
    let recipients: Vec<DeviceAddress> = crafted.recipients.iter().map(address).collect();
    let mut members = recipients.clone();
    members.push(address(&credential(mallory)));
    let request = SendRequest {
        idempotency_key: "crafted".into(),
        kind: EnvelopeKind::Commit,
        epoch: 0,
        payload: B64(crafted.commit.clone()),
        welcome: Some(WelcomeOut {
            payload: B64(crafted.welcome.clone()),
            recipients,
        }),
        members: Some(members),
        group_info: Some(B64(crafted.group_info.clone())),
        franking_commitment: None,
    };
    let response = http()
        .post(format!(
            "{url}/v1/conversations/{}/messages",
            ConversationId(crafted.group_id)
        ))
        .bearer_auth(token(mallory))
        .json(&request)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let refusal = response.text().await.unwrap();
    Attack {
        evil,
        welcome: crafted.welcome,
        status,
        refusal,
    }
}

/// Every application message mallory can decrypt from her queue with her crafted group.
async fn what_mallory_reads(url: &str, mallory: &Client, evil: &mut HostileDevice) -> Vec<Vec<u8>> {
    let inbox: InboxResponse = http()
        .get(format!("{url}/v1/messages"))
        .bearer_auth(token(mallory))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    inbox
        .envelopes
        .iter()
        .filter_map(|e| evil.read(&e.payload.0))
        .collect()
}

fn texts(report: &nightjar_client::SyncReport) -> Vec<String> {
    report
        .messages
        .iter()
        .filter_map(|m| m.text.clone())
        .collect()
}

#[tokio::test]
async fn send_to_bob_after_mallory_joins_a_fake_direct_conversation_reaches_only_bob() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tmp = tempfile::tempdir().unwrap();
    let (_server, url) = server(&tmp.path().join("server")).await;
    // alice reaches the server through a proxy that will play a malicious server.
    let mitm = nightjar_testkit::Mitm::start(&url).await;
    let mut alice = account(tmp.path(), &mitm.base, "alice").await;
    let mut bob = account(tmp.path(), &url, "bob").await;
    let mallory = account(tmp.path(), &url, "mallory").await;
    bob.accept("alice").await.unwrap();
    let first = alice.send_direct("bob", "hello").await.unwrap();
    assert!(first.delivered);
    assert_eq!(texts(&bob.sync().await.unwrap()), ["hello"]);

    // The server validates mallory's commit and refuses it...
    let Attack {
        mut evil,
        welcome,
        status,
        refusal,
    } = mallory_attacks(&url, &mallory).await;
    // Refused for what it does (a third account), not for its form.
    assert_eq!(status, reqwest::StatusCode::BAD_REQUEST, "{refusal}");
    assert!(
        refusal.contains("a direct conversation has exactly two accounts"),
        "{refusal}"
    );
    // ...so a malicious server delivers her Welcome to alice anyway, once, as mallory's.
    let mallory_device = mallory.device_id().unwrap();
    let injected = std::sync::atomic::AtomicBool::new(false);
    mitm.on_response(move |request, response| {
        if request.method == "GET"
            && request.path.starts_with("/v1/messages")
            && !injected.swap(true, std::sync::atomic::Ordering::SeqCst)
            && let Some(mut page) = response.json()
        {
            page["envelopes"]
                .as_array_mut()
                .unwrap()
                .push(serde_json::json!({
                    "id": 1u64 << 40,
                    "sender": {"username": "mallory", "device_id": mallory_device},
                    "kind": "welcome",
                    "payload": B64::encode(&welcome),
                    "server_time_ms": 0,
                }));
            response.set_json(&page);
        }
        nightjar_testkit::Verdict::Forward
    });
    bob.sync().await.unwrap();
    alice.sync().await.unwrap();
    mitm.clear();
    let notices = alice.take_notices();
    // The Welcome's sender is only what the server says until MLS proves it: the note must
    // not present the name as authenticated.
    assert!(
        notices
            .iter()
            .any(|n| n.contains("the server attributed to mallory")),
        "{notices:?}"
    );
    assert!(
        !notices
            .iter()
            .any(|n| n.starts_with("dropped a message from")),
        "{notices:?}"
    );

    let second = alice.send_direct("bob", "secret").await.unwrap();
    assert!(second.delivered);
    assert_eq!(second.conversation, first.conversation);
    assert_eq!(
        alice.direct_conversation("bob").unwrap(),
        Some(first.conversation.clone())
    );
    assert_eq!(texts(&bob.sync().await.unwrap()), ["secret"]);
    let stolen = what_mallory_reads(&url, &mallory, &mut evil).await;
    assert!(
        !stolen.iter().any(|m| m.windows(6).any(|w| w == b"secret")),
        "mallory read alice's message"
    );
    // bob's answer goes to the real conversation too.
    let answer = bob.send_direct("alice", "ok").await.unwrap();
    assert_eq!(answer.conversation, first.conversation);
    assert_eq!(texts(&alice.sync().await.unwrap()), ["ok"]);
}

/// A malicious server in front of the real one: alice and bob talk through `mitm`, which
/// rewrites bob's inbox pages with `rewrite` (envelopes as JSON values, oldest first).
struct Tampered {
    _tmp: tempfile::TempDir,
    _server: RunningServer,
    mitm: nightjar_testkit::Mitm,
    alice: Client,
    bob: Client,
}

/// alice and bob, both through the proxy, with one message already exchanged (so each has
/// heard from the other) and bob's gap grace time set to `grace`.
async fn tampered(grace: std::time::Duration) -> Tampered {
    // The proxy's HTTP client needs the process-wide rustls provider (features unify).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tmp = tempfile::tempdir().unwrap();
    let (server, url) = server(&tmp.path().join("server")).await;
    let mitm = nightjar_testkit::Mitm::start(&url).await;
    let mut alice = account(tmp.path(), &mitm.base, "alice").await;
    let mut bob = account(tmp.path(), &mitm.base, "bob").await;
    bob.set_missing_after(grace);
    bob.accept("alice").await.unwrap();
    alice.send_direct("bob", "m0").await.unwrap();
    assert_eq!(texts(&bob.sync().await.unwrap()), ["m0"]);
    // bob's read receipt for m0 reaches his own queue too (a device gets what its account
    // sends): take it now, so the tests' pages hold alice's messages only.
    bob.sync().await.unwrap();
    bob.take_notices();
    Tampered {
        _tmp: tmp,
        _server: server,
        mitm,
        alice,
        bob,
    }
}

/// Rewrites every inbox page bob fetches.
fn rewrite_bobs_inbox(
    t: &Tampered,
    rewrite: impl Fn(&mut Vec<serde_json::Value>) + Send + Sync + 'static,
) {
    let bob_token = format!("Bearer {}", token(&t.bob));
    t.mitm.on_response(move |request, response| {
        let is_bob = request.header("authorization") == Some(bob_token.as_str());
        if request.method == "GET"
            && request.path.starts_with("/v1/messages")
            && is_bob
            && let Some(mut page) = response.json()
        {
            if let Some(envelopes) = page["envelopes"].as_array_mut() {
                rewrite(envelopes);
            }
            response.set_json(&page);
        }
        nightjar_testkit::Verdict::Forward
    });
}

fn is_application(envelope: &serde_json::Value) -> bool {
    envelope["kind"] == "application"
}

#[tokio::test]
async fn a_message_the_server_withholds_is_reported_missing() {
    let mut t = tampered(std::time::Duration::from_millis(300)).await;
    for body in ["m1", "m2", "m3"] {
        assert!(t.alice.send_direct("bob", body).await.unwrap().delivered);
    }
    // The server withholds m2 from bob, now and on every later fetch.
    let withheld = std::sync::Arc::new(std::sync::Mutex::new(None::<u64>));
    let held = withheld.clone();
    rewrite_bobs_inbox(&t, move |envelopes| {
        let mut held = held.lock().unwrap();
        if held.is_none() {
            *held = envelopes
                .iter()
                .filter(|e| is_application(e))
                .nth(1)
                .and_then(|e| e["id"].as_u64());
        }
        envelopes.retain(|e| e["id"].as_u64() != *held);
    });
    assert_eq!(texts(&t.bob.sync().await.unwrap()), ["m1", "m3"]);
    assert!(withheld.lock().unwrap().is_some());
    let early = t.bob.take_notices();
    assert!(!early.iter().any(|n| n.contains("missing")), "{early:?}");
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    t.bob.sync().await.unwrap();
    let notices = t.bob.take_notices();
    assert!(
        notices
            .iter()
            .any(|n| n.starts_with("1 message from alice is missing")),
        "{notices:?}"
    );
    // Reported once.
    t.bob.sync().await.unwrap();
    assert!(!t.bob.take_notices().iter().any(|n| n.contains("missing")));
}

#[tokio::test]
async fn a_replayed_message_is_dropped_silently_and_shown_once() {
    let mut t = tampered(std::time::Duration::from_millis(300)).await;
    t.alice.send_direct("bob", "once").await.unwrap();
    // The server serves every application envelope twice, the copy under a fresh queue id.
    rewrite_bobs_inbox(&t, |envelopes| {
        let copies: Vec<serde_json::Value> = envelopes
            .iter()
            .filter(|e| is_application(e))
            .map(|e| {
                let mut copy = e.clone();
                copy["id"] = (e["id"].as_u64().unwrap() + 1_000_000).into();
                copy
            })
            .collect();
        envelopes.extend(copies);
    });
    assert_eq!(texts(&t.bob.sync().await.unwrap()), ["once"]);
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert!(texts(&t.bob.sync().await.unwrap()).is_empty());
    let notices = t.bob.take_notices();
    assert!(notices.is_empty(), "{notices:?}");
}

#[tokio::test]
async fn reordered_messages_are_shown_once_each_with_no_false_gap() {
    let mut t = tampered(std::time::Duration::from_millis(300)).await;
    for body in ["m1", "m2", "m3"] {
        t.alice.send_direct("bob", body).await.unwrap();
    }
    rewrite_bobs_inbox(&t, |envelopes| envelopes.reverse());
    let mut shown = texts(&t.bob.sync().await.unwrap());
    assert_eq!(shown, ["m3", "m2", "m1"]);
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    shown.extend(texts(&t.bob.sync().await.unwrap()));
    assert_eq!(shown.len(), 3);
    let notices = t.bob.take_notices();
    assert!(notices.is_empty(), "{notices:?}");
}

/// A malicious server forks a group: it tells alice that her commit (adding dave) was
/// accepted but never forwards it, and hands everyone else bob's competing commit for the same
/// epoch. alice and the others now hold different epochs under the same number; carol's next
/// message, made on bob's branch, shows alice the fork.
#[tokio::test]
async fn a_group_the_server_forks_is_reported_forked() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tmp = tempfile::tempdir().unwrap();
    let (_server, url) = server(&tmp.path().join("server")).await;
    let mitm = nightjar_testkit::Mitm::start(&url).await;
    let mut alice = account(tmp.path(), &mitm.base, "alice").await;
    let mut bob = account(tmp.path(), &url, "bob").await;
    let mut carol = account(tmp.path(), &url, "carol").await;
    let _dave = account(tmp.path(), &url, "dave").await;
    for c in [&mut bob, &mut carol] {
        c.accept("alice").await.unwrap();
    }
    alice
        .create_group("g", &["bob".into(), "carol".into()])
        .await
        .unwrap();
    bob.sync().await.unwrap();
    carol.sync().await.unwrap();
    alice.send_group("g", "before").await.unwrap();
    assert_eq!(texts(&carol.sync().await.unwrap()), ["before"]);

    let alice_token = format!("Bearer {}", token(&alice));
    let faked = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let faked_in_hook = faked.clone();
    mitm.on_request(move |request| {
        let commit = request.method == "POST"
            && request.path.ends_with("/messages")
            && request.header("authorization") == Some(alice_token.as_str())
            && request.json().is_some_and(|b| b["kind"] == "commit");
        if !commit {
            return nightjar_testkit::Verdict::Forward;
        }
        faked_in_hook.store(true, std::sync::atomic::Ordering::SeqCst);
        let made_in = request.json().and_then(|b| b["epoch"].as_u64()).unwrap();
        nightjar_testkit::Verdict::Respond(nightjar_testkit::Response::json_answer(
            200,
            &serde_json::json!({"message_id": 1u64 << 40, "epoch": made_in + 1}),
        ))
    });
    alice.add_to_group("g", "dave").await.unwrap();
    assert!(faked.load(std::sync::atomic::Ordering::SeqCst));
    // The real server sees only bob's commit, valid for the epoch alice's was made in.
    bob.add_to_group("g", "dave").await.unwrap();
    carol.sync().await.unwrap();
    carol.send_group("g", "on bob's branch").await.unwrap();

    let report = alice.sync().await.unwrap();
    assert!(texts(&report).is_empty(), "alice read the other branch");
    let notices = alice.take_notices();
    assert!(
        notices
            .iter()
            .any(|n| n.starts_with("group g has forked: a message sent in epoch")),
        "{notices:?}"
    );
    // Said once per epoch, not again on the next sync.
    alice.sync().await.unwrap();
    assert!(!alice.take_notices().iter().any(|n| n.contains("forked")));
}
