//! Hostile members against a 1:1 conversation (issue 8, finding 1), through the real server on
//! both backends. mallory is a real account; she builds her own MLS messages with OpenMLS
//! (signed by her registered device key, so her leaf passes every device-list check) to make
//! what `nightjar-core` refuses to: a "direct" conversation with three accounts, and a Welcome
//! that reuses the id of a conversation alice already has.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;
#[path = "common/hostile_mls.rs"]
mod hostile_mls;

use common::*;
use hostile_mls::HostileDevice;
use nightjar_api::*;
use nightjar_core::{ConversationId, ConversationKind, Incoming};
use openmls::prelude::Ciphersuite;
use reqwest::StatusCode;

backend_tests!(
    mallory_cannot_join_a_direct_conversation_as_a_third_account,
    a_welcome_cannot_replace_a_conversation_alice_already_has,
    a_member_cannot_remove_the_peer_of_a_direct_conversation,
);

const SUITE: Ciphersuite = Ciphersuite::MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519;

/// alice and bob in a direct conversation both have joined; mallory registered and knowing
/// both accounts.
async fn victims(server: &TestServer) -> (Device, Device, Device, ConversationId) {
    let (mut alice, mut bob, conv) = create_direct(server, server).await;
    for incoming in deliver(server, &mut bob).await {
        assert!(
            matches!(incoming, Ok(Incoming::Joined { .. })),
            "{incoming:?}"
        );
    }
    let mut mallory = register(server, "mallory", 3).await;
    learn(server, &mut mallory, &["alice", "bob", "mallory"]).await;
    learn(server, &mut alice, &["mallory"]).await;
    learn(server, &mut bob, &["mallory"]).await;
    (alice, bob, mallory, conv)
}

fn hostile(device: &Device) -> HostileDevice {
    HostileDevice::new(device.engine.device().clone(), device.store.as_ref())
}

async fn claim_bytes(server: &TestServer, device: &Device, account: &str) -> Vec<Vec<u8>> {
    claim(server, device, account)
        .await
        .key_packages
        .into_iter()
        .map(|k| k.key_package.0)
        .collect()
}

/// Posts a crafted group-creating commit and its Welcome as `device`.
async fn post_crafted(
    server: &TestServer,
    device: &Device,
    crafted: &hostile_mls::Crafted,
) -> (StatusCode, serde_json::Value) {
    let address = |c: &nightjar_core::identity::DeviceCredential| DeviceAddress {
        username: c.username.clone(),
        device_id: c.device_id.to_string(),
    };
    let recipients: Vec<DeviceAddress> = crafted.recipients.iter().map(address).collect();
    let mut members = recipients.clone();
    members.push(device.address());
    let mut request = send_request(
        "crafted",
        EnvelopeKind::Commit,
        crafted.epoch,
        crafted.commit.clone(),
    );
    request.members = Some(members);
    request.welcome = Some(WelcomeOut {
        payload: B64(crafted.welcome.clone()),
        recipients,
    });
    request.group_info = Some(B64(crafted.group_info.clone()));
    let conversation = ConversationId(crafted.group_id);
    server
        .post(
            &format!("/v1/conversations/{conversation}/messages"),
            device.token(),
            &request,
        )
        .await
}

/// alice and bob can still talk in `conv`, and only there.
async fn still_talking(
    server: &TestServer,
    alice: &mut Device,
    bob: &mut Device,
    conv: ConversationId,
) {
    let out = alice
        .engine
        .encrypt(NOW, conv, &text("still ours"))
        .unwrap();
    let request = send_request("after", EnvelopeKind::Application, out.epoch, out.message);
    let (status, body) = server
        .post(
            &format!("/v1/conversations/{conv}/messages"),
            alice.token(),
            &request,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let received = deliver(server, bob).await;
    assert_eq!(received.len(), 1);
    expect_text(received[0].as_ref().unwrap(), "still ours");
}

async fn mallory_cannot_join_a_direct_conversation_as_a_third_account(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (mut alice, mut bob, mallory, conv) = victims(&server).await;
    // A lower id than any random one: on the old client, "the" conversation with bob was the
    // active direct one with the lowest id.
    let mut kps = claim_bytes(&server, &mallory, "alice").await;
    kps.extend(claim_bytes(&server, &mallory, "bob").await);
    let mut evil = hostile(&mallory);
    let crafted = evil.create_group(SUITE, [0; 16], 1, &kps);
    // First line of defence: the server validates the commit (a well-formed PublicMessage,
    // signed by mallory's registered device key, with its GroupInfo) against the conversation
    // rules, and refuses it for what it does: a third account in a direct conversation.
    let (status, body) = post_crafted(&server, &mallory, &crafted).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "the server took it: {body}"
    );
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("a direct conversation has exactly two accounts")),
        "{body}"
    );

    // Second line: a malicious server delivers mallory's Welcome anyway (here handed to the
    // engines exactly as a server would deliver it); neither victim joins.
    for victim in [&mut alice, &mut bob] {
        assert!(
            deliver(&server, victim).await.is_empty(),
            "nothing was queued"
        );
        let result = victim.engine.process(NOW, &crafted.welcome);
        assert!(
            result.is_err(),
            "{} joined a direct conversation with three accounts: {result:?}",
            victim.username(),
        );
        let conversations = victim.engine.conversations().unwrap();
        assert_eq!(conversations.len(), 1, "{conversations:?}");
        let only = &conversations[0];
        assert_eq!(only.id, conv);
        assert_eq!(only.kind, ConversationKind::Direct);
        assert_eq!(only.accounts(), ["alice", "bob"]);
    }
    still_talking(&server, &mut alice, &mut bob, conv).await;
}

async fn a_welcome_cannot_replace_a_conversation_alice_already_has(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (mut alice, mut bob, mallory, conv) = victims(&server).await;
    let before = alice.engine.conversation(conv).unwrap();
    // A two-account "direct" group {mallory, alice} under the id of alice's conversation with
    // bob. The server refuses it (the id is taken), so it is what a malicious server would
    // deliver: hand it to alice's engine as the server would.
    let kps = claim_bytes(&server, &mallory, "alice").await;
    let mut evil = hostile(&mallory);
    let crafted = evil.create_group(SUITE, conv.0, 1, &kps);
    let (status, _) = post_crafted(&server, &mallory, &crafted).await;
    assert_ne!(status, StatusCode::OK, "the server let mallory take the id");
    let result = alice.engine.process(NOW, &crafted.welcome);
    assert!(
        result.is_err(),
        "alice replaced her conversation: {result:?}"
    );

    let after = alice.engine.conversation(conv).unwrap();
    assert_eq!(after.epoch, before.epoch);
    assert_eq!(after.members, before.members);
    assert_eq!(after.accounts(), ["alice", "bob"]);
    still_talking(&server, &mut alice, &mut bob, conv).await;
}

async fn a_member_cannot_remove_the_peer_of_a_direct_conversation(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (mut alice, mut bob, _mallory, conv) = victims(&server).await;
    // alice links a second device and brings it into the conversation.
    let mut alice2 = link_device(&server, &mut alice).await;
    learn(&server, &mut alice, &["alice"]).await;
    learn(&server, &mut alice2, &["alice", "bob"]).await;
    learn(&server, &mut bob, &["alice"]).await;
    let kps = claim_bytes(&server, &alice, "alice").await;
    let bundle = alice.engine.add_devices(conv, &kps).unwrap();
    let (status, body) = post_commit(&server, &mut alice, &bundle, "add-alice2").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    alice.engine.commit_accepted(NOW, conv).unwrap();
    for incoming in deliver(&server, &mut alice2).await {
        assert!(
            matches!(incoming, Ok(Incoming::Joined { .. })),
            "{incoming:?}"
        );
    }
    for incoming in deliver(&server, &mut bob).await {
        assert!(
            matches!(incoming, Ok(Incoming::Commit { .. })),
            "{incoming:?}"
        );
    }

    // alice2 (compromised, or buggy) removes every device of bob: the "1:1 with bob" would go
    // on as a conversation with nobody but alice's devices.
    let bob_devices: Vec<_> = alice2
        .engine
        .conversation(conv)
        .unwrap()
        .members
        .into_iter()
        .filter(|m| m.username == "bob")
        .collect();
    let bundle = alice2.engine.remove_devices(conv, bob_devices).unwrap();
    let (status, body) = post_commit(&server, &mut alice2, &bundle, "drop-bob").await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let results = deliver(&server, &mut alice).await;
    assert_eq!(results.len(), 1);
    assert!(
        results[0].is_err(),
        "alice accepted a direct conversation without bob: {:?}",
        results[0]
    );
    let info = alice.engine.conversation(conv).unwrap();
    assert_eq!(info.accounts(), ["alice", "bob"]);
}
