//! Message reports with franking (docs/reporting.md), end to end through the HTTP API on
//! SQLite and PostgreSQL: the server stamps franked messages, stores a verified report for
//! the moderators, and refuses every forged one (altered content or key, another sender
//! claimed, a tag from another conversation, a made-up tag, a non-member reporting) without
//! storing anything. The moderation routes need the moderator token.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use ed25519_dalek::{Signer as _, SigningKey};
use nightjar_api::*;
use nightjar_core::content::{Content, Message, MessageId};
use nightjar_core::franking::{self, Commitment, Committed, FrankingCheck, FrankingKey};
use nightjar_core::identity::DeviceCredential;
use nightjar_core::sealed::SealedSubmission;
use nightjar_core::{ConversationId, ConversationKind, Incoming};
use reqwest::StatusCode;
use serde_json::Value;

backend_tests!(
    a_verified_report_is_stored_and_forged_ones_are_refused,
    moderation_needs_its_token,
);

const MODERATOR_TOKEN: &str = "moderator-token-0123456789abcdef";

/// A server whose moderators use [`MODERATOR_TOKEN`]; the directory holds the token file.
async fn server_with_moderation(backend: Backend) -> (TestServer, tempfile::TempDir) {
    let secrets = tempfile::tempdir().unwrap();
    let token_file = secrets.path().join("moderator-token");
    std::fs::write(&token_file, format!("{MODERATOR_TOKEN}\n")).unwrap();
    let server = TestServer::with_config(backend, test_limits(), move |config| {
        config.moderator_token_file = Some(token_file.clone());
    })
    .await;
    (server, secrets)
}

fn message(body: &str, n: u8) -> Message {
    Message {
        id: MessageId([n; 16]),
        sent_at_ms: NOW,
        expires_after_secs: None,
        content: Content::Text { body: body.into() },
    }
}

/// Posts an authenticated application message with `commitment` beside it.
async fn post(
    server: &TestServer,
    device: &Device,
    conversation: ConversationId,
    key: &str,
    out: &nightjar_core::Outbound,
    commitment: &Commitment,
) {
    let mut request = send_request(
        key,
        EnvelopeKind::Application,
        out.epoch,
        out.message.clone(),
    );
    request.franking_commitment = Some(B64(commitment.as_bytes().to_vec()));
    let (status, body) = server
        .post(
            &format!("/v1/conversations/{conversation}/messages"),
            device.token(),
            &request,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// `device` encrypts `message` and posts it with its franking commitment.
async fn send_franked(
    server: &TestServer,
    device: &mut Device,
    conversation: ConversationId,
    message: &Message,
    key: &str,
) {
    let out = device.engine.encrypt(NOW, conversation, message).unwrap();
    post(
        server,
        device,
        conversation,
        key,
        &out,
        &out.franking_commitment,
    )
    .await;
}

/// `device` encrypts `message` and posts it sealed (no session), with its commitment.
async fn send_sealed(
    server: &TestServer,
    device: &mut Device,
    conversation: ConversationId,
    message: &Message,
) {
    let sealed = device.engine.sealed_key(conversation).unwrap();
    let (status, body) = server
        .request(
            reqwest::Method::PUT,
            &format!("/v1/conversations/{conversation}/sealed-key"),
            device.token(),
            Some(
                &serde_json::to_value(SealedKeyRequest {
                    epoch: sealed.epoch,
                    key: B64(sealed.public().to_vec()),
                    accept: true,
                })
                .unwrap(),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let out = device.engine.encrypt(NOW, conversation, message).unwrap();
    let submission = SealedSubmission {
        conversation,
        epoch: out.epoch,
        submission_id: "sealed-1",
        payload: &out.message,
    };
    let request = SealedSendRequest {
        submission_id: "sealed-1".into(),
        epoch: out.epoch,
        payload: B64(out.message.clone()),
        key: B64(sealed.public().to_vec()),
        signature: B64(sealed.sign(&submission).to_vec()),
        franking_commitment: Some(B64(out.franking_commitment.as_bytes().to_vec())),
    };
    let (status, body) = server
        .post(
            &format!("/v1/conversations/{conversation}/sealed"),
            None,
            &request,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// What `device` received: each envelope with what its engine made of it (acknowledged).
async fn receive(server: &TestServer, device: &mut Device) -> Vec<(Envelope, Incoming)> {
    deliver_envelopes(server, device)
        .await
        .into_iter()
        .filter_map(|(envelope, processed)| Some((envelope, processed.ok()?)))
        .collect()
}

/// The report a recipient makes of a received, franked message.
fn report_of(
    envelope: &Envelope,
    incoming: &Incoming,
    reason: Option<&str>,
) -> MessageReportRequest {
    let Incoming::Message {
        conversation,
        sender,
        message,
        franking: FrankingCheck::Verified(franked),
        ..
    } = incoming
    else {
        panic!("not a verified franked message: {incoming:?}");
    };
    let stamp = envelope.franking.clone().expect("a stamped envelope");
    assert_eq!(stamp.commitment.0, franked.commitment.as_bytes());
    MessageReportRequest {
        conversation_id: conversation.to_string(),
        sender: DeviceAddress {
            username: sender.username.clone(),
            device_id: sender.device_id.to_string(),
        },
        message: B64(message.encode()),
        franking_key: B64(franked.opening.key.as_bytes().to_vec()),
        signature: B64(franked.opening.signature.to_vec()),
        stamp,
        reason: reason.map(str::to_owned),
    }
}

/// Posts `report` as `device`: the status and body.
async fn report(
    server: &TestServer,
    device: &Device,
    report: &MessageReportRequest,
) -> (StatusCode, Value) {
    server
        .post("/v1/reports/messages", device.token(), report)
        .await
}

async fn refused(
    server: &TestServer,
    device: &Device,
    forged: &MessageReportRequest,
    status: StatusCode,
    expected: &str,
) {
    let (got, body) = report(server, device, forged).await;
    assert_eq!((got, code(&body)), (status, expected), "{body}");
}

/// The moderators' list, read with `token`.
async fn moderation(server: &TestServer, token: Option<&str>) -> (StatusCode, Value) {
    server.get("/v1/moderation/reports", token).await
}

/// A direct conversation of `a` with `b`, which `b` has joined.
async fn direct(server: &TestServer, a: &mut Device, b: &mut Device) -> ConversationId {
    let kps: Vec<Vec<u8>> = claim(server, a, &b.username())
        .await
        .key_packages
        .into_iter()
        .map(|k| k.key_package.0)
        .collect();
    let (conversation, bundle) = a
        .engine
        .create_conversation(NOW, ConversationKind::Direct, &[&b.username()], None, &kps)
        .unwrap();
    let (status, body) = post_commit(server, a, &bundle, "create-direct").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    a.engine.commit_accepted(NOW, conversation).unwrap();
    let got = receive(server, b).await;
    assert!(
        matches!(got.as_slice(), [(_, Incoming::Joined { .. })]),
        "{got:?}"
    );
    conversation
}

async fn a_verified_report_is_stored_and_forged_ones_are_refused(backend: Backend) {
    let (server, _secrets) = server_with_moderation(backend).await;
    let (mut devices, group) = conversation(
        &server,
        &["alice", "bob", "mallory"],
        ConversationKind::Group,
    )
    .await;
    let mut mallory = devices.pop().unwrap();
    let mut bob = devices.pop().unwrap();
    let mut alice = devices.pop().unwrap();
    for (device, peers) in [
        (&alice, ["bob", "mallory"]),
        (&bob, ["alice", "mallory"]),
        (&mallory, ["alice", "bob"]),
    ] {
        for peer in peers {
            accept(&server, device, peer).await;
        }
    }
    let eve = register(&server, "eve", 1).await;

    // alice's message, sealed: the server stamps it and bob can report it.
    send_sealed(&server, &mut alice, group, &message("buy my pills", 1)).await;
    let got = receive(&server, &mut bob).await;
    let [(envelope, incoming)] = got.as_slice() else {
        panic!("{got:?}");
    };
    let stamp = envelope.franking.clone().expect("a stamp");
    assert_eq!(stamp.time_ms, envelope.server_time_ms);
    assert_eq!(
        stamp.time_ms % 3_600_000,
        0,
        "stamped to the hour, like stored times"
    );
    let honest = report_of(envelope, incoming, Some("spam"));
    receive(&server, &mut mallory).await;

    // Forged reports first: every one refused, and nothing stored.
    let mut altered = honest.clone();
    altered.message = B64(message("buy my pills!", 1).encode());
    refused(
        &server,
        &bob,
        &altered,
        StatusCode::UNPROCESSABLE_ENTITY,
        "franking_commitment_invalid",
    )
    .await;
    let mut other_key = honest.clone();
    other_key.franking_key.0[0] ^= 1;
    refused(
        &server,
        &bob,
        &other_key,
        StatusCode::UNPROCESSABLE_ENTITY,
        "franking_commitment_invalid",
    )
    .await;
    let mut other_sender = honest.clone();
    other_sender.sender = mallory.address();
    refused(
        &server,
        &bob,
        &other_sender,
        StatusCode::UNPROCESSABLE_ENTITY,
        "franking_commitment_invalid",
    )
    .await;
    let mut made_up = honest.clone();
    made_up.stamp.tag = B64(vec![0x42; 32]);
    refused(
        &server,
        &bob,
        &made_up,
        StatusCode::UNPROCESSABLE_ENTITY,
        "franking_tag_invalid",
    )
    .await;
    let mut other_time = honest.clone();
    other_time.stamp.time_ms += 3_600_000;
    refused(
        &server,
        &bob,
        &other_time,
        StatusCode::UNPROCESSABLE_ENTITY,
        "franking_tag_invalid",
    )
    .await;
    let mut made_up_commitment = honest.clone();
    made_up_commitment.stamp.commitment = B64(vec![0x17; 32]);
    refused(
        &server,
        &bob,
        &made_up_commitment,
        StatusCode::UNPROCESSABLE_ENTITY,
        "franking_tag_invalid",
    )
    .await;
    let mut bad_signature = honest.clone();
    bad_signature.signature.0[10] ^= 1;
    refused(
        &server,
        &bob,
        &bad_signature,
        StatusCode::UNPROCESSABLE_ENTITY,
        "franking_signature_invalid",
    )
    .await;
    let mut short = honest.clone();
    short.franking_key = B64(vec![1; 31]);
    refused(
        &server,
        &bob,
        &short,
        StatusCode::BAD_REQUEST,
        "bad_request",
    )
    .await;
    // eve is no member of the group: a valid report from her is refused.
    refused(
        &server,
        &eve,
        &honest,
        StatusCode::FORBIDDEN,
        "not_a_member",
    )
    .await;

    // mallory frames alice: she commits to a message "from alice", signs the commitment with
    // a key that is not alice's device key, and sends it with any ciphertext. The server
    // stamps it (it cannot tell), the commitment opens, the tag is good, she is a member: the
    // signature is what refuses it.
    let framed = message("alice says something terrible", 2);
    let alice_credential = DeviceCredential {
        username: "alice".into(),
        device_id: alice.engine.device().device_id,
    };
    let key = FrankingKey::from_bytes([0x33; 32]);
    let commitment = franking::commit(
        &key,
        &Committed {
            conversation: group,
            sender: &alice_credential,
            message: &framed.encode(),
        },
    );
    let out = mallory
        .engine
        .encrypt(NOW, group, &message("cover", 3))
        .unwrap();
    post(&server, &mallory, group, "framing", &out, &commitment).await;
    let got = receive(&server, &mut bob).await;
    let [(envelope, _)] = got.as_slice() else {
        panic!("{got:?}");
    };
    let foreign = SigningKey::from_bytes(&[0x44; 32]);
    let frame = MessageReportRequest {
        conversation_id: group.to_string(),
        sender: alice.address(),
        message: B64(framed.encode()),
        franking_key: B64(key.as_bytes().to_vec()),
        signature: B64(foreign
            .sign(&franking::signed_bytes(&commitment))
            .to_bytes()
            .to_vec()),
        stamp: envelope.franking.clone().unwrap(),
        reason: None,
    };
    refused(
        &server,
        &mallory,
        &frame,
        StatusCode::UNPROCESSABLE_ENTITY,
        "franking_signature_invalid",
    )
    .await;
    refused(
        &server,
        &bob,
        &frame,
        StatusCode::UNPROCESSABLE_ENTITY,
        "franking_signature_invalid",
    )
    .await;
    receive(&server, &mut alice).await;

    // A stamp from another conversation: mallory's message to bob in their direct
    // conversation, reported as if it were in the group.
    let dm = direct(&server, &mut mallory, &mut bob).await;
    send_franked(&server, &mut mallory, dm, &message("psst", 4), "dm-1").await;
    let got = receive(&server, &mut bob).await;
    let [(dm_envelope, dm_incoming)] = got.as_slice() else {
        panic!("{got:?}");
    };
    let dm_report = report_of(dm_envelope, dm_incoming, None);
    let mut moved = dm_report.clone();
    moved.conversation_id = group.to_string();
    refused(
        &server,
        &bob,
        &moved,
        StatusCode::UNPROCESSABLE_ENTITY,
        "franking_tag_invalid",
    )
    .await;
    // alice is in the group, not in the direct conversation.
    refused(
        &server,
        &alice,
        &dm_report,
        StatusCode::FORBIDDEN,
        "not_a_member",
    )
    .await;

    let (status, body) = moderation(&server, Some(MODERATOR_TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["reports"],
        serde_json::json!([]),
        "forged reports stored nothing"
    );

    // The honest reports: stored once each (reporting again answers with the same id).
    let (status, body) = report(&server, &bob, &honest).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let first: MessageReportResponse = serde_json::from_value(body).unwrap();
    let (status, body) = report(&server, &bob, &honest).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        serde_json::from_value::<MessageReportResponse>(body).unwrap(),
        first
    );
    let (status, body) = report(&server, &bob, &dm_report).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let second: MessageReportResponse = serde_json::from_value(body).unwrap();
    assert!(second.report_id > first.report_id);

    let (status, body) = moderation(&server, Some(MODERATOR_TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let listed: ModerationReportsResponse = serde_json::from_value(body).unwrap();
    let [spam, psst] = listed.reports.as_slice() else {
        panic!("{listed:?}");
    };
    assert_eq!(spam.id, first.report_id);
    assert_eq!(spam.reporter, "bob");
    assert_eq!(spam.conversation_id, group.to_string());
    assert_eq!(spam.sender, alice.address());
    assert_eq!(spam.message_id, MessageId([1; 16]).to_hex());
    assert_eq!(spam.content_type, "text");
    assert_eq!(spam.text.as_deref(), Some("buy my pills"));
    assert_eq!(spam.message, honest.message);
    assert_eq!(spam.reason.as_deref(), Some("spam"));
    assert_eq!(spam.franked_at_ms, honest.stamp.time_ms);
    assert_eq!(spam.reviewed_at_ms, None);
    assert_eq!(psst.sender, mallory.address());
    assert_eq!(psst.text.as_deref(), Some("psst"));

    // A moderator marks the first reviewed; the unreviewed list then holds the second.
    let (status, body) = server
        .request(
            reqwest::Method::POST,
            &format!("/v1/moderation/reports/{}/reviewed", spam.id),
            Some(MODERATOR_TOKEN),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
    let (status, body) = server
        .request(
            reqwest::Method::POST,
            "/v1/moderation/reports/999999/reviewed",
            Some(MODERATOR_TOKEN),
            None,
        )
        .await;
    assert_eq!((status, code(&body)), (StatusCode::NOT_FOUND, "not_found"));
    let (status, body) = server
        .get(
            "/v1/moderation/reports?unreviewed=true",
            Some(MODERATOR_TOKEN),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let listed: ModerationReportsResponse = serde_json::from_value(body).unwrap();
    assert_eq!(
        listed.reports.iter().map(|r| r.id).collect::<Vec<_>>(),
        [second.report_id]
    );
    let (_, body) = moderation(&server, Some(MODERATOR_TOKEN)).await;
    let listed: ModerationReportsResponse = serde_json::from_value(body).unwrap();
    assert!(listed.reports[0].reviewed_at_ms.is_some());
}

async fn moderation_needs_its_token(backend: Backend) {
    let (server, _secrets) = server_with_moderation(backend).await;
    let alice = register(&server, "alice", 1).await;
    for token in [None, Some("wrong-token-0123456789abcdef"), alice.token()] {
        let (status, body) = moderation(&server, token).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::UNAUTHORIZED, "unauthorized"),
            "{token:?}: {body}"
        );
        let (status, body) = server
            .request(
                reqwest::Method::POST,
                "/v1/moderation/reports/1/reviewed",
                token,
                None,
            )
            .await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::UNAUTHORIZED, "unauthorized"),
            "{token:?}: {body}"
        );
    }
    let (status, body) = moderation(&server, Some(MODERATOR_TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Without a configured token the routes are off.
    let plain = TestServer::start(backend).await;
    let (status, body) = moderation(&plain, Some(MODERATOR_TOKEN)).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::NOT_FOUND, "not_configured"),
        "{body}"
    );
}
