//! `nightjar-loadgen run`: setup (or the cached state), connect every device, hold or load,
//! drain, audit, report.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use nightjar_core::ConversationId;
use nightjar_core::sealed::SealedKey;
use tokio::sync::{Semaphore, watch};

use crate::api::{self, Api};
use crate::devices::{self, DeviceSpec, Endpoint};
use crate::error::{Error, Result};
use crate::load::{self, Conversation, Senders};
use crate::os;
use crate::payload::Template;
use crate::report::{Latency, Load, Memory, Summary};
use crate::setup;
use crate::state::SetupState;
use crate::track::Tracker;

/// Options of `run`.
#[derive(Debug, clap::Args)]
pub(crate) struct RunArgs {
    /// Server base URL; repeat for several nodes (devices and senders spread round-robin).
    #[arg(
        long = "server",
        value_name = "URL",
        default_value = "http://127.0.0.1:8080"
    )]
    servers: Vec<String>,
    /// Connected devices (rounded down to whole conversations).
    #[arg(long, value_name = "N", default_value_t = 1000)]
    devices: usize,
    /// Devices per conversation, the sender included: 2 = 1:1, G > 2 = groups (fan-out G − 1).
    #[arg(long, value_name = "G", default_value_t = 2, value_parser = clap::value_parser!(u8).range(2..=64))]
    group_size: u8,
    /// Messages per second offered, open loop (each to one conversation, from one member).
    #[arg(long, value_name = "M", default_value_t = 1000.0)]
    rate: f64,
    /// Seconds of load (or of holding the connections with --idle).
    #[arg(long, value_name = "S", default_value_t = 30.0)]
    duration: f64,
    /// Plaintext bytes per message; the MLS payload is larger (printed in the report).
    #[arg(long, value_name = "BYTES", default_value_t = 1024)]
    size: usize,
    /// Connect and hold only: measure memory per idle connection, send nothing.
    #[arg(long)]
    idle: bool,
    /// Retry sends without an answer (same idempotency key, next server) and fail the run if
    /// any id is lost, duplicated or misrouted. Ids are tracked in every run.
    #[arg(long)]
    check: bool,
    /// Loopback source addresses to spread sockets over (127.0.0.2, …); ~28k sockets each.
    #[arg(long, value_name = "K", default_value_t = 8)]
    source_addrs: usize,
    /// Cache of accounts, tokens and conversations for this server data directory.
    #[arg(long, value_name = "FILE")]
    state: Option<PathBuf>,
    /// Server process to measure (RSS, CPU, fds); repeat for several nodes.
    #[arg(long = "server-pid", value_name = "PID")]
    server_pids: Vec<u32>,
    /// Print one JSON summary line on stdout at the end.
    #[arg(long)]
    json: bool,
    /// Send requests in flight at once (HTTP keep-alive connections per server at most).
    #[arg(long, value_name = "N", default_value_t = 256)]
    http_conns: usize,
    /// WebSocket handshakes in flight at once while connecting.
    #[arg(long, value_name = "N", default_value_t = 256)]
    connect_concurrency: usize,
    /// Conversations set up at once.
    #[arg(long, value_name = "N", default_value_t = 64)]
    setup_concurrency: usize,
    /// Longest a device waits before acknowledging what it received.
    #[arg(long, value_name = "MS", default_value_t = 20)]
    ack_delay_ms: u64,
    /// Never acknowledge envelopes (they stay queued): the server without ack writes. Use a
    /// fresh state afterwards, or the next run receives them all again.
    #[arg(long)]
    no_ack: bool,
    /// Seconds to wait for outstanding deliveries after the schedule ends.
    #[arg(long, value_name = "S", default_value_t = 15.0)]
    drain_timeout: f64,
    /// Seconds a send keeps retrying after failures (default 0, or 30 with --check).
    #[arg(long, value_name = "S")]
    retry_for: Option<f64>,
    /// Most sends outstanding before due messages are skipped (default: 2 s of load).
    #[arg(long, value_name = "N")]
    max_backlog: Option<u64>,
    /// Seconds allowed for connecting every device.
    #[arg(long, value_name = "S", default_value_t = 600.0)]
    connect_timeout: f64,
    /// Register and create conversations (filling --state), then exit.
    #[arg(long)]
    setup_only: bool,
    /// Free text copied into the report.
    #[arg(long, default_value = "")]
    label: String,
    /// Send sealed: `POST /v1/conversations/{id}/sealed` without the session token, signed
    /// with a per-conversation key each member registers first (the generator makes the key
    /// from the conversation id: its payloads are not real MLS messages either).
    #[arg(long)]
    sealed: bool,
    /// Send no franking commitment (clients from before message franking): the server then
    /// stamps nothing, for a same-run comparison of what stamping costs.
    #[arg(long)]
    no_franking: bool,
}

fn sum_over(pids: &[u32], f: impl Fn(u32) -> Option<u64>) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|p| f(*p)).sum()
}

fn server_rss(pids: &[u32]) -> Option<u64> {
    sum_over(pids, os::rss_bytes)
}

fn server_cpu(pids: &[u32]) -> Option<f64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|p| os::cpu_seconds(*p)).sum()
}

fn random_u32() -> Result<u32> {
    let mut b = [0u8; 4];
    rand_core::RngCore::try_fill_bytes(&mut rand_core::OsRng, &mut b)
        .map_err(|e| Error::other(format!("no randomness: {e}")))?;
    Ok(u32::from_be_bytes(b))
}

/// Runs the whole benchmark described by `args`.
pub(crate) async fn run(args: RunArgs) -> Result<()> {
    let group = usize::from(args.group_size);
    let conversations = args.devices / group;
    let devices = conversations * group;
    if conversations == 0 {
        return Err(Error::other("--devices must be at least --group-size"));
    }
    let loads = args.rate > 0.0 && args.duration > 0.0;
    if !args.idle && !loads {
        return Err(Error::other(
            "--rate and --duration must be positive (or use --idle)",
        ));
    }
    let fd_limit = os::raise_fd_limit()?;
    let wanted_fds = devices + args.http_conns * args.servers.len() + 64;
    if wanted_fds as u64 > fd_limit {
        eprintln!(
            "warning: {devices} devices need ~{wanted_fds} file descriptors, the hard limit is \
             {fd_limit}: connections past it will fail (see bench/README.md)"
        );
    }
    let http = api::http_client(args.http_conns);
    let apis: Vec<Api> = args
        .servers
        .iter()
        .map(|s| Api::new(s, http.clone()))
        .collect();
    let mut state = SetupState::load_or_new(args.state.as_deref())?;
    let setup_report = setup::ensure(
        &mut state,
        &apis,
        group,
        conversations,
        args.setup_concurrency,
        args.state.as_deref(),
    )
    .await?;
    let template = Template::build(args.size)?;
    let mut summary = Summary {
        label: args.label.clone(),
        servers: args.servers.clone(),
        devices,
        group_size: group,
        conversations,
        rate: if args.idle { 0.0 } else { args.rate },
        plaintext_bytes: args.size,
        payload_bytes: template.len(),
        fd_limit,
        setup: setup_report,
        ..Summary::default()
    };
    if args.setup_only {
        summary.print();
        return emit(&summary, args.json);
    }

    // The run's conversations and devices: device `c * group + m` is member `m` of `c`.
    let mut convs = Vec::with_capacity(conversations);
    let mut specs = Vec::with_capacity(devices);
    for (c, record) in state
        .conversations_of(group)
        .into_iter()
        .take(conversations)
        .enumerate()
    {
        let id = ConversationId::parse(&record.id)
            .ok_or_else(|| Error::other(format!("bad conversation id in state: {}", record.id)))?;
        let tokens: Vec<String> = record
            .members
            .iter()
            .map(|&d| state.devices[d].token.clone())
            .collect();
        for (m, token) in tokens.iter().enumerate() {
            specs.push(DeviceSpec {
                index: c * group + m,
                token: token.clone(),
                conversation: c,
                member: m,
            });
        }
        let sealed = if args.sealed {
            let mut seed = [0u8; 32];
            seed[..16].copy_from_slice(&id.0);
            seed[16..].copy_from_slice(&id.0);
            Some(
                SealedKey::from_secret(record.epoch, &seed)
                    .ok_or_else(|| Error::other("sealed key"))?,
            )
        } else {
            None
        };
        convs.push(Conversation {
            id,
            epoch: record.epoch,
            tokens,
            first_device: c * group,
            sealed,
        });
    }
    drop(state);

    let capacity = if args.idle {
        0
    } else {
        (args.rate * args.duration).ceil() as usize + 1
    };
    let tracker = Arc::new(Tracker::new(random_u32()?, capacity, conversations, group));
    let pids = &args.server_pids;
    let mut memory = Memory {
        server_rss_before: server_rss(pids),
        ..Memory::default()
    };
    let mut endpoints = Vec::new();
    for s in &args.servers {
        endpoints.push(Endpoint::resolve(s).await?);
    }
    let (stop_tx, stop_rx) = watch::channel(false);
    if args.sealed {
        load::register_sealed_keys(&apis, &convs).await?;
    }
    let shared = Arc::new(devices::Shared {
        sealed: args.sealed,
        endpoints,
        source_addrs: args.source_addrs,
        ack_delay: (!args.no_ack).then(|| Duration::from_millis(args.ack_delay_ms)),
        tracker: tracker.clone(),
        ready: AtomicUsize::new(0),
        connected: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        connecting: Semaphore::new(args.connect_concurrency.max(1)),
        stop: stop_rx,
    });

    // Connect every device and wait until each has drained its queue.
    let started = Instant::now();
    let handles: Vec<_> = specs
        .into_iter()
        .map(|spec| tokio::spawn(devices::run(spec, shared.clone())))
        .collect();
    let mut last_print = Instant::now();
    loop {
        let (ready, failed) = (shared.ready.load(Relaxed), shared.failed.load(Relaxed));
        if ready + failed >= devices || started.elapsed().as_secs_f64() > args.connect_timeout {
            break;
        }
        if last_print.elapsed() > Duration::from_secs(5) {
            last_print = Instant::now();
            eprintln!(
                "connecting: {ready}/{devices} ready, {} open, {failed} refused ({:.0}/s)",
                shared.connected.load(Relaxed),
                ready as f64 / started.elapsed().as_secs_f64()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    summary.connect_seconds = started.elapsed().as_secs_f64();
    summary.connected = shared.ready.load(Relaxed);
    summary.connect_failed = shared.failed.load(Relaxed);
    // Let the server settle (handshake buffers freed, acks of old envelopes written).
    tokio::time::sleep(Duration::from_secs(3)).await;
    memory.server_rss_connected = server_rss(pids);
    memory.server_fds_connected = pids.iter().map(|p| os::open_fds(*p)).sum();
    memory.loadgen_rss_connected = os::rss_bytes(std::process::id());
    if let (Some(before), Some(after)) = (memory.server_rss_before, memory.server_rss_connected)
        && summary.connected > 0
    {
        memory.server_bytes_per_connection =
            Some(after.saturating_sub(before) / summary.connected as u64);
    }

    if args.idle {
        eprintln!(
            "holding {} connections for {:.0} s",
            summary.connected, args.duration
        );
        tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    } else {
        let retry_for = args
            .retry_for
            .unwrap_or(if args.check { 30.0 } else { 0.0 });
        let senders = Arc::new(Senders {
            apis,
            conversations: convs,
            template,
            tracker: tracker.clone(),
            slots: Semaphore::new(args.http_conns.max(1)),
            retry_for: Duration::from_secs_f64(retry_for),
            outstanding: AtomicU64::new(0),
            franking: !args.no_franking,
        });
        let max_backlog = args
            .max_backlog
            .unwrap_or(((args.rate * 2.0) as u64).max(1000));
        summary.load =
            Some(load_phase(&args, &senders, &tracker, group, max_backlog, retry_for).await);
    }
    memory.server_rss_end = server_rss(pids);
    summary.memory = memory;
    summary.errors = tracker.errors();

    let _ = stop_tx.send(true);
    let closing = async {
        for h in handles {
            let _ = h.await;
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(10), closing).await;
    summary.print();
    emit(&summary, args.json)?;
    if args.check
        && let Some(l) = &summary.load
        && (l.audit.lost_messages > 0 || l.duplicates > 0 || l.misrouted > 0)
    {
        return Err(Error::other(
            "check failed: messages were lost, duplicated or misrouted",
        ));
    }
    Ok(())
}

async fn load_phase(
    args: &RunArgs,
    senders: &Arc<Senders>,
    tracker: &Tracker,
    group: usize,
    max_backlog: u64,
    retry_for: f64,
) -> Load {
    let pids = &args.server_pids;
    let me = std::process::id();
    let cpu_before = server_cpu(pids);
    let own_before = os::cpu_seconds(me);
    let first_second = tracker.now_us() / 1_000_000;
    eprintln!(
        "load: {} msg/s for {} s over {} conversations",
        args.rate,
        args.duration,
        senders.conversations.len()
    );
    let schedule = load::schedule(
        senders,
        args.rate,
        Duration::from_secs_f64(args.duration),
        max_backlog,
    )
    .await;
    let c = &tracker.counters;
    let accepted_in_window = c.accepted.load(Relaxed);
    let delivered_in_window = c.deliveries.load(Relaxed);
    let schedule_end = Instant::now();

    // Outstanding sends finish (or exhaust their retries), then deliveries drain.
    let answer_deadline = Duration::from_secs_f64(retry_for + 65.0);
    while senders.outstanding.load(Relaxed) > 0 && schedule_end.elapsed() < answer_deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain_deadline = Instant::now() + Duration::from_secs_f64(args.drain_timeout);
    let expected = |c: &crate::track::Counters| c.accepted.load(Relaxed) * (group as u64 - 1);
    while c.deliveries.load(Relaxed) < expected(c) && Instant::now() < drain_deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let drain_seconds = schedule_end.elapsed().as_secs_f64();
    let server_cpu_s = server_cpu(pids)
        .zip(cpu_before)
        .map(|(after, before)| after - before);
    let accepted = c.accepted.load(Relaxed);
    let last_second = tracker.now_us() / 1_000_000 + 1;
    let (accepted_series, delivered_series) = tracker.series(first_second, last_second);
    let seconds = schedule.seconds.max(1e-9);
    Load {
        schedule,
        accepted,
        refused: c.refused.load(Relaxed),
        unknown: c.unknown.load(Relaxed),
        retries: c.retries.load(Relaxed),
        backlog_skipped: c.backlog_skipped.load(Relaxed),
        accepted_per_s: accepted_in_window as f64 / seconds,
        delivered_per_s: delivered_in_window as f64 / seconds,
        deliveries: c.deliveries.load(Relaxed),
        drain_seconds,
        latency: Latency::from(&tracker.latency),
        accept_latency: Latency::from(&tracker.accept_latency),
        audit: tracker.audit(tracker.capacity()),
        duplicates: c.duplicates.load(Relaxed),
        redelivered: c.redelivered.load(Relaxed),
        misrouted: c.misrouted.load(Relaxed),
        foreign: c.foreign.load(Relaxed),
        reconnects: c.reconnects.load(Relaxed),
        acks_sent: c.acks_sent.load(Relaxed),
        server_cpu_s,
        server_cpu_us_per_msg: server_cpu_s
            .filter(|_| accepted > 0)
            .map(|s| s * 1e6 / accepted as f64),
        loadgen_cpu_s: os::cpu_seconds(me)
            .zip(own_before)
            .map(|(after, before)| after - before),
        accepted_series,
        delivered_series,
    }
}

fn emit(summary: &Summary, json: bool) -> Result<()> {
    if json {
        println!("{}", serde_json::to_string(summary)?);
    }
    Ok(())
}
