//! Two accounts exchange one end-to-end encrypted message, with the delivery service played by
//! this program (it only ever handles ciphertext). Run: `cargo run -p nightjar-core --example two_accounts`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use nightjar_core::content::{Content, Message, MessageId};
use nightjar_core::storage::MemoryStore;
use nightjar_core::{ConversationKind, Engine, EngineConfig, Incoming};

fn main() -> Result<(), nightjar_core::Error> {
    let now = 1_800_000_000_000;
    let (mut alice, alice_list) =
        Engine::create_account(MemoryStore::new(), "alice", EngineConfig::default(), now)?;
    let (mut bob, bob_list) =
        Engine::create_account(MemoryStore::new(), "bob", EngineConfig::default(), now)?;
    // What a server would publish: signed device lists and key packages.
    alice.accept_device_list("bob", &bob_list)?;
    bob.accept_device_list("alice", &alice_list)?;
    let bob_packages = bob.generate_key_packages(1, false)?;

    let (conversation, bundle) =
        alice.create_conversation(now, ConversationKind::Direct, &["bob"], None, &bob_packages)?;
    alice.commit_accepted(now, conversation)?;
    let welcome = bundle.welcome.expect("a welcome for bob");
    println!("welcome for bob: {} bytes of ciphertext", welcome.len());
    bob.process(now, &welcome)?;

    let message = Message {
        id: MessageId([1; 16]),
        sent_at_ms: now,
        expires_after_secs: None,
        content: Content::Text {
            body: "hello bob, only you can read this".into(),
        },
    };
    let out = alice.encrypt(now, conversation, &message)?;
    println!("alice -> server: {} bytes of ciphertext", out.message.len());
    if let Incoming::Message {
        sender, message, ..
    } = bob.process(now, &out.message)?
    {
        println!("bob decrypted from {sender}: {:?}", message.content);
    }
    println!(
        "safety number alice/bob: {}",
        alice.safety_number("bob")?.grouped()
    );
    Ok(())
}
