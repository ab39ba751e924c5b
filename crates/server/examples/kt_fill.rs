//! Fills a server data directory with a key-transparency directory of many epochs, for
//! measuring `nightjar audit` (bench/kt-audit.sh): `kt_fill DATA_DIR EPOCHS PER_EPOCH`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use nightjar_server::bench_support::KtBench;

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (dir, epochs, per_epoch) = match args.as_slice() {
        [_, dir, epochs, per] => (dir.clone(), epochs.parse().unwrap(), per.parse().unwrap()),
        _ => {
            eprintln!("usage: kt_fill DATA_DIR EPOCHS PER_EPOCH");
            std::process::exit(2);
        }
    };
    let bench = KtBench::open(std::path::Path::new(&dir), None)
        .await
        .unwrap();
    let mut next = 0;
    for _ in 0..epochs {
        bench.add_accounts(next, per_epoch).await.unwrap();
        next += per_epoch;
        bench.publish().await.unwrap();
    }
    bench.close().await;
    println!("{epochs} epochs of {per_epoch} new accounts in {dir}");
}
