//! Joining and leaving mid-call, over real UDP: a newcomer receives everyone (after a keyframe
//! request to each publisher) and everyone receives it; a participant who leaves is
//! renegotiated away; a kicked participant receives nothing more.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use nightjar_sfu::test_client::{Client, Options, assert_run_of, eventually};
use nightjar_sfu::{ParticipantId, RoomId, Sfu, SfuError, SfuEvent, TrackKind};

const ROOM: RoomId = RoomId([9; 16]);

fn sfu() -> Sfu {
    Sfu::bind("127.0.0.1:0".parse().unwrap(), None).unwrap()
}

async fn join(sfu: &Sfu, id: u64) -> Client {
    Client::join(sfu, ROOM, ParticipantId(id), Options::default())
        .await
        .unwrap()
}

fn video_from(rx: &Client, tx: &Client) -> usize {
    rx.state().received_from(tx.id, TrackKind::Video).len()
}

fn frames_from(rx: &Client, tx: &Client) -> usize {
    rx.state()
        .received
        .iter()
        .filter(|f| f.from == Some(tx.id))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_gets_everyone_after_a_keyframe_request_and_a_leaver_is_renegotiated_away() {
    let sfu = sfu();
    let mut events = sfu.events();
    let mut clients = Vec::new();
    for id in 1..=3 {
        clients.push(join(&sfu, id).await);
    }
    let flowing = eventually(Duration::from_secs(20), || {
        clients.iter().all(|rx| {
            clients
                .iter()
                .filter(|tx| tx.id != rx.id)
                .all(|tx| video_from(rx, tx) >= 10)
        })
    })
    .await;
    assert!(flowing, "media did not flow among the first three");
    // Let any request merged into the throttle interval go out first.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let requests_before: Vec<usize> = clients
        .iter()
        .map(|c| c.state().keyframe_requests)
        .collect();

    let newcomer = join(&sfu, 4).await;
    let got_all = eventually(Duration::from_secs(20), || {
        clients.iter().all(|tx| video_from(&newcomer, tx) >= 5)
            && clients.iter().all(|rx| video_from(rx, &newcomer) >= 5)
    })
    .await;
    assert!(
        got_all,
        "the newcomer and the others did not receive each other"
    );
    for (c, before) in clients.iter().zip(&requests_before) {
        assert!(
            c.state().keyframe_requests > *before,
            "{} got no keyframe request when 4 joined",
            c.id
        );
        let n = newcomer.state();
        let sent = c.state();
        assert_run_of(
            &sent.sent_of(TrackKind::Video),
            &n.received_from(c.id, TrackKind::Video),
            "video to the newcomer",
        );
        let first = n
            .received
            .iter()
            .find(|f| f.from == Some(c.id) && f.kind == TrackKind::Video)
            .unwrap();
        assert!(
            first.keyframe,
            "the newcomer's video from {} began mid-GOP",
            c.id
        );
    }
    assert_eq!(newcomer.state().tracks.len(), 6);

    // Participant 3 leaves.
    let leaver = clients.pop().unwrap();
    let offers_before: Vec<usize> = clients.iter().map(|c| c.state().offers).collect();
    sfu.leave(ROOM, leaver.id).unwrap();
    assert_eq!(
        sfu.participants(ROOM),
        vec![ParticipantId(1), ParticipantId(2), ParticipantId(4)]
    );
    let others = [&clients[0], &clients[1], &newcomer];
    let renegotiated = eventually(Duration::from_secs(10), || {
        others.iter().enumerate().all(|(i, c)| {
            let st = c.state();
            st.tracks.values().all(|t| t.participant != leaver.id)
                && st.tracks.len() == 4
                && offers_before.get(i).is_none_or(|b| st.offers > *b)
        })
    })
    .await;
    assert!(renegotiated, "the others were not renegotiated");
    // Nothing more of the leaver's arrives.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let counts: Vec<usize> = others.iter().map(|c| frames_from(c, &leaver)).collect();
    tokio::time::sleep(Duration::from_millis(700)).await;
    for (c, n) in others.iter().zip(counts) {
        assert_eq!(
            frames_from(c, &leaver),
            n,
            "{} still receives the leaver",
            c.id
        );
    }
    // And the rest still flows.
    let before = video_from(&newcomer, &clients[0]);
    assert!(
        eventually(Duration::from_secs(5), || video_from(
            &newcomer,
            &clients[0]
        ) > before + 5)
        .await
    );
    assert!(eventually(Duration::from_secs(5), || leaver.state().closed).await);

    let mut left = false;
    while let Ok(e) = events.try_recv() {
        if let SfuEvent::Left { participant, .. } = e {
            left |= participant == leaver.id;
        }
    }
    assert!(left, "no Left event");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kicked_participant_receives_nothing_more() {
    let sfu = sfu();
    let a = join(&sfu, 1).await;
    let b = join(&sfu, 2).await;
    let flowing = eventually(Duration::from_secs(20), || {
        video_from(&a, &b) >= 10 && video_from(&b, &a) >= 10
    })
    .await;
    assert!(flowing);

    sfu.kick(ROOM, b.id).unwrap();
    assert_eq!(sfu.participants(ROOM), vec![a.id]);
    assert_eq!(
        sfu.kick(ROOM, b.id),
        Err(SfuError::UnknownParticipant {
            room: ROOM,
            participant: b.id
        })
    );
    // Whatever was already on the wire lands within a moment; after that, nothing.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let received = b.state().received.len();
    let from_b = frames_from(&a, &b);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        b.state().received.len(),
        received,
        "the kicked one still receives"
    );
    assert_eq!(
        frames_from(&a, &b),
        from_b,
        "the kicked one is still forwarded"
    );
    assert_eq!(b.state().bye.as_deref(), Some("kicked"));
    // b keeps sending; the SFU drops it as from an unknown address.
    assert!(sfu.stats().datagrams_dropped > 0);
    assert_eq!(sfu.stats().participants, 1);
}
