//! Writes the proofs the client-side verification benchmark checks (`crates/web/src/bench.rs`,
//! natively and in the browser), from a directory like the server bench's: 10k accounts, each
//! with 10 device-list versions. `kt_vectors OUT.json [ACCOUNTS]` (release build advised: the
//! directory takes minutes to fill).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use nightjar_api::B64;
use nightjar_server::bench_support::{BenchProof, KtBench};
use serde_json::json;

const USER: &str = "bench_4242";

fn proof(p: &BenchProof) -> serde_json::Value {
    json!({
        "epoch": p.epoch,
        "root": B64::encode(&p.root),
        "signature": B64::encode(&p.signature),
        "proof": B64::encode(&p.proof),
    })
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (out, accounts) = match args.as_slice() {
        [_, out] => (out.clone(), 10_000),
        [_, out, n] => (out.clone(), n.parse().unwrap()),
        _ => {
            eprintln!("usage: kt_vectors OUT.json [ACCOUNTS]");
            std::process::exit(2);
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let bench = KtBench::open(dir.path(), None).await.unwrap();
    bench.add_accounts(0, accounts).await.unwrap();
    bench.publish().await.unwrap();
    for _ in 0..9 {
        bench.change_all().await.unwrap();
        bench.publish().await.unwrap();
    }
    let (root_key, vrf) = bench.keys();
    let lookup = bench.lookup(USER).await.unwrap();
    let history = bench.history(USER).await.unwrap();
    bench.close().await;
    let vectors = json!({
        "accounts": accounts,
        "username": USER,
        "root_key": B64::encode(&root_key),
        "vrf_public_key": B64::encode(&vrf),
        "lookup": proof(&lookup),
        "history": proof(&history),
    });
    std::fs::write(&out, serde_json::to_string_pretty(&vectors).unwrap()).unwrap();
    println!(
        "{out}: {accounts} accounts, lookup {} bytes, history {} bytes",
        lookup.proof.len(),
        history.proof.len()
    );
}
