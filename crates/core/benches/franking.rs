//! The cost of message franking (docs/reporting.md): the server's tag on every franked
//! message it accepts (one HMAC-SHA256), what a sender adds per message (a commitment and an
//! Ed25519 signature), what a recipient adds (the commitment and a verification), and what
//! checking a report costs the server. Run: `cargo bench -p nightjar-core --bench franking`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use ed25519_dalek::{Signer as _, SigningKey};
use nightjar_core::ConversationId;
use nightjar_core::content::{Content, Message, MessageId};
use nightjar_core::franking::{self, Committed, FrankingKey, Opening};
use nightjar_core::identity::{DeviceCredential, DeviceId};

fn franking(c: &mut Criterion) {
    let conversation = ConversationId([3; 16]);
    let sender = DeviceCredential {
        username: "alice".into(),
        device_id: DeviceId(0x0123_4567_89ab_cdef),
    };
    // A 1 KiB text, the size bench/loadgen sends.
    let message = Message {
        id: MessageId([7; 16]),
        sent_at_ms: 1_800_000_000_000,
        expires_after_secs: None,
        content: Content::Text {
            body: "x".repeat(1024),
        },
    }
    .encode();
    let committed = Committed {
        conversation,
        sender: &sender,
        message: &message,
    };
    let device = SigningKey::from_bytes(&[9; 32]);
    let device_public = device.verifying_key().to_bytes();
    let server = FrankingKey::from_bytes([1; 32]);
    let key = FrankingKey::from_bytes([2; 32]);
    let commitment = franking::commit(&key, &committed);
    let signature = device.sign(&franking::signed_bytes(&commitment)).to_bytes();
    let time = 1_800_000_000_000u64;
    let tag = franking::tag(&server, &commitment, conversation, time);

    let mut group = c.benchmark_group("franking");
    // What the server adds to each message it accepts.
    group.bench_function("server_tag", |b| {
        b.iter(|| {
            franking::tag(
                black_box(&server),
                black_box(&commitment),
                conversation,
                time,
            )
        })
    });
    // What a sender adds to each message: a key, the commitment, the signature.
    group.bench_function("sender_commit_and_sign_1KiB", |b| {
        b.iter(|| {
            let key = FrankingKey::generate().unwrap();
            let c = franking::commit(&key, black_box(&committed));
            device.sign(&franking::signed_bytes(&c)).to_bytes()
        })
    });
    // What a recipient adds: the commitment again and the signature check.
    group.bench_function("recipient_check_1KiB", |b| {
        b.iter(|| {
            let opening = Opening {
                key: key.clone(),
                signature,
            };
            franking::check(opening, black_box(&committed), &device_public)
        })
    });
    // What a report costs the server (without its two database reads).
    group.bench_function("server_report_check_1KiB", |b| {
        b.iter(|| {
            assert!(franking::verify_tag(
                &server,
                &commitment,
                conversation,
                time,
                &tag
            ));
            assert!(franking::opens(&key, black_box(&committed), &commitment));
            assert!(franking::verify_signature(
                &device_public,
                &commitment,
                &signature
            ));
        })
    });
    group.finish();
}

criterion_group!(benches, franking);
criterion_main!(benches);
