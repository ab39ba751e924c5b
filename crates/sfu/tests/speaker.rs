//! The active speaker follows whoever sends the loudest RFC 6464 audio level, as the SFU
//! reports it and as clients are told on the data channel; `last_n` then picks their video.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use nightjar_sfu::protocol::ClientMessage;
use nightjar_sfu::test_client::{Client, Options, eventually};
use nightjar_sfu::{ParticipantId, RoomId, Sfu, SfuConfig, TrackKind};

const ROOM: RoomId = RoomId([5; 16]);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_active_speaker_follows_the_loudest_audio_level() {
    let sfu = Sfu::bind_with_config(
        "127.0.0.1:0".parse().unwrap(),
        None,
        SfuConfig {
            last_n: Some(1),
            ..SfuConfig::default()
        },
    )
    .unwrap();
    let quiet = Options {
        audio_level: -90,
        ..Options::default()
    };
    let a = Client::join(
        &sfu,
        ROOM,
        ParticipantId(1),
        Options {
            audio_level: -20,
            ..quiet
        },
    )
    .await
    .unwrap();
    let b = Client::join(&sfu, ROOM, ParticipantId(2), quiet)
        .await
        .unwrap();
    let c = Client::join(&sfu, ROOM, ParticipantId(3), quiet)
        .await
        .unwrap();
    let clients = [&a, &b, &c];

    let sfu_ref = &sfu;
    let told = |who: ParticipantId| {
        move || {
            sfu_ref.active_speaker(ROOM) == Some(who)
                && clients.iter().all(|c| c.state().speaker == Some(who))
        }
    };
    assert!(
        eventually(Duration::from_secs(20), told(a.id)).await,
        "A never became speaker"
    );
    // With last_n = 1, C receives only the speaker's video.
    assert!(
        eventually(Duration::from_secs(10), || {
            c.state().received_from(a.id, TrackKind::Video).len() >= 5
        })
        .await
    );
    let from_b = c.state().received_from(b.id, TrackKind::Video).len();

    a.set_audio_level(-90);
    b.set_audio_level(-15);
    assert!(
        eventually(Duration::from_secs(10), told(b.id)).await,
        "B never took over"
    );
    // C's video switches to B, starting at a keyframe.
    assert!(
        eventually(Duration::from_secs(10), || {
            c.state().received_from(b.id, TrackKind::Video).len() >= from_b + 5
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let from_a = c.state().received_from(a.id, TrackKind::Video).len();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        c.state().received_from(a.id, TrackKind::Video).len(),
        from_a,
        "the previous speaker's video still flows with last_n = 1"
    );
    // Audio is never selected away.
    let audio_a = c.state().received_from(a.id, TrackKind::Audio).len();
    assert!(
        eventually(Duration::from_secs(5), || {
            c.state().received_from(a.id, TrackKind::Audio).len() > audio_a + 10
        })
        .await
    );
    // A subscription overrides: C asks for A's video only.
    c.send(ClientMessage::Subscribe {
        participants: Some(vec![a.id]),
    });
    assert!(
        eventually(Duration::from_secs(10), || {
            c.state().received_from(a.id, TrackKind::Video).len() >= from_a + 5
        })
        .await,
        "subscribing to A did not bring A's video back"
    );
}
