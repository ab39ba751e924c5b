//! Key transparency: publishing an epoch of 1k and 10k changed entries on a directory of 10k
//! accounts (SQLite on disk; PostgreSQL too, in a fresh schema dropped afterwards, with
//! `NIGHTJAR_TEST_POSTGRES_URL`), generating
//! lookup and history proofs, and verifying them as a client does (`akd_core`, native).
//! Proof sizes are printed. `cargo bench -p nightjar-server --bench transparency`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../src/store/test_schema.rs"]
mod test_schema;

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};
use nightjar_core::transparency::{
    DirectoryKeys, KtConfig, RootKey, SignedRoot, verify_append_only, verify_history, verify_lookup,
};
use nightjar_server::bench_support::{BenchProof, KtBench};
use protobuf::Message as _;

const BASE: usize = 10_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn root(p: &BenchProof) -> SignedRoot {
    SignedRoot::from_slices(p.epoch, &p.root, &p.signature).unwrap()
}

fn publish(c: &mut Criterion) {
    let rt = runtime();
    let mut backends: Vec<(&str, Option<String>)> = vec![("sqlite", None)];
    let schema = rt.block_on(test_schema::Schema::create_if_configured());
    if let Some(schema) = &schema {
        backends.push(("postgres", Some(schema.url.clone())));
    }
    let mut group = c.benchmark_group("kt_publish");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    for (name, url) in backends {
        let dir = tempfile::tempdir().unwrap();
        let bench = rt
            .block_on(KtBench::open(dir.path(), url.as_deref()))
            .unwrap();
        rt.block_on(async {
            bench.add_accounts(0, BASE).await.unwrap();
            bench.publish().await.unwrap();
        });
        let mut next = BASE;
        for changed in [1_000usize, 10_000] {
            group.bench_with_input(BenchmarkId::new(name, changed), &changed, |b, &n| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        rt.block_on(bench.add_accounts(next, n)).unwrap();
                        next += n;
                        let started = Instant::now();
                        rt.block_on(bench.publish()).unwrap();
                        total += started.elapsed();
                    }
                    total
                });
            });
        }
        rt.block_on(bench.close());
    }
    group.finish();
    if let Some(schema) = schema {
        schema.drop_blocking();
    }
}

fn proofs(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let bench = rt.block_on(KtBench::open(dir.path(), None)).unwrap();
    // 10k accounts, then every account changes its list 9 times: histories of 10 versions.
    rt.block_on(async {
        bench.add_accounts(0, BASE).await.unwrap();
        bench.publish().await.unwrap();
        for _ in 0..9 {
            bench.change_all().await.unwrap();
            bench.publish().await.unwrap();
        }
    });
    let (root_key, vrf) = bench.keys();
    let keys = DirectoryKeys {
        root_key: RootKey(root_key),
        vrf_public_key: vrf,
    };
    let lookup = rt.block_on(bench.lookup("bench_4242")).unwrap();
    let history = rt.block_on(bench.history("bench_4242")).unwrap();
    eprintln!(
        "kt proofs on {BASE} accounts, epoch {}: lookup {} bytes, history of 10 versions {} bytes",
        lookup.epoch,
        lookup.proof.len(),
        history.proof.len()
    );
    let mut group = c.benchmark_group("kt_proofs");
    group.bench_function("server_lookup", |b| {
        b.iter(|| rt.block_on(bench.lookup("bench_4242")).unwrap())
    });
    group.bench_function("server_history_10", |b| {
        b.iter(|| rt.block_on(bench.history("bench_4242")).unwrap())
    });
    group.bench_function("client_verify_lookup", |b| {
        b.iter(|| verify_lookup(&keys, &root(&lookup), "bench_4242", &lookup.proof).unwrap())
    });
    group.bench_function("client_verify_history_10", |b| {
        b.iter(|| verify_history(&keys, &root(&history), "bench_4242", &history.proof).unwrap())
    });
    group.finish();
    rt.block_on(bench.close());
}

/// One epoch's append-only proof, checked as a device does in its walk (`verify_append_only`,
/// AKD's auditor tree without task parallelism) and as AKD's own auditor does
/// (`audit_verify`, its tasks on a 2-thread runtime), for epochs of 10 and 1,000 new accounts
/// on a directory of 10k.
fn append_only(c: &mut Criterion) {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let bench = rt.block_on(KtBench::open(dir.path(), None)).unwrap();
    let mut group = c.benchmark_group("kt_append_only");
    rt.block_on(async {
        bench.add_accounts(0, BASE).await.unwrap();
        bench.publish().await.unwrap();
    });
    let mut next = BASE;
    for added in [10usize, 1_000] {
        let (before, after) = rt.block_on(async {
            bench.add_accounts(next, added).await.unwrap();
            let epoch = bench.publish().await.unwrap().unwrap();
            (
                bench.epoch(epoch - 1).await.unwrap(),
                bench.epoch(epoch).await.unwrap(),
            )
        });
        next += added;
        eprintln!(
            "append-only proof of {added} new entries: {} bytes",
            after.proof.len()
        );
        let (from, to) = (root(&before), root(&after));
        group.bench_with_input(BenchmarkId::new("device_walk", added), &added, |b, _| {
            b.iter(|| verify_append_only(&from, &to, &after.proof).unwrap())
        });
        group.bench_with_input(
            BenchmarkId::new("akd_audit_verify", added),
            &added,
            |b, _| {
                b.iter(|| {
                    let proto =
                        akd::proto::specs::types::AppendOnlyProof::parse_from_bytes(&after.proof)
                            .unwrap();
                    let proof = akd::AppendOnlyProof::try_from(&proto).unwrap();
                    rt.block_on(akd::auditor::audit_verify::<KtConfig>(
                        vec![from.root, to.root],
                        proof,
                    ))
                    .unwrap()
                })
            },
        );
    }
    group.finish();
    rt.block_on(bench.close());
}

criterion_group!(benches, publish, proofs, append_only);
criterion_main!(benches);
