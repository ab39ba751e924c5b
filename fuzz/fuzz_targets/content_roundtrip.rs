//! Any bytes `Message::decode` or `Plaintext::decode` accepts must be the canonical encoding of
//! what it returns.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nightjar_core::content::{Message, Plaintext};

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = Message::decode(data) {
        let encoded = message.encode();
        assert_eq!(encoded, data, "decode accepted a non-canonical encoding");
        assert_eq!(Message::decode(&encoded), Ok(message));
    }
    if let Ok(plaintext) = Plaintext::decode(data) {
        let encoded = plaintext.encode();
        assert_eq!(encoded, data, "Plaintext::decode accepted a non-canonical encoding");
        assert_eq!(Plaintext::decode(&encoded), Ok(plaintext));
    }
});
