//! The cost of the engine's hot path where the web client runs it: one 1 KiB text message
//! encrypted by one device and decrypted by another (X-Wing suite, in memory). The same code
//! runs natively (`cargo run --release -p nightjar-web --example roundtrip`) and in the page
//! (`nightjarBenchRoundtrip`), so the two can be set against each other in one session.

use nightjar_core::content::{Content, Message, MessageId};
use nightjar_core::storage::MemoryStore;
use nightjar_core::{ConversationKind, Engine, EngineConfig};

const NOW: u64 = 1_800_000_000_000;

/// Microseconds per encrypt + decrypt of a 1 KiB message, over `iterations` messages;
/// `clock` gives milliseconds.
pub fn roundtrip(iterations: u32, clock: impl Fn() -> f64) -> Result<f64, String> {
    let e = |e: nightjar_core::Error| e.to_string();
    let (mut alice, alice_list) =
        Engine::create_account(MemoryStore::new(), "alice", EngineConfig::default(), NOW)
            .map_err(e)?;
    let (mut bob, bob_list) =
        Engine::create_account(MemoryStore::new(), "bob", EngineConfig::default(), NOW)
            .map_err(e)?;
    alice.accept_device_list("bob", &bob_list).map_err(e)?;
    bob.accept_device_list("alice", &alice_list).map_err(e)?;
    let key_packages = bob.generate_key_packages(1, false).map_err(e)?;
    let (conversation, bundle) = alice
        .create_conversation(NOW, ConversationKind::Direct, &["bob"], None, &key_packages)
        .map_err(e)?;
    alice.commit_accepted(NOW, conversation).map_err(e)?;
    let welcome = bundle.welcome.ok_or("no welcome")?;
    bob.process(NOW, &welcome).map_err(e)?;
    let body: String = "x".repeat(1024);
    let start = clock();
    for i in 0..iterations {
        let mut id = [0u8; 16];
        id[..4].copy_from_slice(&i.to_be_bytes());
        let message = Message {
            id: MessageId(id),
            sent_at_ms: NOW,
            expires_after_secs: None,
            content: Content::Text { body: body.clone() },
        };
        let out = alice.encrypt(NOW, conversation, &message).map_err(e)?;
        if let Some(update) = out.self_update {
            // A policy self-update: not part of the per-message cost, but keep both in step.
            alice.commit_rejected(update.conversation).map_err(e)?;
        }
        bob.process(NOW, &out.message).map_err(e)?;
    }
    let elapsed_ms = clock() - start;
    Ok(elapsed_ms * 1000.0 / f64::from(iterations.max(1)))
}
