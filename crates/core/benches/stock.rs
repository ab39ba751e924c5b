//! Stock OpenMLS 0.9.2 doing what the `engine` and `groups` benches make the engine do, in the
//! same run: the baseline the engine's figures are set against (docs/benchmarks.md).
//!
//! "Stock" is what an application would write with OpenMLS alone: libcrux's provider with
//! OpenMLS's in-memory storage (serde_json values), `openmls_basic_credential` signing keys,
//! groups kept in memory between operations. The group settings are the engine's: its two
//! ciphersuites, ciphertext-only wire format, 5 past epochs, padding to 64 bytes, the ratchet
//! tree in the Welcome. What stock does not do is what the engine adds: device credentials
//! checked against signed device lists, the per-call storage transaction, message framing and
//! franking.
//!
//! Run: `cargo bench -p nightjar-core --bench stock` (a filter such as `stock/group/xwing` runs
//! part of it). Ids mirror the engine's: `stock/message/encrypt_1KiB_settled/xwing` against
//! `message/encrypt_1KiB_settled/xwing`, `stock/group/xwing/add_commit/1000` against
//! `group/xwing/add_commit/1000`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::time::{Duration, Instant};

use criterion::{BatchSize, BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};
use openmls::prelude::*;
use openmls_basic_credential::SignatureKeyPair;
use openmls_libcrux_crypto::Provider;
use tls_codec::Serialize as _;

/// The engine's two ciphersuites, classical first, with the engine benches' labels.
const SUITES: [(Ciphersuite, &str); 2] = [
    (
        Ciphersuite::MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519,
        "classic",
    ),
    (
        Ciphersuite::MLS_256_XWING_CHACHA20POLY1305_SHA256_Ed25519,
        "xwing",
    ),
];

/// `EngineConfig::default()`'s past epochs and padding.
const PAST_EPOCHS: usize = 5;
const PADDING: usize = 64;

/// One member: its provider (crypto and in-memory storage), signing key and credential.
struct Member {
    provider: Provider,
    signer: SignatureKeyPair,
    credential: CredentialWithKey,
}

impl Member {
    fn new(name: &str, suite: Ciphersuite) -> Self {
        let signer = SignatureKeyPair::new(suite.signature_algorithm()).unwrap();
        let provider = Provider::default();
        signer.store(provider.storage()).unwrap();
        let credential = CredentialWithKey {
            credential: BasicCredential::new(name.as_bytes().to_vec()).into(),
            signature_key: signer.to_public_vec().into(),
        };
        Self {
            provider,
            signer,
            credential,
        }
    }

    fn key_package(&self, suite: Ciphersuite) -> KeyPackage {
        KeyPackage::builder()
            .build(suite, &self.provider, &self.signer, self.credential.clone())
            .unwrap()
            .key_package()
            .clone()
    }

    fn create_group(&self, suite: Ciphersuite) -> MlsGroup {
        let config = MlsGroupCreateConfig::builder()
            .ciphersuite(suite)
            .wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
            .use_ratchet_tree_extension(true)
            .max_past_epochs(PAST_EPOCHS)
            .padding_size(PADDING)
            .build();
        MlsGroup::new(
            &self.provider,
            &self.signer,
            &config,
            self.credential.clone(),
        )
        .unwrap()
    }

    fn join(&self, welcome: &[u8]) -> MlsGroup {
        let config = MlsGroupJoinConfig::builder()
            .wire_format_policy(PURE_CIPHERTEXT_WIRE_FORMAT_POLICY)
            .use_ratchet_tree_extension(true)
            .max_past_epochs(PAST_EPOCHS)
            .padding_size(PADDING)
            .build();
        let MlsMessageBodyIn::Welcome(welcome) = MlsMessageIn::tls_deserialize_exact_bytes(welcome)
            .unwrap()
            .extract()
        else {
            panic!("not a Welcome");
        };
        StagedWelcome::new_from_welcome(&self.provider, &config, welcome, None)
            .unwrap()
            .into_group(&self.provider)
            .unwrap()
    }

    /// Processes another member's commit or application message; merges a commit.
    fn receive(&self, group: &mut MlsGroup, bytes: &[u8]) {
        let message = MlsMessageIn::tls_deserialize_exact_bytes(bytes)
            .unwrap()
            .try_into_protocol_message()
            .unwrap();
        let processed = group.process_message(&self.provider, message).unwrap();
        if let ProcessedMessageContent::StagedCommitMessage(staged) = processed.into_content() {
            group.merge_staged_commit(&self.provider, *staged).unwrap();
        }
    }

    /// A self-update commit, merged (the delivery service accepted it).
    fn self_update(&self, group: &mut MlsGroup) -> Vec<u8> {
        let bundle = group
            .self_update(&self.provider, &self.signer, LeafNodeParameters::default())
            .unwrap();
        group.merge_pending_commit(&self.provider).unwrap();
        bundle.commit().tls_serialize_detached().unwrap()
    }

    /// Adds `key_packages` in one commit, merged. Returns the commit and the Welcome.
    fn add(&self, group: &mut MlsGroup, key_packages: &[KeyPackage]) -> (Vec<u8>, Vec<u8>) {
        let (commit, welcome, _) = group
            .add_members(&self.provider, &self.signer, key_packages)
            .unwrap();
        group.merge_pending_commit(&self.provider).unwrap();
        (
            commit.tls_serialize_detached().unwrap(),
            welcome.tls_serialize_detached().unwrap(),
        )
    }

    fn encrypt(&self, group: &mut MlsGroup, body: &[u8]) -> Vec<u8> {
        group
            .create_message(&self.provider, &self.signer, body)
            .unwrap()
            .tls_serialize_detached()
            .unwrap()
    }

    /// A copy of this member and of its state of `group`, as a benchmark iteration's start.
    fn snapshot(&self, group: Option<&MlsGroup>) -> Snapshot {
        Snapshot {
            values: self.provider.storage().values.read().unwrap().clone(),
            signer: self.signer.clone(),
            credential: self.credential.clone(),
            group_id: group.map(|g| g.group_id().clone()),
        }
    }
}

/// A member's whole storage, restored as often as a benchmark needs.
struct Snapshot {
    values: HashMap<Vec<u8>, Vec<u8>>,
    signer: SignatureKeyPair,
    credential: CredentialWithKey,
    group_id: Option<GroupId>,
}

impl Snapshot {
    /// A fresh provider over a copy of the storage, and the group loaded from it (the copy and
    /// the load are not timed: stock keeps its groups in memory).
    fn restore(&self) -> (Member, Option<MlsGroup>) {
        let provider = Provider::default();
        *provider.storage().values.write().unwrap() = self.values.clone();
        let group = self
            .group_id
            .as_ref()
            .and_then(|id| MlsGroup::load(provider.storage(), id).unwrap());
        let member = Member {
            provider,
            signer: self.signer.clone(),
            credential: self.credential.clone(),
        };
        (member, group)
    }
}

/// A 2-member group: `alice` created it and added `bob`, who joined.
struct Pair {
    alice: Member,
    alice_group: MlsGroup,
    bob: Member,
    bob_group: MlsGroup,
}

fn pair(suite: Ciphersuite) -> Pair {
    let alice = Member::new("alice", suite);
    let bob = Member::new("bob", suite);
    let mut alice_group = alice.create_group(suite);
    let (_, welcome) = alice.add(&mut alice_group, &[bob.key_package(suite)]);
    let bob_group = bob.join(&welcome);
    Pair {
        alice,
        alice_group,
        bob,
        bob_group,
    }
}

impl Pair {
    /// `PAST_EPOCHS` self-updates by alice, processed by bob (the engine's `settled`).
    fn settle(&mut self) {
        for _ in 0..PAST_EPOCHS {
            let commit = self.alice.self_update(&mut self.alice_group);
            self.bob.receive(&mut self.bob_group, &commit);
        }
    }
}

fn text_1k() -> Vec<u8> {
    vec![b'x'; 1024]
}

fn messages(c: &mut Criterion) {
    let mut group = c.benchmark_group("stock/message");
    let body = text_1k();
    for (suite, label) in SUITES {
        for settled in [false, true] {
            let state = if settled { "settled" } else { "fresh" };
            let open = || {
                let mut pair = pair(suite);
                if settled {
                    pair.settle();
                }
                pair
            };
            let mut p = open();
            group.bench_function(
                BenchmarkId::new(format!("encrypt_1KiB_{state}"), label),
                |b| b.iter(|| p.alice.encrypt(&mut p.alice_group, &body)),
            );
            let mut p = open();
            group.bench_function(
                BenchmarkId::new(format!("decrypt_1KiB_{state}"), label),
                |b| {
                    b.iter_batched(
                        || p.alice.encrypt(&mut p.alice_group, &body),
                        |bytes| p.bob.receive(&mut p.bob_group, &bytes),
                        BatchSize::SmallInput,
                    );
                },
            );
        }
    }
    group.finish();
}

/// Key package, create, add, join: the engine's `direct/full`.
fn direct(c: &mut Criterion) {
    let mut group = c.benchmark_group("stock/direct");
    group.measurement_time(Duration::from_secs(10));
    for (suite, label) in SUITES {
        group.bench_function(BenchmarkId::new("full", label), |b| {
            b.iter_batched(
                || (Member::new("alice", suite), Member::new("bob", suite)),
                |(alice, bob)| {
                    let mut alice_group = alice.create_group(suite);
                    let (_, welcome) = alice.add(&mut alice_group, &[bob.key_package(suite)]);
                    (bob.join(&welcome), alice_group, alice, bob)
                },
                BatchSize::SmallInput,
            );
        });
    }
    group.finish();
}

/// A group of `size` members with a filled tree, grown as the engine's fixture grows it: two
/// members at a time, the first of each pair joining and making the next add, then
/// `PAST_EPOCHS` self-updates: the last committer, the member before it, and an outsider.
struct StockGroup {
    committer: Snapshot,
    member: Snapshot,
    /// The outsider (no group yet), holding the private key of `joiner_key_package`.
    joiner: Snapshot,
    joiner_key_package: KeyPackage,
}

fn stock_group(suite: Ciphersuite, size: usize) -> StockGroup {
    let started = Instant::now();
    let creator = Member::new("creator", suite);
    let observer = Member::new("observer", suite);
    let mut creator_group = creator.create_group(suite);
    let (_, welcome) = creator.add(&mut creator_group, &[observer.key_package(suite)]);
    let observer_group = observer.join(&welcome);
    let (mut committer, mut committer_group) = (creator, creator_group);
    let (mut member, mut member_group) = (observer, observer_group);
    let mut added = 2;
    while added < size {
        let count = (size - added).min(2);
        let batch: Vec<Member> = (0..count)
            .map(|i| Member::new(&format!("filler{}", added + i), suite))
            .collect();
        let kps: Vec<KeyPackage> = batch.iter().map(|m| m.key_package(suite)).collect();
        let (_, welcome) = committer.add(&mut committer_group, &kps);
        let newcomer = batch.into_iter().next().unwrap();
        let newcomer_group = newcomer.join(&welcome);
        member = std::mem::replace(&mut committer, newcomer);
        member_group = std::mem::replace(&mut committer_group, newcomer_group);
        added += count;
    }
    for _ in 0..=PAST_EPOCHS {
        let commit = committer.self_update(&mut committer_group);
        member.receive(&mut member_group, &commit);
    }
    assert_eq!(member_group.members().count(), size);
    let joiner = Member::new("joiner", suite);
    let joiner_key_package = joiner.key_package(suite);
    eprintln!(
        "set up a stock {size}-member group in {:.1?}",
        started.elapsed()
    );
    StockGroup {
        committer: committer.snapshot(Some(&committer_group)),
        member: member.snapshot(Some(&member_group)),
        joiner: joiner.snapshot(None),
        joiner_key_package,
    }
}

/// Benches the member in `snapshot` processing `bytes` (a commit or a message), from the same
/// state every time.
fn bench_receive(b: &mut criterion::Bencher<'_>, snapshot: &Snapshot, bytes: &[u8]) {
    b.iter_batched(
        || snapshot.restore(),
        |(member, group)| {
            let mut group = group.expect("a member's snapshot holds its group");
            member.receive(&mut group, bytes);
            (group, member)
        },
        BatchSize::PerIteration,
    );
}

/// Under `cargo bench` groups of 10, 100 and 1,000; under `cargo test --benches` 10 only.
fn sizes() -> &'static [usize] {
    if std::env::args().any(|a| a == "--bench") {
        &[10, 100, 1000]
    } else {
        &[10]
    }
}

/// A group, the bytes of one add (the commit for the members, the joiner's Welcome) and a
/// 1 KiB message from the committer.
struct Added {
    group: StockGroup,
    commit: Vec<u8>,
    welcome: Vec<u8>,
    message: Vec<u8>,
}

/// The fixture in `slot`, built on first use: only selected benchmarks pay for the set-up.
fn added(slot: &mut Option<Added>, suite: Ciphersuite, size: usize) -> &Added {
    slot.get_or_insert_with(|| {
        let group = stock_group(suite, size);
        let (committer, committer_group) = group.committer.restore();
        let (commit, welcome) = committer.add(
            &mut committer_group.unwrap(),
            std::slice::from_ref(&group.joiner_key_package),
        );
        let (committer, committer_group) = group.committer.restore();
        let message = committer.encrypt(&mut committer_group.unwrap(), &text_1k());
        Added {
            group,
            commit,
            welcome,
            message,
        }
    })
}

fn groups(c: &mut Criterion) {
    let body = text_1k();
    for (suite, label) in SUITES {
        let mut group = c.benchmark_group(format!("stock/group/{label}"));
        for &size in sizes() {
            if size >= 1000 {
                group
                    .sample_size(10)
                    .sampling_mode(SamplingMode::Flat)
                    .measurement_time(Duration::from_secs(10));
            }
            let mut fixture = None;
            group.bench_function(BenchmarkId::new("add_commit", size), |b| {
                let Added { group: g, .. } = added(&mut fixture, suite, size);
                b.iter_batched(
                    || g.committer.restore(),
                    |(committer, group)| {
                        let mut group = group.unwrap();
                        let kp = std::slice::from_ref(&g.joiner_key_package);
                        (committer.add(&mut group, kp), group, committer)
                    },
                    BatchSize::PerIteration,
                );
            });
            group.bench_function(BenchmarkId::new("add_process", size), |b| {
                let Added {
                    group: g, commit, ..
                } = added(&mut fixture, suite, size);
                bench_receive(b, &g.member, commit);
            });
            group.bench_function(BenchmarkId::new("add_join", size), |b| {
                let Added {
                    group: g, welcome, ..
                } = added(&mut fixture, suite, size);
                b.iter_batched(
                    || g.joiner.restore(),
                    |(joiner, _)| (joiner.join(welcome), joiner),
                    BatchSize::PerIteration,
                );
            });
            group.bench_function(BenchmarkId::new("encrypt_1KiB", size), |b| {
                let Added { group: g, .. } = added(&mut fixture, suite, size);
                b.iter_batched(
                    || g.committer.restore(),
                    |(committer, group)| {
                        let mut group = group.unwrap();
                        (committer.encrypt(&mut group, &body), group, committer)
                    },
                    BatchSize::PerIteration,
                );
            });
            group.bench_function(BenchmarkId::new("decrypt_1KiB", size), |b| {
                let Added {
                    group: g, message, ..
                } = added(&mut fixture, suite, size);
                bench_receive(b, &g.member, message);
            });
        }
        group.finish();
    }
}

criterion_group!(benches, messages, direct, groups);
criterion_main!(benches);
