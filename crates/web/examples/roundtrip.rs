//! Prints the native cost of one 1 KiB message encrypted and decrypted (µs), for comparison
//! with the same code in the browser (see `nightjar_web::bench`).

fn main() {
    let iterations: u32 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(300);
    let start = std::time::Instant::now();
    let clock = || start.elapsed().as_secs_f64() * 1000.0;
    match nightjar_web::bench::roundtrip(iterations, clock) {
        Ok(us) => {
            println!("native: {us:.1} µs per 1 KiB encrypt + decrypt ({iterations} messages)")
        }
        Err(e) => {
            eprintln!("roundtrip failed: {e}");
            std::process::exit(1);
        }
    }
}
