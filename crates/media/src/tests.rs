use proptest::prelude::*;

use super::*;

const KEY: [u8; BASE_KEY_LEN] = [7; BASE_KEY_LEN];

fn member(epoch: u64, leaf: u32, key: &[u8]) -> CallMedia {
    let mut media = CallMedia::new();
    media.set_epoch(epoch, leaf, key).unwrap();
    media
}

fn vp8_keyframe() -> Vec<u8> {
    let mut frame = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0xe0, 0x01];
    frame.extend((0..500u32).map(|i| (i % 251) as u8));
    frame
}

#[test]
fn a_member_decrypts_what_another_sent() {
    let mut alice = member(4, 0, &KEY);
    let mut bob = member(4, 1, &KEY);
    for (frame, kind) in [
        (vec![1, 2, 3, 4, 5], FrameKind::Audio),
        (vp8_keyframe(), FrameKind::VideoKey),
        (vec![0x31, 0x00, 0x00, 9, 9, 9], FrameKind::VideoDelta),
    ] {
        let sealed = alice.encrypt(&frame, kind).unwrap();
        assert_ne!(sealed, frame);
        assert_eq!(bob.decrypt(&sealed, kind).unwrap(), frame);
    }
    assert_eq!(alice.stats().encrypted, 3);
    assert_eq!(bob.stats().decrypted, 3);
}

#[test]
fn video_keeps_its_payload_header_readable_and_only_that() {
    let mut alice = member(4, 0, &KEY);
    let frame = vp8_keyframe();
    let sealed = alice.encrypt(&frame, FrameKind::VideoKey).unwrap();
    assert_eq!(sealed[..VP8_KEYFRAME_CLEAR], frame[..VP8_KEYFRAME_CLEAR]);
    // Nothing of the picture itself shows: no 16-byte run of the plaintext survives.
    let body = &frame[VP8_KEYFRAME_CLEAR..];
    let rest = &sealed[VP8_KEYFRAME_CLEAR..];
    assert!(!rest.windows(16).any(|w| body.windows(16).any(|b| b == w)));
}

#[test]
fn a_changed_readable_prefix_or_body_makes_the_frame_fail() {
    let mut alice = member(4, 0, &KEY);
    let mut bob = member(4, 1, &KEY);
    let sealed = alice.encrypt(&vp8_keyframe(), FrameKind::VideoKey).unwrap();
    for at in [0, 5, sealed.len() - 1, sealed.len() / 2] {
        let mut changed = sealed.clone();
        changed[at] ^= 1;
        assert!(
            bob.decrypt(&changed, FrameKind::VideoKey).is_err(),
            "byte {at}"
        );
    }
    assert!(bob.decrypt(&sealed, FrameKind::VideoKey).is_ok());
}

#[test]
fn without_the_epochs_key_nothing_decrypts() {
    let mut alice = member(4, 0, &KEY);
    let mut outsider = member(4, 1, &[8; BASE_KEY_LEN]);
    let mut stale = member(3, 1, &KEY);
    let sealed = alice.encrypt(&[1, 2, 3], FrameKind::Audio).unwrap();
    assert_eq!(
        outsider.decrypt(&sealed, FrameKind::Audio),
        Err(MediaError::Undecryptable)
    );
    assert_eq!(
        stale.decrypt(&sealed, FrameKind::Audio),
        Err(MediaError::UnknownKey)
    );
    assert_eq!(outsider.stats().failed, 1);
    let mut nobody = CallMedia::new();
    assert_eq!(
        nobody.encrypt(&[1], FrameKind::Audio),
        Err(MediaError::NoSendKey)
    );
}

#[test]
fn a_replayed_frame_is_refused() {
    let mut alice = member(4, 0, &KEY);
    let mut bob = member(4, 1, &KEY);
    let first = alice.encrypt(&[1], FrameKind::Audio).unwrap();
    let second = alice.encrypt(&[2], FrameKind::Audio).unwrap();
    assert!(bob.decrypt(&second, FrameKind::Audio).is_ok());
    assert!(
        bob.decrypt(&first, FrameKind::Audio).is_ok(),
        "late, not replayed"
    );
    assert_eq!(
        bob.decrypt(&second, FrameKind::Audio),
        Err(MediaError::Replayed)
    );
}

#[test]
fn after_an_epoch_change_both_epochs_decrypt_until_it_ages_out() {
    let mut alice = member(4, 0, &KEY);
    let mut bob = member(4, 1, &KEY);
    let old = alice.encrypt(&[1], FrameKind::Audio).unwrap();
    let key5 = [5; BASE_KEY_LEN];
    alice.set_epoch(5, 2, &key5).unwrap();
    let new = alice.encrypt(&[2], FrameKind::Audio).unwrap();
    assert_eq!(
        bob.decrypt(&new, FrameKind::Audio),
        Err(MediaError::UnknownKey)
    );
    bob.set_epoch(5, 1, &key5).unwrap();
    assert_eq!(bob.decrypt(&new, FrameKind::Audio).unwrap(), vec![2]);
    assert_eq!(bob.decrypt(&old, FrameKind::Audio).unwrap(), vec![1]);
    for epoch in 6..=7 {
        bob.set_epoch(epoch, 1, &[epoch as u8; BASE_KEY_LEN])
            .unwrap();
    }
    let again = alice.encrypt(&[3], FrameKind::Audio).unwrap();
    assert!(
        bob.decrypt(&again, FrameKind::Audio).is_ok(),
        "epoch 5 is kept"
    );
    bob.set_epoch(8, 1, &[8; BASE_KEY_LEN]).unwrap();
    let late = alice.encrypt(&[4], FrameKind::Audio).unwrap();
    assert_eq!(
        bob.decrypt(&late, FrameKind::Audio),
        Err(MediaError::UnknownKey),
        "epoch 5 aged out"
    );
}

#[test]
fn an_older_epoch_given_late_does_not_replace_the_sending_key() {
    let mut alice = member(5, 0, &KEY);
    alice.set_epoch(4, 3, &[4; BASE_KEY_LEN]).unwrap();
    let sealed = alice.encrypt(&[1], FrameKind::Audio).unwrap();
    let mut bob = member(5, 1, &KEY);
    assert!(bob.decrypt(&sealed, FrameKind::Audio).is_ok());
}

#[test]
fn key_ids_carry_the_leaf_and_the_epoch() {
    assert_eq!(key_id(0x1_05, 3).unwrap(), (3 << 8) | 0x05);
    assert_eq!(key_id(1, u32::from(u16::MAX)).unwrap(), (0xffff << 8) | 1);
    assert_eq!(key_id(1, 1 << 16), Err(MediaError::InvalidKey));
    let mut media = CallMedia::new();
    assert_eq!(media.set_epoch(1, 0, &[0; 15]), Err(MediaError::InvalidKey));
}

#[test]
fn debug_shows_no_key() {
    let media = member(4, 0, &KEY);
    assert_eq!(
        format!("{media:?}"),
        "CallMedia { epochs: [4], stats: MediaStats { encrypted: 0, decrypted: 0, failed: 0 }, .. }"
    );
}

proptest! {
    #[test]
    fn any_bytes_are_refused_without_a_panic(data in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut bob = member(4, 1, &KEY);
        for kind in [FrameKind::Audio, FrameKind::VideoKey, FrameKind::VideoDelta] {
            prop_assert!(bob.decrypt(&data, kind).is_err());
        }
    }

    #[test]
    fn every_frame_round_trips(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
        let mut alice = member(9, 2, &KEY);
        let mut bob = member(9, 1, &KEY);
        for kind in [FrameKind::Audio, FrameKind::VideoKey, FrameKind::VideoDelta] {
            if data.len() < kind.clear_bytes() {
                prop_assert_eq!(alice.encrypt(&data, kind), Err(MediaError::TooShort));
                continue;
            }
            let sealed = alice.encrypt(&data, kind).unwrap();
            prop_assert_eq!(bob.decrypt(&sealed, kind).unwrap(), data.clone());
        }
    }
}
