//! A call's media worker decrypts every frame the network hands it: any bytes, under any frame
//! kind, must be refused (or decrypted) without a panic, and never count as decrypted unless
//! they were made under the call's key.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nightjar_media::{CallMedia, FrameKind};

fuzz_target!(|data: &[u8]| {
    let mut receiver = CallMedia::new();
    if receiver.set_epoch(7, 1, &[0x42; nightjar_media::BASE_KEY_LEN]).is_err() {
        return;
    }
    for kind in [FrameKind::Audio, FrameKind::VideoKey, FrameKind::VideoDelta] {
        assert!(receiver.decrypt(data, kind).is_err(), "forged a frame without the key");
    }
});
