//! Any bytes `Message::decode` accepts must be the canonical encoding of what it returns.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nightjar_core::content::Message;

fuzz_target!(|data: &[u8]| {
    let Ok(message) = Message::decode(data) else {
        return;
    };
    let encoded = message.encode();
    assert_eq!(encoded, data, "decode accepted a non-canonical encoding");
    assert_eq!(Message::decode(&encoded), Ok(message));
});
