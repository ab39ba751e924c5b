//! A downloaded blob is whatever the server sent: any bytes, under any size and digest the
//! pointer claims, must be refused (or opened) without a panic, pushed in any slicing. And
//! whatever the opener accepts must be exactly what sealing its output again gives: the
//! plaintext is `size` bytes and the blob is the one sealed from it under the key (no padding
//! or bytes past the size came through, nothing was forged without the key).
//!
//! Input: `size` (u32, big endian), a slice length (u16), the claimed digest (32 bytes), then
//! the ciphertext.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nightjar_core::attachment::{AttachmentKey, Opener, Sealer};

fuzz_target!(|data: &[u8]| {
    let Some((header, ciphertext)) = data.split_at_checked(4 + 2 + 32) else {
        return;
    };
    let size = u64::from(u32::from_be_bytes([
        header[0], header[1], header[2], header[3],
    ]));
    let step = usize::from(u16::from_be_bytes([header[4], header[5]])).max(1);
    let mut digest = [0u8; 32];
    digest.copy_from_slice(&header[6..]);
    let key = AttachmentKey::from_bytes([0x42; 32]);
    let Ok(mut opener) = Opener::new(&key, size, digest) else {
        return;
    };
    let mut plaintext = Vec::new();
    for piece in ciphertext.chunks(step) {
        match opener.push(piece) {
            Ok(bytes) => plaintext.extend_from_slice(&bytes),
            Err(_) => {
                assert!(opener.finish().is_err(), "a failed opener finished");
                return;
            }
        }
    }
    if opener.finish().is_err() {
        return;
    }
    assert_eq!(
        plaintext.len() as u64,
        size,
        "opened a plaintext of another size"
    );
    let mut sealer = Sealer::new(&key, size).expect("the opener took this size");
    let mut sealed = sealer
        .push(&plaintext)
        .expect("plaintext of the declared size");
    let (rest, resealed_digest) = sealer.finish().expect("sealing completes");
    sealed.extend_from_slice(&rest);
    assert_eq!(
        sealed, ciphertext,
        "opened a blob that is not the sealing of its plaintext"
    );
    assert_eq!(resealed_digest, digest);
});
