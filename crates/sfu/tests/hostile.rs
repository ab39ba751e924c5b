//! Hostile and mistaken inputs: garbage SDP, offers without the signalling channel, unknown and
//! full rooms, too many rooms, duplicate joins, and datagrams from unknown addresses. Each gets
//! a clear error and changes nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use nightjar_sfu::test_client::{Client, Options, eventually, offerer};
use nightjar_sfu::{ParticipantId, RoomId, Sfu, SfuConfig, SfuError, TrackKind};

const ROOM: RoomId = RoomId([1; 16]);
const OTHER: RoomId = RoomId([2; 16]);

fn sfu(config: SfuConfig) -> Sfu {
    Sfu::bind_with_config("127.0.0.1:0".parse().unwrap(), None, config).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_offers_are_refused_and_change_nothing() {
    let sfu = sfu(SfuConfig::default());
    let who = ParticipantId(1);
    for garbage in [
        "",
        "hello",
        "v=0\r\nm=audio\r\n",
        "v=0\r\nm=application x\r\n",
    ] {
        let err = sfu.join(ROOM, who, garbage.into()).await.unwrap_err();
        assert!(
            matches!(err, SfuError::InvalidSdp(_)),
            "{garbage:?}: {err:?}"
        );
    }
    // A well-formed session with no media at all.
    let empty = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n";
    assert_eq!(
        sfu.join(ROOM, who, empty.into()).await,
        Err(SfuError::NoDataChannel)
    );
    let no_channel = offerer(Options::default(), false).unwrap().offer;
    assert_eq!(
        sfu.join(ROOM, who, no_channel).await,
        Err(SfuError::NoDataChannel)
    );
    let stats = sfu.stats();
    assert_eq!((stats.rooms, stats.participants), (0, 0));
    assert!(sfu.participants(ROOM).is_empty());
    // The same participant can still join properly.
    Client::join(&sfu, ROOM, who, Options::default())
        .await
        .unwrap();
    assert_eq!(sfu.participants(ROOM), vec![who]);
    assert_eq!(
        sfu.join(ROOM, who, offerer(Options::default(), true).unwrap().offer)
            .await,
        Err(SfuError::AlreadyJoined {
            room: ROOM,
            participant: who
        })
    );
    assert_eq!(
        sfu.leave(OTHER, who),
        Err(SfuError::UnknownParticipant {
            room: OTHER,
            participant: who
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_full_and_surplus_rooms_are_refused() {
    let sfu = sfu(SfuConfig {
        max_rooms: 1,
        max_participants_per_room: 2,
        open_rooms_on_join: false,
        ..SfuConfig::default()
    });
    let offer = || offerer(Options::default(), true).unwrap().offer;
    assert_eq!(
        sfu.join(ROOM, ParticipantId(1), offer()).await,
        Err(SfuError::UnknownRoom(ROOM))
    );
    sfu.open_room(ROOM).unwrap();
    assert_eq!(sfu.open_room(OTHER), Err(SfuError::TooManyRooms(1)));
    let a = Client::join(&sfu, ROOM, ParticipantId(1), Options::default())
        .await
        .unwrap();
    let b = Client::join(&sfu, ROOM, ParticipantId(2), Options::default())
        .await
        .unwrap();
    assert_eq!(
        sfu.join(ROOM, ParticipantId(3), offer()).await,
        Err(SfuError::RoomFull { room: ROOM, max: 2 })
    );
    assert_eq!(
        sfu.join(OTHER, ParticipantId(3), offer()).await,
        Err(SfuError::UnknownRoom(OTHER))
    );
    assert_eq!(sfu.participants(ROOM), vec![a.id, b.id]);
    // The two in the room are unaffected.
    let flowing = eventually(Duration::from_secs(20), || {
        a.state().received_from(b.id, TrackKind::Video).len() >= 5
            && b.state().received_from(a.id, TrackKind::Video).len() >= 5
    })
    .await;
    assert!(flowing);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_from_unknown_addresses_are_dropped() {
    let sfu = sfu(SfuConfig::default());
    let a = Client::join(&sfu, ROOM, ParticipantId(1), Options::default())
        .await
        .unwrap();
    let b = Client::join(&sfu, ROOM, ParticipantId(2), Options::default())
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(20), || {
            a.state().received_from(b.id, TrackKind::Video).len() >= 5
        })
        .await
    );
    let before = sfu.stats();
    let stranger = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let junk: [&[u8]; 4] = [
        b"\x00\x01\x00\x00\x21\x12\xa4\x42garbage-stun-ish",
        b"\x80\x60\x00\x01\x00\x00\x00\x01\xde\xad\xbe\xefrtp-looking",
        b"\x16\xfe\xfd\x00\x00dtls-looking",
        b"plain garbage",
    ];
    for d in junk {
        stranger.send_to(d, sfu.local_addr()).await.unwrap();
    }
    assert!(
        eventually(Duration::from_secs(5), || {
            sfu.stats().datagrams_dropped >= before.datagrams_dropped + 4
        })
        .await,
        "junk was not counted as dropped"
    );
    let after = sfu.stats();
    assert_eq!((after.rooms, after.participants), (1, 2));
    // Nothing came back to the stranger.
    let mut buf = [0u8; 1500];
    let reply =
        tokio::time::timeout(Duration::from_millis(300), stranger.recv_from(&mut buf)).await;
    assert!(reply.is_err(), "the SFU answered a stranger");
    let n = a.state().received_from(b.id, TrackKind::Video).len();
    assert!(
        eventually(Duration::from_secs(5), || {
            a.state().received_from(b.id, TrackKind::Video).len() > n + 5
        })
        .await
    );
}
