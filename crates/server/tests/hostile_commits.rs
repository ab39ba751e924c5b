//! Hostile members and strangers against the server's commit handling (issue 8, finding 4).
//!
//! Every commit and proposal is an MLS PublicMessage that the server validates against the
//! conversation's public state (OpenMLS `PublicGroup`); routing and Welcome recipients come from
//! the validated commit, never from the request. Each test below is an attack that succeeded on
//! the server that trusted the committer's `members` list.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use nightjar_api::*;
use nightjar_core::{ConversationId, ConversationKind, Engine, Incoming};
use reqwest::StatusCode;
use serde_json::Value;

backend_tests!(
    garbage_commit_listing_only_the_sender_cannot_hijack_routing,
    a_valid_commit_with_a_lying_member_list_routes_by_the_commit,
    commit_adding_a_device_outside_the_device_list_is_refused,
    forged_signature_wrong_sender_and_stale_epoch_are_refused,
    direct_conversation_cannot_gain_a_third_account,
    stranger_cannot_post_commits_or_proposals,
    leave_proposal_committed_by_another_member_works,
    welcome_goes_exactly_to_the_added_devices,
);

async fn inbox(server: &TestServer, device: &Device) -> Vec<Envelope> {
    let inbox: InboxResponse = server.get_ok("/v1/messages", device.token()).await;
    inbox.envelopes
}

async fn post(
    server: &TestServer,
    device: &Device,
    conv: ConversationId,
    request: &SendRequest,
) -> (StatusCode, Value) {
    server
        .post(
            &format!("/v1/conversations/{conv}/messages"),
            device.token(),
            request,
        )
        .await
}

async fn send_text(
    server: &TestServer,
    device: &mut Device,
    conv: ConversationId,
    key: &str,
    body: &str,
) -> (StatusCode, Value) {
    let out = device.engine.encrypt(NOW, conv, &text(body)).unwrap();
    let request = send_request(key, EnvelopeKind::Application, out.epoch, out.message);
    post(server, device, conv, &request).await
}

/// `from` sends `body`; every device in `to` receives and decrypts it.
async fn everyone_reads(
    server: &TestServer,
    from: &mut Device,
    to: &mut [&mut Device],
    conv: ConversationId,
    key: &str,
    body: &str,
) {
    let (status, answer) = send_text(server, from, conv, key, body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    for device in to.iter_mut() {
        let got = deliver(server, device).await;
        let last = got
            .last()
            .unwrap_or_else(|| panic!("{} got nothing", device.username()));
        expect_text(last.as_ref().unwrap(), body);
    }
}

fn address_of(device: &Device) -> DeviceAddress {
    device.address()
}

/// An MLS PrivateMessage whose clear header says "commit, this conversation, this epoch" and
/// whose encrypted part is garbage: what the old server accepted and routed by `members`.
fn garbage_private_commit(conv: ConversationId, epoch: u64) -> Vec<u8> {
    let mut out = vec![0, 1, 0, 2, 16];
    out.extend_from_slice(&conv.0);
    out.extend_from_slice(&epoch.to_be_bytes());
    out.push(3); // content type: commit
    out.push(0); // no authenticated data
    out.push(32);
    out.extend_from_slice(&[0x5a; 32]);
    out.push(48);
    out.extend_from_slice(&[0xa5; 48]);
    out
}

async fn garbage_commit_listing_only_the_sender_cannot_hijack_routing(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (mut devices, conv) = conversation(
        &server,
        &["alice", "bob", "mallory"],
        ConversationKind::Group,
    )
    .await;
    let [alice, bob, mallory] = devices.as_mut_slice() else {
        unreachable!()
    };
    assert_eq!(
        nightjar_core::wire::inspect(&garbage_private_commit(conv, 1))
            .err()
            .map(|e| e.to_string()),
        Some("message kind not accepted".to_owned()),
        "the crafted bytes are a well-formed MLS PrivateMessage commit"
    );
    let mut request = send_request(
        "hijack",
        EnvelopeKind::Commit,
        1,
        garbage_private_commit(conv, 1),
    );
    request.members = Some(vec![address_of(mallory)]);
    let (status, body) = post(&server, mallory, conv, &request).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // Routing and the epoch are unchanged: everyone keeps talking.
    everyone_reads(
        &server,
        alice,
        &mut [bob, mallory],
        conv,
        "a1",
        "still here",
    )
    .await;
    let update = alice.engine.self_update(conv).unwrap();
    assert_eq!(update.epoch, 1);
    let (status, body) = post_commit(&server, alice, &update, "u1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn a_valid_commit_with_a_lying_member_list_routes_by_the_commit(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (mut devices, conv) = conversation(
        &server,
        &["alice", "bob", "mallory"],
        ConversationKind::Group,
    )
    .await;
    let [alice, bob, mallory] = devices.as_mut_slice() else {
        unreachable!()
    };
    // A real commit (a self-update), posted with a member list naming only mallory.
    let bundle = mallory.engine.self_update(conv).unwrap();
    let mut request = send_request("lie", EnvelopeKind::Commit, bundle.epoch, bundle.commit);
    request.members = Some(vec![address_of(mallory)]);
    let (status, body) = post(&server, mallory, conv, &request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    mallory.engine.commit_accepted(NOW, conv).unwrap();
    for device in [&mut *alice, &mut *bob] {
        let got = deliver(&server, device).await;
        assert!(
            matches!(got.as_slice(), [Ok(Incoming::Commit { .. })]),
            "{got:?}"
        );
    }
    // The server routes by the commit: alice still reaches bob and mallory.
    everyone_reads(
        &server,
        alice,
        &mut [bob, mallory],
        conv,
        "a1",
        "routing held",
    )
    .await;
}

async fn commit_adding_a_device_outside_the_device_list_is_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (mut devices, conv) =
        conversation(&server, &["alice", "mallory"], ConversationKind::Group).await;
    let [alice, mallory] = devices.as_mut_slice() else {
        unreachable!()
    };
    // mallory signs, but never publishes, a device list with a rogue device, so her own
    // engine builds the commit adding it.
    let mut rogue = Engine::new_device(
        std::sync::Arc::new(nightjar_core::storage::MemoryStore::new()),
        "mallory",
        engine_config(),
    )
    .unwrap();
    let kp = rogue.generate_key_packages(1, false).unwrap();
    mallory
        .engine
        .approve_device(rogue.device_entry(NOW))
        .unwrap();
    let bundle = mallory.engine.add_devices(conv, &kp).unwrap();
    let (status, body) = post_commit(&server, mallory, &bundle, "rogue").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("device list"),
        "{body}"
    );
    mallory.engine.commit_rejected(conv).unwrap();

    // Nothing changed: alice's next commit takes the same epoch, and both still talk.
    everyone_reads(&server, alice, &mut [mallory], conv, "a1", "no rogue").await;
    let update = alice.engine.self_update(conv).unwrap();
    assert_eq!(update.epoch, bundle.epoch);
    let (status, body) = post_commit(&server, alice, &update, "u1").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn forged_signature_wrong_sender_and_stale_epoch_are_refused(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (mut devices, conv) =
        conversation(&server, &["alice", "bob"], ConversationKind::Group).await;
    let [alice, bob] = devices.as_mut_slice() else {
        unreachable!()
    };
    let bundle = alice.engine.self_update(conv).unwrap();

    // One bit of the signature flipped (it sits before the confirmation and membership tags).
    let mut forged = bundle.commit.clone();
    let at = forged.len() - 2 * 33 - 10;
    forged[at] ^= 1;
    let request = send_request("forged", EnvelopeKind::Commit, bundle.epoch, forged);
    let (status, body) = post(&server, alice, conv, &request).await;
    assert!(status.is_client_error(), "{status} {body}");

    // bob posts alice's genuine commit as his own.
    let request = send_request(
        "relay",
        EnvelopeKind::Commit,
        bundle.epoch,
        bundle.commit.clone(),
    );
    let (status, body) = post(&server, bob, conv, &request).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");

    // The genuine one from alice is accepted; bob's commit of the old epoch then conflicts.
    let stale = bob.engine.self_update(conv).unwrap();
    let (status, body) = post_commit(&server, alice, &bundle, "real").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = post_commit(&server, bob, &stale, "stale").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(code(&body), "epoch_conflict");
}

async fn direct_conversation_cannot_gain_a_third_account(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (mut devices, conv) =
        conversation(&server, &["alice", "mallory"], ConversationKind::Direct).await;
    let mut eve = register(&server, "eve", 2).await;
    learn(&server, &mut eve, &["eve"]).await;
    let [alice, mallory] = devices.as_mut_slice() else {
        unreachable!()
    };
    learn(&server, mallory, &["eve"]).await;
    let kps: Vec<Vec<u8>> = claim(&server, mallory, "eve")
        .await
        .key_packages
        .into_iter()
        .map(|k| k.key_package.0)
        .collect();
    let bundle = mallory.engine.add_devices(conv, &kps).unwrap();
    let (status, body) = post_commit(&server, mallory, &bundle, "third").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("two accounts"),
        "{body}"
    );
    assert!(inbox(&server, &eve).await.is_empty(), "eve got a Welcome");
    mallory.engine.commit_rejected(conv).unwrap();
    everyone_reads(&server, alice, &mut [mallory], conv, "a1", "just us").await;
}

async fn stranger_cannot_post_commits_or_proposals(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (mut devices, conv) =
        conversation(&server, &["alice", "bob", "carol"], ConversationKind::Group).await;
    let eve = register(&server, "eve", 2).await;
    let [alice, _bob, carol] = devices.as_mut_slice() else {
        unreachable!()
    };
    let commit = alice.engine.self_update(conv).unwrap();
    let leave = carol.engine.leave(conv).unwrap();
    let request = send_request(
        "c",
        EnvelopeKind::Commit,
        commit.epoch,
        commit.commit.clone(),
    );
    let (status, body) = post(&server, &eve, conv, &request).await;
    assert!(status.is_client_error(), "{status} {body}");
    let request = send_request("p", EnvelopeKind::Proposal, commit.epoch, leave);
    let (status, body) = post(&server, &eve, conv, &request).await;
    assert!(status.is_client_error(), "{status} {body}");
    // Nothing was queued for anyone, and alice's commit still takes the epoch.
    assert!(inbox(&server, alice).await.is_empty());
    let (status, body) = post_commit(&server, alice, &commit, "c").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

async fn leave_proposal_committed_by_another_member_works(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (mut devices, conv) =
        conversation(&server, &["alice", "bob", "carol"], ConversationKind::Group).await;
    let [alice, bob, carol] = devices.as_mut_slice() else {
        unreachable!()
    };
    let leave = carol.engine.leave(conv).unwrap();
    let request = send_request("leave", EnvelopeKind::Proposal, 1, leave);
    let (status, body) = post(&server, carol, conv, &request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    for device in [&mut *alice, &mut *bob] {
        let got = deliver(&server, device).await;
        assert!(
            matches!(got.as_slice(), [Ok(Incoming::LeaveRequested { .. })]),
            "{got:?}"
        );
    }
    let bundle = alice.engine.commit_pending_proposals(conv).unwrap();
    let (status, body) = post_commit(&server, alice, &bundle, "commit-leave").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    alice.engine.commit_accepted(NOW, conv).unwrap();
    let got = deliver(&server, carol).await;
    assert!(
        matches!(got.as_slice(), [Ok(Incoming::Removed { .. })]),
        "{got:?}"
    );
    let got = deliver(&server, bob).await;
    assert!(
        matches!(got.as_slice(), [Ok(Incoming::Commit { .. })]),
        "{got:?}"
    );
    // carol is out of the routing: alice reaches bob only, and carol may not post.
    everyone_reads(&server, alice, &mut [bob], conv, "a1", "bye carol").await;
    assert!(inbox(&server, carol).await.is_empty());
    let request = send_request("late", EnvelopeKind::Application, 2, vec![0; 8]);
    let (status, _) = post(&server, carol, conv, &request).await;
    assert!(status.is_client_error());
}

async fn welcome_goes_exactly_to_the_added_devices(backend: Backend) {
    let server = TestServer::start(backend).await;
    let mut alice = register(&server, "alice", 2).await;
    let mut bob = register(&server, "bob", 2).await;
    let mallory = register(&server, "mallory", 2).await;
    learn(&server, &mut alice, &["alice", "bob"]).await;
    learn(&server, &mut bob, &["alice", "bob"]).await;
    let kps: Vec<Vec<u8>> = claim(&server, &alice, "bob")
        .await
        .key_packages
        .into_iter()
        .map(|k| k.key_package.0)
        .collect();
    let (conv, bundle) = alice
        .engine
        .create_conversation(NOW, ConversationKind::Group, &["bob"], None, &kps)
        .unwrap();
    // The request claims the Welcome is for mallory and that mallory is a member.
    let mut request = send_request("create", EnvelopeKind::Commit, 0, bundle.commit.clone());
    request.group_info = bundle.group_info.clone().map(B64);
    request.members = Some(vec![alice.address(), mallory.address()]);
    request.welcome = Some(WelcomeOut {
        payload: B64(bundle.welcome.clone().unwrap()),
        recipients: vec![mallory.address()],
    });
    let (status, body) = post(&server, &alice, conv, &request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    alice.engine.commit_accepted(NOW, conv).unwrap();
    assert!(
        inbox(&server, &mallory).await.is_empty(),
        "mallory got the Welcome"
    );
    let got = deliver(&server, &mut bob).await;
    assert!(
        matches!(got.as_slice(), [Ok(Incoming::Joined { .. })]),
        "{got:?}"
    );
    // mallory is not routed to, nor allowed to post.
    everyone_reads(&server, &mut alice, &mut [&mut bob], conv, "a1", "hi bob").await;
    assert!(inbox(&server, &mallory).await.is_empty());
    let request = send_request("m", EnvelopeKind::Application, 1, vec![0; 8]);
    let (status, _) = post(&server, &mallory, conv, &request).await;
    assert!(status.is_client_error());
}
