//! Arbitrary bytes posted to the server as a commit, a proposal or a creation GroupInfo: the
//! server's secret-free validation ([`nightjar_core::handshake`]) never panics, refuses
//! everything but what the real group's members sign, and a refused input leaves the state's
//! encoding unchanged.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use nightjar_core::handshake::PublicState;
use nightjar_core::identity::DeviceCredential;
use nightjar_core::storage::MemoryStore;
use nightjar_core::{ConversationId, ConversationKind, Engine, EngineConfig, Suite};

const NOW: u64 = 1_800_000_000_000;

/// The server's stored state of a live direct conversation at epoch 1, and its id.
fn stored() -> &'static (ConversationId, Vec<u8>, DeviceCredential) {
    static STATE: OnceLock<(ConversationId, Vec<u8>, DeviceCredential)> = OnceLock::new();
    STATE.get_or_init(|| {
        let config = EngineConfig {
            suite: Suite::Classic,
            ..EngineConfig::default()
        };
        let (mut alice, alice_list) =
            Engine::create_account(MemoryStore::new(), "alice", config.clone(), NOW).unwrap();
        let (mut bob, bob_list) =
            Engine::create_account(MemoryStore::new(), "bob", config, NOW).unwrap();
        alice.accept_device_list("bob", &bob_list).unwrap();
        bob.accept_device_list("alice", &alice_list).unwrap();
        let kps = bob.generate_key_packages(1, false).unwrap();
        let (conv, bundle) = alice
            .create_conversation(NOW, ConversationKind::Direct, &["bob"], None, &kps)
            .unwrap();
        let me = alice.device().clone();
        let key = alice.device_entry(NOW).signature_key;
        let mut state =
            PublicState::from_group_info(conv, &bundle.group_info.unwrap(), &me, &key).unwrap();
        state.process_commit(conv, &bundle.commit, &me).unwrap();
        (conv, state.encode().unwrap(), me)
    })
}

fuzz_target!(|data: &[u8]| {
    let (conv, bytes, alice) = stored();
    let mut state = PublicState::decode(*conv, bytes, &[]).unwrap();
    if state.process_commit(*conv, data, alice).is_err() {
        assert_eq!(&state.encode().unwrap(), bytes, "a refused commit changed state");
    }
    let mut state = PublicState::decode(*conv, bytes, &[]).unwrap();
    let _ = state.process_proposal(*conv, data, alice);
    let _ = PublicState::decode(*conv, bytes, &[data.to_vec()]);
    let _ = PublicState::from_group_info(*conv, data, alice, &[0; 32]);
    let _ = PublicState::decode(*conv, data, &[]);
});
