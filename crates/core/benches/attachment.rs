//! Throughput of the attachment cipher: sealing and opening a 16 MiB file, pushed in 1 MiB
//! slices as a driver reading a file would, including the Padmé padding, the SHA-256 digest
//! and (for opening) the padding and digest checks. Criterion reports MiB/s of plaintext.
//! Run: `cargo bench -p nightjar-core --bench attachment`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nightjar_core::attachment::{AttachmentKey, Opener, Sealer};

const SIZE: usize = 16 << 20;
const SLICE: usize = 1 << 20;

fn seal(key: &AttachmentKey, data: &[u8]) -> (Vec<u8>, [u8; 32]) {
    let mut sealer = Sealer::new(key, data.len() as u64).unwrap();
    let mut out = Vec::with_capacity(data.len() + data.len() / 64);
    for piece in data.chunks(SLICE) {
        out.extend(sealer.push(piece).unwrap());
    }
    let (rest, digest) = sealer.finish().unwrap();
    out.extend(rest);
    (out, digest)
}

fn attachment(c: &mut Criterion) {
    let key = AttachmentKey::from_bytes([7; 32]);
    let data: Vec<u8> = (0..SIZE).map(|i| (i * 131 % 251) as u8).collect();
    let (sealed, digest) = seal(&key, &data);
    let mut group = c.benchmark_group("attachment");
    group.throughput(Throughput::Bytes(SIZE as u64));
    group.sample_size(20);
    group.measurement_time(std::time::Duration::from_secs(8));
    group.bench_function("seal_16MiB", |b| b.iter(|| seal(&key, &data)));
    group.bench_function("open_16MiB", |b| {
        b.iter(|| {
            let mut opener = Opener::new(&key, SIZE as u64, digest).unwrap();
            let mut len = 0;
            for piece in sealed.chunks(SLICE) {
                len += opener.push(piece).unwrap().len();
            }
            opener.finish().unwrap();
            assert_eq!(len, SIZE);
        })
    });
    group.finish();
}

criterion_group!(benches, attachment);
criterion_main!(benches);
