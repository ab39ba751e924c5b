//! Opening an arbitrary (possibly altered) state export never panics and never writes anything
//! unless the whole blob authenticates.

#![no_main]

use libfuzzer_sys::fuzz_target;
use nightjar_core::pickle::{self, PickleKey};
use nightjar_core::storage::MemoryStore;

fuzz_target!(|data: &[u8]| {
    let store = MemoryStore::new();
    let key = PickleKey::from_bytes([7; 32]);
    if pickle::import(data, &key, &store).is_err() {
        assert!(store.is_empty());
    }
});
