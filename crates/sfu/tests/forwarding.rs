//! End to end over real UDP on 127.0.0.1: three native WebRTC clients publish synthetic
//! SFrame-style Opus and VP8 frames and each receives the other two's frames byte for byte; the
//! tap sees exactly what the publishers sent.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use nightjar_sfu::test_client::{Client, Options, assert_run_of, eventually};
use nightjar_sfu::{ParticipantId, RoomId, Sfu, TrackKind};

fn sfu() -> Sfu {
    Sfu::bind("127.0.0.1:0".parse().unwrap(), None).unwrap()
}

const ROOM: RoomId = RoomId([7; 16]);

async fn three(sfu: &Sfu) -> Vec<Client> {
    let mut clients = Vec::new();
    for i in 1..=3 {
        clients.push(
            Client::join(sfu, ROOM, ParticipantId(i), Options::default())
                .await
                .unwrap(),
        );
    }
    clients
}

/// Waits until every client got at least `n` video frames from every other.
async fn all_receive(clients: &[Client], n: usize) -> bool {
    eventually(Duration::from_secs(20), || {
        clients.iter().all(|rx| {
            clients.iter().filter(|tx| tx.id != rx.id).all(|tx| {
                let st = rx.state();
                st.received_from(tx.id, TrackKind::Video).len() >= n
                    && st.received_from(tx.id, TrackKind::Audio).len() >= 2 * n
            })
        })
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_participants_receive_each_others_frames_byte_for_byte() {
    let sfu = sfu();
    let clients = three(&sfu).await;
    assert!(
        all_receive(&clients, 15).await,
        "media did not flow to everyone"
    );
    for c in &clients {
        c.publish(false);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    for rx in &clients {
        let st = rx.state();
        assert!(
            st.received.iter().all(|f| f.from != Some(rx.id)),
            "own media came back"
        );
        assert_eq!(st.tracks.len(), 4, "two tracks from each of the two others");
        for tx in clients.iter().filter(|tx| tx.id != rx.id) {
            let sent = tx.state();
            for kind in [TrackKind::Audio, TrackKind::Video] {
                let what = format!("{:?} from {} to {}", kind, tx.id, rx.id);
                assert_run_of(&sent.sent_of(kind), &st.received_from(tx.id, kind), &what);
            }
            // Video starts at a keyframe, with its clear VP8 header intact.
            let first = st
                .received
                .iter()
                .find(|f| f.from == Some(tx.id) && f.kind == TrackKind::Video)
                .unwrap();
            assert!(first.keyframe);
            assert_eq!(
                first.data[..10],
                nightjar_sfu::test_client::vp8_keyframe_header()
            );
        }
    }
    let stats = sfu.stats();
    assert_eq!(stats.rooms, 1);
    assert_eq!(stats.participants, 3);
    assert_eq!(stats.connected, 3);
    assert_eq!(stats.forwarded_streams, 12);
    assert!(stats.frames_forwarded > 0 && stats.bytes_forwarded > 0);
    assert_eq!(stats.datagrams_dropped, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tap_sees_exactly_the_bytes_publishers_sent() {
    let sfu = sfu();
    let mut tap = sfu.tap(ROOM);
    let clients = three(&sfu).await;
    assert!(
        all_receive(&clients, 10).await,
        "media did not flow to everyone"
    );
    for c in &clients {
        c.publish(false);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let mut tapped = Vec::new();
    while let Ok(frame) = tap.try_recv() {
        tapped.push(frame);
    }
    for tx in &clients {
        let sent = tx.state();
        for kind in [TrackKind::Audio, TrackKind::Video] {
            let seen: Vec<Vec<u8>> = tapped
                .iter()
                .filter(|f| f.participant == tx.id && f.kind == kind)
                .map(|f| f.data.clone())
                .collect();
            let sent_frames = sent.sent_of(kind);
            // The tap saw every frame from the first one on, unaltered.
            assert_eq!(seen, sent_frames, "{kind:?} of {}", tx.id);
        }
        for f in tapped.iter().filter(|f| f.participant == tx.id) {
            if f.kind == TrackKind::Video {
                assert_eq!(f.keyframe, f.data[0] & 1 == 0);
            }
        }
    }
    // Dropping the tap stops the copying; the room keeps working.
    drop(tap);
}
