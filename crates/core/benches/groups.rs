//! Groups of 10, 100 and 1,000 devices, for both ciphersuites: adding one device (the
//! committer's `add_member` + `commit_accepted` = `add_commit`, an existing member processing
//! that commit = `add_process`, the new device processing its Welcome = `add_join`), and
//! encrypting / decrypting a 1 KiB message. Run: `cargo bench -p nightjar-core --bench groups`
//! (add a filter such as `group/classic` to run part of it).
//!
//! The groups have a filled ratchet tree, as long-lived groups do (see [`support::Tree`]);
//! `1000_blank` is a 1,000-device group right after one bulk add, for comparison. Setting up a
//! filled 1,000-device group takes about 30 s (0x0003) and 90-100 s (0x004D), so it happens once
//! per suite and case, and only when a benchmark that needs it is selected. Each iteration
//! starts from a snapshot of the device's store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

// Each benchmark target uses part of the shared fixtures.
#[allow(dead_code)]
mod support;

use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};
use nightjar_core::Suite;
use support::{Group, NOW, SUITES, Tree, label, receive};

/// The groups measured by `cargo bench`: filled trees of 10, 100 and 1,000 devices, and for
/// comparison 1,000 devices right after one bulk add. Under `cargo test --benches` (one pass, no
/// `--bench` argument) only the smallest, so that a test run does not spend minutes on set-up.
fn cases() -> &'static [(usize, Tree)] {
    if std::env::args().any(|a| a == "--bench") {
        &[
            (10, Tree::Filled),
            (100, Tree::Filled),
            (1000, Tree::Filled),
            (1000, Tree::Blank),
        ]
    } else {
        &[(10, Tree::Filled)]
    }
}

/// A group, the bytes of one add (the commit its members process, the joiner's Welcome) and a
/// 1 KiB message from the committer to the other members.
struct Added {
    fixture: Group,
    commit: Vec<u8>,
    welcome: Vec<u8>,
    message: Vec<u8>,
}

/// The fixture in `slot`, built on first use: only selected benchmarks pay for the set-up.
fn added(slot: &mut Option<Added>, suite: Suite, size: usize, tree: Tree) -> &Added {
    slot.get_or_insert_with(|| {
        let fixture = Group::build(suite, size, tree);
        let bundle = fixture.add_joiner(&mut fixture.committer.restore());
        let message = fixture
            .committer
            .restore()
            .encrypt(NOW, fixture.conversation, &support::text_1k())
            .unwrap()
            .message;
        Added {
            commit: bundle.commit,
            welcome: bundle.welcome.unwrap(),
            message,
            fixture,
        }
    })
}

fn group_operations(c: &mut Criterion) {
    let message = support::text_1k();
    for suite in SUITES {
        let mut group = c.benchmark_group(format!("group/{}", label(suite)));
        for &(size, tree) in cases() {
            let case = match tree {
                Tree::Filled => size.to_string(),
                Tree::Blank => format!("{size}_blank"),
            };
            if size >= 1000 {
                group
                    .sample_size(10)
                    .sampling_mode(SamplingMode::Flat)
                    .measurement_time(Duration::from_secs(10));
            }
            let mut fixture = None;
            group.bench_function(BenchmarkId::new("add_commit", &case), |b| {
                let Added { fixture, .. } = added(&mut fixture, suite, size, tree);
                b.iter_batched(
                    || fixture.committer.restore(),
                    |mut committer| (fixture.add_joiner(&mut committer), committer),
                    BatchSize::PerIteration,
                );
            });
            group.bench_function(BenchmarkId::new("add_process", &case), |b| {
                let Added {
                    fixture, commit, ..
                } = added(&mut fixture, suite, size, tree);
                b.iter_batched(
                    || fixture.member.restore(),
                    |mut member| (receive(&mut member, commit), member),
                    BatchSize::PerIteration,
                );
            });
            group.bench_function(BenchmarkId::new("add_join", &case), |b| {
                let Added {
                    fixture, welcome, ..
                } = added(&mut fixture, suite, size, tree);
                b.iter_batched(
                    || fixture.joiner.restore(),
                    |mut joiner| (receive(&mut joiner, welcome), joiner),
                    BatchSize::PerIteration,
                );
            });
            if tree == Tree::Filled {
                group.bench_function(BenchmarkId::new("encrypt_1KiB", &case), |b| {
                    let Added { fixture, .. } = added(&mut fixture, suite, size, tree);
                    b.iter_batched(
                        || fixture.committer.restore(),
                        |mut sender| {
                            let out = sender.encrypt(NOW, fixture.conversation, &message);
                            (out.unwrap(), sender)
                        },
                        BatchSize::PerIteration,
                    );
                });
                group.bench_function(BenchmarkId::new("decrypt_1KiB", &case), |b| {
                    let Added {
                        fixture, message, ..
                    } = added(&mut fixture, suite, size, tree);
                    b.iter_batched(
                        || fixture.member.restore(),
                        |mut member| (receive(&mut member, message), member),
                        BatchSize::PerIteration,
                    );
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, group_operations);
criterion_main!(benches);
