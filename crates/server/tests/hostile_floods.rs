//! Hostile users against consent and quotas (issue 8, findings 5 and 10), on SQLite and
//! PostgreSQL: a stranger's message request carries only a few small messages, a blocked
//! account reaches nobody, a flooder cannot fill a victim's queue for everybody else, a
//! sender's fan-out is capped, and nobody can drain another account's one-time key packages.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use nightjar_api::*;
use nightjar_core::{ConversationId, ConversationKind, Incoming};
use nightjar_server::Limits;
use reqwest::StatusCode;
use serde_json::Value;

backend_tests!(
    a_strangers_request_carries_only_a_few_small_messages,
    replying_to_a_request_accepts_it,
    a_blocked_account_is_refused_and_nothing_is_queued,
    a_member_who_blocked_another_keeps_the_group_working,
    a_flooder_cannot_fill_the_victims_queue_for_others,
    a_senders_fan_out_is_capped_for_that_sender_only,
    key_package_drain_stops_at_the_quota,
    a_report_blocks_and_is_recorded,
);

/// `from` creates a direct conversation with `to` (who has not processed the Welcome yet).
async fn start_direct(server: &TestServer, from: &mut Device, to: &str) -> ConversationId {
    let me = from.username();
    learn(server, from, &[&me, to]).await;
    let kps: Vec<Vec<u8>> = claim(server, from, to)
        .await
        .key_packages
        .into_iter()
        .map(|k| k.key_package.0)
        .collect();
    let (conv, bundle) = from
        .engine
        .create_conversation(NOW, ConversationKind::Direct, &[to], None, &kps)
        .unwrap();
    let (status, body) = post_commit(server, from, &bundle, &format!("create-{conv}")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    from.engine.commit_accepted(NOW, conv).unwrap();
    conv
}

/// Sends a text message of `body` as `device`; returns the raw answer.
async fn say(
    server: &TestServer,
    device: &mut Device,
    conv: ConversationId,
    key: &str,
    body: &str,
) -> (StatusCode, Value) {
    let out = device.engine.encrypt(NOW, conv, &text(body)).unwrap();
    let request = send_request(key, EnvelopeKind::Application, out.epoch, out.message);
    server
        .post(
            &format!("/v1/conversations/{conv}/messages"),
            device.token(),
            &request,
        )
        .await
}

async fn inbox(server: &TestServer, device: &Device) -> Vec<Envelope> {
    let inbox: InboxResponse = server.get_ok("/v1/messages", device.token()).await;
    inbox.envelopes
}

/// Processes (and acknowledges) everything queued for `device`; returns what it got.
async fn drain(server: &TestServer, device: &mut Device) -> Vec<Incoming> {
    let envelopes = inbox(server, device).await;
    let mut got = Vec::new();
    for e in &envelopes {
        got.push(device.engine.process(NOW, &e.payload.0).unwrap());
    }
    let ids = envelopes.iter().map(|e| e.id).collect();
    let (status, body) = server
        .post("/v1/messages/ack", device.token(), &AckRequest { ids })
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    got
}

async fn set_consent(server: &TestServer, device: &Device, peer: &str, state: ConsentState) {
    let (status, body) = server
        .request(
            reqwest::Method::PUT,
            &format!("/v1/consent/{peer}"),
            device.token(),
            Some(&serde_json::to_value(SetConsentRequest { state }).unwrap()),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
}

async fn forget_consent(server: &TestServer, device: &Device, peer: &str) {
    let (status, body) = server
        .request(
            reqwest::Method::DELETE,
            &format!("/v1/consent/{peer}"),
            device.token(),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
}

async fn a_strangers_request_carries_only_a_few_small_messages(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut alice = register(&server, "alice", 3).await;
    let mut mallory = register(&server, "mallory", 3).await;
    let mut bob = register(&server, "bob", 3).await;
    let conv = start_direct(&server, &mut mallory, "alice").await;

    // The Welcome and four messages make the five a request may hold; a large one is refused
    // even before that.
    let long = "x".repeat(server.limits.max_request_message_bytes + 1);
    let (status, body) = say(&server, &mut mallory, conv, "long", &long).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(code(&body), "message_request_limit");
    for i in 0..4 {
        let (status, body) = say(&server, &mut mallory, conv, &format!("m{i}"), "hi").await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    for i in 4..10 {
        let (status, body) = say(&server, &mut mallory, conv, &format!("m{i}"), "hi").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(code(&body), "message_request_limit");
    }
    assert_eq!(
        inbox(&server, &alice).await.len(),
        5,
        "Welcome and 4 messages"
    );

    // Refused for mallory only: bob, another stranger, has a request of his own.
    let bob_conv = start_direct(&server, &mut bob, "alice").await;
    let (status, body) = say(&server, &mut bob, bob_conv, "b0", "hello alice").await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // Once alice accepts mallory, mallory's messages flow.
    learn(&server, &mut alice, &["alice", "bob", "mallory"]).await;
    set_consent(&server, &alice, "mallory", ConsentState::Accepted).await;
    for i in 10..20 {
        let (status, body) = say(&server, &mut mallory, conv, &format!("m{i}"), &long).await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let got = drain(&server, &mut alice).await;
    assert_eq!(got.len(), 5 + 2 + 10);
    let listed: ConsentListResponse = server.get_ok("/v1/consent", alice.token()).await;
    assert_eq!(
        listed
            .entries
            .iter()
            .map(|e| (e.username.as_str(), e.state))
            .collect::<Vec<_>>(),
        vec![("mallory", ConsentState::Accepted)]
    );
}

async fn replying_to_a_request_accepts_it(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut alice = register(&server, "alice", 3).await;
    let mut bob = register(&server, "bob", 3).await;
    let conv = start_direct(&server, &mut bob, "alice").await;
    learn(&server, &mut alice, &["alice", "bob"]).await;
    let got = drain(&server, &mut alice).await;
    assert!(matches!(got[0], Incoming::Joined { .. }), "{got:?}");
    // Sending in the conversation is alice's own intent: bob's messages then flow.
    let (status, body) = say(&server, &mut alice, conv, "a0", "hi bob").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for i in 0..(server.limits.max_request_messages + 5) {
        let (status, body) = say(&server, &mut bob, conv, &format!("b{i}"), "hi").await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    // The creator accepted alice when it created the conversation.
    let listed: ConsentListResponse = server.get_ok("/v1/consent", bob.token()).await;
    assert_eq!(listed.entries.len(), 1);
    assert_eq!(listed.entries[0].username, "alice");
}

async fn a_blocked_account_is_refused_and_nothing_is_queued(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut alice = register(&server, "alice", 3).await;
    let mut mallory = register(&server, "mallory", 3).await;
    let conv = start_direct(&server, &mut mallory, "alice").await;
    let (status, body) = say(&server, &mut mallory, conv, "m0", "hello").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    learn(&server, &mut alice, &["alice", "mallory"]).await;
    let _ = drain(&server, &mut alice).await;

    set_consent(&server, &alice, "mallory", ConsentState::Blocked).await;
    let (status, body) = say(&server, &mut mallory, conv, "m1", "still there?").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(code(&body), "blocked");
    // A new conversation does not get through either: its Welcome is not queued, and its
    // messages are refused.
    let second = start_direct(&server, &mut mallory, "alice").await;
    let (status, body) = say(&server, &mut mallory, second, "m2", "it's me again").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(code(&body), "blocked");
    assert!(inbox(&server, &alice).await.is_empty());

    // Unblocked, mallory is a stranger again: a fresh request allowance.
    forget_consent(&server, &alice, "mallory").await;
    let (status, body) = say(&server, &mut mallory, conv, "m3", "sorry").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(inbox(&server, &alice).await.len(), 1);
}

async fn a_member_who_blocked_another_keeps_the_group_working(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut alice = register(&server, "alice", 3).await;
    let mut bob = register(&server, "bob", 3).await;
    let mut mallory = register(&server, "mallory", 3).await;
    for d in [&mut alice, &mut bob, &mut mallory] {
        learn(&server, d, &["alice", "bob", "mallory"]).await;
    }
    // alice's group: everyone she added accepted it by being added by her.
    set_consent(&server, &bob, "alice", ConsentState::Accepted).await;
    set_consent(&server, &mallory, "alice", ConsentState::Accepted).await;
    let mut kps = Vec::new();
    for peer in ["bob", "mallory"] {
        kps.extend(
            claim(&server, &alice, peer)
                .await
                .key_packages
                .into_iter()
                .map(|k| k.key_package.0),
        );
    }
    let metadata = nightjar_core::content::GroupMetadata {
        name: "g".into(),
        avatar: None,
    };
    let (conv, bundle) = alice
        .engine
        .create_conversation(
            NOW,
            ConversationKind::Group,
            &["bob", "mallory"],
            Some(&metadata),
            &kps,
        )
        .unwrap();
    let (status, body) = post_commit(&server, &mut alice, &bundle, "create").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    alice.engine.commit_accepted(NOW, conv).unwrap();
    let _ = drain(&server, &mut bob).await;
    let _ = drain(&server, &mut mallory).await;

    // bob blocks mallory. mallory's messages still reach alice, not bob; mallory is not told.
    set_consent(&server, &bob, "mallory", ConsentState::Blocked).await;
    let (status, body) = say(&server, &mut mallory, conv, "m0", "hi all").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(inbox(&server, &bob).await.is_empty());
    let got = drain(&server, &mut alice).await;
    expect_text(&got[0], "hi all");

    // mallory's commit reaches everybody, so the group stays in step.
    let update = mallory.engine.self_update(conv).unwrap();
    let (status, body) = post_commit(&server, &mut mallory, &update, "update").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    mallory.engine.commit_accepted(NOW, conv).unwrap();
    let got = drain(&server, &mut bob).await;
    assert!(matches!(got[0], Incoming::Commit { .. }), "{got:?}");
    let _ = drain(&server, &mut alice).await;
    let (status, body) = say(&server, &mut alice, conv, "a0", "after the update").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let got = drain(&server, &mut bob).await;
    expect_text(&got[0], "after the update");
}

async fn a_flooder_cannot_fill_the_victims_queue_for_others(backend: Backend) {
    let limits = Limits {
        max_queue_len: 40,
        queue_share_after: 10,
        max_queue_share: 10,
        ..test_limits()
    };
    let server = TestServer::with_limits(backend, limits).await;
    let alice = register(&server, "alice", 3).await;
    let mut mallory = register(&server, "mallory", 3).await;
    let mut bob = register(&server, "bob", 3).await;
    // alice once accepted both (say, before mallory turned hostile).
    set_consent(&server, &alice, "mallory", ConsentState::Accepted).await;
    set_consent(&server, &alice, "bob", ConsentState::Accepted).await;
    let flood = start_direct(&server, &mut mallory, "alice").await;
    let mut sent = 0;
    let mut refused = None;
    for i in 0..60 {
        let (status, body) = say(&server, &mut mallory, flood, &format!("f{i}"), "spam").await;
        if status == StatusCode::OK {
            sent += 1;
        } else {
            refused = Some((status, body));
            break;
        }
    }
    let (status, body) = refused.expect("the flood was never refused");
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{body}");
    assert_eq!(code(&body), "queue_full");
    assert!(sent < 40, "mallory alone queued {sent}");

    // bob still reaches alice.
    let conv = start_direct(&server, &mut bob, "alice").await;
    for i in 0..5 {
        let (status, body) = say(&server, &mut bob, conv, &format!("b{i}"), "hi alice").await;
        assert_eq!(status, StatusCode::OK, "{body}");
    }
    let queued = inbox(&server, &alice).await;
    let from_bob = queued.iter().filter(|e| e.sender.username == "bob").count();
    assert_eq!(from_bob, 6, "bob's Welcome and 5 messages");
}

async fn a_senders_fan_out_is_capped_for_that_sender_only(backend: Backend) {
    let limits = Limits {
        fan_out_burst: 6,
        fan_out_per_second: 0.01,
        ..test_limits()
    };
    let server = TestServer::with_limits(backend, limits).await;
    let alice = register(&server, "alice", 3).await;
    let mut mallory = register(&server, "mallory", 3).await;
    let mut bob = register(&server, "bob", 3).await;
    set_consent(&server, &alice, "mallory", ConsentState::Accepted).await;
    set_consent(&server, &alice, "bob", ConsentState::Accepted).await;
    let conv = start_direct(&server, &mut mallory, "alice").await;
    let mut last = None;
    for i in 0..10 {
        let (status, body) = say(&server, &mut mallory, conv, &format!("f{i}"), "spam").await;
        if status != StatusCode::OK {
            last = Some((i, status, body));
            break;
        }
    }
    let (i, status, body) = last.expect("fan-out was never capped");
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{body}");
    assert_eq!(code(&body), "rate_limited");
    assert!(body["retry_after_ms"].as_u64().unwrap() > 0);
    // The Welcome and five messages are six envelopes: the sixth message is the first refused.
    assert_eq!(i, 5);
    let bob_conv = start_direct(&server, &mut bob, "alice").await;
    let (status, body) = say(&server, &mut bob, bob_conv, "b0", "hi").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn key_package_drain_stops_at_the_quota(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = register(&server, "alice", 20).await;
    let mallory = register(&server, "mallory", 3).await;
    let bob = register(&server, "bob", 3).await;
    let quota = server.limits.key_package_claims_per_target;
    for i in 0..quota + 10 {
        let claimed = claim(&server, &mallory, "alice").await;
        assert_eq!(claimed.key_packages.len(), 1);
        assert_eq!(
            claimed.key_packages[0].last_resort,
            i >= quota,
            "claim {i} of the quota {quota}"
        );
    }
    let stock: KeyPackageCount = server.get_ok("/v1/key-packages/count", alice.token()).await;
    assert_eq!(stock.available, 20 - quota);
    // Others still get one-time packages.
    let claimed = claim(&server, &bob, "alice").await;
    assert!(!claimed.key_packages[0].last_resort);
    // An account's claims of its own devices are not limited.
    for _ in 0..quota + 2 {
        let claimed = claim(&server, &alice, "alice").await;
        assert!(!claimed.key_packages[0].last_resort);
    }
}

async fn a_report_blocks_and_is_recorded(backend: Backend) {
    let server = TestServer::start(backend).await;
    let alice = register(&server, "alice", 3).await;
    let mut mallory = register(&server, "mallory", 3).await;
    let conv = start_direct(&server, &mut mallory, "alice").await;
    let (status, body) = server
        .post(
            "/v1/reports",
            alice.token(),
            &ReportRequest {
                username: "mallory".into(),
                conversation_id: Some(conv.to_string()),
                reason: Some("spam".into()),
            },
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = say(&server, &mut mallory, conv, "m0", "buy now").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(code(&body), "blocked");
    let listed: ConsentListResponse = server.get_ok("/v1/consent", alice.token()).await;
    assert_eq!(listed.entries[0].state, ConsentState::Blocked);
    // Your own account, unknown accounts and malformed reports are refused.
    for (who, expected) in [
        ("alice", StatusCode::BAD_REQUEST),
        ("nobody_here", StatusCode::NOT_FOUND),
    ] {
        let (status, _) = server
            .post(
                "/v1/reports",
                alice.token(),
                &ReportRequest {
                    username: who.into(),
                    conversation_id: None,
                    reason: None,
                },
            )
            .await;
        assert_eq!(status, expected, "{who}");
    }
}
