//! End to end over HTTP and WebSocket with real MLS engines: a conversation created through
//! the server, delivery and acknowledgement, commit ordering, idempotency, reconnects, limits
//! and a restart of the server on the same data directory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use nightjar_api::*;
use nightjar_core::{ConversationId, Incoming};
use reqwest::StatusCode;

backend_tests!(
    message_delivered_over_the_stream_and_acked,
    concurrent_commits_one_wins_and_retries_are_idempotent,
    a_retried_send_is_queued_once,
    queue_drains_in_order_after_reconnect,
    sender_must_be_a_member_and_queues_are_bounded,
    restart_keeps_accounts_sessions_queues_and_epochs,
    shutdown_closes_streams,
);

/// alice and bob with a direct conversation that bob has joined (Welcome fetched and acked).
async fn direct_conversation(server: &TestServer) -> (Device, Device, ConversationId) {
    let (alice, mut bob, conv) = create_direct(server, server).await;

    let inbox: InboxResponse = server.get_ok("/v1/messages", bob.token()).await;
    assert_eq!(inbox.envelopes.len(), 1);
    let welcome = &inbox.envelopes[0];
    assert_eq!(welcome.kind, EnvelopeKind::Welcome);
    assert_eq!(welcome.conversation_id, None);
    assert_eq!(welcome.sender, alice.address());
    match bob.engine.process(NOW, &welcome.payload.0).unwrap() {
        Incoming::Joined { conversation, .. } => assert_eq!(conversation, conv),
        other => panic!("{other:?}"),
    }
    ack(server, &bob, vec![welcome.id]).await;
    // bob accepts alice, so her messages are not a message request limited to a few.
    accept(server, &bob, "alice").await;
    (alice, bob, conv)
}

async fn ack(server: &TestServer, device: &Device, ids: Vec<u64>) {
    let (status, body) = server
        .post("/v1/messages/ack", device.token(), &AckRequest { ids })
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
}

async fn send_text(
    server: &TestServer,
    device: &mut Device,
    conv: ConversationId,
    key: &str,
    body: &str,
) -> (StatusCode, serde_json::Value) {
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

async fn inbox_len(server: &TestServer, device: &Device) -> usize {
    let inbox: InboxResponse = server.get_ok("/v1/messages", device.token()).await;
    inbox.envelopes.len()
}

/// Waits until the device's queue holds `n` envelopes (acks over the stream are asynchronous).
async fn wait_for_queue(server: &TestServer, device: &Device, n: usize) {
    for _ in 0..100 {
        if inbox_len(server, device).await == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("queue never reached {n}");
}

async fn message_delivered_over_the_stream_and_acked(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (mut alice, mut bob, conv) = direct_conversation(&server).await;

    let mut ws = server.connect(&bob.token).await;
    ws.drained().await;
    let (status, body) = send_text(&server, &mut alice, conv, "m1", "hi bob").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let envelope = ws.envelope().await;
    assert_eq!(envelope.kind, EnvelopeKind::Application);
    assert_eq!(envelope.conversation_id, Some(conv.to_string()));
    assert_eq!(envelope.sender, alice.address());
    expect_text(
        &bob.engine.process(NOW, &envelope.payload.0).unwrap(),
        "hi bob",
    );
    ws.ack(vec![envelope.id]).await;
    wait_for_queue(&server, &bob, 0).await;

    // And back, fetched over HTTP by alice.
    let (status, _) = send_text(&server, &mut bob, conv, "m1", "hi alice").await;
    assert_eq!(status, StatusCode::OK, "idempotency keys are per device");
    let inbox: InboxResponse = server.get_ok("/v1/messages", alice.token()).await;
    assert_eq!(inbox.envelopes.len(), 1);
    expect_text(
        &alice
            .engine
            .process(NOW, &inbox.envelopes[0].payload.0)
            .unwrap(),
        "hi alice",
    );

    // A bad frame is answered with an error frame; the stream stays open.
    use futures_util::SinkExt as _;
    ws.ws
        .send(tokio_tungstenite::tungstenite::Message::Text(
            "{\"type\":\"nope\"}".into(),
        ))
        .await
        .unwrap();
    match ws.next().await {
        Some(ServerFrame::Error { error }) => assert_eq!(error.code, ErrorCode::BadRequest),
        other => panic!("{other:?}"),
    }
    // So is an acknowledgement the server refuses (it commits in the background); pushes go on.
    ws.ack((1..=1001).collect()).await;
    match ws.next().await {
        Some(ServerFrame::Error { error }) => assert_eq!(error.code, ErrorCode::TooLarge),
        other => panic!("{other:?}"),
    }
    let (status, body) = send_text(&server, &mut alice, conv, "m2", "still here").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let envelope = ws.envelope().await;
    ws.ack(vec![envelope.id]).await;
    wait_for_queue(&server, &bob, 0).await;
    ws.close().await;

    // Without headers (browsers) the first frame carries the token, never the URL; a wrong
    // token is refused (issue 8, finding 11: `?token=` is gone, see hostile_streams.rs).
    let url = server.base.replacen("http://", "ws://", 1);
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("{url}/v1/stream"))
        .await
        .unwrap();
    use futures_util::StreamExt as _;
    let auth = ClientFrame::Auth {
        token: StreamToken(alice.token.clone()),
    };
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        serde_json::to_string(&auth).unwrap().into(),
    ))
    .await
    .unwrap();
    let first = ws.next().await.unwrap().unwrap();
    assert!(first.to_text().unwrap().contains("envelope"));
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("{url}/v1/stream"))
        .await
        .unwrap();
    let auth = ClientFrame::Auth {
        token: StreamToken("nope".into()),
    };
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        serde_json::to_string(&auth).unwrap().into(),
    ))
    .await
    .unwrap();
    let refused = ws.next().await.unwrap().unwrap();
    assert!(
        refused.to_text().unwrap().contains("unauthorized"),
        "{refused:?}"
    );
}

async fn concurrent_commits_one_wins_and_retries_are_idempotent(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (mut alice, mut bob, conv) = direct_conversation(&server).await;
    let a = alice.engine.self_update(conv).unwrap();
    let b = bob.engine.self_update(conv).unwrap();
    assert_eq!((a.epoch, b.epoch), (1, 1));
    let (ra, rb) = tokio::join!(
        post_commit(&server, &mut alice, &a, "update-a"),
        post_commit(&server, &mut bob, &b, "update-b"),
    );
    let (winner, loser, win_bundle, win_key, lose_response) = match (ra.0, rb.0) {
        (StatusCode::OK, StatusCode::CONFLICT) => (&mut alice, &mut bob, &a, "update-a", rb.1),
        (StatusCode::CONFLICT, StatusCode::OK) => (&mut bob, &mut alice, &b, "update-b", ra.1),
        other => panic!("expected one 200 and one 409, got {other:?}"),
    };
    assert_eq!(code(&lose_response), "epoch_conflict");
    assert_eq!(lose_response["current_epoch"], 2);
    winner.engine.commit_accepted(NOW, conv).unwrap();

    // The winner retries its accepted commit (say its answer was lost): same answer, no conflict.
    let (status, body) = post_commit(&server, winner, win_bundle, win_key).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["epoch"], 2);

    // The loser applies the winning commit, then retries its own on the new epoch.
    let inbox: InboxResponse = server.get_ok("/v1/messages", loser.token()).await;
    assert_eq!(
        inbox.envelopes.len(),
        1,
        "the retried commit was not queued again"
    );
    let envelope = &inbox.envelopes[0];
    assert_eq!(envelope.kind, EnvelopeKind::Commit);
    assert!(matches!(
        loser.engine.process(NOW, &envelope.payload.0).unwrap(),
        Incoming::Commit { epoch: 2, .. }
    ));
    ack(&server, loser, vec![envelope.id]).await;
    let intent = loser.engine.commit_rejected(conv).unwrap().unwrap();
    let retry = loser.engine.retry(conv, intent).unwrap().unwrap();
    assert_eq!(retry.epoch, 2);
    let (status, body) = post_commit(&server, loser, &retry, "retry").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["epoch"], 3);
    loser.engine.commit_accepted(NOW, conv).unwrap();

    // A stale commit (epoch 1) gets the current epoch.
    let (status, body) = post_commit(&server, winner, win_bundle, "stale").await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::CONFLICT, "epoch_conflict")
    );
    assert_eq!(body["current_epoch"], 3);
}

async fn a_retried_send_is_queued_once(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (mut alice, bob, conv) = direct_conversation(&server).await;
    let out = alice.engine.encrypt(NOW, conv, &text("once")).unwrap();
    let request = send_request(
        "same-key",
        EnvelopeKind::Application,
        out.epoch,
        out.message,
    );
    let path = format!("/v1/conversations/{conv}/messages");
    let first: SendResponse = server.post_ok(&path, alice.token(), &request).await;
    let second: SendResponse = server.post_ok(&path, alice.token(), &request).await;
    assert_eq!(first, second);
    assert_eq!(inbox_len(&server, &bob).await, 1);
}

async fn queue_drains_in_order_after_reconnect(backend: Backend) {
    let server = TestServer::start(backend).await;
    let (mut alice, mut bob, conv) = direct_conversation(&server).await;
    for i in 0..5 {
        let (status, _) = send_text(
            &server,
            &mut alice,
            conv,
            &format!("k{i}"),
            &format!("m{i}"),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    let mut ws = server.connect(&bob.token).await;
    let mut first = Vec::new();
    for i in 0..5 {
        let envelope = ws.envelope().await;
        expect_text(
            &bob.engine.process(NOW, &envelope.payload.0).unwrap(),
            &format!("m{i}"),
        );
        first.push(envelope);
    }
    ws.drained().await;
    assert!(first.windows(2).all(|w| w[0].id < w[1].id));
    ws.close().await;

    // Nothing was acknowledged: everything again, in the same order.
    let mut ws = server.connect(&bob.token).await;
    for expected in &first {
        assert_eq!(&ws.envelope().await, expected);
    }
    ws.drained().await;
    ws.ack(first[..3].iter().map(|e| e.id).collect()).await;
    wait_for_queue(&server, &bob, 2).await;
    ws.close().await;

    let mut ws = server.connect(&bob.token).await;
    assert_eq!(&ws.envelope().await, &first[3]);
    assert_eq!(&ws.envelope().await, &first[4]);
    ws.drained().await;

    // Paging over HTTP sees the same queue.
    let page: InboxResponse = server
        .get_ok(
            &format!("/v1/messages?after={}&limit=1", first[3].id),
            bob.token(),
        )
        .await;
    assert_eq!(page.envelopes, vec![first[4].clone()]);
}

async fn sender_must_be_a_member_and_queues_are_bounded(backend: Backend) {
    let mut limits = test_limits();
    limits.max_queue_len = 2;
    let server = TestServer::with_limits(backend, limits).await;
    let (mut alice, _bob, conv) = direct_conversation(&server).await;
    let carol = register(&server, "carol", 0).await;
    let path = format!("/v1/conversations/{conv}/messages");

    let out = alice.engine.encrypt(NOW, conv, &text("a")).unwrap();
    let replayed = send_request(
        "c1",
        EnvelopeKind::Application,
        out.epoch,
        out.message.clone(),
    );
    let (status, body) = server.post(&path, carol.token(), &replayed).await;
    assert_eq!(
        (status, code(&body)),
        (StatusCode::FORBIDDEN, "not_a_member")
    );

    // The request must match its MLS message: kind, conversation and epoch.
    let mut wrong_kind = replayed.clone();
    wrong_kind.kind = EnvelopeKind::Proposal;
    let mut wrong_epoch = replayed.clone();
    wrong_epoch.epoch = 7;
    for request in [wrong_kind, wrong_epoch] {
        let (status, body) = server.post(&path, alice.token(), &request).await;
        assert_eq!(
            (status, code(&body)),
            (StatusCode::BAD_REQUEST, "bad_request")
        );
    }
    let other = format!("/v1/conversations/{}/messages", "0".repeat(32));
    let (status, _) = server.post(&other, alice.token(), &replayed).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let (status, _) = server.post(&path, alice.token(), &replayed).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = send_text(&server, &mut alice, conv, "k2", "b").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = send_text(&server, &mut alice, conv, "k3", "c").await;
    assert_eq!((status.as_u16(), code(&body)), (507, "queue_full"));
}

async fn restart_keeps_accounts_sessions_queues_and_epochs(backend: Backend) {
    let mut server = TestServer::start(backend).await;
    let (mut alice, mut bob, conv) = direct_conversation(&server).await;
    let out = alice
        .engine
        .encrypt(NOW, conv, &text("before restart"))
        .unwrap();
    let request = send_request("durable", EnvelopeKind::Application, out.epoch, out.message);
    let path = format!("/v1/conversations/{conv}/messages");
    let sent: SendResponse = server.post_ok(&path, alice.token(), &request).await;
    let update = alice.engine.self_update(conv).unwrap();

    server.restart().await;

    // Sessions, queues, idempotency keys and epochs survived; so did the OPAQUE setup.
    let inbox: InboxResponse = server.get_ok("/v1/messages", bob.token()).await;
    assert_eq!(inbox.envelopes.len(), 1);
    expect_text(
        &bob.engine
            .process(NOW, &inbox.envelopes[0].payload.0)
            .unwrap(),
        "before restart",
    );
    let again: SendResponse = server.post_ok(&path, alice.token(), &request).await;
    assert_eq!(again, sent);
    let (status, body) = login_existing(&server, &alice, PASSWORD).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = post_commit(&server, &mut alice, &update, "after-restart").await;
    assert_eq!(status, StatusCode::OK, "epoch 1 is still current: {body}");
    let (status, body) = post_commit(&server, &mut alice, &update, "after-restart-2").await;
    assert_eq!(
        (status, body["current_epoch"].as_u64()),
        (StatusCode::CONFLICT, Some(2))
    );
    server.stop().await;
}

async fn shutdown_closes_streams(backend: Backend) {
    let mut server = TestServer::start(backend).await;
    let alice = register(&server, "alice", 0).await;
    let mut ws = server.connect(&alice.token).await;
    ws.drained().await;
    server.stop().await;
    use futures_util::StreamExt as _;
    match ws.ws.next().await {
        Some(Ok(tokio_tungstenite::tungstenite::Message::Close(Some(frame)))) => {
            assert_eq!(u16::from(frame.code), 1001);
        }
        other => panic!("expected a close frame, got {other:?}"),
    }
}
