//! Arbitrary bytes from "the server" into a device that is in a live conversation: processing
//! never panics, and whatever it refuses leaves the device's stored state exactly as it was.

#![no_main]

use std::sync::{Arc, Mutex, OnceLock};

use libfuzzer_sys::fuzz_target;
use nightjar_core::storage::{KvStore, MemoryStore};
use nightjar_core::{ConversationKind, Engine, EngineConfig, Suite};

const NOW: u64 = 1_800_000_000_000;

fn bob() -> &'static Mutex<Engine<Arc<MemoryStore>>> {
    static BOB: OnceLock<Mutex<Engine<Arc<MemoryStore>>>> = OnceLock::new();
    BOB.get_or_init(|| {
        let config = EngineConfig {
            suite: Suite::Classic,
            ..EngineConfig::default()
        };
        let (mut alice, alice_list) =
            Engine::create_account(MemoryStore::new(), "alice", config.clone(), NOW).unwrap();
        let (mut bob, bob_list) =
            Engine::create_account(Arc::new(MemoryStore::new()), "bob", config, NOW).unwrap();
        alice.accept_device_list("bob", &bob_list).unwrap();
        bob.accept_device_list("alice", &alice_list).unwrap();
        let kps = bob.generate_key_packages(1, false).unwrap();
        let (conv, bundle) = alice
            .create_conversation(NOW, ConversationKind::Direct, &["bob"], None, &kps)
            .unwrap();
        alice.commit_accepted(NOW, conv).unwrap();
        bob.process(NOW, &bundle.welcome.unwrap()).unwrap();
        Mutex::new(bob)
    })
}

fuzz_target!(|data: &[u8]| {
    let mut bob = bob().lock().unwrap();
    let before = bob.store().entries().unwrap();
    if bob.process(NOW, data).is_err() {
        assert_eq!(
            bob.store().entries().unwrap(),
            before,
            "a refused input changed state"
        );
    }
});
