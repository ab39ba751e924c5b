//! Any bytes `SignedDeviceList::decode` accepts must be canonical, and verifying never panics.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nightjar_core::identity::SignedDeviceList;

fuzz_target!(|data: &[u8]| {
    let Ok(list) = SignedDeviceList::decode(data) else {
        return;
    };
    let encoded = list.encode();
    assert_eq!(encoded, data, "decode accepted a non-canonical encoding");
    assert_eq!(SignedDeviceList::decode(&encoded).ok(), Some(list.clone()));
    let _ = list.verify();
});
