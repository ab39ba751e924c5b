//! The cost of the engine's hot path where the web client runs it: one 1 KiB text message
//! encrypted by one device and decrypted by another (X-Wing suite, in memory). The same code
//! runs natively (`cargo run --release -p nightjar-web --example roundtrip`) and in the page
//! (`nightjarBenchRoundtrip`), so the two can be set against each other in one session.
//!
//! Likewise the key-transparency checks every client makes: a lookup proof and a history proof
//! verified with `akd_core` (`--example kt_verify` natively, `nightjarBenchKtVerify` in the
//! page).

use nightjar_api::B64;
use nightjar_core::content::{Content, Message, MessageId};
use nightjar_core::storage::MemoryStore;
use nightjar_core::transparency::{
    DirectoryKeys, RootKey, SignedRoot, verify_history, verify_lookup,
};
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

/// What verifying the directory's proofs costs a client, per proof: the proofs of
/// `crates/web/bench-data/kt_vectors.json` (a directory of 10k accounts, a history of 10
/// device-list versions; written by `cargo run --release -p nightjar-server --example
/// kt_vectors`), handed in as text so the app itself does not carry them.
#[derive(Debug, Clone, Copy)]
pub struct KtVerifyCost {
    /// Microseconds per lookup-proof verification.
    pub lookup_us: f64,
    /// Microseconds per history-proof verification.
    pub history_us: f64,
    /// The lookup proof's size in bytes.
    pub lookup_bytes: usize,
    /// The history proof's size in bytes.
    pub history_bytes: usize,
}

struct Vector {
    root: SignedRoot,
    proof: Vec<u8>,
}

fn vector(v: &serde_json::Value) -> Result<Vector, String> {
    let bytes = |name: &str| {
        v[name]
            .as_str()
            .and_then(B64::decode)
            .ok_or_else(|| format!("kt_vectors.json: no {name}"))
    };
    let epoch = v["epoch"].as_u64().ok_or("kt_vectors.json: no epoch")?;
    let root = SignedRoot::from_slices(epoch, &bytes("root")?, &bytes("signature")?)
        .map_err(|e| e.to_string())?;
    Ok(Vector {
        root,
        proof: bytes("proof")?,
    })
}

/// Verifies the lookup and the history proof of `vectors` (the text of `kt_vectors.json`)
/// `iterations` times each; `clock` gives milliseconds.
pub fn kt_verify(
    vectors: &str,
    iterations: u32,
    clock: impl Fn() -> f64,
) -> Result<KtVerifyCost, String> {
    let all: serde_json::Value = serde_json::from_str(vectors).map_err(|e| e.to_string())?;
    let key = |name: &str| {
        all[name]
            .as_str()
            .and_then(B64::decode)
            .ok_or_else(|| format!("kt_vectors.json: no {name}"))
    };
    let keys = DirectoryKeys {
        root_key: RootKey(
            key("root_key")?
                .try_into()
                .map_err(|_| "kt_vectors.json: root key")?,
        ),
        vrf_public_key: key("vrf_public_key")?,
    };
    let username = all["username"]
        .as_str()
        .ok_or("kt_vectors.json: no username")?;
    let lookup = vector(&all["lookup"])?;
    let history = vector(&all["history"])?;
    let n = iterations.max(1);
    let start = clock();
    for _ in 0..n {
        verify_lookup(&keys, &lookup.root, username, &lookup.proof).map_err(|e| e.to_string())?;
    }
    let lookup_us = (clock() - start) * 1000.0 / f64::from(n);
    let start = clock();
    for _ in 0..n {
        verify_history(&keys, &history.root, username, &history.proof)
            .map_err(|e| e.to_string())?;
    }
    let history_us = (clock() - start) * 1000.0 / f64::from(n);
    Ok(KtVerifyCost {
        lookup_us,
        history_us,
        lookup_bytes: lookup.proof.len(),
        history_bytes: history.proof.len(),
    })
}
