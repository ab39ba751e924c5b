//! Any bytes `GroupMetadata::decode` accepts must be the canonical encoding of what it returns.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nightjar_core::content::GroupMetadata;

fuzz_target!(|data: &[u8]| {
    let Ok(metadata) = GroupMetadata::decode(data) else {
        return;
    };
    let encoded = metadata.encode();
    assert_eq!(encoded, data, "decode accepted a non-canonical encoding");
    assert_eq!(GroupMetadata::decode(&encoded), Ok(metadata));
});
