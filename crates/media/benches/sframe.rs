//! What SFrame costs per frame natively (the browser's figure comes from the call worker's own
//! counters, see bench/README.md): a 160-byte Opus frame and a 2 KB VP8 interframe (about
//! 500 kbit/s at 30 fps), each encrypted, and decrypted by
//! a receiver that already derived the sender's key.

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use nightjar_media::{CallMedia, FrameKind};

fn frames(c: &mut Criterion) {
    let key = [9u8; nightjar_media::BASE_KEY_LEN];
    let mut group = c.benchmark_group("sframe");
    for (name, len, kind) in [
        ("audio_160B", 160, FrameKind::Audio),
        ("video_2KB", 2048, FrameKind::VideoDelta),
        ("video_key_20KB", 20_480, FrameKind::VideoKey),
    ] {
        let frame: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        group.throughput(Throughput::Bytes(len as u64));
        let mut sender = CallMedia::new();
        let _ = sender.set_epoch(1, 0, &key);
        group.bench_function(format!("encrypt/{name}"), |b| {
            b.iter(|| sender.encrypt(&frame, kind))
        });
        let mut receiver = CallMedia::new();
        let _ = receiver.set_epoch(1, 1, &key);
        group.bench_function(format!("decrypt/{name}"), |b| {
            b.iter_batched(
                || sender.encrypt(&frame, kind).unwrap_or_default(),
                |sealed| receiver.decrypt(&sealed, kind),
                criterion::BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group!(benches, frames);
criterion_main!(benches);
