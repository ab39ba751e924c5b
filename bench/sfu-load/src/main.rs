//! Load tool for the group-call SFU: starts an SFU in this process (on its own thread) and runs
//! N publishers x M subscribers of native str0m clients against it over loopback UDP, sending
//! Opus at 50 packets/s and VP8 at ~30 fps / ~500 kbit/s each. Every second it prints forwarded
//! streams, packets and frames per second, and the CPU used by the SFU's thread (read from
//! /proc, so the clients' own CPU is not counted) and by the whole process.

mod client;

use std::time::{Duration, Instant};

use clap::Parser;
use nightjar_sfu::test_client::{Client, Options, offerer};
use nightjar_sfu::{ParticipantId, RoomId, Sfu, SfuConfig, SfuStats};

use crate::client::{LoadFrames, Media};

#[derive(Parser, Debug)]
#[command(about = "N publishers x M subscribers against the Nightjar SFU, over loopback UDP")]
struct Args {
    /// Participants that publish audio + video (and receive the others).
    #[arg(long, default_value_t = 3)]
    publishers: u32,
    /// Participants that only receive.
    #[arg(long, default_value_t = 3)]
    subscribers: u32,
    /// Seconds of load after everyone joined.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Video bitrate of each publisher, kbit/s.
    #[arg(long, default_value_t = 500)]
    video_kbps: u64,
    /// Video frames per second.
    #[arg(long, default_value_t = 30)]
    fps: u32,
    /// Audio packets per second.
    #[arg(long, default_value_t = 50)]
    audio_pps: u32,
    /// Turn the SFU's bandwidth estimation (and video pausing) off.
    #[arg(long)]
    no_bwe: bool,
}

/// CPU seconds used so far, from a /proc stat file (utime + stime, fields 14 and 15).
fn cpu_seconds(stat_path: &str) -> Option<f64> {
    let text = std::fs::read_to_string(stat_path).ok()?;
    // The command name (field 2) may hold spaces; fields after it follow the last ')'.
    let rest = text.get(text.rfind(')')? + 2..)?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on every Linux architecture this runs on.
    Some((utime + stime) / 100.0)
}

/// The /proc stat file of the SFU's driver thread (named "nightjar-sfu").
fn sfu_thread_stat() -> Option<String> {
    for entry in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        let path = entry.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if comm.trim() == "nightjar-sfu" {
            return Some(path.join("stat").to_string_lossy().into_owned());
        }
    }
    None
}

struct Sample {
    at: Instant,
    stats: SfuStats,
    sfu_cpu: f64,
    process_cpu: f64,
    received: u64,
}

fn sample(sfu: &Sfu, thread_stat: &str, clients: &[Client]) -> Sample {
    Sample {
        at: Instant::now(),
        stats: sfu.stats(),
        sfu_cpu: cpu_seconds(thread_stat).unwrap_or(0.0),
        process_cpu: cpu_seconds("/proc/self/stat").unwrap_or(0.0),
        received: clients.iter().map(|c| c.state().frames_received).sum(),
    }
}

/// Joins `room` as `id`, publishing `publish` (or only receiving).
async fn join(
    sfu: &Sfu,
    room: RoomId,
    id: ParticipantId,
    publish: Option<Media>,
) -> Result<Client, Box<dyn std::error::Error>> {
    let media = publish.unwrap_or(Media {
        video_bps: 0,
        fps: 1,
        audio_pps: 1,
    });
    let options = Options {
        audio: publish.is_some(),
        video: publish.is_some(),
        audio_level: -40,
        audio_interval: Duration::from_secs(1) / media.audio_pps.max(1),
        video_interval: Duration::from_secs(1) / media.fps.max(1),
        record: false,
    };
    let offerer = offerer(options, true)?;
    let answer = sfu.join(room, id, offerer.offer.clone()).await?;
    Ok(offerer.start(id, &answer, LoadFrames::new(media))?)
}

fn report(label: &str, a: &Sample, b: &Sample) {
    let secs = b.at.duration_since(a.at).as_secs_f64().max(1e-3);
    let rate = |x: u64, y: u64| (y.saturating_sub(x)) as f64 / secs;
    println!(
        "{label}: streams {} | sent {:.0} pkt/s {:.1} Mbit/s | recv {:.0} pkt/s | fwd {:.0} frames/s | clients got {:.0} frames/s | SFU CPU {:.0}% | process CPU {:.0}%",
        b.stats.forwarded_streams,
        rate(a.stats.datagrams_sent, b.stats.datagrams_sent),
        rate(a.stats.bytes_sent, b.stats.bytes_sent) * 8.0 / 1e6,
        rate(a.stats.datagrams_received, b.stats.datagrams_received),
        rate(a.stats.frames_forwarded, b.stats.frames_forwarded),
        rate(a.received, b.received),
        (b.sfu_cpu - a.sfu_cpu) / secs * 100.0,
        (b.process_cpu - a.process_cpu) / secs * 100.0,
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let total = (args.publishers + args.subscribers) as usize;
    let config = SfuConfig {
        max_participants_per_room: total.max(1),
        bandwidth_estimation: !args.no_bwe,
        ..SfuConfig::default()
    };
    let sfu = Sfu::bind_with_config("127.0.0.1:0".parse()?, None, config)?;
    // The thread names itself once it runs: give it a moment.
    let mut thread_stat = None;
    for _ in 0..50 {
        thread_stat = sfu_thread_stat();
        if thread_stat.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let thread_stat = thread_stat.ok_or("SFU thread not found in /proc/self/task")?;
    println!(
        "SFU on {}; {} publishers x {} subscribers; video {} kbit/s @ {} fps, audio {} pps",
        sfu.local_addr(),
        args.publishers,
        args.subscribers,
        args.video_kbps,
        args.fps,
        args.audio_pps
    );
    let room = RoomId([0x42; 16]);
    let media = Media {
        video_bps: args.video_kbps * 1000,
        fps: args.fps,
        audio_pps: args.audio_pps,
    };
    let mut clients = Vec::new();
    for i in 0..total as u64 {
        let publish = (i < u64::from(args.publishers)).then_some(media);
        clients.push(join(&sfu, room, ParticipantId(i + 1), publish).await?);
    }
    // Everyone connected and renegotiated: the expected number of streams flows.
    let p = args.publishers as usize;
    let expected = 2 * p * p.saturating_sub(1) + 2 * p * args.subscribers as usize;
    let setup = Instant::now();
    while sfu.stats().forwarded_streams < expected && setup.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "setup: {} of {expected} streams after {:.1} s",
        sfu.stats().forwarded_streams,
        setup.elapsed().as_secs_f64()
    );
    let first = sample(&sfu, &thread_stat, &clients);
    let mut last = sample(&sfu, &thread_stat, &clients);
    for second in 1..=args.duration {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = sample(&sfu, &thread_stat, &clients);
        report(&format!("t={second:>3}s"), &last, &now);
        last = now;
    }
    report("average", &first, &last);
    let stats = sfu.stats();
    println!(
        "totals: {} participants, {} frames forwarded, {} datagrams sent, {} dropped",
        stats.participants, stats.frames_forwarded, stats.datagrams_sent, stats.datagrams_dropped
    );
    let connected = clients.iter().filter(|c| c.state().connected).count();
    println!("clients: {connected} of {total} connected");
    for client in &clients {
        for problem in &client.state().problems {
            eprintln!("client {}: {problem}", client.id);
        }
    }
    // Dropping the clients ends their tasks.
    drop(clients);
    Ok(())
}
