//! Per-operation cost of the engine for both ciphersuites: 1 KiB messages in a direct
//! conversation, setting up a direct conversation, and a self-update commit in a 10-device
//! group. Run: `cargo bench -p nightjar-core --bench engine`.
//!
//! Every operation goes through the public API, so the figures include what a client pays on
//! top of OpenMLS: device-list checks, the per-call storage transaction and JSON state writes
//! into a [`MemoryStore`](nightjar_core::storage::MemoryStore).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

// Each benchmark target uses part of the shared fixtures.
#[allow(dead_code)]
mod support;

use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use support::{Direct, Group, NOW, SUITES, Tree, label, open_direct, receive};

/// Encrypting and decrypting a 1 KiB text message between two devices, in a conversation just
/// created (`fresh`, comparable to the OpenMLS baseline) and in one that has seen
/// `max_past_epochs` commits (`settled`): OpenMLS rewrites the retained past epochs on every
/// message, so the second is what a conversation in use costs.
fn messages(c: &mut Criterion) {
    let mut group = c.benchmark_group("message");
    let message = support::text_1k();
    for suite in SUITES {
        for settled in [false, true] {
            let state = if settled { "settled" } else { "fresh" };
            let open_conversation = || {
                let mut direct = support::direct(suite);
                if settled {
                    direct.settle();
                }
                direct
            };
            let Direct {
                mut alice,
                conversation,
                ..
            } = open_conversation();
            group.bench_function(
                BenchmarkId::new(format!("encrypt_1KiB_{state}"), label(suite)),
                |b| b.iter(|| alice.encrypt(NOW, conversation, &message).unwrap()),
            );
            // A separate conversation: the receiver accepts at most `maximum_forward_distance`
            // skipped messages, so the sender must not have run ahead. Each message decrypts
            // once, so every call gets one the sender has just made.
            let Direct {
                mut alice,
                mut bob,
                conversation,
                ..
            } = open_conversation();
            group.bench_function(
                BenchmarkId::new(format!("decrypt_1KiB_{state}"), label(suite)),
                |b| {
                    b.iter_batched(
                        || alice.encrypt(NOW, conversation, &message).unwrap().message,
                        |bytes| receive(&mut bob, &bytes),
                        BatchSize::SmallInput,
                    );
                },
            );
        }
    }
    group.finish();
}

/// Setting up a direct conversation between two single-device accounts that already know each
/// other's device lists: the peer's key package, the creator's commit and the peer's join.
fn direct_conversation(c: &mut Criterion) {
    let mut group = c.benchmark_group("direct");
    group.measurement_time(Duration::from_secs(10));
    for suite in SUITES {
        group.bench_function(BenchmarkId::new("key_package", label(suite)), |b| {
            b.iter_batched(
                || support::pair(suite).1,
                |mut bob| (support::key_package(&mut bob), bob),
                BatchSize::SmallInput,
            );
        });
        group.bench_function(BenchmarkId::new("create", label(suite)), |b| {
            b.iter_batched(
                || {
                    let (alice, mut bob) = support::pair(suite);
                    let kp = support::key_package(&mut bob);
                    (alice, kp)
                },
                |(mut alice, kp)| (open_direct(&mut alice, kp), alice),
                BatchSize::SmallInput,
            );
        });
        group.bench_function(BenchmarkId::new("join", label(suite)), |b| {
            b.iter_batched(
                || {
                    let (mut alice, mut bob) = support::pair(suite);
                    let kp = support::key_package(&mut bob);
                    let (_, bundle) = open_direct(&mut alice, kp);
                    (bob, bundle.welcome.unwrap())
                },
                |(mut bob, welcome)| (receive(&mut bob, &welcome), bob),
                BatchSize::SmallInput,
            );
        });
        group.bench_function(BenchmarkId::new("full", label(suite)), |b| {
            b.iter_batched(
                || support::pair(suite),
                |(mut alice, mut bob)| {
                    let kp = support::key_package(&mut bob);
                    let (_, bundle) = open_direct(&mut alice, kp);
                    let joined = receive(&mut bob, &bundle.welcome.unwrap());
                    (joined, alice, bob)
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

/// A self-update commit in a 10-device group (filled tree, full window of past epochs): made and
/// merged by one member, processed by another. Both start from the same snapshot every time.
fn self_update(c: &mut Criterion) {
    let mut group = c.benchmark_group("self_update_10");
    group.measurement_time(Duration::from_secs(10));
    for suite in SUITES {
        let fixture = Group::build(suite, 10, Tree::Filled);
        group.bench_function(BenchmarkId::new("commit", label(suite)), |b| {
            b.iter_batched(
                || fixture.committer.restore(),
                |mut committer| (fixture.self_update(&mut committer), committer),
                BatchSize::SmallInput,
            );
        });
        let commit = fixture.self_update(&mut fixture.committer.restore()).commit;
        group.bench_function(BenchmarkId::new("process", label(suite)), |b| {
            b.iter_batched(
                || fixture.member.restore(),
                |mut member| (receive(&mut member, &commit), member),
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

criterion_group!(benches, messages, direct_conversation, self_update);
criterion_main!(benches);
