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
use support::{Group, NOW, SUITES, Tree, label, open_direct, receive};

/// Encrypting and decrypting a 1 KiB text message between two devices.
fn messages(c: &mut Criterion) {
    let mut group = c.benchmark_group("message");
    let message = support::text_1k();
    for suite in SUITES {
        let support::Direct {
            mut alice,
            conversation,
            ..
        } = support::direct(suite);
        group.bench_function(BenchmarkId::new("encrypt_1KiB", label(suite)), |b| {
            b.iter(|| alice.encrypt(NOW, conversation, &message).unwrap());
        });
        // A fresh conversation: the receiver accepts at most `maximum_forward_distance` skipped
        // messages, so the sender must not have run ahead. Each message decrypts once, so every
        // call gets one the sender has just made.
        let support::Direct {
            mut alice,
            mut bob,
            conversation,
            ..
        } = support::direct(suite);
        group.bench_function(BenchmarkId::new("decrypt_1KiB", label(suite)), |b| {
            b.iter_batched(
                || alice.encrypt(NOW, conversation, &message).unwrap().message,
                |bytes| receive(&mut bob, &bytes),
                BatchSize::SmallInput,
            );
        });
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

/// A self-update commit in a 10-device group (filled tree): made and merged by one member, processed by
/// another. Both start from the same snapshot every time.
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
