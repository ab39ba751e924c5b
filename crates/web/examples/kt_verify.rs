//! Prints the native cost of verifying a key-transparency lookup proof and a history proof
//! (µs), for comparison with the same code in the browser (see `nightjar_web::bench`).

fn main() {
    let iterations: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/bench-data/kt_vectors.json");
    let vectors = std::fs::read_to_string(path).unwrap_or_else(|e| {
        eprintln!("{path}: {e}");
        std::process::exit(1);
    });
    let start = std::time::Instant::now();
    let clock = || start.elapsed().as_secs_f64() * 1000.0;
    match nightjar_web::bench::kt_verify(&vectors, iterations, clock) {
        Ok(cost) => println!(
            "native: lookup proof ({} bytes) {:.0} µs, history proof ({} bytes) {:.0} µs \
             ({iterations} each)",
            cost.lookup_bytes, cost.lookup_us, cost.history_bytes, cost.history_us
        ),
        Err(e) => {
            eprintln!("kt_verify failed: {e}");
            std::process::exit(1);
        }
    }
}
