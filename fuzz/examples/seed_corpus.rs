//! Writes the committed seed inputs under `fuzz/corpus/<target>/seed-*`, one per content variant.
//!
//! Run from the repository root with
//! `cargo run --manifest-path fuzz/Cargo.toml --example seed_corpus`; rerun it whenever the
//! content format changes so the seeds stay valid encodings.

use std::fs;
use std::io;
use std::path::Path;

use nightjar_core::content::{
    AttachmentKey, AttachmentPointer, CallSignal, CallSignalKind, Content, GroupMetadata, Message,
    MessageId, Thumbnail,
};

fn main() -> io::Result<()> {
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let messages = corpus.join("content_roundtrip");
    let metadata = corpus.join("group_metadata_roundtrip");
    fs::create_dir_all(&messages)?;
    fs::create_dir_all(&metadata)?;

    for (index, content) in contents().into_iter().enumerate() {
        let message = Message {
            id: MessageId::from_bytes([index as u8; 16]),
            sent_at_ms: 1_700_000_000_000 + index as u64,
            expires_after_secs: (index % 2 == 0).then_some(3600),
            content,
        };
        let name = format!("seed-{index:02}-{}", message.content.kind());
        fs::write(messages.join(name), message.encode())?;
        // What the engine encrypts: the same message with a sequence number (content version 2).
        let name = format!("seed-{index:02}-{}-seq", message.content.kind());
        fs::write(messages.join(name), message.encode_with_seq(index as u64 + 1))?;
    }

    let groups = [
        GroupMetadata {
            name: "Family".into(),
            avatar: None,
        },
        GroupMetadata {
            name: "Book club 📚".into(),
            avatar: Some(pointer()),
        },
    ];
    for (index, group) in groups.iter().enumerate() {
        fs::write(metadata.join(format!("seed-{index:02}")), group.encode())?;
    }
    attachment_seeds(&corpus)?;
    engine_seeds(&corpus)
}

/// Real MLS messages, a signed device list and a state export, so the engine-level targets
/// start from well-formed structures (their keys differ from the fuzzed device's, on purpose).
fn engine_seeds(corpus: &Path) -> io::Result<()> {
    use nightjar_core::pickle::{self, PickleKey};
    use nightjar_core::storage::MemoryStore;
    use nightjar_core::{ConversationKind, Engine, EngineConfig, Suite};

    let err = |e: nightjar_core::Error| io::Error::other(e.to_string());
    let now = 1_800_000_000_000;
    let config = EngineConfig {
        suite: Suite::Classic,
        ..EngineConfig::default()
    };
    let (mut alice, alice_list) =
        Engine::create_account(MemoryStore::new(), "alice", config.clone(), now).map_err(err)?;
    let (mut bob, bob_list) =
        Engine::create_account(MemoryStore::new(), "bob", config, now).map_err(err)?;
    alice.accept_device_list("bob", &bob_list).map_err(err)?;
    bob.accept_device_list("alice", &alice_list).map_err(err)?;
    let kps = bob.generate_key_packages(1, false).map_err(err)?;
    let (conv, bundle) = alice
        .create_conversation(now, ConversationKind::Direct, &["bob"], None, &kps)
        .map_err(err)?;
    alice.commit_accepted(now, conv).map_err(err)?;
    let welcome = bundle
        .welcome
        .ok_or_else(|| io::Error::other("no welcome"))?;
    let message = Message {
        id: MessageId::from_bytes([1; 16]),
        sent_at_ms: now,
        expires_after_secs: None,
        content: Content::Text {
            body: "seed".into(),
        },
    };
    let app = alice.encrypt(now, conv, &message).map_err(err)?.message;
    let update = alice.self_update(conv).map_err(err)?.commit;

    let dir = corpus.join("engine_process");
    fs::create_dir_all(&dir)?;
    fs::write(dir.join("seed-welcome"), &welcome)?;
    fs::write(dir.join("seed-application"), &app)?;
    fs::write(dir.join("seed-commit"), &update)?;
    fs::write(dir.join("seed-key-package"), &kps[0])?;

    let dir = corpus.join("device_list_roundtrip");
    fs::create_dir_all(&dir)?;
    fs::write(dir.join("seed-alice"), alice_list.encode())?;

    let dir = corpus.join("pickle_import");
    fs::create_dir_all(&dir)?;
    let store = MemoryStore::new();
    nightjar_core::storage::KvStore::put(&store, b"k", b"v")
        .map_err(|e| io::Error::other(e.to_string()))?;
    let blob = pickle::export(&store, &PickleKey::from_bytes([7; 32])).map_err(err)?;
    fs::write(dir.join("seed-export"), blob)
}

fn pointer() -> AttachmentPointer {
    AttachmentPointer {
        blob_id: "b/3f9a".into(),
        key: AttachmentKey::from_bytes([0x42; 32]),
        digest: [0x24; 32],
        size: 48_213,
        media_type: "image/jpeg".into(),
        file_name: Some("photo.jpg".into()),
        caption: Some("at the lake".into()),
        thumbnail: Some(Box::new(Thumbnail {
            media_type: "image/jpeg".into(),
            width: 320,
            height: 213,
            data: vec![0xff, 0xd8, 0xff, 0xe0, 0xff, 0xd9],
        })),
    }
}

/// Blobs sealed under the fuzz target's key: an empty file, one short chunk, and a full
/// chunk plus a padded one, each with its header (size, slice length, digest).
fn attachment_seeds(corpus: &Path) -> io::Result<()> {
    use nightjar_core::attachment::Sealer;

    let err = |e: nightjar_core::attachment::AttachmentError| io::Error::other(e.to_string());
    let dir = corpus.join("attachment_open");
    fs::create_dir_all(&dir)?;
    let key = AttachmentKey::from_bytes([0x42; 32]);
    for (size, step) in [(0u32, 1u16), (100, 7), (65_600, 4096)] {
        let plaintext: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        let mut sealer = Sealer::new(&key, u64::from(size)).map_err(err)?;
        let mut sealed = sealer.push(&plaintext).map_err(err)?;
        let (rest, digest) = sealer.finish().map_err(err)?;
        sealed.extend_from_slice(&rest);
        let mut seed = size.to_be_bytes().to_vec();
        seed.extend_from_slice(&step.to_be_bytes());
        seed.extend_from_slice(&digest);
        seed.extend_from_slice(&sealed);
        fs::write(dir.join(format!("seed-{size}")), seed)?;
    }
    Ok(())
}

fn contents() -> Vec<Content> {
    let id = MessageId::from_bytes([7; 16]);
    let call = |kind| {
        Content::Call(CallSignal {
            call_id: [9; 16],
            kind,
        })
    };
    vec![
        Content::Text {
            body: "hello, world".into(),
        },
        Content::Reply {
            in_reply_to: id,
            body: "agreed".into(),
        },
        Content::Reaction {
            target: id,
            emoji: "👍".into(),
            remove: false,
        },
        Content::Edit {
            target: id,
            body: "hello, world!".into(),
        },
        Content::Delete { target: id },
        Content::ReadReceipt {
            message_ids: vec![id, MessageId::from_bytes([8; 16])],
        },
        Content::Typing { active: true },
        Content::Attachment(pointer()),
        Content::DisappearingTimer { seconds: 86_400 },
        call(CallSignalKind::Offer {
            sdp: "v=0\r\no=- 1 2 IN IP4 0.0.0.0\r\n".into(),
            video: true,
        }),
        call(CallSignalKind::Answer {
            sdp: "v=0\r\n".into(),
        }),
        call(CallSignalKind::IceCandidate {
            candidate: "candidate:1 1 udp 2122260223 192.0.2.1 54321 typ host".into(),
            sdp_mid: Some("0".into()),
            sdp_m_line_index: Some(0),
        }),
        call(CallSignalKind::Ringing),
        call(CallSignalKind::Hangup),
        Content::Unknown {
            content_type: 4242,
            body: vec![1, 2, 3, 4],
        },
    ]
}
